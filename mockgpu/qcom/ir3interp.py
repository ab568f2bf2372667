"""The mock Adreno's shader processor: an ir3 interpreter that runs a compute kernel's real words.

Decoding uses only the tables generated from Mesa's ISA description (autogen.qcom.ir3_isa): a word
decodes to the one instruction form whose pattern matches it, and a field is found as isaspec finds
it (Mesa src/compiler/isaspec/isaspec_decode_impl.c: the form's cases whose expression holds, then
its parents', then through the params of the field that led to a nested bitset). Nothing here
knows a bit position.

Execution: all threads of one work group are numpy lanes. Each lane has its own program counter;
the instruction at the lowest counter among the live lanes runs for the lanes that are there (the
usual way a SIMT machine reconverges after a branch), so divergent branches and loops run as the
hardware runs them. `(rptN)` repeats an ALU instruction N more times, the destination and the
sources marked `(r)` one register further each time (Mesa ir3.h, IR3_REG_R). A register a global load
(ldg) writes may be read only after an instruction flagged `(sy)`, one a local load (ldl) writes only
after `(ss)` (Mesa ir3.h is_sy_producer / is_ss_producer): reading it earlier is a fault, since the
hardware would hand out the old value. Registers: 256 register ids per lane
(regid = 4 * N + component: r0.x..r47.w the per-thread file, r48 and up shared, a0.x 244, p0.x 248;
Mesa ir3.h regid/REG_A0/REG_P0).

Covered: nop, end, br, jump; mov/cov between f32, u32 and s32; cat2 add/sub/min/max/mul (f, u, s),
mull.u, mul.u24/s24, shl/shr/ashr, and/or/xor/not, cmps (f, u, s), absneg, floor/ceil/trunc/rndne;
cat3 mad.f32, mad.u24/s24, sel.b32/s32; ldg/stg (plain and `.a`), ldl/stl; bar. Anything else, and
half registers, relative addressing or 8/16-bit types, is `IR3Fault` naming the instruction and its
address, which the CP reports as a context fault.
"""
from __future__ import annotations

import functools
import math
import struct
from typing import Callable

import numpy as np

from autogen.qcom import ir3_isa

# Mesa ir3.h: regid(num, comp) = 4 * num + comp; a0.x and p0.x are registers 61 and 62
REGISTER_IDS = 256
COMPONENTS = 4
A0_X = 4 * 61
P0_X = 4 * 62
FIRST_SHARED = 4 * 48  # ir3.h SHARED_REG_START: r48 and up are shared by a wave
INSTRUCTION_BYTES = 8
WORD_BITS = 64
# a work group that runs this many instructions without ending is treated as a hang (the mock's
# bound; the hardware's fault detection would reset the GPU)
MAX_STEPS = 1_000_000
_TYPES = ir3_isa.ENUMS["#type"]
_CONDITIONS = ir3_isa.ENUMS["#cond"]
_FLUT = ir3_isa.ENUMS["#flut"]
_FLUT_SPECIAL = {"(e)": math.e, "(pi)": math.pi, "(1/pi)": 1 / math.pi,
                 "(1/log2(e))": 1 / math.log2(math.e), "(log2(e))": math.log2(math.e),
                 "(1/log2(10))": 1 / math.log2(10), "(log2(10))": math.log2(10)}
WIDE_TYPES = frozenset({"f32", "u32", "s32"})


class IR3Fault(Exception):
    """The shader processor cannot go on: an instruction the mock does not model, a register
    outside the footprint, a local-memory access out of range, a hang. Names what and where."""

    def __init__(self, message: str, pc: int | None = None) -> None:
        super().__init__(message if pc is None else f"{message} (instruction {pc}, byte "
                                                     f"{pc * INSTRUCTION_BYTES:#x} of the kernel)")
        self.pc = pc


# -- decoding -----------------------------------------------------------------------------------------
def _matches(name: str, value: int) -> bool:
    _size, _extends, match, dontcare, mask, _cases = ir3_isa.BITSETS[name]
    return (value & mask & ~dontcare) == match


def _chain(name: str):
    current = name
    while current is not None:
        yield current
        current = ir3_isa.BITSETS[current][1]


