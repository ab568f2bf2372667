"""A TLSF (two-level segregated fit) allocator over a physical address range (VRAM, an aperture).

Free blocks sit in size classes: the first level is the power of two below the size, the second
splits each power-of-two range into `SECOND_LEVEL_COUNT` equal parts. Two bitmaps say which classes
hold a block, so finding a fitting block, splitting it and merging a freed block with its free
neighbours are each a fixed number of dictionary and bit operations, whatever the number of blocks.

Sizes and alignments are whole `granule`s (4 KiB by default, the GPU page). An alignment larger
than the granule (2 MiB and 1 GiB for huge pages) is honoured by searching a class that is sure to
hold an aligned fit; the padding in front of the aligned start goes back to the free lists, so
aligned big blocks cost no memory. Only when that search fails does the allocator look at every
free block (a tight fit the size classes could not prove), so "out of memory" is only ever said
when no free block can hold the request.

Errors: `InvalidArgument` for a bad size, alignment, double free or an address that is not an
allocation; `OutOfMemory` (hal.errors) with the bytes asked for, the bytes free and the largest
free block.
"""
from __future__ import annotations

from dataclasses import dataclass

from hal.errors import InvalidArgument, OutOfMemory

SECOND_LEVEL_BITS = 4  # 16 classes per power of two: a block is at most 1/16 larger than asked
SECOND_LEVEL_COUNT = 1 << SECOND_LEVEL_BITS
GPU_PAGE_SIZE = 4096  # the GPU's base page (amdgpu.h: AMDGPU_GPU_PAGE_SIZE)
HUGE_2M = 2 << 20
HUGE_1G = 1 << 30


def _is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def _lowest_bit(value: int) -> int:
    return (value & -value).bit_length() - 1


@dataclass(frozen=True)
class AllocatorStats:
    """A snapshot: bytes in all, free, used, the largest free block, free blocks, allocations.

    `fragmentation` is 1 - largest_free / free: 0 when all free memory is one block."""

    total: int
    free: int
    used: int
    largest_free: int
    free_blocks: int
    allocations: int

    @property
    def fragmentation(self) -> float:
        if self.free == 0:
            return 0.0
        return 1.0 - self.largest_free / self.free


