"""The remote client against tools.gpu_server on the mock Navi31: the unchanged AM driver cold-boots
through it over a Unix socket (DMA buffers shared by fd) and over TCP (copied), compute copies are
correct at random sizes, and a device the server loses, or a server that goes away, is DeviceLost
on the client's next access."""
from __future__ import annotations

import random

import pytest

import hal
from compute.device import Device
from drivers.am.device import AMConfig, AMDevice
from hal.errors import DeviceLost
from hal.region import CallbackRegion, MemoryRegion
from mockgpu import GPU_BDF
from tools import gpu_server

TOKEN = b"test-token"
MMIO_BAR = 5  # the Navi31 register BAR (SOC21 parts map their registers from BAR 5)
AM_CONFIG = dict(sdma_timeout_s=2.0, smu_mode1_wait_s=0.02, smu_mode1_ready_timeout_s=0.5)


@pytest.fixture(params=["unix", "tcp"])
def served(request, tmp_path, monkeypatch):
    if request.param == "unix":
        running = gpu_server.serve(listen=f"unix:{tmp_path}/gpu.sock", mock=True)
    else:
        running = gpu_server.serve(listen="tcp:127.0.0.1:0", mock=True, token=TOKEN)
        monkeypatch.setenv("GPUHAL_REMOTE_TOKEN", TOKEN.decode())
    running.kind = request.param
    yield running
    running.close()


def test_am_cold_boots_through_the_socket(served):
    pci = hal.open(f"remote:{served.target}")
    dev = AMDevice(pci, config=AMConfig(firmware_dir=served.firmware_dir, **AM_CONFIG))
    try:
        assert dev.boot_kind == "cold" and pci.holds_ownership_lock
        gpu = served.mock.machine.device(GPU_BDF)
        assert gpu.psp.autoload_started and gpu.smu.running
        sdma = dev.block("SDMA")
        source = dev.memory.alloc_vram(8192, purpose="source")
        destination = dev.memory.alloc_vram(8192, purpose="destination")
        payload = random.Random(3).randbytes(8192)
        source.view.write(0, payload)
        sdma.wait(sdma.copy(destination.mc_address, source.mc_address, len(payload)))
        assert destination.view.read(0, len(payload)) == payload
        # DMA memory is the server's PCIDevice.alloc_dma buffer: the same bytes on both sides
        client_buffer = pci.alloc_dma(4096)
        server_buffers = list(served.server.session.buffers.values())
        server_buffer = server_buffers[-1]
        assert client_buffer.bus_addresses == server_buffer.bus_addresses
        client_buffer.region.write(100, b"shared")
        expected = MemoryRegion if served.kind == "unix" else CallbackRegion
        assert isinstance(client_buffer.region, expected)
        pci.bar(MMIO_BAR).read32(0)  # a round trip: posted writes before it are carried out
        assert server_buffer.region.read(100, 6) == b"shared"
    finally:
        dev.fini()
        pci.close()
    assert served.server.wait_idle(5.0)


def test_compute_copies_at_random_sizes(served):
    rng = random.Random(11)
    with Device(f"remote:{served.target}", config=AMConfig(firmware_dir=served.firmware_dir)) as dev:
        for size in [1, 3, 4096, 4097] + [rng.randrange(1, 300_000) for _ in range(4)]:
            data = rng.randbytes(size)
            buffer = dev.allocate(size)
            buffer.copyin(data)
            assert buffer.copyout() == data
            buffer.free()


def test_a_device_lost_on_the_server_is_device_lost_on_the_client(served):
    pci = hal.open(f"remote:{served.target}")
    bar = pci.bar(MMIO_BAR)
    bar.read32(0)
    served.mock.machine.surprise_remove(GPU_BDF)
    with pytest.raises(DeviceLost, match="lost"):
        bar.read32(0)
    trips = pci.backend.round_trips
    with pytest.raises(DeviceLost):
        pci.cfg_read16(0)
    with pytest.raises(DeviceLost):
        bar.write32(0, 1)
    assert pci.backend.round_trips == trips  # later accesses do not reach the socket
    pci.close()


def test_a_server_that_goes_away_is_device_lost_not_a_hang(served):
    pci = hal.open(f"remote:{served.target}")
    buffer = pci.alloc_dma(4096)
    served.server.stop()
    with pytest.raises(DeviceLost, match="closed|failed"):
        pci.bar(MMIO_BAR).read32(0)
    with pytest.raises(DeviceLost):
        pci.alloc_dma(4096)
    if served.kind == "unix":
        buffer.region.write(0, b"still memory")  # a mapped buffer stays readable memory
        assert buffer.region.read(0, 12) == b"still memory"
    pci.close()


def test_the_tinygpu_dialect_needs_no_gpuhal_extension(tmp_path):
    from hal.macos import tinygpu

    running = gpu_server.serve(listen=f"unix:{tmp_path}/tinygpu.sock", mock=True)
    try:
        pci = tinygpu.connect_app(running.socket_path)
        assert pci.backend.name == "tinygpu" and pci.vendor_id == 0x1002
        assert sorted(bar.index for bar in pci.bars()) == [0, 2, 4, 5]  # sized by MAP_BAR
        buffer = pci.alloc_dma(3 * 4096)
        assert isinstance(buffer.region, MemoryRegion) and buffer.region.read(0, 64) == bytes(64)
        assert len(buffer.bus_addresses) == 3
        pci.close()
        assert running.server.wait_idle(5.0)
    finally:
        running.close()


def test_posted_writes_wait_for_a_request_or_the_clock(tmp_path, monkeypatch):
    import time

    running = gpu_server.serve(listen="tcp:127.0.0.1:0", mock=True, token=TOKEN)
    monkeypatch.setenv("GPUHAL_REMOTE_TOKEN", TOKEN.decode())
    try:
        pci = hal.open(f"remote:{running.target}")
        buffer = pci.alloc_dma(4096)  # over TCP: a server buffer written by posted SYSMEM_WRITEs
        server_buffer = list(running.server.session.buffers.values())[-1]
        buffer.region.write(0, b"batched")
        time.sleep(0.05)  # not the device's seam: nothing is sent
        assert server_buffer.region.read(0, 7) == bytes(7)
        deadline = pci.os.monotonic() + 5.0  # the client reading its clock sends them
        while server_buffer.region.read(0, 7) != b"batched" and time.monotonic() < deadline:
            time.sleep(0.001)
        assert server_buffer.region.read(0, 7) == b"batched"
        buffer.region.write(8, b"then a read")
        assert buffer.region.read(8, 11) == b"then a read"  # a request carries them first
        pci.close()
    finally:
        running.close()
