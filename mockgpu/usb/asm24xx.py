"""The ASM24xx USB-to-PCIe bridge model: USB descriptors, XDATA, the TLP engine, the SRAM window,
both firmware personalities, and the PCIe port a device model sits behind.

    bridge = ASM24xxModel(machine, firmware="custom")     # or "stock" (uas=True: UAS, else BOT)
    gpu = bridge.attach(Navi31GPU())                       # bus 1, device 0, behind the port
    machine.usb.plug("1-2", bridge)

USB side (what hal.usb.asm24xx speaks, see that module for the sources of every fact):
- custom firmware (ADD1:0001, vendor-class interface): control requests E4/E5 (XDATA), F0 (one TLP;
  modes 1 and 2 stream dwords over bulk OUT/IN), F2 (arms an SRAM DMA for the next bulk transfer),
  F3 (slot power); anything else is a STALL;
- stock firmware (174C:2464, mass storage): alt 0 Bulk-Only Transport (CBW, data, CSW; a CBW
  that is not valid stalls both bulk endpoints, as the BOT spec requires) and alt 1 UAS (command IU
  on the command pipe, data and status on the stream of its tag; an IU reusing a busy tag gets an
  Overlapped Tag response). SCSI commands: E4 (read XDATA), E5 (write an XDATA byte), READ(16) and
  WRITE(16) of the SRAM (LBA * 512 from its start); others end in CHECK CONDITION, ILLEGAL REQUEST.

PCIe side: the TLP engine in XDATA (registers at 0xB210-0xB296) sends configuration requests to
the bridge's own downstream port (bus 0, type 0) or below it (type 1, the port's secondary bus,
device 0 only), and memory requests through the port's windows to whichever BAR decodes the
address. A request nothing decodes completes as Unsupported Request; addresses listed in
`completer_abort` complete as Completer Abort. Memory writes are posted.

The downstream device's DMA reaches only the SRAM window (PCIe 0x200000, 512 KiB): the device's
`dma_port` is this model, and any other address is refused, recorded in `dma_faults` and logged.
The firmwares do not enumerate the link: BARs and bus numbers stay unassigned until the host
programs them through configuration requests (hal.usb.backend does).
"""
from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

from autogen.linux import pci_regs

from hal.usb import asm24xx as proto
from hal.usb.transport import (ENDPOINT_IN, REQUEST_TYPE_VENDOR, DeviceIdentity, Transfer, TransferStall,
                               stalled)
from mockgpu.pci import BarKind, Bridge, Identity, PCIeInfo, PCIeLink, PCIFunction
from mockgpu.usb.bus import SPEED_SUPERSPEED_PLUS_MBPS, NotReady, USBDeviceModel

log = logging.getLogger(__name__)

XDATA_SIZE = 0x20000  # tinygrad usb.py: XDATA addresses are masked to 17 bits (0x1FFFF)
CUSTOM_XDATA_READ_MAX = 512  # handmade/src/main.c 0xE4: at most 512 bytes per request on USB 3
UAS_STREAMS_OFFERED = 32  # asm2464pd-firmware clean/src/main.c cfg_desc: MaxStreams 2^5 on the UAS pipes
ASMEDIA_PCI_VENDOR_ID = 0x1B21  # pci.ids: ASMedia Technology Inc.
# The downstream port's PCI device ID: no lspci dump of an ASM2464PD was at hand; the model's choice
ASM2464_PORT_DEVICE_ID = 0x2464
PCI_BRIDGE_CLASS = 0x060400  # PCI code and ID assignment r1.11: PCI-to-PCI bridge, normal decode
WINDOW_SHIFT = 16  # PCI-to-PCI bridge r1.2 sec 3.2.5.8: base/limit registers hold address bits 31:20
WINDOW_GRANULE = 1 << 20
PREF_UPPER_SHIFT = 32
SCSI_SENSE_ILLEGAL_REQUEST = 0x05  # SPC-4 Table 28: sense key ILLEGAL REQUEST
SCSI_ASC_INVALID_OPCODE = 0x20  # SPC-4 Annex D: INVALID COMMAND OPERATION CODE
SCSI_ASC_LBA_OUT_OF_RANGE = 0x21  # SPC-4 Annex D: LOGICAL BLOCK ADDRESS OUT OF RANGE
SENSE_FIXED_FORMAT = 0x70  # SPC-4 sec 4.5.3: fixed format sense data, current error
SENSE_LENGTH = 18
RC_OVERLAPPED_TAG = 0x0A  # include/linux/usb/uas.h RC_OVERLAPPED_TAG
RESPONSE_IU = struct.Struct(">BBH3sB")  # struct response_iu
FIRMWARES = (proto.CUSTOM, proto.STOCK)


