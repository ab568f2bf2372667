"""Buffers and the timeline-reclaimed memory behind launches and copies.

- `Buffer`: a VRAM or host allocation with its GPU address and, where the CPU can map it, a Region
  (`cpu_view`). `copyin(data)` / `copyout()` move bytes between Python and the buffer: host buffers
  through their mapping, VRAM buffers through the copy queue and the device's staging pool.
  `copy_from(other)` copies GPU to GPU (VRAM<->VRAM, host<->VRAM) on the copy queue.
- `StagingPool`: several host buffers the copy engine reads from and writes to, used round robin;
  each remembers the timeline value of the last submission that used it and is reused only once
  the timeline has passed that value, so the CPU fills one while the engine drains another.
- `TimelineArena`: a ring of GPU-visible memory handed out in order (kernargs, dispatch packets);
  a range is reused only once the timeline passed the submission that used it.
"""
from __future__ import annotations

import collections
from typing import TYPE_CHECKING

from hal.errors import InvalidArgument
from hal.region import Region

if TYPE_CHECKING:
    from compute.device import Device
    from compute.queue import Queue
    from compute.signal import Signal

VRAM = "vram"
HOST = "host"


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def _bytes_of(data) -> memoryview:
    """A flat byte view of bytes, bytearray, memoryview or any buffer (a numpy array)."""
    return memoryview(data).cast("B")


class Buffer:
    """GPU memory: `size` bytes at `gpu_address`; `kind` is VRAM or HOST; `cpu_view` the CPU's
    Region of it, or None when the CPU cannot reach it directly."""

    def __init__(self, device: "Device", kind: str, size: int, gpu_address: int,
                 cpu_view: Region | None, handle: object) -> None:
        self.device = device
        self.kind = kind
        self.size = size
        self.gpu_address = gpu_address
        self.cpu_view = cpu_view
        self.handle = handle
        self.freed = False

    def argument_address(self, what: str) -> int:
        """The GPU address a kernel argument carries; a freed buffer is refused (its address went back
        to the allocator and may belong to other memory by now)."""
        if self.freed:
            raise InvalidArgument(f"{what}: {self!r} was freed")
        return self.gpu_address

    def _span(self, offset: int, size: int, what: str) -> None:
        if self.freed:
            raise InvalidArgument(f"{what} of a freed buffer")
        if size < 0 or offset < 0 or offset + size > self.size:
            raise InvalidArgument(f"{what}: [{offset:#x}, +{size:#x}) is not inside the "
                                  f"{self.size:#x}-byte buffer")

    def copyin(self, data, offset: int = 0) -> int:
        """Copy host bytes into the buffer at `offset`; returns the timeline value that ends the
        copy (0 when the CPU wrote it directly). Later submissions on any queue are ordered after it."""
        view = _bytes_of(data)
        self._span(offset, len(view), "copyin")
        if not len(view):
            return 0
        if self.kind == HOST:
            self.device.synchronize()  # earlier GPU work on the buffer finishes before the CPU writes
            self.cpu_view.write(offset, view)
            return 0
        return self.device.staging.copy_in(self.gpu_address + offset, view)

    def copyout(self, size: int | None = None, offset: int = 0) -> bytes:
        """`size` bytes (default: to the end) from `offset`, after all submitted work is done."""
        size = self.size - offset if size is None else size
        self._span(offset, size, "copyout")
        if not size:
            return b""
        if self.kind == HOST:
            self.device.synchronize()
            return self.cpu_view.read(offset, size)
        return self.device.staging.copy_out(self.gpu_address + offset, size)

    def copy_from(self, source: "Buffer", size: int | None = None, *, dst_offset: int = 0,
                  src_offset: int = 0) -> int:
        """GPU-to-GPU copy on the copy queue; returns the timeline value that ends it."""
        size = min(self.size - dst_offset, source.size - src_offset) if size is None else size
        self._span(dst_offset, size, "copy_from (destination)")
        source._span(src_offset, size, "copy_from (source)")
        queue = self.device.copy_queue
        queue.copy(self.gpu_address + dst_offset, source.gpu_address + src_offset, size)
        return queue.submit()

    def free(self) -> None:
        """Give the memory back once the GPU no longer uses it (the device synchronizes first)."""
        if self.freed:
            return
        self.device.free_buffer(self)
        self.freed = True

    def __repr__(self) -> str:
        return f"<Buffer {self.kind} {self.size:#x} bytes at {self.gpu_address:#x}>"


