"""The VFIO backend (vfio:) against the mock machine: container/group/device ioctls, IOMMU DMA, MSI."""
from __future__ import annotations

import errno

import pytest
from autogen.linux import pci_regs as regs

import hal
from hal import discovery
from hal.errors import (BackendUnavailable, DeviceBusy, DeviceLost, DeviceTimeout, HalError, InvalidArgument,
                        PermissionDenied, UnsupportedOperation)
from hal.os import PAGE_SIZE
from mockgpu import EDU_BDF, GPU_AUDIO_BDF, GPU_BDF, Machine, RootPort
from mockgpu.edu import (EDU_DMA_BUFFER_BASE, EDU_DMA_SRC, EDU_ID, EDU_ID_VALUE, EDU_INTR_ACK,
                         EDU_INTR_RAISE, EDU_INTR_STATUS, EDU_STATUS_DMA_ERROR, EduDevice)

EDU = f"vfio:{EDU_BDF}"


def test_open_binds_vfio_pci_and_close_hands_the_device_back(machine):
    baseline = list(machine.os.open_fds)
    dev = hal.open(EDU, os=machine.os, unbind=True)
    assert machine.kernel.driver_of(EDU_BDF) == "vfio-pci"
    assert dev.bar(0).read32(EDU_ID) == EDU_ID_VALUE
    assert dev.cfg_read16(regs.PCI_COMMAND) & regs.PCI_COMMAND_MASTER
    dev.close()
    assert machine.kernel.driver_of(EDU_BDF) == "edu"
    assert machine.os.open_fds == baseline


def test_close_can_keep_vfio_pci_bound(machine):
    dev = hal.open(EDU, os=machine.os, unbind=True, rebind_on_close=False)
    dev.close()
    assert machine.kernel.driver_of(EDU_BDF) == "vfio-pci"
    with hal.open(EDU, os=machine.os) as again:
        assert again.vendor_id == 0x1234
    assert machine.kernel.driver_of(EDU_BDF) == "vfio-pci"


def test_dma_through_the_iommu_both_ways(machine, edu_dma):
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        buffer = dev.alloc_dma(3 * 4096)
        assert buffer.contiguous
        assert buffer.bus_addresses == [buffer.bus_address + page * 4096 for page in range(3)]
        buffer.region.write(2 * 4096 + 8, b"through the iommu")
        bar = dev.bar(0)
        status = edu_dma(bar, buffer.bus_address_of(2 * 4096 + 8), EDU_DMA_BUFFER_BASE, 17, to_host=False)
        assert not status & EDU_STATUS_DMA_ERROR
        assert bar.read(EDU_DMA_BUFFER_BASE, 17) == b"through the iommu"
        status = edu_dma(bar, EDU_DMA_BUFFER_BASE, buffer.bus_address, 17, to_host=True)
        assert not status & EDU_STATUS_DMA_ERROR
        assert buffer.region.read(0, 17) == b"through the iommu"
        assert machine.iommu_faults == []


def test_dma_to_an_unmapped_iova_faults(machine, edu_dma):
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        buffer = dev.alloc_dma(4096)
        bar = dev.bar(0)
        stray = buffer.bus_address + 64 * 4096
        status = edu_dma(bar, EDU_DMA_BUFFER_BASE, stray, 16, to_host=True)
        assert status & EDU_STATUS_DMA_ERROR
        assert [fault.iova for fault in machine.iommu_faults] == [stray]
        freed_iova = buffer.bus_address
        dev.free_dma(buffer)
        status = edu_dma(bar, EDU_DMA_BUFFER_BASE, freed_iova, 16, to_host=True)
        assert status & EDU_STATUS_DMA_ERROR
        assert len(machine.iommu_faults) == 2


