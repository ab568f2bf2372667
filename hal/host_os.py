"""The real OS seam: `HostOS` implements `hal.os.OS` over os, fcntl, mmap, select and ctypes.

It imports on every platform. Linux-only services (eventfd, mlock through libc) are looked up when
first used; where they are missing the call raises `BackendUnavailable` naming what is absent.
System calls interrupted by a signal (EINTR) or told to try again (EAGAIN) are retried a bounded
number of times, then the OSError propagates with its errno for `hal.errors.from_oserror`.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import math
import mmap
import os
import select
import sys

from hal.errors import BackendUnavailable
from hal.os import OS, PAGE_SIZE, HostMemory
from hal.region import MemoryRegion, Region

log = logging.getLogger(__name__)

_RETRY_ERRNOS = (errno.EINTR, errno.EAGAIN)
_MAX_RETRIES = 64  # an ioctl still interrupted after this many attempts reports its error
MS_PER_S = 1000
MS_ROUNDING_SLACK = 1e-6  # milliseconds; far below poll's resolution


def poll_timeout_ms(timeout_s: float) -> int:
    """poll(2) takes whole milliseconds: round up, so a wait never ends before `timeout_s` (0.5 ms waits
    1 ms, not 0). MS_ROUNDING_SLACK keeps binary fractions such as 0.007 * 1000 = 7.000000000000001
    from costing a whole extra millisecond."""
    if timeout_s <= 0:
        return 0
    return math.ceil(timeout_s * MS_PER_S - MS_ROUNDING_SLACK)


def _round_up_to_page(size: int) -> int:
    return (size + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE


def _buffer_address(buffer: mmap.mmap) -> int:
    """Virtual address of a writable mmap; the temporary ctypes view is dropped at once."""
    anchor = ctypes.c_char.from_buffer(buffer)
    address = ctypes.addressof(anchor)
    del anchor
    return address


def _keep_out_of_forked_children(mapping: mmap.mmap) -> None:
    """MADV_DONTFORK: a forked child does not inherit the mapping, so no copy-on-write fault after fork()
    can give the parent a new physical page while a device still DMAs to the old one (mlock does not
    prevent that). Platforms without MADV_DONTFORK (macOS) have no DMA to user memory to protect."""
    advice = getattr(mmap, "MADV_DONTFORK", None)
    if advice is None:
        return
    mapping.madvise(advice)


class _Libc:
    """mlock/munlock from the C library, loaded on first use."""

    def __init__(self) -> None:
        self._lib = None
        self._why_missing: str | None = None

    def _load(self):
        if self._lib is not None:
            return self._lib
        if self._why_missing is not None:
            raise BackendUnavailable(self._why_missing)
        name = ctypes.util.find_library("c")
        try:
            lib = ctypes.CDLL(name, use_errno=True)
            lib.mlock.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
            lib.munlock.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
        except (OSError, AttributeError) as exc:
            self._why_missing = f"the C library offers no mlock/munlock on {sys.platform}: {exc}"
            raise BackendUnavailable(self._why_missing) from exc
        self._lib = lib
        return lib

    def mlock(self, address: int, size: int) -> None:
        if self._load().mlock(address, size) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"mlock of {size} bytes failed: {os.strerror(code)} "
                                "(raise the locked-memory limit: `ulimit -l unlimited`, or run as root)")

    def munlock(self, address: int, size: int) -> None:
        if self._load().munlock(address, size) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"munlock of {size} bytes failed: {os.strerror(code)}")


class HostOS(OS):
    """This machine's kernel, seen through the seam."""

    name = "host"

    def __init__(self) -> None:
        self._libc = _Libc()
        # id(region) -> the mmap object behind it, so munmap/free_locked can close it
        self._mappings: dict[int, mmap.mmap] = {}
        # ids of the regions of those mappings that alloc_locked mlock'ed (free_locked munlocks them)
        self._locked: set[int] = set()

    # -- files -------------------------------------------------------------------------------
    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        return os.open(path, flags, mode)

    def close(self, fd: int) -> None:
        os.close(fd)

    def read(self, fd: int, n: int) -> bytes:
        return os.read(fd, n)

    def write(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def pread(self, fd: int, n: int, offset: int) -> bytes:
        return os.pread(fd, n, offset)

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def ioctl(self, fd: int, request: int, arg: int | bytearray | memoryview | None = None) -> int:
        import fcntl

        if arg is None:
            arg = 0
        for attempt in range(_MAX_RETRIES):
            try:
                if isinstance(arg, int):
                    return fcntl.ioctl(fd, request, arg)
                return fcntl.ioctl(fd, request, arg, True)
            except OSError as exc:
                if exc.errno not in _RETRY_ERRNOS or attempt == _MAX_RETRIES - 1:
                    raise
        raise OSError(errno.EINTR, f"ioctl {request:#x} kept being interrupted")

    def flock(self, fd: int, exclusive: bool = True, blocking: bool = False) -> None:
        import fcntl

        operation = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        if not blocking:
            operation |= fcntl.LOCK_NB
        fcntl.flock(fd, operation)

    def mmap(self, fd: int, size: int, offset: int = 0, writable: bool = True) -> Region:
        protection = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        mapping = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=protection, offset=offset)
        address = _buffer_address(mapping) if writable else None
        region = MemoryRegion(mapping, size, addr=address, owner=mapping)
        self._mappings[id(region)] = mapping
        return region

    def munmap(self, region: Region) -> None:
        mapping = self._mappings.pop(id(region), None)
        if mapping is None:
            raise OSError(errno.EINVAL, "munmap of a region this seam did not map")
        if isinstance(region, MemoryRegion):
            region.release()
        self._close_mapping(mapping)

    @staticmethod
    def _close_mapping(mapping: mmap.mmap) -> None:
        try:
            mapping.close()
        except BufferError as exc:
            raise OSError(errno.EBUSY, "the mapping still has live views (sub-regions or memoryviews "
                                       "taken from it); drop them before unmapping") from exc

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def readlink(self, path: str) -> str:
        return os.readlink(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    # -- events ------------------------------------------------------------------------------
    def eventfd(self, initval: int = 0, nonblocking: bool = True) -> int:
        create = getattr(os, "eventfd", None)
        if create is None:
            raise BackendUnavailable(f"eventfd needs Linux (this is {sys.platform})")
        flags = os.EFD_CLOEXEC | (os.EFD_NONBLOCK if nonblocking else 0)
        return create(initval, flags)

    def poll(self, fds: list[int], timeout_s: float) -> list[int]:
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        timeout_ms = poll_timeout_ms(timeout_s)
        events = poller.poll(timeout_ms)
        return [fd for fd, mask in events if mask & select.POLLIN]

    # -- memory ------------------------------------------------------------------------------
    def alloc_locked(self, size: int) -> HostMemory:
        return self._alloc_anonymous(size, lock=True)

    def alloc_pages(self, size: int) -> HostMemory:
        return self._alloc_anonymous(size, lock=False)

    def alloc_shared(self, size: int, lock: bool = True) -> HostMemory:
        """Memory in a memfd (memfd_create(2)) mapped MAP_SHARED; `fd` passes it to another process."""
        if size <= 0:
            raise OSError(errno.EINVAL, f"cannot allocate {size} bytes")
        if not hasattr(os, "memfd_create"):
            raise OSError(errno.EOPNOTSUPP, "this platform has no memfd_create")
        fd = os.memfd_create("gpuhal-dma", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, _round_up_to_page(size))
            return self._alloc_anonymous(size, lock, fd=fd)
        except BaseException:
            os.close(fd)
            raise

    def _alloc_anonymous(self, size: int, lock: bool, fd: int | None = None) -> HostMemory:
        if size <= 0:
            raise OSError(errno.EINVAL, f"cannot allocate {size} bytes")
        rounded = _round_up_to_page(size)
        if fd is None:
            mapping = mmap.mmap(-1, rounded, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                                prot=mmap.PROT_READ | mmap.PROT_WRITE)
        else:
            mapping = mmap.mmap(fd, rounded, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        address = _buffer_address(mapping)
        try:
            _keep_out_of_forked_children(mapping)
            if lock:
                self._libc.mlock(address, rounded)
        except BaseException:
            mapping.close()
            raise
        region = MemoryRegion(mapping, rounded, addr=address, owner=mapping)
        self._mappings[id(region)] = mapping
        if lock:
            self._locked.add(id(region))
        return HostMemory(region=region, addr=address, size=rounded, fd=fd)

    def free_locked(self, mem: HostMemory) -> None:
        mapping = self._mappings.pop(id(mem.region), None)
        if mapping is None:
            raise OSError(errno.EINVAL, "free_locked of memory this seam did not allocate")
        locked = id(mem.region) in self._locked
        self._locked.discard(id(mem.region))
        try:
            if locked:
                self._libc.munlock(mem.addr, mem.size)
        finally:
            if isinstance(mem.region, MemoryRegion):
                mem.region.release()
            self._close_mapping(mapping)
            if mem.fd is not None:
                os.close(mem.fd)
                mem.fd = None
