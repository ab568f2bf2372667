"""ASMedia ASM24xx USB-to-PCIe bridges: the two firmware personalities' wire protocols.

The bridge's 8051 controller reaches the PCIe link through a TLP engine in its XDATA space, and
the downstream device can DMA only into the bridge's SRAM, which the host fills and drains with
bulk transfers. Two firmware personalities speak for it:

- custom firmware (the open ASM2464PD firmware, USB id ADD1:0001, a vendor-class interface):
  vendor control requests read and write XDATA (E4/E5), fire one TLP and return its completion
  (F0), stream dwords to or from consecutive PCIe addresses over the bulk pipes (F0 modes 1 and 2),
  arm the SRAM DMA for a bulk transfer (F2) and switch the PCIe slot's power (F3);
- stock firmware (ASMedia's, USB id 174C:2464 or 174C:2463, a USB mass storage device): SCSI
  vendor commands E4 (read up to 255 bytes of XDATA) and E5 (write one XDATA byte) and WRITE(16) /
  READ(16) into the SRAM, carried by Bulk-Only Transport (CBW/CSW, one command at a time) or USB
  Attached SCSI (command/status/data pipes with a stream per tag, many commands in flight). A TLP
  is made by writing the engine's XDATA registers byte by byte and polling its status.

`CustomFirmwareBridge` and `StockFirmwareBridge` share `ASM24xxBridge`'s interface, on which
hal.usb.backend builds the PCI backend. Sources of the facts (each constant cites its own):
tinygrad tinygrad/runtime/support/usb.py (ASM24Controller) and tinygrad/runtime/ops_amd.py (the
SRAM window); tinygrad/asm2464pd-firmware handmade/src/main.c, handmade/src/usb.h,
src/include/registers.h, pcie/test_sram_verify.py, README.md and USBGPU.md; Linux
include/linux/usb/storage.h and include/linux/usb/uas.h.
"""
from __future__ import annotations

import errno as _errno
import logging
import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass

from hal.errors import DeviceLost, DeviceTimeout, HalError, InvalidArgument, UnsupportedOperation
from hal.usb.transport import (CONTROL, ENDPOINT_IN, RECIPIENT_DEVICE, REQUEST_TYPE_VENDOR,
                               ShortTransfer, Transfer, USBTransport)

log = logging.getLogger(__name__)

# -- identities ------------------------------------------------------------------------------------
# tinygrad/asm2464pd-firmware pcie/pcie_bringup.py SUPPORTED_DEVICES and openpilot's
# CHESTNUT_ROM_USB_IDS: ASMedia's own firmware enumerates as 174C:2464 (ASM2464PD) or 174C:2463
ASMEDIA_VENDOR_ID = 0x174C
STOCK_PRODUCT_IDS = (0x2464, 0x2463)
# tinygrad/asm2464pd-firmware handmade/src/usb.h USB_VID / USB_PID: the open firmware's identity
CUSTOM_VENDOR_ID = 0xADD1
CUSTOM_PRODUCT_ID = 0x0001
CUSTOM = "custom"
STOCK = "stock"

# -- endpoints: tinygrad usb.py ASM24Controller USB3(vid, pid, 0x81, 0x83, 0x02, 0x04) and the UAS
# pipe usage descriptors of asm2464pd-firmware clean/src/main.c cfg_desc (alt setting 1)
EP_DATA_IN = 0x81
EP_STATUS_IN = 0x83
EP_DATA_OUT = 0x02
EP_COMMAND_OUT = 0x04
INTERFACE = 0
ALT_BOT = 0  # asm2464pd-firmware clean/src/main.c cfg_desc: alt 0 is Bulk-Only Transport
ALT_UAS = 1  # ... and alt 1 USB Attached SCSI (class 08, subclass 06, protocol 62)

# -- custom firmware vendor requests (asm2464pd-firmware handmade/src/main.c handle_usb_control) --
REQUEST_XDATA_READ = 0xE4  # IN: wValue = XDATA address, wLength = bytes
REQUEST_XDATA_WRITE = 0xE5  # OUT: wValue = XDATA address, wIndex low byte = value
REQUEST_TLP = 0xF0  # OUT: wValue = fmt/type | byte enables << 8, wIndex = mode, 12 data bytes
#                     IN: 8 bytes: data (LE), completion header (2), completion type, result
REQUEST_SRAM_DMA = 0xF2  # OUT: wValue = sectors | direction bit 15, wIndex = slot | slots << 8
REQUEST_PCIE_POWER = 0xF3  # OUT: wValue bit 0 = power on
TLP_MODE_SINGLE = 0  # handmade/src/main.c: wIndex[1:0] 0 = one TLP
TLP_MODE_STREAM_WRITE = 1  # ... 1 = dwords from bulk OUT to consecutive addresses
TLP_MODE_STREAM_READ = 2  # ... 2 = dwords from consecutive addresses to bulk IN
TLP_SETUP_BYTES = 12  # handmade/src/main.c: address low (LE), address high (LE), value (LE)
TLP_RESULT_BYTES = 8  # handmade/src/main.c 0xF0 IN: usb_send_data(8)
TLP_RESULT_OK = 0  # DESC_BUF[7]: 0 completion, 1 error flag, 0xFF the firmware's poll ran out
TLP_RESULT_ERROR = 1
TLP_RESULT_TIMEOUT = 0xFF
SRAM_DMA_BULK_IN = 0x8000  # handmade/src/main.c 0xF2: wValue bit 15, 1 = SRAM to host
SRAM_DMA_MAX_SECTORS = 0x7FFF  # ... bits 0-14 count sectors
SECTOR_SIZE = 512  # handmade/src/main.c 0xF2 (REG_NVME_SECTOR_SIZE 0x0200) and SCSI LBAs
SRAM_SLOT_SIZE = 0x4000  # asm2464pd-firmware pcie/test_sram_verify.py SLOT_SIZE: 16 KiB per slot

