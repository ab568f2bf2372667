"""The Linux sysfs PCI tree as seen through the OS seam: attributes, resources, topology, driver binding.

Shared by the sysfs and VFIO backends and by discovery. Paths and file formats are the kernel's
(Documentation/ABI/testing/sysfs-bus-pci, Documentation/PCI/sysfs-pci.rst).
"""
from __future__ import annotations

import errno
import logging
import re
from dataclasses import dataclass

from hal.errors import DeviceBusy, DeviceNotFound, HalError, InvalidArgument, PermissionDenied, from_oserror
from hal.os import O_CLOEXEC, O_RDWR, OS

log = logging.getLogger(__name__)

PCI_DEVICES = "/sys/bus/pci/devices"
PCI_DRIVERS = "/sys/bus/pci/drivers"
PCI_DRIVERS_PROBE = "/sys/bus/pci/drivers_probe"
PCI_RESCAN = "/sys/bus/pci/rescan"
IOMMU_GROUPS = "/sys/kernel/iommu_groups"
# Documentation/ABI/testing/sysfs-kernel-iommu_groups `type`: the one domain type in which the device's
# DMA addresses are physical addresses (passthrough, iommu=pt)
IOMMU_TYPE_IDENTITY = "identity"
VFIO_PCI_DRIVER = "vfio-pci"
VFIO_GROUP_DIR = "/dev/vfio"
NOIOMMU_GROUP_PREFIX = "noiommu-"  # drivers/vfio/group.c names no-IOMMU groups /dev/vfio/noiommu-N
# sysfs-bus-pci driver_override: only a driver of exactly this name may bind; no driver has this name,
# so module loads, drivers_probe and rescans leave a device that user space drives alone
USER_SPACE_OVERRIDE = "none"

# domain:bus:device.function, as the kernel names PCI functions (e.g. 0000:03:00.0)
BDF_PATTERN = re.compile(r"^([0-9a-fA-F]{4}):([0-9a-fA-F]{2}):([0-1][0-9a-fA-F])\.([0-7])$")
SHORT_BDF_PATTERN = re.compile(r"^([0-9a-fA-F]{2}):([0-1][0-9a-fA-F])\.([0-7])$")
DEFAULT_DOMAIN = "0000"
# include/linux/ioport.h: resource flags in the `resource` table
IORESOURCE_IO = 0x00000100
IORESOURCE_MEM = 0x00000200
IORESOURCE_PREFETCH = 0x00002000
IORESOURCE_MEM_64 = 0x00100000
RESOURCE_BAR_LINES = 6  # the first six lines of `resource` are BAR0..BAR5 (drivers/pci/pci-sysfs.c)


def normalize_bdf(text: str) -> str:
    """'03:00.0' or '0000:03:00.0' -> '0000:03:00.0' (lower case); InvalidArgument otherwise."""
    text = text.strip().lower()
    if BDF_PATTERN.match(text):
        return text
    if SHORT_BDF_PATTERN.match(text):
        return f"{DEFAULT_DOMAIN}:{text}"
    raise InvalidArgument(f"{text!r} is not a PCI address; write domain:bus:device.function, "
                          "e.g. 0000:03:00.0")


def is_bdf(text: str) -> bool:
    return bool(BDF_PATTERN.match(text))


@dataclass(frozen=True)
class Resource:
    """One line of the sysfs `resource` table: physical start, end (inclusive) and flags."""

    start: int
    end: int
    flags: int

    @property
    def size(self) -> int:
        return self.end - self.start + 1 if self.end > self.start else 0


