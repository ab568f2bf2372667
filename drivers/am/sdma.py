"""SDMA 6.0 (Navi3x): the gfx ring of engine SDMA0 as a copy queue, after amdgpu's sdma_v6_0.c.

What it owns:
- sw_init: the ring (`AMConfig.sdma_ring_size` bytes), the rptr/wptr writeback slots and the fence
  slot, all in VRAM (device.memory); no MMIO;
- hw_init: sdma_v6_0_start: unhalt the engine (F32_CNTL.HALT), context-empty interrupt on, then
  sdma_v6_0_gfx_resume for the ring: size, pointers zeroed, writeback addresses, base, doorbell
  (enable, offset, NBIO's S2A route for SDMA doorbells), watchdog, UTCL1, ring and IBs on; then the
  ring test (sdma_v6_0_ring_test_ring: WRITE_LINEAR of 0xDEADBEEF over 0xCAFEDEAD, polled).
  The microcode itself is the PSP's to load (LOAD_IP_FW): this block does not load firmware;
- the ring writer (drivers.am.ring, shared with GC): dwords go in at wptr and the doorbell (64-bit
  write of wptr in bytes) commits
  them. It never overwrites entries the engine has not consumed: when the ring has no room it waits,
  bounded by `AMConfig.sdma_timeout_s`, for the engine's rptr writeback to move (DeviceTimeout names
  the ring, rptr and wptr);
- `copy(dst, src, size)` between GPU addresses of VMID 0 (VRAM in the FB range, host memory in the
  GART window of drivers.am.gart) as COPY_LINEAR packets of at most COPY_MAX_BYTES; `signal()` a
  FENCE with the next 32-bit sequence number; `wait(seq)`; `fence_value()`;
- host <-> VRAM: `copy_to_vram(buffer, data, offset)` / `copy_from_vram(buffer, size, offset)` stage
  through one hal DMA buffer mapped in the GART (AMDGPU_GTT_MAX_TRANSFER_SIZE pages, as amdgpu's
  transfer windows; three quarters of a scarce DMA window), made at first use and freed at
  hw_fini; copies into VRAM alternate between its two halves (the host fills one while the engine
  copies the other; a half is filled again only after the fence of the copy that read it);
- errors: every wait also reads the queue's CONTEXT_STATUS (MMIO: all ones is DeviceLost at once);
  an EXCEPTION there means the engine stopped on a packet: SDMAError names the packet's opcode and
  where it sits;
- hw_fini: sdma_v6_0_hw_fini: context-empty interrupt off, ring and IBs off, engine halted; the
  staging buffer unmapped from the GART and freed.
"""
from __future__ import annotations

import errno
import logging

from autogen.amd import sdma_v6_0_0_pkt_open as pkt
from drivers.am import ring
from drivers.am.ip import POLL_INTERVAL_S, IPBlock
from hal.errors import DeviceTimeout, HalError, InvalidArgument

log = logging.getLogger(__name__)

