"""gpuhal's hardware-abstraction layer: the OS seam, Regions, PCIDevice and its Linux backends.

Public entry points:
    hal.open(device_string, os=None, **options) -> PCIDevice    (see hal.devstring for the syntax)
    hal.open_observer(device_string, os=None) -> PCIDevice       (read-only look; no lock, no unbind)
    hal.list_devices(os=None, all_classes=False) -> list[DeviceInfo]
`os` defaults to `hal.os.host()`, the real machine; tests pass a mock machine's seam.
Environment: GPUHAL_LOCK_DIR (ownership lock directory, default /run/lock), GPUHAL_DEVICE (the
device string used when none is given) and GPUHAL_TRACE (record what crosses the seam: hal.trace).
"""
from __future__ import annotations

from hal.backend import DMABuffer, PCIBackend
from hal.config import BarInfo, Capability, LinkStatus
from hal.discovery import DeviceInfo, list_devices, open_device, open_observer
from hal.errors import (BackendUnavailable, BadBinary, DeviceBusy, DeviceLost, DeviceNotFound, DeviceTimeout,
                        FirmwareError, HalError, InvalidArgument, PermissionDenied, UnsupportedOperation)
from hal.pcidev import PCIDevice
from hal.region import CallbackRegion, MemoryRegion, Region
from hal import trace

open = open_device

__all__ = [
    "open", "open_device", "open_observer", "list_devices", "DeviceInfo", "PCIDevice", "PCIBackend",
    "DMABuffer", "trace",
    "BarInfo", "Capability", "LinkStatus", "Region", "MemoryRegion", "CallbackRegion",
    "HalError", "DeviceNotFound", "DeviceBusy", "PermissionDenied", "DeviceLost", "DeviceTimeout",
    "BackendUnavailable", "UnsupportedOperation", "InvalidArgument", "FirmwareError", "BadBinary",
]
