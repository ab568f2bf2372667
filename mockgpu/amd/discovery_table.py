"""The IP discovery table a Navi31 carries at the top of its VRAM, built in the real binary format.

Firmware leaves the table in the last 64 KiB of VRAM; amdgpu reads DISCOVERY_TMR_SIZE bytes from
there (drivers/gpu/drm/amd/amdgpu/amdgpu_discovery.c: amdgpu_discovery_read_binary_from_mem, with
DISCOVERY_TMR_OFFSET and DISCOVERY_TMR_SIZE from amdgpu_discovery.h). The layout is discovery.h's:
a binary_header whose table_list points at the IP discovery table (ip_discovery_header, then per
die a die_header followed by its IP entries), the gc_info table and the harvest table; each table
carries a 16-bit byte-sum checksum (amdgpu_discovery_calculate_checksum).

`build_table` writes any IP list; `NAVI31_IPS` and `NAVI31_GC_INFO` are the RX 7900 XTX's. The
layout choices the kernel does not fix (where each table sits inside the blob) are this model's.
"""
from __future__ import annotations

import dataclasses

from autogen.amd import discovery as d
from autogen.amd import soc15_hw_ip as hw

# drivers/gpu/drm/amd/amdgpu/amdgpu_discovery.h: DISCOVERY_TMR_OFFSET, DISCOVERY_TMR_SIZE
DISCOVERY_TMR_OFFSET = 64 << 10
DISCOVERY_TMR_SIZE = 10 << 10
# the binary_header versions this model writes (amdgpu reads no version from it)
BINARY_VERSION = (2, 0)
# ip_discovery_header.version: 4 is the ip_v4 layout, which carries 32-bit or (with the header's
# base_addr_64_bit flag) 64-bit base addresses (discovery.h struct ip_v4; amdgpu_discovery.c
# amdgpu_discovery_reg_base_init reads sub_revision and variant from version 3 on)
IP_DISCOVERY_VERSION = 4
HARVEST_TABLE_VERSION = 1  # discovery.h: harvest_info_header.version; amdgpu does not check it
TABLE_ALIGNMENT = 8  # this model's placement of each table inside the blob
BYTE_MASK = 0xFF
CHECKSUM_MASK = 0xFFFF


@dataclasses.dataclass(frozen=True)
class IPEntry:
    """One IP instance: amdgpu's block name, hardware id (soc15_hw_ip.h), instance, version and
    register base segments (dwords)."""

    block: str
    hw_id: int
    instance: int
    version: tuple[int, int, int]
    bases: tuple[int, ...]
    sub_revision: int = 0
    variant: int = 0


# Register base segments (in dwords) for the blocks the model serves. The kernel has no offset table
# for Navi31 (gfx11 parts are discovered only), so these are Navi21's, the part whose MMIO layout
# the RDNA3 parts keep: drivers/gpu/drm/amd/include/sienna_cichlid_ip_offset.h (GC_BASE, SDMA0_BASE,
# SDMA1_BASE, MMHUB_BASE, NBIO_BASE, MP0_BASE, MP1_BASE, OSSSYS_BASE, HDP_BASE, ATHUB_BASE,
# SMUIO_BASE).
GC_SEGMENTS = (0x00001260, 0x0000A000, 0x0001C000, 0x02402C00)
MMHUB_SEGMENTS = (0x0001A000, 0x02408800)
NBIO_SEGMENTS = (0x00000000, 0x00000014, 0x00000D20, 0x00010400, 0x0241B000)
MP_SEGMENTS = (0x00016000, 0x00DC0000, 0x00E00000, 0x00E40000, 0x0243FC00)
OSSSYS_SEGMENTS = (0x000010A0, 0x0240A000)
HDP_SEGMENTS = (0x00000F20, 0x0240A400)
ATHUB_SEGMENTS = (0x00000C00, 0x02408C00)
SMUIO_SEGMENTS = (0x00016800, 0x00016A00, 0x00440000, 0x02401000)

