"""VFIO ioctl argument validation and semantics, as drivers/vfio answers them."""
from __future__ import annotations

import errno
import struct

import pytest
from autogen.linux import pci_regs, vfio
from mockgpu_helpers import VFIODevice, bind_to_vfio, config_read, config_write, group_of, open_vfio

from hal.os import O_RDWR
from mockgpu import EDU_BDF, GPU_AUDIO_BDF, GPU_BDF, Machine, RootPort
from mockgpu.bits import field_get
from mockgpu.edu import (EDU_BAR0_SIZE, EDU_CLASS, EDU_DEVICE_ID, EDU_ID, EDU_ID_VALUE, EDU_MSIX_VECTORS,
                         EDU_VENDOR_ID, EduDevice)
from mockgpu.pci import PCIE_CAP_OFFSET, BarKind, BarSpec, Identity, PCIFunction
from mockgpu.iommu import IOVA_LIMIT, MSI_WINDOW_BASE, MSI_WINDOW_SIZE
from mockgpu.vfio import REGION_OFFSET_SHIFT


def errno_of(call, *args) -> int:
    with pytest.raises(OSError) as excinfo:
        call(*args)
    return excinfo.value.errno


def test_container_basics(machine):
    fd = machine.os.open("/dev/vfio/vfio", O_RDWR)
    assert machine.os.ioctl(fd, vfio.VFIO_GET_API_VERSION) == vfio.VFIO_API_VERSION
    assert machine.os.ioctl(fd, vfio.VFIO_CHECK_EXTENSION, vfio.VFIO_TYPE1v2_IOMMU) == 1
    assert machine.os.ioctl(fd, vfio.VFIO_CHECK_EXTENSION, vfio.VFIO_NOIOMMU_IOMMU) == 0
    assert errno_of(machine.os.ioctl, fd, vfio.VFIO_SET_IOMMU, vfio.VFIO_TYPE1v2_IOMMU) == errno.EINVAL
    # container.c vfio_fops_unl_ioctl: without an IOMMU driver nothing takes other ioctls: EINVAL
    assert errno_of(machine.os.ioctl, fd, 0x3BFF, None) == errno.EINVAL
    machine.os.close(fd)


def test_no_container_without_iommu():
    m = Machine.default(iommu=False)
    assert not m.os.exists("/dev/vfio/vfio")
    assert not m.os.exists(f"/sys/bus/pci/devices/{EDU_BDF}/iommu_group")


def test_group_not_viable_while_a_member_has_a_host_driver(machine):
    bind_to_vfio(machine, GPU_BDF)  # the audio function stays on snd_hda_intel
    container = machine.os.open("/dev/vfio/vfio", O_RDWR)
    group = machine.os.open(f"/dev/vfio/{group_of(machine, GPU_BDF)}", O_RDWR)
    status = vfio.vfio_group_status(argsz=vfio.vfio_group_status.SIZE)
    machine.os.ioctl(group, vfio.VFIO_GROUP_GET_STATUS, status.buffer)
    assert not status.flags & vfio.VFIO_GROUP_FLAGS_VIABLE
    pointer = bytearray(struct.pack("<i", container))
    # iommu_group_claim_dma_owner: the audio driver holds the group's DMA API
    assert errno_of(machine.os.ioctl, group, vfio.VFIO_GROUP_SET_CONTAINER, pointer) == errno.EPERM
    machine.os.write_text("/sys/bus/pci/drivers/snd_hda_intel/unbind", GPU_AUDIO_BDF)
    machine.os.ioctl(group, vfio.VFIO_GROUP_GET_STATUS, status.buffer)
    assert status.flags & vfio.VFIO_GROUP_FLAGS_VIABLE
    machine.os.ioctl(group, vfio.VFIO_GROUP_SET_CONTAINER, pointer)
    machine.os.ioctl(group, vfio.VFIO_GROUP_GET_STATUS, status.buffer)
    assert status.flags & vfio.VFIO_GROUP_FLAGS_CONTAINER_SET


def test_group_opens_once_and_pointer_arguments(machine):
    bind_to_vfio(machine, EDU_BDF)
    path = f"/dev/vfio/{group_of(machine, EDU_BDF)}"
    group = machine.os.open(path, O_RDWR)
    assert errno_of(machine.os.open, path, O_RDWR) == errno.EBUSY
    container = machine.os.open("/dev/vfio/vfio", O_RDWR)
    assert errno_of(machine.os.ioctl, group, vfio.VFIO_GROUP_SET_CONTAINER, container) == errno.EFAULT
    name = bytearray(EDU_BDF.encode() + b"\0")
    assert errno_of(machine.os.ioctl, group, vfio.VFIO_GROUP_GET_DEVICE_FD, name) == errno.EINVAL
    short = bytearray(4)
    assert errno_of(machine.os.ioctl, group, vfio.VFIO_GROUP_GET_STATUS, short) == errno.EFAULT
    status = vfio.vfio_group_status(argsz=4)
    assert errno_of(machine.os.ioctl, group, vfio.VFIO_GROUP_GET_STATUS, status.buffer) == errno.EINVAL


