"""The PSP (MP0 13.0.0) of the mock Navi31: bootloader handshake, KM ring, GFX commands.

What amdgpu (drivers/gpu/drm/amd/amdgpu/psp_v13_0.c, amdgpu_psp.c, psp_gfx_if.h) talks to, seen from
the hardware side:
- the bootloader, while no SOS runs: C2PMSG_35 reads READY (bit 31) when it takes a command; the
  driver copies a component into its 1 MiB private buffer in VRAM, writes the buffer's MC address
  >> 20 to C2PMSG_36 and the command (PSP_BL__LOAD_*) to C2PMSG_35. The model reads the image from
  VRAM at that address, checks its PSP image header (sizes, magic) and the order of the components,
  and answers READY, or READY with an error code in bits 7:0. LOAD_SOSDRV starts the SOS;
- the SOS: C2PMSG_81 (sign of life) reads non-zero and keeps changing while it runs, C2PMSG_58
  holds its version, C2PMSG_64 reads READY (bit 31) when it takes a ring command;
- the KM ring: C2PMSG_69/70 (ring MC address), C2PMSG_71 (size), C2PMSG_64 = ring type << 16
  creates it, GFX_CTRL_CMD_ID_DESTROY_RINGS destroys it; answers are READY | status (low 16 bits);
- frames (psp_gfx_rb_frame) in the ring, consumed when the driver writes the write pointer (dwords)
  to C2PMSG_67: each names a command buffer (psp_gfx_cmd_resp) in VRAM, a fence address and value.
  The model executes the command, writes resp.status (and resp fields) into the command buffer,
  then the fence value to the fence address;
- commands: LOAD_TOC (answers the TMR size), SETUP_TMR, LOAD_IP_FW, AUTOLOAD_RLC, DESTROY_TMR,
  LOAD_ASD/LOAD_TA (session ids); wrong order or malformed arguments get TEE_ERROR_* statuses,
  unknown command ids PSP_ERR_UNKNOWN_COMMAND.

State lives in the model (the Machine), not in the register file, so it survives the driver's
process. Fault hooks: `hang` (never answers: no READY, no fences; `resume()` ends it and runs the
last mailbox command and the frames it took meanwhile), `fail_commands` (a GFX command
id -> the status to answer with), `error_status` (every GFX command answered with it),
`bootloader_error` (the next bootloader command fails with it), `response_delay_s` (frames run that
long after the write pointer moves: a slow SOS).
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import TYPE_CHECKING

from autogen.amd import psp_gfx_if as gfx

if TYPE_CHECKING:
    from mockgpu.amd.gpu import Navi31GPU

# amdgpu_psp.h enum psp_bootloader_cmd (not generated: the header needs the whole amdgpu.h)
PSP_BL__LOAD_SYSDRV = 0x10000
PSP_BL__LOAD_SOSDRV = 0x20000
PSP_BL__LOAD_KEY_DATABASE = 0x80000
PSP_BL__LOAD_SOCDRV = 0xB0000
PSP_BL__LOAD_DBGDRV = 0xC0000
PSP_BL__LOAD_INTFDRV = 0xD0000
PSP_BL__LOAD_RASDRV = 0xE0000
PSP_BL__LOAD_IPKEYMGRDRV = 0xF0000
PSP_BL__LOAD_TOS_SPL_TABLE = 0x10000000
# amdgpu_psp.h enum psp_ring_type: the KM (GPCOM) ring
PSP_RING_TYPE__KM = 2

# the order psp_hw_start (amdgpu_psp.c) loads components in; the model refuses a component after
# one that comes later in it (a key database after the drivers it signs, a second SYS_DRV...)
BOOTLOADER_ORDER = (PSP_BL__LOAD_KEY_DATABASE, PSP_BL__LOAD_TOS_SPL_TABLE, PSP_BL__LOAD_SYSDRV,
                    PSP_BL__LOAD_SOCDRV, PSP_BL__LOAD_INTFDRV, PSP_BL__LOAD_DBGDRV,
                    PSP_BL__LOAD_RASDRV, PSP_BL__LOAD_IPKEYMGRDRV, PSP_BL__LOAD_SOSDRV)
BOOTLOADER_NAMES = {PSP_BL__LOAD_KEY_DATABASE: "KEY_DATABASE", PSP_BL__LOAD_TOS_SPL_TABLE: "TOS_SPL_TABLE",
                    PSP_BL__LOAD_SYSDRV: "SYSDRV", PSP_BL__LOAD_SOCDRV: "SOCDRV",
                    PSP_BL__LOAD_INTFDRV: "INTFDRV", PSP_BL__LOAD_DBGDRV: "DBGDRV",
                    PSP_BL__LOAD_RASDRV: "RASDRV", PSP_BL__LOAD_IPKEYMGRDRV: "IPKEYMGRDRV",
                    PSP_BL__LOAD_SOSDRV: "SOSDRV"}

# psp_v13_0.c: MBOX_READY_FLAG / MBOX_STATUS_MASK; the bootloader's error code sits in bits 7:0
# (psp_v13_0_wait_for_bootloader, documented there for 13.0.6 on; the values are not published,
# these three are the model's own)
MBOX_READY = 0x80000000
BOOTLOADER_ERROR_MASK = 0xFF
BL_ERROR_BAD_IMAGE = 0x01      # the PSP image header does not describe a loadable image
BL_ERROR_BAD_ORDER = 0x02      # the component comes after one that must follow it
BL_ERROR_BAD_ADDRESS = 0x03    # the private buffer does not lie in VRAM
BL_ERROR_UNKNOWN_COMMAND = 0x04

# amdgpu_psp.h: PSP_1_MEG, the size of the firmware private buffer (and PSP_TMR_ALIGNMENT)
PSP_1_MEG = 0x100000
PRIVATE_BUFFER_SHIFT = 20  # psp_v13_0.c: C2PMSG_36 = fw_pri_mc_addr >> 20
FB_UNIT_SHIFT = 24  # mmhub_v3_0.c mmhub_v3_0_get_fb_location: FB_BASE counts 16 MiB units
PSP_TMR_ALIGNMENT = 0x100000
# amdgpu_psp.c psp_ring_init: the ring is one GPU page, allocated PAGE_SIZE-aligned
PSP_RING_ALIGNMENT = 0x1000
LOW_32_BITS = 0xFFFFFFFF  # lower_32_bits(): an address's _lo register half

# The 256-byte header every PSP image in psp_13_0_0_sos.bin / _ta.bin starts with, as the files of
# firmware-amd-graphics 20230210-5 show it (no kernel header describes it): "$PS1" at 0x10 (the
# key database has zeros there), the signed body size at 0x14, the firmware version at 0x60, the
# whole image size at 0x6C = header + body + a 256-byte signature.
IMAGE_HEADER_SIZE = 0x100
IMAGE_SIGNATURE_SIZE = 0x100
IMAGE_MAGIC_OFFSET = 0x10
IMAGE_MAGIC = b"$PS1"
IMAGE_SIGNED_SIZE_OFFSET = 0x14
IMAGE_VERSION_OFFSET = 0x60
IMAGE_TOTAL_SIZE_OFFSET = 0x6C

# GlobalPlatform TEE Client API v1.0 result codes (the table psp_gfx_if.h's TEE_ERROR_CANCEL
# 0xFFFF0002 and TEE_ERROR_NOT_SUPPORTED 0xFFFF000A come from); the header names no others
TEE_ERROR_BAD_FORMAT = 0xFFFF0005
TEE_ERROR_BAD_PARAMETERS = 0xFFFF0006
TEE_ERROR_BAD_STATE = 0xFFFF0007

# the TMR size the SOS answers to LOAD_TOC: it computes it from the TOC's entries, how is not
# published; the model answers amdgpu's fallback PSP_TMR_SIZE (amdgpu_psp.h, 4 MiB) plus 1 MiB so
# a driver that ignores the answer is caught
TOC_TMR_SIZE = 0x500000

FRAME_DWORDS = gfx.psp_gfx_rb_frame.SIZE // 4
RESP_OFFSET = gfx.psp_gfx_cmd_resp.offset_of("resp")
STATUS_OFFSET = RESP_OFFSET + gfx.psp_gfx_resp.offset_of("status")

# the firmware the Navi31 SOS takes through LOAD_IP_FW: what amdgpu_psp.c psp_get_fw_type maps
# the GC 11.0.0 / SDMA 6.0.0 / SMU 13.0.0 ucode ids to
NAVI31_FW_TYPES = frozenset({
    gfx.GFX_FW_TYPE_SDMA_UCODE_TH0, gfx.GFX_FW_TYPE_SDMA_UCODE_TH1,
    gfx.GFX_FW_TYPE_RS64_PFP, gfx.GFX_FW_TYPE_RS64_ME, gfx.GFX_FW_TYPE_RS64_MEC,
    gfx.GFX_FW_TYPE_RS64_PFP_P0_STACK, gfx.GFX_FW_TYPE_RS64_PFP_P1_STACK,
    gfx.GFX_FW_TYPE_RS64_ME_P0_STACK, gfx.GFX_FW_TYPE_RS64_ME_P1_STACK,
    gfx.GFX_FW_TYPE_RS64_MEC_P0_STACK, gfx.GFX_FW_TYPE_RS64_MEC_P1_STACK,
    gfx.GFX_FW_TYPE_RS64_MEC_P2_STACK, gfx.GFX_FW_TYPE_RS64_MEC_P3_STACK,
    gfx.GFX_FW_TYPE_CP_MES, gfx.GFX_FW_TYPE_MES_STACK, gfx.GFX_FW_TYPE_CP_MES_KIQ,
    gfx.GFX_FW_TYPE_MES_KIQ_STACK, gfx.GFX_FW_TYPE_IMU_I, gfx.GFX_FW_TYPE_IMU_D,
    gfx.GFX_FW_TYPE_RLC_G, gfx.GFX_FW_TYPE_RLC_P, gfx.GFX_FW_TYPE_RLC_V, gfx.GFX_FW_TYPE_RLC_IRAM,
    gfx.GFX_FW_TYPE_RLC_DRAM_BOOT, gfx.GFX_FW_TYPE_RLC_RESTORE_LIST_SRM_CNTL,
    gfx.GFX_FW_TYPE_RLC_RESTORE_LIST_GPM_MEM, gfx.GFX_FW_TYPE_RLC_RESTORE_LIST_SRM_MEM,
    gfx.GFX_FW_TYPE_SMU, gfx.GFX_FW_TYPE_PPTABLE, gfx.GFX_FW_TYPE_P2S_TABLE,
})
RESET_KINDS = ("power_on", "pci", "mode1")
SDMA_FW_TYPES = frozenset({gfx.GFX_FW_TYPE_SDMA_UCODE_TH0, gfx.GFX_FW_TYPE_SDMA_UCODE_TH1})


class BadImage(ValueError):
    """A PSP image whose header the bootloader (or SOS) refuses."""


def check_image(data: bytes | memoryview, limit: int) -> int:
    """The image size the header at the start of `data` declares; BadImage when it is not sane.

    The sizes must agree (header + signed body + signature) and fit `limit`; the magic is "$PS1"
    or absent (the key database's)."""
    if len(data) < IMAGE_HEADER_SIZE:
        raise BadImage(f"{len(data)} bytes, shorter than the {IMAGE_HEADER_SIZE}-byte image header")
    magic = bytes(data[IMAGE_MAGIC_OFFSET:IMAGE_MAGIC_OFFSET + len(IMAGE_MAGIC)])
    if magic not in (IMAGE_MAGIC, bytes(len(IMAGE_MAGIC))):
        raise BadImage(f"magic {magic!r} at {IMAGE_MAGIC_OFFSET:#x} is not {IMAGE_MAGIC!r}")
    signed = int.from_bytes(data[IMAGE_SIGNED_SIZE_OFFSET:IMAGE_SIGNED_SIZE_OFFSET + 4], "little")
    total = int.from_bytes(data[IMAGE_TOTAL_SIZE_OFFSET:IMAGE_TOTAL_SIZE_OFFSET + 4], "little")
    if not signed or total != IMAGE_HEADER_SIZE + signed + IMAGE_SIGNATURE_SIZE:
        raise BadImage(f"image size {total:#x} at {IMAGE_TOTAL_SIZE_OFFSET:#x} is not header + signed "
                       f"body {signed:#x} + signature")
    if total > limit:
        raise BadImage(f"image size {total:#x} exceeds the {limit:#x} bytes it may occupy")
    return total


def stamp_image_header(payload: bytearray, version: int) -> None:
    """Write a PSP image header over the first 256 bytes of `payload` (synthetic firmware)."""
    size = len(payload)
    payload[:IMAGE_HEADER_SIZE] = bytes(IMAGE_HEADER_SIZE)
    payload[IMAGE_MAGIC_OFFSET:IMAGE_MAGIC_OFFSET + len(IMAGE_MAGIC)] = IMAGE_MAGIC
    signed = size - IMAGE_HEADER_SIZE - IMAGE_SIGNATURE_SIZE
    payload[IMAGE_SIGNED_SIZE_OFFSET:IMAGE_SIGNED_SIZE_OFFSET + 4] = signed.to_bytes(4, "little")
    payload[IMAGE_VERSION_OFFSET:IMAGE_VERSION_OFFSET + 4] = version.to_bytes(4, "little")
    payload[IMAGE_TOTAL_SIZE_OFFSET:IMAGE_TOTAL_SIZE_OFFSET + 4] = size.to_bytes(4, "little")


@dataclasses.dataclass(frozen=True)
class LoadedFirmware:
    """One LOAD_IP_FW the SOS accepted: the GFX_FW_TYPE, where it came from, its digest."""

    fw_type: int
    mc_address: int
    size: int
    sha256: str


class PSPModel:
    """MP0 13.0.0 as the driver sees it through C2PMSG registers and VRAM (module docstring)."""

    def __init__(self, gpu: "Navi31GPU") -> None:
        self.gpu = gpu
        self.hang = False
        self.fail_commands: dict[int, int] = {}
        self.error_status: int | None = None
        self.bootloader_error: int | None = None
        self.response_delay_s = 0.0
        self._taken_while_hung: list = []  # mailbox writes a hung PSP took; `resume` runs them
        self.toc_tmr_size = TOC_TMR_SIZE
        self.commands: list[tuple[int, int]] = []  # (cmd_id, status) of each executed frame
        self.errors: list[str] = []  # what the model refused, and why (for tests and debugging)
        self._sign_of_life = 0
        self._install()
        self.reset("power_on")

    # -- state ------------------------------------------------------------------------------------
    def reset(self, kind: str) -> None:
        """What a reset does to the PSP.

        power_on and mode1: the PSP reboots into its bootloader (amdgpu_psp.c psp_resume and
        amdgpu_device.c amdgpu_device_mode1_reset reload every component afterwards; psp_v13_0's
        is_sos_alive reads 0). pci (FLR, bus reset): whether MP0 restarts is not documented.
        amdgpu never picks one on soc21 (soc21.c soc21_asic_reset_method has no PCI case); after
        the PCI core's bus reset of error recovery (amdgpu_device.c amdgpu_pci_slot_reset) it
        re-inits with no ASIC reset, and psp_v13_0's bootloader steps skip when C2PMSG_81 is
        non-zero, so it handles either outcome. The model keeps the SOS, its ring and its TMR: the
        case that needs soc21.c soc21_need_reset_on_init's mode1 before a driver's init. Without
        an SOS (a bootloader sequence cut short) it restarts the bootloader, so the driver's
        sequence from KDB is accepted again, as it is after power-on."""
        if kind not in RESET_KINDS:
            raise ValueError(f"unknown reset kind {kind!r} (kinds: {', '.join(RESET_KINDS)})")
        if kind == "pci" and getattr(self, "sos_alive", False):
            return
        self._taken_while_hung = []
        self.loaded_components: list[int] = []
        self.sos_alive = False
        self.sos_version = 0
        self.bootloader_status = MBOX_READY
        self.ring_control = 0
        self.ring: tuple[int, int] | None = None  # (MC address, bytes)
        self.wptr = 0
        self.rptr = 0
        self.toc_loaded = False
        self.tmr: tuple[int, int] | None = None
        self.loaded: dict[int, LoadedFirmware] = {}
        self.autoload_started = False
        self.sessions = 0
        self.bootloader_error = None

    def resume(self) -> None:
        """The end of a `hang`: the firmware goes on with what it took meanwhile (the last
        bootloader or ring command written to its mailbox, the frames the write pointer names)."""
        self.hang = False
        taken = self._taken_while_hung[-1:]
        self._taken_while_hung = []
        for command in taken:
            command()
        self._run_frames()

    def start_sos(self, version: int = 0x310025) -> None:
        """Put the PSP in the "SOS already alive" state a previous driver leaves behind."""
        self.loaded_components = list(BOOTLOADER_ORDER)
        self._sos_started(version)

    def _sos_started(self, version: int) -> None:
        self.sos_alive = True
        self.sos_version = version
        self.ring_control = MBOX_READY  # psp_v13_0_ring_create waits for this before creating

    # -- registers --------------------------------------------------------------------------------
    def _install(self) -> None:
        regfile = self.gpu.regfile
        reg = "regMP0_SMN_C2PMSG_"
        self._private = regfile.own("MP0", reg + "36")
        regfile.own("MP0", reg + "35", read=lambda: self.bootloader_status, write=self._bootloader_command)
        regfile.own("MP0", reg + "58", read=lambda: self.sos_version, write=lambda value: None)
        regfile.own("MP0", reg + "64", read=lambda: self.ring_control, write=self._ring_command)
        regfile.own("MP0", reg + "67", read=lambda: self.wptr, write=self._set_wptr)
        self._ring_lo = regfile.own("MP0", reg + "69")
        self._ring_hi = regfile.own("MP0", reg + "70")
        self._ring_size = regfile.own("MP0", reg + "71")
        regfile.own("MP0", reg + "81", read=self._read_sign_of_life, write=lambda value: None)

    def _read_sign_of_life(self) -> int:
        """Zero while no SOS runs; then a value that moves on every read: psp_v13_0_bootloader_load_sos
        waits for C2PMSG_81 to change (psp_wait_for with check_changed) after LOAD_SOSDRV."""
        if not self.sos_alive:
            return 0
        self._sign_of_life = (self._sign_of_life % 0xFFFF) + 1
        return self._sign_of_life

    # -- memory -----------------------------------------------------------------------------------
    def fb_base(self) -> int:
        """MC address of VRAM offset 0: MMHUB FB_LOCATION_BASE as the IFWI programs it."""
        register = self.gpu.regfile.register("MMHUB", "regMMMC_VM_FB_LOCATION_BASE")
        value = self.gpu.regfile.get("MMHUB", "regMMMC_VM_FB_LOCATION_BASE")
        field = register.field("FB_BASE")
        return field.decode(value) << FB_UNIT_SHIFT

    def vram_offset(self, mc_address: int, size: int) -> int | None:
        """The VRAM offset of [mc_address, +size), or None when it does not lie in VRAM."""
        offset = mc_address - self.fb_base()
        if offset < 0 or size < 0 or offset + size > self.gpu.vram_size:
            return None
        return offset

    def _read_u32(self, offset: int) -> int:
        return int.from_bytes(self.gpu.vram[offset:offset + 4], "little")

    # -- bootloader -------------------------------------------------------------------------------
    def _bootloader_command(self, value: int) -> None:
        if self.sos_alive:
            self.errors.append(f"bootloader command {value:#x} while the SOS runs: nobody listens")
            return
        self.bootloader_status = 0  # busy
        if self.hang:
            self._taken_while_hung.append(lambda: self._bootloader_command(value))
            return
        error = self.bootloader_error
        self.bootloader_error = None
        if error is None:
            error = self._bootloader_load(value)
        self.bootloader_status = MBOX_READY | (error & BOOTLOADER_ERROR_MASK)
        if not error and value == PSP_BL__LOAD_SOSDRV:
            version = self._read_u32(self._private_offset + IMAGE_VERSION_OFFSET)
            self._sos_started(version)

    def _bootloader_load(self, command: int) -> int:
        name = BOOTLOADER_NAMES.get(command)
        if name is None:
            self.errors.append(f"bootloader: unknown command {command:#x}")
            return BL_ERROR_UNKNOWN_COMMAND
        mc_address = self.gpu.regfile.peek(self._private) << PRIVATE_BUFFER_SHIFT
        offset = self.vram_offset(mc_address, PSP_1_MEG)
        if offset is None:
            self.errors.append(f"bootloader {name}: private buffer at MC {mc_address:#x} is not in VRAM")
            return BL_ERROR_BAD_ADDRESS
        self._private_offset = offset
        try:
            check_image(self.gpu.vram[offset:offset + PSP_1_MEG], PSP_1_MEG)
        except BadImage as exc:
            self.errors.append(f"bootloader {name}: {exc}")
            return BL_ERROR_BAD_IMAGE
        rank = BOOTLOADER_ORDER.index(command)
        if self.loaded_components and BOOTLOADER_ORDER.index(self.loaded_components[-1]) >= rank:
            last = BOOTLOADER_NAMES[self.loaded_components[-1]]
            self.errors.append(f"bootloader {name}: after {last}")
            return BL_ERROR_BAD_ORDER
        if command == PSP_BL__LOAD_SOSDRV and PSP_BL__LOAD_SYSDRV not in self.loaded_components:
            self.errors.append("bootloader SOSDRV: no SYSDRV to run it on")
            return BL_ERROR_BAD_ORDER
        self.loaded_components.append(command)
        return 0

    # -- KM ring ----------------------------------------------------------------------------------
    def _ring_command(self, value: int) -> None:
        self.ring_control = value & ~MBOX_READY  # taken: READY drops until the answer
        if self.hang and self.sos_alive:
            self._taken_while_hung.append(lambda: self._ring_command(value))
        if not self.sos_alive or self.hang:
            return  # no SOS: nothing answers C2PMSG_64
        command = value & gfx.GFX_CMD_ID_MASK
        if command == gfx.GFX_CTRL_CMD_ID_INIT_GPCOM_RING:
            status = self._create_ring()
        elif command == gfx.GFX_CTRL_CMD_ID_DESTROY_RINGS:
            self.ring = None
            self.wptr = 0
            self.rptr = 0
            status = 0
        else:
            self.errors.append(f"ring control: unknown command {value:#x}")
            status = gfx.PSP_ERR_UNKNOWN_COMMAND
        self.ring_control = MBOX_READY | (status & gfx.GFX_CMD_STATUS_MASK)

    def _create_ring(self) -> int:
        regfile = self.gpu.regfile
        address = regfile.peek(self._ring_lo) | regfile.peek(self._ring_hi) << 32
        size = regfile.peek(self._ring_size)
        # a re-create replaces the ring: amdgpu's psp_v13_0_ring_create does not stop one first on
        # bare metal, and whether the SOS refuses is not documented
        if not size or size % gfx.psp_gfx_rb_frame.SIZE or address % PSP_RING_ALIGNMENT:
            self.errors.append(f"ring create: address {address:#x} size {size:#x}")
            return TEE_ERROR_BAD_PARAMETERS
        if self.vram_offset(address, size) is None:
            self.errors.append(f"ring create: [{address:#x}, +{size:#x}) is not in VRAM")
            return TEE_ERROR_BAD_PARAMETERS
        self.ring = (address, size)
        self.wptr = 0
        self.rptr = 0
        return 0

    def _set_wptr(self, value: int) -> None:
        self.wptr = value
        if self.ring is None or self.hang or not self.sos_alive:
            return
        _, size = self.ring
        ring_dwords = size // 4
        if value >= ring_dwords or value % FRAME_DWORDS:
            self.errors.append(f"write pointer {value:#x} is not a frame of the {size:#x}-byte ring")
            return
        machine = self.gpu.machine
        if self.response_delay_s > 0 and machine is not None:
            machine.schedule(self.response_delay_s, self._run_frames)
            return
        self._run_frames()

    def _run_frames(self) -> None:
        if self.ring is None or self.hang or not self.sos_alive:
            return
        ring_dwords = self.ring[1] // 4
        while self.rptr != self.wptr:
            self._run_frame(self.rptr * 4)
            self.rptr = (self.rptr + FRAME_DWORDS) % ring_dwords

    def _run_frame(self, ring_byte: int) -> None:
        address, _ = self.ring
        start = self.vram_offset(address, 0) + ring_byte
        frame = gfx.psp_gfx_rb_frame.from_bytes(self.gpu.vram[start:start + gfx.psp_gfx_rb_frame.SIZE])
        cmd_address = frame.cmd_buf_addr_lo | frame.cmd_buf_addr_hi << 32
        fence_address = frame.fence_addr_lo | frame.fence_addr_hi << 32
        cmd_offset = self.vram_offset(cmd_address, gfx.psp_gfx_cmd_resp.SIZE)
        fence_offset = self.vram_offset(fence_address, 4)
        if cmd_offset is None or fence_offset is None or fence_address % 4:
            self.errors.append(f"frame at ring byte {ring_byte:#x}: command {cmd_address:#x} or fence "
                               f"{fence_address:#x} not in VRAM")
            return
        cmd = gfx.psp_gfx_cmd_resp.from_buffer(self.gpu.vram, cmd_offset)
        status = self.fail_commands.get(cmd.cmd_id, self.error_status)
        if status is None:
            status = self._execute(cmd)
        cmd.resp.status = status
        self.commands.append((cmd.cmd_id, status))
        self.gpu.vram[fence_offset:fence_offset + 4] = frame.fence_value.to_bytes(4, "little")

    # -- GFX commands -----------------------------------------------------------------------------
    def _execute(self, cmd) -> int:
        handler = {gfx.GFX_CMD_ID_LOAD_TOC: self._load_toc, gfx.GFX_CMD_ID_SETUP_TMR: self._setup_tmr,
                   gfx.GFX_CMD_ID_LOAD_IP_FW: self._load_ip_fw, gfx.GFX_CMD_ID_AUTOLOAD_RLC: self._autoload,
                   gfx.GFX_CMD_ID_DESTROY_TMR: self._destroy_tmr, gfx.GFX_CMD_ID_LOAD_ASD: self._load_ta,
                   gfx.GFX_CMD_ID_LOAD_TA: self._load_ta}.get(cmd.cmd_id)
        if handler is None:
            self.errors.append(f"unknown GFX command {cmd.cmd_id:#x}")
            return gfx.PSP_ERR_UNKNOWN_COMMAND
        return handler(cmd)

    def _refuse(self, status: int, why: str) -> int:
        self.errors.append(why)
        return status

    def _load_toc(self, cmd) -> int:
        args = cmd.cmd.cmd_load_toc
        address = args.toc_phy_addr_lo | args.toc_phy_addr_hi << 32
        offset = self.vram_offset(address, args.toc_size)
        if offset is None or not args.toc_size or args.toc_size > PSP_1_MEG:
            return self._refuse(TEE_ERROR_BAD_PARAMETERS, f"LOAD_TOC: [{address:#x}, +{args.toc_size:#x})")
        try:
            total = check_image(self.gpu.vram[offset:offset + args.toc_size], args.toc_size)
        except BadImage as exc:
            return self._refuse(TEE_ERROR_BAD_FORMAT, f"LOAD_TOC: {exc}")
        if total != args.toc_size:
            return self._refuse(TEE_ERROR_BAD_FORMAT, f"LOAD_TOC: image of {total:#x} bytes, "
                                                      f"toc_size {args.toc_size:#x}")
        self.toc_loaded = True
        cmd.resp.tmr_size = self.toc_tmr_size
        return gfx.TEE_SUCCESS

    def _setup_tmr(self, cmd) -> int:
        args = cmd.cmd.cmd_setup_tmr
        address = args.buf_phy_addr_lo | args.buf_phy_addr_hi << 32
        if self.tmr is not None:
            return self._refuse(TEE_ERROR_BAD_STATE, "SETUP_TMR: a TMR is already set up")
        # amdgpu_psp.c psp_tmr_init: the TMR is allocated PSP_TMR_ALIGNMENT-aligned, "naturally
        # aligned" as the hardware engineers prefer
        if address % PSP_TMR_ALIGNMENT or not args.buf_size:
            return self._refuse(TEE_ERROR_BAD_PARAMETERS, f"SETUP_TMR: address {address:#x} size "
                                                          f"{args.buf_size:#x}")
        offset = self.vram_offset(address, args.buf_size)
        if offset is None:
            return self._refuse(TEE_ERROR_BAD_PARAMETERS, f"SETUP_TMR: [{address:#x}, +{args.buf_size:#x}) "
                                                          "is not in VRAM")
        if self.toc_loaded and args.buf_size < self.toc_tmr_size:
            return self._refuse(TEE_ERROR_BAD_PARAMETERS, f"SETUP_TMR: {args.buf_size:#x} bytes, the TOC "
                                                          f"needs {self.toc_tmr_size:#x}")
        # psp_prep_tmr_cmd_buf: with virt_phy_addr set, system_phy_addr is the TMR's VRAM address
        # (amdgpu_gmc_vram_pa: the offset plus vram_base_offset, 0 on a dGPU)
        system = args.system_phy_addr_lo | args.system_phy_addr_hi << 32
        if args.bitfield.virt_phy_addr and system != offset:
            return self._refuse(TEE_ERROR_BAD_PARAMETERS, f"SETUP_TMR: system address {system:#x} is "
                                                          f"not the TMR's VRAM address {offset:#x}")
        self.tmr = (address, args.buf_size)
        return gfx.TEE_SUCCESS

    def _load_ip_fw(self, cmd) -> int:
        args = cmd.cmd.cmd_load_ip_fw
        address = args.fw_phy_addr_lo | args.fw_phy_addr_hi << 32
        if args.fw_type not in NAVI31_FW_TYPES:
            return self._refuse(gfx.TEE_ERROR_NOT_SUPPORTED, f"LOAD_IP_FW: fw_type {args.fw_type}")
        offset = self.vram_offset(address, args.fw_size)
        if offset is None or not args.fw_size:
            return self._refuse(TEE_ERROR_BAD_PARAMETERS, f"LOAD_IP_FW: [{address:#x}, +{args.fw_size:#x})")
        if not self.toc_loaded:
            return self._refuse(TEE_ERROR_BAD_STATE, "LOAD_IP_FW before LOAD_TOC")
        # psp_hw_start: with pmfw_centralized_cstate_management (MP0 13.0.0) the SMU firmware comes
        # after LOAD_TOC and before SETUP_TMR; every other firmware goes into the TMR
        if self.tmr is None and args.fw_type != gfx.GFX_FW_TYPE_SMU:
            return self._refuse(TEE_ERROR_BAD_STATE, f"LOAD_IP_FW fw_type {args.fw_type} before SETUP_TMR")
        digest = hashlib.sha256(self.gpu.vram[offset:offset + args.fw_size]).hexdigest()
        self.loaded[args.fw_type] = LoadedFirmware(args.fw_type, address, args.fw_size, digest)
        # sdma_v6_0.c: with PSP loading, SDMA runs once the PSP holds both threads' microcode
        sdma = getattr(self.gpu, "sdma", None)
        if sdma is not None and SDMA_FW_TYPES <= self.loaded.keys():
            sdma.firmware_loaded = True
        # amdgpu_psp.c psp_load_smu_fw: the PMFW runs once the PSP loaded it (MP1 answers from then
        # on); a PMFW already running keeps its state (psp_load_smu_fw skips the reload where the
        # SMU stays alive, "as SMU is always alive")
        smu = getattr(self.gpu, "smu", None)
        if smu is not None and args.fw_type == gfx.GFX_FW_TYPE_SMU and not smu.running:
            smu.start()
        if self.tmr is not None:
            cmd.resp.fw_addr_lo = self.tmr[0] & LOW_32_BITS
            cmd.resp.fw_addr_hi = self.tmr[0] >> 32
        return gfx.TEE_SUCCESS

    def _autoload(self, cmd) -> int:
        # psp_load_non_psp_fw starts the RLC autoload once RLC_G is in (the last GC firmware)
        if self.tmr is None or gfx.GFX_FW_TYPE_RLC_G not in self.loaded:
            return self._refuse(TEE_ERROR_BAD_STATE, "AUTOLOAD_RLC without a TMR holding RLC_G")
        self.autoload_started = True
        # psp_rlc_autoload_start: the SOS starts the RLC, which loads the GC firmware from the TMR
        # and reports BOOTLOAD_COMPLETE (mockgpu.amd.rlc)
        rlc = getattr(self.gpu, "rlc", None)
        if rlc is not None:
            rlc.autoload()
        return gfx.TEE_SUCCESS

    def _destroy_tmr(self, cmd) -> int:
        if self.tmr is None:
            return self._refuse(TEE_ERROR_BAD_STATE, "DESTROY_TMR without a TMR")
        self.tmr = None
        self.autoload_started = False
        self.loaded = {fw: info for fw, info in self.loaded.items() if fw == gfx.GFX_FW_TYPE_SMU}
        return gfx.TEE_SUCCESS

    def _load_ta(self, cmd) -> int:
        args = cmd.cmd.cmd_load_ta
        address = args.app_phy_addr_lo | args.app_phy_addr_hi << 32
        offset = self.vram_offset(address, args.app_len)
        if offset is None or not args.app_len:
            return self._refuse(TEE_ERROR_BAD_PARAMETERS, f"LOAD_TA: [{address:#x}, +{args.app_len:#x})")
        if self.tmr is None:
            return self._refuse(TEE_ERROR_BAD_STATE, "LOAD_TA before SETUP_TMR")
        try:
            check_image(self.gpu.vram[offset:offset + args.app_len], args.app_len)
        except BadImage as exc:
            return self._refuse(TEE_ERROR_BAD_FORMAT, f"LOAD_TA: {exc}")
        self.sessions += 1
        cmd.resp.session_id = self.sessions
        return gfx.TEE_SUCCESS
