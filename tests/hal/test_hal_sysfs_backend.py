"""The sysfs backend (pci:) against the mock machine, through the seam's syscalls."""
from __future__ import annotations

import errno

import pytest
from autogen.linux import pci_regs as regs

import hal
from hal import reset as reset_ops
from hal.errors import (DeviceBusy, DeviceLost, HalError, InvalidArgument, PermissionDenied,
                        UnsupportedOperation)
from mockgpu import EDU_BDF, GPU_BDF, Machine, RootPort
from mockgpu.edu import EduDevice
from mockgpu.machine import GPU_AUDIO_BDF
from mockgpu.pci import MSI_CAP_OFFSET, PCIE_CAP_OFFSET
from mockgpu.edu import (EDU_DMA_BUFFER_BASE, EDU_DMA_SRC, EDU_ID, EDU_ID_VALUE, EDU_LIVENESS,
                         EDU_STATUS_DMA_ERROR)

EDU = f"pci:{EDU_BDF}"
GPU = f"pci:{GPU_BDF}"
MIB = 1 << 20
GIB = 1 << 30


def test_bar_reads_and_writes_reach_the_device(machine):
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        assert machine.kernel.driver_of(EDU_BDF) is None
        bar = dev.bar(0)
        assert bar.read32(EDU_ID) == EDU_ID_VALUE
        bar.write32(EDU_LIVENESS, 0x12345678)
        assert bar.read32(EDU_LIVENESS) == ~0x12345678 & 0xFFFFFFFF
        bar.write(EDU_DMA_BUFFER_BASE, b"hello")
        assert bytes(machine.device(EDU_BDF).buffer[:5]) == b"hello"
    assert machine.kernel.driver_of(EDU_BDF) == "edu"


def test_a_bound_driver_is_refused_without_unbind(machine):
    with pytest.raises(DeviceBusy, match="unbind=True"):
        hal.open(EDU, os=machine.os)
    assert machine.kernel.driver_of(EDU_BDF) == "edu"


def test_config_space_and_capability_walk(machine):
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        assert (dev.vendor_id, dev.device_id) == (0x1234, 0x11E8)
        assert dev.class_code == machine.device(EDU_BDF).identity.class_code
        caps = [cap.cap_id for cap in dev.capabilities()]
        assert caps == [regs.PCI_CAP_ID_PM, regs.PCI_CAP_ID_MSI, regs.PCI_CAP_ID_EXP, regs.PCI_CAP_ID_MSIX]
        assert dev.flr_supported()
        link = dev.link_status()
        assert (link.speed_gts, link.width, link.max_speed_gts, link.max_width) == (8.0, 1, 8.0, 1)
        command = dev.cfg_read16(regs.PCI_COMMAND)
        assert command & regs.PCI_COMMAND_MASTER and command & regs.PCI_COMMAND_MEMORY
        with pytest.raises(InvalidArgument, match="aligned"):
            dev.cfg_read32(2)
        with pytest.raises(InvalidArgument, match="outside"):
            dev.cfg_read8(4096)


def test_bar_info_and_config_space_sizing_agree(machine):
    machine.kernel.unbind(GPU_BDF, "amdgpu")
    with hal.open(GPU, os=machine.os) as dev:
        bars = {info.index: info for info in dev.bars()}
        assert sorted(bars) == [0, 2, 4, 5]
        assert bars[0].is_64bit and bars[0].prefetchable and bars[0].size == 256 * MIB
        assert bars[4].is_io
        for index, info in bars.items():
            assert dev.size_bar(index) == info.size
        vram = dev.bar(0)
        vram.write32(0x100, 0x12345678)
        assert vram.read32(0x100) == 0x12345678
        assert bytes(machine.device(GPU_BDF).vram[0x100:0x104]) == (0x12345678).to_bytes(4, "little")


