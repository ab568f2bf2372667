"""A generic multi-level GPU page-table builder, written through a hal Region.

What a generation's page tables look like (levels, entry encodings, fragment field) is a
`PageTableFormat` (drivers/vm/amd_gfx11.py is one); where the tables live is a `TableMemory`
(VRAM behind a BAR, or a DMA buffer in host memory). `PageTable` builds and edits the tree:

- `map(va, pa, size, flags, system)` maps a physically contiguous range, `map_pages(va, pages, ...)`
  a list of per-page bus addresses (a DMA buffer's pages, possibly discontiguous). Every leaf is
  the largest page the format offers where virtual and physical addresses and the remaining size
  allow it (1 GiB, 2 MiB, else 4 KiB), and each entry's fragment field covers the largest aligned,
  physically contiguous run it belongs to.
- `unmap(va, size)` removes any mapped range; a mapping cut in part is rewritten for what remains
  (huge leaves split, fragments recomputed so no entry claims an unmapped neighbour). Tables left
  empty are freed, after the `on_invalidate(va, size)` hook (TLB invalidation) has run.
- Overlapping maps and unmaps of unmapped addresses raise InvalidArgument and change nothing.
- Writes are batched: every table touched by one call is written once, as one `Region.write` of its
  changed span (a new table in full, so its unused entries are the format's invalid value).
  Leaf tables are written before the directories that point to them. `stats` counts entries,
  write calls and bytes.
- `walk(va)` reads the tables back from the Region (not from the builder's own copy) and decodes
  them: what the GPU would see.

The builder keeps a copy of every table it wrote, so it never reads device memory to edit it.
"""
from __future__ import annotations

import bisect
import enum
import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Sequence

from drivers.vm.tlsf import GPU_PAGE_SIZE, TLSFAllocator
from hal.errors import InvalidArgument
from hal.region import Region

ENTRY_BYTES = 8  # every level of the formats served here holds 64-bit entries


class PageFlags(enum.IntFlag):
    """Access and caching wanted for a mapping; each format turns them into its own bits."""

    READ = 1
    WRITE = 2
    EXECUTE = 4
    UNCACHED = 8  # coherent with the host, bypassing GPU caches (MTYPE UC on AMD)


READ_WRITE = PageFlags.READ | PageFlags.WRITE


class EntryKind(enum.Enum):
    INVALID = "invalid"
    TABLE = "table"
    LEAF = "leaf"


@dataclass(frozen=True)
class DecodedEntry:
    """One table entry as the format reads it."""

    kind: EntryKind
    address: int = 0
    system: bool = False
    flags: PageFlags = PageFlags(0)
    fragment: int = 0
    raw: int = 0


@dataclass(frozen=True)
class LevelFormat:
    """One level: virtual-address bits [shift, shift + bits) index it; `leaf` when an entry there
    may map a page of 1 << shift bytes (huge pages above the last level)."""

    name: str
    shift: int
    bits: int
    leaf: bool

    @property
    def entries(self) -> int:
        return 1 << self.bits

    @property
    def page_size(self) -> int:
        return 1 << self.shift

    @property
    def table_bytes(self) -> int:
        return self.entries * ENTRY_BYTES


class PageTableFormat(ABC):
    """How one GPU generation encodes its page tables. `levels` runs from the root to the last
    level; `max_fragment` is the largest fragment field value (log2 of 4 KiB pages)."""

    name: str
    levels: tuple[LevelFormat, ...]
    max_fragment: int
    table_alignment: int = GPU_PAGE_SIZE

    @property
    def va_bits(self) -> int:
        root = self.levels[0]
        return root.shift + root.bits

    @abstractmethod
    def invalid_entry(self, level: int) -> int:
        """The value of an unmapped entry at `level` (index into `levels`)."""

    @abstractmethod
    def encode_table(self, level: int, table_address: int, table_system: bool) -> int:
        """An entry at `level` pointing to the next level's table at `table_address`."""

    @abstractmethod
    def encode_leaf(self, level: int, address: int, flags: PageFlags, system: bool,
                    fragment: int) -> int:
        """An entry at `level` mapping the page at `address` (huge when `level` is not the last)."""

    def encode_leaves(self, level: int, address: int, count: int, flags: PageFlags,
                      system: bool, fragment: int) -> list[int]:
        """`count` leaves for consecutive pages from `address` (formats override to go faster)."""
        step = self.levels[level].page_size
        return [self.encode_leaf(level, address + index * step, flags, system, fragment)
                for index in range(count)]

    @abstractmethod
    def decode(self, level: int, raw: int) -> DecodedEntry:
        """What the GPU reads from `raw` at `level`."""


