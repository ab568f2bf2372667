"""PSP 13.0.0 (MP0): boots the security processor's OS and loads every other firmware through it.

After amdgpu (drivers/gpu/drm/amd/amdgpu/amdgpu_psp.c psp_hw_start / psp_load_fw /
psp_load_non_psp_fw, psp_v13_0.c, psp_gfx_if.h):
- sw_init: the firmware set for the discovered GC, MP0, MP1 and SDMA versions
  (drivers.am.firmware.load_set, from AMConfig.firmware_dir or the search path); VRAM for the
  KM ring (4 KiB), the fence and the command buffer (4 KiB each), the 1 MiB firmware private
  buffer (1 MiB aligned: its address goes to C2PMSG_36 >> 20) and the IP firmware, each section
  on its own page (amdgpu_ucode.c amdgpu_ucode_init_bo);
- hw_init, when no SOS runs (C2PMSG_81 reads 0): the bootloader phase, each component of the sos
  image in amdgpu's order (KDB, SPL, SYS_DRV, SOC_DRV, INTF_DRV, DBG_DRV, RAS_DRV, IPKEYMGR_DRV,
  SOS) copied into the private buffer and handed over through C2PMSG_36/C2PMSG_35, each waited on
  (C2PMSG_35 bit 31; an error code in bits 7:0 is a FirmwareError naming the component); after
  SOS, C2PMSG_81 coming alive. When the SOS already runs, the bootloader is skipped (a warm attach);
- the KM ring (C2PMSG_69/70/71 + C2PMSG_64), then LOAD_TOC (its answer sizes the TMR), the SMU
  firmware (MP0 13.0.0 manages DF C-states in PMFW: SMU before SETUP_TMR), SETUP_TMR, LOAD_IP_FW
  for every other section in ucode-id order (MEC jump tables skipped under autoload, MES only with
  the MES scheduler, which this driver does not use), AUTOLOAD_RLC right after RLC_G;
- every command's response status decoded: FirmwareError naming the command (and the firmware),
  the status by name; a fence that never comes is DeviceTimeout naming the command;
- hw_fini: DESTROY_TMR, ring destroy; the TMR given back.
"""
from __future__ import annotations

import logging
import pathlib
from typing import Callable

from autogen.amd import amdgpu_ucode as ucode
from autogen.amd import psp_gfx_if as gfx
from autogen.linux import pci_regs
from drivers.am import firmware
from drivers.am.boot import WarmAttachRefused
from drivers.am.ip import IPBlock, poll
from hal.errors import DeviceTimeout, FirmwareError

log = logging.getLogger(__name__)

# amdgpu_psp.h enum psp_bootloader_cmd (the header needs amdgpu.h, so it is not generated)
PSP_BL__LOAD_SYSDRV = 0x10000
PSP_BL__LOAD_SOSDRV = 0x20000
PSP_BL__LOAD_KEY_DATABASE = 0x80000
PSP_BL__LOAD_SOCDRV = 0xB0000
PSP_BL__LOAD_DBGDRV = 0xC0000
PSP_BL__LOAD_INTFDRV = 0xD0000
PSP_BL__LOAD_RASDRV = 0xE0000
PSP_BL__LOAD_IPKEYMGRDRV = 0xF0000
PSP_BL__LOAD_TOS_SPL_TABLE = 0x10000000
PSP_RING_TYPE__KM = 2  # amdgpu_psp.h enum psp_ring_type

# psp_hw_start's order: (packaged binary name in the sos image, bootloader command). amdgpu's
# psp_v13_0_bootloader_load_spl hands over the KDB binary with the SPL command; this driver sends
# the SPL binary itself.
BOOTLOADER_SEQUENCE = (("KDB", PSP_BL__LOAD_KEY_DATABASE), ("SPL", PSP_BL__LOAD_TOS_SPL_TABLE),
                       ("SYS_DRV", PSP_BL__LOAD_SYSDRV), ("SOC_DRV", PSP_BL__LOAD_SOCDRV),
                       ("INTF_DRV", PSP_BL__LOAD_INTFDRV), ("DBG_DRV", PSP_BL__LOAD_DBGDRV),
                       ("RAS_DRV", PSP_BL__LOAD_RASDRV), ("IPKEYMGR_DRV", PSP_BL__LOAD_IPKEYMGRDRV))

