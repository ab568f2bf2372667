"""The real USB transport: python-libusb1 (module `usb1`), loaded the first time it is used.

`pip install 'gpuhal[usb]'` (or `pip install libusb1`) installs it; without it every call raises
BackendUnavailable with that command, and nothing else in gpuhal needs it.

Opening a bridge: find it by port path, open it, detach the kernel's driver from interface 0
(usb-storage or uas bind to a stock-firmware bridge, which shows up as a disk), claim the
interface. libusb errors become typed errors here, in one place: EACCES on the device node
(`/dev/bus/usb/BBB/DDD`) is PermissionDenied naming the udev rule to add; a claimed interface
is DeviceBusy; an unplugged device is DeviceLost; STALL is TransferStall; a timeout DeviceTimeout.

Bulk streams (USB Attached SCSI) need libusb_alloc_streams, which python-libusb1 does not wrap:
`alloc_streams` returns 0 and stock-firmware bridges are driven through Bulk-Only Transport.
"""
from __future__ import annotations

import errno as _errno
import logging
import threading

from hal.errors import BackendUnavailable, DeviceBusy, DeviceNotFound, HalError, PermissionDenied
from hal.usb.transport import (CONTROL, DeviceIdentity, ShortTransfer, Transfer, USBHost, USBTransport,
                               lost, stalled, timed_out)

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'gpuhal[usb]' (python-libusb1; on macOS also `brew install libusb`)"
# the udev rule that gives the logged-in user the bridge's device node (Linux); both identities
UDEV_RULE = ('SUBSYSTEM=="usb", ATTR{idVendor}=="174c", ATTR{idProduct}=="246[34]", MODE="0660", '
             'TAG+="uaccess"\nSUBSYSTEM=="usb", ATTR{idVendor}=="add1", ATTR{idProduct}=="0001", '
             'MODE="0660", TAG+="uaccess"')
UDEV_FILE = "/etc/udev/rules.d/70-gpuhal-asm24xx.rules"
GET_DESCRIPTOR = 0x06  # include/uapi/linux/usb/ch9.h USB_REQ_GET_DESCRIPTOR
DESCRIPTOR_CONFIG = 0x02  # include/uapi/linux/usb/ch9.h USB_DT_CONFIG
CONFIG_DESCRIPTOR_MAX = 4096
MS_PER_S = 1000
EVENT_SLICE_S = 0.01  # how long one libusb event wait lasts while transfers are reaped

_module = None


def _usb1():
    """The python-libusb1 module, imported once; BackendUnavailable with the install command."""
    global _module
    if _module is None:
        try:
            import usb1
        except ImportError as exc:
            raise BackendUnavailable(f"the usb: backend needs python-libusb1: {INSTALL_HINT}") from exc
        _module = usb1
    return _module


def _path_of(device) -> str:
    ports = ".".join(str(port) for port in device.getPortNumberList())
    return f"{device.getBusNumber()}-{ports}"


def _map_error(exc: Exception, path: str, what: str) -> HalError:
    """The one place libusb errors become typed errors (keeping an errno)."""
    usb1 = _usb1()
    if isinstance(exc, usb1.USBErrorAccess):
        return PermissionDenied(f"USB device {path}: {what}: permission denied on its device node; add "
                                f"the udev rule\n{UDEV_RULE}\nto {UDEV_FILE}, run `sudo udevadm control "
                                "--reload && sudo udevadm trigger`, and replug the bridge (or run as root)",
                                errno=_errno.EACCES)
    if isinstance(exc, usb1.USBErrorBusy):
        return DeviceBusy(f"USB device {path}: {what}: interface 0 is claimed by another program (another "
                          "gpuhal or tinygrad process); close it", errno=_errno.EBUSY)
    if isinstance(exc, (usb1.USBErrorNoDevice, usb1.USBErrorNotFound)):
        return lost(path, what)
    if isinstance(exc, usb1.USBErrorTimeout):
        return HalError(f"USB device {path}: {what} timed out", errno=_errno.ETIMEDOUT)
    return HalError(f"USB device {path}: {what}: {exc}", errno=_errno.EIO)


