"""The NVIDIA backend of compute.Device: a GPU driven through the kernel RM (drivers.nv).

- Opening: "nv:N" opens GPU N of the host's NVIDIA driver (/dev/nvidiactl); "mock:nv" or
  "mock:nv:<gpu>" (h100, h200, a100, rtx3090, rtx4090) asks the mock factory registered for "nv"
  with compute.device for a machine with the simulated driver and opens GPU 0 there.
- Memory: VRAM (NV01_MEMORY_LOCAL_USER) and host memory (NV01_MEMORY_SYSTEM), each mapped for the
  GPU through UVM and for the CPU (NVDevice.alloc_memory); the GPU address is the UVM mapping's.
- Queues: compute and copy on the device's two GPFIFO channels (compute/nv/queues.py).
- Programs: compute/nv/program.py. The SM version the cubin is chosen for comes from the
  generation: GA100 sm_80, GA10x sm_86, AD10x sm_89, GH100 sm_90 (CUDA compute capabilities).
- Errors: each channel's error notifier (NvNotification, nvgputypes.h) is read before each
  submission, while waiting and after synchronize; a robust-channel error is `ChannelError` naming
  the nverror.h code (ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT for an MMU fault), the engine the
  notifier names and the channels whose notifiers report it. It is TSG-wide: the RM stops both
  channels (they share one channel group) and never runs that group again, so `reset_compute_queue`
  frees the group and builds a new one (NVDevice.reset_channel_group), and both queues start
  empty on the new channels: what they had not run is lost, as on AMD after a queue reset.
"""
from __future__ import annotations

import logging
import re
import struct

from autogen.nv.r535 import classes as cl
from compute.nv.program import NVProgram
from compute.nv.queues import NVComputeQueue, NVCopyQueue
from drivers.nv import device as nv_device
from drivers.nv.gpfifo import ChannelError
from hal.errors import DeviceNotFound

log = logging.getLogger(__name__)

DEVICE_PATTERN = re.compile(r"nv:(\d+)$")
MOCK_PATTERN = re.compile(r"mock:nv(?::(\w+))?$")
# CUDA C++ Programming Guide, compute capabilities: GA100 8.0, GA10x 8.6, AD10x 8.9, GH100 9.0;
# the largest shared memory carve-out per SM (KiB) of each, same guide ("Shared Memory" per
# architecture): 164, 100, 100, 228
SM_VERSIONS = {nv_device.AMPERE_GA100.name: (80, 164), nv_device.AMPERE_GA10X.name: (86, 100),
               nv_device.ADA.name: (89, 100), nv_device.HOPPER.name: (90, 228)}
# where the SM maps shared and local memory into the generic address space (SET_SHADER_SHARED/
# LOCAL_MEMORY_WINDOW): (shared, local) as tinygrad's ops_nv.py programs them on every generation since
# its commit 36536ef6f0 (2025-06; before, 0xfe000000/0xff000000 below Blackwell), far above the VA
# range this driver allocates from
WINDOWS = (0x729400000000, 0x729300000000)
CLOCK_HZ = 1_000_000_000  # semaphore timestamps count nanoseconds (nvgputypes.h timeStamp)
# nverror.h robust-channel codes the error notifier reports (info32)
ROBUST_CHANNEL_NAMES = {13: "ROBUST_CHANNEL_GR_EXCEPTION", 31: "ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT",
                        32: "ROBUST_CHANNEL_PBDMA_ERROR", 39: "ROBUST_CHANNEL_CE0_ERROR"}
# NvNotification (nvgputypes.h): timeStamp (8 bytes, skipped), info32, info16, status
NOTIFICATION_FORMAT = "<8xIHH"


