"""Record and replay of what crosses the HAL seam: GPUHAL_TRACE, `record()`, `ReplayBackend`.

Recording wraps an opened PCIDevice's backend in a `RecordingBackend` (and its OS seam in a thin
wrapper that records interrupt waits and journals file calls: sysfs attributes, a bridge's config
file) and writes every operation to a trace (hal.trace_format): config reads and writes, every
access to a BAR Region, DMA buffer allocation with its bus addresses, DMA buffer contents,
interrupt enables and waits with their results, resets and BAR resizes, and the errors of those
that failed. `hal.open(..., trace=path)`, a `with hal.trace.record(path,
scenario, args):` block around the open, or GPUHAL_TRACE=path turns it on; off, it costs one
environment lookup per open.

DMA buffers are shared memory, so their contents are recorded by rule, not by access:
- the CPU's writes go to a shadow copy too; at each *submission*, any write to any BAR (a doorbell,
  a register, VRAM through the aperture), the bytes the CPU changed since the previous submission
  are recorded before the BAR write as DMA_CPU records (buffer, offset, bytes), in runs of changed
  64-byte blocks;
- what the device wrote is recorded when the CPU reads it: a CPU read that returns bytes other
  than the shadow holds records them as a DMA_DEVICE record at that point of the sequence.

Replay (`open_replay(trace)`) builds a PCIDevice over a `ReplayBackend` and a `ReplaySeam`: reads
are answered from the trace, writes are checked against it (address and value), DMA allocations get
the recorded bus addresses, each submission's DMA_CPU runs are compared, DMA_DEVICE records are
written into the replay's buffers when the replay reaches them (before the next operation, or when
the CPU reads DMA memory), and the clock is virtual (sleeps return at once, each clock read moves it
a microsecond). Polling is matched flexibly: a run of identical reads matches one or more reads; a
read of a register already answered since the last non-read operation is answered again with its
last value when the trace has moved on; reads the trace still holds from such a poll are skipped
when the driver goes on to something else. Any other difference is a `TraceDivergence` naming the
record index, the expected and the attempted operation and the operations before it.
"""
from __future__ import annotations

import atexit
import collections
import contextlib
import dataclasses
import errno
import functools
import inspect
import json
import logging
import os as _os
import sys
import weakref
from abc import ABC, abstractmethod
from typing import Iterator

from autogen.linux import pci_regs

from hal.backend import BarResource, DMABuffer, PCIBackend
from hal.errors import HalError, InvalidArgument, UnsupportedOperation, from_oserror
from hal.os import OS, PAGE_SIZE, HostMemory
from hal.pcidev import PCIDevice
from hal.region import Region
from hal import errors as hal_errors
from hal.trace_format import (CFG_READ, CFG_WRITE, DMA_ALLOC, DMA_CPU, DMA_CPU_DIGEST, DMA_DEVICE,
                              DMA_FREE, END, FAILED, IRQ_DISABLE, IRQ_ENABLE, IRQ_KINDS, IRQ_POLL,
                              IRQ_READ, MMIO_READ, MMIO_READ_BLOCK, MMIO_WRITE, MMIO_WRITE_BLOCK,
                              OBSERVATIONS, OS_CHANGE, OS_QUERY, PAGE_ADDRESS, RESET, RESIZE_BAR,
                              SEAM_QUERIES, BadTrace, Record, TraceHeader, TraceReader, TraceWriter,
                              describe, seam_call, written)
from hal.pci.sysfs import SysfsPCI

log = logging.getLogger(__name__)

TRACE_ENV = "GPUHAL_TRACE"
DMA_BLOCK = 64  # bytes: the granularity of recorded DMA runs (a cache line)
HISTORY = 10  # operations shown before a divergence
CLOCK_TICK_S = 1e-6  # how far each read of the replay clock moves it
REPLAY_FD_BASE = 1 << 20  # interrupt "eventfds" of a replay (never real descriptors)
MASK32 = (1 << 32) - 1
MASK64 = (1 << 64) - 1

__all__ = ["TRACE_ENV", "record", "install", "requested", "open_replay", "read_trace",
           "TraceDivergence", "ReplayBackend", "ReplaySeam", "Replayer", "RecordingBackend", "BadTrace"]


# -- DMA contents --------------------------------------------------------------------------------
def _changed_span(old, new) -> tuple[int, int] | None:
    """[lo, hi) of the bytes where `new` differs from `old` (same length), or None."""
    if old == new:
        return None
    size = len(new)
    lo = 0
    while lo < size and old[lo:lo + DMA_BLOCK] == new[lo:lo + DMA_BLOCK]:
        lo += DMA_BLOCK
    while old[lo] == new[lo]:
        lo += 1
    hi = size
    while hi - DMA_BLOCK > lo and old[hi - DMA_BLOCK:hi] == new[hi - DMA_BLOCK:hi]:
        hi -= DMA_BLOCK
    while old[hi - 1] == new[hi - 1]:
        hi -= 1
    return lo, hi


