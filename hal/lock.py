"""The device ownership lock: one flock'ed file per PCI function, holding the owner's pid.

The file is `<lock_dir>/gpuhal-<bdf>.lock` (lock_dir: the seam's `default_lock_dir()`, i.e.
$GPUHAL_LOCK_DIR or /run/lock). flock locks die with their process, so a crashed owner never leaves
a device locked; the pid inside only names the holder in `DeviceBusy`.
"""
from __future__ import annotations

import errno
import logging

from hal.errors import DeviceBusy, HalError, InvalidArgument, from_oserror
from hal.os import O_CLOEXEC, O_CREAT, O_EXCL, O_RDWR, OS

log = logging.getLogger(__name__)

PID_FIELD_WIDTH = 12  # room for any pid plus a newline, so a shorter pid overwrites a longer one
LOCK_FILE_MODE = 0o644
OPEN_ATTEMPTS = 2  # open-or-create, then once more when another process created the file in between


def lock_path(lock_dir: str, bdf: str) -> str:
    return f"{lock_dir.rstrip('/')}/gpuhal-{bdf}.lock"


class OwnershipLock:
    """An exclusive, non-blocking flock on the device's lock file; `release()` drops it."""

    def __init__(self, os: OS, bdf: str, lock_dir: str | None = None) -> None:
        self.os = os
        self.bdf = bdf
        self.path = lock_path(lock_dir or os.default_lock_dir(), bdf)
        self._fd: int | None = None

    def _open_existing_or_create(self) -> int:
        """Open the lock file, creating it only when it is missing.

        An existing file is opened without O_CREAT: with fs.protected_regular >= 1 (the systemd
        default) an O_CREAT open of a file another user owns in a sticky world-writable directory such
        as /run/lock fails with EACCES even for root (fs/namei.c may_create_in_sticky). O_CREAT|O_EXCL
        only when it is missing; EEXIST there means another process created it meanwhile, so open it.
        """
        for attempt in range(OPEN_ATTEMPTS):
            try:
                return self.os.open(self.path, O_RDWR | O_CLOEXEC)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
            try:
                return self.os.open(self.path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, LOCK_FILE_MODE)
            except OSError as exc:
                if exc.errno != errno.EEXIST or attempt == OPEN_ATTEMPTS - 1:
                    raise
        raise OSError(errno.EEXIST, f"{self.path} kept appearing and disappearing")

    def acquire(self) -> None:
        try:
            fd = self._open_existing_or_create()
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise InvalidArgument(f"the lock directory of {self.path} does not exist: create it, or set "
                                      "GPUHAL_LOCK_DIR to a writable directory", errno=exc.errno) from exc
            raise from_oserror(exc, f"opening the ownership lock {self.path} "
                                    "(set GPUHAL_LOCK_DIR to a writable directory)") from exc
        try:
            self.os.flock(fd, exclusive=True, blocking=False)
        except OSError as exc:
            holder = self._read_holder(fd)
            self.os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                who = f"process {holder}" if holder else "another process"
                raise DeviceBusy(f"{self.bdf} is owned by {who} (lock {self.path}); "
                                 "close it there or wait for it to exit",
                                 holder_pid=holder, errno=exc.errno) from exc
            raise from_oserror(exc, f"locking {self.path}") from exc
        try:
            record = f"{self.os.getpid()}\n".ljust(PID_FIELD_WIDTH).encode()
            self.os.pwrite(fd, record, 0)
        except OSError as exc:
            self.os.close(fd)
            raise from_oserror(exc, f"writing the owner pid into {self.path}") from exc
        self._fd = fd
        log.debug("locked %s", self.path)

    def _read_holder(self, fd: int) -> int | None:
        try:
            text = self.os.pread(fd, PID_FIELD_WIDTH, 0).decode(errors="replace").strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        fd = self._fd
        self._fd = None
        try:
            self.os.pwrite(fd, b" " * PID_FIELD_WIDTH, 0)
        except OSError as exc:
            log.debug("could not clear %s: %s", self.path, exc)
        try:
            self.os.close(fd)
        except OSError as exc:
            raise HalError(f"closing the ownership lock {self.path}: {exc}", errno=exc.errno) from exc
