"""The unchanged AM driver over USB: the mock Navi31 behind the ASM24xx bridge cold-boots through
custom firmware (all blocks) and stock firmware over UAS (the blocks before the PSP; the whole boot
writes about 8 MB of firmware and cleared memory through BAR0 as one-dword TLPs, each several
SCSI commands: minutes in the mock, so that test runs only with GPUHAL_SLOW_TESTS=1), and host
<-> VRAM copies through SDMA and the staging window are exact at random sizes."""
from __future__ import annotations

import os
import random

import pytest

import hal
from drivers.am.device import AMConfig, AMDevice
from drivers.am.sdma import STAGING_SIZE
from hal.usb import asm24xx as proto
from mockgpu.amd.firmware_images import write_navi31_set
from mockgpu.usb import navi31_behind_bridge

SLOW = os.environ.get("GPUHAL_SLOW_TESTS") == "1"
EARLY_BLOCKS = ("NBIO", "HDP", "GMC", "IH")


@pytest.fixture(scope="module")
def firmware_dir(tmp_path_factory):
    return str(write_navi31_set(tmp_path_factory.mktemp("firmware")))


def boot(machine, firmware_dir, firmware="custom", uas=True, **options):
    bridge, gpu = navi31_behind_bridge(machine, firmware=firmware, uas=uas)
    pci = hal.open("usb:1-2", os=machine.os)
    device = AMDevice(pci, config=AMConfig(firmware_dir=firmware_dir, sdma_timeout_s=1.0), **options)
    return bridge, gpu, pci, device


def test_custom_firmware_cold_boot_and_copies_at_random_sizes(machine, firmware_dir):
    bridge, gpu, pci, device = boot(machine, firmware_dir)
    try:
        assert device.boot_kind == "cold"
        assert [block.block for block in device.hw_done][-1] == "SDMA"
        sdma = device.block("SDMA")
        # DMA memory is the 512 KiB window: the driver stages through three quarters of it, not 2 MiB
        assert sdma.staging_bytes == min(STAGING_SIZE, proto.SRAM_SIZE * 3 // 4)
        gmc = device.block("GMC")
        window = range(proto.SRAM_PCIE_ADDRESS, proto.SRAM_PCIE_ADDRESS + proto.SRAM_SIZE)
        assert gmc.dummy_page.bus_address in window
        rng = random.Random(2464)
        target = device.memory.alloc_vram(1 << 20, purpose="copy target")
        for size in (1, 4095, 4097, rng.randrange(1, 1 << 20), (1 << 20) - 3):
            offset = rng.randrange(0, (1 << 20) - size + 1)
            data = rng.randbytes(size)
            sdma.copy_to_vram(target, data, offset)
            assert bytes(gpu.vram[target.mc_address - device.memory.fb_base + offset:][:size]) == data
            assert sdma.copy_from_vram(target, size, offset) == data
        assert bridge.dma_faults == []
    finally:
        device.fini()
        pci.close()


def test_custom_firmware_copy_in_overlaps_each_chunk_with_the_previous_copy(machine, firmware_dir):
    bridge, gpu, pci, device = boot(machine, firmware_dir)
    try:
        sdma = device.block("SDMA")
        half = sdma.staging_bytes // 2
        target = device.memory.alloc_vram(8 * half, purpose="copy target")
        sdma.copy_to_vram(target, bytes(4096))  # the staging buffer is made
        link = machine.usb.link
        data = os.urandom(8 * half)
        start, transfers = link.clock_s, link.transfers
        sdma.copy_to_vram(target, data)
        elapsed = link.clock_s - start
        assert bytes(gpu.vram[target.mc_address - device.memory.fb_base:][:len(data)]) == data
        # per chunk one control latency (the window's arm) besides its bytes: the packets,
        # doorbell and fence read of the previous chunk travel with it
        per_chunk = link.control_latency_s + half / link.bytes_per_s
        assert elapsed < 8 * per_chunk + 2 * link.control_latency_s
        assert len(data) / elapsed > 800e6
        assert link.transfers - transfers < 8 * 32
        assert sdma.copy_from_vram(target, len(data)) == data
    finally:
        device.fini()
        pci.close()


def test_stock_firmware_boots_the_blocks_before_the_psp(machine, firmware_dir):
    bridge, gpu, pci, device = boot(machine, firmware_dir, firmware="stock", block_order=EARLY_BLOCKS)
    try:
        assert [block.block for block in device.hw_done] == list(EARLY_BLOCKS)
        assert pci.backend.bridge.uas
        assert bridge.dma_faults == []
    finally:
        device.fini()
        pci.close()


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="a whole stock-firmware boot takes minutes in the mock "
                                     "(set GPUHAL_SLOW_TESTS=1)")
def test_stock_firmware_full_cold_boot_and_copy(machine, firmware_dir):
    bridge, gpu, pci, device = boot(machine, firmware_dir, firmware="stock")
    try:
        assert device.boot_kind == "cold"
        sdma = device.block("SDMA")
        target = device.memory.alloc_vram(65536, purpose="copy target")
        data = os.urandom(65536 - 5)
        sdma.copy_to_vram(target, data, 3)
        assert sdma.copy_from_vram(target, len(data), 3) == data
    finally:
        device.fini()
        pci.close()


def test_gpu_dma_outside_the_window_faults_loudly_and_is_recorded(machine, firmware_dir, caplog):
    bridge, gpu, pci, device = boot(machine, firmware_dir)
    try:
        gart = device.block("GMC").gart
        host = pci.alloc_dma(4096)
        mapping = gart.map(host)
        sdma = device.block("SDMA")
        source = device.memory.alloc_vram(4096, purpose="source")
        sdma.wait(sdma.copy(mapping.va, source.mc_address, 4096))  # inside the window: fine
        assert bridge.dma_faults == []
        assert gpu.dma_write(0x1_0000_0000, b"\0" * 4) is False  # host RAM is not reachable
        assert bridge.dma_faults[-1].address == 0x1_0000_0000 and bridge.dma_faults[-1].write
        assert "outside the SRAM window" in caplog.text
        gart.unmap(mapping)
        pci.free_dma(host)
    finally:
        device.fini()
        pci.close()


def test_compute_device_over_usb_keeps_host_buffers_in_vram():
    from compute import device as compute_device
    from tools import mock_machines

    compute_device.register_mock_factory(mock_machines.navi31_usb)
    try:
        dev = compute_device.Device("mock:0")
        try:
            assert dev.backend.pci.device_string == "usb:1-2"
            data = os.urandom(700_001)  # more than the SRAM window: staged chunk by chunk
            buffer = dev.allocate(len(data))
            buffer.copyin(data)
            assert buffer.copyout() == data
            host = dev.allocate(4096, host=True)
            assert host.gpu_address >= dev.backend.am.memory.fb_base  # CPU-visible VRAM
            assert dev.backend.machine.machine.usb.devices["1-2"].dma_faults == []
        finally:
            dev.close()
    finally:
        compute_device.register_mock_factory(None)
