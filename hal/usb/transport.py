"""The USB transport seam: control and bulk transfers, synchronous and asynchronous.

A `USBTransport` is one opened USB device (its configuration set and interface claimed). The
backends above it (hal.usb.asm24xx) speak only through it; `hal.usb.libusb.LibusbTransport`
reaches real hardware through python-libusb1, and the mock machine's USB bus
(mockgpu.usb) implements the same class, so the protocol and PCI backend code run unchanged
against both.

Asynchronous use: `submit_control` / `submit_bulk` return a `Transfer` at once; `reap(transfers,
timeout_s)` waits for all of them (bounded) and raises the first failure. Many transfers may be in
flight (USB Attached SCSI gives each command its own stream, so the status, data and command
transfers of up to `max_streams` commands overlap). The synchronous helpers are submit + reap.

Units: lengths in bytes, timeouts in seconds, endpoints as USB endpoint addresses (bit 7 set for
IN). Failures are typed: `TransferStall` (the endpoint answered STALL: a protocol error; clear
the halt), `ShortTransfer` (fewer bytes than required), `DeviceTimeout` (no answer in time),
`DeviceLost` (the device was unplugged or reset under us).
"""
from __future__ import annotations

import errno as _errno
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from hal.errors import DeviceLost, DeviceTimeout, HalError, InvalidArgument

# USB 3.2 r1.0 sec 9.3 bmRequestType: bit 7 direction, bits 6:5 type, bits 4:0 recipient
ENDPOINT_IN = 0x80  # include/uapi/linux/usb/ch9.h USB_DIR_IN (also bit 7 of an IN endpoint address)
ENDPOINT_OUT = 0x00  # include/uapi/linux/usb/ch9.h USB_DIR_OUT
REQUEST_TYPE_STANDARD = 0x00  # include/uapi/linux/usb/ch9.h USB_TYPE_STANDARD
REQUEST_TYPE_CLASS = 0x20  # include/uapi/linux/usb/ch9.h USB_TYPE_CLASS
REQUEST_TYPE_VENDOR = 0x40  # include/uapi/linux/usb/ch9.h USB_TYPE_VENDOR
RECIPIENT_DEVICE = 0x00  # include/uapi/linux/usb/ch9.h USB_RECIP_DEVICE
RECIPIENT_INTERFACE = 0x01  # include/uapi/linux/usb/ch9.h USB_RECIP_INTERFACE
RECIPIENT_ENDPOINT = 0x02  # include/uapi/linux/usb/ch9.h USB_RECIP_ENDPOINT
MAX_CONTROL_LENGTH = 0xFFFF  # wLength is 16 bits (USB 3.2 r1.0 sec 9.3.5)
DEFAULT_TIMEOUT_S = 1.0

CONTROL = "control"
BULK = "bulk"


class TransferStall(HalError):
    """The endpoint answered STALL (libusb LIBUSB_ERROR_PIPE, EPIPE): the device refused the
    request. For bulk endpoints the halt must be cleared (`clear_halt`) before the next use."""

    def __init__(self, message: str, *, endpoint: int) -> None:
        super().__init__(message, errno=_errno.EPIPE)
        self.endpoint = endpoint


class ShortTransfer(HalError):
    """Fewer bytes moved than the protocol needs; `data` holds what arrived (IN) and `actual`
    the count."""

    def __init__(self, message: str, *, endpoint: int, expected: int, actual: int,
                 data: bytes = b"") -> None:
        super().__init__(message, errno=_errno.EREMOTEIO)
        self.endpoint = endpoint
        self.expected = expected
        self.actual = actual
        self.data = data


@dataclass
class Setup:
    """A control transfer's SETUP packet (USB 3.2 r1.0 sec 9.3)."""

    request_type: int
    request: int
    value: int
    index: int
    length: int

    @property
    def is_in(self) -> bool:
        return bool(self.request_type & ENDPOINT_IN)