class LibusbTransport(USBTransport):
    """A USBTransport over python-libusb1 (see the module docstring)."""

    name = "libusb"

    def __init__(self, context, device, handle, identity: DeviceIdentity) -> None:
        self._context = context
        self._device = device
        self._handle = handle
        self.identity = identity
        self._detached = False
        self._claimed = False

    def claim(self, interface: int = 0) -> None:
        path = self.identity.path
        try:
            if self._handle.kernelDriverActive(interface):
                # usb-storage / uas own a stock bridge (it is a disk); libusb asks the kernel to let go
                self._handle.detachKernelDriver(interface)
                self._detached = True
            self._handle.claimInterface(interface)
            self._claimed = True
        except _usb1().USBError as exc:
            raise _map_error(exc, path, "claiming interface 0") from exc

    def configuration_descriptor(self) -> bytes:
        try:
            return bytes(self._handle.controlRead(0x80, GET_DESCRIPTOR, DESCRIPTOR_CONFIG << 8, 0,
                                                  CONFIG_DESCRIPTOR_MAX, MS_PER_S))
        except _usb1().USBError as exc:
            raise _map_error(exc, self.identity.path, "reading the configuration descriptor") from exc

    def set_interface(self, interface: int, alt_setting: int) -> None:
        try:
            self._handle.setInterfaceAltSetting(interface, alt_setting)
        except _usb1().USBError as exc:
            raise _map_error(exc, self.identity.path, f"selecting alt setting {alt_setting}") from exc

    def clear_halt(self, endpoint: int) -> None:
        try:
            self._handle.clearHalt(endpoint)
        except _usb1().USBError as exc:
            raise _map_error(exc, self.identity.path, f"clearing the halt of {endpoint:#04x}") from exc

    def _submit(self, transfer: Transfer) -> None:
        usb1 = _usb1()
        if transfer.stream:
            raise HalError(f"USB device {self.identity.path}: python-libusb1 cannot submit bulk streams",
                           errno=_errno.EOPNOTSUPP)
        handle = self._handle.getTransfer()
        timeout_ms = max(1, int(transfer.timeout_s * MS_PER_S))
        payload = transfer.data if transfer.data is not None else transfer.length
        try:
            if transfer.kind == CONTROL:
                s = transfer.setup
                handle.setControl(s.request_type, s.request, s.value, s.index, payload, timeout=timeout_ms)
            else:
                handle.setBulk(transfer.endpoint, payload, timeout=timeout_ms)
            handle.submit()
        except usb1.USBError as exc:
            raise _map_error(exc, self.identity.path, transfer.what()) from exc
        transfer.backend_handle = handle

    def _cancel(self, transfer: Transfer) -> None:
        if transfer.backend_handle is not None and transfer.backend_handle.isSubmitted():
            transfer.backend_handle.cancel()

    def _reap(self, transfers: list[Transfer], timeout_s: float | None) -> None:
        usb1 = _usb1()
        import time

        limit = max(t.timeout_s for t in transfers) if transfers else 0.0
        if timeout_s is not None:
            limit = min(limit, timeout_s)
        deadline = time.monotonic() + limit + EVENT_SLICE_S
        while any(not t.done for t in transfers):
            for transfer in transfers:
                if not transfer.done:
                    self._collect(transfer, usb1)
            if all(t.done for t in transfers):
                return
            if time.monotonic() > deadline:
                for transfer in transfers:
                    if not transfer.done:
                        transfer.backend_handle.cancel()
                        transfer.fail(timed_out(self.identity.path, transfer))
                return
            try:
                self._context.handleEventsTimeout(EVENT_SLICE_S)
            except usb1.USBError as exc:
                raise _map_error(exc, self.identity.path, "waiting for transfers") from exc

    def _collect(self, transfer: Transfer, usb1) -> None:
        handle = transfer.backend_handle
        if handle.isSubmitted():
            return
        status = handle.getStatus()
        path = self.identity.path
        if status == usb1.TRANSFER_COMPLETED:
            actual = handle.getActualLength()
            data = bytes(handle.getBuffer()[:actual]) if transfer.is_in else b""
            transfer.complete(data, actual)
        elif status == usb1.TRANSFER_STALL:
            transfer.fail(stalled(path, transfer))
        elif status == usb1.TRANSFER_TIMED_OUT:
            transfer.fail(timed_out(path, transfer))
        elif status == usb1.TRANSFER_NO_DEVICE:
            transfer.fail(lost(path, transfer.what()))
        elif status == usb1.TRANSFER_OVERFLOW:
            transfer.fail(ShortTransfer(f"USB device {path}: {transfer.what()} overflowed",
                                        endpoint=transfer.endpoint, expected=transfer.length,
                                        actual=handle.getActualLength()))
        else:
            transfer.fail(HalError(f"USB device {path}: {transfer.what()} failed (libusb status {status})",
                                   errno=_errno.EIO))

    def close(self) -> None:
        try:
            if self._claimed:
                self._handle.releaseInterface(0)
            if self._detached:
                self._handle.attachKernelDriver(0)
        except _usb1().USBError as exc:
            log.warning("USB device %s: handing interface 0 back failed: %s", self.identity.path, exc)
        finally:
            self._handle.close()


class LibusbHost(USBHost):
    """The host's USB buses through one libusb context."""

    _shared: "LibusbHost | None" = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self._context = _usb1().USBContext()

    @classmethod
    def shared(cls) -> "LibusbHost":
        with cls._lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def _devices(self):
        return self._context.getDeviceList(skip_on_error=True)

    def list(self) -> list[tuple[str, DeviceIdentity]]:
        found = []
        for device in self._devices():
            found.append((_path_of(device), DeviceIdentity(device.getVendorID(), device.getProductID(),
                                                           _path_of(device))))
        return sorted(found)

    def open(self, path: str) -> LibusbTransport:
        for device in self._devices():
            if _path_of(device) != path:
                continue
            identity = DeviceIdentity(device.getVendorID(), device.getProductID(), path)
            try:
                handle = device.open()
            except _usb1().USBError as exc:
                raise _map_error(exc, path, "opening the device") from exc
            transport = LibusbTransport(self._context, device, handle, identity)
            try:
                transport.claim(0)
            except BaseException:
                transport.close()
                raise
            return transport
        raise DeviceNotFound(f"no USB device at {path}; `python -m tools.lsgpu` lists usb: devices "
                             "(is the bridge powered and plugged into a USB 3 port?)")
