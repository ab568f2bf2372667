"""Device strings: the one syntax that names a device to open.

    pci:0000:03:00.0     the sysfs backend (hal.pci)
    vfio:0000:03:00.0    the VFIO backend (hal.vfio)
    0000:03:00.0         automatic: VFIO first, then sysfs; if all fail, every backend's reason
    03:00.0              a BDF without domain means domain 0000
    remote:HOST:PORT     a device a `tools.gpu_server` exports over TCP (hal.remote)
    remote:unix:PATH     the same over a Unix socket (DMA buffers shared by file descriptor)
    tinygpu:             the GPU the TinyGPU app serves on macOS (hal.macos); tinygpu:PATH names its socket
    usb:1-2              the GPU behind the ASM24xx USB bridge at USB port BUS-PORT[.PORT...] (hal.usb)

An empty string or None means $GPUHAL_DEVICE. Other prefixes (mock:, am:) belong to the layers
that own them; hal rejects them with the list of what it understands.
"""
from __future__ import annotations

import os as _os
import re
from dataclasses import dataclass

from hal.errors import DeviceNotFound, InvalidArgument
from hal.pci.sysfs import normalize_bdf

DEVICE_ENV = "GPUHAL_DEVICE"
BACKEND_NAMES = ("vfio", "pci")  # also the order automatic selection tries them in
SOCKET_BACKENDS = ("remote", "tinygpu")  # the rest of the string is where to connect, not a BDF
USB_BACKEND = "usb"  # the rest of the string is a USB port path, as Linux names it in sysfs
USB_PATH = re.compile(r"^[0-9]+-[0-9]+(\.[0-9]+)*$")
SYNTAX_HELP = ("write pci:<domain:bus:dev.fn>, vfio:<domain:bus:dev.fn> or a bare BDF such as "
               "0000:03:00.0; `python -m tools.lsgpu` lists the devices")


@dataclass(frozen=True)
class DeviceString:
    """A parsed device string: `backend` is None for automatic selection."""

    backend: str | None
    bdf: str

    def __str__(self) -> str:
        return f"{self.backend}:{self.bdf}" if self.backend else self.bdf

    @property
    def candidates(self) -> tuple[str, ...]:
        return (self.backend,) if self.backend else BACKEND_NAMES


def parse(text: str | None) -> DeviceString:
    """Parse a device string (see the module docstring); InvalidArgument/DeviceNotFound if malformed."""
    if not text:
        text = _os.environ.get(DEVICE_ENV, "")
        if not text:
            raise DeviceNotFound(f"no device given and ${DEVICE_ENV} is unset; {SYNTAX_HELP}")
    text = text.strip()
    prefix, separator, rest = text.partition(":")
    if separator and prefix in BACKEND_NAMES:
        return DeviceString(prefix, _bdf(rest, text))
    if separator and prefix in SOCKET_BACKENDS:
        return DeviceString(prefix, rest)
    if separator and prefix == USB_BACKEND:
        if not USB_PATH.match(rest):
            raise DeviceNotFound(f"{text!r}: write usb:BUS-PORT[.PORT...], e.g. usb:1-2 (see "
                                 "/sys/bus/usb/devices, or `python -m tools.lsgpu`)")
        return DeviceString(prefix, rest)
    if separator and prefix.isalpha() and not _looks_like_bdf(text):
        raise DeviceNotFound(f"unknown device string {text!r}: hal opens only {', '.join(BACKEND_NAMES)} "
                             f"devices; {SYNTAX_HELP}")
    return DeviceString(None, _bdf(text, text))


def _looks_like_bdf(text: str) -> bool:
    try:
        normalize_bdf(text)
    except InvalidArgument:
        return False
    return True


def _bdf(candidate: str, whole: str) -> str:
    try:
        return normalize_bdf(candidate)
    except InvalidArgument:
        raise DeviceNotFound(f"unknown device string {whole!r}: {SYNTAX_HELP}") from None