@dataclass(slots=True)
class Transfer:
    """One submitted transfer. `endpoint` 0 is the control pipe; `data` is what goes out (OUT) or
    None (IN, `length` bytes asked); `stream` is the bulk stream id (0: none). After `reap`,
    `result` holds what came in (IN) and `actual` the bytes moved, or `error` the failure."""

    kind: str
    endpoint: int
    length: int
    timeout_s: float
    data: bytes | None = None
    setup: Setup | None = None
    stream: int = 0
    done: bool = False
    result: bytes = b""
    actual: int = 0
    error: HalError | None = None
    backend_handle: object = field(default=None, repr=False)

    @property
    def is_in(self) -> bool:
        if self.setup is not None:
            return self.setup.is_in
        return bool(self.endpoint & ENDPOINT_IN)

    def what(self) -> str:
        if self.setup is not None:
            s = self.setup
            return (f"control request {s.request:#04x} (type {s.request_type:#04x}, value {s.value:#06x}, "
                    f"index {s.index:#06x}, {s.length} bytes)")
        direction = "IN" if self.is_in else "OUT"
        stream = f" stream {self.stream}" if self.stream else ""
        return f"bulk {direction} endpoint {self.endpoint:#04x}{stream} ({self.length} bytes)"

    def complete(self, result: bytes = b"", actual: int | None = None) -> None:
        """The device finished the transfer (transports call this)."""
        self.result = bytes(result)
        self.actual = len(self.result) if actual is None else actual
        self.done = True

    def fail(self, error: HalError) -> None:
        """The transfer failed with `error` (transports call this)."""
        self.error = error
        self.done = True


@dataclass(frozen=True)
class DeviceIdentity:
    """What the device descriptor and the bus say about a USB device."""

    vendor_id: int
    product_id: int
    path: str  # "BUS-PORT[.PORT...]", as Linux names it under /sys/bus/usb/devices
    speed_mbps: int = 0
    product: str = ""


