"""The AM driver's PSP 13.0.0 block against the mock PSP: cold boot through the bootloader, the
"SOS already alive" path, firmware loading, decoded statuses, hangs and a vanished device."""
from __future__ import annotations

import hashlib
import shutil
import time

import pytest

import hal
from autogen.amd import psp_gfx_if as gfx
from drivers.am import firmware
from drivers.am.device import IMPLEMENTATIONS, AMConfig, AMDevice
from drivers.am.psp import PSPv13_0
from hal.errors import DeviceLost, DeviceTimeout, FirmwareError
from mockgpu import GPU_BDF, Machine
from mockgpu.amd import psp as model
from mockgpu.amd.firmware_images import build, write_navi31_set

GPU = f"pci:{GPU_BDF}"
PSP_ONLY = ("NBIO", "HDP", "PSP")
SOS_FILE = "amdgpu/psp_13_0_0_sos.bin"
FAST = dict(psp_mailbox_timeout_s=0.05, psp_command_timeout_s=0.05)


@pytest.fixture
def machine(tmp_path):
    return Machine.default(lock_dir=str(tmp_path))


def bring_up(pci, config=None, implementations=IMPLEMENTATIONS):
    return AMDevice(pci, config=config, block_order=PSP_ONLY, implementations=implementations)


def with_block(cls):
    return tuple(cls if impl is PSPv13_0 else impl for impl in IMPLEMENTATIONS)


