"""The ownership lock between two real processes on a real lock directory (host seam)."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import pytest

from hal.errors import DeviceBusy, InvalidArgument
from hal.lock import OwnershipLock, lock_path
from hal.os import host

BDF = "0000:01:00.0"

HOLDER = textwrap.dedent("""
    import sys
    from hal.lock import OwnershipLock
    from hal.os import host
    lock = OwnershipLock(host(), sys.argv[1], sys.argv[2])
    lock.acquire()
    print("locked", flush=True)
    sys.stdin.readline()
    lock.release()
""")


@pytest.fixture
def holder(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", HOLDER, BDF, str(tmp_path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=str(_repo_root()))
    try:
        assert child.stdout.readline().strip() == "locked"
        yield child
    finally:
        if child.poll() is None:
            child.stdin.write("\n")
            child.stdin.flush()
        child.wait(timeout=10)


def _repo_root():
    import pathlib

    return pathlib.Path(__file__).resolve().parents[2]


def test_second_process_is_told_who_holds_the_device(holder, tmp_path):
    lock = OwnershipLock(host(), BDF, str(tmp_path))
    with pytest.raises(DeviceBusy) as info:
        lock.acquire()
    assert info.value.holder_pid == holder.pid
    assert str(holder.pid) in str(info.value)
    assert not lock.held


def test_lock_is_free_again_once_the_holder_exits(holder, tmp_path):
    holder.stdin.write("\n")
    holder.stdin.flush()
    holder.wait(timeout=10)
    lock = OwnershipLock(host(), BDF, str(tmp_path))
    lock.acquire()
    try:
        with open(lock_path(str(tmp_path), BDF)) as handle:
            assert handle.read().strip() == str(host().getpid())
    finally:
        lock.release()
    assert not lock.held


def test_a_missing_lock_directory_says_so(tmp_path):
    missing = tmp_path / "not-there"
    lock = OwnershipLock(host(), BDF, str(missing))
    with pytest.raises(InvalidArgument, match="lock directory.*does not exist.*GPUHAL_LOCK_DIR"):
        lock.acquire()
    assert not lock.held


class _ScriptedOpens:
    """The host seam, except that open() first plays `script`: per call, None (really open) or an errno
    to raise after `before(path)` ran (another process acting in between). `opened_with` records flags."""

    def __init__(self, script: list[int | None], before=None) -> None:
        self.real = host()
        self.script = list(script)
        self.before = before
        self.opened_with: list[int] = []

    def __getattr__(self, name: str):
        return getattr(self.real, name)

    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        self.opened_with.append(flags)
        answer = self.script.pop(0) if self.script else None
        if answer is None:
            return self.real.open(path, flags, mode)
        if self.before is not None:
            self.before(path)
        raise OSError(answer, os.strerror(answer), path)


class _ProtectedRegular(_ScriptedOpens):
    """fs.protected_regular >= 1 in a sticky world-writable directory, for a file another user owns: an
    O_CREAT open (without O_EXCL) of the existing file fails with EACCES, even for root."""

    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        if _creates(flags) and not flags & os.O_EXCL and os.path.exists(path):
            self.opened_with.append(flags)
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), path)
        return super().open(path, flags, mode)


def _creates(flags: int) -> bool:
    return bool(flags & os.O_CREAT)


def _touch(path: str) -> None:
    with open(path, "a"):
        pass


def test_an_existing_lock_file_is_opened_without_o_creat(tmp_path):
    _touch(lock_path(str(tmp_path), BDF))
    seam = _ProtectedRegular([])
    lock = OwnershipLock(seam, BDF, str(tmp_path))
    lock.acquire()
    try:
        assert [_creates(flags) for flags in seam.opened_with] == [False]
    finally:
        lock.release()


def test_a_missing_lock_file_is_created_exclusively(tmp_path):
    seam = _ScriptedOpens([])
    lock = OwnershipLock(seam, BDF, str(tmp_path))
    lock.acquire()
    try:
        assert [_creates(flags) for flags in seam.opened_with] == [False, True]
        assert seam.opened_with[1] & os.O_EXCL
        assert os.path.exists(lock_path(str(tmp_path), BDF))
    finally:
        lock.release()


def test_a_lock_file_created_by_another_process_meanwhile_is_opened_on_retry(tmp_path):
    # missing at first; another process creates it, so the exclusive create fails (EEXIST); open it
    seam = _ProtectedRegular([errno.ENOENT, errno.EEXIST], before=_touch)
    lock = OwnershipLock(seam, BDF, str(tmp_path))
    lock.acquire()
    try:
        assert [_creates(flags) for flags in seam.opened_with] == [False, True, False]
        assert seam.opened_with[1] & os.O_EXCL
    finally:
        lock.release()


def _protected_regular() -> int:
    try:
        with open("/proc/sys/fs/protected_regular") as setting:
            return int(setting.read())
    except OSError:
        return 0


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0 or _protected_regular() < 1,
                    reason="needs root and fs.protected_regular >= 1 (the fake seam tests above cover the "
                           "open order everywhere)")
def test_root_takes_a_lock_file_another_user_left_in_a_sticky_world_writable_directory(tmp_path):
    lock_dir = tmp_path / "lock"
    lock_dir.mkdir()
    lock_dir.chmod(0o1777)
    path = lock_path(str(lock_dir), BDF)
    with open(path, "w"):
        pass
    nobody = 65534  # any uid other than the directory owner's and ours
    os.chown(path, nobody, nobody)
    lock = OwnershipLock(host(), BDF, str(lock_dir))
    lock.acquire()
    try:
        assert lock.held
    finally:
        lock.release()
