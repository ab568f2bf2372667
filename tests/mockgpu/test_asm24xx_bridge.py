"""The ASM24xx bridge model on its own: descriptors, the custom firmware's vendor requests, the
stock firmware's BOT and UAS state machines, the TLP engine's completion status, the SRAM DMA,
slot power, and the link model's simulated time."""
from __future__ import annotations

import struct

import pytest

from hal.errors import HalError
from hal.usb import asm24xx as proto
from hal.usb.asm24xx import CompletionError, CustomFirmwareBridge, ScsiCommand, StockFirmwareBridge
from hal.usb.transport import ENDPOINT_IN, REQUEST_TYPE_VENDOR, TransferStall
from mockgpu import Machine
from mockgpu.usb import navi31_behind_bridge
from mockgpu.usb.asm24xx import configuration


@pytest.fixture
def machine(tmp_path):
    return Machine.default(lock_dir=str(tmp_path))


def custom_bridge(machine):
    model, gpu = navi31_behind_bridge(machine, firmware="custom")
    return model, gpu, CustomFirmwareBridge(machine.usb.open("1-2"))


def stock_bridge(machine, uas=True):
    model, gpu = navi31_behind_bridge(machine, firmware="stock", uas=uas)
    transport = machine.usb.open("1-2")
    return model, gpu, proto.open_bridge(transport)


def test_configuration_descriptor_lists_both_alt_settings_and_the_uas_pipes():
    stock = configuration(proto.STOCK)
    assert stock[1] == 0x02 and int.from_bytes(stock[2:4], "little") == len(stock)
    interfaces = [stock[i:i + 9] for i in range(len(stock)) if stock[i:i + 2] == bytes([9, 4])]
    assert [(i[3], i[5], i[7]) for i in interfaces] == [(0, 0x08, 0x50), (1, 0x08, 0x62)]
    pipes = [stock[i + 2] for i in range(len(stock) - 3) if stock[i:i + 2] == bytes([4, 0x24])]
    assert sorted(pipes) == [1, 2, 3, 4]  # command, status, data-in, data-out pipe usage
    assert proto.has_uas(stock) and not proto.has_uas(configuration(proto.STOCK, uas=False))


def test_custom_xdata_requests_and_unknown_requests_stall(machine):
    model, _, bridge = custom_bridge(machine)
    bridge.xdata_write(0x0554, b"\x12\x34")
    assert bridge.xdata_read(0x0554, 2) == b"\x12\x34"
    assert model.xdata[0x0555] == 0x34
    with pytest.raises(TransferStall):
        bridge.transport.control_in(REQUEST_TYPE_VENDOR | ENDPOINT_IN, 0x99, 0, 0, 4)


def test_tlp_to_nothing_is_unsupported_request_and_config_only_reaches_device_0(machine):
    model, gpu, bridge = custom_bridge(machine)
    assert bridge.memory_read32 and model.port.cfg  # nothing assigned yet: no window, no BAR
    completion = bridge.tlp(proto.TLP_MEM_READ32, 0x1000_0000, proto.ALL_BYTES)
    assert completion.status == proto.CPL_UNSUPPORTED_REQUEST
    port_vendor = bridge.config_read(0, 0, 0, 0, 2, type1=False)
    assert port_vendor.status == proto.CPL_SUCCESS and port_vendor.value == model.port.identity.vendor
    bridge.config_write(0, 0, 0, 0x19, 1, 1, type1=False)  # secondary bus 1
    gpu_id = bridge.config_read(1, 0, 0, 2, 2, type1=True)
    assert gpu_id.value == gpu.identity.device and gpu_id.byte_count == 4 and gpu_id.with_data
    assert bridge.config_read(1, 1, 0, 0, 2, type1=True).status == proto.CPL_UNSUPPORTED_REQUEST
    assert bridge.config_read(2, 0, 0, 0, 2, type1=True).status == proto.CPL_UNSUPPORTED_REQUEST
    with pytest.raises(CompletionError, match="Unsupported Request"):
        bridge.memory_read32(0x1000_0000)


def test_stock_tlp_through_xdata_registers_matches_custom(machine):
    model, gpu, bridge = stock_bridge(machine)
    assert isinstance(bridge, StockFirmwareBridge) and bridge.uas and bridge.max_streams == 16
    bridge.config_write(0, 0, 0, 0x19, 1, 1, type1=False)
    completion = bridge.config_read(1, 0, 0, 0, 4, type1=True)
    assert completion.value == gpu.identity.device << 16 | gpu.identity.vendor
    assert model.xdata[proto.XDATA_TLP_FMT_TYPE] == proto.TLP_CFG_READ1
    bridge.flush()
    assert model.xdata[proto.XDATA_TLP_STATUS] & proto.TLP_STATUS_COMPLETE == 0  # acknowledged


def test_stock_xdata_read_and_write_through_scsi_both_transports(machine):
    for uas in (True, False):
        one = Machine.default(lock_dir=machine.lock_dir)
        model, _, bridge = stock_bridge(one, uas=uas)
        assert bridge.uas == uas
        bridge.xdata_write(0x0700, bytes(range(40)))
        assert bridge.xdata_read(0x0700, 40) == bytes(range(40))
        assert bridge.xdata_read(0x0700, 300)[:40] == bytes(range(40))  # two E4 commands (255 max)


def test_stock_unknown_scsi_command_is_check_condition(machine):
    model, _, bridge = stock_bridge(machine)
    with pytest.raises(HalError, match=r"rejected SCSI command 0x12.*sense 70"):
        bridge.execute([ScsiCommand(bytes([0x12, 0, 0, 0, 36, 0]), data_in=36)])
    bridge.xdata_write(0x0700, b"\x01")
    assert bridge.xdata_read(0x0700, 1) == b"\x01"  # the bridge is usable after the error