DWORD = 4
WORD_MASK = 0xFFFFFFFF
# sdma_v6_0.c sdma_v6_0_buffer_funcs: copy_max_bytes, the largest COPY_LINEAR amdgpu emits
COPY_MAX_BYTES = 0x400000
RING_BASE_SHIFT = 8  # sdma_v6_0_gfx_resume: RB_BASE = gpu_addr >> 8, RB_BASE_HI = gpu_addr >> 40
RING_BASE_HI_SHIFT = 40
# soc21.c soc21_doorbell_index_init: sdma_engine[0] = AMDGPU_NAVI10_DOORBELL_sDMA_ENGINE0 (0x100,
# amdgpu_doorbell.h), in 64-bit doorbells; sdma_v6_0_sw_init shifts it left by one for dwords
SDMA0_DOORBELL_QWORD = 0x100
# soc21.c: doorbell_index.sdma_doorbell_range = 20 per engine; gfx_resume opens it for 2 engines
SDMA_DOORBELL_RANGE = 20
SDMA_ENGINES = 2
# nbio_v4_3.c nbio_v4_3_sdma_doorbell_range: S2A_DOORBELL_PORT2_AWID for SDMA
S2A_SDMA_AWID = 0xE
# sdma_v6_0_gfx_resume: SDMA0_UTCL1_CNTL RESP_MODE 3 and REDO_DELAY 9
UTCL1_RESP_MODE = 3
UTCL1_REDO_DELAY = 9
# sdma_v6_0_gfx_resume: UTCL1_PAGE keeps 0xFF0FFF, then RD/WR_L2_POLICY get
# CACHE_READ/WRITE_POLICY_L2__DEFAULT (0, sdma_v6_0.c) and LLC_NOALLOC is set
UTCL1_PAGE_KEEP = 0xFF0FFF
# sdma_v6_0_gfx_resume: WATCHDOG_CNTL.QUEUE_HANG_COUNT counts 100 ms units, at least 1
WATCHDOG_UNIT_S = 0.1
# sdma_v6_0_ring_test_ring: the slot starts as 0xCAFEDEAD and the engine writes 0xDEADBEEF
RING_TEST_SEED = 0xCAFEDEAD
RING_TEST_VALUE = 0xDEADBEEF
# sdma_v6_0_ring_emit_fence: SDMA_PKT_FENCE_HEADER_MTYPE(0x3), uncached
FENCE_MTYPE_UC = 3
SDMA_TIMEOUT_S = 2.0  # amdgpu_device.c: usec_timeout, AMDGPU_MAX_USEC_TIMEOUT (100000 us) x 20 polls
RING_SIZE = 64 << 10  # this driver's choice (amdgpu: 1024 dwords x hardware submissions)
WRITEBACK_BYTES = 4096  # one page: rptr (8 bytes), wptr (8), fence (4), ring test (4)
RPTR_SLOT = 0
WPTR_SLOT = 8
FENCE_SLOT = 16
TEST_SLOT = 24
# amdgpu_ttm.h AMDGPU_GTT_MAX_TRANSFER_SIZE: 512 GPU pages per transfer window (2 MiB)
STAGING_PAGE = 4096  # amdgpu_gart.h AMDGPU_GPU_PAGE_SIZE
STAGING_SIZE = 512 * STAGING_PAGE
# this driver's choice: three quarters of a scarce DMA window stage host copies (two halves of
# 192 KiB in a USB bridge's 512 KiB SRAM), the rest is left to the other buffers the GPU must reach
STAGING_WINDOW_SHARE = (3, 4)

_OPCODE_NAMES = {value: name for name, value in vars(pkt).items()
                 if name.startswith("SDMA_OP_") and not name.startswith("SDMA_OP_AQL")}


class SDMAError(HalError):
    """The engine stopped on a packet it rejected (CONTEXT_STATUS.EXCEPTION); names the packet."""

    def __init__(self, message: str) -> None:
        super().__init__(message, errno=errno.EIO)


def _header(op: int, sub_op: int = 0, extra: int = 0) -> int:
    return ((op << pkt.SDMA_PKT_COPY_LINEAR_HEADER_op_shift)
            | (sub_op << pkt.SDMA_PKT_COPY_LINEAR_HEADER_sub_op_shift) | extra)


def copy_linear_packet(dst: int, src: int, size: int) -> list[int]:
    """sdma_v6_0_emit_copy_buffer: COUNT is bytes - 1, no endian swap."""
    return [_header(pkt.SDMA_OP_COPY, pkt.SDMA_SUBOP_COPY_LINEAR), size - 1, 0,
            src & WORD_MASK, src >> 32, dst & WORD_MASK, dst >> 32]


def write_linear_packet(dst: int, values: list[int]) -> list[int]:
    """sdma_v6_0_ring_test_ring: WRITE_LINEAR, DW_3 COUNT is dwords - 1."""
    return [_header(pkt.SDMA_OP_WRITE, pkt.SDMA_SUBOP_WRITE_LINEAR), dst & WORD_MASK, dst >> 32,
            len(values) - 1, *values]


def fence_packet(address: int, value: int) -> list[int]:
    """sdma_v6_0_ring_emit_fence: a 32-bit FENCE, uncached."""
    mtype = FENCE_MTYPE_UC << pkt.SDMA_PKT_FENCE_HEADER_mtype_shift
    return [_header(pkt.SDMA_OP_FENCE, 0, mtype), address & WORD_MASK, address >> 32, value & WORD_MASK]