class SysfsPCI:
    """Read and change one machine's PCI tree through an OS seam."""

    def __init__(self, os: OS) -> None:
        self.os = os

    # -- paths -------------------------------------------------------------------------------
    @staticmethod
    def device_path(bdf: str, attribute: str = "") -> str:
        base = f"{PCI_DEVICES}/{bdf}"
        return f"{base}/{attribute}" if attribute else base

    def exists(self, bdf: str) -> bool:
        return self.os.exists(self.device_path(bdf))

    def require(self, bdf: str) -> None:
        if not self.exists(bdf):
            raise DeviceNotFound(f"no PCI device {bdf} in {PCI_DEVICES}; "
                                 "list devices with `python -m tools.lsgpu --all`")

    def list_bdfs(self) -> list[str]:
        try:
            names = self.os.listdir(PCI_DEVICES)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return []
            raise from_oserror(exc, f"listing {PCI_DEVICES}") from exc
        return sorted(name for name in names if is_bdf(name))

    # -- attributes --------------------------------------------------------------------------
    def read_attribute(self, bdf: str, name: str) -> str:
        path = self.device_path(bdf, name)
        try:
            return self.os.read_text(path).strip()
        except OSError as exc:
            raise from_oserror(exc, f"reading {path}") from exc

    def read_hex(self, bdf: str, name: str) -> int:
        text = self.read_attribute(bdf, name)
        try:
            return int(text, 16)
        except ValueError as exc:
            raise HalError(f"{self.device_path(bdf, name)} holds {text!r}, not a hex number") from exc

    def write_attribute(self, path: str, text: str, what: str) -> None:
        try:
            self.os.write_text(path, text)
        except OSError as exc:
            error = from_oserror(exc, f"{what} (writing {text!r} to {path})")
            if isinstance(error, PermissionDenied):
                error = PermissionDenied(
                    f"{what}: writing {path} needs root; run `sudo sh -c 'echo {text} > {path}'` "
                    "or run gpuhal as root", errno=exc.errno)
            raise error from exc

    def resources(self, bdf: str) -> list[Resource]:
        table = self.read_attribute(bdf, "resource")
        lines = table.splitlines()
        parsed = []
        for line in lines[:RESOURCE_BAR_LINES]:
            fields = line.split()
            if len(fields) < 3:
                raise HalError(f"{self.device_path(bdf, 'resource')}: malformed line {line!r}")
            parsed.append(Resource(int(fields[0], 16), int(fields[1], 16), int(fields[2], 16)))
        return parsed

    # -- topology ----------------------------------------------------------------------------
    def upstream_path(self, bdf: str) -> list[str]:
        """Bridges between the root complex and `bdf`, root first (from the device's sysfs link)."""
        try:
            target = self.os.readlink(self.device_path(bdf))
        except OSError as exc:
            raise from_oserror(exc, f"resolving {self.device_path(bdf)}") from exc
        parts = [part for part in target.split("/") if is_bdf(part)]
        return [part for part in parts if part != bdf]

    def parent_bridge(self, bdf: str) -> str | None:
        path = self.upstream_path(bdf)
        return path[-1] if path else None

    def _link_name(self, bdf: str, attribute: str) -> str | None:
        """Last path component of the device's `attribute` symlink; None when there is no link."""
        link = self.device_path(bdf, attribute)
        try:
            target = self.os.readlink(link)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EINVAL):
                return None
            raise from_oserror(exc, f"reading {link}") from exc
        return target.rstrip("/").rsplit("/", 1)[-1]

    def iommu_group(self, bdf: str) -> int | None:
        name = self._link_name(bdf, "iommu_group")
        if name is None:
            return None
        if not name.isdigit():
            raise HalError(f"{self.device_path(bdf, 'iommu_group')} points at {name!r}, not an IOMMU group")
        return int(name)

    def iommu_group_type(self, group: int) -> str:
        """The group's default domain type: "identity" (DMA addresses are physical), "DMA", "DMA-FQ", ..."""
        path = f"{IOMMU_GROUPS}/{group}/type"
        try:
            return self.os.read_text(path).strip()
        except OSError as exc:
            raise from_oserror(exc, f"reading {path} (the IOMMU domain type of group {group})") from exc

    def dma_translation(self, bdf: str) -> str | None:
        """None when the device's DMA addresses are physical addresses (no IOMMU group, or a group in
        passthrough); otherwise the group's domain type, e.g. "DMA"."""
        group = self.iommu_group(bdf)
        if group is None:
            return None
        kind = self.iommu_group_type(group)
        return None if kind == IOMMU_TYPE_IDENTITY else kind

    def iommu_group_devices(self, group: int) -> list[str]:
        path = f"{IOMMU_GROUPS}/{group}/devices"
        try:
            return sorted(self.os.listdir(path))
        except OSError as exc:
            raise from_oserror(exc, f"listing {path}") from exc

    # -- drivers -----------------------------------------------------------------------------
    def driver(self, bdf: str) -> str | None:
        return self._link_name(bdf, "driver")

    def vfio_group_node(self, bdf: str) -> str | None:
        """/dev/vfio/<N> (or noiommu-<N>) of the device's group, None when there is no such node."""
        group = self.iommu_group(bdf)
        if group is None:
            return None
        for name in (str(group), f"{NOIOMMU_GROUP_PREFIX}{group}"):
            path = f"{VFIO_GROUP_DIR}/{name}"
            if self.os.exists(path):
                return path
        return None

    def require_vfio_group_free(self, bdf: str) -> None:
        """DeviceBusy when another program has the device's VFIO group open.

        Unbinding vfio-pci from a device that a VFIO user (QEMU, say) holds blocks in the kernel until
        that user lets go (drivers/vfio/vfio_main.c vfio_unregister_group_dev waits for the device's
        users), possibly forever. The group node is single-open (drivers/vfio/group.c
        vfio_group_fops_open answers EBUSY while it is open, or while a device of it is open through its
        cdev), so opening it and closing it again tells, without blocking, whether anyone holds it.
        """
        path = self.vfio_group_node(bdf)
        if path is None:
            return
        try:
            fd = self.os.open(path, O_RDWR | O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return
            if exc.errno == errno.EBUSY:
                raise DeviceBusy(f"{bdf} is held through VFIO by another program ({path} is open there), "
                                 f"so unbinding {VFIO_PCI_DRIVER} would block until it lets go; close it "
                                 "there (e.g. shut down the virtual machine using it), then try again. "
                                 f"`sudo fuser -v {path} /dev/vfio/devices/*` names the holder",
                                 errno=exc.errno) from exc
            raise from_oserror(exc, f"checking whether another program holds {path}") from exc
        self.os.close(fd)

    def unbind(self, bdf: str) -> str | None:
        """Detach the bound kernel driver; returns its name (None when nothing was bound).

        A device on vfio-pci is unbound only when no other program holds its VFIO group (DeviceBusy
        otherwise), because the kernel would block until that program lets go.
        """
        driver = self.driver(bdf)
        if driver is None:
            return None
        if driver == VFIO_PCI_DRIVER:
            self.require_vfio_group_free(bdf)
        log.info("unbinding %s from kernel driver %s", bdf, driver)
        self.write_attribute(f"{PCI_DRIVERS}/{driver}/unbind", bdf, f"unbinding {bdf} from {driver}")
        return driver

    def set_driver_override(self, bdf: str, driver: str | None) -> None:
        path = self.device_path(bdf, "driver_override")
        # sysfs-bus-pci: writing an empty line clears the override
        text = driver if driver is not None else "\n"
        self.write_attribute(path, text, f"setting the driver override of {bdf}")

    def _unbind_or_restore_override(self, bdf: str) -> None:
        try:
            self.unbind(bdf)
        except BaseException:
            self.set_driver_override(bdf, None)
            raise

    def detach_for_user_space(self, bdf: str) -> str | None:
        """Unbind the kernel driver and keep every driver off the device (override USER_SPACE_OVERRIDE)
        until rebind(); returns the driver that was bound (None: nothing was, and nothing changes)."""
        driver = self.driver(bdf)
        if driver is None:
            return None
        if driver == VFIO_PCI_DRIVER:
            self.require_vfio_group_free(bdf)
        self.set_driver_override(bdf, USER_SPACE_OVERRIDE)
        self._unbind_or_restore_override(bdf)
        return driver

    def bind_to(self, bdf: str, driver: str) -> None:
        """Bind `bdf` to `driver` the way the kernel documents: override, unbind, probe."""
        current = self.driver(bdf)
        if current == driver:
            return
        if current == VFIO_PCI_DRIVER:
            self.require_vfio_group_free(bdf)
        self.set_driver_override(bdf, driver)
        if current is not None:
            self._unbind_or_restore_override(bdf)
        self.write_attribute(PCI_DRIVERS_PROBE, bdf, f"probing {bdf} for driver {driver}")
        bound = self.driver(bdf)
        if bound != driver:
            raise HalError(f"{bdf} did not bind to {driver} (bound: {bound or 'nothing'}); "
                           f"is the module loaded? try `sudo modprobe {driver.replace('-', '_')}`")

    def rebind(self, bdf: str, driver: str | None) -> None:
        """Hand `bdf` back: clear the override, detach whoever has it, bind `driver` (None: leave it
        without a driver). Nothing changes when another program holds it through VFIO (DeviceBusy).
        Handing back to vfio-pci keeps an override naming it: vfio-pci matches a device only through
        driver_override or ids added with new_id (drivers/vfio/pci/vfio_pci.c id table)."""
        current = self.driver(bdf)
        if current == VFIO_PCI_DRIVER and driver != VFIO_PCI_DRIVER:
            self.require_vfio_group_free(bdf)
        self.set_driver_override(bdf, VFIO_PCI_DRIVER if driver == VFIO_PCI_DRIVER else None)
        if current is not None and current != driver:
            self.unbind(bdf)
        if driver is None:
            return
        if self.driver(bdf) == driver:
            return
        log.info("handing %s back to kernel driver %s", bdf, driver)
        bind_path = f"{PCI_DRIVERS}/{driver}/bind"
        if self.os.exists(bind_path):
            self.write_attribute(bind_path, bdf, f"binding {bdf} to {driver}")
        else:
            self.write_attribute(PCI_DRIVERS_PROBE, bdf, f"probing {bdf}")
