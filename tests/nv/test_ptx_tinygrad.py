"""Kernels from tinygrad's PTX renderer run through the mock's PTX interpreter against numpy.

tinygrad (the pinned version of the `test` extra) schedules each computation on its NULL device with
the PTX renderer for sm_80 (`DEV=MOCK+NULL:PTX:sm_80`: the MOCK interface makes the renderer's
compiler a plain text substitution of the PTX version and target, so no CUDA library is needed);
`tinygrad.codegen.to_program` lowers each kernel to PTX text. This is PTX written by another
compiler than nvcc (its own register naming, loops closed by backward branches, vector loads), run
as the mock GPU would run it. Buffers and their offsets follow tests/compute/test_tinygrad.py.
"""
from __future__ import annotations

import numpy as np
import pytest

tinygrad = pytest.importorskip("tinygrad", reason="tinygrad is not installed (pip install -e '.[test]')")

from tinygrad import Device as TinygradDevice  # noqa: E402
from tinygrad import Tensor, dtypes  # noqa: E402
from tinygrad.codegen import to_program  # noqa: E402
from tinygrad.helpers import Context  # noqa: E402
from tinygrad.uop.ops import Ops, UOp  # noqa: E402

from mockgpu.nv.ptx import FlatMemory, Kernel  # noqa: E402

# tinygrad/helpers.py Target.parse: "interface+device:renderer:arch"
TINYGRAD_TARGET = "MOCK+NULL:PTX:sm_80"
BASE = 0x4000_0000
ALIGN = 256
EPS32 = float(np.finfo(np.float32).eps) / 2


def _base(uop: UOp) -> UOp:
    while uop.op is not Ops.BUFFER:
        uop = uop.src[0]
    return uop


def _bytes(buffer: UOp) -> int:
    return int(buffer.src[0].arg) * buffer.dtype.itemsize


def _run(build, data: list[np.ndarray]) -> list[np.ndarray]:
    """Schedule build() -> (inputs, outputs), run every kernel's PTX in order, return the outputs."""
    with Context(DEV=TINYGRAD_TARGET, CACHELEVEL=0):
        inputs, outputs = build()
        linear = Tensor.schedule_linear(*outputs)
        renderer = TinygradDevice["NULL"].renderer
        launches = []
        for call in linear.src:
            program = to_program(call.src[0], renderer)
            info = program.arg
            ptx = renderer.compiler.compile(program.src[2].arg).decode()
            views = []
            for argument in call.src[1:]:
                base, offset = argument.contiguous_view()
                views.append((base.base, offset * base.dtype.itemsize))
            grid, block = info.launch_dims({})
            launches.append((Kernel.from_ptx(ptx, info.function_name), tuple(grid),
                             tuple(block or (1,) * len(grid)), [views[i] for i in info.globals]))
    addresses: dict[UOp, int] = {}
    end = BASE
    for _, _, _, args in launches:
        for buffer, _ in args:
            if buffer not in addresses:
                addresses[buffer] = end
                end += -(-_bytes(buffer) // ALIGN) * ALIGN
    for buffer in [_base(t.uop) for t in inputs + outputs]:
        if buffer not in addresses:
            addresses[buffer] = end
            end += -(-_bytes(buffer) // ALIGN) * ALIGN
    memory = FlatMemory(BASE, end - BASE)
    for tensor, array in zip(inputs, data):
        memory.write(addresses[_base(tensor.uop)], np.ascontiguousarray(array).tobytes())
    for kernel, grid, block, args in launches:
        params = kernel.pack_params(*(addresses[buffer] + offset for buffer, offset in args))
        kernel.run(grid, block, params, memory)
    return [np.frombuffer(memory.read(addresses[_base(t.uop)], _bytes(_base(t.uop))), dtype=np.float32)
            for t in outputs]


def test_elementwise() -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal(1000).astype(np.float32)
    b = rng.standard_normal(1000).astype(np.float32)

    def build():
        x = Tensor.empty(1000, dtype=dtypes.float32)
        y = Tensor.empty(1000, dtype=dtypes.float32)
        return [x, y], [(x * y + x).maximum(y)]
    (out,) = _run(build, [a, b])
    # tinygrad fuses x * y + x into one fma.rn.f32: a single rounding of the exact value
    fused = (a.astype(np.float64) * b + a).astype(np.float32)
    np.testing.assert_array_equal(out, np.maximum(fused, b))


def test_sum_and_exp2() -> None:
    rng = np.random.default_rng(2)
    a = rng.standard_normal(4096).astype(np.float32)

    def build():
        x = Tensor.empty(4096, dtype=dtypes.float32)
        return [x], [(x * 0.5).exp2().sum()]
    (out,) = _run(build, [a])
    terms = np.exp2(a.astype(np.float64) * 0.5)
    assert abs(out[0] - terms.sum()) <= 4096 * 4 * EPS32 * terms.sum()


def test_matmul() -> None:
    rng = np.random.default_rng(3)
    a = rng.standard_normal((33, 47)).astype(np.float32)
    b = rng.standard_normal((47, 21)).astype(np.float32)

    def build():
        x = Tensor.empty(33, 47, dtype=dtypes.float32)
        y = Tensor.empty(47, 21, dtype=dtypes.float32)
        return [x, y], [x @ y]
    (out,) = _run(build, [a, b])
    exact = a.astype(np.float64) @ b
    bound = 47 * EPS32 * (np.abs(a).astype(np.float64) @ np.abs(b)) * 2
    assert (np.abs(out.reshape(33, 21) - exact) <= bound + 1e-30).all()


def test_softmax_chain() -> None:
    rng = np.random.default_rng(4)
    a = rng.standard_normal((16, 100)).astype(np.float32)

    def build():
        x = Tensor.empty(16, 100, dtype=dtypes.float32)
        return [x], [x.softmax(axis=1)]
    (out,) = _run(build, [a])
    shifted = a.astype(np.float64) - a.max(axis=1, keepdims=True)
    expected = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out.reshape(16, 100), expected, rtol=1e-5, atol=1e-7)


def test_half_precision() -> None:
    rng = np.random.default_rng(5)
    a = rng.standard_normal(777).astype(np.float32)

    def build():
        x = Tensor.empty(777, dtype=dtypes.float32)
        half = x.cast(dtypes.half)
        return [x], [(half * half + half).maximum(half).cast(dtypes.float32)]
    (out,) = _run(build, [a])
    # tinygrad computes h * h + h as one fma.rn.f32 on the halves widened to float, rounds the
    # result to half (cvt.rn.f16.f32) and takes max.f16 with h (.f16 registers and instructions)
    h = a.astype(np.float16)
    fused = (h.astype(np.float64) * h + h).astype(np.float32).astype(np.float16)
    np.testing.assert_array_equal(out, np.maximum(fused, h).astype(np.float32))
