"""Simulated host RAM: anonymous allocations with a simulated physical address for each page.

Allocations are real anonymous mmaps (so the program gets a real virtual address and a zero-copy
MemoryRegion), and each of their pages is given a page frame number in a simulated physical
address space. Device DMA without an IOMMU reaches host memory by those physical addresses;
/proc/self/pagemap reports them in the kernel's format.

By default the frames of one allocation are scattered (handed out in descending order, as a busy
system's buddy allocator tends to), so drivers cannot rely on physical contiguity by accident.

`LockedMemoryAccount` is the process's mm->locked_vm: pages mlock'ed (`allocate(lock=True)`) and
pages VFIO_IOMMU_MAP_DMA pins are both counted there and checked against RLIMIT_MEMLOCK unless the
process has CAP_IPC_LOCK, so memory that is mlock'ed and then mapped for DMA counts twice.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import os
from dataclasses import dataclass
from typing import Callable

from hal.os import PAGE_SIZE
from hal.region import MemoryRegion

log = logging.getLogger(__name__)

# First simulated page frame handed out: 4 GiB, above the 32-bit MMIO hole like high RAM on x86
FIRST_PFN = (4 << 30) // PAGE_SIZE
# include/uapi/linux/resource.h MLOCK_LIMIT: the default RLIMIT_MEMLOCK (`ulimit -l` of 8192 KiB)
DEFAULT_MEMLOCK_LIMIT = 8 * 1024 * 1024


class LockedMemoryAccount:
    """mm->locked_vm of the simulated process and the RLIMIT_MEMLOCK it is checked against.

    `limit_bytes` None is RLIM_INFINITY. `capable()` answers capable(CAP_IPC_LOCK): such a process
    is still counted (mm/util.c __account_locked_vm adds the pages either way) but never refused."""

    def __init__(self, limit_bytes: int | None, capable: Callable[[], bool]) -> None:
        self.limit_bytes = limit_bytes
        self.capable = capable
        self.locked_pages = 0

    @property
    def limit_pages(self) -> int | None:
        if self.limit_bytes is None:
            return None
        return self.limit_bytes // PAGE_SIZE  # rlimit(RLIMIT_MEMLOCK) >> PAGE_SHIFT

    def charge(self, pages: int, what: str) -> None:
        """Count `pages` more, or OSError(ENOMEM) when they would pass the limit without
        CAP_IPC_LOCK (mm/mlock.c do_mlock; drivers/vfio/vfio_iommu_type1.c vfio_pin_pages_remote)."""
        limit = self.limit_pages
        if limit is not None and self.locked_pages + pages > limit and not self.capable():
            raise OSError(errno.ENOMEM, f"{what}: {pages} pages would pass RLIMIT_MEMLOCK "
                                        f"({self.locked_pages} of {limit} pages locked already)")
        self.locked_pages += pages

    def uncharge(self, pages: int) -> None:
        """munlock/munmap of locked pages, or vfio_lock_acct(-npage) when a DMA mapping goes."""
        self.locked_pages = max(self.locked_pages - pages, 0)


@dataclass
class Allocation:
    mapping: mmap.mmap
    view: memoryview
    vaddr: int
    size: int
    pfns: list[int]
    region: MemoryRegion
    locked: bool = False
    fd: int | None = None  # the memfd behind a shared allocation


class HostRAM:
    """The simulated machine's RAM: virtual allocations, their frames, and physical access."""

    def __init__(self, scattered: bool = True, locked_vm: LockedMemoryAccount | None = None) -> None:
        self.scattered = scattered
        if locked_vm is None:
            locked_vm = LockedMemoryAccount(None, lambda: True)
        self.locked_vm = locked_vm
        self._next_pfn = FIRST_PFN
        self._by_vpage: dict[int, tuple[Allocation, int]] = {}
        self._by_pfn: dict[int, tuple[Allocation, int]] = {}
        self.allocations: dict[int, Allocation] = {}
        # frames whose number the process read from /proc/self/pagemap: the only host memory a
        # driver can have handed to a device by physical address
        self.revealed: set[int] = set()

    def allocate(self, size: int, lock: bool = False, shared: bool = False) -> Allocation:
        """Page-aligned anonymous memory of `size` bytes rounded up to whole pages; with `lock`,
        mlock'ed (counted in `locked_vm`, ENOMEM past RLIMIT_MEMLOCK); with `shared`, the pages of
        a real memfd (mm/memfd.c memfd_create) mapped MAP_SHARED, its fd in `Allocation.fd`."""
        if size <= 0:
            raise OSError(22, "allocation size must be positive")
        pages = -(-size // PAGE_SIZE)
        if lock:
            account = self.locked_vm
            if account.limit_pages == 0 and not account.capable():
                # mm/mlock.c can_do_mlock: a zero RLIMIT_MEMLOCK without CAP_IPC_LOCK is EPERM
                raise OSError(errno.EPERM, "mlock with RLIMIT_MEMLOCK 0 and no CAP_IPC_LOCK")
            account.charge(pages, "mlock")
        fd = None
        if shared:
            fd = os.memfd_create("gpuhal-mock-dma", os.MFD_CLOEXEC)
            os.ftruncate(fd, pages * PAGE_SIZE)
            mapping = mmap.mmap(fd, pages * PAGE_SIZE, flags=mmap.MAP_SHARED)
        else:
            mapping = mmap.mmap(-1, pages * PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        view = memoryview(mapping)
        vaddr = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
        first = self._next_pfn
        self._next_pfn += pages + 1  # one unmapped frame between allocations catches overruns
        pfns = list(range(first, first + pages))
        if self.scattered:
            pfns.reverse()
        region = MemoryRegion(view, addr=vaddr, owner=mapping)
        alloc = Allocation(mapping, view, vaddr, pages * PAGE_SIZE, pfns, region, locked=lock, fd=fd)
        for page, pfn in enumerate(pfns):
            self._by_vpage[vaddr // PAGE_SIZE + page] = (alloc, page)
            self._by_pfn[pfn] = (alloc, page)
        self.allocations[vaddr] = alloc
        return alloc

    def free(self, vaddr: int) -> None:
        alloc = self.allocations.pop(vaddr, None)
        if alloc is None:
            raise OSError(22, f"no allocation at {vaddr:#x}")
        if alloc.locked:
            self.locked_vm.uncharge(len(alloc.pfns))
        for page, pfn in enumerate(alloc.pfns):
            self._by_vpage.pop(vaddr // PAGE_SIZE + page, None)
            self._by_pfn.pop(pfn, None)
            self.revealed.discard(pfn)
        alloc.region.release()
        alloc.view.release()
        try:
            alloc.mapping.close()
        except BufferError:
            log.debug("allocation at %#x still has views; unmapped when they go", vaddr)
        if alloc.fd is not None:
            os.close(alloc.fd)
            alloc.fd = None

    def pfn_of_vaddr(self, vaddr: int) -> int | None:
        found = self._by_vpage.get(vaddr // PAGE_SIZE)
        if found is None:
            return None
        alloc, page = found
        return alloc.pfns[page]

    def user_view(self, vaddr: int, size: int) -> memoryview | None:
        """The process memory at virtual `vaddr` for `size` bytes, what a driver's copy_from_user /
        copy_to_user reach, or None (the kernel's EFAULT) when it is not all inside one allocation."""
        found = self._by_vpage.get(vaddr // PAGE_SIZE)
        if found is None or size < 0:
            return None
        alloc, _ = found
        start = vaddr - alloc.vaddr
        if start + size > alloc.size:
            return None
        return alloc.view[start:start + size]

    def vaddr_range_mapped(self, vaddr: int, size: int) -> bool:
        first = vaddr // PAGE_SIZE
        last = (vaddr + size - 1) // PAGE_SIZE
        return all(page in self._by_vpage for page in range(first, last + 1))

    def dma_owner(self, phys: int) -> str | None:
        """Why a device write to physical `phys` lands outside memory the program set aside for
        DMA (None: it is such memory, mlock'ed and its frame read from pagemap)."""
        found = self._by_pfn.get(phys // PAGE_SIZE)
        if found is None:
            return "not RAM of this program (another program's or the kernel's page, or none)"
        alloc, _ = found
        if not alloc.locked:
            return "a page that is not locked (it may move or be swapped out under the device)"
        if phys // PAGE_SIZE not in self.revealed:
            return "a page whose physical address the program never read from pagemap"
        return None

    def _page(self, phys: int) -> tuple[memoryview, int] | None:
        found = self._by_pfn.get(phys // PAGE_SIZE)
        if found is None:
            return None
        alloc, page = found
        return alloc.view, page * PAGE_SIZE + phys % PAGE_SIZE

    def read(self, phys: int, n: int) -> bytes | None:
        """Bytes at physical address `phys`, or None if any of it is not RAM."""
        out = bytearray()
        while n:
            located = self._page(phys)
            if located is None:
                return None
            view, offset = located
            chunk = min(n, PAGE_SIZE - phys % PAGE_SIZE)
            out += view[offset:offset + chunk]
            phys += chunk
            n -= chunk
        return bytes(out)

    def write(self, phys: int, data: bytes) -> bool:
        """Store `data` at physical `phys`; False (nothing written) if any of it is not RAM."""
        pos = 0
        spans = []
        while pos < len(data):
            located = self._page(phys + pos)
            if located is None:
                return False
            chunk = min(len(data) - pos, PAGE_SIZE - (phys + pos) % PAGE_SIZE)
            spans.append((located, pos, chunk))
            pos += chunk
        for (view, offset), start, chunk in spans:
            view[offset:offset + chunk] = data[start:start + chunk]
        return True
