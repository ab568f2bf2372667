"""Synthetic AMD firmware files with valid headers, for tests and the mock PSP.

The real Navi31 files are proprietary and not always at hand, so this module builds stand-ins in
the same binary layout (amdgpu_ucode.h structs from autogen): the common header, the versioned
header of each kind, the 256-byte header area (sizeof union amdgpu_firmware_header) before the
ucode array, payload sections at the offsets the real files use, a crc32 over everything after
the common header (what most real files carry; amdgpu never checks it), and random bytes as
payload (each binary packaged in a PSP sos/ta image starts with the PSP image header the
bootloader checks: mockgpu.amd.psp.stamp_image_header). The default layouts (`NAVI31_LAYOUTS`)
repeat the sizes, versions and addresses of firmware-amd-graphics 20230210-5's gc_11_0_0_*,
psp_13_0_0_*, smu_13_0_0 and sdma_6_0_0 headers, so a synthetic file's header area equals the
real one's except for the crc32; tests compare the two when the real files are cached.

`build(name)` returns one file's bytes; `build_navi31_set()` all of them; `write_navi31_set(dir)`
writes them under `dir/amdgpu/` (a firmware root for $GPUHAL_FIRMWARE_DIR).
"""
from __future__ import annotations

import dataclasses
import pathlib
import random
import zlib
from typing import Mapping

from autogen.amd import amdgpu_ucode as ucode

from mockgpu.amd import psp

# the ucode array starts after the header area: sizeof(union amdgpu_firmware_header), as in every
# real amdgpu file
HEADER_AREA_BYTES = ucode.amdgpu_firmware_header.SIZE
COMMON_HEADER_SIZE = ucode.common_firmware_header.SIZE


@dataclasses.dataclass(frozen=True)
class Layout:
    """What one synthetic file looks like: its kind, header version, IP and section sizes.

    `sections` lists (name, size) in file order after the header area; `fields` sets versioned
    header members that are not sizes or offsets (versions, start addresses, jump tables);
    `binaries` (SOS / TA) lists (fw_type, fw_version, size) descriptors; `pptables` (SMC 2.1)
    lists (id, size).
    """

    kind: str
    header_version: tuple[int, int]
    ip_version: tuple[int, int]
    ucode_version: int
    sections: tuple[tuple[str, int], ...] = ()
    fields: Mapping[str, int] = dataclasses.field(default_factory=dict)
    binaries: tuple[tuple[int, int, int], ...] = ()
    pptables: tuple[tuple[int, int], ...] = ()


# the CP (RS64) and MES start addresses and versions below are those of the real Navi31 headers
_CP_FIELDS = {"ucode_feature_version": 29, "ucode_start_addr_lo": 0x3000, "ucode_start_addr_hi": 0x70000}
_MES_FIELDS = {"mes_uc_start_addr_lo": 0xF0005000, "mes_uc_start_addr_hi": 0xFFFFFFFF,
               "mes_data_start_addr_lo": 0xF0100000, "mes_data_start_addr_hi": 0xFFFFFFFF}

