"""The RLC (run-list controller) of the mock Navi31's GC 11.0.0, as far as a driver sees it at bring-up.

On the Navi31 the driver does not load the RLC itself: the PSP holds the GC firmware in its TMR
(LOAD_IP_FW of the RLC, CP and IMU images), and GFX_CMD_ID_AUTOLOAD_RLC, sent right after RLC_G
(amdgpu_psp.c psp_load_non_psp_fw -> psp_rlc_autoload_start), makes it start the RLC, which then
loads the rest of the GC firmware. The RLC reports the end of that boot in
RLC_RLCS_BOOTLOAD_STATUS.BOOTLOAD_COMPLETE, which gfx_v11_0.c
gfx_v11_0_wait_for_rlc_autoload_complete polls (with CP_STAT == 0) before it touches the CP.

What it owns:
- RLC_RLCS_BOOTLOAD_STATUS: a status the RLC firmware writes, read-only to the host (writes are
  dropped); 0 until the PSP model calls `autoload()`, then BOOTLOAD_COMPLETE;
- CP_STAT: the CP's busy bits. The MEC model runs packets synchronously inside the doorbell write
  that submits them, so the CP is idle whenever the host can read: it reads 0 (idle), which is what
  the autoload wait looks for;
- resets: every kind ("power_on", "pci", "mode1") clears BOOTLOAD_COMPLETE: the GC, RLC included,
  comes back with no firmware running after each, and amdgpu reloads the GC firmware through the
  PSP and waits for the autoload again after a mode1 (amdgpu_device_mode1_reset, then
  amdgpu_device_ip_resume -> psp_resume -> psp_load_fw) and at probe after a power cycle;
- the fault hook `autoload_hang`: AUTOLOAD_RLC is taken but the RLC never reports completion.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from autogen.amd.regs import gc_11_0_0

if TYPE_CHECKING:
    from mockgpu.amd.gpu import Navi31GPU

IP = "GC"
RESET_KINDS = ("power_on", "pci", "mode1")
BOOTLOAD_COMPLETE = gc_11_0_0.regRLC_RLCS_BOOTLOAD_STATUS.field("BOOTLOAD_COMPLETE")
CP_IDLE = 0  # gfx_v11_0_wait_for_rlc_autoload_complete: "cp_status == 0" is an idle CP


class RLCModel:
    """The RLC's bootload status and the CP status register (see the module docstring)."""

    def __init__(self, gpu: "Navi31GPU") -> None:
        self.gpu = gpu
        self.autoload_hang = False
        self.autoloads = 0  # AUTOLOAD_RLC requests the RLC received (for tests)
        regfile = gpu.regfile
        self._status = regfile.own(IP, "regRLC_RLCS_BOOTLOAD_STATUS", write=self._drop_write)
        regfile.own(IP, "regCP_STAT", read=lambda: CP_IDLE, write=self._drop_write)
        self.reset("power_on")

    @staticmethod
    def _drop_write(value: int) -> None:
        """Status registers: the host cannot set them."""

    def reset(self, kind: str) -> None:
        """Every reset stops the RLC: BOOTLOAD_COMPLETE clears (module docstring)."""
        if kind not in RESET_KINDS:
            raise ValueError(f"reset kind {kind!r} is not one of {RESET_KINDS}")
        self.gpu.regfile.poke(self._status, 0)

    @property
    def bootload_complete(self) -> bool:
        return bool(BOOTLOAD_COMPLETE.decode(self.gpu.regfile.peek(self._status)))

    def autoload(self) -> None:
        """The PSP started the RLC autoload (psp_rlc_autoload_start): the RLC boots and loads the
        GC firmware from the TMR, then reports BOOTLOAD_COMPLETE (unless `autoload_hang`)."""
        self.autoloads += 1
        if self.autoload_hang:
            return
        self.gpu.regfile.poke(self._status, BOOTLOAD_COMPLETE.mask)
