"""`python -m tools.bind DEVICE --vfio | --kernel [--json]`: move a PCI function to vfio-pci and back.

Usage: python -m tools.bind DEVICE --vfio | --kernel [--json] [--mock].

--vfio binds DEVICE to vfio-pci, and with it every member of its IOMMU group that is bound to a driver
using the kernel's DMA API: while one is, VFIO cannot use the group (drivers/vfio/group.c,
drivers/iommu/iommu.c). Members without a driver or on a driver that manages its own DMA (pcieport,
pci-stub, vfio-pci) stay where they are. The driver each moved function had is written to
`<lock dir>/gpuhal-<bdf>.bind`.

--kernel hands DEVICE, and the members of its group that an earlier --vfio moved, back: each to the
driver recorded then, or, without a record, to whichever driver the kernel probes once
driver_override is cleared (what `drivers_probe` does).

A function gpuhal has open is refused (the ownership lock names the process), and so is --vfio while
gpuhal has a driverless member of the group open, and a function another program holds through
VFIO. --json prints one JSON object saying what moved where. On a real machine this needs root;
--mock (or GPUHAL_MOCK=1) works on the mock machine.
"""
from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
from dataclasses import dataclass, field

from autogen.linux import pci_regs

from hal.errors import BackendUnavailable, HalError, InvalidArgument, from_oserror
from hal.lock import OwnershipLock
from hal.os import O_CLOEXEC, O_CREAT, O_EXCL, O_RDWR, OS, host
from hal.pci.sysfs import (HOST_BRIDGE_REASON, PCI_DRIVERS, PCI_DRIVERS_PROBE, VFIO_PCI_DRIVER, SysfsPCI,
                           normalize_bdf)
from hal.vfio.backend import members_to_move

log = logging.getLogger(__name__)

# include/linux/module.h MODULE_NAME_LEN (64 - sizeof(unsigned long)): a driver name fits this record
STATE_RECORD_BYTES = 64
STATE_FILE_MODE = 0o644
NO_DRIVER = "-"  # the record of a function that had no driver
OPEN_ATTEMPTS = 2  # open-or-create, then once more when another process created the file in between


@dataclass
class Outcome:
    """What one run did: functions moved (bdf, from, to) and members left alone (bdf, driver, why)."""

    device: str
    action: str
    iommu_group: int | None
    moved: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    stayed: list[tuple[str, str | None, str]] = field(default_factory=list)

    def as_json(self) -> dict:
        return {
            "device": self.device,
            "action": self.action,
            "iommu_group": self.iommu_group,
            "moved": [{"bdf": bdf, "from": old, "to": new} for bdf, old, new in self.moved],
            "stayed": [{"bdf": bdf, "driver": driver, "why": why} for bdf, driver, why in self.stayed],
        }

    def as_text(self) -> str:
        lines = []
        for bdf, old, new in self.moved:
            lines.append(f"{bdf}: {old or 'no driver'} -> {new or 'no driver'}")
        for bdf, driver, why in self.stayed:
            lines.append(f"{bdf}: stays on {driver or 'no driver'} ({why})")
        if not self.moved and self.action == "kernel":
            lines.append(f"{self.device}: not on {VFIO_PCI_DRIVER}, nothing to hand back")
        elif not self.moved:
            lines.append(f"{self.device}: on {VFIO_PCI_DRIVER} already, with nothing in its group to move")
        return "\n".join(lines)


