"""`MockOS`: the hal.os.OS seam implemented over the simulated kernel of one Machine.

File descriptors are virtual (numbered from FIRST_FD so they never collide with real ones). Paths
resolve through the machine's simulated tree (sysfs, /dev/vfio, /proc/self/pagemap) with symlinks
followed as the kernel would; the ownership-lock directory is the one exception: paths under
/run/lock (and under the machine's real lock directory) go to the real filesystem, so flock works
between processes. Any other path is ENOENT.
"""
from __future__ import annotations

import errno
import fcntl
import os as _os
import posixpath
import time
from typing import TYPE_CHECKING

from hal.os import O_RDONLY, O_RDWR, O_WRONLY, OS, PAGE_SIZE, HostMemory
from hal.region import MemoryRegion, Region
from mockgpu.files import EventFD, MockFile
from mockgpu.sysfs import Attr, AttrFile, Dir, Link, Node, Special

if TYPE_CHECKING:
    from mockgpu.machine import Machine

FIRST_FD = 10000
SIMULATED_LOCK_DIR = "/run/lock"  # Filesystem Hierarchy Standard 3.0 sec 5.9: lock files live here
MAX_SYMLINKS = 40  # fs/namei.c: MAXSYMLINKS
ACCESS_MODE_MASK = O_RDONLY | O_WRONLY | O_RDWR



class RealFile(MockFile):
    """A real file descriptor (lock directory pass-through)."""

    def __init__(self, path: str, fd: int) -> None:
        super().__init__(path)
        self.fd = fd

    def read(self, n: int) -> bytes:
        return _os.read(self.fd, n)

    def write(self, data: bytes) -> int:
        return _os.write(self.fd, data)

    def pread(self, n: int, offset: int) -> bytes:
        return _os.pread(self.fd, n, offset)

    def pwrite(self, data: bytes, offset: int) -> int:
        return _os.pwrite(self.fd, data, offset)

    def close(self) -> None:
        _os.close(self.fd)


