"""The PTX interpreter's arithmetic against references written from the PTX ISA's definitions
(chapter 9.7: integer, floating-point, comparison, logic and shift, conversion instructions), on
random operands from hypothesis: one instruction per kernel, one operand triple per thread."""
from __future__ import annotations

import math
import struct
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mockgpu.nv.ptx import FlatMemory, Kernel

BASE = 0x2000_0000
LANES = 32
SLOT = 0x1000
_REG = {"u32": "%w", "s32": "%w", "b32": "%w", "u64": "%x", "s64": "%x", "b64": "%x",
        "f16": "%h", "f32": "%f", "f64": "%fd", "pred": "%p"}
_NP = {"u32": np.uint32, "s32": np.int32, "b32": np.uint32, "u64": np.uint64, "s64": np.int64,
       "b64": np.uint64, "f16": np.float16, "f32": np.float32, "f64": np.float64}


def _kernel(instruction: str, dst: str, sources: tuple[str, ...]) -> Kernel:
    loads = []
    for index, ptx_type in enumerate(sources):
        size = np.dtype(_NP[ptx_type]).itemsize
        loads.append(f"mul.wide.u32 %rd{10 + index}, %r0, {size};\n"
                     f"add.s64 %rd{10 + index}, %rd{10 + index}, %rd{2 + index};\n"
                     f"ld.global.{ptx_type} {_REG[ptx_type]}{1 + index}, [%rd{10 + index}];")
    operands = ", ".join(f"{_REG[t]}{1 + i}" for i, t in enumerate(sources))
    size = np.dtype(_NP[dst]).itemsize
    text = f"""
.version 8.0
.target sm_80
.address_size 64
.visible .entry k(.param .u64 out, .param .u64 a, .param .u64 b, .param .u64 c)
{{
.reg .b32 %r<8>; .reg .b64 %rd<20>; .reg .b32 %w<8>; .reg .b64 %x<8>;
.reg .f16 %h<8>; .reg .f32 %f<8>; .reg .f64 %fd<8>; .reg .pred %p<4>;
ld.param.u64 %rd1, [out]; ld.param.u64 %rd2, [a]; ld.param.u64 %rd3, [b]; ld.param.u64 %rd4, [c];
mov.u32 %r0, %tid.x;
{chr(10).join(loads)}
{instruction} {_REG[dst]}7, {operands};
mul.wide.u32 %rd15, %r0, {size};
add.s64 %rd15, %rd15, %rd1;
st.global.{dst} [%rd15], {_REG[dst]}7;
ret;
}}
"""
    return Kernel.from_ptx(text, "k")


def _run(instruction: str, dst: str, sources: tuple[str, ...], *columns: list) -> np.ndarray:
    kernel = _kernel(instruction, dst, sources)
    memory = FlatMemory(BASE, 4 * SLOT)
    addresses = []
    for index, (ptx_type, values) in enumerate(zip(sources, columns)):
        array = np.array(values, dtype=object)
        if ptx_type in ("f16", "f32", "f64"):
            data = np.array(values, dtype=_NP[ptx_type])
        else:
            bits = np.dtype(_NP[ptx_type]).itemsize * 8
            data = np.array([int(v) & ((1 << bits) - 1) for v in array],
                            dtype=np.uint64).astype(_NP[ptx_type.replace("s", "u").replace("b", "u")])
        memory.write(BASE + (index + 1) * SLOT, data.tobytes())
        addresses.append(BASE + (index + 1) * SLOT)
    addresses += [BASE + 3 * SLOT] * (3 - len(addresses))
    kernel.run((1,), (LANES,), kernel.pack_params(BASE, *addresses), memory)
    size = np.dtype(_NP[dst]).itemsize
    return np.frombuffer(memory.read(BASE, LANES * size), dtype=_NP[dst])


def _wrap(value: int, bits: int, signed: bool) -> int:
    value &= (1 << bits) - 1
    if signed and value >= 1 << (bits - 1):
        value -= 1 << bits
    return value


def _tdiv(a: int, b: int) -> int:
    quotient = abs(a) // abs(b)
    return quotient if (a < 0) == (b < 0) else -quotient


_INT = {"u32": (32, False), "s32": (32, True), "u64": (64, False), "s64": (64, True)}


def _ints(ptx_type: str) -> st.SearchStrategy[list[int]]:
    bits, signed = _INT[ptx_type]
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    special = st.sampled_from([0, 1, 2, 31, 32, 63, 64, low, high, -1 if signed else high - 1])
    return st.lists(st.one_of(st.integers(low, high), special), min_size=LANES, max_size=LANES)


