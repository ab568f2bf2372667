"""drivers.am.reset against the mock Navi31: mode1 through the SMU with bus mastering off first,
readiness through hal, what it clears and keeps, and the failures a reset can end in."""
from __future__ import annotations

import pytest

import hal
from autogen.amd import smu_v13_0_0_ppsmc as ppsmc
from autogen.linux import pci_regs
from drivers.am import boot, reset
from drivers.am.device import AMConfig, AMDevice
from hal.errors import DeviceLost, DeviceTimeout, UnsupportedOperation
from mockgpu import GPU_BDF, Machine

GPU = f"pci:{GPU_BDF}"
FAST = dict(smu_mode1_wait_s=0.02, smu_mode1_ready_timeout_s=0.2)


@pytest.fixture
def machine(tmp_path):
    return Machine.default(lock_dir=str(tmp_path))


@pytest.fixture
def gpu(machine):
    return machine.device(GPU_BDF)


@pytest.fixture
def device(machine, gpu):
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = AMDevice(pci, config=AMConfig(**FAST))
        yield dev
        dev.hw_done.clear()  # whatever the test did, nothing of hw_init is left to undo
        dev.sw_done.clear()


def test_mode1_turns_bus_mastering_off_first_clears_firmware_state_and_flags_keeps_vram(device, gpu):
    pci = device.pci
    assert pci.cfg_read16(pci_regs.PCI_COMMAND) & pci_regs.PCI_COMMAND_MASTER  # NBIO turned it on
    seen = []
    gpu.smu.on_mode1 = lambda: seen.append(pci.cfg_read16(pci_regs.PCI_COMMAND))
    device.vram_bar.write(0x3000, b"survives")
    assert boot.read_flags(device.registers) is not None
    reset.mode1_reset_device(device)
    assert len(seen) == 1 and not seen[0] & pci_regs.PCI_COMMAND_MASTER
    assert gpu.smu.log[-1].message == ppsmc.PPSMC_MSG_Mode1Reset
    assert not gpu.psp.sos_alive and gpu.psp.ring is None and gpu.psp.tmr is None
    assert not gpu.smu.running
    assert device.vram_bar.read(0x3000, 8) == b"survives"
    assert boot.read_flags(device.registers) is None
    # config space restored: the BARs decode again and the IFWI reports done
    assert device.registers.reg("NBIO", "regRCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE").read() == gpu.vram_size >> 20
    assert device.registers.reg("MP0", "regMP0_SMN_C2PMSG_33").read() & reset.IFWI_INIT_DONE


def test_a_gpu_that_vanishes_during_the_mode1_wait_is_device_lost(device, gpu):
    gpu.smu.on_mode1 = gpu.vanish
    with pytest.raises(DeviceLost, match="mode1"):
        reset.mode1_reset_device(device)


def test_an_ifwi_that_never_reports_done_after_mode1_times_out_naming_the_register(device, gpu):
    original = gpu.mode1_reset

    def mode1_without_ifwi() -> None:
        original()
        gpu.regfile.set("MP0", "regMP0_SMN_C2PMSG_33", 0)

    gpu.mode1_reset = mode1_without_ifwi
    with pytest.raises(DeviceTimeout, match="C2PMSG_33.*0x00000000"):
        reset.mode1_reset_device(device)


def test_no_running_pmfw_means_no_mode1(device, gpu):
    reset.mode1_reset_device(device)  # the PMFW is gone after a mode1 until the PSP loads it
    with pytest.raises(UnsupportedOperation, match="SMU firmware is not running"):
        reset.mode1_reset_device(device)


def test_an_mp1_version_without_a_mode1_path_is_refused(device):
    with pytest.raises(UnsupportedOperation, match="no mode1 path"):
        reset.mode1_reset(device.pci, device.registers, mp1_version=(13, 0, 99))
