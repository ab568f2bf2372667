"""FLR, secondary bus reset, kernel-mediated reset, surprise removal and decode enables."""
from __future__ import annotations

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


def test_flr_clears_state_and_command(machine):
    bar = dirty_edu(machine)
    before = machine.device(EDU_BDF).reset_count
    devctl = PCIE_CAP_OFFSET + pci_regs.PCI_EXP_DEVCTL
    flr = config_read(machine, EDU_BDF, devctl, 2) | pci_regs.PCI_EXP_DEVCTL_BCR_FLR
    config_write(machine, EDU_BDF, devctl, 2, flr)
    assert not config_read(machine, EDU_BDF, devctl, 2) & pci_regs.PCI_EXP_DEVCTL_BCR_FLR
    assert machine.device(EDU_BDF).reset_count == before + 1
    assert config_read(machine, EDU_BDF, pci_regs.PCI_COMMAND, 2) == 0
    assert edu_is_clean(machine, bar)
    assert bar.read32(EDU_ID) == 0xFFFFFFFF  # memory decoding is off after FLR
    config_write(machine, EDU_BDF, pci_regs.PCI_COMMAND, 2, pci_regs.PCI_COMMAND_MEMORY)
    assert bar.read32(EDU_ID) == EDU_ID_VALUE  # BAR address kept: answers again
    assert bar.read32(EDU_LIVENESS) == 0xFFFFFFFF  # ~0: the register was cleared


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
