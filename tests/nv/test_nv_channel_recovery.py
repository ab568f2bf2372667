"""Robust-channel errors stop the whole channel group (every channel's notifier is written, no channel
of the group runs again), and `reset_compute_queue` on nv frees the group and builds a new one:
the kernel library and copies run again, a hang recovers the same way, nothing leaks. Semaphore
releases with a timestamp need 16-byte alignment (dev_pbdma.ref.txt), in the mock and the driver."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from autogen.nv.r535 import classes as cl
from autogen.nv.r535 import escape as esc
from autogen.nv.r535 import nvos
from autogen.nv.r535 import status as nv_status
from compute import device as compute_device
from compute.device import Device
from compute.nv import compiler
from compute.nv import queues as nv_queues
from compute.signal import Signal
from drivers.nv.device import NVDevice
from drivers.nv.gpfifo import ChannelError
from hal.errors import DeviceTimeout, InvalidArgument
from mockgpu.nv import gpu as nvgpu
from tools import mock_machines

GRAPHICS = cl.NV2080_ENGINE_TYPE_GRAPHICS


@pytest.fixture(autouse=True)
def _nv_factory():
    compute_device.register_mock_factory(mock_machines.nvidia_compute, kind="nv")
    yield
    compute_device.register_mock_factory(None, kind="nv")


def _vector_add(dev: Device):
    return dev.load(compiler.PREBUILT_DIR / "vector_add.fatbin", "vector_add_f32")


def _run_vector_add(dev: Device, n: int = 256) -> np.ndarray:
    rng = np.random.default_rng(n)
    a_host = rng.standard_normal(n).astype(np.float32)
    b_host = rng.standard_normal(n).astype(np.float32)
    buffers = [dev.allocate(4 * n) for _ in range(3)]
    buffers[0].copyin(a_host)
    buffers[1].copyin(b_host)
    _vector_add(dev)(*buffers, n, global_size=n, local_size=128, wait=True)
    out = np.frombuffer(buffers[2].copyout(4 * n), dtype=np.float32)
    np.testing.assert_array_equal(out, a_host + b_host)
    return out


def _notifier(channel) -> tuple[int, int, int]:
    _time, code, info16, status = struct.unpack("<QIHH", channel.notifier.cpu.region.read(0, 16))
    return code, info16, status


def _rc(dev: Device) -> ChannelError:
    gpu = dev.backend.machine.driver.gpu_model
    buffers = [dev.allocate(1024) for _ in range(3)]
    gpu.inject("rc")
    with pytest.raises(ChannelError, match="ROBUST_CHANNEL_GR_EXCEPTION") as caught:
        _vector_add(dev)(*buffers, 256, global_size=256, local_size=128, wait=True)
    return caught.value


def test_a_channel_error_stops_and_notifies_every_channel_of_the_group() -> None:
    dev = Device("mock:nv")
    try:
        nv = dev.backend.nv
        assert nv.compute.notifier.obj.handle != nv.copy.notifier.obj.handle  # one per channel
        dev.backend.machine.driver.gpu_model.clock_ns = lambda: 0x1_0000_0002
        error = _rc(dev)
        # notifyFillNvNotification: timeStamp.nanoseconds[0] is the high word, [1] the low
        assert struct.unpack("<II", nv.copy.notifier.cpu.region.read(0, 8)) == (1, 2)
        # krcErrorSetNotifier, TSG scope: the same record in both channels' notifiers, info16 the
        # engine that raised it, status 0xffff
        assert _notifier(nv.compute) == (nvgpu.ROBUST_CHANNEL_GR_EXCEPTION, GRAPHICS, 0xFFFF)
        assert _notifier(nv.copy) == (nvgpu.ROBUST_CHANNEL_GR_EXCEPTION, GRAPHICS, 0xFFFF)
        assert error.reported_by == ("compute", "copy") and error.engine == "compute"
        assert error.info == GRAPHICS and "reset_compute_queue" in str(error)
        gpu = dev.backend.machine.driver.gpu_model
        states = {state.obj.handle: state for state in gpu.channels.values()}
        assert states[nv.compute.obj.handle].faulted and states[nv.copy.obj.handle].faulted
        # the copy channel of the torn-down group fetches nothing more (the driver would refuse
        # to submit: push a GP entry past it)
        copy = dev.copy_queue
        get = copy.gpfifo.get
        copy.gpfifo.push(dev.timeline.gpu_address, 2)
        assert copy.gpfifo.get == get
        with pytest.raises(ChannelError):
            dev.synchronize()
    finally:
        dev.closed = True
        dev.backend.close()


def test_reset_after_a_channel_error_runs_kernels_and_copies_again() -> None:
    with Device("mock:nv") as dev:
        nv = dev.backend.nv
        machine = dev.backend.machine
        old_group, old_channels = nv.channel_group, (nv.compute.obj, nv.copy.obj)
        old_tokens = {nv.compute.work_submit_token, nv.copy.work_submit_token}
        bases = (nv.compute.uvm_base, nv.copy.uvm_base)
        _rc(dev)
        dev.reset_compute_queue("test: injected GR exception")
        assert old_group.freed and all(channel.freed for channel in old_channels)
        freed = [handle for handle, _ in machine.driver.rm.freed_log]
        assert old_group.handle in freed and all(c.handle in freed for c in old_channels)
        assert nv.channel_group is not old_group
        assert not old_tokens & {nv.compute.work_submit_token, nv.copy.work_submit_token}
        space = machine.driver.uvm_spaces[0]
        assert sorted(base for base, _ in space.channels.values()) == sorted(bases)
        assert _notifier(nv.compute) == (0, 0, 0) and _notifier(nv.copy) == (0, 0, 0)
        _run_vector_add(dev)  # copies in and out on the copy channel, the kernel on compute
        memory_lib = dev.load(compiler.PREBUILT_DIR / "memory.fatbin", "copy_u32")
        source = dev.allocate(4 * 512)
        source.copyin(np.arange(512, dtype=np.uint32))
        target = dev.allocate(4 * 512)
        memory_lib(source, target, 512, global_size=512, local_size=64, wait=True)
        host = dev.allocate(4 * 512, host=True)
        host.copy_from(target)
        np.testing.assert_array_equal(np.frombuffer(host.copyout(), dtype=np.uint32), np.arange(512))
        # a doorbell with a freed channel's token runs nothing and is not an error
        for token in old_tokens:
            nv.doorbell.region.write32(cl.NVC361_NOTIFY_CHANNEL_PENDING, token)
        dev.synchronize()


def test_reset_after_a_hang_brings_the_queues_back() -> None:
    with Device("mock:nv", timeout_s=0.3) as dev:
        gpu = dev.backend.machine.driver.gpu_model
        buffer = dev.allocate(4096)
        buffer.copyin(bytes(4096))  # the copy queue signalled last: the next compute submission waits
        gpu.inject("hang")
        buffers = [dev.allocate(1024) for _ in range(3)]
        value = _vector_add(dev)(*buffers, 256, global_size=256, local_size=128)
        with pytest.raises(DeviceTimeout):
            dev.timeline.wait(value)
        dev.reset_compute_queue("test: a semaphore that never comes")
        assert dev.timeline.value >= value  # the lost work is passed, nothing waits for it
        _run_vector_add(dev, 512)
        assert not any(state.hung for state in gpu.channels.values())  # the hung channel is gone


def test_strict_close_after_resets_finds_no_leaks(nv_machine) -> None:
    machine = nv_machine("a100")
    device = NVDevice.open(machine.os)
    old_group = device.channel_group
    device.reset_channel_group("test")
    device.reset_channel_group("test again")
    # the group freed by the first reset is gone: freeing it again is the RM's "no such object"
    rm = device.rm
    block = nvos.NVOS00_PARAMETERS(hRoot=rm.root.handle, hObjectParent=device.device.handle,
                                   hObjectOld=old_group.handle)
    rm.escape(rm.ctl_fd, esc.NV_ESC_RM_FREE, block, "free again")
    assert block.status == nv_status.NV_ERR_OBJECT_NOT_FOUND
    with pytest.raises(InvalidArgument, match="freed already"):
        rm.free(old_group)
    groups = [obj for obj in machine.driver.rm.clients[rm.root.handle].objects.values()
              if obj.cls == cl.KEPLER_CHANNEL_GROUP_A]
    assert [group.handle for group in groups] == [device.channel_group.handle]
    space = machine.driver.uvm_spaces[0]
    assert len(space.channels) == 2
    device.close(strict=True)
    assert machine.driver.rm.clients == {} and space.channels == {} and machine.os.open_fds == []


def test_a_timestamp_needs_sixteen_byte_alignment_in_the_mock() -> None:
    """dev_pbdma.ref.txt: RELEASE_TIMESTAMP EN on a RELEASE or REDUCTION needs a 16-byte aligned
    address; an 8-byte aligned 64-bit release without it is fine."""
    dev = Device("mock:nv")
    try:
        queue = dev.compute_queue
        signal = dev.new_signal("aligned")
        queue._words += nv_queues.semaphore_words(queue.subchannel, signal.value_address + 8, 7,
                                                  nv_queues.SEM_RELEASE)
        dev.timeline.wait(queue.submit())
        assert signal.timestamp == 7
        queue._words += nv_queues.semaphore_words(queue.subchannel, signal.value_address + 8, 0,
                                                  nv_queues.SEM_TIMESTAMP)
        with pytest.raises(ChannelError, match="ROBUST_CHANNEL_PBDMA_ERROR"):
            dev.timeline.wait(queue.submit())
        errors = dev.backend.machine.driver.gpu_model.errors
        assert "not 16-byte aligned" in errors[-1][1]
    finally:
        dev.closed = True
        dev.backend.close()


def test_the_driver_refuses_a_timestamp_off_sixteen_bytes_and_places_its_own_on_them() -> None:
    with Device("mock:nv") as dev:
        page = dev.allocate(4096, host=True)
        with pytest.raises(InvalidArgument, match="16-byte aligned"):
            Signal(dev, "odd", page.cpu_view, 8, page.gpu_address + 8)
        odd = Signal(dev, "odd", page.cpu_view, 16, page.gpu_address + 16)
        odd.gpu_address += 8  # past the constructor's check: the queue refuses it too
        with pytest.raises(InvalidArgument, match="16-byte aligned"):
            dev.compute_queue.timestamp(odd)
        signals = [dev.new_signal(f"s{index}") for index in range(300)]  # more than a page
        assert all(signal.value_address % 16 == 0 for signal in signals)
        profiler = dev.profile()
        slots = [profiler.slot() for _ in range(300)]
        assert all(slot.value_address % 16 == 0 for slot in slots)
        profiler.stop()
        dev.compute_queue.timestamp(signals[-1])
        dev.timeline.wait(dev.compute_queue.submit())
        assert signals[-1].timestamp > 0


def test_each_channel_notifier_holds_its_work_submit_token(h100) -> None:
    """kchannelNotifyWorkSubmitToken: the token goes to index 1 of the channel's notifier (a notifier
    shared by both channels would keep only the last channel's); index 0 stays clear."""
    device = NVDevice.open(h100.os)
    try:
        for channel in device.channels:
            code, _, status = _notifier(channel)
            assert (code, status) == (0, 0)
            token, info16, status = struct.unpack("<8xIHH", channel.notifier.cpu.region.read(16, 16))
            assert (token, info16, status) == (channel.work_submit_token, 0, 0xFFFF)
        device.reset_channel_group("test")
        for channel in device.channels:
            token = struct.unpack("<8xI", channel.notifier.cpu.region.read(16, 12))[0]
            assert token == channel.work_submit_token
    finally:
        device.close(strict=True)
