"""Parse and validate an AMD IP discovery table (the blob firmware leaves at the top of VRAM).

Pure parsing over bytes, so it can be fuzzed: `parse(blob)` checks what amdgpu checks
(drivers/gpu/drm/amd/amdgpu/amdgpu_discovery.c: amdgpu_discovery_init and
amdgpu_discovery_reg_base_init) and also that every offset and count stays inside the blob, and
returns typed data: dies, IP instances (hardware id, amdgpu block name, version, base segments in
dwords, 32- or 64-bit), the gc_info table and the harvest list. A malformed blob raises BadBinary
naming the table and field that is wrong.

Reading the blob from the GPU (memory-size register, VRAM through BAR0 or the MM_INDEX window)
is `drivers.am.device`'s job.
"""
from __future__ import annotations

import dataclasses

from autogen.amd import discovery as d
from autogen.amd import soc15_hw_ip as hw
from hal.errors import BadBinary

# drivers/gpu/drm/amd/amdgpu/amdgpu_discovery.h: DISCOVERY_TMR_OFFSET, DISCOVERY_TMR_SIZE
DISCOVERY_TMR_OFFSET = 64 << 10
DISCOVERY_TMR_SIZE = 10 << 10
# ip_discovery_header.version values amdgpu reads: 1 and 2 (struct ip), 3 (ip_v3: sub_revision and
# variant), 4 (ip_v4: optional 64-bit bases); amdgpu_discovery.c amdgpu_discovery_reg_base_init
KNOWN_IP_DISCOVERY_VERSIONS = (1, 2, 3, 4)
FIRST_VERSION_WITH_VARIANT = 3
# amdgpu.h: HW_ID_MAX and HWIP_MAX_INSTANCE bound what amdgpu_discovery_validate_ip accepts
HW_ID_MAX = 300
HWIP_MAX_INSTANCE = 44
# amdgpu_discovery.c amdgpu_discovery_reg_base_init: a 64-bit base keeps its low 32 bits, and of
# those the low 30 (the base is in dwords)
BASE_64_TO_32_MASK = 0x3FFFFFFF
CHECKSUM_MASK = 0xFFFF
BASE_32_BYTES = 4
BASE_64_BYTES = 8

# amdgpu's block names (enum amd_hw_ip_block_type) and the hardware id each is found under in the
# table: amdgpu_discovery.c hw_id_map (NBIO is listed as NBIF_HWID, DCE as DMU_HWID, CLK as CLKA_HWID)
HW_ID_OF_BLOCK: dict[str, int] = {
    "GC": hw.GC_HWID, "HDP": hw.HDP_HWID, "SDMA0": hw.SDMA0_HWID, "SDMA1": hw.SDMA1_HWID,
    "SDMA2": hw.SDMA2_HWID, "SDMA3": hw.SDMA3_HWID, "MMHUB": hw.MMHUB_HWID, "ATHUB": hw.ATHUB_HWID,
    "NBIO": hw.NBIF_HWID, "MP0": hw.MP0_HWID, "MP1": hw.MP1_HWID, "UVD": hw.UVD_HWID,
    "DF": hw.DF_HWID, "DCE": hw.DMU_HWID, "OSSSYS": hw.OSSSYS_HWID, "SMUIO": hw.SMUIO_HWID,
    "PWR": hw.PWR_HWID, "THM": hw.THM_HWID, "CLK": hw.CLKA_HWID, "UMC": hw.UMC_HWID,
    "DCI": hw.DCI_HWID, "PCIE": hw.PCIE_HWID,
}
BLOCK_OF_HW_ID: dict[int, str] = {hw_id: block for block, hw_id in HW_ID_OF_BLOCK.items()}

# gc_info (major, minor) -> the struct that version is (discovery.h; amdgpu_discovery.c
# amdgpu_discovery_get_gfx_info switches on the major version and reads more fields per minor)
GC_INFO_STRUCTS: dict[tuple[int, int], type] = {
    (1, 0): d.gc_info_v1_0, (1, 1): d.gc_info_v1_1, (1, 2): d.gc_info_v1_2, (1, 3): d.gc_info_v1_3,
    (2, 0): d.gc_info_v2_0, (2, 1): d.gc_info_v2_1,
}


