"""edu DMA and interrupts, the IOMMU (map/unmap/translate/faults), pagemap and eventfd/poll."""
from __future__ import annotations

import errno
import time

import pytest
from autogen.linux import pci_regs, vfio
from mockgpu_helpers import EDU_SYSFS, config_read, config_write, open_vfio

from hal.os import O_RDONLY, O_RDWR, PAGE_SIZE
from mockgpu import EDU_BDF, Machine
from mockgpu.edu import (EDU_DMA_BUFFER_BASE, EDU_DMA_CMD, EDU_DMA_CMD_IRQ, EDU_DMA_CMD_START,
                         EDU_DMA_CMD_TO_HOST, EDU_DMA_COUNT, EDU_DMA_DST, EDU_DMA_SRC, EDU_ID,
                         EDU_INTR_ACK, EDU_INTR_DMA, EDU_INTR_RAISE, EDU_INTR_STATUS, EDU_STATUS,
                         EDU_STATUS_DMA_BUSY, EDU_STATUS_DMA_ERROR, EduDevice)
from mockgpu.iommu import IOVA_LIMIT
from mockgpu.ports import RootPort
from mockgpu.sysfs import PAGEMAP_PFN_MASK, PAGEMAP_PRESENT

IOVA = 0x10_0000


def errno_of(call, *args) -> int:
    with pytest.raises(OSError) as excinfo:
        call(*args)
    return excinfo.value.errno


def start_dma(bar, src, dst, count, flags=0):
    bar.write64(EDU_DMA_SRC, src)
    bar.write64(EDU_DMA_DST, dst)
    bar.write64(EDU_DMA_COUNT, count)
    bar.write64(EDU_DMA_CMD, EDU_DMA_CMD_START | flags)


def sysfs_bar(m):
    fd = m.os.open(f"{EDU_SYSFS}/resource0", O_RDWR)
    bar = m.os.mmap(fd, 1 << 20, 0)
    m.os.close(fd)
    return bar