MBOX_READY = 0x80000000  # psp_v13_0.c MBOX_READY_FLAG
# psp_v13_0.c psp_v13_0_wait_for_bootloader: an error in processing a command sets bits 7:0
BOOTLOADER_ERROR_MASK = 0xFF
# psp_v13_0.c psp_v13_0_ring_create waits on C2PMSG_64 with this mask: the flag and the status
RING_RESPONSE_MASK = MBOX_READY | gfx.GFX_CMD_STATUS_MASK

# amdgpu_psp.h / amdgpu_psp.c sizes and alignments
PSP_RING_SIZE = 0x1000  # psp_ring_init
PSP_FENCE_BUFFER_SIZE = 0x1000
PSP_CMD_BUFFER_SIZE = 0x1000
PSP_1_MEG = 0x100000  # the firmware private buffer, 1 MiB aligned (psp_sw_init)
PSP_TMR_SIZE = 0x400000  # PSP_TMR_SIZE(adev) when LOAD_TOC does not say
PSP_TMR_ALIGNMENT = 0x100000
PRIVATE_BUFFER_SHIFT = 20  # psp_v13_0.c: C2PMSG_36 = fw_pri_mc_addr >> 20
UCODE_ALIGNMENT = 0x1000  # amdgpu_ucode.c amdgpu_ucode_init_bo: each ucode on a PAGE_SIZE boundary
LOW_32_BITS = 0xFFFFFFFF  # lower_32_bits(): the _lo half of an address split over two registers
# pauses between reads: psp_wait_for polls every 1 us, psp_cmd_submit_buf's fence every 60-100 us;
# Python reads cost more, so the register wait pauses 1 ms and the fence wait 100 us
MAILBOX_POLL_S = 0.001
FENCE_POLL_S = 0.0001
# the C2PMSG registers this block uses: bootloader command/status and private buffer, SOS version,
# ring control, write pointer, ring address and size, SOS sign of life (psp_v13_0.c)
C2PMSG_USED = (35, 36, 58, 64, 67, 69, 70, 71, 81)

# GlobalPlatform TEE Client API v1.0 result codes (psp_gfx_if.h's TEE_ERROR_CANCEL and
# TEE_ERROR_NOT_SUPPORTED are two of them): names for the statuses an SOS answers with
TEE_STATUS_NAMES = {
    gfx.TEE_SUCCESS: "TEE_SUCCESS", 0xFFFF0000: "TEE_ERROR_GENERIC", 0xFFFF0001: "TEE_ERROR_ACCESS_DENIED",
    gfx.TEE_ERROR_CANCEL: "TEE_ERROR_CANCEL", 0xFFFF0003: "TEE_ERROR_ACCESS_CONFLICT",
    0xFFFF0004: "TEE_ERROR_EXCESS_DATA", 0xFFFF0005: "TEE_ERROR_BAD_FORMAT",
    0xFFFF0006: "TEE_ERROR_BAD_PARAMETERS", 0xFFFF0007: "TEE_ERROR_BAD_STATE",
    0xFFFF0008: "TEE_ERROR_ITEM_NOT_FOUND", 0xFFFF0009: "TEE_ERROR_NOT_IMPLEMENTED",
    gfx.TEE_ERROR_NOT_SUPPORTED: "TEE_ERROR_NOT_SUPPORTED", 0xFFFF000B: "TEE_ERROR_NO_DATA",
    0xFFFF000C: "TEE_ERROR_OUT_OF_MEMORY", 0xFFFF000D: "TEE_ERROR_BUSY",
    0xFFFF000E: "TEE_ERROR_COMMUNICATION", 0xFFFF000F: "TEE_ERROR_SECURITY",
    0xFFFF0010: "TEE_ERROR_SHORT_BUFFER", gfx.PSP_ERR_UNKNOWN_COMMAND: "PSP_ERR_UNKNOWN_COMMAND",
}
GFX_CMD_NAMES = {value: name[len("GFX_CMD_ID_"):] for name, value in vars(gfx).items()
                 if name.startswith("GFX_CMD_ID_") and isinstance(value, int)}