def _hw_id_names() -> dict[int, str]:
    """Hardware id -> its soc15_hw_ip.h name (first name wins where two share an id)."""
    names: dict[int, str] = {}
    for name in dir(hw):
        if name.endswith("_HWID"):
            names.setdefault(getattr(hw, name), name[:-len("_HWID")])
    return names


HW_ID_NAMES = _hw_id_names()


@dataclasses.dataclass(frozen=True)
class IPInstance:
    """One IP block instance as the table lists it."""

    hw_id: int
    hw_name: str  # soc15_hw_ip.h name ("NBIF")
    block: str | None  # amdgpu block name ("NBIO"), None when amdgpu has no block for this id
    instance: int
    version: tuple[int, int, int]
    sub_revision: int
    variant: int
    harvest: int  # version 1/2 tables only
    bases: tuple[int, ...]  # dword bases per segment, as amdgpu keeps them (32-bit)
    bases_64: tuple[int, ...] | None  # the raw 64-bit bases when the table has them

    @property
    def version_text(self) -> str:
        return ".".join(str(part) for part in self.version)


@dataclasses.dataclass(frozen=True)
class Die:
    die_id: int
    ips: tuple[IPInstance, ...]


@dataclasses.dataclass(frozen=True)
class Discovery:
    """The parsed table."""

    binary_version: tuple[int, int]
    ip_discovery_version: int
    base_addr_64_bit: bool
    dies: tuple[Die, ...]
    gc_info_version: tuple[int, int] | None
    gc_info: dict[str, int]
    harvested: tuple[tuple[int, int], ...]  # (hw_id, instance) pairs from the harvest table

    def ips(self) -> tuple[IPInstance, ...]:
        return tuple(ip for die in self.dies for ip in die.ips)

    def find(self, block: str, instance: int = 0) -> IPInstance:
        """The IP instance of amdgpu block `block` ("GC", "NBIO", ...); LookupError naming what is."""
        for ip in self.ips():
            if ip.block == block and ip.instance == instance:
                return ip
        present = ", ".join(sorted({f"{ip.block or ip.hw_name}[{ip.instance}]" for ip in self.ips()}))
        raise LookupError(f"the discovery table lists no {block} instance {instance} (it lists {present})")

    def version(self, block: str, instance: int = 0) -> tuple[int, int, int]:
        return self.find(block, instance).version

    def blocks(self) -> dict[str, tuple[tuple[int, int, int], tuple[tuple[int, ...], ...]]]:
        """Every amdgpu block: name -> (version of instance 0, base segments per instance)."""
        result: dict[str, tuple[tuple[int, int, int], list[tuple[int, ...]]]] = {}
        for ip in self.ips():
            if ip.block is None:
                continue
            version, instances = result.setdefault(ip.block, (ip.version, []))
            while len(instances) <= ip.instance:
                instances.append(())
            instances[ip.instance] = ip.bases
        return {name: (version, tuple(instances)) for name, (version, instances) in result.items()}


def checksum(data: bytes | memoryview) -> int:
    """amdgpu_discovery_calculate_checksum: the 16-bit sum of the bytes."""
    return sum(data) & CHECKSUM_MASK


def _bad(what: str) -> BadBinary:
    return BadBinary(f"IP discovery table: {what}")


def _need(blob: memoryview, offset: int, size: int, what: str) -> None:
    if offset < 0 or offset + size > len(blob):
        raise _bad(f"{what} needs bytes [{offset:#x}, {offset + size:#x}) but the table has {len(blob):#x} "
                   "(truncated or a bad offset)")


def _struct(cls, blob: memoryview, offset: int, what: str):
    _need(blob, offset, cls.SIZE, what)
    return cls.from_bytes(blob[offset:offset + cls.SIZE])


