"""The real host seam: eventfd/poll, anonymous locked and unlocked memory, mmap regions, pagemap (no
device needed)."""
from __future__ import annotations

import ctypes
import errno
import faulthandler
import os
import signal
import sys
import time

import pytest

from hal.errors import PermissionDenied, from_oserror
from hal.host_os import poll_timeout_ms
from hal.os import PAGE_SIZE, host
from hal.region import MemoryRegion

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux")


@linux_only
def test_eventfd_poll_times_out_then_sees_a_write():
    seam = host()
    fd = seam.eventfd(0, nonblocking=True)
    try:
        start = time.monotonic()
        assert seam.poll([fd], 0.05) == []
        assert time.monotonic() - start >= 0.04
        seam.write(fd, (3).to_bytes(8, "little"))
        assert seam.poll([fd], 1.0) == [fd]
        assert int.from_bytes(seam.read(fd, 8), "little") == 3
        with pytest.raises(OSError) as info:
            seam.read(fd, 8)
        assert info.value.errno == errno.EAGAIN
    finally:
        seam.close(fd)


@linux_only
def test_alloc_locked_gives_page_rounded_writable_memory_with_an_address():
    seam = host()
    mem = seam.alloc_locked(PAGE_SIZE + 1)
    try:
        assert mem.size == 2 * PAGE_SIZE
        assert mem.addr % PAGE_SIZE == 0
        assert isinstance(mem.region, MemoryRegion)
        mem.region.write32(PAGE_SIZE, 0xDEADBEEF)
        assert mem.region.read32(PAGE_SIZE) == 0xDEADBEEF
        assert mem.region.read(PAGE_SIZE, 4) == (0xDEADBEEF).to_bytes(4, "little")
    finally:
        seam.free_locked(mem)


@linux_only
def test_a_sub_millisecond_poll_waits_at_least_its_timeout():
    seam = host()
    fd = seam.eventfd(0, nonblocking=True)
    try:
        start = time.monotonic()
        assert seam.poll([fd], 0.0005) == []
        assert time.monotonic() - start >= 0.0005
    finally:
        seam.close(fd)


@pytest.mark.parametrize(("timeout_s", "milliseconds"), [
    (0.0005, 1), (0.0011, 2), (0.007, 7), (1.0, 1000), (0.0, 0), (-1.0, 0)])
def test_poll_timeouts_round_up_to_whole_milliseconds(timeout_s, milliseconds):
    assert poll_timeout_ms(timeout_s) == milliseconds


def _locked_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmLck:"):
                return int(line.split()[1])
    raise AssertionError("/proc/self/status has no VmLck line")


@linux_only
def test_alloc_pages_is_not_mlocked_and_alloc_locked_is():
    seam = host()
    before = _locked_kib()
    pages = seam.alloc_pages(4 * PAGE_SIZE)
    try:
        pages.region.write32(3 * PAGE_SIZE, 0x12345678)
        assert pages.region.read32(3 * PAGE_SIZE) == 0x12345678
        assert _locked_kib() == before
        locked = seam.alloc_locked(4 * PAGE_SIZE)
        try:
            assert _locked_kib() == before + 4 * PAGE_SIZE // 1024
        finally:
            seam.free_locked(locked)
        assert _locked_kib() == before
    finally:
        seam.free_locked(pages)


@linux_only
@pytest.mark.parametrize("allocate", ["alloc_locked", "alloc_pages"])
def test_dma_memory_is_not_inherited_by_a_forked_child(allocate):
    seam = host()
    mem = getattr(seam, allocate)(PAGE_SIZE)
    try:
        mem.region.write32(0, 0x600DF00D)
        child = os.fork()
        if child == 0:
            faulthandler.disable()  # the expected SIGSEGV needs no traceback
            # MADV_DONTFORK: the child has no mapping there, so this read kills it with SIGSEGV
            ctypes.string_at(mem.addr, 4)
            os._exit(0)
        _, status = os.waitpid(child, 0)
        assert os.WIFSIGNALED(status), f"the child read the parent's DMA page (status {status:#x})"
        assert os.WTERMSIG(status) in (signal.SIGSEGV, signal.SIGBUS)
        assert mem.region.read32(0) == 0x600DF00D
    finally:
        seam.free_locked(mem)


@linux_only
def test_alloc_locked_rejects_a_bad_size():
    with pytest.raises(OSError) as info:
        host().alloc_locked(0)
    assert info.value.errno == errno.EINVAL


@linux_only
def test_pagemap_gives_frames_as_root_or_permission_denied_otherwise():
    seam = host()
    mem = seam.alloc_locked(2 * PAGE_SIZE)
    try:
        try:
            phys = seam.pagemap(mem)
        except OSError as exc:
            assert os.geteuid() != 0
            assert isinstance(from_oserror(exc, "pagemap"), PermissionDenied)
            return
        assert len(phys) == 2
        assert all(address > 0 and address % PAGE_SIZE == 0 for address in phys)
        assert mem.phys == phys
    finally:
        seam.free_locked(mem)


@linux_only
def test_mmap_of_a_file_is_a_memory_region_and_munmap_releases_it(tmp_path):
    seam = host()
    path = tmp_path / "window"
    path.write_bytes(bytes(PAGE_SIZE))
    fd = seam.open(str(path), os.O_RDWR)
    try:
        region = seam.mmap(fd, PAGE_SIZE)
        region.write32(8, 0x12345678)
        region.write64(16, 0x1122334455667788)
        assert region.read64(16) == 0x1122334455667788
        assert region.addr is not None
        seam.munmap(region)
        with pytest.raises(OSError):
            seam.munmap(region)
    finally:
        seam.close(fd)
    assert path.read_bytes()[8:12] == (0x12345678).to_bytes(4, "little")


def test_listdir_readlink_exists(tmp_path):
    seam = host()
    (tmp_path / "b").write_text("x")
    (tmp_path / "a").symlink_to("b")
    assert seam.listdir(str(tmp_path)) == ["a", "b"]
    assert seam.readlink(str(tmp_path / "a")) == "b"
    assert seam.exists(str(tmp_path / "b"))
    assert not seam.exists(str(tmp_path / "c"))


def test_default_lock_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GPUHAL_LOCK_DIR", str(tmp_path))
    assert host().default_lock_dir() == str(tmp_path)
    monkeypatch.delenv("GPUHAL_LOCK_DIR")
    assert host().default_lock_dir() == "/run/lock"


def test_missing_eventfd_is_reported_as_unavailable_not_an_import_error(monkeypatch):
    from hal.errors import BackendUnavailable
    from hal.host_os import HostOS

    monkeypatch.delattr(os, "eventfd", raising=False)
    with pytest.raises(BackendUnavailable, match="eventfd needs Linux"):
        HostOS().eventfd()