def test_resizable_bar_resize_and_too_small_bar(machine):
    machine.kernel.unbind(GPU_BDF, "amdgpu")
    with hal.open(GPU, os=machine.os) as dev:
        assert [cap.cap_id for cap in dev.extended_capabilities()] == [regs.PCI_EXT_CAP_ID_REBAR]
        sizes = dev.rebar_sizes(0)
        assert sizes[0] == 256 * MIB and 1024 * MIB in sizes
        with pytest.raises(InvalidArgument, match="resize_bar"):
            dev.bar(0, min_size=1024 * MIB)
        with pytest.raises(InvalidArgument, match="supported"):
            dev.resize_bar(0, 3 * MIB)
        with pytest.raises(UnsupportedOperation):
            dev.resize_bar(5, MIB)
        dev.resize_bar(0, 1024 * MIB)
        assert dev.bar_info(0).size == 1024 * MIB
        assert dev.rebar_current_size(0) == 1024 * MIB
        assert dev.bar(0, min_size=1024 * MIB).size == 1024 * MIB


def test_dma_to_physical_addresses_without_an_iommu(machine, edu_dma):
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        buffer = dev.alloc_dma(2 * 4096)
        assert len(buffer.bus_addresses) == 2
        buffer.region.write(4096, b"from the host")
        bar = dev.bar(0)
        status = edu_dma(bar, buffer.bus_address_of(4096), EDU_DMA_BUFFER_BASE, 13, to_host=False)
        assert not status & EDU_STATUS_DMA_ERROR
        assert bar.read(EDU_DMA_BUFFER_BASE, 13) == b"from the host"
        bar.write(EDU_DMA_BUFFER_BASE, b"from the device")
        status = edu_dma(bar, EDU_DMA_BUFFER_BASE, buffer.bus_address, 15, to_host=True)
        assert not status & EDU_STATUS_DMA_ERROR
        assert buffer.region.read(0, 15) == b"from the device"


def test_interrupts_are_unsupported_through_sysfs(machine):
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        with pytest.raises(UnsupportedOperation, match="vfio"):
            dev.enable_interrupts("msi")


@pytest.mark.parametrize("method", ["flr", "bus", "sysfs"])
def test_resets_clear_state_and_the_device_answers_again(machine, method):
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        bar = dev.bar(0)
        bar.write64(EDU_DMA_SRC, 0xABCD000)
        before = machine.device(EDU_BDF).reset_count
        assert method in dev.reset_methods()
        assert dev.reset(method) == method
        assert machine.device(EDU_BDF).reset_count == before + 1
        assert bar.read64(EDU_DMA_SRC) == 0
        assert bar.read32(EDU_ID) == EDU_ID_VALUE
        command = dev.cfg_read16(regs.PCI_COMMAND)
        assert command & regs.PCI_COMMAND_MEMORY and command & regs.PCI_COMMAND_MASTER


def test_bus_reset_is_refused_for_the_gpu_that_shares_its_bus_with_audio(machine):
    machine.kernel.unbind(GPU_BDF, "amdgpu")
    audio = machine.device(GPU_AUDIO_BDF)
    with hal.open(GPU, os=machine.os) as dev:
        assert dev.reset_methods() == []
        with pytest.raises(UnsupportedOperation, match=f"shares its bus with {GPU_AUDIO_BDF}"):
            dev.reset("bus")
        with pytest.raises(UnsupportedOperation, match="no reset method"):
            dev.reset()
    assert audio.state.bus_reset_count == 0
    assert machine.kernel.driver_of(GPU_AUDIO_BDF) == "snd_hda_intel"


def test_bus_reset_of_the_gpu_alone_on_its_bus_goes_through_the_kernel(machine):
    machine.remove(GPU_AUDIO_BDF)
    machine.kernel.unbind(GPU_BDF, "amdgpu")
    gpu = machine.device(GPU_BDF)
    with hal.open(GPU, os=machine.os) as dev:
        assert dev.reset_methods() == ["sysfs", "bus"]
        assert dev.reset("bus") == "bus"
        assert gpu.state.bus_reset_count == 1
        assert dev.vendor_id == 0x1002
        assert dev.bar(0).read32(0) == 0  # VRAM answers at the restored BAR address
    assert machine.os.read_text(f"/sys/bus/pci/devices/{GPU_BDF}/reset_method") == "bus\n"


def hot_plug_machine(tmp_path):
    """An edu device below a hot-plug capable root port (a Thunderbolt-like slot)."""
    machine = Machine(lock_dir=str(tmp_path))
    machine.add_device(RootPort(hot_plug=True), "0000:00:01.0")
    machine.add_device(EduDevice(), EDU_BDF, "0000:00:01.0")
    return machine


