"""The sysfs backend: a PCI function reached through /sys/bus/pci/devices/<bdf> without an IOMMU.

Config space through the `config` file, BARs by mmap of `resourceN`, Resizable BAR through
`resourceN_resize`, resets through the `reset` attribute, DMA memory as locked host pages whose
physical addresses (from /proc/self/pagemap) are the bus addresses, offered only where that holds: no
IOMMU group, or a group whose domain type is "identity" (passthrough). It needs root (or
CAP_SYS_ADMIN for pagemap frame numbers and CAP_SYS_RAWIO for resource mmap). No interrupts reach
user space this way: drivers poll.
"""
from __future__ import annotations

import errno
import logging

from autogen.linux import pci_regs as regs

from hal.backend import BarResource, DMABuffer, PCIBackend, locked_memory_with_physical_pages
from hal.errors import HalError, PermissionDenied, UnsupportedOperation, from_oserror
from hal.os import O_CLOEXEC, O_RDONLY, O_RDWR, O_SYNC, OS
from hal.pci.sysfs import HOST_BRIDGE_REASON, IORESOURCE_IO, SysfsPCI
from hal.region import Region

log = logging.getLogger(__name__)

NAME = "pci"
ROOT_HINT = ("run as root (e.g. `sudo -E python3 ...`), or give the interpreter the capabilities: "
             "`sudo setcap cap_sys_admin,cap_sys_rawio+ep $(readlink -f $(command -v python3))`")
NO_RESOURCE_FILE = ("the kernel created no resourceN file (the BAR has no address, or this architecture "
                    "cannot mmap PCI resources)")


class SysfsConfig:
    """A function's (or bridge's) config space through its sysfs `config` file."""

    def __init__(self, os: OS, bdf: str, writable: bool = True) -> None:
        self.os = os
        self.bdf = bdf
        self.path = SysfsPCI.device_path(bdf, "config")
        flags = (O_RDWR if writable else O_RDONLY) | O_CLOEXEC
        try:
            self.fd: int | None = os.open(self.path, flags)
        except OSError as exc:
            error = from_oserror(exc, f"opening {self.path}")
            if isinstance(error, PermissionDenied):
                raise PermissionDenied(f"opening {self.path} for writing needs root: {ROOT_HINT}",
                                       errno=exc.errno) from exc
            raise error from exc
        self.size = self._probe_size()

    def _probe_size(self) -> int:
        probe = self.os.pread(self.fd, regs.PCI_CFG_SPACE_EXP_SIZE, 0)
        return len(probe)

    def read(self, offset: int, width: int) -> int:
        data = self.os.pread(self.fd, width, offset)
        if len(data) != width:
            # drivers/pci/pci-sysfs.c pci_read_config: without CAP_SYS_ADMIN reads stop at byte 64
            raise OSError(errno.EACCES, f"{self.path} ends at {offset + len(data):#x} for this process: "
                                        "the kernel shows the rest of config space only to root; "
                                        f"{ROOT_HINT}")
        return int.from_bytes(data, "little")

    def write(self, offset: int, width: int, value: int) -> None:
        written = self.os.pwrite(self.fd, value.to_bytes(width, "little"), offset)
        if written != width:
            raise OSError(errno.EIO, f"short write of {self.path} at {offset:#x}: {written} of {width} bytes")

    def close(self) -> None:
        if self.fd is not None:
            fd = self.fd
            self.fd = None
            self.os.close(fd)

    def __enter__(self) -> "SysfsConfig":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class SysfsBackend(PCIBackend):
    """A PCI function through sysfs. Open it with `hal.open("pci:<bdf>")`."""

    name = NAME

    def __init__(self, os: OS, bdf: str) -> None:
        super().__init__(bdf)
        self.os = os
        self.sysfs = SysfsPCI(os)
        self._config = SysfsConfig(os, bdf, writable=True)
        self._mapped: list[Region] = []

    # -- config ------------------------------------------------------------------------------
    def config_read(self, offset: int, width: int) -> int:
        return self._config.read(offset, width)

    def config_write(self, offset: int, width: int, value: int) -> None:
        self._config.write(offset, width, value)

    def config_size(self) -> int:
        return self._config.size

    # -- BARs --------------------------------------------------------------------------------
    def bar_resources(self) -> dict[int, BarResource]:
        """BARs with a kernel resource; mappable only when memory and its `resourceN` file exists."""
        found = {}
        for index, resource in enumerate(self.sysfs.resources(self.bdf)):
            if resource.size == 0:
                continue
            has_file = self.sysfs.resource_file(self.bdf, index) is not None
            mappable = not resource.flags & IORESOURCE_IO and has_file
            found[index] = BarResource(index, resource.size, mappable)
        return found

    def map_bar(self, index: int) -> Region:
        resources = self.bar_resources()
        resource = resources.get(index)
        if resource is None:
            raise HalError(f"BAR{index} of {self.bdf} has no resource assigned")
        path = SysfsPCI.device_path(self.bdf, f"resource{index}")
        if self.sysfs.resources(self.bdf)[index].flags & IORESOURCE_IO:
            raise UnsupportedOperation(f"BAR{index} of {self.bdf} is an I/O port BAR; it cannot be mapped")
        if not resource.mappable:
            raise UnsupportedOperation(f"{path} does not exist: {NO_RESOURCE_FILE}; open vfio:{self.bdf}, "
                                       "whose regions do not need it")
        try:
            fd = self.os.open(path, O_RDWR | O_SYNC | O_CLOEXEC)
        except OSError as exc:
            error = from_oserror(exc, f"opening {path}")
            if isinstance(error, PermissionDenied):
                raise PermissionDenied(f"mapping {path} needs root: {ROOT_HINT}", errno=exc.errno) from exc
            raise error from exc
        try:
            region = self.os.mmap(fd, resource.size, 0)
        except OSError as exc:
            raise from_oserror(exc, f"mapping {path} ({resource.size:#x} bytes)") from exc
        finally:
            self.os.close(fd)
        self._mapped.append(region)
        return region

    def unmap_bar(self, region: Region) -> None:
        if region in self._mapped:
            self._mapped.remove(region)
        self.os.munmap(region)

    def resize_bar(self, index: int, size: int) -> None:
        """resourceN_resize; every mapping of the device's resource files is dead afterwards."""
        self.sysfs.resize_resource(self.bdf, index, size)

    # -- DMA ---------------------------------------------------------------------------------
    def alloc_dma(self, size: int) -> DMABuffer:
        self._require_physical_dma()
        memory, physical, contiguous = locked_memory_with_physical_pages(self.os, size, "DMA through sysfs",
                                                                         ROOT_HINT)
        return DMABuffer(region=memory.region, size=memory.size, bus_addresses=physical,
                         contiguous=contiguous, backend_handle=memory)

    def _require_physical_dma(self) -> None:
        """Physical addresses are bus addresses only with no IOMMU group or a passthrough one."""
        try:
            translation = self.sysfs.dma_translation(self.bdf)
        except HalError as exc:
            raise UnsupportedOperation(f"cannot tell whether the IOMMU translates DMA for {self.bdf} "
                                       f"({exc}), so physical page addresses may not be bus addresses: open "
                                       f"vfio:{self.bdf}, or boot with iommu=pt", errno=exc.errno) from exc
        if translation is not None:
            raise UnsupportedOperation(translated_dma_reason(self.bdf, translation))

    def free_dma(self, buffer: DMABuffer) -> None:
        self.os.free_locked(buffer.backend_handle)

    # -- resets ------------------------------------------------------------------------------
    def reset_methods(self) -> list[str]:
        if self.os.exists(SysfsPCI.device_path(self.bdf, "reset")):
            return ["sysfs"]
        return []

    def reset(self, method: str) -> None:
        if method != "sysfs":
            super().reset(method)
        path = SysfsPCI.device_path(self.bdf, "reset")
        self.sysfs.write_attribute(path, "1", f"resetting {self.bdf}")

    def close(self) -> None:
        while self._mapped:
            self.os.munmap(self._mapped.pop())
        self._config.close()