def _descriptor(*fields: bytes) -> bytes:
    return b"".join(fields)


def _interface(alt: int, endpoints: int, klass: int, subclass: int, protocol: int) -> bytes:
    # USB 3.2 r1.0 Table 9-23: bLength 9, INTERFACE, number, alternate, endpoints, class, sub, proto, string
    return bytes([9, 0x04, 0, alt, endpoints, klass, subclass, protocol, 0])


def _bulk_endpoint(address: int, streams_log2: int, pipe: int | None) -> bytes:
    # Table 9-26 endpoint (bulk, 1024 bytes), Table 9-27 SuperSpeed companion (burst 15), then the
    # UAS pipe usage descriptor (include/linux/usb/uas.h struct usb_pipe_usage_descriptor)
    out = bytes([7, 0x05, address, 0x02, 0x00, 0x04, 0]) + bytes([6, 0x30, 15, streams_log2, 0, 0])
    if pipe is not None:
        out += bytes([4, 0x24, pipe, 0])
    return out


def configuration(firmware: str, uas: bool = True) -> bytes:
    """The SuperSpeed configuration descriptor set the firmware reports (both alt settings; the
    layout of asm2464pd-firmware clean/src/main.c cfg_desc: alt 0 two bulk endpoints, alt 1 the
    four UAS pipes with 32 streams on the stream pipes; `uas` False leaves alt 1 out)."""
    if firmware == proto.CUSTOM:
        alt0 = _interface(0, 2, 0xFF, 0xFF, 0xFF)  # handmade/src/usb.h: vendor class
        alt1 = _interface(1, 4, 0xFF, 0xFF, 0xFF)
    else:
        alt0 = _interface(0, 2, proto.CLASS_MASS_STORAGE, 0x06, 0x50)  # storage.h USB_SC_SCSI, USB_PR_BULK
        alt1 = _interface(1, 4, proto.CLASS_MASS_STORAGE, 0x06, proto.PROTOCOL_UAS)
    body = alt0 + _bulk_endpoint(proto.EP_DATA_IN, 0, None) + _bulk_endpoint(proto.EP_DATA_OUT, 0, None)
    if uas:
        body += (alt1 + _bulk_endpoint(proto.EP_DATA_IN, 5, 3) + _bulk_endpoint(proto.EP_DATA_OUT, 5, 4)
                 + _bulk_endpoint(proto.EP_STATUS_IN, 5, 2) + _bulk_endpoint(proto.EP_COMMAND_OUT, 0, 1))
    total = 9 + len(body)
    header = bytes([9, 0x02, total & 0xFF, total >> 8, 1, 1, 0, 0xC0, 0])
    return header + body


class ASM24xxPort(Bridge):
    """The bridge's PCIe downstream port: a Type 1 function at bus 0, device 0."""

    default_driver = None

    def __init__(self) -> None:
        identity = Identity(ASMEDIA_PCI_VENDOR_ID, ASM2464_PORT_DEVICE_ID, PCI_BRIDGE_CLASS)
        # ASM2464PD: PCIe 4.0 x4 to the device (ASMedia's product brief)
        link = PCIeLink(max_speed=pci_regs.PCI_EXP_LNKCAP_SLS_16_0GB, max_width=4,
                        speed=pci_regs.PCI_EXP_LNKCAP_SLS_16_0GB, width=4)
        super().__init__(identity, PCIeInfo(pci_regs.PCI_EXP_TYPE_DOWNSTREAM, link))

    def forwards(self, address: int) -> bool:
        """Whether a memory request at `address` passes the port downstream: memory decoding on
        and the address inside its memory or prefetchable window."""
        if not self.responds() or not self.memory_enabled():
            return False
        cfg = self.cfg
        base = (cfg.read(pci_regs.PCI_MEMORY_BASE, 2) & 0xFFF0) << WINDOW_SHIFT
        limit = ((cfg.read(pci_regs.PCI_MEMORY_LIMIT, 2) & 0xFFF0) << WINDOW_SHIFT) | (WINDOW_GRANULE - 1)
        if base <= address <= limit:
            return True
        pbase = (cfg.read(pci_regs.PCI_PREF_MEMORY_BASE, 2) & 0xFFF0) << WINDOW_SHIFT
        pbase |= cfg.read(pci_regs.PCI_PREF_BASE_UPPER32, 4) << PREF_UPPER_SHIFT
        plimit = (cfg.read(pci_regs.PCI_PREF_MEMORY_LIMIT, 2) & 0xFFF0) << WINDOW_SHIFT
        plimit |= WINDOW_GRANULE - 1
        plimit |= cfg.read(pci_regs.PCI_PREF_LIMIT_UPPER32, 4) << PREF_UPPER_SHIFT
        return pbase <= address <= plimit


