"""Typed errors for everything gpuhal does; the one place OS error codes become our errors.

Every error keeps the original errno (when there is one) and says what to do next.
"""
from __future__ import annotations

import errno as _errno


class HalError(Exception):
    """Base of every gpuhal error. `errno` is the OS error code behind it, if any."""

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class DeviceNotFound(HalError):
    """No device matches the request (unknown device string, missing BDF, no such file)."""


class DeviceBusy(HalError):
    """Another process owns the device. `holder_pid` names it when known."""

    def __init__(self, message: str, *, holder_pid: int | None = None, errno: int | None = None) -> None:
        super().__init__(message, errno=errno)
        self.holder_pid = holder_pid


class PermissionDenied(HalError):
    """The OS refused access; the message says exactly what to run to get it."""


class DeviceLost(HalError):
    """The device stopped answering: config space or MMIO read all ones."""


class DeviceTimeout(HalError):
    """A bounded wait ran out; the message says what was awaited and what was last seen."""


class BackendUnavailable(HalError):
    """A backend cannot work on this machine (wrong OS, module not loaded, no IOMMU); says why."""


class UnsupportedOperation(HalError):
    """The device or backend does not offer this operation (no FLR, region not mmap-able...)."""


class InvalidArgument(HalError):
    """A caller passed something the hardware or OS would reject (bad offset, size, alignment)."""


class FirmwareError(HalError):
    """Firmware is missing, truncated, corrupt or was rejected by the device."""


class BadBinary(HalError):
    """A program binary or table is malformed."""


class OutOfMemory(HalError):
    """An allocator cannot satisfy a request: `requested` bytes (at `alignment`) asked for,
    `free` bytes free in all, `largest_free` the largest free block."""

    def __init__(self, message: str, *, requested: int, alignment: int, free: int,
                 largest_free: int, errno: int | None = _errno.ENOMEM) -> None:
        super().__init__(message, errno=errno)
        self.requested = requested
        self.alignment = alignment
        self.free = free
        self.largest_free = largest_free


def from_oserror(exc: OSError, what: str) -> HalError:
    """Map an OSError raised while doing `what` into the typed hierarchy, keeping errno."""
    code = exc.errno
    detail = f"{what}: {exc.strerror or exc}"
    if code in (_errno.EACCES, _errno.EPERM):
        return PermissionDenied(f"{detail} (run as root, or grant access to the device files)", errno=code)
    if code in (_errno.ENOENT, _errno.ENODEV, _errno.ENXIO):
        return DeviceNotFound(detail, errno=code)
    if code == _errno.EBUSY:
        return DeviceBusy(detail, errno=code)
    if code == _errno.ETIMEDOUT:
        return DeviceTimeout(detail, errno=code)
    if code in (_errno.EINVAL, _errno.EFAULT, _errno.ERANGE):
        return InvalidArgument(detail, errno=code)
    if code in (_errno.ENOTTY, _errno.EOPNOTSUPP, _errno.ENOSYS):
        return UnsupportedOperation(detail, errno=code)
    return HalError(detail, errno=code)
