"""NVIDIA programs: a kernel's SASS from a fatbinary (or cubin) in VRAM, and the QMD launches of it.

`NVProgram` picks the cubin for the GPU's SM version (drivers.nv.fatbin: the exact one, else the
highest of the same major version below it, which the hardware runs: sm_80 SASS on sm_86), parses
it (drivers.nv.cubin) and uploads the kernel's code (`.text.<name>`) to VRAM at a 256-byte aligned
address. What the launch needs comes from the cubin: the parameter block's offset in constant bank
0 (EIATTR_PARAM_CBANK) and its layout (EIATTR_KPARAM_INFO), the bank's size (.nv.constant0),
registers (EIATTR_REGCOUNT), shared memory (.nv.shared), the stack (EIATTR_MIN_STACK_SIZE, which
holds the local frame, EIATTR_FRAME_SIZE) and the thread limits (EIATTR_MAX_THREADS, EIATTR_REQNTID).
Every kernel gets local memory for its stack plus a reserved area (drivers.nv.qmd
local_bytes_per_thread): the device's buffer grows to it at load (ensure_local_memory) and the QMD's
SHADER_LOCAL_MEMORY_HIGH_SIZE carries it.

`prepare(queue, args, global_size, local_size)` places, in the device's kernarg arena, constant
bank 0 (the driver's words at its start, then the packed parameters at the cubin's offset) and the
QMD (drivers.nv.qmd) pointing at it; the compute queue records SEND_PCAS_A with the QMD's address.
Constant bank 0's first words are what the SASS reads for the launch shape and memory windows
(tinygrad's ops_nv.py fills the same slots): dwords 0-2 the block size, 3-5 the grid size, 6-7 the
shared memory window, 8-9 the local memory window, 10-11 the stack top (drivers.nv.qmd STACK_TOP),
which every nvcc kernel loads into its stack pointer first.

On a mock machine the program's fatbinary is also handed to the machine's `register_program`, so
the mock GPU can find the PTX of the SASS it is asked to run (docs/nv.md, mock execution).
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Sequence

from compute.buffer import Buffer
from drivers.nv import cubin as cubin_format
from drivers.nv import fatbin as fatbin_format
from drivers.nv.qmd import (MAX_QMD_SIZE, QMD, QMD_ALIGNMENT, STACK_POINTER_OFFSET, STACK_TOP,
                            layout_for, local_bytes_per_thread, with_constant0)
from hal.errors import BadBinary, InvalidArgument

if TYPE_CHECKING:
    from compute.device import Device

CODE_ALIGNMENT = 256  # this layer's choice; the QMD's program address must be 128-byte aligned
# mapped room past the last instruction for the instruction prefetcher: Mesa's NVK over-allocates
# shader memory by 2 KiB ("NVIDIA has informed us overallocating shaders BOs by 2K is sufficient",
# src/nouveau/vulkan/nvk_device.c nvk_CreateDevice) and tinygrad's ops_nv.py NVProgram by 4 KiB "to
# mitigate prefetch memory faults"; the larger of the two
CODE_PADDING = 0x1000
CONSTANT0_ALIGNMENT = 256  # clc6c0qmd.h CONSTANT_BUFFER_ADDR_LOWER: 256-byte aligned banks
# clc6c0.h / CUDA limits (docs: "Technical Specifications per Compute Capability")
MAX_THREADS_PER_BLOCK = 1024
MAX_GRID = ((1 << 31) - 1, 65535, 65535)
FATBIN_MAGIC = b"\x50\xed\x55\xba"  # drivers/nv/fatbin.py MAGIC 0xBA55ED50, little-endian
ELF_MAGIC = b"\x7fELF"


def select_cubin(binary: bytes, sm: int) -> tuple[bytes, str | None]:
    """(cubin, PTX or None) for SM version `sm` from a fatbinary or a bare cubin."""
    if binary[:4] == ELF_MAGIC:
        return binary, None
    if binary[:4] != FATBIN_MAGIC:
        raise BadBinary("not a fatbinary or cubin (neither 0xBA55ED50 nor an ELF header)")
    fat = fatbin_format.parse(binary)
    usable = [arch for arch in fat.sass_archs if arch // 10 == sm // 10 and arch <= sm]
    if not usable:
        raise BadBinary(f"no SASS runs on sm_{sm}: the fatbinary has cubins for {fat.sass_archs} "
                        f"(SASS runs on its own major version from its minor version up)")
    ptx = fat.ptx(sm) if fat.ptx_archs else None
    return fat.cubin(max(usable)), ptx


class NVLaunch:
    """One prepared launch: the QMD's GPU address (and what made it)."""

    __slots__ = ("program", "qmd_address", "groups", "local_size")

    def __init__(self, program: "NVProgram", qmd_address: int, groups, local_size) -> None:
        self.program = program
        self.qmd_address = qmd_address
        self.groups = groups
        self.local_size = local_size

    @property
    def name(self) -> str:
        return self.program.name


