"""QMD (queue meta data): the 256-byte launch descriptor a compute class reads for one grid.

Layout: QMD version 03_00, the fields this driver sets or the mock checks, as bit ranges of the
256-byte block, from autogen.nv.qmd (generated from Mesa 25.0.7's
src/nouveau/headers/nvidia/classes/clc6c0qmd.h, NVC6C0_QMDV03_00_* for AMPERE_COMPUTE_A, and
clc7c0qmd.h, NVC7C0_QMDV03_00_*, the same layout for AMPERE_COMPUTE_B/ADA_COMPUTE_A).

Hopper (HOPPER_COMPUTE_A) is driven with QMD 03_00 too. Whether GH100 accepts 03_00 or needs its
own 04_00 layout is NOT verified: no Debian-packaged source carries a Hopper QMD header (Mesa
25.0.7 stops at Ada; the r535 open kernel modules carry no *qmd.h). Until a real H100 says
otherwise, the mock accepts 03_00 on every generation; docs/nv.md says so.

`QMD.build(...)` returns the bytes; `field(data, name)` reads one field back (the mock's decoder).
"""
from __future__ import annotations

import dataclasses

from autogen.nv import qmd as qmd_layout
from hal.errors import InvalidArgument

QMD_SIZE = 256  # clc6c0qmd.h: the QMD's highest field ends at bit 2047
QMD_ALIGNMENT = 256  # clc6c0.h NVC6C0_SEND_PCAS_A_QMD_ADDRESS_SHIFTED8: the address >> 8
VERSION_MAJOR = 3
VERSION_MINOR = 0

# the fields used, from the generated tables (autogen.nv.qmd: FIELDS and, for the per-bank fields,
# INDEXED at bank 0); name -> (high bit, low bit)
_PREFIX = "NVC6C0_QMDV03_00_"
_SCALAR = ("SM_GLOBAL_CACHING_ENABLE", "INVALIDATE_TEXTURE_HEADER_CACHE",
           "INVALIDATE_TEXTURE_SAMPLER_CACHE", "INVALIDATE_TEXTURE_DATA_CACHE",
           "INVALIDATE_SHADER_DATA_CACHE", "INVALIDATE_INSTRUCTION_CACHE",
           "INVALIDATE_SHADER_CONSTANT_CACHE", "CWD_MEMBAR_TYPE", "API_VISIBLE_CALL_LIMIT", "SAMPLER_INDEX",
           "CTA_RASTER_WIDTH", "CTA_RASTER_HEIGHT", "CTA_RASTER_DEPTH", "SHARED_MEMORY_SIZE",
           "MIN_SM_CONFIG_SHARED_MEM_SIZE", "MAX_SM_CONFIG_SHARED_MEM_SIZE", "QMD_VERSION",
           "QMD_MAJOR_VERSION", "CTA_THREAD_DIMENSION0", "CTA_THREAD_DIMENSION1", "CTA_THREAD_DIMENSION2",
           "REGISTER_COUNT_V", "TARGET_SM_CONFIG_SHARED_MEM_SIZE", "SHADER_LOCAL_MEMORY_LOW_SIZE",
           "BARRIER_COUNT", "PROGRAM_ADDRESS_LOWER", "PROGRAM_ADDRESS_UPPER",
           "SHADER_LOCAL_MEMORY_HIGH_SIZE")
_BANK0 = {"CONSTANT_BUFFER_VALID0": "CONSTANT_BUFFER_VALID",
          "CONSTANT_BUFFER_ADDR_LOWER0": "CONSTANT_BUFFER_ADDR_LOWER",
          "CONSTANT_BUFFER_ADDR_UPPER0": "CONSTANT_BUFFER_ADDR_UPPER",
          "CONSTANT_BUFFER_SIZE_SHIFTED4_0": "CONSTANT_BUFFER_SIZE_SHIFTED4"}
FIELDS: dict[str, tuple[int, int]] = {name: qmd_layout.FIELDS[_PREFIX + name] for name in _SCALAR}
FIELDS.update({short: qmd_layout.INDEXED[_PREFIX + name][:2] for short, name in _BANK0.items()})
CWD_MEMBAR_TYPE_L1_SYSMEMBAR = qmd_layout.NVC6C0_QMDV03_00_CWD_MEMBAR_TYPE_L1_SYSMEMBAR
API_VISIBLE_CALL_LIMIT_NO_CHECK = qmd_layout.NVC6C0_QMDV03_00_API_VISIBLE_CALL_LIMIT_NO_CHECK
SAMPLER_INDEX_VIA_HEADER_INDEX = qmd_layout.NVC6C0_QMDV03_00_SAMPLER_INDEX_VIA_HEADER_INDEX
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
    first = low // 8  # only the bytes the field spans are read and written
    last = high // 8 + 1
    shift = low - 8 * first
    span = int.from_bytes(data[first:last], "little")
    span &= ~(((1 << width) - 1) << shift)
    span |= value << shift
    data[first:last] = span.to_bytes(last - first, "little")


def with_constant0(template: bytes, address: int) -> bytes:
    """`template` (a built QMD) with constant bank 0 at `address` instead."""
    data = bytearray(template)
    _put(data, "CONSTANT_BUFFER_ADDR_LOWER0", address & 0xFFFFFFFF)
    _put(data, "CONSTANT_BUFFER_ADDR_UPPER0", address >> 32)
    return bytes(data)


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
