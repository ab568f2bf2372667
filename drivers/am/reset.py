"""Mode1 reset of an AM GPU: the whole ASIC reset the SMU performs, layered on hal's reset helpers.

After amdgpu_device.c amdgpu_device_mode1_reset and soc21.c soc21_asic_mode1_reset:
1. the PCI config state saved (hal PCIDevice.save_config_state: amdgpu_device_cache_pci_state);
2. bus mastering off (pci_clear_master), so nothing the GPU had in flight reaches host memory;
3. the request. Which block takes it depends on the IP versions: on MP1 13.0.0 the SMU's
   PPSMC_MSG_Mode1Reset on its normal mailbox (smu_v13_0_0_ppt.c smu_v13_0_0_mode1_reset; the
   debug-mailbox request is 13.0.10's), and psp_v13_0.c has no mode1 hook (amdgpu_psp.c
   psp_gpu_reset does nothing on MP0 13.0.0), so `MODE1_THROUGH` names the SMU for every version
   this driver serves;
4. the SMU's wait (SMU13_MODE1_RESET_WAIT_TIME_IN_MS), then readiness through hal:
   hal.reset.wait_device_ready on the backend's presence register (amdgpu: the vendor ID poll in
   amdgpu_device_mode1_reset), the config state restored (pci_restore_state), the memory-size
   register answering (not all ones), and MP0 C2PMSG_33 bit 31 again (the IFWI has initialised the
   part, amdgpu_discovery.c amdgpu_discovery_read_binary_from_mem);
5. the boot layout flags cleared (drivers.am.boot): a reset leaves nothing a warm attach could use.
Every block must be brought up again afterwards.
"""
from __future__ import annotations

import logging

from autogen.amd import smu_v13_0_0_ppsmc as ppsmc
from autogen.linux import pci_regs
from drivers.am import boot
from drivers.am.smu import MODE1_READY_TIMEOUT_S, MODE1_WAIT_S, SMU_TIMEOUT_S, SMUMailbox
from hal import reset as hal_reset
from hal.errors import DeviceTimeout, UnsupportedOperation
from hal.pcidev import PCIDevice

log = logging.getLogger(__name__)

WORD_MASK = 0xFFFFFFFF  # a 32-bit register read that nothing answered
IFWI_INIT_DONE = 1 << 31  # MP0 C2PMSG_33 bit 31 (amdgpu_discovery.c, as drivers.am.device)
POLL_INTERVAL_S = 0.001
# the block that takes a mode1 request, per MP1 version (see the module docstring)
MODE1_THROUGH: dict[tuple[int, int, int], str] = {(13, 0, 0): "SMU"}


def mode1_reset(pci: PCIDevice, registers, *, mp1_version: tuple[int, int, int] = (13, 0, 0),
                smu_timeout_s: float = SMU_TIMEOUT_S, wait_s: float = MODE1_WAIT_S,
                ready_timeout_s: float = MODE1_READY_TIMEOUT_S) -> None:
    """Mode1-reset the GPU behind `pci` (registers bound by discovery; see the module docstring).

    UnsupportedOperation when no block takes the request (an MP1 version without a path, or a PMFW
    that is not running); DeviceLost when the GPU does not come back (all ones past
    `ready_timeout_s`); DeviceTimeout when it answers but the IFWI never reports done."""
    through = MODE1_THROUGH.get(mp1_version)
    if through is None:
        raise UnsupportedOperation(f"{pci.bdf}: no mode1 path for MP1 {mp1_version} (known: "
                                   f"{', '.join(str(v) for v in MODE1_THROUGH)})")
    mailbox = SMUMailbox(pci, registers, smu_timeout_s)
    if not mailbox.firmware_running():
        raise UnsupportedOperation(f"{pci.bdf}: the SMU firmware is not running (MP1 firmware flags), so "
                                   "nothing takes a mode1 request; use a PCI reset (FLR or bus reset)")
    saved = pci.save_config_state()
    command = pci.cfg_read16(pci_regs.PCI_COMMAND)
    pci.cfg_write16(pci_regs.PCI_COMMAND, command & ~pci_regs.PCI_COMMAND_MASTER)
    mailbox.send(ppsmc.PPSMC_MSG_Mode1Reset, 0)
    pci.os.sleep(wait_s)
    mailbox.forget_state()
    hal_reset.wait_device_ready(pci, "mode1", ready_timeout_s)
    pci.restore_config_state(saved)
    memsize = registers.reg("NBIO", "regRCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE")
    _wait(pci, memsize, lambda value: value != WORD_MASK, ready_timeout_s,
          "the memory-size register to answer")
    ifwi = registers.reg("MP0", "regMP0_SMN_C2PMSG_33")
    _wait(pci, ifwi, lambda value: value != WORD_MASK and value & IFWI_INIT_DONE, ready_timeout_s,
          "the IFWI to report init done (C2PMSG_33 bit 31)")
    boot.clear_flags(registers)
    log.info("%s: mode1 reset through the %s done", pci.bdf, through)


def _wait(pci: PCIDevice, register, done, timeout_s: float, what: str) -> int:
    """Poll `register` until done(value); DeviceTimeout names the register and last value."""
    deadline = pci.os.monotonic() + timeout_s
    value = register.read()
    while not done(value):
        if pci.os.monotonic() >= deadline:
            raise DeviceTimeout(f"{pci.bdf}: after a mode1 reset, waited {timeout_s} s for {what}: "
                                f"{register.block} {register.name} last read {value:#010x}")
        pci.os.sleep(POLL_INTERVAL_S)
        value = register.read()
    return value


def mode1_reset_device(device) -> None:
    """Mode1-reset an AMDevice with the timeouts of its AMConfig."""
    config = device.config
    mode1_reset(device.pci, device.registers, mp1_version=device.discovery.version("MP1"),
                smu_timeout_s=config.smu_timeout_s, wait_s=config.smu_mode1_wait_s,
                ready_timeout_s=config.smu_mode1_ready_timeout_s)


def mode1_reset_pci(pci: PCIDevice, timeout_s: float = SMU_TIMEOUT_S) -> None:
    """Mode1 for a GPU nobody brought up (tools.reset_gpu): discovery only, then `mode1_reset`."""
    from drivers.am.device import AMDevice  # the device module imports this one

    device = AMDevice(pci, block_order=())
    mode1_reset(pci, device.registers, mp1_version=device.discovery.version("MP1"),
                smu_timeout_s=timeout_s, ready_timeout_s=timeout_s)
