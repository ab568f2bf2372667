"""The Linux sysfs PCI tree as seen through the OS seam: attributes, resources, topology, driver binding.

Shared by the sysfs and VFIO backends and by discovery. Paths and file formats are the kernel's
(Documentation/ABI/testing/sysfs-bus-pci, Documentation/PCI/sysfs-pci.rst).
"""
from __future__ import annotations

import errno
import logging
import re
from dataclasses import dataclass
from typing import Callable

from autogen.linux import pci_regs as regs

from hal.errors import (DeviceBusy, DeviceNotFound, HalError, InvalidArgument, PermissionDenied,
                        UnsupportedOperation, from_oserror)
from hal.os import O_CLOEXEC, O_RDONLY, O_RDWR, OS

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
# drivers/vfio/group.c vfio_noiommu_group_alloc: the `name` of the fake IOMMU group that VFIO's
# no-IOMMU mode makes for a device while vfio-pci has it (its DMA addresses stay physical)
NOIOMMU_GROUP_NAME = "vfio-noiommu"
NOIOMMU_MODE_PARAMETER = "/sys/module/vfio/parameters/enable_unsafe_noiommu_mode"
# sysfs-bus-pci driver_override: only a driver of exactly this name may bind; no driver has this name,
# so module loads, drivers_probe and rescans leave a device that user space drives alone
USER_SPACE_OVERRIDE = "none"
# PCI drivers that set driver_managed_dma (drivers/pci/pcie/portdrv.c, drivers/pci/pci-stub.c,
# drivers/vfio/pci/vfio_pci.c and the vfio-pci variant drivers, named by their modules with
# underscores): binding one does not make the device a user of the kernel's DMA API
# (drivers/pci/pci-driver.c pci_dma_configure), so it leaves the IOMMU group usable by VFIO
DMA_MANAGING_DRIVERS = frozenset({
    VFIO_PCI_DRIVER, "pcieport", "pci-stub",
    "hisi_acc_vfio_pci", "mlx5_vfio_pci", "nvgrace_gpu_vfio_pci", "pds_vfio_pci", "qat_vfio_pci",
    "virtio_vfio_pci",
})
# include/linux/pci_ids.h PCI_CLASS_BRIDGE_HOST: the host bridge, the root complex's own function
PCI_CLASS_BRIDGE_HOST = 0x0600
CLASS_SUBCLASS_SHIFT = 8  # the 24-bit class code is base class : subclass : programming interface
HOST_BRIDGE_REASON = ("not openable: a host bridge (class 0x0600, the root complex's own function) is "
                      "not a device to drive")
# include/linux/errno.h ENOTSUPP: kernel-internal "not supported", which sysfs writes pass on unchanged
ENOTSUPP = 524
REBAR_SIZE_SHIFT = 20  # sysfs-bus-pci resourceN_resize: bit n means 2^(n + 20) bytes
LARGEST_BAR_SIZE = "max"  # bar_sizes value: the largest size the bridge windows leave room for

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
# drivers/pci/pci-sysfs.c pci_read_config: without CAP_SYS_ADMIN reads of `config` stop at byte 64
UNPRIVILEGED_CONFIG_BYTES = 64


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


def manages_own_dma(driver: str | None) -> bool:
    """True for a driver whose devices keep their IOMMU group usable by VFIO (see DMA_MANAGING_DRIVERS)."""
    return driver in DMA_MANAGING_DRIVERS