def trap_packet(context: int = 0) -> list[int]:
    """sdma_v6_0_ring_emit_fence with AMDGPU_FENCE_FLAG_INT: a TRAP raises SDMA_TRAP in the IH."""
    return [_header(pkt.SDMA_OP_TRAP), context & pkt.SDMA_PKT_TRAP_INT_CONTEXT_int_context_mask]


class SDMAv6_0(IPBlock):
    """SDMA0's gfx ring (see the module docstring)."""

    block = "SDMA"  # amdgpu names the block SDMA; its version is the SDMA0 entry's
    versions = ((6, 0, 0),)

    def sw_init(self) -> None:
        config = self.device.config
        self.timeout_s = config.sdma_timeout_s
        self.ring_bytes = config.sdma_ring_size
        if self.ring_bytes < 256 or self.ring_bytes & (self.ring_bytes - 1):
            raise InvalidArgument(f"SDMA0 ring size {self.ring_bytes} must be a power of two of at least "
                                  "256 bytes (RB_SIZE is log2 of the dwords)")
        memory = self.device.memory
        self.ring = memory.alloc_vram(self.ring_bytes, alignment=self.ring_bytes, purpose="SDMA0 ring")
        self.writeback = memory.alloc_vram(WRITEBACK_BYTES, purpose="SDMA0 writeback")
        self.wptr = 0
        self._rptr_seen = 0  # the last read pointer read back (it never goes backwards)
        self.sequence = 0
        self.staging_bytes = config.sdma_staging_size
        window = self.device.pci.dma_window
        if window is not None:
            # DMA memory is scarce (a USB bridge's SRAM window): stage through a share of it and
            # leave the rest to the other buffers the GPU must reach in system memory
            numerator, denominator = STAGING_WINDOW_SHARE
            share = window * numerator // denominator // (2 * STAGING_PAGE) * (2 * STAGING_PAGE)
            self.staging_bytes = min(self.staging_bytes, share)
        if self.staging_bytes <= 0 or self.staging_bytes % STAGING_PAGE:
            raise InvalidArgument(f"SDMA0 staging size {self.staging_bytes} must be whole "
                                  f"{STAGING_PAGE}-byte pages")
        self.staging = None  # (hal DMA buffer, GART mapping, GART), made at first host copy
        registers = self.device.registers

        def reg(name: str):
            return registers.reg("SDMA0", name)

        self.rb_cntl = reg("regSDMA0_QUEUE0_RB_CNTL")
        self.ib_cntl = reg("regSDMA0_QUEUE0_IB_CNTL")
        self.f32_cntl = reg("regSDMA0_F32_CNTL")
        self.cntl = reg("regSDMA0_CNTL")
        self.context_status = reg("regSDMA0_QUEUE0_CONTEXT_STATUS")
        self.rptr_lo = reg("regSDMA0_QUEUE0_RB_RPTR")
        self.rptr_hi = reg("regSDMA0_QUEUE0_RB_RPTR_HI")
        self.reg = reg
        self.s2a = registers.reg("NBIO", "regS2A_DOORBELL_ENTRY_2_CTRL")
        self.doorbell_index = SDMA0_DOORBELL_QWORD << 1  # in dwords (sdma_v6_0_sw_init)

    def sw_fini(self) -> None:
        memory = self.device.memory
        memory.free_vram(self.writeback)
        memory.free_vram(self.ring)

    # -- bring-up -----------------------------------------------------------------------------------
    def hw_init(self) -> None:
        """sdma_v6_0_start (firmware already loaded by the PSP), gfx_resume, then the ring test."""
        self.ring.view.write(0, bytes(self.ring_bytes))
        self.writeback.view.write(0, bytes(WRITEBACK_BYTES))
        self.f32_cntl.update(HALT=0)  # sdma_v6_0_enable(adev, true)
        self.cntl.update(CTXEMPTY_INT_ENABLE=1)  # sdma_v6_0_ctxempty_int_enable
        self._gfx_resume()
        self.test_ring()

    def _gfx_resume(self) -> None:
        reg = self.reg
        reg("regSDMA0_SEM_WAIT_FAIL_TIMER_CNTL").write(0)
        rb_size = (self.ring_bytes // DWORD).bit_length() - 1
        rb_cntl = self.rb_cntl.definition.update(self.rb_cntl.read(), RB_SIZE=rb_size, RB_PRIV=1)
        self.rb_cntl.write(rb_cntl)
        for name in ("RB_RPTR", "RB_RPTR_HI", "RB_WPTR", "RB_WPTR_HI"):
            reg(f"regSDMA0_QUEUE0_{name}").write(0)
        wptr_address = self.writeback.mc_address + WPTR_SLOT
        rptr_address = self.writeback.mc_address + RPTR_SLOT
        reg("regSDMA0_QUEUE0_RB_WPTR_POLL_ADDR_LO").write(wptr_address & WORD_MASK)
        reg("regSDMA0_QUEUE0_RB_WPTR_POLL_ADDR_HI").write(wptr_address >> 32)
        reg("regSDMA0_QUEUE0_RB_RPTR_ADDR_HI").write(rptr_address >> 32)
        reg("regSDMA0_QUEUE0_RB_RPTR_ADDR_LO").write(rptr_address & ~(DWORD - 1) & WORD_MASK)
        rb_cntl = self.rb_cntl.definition.update(rb_cntl, RPTR_WRITEBACK_ENABLE=1, WPTR_POLL_ENABLE=0,
                                                 F32_WPTR_POLL_ENABLE=1)
        reg("regSDMA0_QUEUE0_RB_BASE").write((self.ring.mc_address >> RING_BASE_SHIFT) & WORD_MASK)
        reg("regSDMA0_QUEUE0_RB_BASE_HI").write(self.ring.mc_address >> RING_BASE_HI_SHIFT)
        self.wptr = 0
        self._rptr_seen = 0
        minor = reg("regSDMA0_QUEUE0_MINOR_PTR_UPDATE")
        minor.write(1)  # "before programing wptr to a less value, need set minor_ptr_update first"
        reg("regSDMA0_QUEUE0_RB_WPTR").write(0)
        reg("regSDMA0_QUEUE0_RB_WPTR_HI").write(0)
        reg("regSDMA0_QUEUE0_DOORBELL").update(ENABLE=1)
        reg("regSDMA0_QUEUE0_DOORBELL_OFFSET").update(OFFSET=self.doorbell_index)
        # nbio_v4_3.c nbio_v4_3_sdma_doorbell_range (instance 0 opens the range of both engines)
        self.s2a.update(S2A_DOORBELL_PORT2_ENABLE=1, S2A_DOORBELL_PORT2_AWID=S2A_SDMA_AWID,
                        S2A_DOORBELL_PORT2_RANGE_OFFSET=self.doorbell_index,
                        S2A_DOORBELL_PORT2_RANGE_SIZE=SDMA_DOORBELL_RANGE * SDMA_ENGINES)
        minor.write(0)
        hang_units = max(int(self.timeout_s / WATCHDOG_UNIT_S), 1)
        reg("regSDMA0_WATCHDOG_CNTL").update(QUEUE_HANG_COUNT=hang_units)
        reg("regSDMA0_UTCL1_CNTL").update(RESP_MODE=UTCL1_RESP_MODE, REDO_DELAY=UTCL1_REDO_DELAY)
        page = reg("regSDMA0_UTCL1_PAGE")
        page.write(page.definition.update(page.read() & UTCL1_PAGE_KEEP, RD_L2_POLICY=0, WR_L2_POLICY=0,
                                          LLC_NOALLOC=1))
        self.f32_cntl.update(HALT=0, TH1_RESET=0)
        self.rb_cntl.write(self.rb_cntl.definition.update(rb_cntl, RB_ENABLE=1))
        self.ib_cntl.update(IB_ENABLE=1)

    def hw_fini(self) -> None:
        """sdma_v6_0_hw_fini: context-empty interrupt off, gfx_stop, engine halted; staging freed."""
        try:
            self.cntl.update(CTXEMPTY_INT_ENABLE=0)
            self.rb_cntl.update(RB_ENABLE=0)
            self.ib_cntl.update(IB_ENABLE=0)
            self.f32_cntl.update(HALT=1)
        finally:
            self._free_staging()

    # -- ring -----------------------------------------------------------------------------------------
    def rptr(self) -> int:
        """The engine's read pointer in bytes, from its writeback."""
        return self.writeback.view.read64(RPTR_SLOT)

    def _check_engine(self) -> None:
        """An exception in CONTEXT_STATUS is SDMAError naming the packet (all ones: DeviceLost)."""
        status = self.context_status.read()
        exception = self.context_status.definition.field("EXCEPTION").decode(status)
        if not exception:
            return
        rptr = (self.rptr_hi.read() << 32) | self.rptr_lo.read()
        header = self.ring.view.read32(rptr % self.ring_bytes)
        op = header & pkt.SDMA_PKT_COPY_LINEAR_HEADER_op_mask
        sub_op = (header >> pkt.SDMA_PKT_COPY_LINEAR_HEADER_sub_op_shift) & \
            pkt.SDMA_PKT_COPY_LINEAR_HEADER_sub_op_mask
        name = _OPCODE_NAMES.get(op, f"unknown opcode {op}")
        raise SDMAError(f"{self.device.pci.bdf}: SDMA0 ring stopped on a packet it rejected: {name} "
                        f"(sub-opcode {sub_op}, header {header:#010x}) at rptr {rptr:#x}, wptr "
                        f"{self.wptr:#x}, CONTEXT_STATUS.EXCEPTION {exception}; reset the GPU")

    def _wait(self, done, what: str) -> None:
        """Poll `done()` until true: bounded, the engine checked on every round."""
        os = self.device.pci.os
        deadline = os.monotonic() + self.timeout_s
        while not done():
            self._check_engine()
            if os.monotonic() >= deadline:
                raise DeviceTimeout(
                    f"{self.device.pci.bdf}: SDMA0 ring: {what} did not happen within {self.timeout_s} s "
                    f"(rptr {self.rptr():#x}, wptr {self.wptr:#x}, ring {self.ring_bytes:#x} bytes, "
                    f"CONTEXT_STATUS {self.context_status.read():#010x})")
            os.sleep(POLL_INTERVAL_S)

    def submit(self, words: list[int]) -> None:
        """Write `words` into the ring (waiting for room) and ring the doorbell."""
        size = len(words) * DWORD
        if size > self.ring_bytes:
            raise InvalidArgument(f"SDMA0: {len(words)} dwords do not fit a {self.ring_bytes}-byte ring")
        # the read pointer only moves forward: a value seen before proves room without a read
        # (each read is a bus round trip, a USB one behind a bridge)
        if self.wptr + size - self._rptr_seen > self.ring_bytes:
            self._rptr_seen = self.rptr()
        if self.wptr + size - self._rptr_seen > self.ring_bytes:
            self._wait(lambda: self.wptr + size - self.rptr() <= self.ring_bytes,
                       f"room for {len(words)} dwords")
            self._rptr_seen = self.rptr()
        position = self.wptr % self.ring_bytes
        ring.write_words(self.ring.view, self.ring_bytes, position, words)
        self.wptr += size
        self._commit()

    def _commit(self) -> None:
        """sdma_v6_0_ring_set_wptr with a doorbell: the wptr shadow, then WDOORBELL64."""
        ring.commit(self.device, self.writeback.view, WPTR_SLOT, self.doorbell_index, self.wptr)

    def test_ring(self) -> None:
        """sdma_v6_0_ring_test_ring: the engine writes RING_TEST_VALUE over RING_TEST_SEED."""
        view = self.writeback.view
        view.write32(TEST_SLOT, RING_TEST_SEED)
        self.submit(write_linear_packet(self.writeback.mc_address + TEST_SLOT, [RING_TEST_VALUE]))
        self._wait(lambda: view.read32(TEST_SLOT) == RING_TEST_VALUE,
                   f"the ring test write of {RING_TEST_VALUE:#x}")

    # -- work ------------------------------------------------------------------------------------------
    def copy(self, dst: int, src: int, size: int) -> int:
        """Copy `size` bytes between GPU addresses of VMID 0 (VRAM's FB range or the GART window);
        returns the fence sequence that ends it."""
        if size <= 0:
            raise InvalidArgument(f"SDMA0 copy of {size} bytes")
        offset = 0
        while offset < size:
            chunk = min(COPY_MAX_BYTES, size - offset)
            self.submit(copy_linear_packet(dst + offset, src + offset, chunk))
            offset += chunk
        return self.signal()

    # -- host <-> VRAM through a GART-mapped staging buffer ----------------------------------------
    def _staging_buffer(self):
        """(DMA buffer, GART mapping, GART) of the staging buffer, made at first use."""
        if self.staging is not None:
            return self.staging
        gart = None
        for block in self.device.blocks:
            if block.block == "GMC" and block in self.device.hw_done:
                gart = getattr(block, "gart", None)
        if gart is None:
            raise InvalidArgument("SDMA0: host copies need the GMC block's GART window; bring GMC up "
                                  "before SDMA")
        pci = self.device.pci
        buffer = pci.alloc_dma(self.staging_bytes)
        try:
            mapping = gart.map(buffer)
        except BaseException:
            pci.free_dma(buffer)
            raise
        self.staging = (buffer, mapping, gart)
        return self.staging

    def _free_staging(self) -> None:
        if self.staging is None:
            return
        buffer, mapping, gart = self.staging
        self.staging = None
        try:
            gart.unmap(mapping)
        finally:
            self.device.pci.free_dma(buffer)

    @staticmethod
    def _check_span(buffer, offset: int, size: int, what: str) -> None:
        if size <= 0 or offset < 0 or offset + size > buffer.size:
            raise InvalidArgument(f"SDMA0 {what}: [{offset:#x}, +{size:#x}) is not inside the "
                                  f"{buffer.size:#x}-byte VRAM buffer")

    def _staging_half(self) -> int:
        """Bytes of each half of the staging buffer (copies alternate between the halves)."""
        return max(self.staging_bytes // 2 // STAGING_PAGE, 1) * STAGING_PAGE

    def copy_to_vram(self, buffer, data: bytes, offset: int = 0) -> None:
        """Copy host bytes `data` into VRAMBuffer `buffer` at `offset`, through the staging buffer.

        Double buffered: chunk i goes into one half while the engine copies chunk i - 1 out of
        the other, so the copy's packets, doorbell and fence read travel with chunk i's bytes. A
        half is written again only after the fence of the copy that read it."""
        self._check_span(buffer, offset, len(data), "copy to VRAM")
        staging, mapping, _ = self._staging_buffer()
        half = self._staging_half()
        view = memoryview(data)
        pending = None  # (VRAM address, staging address, bytes) written but not yet copied
        done = 0
        index = 0
        while done < len(data):
            chunk = min(half, len(data) - done)
            slot = index % 2 * half
            sequence = self.copy(*pending) if pending is not None else None
            staging.region.write(slot, view[done:done + chunk])
            if sequence is not None:
                self.wait(sequence)
            pending = (buffer.mc_address + offset + done, mapping.va + slot, chunk)
            done += chunk
            index += 1
        self.wait(self.copy(*pending))

    def copy_from_vram(self, buffer, size: int, offset: int = 0) -> bytes:
        """`size` bytes of VRAMBuffer `buffer` from `offset`, copied out through the staging buffer
        (whole: the host must read the fence before it reads the chunk, so halves would not
        overlap anything)."""
        self._check_span(buffer, offset, size, "copy from VRAM")
        staging, mapping, _ = self._staging_buffer()
        out = bytearray()
        while len(out) < size:
            chunk = min(self.staging_bytes, size - len(out))
            self.wait(self.copy(mapping.va, buffer.mc_address + offset + len(out), chunk))
            out += staging.region.read(0, chunk)
        return bytes(out)

    def signal(self, interrupt: bool = False) -> int:
        """A FENCE writing the next sequence number (and a TRAP when `interrupt`); returns it."""
        self.sequence = (self.sequence + 1) & WORD_MASK
        words = fence_packet(self.writeback.mc_address + FENCE_SLOT, self.sequence)
        if interrupt:
            words += trap_packet()
        self.submit(words)
        return self.sequence

    def fence_value(self) -> int:
        return self.writeback.view.read32(FENCE_SLOT)

    def wait(self, sequence: int) -> None:
        """Wait until the fence reached `sequence` (32-bit wrap-around aware)."""
        def reached() -> bool:
            return (self.fence_value() - sequence) & WORD_MASK < 1 << 31

        self._wait(reached, f"fence {sequence}")
