"""The hardware command queue interface every backend implements: record, then submit.

A `Queue` records commands into a pending list: `wait(signal, value)` (the engine stalls until the
signal holds at least `value`), `signal(signal, value)`, `timestamp(signal)` (the GPU clock into the
signal's timestamp), `exec(launch)` (a kernel; compute queues), `copy(dst, src, size)` (GPU
addresses; copy queues), `barrier()` (later commands see the memory effects of earlier ones).
`submit()` hands the recording to the engine and returns the device timeline value that proves it
done: every submission ends by signalling the device's 64-bit timeline, and a submission on a queue
other than the one that submitted last first waits for the previous timeline value, so the timeline
only grows and one value orders everything before it on every queue. `submit(ordered=False)` moves
that wait to just before the final timeline write: the recording may then run beside the other
queue's work (use it when the recording's own `wait`s order it, e.g. a queue that waits for a
signal the other queue will write later), and the timeline still only grows.

Space is reclaimed by the timeline only: a backend records, for each submission, which ring space
it used and the timeline value that ends it, and reuses that space only once `device.timeline` has
passed the value (`RingSpace`); kernarg and staging memory follow the same rule
(`compute.buffer.TimelineArena`, `compute.buffer.StagingPool`). Nothing wraps around blindly.

Backends (compute/amd/queues.py) subclass `Queue` and implement the `_emit_*` builders (each
returns the words of one command), `_push(words, value)` and `hardware_state()`.
"""
from __future__ import annotations

import collections
from typing import TYPE_CHECKING

from hal.errors import InvalidArgument, UnsupportedOperation

if TYPE_CHECKING:
    from compute.device import Device
    from compute.signal import Signal


class RingSpace:
    """Book-keeping for a ring of `size` units written in order: which span each submission used and
    the timeline value that ends it. `reserve(count)` waits on the timeline (never on the engine's
    read pointer) until `count` more units fit without overwriting a submission not yet passed."""

    def __init__(self, name: str, size: int, timeline: "Signal", reserve_free: int = 0) -> None:
        self.name = name
        self.size = size - reserve_free  # units the writer may have outstanding at once
        self.timeline = timeline
        self.spans: collections.deque[tuple[int, int]] = collections.deque()  # (end, value)
        self.start = 0  # the first unit not yet reclaimed
        self.waits = 0  # reserve() calls that had to wait for the timeline
        self.reclaimed = 0  # submissions whose space was reclaimed

    def reserve(self, position: int, count: int) -> None:
        """Make room for `count` units at monotonic `position` (the writer's pointer)."""
        if count > self.size:
            raise InvalidArgument(f"{self.name}: {count} units do not fit a ring of {self.size}")
        while position + count - self.start > self.size:
            if not self.spans:
                raise InvalidArgument(f"{self.name}: no submission holds the space asked for")
            end, value = self.spans[0]
            if self.timeline.value < value:
                self.waits += 1
                self.timeline.wait(value)
            self.spans.popleft()
            self.start = end
            self.reclaimed += 1

    def used(self, end: int, value: int) -> None:
        """A submission wrote up to monotonic `end`; its space returns once the timeline is at `value`."""
        self.spans.append((end, value))


class Queue:
    """One hardware queue (see the module docstring). `kind` is "compute" or "copy"."""

    kind = ""

    def __init__(self, device: "Device", name: str) -> None:
        self.device = device
        self.name = name
        self._words: list[int] = []
        self.submissions = 0

    # -- recording -------------------------------------------------------------------------------
    def wait(self, signal: "Signal", value: int) -> "Queue":
        """The engine waits until `signal` holds at least `value` before going on."""
        self._words += self._emit_wait(signal, value)
        return self

    def signal(self, signal: "Signal", value: int) -> "Queue":
        """When everything recorded before it is done, `signal` takes `value`."""
        signal.writer = self
        self._words += self._emit_signal(signal, value)
        return self

    def timestamp(self, signal: "Signal") -> "Queue":
        """When everything recorded before it is done, the GPU clock goes into `signal.timestamp`."""
        signal.writer = self
        self._words += self._emit_timestamp(signal)
        return self

    def exec(self, launch) -> "Queue":
        """Run a prepared kernel launch (`compute.program.Program.prepare`)."""
        profiler = self.device.profiler
        if profiler is None:
            self._words += self._emit_exec(launch)
            return self
        record = profiler.command(self, launch.name, "kernel")
        self._words += self._emit_timestamp(record.start)
        self._words += self._emit_exec(launch)
        self._words += self._emit_timestamp(record.end)
        return self

    def copy(self, dst: int, src: int, size: int) -> "Queue":
        """Copy `size` bytes between GPU addresses."""
        if size <= 0:
            raise InvalidArgument(f"{self.name} queue: a copy of {size} bytes")
        profiler = self.device.profiler
        if profiler is None:
            self._words += self._emit_copy(dst, src, size)
            return self
        record = profiler.command(self, f"copy {size} B", "copy")
        self._words += self._emit_timestamp(record.start)
        self._words += self._emit_copy(dst, src, size)
        self._words += self._emit_timestamp(record.end)
        return self

    def barrier(self) -> "Queue":
        """Commands after it see the memory effects of the commands before it."""
        self._words += self._emit_barrier()
        return self

    @property
    def recorded(self) -> int:
        """Words recorded and not yet submitted."""
        return len(self._words)

    def submit(self, ordered: bool = True) -> int:
        """Hand the recording to the engine; returns the timeline value that proves it done.
        `ordered=False` lets the recording run beside the other queue's earlier work (only the
        final timeline write waits for it): for recordings ordered by their own signals."""
        device = self.device
        timeline = device.timeline
        value = device.timeline_value
        switched = device.last_queue is not None and device.last_queue is not self
        words: list[int] = []
        if switched and ordered:
            words += self._emit_wait(timeline, value - 1)
        words += self._words
        if switched and not ordered:
            words += self._emit_wait(timeline, value - 1)
        timeline.writer = self
        words += self._emit_signal(timeline, value)
        self._words = []
        device.timeline_value = value + 1
        device.last_queue = self
        self._push(words, value)
        device.committed(self, value)
        self.submissions += 1
        return value

    # -- backend -----------------------------------------------------------------------------------
    def _emit_wait(self, signal: "Signal", value: int) -> list[int]:
        raise UnsupportedOperation(f"the {self.name} queue cannot wait on signals")

    def _emit_signal(self, signal: "Signal", value: int) -> list[int]:
        raise UnsupportedOperation(f"the {self.name} queue cannot write signals")

    def _emit_timestamp(self, signal: "Signal") -> list[int]:
        raise UnsupportedOperation(f"the {self.name} queue cannot write timestamps")

    def _emit_exec(self, launch) -> list[int]:
        raise UnsupportedOperation(f"the {self.name} queue runs no kernels; use the compute queue")

    def _emit_copy(self, dst: int, src: int, size: int) -> list[int]:
        raise UnsupportedOperation(f"the {self.name} queue does not copy; use the copy queue")

    def _emit_barrier(self) -> list[int]:
        return []

    def _emit_indirect(self, address: int, dwords: int) -> list[int]:
        """Run `dwords` of this queue's commands from GPU memory at `address` (compute.graph)."""
        raise UnsupportedOperation(f"the {self.name} queue runs no indirect buffers")

    def _push(self, words: list[int], value: int) -> None:
        raise UnsupportedOperation(f"the {self.name} queue has no engine")

    def hardware_state(self) -> str:
        """What the engine shows (pointers, state registers), for timeout messages."""
        return "no hardware state"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