class TLSFAllocator:
    """Allocates aligned blocks of [base, base + size). Not thread safe: one owner at a time."""

    def __init__(self, base: int, size: int, *, granule: int = GPU_PAGE_SIZE,
                 name: str = "memory") -> None:
        if not _is_power_of_two(granule):
            raise InvalidArgument(f"{name}: granule {granule:#x} is not a power of two")
        if base < 0 or base % granule or size <= 0 or size % granule:
            raise InvalidArgument(f"{name}: range base {base:#x} size {size:#x} must be positive "
                                  f"whole granules of {granule:#x} bytes")
        self.name = name
        self.base = base
        self.size = size
        self.granule = granule
        self._shift = granule.bit_length() - 1
        levels = (size >> self._shift).bit_length()
        self._first_bitmap = 0
        self._second_bitmaps = [0] * levels
        # class index (first * SECOND_LEVEL_COUNT + second) -> {block start: block units}
        self._classes: list[dict[int, int]] = [{} for _ in range(levels * SECOND_LEVEL_COUNT)]
        self._free_by_start: dict[int, int] = {}  # start -> units
        self._free_by_end: dict[int, int] = {}  # end (exclusive) -> start
        self._allocated: dict[int, int] = {}  # start -> units
        self._free_units = 0
        self._insert(base, size >> self._shift)

    # -- size classes ------------------------------------------------------------------------
    @staticmethod
    def _class_of(units: int) -> tuple[int, int]:
        first = units.bit_length() - 1
        if first < SECOND_LEVEL_BITS:
            return first, units - (1 << first)
        second = (units >> (first - SECOND_LEVEL_BITS)) & (SECOND_LEVEL_COUNT - 1)
        return first, second

    def _insert(self, start: int, units: int) -> None:
        first, second = self._class_of(units)
        self._classes[first * SECOND_LEVEL_COUNT + second][start] = units
        self._second_bitmaps[first] |= 1 << second
        self._first_bitmap |= 1 << first
        self._free_by_start[start] = units
        self._free_by_end[start + (units << self._shift)] = start
        self._free_units += units

    def _remove(self, start: int, units: int) -> None:
        first, second = self._class_of(units)
        members = self._classes[first * SECOND_LEVEL_COUNT + second]
        del members[start]
        if not members:
            self._second_bitmaps[first] &= ~(1 << second)
            if not self._second_bitmaps[first]:
                self._first_bitmap &= ~(1 << first)
        del self._free_by_start[start]
        del self._free_by_end[start + (units << self._shift)]
        self._free_units -= units

    def _find_class_at_least(self, units: int) -> dict[int, int] | None:
        """A class whose every block holds `units` (the size rounded up to the next class)."""
        first = units.bit_length() - 1
        if first >= SECOND_LEVEL_BITS:
            units += (1 << (first - SECOND_LEVEL_BITS)) - 1
        first, second = self._class_of(units)
        if first >= len(self._second_bitmaps):
            return None
        seconds = self._second_bitmaps[first] & (-1 << second)
        if not seconds:
            firsts = self._first_bitmap & (-1 << (first + 1))
            if not firsts:
                return None
            first = _lowest_bit(firsts)
            seconds = self._second_bitmaps[first]
        second = _lowest_bit(seconds)
        return self._classes[first * SECOND_LEVEL_COUNT + second]

    # -- public API --------------------------------------------------------------------------
    def alloc(self, size: int, alignment: int | None = None) -> int:
        """Start address of a new block of at least `size` bytes aligned to `alignment`."""
        if alignment is None:
            alignment = self.granule
        units = self._checked_units(size, alignment)
        alignment = max(alignment, self.granule)
        align_units = alignment >> self._shift
        members = self._find_class_at_least(units + align_units - 1)
        if members:
            start = next(iter(members))
        else:
            start = self._tightest_aligned_fit(units, alignment)
            if start is None:
                self._out_of_memory(size, alignment)
        return self._carve(start, units, alignment)

    def alloc_for_pages(self, size: int) -> int:
        """A block aligned for the largest GPU page that fits in it (1 GiB, 2 MiB, else 4 KiB),
        falling back to smaller alignments before giving up, so big buffers map with huge pages."""
        for alignment in (HUGE_1G, HUGE_2M):
            if size >= alignment and alignment > self.granule:
                try:
                    return self.alloc(size, alignment)
                except OutOfMemory:
                    continue
        return self.alloc(size)

    def reserve(self, start: int, size: int) -> int:
        """Take [start, start + size) (firmware, tables at fixed places); it must be free."""
        units = self._checked_units(size, self.granule)
        if start % self.granule or not self.base <= start < self.base + self.size:
            raise InvalidArgument(f"{self.name}: cannot reserve {start:#x}: not a granule-aligned "
                                  f"address in [{self.base:#x}, {self.base + self.size:#x})")
        end = start + (units << self._shift)
        for block, block_units in self._free_by_start.items():
            if block <= start and end <= block + (block_units << self._shift):
                self._remove(block, block_units)
                self._split_around(block, block_units, start, units)
                return start
        raise InvalidArgument(f"{self.name}: [{start:#x}, {end:#x}) is not wholly free; "
                              "free what overlaps it first")

    def free(self, start: int) -> None:
        """Return the block that `alloc` or `reserve` gave at `start`; merges free neighbours."""
        units = self._allocated.pop(start, None)
        if units is None:
            self._bad_free(start)
        end = start + (units << self._shift)
        before = self._free_by_end.get(start)
        if before is not None:
            before_units = self._free_by_start[before]
            self._remove(before, before_units)
            units += before_units
            start = before
        after_units = self._free_by_start.get(end)
        if after_units is not None:
            self._remove(end, after_units)
            units += after_units
        self._insert(start, units)

    def size_of(self, start: int) -> int:
        """Bytes of the allocation at `start` (whole granules)."""
        units = self._allocated.get(start)
        if units is None:
            raise InvalidArgument(f"{self.name}: {start:#x} is not the start of an allocation")
        return units << self._shift

    @property
    def free_bytes(self) -> int:
        return self._free_units << self._shift

    @property
    def largest_free(self) -> int:
        if not self._first_bitmap:
            return 0
        first = self._first_bitmap.bit_length() - 1
        second = self._second_bitmaps[first].bit_length() - 1
        members = self._classes[first * SECOND_LEVEL_COUNT + second]
        return max(members.values()) << self._shift

    def stats(self) -> AllocatorStats:
        free = self.free_bytes
        return AllocatorStats(total=self.size, free=free, used=self.size - free,
                              largest_free=self.largest_free, free_blocks=len(self._free_by_start),
                              allocations=len(self._allocated))

    def free_blocks(self) -> list[tuple[int, int]]:
        """Every free block as (start, bytes), by address (for checks and status tools)."""
        return sorted((start, units << self._shift) for start, units in self._free_by_start.items())

    def allocations(self) -> list[tuple[int, int]]:
        """Every live allocation as (start, bytes), by address."""
        return sorted((start, units << self._shift) for start, units in self._allocated.items())

    # -- helpers -----------------------------------------------------------------------------
    def _checked_units(self, size: int, alignment: int) -> int:
        if not isinstance(size, int) or size <= 0:
            raise InvalidArgument(f"{self.name}: allocation size must be a positive int, got {size!r}")
        if not _is_power_of_two(alignment):
            raise InvalidArgument(f"{self.name}: alignment {alignment!r} is not a power of two")
        return (size + self.granule - 1) >> self._shift

    def _carve(self, start: int, units: int, alignment: int) -> int:
        block_units = self._free_by_start[start]
        self._remove(start, block_units)
        aligned = -(-start // alignment) * alignment
        self._split_around(start, block_units, aligned, units)
        return aligned

    def _split_around(self, block: int, block_units: int, start: int, units: int) -> None:
        """Allocate [start, +units) out of the removed free block; free what is left either side."""
        head_units = (start - block) >> self._shift
        tail_units = block_units - head_units - units
        if head_units:
            self._insert(block, head_units)
        if tail_units:
            self._insert(start + (units << self._shift), tail_units)
        self._allocated[start] = units

    def _tightest_aligned_fit(self, units: int, alignment: int) -> int | None:
        """The smallest free block that holds an aligned fit (the slow path, only near full)."""
        best = None
        best_units = 0
        for block, block_units in self._free_by_start.items():
            if block_units < units or (best is not None and block_units >= best_units):
                continue
            aligned = -(-block // alignment) * alignment
            if aligned + (units << self._shift) <= block + (block_units << self._shift):
                best = block
                best_units = block_units
        return best

    def _out_of_memory(self, size: int, alignment: int) -> None:
        free = self.free_bytes
        largest = self.largest_free
        raise OutOfMemory(
            f"{self.name}: out of memory: asked for {size:#x} bytes aligned to {alignment:#x}; "
            f"{free:#x} bytes free, largest free block {largest:#x} bytes "
            f"({len(self._free_by_start)} free blocks); free something or ask for less",
            requested=size, alignment=alignment, free=free, largest_free=largest)

    def _bad_free(self, start: int) -> None:
        if not isinstance(start, int) or not self.base <= start < self.base + self.size:
            raise InvalidArgument(f"{self.name}: free of {start!r}: outside "
                                  f"[{self.base:#x}, {self.base + self.size:#x})")
        if start in self._free_by_start or self._free_block_containing(start) is not None:
            raise InvalidArgument(f"{self.name}: double free of {start:#x}: it is already free")
        raise InvalidArgument(f"{self.name}: free of {start:#x}: not the start of an allocation "
                              "(pass the address alloc() returned)")

    def _free_block_containing(self, address: int) -> int | None:
        for block, block_units in self._free_by_start.items():
            if block <= address < block + (block_units << self._shift):
                return block
        return None
