"""The VFIO device fd as Linux 6.12's vfio-pci answers it: config virtualisation, open and close,
BAR access with decoding off, the VGA region, sub-page BARs, hot reset, and the PCI core's choice
of reset method."""
from __future__ import annotations

import errno
import struct

import pytest
from autogen.linux import pci_regs, vfio
from mockgpu_helpers import bind_to_vfio, config_read, config_write, group_of, open_vfio

from hal.os import PAGE_SIZE
from mockgpu import EDU_BDF, GPU_AUDIO_BDF, GPU_BDF, Machine, RootPort
from mockgpu.edu import EDU_BAR0_SIZE, EDU_ID, EDU_ID_VALUE, EDU_MSIX_TABLE, EduDevice
from mockgpu.navi31 import NAVI31_BAR0_DEFAULT
from mockgpu.pci import BarKind, BarSpec, PM_STATE_D3HOT
from mockgpu.vfio import BusError

GPU_PORT = "0000:03:00.0"


def errno_of(call, *args) -> int:
    with pytest.raises(OSError) as excinfo:
        call(*args)
    return excinfo.value.errno


def cfg_read(device, offset: int, width: int) -> int:
    return int.from_bytes(device.machine.os.pread(device.device, width, device.config_offset() + offset),
                          "little")


def cfg_write(device, offset: int, width: int, value: int) -> None:
    device.machine.os.pwrite(device.device, value.to_bytes(width, "little"), device.config_offset() + offset)


def open_gpu(machine: Machine, audio_on_vfio: bool = False):
    """The GPU through VFIO; its audio function (same IOMMU group) unbound, or on vfio-pci too."""
    if audio_on_vfio:
        bind_to_vfio(machine, GPU_AUDIO_BDF)
    else:
        machine.kernel.unbind(GPU_AUDIO_BDF, "snd_hda_intel")
    return open_vfio(machine, GPU_BDF)


# -- config virtualisation (drivers/vfio/pci/vfio_pci_config.c) ----------------------------------
def test_ids_come_from_vfios_copy_and_the_class_dword_from_the_device(vfio_edu):
    machine = vfio_edu.machine
    machine.surprise_remove(EDU_BDF)
    assert cfg_read(vfio_edu, pci_regs.PCI_VENDOR_ID, 2) == 0x1234  # virtualised: still answers
    assert cfg_read(vfio_edu, pci_regs.PCI_DEVICE_ID, 2) == 0x11E8
    assert cfg_read(vfio_edu, pci_regs.PCI_CLASS_REVISION, 4) == 0xFFFFFFFF  # reaches the device


def test_status_cannot_be_written_through_vfio(vfio_edu):
    edu = vfio_edu.machine.device(EDU_BDF)
    status = edu.cfg.read(pci_regs.PCI_STATUS, 2) | pci_regs.PCI_STATUS_DETECTED_PARITY
    edu.cfg.set_value(pci_regs.PCI_STATUS, 2, status)
    cfg_write(vfio_edu, pci_regs.PCI_STATUS, 2, pci_regs.PCI_STATUS_DETECTED_PARITY)  # RW1C on hardware
    assert edu.cfg.read(pci_regs.PCI_STATUS, 2) & pci_regs.PCI_STATUS_DETECTED_PARITY


