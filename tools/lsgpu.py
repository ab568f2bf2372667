"""`python -m tools.lsgpu [--mock] [--json] [--all]`: list the PCI GPUs gpuhal can see and how to open them.

Without --mock it reads this machine's PCI tree; with --mock (or GPUHAL_MOCK=1) it lists the devices
of the default mock machine (on macOS: the Thunderbolt GPUs IOKit sees, opened as `tinygpu:`). The
table shows each device string, its IDs, class, bound kernel driver and
the bridges on its path, then for each backend "ok" or why it cannot open the device, then the
command that acts on it: `python -m tools.bind` moves a device (and the members of its IOMMU group
that must move with it) to vfio-pci, or hands them back to their kernel drivers. Listing changes
nothing: it opens no file for writing.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import hal
from hal.discovery import list_usb_devices
from hal.errors import HalError
from hal.pci.sysfs import VFIO_PCI_DRIVER

# PCI-SIG assigned vendor IDs (as listed in the pci.ids database)
VENDOR_NAMES = {0x1002: "AMD", 0x10DE: "NVIDIA", 0x5143: "Qualcomm", 0x1B21: "ASMedia", 0x1234: "QEMU", 0x8086: "Intel"}


def _mock_os():
    """The default mock machine, with a Navi31 behind an ASM24xx USB bridge at port 1-2 too."""
    from mockgpu import Machine
    from mockgpu.usb import navi31_behind_bridge

    machine = Machine.default()
    navi31_behind_bridge(machine)
    return machine.os


def hints(info) -> list[str]:
    """Commands that act on the backend verdicts of one device."""
    found = []
    if info.vfio_moves:
        moved = ", ".join(info.vfio_moves)
        found.append(f"python -m tools.bind {info.bdf} --vfio   (moves {moved} to {VFIO_PCI_DRIVER}, "
                     "so vfio can open it)")
    if info.driver == VFIO_PCI_DRIVER:
        found.append(f"python -m tools.bind {info.bdf} --kernel   (hands it and its group back to their "
                     "kernel drivers)")
    return found


def _as_json(info) -> dict:
    return {
        "device": info.device,
        "vendor_id": info.vendor_id,
        "device_id": info.device_id,
        "vendor": VENDOR_NAMES.get(info.vendor_id, ""),
        "class_code": info.class_code,
        "bdf": info.bdf,
        "driver": info.driver,
        "backends": dict(info.backends),
        "path": list(info.path),
        "iommu_group": info.iommu_group,
        "vfio_moves": list(info.vfio_moves),
        "hints": hints(info),
    }


def _table(rows: list[dict]) -> str:
    """One line per device, then one indented line per backend saying "ok" or why not."""
    header = ["DEVICE", "VENDOR:DEVICE", "CLASS", "DRIVER", "PATH"]
    lines = [header]
    for row in rows:
        ids = f"{row['vendor_id']:04x}:{row['device_id']:04x}"
        if row["vendor"]:
            ids += f" ({row['vendor']})"
        path = " > ".join(row["path"]) or "-"
        lines.append([row["device"], ids, f"{row['class_code']:06x}", row["driver"] or "-", path])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(width) for cell, width in zip(header, widths)).rstrip()]
    for row, line in zip(rows, lines[1:]):
        out.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
        name_width = max(len(name) for name in row["backends"]) if row["backends"] else 0
        for name, state in row["backends"].items():
            out.append(f"    {name + ':':<{name_width + 1}} {state}")
        for hint in row["hints"]:
            out.append(f"    try: {hint}")
    return "\n".join(out)


def _nothing_found(mock: bool, all_classes: bool) -> str:
    where = "the mock machine" if mock else "/sys/bus/pci/devices"
    what = "PCI functions" if all_classes else "PCI GPUs"
    suggestions = []
    if not all_classes:
        suggestions.append("--all for every PCI function")
    if not mock:
        suggestions.append("--mock for the mock machine")
    advice = f" Try {', or '.join(suggestions)}." if suggestions else ""
    return f"No {what} found in {where}.{advice}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.lsgpu", description=__doc__.splitlines()[0])
    parser.add_argument("--mock", action="store_true", default=os.environ.get("GPUHAL_MOCK") == "1",
                        help="list the mock machine's devices (also GPUHAL_MOCK=1)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of objects")
    parser.add_argument("--all", action="store_true", help="every PCI function, not only display-class ones")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what discovery does")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    seam = _mock_os() if args.mock else None
    try:
        if sys.platform == "darwin" and not args.mock:
            from hal.macos import tinygpu

            infos = tinygpu.list_devices()  # no sysfs on macOS: IOKit's Thunderbolt GPUs
        else:
            infos = hal.list_devices(os=seam, all_classes=args.all)
        infos += list_usb_devices(os=seam)
    except HalError as exc:
        print(f"lsgpu: {exc}", file=sys.stderr)
        return 1
    rows = [_as_json(info) for info in infos]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(_nothing_found(args.mock, args.all))
        return 0
    print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
