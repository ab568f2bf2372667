"""compute.Device on the mock NVIDIA GPU ("mock:nv[:gpu]"): every kernel of the CUDA library from
its fatbinary through GPFIFO submission, QMD launch and the mock's PTX execution, against numpy;
copies on the copy channel; signals across the compute and copy channels; graph replay."""
from __future__ import annotations

import numpy as np
import pytest

from compute import device as compute_device
from compute.device import Device
from compute.graph import Graph
from compute.nv import compiler
from nv_reference import private_array_reference
from tools import mock_machines

GPUS = ["h100", "rtx3090", "rtx4090", "a100"]


@pytest.fixture(autouse=True)
def _nv_factory():
    compute_device.register_mock_factory(mock_machines.nvidia_compute, kind="nv")
    yield
    compute_device.register_mock_factory(None, kind="nv")


@pytest.fixture
def dev():
    device = Device("mock:nv")
    yield device
    device.close()


def _load(dev: Device, library: str, name: str):
    return dev.load(compiler.PREBUILT_DIR / f"{library}.fatbin", name)


def _put(dev: Device, array: np.ndarray):
    buffer = dev.allocate(max(array.nbytes, 4))
    buffer.copyin(np.ascontiguousarray(array))
    return buffer


def _get(buffer, count: int, dtype) -> np.ndarray:
    return np.frombuffer(buffer.copyout(count * np.dtype(dtype).itemsize), dtype=dtype)


@pytest.mark.parametrize("gpu", GPUS)
def test_vector_add_on_every_generation(gpu: str) -> None:
    rng = np.random.default_rng(1)
    with Device(f"mock:nv:{gpu}") as dev:
        n = 1000
        a = rng.standard_normal(n).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        out = dev.allocate(4 * n + 32)
        out.copyin(np.full(n + 8, 0x5A5A5A5A, dtype=np.uint32))
        _load(dev, "vector_add", "vector_add_f32")(_put(dev, a), _put(dev, b), out, n,
                                                     global_size=n, local_size=128, wait=True)
        np.testing.assert_array_equal(_get(out, n, np.float32), a + b)
        assert (np.frombuffer(out.copyout(32, 4 * n), dtype=np.uint32) == 0x5A5A5A5A).all()
        assert dev.backend.machine.driver.gpu_model.launches == 1