# firmware-amd-graphics 20230210-5 (bookworm), lib/firmware/amdgpu/: the header values of each file
NAVI31_LAYOUTS: dict[str, Layout] = {
    "amdgpu/gc_11_0_0_pfp.bin": Layout("cp", (2, 0), (11, 0), 1525,
                                       (("ucode", 68192), ("data", 139264)), _CP_FIELDS),
    "amdgpu/gc_11_0_0_me.bin": Layout("cp", (2, 0), (11, 0), 1486,
                                      (("ucode", 49872), ("data", 139264)), _CP_FIELDS),
    "amdgpu/gc_11_0_0_mec.bin": Layout("cp", (2, 0), (11, 0), 494,
                                       (("ucode", 267552), ("data", 139264)), _CP_FIELDS),
    "amdgpu/gc_11_0_0_rlc.bin": Layout(
        "rlc", (2, 3), (11, 0), 110,
        (("ucode", 25088), ("save_restore_list_gpm", 2560), ("save_restore_list_srm", 36256),
         ("rlc_iram", 66048), ("rlc_dram", 33280), ("rlcp", 8704), ("rlcv", 12800)),
        {"ucode_feature_version": 1, "reg_restore_list_size": 314, "reg_list_format_start": 315,
         "starting_offsets_start": 379, "rlcp_ucode_version": 25, "rlcp_ucode_feature_version": 1,
         "rlcv_ucode_version": 34, "rlcv_ucode_feature_version": 1}),
    "amdgpu/gc_11_0_0_imu.bin": Layout("imu", (1, 0), (11, 0), 0xB1F3600,
                                       (("iram", 66048), ("dram", 66048))),
    "amdgpu/gc_11_0_0_mes.bin": Layout("mes", (1, 0), (11, 0), 0,
                                       (("ucode", 155008), ("data", 131072)), _MES_FIELDS),
    "amdgpu/gc_11_0_0_mes1.bin": Layout("mes", (1, 0), (11, 0), 0,
                                        (("ucode", 99296), ("data", 131072)), _MES_FIELDS),
    "amdgpu/psp_13_0_0_sos.bin": Layout(
        "sos", (2, 0), (13, 0), 0x310025,
        binaries=((ucode.PSP_FW_TYPE_PSP_SYS_DRV, 0x310025, 157584),
                  (ucode.PSP_FW_TYPE_PSP_SOS, 0x310025, 99200),
                  (ucode.PSP_FW_TYPE_PSP_TOC, 12, 2304),
                  (ucode.PSP_FW_TYPE_PSP_KDB, 0x4003100, 5888),
                  (ucode.PSP_FW_TYPE_PSP_SPL, 0x10031C0, 672),
                  (ucode.PSP_FW_TYPE_PSP_RL, 0x7001C00, 2400))),
    "amdgpu/psp_13_0_0_ta.bin": Layout(
        "ta", (2, 0), (13, 0), 0,
        binaries=((ucode.TA_FW_TYPE_PSP_ASD, 0x2100009A, 176384),
                  (ucode.TA_FW_TYPE_PSP_HDCP, 0x17000031, 24832),
                  (ucode.TA_FW_TYPE_PSP_DTM, 0x12000013, 8448),
                  (ucode.TA_FW_TYPE_PSP_RAS, 0x1B000201, 24832))),
    "amdgpu/smu_13_0_0.bin": Layout(
        "smc", (2, 1), (13, 0), 0x4E4B00, (("ucode", 261632),), {"ucode_start_addr": 0x20000},
        pptables=((3664, 4804), (36641, 5360), (3683, 4804), (36831, 5360), (3715, 4804),
                  (37151, 5360))),
    "amdgpu/sdma_6_0_0.bin": Layout(
        "sdma", (2, 0), (6, 0), 19, (("ctx", 17408), ("ctl", 16896)),
        {"ucode_feature_version": 60, "ctx_jt_offset": 4096, "ctx_jt_size": 128, "ctl_jt_offset": 4096,
         "ctl_jt_size": 0}),
}

_STRUCTS = {
    ("cp", (2, 0)): ucode.gfx_firmware_header_v2_0,
    ("rlc", (2, 3)): ucode.rlc_firmware_header_v2_3,
    ("imu", (1, 0)): ucode.imu_firmware_header_v1_0,
    ("mes", (1, 0)): ucode.mes_firmware_header_v1_0,
    ("sos", (2, 0)): ucode.psp_firmware_header_v2_0,
    ("ta", (2, 0)): ucode.ta_firmware_header_v2_0,
    ("smc", (2, 1)): ucode.smc_firmware_header_v2_1,
    ("sdma", (2, 0)): ucode.sdma_firmware_header_v2_0,
}


def _members(struct) -> dict:
    """name -> (owning struct view, member name) for every scalar member of a nested header."""
    found = {}
    for name in type(struct).FIELDS:
        value = getattr(struct, name)
        if hasattr(type(value), "FIELDS"):
            for inner, owner in _members(value).items():
                found.setdefault(inner, owner)
        else:
            found[name] = (struct, name)
    return found


def _set(members: dict, name: str, value: int) -> None:
    owner, member = members[name]
    setattr(owner, member, value)


