"""hal over a VFIO device as Linux 6.12 presents it: liveness and readiness from registers that reach
the device (VFIO answers the IDs from its own copy), the ERR/REQ notifications, hot reset of a GPU
that shares its bus with its audio function, and no BAR access while decoding is off."""
from __future__ import annotations

import time

import pytest
from autogen.linux import pci_regs as regs

import hal
from hal.errors import DeviceLost, HalError, UnsupportedOperation
from mockgpu import EDU_BDF, GPU_AUDIO_BDF, GPU_BDF, Machine, RootPort
from mockgpu.edu import EDU_ID, EDU_ID_VALUE, EduDevice
from mockgpu.pci import BarKind, BarSpec

EDU = f"vfio:{EDU_BDF}"
GPU = f"vfio:{GPU_BDF}"
EDU_PORT = "0000:00:01.0"


def bind_to_vfio(machine: Machine, bdf: str, driver: str | None) -> None:
    machine.os.write_text(f"/sys/bus/pci/devices/{bdf}/driver_override", "vfio-pci")
    if driver is not None:
        machine.os.write_text(f"/sys/bus/pci/drivers/{driver}/unbind", bdf)
    machine.os.write_text("/sys/bus/pci/drivers_probe", bdf)


def test_surprise_removal_is_seen_although_vfio_still_answers_the_vendor_id(machine):
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        bar = dev.bar(0)
        machine.surprise_remove(EDU_BDF)
        assert dev.backend.config_read(regs.PCI_VENDOR_ID, 2) == 0x1234  # vfio's copy
        with pytest.raises(DeviceLost, match="class/revision dword reads 0xffffffff"):
            bar.read32(EDU_ID)
        assert dev.lost


def test_readiness_after_a_raw_bus_reset_waits_for_the_device_itself(machine):
    # the kernel's reset_method without "bus", so hal toggles the bridge itself and must wait
    machine.os.write_text(f"/sys/bus/pci/devices/{EDU_BDF}/reset_method", "flr")
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        bar = dev.bar(0)
        machine.set_reset_delay(EDU_BDF, 0.3)
        start = time.monotonic()
        assert dev.reset("bus") == "bus"
        assert time.monotonic() - start >= 0.3
        assert machine.device(EDU_BDF).bar_address(0) == machine.device(EDU_BDF).assigned[0]
        assert bar.read32(EDU_ID) == EDU_ID_VALUE


def test_the_kernel_asking_for_the_device_back_counts_as_lost(machine):
    with hal.open(EDU, os=machine.os, unbind=True, rebind_on_close=False) as dev:
        with pytest.raises(OSError):
            machine.os.write_text("/sys/bus/pci/drivers/vfio-pci/unbind", EDU_BDF)  # busy: open
        with pytest.raises(DeviceLost, match="being taken away.*asked 1 time"):
            dev.check_alive("a test read")
        assert dev.lost


def test_a_pcie_error_reported_by_vfio_is_told(machine):
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        assert dev.device_events() == []
        machine.vfio.error_detected(EDU_BDF)
        events = dev.device_events()
        assert len(events) == 1 and "PCIe error" in events[0]
        dev.check_alive("a register whose value is all ones")  # an error alone is not a loss
        assert not dev.lost
    assert machine.os.open_fds == []


def test_gpu_and_audio_on_vfio_pci_get_a_hot_reset(machine):
    bind_to_vfio(machine, GPU_AUDIO_BDF, "snd_hda_intel")
    gpu = machine.device(GPU_BDF)
    audio = machine.device(GPU_AUDIO_BDF)
    with hal.open(GPU, os=machine.os, unbind=True) as dev:
        assert dev.reset_methods() == ["hot"]
        bar = dev.bar(5)
        bar.write32(0x100, 0xABCD)
        dev.enable_interrupts("msix", 2)
        assert dev.reset() == "hot"
        assert gpu.state.bus_reset_count == 1 and audio.state.bus_reset_count == 1
        assert bar.read32(0x100) == 0  # device registers cleared, BARs back at their addresses
        assert gpu.bus_master_enabled()
    assert machine.os.open_fds == []


def test_hot_reset_is_refused_while_the_audio_function_is_not_on_vfio_pci(machine):
    machine.kernel.unbind(GPU_AUDIO_BDF, "snd_hda_intel")
    with hal.open(GPU, os=machine.os, unbind=True) as dev:
        assert dev.reset_methods() == []
        with pytest.raises(UnsupportedOperation, match=f"also resets {GPU_AUDIO_BDF}.*no driver.*vfio-pci"):
            dev.reset("hot")
        with pytest.raises(UnsupportedOperation, match="no function reset"):
            dev.reset("vfio")
    assert machine.device(GPU_BDF).state.bus_reset_count == 0


def test_no_bar_is_handed_out_while_memory_decoding_is_off(machine):
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        command = dev.cfg_read16(regs.PCI_COMMAND)
        dev.cfg_write16(regs.PCI_COMMAND, command & ~regs.PCI_COMMAND_MEMORY)
        with pytest.raises(UnsupportedOperation, match="memory decoding is off.*enable_bus_master"):
            dev.bar(0)
        dev.enable_bus_master()
        assert dev.bar(0).read32(EDU_ID) == EDU_ID_VALUE
    assert machine.vfio.bus_errors == []


class UnalignedSmallBarEdu(EduDevice):
    """edu with two 256-byte BARs; the second is not page aligned, so VFIO offers no mmap of it."""

    def __init__(self) -> None:
        super().__init__()
        for index in (2, 3):
            self.bars[index] = BarSpec(index, 0x100, BarKind.MEM32)
            self.bar_sizes[index] = 0x100
        self._build_config()


def test_pread_bar_access_with_decoding_off_is_a_typed_error(tmp_path):
    machine = Machine(lock_dir=str(tmp_path))
    machine.add_device(RootPort(), EDU_PORT)
    machine.add_device(UnalignedSmallBarEdu(), EDU_BDF, EDU_PORT)
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        bar = dev.bar(3)
        assert not dev.backend.bar_resources()[3].mappable
        bar.read32(0)
        command = dev.cfg_read16(regs.PCI_COMMAND)
        dev.cfg_write16(regs.PCI_COMMAND, command & ~regs.PCI_COMMAND_MEMORY)
        with pytest.raises(HalError, match="memory decoding is off"):
            bar.read32(0)


def test_bus_mastering_is_off_after_the_last_vfio_close(machine):
    dev = hal.open(EDU, os=machine.os, unbind=True, rebind_on_close=False)
    assert dev.cfg_read16(regs.PCI_COMMAND) & regs.PCI_COMMAND_MASTER
    dev.close()
    assert machine.kernel.driver_of(EDU_BDF) == "vfio-pci"
    assert not machine.device(EDU_BDF).bus_master_enabled()