def test_raw_bus_reset_below_a_hot_plug_port_is_refused(tmp_path):
    machine = hot_plug_machine(tmp_path)
    edu_sysfs = f"/sys/bus/pci/devices/{EDU_BDF}"
    machine.os.write_text(f"{edu_sysfs}/reset_method", "flr")  # the kernel will not bus-reset it
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        assert "bus" not in dev.reset_methods()
        with pytest.raises(UnsupportedOperation, match="hot-plug capable"):
            dev.reset("bus")
    assert machine.device(EDU_BDF).state.bus_reset_count == 0


def test_bus_reset_below_a_hot_plug_port_uses_the_kernel_path(tmp_path):
    machine = hot_plug_machine(tmp_path)
    edu_sysfs = f"/sys/bus/pci/devices/{EDU_BDF}"
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        assert dev.reset_methods() == ["sysfs", "flr", "bus"]
        assert dev.reset("bus") == "bus"
        assert machine.kernel.driver_of(EDU_BDF) is None  # not removed and re-probed by pciehp
        assert dev.bar(0).read32(EDU_ID) == EDU_ID_VALUE
    edu = machine.device(EDU_BDF)
    assert (edu.state.bus_reset_count, edu.state.flr_count) == (1, 0)
    assert machine.os.read_text(f"{edu_sysfs}/reset_method") == "flr bus\n"  # selection put back


def test_raw_bus_reset_restores_bars_when_the_kernel_offers_no_bus_reset(machine):
    machine.os.write_text(f"/sys/bus/pci/devices/{EDU_BDF}/reset_method", "flr")
    edu = machine.device(EDU_BDF)
    address = edu.bar_address(0)
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        assert dev.reset("bus") == "bus"
        assert edu.state.bus_reset_count == 1
        assert edu.bar_address(0) == address
        assert dev.bar(0).read32(EDU_ID) == EDU_ID_VALUE


@pytest.mark.parametrize("kernel_bus_reset", [False, True])
def test_resizable_bar_size_survives_a_bus_reset(machine, kernel_bus_reset):
    machine.remove(GPU_AUDIO_BDF)
    machine.kernel.unbind(GPU_BDF, "amdgpu")
    if not kernel_bus_reset:
        machine.os.write_text(f"/sys/bus/pci/devices/{GPU_BDF}/reset_method", "")  # none: hal's raw SBR
    gpu = machine.device(GPU_BDF)
    with hal.open(GPU, os=machine.os) as dev:
        dev.resize_bar(0, 32 * GIB)
        address = gpu.bar_address(0)
        assert dev.reset("bus") == "bus"
        assert gpu.state.bus_reset_count == 1
        assert dev.rebar_current_size(0) == 32 * GIB
        assert gpu.bar_sizes[0] == 32 * GIB and gpu.bar_address(0) == address
        assert dev.size_bar(0) == 32 * GIB
        bar = dev.bar(0)
        bar.write32(32 * GIB - 4, 0xCAFE)
        assert bar.read32(32 * GIB - 4) == 0xCAFE


def test_flr_keeps_pcie_control_and_msi_state(machine):
    pcie = PCIE_CAP_OFFSET
    msi = MSI_CAP_OFFSET
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        devctl = dev.cfg_read16(pcie + regs.PCI_EXP_DEVCTL) | regs.PCI_EXP_DEVCTL_EXT_TAG
        dev.cfg_write16(pcie + regs.PCI_EXP_DEVCTL, devctl)
        dev.cfg_write16(pcie + regs.PCI_EXP_LNKCTL, regs.PCI_EXP_LNKCTL_CCC)
        dev.cfg_write32(msi + regs.PCI_MSI_ADDRESS_LO, 0xFEE00000)
        dev.cfg_write16(msi + regs.PCI_MSI_DATA_64, 0x41)
        assert dev.reset("flr") == "flr"
        assert machine.device(EDU_BDF).state.flr_count == 1
        assert dev.cfg_read16(pcie + regs.PCI_EXP_DEVCTL) == devctl
        assert dev.cfg_read16(pcie + regs.PCI_EXP_LNKCTL) == regs.PCI_EXP_LNKCTL_CCC
        assert dev.cfg_read32(msi + regs.PCI_MSI_ADDRESS_LO) == 0xFEE00000
        assert dev.cfg_read16(msi + regs.PCI_MSI_DATA_64) == 0x41


