"""The AMD queues of the HCQ layer: compute on the GC block's MEC queue (PM4), copy on SDMA0.

Both write into the rings drivers.am brings up (`GCv11_0.submit`, `SDMAv6_0.submit`), with the ring
space of each submission reclaimed only once the device timeline passed it (`RingSpace`).

Compute (PM4, nvd.h):
- wait: WAIT_REG_MEM on the signal's low dword, "greater or equal" (function 5);
- signal: RELEASE_MEM at end of pipe with caches written back and invalidated
  (gfx_v11_0_ring_emit_fence's event), 64-bit data;
- timestamp: RELEASE_MEM whose data is the GPU clock counter (DATA_SEL 3);
- exec: ACQUIRE_MEM (every cache invalidated, gfx_v11_0_emit_mem_sync) before the dispatch, the
  COMPUTE_* registers through SET_SH_REG, DISPATCH_DIRECT, then a CS partial flush (EVENT_WRITE
  CS_PARTIAL_FLUSH, index 4, as gfx_v8_0.c's compute dispatches end) so the next command sees the
  kernel done; the caches are written back by the RELEASE_MEM every submission ends with;
- barrier: the partial flush and ACQUIRE_MEM.

Copy (SDMA v6, sdma_v6_0_0_pkt_open.h):
- wait: POLL_REGMEM on the signal's low dword in memory, "greater or equal", retrying forever;
- signal: two 32-bit FENCEs, low dword first, so a CPU reading between them sees a value no
  larger than the real one (the high dword follows);
- timestamp: TIMESTAMP GET_GLOBAL into the signal's timestamp;
- copy: COPY_LINEAR packets of at most 4 MiB each (drivers.am.sdma.copy_linear_packet).

GPU-side waits compare the low 32 bits of the 64-bit value (as amdgpu's fences do): a wait must not
span a 2^32 step of the timeline.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from autogen.amd import navi10_enum as enums
from autogen.amd import nvd
from autogen.amd import sdma_v6_0_0_pkt_open as pkt
from compute.queue import Queue, RingSpace
from drivers.am import gfx as pm4
from drivers.am.sdma import COPY_MAX_BYTES, copy_linear_packet, fence_packet

if TYPE_CHECKING:
    from compute.device import Device
    from compute.signal import Signal

DWORD = 4
WORD_MASK = 0xFFFFFFFF
# nvd.h WAIT_REG_MEM_FUNCTION / sdma POLL_REGMEM func: 0 always, 1 <, 2 <=, 3 ==, 4 !=, 5 >=, 6 >
COMPARE_GREATER_EQUAL = 5
POLL_RETRY_FOREVER = 0xFFF  # sdma_v6_0_ring_emit_hdp_flush / emit_wait_reg_mem: retry count 0xfff
POLL_INTERVAL = 10  # sdma_v6_0_ring_emit_wait_reg_mem: interval 10 (x16 clocks)
RELEASE_MEM_DATA_64 = 2  # nvd.h PACKET3_RELEASE_MEM_DATA_SEL: 2 = 64-bit data
RELEASE_MEM_DATA_GPU_CLOCK = 3  # nvd.h PACKET3_RELEASE_MEM_DATA_SEL: 3 = GPU clock counter
EVENT_INDEX_PARTIAL_FLUSH = 4  # gfx_v8_0.c: EVENT_TYPE(7) | EVENT_INDEX(4) after compute dispatches
RELEASE_MEM_EVENT_INDEX_EOP = 5  # gfx_v11_0_ring_emit_fence: EVENT_INDEX(5), end of pipe


def _dword_at(address: int) -> tuple[int, int]:
    return address & WORD_MASK, address >> 32


def release_mem_clock_packet(address: int) -> list[int]:
    """RELEASE_MEM at end of pipe writing the 64-bit GPU clock counter to `address`."""
    words = pm4.release_mem_packet(address, 0, bits64=True)
    words[2] = nvd.PACKET3_RELEASE_MEM_DATA_SEL(RELEASE_MEM_DATA_GPU_CLOCK)
    return words


def partial_flush_packet() -> list[int]:
    return pm4.event_write_packet(enums.CS_PARTIAL_FLUSH, EVENT_INDEX_PARTIAL_FLUSH)


def poll_regmem_packet(address: int, reference: int, function: int = COMPARE_GREATER_EQUAL) -> list[int]:
    """POLL_REGMEM on a dword in memory until (value & mask) compares with `reference`."""
    header = (pkt.SDMA_OP_POLL_REGMEM << pkt.SDMA_PKT_POLL_REGMEM_HEADER_op_shift
              | function << pkt.SDMA_PKT_POLL_REGMEM_HEADER_func_shift
              | 1 << pkt.SDMA_PKT_POLL_REGMEM_HEADER_mem_poll_shift)
    low, high = _dword_at(address)
    return [header, low, high, reference & WORD_MASK, WORD_MASK,
            pkt.SDMA_PKT_POLL_REGMEM_DW5_INTERVAL(POLL_INTERVAL)
            | pkt.SDMA_PKT_POLL_REGMEM_DW5_RETRY_COUNT(POLL_RETRY_FOREVER)]


def timestamp_packet(address: int) -> list[int]:
    """TIMESTAMP GET_GLOBAL: the 64-bit GPU clock to an 8-byte aligned `address`."""
    header = (pkt.SDMA_OP_TIMESTAMP << pkt.SDMA_PKT_TIMESTAMP_GET_GLOBAL_HEADER_op_shift
              | pkt.SDMA_SUBOP_TIMESTAMP_GET_GLOBAL << pkt.SDMA_PKT_TIMESTAMP_GET_GLOBAL_HEADER_sub_op_shift)
    low, high = _dword_at(address)
    return [header, low, high]


_ACQUIRE_MEM = pm4.acquire_mem_packet()  # the same words every time: built once
_PARTIAL_FLUSH = partial_flush_packet()


class AMDComputeQueue(Queue):
    """PM4 on the GC block's compute queue (MEC1 pipe 0 queue 0)."""

    kind = "compute"

    def __init__(self, device: "Device", gc) -> None:
        super().__init__(device, "compute")
        self.gc = gc
        # one dword of the ring always stays free (GCv11_0.submit: a full ring never reads empty)
        self.ring = RingSpace("GC compute ring", gc.ring_dwords, device.timeline, reserve_free=1)
        self._registers = {name: gc.register_offset(name) for name in (
            "regCOMPUTE_PGM_LO", "regCOMPUTE_PGM_RSRC1", "regCOMPUTE_PGM_RSRC3",
            "regCOMPUTE_TMPRING_SIZE", "regCOMPUTE_START_X", "regCOMPUTE_USER_DATA_0",
            "regCOMPUTE_RESOURCE_LIMITS", "regCOMPUTE_DISPATCH_SCRATCH_BASE_LO")}

    def register(self, name: str) -> int:
        return self._registers[name]

    def _emit_wait(self, signal: "Signal", value: int) -> list[int]:
        return pm4.wait_reg_mem_packet(memory=True, address0=signal.value_address,
                                       address1=signal.value_address >> 32, reference=value,
                                       mask=WORD_MASK, function=COMPARE_GREATER_EQUAL)

    def _emit_signal(self, signal: "Signal", value: int) -> list[int]:
        # INT_SEL on (gfx_v11_0_ring_emit_fence: AMDGPU_FENCE_FLAG_INT) when the IH delivers MSI-X,
        # so a waiter sleeping in AMDBackend.sleep_for_progress is woken by the EOP interrupt
        ih = getattr(self.device.backend, "ih", None)
        interrupt = bool(getattr(ih, "msix", False))
        return pm4.release_mem_packet(signal.value_address, value, bits64=True, interrupt=interrupt)

    def _emit_timestamp(self, signal: "Signal") -> list[int]:
        return release_mem_clock_packet(signal.timestamp_address)

    def _emit_exec(self, launch) -> list[int]:
        return _ACQUIRE_MEM + launch.words(self) + _PARTIAL_FLUSH

    def _emit_barrier(self) -> list[int]:
        return _PARTIAL_FLUSH + _ACQUIRE_MEM

    def _emit_indirect(self, address: int, dwords: int) -> list[int]:
        return pm4.indirect_buffer_packet(address, dwords)

    def _push(self, words: list[int], value: int) -> None:
        gc = self.gc
        self.ring.reserve(gc.wptr, len(words))
        gc.submit(words)
        self.ring.used(gc.wptr, value)

    def hardware_state(self) -> str:
        gc = self.gc
        return (f"GC ME1 pipe 0 queue 0: rptr report {gc.rptr():#x}, wptr {gc.wptr:#x} dwords, "
                f"ring {gc.ring_dwords:#x} dwords; {gc.hqd_state()}")


