"""The IOVA allocator: hands out device-visible address ranges for VFIO DMA mappings.

First fit over a sorted free list inside the usable windows the IOMMU reports, with reserved
windows (the x86 MSI doorbell range) cut out. Allocations are page aligned; freeing coalesces.
"""
from __future__ import annotations

import bisect

from hal.errors import InvalidArgument

IOVA_PAGE = 4096  # the smallest IOMMU page on x86-64 and arm64 (VFIO_IOMMU_GET_INFO iova_pgsizes)
# arch/x86/include/asm/msidef.h (and iommu reserved regions): 0xfee00000-0xfeefffff is the MSI window
X86_MSI_WINDOW = (0xFEE00000, 0xFEF00000)
# start above the first MiB: some devices treat low addresses specially and it keeps 0 invalid
DEFAULT_IOVA_BASE = 1 << 20
DEFAULT_IOVA_LIMIT = 1 << 39  # a 39-bit window: every x86-64 IOMMU (3-level page tables) supports it


class IOVAAllocator:
    """Page-aligned IOVA ranges inside [(start, end), ...) windows, first fit."""

    def __init__(self, windows: list[tuple[int, int]] | None = None,
                 reserved: list[tuple[int, int]] | None = None) -> None:
        if windows is None:
            windows = [(DEFAULT_IOVA_BASE, DEFAULT_IOVA_LIMIT)]
        if reserved is None:
            reserved = [X86_MSI_WINDOW]
        free: list[tuple[int, int]] = []
        for start, end in windows:
            start = max(start, DEFAULT_IOVA_BASE)
            start = (start + IOVA_PAGE - 1) // IOVA_PAGE * IOVA_PAGE
            pieces = [(start, end)]
            for hole_start, hole_end in reserved:
                cut = []
                for piece_start, piece_end in pieces:
                    if hole_end <= piece_start or hole_start >= piece_end:
                        cut.append((piece_start, piece_end))
                        continue
                    if piece_start < hole_start:
                        cut.append((piece_start, hole_start))
                    if hole_end < piece_end:
                        cut.append((hole_end, piece_end))
                pieces = cut
            free.extend(piece for piece in pieces if piece[1] - piece[0] >= IOVA_PAGE)
        self._free = sorted(free)
        self._allocated: dict[int, int] = {}

    def allocate(self, size: int, alignment: int = IOVA_PAGE) -> int:
        if size <= 0:
            raise InvalidArgument(f"IOVA size must be positive, not {size}")
        if alignment < IOVA_PAGE or alignment & (alignment - 1):
            raise InvalidArgument(f"IOVA alignment {alignment:#x} is not a power of two >= {IOVA_PAGE:#x}")
        size = (size + IOVA_PAGE - 1) // IOVA_PAGE * IOVA_PAGE
        for position, (start, end) in enumerate(self._free):
            aligned = (start + alignment - 1) // alignment * alignment
            if aligned + size > end:
                continue
            del self._free[position]
            if aligned > start:
                bisect.insort(self._free, (start, aligned))
            if aligned + size < end:
                bisect.insort(self._free, (aligned + size, end))
            self._allocated[aligned] = size
            return aligned
        raise InvalidArgument(f"no free IOVA range of {size:#x} bytes left "
                              f"(free: {self.free_bytes:#x} bytes)")

    def free(self, iova: int) -> None:
        size = self._allocated.pop(iova, None)
        if size is None:
            raise InvalidArgument(f"IOVA {iova:#x} was not allocated")
        start, end = iova, iova + size
        position = bisect.bisect_left(self._free, (start, end))
        if position > 0 and self._free[position - 1][1] == start:
            position -= 1
            start = self._free[position][0]
            del self._free[position]
        if position < len(self._free) and self._free[position][0] == end:
            end = self._free[position][1]
            del self._free[position]
        bisect.insort(self._free, (start, end))

    @property
    def free_bytes(self) -> int:
        return sum(end - start for start, end in self._free)

    @property
    def allocated(self) -> dict[int, int]:
        return dict(self._allocated)
