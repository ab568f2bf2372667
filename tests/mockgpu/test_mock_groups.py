"""IOMMU group DMA ownership as drivers/iommu/iommu.c and drivers/vfio/group.c decide it: which
drivers leave a group viable for VFIO, and what binding a host driver does while VFIO owns it."""
from __future__ import annotations

import errno
import struct

import pytest
from autogen.linux import vfio
from mockgpu_helpers import bind_to_vfio, group_of, open_vfio

from hal.os import O_RDWR
from mockgpu import EDU_BDF, GPU_AUDIO_BDF, GPU_BDF, Machine, RootPort
from mockgpu.edu import EduDevice

AUDIO_SYSFS = f"/sys/bus/pci/devices/{GPU_AUDIO_BDF}"


def errno_of(call, *args) -> int:
    with pytest.raises(OSError) as excinfo:
        call(*args)
    return excinfo.value.errno


def group_flags(m: Machine, group_fd: int) -> int:
    status = vfio.vfio_group_status(argsz=vfio.vfio_group_status.SIZE)
    m.os.ioctl(group_fd, vfio.VFIO_GROUP_GET_STATUS, status.buffer)
    return status.flags


def move_to(m: Machine, bdf: str, driver: str) -> None:
    base = f"/sys/bus/pci/devices/{bdf}"
    m.os.write_text(f"{base}/driver_override", driver)
    if m.os.exists(f"{base}/driver"):
        current = m.os.readlink(f"{base}/driver").rsplit("/", 1)[-1]
        m.os.write_text(f"/sys/bus/pci/drivers/{current}/unbind", bdf)
    m.os.write_text("/sys/bus/pci/drivers_probe", bdf)


def test_a_member_on_pci_stub_leaves_the_group_viable(machine):
    # drivers/pci/pci-stub.c sets driver_managed_dma: binding it takes no DMA-API reference
    move_to(machine, GPU_AUDIO_BDF, "pci-stub")
    assert machine.os.readlink(f"{AUDIO_SYSFS}/driver").endswith("/pci-stub")
    device = open_vfio(machine, GPU_BDF)
    assert group_flags(machine, device.group) & vfio.VFIO_GROUP_FLAGS_VIABLE
    device.close()


def test_a_bridge_on_pcieport_in_the_group_leaves_it_viable():
    # a root port without ACS isolation shares the group of what is below it; pcieport sets
    # driver_managed_dma (drivers/pci/pcie/portdrv.c), so the group stays usable
    m = Machine()
    m.add_device(RootPort(), "0000:00:01.0", group=0)
    m.add_device(EduDevice(), EDU_BDF, "0000:00:01.0", group=0)
    assert m.kernel.driver_of("0000:00:01.0") == "pcieport"
    device = open_vfio(m, EDU_BDF)
    assert group_flags(m, device.group) & vfio.VFIO_GROUP_FLAGS_VIABLE
    assert m.kernel.driver_of("0000:00:01.0") == "pcieport"
    device.close()


def test_a_member_on_a_host_driver_makes_the_group_not_viable(machine):
    bind_to_vfio(machine, GPU_BDF)
    group = machine.os.open(f"/dev/vfio/{group_of(machine, GPU_BDF)}", O_RDWR)
    assert not group_flags(machine, group) & vfio.VFIO_GROUP_FLAGS_VIABLE
    move_to(machine, GPU_AUDIO_BDF, "pci-stub")
    assert group_flags(machine, group) & vfio.VFIO_GROUP_FLAGS_VIABLE
    machine.os.close(group)


def test_a_host_driver_cannot_bind_into_a_group_vfio_owns(machine):
    move_to(machine, GPU_AUDIO_BDF, "pci-stub")
    device = open_vfio(machine, GPU_BDF)
    # iommu_device_use_default_domain: the group has a DMA owner -> EBUSY from the bind
    machine.os.write_text("/sys/bus/pci/drivers/pci-stub/unbind", GPU_AUDIO_BDF)
    machine.os.write_text(f"{AUDIO_SYSFS}/driver_override", "\n")
    assert errno_of(machine.os.write_text, "/sys/bus/pci/drivers/snd_hda_intel/bind",
                    GPU_AUDIO_BDF) == errno.EBUSY
    assert errno_of(machine.os.write_text, "/sys/bus/pci/drivers_probe", GPU_AUDIO_BDF) == errno.EBUSY
    assert not machine.os.exists(f"{AUDIO_SYSFS}/driver")
    assert group_flags(machine, device.group) & vfio.VFIO_GROUP_FLAGS_VIABLE
    # drivers that manage their own DMA still bind
    machine.os.write_text(f"{AUDIO_SYSFS}/driver_override", "pci-stub")
    machine.os.write_text("/sys/bus/pci/drivers_probe", GPU_AUDIO_BDF)
    assert machine.os.readlink(f"{AUDIO_SYSFS}/driver").endswith("/pci-stub")
    device.close()
    # the group left its container when the last VFIO file closed: host drivers bind again
    machine.os.write_text("/sys/bus/pci/drivers/pci-stub/unbind", GPU_AUDIO_BDF)
    machine.os.write_text(f"{AUDIO_SYSFS}/driver_override", "\n")
    machine.os.write_text("/sys/bus/pci/drivers/snd_hda_intel/bind", GPU_AUDIO_BDF)
    assert machine.os.readlink(f"{AUDIO_SYSFS}/driver").endswith("/snd_hda_intel")


def test_set_container_is_refused_while_a_host_driver_holds_the_dma_api(machine):
    bind_to_vfio(machine, EDU_BDF)
    machine.add_device(EduDevice(), "0000:01:00.1", "0000:00:01.0", driver=None)
    machine.os.write_text("/sys/bus/pci/drivers/edu/bind", "0000:01:00.1")
    container = machine.os.open("/dev/vfio/vfio", O_RDWR)
    group = machine.os.open(f"/dev/vfio/{group_of(machine, EDU_BDF)}", O_RDWR)
    pointer = bytearray(struct.pack("<i", container))
    assert errno_of(machine.os.ioctl, group, vfio.VFIO_GROUP_SET_CONTAINER, pointer) == errno.EPERM
    machine.os.close(group)
    machine.os.close(container)
