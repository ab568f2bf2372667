"""The `hal` benchmark: 32-bit register access rates through Regions, against raw memoryview loops.

Registered with `python -m tools.bench` as NAME. The "real mapping" is anonymous locked host memory
from the host seam (`hal.os.host().alloc_locked`), not a device BAR, so the figures measure the
Python access path, not PCIe latency. Each loop walks the same offsets; every rate is the best of a
few repetitions, and ratios compare paths measured in the same run. No figure is asserted.
"""
from __future__ import annotations

import time
from typing import Callable

from hal.os import host
from hal.region import MemoryRegion, Region, watch_all_ones

NAME = "hal"

WINDOW_BYTES = 64 * 1024  # a register window the size of a small MMIO BAR
ACCESSES = 100_000  # per timed loop
REPEATS = 5
MOCK_ACCESSES = 20_000  # the mock's callback path is slower; fewer accesses keep the run short
WORD_BYTES = 4


def _best_rate(loop: Callable[[], None], count: int, repeats: int = REPEATS) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        loop()
        best = min(best, time.perf_counter() - start)
    return count / best if best > 0 else float("inf")


def _offsets(count: int, window: int) -> list[int]:
    return [(index * WORD_BYTES) % window for index in range(count)]


def _region_rates(region: Region, offsets: list[int], prefix: str,
                  repeats: int = REPEATS) -> dict[str, float]:
    read32 = region.read32
    write32 = region.write32

    def reads() -> None:
        for offset in offsets:
            read32(offset)

    def writes() -> None:
        for offset in offsets:
            write32(offset, offset)

    return {
        f"{prefix}_read32_per_s": _best_rate(reads, len(offsets), repeats),
        f"{prefix}_write32_per_s": _best_rate(writes, len(offsets), repeats),
    }


def _raw_rates(words: memoryview, offsets: list[int]) -> dict[str, float]:
    indexes = [offset >> 2 for offset in offsets]

    def reads_by_index() -> None:
        for index in indexes:
            words[index]

    def writes_by_index() -> None:
        for index in indexes:
            words[index] = index

    def reads_by_offset() -> None:
        for offset in offsets:
            words[offset >> 2]

    return {
        "raw_memoryview_read32_per_s": _best_rate(reads_by_index, len(indexes)),
        "raw_memoryview_write32_per_s": _best_rate(writes_by_index, len(indexes)),
        "raw_memoryview_read32_from_byte_offset_per_s": _best_rate(reads_by_offset, len(offsets)),
    }


def run(mock_region_factory: Callable[[], Region] | None = None) -> dict[str, float]:
    """Figures (accesses per second and ratios). `mock_region_factory` builds the mock machine's
    callback region (hal does not import mockgpu; tools.bench passes it)."""
    seam = host()
    memory = seam.alloc_locked(WINDOW_BYTES)
    figures: dict[str, float] = {}
    try:
        region = memory.region
        if not isinstance(region, MemoryRegion):
            raise TypeError(f"the host seam returned {type(region).__name__}, not a MemoryRegion")
        offsets = _offsets(ACCESSES, region.size)
        figures.update(_raw_rates(region.u32, offsets))
        figures.update(_region_rates(region, offsets, "anon_mmap_region"))
        watched = watch_all_ones(region, lambda what: None)
        figures.update(_region_rates(watched, offsets, "anon_mmap_watched_bar_region"))
        words = region.u32

        def u32_reads() -> None:
            for offset in offsets:
                words[offset >> 2]

        figures["anon_mmap_region_u32_view_read32_per_s"] = _best_rate(u32_reads, len(offsets))
        raw_read = figures["raw_memoryview_read32_per_s"]
        raw_write = figures["raw_memoryview_write32_per_s"]
        figures["ratio_raw_over_region_read32"] = raw_read / figures["anon_mmap_region_read32_per_s"]
        figures["ratio_raw_over_region_write32"] = raw_write / figures["anon_mmap_region_write32_per_s"]
        watched_read = figures["anon_mmap_watched_bar_region_read32_per_s"]
        u32_view_read = figures["anon_mmap_region_u32_view_read32_per_s"]
        figures["ratio_raw_over_watched_bar_read32"] = raw_read / watched_read
        figures["ratio_raw_over_u32_view_read32"] = raw_read / u32_view_read
        figures["ratio_raw_from_byte_offset_over_u32_view_read32"] = (
            figures["raw_memoryview_read32_from_byte_offset_per_s"] / u32_view_read)
    finally:
        seam.free_locked(memory)
    if mock_region_factory is not None:
        mock_region = mock_region_factory()
        mock_offsets = _offsets(MOCK_ACCESSES, min(mock_region.size, WINDOW_BYTES))
        figures.update(_region_rates(mock_region, mock_offsets, "mock_callback_region", repeats=2))
        figures["ratio_raw_over_mock_callback_read32"] = (
            figures["raw_memoryview_read32_per_s"] / figures["mock_callback_region_read32_per_s"])
    return figures


if __name__ == "__main__":
    for name, value in run().items():
        print(f"{name:<48} {value:,.3f}")