def test_rebar_msix_control_and_link_control_writes_are_dropped(machine):
    gpu = open_gpu(machine)
    function = machine.device(GPU_BDF)
    rebar = function.ext_cap_offsets[pci_regs.PCI_EXT_CAP_ID_REBAR] + pci_regs.PCI_REBAR_CTRL
    control = cfg_read(gpu, rebar, 4)
    bigger = control & ~pci_regs.PCI_REBAR_CTRL_BAR_SIZE | (9 << pci_regs.PCI_REBAR_CTRL_BAR_SHIFT)
    cfg_write(gpu, rebar, 4, bigger)  # 512 MiB, supported by the hardware
    assert function.bar_sizes[0] == NAVI31_BAR0_DEFAULT
    assert cfg_read(gpu, rebar, 4) == control
    msix = function.cap_offsets[pci_regs.PCI_CAP_ID_MSIX] + pci_regs.PCI_MSIX_FLAGS
    cfg_write(gpu, msix, 2, cfg_read(gpu, msix, 2) | pci_regs.PCI_MSIX_FLAGS_ENABLE)
    assert not function.msix_control() & pci_regs.PCI_MSIX_FLAGS_ENABLE
    exp = function.cap_offsets[pci_regs.PCI_CAP_ID_EXP]
    cfg_write(gpu, exp + pci_regs.PCI_EXP_LNKCTL, 2, pci_regs.PCI_EXP_LNKCTL_ASPMC)
    assert not function.cfg.read(exp + pci_regs.PCI_EXP_LNKCTL, 2) & pci_regs.PCI_EXP_LNKCTL_ASPMC
    before = function.cfg.read(exp + pci_regs.PCI_EXP_LNKCTL2, 2)
    cfg_write(gpu, exp + pci_regs.PCI_EXP_LNKCTL2, 2, pci_regs.PCI_EXP_LNKCTL2_TLS_2_5GT)
    assert function.cfg.read(exp + pci_regs.PCI_EXP_LNKCTL2, 2) == before
    # Device Control is writable (its Relaxed Ordering bit reaches the device)
    devctl = exp + pci_regs.PCI_EXP_DEVCTL
    cfg_write(gpu, devctl, 2, cfg_read(gpu, devctl, 2) & ~pci_regs.PCI_EXP_DEVCTL_RELAX_EN)
    assert not function.cfg.read(devctl, 2) & pci_regs.PCI_EXP_DEVCTL_RELAX_EN


def test_msi_address_and_data_live_in_vfios_copy(vfio_edu):
    machine = vfio_edu.machine
    edu = machine.device(EDU_BDF)
    msi = edu.cap_offsets[pci_regs.PCI_CAP_ID_MSI]
    cfg_write(vfio_edu, msi + pci_regs.PCI_MSI_ADDRESS_LO, 4, 0x1234_0000)
    assert edu.cfg.read(msi + pci_regs.PCI_MSI_ADDRESS_LO, 4) == 0  # the device did not get it
    assert cfg_read(vfio_edu, msi + pci_regs.PCI_MSI_ADDRESS_LO, 4) == 0x1234_0000
    vfio_edu.set_irq_eventfds(vfio.VFIO_PCI_MSI_IRQ_INDEX, [machine.os.eventfd()])
    host_address = edu.cfg.read(msi + pci_regs.PCI_MSI_ADDRESS_LO, 4)
    assert host_address != 0x1234_0000  # the host kernel programmed the device
    assert cfg_read(vfio_edu, msi + pci_regs.PCI_MSI_ADDRESS_LO, 4) == 0x1234_0000
    # Message Control: enable sticks only while VFIO has MSI on
    flags = msi + pci_regs.PCI_MSI_FLAGS
    cfg_write(vfio_edu, flags, 2, cfg_read(vfio_edu, flags, 2) | pci_regs.PCI_MSI_FLAGS_ENABLE)
    assert cfg_read(vfio_edu, flags, 2) & pci_regs.PCI_MSI_FLAGS_ENABLE


def test_msi_enable_written_by_the_user_does_not_stick_without_the_ioctl(vfio_edu):
    edu = vfio_edu.machine.device(EDU_BDF)
    flags = edu.cap_offsets[pci_regs.PCI_CAP_ID_MSI] + pci_regs.PCI_MSI_FLAGS
    cfg_write(vfio_edu, flags, 2, cfg_read(vfio_edu, flags, 2) | pci_regs.PCI_MSI_FLAGS_ENABLE)
    assert not cfg_read(vfio_edu, flags, 2) & pci_regs.PCI_MSI_FLAGS_ENABLE
    assert not edu.msi_control() & pci_regs.PCI_MSI_FLAGS_ENABLE


def test_config_access_outside_the_region_is_efault(vfio_edu):
    os_ = vfio_edu.machine.os
    size = vfio_edu.region_info(vfio.VFIO_PCI_CONFIG_REGION_INDEX).size
    base = vfio_edu.config_offset()
    assert errno_of(os_.pread, vfio_edu.device, 4, base + size) == errno.EFAULT
    assert errno_of(os_.pread, vfio_edu.device, 8, base + size - 4) == errno.EFAULT
    assert errno_of(os_.pwrite, vfio_edu.device, b"\0\0", base + size - 1) == errno.EFAULT