# The RX 7900 XTX's blocks at the versions amdgpu binds for it (GC 11.0.0, SDMA 6.0.0 x2 engines,
# MMHUB 3.0.0, NBIO 4.3.0, MP0/MP1 13.0.0, OSSSYS 6.0.0, HDP 6.0.0: the gfx11 cases of
# amdgpu_discovery.c amdgpu_discovery_set_*_ip_blocks; ATHUB 3.0.0 and SMUIO 13.0.6 likewise).
# NBIO is listed under NBIF_HWID, the id amdgpu's hw_id_map gives NBIO_HWIP.
NAVI31_IPS: tuple[IPEntry, ...] = (
    IPEntry("GC", hw.GC_HWID, 0, (11, 0, 0), GC_SEGMENTS),
    IPEntry("SDMA0", hw.SDMA0_HWID, 0, (6, 0, 0), GC_SEGMENTS),
    IPEntry("SDMA1", hw.SDMA1_HWID, 0, (6, 0, 0), GC_SEGMENTS),
    IPEntry("MMHUB", hw.MMHUB_HWID, 0, (3, 0, 0), MMHUB_SEGMENTS),
    IPEntry("ATHUB", hw.ATHUB_HWID, 0, (3, 0, 0), ATHUB_SEGMENTS),
    IPEntry("NBIO", hw.NBIF_HWID, 0, (4, 3, 0), NBIO_SEGMENTS),
    IPEntry("MP0", hw.MP0_HWID, 0, (13, 0, 0), MP_SEGMENTS),
    IPEntry("MP1", hw.MP1_HWID, 0, (13, 0, 0), MP_SEGMENTS),
    IPEntry("OSSSYS", hw.OSSSYS_HWID, 0, (6, 0, 0), OSSSYS_SEGMENTS),
    IPEntry("HDP", hw.HDP_HWID, 0, (6, 0, 0), HDP_SEGMENTS),
    IPEntry("SMUIO", hw.SMUIO_HWID, 0, (13, 0, 6), SMUIO_SEGMENTS),
)

# gc_info v2.1 figures for the RX 7900 XTX (AMD's published configuration: 6 shader engines with
# 2 shader arrays each, 96 compute units, 96 ROPs = 4 render backends per SE; wave32, 64 KiB LDS).
NAVI31_GC_INFO: dict[str, int] = {
    "gc_num_se": 6,
    "gc_num_cu_per_sh": 8,
    "gc_num_sh_per_se": 2,
    "gc_num_rb_per_se": 4,
    "gc_num_tccs": 24,
    "gc_wave_size": 32,
    "gc_max_waves_per_simd": 16,
    "gc_max_scratch_slots_per_cu": 32,
    "gc_lds_size": 64,
}
GC_INFO_VERSION = (2, 1)


def checksum(data: bytes | bytearray | memoryview) -> int:
    """amdgpu_discovery_calculate_checksum: the 16-bit sum of the bytes."""
    return sum(bytes(data)) & CHECKSUM_MASK


def _align(value: int) -> int:
    return (value + TABLE_ALIGNMENT - 1) // TABLE_ALIGNMENT * TABLE_ALIGNMENT


def _ip_discovery_table(ips: tuple[IPEntry, ...], offset: int, base_addr_64_bit: bool) -> bytearray:
    """The ip_discovery_header, one die_header and the IP entries, for a table placed at `offset`."""
    header = d.ip_discovery_header()
    header.signature = d.DISCOVERY_TABLE_SIGNATURE
    header.version = IP_DISCOVERY_VERSION
    header.num_dies = 1
    header.base_addr_64_bit = 1 if base_addr_64_bit else 0
    die_offset = offset + d.ip_discovery_header.SIZE
    header.die_info[0].die_id = 0
    header.die_info[0].die_offset = die_offset
    die = d.die_header(die_id=0, num_ips=len(ips))
    body = bytearray(bytes(die))
    base_size = 8 if base_addr_64_bit else 4
    for entry in ips:
        ip = d.ip_v4()
        ip.hw_id = entry.hw_id
        ip.instance_number = entry.instance
        ip.num_base_address = len(entry.bases)
        ip.major, ip.minor, ip.revision = entry.version
        ip.sub_revision = entry.sub_revision
        ip.variant = entry.variant
        body += bytes(ip)
        for base in entry.bases:
            body += base.to_bytes(base_size, "little")
    table = bytearray(bytes(header)) + body
    d.ip_discovery_header.from_buffer(table).size = len(table)
    return table