@dataclass
class DMAFault:
    """A DMA request from the device that the bridge refused (outside the SRAM window)."""

    bdf: str
    address: int
    size: int
    write: bool


@dataclass
class _UASCommand:
    tag: int
    cdb: bytes
    data_out: bytes | None = None
    data_in: bytes | None = None
    status: bytes | None = None
    done: bool = False


class ASM24xxModel(USBDeviceModel):
    """See the module docstring."""

    def __init__(self, machine, firmware: str = proto.CUSTOM, uas: bool = True) -> None:
        if firmware not in FIRMWARES:
            raise ValueError(f"firmware {firmware!r}: one of {FIRMWARES}")
        self.machine = machine
        self.firmware = firmware
        self.uas = uas
        if firmware == proto.CUSTOM:
            vendor, product, name = proto.CUSTOM_VENDOR_ID, proto.CUSTOM_PRODUCT_ID, "usb"
        else:
            vendor, product, name = proto.ASMEDIA_VENDOR_ID, proto.STOCK_PRODUCT_IDS[0], "ASM2464PD"
        self.identity = DeviceIdentity(vendor, product, "", SPEED_SUPERSPEED_PLUS_MBPS, name)
        self.max_streams = UAS_STREAMS_OFFERED if uas else 0
        self.xdata = bytearray(XDATA_SIZE)
        self.sram = bytearray(proto.SRAM_SIZE)
        self.port = ASM24xxPort()
        self.port.machine = machine
        self.port.bdf = "0000:00:00.0"
        self.devices: dict[int, PCIFunction] = {}  # function number -> model, on the port's secondary bus
        self.dma_faults: list[DMAFault] = []
        self.completer_abort: list[tuple[int, int]] = []  # [start, end) memory ranges answering CA
        self.alt_setting = 0
        self.powered = True
        self.tlps = 0
        self._armed = False
        self._stream: tuple[str, int, int] | None = None  # (direction, address, dwords left)
        self._sram_dma: tuple[str, int, int] | None = None  # (direction, offset, bytes)
        self._bot: dict | None = None
        self._uas: dict[int, _UASCommand] = {}
        self._uas_data_out: dict[int, bytes] = {}

    # -- topology ------------------------------------------------------------------------------------
    def attach(self, function: PCIFunction, function_number: int = 0) -> PCIFunction:
        """Put `function` on the port's secondary bus (device 0); its DMA goes to this bridge."""
        function.machine = self.machine
        function.parent = self.port
        function.bdf = f"0000:01:00.{function_number}"
        function.dma_port = self
        self.port.children.append(function)
        self.devices[function_number] = function
        return function

    # -- descriptors and standard requests ----------------------------------------------------------
    def configuration_descriptor(self) -> bytes:
        return configuration(self.firmware, self.uas)

    def set_interface(self, interface: int, alt_setting: int) -> None:
        if interface != proto.INTERFACE or alt_setting not in (proto.ALT_BOT, proto.ALT_UAS):
            raise TransferStall(f"no interface {interface} alt setting {alt_setting}", endpoint=0)
        if alt_setting == proto.ALT_UAS and not self.uas:
            raise TransferStall("this bridge offers no UAS alt setting", endpoint=0)
        self.alt_setting = alt_setting
        self._bot = None
        self._uas.clear()
        self._uas_data_out.clear()

    # -- control requests (custom firmware) ---------------------------------------------------------
    def control(self, transfer: Transfer) -> bytes:
        setup = transfer.setup
        vendor = setup.request_type & ~ENDPOINT_IN == REQUEST_TYPE_VENDOR
        if self.firmware != proto.CUSTOM or not vendor:
            raise stalled(self.identity.path, transfer)
        request = setup.request
        if setup.is_in and request == proto.REQUEST_XDATA_READ:
            size = min(setup.length, CUSTOM_XDATA_READ_MAX)
            return bytes(self.xdata_read(setup.value, size))
        if not setup.is_in and request == proto.REQUEST_XDATA_WRITE:
            self.xdata_store(setup.value, setup.index & 0xFF)
            return b""
        if not setup.is_in and request == proto.REQUEST_TLP:
            self._custom_tlp(setup.value, setup.index, transfer.data or b"")
            return b""
        if setup.is_in and request == proto.REQUEST_TLP:
            return self._custom_tlp_result()
        if not setup.is_in and request == proto.REQUEST_SRAM_DMA:
            self._arm_sram_dma(setup.value, setup.index, transfer)
            return b""
        if not setup.is_in and request == proto.REQUEST_PCIE_POWER:
            self.set_power(bool(setup.value & 1))
            return b""
        raise stalled(self.identity.path, transfer)

    def _custom_tlp(self, value: int, index: int, data: bytes) -> None:
        if len(data) != proto.TLP_SETUP_BYTES:
            raise TransferStall(f"TLP setup of {len(data)} bytes (needs {proto.TLP_SETUP_BYTES})",
                                endpoint=0)
        fmt_type, enables = value & 0xFF, value >> 8
        low, high, word = struct.unpack("<III", data)
        address = low | high << 32
        mode = index & 0x3
        self._set_engine(fmt_type, enables, address, word)
        if mode == proto.TLP_MODE_SINGLE:
            self._execute_engine()
        elif mode in (proto.TLP_MODE_STREAM_WRITE, proto.TLP_MODE_STREAM_READ):
            direction = "out" if mode == proto.TLP_MODE_STREAM_WRITE else "in"
            self._stream = (direction, address, word)
        else:
            raise TransferStall(f"TLP mode {mode}", endpoint=0)

    def _custom_tlp_result(self) -> bytes:
        status = self.xdata[proto.XDATA_TLP_STATUS]
        if status & proto.TLP_STATUS_ERROR:
            self.xdata[proto.XDATA_TLP_STATUS] &= ~proto.TLP_STATUS_ERROR & 0xFF
            return bytes(7) + bytes([proto.TLP_RESULT_ERROR])
        if not status & proto.TLP_STATUS_COMPLETE:
            return bytes(7) + bytes([proto.TLP_RESULT_TIMEOUT])
        data = self.xdata[proto.XDATA_TLP_DATA:proto.XDATA_TLP_DATA + proto.DWORD]
        header = self.xdata[proto.XDATA_TLP_COMPLETION:proto.XDATA_TLP_COMPLETION + 2]
        return bytes(reversed(data)) + bytes(header) + bytes([self.xdata[proto.XDATA_TLP_COMPLETION_TYPE],
                                                              proto.TLP_RESULT_OK])

    def _arm_sram_dma(self, value: int, index: int, transfer: Transfer) -> None:
        sectors = value & proto.SRAM_DMA_MAX_SECTORS
        direction = "in" if value & proto.SRAM_DMA_BULK_IN else "out"
        offset = (index & 0xFF) * proto.SRAM_SLOT_SIZE
        size = sectors * proto.SECTOR_SIZE
        if not sectors or offset + size > len(self.sram):
            raise stalled(self.identity.path, transfer)
        self._sram_dma = (direction, offset, size)

    def set_power(self, on: bool) -> None:
        """The slot's power (custom request F3): off holds every device in reset (PERST#)."""
        self.powered = on
        for function in self.devices.values():
            if on:
                function.hardware_reset()
            function.in_reset = not on

    # -- bulk transfers -----------------------------------------------------------------------------
    def bulk_out(self, transfer: Transfer) -> int:
        data = transfer.data or b""
        if self.firmware == proto.CUSTOM:
            return self._custom_bulk_out(transfer, data)
        if self.alt_setting == proto.ALT_UAS:
            return self._uas_out(transfer, data)
        return self._bot_out(transfer, data)

    def bulk_in(self, transfer: Transfer) -> bytes:
        if self.firmware == proto.CUSTOM:
            return self._custom_bulk_in(transfer)
        if self.alt_setting == proto.ALT_UAS:
            return self._uas_in(transfer)
        return self._bot_in(transfer)

    def _custom_bulk_out(self, transfer: Transfer, data: bytes) -> int:
        if transfer.endpoint != proto.EP_DATA_OUT:
            raise stalled(self.identity.path, transfer)
        if self._sram_dma is not None and self._sram_dma[0] == "out":
            _, offset, size = self._sram_dma
            self._sram_dma = None
            moved = min(size, len(data))
            self.sram[offset:offset + moved] = data[:moved]
            return moved
        if self._stream is not None and self._stream[0] == "out":
            _, address, dwords = self._stream
            self._stream = None
            moved = min(dwords * proto.DWORD, len(data) - len(data) % proto.DWORD)
            self._memory_write_block(address, data[:moved])
            return moved
        raise stalled(self.identity.path, transfer)  # nothing armed for the data

    def _custom_bulk_in(self, transfer: Transfer) -> bytes:
        if transfer.endpoint != proto.EP_DATA_IN:
            raise stalled(self.identity.path, transfer)
        if self._sram_dma is not None and self._sram_dma[0] == "in":
            _, offset, size = self._sram_dma
            self._sram_dma = None
            return bytes(self.sram[offset:offset + min(size, transfer.length)])
        if self._stream is not None and self._stream[0] == "in":
            _, address, dwords = self._stream
            self._stream = None
            return self._memory_read_block(address, min(dwords * proto.DWORD, transfer.length))
        raise NotReady()

    # -- Bulk-Only Transport (stock, alt 0) ------------------------------------------------------------
    def _bot_out(self, transfer: Transfer, data: bytes) -> int:
        if transfer.endpoint != proto.EP_DATA_OUT:
            raise stalled(self.identity.path, transfer)
        if self._bot is None:
            if len(data) != proto.CBW_LENGTH:
                raise stalled(self.identity.path, transfer)
            signature, tag, length, flags, lun, cdb_length, cdb = proto.CBW.unpack(data)
            if signature != proto.CBW_SIGNATURE or lun != 0 or not 1 <= cdb_length <= proto.CDB_SIZE:
                raise stalled(self.identity.path, transfer)
            self._bot = {"tag": tag, "cdb": cdb[:cdb_length], "length": length,
                         "in": bool(flags & proto.CBW_FLAG_IN), "phase": "data" if length else "status"}
            if not length:
                self._bot_run(None)
            return len(data)
        if self._bot["phase"] == "data" and not self._bot["in"]:
            self._bot_run(data)
            return len(data)
        raise stalled(self.identity.path, transfer)

    def _bot_run(self, data_out: bytes | None) -> None:
        bot = self._bot
        status, data_in = self._scsi(bot["cdb"], data_out, bot["length"] if bot["in"] else 0)
        bot["status"] = status
        bot["data_in"] = data_in
        bot["phase"] = "data-in" if bot["in"] else "status"

    def _bot_in(self, transfer: Transfer) -> bytes:
        if transfer.endpoint != proto.EP_DATA_IN or self._bot is None:
            if transfer.endpoint == proto.EP_DATA_IN:
                raise NotReady()
            raise stalled(self.identity.path, transfer)
        bot = self._bot
        if bot["phase"] == "data" and bot["in"]:
            self._bot_run(None)
        if bot["phase"] == "data-in":
            bot["phase"] = "status"
            return bot["data_in"][:transfer.length]
        if bot["phase"] == "status":
            self._bot = None
            residue = bot["length"] - len(bot.get("data_in") or b"") if bot["in"] else 0
            good = bot["status"] == proto.SCSI_STATUS_GOOD
            csw_status = proto.CSW_STATUS_OK if good else proto.CSW_STATUS_FAIL
            return proto.CSW.pack(proto.CSW_SIGNATURE, bot["tag"], residue, csw_status)
        raise NotReady()

    # -- USB Attached SCSI (stock, alt 1) ---------------------------------------------------------------
    def _uas_out(self, transfer: Transfer, data: bytes) -> int:
        if transfer.endpoint == proto.EP_COMMAND_OUT:
            if len(data) < proto.COMMAND_IU.size or data[0] != proto.IU_ID_COMMAND:
                raise stalled(self.identity.path, transfer)
            fields = proto.COMMAND_IU.unpack(data[:proto.COMMAND_IU.size])
            tag, cdb = fields[2], fields[8]
            busy = self._uas.get(tag)
            if busy is not None and busy.status is None or not 1 <= tag <= self.max_streams:
                # uas.h RC_OVERLAPPED_TAG: the tag is still in use
                self._uas[tag] = _UASCommand(tag, cdb, status=RESPONSE_IU.pack(
                    proto.IU_ID_RESPONSE, 0, tag, bytes(3), RC_OVERLAPPED_TAG))
                return len(data)
            self._uas[tag] = _UASCommand(tag, cdb)
            self._uas_try(tag)
            return len(data)
        if transfer.endpoint == proto.EP_DATA_OUT and transfer.stream:
            self._uas_data_out[transfer.stream] = data
            self._uas_try(transfer.stream)
            return len(data)
        raise stalled(self.identity.path, transfer)

    def _uas_try(self, tag: int) -> None:
        command = self._uas.get(tag)
        if command is None or command.done:
            return
        expects_out = command.cdb[0] == proto.SCSI_WRITE_16
        data_out = self._uas_data_out.pop(tag, None) if expects_out else None
        if expects_out and data_out is None:
            return
        length = self._data_in_length(command.cdb)
        status, data_in = self._scsi(command.cdb, data_out, length)
        command.data_in = data_in if length else None
        command.status = self._sense_iu(tag, status)
        command.done = True

    def _uas_in(self, transfer: Transfer) -> bytes:
        tag = transfer.stream
        command = self._uas.get(tag)
        if transfer.endpoint == proto.EP_DATA_IN:
            if command is None or command.data_in is None:
                raise NotReady()
            data, command.data_in = command.data_in, None
            return data[:transfer.length]
        if transfer.endpoint == proto.EP_STATUS_IN:
            # the data phase of a command comes before its status
            if command is None or command.status is None or command.data_in is not None:
                raise NotReady()
            del self._uas[tag]
            return command.status
        raise stalled(self.identity.path, transfer)

    def _sense_iu(self, tag: int, status: int) -> bytes:
        sense = b""
        if status != proto.SCSI_STATUS_GOOD:
            sense = bytearray(SENSE_LENGTH)
            sense[0] = SENSE_FIXED_FORMAT
            sense[2] = SCSI_SENSE_ILLEGAL_REQUEST
            sense[12] = self._last_asc
            sense = bytes(sense)
        header = proto.SENSE_IU_HEADER.pack(proto.IU_ID_STATUS, 0, tag, 0, status, bytes(7), len(sense))
        return header + sense

    # -- SCSI commands (stock) ----------------------------------------------------------------------------
    @staticmethod
    def _data_in_length(cdb: bytes) -> int:
        if cdb[0] == proto.SCSI_XDATA_READ:
            return cdb[1]
        if cdb[0] == proto.SCSI_READ_16:
            return struct.unpack(">I", cdb[10:14])[0] * proto.SECTOR_SIZE
        return 0

    _last_asc = SCSI_ASC_INVALID_OPCODE

    def _scsi(self, cdb: bytes, data_out: bytes | None, length: int) -> tuple[int, bytes]:
        """Run one CDB; (SCSI status, data in)."""
        opcode = cdb[0]
        if opcode in (proto.SCSI_XDATA_READ, proto.SCSI_XDATA_WRITE):
            prefix = cdb[2] & ~1 & 0xFF
            if prefix != proto.XDATA_SCSI_PREFIX >> 16:
                return self._check_condition(SCSI_ASC_LBA_OUT_OF_RANGE)
            address = (cdb[2] & 1) << 16 | cdb[3] << 8 | cdb[4]
            if opcode == proto.SCSI_XDATA_READ:
                return proto.SCSI_STATUS_GOOD, self.xdata_read(address, cdb[1])
            self.xdata_store(address, cdb[1])
            return proto.SCSI_STATUS_GOOD, b""
        if opcode in (proto.SCSI_READ_16, proto.SCSI_WRITE_16):
            _, _, lba, sectors, _, _ = struct.unpack(">BBQIBB", cdb[:16])
            start, size = lba * proto.SECTOR_SIZE, sectors * proto.SECTOR_SIZE
            if start + size > len(self.sram):
                return self._check_condition(SCSI_ASC_LBA_OUT_OF_RANGE)
            if opcode == proto.SCSI_READ_16:
                return proto.SCSI_STATUS_GOOD, bytes(self.sram[start:start + size])
            moved = min(size, len(data_out or b""))
            self.sram[start:start + moved] = (data_out or b"")[:moved]
            return proto.SCSI_STATUS_GOOD, b""
        return self._check_condition(SCSI_ASC_INVALID_OPCODE)

    def _check_condition(self, asc: int) -> tuple[int, bytes]:
        self._last_asc = asc
        return proto.SCSI_STATUS_CHECK_CONDITION, b""

    # -- XDATA and the TLP engine ------------------------------------------------------------------------
    def xdata_read(self, address: int, size: int) -> bytes:
        out = bytearray()
        for where in range(address, address + size):
            where &= XDATA_SIZE - 1
            if proto.SRAM_XDATA_ADDRESS <= where < proto.SRAM_XDATA_ADDRESS + 0x1000:
                out.append(self.sram[where - proto.SRAM_XDATA_ADDRESS])
            else:
                out.append(self.xdata[where])
        return bytes(out)

    def xdata_store(self, address: int, value: int) -> None:
        """One XDATA byte written by the host (E5); the engine's status and trigger act on it."""
        address &= XDATA_SIZE - 1
        if address == proto.XDATA_TLP_STATUS:
            # registers.h: error and complete are write-1-to-clear; the kick starts the armed request
            self.xdata[address] &= ~(value & (proto.TLP_STATUS_ERROR | proto.TLP_STATUS_COMPLETE)) & 0xFF
            if value & proto.TLP_STATUS_KICK and self._armed:
                self._armed = False
                self._execute_engine()
            return
        if address == proto.XDATA_TLP_TRIGGER:
            self._armed = value == proto.TLP_TRIGGER_EXEC
            return
        if proto.SRAM_XDATA_ADDRESS <= address < proto.SRAM_XDATA_ADDRESS + 0x1000:
            self.sram[address - proto.SRAM_XDATA_ADDRESS] = value
            return
        self.xdata[address] = value

    def _set_engine(self, fmt_type: int, enables: int, address: int, value: int) -> None:
        x = self.xdata
        x[proto.XDATA_TLP_FMT_TYPE] = fmt_type
        x[proto.XDATA_TLP_BYTE_ENABLE] = enables
        x[proto.XDATA_TLP_ADDRESS:proto.XDATA_TLP_ADDRESS + 4] = struct.pack(">I", address & 0xFFFFFFFF)
        x[proto.XDATA_TLP_ADDRESS_HIGH:proto.XDATA_TLP_ADDRESS_HIGH + 4] = struct.pack(">I", address >> 32)
        x[proto.XDATA_TLP_DATA:proto.XDATA_TLP_DATA + 4] = struct.pack(">I", value & 0xFFFFFFFF)

    def _execute_engine(self) -> None:
        """Send the TLP the engine's registers describe; set the completion registers."""
        x = self.xdata
        fmt_type = x[proto.XDATA_TLP_FMT_TYPE]
        enables = x[proto.XDATA_TLP_BYTE_ENABLE]
        address = struct.unpack(">I", x[proto.XDATA_TLP_ADDRESS:proto.XDATA_TLP_ADDRESS + 4])[0]
        if fmt_type & proto.TLP_FMT_4DW:
            high = struct.unpack(">I", x[proto.XDATA_TLP_ADDRESS_HIGH:proto.XDATA_TLP_ADDRESS_HIGH + 4])[0]
            address |= high << 32
        value = struct.unpack(">I", x[proto.XDATA_TLP_DATA:proto.XDATA_TLP_DATA + 4])[0]
        x[proto.XDATA_TLP_STATUS] &= ~(proto.TLP_STATUS_COMPLETE | proto.TLP_STATUS_ERROR) & 0xFF
        self.tlps += 1
        status, data, with_data = self.request(fmt_type, address, enables, value)
        count = bin(enables).count("1")
        if proto.is_config(fmt_type):
            count = proto.DWORD  # registers.h: config completions always count 4 bytes
        header = status << proto.COMPLETION_STATUS_SHIFT | count
        x[proto.XDATA_TLP_COMPLETION:proto.XDATA_TLP_COMPLETION + 2] = struct.pack(">H", header)
        x[proto.XDATA_TLP_COMPLETION_TYPE] = proto.COMPLETION_HAS_DATA if with_data else 0
        if data is not None:
            x[proto.XDATA_TLP_DATA:proto.XDATA_TLP_DATA + 4] = struct.pack(">I", data)
        x[proto.XDATA_TLP_STATUS] |= proto.TLP_STATUS_COMPLETE

    # -- PCIe: what a TLP reaches -----------------------------------------------------------------------
    @staticmethod
    def _enabled_span(enables: int) -> tuple[int, int]:
        """(first byte, byte count) of contiguous byte enables; (0, 0) when none or not contiguous."""
        if not enables or enables & 0xF0:
            return 0, 0
        first = (enables & -enables).bit_length() - 1
        count = bin(enables).count("1")
        if enables >> first != (1 << count) - 1:
            return 0, 0
        return first, count

    def request(self, fmt_type: int, address: int, enables: int, value: int) -> tuple[int, int | None, bool]:
        """One TLP: (completion status, read data or None, completion carries data)."""
        first, count = self._enabled_span(enables)
        write = bool(fmt_type & proto.TLP_FMT_HAS_DATA)
        if proto.is_config(fmt_type):
            return self._config_request(fmt_type, address, first, count, value, write)
        if fmt_type not in (proto.TLP_MEM_READ32, proto.TLP_MEM_READ64, proto.TLP_MEM_WRITE32,
                            proto.TLP_MEM_WRITE64) or not count:
            return proto.CPL_UNSUPPORTED_REQUEST, None, False
        if any(start <= address < end for start, end in self.completer_abort):
            return proto.CPL_COMPLETER_ABORT, None, False
        target = self._decode(address)
        if target is None:
            if write:
                log.info("bridge: posted write to %#x decoded by nothing (dropped)", address)
            return proto.CPL_UNSUPPORTED_REQUEST, None, False
        function, index, offset = target
        if write:
            function.mmio_write(index, offset + first, value.to_bytes(4, "little")[first:first + count])
            return proto.CPL_SUCCESS, None, False
        raw = function.mmio_read(index, offset + first, count)
        return proto.CPL_SUCCESS, int.from_bytes(raw, "little") << 8 * first, True

    def _config_request(self, fmt_type: int, address: int, first: int, count: int, value: int,
                        write: bool) -> tuple[int, int | None, bool]:
        bus = address >> proto.CONFIG_BUS_SHIFT & 0xFF
        device = address >> proto.CONFIG_DEVICE_SHIFT & 0x1F
        number = address >> proto.CONFIG_FUNCTION_SHIFT & 0x7
        register = address & proto.CONFIG_REGISTER_MASK & ~3
        type1 = bool(fmt_type & 1)
        target = None
        if not type1:
            if bus == 0 and device == 0 and number == 0:
                target = self.port
        else:
            port = self.port.cfg
            secondary = port.read(pci_regs.PCI_SECONDARY_BUS, 1)
            # PCIe r5.0 sec 7.3.1: a downstream port passes type 1 requests for its secondary bus as
            # type 0 to device 0 only (the link has one device)
            if self.port.responds() and secondary and bus == secondary and device == 0:
                target = self.devices.get(number)
        if target is None or not count or not target.responds():
            return proto.CPL_UNSUPPORTED_REQUEST, None, False
        if register + first + count > target.cfg.size:
            return proto.CPL_UNSUPPORTED_REQUEST, None, False
        if write:
            target.config_write(register + first, count, value >> 8 * first & ((1 << 8 * count) - 1))
            return proto.CPL_SUCCESS, None, False
        return proto.CPL_SUCCESS, target.config_read(register + first, count) << 8 * first, True

    def _decode(self, address: int) -> tuple[PCIFunction, int, int] | None:
        if not self.port.forwards(address):
            return None
        for function in self.devices.values():
            for index, spec in function.bars.items():
                if spec.kind is BarKind.IO:
                    continue
                base = function.bar_address(index)
                size = function.bar_sizes[index]
                if base and base <= address < base + size and function.decodes_memory(index):
                    return function, index, address - base
        return None

    def _memory_write_block(self, address: int, data: bytes) -> None:
        """Consecutive MWr TLPs of one dword each (the custom firmware's streaming write)."""
        target = self._decode(address)
        if target is not None:
            function, index, offset = target
            size = function.bar_sizes[index]
            memory = function.bar_memory(index)
            if memory is not None and offset + len(data) <= size and not function.faults.drop_writes:
                # a plain-memory BAR: the dword writes land exactly as one copy would
                self.tlps += len(data) // proto.DWORD
                function.mmio_write(index, offset, data)
                return
        for start in range(0, len(data), proto.DWORD):
            word = int.from_bytes(data[start:start + proto.DWORD], "little")
            self.tlps += 1
            self.request(proto.TLP_MEM_WRITE64, address + start, proto.ALL_BYTES, word)

    def _memory_read_block(self, address: int, size: int) -> bytes:
        """Consecutive MRd TLPs of one dword each; stops at the first that does not complete."""
        target = self._decode(address)
        if target is not None:
            function, index, offset = target
            memory = function.bar_memory(index)
            if memory is not None and offset + size <= function.bar_sizes[index]:
                self.tlps += size // proto.DWORD
                return function.mmio_read(index, offset, size)
        out = bytearray()
        for start in range(0, size, proto.DWORD):
            self.tlps += 1
            status, data, _ = self.request(proto.TLP_MEM_READ64, address + start, proto.ALL_BYTES, 0)
            if status != proto.CPL_SUCCESS:
                break
            out += data.to_bytes(4, "little")
        return bytes(out)

    # -- the device's DMA ----------------------------------------------------------------------------------
    def _sram_span(self, address: int, size: int) -> int | None:
        offset = address - proto.SRAM_PCIE_ADDRESS
        if 0 <= offset and offset + size <= len(self.sram):
            return offset
        return None

    def _refuse(self, function: PCIFunction, address: int, size: int, write: bool) -> None:
        self.dma_faults.append(DMAFault(function.bdf, address, size, write))
        log.error("bridge: %s DMA %s of %d bytes at %#x is outside the SRAM window [%#x, %#x): refused",
                  function.bdf, "write" if write else "read", size, address, proto.SRAM_PCIE_ADDRESS,
                  proto.SRAM_PCIE_ADDRESS + len(self.sram))

    def dma_read(self, function: PCIFunction, address: int, n: int) -> bytes | None:
        offset = self._sram_span(address, n)
        if offset is None:
            self._refuse(function, address, n, False)
            return None
        return bytes(self.sram[offset:offset + n])

    def dma_write(self, function: PCIFunction, address: int, data: bytes) -> bool:
        offset = self._sram_span(address, len(data))
        if offset is None:
            self._refuse(function, address, len(data), True)
            return False
        self.sram[offset:offset + len(data)] = data
        return True