def test_msix_table_is_not_reachable_through_pread_or_pwrite(vfio_edu):
    machine = vfio_edu.machine
    edu = machine.device(EDU_BDF)
    vfio_edu.enable_bus_master()
    vfio_edu.set_irq_eventfds(vfio.VFIO_PCI_MSIX_IRQ_INDEX, [machine.os.eventfd()])
    table = bytes(edu.msix_table)
    assert machine.os.pread(vfio_edu.device, 16, EDU_MSIX_TABLE) == b"\xff" * 16
    machine.os.pwrite(vfio_edu.device, bytes(16), EDU_MSIX_TABLE)
    assert bytes(edu.msix_table) == table
    assert int.from_bytes(machine.os.pread(vfio_edu.device, 4, EDU_ID), "little") == EDU_ID_VALUE


def test_bar_access_at_the_end_is_cut_short_and_past_it_einval(vfio_edu):
    os_ = vfio_edu.machine.os
    assert len(os_.pread(vfio_edu.device, 8, EDU_BAR0_SIZE - 4)) == 4
    assert errno_of(os_.pread, vfio_edu.device, 4, EDU_BAR0_SIZE) == errno.EINVAL


# -- BAR access with memory decoding off ---------------------------------------------------------
def test_pread_with_decoding_off_is_eio_and_mmap_access_is_a_bus_error(vfio_edu):
    machine = vfio_edu.machine
    vfio_edu.enable_bus_master()
    bar = vfio_edu.map_bar(vfio.VFIO_PCI_BAR0_REGION_INDEX)
    assert bar.read32(EDU_ID) == EDU_ID_VALUE
    command = cfg_read(vfio_edu, pci_regs.PCI_COMMAND, 2)
    cfg_write(vfio_edu, pci_regs.PCI_COMMAND, 2, command & ~pci_regs.PCI_COMMAND_MEMORY)
    assert errno_of(machine.os.pread, vfio_edu.device, 4, EDU_ID) == errno.EIO
    assert errno_of(machine.os.pwrite, vfio_edu.device, b"\0" * 4, EDU_ID) == errno.EIO
    with pytest.raises(BusError, match="SIGBUS"):
        bar.read32(EDU_ID)
    with pytest.raises(BusError):
        bar.write32(EDU_ID, 0)
    assert [(event.bar, event.offset, event.write) for event in machine.vfio.bus_errors] == \
        [(0, EDU_ID, False), (0, EDU_ID, True)]
    cfg_write(vfio_edu, pci_regs.PCI_COMMAND, 2, command)
    assert bar.read32(EDU_ID) == EDU_ID_VALUE  # faults in again once decoding is back


def test_d3hot_through_the_pm_capability_stops_bar_access(vfio_edu):
    machine = vfio_edu.machine
    edu = machine.device(EDU_BDF)
    vfio_edu.enable_bus_master()
    control = edu.cap_offsets[pci_regs.PCI_CAP_ID_PM] + pci_regs.PCI_PM_CTRL
    cfg_write(vfio_edu, control, 2, cfg_read(vfio_edu, control, 2) | PM_STATE_D3HOT)
    assert edu.power_state() == PM_STATE_D3HOT
    assert errno_of(machine.os.pread, vfio_edu.device, 4, EDU_ID) == errno.EIO
    cfg_write(vfio_edu, control, 2, cfg_read(vfio_edu, control, 2) & ~pci_regs.PCI_PM_CTRL_STATE_MASK)
    assert int.from_bytes(machine.os.pread(vfio_edu.device, 4, EDU_ID), "little") == EDU_ID_VALUE


# -- regions: sub-page BARs and VGA --------------------------------------------------------------
class SmallBarEdu(EduDevice):
    """edu with two 256-byte register BARs: the kernel puts the first at a page boundary, the
    second right after it."""

    def __init__(self) -> None:
        super().__init__()
        self.small = {index: bytearray(0x100) for index in (2, 3)}
        for index in self.small:
            self.bars[index] = BarSpec(index, 0x100, BarKind.MEM32)
            self.bar_sizes[index] = 0x100
        self._build_config()

    def bar_read(self, index: int, off: int, n: int) -> bytes:
        if index in self.small:
            return bytes(self.small[index][off:off + n])
        return super().bar_read(index, off, n)

    def bar_write(self, index: int, off: int, data: bytes) -> None:
        if index in self.small:
            self.small[index][off:off + len(data)] = data
            return
        super().bar_write(index, off, data)