def test_bot_invalid_cbw_stalls(machine):
    model, _, bridge = stock_bridge(machine, uas=False)
    with pytest.raises(TransferStall):
        bridge.transport.bulk_out(proto.EP_DATA_OUT, b"USBC" + bytes(27))  # zero-length CDB


def test_uas_overlapped_tag_gets_a_response_iu(machine):
    model, _, bridge = stock_bridge(machine)
    transport = bridge.transport
    status = transport.submit_bulk(proto.EP_STATUS_IN, 64, stream=3)
    first = proto.encode_command_iu(3, proto.rw16_cdb(proto.SCSI_WRITE_16, 0, 1))
    transport.bulk_out(proto.EP_COMMAND_OUT, first)  # waits for its data: tag 3 stays busy
    transport.bulk_out(proto.EP_COMMAND_OUT, proto.encode_command_iu(3, proto.xdata_read_cdb(0, 1)))
    transport.reap([status])
    iu_id, _, tag, _, code = struct.unpack(">BBH3sB", status.result)
    assert (iu_id, tag, code) == (proto.IU_ID_RESPONSE, 3, 0x0A)


def test_sram_dma_both_personalities_and_the_xdata_alias(machine):
    model, _, bridge = custom_bridge(machine)
    data = bytes(range(256)) * 128
    bridge.sram_write(proto.SRAM_SLOT_SIZE, data)
    assert not model.sram.strip(b"\0")  # posted: still in flight
    bridge.flush()
    assert bytes(model.sram[proto.SRAM_SLOT_SIZE:proto.SRAM_SLOT_SIZE + len(data)]) == data
    assert bridge.sram_read(proto.SRAM_SLOT_SIZE, len(data)) == data
    model.sram[:4] = b"\xaa\xbb\xcc\xdd"
    assert bridge.xdata_read(proto.SRAM_XDATA_ADDRESS, 4) == b"\xaa\xbb\xcc\xdd"
    with pytest.raises(TransferStall):  # past the end of the SRAM
        bridge.transport.control_out(REQUEST_TYPE_VENDOR, proto.REQUEST_SRAM_DMA, 64, 31 | 1 << 8)
    other = Machine.default(lock_dir=machine.lock_dir)
    model, _, stock = stock_bridge(other)
    stock.sram_write(512, data[:4096])
    assert stock.sram_read(512, 4096) == data[:4096]
    with pytest.raises(HalError, match="rejected SCSI command 0x88"):
        stock.execute([ScsiCommand(proto.rw16_cdb(proto.SCSI_READ_16, 1024, 1), data_in=512)])


def test_slot_power_off_holds_the_gpu_in_reset(machine):
    model, gpu, bridge = custom_bridge(machine)
    bridge.config_write(0, 0, 0, 0x19, 1, 1, type1=False)
    bridge.pcie_power(False)
    assert bridge.config_read(1, 0, 0, 0, 2, type1=True).status == proto.CPL_UNSUPPORTED_REQUEST
    bridge.pcie_power(True)
    assert bridge.config_read(1, 0, 0, 0, 2, type1=True).value == gpu.identity.vendor


def test_link_time_overlaps_latency_of_transfers_in_flight(machine):
    model, _, bridge = custom_bridge(machine)
    link = machine.usb.link
    transport = bridge.transport
    start = link.clock_s
    for _ in range(8):
        transport.control_out(REQUEST_TYPE_VENDOR, proto.REQUEST_XDATA_WRITE, 0x700, 1)
    serial = link.clock_s - start
    assert serial == pytest.approx(8 * link.control_latency_s)
    start = link.clock_s
    batch = [transport.submit_control(REQUEST_TYPE_VENDOR, proto.REQUEST_XDATA_WRITE, 0x700, 1)
             for _ in range(8)]
    transport.reap(batch)
    assert link.clock_s - start == pytest.approx(link.control_latency_s)
    start = link.clock_s
    bridge.sram_write(0, bytes(proto.SRAM_SIZE))
    bridge.flush()  # posted until now
    # one arm, one bulk transfer: the bytes at the Gen 2 payload rate dominate
    assert link.clock_s - start == pytest.approx(link.control_latency_s + link.bulk_latency_s
                                                 + proto.SRAM_SIZE / link.bytes_per_s, rel=0.05)


def test_custom_sram_write_is_posted_until_a_write_tlp_that_may_start_dma_from_it(machine):
    model, _, bridge = custom_bridge(machine)
    data = bytes(range(256)) * 64
    bridge.sram_write(0, data)
    assert not model.sram.strip(b"\0")  # in flight: the host did not wait for it
    # a write TLP may be the doorbell that makes the device read that SRAM: the data lands first
    bridge.memory_write32(proto.SRAM_PCIE_ADDRESS - 0x1000, 1)
    assert bytes(model.sram[:len(data)]) == data
    assert len(bridge._posted) == 1  # the TLP itself stays posted
    bridge.flush()
    # the next SRAM transfer also waits for the one in flight; short writes go as single TLPs,
    # leaving the bulk OUT pipe to the window
    bridge.sram_write(proto.SRAM_SLOT_SIZE, data)
    before = model.tlps
    bridge.memory_write(proto.SRAM_PCIE_ADDRESS - 0x1000, bytes(16))
    assert bytes(model.sram[proto.SRAM_SLOT_SIZE:proto.SRAM_SLOT_SIZE + len(data)]) == data
    assert all(transfer.kind == "control" for transfer in bridge._posted)
    bridge.flush()
    assert model.tlps - before == 4
