"""FLR, secondary bus reset, kernel-mediated reset, surprise removal and decode enables."""
from __future__ import annotations

import errno

import pytest
from autogen.linux import pci_regs
from mockgpu_helpers import EDU_SYSFS, config_read, config_write

from hal.os import O_RDWR
from mockgpu import EDU_BDF, GPU_AUDIO_BDF, GPU_BDF
from mockgpu.edu import EDU_ID, EDU_ID_VALUE, EDU_LIVENESS
from mockgpu.pci import MSI_CAP_OFFSET, PCIE_CAP_OFFSET


def map_edu(m):
    fd = m.os.open(f"{EDU_SYSFS}/resource0", O_RDWR)
    region = m.os.mmap(fd, 1 << 20, 0)
    m.os.close(fd)
    return region


def dirty_edu(m):
    """Put state into edu that every reset must clear; returns its BAR0 mapping."""
    bar = map_edu(m)
    bar.write32(EDU_LIVENESS, 0x1234)
    msi_flags = MSI_CAP_OFFSET + pci_regs.PCI_MSI_FLAGS
    config_write(m, EDU_BDF, msi_flags, 2, pci_regs.PCI_MSI_FLAGS_ENABLE)
    assert config_read(m, EDU_BDF, msi_flags, 2) & pci_regs.PCI_MSI_FLAGS_ENABLE
    return bar


def edu_is_clean(m, bar):
    msi = config_read(m, EDU_BDF, MSI_CAP_OFFSET + pci_regs.PCI_MSI_FLAGS, 2)
    return not msi & pci_regs.PCI_MSI_FLAGS_ENABLE


def test_flr_clears_state_command_and_bars(machine):
    bar = dirty_edu(machine)
    before = machine.device(EDU_BDF).reset_count
    address = config_read(machine, EDU_BDF, pci_regs.PCI_BASE_ADDRESS_0, 4)
    assert address & pci_regs.PCI_BASE_ADDRESS_MEM_MASK
    devctl = PCIE_CAP_OFFSET + pci_regs.PCI_EXP_DEVCTL
    flr = config_read(machine, EDU_BDF, devctl, 2) | pci_regs.PCI_EXP_DEVCTL_BCR_FLR
    config_write(machine, EDU_BDF, devctl, 2, flr)
    assert not config_read(machine, EDU_BDF, devctl, 2) & pci_regs.PCI_EXP_DEVCTL_BCR_FLR
    assert machine.device(EDU_BDF).reset_count == before + 1
    assert config_read(machine, EDU_BDF, pci_regs.PCI_COMMAND, 2) == 0
    assert edu_is_clean(machine, bar)
    assert bar.read32(EDU_ID) == 0xFFFFFFFF  # memory decoding is off after FLR
    # BARs are not sticky: only the type bits are left, so decoding alone does not bring it back
    type_bits = address & ~pci_regs.PCI_BASE_ADDRESS_MEM_MASK
    assert config_read(machine, EDU_BDF, pci_regs.PCI_BASE_ADDRESS_0, 4) == type_bits
    config_write(machine, EDU_BDF, pci_regs.PCI_COMMAND, 2, pci_regs.PCI_COMMAND_MEMORY)
    assert bar.read32(EDU_ID) == 0xFFFFFFFF
    config_write(machine, EDU_BDF, pci_regs.PCI_BASE_ADDRESS_0, 4, address)
    assert bar.read32(EDU_ID) == EDU_ID_VALUE  # answers again once software restores the BAR
    assert bar.read32(EDU_LIVENESS) == 0xFFFFFFFF  # ~0: the register was cleared


def test_bus_reset_clears_bars_of_every_function_below(machine):
    gpu = machine.device(GPU_BDF)
    audio = machine.device(GPU_AUDIO_BDF)
    assert gpu.bar_address(0) and audio.bar_address(0)
    port = "0000:03:00.0"
    control = config_read(machine, port, pci_regs.PCI_BRIDGE_CONTROL, 2)
    config_write(machine, port, pci_regs.PCI_BRIDGE_CONTROL, 2, control | pci_regs.PCI_BRIDGE_CTL_BUS_RESET)
    config_write(machine, port, pci_regs.PCI_BRIDGE_CONTROL, 2, control)
    assert {index: gpu.bar_address(index) for index in gpu.bars} == dict.fromkeys(gpu.bars, 0)
    assert audio.bar_address(0) == 0