@pytest.mark.parametrize("kind", ["msi", "msix"])
def test_interrupt_delivery_and_timeout(machine, kind):
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        dev.enable_interrupts(kind)
        bar = dev.bar(0)
        with pytest.raises(DeviceTimeout, match="vector 0"):
            dev.wait_irq(0, timeout_s=0.02)
        bar.write32(EDU_INTR_RAISE, 1)
        bar.write32(EDU_INTR_RAISE, 2)
        assert dev.wait_irq(0, timeout_s=1.0) == 2
        assert bar.read32(EDU_INTR_STATUS) == 3
        bar.write32(EDU_INTR_ACK, 3)
        with pytest.raises(DeviceTimeout):
            dev.wait_irq(0, timeout_s=0.01)
        with pytest.raises(InvalidArgument):
            dev.wait_irq(1, timeout_s=0.01)


def test_dma_completion_interrupt(machine, edu_dma):
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        dev.enable_interrupts("msix", 2)
        buffer = dev.alloc_dma(4096)
        edu_dma(dev.bar(0), buffer.bus_address, EDU_DMA_BUFFER_BASE, 8, to_host=False, irq=True)
        assert dev.wait_irq(0, timeout_s=1.0) == 1


@pytest.mark.parametrize("method", ["vfio", "flr", "bus"])
def test_resets_through_vfio_keep_interrupts_working(machine, method):
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        dev.enable_interrupts("msi")
        bar = dev.bar(0)
        bar.write64(EDU_DMA_SRC, 0x5000)
        before = machine.device(EDU_BDF).reset_count
        assert dev.reset(method) == method
        assert machine.device(EDU_BDF).reset_count == before + 1
        assert bar.read64(EDU_DMA_SRC) == 0
        bar.write32(EDU_INTR_RAISE, 1)
        assert dev.wait_irq(0, timeout_s=1.0) == 1


def test_no_iommu_means_a_typed_error_that_says_what_to_do(tmp_path):
    machine = Machine.default(lock_dir=str(tmp_path), iommu=False)
    with pytest.raises(BackendUnavailable, match="IOMMU group.*iommu=on"):
        hal.open(EDU, os=machine.os, unbind=True)
    assert machine.kernel.driver_of(EDU_BDF) == "edu"
    assert machine.os.open_fds == []


def test_no_iommu_mode_only_when_asked_and_then_dma_uses_physical_addresses(tmp_path, edu_dma):
    machine = Machine.default(lock_dir=str(tmp_path), iommu=False, noiommu=True)
    with pytest.raises(BackendUnavailable):
        hal.open(EDU, os=machine.os, unbind=True)
    with hal.open(EDU, os=machine.os, unbind=True, noiommu=True) as dev:
        assert dev.bar(0).read32(EDU_ID) == EDU_ID_VALUE
        buffer = dev.alloc_dma(2 * 4096)
        memory, iova = buffer.backend_handle
        assert iova is None and buffer.bus_addresses == machine.os.pagemap(memory)
        buffer.region.write(4096, b"no isolation")
        status = edu_dma(dev.bar(0), buffer.bus_address_of(4096), EDU_DMA_BUFFER_BASE, 12, to_host=False)
        assert not status & EDU_STATUS_DMA_ERROR
        assert dev.bar(0).read(EDU_DMA_BUFFER_BASE, 12) == b"no isolation"
    assert machine.iommu_faults == []
    assert machine.os.open_fds == []


def test_automatic_selection_falls_back_to_sysfs(tmp_path):
    machine = Machine.default(lock_dir=str(tmp_path), iommu=False)
    with hal.open(EDU_BDF, os=machine.os, unbind=True) as dev:
        assert dev.device_string == f"pci:{EDU_BDF}"


def test_automatic_selection_reports_every_reason(tmp_path):
    machine = Machine.default(lock_dir=str(tmp_path), iommu=False)
    with pytest.raises(BackendUnavailable) as info:
        hal.open(EDU_BDF, os=machine.os)
    message = str(info.value)
    assert "vfio:" in message and "pci:" in message and "IOMMU" in message and "unbind=True" in message


def test_vfio_module_missing(machine):
    machine.kernel.drivers.pop("vfio-pci")
    with pytest.raises(BackendUnavailable, match="modprobe vfio-pci"):
        hal.open(EDU, os=machine.os, unbind=True)
    assert machine.kernel.driver_of(EDU_BDF) == "edu"


