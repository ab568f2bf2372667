"""The ownership lock between two real processes on a real lock directory (host seam)."""
from __future__ import annotations

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