@functools.cache
def _compiled(expression: str):
    return compile(ir3_isa.EXPRESSIONS[expression], expression, "eval")


def _sign_extend(value: int, width: int) -> int:
    sign = 1 << (width - 1)
    return (value & (sign - 1)) - (value & sign)


class Decoded:
    """One bitset decoded from its bits: `.name` the form, `.field(name)` a value, `.sub(name)` a
    nested bitset (a register, a source with its modifiers)."""

    def __init__(self, type_name: str, value: int, parent: "Decoded | None" = None,
                 params: tuple = ()) -> None:
        found = [leaf for leaf in ir3_isa.LEAVES.get(type_name, (type_name,)) if _matches(leaf, value)]
        if len(found) != 1:
            raise IR3Fault(f"{type_name}: {len(found)} forms of GPU {ir3_isa.GPU_ID} match "
                           f"{value:#x}; not an instruction")
        self.name = found[0]
        self.value = value
        self.parent = parent
        self.params = params
        self._evaluating: set[str] = set()
        self._found: dict[str, tuple | None] = {}
        self._values: dict[str, int] = {}

    def _evaluate(self, expression: str) -> int:
        if expression in self._evaluating:  # isaspec refuses a cycle; it reads as 0
            return 0
        self._evaluating.add(expression)
        try:
            return int(eval(_compiled(expression), {"F": self.field}))  # noqa: S307 (generated)
        finally:
            self._evaluating.discard(expression)

    def _find(self, name: str):
        if name not in self._found:
            self._found[name] = self._search(name)
        return self._found[name]

    def _search(self, name: str):
        for level in _chain(self.name):
            for expression, _display, fields in ir3_isa.BITSETS[level][5]:
                if expression is not None and not self._evaluate(expression):
                    continue
                for field in fields:
                    if field[0] == name:
                        return field
        return None

    def field(self, name: str) -> int:
        """A field's value: bits as unsigned, derived fields computed, params followed."""
        if name not in self._values:
            self._values[name] = self._field(name)
        return self._values[name]

    def _field(self, name: str) -> int:
        field = self._find(name)
        if field is None:
            for parent_name, alias in self.params:
                if alias == name and self.parent is not None:
                    return self.parent.field(parent_name)
            raise IR3Fault(f"{self.name}: no field {name}")
        _name, low, high, _type, _display, _params, expression, kind, _value = field
        if kind == "derived":
            return self._evaluate(expression)
        return (self.value >> low) & ((1 << (high - low + 1)) - 1)

    def signed(self, name: str) -> int:
        """A field as a signed number of its width (derived ones too: an offset the XML builds
        from two fields is as wide as the field says)."""
        field = self._find(name)
        if field is None:
            return self.field(name)
        width = field[2] - field[1] + 1
        return _sign_extend(self.field(name) & ((1 << width) - 1), width)

    def sub(self, name: str) -> "Decoded":
        field = self._find(name)
        if field is None:
            raise IR3Fault(f"{self.name}: no field {name}")
        return Decoded(field[3], self.field(name), self, field[5])

    def has(self, name: str) -> bool:
        return self._find(name) is not None

    def type_name(self, name: str) -> str:
        return _TYPES[self.field(name)]


def decode(word: int) -> Decoded:
    return Decoded(ir3_isa.ROOT, word)


# -- numeric helpers ------------------------------------------------------------------------------------
def _f(values: np.ndarray) -> np.ndarray:
    return values.view(np.float32)


def _u(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)


def _s(values: np.ndarray) -> np.ndarray:
    return values.view(np.int32)


def _bits(value: int) -> np.uint32:
    return np.uint32(value & 0xFFFFFFFF)


def _float_bits(value: float) -> int:
    return struct.unpack("<I", struct.pack("<f", value))[0]