# -- stock firmware SCSI commands (tinygrad usb.py ASM24Controller.ops_to_cmd) ------------------
SCSI_XDATA_READ = 0xE4  # CDB: E4, length, address >> 16, address & 0xFFFF (BE), 0
SCSI_XDATA_WRITE = 0xE5  # CDB: E5, value, address >> 16, address & 0xFFFF (BE), 0
SCSI_XDATA_READ_MAX = 0xFF  # tinygrad usb.py: assert op.size <= 0xff
XDATA_SCSI_PREFIX = 0x500000  # tinygrad usb.py: addr = (addr & 0x1FFFF) | 0x500000
XDATA_SCSI_MASK = 0x1FFFF
SCSI_WRITE_16 = 0x8A  # include/scsi/scsi_proto.h WRITE_16
SCSI_READ_16 = 0x88  # include/scsi/scsi_proto.h READ_16
SCSI_STATUS_GOOD = 0x00  # include/scsi/scsi_proto.h SAM_STAT_GOOD
SCSI_STATUS_CHECK_CONDITION = 0x02  # include/scsi/scsi_proto.h SAM_STAT_CHECK_CONDITION
CDB_SIZE = 16

# -- Bulk-Only Transport (include/linux/usb/storage.h) -------------------------------------------
CBW_SIGNATURE = 0x43425355  # US_BULK_CB_SIGN, "USBC"
CSW_SIGNATURE = 0x53425355  # US_BULK_CS_SIGN, "USBS"
CBW_LENGTH = 31  # US_BULK_CB_WRAP_LEN
CSW_LENGTH = 13  # US_BULK_CS_WRAP_LEN
CBW_FLAG_IN = 0x80  # US_BULK_FLAG_IN
CSW_STATUS_OK = 0  # US_BULK_STAT_OK
CSW_STATUS_FAIL = 1  # US_BULK_STAT_FAIL
CSW_STATUS_PHASE = 2  # US_BULK_STAT_PHASE
CBW = struct.Struct("<IIIBBB16s")  # struct bulk_cb_wrap
CSW = struct.Struct("<IIIB")  # struct bulk_cs_wrap

# -- USB Attached SCSI (include/linux/usb/uas.h) --------------------------------------------------
IU_ID_COMMAND = 0x01
IU_ID_STATUS = 0x03
IU_ID_RESPONSE = 0x04
COMMAND_IU = struct.Struct(">BBHBBBB8s16s")  # struct command_iu
SENSE_IU_HEADER = struct.Struct(">BBHHB7sH")  # struct sense_iu up to its sense length
SENSE_IU_MAX = 64  # tinygrad usb.py buf_stat: 64 bytes per status transfer
UAS_MAX_STREAMS = 16  # tinygrad usb.py USB3 max_streams default; the custom firmware offers 32

# -- the TLP engine's XDATA registers (asm2464pd-firmware src/include/registers.h) -----------------
XDATA_TLP_FMT_TYPE = 0xB210  # REG_PCIE_FMT_TYPE
XDATA_TLP_BYTE_ENABLE = 0xB217  # REG_PCIE_BYTE_EN
XDATA_TLP_ADDRESS = 0xB218  # REG_PCIE_ADDR_0..3: address bits 31:0, big-endian
XDATA_TLP_ADDRESS_HIGH = 0xB21C  # REG_PCIE_ADDR_HIGH..3: bits 63:32, big-endian
XDATA_TLP_DATA = 0xB220  # REG_PCIE_DATA_0..3: big-endian (B223 holds the least significant byte)
XDATA_TLP_COMPLETION = 0xB22A  # REG_PCIE_CPL_HDR_HI/LO: status 15:13, byte count 11:0 (BE)
XDATA_TLP_TRIGGER = 0xB254  # REG_PCIE_TRIGGER
XDATA_TLP_COMPLETION_TYPE = 0xB284  # REG_PCIE_COMPL_STATUS
XDATA_TLP_STATUS = 0xB296  # REG_PCIE_STATUS
TLP_TRIGGER_EXEC = 0x0F  # PCIE_TRIGGER_EXEC
TLP_STATUS_ERROR = 0x01  # PCIE_STATUS_ERROR (write 1 to clear)
TLP_STATUS_COMPLETE = 0x02  # PCIE_STATUS_COMPLETE (write 1 to clear)
TLP_STATUS_KICK = 0x04  # PCIE_STATUS_KICK: tinygrad usb.py writes it after the trigger
COMPLETION_HAS_DATA = 0x01  # PCIE_COMPL_HAS_DATA: the completion was a CplD
COMPLETION_STATUS_SHIFT = 13  # registers.h B22A:B22B: status in bits 15:13
COMPLETION_STATUS_MASK = 0x7
COMPLETION_BYTE_COUNT_MASK = 0xFFF

# -- TLP fmt/type (PCIe r5.0 sec 2.2.1 Table 2-3; registers.h PCIE_FMT_*) -------------------------
TLP_MEM_READ32 = 0x00
TLP_MEM_READ64 = 0x20
TLP_MEM_WRITE32 = 0x40
TLP_MEM_WRITE64 = 0x60
TLP_CFG_READ0 = 0x04
TLP_CFG_WRITE0 = 0x44
TLP_CFG_READ1 = 0x05
TLP_CFG_WRITE1 = 0x45
TLP_FMT_HAS_DATA = 0x40  # Fmt bit 1: a payload follows (a write)
TLP_FMT_4DW = 0x20  # Fmt bit 0: a 4-DW header, 64-bit address
TLP_TYPE_CONFIG = 0x04  # Type 0010x: configuration request (bit 0: type 1)
TLP_CONFIG_TYPE_MASK = 0x1E  # ignores Fmt and the type 0/1 bit
CONFIG_BUS_SHIFT = 24  # tinygrad usb.py pcie_cfg_req: (bus << 24) | (dev << 19) | (fn << 16) | reg
CONFIG_DEVICE_SHIFT = 19
CONFIG_FUNCTION_SHIFT = 16
CONFIG_REGISTER_MASK = 0xFFF
DWORD = 4
ALL_BYTES = 0x0F  # first DW byte enables of a whole-dword request