def _gc_info(values: dict[str, int], version: tuple[int, int]) -> bytearray:
    struct_for = {(1, 0): d.gc_info_v1_0, (1, 1): d.gc_info_v1_1, (1, 2): d.gc_info_v1_2,
                  (1, 3): d.gc_info_v1_3, (2, 0): d.gc_info_v2_0, (2, 1): d.gc_info_v2_1}
    cls = struct_for[version]
    info = cls(**{name: value for name, value in values.items() if name in cls.FIELDS})
    info.header.table_id = d.GC_TABLE_ID
    info.header.version_major, info.header.version_minor = version
    info.header.size = cls.SIZE
    return bytearray(bytes(info))


def _harvest(harvested: tuple[tuple[int, int], ...]) -> bytearray:
    table = d.harvest_table()
    table.header.signature = d.HARVEST_TABLE_SIGNATURE
    table.header.version = HARVEST_TABLE_VERSION
    for index, (hw_id, instance) in enumerate(harvested):
        table.list[index].hw_id = hw_id
        table.list[index].number_instance = instance
    return bytearray(bytes(table))


def build_table(ips: tuple[IPEntry, ...] = NAVI31_IPS, gc_info: dict[str, int] | None = None,
                gc_info_version: tuple[int, int] = GC_INFO_VERSION,
                harvested: tuple[tuple[int, int], ...] = (), base_addr_64_bit: bool = False) -> bytes:
    """The whole discovery blob (binary header first), at most DISCOVERY_TMR_SIZE bytes."""
    if gc_info is None:
        gc_info = NAVI31_GC_INFO
    blob = bytearray(d.binary_header.SIZE)
    placed: dict[int, tuple[int, bytearray]] = {}
    ip_offset = _align(len(blob))
    placed[d.IP_DISCOVERY] = (ip_offset, _ip_discovery_table(ips, ip_offset, base_addr_64_bit))
    tables = ((d.GC, _gc_info(gc_info, gc_info_version)), (d.HARVEST_INFO, _harvest(harvested)))
    end = ip_offset + len(placed[d.IP_DISCOVERY][1])
    for table_id, data in tables:
        offset = _align(end)
        placed[table_id] = (offset, data)
        end = offset + len(data)
    blob = bytearray(end)
    header = d.binary_header.from_buffer(blob)
    header.binary_signature = d.BINARY_SIGNATURE
    header.version_major, header.version_minor = BINARY_VERSION
    header.binary_size = end
    for table_id, (offset, data) in placed.items():
        blob[offset:offset + len(data)] = data
        info = header.table_list[table_id]
        info.offset = offset
        info.size = len(data)
        info.checksum = checksum(data)
    if end > DISCOVERY_TMR_SIZE:
        raise ValueError(f"discovery blob of {end} bytes exceeds DISCOVERY_TMR_SIZE ({DISCOVERY_TMR_SIZE})")
    # amdgpu_discovery_init: the binary checksum covers binary_size bytes after binary_checksum
    covered_from = d.binary_header.offset_of("binary_size")
    header.binary_checksum = checksum(blob[covered_from:end])
    return bytes(blob)


def table_offset(vram_size: int) -> int:
    """Where in VRAM the blob starts: DISCOVERY_TMR_OFFSET below the top (amdgpu_discovery.c)."""
    return vram_size - DISCOVERY_TMR_OFFSET
