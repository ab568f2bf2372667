"""Resizable BAR: the capability, its control register, and the sysfs resourceN_resize attribute."""
from __future__ import annotations

import errno

import pytest
from autogen.linux import pci_regs
from mockgpu_helpers import config_read, config_write

from hal.os import O_RDWR
from mockgpu import GPU_BDF, BarKind, BarSpec, Identity, Machine, PCIeInfo, PCIeLink, PCIFunction, RootPort
from mockgpu.bits import field_get, field_put
from mockgpu.navi31 import NAVI31_BAR0_DEFAULT

GPU_SYSFS = f"/sys/bus/pci/devices/{GPU_BDF}"
REBAR = pci_regs.PCI_CFG_SPACE_SIZE
GIB = 1 << 30


def bar0_size(m):
    low = pci_regs.PCI_BASE_ADDRESS_0
    saved = (config_read(m, GPU_BDF, low, 4), config_read(m, GPU_BDF, low + 4, 4))
    config_write(m, GPU_BDF, low, 4, 0xFFFFFFFF)
    config_write(m, GPU_BDF, low + 4, 4, 0xFFFFFFFF)
    low_bits = config_read(m, GPU_BDF, low, 4) & pci_regs.PCI_BASE_ADDRESS_MEM_MASK
    mask = (config_read(m, GPU_BDF, low + 4, 4) << 32) | low_bits
    config_write(m, GPU_BDF, low, 4, saved[0])
    config_write(m, GPU_BDF, low + 4, 4, saved[1])
    return (~mask & ((1 << 64) - 1)) + 1


def test_rebar_capability_lists_sizes(machine):
    cap = config_read(machine, GPU_BDF, REBAR + pci_regs.PCI_REBAR_CAP, 4)
    ctrl = config_read(machine, GPU_BDF, REBAR + pci_regs.PCI_REBAR_CTRL, 4)
    sizes = field_get(cap, pci_regs.PCI_REBAR_CAP_SIZES)
    assert sizes == 0xFF00  # 256 MiB (bit 8) .. 32 GiB (bit 15), bit n = 2^n MiB
    assert ctrl & pci_regs.PCI_REBAR_CTRL_BAR_IDX == 0
    assert field_get(ctrl, pci_regs.PCI_REBAR_CTRL_NBAR_MASK) == 1
    assert field_get(ctrl, pci_regs.PCI_REBAR_CTRL_BAR_SIZE) == 8


def test_control_register_resizes_the_bar(machine):
    assert bar0_size(machine) == NAVI31_BAR0_DEFAULT
    ctrl_off = REBAR + pci_regs.PCI_REBAR_CTRL
    ctrl = config_read(machine, GPU_BDF, ctrl_off, 4) & ~pci_regs.PCI_REBAR_CTRL_BAR_SIZE
    config_write(machine, GPU_BDF, ctrl_off, 4, ctrl | field_put(pci_regs.PCI_REBAR_CTRL_BAR_SIZE, 15))
    assert bar0_size(machine) == 32 * GIB


def test_unsupported_size_is_ignored(machine):
    ctrl_off = REBAR + pci_regs.PCI_REBAR_CTRL
    ctrl = config_read(machine, GPU_BDF, ctrl_off, 4) & ~pci_regs.PCI_REBAR_CTRL_BAR_SIZE
    config_write(machine, GPU_BDF, ctrl_off, 4, ctrl | field_put(pci_regs.PCI_REBAR_CTRL_BAR_SIZE, 2))
    assert bar0_size(machine) == NAVI31_BAR0_DEFAULT


def test_sysfs_resize_needs_unbound_device(machine):
    assert machine.os.read_text(f"{GPU_SYSFS}/resource0_resize") == "000000000000ff00\n"
    with pytest.raises(OSError) as excinfo:
        machine.os.write_text(f"{GPU_SYSFS}/resource0_resize", "15")
    assert excinfo.value.errno == errno.EBUSY


def test_sysfs_resize_reassigns_and_maps_the_new_size(machine):
    machine.os.write_text("/sys/bus/pci/drivers/amdgpu/unbind", GPU_BDF)
    machine.os.write_text(f"{GPU_SYSFS}/resource0_resize", "14")
    first = machine.os.read_text(f"{GPU_SYSFS}/resource").splitlines()[0].split()
    assert int(first[1], 16) - int(first[0], 16) + 1 == 16 * GIB
    assert bar0_size(machine) == 16 * GIB
    fd = machine.os.open(f"{GPU_SYSFS}/resource0", O_RDWR)
    region = machine.os.mmap(fd, 16 * GIB, 0)
    region.write32(16 * GIB - 4, 0xCAFE)
    assert region.read32(16 * GIB - 4) == 0xCAFE
    assert machine.device(GPU_BDF).vram[16 * GIB - 4] == 0xFE
    machine.os.munmap(region)
    machine.os.close(fd)