def _record_unbinds(machine, monkeypatch) -> list[tuple[str, str]]:
    """Every unbind the simulated kernel carries out, as (bdf, driver)."""
    unbinds = []
    real_unbind = machine.kernel.unbind

    def unbind(bdf, driver_name):
        real_unbind(bdf, driver_name)
        unbinds.append((bdf, driver_name))

    monkeypatch.setattr(machine.kernel, "unbind", unbind)
    return unbinds


def test_a_group_shared_with_a_bound_function_is_refused_before_anything_is_unbound(machine, monkeypatch):
    baseline = list(machine.os.open_fds)
    unbinds = _record_unbinds(machine, monkeypatch)
    with pytest.raises(DeviceBusy, match=f"{GPU_AUDIO_BDF} \\(snd_hda_intel\\).*Nothing was unbound"):
        hal.open(f"vfio:{GPU_BDF}", os=machine.os, unbind=True)
    assert unbinds == []
    assert machine.kernel.driver_of(GPU_BDF) == "amdgpu"
    assert machine.os.open_fds == baseline


def test_vfio_on_an_unbound_device_leaves_it_unbound_and_without_override_after_close(machine):
    override = f"/sys/bus/pci/devices/{EDU_BDF}/driver_override"
    machine.kernel.unbind(EDU_BDF, "edu")
    before = machine.os.read_text(override)
    with hal.open(EDU, os=machine.os) as dev:
        assert machine.kernel.driver_of(EDU_BDF) == "vfio-pci"
        assert dev.vendor_id == 0x1234
    assert machine.kernel.driver_of(EDU_BDF) is None
    assert machine.os.read_text(override) == before
    dev = hal.open(EDU, os=machine.os, rebind_on_close=False)
    dev.close()
    assert machine.kernel.driver_of(EDU_BDF) == "vfio-pci"
    dev = hal.open(EDU, os=machine.os)
    dev.close()
    assert machine.kernel.driver_of(EDU_BDF) == "vfio-pci", "it was on vfio-pci when this open began"


def test_iommu_mapped_dma_memory_is_not_mlocked_as_well(machine, monkeypatch):
    calls = []
    real_alloc_locked = machine.os.alloc_locked

    def alloc_locked(size):
        calls.append("alloc_locked")
        return real_alloc_locked(size)

    def alloc_pages(size):
        calls.append("alloc_pages")
        return real_alloc_locked(size)

    monkeypatch.setattr(machine.os, "alloc_locked", alloc_locked)
    monkeypatch.setattr(machine.os, "alloc_pages", alloc_pages)
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        dev.alloc_dma(2 * 4096)
    assert calls == ["alloc_pages"]


def test_no_iommu_dma_memory_stays_mlocked(tmp_path, monkeypatch):
    machine = Machine.default(lock_dir=str(tmp_path), iommu=False, noiommu=True)
    calls = []
    real_alloc_locked = machine.os.alloc_locked

    def alloc_locked(size):
        calls.append("alloc_locked")
        return real_alloc_locked(size)

    monkeypatch.setattr(machine.os, "alloc_locked", alloc_locked)
    with hal.open(EDU, os=machine.os, unbind=True, noiommu=True) as dev:
        dev.alloc_dma(4096)
    assert calls == ["alloc_locked"]


def test_gpu_opens_once_its_audio_function_is_released(machine):
    machine.kernel.unbind(GPU_AUDIO_BDF, "snd_hda_intel")
    with hal.open(f"vfio:{GPU_BDF}", os=machine.os, unbind=True) as dev:
        assert dev.vendor_id == 0x1002
        # the audio function still shares the bus, so a secondary bus reset would reset it too
        assert "bus" not in dev.reset_methods()
        assert dev.bar(5).size == 1 << 20
    assert machine.kernel.driver_of(GPU_BDF) == "amdgpu"