def test_unprivileged_cannot_open_groups(machine):
    bind_to_vfio(machine, EDU_BDF)
    machine.set_root(False)
    assert errno_of(machine.os.open, f"/dev/vfio/{group_of(machine, EDU_BDF)}", O_RDWR) == errno.EACCES


def test_device_info_and_regions(vfio_edu):
    os_ = vfio_edu.machine.os
    info = vfio.vfio_device_info(argsz=vfio.vfio_device_info.SIZE)
    os_.ioctl(vfio_edu.device, vfio.VFIO_DEVICE_GET_INFO, info.buffer)
    assert info.flags & vfio.VFIO_DEVICE_FLAGS_PCI and info.flags & vfio.VFIO_DEVICE_FLAGS_RESET
    assert info.num_regions == vfio.VFIO_PCI_NUM_REGIONS and info.num_irqs == vfio.VFIO_PCI_NUM_IRQS
    bar0 = vfio_edu.region_info(vfio.VFIO_PCI_BAR0_REGION_INDEX)
    assert bar0.size == EDU_BAR0_SIZE and bar0.flags & vfio.VFIO_REGION_INFO_FLAG_MMAP
    assert vfio_edu.region_info(vfio.VFIO_PCI_BAR1_REGION_INDEX).size == 0
    config = vfio_edu.region_info(vfio.VFIO_PCI_CONFIG_REGION_INDEX)
    assert config.offset == vfio.VFIO_PCI_CONFIG_REGION_INDEX << REGION_OFFSET_SHIFT
    assert int.from_bytes(os_.pread(vfio_edu.device, 2, config.offset), "little") == 0x1234
    bad = vfio.vfio_region_info(argsz=vfio.vfio_region_info.SIZE, index=vfio.VFIO_PCI_NUM_REGIONS)
    assert errno_of(os_.ioctl, vfio_edu.device, vfio.VFIO_DEVICE_GET_REGION_INFO, bad.buffer) == errno.EINVAL
    short = vfio.vfio_region_info(argsz=8)
    request = vfio.VFIO_DEVICE_GET_REGION_INFO
    assert errno_of(os_.ioctl, vfio_edu.device, request, short.buffer) == errno.EINVAL


def test_bar_access_through_the_device_fd(vfio_edu):
    os_ = vfio_edu.machine.os
    bar = vfio_edu.map_bar(vfio.VFIO_PCI_BAR0_REGION_INDEX)
    assert bar.read32(EDU_ID) == EDU_ID_VALUE
    assert int.from_bytes(os_.pread(vfio_edu.device, 4, EDU_ID), "little") == EDU_ID_VALUE
    assert errno_of(os_.pread, vfio_edu.device, 4, EDU_BAR0_SIZE) == errno.EINVAL
    assert errno_of(os_.mmap, vfio_edu.device, 4096, 4096 + 8) == errno.EINVAL
    assert errno_of(os_.mmap, vfio_edu.device, 4096, vfio_edu.config_offset()) == errno.EINVAL


def test_irq_info_and_set_irqs_validation(vfio_edu):
    os_ = vfio_edu.machine.os
    info = vfio.vfio_irq_info(argsz=vfio.vfio_irq_info.SIZE, index=vfio.VFIO_PCI_MSIX_IRQ_INDEX)
    os_.ioctl(vfio_edu.device, vfio.VFIO_DEVICE_GET_IRQ_INFO, info.buffer)
    assert info.count == 2 and info.flags & vfio.VFIO_IRQ_INFO_EVENTFD
    efd = os_.eventfd()
    with pytest.raises(OSError) as excinfo:
        vfio_edu.set_irq_eventfds(vfio.VFIO_PCI_MSIX_IRQ_INDEX, [efd, efd, efd])
    assert excinfo.value.errno == errno.EINVAL
    with pytest.raises(OSError) as excinfo:
        vfio_edu.set_irq_eventfds(vfio.VFIO_PCI_MSI_IRQ_INDEX, [vfio_edu.container])
    assert excinfo.value.errno == errno.EINVAL
    vfio_edu.set_irq_eventfds(vfio.VFIO_PCI_MSI_IRQ_INDEX, [efd])
    with pytest.raises(OSError) as excinfo:
        vfio_edu.set_irq_eventfds(vfio.VFIO_PCI_MSIX_IRQ_INDEX, [efd])
    assert excinfo.value.errno == errno.EINVAL  # MSI already in use
    buf = bytearray(vfio.vfio_irq_set.SIZE)
    request = vfio.vfio_irq_set.from_buffer(buf)
    request.argsz = len(buf)
    two_data_types = vfio.VFIO_IRQ_SET_DATA_NONE | vfio.VFIO_IRQ_SET_DATA_EVENTFD
    request.flags = two_data_types | vfio.VFIO_IRQ_SET_ACTION_TRIGGER
    request.index = vfio.VFIO_PCI_MSI_IRQ_INDEX
    assert errno_of(os_.ioctl, vfio_edu.device, vfio.VFIO_DEVICE_SET_IRQS, buf) == errno.EINVAL
    request.flags = vfio.VFIO_IRQ_SET_DATA_EVENTFD | vfio.VFIO_IRQ_SET_ACTION_TRIGGER
    request.count = 1
    assert errno_of(os_.ioctl, vfio_edu.device, vfio.VFIO_DEVICE_SET_IRQS, buf) == errno.EINVAL  # no data


