"""The AM SDMA 6.0 block against the mock Navi31: bring-up, copies, ring overrun, hangs and errors."""
from __future__ import annotations

import time

import pytest

import hal
from autogen.amd import irqsrcs_gfx_11_0_0 as srcid
from drivers.am.device import AMConfig, AMDevice
from drivers.am.sdma import COPY_MAX_BYTES, SDMAError
from hal.errors import DeviceLost, DeviceTimeout
from mockgpu import GPU_BDF, Machine

GPU = f"pci:{GPU_BDF}"
TIMEOUT_S = 0.3


@pytest.fixture
def machine(tmp_path):
    return Machine.default(lock_dir=str(tmp_path))


def open_device(machine, **config):
    pci = hal.open(GPU, os=machine.os, unbind=True)
    dev = AMDevice(pci, config=AMConfig(sdma_timeout_s=TIMEOUT_S, **config))
    return pci, dev


@pytest.mark.parametrize("size", [1, 7, 4096, 4097, 2 * COPY_MAX_BYTES + 5])
def test_vram_to_vram_copies(machine, size):
    gpu = machine.device(GPU_BDF)
    pci, dev = open_device(machine)
    sdma = dev.block("SDMA")
    source = dev.memory.alloc_vram(size + 1, purpose="source")
    destination = dev.memory.alloc_vram(size + 1, purpose="destination")
    payload = bytes((i * 13 + 5) % 251 for i in range(size))
    source.view.write(0, payload)
    sequence = sdma.copy(destination.mc_address, source.mc_address, size)
    sdma.wait(sequence)
    assert destination.view.read(0, size) == payload
    assert destination.view.read(size, 1) == b"\0"
    assert sdma.fence_value() == sequence
    dev.fini()
    assert gpu.sdma.running is False
    pci.close()


def test_ring_overrun_waits_for_the_engine_and_completes_in_order(machine):
    gpu = machine.device(GPU_BDF)
    pci, dev = open_device(machine, sdma_ring_size=1024)
    sdma = dev.block("SDMA")
    gpu.sdma.throttle_dwords = 16  # an engine slower than the writer
    gpu.sdma.throttle_delay_s = 0.0002
    seen = []
    fence_dwords = 4
    submissions = 10 * sdma.ring_bytes // (fence_dwords * 4)
    for _ in range(submissions):
        sdma.signal()
        seen.append(sdma.fence_value())
        assert sdma.wptr - sdma.rptr() <= sdma.ring_bytes  # nothing unconsumed was overwritten
    sdma.wait(sdma.sequence)
    assert sdma.fence_value() == sdma.sequence == submissions
    assert seen == sorted(seen)  # fence values only move forward
    assert seen[-1] < submissions  # the writer did run ahead of the engine
    dev.fini()
    pci.close()


def test_stalled_engine_times_out_naming_the_ring_and_pointers(machine):
    gpu = machine.device(GPU_BDF)
    pci, dev = open_device(machine, sdma_ring_size=256)
    sdma = dev.block("SDMA")
    gpu.sdma.stalled = True
    start = time.monotonic()
    with pytest.raises(DeviceTimeout, match=r"SDMA0 ring: room for 4 dwords.*rptr 0x14, wptr 0x"):
        for _ in range(100):
            sdma.signal()
    assert time.monotonic() - start < TIMEOUT_S + 0.5
    pci.close()


def test_an_invalid_packet_is_reported_naming_it(machine):
    pci, dev = open_device(machine)
    sdma = dev.block("SDMA")
    sdma.submit([0x000000FE])  # an opcode SDMA 6.0 does not have
    with pytest.raises(SDMAError, match="unknown opcode 254"):
        sdma.wait(sdma.signal())
    pci.close()


def test_a_misaligned_fence_is_reported_as_fence(machine):
    pci, dev = open_device(machine)
    sdma = dev.block("SDMA")
    from drivers.am.sdma import fence_packet
    sdma.submit(fence_packet(sdma.writeback.mc_address + 2, 1))
    with pytest.raises(SDMAError, match="SDMA_OP_FENCE"):
        sdma.wait(sdma.signal())
    pci.close()


def test_all_ones_device_is_device_lost(machine):
    gpu = machine.device(GPU_BDF)
    pci, dev = open_device(machine)
    sdma = dev.block("SDMA")
    gpu.sdma.stalled = True
    sequence = sdma.signal()
    gpu.vanish()
    with pytest.raises(DeviceLost):
        sdma.wait(sequence)


def test_trap_reaches_the_ih(machine, monkeypatch):
    gpu = machine.device(GPU_BDF)
    pci, dev = open_device(machine)
    sdma = dev.block("SDMA")
    posted = []
    monkeypatch.setattr(gpu.ih, "post", lambda client, source, **kw: posted.append(source) or True)
    sdma.wait(sdma.signal(interrupt=True))
    assert posted == [srcid.GFX_11_0_0__SRCID__SDMA_TRAP]
    pci.close()


def test_ring_test_fails_without_firmware(machine):
    gpu = machine.device(GPU_BDF)
    pci = hal.open(GPU, os=machine.os, unbind=True)
    gpu.sdma.reset("mode1")
    with pytest.raises(DeviceTimeout, match="ring test"):
        AMDevice(pci, config=AMConfig(sdma_timeout_s=TIMEOUT_S),
                 block_order=("NBIO", "HDP", "GMC", "SDMA"))
    pci.close()
