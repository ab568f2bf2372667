"""The usb: backend over the mock ASM24xx bridge, each personality (custom firmware, stock over
UAS, stock over Bulk-Only): enumeration and BAR assignment behind the bridge, config space, MMIO as
TLPs, completion errors, the SRAM window as DMA memory, and the transport faults (stall, timeout,
short transfer, unplug) as typed errors within the timeout."""
from __future__ import annotations

import os
import time

import pytest
from autogen.linux import pci_regs

import hal
from hal.errors import DeviceBusy, DeviceLost, DeviceNotFound, DeviceTimeout, OutOfMemory
from hal.usb import asm24xx as proto
from hal.usb.asm24xx import CompletionError
from hal.usb.backend import MEM32_BASE, PREF64_BASE
from hal.usb.transport import ShortTransfer, TransferStall
from mockgpu.amd.gpu import REGISTER_BAR
from mockgpu.usb import navi31_behind_bridge

PERSONALITIES = [("custom", True), ("stock", True), ("stock", False)]
IDS = ["custom", "stock-uas", "stock-bot"]
SCRATCH = 0x1000  # a BAR5 register the Navi31 model keeps as plain storage


@pytest.fixture(params=PERSONALITIES, ids=IDS)
def usb(machine, request):
    firmware, uas = request.param
    bridge, gpu = navi31_behind_bridge(machine, firmware=firmware, uas=uas)
    return machine, bridge, gpu


@pytest.fixture
def custom(machine):
    bridge, gpu = navi31_behind_bridge(machine, firmware="custom")
    return machine, bridge, gpu


def test_open_reads_the_gpu_and_assigns_its_bars_behind_the_bridge(usb):
    machine, bridge, gpu = usb
    with hal.open("usb:1-2", os=machine.os) as pci:
        assert (pci.vendor_id, pci.device_id) == (gpu.identity.vendor, gpu.identity.device)
        bars = {info.index: info for info in pci.bars()}
        assert bars[0].address == PREF64_BASE and bars[0].is_64bit and bars[0].prefetchable
        assert bars[2].address >= PREF64_BASE + bars[0].size
        assert bars[5].address == MEM32_BASE and not bars[5].is_64bit
        assert 4 not in bars  # I/O BARs are left unassigned
        assert gpu.bar_address(0) == PREF64_BASE
        assert pci.cfg_read16(pci_regs.PCI_COMMAND) & pci_regs.PCI_COMMAND_MASTER
        assert bridge.port.bus_master_enabled() and bridge.port.memory_enabled()
        assert pci.dma_window == proto.SRAM_SIZE
        assert pci.device_string == "usb:1-2"


def test_mmio_reads_and_writes_reach_the_register_file(usb):
    machine, bridge, gpu = usb
    with hal.open("usb:1-2", os=machine.os) as pci:
        mmio = pci.bar(REGISTER_BAR)
        mmio.write32(SCRATCH, 0xCAFEF00D)
        assert mmio.read32(SCRATCH) == 0xCAFEF00D
        assert gpu.regfile.storage[SCRATCH:SCRATCH + 4] == bytes.fromhex("0df0feca")
        mmio.write64(SCRATCH + 8, 0x1122334455667788)
        assert mmio.read64(SCRATCH + 8) == 0x1122334455667788


def test_vram_bulk_read_and_write_and_unaligned_edges(usb):
    machine, bridge, gpu = usb
    payload = os.urandom(4096 + 6)
    with hal.open("usb:1-2", os=machine.os) as pci:
        vram = pci.bar(0)
        vram.write(0x10001, payload)
        assert vram.read(0x10001, len(payload)) == payload
        assert bytes(gpu.vram[0x10001:0x10001 + len(payload)]) == payload
        assert gpu.vram[0x10000] == 0  # the byte before the unaligned head was not touched


def test_config_space_writes_and_capability_walk(usb):
    machine, bridge, gpu = usb
    with hal.open("usb:1-2", os=machine.os) as pci:
        assert pci.find_capability(pci_regs.PCI_CAP_ID_EXP) is not None
        assert pci.link_status().width > 0
        pci.cfg_write8(pci_regs.PCI_CACHE_LINE_SIZE, 0x10)
        assert gpu.cfg.read(pci_regs.PCI_CACHE_LINE_SIZE, 1) == 0x10


def test_dma_buffers_live_in_the_sram_window(usb):
    machine, bridge, gpu = usb
    with hal.open("usb:1-2", os=machine.os) as pci:
        first = pci.alloc_dma(4096)
        second = pci.alloc_dma(8192)
        assert first.bus_address == proto.SRAM_PCIE_ADDRESS
        assert proto.SRAM_PCIE_ADDRESS < second.bus_address < proto.SRAM_PCIE_ADDRESS + proto.SRAM_SIZE
        data = os.urandom(8192)
        second.region.write(0, data)
        pci.backend.bridge.flush()  # custom firmware: the SRAM write is posted
        offset = second.bus_address - proto.SRAM_PCIE_ADDRESS
        assert bytes(bridge.sram[offset:offset + 8192]) == data
        second.region.write32(12, 0xA5A5A5A5)  # a partial update keeps the bytes around it
        assert second.region.read(8, 12) == data[8:12] + bytes.fromhex("a5a5a5a5") + data[16:20]
        bridge.sram[offset + 100] = 0x5A  # the GPU wrote there
        assert second.region.read(100, 1) == b"\x5a"
        with pytest.raises(OutOfMemory, match="SRAM window"):
            pci.alloc_dma(proto.SRAM_SIZE)


