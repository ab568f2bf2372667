"""QMD (queue meta data): the launch descriptor a compute class reads for one grid, per generation.

Two layouts, each as the bit ranges of the fields this driver sets or the mock checks:
- QMD 03_00 (`V03_00`, 256 bytes) for Ampere and Ada, from autogen.nv.qmd (Mesa 25.0.7's
  src/nouveau/headers/nvidia/classes/clc6c0qmd.h, NVC6C0_QMDV03_00_* for AMPERE_COMPUTE_A, and
  clc7c0qmd.h, NVC7C0_QMDV03_00_*, the same layout for AMPERE_COMPUTE_B/ADA_COMPUTE_A);
- QMD 04_00 (`V04_00`, 384 bytes) for Hopper (HOPPER_COMPUTE_A), from autogen.nv.qmd_v04 (NVIDIA's
  classes/compute/clcbc0qmd.h, NVCBC0_QMDV04_00_*, at a pinned NVIDIA/open-gpu-doc commit).
`layout_for(compute_class)` picks one. Fields are named by their 03_00 names (`FIELD_NAMES`); a
layout maps each to its own header name (04_00 calls the grid GRID_WIDTH.., the minor version
QMD_MINOR_VERSION, the register count REGISTER_COUNT, and holds constant bank addresses >> 6).

Local memory: a kernel's stack (EIATTR_MIN_STACK_SIZE) plus a reserved area goes in
SHADER_LOCAL_MEMORY_HIGH_SIZE (`local_bytes_per_thread`), and constant bank 0 carries the stack top
at 0x28 (`STACK_TOP`), as nvcc's SASS expects (see the constants below; 04_00 keeps both local sizes
unshifted, clcbc0qmd.h).

`QMD(...).build()` returns the bytes; `field(data, name, layout)` reads one field back and
`constant0_address(data, layout)` the bank 0 address (tests decode with them).
"""
from __future__ import annotations

import dataclasses

from autogen.nv import qmd as qmd_layout
from autogen.nv import qmd_v04 as qmd_v04_layout
from autogen.nv.r535 import classes as cl
from hal.errors import InvalidArgument

# shared memory reserved for system use in every block on compute capability 8.x and 9.0: 1 KB (CUDA C++
# Programming Guide, "Technical Specifications per Compute Capability",
# cudaDevAttrReservedSharedMemoryPerBlock); tinygrad's ops_nv.py adds 0x400 to every nvcc kernel's
# .nv.shared size. The SM's carve-out holds it beside the kernel's (228 KB per SM, 227 KB per block on 9.0)
SHARED_RESERVE = 1024
QMD_ALIGNMENT = 256  # clc6c0.h NVC6C0_SEND_PCAS_A_QMD_ADDRESS_SHIFTED8: the address >> 8

# the fields used, by their 03_00 names; the per-bank fields are bank 0 of INDEXED
_SCALAR = ("SM_GLOBAL_CACHING_ENABLE", "INVALIDATE_TEXTURE_HEADER_CACHE",
           "INVALIDATE_TEXTURE_SAMPLER_CACHE", "INVALIDATE_TEXTURE_DATA_CACHE",
           "INVALIDATE_SHADER_DATA_CACHE", "INVALIDATE_INSTRUCTION_CACHE",
           "INVALIDATE_SHADER_CONSTANT_CACHE", "CWD_MEMBAR_TYPE", "API_VISIBLE_CALL_LIMIT", "SAMPLER_INDEX",
           "CTA_RASTER_WIDTH", "CTA_RASTER_HEIGHT", "CTA_RASTER_DEPTH", "SHARED_MEMORY_SIZE",
           "MIN_SM_CONFIG_SHARED_MEM_SIZE", "MAX_SM_CONFIG_SHARED_MEM_SIZE", "QMD_VERSION",
           "QMD_MAJOR_VERSION", "CTA_THREAD_DIMENSION0", "CTA_THREAD_DIMENSION1", "CTA_THREAD_DIMENSION2",
           "REGISTER_COUNT_V", "TARGET_SM_CONFIG_SHARED_MEM_SIZE", "SHADER_LOCAL_MEMORY_LOW_SIZE",
           "BARRIER_COUNT", "PROGRAM_ADDRESS_LOWER", "PROGRAM_ADDRESS_UPPER",
           "SHADER_LOCAL_MEMORY_HIGH_SIZE", "SASS_VERSION", "QMD_GROUP_ID")