# -- completion status (PCIe r5.0 sec 2.2.9 Table 2-34) --------------------------------------------
CPL_SUCCESS = 0b000
CPL_UNSUPPORTED_REQUEST = 0b001
CPL_RETRY = 0b010  # Configuration Request Retry Status
CPL_COMPLETER_ABORT = 0b100
CPL_NAMES = {CPL_SUCCESS: "Successful Completion", CPL_UNSUPPORTED_REQUEST: "Unsupported Request (UR)",
             CPL_RETRY: "Configuration Request Retry Status (CRS)",
             CPL_COMPLETER_ABORT: "Completer Abort (CA)"}

# -- the SRAM window ------------------------------------------------------------------------------
# tinygrad ops_amd.py (USB interface): copy_bufs = _dma_region(ctrl_addr=0xf000, sys_addr=0x200000,
# size=0x80000); asm2464pd-firmware README.md: "512 kB SRAM ... accessible on the PCIe BAR at
# 0x200000"; pcie/test_sram_verify.py SRAM_SIZE = 0x80000 ("this is verified")
SRAM_PCIE_ADDRESS = 0x200000
SRAM_XDATA_ADDRESS = 0xF000
SRAM_SIZE = 0x80000

TLP_POLL_LIMIT = 64  # status polls (each one USB round trip) before a non-posted TLP is given up
TLP_RETRIES = 10  # tinygrad usb.py pcie_request cnt=10: retries after the error flag


class CompletionError(HalError):
    """A non-posted TLP completed with a status other than Successful Completion. `status` is the
    PCIe completion status, `address` what the request addressed."""

    def __init__(self, message: str, *, status: int, address: int) -> None:
        super().__init__(message, errno=_errno.EIO)
        self.status = status
        self.address = address


@dataclass(frozen=True)
class Completion:
    """What came back for a non-posted TLP: status, byte count, whether it carried data, data."""

    status: int
    byte_count: int
    with_data: bool
    value: int

    @classmethod
    def from_header(cls, header: int, completion_type: int, value: int) -> "Completion":
        status = header >> COMPLETION_STATUS_SHIFT & COMPLETION_STATUS_MASK
        return cls(status, header & COMPLETION_BYTE_COUNT_MASK,
                   bool(completion_type & COMPLETION_HAS_DATA), value)


def is_posted(fmt_type: int) -> bool:
    """Memory writes are posted (no completion); configuration writes are not."""
    return bool(fmt_type & TLP_FMT_HAS_DATA) and not is_config(fmt_type)


def is_config(fmt_type: int) -> bool:
    return fmt_type & TLP_CONFIG_TYPE_MASK == TLP_TYPE_CONFIG


def config_address(bus: int, device: int, function: int, register: int) -> int:
    """The address field of a configuration TLP (bus, device, function, register number)."""
    if not (0 <= bus <= 0xFF and 0 <= device < 32 and 0 <= function < 8
            and 0 <= register <= CONFIG_REGISTER_MASK):
        raise InvalidArgument(f"config address {bus:02x}:{device:02x}.{function} register "
                              f"{register:#x} is out of range")
    return (bus << CONFIG_BUS_SHIFT | device << CONFIG_DEVICE_SHIFT
            | function << CONFIG_FUNCTION_SHIFT | register)


def byte_enables(offset: int, size: int) -> int:
    """First-DW byte enables of a `size`-byte access at byte `offset` within a dword."""
    if size not in (1, 2, 4) or offset % size or offset + size > DWORD:
        raise InvalidArgument(f"a {size}-byte TLP at dword offset {offset} is not naturally aligned")
    return ((1 << size) - 1) << offset


def check_completion(completion: Completion, fmt_type: int, address: int, what: str) -> None:
    """Raise CompletionError unless `completion` is a Successful Completion of the right kind."""
    if completion.status != CPL_SUCCESS:
        name = CPL_NAMES.get(completion.status, f"reserved status {completion.status:#05b}")
        advice = {CPL_UNSUPPORTED_REQUEST: "nothing behind the bridge decodes that address (a BAR not "
                                           "assigned, decoding off, or no device)",
                  CPL_COMPLETER_ABORT: "the device refused the request",
                  CPL_RETRY: "the device is still initialising; retry later"}.get(completion.status, "")
        raise CompletionError(f"{what} at {address:#x}: {name}" + (f": {advice}" if advice else ""),
                              status=completion.status, address=address)
    if is_config(fmt_type) and completion.with_data == bool(fmt_type & TLP_FMT_HAS_DATA):
        # registers.h B284: a config read completes as CplD (bit 0 set), a config write as Cpl
        raise CompletionError(f"{what} at {address:#x}: the completion type does not match the request",
                              status=completion.status, address=address)