def test_kernel_reset_restores_the_bars(machine):
    edu = machine.device(EDU_BDF)
    address = edu.bar_address(0)
    machine.os.write_text(f"{EDU_SYSFS}/reset", "1")
    assert edu.reset_count == 1 and edu.bar_address(0) == address


def test_reset_method_selects_what_reset_does(machine):
    edu = machine.device(EDU_BDF)
    assert machine.os.read_text(f"{EDU_SYSFS}/reset_method") == "flr bus\n"
    machine.os.write_text(f"{EDU_SYSFS}/reset_method", "bus")
    assert machine.os.read_text(f"{EDU_SYSFS}/reset_method") == "bus\n"
    machine.os.write_text(f"{EDU_SYSFS}/reset", "1")
    assert (edu.state.flr_count, edu.state.bus_reset_count) == (0, 1)
    with pytest.raises(OSError) as excinfo:
        machine.os.write_text(f"{EDU_SYSFS}/reset_method", "pm")
    assert excinfo.value.errno == errno.EINVAL
    machine.os.write_text(f"{EDU_SYSFS}/reset_method", "default")
    machine.os.write_text(f"{EDU_SYSFS}/reset", "1")
    assert (edu.state.flr_count, edu.state.bus_reset_count) == (1, 1)


def test_hot_plug_capable_port_advertises_it_in_slot_capabilities(machine):
    from mockgpu.ports import SwitchDownstreamPort
    port = SwitchDownstreamPort(hot_plug=True)
    exp = port.cap_offsets[pci_regs.PCI_CAP_ID_EXP]
    assert port.cfg.read(exp + pci_regs.PCI_EXP_FLAGS, 2) & pci_regs.PCI_EXP_FLAGS_SLOT
    assert port.cfg.read(exp + pci_regs.PCI_EXP_SLTCAP, 4) & pci_regs.PCI_EXP_SLTCAP_HPC
    plain = machine.device("0000:03:00.0")
    assert not plain.cfg.read(exp + pci_regs.PCI_EXP_SLTCAP, 4) & pci_regs.PCI_EXP_SLTCAP_HPC


def test_flr_ignored_without_capability(machine):
    gpu = machine.device(GPU_BDF)
    before = gpu.reset_count
    devctl = PCIE_CAP_OFFSET + pci_regs.PCI_EXP_DEVCTL
    config_write(machine, GPU_BDF, devctl, 2, pci_regs.PCI_EXP_DEVCTL_BCR_FLR)
    assert gpu.reset_count == before
    assert config_read(machine, GPU_BDF, pci_regs.PCI_COMMAND, 2) & pci_regs.PCI_COMMAND_MEMORY


def test_secondary_bus_reset_holds_devices_in_reset(machine):
    bar = dirty_edu(machine)
    root_port = "0000:00:01.0"
    control = config_read(machine, root_port, pci_regs.PCI_BRIDGE_CONTROL, 2)
    asserted = control | pci_regs.PCI_BRIDGE_CTL_BUS_RESET
    config_write(machine, root_port, pci_regs.PCI_BRIDGE_CONTROL, 2, asserted)
    assert config_read(machine, EDU_BDF, pci_regs.PCI_VENDOR_ID, 2) == 0xFFFF
    config_write(machine, root_port, pci_regs.PCI_BRIDGE_CONTROL, 2, control)
    assert config_read(machine, EDU_BDF, pci_regs.PCI_VENDOR_ID, 2) != 0xFFFF
    assert edu_is_clean(machine, bar)
    assert machine.device(EDU_BDF).state.bus_reset_count == 1


