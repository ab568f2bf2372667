"""The simulated sysfs tree: formats, links, permissions, driver binding, remove/rescan, locks."""
from __future__ import annotations

import errno
import multiprocessing
import os

import pytest
from autogen.linux import pci_regs
from mockgpu_helpers import EDU_SYSFS, config_read, config_write

from hal.os import O_CREAT, O_RDONLY, O_RDWR, O_WRONLY
from mockgpu import EDU_BDF, GPU_BDF, Machine, RootPort
from mockgpu.edu import EDU_ID, EDU_ID_VALUE
from mockgpu.navi31 import Navi31Function


def errno_of(call, *args) -> int:
    with pytest.raises(OSError) as excinfo:
        call(*args)
    return excinfo.value.errno


def test_device_listing_and_links(machine):
    devices = machine.os.listdir("/sys/bus/pci/devices")
    assert EDU_BDF in devices and GPU_BDF in devices
    assert machine.os.readlink(f"/sys/bus/pci/devices/{EDU_BDF}") == \
        "../../../devices/pci0000:00/0000:00:01.0/0000:01:00.0"
    assert machine.os.readlink(f"{EDU_SYSFS}/driver").endswith("/bus/pci/drivers/edu")
    assert machine.os.exists(f"{EDU_SYSFS}/driver/bind")  # the link resolves
    group = machine.os.readlink(f"{EDU_SYSFS}/iommu_group").rsplit("/", 1)[-1]
    assert machine.os.listdir(f"/sys/kernel/iommu_groups/{group}/devices") == [EDU_BDF]


def test_attribute_formats(machine):
    base = f"/sys/bus/pci/devices/{GPU_BDF}"
    assert machine.os.read_text(f"{base}/vendor") == "0x1002\n"
    assert machine.os.read_text(f"{base}/class") == "0x030000\n"
    assert machine.os.read_text(f"{base}/driver_override") == "(null)\n"
    lines = machine.os.read_text(f"{base}/resource").splitlines()
    assert len(lines) == 13
    start, end, flags = (int(field, 16) for field in lines[0].split())
    assert end - start + 1 == 256 << 20
    assert start == machine.device(GPU_BDF).bar_address(0)
    assert lines[1] == " ".join(["0x" + "0" * 16] * 3)  # upper half of the 64-bit BAR
    assert machine.os.read_text(f"{EDU_SYSFS}/reset_method") == "flr bus\n"
    assert not machine.os.exists(f"{base}/reset")  # no method for the GPU


def test_unknown_paths_and_read_only_files(machine):
    assert errno_of(machine.os.open, "/sys/bus/pci/devices/0000:09:00.0/config", O_RDONLY) == errno.ENOENT
    assert errno_of(machine.os.open, "/etc/passwd", O_RDONLY) == errno.ENOENT
    assert errno_of(machine.os.open, f"{EDU_SYSFS}/vendor", O_WRONLY) == errno.EACCES
    assert errno_of(machine.os.open, f"{EDU_SYSFS}/reset", O_RDONLY) == errno.EACCES
    assert errno_of(machine.os.readlink, f"{EDU_SYSFS}/vendor") == errno.EINVAL
    assert not machine.os.exists("/dev/vfio/1")  # edu is not bound to vfio-pci


def test_unprivileged_process(machine):
    machine.set_root(False)
    fd = machine.os.open(f"{EDU_SYSFS}/config", O_RDONLY)
    assert len(machine.os.pread(fd, 256, 0)) == 64
    machine.os.close(fd)
    assert errno_of(machine.os.open, f"{EDU_SYSFS}/config", O_RDWR) == errno.EACCES
    assert errno_of(machine.os.open, f"{EDU_SYSFS}/resource0", O_RDWR) == errno.EACCES
    assert errno_of(machine.os.write_text, "/sys/bus/pci/drivers/edu/unbind", EDU_BDF) == errno.EACCES
    mem = machine.os.alloc_locked(4096)
    assert errno_of(machine.os.pagemap, mem) == errno.EPERM
    machine.os.free_locked(mem)