class NVBackend:
    """One NVIDIA GPU for the compute layer (see the module docstring)."""

    clock_hz = CLOCK_HZ

    def __init__(self, device: str, *, os=None) -> None:
        self.machine = None
        mock = MOCK_PATTERN.match(device)
        if mock:
            from compute.device import mock_factory

            self.machine = mock_factory("nv")(mock.group(1) or "h100")
            os = self.machine.os
            index = 0
        else:
            match = DEVICE_PATTERN.match(device)
            if match is None:
                raise DeviceNotFound(f"{device!r} is not an NVIDIA device string (nv:N or mock:nv[:gpu])")
            index = int(match.group(1))
            if os is None:
                from hal.os import host

                os = host()
        self.os = os
        try:
            self.nv = nv_device.NVDevice.open(os, index)
        except BaseException:
            if self.machine is not None:
                self.machine.close()
            raise
        generation = self.nv.generation
        self.sm, self.shared_limit_kib = SM_VERSIONS[generation.name]
        self.shared_window, self.local_window = WINDOWS
        self.local_memory = None
        self.local_per_thread = 0
        self.local: tuple[int, int] | None = None  # (buffer address, bytes per TPC) the engine uses
        self.compute = None
        self.queues: list = []  # the compute and copy queues, moved to new channels by a reset
        self.error = None  # the ChannelError already raised once, raised again until a reset
        self._notifier_words = self._notifier_views()

    def _notifier_views(self) -> list:
        """Each channel's error notifier as 32-bit words, for the check before every submission;
        empty when a notifier's region has no word view (the check then reads records)."""
        views = [getattr(channel.notifier.cpu.region, "u32", None) for channel in self.nv.channels]
        return [] if any(view is None for view in views) else views

    def describe(self) -> str:
        kind = "mock NVIDIA GPU" if self.machine is not None else "NVIDIA GPU"
        return f"{kind} {self.nv.index} ({self.nv.generation.name}, sm_{self.sm})"

    # -- memory ------------------------------------------------------------------------------------
    def alloc_vram(self, size: int):
        memory = self.nv.alloc_memory(size, location="vram", name="compute buffer")
        return memory.gpu_va, memory.cpu.region, memory

    def alloc_host(self, size: int):
        memory = self.nv.alloc_memory(size, location="sysmem", name="host buffer")
        return memory.gpu_va, memory.cpu.region, memory

    def free(self, kind: str, handle) -> None:
        self.nv.free_memory(handle)

    def ensure_local_memory(self, per_thread: int) -> None:
        """A local memory buffer big enough for `per_thread` bytes (drivers.nv.qmd
        local_bytes_per_thread: stack + reserve) in every warp slot of every SM of every TPC, sized
        per TPC from the RM's GR info (drivers.nv.device GRInfo). Every kernel needs one (its
        reserved area at least); it grows when a kernel needs more per thread."""
        if per_thread <= self.local_per_thread:
            return
        gr_info = self.nv.gr_info
        per_tpc = gr_info.local_bytes_per_tpc(per_thread)
        size = gr_info.local_buffer_bytes(per_tpc)
        memory = self.nv.alloc_memory(size, location="vram", cpu_access=False, name="local memory")
        self.local_memory = memory  # the previous buffer stays until close (work may still use it)
        self.local_per_thread = per_thread
        self.local = (memory.gpu_va, per_tpc)
        if self.compute is not None:
            self.compute.local_memory(memory.gpu_va, per_tpc)

    # -- queues and programs -----------------------------------------------------------------------
    def compute_queue(self, device) -> NVComputeQueue:
        self.compute = NVComputeQueue(device, self)
        self.queues.append(self.compute)
        return self.compute

    def copy_queue(self, device) -> NVCopyQueue:
        queue = NVCopyQueue(device, self)
        self.queues.append(queue)
        return queue

    def load_program(self, device, binary: bytes, name: str) -> NVProgram:
        return NVProgram(device, binary, name)

    # -- progress and errors -----------------------------------------------------------------------
    def check_errors(self) -> None:
        """Raise the robust-channel error the RM wrote to the channels' error notifiers, if any.

        For a TSG-wide error the RM writes the same record (info32 the code, info16 the NV2080
        engine type that raised it) to every channel of the group (535.113.01
        kernel_rc_notification.c krcErrorSetNotifier), so the notifiers do not say which channel
        faulted; the engine type does say which engine, and each of our channels runs on one."""
        if self.error is not None:
            raise self.error
        for words in self._notifier_words:
            # the record's info32 (dword 2) and info16/status (dword 3): zero until the RM writes it
            if words[2] or words[3]:
                break
        else:
            if self._notifier_words:
                return
        reports = []
        for channel in self.nv.channels:
            record = channel.notifier.cpu.region.read(0, nv_device.NOTIFICATION_BYTES)
            code, info16, status = struct.unpack(NOTIFICATION_FORMAT, record)
            if status or code:
                reports.append((channel.name, code, info16))
        if not reports:
            return
        _, code, engine_type = reports[0]
        name = ROBUST_CHANNEL_NAMES.get(code, f"robust-channel error {code}")
        reported_by = tuple(channel for channel, _, _ in reports)
        engine = engine_channel(engine_type)
        on = f"the {engine} channel's engine" if engine else f"engine type {engine_type:#x}"
        self.error = ChannelError(name, code, engine_type,
                                  f"{self.describe()}: the RM stopped the channel group with {name} "
                                  f"({code}) on {on}, reported by the {' and '.join(reported_by)} "
                                  f"channel notifier(s); every channel of the group is stopped and "
                                  f"what the compute and copy queues had not run is lost: "
                                  f"reset_compute_queue() builds a new channel group",
                                  reported_by, engine)
        raise self.error

    def sleep_for_progress(self, timeout_s: float) -> None:
        self.check_errors()
        self.os.sleep(timeout_s)
        self.check_errors()

    def reset_compute_queue(self, why: str) -> None:
        """Free the channel group and build a new one (NVDevice.reset_channel_group); the compute
        and copy queues move to the new channels, empty. Both channels share the group, so the copy
        queue's unfinished work is lost with the compute queue's (the RM tears the whole TSG down)."""
        if self.queues:
            timeline = self.queues[0].device.timeline
            last = self.queues[0].device.timeline_value - 1
            states = "; ".join(queue.hardware_state_unchecked() for queue in self.queues)
            lost = (f"the work of timeline values {timeline.value + 1}..{last} is dropped"
                    if timeline.value < last else "no work was pending")
            log.warning("%s: reset of the channel group (%s): %s (%s)", self.describe(), why, lost, states)
        self.nv.reset_channel_group(why)
        self.error = None
        self._notifier_words = self._notifier_views()
        for queue in self.queues:
            queue.attach(self.nv.compute if queue.kind == "compute" else self.nv.copy)

    # -- teardown ----------------------------------------------------------------------------------
    def close(self) -> None:
        try:
            self.nv.close()
        finally:
            if self.machine is not None:
                self.machine.close()


def engine_channel(engine_type: int) -> str:
    """Which of our channels runs on the engine an error notifier's info16 names: compute on the
    graphics engine, copy on a copy engine (NV2080_ENGINE_TYPE_*, autogen.nv.r535.classes); ""
    for another engine."""
    if engine_type == cl.NV2080_ENGINE_TYPE_GRAPHICS:
        return "compute"
    if cl.NV2080_ENGINE_TYPE_IS_COPY(engine_type):
        return "copy"
    return ""