class ASM24xxBridge(ABC):
    """One ASM24xx bridge reached through a USBTransport (see the module docstring)."""

    firmware = "abstract"
    sram_pcie_address = SRAM_PCIE_ADDRESS
    sram_size = SRAM_SIZE

    def __init__(self, transport: USBTransport, timeout_s: float = 1.0) -> None:
        self.transport = transport
        self.timeout_s = timeout_s
        self.path = transport.identity.path
        self._posted: list[Transfer] = []
        self._sram_posted: list[Transfer] = []  # an SRAM write in flight: (arm,) bulk
        self.max_posted = UAS_MAX_STREAMS

    # -- XDATA -------------------------------------------------------------------------------------
    @abstractmethod
    def xdata_read(self, address: int, size: int) -> bytes:
        """`size` bytes of the controller's XDATA space from `address`."""

    @abstractmethod
    def xdata_write(self, address: int, data: bytes) -> None:
        """Write bytes into XDATA from `address`."""

    # -- TLPs ----------------------------------------------------------------------------------------
    @abstractmethod
    def tlp(self, fmt_type: int, address: int, enables: int, value: int | None = None) -> Completion | None:
        """Send one TLP for the dword at `address` (dword aligned); returns the completion of a
        non-posted request, None for a posted write (queued, see `flush`)."""

    def config_read(self, bus: int, device: int, function: int, register: int, size: int,
                    type1: bool) -> Completion:
        offset = register % DWORD
        fmt = TLP_CFG_READ1 if type1 else TLP_CFG_READ0
        address = config_address(bus, device, function, register - offset)
        completion = self.tlp(fmt, address, byte_enables(offset, size))
        return Completion(completion.status, completion.byte_count, completion.with_data,
                          completion.value >> 8 * offset & ((1 << 8 * size) - 1))

    def config_write(self, bus: int, device: int, function: int, register: int, size: int,
                     value: int, type1: bool) -> Completion:
        offset = register % DWORD
        fmt = TLP_CFG_WRITE1 if type1 else TLP_CFG_WRITE0
        address = config_address(bus, device, function, register - offset)
        return self.tlp(fmt, address, byte_enables(offset, size), value << 8 * offset)

    def memory_read32(self, address: int, enables: int = ALL_BYTES) -> int:
        fmt = TLP_MEM_READ64 if address >> 32 else TLP_MEM_READ32
        completion = self.tlp(fmt, address, enables)
        check_completion(completion, fmt, address, "memory read")
        return completion.value

    def memory_write32(self, address: int, value: int, enables: int = ALL_BYTES) -> None:
        fmt = TLP_MEM_WRITE64 if address >> 32 else TLP_MEM_WRITE32
        self.tlp(fmt, address, enables, value)

    def memory_read(self, address: int, size: int) -> bytes:
        """`size` bytes (whole dwords) from consecutive addresses; only for memory without read
        side effects (VRAM through a BAR)."""
        words = [self.memory_read32(address + offset) for offset in range(0, size, DWORD)]
        return struct.pack(f"<{len(words)}I", *words)

    def memory_write(self, address: int, data: bytes) -> None:
        """Whole dwords to consecutive addresses, as posted writes in flight together."""
        words = struct.unpack(f"<{len(data) // DWORD}I", data)
        for index, word in enumerate(words):
            self.memory_write32(address + index * DWORD, word)

    # -- posted writes in flight -----------------------------------------------------------------
    def _post(self, transfers: list[Transfer]) -> None:
        self._posted.extend(transfers)
        if len(self._posted) >= self.max_posted:
            self.flush()

    def flush(self) -> None:
        """Wait for every posted write still in flight, TLPs and SRAM (a read never passes a
        posted write)."""
        if self._posted:
            pending, self._posted = self._posted, []
            self.transport.reap(pending, self.timeout_s)
        self._settle_sram()

    def _settle_sram(self) -> None:
        """Wait for an SRAM write still in flight. A write TLP waits for it first (it may be the
        doorbell that makes the device read that SRAM), and so does the next SRAM transfer."""
        if not self._sram_posted:
            return
        pending, self._sram_posted = self._sram_posted, []
        self.transport.reap(pending, self.timeout_s)
        bulk = pending[-1]
        if bulk.actual != bulk.length:
            raise ShortTransfer(f"{self.path}: SRAM write moved {bulk.actual} of {bulk.length} bytes",
                                endpoint=bulk.endpoint, expected=bulk.length, actual=bulk.actual)

    # -- SRAM ------------------------------------------------------------------------------------------
    @abstractmethod
    def sram_write(self, offset: int, data: bytes) -> None:
        """Copy host bytes into the SRAM window at `offset`."""

    @abstractmethod
    def sram_read(self, offset: int, size: int) -> bytes:
        """Copy `size` bytes of the SRAM window from `offset` to the host."""

    def _check_sram(self, offset: int, size: int, granule: int) -> None:
        if offset < 0 or size <= 0 or offset + size > self.sram_size:
            raise InvalidArgument(f"[{offset:#x}, +{size:#x}) is outside the {self.sram_size:#x}-byte "
                                  "bridge SRAM")
        if offset % granule or size % granule:
            raise InvalidArgument(f"bridge SRAM transfers move whole {granule}-byte units "
                                  f"(offset {offset:#x}, size {size:#x})")

    def pcie_power(self, on: bool) -> None:
        raise UnsupportedOperation(f"{self.firmware} firmware cannot switch the PCIe slot's power")

    def close(self) -> None:
        try:
            self.flush()
        except DeviceLost as exc:
            log.info("%s: writes still in flight were lost with the device: %s", self.path, exc)
        finally:
            self.transport.close()


