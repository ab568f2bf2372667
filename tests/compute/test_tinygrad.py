"""Kernels produced by tinygrad's UOp compiler, run on Device("mock:0") against numpy.

tinygrad (the pinned version of the `test` extra) builds each computation on its NULL device, which
has no runtime; `Tensor.schedule_linear` gives the schedule: one CALL per kernel, its AST and its
buffer arguments in the kernel's order. `tinygrad.codegen.to_program(ast, renderer)` with the NULL
device's OpenCL renderer (`DEV=NULL:OPENCL`) lowers each AST to OpenCL C and a ProgramInfo (launch
dimensions, which call arguments are the kernel's buffers). compute.amd.opencl_source compiles the
source with the shims for clang-16 -nogpulib; the mock's RDNA3 interpreter runs the code objects.

Intermediate buffers are what tinygrad's memory planner made them: byte ranges of one arena buffer
(BITCAST(SHRINK(BUFFER, offset, size))), resolved with `UOp.contiguous_view()` into a base buffer
and an element offset, so a chain of kernels (softmax) passes its intermediates at the addresses
tinygrad's schedule gives them.

Tolerances: a float32 sum of n terms in any order is within n * eps * sum(|terms|) of the exact sum
(Higham, "Accuracy and Stability of Numerical Algorithms", 4.2); the references are computed in
float64, so that bound (with eps = 2^-24) holds for the sums and dot products here.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

tinygrad = pytest.importorskip("tinygrad", reason="tinygrad is not installed (pip install -e '.[test]')")

from tinygrad import Device as TinygradDevice  # noqa: E402
from tinygrad import Tensor, dtypes  # noqa: E402
from tinygrad.codegen import to_program  # noqa: E402
from tinygrad.helpers import Context  # noqa: E402
from tinygrad.uop.ops import Ops, UOp  # noqa: E402

from compute.amd import compiler, opencl_source  # noqa: E402
from compute.device import Device  # noqa: E402
from hal.errors import BackendUnavailable, DeviceTimeout  # noqa: E402

try:
    compiler.find_toolchain()
except BackendUnavailable as missing:
    pytest.skip(f"clang-16/ld.lld-16 are needed to compile tinygrad's OpenCL C: {missing}",
                allow_module_level=True)

# tinygrad's NULL device (tinygrad/runtime/ops_null.py: no allocation, no runtime) with its
# OpenCL renderer selected by name (tinygrad/device.py Compiled._select_renderer)
TINYGRAD_TARGET = "NULL:OPENCL"
EPS32 = float(np.finfo(np.float32).eps) / 2  # unit roundoff of float32, 2^-24


@dataclasses.dataclass
class Kernel:
    """One kernel of a tinygrad schedule, ready to compile and launch."""

    name: str
    source: str
    groups: tuple[int, ...]  # ProgramInfo.global_size: work-groups per axis
    local: tuple[int, ...]
    args: list[tuple[UOp, int]]  # (base BUFFER, byte offset) per kernel parameter, in order


def base_buffer(tensor: Tensor) -> UOp:
    """The BUFFER uop a realized (scheduled) tensor or an empty input stands on."""
    uop = tensor.uop
    while uop.op is not Ops.BUFFER:
        uop = uop.src[0]
    return uop


def buffer_bytes(buffer: UOp) -> int:
    return int(buffer.src[0].arg) * buffer.dtype.itemsize


def schedule(build) -> tuple[list[UOp], list[UOp], list[Kernel]]:
    """Run `build()` -> (inputs, outputs) under tinygrad's NULL device; the input and output
    buffers and the kernels that compute the outputs, in schedule order."""
    # CACHELEVEL 0: tinygrad keeps no disk cache (~/.cache/tinygrad) for these runs
    with Context(DEV=TINYGRAD_TARGET, CACHELEVEL=0):
        inputs, outputs = build()
        linear = Tensor.schedule_linear(*outputs)
        renderer = TinygradDevice["NULL"].renderer
        kernels = []
        for call in linear.src:
            ast = call.src[0]
            assert call.op is Ops.CALL and ast.op is Ops.SINK, f"not a kernel: {call.op} {ast.op}"
            program = to_program(ast, renderer)
            info = program.arg
            assert not info.vars, f"{info.name}: symbolic shapes are not used here"
            source = program.src[2].arg
            views = []
            for argument in call.src[1:]:
                base, offset = argument.contiguous_view()
                views.append((base.base, offset * base.dtype.itemsize))
            groups, local = info.launch_dims({})
            if local is None:  # a kernel indexed by get_global_id only: global_size counts items
                local = (1,) * len(groups)
            (name,) = opencl_source.kernel_names(source)
            kernels.append(Kernel(name, source, tuple(groups), tuple(local),
                                  [views[i] for i in info.globals]))
        return ([base_buffer(t) for t in inputs], [base_buffer(t) for t in outputs], kernels)


def run(dev, build, data: list[np.ndarray], caplog=None) -> tuple[list[np.ndarray], list[Kernel]]:
    """Schedule `build`, place `data` in its input buffers, run every kernel on `dev` in
    schedule order and read the outputs back (float32, flat). A kernel that does not complete
    fails the test with the mock MEC's reason for stopping the queue (an instruction the
    interpreter does not implement, a fault) and leaves the device usable."""
    inputs, outputs, kernels = schedule(build)
    buffers = {}
    for kernel in kernels:
        for buffer, _ in kernel.args:
            if buffer not in buffers:
                buffers[buffer] = dev.allocate(buffer_bytes(buffer))
    try:
        for buffer, array in zip(inputs, data):
            assert array.nbytes == buffer_bytes(buffer)
            buffers[buffer].copyin(array)
        for kernel in kernels:
            launch_kernel(dev, kernel, buffers, caplog)
        results = [np.frombuffer(buffers[b].copyout(buffer_bytes(b)), np.float32) for b in outputs]
    finally:
        for buffer in buffers.values():
            buffer.free()
    return results, kernels


def launch_kernel(dev, kernel: Kernel, buffers: dict, caplog) -> None:
    program = dev.load(opencl_source.compile_opencl(kernel.source), kernel.name)
    addresses = [buffers[buffer].gpu_address + offset for buffer, offset in kernel.args]
    try:
        program(*addresses, global_size=opencl_source.work_items(kernel.groups, kernel.local),
                local_size=kernel.local, wait=True)
    except DeviceTimeout as exc:
        dev.reset_compute_queue(f"tinygrad kernel {kernel.name} did not complete")
        messages = [record.getMessage() for record in (caplog.records if caplog else [])]
        reasons = "; ".join(message for message in messages if "stopped" in message)
        pytest.fail(f"{kernel.name} did not complete: {reasons or exc}\n{kernel.source}")


@pytest.fixture(scope="module")
def dev():
    from compute import device as compute_device
    from tools import mock_machines
    compute_device.register_mock_factory(mock_machines.navi31)
    device = Device("mock:0", timeout_s=10)
    yield device
    device.close()


@pytest.fixture
def launch(dev, caplog):
    """run() on the module's device, with the mock MEC's log captured for the failure message."""
    caplog.set_level(logging.INFO, logger="mockgpu.amd.mec")
    return lambda build, data: run(dev, build, data, caplog)


def normal(seed: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_elementwise_with_broadcasting(launch):
    a, b, c = normal(1, 16), normal(2, 24), normal(3, 16, 24)

    def build():
        ta, tb, tc = Tensor.empty(16), Tensor.empty(24), Tensor.empty(16, 24)
        return [ta, tb, tc], [(ta[:, None] + tb[None, :]) * tc]
    (out,), kernels = launch(build, [a, b, c])
    assert len(kernels) == 1
    # one IEEE float32 add and one multiply per element, in the same order as numpy's: exact
    np.testing.assert_array_equal(out.reshape(16, 24), (a[:, None] + b[None, :]) * c)


@pytest.mark.parametrize("shape, axis", [((33, 40), 1), ((64, 48), 0), ((4096,), None)])
def test_sum_reduction(launch, shape, axis):
    x = normal(4, *shape)

    def build():
        t = Tensor.empty(*shape)
        return [t], [t.sum(axis=axis)]
    (out,), kernels = launch(build, [x])
    want = x.astype(np.float64).sum(axis=axis)
    terms = x.shape[0] if axis == 0 else x.shape[-1]
    bound = terms * EPS32 * np.abs(x.astype(np.float64)).sum(axis=axis)
    assert np.all(np.abs(out.reshape(np.shape(want)) - want) <= bound)
    if axis is None:
        # the whole-array sum is one work-group reducing through LDS and a barrier
        assert any("__local" in kernel.source for kernel in kernels)


def test_matmul(launch):
    a, b = normal(5, 16, 24), normal(6, 24, 8)

    def build():
        ta, tb = Tensor.empty(16, 24), Tensor.empty(24, 8)
        return [ta, tb], [ta @ tb]
    (out,), _ = launch(build, [a, b])
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    # 24 products (each one rounding) summed: (24 + 1) * eps * sum|a||b| bounds the error
    bound = (24 + 1) * EPS32 * (np.abs(a64) @ np.abs(b64))
    assert np.all(np.abs(out.reshape(16, 8) - a64 @ b64) <= bound)


@pytest.mark.parametrize("shape", [(16, 24), (8, 500)])
def test_softmax_is_a_chain_of_kernels_through_planned_intermediates(launch, shape):
    x = normal(7, *shape)

    def build():
        t = Tensor.empty(*shape)
        return [t], [t.softmax(axis=1)]
    (out,), kernels = launch(build, [x])
    # max, sum of exp, then exp * reciprocal: the row max and sum live in one planned arena
    assert len(kernels) == 3
    assert any(offset for kernel in kernels for _, offset in kernel.args)
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(axis=1, keepdims=True))
    want = e / e.sum(axis=1, keepdims=True)
    # relative errors: exp2 of an argument (x - max) * log2(e) three roundings off, |argument|
    # < 10 here, so 3 * 10 * ln(2) ~ 21 eps, plus exp2's own ulp; a row sum of up to 500
    # positive terms (500 eps); the reciprocal and the product (2 eps): under 600 eps
    assert np.abs(x64 - x64.max(axis=1, keepdims=True)).max() * np.log2(np.e) < 10
    np.testing.assert_allclose(out.reshape(shape), want, rtol=600 * EPS32, atol=0)


def test_math_builtins_through_the_shims(launch):
    """sqrt, log2, maximum, where and relu: the shims' sqrt/log2 and a select of a negated value
    (v_cndmask_b32 with a neg modifier)."""
    a, b = normal(8, 200), normal(9, 200)

    def build():
        ta, tb = Tensor.empty(200), Tensor.empty(200)
        value = ((ta * ta + 1).sqrt() + (ta.abs() + 1).log2() + ta.maximum(tb)
                 + (ta > tb).where(ta, -tb))
        return [ta, tb], [value.relu()]
    (out,), kernels = launch(build, [a, b])
    assert "sqrt(" in kernels[0].source and "log2(" in kernels[0].source
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    terms = [np.sqrt(a64 * a64 + 1), np.log2(np.abs(a64) + 1), np.maximum(a64, b64),
             np.where(a64 > b64, a64, -b64)]
    want = np.maximum(sum(terms), 0)
    # each term at most three roundings and an ulp of sqrt/log2 off (4 eps of itself), then three
    # additions (3 eps of the sum of magnitudes): 8 eps of the sum of the terms' magnitudes
    bound = 8 * EPS32 * sum(np.abs(term) for term in terms)
    assert np.all(np.abs(out - want) <= bound)


def test_sine_and_cosine(launch):
    """tinygrad's sin(x) and cos(x) = sin(pi/2 - x): clang's llvm.sin is x * 1/(2 pi), then
    v_sin_f32, which takes revolutions."""
    x = normal(10, 64) * 3

    def build():
        t = Tensor.empty(64)
        return [t], [t.sin() + t.cos()]
    (out,), kernels = launch(build, [x])
    assert "sin(" in kernels[0].source
    x64 = x.astype(np.float64)
    # each sine's argument is three roundings off (pi/2 - x, / 2 pi, * 2 pi: 3 eps of at most
    # |x| + pi/2) and its result one; then one addition of results at most 1 in magnitude
    per_sine = 3 * EPS32 * (np.abs(x64) + np.pi / 2) + EPS32
    assert np.all(np.abs(out - (np.sin(x64) + np.cos(x64))) <= 2 * per_sine + 2 * EPS32)


def test_argmax(launch):
    x = normal(11, 16, 30)

    def build():
        t = Tensor.empty(16, 30)
        return [t], [t.argmax(axis=1)]
    _, outputs, _ = schedule(build)
    assert outputs[0].dtype.itemsize == 4 and "int" in str(outputs[0].dtype)
    (out,), kernels = launch(build, [x])
    assert len(kernels) == 2  # the row max, then the first index holding it
    np.testing.assert_array_equal(out.view(np.int32), x.argmax(axis=1))


def test_integer_arithmetic_and_casts(launch):
    rng = np.random.default_rng(12)
    a = rng.integers(-1000, 1000, 100).astype(np.int32)
    b = rng.integers(-1000, 1000, 100).astype(np.int32)

    def build():
        ta, tb = Tensor.empty(100, dtype=dtypes.int32), Tensor.empty(100, dtype=dtypes.int32)
        return [ta, tb], [((ta * 3 - tb) // 7 + ta % 5).cast(dtypes.float32) * 0.5]
    (out,), _ = launch(build, [a, b])
    # tinygrad's // and % on integers round toward minus infinity, as Python's and numpy's;
    # every value is an integer below 2^24 halved: exact in float32
    np.testing.assert_array_equal(out, (((a * 3 - b) // 7 + a % 5) * 0.5).astype(np.float32))


def test_conv2d(launch):
    x, w = normal(13, 1, 2, 8, 8), normal(14, 3, 2, 3, 3)

    def build():
        tx, tw = Tensor.empty(1, 2, 8, 8), Tensor.empty(3, 2, 3, 3)
        return [tx, tw], [tx.conv2d(tw)]
    (out,), _ = launch(build, [x, w])
    windows = np.lib.stride_tricks.sliding_window_view(x[0].astype(np.float64), (3, 3), axis=(1, 2))
    want = np.einsum("cijkl,ockl->oij", windows, w.astype(np.float64))
    magnitude = np.einsum("cijkl,ockl->oij", np.abs(windows), np.abs(w.astype(np.float64)))
    # 18 products summed: (18 + 1) eps of the sum of magnitudes
    assert np.all(np.abs(out.reshape(3, 6, 6) - want) <= 19 * EPS32 * magnitude)


def test_kernel_names_and_launch_dimensions():
    source = "__kernel void E_4(__global float* d) {}\nkernel void r_2_3(__global int* x) {}"
    assert opencl_source.kernel_names(source) == ["E_4", "r_2_3"]
    assert opencl_source.work_items((2, 3, 1), (16, 4, 1)) == (32, 12, 1)
    with pytest.raises(ValueError):
        opencl_source.work_items((2, 3), (16,))


def test_extra_headers_are_part_of_the_cache_key(tmp_path):
    header = tmp_path / "shim.h"
    header.write_text("#define ONE 1\n")
    with_header = compiler.cache_key("k", ("-O3",), "v1", (header,))
    assert with_header != compiler.cache_key("k", ("-O3",), "v1")
    header.write_text("#define ONE 2\n")
    assert with_header != compiler.cache_key("k", ("-O3",), "v1", (header,))
