"""Submission on one KGSL context: indirect buffers written into a GPU ring, GPU_COMMAND, waits.

`Submitter` owns a GPU object used as a ring of IB space. `submit(stream)` copies a
`cp.CommandStream` into the ring and issues IOCTL_KGSL_GPU_COMMAND; KGSL appends the context's
timestamp write after the IB and answers the timestamp the work retires at. IB space is reused only
once the timestamp of the submission that used it has retired (never a blind wrap-around).

`wait(timestamp, timeout_s)` sleeps in the kernel (IOCTL_KGSL_DEVICE_WAITTIMESTAMP_CTXTID) in short
slices of WAIT_SLICE_MS, so it stays interruptible and bounded; past the deadline it raises
`KGSLTimeout` naming the context, the timestamp awaited and the last one retired.
"""
from __future__ import annotations

from collections import deque

from drivers.qcom import kgsl
from drivers.qcom.cp import CommandStream
from drivers.qcom.device import KGSLDevice
from hal.errors import InvalidArgument

DEFAULT_RING_BYTES = 256 << 10  # this driver's choice: room for many small dispatches in flight
WAIT_SLICE_MS = 10  # this driver's choice: one kernel sleep, short enough to notice the deadline
DEFAULT_TIMEOUT_S = 10.0
IB_ALIGN = 64  # this driver's choice; the CP fetches IBs in dwords, whole lines are cheaper


def timestamp_passed(retired: int, wanted: int) -> bool:
    """Whether 32-bit timestamp `retired` is at or past `wanted` across wrap-around (kgsl.h
    timestamp_cmp: the difference taken as a signed 32-bit value)."""
    difference = (retired - wanted) & 0xFFFFFFFF
    return difference < 0x80000000


class Submitter:
    """IB ring and timestamps of one context of a KGSLDevice."""

    def __init__(self, device: KGSLDevice, context_id: int, ring_bytes: int = DEFAULT_RING_BYTES,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.device = device
        self.context_id = context_id
        self.timeout_s = timeout_s
        self.ring = device.alloc(ring_bytes)
        self.put = 0
        self.in_flight: deque[tuple[int, int, int]] = deque()  # (start, end, timestamp)
        self.last_timestamp = 0

    # -- IB space ------------------------------------------------------------------------------
    def _room(self, size: int) -> int:
        if size > self.ring.size:
            raise InvalidArgument(f"an IB of {size} bytes is larger than the {self.ring.size}-byte "
                                  "ring; split the work")
        while True:
            start = self.put
            if start + size > self.ring.size:
                start = 0
            if not any(_overlaps(start, start + size, lo, hi) for lo, hi, _ in self.in_flight):
                return start
            _, _, oldest = self.in_flight[0]
            self.wait(oldest)
            self._reclaim()

    def _reclaim(self) -> None:
        if not self.in_flight:
            return
        retired = kgsl.read_timestamp(self.device.os, self.device.fd, self.context_id)
        while self.in_flight and timestamp_passed(retired, self.in_flight[0][2]):
            self.in_flight.popleft()

    # -- submission ----------------------------------------------------------------------------
    def submit(self, stream: CommandStream) -> int:
        """Run `stream` as one IB; returns its timestamp."""
        data = stream.to_bytes()
        if not data:
            raise InvalidArgument("an empty command stream (KGSL rejects a zero-sized IB)")
        self._reclaim()
        size = -(-len(data) // IB_ALIGN) * IB_ALIGN
        start = self._room(size)
        self.ring.region.write(start, data)
        timestamp = kgsl.gpu_command(self.device.os, self.device.fd, self.device.scratch,
                                     self.context_id, [(self.ring.gpuaddr + start, len(data))])
        self.put = start + size
        self.in_flight.append((start, start + size, timestamp))
        self.last_timestamp = timestamp
        return timestamp

    def done(self) -> bool:
        """Whether everything submitted retired (a faulted context raises ContextFaulted)."""
        if not self.last_timestamp:
            return True
        if not kgsl.wait_timestamp(self.device.os, self.device.fd, self.context_id,
                                   self.last_timestamp, 1):
            return False
        return True

    def retired(self) -> int:
        return kgsl.read_timestamp(self.device.os, self.device.fd, self.context_id)

    def wait(self, timestamp: int, timeout_s: float | None = None) -> None:
        """Return once `timestamp` of this context retired; bounded by `timeout_s`."""
        os = self.device.os
        limit = self.timeout_s if timeout_s is None else timeout_s
        deadline = os.monotonic() + limit
        while True:
            remaining_ms = int((deadline - os.monotonic()) * 1000)
            slice_ms = max(1, min(WAIT_SLICE_MS, remaining_ms))
            if kgsl.wait_timestamp(os, self.device.fd, self.context_id, timestamp, slice_ms):
                return
            if os.monotonic() >= deadline:
                break
        retired = self.retired()
        if timestamp_passed(retired, timestamp):
            return
        raise kgsl.KGSLTimeout(
            f"context {self.context_id} of {self.device.path}: timestamp {timestamp} did not retire "
            f"within {limit:.3g} s (last retired {retired}); the GPU may be hung on that submission: "
            "destroy the context and create a new one", context_id=self.context_id,
            timestamp=timestamp, retired=retired)

    def synchronize(self, timeout_s: float | None = None) -> None:
        if self.last_timestamp:
            self.wait(self.last_timestamp, timeout_s)
        self._reclaim()

    def close(self) -> None:
        self.device.free(self.ring)


def _overlaps(start: int, end: int, lo: int, hi: int) -> bool:
    return start < hi and lo < end
