"""Discovery of PCI GPUs on macOS from IOKit's registry, through `ioreg -a -r -c IOPCIDevice`.

`ioreg -a` prints the registry as an XML property list (ioreg(8): "-a Archive the output in XML");
with `-r -c IOPCIDevice` the root is an array with one dictionary per IOPCIDevice. The properties
read here are the ones IOPCIFamily publishes on each IOPCIDevice:
- "vendor-id", "device-id", "class-code": data, 4 bytes little-endian (the config space values;
  tinygrad/runtime/support/system.py pci_scan_bus reads "vendor-id"/"device-id" the same way);
- "IOPCITunnelled": true on a device behind a PCIe tunnel (Thunderbolt / USB4);
- "pcidebug": "bus:device:function" as IOPCIFamily prints it;
- "IORegistryEntryName" / "IOName": the device's name in the registry.
`parse` takes that output, `thunderbolt_gpus` filters the display-class devices behind a tunnel.
"""
from __future__ import annotations

import plistlib
import subprocess
import sys
from dataclasses import dataclass

from hal.errors import BackendUnavailable, BadBinary

IOREG_COMMAND = ("ioreg", "-a", "-r", "-c", "IOPCIDevice")
IOREG_TIMEOUT_S = 10.0
# include/linux/pci_ids.h PCI_BASE_CLASS_DISPLAY; the class code is base:sub:interface, 24 bits
PCI_BASE_CLASS_DISPLAY = 0x03
CLASS_BASE_SHIFT = 16
# PCI Local Bus r3.0 sec 6.2.1: vendor and device IDs are 16 bits, the class code 24 bits
ID_MASK = 0xFFFF
CLASS_CODE_MASK = 0xFFFFFF


@dataclass(frozen=True)
class IOPCIDevice:
    """One IOPCIDevice of the registry."""

    name: str
    vendor_id: int
    device_id: int
    class_code: int
    location: str
    tunnelled: bool

    @property
    def is_display(self) -> bool:
        return self.class_code >> CLASS_BASE_SHIFT == PCI_BASE_CLASS_DISPLAY


def _number(value) -> int:
    """A property that is data (little-endian bytes) or an integer."""
    if isinstance(value, (bytes, bytearray)):
        return int.from_bytes(value, "little")
    if isinstance(value, int):
        return value
    raise BadBinary(f"expected data or an integer, found {type(value).__name__}")


def _walk(entries):
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        yield entry
        yield from _walk(entry.get("IORegistryEntryChildren", []))


def parse(xml: bytes) -> list[IOPCIDevice]:
    """The IOPCIDevices in `ioreg -a -r -c IOPCIDevice` output (children included, in order)."""
    try:
        root = plistlib.loads(xml)
    except (plistlib.InvalidFileException, ValueError) as exc:
        raise BadBinary(f"ioreg output is not an XML property list: {exc}") from exc
    if isinstance(root, dict):
        root = [root]
    if not isinstance(root, list):
        raise BadBinary("ioreg output: expected an array of registry entries")
    found = []
    for entry in _walk(root):
        if entry.get("IOObjectClass", "IOPCIDevice") != "IOPCIDevice" or "vendor-id" not in entry:
            continue
        found.append(IOPCIDevice(
            name=str(entry.get("IORegistryEntryName") or entry.get("IOName") or "?"),
            vendor_id=_number(entry["vendor-id"]) & ID_MASK,
            device_id=_number(entry.get("device-id", b"")) & ID_MASK,
            class_code=_number(entry.get("class-code", b"")) & CLASS_CODE_MASK,
            location=str(entry.get("pcidebug", "")),
            tunnelled=bool(entry.get("IOPCITunnelled", False)),
        ))
    return found


def thunderbolt_gpus(devices: list[IOPCIDevice]) -> list[IOPCIDevice]:
    """Display-class devices behind a Thunderbolt/USB4 tunnel."""
    return [device for device in devices if device.is_display and device.tunnelled]


def list_pci_devices(run=subprocess.run, platform: str = sys.platform) -> list[IOPCIDevice]:
    """Run ioreg (macOS only) and parse it; BackendUnavailable elsewhere or when it fails."""
    if platform != "darwin":
        raise BackendUnavailable(f"IOKit discovery needs macOS; this is {platform}")
    try:
        result = run(IOREG_COMMAND, capture_output=True, timeout=IOREG_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendUnavailable(f"running {' '.join(IOREG_COMMAND)} failed: {exc}") from exc
    if result.returncode != 0:
        raise BackendUnavailable(f"{' '.join(IOREG_COMMAND)} exited with {result.returncode}: "
                                 f"{result.stderr.decode(errors='replace').strip()}")
    return parse(result.stdout)
