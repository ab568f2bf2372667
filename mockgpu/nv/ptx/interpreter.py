"""The PTX interpreter: runs one `.entry` of a PTX module over a grid, numpy-vectorised per CTA.

`Kernel.from_ptx(text, name)` parses the module and compiles each instruction of the entry into a
Python closure (an unsupported instruction is UnsupportedInstruction naming it and its line, at
this point, before anything runs). `kernel.run(grid, block, params, memory, shared_bytes)` runs
the CTAs one after another; all threads of a CTA are the lanes of numpy arrays.

Execution model (PTX ISA 3 "PTX Machine Model" and 9.7.13 "Control Flow Instructions"):
- each thread has its own program counter; a step executes the instruction at the lowest program
  counter among the CTA's live threads for every thread there (so threads that diverged at a
  branch reconverge where their paths meet: structured code needs no reconvergence stack);
- a guard `@%p` / `@!%p` masks the threads it is false for; they go on to the next instruction;
- `bar.sync` (9.7.13.4) waits for every thread of the CTA that has not exited; a barrier reached by
  only some of the live threads (the others already past it) is BarrierDivergence;
- `ret`/`exit` end a thread; the CTA ends when all its threads have;
- the number of steps per CTA is bounded (`max_steps`): a kernel that never ends is DeviceTimeout.

Memory (PTX ISA 5.1 "State Spaces"): `.param` is the parameter block passed to run (layout from the
.entry's parameter list: each parameter at the next multiple of its alignment, as the cubin's
EIATTR_KPARAM_INFO also says); `.global` goes through `memory.read(address, size) -> bytes` and
`memory.write(address, data)` in runs of contiguous lanes; `.shared` is a zeroed byte array per
CTA (static variables in declaration order, then the dynamic `shared_bytes`); `.local` is a zeroed
byte array per thread. Generic addresses map the shared and local windows at SHARED_WINDOW and
LOCAL_WINDOW (the mock's choice; real GPUs read theirs from constant bank 0), anything else is
global. Accesses must be naturally aligned (PTX ISA 6.4.2, "Addresses as Operands"); a misaligned
or out-of-range access is a MemoryFault naming the space, address and line.

Arithmetic follows PTX ISA 9.7.1-9.7.4: integers wrap, `mul.wide`/`mad.wide` widen, shifts clamp
their amount to the width, integer division and remainder truncate toward zero (division by zero
gives all ones, remainder by zero the dividend, as NVIDIA GPUs do). Floats are IEEE in numpy:
`.rn` is numpy's rounding, `fma`/`mad.f32` compute the product and sum in double precision and
round once to single (exact except for rare double-rounding cases), `.ftz` is ignored, `.approx`
functions return the correctly rounded value (inside the ISA's error bounds).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Protocol

import numpy as np

from hal.errors import DeviceTimeout, HalError, InvalidArgument, UnsupportedOperation
from mockgpu.nv.ptx import parser
from mockgpu.nv.ptx.parser import (Address, Immediate, Instruction, Negated, PredicatePair, Register,
                                   Symbol, Vector)

# Generic-address windows of the shared and local state spaces (the mock's own layout).
SHARED_WINDOW = 0x7E00_0000_0000
LOCAL_WINDOW = 0x7F00_0000_0000
WINDOW_SIZE = 0x0100_0000_0000
# PTX ISA 5.2.2 / CUDA: at most 1024 threads per CTA on sm_80..sm_90.
MAX_THREADS_PER_CTA = 1024
# A generous bound on executed steps per CTA (one step = one instruction for a group of threads).
DEFAULT_MAX_STEPS = 2_000_000

_DTYPES = {
    "pred": np.dtype(bool),
    "b8": np.dtype(np.uint8), "u8": np.dtype(np.uint8), "s8": np.dtype(np.int8),
    "b16": np.dtype(np.uint16), "u16": np.dtype(np.uint16), "s16": np.dtype(np.int16),
    "b32": np.dtype(np.uint32), "u32": np.dtype(np.uint32), "s32": np.dtype(np.int32),
    "b64": np.dtype(np.uint64), "u64": np.dtype(np.uint64), "s64": np.dtype(np.int64),
    "f16": np.dtype(np.float16), "f32": np.dtype(np.float32), "f64": np.dtype(np.float64),
}
_UNSIGNED = {1: np.dtype(np.uint8), 2: np.dtype(np.uint16), 4: np.dtype(np.uint32),
             8: np.dtype(np.uint64)}
_SIGNED = {1: np.dtype(np.int8), 2: np.dtype(np.int16), 4: np.dtype(np.int32), 8: np.dtype(np.int64)}
_FLOATS = ("f16", "f32", "f64")
_SPACES = ("param", "global", "shared", "local", "const", "generic")
# Modifiers that only steer caches, ordering or scope: no effect on a sequential model.
_IGNORED = {"ca", "cg", "cs", "lu", "cv", "wb", "wt", "nc", "volatile", "relaxed", "acquire",
            "release", "acq_rel", "sc", "weak", "cta", "gpu", "sys", "cluster", "uni", "aligned",
            "ftz", "approx", "full", "noftz"}
_SPECIALS = ("tid", "ntid", "ctaid", "nctaid")
# PTX ISA 10 "Special Registers" that the interpreter provides.
_SPECIAL_NAMES = frozenset([f"%{name}.{axis}" for name in _SPECIALS for axis in "xyz"]
                           + ["%laneid", "%warpid", "%nwarpid", "%smid", "%gridid"])


class MemoryFault(HalError):
    """A thread touched memory it may not: the space, address and PTX line are in the message."""


class BarrierDivergence(HalError):
    """bar.sync reached by only some of a CTA's live threads (undefined behaviour in PTX)."""


class UnsupportedInstruction(UnsupportedOperation):
    """An instruction the interpreter does not implement; the message names it and its line."""


class Memory(Protocol):
    """Global memory as the interpreter sees it (the mock GPU backs it with its simulated memory)."""

    def read(self, address: int, size: int) -> bytes: ...

    def write(self, address: int, data: bytes) -> None: ...


class FlatMemory:
    """A bytearray at a base address: global memory for tests and tools; out of range is MemoryFault."""

    def __init__(self, base: int, size: int) -> None:
        self.base = base
        self.data = bytearray(size)

    def read(self, address: int, size: int) -> bytes:
        start = self._offset(address, size)
        return bytes(self.data[start:start + size])

    def write(self, address: int, data: bytes) -> None:
        start = self._offset(address, len(data))
        self.data[start:start + len(data)] = data

    def _offset(self, address: int, size: int) -> int:
        start = address - self.base
        if start < 0 or start + size > len(self.data):
            raise MemoryFault(f"global access {address:#x}+{size:#x} outside the memory at "
                              f"{self.base:#x}+{len(self.data):#x}")
        return start


@dataclass(frozen=True)
class ParamSlot:
    name: str
    type: str
    offset: int
    size: int


