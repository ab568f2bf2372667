"""Property test: the IOMMU domain agrees with a page-by-page reference model under any sequence
of map/unmap requests, and rejects exactly the requests type1 rejects."""
from __future__ import annotations

import errno

from hypothesis import given, settings
from hypothesis import strategies as st

from hal.os import PAGE_SIZE
from mockgpu.hostmem import HostRAM
from mockgpu.iommu import IOMMUDomain

PAGES = 16

requests = st.lists(st.tuples(st.booleans(), st.integers(0, PAGES - 1), st.integers(1, 4)), max_size=30)


@settings(max_examples=60, deadline=None)
@given(requests)
def test_domain_matches_reference(ops):
    ram = HostRAM(scattered=True)
    backing = ram.allocate(PAGES * PAGE_SIZE)
    domain = IOMMUDomain(ram)
    extents: dict[int, int] = {}  # first page -> page count, as mapped
    for is_map, first, count in ops:
        count = min(count, PAGES - first)
        pages = set(range(first, first + count))
        covered = {page for start, length in extents.items() for page in range(start, start + length)}
        if is_map:
            try:
                vaddr = backing.vaddr + first * PAGE_SIZE
                domain.map(first * PAGE_SIZE, count * PAGE_SIZE, vaddr, True, True)
            except OSError as exc:
                assert exc.errno == errno.EEXIST and pages & covered
                continue
            assert not pages & covered
            extents[first] = count
        else:
            splits = [start for start, length in extents.items()
                      if set(range(start, start + length)) & pages
                      and not set(range(start, start + length)) <= pages]
            try:
                removed = domain.unmap(first * PAGE_SIZE, count * PAGE_SIZE)
            except OSError as exc:
                assert exc.errno == errno.EINVAL and splits
                continue
            assert not splits
            gone = [start for start, length in extents.items() if set(range(start, start + length)) <= pages]
            assert removed == sum(extents[start] for start in gone) * PAGE_SIZE
            for start in gone:
                del extents[start]
    covered = {page for start, length in extents.items() for page in range(start, start + length)}
    for page in range(PAGES):
        physical, _ = domain.translate(page * PAGE_SIZE + 8, write=True)
        if page in covered:
            assert physical == backing.pfns[page] * PAGE_SIZE + 8
        else:
            assert physical is None