def test_a_sub_page_bar_on_a_page_boundary_can_be_mapped():
    machine = Machine()
    machine.add_device(RootPort(), "0000:00:01.0")
    function = machine.add_device(SmallBarEdu(), EDU_BDF, "0000:00:01.0")
    assert function.assigned[2] % PAGE_SIZE == 0 and function.assigned[3] % PAGE_SIZE
    device = open_vfio(machine, EDU_BDF)
    aligned = device.region_info(vfio.VFIO_PCI_BAR2_REGION_INDEX)
    assert aligned.size == 0x100 and aligned.flags & vfio.VFIO_REGION_INFO_FLAG_MMAP
    unaligned = device.region_info(vfio.VFIO_PCI_BAR3_REGION_INDEX)
    assert unaligned.size == 0x100 and not unaligned.flags & vfio.VFIO_REGION_INFO_FLAG_MMAP
    device.enable_bus_master()
    region = machine.os.mmap(device.device, aligned.size, aligned.offset)
    region.write32(0x10, 0xCAFE)
    assert region.read32(0x10) == 0xCAFE
    assert errno_of(machine.os.mmap, device.device, PAGE_SIZE, unaligned.offset) == errno.EINVAL
    assert errno_of(machine.os.mmap, device.device, 2 * PAGE_SIZE, aligned.offset) == errno.EINVAL
    device.close()


def test_vga_region_only_for_a_vga_class_device(machine):
    gpu = open_gpu(machine)
    vga = gpu.region_info(vfio.VFIO_PCI_VGA_REGION_INDEX)
    assert vga.size == 0xC0000
    assert vga.flags == vfio.VFIO_REGION_INFO_FLAG_READ | vfio.VFIO_REGION_INFO_FLAG_WRITE
    assert machine.os.pread(gpu.device, 2, vga.offset + 0x3C0) == b"\xff\xff"
    assert len(machine.os.pread(gpu.device, 16, vga.offset + 0x3D8)) == 8  # cut at 0x3df
    assert errno_of(machine.os.pread, gpu.device, 1, vga.offset + 0x400) == errno.EINVAL
    edu = open_vfio(machine, EDU_BDF)
    request = vfio.vfio_region_info(argsz=vfio.vfio_region_info.SIZE, index=vfio.VFIO_PCI_VGA_REGION_INDEX)
    request_code = vfio.VFIO_DEVICE_GET_REGION_INFO
    assert errno_of(machine.os.ioctl, edu.device, request_code, request.buffer) == errno.EINVAL


# -- open and close (vfio_pci_core_enable / vfio_pci_core_disable) -------------------------------
def test_first_open_clears_bus_mastering_and_resets(machine):
    bind_to_vfio(machine, EDU_BDF)
    edu = machine.device(EDU_BDF)
    command = config_read(machine, EDU_BDF, pci_regs.PCI_COMMAND, 2)
    config_write(machine, EDU_BDF, pci_regs.PCI_COMMAND, 2, command | pci_regs.PCI_COMMAND_MASTER)
    resets = edu.reset_count
    device = open_vfio(machine, EDU_BDF)
    assert not edu.bus_master_enabled()
    assert edu.memory_enabled()  # pci_enable_device
    assert edu.reset_count == resets + 1  # FLR, the first method the kernel has for edu
    info = vfio.vfio_device_info(argsz=vfio.vfio_device_info.SIZE)
    machine.os.ioctl(device.device, vfio.VFIO_DEVICE_GET_INFO, info.buffer)
    assert info.flags & vfio.VFIO_DEVICE_FLAGS_RESET


def test_last_close_leaves_bus_mastering_off(vfio_edu):
    machine = vfio_edu.machine
    vfio_edu.enable_bus_master()
    assert machine.device(EDU_BDF).bus_master_enabled()
    vfio_edu.close()
    assert not machine.device(EDU_BDF).bus_master_enabled()


