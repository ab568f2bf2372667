"""The mock NVIDIA GPU (mockgpu/nv/gpu.py): QMD validation, robust-channel errors surfaced by the
compute layer with their names, MMU faults, a hung semaphore ending in a bounded timeout, the
program registry, and pushbuffer decoding."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from compute import device as compute_device
from compute.device import Device
from compute.nv import compiler
from drivers.nv import gpfifo
from drivers.nv import qmd as qmd_module
from drivers.nv.gpfifo import ChannelError
from drivers.nv.qmd import QMD
from hal.errors import DeviceTimeout, InvalidArgument
from mockgpu.nv import gpu as nvgpu
from tools import mock_machines

GOOD = dict(program_address=0x1000, grid=(4, 1, 1), block=(128, 1, 1), constant0_address=0x2000,
            constant0_size=0x230, registers=16, shared_bytes=0, local_bytes_per_thread=0,
            shared_limit_kib=228)


@pytest.fixture(autouse=True)
def _nv_factory():
    compute_device.register_mock_factory(mock_machines.nvidia_compute, kind="nv")
    yield
    compute_device.register_mock_factory(None, kind="nv")


def _patched(data: bytes, high: int, low: int, value: int) -> bytes:
    whole = int.from_bytes(data, "little")
    whole &= ~(((1 << (high - low + 1)) - 1) << low)
    whole |= value << low
    return whole.to_bytes(len(data), "little")


def test_the_largest_block_of_shared_memory_fits_with_its_reserve() -> None:
    # GH100: 227 KiB per block for the kernel and 1 KiB reserved for the system (the 228 KiB carve-out)
    kernel_max = nvgpu.MAX_SHARED_PER_BLOCK["GH100"]
    limit = kernel_max + nvgpu.SHARED_RESERVE_PER_BLOCK
    shared = nvgpu.check_qmd(QMD(**{**GOOD, "shared_bytes": kernel_max}).build(), limit)[5]
    assert shared == 228 << 10
    with pytest.raises(InvalidArgument, match="carve-out"):  # the driver does not build more
        QMD(**{**GOOD, "shared_bytes": kernel_max + 256}).build()
    larger = bytearray(QMD(**{**GOOD, "shared_bytes": kernel_max}).build())
    qmd_module._put(larger, "SHARED_MEMORY_SIZE", limit + 256)
    with pytest.raises(nvgpu.ChannelFault, match="shared memory"):  # nor does the SM take more
        nvgpu.check_qmd(bytes(larger), limit)


def test_a_valid_qmd_is_accepted() -> None:
    grid, block, cb0, size, program, shared = nvgpu.check_qmd(QMD(**GOOD).build(), 227 << 10)
    # shared: the kernel's 0 bytes plus the block's 1 KiB system reserve (drivers.nv.qmd SHARED_RESERVE)
    assert (grid, block, cb0, size, program, shared) == ((4, 1, 1), (128, 1, 1), 0x2000, 0x230, 0x1000, 1024)


@pytest.mark.parametrize("field, value, message", [
    ((583, 580), 2, "version 2.0"),
    ((415, 384), 0, "grid dimension 0 is 0"),
    ((431, 416), 0, "grid dimension 1 is 0"),
    ((607, 592), 0, "block dimension 0 is 0"),
    ((639, 624), 65, "block dimension 2 is 65"),
    ((623, 608), 16, "2048 threads per block"),
    ((656, 648), 0, "register count 0"),
    ((561, 544), 228 << 10, "shared memory 233472 bytes"),
    ((640, 640), 0, "constant buffer 0 is not valid"),
    ((1055, 1024), 0x2010, "constant buffer 0 at 0x2010"),
    ((1567, 1536), 0x1010, "program address 0x1010"),
])
def test_qmd_validation_rejects_a_bad_field(field, value, message) -> None:
    data = _patched(QMD(**GOOD).build(), *field, value)
    with pytest.raises(nvgpu.ChannelFault, match=message) as caught:
        nvgpu.check_qmd(data, 227 << 10)
    assert caught.value.code == nvgpu.ROBUST_CHANNEL_GR_EXCEPTION


def test_shared_memory_limit_is_the_generations() -> None:
    data = _patched(QMD(**GOOD).build(), 561, 544, 100 << 10)
    nvgpu.check_qmd(data, nvgpu.MAX_SHARED_PER_BLOCK["GH100"])
    with pytest.raises(nvgpu.ChannelFault, match="allows 101376"):
        nvgpu.check_qmd(data, nvgpu.MAX_SHARED_PER_BLOCK["AD102"])


def _vector_add(dev: Device):
    return dev.load(compiler.PREBUILT_DIR / "vector_add.fatbin", "vector_add_f32")


def _arrays(dev: Device, n: int = 256):
    buffers = [dev.allocate(4 * n) for _ in range(3)]
    buffers[0].copyin(np.ones(n, dtype=np.float32))
    buffers[1].copyin(np.ones(n, dtype=np.float32))
    return buffers


def test_a_bad_qmd_from_the_driver_is_a_channel_error_by_name(monkeypatch) -> None:
    with Device("mock:nv", timeout_s=2.0) as dev:
        program = _vector_add(dev)
        good_qmd = program.impl.qmd
        monkeypatch.setattr(program.impl, "qmd",
                            lambda *a: _patched(good_qmd(*a), 583, 580, 2))  # QMD version 2.0
        a, b, c = _arrays(dev)
        with pytest.raises(ChannelError, match="ROBUST_CHANNEL_GR_EXCEPTION") as caught:
            program(a, b, c, 256, global_size=256, local_size=128, wait=True)
        assert caught.value.code == 13
        gpu = dev.backend.machine.driver.gpu_model
        assert "version 2.0" in gpu.errors[0][1]
        with pytest.raises(ChannelError):
            dev.synchronize()  # the error stays until reset_compute_queue or a reopen
        dev.closed = True
        dev.backend.close()


def test_injected_channel_error_is_surfaced_with_its_name() -> None:
    dev = Device("mock:nv")
    try:
        a, b, c = _arrays(dev)
        program = _vector_add(dev)
        dev.backend.machine.driver.gpu_model.inject("rc")
        with pytest.raises(ChannelError, match="ROBUST_CHANNEL_GR_EXCEPTION"):
            program(a, b, c, 256, global_size=256, local_size=128, wait=True)
    finally:
        dev.closed = True
        dev.backend.close()


def test_mmu_fault_from_a_kernel_reading_unmapped_memory() -> None:
    dev = Device("mock:nv")
    try:
        a, b, c = _arrays(dev)
        program = _vector_add(dev)
        unmapped = 0x3000_0000  # below every UVM range the device made
        with pytest.raises(ChannelError, match="ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT") as caught:
            program(unmapped, b, c, 256, global_size=256, local_size=128, wait=True)
        assert caught.value.code == 31
        assert "0x30000000" in dev.backend.machine.driver.gpu_model.errors[0][1]
    finally:
        dev.closed = True
        dev.backend.close()


def test_injected_mmu_fault() -> None:
    dev = Device("mock:nv")
    try:
        a, b, c = _arrays(dev)
        program = _vector_add(dev)
        dev.backend.machine.driver.gpu_model.inject("mmu")
        with pytest.raises(ChannelError, match="MMU_ERR_FLT"):
            program(a, b, c, 256, global_size=256, local_size=128, wait=True)
    finally:
        dev.closed = True
        dev.backend.close()


def test_hung_semaphore_is_a_bounded_timeout_naming_what_it_waited_for() -> None:
    dev = Device("mock:nv", timeout_s=0.3)
    try:
        gpu = dev.backend.machine.driver.gpu_model
        buffer = dev.allocate(4096)
        buffer.copyin(bytes(4096))  # the copy queue submitted last: the next compute submission waits
        gpu.inject("hang")
        a, b, c = _arrays(dev)
        program = _vector_add(dev)
        value = program(a, b, c, 256, global_size=256, local_size=128)
        with pytest.raises(DeviceTimeout) as caught:
            dev.timeline.wait(value)
        message = str(caught.value)
        assert f"did not reach {value}" in message and "'timeline'" in message
        assert "compute GPFIFO" in message  # the queue's GPPut/GPGet
        assert any("injected hang" in state.blocked for state in gpu.channels.values())
    finally:
        dev.closed = True
        dev.backend.close()


def test_unknown_sass_is_an_illegal_instruction() -> None:
    dev = Device("mock:nv")
    try:
        program = _vector_add(dev)
        dev.backend.machine.driver.gpu_model.programs.by_prefix.clear()
        a, b, c = _arrays(dev)
        with pytest.raises(ChannelError, match="GR_EXCEPTION"):
            program(a, b, c, 256, global_size=256, local_size=128, wait=True)
        assert "illegal instruction" in dev.backend.machine.driver.gpu_model.errors[0][1]
    finally:
        dev.closed = True
        dev.backend.close()


def test_pushbuffer_decoding_of_every_header_kind() -> None:
    words = (gpfifo.incrementing(1, 0x400, 1, 2) + gpfifo.non_incrementing(1, 0x500, 3, 4)
             + gpfifo.one_increment(1, 0x600, 5, 6, 7) + gpfifo.immediate(2, 0x8, 9) + [0])
    segment = struct.pack(f"<{len(words)}I", *words)
    assert nvgpu.GPUModel._decode(segment) == [
        (1, 0x400, 1), (1, 0x404, 2), (1, 0x500, 3), (1, 0x500, 4), (1, 0x600, 5), (1, 0x604, 6),
        (1, 0x604, 7), (2, 0x8, 9)]
    with pytest.raises(nvgpu.ChannelFault, match="past the segment"):
        nvgpu.GPUModel._decode(struct.pack("<I", gpfifo.incrementing(0, 0x400, 1, 2)[0]))
    with pytest.raises(nvgpu.ChannelFault, match="SEC_OP 7"):
        nvgpu.GPUModel._decode(struct.pack("<I", 7 << 29 | 1))


@pytest.mark.parametrize("words, why", [
    (gpfifo.incrementing(1, 0, 0xC9C0), "SET_OBJECT 0xc9c0 on a channel"),  # not the channel's class
    (gpfifo.incrementing(1, 0xF0, 1), "host method 0xf0"),
    (gpfifo.incrementing(6, 0x400, 1), "subchannel 6, which no SET_OBJECT bound"),
])
def test_methods_the_host_refuses_are_pbdma_errors(words, why) -> None:
    dev = Device("mock:nv")
    try:
        queue = dev.compute_queue
        queue._words += words
        with pytest.raises(ChannelError, match="ROBUST_CHANNEL_PBDMA_ERROR"):
            dev.timeline.wait(queue.submit())
        assert why in dev.backend.machine.driver.gpu_model.errors[0][1]
    finally:
        dev.closed = True
        dev.backend.close()