def test_unbind_while_open_is_busy_and_close_resets(vfio_edu):
    m = vfio_edu.machine
    assert errno_of(m.os.write_text, "/sys/bus/pci/drivers/vfio-pci/unbind", EDU_BDF) == errno.EBUSY
    before = m.device(EDU_BDF).reset_count
    vfio_edu.close()
    assert m.device(EDU_BDF).reset_count == before + 1
    m.os.write_text("/sys/bus/pci/drivers/vfio-pci/unbind", EDU_BDF)
    assert m.os.open_fds == []


def test_device_reset_ioctl(vfio_edu):
    m = vfio_edu.machine
    before = m.device(EDU_BDF).reset_count  # the first open already reset it (vfio_pci_core_enable)
    m.os.ioctl(vfio_edu.device, vfio.VFIO_DEVICE_RESET)
    assert m.device(EDU_BDF).reset_count == before + 1


def test_gpu_without_reset_method(machine):
    machine.os.write_text("/sys/bus/pci/drivers/snd_hda_intel/unbind", GPU_AUDIO_BDF)
    gpu = open_vfio(machine, GPU_BDF)
    info = vfio.vfio_device_info(argsz=vfio.vfio_device_info.SIZE)
    machine.os.ioctl(gpu.device, vfio.VFIO_DEVICE_GET_INFO, info.buffer)
    assert not info.flags & vfio.VFIO_DEVICE_FLAGS_RESET
    assert errno_of(machine.os.ioctl, gpu.device, vfio.VFIO_DEVICE_RESET, None) == errno.EINVAL
    io_bar = gpu.region_info(vfio.VFIO_PCI_BAR4_REGION_INDEX)
    assert io_bar.size == 256 and not io_bar.flags & vfio.VFIO_REGION_INFO_FLAG_MMAP
    assert gpu.region_info(vfio.VFIO_PCI_BAR1_REGION_INDEX).size == 0  # upper half of BAR0
    vram = gpu.map_bar(vfio.VFIO_PCI_BAR0_REGION_INDEX)
    vram.write64(8, 0x1122334455667788)
    assert bytes(machine.device(GPU_BDF).vram[8:16]) == (0x1122334455667788).to_bytes(8, "little")


def test_bar_sizing_through_vfio_is_virtual(vfio_edu):
    m = vfio_edu.machine
    bar0 = vfio_edu.config_offset() + pci_regs.PCI_BASE_ADDRESS_0
    physical = m.device(EDU_BDF).bar_address(0)
    m.os.pwrite(vfio_edu.device, b"\xff\xff\xff\xff", bar0)
    sized = int.from_bytes(m.os.pread(vfio_edu.device, 4, bar0), "little")
    assert sized == (~(EDU_BAR0_SIZE - 1)) & 0xFFFFFFFF
    assert m.device(EDU_BDF).bar_address(0) == physical
    vfio_edu.enable_bus_master()
    assert vfio_edu.map_bar(vfio.VFIO_PCI_BAR0_REGION_INDEX).read32(EDU_ID) == EDU_ID_VALUE


def test_flr_through_vfio_config_is_a_kernel_reset(vfio_edu):
    m = vfio_edu.machine
    vfio_edu.enable_bus_master()
    devctl = vfio_edu.config_offset() + PCIE_CAP_OFFSET + pci_regs.PCI_EXP_DEVCTL
    value = int.from_bytes(m.os.pread(vfio_edu.device, 2, devctl), "little") | pci_regs.PCI_EXP_DEVCTL_BCR_FLR
    edu = m.device(EDU_BDF)
    before = edu.state.flr_count  # the first open already reset it (vfio_pci_core_enable)
    m.os.pwrite(vfio_edu.device, value.to_bytes(2, "little"), devctl)
    assert edu.state.flr_count == before + 1
    assert edu.bus_master_enabled()  # restored by the kernel around the reset


def test_iommu_info_reports_iova_ranges_without_the_msi_window(vfio_edu):
    m = vfio_edu.machine
    info = vfio.vfio_iommu_type1_info(argsz=vfio.vfio_iommu_type1_info.SIZE)
    m.os.ioctl(vfio_edu.container, vfio.VFIO_IOMMU_GET_INFO, info.buffer)
    assert info.flags & vfio.VFIO_IOMMU_INFO_CAPS and info.iova_pgsizes & 4096
    full = bytearray(info.argsz)
    again = vfio.vfio_iommu_type1_info.from_buffer(full)
    again.argsz = len(full)
    m.os.ioctl(vfio_edu.container, vfio.VFIO_IOMMU_GET_INFO, full)
    cap = vfio.vfio_iommu_type1_info_cap_iova_range.from_buffer(full, again.cap_offset)
    assert cap.header.id == vfio.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE
    first = again.cap_offset + cap.SIZE
    ranges = [vfio.vfio_iova_range.from_buffer(full, first + i * vfio.vfio_iova_range.SIZE)
              for i in range(cap.nr_iovas)]
    assert [(r.start, r.end) for r in ranges] == [(0, MSI_WINDOW_BASE - 1),
                                                  (MSI_WINDOW_BASE + MSI_WINDOW_SIZE, IOVA_LIMIT - 1)]
    mem = m.os.alloc_locked(4096)
    assert errno_of(vfio_edu.map_dma, mem.addr, MSI_WINDOW_BASE, 4096) == errno.EINVAL