def test_gpu_sharing_its_bus_gets_no_reset_at_open_and_a_bus_reset_after_the_set_closes(machine):
    gpu_function = machine.device(GPU_BDF)
    audio_function = machine.device(GPU_AUDIO_BDF)
    gpu = open_gpu(machine, audio_on_vfio=True)
    assert gpu_function.reset_count == 0
    info = vfio.vfio_device_info(argsz=vfio.vfio_device_info.SIZE)
    machine.os.ioctl(gpu.device, vfio.VFIO_DEVICE_GET_INFO, info.buffer)
    assert not info.flags & vfio.VFIO_DEVICE_FLAGS_RESET
    gpu.close()
    # vfio_pci_dev_set_try_reset: the GPU needs a reset it could not get alone; both functions
    # are on vfio-pci and closed, so the bus is reset
    assert gpu_function.state.bus_reset_count == 1 and audio_function.state.bus_reset_count == 1


def test_gpu_with_its_audio_function_elsewhere_is_not_bus_reset_at_close(machine):
    gpu = open_gpu(machine)
    gpu.close()
    assert machine.device(GPU_BDF).state.bus_reset_count == 0


# -- hot reset ------------------------------------------------------------------------------------
def hot_reset_info(device, room: int) -> tuple[int, bytearray]:
    raw = bytearray(vfio.vfio_pci_hot_reset_info.SIZE + room * vfio.vfio_pci_dependent_device.SIZE)
    info = vfio.vfio_pci_hot_reset_info.from_buffer(raw)
    info.argsz = len(raw)
    del info
    device.machine.os.ioctl(device.device, vfio.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, raw)
    return vfio.vfio_pci_hot_reset_info.from_buffer(raw).count, raw


def hot_reset(device, fds: list[int]) -> None:
    raw = bytearray(vfio.vfio_pci_hot_reset.SIZE + 4 * len(fds))
    request = vfio.vfio_pci_hot_reset.from_buffer(raw)
    request.argsz = len(raw)
    request.count = len(fds)
    del request
    raw[vfio.vfio_pci_hot_reset.SIZE:] = struct.pack(f"<{len(fds)}i", *fds)
    device.machine.os.ioctl(device.device, vfio.VFIO_DEVICE_PCI_HOT_RESET, raw)


def test_hot_reset_info_lists_every_function_on_the_bus(machine):
    gpu = open_gpu(machine, audio_on_vfio=True)
    raw = bytearray(vfio.vfio_pci_hot_reset_info.SIZE)
    vfio.vfio_pci_hot_reset_info.from_buffer(raw).argsz = len(raw)
    request = vfio.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO
    assert errno_of(machine.os.ioctl, gpu.device, request, raw) == errno.ENOSPC
    assert vfio.vfio_pci_hot_reset_info.from_buffer(raw).count == 2
    count, raw = hot_reset_info(gpu, 2)
    entries = [vfio.vfio_pci_dependent_device.from_buffer(raw, vfio.vfio_pci_hot_reset_info.SIZE + i * 8)
               for i in range(count)]
    group = group_of(machine, GPU_BDF)
    assert [(e.segment, e.bus, e.devfn, e.group_id) for e in entries] == [(0, 4, 0, group), (0, 4, 1, group)]


def test_hot_reset_resets_the_bus_when_every_function_is_on_vfio_pci(machine):
    gpu = open_gpu(machine, audio_on_vfio=True)
    gpu.enable_bus_master()
    function = machine.device(GPU_BDF)
    function.registers[0:4] = b"\x11\x22\x33\x44"
    assert errno_of(hot_reset, gpu, []) == errno.EINVAL  # group-opened devices must name groups
    assert errno_of(hot_reset, gpu, [gpu.container]) == errno.EINVAL  # not a group fd
    hot_reset(gpu, [gpu.group])
    assert function.state.bus_reset_count == 1
    assert machine.device(GPU_AUDIO_BDF).state.bus_reset_count == 1
    assert function.registers[0:4] == bytes(4)  # device state is gone, config state restored
    assert function.bus_master_enabled() and function.bar_address(0) == function.assigned[0]


def test_hot_reset_is_refused_while_a_function_on_the_bus_is_not_on_vfio_pci(machine):
    gpu = open_gpu(machine)  # audio function left without a driver
    assert errno_of(hot_reset, gpu, [gpu.group]) == errno.EINVAL
    assert machine.device(GPU_BDF).state.bus_reset_count == 0


