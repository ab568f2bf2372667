"""AM bring-up after a PCI reset or a previous driver, against the mock Navi31: the boot layout
flags are gone but the PSP's SOS still runs (and holds the old TMR), so the device mode1-resets
before a cold boot, as amdgpu's soc21_need_reset_on_init asks; the reset ladder of tools.reset_gpu
followed by a full bring-up; what the boot layout's slots hold."""
from __future__ import annotations

import logging

import pytest

import hal
from autogen.amd import psp_gfx_if as gfx
from drivers.am import boot, reset
from drivers.am.device import BLOCK_ORDER, AMConfig, AMDevice
from mockgpu import GPU_BDF, Machine
from mockgpu.amd import psp as psp_model
from tools import reset_gpu, smi

GPU = f"pci:{GPU_BDF}"
CONFIG = dict(sdma_timeout_s=0.3, smu_mode1_wait_s=0.02, smu_mode1_ready_timeout_s=0.5)
# what the bootloader takes from the synthetic psp_13_0_0_sos.bin, in amdgpu's order (psp_hw_start)
FRESH_BOOTLOADER = [psp_model.PSP_BL__LOAD_KEY_DATABASE, psp_model.PSP_BL__LOAD_TOS_SPL_TABLE,
                    psp_model.PSP_BL__LOAD_SYSDRV, psp_model.PSP_BL__LOAD_SOSDRV]


@pytest.fixture
def machine(tmp_path):
    return Machine.default(lock_dir=str(tmp_path))


@pytest.fixture
def gpu(machine):
    return machine.device(GPU_BDF)


def open_device(machine):
    pci = hal.open(GPU, os=machine.os, unbind=True)
    return pci, AMDevice(pci, config=AMConfig(**CONFIG))


def count_mode1(gpu) -> list:
    mode1s = []
    gpu.smu.on_mode1 = lambda: mode1s.append(True)
    return mode1s


def assert_fresh_psp_boot(gpu, commands_before: int) -> None:
    """The PSP went through its bootloader again and took SETUP_TMR and every firmware without an
    error: what a PSP that a mode1 reset returned to its bootloader sees from a cold boot."""
    assert gpu.psp.loaded_components == FRESH_BOOTLOADER
    new = gpu.psp.commands[commands_before:]
    assert (gfx.GFX_CMD_ID_SETUP_TMR, gfx.TEE_SUCCESS) in new
    assert all(status == gfx.TEE_SUCCESS for _, status in new), new
    assert gpu.psp.errors == []


def sdma_copy_works(dev) -> bool:
    sdma = dev.block("SDMA")
    source = dev.memory.alloc_vram(4096, purpose="source")
    destination = dev.memory.alloc_vram(4096, purpose="destination")
    payload = bytes(range(256)) * 16
    source.view.write(0, payload)
    sdma.wait(sdma.copy(destination.mc_address, source.mc_address, len(payload)))
    ok = destination.view.read(0, len(payload)) == payload
    dev.memory.free_vram(source)
    dev.memory.free_vram(destination)
    return ok


def gc_fence_works(dev) -> bool:
    gc = dev.block("GC")
    sequence = gc.signal()
    gc.wait(sequence)
    return gc.fence_value() == sequence


@pytest.mark.parametrize("exit_kind", ["killed", "detached"])
def test_a_pci_reset_after_an_exit_without_teardown_means_mode1_then_a_cold_boot(machine, gpu, exit_kind,
                                                                                  caplog):
    pci, first = open_device(machine)
    if exit_kind == "detached":
        first.detach()  # what the exit hook does
    pci.close()  # no teardown: the SOS runs, and holds the TMR
    tmr = gpu.psp.tmr
    assert tmr is not None and gpu.psp.sos_alive
    gpu.reset_device_state()  # FLR / bus reset: the flags (scratch registers) back to zero
    assert boot.read_flags(first.registers) is None
    assert gpu.psp.sos_alive and gpu.psp.tmr == tmr and gpu.smu.running  # as the model keeps them
    mode1s = count_mode1(gpu)
    resets = gpu.state.reset_count
    commands = len(gpu.psp.commands)
    with caplog.at_level(logging.WARNING, logger="drivers.am.device"):
        pci, second = open_device(machine)
    assert second.boot_kind == "reset"
    assert "SOS is alive" in second.boot_reason and "C2PMSG_81" in second.boot_reason
    assert "SOS is alive" in caplog.text and "mode1" in caplog.text
    assert mode1s == [True] and gpu.state.reset_count == resets + 1
    assert_fresh_psp_boot(gpu, commands)
    assert [block.block for block in second.hw_done] == list(BLOCK_ORDER)
    assert boot.find(second.registers, second.vram).state is boot.State.UP
    assert sdma_copy_works(second) and gc_fence_works(second)
    second.fini()
    pci.close()


