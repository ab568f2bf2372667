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
  the physical address of each of its pages, read through the seam's own open/pread of
  /proc/self/pagemap (so a simulated kernel only has to serve that file). `alloc_pages(size)` is
  the same memory without the mlock, for buffers the IOMMU driver pins. The host seam keeps both
  out of forked children (MADV_DONTFORK where the platform has it), so copy-on-write after fork()
  never moves a page a device is using.
- `sleep`/`monotonic` are the seam's clock, so a simulated machine may run its own time.
- `default_lock_dir()` is where ownership locks live (env GPUHAL_LOCK_DIR, else /run/lock).
"""
from __future__ import annotations

import errno as _errno
import os as _os
import time as _time
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
O_EXCL = _os.O_EXCL
O_SYNC = getattr(_os, "O_SYNC", 0)

PAGEMAP_PATH = "/proc/self/pagemap"
# Documentation/admin-guide/mm/pagemap.rst: one little-endian u64 per virtual page
PAGEMAP_ENTRY_BYTES = 8
PAGEMAP_PRESENT = 1 << 63  # pagemap.rst: bit 63 "page present"
PAGEMAP_PFN_MASK = (1 << 55) - 1  # pagemap.rst: bits 0-54 page frame number (zero without CAP_SYS_ADMIN)

LOCK_DIR_ENV = "GPUHAL_LOCK_DIR"
DEFAULT_LOCK_DIR = "/run/lock"  # FHS 3.0 sec 5.9 (/var/lock, /run/lock): lock files


@dataclass
class HostMemory:
    """Page-locked host memory: `region` to access it, `addr` its virtual address, `size` bytes.

    `phys` is filled by `OS.pagemap` (one physical address per PAGE_SIZE page), empty until then.
    `fd` is the memory file behind it when it came from `alloc_shared` (another process can map it).
    """

    region: Region
    addr: int
    size: int
    phys: list[int] = field(default_factory=list)
    fd: int | None = None


class OS(ABC):
    """The seam's interface. Every method raises OSError with a real errno on failure."""

    name = "abstract"

    # -- files -------------------------------------------------------------------------------
    @abstractmethod
    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        """Open `path` with open(2) `flags` (hal.os.O_*); returns a file descriptor."""

    @abstractmethod
    def close(self, fd: int) -> None:
        """Close a descriptor from open/eventfd (or one an ioctl returned)."""

    @abstractmethod
    def read(self, fd: int, n: int) -> bytes:
        """Read up to `n` bytes at the file position (b"" at end of file)."""

    @abstractmethod
    def write(self, fd: int, data: bytes) -> int:
        """Write `data` at the file position; returns the bytes written."""

    @abstractmethod
    def pread(self, fd: int, n: int, offset: int) -> bytes:
        """Read up to `n` bytes at `offset` without moving the file position."""

    @abstractmethod
    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        """Write `data` at `offset` without moving the file position; returns the bytes written."""

    @abstractmethod
    def ioctl(self, fd: int, request: int, arg: int | bytearray | memoryview | None = None) -> int:
        """Issue ioctl `request`; a buffer `arg` is updated in place; returns the result."""

    @abstractmethod
    def flock(self, fd: int, exclusive: bool = True, blocking: bool = False) -> None:
        """Take (or with exclusive=False, share) an advisory lock; EWOULDBLOCK when held."""

    @abstractmethod
    def mmap(self, fd: int, size: int, offset: int = 0, writable: bool = True) -> Region:
        """Map `size` bytes of `fd` at `offset` (MAP_SHARED); returns a Region of exactly `size` bytes."""

    @abstractmethod
    def munmap(self, region: Region) -> None:
        """Unmap a Region returned by mmap."""

    @abstractmethod
    def listdir(self, path: str) -> list[str]:
        """Names in directory `path`, sorted."""

    @abstractmethod
    def readlink(self, path: str) -> str:
        """The target of symbolic link `path`, as stored (often relative)."""

    @abstractmethod
    def exists(self, path: str) -> bool:
        """Whether `path` exists (following links)."""

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
        """A new eventfd(2) with counter `initval`; reads return and clear the 8-byte counter."""

    @abstractmethod
    def poll(self, fds: list[int], timeout_s: float) -> list[int]:
        """Wait until some of `fds` are readable or `timeout_s` passes; returns the readable ones."""

    # -- memory ------------------------------------------------------------------------------
    @abstractmethod
    def alloc_locked(self, size: int) -> HostMemory:
        """Anonymous, page-aligned, mlock'ed memory of `size` bytes (rounded up to pages)."""

    def alloc_pages(self, size: int) -> HostMemory:
        """Anonymous, page-aligned memory of `size` bytes (rounded up to pages) that is not mlock'ed, for
        buffers something else pins: VFIO_IOMMU_MAP_DMA pins the pages it maps and charges them to
        RLIMIT_MEMLOCK itself, so an mlock as well would count them twice. Released with free_locked.
        This default hands out alloc_locked memory; a seam that can leave pages unlocked overrides it."""
        return self.alloc_locked(size)

    def alloc_shared(self, size: int, lock: bool = True) -> HostMemory:
        """Like alloc_locked (or alloc_pages without `lock`), but backed by a memory file whose fd is
        `HostMemory.fd`, so another process given the fd maps the same pages (a DMA buffer shared
        over a Unix socket). Released with free_locked, which closes the fd."""
        raise OSError(_errno.EOPNOTSUPP, f"the {self.name} seam cannot share memory by file descriptor")

    @abstractmethod
    def free_locked(self, mem: HostMemory) -> None:
        """Unlock (when locked) and release memory from alloc_locked, alloc_pages or alloc_shared."""

    def pagemap(self, mem: HostMemory) -> list[int]:
        """Physical address of each page of `mem` (also stored in mem.phys). Needs root on Linux.

        Reads /proc/self/pagemap through this seam's open/pread. Raises OSError(EPERM) when the
        kernel hides frame numbers (present page with PFN 0: no CAP_SYS_ADMIN) and OSError(EFAULT)
        when a page is not resident.
        """
        first_page = mem.addr // PAGE_SIZE
        page_count = (mem.size + PAGE_SIZE - 1) // PAGE_SIZE
        fd = self.open(PAGEMAP_PATH, O_RDONLY | O_CLOEXEC)
        try:
            raw = self.pread(fd, page_count * PAGEMAP_ENTRY_BYTES, first_page * PAGEMAP_ENTRY_BYTES)
        finally:
            self.close(fd)
        if len(raw) != page_count * PAGEMAP_ENTRY_BYTES:
            raise OSError(_errno.EIO, f"short read of {PAGEMAP_PATH}: {len(raw)} bytes "
                                      f"for {page_count} pages")
        phys = []
        for index in range(page_count):
            start = index * PAGEMAP_ENTRY_BYTES
            entry = int.from_bytes(raw[start:start + PAGEMAP_ENTRY_BYTES], "little")
            if not entry & PAGEMAP_PRESENT:
                raise OSError(_errno.EFAULT, f"page {index} of locked memory at {mem.addr:#x} "
                                             "is not resident")
            pfn = entry & PAGEMAP_PFN_MASK
            if pfn == 0:
                raise OSError(_errno.EPERM, f"{PAGEMAP_PATH} hides frame numbers (needs CAP_SYS_ADMIN)")
            phys.append(pfn * PAGE_SIZE)
        mem.phys = phys
        return phys

    # -- process and time ----------------------------------------------------------------------
    def getpid(self) -> int:
        return _os.getpid()

    def sleep(self, seconds: float) -> None:
        """Wait `seconds`; a simulated machine may advance its own clock instead."""
        _time.sleep(seconds)

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; bounded waits measure against it."""
        return _time.monotonic()

    def usb_host(self):
        """The USB side of the seam (a hal.usb.transport.USBHost): list USB devices, open one as a
        transport. The host's comes from python-libusb1 (hal.usb.libusb, loaded when first used);
        a simulated machine answers with its USB bus."""
        from hal.usb.libusb import LibusbHost

        return LibusbHost.shared()

    def default_lock_dir(self) -> str:
        """Where ownership locks live: $GPUHAL_LOCK_DIR, else /run/lock."""
        return _os.environ.get(LOCK_DIR_ENV) or DEFAULT_LOCK_DIR


def host() -> OS:
    """The real seam for this machine (created once, then shared)."""
    global _host_os
    if _host_os is None:
        from hal.host_os import HostOS

        _host_os = HostOS()
    return _host_os


_host_os: OS | None = None
