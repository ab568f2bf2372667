"""drivers.am.ring: packing, placement with wrap-around and the commit order of the shared ring writer."""
from __future__ import annotations

from types import SimpleNamespace

from drivers.am import ring


class _View:
    """A bytearray-backed view recording each write."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)
        self.writes = []

    def write(self, off: int, data) -> None:
        self.writes.append((off, len(data)))
        self.data[off:off + len(data)] = data

    def write64(self, off: int, value: int) -> None:
        self.writes.append(("write64", off, value))


def test_pack_words_little_endian_and_truncated():
    assert ring.pack_words([1, 0xAABBCCDD]) == b"\x01\x00\x00\x00\xdd\xcc\xbb\xaa"
    # a word wider than 32 bits keeps its low 32 bits, as a u32 ring slot does
    assert ring.pack_words([0x1_0000_0002, -1]) == b"\x02\x00\x00\x00\xff\xff\xff\xff"
    assert ring.pack_words([]) == b""


def test_write_words_in_place_is_one_write():
    view = _View(32)
    ring.write_words(view, 32, 8, [0x11111111, 0x22222222])
    assert view.writes == [(8, 8)]
    assert view.data[8:16] == b"\x11\x11\x11\x11\x22\x22\x22\x22"


def test_write_words_wraps_to_the_start():
    view = _View(16)
    ring.write_words(view, 16, 8, [1, 2, 3, 4])
    assert view.writes == [(8, 8), (0, 8)]
    assert view.data == ring.pack_words([3, 4, 1, 2])


def test_write_words_ending_exactly_at_the_end_does_not_wrap():
    view = _View(16)
    ring.write_words(view, 16, 8, [5, 6])
    assert view.writes == [(8, 8)]


def test_commit_writes_the_shadow_before_the_doorbell():
    order = []
    shadow = SimpleNamespace(write64=lambda off, value: order.append(("shadow", off, value)))
    bar = SimpleNamespace(write64=lambda off, value: order.append(("doorbell", off, value)))
    device = SimpleNamespace(pci=SimpleNamespace(bar=lambda index: bar if index == 2 else None))
    ring.commit(device, shadow, 8, 6, 0x1234)
    assert order == [("shadow", 8, 0x1234), ("doorbell", 6 * ring.DWORD, 0x1234)]
