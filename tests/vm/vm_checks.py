"""Checks shared by the page-table tests: read a whole tree back from its Region, and compare it
with a reference dict model (one entry per page)."""
from __future__ import annotations

from dataclasses import dataclass

from drivers.vm.pagetable import ENTRY_BYTES, EntryKind, PageTable

PAGE = 4096


@dataclass(frozen=True)
class Leaf:
    va: int
    size: int
    pa: int
    level: int
    system: bool
    flags: int
    fragment: int
    raw: int


@dataclass(frozen=True)
class Page:
    """The reference model's view of one page: where it goes and which map call put it there."""

    pa: int
    flags: int
    system: bool
    mapping: int


def read_tree(table: PageTable) -> tuple[list[Leaf], list[tuple[int, int, int]]]:
    """Every leaf, and every table as (address, level, valid entries), read from the Region."""
    fmt = table.format
    region = table.memory.region
    leaves: list[Leaf] = []
    tables: list[tuple[int, int, int]] = []

    def visit(address: int, level: int, base_va: int) -> None:
        level_format = fmt.levels[level]
        offset = table.memory.offset_of(address)
        raw_table = region.read(offset, level_format.entries * ENTRY_BYTES)
        valid = 0
        for index in range(level_format.entries):
            raw = int.from_bytes(raw_table[index * ENTRY_BYTES:(index + 1) * ENTRY_BYTES], "little")
            entry = fmt.decode(level, raw)
            if entry.kind is EntryKind.INVALID:
                assert raw == fmt.invalid_entry(level), f"odd invalid entry {raw:#x}"
                continue
            valid += 1
            va = base_va + (index << level_format.shift)
            if entry.kind is EntryKind.TABLE:
                visit(entry.address, level + 1, va)
            else:
                leaves.append(Leaf(va, level_format.page_size, entry.address, level, entry.system,
                                   int(entry.flags), entry.fragment, raw))
        tables.append((address, level, valid))

    visit(table.root_address, 0, 0)
    return leaves, tables


def check_against_model(table: PageTable, model: dict[int, Page], unit: int = PAGE) -> list[Leaf]:
    """The tree maps exactly the model's pages (in `unit`-sized pages), with the largest leaves
    alignment allows, sound and maximal fragments, and no empty tables."""
    leaves, tables = read_tree(table)
    seen: dict[int, Page] = {}
    for leaf in leaves:
        assert leaf.size >= unit
        for offset in range(0, leaf.size, unit):
            seen[leaf.va + offset] = (leaf.pa + offset, leaf.flags, leaf.system)
    assert seen.keys() == model.keys()
    for va, page in model.items():
        assert seen[va] == (page.pa, page.flags, page.system), hex(va)
    for address, level, valid in tables:
        assert valid or level == 0, f"empty table at {address:#x} left behind"
    assert table.stats.tables_allocated - table.stats.tables_freed >= len(tables) - 1
    levels = table.format.levels
    memo: dict[tuple[int, int], bool] = {}

    def contiguous(start: int, size: int) -> bool:
        key = (start, size)
        if key not in memo:
            memo[key] = _one_contiguous_block(model, start, size, unit)
        return memo[key]

    leaf_sizes = sorted(level.page_size for level in levels if level.leaf)
    for leaf in leaves:
        bigger = [size for size in leaf_sizes if size > leaf.size]
        if bigger and table.huge_pages:
            assert not contiguous(leaf.va & ~(bigger[0] - 1), bigger[0]), \
                f"{leaf.va:#x}: a {bigger[0]:#x} leaf would fit"
        if table.fragments:
            block = PAGE << leaf.fragment
            assert contiguous(leaf.va & ~(block - 1), block), \
                f"{leaf.va:#x}: fragment {leaf.fragment} claims unmapped or discontiguous pages"
            if leaf.fragment < table.format.max_fragment:
                assert not contiguous(leaf.va & ~(2 * block - 1), 2 * block), \
                    f"{leaf.va:#x}: fragment {leaf.fragment} could be larger"
    return leaves


def _one_contiguous_block(model: dict[int, Page], start: int, size: int, unit: int) -> bool:
    """[start, start + size) is all mapped by one map call, physically contiguous and aligned."""
    first = model.get(start)
    if first is None or first.pa % size:
        return False
    for offset in range(unit, size, unit):
        page = model.get(start + offset)
        if page is None or page.mapping != first.mapping or page.pa != first.pa + offset:
            return False
        if page.flags != first.flags or page.system != first.system:
            return False
    return True