def test_bus_reset_through_switch_resets_both_gpu_functions(machine):
    port = "0000:03:00.0"
    control = config_read(machine, port, pci_regs.PCI_BRIDGE_CONTROL, 2)
    config_write(machine, port, pci_regs.PCI_BRIDGE_CONTROL, 2, control | pci_regs.PCI_BRIDGE_CTL_BUS_RESET)
    config_write(machine, port, pci_regs.PCI_BRIDGE_CONTROL, 2, control)
    assert machine.device(GPU_BDF).state.bus_reset_count == 1
    assert machine.device(GPU_AUDIO_BDF).state.bus_reset_count == 1
    assert machine.device("0000:02:00.0").state.bus_reset_count == 0


def test_sysfs_reset_restores_config_like_the_kernel(machine):
    bar = dirty_edu(machine)
    command = config_read(machine, EDU_BDF, pci_regs.PCI_COMMAND, 2)
    machine.os.write_text(f"{EDU_SYSFS}/reset", "1")
    assert machine.device(EDU_BDF).reset_count == 1
    assert config_read(machine, EDU_BDF, pci_regs.PCI_COMMAND, 2) == command
    assert bar.read32(EDU_LIVENESS) == 0xFFFFFFFF
    assert bar.read32(EDU_ID) == EDU_ID_VALUE


def test_memory_decode_off_reads_all_ones(machine):
    bar = map_edu(machine)
    command = config_read(machine, EDU_BDF, pci_regs.PCI_COMMAND, 2)
    config_write(machine, EDU_BDF, pci_regs.PCI_COMMAND, 2, command & ~pci_regs.PCI_COMMAND_MEMORY)
    assert bar.read32(EDU_ID) == 0xFFFFFFFF
    bar.write32(EDU_LIVENESS, 5)
    config_write(machine, EDU_BDF, pci_regs.PCI_COMMAND, 2, command)
    assert bar.read32(EDU_LIVENESS) == 0xFFFFFFFF  # the write was not accepted


def test_upstream_bridge_decode_gates_mmio(machine):
    bar = map_edu(machine)
    config_write(machine, "0000:00:01.0", pci_regs.PCI_COMMAND, 2, 0)
    assert bar.read32(EDU_ID) == 0xFFFFFFFF


def test_bar_left_with_sizing_pattern_does_not_answer(machine):
    bar = map_edu(machine)
    saved = config_read(machine, EDU_BDF, pci_regs.PCI_BASE_ADDRESS_0, 4)
    config_write(machine, EDU_BDF, pci_regs.PCI_BASE_ADDRESS_0, 4, 0xFFFFFFFF)
    assert bar.read32(EDU_ID) == 0xFFFFFFFF
    config_write(machine, EDU_BDF, pci_regs.PCI_BASE_ADDRESS_0, 4, saved)
    assert bar.read32(EDU_ID) == EDU_ID_VALUE


def test_surprise_removal_reads_all_ones(machine):
    bar = map_edu(machine)
    machine.surprise_remove(EDU_BDF)
    assert config_read(machine, EDU_BDF, pci_regs.PCI_VENDOR_ID, 4) == 0xFFFFFFFF
    assert bar.read32(EDU_ID) == 0xFFFFFFFF
    assert bar.read64(EDU_ID) == (1 << 64) - 1
    config_write(machine, EDU_BDF, pci_regs.PCI_COMMAND, 2, 0)
    assert machine.device(EDU_BDF).cfg.read(pci_regs.PCI_COMMAND, 2) != 0  # write dropped
    assert machine.os.exists(EDU_SYSFS)  # the kernel has not noticed


def test_surprise_removal_of_a_bridge_takes_everything_below(machine):
    machine.surprise_remove("0000:02:00.0")
    assert config_read(machine, GPU_BDF, pci_regs.PCI_VENDOR_ID, 2) == 0xFFFF
    assert config_read(machine, GPU_AUDIO_BDF, pci_regs.PCI_VENDOR_ID, 2) == 0xFFFF
    assert config_read(machine, "0000:00:02.0", pci_regs.PCI_VENDOR_ID, 2) != 0xFFFF


def test_dropped_posted_writes(machine):
    bar = map_edu(machine)
    bar.write32(EDU_LIVENESS, 0x12345678)
    machine.drop_posted_writes(EDU_BDF, 1)
    bar.write32(EDU_LIVENESS, 0)
    assert bar.read32(EDU_LIVENESS) == 0xEDCBA987  # the write of 0 was lost
    bar.write32(EDU_LIVENESS, 0)
    assert bar.read32(EDU_LIVENESS) == 0xFFFFFFFF
    assert machine.device(EDU_BDF).state.dropped_writes == 1


