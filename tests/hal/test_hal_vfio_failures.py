"""The VFIO backend when the kernel says no: every failed ioctl, open, mmap or allocation leaves
nothing behind (fds, host memory, IOVA ranges, IOMMU mappings) and becomes a typed error that says
what to do. Failures are injected into the mock machine's seam one call at a time."""
from __future__ import annotations

import errno

import pytest
from autogen.linux import vfio
from sysfs_helpers import bind_to_vfio

import hal
from hal.errors import (BackendUnavailable, DeviceBusy, DeviceNotFound, HalError, InvalidArgument,
                        PermissionDenied, UnsupportedOperation)
from hal.os import PAGE_SIZE
from hal.vfio import backend as vfio_backend
from hal.vfio.backend import CONTAINER_PATH, VfioBackend, iova_windows_from_caps
from mockgpu import EDU_BDF, GPU_BDF, Machine
from mockgpu.edu import EDU_DMA_BUFFER_BASE, EDU_INTR_RAISE, EDU_STATUS_DMA_ERROR

EDU = f"vfio:{EDU_BDF}"


class IoctlFaults:
    """Wraps the seam's ioctl: `fail(request, errno, when)` makes matching calls raise."""

    def __init__(self, machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.machine = machine
        self.real = machine.os.ioctl
        self.rules: list[tuple[int, object]] = []
        monkeypatch.setattr(machine.os, "ioctl", self.ioctl)

    def ioctl(self, fd, request, arg=None):
        for wanted, action in self.rules:
            if wanted == request:
                result = action(fd, request, arg)
                if result is not NotImplemented:
                    return result
        return self.real(fd, request, arg)

    def fail(self, request: int, code: int, when=lambda arg: True) -> None:
        def action(fd, req, arg):
            if when(arg):
                raise OSError(code, f"injected {errno.errorcode[code]}")
            return NotImplemented
        self.rules.append((request, action))

    def replace(self, request: int, action) -> None:
        self.rules.append((request, action))


def irq_set_flags(arg) -> tuple[int, int]:
    header = vfio.vfio_irq_set.from_buffer(arg)
    result = (header.index, header.flags)
    del header
    return result


def msi_index(arg) -> bool:
    return irq_set_flags(arg)[0] in (vfio.VFIO_PCI_MSI_IRQ_INDEX, vfio.VFIO_PCI_MSIX_IRQ_INDEX)


@pytest.fixture
def faults(machine, monkeypatch) -> IoctlFaults:
    return IoctlFaults(machine, monkeypatch)


def domain_mappings(machine: Machine) -> list:
    domain = machine.vfio.domain_for(machine.device(EDU_BDF))
    return [] if domain is None else domain.mappings


# -- opening -------------------------------------------------------------------------------------
def test_open_failures_leave_no_fd_open(machine, faults):
    bind_to_vfio(machine, EDU_BDF)
    baseline = list(machine.os.open_fds)
    cases = [
        (lambda: faults.fail(vfio.VFIO_GROUP_GET_DEVICE_FD, errno.EBUSY),
         DeviceBusy, "already open through VFIO by another process"),
        (lambda: faults.fail(vfio.VFIO_GROUP_GET_DEVICE_FD, errno.ENODEV),
         DeviceNotFound, "VFIO_GROUP_GET_DEVICE_FD"),
        (lambda: faults.replace(vfio.VFIO_GET_API_VERSION, lambda fd, request, arg: vfio.VFIO_API_VERSION + 1),
         BackendUnavailable, "API version"),
        (lambda: faults.fail(vfio.VFIO_SET_IOMMU, errno.ENODEV), DeviceNotFound, "VFIO_SET_IOMMU"),
        (lambda: faults.replace(vfio.VFIO_CHECK_EXTENSION, lambda fd, request, arg: 0),
         BackendUnavailable, "no type 1 IOMMU"),
    ]
    for inject, error, message in cases:
        faults.rules.clear()
        inject()
        with pytest.raises(error, match=message):
            VfioBackend(machine.os, EDU_BDF)
        assert machine.os.open_fds == baseline


def test_no_iommu_mode_asked_but_off(tmp_path, monkeypatch):
    machine = Machine.default(lock_dir=str(tmp_path), iommu=False, noiommu=True)
    bind_to_vfio(machine, EDU_BDF)
    faults = IoctlFaults(machine, monkeypatch)
    faults.replace(vfio.VFIO_CHECK_EXTENSION, lambda fd, request, arg: 0)
    with pytest.raises(BackendUnavailable, match="no-IOMMU mode is off.*enable_unsafe_noiommu_mode"):
        VfioBackend(machine.os, EDU_BDF, noiommu=True)
    assert machine.os.open_fds == []


def test_no_group_without_an_iommu(tmp_path):
    machine = Machine.default(lock_dir=str(tmp_path), iommu=False)
    with pytest.raises(BackendUnavailable, match="no IOMMU group.*intel_iommu=on"):
        VfioBackend(machine.os, EDU_BDF)
    with pytest.raises(BackendUnavailable, match="no IOMMU group even while bound.*noiommu_mode"):
        VfioBackend(machine.os, EDU_BDF, noiommu=True)
    assert machine.os.open_fds == []


def test_missing_container_node(machine, monkeypatch):
    real_exists = machine.os.exists
    monkeypatch.setattr(machine.os, "exists", lambda path: path != CONTAINER_PATH and real_exists(path))
    with pytest.raises(BackendUnavailable, match="modprobe vfio-pci"):
        VfioBackend(machine.os, EDU_BDF)
    assert vfio_backend.probe(machine.os, EDU_BDF).startswith("VFIO not available")


def test_a_device_not_on_vfio_pci_names_its_driver(machine):
    with pytest.raises(BackendUnavailable, match="bound to edu, not vfio-pci.*unbind=True"):
        VfioBackend(machine.os, EDU_BDF)
    assert machine.os.open_fds == []


def test_group_node_permissions_say_what_to_run(machine, monkeypatch):
    bind_to_vfio(machine, EDU_BDF)
    machine.set_root(False)
    with pytest.raises(PermissionDenied, match="chown.*ulimit -l"):
        VfioBackend(machine.os, EDU_BDF)
    machine.set_root(True)
    real_open = machine.os.open

    def open_(path, flags, mode=0o600):
        if path.startswith("/dev/vfio/") and path != CONTAINER_PATH:
            raise OSError(errno.ENXIO, "injected ENXIO")
        return real_open(path, flags, mode)

    monkeypatch.setattr(machine.os, "open", open_)
    with pytest.raises(DeviceNotFound, match="opening /dev/vfio/"):
        VfioBackend(machine.os, EDU_BDF)
    assert machine.os.open_fds == []


def test_a_group_that_is_not_viable_lists_its_members(machine):
    bind_to_vfio(machine, GPU_BDF)  # the HDMI audio function stays on snd_hda_intel
    with pytest.raises(DeviceBusy, match="not viable.*snd_hda_intel"):
        VfioBackend(machine.os, GPU_BDF)
    assert machine.os.open_fds == []


def test_iommu_info_failures(machine, faults):
    bind_to_vfio(machine, EDU_BDF)
    faults.fail(vfio.VFIO_IOMMU_GET_INFO, errno.ENOTTY)
    backend = VfioBackend(machine.os, EDU_BDF)  # falls back to the default IOVA window
    backend.close()
    faults.rules.clear()

    def big_pages_only(fd, request, arg):
        faults.real(fd, request, arg)
        info = vfio.vfio_iommu_type1_info.from_buffer(arg)
        info.iova_pgsizes = 1 << 21
        del info
        return 0

    faults.replace(vfio.VFIO_IOMMU_GET_INFO, big_pages_only)
    with pytest.raises(BackendUnavailable, match="does not map 4096-byte pages"):
        VfioBackend(machine.os, EDU_BDF)
    faults.rules.clear()

    def no_caps(fd, request, arg):
        faults.real(fd, request, arg)
        info = vfio.vfio_iommu_type1_info.from_buffer(arg)
        info.flags &= ~vfio.VFIO_IOMMU_INFO_CAPS
        del info
        return 0

    faults.replace(vfio.VFIO_IOMMU_GET_INFO, no_caps)
    backend = VfioBackend(machine.os, EDU_BDF)
    assert backend.alloc_dma(PAGE_SIZE).bus_address == vfio_backend.IOVAAllocator().allocate(PAGE_SIZE)
    backend.close()
    assert machine.os.open_fds == []


def test_a_device_fd_that_is_not_pci(machine, faults):
    bind_to_vfio(machine, EDU_BDF)

    def not_pci(fd, request, arg):
        faults.real(fd, request, arg)
        info = vfio.vfio_device_info.from_buffer(arg)
        info.flags &= ~vfio.VFIO_DEVICE_FLAGS_PCI
        del info
        return 0

    faults.replace(vfio.VFIO_DEVICE_GET_INFO, not_pci)
    with pytest.raises(UnsupportedOperation, match="not a vfio-pci device"):
        VfioBackend(machine.os, EDU_BDF)
    assert machine.os.open_fds == []


# -- config and BARs -----------------------------------------------------------------------------
def test_short_config_access_is_an_error(machine, monkeypatch):
    bind_to_vfio(machine, EDU_BDF)
    backend = VfioBackend(machine.os, EDU_BDF)
    monkeypatch.setattr(machine.os, "pread", lambda fd, n, offset: b"\0")
    with pytest.raises(OSError, match="short config read"):
        backend.config_read(0, 4)
    monkeypatch.setattr(machine.os, "pwrite", lambda fd, data, offset: 1)
    with pytest.raises(OSError, match="short config write"):
        backend.config_write(4, 2, 0)
    monkeypatch.undo()
    backend.close()


def test_bar_mapping_failures(machine, monkeypatch):
    bind_to_vfio(machine, EDU_BDF)
    backend = VfioBackend(machine.os, EDU_BDF)
    with pytest.raises(InvalidArgument, match="BAR1 .* not implemented"):
        backend.map_bar(1)

    def mmap(fd, size, offset=0, writable=True):
        raise OSError(errno.ENOMEM, "injected ENOMEM")

    monkeypatch.setattr(machine.os, "mmap", mmap)
    with pytest.raises(HalError, match="mapping BAR0"):
        backend.map_bar(0)
    monkeypatch.undo()
    backend.map_bar(0)
    backend.close()  # unmaps what is still mapped
    assert machine.os.open_fds == []


# -- DMA -----------------------------------------------------------------------------------------
def test_dma_failures_give_everything_back(machine, faults, monkeypatch):
    baseline_ram = len(machine.ram.allocations)
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        backend = dev.backend
        real_alloc_pages = machine.os.alloc_pages

        def no_memory(size):
            raise OSError(errno.ENOMEM, "injected ENOMEM")

        monkeypatch.setattr(machine.os, "alloc_pages", no_memory)
        with pytest.raises(HalError, match="allocating 4096 bytes of host memory for DMA"):
            dev.alloc_dma(PAGE_SIZE)
        monkeypatch.setattr(machine.os, "alloc_pages", real_alloc_pages)
        free_before = backend._iova.free_bytes

        def no_iova(size, alignment=PAGE_SIZE):
            raise InvalidArgument("injected: no IOVA left")

        monkeypatch.setattr(backend._iova, "allocate", no_iova)
        with pytest.raises(InvalidArgument, match="no IOVA left"):
            dev.alloc_dma(PAGE_SIZE)
        monkeypatch.undo()
        faults = IoctlFaults(machine, monkeypatch)
        faults.fail(vfio.VFIO_IOMMU_MAP_DMA, errno.EFAULT)
        with pytest.raises(InvalidArgument, match="VFIO_IOMMU_MAP_DMA"):
            dev.alloc_dma(2 * PAGE_SIZE)
        assert len(machine.ram.allocations) == baseline_ram
        assert backend._iova.free_bytes == free_before
        assert domain_mappings(machine) == []
        faults.rules.clear()
        buffer = dev.alloc_dma(PAGE_SIZE)
        faults.fail(vfio.VFIO_IOMMU_UNMAP_DMA, errno.EINVAL)
        with pytest.raises(InvalidArgument, match="VFIO_IOMMU_UNMAP_DMA"):
            dev.free_dma(buffer)
        # the pages stay pinned (and their IOVA taken) while the mapping exists; the memory went back
        assert len(machine.ram.allocations) == baseline_ram
        assert len(domain_mappings(machine)) == 1
        faults.rules.clear()
    assert machine.os.open_fds == []
    assert machine.locked_memory_bytes == 0  # closing the container unpinned it


# -- interrupts ----------------------------------------------------------------------------------
def test_interrupt_failures_close_their_eventfds(machine, faults):
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        fds_before = list(machine.os.open_fds)
        with pytest.raises(UnsupportedOperation, match="offers 2 msix vectors; 3 requested"):
            dev.enable_interrupts("msix", 3)
        faults.fail(vfio.VFIO_DEVICE_SET_IRQS, errno.EINVAL, when=msi_index)
        with pytest.raises(InvalidArgument, match="VFIO_DEVICE_SET_IRQS"):
            dev.enable_interrupts("msi")
        assert machine.os.open_fds == fds_before
        faults.rules.clear()
        dev.enable_interrupts("msix", 2)

        def disabling(arg):
            return msi_index(arg) and irq_set_flags(arg)[1] & vfio.VFIO_IRQ_SET_DATA_NONE

        faults.fail(vfio.VFIO_DEVICE_SET_IRQS, errno.EIO, when=disabling)
        with pytest.raises(HalError, match="VFIO_DEVICE_SET_IRQS"):
            dev.disable_interrupts()
        # MSI-X is still on in the kernel: its eventfds stay open and still fire
        assert len(machine.os.open_fds) == len(fds_before) + 2
        dev.bar(0).write32(EDU_INTR_RAISE, 1)
        assert dev.wait_irq(0, timeout_s=1.0) == 1
        faults.rules.clear()
        dev.enable_interrupts("msix", 2)  # turns the old MSI-X off first, then binds it again
        assert len(machine.os.open_fds) == len(fds_before) + 2
        dev.bar(0).write32(EDU_INTR_RAISE, 1)
        assert dev.wait_irq(0, timeout_s=1.0) == 1
        dev.disable_interrupts()
        assert machine.os.open_fds == fds_before


def test_msi_after_a_failed_msix_disable_turns_msix_off_first(machine, faults):
    # vfio_pci_set_msi_trigger refuses MSI with EINVAL while MSI-X is on, so the kind a failed
    # disable left on must be turned off before another is asked for
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        fds_before = list(machine.os.open_fds)
        dev.enable_interrupts("msix", 2)

        def disabling(arg):
            return msi_index(arg) and irq_set_flags(arg)[1] & vfio.VFIO_IRQ_SET_DATA_NONE

        faults.fail(vfio.VFIO_DEVICE_SET_IRQS, errno.EIO, when=disabling)
        with pytest.raises(HalError, match="VFIO_DEVICE_SET_IRQS"):
            dev.disable_interrupts()
        with pytest.raises(HalError, match="VFIO_DEVICE_SET_IRQS"):
            dev.enable_interrupts("msi")  # the disable it starts with fails again, honestly
        assert machine.vfio.msi_kind.get(EDU_BDF) is True  # MSI-X, still on
        faults.rules.clear()
        dev.enable_interrupts("msi")
        assert machine.vfio.msi_kind.get(EDU_BDF) is False
        assert len(machine.os.open_fds) == len(fds_before) + 1
        dev.bar(0).write32(EDU_INTR_RAISE, 1)
        assert dev.wait_irq(0, timeout_s=1.0) == 1
    assert machine.os.open_fds == []


def test_close_after_a_failed_disable_closes_the_interrupt_eventfds(machine, faults):
    bind_to_vfio(machine, EDU_BDF)
    backend = VfioBackend(machine.os, EDU_BDF)
    backend.enable_interrupts("msix", 2)
    faults.fail(vfio.VFIO_DEVICE_SET_IRQS, errno.EIO, when=msi_index)
    with pytest.raises(HalError, match="VFIO_DEVICE_SET_IRQS"):
        backend.disable_interrupts()
    with pytest.raises(HalError, match="VFIO_DEVICE_SET_IRQS"):
        backend.close()  # closing the device fd turns MSI-X off in the kernel anyway
    assert machine.os.open_fds == []
    assert EDU_BDF not in machine.vfio.msi_kind


def test_close_reports_the_first_failure_and_still_closes_every_fd(machine, faults, monkeypatch):
    bind_to_vfio(machine, EDU_BDF)
    real_close = machine.os.close
    failing: set[int] = set()

    def close(fd):
        real_close(fd)
        if fd in failing:
            raise OSError(errno.EIO, "injected EIO")

    monkeypatch.setattr(machine.os, "close", close)
    backend = VfioBackend(machine.os, EDU_BDF)
    backend.enable_interrupts("msi", 1)
    faults.fail(vfio.VFIO_DEVICE_SET_IRQS, errno.EIO, when=msi_index)
    failing.add(backend._device_fd)
    with pytest.raises(HalError, match="VFIO_DEVICE_SET_IRQS"):
        backend.close()
    assert machine.os.open_fds == []
    faults.rules.clear()
    backend = VfioBackend(machine.os, EDU_BDF)
    failing.add(backend._container_fd)
    with pytest.raises(HalError, match="closing VFIO"):
        backend.close()
    assert machine.os.open_fds == []


# -- probe and capability parsing ----------------------------------------------------------------
def test_probe_reasons(machine, monkeypatch):
    assert vfio_backend.probe(machine.os, "0000:09:00.0") == "no such device 0000:09:00.0"
    real_open = machine.os.open

    def open_(path, flags, mode=0o600):
        if path == CONTAINER_PATH:
            raise OSError(errno.EACCES, "injected EACCES")
        return real_open(path, flags, mode)

    monkeypatch.setattr(machine.os, "open", open_)
    assert vfio_backend.probe(machine.os, EDU_BDF).startswith("needs root")

    def open_busy(path, flags, mode=0o600):
        if path == CONTAINER_PATH:
            raise OSError(errno.EMFILE, "Too many open files")
        return real_open(path, flags, mode)

    monkeypatch.setattr(machine.os, "open", open_busy)
    assert vfio_backend.probe(machine.os, EDU_BDF) == f"cannot open {CONTAINER_PATH}: Too many open files"


def test_iova_ranges_past_the_buffer_are_ignored():
    cap = vfio.vfio_iommu_type1_info_cap_iova_range
    raw = bytearray(cap.SIZE + vfio.vfio_iova_range.SIZE)
    header = cap.from_buffer(raw)
    header.header.id = vfio.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE
    header.nr_iovas = 3  # claims three ranges, the buffer holds one
    del header
    entry = vfio.vfio_iova_range.from_buffer(raw, cap.SIZE)
    entry.start = 0x100000
    entry.end = 0x1FFFFF
    del entry
    info = bytearray(8) + raw
    assert iova_windows_from_caps(info, 8) == [(0x100000, 0x200000)]