# amdgpu_psp.c psp_get_fw_type, for the ucode ids a Navi31 firmware set has
FW_TYPE_OF_UCODE = {
    ucode.AMDGPU_UCODE_ID_SDMA_UCODE_TH0: gfx.GFX_FW_TYPE_SDMA_UCODE_TH0,
    ucode.AMDGPU_UCODE_ID_SDMA_UCODE_TH1: gfx.GFX_FW_TYPE_SDMA_UCODE_TH1,
    ucode.AMDGPU_UCODE_ID_CP_RS64_PFP: gfx.GFX_FW_TYPE_RS64_PFP,
    ucode.AMDGPU_UCODE_ID_CP_RS64_ME: gfx.GFX_FW_TYPE_RS64_ME,
    ucode.AMDGPU_UCODE_ID_CP_RS64_MEC: gfx.GFX_FW_TYPE_RS64_MEC,
    ucode.AMDGPU_UCODE_ID_CP_RS64_PFP_P0_STACK: gfx.GFX_FW_TYPE_RS64_PFP_P0_STACK,
    ucode.AMDGPU_UCODE_ID_CP_RS64_PFP_P1_STACK: gfx.GFX_FW_TYPE_RS64_PFP_P1_STACK,
    ucode.AMDGPU_UCODE_ID_CP_RS64_ME_P0_STACK: gfx.GFX_FW_TYPE_RS64_ME_P0_STACK,
    ucode.AMDGPU_UCODE_ID_CP_RS64_ME_P1_STACK: gfx.GFX_FW_TYPE_RS64_ME_P1_STACK,
    ucode.AMDGPU_UCODE_ID_CP_RS64_MEC_P0_STACK: gfx.GFX_FW_TYPE_RS64_MEC_P0_STACK,
    ucode.AMDGPU_UCODE_ID_CP_RS64_MEC_P1_STACK: gfx.GFX_FW_TYPE_RS64_MEC_P1_STACK,
    ucode.AMDGPU_UCODE_ID_CP_RS64_MEC_P2_STACK: gfx.GFX_FW_TYPE_RS64_MEC_P2_STACK,
    ucode.AMDGPU_UCODE_ID_CP_RS64_MEC_P3_STACK: gfx.GFX_FW_TYPE_RS64_MEC_P3_STACK,
    ucode.AMDGPU_UCODE_ID_CP_PFP: gfx.GFX_FW_TYPE_CP_PFP,
    ucode.AMDGPU_UCODE_ID_CP_ME: gfx.GFX_FW_TYPE_CP_ME,
    ucode.AMDGPU_UCODE_ID_CP_MEC1: gfx.GFX_FW_TYPE_CP_MEC,
    ucode.AMDGPU_UCODE_ID_CP_MEC1_JT: gfx.GFX_FW_TYPE_CP_MEC_ME1,
    ucode.AMDGPU_UCODE_ID_CP_MES: gfx.GFX_FW_TYPE_CP_MES,
    ucode.AMDGPU_UCODE_ID_CP_MES_DATA: gfx.GFX_FW_TYPE_MES_STACK,
    ucode.AMDGPU_UCODE_ID_CP_MES1: gfx.GFX_FW_TYPE_CP_MES_KIQ,
    ucode.AMDGPU_UCODE_ID_CP_MES1_DATA: gfx.GFX_FW_TYPE_MES_KIQ_STACK,
    ucode.AMDGPU_UCODE_ID_IMU_I: gfx.GFX_FW_TYPE_IMU_I,
    ucode.AMDGPU_UCODE_ID_IMU_D: gfx.GFX_FW_TYPE_IMU_D,
    ucode.AMDGPU_UCODE_ID_GLOBAL_TAP_DELAYS: gfx.GFX_FW_TYPE_GLOBAL_TAP_DELAYS,
    ucode.AMDGPU_UCODE_ID_SE0_TAP_DELAYS: gfx.GFX_FW_TYPE_SE0_TAP_DELAYS,
    ucode.AMDGPU_UCODE_ID_SE1_TAP_DELAYS: gfx.GFX_FW_TYPE_SE1_TAP_DELAYS,
    ucode.AMDGPU_UCODE_ID_SE2_TAP_DELAYS: gfx.GFX_FW_TYPE_SE2_TAP_DELAYS,
    ucode.AMDGPU_UCODE_ID_SE3_TAP_DELAYS: gfx.GFX_FW_TYPE_SE3_TAP_DELAYS,
    ucode.AMDGPU_UCODE_ID_RLC_RESTORE_LIST_CNTL: gfx.GFX_FW_TYPE_RLC_RESTORE_LIST_SRM_CNTL,
    ucode.AMDGPU_UCODE_ID_RLC_RESTORE_LIST_GPM_MEM: gfx.GFX_FW_TYPE_RLC_RESTORE_LIST_GPM_MEM,
    ucode.AMDGPU_UCODE_ID_RLC_RESTORE_LIST_SRM_MEM: gfx.GFX_FW_TYPE_RLC_RESTORE_LIST_SRM_MEM,
    ucode.AMDGPU_UCODE_ID_RLC_IRAM: gfx.GFX_FW_TYPE_RLC_IRAM,
    ucode.AMDGPU_UCODE_ID_RLC_DRAM: gfx.GFX_FW_TYPE_RLC_DRAM_BOOT,
    ucode.AMDGPU_UCODE_ID_RLC_P: gfx.GFX_FW_TYPE_RLC_P,
    ucode.AMDGPU_UCODE_ID_RLC_V: gfx.GFX_FW_TYPE_RLC_V,
    ucode.AMDGPU_UCODE_ID_RLC_G: gfx.GFX_FW_TYPE_RLC_G,
    ucode.AMDGPU_UCODE_ID_SMC: gfx.GFX_FW_TYPE_SMU,
}
# psp_load_non_psp_fw / fw_load_skip_check with autoload: MEC jump tables are not sent; the MES
# ucodes exist only with the MES scheduler (amdgpu_mes.c), which this driver does not run
SKIPPED_UCODES = frozenset({ucode.AMDGPU_UCODE_ID_CP_MEC1_JT, ucode.AMDGPU_UCODE_ID_CP_MEC2_JT,
                            ucode.AMDGPU_UCODE_ID_CP_MES, ucode.AMDGPU_UCODE_ID_CP_MES_DATA,
                            ucode.AMDGPU_UCODE_ID_CP_MES1, ucode.AMDGPU_UCODE_ID_CP_MES1_DATA})
