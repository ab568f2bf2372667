"""The GART window: host memory (hal DMA buffers) mapped into VMID 0 for the driver's engines.

amdgpu gives the kernel's own GPU mappings of system memory a window of the MC address space, the
GART, outside the FB range: gmc_v11_0.c gmc_v11_0_vram_gtt_location places it with
AMDGPU_GART_PLACEMENT_HIGH (amdgpu_gmc.c amdgpu_gmc_gart_location): `gart_size` bytes (512 MiB by
default: gmc_v11_0_mc_init with amdgpu_gart_size -1), ending at the top of the MC space below the
hole, the start aligned down to 4 GiB, and the size cut to the larger gap beside VRAM when it does
not fit. amdgpu fills a flat table there (amdgpu_gart_bind); here VMID 0 is the GMC block's
four-level table (drivers.am.gmc), so the window is a range of that table's addresses.

`GART` owns the window's addresses: a TLSF allocator over [start, end] hands each mapping a VA,
`map(target)` writes the pages' bus addresses (IOMMU-aware: hal's DMA buffers give bus addresses,
which the IOMMU translates) through `gmc.map(0, ...)`, and `unmap(mapping)` clears them through
`gmc.unmap`, which invalidates VMID 0's TLBs on every enabled hub before the VA is reused.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

from drivers.vm.pagetable import READ_WRITE, PageFlags
from drivers.vm.tlsf import GPU_PAGE_SIZE, TLSFAllocator
from hal.errors import InvalidArgument

log = logging.getLogger(__name__)

# gmc_v11_0.c gmc_v11_0_mc_init: amdgpu_gart_size == -1 gives a 512 MiB GART
GART_SIZE = 512 << 20
# amdgpu_gmc.c amdgpu_gmc_gart_location: "align the GART base on a 4GB boundary as well"
GART_ALIGNMENT = 1 << 32


def gart_location(fb_start: int, fb_end: int, gart_size: int, max_mc_address: int) -> tuple[int, int]:
    """(start, end) of the GART with AMDGPU_GART_PLACEMENT_HIGH (amdgpu_gmc_gart_location)."""
    if gart_size <= 0 or gart_size % GPU_PAGE_SIZE:
        raise InvalidArgument(f"GART size {gart_size:#x} must be a positive multiple of {GPU_PAGE_SIZE}")
    room_below = fb_start
    above_vram = -(-(fb_end + 1) // GART_ALIGNMENT) * GART_ALIGNMENT
    room_above = max(max_mc_address + 1 - above_vram, 0)
    if gart_size > max(room_below, room_above):
        log.warning("limiting GART to %#x bytes", max(room_below, room_above))
        gart_size = max(room_below, room_above)
    start = (max_mc_address - gart_size + 1) & ~(GART_ALIGNMENT - 1)
    return start, start + gart_size - 1


@dataclasses.dataclass(frozen=True)
class GARTMapping:
    """Host pages at GPU address `va` (VMID 0) for `size` bytes; `target` is what was mapped."""

    va: int
    size: int
    target: object

    def address_of(self, offset: int) -> int:
        """The GPU address of byte `offset` of the mapped memory."""
        if not 0 <= offset < self.size:
            raise InvalidArgument(f"offset {offset:#x} is outside the {self.size:#x}-byte GART mapping")
        return self.va + offset


class GART:
    """The VMID 0 window for host memory (see the module docstring)."""

    def __init__(self, gmc, size: int = GART_SIZE) -> None:
        self.gmc = gmc
        self.start, self.end = gart_location(gmc.fb_start, gmc.fb_end, size, gmc.max_mc_address)
        self.size = self.end - self.start + 1
        self._addresses = TLSFAllocator(self.start, self.size, name="GART")
        self._mappings: dict[int, GARTMapping] = {}

    def map(self, target, flags: PageFlags = READ_WRITE) -> GARTMapping:
        """Map a hal DMA buffer (its pages' bus addresses) or a sequence of 4 KiB page bus addresses
        at a free VA of the window; returns the mapping (`va`, `size`, `address_of(offset)`)."""
        pages: Sequence[int] = getattr(target, "bus_addresses", target)
        if not pages:
            raise InvalidArgument("GART: nothing to map (no pages)")
        size = len(pages) * GPU_PAGE_SIZE
        va = self._addresses.alloc(size)
        try:
            self.gmc.map(0, va, list(pages), flags)
        except BaseException:
            self._addresses.free(va)
            raise
        mapping = GARTMapping(va, size, target)
        self._mappings[va] = mapping
        return mapping

    def unmap(self, mapping: GARTMapping) -> None:
        """Clear the mapping's entries (the GMC invalidates VMID 0's TLBs), then free its VAs."""
        if self._mappings.get(mapping.va) is not mapping:
            raise InvalidArgument(f"GART: {mapping.va:#x} is not a live mapping of this window")
        self.gmc.unmap(0, mapping.va, mapping.size)
        del self._mappings[mapping.va]
        self._addresses.free(mapping.va)

    def unmap_all(self) -> None:
        """Unmap every live mapping (hw_fini); every one is tried, the first failure is raised."""
        failure: BaseException | None = None
        for mapping in list(self._mappings.values()):
            try:
                self.unmap(mapping)
            except Exception as exc:  # noqa: BLE001 - each is tried, the first is raised
                failure = failure or exc
                self._mappings.pop(mapping.va, None)
                self._addresses.free(mapping.va)
        if failure is not None:
            raise failure

    def mappings(self) -> list[GARTMapping]:
        return sorted(self._mappings.values(), key=lambda mapping: mapping.va)

    def contains(self, address: int) -> bool:
        return self.start <= address <= self.end