def probe(os: OS, bdf: str) -> str:
    """'ok' when this backend can open `bdf` as things stand, else the reason it cannot. Read-only:
    nothing is opened for writing."""
    sysfs = SysfsPCI(os)
    if not sysfs.exists(bdf):
        return f"no such device {bdf}"
    if sysfs.is_host_bridge(bdf):
        return HOST_BRIDGE_REASON
    if not sysfs.config_readable_in_full(bdf):
        return "needs root (config space past byte 64, the BARs and DMA addresses are root-only)"
    driver = sysfs.driver(bdf)
    if driver is not None:
        return f"in use by kernel driver {driver}; opening with unbind=True detaches it"
    notes = []
    memory_bars = [index for index, res in enumerate(sysfs.resources(bdf))
                   if res.size and not res.flags & IORESOURCE_IO]
    if memory_bars and all(sysfs.resource_file(bdf, index) is None for index in memory_bars):
        notes.append(f"no BAR mappings: {NO_RESOURCE_FILE}")
    try:
        translation = sysfs.dma_translation(bdf)
    except HalError as exc:
        notes.append(f"no DMA: the IOMMU domain type is unknown: {exc}")
    else:
        if translation is not None:
            notes.append(f"no DMA: {translated_dma_reason(bdf, translation)}")
    return f"ok ({'; '.join(notes)})" if notes else "ok"


def translated_dma_reason(bdf: str, translation: str) -> str:
    return (f"the IOMMU translates DMA for {bdf} (domain type {translation}), so physical page addresses "
            f"are not bus addresses: open vfio:{bdf}, or boot with iommu=pt")


def open_backend(os: OS, bdf: str) -> SysfsBackend:
    return SysfsBackend(os, bdf)