def _verify(blob: memoryview, offset: int, size: int, expected: int, what: str) -> None:
    _need(blob, offset, size, f"{what} (checksummed range)")
    actual = checksum(blob[offset:offset + size])
    if actual != expected:
        raise _bad(f"{what} checksum is {expected:#06x} but bytes [{offset:#x}, {offset + size:#x}) sum "
                   f"to {actual:#06x} (corrupt table)")


def parse(data: bytes | bytearray | memoryview) -> Discovery:
    """Validate and decode a discovery blob; BadBinary names the first field that is wrong."""
    blob = memoryview(bytes(data))
    header = _struct(d.binary_header, blob, 0, "binary_header")
    if header.binary_signature != d.BINARY_SIGNATURE:
        raise _bad(f"binary_header.binary_signature is {header.binary_signature:#010x}, expected "
                   f"{d.BINARY_SIGNATURE:#010x} (no table at the top of VRAM, or VRAM size wrong)")
    covered_from = d.binary_header.offset_of("binary_size")
    if header.binary_size < d.binary_header.SIZE:
        raise _bad(f"binary_header.binary_size {header.binary_size} is smaller than the header "
                   f"({d.binary_header.SIZE} bytes)")
    _need(blob, 0, header.binary_size, "binary_header.binary_size")
    _verify(blob, covered_from, header.binary_size - covered_from, header.binary_checksum,
            "binary_header.binary_checksum")
    blob = blob[:header.binary_size]
    tables = header.table_list
    ip_info = tables[d.IP_DISCOVERY]
    if not ip_info.offset:
        raise _bad("binary_header.table_list[IP_DISCOVERY].offset is 0: the table lists no IPs")
    version, base_64, dies = _parse_ip_discovery(blob, ip_info.offset, ip_info.checksum)
    gc_version, gc_info = _parse_gc_info(blob, tables[d.GC])
    harvested = _parse_harvest(blob, tables[d.HARVEST_INFO])
    return Discovery((header.version_major, header.version_minor), version, base_64, dies,
                     gc_version, gc_info, harvested)


def _parse_ip_discovery(blob: memoryview, offset: int, expected: int) -> tuple[int, bool, tuple[Die, ...]]:
    header = _struct(d.ip_discovery_header, blob, offset, "ip_discovery_header")
    if header.signature != d.DISCOVERY_TABLE_SIGNATURE:
        raise _bad(f"ip_discovery_header.signature is {header.signature:#010x}, expected "
                   f"{d.DISCOVERY_TABLE_SIGNATURE:#010x}")
    if header.version not in KNOWN_IP_DISCOVERY_VERSIONS:
        raise _bad(f"ip_discovery_header.version {header.version} is not one this driver reads "
                   f"({', '.join(map(str, KNOWN_IP_DISCOVERY_VERSIONS))})")
    if header.size < d.ip_discovery_header.SIZE:
        raise _bad(f"ip_discovery_header.size {header.size} is smaller than the header")
    _verify(blob, offset, header.size, expected, "table_list[IP_DISCOVERY].checksum")
    end = offset + header.size
    if header.num_dies > len(header.die_info):
        raise _bad(f"ip_discovery_header.num_dies {header.num_dies} exceeds the {len(header.die_info)} "
                   "die slots")
    base_64 = bool(header.base_addr_64_bit)
    dies = []
    for index in range(header.num_dies):
        die_offset = header.die_info[index].die_offset
        dies.append(_parse_die(blob[:end], die_offset, index, header.version, base_64))
    return header.version, base_64, tuple(dies)


def _parse_die(blob: memoryview, offset: int, index: int, version: int, base_64: bool) -> Die:
    what = f"die {index}"
    die = _struct(d.die_header, blob, offset, f"{what} die_header (die_info[{index}].die_offset)")
    if die.die_id != index:
        raise _bad(f"{what}: die_header.die_id is {die.die_id}, expected {index}")
    position = offset + d.die_header.SIZE
    ips = []
    for number in range(die.num_ips):
        ip, position = _parse_ip(blob, position, f"{what} ip {number}", version, base_64)
        if ip is not None:
            ips.append(ip)
    return Die(index, tuple(ips))


