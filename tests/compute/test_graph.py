"""compute.graph on mock:0: a recorded sequence of vector_add launches and copies replayed with new
buffers and scalars gives numpy's results, and a replay's Python work is the patch writes plus a
fixed cost, whatever the number of kernels (counted calls, not time)."""
from __future__ import annotations

import gc
import pathlib
import sys

import numpy as np
import pytest

from compute.amd import launch as amd_launch
from compute.device import Device
from compute.graph import Graph
from hal.errors import InvalidArgument
from mockgpu import GPU_BDF

PREBUILT = pathlib.Path(__file__).resolve().parents[2] / "compute" / "amd" / "kernels" / "prebuilt"
N = 300  # not a multiple of the work-group


@pytest.fixture
def dev():
    device = Device("mock:0", timeout_s=2.0)
    yield device
    device.close()


def _floats(buffer) -> np.ndarray:
    return np.frombuffer(buffer.copyout(), np.float32)


def test_replay_with_changed_buffers_and_scalars_matches_numpy(dev):
    add = dev.load(PREBUILT / "vector_add.co", "vector_add_f32")
    rng = np.random.default_rng(8)
    xs = [rng.random(N, dtype=np.float32) for _ in range(4)]
    inputs = [dev.allocate(4 * N) for _ in xs]
    for buffer, x in zip(inputs, xs):
        buffer.copyin(x)
    mid, out, copied = dev.allocate(4 * N), dev.allocate(4 * N), dev.allocate(4 * N)
    graph = Graph(dev)
    a, b, n = graph.input("a"), graph.input("b"), graph.input("n")
    graph.launch(add, a, b, mid, n, global_size=N, local_size=64)
    graph.launch(add, mid, mid, out, n, global_size=N, local_size=64)
    graph.copy(copied, out, 4 * N)
    dev.timeline.wait(graph.replay(a=inputs[0], b=inputs[1], n=N))
    np.testing.assert_array_equal(_floats(out), 2 * (xs[0] + xs[1]))
    np.testing.assert_array_equal(_floats(copied), 2 * (xs[0] + xs[1]))
    dev.timeline.wait(graph.replay(a=inputs[2], b=inputs[3]))  # n keeps its value
    np.testing.assert_array_equal(_floats(copied), 2 * (xs[2] + xs[3]))
    out.copyin(np.zeros(N, np.float32))
    dev.timeline.wait(graph.replay(n=100))  # the scalar: only the first 100 elements are written
    result = _floats(out)
    np.testing.assert_array_equal(result[:100], 2 * (xs[2] + xs[3])[:100])
    assert not result[100:].any()
    assert graph.replays == 3


def test_copy_addresses_are_inputs_too(dev):
    data = bytes(range(256)) * 4
    src, first, second = dev.allocate(len(data)), dev.allocate(len(data)), dev.allocate(len(data))
    src.copyin(data)
    graph = Graph(dev)
    graph.copy(graph.input("dst"), src, len(data))
    dev.timeline.wait(graph.replay(dst=first))
    dev.timeline.wait(graph.replay(dst=second))
    assert first.copyout() == data and second.copyout() == data


def test_inputs_are_checked(dev):
    add = dev.load(PREBUILT / "vector_add.co", "vector_add_f32")
    a = dev.allocate(4 * N)
    graph = Graph(dev)
    graph.launch(add, a, a, a, graph.input("n"), global_size=N, local_size=64)
    with pytest.raises(InvalidArgument, match="first replay needs a value for n"):
        graph.replay()
    with pytest.raises(InvalidArgument, match="no input m"):
        graph.replay(m=1, n=1)
    with pytest.raises(InvalidArgument, match="out of range"):
        graph.replay(n=-1)  # n is a uint: packed by its type, refused before any write
    with pytest.raises(InvalidArgument, match="built already"):
        graph.launch(add, a, a, a, 1, global_size=N, local_size=64)


def _replay_calls(dev, graph, **values) -> int:
    """Python function calls made by one replay, with the mock MEC stalled so the mock's execution
    of the kernels is not counted (it runs once the MEC is kicked)."""
    mec = dev.backend.machine.machine.device(GPU_BDF).mec
    dev.synchronize()
    mec.stalled = True
    calls = 0

    def count(frame, event, arg):
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    gc.disable()  # a collection inside the window would count the finalizers it runs
    sys.setprofile(count)
    try:
        graph.replay(**values)
    finally:
        sys.setprofile(None)
        gc.enable()
        mec.stalled = False
        mec.kick()
        dev.synchronize()
    return calls


def test_replay_cost_does_not_grow_with_the_kernels_beyond_patch_writes(dev, monkeypatch):
    add = dev.load(PREBUILT / "vector_add.co", "vector_add_f32")
    a, b = dev.allocate(4 * 64), dev.allocate(4 * 64)
    per_kernel = []
    for kernels in (10, 100):
        graph = Graph(dev)
        x = graph.input("x")
        for _ in range(kernels):
            graph.launch(add, x, b, b, 64, global_size=64, local_size=64)
        graph.build()  # building the graph builds each kernel's commands, once
        graph.replay(x=a)
        with monkeypatch.context() as replaying:
            replaying.setattr(amd_launch.AMDLaunch, "words",
                              lambda *args: pytest.fail("a replay built a kernel's commands"))
            fixed = _replay_calls(dev, graph)
            patched = _replay_calls(dev, graph, x=b)
        per_kernel.append((fixed, patched))
    _, _, write, offsets = graph._patches["x"][0]  # one patch write, on its own
    assert len(offsets) == 100  # every kernel's slot for x (packed once per replay)
    data = bytes(8)
    calls = 0

    def count(frame, event, arg):
        nonlocal calls
        calls += event in ("call", "c_call")

    gc.disable()
    sys.setprofile(count)
    try:
        write(offsets[0], data)
    finally:
        sys.setprofile(None)
        gc.enable()
    per_write = calls - 1  # less the c_call of sys.setprofile(None) itself
    graph.free()
    (fixed_10, patched_10), (fixed_100, patched_100) = per_kernel
    assert fixed_10 == fixed_100  # no input changed: the same calls for 10 and 100 kernels
    # 90 more kernels using the input: exactly 90 more patch writes, nothing else
    assert (patched_100 - fixed_100) - (patched_10 - fixed_10) == 90 * per_write


def test_a_freed_buffer_is_refused_as_a_kernel_argument(dev):
    # its GPU address went back to the allocator: a launch with it could write other memory
    add = dev.load(PREBUILT / "vector_add.co", "vector_add_f32")
    a, b, c = (dev.allocate(4 * N) for _ in range(3))
    a.free()
    with pytest.raises(InvalidArgument, match="was freed"):
        add(a, b, c, N, global_size=N, local_size=64, wait=True)
    graph = Graph(dev)
    x = graph.input("x")
    graph.launch(add, x, b, c, N, global_size=N, local_size=64)
    with pytest.raises(InvalidArgument, match="was freed"):
        graph.replay(x=a)
    graph.free()