class MockOS(OS):
    """The seam over a simulated kernel. See the module docstring."""

    name = "mock"

    def __init__(self, machine: "Machine") -> None:
        self.machine = machine
        self._files: dict[int, MockFile] = {}
        self._modes: dict[int, int] = {}
        self._next_fd = FIRST_FD
        self._mapped: dict[int, Region] = {}
        self._allocations: dict[int, HostMemory] = {}

    # -- fd table ------------------------------------------------------------------------------
    def install(self, file: MockFile, access: int = O_RDWR) -> int:
        fd = self._next_fd
        self._next_fd += 1
        self._files[fd] = file
        self._modes[fd] = access
        return fd

    def file_of(self, fd: int) -> MockFile:
        file = self._files.get(fd)
        if file is None:
            raise OSError(errno.EBADF, f"bad file descriptor {fd}")
        return file

    def eventfd_of(self, fd: int) -> EventFD:
        file = self.file_of(fd)
        if not isinstance(file, EventFD):
            raise OSError(errno.EINVAL, f"fd {fd} is not an eventfd")
        return file

    @property
    def open_fds(self) -> list[int]:
        """Descriptors still open (tests use it to check nothing leaks)."""
        return sorted(self._files)

    def _readable(self, fd: int) -> MockFile:
        file = self.file_of(fd)
        if self._modes[fd] == O_WRONLY:
            raise OSError(errno.EBADF, f"fd {fd} is not open for reading")
        return file

    def _writable(self, fd: int) -> MockFile:
        file = self.file_of(fd)
        if self._modes[fd] == O_RDONLY:
            raise OSError(errno.EBADF, f"fd {fd} is not open for writing")
        return file

    # -- paths ---------------------------------------------------------------------------------
    def _real_path(self, path: str) -> str | None:
        real_dir = self.machine.lock_dir
        for prefix in (SIMULATED_LOCK_DIR, real_dir):
            if path == prefix or path.startswith(prefix + "/"):
                return real_dir + path[len(prefix):]
        return None

    def _resolve(self, path: str, follow_last: bool = True) -> tuple[str, Node]:
        if not path.startswith("/"):
            raise OSError(errno.ENOENT, f"{path}: only absolute paths exist in the mock")
        pending = [part for part in posixpath.normpath(path).split("/") if part]
        hops = 0
        while True:
            node: Node = self.machine.sysfs.root()
            walked: list[str] = []
            restart = None
            for position, name in enumerate(pending):
                if not isinstance(node, Dir):
                    raise OSError(errno.ENOTDIR, f"{'/' + '/'.join(walked)} is not a directory")
                child = node.entries().get(name)
                if child is None:
                    raise OSError(errno.ENOENT, f"{path}: no such file or directory")
                last = position == len(pending) - 1
                if isinstance(child, Link) and (follow_last or not last):
                    hops += 1
                    if hops > MAX_SYMLINKS:
                        raise OSError(errno.ELOOP, f"{path}: too many symbolic links")
                    base = "/" + "/".join(walked)
                    target = posixpath.normpath(posixpath.join(base, child.target))
                    restart = [part for part in target.split("/") if part] + pending[position + 1:]
                    break
                walked.append(name)
                node = child
            if restart is None:
                return "/" + "/".join(walked), node
            pending = restart

    # -- files ---------------------------------------------------------------------------------
    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        access = flags & ACCESS_MODE_MASK
        real = self._real_path(path)
        if real is not None:
            return self.install(RealFile(path, _os.open(real, flags, mode)), access)
        resolved, node = self._resolve(path)
        if isinstance(node, Dir):
            if access != O_RDONLY:
                raise OSError(errno.EISDIR, f"{path} is a directory")
            return self.install(MockFile(resolved), access)
        self._check_permission(resolved, node, access)
        if isinstance(node, Attr):
            file: MockFile = AttrFile(resolved, node)
        elif isinstance(node, Special):
            file = node.opener(resolved, flags)
        else:
            raise OSError(errno.ENOENT, path)
        return self.install(file, access)

    def _check_permission(self, path: str, node: Node, access: int) -> None:
        wants_read = access in (O_RDONLY, O_RDWR)
        wants_write = access in (O_WRONLY, O_RDWR)
        if self.machine.root:
            read_ok = bool(node.mode & 0o444)
            write_ok = bool(node.mode & 0o222)
        else:
            read_ok = bool(node.mode & 0o004)
            write_ok = bool(node.mode & 0o002)
        if (wants_read and not read_ok) or (wants_write and not write_ok):
            raise OSError(errno.EACCES, f"{path}: permission denied")

    def close(self, fd: int) -> None:
        file = self.file_of(fd)
        del self._files[fd]
        del self._modes[fd]
        file.close()

    def read(self, fd: int, n: int) -> bytes:
        return self._readable(fd).read(n)

    def write(self, fd: int, data: bytes) -> int:
        return self._writable(fd).write(bytes(data))

    def pread(self, fd: int, n: int, offset: int) -> bytes:
        if offset < 0:
            raise OSError(errno.EINVAL, "negative offset")
        return self._readable(fd).pread(n, offset)

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        if offset < 0:
            raise OSError(errno.EINVAL, "negative offset")
        return self._writable(fd).pwrite(bytes(data), offset)

    def ioctl(self, fd: int, request: int, arg: int | bytearray | memoryview | None = None) -> int:
        return self.file_of(fd).ioctl(request, arg)

    def flock(self, fd: int, exclusive: bool = True, blocking: bool = False) -> None:
        file = self.file_of(fd)
        if not isinstance(file, RealFile):
            return
        operation = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        if not blocking:
            operation |= fcntl.LOCK_NB
        fcntl.flock(file.fd, operation)

    def mmap(self, fd: int, size: int, offset: int = 0, writable: bool = True) -> Region:
        file = self.file_of(fd)
        if writable and self._modes[fd] == O_RDONLY:
            raise OSError(errno.EACCES, f"fd {fd} is read-only; cannot map it writable")
        if offset % PAGE_SIZE:
            raise OSError(errno.EINVAL, f"mmap offset {offset:#x} is not page aligned")
        region = file.mmap(size, offset, writable)
        self._mapped[id(region)] = region
        return region

    def munmap(self, region: Region) -> None:
        if self._mapped.pop(id(region), None) is None:
            raise OSError(errno.EINVAL, "region was not mapped through this OS")
        if isinstance(region, MemoryRegion):
            region.release()

    def listdir(self, path: str) -> list[str]:
        real = self._real_path(path)
        if real is not None:
            return _os.listdir(real)
        _, node = self._resolve(path)
        if not isinstance(node, Dir):
            raise OSError(errno.ENOTDIR, f"{path} is not a directory")
        return sorted(node.entries())

    def readlink(self, path: str) -> str:
        real = self._real_path(path)
        if real is not None:
            return _os.readlink(real)
        _, node = self._resolve(path, follow_last=False)
        if not isinstance(node, Link):
            raise OSError(errno.EINVAL, f"{path} is not a symbolic link")
        return node.target

    def exists(self, path: str) -> bool:
        real = self._real_path(path)
        if real is not None:
            return _os.path.exists(real)
        try:
            self._resolve(path)
        except OSError:
            return False
        return True

    # -- events --------------------------------------------------------------------------------
    def eventfd(self, initval: int = 0, nonblocking: bool = True) -> int:
        return self.install(EventFD(initval, nonblocking))

    def poll(self, fds: list[int], timeout_s: float) -> list[int]:
        files = [(fd, self.file_of(fd)) for fd in fds]
        deadline = time.monotonic() + max(timeout_s, 0.0)
        while True:
            self.machine.run_due_events()
            ready = [fd for fd, file in files if file.readable_now()]
            now = time.monotonic()
            if ready or now >= deadline:
                return ready
            wake = deadline
            next_event = self.machine.next_event_time()
            if next_event is not None:
                wake = min(wake, next_event)
            time.sleep(max(wake - now, 0.0))

    # -- memory --------------------------------------------------------------------------------
    def alloc_locked(self, size: int) -> HostMemory:
        return self._allocate(size, lock=True)

    def alloc_pages(self, size: int) -> HostMemory:
        """Not mlock'ed: only VFIO_IOMMU_MAP_DMA's pinning counts these against RLIMIT_MEMLOCK."""
        return self._allocate(size, lock=False)

    def usb_host(self):
        """The simulated machine's USB bus (mockgpu.usb.bus.USBBus)."""
        return self.machine.usb

    def alloc_shared(self, size: int, lock: bool = True) -> HostMemory:
        """Simulated RAM whose pages are a real memfd (`fd`), as HostOS.alloc_shared."""
        return self._allocate(size, lock=lock, shared=True)

    def _allocate(self, size: int, lock: bool, shared: bool = False) -> HostMemory:
        alloc = self.machine.ram.allocate(size, lock=lock, shared=shared)
        mem = HostMemory(region=alloc.region, addr=alloc.vaddr, size=alloc.size, fd=alloc.fd)
        self._allocations[alloc.vaddr] = mem
        return mem

    def free_locked(self, mem: HostMemory) -> None:
        if self._allocations.pop(mem.addr, None) is None:
            raise OSError(errno.EINVAL, f"no locked allocation at {mem.addr:#x}")
        self.machine.ram.free(mem.addr)

    def getpid(self) -> int:
        return _os.getpid()

    def sleep(self, seconds: float) -> None:
        """Real time passes, and scheduled device events that fall due run on the way."""
        deadline = time.monotonic() + max(seconds, 0.0)
        while True:
            self.machine.run_due_events()
            now = time.monotonic()
            if now >= deadline:
                return
            wake = deadline
            next_event = self.machine.next_event_time()
            if next_event is not None:
                wake = min(wake, next_event)
            time.sleep(max(wake - now, 0.0))

    def default_lock_dir(self) -> str:
        """The machine's real lock directory (so locks are real flocks other processes see)."""
        return self.machine.lock_dir