def test_pagemap_format(machine):
    mem = machine.os.alloc_locked(3 * PAGE_SIZE)
    fd = machine.os.open("/proc/self/pagemap", O_RDONLY)
    raw = machine.os.pread(fd, 3 * 8, mem.addr // PAGE_SIZE * 8)
    entries = [int.from_bytes(raw[i:i + 8], "little") for i in range(0, 24, 8)]
    assert all(entry & PAGEMAP_PRESENT for entry in entries)
    pfns = [entry & PAGEMAP_PFN_MASK for entry in entries]
    assert pfns[0] - 1 == pfns[1] and pfns[1] - 1 == pfns[2]  # scattered: descending frames
    assert errno_of(machine.os.pread, fd, 4, 0) == errno.EINVAL
    assert machine.os.pread(fd, 8, 0) == bytes(8)  # a page the process does not have
    machine.os.close(fd)
    assert machine.os.pagemap(mem) == [pfn * PAGE_SIZE for pfn in pfns]
    machine.os.free_locked(mem)


def test_dma_by_physical_address_without_vfio(machine):
    bar = sysfs_bar(machine)
    mem = machine.os.alloc_locked(2 * PAGE_SIZE)
    phys = machine.os.pagemap(mem)
    mem.region.write(PAGE_SIZE + 16, b"to the device")
    start_dma(bar, phys[1] + 16, EDU_DMA_BUFFER_BASE, 13)
    assert bar.read(EDU_DMA_BUFFER_BASE, 13) == b"to the device"
    bar.write(EDU_DMA_BUFFER_BASE + 64, b"to the host")
    start_dma(bar, EDU_DMA_BUFFER_BASE + 64, phys[0], 11, EDU_DMA_CMD_TO_HOST)
    assert mem.region.read(0, 11) == b"to the host"
    assert bar.read32(EDU_STATUS) == 0
    assert bar.read32(EDU_INTR_STATUS) & EDU_INTR_DMA
    assert [t.ok for t in machine.device(EDU_BDF).dma_log] == [True, True]


def test_dma_rejected_without_bus_master_or_outside_buffer(machine):
    bar = sysfs_bar(machine)
    mem = machine.os.alloc_locked(PAGE_SIZE)
    phys = machine.os.pagemap(mem)
    start_dma(bar, phys[0], EDU_DMA_BUFFER_BASE + 4090, 16)
    assert bar.read32(EDU_STATUS) & EDU_STATUS_DMA_ERROR
    command = config_read(machine, EDU_BDF, pci_regs.PCI_COMMAND, 2)
    config_write(machine, EDU_BDF, pci_regs.PCI_COMMAND, 2, command & ~pci_regs.PCI_COMMAND_MASTER)
    mem.region.write(0, b"secret")
    start_dma(bar, phys[0], EDU_DMA_BUFFER_BASE, 6)
    assert bar.read32(EDU_STATUS) & EDU_STATUS_DMA_ERROR
    assert bar.read(EDU_DMA_BUFFER_BASE, 6) == bytes(6)
    assert machine.device(EDU_BDF).dma_log[-1].reason == "bus mastering disabled"


def test_dma_to_freed_memory_is_a_bus_error(machine):
    bar = sysfs_bar(machine)
    mem = machine.os.alloc_locked(PAGE_SIZE)
    phys = machine.os.pagemap(mem)
    machine.os.free_locked(mem)
    start_dma(bar, EDU_DMA_BUFFER_BASE, phys[0], 8, EDU_DMA_CMD_TO_HOST)
    assert bar.read32(EDU_STATUS) & EDU_STATUS_DMA_ERROR
    assert machine.bus.bus_errors


def test_wrong_width_register_access_is_rejected(machine):
    bar = sysfs_bar(machine)
    assert bar.read(EDU_ID, 2) == b"\xff\xff"
    bar.write(EDU_INTR_RAISE, b"\x01")
    assert bar.read32(EDU_INTR_STATUS) == 0
    assert len(machine.device(EDU_BDF).access_errors) == 2


def test_dma_through_iommu_and_faults(vfio_edu):
    m = vfio_edu.machine
    bar = vfio_edu.map_bar(vfio.VFIO_PCI_BAR0_REGION_INDEX)
    vfio_edu.enable_bus_master()
    mem = m.os.alloc_locked(2 * PAGE_SIZE)
    vfio_edu.map_dma(mem.addr, IOVA, 2 * PAGE_SIZE)
    bar.write(EDU_DMA_BUFFER_BASE, b"via the iommu")
    start_dma(bar, EDU_DMA_BUFFER_BASE, IOVA + PAGE_SIZE - 4, 13, EDU_DMA_CMD_TO_HOST)  # crosses a page
    assert mem.region.read(PAGE_SIZE - 4, 13) == b"via the iommu"
    assert m.iommu_faults == []
    start_dma(bar, EDU_DMA_BUFFER_BASE, IOVA + 2 * PAGE_SIZE, 8, EDU_DMA_CMD_TO_HOST)
    assert bar.read32(EDU_STATUS) & EDU_STATUS_DMA_ERROR
    fault = m.iommu_faults[-1]
    assert (fault.bdf, fault.iova, fault.write) == (EDU_BDF, IOVA + 2 * PAGE_SIZE, True)


def test_read_only_mapping_faults_device_writes(vfio_edu):
    m = vfio_edu.machine
    mem = m.os.alloc_locked(PAGE_SIZE)
    vfio_edu.map_dma(mem.addr, IOVA, PAGE_SIZE, flags=vfio.VFIO_DMA_MAP_FLAG_READ)
    domain = m.vfio.domain_for(m.device(EDU_BDF))
    assert domain.translate(IOVA, write=False)[0] == m.os.pagemap(mem)[0]
    physical, reason = domain.translate(IOVA, write=True)
    assert physical is None and "read-only" in reason


def test_map_and_unmap_validation(vfio_edu):
    m = vfio_edu.machine
    mem = m.os.alloc_locked(4 * PAGE_SIZE)
    assert errno_of(vfio_edu.map_dma, mem.addr, IOVA + 1, PAGE_SIZE) == errno.EINVAL
    assert errno_of(vfio_edu.map_dma, mem.addr, IOVA, PAGE_SIZE + 1) == errno.EINVAL
    assert errno_of(vfio_edu.map_dma, mem.addr, IOVA, PAGE_SIZE, 0) == errno.EINVAL
    assert errno_of(vfio_edu.map_dma, mem.addr, IOVA_LIMIT, PAGE_SIZE) == errno.EINVAL
    assert errno_of(vfio_edu.map_dma, 0x1000, IOVA, PAGE_SIZE) == errno.EFAULT
    vfio_edu.map_dma(mem.addr, IOVA, 2 * PAGE_SIZE)
    assert errno_of(vfio_edu.map_dma, mem.addr, IOVA + PAGE_SIZE, 2 * PAGE_SIZE) == errno.EEXIST
    unmap = vfio.vfio_iommu_type1_dma_unmap(argsz=vfio.vfio_iommu_type1_dma_unmap.SIZE, iova=IOVA,
                                            size=PAGE_SIZE)
    assert errno_of(m.os.ioctl, vfio_edu.container, vfio.VFIO_IOMMU_UNMAP_DMA, unmap.buffer) == errno.EINVAL
    unmap.size = 8 * PAGE_SIZE
    m.os.ioctl(vfio_edu.container, vfio.VFIO_IOMMU_UNMAP_DMA, unmap.buffer)
    assert unmap.size == 2 * PAGE_SIZE
    short = vfio.vfio_iommu_type1_dma_map(argsz=8)
    assert errno_of(m.os.ioctl, vfio_edu.container, vfio.VFIO_IOMMU_MAP_DMA, short.buffer) == errno.EINVAL


def test_msi_and_msix_reach_eventfds(vfio_edu):
    m = vfio_edu.machine
    bar = vfio_edu.map_bar(vfio.VFIO_PCI_BAR0_REGION_INDEX)
    vfio_edu.enable_bus_master()
    efd = m.os.eventfd()
    vfio_edu.set_irq_eventfds(vfio.VFIO_PCI_MSI_IRQ_INDEX, [efd])
    assert m.os.poll([efd], 0) == []
    bar.write32(EDU_INTR_RAISE, 0x5)
    assert m.os.poll([efd], 1.0) == [efd]
    assert int.from_bytes(m.os.read(efd, 8), "little") == 1
    assert bar.read32(EDU_INTR_STATUS) == 0x5
    bar.write32(EDU_INTR_ACK, 0x5)
    assert bar.read32(EDU_INTR_STATUS) == 0
    assert m.os.listdir(f"{EDU_SYSFS}/msi_irqs")
    buf = bytearray(vfio.vfio_irq_set.SIZE)
    disable = vfio.vfio_irq_set.from_buffer(buf)
    disable.argsz = len(buf)
    disable.flags = vfio.VFIO_IRQ_SET_DATA_NONE | vfio.VFIO_IRQ_SET_ACTION_TRIGGER
    disable.index = vfio.VFIO_PCI_MSI_IRQ_INDEX
    m.os.ioctl(vfio_edu.device, vfio.VFIO_DEVICE_SET_IRQS, buf)
    vectors = [m.os.eventfd(), m.os.eventfd()]
    vfio_edu.set_irq_eventfds(vfio.VFIO_PCI_MSIX_IRQ_INDEX, vectors)
    bar.write32(EDU_INTR_RAISE, 1)
    assert m.os.poll(vectors, 1.0) == [vectors[0]]


def test_no_msi_without_bus_master(vfio_edu):
    m = vfio_edu.machine
    bar = vfio_edu.map_bar(vfio.VFIO_PCI_BAR0_REGION_INDEX)
    efd = m.os.eventfd()
    vfio_edu.set_irq_eventfds(vfio.VFIO_PCI_MSI_IRQ_INDEX, [efd])
    bar.write32(EDU_INTR_RAISE, 1)
    assert m.os.poll([efd], 0.01) == []


def test_delayed_dma_completes_during_poll():
    m = Machine(root=True)
    m.add_device(RootPort(), "0000:00:01.0")
    m.add_device(EduDevice(dma_delay_s=0.05), EDU_BDF, "0000:00:01.0")
    dev = open_vfio(m, EDU_BDF)
    bar = dev.map_bar(vfio.VFIO_PCI_BAR0_REGION_INDEX)
    dev.enable_bus_master()
    efd = m.os.eventfd()
    dev.set_irq_eventfds(vfio.VFIO_PCI_MSI_IRQ_INDEX, [efd])
    mem = m.os.alloc_locked(PAGE_SIZE)
    dev.map_dma(mem.addr, IOVA, PAGE_SIZE)
    start_dma(bar, EDU_DMA_BUFFER_BASE, IOVA, 4, EDU_DMA_CMD_TO_HOST | EDU_DMA_CMD_IRQ)
    assert bar.read32(EDU_STATUS) & EDU_STATUS_DMA_BUSY
    assert m.os.poll([efd], 5.0) == [efd]
    assert bar.read32(EDU_STATUS) == 0


def test_eventfd_semantics_and_poll_timeout(machine):
    efd = machine.os.eventfd()
    assert errno_of(machine.os.read, efd, 8) == errno.EAGAIN
    assert errno_of(machine.os.read, efd, 4) == errno.EINVAL
    machine.os.write(efd, (3).to_bytes(8, "little"))
    machine.os.write(efd, (4).to_bytes(8, "little"))
    assert machine.os.poll([efd], 0) == [efd]
    assert int.from_bytes(machine.os.read(efd, 8), "little") == 7
    started = time.monotonic()
    assert machine.os.poll([efd], 0.05) == []
    assert time.monotonic() - started >= 0.05  # the wait lasted its whole timeout
    assert errno_of(machine.os.poll, [123456], 0) == errno.EBADF


def test_dma_by_physical_address_faults_in_a_translated_kernel_domain():
    m = Machine.default(iommu_passthrough=False)
    assert m.os.read_text("/sys/kernel/iommu_groups/1/type") == "DMA\n"
    bar = sysfs_bar(m)
    mem = m.os.alloc_locked(PAGE_SIZE)
    start_dma(bar, EDU_DMA_BUFFER_BASE, m.os.pagemap(mem)[0], 8, EDU_DMA_CMD_TO_HOST)
    assert bar.read32(EDU_STATUS) & EDU_STATUS_DMA_ERROR
    assert m.iommu_faults[-1].reason == "unmapped IOVA"


def test_noiommu_mode_groups_and_physical_dma():
    m = Machine.default(iommu=False, noiommu=True)
    assert not m.os.exists(f"{EDU_SYSFS}/iommu_group")
    bind = m.os.write_text
    bind(f"{EDU_SYSFS}/driver_override", "vfio-pci")
    bind("/sys/bus/pci/drivers/edu/unbind", EDU_BDF)
    bind("/sys/bus/pci/drivers_probe", EDU_BDF)
    group = m.os.readlink(f"{EDU_SYSFS}/iommu_group").rsplit("/", 1)[-1]
    assert f"noiommu-{group}" in m.os.listdir("/dev/vfio")
    container = m.os.open("/dev/vfio/vfio", O_RDWR)
    assert m.os.ioctl(container, vfio.VFIO_CHECK_EXTENSION, vfio.VFIO_NOIOMMU_IOMMU) == 1
    # an empty container asks every driver: type1 is loaded too and says yes for itself
    assert m.os.ioctl(container, vfio.VFIO_CHECK_EXTENSION, vfio.VFIO_TYPE1v2_IOMMU) == 1
    group_fd = m.os.open(f"/dev/vfio/noiommu-{group}", O_RDWR)
    m.os.ioctl(group_fd, vfio.VFIO_GROUP_SET_CONTAINER, bytearray(container.to_bytes(4, "little")))
    # with a no-IOMMU group inside, only the no-IOMMU driver may answer (vfio_iommu_driver_allowed)
    assert m.os.ioctl(container, vfio.VFIO_CHECK_EXTENSION, vfio.VFIO_TYPE1v2_IOMMU) == 0
    assert m.os.ioctl(container, vfio.VFIO_CHECK_EXTENSION, vfio.VFIO_NOIOMMU_IOMMU) == 1
    assert errno_of(m.os.ioctl, container, vfio.VFIO_SET_IOMMU, vfio.VFIO_TYPE1v2_IOMMU) == errno.ENODEV
    m.os.ioctl(container, vfio.VFIO_SET_IOMMU, vfio.VFIO_NOIOMMU_IOMMU)
    assert errno_of(m.os.ioctl, container, vfio.VFIO_IOMMU_GET_INFO, bytearray(64)) == errno.ENOTTY
    m.os.close(group_fd)
    m.os.close(container)


# -- locked memory: mlock and VFIO pinning against RLIMIT_MEMLOCK ----------------------------------
def unmap(device, iova: int, size: int) -> None:
    request = vfio.vfio_iommu_type1_dma_unmap(argsz=vfio.vfio_iommu_type1_dma_unmap.SIZE, iova=iova,
                                              size=size)
    device.machine.os.ioctl(device.container, vfio.VFIO_IOMMU_UNMAP_DMA, request.buffer)


def test_map_dma_pins_against_rlimit_memlock_without_cap_ipc_lock(vfio_edu):
    m = vfio_edu.machine
    m.set_cap_ipc_lock(False)
    m.set_memlock_limit(4 * PAGE_SIZE)
    mem = m.os.alloc_pages(5 * PAGE_SIZE)  # not mlock'ed: nothing counted yet
    assert m.locked_memory_bytes == 0
    vfio_edu.map_dma(mem.addr, IOVA, 3 * PAGE_SIZE)
    assert m.locked_memory_bytes == 3 * PAGE_SIZE
    assert errno_of(vfio_edu.map_dma, mem.addr + 3 * PAGE_SIZE, IOVA + 3 * PAGE_SIZE,
                    2 * PAGE_SIZE) == errno.ENOMEM
    assert m.iommu_faults == [] and m.locked_memory_bytes == 3 * PAGE_SIZE
    vfio_edu.map_dma(mem.addr + 3 * PAGE_SIZE, IOVA + 3 * PAGE_SIZE, PAGE_SIZE)
    # the same pages mapped again at another IOVA are pinned and counted again
    assert errno_of(vfio_edu.map_dma, mem.addr, IOVA + 8 * PAGE_SIZE, PAGE_SIZE) == errno.ENOMEM
    unmap(vfio_edu, IOVA, 3 * PAGE_SIZE)
    assert m.locked_memory_bytes == PAGE_SIZE
    vfio_edu.map_dma(mem.addr, IOVA + 8 * PAGE_SIZE, 3 * PAGE_SIZE)
    assert m.locked_memory_bytes == 4 * PAGE_SIZE


def test_mlocked_memory_counts_too_so_mapping_it_counts_twice(vfio_edu):
    m = vfio_edu.machine
    m.set_cap_ipc_lock(False)
    m.set_memlock_limit(4 * PAGE_SIZE)
    locked = m.os.alloc_locked(2 * PAGE_SIZE)
    assert m.locked_memory_bytes == 2 * PAGE_SIZE
    assert errno_of(m.os.alloc_locked, 3 * PAGE_SIZE) == errno.ENOMEM
    vfio_edu.map_dma(locked.addr, IOVA, 2 * PAGE_SIZE)
    assert m.locked_memory_bytes == 4 * PAGE_SIZE
    unmap(vfio_edu, IOVA, 2 * PAGE_SIZE)
    m.os.free_locked(locked)
    assert m.locked_memory_bytes == 0
    m.set_memlock_limit(0)
    assert errno_of(m.os.alloc_locked, PAGE_SIZE) == errno.EPERM  # mm/mlock.c can_do_mlock


def test_cap_ipc_lock_is_counted_but_never_refused(vfio_edu):
    m = vfio_edu.machine
    assert m.cap_ipc_lock  # root
    m.set_memlock_limit(PAGE_SIZE)
    mem = m.os.alloc_pages(4 * PAGE_SIZE)
    vfio_edu.map_dma(mem.addr, IOVA, 4 * PAGE_SIZE)
    assert m.locked_memory_bytes == 4 * PAGE_SIZE
    m.set_root(False)
    assert not m.cap_ipc_lock
    assert errno_of(vfio_edu.map_dma, mem.addr, IOVA + 4 * PAGE_SIZE, PAGE_SIZE) == errno.ENOMEM
    m.set_cap_ipc_lock(True)
    vfio_edu.map_dma(mem.addr, IOVA + 4 * PAGE_SIZE, PAGE_SIZE)


def test_closing_the_container_unpins(vfio_edu):
    m = vfio_edu.machine
    mem = m.os.alloc_pages(2 * PAGE_SIZE)
    vfio_edu.map_dma(mem.addr, IOVA, 2 * PAGE_SIZE)
    assert m.locked_memory_bytes == 2 * PAGE_SIZE
    vfio_edu.close()  # vfio_iommu_type1_release -> vfio_iommu_unmap_unpin_all
    assert m.locked_memory_bytes == 0
