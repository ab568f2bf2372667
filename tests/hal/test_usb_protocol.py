"""hal.usb wire formats without a device: CBW/CSW, UAS IUs, TLP addressing, byte enables,
completion status, the device string, the interface scan, and the transport seam's argument checks."""
from __future__ import annotations

import struct

import pytest

from hal import devstring
from hal.errors import DeviceNotFound, InvalidArgument
from hal.usb import asm24xx as proto
from hal.usb.asm24xx import Completion, CompletionError, ScsiCommand
from mockgpu.usb.asm24xx import configuration


def test_cbw_is_the_31_byte_bulk_only_wrapper():
    command = ScsiCommand(proto.xdata_read_cdb(0xB296, 1), data_in=1)
    cbw = proto.encode_cbw(7, command)
    assert len(cbw) == proto.CBW_LENGTH
    signature, tag, length, flags, lun, cdb_length, cdb = proto.CBW.unpack(cbw)
    assert (signature, tag, length, flags, lun) == (0x43425355, 7, 1, proto.CBW_FLAG_IN, 0)
    assert cbw[:4] == b"USBC"
    assert cdb[:cdb_length] == bytes([0xE4, 1, 0x50, 0xB2, 0x96, 0])


def test_cbw_for_data_out_has_no_in_flag_and_the_out_length():
    command = ScsiCommand(proto.rw16_cdb(proto.SCSI_WRITE_16, 2, 8), data_out=bytes(4096))
    _, _, length, flags, _, cdb_length, cdb = proto.CBW.unpack(proto.encode_cbw(1, command))
    assert (length, flags, cdb_length) == (4096, 0, 16)
    assert struct.unpack(">BBQIBB", cdb) == (0x8A, 0, 2, 8, 0, 0)


def test_csw_decode_checks_length_and_signature():
    good = proto.CSW.pack(proto.CSW_SIGNATURE, 9, 3, proto.CSW_STATUS_FAIL)
    assert good[:4] == b"USBS"
    assert proto.decode_csw(good) == (9, 3, proto.CSW_STATUS_FAIL)
    with pytest.raises(InvalidArgument, match="13 bytes"):
        proto.decode_csw(good[:12])
    with pytest.raises(InvalidArgument, match="not USBS"):
        proto.decode_csw(b"XXXX" + good[4:])


def test_uas_command_iu_carries_the_tag_big_endian_and_a_16_byte_cdb():
    iu = proto.encode_command_iu(0x0102, proto.xdata_write_cdb(0x0554, 0x20))
    assert len(iu) == 32  # include/linux/usb/uas.h struct command_iu
    assert iu[0] == proto.IU_ID_COMMAND
    assert iu[2:4] == b"\x01\x02"
    assert iu[16:22] == bytes([0xE5, 0x20, 0x50, 0x05, 0x54, 0])


def test_sense_iu_decode_returns_tag_status_and_sense():
    sense = bytes(range(18))
    iu = proto.SENSE_IU_HEADER.pack(proto.IU_ID_STATUS, 0, 5, 0, proto.SCSI_STATUS_CHECK_CONDITION,
                                    bytes(7), len(sense)) + sense
    assert proto.decode_sense_iu(iu) == (5, proto.SCSI_STATUS_CHECK_CONDITION, sense)
    response = struct.pack(">BBH3sB", proto.IU_ID_RESPONSE, 0, 5, bytes(3), 0x0A) + bytes(12)
    with pytest.raises(InvalidArgument, match="status IU"):
        proto.decode_sense_iu(response)


def test_xdata_cdbs_put_the_17_bit_address_under_the_0x50_prefix():
    assert proto.xdata_read_cdb(0x1B210, 4) == bytes([0xE4, 4, 0x51, 0xB2, 0x10, 0])
    assert proto.xdata_write_cdb(0xB254, 0x0F) == bytes([0xE5, 0x0F, 0x50, 0xB2, 0x54, 0])


def test_config_address_and_its_limits():
    assert proto.config_address(1, 0, 0, 0x10) == 0x01000010
    assert proto.config_address(4, 31, 7, 0xFFC) == 4 << 24 | 31 << 19 | 7 << 16 | 0xFFC
    with pytest.raises(InvalidArgument):
        proto.config_address(1, 32, 0, 0)
    with pytest.raises(InvalidArgument):
        proto.config_address(1, 0, 0, 0x1000)


@pytest.mark.parametrize("offset,size,enables", [(0, 4, 0xF), (0, 1, 0x1), (3, 1, 0x8), (2, 2, 0xC)])
def test_byte_enables_of_aligned_accesses(offset, size, enables):
    assert proto.byte_enables(offset, size) == enables