def test_hot_reset_of_a_function_on_a_root_bus_is_enodev():
    machine = Machine()
    machine.add_device(EduDevice(), "0000:00:05.0")
    device = open_vfio(machine, "0000:00:05.0")
    raw = bytearray(vfio.vfio_pci_hot_reset_info.SIZE)
    vfio.vfio_pci_hot_reset_info.from_buffer(raw).argsz = len(raw)
    request = vfio.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO
    assert errno_of(machine.os.ioctl, device.device, request, raw) == errno.ENODEV


# -- the PCI core's reset method choice ----------------------------------------------------------
class SoftResetEdu(EduDevice):
    """edu without FLR whose PM capability has No_Soft_Reset clear."""

    pm_no_soft_reset = False

    def __init__(self) -> None:
        super().__init__()
        self.pcie.flr = False
        self._build_config()


def test_reset_method_order_flr_pm_bus(machine):
    kernel = machine.kernel
    assert kernel.reset_methods(machine.device(EDU_BDF)) == ["flr", "bus"]
    # Navi31 advertises no FLR and keeps state across D3hot (No_Soft_Reset), and its audio
    # function shares the bus: no method at all, for either function
    assert kernel.reset_methods(machine.device(GPU_BDF)) == []
    assert kernel.reset_methods(machine.device(GPU_AUDIO_BDF)) == []
    assert not machine.os.exists(f"/sys/bus/pci/devices/{GPU_BDF}/reset")
    soft = Machine()
    soft.add_device(RootPort(), "0000:00:01.0")
    soft.add_device(RootPort(), "0000:00:02.0")
    function = soft.add_device(SoftResetEdu(), EDU_BDF, "0000:00:01.0")
    sibling = soft.add_device(SoftResetEdu(), "0000:02:00.1", "0000:00:02.0")
    soft.add_device(EduDevice(), "0000:02:00.0", "0000:00:02.0")
    assert soft.kernel.reset_methods(function) == ["pm", "bus"]
    assert soft.kernel.reset_methods(sibling) == ["pm"]


def test_pm_reset_is_a_d3hot_to_d0_transition():
    machine = Machine()
    machine.add_device(RootPort(), "0000:00:01.0")
    function = machine.add_device(SoftResetEdu(), EDU_BDF, "0000:00:01.0")
    machine.os.write_text(f"/sys/bus/pci/devices/{EDU_BDF}/reset_method", "pm")
    address = function.bar_address(0)
    machine.os.write_text(f"/sys/bus/pci/devices/{EDU_BDF}/reset", "1")
    assert function.state.pm_reset_count == 1 and function.state.bus_reset_count == 0
    assert function.bar_address(0) == address  # pci_reset_function restored the config state
    assert function.power_state() == 0


def test_flr_written_through_vfio_without_flr_support_does_nothing(machine):
    gpu = open_gpu(machine)
    function = machine.device(GPU_BDF)
    devctl = function.cap_offsets[pci_regs.PCI_CAP_ID_EXP] + pci_regs.PCI_EXP_DEVCTL
    cfg_write(gpu, devctl, 2, cfg_read(gpu, devctl, 2) | pci_regs.PCI_EXP_DEVCTL_BCR_FLR)
    assert function.reset_count == 0
    assert not cfg_read(gpu, devctl, 2) & pci_regs.PCI_EXP_DEVCTL_BCR_FLR


def test_request_and_error_triggers_are_signalled(vfio_edu):
    machine = vfio_edu.machine
    fds = {}
    for index in (vfio.VFIO_PCI_ERR_IRQ_INDEX, vfio.VFIO_PCI_REQ_IRQ_INDEX):
        fds[index] = machine.os.eventfd()
        vfio_edu.set_irq_eventfds(index, [fds[index]])
    assert errno_of(machine.os.write_text, "/sys/bus/pci/drivers/vfio-pci/unbind", EDU_BDF) == errno.EBUSY
    assert machine.os.poll([fds[vfio.VFIO_PCI_REQ_IRQ_INDEX]], 0.0) == [fds[vfio.VFIO_PCI_REQ_IRQ_INDEX]]
    assert machine.os.poll([fds[vfio.VFIO_PCI_ERR_IRQ_INDEX]], 0.0) == []
    machine.vfio.error_detected(EDU_BDF)
    assert machine.os.poll([fds[vfio.VFIO_PCI_ERR_IRQ_INDEX]], 0.0) == [fds[vfio.VFIO_PCI_ERR_IRQ_INDEX]]

