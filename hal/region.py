"""Regions: windows onto MMIO or memory (BARs, DMA buffers, bridge SRAM) with one access API.

Two implementations share the `Region` interface:
- `MemoryRegion` wraps a writable buffer (an mmap of a BAR or of host memory, a bytearray) and reads
  and writes through memoryviews: each 32/64-bit access is one aligned load or store, no copies.
- `CallbackRegion` forwards every access to a pair of callbacks; transports without a mapping (USB
  bridge, remote socket) and the mock machine's MMIO use it.

Offsets are bytes from the start of the region. 32-bit accesses must be 4-byte aligned and 64-bit
accesses 8-byte aligned, as PCIe requires for single-transaction register access.

Every 32-bit access through `MemoryRegion` is one aligned 4-byte load or store: CPython reads and
writes a memoryview item of format "I" with a single 4-byte memcpy, which compiles to one move.
Hot loops may index `MemoryRegion.u32` (32-bit words, index = byte offset // 4) directly and skip
the method call, with the same single-access guarantee.

`watch_all_ones(region, on_all_ones)` wraps a BAR so a read of all ones (what a device that fell
off the bus returns) calls a probe that decides whether the device is gone (raising DeviceLost).
`guard(region, usable, on_lost)` gives, for a region that reaches a transport (callbacks: USB
bridge, remote socket), one that checks `usable()` before every access and hands the DeviceLost the
transport raises to `on_lost`, so a device known lost is not asked again; memory regions are
returned unchanged (no cost on the fast path).
"""
from __future__ import annotations

import struct
from typing import Callable

from hal.errors import DeviceLost, InvalidArgument, UnsupportedOperation

# an offset with any of these bits set is negative or not 4/8-byte aligned (Python ints are
# two's complement for &, so bit 63 is set for every negative offset); folded into one constant
_BAD_OFFSET32 = (1 << 63) | 3
_BAD_OFFSET64 = (1 << 63) | 7
ALL_ONES32 = 0xFFFFFFFF  # what a PCIe read returns when no device answers (PCIe r5.0 sec 2.3.2)
ALL_ONES64 = 0xFFFFFFFFFFFFFFFF
WORD_MASK = 0xFFFFFFFF


def pack_words(words: list[int]) -> bytes:
    """`words` as little-endian 32-bit words in one struct call, for one write of a command stream
    (an AMD ring, an NVIDIA pushbuffer); a word outside 32 bits keeps its low 32, as the hardware's
    dword holds it."""
    fmt = f"<{len(words)}I"
    try:
        return struct.pack(fmt, *words)
    except struct.error:
        return struct.pack(fmt, *[word & WORD_MASK for word in words])


class Region:
    """A window of `size` bytes. `addr` is its virtual address when it is host-mapped, else None."""

    size: int
    addr: int | None = None

    def read32(self, off: int) -> int:
        raise UnsupportedOperation(f"{type(self).__name__} cannot read32")

    def write32(self, off: int, value: int) -> None:
        raise UnsupportedOperation(f"{type(self).__name__} cannot write32")

    def read64(self, off: int) -> int:
        return self.read32(off) | (self.read32(off + 4) << 32)

    def write64(self, off: int, value: int) -> None:
        self.write32(off, value & 0xFFFFFFFF)
        self.write32(off + 4, value >> 32)

    def read(self, off: int, n: int) -> bytes:
        raise UnsupportedOperation(f"{type(self).__name__} cannot read")

    def write(self, off: int, data: bytes | bytearray | memoryview) -> None:
        raise UnsupportedOperation(f"{type(self).__name__} cannot write")

    def view(self, off: int = 0, size: int | None = None) -> memoryview:
        """A zero-copy writable memoryview of [off, off+size); only memory-backed regions have one."""
        raise UnsupportedOperation(f"{type(self).__name__} is not memory-mapped; use read()/write()")

    def sub(self, off: int, size: int) -> "Region":
        """A Region for [off, off+size) of this one, sharing its storage."""
        self._check(off, size)
        return SubRegion(self, off, size)

    def _check(self, off: int, n: int, align: int = 1) -> None:
        if off < 0 or n < 0 or off + n > self.size:
            raise InvalidArgument(f"access [{off:#x}, {off + n:#x}) outside region of {self.size:#x} bytes")
        if off % align:
            raise InvalidArgument(f"offset {off:#x} is not {align}-byte aligned")


