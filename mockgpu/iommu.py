"""The IOMMU as VFIO type1 exposes it: per-container IOVA -> host virtual mappings, translation, faults.

`IOMMUDomain` holds one container's mappings and validates MAP_DMA/UNMAP_DMA the way
drivers/vfio/vfio_iommu_type1.c does (page alignment, no overlap, no bisecting a mapping on unmap,
the IOVA aperture). `translate` turns a device's IOVA into a simulated physical address through
host RAM, or returns None, in which case the bus records an `IOMMUFault`.

Pinning is accounted as vfio_iommu_type1.c does it: every page a MAP_DMA pins is added to the
process's mm->locked_vm (`HostRAM.locked_vm`, shared by all containers of the process) and checked
against RLIMIT_MEMLOCK without CAP_IPC_LOCK (ENOMEM); UNMAP_DMA and container teardown take the
pages off again.
"""
from __future__ import annotations

import bisect
import errno
from dataclasses import dataclass

from hal.os import PAGE_SIZE
from mockgpu.hostmem import HostRAM

# Intel VT-d r4.1 sec 3.6: a 4-level second-stage table translates 48 bits of IOVA
IOVA_BITS = 48
IOVA_LIMIT = 1 << IOVA_BITS
# vfio_iommu_type1 reports the page sizes the IOMMU supports: 4 KiB, 2 MiB and 1 GiB on x86
IOVA_PAGE_SIZES = PAGE_SIZE | (1 << 21) | (1 << 30)
# Intel SDM vol 3 sec 11.11.1: MSI message address 0xFEEx_xxxx targets the local APICs; the IOMMU
# reserves that window, so it is not usable IOVA space
MSI_WINDOW_BASE = 0xFEE00000
MSI_WINDOW_SIZE = 1 << 20


def usable_iova_ranges() -> list[tuple[int, int]]:
    """Inclusive [start, end] IOVA ranges a type1 container can map (the aperture minus MSI)."""
    return [(0, MSI_WINDOW_BASE - 1), (MSI_WINDOW_BASE + MSI_WINDOW_SIZE, IOVA_LIMIT - 1)]


@dataclass
class DMAMapping:
    iova: int
    size: int
    vaddr: int
    readable: bool
    writable: bool
    locked_pages: int = 0

    @property
    def end(self) -> int:
        return self.iova + self.size


@dataclass
class IOMMUFault:
    """A DMA the IOMMU refused: which function, at what IOVA, reading or writing, and why."""

    bdf: str
    iova: int
    write: bool
    reason: str


class IOMMUDomain:
    """One VFIO container's address space."""

    def __init__(self, ram: HostRAM) -> None:
        self.ram = ram
        self._starts: list[int] = []
        self._maps: list[DMAMapping] = []

    @property
    def mappings(self) -> list[DMAMapping]:
        return list(self._maps)

    def map(self, iova: int, size: int, vaddr: int, readable: bool, writable: bool) -> None:
        """Raises OSError(EINVAL) for bad arguments, EEXIST for overlap, EFAULT for unbacked vaddr."""
        if not (readable or writable) or size == 0:
            raise OSError(errno.EINVAL, "MAP_DMA needs READ or WRITE and a non-zero size")
        if (iova | size | vaddr) & (PAGE_SIZE - 1):
            raise OSError(errno.EINVAL, "MAP_DMA iova, size and vaddr must be page aligned")
        if not any(start <= iova and iova + size - 1 <= end for start, end in usable_iova_ranges()):
            raise OSError(errno.EINVAL, f"IOVA range [{iova:#x}, {iova + size:#x}) is not usable IOVA space")
        if self._overlapping(iova, size):
            raise OSError(errno.EEXIST, f"IOVA range [{iova:#x}, {iova + size:#x}) overlaps a mapping")
        if not self.ram.vaddr_range_mapped(vaddr, size):
            raise OSError(errno.EFAULT, f"vaddr range [{vaddr:#x}, {vaddr + size:#x}) cannot be pinned")
        # vfio_pin_pages_remote: each pinned page counts against RLIMIT_MEMLOCK (-ENOMEM past it
        # without CAP_IPC_LOCK), and vfio_lock_acct adds them to mm->locked_vm, also for pages
        # that are mlock'ed or mapped at another IOVA already
        pages = size // PAGE_SIZE
        self.ram.locked_vm.charge(pages, f"VFIO_IOMMU_MAP_DMA of {size:#x} bytes")
        position = bisect.bisect_left(self._starts, iova)
        self._starts.insert(position, iova)
        self._maps.insert(position, DMAMapping(iova, size, vaddr, readable, writable, pages))

    def unmap(self, iova: int, size: int) -> int:
        """Remove every mapping inside [iova, iova+size); returns the bytes unmapped.

        Like type1 v2, a range that cuts through a mapping is EINVAL."""
        if (iova | size) & (PAGE_SIZE - 1):
            raise OSError(errno.EINVAL, "UNMAP_DMA iova and size must be page aligned")
        end = iova + size
        hit = self._overlapping(iova, size)
        for mapping in hit:
            if mapping.iova < iova or mapping.end > end:
                raise OSError(errno.EINVAL,
                              f"UNMAP_DMA [{iova:#x}, {end:#x}) would split mapping at {mapping.iova:#x}")
        removed = 0
        for mapping in hit:
            position = self._maps.index(mapping)
            del self._maps[position]
            del self._starts[position]
            removed += mapping.size
            self._unpin(mapping)
        return removed

    def unmap_all(self) -> int:
        """UNMAP_DMA with FLAG_ALL, or the container letting go (vfio_iommu_unmap_unpin_all)."""
        removed = sum(mapping.size for mapping in self._maps)
        for mapping in self._maps:
            self._unpin(mapping)
        self._maps.clear()
        self._starts.clear()
        return removed

    def _unpin(self, mapping: DMAMapping) -> None:
        # vfio_unmap_unpin -> vfio_lock_acct(dma, -unlocked): the pinned pages leave mm->locked_vm
        self.ram.locked_vm.uncharge(mapping.locked_pages)
        mapping.locked_pages = 0

    def _overlapping(self, iova: int, size: int) -> list[DMAMapping]:
        end = iova + size
        position = max(bisect.bisect_right(self._starts, iova) - 1, 0)
        found = []
        for mapping in self._maps[position:]:
            if mapping.iova >= end:
                break
            if mapping.end > iova:
                found.append(mapping)
        return found

    def lookup(self, iova: int) -> DMAMapping | None:
        position = bisect.bisect_right(self._starts, iova) - 1
        if position < 0:
            return None
        mapping = self._maps[position]
        return mapping if iova < mapping.end else None

    def translate(self, iova: int, write: bool) -> tuple[int | None, str]:
        """Physical address for `iova` (or None) and, when None, the reason."""
        mapping = self.lookup(iova)
        if mapping is None:
            return None, "unmapped IOVA"
        if write and not mapping.writable:
            return None, "write to a read-only mapping"
        if not write and not mapping.readable:
            return None, "read from a write-only mapping"
        vaddr = mapping.vaddr + (iova - mapping.iova)
        pfn = self.ram.pfn_of_vaddr(vaddr)
        if pfn is None:
            return None, "mapped memory was freed"
        return pfn * PAGE_SIZE + vaddr % PAGE_SIZE, ""
