"""A lost device stays lost: once a backend raises DeviceLost (a USB bridge unplugged), PCIDevice
remembers it, and every later config access, BAR access through callbacks, DMA buffer access or
allocation raises DeviceLost without any transfer reaching the bus; mapped BARs keep their fast
path (the region handed out is the plain watched memory region)."""
from __future__ import annotations

import pytest
from autogen.linux import pci_regs

import hal
from hal.errors import DeviceLost
from hal.region import MemoryRegion, WatchedMemoryRegion
from mockgpu import EDU_BDF
from mockgpu.amd.gpu import REGISTER_BAR
from mockgpu.usb import navi31_behind_bridge

SCRATCH = 0x1000  # a BAR5 register the Navi31 model keeps as plain storage


@pytest.mark.parametrize("firmware", ["custom", "stock"])
def test_after_an_unplug_later_calls_raise_without_reaching_the_bus(machine, firmware):
    navi31_behind_bridge(machine, firmware=firmware)
    pci = hal.open("usb:1-2", os=machine.os)
    mmio = pci.bar(REGISTER_BAR)
    vram = pci.bar(0)
    staging = pci.alloc_dma(4096)
    mmio.write32(SCRATCH, 5)
    assert mmio.read32(SCRATCH) == 5
    machine.usb.unplug()
    with pytest.raises(DeviceLost, match="unplugged"):
        mmio.read32(SCRATCH)  # the transport finds the bridge gone
    assert pci.lost
    bus = machine.usb
    before = bus.requests
    later = [
        lambda: mmio.read32(SCRATCH),
        lambda: mmio.write32(SCRATCH, 1),
        lambda: mmio.read64(SCRATCH),
        lambda: vram.read(0, 64),
        lambda: vram.write(0, bytes(64)),
        lambda: pci.cfg_read16(pci_regs.PCI_VENDOR_ID),
        lambda: pci.cfg_write16(pci_regs.PCI_COMMAND, 0),
        lambda: pci.check_alive(),
        lambda: staging.region.write(0, bytes(512)),
        lambda: staging.region.read(0, 512),
        lambda: pci.alloc_dma(4096),
        lambda: pci.bar(REGISTER_BAR).read32(0),
    ]
    for call in later:
        with pytest.raises(DeviceLost):
            call()
    assert bus.requests == before  # nothing reached the bus after the first DeviceLost
    pci.close()


def test_a_lost_config_write_is_remembered_too(machine):
    navi31_behind_bridge(machine, firmware="custom")
    pci = hal.open("usb:1-2", os=machine.os)
    machine.usb.unplug()
    with pytest.raises(DeviceLost):
        pci.cfg_write16(pci_regs.PCI_COMMAND, 0)
    before = machine.usb.requests
    with pytest.raises(DeviceLost):
        pci.bar(REGISTER_BAR)
    with pytest.raises(DeviceLost):
        pci.cfg_read32(pci_regs.PCI_CLASS_REVISION)
    assert machine.usb.requests == before
    pci.close()


def test_mapped_bars_keep_the_memoryview_fast_path(machine):
    with hal.open(f"pci:{EDU_BDF}", os=machine.os, unbind=True) as pci:
        size = pci.backend.bar_resources()[0].size
        pci.backend.map_bar = lambda index: MemoryRegion(bytearray(size))  # what an mmap gives
        pci.backend.unmap_bar = lambda region: None
        region = pci.bar(0)
        assert type(region) is WatchedMemoryRegion  # no guard layer on loads and stores
        assert type(pci.alloc_dma(4096).region) is MemoryRegion  # host memory: untouched


def test_a_remote_server_that_goes_away_is_remembered(monkeypatch):
    from tools import gpu_server

    token = "sticky-token"
    running = gpu_server.serve(listen="tcp:127.0.0.1:0", mock=True, token=token.encode())
    monkeypatch.setenv("GPUHAL_REMOTE_TOKEN", token)
    try:
        pci = hal.open(f"remote:{running.target}")
        mmio = pci.bar(REGISTER_BAR)
        buffer = pci.alloc_dma(4096)  # over TCP: a callback region, each access a request
        running.server.stop()
        with pytest.raises(DeviceLost):
            mmio.read32(0)
        assert pci.lost
        trips = pci.backend.round_trips
        for call in (lambda: mmio.read32(0), lambda: pci.cfg_read16(0),
                     lambda: buffer.region.write(0, bytes(8)), lambda: buffer.region.read(0, 8),
                     lambda: pci.alloc_dma(4096)):
            with pytest.raises(DeviceLost):
                call()
        assert pci.backend.round_trips == trips  # nothing more was sent
        pci.close()
    finally:
        running.close()