def test_unbind_bind_and_override(machine):
    machine.os.write_text("/sys/bus/pci/drivers/edu/unbind", EDU_BDF)
    assert not machine.os.exists(f"{EDU_SYSFS}/driver")
    assert errno_of(machine.os.write_text, "/sys/bus/pci/drivers/edu/unbind", EDU_BDF) == errno.ENODEV
    assert errno_of(machine.os.write_text, "/sys/bus/pci/drivers/amdgpu/bind", EDU_BDF) == errno.ENODEV
    machine.os.write_text("/sys/bus/pci/drivers/edu/bind", EDU_BDF)
    assert machine.os.readlink(f"{EDU_SYSFS}/driver").endswith("/edu")
    machine.os.write_text("/sys/bus/pci/drivers/edu/unbind", EDU_BDF)
    machine.os.write_text(f"{EDU_SYSFS}/driver_override", "vfio-pci\n")
    assert machine.os.read_text(f"{EDU_SYSFS}/driver_override") == "vfio-pci\n"
    machine.os.write_text("/sys/bus/pci/drivers_probe", EDU_BDF)
    assert machine.os.readlink(f"{EDU_SYSFS}/driver").endswith("/vfio-pci")
    assert "1" in machine.os.listdir("/dev/vfio")
    machine.os.write_text("/sys/bus/pci/drivers/vfio-pci/unbind", EDU_BDF)
    machine.os.write_text(f"{EDU_SYSFS}/driver_override", "\n")
    machine.os.write_text("/sys/bus/pci/drivers_probe", EDU_BDF)
    assert machine.os.readlink(f"{EDU_SYSFS}/driver").endswith("/edu")


def test_new_id_binds_matching_unbound_devices(machine):
    machine.os.write_text("/sys/bus/pci/drivers/edu/unbind", EDU_BDF)
    machine.os.write_text("/sys/bus/pci/drivers/vfio-pci/new_id", "1234 11e8")
    assert machine.os.readlink(f"{EDU_SYSFS}/driver").endswith("/vfio-pci")


def test_binding_sets_and_unbinding_clears_bus_master(machine):
    assert config_read(machine, EDU_BDF, pci_regs.PCI_COMMAND, 2) & pci_regs.PCI_COMMAND_MASTER
    machine.os.write_text("/sys/bus/pci/drivers/edu/unbind", EDU_BDF)
    assert not config_read(machine, EDU_BDF, pci_regs.PCI_COMMAND, 2) & pci_regs.PCI_COMMAND_MASTER


def test_remove_and_rescan(machine):
    machine.os.write_text(f"{EDU_SYSFS}/remove", "1")
    assert EDU_BDF not in machine.os.listdir("/sys/bus/pci/devices")
    machine.os.write_text("/sys/bus/pci/rescan", "1")
    assert machine.os.readlink(f"{EDU_SYSFS}/driver").endswith("/edu")


def test_resource_mmap_validation(machine):
    fd = machine.os.open(f"{EDU_SYSFS}/resource0", O_RDWR)
    assert errno_of(machine.os.mmap, fd, 2 << 20, 0) == errno.EINVAL
    assert errno_of(machine.os.mmap, fd, 4096, 100) == errno.EINVAL
    assert errno_of(machine.os.pread, fd, 4, 0) == errno.EINVAL  # memory BARs are not read()
    region = machine.os.mmap(fd, 4096, 0)
    assert region.read32(EDU_ID) == EDU_ID_VALUE
    machine.os.munmap(region)
    machine.os.close(fd)
    assert errno_of(machine.os.close, fd) == errno.EBADF


def test_io_bar_resource_read_write(machine):
    fd = machine.os.open(f"/sys/bus/pci/devices/{GPU_BDF}/resource4", O_RDWR)
    assert machine.os.pread(fd, 4, 0) == bytes(4)
    assert errno_of(machine.os.pread, fd, 3, 0) == errno.EINVAL
    assert errno_of(machine.os.mmap, fd, 4096, 0) == errno.EINVAL
    machine.os.close(fd)


def test_io_bar_accesses_need_no_alignment_and_read_nothing_past_the_end(machine):
    # pci_resource_io does inb/inw/inl at any port; sysfs clamps each access to the file's size
    fd = machine.os.open(f"/sys/bus/pci/devices/{GPU_BDF}/resource4", O_RDWR)
    try:
        assert machine.os.pread(fd, 4, 2) == bytes(4)
        assert machine.os.pwrite(fd, b"\x12\x34", 1) == 2
        assert machine.os.pread(fd, 4, 254) == bytes(2)  # clamped to the last two ports
        assert machine.os.pread(fd, 4, 256) == b""
        assert machine.os.pread(fd, 4, 4096) == b""
        assert errno_of(machine.os.pwrite, fd, b"\0", 256) == errno.EFBIG
    finally:
        machine.os.close(fd)


def _hold_lock(lock_dir, ready, release):
    m = Machine.default(lock_dir=lock_dir)
    fd = m.os.open(f"{m.os.default_lock_dir()}/gpuhal-{EDU_BDF}.lock", O_RDWR | O_CREAT, 0o644)
    m.os.flock(fd, exclusive=True, blocking=False)
    m.os.pwrite(fd, str(os.getpid()).encode(), 0)
    ready.set()
    release.wait(10)
    m.os.close(fd)