class CustomFirmwareBridge(ASM24xxBridge):
    """The open ASM2464PD firmware: vendor control requests (see the module docstring)."""

    firmware = CUSTOM
    stream_max_bytes = 0x10000  # bytes per F0 streaming transfer (a bulk transfer of 64 KiB)
    # this host's choice: shorter writes go as single posted TLPs (control transfers only), so
    # they leave the bulk OUT pipe, which an SRAM write shares, to the window
    stream_min_bytes = 0x40
    # this host's choice: posted control transfers kept in flight (an SDMA submission with its
    # fence is about 20 one-dword TLPs)
    posted_in_flight = 32

    def __init__(self, transport: USBTransport, timeout_s: float = 1.0) -> None:
        super().__init__(transport, timeout_s)
        self.max_posted = self.posted_in_flight
        self._vendor_out = REQUEST_TYPE_VENDOR | RECIPIENT_DEVICE
        self._vendor_in = REQUEST_TYPE_VENDOR | RECIPIENT_DEVICE | ENDPOINT_IN

    def xdata_read(self, address: int, size: int) -> bytes:
        self.flush()
        data = self.transport.control_in(self._vendor_in, REQUEST_XDATA_READ, address, 0, size,
                                         self.timeout_s)
        if len(data) != size:
            raise ShortTransfer(f"{self.path}: XDATA read of {size} bytes at {address:#06x} returned "
                                f"{len(data)}", endpoint=0, expected=size, actual=len(data), data=data)
        return data

    def xdata_write(self, address: int, data: bytes) -> None:
        transfers = [self.transport.submit_control(self._vendor_out, REQUEST_XDATA_WRITE, address + i,
                                                   byte, b"", self.timeout_s)
                     for i, byte in enumerate(data)]
        self._post(transfers)

    def _tlp_setup(self, fmt_type: int, address: int, enables: int, mode: int, value: int) -> Transfer:
        payload = struct.pack("<III", address & 0xFFFFFFFF, address >> 32, value & 0xFFFFFFFF)
        return self.transport.submit_control(self._vendor_out, REQUEST_TLP, fmt_type | enables << 8,
                                             mode, payload, self.timeout_s)

    def tlp(self, fmt_type: int, address: int, enables: int, value: int | None = None) -> Completion | None:
        if fmt_type & TLP_FMT_HAS_DATA:
            self._settle_sram()
        setup = self._tlp_setup(fmt_type, address, enables, TLP_MODE_SINGLE, value or 0)
        if is_posted(fmt_type):
            self._post([setup])
            return None
        # the control pipe keeps order: the result request goes out behind the setup at once,
        # so the two share one round trip
        fetch = self.transport.submit_control(self._vendor_in, REQUEST_TLP, 0, 0, TLP_RESULT_BYTES,
                                              self.timeout_s)
        self.flush()
        self.transport.reap([setup, fetch], self.timeout_s)
        result = fetch.result
        if len(result) != TLP_RESULT_BYTES:
            raise ShortTransfer(f"{self.path}: TLP result of {len(result)} bytes", endpoint=0,
                                expected=TLP_RESULT_BYTES, actual=len(result), data=result)
        # handmade/src/main.c: data bytes least significant first, then the completion header
        # (big-endian), the completion type and the firmware's result
        value_out = int.from_bytes(result[:DWORD], "little")
        header, completion_type, outcome = struct.unpack(">HBB", result[DWORD:])
        if outcome == TLP_RESULT_TIMEOUT:
            raise DeviceTimeout(f"{self.path}: the bridge got no completion for the TLP to {address:#x}; "
                                "the device behind it may be gone or hung", errno=_errno.ETIMEDOUT)
        if outcome != TLP_RESULT_OK:
            raise CompletionError(f"{self.path}: the bridge flagged an error on the TLP to {address:#x}",
                                  status=header >> COMPLETION_STATUS_SHIFT & COMPLETION_STATUS_MASK,
                                  address=address)
        return Completion.from_header(header, completion_type, value_out)

    def memory_read(self, address: int, size: int) -> bytes:
        self.flush()
        out = bytearray()
        while len(out) < size:
            chunk = min(self.stream_max_bytes, size - len(out))
            where = address + len(out)
            setup = self._tlp_setup(TLP_MEM_READ64, where, ALL_BYTES, TLP_MODE_STREAM_READ, chunk // DWORD)
            data = self.transport.submit_bulk(EP_DATA_IN, chunk, self.timeout_s)
            self.transport.reap([setup, data], self.timeout_s)
            if data.actual != chunk:
                # the firmware stops streaming at a read that does not complete
                raise CompletionError(f"{self.path}: streamed memory read at {where + data.actual:#x} "
                                      "stopped (Unsupported Request or device gone)",
                                      status=CPL_UNSUPPORTED_REQUEST, address=where + data.actual)
            out += data.result
        return bytes(out)

    def memory_write(self, address: int, data: bytes) -> None:
        if len(data) < self.stream_min_bytes:
            super().memory_write(address, data)
            return
        self._settle_sram()
        view = memoryview(data)
        transfers = []
        for start in range(0, len(data), self.stream_max_bytes):
            chunk = view[start:start + self.stream_max_bytes]
            transfers.append(self._tlp_setup(TLP_MEM_WRITE64, address + start, ALL_BYTES,
                                             TLP_MODE_STREAM_WRITE, len(chunk) // DWORD))
            transfers.append(self.transport.submit_bulk(EP_DATA_OUT, bytes(chunk), self.timeout_s))
        self._post(transfers)

    def sram_write(self, offset: int, data: bytes) -> None:
        """Posted: the arm and the bulk transfer stay in flight (with the TLPs posted before them)
        until a write TLP, the next SRAM transfer, a flush or close waits for them."""
        self._sram_transfer(offset, len(data), data)

    def sram_read(self, offset: int, size: int) -> bytes:
        return self._sram_transfer(offset, size, None)

    def _sram_transfer(self, offset: int, size: int, data: bytes | None) -> bytes:
        self._check_sram(offset, size, SECTOR_SIZE)
        if offset % SRAM_SLOT_SIZE:
            raise InvalidArgument(f"custom firmware SRAM DMA starts at a {SRAM_SLOT_SIZE:#x}-byte slot "
                                  f"(offset {offset:#x})")
        # the SRAM transfer may overtake posted one-dword TLPs (the host reads a fence before it
        # touches SRAM the device uses); a posted stream shares the bulk pipe, so it finishes first
        if any(transfer.kind != CONTROL for transfer in self._posted):
            self.flush()
        self._settle_sram()
        slots = -(-size // SRAM_SLOT_SIZE)
        sectors = size // SECTOR_SIZE
        value = sectors | (SRAM_DMA_BULK_IN if data is None else 0)
        arm = self.transport.submit_control(self._vendor_out, REQUEST_SRAM_DMA, value,
                                            offset // SRAM_SLOT_SIZE | slots << 8, b"", self.timeout_s)
        if data is None:
            bulk = self.transport.submit_bulk(EP_DATA_IN, size, self.timeout_s)
        else:
            bulk = self.transport.submit_bulk(EP_DATA_OUT, data, self.timeout_s)
            self._sram_posted = [arm, bulk]
            return b""
        self.transport.reap([arm, bulk], self.timeout_s)
        if bulk.actual != size:
            raise ShortTransfer(f"{self.path}: SRAM DMA moved {bulk.actual} of {size} bytes",
                                endpoint=bulk.endpoint, expected=size, actual=bulk.actual, data=bulk.result)
        return bulk.result

    def pcie_power(self, on: bool) -> None:
        self.flush()
        self.transport.control_out(self._vendor_out, REQUEST_PCIE_POWER, int(on), 0, b"", self.timeout_s)


@dataclass
class ScsiCommand:
    """One SCSI command: the CDB, the bytes to read back (IN) or the data to send (OUT)."""

    cdb: bytes
    data_in: int = 0
    data_out: bytes | None = None
    result: bytes = b""


def xdata_read_cdb(address: int, size: int) -> bytes:
    scsi_address = (address & XDATA_SCSI_MASK) | XDATA_SCSI_PREFIX
    return struct.pack(">BBBHB", SCSI_XDATA_READ, size, scsi_address >> 16, scsi_address & 0xFFFF, 0)


def xdata_write_cdb(address: int, value: int) -> bytes:
    scsi_address = (address & XDATA_SCSI_MASK) | XDATA_SCSI_PREFIX
    return struct.pack(">BBBHB", SCSI_XDATA_WRITE, value, scsi_address >> 16, scsi_address & 0xFFFF, 0)


def rw16_cdb(opcode: int, lba: int, sectors: int) -> bytes:
    """READ(16)/WRITE(16): opcode, flags, 64-bit LBA, 32-bit transfer length, group, control
    (SBC-4 sec 5.19 / 5.45; tinygrad usb.py ScsiWriteOp packs '>BBQIBB')."""
    return struct.pack(">BBQIBB", opcode, 0, lba, sectors, 0, 0)


def encode_cbw(tag: int, command: ScsiCommand) -> bytes:
    length = command.data_in or (len(command.data_out) if command.data_out is not None else 0)
    flags = CBW_FLAG_IN if command.data_in else 0
    cdb = command.cdb.ljust(CDB_SIZE, b"\0")
    return CBW.pack(CBW_SIGNATURE, tag, length, flags, 0, len(command.cdb), cdb)


def decode_csw(data: bytes) -> tuple[int, int, int]:
    """(tag, residue, status) of a CSW; InvalidArgument if it is not one."""
    if len(data) != CSW_LENGTH:
        raise InvalidArgument(f"a CSW is {CSW_LENGTH} bytes, got {len(data)}")
    signature, tag, residue, status = CSW.unpack(data)
    if signature != CSW_SIGNATURE:
        raise InvalidArgument(f"CSW signature {signature:#010x} is not USBS")
    return tag, residue, status


def encode_command_iu(tag: int, cdb: bytes) -> bytes:
    return COMMAND_IU.pack(IU_ID_COMMAND, 0, tag, 0, 0, 0, 0, bytes(8), cdb.ljust(CDB_SIZE, b"\0"))


def decode_sense_iu(data: bytes) -> tuple[int, int, bytes]:
    """(tag, SCSI status, sense data) of a status IU; InvalidArgument if it is not one."""
    if len(data) < SENSE_IU_HEADER.size:
        raise InvalidArgument(f"a status IU has at least {SENSE_IU_HEADER.size} bytes, got {len(data)}")
    iu_id, _, tag, _, status, _, sense_length = SENSE_IU_HEADER.unpack_from(data)
    if iu_id != IU_ID_STATUS:
        raise InvalidArgument(f"IU id {iu_id:#04x} where a status IU ({IU_ID_STATUS:#04x}) was expected")
    return tag, status, bytes(data[SENSE_IU_HEADER.size:SENSE_IU_HEADER.size + sense_length])


class StockFirmwareBridge(ASM24xxBridge):
    """ASMedia's firmware: SCSI commands over BOT (`uas=False`) or UAS (see the module docstring).

    XDATA bytes written are cached (as tinygrad does), so the TLP engine's address, data and
    enable registers are written only where they change; every read invalidates what it covers.
    """

    firmware = STOCK

    def __init__(self, transport: USBTransport, uas: bool = True, timeout_s: float = 1.0,
                 max_streams: int = UAS_MAX_STREAMS) -> None:
        super().__init__(transport, timeout_s)
        self.uas = uas
        self.max_streams = max_streams if uas else 1
        self._tag = 0
        self._cache: dict[int, int] = {}
        self._queued: list[ScsiCommand] = []
        # XDATA commands repeat (the same registers, the same values): their encodings are kept
        self._xdata_write_cdbs: dict[tuple[int, int], bytes] = {}
        self._command_ius: dict[tuple[int, bytes], bytes] = {}
        self._good_status = {
            tag: SENSE_IU_HEADER.pack(IU_ID_STATUS, 0, tag, 0, SCSI_STATUS_GOOD, bytes(7), 0)
            for tag in range(1, self.max_streams + 1)}

    # -- SCSI transport ------------------------------------------------------------------------------
    def execute(self, commands: list[ScsiCommand]) -> None:
        """Run `commands` in order (UAS: up to max_streams in flight); results land in each."""
        try:
            for start in range(0, len(commands), self.max_streams):
                batch = commands[start:start + self.max_streams]
                if self.uas:
                    self._execute_uas(batch)
                else:
                    for command in batch:
                        self._execute_bot(command)
        except DeviceLost:
            raise
        except HalError:
            self._recover()
            raise

    def _recover(self) -> None:
        """After a failed command nothing is known of the bridge's state: forget the XDATA cache,
        clear the halts and select the interface setting again, which drops every command the
        bridge still holds (the BOT reset recovery of storage.h's US_BULK_RESET_REQUEST and
        uas.c's error handling reach the same state)."""
        self._cache.clear()
        self._queued.clear()
        try:
            for endpoint in (EP_DATA_IN, EP_DATA_OUT, EP_STATUS_IN, EP_COMMAND_OUT):
                self.transport.clear_halt(endpoint)
            self.transport.set_interface(INTERFACE, ALT_UAS if self.uas else ALT_BOT)
        except HalError as exc:
            log.warning("%s: resynchronising the bridge failed: %s", self.path, exc)

    def _next_tag(self) -> int:
        # uas.c: stream ids (and with them tags) start at 1; stream 0 is not a stream
        self._tag = self._tag % self.max_streams + 1
        return self._tag

    def _execute_bot(self, command: ScsiCommand) -> None:
        tag = self._next_tag()
        transport = self.transport
        transfers = [transport.submit_bulk(EP_DATA_OUT, encode_cbw(tag, command), self.timeout_s)]
        data = None
        if command.data_in:
            data = transport.submit_bulk(EP_DATA_IN, command.data_in, self.timeout_s)
            transfers.append(data)
        elif command.data_out is not None:
            transfers.append(transport.submit_bulk(EP_DATA_OUT, command.data_out, self.timeout_s))
        status = transport.submit_bulk(EP_DATA_IN, CSW_LENGTH, self.timeout_s)
        transfers.append(status)
        transport.reap(transfers, self.timeout_s)
        got_tag, residue, csw_status = decode_csw(status.result)
        if got_tag != tag:
            raise HalError(f"{self.path}: CSW tag {got_tag} answers no command (expected {tag}); "
                           "reset the bridge", errno=_errno.EPROTO)
        self._check_scsi(command, csw_status != CSW_STATUS_OK, f"CSW status {csw_status}")
        if data is not None:
            command.result = data.result[:command.data_in - residue]

    def _execute_uas(self, batch: list[ScsiCommand]) -> None:
        transport = self.transport
        transfers = []
        by_tag = {}
        for command in batch:
            tag = self._next_tag()
            # uas.c uas_submit_urbs: status (and data) transfers go out before the command
            status = transport.submit_bulk(EP_STATUS_IN, SENSE_IU_MAX, self.timeout_s, stream=tag)
            data = None
            if command.data_in:
                data = transport.submit_bulk(EP_DATA_IN, command.data_in, self.timeout_s, stream=tag)
            elif command.data_out is not None:
                data = transport.submit_bulk(EP_DATA_OUT, command.data_out, self.timeout_s, stream=tag)
            cdb = command.cdb
            iu = self._command_ius.get((tag, cdb))
            if iu is None:
                iu = encode_command_iu(tag, cdb)
                if cdb[0] in (SCSI_XDATA_READ, SCSI_XDATA_WRITE):
                    self._command_ius[(tag, cdb)] = iu
            cmd = transport.submit_bulk(EP_COMMAND_OUT, iu, self.timeout_s)
            transfers += [t for t in (status, cmd) if t is not None]
            if data is not None and not command.data_in:
                transfers.append(data)
            by_tag[tag] = (command, status, data)
        # statuses first: a command that failed sends no data, and its data-in transfer is cancelled
        try:
            transport.reap(transfers, self.timeout_s)
        except HalError:
            for _, _, data in by_tag.values():
                if data is not None and not data.done:
                    transport.cancel(data)
            raise
        failure = None
        good = self._good_status
        for tag, (command, status, data) in by_tag.items():
            if data is None and status.result == good[tag]:
                continue  # the common answer, exactly: GOOD for this tag, no data phase
            got_tag, scsi_status, sense = decode_sense_iu(status.result)
            if got_tag != tag:
                failure = failure or HalError(f"{self.path}: status IU for tag {got_tag} on stream {tag}; "
                                              "reset the bridge", errno=_errno.EPROTO)
            elif scsi_status != SCSI_STATUS_GOOD:
                failure = failure or self._scsi_error(
                    command, f"SCSI status {scsi_status:#04x}, sense {sense.hex() or 'none'}")
            elif data is not None and command.data_in:
                transport.reap([data], self.timeout_s)
                command.result = data.result
                continue
            if data is not None and command.data_in and not data.done:
                transport.cancel(data)
        if failure is not None:
            raise failure

    def _check_scsi(self, command: ScsiCommand, failed: bool, detail: str) -> None:
        if failed:
            raise self._scsi_error(command, detail)

    def _scsi_error(self, command: ScsiCommand, detail: str) -> HalError:
        return HalError(f"{self.path}: the bridge rejected SCSI command {command.cdb[0]:#04x} ({detail})",
                        errno=_errno.EIO)

    # -- XDATA ---------------------------------------------------------------------------------------
    def _queue_write(self, address: int, data: bytes, cached: bool) -> None:
        for index, byte in enumerate(data):
            where = address + index
            if cached and self._cache.get(where) == byte:
                continue
            cdb = self._xdata_write_cdbs.get((where, byte))
            if cdb is None:
                cdb = self._xdata_write_cdbs[(where, byte)] = xdata_write_cdb(where, byte)
            self._queued.append(ScsiCommand(cdb))
            self._cache[where] = byte

    def flush(self) -> None:
        if self._queued:
            queued, self._queued = self._queued, []
            self.execute(queued)
        super().flush()

    def xdata_read(self, address: int, size: int) -> bytes:
        commands = []
        for offset in range(0, size, SCSI_XDATA_READ_MAX):
            length = min(SCSI_XDATA_READ_MAX, size - offset)
            commands.append(ScsiCommand(xdata_read_cdb(address + offset, length), data_in=length))
            for where in range(address + offset, address + offset + length):
                self._cache.pop(where, None)
        queued, self._queued = self._queued, []
        self.execute(queued + commands)
        out = b"".join(command.result for command in commands)
        if len(out) != size:
            raise ShortTransfer(f"{self.path}: XDATA read of {size} bytes at {address:#06x} returned "
                                f"{len(out)}", endpoint=EP_DATA_IN, expected=size, actual=len(out), data=out)
        return out

    def xdata_write(self, address: int, data: bytes) -> None:
        self._queue_write(address, data, cached=False)
        if len(self._queued) >= self.max_streams:
            self.flush()

    # -- TLPs ------------------------------------------------------------------------------------------
    def tlp(self, fmt_type: int, address: int, enables: int, value: int | None = None) -> Completion | None:
        if address % DWORD:
            raise InvalidArgument(f"TLP address {address:#x} is not dword aligned")
        if fmt_type & TLP_FMT_HAS_DATA:
            self._queue_write(XDATA_TLP_DATA, struct.pack(">I", (value or 0) & 0xFFFFFFFF), cached=True)
        self._queue_write(XDATA_TLP_ADDRESS, struct.pack(">I", address & 0xFFFFFFFF), cached=True)
        if fmt_type & TLP_FMT_4DW:
            self._queue_write(XDATA_TLP_ADDRESS_HIGH, struct.pack(">I", address >> 32), cached=True)
        self._queue_write(XDATA_TLP_BYTE_ENABLE, bytes([enables]), cached=True)
        self._queue_write(XDATA_TLP_FMT_TYPE, bytes([fmt_type]), cached=True)
        self._queue_write(XDATA_TLP_TRIGGER, bytes([TLP_TRIGGER_EXEC]), cached=False)
        self._queue_write(XDATA_TLP_STATUS, bytes([TLP_STATUS_KICK]), cached=False)
        if is_posted(fmt_type):
            if len(self._queued) >= self.max_streams:
                self.flush()
            return None
        return self._await_completion(fmt_type, address, enables, value)

    def _await_completion(self, fmt_type: int, address: int, enables: int, value: int | None) -> Completion:
        retries = TLP_RETRIES
        for _ in range(TLP_POLL_LIMIT):
            status = self.xdata_read(XDATA_TLP_STATUS, 1)[0]
            if status & TLP_STATUS_COMPLETE:
                break
            if status & TLP_STATUS_ERROR:
                # tinygrad usb.py pcie_request: clear the flag and send the request again
                self._queue_write(XDATA_TLP_STATUS, bytes([TLP_STATUS_ERROR]), cached=False)
                if not retries:
                    raise CompletionError(f"{self.path}: the TLP engine flagged an error for "
                                          f"{address:#x} {TLP_RETRIES} times",
                                          status=CPL_COMPLETER_ABORT, address=address)
                retries -= 1
                return self.tlp(fmt_type, address, enables, value)
        else:
            raise DeviceTimeout(f"{self.path}: the TLP to {address:#x} did not complete after "
                                f"{TLP_POLL_LIMIT} status polls; the device behind the bridge may be gone",
                                errno=_errno.ETIMEDOUT)
        completion_type = self.xdata_read(XDATA_TLP_COMPLETION_TYPE, 1)[0]
        header = struct.unpack(">H", self.xdata_read(XDATA_TLP_COMPLETION, 2))[0]
        data = 0
        if not fmt_type & TLP_FMT_HAS_DATA:
            data = struct.unpack(">I", self.xdata_read(XDATA_TLP_DATA, DWORD))[0]
        # acknowledge the completion so the next poll sees the next one
        self._queue_write(XDATA_TLP_STATUS, bytes([TLP_STATUS_COMPLETE]), cached=False)
        return Completion.from_header(header, completion_type, data)

    # -- SRAM ------------------------------------------------------------------------------------------
    def sram_write(self, offset: int, data: bytes) -> None:
        # asm2464pd-firmware USBGPU.md: WRITE(16) lands at PCI address 0x200000 + LBA * 512
        self._check_sram(offset, len(data), SECTOR_SIZE)
        chunk = SRAM_SLOT_SIZE
        self.flush()
        self.execute([ScsiCommand(rw16_cdb(SCSI_WRITE_16, (offset + start) // SECTOR_SIZE,
                                           min(chunk, len(data) - start) // SECTOR_SIZE),
                                  data_out=bytes(data[start:start + chunk]))
                      for start in range(0, len(data), chunk)])

    def sram_read(self, offset: int, size: int) -> bytes:
        # USBGPU.md: the firmware answers READ(16) from the same LBA mapping as WRITE(16)
        self._check_sram(offset, size, SECTOR_SIZE)
        chunk = SRAM_SLOT_SIZE
        self.flush()
        commands = [ScsiCommand(rw16_cdb(SCSI_READ_16, (offset + start) // SECTOR_SIZE,
                                         min(chunk, size - start) // SECTOR_SIZE),
                                data_in=min(chunk, size - start))
                    for start in range(0, size, chunk)]
        self.execute(commands)
        return b"".join(command.result for command in commands)


def open_bridge(transport: USBTransport, timeout_s: float = 1.0) -> ASM24xxBridge:
    """The bridge protocol that matches the device's identity; claims the interface setting it
    needs (UAS when the configuration offers it, else BOT for stock firmware)."""
    identity = transport.identity
    if (identity.vendor_id, identity.product_id) == (CUSTOM_VENDOR_ID, CUSTOM_PRODUCT_ID):
        transport.set_interface(INTERFACE, ALT_BOT)
        return CustomFirmwareBridge(transport, timeout_s)
    if identity.vendor_id == ASMEDIA_VENDOR_ID and identity.product_id in STOCK_PRODUCT_IDS:
        uas = has_uas(transport.configuration_descriptor())
        transport.set_interface(INTERFACE, ALT_UAS if uas else ALT_BOT)
        streams = 0
        if uas:
            streams = transport.alloc_streams((EP_DATA_IN, EP_DATA_OUT, EP_STATUS_IN), UAS_MAX_STREAMS)
            for endpoint in (EP_DATA_IN, EP_DATA_OUT, EP_STATUS_IN, EP_COMMAND_OUT):
                transport.clear_halt(endpoint)
        if uas and streams:
            return StockFirmwareBridge(transport, uas=True, timeout_s=timeout_s, max_streams=streams)
        if uas:
            # no bulk streams from this host library: UAS cannot run, Bulk-Only can
            transport.set_interface(INTERFACE, ALT_BOT)
        return StockFirmwareBridge(transport, uas=False, timeout_s=timeout_s)
    ids = f"{identity.vendor_id:04x}:{identity.product_id:04x}"
    raise UnsupportedOperation(f"USB device {identity.path} ({ids}) "
                               f"is not an ASM24xx bridge (stock {ASMEDIA_VENDOR_ID:04x}:"
                               f"{'/'.join(f'{p:04x}' for p in STOCK_PRODUCT_IDS)} or custom "
                               f"{CUSTOM_VENDOR_ID:04x}:{CUSTOM_PRODUCT_ID:04x})")


# include/uapi/linux/usb/ch9.h USB_DT_INTERFACE, USB_CLASS_MASS_STORAGE; storage.h USB_PR_UAS
DESCRIPTOR_INTERFACE = 0x04
CLASS_MASS_STORAGE = 0x08
PROTOCOL_UAS = 0x62


def has_uas(configuration: bytes) -> bool:
    """Whether a configuration descriptor set has a mass-storage interface speaking UAS."""
    offset = 0
    while offset + 2 <= len(configuration):
        length, kind = configuration[offset], configuration[offset + 1]
        if length < 2:
            break
        if kind == DESCRIPTOR_INTERFACE and length >= 9:
            if configuration[offset + 5] == CLASS_MASS_STORAGE and configuration[offset + 7] == PROTOCOL_UAS:
                return True
        offset += length
    return False
