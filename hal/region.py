"""Regions: windows onto MMIO or memory (BARs, DMA buffers, bridge SRAM) with one access API.

Two implementations share the `Region` interface:
- `MemoryRegion` wraps a writable buffer (an mmap of a BAR or of host memory, a bytearray) and reads
  and writes through memoryviews: each 32/64-bit access is one aligned load or store, no copies.
- `CallbackRegion` forwards every access to a pair of callbacks; transports without a mapping (USB
  bridge, remote socket) and the mock machine's MMIO use it.

Offsets are bytes from the start of the region. 32-bit accesses must be 4-byte aligned and 64-bit
accesses 8-byte aligned, as PCIe requires for single-transaction register access.
"""
from __future__ import annotations

from typing import Callable

from hal.errors import InvalidArgument, UnsupportedOperation


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

    def read32(self, off: int) -> int:
        if off & 3:
            self._check(off, 4, 4)
        return self._u32[off >> 2]

    def write32(self, off: int, value: int) -> None:
        if off & 3:
            self._check(off, 4, 4)
        self._u32[off >> 2] = value

    def read64(self, off: int) -> int:
        if off & 7:
            self._check(off, 8, 8)
        return self._u64[off >> 3]

    def write64(self, off: int, value: int) -> None:
        if off & 7:
            self._check(off, 8, 8)
        self._u64[off >> 3] = value

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