class StagingPool:
    """Host staging buffers for VRAM copies (see the module docstring)."""

    def __init__(self, device: "Device", count: int, size: int) -> None:
        if count < 1 or size <= 0:
            raise InvalidArgument(f"a staging pool of {count} buffers of {size} bytes")
        self.device = device
        self.size = size
        self.buffers = [device.allocate(size, host=True) for _ in range(count)]
        self.values = [0] * count  # the timeline value proving each buffer drained
        self.next = 0
        self.waits = 0  # times a buffer was still in flight when its turn came

    def _take(self) -> int:
        index = self.next
        self.next = (index + 1) % len(self.buffers)
        timeline = self.device.timeline
        if timeline.value < self.values[index]:
            self.waits += 1
            timeline.wait(self.values[index])
        return index

    def copy_in(self, gpu_address: int, data: memoryview) -> int:
        """Stage `data` chunk by chunk and copy each to `gpu_address`; returns the last value."""
        queue = self.device.copy_queue
        value = 0
        done = 0
        while done < len(data):
            chunk = min(self.size, len(data) - done)
            index = self._take()
            staging = self.buffers[index]
            staging.cpu_view.write(0, data[done:done + chunk])
            queue.copy(gpu_address + done, staging.gpu_address, chunk)
            value = queue.submit()
            self.values[index] = value
            done += chunk
        return value

    def copy_out(self, gpu_address: int, size: int) -> bytes:
        """Copy `size` bytes at `gpu_address` out through the pool, every buffer in flight at once."""
        queue = self.device.copy_queue
        out = bytearray(size)
        in_flight: collections.deque[tuple[int, int, int, int]] = collections.deque()
        issued = 0
        while issued < size or in_flight:
            while issued < size and len(in_flight) < len(self.buffers):
                chunk = min(self.size, size - issued)
                index = self._take()
                queue.copy(self.buffers[index].gpu_address, gpu_address + issued, chunk)
                value = queue.submit()
                self.values[index] = value
                in_flight.append((index, issued, chunk, value))
                issued += chunk
            index, position, chunk, value = in_flight.popleft()
            self.device.timeline.wait(value)
            out[position:position + chunk] = self.buffers[index].cpu_view.read(0, chunk)
        return bytes(out)

    def free(self) -> None:
        for buffer in self.buffers:
            buffer.free()


class TimelineArena:
    """A ring of `buffer`'s bytes handed out in order (see the module docstring)."""

    def __init__(self, name: str, buffer: Buffer, timeline: "Signal") -> None:
        if buffer.cpu_view is None:
            raise InvalidArgument(f"{name}: the arena's memory must be CPU-writable")
        self.name = name
        self.buffer = buffer
        self.size = buffer.size
        self.timeline = timeline
        self.head = 0  # monotonic byte position of the next allocation
        # (start, end, value or None while its submission is still being recorded, queue)
        self.live: collections.deque[list] = collections.deque()
        self.waits = 0  # allocations that had to wait for the timeline

    def alloc(self, size: int, alignment: int, queue: "Queue") -> tuple[int, int]:
        """`size` bytes at an `alignment`-aligned offset for a command `queue` is recording;
        returns (offset in the buffer, GPU address)."""
        if size <= 0 or size > self.size:
            raise InvalidArgument(f"{self.name}: {size} bytes (the arena holds {self.size})")
        start = _align(self.head, alignment)
        if start // self.size != (start + size - 1) // self.size:
            start = _align(start, self.size)  # never split an allocation across the end
        end = start + size
        while self.live and end - self.live[0][0] > self.size:
            oldest = self.live[0]
            if oldest[2] is None:
                raise InvalidArgument(f"{self.name}: one recording asks more than the arena's "
                                      f"{self.size} bytes; submit in smaller batches")
            if self.timeline.value < oldest[2]:
                self.waits += 1
                self.timeline.wait(oldest[2])
            self.live.popleft()
        self.head = end
        self.live.append([start, end, None, queue])
        offset = start % self.size
        return offset, self.buffer.gpu_address + offset

    @property
    def wraps(self) -> int:
        """Times the arena went round."""
        return (self.head - 1) // self.size if self.head else 0

    def write(self, offset: int, data: bytes) -> None:
        self.buffer.cpu_view.write(offset, data)

    def commit(self, queue: "Queue", value: int) -> None:
        """`queue` submitted its recording: its allocations are free once the timeline is at `value`."""
        for entry in reversed(self.live):
            if entry[2] is not None:
                break
            if entry[3] is queue:
                entry[2] = value