def build(name: str, *, seed: int = 0, layout: Layout | None = None) -> bytes:
    """One synthetic firmware file: a header in `layout` (default NAVI31_LAYOUTS[name]), random payload."""
    layout = layout or NAVI31_LAYOUTS[name]
    cls = _STRUCTS.get((layout.kind, layout.header_version))
    if cls is None:
        raise ValueError(f"no synthetic layout for {layout.kind} header {layout.header_version}")
    rng = random.Random(f"{name}:{seed}")
    header = cls()
    members = _members(header)
    for field, value in layout.fields.items():
        _set(members, field, value)
    table_bytes = 0
    if layout.binaries:
        table_bytes = len(layout.binaries) * ucode.psp_fw_bin_desc.SIZE
    area = bytearray(HEADER_AREA_BYTES)
    if cls.SIZE + table_bytes > HEADER_AREA_BYTES:
        raise ValueError(f"{name}: header and descriptors do not fit the {HEADER_AREA_BYTES}-byte area")
    offsets: dict[str, int] = {}
    cursor = HEADER_AREA_BYTES
    for section, size in layout.sections:
        offsets[section] = cursor
        cursor += size
    ucode_size = cursor - HEADER_AREA_BYTES
    extra = bytearray()
    if layout.kind == "cp":
        _set(members, "ucode_size_bytes", layout.sections[0][1])
        header.ucode_offset_bytes = offsets["ucode"]
        header.data_size_bytes = layout.sections[1][1]
        header.data_offset_bytes = offsets["data"]
    elif layout.kind == "rlc":
        # the common ucode region is RLC_G only; the lists and RLC P/V follow it (file offsets)
        ucode_size = layout.sections[0][1]
        end_of_g = offsets["ucode"] + ucode_size
        for field in ("reg_list_format_array_offset_bytes", "reg_list_array_offset_bytes",
                      "save_restore_list_cntl_offset_bytes"):
            _set(members, field, end_of_g)
        for section, size in layout.sections[1:]:
            prefix = section if section.startswith("save_restore") else f"{section}_ucode"
            _set(members, f"{prefix}_size_bytes", size)
            _set(members, f"{prefix}_offset_bytes", offsets[section])
    elif layout.kind == "imu":
        header.imu_iram_ucode_size_bytes = layout.sections[0][1]
        header.imu_iram_ucode_offset_bytes = 0
        header.imu_dram_ucode_size_bytes = layout.sections[1][1]
        header.imu_dram_ucode_offset_bytes = layout.sections[0][1]
    elif layout.kind == "mes":
        header.mes_ucode_size_bytes = layout.sections[0][1]
        header.mes_ucode_offset_bytes = offsets["ucode"]
        header.mes_ucode_data_size_bytes = layout.sections[1][1]
        header.mes_ucode_data_offset_bytes = offsets["data"]
    elif layout.kind == "sdma":
        header.ctx_ucode_size_bytes = layout.sections[0][1]
        header.ctl_ucode_offset = offsets["ctl"]
        header.ctl_ucode_size_bytes = layout.sections[1][1]
    elif layout.kind in ("sos", "ta"):
        table = cls.SIZE
        payload_offset = 0
        for index, (fw_type, version, size) in enumerate(layout.binaries):
            desc = ucode.psp_fw_bin_desc(fw_type=fw_type, fw_version=version, offset_bytes=payload_offset,
                                         size_bytes=size)
            area[table + index * desc.SIZE:table + (index + 1) * desc.SIZE] = bytes(desc)
            payload_offset += size
        ucode_size = payload_offset
        cursor = HEADER_AREA_BYTES + ucode_size
        if layout.kind == "sos":
            header.psp_fw_bin_count = len(layout.binaries)
        else:
            header.ta_fw_bin_count = len(layout.binaries)
    elif layout.kind == "smc":
        entry_size = ucode.smc_soft_pptable_entry.SIZE
        header.pptable_count = len(layout.pptables)
        header.pptable_entry_offset = cursor
        table_offset = cursor + len(layout.pptables) * entry_size
        for table_id, size in layout.pptables:
            entry = ucode.smc_soft_pptable_entry(id=table_id, ppt_offset_bytes=table_offset,
                                                 ppt_size_bytes=size)
            extra += bytes(entry)
            table_offset += size
        extra += rng.randbytes(table_offset - cursor - len(extra))
    total = cursor + len(extra)
    common = members["size_bytes"][0]
    common.size_bytes = total
    common.header_size_bytes = cls.SIZE
    common.header_version_major, common.header_version_minor = layout.header_version
    common.ip_version_major, common.ip_version_minor = layout.ip_version
    common.ucode_version = layout.ucode_version
    common.ucode_size_bytes = ucode_size
    common.ucode_array_offset_bytes = HEADER_AREA_BYTES
    area[:cls.SIZE] = bytes(header)
    data = area + rng.randbytes(cursor - HEADER_AREA_BYTES) + extra
    if layout.kind in ("sos", "ta"):
        # each packaged binary is a PSP image: the bootloader and the SOS read its header
        start = HEADER_AREA_BYTES
        for _fw_type, version, size in layout.binaries:
            image = bytearray(data[start:start + size])
            psp.stamp_image_header(image, version)
            data[start:start + size] = image
            start += size
    common_crc = zlib.crc32(data[COMMON_HEADER_SIZE:])
    crc_offset = ucode.common_firmware_header.offset_of("crc32")
    data[crc_offset:COMMON_HEADER_SIZE] = common_crc.to_bytes(4, "little")
    return bytes(data)


def build_navi31_set(*, seed: int = 0) -> dict[str, bytes]:
    """Every Navi31 file of NAVI31_LAYOUTS, by name ("amdgpu/gc_11_0_0_pfp.bin", ...)."""
    return {name: build(name, seed=seed) for name in NAVI31_LAYOUTS}


def write_navi31_set(root: pathlib.Path | str, *, seed: int = 0) -> pathlib.Path:
    """Write the set under `root` (as `root/amdgpu/<file>`); returns `root`, a firmware root."""
    root = pathlib.Path(root)
    for name, data in build_navi31_set(seed=seed).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root