@pytest.mark.parametrize(("delay_s", "crs_visible"), [(1.2, False), (0.3, True)])
def test_reset_waits_for_a_slow_device(machine, delay_s, crs_visible):
    machine.set_reset_delay(EDU_BDF, delay_s, crs_visible=crs_visible)
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        assert dev.reset("flr") == "flr"
        assert not dev.lost
        bar = dev.bar(0)
        assert bar.read32(EDU_ID) == EDU_ID_VALUE
        command = dev.cfg_read16(regs.PCI_COMMAND)
        assert command & regs.PCI_COMMAND_MEMORY and command & regs.PCI_COMMAND_MASTER


def test_reset_gives_up_after_the_ready_timeout_and_says_what_it_waited_for(machine, monkeypatch):
    monkeypatch.setattr(reset_ops, "DEVICE_READY_TIMEOUT_S", 0.05)
    machine.set_reset_delay(EDU_BDF, 30.0, crs_visible=True)
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        expected = r"not ready within 0.05 s after a flr reset \(vendor ID still 0x0001"
        with pytest.raises(DeviceLost, match=expected):
            dev.reset("flr")
        assert dev.lost


def test_size_bar_refuses_the_upper_half_of_a_64bit_bar(machine):
    machine.kernel.unbind(GPU_BDF, "amdgpu")
    with hal.open(GPU, os=machine.os) as dev:
        with pytest.raises(InvalidArgument, match="upper half of the 64-bit BAR0"):
            dev.size_bar(1)
        with pytest.raises(InvalidArgument, match="upper half of the 64-bit BAR2"):
            dev.size_bar(3)
        assert dev.size_bar(0) == 256 * MIB


def test_close_frees_every_dma_buffer_even_when_one_fails(machine):
    dev = hal.open(EDU, os=machine.os, unbind=True)
    buffers = [dev.alloc_dma(4096) for _ in range(3)]
    real_free = dev.backend.free_dma
    freed = []

    def free_dma(buffer):
        if buffer is buffers[1]:
            raise OSError(errno.EIO, "injected failure")
        real_free(buffer)
        freed.append(buffer)

    dev.backend.free_dma = free_dma
    with pytest.raises(HalError, match="injected failure"):
        dev.close()
    assert freed == [buffers[2], buffers[0]]
    assert buffers[0].freed and buffers[2].freed and not buffers[1].freed


def test_without_root_the_error_says_what_to_run(machine):
    machine.set_root(False)
    with pytest.raises(PermissionDenied, match="sudo"):
        hal.open(EDU, os=machine.os, unbind=True)
    assert machine.kernel.driver_of(EDU_BDF) == "edu"
    assert machine.os.open_fds == []
    info = {d.bdf: d for d in hal.list_devices(os=machine.os, all_classes=True)}
    assert "root" in info[EDU_BDF].backends["pci"]


def test_dma_without_root_is_permission_denied_and_frees_memory(machine):
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        machine.set_root(False)
        allocations = len(machine.ram.allocations)
        with pytest.raises(PermissionDenied, match="root"):
            dev.alloc_dma(4096)
        assert len(machine.ram.allocations) == allocations
        machine.set_root(True)


def test_surprise_removal_raises_device_lost_at_the_first_access(machine):
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        bar = dev.bar(0)
        assert bar.read32(EDU_ID) == EDU_ID_VALUE
        machine.surprise_remove(EDU_BDF)
        with pytest.raises(DeviceLost, match="0000:01:00.0"):
            bar.read32(EDU_ID)
        assert dev.lost
        with pytest.raises(DeviceLost):
            dev.cfg_read16(regs.PCI_COMMAND)
    assert machine.os.open_fds == []


def test_surprise_removal_seen_first_in_config_space(machine):
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        machine.surprise_remove(EDU_BDF)
        with pytest.raises(DeviceLost):
            dev.cfg_read32(regs.PCI_VENDOR_ID)


