"""The OS seam: the one object through which gpuhal touches files, ioctls, mappings and memory.

Every backend receives an `OS` instance (dependency injection); nothing calls `os`, `fcntl` or
`mmap` directly. `host()` returns the real implementation for this machine; the mock machine
(`mockgpu.Machine(...).os`) implements the same interface over a simulated kernel, so backends run
unchanged in tests.

Contract shared by every implementation:
- Paths are absolute POSIX strings ("/sys/bus/pci/devices/0000:03:00.0/config").
- Failures raise `OSError` with a real errno (ENOENT, EACCES, EBUSY, EINVAL, ENOTTY, ...), exactly
  as the kernel would answer; callers map them with `hal.errors.from_oserror`.
- `ioctl(fd, request, arg)`: `arg` is an int, None, or a mutable buffer (bytearray or writable
  memoryview) that the call may update in place, as the kernel writes back into a user struct.
  Returns the ioctl's non-negative result (a new fd for VFIO_GROUP_GET_DEVICE_FD, say).
- `mmap` returns a `Region` of exactly `size` bytes; `munmap` releases it.
- `alloc_locked(size)` returns page-locked anonymous host memory as `HostMemory`; `pagemap` gives
  the physical address of each of its pages (read from /proc/self/pagemap on Linux).
"""
from __future__ import annotations

import os as _os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from hal.region import Region

PAGE_SIZE = 4096  # the x86-64/arm64 base page; DMA and pagemap work in these units

# open(2) flags, re-exported so callers never import `os` for them
O_RDONLY = _os.O_RDONLY
O_WRONLY = _os.O_WRONLY
O_RDWR = _os.O_RDWR
O_CLOEXEC = getattr(_os, "O_CLOEXEC", 0)
O_NONBLOCK = getattr(_os, "O_NONBLOCK", 0)
O_CREAT = _os.O_CREAT
O_SYNC = getattr(_os, "O_SYNC", 0)


@dataclass
class HostMemory:
    """Page-locked host memory: `region` to access it, `addr` its virtual address, `size` bytes.

    `phys` is filled by `OS.pagemap` (one physical address per PAGE_SIZE page), empty until then.
    """

    region: Region
    addr: int
    size: int
    phys: list[int] = field(default_factory=list)


class OS(ABC):
    """The seam's interface. Every method raises OSError with a real errno on failure."""

    name = "abstract"

    # -- files -------------------------------------------------------------------------------
    @abstractmethod
    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        ...

    @abstractmethod
    def close(self, fd: int) -> None:
        ...

    @abstractmethod
    def read(self, fd: int, n: int) -> bytes:
        ...

    @abstractmethod
    def write(self, fd: int, data: bytes) -> int:
        ...

    @abstractmethod
    def pread(self, fd: int, n: int, offset: int) -> bytes:
        ...

    @abstractmethod
    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        ...

    @abstractmethod
    def ioctl(self, fd: int, request: int, arg: int | bytearray | memoryview | None = None) -> int:
        ...

    @abstractmethod
    def flock(self, fd: int, exclusive: bool = True, blocking: bool = False) -> None:
        """Take (or with exclusive=False, share) an advisory lock; EWOULDBLOCK when held."""
        ...

    @abstractmethod
    def mmap(self, fd: int, size: int, offset: int = 0, writable: bool = True) -> Region:
        ...

    @abstractmethod
    def munmap(self, region: Region) -> None:
        ...

    @abstractmethod
    def listdir(self, path: str) -> list[str]:
        ...

    @abstractmethod
    def readlink(self, path: str) -> str:
        ...

    @abstractmethod
    def exists(self, path: str) -> bool:
        ...

    def read_text(self, path: str) -> str:
        """Whole small file (sysfs attributes); a convenience over open/read/close."""
        fd = self.open(path, O_RDONLY | O_CLOEXEC)
        try:
            chunks = []
            while True:
                chunk = self.read(fd, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks).decode()
        finally:
            self.close(fd)

    def write_text(self, path: str, text: str) -> None:
        """Write one sysfs attribute (driver_override, unbind, reset, ...)."""
        fd = self.open(path, O_WRONLY | O_CLOEXEC)
        try:
            self.write(fd, text.encode())
        finally:
            self.close(fd)

    # -- events ------------------------------------------------------------------------------
    @abstractmethod
    def eventfd(self, initval: int = 0, nonblocking: bool = True) -> int:
        ...

    @abstractmethod
    def poll(self, fds: list[int], timeout_s: float) -> list[int]:
        """Wait until some of `fds` are readable or `timeout_s` passes; returns the readable ones."""
        ...

    # -- memory ------------------------------------------------------------------------------
    @abstractmethod
    def alloc_locked(self, size: int) -> HostMemory:
        """Anonymous, page-aligned, mlock'ed memory of `size` bytes (rounded up to pages)."""
        ...

    @abstractmethod
    def free_locked(self, mem: HostMemory) -> None:
        ...

    @abstractmethod
    def pagemap(self, mem: HostMemory) -> list[int]:
        """Physical address of each page of `mem` (also stored in mem.phys). Needs root on Linux."""
        ...

    def getpid(self) -> int:
        return _os.getpid()