class AMDCopyQueue(Queue):
    """SDMA0's gfx ring."""

    kind = "copy"

    def __init__(self, device: "Device", sdma) -> None:
        super().__init__(device, "copy")
        self.sdma = sdma
        self.ring = RingSpace("SDMA0 ring", sdma.ring_bytes // DWORD, device.timeline)

    def _emit_wait(self, signal: "Signal", value: int) -> list[int]:
        return poll_regmem_packet(signal.value_address, value)

    def _emit_signal(self, signal: "Signal", value: int) -> list[int]:
        address = signal.value_address
        return fence_packet(address, value & WORD_MASK) + fence_packet(address + DWORD, value >> 32)

    def _emit_timestamp(self, signal: "Signal") -> list[int]:
        return timestamp_packet(signal.timestamp_address)

    def _emit_copy(self, dst: int, src: int, size: int) -> list[int]:
        words: list[int] = []
        for offset in range(0, size, COPY_MAX_BYTES):
            words += copy_linear_packet(dst + offset, src + offset, min(COPY_MAX_BYTES, size - offset))
        return words

    def _push(self, words: list[int], value: int) -> None:
        sdma = self.sdma
        self.ring.reserve(sdma.wptr // DWORD, len(words))
        sdma.submit(words)
        self.ring.used(sdma.wptr // DWORD, value)

    def hardware_state(self) -> str:
        sdma = self.sdma
        sdma._check_engine()  # a stopped engine is SDMAError naming the packet, not a timeout
        return (f"SDMA0 gfx ring: rptr {sdma.rptr():#x}, wptr {sdma.wptr:#x} bytes, ring "
                f"{sdma.ring_bytes:#x} bytes, CONTEXT_STATUS {sdma.context_status.read():#010x}")