def test_an_all_ones_register_on_a_live_device_is_not_lost(machine):
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        bar = dev.bar(0)
        bar.write32(EDU_LIVENESS, 0)
        assert bar.read32(EDU_LIVENESS) == 0xFFFFFFFF
        assert not dev.lost


def test_failing_config_reads_are_typed_errors(machine):
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        machine.set_root(False)
        try:
            with pytest.raises(PermissionDenied, match="root"):
                dev.cfg_read32(0x100)
        finally:
            machine.set_root(True)


def test_close_releases_fds_mappings_and_dma(machine):
    baseline_fds = list(machine.os.open_fds)
    baseline_ram = len(machine.ram.allocations)
    dev = hal.open(EDU, os=machine.os, unbind=True)
    dev.bar(0)
    dev.alloc_dma(4096)
    dev.alloc_dma(3 * 4096)
    assert machine.os.open_fds != baseline_fds
    dev.close()
    assert machine.os.open_fds == baseline_fds
    assert len(machine.ram.allocations) == baseline_ram
    with pytest.raises(InvalidArgument, match="closed"):
        dev.cfg_read16(0)


def test_polling_a_register_until_a_delayed_dma_finishes(machine, edu_dma):
    from hal.errors import DeviceTimeout
    from mockgpu.edu import EDU_STATUS, EDU_STATUS_DMA_BUSY

    machine.device(EDU_BDF).dma_delay_s = 0.02
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        buffer = dev.alloc_dma(4096)
        status = edu_dma(dev.bar(0), buffer.bus_address, EDU_DMA_BUFFER_BASE, 8, to_host=False)
        assert status & EDU_STATUS_DMA_BUSY
        final = dev.poll32(0, EDU_STATUS, EDU_STATUS_DMA_BUSY, 0, timeout_s=1.0)
        assert not final & EDU_STATUS_DMA_ERROR
        with pytest.raises(DeviceTimeout, match="EDU_ID .*last value 0x010000ed"):
            dev.poll32(0, EDU_ID, 0xFF, 0, timeout_s=0.01, what="EDU_ID")


def test_rebind_on_request_hands_the_device_back(machine):
    dev = hal.open(EDU, os=machine.os, unbind=True, rebind_on_close=False)
    assert machine.kernel.driver_of(EDU_BDF) is None
    dev.rebind()
    assert machine.kernel.driver_of(EDU_BDF) == "edu"
    assert machine.os.open_fds == []
    dev = hal.open(EDU, os=machine.os, unbind=True, rebind_on_close=False)
    dev.close()
    assert machine.kernel.driver_of(EDU_BDF) is None


def test_link_status_follows_retraining(machine):
    machine.kernel.unbind(GPU_BDF, "amdgpu")
    with hal.open(GPU, os=machine.os) as dev:
        link = dev.link_status()
        assert (link.speed_gts, link.width, link.max_speed_gts, link.max_width) == (16.0, 16, 16.0, 16)
        machine.set_link(GPU_BDF, regs.PCI_EXP_LNKSTA_CLS_2_5GB, 4)
        link = dev.link_status()
        assert (link.speed_gts, link.width, link.max_width) == (2.5, 4, 16)


def test_resize_refused_while_a_driver_is_bound_behind_our_back(machine):
    machine.kernel.unbind(GPU_BDF, "amdgpu")
    with hal.open(GPU, os=machine.os) as dev:
        machine.kernel.bind(GPU_BDF, "amdgpu")
        with pytest.raises(DeviceBusy, match="amdgpu"):
            dev.resize_bar(0, 512 * MIB)
        machine.kernel.unbind(GPU_BDF, "amdgpu")


def test_resize_is_unsupported_through_vfio(machine):
    machine.kernel.unbind(GPU_BDF, "amdgpu")
    machine.kernel.unbind("0000:04:00.1", "snd_hda_intel")
    with hal.open(f"vfio:{GPU_BDF}", os=machine.os) as dev:
        assert dev.rebar_sizes(0)
        with pytest.raises(UnsupportedOperation, match=r"bar_sizes=\{0: 0x20000000\}"):
            dev.resize_bar(0, 512 * MIB)