class TableMemory(ABC):
    """Where page-table pages live. `region` is the CPU's window onto them; `system` says they are
    host memory (directory entries then say so)."""

    region: Region
    system: bool

    @abstractmethod
    def alloc(self, size: int, alignment: int) -> tuple[int, int]:
        """A zero-or-garbage table page: (device address, offset in `region`)."""

    @abstractmethod
    def free(self, address: int) -> None:
        """Give back the page at device `address`."""

    @abstractmethod
    def offset_of(self, address: int) -> int:
        """The `region` offset of device `address` (raises InvalidArgument outside the memory)."""


class RegionTableMemory(TableMemory):
    """Tables in a physically contiguous Region: VRAM behind a BAR (device address `base` at
    offset 0), or a bytearray in tests. Pages come from `allocator` (device addresses)."""

    def __init__(self, region: Region, allocator: TLSFAllocator, *, base: int = 0,
                 system: bool = False) -> None:
        self.region = region
        self.allocator = allocator
        self.base = base
        self.system = system

    def alloc(self, size: int, alignment: int) -> tuple[int, int]:
        address = self.allocator.alloc(size, alignment)
        return address, self.offset_of(address)

    def free(self, address: int) -> None:
        self.allocator.free(address)

    def offset_of(self, address: int) -> int:
        offset = address - self.base
        if not 0 <= offset < self.region.size:
            raise InvalidArgument(f"page-table address {address:#x} is outside the table memory "
                                  f"[{self.base:#x}, {self.base + self.region.size:#x})")
        return offset


class DmaTableMemory(TableMemory):
    """Tables in a DMA buffer (hal DMABuffer: `region`, `bus_addresses` per 4 KiB page): each
    table fits one page, so discontiguous pages are fine. Directory entries say SYSTEM."""

    def __init__(self, buffer) -> None:
        self.buffer = buffer
        self.region = buffer.region
        self.system = True
        self._allocator = TLSFAllocator(0, buffer.size, name="page-table DMA buffer")
        self._offsets: dict[int, int] = {}

    def alloc(self, size: int, alignment: int) -> tuple[int, int]:
        if size > GPU_PAGE_SIZE or alignment > GPU_PAGE_SIZE:
            raise InvalidArgument(f"a {size:#x}-byte table aligned to {alignment:#x} does not fit "
                                  "one page of a DMA buffer; put such tables in VRAM")
        offset = self._allocator.alloc(GPU_PAGE_SIZE)
        address = self.buffer.bus_address_of(offset)
        self._offsets[address] = offset
        return address, offset

    def free(self, address: int) -> None:
        self._allocator.free(self._offsets.pop(address))

    def offset_of(self, address: int) -> int:
        page = address - address % GPU_PAGE_SIZE
        offset = self._offsets.get(page)
        if offset is None:
            raise InvalidArgument(f"page-table address {address:#x} is not a table in this buffer")
        return offset + address - page


@dataclass
class WriteStats:
    """What the builder wrote: `entries_changed` (entries given a new value by map/unmap, in
    tables that stay in use), `entries_written` (all entries in the writes, new tables in full),
    `write_calls`, `bytes`."""

    entries_changed: int = 0
    entries_written: int = 0
    write_calls: int = 0
    bytes: int = 0
    tables_allocated: int = 0
    tables_freed: int = 0

    def reset(self) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, 0)


