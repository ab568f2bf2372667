"""Open-file objects of the simulated kernel: the base every special file derives from, and eventfd.

A `MockFile` answers the syscalls the seam forwards (read, write, pread, pwrite, ioctl, mmap,
poll readiness). The defaults are what Linux answers for a file that does not implement the
operation: ioctl -> ENOTTY, mmap -> ENODEV, read/write -> EINVAL.
"""
from __future__ import annotations

import errno

from hal.region import Region

EVENTFD_COUNTER_SIZE = 8  # eventfd(2): reads and writes are 8-byte unsigned integers
EVENTFD_MAX = (1 << 64) - 2  # eventfd(2): the counter's largest value


class MockFile:
    """One open file description."""

    def __init__(self, path: str, flags: int = 0) -> None:
        self.path = path
        self.flags = flags
        self.position = 0

    def read(self, n: int) -> bytes:
        data = self.pread(n, self.position)
        self.position += len(data)
        return data

    def write(self, data: bytes) -> int:
        written = self.pwrite(data, self.position)
        self.position += written
        return written

    def pread(self, n: int, offset: int) -> bytes:
        raise OSError(errno.EINVAL, f"{self.path} cannot be read")

    def pwrite(self, data: bytes, offset: int) -> int:
        raise OSError(errno.EINVAL, f"{self.path} cannot be written")

    def ioctl(self, request: int, arg) -> int:
        raise OSError(errno.ENOTTY, f"inappropriate ioctl {request:#x} for {self.path}")

    def mmap(self, size: int, offset: int, writable: bool) -> Region:
        raise OSError(errno.ENODEV, f"{self.path} cannot be mapped")

    def readable_now(self) -> bool:
        return True

    def close(self) -> None:
        """Release what the open file holds (override)."""


class EventFD(MockFile):
    """An eventfd: a 64-bit counter; read returns and clears it, write adds to it."""

    def __init__(self, initval: int, nonblocking: bool) -> None:
        super().__init__("anon_inode:[eventfd]")
        self.counter = initval
        self.nonblocking = nonblocking
        self.signal_count = 0

    def signal(self, amount: int = 1) -> None:
        """What the kernel does for an interrupt trigger (eventfd_signal)."""
        self.counter = min(self.counter + amount, EVENTFD_MAX)
        self.signal_count += 1

    def read(self, n: int) -> bytes:
        if n < EVENTFD_COUNTER_SIZE:
            raise OSError(errno.EINVAL, "eventfd read needs an 8-byte buffer")
        if self.counter == 0:
            # nothing can fire while this single-threaded simulation blocks, so even a blocking
            # eventfd answers EAGAIN instead of hanging; poll() is the bounded way to wait
            raise OSError(errno.EAGAIN, "eventfd counter is zero")
        value = self.counter
        self.counter = 0
        return value.to_bytes(EVENTFD_COUNTER_SIZE, "little")

    def write(self, data: bytes) -> int:
        if len(data) < EVENTFD_COUNTER_SIZE:
            raise OSError(errno.EINVAL, "eventfd write needs 8 bytes")
        value = int.from_bytes(data[:EVENTFD_COUNTER_SIZE], "little")
        if value > EVENTFD_MAX:
            raise OSError(errno.EINVAL, "eventfd write of 0xffffffffffffffff")
        if self.counter + value > EVENTFD_MAX:
            raise OSError(errno.EAGAIN, "eventfd counter would overflow")
        self.counter += value
        return EVENTFD_COUNTER_SIZE

    def pread(self, n: int, offset: int) -> bytes:
        raise OSError(errno.ESPIPE, "eventfd is not seekable")

    def pwrite(self, data: bytes, offset: int) -> int:
        raise OSError(errno.ESPIPE, "eventfd is not seekable")

    def readable_now(self) -> bool:
        return self.counter > 0
