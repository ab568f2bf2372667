"""QMD (queue meta data): the 256-byte launch descriptor a compute class reads for one grid.

Layout: QMD version 03_00, the fields this driver sets or the mock checks, as bit ranges of the
256-byte block. Source: Mesa 25.0.7 (pinned in autogen/manifest.py as MESA_25_0),
src/nouveau/headers/nvidia/classes/clc6c0qmd.h (NVC6C0_QMDV03_00_*, AMPERE_COMPUTE_A) and
clc7c0qmd.h (NVC7C0_QMDV03_00_*, the same layout for AMPERE_COMPUTE_B/ADA_COMPUTE_A). The table is
written by hand: the generator has no front end for the MW(hi:lo) field macros yet.

Hopper (HOPPER_COMPUTE_A) is driven with QMD 03_00 too. Whether GH100 accepts 03_00 or needs its
own 04_00 layout is NOT verified: no Debian-packaged source carries a Hopper QMD header (Mesa
25.0.7 stops at Ada; the r535 open kernel modules carry no *qmd.h). Until a real H100 says
otherwise, the mock accepts 03_00 on every generation; docs/nv.md says so.

`QMD.build(...)` returns the bytes; `field(data, name)` reads one field back (the mock's decoder).
"""
from __future__ import annotations

import dataclasses

from hal.errors import InvalidArgument

QMD_SIZE = 256  # clc6c0qmd.h: the QMD's highest field ends at bit 2047
QMD_ALIGNMENT = 256  # clc6c0.h NVC6C0_SEND_PCAS_A_QMD_ADDRESS_SHIFTED8: the address >> 8
VERSION_MAJOR = 3
VERSION_MINOR = 0

# name -> (high bit, low bit), clc6c0qmd.h NVC6C0_QMDV03_00_<name> MW(high:low)
FIELDS: dict[str, tuple[int, int]] = {
    "SM_GLOBAL_CACHING_ENABLE": (134, 134),
    "INVALIDATE_TEXTURE_HEADER_CACHE": (186, 186),
    "INVALIDATE_TEXTURE_SAMPLER_CACHE": (187, 187),
    "INVALIDATE_TEXTURE_DATA_CACHE": (188, 188),
    "INVALIDATE_SHADER_DATA_CACHE": (189, 189),
    "INVALIDATE_INSTRUCTION_CACHE": (190, 190),
    "INVALIDATE_SHADER_CONSTANT_CACHE": (191, 191),
    "CWD_MEMBAR_TYPE": (369, 368),
    "API_VISIBLE_CALL_LIMIT": (378, 378),
    "SAMPLER_INDEX": (382, 382),
    "CTA_RASTER_WIDTH": (415, 384),
    "CTA_RASTER_HEIGHT": (431, 416),
    "CTA_RASTER_DEPTH": (463, 448),
    "SHARED_MEMORY_SIZE": (561, 544),
    "MIN_SM_CONFIG_SHARED_MEM_SIZE": (567, 562),
    "MAX_SM_CONFIG_SHARED_MEM_SIZE": (574, 569),
    "QMD_VERSION": (579, 576),
    "QMD_MAJOR_VERSION": (583, 580),
    "CTA_THREAD_DIMENSION0": (607, 592),
    "CTA_THREAD_DIMENSION1": (623, 608),
    "CTA_THREAD_DIMENSION2": (639, 624),
    "CONSTANT_BUFFER_VALID0": (640, 640),  # CONSTANT_BUFFER_VALID(i): bit 640 + i
    "REGISTER_COUNT_V": (656, 648),
    "TARGET_SM_CONFIG_SHARED_MEM_SIZE": (662, 657),
    "SHADER_LOCAL_MEMORY_LOW_SIZE": (759, 736),
    "BARRIER_COUNT": (767, 763),
    "CONSTANT_BUFFER_ADDR_LOWER0": (1055, 1024),  # CONSTANT_BUFFER_ADDR_LOWER(i): + 64 i
    "CONSTANT_BUFFER_ADDR_UPPER0": (1072, 1056),
    "CONSTANT_BUFFER_SIZE_SHIFTED4_0": (1087, 1075),
    "PROGRAM_ADDRESS_LOWER": (1567, 1536),
    "PROGRAM_ADDRESS_UPPER": (1584, 1568),
    "SHADER_LOCAL_MEMORY_HIGH_SIZE": (1623, 1600),
}
CWD_MEMBAR_TYPE_L1_SYSMEMBAR = 1  # clc6c0qmd.h NVC6C0_QMDV03_00_CWD_MEMBAR_TYPE_L1_SYSMEMBAR
API_VISIBLE_CALL_LIMIT_NO_CHECK = 1  # clc6c0qmd.h NVC6C0_QMDV03_00_API_VISIBLE_CALL_LIMIT_NO_CHECK
SAMPLER_INDEX_VIA_HEADER_INDEX = 1  # clc6c0qmd.h NVC6C0_QMDV03_00_SAMPLER_INDEX_VIA_HEADER_INDEX
CONSTANT_BUFFER_MAX = 1 << 16  # CONSTANT_BUFFER_SIZE_SHIFTED4 is 13 bits of 16-byte units: 64 KiB
# the SM shared-memory carve-out fields count 4 KiB steps plus one (tinygrad's ops_nv.py
# smem_config: KiB // 4 + 1), from the configurations Ampere..Hopper offer
SM_CONFIG_STEP = 4096
SM_CONFIG_KIB = (8, 16, 32, 64, 100, 132, 164, 196, 228)