@dataclass(frozen=True)
class Translation:
    """The result of `walk(va)`: the physical `address` of `va` and the leaf that maps it."""

    va: int
    address: int
    page_size: int
    level: int
    system: bool
    flags: PageFlags
    fragment: int
    raw: int
    path: tuple[int, ...]  # the raw entry read at each level, root first


@dataclass(frozen=True)
class Mapping:
    """One map call's range: contiguous runs as (offset in the mapping, physical address, bytes)."""

    va: int
    size: int
    flags: PageFlags
    system: bool
    runs: tuple[tuple[int, int, int], ...]

    @property
    def end(self) -> int:
        return self.va + self.size

    def clipped(self, start: int, end: int) -> list[tuple[int, int, int]]:
        """Runs of [start, end) as (va, physical address, bytes)."""
        pieces = []
        for offset, address, length in self.runs:
            run_start = self.va + offset
            low = max(run_start, start)
            high = min(run_start + length, end)
            if low < high:
                pieces.append((low, address + low - run_start, high - low))
        return pieces


class _Table:
    __slots__ = ("level", "address", "offset", "entries", "children", "used", "live")

    def __init__(self, level: int, address: int, offset: int, entries: list[int]) -> None:
        self.level = level
        self.address = address
        self.offset = offset
        self.entries = entries
        self.children: dict[int, _Table] = {}
        self.used = 0  # entries that are valid (tables or leaves)
        self.live = True


class _Batch:
    """The tables one call changed, with the span of entries to write in each."""

    def __init__(self) -> None:
        self.spans: dict[int, list] = {}  # id(table) -> [table, first, end, entries changed]
        self.freed: list[_Table] = []

    def touch(self, table: _Table, first: int, end: int) -> None:
        span = self.spans.get(id(table))
        if span is None:
            self.spans[id(table)] = [table, first, end, end - first]
            return
        span[1] = min(span[1], first)
        span[2] = max(span[2], end)
        span[3] += end - first


InvalidateHook = Callable[[int, int], None]


