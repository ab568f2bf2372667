"""The mock RLC at the register layer: RLC_RLCS_BOOTLOAD_STATUS as gfx_v11_0_wait_for_rlc_autoload_
complete reads it, set by the PSP's GFX_CMD_ID_AUTOLOAD_RLC (amdgpu_psp.c psp_rlc_autoload_start),
cleared by every reset; CP_STAT idle; the PSP starting the PMFW once."""
from __future__ import annotations

import pytest

from autogen.amd import psp_gfx_if as gfx
from autogen.amd.regs import gc_11_0_0
from tests.mockgpu.amd.test_amd_psp import (TMR, create_ring, gpu, load_ip_fw, load_toc, setup_tmr, sos,
                                            submit)

__all__ = ["gpu", "sos"]  # fixtures shared with the PSP tests

BOOTLOAD_COMPLETE = gc_11_0_0.regRLC_RLCS_BOOTLOAD_STATUS.field("BOOTLOAD_COMPLETE")


def read(gpu, name: str) -> int:
    return gpu.regfile.read32(gpu.regfile.address("GC", name))


def write(gpu, name: str, value: int) -> None:
    gpu.regfile.write32(gpu.regfile.address("GC", name), value)


def autoload(gpu, sos) -> int:
    """psp_hw_start's GC part on MP0 13.0.0: TOC, SMU, TMR, RLC_G, then AUTOLOAD_RLC."""
    gpu.psp.start_sos()
    create_ring(gpu)
    tmr_size = load_toc(gpu, sos, 1).tmr_size
    assert load_ip_fw(gpu, gfx.GFX_FW_TYPE_SMU, 0x1000, 2).status == gfx.TEE_SUCCESS
    assert setup_tmr(gpu, TMR, tmr_size, 3).status == gfx.TEE_SUCCESS
    assert load_ip_fw(gpu, gfx.GFX_FW_TYPE_RLC_G, 0x2000, 4).status == gfx.TEE_SUCCESS
    return submit(gpu, gfx.psp_gfx_cmd_resp(cmd_id=gfx.GFX_CMD_ID_AUTOLOAD_RLC), 5).status


def test_power_on_no_bootload_and_the_host_cannot_set_it(gpu):
    assert read(gpu, "regRLC_RLCS_BOOTLOAD_STATUS") == 0
    write(gpu, "regRLC_RLCS_BOOTLOAD_STATUS", BOOTLOAD_COMPLETE.mask)  # a status, not a control
    assert read(gpu, "regRLC_RLCS_BOOTLOAD_STATUS") == 0
    assert read(gpu, "regCP_STAT") == 0  # an idle CP


def test_autoload_rlc_makes_the_rlc_report_bootload_complete(gpu, sos):
    assert autoload(gpu, sos) == gfx.TEE_SUCCESS
    assert BOOTLOAD_COMPLETE.decode(read(gpu, "regRLC_RLCS_BOOTLOAD_STATUS")) == 1
    assert gpu.rlc.autoloads == 1


def test_a_refused_autoload_leaves_the_rlc_down(gpu, sos):
    gpu.psp.start_sos()
    create_ring(gpu)
    load_toc(gpu, sos, 1)
    cmd = gfx.psp_gfx_cmd_resp(cmd_id=gfx.GFX_CMD_ID_AUTOLOAD_RLC)
    assert submit(gpu, cmd, 2).status != gfx.TEE_SUCCESS  # no TMR holding RLC_G
    assert read(gpu, "regRLC_RLCS_BOOTLOAD_STATUS") == 0


def test_the_hang_hook_never_completes(gpu, sos):
    gpu.rlc.autoload_hang = True
    assert autoload(gpu, sos) == gfx.TEE_SUCCESS
    assert gpu.rlc.autoloads == 1
    assert read(gpu, "regRLC_RLCS_BOOTLOAD_STATUS") == 0


@pytest.mark.parametrize("kind", ["power_on", "pci", "mode1"])
def test_every_reset_clears_bootload_complete(gpu, sos, kind):
    autoload(gpu, sos)
    for model in gpu.models:
        model.reset(kind)
    assert read(gpu, "regRLC_RLCS_BOOTLOAD_STATUS") == 0


def test_mode1_clears_it_through_the_gpu(gpu, sos):
    autoload(gpu, sos)
    gpu.mode1_reset()
    assert read(gpu, "regRLC_RLCS_BOOTLOAD_STATUS") == 0


def test_loading_the_smu_firmware_again_does_not_restart_a_running_pmfw(gpu, sos):
    gpu.psp.start_sos()
    create_ring(gpu)
    load_toc(gpu, sos, 1)
    load_ip_fw(gpu, gfx.GFX_FW_TYPE_SMU, 0x1000, 2)
    started = []
    gpu.smu.start = lambda *args, **kwargs: started.append(args)
    assert load_ip_fw(gpu, gfx.GFX_FW_TYPE_SMU, 0x1000, 3).status == gfx.TEE_SUCCESS
    assert started == []  # one start per load at most, none while the PMFW runs