class USBTransport(ABC):
    """One opened USB device. Subclasses implement `_submit` and `_reap`; see the module docstring."""

    name = "abstract"
    identity: DeviceIdentity

    # -- descriptors and interfaces ------------------------------------------------------------
    @abstractmethod
    def configuration_descriptor(self) -> bytes:
        """The active configuration's full descriptor set (configuration, interfaces, endpoints)."""

    @abstractmethod
    def set_interface(self, interface: int, alt_setting: int) -> None:
        """Select `alt_setting` of a claimed `interface` (SET_INTERFACE)."""

    @abstractmethod
    def clear_halt(self, endpoint: int) -> None:
        """CLEAR_FEATURE(ENDPOINT_HALT) on `endpoint` after a stall."""

    def alloc_streams(self, endpoints: tuple[int, ...], count: int) -> int:
        """Bulk streams for `endpoints` (USB Attached SCSI); returns how many were granted."""
        return 0

    # -- transfers -----------------------------------------------------------------------------
    def submit_control(self, request_type: int, request: int, value: int, index: int,
                       data_or_length: bytes | int = 0,
                       timeout_s: float = DEFAULT_TIMEOUT_S) -> Transfer:
        """Queue a control transfer: OUT with `data_or_length` bytes, or IN of that many bytes."""
        if isinstance(data_or_length, int):
            data, length = None, data_or_length
        else:
            data, length = bytes(data_or_length), len(data_or_length)
        if not 0 <= length <= MAX_CONTROL_LENGTH:
            raise InvalidArgument(f"control transfer of {length} bytes (wLength is 16 bits)")
        if (request_type & ENDPOINT_IN) and data is not None:
            raise InvalidArgument("an IN control transfer takes a length, not data")
        for name, field_value in (("value", value), ("index", index)):
            if not 0 <= field_value <= 0xFFFF:
                raise InvalidArgument(f"control transfer w{name.title()} {field_value:#x} is not 16 bits")
        setup = Setup(request_type, request, value, index, length)
        transfer = Transfer(CONTROL, 0, length, timeout_s, data=data, setup=setup)
        self._submit(transfer)
        return transfer

    def submit_bulk(self, endpoint: int, data_or_length: bytes | int,
                    timeout_s: float = DEFAULT_TIMEOUT_S, stream: int = 0) -> Transfer:
        """Queue a bulk transfer on `endpoint` (IN when bit 7 is set: give a length)."""
        is_in = bool(endpoint & ENDPOINT_IN)
        if is_in != isinstance(data_or_length, int):
            raise InvalidArgument(f"bulk endpoint {endpoint:#04x}: IN takes a length, OUT takes data")
        if is_in:
            transfer = Transfer(BULK, endpoint, data_or_length, timeout_s, stream=stream)
        else:
            data = bytes(data_or_length)
            transfer = Transfer(BULK, endpoint, len(data), timeout_s, data=data, stream=stream)
        self._submit(transfer)
        return transfer

    def reap(self, transfers: list[Transfer], timeout_s: float | None = None) -> None:
        """Wait until every transfer is done (each bounded by its own timeout, or `timeout_s`),
        then raise the first failure in submission order."""
        self._reap([t for t in transfers if not t.done], timeout_s)
        for transfer in transfers:
            if not transfer.done:
                raise DeviceTimeout(f"{self.identity.path}: {transfer.what()} did not finish",
                                    errno=_errno.ETIMEDOUT)
            if transfer.error is not None:
                raise transfer.error

    def cancel(self, transfer: Transfer) -> None:
        """Withdraw a transfer that will not complete (its command failed); it ends as failed."""
        if not transfer.done:
            self._cancel(transfer)
            transfer.fail(HalError(f"{self.identity.path}: {transfer.what()} was cancelled",
                                   errno=_errno.ECANCELED))

    def _cancel(self, transfer: Transfer) -> None:
        """Stop `transfer` in the transport (libusb_cancel_transfer)."""

    def control_in(self, request_type: int, request: int, value: int, index: int, length: int,
                   timeout_s: float = DEFAULT_TIMEOUT_S) -> bytes:
        transfer = self.submit_control(request_type | ENDPOINT_IN, request, value, index, length,
                                       timeout_s)
        self.reap([transfer])
        return transfer.result

    def control_out(self, request_type: int, request: int, value: int, index: int,
                    data: bytes = b"", timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        transfer = self.submit_control(request_type & ~ENDPOINT_IN, request, value, index, data,
                                       timeout_s)
        self.reap([transfer])

    def bulk_in(self, endpoint: int, length: int, timeout_s: float = DEFAULT_TIMEOUT_S,
                stream: int = 0) -> bytes:
        transfer = self.submit_bulk(endpoint, length, timeout_s, stream)
        self.reap([transfer])
        return transfer.result

    def bulk_out(self, endpoint: int, data: bytes, timeout_s: float = DEFAULT_TIMEOUT_S,
                 stream: int = 0) -> None:
        transfer = self.submit_bulk(endpoint, data, timeout_s, stream)
        self.reap([transfer])
        if transfer.actual != len(data):
            raise ShortTransfer(f"{self.identity.path}: {transfer.what()} moved {transfer.actual} bytes",
                                endpoint=endpoint, expected=len(data), actual=transfer.actual)

    @abstractmethod
    def _submit(self, transfer: Transfer) -> None:
        """Start `transfer` (it completes or fails later, in `_reap`)."""

    @abstractmethod
    def _reap(self, transfers: list[Transfer], timeout_s: float | None) -> None:
        """Drive the transfers until each is done or its timeout passed (then fail it with
        DeviceTimeout); never wait unbounded."""

    # -- clocks and life cycle -----------------------------------------------------------------
    def link_time_s(self) -> float:
        """Seconds the link has been busy (simulated transports keep a clock; 0 elsewhere)."""
        return 0.0

    @abstractmethod
    def close(self) -> None:
        """Cancel what is in flight, release the interface (reattaching the kernel driver that was
        detached) and close the device."""


def lost(path: str, what: str) -> DeviceLost:
    """The error every transport raises when the device went away during `what`."""
    return DeviceLost(f"USB device {path} is gone ({what}): it was unplugged, lost power or was "
                      "reset; plug it in again and reopen it", errno=_errno.ENODEV)


def timed_out(path: str, transfer: Transfer) -> DeviceTimeout:
    return DeviceTimeout(f"USB device {path}: {transfer.what()} got no answer within "
                         f"{transfer.timeout_s:g} s; the bridge firmware may be hung (unplug and replug it)",
                         errno=_errno.ETIMEDOUT)


def stalled(path: str, transfer: Transfer) -> TransferStall:
    return TransferStall(f"USB device {path}: {transfer.what()} was refused with STALL (the device "
                         "does not support the request or its state does not allow it)",
                         endpoint=transfer.endpoint)


class USBHost(ABC):
    """The USB side of the OS seam (`OS.usb_host()`): list the devices on the buses, open one."""

    @abstractmethod
    def list(self) -> list[tuple[str, DeviceIdentity]]:
        """(path, identity) of every device the host sees, in path order."""

    @abstractmethod
    def open(self, path: str) -> USBTransport:
        """Open the device at `path` ("BUS-PORT[.PORT...]") with its interface 0 claimed (the
        kernel's driver detached first). DeviceNotFound, DeviceBusy or PermissionDenied say why not."""