_BINARY = {
    "add": lambda a, b, bits: a + b,
    "sub": lambda a, b, bits: a - b,
    "mul.lo": lambda a, b, bits: a * b,
    "mul.hi": lambda a, b, bits: (a * b) >> bits,
    "min": lambda a, b, bits: min(a, b),
    "max": lambda a, b, bits: max(a, b),
}


@pytest.mark.parametrize("ptx_type", sorted(_INT))
@pytest.mark.parametrize("op", sorted(_BINARY))
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_integer_binary(op: str, ptx_type: str, data: st.DataObject) -> None:
    bits, signed = _INT[ptx_type]
    a = data.draw(_ints(ptx_type))
    b = data.draw(_ints(ptx_type))
    out = _run(f"{op}.{ptx_type}", ptx_type, (ptx_type, ptx_type), a, b)
    expected = [_wrap(_BINARY[op](x, y, bits), bits, signed) for x, y in zip(a, b)]
    assert [int(v) for v in out] == expected


@pytest.mark.parametrize("ptx_type", sorted(_INT))
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_integer_division(ptx_type: str, data: st.DataObject) -> None:
    bits, signed = _INT[ptx_type]
    a = data.draw(_ints(ptx_type))
    b = data.draw(_ints(ptx_type))
    quotient = _run(f"div.{ptx_type}", ptx_type, (ptx_type, ptx_type), a, b)
    remainder = _run(f"rem.{ptx_type}", ptx_type, (ptx_type, ptx_type), a, b)
    for x, y, q, r in zip(a, b, quotient, remainder):
        if y == 0:
            assert _wrap(int(q), bits, False) == (1 << bits) - 1 and int(r) == x
            continue
        assert int(q) == _wrap(_tdiv(x, y), bits, signed)
        assert int(r) == _wrap(x - _tdiv(x, y) * y, bits, signed)


@pytest.mark.parametrize("ptx_type", ["b32", "s32", "u32", "b64", "s64"])
@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_shifts_clamp_the_amount(ptx_type: str, data: st.DataObject) -> None:
    bits = 32 if "32" in ptx_type else 64
    signed = ptx_type.startswith("s")
    value_type = ptx_type.replace("b", "u")
    a = data.draw(_ints(value_type if not signed else ptx_type))
    amounts = data.draw(st.lists(st.integers(0, 200), min_size=LANES, max_size=LANES))
    right = _run(f"shr.{ptx_type}", ptx_type, (ptx_type, "u32"), a, amounts)
    expected = [_wrap(x >> min(n, bits), bits, signed) if signed else
                (x & ((1 << bits) - 1)) >> n if n < bits else 0 for x, n in zip(a, amounts)]
    assert [_wrap(int(v), bits, signed) for v in right] == expected
    if not signed:
        left = _run(f"shl.{ptx_type}", ptx_type, (ptx_type, "u32"), a, amounts)
        assert [int(v) for v in left] == [(x << n) & ((1 << bits) - 1) if n < bits else 0
                                          for x, n in zip(a, amounts)]


@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_wide_and_mad(data: st.DataObject) -> None:
    a = data.draw(_ints("s32"))
    b = data.draw(_ints("s32"))
    c = data.draw(_ints("s32"))
    wide = _run("mul.wide.s32", "s64", ("s32", "s32"), a, b)
    assert [int(v) for v in wide] == [x * y for x, y in zip(a, b)]
    mad = _run("mad.lo.s32", "s32", ("s32", "s32", "s32"), a, b, c)
    assert [int(v) for v in mad] == [_wrap(x * y + z, 32, True) for x, y, z in zip(a, b, c)]
    unsigned = [x & 0xFFFFFFFF for x in a]
    wide_u = _run("mul.wide.u32", "u64", ("u32", "u32"), unsigned, unsigned)
    assert [int(v) for v in wide_u] == [x * x for x in unsigned]


def _f32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


_floats = st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False, min_value=-(2.0**100),
                             max_value=2.0**100), min_size=LANES, max_size=LANES)


