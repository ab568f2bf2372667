"""Resizable BAR: the capability, its control register, and the sysfs resourceN_resize attribute."""
from __future__ import annotations

import errno

import pytest
from autogen.linux import pci_regs
from mockgpu_helpers import config_read, config_write

from hal.os import O_RDWR
from mockgpu import GPU_BDF, BarKind, BarSpec, Identity, Machine, PCIeInfo, PCIeLink, PCIFunction, RootPort
from mockgpu.bits import field_get, field_put
from mockgpu.kernel import ENOTSUPP
from mockgpu.navi31 import NAVI31_BAR0_DEFAULT
from mockgpu.ports import SwitchDownstreamPort
from mockgpu.sysfs import RevokedMapping

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


def resource_lines(m, bdf=GPU_BDF):
    rows = []
    for line in m.os.read_text(f"/sys/bus/pci/devices/{bdf}/resource").splitlines()[:6]:
        start, end, _ = (int(field, 16) for field in line.split())
        rows.append((start, end - start + 1 if end else 0))
    return rows


def test_resize_moves_the_other_bars_of_the_same_window_only(machine):
    # setup-bus.c pci_do_resource_release_and_resize: every BAR of the device whose resource sits in
    # the resized BAR's bridge window is released and assigned again
    machine.os.write_text("/sys/bus/pci/drivers/amdgpu/unbind", GPU_BDF)
    gpu = machine.device(GPU_BDF)
    before = resource_lines(machine)
    machine.os.write_text(f"{GPU_SYSFS}/resource0_resize", "14")
    after = resource_lines(machine)
    assert after[0][1] == 16 * GIB
    assert after[2][1] == before[2][1] and after[2][0] != before[2][0]  # BAR2 moved with BAR0
    assert not after[0][0] <= after[2][0] < after[0][0] + after[0][1]
    assert after[4] == before[4] and after[5] == before[5]  # I/O and 32-bit windows untouched
    for index in (0, 2):
        assert gpu.bar_address(index) == after[index][0]
        assert gpu.bar_claims(index)
    fd = machine.os.open(f"{GPU_SYSFS}/resource2", O_RDWR)
    doorbells = machine.os.mmap(fd, 2 << 20, 0)
    doorbells.write32(0, 0x600D)
    assert doorbells.read32(0) == 0x600D
    machine.os.munmap(doorbells)
    machine.os.close(fd)


def test_resize_revokes_every_mapping_of_the_resource_files(machine):
    # __resource_resize_store removes the resource files; kernfs unmaps what was mapped from them
    machine.os.write_text("/sys/bus/pci/drivers/amdgpu/unbind", GPU_BDF)
    fds = [machine.os.open(f"{GPU_SYSFS}/resource{index}", O_RDWR) for index in (0, 5)]
    vram = machine.os.mmap(fds[0], 256 << 20, 0)
    registers = machine.os.mmap(fds[1], 1 << 20, 0)
    assert vram.read32(0) == 0 and registers.read32(0) is not None
    machine.os.write_text(f"{GPU_SYSFS}/resource0_resize", "9")
    with pytest.raises(ValueError):
        vram.read32(0)
    with pytest.raises(RevokedMapping):
        registers.read32(0)
    for region in (vram, registers):
        machine.os.munmap(region)
    for fd in fds:
        machine.os.close(fd)


class PeerEndpoint(PCIFunction):
    """An endpoint with one small 64-bit prefetchable BAR, to share a bridge window with the GPU."""

    def __init__(self) -> None:
        link = PCIeLink(pci_regs.PCI_EXP_LNKCAP_SLS_8_0GB, 4, pci_regs.PCI_EXP_LNKCAP_SLS_8_0GB, 4)
        bar = BarSpec(0, 1 << 20, BarKind.MEM64, prefetchable=True)
        pcie = PCIeInfo(pci_regs.PCI_EXP_TYPE_ENDPOINT, link)
        super().__init__(Identity(0x1234, 0xBEE5, 0xFF0000), [bar], pcie)


def machine_with_a_peer_below_the_switch() -> Machine:
    m = Machine.default()
    m.add_device(SwitchDownstreamPort(), "0000:03:01.0", "0000:02:00.0")
    bus = m.device("0000:03:01.0").secondary_bus
    m.add_device(PeerEndpoint(), f"0000:{bus:02x}:00.0", "0000:03:01.0", driver=None)
    m.kernel.unbind(GPU_BDF, "amdgpu")
    return m


def test_resize_fails_with_enospc_when_a_peer_pins_the_bridge_window():
    # pci_reassign_bridge_resources cannot release the switch's window while the peer's BAR is in
    # it, and the GPU's grown BAR does not fit there: ENOSPC, old size and addresses back
    m = machine_with_a_peer_below_the_switch()
    gpu = m.device(GPU_BDF)
    before = resource_lines(m)
    with pytest.raises(OSError) as excinfo:
        m.os.write_text(f"{GPU_SYSFS}/resource0_resize", "10")
    assert excinfo.value.errno == errno.ENOSPC
    assert resource_lines(m) == before
    assert bar0_size(m) == NAVI31_BAR0_DEFAULT
    assert gpu.bar_address(0) == before[0][0] and gpu.bar_claims(0) and gpu.bar_claims(2)
    command = config_read(m, GPU_BDF, pci_regs.PCI_COMMAND, 2)
    assert command & pci_regs.PCI_COMMAND_MEMORY  # the store puts Command back whatever happened
    # the ABI document's advice: soft-remove the peers, resize, rescan
    peer = f"0000:{m.device('0000:03:01.0').secondary_bus:02x}:00.0"
    m.os.write_text(f"/sys/bus/pci/devices/{peer}/remove", "1")
    m.os.write_text(f"{GPU_SYSFS}/resource0_resize", "10")
    assert resource_lines(m)[0][1] == 1 * GIB
    m.os.write_text("/sys/bus/pci/rescan", "1")
    peer_start, peer_size = resource_lines(m, peer)[0]
    spans = [(start, start + size) for start, size in resource_lines(m) if size]
    assert all(peer_start + peer_size <= start or end <= peer_start for start, end in spans)
    assert m.device(peer).bar_address(0) == peer_start


def test_resize_fails_with_enospc_when_the_host_window_is_too_small():
    m = Machine.default(mmio64_window=4 * GIB)
    m.kernel.unbind(GPU_BDF, "amdgpu")
    with pytest.raises(OSError) as excinfo:
        m.os.write_text(f"{GPU_SYSFS}/resource0_resize", "13")  # 8 GiB
    assert excinfo.value.errno == errno.ENOSPC
    m.os.write_text(f"{GPU_SYSFS}/resource0_resize", "11")  # 2 GiB fits
    assert resource_lines(m)[0][1] == 2 * GIB


def test_firmware_that_preserves_its_assignment_refuses_every_resize():
    # rebar.c pci_resize_resource: host->preserve_config -> -ENOTSUPP, which sysfs passes on
    m = Machine.default(preserve_config=True)
    m.kernel.unbind(GPU_BDF, "amdgpu")
    with pytest.raises(OSError) as excinfo:
        m.os.write_text(f"{GPU_SYSFS}/resource0_resize", "9")
    assert excinfo.value.errno == ENOTSUPP
    assert bar0_size(m) == NAVI31_BAR0_DEFAULT
