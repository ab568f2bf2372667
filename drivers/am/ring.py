"""The ring writer shared by the AM queues (GC compute, SDMA): dwords packed little-endian in
one call, written at a byte position with wrap-around, then the commit (wptr shadow in memory,
then the 64-bit doorbell), as amdgpu_ring_write / amdgpu_ring_commit and each block's set_wptr.

What it owns: placing the words (packed by hal.region.pack_words) and the commit order. It does not own the room check:
each block counts its ring in its own unit (SDMA in bytes, GC in dwords with one dword kept free),
so the block checks room before calling `write_words`.
"""
from __future__ import annotations

# packing: a word outside 32 bits keeps its low 32, as amdgpu_ring_write stores a u32
from hal.region import pack_words

DWORD = 4


def write_words(view, ring_bytes: int, position: int, words: list[int]) -> None:
    """Write `words` into a ring of `ring_bytes` bytes at byte `position`, wrapping to 0."""
    data = pack_words(words)
    first = ring_bytes - position
    if len(data) <= first:
        view.write(position, data)
        return
    view.write(position, data[:first])
    view.write(0, data[first:])


def commit(device, writeback_view, wptr_slot: int, doorbell_index: int, wptr: int) -> None:
    """The wptr shadow first, then the 64-bit doorbell write of the same wptr (in the block's unit);
    the doorbell index counts dwords in BAR 2 (amdgpu WDOORBELL64)."""
    writeback_view.write64(wptr_slot, wptr)
    device.pci.bar(2).write64(doorbell_index * DWORD, wptr)