def test_unsupported_request_and_completer_abort_name_the_address(custom):
    machine, bridge, gpu = custom
    with hal.open("usb:1-2", os=machine.os) as pci:
        base = pci.bar_info(REGISTER_BAR).address
        bridge.completer_abort.append((base + 0x2000, base + 0x2004))
        mmio = pci.bar(REGISTER_BAR)
        with pytest.raises(CompletionError, match=r"Completer Abort") as info:
            mmio.read32(0x2000)
        assert info.value.address == base + 0x2000
        gpu.cfg.write(pci_regs.PCI_COMMAND, 2, 0)  # the GPU stops decoding memory: UR
        with pytest.raises(CompletionError, match="Unsupported Request"):
            mmio.read32(SCRATCH)


def test_surprise_removal_is_device_lost_not_a_hang(usb):
    machine, bridge, gpu = usb
    with hal.open("usb:1-2", os=machine.os) as pci:
        mmio = pci.bar(REGISTER_BAR)
        gpu.present = False
        start = time.monotonic()
        with pytest.raises(DeviceLost):
            mmio.read32(SCRATCH)
        with pytest.raises(DeviceLost):
            pci.cfg_read16(pci_regs.PCI_VENDOR_ID)
        assert time.monotonic() - start < 2


def test_unplugged_bridge_is_device_lost(usb):
    machine, bridge, gpu = usb
    pci = hal.open("usb:1-2", os=machine.os)
    mmio = pci.bar(REGISTER_BAR)
    machine.usb.unplug()
    with pytest.raises(DeviceLost, match="unplugged"):
        mmio.read32(SCRATCH)
    with pytest.raises(DeviceLost):
        pci.alloc_dma(4096).region.write(0, bytes(512))
    pci.close()  # closing what is gone releases everything without another error


def test_stall_is_a_typed_error_and_the_next_request_works(usb):
    machine, bridge, gpu = usb
    with hal.open("usb:1-2", os=machine.os) as pci:
        mmio = pci.bar(REGISTER_BAR)
        endpoint = 0 if bridge.firmware == "custom" else proto.EP_DATA_IN
        machine.usb.faults.stall[endpoint] = 1
        with pytest.raises(TransferStall) as info:
            mmio.read32(SCRATCH)
        assert info.value.errno == 32  # EPIPE
        mmio.write32(SCRATCH, 7)
        assert mmio.read32(SCRATCH) == 7


def test_hung_transfer_times_out_within_its_bound(usb):
    machine, bridge, gpu = usb
    with hal.open("usb:1-2", os=machine.os) as pci:
        mmio = pci.bar(REGISTER_BAR)
        endpoint = 0 if bridge.firmware == "custom" else (
            proto.EP_STATUS_IN if bridge.alt_setting == proto.ALT_UAS else proto.EP_DATA_IN)
        machine.usb.faults.hang[endpoint] = 1
        clock = machine.usb.link.clock_s
        start = time.monotonic()
        with pytest.raises(DeviceTimeout, match="no answer within 1 s"):
            mmio.read32(SCRATCH)
        assert time.monotonic() - start < 1  # simulated time: nothing sleeps
        assert machine.usb.link.clock_s - clock >= 1.0 - 1e-9  # the timeout passed on the link clock


def test_short_dma_transfer_is_reported(custom):
    machine, bridge, gpu = custom
    with hal.open("usb:1-2", os=machine.os) as pci:
        buffer = pci.alloc_dma(16384)
        machine.usb.faults.short[proto.EP_DATA_IN] = 100
        with pytest.raises(ShortTransfer) as info:
            buffer.region.read(0, 16384)
        assert (info.value.expected, info.value.actual) == (16384, 100)


def test_second_open_is_busy_and_missing_port_is_not_found(custom):
    machine, bridge, gpu = custom
    with hal.open("usb:1-2", os=machine.os):
        with pytest.raises(DeviceBusy):
            hal.open("usb:1-2", os=machine.os)
    with pytest.raises(DeviceNotFound, match="no USB device at 3-1"):
        hal.open("usb:3-1", os=machine.os)


def test_posted_writes_stay_in_flight_until_a_read(custom):
    machine, bridge, gpu = custom
    with hal.open("usb:1-2", os=machine.os) as pci:
        mmio = pci.bar(REGISTER_BAR)
        link = machine.usb.link
        start = link.clock_s
        for index in range(8):
            mmio.write32(SCRATCH + 4 * index, index)
        in_flight = link.clock_s - start
        assert mmio.read32(SCRATCH + 28) == 7  # the read waited for every write
        # eight control transfers that overlap cost far less than eight round trips
        assert link.clock_s - start < 8 * link.control_latency_s
        assert in_flight == 0  # none had to complete before the read


def test_close_after_unplug_with_writes_in_flight_is_quiet_and_bar_sizes_are_refused(custom):
    machine, bridge, gpu = custom
    from hal.errors import UnsupportedOperation

    with pytest.raises(UnsupportedOperation, match="resized"):
        hal.open("usb:1-2", os=machine.os, bar_sizes={0: "max"})
    pci = hal.open("usb:1-2", os=machine.os)
    pci.bar(REGISTER_BAR).write32(SCRATCH, 1)  # posted: still in flight
    machine.usb.unplug()
    pci.close()
