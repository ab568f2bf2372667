"""Profiling: a Chrome/Perfetto trace of what the GPU ran and what the driver's Python did.

`Profiler(device)` (or `Device.profile()`, or the environment variable `GPUHAL_PROFILE=path.json`,
which profiles every Device from its opening and writes the trace when it closes) makes the
queues bracket each kernel (`Queue.exec`) and each copy (`Queue.copy`) with two GPU timestamps
(`Queue.timestamp`: on AMD a RELEASE_MEM of the GPU clock at end of pipe, or SDMA's TIMESTAMP)
into timestamp slots of its own, host memory the CPU reads. Graph replays record their kernels'
timestamps the same way (compute.graph). The driver's Python spans (`span(name)`: launches,
submissions, graph replays, synchronizations) are timed with `time.perf_counter_ns`.

A command's timestamps are read once the device timeline passed the submission that holds them
(`collect()`, called by `save()`); their slots are reused after that. GPU clock ticks become
microseconds with the backend's `clock_hz`, on the CPU's time base: `start()` submits one
timestamp and pairs the tick count with the CPU time half-way through the round trip.

`save(path)` writes the Chrome trace event format (JSON object with `traceEvents`): process 1
is the driver (one thread, the Python spans), process 2 the GPU with one thread (track) per queue;
each kernel and copy is a complete event (`ph` "X") with `ts`/`dur` in microseconds and its raw
GPU ticks and timeline value in `args`. chrome://tracing and ui.perfetto.dev load it.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from typing import TYPE_CHECKING

from compute.signal import SIGNAL_BYTES, Signal
from hal.errors import InvalidArgument

if TYPE_CHECKING:
    from compute.device import Device
    from compute.queue import Queue

ENVIRONMENT = "GPUHAL_PROFILE"
SLOT_PAGE = 4096  # timestamp slots are taken a host page at a time
DRIVER_PID = 1
GPU_PID = 2
DRIVER_TID = 1


class Record:
    """One profiled GPU command: its name, queue, the two timestamp slots and, once submitted,
    the timeline value that proves it done. `kind` is "kernel" or "copy"."""

    __slots__ = ("name", "kind", "queue", "start", "end", "value", "owned")

    def __init__(self, name: str, kind: str, queue: "Queue", start: Signal, end: Signal,
                 owned: bool = False) -> None:
        self.name = name
        self.kind = kind
        self.queue = queue
        self.start = start
        self.end = end
        self.value: int | None = None
        self.owned = owned  # slots belong to a graph and outlive the record


class Profiler:
    """Timestamps of the GPU commands and spans of the driver (see the module docstring)."""

    def __init__(self, device: "Device", path: str | None = None) -> None:
        self.device = device
        self.path = path
        self.clock_hz = device.backend.clock_hz
        self.events: list[dict] = []  # finished trace events
        self.pending: list[Record] = []  # submitted or being recorded, timestamps not read yet
        self._free: list[Signal] = []
        self._pages = []
        self._tids: dict[str, int] = {}
        self._origin_ticks = 0
        self._origin_us = 0.0
        self.active = False

    # -- lifetime ----------------------------------------------------------------------------------
    def start(self) -> "Profiler":
        """Pair the GPU clock with the CPU's and make the device's queues report to this profiler."""
        device = self.device
        if device.profiler is not None and device.profiler is not self:
            raise InvalidArgument(f"{device.name}: a profiler is already active")
        queue = device.compute_queue
        probe = self.slot()
        before = time.perf_counter_ns()
        queue.timestamp(probe)
        device.timeline.wait(queue.submit())
        after = time.perf_counter_ns()
        self._origin_ticks = probe.timestamp
        self._origin_us = (before + after) / 2000
        self._free.append(probe)
        device.profiler = self
        self.active = True
        return self

    def stop(self) -> None:
        """Queues stop reporting; what was recorded stays until `save`."""
        if self.device.profiler is self:
            self.device.profiler = None
        self.active = False

    def __enter__(self) -> "Profiler":
        return self if self.active else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self.path is not None:
            self.save(self.path)

    # -- GPU commands ------------------------------------------------------------------------------
    def slot(self) -> Signal:
        """A timestamp slot (a 16-byte signal in host memory)."""
        if not self._free:
            page = self.device.allocate(SLOT_PAGE, host=True)
            self._pages.append(page)
            for offset in range(0, SLOT_PAGE, SIGNAL_BYTES):
                signal = Signal(self.device, "profile", page.cpu_view, offset, page.gpu_address + offset)
                signal.value = 0
                self._free.append(signal)
        return self._free.pop()

    def command(self, queue: "Queue", name: str, kind: str, owned: bool = False) -> Record:
        """A record for a command `queue` is recording; the queue brackets it with the timestamps."""
        record = Record(name, kind, queue, self.slot(), self.slot(), owned)
        self.pending.append(record)
        return record

    def replayed(self, record: Record) -> None:
        """A graph's record runs again (its slots were read by `collect` before the replay)."""
        record.value = None
        self.pending.append(record)

    def committed(self, queue: "Queue", value: int) -> None:
        """`queue` submitted with timeline `value`: its records still open belong to it."""
        for record in reversed(self.pending):
            if record.value is not None:
                break
            if record.queue is queue:
                record.value = value

    def collect(self) -> None:
        """Read the timestamps of every record the timeline has passed into trace events."""
        if not self.pending:
            return
        done = self.device.timeline.value
        keep = []
        for record in self.pending:
            if record.value is None or record.value > done:
                keep.append(record)
                continue
            begin, end = record.start.timestamp, record.end.timestamp
            self.events.append({
                "name": record.name, "cat": record.kind, "ph": "X", "pid": GPU_PID,
                "tid": self._tid(record.queue.name), "ts": self._microseconds(begin),
                "dur": max(end - begin, 0) * 1e6 / self.clock_hz,
                "args": {"gpu_begin_ticks": begin, "gpu_end_ticks": end, "timeline": record.value},
            })
            if not record.owned:
                self._free += (record.start, record.end)
        self.pending = keep

    def _microseconds(self, ticks: int) -> float:
        return self._origin_us + (ticks - self._origin_ticks) * 1e6 / self.clock_hz

    def _tid(self, queue_name: str) -> int:
        return self._tids.setdefault(queue_name, len(self._tids) + 1)

    # -- driver spans ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def span(self, name: str, **args):
        """Time a piece of the driver's Python as a span on the driver track."""
        begin = time.perf_counter_ns()
        try:
            yield
        finally:
            event = {"name": name, "cat": "driver", "ph": "X", "pid": DRIVER_PID, "tid": DRIVER_TID,
                     "ts": begin / 1000, "dur": (time.perf_counter_ns() - begin) / 1000}
            if args:
                event["args"] = args
            self.events.append(event)

    # -- output ------------------------------------------------------------------------------------
    def trace(self) -> dict:
        """The Chrome trace object: metadata naming processes and tracks, then the events."""
        self.collect()
        meta = [
            {"name": "process_name", "ph": "M", "pid": DRIVER_PID, "args": {"name": "gpuhal driver"}},
            {"name": "thread_name", "ph": "M", "pid": DRIVER_PID, "tid": DRIVER_TID,
             "args": {"name": "python"}},
            {"name": "process_name", "ph": "M", "pid": GPU_PID,
             "args": {"name": f"GPU {self.device.name}"}},
        ]
        for queue_name, tid in self._tids.items():
            meta.append({"name": "thread_name", "ph": "M", "pid": GPU_PID, "tid": tid,
                         "args": {"name": f"{queue_name} queue"}})
        return {"traceEvents": meta + sorted(self.events, key=lambda e: e["ts"]),
                "displayTimeUnit": "ns", "otherData": {"device": self.device.name,
                                                       "gpu_clock_hz": self.clock_hz}}

    def save(self, path: str | os.PathLike | None = None) -> str:
        """Wait for the GPU, then write the trace to `path` (default: the one given at creation)."""
        path = self.path if path is None else path
        if path is None:
            raise InvalidArgument("Profiler.save: no path (pass one or set GPUHAL_PROFILE)")
        if self.pending:
            self.device.synchronize()
        with open(path, "w", encoding="utf-8") as out:
            json.dump(self.trace(), out)
        return str(path)


def from_environment(device: "Device") -> Profiler | None:
    """A started profiler when GPUHAL_PROFILE names a trace file, else None."""
    path = os.environ.get(ENVIRONMENT)
    if not path:
        return None
    return Profiler(device, path).start()