def _cmp(condition: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    result = {"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b, "eq": a == b, "ne": a != b}
    return result[condition].astype(np.uint32)


def _u24(values: np.ndarray) -> np.ndarray:
    return (values & np.uint32(0xFFFFFF)).astype(np.uint64)


def _s24(values: np.ndarray) -> np.ndarray:
    low = (values & np.uint32(0xFFFFFF)).astype(np.int64)
    return np.where(low & 0x800000, low - (1 << 24), low)


_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "add.f": lambda a, b: _u(_f(a) + _f(b)),
    "mul.f": lambda a, b: _u(_f(a) * _f(b)),
    "min.f": lambda a, b: _u(np.fmin(_f(a), _f(b))),
    "max.f": lambda a, b: _u(np.fmax(_f(a), _f(b))),
    "add.u": lambda a, b: a + b,
    "add.s": lambda a, b: a + b,
    "sub.u": lambda a, b: a - b,
    "sub.s": lambda a, b: a - b,
    "min.u": np.minimum,
    "max.u": np.maximum,
    "min.s": lambda a, b: np.minimum(_s(a), _s(b)).view(np.uint32),
    "max.s": lambda a, b: np.maximum(_s(a), _s(b)).view(np.uint32),
    "and.b": np.bitwise_and,
    "or.b": np.bitwise_or,
    "xor.b": np.bitwise_xor,
    "shl.b": lambda a, b: a << (b & np.uint32(31)),
    "shr.b": lambda a, b: a >> (b & np.uint32(31)),
    "ashr.b": lambda a, b: (_s(a) >> (b & np.uint32(31)).astype(np.int32)).view(np.uint32),
    "mull.u": lambda a, b: a * b,
    "mul.u24": lambda a, b: (_u24(a) * _u24(b)).astype(np.uint32),
    "mul.s24": lambda a, b: (_s24(a) * _s24(b)).astype(np.uint32),
}
_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "absneg.f": lambda a: a,  # the source modifiers do the work
    "absneg.s": lambda a: a,
    "not.b": np.invert,
    "floor.f": lambda a: _u(np.floor(_f(a))),
    "ceil.f": lambda a: _u(np.ceil(_f(a))),
    "trunc.f": lambda a: _u(np.trunc(_f(a))),
    "rndne.f": lambda a: _u(np.rint(_f(a))),
}
_COMPARE = {"cmps.f": _f, "cmps.u": lambda a: a, "cmps.s": _s}
_FLOAT_OPERANDS = frozenset({"add.f", "mul.f", "min.f", "max.f", "absneg.f", "floor.f", "ceil.f",
                             "trunc.f", "rndne.f", "cmps.f", "mad.f32"})


class Workgroup:
    """The state of one work group while it runs (see the module docstring)."""

    def __init__(self, lanes: int, consts: np.ndarray, local_memory: int, footprint: int) -> None:
        self.lanes = lanes
        self.regs = np.zeros((REGISTER_IDS, lanes), dtype=np.uint32)
        self.consts = consts
        self.local = np.zeros(local_memory, dtype=np.uint8)
        self.footprint = footprint  # full registers r0..r(footprint - 1) are allocated
        self.pc = np.zeros(lanes, dtype=np.int64)
        # registers a load writes are not ready until an instruction flagged (sy) (global loads) or
        # (ss) (local loads) waits for them (Mesa ir3.h is_sy_producer / is_ss_producer)
        self.waiting = {"sy": np.zeros((REGISTER_IDS, lanes), dtype=bool),
                        "ss": np.zeros((REGISTER_IDS, lanes), dtype=bool)}
        self.active = np.ones(lanes, dtype=bool)
        self.alive = np.ones(lanes, dtype=bool)