class MemoryRegion(Region):
    """A Region over a writable buffer (mmap, bytearray). The zero-copy fast path.

    `owner` is kept alive with the region (the mmap object, say); `addr` is its virtual address.
    """

    def __init__(self, buffer, size: int | None = None, *, addr: int | None = None, owner=None) -> None:
        mv = memoryview(buffer).cast("B")
        if size is not None:
            mv = mv[:size]
        self.size = len(mv)
        self.addr = addr
        self._owner = owner if owner is not None else buffer
        self._mv = mv
        whole32 = self.size - self.size % 4
        whole64 = self.size - self.size % 8
        self._u32 = mv[:whole32].cast("I")
        self._u64 = mv[:whole64].cast("Q")

    @property
    def u32(self) -> memoryview:
        """The region as 32-bit words (index = byte offset // 4); each item access is one load/store."""
        return self._u32

    def read32(self, off: int) -> int:
        if off & _BAD_OFFSET32:
            self._check(off, 4, 4)
        try:
            return self._u32[off >> 2]
        except IndexError:
            self._check(off, 4, 4)
            raise

    def write32(self, off: int, value: int) -> None:
        if off & _BAD_OFFSET32:
            self._check(off, 4, 4)
        try:
            self._u32[off >> 2] = value
        except IndexError:
            self._check(off, 4, 4)
            raise

    def read64(self, off: int) -> int:
        if off & _BAD_OFFSET64:
            self._check(off, 8, 8)
        try:
            return self._u64[off >> 3]
        except IndexError:
            self._check(off, 8, 8)
            raise

    def write64(self, off: int, value: int) -> None:
        if off & _BAD_OFFSET64:
            self._check(off, 8, 8)
        try:
            self._u64[off >> 3] = value
        except IndexError:
            self._check(off, 8, 8)
            raise

    def read(self, off: int, n: int) -> bytes:
        self._check(off, n)
        return bytes(self._mv[off:off + n])

    def write(self, off: int, data) -> None:
        data = memoryview(data).cast("B")
        self._check(off, len(data))
        self._mv[off:off + len(data)] = data

    def view(self, off: int = 0, size: int | None = None) -> memoryview:
        if size is None:
            size = self.size - off
        self._check(off, size)
        return self._mv[off:off + size]

    def sub(self, off: int, size: int) -> "Region":
        self._check(off, size)
        addr = None if self.addr is None else self.addr + off
        return MemoryRegion(self._mv[off:off + size], addr=addr, owner=self._owner)

    def release(self) -> None:
        """Drop the memoryviews so the underlying mmap can be closed."""
        for mv in (self._u32, self._u64, self._mv):
            mv.release()


AllOnesProbe = Callable[[str], None]


class WatchedMemoryRegion(MemoryRegion):
    """A MemoryRegion whose 32/64-bit reads call `on_all_ones(what)` when they return all ones.

    The probe (a config-space vendor ID read, say) raises DeviceLost if the device is gone and
    returns if all ones was a legitimate register value. The check costs one compare per read.
    """

    def __init__(self, inner: MemoryRegion, on_all_ones: AllOnesProbe) -> None:
        self.size = inner.size
        self.addr = inner.addr
        self._owner = inner._owner
        self._mv = inner._mv
        self._u32 = inner._u32
        self._u64 = inner._u64
        self._on_all_ones = on_all_ones

    def read32(self, off: int) -> int:
        if off & _BAD_OFFSET32:
            self._check(off, 4, 4)
        try:
            value = self._u32[off >> 2]
        except IndexError:
            self._check(off, 4, 4)
            raise
        if value == ALL_ONES32:
            self._on_all_ones(f"32-bit read at {off:#x}")
        return value

    def read64(self, off: int) -> int:
        if off & _BAD_OFFSET64:
            self._check(off, 8, 8)
        try:
            value = self._u64[off >> 3]
        except IndexError:
            self._check(off, 8, 8)
            raise
        if value == ALL_ONES64:
            self._on_all_ones(f"64-bit read at {off:#x}")
        return value

    def release(self) -> None:
        """The wrapped region owns the views; it releases them."""


class WatchedRegion(Region):
    """Any Region, with the all-ones probe of `WatchedMemoryRegion` on its 32/64-bit reads."""

    def __init__(self, inner: Region, on_all_ones: AllOnesProbe) -> None:
        self.size = inner.size
        self.addr = inner.addr
        self._inner = inner
        self._on_all_ones = on_all_ones

    def read32(self, off: int) -> int:
        value = self._inner.read32(off)
        if value == ALL_ONES32:
            self._on_all_ones(f"32-bit read at {off:#x}")
        return value

    def write32(self, off: int, value: int) -> None:
        self._inner.write32(off, value)

    def read64(self, off: int) -> int:
        value = self._inner.read64(off)
        if value == ALL_ONES64:
            self._on_all_ones(f"64-bit read at {off:#x}")
        return value

    def write64(self, off: int, value: int) -> None:
        self._inner.write64(off, value)

    def read(self, off: int, n: int) -> bytes:
        return self._inner.read(off, n)

    def write(self, off: int, data) -> None:
        self._inner.write(off, data)

    def view(self, off: int = 0, size: int | None = None) -> memoryview:
        return self._inner.view(off, size)