@pytest.mark.parametrize("offset,size", [(1, 2), (2, 4), (0, 3)])
def test_byte_enables_refuse_misaligned_accesses(offset, size):
    with pytest.raises(InvalidArgument):
        proto.byte_enables(offset, size)


def test_posted_and_config_classification():
    assert proto.is_posted(proto.TLP_MEM_WRITE64) and proto.is_posted(proto.TLP_MEM_WRITE32)
    assert not proto.is_posted(proto.TLP_CFG_WRITE1)
    assert not proto.is_posted(proto.TLP_MEM_READ32)
    assert proto.is_config(proto.TLP_CFG_READ0) and proto.is_config(proto.TLP_CFG_WRITE1)
    assert not proto.is_config(proto.TLP_MEM_READ64)


def test_completion_header_decodes_status_and_byte_count():
    completion = Completion.from_header(0b001 << 13 | 4, proto.COMPLETION_HAS_DATA, 0)
    fields = (completion.status, completion.byte_count, completion.with_data)
    assert fields == (proto.CPL_UNSUPPORTED_REQUEST, 4, True)


@pytest.mark.parametrize("status,name", [(proto.CPL_UNSUPPORTED_REQUEST, "Unsupported Request"),
                                         (proto.CPL_COMPLETER_ABORT, "Completer Abort")])
def test_check_completion_names_status_and_address(status, name):
    completion = Completion(status, 4, False, 0)
    with pytest.raises(CompletionError, match=f"{name}.*") as info:
        proto.check_completion(completion, proto.TLP_MEM_READ64, 0x8_0000_1000, "memory read")
    assert info.value.address == 0x8_0000_1000 and info.value.status == status
    assert "0x800001000" in str(info.value)


def test_check_completion_wants_cpld_for_config_reads_and_cpl_for_writes():
    proto.check_completion(Completion(0, 4, True, 0), proto.TLP_CFG_READ1, 0, "config read")
    proto.check_completion(Completion(0, 4, False, 0), proto.TLP_CFG_WRITE1, 0, "config write")
    with pytest.raises(CompletionError, match="completion type"):
        proto.check_completion(Completion(0, 4, False, 0), proto.TLP_CFG_READ1, 0, "config read")


def test_uas_is_found_only_in_the_stock_configuration():
    assert proto.has_uas(configuration(proto.STOCK))
    assert not proto.has_uas(configuration(proto.CUSTOM))
    assert not proto.has_uas(b"\x00\x02")  # a zero-length descriptor ends the walk


def test_usb_device_strings():
    assert devstring.parse("usb:1-2") == devstring.DeviceString("usb", "1-2")
    assert devstring.parse("usb:3-1.4.2").bdf == "3-1.4.2"
    for bad in ("usb:", "usb:1", "usb:a-b", "usb:1-2."):
        with pytest.raises(DeviceNotFound, match="usb:BUS-PORT"):
            devstring.parse(bad)


def test_transport_checks_transfer_arguments(tmp_path):
    from hal.usb.transport import ENDPOINT_IN
    from mockgpu import Machine
    from mockgpu.usb import navi31_behind_bridge

    machine = Machine.default(lock_dir=str(tmp_path))
    navi31_behind_bridge(machine)
    transport = machine.usb.open("1-2")
    with pytest.raises(InvalidArgument, match="16 bits"):
        transport.submit_control(0x40, 0xE5, 0x10000, 0)
    with pytest.raises(InvalidArgument, match="takes a length"):
        transport.submit_control(0x40 | ENDPOINT_IN, 0xE4, 0, 0, b"data")
    with pytest.raises(InvalidArgument, match="IN takes a length"):
        transport.submit_bulk(proto.EP_DATA_IN, b"data")
    with pytest.raises(InvalidArgument, match="OUT takes data"):
        transport.submit_bulk(proto.EP_DATA_OUT, 64)
    pending = transport.submit_bulk(proto.EP_DATA_IN, 64)  # nothing armed: never answered
    transport.cancel(pending)
    assert pending.done and pending.error is not None and pending.error.errno == 125  # ECANCELED


def test_stock_bridge_falls_back_to_bulk_only_without_streams(tmp_path, monkeypatch):
    from mockgpu import Machine
    from mockgpu.usb import navi31_behind_bridge
    from mockgpu.usb.bus import MockTransport

    machine = Machine.default(lock_dir=str(tmp_path))
    model, _ = navi31_behind_bridge(machine, firmware="stock")
    monkeypatch.setattr(MockTransport, "alloc_streams", lambda self, endpoints, count: 0)
    bridge = proto.open_bridge(machine.usb.open("1-2"))
    assert not bridge.uas and model.alt_setting == proto.ALT_BOT
    bridge.xdata_write(0x0700, b"\x42")
    assert bridge.xdata_read(0x0700, 1) == b"\x42"