def test_minimum_argsz_buffer_gets_the_answer(vfio_edu):
    m = vfio_edu.machine
    minimum = bytearray(vfio.vfio_device_info.FIELDS["num_irqs"].offset + 4)
    minimum[:4] = len(minimum).to_bytes(4, "little")
    m.os.ioctl(vfio_edu.device, vfio.VFIO_DEVICE_GET_INFO, minimum)
    regions = vfio.vfio_device_info.FIELDS["num_regions"].offset
    assert int.from_bytes(minimum[regions:regions + 4], "little") == vfio.VFIO_PCI_NUM_REGIONS


def set_irqs_without_data(device, index: int, start: int, count: int) -> None:
    request = vfio.vfio_irq_set(argsz=vfio.vfio_irq_set.SIZE, index=index, start=start, count=count,
                                flags=vfio.VFIO_IRQ_SET_DATA_NONE | vfio.VFIO_IRQ_SET_ACTION_TRIGGER)
    device.machine.os.ioctl(device.device, vfio.VFIO_DEVICE_SET_IRQS, request.buffer)


def test_disabling_an_index_that_is_not_enabled_is_einval(vfio_edu):
    msi, msix = vfio.VFIO_PCI_MSI_IRQ_INDEX, vfio.VFIO_PCI_MSIX_IRQ_INDEX
    assert errno_of(set_irqs_without_data, vfio_edu, msi, 0, 0) == errno.EINVAL
    assert errno_of(set_irqs_without_data, vfio_edu, msix, 0, 0) == errno.EINVAL
    efd = vfio_edu.machine.os.eventfd()
    vfio_edu.set_irq_eventfds(msix, [efd])
    assert errno_of(set_irqs_without_data, vfio_edu, msi, 0, 0) == errno.EINVAL  # MSI-X is the one on
    assert errno_of(set_irqs_without_data, vfio_edu, msi, 0, 1) == errno.EINVAL  # no loopback either
    set_irqs_without_data(vfio_edu, msix, 0, 0)
    assert errno_of(set_irqs_without_data, vfio_edu, msix, 0, 0) == errno.EINVAL  # already off


class FourVectorMSIEdu(EduDevice):
    msi_vectors = 4


def open_four_vector_edu() -> tuple[Machine, FourVectorMSIEdu, VFIODevice]:
    """A machine whose edu offers 4 MSI vectors, opened through VFIO with bus mastering on."""
    machine = Machine()
    machine.add_device(RootPort(), "0000:00:01.0")
    function = machine.add_device(FourVectorMSIEdu(), EDU_BDF, "0000:00:01.0")
    device = open_vfio(machine, EDU_BDF)
    device.enable_bus_master()
    return machine, function, device


def test_multi_vector_msi_through_vfio():
    machine, function, device = open_four_vector_edu()
    fds = [machine.os.eventfd() for _ in range(3)]
    device.set_irq_eventfds(vfio.VFIO_PCI_MSI_IRQ_INDEX, fds)
    flags = function.msi_control()
    assert flags & pci_regs.PCI_MSI_FLAGS_ENABLE
    assert field_get(flags, pci_regs.PCI_MSI_FLAGS_QSIZE) == 2  # three asked for: four enabled
    for vector in (2, 0, 1):
        assert function.raise_interrupt(vector)
        assert machine.os.poll([fds[vector]], 0.0) == [fds[vector]]
        assert int.from_bytes(machine.os.read(fds[vector], 8), "little") == 1
    spurious = len(machine.bus.interrupts.spurious)
    assert function.raise_interrupt(3)  # enabled by the power-of-two rounding but nobody listens
    assert len(machine.bus.interrupts.spurious) == spurious + 1
    efd = machine.os.eventfd()
    assert errno_of(device.set_irq_eventfds, vfio.VFIO_PCI_MSI_IRQ_INDEX, [efd] * 4) == errno.EINVAL
    set_irqs_without_data(device, vfio.VFIO_PCI_MSI_IRQ_INDEX, 0, 0)
    assert not function.msi_control() & pci_regs.PCI_MSI_FLAGS_ENABLE
    device.close()


def test_command_write_puts_back_bars_a_backdoor_bus_reset_cleared(vfio_edu):
    machine = vfio_edu.machine
    edu = machine.device(EDU_BDF)
    address = edu.bar_address(0)
    vfio_edu.enable_bus_master()
    port = "0000:00:01.0"
    control = config_read(machine, port, pci_regs.PCI_BRIDGE_CONTROL, 2)
    config_write(machine, port, pci_regs.PCI_BRIDGE_CONTROL, 2, control | pci_regs.PCI_BRIDGE_CTL_BUS_RESET)
    config_write(machine, port, pci_regs.PCI_BRIDGE_CONTROL, 2, control)
    assert edu.bar_address(0) == 0
    bar = vfio_edu.map_bar(vfio.VFIO_PCI_BAR0_REGION_INDEX)
    assert bar.read32(EDU_ID) == 0xFFFFFFFF
    vfio_edu.enable_bus_master()  # vfio_basic_config_write notices and runs vfio_bar_restore
    assert edu.bar_address(0) == address
    assert bar.read32(EDU_ID) == EDU_ID_VALUE