@settings(max_examples=25, deadline=None)
@given(a=_floats, b=_floats, c=_floats)
def test_float_arithmetic_rounds_to_nearest(a: list[float], b: list[float], c: list[float]) -> None:
    added = _run("add.rn.f32", "f32", ("f32", "f32"), a, b)
    multiplied = _run("mul.rn.f32", "f32", ("f32", "f32"), a, b)
    fused = _run("fma.rn.f32", "f32", ("f32", "f32", "f32"), a, b, c)
    for index in range(LANES):
        x, y, z = a[index], b[index], c[index]
        assert added[index] == np.float32(_f32(x + y)) or math.isinf(x + y)
        with np.errstate(over="ignore"):
            assert multiplied[index] == np.float32(x) * np.float32(y)
        exact = float(Fraction(x) * Fraction(y) + Fraction(z))
        if math.isfinite(exact) and abs(exact) < 3e38:
            assert float(fused[index]) == pytest.approx(_f32(exact), rel=2**-23, abs=1e-45)


@settings(max_examples=20, deadline=None)
@given(a=st.lists(st.floats(width=32), min_size=LANES, max_size=LANES))
def test_float_to_int_conversions_saturate(a: list[float]) -> None:
    truncated = _run("cvt.rzi.s32.f32", "s32", ("f32",), a)
    nearest = _run("cvt.rni.u32.f32", "u32", ("f32",), a)
    for value, t, n in zip(a, truncated, nearest):
        if math.isnan(value):
            assert int(t) == 0 and int(n) == 0
            continue
        assert int(t) == max(-2**31, min(2**31 - 1, math.trunc(value) if math.isfinite(value)
                                         else (2**31 - 1 if value > 0 else -2**31)))
        rounded = round(value) if math.isfinite(value) else (2**32 - 1 if value > 0 else 0)
        assert int(n) == max(0, min(2**32 - 1, rounded))


@settings(max_examples=20, deadline=None)
@given(a=_ints("s32"))
def test_integer_conversions_extend_and_truncate(a: list[int]) -> None:
    signed = _run("cvt.s64.s32", "s64", ("s32",), a)
    assert [int(v) for v in signed] == a
    unsigned = _run("cvt.u64.u32", "u64", ("u32",), [x & 0xFFFFFFFF for x in a])
    assert [int(v) for v in unsigned] == [x & 0xFFFFFFFF for x in a]
    floats = _run("cvt.rn.f32.s32", "f32", ("s32",), a)
    assert [float(v) for v in floats] == [_f32(float(x)) for x in a]
    narrowed = _run("cvt.u32.u64", "u32", ("u64",), [x & (2**64 - 1) for x in signed.tolist()])
    assert [int(v) for v in narrowed] == [x & 0xFFFFFFFF for x in a]


@settings(max_examples=20, deadline=None)
@given(a=st.lists(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e100, max_value=1e100),
                  min_size=LANES, max_size=LANES),
       b=st.lists(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e100, max_value=1e100),
                  min_size=LANES, max_size=LANES))
def test_double_fma_rounds_once(a: list[float], b: list[float]) -> None:
    c = [-(x * y) for x, y in zip(a, b)]
    fused = _run("fma.rn.f64", "f64", ("f64", "f64", "f64"), a, b, c)
    # x * y - round(x * y) is the rounding error of the product: zero only for an exact product.
    assert [float(v) for v in fused] == [float(Fraction(x) * Fraction(y) + Fraction(z))
                                         for x, y, z in zip(a, b, c)]


_half_bits = st.lists(st.integers(0, 0xFFFF), min_size=LANES, max_size=LANES)


def _halves(bits: list[int]) -> list[float]:
    """Finite halves from bit patterns (infinities and NaNs become 1.0)."""
    values = np.array(bits, dtype=np.uint16).view(np.float16).astype(np.float64)
    return [float(v) if math.isfinite(v) else 1.0 for v in values]


@settings(max_examples=20, deadline=None)
@given(a_bits=_half_bits, b_bits=_half_bits, c_bits=_half_bits)
def test_half_fma_and_conversions(a_bits: list[int], b_bits: list[int], c_bits: list[int]) -> None:
    a, b, c = _halves(a_bits), _halves(b_bits), _halves(c_bits)
    fused = _run("fma.rn.f16", "f16", ("f16", "f16", "f16"), a, b, c)
    # A product and sum of halves is exact in double precision: one rounding to half.
    with np.errstate(over="ignore"):
        expected = np.array([float(Fraction(x) * Fraction(y) + Fraction(z))
                             for x, y, z in zip(a, b, c)]).astype(np.float16)
    np.testing.assert_array_equal(fused, expected)
    widened = _run("cvt.f32.f16", "f32", ("f16",), a)
    assert [float(v) for v in widened] == a