class _Param:
    """A parameter as compute.graph sees one: its offset in the kernarg block. The cubin gives no
    types (EIATTR_KPARAM_INFO: ordinal, offset, size), so the value's Python type decides the
    packing (a Buffer or int as an integer of `size` bytes, a float as f32/f64)."""

    __slots__ = ("name", "offset", "size", "value_kind", "type_name")

    def __init__(self, name: str, offset: int, size: int) -> None:
        self.name = name
        self.offset = offset
        self.size = size
        self.value_kind = "param"
        self.type_name = f"{size}-byte"


class NVProgram:
    """One kernel of a fatbinary, its code in VRAM (see the module docstring)."""

    def __init__(self, device: "Device", binary: bytes, name: str) -> None:
        backend = device.backend
        self.device = device
        self.name = name
        cubin_bytes, ptx = select_cubin(binary, backend.sm)
        self.kernel = cubin_format.parse(cubin_bytes)[name]
        kernel = self.kernel
        self.params = [_Param(f"param{p.ordinal}", p.offset, p.size)
                       for p in sorted(kernel.params, key=lambda p: p.ordinal)]
        self.constant0_size = max(kernel.constant0_size, kernel.param_bank_offset + kernel.param_size,
                                  STACK_POINTER_OFFSET + 8)
        self.constant0_size = -(-self.constant0_size // 16) * 16
        register = getattr(backend.machine, "register_program", None)
        if register is not None:
            register(binary, name, backend.sm)
        self.image = device.allocate(len(kernel.code) + CODE_PADDING + CODE_ALIGNMENT)
        offset = -self.image.gpu_address % CODE_ALIGNMENT
        self.code_address = self.image.gpu_address + offset
        self.image.copyin(kernel.code, offset)
        self.local_bytes_per_thread = local_bytes_per_thread(kernel.min_stack_size)
        backend.ensure_local_memory(self.local_bytes_per_thread)
        self.ptx = ptx
        # (global size, local size) -> (grid, QMD with bank 0 at 0, constant bank 0 without parameters)
        self._shapes: dict[tuple, tuple] = {}
        # the QMD version the compute class reads (03_00 Ampere/Ada, 04_00 Hopper)
        self._qmd_layout = layout_for(device.backend.nv.generation.compute_class)

    # -- arguments ---------------------------------------------------------------------------------
    def explicit_args(self) -> list[_Param]:
        return self.params

    def pack_arg(self, arg: _Param, value) -> bytes:
        if isinstance(value, Buffer):
            value = value.argument_address(f"kernel {self.name!r} {arg.name}")
        if isinstance(value, float):
            if arg.size == 4:
                return struct.pack("<f", value)
            if arg.size == 8:
                return struct.pack("<d", value)
        if isinstance(value, int):
            if not -(1 << (8 * arg.size - 1)) <= value < 1 << (8 * arg.size):
                raise InvalidArgument(f"kernel {self.name!r} {arg.name}: {value} does not fit "
                                      f"{arg.size} bytes")
            return (value % (1 << (8 * arg.size))).to_bytes(arg.size, "little")
        raise InvalidArgument(f"kernel {self.name!r} {arg.name} ({arg.size} bytes) takes a Buffer, an int "
                              f"or a float, not {value!r}")

    def pack_kernargs(self, args: Sequence) -> bytes:
        if len(args) != len(self.params):
            raise InvalidArgument(f"kernel {self.name!r} takes {len(self.params)} arguments, "
                                  f"not {len(args)}")
        block = bytearray(self.kernel.param_size)
        for arg, value in zip(self.params, args):
            block[arg.offset:arg.offset + arg.size] = self.pack_arg(arg, value)
        return bytes(block)

    # -- launches ----------------------------------------------------------------------------------
    def layout(self, global_size, local_size) -> tuple[int, int, int]:
        """The grid (blocks per dimension) of a launch, checked against the kernel's limits; a shape
        seen before is answered from `_shapes` (the launch's Python cost)."""
        key = (tuple(global_size), tuple(local_size))
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._shapes[key] = self._check_layout(*key)
        return shape[0]

    def _check_layout(self, global_size, local_size) -> tuple:
        """(grid, QMD template with bank 0 at 0, constant bank 0 without the parameters)."""
        threads = local_size[0] * local_size[1] * local_size[2]
        kernel = self.kernel
        limit = MAX_THREADS_PER_BLOCK
        if kernel.max_threads is not None:
            limit = min(limit, kernel.max_threads[0] * kernel.max_threads[1] * kernel.max_threads[2])
        if threads > limit:
            raise InvalidArgument(f"kernel {self.name!r}: a block of {local_size} is more than "
                                  f"{limit} threads")
        if kernel.required_threads is not None and tuple(kernel.required_threads) != tuple(local_size):
            raise InvalidArgument(f"kernel {self.name!r} requires local_size {kernel.required_threads}")
        groups = tuple(-(-g // l) for g, l in zip(global_size, local_size))
        for count, most in zip(groups, MAX_GRID):
            if count > most:
                raise InvalidArgument(f"kernel {self.name!r}: {groups} blocks is too many")
        backend = self.device.backend
        template = QMD(program_address=self.code_address, grid=groups, block=tuple(local_size),
                       constant0_address=0, constant0_size=self.constant0_size,
                       registers=max(kernel.registers, 1), shared_bytes=kernel.shared_size,
                       local_bytes_per_thread=self.local_bytes_per_thread,
                       shared_limit_kib=backend.shared_limit_kib, layout=self._qmd_layout,
                       sm_version=backend.sm).build()
        # constant bank 0: block size (dwords 0-2), grid size (3-5), the shared and local windows (6-9),
        # the stack top (10-11)
        bank = bytearray(self.constant0_size)
        struct.pack_into("<6I", bank, 0, *local_size, *groups)
        struct.pack_into("<QQ", bank, 24, backend.shared_window, backend.local_window)
        struct.pack_into("<Q", bank, STACK_POINTER_OFFSET, STACK_TOP)
        return groups, template, bytes(bank)

    def constant0(self, kernargs: bytes, global_size, local_size) -> bytes:
        """Constant bank 0 of one launch: the shape's bank with the parameters at the cubin's offset."""
        self.layout(global_size, local_size)
        bank = bytearray(self._shapes[(tuple(global_size), tuple(local_size))][2])
        offset = self.kernel.param_bank_offset
        bank[offset:offset + len(kernargs)] = kernargs
        return bytes(bank)

    def qmd(self, constant0_address: int, global_size, local_size) -> bytes:
        """The QMD of one launch: built once per grid and block shape, then only constant bank 0's
        address changes (the launch's Python cost)."""
        self.layout(global_size, local_size)
        template = self._shapes[(tuple(global_size), tuple(local_size))][1]
        return with_constant0(template, constant0_address, self._qmd_layout)

    def dispatch_packet(self, global_size, local_size, kernarg_address: int) -> bytes:
        """Room for what `prepare_in` places besides the parameters (compute.graph sizes its memory
        with this): constant bank 0 and the QMD, with their alignment."""
        return bytes(self.constant0_size + CONSTANT0_ALIGNMENT + QMD_ALIGNMENT + MAX_QMD_SIZE)

    def prepare(self, queue, args: Sequence, global_size, local_size) -> NVLaunch:
        arena = self.device.kernargs

        def place(data: bytes, alignment: int) -> int:
            offset, address = arena.alloc(len(data), alignment, queue)
            arena.write(offset, data)
            return address

        return self.prepare_in(place, self.pack_kernargs(args), global_size, local_size)[0]

    def prepare_in(self, place, kernargs: bytes, global_size, local_size) -> tuple[NVLaunch, int]:
        """A launch whose constant bank 0 and QMD `place(data, alignment) -> GPU address` puts in
        memory; returns it and the parameter block's GPU address (compute.graph patches there)."""
        key = (tuple(global_size), tuple(local_size))
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._shapes[key] = self._check_layout(*key)
        groups, _, bank_template = shape
        offset = self.kernel.param_bank_offset
        bank_data = bytearray(bank_template)
        bank_data[offset:offset + len(kernargs)] = kernargs
        bank = place(bank_data, CONSTANT0_ALIGNMENT)
        qmd = place(self.qmd(bank, *key), QMD_ALIGNMENT)
        return NVLaunch(self, qmd, groups, key[1]), bank + offset

    def free(self) -> None:
        self.image.free()