_BANK0 = {"CONSTANT_BUFFER_VALID0": "CONSTANT_BUFFER_VALID",
          "CONSTANT_BUFFER_INVALIDATE0": "CONSTANT_BUFFER_INVALIDATE",
          "CONSTANT_BUFFER_ADDR_LOWER0": "CONSTANT_BUFFER_ADDR_LOWER",
          "CONSTANT_BUFFER_ADDR_UPPER0": "CONSTANT_BUFFER_ADDR_UPPER",
          "CONSTANT_BUFFER_SIZE_SHIFTED4_0": "CONSTANT_BUFFER_SIZE_SHIFTED4"}
FIELD_NAMES = _SCALAR + tuple(_BANK0)
# clcbc0qmd.h renames these in 04_00 (SM_GLOBAL_CACHING_ENABLE is gone: None)
_V04_NAMES = {"CTA_RASTER_WIDTH": "GRID_WIDTH", "CTA_RASTER_HEIGHT": "GRID_HEIGHT",
              "CTA_RASTER_DEPTH": "GRID_DEPTH", "QMD_VERSION": "QMD_MINOR_VERSION",
              "REGISTER_COUNT_V": "REGISTER_COUNT", "SM_GLOBAL_CACHING_ENABLE": None}
_V04_BANK0 = {"CONSTANT_BUFFER_ADDR_LOWER0": "CONSTANT_BUFFER_ADDR_LOWER_SHIFTED6",
              "CONSTANT_BUFFER_ADDR_UPPER0": "CONSTANT_BUFFER_ADDR_UPPER_SHIFTED6"}


@dataclasses.dataclass(frozen=True)
class Layout:
    """One QMD version: its size, version numbers, field bit ranges and the values written."""

    name: str
    major: int
    minor: int
    size: int
    fields: dict  # 03_00 field name -> (high bit, low bit); absent when the version has no such field
    constant_shift: int  # constant bank addresses are stored >> this
    membar_l1_sysmembar: int
    call_limit_no_check: int
    sampler_via_header: int
    header: str  # where the layout comes from

    def bits(self, name: str) -> tuple[int, int]:
        try:
            return self.fields[name]
        except KeyError:
            raise InvalidArgument(f"QMD {self.name} has no field {name}") from None


def _v03_00() -> Layout:
    prefix = "NVC6C0_QMDV03_00_"
    fields = {name: qmd_layout.FIELDS[prefix + name] for name in _SCALAR}
    fields.update({short: qmd_layout.INDEXED[prefix + name][:2] for short, name in _BANK0.items()})
    return Layout("03_00", 3, 0, 256, fields, 0,  # clc6c0qmd.h: the highest field ends at bit 2047
                  qmd_layout.NVC6C0_QMDV03_00_CWD_MEMBAR_TYPE_L1_SYSMEMBAR,
                  qmd_layout.NVC6C0_QMDV03_00_API_VISIBLE_CALL_LIMIT_NO_CHECK,
                  qmd_layout.NVC6C0_QMDV03_00_SAMPLER_INDEX_VIA_HEADER_INDEX, "clc6c0qmd.h QMDV03_00")