# -- container and group errnos (drivers/vfio/container.c, group.c, vfio_iommu_type1.c) ----------
def attach(machine: Machine, bdf: str) -> tuple[int, int]:
    """A container and the group of `bdf` (bound to vfio-pci) in it, no IOMMU set yet."""
    bind_to_vfio(machine, bdf)
    container = machine.os.open("/dev/vfio/vfio", O_RDWR)
    group = machine.os.open(f"/dev/vfio/{group_of(machine, bdf)}", O_RDWR)
    machine.os.ioctl(group, vfio.VFIO_GROUP_SET_CONTAINER, bytearray(struct.pack("<i", container)))
    return container, group


def test_container_ioctls_before_set_iommu_are_einval_and_set_iommu_runs_once(machine):
    container, _ = attach(machine, EDU_BDF)
    info = vfio.vfio_iommu_type1_info(argsz=vfio.vfio_iommu_type1_info.SIZE)
    assert errno_of(machine.os.ioctl, container, vfio.VFIO_IOMMU_GET_INFO, info.buffer) == errno.EINVAL
    mem = machine.os.alloc_pages(4096)
    request = vfio.vfio_iommu_type1_dma_map(argsz=vfio.vfio_iommu_type1_dma_map.SIZE, vaddr=mem.addr,
                                            iova=1 << 20, size=4096, flags=vfio.VFIO_DMA_MAP_FLAG_READ)
    assert errno_of(machine.os.ioctl, container, vfio.VFIO_IOMMU_MAP_DMA, request.buffer) == errno.EINVAL
    machine.os.ioctl(container, vfio.VFIO_SET_IOMMU, vfio.VFIO_TYPE1v2_IOMMU)
    for again in (vfio.VFIO_TYPE1v2_IOMMU, vfio.VFIO_TYPE1_IOMMU):
        assert errno_of(machine.os.ioctl, container, vfio.VFIO_SET_IOMMU, again) == errno.EINVAL
    machine.os.ioctl(container, vfio.VFIO_IOMMU_MAP_DMA, request.buffer)
    # with type1 set, an ioctl it does not know is ENOTTY (vfio_iommu_type1_ioctl)
    assert errno_of(machine.os.ioctl, container, 0x3BFF, None) == errno.ENOTTY


def test_check_extension_answers_like_type1(machine):
    container, _ = attach(machine, EDU_BDF)
    check = vfio.VFIO_CHECK_EXTENSION
    for extension in (vfio.VFIO_TYPE1_IOMMU, vfio.VFIO_TYPE1v2_IOMMU, vfio.VFIO_TYPE1_NESTING_IOMMU,
                      vfio.VFIO_UNMAP_ALL):
        assert machine.os.ioctl(container, check, extension) == 1
    # these need an opened driver (vfio_iommu_type1_check_extension with iommu == NULL says 0)
    assert machine.os.ioctl(container, check, vfio.VFIO_UPDATE_VADDR) == 0
    assert machine.os.ioctl(container, check, vfio.VFIO_DMA_CC_IOMMU) == 0
    assert machine.os.ioctl(container, check, vfio.VFIO_NOIOMMU_IOMMU) == 0
    assert machine.os.ioctl(container, check, vfio.VFIO_SPAPR_TCE_IOMMU) == 0
    # type1 says yes to NESTING, but VT-d and AMD-Vi have no enable_nesting: the attach fails
    set_iommu = vfio.VFIO_SET_IOMMU
    assert errno_of(machine.os.ioctl, container, set_iommu, vfio.VFIO_TYPE1_NESTING_IOMMU) == errno.EINVAL
    # UNMAP_ALL is an extension, not an IOMMU type: vfio_iommu_type1_open refuses it
    assert errno_of(machine.os.ioctl, container, set_iommu, vfio.VFIO_UNMAP_ALL) == errno.EINVAL
    assert errno_of(machine.os.ioctl, container, set_iommu, vfio.VFIO_NOIOMMU_IOMMU) == errno.ENODEV
    machine.os.ioctl(container, vfio.VFIO_SET_IOMMU, vfio.VFIO_TYPE1v2_IOMMU)
    assert machine.os.ioctl(container, check, vfio.VFIO_UPDATE_VADDR) == 1
    assert machine.os.ioctl(container, check, vfio.VFIO_DMA_CC_IOMMU) == 1
    assert machine.os.ioctl(container, check, vfio.VFIO_UNMAP_ALL) == 1


