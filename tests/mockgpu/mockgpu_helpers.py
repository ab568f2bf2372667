"""Helpers for the mock machine's own tests: raw config access and the VFIO open sequence."""
from __future__ import annotations

import struct
from dataclasses import dataclass

from autogen.linux import pci_regs, vfio
from sysfs_helpers import bind_to_vfio

from hal.os import O_RDWR
from hal.region import Region
from mockgpu import EDU_BDF, Machine

EDU_SYSFS = f"/sys/bus/pci/devices/{EDU_BDF}"


def config_read(m: Machine, bdf: str, off: int, n: int) -> int:
    fd = m.os.open(f"/sys/bus/pci/devices/{bdf}/config", O_RDWR)
    try:
        return int.from_bytes(m.os.pread(fd, n, off), "little")
    finally:
        m.os.close(fd)


def config_write(m: Machine, bdf: str, off: int, n: int, value: int) -> None:
    fd = m.os.open(f"/sys/bus/pci/devices/{bdf}/config", O_RDWR)
    try:
        m.os.pwrite(fd, value.to_bytes(n, "little"), off)
    finally:
        m.os.close(fd)


def group_of(m: Machine, bdf: str) -> int:
    return int(m.os.readlink(f"/sys/bus/pci/devices/{bdf}/iommu_group").rsplit("/", 1)[-1])


@dataclass
class VFIODevice:
    machine: Machine
    container: int
    group: int
    device: int

    def region_info(self, index: int):
        info = vfio.vfio_region_info(argsz=vfio.vfio_region_info.SIZE, index=index)
        self.machine.os.ioctl(self.device, vfio.VFIO_DEVICE_GET_REGION_INFO, info.buffer)
        return info

    def map_bar(self, index: int) -> Region:
        info = self.region_info(index)
        return self.machine.os.mmap(self.device, info.size, info.offset)

    def config_offset(self) -> int:
        return self.region_info(vfio.VFIO_PCI_CONFIG_REGION_INDEX).offset

    def enable_bus_master(self) -> None:
        """Memory decoding and bus mastering on, through the config region as a driver does."""
        command_at = self.config_offset() + pci_regs.PCI_COMMAND
        command = int.from_bytes(self.machine.os.pread(self.device, 2, command_at), "little")
        command |= pci_regs.PCI_COMMAND_MEMORY | pci_regs.PCI_COMMAND_MASTER
        self.machine.os.pwrite(self.device, command.to_bytes(2, "little"), command_at)

    def map_dma(self, vaddr: int, iova: int, size: int, flags: int | None = None) -> None:
        if flags is None:
            flags = vfio.VFIO_DMA_MAP_FLAG_READ | vfio.VFIO_DMA_MAP_FLAG_WRITE
        request = vfio.vfio_iommu_type1_dma_map(argsz=vfio.vfio_iommu_type1_dma_map.SIZE, flags=flags,
                                                vaddr=vaddr, iova=iova, size=size)
        self.machine.os.ioctl(self.container, vfio.VFIO_IOMMU_MAP_DMA, request.buffer)

    def set_irq_eventfds(self, index: int, fds: list[int], start: int = 0) -> int:
        """VFIO_DEVICE_SET_IRQS binding `fds` to vectors start..; returns what the ioctl returns."""
        header = vfio.vfio_irq_set.SIZE
        buf = bytearray(header + 4 * len(fds))
        request = vfio.vfio_irq_set.from_buffer(buf)
        request.argsz = len(buf)
        request.flags = vfio.VFIO_IRQ_SET_DATA_EVENTFD | vfio.VFIO_IRQ_SET_ACTION_TRIGGER
        request.index = index
        request.start = start
        request.count = len(fds)
        del request
        buf[header:] = struct.pack(f"<{len(fds)}i", *fds)
        return self.machine.os.ioctl(self.device, vfio.VFIO_DEVICE_SET_IRQS, buf)

    def close(self) -> None:
        for fd in (self.device, self.group, self.container):
            self.machine.os.close(fd)


def open_vfio(m: Machine, bdf: str) -> VFIODevice:
    """The standard VFIO sequence: container, group, SET_CONTAINER, SET_IOMMU, GET_DEVICE_FD."""
    bind_to_vfio(m, bdf)
    container = m.os.open("/dev/vfio/vfio", O_RDWR)
    group = m.os.open(f"/dev/vfio/{group_of(m, bdf)}", O_RDWR)
    m.os.ioctl(group, vfio.VFIO_GROUP_SET_CONTAINER, bytearray(struct.pack("<i", container)))
    m.os.ioctl(container, vfio.VFIO_SET_IOMMU, vfio.VFIO_TYPE1v2_IOMMU)
    device = m.os.ioctl(group, vfio.VFIO_GROUP_GET_DEVICE_FD, bytearray(bdf.encode() + b"\0"))
    return VFIODevice(m, container, group, device)