def test_surprise_removal_through_vfio(machine):
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        bar = dev.bar(0)
        machine.surprise_remove(EDU_BDF)
        with pytest.raises(DeviceLost):
            bar.read32(EDU_ID)
        with pytest.raises(DeviceLost):
            dev.alloc_dma(4096)


def test_nothing_leaks_after_close_or_a_failed_open(machine):
    baseline_fds = list(machine.os.open_fds)
    baseline_ram = len(machine.ram.allocations)
    dev = hal.open(EDU, os=machine.os, unbind=True)
    dev.enable_interrupts("msix", 2)
    dev.alloc_dma(4096)
    dev.alloc_dma(5 * 4096)
    dev.bar(0)
    dev.close()
    assert machine.os.open_fds == baseline_fds
    assert len(machine.ram.allocations) == baseline_ram
    with pytest.raises(DeviceBusy):
        hal.open(f"vfio:{GPU_BDF}", os=machine.os, unbind=True)
    assert machine.os.open_fds == baseline_fds


def test_a_bare_bdf_prefers_vfio_and_edu_bars_are_listed(machine):
    with hal.open(EDU_BDF, os=machine.os, unbind=True) as dev:
        assert dev.device_string == f"vfio:{EDU_BDF}"
        assert [(info.index, info.size, info.is_64bit) for info in dev.bars()] == [(0, 1 << 20, False)]
        with pytest.raises(InvalidArgument, match="not implemented"):
            dev.bar_info(1)
        with pytest.raises(InvalidArgument, match="not implemented"):
            dev.bar(3)


def test_a_failed_vfio_pci_bind_hands_the_device_back(machine):
    # vfio-pci refuses bridges (drivers/vfio/pci/vfio_pci.c: normal header type only)
    root_port = "0000:00:01.0"
    with pytest.raises(HalError, match=f"{root_port} did not bind to vfio-pci"):
        hal.open(f"vfio:{root_port}", os=machine.os, unbind=True)
    assert machine.kernel.driver_of(root_port) == "pcieport"
    assert machine.os.read_text(f"/sys/bus/pci/devices/{root_port}/driver_override").strip() == "(null)"


# -- locked memory, partial vector grants --------------------------------------------------------
def test_dma_buffers_are_charged_once_and_enomem_says_how_to_raise_the_limit(machine):
    machine.set_cap_ipc_lock(False)
    machine.set_memlock_limit(4 * PAGE_SIZE)
    baseline_ram = len(machine.ram.allocations)
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        # four pages fit exactly: MAP_DMA pins and counts them, nothing mlocks them as well
        first = dev.alloc_dma(3 * PAGE_SIZE)
        second = dev.alloc_dma(PAGE_SIZE)
        assert machine.locked_memory_bytes == 4 * PAGE_SIZE
        with pytest.raises(PermissionDenied) as info:
            dev.alloc_dma(PAGE_SIZE)
        message = str(info.value)
        assert info.value.errno == errno.ENOMEM
        assert "ulimit -l" in message and "limits.conf" in message and "CAP_IPC_LOCK" in message
        assert "0x4000 bytes of DMA buffers mapped already" in message
        assert len(machine.ram.allocations) == baseline_ram + 2  # the failed buffer was given back
        dev.free_dma(first)
        assert machine.locked_memory_bytes == PAGE_SIZE
        again = dev.alloc_dma(3 * PAGE_SIZE)
        assert again.bus_address == first.bus_address  # the IOVA range came back too
        dev.free_dma(second)
    assert machine.locked_memory_bytes == 0
    assert len(machine.ram.allocations) == baseline_ram