class _DMAState:
    """One DMA buffer as the CPU knows it: `shadow` (what it wrote or last read), `submitted`
    (the shadow at the last submission) and the pages written since."""

    def __init__(self, ident: int, size: int) -> None:
        self.ident = ident
        self.size = size
        self.shadow = bytearray(size)
        self.submitted = bytearray(size)
        self.dirty: set[int] = set()

    def cpu_wrote(self, offset: int, data: bytes) -> None:
        if not data:
            return
        self.shadow[offset:offset + len(data)] = data
        self.dirty.update(range(offset // PAGE_SIZE, (offset + len(data) - 1) // PAGE_SIZE + 1))

    def device_wrote(self, offset: int, data: bytes) -> None:
        self.shadow[offset:offset + len(data)] = data
        self.submitted[offset:offset + len(data)] = data

    def cpu_changes(self) -> list[tuple[int, bytes]]:
        """The runs of 64-byte blocks the CPU changed since the last call, as (offset, bytes)."""
        if not self.dirty:
            return []
        shadow = memoryview(self.shadow)
        submitted = memoryview(self.submitted)
        runs: list[list[int]] = []
        for page in sorted(self.dirty):
            start = page * PAGE_SIZE
            end = min(start + PAGE_SIZE, self.size)
            if shadow[start:end] == submitted[start:end]:
                continue
            for block in range(start, end, DMA_BLOCK):
                stop = min(block + DMA_BLOCK, end)
                if shadow[block:stop] == submitted[block:stop]:
                    continue
                if runs and runs[-1][1] == block:
                    runs[-1][1] = stop
                else:
                    runs.append([block, stop])
        self.dirty.clear()
        changes = []
        for start, stop in runs:
            data = bytes(shadow[start:stop])
            submitted[start:stop] = data
            changes.append((start, data))
        return changes


class _TrackedDMARegion(Region, ABC):
    """A DMA buffer's CPU view that keeps its `_DMAState` current. Subclasses say where the bytes
    live (`_load`, `_store`). No memoryview: every access must be seen."""

    def __init__(self, state: _DMAState, size: int, addr: int | None) -> None:
        self.state = state
        self.size = size
        self.addr = addr

    @abstractmethod
    def _load(self, offset: int, width: int, word: bool) -> bytes:
        """`width` bytes at `offset` of the buffer (`word`: one aligned 4- or 8-byte access)."""

    @abstractmethod
    def _store(self, offset: int, data: bytes, word: bool) -> None:
        """Write `data` at `offset` of the buffer (`word`: one aligned 4- or 8-byte access)."""

    def read32(self, off: int) -> int:
        self._check(off, 4, 4)
        return int.from_bytes(self._load(off, 4, True), "little")

    def write32(self, off: int, value: int) -> None:
        self._check(off, 4, 4)
        self._store(off, (value & MASK32).to_bytes(4, "little"), True)

    def read64(self, off: int) -> int:
        self._check(off, 8, 8)
        return int.from_bytes(self._load(off, 8, True), "little")

    def write64(self, off: int, value: int) -> None:
        self._check(off, 8, 8)
        self._store(off, (value & MASK64).to_bytes(8, "little"), True)

    def read(self, off: int, n: int) -> bytes:
        self._check(off, n)
        return self._load(off, n, False)

    def write(self, off: int, data) -> None:
        data = bytes(memoryview(data).cast("B"))
        self._check(off, len(data))
        self._store(off, data, False)

    def view(self, off: int = 0, size: int | None = None) -> memoryview:
        raise UnsupportedOperation("a DMA buffer of a traced device has no memoryview: every access "
                                   "must be seen; use read/write/read32/write32/read64/write64")


# -- recording -----------------------------------------------------------------------------------
class Recorder:
    """The writer and the DMA bookkeeping of one recorded device."""

    def __init__(self, writer: TraceWriter) -> None:
        self.writer = writer
        self.dma: dict[int, _DMAState] = {}
        self.next_buffer = 0
        self.irq_vectors: dict[int, int] = {}  # eventfd -> vector
        _OPEN_RECORDERS.add(self)

    @property
    def live(self) -> bool:
        return not self.writer.closed

    def observe(self, op: int, fields: tuple, data: bytes = b"") -> None:
        if self.live:
            self.writer.observe(op, fields, data)

    def act(self, op: int, fields: tuple, data: bytes = b"") -> None:
        if self.live:
            self.writer.act(op, fields, data)

    def submission(self) -> None:
        """Before a BAR write: the CPU's DMA changes since the last submission."""
        for ident in sorted(self.dma):
            for offset, data in self.dma[ident].cpu_changes():
                self.act(*written(DMA_CPU, (ident, offset, len(data)), data))

    def failed(self, op: int, fields: tuple, error: BaseException) -> None:
        """`op` with `fields` raised `error` (the driver may handle it: a refused interrupt kind)."""
        text = json.dumps({"fields": list(fields), "type": type(error).__name__, "message": str(error),
                           "errno": getattr(error, "errno", None),
                           "os_error": not isinstance(error, HalError)}).encode()
        self.act(FAILED, (op, len(text)), text)

    def device_wrote(self, state: _DMAState, offset: int, seen: bytes) -> None:
        """A CPU read saw `seen` at `offset` where the shadow holds something else."""
        span = _changed_span(state.shadow[offset:offset + len(seen)], seen)
        if span is None:
            return
        lo, hi = span
        changed = seen[lo:hi]
        state.device_wrote(offset + lo, changed)
        self.act(DMA_DEVICE, (state.ident, offset + lo, len(changed)), changed)

    def close(self) -> None:
        if self.live:
            self.writer.close()
            log.info("trace %s: %d records", self.writer.path, self.writer.records)


_OPEN_RECORDERS: "weakref.WeakSet[Recorder]" = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    """A program that exits with a device still open still leaves a complete trace."""
    for recorder in list(_OPEN_RECORDERS):
        try:
            recorder.close()
        except OSError as exc:
            log.warning("closing the trace %s at exit: %s", recorder.writer.path, exc)


class _RecordingDMARegion(_TrackedDMARegion):
    """A recorded device's DMA buffer: accesses go to the real memory with their width, and a read
    that finds bytes the shadow does not hold records them as the device's."""

    def __init__(self, inner: Region, state: _DMAState, recorder: Recorder) -> None:
        super().__init__(state, inner.size, inner.addr)
        self._inner = inner
        self._recorder = recorder

    def _load(self, offset: int, width: int, word: bool) -> bytes:
        if not word:
            seen = self._inner.read(offset, width)
        elif width == 4:
            seen = self._inner.read32(offset).to_bytes(4, "little")
        else:
            seen = self._inner.read64(offset).to_bytes(8, "little")
        if self.state.shadow[offset:offset + width] != seen:
            self._recorder.device_wrote(self.state, offset, seen)
        return seen

    def _store(self, offset: int, data: bytes, word: bool) -> None:
        if not word:
            self._inner.write(offset, data)
        elif len(data) == 4:
            self._inner.write32(offset, int.from_bytes(data, "little"))
        else:
            self._inner.write64(offset, int.from_bytes(data, "little"))
        self.state.cpu_wrote(offset, data)


class _RecordingBARRegion(Region):
    """A BAR Region that records every access (and so has no memoryview fast path)."""

    def __init__(self, inner: Region, bar: int, recorder: Recorder) -> None:
        self.inner = inner
        self.size = inner.size
        self.addr = inner.addr
        self._bar = bar
        self._recorder = recorder

    def read32(self, off: int) -> int:
        value = self.inner.read32(off)
        self._recorder.observe(MMIO_READ, (self._bar, 4, off, value))
        return value

    def write32(self, off: int, value: int) -> None:
        self._recorder.submission()
        self.inner.write32(off, value)
        self._recorder.act(MMIO_WRITE, (self._bar, 4, off, value & MASK32))

    def read64(self, off: int) -> int:
        value = self.inner.read64(off)
        self._recorder.observe(MMIO_READ, (self._bar, 8, off, value))
        return value

    def write64(self, off: int, value: int) -> None:
        self._recorder.submission()
        self.inner.write64(off, value)
        self._recorder.act(MMIO_WRITE, (self._bar, 8, off, value & MASK64))

    def read(self, off: int, n: int) -> bytes:
        data = bytes(self.inner.read(off, n))
        self._recorder.observe(MMIO_READ_BLOCK, (self._bar, off, len(data)), data)
        return data

    def write(self, off: int, data) -> None:
        data = bytes(memoryview(data).cast("B"))
        self._recorder.submission()
        self.inner.write(off, data)
        self._recorder.act(*written(MMIO_WRITE_BLOCK, (self._bar, off, len(data)), data))

    def view(self, off: int = 0, size: int | None = None) -> memoryview:
        raise UnsupportedOperation(f"BAR{self._bar} is being traced: no memoryview (every access must be "
                                   "recorded); use read/write/read32/write32/read64/write64")


class RecordingBackend(PCIBackend):
    """Wraps another backend and records every operation (see the module docstring)."""

    def __init__(self, inner: PCIBackend, recorder: Recorder) -> None:
        super().__init__(inner.bdf)
        self.inner = inner
        self.recorder = recorder
        self.name = inner.name
        self.presence_register = inner.presence_register
        self._buffers: dict[int, tuple[int, DMABuffer]] = {}  # id(wrapper) -> (trace id, inner)

    def __getattr__(self, name: str):
        """What a particular backend offers beyond the interface (a USB backend's bridge) is the
        wrapped backend's, unrecorded."""
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def dma_window(self) -> int | None:
        return getattr(self.inner, "dma_window", None)

    def device_events(self):
        return self.inner.device_events()

    def config_read(self, offset: int, width: int) -> int:
        value = self.inner.config_read(offset, width)
        self.recorder.observe(CFG_READ, (width, offset, value))
        return value

    def config_write(self, offset: int, width: int, value: int) -> None:
        self.inner.config_write(offset, width, value)
        self.recorder.act(CFG_WRITE, (width, offset, value))

    def config_size(self) -> int:
        return self.inner.config_size()

    def bar_resources(self) -> dict[int, BarResource]:
        return self.inner.bar_resources()

    def map_bar(self, index: int) -> Region:
        return _RecordingBARRegion(self.inner.map_bar(index), index, self.recorder)

    def unmap_bar(self, region: Region) -> None:
        self.inner.unmap_bar(region.inner if isinstance(region, _RecordingBARRegion) else region)

    def _attempt(self, op: int, fields: tuple, call, *args):
        try:
            return call(*args)
        except (HalError, OSError) as exc:
            self.recorder.failed(op, fields, exc)
            raise

    def resize_bar(self, index: int, size: int) -> None:
        self._attempt(RESIZE_BAR, (index, size), self.inner.resize_bar, index, size)
        self.recorder.act(RESIZE_BAR, (index, size))

    def alloc_dma(self, size: int) -> DMABuffer:
        inner = self._attempt(DMA_ALLOC, (size,), self.inner.alloc_dma, size)
        ident = self.recorder.next_buffer
        self.recorder.next_buffer += 1
        state = _DMAState(ident, inner.region.size)
        self.recorder.dma[ident] = state
        pages = b"".join(PAGE_ADDRESS.pack(address) for address in inner.bus_addresses)
        self.recorder.act(DMA_ALLOC, (ident, size, inner.size, int(inner.contiguous),
                                      len(inner.bus_addresses)), pages)
        region = _RecordingDMARegion(inner.region, state, self.recorder)
        wrapper = DMABuffer(region, inner.size, list(inner.bus_addresses), inner.contiguous,
                            backend_handle=inner)
        self._buffers[id(wrapper)] = (ident, inner)
        return wrapper

    def free_dma(self, buffer: DMABuffer) -> None:
        ident, inner = self._buffers[id(buffer)]
        self.inner.free_dma(inner)
        del self._buffers[id(buffer)]
        self.recorder.dma.pop(ident, None)
        self.recorder.act(DMA_FREE, (ident,))

    def enable_interrupts(self, kind: str, count: int) -> list[int]:
        fields = (IRQ_KINDS.index(kind), count)
        fds = self._attempt(IRQ_ENABLE, fields, self.inner.enable_interrupts, kind, count)
        self.recorder.irq_vectors = {fd: vector for vector, fd in enumerate(fds)}
        self.recorder.act(IRQ_ENABLE, (IRQ_KINDS.index(kind), count))
        return fds

    def disable_interrupts(self) -> None:
        self.inner.disable_interrupts()
        self.recorder.irq_vectors = {}
        self.recorder.act(IRQ_DISABLE, ())

    def reset_methods(self) -> list[str]:
        return self.inner.reset_methods()

    def reset_refusal(self, method: str) -> str | None:
        return self.inner.reset_refusal(method)

    def reset(self, method: str) -> None:
        self._attempt(RESET, (method,), self.inner.reset, method)
        self.recorder.act(RESET, (len(method),), method.encode("ascii"))

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self.recorder.close()


def _jsonable(value):
    """A seam argument or result as JSON: bytes become {"bytes": hex}."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


def _from_json(value):
    if isinstance(value, dict) and set(value) == {"bytes"}:
        return bytes.fromhex(value["bytes"])
    if isinstance(value, list):
        return [_from_json(item) for item in value]
    return value


def _call_key(call: str, args: list) -> str:
    return json.dumps({"call": call, "args": args}, sort_keys=True)


class _RecordingSeam:
    """The device's OS seam (PCIDevice.os, and PCIDevice.sysfs through it) with interrupt waits and
    counts recorded, and the file calls (exists, readlink, read_text, listdir, open, pread, read,
    pwrite, write, write_text, close: sysfs attributes, a bridge's config file for a bus reset)
    journalled with their results or errno; the clock, memory and the rest go straight through."""

    def __init__(self, inner: OS, recorder: Recorder) -> None:
        self._inner = inner
        self._recorder = recorder

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def poll(self, fds: list[int], timeout_s: float) -> list[int]:
        ready = self._inner.poll(fds, timeout_s)
        for fd in fds:
            vector = self._recorder.irq_vectors.get(fd)
            if vector is not None:
                self._recorder.observe(IRQ_POLL, (vector, int(fd in ready)))
        return ready

    def read(self, fd: int, n: int) -> bytes:
        vector = self._recorder.irq_vectors.get(fd)
        if vector is None:
            return self._journal("read", [fd, n], self._inner.read, fd, n)
        data = self._inner.read(fd, n)
        self._recorder.observe(IRQ_READ, (vector, int.from_bytes(data, "little")))
        return data

    def _journal(self, call: str, args: list, function, *values):
        encoded = _jsonable(args)
        try:
            result = function(*values)
        except OSError as exc:
            self._note(call, encoded, {"errno": exc.errno, "message": exc.strerror or str(exc)})
            raise
        self._note(call, encoded, {"result": _jsonable(result)})
        return result

    def _note(self, call: str, args: list, outcome: dict) -> None:
        data = seam_call(call, args, outcome)
        if call in SEAM_QUERIES:
            self._recorder.observe(OS_QUERY, (len(data),), data)
        else:
            self._recorder.act(OS_CHANGE, (len(data),), data)

    def exists(self, path: str) -> bool:
        return self._journal("exists", [path], self._inner.exists, path)

    def readlink(self, path: str) -> str:
        return self._journal("readlink", [path], self._inner.readlink, path)

    def read_text(self, path: str) -> str:
        return self._journal("read_text", [path], self._inner.read_text, path)

    def listdir(self, path: str) -> list[str]:
        return self._journal("listdir", [path], self._inner.listdir, path)

    def write_text(self, path: str, text: str) -> None:
        return self._journal("write_text", [path, text], self._inner.write_text, path, text)

    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        return self._journal("open", [path, flags, mode], self._inner.open, path, flags, mode)

    def close(self, fd: int) -> None:
        return self._journal("close", [fd], self._inner.close, fd)

    def pread(self, fd: int, n: int, offset: int) -> bytes:
        return self._journal("pread", [fd, n, offset], self._inner.pread, fd, n, offset)

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        return self._journal("pwrite", [fd, bytes(data), offset], self._inner.pwrite, fd, data, offset)

    def write(self, fd: int, data: bytes) -> int:
        return self._journal("write", [fd, bytes(data)], self._inner.write, fd, data)


@dataclasses.dataclass
class TraceRequest:
    """A recording asked for: where, and what runs (written into the header)."""

    path: str
    scenario: str = ""
    args: dict = dataclasses.field(default_factory=dict)
    recorders: list[Recorder] = dataclasses.field(default_factory=list)


_ACTIVE: list[TraceRequest] = []
_ENV_REQUESTS: dict[str, TraceRequest] = {}  # $GPUHAL_TRACE path -> its request


@contextlib.contextmanager
def record(path: str, scenario: str = "", args: dict | None = None) -> Iterator[TraceRequest]:
    """Record the devices `hal.open` opens inside the block into `path` (the first one; later
    ones into `path.2`, `path.3`...). `scenario` and `args` name what runs, for tools.replay.
    A trace still open when the block ends is closed there (its device is no longer recorded)."""
    request = TraceRequest(str(path), scenario, dict(args or {}))
    _ACTIVE.append(request)
    try:
        yield request
    finally:
        _ACTIVE.remove(request)
        for recorder in request.recorders:
            recorder.close()


def requested(path: str | None = None) -> TraceRequest | None:
    """The recording an open should make: `path` (hal.open's trace=), else the innermost
    `record()` block, else $GPUHAL_TRACE; None when there is none."""
    if path is not None:
        scenario, args = ("", {}) if not _ACTIVE else (_ACTIVE[-1].scenario, _ACTIVE[-1].args)
        return TraceRequest(str(path), scenario, dict(args))
    if _ACTIVE:
        return _ACTIVE[-1]
    from_env = _os.environ.get(TRACE_ENV)
    if not from_env:
        return None
    request = _ENV_REQUESTS.get(from_env)
    if request is None:
        request = TraceRequest(from_env, "argv", {"argv": list(sys.argv)})
        _ENV_REQUESTS[from_env] = request
    return request


def _numbered(path: str, taken: int) -> str:
    return path if taken == 0 else f"{path}.{taken + 1}"


def _device_identity(device: PCIDevice) -> dict:
    backend = device.backend
    resources = backend.bar_resources()
    return {
        "bdf": device.bdf,
        "backend": backend.name,
        "vendor_id": backend.config_read(pci_regs.PCI_VENDOR_ID, 2),
        "device_id": backend.config_read(pci_regs.PCI_DEVICE_ID, 2),
        "bars": {str(index): [res.size, res.mappable] for index, res in sorted(resources.items())},
        "config_size": backend.config_size(),
        "presence_register": list(backend.presence_register),
        "reset_methods": list(backend.reset_methods()),
        "dma_window": getattr(backend, "dma_window", None),
        "pid": device.os.getpid(),
    }


def install(device: PCIDevice, request: TraceRequest | None) -> PCIDevice:
    """Start recording `device` (just opened: no BAR mapped, no DMA yet) as `request` says; returns
    it. With no request, returns it untouched. On failure the device is closed."""
    if request is None:
        return device
    try:
        if device.dma_buffers or getattr(device, "_bars", None):
            raise InvalidArgument(f"{device!r}: a trace starts before any BAR is mapped or DMA allocated")
        path = _numbered(request.path, len(request.recorders))
        header = TraceHeader(request.scenario, request.args, _device_identity(device))
        try:
            writer = TraceWriter(path, header)
        except OSError as exc:
            raise from_oserror(exc, f"creating the trace file {path}") from exc
    except BaseException:
        device.close()
        raise
    recorder = Recorder(writer)
    request.recorders.append(recorder)
    device.backend = RecordingBackend(device.backend, recorder)
    device.os = _RecordingSeam(device.os, recorder)
    device.sysfs = SysfsPCI(device.os)
    log.info("%s: recording into %s", device.bdf, path)
    return device


# what hal.open's docstring says of the option traceable adds
TRACE_OPTION_DOC = """

    trace: record every operation of the opened device into this file (hal.trace, docs/tracing.md);
    without it a `hal.trace.record()` block or $GPUHAL_TRACE may ask for a recording.
    """


def traceable(open_function):
    """Decorates hal's open: adds `trace=path` and records the opened device when asked (an
    explicit path, a `record()` block or $GPUHAL_TRACE), whichever backend opened it."""

    @functools.wraps(open_function)
    def open_traced(*args, trace: str | None = None, **kwargs) -> PCIDevice:
        request = requested(trace)
        return install(open_function(*args, **kwargs), request)

    open_traced.__doc__ = (open_function.__doc__ or "").rstrip() + TRACE_OPTION_DOC
    return open_traced



# -- replay --------------------------------------------------------------------------------------
_HAL_DIR = _os.path.dirname(_os.path.abspath(__file__)) + _os.sep
_PROJECT_DIR = _os.path.dirname(_HAL_DIR.rstrip(_os.sep)) + _os.sep
CALLERS_KEPT = 4  # frames of the code that made a diverging access, kept with the divergence


def _callers() -> list:
    """The innermost frames outside hal: the code that made the access, innermost first."""
    frames = []
    frame = inspect.currentframe()
    while frame is not None and len(frames) < CALLERS_KEPT:
        if not frame.f_code.co_filename.startswith(_HAL_DIR):
            frames.append(frame)
        frame = frame.f_back
    return frames


def _frame_text(frame) -> str:
    filename = frame.f_code.co_filename
    if filename.startswith(_PROJECT_DIR):
        filename = filename[len(_PROJECT_DIR):]
    return f"{filename}:{frame.f_lineno} {frame.f_code.co_name}"


class TraceDivergence(HalError):
    """The driver did something the trace does not hold: `index` (record), `expected` and `got`
    (one line each), `history` (the operations matched before, oldest first), `frames` (the
    innermost frames outside hal that made the access) and `where` (the first two, as text)."""

    def __init__(self, index: int, expected: str, got: str, history: list[str],
                 frames: list | None = None) -> None:
        self.frames = list(frames or [])
        self.where = " <- ".join(_frame_text(frame) for frame in self.frames[:2])
        lines = [f"divergence at record {index}: expected {expected}; got {got}"]
        if self.where:
            lines.append(f"made by {self.where}")
        if history:
            lines.append("before it:")
            lines.extend(f"  {line}" for line in history)
        super().__init__("\n".join(lines))
        self.index = index
        self.expected = expected
        self.got = got
        self.history = history


def _key(record: Record) -> tuple:
    """What an observation asks (its value excluded)."""
    op, fields = record.op, record.fields
    if op == CFG_READ:
        return (op, fields[0], fields[1])
    if op == MMIO_READ:
        return (op, fields[0], fields[1], fields[2])
    if op == MMIO_READ_BLOCK:
        return (op, fields[0], fields[1], fields[2])
    if op == OS_QUERY:
        call = json.loads(bytes(record.data))
        return (op, _call_key(call["call"], call["args"]))
    return (op, fields[0])  # IRQ_POLL, IRQ_READ: the vector


def _value(record: Record):
    op = record.op
    if op == CFG_READ:
        return record.fields[2]
    if op == MMIO_READ:
        return record.fields[3]
    if op == MMIO_READ_BLOCK:
        return bytes(record.data)
    if op == OS_QUERY:
        return json.loads(bytes(record.data))  # the outcome: "result", or "errno" and "message"
    return record.fields[1]  # IRQ_POLL ready, IRQ_READ count


def _describe_key(key: tuple) -> str:
    op = key[0]
    if op == CFG_READ:
        return f"config read{8 * key[1]} {key[2]:#05x}"
    if op == MMIO_READ:
        return f"MMIO read{8 * key[2]} BAR{key[1]}+{key[3]:#x}"
    if op == MMIO_READ_BLOCK:
        return f"MMIO read of {key[3]:#x} bytes at BAR{key[1]}+{key[2]:#x}"
    if op == OS_QUERY:
        call = json.loads(key[1])
        return f"{call['call']}({', '.join(repr(arg) for arg in call['args'])})"
    if op == IRQ_POLL:
        return f"interrupt wait on vector {key[1]}"
    return f"interrupt count of vector {key[1]}"


class Replayer:
    """Matches a run's operations against a trace's records (see the module docstring)."""

    def __init__(self, header: TraceHeader, records: list[Record]) -> None:
        self.header = header
        self.records = list(records) + [Record(END, (len(records),))]
        self.position = 0
        self.window: dict[tuple, object] = {}  # reads answered since the last other operation
        self.history: collections.deque[str] = collections.deque(maxlen=HISTORY)
        self.divergence: TraceDivergence | None = None
        self.dma: dict[int, _DMAState] = {}
        self.operations = 0  # operations the run made that matched

    # -- cursor ----------------------------------------------------------------------------------
    def _matched(self, text: str) -> None:
        self.operations += 1
        self.history.append(f"#{self.position}: {text}")

    def _diverge(self, expected: str, got: str) -> TraceDivergence:
        if self.divergence is None:
            self.divergence = TraceDivergence(self.position, expected, got, list(self.history),
                                              _callers())
        return self.divergence

    def _check_live(self) -> None:
        if self.divergence is not None:
            raise self.divergence

    def apply_device_writes(self) -> None:
        """Write the DMA_DEVICE records at the cursor into the replay's buffers."""
        records = self.records
        while records[self.position].op == DMA_DEVICE:
            record = records[self.position]
            ident, offset, _ = record.fields
            state = self.dma.get(ident)
            if state is None:
                raise self._diverge(record.describe(), f"no live DMA buffer #{ident}")
            state.device_wrote(offset, bytes(record.data))
            self.position += 1

    def _skip_finished_polls(self) -> None:
        """Pass device writes and reads the trace holds of registers already polled since the last
        other operation (the run polled fewer times than the recording)."""
        records = self.records
        while True:
            self.apply_device_writes()
            record = records[self.position]
            if record.op in OBSERVATIONS and _key(record) in self.window:
                self.position += 1
                continue
            return

    # -- operations ------------------------------------------------------------------------------
    def observe(self, key: tuple):
        """The answer to a read (config, MMIO, interrupt wait or count, exists)."""
        self._check_live()
        self.apply_device_writes()
        record = self.records[self.position]
        if record.op in OBSERVATIONS and _key(record) == key:
            return self._answer(record, key)
        if key in self.window:
            return self.window[key]
        self._skip_finished_polls()
        record = self.records[self.position]
        if record.op in OBSERVATIONS and _key(record) == key:
            return self._answer(record, key)
        raise self._diverge(record.describe(), _describe_key(key))

    def _answer(self, record: Record, key: tuple):
        value = _value(record)
        self._matched(record.describe() + (f" (x{record.count})" if record.count > 1 else ""))
        self.position += 1
        self.window[key] = value
        return value

    def act(self, op: int, fields: tuple, data: bytes = b"") -> Record:
        """A write, interrupt change, reset or resize: must be the next record, field for field."""
        self._check_live()
        self._skip_finished_polls()
        record = self.records[self.position]
        if record.op != op or record.fields != fields or bytes(record.data) != data:
            raise self._diverge(record.describe(), describe(op, fields, data))
        return self._take(record)

    def _take(self, record: Record) -> Record:
        self._matched(record.describe())
        self.position += 1
        self.window.clear()
        return record

    def attempt(self, op: int, fields: tuple) -> None:
        """Raise the error the recorded run got from `op` with `fields`, when the trace holds one."""
        self._check_live()
        self._skip_finished_polls()
        record = self.records[self.position]
        if record.op != FAILED or record.fields[0] != op:
            return
        info = json.loads(bytes(record.data))
        if info["fields"] != list(fields):
            return
        self._take(record)
        raise _rebuilt_error(info)

    def change(self, call: str, args: list) -> dict:
        """A seam call that changes something (a sysfs write, open, pwrite): must be the next
        record with the same call and arguments; returns what the recorded call returned."""
        self._check_live()
        self._skip_finished_polls()
        record = self.records[self.position]
        if record.op == OS_CHANGE:
            recorded = json.loads(bytes(record.data))
            if _call_key(recorded["call"], recorded["args"]) == _call_key(call, args):
                self._take(record)
                return recorded
        raise self._diverge(record.describe(), f"{call}({', '.join(repr(arg) for arg in args)})")

    def alloc(self, requested_size: int) -> Record:
        self._check_live()
        self._skip_finished_polls()
        record = self.records[self.position]
        if record.op != DMA_ALLOC or record.fields[1] != requested_size:
            raise self._diverge(record.describe(), f"DMA alloc of {requested_size:#x} bytes")
        return self._take(record)

    def submission(self) -> None:
        """Before a BAR write: the run's CPU changes to DMA must be the DMA_CPU records here."""
        self._check_live()
        self._skip_finished_polls()
        got = [written(DMA_CPU, (ident, offset, len(data)), data) for ident in sorted(self.dma)
               for offset, data in self.dma[ident].cpu_changes()]
        records = self.records
        for op, fields, data in got:
            record = records[self.position]
            if record.op != op or record.fields != fields or bytes(record.data) != data:
                raise self._diverge(record.describe(), _dma_mismatch(record, op, fields, data))
            self._matched(record.describe())
            self.position += 1
        record = records[self.position]
        if record.op in (DMA_CPU, DMA_CPU_DIGEST):
            ident, offset, length = record.fields
            raise self._diverge(record.describe(), f"no CPU change to DMA #{ident} before the BAR write")

    def finish(self) -> None:
        """The run ended: the trace must end too."""
        self._check_live()
        self._skip_finished_polls()
        record = self.records[self.position]
        if record.op != END:
            raise self._diverge(record.describe(), "the end of the run")


def _rebuilt_error(info: dict) -> BaseException:
    """The error a recorded operation raised, from its FAILED record."""
    if info.get("os_error"):
        return OSError(info.get("errno") or errno.EIO, info["message"])
    cls = getattr(hal_errors, str(info.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, HalError)):
        cls = HalError
    try:
        return cls(info["message"], errno=info.get("errno"))
    except TypeError:  # an error with more required fields: the base type keeps the message
        return HalError(info["message"], errno=info.get("errno"))


def _dma_mismatch(record: Record, op: int, fields: tuple, data: bytes) -> str:
    ident, offset, _ = fields
    text = describe(op, fields, data)
    if record.op == DMA_CPU == op and record.fields[:2] == (ident, offset):
        expected = bytes(record.data)
        first = next((i for i, (a, b) in enumerate(zip(expected, data)) if a != b), min(len(expected),
                                                                                          len(data)))
        text += f" (first difference at DMA #{ident}+{offset + first:#x})"
    return text


class _ReplayDMARegion(_TrackedDMARegion):
    """A replay DMA buffer: the shadow is the memory; device writes arrive from the trace."""

    def __init__(self, state: _DMAState, replayer: Replayer) -> None:
        super().__init__(state, state.size, None)
        self._replayer = replayer

    def _load(self, offset: int, width: int, word: bool) -> bytes:
        self._replayer.apply_device_writes()
        return bytes(self.state.shadow[offset:offset + width])

    def _store(self, offset: int, data: bytes, word: bool) -> None:
        self.state.cpu_wrote(offset, data)


class _ReplayBARRegion(Region):
    """A BAR answered and checked by the replayer."""

    def __init__(self, bar: int, size: int, replayer: Replayer) -> None:
        self.size = size
        self._bar = bar
        self._replayer = replayer

    def read32(self, off: int) -> int:
        self._check(off, 4, 4)
        return self._replayer.observe((MMIO_READ, self._bar, 4, off))

    def read64(self, off: int) -> int:
        self._check(off, 8, 8)
        return self._replayer.observe((MMIO_READ, self._bar, 8, off))

    def write32(self, off: int, value: int) -> None:
        self._check(off, 4, 4)
        self._replayer.submission()
        self._replayer.act(MMIO_WRITE, (self._bar, 4, off, value & MASK32))

    def write64(self, off: int, value: int) -> None:
        self._check(off, 8, 8)
        self._replayer.submission()
        self._replayer.act(MMIO_WRITE, (self._bar, 8, off, value & MASK64))

    def read(self, off: int, n: int) -> bytes:
        self._check(off, n)
        return self._replayer.observe((MMIO_READ_BLOCK, self._bar, off, n))

    def write(self, off: int, data) -> None:
        data = bytes(memoryview(data).cast("B"))
        self._check(off, len(data))
        self._replayer.submission()
        self._replayer.act(*written(MMIO_WRITE_BLOCK, (self._bar, off, len(data)), data))


class ReplayBackend(PCIBackend):
    """A backend that plays a trace back (see the module docstring)."""

    def __init__(self, replayer: Replayer, seam: "ReplaySeam") -> None:
        device = replayer.header.device
        super().__init__(device["bdf"])
        self.replayer = replayer
        self.seam = seam
        self.name = device["backend"]
        self.presence_register = tuple(device["presence_register"])
        self.dma_window = device.get("dma_window")
        self._bars = {int(index): BarResource(int(index), size, bool(mappable))
                      for index, (size, mappable) in device["bars"].items()}
        self._buffers: dict[int, int] = {}  # id(DMABuffer) -> trace id

    def config_read(self, offset: int, width: int) -> int:
        return self.replayer.observe((CFG_READ, width, offset))

    def config_write(self, offset: int, width: int, value: int) -> None:
        self.replayer.act(CFG_WRITE, (width, offset, value))

    def config_size(self) -> int:
        return self.replayer.header.device["config_size"]

    def bar_resources(self) -> dict[int, BarResource]:
        return dict(self._bars)

    def map_bar(self, index: int) -> Region:
        return _ReplayBARRegion(index, self._bars[index].size, self.replayer)

    def unmap_bar(self, region: Region) -> None:
        """Nothing is mapped."""

    def resize_bar(self, index: int, size: int) -> None:
        self.replayer.attempt(RESIZE_BAR, (index, size))
        self.replayer.act(RESIZE_BAR, (index, size))
        self._bars[index] = BarResource(index, size, self._bars[index].mappable)

    def alloc_dma(self, size: int) -> DMABuffer:
        self.replayer.attempt(DMA_ALLOC, (size,))
        record = self.replayer.alloc(size)
        ident, _, allocated, contiguous, _ = record.fields
        state = _DMAState(ident, allocated)
        self.replayer.dma[ident] = state
        buffer = DMABuffer(_ReplayDMARegion(state, self.replayer), allocated, list(record.data),
                           bool(contiguous))
        self._buffers[id(buffer)] = ident
        return buffer

    def free_dma(self, buffer: DMABuffer) -> None:
        ident = self._buffers.pop(id(buffer))
        self.replayer.dma.pop(ident, None)
        if self.replayer.divergence is None:  # after one, releasing is all that is left to do
            self.replayer.act(DMA_FREE, (ident,))

    def enable_interrupts(self, kind: str, count: int) -> list[int]:
        self.replayer.attempt(IRQ_ENABLE, (IRQ_KINDS.index(kind), count))
        self.replayer.act(IRQ_ENABLE, (IRQ_KINDS.index(kind), count))
        fds = [REPLAY_FD_BASE + vector for vector in range(count)]
        self.seam.irq_vectors = {fd: vector for vector, fd in enumerate(fds)}
        return fds

    def disable_interrupts(self) -> None:
        self.seam.irq_vectors = {}
        if self.replayer.divergence is None:
            self.replayer.act(IRQ_DISABLE, ())

    def reset_methods(self) -> list[str]:
        return list(self.replayer.header.device["reset_methods"])

    def reset(self, method: str) -> None:
        self.replayer.attempt(RESET, (method,))
        self.replayer.act(RESET, (len(method),), method.encode("ascii"))

    def close(self) -> None:
        """Nothing to release."""


class ReplaySeam(OS):
    """The OS seam of a replay: a virtual clock, interrupt waits and the journalled file calls from
    the trace, the recorded process id; anything else is refused (a replay reaches no files)."""

    name = "replay"

    def __init__(self, replayer: Replayer) -> None:
        self.replayer = replayer
        self.now = 0.0
        self.irq_vectors: dict[int, int] = {}

    def _refuse(self, what: str):
        raise OSError(errno.ENOSYS, f"a trace replay reaches no files or devices ({what})")

    def _query(self, call: str, args: list):
        encoded = _jsonable(args)
        return self._outcome(self.replayer.observe((OS_QUERY, _call_key(call, encoded))))

    def _change(self, call: str, args: list):
        return self._outcome(self.replayer.change(call, _jsonable(args)))

    @staticmethod
    def _outcome(outcome: dict):
        if "errno" in outcome:
            raise OSError(outcome["errno"] or errno.EIO, outcome.get("message", ""))
        return _from_json(outcome.get("result"))

    def open(self, path, flags, mode=0o600):
        return self._change("open", [path, flags, mode])

    def close(self, fd):
        return self._change("close", [fd])

    def read(self, fd: int, n: int) -> bytes:
        vector = self.irq_vectors.get(fd)
        if vector is None:
            return self._query("read", [fd, n])
        return self.replayer.observe((IRQ_READ, vector)).to_bytes(8, "little")

    def write(self, fd, data):
        return self._change("write", [fd, bytes(data)])

    def pread(self, fd, n, offset):
        return self._query("pread", [fd, n, offset])

    def pwrite(self, fd, data, offset):
        return self._change("pwrite", [fd, bytes(data), offset])

    def ioctl(self, fd, request, arg=None):
        self._refuse(f"ioctl {request:#x}")

    def flock(self, fd, exclusive=True, blocking=False):
        self._refuse("flock")

    def mmap(self, fd, size, offset=0, writable=True):
        self._refuse("mmap")

    def munmap(self, region):
        self._refuse("munmap")

    def listdir(self, path):
        return self._query("listdir", [path])

    def readlink(self, path):
        return self._query("readlink", [path])

    def exists(self, path: str) -> bool:
        return self._query("exists", [path])

    def read_text(self, path: str) -> str:
        return self._query("read_text", [path])

    def write_text(self, path: str, text: str) -> None:
        self._change("write_text", [path, text])

    def eventfd(self, initval=0, nonblocking=True):
        self._refuse("eventfd")

    def poll(self, fds: list[int], timeout_s: float) -> list[int]:
        ready = []
        for fd in fds:
            vector = self.irq_vectors.get(fd)
            if vector is None:
                self._refuse(f"poll fd {fd}")
            if self.replayer.observe((IRQ_POLL, vector)):
                ready.append(fd)
        if not ready:
            self.now += max(timeout_s, 0.0)
        return ready

    def alloc_locked(self, size: int) -> HostMemory:
        self._refuse("alloc_locked")

    def free_locked(self, mem: HostMemory) -> None:
        self._refuse("free_locked")

    def getpid(self) -> int:
        return int(self.replayer.header.device.get("pid", 0))

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)

    def monotonic(self) -> float:
        self.now += CLOCK_TICK_S
        return self.now


class _ReplayLock:
    """Stands for the ownership lock the recorded run held."""

    held = True

    def release(self) -> None:
        self.held = False


def read_trace(path: str) -> tuple[TraceHeader, list[Record]]:
    """A trace's header and records (BadTrace when it cannot be read)."""
    reader = TraceReader(str(path))
    return reader.header, reader.records()


def open_replay(path: str) -> tuple[PCIDevice, Replayer]:
    """A PCIDevice that plays the trace at `path` back, and the replayer to ask afterwards
    (`replayer.finish()`, `replayer.divergence`)."""
    header, records = read_trace(path)
    replayer = Replayer(header, records)
    seam = ReplaySeam(replayer)
    backend = ReplayBackend(replayer, seam)
    device = PCIDevice(backend, seam)
    device.attach_lock(_ReplayLock())
    return device, replayer