def watch_all_ones(region: Region, on_all_ones: AllOnesProbe) -> Region:
    """`region` with reads of all ones checked by `on_all_ones` (keeps the memoryview fast path)."""
    if isinstance(region, MemoryRegion):
        return WatchedMemoryRegion(region, on_all_ones)
    return WatchedRegion(region, on_all_ones)


ReadCallback = Callable[[int, int], bytes]
WriteCallback = Callable[[int, bytes], None]


class CallbackRegion(Region):
    """A Region whose accesses call `read_cb(off, n) -> bytes` and `write_cb(off, data)`.

    32/64-bit accesses reach the callbacks as one call of 4 or 8 bytes, so a device model or a
    transport sees the access width the driver used.
    """

    def __init__(self, size: int, read_cb: ReadCallback, write_cb: WriteCallback) -> None:
        self.size = size
        self._read_cb = read_cb
        self._write_cb = write_cb

    def read32(self, off: int) -> int:
        self._check(off, 4, 4)
        return int.from_bytes(self._read_cb(off, 4), "little")

    def write32(self, off: int, value: int) -> None:
        self._check(off, 4, 4)
        self._write_cb(off, (value & 0xFFFFFFFF).to_bytes(4, "little"))

    def read64(self, off: int) -> int:
        self._check(off, 8, 8)
        return int.from_bytes(self._read_cb(off, 8), "little")

    def write64(self, off: int, value: int) -> None:
        self._check(off, 8, 8)
        self._write_cb(off, (value & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little"))

    def read(self, off: int, n: int) -> bytes:
        self._check(off, n)
        return bytes(self._read_cb(off, n))

    def write(self, off: int, data) -> None:
        data = bytes(data)
        self._check(off, len(data))
        self._write_cb(off, data)


class SubRegion(Region):
    """A window into another Region (used for callback-backed parents)."""

    def __init__(self, parent: Region, off: int, size: int) -> None:
        self._parent = parent
        self._off = off
        self.size = size
        self.addr = None if parent.addr is None else parent.addr + off

    def read32(self, off: int) -> int:
        self._check(off, 4, 4)
        return self._parent.read32(self._off + off)

    def write32(self, off: int, value: int) -> None:
        self._check(off, 4, 4)
        self._parent.write32(self._off + off, value)

    def read64(self, off: int) -> int:
        self._check(off, 8, 8)
        return self._parent.read64(self._off + off)

    def write64(self, off: int, value: int) -> None:
        self._check(off, 8, 8)
        self._parent.write64(self._off + off, value)

    def read(self, off: int, n: int) -> bytes:
        self._check(off, n)
        return self._parent.read(self._off + off, n)

    def write(self, off: int, data) -> None:
        self._check(off, len(data))
        self._parent.write(self._off + off, data)


class GuardedRegion(Region):
    """Any Region whose every access first calls `usable()` (which raises when the device is known
    gone) and hands a DeviceLost from the region to `on_lost(error)`, raising what it returns."""

    def __init__(self, inner: Region, usable: Callable[[], None],
                 on_lost: Callable[[DeviceLost], DeviceLost]) -> None:
        self.size = inner.size
        self.addr = inner.addr
        self._inner = inner
        self._usable = usable
        self._on_lost = on_lost

    def _call(self, method, *args):
        self._usable()
        try:
            return method(*args)
        except DeviceLost as error:
            raise self._on_lost(error) from None

    def read32(self, off: int) -> int:
        return self._call(self._inner.read32, off)

    def write32(self, off: int, value: int) -> None:
        self._call(self._inner.write32, off, value)

    def read64(self, off: int) -> int:
        return self._call(self._inner.read64, off)

    def write64(self, off: int, value: int) -> None:
        self._call(self._inner.write64, off, value)

    def read(self, off: int, n: int) -> bytes:
        return self._call(self._inner.read, off, n)

    def write(self, off: int, data) -> None:
        self._call(self._inner.write, off, data)

    def view(self, off: int = 0, size: int | None = None) -> memoryview:
        return self._inner.view(off, size)


def guard(region: Region, usable: Callable[[], None],
          on_lost: Callable[[DeviceLost], DeviceLost]) -> Region:
    """`region` checked by `usable()` before each access, a DeviceLost it raises handed to
    `on_lost` (see the module docstring). A CallbackRegion stays one (its callbacks guarded); a
    MemoryRegion is returned as it is."""
    if isinstance(region, MemoryRegion):
        return region
    if isinstance(region, CallbackRegion):
        read_cb, write_cb = region._read_cb, region._write_cb

        def read(off: int, n: int) -> bytes:
            usable()
            try:
                return read_cb(off, n)
            except DeviceLost as error:
                raise on_lost(error) from None

        def write(off: int, data: bytes) -> None:
            usable()
            try:
                write_cb(off, data)
            except DeviceLost as error:
                raise on_lost(error) from None

        return CallbackRegion(region.size, read, write)
    return GuardedRegion(region, usable, on_lost)
