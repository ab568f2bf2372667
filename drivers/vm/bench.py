"""The `vm` benchmark: map and unmap 1, 8 and 64 GiB of VRAM-physical range in GFX11 page tables.

Registered with `python -m tools.bench` as NAME. Page tables live in a plain bytearray
MemoryRegion with a TLSF allocator handing out their pages, so the figures measure the builder's
Python work and the entries it writes, not a bus. For each size it reports the entries given a new
value (`entries_changed`), the entries in all writes (new tables are written whole),
`write_calls`, seconds (best of a few runs), and entries changed per 2 MiB of range (the target is
at most one). A 1 GiB run with huge pages off shows what 4 KiB PTEs would cost. No figure is
asserted.
"""
from __future__ import annotations

import time

from drivers.vm.amd_gfx11 import GFX11
from drivers.vm.pagetable import PageTable, RegionTableMemory
from drivers.vm.tlsf import TLSFAllocator
from hal.region import MemoryRegion

NAME = "vm"

GIB = 1 << 30
TWO_MIB = 2 << 20
SIZES_GIB = (1, 8, 64)
TABLE_MEMORY = 8 << 20  # enough page-table pages for 1 GiB of 4 KiB PTEs (513 tables)
VA_BASE = 1 << 40  # a 1 GiB-aligned virtual address well inside the 48-bit space
REPEATS = 5


def _table(huge_pages: bool = True) -> PageTable:
    region = MemoryRegion(bytearray(TABLE_MEMORY))
    allocator = TLSFAllocator(0, TABLE_MEMORY, name="page tables")
    return PageTable(GFX11, RegionTableMemory(region, allocator), huge_pages=huge_pages)


def _measure(size: int, huge_pages: bool, repeats: int) -> dict[str, float]:
    best_map = float("inf")
    best_unmap = float("inf")
    table = _table(huge_pages)
    for _ in range(repeats):
        table.stats.reset()
        start = time.perf_counter()
        table.map(VA_BASE, 0, size)
        best_map = min(best_map, time.perf_counter() - start)
        mapped = (table.stats.entries_changed, table.stats.entries_written, table.stats.write_calls)
        table.stats.reset()
        start = time.perf_counter()
        table.unmap(VA_BASE, size)
        best_unmap = min(best_unmap, time.perf_counter() - start)
        unmapped = (table.stats.entries_changed, table.stats.entries_written,
                    table.stats.write_calls)
    table.close()
    units = size / TWO_MIB
    figures = {}
    for what, seconds, (changed, written, calls) in (("map", best_map, mapped),
                                                     ("unmap", best_unmap, unmapped)):
        figures[f"{what}_seconds"] = seconds
        figures[f"{what}_entries_changed"] = changed
        figures[f"{what}_entries_written"] = written
        figures[f"{what}_write_calls"] = calls
        figures[f"{what}_entries_changed_per_2mib"] = changed / units
    return figures


def run(repeats: int = REPEATS) -> dict[str, float]:
    figures: dict[str, float] = {}
    for size_gib in SIZES_GIB:
        for key, value in _measure(size_gib * GIB, True, repeats).items():
            figures[f"{size_gib}gib_{key}"] = value
    for key, value in _measure(GIB, False, 1).items():
        figures[f"1gib_4k_pages_{key}"] = value
    return figures
