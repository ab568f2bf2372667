"""drivers.vm.tlsf: the TLSF allocator against a reference model, its alignment, coalescing,
statistics and errors."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.vm.tlsf import HUGE_1G, HUGE_2M, TLSFAllocator
from hal.errors import InvalidArgument, OutOfMemory

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30


def _reference_gaps(base: int, size: int, live: dict[int, int]) -> list[tuple[int, int]]:
    gaps = []
    cursor = base
    for start in sorted(live):
        if start > cursor:
            gaps.append((cursor, start - cursor))
        cursor = start + live[start]
    if cursor < base + size:
        gaps.append((cursor, base + size - cursor))
    return gaps


def _fits_somewhere(gaps: list[tuple[int, int]], size: int, alignment: int) -> bool:
    for start, length in gaps:
        aligned = -(-start // alignment) * alignment
        if aligned + size <= start + length:
            return True
    return False


def _check_against_model(allocator: TLSFAllocator, live: dict[int, int]) -> None:
    assert allocator.allocations() == sorted(live.items())
    gaps = _reference_gaps(allocator.base, allocator.size, live)
    assert allocator.free_blocks() == gaps  # every free neighbour pair has been merged
    assert allocator.free_bytes == sum(length for _, length in gaps)
    assert allocator.largest_free == max((length for _, length in gaps), default=0)


operation = st.one_of(
    st.tuples(st.just("alloc"), st.integers(1, 3 * MIB),
              st.sampled_from([4 * KIB, 64 * KIB, 2 * MIB, 8 * MIB])),
    st.tuples(st.just("free"), st.integers(0, 1000), st.just(0)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base_pages=st.integers(0, 600), size_pages=st.integers(1, 8192),
       operations=st.lists(operation, max_size=60))
def test_random_alloc_free_matches_reference_model(base_pages, size_pages, operations):
    base = base_pages * 4 * KIB
    size = size_pages * 4 * KIB
    allocator = TLSFAllocator(base, size)
    live: dict[int, int] = {}
    for kind, amount, alignment in operations:
        if kind == "alloc":
            rounded = -(-amount // (4 * KIB)) * 4 * KIB
            gaps = _reference_gaps(base, size, live)
            possible = _fits_somewhere(gaps, rounded, alignment)
            try:
                start = allocator.alloc(amount, alignment)
            except OutOfMemory as error:
                assert not possible, f"out of memory although {rounded:#x}@{alignment:#x} fits"
                assert error.requested == amount
                assert error.free == sum(length for _, length in gaps)
                continue
            assert possible
            assert start % alignment == 0
            assert base <= start and start + rounded <= base + size
            for other, other_size in live.items():
                assert start + rounded <= other or other + other_size <= start
            live[start] = rounded
        elif live:
            start = sorted(live)[amount % len(live)]
            allocator.free(start)
            del live[start]
        _check_against_model(allocator, live)
    for start in list(live):
        allocator.free(start)
    assert allocator.free_blocks() == [(base, size)]
    assert allocator.stats().fragmentation == 0.0


def test_huge_page_alignment_from_an_unaligned_range_keeps_the_padding_free():
    allocator = TLSFAllocator(12 * KIB, 4 * GIB)
    start = allocator.alloc(GIB, HUGE_1G)
    assert start == GIB
    second = allocator.alloc(3 * MIB, HUGE_2M)
    assert second % HUGE_2M == 0
    # the padding in front of each aligned block went back to the free lists
    assert allocator.free_bytes == 4 * GIB - GIB - 3 * MIB
    assert sum(length for _, length in allocator.free_blocks()) == allocator.free_bytes


def test_exactly_sized_aligned_block_is_found_when_the_size_classes_cannot_prove_it():
    # one free block of exactly 1 GiB at a 1 GiB boundary: the O(1) search (which wants
    # size + alignment - granule) fails, the exhaustive fallback finds it
    allocator = TLSFAllocator(0, 2 * GIB)
    first = allocator.alloc(GIB, HUGE_1G)
    assert first == 0
    assert allocator.alloc(GIB, HUGE_1G) == GIB
    with pytest.raises(OutOfMemory):
        allocator.alloc(4 * KIB)


def test_alloc_for_pages_prefers_the_largest_page_alignment():
    allocator = TLSFAllocator(4 * KIB, 3 * GIB)
    assert allocator.alloc_for_pages(GIB) == GIB
    assert allocator.alloc_for_pages(4 * MIB) % HUGE_2M == 0
    assert allocator.alloc_for_pages(8 * KIB) % (4 * KIB) == 0


def test_alloc_for_pages_falls_back_to_a_smaller_alignment():
    allocator = TLSFAllocator(4 * KIB, GIB + 4 * MIB)
    start = allocator.alloc_for_pages(GIB)  # no 1 GiB boundary has 1 GiB after it
    assert start % HUGE_2M == 0


def test_freeing_in_any_order_coalesces_into_one_block():
    allocator = TLSFAllocator(0, 16 * MIB)
    blocks = [allocator.alloc(MIB) for _ in range(16)]
    for start in blocks[::2] + blocks[1::2]:
        allocator.free(start)
    assert allocator.free_blocks() == [(0, 16 * MIB)]


def test_statistics_report_fragmentation():
    allocator = TLSFAllocator(0, 8 * MIB)
    blocks = [allocator.alloc(MIB) for _ in range(8)]
    for start in blocks[::2]:
        allocator.free(start)
    stats = allocator.stats()
    assert (stats.free, stats.used, stats.largest_free) == (4 * MIB, 4 * MIB, MIB)
    assert stats.free_blocks == 4 and stats.allocations == 4
    assert stats.fragmentation == pytest.approx(0.75)


def test_out_of_memory_says_what_was_asked_what_is_free_and_the_largest_block():
    allocator = TLSFAllocator(0, 8 * MIB)
    blocks = [allocator.alloc(MIB) for _ in range(8)]
    allocator.free(blocks[1])
    allocator.free(blocks[5])
    with pytest.raises(OutOfMemory) as caught:
        allocator.alloc(2 * MIB)
    error = caught.value
    assert (error.requested, error.free, error.largest_free) == (2 * MIB, 2 * MIB, MIB)
    assert "0x200000" in str(error) and "largest free block 0x100000" in str(error)
    assert error.errno is not None


def test_double_free_and_bad_addresses_are_typed_errors():
    allocator = TLSFAllocator(1 * MIB, 8 * MIB)
    start = allocator.alloc(64 * KIB)
    allocator.free(start)
    with pytest.raises(InvalidArgument, match="double free"):
        allocator.free(start)
    inside = allocator.alloc(64 * KIB)
    with pytest.raises(InvalidArgument, match="not the start of an allocation"):
        allocator.free(inside + 4 * KIB)
    with pytest.raises(InvalidArgument, match="outside"):
        allocator.free(0)
    with pytest.raises(InvalidArgument, match="power of two"):
        allocator.alloc(4 * KIB, 3 * KIB)
    with pytest.raises(InvalidArgument, match="positive"):
        allocator.alloc(0)
    with pytest.raises(InvalidArgument):
        TLSFAllocator(1, 4 * KIB)


def test_reserve_takes_a_fixed_range_and_refuses_an_overlap():
    allocator = TLSFAllocator(0, 64 * MIB)
    assert allocator.reserve(60 * MIB, 4 * MIB) == 60 * MIB
    with pytest.raises(InvalidArgument, match="not wholly free"):
        allocator.reserve(62 * MIB, 4 * KIB)
    assert allocator.free_blocks() == [(0, 60 * MIB)]
    allocator.free(60 * MIB)
    assert allocator.free_blocks() == [(0, 64 * MIB)]
