"""drivers.vm.pagetable with the GFX11 format: random map/unmap sequences against a reference dict
model (huge pages where aligned, fragments checked in the entries), the 4 KiB / 2 MiB / 1 GiB
boundaries, page lists from DMA buffers, batching, and the typed errors."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vm_checks import Page, check_against_model, read_tree

from drivers.vm.amd_gfx11 import GFX11, PDB1, PDB0, PTB
from drivers.vm.pagetable import (DmaTableMemory, PageFlags, PageTable, READ_WRITE,
                                  RegionTableMemory)
from drivers.vm.tlsf import TLSFAllocator
from hal.backend import DMABuffer
from hal.errors import InvalidArgument
from hal.region import MemoryRegion

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
PAGE = 4 * KIB
TABLE_MEMORY = 8 * MIB


class CountingRegion(MemoryRegion):
    """A MemoryRegion that counts write() calls, to check batching from the outside."""

    def __init__(self, size: int) -> None:
        super().__init__(bytearray(size))
        self.writes = 0

    def write(self, off: int, data) -> None:
        self.writes += 1
        super().write(off, data)


def make_table(**options) -> PageTable:
    region = CountingRegion(TABLE_MEMORY)
    memory = RegionTableMemory(region, TLSFAllocator(0, TABLE_MEMORY, name="page tables"))
    return PageTable(GFX11, memory, **options)


FLAG_CHOICES = [READ_WRITE, PageFlags.READ, READ_WRITE | PageFlags.EXECUTE,
                READ_WRITE | PageFlags.UNCACHED]


def _run_sequence(data, unit: int, window_units: int, va_base: int, options: dict) -> None:
    table = make_table(**options)
    model: dict[int, Page] = {}
    calls = data.draw(st.integers(1, 12))
    for call in range(calls):
        start = data.draw(st.integers(0, window_units - 1))
        count = data.draw(st.integers(1, min(window_units - start, window_units // 2)))
        va = va_base + start * unit
        size = count * unit
        if data.draw(st.booleans()):
            flags = data.draw(st.sampled_from(FLAG_CHOICES))
            system = data.draw(st.booleans())
            layout = data.draw(st.sampled_from(["aligned", "shifted", "pages"]))
            overlap = any(va + offset in model for offset in range(0, size, unit))
            if layout == "pages":
                # a few physically contiguous stretches at random places (a DMA buffer's pages)
                # (whole units each, so the model can stay one entry per unit)
                pages = []
                while len(pages) < size // PAGE:
                    stretch = data.draw(st.integers(1, (size - len(pages) * PAGE) // unit))
                    first = data.draw(st.integers(0, 1 << 20)) * unit
                    pages += [first + index * PAGE for index in range(stretch * unit // PAGE)]
                attempt = lambda: table.map_pages(va, pages, flags, system)  # noqa: E731
                addresses = [pages[offset // PAGE] for offset in range(0, size, unit)]
            else:
                pa = data.draw(st.integers(0, 1 << 14)) * GIB
                if layout == "shifted":
                    pa += data.draw(st.integers(1, 511)) * unit
                else:
                    pa += va % GIB
                attempt = lambda: table.map(va, pa, size, flags, system)  # noqa: E731
                addresses = [pa + offset for offset in range(0, size, unit)]
            if overlap:
                before = read_tree(table)
                with pytest.raises(InvalidArgument, match="overlaps"):
                    attempt()
                assert read_tree(table) == before
                continue
            attempt()
            for index, address in enumerate(addresses):
                model[va + index * unit] = Page(address, int(flags), system, call)
        else:
            covered = all(va + offset in model for offset in range(0, size, unit))
            if not covered:
                before = read_tree(table)
                with pytest.raises(InvalidArgument, match="not mapped"):
                    table.unmap(va, size)
                assert read_tree(table) == before
                continue
            table.unmap(va, size)
            for offset in range(0, size, unit):
                del model[va + offset]
        check_against_model(table, model, unit)
    for mapping in table.mappings():
        table.unmap(mapping.va, mapping.size)
    leaves, tables = read_tree(table)
    assert leaves == [] and len(tables) == 1
    assert table.stats.tables_allocated == table.stats.tables_freed


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), options=st.sampled_from([{}, {"fragments": False}, {"huge_pages": False}]))
def test_random_4k_sequences_across_a_2m_boundary_match_the_model(data, options):
    # 6 MiB of 4 KiB pages straddling a 2 MiB boundary and the 1 GiB boundary below it
    _run_sequence(data, PAGE, 1536, GIB - 2 * MIB, options)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_2m_sequences_across_1g_boundaries_match_the_model(data):
    # 3 GiB in 2 MiB steps from half a GiB below a 1 GiB boundary: 1 GiB leaves where aligned
    _run_sequence(data, 2 * MIB, 1536, 3 * GIB + GIB // 2, {})


def test_aligned_64g_uses_1g_leaves_with_the_largest_fragments():
    table = make_table()
    table.map(0, 0, 64 * GIB)
    leaves, tables = read_tree(table)
    assert len(leaves) == 64 and {leaf.level for leaf in leaves} == {PDB1}
    assert {leaf.fragment for leaf in leaves} == {24}  # 64 GiB = 2**24 pages
    assert len(tables) == 2  # the root and one PDB1
    assert table.stats.entries_changed == 65


def test_unaligned_range_climbs_4k_2m_1g_and_back_down():
    table = make_table()
    va = GIB - 2 * MIB - 8 * KIB
    size = 8 * KIB + 2 * MIB + GIB + 2 * MIB + 4 * KIB
    table.map(va, va + 5 * GIB, size)
    leaves, _ = read_tree(table)
    by_level = [(leaf.level, leaf.va) for leaf in leaves]
    assert (PTB, va) in by_level and (PTB, va + 4 * KIB) in by_level
    assert (PDB0, GIB - 2 * MIB) in by_level
    assert (PDB1, GIB) in by_level
    assert (PDB0, 2 * GIB) in by_level
    assert (PTB, 2 * GIB + 2 * MIB) in by_level
    model = {va + offset: Page(va + 5 * GIB + offset, int(READ_WRITE), False, 0)
             for offset in range(0, size, PAGE)}
    check_against_model(table, model)


def test_physical_misalignment_forces_small_pages_and_small_fragments():
    table = make_table()
    table.map(0, 64 * KIB, 4 * MIB)  # virtually 2 MiB aligned, physically only 64 KiB
    leaves, _ = read_tree(table)
    assert {leaf.level for leaf in leaves} == {PTB}
    assert {leaf.fragment for leaf in leaves} == {4}  # 64 KiB = 16 pages


def test_walk_reads_what_the_gpu_sees():
    table = make_table()
    table.map(2 * GIB, 8 * GIB, GIB, READ_WRITE | PageFlags.EXECUTE)
    found = table.walk(2 * GIB + 0x12345678)
    assert found.address == 8 * GIB + 0x12345678
    assert found.page_size == GIB and found.level == PDB1
    assert found.flags == READ_WRITE | PageFlags.EXECUTE
    assert len(found.path) == 2
    assert table.walk(GIB) is None
    with pytest.raises(InvalidArgument):
        table.walk(1 << 48)


def test_partial_unmap_splits_a_huge_page_and_shrinks_fragments():
    table = make_table()
    table.map(0, 0, 2 * MIB)
    table.unmap(MIB, 4 * KIB)
    model = {offset: Page(offset, int(READ_WRITE), False, 0)
             for offset in range(0, 2 * MIB, PAGE) if offset != MIB}
    leaves = check_against_model(table, model)
    assert {leaf.level for leaf in leaves} == {PTB}
    assert max(leaf.fragment for leaf in leaves) == 8  # the 1 MiB below the hole
    assert table.walk(MIB) is None


def test_system_pages_from_a_dma_buffer_are_system_snooped_with_per_page_addresses():
    table = make_table()
    pages = [0x7_0000_0000 + index * PAGE for index in range(8)]
    pages[3] = 0x1234_5000  # the IOMMU gave one page elsewhere
    table.map_pages(16 * MIB, pages)
    for index, address in enumerate(pages):
        found = table.walk(16 * MIB + index * PAGE + 0x10)
        assert found.address == address + 0x10 and found.system
        assert found.raw & 0b110 == 0b110  # AMDGPU_PTE_SYSTEM | AMDGPU_PTE_SNOOPED
    fragments = [table.walk(16 * MIB + index * PAGE).fragment for index in range(8)]
    assert fragments == [1, 1, 0, 0, 2, 2, 2, 2]


def test_map_pages_accepts_a_dma_buffer_and_tables_can_live_in_one():
    backing = bytearray(64 * KIB)
    buffer = DMABuffer(MemoryRegion(backing), len(backing),
                       [0x9000_0000 + ((index * 7) % 16) * PAGE for index in range(16)], False)
    table = PageTable(GFX11, DmaTableMemory(buffer))
    table.map(0, 0, 4 * KIB)
    root = int.from_bytes(backing[table.root.offset:table.root.offset + 8], "little")
    assert root & 0b111 == 0b111  # a PDE in host memory: VALID | SYSTEM | SNOOPED
    assert table.walk(0).address == 0
    table.map_pages(GIB, buffer.bus_addresses)
    assert table.walk(GIB + 5 * PAGE).address == buffer.bus_addresses[5]


def test_each_table_is_written_once_per_call_leaves_before_directories():
    table = make_table()
    region = table.memory.region
    order = []
    original = region.write

    def recording_write(off, data):
        order.append(off // PAGE)
        original(off, data)

    region.write = recording_write
    table.map(GIB, 0, 4 * MIB + 16 * KIB)  # two 2 MiB leaves in a PDB0 and four PTEs in a PTB
    assert table.stats.write_calls == len(order) == 4  # PTB, PDB0, PDB1 (new), root
    root_page = table.root.offset // PAGE
    assert order[-1] == root_page
    assert table.stats.entries_changed == 2 + 4 + 1 + 1 + 1  # leaves, PDEs to PTB/PDB0/PDB1
    before = table.stats.write_calls
    table.map(GIB + 8 * MIB, 8 * MIB, 64 * KIB)  # a new PTB under the same PDB0
    assert table.stats.write_calls - before == 2


def test_overlapping_map_and_unmap_of_unmapped_are_typed_errors():
    table = make_table()
    table.map(0, 0, 2 * MIB)
    with pytest.raises(InvalidArgument, match="overlaps the mapping \\[0x0, 0x200000\\)"):
        table.map(MIB, 0, 2 * MIB)
    with pytest.raises(InvalidArgument, match="\\[0x200000, 0x201000\\) is not mapped"):
        table.unmap(0, 2 * MIB + 4 * KIB)
    assert table.walk(0).page_size == 2 * MIB
    with pytest.raises(InvalidArgument, match="multiple"):
        table.map(4 * MIB, 100, 4 * KIB)
    with pytest.raises(InvalidArgument, match="address space"):
        table.map((1 << 48) - 4 * KIB, 0, 8 * KIB)


def test_unmap_frees_empty_tables_after_the_invalidate_hook():
    freed_before_hook = []
    table = make_table()
    allocator = table.memory.allocator

    def invalidate(va, size):
        freed_before_hook.append(allocator.stats().allocations)

    table.on_invalidate = invalidate
    table.map(GIB, 0, 4 * KIB)
    assert allocator.stats().allocations == 4
    table.unmap(GIB, 4 * KIB)
    assert freed_before_hook == [4, 4]  # still held while the TLBs are invalidated
    assert allocator.stats().allocations == 1  # only the root is left
    table.close()
    assert allocator.stats().allocations == 0