def test_set_container_wants_an_open_container_fd(machine):
    bind_to_vfio(machine, EDU_BDF)
    group = machine.os.open(f"/dev/vfio/{group_of(machine, EDU_BDF)}", O_RDWR)
    not_a_container = machine.os.eventfd()
    pointer = bytearray(struct.pack("<i", not_a_container))
    assert errno_of(machine.os.ioctl, group, vfio.VFIO_GROUP_SET_CONTAINER, pointer) == errno.EBADFD
    machine.os.close(not_a_container)
    assert errno_of(machine.os.ioctl, group, vfio.VFIO_GROUP_SET_CONTAINER, pointer) == errno.EBADF
    container = machine.os.open("/dev/vfio/vfio", O_RDWR)
    pointer = bytearray(struct.pack("<i", container))
    machine.os.ioctl(group, vfio.VFIO_GROUP_SET_CONTAINER, pointer)
    assert errno_of(machine.os.ioctl, group, vfio.VFIO_GROUP_SET_CONTAINER, pointer) == errno.EINVAL


def test_a_group_in_a_container_reports_viable_and_container_set(machine):
    _, group = attach(machine, EDU_BDF)
    status = vfio.vfio_group_status(argsz=vfio.vfio_group_status.SIZE)
    machine.os.ioctl(group, vfio.VFIO_GROUP_GET_STATUS, status.buffer)
    assert status.flags == vfio.VFIO_GROUP_FLAGS_VIABLE | vfio.VFIO_GROUP_FLAGS_CONTAINER_SET


def test_get_device_fd_looks_the_name_up_before_the_container(machine):
    bind_to_vfio(machine, EDU_BDF)
    group = machine.os.open(f"/dev/vfio/{group_of(machine, EDU_BDF)}", O_RDWR)
    unknown = bytearray(b"0000:09:00.0\0")
    assert errno_of(machine.os.ioctl, group, vfio.VFIO_GROUP_GET_DEVICE_FD, unknown) == errno.ENODEV
    name = bytearray(EDU_BDF.encode() + b"\0")
    assert errno_of(machine.os.ioctl, group, vfio.VFIO_GROUP_GET_DEVICE_FD, name) == errno.EINVAL


def test_no_iommu_containers_need_cap_sys_rawio():
    machine = Machine.default(iommu=False, noiommu=True)
    bind_to_vfio(machine, EDU_BDF)
    container = machine.os.open("/dev/vfio/vfio", O_RDWR)
    group = machine.os.open(f"/dev/vfio/noiommu-{group_of(machine, EDU_BDF)}", O_RDWR)
    pointer = bytearray(struct.pack("<i", container))
    machine.set_root(False)
    assert errno_of(machine.os.ioctl, group, vfio.VFIO_GROUP_SET_CONTAINER, pointer) == errno.EPERM
    machine.set_root(True)
    machine.os.ioctl(group, vfio.VFIO_GROUP_SET_CONTAINER, pointer)
    machine.set_root(False)
    noiommu = vfio.VFIO_NOIOMMU_IOMMU
    assert errno_of(machine.os.ioctl, container, vfio.VFIO_SET_IOMMU, noiommu) == errno.EPERM
    machine.set_root(True)
    machine.os.ioctl(container, vfio.VFIO_SET_IOMMU, noiommu)


def test_no_iommu_groups_are_per_device_and_live_while_vfio_pci_has_it():
    # drivers/vfio/group.c vfio_noiommu_group_alloc: one fake group per device, made when vfio-pci
    # registers it and gone when it unregisters; the audio function on its host driver has none
    machine = Machine.default(iommu=False, noiommu=True)
    gpu_sysfs = f"/sys/bus/pci/devices/{GPU_BDF}"
    assert not machine.os.exists(f"{gpu_sysfs}/iommu_group")
    assert machine.os.listdir("/sys/kernel/iommu_groups") == []
    bind_to_vfio(machine, GPU_BDF)
    group = group_of(machine, GPU_BDF)
    assert group == 0  # iommu_group_alloc: the lowest free id, and nothing else has a group
    assert not machine.os.exists(f"/sys/bus/pci/devices/{GPU_AUDIO_BDF}/iommu_group")
    assert machine.os.listdir(f"/sys/kernel/iommu_groups/{group}/devices") == [GPU_BDF]
    assert machine.os.read_text(f"/sys/kernel/iommu_groups/{group}/name") == "vfio-noiommu\n"
    assert machine.os.read_text(f"/sys/kernel/iommu_groups/{group}/type") == "unknown\n"
    assert sorted(machine.os.listdir("/dev/vfio")) == [f"noiommu-{group}", "vfio"]
    container = machine.os.open("/dev/vfio/vfio", O_RDWR)
    group_fd = machine.os.open(f"/dev/vfio/noiommu-{group}", O_RDWR)
    status = vfio.vfio_group_status(argsz=vfio.vfio_group_status.SIZE)
    machine.os.ioctl(group_fd, vfio.VFIO_GROUP_GET_STATUS, status.buffer)
    assert status.flags & vfio.VFIO_GROUP_FLAGS_VIABLE  # snd_hda_intel's DMA is not in this group
    pointer = bytearray(struct.pack("<i", container))
    machine.os.ioctl(group_fd, vfio.VFIO_GROUP_SET_CONTAINER, pointer)
    bind_to_vfio(machine, EDU_BDF)
    assert group_of(machine, EDU_BDF) == group + 1
    machine.os.write_text("/sys/bus/pci/drivers/vfio-pci/unbind", GPU_BDF)
    # vfio_device_remove_group: the group, its node and its link go; a file still open on it stays
    # open but answers ENODEV, and its number is free for the next group
    assert not machine.os.exists(f"{gpu_sysfs}/iommu_group")
    assert machine.os.listdir("/sys/kernel/iommu_groups") == [str(group + 1)]
    assert sorted(machine.os.listdir("/dev/vfio")) == [f"noiommu-{group + 1}", "vfio"]
    assert machine.vfio.group_container == {}
    assert errno_of(machine.os.ioctl, group_fd, vfio.VFIO_GROUP_GET_STATUS, status.buffer) == errno.ENODEV
    machine.os.write_text("/sys/bus/pci/drivers_probe", GPU_BDF)
    assert group_of(machine, GPU_BDF) == group
    again = machine.os.open(f"/dev/vfio/noiommu-{group}", O_RDWR)  # a new group: not EBUSY
    machine.os.close(group_fd)  # closing the dead group's file leaves the new one alone
    assert errno_of(machine.os.open, f"/dev/vfio/noiommu-{group}", O_RDWR) == errno.EBUSY
    machine.os.close(again)
    machine.os.close(container)