def test_hot_plug_after_surprise_removal(machine):
    machine.surprise_remove(EDU_BDF)
    machine.hot_plug(EDU_BDF)
    assert config_read(machine, EDU_BDF, pci_regs.PCI_VENDOR_ID, 2) != 0xFFFF
    assert config_read(machine, EDU_BDF, pci_regs.PCI_COMMAND, 2) == 0
    assert machine.device(EDU_BDF).bar_address(0) == 0


def test_slow_device_with_crs_visibility_reads_vendor_0001(machine):
    machine.set_reset_delay(EDU_BDF, 0.05, crs_visible=True)
    devctl = PCIE_CAP_OFFSET + pci_regs.PCI_EXP_DEVCTL
    config_write(machine, EDU_BDF, devctl, 2, pci_regs.PCI_EXP_DEVCTL_BCR_FLR)
    assert config_read(machine, EDU_BDF, pci_regs.PCI_VENDOR_ID, 2) == 0x0001
    assert config_read(machine, EDU_BDF, pci_regs.PCI_VENDOR_ID, 4) == 0xFFFF0001
    assert config_read(machine, EDU_BDF, pci_regs.PCI_COMMAND, 2) == 0xFFFF
    machine.os.sleep(0.06)
    assert config_read(machine, EDU_BDF, pci_regs.PCI_VENDOR_ID, 2) == 0x1234


def test_slow_device_after_reset(machine):
    machine.set_reset_delay(EDU_BDF, 0.05)
    devctl = PCIE_CAP_OFFSET + pci_regs.PCI_EXP_DEVCTL
    config_write(machine, EDU_BDF, devctl, 2, pci_regs.PCI_EXP_DEVCTL_BCR_FLR)
    assert config_read(machine, EDU_BDF, pci_regs.PCI_VENDOR_ID, 2) == 0xFFFF
    machine.os.sleep(0.06)
    assert config_read(machine, EDU_BDF, pci_regs.PCI_VENDOR_ID, 2) != 0xFFFF


def test_kernel_reset_waits_for_a_slow_device(machine):
    machine.set_reset_delay(EDU_BDF, 0.05)
    machine.os.write_text(f"{EDU_SYSFS}/reset", "1")
    assert config_read(machine, EDU_BDF, pci_regs.PCI_VENDOR_ID, 2) != 0xFFFF


def test_raw_bus_reset_below_a_hot_plug_port_makes_the_kernel_remove_and_re_add_the_device(tmp_path):
    from mockgpu import Machine, RootPort
    from mockgpu.edu import EduDevice
    machine = Machine(lock_dir=str(tmp_path))
    port = "0000:00:01.0"
    machine.add_device(RootPort(hot_plug=True), port)
    machine.add_device(EduDevice(), EDU_BDF, port)
    machine.os.write_text(f"/sys/bus/pci/drivers/edu/unbind", EDU_BDF)
    control = config_read(machine, port, pci_regs.PCI_BRIDGE_CONTROL, 2)
    config_write(machine, port, pci_regs.PCI_BRIDGE_CONTROL, 2, control | pci_regs.PCI_BRIDGE_CTL_BUS_RESET)
    assert not machine.os.exists(EDU_SYSFS)  # pciehp saw the link go down
    config_write(machine, port, pci_regs.PCI_BRIDGE_CONTROL, 2, control)
    assert machine.kernel.driver_of(EDU_BDF) == "edu"  # enumerated again and claimed by its driver
    machine.os.write_text(f"/sys/bus/pci/drivers/edu/unbind", EDU_BDF)
    machine.os.write_text(f"{EDU_SYSFS}/reset_method", "bus")
    machine.os.write_text(f"{EDU_SYSFS}/reset", "1")  # the kernel's own bus reset masks the events
    assert machine.kernel.driver_of(EDU_BDF) is None
    assert machine.device(EDU_BDF).state.bus_reset_count == 2
