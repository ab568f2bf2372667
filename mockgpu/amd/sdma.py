"""The mock SDMA 6.0 copy engine of a Navi31: queue 0 (the gfx ring) of engine SDMA0.

What it owns, from the hardware side (sdma_v6_0.c is the protocol it is written against):
- the queue registers amdgpu programs in sdma_v6_0_gfx_resume: RB_CNTL (enable, size in log2
  dwords, rptr writeback enable), RB_BASE/_HI (ring address >> 8 / >> 40), RB_RPTR/_HI and
  RB_WPTR/_HI (byte pointers, 64 bits, growing without wrapping: amdgpu's SDMA rings have
  support_64bit_ptrs), RB_RPTR_ADDR_LO/_HI (rptr writeback), WPTR_POLL_ADDR, DOORBELL (enable),
  DOORBELL_OFFSET (the doorbell's dword index in BAR2), MINOR_PTR_UPDATE, IB_CNTL; F32_CNTL (HALT);
  STATUS_REG (IDLE, RB_EMPTY) and QUEUE0_CONTEXT_STATUS (IDLE, EXCEPTION), read-only;
- the firmware state: the engine runs nothing until its microcode is loaded. On the hardware the
  PSP loads it (LOAD_IP_FW with SDMA_UCODE_TH0/TH1); the PSP model sets `firmware_loaded`, and tests
  without a PSP set it by hand;
- execution: a doorbell write in BAR2 at the queue's DOORBELL_OFFSET (when DOORBELL.ENABLE, the
  NBIO doorbell aperture and the S2A_DOORBELL_ENTRY_2_CTRL route for SDMA are on) or a write of
  RB_WPTR with MINOR_PTR_UPDATE clear moves the write pointer and runs the engine up to it;
- packets (sdma_v6_0_0_pkt_open.h): NOP (with burst count), COPY_LINEAR, WRITE_LINEAR, INDIRECT
  (an IB in memory, not nested), FENCE, TRAP, POLL_REGMEM (memory or register, retry count), and
  TIMESTAMP (set / get / get global). Every header field is checked; an unknown opcode or
  sub-opcode, a count out of range or a misaligned address stops the queue on that packet: rptr
  stays at its first dword, CONTEXT_STATUS.EXCEPTION and STATUS_REG.IDLE say so, and an interrupt
  goes to the IH (GFX_11_0_0__SRCID__SDMA_SRBMWRITE, the source amdgpu registers as the engine's
  illegal-instruction interrupt: sdma_v4_0.c sdma_v4_0_sw_init; a faulting address gives
  SDMA_PAGE_FAULT). The exception codes are this model's (`EXCEPTION_*`): the kernel documents none;
- addresses: VMID 0 goes through the GMC model when the GPU has one (`gpu.gmc`, the GFX hub: the
  SDMA rings are on AMDGPU_GFXHUB(0)), else an MC address inside the FB range is a VRAM offset
  (`_locate`, the one place to change);
- fault hooks: `stalled` (the engine consumes nothing until cleared and kicked), and
  `throttle_dwords` / `throttle_delay_s` (at most that many dwords per step, the next step after
  that delay in the machine's simulated time: an engine slower than the writer).

Not modelled: the other queues and engine SDMA1, the RLC/MES queues, tiled and sub-window copies,
CONST_FILL, ATOMIC, COND_EXE, GCR_REQ, PTEPDE (they stop the queue as unsupported), context switches
and preemption, WPTR polling from memory (the doorbell value is the write pointer).
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from autogen.amd import irqsrcs_gfx_11_0_0 as srcid
from autogen.amd import psp_gfx_if as gfx
from autogen.amd import sdma_v6_0_0_pkt_open as pkt
from autogen.amd import soc15_ih_clientid as clientid
from autogen.amd.regs import gc_11_0_0, nbio_4_3_0
from mockgpu.amd.gmc import GFX_HUB, GPUBusError, GPUVMFault

if TYPE_CHECKING:
    from mockgpu.amd.gpu import Navi31GPU

log = logging.getLogger(__name__)

DWORD = 4
FB_UNIT_SHIFT = 24  # gfxhub_v3_0.c gfxhub_v3_0_get_fb_location: FB_BASE/FB_TOP count 16 MiB units
WORD_MASK = 0xFFFFFFFF
RING_BASE_SHIFT = 8  # sdma_v6_0_gfx_resume: RB_BASE = gpu_addr >> 8, RB_BASE_HI = gpu_addr >> 40
RING_BASE_HI_SHIFT = 40
# sdma_v6_0_ring_emit_ib: "base must be 32 byte aligned"
IB_ALIGNMENT = 32
# sdma_v6_0_ring_emit_fence: WARN_ON(addr & 0x3): fences, writes and polls are dword aligned
DWORD_ALIGNMENT = 4
# TIMESTAMP_GET writes 64 bits at write_addr_31_3 << 3 (the packet has no bits 2:0)
TIMESTAMP_ALIGNMENT = 8
# the GPU clock counter runs at the reference clock: soc21.c soc21_get_xclk returns
# adev->clock.spll.reference_freq, 100 MHz on the Navi3x boards (this model's figure)
TIMESTAMP_HZ = 100_000_000
# POLL_REGMEM DW5 RETRY_COUNT 0xfff is what amdgpu emits for waits that must last as long as needed
# (sdma_v6_0_ring_emit_hdp_flush, _emit_pipeline_sync, _emit_reg_wait): this model never gives up on it
POLL_RETRY_FOREVER = 0xFFF
POLL_RECHECK_S = 0.0005  # this model re-evaluates a pending poll this often in simulated time
# POLL_REGMEM HEADER FUNC: 0 always, 1 <, 2 <=, 3 ==, 4 !=, 5 >=, 6 > (sdma_v6_0.c emits 3, "==")
POLL_FUNCTIONS = {
    0: lambda value, ref: True,
    1: lambda value, ref: value < ref,
    2: lambda value, ref: value <= ref,
    3: lambda value, ref: value == ref,
    4: lambda value, ref: value != ref,
    5: lambda value, ref: value >= ref,
    6: lambda value, ref: value > ref,
}
# this model's CONTEXT_STATUS.EXCEPTION codes (the kernel names none)
EXCEPTION_NONE = 0
EXCEPTION_ILLEGAL_PACKET = 1
EXCEPTION_MEMORY = 2
EXCEPTION_UNSUPPORTED = 3
# packet lengths in dwords (sdma_v6_0_0_pkt_open.h: the dwords of each SDMA_PKT_* struct)
COPY_LINEAR_DWORDS = 7
COPY_CHUNK_BYTES = 1 << 20  # this model's choice: how much of a COPY_LINEAR it holds at once
# sdma_v6_0_0_pkt_open.h SDMA_PKT_TIMESTAMP: the counter's value is two dwords (64 bits)
TIMESTAMP_MASK = (1 << 64) - 1
WRITE_HEADER_DWORDS = 4  # header, address lo/hi, count; then count + 1 data dwords
INDIRECT_DWORDS = 6
FENCE_DWORDS = 4
TRAP_DWORDS = 2
POLL_REGMEM_DWORDS = 6
TIMESTAMP_DWORDS = 3

_QUEUE_REGISTERS = (
    "regSDMA0_QUEUE0_RB_CNTL", "regSDMA0_QUEUE0_RB_BASE", "regSDMA0_QUEUE0_RB_BASE_HI",
    "regSDMA0_QUEUE0_RB_RPTR_ADDR_LO", "regSDMA0_QUEUE0_RB_RPTR_ADDR_HI",
    "regSDMA0_QUEUE0_RB_WPTR_POLL_ADDR_LO", "regSDMA0_QUEUE0_RB_WPTR_POLL_ADDR_HI",
    "regSDMA0_QUEUE0_DOORBELL", "regSDMA0_QUEUE0_DOORBELL_OFFSET", "regSDMA0_QUEUE0_IB_CNTL",
    "regSDMA0_QUEUE0_MINOR_PTR_UPDATE", "regSDMA0_CNTL", "regSDMA0_UTCL1_CNTL", "regSDMA0_UTCL1_PAGE",
    "regSDMA0_WATCHDOG_CNTL", "regSDMA0_SEM_WAIT_FAIL_TIMER_CNTL",
)


def _field(register: str, name: str):
    return gc_11_0_0.get(register).field(name)


RB_ENABLE = _field("regSDMA0_QUEUE0_RB_CNTL", "RB_ENABLE")
RB_SIZE = _field("regSDMA0_QUEUE0_RB_CNTL", "RB_SIZE")
RPTR_WRITEBACK_ENABLE = _field("regSDMA0_QUEUE0_RB_CNTL", "RPTR_WRITEBACK_ENABLE")
DOORBELL_ENABLE = _field("regSDMA0_QUEUE0_DOORBELL", "ENABLE")
DOORBELL_OFFSET = _field("regSDMA0_QUEUE0_DOORBELL_OFFSET", "OFFSET")
MINOR_PTR_UPDATE = _field("regSDMA0_QUEUE0_MINOR_PTR_UPDATE", "ENABLE")
F32_HALT = _field("regSDMA0_F32_CNTL", "HALT")
STATUS_IDLE = _field("regSDMA0_STATUS_REG", "IDLE")
STATUS_RB_EMPTY = _field("regSDMA0_STATUS_REG", "RB_EMPTY")
CONTEXT_IDLE = _field("regSDMA0_QUEUE0_CONTEXT_STATUS", "IDLE")
CONTEXT_EXCEPTION = _field("regSDMA0_QUEUE0_CONTEXT_STATUS", "EXCEPTION")
_S2A = nbio_4_3_0.get("regS2A_DOORBELL_ENTRY_2_CTRL")
S2A_ENABLE = _S2A.field("S2A_DOORBELL_PORT2_ENABLE")
S2A_RANGE_OFFSET = _S2A.field("S2A_DOORBELL_PORT2_RANGE_OFFSET")
S2A_RANGE_SIZE = _S2A.field("S2A_DOORBELL_PORT2_RANGE_SIZE")


def _get(dword: int, name: str) -> int:
    """Field `name` (an SDMA_PKT_* prefix + field, e.g. 'COPY_LINEAR_HEADER_op') of a packet dword."""
    mask = getattr(pkt, f"SDMA_PKT_{name}_mask")
    shift = getattr(pkt, f"SDMA_PKT_{name}_shift")
    return (dword >> shift) & mask


class PacketError(Exception):
    """A packet the engine refuses: the queue stops on it with `exception` in CONTEXT_STATUS."""

    def __init__(self, exception: int, detail: str,
                 source_id: int = srcid.GFX_11_0_0__SRCID__SDMA_SRBMWRITE) -> None:
        super().__init__(detail)
        self.exception = exception
        self.source_id = source_id


class _Pending(Exception):
    """The packet cannot complete yet: a poll not satisfied (`recheck`: try again later), or not
    all of it written (the next write-pointer update runs it)."""

    def __init__(self, recheck: bool = False) -> None:
        super().__init__()
        self.recheck = recheck


class SDMAModel:
    """SDMA0 queue 0 of a Navi31GPU (see the module docstring)."""

    def __init__(self, gpu: "Navi31GPU") -> None:
        self.gpu = gpu
        regfile = gpu.regfile
        self._firmware_forced = False
        self.stalled = False
        self.throttle_dwords: int | None = None
        self.throttle_delay_s = 0.001
        self.traps = 0
        self.error: str | None = None
        self.exception = EXCEPTION_NONE
        self.rptr = 0
        self.wptr = 0
        self._poll_retries = 0
        self._step_scheduled = False
        self._clock_offset = 0
        self._address = {name: regfile.own("SDMA0", name) for name in _QUEUE_REGISTERS}
        regfile.own("SDMA0", "regSDMA0_QUEUE0_RB_CNTL", write=self._write_rb_cntl)
        regfile.own("SDMA0", "regSDMA0_QUEUE0_RB_RPTR", read=lambda: self.rptr & WORD_MASK,
                    write=lambda value: self._write_rptr(value, high=False))
        regfile.own("SDMA0", "regSDMA0_QUEUE0_RB_RPTR_HI", read=lambda: self.rptr >> 32,
                    write=lambda value: self._write_rptr(value, high=True))
        regfile.own("SDMA0", "regSDMA0_QUEUE0_RB_WPTR", read=lambda: self.wptr & WORD_MASK,
                    write=lambda value: self._write_wptr(value, high=False))
        regfile.own("SDMA0", "regSDMA0_QUEUE0_RB_WPTR_HI", read=lambda: self.wptr >> 32,
                    write=lambda value: self._write_wptr(value, high=True))
        self._f32_cntl = regfile.own("SDMA0", "regSDMA0_F32_CNTL", write=self._write_f32_cntl)
        regfile.own("SDMA0", "regSDMA0_STATUS_REG", read=self._status, write=lambda value: None)
        regfile.own("SDMA0", "regSDMA0_QUEUE0_CONTEXT_STATUS", read=self._context_status,
                    write=lambda value: None)
        self._s2a = regfile.own("NBIO", "regS2A_DOORBELL_ENTRY_2_CTRL")
        self.reset("power_on")

    # -- reset ---------------------------------------------------------------------------------------
    def reset(self, kind: str) -> None:
        """Any reset ("power_on", "pci", "mode1") clears the engine: microcode gone (amdgpu reloads
        SDMA firmware through the PSP after each: amdgpu_device_ip_resume), F32 halted, queue off."""
        regfile = self.gpu.regfile
        for address in self._address.values():
            regfile.poke(address, 0)
        regfile.poke(self._s2a, 0)
        regfile.poke(self._f32_cntl, F32_HALT.mask)  # halted until firmware runs it
        self._firmware_forced = False
        self.rptr = 0
        self.wptr = 0
        self.error = None
        self.exception = EXCEPTION_NONE
        self._poll_retries = 0

    @property
    def firmware_loaded(self) -> bool:
        """Whether the engine has microcode: the PSP model took LOAD_IP_FW for both SDMA threads
        (GFX_FW_TYPE_SDMA_UCODE_TH0/TH1, amdgpu_psp.c psp_get_fw_type), or a test said so."""
        if self._firmware_forced:
            return True
        loaded = getattr(getattr(self.gpu, "psp", None), "loaded", {})
        return gfx.GFX_FW_TYPE_SDMA_UCODE_TH0 in loaded and gfx.GFX_FW_TYPE_SDMA_UCODE_TH1 in loaded

    @firmware_loaded.setter
    def firmware_loaded(self, value: bool) -> None:
        self._firmware_forced = value

    # -- registers -------------------------------------------------------------------------------------
    def _reg(self, name: str) -> int:
        return self.gpu.regfile.peek(self._address[name])

    def _write_rb_cntl(self, value: int) -> None:
        self.gpu.regfile.poke(self._address["regSDMA0_QUEUE0_RB_CNTL"], value)
        self.kick()

    def _write_rptr(self, value: int, high: bool) -> None:
        if high:
            self.rptr = (self.rptr & WORD_MASK) | (value << 32)
        else:
            self.rptr = (self.rptr & ~WORD_MASK) | value

    def _write_wptr(self, value: int, high: bool) -> None:
        if high:
            self.wptr = (self.wptr & WORD_MASK) | (value << 32)
        else:
            self.wptr = (self.wptr & ~WORD_MASK) | value
        # sdma_v6_0_gfx_resume: "before programing wptr to a less value, need set minor_ptr_update
        # first": while it is set the pointer moves without the engine acting on it
        if not MINOR_PTR_UPDATE.decode(self._reg("regSDMA0_QUEUE0_MINOR_PTR_UPDATE")):
            self.kick()

    def _write_f32_cntl(self, value: int) -> None:
        self.gpu.regfile.poke(self._f32_cntl, value)
        self.kick()

    def _status(self) -> int:
        idle = self.exception == EXCEPTION_NONE and (self.rptr == self.wptr or not self.running)
        empty = self.rptr == self.wptr
        return (STATUS_IDLE.mask if idle else 0) | (STATUS_RB_EMPTY.mask if empty else 0)

    def _context_status(self) -> int:
        idle = self.exception == EXCEPTION_NONE and self.rptr == self.wptr
        return (CONTEXT_IDLE.mask if idle else 0) | (self.exception << CONTEXT_EXCEPTION.shift)

    # -- doorbells ---------------------------------------------------------------------------------------
    def doorbell(self, offset: int, data: bytes) -> None:
        """A write of BAR2 bytes [offset, offset + len(data)): the queue's doorbell sets wptr."""
        if not DOORBELL_ENABLE.decode(self._reg("regSDMA0_QUEUE0_DOORBELL")):
            return
        index = DOORBELL_OFFSET.decode(self._reg("regSDMA0_QUEUE0_DOORBELL_OFFSET"))
        if offset != index * DWORD or not self.gpu.doorbell_aperture_enabled:
            return
        # nbio_v4_3.c nbio_v4_3_sdma_doorbell_range: NBIO forwards SDMA doorbells only inside the
        # range S2A_DOORBELL_ENTRY_2_CTRL opens (offset and size in dwords)
        route = self.gpu.regfile.peek(self._s2a)
        start = S2A_RANGE_OFFSET.decode(route)
        if not S2A_ENABLE.decode(route) or not start <= index < start + S2A_RANGE_SIZE.decode(route):
            log.debug("SDMA0 doorbell at dword %#x dropped: no S2A route", index)
            return
        value = int.from_bytes(data, "little")
        if len(data) < 2 * DWORD:
            value |= self.wptr & ~WORD_MASK  # a 32-bit doorbell write moves the low half
        self.wptr = value
        self.kick()

    # -- the engine ----------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Microcode loaded, F32 not halted and the ring enabled."""
        return (self.firmware_loaded and not F32_HALT.decode(self.gpu.regfile.peek(self._f32_cntl))
                and bool(RB_ENABLE.decode(self._reg("regSDMA0_QUEUE0_RB_CNTL"))))

    def ring_bytes(self) -> int:
        return DWORD << RB_SIZE.decode(self._reg("regSDMA0_QUEUE0_RB_CNTL"))

    def ring_address(self) -> int:
        return ((self._reg("regSDMA0_QUEUE0_RB_BASE") << RING_BASE_SHIFT)
                | (self._reg("regSDMA0_QUEUE0_RB_BASE_HI") << RING_BASE_HI_SHIFT))

    def kick(self, step: bool = False) -> None:
        """Run the queue from rptr towards wptr (throttled: in steps after throttle_delay_s)."""
        if self.stalled or not self.running or self.exception != EXCEPTION_NONE:
            return
        budget = self.throttle_dwords
        if budget is not None and not step and self.gpu.machine is not None:
            self._schedule(self.throttle_delay_s)
            return
        start = self.rptr
        while self.rptr < self.wptr:
            if budget is not None and (self.rptr - start) // DWORD >= budget:
                self._schedule(self.throttle_delay_s)
                break
            try:
                self.rptr += self._execute_ring_packet() * DWORD
            except _Pending as pending:
                if pending.recheck:
                    self._schedule(POLL_RECHECK_S)
                break
            except PacketError as exc:
                self._fail(exc)
                break
        if self.rptr != start:
            self._write_back_rptr()  # the engine reports progress, not register writes

    def _schedule(self, delay: float) -> None:
        machine = self.gpu.machine
        if machine is None or self._step_scheduled:
            return
        self._step_scheduled = True

        def step() -> None:
            self._step_scheduled = False
            self.kick(step=True)

        machine.schedule(delay, step)

    def _fail(self, exc: PacketError) -> None:
        self.exception = exc.exception
        self.error = f"SDMA0 queue 0 stopped at rptr {self.rptr:#x}: {exc}"
        log.info("%s", self.error)
        self._interrupt(exc.source_id)

    def _interrupt(self, source_id: int, context: int = 0) -> None:
        ih = getattr(self.gpu, "ih", None)
        if ih is not None:
            # sdma_v6_0_process_trap_irq: ring_id bits 3:0 the queue, 7:4 the instance (0 here)
            ih.post(clientid.SOC21_IH_CLIENTID_GFX, source_id, src_data=(context, 0, 0, 0), ring_id=0)

    def _write_back_rptr(self) -> None:
        if not RPTR_WRITEBACK_ENABLE.decode(self._reg("regSDMA0_QUEUE0_RB_CNTL")):
            return
        address = ((self._reg("regSDMA0_QUEUE0_RB_RPTR_ADDR_HI") << 32)
                   | (self._reg("regSDMA0_QUEUE0_RB_RPTR_ADDR_LO") & ~(DWORD - 1)))
        try:
            self._write(address, self.rptr.to_bytes(8, "little"))
        except PacketError as exc:
            self._fail(exc)

    # -- memory --------------------------------------------------------------------------------------------
    def _locate(self, address: int, n: int) -> int:
        """VRAM offset of MC address range [address, address + n) without a GMC model: VMID 0
        addresses inside the FB range (GCMC_VM_FB_LOCATION_BASE/TOP, 16 MiB units) are VRAM."""
        regfile = self.gpu.regfile
        base = regfile.get("GC", "regGCMC_VM_FB_LOCATION_BASE") << FB_UNIT_SHIFT
        top = ((regfile.get("GC", "regGCMC_VM_FB_LOCATION_TOP") + 1) << FB_UNIT_SHIFT)
        if not base <= address < address + n <= min(top, base + self.gpu.vram_size):
            raise PacketError(EXCEPTION_MEMORY, f"address {address:#x}+{n:#x} is outside VRAM "
                              f"[{base:#x}, {top:#x}) and no GART is modelled",
                              srcid.GFX_11_0_0__SRCID__SDMA_PAGE_FAULT)
        return address - base

    def _read(self, address: int, n: int, vmid: int = 0) -> bytes:
        gmc = getattr(self.gpu, "gmc", None)
        if gmc is not None:
            return self._through_gmc(lambda: gmc.read(GFX_HUB, vmid, address, n))
        offset = self._locate(address, n)
        return bytes(self.gpu.vram[offset:offset + n])

    def _write(self, address: int, data: bytes, vmid: int = 0) -> None:
        gmc = getattr(self.gpu, "gmc", None)
        if gmc is not None:
            self._through_gmc(lambda: gmc.write(GFX_HUB, vmid, address, data))
            return
        offset = self._locate(address, len(data))
        self.gpu.vram[offset:offset + len(data)] = data

    @staticmethod
    def _through_gmc(access):
        try:
            return access()
        except (GPUVMFault, GPUBusError) as exc:
            raise PacketError(EXCEPTION_MEMORY, str(exc), srcid.GFX_11_0_0__SRCID__SDMA_PAGE_FAULT) from None

    # -- packets -----------------------------------------------------------------------------------
    def _execute_ring_packet(self) -> int:
        """Execute the packet at rptr; returns its length in dwords."""
        size = self.ring_bytes()
        base = self.ring_address()
        available = (self.wptr - self.rptr) // DWORD

        def fetch(count: int) -> list[int]:
            if count > available:
                raise _Pending()
            words = []
            for index in range(count):
                position = (self.rptr + index * DWORD) % size
                words.append(int.from_bytes(self._read(base + position, DWORD), "little"))
            return words

        return self._execute(fetch, in_ib=False)

    def _execute(self, fetch, in_ib: bool, vmid: int = 0) -> int:
        header = fetch(1)[0]
        op = _get(header, "COPY_LINEAR_HEADER_op")
        sub_op = _get(header, "COPY_LINEAR_HEADER_sub_op")
        if op == pkt.SDMA_OP_NOP:
            return self._nop(fetch, header, sub_op)
        if op == pkt.SDMA_OP_COPY:
            return self._copy(fetch, sub_op, vmid)
        if op == pkt.SDMA_OP_WRITE:
            return self._write_packet(fetch, sub_op, vmid)
        if op == pkt.SDMA_OP_INDIRECT:
            return self._indirect(fetch, header, sub_op, in_ib)
        if op == pkt.SDMA_OP_FENCE:
            return self._fence(fetch, sub_op, vmid)
        if op == pkt.SDMA_OP_TRAP:
            return self._trap(fetch, sub_op)
        if op == pkt.SDMA_OP_POLL_REGMEM:
            return self._poll(fetch, header, sub_op, vmid)
        if op == pkt.SDMA_OP_TIMESTAMP:
            return self._timestamp(fetch, sub_op, vmid)
        known = {value: name for name, value in vars(pkt).items() if name.startswith("SDMA_OP_")}
        if op in known:
            raise PacketError(EXCEPTION_UNSUPPORTED, f"{known[op]} (opcode {op}) is not modelled")
        raise PacketError(EXCEPTION_ILLEGAL_PACKET, f"unknown opcode {op} (header {header:#010x})")

    @staticmethod
    def _expect_sub_op(name: str, sub_op: int, allowed: tuple[int, ...]) -> None:
        if sub_op not in allowed:
            raise PacketError(EXCEPTION_ILLEGAL_PACKET,
                              f"{name}: sub-opcode {sub_op} is not one of {allowed}")

    @staticmethod
    def _aligned(name: str, address: int, alignment: int) -> None:
        if address % alignment:
            raise PacketError(EXCEPTION_ILLEGAL_PACKET,
                              f"{name}: address {address:#x} is not {alignment}-byte aligned")

    def _nop(self, fetch, header: int, sub_op: int) -> int:
        self._expect_sub_op("NOP", sub_op, (0,))
        # sdma_v6_0_ring_insert_nop: a burst NOP's COUNT says how many dwords follow it
        count = _get(header, "NOP_HEADER_count")
        fetch(1 + count)
        return 1 + count

    def _copy(self, fetch, sub_op: int, vmid: int) -> int:
        if sub_op != pkt.SDMA_SUBOP_COPY_LINEAR:
            raise PacketError(EXCEPTION_UNSUPPORTED, f"COPY sub-opcode {sub_op} is not modelled")
        words = fetch(COPY_LINEAR_DWORDS)
        if _get(words[0], "COPY_LINEAR_HEADER_tmz") or _get(words[0], "COPY_LINEAR_HEADER_broadcast"):
            raise PacketError(EXCEPTION_UNSUPPORTED,
                              "COPY_LINEAR: TMZ and broadcast copies are not modelled")
        # sdma_v6_0_emit_copy_buffer: COUNT is the byte count minus one
        count = _get(words[1], "COPY_LINEAR_COUNT_count") + 1
        source = words[3] | (words[4] << 32)
        destination = words[5] | (words[6] << 32)
        if _get(words[0], "COPY_LINEAR_HEADER_backwards"):
            raise PacketError(EXCEPTION_UNSUPPORTED, "COPY_LINEAR: backwards copies are not modelled")
        # the engine streams the copy: a COUNT of up to 2^30 bytes never sits in memory at once
        for done in range(0, count, COPY_CHUNK_BYTES):
            chunk = min(COPY_CHUNK_BYTES, count - done)
            self._write(destination + done, self._read(source + done, chunk, vmid), vmid)
        return COPY_LINEAR_DWORDS

    def _write_packet(self, fetch, sub_op: int, vmid: int) -> int:
        if sub_op != pkt.SDMA_SUBOP_WRITE_LINEAR:
            raise PacketError(EXCEPTION_UNSUPPORTED, f"WRITE sub-opcode {sub_op} is not modelled")
        words = fetch(WRITE_HEADER_DWORDS)
        destination = words[1] | (words[2] << 32)
        self._aligned("WRITE_LINEAR", destination, DWORD_ALIGNMENT)
        # sdma_v6_0_ring_test_ring: DW_3 COUNT is the number of data dwords minus one
        count = _get(words[3], "WRITE_UNTILED_DW_3_count") + 1
        data = fetch(WRITE_HEADER_DWORDS + count)[WRITE_HEADER_DWORDS:]
        self._write(destination, b"".join(word.to_bytes(DWORD, "little") for word in data), vmid)
        return WRITE_HEADER_DWORDS + count

    def _indirect(self, fetch, header: int, sub_op: int, in_ib: bool) -> int:
        self._expect_sub_op("INDIRECT", sub_op, (0,))
        if in_ib:
            raise PacketError(EXCEPTION_ILLEGAL_PACKET, "INDIRECT inside an IB (IBs do not chain)")
        words = fetch(INDIRECT_DWORDS)
        vmid = _get(header, "INDIRECT_HEADER_vmid")
        base = words[1] | (words[2] << 32)
        self._aligned("INDIRECT", base, IB_ALIGNMENT)
        length = _get(words[3], "INDIRECT_IB_SIZE_ib_size")
        ib = self._read(base, length * DWORD, vmid)
        position = 0
        while position < length:
            def fetch_ib(count: int, start: int = position) -> list[int]:
                if start + count > length:
                    raise PacketError(EXCEPTION_ILLEGAL_PACKET,
                                      f"packet at IB dword {start} runs past the IB's {length} dwords")
                return [int.from_bytes(ib[(start + i) * DWORD:(start + i + 1) * DWORD], "little")
                        for i in range(count)]
            try:
                position += self._execute(fetch_ib, in_ib=True, vmid=vmid)
            except _Pending:
                raise PacketError(EXCEPTION_UNSUPPORTED, "a poll inside an IB that is not yet "
                                  "satisfied is not modelled") from None
        return INDIRECT_DWORDS

    def _fence(self, fetch, sub_op: int, vmid: int) -> int:
        self._expect_sub_op("FENCE", sub_op, (0,))
        words = fetch(FENCE_DWORDS)
        address = words[1] | (words[2] << 32)
        self._aligned("FENCE", address, DWORD_ALIGNMENT)
        self._write(address, words[3].to_bytes(DWORD, "little"), vmid)
        return FENCE_DWORDS

    def _trap(self, fetch, sub_op: int) -> int:
        self._expect_sub_op("TRAP", sub_op, (0,))
        words = fetch(TRAP_DWORDS)
        self.traps += 1
        context = _get(words[1], "TRAP_INT_CONTEXT_int_context")
        self._interrupt(srcid.GFX_11_0_0__SRCID__SDMA_TRAP, context)
        return TRAP_DWORDS

    def _poll(self, fetch, header: int, sub_op: int, vmid: int) -> int:
        self._expect_sub_op("POLL_REGMEM", sub_op, (0,))
        words = fetch(POLL_REGMEM_DWORDS)
        function = _get(header, "POLL_REGMEM_HEADER_func")
        if function not in POLL_FUNCTIONS:
            raise PacketError(EXCEPTION_ILLEGAL_PACKET, f"POLL_REGMEM: compare function {function}")
        address = words[1] | (words[2] << 32)
        self._aligned("POLL_REGMEM", address, DWORD_ALIGNMENT)
        reference = words[3]
        mask = words[4]
        retries = _get(words[5], "POLL_REGMEM_DW5_retry_count")
        memory = _get(header, "POLL_REGMEM_HEADER_mem_poll")
        regfile = self.gpu.regfile
        if _get(header, "POLL_REGMEM_HEADER_hdp_flush"):
            # sdma_v6_0_ring_emit_hdp_flush: with HDP_FLUSH the engine writes the reference to the
            # request register (ADDR_HI dword) and then polls the done register (ADDR_LO)
            regfile.write32(words[2], reference)
            address = words[1]
            memory = 0
        if memory:
            value = int.from_bytes(self._read(address, DWORD, vmid), "little")
        else:
            value = regfile.read32(address)
        if POLL_FUNCTIONS[function](value & mask, reference):
            self._poll_retries = 0
            return POLL_REGMEM_DWORDS
        if retries == POLL_RETRY_FOREVER or self._poll_retries < retries:
            self._poll_retries += 1
            raise _Pending(recheck=True)
        # GFX_11_0_0__SRCID__SDMA_POLL_TIMEOUT ("SRBM read poll timeout"): the poll gives up
        self._poll_retries = 0
        self._interrupt(srcid.GFX_11_0_0__SRCID__SDMA_POLL_TIMEOUT)
        return POLL_REGMEM_DWORDS

    def gpu_clock(self) -> int:
        """The GPU clock counter TIMESTAMP reads (TIMESTAMP_HZ ticks since the model started)."""
        ticks = time.monotonic_ns() * TIMESTAMP_HZ // 1_000_000_000 + self._clock_offset
        return ticks & TIMESTAMP_MASK  # a 64-bit counter wraps (a SET near 2^64 is legal)

    def _timestamp(self, fetch, sub_op: int, vmid: int) -> int:
        words = fetch(TIMESTAMP_DWORDS)
        if sub_op == pkt.SDMA_SUBOP_TIMESTAMP_SET:
            value = words[1] | (words[2] << 32)
            self._clock_offset += value - self.gpu_clock()
            return TIMESTAMP_DWORDS
        self._expect_sub_op("TIMESTAMP", sub_op, (pkt.SDMA_SUBOP_TIMESTAMP_GET,
                                                  pkt.SDMA_SUBOP_TIMESTAMP_GET_GLOBAL))
        if words[1] & (TIMESTAMP_ALIGNMENT - 1):
            raise PacketError(EXCEPTION_ILLEGAL_PACKET, f"TIMESTAMP: address {words[1]:#x} has bits 2:0 set")
        address = words[1] | (words[2] << 32)
        self._write(address, self.gpu_clock().to_bytes(2 * DWORD, "little"), vmid)
        return TIMESTAMP_DWORDS