def sm_config(shared_bytes: int, limit_kib: int) -> tuple[int, int]:
    """(MIN/TARGET, MAX) carve-out encodings for a kernel that needs `shared_bytes` per CTA."""
    usable = [kib for kib in SM_CONFIG_KIB if kib <= limit_kib]
    needed = next((kib for kib in usable if kib * 1024 >= shared_bytes), None)
    if needed is None:
        raise InvalidArgument(f"{shared_bytes} bytes of shared memory per CTA exceed the largest "
                              f"carve-out of {usable[-1]} KiB")
    return needed * 1024 // SM_CONFIG_STEP + 1, usable[-1] * 1024 // SM_CONFIG_STEP + 1


def _put(data: bytearray, name: str, value: int) -> None:
    high, low = FIELDS[name]
    width = high - low + 1
    if not 0 <= value < 1 << width:
        raise InvalidArgument(f"QMD field {name}: {value:#x} does not fit {width} bits")
    whole = int.from_bytes(data, "little")
    whole &= ~(((1 << width) - 1) << low)
    whole |= value << low
    data[:] = whole.to_bytes(QMD_SIZE, "little")


def field(data: bytes, name: str) -> int:
    """The value of QMD field `name` in a 256-byte QMD."""
    high, low = FIELDS[name]
    return (int.from_bytes(data[:QMD_SIZE], "little") >> low) & ((1 << (high - low + 1)) - 1)


@dataclasses.dataclass
class QMD:
    """What one launch needs; `build()` lays it out."""

    program_address: int
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    constant0_address: int
    constant0_size: int
    registers: int
    shared_bytes: int
    local_bytes_per_thread: int
    shared_limit_kib: int
    barriers: int = 1

    def build(self) -> bytes:
        data = bytearray(QMD_SIZE)
        _put(data, "QMD_MAJOR_VERSION", VERSION_MAJOR)
        _put(data, "QMD_VERSION", VERSION_MINOR)
        _put(data, "SM_GLOBAL_CACHING_ENABLE", 1)
        # every cache the kernel may read stale is invalidated before it starts
        for name in ("INVALIDATE_TEXTURE_HEADER_CACHE", "INVALIDATE_TEXTURE_SAMPLER_CACHE",
                     "INVALIDATE_TEXTURE_DATA_CACHE", "INVALIDATE_SHADER_DATA_CACHE",
                     "INVALIDATE_INSTRUCTION_CACHE", "INVALIDATE_SHADER_CONSTANT_CACHE"):
            _put(data, name, 1)
        _put(data, "CWD_MEMBAR_TYPE", CWD_MEMBAR_TYPE_L1_SYSMEMBAR)
        _put(data, "API_VISIBLE_CALL_LIMIT", API_VISIBLE_CALL_LIMIT_NO_CHECK)
        _put(data, "SAMPLER_INDEX", SAMPLER_INDEX_VIA_HEADER_INDEX)
        for name, value in zip(("CTA_RASTER_WIDTH", "CTA_RASTER_HEIGHT", "CTA_RASTER_DEPTH"), self.grid):
            _put(data, name, value)
        for index, value in enumerate(self.block):
            _put(data, f"CTA_THREAD_DIMENSION{index}", value)
        # the shared memory size is in bytes, 256-byte granular (as tinygrad's ops_nv.py rounds it)
        shared = -(-self.shared_bytes // 256) * 256
        _put(data, "SHARED_MEMORY_SIZE", shared)
        target, maximum = sm_config(shared, self.shared_limit_kib)
        _put(data, "MIN_SM_CONFIG_SHARED_MEM_SIZE", target)
        _put(data, "TARGET_SM_CONFIG_SHARED_MEM_SIZE", target)
        _put(data, "MAX_SM_CONFIG_SHARED_MEM_SIZE", maximum)
        _put(data, "REGISTER_COUNT_V", self.registers)
        _put(data, "BARRIER_COUNT", self.barriers)
        _put(data, "SHADER_LOCAL_MEMORY_LOW_SIZE", -(-self.local_bytes_per_thread // 16) * 16)
        _put(data, "SHADER_LOCAL_MEMORY_HIGH_SIZE", 0)
        if self.constant0_address % 256 or self.constant0_size % 16:
            raise InvalidArgument(f"constant bank 0 at {self.constant0_address:#x} "
                                  f"(+{self.constant0_size:#x}): 256-byte aligned, 16-byte granular")
        _put(data, "CONSTANT_BUFFER_VALID0", 1)
        _put(data, "CONSTANT_BUFFER_ADDR_LOWER0", self.constant0_address & 0xFFFFFFFF)
        _put(data, "CONSTANT_BUFFER_ADDR_UPPER0", self.constant0_address >> 32)
        _put(data, "CONSTANT_BUFFER_SIZE_SHIFTED4_0", self.constant0_size >> 4)
        _put(data, "PROGRAM_ADDRESS_LOWER", self.program_address & 0xFFFFFFFF)
        _put(data, "PROGRAM_ADDRESS_UPPER", self.program_address >> 32)
        return bytes(data)