def test_vfio_pci_does_not_bind_without_an_iommu_or_no_iommu_mode():
    # vfio_group_find_or_alloc: no IOMMU group and no-IOMMU mode off -> EINVAL, the probe fails
    machine = Machine.default(iommu=False)
    machine.os.write_text(f"/sys/bus/pci/devices/{EDU_BDF}/driver_override", "vfio-pci")
    machine.os.write_text("/sys/bus/pci/drivers/edu/unbind", EDU_BDF)
    assert errno_of(machine.os.write_text, "/sys/bus/pci/drivers/vfio-pci/bind", EDU_BDF) == errno.EINVAL
    assert machine.kernel.driver_of(EDU_BDF) is None
    machine.os.write_text("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode", "1")
    machine.os.write_text("/sys/bus/pci/drivers/vfio-pci/bind", EDU_BDF)
    assert machine.os.exists(f"/dev/vfio/noiommu-{group_of(machine, EDU_BDF)}")


# -- interrupts: counts, partial grants, MSI-X resizing (drivers/vfio/pci/vfio_pci_intrs.c) ------
def irq_info(device, index: int):
    info = vfio.vfio_irq_info(argsz=vfio.vfio_irq_info.SIZE, index=index)
    device.machine.os.ioctl(device.device, vfio.VFIO_DEVICE_GET_IRQ_INFO, info.buffer)
    return info


def test_irq_counts_come_from_the_capability_registers(vfio_edu):
    edu = vfio_edu.machine.device(EDU_BDF)
    msix_flags = edu.cfg.read(edu.cap_offsets[pci_regs.PCI_CAP_ID_MSIX] + pci_regs.PCI_MSIX_FLAGS, 2)
    assert msix_flags & pci_regs.PCI_MSIX_FLAGS_QSIZE == EDU_MSIX_VECTORS - 1  # Table Size is N-1
    assert irq_info(vfio_edu, vfio.VFIO_PCI_MSIX_IRQ_INDEX).count == EDU_MSIX_VECTORS
    assert irq_info(vfio_edu, vfio.VFIO_PCI_MSI_IRQ_INDEX).count == 1
    # what vfio-pci reads is the register, not the model's idea of it
    msix = edu.cap_offsets[pci_regs.PCI_CAP_ID_MSIX] + pci_regs.PCI_MSIX_FLAGS
    edu.cfg.set_value(msix, 2, msix_flags & ~pci_regs.PCI_MSIX_FLAGS_QSIZE)
    assert irq_info(vfio_edu, vfio.VFIO_PCI_MSIX_IRQ_INDEX).count == 1


def test_multi_message_msi_count_follows_multiple_message_capable():
    machine = Machine()
    machine.add_device(RootPort(), "0000:00:01.0")
    machine.add_device(FourVectorMSIEdu(), EDU_BDF, "0000:00:01.0")
    device = open_vfio(machine, EDU_BDF)
    assert irq_info(device, vfio.VFIO_PCI_MSI_IRQ_INDEX).count == 4
    device.close()


def test_noresize_is_reported_for_msi_and_for_msix_only_without_dynamic_allocation(machine):
    device = open_vfio(machine, EDU_BDF)
    assert irq_info(device, vfio.VFIO_PCI_MSI_IRQ_INDEX).flags & vfio.VFIO_IRQ_INFO_NORESIZE
    assert not irq_info(device, vfio.VFIO_PCI_MSIX_IRQ_INDEX).flags & vfio.VFIO_IRQ_INFO_NORESIZE
    machine.bus.interrupts.msix_dynamic = False
    assert irq_info(device, vfio.VFIO_PCI_MSIX_IRQ_INDEX).flags & vfio.VFIO_IRQ_INFO_NORESIZE