class Interpreter:
    """Runs a kernel's words over work groups; memory through `read(address, size)` and
    `write(address, data)` (the GPU address space; faults propagate from them)."""

    def __init__(self, words: list[int], read: Callable[[int, int], bytes],
                 write: Callable[[int, bytes], None]) -> None:
        self.words = words
        self.read = read
        self.write = write
        self._decoded: dict[int, Decoded] = {}
        self.instructions_executed = 0

    def decoded(self, pc: int) -> Decoded:
        if not 0 <= pc < len(self.words):
            raise IR3Fault(f"the program counter left the kernel's {len(self.words)} instructions", pc)
        found = self._decoded.get(pc)
        if found is None:
            try:
                found = decode(self.words[pc])
            except IR3Fault as fault:
                raise IR3Fault(f"word {self.words[pc]:#018x}: {fault}", pc) from None
            self._decoded[pc] = found
        return found

    def run_group(self, group: Workgroup) -> None:
        steps = 0
        while group.alive.any():
            pc = int(group.pc[group.alive].min())
            active = group.alive & (group.pc == pc)
            self._step(group, self.decoded(pc), pc, active)
            steps += 1
            if steps > MAX_STEPS:
                raise IR3Fault(f"the work group ran {MAX_STEPS} instructions without ending (hang)", pc)
        self.instructions_executed += steps

    # -- registers ----------------------------------------------------------------------------------
    def _check_gpr(self, group: Workgroup, regid: int, pc: int) -> None:
        if regid < FIRST_SHARED and regid // COMPONENTS >= group.footprint:
            raise IR3Fault(f"r{regid // COMPONENTS}.{'xyzw'[regid % COMPONENTS]} is outside the "
                           f"register footprint (SP_CS_CTRL_REG0 FULLREGFOOTPRINT {group.footprint})", pc)
        if regid >= REGISTER_IDS:
            raise IR3Fault(f"register id {regid} does not exist", pc)

    def _gpr(self, group: Workgroup, regid: int, pc: int) -> np.ndarray:
        self._check_gpr(group, regid, pc)
        for flag, waiting in group.waiting.items():
            if (waiting[regid] & group.active).any():
                raise IR3Fault(f"r{regid // COMPONENTS}.{'xyzw'[regid % COMPONENTS]} is read before "
                               f"a ({flag}) waits for the load writing it (its value is not there yet "
                               "on the hardware)", pc)
        return group.regs[regid]

    def _const(self, group: Workgroup, index: int, pc: int) -> np.ndarray:
        if index >= len(group.consts):
            raise IR3Fault(f"c{index // COMPONENTS}.{'xyzw'[index % COMPONENTS]} is past the const "
                           f"file the dispatch loaded (HLSQ_CS_CNTL CONSTLEN {len(group.consts) // 4})", pc)
        return np.full(group.lanes, group.consts[index], dtype=np.uint32)

    def _set(self, group: Workgroup, regid: int, values: np.ndarray, active: np.ndarray, pc: int) -> None:
        if not P0_X <= regid < P0_X + COMPONENTS:
            self._check_gpr(group, regid, pc)
        group.regs[regid] = np.where(active, values.astype(np.uint32), group.regs[regid])

    def _multisrc(self, group: Workgroup, source: Decoded, offset: int, floating: bool,
                  pc: int) -> np.ndarray:
        kind = source.name
        if kind == "#multisrc-gpr":
            values = self._gpr(group, source.field("SRC") + offset, pc)
        elif kind == "#multisrc-const":
            values = self._const(group, source.field("SRC") + offset, pc)
        elif kind == "#mulitsrc-immed":
            if floating:
                raise IR3Fault(f"{kind}: an integer immediate to a float operation", pc)
            values = np.full(group.lanes, _bits(source.signed("IMMED")), dtype=np.uint32)
        elif kind == "#multisrc-immed-flut-full":
            text = _FLUT[source.field("IMMED")]
            number = _FLUT_SPECIAL.get(text)
            number = float(text.strip("()")) if number is None else number
            values = np.full(group.lanes, _float_bits(number), dtype=np.uint32)
        else:
            raise IR3Fault(f"source form {kind} (relative or half) is not modelled", pc)
        return _modifiers(values, source.field("ABSNEG") if source.has("ABSNEG") else 0, floating)

    # -- one instruction ------------------------------------------------------------------------------
    def _step(self, group: Workgroup, ins: Decoded, pc: int, active: np.ndarray) -> None:
        name = ins.name
        category = next(level for level in _chain(name) if level.startswith("#instruction-cat"))
        handler = _HANDLERS.get(category[:len("#instruction-catN")])
        if handler is None:
            raise IR3Fault(f"instruction {name} is not modelled by the mock's ir3 interpreter", pc)
        group.active = active
        for flag, waiting in group.waiting.items():
            if ins.has(flag.upper()) and ins.field(flag.upper()):
                waiting[:, active] = False
        next_pc = handler(self, group, ins, pc, active)
        group.pc = np.where(active, next_pc if next_pc is not None else pc + 1, group.pc)

    def _cat0(self, group, ins, pc, active):
        name = ins.name
        if name == "nop":
            return None
        if name == "end":
            group.alive &= ~active
            return None
        if name == "jump":
            return pc + ins.signed("IMMED")
        if name == "br":
            predicate = group.regs[P0_X + ins.field("COMP1")] != 0
            taken = predicate ^ bool(ins.field("INV1"))
            return np.where(taken, pc + ins.signed("IMMED"), pc + 1)
        raise IR3Fault(f"instruction {name} is not modelled by the mock's ir3 interpreter", pc)

    def _cat1(self, group, ins, pc, active):
        name = ins.name
        if name not in ("mov-immed", "mov-const", "mov-gpr"):
            raise IR3Fault(f"instruction {name} is not modelled by the mock's ir3 interpreter", pc)
        source_type = ins.type_name("SRC_TYPE")
        destination_type = ins.type_name("DST_TYPE")
        if source_type not in WIDE_TYPES or destination_type not in WIDE_TYPES:
            raise IR3Fault(f"mov/cov {source_type} -> {destination_type}: only 32-bit types are "
                           "modelled", pc)
        if ins.field("DST_REL"):
            raise IR3Fault("mov to a relative destination (r<a0.x>) is not modelled", pc)
        destination = ins.field("DST")
        if destination == A0_X:
            raise IR3Fault("mova (a0.x) is not modelled", pc)
        for index in range(ins.field("REPEAT") + 1):
            step = index if ins.field("SRC_R") else 0
            if name == "mov-immed":
                values = np.full(group.lanes, ins.field("SRC"), dtype=np.uint32)
            elif name == "mov-const":
                values = self._const(group, ins.field("SRC") + step, pc)
            else:
                values = self._gpr(group, ins.field("SRC") + step, pc)
            self._set(group, destination + index, _convert(values, source_type, destination_type),
                      active, pc)
        return None

    def _cat2(self, group, ins, pc, active):
        name = ins.name
        if not ins.field("FULL") or ins.field("DST_HALF"):
            raise IR3Fault(f"{name} on half registers is not modelled", pc)
        floating = name in _FLOAT_OPERANDS
        single = name in _UNARY
        if name not in _BINARY and not single and name not in _COMPARE:
            raise IR3Fault(f"instruction {name} is not modelled by the mock's ir3 interpreter", pc)
        repeat = ins.field("REPEAT")
        for index in range(repeat + 1):
            first = self._multisrc(group, ins.sub("SRC1"),
                                   index if repeat and ins.field("SRC1_R") else 0, floating, pc)
            if single:
                result = _UNARY[name](first)
            else:
                second = self._multisrc(group, ins.sub("SRC2"),
                                        index if repeat and ins.field("SRC2_R") else 0, floating, pc)
                if name in _COMPARE:
                    view = _COMPARE[name]
                    result = _cmp(_CONDITIONS[ins.field("COND")], view(first), view(second))
                else:
                    with np.errstate(all="ignore"):
                        result = _BINARY[name](first, second)
            self._set(group, ins.field("DST") + index, result, active, pc)
        return None

    def _cat3_source(self, group, ins, name: str, offset: int, floating: bool, pc: int) -> np.ndarray:
        if name == "SRC2":
            values = self._gpr(group, ins.field("SRC2") + offset, pc)
        else:
            source = ins.sub(name)
            if source.name == "#cat3-src-gpr":
                values = self._gpr(group, source.field("SRC") + offset, pc)
            elif source.name == "#cat3-src-const-or-immed" and not ins.field("IMMED_ENCODING"):
                values = self._const(group, source.field("CONST") * COMPONENTS
                                     + source.field("SWIZ") + offset, pc)
            else:
                raise IR3Fault(f"cat3 source form {source.name} is not modelled", pc)
        return _modifiers(values, 1 if ins.field(f"{name}_NEG") else 0, floating)

    def _cat3(self, group, ins, pc, active):
        name = ins.name
        if name not in ("mad.f32", "mad.u24", "mad.s24", "sel.b32", "sel.s32"):
            raise IR3Fault(f"instruction {name} is not modelled by the mock's ir3 interpreter", pc)
        floating = name == "mad.f32"
        repeat = ins.field("REPEAT")
        for index in range(repeat + 1):
            a, b, c = (self._cat3_source(group, ins, source, index if repeat and ins.field(f"{source}_R")
                                         else 0, floating, pc) for source in ("SRC1", "SRC2", "SRC3"))
            if name == "mad.f32":
                # one rounding of the exact product plus the addend (a float64 holds the product of
                # two f32 exactly)
                with np.errstate(all="ignore"):
                    wide = _f(a).astype(np.float64) * _f(b).astype(np.float64) + _f(c).astype(np.float64)
                    result = _u(wide.astype(np.float32))
            elif name == "mad.u24":
                result = (_u24(a) * _u24(b) + c.astype(np.uint64)).astype(np.uint32)
            elif name == "mad.s24":
                result = (_s24(a) * _s24(b) + _s(c).astype(np.int64)).astype(np.uint32)
            else:
                # Mesa ir3 (nir b32csel -> sel.b32): src2 is the condition, nonzero picks src1
                result = np.where(b != 0, a, c)
            self._set(group, ins.field("DST") + index, result, active, pc)
        return None

    def _pair(self, group, source: Decoded, pc: int) -> np.ndarray:
        """A 64-bit address from a register pair (or const pair) as uint64 per lane."""
        regid = source.value
        if source.field("SRC_CONST"):
            low, high = self._const(group, regid, pc), self._const(group, regid + 1, pc)
        else:
            low, high = self._gpr(group, regid, pc), self._gpr(group, regid + 1, pc)
        return low.astype(np.uint64) | (high.astype(np.uint64) << np.uint64(32))

    def _cat6(self, group, ins, pc, active):
        name = ins.name
        kind = ins.type_name("TYPE")
        if kind not in WIDE_TYPES:
            raise IR3Fault(f"{name}.{kind}: only 32-bit types are modelled", pc)
        size = ins.field("SIZE")
        if name in ("ldg", "ldg.a", "stg", "stg.a"):
            base = self._pair(group, ins.sub("SRC1"), pc)
            if name.endswith(".a"):
                index = self._gpr(group, ins.field("SRC2"), pc).astype(np.uint64)
                shift = ins.field("SRC2_ADD_DWORD_SHIFT")
                offset = np.uint64(ins.field("OFF"))
                if shift:
                    addresses = base + (index << np.uint64(shift + 2)) + (offset << np.uint64(2))
                else:
                    addresses = base + ((index + offset) << np.uint64(2))
            else:
                addresses = base + np.uint64(ins.signed("OFF") & 0xFFFFFFFFFFFFFFFF)
            if name.startswith("ldg"):
                self._load_global(group, ins.field("DST"), addresses, size, active, pc)
            else:
                self._store_global(group, ins.field("SRC3"), addresses, size, active, pc)
            return None
        if name == "ldl":
            addresses = self._gpr(group, ins.field("SRC"), pc).astype(np.int64) + ins.signed("OFF")
            for component in range(size):
                values = self._local(group, addresses + 4 * component, active, pc)
                self._set(group, ins.field("DST") + component, values, active, pc)
                group.waiting["ss"][ins.field("DST") + component, active] = True
            return None
        if name == "stl":
            offset = ins.signed("OFF")
            addresses = self._gpr(group, ins.field("DST"), pc).astype(np.int64) + offset
            for component in range(size):
                values = self._gpr(group, ins.field("SRC") + component, pc)
                self._local(group, addresses + 4 * component, active, pc, values)
            return None
        raise IR3Fault(f"instruction {name} is not modelled by the mock's ir3 interpreter", pc)

    def _load_global(self, group, destination: int, addresses, size: int, active, pc: int) -> None:
        lanes = np.flatnonzero(active)
        data = np.zeros((size, group.lanes), dtype=np.uint32)
        for lane in lanes:
            raw = self.read(int(addresses[lane]), 4 * size)
            data[:, lane] = np.frombuffer(raw, dtype="<u4")
        for component in range(size):
            self._set(group, destination + component, data[component], active, pc)
            group.waiting["sy"][destination + component, active] = True

    def _store_global(self, group, source: int, addresses, size: int, active, pc: int) -> None:
        values = np.stack([self._gpr(group, source + component, pc) for component in range(size)])
        for lane in np.flatnonzero(active):
            self.write(int(addresses[lane]), values[:, lane].astype("<u4").tobytes())

    def _local(self, group, addresses, active, pc: int, values=None):
        lanes = np.flatnonzero(active)
        chosen = addresses[lanes]
        if len(lanes) and (chosen.min() < 0 or chosen.max() + 4 > len(group.local) or (chosen % 4).any()):
            raise IR3Fault(f"local memory access at byte {int(chosen.min())}..{int(chosen.max()) + 3} "
                           f"outside the group's {len(group.local)} bytes (SP_CS_CTRL_REG1 "
                           "SHARED_SIZE) or not dword aligned", pc)
        words = group.local.view(np.uint32)
        if values is None:
            result = np.zeros(group.lanes, dtype=np.uint32)
            result[lanes] = words[chosen // 4]
            return result
        for lane in lanes:  # in lane order: the last writer of a word wins
            words[addresses[lane] // 4] = values[lane]
        return None

    def _cat7(self, group, ins, pc, active):
        if ins.name == "bar":
            return None  # the lowest-counter schedule already holds every lane here
        raise IR3Fault(f"instruction {ins.name} is not modelled by the mock's ir3 interpreter", pc)


_HANDLERS = {
    "#instruction-cat0": Interpreter._cat0,
    "#instruction-cat1": Interpreter._cat1,
    "#instruction-cat2": Interpreter._cat2,
    "#instruction-cat3": Interpreter._cat3,
    "#instruction-cat6": Interpreter._cat6,
    "#instruction-cat7": Interpreter._cat7,
}


def _modifiers(values: np.ndarray, absneg: int, floating: bool) -> np.ndarray:
    """`(neg)`, `(abs)`, `(absneg)` of a source (the #absneg enum: bit 0 neg, bit 1 abs)."""
    if not absneg:
        return values
    if floating:
        result = _f(values.copy())
        if absneg & 2:
            result = np.abs(result)
        if absneg & 1:
            result = -result
        return _u(result)
    signed = _s(values.copy())
    if absneg & 2:
        signed = np.abs(signed)
    if absneg & 1:
        signed = -signed
    return signed.view(np.uint32)


def _convert(values: np.ndarray, source: str, destination: str) -> np.ndarray:
    """cov between 32-bit types: float to integer rounds toward zero and saturates."""
    if source == destination or {source, destination} == {"u32", "s32"}:
        return values
    with np.errstate(all="ignore"):
        if source == "f32":
            floats = np.nan_to_num(_f(values).astype(np.float64), nan=0.0)
            if destination == "u32":
                return np.clip(np.trunc(floats), 0, 0xFFFFFFFF).astype(np.uint32)
            return np.clip(np.trunc(floats), -(1 << 31), (1 << 31) - 1).astype(np.int32).view(np.uint32)
        numbers = _s(values) if source == "s32" else values
        return _u(numbers.astype(np.float32))


def run(words: list[int], *, groups: tuple[int, int, int], local_size: tuple[int, int, int],
        consts: list[int], local_memory: int, footprint: int, local_id_regid: int | None,
        workgroup_id_regid: int | None, read: Callable[[int, int], bytes],
        write: Callable[[int, bytes], None]) -> Interpreter:
    """Run the kernel over the grid, group after group (x fastest); returns the interpreter (its
    `instructions_executed` counts work-group instructions)."""
    interpreter = Interpreter(words, read, write)
    x, y, z = local_size
    lanes = x * y * z
    lane = np.arange(lanes, dtype=np.uint32)
    local_ids = (lane % x, (lane // x) % y, lane // (x * y))
    const_file = np.asarray(consts, dtype=np.uint32)
    for gz in range(groups[2]):
        for gy in range(groups[1]):
            for gx in range(groups[0]):
                group = Workgroup(lanes, const_file, local_memory, footprint)
                if local_id_regid is not None:
                    for component, values in enumerate(local_ids):
                        group.regs[local_id_regid + component] = values
                if workgroup_id_regid is not None:
                    for component, value in enumerate((gx, gy, gz)):
                        group.regs[workgroup_id_regid + component] = value
                interpreter.run_group(group)
    return interpreter
