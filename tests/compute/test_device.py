"""compute.Device on mock:0: buffers and copies through the staging pool, signals across the copy
and compute queues, launches of the prebuilt vector_add with the registers the mock MEC recorded,
ring and kernarg reclamation by the timeline, and bounded waits that name queue, value and pointers."""
from __future__ import annotations

import importlib.util
import pathlib
import struct

import numpy as np
import pytest

from autogen.amd.regs import gc_11_0_0 as gc
from compute.amd import launch as amd_launch
from compute.device import Device
from drivers.am.device import AMConfig
from hal.errors import DeviceTimeout, InvalidArgument
from mockgpu import GPU_BDF

PREBUILT = pathlib.Path(__file__).resolve().parents[2] / "compute" / "amd" / "kernels" / "prebuilt"
TIMEOUT_S = 0.3


def mock_gpu(dev: Device):
    return dev.backend.machine.machine.device(GPU_BDF)


@pytest.fixture
def dev():
    device = Device("mock:0", timeout_s=TIMEOUT_S, staging_count=3, staging_size=8192)
    yield device
    device.close()


# -- buffers and copies ---------------------------------------------------------------------------
@pytest.mark.parametrize("size", [4, 4097, 8192, 50_001])
def test_host_to_vram_and_back_through_the_staging_pool(dev, size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    buffer = dev.allocate(size)
    before = dev.copy_queue.submissions
    buffer.copyin(data)
    assert buffer.copyout() == data
    chunks = -(-size // dev.staging.size)
    assert dev.copy_queue.submissions - before == 2 * chunks  # one submission per staged chunk
    # the copy really went through VRAM: the CPU's BAR view shows the same bytes
    assert buffer.cpu_view.read(0, size) == data
    assert buffer.copyout(3, offset=1) == data[1:4]


def test_vram_to_vram_and_host_buffers(dev):
    data = bytes(range(256)) * 40
    a = dev.allocate(len(data))
    b = dev.allocate(len(data))
    host = dev.allocate(len(data), host=True)
    a.copyin(data)
    b.copy_from(a)
    host.copy_from(b)
    assert host.copyout() == data  # the host buffer through its CPU view, after the copies
    assert b.copyout() == data
    with pytest.raises(InvalidArgument, match="not inside"):
        a.copyin(data, offset=1)


def test_a_staging_buffer_is_reused_only_after_the_timeline_passed_it(dev):
    # the copy engine stalls: the CPU may fill every staging buffer once, then must wait for the
    # timeline value of the first one's copy and, since it never comes, time out
    sdma = mock_gpu(dev).sdma
    buffer = dev.allocate(4 * dev.staging.size)
    sdma.stalled = True
    with pytest.raises(DeviceTimeout, match=r"signal 'timeline' did not reach \d+ .*copy queue"):
        buffer.copyin(bytes(4 * dev.staging.size))
    assert dev.staging.waits == 1
    sdma.stalled = False
    sdma.kick()
    dev.synchronize()


# -- signals -------------------------------------------------------------------------------------
def test_signals_order_the_copy_queue_after_the_compute_queue(dev):
    signal = dev.new_signal("handoff")
    source = dev.allocate(4096)
    target = dev.allocate(4096)
    source.copyin(b"\x5a" * 4096)
    dev.copy_queue.wait(signal, 1).copy(target.gpu_address, source.gpu_address, 4096)
    dev.copy_queue.signal(signal, 2).timestamp(signal)
    copy_value = dev.copy_queue.submit(ordered=False)
    assert signal.value == 0 and dev.timeline.value < copy_value  # the copy waits for the signal
    dev.compute_queue.signal(signal, 1)
    compute_value = dev.compute_queue.submit(ordered=False)
    signal.wait(2)
    dev.timeline.wait(compute_value)
    assert dev.timeline.value == compute_value > copy_value
    assert target.copyout() == b"\x5a" * 4096
    assert signal.timestamp > 0  # SDMA's TIMESTAMP wrote the GPU clock


def test_compute_queue_timestamps_and_64_bit_values(dev):
    signal = dev.new_signal("wide")
    value = (7 << 32) | 5
    dev.compute_queue.signal(signal, value).timestamp(signal)
    dev.compute_queue.submit()
    signal.wait(value)
    assert signal.value == value and signal.timestamp > 0
    dev.copy_queue.signal(signal, value + (1 << 32))
    dev.copy_queue.submit()
    signal.wait(value + (1 << 32))


def test_a_wait_that_never_completes_names_queue_value_and_pointers(dev):
    signal = dev.new_signal("never")
    dev.compute_queue.wait(signal, 1)
    value = dev.compute_queue.submit()
    with pytest.raises(DeviceTimeout) as caught:
        dev.timeline.wait(value)
    message = str(caught.value)
    assert f"did not reach {value}" in message and "compute queue" in message
    assert "rptr report" in message and "wptr" in message and "CP_HQD_ACTIVE" in message
    with pytest.raises(DeviceTimeout, match="no queue was asked to signal it"):
        dev.new_signal("idle").wait(1, timeout_s=0.01)
    signal.value = 1  # the CPU releases the queue: the device is usable again
    dev.timeline.wait(value)


# -- launches ------------------------------------------------------------------------------------
def test_vector_add_dispatch_programs_the_registers_the_descriptor_asks_for(dev):
    program = dev.load(PREBUILT / "vector_add.co", "vector_add_f32")
    n = 1000
    a = dev.allocate(4 * n)
    b = dev.allocate(4 * n)
    c = dev.allocate(4 * n)
    mec = mock_gpu(dev).mec
    before = len(mec.dispatches)
    value = program(a, b, c, n, global_size=n, local_size=256, wait=True)
    assert dev.timeline.value >= value
    dispatch = mec.dispatches[before]
    code = program.impl.program
    assert dispatch.program_address == program.impl.entry_address
    assert dispatch.program_address % 256 == 0
    assert (dispatch.rsrc1, dispatch.rsrc2, dispatch.rsrc3) == (code.rsrc1, code.rsrc2, code.rsrc3)
    assert dispatch.threads == (256, 1, 1)
    assert dispatch.dimensions == (4, 1, 1)  # ceil(1000 / 256) work-groups
    initiator = gc.regCOMPUTE_DISPATCH_INITIATOR.decode(dispatch.initiator)
    assert initiator["COMPUTE_SHADER_EN"] == 1 and initiator["CS_W32_EN"] == 1
    assert initiator["PARTIAL_TG_EN"] == 1  # 1000 is not a multiple of 256
    # user SGPRs: dispatch ptr in 0-1, kernarg segment ptr in 2-3 (Program.user_sgprs)
    user = dispatch.user_data
    dispatch_ptr = user[0] | user[1] << 32
    kernarg_ptr = user[2] | user[3] << 32
    arena = dev.kernargs.buffer
    assert arena.gpu_address <= kernarg_ptr < arena.gpu_address + arena.size
    kernargs = arena.cpu_view.read(kernarg_ptr - arena.gpu_address, code.kernarg_size)
    assert struct.unpack_from("<QQQI", kernargs) == (a.gpu_address, b.gpu_address, c.gpu_address, n)
    packet = amd_launch.DISPATCH_PACKET.unpack(
        arena.cpu_view.read(dispatch_ptr - arena.gpu_address, amd_launch.DISPATCH_PACKET_BYTES))
    assert packet[0] == amd_launch.HSA_PACKET_TYPE_KERNEL_DISPATCH and packet[1] == 1
    assert packet[2:5] == (256, 1, 1) and packet[6:9] == (n, 1, 1)
    assert packet[11] == program.impl.descriptor_address and packet[12] == kernarg_ptr
    assert amd_launch.DISPATCH_PACKET.size == amd_launch.DISPATCH_PACKET_BYTES


def test_launch_arguments_are_checked_against_the_metadata(dev):
    program = dev.load(PREBUILT / "vector_add.co", "vector_add_f32")
    a = dev.allocate(16)
    with pytest.raises(InvalidArgument, match="takes 4 arguments"):
        program(a, a, a, global_size=4)
    with pytest.raises(InvalidArgument, match="out of range"):
        program(a, a, a, -1, global_size=4)
    with pytest.raises(InvalidArgument, match="is more than 256 work-items"):
        program(a, a, a, 4, global_size=4, local_size=(64, 32))
    with pytest.raises(InvalidArgument, match="no kernel 'nope'"):
        dev.load(PREBUILT / "vector_add.co", "nope")


def mec_runs_kernels() -> bool:
    """Whether the mock MEC hands its dispatches to the RDNA3 interpreter."""
    if importlib.util.find_spec("mockgpu.amd.rdna3.interp") is None:
        return False
    return "rdna3" in pathlib.Path(importlib.util.find_spec("mockgpu.amd.mec").origin).read_text()


@pytest.mark.skipif(not mec_runs_kernels(),
                    reason="the mock MEC runs no kernels until mockgpu.amd.rdna3.interp is hooked into it")
def test_vector_add_results_match_numpy(dev):
    program = dev.load(PREBUILT / "vector_add.co", "vector_add_f32")
    n = 1000
    rng = np.random.default_rng(1)
    x = rng.random(n, dtype=np.float32)
    y = rng.random(n, dtype=np.float32)
    a, b, c = (dev.allocate(4 * n) for _ in range(3))
    a.copyin(x)
    b.copyin(y)
    program(a, b, c, n, global_size=n, local_size=256, wait=True)
    np.testing.assert_array_equal(np.frombuffer(c.copyout(), np.float32), x + y)


# -- reclamation -----------------------------------------------------------------------------------
def test_ring_and_kernargs_reclaimed_by_the_timeline_under_ten_times_capacity():
    config = AMConfig(gc_ring_size=4096, sdma_ring_size=4096)
    with Device("mock:0", timeout_s=TIMEOUT_S, kernarg_size=4096, config=config) as dev:
        program = dev.load(PREBUILT / "vector_add.co", "vector_add_f32")
        a = dev.allocate(4096)
        mec = mock_gpu(dev).mec
        queue = dev.compute_queue
        launches = 11 * max(dev.kernargs.size // 128, queue.gc.ring_dwords // 80)  # over 10x both
        before = len(mec.dispatches)
        for _ in range(launches):
            program(a, a, a, 16, global_size=16, local_size=16)
        dev.synchronize()
        assert len(mec.dispatches) - before == launches
        assert dev.kernargs.wraps >= 10
        assert queue.ring.reclaimed >= launches * 9 // 10  # all but the last ringful
        kernarg_pointers = {d.user_data[2] | d.user_data[3] << 32 for d in mec.dispatches[before:]}
        assert len(kernarg_pointers) <= dev.kernargs.size // 64  # the same space, reused


def test_kernarg_space_is_not_reused_before_the_timeline_passes_it():
    with Device("mock:0", timeout_s=TIMEOUT_S, kernarg_size=4096) as dev:
        program = dev.load(PREBUILT / "vector_add.co", "vector_add_f32")
        a = dev.allocate(4096)
        mec = mock_gpu(dev).mec
        mec.stalled = True  # launches are written but nothing completes
        fits = dev.kernargs.size // 128  # a 28-byte kernarg block and a 64-byte dispatch packet
        for _ in range(fits):
            program(a, a, a, 16, global_size=16, local_size=16)
        with pytest.raises(DeviceTimeout, match="compute queue.*CP_HQD_ACTIVE"):
            program(a, a, a, 16, global_size=16, local_size=16)
        assert dev.kernargs.waits == 1
        mec.stalled = False
        mec.kick()
        dev.synchronize()