def _v04_00() -> Layout:
    prefix = "NVCBC0_QMDV04_00_"
    fields = {}
    for name in _SCALAR:
        renamed = _V04_NAMES.get(name, name)
        if renamed is not None:
            fields[name] = qmd_v04_layout.FIELDS[prefix + renamed]
    for short, name in _BANK0.items():
        fields[short] = qmd_v04_layout.INDEXED[prefix + _V04_BANK0.get(short, name)][:2]
    # clcbc0qmd.h: the highest 04_00 field (a reserved one) ends at bit 3071
    size = (max(high for high, _ in qmd_v04_layout.FIELDS.values()) + 1) // 8
    return Layout("04_00", 4, 0, size, fields, 6,  # CONSTANT_BUFFER_ADDR_*_SHIFTED6
                  qmd_v04_layout.NVCBC0_QMDV04_00_CWD_MEMBAR_TYPE_L1_SYSMEMBAR,
                  qmd_v04_layout.NVCBC0_QMDV04_00_API_VISIBLE_CALL_LIMIT_NO_CHECK,
                  qmd_v04_layout.NVCBC0_QMDV04_00_SAMPLER_INDEX_VIA_HEADER_INDEX, "clcbc0qmd.h QMDV04_00")


V03_00 = _v03_00()
V04_00 = _v04_00()
# which QMD each compute class reads: the newest version its class header defines (clc6c0qmd.h and
# clc7c0qmd.h: 03_00; clcbc0qmd.h, HOPPER_COMPUTE_A's: 04_00, beside an older 03_00)
_BY_CLASS = {cl.AMPERE_COMPUTE_A: V03_00, cl.AMPERE_COMPUTE_B: V03_00, cl.ADA_COMPUTE_A: V03_00,
             cl.HOPPER_COMPUTE_A: V04_00}
QMD_SIZE = V03_00.size
MAX_QMD_SIZE = max(layout.size for layout in _BY_CLASS.values())
VERSION_MAJOR = V03_00.major
VERSION_MINOR = V03_00.minor
FIELDS: dict[str, tuple[int, int]] = V03_00.fields  # the 03_00 table (tests and tools read it)
CONSTANT_BUFFER_MAX = 1 << 16  # CONSTANT_BUFFER_SIZE_SHIFTED4 is 13 bits of 16-byte units: 64 KiB
# the SM shared-memory carve-out fields count 4 KiB steps plus one (tinygrad's ops_nv.py
# smem_config: KiB // 4 + 1), from the configurations Ampere..Hopper offer
SM_CONFIG_STEP = 4096
QMD_GROUP = 0x3F  # QMD_GROUP_ID on 03_00 as tinygrad's ops_nv.py sets it (see QMD.build)
SM_CONFIG_KIB = (8, 16, 32, 64, 100, 132, 164, 196, 228)

# Local memory as nvcc's SASS uses it. Each thread has a 16 MiB local address range; the stack sits
# at its top: every sm_70+ kernel starts by loading its stack pointer (R1) from constant bank 0 at
# 0x28 (`MOV R1, c[0x0][0x28]` or an equivalent load is the first instruction of each kernel in
# compute/nv/kernels/prebuilt), and the stack grows down from there. The QMD's
# SHADER_LOCAL_MEMORY_HIGH_SIZE is how much of the top of the range is backed per thread.
# No NVIDIA header we have gives the stack top or the area above it: both are the values CUDA's own
# launches write, as tinygrad's ops_nv.py (NVProgram, the nvcc path) reproduces them: bank 0 dwords
# 10-11 = 0xfffdc0 (16 MiB - 0x240) and, per thread, EIATTR_MIN_STACK_SIZE + 0x240 bytes rounded up
# to 32 (_ensure_has_local_memory: round_up(required, 32)).
STACK_TOP = 0xFFFDC0
STACK_POINTER_OFFSET = 0x28  # constant bank 0 byte offset of the 64-bit stack top
LOCAL_RESERVE = 0x240  # bytes above the stack top each thread keeps
LOCAL_GRANULE = 32


