"""Regions: bounds and alignment checks, the all-ones watch, callback regions."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from hal.errors import DeviceLost, InvalidArgument
from hal.region import CallbackRegion, MemoryRegion, watch_all_ones


@pytest.mark.parametrize("offset", [-4, -8, 64, 2, 1 << 40])
def test_memory_region_rejects_bad_offsets(offset):
    region = MemoryRegion(bytearray(64))
    with pytest.raises(InvalidArgument):
        region.read32(offset)
    with pytest.raises(InvalidArgument):
        region.write32(offset, 1)


@pytest.mark.parametrize("offset", [-8, 4, 64])
def test_memory_region_rejects_bad_64bit_offsets(offset):
    region = MemoryRegion(bytearray(64))
    with pytest.raises(InvalidArgument):
        region.read64(offset)


@given(st.integers(min_value=0, max_value=15), st.integers(min_value=0, max_value=0xFFFFFFFF))
def test_memory_region_round_trips_words(word, value):
    region = MemoryRegion(bytearray(64))
    region.write32(word * 4, value)
    assert region.read32(word * 4) == value
    assert region.u32[word] == value


def test_watched_region_probes_only_on_all_ones():
    calls = []

    def probe(what):
        calls.append(what)
        raise DeviceLost(what)

    region = watch_all_ones(MemoryRegion(bytearray(16)), probe)
    region.write32(0, 5)
    assert region.read32(0) == 5
    assert calls == []
    region.write32(4, 0xFFFFFFFF)
    with pytest.raises(DeviceLost):
        region.read32(4)
    assert calls == ["32-bit read at 0x4"]


def test_watched_callback_region_forwards_and_probes():
    store = bytearray(16)

    def read(off, n):
        return bytes(store[off:off + n])

    def write(off, data):
        store[off:off + len(data)] = data

    seen = []
    region = watch_all_ones(CallbackRegion(16, read, write), seen.append)
    region.write32(8, 0xFFFFFFFF)
    assert region.read32(8) == 0xFFFFFFFF
    assert seen == ["32-bit read at 0x8"]
    region.write64(0, 0x0102030405060708)
    assert region.read64(0) == 0x0102030405060708