def test_after_a_full_teardown_the_next_bring_up_resets_first_as_amdgpu_does(machine, gpu):
    pci, first = open_device(machine)
    first.fini()  # the flags cleared; the SOS keeps running for the next driver
    pci.close()
    assert gpu.psp.sos_alive and gpu.psp.tmr is None
    mode1s = count_mode1(gpu)
    pci, second = open_device(machine)
    assert second.boot_kind == "reset" and mode1s == [True]
    assert gpu.psp.loaded_components == FRESH_BOOTLOADER and gpu.psp.errors == []
    second.fini()
    pci.close()


def test_power_on_and_after_mode1_the_boot_is_cold_without_a_reset(machine, gpu):
    mode1s = count_mode1(gpu)
    pci, dev = open_device(machine)
    assert dev.boot_kind == "cold" and "no SOS running" in dev.boot_reason
    assert mode1s == []
    pci.close()
    with hal.open(GPU, os=machine.os, unbind=True) as pci:  # tools.reset_gpu's mode1
        reset.mode1_reset_pci(pci, timeout_s=0.5)
    assert mode1s == [True] and not gpu.psp.sos_alive
    pci, dev = open_device(machine)
    assert dev.boot_kind == "cold" and mode1s == [True]
    dev.fini()
    pci.close()


def test_an_sos_without_pmfw_cannot_be_reset_and_is_booted_cold_over(machine, gpu, caplog):
    """The owner died before the PSP loaded the PMFW: no mode1 path (the SMU takes it on MP1
    13.0.0) and no TMR either (on MP0 13.0.0 the SMU firmware precedes SETUP_TMR)."""
    gpu.psp.start_sos()
    assert not gpu.smu.running
    with caplog.at_level(logging.WARNING, logger="drivers.am.device"):
        pci, dev = open_device(machine)
    assert dev.boot_kind == "reset" and "no mode1 reset" in caplog.text
    assert gpu.psp.loaded_components == list(psp_model.BOOTLOADER_ORDER)  # the bootloader skipped
    assert gpu.psp.errors == [] and sdma_copy_works(dev)
    dev.fini()
    pci.close()


def test_the_reset_ladder_then_a_bring_up_works_again(machine, gpu):
    pci, first = open_device(machine)
    pci.close()  # exit without teardown
    report = reset_gpu.reset_gpu(machine.os, GPU_BDF, unbind=True, timeout_s=2.0,
                                 lock_dir=machine.lock_dir)
    assert report.ok, report.as_text()
    done = [step.method for step in report.steps if step.ok]
    assert done == ["sbr"]  # Navi31 advertises no FLR; the bus reset is the first step that works
    assert boot.read_flags(first.registers) is None and gpu.psp.sos_alive
    mode1s = count_mode1(gpu)
    commands = len(gpu.psp.commands)
    pci, second = open_device(machine)
    assert second.boot_kind == "reset" and mode1s == [True]
    assert_fresh_psp_boot(gpu, commands)
    assert sdma_copy_works(second) and gc_fence_works(second)
    second.fini()
    pci.close()


def test_slot_addresses_say_what_they_are(machine, gpu):
    pci, dev = open_device(machine)
    layout = boot.find(dev.registers, dev.vram)
    root, _ = layout.slots["gmc.vmid0_root"]
    context = dev.block("GMC").contexts[0]
    # the root is a VRAM physical address (what PAGE_TABLE_BASE_ADDR takes), not an MC one
    assert root == context.page_table.root_address
    assert root < dev.memory.fb_base
    assert boot.slot_address_kind("gmc.vmid0_root") == "vram_address"
    ring, _ = layout.slots["psp.ring"]
    assert ring == dev.block("PSP").ring_buffer.mc_address >= dev.memory.fb_base
    assert boot.slot_address_kind("psp.ring") == "mc_address"
    assert set(boot.PHYSICAL_SLOTS) <= {name for name, _, _ in boot.SLOTS}
    # the status tool labels each number with what it is
    structures = smi.Observer.layout_summary(layout)["structures"]
    assert structures["gmc.vmid0_root"] == {"vram_address": f"{root:#x}", "size": 4096}
    assert structures["psp.ring"] == {"mc_address": f"{ring:#x}", "size": 4096}
    dev.fini()
    pci.close()