@pytest.mark.parametrize("dynamic", [True, False])
def test_msix_grows_after_enable_only_where_the_host_can(machine, dynamic):
    machine.bus.interrupts.msix_dynamic = dynamic
    device = open_vfio(machine, EDU_BDF)
    device.enable_bus_master()
    edu = machine.device(EDU_BDF)
    first, second = machine.os.eventfd(), machine.os.eventfd()
    msix = vfio.VFIO_PCI_MSIX_IRQ_INDEX
    assert device.set_irq_eventfds(msix, [first]) == 0  # enables one vector
    if dynamic:
        assert device.set_irq_eventfds(msix, [second], start=1) == 0
        assert edu.raise_interrupt(1)
        assert machine.os.poll([second], 0.0) == [second]
    else:
        assert errno_of(device.set_irq_eventfds, msix, [second], 1) == errno.EINVAL
        assert edu.msix_control() & pci_regs.PCI_MSIX_FLAGS_ENABLE  # the vector 0 binding stays
    assert edu.raise_interrupt(0)
    assert machine.os.poll([first], 0.0) == [first]


def test_a_partial_grant_returns_the_count_and_enables_nothing():
    machine = Machine()
    machine.add_device(RootPort(), "0000:00:01.0")
    function = machine.add_device(FourVectorMSIEdu(), EDU_BDF, "0000:00:01.0")
    device = open_vfio(machine, EDU_BDF)
    # x86 without interrupt remapping: multi-message MSI gets one vector (msi_capability_init)
    machine.set_msi_vector_limit(EDU_BDF, 1)
    fds = [machine.os.eventfd() for _ in range(2)]
    msi = vfio.VFIO_PCI_MSI_IRQ_INDEX
    assert device.set_irq_eventfds(msi, fds) == 1
    assert not function.msi_control() & pci_regs.PCI_MSI_FLAGS_ENABLE
    assert errno_of(set_irqs_without_data, device, msi, 0, 0) == errno.EINVAL  # nothing to disable
    assert device.set_irq_eventfds(msi, fds[:1]) == 0
    assert function.msi_control() & pci_regs.PCI_MSI_FLAGS_ENABLE
    set_irqs_without_data(device, msi, 0, 0)
    machine.set_msi_vector_limit(EDU_BDF, 0)
    assert errno_of(device.set_irq_eventfds, msi, fds[:1]) == errno.ENOSPC
    machine.set_msi_vector_limit(EDU_BDF, None)
    assert device.set_irq_eventfds(msi, fds) == 0
    device.close()


def test_unbinding_every_msix_vector_keeps_msix_enabled(machine):
    device = open_vfio(machine, EDU_BDF)
    edu = machine.device(EDU_BDF)
    msix = vfio.VFIO_PCI_MSIX_IRQ_INDEX
    device.set_irq_eventfds(msix, [machine.os.eventfd()])
    device.set_irq_eventfds(msix, [-1])
    # vfio_msi_set_vector_signal frees the trigger only; MSI-X goes off with DATA_NONE, count 0
    assert edu.msix_control() & pci_regs.PCI_MSIX_FLAGS_ENABLE
    msi = vfio.VFIO_PCI_MSI_IRQ_INDEX
    assert errno_of(device.set_irq_eventfds, msi, [machine.os.eventfd()]) == errno.EINVAL  # MSI-X is on
    set_irqs_without_data(device, msix, 0, 0)
    assert not edu.msix_control() & pci_regs.PCI_MSIX_FLAGS_ENABLE


def test_a_failed_block_unbinds_what_it_bound():
    machine, function, device = open_four_vector_edu()
    msi = vfio.VFIO_PCI_MSI_IRQ_INDEX
    kept = machine.os.eventfd()
    device.set_irq_eventfds(msi, [kept, kept])
    fresh = machine.os.eventfd()
    # vectors 0 and 1 are set, vector 2 was never enabled: vfio_msi_set_block unwinds 0 and 1
    assert errno_of(device.set_irq_eventfds, msi, [fresh, fresh, fresh]) == errno.EINVAL
    spurious = len(machine.bus.interrupts.spurious)
    assert function.raise_interrupt(0)
    assert machine.os.poll([kept, fresh], 0.0) == []
    assert len(machine.bus.interrupts.spurious) == spurious + 1
    device.close()


class ConventionalFunction(PCIFunction):
    """A conventional PCI function (no PCIe capability) with one MSI vector."""

    msi_vectors = 1

    def __init__(self) -> None:
        identity = Identity(EDU_VENDOR_ID, EDU_DEVICE_ID, EDU_CLASS)
        super().__init__(identity, [BarSpec(0, 4096, BarKind.MEM32)])


def test_the_error_irq_index_exists_only_on_pcie():
    machine = Machine()
    machine.add_device(RootPort(), "0000:00:01.0")
    machine.add_device(ConventionalFunction(), EDU_BDF, "0000:00:01.0")
    device = open_vfio(machine, EDU_BDF)
    info = vfio.vfio_irq_info(argsz=vfio.vfio_irq_info.SIZE, index=vfio.VFIO_PCI_ERR_IRQ_INDEX)
    request = vfio.VFIO_DEVICE_GET_IRQ_INFO
    assert errno_of(machine.os.ioctl, device.device, request, info.buffer) == errno.EINVAL
    assert irq_info(device, vfio.VFIO_PCI_REQ_IRQ_INDEX).count == 1
    device.close()
