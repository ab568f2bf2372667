"""VRAM for the AM driver: where VRAM sits in the GPU's address space and who owns which part.

`Memory(device)` is made by AMDevice right after discovery, before any block's sw_init:
- `fb_base`: the MC (GPU physical) address of VRAM offset 0, from MMHUB's
  MMMC_VM_FB_LOCATION_BASE as the IFWI leaves it (mmhub_v3_0.c mmhub_v3_0_get_fb_location: the
  FB_BASE field, in 16 MiB units); `fb_top` likewise from FB_LOCATION_TOP (inclusive);
  `vram_base_offset` from MMMC_VM_FB_OFFSET (mmhub_v3_0_get_mc_fb_offset), what a PTE's address of
  a VRAM page is relative to (gmc_v11_0.c gmc_v11_0_vram_gtt_location: vm_manager.vram_base_offset);
- the reserved ranges amdgpu keeps out of its VRAM manager (amdgpu_ttm.c amdgpu_ttm_init):
  the stolen VGA memory at offset 0 (amdgpu_gmc.c amdgpu_gmc_get_vbios_allocations), and the
  firmware-reserved block at the top that holds the discovery table, the TMR
  (amdgpu_ttm.c amdgpu_ttm_reserve_tmr: DISCOVERY_TMR_OFFSET when no vbios table says more);
- allocation by `alloc_vram(size, alignment, purpose)` -> `VRAMBuffer` and `free_vram(buffer)`,
  over two TLSF allocators (drivers.vm.tlsf): the CPU-visible part (inside BAR0) and the rest.
  Buffers go to the visible part first, so their `view` is BAR0 memory (zero-copy); a buffer past
  BAR0 still has a `view`, through the MM_INDEX/MM_DATA window (slow: for small-BAR systems).

Not read, for want of a table or registers in this project: the vbios firmware-reserved region
(atomfirmware vram_usagebyfirmware; a vbios is not parsed) and the pre-OS scanout size from the
display registers (gmc_v11_0_get_vbios_fb_size with VGA mode off): the VGA reservation is always
AMDGPU_VBIOS_VGA_ALLOCATION, what amdgpu reserves while VGA mode is on.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from drivers.am import discovery
from drivers.vm.tlsf import GPU_PAGE_SIZE, AllocatorStats, TLSFAllocator
from hal.errors import InvalidArgument, OutOfMemory
from hal.region import CallbackRegion, Region

if TYPE_CHECKING:
    from drivers.am.device import AMDevice

log = logging.getLogger(__name__)

# mmhub_v3_0.c mmhub_v3_0_get_fb_location / _get_mc_fb_offset: FB registers count 16 MiB units
FB_UNIT_SHIFT = 24
# amdgpu.h AMDGPU_VBIOS_VGA_ALLOCATION: 8 MiB for the VGA emulator and 1 MiB for the pre-OS FB
VBIOS_VGA_ALLOCATION = 9 << 20
# amdgpu_gmc.c amdgpu_gmc_get_vbios_allocations: no stolen memory when less than 8 MiB would be left
MIN_VRAM_AFTER_STOLEN = 8 << 20


@dataclasses.dataclass(frozen=True)
class Reservation:
    """A VRAM range kept from the allocator: why, where (byte offset) and how big."""

    name: str
    offset: int
    size: int


class VRAMBuffer:
    """A VRAM allocation: `offset` (bytes from VRAM start), `size`, `mc_address` (fb_base + offset,
    what the GPU's system aperture and the MC see), `view` (a hal Region of exactly the buffer)."""

    __slots__ = ("offset", "size", "mc_address", "view", "purpose", "_memory")

    def __init__(self, memory: "Memory", offset: int, size: int, view: Region, purpose: str) -> None:
        self._memory = memory
        self.offset = offset
        self.size = size
        self.mc_address = memory.fb_base + offset
        self.view = view
        self.purpose = purpose

    @property
    def cpu_visible(self) -> bool:
        """Whether the whole buffer is inside BAR0 (its view is plain BAR memory)."""
        return self.offset + self.size <= self._memory.visible_size

    def __repr__(self) -> str:
        return (f"<VRAMBuffer {self.purpose!r} offset {self.offset:#x} size {self.size:#x} "
                f"mc {self.mc_address:#x}>")


class Memory:
    """The device's VRAM: location, reservations and the allocator (see the module docstring)."""

    def __init__(self, device: "AMDevice") -> None:
        self.device = device
        self.vram_size = device.vram_size
        registers = device.registers
        base_register = registers.reg("MMHUB", "regMMMC_VM_FB_LOCATION_BASE")
        top_register = registers.reg("MMHUB", "regMMMC_VM_FB_LOCATION_TOP")
        self.fb_base = base_register.read_field("FB_BASE") << FB_UNIT_SHIFT
        # FB_LOCATION_TOP is inclusive: its 16 MiB unit is the last one of VRAM
        self.fb_top = ((top_register.read_field("FB_TOP") + 1) << FB_UNIT_SHIFT) - 1
        offset_register = registers.reg("MMHUB", "regMMMC_VM_FB_OFFSET")
        self.vram_base_offset = offset_register.read_field("FB_OFFSET") << FB_UNIT_SHIFT
        if self.fb_top < self.fb_base or self.fb_top - self.fb_base + 1 < self.vram_size:
            raise InvalidArgument(
                f"{device.pci.bdf}: MMHUB FB_LOCATION_BASE/TOP give the MC range "
                f"[{self.fb_base:#x}, {self.fb_top:#x}], smaller than the {self.vram_size:#x} bytes "
                "of VRAM: the IFWI did not set up the memory controller; reset the GPU")
        self.visible_size = min(device.vram_bar.size, self.vram_size)
        self.reservations = self._reservations()
        self._allocators = self._make_allocators()
        self._buffers: dict[int, VRAMBuffer] = {}
        self._held: list[tuple[int, int, str]] = []  # a previous owner's allocations (adopt)
        log.info("%s: VRAM at MC %#x-%#x, %#x bytes CPU-visible, reserved: %s", device.pci.bdf,
                 self.fb_base, self.fb_top, self.visible_size,
                 ", ".join(f"{r.name} {r.offset:#x}+{r.size:#x}" for r in self.reservations))

    # -- layout -----------------------------------------------------------------------------------
    def _reservations(self) -> list[Reservation]:
        size = self.vram_size
        # amdgpu_ttm.c amdgpu_ttm_reserve_tmr: without a vbios size, DISCOVERY_TMR_OFFSET at the top
        tmr = Reservation("firmware reserved (discovery table)", size - discovery.DISCOVERY_TMR_OFFSET,
                          discovery.DISCOVERY_TMR_OFFSET)
        out = []
        if size - VBIOS_VGA_ALLOCATION >= MIN_VRAM_AFTER_STOLEN:
            # amdgpu_ttm.c amdgpu_ttm_init: stolen_vga_memory at offset 0
            out.append(Reservation("stolen VGA memory", 0, VBIOS_VGA_ALLOCATION))
        out.append(tmr)
        return out

    def _make_allocators(self) -> list[TLSFAllocator]:
        low = max((r.offset + r.size for r in self.reservations if r.offset == 0), default=0)
        high = min(r.offset for r in self.reservations if r.offset > 0)
        ranges = [(low, min(self.visible_size, high), "visible VRAM"),
                  (max(low, self.visible_size), high, "VRAM past BAR0")]
        allocators = []
        for start, end, name in ranges:
            start = -(-start // GPU_PAGE_SIZE) * GPU_PAGE_SIZE
            end -= end % GPU_PAGE_SIZE
            if end > start:
                allocators.append(TLSFAllocator(start, end - start, name=name))
        if not allocators:
            raise InvalidArgument(f"{self.device.pci.bdf}: no VRAM is left after the reservations")
        return allocators

    # -- allocation --------------------------------------------------------------------------------
    def alloc_vram(self, size: int, alignment: int = GPU_PAGE_SIZE, purpose: str = "") -> VRAMBuffer:
        """A VRAM buffer of `size` bytes (rounded up to 4 KiB) at an `alignment`-aligned offset,
        CPU-visible when BAR0 has room. OutOfMemory names the purpose and what is free.
        While a previous owner's allocations are held (`adopt`), the first held one with this
        purpose, size and alignment is handed over in place."""
        for index, (offset, held_size, held_purpose) in enumerate(self._held):
            if held_purpose == purpose and held_size >= size and offset % alignment == 0:
                del self._held[index]
                return self._buffer(offset, held_size, purpose)
        for allocator in self._allocators:
            try:
                offset = allocator.alloc(size, alignment)
            except OutOfMemory:
                continue
            return self._buffer(offset, allocator.size_of(offset), purpose)
        free = sum(a.free_bytes for a in self._allocators)
        largest = max(a.largest_free for a in self._allocators)
        raise OutOfMemory(
            f"{self.device.pci.bdf}: out of VRAM for {purpose or 'a buffer'}: asked for {size:#x} bytes "
            f"aligned to {alignment:#x}; {free:#x} bytes free, largest free block {largest:#x}; "
            "free buffers or ask for less", requested=size, alignment=alignment, free=free,
            largest_free=largest)

    def reserve_vram(self, offset: int, size: int, purpose: str) -> VRAMBuffer:
        """Take [offset, offset + size) at a fixed place (amdgpu_bo_create_kernel_at); it must be free."""
        for allocator in self._allocators:
            if allocator.base <= offset < allocator.base + allocator.size:
                allocator.reserve(offset, size)
                return self._buffer(offset, allocator.size_of(offset), purpose)
        raise InvalidArgument(f"{self.device.pci.bdf}: VRAM offset {offset:#x} is reserved or past "
                              f"the end of VRAM ({self.vram_size:#x} bytes)")

    def adopt(self, allocations) -> None:
        """A warm attach: hold each (offset, size, purpose) a previous owner recorded, so that the
        blocks' allocations get their live structures back in place and nothing else lands on them."""
        for offset, size, purpose in allocations:
            for allocator in self._allocators:
                if allocator.base <= offset < allocator.base + allocator.size:
                    allocator.reserve(offset, size)
                    self._held.append((offset, size, purpose))
                    break
            else:
                raise InvalidArgument(f"{self.device.pci.bdf}: recorded allocation {purpose!r} at "
                                      f"{offset:#x} lies outside the allocatable VRAM")

    def held_size(self, purpose: str) -> int | None:
        """The size of the first held allocation with this purpose (see `adopt`), or None."""
        for _, size, held_purpose in self._held:
            if held_purpose == purpose:
                return size
        return None

    def end_adoption(self) -> list[tuple[int, int, str]]:
        """Free the held allocations no block claimed (their owner is gone); returns them."""
        left = self._held
        self._held = []
        for offset, _, _ in left:
            for allocator in self._allocators:
                if allocator.base <= offset < allocator.base + allocator.size:
                    allocator.free(offset)
        return left

    def reserve_fixed(self, offset: int, size: int, name: str) -> Region:
        """Keep [offset, offset + size) out of the allocator for the device's lifetime, listed in
        `reservations` like the stolen VGA memory (not a buffer); returns its view."""
        for allocator in self._allocators:
            if allocator.base <= offset < allocator.base + allocator.size:
                allocator.reserve(offset, size)
                self.reservations.append(Reservation(name, offset, size))
                return self._view(offset, size)
        raise InvalidArgument(f"{self.device.pci.bdf}: VRAM offset {offset:#x} is reserved or past "
                              f"the end of VRAM ({self.vram_size:#x} bytes)")

    def free_vram(self, buffer: VRAMBuffer) -> None:
        """Give `buffer` back. Freeing it twice, or a buffer of another device, is InvalidArgument."""
        if self._buffers.get(buffer.offset) is not buffer:
            raise InvalidArgument(f"{self.device.pci.bdf}: {buffer!r} is not a live buffer of this device "
                                  "(freed twice?)")
        del self._buffers[buffer.offset]
        for allocator in self._allocators:
            if allocator.base <= buffer.offset < allocator.base + allocator.size:
                allocator.free(buffer.offset)
                return

    def buffers(self) -> list[VRAMBuffer]:
        """The live buffers, by offset."""
        return [self._buffers[offset] for offset in sorted(self._buffers)]

    def stats(self) -> list[AllocatorStats]:
        """One snapshot per allocator: the CPU-visible part, then the part past BAR0."""
        return [allocator.stats() for allocator in self._allocators]

    def mc_address(self, offset: int) -> int:
        """The MC address of VRAM byte `offset`."""
        return self.fb_base + offset

    def _buffer(self, offset: int, size: int, purpose: str) -> VRAMBuffer:
        buffer = VRAMBuffer(self, offset, size, self._view(offset, size), purpose)
        self._buffers[offset] = buffer
        return buffer

    def _view(self, offset: int, size: int) -> Region:
        bar = self.device.vram_bar
        if offset + size <= bar.size:
            return bar.sub(offset, size)
        window = self.device.vram

        def read(off: int, n: int) -> bytes:
            return window.read(offset + off, n)

        def write(off: int, data: bytes) -> None:
            window.write(offset + off, data)

        return CallbackRegion(size, read, write)