def _parse_ip(blob: memoryview, offset: int, what: str, version: int,
              base_64: bool) -> tuple[IPInstance | None, int]:
    entry = _struct(d.ip_v4, blob, offset, f"{what} entry")
    base_size = BASE_64_BYTES if base_64 else BASE_32_BYTES
    bases_at = offset + d.ip_v4.SIZE
    count = entry.num_base_address
    _need(blob, bases_at, count * base_size, f"{what} ({count} base addresses)")
    raw = [int.from_bytes(blob[bases_at + i * base_size:bases_at + (i + 1) * base_size], "little")
           for i in range(count)]
    next_offset = bases_at + count * base_size
    # amdgpu_discovery_validate_ip: entries with an id or instance out of range are skipped
    if entry.hw_id >= HW_ID_MAX or entry.instance_number >= HWIP_MAX_INSTANCE:
        return None, next_offset
    if version >= FIRST_VERSION_WITH_VARIANT:
        sub_revision, variant, harvest = entry.sub_revision, entry.variant, 0
    else:
        old = d.ip.from_bytes(blob[offset:offset + d.ip.SIZE])
        sub_revision, variant, harvest = 0, 0, old.harvest
    bases = tuple((base & BASE_64_TO_32_MASK) if base_64 else base for base in raw)
    ip = IPInstance(entry.hw_id, HW_ID_NAMES.get(entry.hw_id, f"HWID{entry.hw_id}"),
                    BLOCK_OF_HW_ID.get(entry.hw_id), entry.instance_number,
                    (entry.major, entry.minor, entry.revision), sub_revision, variant, harvest, bases,
                    tuple(raw) if base_64 else None)
    return ip, next_offset


def _parse_gc_info(blob: memoryview, info) -> tuple[tuple[int, int] | None, dict[str, int]]:
    if not info.offset:
        return None, {}
    header = _struct(d.gpu_info_header, blob, info.offset, "gc_info header")
    if header.table_id != d.GC_TABLE_ID:
        raise _bad(f"gc_info header.table_id is {header.table_id:#x}, expected {d.GC_TABLE_ID:#x}")
    _verify(blob, info.offset, header.size, info.checksum, "table_list[GC].checksum")
    version = (header.version_major, header.version_minor)
    cls = GC_INFO_STRUCTS.get(version)
    if cls is None:
        known = ", ".join(f"{major}.{minor}" for major, minor in GC_INFO_STRUCTS)
        raise _bad(f"gc_info version {version[0]}.{version[1]} is not one this driver reads ({known})")
    if header.size < cls.SIZE:
        raise _bad(f"gc_info header.size {header.size} is smaller than gc_info v{version[0]}.{version[1]} "
                   f"({cls.SIZE} bytes)")
    table = _struct(cls, blob, info.offset, f"gc_info v{version[0]}.{version[1]}")
    values = {name: value for name, value in table.to_dict().items() if name != "header"}
    return version, values


def _parse_harvest(blob: memoryview, info) -> tuple[tuple[int, int], ...]:
    if not info.offset:
        return ()
    table = _struct(d.harvest_table, blob, info.offset, "harvest table")
    if table.header.signature != d.HARVEST_TABLE_SIGNATURE:
        raise _bad(f"harvest table signature is {table.header.signature:#010x}, expected "
                   f"{d.HARVEST_TABLE_SIGNATURE:#010x}")
    _verify(blob, info.offset, d.harvest_table.SIZE, info.checksum, "table_list[HARVEST_INFO].checksum")
    harvested = []
    for entry in table.list:
        if entry.hw_id == 0:  # amdgpu_discovery_read_from_harvest_table: the list ends at id 0
            break
        harvested.append((entry.hw_id, entry.number_instance))
    return tuple(harvested)