class BindState:
    """The driver each function had before --vfio, one small record file per function in the lock
    directory (opened like the ownership lock: no O_CREAT on an existing file, see hal.lock)."""

    def __init__(self, os: OS, lock_dir: str | None = None) -> None:
        self.os = os
        self.lock_dir = (lock_dir or os.default_lock_dir()).rstrip("/")

    def path(self, bdf: str) -> str:
        return f"{self.lock_dir}/gpuhal-{bdf}.bind"

    def _open(self, bdf: str, create: bool) -> int | None:
        path = self.path(bdf)
        for attempt in range(OPEN_ATTEMPTS):
            try:
                return self.os.open(path, O_RDWR | O_CLOEXEC)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise from_oserror(exc, f"opening {path}") from exc
            if not create:
                return None
            try:
                return self.os.open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, STATE_FILE_MODE)
            except OSError as exc:
                if exc.errno != errno.EEXIST or attempt == OPEN_ATTEMPTS - 1:
                    raise from_oserror(exc, f"creating {path}") from exc
        return None

    def _write(self, bdf: str, text: str) -> None:
        fd = self._open(bdf, create=True)
        try:
            self.os.pwrite(fd, text.ljust(STATE_RECORD_BYTES).encode(), 0)
        except OSError as exc:
            raise from_oserror(exc, f"writing {self.path(bdf)}") from exc
        finally:
            self.os.close(fd)

    def remember(self, bdf: str, driver: str | None) -> None:
        self._write(bdf, f"{driver or NO_DRIVER}\n")

    def forget(self, bdf: str) -> None:
        if self._open_existing(bdf):
            self._write(bdf, "")

    def _open_existing(self, bdf: str) -> bool:
        fd = self._open(bdf, create=False)
        if fd is None:
            return False
        self.os.close(fd)
        return True

    def recalled(self, bdf: str) -> tuple[bool, str | None]:
        """(True, driver or None) when a record exists, (False, None) otherwise."""
        fd = self._open(bdf, create=False)
        if fd is None:
            return False, None
        try:
            text = self.os.pread(fd, STATE_RECORD_BYTES, 0).decode(errors="replace").strip()
        except OSError as exc:
            raise from_oserror(exc, f"reading {self.path(bdf)}") from exc
        finally:
            self.os.close(fd)
        if not text:
            return False, None
        return True, None if text == NO_DRIVER else text


def _lock_all(seam: OS, bdfs: list[str], lock_dir: str | None) -> list[OwnershipLock]:
    """Take the ownership lock of each function (DeviceBusy names a gpuhal process holding one)."""
    locks: list[OwnershipLock] = []
    try:
        for bdf in bdfs:
            lock = OwnershipLock(seam, bdf, lock_dir)
            lock.acquire()
            locks.append(lock)
    except BaseException:
        _release(locks)
        raise
    return locks


def _release(locks: list[OwnershipLock]) -> None:
    for lock in reversed(locks):
        lock.release()


def _check_bindable(sysfs: SysfsPCI, bdf: str) -> None:
    if sysfs.is_host_bridge(bdf):
        raise InvalidArgument(f"{bdf} is {HOST_BRIDGE_REASON.removeprefix('not openable: ')}")
    if sysfs.header_type(bdf) != pci_regs.PCI_HEADER_TYPE_NORMAL:
        raise InvalidArgument(f"{bdf} is a bridge; {VFIO_PCI_DRIVER} drives only type 0 functions "
                              "(drivers/vfio/pci/vfio_pci_core.c)")
    if not sysfs.os.exists(f"{PCI_DRIVERS}/{VFIO_PCI_DRIVER}"):
        raise BackendUnavailable(f"the {VFIO_PCI_DRIVER} driver is not loaded: `sudo modprobe vfio-pci`")


def to_vfio(seam: OS, bdf: str, lock_dir: str | None = None) -> Outcome:
    """Bind `bdf` and the members of its group that must move to vfio-pci (see the module docstring)."""
    sysfs = SysfsPCI(seam)
    bdf = normalize_bdf(bdf)
    sysfs.require(bdf)
    _check_bindable(sysfs, bdf)
    group = sysfs.iommu_group(bdf)
    outcome = Outcome(bdf, "vfio", group)
    wanted = [] if sysfs.driver(bdf) == VFIO_PCI_DRIVER else [bdf]
    if group is not None:
        wanted += [member for member, _ in members_to_move(sysfs, bdf, group)]
        for member in sysfs.iommu_group_devices(group):
            if member != bdf and member not in wanted:
                driver = sysfs.driver(member)
                why = "no driver" if driver is None else "its driver manages its own DMA"
                outcome.stayed.append((member, driver, why))
    for member in wanted:
        _check_bindable(sysfs, member)
    state = BindState(seam, lock_dir)
    # a member without a driver may be in gpuhal's hands through pci:, and VFIO taking the group
    # would cut its DMA off: its lock must be free too
    unbound = [member for member, driver, _ in outcome.stayed if driver is None]
    locks = _lock_all(seam, wanted + unbound, lock_dir)
    try:
        for member in wanted:
            original = sysfs.driver(member)
            try:
                sysfs.bind_to(member, VFIO_PCI_DRIVER)
            except HalError:
                _undo(sysfs, outcome)
                raise
            state.remember(member, original)
            outcome.moved.append((member, original, VFIO_PCI_DRIVER))
    finally:
        _release(locks)
    if outcome.iommu_group is None:
        # no IOMMU: in VFIO's no-IOMMU mode vfio-pci's bind made the device a group of its own
        # (drivers/vfio/group.c vfio_noiommu_group_alloc)
        outcome.iommu_group = sysfs.iommu_group(bdf)
    return outcome


