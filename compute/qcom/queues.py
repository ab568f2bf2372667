"""Compute and copy queues on KGSL contexts: each queue is a KGSL draw context with its own IB ring
(drivers.qcom.submit.Submitter); a recording becomes one CP command stream per submission.

- signal: CP_WAIT_FOR_IDLE, a cache flush (CACHE_FLUSH_TS), then CP_MEM_WRITE of the 64-bit value,
  so the value lands after everything before it is visible in memory;
- wait: CP_WAIT_REG_MEM on the low dword of the signal (WRITE_GE, POLL_MEMORY), as a CP compares
  32 bits; timeline values stay far below 2**32 within one device's life;
- timestamp: CP_REG_TO_MEM of the 64-bit always-on counter (19.2 MHz);
- copy: CP_MEMCPY in chunks (dword aligned addresses and sizes only);
- barrier: CP_WAIT_FOR_IDLE, a cache flush and CACHE_INVALIDATE.
Ring space is the Submitter's: reused once KGSL retired the timestamp of the submission using it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from autogen.qcom import a6xx, pm4
from compute.queue import Queue
from drivers.qcom.cp import CommandStream
from drivers.qcom.kgsl import ContextFaulted
from drivers.qcom.submit import Submitter
from hal.errors import HalError, InvalidArgument

if TYPE_CHECKING:
    from compute.device import Device
    from compute.signal import Signal

DWORD = 4
WORD_MASK = 0xFFFFFFFF
# this layer's choice: one CP_MEMCPY moves at most this many dwords (a long copy stays preemptible)
COPY_CHUNK_DWORDS = 1 << 18
_WRITE_GE = pm4.ENUMS["cp_cond_function"]["WRITE_GE"]
_POLL_MEMORY = pm4.ENUMS["poll_memory_type"]["POLL_MEMORY"]
_ALWAYS_ON_COUNTER = a6xx.REG_A6XX_CP_ALWAYS_ON_COUNTER.offset


def _stream_words(stream: CommandStream) -> list[int]:
    return stream.dwords


class QCOMQueue(Queue):
    """A queue over one KGSL context (compute or copy: the CP runs both)."""

    def __init__(self, device: "Device", kind: str, backend) -> None:
        super().__init__(device, kind)
        self.kind = kind
        self.backend = backend
        self.context_id = backend.kgsl.create_context()
        self.submitter = Submitter(backend.kgsl, self.context_id, timeout_s=device.timeout_s)

    def _flush_scratch(self) -> int:
        return self.backend.scratch.gpuaddr

    def _emit_wait(self, signal: "Signal", value: int) -> list[int]:
        address = signal.value_address
        header = pm4.CP_WAIT_REG_MEM_0.encode(FUNCTION=_WRITE_GE, POLL=_POLL_MEMORY)
        stream = CommandStream().packet(pm4.CP_WAIT_REG_MEM, header, address & WORD_MASK,
                                        address >> 32, value & WORD_MASK, WORD_MASK, 0)
        return _stream_words(stream)

    def _emit_signal(self, signal: "Signal", value: int) -> list[int]:
        stream = CommandStream().wait_for_idle().cache_flush(self._flush_scratch())
        stream.wait_mem_writes().mem_write64(signal.value_address, value)
        return _stream_words(stream)

    def _emit_timestamp(self, signal: "Signal") -> list[int]:
        header = pm4.CP_REG_TO_MEM_0.encode(REG=_ALWAYS_ON_COUNTER, CNT=2)
        header |= pm4.CP_REG_TO_MEM_0.field("64B").encode(1)
        address = signal.timestamp_address
        stream = CommandStream().wait_for_idle().packet(pm4.CP_REG_TO_MEM, header,
                                                        address & WORD_MASK, address >> 32)
        return _stream_words(stream)

    def _emit_copy(self, dst: int, src: int, size: int) -> list[int]:
        if dst % DWORD or src % DWORD or size % DWORD:
            raise InvalidArgument(f"{self.name} queue: CP_MEMCPY copies whole dwords; {size} bytes "
                                  f"{src:#x} -> {dst:#x} are not dword aligned")
        stream = CommandStream().cache_invalidate()
        total = size // DWORD
        for first in range(0, total, COPY_CHUNK_DWORDS):
            count = min(COPY_CHUNK_DWORDS, total - first)
            stream.memcpy(dst + first * DWORD, src + first * DWORD, count)
        return _stream_words(stream)

    def _emit_exec(self, launch) -> list[int]:
        """The dispatch's CP stream (compute/qcom/program.py, drivers/qcom/dispatch.py)."""
        if self.kind != "compute":
            raise InvalidArgument(f"{self.name} queue: kernels run on the compute queue")
        return list(launch.words)

    def _emit_indirect(self, address: int, dwords: int) -> list[int]:
        """CP_INDIRECT_BUFFER: run `dwords` dwords at `address` as an IB2 (a graph's commands)."""
        return _stream_words(CommandStream().packet(pm4.CP_INDIRECT_BUFFER, address & WORD_MASK,
                                                    address >> 32, dwords))

    def _emit_barrier(self) -> list[int]:
        stream = CommandStream().wait_for_idle().cache_flush(self._flush_scratch()).cache_invalidate()
        return _stream_words(stream)

    def _push(self, words: list[int], value: int) -> None:
        stream = CommandStream()
        stream.dwords = list(words)
        self.submitter.submit(stream)

    def stuck(self) -> bool:
        """Whether the context faulted or holds work that has not retired."""
        try:
            return not self.submitter.done()
        except ContextFaulted:
            return True

    def reset(self) -> None:
        """Drop the context (a hung or faulted one) and continue on a fresh one."""
        kgsl = self.backend.kgsl
        kgsl.destroy_context(self.context_id)
        self.submitter.close()
        self.context_id = kgsl.create_context()
        self.submitter = Submitter(kgsl, self.context_id, timeout_s=self.device.timeout_s)

    def hardware_state(self) -> str:
        submitter = self.submitter
        try:
            retired = submitter.retired()
        except HalError as exc:  # a faulted context answers EDEADLK: say so instead
            return f"KGSL context {self.context_id}: {exc}"
        return (f"KGSL context {self.context_id}: last submitted timestamp "
                f"{submitter.last_timestamp}, retired {retired}")
