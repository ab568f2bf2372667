"""The NVIDIA queues of the HCQ layer: compute and copy, each on its own GPFIFO channel.

A submission's words are method headers and data (drivers.nv.gpfifo) written into the queue's
pushbuffer (host memory the GPU reads), one GP entry per run of words; an indirect segment
(compute.graph) is a GP entry of its own pointing at the graph's memory. Pushbuffer space and GP
entries are reclaimed only once the device timeline passed the submission that used them
(`RingSpace`).

Both queues (host methods, clc56f.h / clc86f.h; any subchannel):
- signal: SEM_ADDR_LO/HI, SEM_PAYLOAD_LO/HI, SEM_EXECUTE (RELEASE, 64-bit payload, RELEASE_WFI so
  the engine is idle first) in one incrementing method run;
- wait: the same with ACQ_CIRC_GEQ (the engine waits until the 64-bit value is at least the
  payload, wrap-around safe) and ACQUIRE_SWITCH_TSG (the scheduler may run others meanwhile).

Compute (subchannel 1, the generation's compute class; clc6c0.h methods):
- once: SET_OBJECT, the shared and local memory windows, and the local memory buffer once the
  first program is loaded (and again when a program needs more): SET_SHADER_LOCAL_MEMORY_A/B its
  address, _NON_THROTTLED_A/B the bytes of each TPC's slice, _NON_THROTTLED_C the SM count bound;
- exec: SEND_PCAS_A (the QMD's address >> 8) and SEND_SIGNALING_PCAS2_B with
  INVALIDATE_COPY_SCHEDULE; the QMD invalidates the instruction, constant, data and texture caches
  before the grid runs (drivers.nv.qmd), and the RELEASE_WFI of the next signal waits for it;
- barrier: WFI (scope all) and INVALIDATE_SHADER_CACHES_NO_WFI (instruction, global data, constant).

Copy (subchannel 4, the generation's copy class; clc6b5.h methods, the same in clc7b5.h/clc8b5.h):
- copy: OFFSET_IN/OUT, LINE_LENGTH_IN and LAUNCH_DMA (non-pipelined, pitch to pitch, one line,
  flush) per chunk of at most COPY_CHUNK bytes.

- timestamp: SEM_EXECUTE REDUCTION IOR of 0 on the 64-bit value (unchanged) with
  RELEASE_TIMESTAMP, which puts the GPU time (ns) in the 8 bytes after it: the signal's timestamp.
  The host writes 16 bytes there and wants them 16-byte aligned (dev_pbdma.ref.txt); signals and
  profile slots are 16-byte records from page-aligned memory, and an unaligned one is refused here.

After a channel-group reset (compute/nv/device.py reset_compute_queue) `attach` moves a queue to
its new channel: a fresh GP ring (GPPut 0) and the setup words (SET_OBJECT, windows, local memory)
again, since the new channel's engine object starts unbound.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from autogen.nv.r535 import classes as cl
from compute.queue import Queue, RingSpace
from drivers.nv import gpfifo
from drivers.nv.gpfifo import SUBCHANNEL_COMPUTE, SUBCHANNEL_COPY, incrementing
from hal.errors import InvalidArgument
from hal.region import pack_words

if TYPE_CHECKING:
    from compute.device import Device
    from compute.signal import Signal

DWORD = 4
WORD_MASK = 0xFFFFFFFF
PUSHBUFFER_BYTES = 1 << 20  # this layer's choice: host memory per queue for method streams
COPY_CHUNK = 1 << 30  # this layer's choice: LINE_LENGTH_IN is 32 bits; stay well inside it
# clc56f.h SEM_EXECUTE fields: OPERATION 2:0, ACQUIRE_SWITCH_TSG 12:12, RELEASE_WFI 20:20,
# PAYLOAD_SIZE 24:24
SEM_ACQUIRE_SWITCH_TSG_SHIFT = 12
SEM_RELEASE_WFI_SHIFT = 20
SEM_PAYLOAD_SIZE_SHIFT = 24
SEM_RELEASE = (cl.NVC56F_SEM_EXECUTE_OPERATION_RELEASE
               | cl.NVC56F_SEM_EXECUTE_RELEASE_WFI_EN << SEM_RELEASE_WFI_SHIFT
               | cl.NVC56F_SEM_EXECUTE_PAYLOAD_SIZE_64BIT << SEM_PAYLOAD_SIZE_SHIFT)
SEM_ACQUIRE = (cl.NVC56F_SEM_EXECUTE_OPERATION_ACQ_CIRC_GEQ
               | cl.NVC56F_SEM_EXECUTE_ACQUIRE_SWITCH_TSG_EN << SEM_ACQUIRE_SWITCH_TSG_SHIFT
               | cl.NVC56F_SEM_EXECUTE_PAYLOAD_SIZE_64BIT << SEM_PAYLOAD_SIZE_SHIFT)
# a timestamp without touching the value: a 64-bit REDUCTION IOR with payload 0 leaves the value
# as it is, and RELEASE_TIMESTAMP writes the time after it (the signal's layout: value at 0,
# timestamp at 8). clc56f.h SEM_EXECUTE: REDUCTION 30:27, REDUCTION_FORMAT 31:31, RELEASE_TIMESTAMP
# 25:25. NVIDIA/open-gpu-doc c8607fe576b53ff821ffcf97e7548d2de11c4eaf manuals/ampere/ga100/
# dev_pbdma.ref.txt documents it: "RELEASE and REDUCTION cause a semaphore release to occur, ...
# causing a timestamp to be written if RELEASE_TIMESTAMP is EN", 16 bytes at a 16-byte aligned
# address (payload, then the timer at +8). Not yet run on hardware.
SEM_REDUCTION_SHIFT = 27
SEM_REDUCTION_FORMAT_SHIFT = 31
SEM_RELEASE_TIMESTAMP_SHIFT = 25
SEM_TIMESTAMP_ALIGNMENT = 16  # dev_pbdma.ref.txt (same commit): else NV_PBDMA_INTR_0_SEMAPHORE
SEM_TIMESTAMP = (cl.NVC56F_SEM_EXECUTE_OPERATION_REDUCTION
                 | cl.NVC56F_SEM_EXECUTE_RELEASE_WFI_EN << SEM_RELEASE_WFI_SHIFT
                 | cl.NVC56F_SEM_EXECUTE_PAYLOAD_SIZE_64BIT << SEM_PAYLOAD_SIZE_SHIFT
                 | cl.NVC56F_SEM_EXECUTE_RELEASE_TIMESTAMP_EN << SEM_RELEASE_TIMESTAMP_SHIFT
                 | cl.NVC56F_SEM_EXECUTE_REDUCTION_IOR << SEM_REDUCTION_SHIFT
                 | cl.NVC56F_SEM_EXECUTE_REDUCTION_FORMAT_UNSIGNED << SEM_REDUCTION_FORMAT_SHIFT)
# clc6b5.h LAUNCH_DMA fields: DATA_TRANSFER_TYPE 1:0, FLUSH_ENABLE 2:2, SRC_MEMORY_LAYOUT 7:7,
# DST_MEMORY_LAYOUT 8:8
LAUNCH_DMA_COPY = (cl.NVC6B5_LAUNCH_DMA_DATA_TRANSFER_TYPE_NON_PIPELINED
                   | cl.NVC6B5_LAUNCH_DMA_FLUSH_ENABLE_TRUE << 2
                   | cl.NVC6B5_LAUNCH_DMA_SRC_MEMORY_LAYOUT_PITCH << 7
                   | cl.NVC6B5_LAUNCH_DMA_DST_MEMORY_LAYOUT_PITCH << 8)
# clc6c0.h INVALIDATE_SHADER_CACHES_NO_WFI: INSTRUCTION 0:0, GLOBAL_DATA 4:4, CONSTANT 12:12
INVALIDATE_ALL = (cl.NVC6C0_INVALIDATE_SHADER_CACHES_NO_WFI_INSTRUCTION_TRUE
                  | cl.NVC6C0_INVALIDATE_SHADER_CACHES_NO_WFI_GLOBAL_DATA_TRUE << 4
                  | cl.NVC6C0_INVALIDATE_SHADER_CACHES_NO_WFI_CONSTANT_TRUE << 12)
# clc6c0.h SEND_SIGNALING_PCAS2_B_PCAS_ACTION: invalidate the QMD cache, copy and schedule it
PCAS_LAUNCH = cl.NVC6C0_SEND_SIGNALING_PCAS2_B_PCAS_ACTION_INVALIDATE_COPY_SCHEDULE
QMD_ADDRESS_SHIFT = 8  # clc6c0.h SEND_PCAS_A_QMD_ADDRESS_SHIFTED8
# SET_SHADER_LOCAL_MEMORY_NON_THROTTLED_C_MAX_SM_COUNT (clc6c0.h, 8:0): the value tinygrad's ops_nv.py
# NVComputeQueue.setup writes beside the per-TPC size; the header does not say what it bounds
LOCAL_MEMORY_MAX_SM_COUNT = 0xFF


class Indirect:
    """A segment of commands in GPU memory, run through a GP entry of its own (compute.graph)."""

    __slots__ = ("address", "dwords")

    def __init__(self, address: int, dwords: int) -> None:
        self.address = address
        self.dwords = dwords


def semaphore_words(subchannel: int, address: int, value: int, operation: int) -> list[int]:
    return incrementing(subchannel, cl.NVC86F_SEM_ADDR_LO, address & WORD_MASK, address >> 32,
                        value & WORD_MASK, (value >> 32) & WORD_MASK, operation)


class NVQueue(Queue):
    """A GPFIFO channel's queue: pushbuffer + GP ring, both reclaimed by the timeline."""

    subchannel = 0

    def __init__(self, device: "Device", name: str, channel, backend) -> None:
        super().__init__(device, name)
        self.backend = backend
        self.pushbuffer = device.allocate(PUSHBUFFER_BYTES, host=True)
        self.words_space = RingSpace(f"{name} pushbuffer", PUSHBUFFER_BYTES // DWORD, device.timeline)
        self.position = 0  # monotonic dword position in the pushbuffer
        self.attach(channel)

    def attach(self, channel) -> None:
        """Submit to `channel` (a drivers.nv.device.NVChannel) from now on: its GP ring from entry 0
        and the setup words first. The pushbuffer stays; its space returns with the timeline."""
        self.channel = channel
        ring = channel.gpfifo.cpu.region
        userd_offset = channel.entries * gpfifo.GP_ENTRY_SIZE
        self.gpfifo = gpfifo.GPFIFO(self.name, ring.sub(0, userd_offset), channel.entries,
                                    ring.sub(userd_offset, ring.size - userd_offset),
                                    self.backend.nv.doorbell.region, channel.work_submit_token)
        # GPPut == GPGet means empty, so one entry always stays free
        self.entry_space = RingSpace(f"{self.name} GPFIFO", channel.entries, self.device.timeline,
                                     reserve_free=1)
        self.setup: list[int] = self.initial_words()

    def initial_words(self) -> list[int]:
        return []

    def _emit_wait(self, signal: "Signal", value: int) -> list[int]:
        return semaphore_words(self.subchannel, signal.value_address, value, SEM_ACQUIRE)

    def _emit_signal(self, signal: "Signal", value: int) -> list[int]:
        return semaphore_words(self.subchannel, signal.value_address, value, SEM_RELEASE)

    def _emit_timestamp(self, signal: "Signal") -> list[int]:
        if signal.value_address % SEM_TIMESTAMP_ALIGNMENT:
            raise InvalidArgument(f"{self.name} queue: timestamp of signal {signal.name!r} at "
                                  f"{signal.value_address:#x}: the host writes 16 bytes there and needs "
                                  f"them 16-byte aligned (else a PBDMA semaphore error)")
        return semaphore_words(self.subchannel, signal.value_address, 0, SEM_TIMESTAMP)

    def _emit_indirect(self, address: int, dwords: int) -> list:
        return [Indirect(address, dwords)]

    def _push(self, words: list, value: int) -> None:
        self.backend.check_errors()
        if self.setup:
            words = self.setup + words
            self.setup = []
        if Indirect in set(map(type, words)):
            runs: list = []
            current: list[int] = []
            for word in words:
                if type(word) is Indirect:
                    if current:
                        runs.append(current)
                        current = []
                    runs.append(word)
                else:
                    current.append(word)
            if current:
                runs.append(current)
        else:
            runs = [words]  # the common case: one segment of methods
        self.entry_space.reserve(self.gpfifo.put, len(runs))
        for run in runs:
            if type(run) is Indirect:
                self.gpfifo.push(run.address, run.dwords)
                continue
            size = PUSHBUFFER_BYTES // DWORD
            start = self.position % size
            if start + len(run) > size:
                self.position += size - start  # a segment never wraps: skip to the ring's start
            self.words_space.reserve(self.position, len(run))
            offset = (self.position % size) * DWORD
            self.pushbuffer.cpu_view.write(offset, pack_words(run))
            self.position += len(run)
            self.gpfifo.push(self.pushbuffer.gpu_address + offset, len(run))
        self.words_space.used(self.position, value)
        self.entry_space.used(self.gpfifo.put, value)

    def hardware_state(self) -> str:
        self.backend.check_errors()  # a channel error is raised by name, not reported as a timeout
        return self.gpfifo.state()

    def hardware_state_unchecked(self) -> str:
        """GPPut/GPGet without raising a channel error (for the message of a reset)."""
        return self.gpfifo.state()


class NVComputeQueue(NVQueue):
    kind = "compute"
    subchannel = SUBCHANNEL_COMPUTE

    def __init__(self, device: "Device", backend) -> None:
        # the local memory buffer the engine uses: (address, bytes per TPC)
        self.local: tuple[int, int] | None = backend.local
        super().__init__(device, "compute", backend.nv.compute, backend)

    def initial_words(self) -> list[int]:
        backend = self.backend
        subchannel = self.subchannel
        words = incrementing(subchannel, cl.NVC86F_SET_OBJECT, backend.nv.generation.compute_class)
        words += incrementing(subchannel, cl.NVC6C0_SET_SHADER_LOCAL_MEMORY_WINDOW_A,
                              backend.local_window >> 32, backend.local_window & WORD_MASK)
        words += incrementing(subchannel, cl.NVC6C0_SET_SHADER_SHARED_MEMORY_WINDOW_A,
                              backend.shared_window >> 32, backend.shared_window & WORD_MASK)
        if self.local is not None:
            words += self._local_memory_words(*self.local)
        return words

    def local_memory(self, address: int, per_tpc: int) -> None:
        """Point the engine at a local memory buffer of `per_tpc` bytes for each TPC (before the
        next submission's commands)."""
        self.local = (address, per_tpc)
        self.setup += self._local_memory_words(address, per_tpc)

    def _local_memory_words(self, address: int, per_tpc: int) -> list[int]:
        subchannel = self.subchannel
        return (incrementing(subchannel, cl.NVC6C0_SET_SHADER_LOCAL_MEMORY_A, address >> 32,
                             address & WORD_MASK)
                + incrementing(subchannel, cl.NVC6C0_SET_SHADER_LOCAL_MEMORY_NON_THROTTLED_A,
                               per_tpc >> 32, per_tpc & WORD_MASK, LOCAL_MEMORY_MAX_SM_COUNT))

    def _emit_exec(self, launch) -> list[int]:
        return incrementing(self.subchannel, cl.NVC6C0_SEND_PCAS_A, launch.qmd_address >> QMD_ADDRESS_SHIFT,
                            ) + incrementing(self.subchannel, cl.NVC6C0_SEND_SIGNALING_PCAS2_B, PCAS_LAUNCH)

    def _emit_barrier(self) -> list[int]:
        return (incrementing(self.subchannel, cl.NVC56F_WFI, cl.NVC56F_WFI_SCOPE_ALL)
                + incrementing(self.subchannel, cl.NVC6C0_INVALIDATE_SHADER_CACHES_NO_WFI, INVALIDATE_ALL))


class NVCopyQueue(NVQueue):
    kind = "copy"
    subchannel = SUBCHANNEL_COPY

    def __init__(self, device: "Device", backend) -> None:
        super().__init__(device, "copy", backend.nv.copy, backend)

    def initial_words(self) -> list[int]:
        return incrementing(self.subchannel, cl.NVC86F_SET_OBJECT, self.backend.nv.generation.copy_class)

    def _emit_copy(self, dst: int, src: int, size: int) -> list[int]:
        words: list[int] = []
        for offset in range(0, size, COPY_CHUNK):
            chunk = min(COPY_CHUNK, size - offset)
            source = src + offset
            target = dst + offset
            words += incrementing(self.subchannel, cl.NVC6B5_OFFSET_IN_UPPER, source >> 32,
                                  source & WORD_MASK, target >> 32, target & WORD_MASK)
            words += incrementing(self.subchannel, cl.NVC6B5_LINE_LENGTH_IN, chunk)
            words += incrementing(self.subchannel, cl.NVC6B5_LAUNCH_DMA, LAUNCH_DMA_COPY)
        return words