def test_fewer_msix_vectors_than_asked_is_an_error_that_says_how_many(machine):
    machine.set_msi_vector_limit(EDU_BDF, 1)
    baseline = list(machine.os.open_fds)
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        fds_before = list(machine.os.open_fds)
        with pytest.raises(UnsupportedOperation, match="granted only 1 of the 2 msix vectors.*ask for 1"):
            dev.enable_interrupts("msix", 2)
        assert machine.os.open_fds == fds_before  # the eventfds went back
        edu = machine.device(EDU_BDF)
        assert not edu.msix_control() & regs.PCI_MSIX_FLAGS_ENABLE
        with pytest.raises(InvalidArgument, match="no interrupts enabled"):
            dev.wait_irq(0, timeout_s=0.01)
        dev.enable_interrupts("msix", 1)
        dev.bar(0).write32(EDU_INTR_RAISE, 1)
        assert dev.wait_irq(0, timeout_s=1.0) == 1
    assert machine.os.open_fds == baseline


class FourVectorMSIEdu(EduDevice):
    msi_vectors = 4


def test_multi_message_msi_without_interrupt_remapping_names_the_fix(tmp_path):
    machine = Machine(lock_dir=str(tmp_path))
    machine.add_device(RootPort(), "0000:00:01.0")
    machine.add_device(FourVectorMSIEdu(), EDU_BDF, "0000:00:01.0")
    machine.set_msi_vector_limit(EDU_BDF, 1)
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        with pytest.raises(UnsupportedOperation, match="1 of the 4 msi vectors.*use MSI-X.*intel_iommu=on"):
            dev.enable_interrupts("msi", 4)
        dev.enable_interrupts("msi", 1)
        dev.bar(0).write32(EDU_INTR_RAISE, 1)
        assert dev.wait_irq(0, timeout_s=1.0) == 1


def test_no_iommu_gpu_opens_while_its_audio_function_keeps_its_driver(tmp_path):
    # in no-IOMMU mode each device vfio-pci binds gets a group of its own (drivers/vfio/group.c
    # vfio_noiommu_group_alloc), so the audio function on snd_hda_intel does not stand in the way
    machine = Machine.default(lock_dir=str(tmp_path), iommu=False, noiommu=True)
    assert machine.os.listdir("/dev/vfio") == ["vfio"]
    verdict = discovery.describe(machine.os, GPU_BDF).backends["vfio"]
    assert verdict.startswith("no IOMMU group; VFIO no-IOMMU mode is on: open it with noiommu=True")
    with hal.open(f"vfio:{GPU_BDF}", os=machine.os, unbind=True, noiommu=True) as dev:
        assert dev.vendor_id == 0x1002
        group = machine.os.readlink(f"/sys/bus/pci/devices/{GPU_BDF}/iommu_group").rsplit("/", 1)[-1]
        assert machine.os.exists(f"/dev/vfio/noiommu-{group}")
        assert machine.kernel.driver_of(GPU_AUDIO_BDF) == "snd_hda_intel"
        assert discovery.describe(machine.os, GPU_AUDIO_BDF).iommu_group is None
        assert discovery.describe(machine.os, GPU_BDF).backends["vfio"].startswith("ok (a no-IOMMU group")
    assert machine.kernel.driver_of(GPU_BDF) == "amdgpu"
    assert machine.os.listdir("/dev/vfio") == ["vfio"]
    assert not machine.os.exists(f"/sys/bus/pci/devices/{GPU_BDF}/iommu_group")
    assert machine.os.open_fds == []


def test_a_no_iommu_host_without_noiommu_says_so(tmp_path):
    machine = Machine.default(lock_dir=str(tmp_path), iommu=False, noiommu=True)
    sysfs = f"/sys/bus/pci/devices/{EDU_BDF}"
    machine.os.write_text(f"{sysfs}/driver_override", "vfio-pci")
    machine.os.write_text("/sys/bus/pci/drivers/edu/unbind", EDU_BDF)
    machine.os.write_text("/sys/bus/pci/drivers_probe", EDU_BDF)  # vfio-pci makes the no-IOMMU group
    baseline = list(machine.os.open_fds)
    expected = "noiommu-.* exists: VFIO runs in no-IOMMU mode.*noiommu=True"
    with pytest.raises(BackendUnavailable, match=expected):
        hal.open(EDU, os=machine.os)
    assert machine.os.open_fds == baseline