class PageTable:
    """One GPU virtual address space: a tree of tables in `memory`, encoded by `format`.

    `huge_pages` (default on) lets leaves sit above the last level; `fragments` (default on) sets
    the fragment field for aligned contiguous runs. `on_invalidate(va, size)` runs after each map
    or unmap has been written and before freed tables are given back (flush TLBs there).
    """

    def __init__(self, format: PageTableFormat, memory: TableMemory, *, huge_pages: bool = True,
                 fragments: bool = True, on_invalidate: InvalidateHook | None = None) -> None:
        self.format = format
        self.memory = memory
        self.huge_pages = huge_pages
        self.fragments = fragments
        self.on_invalidate = on_invalidate
        self.stats = WriteStats()
        self._levels = format.levels
        self._last = len(format.levels) - 1
        self._invalid = [format.invalid_entry(level) for level in range(len(format.levels))]
        self._starts: list[int] = []
        self._mappings: dict[int, Mapping] = {}
        batch = _Batch()
        self.root = self._new_table(0, batch)
        self._flush(batch)
        self.stats.reset()

    # -- what the GPU's VM registers need ------------------------------------------------------
    @property
    def root_address(self) -> int:
        """Device address of the root table (the page-table base register points here)."""
        return self.root.address

    @property
    def depth(self) -> int:
        """Levels below the root (amdgpu programs this as the context's PAGE_TABLE_DEPTH)."""
        return self._last

    @property
    def va_size(self) -> int:
        return 1 << self.format.va_bits

    # -- map / unmap ---------------------------------------------------------------------------
    def map(self, va: int, pa: int, size: int, flags: PageFlags = READ_WRITE,
            system: bool = False) -> Mapping:
        """Map [va, va + size) to physically contiguous [pa, pa + size)."""
        self._check_range(va, size)
        self._check_aligned("physical address", pa)
        return self._add(Mapping(va, size, PageFlags(flags), system, ((0, pa, size),)))

    def map_pages(self, va: int, pages: Sequence[int], flags: PageFlags = READ_WRITE,
                  system: bool = True) -> Mapping:
        """Map consecutive 4 KiB pages from `va` to the addresses in `pages` (a DMA buffer's
        `bus_addresses`); contiguous stretches get huge pages and fragments like `map`."""
        size = len(pages) * GPU_PAGE_SIZE
        self._check_range(va, size)
        runs = []
        run_offset = 0
        run_address = None
        run_bytes = 0
        for index, address in enumerate(pages):
            self._check_aligned(f"page {index} address", address)
            if run_address is not None and address == run_address + run_bytes:
                run_bytes += GPU_PAGE_SIZE
                continue
            if run_address is not None:
                runs.append((run_offset, run_address, run_bytes))
            run_offset = index * GPU_PAGE_SIZE
            run_address = address
            run_bytes = GPU_PAGE_SIZE
        runs.append((run_offset, run_address, run_bytes))
        return self._add(Mapping(va, size, PageFlags(flags), system, tuple(runs)))

    def unmap(self, va: int, size: int) -> None:
        """Unmap [va, va + size); every byte of it must be mapped."""
        self._check_range(va, size)
        end = va + size
        hit = self._mappings_in(va, end)
        covered = va
        for mapping in hit:
            if mapping.va > covered:
                break
            covered = max(covered, mapping.end)
        if covered < end:
            raise InvalidArgument(f"unmap [{va:#x}, {end:#x}): [{covered:#x}, "
                                  f"{self._next_start(covered, end):#x}) is not mapped; nothing "
                                  "was changed")
        batch = _Batch()
        for mapping in hit:
            self._forget(mapping)
            self._clear(self.root, 0, mapping.va, mapping.end, batch)
        for mapping in hit:
            for part_start, part_end in ((mapping.va, va), (end, mapping.end)):
                if part_start < part_end:
                    self._remember(self._rebase(mapping, part_start, part_end), batch)
        self._finish(batch, va, size)

    def close(self) -> None:
        """Unmap everything and free every table, the root included."""
        if self._mappings:
            batch = _Batch()
            for mapping in list(self._mappings.values()):
                self._forget(mapping)
            self._clear(self.root, 0, 0, self.va_size, batch)
            self._finish(batch, 0, self.va_size)
        self.memory.free(self.root.address)
        self.root.live = False
        self.stats.tables_freed += 1

    def mappings(self) -> list[Mapping]:
        return [self._mappings[start] for start in self._starts]

    # -- reading back --------------------------------------------------------------------------
    def walk(self, va: int) -> Translation | None:
        """Decode the entries the GPU would read for `va` from the Region; None when unmapped."""
        if not 0 <= va < self.va_size:
            raise InvalidArgument(f"virtual address {va:#x} is outside the {self.format.va_bits}-bit "
                                  "address space")
        region = self.memory.region
        offset = self.root.offset
        path = []
        for level, level_format in enumerate(self._levels):
            index = (va >> level_format.shift) & (level_format.entries - 1)
            raw = region.read64(offset + index * ENTRY_BYTES)
            path.append(raw)
            entry = self.format.decode(level, raw)
            if entry.kind is EntryKind.INVALID:
                return None
            if entry.kind is EntryKind.LEAF:
                page = level_format.page_size
                return Translation(va, entry.address + (va & (page - 1)), page, level,
                                   entry.system, entry.flags, entry.fragment, raw, tuple(path))
            offset = self.memory.offset_of(entry.address)
        raise InvalidArgument(f"{va:#x}: the last level holds a table pointer, not a page")

    # -- internals -----------------------------------------------------------------------------
    def _check_range(self, va: int, size: int) -> None:
        self._check_aligned("virtual address", va)
        if not isinstance(size, int) or size <= 0 or size % GPU_PAGE_SIZE:
            raise InvalidArgument(f"size {size!r} must be a positive multiple of {GPU_PAGE_SIZE:#x}")
        if va + size > self.va_size:
            raise InvalidArgument(f"[{va:#x}, {va + size:#x}) runs past the {self.format.va_bits}-bit "
                                  "address space")

    @staticmethod
    def _check_aligned(what: str, address: int) -> None:
        if not isinstance(address, int) or address < 0 or address % GPU_PAGE_SIZE:
            raise InvalidArgument(f"{what} {address!r} must be a non-negative multiple of "
                                  f"{GPU_PAGE_SIZE:#x}")

    def _mappings_in(self, start: int, end: int) -> list[Mapping]:
        index = bisect.bisect_right(self._starts, start) - 1
        if index < 0 or self._mappings[self._starts[index]].end <= start:
            index += 1
        found = []
        while index < len(self._starts) and self._starts[index] < end:
            found.append(self._mappings[self._starts[index]])
            index += 1
        return found

    def _next_start(self, address: int, end: int) -> int:
        index = bisect.bisect_right(self._starts, address)
        if index < len(self._starts):
            return min(self._starts[index], end)
        return end

    def _add(self, mapping: Mapping) -> Mapping:
        overlap = self._mappings_in(mapping.va, mapping.end)
        if overlap:
            other = overlap[0]
            raise InvalidArgument(f"map [{mapping.va:#x}, {mapping.end:#x}) overlaps the mapping "
                                  f"[{other.va:#x}, {other.end:#x}); unmap it first")
        batch = _Batch()
        self._remember(mapping, batch)
        self._finish(batch, mapping.va, mapping.size)
        return mapping

    def _remember(self, mapping: Mapping, batch: _Batch) -> None:
        for va, address, length in mapping.clipped(mapping.va, mapping.end):
            self._map_run(va, address, length, mapping.flags, mapping.system, batch)
        bisect.insort(self._starts, mapping.va)
        self._mappings[mapping.va] = mapping

    def _forget(self, mapping: Mapping) -> None:
        del self._mappings[mapping.va]
        del self._starts[bisect.bisect_left(self._starts, mapping.va)]

    @staticmethod
    def _rebase(mapping: Mapping, start: int, end: int) -> Mapping:
        runs = tuple((va - start, address, length)
                     for va, address, length in mapping.clipped(start, end))
        return Mapping(start, end - start, mapping.flags, mapping.system, runs)

    def _fragment(self, va: int, pa: int, end: int) -> int:
        """log2 of the 4 KiB pages in the largest aligned contiguous block starting at `va`."""
        if not self.fragments:
            return 0
        pages = (va | pa) >> 12
        aligned = (pages & -pages).bit_length() - 1 if pages else self.format.max_fragment
        fits = ((end - va) >> 12).bit_length() - 1
        return min(aligned, fits, self.format.max_fragment)

    def _map_run(self, va: int, pa: int, length: int, flags: PageFlags, system: bool,
                 batch: _Batch) -> None:
        end = va + length
        levels = self._levels
        while va < end:
            fragment = self._fragment(va, pa, end)
            block_end = va + (GPU_PAGE_SIZE << fragment) if self.fragments else end
            while va < block_end:
                level = self._leaf_level(va, pa, block_end - va)
                level_format = levels[level]
                table = self._table_for(va, level, batch)
                index = (va >> level_format.shift) & (level_format.entries - 1)
                count = min((block_end - va) >> level_format.shift, level_format.entries - index)
                entries = table.entries
                for slot in range(index, index + count):
                    if entries[slot] != self._invalid[level] or slot in table.children:
                        raise InvalidArgument(f"page-table entry for {va:#x} at "
                                              f"{level_format.name} is already in use")
                entries[index:index + count] = self.format.encode_leaves(
                    level, pa, count, flags, system, fragment)
                table.used += count
                batch.touch(table, index, index + count)
                va += count << level_format.shift
                pa += count << level_format.shift

    def _leaf_level(self, va: int, pa: int, room: int) -> int:
        if self.huge_pages:
            for level, level_format in enumerate(self._levels):
                page = level_format.page_size
                if level_format.leaf and page <= room and not (va | pa) & (page - 1):
                    return level
        return self._last

    def _table_for(self, va: int, level: int, batch: _Batch) -> _Table:
        table = self.root
        for parent_level in range(level):
            level_format = self._levels[parent_level]
            index = (va >> level_format.shift) & (level_format.entries - 1)
            child = table.children.get(index)
            if child is None:
                if table.entries[index] != self._invalid[parent_level]:
                    raise InvalidArgument(f"{va:#x}: a {level_format.name} leaf already maps it")
                child = self._new_table(parent_level + 1, batch)
                table.children[index] = child
                table.entries[index] = self.format.encode_table(parent_level, child.address,
                                                                self.memory.system)
                table.used += 1
                batch.touch(table, index, index + 1)
            table = child
        return table

    def _new_table(self, level: int, batch: _Batch) -> _Table:
        level_format = self._levels[level]
        address, offset = self.memory.alloc(level_format.table_bytes, self.format.table_alignment)
        table = _Table(level, address, offset, [self._invalid[level]] * level_format.entries)
        batch.spans[id(table)] = [table, 0, level_format.entries, 0]
        self.stats.tables_allocated += 1
        return table

    def _clear(self, table: _Table, base_va: int, start: int, end: int, batch: _Batch) -> None:
        """Invalidate every entry of `table` (covering from `base_va`) inside [start, end)."""
        level = table.level
        level_format = self._levels[level]
        shift = level_format.shift
        first = (max(start, base_va) - base_va) >> shift
        last = (min(end, base_va + (level_format.entries << shift)) - 1 - base_va) >> shift
        invalid = self._invalid[level]
        entries = table.entries
        for index in range(first, last + 1):
            child = table.children.get(index)
            entry_va = base_va + (index << shift)
            if child is not None:
                if start <= entry_va and entry_va + (1 << shift) <= end:
                    self._drop(child, batch)  # wholly inside: no entry of it needs reading
                else:
                    self._clear(child, entry_va, start, end, batch)
                    if child.used:
                        continue
                del table.children[index]
                child.live = False
                batch.freed.append(child)
            elif entries[index] == invalid:
                continue
            elif entry_va < start or entry_va + (1 << shift) > end:
                raise InvalidArgument(f"leaf at {entry_va:#x} ({level_format.name}) straddles the "
                                      f"range [{start:#x}, {end:#x}) being cleared")
            entries[index] = invalid
            table.used -= 1
            batch.touch(table, index, index + 1)

    def _drop(self, table: _Table, batch: _Batch) -> None:
        """Free the tables below `table` (which its parent is about to invalidate)."""
        for child in table.children.values():
            self._drop(child, batch)
            child.live = False
            batch.freed.append(child)
        table.children.clear()
        table.used = 0

    def _finish(self, batch: _Batch, va: int, size: int) -> None:
        self.stats.entries_changed += sum(span[3] for span in batch.spans.values() if span[0].live)
        self._flush(batch)
        if self.on_invalidate is not None:
            self.on_invalidate(va, size)
        for table in batch.freed:
            self.memory.free(table.address)
            self.stats.tables_freed += 1

    def _flush(self, batch: _Batch) -> None:
        region = self.memory.region
        spans = sorted(batch.spans.values(), key=lambda span: -span[0].level)
        for table, first, end, _ in spans:
            if not table.live:
                continue
            count = end - first
            data = struct.pack(f"<{count}Q", *table.entries[first:end])
            region.write(table.offset + first * ENTRY_BYTES, data)
            self.stats.entries_written += count
            self.stats.write_calls += 1
            self.stats.bytes += len(data)