class _CTA:
    """The state of one CTA while it runs: registers, program counters, shared and local memory."""

    def __init__(self, kernel: Kernel, block: tuple[int, int, int], grid: tuple[int, int, int],
                 ctaid: tuple[int, int, int], params: np.ndarray, memory: Memory,
                 shared_size: int) -> None:
        lanes = block[0] * block[1] * block[2]
        self.lanes = lanes
        self.kernel = kernel
        self.memory = memory
        self.params = params
        self.regs: dict[str, np.ndarray] = {}
        self.pc = np.zeros(lanes, dtype=np.int64)
        self.exited = np.zeros(lanes, dtype=bool)
        self.shared = np.zeros(shared_size, dtype=np.uint8)
        self.local_size = kernel.local_size
        self.local = np.zeros(lanes * kernel.local_size, dtype=np.uint8)
        self.lane_index = np.arange(lanes, dtype=np.uint64)
        linear = np.arange(lanes, dtype=np.uint32)
        tid = (linear % block[0], linear // block[0] % block[1], linear // (block[0] * block[1]))
        self.special: dict[str, np.ndarray] = {}
        for axis, name in enumerate("xyz"):
            self.special[f"%tid.{name}"] = tid[axis]
            self.special[f"%ntid.{name}"] = np.full(lanes, block[axis], dtype=np.uint32)
            self.special[f"%ctaid.{name}"] = np.full(lanes, ctaid[axis], dtype=np.uint32)
            self.special[f"%nctaid.{name}"] = np.full(lanes, grid[axis], dtype=np.uint32)
        # PTX ISA 10 "Special Registers": %laneid, %warpid (32 threads per warp).
        self.special["%laneid"] = linear % 32
        self.special["%warpid"] = linear // 32
        self.special["%nwarpid"] = np.full(lanes, (lanes + 31) // 32, dtype=np.uint32)
        self.special["%smid"] = np.zeros(lanes, dtype=np.uint32)
        self.special["%gridid"] = np.zeros(lanes, dtype=np.uint64)
        self.steps = 0

    def reg(self, name: str) -> np.ndarray:
        array = self.regs.get(name)
        if array is None:
            array = np.zeros(self.lanes, dtype=self.kernel.register_dtypes[name])
            self.regs[name] = array
        return array


Step = Callable[[_CTA, np.ndarray], None]


class Kernel:
    """One `.entry` of a PTX module, compiled for the interpreter."""

    def __init__(self, module: parser.Module, function: parser.Function) -> None:
        if function.kind != "entry":
            raise InvalidArgument(f"{function.name} is a .func, not a kernel entry (.entry)")
        self.name = function.name
        self.module = module
        self.function = function
        self.params = _param_layout(function.params)
        self.param_size = max((slot.offset + slot.size for slot in self.params), default=0)
        self.directives = dict(function.directives)
        self.shared_offsets, self.static_shared_size, self.dynamic_shared = _shared_layout(
            module.variables + function.variables)
        self.local_offsets, self.local_size = _local_layout(function.variables)
        self.variables = {v.name: v for v in module.variables + function.variables}
        self.register_dtypes = _RegisterTypes(function)
        self.steps: list[Step] = []
        self.instructions = function.instructions
        # Instructions executed in the last run, summed over the threads at them (a thread whose
        # guard predicate is false counts too).
        self.thread_instructions = 0
        for instruction in function.instructions:
            self.steps.append(_Compiler(self, instruction).compile())

    @classmethod
    def from_ptx(cls, text: str, name: str) -> Kernel:
        """Parse `text` and compile its `.entry name`."""
        module = parser.parse_module(text)
        function = module.functions.get(name)
        if function is None:
            entries = sorted(f.name for f in module.functions.values() if f.kind == "entry")
            raise InvalidArgument(f"PTX module has no entry {name!r} (entries: {entries})")
        return cls(module, function)

    def pack_params(self, *values: int | float) -> bytes:
        """The parameter block for `values` in parameter order (ints as their type, floats as f32/f64)."""
        if len(values) != len(self.params):
            raise InvalidArgument(f"{self.name} takes {len(self.params)} parameters, got {len(values)}")
        block = bytearray(self.param_size)
        for slot, value in zip(self.params, values):
            dtype = _DTYPES.get(slot.type, _UNSIGNED.get(slot.size))
            if dtype is None:
                raise InvalidArgument(f"{self.name}: parameter {slot.name} of type {slot.type} "
                                      f"cannot be packed from a number")
            if dtype.kind == "u" and int(value) < 0:
                raw = np.array(int(value), dtype=_SIGNED[dtype.itemsize]).tobytes()
            else:
                raw = np.array(value, dtype=dtype).tobytes()
            block[slot.offset:slot.offset + slot.size] = raw
        return bytes(block)

    def run(self, grid: tuple[int, ...] | int, block: tuple[int, ...] | int, params: bytes,
            memory: Memory, shared_bytes: int = 0, max_steps: int = DEFAULT_MAX_STEPS) -> int:
        """Run the kernel over `grid` CTAs of `block` threads; return the number of steps taken
        (a step is one instruction for the threads at one program counter)."""
        grid3 = _dims(grid, "grid")
        block3 = _dims(block, "block")
        lanes = block3[0] * block3[1] * block3[2]
        if lanes > MAX_THREADS_PER_CTA:
            raise InvalidArgument(f"{self.name}: {lanes} threads per CTA, more than "
                                  f"{MAX_THREADS_PER_CTA}")
        for directive in ("maxntid", "reqntid"):
            limit = self.directives.get(directive)
            if limit and not _fits(block3, limit, directive == "reqntid"):
                raise InvalidArgument(f"{self.name}: block {block3} does not satisfy .{directive} "
                                      f"{limit}")
        if len(params) < self.param_size:
            raise InvalidArgument(f"{self.name}: {len(params)} bytes of parameters, the entry's "
                                  f"block is {self.param_size}")
        if shared_bytes < 0:
            raise InvalidArgument(f"{self.name}: negative dynamic shared memory {shared_bytes}")
        param_array = np.frombuffer(bytes(params), dtype=np.uint8)
        shared_size = self.static_shared_size + shared_bytes
        total = 0
        self.thread_instructions = 0
        with np.errstate(all="ignore"):
            for z in range(grid3[2]):
                for y in range(grid3[1]):
                    for x in range(grid3[0]):
                        cta = _CTA(self, block3, grid3, (x, y, z), param_array, memory, shared_size)
                        total += self._run_cta(cta, max_steps)
        return total

    def _run_cta(self, cta: _CTA, max_steps: int) -> int:
        steps = self.steps
        end = len(steps)
        pc = cta.pc
        exited = cta.exited
        taken = 0
        while True:
            if exited.all():
                return taken
            live_pc = np.where(exited, end, pc)
            current = int(live_pc.min())
            if current >= end:
                # Falling off the end of the body is a return (PTX ISA 9.7.13.6).
                exited[:] = True
                return taken
            at = live_pc == current
            steps[current](cta, at)
            taken += 1
            cta.steps = taken
            self.thread_instructions += int(np.count_nonzero(at))
            if taken > max_steps:
                instruction = self.instructions[current]
                raise DeviceTimeout(f"{self.name}: CTA did not finish within {max_steps} steps (last "
                                    f"at PTX line {instruction.line}: {instruction.text})")


class _RegisterTypes(dict):
    """Register name -> storage dtype, filled from the declarations on first use."""

    def __init__(self, function: parser.Function) -> None:
        super().__init__()
        self.function = function

    def __missing__(self, name: str) -> np.dtype:
        declared = self.function.register_type(name)
        if declared is None:
            raise InvalidArgument(f"register {name} is not declared in {self.function.name}")
        dtype = _storage_dtype(declared)
        self[name] = dtype
        return dtype


def _storage_dtype(ptx_type: str) -> np.dtype:
    if ptx_type == "pred":
        return np.dtype(bool)
    bits = parser.TYPE_BITS[ptx_type]
    if bits not in (8, 16, 32, 64):
        raise UnsupportedInstruction(f"registers of type .{ptx_type} are not supported")
    return _UNSIGNED[bits // 8]


def _dims(value: tuple[int, ...] | int, what: str) -> tuple[int, int, int]:
    dims = (value,) if isinstance(value, int) else tuple(value)
    if not 1 <= len(dims) <= 3 or any(int(d) < 1 for d in dims):
        raise InvalidArgument(f"{what} {value!r}: need 1 to 3 positive sizes")
    padded = tuple(int(d) for d in dims) + (1,) * (3 - len(dims))
    return padded[0], padded[1], padded[2]


def _fits(block: tuple[int, int, int], limit: tuple[int, ...], exact: bool) -> bool:
    wanted = tuple(limit) + (1,) * (3 - len(limit))
    if exact:
        return block == wanted[:3]
    return block[0] * block[1] * block[2] <= wanted[0] * wanted[1] * wanted[2]


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def _param_layout(params: list[parser.Param]) -> list[ParamSlot]:
    slots = []
    offset = 0
    for param in params:
        offset = _align(offset, param.align)
        slots.append(ParamSlot(name=param.name, type=param.type, offset=offset, size=param.size))
        offset += param.size
    return slots


def _shared_layout(variables: list[parser.Variable]) -> tuple[dict[str, int], int, str | None]:
    offsets: dict[str, int] = {}
    offset = 0
    dynamic = None
    for variable in variables:
        if variable.space != "shared" or variable.extern:
            continue
        offset = _align(offset, variable.align)
        offsets[variable.name] = offset
        offset += variable.size
    for variable in variables:
        if variable.space == "shared" and variable.extern:
            # Dynamic shared memory starts after the static variables, aligned for the variable.
            offset = _align(offset, variable.align)
            offsets[variable.name] = offset
            dynamic = variable.name
    return offsets, offset, dynamic


def _local_layout(variables: list[parser.Variable]) -> tuple[dict[str, int], int]:
    offsets: dict[str, int] = {}
    offset = 0
    for variable in variables:
        if variable.space != "local":
            continue
        offset = _align(offset, variable.align)
        offsets[variable.name] = offset
        offset += variable.size
    return offsets, offset


def _typed(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Reinterpret register storage as `dtype`, truncating or zero-extending when widths differ."""
    if array.dtype == dtype:
        return array
    if dtype == np.bool_:
        return array != 0
    if array.dtype == np.bool_:
        return array.astype(dtype)
    if array.dtype.itemsize == dtype.itemsize:
        return array.view(dtype)
    return array.astype(_UNSIGNED[dtype.itemsize]).view(dtype)


def _to_storage(value: np.ndarray, storage: np.dtype, lanes: int) -> np.ndarray:
    value = np.broadcast_to(np.asarray(value), (lanes,))
    if value.dtype == storage:
        return value
    if storage == np.bool_:
        return value != 0
    if value.dtype == np.bool_:
        return value.astype(storage)
    if value.dtype.itemsize != storage.itemsize:
        if value.dtype.kind == "i":
            # A signed value into a wider register is sign-extended (PTX ISA 9.7.9.8, ld.s8 etc.).
            return value.astype(_SIGNED[storage.itemsize]).view(storage)
        return np.ascontiguousarray(value).view(_UNSIGNED[value.dtype.itemsize]).astype(storage)
    return np.ascontiguousarray(value).view(storage)


class _Compiler:
    """Turns one parsed instruction into a step closure."""

    def __init__(self, kernel: Kernel, instruction: Instruction) -> None:
        self.kernel = kernel
        self.instruction = instruction
        self.line = instruction.line
        # Cache eviction priorities and prefetch sizes (L1::..., L2::...) do not change results;
        # L2::cache_hint does, by adding an operand, so it stays and is refused.
        self.mods = [m for m in instruction.modifiers if m not in _IGNORED
                     and not (m.startswith(("L1::", "L2::")) and m != "L2::cache_hint")]

    def unsupported(self, why: str = "") -> UnsupportedInstruction:
        detail = f" ({why})" if why else ""
        return UnsupportedInstruction(f"PTX line {self.line}: {self.instruction.text!r} is not "
                                      f"supported by the mock's PTX interpreter{detail}")

    def compile(self) -> Step:
        method = getattr(self, f"_op_{self.instruction.opcode}", None)
        if method is None:
            raise self.unsupported(f"opcode {self.instruction.opcode}")
        guard = self.instruction.guard
        try:
            body = method()
            if guard is not None:
                self.kernel.register_dtypes[guard.name]
        except InvalidArgument as exc:
            raise parser.PTXSyntaxError(f"PTX line {self.line}: {exc}") from exc
        if guard is None:
            return body
        guard_name = guard.name
        negated = self.instruction.guard_negated

        def guarded(cta: _CTA, at: np.ndarray) -> None:
            predicate = cta.reg(guard_name)
            mask = at & (~predicate if negated else predicate)
            body(cta, mask)
            skipped = at & ~mask
            cta.pc[skipped] += 1
        return guarded

    # operand helpers ---------------------------------------------------------------------------

    def type_of(self, mods: list[str] | None = None) -> str:
        for mod in reversed(mods if mods is not None else self.mods):
            if mod in _DTYPES:
                return mod
            if mod in parser.TYPE_BITS:
                raise self.unsupported(f"type .{mod}")
        raise self.unsupported("no operand type")

    def source(self, operand: object, ptx_type: str) -> Callable[[_CTA], np.ndarray]:
        dtype = _DTYPES[ptx_type]
        if isinstance(operand, Negated):
            inner = self.source(operand.operand, ptx_type)
            return lambda cta: ~inner(cta)
        if isinstance(operand, Register):
            name = operand.name
            if name in ("%tid", "%ntid", "%ctaid", "%nctaid"):
                raise self.unsupported(f"vector special register {name}")
            if name in _SPECIAL_NAMES:
                return lambda cta: _typed(cta.special[name], dtype)
            if name.startswith("%clock") or name.startswith("%globaltimer"):
                return lambda cta: np.full(cta.lanes, cta.steps, dtype=dtype)
            self.kernel.register_dtypes[name]
            return lambda cta: _typed(cta.reg(name), dtype)
        if isinstance(operand, Immediate):
            constant = self.immediate(operand, ptx_type)
            return lambda cta: constant
        if isinstance(operand, Symbol):
            address = self.symbol_address(operand)
            constant = np.array(address & (2**64 - 1), dtype=_UNSIGNED[8]).astype(dtype)
            return lambda cta: constant
        raise self.unsupported(f"operand {operand!r}")

    def immediate(self, operand: Immediate, ptx_type: str) -> np.ndarray:
        dtype = _DTYPES[ptx_type]
        value = operand.value
        if ptx_type == "pred":
            return np.array(bool(value))
        if operand.float_bits == 32:
            number = float(np.array(int(value) & 0xFFFFFFFF, dtype=np.uint32).view(np.float32))
            if dtype.kind == "f":
                return np.array(number, dtype=dtype)
            return np.array(int(value) & 0xFFFFFFFF, dtype=np.uint32).astype(dtype)
        if operand.float_bits == 64:
            number = float(np.array(int(value) & (2**64 - 1), dtype=np.uint64).view(np.float64))
            if dtype.kind == "f":
                return np.array(number, dtype=dtype)
            return np.array(int(value) & (2**64 - 1), dtype=np.uint64).astype(dtype)
        if dtype.kind == "f":
            return np.array(float(value), dtype=dtype)
        if operand.float_bits == -1:
            raise self.unsupported("a decimal constant in an integer operation")
        bits = dtype.itemsize * 8
        raw = int(value) & ((1 << bits) - 1)
        return np.array(raw, dtype=_UNSIGNED[dtype.itemsize]).view(dtype)

    def symbol_address(self, symbol: Symbol) -> int:
        kernel = self.kernel
        name = symbol.name
        if symbol.index is not None:
            variable = kernel.variables.get(name)
            if variable is None:
                raise self.unsupported(f"{name}[{symbol.index}]: {name} is no variable")
            element = max(parser.TYPE_BITS[variable.type] // 8, 1)
            symbol = Symbol(name, symbol.offset + symbol.index * element)
        if name in kernel.shared_offsets:
            return kernel.shared_offsets[name] + symbol.offset
        if name in kernel.local_offsets:
            return kernel.local_offsets[name] + symbol.offset
        for slot in kernel.params:
            if slot.name == name:
                return slot.offset + symbol.offset
        raise self.unsupported(f"the address of {name} (only .shared, .local and .param variables "
                               f"have one in the mock)")

    def destination(self, operand: object) -> Callable[[_CTA, np.ndarray, np.ndarray], None]:
        if not isinstance(operand, Register):
            raise self.unsupported(f"destination {operand!r}")
        name = operand.name
        if name == "_":
            return lambda cta, value, mask: None
        storage = self.kernel.register_dtypes[name]

        def put(cta: _CTA, value: np.ndarray, mask: np.ndarray) -> None:
            target = cta.reg(name)
            converted = _to_storage(value, storage, cta.lanes)
            np.copyto(target, converted, where=mask)
        return put

    def simple(self, compute: Callable[..., np.ndarray], ptx_type: str,
               source_types: tuple[str, ...] | None = None, arity: int = 2) -> Step:
        """An instruction `op d, a, b, ...`: d = compute(a, b, ...) for the masked threads; the
        sources have `source_types`, else `arity` sources of `ptx_type`."""
        operands = self.instruction.operands
        types = source_types or (ptx_type,) * arity
        if len(operands) != len(types) + 1:
            raise self.unsupported(f"{len(operands)} operands where {len(types) + 1} are expected")
        put = self.destination(operands[0])
        sources = [self.source(op, t) for op, t in zip(operands[1:], types)]

        def step(cta: _CTA, mask: np.ndarray) -> None:
            if mask.any():
                put(cta, compute(*(get(cta) for get in sources)), mask)
            cta.pc[mask] += 1
        return step

    # data movement -----------------------------------------------------------------------------

    def _op_mov(self) -> Step:
        ptx_type = self.type_of()
        operands = self.instruction.operands
        if len(operands) == 2 and isinstance(operands[1], Vector):
            return self.pack(ptx_type, operands[0], operands[1])
        if len(operands) == 2 and isinstance(operands[0], Vector):
            return self.unpack(ptx_type, operands[0], operands[1])
        dtype = _DTYPES[ptx_type]
        return self.simple(lambda a: np.asarray(a).astype(dtype, copy=False), ptx_type, arity=1)

    def pack(self, ptx_type: str, target: object, vector: Vector) -> Step:
        total = _DTYPES[ptx_type].itemsize
        part = total // len(vector.elements)
        if part not in _UNSIGNED or part * len(vector.elements) != total:
            raise self.unsupported("vector pack sizes")
        part_type = {1: "b8", 2: "b16", 4: "b32"}[part]
        sources = [self.source(element, part_type) for element in vector.elements]
        put = self.destination(target)
        dtype = _DTYPES[ptx_type]

        def step(cta: _CTA, mask: np.ndarray) -> None:
            pieces = [np.broadcast_to(get(cta), (cta.lanes,)) for get in sources]
            packed = np.stack(pieces, axis=1).copy().view(dtype).reshape(cta.lanes)
            put(cta, packed, mask)
            cta.pc[mask] += 1
        return step

    def unpack(self, ptx_type: str, vector: Vector, source: object) -> Step:
        total = _DTYPES[ptx_type].itemsize
        part = total // len(vector.elements)
        if part not in _UNSIGNED or part * len(vector.elements) != total:
            raise self.unsupported("vector unpack sizes")
        get = self.source(source, ptx_type)
        puts = [self.destination(element) for element in vector.elements]
        part_dtype = _UNSIGNED[part]

        def step(cta: _CTA, mask: np.ndarray) -> None:
            whole = np.ascontiguousarray(np.broadcast_to(get(cta), (cta.lanes,)))
            pieces = whole.view(part_dtype).reshape(cta.lanes, len(puts))
            for index, put in enumerate(puts):
                put(cta, pieces[:, index], mask)
            cta.pc[mask] += 1
        return step

    def space_of(self) -> str:
        for mod in self.instruction.modifiers:
            if mod in _SPACES:
                return mod
        return "generic"

    def vector_width(self) -> int:
        for mod in self.instruction.modifiers:
            if mod in ("v2", "v4", "v8"):
                return int(mod[1:])
        return 1

    def address(self, operand: object, space: str) -> Callable[[_CTA], np.ndarray]:
        if not isinstance(operand, Address):
            raise self.unsupported(f"address operand {operand!r}")
        offset = operand.offset
        base = operand.base
        if base is None:
            constant = np.array(offset & (2**64 - 1), dtype=np.uint64)
            return lambda cta: np.broadcast_to(constant, (cta.lanes,))
        if isinstance(base, Symbol):
            address = self.symbol_address(Symbol(base.name, base.offset + offset))
            if space == "generic":
                address += SHARED_WINDOW if base.name in self.kernel.shared_offsets else 0
                address += LOCAL_WINDOW if base.name in self.kernel.local_offsets else 0
            constant = np.array(address & (2**64 - 1), dtype=np.uint64)
            return lambda cta: np.broadcast_to(constant, (cta.lanes,))
        name = base.name
        storage = self.kernel.register_dtypes[name]
        if storage.itemsize not in (4, 8):
            raise self.unsupported(f"address register {name} of {storage.itemsize} bytes")
        delta = np.uint64(offset & (2**64 - 1))
        return lambda cta: cta.reg(name).astype(np.uint64) + delta

    def _op_ld(self) -> Step:
        return self.load()

    def _op_ldu(self) -> Step:
        return self.load()

    def load(self) -> Step:
        ptx_type = self.type_of()
        space = self.space_of()
        if space == "const":
            raise self.unsupported(".const variables")
        width = self.vector_width()
        operands = self.instruction.operands
        if len(operands) != 2:
            raise self.unsupported("ld takes a destination and an address")
        targets = operands[0].elements if isinstance(operands[0], Vector) else (operands[0],)
        if len(targets) != width:
            raise self.unsupported(f"{len(targets)} destinations for .v{width}")
        puts = [self.destination(target) for target in targets]
        where = self.address(operands[1], space)
        dtype = _DTYPES[ptx_type] if ptx_type != "pred" else np.dtype(np.uint8)
        size = dtype.itemsize
        line = self.line

        def step(cta: _CTA, mask: np.ndarray) -> None:
            if mask.any():
                addresses = where(cta)
                raw = _access(cta, space, addresses, size * width, mask, None, line)
                values = raw.view(dtype).reshape(cta.lanes, width)
                for index, put in enumerate(puts):
                    put(cta, values[:, index], mask)
            cta.pc[mask] += 1
        return step

    def _op_st(self) -> Step:
        ptx_type = self.type_of()
        space = self.space_of()
        width = self.vector_width()
        operands = self.instruction.operands
        if len(operands) != 2:
            raise self.unsupported("st takes an address and a value")
        if space in ("param", "const"):
            raise self.unsupported(f"st.{space}")
        values = operands[1].elements if isinstance(operands[1], Vector) else (operands[1],)
        if len(values) != width:
            raise self.unsupported(f"{len(values)} values for .v{width}")
        sources = [self.source(value, ptx_type) for value in values]
        where = self.address(operands[0], space)
        dtype = _DTYPES[ptx_type]
        size = dtype.itemsize
        line = self.line

        def step(cta: _CTA, mask: np.ndarray) -> None:
            if mask.any():
                columns = [np.broadcast_to(get(cta), (cta.lanes,)).astype(dtype, copy=False)
                           for get in sources]
                data = np.ascontiguousarray(np.stack(columns, axis=1)).view(np.uint8)
                _access(cta, space, where(cta), size * width, mask, data, line)
            cta.pc[mask] += 1
        return step

    def _op_cvta(self) -> Step:
        mods = self.mods
        to = "to" in mods
        space = next((m for m in mods if m in ("global", "shared", "local", "const", "param")), None)
        if space is None or space in ("const", "param"):
            raise self.unsupported(f"cvta for the .{space} space")
        ptx_type = self.type_of()
        window = {"global": 0, "shared": SHARED_WINDOW, "local": LOCAL_WINDOW}[space]
        dtype = _DTYPES[ptx_type]
        delta = np.array(window, dtype=np.uint64).astype(dtype)
        if to:
            return self.simple(lambda a: a - delta, ptx_type, arity=1)
        return self.simple(lambda a: a + delta, ptx_type, arity=1)

    # integer and float arithmetic --------------------------------------------------------------

    def _op_add(self) -> Step:
        return self.arith(np.add)

    def _op_sub(self) -> Step:
        return self.arith(np.subtract)

    def arith(self, op: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Step:
        ptx_type = self.type_of()
        if "cc" in self.mods:
            raise self.unsupported("carry (.cc)")
        if "sat" in self.mods and ptx_type == "s32":
            def saturated(a: np.ndarray, b: np.ndarray) -> np.ndarray:
                wide = op(a.astype(np.int64), b.astype(np.int64))
                return np.clip(wide, -2**31, 2**31 - 1).astype(np.int32)
            return self.simple(saturated, ptx_type)
        if "sat" in self.mods and ptx_type in _FLOATS:
            return self.simple(lambda a, b: np.clip(op(a, b), 0.0, 1.0), ptx_type)
        self.check_rounding(ptx_type)
        return self.simple(op, ptx_type)

    def check_rounding(self, ptx_type: str) -> None:
        for mod in self.mods:
            if mod in ("rz", "rm", "rp") and ptx_type in _FLOATS:
                raise self.unsupported(f"rounding mode .{mod}")

    def _op_mul(self) -> Step:
        ptx_type = self.type_of()
        mode = next((m for m in self.mods if m in ("lo", "hi", "wide")), None)
        if ptx_type in _FLOATS:
            self.check_rounding(ptx_type)
            return self.simple(np.multiply, ptx_type)
        if mode == "wide":
            wide = _widened(ptx_type)
            wide_dtype = _DTYPES[wide]
            return self.simple(lambda a, b: a.astype(wide_dtype) * b.astype(wide_dtype), wide,
                               (ptx_type, ptx_type))
        if mode == "hi":
            return self.simple(lambda a, b: _mul_hi(a, b, ptx_type), ptx_type)
        return self.simple(np.multiply, ptx_type)

    def _op_mad(self) -> Step:
        ptx_type = self.type_of()
        mode = next((m for m in self.mods if m in ("lo", "hi", "wide")), None)
        if ptx_type in _FLOATS:
            return self._op_fma()
        if "cc" in self.mods or "sat" in self.mods:
            raise self.unsupported("mad with .cc or .sat")
        if mode == "wide":
            wide = _widened(ptx_type)
            wide_dtype = _DTYPES[wide]
            return self.simple(lambda a, b, c: a.astype(wide_dtype) * b.astype(wide_dtype) + c, wide,
                               (ptx_type, ptx_type, wide))
        if mode == "hi":
            return self.simple(lambda a, b, c: _mul_hi(a, b, ptx_type) + c, ptx_type, arity=3)
        return self.simple(lambda a, b, c: a * b + c, ptx_type, arity=3)

    def _op_fma(self) -> Step:
        ptx_type = self.type_of()
        self.check_rounding(ptx_type)
        if ptx_type == "f64":
            # Exact fused multiply-add in double precision.
            return self.simple(_fma64, ptx_type, arity=3)
        if ptx_type not in ("f16", "f32"):
            raise self.unsupported(f"fma of .{ptx_type}")
        dtype = _DTYPES[ptx_type]

        def fused(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
            # The f16 sum is exact in double precision (a single rounding to half); f32 may round
            # twice in rare cases (module docstring).
            product = np.asarray(a, dtype=np.float64) * np.asarray(b, dtype=np.float64)
            return (product + np.asarray(c, dtype=np.float64)).astype(dtype)
        if "sat" in self.mods:
            return self.simple(lambda a, b, c: np.clip(fused(a, b, c), 0.0, 1.0), ptx_type, arity=3)
        return self.simple(fused, ptx_type, arity=3)

    def _op_div(self) -> Step:
        ptx_type = self.type_of()
        if ptx_type in _FLOATS:
            self.check_rounding(ptx_type)
            return self.simple(np.divide, ptx_type)
        return self.simple(lambda a, b: _int_divide(a, b)[0], ptx_type)

    def _op_rem(self) -> Step:
        ptx_type = self.type_of()
        if ptx_type in _FLOATS:
            raise self.unsupported("rem of floats")
        return self.simple(lambda a, b: _int_divide(a, b)[1], ptx_type)

    def _op_min(self) -> Step:
        ptx_type = self.type_of()
        return self.simple(np.fmin if ptx_type in _FLOATS else np.minimum, ptx_type)

    def _op_max(self) -> Step:
        ptx_type = self.type_of()
        return self.simple(np.fmax if ptx_type in _FLOATS else np.maximum, ptx_type)

    def _op_abs(self) -> Step:
        return self.simple(np.abs, self.type_of(), arity=1)

    def _op_neg(self) -> Step:
        return self.simple(np.negative, self.type_of(), arity=1)

    def _op_and(self) -> Step:
        return self.simple(np.bitwise_and, self.type_of())

    def _op_or(self) -> Step:
        return self.simple(np.bitwise_or, self.type_of())

    def _op_xor(self) -> Step:
        return self.simple(np.bitwise_xor, self.type_of())

    def _op_not(self) -> Step:
        return self.simple(np.invert, self.type_of(), arity=1)

    def _op_cnot(self) -> Step:
        ptx_type = self.type_of()
        dtype = _DTYPES[ptx_type]
        return self.simple(lambda a: (a == 0).astype(dtype), ptx_type, arity=1)

    def _op_shl(self) -> Step:
        ptx_type = self.type_of()
        bits = _DTYPES[ptx_type].itemsize * 8
        dtype = _DTYPES[ptx_type]

        def shift_left(a: np.ndarray, amount: np.ndarray) -> np.ndarray:
            clamped = np.minimum(amount, bits - 1).astype(dtype)
            shifted = np.left_shift(a, clamped)
            return np.where(amount >= bits, dtype.type(0), shifted)
        return self.simple(shift_left, ptx_type, (ptx_type, "u32"))

    def _op_shr(self) -> Step:
        ptx_type = self.type_of()
        dtype = _DTYPES[ptx_type]
        bits = dtype.itemsize * 8

        def shift_right(a: np.ndarray, amount: np.ndarray) -> np.ndarray:
            # PTX ISA 9.7.8.8: amounts above the width clamp to it (sign fill for signed types).
            clamped = np.minimum(amount, bits - 1).astype(dtype)
            shifted = np.right_shift(a, clamped)
            if dtype.kind == "i":
                return shifted
            return np.where(amount >= bits, dtype.type(0), shifted)
        return self.simple(shift_right, ptx_type, (ptx_type, "u32"))

    def _op_popc(self) -> Step:
        ptx_type = self.type_of()
        bits = _DTYPES[ptx_type].itemsize * 8

        def popcount(a: np.ndarray) -> np.ndarray:
            value = np.asarray(a).astype(np.uint64)
            count = np.zeros(value.shape, dtype=np.uint32)
            for bit in range(bits):
                count += ((value >> np.uint64(bit)) & np.uint64(1)).astype(np.uint32)
            return count
        return self.simple(popcount, "u32", (ptx_type,))

    # comparisons and selection -----------------------------------------------------------------

    def _op_setp(self) -> Step:
        mods = self.mods
        ptx_type = self.type_of()
        compare = _comparison(mods[0], ptx_type) if mods else None
        if compare is None:
            raise self.unsupported("comparison")
        combine = next((m for m in mods[1:] if m in ("and", "or", "xor")), None)
        operands = self.instruction.operands
        if len(operands) != (4 if combine else 3):
            raise self.unsupported("setp operand count")
        first = operands[0]
        if isinstance(first, PredicatePair):
            put_true = self.destination(first.first)
            put_false = self.destination(first.second)
        else:
            put_true = self.destination(first)
            put_false = None
        a = self.source(operands[1], ptx_type)
        b = self.source(operands[2], ptx_type)
        c = self.source(operands[3], "pred") if combine else None

        def step(cta: _CTA, mask: np.ndarray) -> None:
            if mask.any():
                result = compare(a(cta), b(cta))
                other = ~result
                if c is not None:
                    extra = c(cta)
                    result = _combine(combine, result, extra)
                    other = _combine(combine, other, extra)
                put_true(cta, result, mask)
                if put_false is not None:
                    put_false(cta, other, mask)
            cta.pc[mask] += 1
        return step

    def _op_selp(self) -> Step:
        ptx_type = self.type_of()
        return self.simple(lambda a, b, c: np.where(c, a, b), ptx_type, (ptx_type, ptx_type, "pred"))

    # conversions and special functions ---------------------------------------------------------

    def _op_cvt(self) -> Step:
        types = [m for m in self.mods if m in parser.TYPE_BITS]
        if len(types) != 2 or any(t not in _DTYPES for t in types):
            raise self.unsupported("cvt types")
        target, origin = types
        rounding = next((m for m in self.mods if m in ("rn", "rz", "rm", "rp", "rni", "rzi", "rmi",
                                                       "rpi", "rna", "rs")), None)
        saturate = "sat" in self.mods
        target_dtype = _DTYPES[target]
        if target in _FLOATS and origin in _FLOATS:
            if rounding in ("rni", "rzi", "rmi", "rpi"):
                integral = _INTEGRAL[rounding]
                return self.simple(lambda a: integral(a).astype(target_dtype), target, (origin,))
            if rounding not in (None, "rn"):
                raise self.unsupported(f"rounding .{rounding}")
            if saturate:
                return self.simple(lambda a: np.clip(a.astype(target_dtype), 0.0, 1.0), target,
                                   (origin,))
            return self.simple(lambda a: a.astype(target_dtype), target, (origin,))
        if target in _FLOATS:
            if rounding not in (None, "rn"):
                raise self.unsupported(f"rounding .{rounding}")
            return self.simple(lambda a: a.astype(target_dtype), target, (origin,))
        if origin in _FLOATS:
            if rounding not in ("rni", "rzi", "rmi", "rpi"):
                raise self.unsupported("float to integer needs .rni/.rzi/.rmi/.rpi")
            integral = _INTEGRAL[rounding]
            info = np.iinfo(target_dtype)

            def to_integer(a: np.ndarray) -> np.ndarray:
                # PTX ISA 9.7.9.21: float-to-integer conversions saturate; NaN becomes 0.
                whole = integral(np.asarray(a, dtype=np.float64))
                whole = np.nan_to_num(whole, nan=0.0)
                return np.clip(whole, float(info.min), float(info.max)).astype(target_dtype)
            return self.simple(to_integer, target, (origin,))
        if saturate:
            info = np.iinfo(target_dtype)

            def clamp(a: np.ndarray) -> np.ndarray:
                wide = np.asarray(a).astype(np.float64)
                return np.clip(wide, float(info.min), float(info.max)).astype(target_dtype)
            return self.simple(clamp, target, (origin,))
        return self.simple(lambda a: np.asarray(a).astype(target_dtype), target, (origin,))

    def unary_float(self, function: Callable[[np.ndarray], np.ndarray]) -> Step:
        ptx_type = self.type_of()
        if ptx_type not in _FLOATS:
            raise self.unsupported(f".{ptx_type}")
        self.check_rounding(ptx_type)
        dtype = _DTYPES[ptx_type]
        return self.simple(lambda a: function(a).astype(dtype), ptx_type, arity=1)

    def _op_rcp(self) -> Step:
        return self.unary_float(lambda a: np.divide(a.dtype.type(1), a))

    def _op_sqrt(self) -> Step:
        return self.unary_float(np.sqrt)

    def _op_rsqrt(self) -> Step:
        return self.unary_float(lambda a: np.divide(a.dtype.type(1), np.sqrt(a)))

    def _op_ex2(self) -> Step:
        return self.unary_float(np.exp2)

    def _op_lg2(self) -> Step:
        return self.unary_float(np.log2)

    def _op_sin(self) -> Step:
        return self.unary_float(np.sin)

    def _op_cos(self) -> Step:
        return self.unary_float(np.cos)

    def _op_tanh(self) -> Step:
        return self.unary_float(np.tanh)

    # control flow and synchronisation ----------------------------------------------------------

    def _op_bra(self) -> Step:
        operands = self.instruction.operands
        if len(operands) != 1 or not isinstance(operands[0], Symbol):
            raise self.unsupported("bra takes one label")
        label = operands[0].name
        target = self.kernel.function.labels.get(label)
        if target is None:
            raise parser.PTXSyntaxError(f"PTX line {self.line}: branch to unknown label {label}")

        def step(cta: _CTA, mask: np.ndarray) -> None:
            cta.pc[mask] = target
        return step

    def _op_ret(self) -> Step:
        def step(cta: _CTA, mask: np.ndarray) -> None:
            cta.exited |= mask
        return step

    def _op_exit(self) -> Step:
        return self._op_ret()

    def _op_bar(self) -> Step:
        return self.barrier()

    def _op_barrier(self) -> Step:
        return self.barrier()

    def barrier(self) -> Step:
        mods = self.mods
        if "arrive" in mods or "red" in mods:
            raise self.unsupported("bar.arrive / bar.red")
        operands = self.instruction.operands
        if len(operands) > 1:
            raise self.unsupported("a barrier with a thread count")
        if operands and not isinstance(operands[0], Immediate):
            raise self.unsupported("a barrier number in a register")
        name = self.kernel.name
        line = self.line

        def step(cta: _CTA, mask: np.ndarray) -> None:
            live = ~cta.exited
            arrived = int(np.count_nonzero(mask))
            waiting = int(np.count_nonzero(live))
            if arrived != waiting:
                elsewhere = sorted({self.kernel.instructions[p].line
                                    for p in np.unique(cta.pc[live & ~mask])
                                    if p < len(self.kernel.instructions)})
                raise BarrierDivergence(f"{name}: bar.sync at PTX line {line} reached by {arrived} of "
                                        f"{waiting} live threads; the others are at lines {elsewhere}")
            cta.pc[mask] += 1
        return step

    def _op_membar(self) -> Step:
        return self.nothing()

    def _op_fence(self) -> Step:
        return self.nothing()

    def nothing(self) -> Step:
        def step(cta: _CTA, mask: np.ndarray) -> None:
            cta.pc[mask] += 1
        return step

    def _op_trap(self) -> Step:
        line = self.line
        name = self.kernel.name

        def step(cta: _CTA, mask: np.ndarray) -> None:
            if mask.any():
                raise MemoryFault(f"{name}: trap at PTX line {line}")
            cta.pc[mask] += 1
        return step

    # atomics -----------------------------------------------------------------------------------

    def _op_atom(self) -> Step:
        return self.atomic(returns=True)

    def _op_red(self) -> Step:
        return self.atomic(returns=False)

    def atomic(self, returns: bool) -> Step:
        mods = self.mods
        space = self.space_of()
        if space not in ("global", "shared", "generic"):
            raise self.unsupported(f"atomics on .{space}")
        operation = next((m for m in mods if m in _ATOMIC_OPS), None)
        if operation is None:
            raise self.unsupported("atomic operation")
        ptx_type = self.type_of()
        if ptx_type == "f64" and operation != "add" or _DTYPES[ptx_type].itemsize not in (4, 8):
            raise self.unsupported(f"atom.{operation}.{ptx_type}")
        operands = self.instruction.operands
        if returns:
            put = self.destination(operands[0])
            operands = operands[1:]
        else:
            put = None
        where = self.address(operands[0], space)
        values = [self.source(op, ptx_type) for op in operands[1:]]
        wanted = 2 if operation == "cas" else 1
        if len(values) != wanted:
            raise self.unsupported(f"atom.{operation} takes {wanted} value operands")
        dtype = _DTYPES[ptx_type]
        size = dtype.itemsize
        apply = _ATOMIC_OPS[operation]
        line = self.line

        def step(cta: _CTA, mask: np.ndarray) -> None:
            if mask.any():
                addresses = where(cta)
                operand_arrays = [np.broadcast_to(get(cta), (cta.lanes,)) for get in values]
                old = np.zeros(cta.lanes, dtype=dtype)
                single = np.zeros(cta.lanes, dtype=bool)
                # Atomics of one instruction take effect one thread after another, in lane order.
                for lane in np.flatnonzero(mask):
                    single[:] = False
                    single[lane] = True
                    raw = _access(cta, space, addresses, size, single, None, line)
                    current = raw[lane].view(dtype)[0]
                    old[lane] = current
                    updated = apply(current, *(array[lane] for array in operand_arrays))
                    data = np.zeros((cta.lanes, size), dtype=np.uint8)
                    data[lane] = np.array([updated], dtype=dtype).view(np.uint8)
                    _access(cta, space, addresses, size, single, data, line)
                if put is not None:
                    put(cta, old, mask)
            cta.pc[mask] += 1
        return step


def _widened(ptx_type: str) -> str:
    widened = {"u16": "u32", "s16": "s32", "u32": "u64", "s32": "s64"}.get(ptx_type)
    if widened is None:
        raise UnsupportedInstruction(f".wide of .{ptx_type}")
    return widened


def _mul_hi(a: np.ndarray, b: np.ndarray, ptx_type: str) -> np.ndarray:
    dtype = _DTYPES[ptx_type]
    bits = dtype.itemsize * 8
    if bits < 64:
        wide = _SIGNED[8] if dtype.kind == "i" else _UNSIGNED[8]
        return (a.astype(wide) * b.astype(wide) >> bits).astype(dtype)
    left = np.asarray(a)
    right = np.asarray(b)
    shape = np.broadcast(left, right).shape
    flat_a = np.broadcast_to(left, shape).ravel()
    flat_b = np.broadcast_to(right, shape).ravel()
    out = [(int(x) * int(y)) >> 64 for x, y in zip(flat_a, flat_b)]
    return np.array([value & (2**64 - 1) for value in out], dtype=np.uint64).view(dtype).reshape(shape)


def _fma64(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    left, right, addend = np.broadcast_arrays(np.asarray(a), np.asarray(b), np.asarray(c))
    out = [_fused(float(x), float(y), float(z)) for x, y, z in
           zip(left.ravel(), right.ravel(), addend.ravel())]
    return np.array(out, dtype=np.float64).reshape(left.shape)


def _fused(x: float, y: float, z: float) -> float:
    """x * y + z rounded once (exact rational arithmetic; Fraction to float rounds to nearest)."""
    if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)):
        return x * y + z
    try:
        return float(Fraction(x) * Fraction(y) + Fraction(z))
    except OverflowError:
        return math.copysign(math.inf, x * y + z if math.isfinite(x * y + z) else x * y)


def _int_divide(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.broadcast_arrays(np.asarray(a), np.asarray(b))
    dtype = a.dtype
    zero = b == 0
    safe = np.where(zero, dtype.type(1), b)
    if dtype.kind == "u":
        quotient = a // safe
    else:
        # Truncating division (C semantics), unlike numpy's floor division, on the magnitudes as
        # unsigned numbers (the magnitude of the most negative value only fits unsigned).
        unsigned = _UNSIGNED[dtype.itemsize]
        magnitude = np.abs(a).view(unsigned) // np.abs(safe).view(unsigned)
        negative = (a < 0) != (safe < 0)
        quotient = np.where(negative, unsigned.type(0) - magnitude, magnitude).view(dtype)
    remainder = (a - quotient * safe).astype(dtype)
    all_ones = np.array(-1).astype(dtype) if dtype.kind == "i" else np.iinfo(dtype).max
    quotient = np.where(zero, dtype.type(all_ones), quotient).astype(dtype)
    remainder = np.where(zero, a, remainder).astype(dtype)
    return quotient, remainder


_INTEGRAL = {"rni": np.rint, "rzi": np.trunc, "rmi": np.floor, "rpi": np.ceil}


def _comparison(name: str, ptx_type: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """PTX ISA 9.7.3.1 (integer) and 9.7.3.2 (float) comparison operators."""
    ordered = {
        "eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
        "gt": np.greater, "ge": np.greater_equal,
        "lo": np.less, "ls": np.less_equal, "hi": np.greater, "hs": np.greater_equal,
    }
    if name in ordered:
        compare = ordered[name]
        if name == "ne" and ptx_type in _FLOATS:
            return lambda a, b: np.not_equal(a, b) & ~np.isnan(a) & ~np.isnan(b)
        return compare
    unordered = {"equ": np.equal, "neu": np.not_equal, "ltu": np.less, "leu": np.less_equal,
                 "gtu": np.greater, "geu": np.greater_equal}
    if name in unordered and ptx_type in _FLOATS:
        inner = unordered[name]
        return lambda a, b: inner(a, b) | np.isnan(a) | np.isnan(b)
    if name == "num" and ptx_type in _FLOATS:
        return lambda a, b: ~np.isnan(a) & ~np.isnan(b)
    if name == "nan" and ptx_type in _FLOATS:
        return lambda a, b: np.isnan(a) | np.isnan(b)
    return None


def _combine(how: str | None, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if how == "and":
        return a & b
    if how == "or":
        return a | b
    return a ^ b


def _atomic_inc(old: np.generic, limit: np.generic) -> np.generic:
    return type(old)(0) if old >= limit else type(old)(old + 1)


def _atomic_dec(old: np.generic, limit: np.generic) -> np.generic:
    return limit if old == 0 or old > limit else type(old)(old - 1)


# PTX ISA 9.7.12.5 "atom": the operations (and, or, xor on .b32/.b64; inc/dec on .u32).
_ATOMIC_OPS: dict[str, Callable[..., np.generic]] = {
    "add": lambda old, value: old + value,
    "min": lambda old, value: min(old, value),
    "max": lambda old, value: max(old, value),
    "and": lambda old, value: old & value,
    "or": lambda old, value: old | value,
    "xor": lambda old, value: old ^ value,
    "exch": lambda old, value: value,
    "cas": lambda old, compare, value: value if old == compare else old,
    "inc": _atomic_inc,
    "dec": _atomic_dec,
}


def _access(cta: _CTA, space: str, addresses: np.ndarray, size: int, mask: np.ndarray,
            data: np.ndarray | None, line: int) -> np.ndarray:
    """Load (data None) or store `size` bytes per masked lane; returns (lanes, size) bytes loaded."""
    lanes = np.flatnonzero(mask)
    chosen = np.asarray(addresses, dtype=np.uint64)[lanes]
    misaligned = chosen % np.uint64(_natural_alignment(size)) != 0
    if misaligned.any():
        bad = int(chosen[np.argmax(misaligned)])
        raise MemoryFault(f"{cta.kernel.name}: misaligned {size}-byte .{space} access at {bad:#x} "
                          f"(PTX line {line})")
    out = np.zeros((cta.lanes, size), dtype=np.uint8)
    if space == "generic":
        shared = (chosen >= SHARED_WINDOW) & (chosen < SHARED_WINDOW + WINDOW_SIZE)
        local = (chosen >= LOCAL_WINDOW) & (chosen < LOCAL_WINDOW + WINDOW_SIZE)
        parts = (("shared", shared, SHARED_WINDOW), ("local", local, LOCAL_WINDOW),
                 ("global", ~shared & ~local, 0))
        for part, selected, window in parts:
            if selected.any():
                sub = np.zeros(cta.lanes, dtype=bool)
                sub[lanes[selected]] = True
                shifted = np.asarray(addresses, dtype=np.uint64) - np.uint64(window)
                loaded = _access(cta, part, shifted, size, sub, data, line)
                out[lanes[selected]] = loaded[lanes[selected]]
        return out
    if space == "global":
        if data is None:
            out[lanes] = _global_read(cta.memory, chosen, size)
        else:
            _global_write(cta.memory, chosen, size, data[lanes])
        return out
    if space == "param":
        flat = cta.params
        index = chosen.astype(np.int64)
        limit = len(flat)
    elif space == "shared":
        flat = cta.shared
        index = chosen.astype(np.int64)
        limit = len(flat)
    elif space == "local":
        flat = cta.local
        index = chosen.astype(np.int64)
        limit = cta.local_size
    else:
        raise UnsupportedInstruction(f"PTX line {line}: .{space} accesses are not supported")
    if (index < 0).any() or (index + size > limit).any():
        bad = int(index[np.argmax((index < 0) | (index + size > limit))])
        raise MemoryFault(f"{cta.kernel.name}: .{space} access at {bad:#x}+{size} outside its "
                          f"{limit:#x} bytes (PTX line {line})")
    if space == "local":
        index = index + lanes.astype(np.int64) * cta.local_size
    gather = index[:, None] + np.arange(size, dtype=np.int64)
    if data is None:
        out[lanes] = flat[gather]
    else:
        if space == "param":
            raise UnsupportedInstruction(f"PTX line {line}: stores to .param")
        flat[gather] = data[lanes]
    return out


def _natural_alignment(size: int) -> int:
    alignment = 1
    while alignment * 2 <= size and size % (alignment * 2) == 0:
        alignment *= 2
    return alignment


def _runs(addresses: np.ndarray, size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sort lanes by address (stable: lane order among equal addresses) and split into runs whose
    accesses touch one contiguous byte range."""
    order = np.argsort(addresses, kind="stable")
    ordered = addresses[order]
    gaps = np.diff(ordered) > np.uint64(size)
    breaks = np.flatnonzero(gaps) + 1
    return order, np.split(np.arange(len(order)), breaks)


def _global_read(memory: Memory, addresses: np.ndarray, size: int) -> np.ndarray:
    order, runs = _runs(addresses, size)
    ordered = addresses[order]
    out = np.empty((len(addresses), size), dtype=np.uint8)
    span = np.arange(size, dtype=np.int64)
    for run in runs:
        low = int(ordered[run[0]])
        high = int(ordered[run[-1]]) + size
        data = memory.read(low, high - low)
        if len(data) != high - low:
            raise MemoryFault(f"global read {low:#x}+{high - low:#x} returned {len(data)} bytes")
        buffer = np.frombuffer(data, dtype=np.uint8)
        offsets = (ordered[run] - np.uint64(low)).astype(np.int64)
        out[order[run]] = buffer[offsets[:, None] + span]
    return out


def _global_write(memory: Memory, addresses: np.ndarray, size: int, data: np.ndarray) -> None:
    order, runs = _runs(addresses, size)
    ordered = addresses[order]
    span = np.arange(size, dtype=np.int64)
    for run in runs:
        low = int(ordered[run[0]])
        high = int(ordered[run[-1]]) + size
        buffer = np.zeros(high - low, dtype=np.uint8)
        offsets = (ordered[run] - np.uint64(low)).astype(np.int64)
        # Equal addresses keep lane order, so the highest lane's value is the one written.
        buffer[offsets[:, None] + span] = data[order[run]]
        memory.write(low, buffer.tobytes())
