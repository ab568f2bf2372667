"""The ring writer shared by the AM queues (GC compute, SDMA): dwords packed little-endian in
one call, written at a byte position with wrap-around, then the commit (wptr shadow in memory,
then the 64-bit doorbell), as amdgpu_ring_write / amdgpu_ring_commit and each block's set_wptr.

What it owns: packing and placing the words and the commit order. It does not own the room check:
each block counts its ring in its own unit (SDMA in bytes, GC in dwords with one dword kept free),
so the block checks room before calling `write_words`.
"""
from __future__ import annotations

import struct

DWORD = 4
WORD_MASK = 0xFFFFFFFF


def pack_words(words: list[int]) -> bytes:
    """`words` as little-endian dwords, in one struct call; a word outside 32 bits is truncated to
    its low 32 bits (as amdgpu_ring_write stores a u32)."""
    fmt = f"<{len(words)}I"
    try:
        return struct.pack(fmt, *words)
    except struct.error:
        return struct.pack(fmt, *[word & WORD_MASK for word in words])


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