def format_size(size: int) -> str:
    for unit, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size:#x} bytes"


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

    def class_code(self, bdf: str) -> int:
        return self.read_hex(bdf, "class")

    def is_host_bridge(self, bdf: str) -> bool:
        return self.class_code(bdf) >> CLASS_SUBCLASS_SHIFT == PCI_CLASS_BRIDGE_HOST

    def header_type(self, bdf: str) -> int:
        """The header type (layout bits only) from config space, opened read-only: the first 64
        bytes are readable without privileges (drivers/pci/pci-sysfs.c pci_read_config)."""
        path = self.device_path(bdf, "config")
        try:
            fd = self.os.open(path, O_RDONLY | O_CLOEXEC)
        except OSError as exc:
            raise from_oserror(exc, f"opening {path} read-only") from exc
        try:
            raw = self.os.pread(fd, 1, regs.PCI_HEADER_TYPE)
        except OSError as exc:
            raise from_oserror(exc, f"reading the header type of {bdf}") from exc
        finally:
            self.os.close(fd)
        if len(raw) != 1:
            raise HalError(f"{path} is shorter than its header")
        return raw[0] & regs.PCI_HEADER_TYPE_MASK

    def config_readable_in_full(self, bdf: str) -> bool:
        """Whether this process sees config space past the first 64 bytes (CAP_SYS_ADMIN), found
        with a read-only open: opening it for writing would be a change to ask for, not a probe."""
        path = self.device_path(bdf, "config")
        try:
            fd = self.os.open(path, O_RDONLY | O_CLOEXEC)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM):
                return False
            raise from_oserror(exc, f"opening {path} read-only") from exc
        try:
            return len(self.os.pread(fd, 1, UNPRIVILEGED_CONFIG_BYTES)) == 1
        except OSError as exc:
            raise from_oserror(exc, f"reading {path}") from exc
        finally:
            self.os.close(fd)

    def resource_file(self, bdf: str, index: int) -> str | None:
        """The `resourceN` file of BAR `index`, None when the kernel created none (the resource is
        unassigned, or the architecture cannot mmap PCI resources)."""
        path = self.device_path(bdf, f"resource{index}")
        return path if self.os.exists(path) else None

    # -- Resizable BAR (resourceN_resize) ----------------------------------------------------
    def rebar_sizes(self, bdf: str, index: int) -> list[int]:
        """Sizes in bytes the kernel offers for BAR `index`, smallest first (empty: not resizable)."""
        path = self.device_path(bdf, f"resource{index}_resize")
        if not self.os.exists(path):
            return []
        try:
            bitmap = int(self.read_attribute(bdf, f"resource{index}_resize"), 16)
        except ValueError as exc:
            raise HalError(f"{path} does not hold a hex bitmap") from exc
        return [1 << (bit + REBAR_SIZE_SHIFT) for bit in range(bitmap.bit_length()) if bitmap >> bit & 1]

    def resize_resource(self, bdf: str, index: int, size: int) -> None:
        """Resize BAR `index` to `size` bytes through `resourceN_resize`, with each refusal of
        drivers/pci/pci-sysfs.c __resource_resize_store and drivers/pci/rebar.c pci_resize_resource
        turned into a typed error that says what to try. The kernel releases every BAR of the
        device in the same bridge window and assigns them again, and removes the resource files
        meanwhile: every mapping of any BAR of the device is dead afterwards."""
        path = self.device_path(bdf, f"resource{index}_resize")
        supported = self.rebar_sizes(bdf, index)
        if not supported:
            raise UnsupportedOperation(f"{path} is missing: BAR{index} of {bdf} is not resizable, or the "
                                       "kernel (< 6.1) offers no BAR resizing through sysfs")
        if size not in supported:
            raise InvalidArgument(f"BAR{index} of {bdf} cannot be {format_size(size)}; supported: "
                                  f"{', '.join(format_size(each) for each in supported)}")
        code = (size >> REBAR_SIZE_SHIFT).bit_length() - 1
        try:
            self.os.write_text(path, f"{code}\n")
        except OSError as exc:
            raise self._resize_error(bdf, index, size, supported, exc) from exc
        log.info("BAR%d of %s resized to %s", index, bdf, format_size(size))

    def _resize_error(self, bdf: str, index: int, size: int, supported: list[int], exc: OSError) -> HalError:
        what = f"resizing BAR{index} of {bdf} to {format_size(size)}"
        if exc.errno == errno.EBUSY:
            driver = self.driver(bdf)
            return DeviceBusy(f"{what}: the kernel resizes only devices without a driver, and {bdf} is "
                              f"bound to {driver or 'a driver'}; open it with unbind=True and "
                              f"bar_sizes={{{index}: {size:#x}}}", errno=exc.errno)
        if exc.errno == errno.ENOSPC:
            smaller = [format_size(each) for each in supported if each < size]
            return InvalidArgument(
                f"{what}: the kernel found no room for it in the bridge windows above {bdf} (ENOSPC), "
                "so the BARs kept their sizes and addresses. Try a smaller size "
                f"({', '.join(smaller) or 'none'}), "
                f"or bar_sizes={{{index}: '{LARGEST_BAR_SIZE}'}} for the largest that fits; other devices "
                "below the same bridge pin its window (soft-remove them with `echo 1 | sudo tee "
                "/sys/bus/pci/devices/<bdf>/remove`, resize, then `echo 1 | sudo tee /sys/bus/pci/rescan`); "
                "enabling Above 4G Decoding in firmware setup gives PCI more address space",
                errno=exc.errno)
        if exc.errno == ENOTSUPP:
            return UnsupportedOperation(
                f"{what}: the firmware asks the OS to keep its PCI resource assignment (ACPI "
                "'preserve boot configuration'), so Linux resizes no BAR on this machine; choose the "
                "size in firmware setup instead (Resizable BAR / Smart Access Memory)", errno=exc.errno)
        error = from_oserror(exc, f"{what} via {self.device_path(bdf, f'resource{index}_resize')}")
        if isinstance(error, PermissionDenied):
            return PermissionDenied(f"{what} needs root (CAP_SYS_ADMIN): run as root", errno=exc.errno)
        return error

    def apply_bar_sizes(self, bdf: str, bar_sizes: dict[int, int | str]) -> dict[int, int]:
        """Resize the BARs named in `bar_sizes` (bytes, or LARGEST_BAR_SIZE for the largest size the
        bridge windows leave room for) while the device has no driver; returns the sizes now held."""
        held = {}
        for index, wanted in sorted(bar_sizes.items()):
            current = self.resources(bdf)[index].size if index < RESOURCE_BAR_LINES else 0
            if wanted == LARGEST_BAR_SIZE:
                held[index] = self._resize_to_largest(bdf, index, current)
                continue
            if not isinstance(wanted, int) or isinstance(wanted, bool):
                raise InvalidArgument(f"bar_sizes[{index}] is {wanted!r}: give a size in bytes or "
                                      f"{LARGEST_BAR_SIZE!r}")
            if wanted != current:
                self.resize_resource(bdf, index, wanted)
            held[index] = wanted
        return held

    def _resize_to_largest(self, bdf: str, index: int, current: int) -> int:
        supported = self.rebar_sizes(bdf, index)
        if not supported:
            raise UnsupportedOperation(f"BAR{index} of {bdf} is not resizable (no resource{index}_resize)")
        for size in sorted(supported, reverse=True):
            if size <= current:
                break
            try:
                self.resize_resource(bdf, index, size)
            except InvalidArgument as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                log.info("BAR%d of %s: no room for %s, trying smaller", index, bdf, format_size(size))
                continue
            return size
        return current

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

    def is_noiommu_group(self, group: int) -> bool:
        """True for a group VFIO's no-IOMMU mode made (one device, no IOMMU behind it)."""
        try:
            return self.os.read_text(f"{IOMMU_GROUPS}/{group}/name").strip() == NOIOMMU_GROUP_NAME
        except OSError:
            return False  # drivers/iommu/iommu.c: only named groups have the attribute

    def noiommu_mode(self) -> bool:
        """VFIO's unsafe no-IOMMU mode is enabled (the vfio module's parameter reads Y)."""
        try:
            return self.os.read_text(NOIOMMU_MODE_PARAMETER).strip() in ("Y", "1")
        except OSError:
            return False  # vfio not loaded, or built without CONFIG_VFIO_NOIOMMU

    def dma_translation(self, bdf: str) -> str | None:
        """None when the device's DMA addresses are physical addresses (no IOMMU group, a no-IOMMU
        group, or a group in passthrough); otherwise the group's domain type, e.g. "DMA"."""
        group = self.iommu_group(bdf)
        if group is None or self.is_noiommu_group(group):
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

    def bind_to(self, bdf: str, driver: str, while_unbound: Callable[[], None] | None = None) -> None:
        """Bind `bdf` to `driver` the way the kernel documents: override, unbind, probe.

        `while_unbound` runs between the unbind and the probe, while no driver has the device and
        the override keeps every other driver off it (a BAR resize wants exactly that); it also runs,
        after an unbind, when `driver` was bound already."""
        current = self.driver(bdf)
        if current == driver and while_unbound is None:
            return
        if current == VFIO_PCI_DRIVER:
            self.require_vfio_group_free(bdf)
        self.set_driver_override(bdf, driver)
        if current is not None:
            self._unbind_or_restore_override(bdf)
        if while_unbound is not None:
            while_unbound()
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