def test_sysfs_resize_rejects_unsupported_size(machine):
    machine.os.write_text("/sys/bus/pci/drivers/amdgpu/unbind", GPU_BDF)
    with pytest.raises(OSError) as excinfo:
        machine.os.write_text(f"{GPU_SYSFS}/resource0_resize", "3")
    assert excinfo.value.errno == errno.EINVAL


def test_raw_bus_reset_returns_the_default_size(machine):
    machine.os.write_text("/sys/bus/pci/drivers/amdgpu/unbind", GPU_BDF)
    machine.os.write_text(f"{GPU_SYSFS}/resource0_resize", "14")
    port = "0000:03:00.0"
    control = config_read(machine, port, pci_regs.PCI_BRIDGE_CONTROL, 2)
    asserted = control | pci_regs.PCI_BRIDGE_CTL_BUS_RESET
    config_write(machine, port, pci_regs.PCI_BRIDGE_CONTROL, 2, asserted)
    config_write(machine, port, pci_regs.PCI_BRIDGE_CONTROL, 2, control)
    assert bar0_size(machine) == NAVI31_BAR0_DEFAULT


class ResizableEndpoint(PCIFunction):
    """A plug-in model: FLR-capable endpoint with one resizable 64-bit BAR."""

    def __init__(self) -> None:
        link = PCIeLink(pci_regs.PCI_EXP_LNKCAP_SLS_8_0GB, 4, pci_regs.PCI_EXP_LNKCAP_SLS_8_0GB, 4)
        bar = BarSpec(0, 1 << 20, BarKind.MEM64, prefetchable=True, rebar_sizes=(1 << 20, 1 << 21, 1 << 22))
        super().__init__(Identity(0x1234, 0xBEEF, 0xFF0000), [bar],
                         PCIeInfo(pci_regs.PCI_EXP_TYPE_ENDPOINT, link, flr=True))


def test_kernel_reset_restores_the_resized_bar():
    m = Machine()
    m.add_device(RootPort(), "0000:00:01.0")
    m.add_device(ResizableEndpoint(), "0000:01:00.0", "0000:00:01.0", driver=None)
    device = m.device("0000:01:00.0")
    m.os.write_text("/sys/bus/pci/devices/0000:01:00.0/resource0_resize", "2")
    assert device.bar_sizes[0] == 1 << 22
    m.os.write_text("/sys/bus/pci/devices/0000:01:00.0/reset", "1")
    assert device.state.flr_count == 1
    assert device.bar_sizes[0] == 1 << 22
    assert device.bar_claims(0)


def test_resize_to_a_size_the_address_is_not_aligned_to_stops_claiming(machine):
    gpu = machine.device(GPU_BDF)
    address = gpu.bar_address(0)
    ctrl_off = REBAR + pci_regs.PCI_REBAR_CTRL
    ctrl = config_read(machine, GPU_BDF, ctrl_off, 4) & ~pci_regs.PCI_REBAR_CTRL_BAR_SIZE
    config_write(machine, GPU_BDF, ctrl_off, 4, ctrl | field_put(pci_regs.PCI_REBAR_CTRL_BAR_SIZE, 15))
    assert gpu.bar_address(0) == address & ~(32 * GIB - 1)
    assert gpu.bar_claims(0) == (address % (32 * GIB) == 0)


def test_resource_keeps_the_kernel_size_when_the_hardware_size_changes_behind_it(machine):
    machine.os.write_text("/sys/bus/pci/drivers/amdgpu/unbind", GPU_BDF)
    machine.os.write_text(f"{GPU_SYSFS}/resource0_resize", "14")
    ctrl_off = REBAR + pci_regs.PCI_REBAR_CTRL
    ctrl = config_read(machine, GPU_BDF, ctrl_off, 4) & ~pci_regs.PCI_REBAR_CTRL_BAR_SIZE
    config_write(machine, GPU_BDF, ctrl_off, 4, ctrl | field_put(pci_regs.PCI_REBAR_CTRL_BAR_SIZE, 8))
    assert bar0_size(machine) == NAVI31_BAR0_DEFAULT
    first = machine.os.read_text(f"{GPU_SYSFS}/resource").splitlines()[0].split()
    assert int(first[1], 16) - int(first[0], 16) + 1 == 16 * GIB
    fd = machine.os.open(f"{GPU_SYSFS}/resource0", O_RDWR)
    region = machine.os.mmap(fd, 16 * GIB, 0)
    region.write32(0, 0x1234)
    assert region.read32(0) == 0x1234
    region.write32(GIB, 0x5678)  # past what the BAR decodes now: nobody answers
    assert region.read32(GIB) == 0xFFFFFFFF
    machine.os.munmap(region)
    machine.os.close(fd)
