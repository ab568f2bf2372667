"""The IOVA allocator and the device-string parser."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from hal import devstring
from hal.errors import DeviceNotFound, InvalidArgument
from hal.vfio.iova import X86_MSI_WINDOW, IOVAAllocator


def test_iova_allocations_are_aligned_disjoint_and_coalesce_on_free():
    allocator = IOVAAllocator()
    total = allocator.free_bytes
    first = allocator.allocate(5000)
    second = allocator.allocate(4096, alignment=1 << 16)
    assert first % 4096 == 0 and second % (1 << 16) == 0
    assert first + 8192 <= second
    allocator.free(first)
    allocator.free(second)
    assert allocator.free_bytes == total
    with pytest.raises(InvalidArgument):
        allocator.free(first)


def test_iova_allocator_skips_the_msi_window_and_reports_exhaustion():
    allocator = IOVAAllocator(windows=[(0xFE000000, 0xFF000000)])
    address = allocator.allocate(0x00E00000)
    assert address + 0x00E00000 <= X86_MSI_WINDOW[0]
    with pytest.raises(InvalidArgument, match="no free IOVA"):
        allocator.allocate(0x00200000)


@given(st.lists(st.integers(min_value=1, max_value=1 << 20), min_size=1, max_size=20))
def test_iova_ranges_never_overlap(sizes):
    allocator = IOVAAllocator()
    ranges = sorted((allocator.allocate(size), size) for size in sizes)
    for (start, size), (next_start, _) in zip(ranges, ranges[1:]):
        assert start + size <= next_start


@pytest.mark.parametrize("text, backend, bdf", [
    ("pci:0000:03:00.0", "pci", "0000:03:00.0"),
    ("vfio:03:00.1", "vfio", "0000:03:00.1"),
    ("0000:0A:00.0", None, "0000:0a:00.0"),
    ("usb:1-2", "usb", "1-2"),
])
def test_device_strings_parse(text, backend, bdf):
    parsed = devstring.parse(text)
    assert (parsed.backend, parsed.bdf) == (backend, bdf)


@pytest.mark.parametrize("text", ["mock:am", "pci:03:00", "gpu0", "vfio:"])
def test_unknown_device_strings_say_what_is_understood(text):
    with pytest.raises(DeviceNotFound, match="0000:03:00.0"):
        devstring.parse(text)


def test_empty_device_string_uses_the_environment(monkeypatch):
    monkeypatch.setenv(devstring.DEVICE_ENV, "pci:01:00.0")
    assert str(devstring.parse(None)) == "pci:0000:01:00.0"
    monkeypatch.delenv(devstring.DEVICE_ENV)
    with pytest.raises(DeviceNotFound, match="GPUHAL_DEVICE"):
        devstring.parse("")


def test_iova_windows_from_a_capability_chain():
    from autogen.linux import vfio

    from hal.vfio.backend import iova_windows_from_caps

    info_size = vfio.vfio_iommu_type1_info.SIZE
    cap_size = vfio.vfio_iommu_type1_info_cap_iova_range.SIZE
    buffer = bytearray(info_size + cap_size + 2 * vfio.vfio_iova_range.SIZE)
    cap = vfio.vfio_iommu_type1_info_cap_iova_range.from_buffer(buffer, info_size)
    cap.header.id = vfio.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE
    cap.header.next = 0
    cap.nr_iovas = 2
    del cap
    for index, (start, end) in enumerate([(0, 0xFEDFFFFF), (0xFEF00000, (1 << 48) - 1)]):
        entry = vfio.vfio_iova_range.from_buffer(buffer, info_size + cap_size + index * vfio.vfio_iova_range.SIZE)
        entry.start = start
        entry.end = end
        del entry
    windows = iova_windows_from_caps(buffer, info_size)
    assert windows == [(0, 0xFEE00000), (0xFEF00000, 1 << 48)]
    allocator = IOVAAllocator(windows)
    assert allocator.allocate(4096) >= 1 << 20