def local_bytes_per_thread(min_stack_size: int) -> int:
    """Local memory per thread for a kernel whose cubin gives EIATTR_MIN_STACK_SIZE `min_stack_size`
    (0 when absent): its stack plus the reserved area, 32-byte granular."""
    return -(-(min_stack_size + LOCAL_RESERVE) // LOCAL_GRANULE) * LOCAL_GRANULE


def layout_for(compute_class: int) -> Layout:
    """The QMD layout `compute_class` reads."""
    layout = _BY_CLASS.get(compute_class)
    if layout is None:
        raise InvalidArgument(f"compute class {compute_class:#x} has no QMD layout here "
                              f"(known: {', '.join(hex(c) for c in _BY_CLASS)})")
    return layout


def sm_config(shared_bytes: int, limit_kib: int) -> tuple[int, int]:
    """(MIN/TARGET, MAX) carve-out encodings for a kernel that needs `shared_bytes` per CTA."""
    usable = [kib for kib in SM_CONFIG_KIB if kib <= limit_kib]
    needed = next((kib for kib in usable if kib * 1024 >= shared_bytes), None)
    if needed is None:
        raise InvalidArgument(f"{shared_bytes} bytes of shared memory per CTA exceed the largest "
                              f"carve-out of {usable[-1]} KiB")
    return needed * 1024 // SM_CONFIG_STEP + 1, usable[-1] * 1024 // SM_CONFIG_STEP + 1


def _put(data: bytearray, name: str, value: int, layout: Layout = V03_00) -> None:
    high, low = layout.bits(name)
    width = high - low + 1
    if not 0 <= value < 1 << width:
        raise InvalidArgument(f"QMD {layout.name} field {name}: {value:#x} does not fit {width} bits")
    first = low // 8  # only the bytes the field spans are read and written
    last = high // 8 + 1
    shift = low - 8 * first
    span = int.from_bytes(data[first:last], "little")
    span &= ~(((1 << width) - 1) << shift)
    span |= value << shift
    data[first:last] = span.to_bytes(last - first, "little")


def _put_constant0(data: bytearray, address: int, layout: Layout) -> None:
    stored = address >> layout.constant_shift
    _put(data, "CONSTANT_BUFFER_ADDR_LOWER0", stored & 0xFFFFFFFF, layout)
    _put(data, "CONSTANT_BUFFER_ADDR_UPPER0", stored >> 32, layout)


def with_constant0(template: bytes, address: int, layout: Layout = V03_00) -> bytes:
    """`template` (a QMD built in `layout`) with constant bank 0 at `address` instead."""
    data = bytearray(template)
    _put_constant0(data, address, layout)
    return bytes(data)


def field(data: bytes, name: str, layout: Layout = V03_00) -> int:
    """The value of QMD field `name` (its 03_00 name) in a QMD of `layout`."""
    high, low = layout.bits(name)
    return (int.from_bytes(data[:layout.size], "little") >> low) & ((1 << (high - low + 1)) - 1)


def constant0_address(data: bytes, layout: Layout = V03_00) -> int:
    """Constant bank 0's address in a QMD of `layout` (04_00 stores it >> 6)."""
    stored = (field(data, "CONSTANT_BUFFER_ADDR_LOWER0", layout)
              | field(data, "CONSTANT_BUFFER_ADDR_UPPER0", layout) << 32)
    return stored << layout.constant_shift


@dataclasses.dataclass
class QMD:
    """What one launch needs; `build()` lays it out in `layout` (`layout_for(compute_class)`)."""

    program_address: int
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    constant0_address: int
    constant0_size: int
    registers: int
    shared_bytes: int
    local_bytes_per_thread: int  # SHADER_LOCAL_MEMORY_HIGH_SIZE: local_bytes_per_thread(min stack)
    shared_limit_kib: int
    barriers: int = 1
    layout: Layout = V03_00
    sm_version: int = 0  # the SM the code is for (80, 86, 89, 90): SASS_VERSION; 0 leaves it unset

    def build(self) -> bytes:
        layout = self.layout
        data = bytearray(layout.size)

        def put(name: str, value: int) -> None:
            _put(data, name, value, layout)

        put("QMD_MAJOR_VERSION", layout.major)
        put("QMD_VERSION", layout.minor)
        if "SM_GLOBAL_CACHING_ENABLE" in layout.fields:  # 03_00 only
            put("SM_GLOBAL_CACHING_ENABLE", 1)
        # every cache the kernel may read stale is invalidated before it starts
        for name in ("INVALIDATE_TEXTURE_HEADER_CACHE", "INVALIDATE_TEXTURE_SAMPLER_CACHE",
                     "INVALIDATE_TEXTURE_DATA_CACHE", "INVALIDATE_SHADER_DATA_CACHE",
                     "INVALIDATE_INSTRUCTION_CACHE", "INVALIDATE_SHADER_CONSTANT_CACHE"):
            put(name, 1)
        put("CWD_MEMBAR_TYPE", layout.membar_l1_sysmembar)
        put("API_VISIBLE_CALL_LIMIT", layout.call_limit_no_check)
        put("SAMPLER_INDEX", layout.sampler_via_header)
        for name, value in zip(("CTA_RASTER_WIDTH", "CTA_RASTER_HEIGHT", "CTA_RASTER_DEPTH"), self.grid):
            put(name, value)
        for index, value in enumerate(self.block):
            put(f"CTA_THREAD_DIMENSION{index}", value)
        # the shared memory size is in bytes, 256-byte granular (as tinygrad's ops_nv.py rounds it),
        # with the block's system reserve on top of the kernel's own
        shared = -(-(self.shared_bytes + SHARED_RESERVE) // 256) * 256
        put("SHARED_MEMORY_SIZE", shared)
        target, maximum = sm_config(shared, self.shared_limit_kib)
        put("MIN_SM_CONFIG_SHARED_MEM_SIZE", target)
        put("TARGET_SM_CONFIG_SHARED_MEM_SIZE", target)
        put("MAX_SM_CONFIG_SHARED_MEM_SIZE", maximum)
        put("REGISTER_COUNT_V", self.registers)
        put("BARRIER_COUNT", self.barriers)
        # the stack is at the top of each thread's local range (STACK_TOP): the high region backs
        # it; nothing is placed at the bottom (tinygrad's ops_nv.py nvcc path does the same)
        put("SHADER_LOCAL_MEMORY_LOW_SIZE", 0)
        high = -(-self.local_bytes_per_thread // LOCAL_GRANULE) * LOCAL_GRANULE
        put("SHADER_LOCAL_MEMORY_HIGH_SIZE", high)
        if self.constant0_address % 256 or self.constant0_size % 16:
            raise InvalidArgument(f"constant bank 0 at {self.constant0_address:#x} "
                                  f"(+{self.constant0_size:#x}): 256-byte aligned, 16-byte granular")
        put("CONSTANT_BUFFER_VALID0", 1)
        # Three fields the class headers name without saying what they do. Bank 0's contents change
        # between launches at addresses the kernarg ring reuses, so the bank is invalidated (as
        # tinygrad's ops_nv.py does). On 03_00, the QMD group 0x3f and SASS_VERSION, the SM's major and
        # minor digits as two nibbles (0x86 for sm_86), as tinygrad's QMD for nvcc code sets them on
        # Ampere and Ada; on Hopper's 04_00 both stay 0, as Mesa's NAK (src/nouveau/compiler/nak/qmd.rs
        # Qmd4_0, the one peer that fills a 04_00 QMD) leaves them.
        put("CONSTANT_BUFFER_INVALIDATE0", 1)
        if layout.major == V03_00.major:
            put("QMD_GROUP_ID", QMD_GROUP)
            if self.sm_version:
                put("SASS_VERSION", (self.sm_version // 10) << 4 | self.sm_version % 10)
        _put_constant0(data, self.constant0_address, layout)
        put("CONSTANT_BUFFER_SIZE_SHIFTED4_0", self.constant0_size >> 4)
        put("PROGRAM_ADDRESS_LOWER", self.program_address & 0xFFFFFFFF)
        put("PROGRAM_ADDRESS_UPPER", self.program_address >> 32)
        return bytes(data)
