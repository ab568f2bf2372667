"""The Qualcomm backend of compute.Device: an Adreno GPU through KGSL (drivers.qcom) as memory,
queues and signals.

- Opening: "qcom:0" opens /dev/kgsl-3d0 through the seam given as `os=` (the host's by default; a
  mock machine's in tests, tools.mock_machines.qcom).
- Memory: "VRAM" and host buffers are both KGSL GPU objects in the shared system memory, mapped
  for the CPU (the GPU has no memory of its own).
- Queues: compute and copy, each a KGSL context (compute/qcom/queues.py).
- Programs: ir3 kernels launched with CP_EXEC_CS (compute/qcom/program.py).
- Sleeping until the GPU progresses: a short sleep (the queues' own waits sleep in the kernel).
"""
from __future__ import annotations

import re

from compute.qcom.program import QCOMProgram
from compute.qcom.queues import QCOMQueue
from drivers.qcom.device import KGSLDevice
from drivers.qcom.kgsl import DEVICE_PATH, wait_timestamp
from hal.errors import DeviceNotFound

DEVICE_PATTERN = re.compile(r"qcom:(\d+)$")
SCRATCH_BYTES = 4096  # one page for the dword cache flushes write
# Mesa src/freedreno/vulkan/tu_device.cc tu_device_ticks_to_ns: the always-on timer is 19.2 MHz
CLOCK_HZ = 19_200_000


class QCOMBackend:
    """One KGSL GPU for the compute layer (see the module docstring)."""

    clock_hz = CLOCK_HZ

    def __init__(self, device: str, *, os=None) -> None:
        match = DEVICE_PATTERN.match(device)
        if match is None or match.group(1) != "0":
            raise DeviceNotFound(f"{device!r}: a KGSL system has one GPU, qcom:0")
        self.kgsl = KGSLDevice(os, DEVICE_PATH)
        self.os = self.kgsl.os
        try:
            self.scratch = self.kgsl.alloc(SCRATCH_BYTES)
        except BaseException:
            self.kgsl.close()
            raise
        self.queues: list[QCOMQueue] = []

    def describe(self) -> str:
        return f"{self.kgsl.info.name} through {self.kgsl.path}"

    # -- memory ------------------------------------------------------------------------------------
    def alloc_vram(self, size: int):
        buffer = self.kgsl.alloc(size)
        return buffer.gpuaddr, buffer.region, buffer

    def alloc_host(self, size: int):
        return self.alloc_vram(size)

    def free(self, kind: str, handle) -> None:
        self.kgsl.free(handle)

    # -- queues and programs -----------------------------------------------------------------------
    def compute_queue(self, device) -> QCOMQueue:
        queue = QCOMQueue(device, "compute", self)
        self.queues.append(queue)
        return queue

    def copy_queue(self, device) -> QCOMQueue:
        queue = QCOMQueue(device, "copy", self)
        self.queues.append(queue)
        return queue

    def load_program(self, device, binary: bytes, name: str):
        """An ir3 kernel: the library's `name` for an empty binary, else ir3 assembly text
        (compute/qcom/program.py; vendor binaries through program.load_vendor)."""
        return QCOMProgram.from_binary(device, binary, name)

    def sleep_for_progress(self, timeout_s: float) -> None:
        """Sleep in KGSL's timestamp wait of the first queue with work outstanding (woken when it
        retires); a context KGSL invalidated after a fault raises ContextFaulted (EDEADLK) at once,
        so a waiter learns of a page fault instead of timing out."""
        for queue in self.queues:
            submitter = queue.submitter
            if submitter.last_timestamp and not submitter.done():
                milliseconds = max(1, int(timeout_s * 1000))
                wait_timestamp(self.os, self.kgsl.fd, queue.context_id, submitter.last_timestamp,
                               milliseconds)
                return
        self.os.sleep(timeout_s)

    def check_errors(self) -> None:
        """A context KGSL invalidated after a fault answers EDEADLK: raise it (ContextFaulted)."""
        for queue in self.queues:
            submitter = queue.submitter
            if submitter.last_timestamp:
                wait_timestamp(self.os, self.kgsl.fd, queue.context_id, submitter.last_timestamp, 1)

    def reset_compute_queue(self, why: str) -> None:
        """Every queue whose context is stuck (work that never retires) or faulted continues on a
        fresh KGSL context; the work on the old one is dropped."""
        for queue in self.queues:
            if queue.stuck():
                queue.reset()

    # -- teardown ----------------------------------------------------------------------------------
    def close(self) -> None:
        self.kgsl.close()