def test_every_library_kernel(dev: Device) -> None:
    rng = np.random.default_rng(2)
    n = 777
    a = rng.integers(-2**31, 2**31, n, dtype=np.int32)
    b = rng.integers(-2**31, 2**31, n, dtype=np.int32)
    c = dev.allocate(4 * n)
    _load(dev, "vector_add", "vector_add_i32")(_put(dev, a), _put(dev, b), c, n, global_size=n,
                                                 local_size=256, wait=True)
    np.testing.assert_array_equal(_get(c, n, np.int32), a + b)

    x = rng.standard_normal(n).astype(np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    y_buffer = _put(dev, y)
    _load(dev, "saxpy", "saxpy")(1.5, _put(dev, x), y_buffer, n, global_size=n, local_size=256, wait=True)
    expected_y = (1.5 * x.astype(np.float64) + y).astype(np.float32)  # fma: rounded once
    np.testing.assert_allclose(_get(y_buffer, n, np.float32), expected_y, rtol=1e-6, atol=1e-6)

    filled = dev.allocate(4 * n + 16)
    _load(dev, "memory", "memset_u32")(filled, 0xDEADBEEF, n, global_size=n, local_size=64, wait=True)
    result = _get(filled, n + 4, np.uint32)
    assert (result[:n] == 0xDEADBEEF).all() and (result[n:] == 0).all()
    _load(dev, "memory", "memset_f32")(filled, -2.5, n, global_size=n, local_size=64, wait=True)
    assert (_get(filled, n, np.float32) == np.float32(-2.5)).all()
    source = rng.integers(0, 2**32, n, dtype=np.uint32)
    copied = dev.allocate(4 * n)
    _load(dev, "memory", "copy_u32")(_put(dev, source), copied, n, global_size=n, local_size=96, wait=True)
    np.testing.assert_array_equal(_get(copied, n, np.uint32), source)

    blocks = -(-n // 256)
    values = rng.standard_normal(n).astype(np.float32)
    partial = dev.allocate(4 * blocks)
    _load(dev, "reduce", "reduce_sum_f32")(_put(dev, values), partial, n, global_size=blocks * 256,
                                             local_size=256, wait=True)
    expected = [values[i * 256:(i + 1) * 256].astype(np.float64).sum() for i in range(blocks)]
    np.testing.assert_allclose(_get(partial, blocks, np.float32), expected, rtol=1e-4, atol=1e-4)
    ints = rng.integers(-2**20, 2**20, n, dtype=np.int32)
    _load(dev, "reduce", "reduce_sum_i32")(_put(dev, ints), partial, n, global_size=blocks * 256,
                                             local_size=256, wait=True)
    np.testing.assert_array_equal(_get(partial, blocks, np.int32),
                                  [ints[i * 256:(i + 1) * 256].sum() for i in range(blocks)])

    m, cols, k = 23, 37, 19
    left = rng.standard_normal((m, k)).astype(np.float32)
    right = rng.standard_normal((k, cols)).astype(np.float32)
    product = dev.allocate(4 * m * cols)
    _load(dev, "matmul", "matmul_f32")(_put(dev, left), _put(dev, right), product, m, cols, k,
                                         global_size=(-(-cols // 16) * 16, -(-m // 16) * 16),
                                         local_size=(16, 16), wait=True)
    np.testing.assert_allclose(_get(product, m * cols, np.float32).reshape(m, cols),
                               left.astype(np.float64) @ right, rtol=1e-4, atol=1e-4)

    small = 200
    inputs = rng.integers(0, 2**32, small, dtype=np.uint32)
    outputs = dev.allocate(4 * small)
    _load(dev, "private_array", "private_array")(_put(dev, inputs), outputs, small, global_size=small,
                                                   local_size=128, wait=True)
    np.testing.assert_array_equal(_get(outputs, small, np.uint32), private_array_reference(inputs))
    assert dev.backend.local_per_thread >= 256  # the local memory buffer the frame needs

    samples = rng.integers(0, 2**32, 1500, dtype=np.uint32)
    bins = dev.allocate(4 * 64)
    _load(dev, "histogram", "histogram_u32")(_put(dev, samples), bins, 1500, global_size=3 * 96,
                                               local_size=96, wait=True)
    np.testing.assert_array_equal(_get(bins, 64, np.uint32), np.bincount(samples % 64, minlength=64))


def test_copies_between_vram_and_host(dev: Device) -> None:
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, 3 << 20, dtype=np.uint8)  # more than one staging buffer
    vram = dev.allocate(data.nbytes)
    vram.copyin(data)
    other = dev.allocate(data.nbytes)
    other.copy_from(vram)
    host = dev.allocate(data.nbytes, host=True)
    host.copy_from(other)
    assert host.copyout() == data.tobytes()
    assert other.copyout(4096, 1 << 20) == data[1 << 20:(1 << 20) + 4096].tobytes()


def test_signals_across_compute_and_copy(dev: Device) -> None:
    """The compute channel waits for a signal the copy channel writes later: the compute work
    stays blocked at its semaphore acquire until the copy's release."""
    n = 256
    ready = dev.new_signal("ready")
    source = _put(dev, np.arange(n, dtype=np.uint32))
    staged = dev.allocate(4 * n)
    result = dev.allocate(4 * n)
    copy_u32 = _load(dev, "memory", "copy_u32")
    compute = dev.compute_queue
    compute.wait(ready, 1)
    compute.exec(copy_u32.prepare((staged, result, n), (n,), (64, 1, 1), compute))
    done = compute.submit(ordered=False)
    assert dev.timeline.value < done  # blocked on `ready`
    copy = dev.copy_queue
    copy.copy(staged.gpu_address, source.gpu_address, 4 * n)
    copy.signal(ready, 1)
    copy.submit(ordered=False)
    dev.timeline.wait(done)
    assert ready.value == 1
    np.testing.assert_array_equal(_get(result, n, np.uint32), np.arange(n, dtype=np.uint32))


def test_graph_replay(dev: Device) -> None:
    n = 500
    add = _load(dev, "vector_add", "vector_add_f32")
    graph = Graph(dev)
    a, b = graph.input("a"), graph.input("b")
    c = dev.allocate(4 * n)
    out = dev.allocate(4 * n, host=True)
    graph.launch(add, a, b, c, n, global_size=n, local_size=128)
    graph.launch(add, c, b, c, n, global_size=n, local_size=128)
    graph.copy(out, c, 4 * n)
    rng = np.random.default_rng(4)
    for _ in range(3):
        x = rng.standard_normal(n).astype(np.float32)
        y = rng.standard_normal(n).astype(np.float32)
        dev.timeline.wait(graph.replay(a=_put(dev, x), b=_put(dev, y)))
        np.testing.assert_allclose(np.frombuffer(out.copyout(), dtype=np.float32), x + y + y, rtol=1e-6)


def test_rings_are_reclaimed_by_the_timeline(dev: Device) -> None:
    """More submissions than the GP ring has entries: space comes back only as the timeline passes."""
    signal = dev.new_signal("counter")
    queue = dev.copy_queue
    for value in range(1, 1500):
        queue.signal(signal, value)
        queue.submit()
    dev.synchronize()
    assert signal.value == 1499
    assert queue.entry_space.reclaimed > 0


def test_timestamps_keep_the_value_and_write_the_time(dev: Device) -> None:
    signal = dev.new_signal("stamped", value=41)
    for queue in (dev.compute_queue, dev.copy_queue):
        before = signal.timestamp
        queue.timestamp(signal)
        dev.timeline.wait(queue.submit())
        assert signal.value == 41
        assert signal.timestamp > before


def test_selftest_on_the_mock_nv(capsys) -> None:
    import json

    from tools import selftest

    assert selftest.main(["--mock", "nv", "--json", "--timeout", "5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["device"] == "mock:nv" and report["ok"]
    assert {check["name"] for check in report["checks"]} >= {"matmul_f32", "signals across queues"}


def test_held_gpu_runs_nothing_until_released(dev: Device) -> None:
    gpu = dev.backend.machine.driver.gpu_model
    signal = dev.new_signal("held")
    gpu.hold(True)
    dev.compute_queue.signal(signal, 7)
    value = dev.compute_queue.submit()
    assert signal.value == 0 and dev.timeline.value < value
    gpu.hold(False)
    dev.timeline.wait(value)
    assert signal.value == 7