# the discovered IPs whose firmware goes through the PSP, by the names firmware_for takes
FIRMWARE_IPS = ("GC", "MP0", "MP1", "SDMA0")
SOS_FILE_KIND = firmware.KIND_PSP_SOS


def status_name(status: int) -> str:
    return TEE_STATUS_NAMES.get(status, f"{status:#010x}")


def command_name(cmd_id: int) -> str:
    return GFX_CMD_NAMES.get(cmd_id, f"{cmd_id:#x}")


class PSPv13_0(IPBlock):
    """MP0 13.0.0: bootloader, KM ring and firmware loading (see the module docstring)."""

    block = "PSP"
    versions = ((13, 0, 0),)

    def sw_init(self) -> None:
        device = self.device
        config = device.config
        versions = {}
        for ip in FIRMWARE_IPS:
            try:
                versions[ip] = device.discovery.version(ip)
            except LookupError:
                continue
        roots = None
        if config.firmware_dir is not None:
            roots = [pathlib.Path(config.firmware_dir)]
        revision = device.pci.cfg_read8(pci_regs.PCI_REVISION_ID)
        self.firmware = firmware.load_set(versions, roots, pci_device=device.pci.device_id,
                                          pci_revision=revision)
        sos = [image for image in self.firmware.values() if image.kind == SOS_FILE_KIND]
        if not sos:
            raise FirmwareError(f"{device.pci.bdf}: no PSP sos image among {', '.join(self.firmware)}")
        self.sos_image = sos[0]
        self.sections = sorted((section for image in self.firmware.values() for section in image.sections
                                if section.ucode_id in FW_TYPE_OF_UCODE
                                and section.ucode_id not in SKIPPED_UCODES),
                               key=lambda section: section.ucode_id)
        self.file_of = {section.ucode_id: image.name for image in self.firmware.values()
                        for section in image.sections}
        self.buffers = []
        self.ring_buffer = self._alloc(PSP_RING_SIZE, 0x1000, "psp ring")
        self.fence_buffer = self._alloc(PSP_FENCE_BUFFER_SIZE, 0x1000, "psp fence")
        self.cmd_buffer = self._alloc(PSP_CMD_BUFFER_SIZE, 0x1000, "psp command buffer")
        self.private_buffer = self._alloc(PSP_1_MEG, PSP_1_MEG, "psp firmware private buffer")
        self.ucode_offsets: dict[int, int] = {}
        total = 0
        for section in self.sections:
            self.ucode_offsets[section.ucode_id] = total
            total += -(-section.size // UCODE_ALIGNMENT) * UCODE_ALIGNMENT
        self.ucode_buffer = self._alloc(max(total, UCODE_ALIGNMENT), UCODE_ALIGNMENT, "ip firmware")
        self.tmr = None
        self.fence_value = 0
        self.sos_version = 0
        self.ring_created = False
        self.tmr_set_up = False
        registers = device.registers
        self.c2pmsg = {number: registers.reg("MP0", f"regMP0_SMN_C2PMSG_{number}") for number in C2PMSG_USED}

    def _alloc(self, size: int, alignment: int, purpose: str):
        buffer = self.device.memory.alloc_vram(size, alignment=alignment, purpose=purpose)
        self.buffers.append(buffer)
        return buffer

    def sw_fini(self) -> None:
        for buffer in reversed(self.buffers):
            self.device.memory.free_vram(buffer)
        self.buffers = []

    # -- registers --------------------------------------------------------------------------------
    def _reg(self, number: int):
        return self.c2pmsg[number]

    @property
    def sos_alive(self) -> bool:
        """psp_v13_0_is_sos_alive: C2PMSG_81 (the SOS sign of life) is non-zero."""
        return self._reg(81).read() != 0

    # -- hw_init ----------------------------------------------------------------------------------
    def hw_init(self) -> None:
        self.ring_created = False
        self.tmr_set_up = False
        try:
            self._start()
        except BaseException:
            # amdgpu_psp.c psp_load_fw: a failed start still destroys the ring; the device runs
            # hw_fini only for blocks whose hw_init succeeded
            try:
                self.hw_fini()
            except Exception as exc:
                log.error("%s: PSP cleanup after a failed start: %s", self.device.pci.bdf, exc)
            raise

    def _start(self) -> None:
        device = self.device
        self.fence_buffer.view.write(0, bytes(PSP_FENCE_BUFFER_SIZE))  # psp_load_fw clears it
        for section in self.sections:
            offset = self.ucode_offsets[section.ucode_id]
            self.ucode_buffer.view.write(offset, section.payload)
        self._flush_hdp()
        if self.sos_alive:
            log.info("%s: PSP SOS already running, bootloader skipped", device.pci.bdf)
        else:
            self._bootloader()
        self.sos_version = self._reg(58).read()
        self._create_ring()
        tmr_size = self._load_toc()
        self.tmr = device.memory.alloc_vram(tmr_size, alignment=PSP_TMR_ALIGNMENT, purpose="psp tmr")
        # psp_hw_start: MP0 13.0.0 has pmfw_centralized_cstate_management, so the SMU firmware
        # goes in before SETUP_TMR
        smu = [section for section in self.sections if section.ucode_id == ucode.AMDGPU_UCODE_ID_SMC]
        for section in smu:
            self.load_ip_firmware(section)
        self._setup_tmr()
        for section in self.sections:
            if section.ucode_id == ucode.AMDGPU_UCODE_ID_SMC:
                continue
            self.load_ip_firmware(section)
            if section.ucode_id == ucode.AMDGPU_UCODE_ID_RLC_G:
                self.submit(gfx.GFX_CMD_ID_AUTOLOAD_RLC)

    def warm_init(self) -> None:
        """Attach to a running SOS a previous owner left with its KM ring and TMR: nothing is
        loaded again. The ring must be the one at this block's ring buffer (C2PMSG_69/70/71 keep
        what psp_v13_0_ring_create wrote) and C2PMSG_64 ready without an error; the fence value
        continues from what the fence buffer holds; the TMR is the recorded one (device.memory
        hands it back in place). Otherwise WarmAttachRefused (drivers.am.boot)."""
        bdf = self.device.pci.bdf
        if not self.sos_alive:
            raise WarmAttachRefused(f"{bdf}: PSP SOS is not running (C2PMSG_81 reads 0)")
        address = self._reg(69).read() | self._reg(70).read() << 32
        size = self._reg(71).read()
        if (address, size) != (self.ring_buffer.mc_address, PSP_RING_SIZE):
            ours = self.ring_buffer.mc_address
            raise WarmAttachRefused(f"{bdf}: PSP KM ring registers say MC {address:#x} + {size:#x}, this "
                                    f"block's ring is MC {ours:#x} + {PSP_RING_SIZE:#x}")
        control = self._reg(64).read()
        if control & (MBOX_READY | gfx.GFX_CMD_STATUS_MASK) != MBOX_READY:
            raise WarmAttachRefused(f"{bdf}: PSP C2PMSG_64 reads {control:#010x}: the KM ring is not idle")
        self.sos_version = self._reg(58).read()
        self.fence_value = self.fence_buffer.view.read32(0)
        tmr_size = self.device.memory.held_size("psp tmr")
        if tmr_size is None:
            raise WarmAttachRefused(f"{bdf}: the boot layout records no PSP TMR")
        self.tmr = self.device.memory.alloc_vram(tmr_size, alignment=PSP_TMR_ALIGNMENT, purpose="psp tmr")
        self.ring_created = True
        self.tmr_set_up = True
        log.info("%s: PSP SOS %#x attached warm: ring at MC %#x, fence %d, TMR at MC %#x", bdf,
                 self.sos_version, address, self.fence_value, self.tmr.mc_address)

    def _flush_hdp(self) -> None:
        try:
            hdp = self.device.block("HDP")
        except LookupError:
            return
        hdp.flush()

    def _bootloader(self) -> None:
        """psp_hw_start's bootloader phase: each packaged component, then SOS."""
        for name, command in BOOTLOADER_SEQUENCE:
            binary = self._binary(name)
            if binary is not None:
                self._bootloader_load(name, binary, command)
        sos = self._binary("SOS")
        if sos is None:
            raise FirmwareError(f"{self.sos_image.name}: psp_fw_bin: no SOS binary to boot")
        self._bootloader_load("SOS", sos, PSP_BL__LOAD_SOSDRV)
        self._wait_sos_alive()

    def _binary(self, name: str):
        for binary in self.sos_image.binaries:
            if binary.name == name and binary.size:
                return binary
        return None

    def _copy_to_private(self, name: str, payload: memoryview) -> None:
        """psp_copy_fw: the private buffer cleared, the binary at its start."""
        if len(payload) > PSP_1_MEG:
            raise FirmwareError(f"{self.sos_image.name}: {name}: {len(payload)} bytes do not fit the "
                                f"{PSP_1_MEG}-byte PSP private buffer")
        view = self.private_buffer.view
        view.write(0, bytes(PSP_1_MEG))
        view.write(0, payload)
        self._flush_hdp()

    def _wait_bootloader(self, what: str) -> int:
        config = self.device.config
        value = poll(self.device, self._reg(35), MBOX_READY, MBOX_READY, config.psp_mailbox_timeout_s,
                     f"the PSP bootloader to be ready {what}")
        return value

    def _bootloader_load(self, name: str, binary, command: int) -> None:
        """psp_v13_0_bootloader_load_component."""
        self._check_bootloader_status(name, self._wait_bootloader(f"for {name}"), "before")
        self._copy_to_private(name, binary.payload)
        self._reg(36).write(self.private_buffer.mc_address >> PRIVATE_BUFFER_SHIFT)
        self._reg(35).write(command)
        if command == PSP_BL__LOAD_SOSDRV:
            return  # the SOS answers through C2PMSG_81
        self._check_bootloader_status(name, self._wait_bootloader(f"after loading {name}"), "after")

    def _check_bootloader_status(self, name: str, value: int, when: str) -> None:
        error = value & BOOTLOADER_ERROR_MASK
        if error:
            raise FirmwareError(
                f"{self.device.pci.bdf}: PSP bootloader rejected {name} from {self.sos_image.name}: "
                f"C2PMSG_35 reads {value:#010x} (error {error:#x}) {when} the load")

    def _wait_sos_alive(self) -> None:
        """psp_v13_0_bootloader_load_sos: wait for the sign of life in C2PMSG_81; a bootloader error
        in C2PMSG_35 ends the wait at once."""
        os = self.device.pci.os
        timeout = self.device.config.psp_mailbox_timeout_s
        deadline = os.monotonic() + timeout
        sign = self._reg(81)
        mailbox = self._reg(35)
        while True:
            if sign.read():
                return
            status = mailbox.read()
            if status & MBOX_READY:
                self._check_bootloader_status("SOS", status, "after")
            if os.monotonic() >= deadline:
                raise DeviceTimeout(
                    f"{self.device.pci.bdf}: PSP regMP0_SMN_C2PMSG_81 stayed 0 for {timeout} s after "
                    f"LOAD_SOSDRV: the SOS did not start (C2PMSG_35 last read {status:#010x})")
            os.sleep(MAILBOX_POLL_S)

    # -- KM ring ----------------------------------------------------------------------------------
    def _create_ring(self) -> None:
        """psp_v13_0_ring_create (bare metal)."""
        timeout = self.device.config.psp_mailbox_timeout_s
        control = self._reg(64)
        poll(self.device, control, MBOX_READY, MBOX_READY, timeout, "the PSP SOS to accept ring creation")
        address = self.ring_buffer.mc_address
        self.ring_buffer.view.write(0, bytes(PSP_RING_SIZE))
        self._reg(69).write(address & LOW_32_BITS)
        self._reg(70).write(address >> 32)
        self._reg(71).write(PSP_RING_SIZE)
        control.write(PSP_RING_TYPE__KM << 16)
        value = poll(self.device, control, MBOX_READY, MBOX_READY, timeout, "the PSP KM ring creation")
        status = value & gfx.GFX_CMD_STATUS_MASK
        if status:
            raise FirmwareError(f"{self.device.pci.bdf}: PSP ring create (KM, {PSP_RING_SIZE:#x} bytes at "
                                f"MC {address:#x}) failed: C2PMSG_64 status {status:#06x}")
        self.ring_created = True

    def _destroy_ring(self) -> None:
        """psp_v13_0_ring_stop."""
        control = self._reg(64)
        control.write(gfx.GFX_CTRL_CMD_ID_DESTROY_RINGS)
        value = poll(self.device, control, MBOX_READY, MBOX_READY, self.device.config.psp_mailbox_timeout_s,
                     "the PSP to destroy the KM ring")
        self.ring_created = False
        status = value & gfx.GFX_CMD_STATUS_MASK
        if status:
            raise FirmwareError(f"{self.device.pci.bdf}: PSP ring destroy failed: C2PMSG_64 status "
                                f"{status:#06x}")

    def submit(self, cmd_id: int, fill: Callable | None = None, what: str = ""):
        """psp_cmd_submit_buf: one command through the KM ring; returns the response (psp_gfx_resp).

        A non-zero status is a FirmwareError naming the command, `what` and the status."""
        device = self.device
        cmd = gfx.psp_gfx_cmd_resp(cmd_id=cmd_id)
        if fill is not None:
            fill(cmd.cmd)
        self.cmd_buffer.view.write(0, bytes(PSP_CMD_BUFFER_SIZE))
        self.cmd_buffer.view.write(0, bytes(cmd))
        self.fence_value += 1
        fence = self.fence_value
        wptr_register = self._reg(67)
        wptr = wptr_register.read()
        ring_dwords = PSP_RING_SIZE // 4
        frame_dwords = gfx.psp_gfx_rb_frame.SIZE // 4
        slot = (wptr % ring_dwords) * 4
        frame = gfx.psp_gfx_rb_frame(cmd_buf_addr_lo=self.cmd_buffer.mc_address & LOW_32_BITS,
                                     cmd_buf_addr_hi=self.cmd_buffer.mc_address >> 32,
                                     fence_addr_lo=self.fence_buffer.mc_address & LOW_32_BITS,
                                     fence_addr_hi=self.fence_buffer.mc_address >> 32, fence_value=fence)
        self.ring_buffer.view.write(slot, bytes(frame))
        self._flush_hdp()
        wptr_register.write((wptr + frame_dwords) % ring_dwords)
        name = command_name(cmd_id) + (f" ({what})" if what else "")
        self._wait_fence(fence, name)
        resp = gfx.psp_gfx_resp.from_bytes(
            self.cmd_buffer.view.read(gfx.psp_gfx_cmd_resp.offset_of("resp"), gfx.psp_gfx_resp.SIZE))
        if resp.status != gfx.TEE_SUCCESS:
            raise FirmwareError(f"{device.pci.bdf}: PSP command {name} failed with status "
                                f"{status_name(resp.status)} ({resp.status:#010x})")
        return resp

    def _wait_fence(self, fence: int, name: str) -> None:
        os = self.device.pci.os
        timeout = self.device.config.psp_command_timeout_s
        deadline = os.monotonic() + timeout
        view = self.fence_buffer.view
        value = view.read32(0)  # a read of all ones asks hal whether the device is still there
        while value != fence:
            if os.monotonic() >= deadline:
                raise DeviceTimeout(
                    f"{self.device.pci.bdf}: PSP command {name}: the fence at MC "
                    f"{self.fence_buffer.mc_address:#x} did not reach {fence} within {timeout} s "
                    f"(last value {value:#x}; C2PMSG_64 {self._reg(64).read():#010x}, write pointer "
                    f"C2PMSG_67 {self._reg(67).read():#x})")
            os.sleep(FENCE_POLL_S)
            value = view.read32(0)

    # -- commands ---------------------------------------------------------------------------------
    def _load_toc(self) -> int:
        """psp_load_toc: the TOC in the private buffer; the answer is the TMR size."""
        toc = self._binary("TOC")
        if toc is None:
            return PSP_TMR_SIZE
        self._copy_to_private("TOC", toc.payload)
        address = self.private_buffer.mc_address

        def fill(commands) -> None:
            commands.cmd_load_toc.toc_phy_addr_lo = address & LOW_32_BITS
            commands.cmd_load_toc.toc_phy_addr_hi = address >> 32
            commands.cmd_load_toc.toc_size = toc.size

        resp = self.submit(gfx.GFX_CMD_ID_LOAD_TOC, fill, f"{self.sos_image.name} TOC")
        return resp.tmr_size or PSP_TMR_SIZE

    def _setup_tmr(self) -> None:
        """psp_tmr_load / psp_prep_tmr_cmd_buf."""
        tmr = self.tmr
        system = tmr.offset + self.device.memory.vram_base_offset  # amdgpu_gmc_vram_pa

        def fill(commands) -> None:
            args = commands.cmd_setup_tmr
            args.buf_phy_addr_lo = tmr.mc_address & LOW_32_BITS
            args.buf_phy_addr_hi = tmr.mc_address >> 32
            args.buf_size = tmr.size
            args.bitfield.virt_phy_addr = 1
            args.system_phy_addr_lo = system & LOW_32_BITS
            args.system_phy_addr_hi = system >> 32

        self.submit(gfx.GFX_CMD_ID_SETUP_TMR, fill, f"{tmr.size:#x} bytes at MC {tmr.mc_address:#x}")
        self.tmr_set_up = True

    def load_ip_firmware(self, section) -> None:
        """psp_execute_ip_fw_load: LOAD_IP_FW of one ucode section from the firmware buffer."""
        address = self.ucode_buffer.mc_address + self.ucode_offsets[section.ucode_id]
        fw_type = FW_TYPE_OF_UCODE[section.ucode_id]

        def fill(commands) -> None:
            args = commands.cmd_load_ip_fw
            args.fw_phy_addr_lo = address & LOW_32_BITS
            args.fw_phy_addr_hi = address >> 32
            args.fw_size = section.size
            args.fw_type = fw_type

        self.submit(gfx.GFX_CMD_ID_LOAD_IP_FW, fill,
                    f"{section.name} from {self.file_of.get(section.ucode_id, '?')}")

    # -- teardown ---------------------------------------------------------------------------------
    def hw_fini(self) -> None:
        """psp_hw_fini: DESTROY_TMR, then the ring; every step runs, the first failure is raised."""
        failures: list[Exception] = []
        if self.tmr_set_up and self.ring_created:
            try:
                self.submit(gfx.GFX_CMD_ID_DESTROY_TMR)
            except Exception as exc:
                failures.append(exc)
            self.tmr_set_up = False
        if self.ring_created:
            try:
                self._destroy_ring()
            except Exception as exc:
                failures.append(exc)
        if self.tmr is not None:
            self.device.memory.free_vram(self.tmr)
            self.tmr = None
        if failures:
            raise failures[0]