def test_cold_boot_runs_the_bootloader_then_loads_every_firmware_in_amdgpus_order(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = bring_up(pci)
        psp = dev.block("PSP")
        assert gpu.psp.loaded_components == [
            model.PSP_BL__LOAD_KEY_DATABASE, model.PSP_BL__LOAD_TOS_SPL_TABLE, model.PSP_BL__LOAD_SYSDRV,
            model.PSP_BL__LOAD_SOSDRV]
        assert psp.sos_version == 0x310025
        commands = [cmd_id for cmd_id, _ in gpu.psp.commands]
        assert commands[:3] == [gfx.GFX_CMD_ID_LOAD_TOC, gfx.GFX_CMD_ID_LOAD_IP_FW, gfx.GFX_CMD_ID_SETUP_TMR]
        assert commands[-1] == gfx.GFX_CMD_ID_AUTOLOAD_RLC
        assert all(status == gfx.TEE_SUCCESS for _, status in gpu.psp.commands)
        assert gpu.psp.errors == []
        # the TMR is as large as LOAD_TOC said, not amdgpu's 4 MiB fallback
        assert gpu.psp.tmr == (psp.tmr.mc_address, gpu.psp.toc_tmr_size)
        assert gfx.GFX_FW_TYPE_SMU in gpu.psp.loaded and gfx.GFX_FW_TYPE_RLC_G in gpu.psp.loaded
        assert gfx.GFX_FW_TYPE_CP_MES not in gpu.psp.loaded  # no MES scheduler
        rlc = psp.firmware["amdgpu/gc_11_0_0_rlc.bin"].sections[0]
        assert gpu.psp.loaded[gfx.GFX_FW_TYPE_RLC_G].sha256 == hashlib.sha256(rlc.payload).hexdigest()
        dev.fini()
        assert gpu.psp.ring is None and gpu.psp.tmr is None
        assert gpu.psp.sos_alive  # the SOS keeps running for the next driver


def test_an_sos_already_alive_skips_the_bootloader(machine):
    gpu = machine.device(GPU_BDF)
    gpu.psp.start_sos(version=0x310099)
    before = list(gpu.psp.loaded_components)
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = bring_up(pci)
        assert gpu.psp.loaded_components == before
        assert dev.block("PSP").sos_version == 0x310099
        assert gpu.psp.autoload_started
        dev.fini()
    with hal.open(GPU, os=machine.os, unbind=True) as pci:  # a second process: warm attach
        dev = bring_up(pci)
        assert gpu.psp.autoload_started and gpu.psp.errors == []
        dev.fini()


def test_mode1_brings_back_the_bootloader_path(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        bring_up(pci).fini()
        gpu.psp.reset("mode1")
        assert not gpu.psp.sos_alive
        dev = bring_up(pci)
        assert gpu.psp.sos_alive and gpu.psp.loaded_components[-1] == model.PSP_BL__LOAD_SOSDRV
        dev.fini()


def test_a_wrong_order_command_gets_the_models_status_as_an_error_naming_the_command(machine):
    class NoTMR(PSPv13_0):
        def _setup_tmr(self) -> None:
            """Skips SETUP_TMR: the next LOAD_IP_FW comes in the wrong order."""

    gpu = machine.device(GPU_BDF)
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        with pytest.raises(FirmwareError, match=r"LOAD_IP_FW \(SDMA_UCODE_TH0 from amdgpu/sdma_6_0_0.bin\) "
                                                r"failed with status TEE_ERROR_BAD_STATE"):
            bring_up(pci, implementations=with_block(NoTMR))
        assert gpu.psp.ring is None  # the failed start destroyed the ring


def test_an_error_status_is_decoded_into_a_firmware_error(machine):
    gpu = machine.device(GPU_BDF)
    gpu.psp.fail_commands[gfx.GFX_CMD_ID_LOAD_TOC] = model.TEE_ERROR_BAD_FORMAT
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        with pytest.raises(FirmwareError, match=r"LOAD_TOC .* TEE_ERROR_BAD_FORMAT \(0xffff0005\)"):
            bring_up(pci)


def test_a_component_the_bootloader_refuses_names_it_and_the_status(machine, tmp_path):
    root = write_navi31_set(tmp_path / "fw")
    path = root / SOS_FILE
    data = bytearray(path.read_bytes())
    kdb = firmware.parse_firmware(SOS_FILE, bytes(data), firmware.KIND_PSP_SOS).binary("KDB")
    data[kdb.offset + model.IMAGE_SIGNED_SIZE_OFFSET] ^= 0x40  # the image header no longer adds up
    path.write_bytes(bytes(data))
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        with pytest.raises(FirmwareError, match=r"bootloader rejected KDB from amdgpu/psp_13_0_0_sos.bin: "
                                                r"C2PMSG_35 reads 0x80000001"):
            bring_up(pci, AMConfig(firmware_dir=str(root)))


def test_a_truncated_sos_file_is_a_firmware_error_naming_file_and_field(machine, tmp_path):
    root = tmp_path / "fw"
    shutil.copytree(write_navi31_set(tmp_path / "set"), root)
    (root / SOS_FILE).write_bytes(build(SOS_FILE)[:-100])
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        with pytest.raises(FirmwareError, match=r"psp_13_0_0_sos.bin: size_bytes"):
            bring_up(pci, AMConfig(firmware_dir=str(root)))


@pytest.mark.parametrize("start", ["bootloader", "ring", "fence"])
def test_a_psp_that_never_answers_times_out_naming_the_register_and_last_value(machine, start):
    gpu = machine.device(GPU_BDF)
    expected = {"bootloader": r"MP0 regMP0_SMN_C2PMSG_35 .* \(last value 0x00000000\)",
                "ring": r"MP0 regMP0_SMN_C2PMSG_64 .* \(last value 0x00020000\)",
                "fence": r"PSP command LOAD_TOC .*the fence .*last value 0x0;"}[start]

    class HangAfterRing(PSPv13_0):
        def _create_ring(self) -> None:
            super()._create_ring()
            gpu.psp.hang = True

    implementations = IMPLEMENTATIONS
    if start == "bootloader":
        gpu.psp.bootloader_status = 0  # busy, and stays so
        gpu.psp.hang = True
    elif start == "ring":
        gpu.psp.start_sos()
        gpu.psp.hang = True
        gpu.psp.ring_control = model.MBOX_READY
    else:
        implementations = with_block(HangAfterRing)
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        began = time.monotonic()
        with pytest.raises(DeviceTimeout, match=expected):
            bring_up(pci, AMConfig(**FAST), implementations)
        assert time.monotonic() - began < 2.0


def test_an_all_ones_device_is_device_lost_on_the_first_poll(machine):
    gpu = machine.device(GPU_BDF)

    class Vanishing(PSPv13_0):
        def _bootloader(self) -> None:
            gpu.vanish()
            super()._bootloader()

    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        with pytest.raises(DeviceLost):
            bring_up(pci, AMConfig(**FAST), with_block(Vanishing))


def test_a_bootloader_error_code_is_a_firmware_error_naming_the_component(machine):
    gpu = machine.device(GPU_BDF)
    gpu.psp.bootloader_error = 0x33
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        with pytest.raises(FirmwareError, match=r"rejected KDB .* reads 0x80000033 \(error 0x33\) after"):
            bring_up(pci, AMConfig(**FAST))
        assert not gpu.psp.sos_alive