def test_lock_file_contention_between_processes(tmp_path):
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    release = context.Event()
    holder = context.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        m = Machine.default(lock_dir=str(tmp_path))
        fd = m.os.open(f"/run/lock/gpuhal-{EDU_BDF}.lock", O_RDWR | O_CREAT, 0o644)
        with pytest.raises(BlockingIOError):
            m.os.flock(fd, exclusive=True, blocking=False)
        assert int(m.os.pread(fd, 32, 0)) == holder.pid
        release.set()
        holder.join(10)
        m.os.flock(fd, exclusive=True, blocking=False)
        m.os.close(fd)
    finally:
        release.set()
        holder.join(10)


def test_bind_to_a_bound_device_is_busy_and_to_a_foreign_driver_no_device(machine):
    # drivers/base/bus.c bind_store: a driver that matches meets dev->driver -> EBUSY (dd.c
    # __driver_probe_device); one that does not match -> ENODEV
    assert errno_of(machine.os.write_text, "/sys/bus/pci/drivers/edu/bind", EDU_BDF) == errno.EBUSY
    assert errno_of(machine.os.write_text, "/sys/bus/pci/drivers/amdgpu/bind", EDU_BDF) == errno.ENODEV
    assert errno_of(machine.os.write_text, "/sys/bus/pci/drivers/edu/bind", "0000:09:00.0") == errno.ENODEV
    assert machine.kernel.driver_of(EDU_BDF) == "edu"


@pytest.mark.parametrize("text", ["0", "2", "y", "on", "-1", ""])
def test_reset_accepts_only_1(machine, text):
    device = machine.device(EDU_BDF)
    before = device.reset_count
    assert errno_of(machine.os.write_text, f"{EDU_SYSFS}/reset", text) == errno.EINVAL
    assert device.reset_count == before
    machine.os.write_text(f"{EDU_SYSFS}/reset", "1\n")
    assert device.reset_count == before + 1


def test_enable_is_a_count_and_busy_while_a_driver_is_bound(machine):
    enable = f"{EDU_SYSFS}/enable"
    assert machine.os.read_text(enable) == "1\n"  # the edu driver's pci_enable_device
    assert errno_of(machine.os.write_text, enable, "1") == errno.EBUSY
    assert errno_of(machine.os.write_text, enable, "0") == errno.EBUSY
    machine.os.write_text("/sys/bus/pci/drivers/edu/unbind", EDU_BDF)
    assert machine.os.read_text(enable) == "0\n"
    assert errno_of(machine.os.write_text, enable, "0") == errno.EIO
    assert errno_of(machine.os.write_text, enable, "y") == errno.EINVAL
    machine.os.write_text(enable, "1")
    machine.os.write_text(enable, "0x1")
    assert machine.os.read_text(enable) == "2\n"
    command = config_read(machine, EDU_BDF, pci_regs.PCI_COMMAND, 2)
    assert command & pci_regs.PCI_COMMAND_MEMORY
    config_write(machine, EDU_BDF, pci_regs.PCI_COMMAND, 2, command | pci_regs.PCI_COMMAND_MASTER)
    machine.os.write_text(enable, "0")
    assert config_read(machine, EDU_BDF, pci_regs.PCI_COMMAND, 2) & pci_regs.PCI_COMMAND_MASTER
    machine.os.write_text(enable, "0")  # the last reference: pci_disable_device clears bus mastering
    assert not config_read(machine, EDU_BDF, pci_regs.PCI_COMMAND, 2) & pci_regs.PCI_COMMAND_MASTER
    assert machine.os.read_text(enable) == "0\n"


def test_an_unassigned_bar_has_no_resource_file_and_a_zero_resource_line():
    m = Machine(mmio64_window=1 << 20)  # a host window too small for the GPU's 256 MiB VRAM BAR
    m.add_device(RootPort(), "0000:00:01.0")
    m.add_device(Navi31Function(), "0000:01:00.0", "0000:00:01.0", driver=None)
    base = "/sys/bus/pci/devices/0000:01:00.0"
    assert not m.os.exists(f"{base}/resource0")
    assert m.os.exists(f"{base}/resource5")
    lines = m.os.read_text(f"{base}/resource").splitlines()
    assert lines[0] == " ".join(["0x" + "0" * 16] * 3)


def test_without_pci_mmap_there_are_no_resource_files():
    m = Machine.default(resource_files=False)
    assert not any(name.startswith("resource") and name != "resource"
                   for name in m.os.listdir(f"/sys/bus/pci/devices/{GPU_BDF}")
                   if not name.endswith("_resize"))
    assert int(m.os.read_text(f"/sys/bus/pci/devices/{GPU_BDF}/resource").split()[0], 16) != 0
