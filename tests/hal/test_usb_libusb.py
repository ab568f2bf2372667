"""hal.usb.libusb without hardware: the missing package is BackendUnavailable with the pip command,
and libusb's failures map to typed errors (EACCES names the udev rule, a claimed interface is busy,
an absent port is not found) through a stand-in for the python-libusb1 module."""
from __future__ import annotations

import sys
import types

import pytest

from hal.errors import BackendUnavailable, DeviceBusy, DeviceLost, DeviceNotFound, PermissionDenied
from hal.usb import libusb


class _Error(Exception):
    pass


def _fake_usb1(open_error=None, claim_error=None, kernel_driver=True):
    module = types.ModuleType("usb1")
    module.USBError = _Error
    for name in ("USBErrorAccess", "USBErrorBusy", "USBErrorNoDevice", "USBErrorNotFound",
                 "USBErrorTimeout", "USBErrorPipe"):
        setattr(module, name, type(name, (_Error,), {}))
    calls = []

    class Handle:
        def kernelDriverActive(self, interface):
            return kernel_driver

        def detachKernelDriver(self, interface):
            calls.append("detach")

        def attachKernelDriver(self, interface):
            calls.append("attach")

        def claimInterface(self, interface):
            if claim_error is not None:
                raise getattr(module, claim_error)()
            calls.append("claim")

        def releaseInterface(self, interface):
            calls.append("release")

        def close(self):
            calls.append("close")

    class Device:
        def getBusNumber(self):
            return 2

        def getPortNumberList(self):
            return [1, 4]

        def getVendorID(self):
            return 0x174C

        def getProductID(self):
            return 0x2464

        def open(self):
            if open_error is not None:
                raise getattr(module, open_error)()
            return Handle()

    class Context:
        def getDeviceList(self, skip_on_error=False):
            return [Device()]

    module.USBContext = Context
    return module, calls


@pytest.fixture
def fake(monkeypatch):
    def install(**options):
        module, calls = _fake_usb1(**options)
        monkeypatch.setitem(sys.modules, "usb1", module)
        monkeypatch.setattr(libusb, "_module", None)
        return calls
    return install


def test_missing_package_is_unavailable_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "usb1", None)  # import fails
    monkeypatch.setattr(libusb, "_module", None)
    with pytest.raises(BackendUnavailable, match=r"pip install 'gpuhal\[usb\]'"):
        libusb.LibusbHost()


def test_open_detaches_the_storage_driver_claims_and_hands_back_on_close(fake):
    calls = fake()
    host = libusb.LibusbHost()
    assert host.list()[0][0] == "2-1.4"
    transport = host.open("2-1.4")
    assert calls == ["detach", "claim"]
    assert (transport.identity.vendor_id, transport.identity.path) == (0x174C, "2-1.4")
    transport.close()
    assert calls[-3:] == ["release", "attach", "close"]


def test_permission_denied_names_the_udev_rule(fake):
    fake(open_error="USBErrorAccess")
    with pytest.raises(PermissionDenied) as info:
        libusb.LibusbHost().open("2-1.4")
    assert 'ATTR{idVendor}=="174c"' in str(info.value) and "udevadm" in str(info.value)
    assert info.value.errno == 13


def test_claimed_interface_is_busy_and_the_handle_is_closed(fake):
    calls = fake(claim_error="USBErrorBusy")
    with pytest.raises(DeviceBusy, match="claimed by another program"):
        libusb.LibusbHost().open("2-1.4")
    assert calls[-1] == "close"


def test_absent_or_vanished_devices(fake):
    fake()
    with pytest.raises(DeviceNotFound, match="no USB device at 3-1"):
        libusb.LibusbHost().open("3-1")
    fake(open_error="USBErrorNoDevice")
    with pytest.raises(DeviceLost):
        libusb.LibusbHost().open("2-1.4")