def _undo(sysfs: SysfsPCI, outcome: Outcome) -> None:
    """Put back what a failed --vfio moved already; failures are logged, the first error wins."""
    for member, original, _ in reversed(outcome.moved):
        try:
            sysfs.rebind(member, original)
        except HalError as exc:
            log.warning("could not hand %s back to %s: %s", member, original or "no driver", exc)
    outcome.moved.clear()


def to_kernel(seam: OS, bdf: str, lock_dir: str | None = None) -> Outcome:
    """Hand `bdf` and the members an earlier --vfio moved back to their kernel drivers."""
    sysfs = SysfsPCI(seam)
    bdf = normalize_bdf(bdf)
    sysfs.require(bdf)
    group = sysfs.iommu_group(bdf)
    outcome = Outcome(bdf, "kernel", group)
    state = BindState(seam, lock_dir)
    members = [bdf]
    if group is not None:
        members += [member for member in sysfs.iommu_group_devices(group) if member != bdf]
    wanted = []
    for member in members:
        driver = sysfs.driver(member)
        recorded, _ = state.recalled(member)
        if driver == VFIO_PCI_DRIVER and (member == bdf or recorded):
            wanted.append(member)
        elif member != bdf:
            why = "not moved there by tools.bind" if driver == VFIO_PCI_DRIVER else "not on vfio-pci"
            outcome.stayed.append((member, driver, why))
    locks = _lock_all(seam, wanted, lock_dir)
    try:
        for member in wanted:
            recorded, driver = state.recalled(member)
            if recorded:
                sysfs.rebind(member, driver)
            else:
                _reprobe(sysfs, member)
            state.forget(member)
            outcome.moved.append((member, VFIO_PCI_DRIVER, sysfs.driver(member)))
    finally:
        _release(locks)
    return outcome


def _reprobe(sysfs: SysfsPCI, bdf: str) -> None:
    """What the kernel does for a device nobody recorded: clear the override, unbind, probe."""
    sysfs.rebind(bdf, None)
    sysfs.write_attribute(PCI_DRIVERS_PROBE, bdf, f"probing {bdf} for its kernel driver")


def _mock_os() -> OS:
    from mockgpu import Machine

    return Machine.default().os


def main(argv: list[str] | None = None, seam: OS | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bind", description=__doc__.splitlines()[0])
    parser.add_argument("device", metavar="DEVICE", help="the PCI function, e.g. 0000:03:00.0 or 03:00.0")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--vfio", action="store_true",
                       help="bind it, and the members of its IOMMU group that must move, to vfio-pci")
    where.add_argument("--kernel", action="store_true",
                       help="hand it and the members --vfio moved back to their kernel drivers")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON object: {"device", "action", "iommu_group", "moved": '
                             '[{"bdf", "from", "to"}], "stayed": [{"bdf", "driver", "why"}]}')
    parser.add_argument("--mock", action="store_true", default=os.environ.get("GPUHAL_MOCK") == "1",
                        help="act on the mock machine (also GPUHAL_MOCK=1)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is done")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if seam is None:
        seam = _mock_os() if args.mock else host()
    device = args.device.removeprefix("vfio:").removeprefix("pci:")
    try:
        outcome = to_vfio(seam, device) if args.vfio else to_kernel(seam, device)
    except HalError as exc:
        print(f"bind: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(outcome.as_json(), indent=2) if args.json else outcome.as_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
