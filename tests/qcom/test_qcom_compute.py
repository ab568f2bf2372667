"""compute.Device on the mock Adreno 630 ("qcom:0" over the mock KGSL seam): buffers, copies on
both queues, signals across queues, GPU timestamps, ordering through the timeline, faults and the
refusal of a kernel binary that is not ir3 text."""
from __future__ import annotations

import time

import numpy as np
import pytest

from compute.device import Device
from drivers.qcom import kgsl
from hal.errors import BadBinary, DeviceTimeout, InvalidArgument
from tools.mock_machines import qcom


@pytest.fixture
def rig():
    machine = qcom()
    device = Device("qcom:0", os=machine.os, timeout_s=2.0)
    yield machine, device
    device.close()
    machine.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_copies_round_trip_at_random_sizes(rig, seed):
    machine, device = rig
    rng = np.random.default_rng(seed)
    words = int(rng.integers(1, 300_000))
    data = rng.integers(0, 2**32, words, dtype=np.uint32)
    source = device.allocate(data.nbytes, host=True)
    middle = device.allocate(data.nbytes)
    target = device.allocate(data.nbytes, host=True)
    source.cpu_view.write(0, data.tobytes())
    device.copy_queue.copy(middle.gpu_address, source.gpu_address, data.nbytes).submit()
    device.compute_queue.copy(target.gpu_address, middle.gpu_address, data.nbytes).submit()
    device.synchronize()
    result = np.frombuffer(target.cpu_view.read(0, data.nbytes), dtype=np.uint32)
    np.testing.assert_array_equal(result, data)


def test_backend_describes_the_gpu(rig):
    machine, device = rig
    assert "Adreno 630" in device.backend.describe()


def test_signals_and_timestamps(rig):
    machine, device = rig
    signal = device.new_signal("done")
    queue = device.compute_queue
    queue.timestamp(signal).signal(signal, 0x1_0000_0005).submit()
    device.synchronize()
    assert signal.value == 0x1_0000_0005
    assert signal.timestamp > 0


def test_a_wait_on_a_signal_already_written_goes_on(rig):
    machine, device = rig
    signal = device.new_signal("ready")
    device.copy_queue.signal(signal, 3).submit()
    device.compute_queue.wait(signal, 3).signal(signal, 4).submit()
    device.synchronize()
    assert signal.value == 4
    assert not machine.driver.stalls


def test_a_wait_nothing_will_satisfy_is_a_bounded_timeout(rig):
    machine, device = rig
    signal = device.new_signal("never")
    device.compute_queue.wait(signal, 9).submit()
    with pytest.raises(DeviceTimeout, match="timeline"):
        device.synchronize(timeout_s=0.2)
    assert "CP_WAIT_REG_MEM" in machine.driver.stalls[-1][1]
    device.reset_compute_queue("stalled wait")
    target = device.allocate(4096, host=True)
    source = device.allocate(4096, host=True)
    source.cpu_view.write(0, b"\x11" * 4096)
    device.compute_queue.copy(target.gpu_address, source.gpu_address, 4096).submit()
    device.synchronize()
    assert target.cpu_view.read(0, 4) == b"\x11" * 4


def test_copy_faulting_on_an_unmapped_address_is_reported(rig):
    machine, device = rig
    target = device.allocate(4096, host=True)
    device.copy_queue.copy(target.gpu_address, 0x7000_0000_0000, 64).submit()
    started = time.monotonic()
    with pytest.raises(kgsl.ContextFaulted, match="EDEADLK"):
        device.synchronize(timeout_s=1.0)
    assert time.monotonic() - started < 0.5  # raised at once, not after the timeout
    assert machine.driver.faults[-1].kind == "pagefault"
    device.reset_compute_queue("page fault")
    device.copy_queue.copy(target.gpu_address, target.gpu_address + 64, 64).submit()
    device.synchronize()


def test_unaligned_copies_are_refused(rig):
    machine, device = rig
    buffer = device.allocate(4096, host=True)
    with pytest.raises(InvalidArgument, match="dword"):
        device.copy_queue.copy(buffer.gpu_address, buffer.gpu_address + 1, 8)


def test_a_binary_that_is_not_ir3_text_is_refused(rig):
    machine, device = rig
    with pytest.raises(BadBinary, match="load_vendor"):
        device.load(b"\xff" * 16, "vector_add")


def test_only_qcom_0_exists():
    from hal.errors import DeviceNotFound

    machine = qcom()
    try:
        with pytest.raises(DeviceNotFound, match="qcom:0"):
            Device("qcom:1", os=machine.os)
    finally:
        machine.close()


def test_graph_of_copies_replays_with_new_inputs(rig):
    from compute.graph import Graph

    machine, device = rig
    first = device.allocate(4096, host=True)
    second = device.allocate(4096, host=True)
    out = device.allocate(4096, host=True)
    first.cpu_view.write(0, b"\x01" * 4096)
    second.cpu_view.write(0, b"\x02" * 4096)
    graph = Graph(device)
    source = graph.input("source")
    graph.copy(out, source, 4096)
    device.timeline.wait(graph.replay(source=first))
    assert out.cpu_view.read(0, 4096) == b"\x01" * 4096
    device.timeline.wait(graph.replay(source=second))
    assert out.cpu_view.read(0, 4096) == b"\x02" * 4096
    graph.free()
