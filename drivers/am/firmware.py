"""AMD GPU firmware: which files an IP set needs, where they are found, fetching and header parsing.

Owns the firmware side of bring-up, headers only (payloads are never inspected):
- choosing the files by the discovered IP versions, as amdgpu's *_init_microcode functions do
  (`firmware_for`);
- finding them on a search path (`$GPUHAL_FIRMWARE_DIR`, then the kernel's own firmware
  directories, then the project cache), plain or compressed (.zst / .xz) like the kernel's loader;
- fetching Debian's firmware-amd-graphics at a pinned version into the cache through
  autogen.sources (private apt configuration; the system's apt sources are never changed):
  `python -m drivers.am.firmware --fetch`;
- parsing the common header and the versioned header of each kind (gfx v1/v2, rlc v2_x, mes v1,
  imu v1, sdma v1/v2/v3, smc v1/v2_0/v2_1, psp sos v2_x and ta v2 with their binary descriptors),
  checking every size and offset against the file length. A bad file raises FirmwareError naming
  the file and the field. Each image records its SHA-256 and exposes zero-copy payload slices
  (memoryviews) for the PSP loader: one `UcodeSection` per amdgpu ucode id, one `PspBinary` per
  SOS/TA descriptor.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import logging
import lzma
import os
import pathlib
import shutil
import subprocess
import sys
import zlib
from typing import Callable, Iterable, Mapping, Sequence

from autogen import sources
from autogen.amd import amdgpu_ucode as ucode
from hal.errors import FirmwareError

log = logging.getLogger(__name__)

FIRMWARE_DIR_ENV = "GPUHAL_FIRMWARE_DIR"
# drivers/base/firmware_loader/main.c: fw_path[] (the UTS_RELEASE subdirectories are left out:
# they belong to one running kernel, not to a user-space driver)
SYSTEM_FIRMWARE_DIRS = ("/lib/firmware/updates", "/lib/firmware")
# drivers/base/firmware_loader/main.c: _request_firmware tries the plain name, then ".zst", then ".xz"
COMPRESSED_SUFFIXES = ("", ".zst", ".xz")
# no real amdgpu firmware file is larger than a few MiB; a bound keeps a corrupt archive from
# expanding without limit
MAX_FIRMWARE_BYTES = 64 << 20
_ZSTD_TIMEOUT_S = 60

# Debian's firmware-amd-graphics in bookworm's non-free-firmware component: 20230210-5 already
# carries every Navi31 file (gc_11_0_0_*, psp_13_0_0_*, smu_13_0_0.bin, sdma_6_0_0.bin), uncompressed.
FIRMWARE_PACKAGE = sources.Package(
    "firmware-amd-graphics", "20230210-5",
    "AMD's redistribution licence (LICENSE.amdgpu in the package); non-free-firmware",
    suite="bookworm", component="non-free-firmware")
PACKAGE_FIRMWARE_ROOT = "lib/firmware"
FETCH_COMMAND = "python -m drivers.am.firmware --fetch"

# amdgpu_ucode.c: kicker_device_list (PCI device id, revision) load the *_kicker.bin variants
KICKER_DEVICES = ((0x744B, 0x00),)
# gfx_v11_0.c: gfx_v11_0_init_microcode loads gc_11_0_0_rlc_1.bin on GC 11.0.0 parts of revision 0xCE
RLC_1_REVISION = 0xCE

COMMON_HEADER_SIZE = ucode.common_firmware_header.SIZE

# amdgpu_ucode.h: the ucode ids, by value, for messages and listings
UCODE_ID_NAMES = {value: name[len("AMDGPU_UCODE_ID_"):] for name, value in vars(ucode).items()
                  if name.startswith("AMDGPU_UCODE_ID_") and isinstance(value, int)}
PSP_FW_TYPE_NAMES = {value: name[len("PSP_FW_TYPE_PSP_"):] for name, value in vars(ucode).items()
                     if name.startswith("PSP_FW_TYPE_PSP_") and isinstance(value, int)}
TA_FW_TYPE_NAMES = {value: name[len("TA_FW_TYPE_PSP_"):] for name, value in vars(ucode).items()
                    if name.startswith("TA_FW_TYPE_PSP_") and isinstance(value, int)}

# kinds of image, each with its own versioned header
KIND_CP = "cp"          # PFP / ME / MEC: gfx_firmware_header_v1_0 or v2_0 (RS64)
KIND_RLC = "rlc"        # rlc_firmware_header_v2_x
KIND_MES = "mes"        # mes_firmware_header_v1_0
KIND_IMU = "imu"        # imu_firmware_header_v1_0
KIND_SDMA = "sdma"      # sdma_firmware_header_v1_x / v2_0 / v3_0
KIND_SMC = "smc"        # smc_firmware_header_v1_0 / v2_0 / v2_1
KIND_PSP_SOS = "sos"    # psp_firmware_header_v2_0 / v2_1 (packaged binaries)
KIND_PSP_TA = "ta"      # ta_firmware_header_v2_0 (packaged trusted applications)


# ------------------------------------------------------------------------------------ selection


@dataclasses.dataclass(frozen=True)
class FirmwareSpec:
    """One file an IP needs: its name under the firmware root and how to parse it.

    `engine` says which ucode ids the sections get (for CP: "PFP", "ME", "MEC"; for MES the
    pipe: "MES" or "MES1"). `alternatives` are tried in order after `name` (amdgpu's fallbacks).
    """

    name: str
    kind: str
    ip_block: str
    ip_version: tuple[int, int, int]
    engine: str = ""
    required: bool = True
    alternatives: tuple[str, ...] = ()

    @property
    def candidates(self) -> tuple[str, ...]:
        return (self.name, *self.alternatives)


def ip_prefix(ip_name: str, version: tuple[int, int, int]) -> str:
    """The file name prefix amdgpu derives from an IP version ("gc_11_0_0").

    amdgpu_ucode.c: amdgpu_ucode_ip_version_decode (GC -> gc, SDMA0 -> sdma, MP0 -> psp, MP1 -> smu).
    """
    major, minor, revision = version
    return f"{ip_name}_{major}_{minor}_{revision}"


def firmware_for(ip_versions: Mapping[str, tuple[int, int, int]], *, pci_device: int | None = None,
                 pci_revision: int | None = None) -> list[FirmwareSpec]:
    """The files amdgpu loads for these IP versions (keys: "GC", "MP0", "MP1", "SDMA0").

    Supported: GC 11.x, MP0 13.x, MP1 13.x, SDMA 6.x; any other version of a named block is a
    FirmwareError that says which versions this driver knows. `pci_device`/`pci_revision` pick the
    kicker and RLC variants amdgpu picks for some boards.
    """
    kicker = (pci_device, pci_revision) in KICKER_DEVICES
    suffix = "_kicker" if kicker else ""
    specs: list[FirmwareSpec] = []
    gc = ip_versions.get("GC")
    if gc is not None:
        _require_major("GC", gc, 11)
        prefix = ip_prefix("gc", gc)
        # gfx_v11_0.c: gfx_v11_0_init_microcode (pfp, me, rlc, mec; toc only for RLC backdoor autoload)
        specs.append(FirmwareSpec(f"amdgpu/{prefix}_pfp.bin", KIND_CP, "GC", gc, "PFP"))
        specs.append(FirmwareSpec(f"amdgpu/{prefix}_me.bin", KIND_CP, "GC", gc, "ME"))
        if gc == (11, 0, 0) and pci_revision == RLC_1_REVISION:
            rlc = f"amdgpu/{prefix}_rlc_1.bin"
        else:
            rlc = f"amdgpu/{prefix}_rlc{suffix}.bin"
        specs.append(FirmwareSpec(rlc, KIND_RLC, "GC", gc, "RLC"))
        specs.append(FirmwareSpec(f"amdgpu/{prefix}_mec.bin", KIND_CP, "GC", gc, "MEC"))
        # imu_v11_0.c: imu_v11_0_init_microcode
        specs.append(FirmwareSpec(f"amdgpu/{prefix}_imu{suffix}.bin", KIND_IMU, "GC", gc, "IMU"))
        # amdgpu_mes.c: amdgpu_mes_init_microcode: GC 11 scheduler pipe "_mes_2" falling back to
        # "_mes", KIQ pipe "_mes1"; MES is used only with the MES scheduler, so not required here
        specs.append(FirmwareSpec(f"amdgpu/{prefix}_mes_2.bin", KIND_MES, "GC", gc, "MES",
                                  required=False, alternatives=(f"amdgpu/{prefix}_mes.bin",)))
        specs.append(FirmwareSpec(f"amdgpu/{prefix}_mes1.bin", KIND_MES, "GC", gc, "MES1",
                                  required=False))
    mp0 = ip_versions.get("MP0")
    if mp0 is not None:
        _require_major("MP0", mp0, 13)
        prefix = ip_prefix("psp", mp0)
        # amdgpu_psp.c: psp_init_sos_microcode, psp_init_ta_microcode (called from psp_v13_0.c)
        specs.append(FirmwareSpec(f"amdgpu/{prefix}_sos{suffix}.bin", KIND_PSP_SOS, "MP0", mp0, "SOS"))
        specs.append(FirmwareSpec(f"amdgpu/{prefix}_ta{suffix}.bin", KIND_PSP_TA, "MP0", mp0, "TA",
                                  required=False))
    mp1 = ip_versions.get("MP1")
    if mp1 is not None:
        _require_major("MP1", mp1, 13)
        # pm/swsmu/smu13/smu_v13_0.c: smu_v13_0_init_microcode
        specs.append(FirmwareSpec(f"amdgpu/{ip_prefix('smu', mp1)}{suffix}.bin", KIND_SMC, "MP1", mp1,
                                  "SMC"))
    sdma = ip_versions.get("SDMA0")
    if sdma is not None:
        _require_major("SDMA0", sdma, 6)
        # amdgpu_sdma.c: amdgpu_sdma_init_microcode (instance 0; sdma_v6_0 shares it across instances)
        specs.append(FirmwareSpec(f"amdgpu/{ip_prefix('sdma', sdma)}.bin", KIND_SDMA, "SDMA0", sdma,
                                  "SDMA"))
    return specs


def _require_major(block: str, version: tuple[int, int, int], major: int) -> None:
    if version[0] != major:
        raise FirmwareError(f"no firmware table for {block} {'.'.join(map(str, version))}: this "
                            f"driver knows {block} {major}.x")


# -------------------------------------------------------------------------------------- finding


def search_path() -> list[pathlib.Path]:
    """Firmware roots, first match wins: $GPUHAL_FIRMWARE_DIR (os.pathsep list), the system's
    firmware directories, then the pinned package unpacked in the cache."""
    roots = [pathlib.Path(item) for item in os.environ.get(FIRMWARE_DIR_ENV, "").split(os.pathsep)
             if item]
    roots.extend(pathlib.Path(item) for item in SYSTEM_FIRMWARE_DIRS)
    roots.append(sources.unpacked_dir(FIRMWARE_PACKAGE) / PACKAGE_FIRMWARE_ROOT)
    return roots


def find_file(name: str, roots: Sequence[pathlib.Path] | None = None) -> pathlib.Path | None:
    """The first `root/name[.zst|.xz]` that exists, or None."""
    for root in search_path() if roots is None else roots:
        for suffix in COMPRESSED_SUFFIXES:
            candidate = root / (name + suffix)
            if candidate.is_file():
                return candidate
    return None


def read_file(path: pathlib.Path) -> bytes:
    """The firmware bytes of `path`, decompressed when it ends in .xz or .zst."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FirmwareError(f"{path}: cannot read: {exc.strerror or exc}", errno=exc.errno) from exc
    if path.suffix == ".xz":
        return _decompress_xz(path, raw)
    if path.suffix == ".zst":
        return _decompress_zstd(path, raw)
    return raw


def _decompress_xz(path: pathlib.Path, raw: bytes) -> bytes:
    decompressor = lzma.LZMADecompressor()
    try:
        data = decompressor.decompress(raw, MAX_FIRMWARE_BYTES + 1)
    except lzma.LZMAError as exc:
        raise FirmwareError(f"{path}: corrupt xz stream: {exc}") from exc
    if len(data) > MAX_FIRMWARE_BYTES or not decompressor.eof:
        raise FirmwareError(f"{path}: xz stream truncated or larger than {MAX_FIRMWARE_BYTES} bytes")
    return data


def _decompress_zstd(path: pathlib.Path, raw: bytes) -> bytes:
    """zstd through a Python module when one is installed, else the zstd program, else an error."""
    for module_name in ("compression.zstd", "zstandard"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        try:
            if module_name == "zstandard":
                data = module.ZstdDecompressor().decompress(raw, max_output_size=MAX_FIRMWARE_BYTES)
            else:
                data = module.decompress(raw)
        except Exception as exc:  # each module has its own error class
            raise FirmwareError(f"{path}: corrupt zstd stream: {exc}") from exc
        return _bounded(path, data)
    program = shutil.which("zstd")
    if program is None:
        raise FirmwareError(f"{path}: cannot read .zst firmware: neither the Python 'zstandard' module "
                            f"nor the zstd program is installed; install one, or point "
                            f"{FIRMWARE_DIR_ENV} at uncompressed files ({FETCH_COMMAND} fetches them)")
    try:
        result = subprocess.run([program, "-d", "-c", "-q"], input=raw, capture_output=True,
                                check=False, timeout=_ZSTD_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise FirmwareError(f"{path}: zstd did not finish in {_ZSTD_TIMEOUT_S} s") from exc
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip()
        raise FirmwareError(f"{path}: corrupt zstd stream: {detail}")
    return _bounded(path, result.stdout)


def _bounded(path: pathlib.Path, data: bytes) -> bytes:
    if len(data) > MAX_FIRMWARE_BYTES:
        raise FirmwareError(f"{path}: decompresses to more than {MAX_FIRMWARE_BYTES} bytes")
    return data


# -------------------------------------------------------------------------------------- fetching


def fetch(*, progress: Callable[[str], None] | None = None) -> pathlib.Path:
    """Download and unpack the pinned firmware-amd-graphics into the cache; its firmware root.

    Uses autogen.sources (the cache, then the installed package at exactly this version, then
    `apt-get download` with the private apt configuration). `progress` receives one line per step.
    """
    handler = None
    level = sources.progress.level
    if progress is not None:
        handler = _CallbackHandler(progress)
        sources.progress.addHandler(handler)
        sources.progress.setLevel(logging.INFO)
    try:
        names = [spec.name for spec in firmware_for(NAVI31_IP_VERSIONS) if spec.required]
        paths = [f"{PACKAGE_FIRMWARE_ROOT}/{name}" for name in names]
        root = sources.source_root(FIRMWARE_PACKAGE, paths, target_names=())
    except sources.SourceUnavailable as exc:
        raise FirmwareError(f"cannot fetch {FIRMWARE_PACKAGE.name} {FIRMWARE_PACKAGE.version}: "
                            f"{exc}") from exc
    finally:
        if handler is not None:
            sources.progress.removeHandler(handler)
            sources.progress.setLevel(level)
    return root / PACKAGE_FIRMWARE_ROOT


class _CallbackHandler(logging.Handler):
    def __init__(self, callback: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self.callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        self.callback(record.getMessage())


# -------------------------------------------------------------------------------------- parsing


@dataclasses.dataclass(frozen=True)
class UcodeSection:
    """One piece of an image the PSP loads with LOAD_IP_FW: an amdgpu ucode id and its bytes."""

    ucode_id: int
    offset: int
    size: int
    payload: memoryview

    @property
    def name(self) -> str:
        return UCODE_ID_NAMES.get(self.ucode_id, str(self.ucode_id))


@dataclasses.dataclass(frozen=True)
class PspBinary:
    """One binary packaged in a PSP SOS or TA image (psp_fw_bin_desc), located in the file."""

    fw_type: int
    name: str
    version: int
    offset: int
    size: int
    payload: memoryview


@dataclasses.dataclass(frozen=True)
class FirmwareImage:
    """A parsed firmware file: its headers (copied, small) and zero-copy views of its payloads."""

    name: str
    kind: str
    data: memoryview
    header: ucode.common_firmware_header
    versioned_header: object
    sha256: str
    sections: tuple[UcodeSection, ...]
    binaries: tuple[PspBinary, ...]
    feature_version: int | None = None
    path: str | None = None

    @property
    def header_version(self) -> tuple[int, int]:
        return (self.header.header_version_major, self.header.header_version_minor)

    @property
    def ip_version(self) -> tuple[int, int]:
        return (self.header.ip_version_major, self.header.ip_version_minor)

    @property
    def ucode_version(self) -> int:
        return self.header.ucode_version

    @property
    def crc32_matches(self) -> bool:
        """Whether the header's crc32 is the CRC-32 of everything after the common header.

        amdgpu never checks it (amdgpu_ucode.c only prints it), so a mismatch is not an error.
        In the pinned package 9 of the 11 Navi31 files match; gc_11_0_0_rlc.bin and
        smu_13_0_0.bin carry a value computed some other way.
        """
        return zlib.crc32(self.data[COMMON_HEADER_SIZE:]) == self.header.crc32

    def section(self, ucode_id: int) -> UcodeSection:
        for section in self.sections:
            if section.ucode_id == ucode_id:
                return section
        raise KeyError(f"{self.name} has no ucode {UCODE_ID_NAMES.get(ucode_id, ucode_id)}")

    def binary(self, name: str) -> PspBinary:
        for binary in self.binaries:
            if binary.name == name:
                return binary
        raise KeyError(f"{self.name} has no packaged binary {name}")

    def summary(self) -> dict:
        """A JSON-ready description (no payload bytes)."""
        return {"name": self.name, "path": self.path, "kind": self.kind,
                "header_version": "%d.%d" % self.header_version, "ip_version": "%d.%d" % self.ip_version,
                "ucode_version": self.ucode_version, "feature_version": self.feature_version,
                "size": len(self.data), "sha256": self.sha256, "crc32_matches": self.crc32_matches,
                "sections": [{"ucode": s.name, "offset": s.offset, "size": s.size} for s in self.sections],
                "binaries": [{"type": b.name, "version": b.version, "offset": b.offset, "size": b.size}
                             for b in self.binaries]}


class _Reader:
    """Bounds-checked header access over one file; every failure names the file and the field."""

    def __init__(self, name: str, data: memoryview) -> None:
        self.name = name
        self.data = data
        self.size = len(data)

    def fail(self, field: str, detail: str) -> FirmwareError:
        return FirmwareError(f"{self.name}: {field}: {detail} (file of {self.size} bytes)")

    def struct(self, cls: type, offset: int = 0, field: str = "header_size_bytes"):
        if offset < 0 or offset + cls.SIZE > self.size:
            raise self.fail(field, f"{cls.__name__} of {cls.SIZE} bytes at offset {offset} "
                                   f"does not fit in the file")
        return cls.from_bytes(self.data[offset:offset + cls.SIZE])

    def span(self, field: str, offset: int, size: int) -> memoryview:
        """The bytes [offset, offset + size), which must lie inside the file."""
        if offset < 0 or size < 0 or offset + size > self.size:
            raise self.fail(field, f"range offset {offset} size {size} (end {offset + size}) "
                                   f"runs past the end of the file")
        return self.data[offset:offset + size]


def parse_firmware(name: str, data: bytes | bytearray | memoryview, kind: str, *, engine: str = "",
                   expected_ip_major: int | None = None, path: str | None = None) -> FirmwareImage:
    """Parse and validate one firmware file's headers; FirmwareError names the file and field."""
    view = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
    reader = _Reader(name, view)
    if reader.size < COMMON_HEADER_SIZE:
        raise reader.fail("size_bytes", f"shorter than the {COMMON_HEADER_SIZE}-byte common header")
    header = reader.struct(ucode.common_firmware_header)
    # amdgpu_ucode.c: amdgpu_ucode_validate: the file is exactly size_bytes long
    if header.size_bytes != reader.size:
        raise reader.fail("size_bytes", f"header says {header.size_bytes} bytes")
    if header.header_size_bytes < COMMON_HEADER_SIZE or header.header_size_bytes > reader.size:
        raise reader.fail("header_size_bytes", f"{header.header_size_bytes} is not between "
                                               f"{COMMON_HEADER_SIZE} and the file size")
    if expected_ip_major is not None and header.ip_version_major != expected_ip_major:
        raise reader.fail("ip_version_major", f"{header.ip_version_major}, expected {expected_ip_major}")
    reader.span("ucode_array_offset_bytes", header.ucode_array_offset_bytes, header.ucode_size_bytes)
    parser = _PARSERS.get(kind)
    if parser is None:
        raise FirmwareError(f"{name}: unknown firmware kind {kind!r} (known: {', '.join(_PARSERS)})")
    versioned, sections, binaries, feature = parser(reader, header, engine)
    return FirmwareImage(name=name, kind=kind, data=view, header=header, versioned_header=versioned,
                         sha256=hashlib.sha256(view).hexdigest(), sections=tuple(sections),
                         binaries=tuple(binaries), feature_version=feature, path=path)


def _header_struct(reader: _Reader, header, versions: Mapping[tuple[int, int], type]):
    """The versioned header struct for this file's header version; it must fit header_size_bytes."""
    version = (header.header_version_major, header.header_version_minor)
    cls = versions.get(version)
    if cls is None:
        known = ", ".join("%d.%d" % key for key in versions)
        raise reader.fail("header_version_major", "%d.%d is not a supported header version "
                                                  "(supported: %s)" % (*version, known))
    if header.header_size_bytes < cls.SIZE:
        raise reader.fail("header_size_bytes", f"{header.header_size_bytes} is smaller than "
                                               f"{cls.__name__} ({cls.SIZE} bytes)")
    return reader.struct(cls)


def _section(reader: _Reader, ucode_id: int, field: str, offset: int, size: int) -> UcodeSection:
    return UcodeSection(ucode_id, offset, size, reader.span(field, offset, size))


def _common_section(reader: _Reader, header, ucode_id: int) -> UcodeSection:
    # amdgpu_ucode.c: amdgpu_ucode_init_single_fw, default case: the common header's ucode region
    return _section(reader, ucode_id, "ucode_size_bytes", header.ucode_array_offset_bytes,
                    header.ucode_size_bytes)


_CP_IDS = {
    # engine: (v1 ucode id, v1 jump table id or None, v2 RS64 ucode id, v2 stack ids)
    "PFP": (ucode.AMDGPU_UCODE_ID_CP_PFP, None, ucode.AMDGPU_UCODE_ID_CP_RS64_PFP,
            (ucode.AMDGPU_UCODE_ID_CP_RS64_PFP_P0_STACK, ucode.AMDGPU_UCODE_ID_CP_RS64_PFP_P1_STACK)),
    "ME": (ucode.AMDGPU_UCODE_ID_CP_ME, None, ucode.AMDGPU_UCODE_ID_CP_RS64_ME,
           (ucode.AMDGPU_UCODE_ID_CP_RS64_ME_P0_STACK, ucode.AMDGPU_UCODE_ID_CP_RS64_ME_P1_STACK)),
    "MEC": (ucode.AMDGPU_UCODE_ID_CP_MEC1, ucode.AMDGPU_UCODE_ID_CP_MEC1_JT,
            ucode.AMDGPU_UCODE_ID_CP_RS64_MEC,
            (ucode.AMDGPU_UCODE_ID_CP_RS64_MEC_P0_STACK, ucode.AMDGPU_UCODE_ID_CP_RS64_MEC_P1_STACK,
             ucode.AMDGPU_UCODE_ID_CP_RS64_MEC_P2_STACK, ucode.AMDGPU_UCODE_ID_CP_RS64_MEC_P3_STACK)),
}


def _parse_cp(reader: _Reader, header, engine: str):
    """amdgpu_gfx.c: amdgpu_gfx_cp_init_microcode; header 2.0 means RS64 (gfx_v11_0_init_microcode)."""
    if engine not in _CP_IDS:
        raise FirmwareError(f"{reader.name}: CP engine {engine!r} is not one of {', '.join(_CP_IDS)}")
    v1_id, jt_id, rs64_id, stack_ids = _CP_IDS[engine]
    hdr = _header_struct(reader, header, {(1, 0): ucode.gfx_firmware_header_v1_0,
                                          (2, 0): ucode.gfx_firmware_header_v2_0})
    sections = []
    if header.header_version_major == 2:
        sections.append(_section(reader, rs64_id, "ucode_size_bytes", header.ucode_array_offset_bytes,
                                 hdr.ucode_size_bytes))
        reader.span("ucode_offset_bytes", hdr.ucode_offset_bytes, hdr.ucode_size_bytes)
        for stack_id in stack_ids:
            sections.append(_section(reader, stack_id, "data_offset_bytes", hdr.data_offset_bytes,
                                     hdr.data_size_bytes))
        return hdr, sections, [], hdr.ucode_feature_version
    jt_bytes = hdr.jt_size * 4
    if jt_id is None:
        sections.append(_common_section(reader, header, v1_id))
        return hdr, sections, [], hdr.ucode_feature_version
    # amdgpu_ucode.c: the MEC image is the ucode minus its jump table; the table sits jt_offset
    # dwords into the ucode region
    if jt_bytes > header.ucode_size_bytes or hdr.jt_offset * 4 + jt_bytes > header.ucode_size_bytes:
        raise reader.fail("jt_size", f"jump table at dword {hdr.jt_offset}, {hdr.jt_size} dwords, "
                                     f"outside the {header.ucode_size_bytes}-byte ucode")
    sections.append(_section(reader, v1_id, "ucode_size_bytes", header.ucode_array_offset_bytes,
                             header.ucode_size_bytes - jt_bytes))
    sections.append(_section(reader, jt_id, "jt_offset",
                             header.ucode_array_offset_bytes + hdr.jt_offset * 4, jt_bytes))
    return hdr, sections, [], hdr.ucode_feature_version


_RLC_VERSIONS = {(2, minor): cls for minor, cls in enumerate(
    (ucode.rlc_firmware_header_v2_0, ucode.rlc_firmware_header_v2_1, ucode.rlc_firmware_header_v2_2,
     ucode.rlc_firmware_header_v2_3, ucode.rlc_firmware_header_v2_4))}

# amdgpu_rlc.c: amdgpu_gfx_rlc_init_microcode_v2_1 .. v2_4: (minimum minor, exact minor or None,
# ucode id, size field, offset field); offsets count from the start of the file, and a section
# exists only when its size is not zero
_RLC_SECTIONS = (
    (1, None, ucode.AMDGPU_UCODE_ID_RLC_RESTORE_LIST_CNTL, "save_restore_list_cntl_size_bytes",
     "save_restore_list_cntl_offset_bytes"),
    (1, None, ucode.AMDGPU_UCODE_ID_RLC_RESTORE_LIST_GPM_MEM, "save_restore_list_gpm_size_bytes",
     "save_restore_list_gpm_offset_bytes"),
    (1, None, ucode.AMDGPU_UCODE_ID_RLC_RESTORE_LIST_SRM_MEM, "save_restore_list_srm_size_bytes",
     "save_restore_list_srm_offset_bytes"),
    (2, None, ucode.AMDGPU_UCODE_ID_RLC_IRAM, "rlc_iram_ucode_size_bytes", "rlc_iram_ucode_offset_bytes"),
    (2, None, ucode.AMDGPU_UCODE_ID_RLC_DRAM, "rlc_dram_ucode_size_bytes", "rlc_dram_ucode_offset_bytes"),
    (3, 3, ucode.AMDGPU_UCODE_ID_RLC_P, "rlcp_ucode_size_bytes", "rlcp_ucode_offset_bytes"),
    (3, 3, ucode.AMDGPU_UCODE_ID_RLC_V, "rlcv_ucode_size_bytes", "rlcv_ucode_offset_bytes"),
    (4, 4, ucode.AMDGPU_UCODE_ID_GLOBAL_TAP_DELAYS, "global_tap_delays_ucode_size_bytes",
     "global_tap_delays_ucode_offset_bytes"),
    (4, 4, ucode.AMDGPU_UCODE_ID_SE0_TAP_DELAYS, "se0_tap_delays_ucode_size_bytes",
     "se0_tap_delays_ucode_offset_bytes"),
    (4, 4, ucode.AMDGPU_UCODE_ID_SE1_TAP_DELAYS, "se1_tap_delays_ucode_size_bytes",
     "se1_tap_delays_ucode_offset_bytes"),
    (4, 4, ucode.AMDGPU_UCODE_ID_SE2_TAP_DELAYS, "se2_tap_delays_ucode_size_bytes",
     "se2_tap_delays_ucode_offset_bytes"),
    (4, 4, ucode.AMDGPU_UCODE_ID_SE3_TAP_DELAYS, "se3_tap_delays_ucode_size_bytes",
     "se3_tap_delays_ucode_offset_bytes"),
)


def _flat_fields(values: dict) -> dict:
    """Every scalar member of a nested header (rlc v2_3 holds v2_2 holds ...) by its own name."""
    fields = {}
    for key, value in values.items():
        if isinstance(value, dict):
            fields.update(_flat_fields(value))
        else:
            fields[key] = value
    return fields


def _parse_rlc(reader: _Reader, header, engine: str):
    """amdgpu_rlc.c: amdgpu_gfx_rlc_init_microcode (major 2 only; the minor picks the extra lists)."""
    hdr = _header_struct(reader, header, _RLC_VERSIONS)
    fields = _flat_fields(hdr.to_dict())
    minor = header.header_version_minor
    # v2_0: the register list arrays amdgpu copies out of the file
    reader.span("reg_list_format_array_offset_bytes", fields["reg_list_format_array_offset_bytes"],
                fields["reg_list_format_size_bytes"])
    reader.span("reg_list_array_offset_bytes", fields["reg_list_array_offset_bytes"],
                fields["reg_list_size_bytes"])
    sections = [_common_section(reader, header, ucode.AMDGPU_UCODE_ID_RLC_G)]
    for minimum, exact, ucode_id, size_field, offset_field in _RLC_SECTIONS:
        if minor < minimum or (exact is not None and minor != exact):
            continue
        size = fields[size_field]
        if size:
            sections.append(_section(reader, ucode_id, offset_field, fields[offset_field], size))
    return hdr, sections, [], fields["ucode_feature_version"]


def _parse_mes(reader: _Reader, header, engine: str):
    """amdgpu_mes.c: amdgpu_mes_init_microcode; amdgpu_ucode.c places ucode and data by file offset."""
    hdr = _header_struct(reader, header, {(1, 0): ucode.mes_firmware_header_v1_0})
    if engine == "MES1":
        ids = (ucode.AMDGPU_UCODE_ID_CP_MES1, ucode.AMDGPU_UCODE_ID_CP_MES1_DATA)
    else:
        ids = (ucode.AMDGPU_UCODE_ID_CP_MES, ucode.AMDGPU_UCODE_ID_CP_MES_DATA)
    sections = [
        _section(reader, ids[0], "mes_ucode_offset_bytes", hdr.mes_ucode_offset_bytes,
                 hdr.mes_ucode_size_bytes),
        _section(reader, ids[1], "mes_ucode_data_offset_bytes", hdr.mes_ucode_data_offset_bytes,
                 hdr.mes_ucode_data_size_bytes),
    ]
    return hdr, sections, [], None


def _parse_imu(reader: _Reader, header, engine: str):
    """imu_v11_0.c / amdgpu_ucode.c: IMU_I at the ucode array, IMU_D right after it (the header's own
    iram/dram offset fields are not used by amdgpu)."""
    hdr = _header_struct(reader, header, {(1, 0): ucode.imu_firmware_header_v1_0})
    start = header.ucode_array_offset_bytes
    sections = [
        _section(reader, ucode.AMDGPU_UCODE_ID_IMU_I, "imu_iram_ucode_size_bytes", start,
                 hdr.imu_iram_ucode_size_bytes),
        _section(reader, ucode.AMDGPU_UCODE_ID_IMU_D, "imu_dram_ucode_size_bytes",
                 start + hdr.imu_iram_ucode_size_bytes, hdr.imu_dram_ucode_size_bytes),
    ]
    return hdr, sections, [], None


def _parse_sdma(reader: _Reader, header, engine: str):
    """amdgpu_sdma.c: amdgpu_sdma_init_microcode (major 1, 2 or 3) and amdgpu_ucode_init_single_fw."""
    hdr = _header_struct(reader, header, {(1, 0): ucode.sdma_firmware_header_v1_0,
                                          (1, 1): ucode.sdma_firmware_header_v1_1,
                                          (2, 0): ucode.sdma_firmware_header_v2_0,
                                          (3, 0): ucode.sdma_firmware_header_v3_0})
    major = header.header_version_major
    if major == 1:
        sections = [_common_section(reader, header, ucode.AMDGPU_UCODE_ID_SDMA0)]
        return hdr, sections, [], _flat_fields(hdr.to_dict())["ucode_feature_version"]
    if major == 3:
        sections = [_section(reader, ucode.AMDGPU_UCODE_ID_SDMA_RS64, "ucode_size_bytes",
                             header.ucode_array_offset_bytes, hdr.ucode_size_bytes)]
        return hdr, sections, [], hdr.ucode_feature_version
    sections = [
        _section(reader, ucode.AMDGPU_UCODE_ID_SDMA_UCODE_TH0, "ctx_ucode_size_bytes",
                 header.ucode_array_offset_bytes, hdr.ctx_ucode_size_bytes),
        _section(reader, ucode.AMDGPU_UCODE_ID_SDMA_UCODE_TH1, "ctl_ucode_offset", hdr.ctl_ucode_offset,
                 hdr.ctl_ucode_size_bytes),
    ]
    # the jump tables are dword offsets into each thread's ucode
    if (hdr.ctx_jt_offset + hdr.ctx_jt_size) * 4 > hdr.ctx_ucode_size_bytes:
        raise reader.fail("ctx_jt_offset", f"jump table dwords {hdr.ctx_jt_offset}+{hdr.ctx_jt_size} "
                                           f"outside the {hdr.ctx_ucode_size_bytes}-byte ctx ucode")
    if (hdr.ctl_jt_offset + hdr.ctl_jt_size) * 4 > hdr.ctl_ucode_size_bytes:
        raise reader.fail("ctl_jt_offset", f"jump table dwords {hdr.ctl_jt_offset}+{hdr.ctl_jt_size} "
                                           f"outside the {hdr.ctl_ucode_size_bytes}-byte ctl ucode")
    return hdr, sections, [], hdr.ucode_feature_version


def _parse_smc(reader: _Reader, header, engine: str):
    """smu_v13_0.c: smu_v13_0_init_microcode (common region) and smu_v13_0_setup_pptable (v2_0: one
    table, v2_1: an entry array; both offsets count from the start of the file)."""
    hdr = _header_struct(reader, header, {(1, 0): ucode.smc_firmware_header_v1_0,
                                          (2, 0): ucode.smc_firmware_header_v2_0,
                                          (2, 1): ucode.smc_firmware_header_v2_1})
    sections = [_common_section(reader, header, ucode.AMDGPU_UCODE_ID_SMC)]
    binaries = []
    version = (header.header_version_major, header.header_version_minor)
    if version == (2, 0):
        binaries.append(PspBinary(0, "PPTABLE", 0, hdr.ppt_offset_bytes, hdr.ppt_size_bytes,
                                  reader.span("ppt_offset_bytes", hdr.ppt_offset_bytes,
                                              hdr.ppt_size_bytes)))
    elif version == (2, 1):
        entry_size = ucode.smc_soft_pptable_entry.SIZE
        reader.span("pptable_entry_offset", hdr.pptable_entry_offset, 0)
        reader.span("pptable_count", hdr.pptable_entry_offset, hdr.pptable_count * entry_size)
        for index in range(hdr.pptable_count):
            entry_offset = hdr.pptable_entry_offset + index * entry_size
            entry = reader.struct(ucode.smc_soft_pptable_entry, entry_offset, "pptable_entry_offset")
            payload = reader.span(f"pptable[{index}].ppt_offset_bytes", entry.ppt_offset_bytes,
                                  entry.ppt_size_bytes)
            binaries.append(PspBinary(entry.id, f"PPTABLE_{entry.id}", entry.id, entry.ppt_offset_bytes,
                                      entry.ppt_size_bytes, payload))
    return hdr, sections, binaries, None


def _descriptors(reader: _Reader, header, count_field: str, count: int, table_offset: int,
                 names: Mapping[int, str]) -> list[PspBinary]:
    """psp_fw_bin_desc entries; each binary's offset counts from the ucode array (amdgpu_psp.c:
    parse_sos_bin_descriptor / parse_ta_bin_descriptor)."""
    # amdgpu_psp.c: psp_init_sos_microcode / parse_ta_v2_microcode refuse this many or more
    if count >= ucode.UCODE_MAX_PSP_PACKAGING:
        raise reader.fail(count_field, f"{count} packaged binaries, the limit is fewer than "
                                          f"{ucode.UCODE_MAX_PSP_PACKAGING}")
    desc_size = ucode.psp_fw_bin_desc.SIZE
    reader.span(count_field, table_offset, count * desc_size)
    binaries = []
    for index in range(count):
        desc = reader.struct(ucode.psp_fw_bin_desc, table_offset + index * desc_size, count_field)
        start = header.ucode_array_offset_bytes + desc.offset_bytes
        payload = reader.span(f"fw_bin[{index}].offset_bytes", start, desc.size_bytes)
        name = names.get(desc.fw_type, f"UNKNOWN_{desc.fw_type}")
        binaries.append(PspBinary(desc.fw_type, name, desc.fw_version, start, desc.size_bytes, payload))
    return binaries


def _parse_sos(reader: _Reader, header, engine: str):
    """amdgpu_psp.c: psp_init_sos_microcode, header major 2 (v2_0, or v2_1 with an aux index)."""
    hdr = _header_struct(reader, header, {(2, 0): ucode.psp_firmware_header_v2_0,
                                          (2, 1): ucode.psp_firmware_header_v2_1})
    count = hdr.psp_fw_bin_count
    table = hdr.offset_of("psp_fw_bin")
    # v2_1: amdgpu uses the binaries from the aux index on (aux SOS) or those before it; both
    # halves are kept here, and the index must split the table
    if header.header_version_minor == 1 and hdr.psp_aux_fw_bin_index > count:
        raise reader.fail("psp_aux_fw_bin_index", f"{hdr.psp_aux_fw_bin_index} is past the "
                                                  f"{count} packaged binaries")
    binaries = _descriptors(reader, header, "psp_fw_bin_count", count, table, PSP_FW_TYPE_NAMES)
    for needed in ("SOS", "SYS_DRV"):
        if not any(binary.name == needed and binary.size for binary in binaries):
            raise reader.fail("psp_fw_bin", f"no {needed} binary among the packaged ones")
    return hdr, [], binaries, None


def _parse_ta(reader: _Reader, header, engine: str):
    """amdgpu_psp.c: parse_ta_v2_microcode."""
    hdr = _header_struct(reader, header, {(2, 0): ucode.ta_firmware_header_v2_0})
    binaries = _descriptors(reader, header, "ta_fw_bin_count", hdr.ta_fw_bin_count,
                            hdr.offset_of("ta_fw_bin"), TA_FW_TYPE_NAMES)
    return hdr, [], binaries, None


_PARSERS = {KIND_CP: _parse_cp, KIND_RLC: _parse_rlc, KIND_MES: _parse_mes, KIND_IMU: _parse_imu,
            KIND_SDMA: _parse_sdma, KIND_SMC: _parse_smc, KIND_PSP_SOS: _parse_sos, KIND_PSP_TA: _parse_ta}


# ----------------------------------------------------------------------------------- loading sets


# the Navi31 (RX 7900 XTX) IP versions this driver targets
NAVI31_IP_VERSIONS = {"GC": (11, 0, 0), "MP0": (13, 0, 0), "MP1": (13, 0, 0), "SDMA0": (6, 0, 0)}


def load(spec: FirmwareSpec, roots: Sequence[pathlib.Path] | None = None) -> FirmwareImage | None:
    """Find, read and parse one file; None when an optional file is absent."""
    for name in spec.candidates:
        path = find_file(name, roots)
        if path is None:
            continue
        return parse_firmware(name, read_file(path), spec.kind, engine=spec.engine,
                              expected_ip_major=spec.ip_version[0], path=str(path))
    if not spec.required:
        return None
    looked = ", ".join(str(root) for root in (search_path() if roots is None else roots))
    raise FirmwareError(f"{spec.name}: not found (looked in {looked}, plain, .zst and .xz); fetch the "
                        f"pinned {FIRMWARE_PACKAGE.name} with: {FETCH_COMMAND}, or set {FIRMWARE_DIR_ENV}")


def load_set(ip_versions: Mapping[str, tuple[int, int, int]], roots: Sequence[pathlib.Path] | None = None,
             **selection) -> dict[str, FirmwareImage]:
    """Every file `firmware_for(ip_versions)` names, parsed; keyed by the spec's name."""
    images = {}
    for spec in firmware_for(ip_versions, **selection):
        image = load(spec, roots)
        if image is not None:
            images[spec.name] = image
    return images


# ------------------------------------------------------------------------------------------- CLI


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drivers.am.firmware",
                                     description="AMD firmware for the AM driver: fetch, find, check.")
    parser.add_argument("--fetch", action="store_true",
                        help=f"download and unpack {FIRMWARE_PACKAGE.name} {FIRMWARE_PACKAGE.version} "
                             f"({FIRMWARE_PACKAGE.suite}/{FIRMWARE_PACKAGE.component}) into the cache")
    parser.add_argument("--json", action="store_true", help="print the parsed headers as JSON")
    args = parser.parse_args(None if argv is None else list(argv))
    if args.fetch:
        def say(line: str) -> None:
            print(line, flush=True)
        root = fetch(progress=say)
        deb = sources.cached_deb(FIRMWARE_PACKAGE)
        if deb is not None:
            print(f"package: {deb} ({deb.stat().st_size / 1e6:.1f} MB)")
        print(f"firmware root: {root}")
    try:
        images = load_set(NAVI31_IP_VERSIONS)
    except FirmwareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        import json
        print(json.dumps([image.summary() for image in images.values()], indent=2))
        return 0
    for image in images.values():
        print(f"{image.name}: header {image.header_version[0]}.{image.header_version[1]}, "
              f"ucode {image.ucode_version:#x}, {len(image.data)} bytes, sha256 {image.sha256[:16]}..., "
              f"{len(image.sections)} sections, {len(image.binaries)} binaries  ({image.path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
