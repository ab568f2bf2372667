"""Stateful fuzzing of the driver stack: a hypothesis state machine over a mock Navi31 and a numpy model.

`DriverStateMachine` (a `hypothesis.stateful.RuleBasedStateMachine`) brings a mock GPU up through
`compute.Device("mock:0")` and runs random sequences of what a user of the stack does: allocations
(VRAM and host) and frees, copies in, out and GPU to GPU, kernel launches of the library
(compute/amd/kernels/prebuilt) with random sizes, work-group sizes and arguments, signals handed
across the compute and copy queues, graph replays, compute queue resets (after a kernel that never
ends), warm re-attaches (the process exits without a teardown and a new one attaches to the same
machine), full close and reopen, the tools.reset_gpu ladder, and misuse that the driver must
refuse with a typed error. Every buffer has a reference in numpy (`BufferModel`: the words, which
of them are known, which hold float results compared with a tolerance); a read-back that differs,
a step that runs past `STEP_TIMEOUT_S` (`StepHung`) or an exception that is not expected fails the
run. hypothesis then shrinks it to a short program of steps, printed as code that runs as a
script once the import line `REPRODUCER_HEADER` is put in front of it (tools.fuzz writes such
files).

Another project runs it in its own pytest:

    from tools.fuzz_model import DriverStateMachine
    TestDriver = DriverStateMachine.TestCase   # settings: DriverStateMachine.TestCase.settings

The mock machine lives as long as the state machine (`PersistentMock`), so re-opening finds the
hardware as the previous owner left it, as it would on a real host.
"""
from __future__ import annotations

import contextlib
import functools
import pathlib
import signal as os_signal
import threading

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from compute import device as compute_device
from compute.graph import Graph
from hal.errors import DeviceTimeout, HalError
from mockgpu import GPU_BDF
from tools import mock_machines
from tools import reset_gpu as reset_tool

PREBUILT = pathlib.Path(__file__).resolve().parents[1] / "compute" / "amd" / "kernels" / "prebuilt"
WORD = 4  # every modelled buffer holds 32-bit words
MAX_WORDS = 4096  # the largest buffer: a few thousand elements keeps each step cheap
MAX_BUFFERS = 8
WAIT_TIMEOUT_S = 5.0  # the Device's bound on any one wait (a healthy step needs milliseconds)
HANG_TIMEOUT_S = 0.1  # the wait on a kernel that cannot finish
HANG_BUDGET = 10  # wave instructions a "never ending" kernel gets before the MEC leaves it hung
STEP_TIMEOUT_S = 60.0  # the watchdog on one step (a bring-up takes about half a second)
LOCAL_SIZES = (32, 64, 128, 256)
REDUCE_WG = 256  # compute/amd/kernels/reduce.cl REDUCE_WG (its reqd_work_group_size)
GRAPH_MAX = 1024  # elements of the graph's recorded vector_add grid
FLOAT_RTOL = 1e-5  # saxpy may be fused (one rounding) where numpy rounds twice
# (file, kernel) of every kernel the machine launches and the numpy reference it is checked with
KERNELS = {
    "vector_add_i32": "vector_add.co",
    "vector_add_f32": "vector_add.co",
    "saxpy": "saxpy.co",
    "memset_u32": "memory.co",
    "copy_u32": "memory.co",
    "reduce_sum_i32": "reduce.co",
}
# what the `fault` rule does: a kernel that never ends then the compute queue reset, a reset of an
# idle queue, the process exiting without a teardown then a warm attach, a full close then a
# reopen, the tools.reset_gpu ladder then a bring-up
FAULTS = ("hang_then_reset_queue", "reset_compute_queue", "reopen_warm", "reopen_cold", "reset_gpu")
# kinds the `fault` rule knows but does not draw while the stack fails them, with the reason (keep
# a strict xfail reproducer of each in tests/fuzz/test_fuzz_state.py); none at present
KNOWN_BROKEN: dict[str, str] = {}
MISUSES = ("copy_out_of_range", "freed_buffer", "zero_size", "local_size_too_large",
           "wrong_argument_count", "reduce_local_size")
REPRODUCER_HEADER = "from tools.fuzz_model import DriverStateMachine\n"


class StepHung(Exception):
    """A step of the state machine ran past the watchdog: a hang somewhere in the stack."""


class ModelMismatch(AssertionError):
    """The GPU's bytes differ from the numpy reference."""


# -- the watchdog --------------------------------------------------------------------------------
_watching = False  # a watchdog is armed (SIGALRM is process-wide: one at a time)


@contextlib.contextmanager
def watchdog(seconds: float, what: str):
    """Raise StepHung in the main thread when the block runs past `seconds` (SIGALRM; elsewhere,
    and where there is no SIGALRM, the block runs unwatched and the Device's own bounds apply)."""
    global _watching
    usable = hasattr(os_signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable or _watching:
        yield  # a watched step calling another keeps the outer bound
        return

    def expire(signum, frame):
        raise StepHung(f"{what} did not finish within {seconds} s")

    previous = os_signal.signal(os_signal.SIGALRM, expire)
    os_signal.setitimer(os_signal.ITIMER_REAL, seconds)
    _watching = True
    try:
        yield
    finally:
        _watching = False
        os_signal.setitimer(os_signal.ITIMER_REAL, 0)
        os_signal.signal(os_signal.SIGALRM, previous)


def bounded(function):
    """A rule body under the watchdog."""
    @functools.wraps(function)
    def step(self, *args, **kwargs):
        with watchdog(STEP_TIMEOUT_S, f"step {function.__name__}"):
            return function(self, *args, **kwargs)
    return step


# -- the mock machine ----------------------------------------------------------------------------
class PersistentMock:
    """A mock-machine factory for compute.device that hands out one machine for the whole run:
    closing a Device keeps the machine (as a host keeps its GPU); `dispose()` removes it."""

    def __init__(self) -> None:
        self.mock = None

    def __call__(self, index: int = 0):
        if self.mock is None:
            self.mock = mock_machines.navi31(index)
        return _Handle(self.mock)

    @property
    def gpu(self):
        return self.mock.machine.device(GPU_BDF)

    def dispose(self) -> None:
        if self.mock is not None:
            self.mock.close()
            self.mock = None


class _Handle:
    """What a Device's backend holds of the machine: everything but a `close` that removes it."""

    def __init__(self, mock) -> None:
        self._mock = mock
        self.machine = mock.machine
        self.device = mock.device
        self.firmware_dir = mock.firmware_dir
        self.os = mock.os

    def close(self) -> None:
        pass


# -- the reference model -------------------------------------------------------------------------
class BufferModel:
    """A live buffer and what it must hold: `words` (uint32), `known` (the words whose value is
    determined), `approx` (words holding float results, compared with FLOAT_RTOL)."""

    def __init__(self, buffer, words: int) -> None:
        self.buffer = buffer
        self.words = np.zeros(words, np.uint32)
        self.known = np.zeros(words, bool)
        self.approx = np.zeros(words, bool)

    @property
    def count(self) -> int:
        return len(self.words)

    def set(self, start: int, values: np.ndarray, known=True, approx=False) -> None:
        end = start + len(values)
        self.words[start:end] = values
        self.known[start:end] = known
        self.approx[start:end] = approx

    def check(self, got: np.ndarray, what: str) -> None:
        exact = self.known & ~self.approx
        bad = np.flatnonzero(exact & (got != self.words))
        if bad.size:
            first = int(bad[0])
            raise ModelMismatch(f"{what}: word {first} is {int(got[first]):#010x}, the model says "
                                f"{int(self.words[first]):#010x} ({bad.size} words differ)")
        close = self.known & self.approx
        if close.any():
            have = got[close].view(np.float32)
            want = self.words[close].view(np.float32)
            ok = np.isclose(have, want, rtol=FLOAT_RTOL, atol=1e-30, equal_nan=True)
            if not ok.all():
                index = int(np.flatnonzero(close)[np.flatnonzero(~ok)[0]])
                have_value = float(got[index:index + 1].view(np.float32)[0])
                want_value = float(self.words[index:index + 1].view(np.float32)[0])
                raise ModelMismatch(f"{what}: float word {index} is {have_value!r}, the model says "
                                    f"{want_value!r}")


def _random_words(seed: int, count: int, floats: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if floats:
        return rng.standard_normal(count).astype(np.float32).view(np.uint32)
    return rng.integers(0, 1 << 32, count, dtype=np.uint64).astype(np.uint32)


# -- the state machine ---------------------------------------------------------------------------
slots = st.integers(min_value=0, max_value=MAX_BUFFERS - 1)
word_counts = st.integers(min_value=1, max_value=MAX_WORDS)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


class DriverStateMachine(RuleBasedStateMachine):
    """Random use of a mock GPU through compute.Device, checked against numpy (module docstring)."""

    wait_timeout_s = WAIT_TIMEOUT_S  # the Device's bound on each wait
    runs = 0  # state machines started in this process (tools.fuzz counts iterations with it)
    steps = 0  # rules run
    faults_injected = 0  # hangs and resets the machine provoked on purpose

    def __init__(self) -> None:
        super().__init__()
        type(self).runs += 1
        self.factory = self._install_factory()
        self.dev = None
        self.live: list[BufferModel] = []
        self.programs: dict[str, object] = {}
        self.graph = None
        self.opened = 0
        try:
            with watchdog(STEP_TIMEOUT_S, "bring-up"):
                self._open("cold")
        except BaseException:
            self.factory.dispose()  # hypothesis runs no teardown for a machine that never started
            self._restore_factory()
            raise

    # -- internals -------------------------------------------------------------------------------
    def _install_factory(self) -> PersistentMock:
        """This run's mock-machine factory, registered with compute.device until teardown."""
        factory = PersistentMock()
        self.previous_factory = compute_device._mock_factory
        compute_device.register_mock_factory(factory)
        return factory

    def _restore_factory(self) -> None:
        compute_device.register_mock_factory(self.previous_factory)

    def _open(self, expected_boot: str | tuple[str, ...]) -> None:
        self.dev = compute_device.Device("mock:0", timeout_s=self.wait_timeout_s)
        self.opened += 1
        boot_kind = self.dev.backend.am.boot_kind
        expected = (expected_boot,) if isinstance(expected_boot, str) else expected_boot
        if boot_kind not in expected:
            raise AssertionError(f"bring-up #{self.opened} booted {boot_kind!r} "
                                 f"({self.dev.backend.am.boot_reason}), expected {' or '.join(expected)}")
        self.live = []
        self.programs = {}
        self.graph = None

    def _exit_without_teardown(self) -> None:
        """What a process exit does to the device: the driver detaches with the hardware up and
        the PCI device closes (drivers.am.device: AMDevice.detach, the exit hook)."""
        dev = self.dev
        self.dev = None
        dev.synchronize()
        dev.closed = True
        backend = dev.backend
        backend.am.detach()
        backend.pci.close()

    def _slot(self, slot: int) -> BufferModel | None:
        if not self.live:
            return None
        return self.live[slot % len(self.live)]

    def _program(self, name: str):
        program = self.programs.get(name)
        if program is None:
            program = self.dev.load(PREBUILT / KERNELS[name], name)
            self.programs[name] = program
        return program

    def _read(self, model: BufferModel) -> np.ndarray:
        return np.frombuffer(model.buffer.copyout(), np.uint32)

    @property
    def gpu(self):
        return self.factory.gpu

    def _verify(self, model: BufferModel, what: str) -> None:
        model.check(self._read(model), f"{what} into {model.buffer!r}")

    # -- memory ----------------------------------------------------------------------------------
    @initialize(buffers=st.lists(st.tuples(word_counts, st.booleans()), min_size=1, max_size=3),
                seed=seeds)
    @bounded
    def first_buffers(self, buffers: list[tuple[int, bool]], seed: int) -> None:
        """Buffers filled with random words, so the first rules have data to work on."""
        for index, (words, host) in enumerate(buffers):
            self.alloc(words, host)
            self.copy_in(len(self.live) - 1, 0, words, seed + index, floats=bool(index % 2))

    @precondition(lambda self: len(self.live) < MAX_BUFFERS)
    @rule(words=word_counts, host=st.booleans())
    @bounded
    def alloc(self, words: int, host: bool) -> None:
        buffer = self.dev.allocate(WORD * words, host=host)
        self.live.append(BufferModel(buffer, words))

    @precondition(lambda self: self.live)
    @rule(slot=slots)
    @bounded
    def free(self, slot: int) -> None:
        model = self._slot(slot)
        model.buffer.free()
        self.live.remove(model)

    @precondition(lambda self: self.live)
    @rule(slot=slots, start=st.integers(0, MAX_WORDS), count=word_counts, seed=seeds,
          floats=st.booleans())
    @bounded
    def copy_in(self, slot: int, start: int, count: int, seed: int, floats: bool) -> None:
        model = self._slot(slot)
        start %= model.count
        count = min(count, model.count - start)
        values = _random_words(seed, count, floats)
        model.buffer.copyin(values, offset=WORD * start)
        model.set(start, values)

    @precondition(lambda self: self.live)
    @rule(slot=slots)
    @bounded
    def copy_out(self, slot: int) -> None:
        model = self._slot(slot)
        model.check(self._read(model), f"copy_out of {model.buffer!r}")

    @precondition(lambda self: self.live)
    @rule(dst=slots, src=slots, dst_start=st.integers(0, MAX_WORDS), src_start=st.integers(0, MAX_WORDS),
          count=word_counts)
    @bounded
    def copy_gpu(self, dst: int, src: int, dst_start: int, src_start: int, count: int) -> None:
        target = self._slot(dst)
        source = self._slot(src)
        dst_start %= target.count
        src_start %= source.count
        count = min(count, target.count - dst_start, source.count - src_start)
        if target is source and abs(dst_start - src_start) < count:
            return  # overlapping ranges of one buffer: the copy engine's order is not defined
        value = target.buffer.copy_from(source.buffer, WORD * count, dst_offset=WORD * dst_start,
                                        src_offset=WORD * src_start)
        self.dev.timeline.wait(value)
        span = slice(src_start, src_start + count)
        target.set(dst_start, source.words[span].copy(), source.known[span].copy(),
                   source.approx[span].copy())
        self._verify(target, "copy_gpu")

    # -- kernels ---------------------------------------------------------------------------------
    @precondition(lambda self: self.live)
    @rule(kernel=st.sampled_from(sorted(KERNELS)), out=slots, a=slots, b=slots,
          n=st.integers(1, MAX_WORDS), local_size=st.sampled_from(LOCAL_SIZES), seed=seeds)
    @bounded
    def launch(self, kernel: str, out: int, a: int, b: int, n: int, local_size: int, seed: int) -> None:
        target, first, second = self._slot(out), self._slot(a), self._slot(b)
        program = self._program(kernel)
        rng = np.random.default_rng(seed)
        if kernel.startswith("vector_add"):
            n = min(n, target.count, first.count, second.count)
            x, y = first.words[:n].copy(), second.words[:n].copy()
            known = first.known[:n] & second.known[:n] & ~first.approx[:n] & ~second.approx[:n]
            program(first.buffer, second.buffer, target.buffer, n, global_size=n,
                    local_size=local_size, wait=True)
            if kernel.endswith("i32"):
                target.set(0, x + y, known)  # uint32 wraps as int32 does
            else:
                with np.errstate(all="ignore"):
                    result = (x.view(np.float32) + y.view(np.float32)).view(np.uint32)
                target.set(0, result, known, approx=True)
        elif kernel == "saxpy":
            n = min(n, first.count, target.count)
            alpha = np.float32(rng.standard_normal())
            x, y = first.words[:n].copy(), target.words[:n].copy()
            known = first.known[:n] & target.known[:n]
            program(float(alpha), first.buffer, target.buffer, n, global_size=n,
                    local_size=local_size, wait=True)
            with np.errstate(all="ignore"):
                # clang fuses alpha * x + y (one rounding, no overflow of the product alone):
                # float64 holds the product exactly, so only the sum is rounded (twice)
                wide = np.float64(alpha) * x.view(np.float32).astype(np.float64)
                result = (wide + y.view(np.float32).astype(np.float64)).astype(np.float32)
            target.set(0, result.view(np.uint32), known, approx=True)
        elif kernel == "memset_u32":
            n = min(n, target.count)
            value = int(rng.integers(0, 1 << 32))
            program(target.buffer, value, n, global_size=n, local_size=local_size, wait=True)
            target.set(0, np.full(n, value, np.uint32))
        elif kernel == "copy_u32":
            n = min(n, first.count, target.count)
            span = slice(0, n)
            values = first.words[span].copy()
            known = first.known[span].copy()
            approx = first.approx[span].copy()
            program(first.buffer, target.buffer, n, global_size=n, local_size=local_size, wait=True)
            target.set(0, values, known, approx)
        elif kernel == "reduce_sum_i32":
            if target is first:
                return  # partial sums written over the input other work-groups still read
            n = min(n, first.count, target.count * REDUCE_WG)
            groups = -(-n // REDUCE_WG)
            data = first.words[:n].view(np.int32).astype(np.int64)
            known_in = first.known[:n] & ~first.approx[:n]
            program(first.buffer, target.buffer, n, global_size=groups * REDUCE_WG,
                    local_size=REDUCE_WG, wait=True)
            sums = np.zeros(groups, np.uint32)
            known = np.zeros(groups, bool)
            for group in range(groups):
                span = slice(group * REDUCE_WG, min(n, (group + 1) * REDUCE_WG))
                sums[group] = np.uint32(int(data[span].sum()) & 0xFFFFFFFF)
                known[group] = bool(known_in[span].all())
            target.set(0, sums, known)
        self._verify(target, kernel)

    @precondition(lambda self: len(self.live) >= 1)
    @rule(a=slots, b=slots, c=slots, n=st.integers(1, GRAPH_MAX))
    @bounded
    def graph_replay(self, a: int, b: int, c: int, n: int) -> None:
        first, second, target = self._slot(a), self._slot(b), self._slot(c)
        if self.graph is None:
            graph = Graph(self.dev)
            inputs = [graph.input(name) for name in ("a", "b", "c", "n")]
            graph.launch(self._program("vector_add_i32"), *inputs, global_size=GRAPH_MAX,
                         local_size=REDUCE_WG)
            self.graph = graph
        n = min(n, first.count, second.count, target.count)
        x, y = first.words[:n].copy(), second.words[:n].copy()
        known = first.known[:n] & second.known[:n] & ~first.approx[:n] & ~second.approx[:n]
        self.dev.timeline.wait(self.graph.replay(a=first.buffer, b=second.buffer, c=target.buffer, n=n))
        target.set(0, x + y, known)
        self._verify(target, "graph_replay")

    # -- signals ---------------------------------------------------------------------------------
    @rule(value=st.integers(1, (1 << 63) - 2), high=st.booleans())
    @bounded
    def signal_across_queues(self, value: int, high: bool) -> None:
        """The copy queue waits for a value the compute queue writes later, then answers; with
        `high`, a value above 32 bits then arrives whole. GPU-side waits compare the low 32 bits
        (docs/compute.md, as amdgpu's fences), so the handshake uses a 31-bit value."""
        low = value & 0x7FFFFFFF or 1
        signal = self.dev.new_signal("fuzz")
        self.dev.copy_queue.wait(signal, low).signal(signal, low + 1)
        copy_done = self.dev.copy_queue.submit(ordered=False)
        self.dev.compute_queue.signal(signal, low)
        self.dev.compute_queue.submit(ordered=False)
        signal.wait(low + 1)
        self.dev.timeline.wait(copy_done)
        if signal.value != low + 1:
            raise ModelMismatch(f"signal holds {signal.value:#x}, expected {low + 1:#x}")
        if high:
            wide = value | 1 << 32
            self.dev.compute_queue.signal(signal, wide)
            self.dev.compute_queue.submit()
            signal.wait(wide)
            if signal.value != wide:
                raise ModelMismatch(f"signal holds {signal.value:#x}, expected {wide:#x}")

    @rule()
    @bounded
    def synchronize(self) -> None:
        self.dev.synchronize()

    # -- faults and recovery ---------------------------------------------------------------------
    @rule(kind=st.sampled_from(FAULTS), words=st.integers(1, MAX_WORDS))
    @bounded
    def fault(self, kind: str, words: int) -> None:
        """Something goes wrong, or the owner goes away, and the stack recovers (`FAULTS`; also
        the kinds of `KNOWN_BROKEN` when a reproducer names them)."""
        type(self).faults_injected += 1
        if kind == "hang_then_reset_queue":
            self._hang_then_reset_queue(words)
        elif kind == "reset_compute_queue":
            self.dev.synchronize()
            self.dev.reset_compute_queue("fuzz")
        elif kind == "reopen_warm":
            self._exit_without_teardown()
            self._open("warm")
        elif kind == "reopen_cold":
            self.dev.close()
            self.dev = None
            self._open(("reset", "cold"))
        elif kind == "reset_gpu":
            self._reset_gpu()

    def _hang_then_reset_queue(self, words: int) -> None:
        """A kernel that cannot finish times out; the queue reset brings the device back."""
        scratch = self.dev.allocate(WORD * words)
        mec = self.gpu.mec
        budget = mec.instruction_budget
        mec.instruction_budget = HANG_BUDGET
        try:
            value = self._program("memset_u32")(scratch, 0, words, global_size=words, local_size=64)
            with contextlib.suppress(DeviceTimeout):  # the MEC leaves the queue hung on the grid
                self.dev.timeline.wait(value, HANG_TIMEOUT_S)
        finally:
            mec.instruction_budget = budget
        self.dev.reset_compute_queue("fuzz: a kernel that never ends")
        scratch.free()

    def _reset_gpu(self) -> None:
        """The process exits without a teardown, tools.reset_gpu resets the GPU, a new owner
        brings it up again (a mode1 first, as the PSP's SOS still runs)."""
        self._exit_without_teardown()
        machine = self.factory.mock.machine
        report = reset_tool.reset_gpu(machine.os, GPU_BDF, unbind=True, timeout_s=2.0,
                                      lock_dir=machine.lock_dir)
        if not report.ok:
            raise AssertionError(f"tools.reset_gpu failed: {report.as_text()}")
        self._open(("reset", "cold"))

    # errors that mean a misuse reached the GPU before it was refused (too late); none on AMD
    LATE_ERRORS: tuple[type[BaseException], ...] = ()

    @rule(kind=st.sampled_from(MISUSES), slot=slots)
    @bounded
    def misuse(self, kind: str, slot: int) -> None:
        """What the driver must refuse with a typed error (hal.errors), leaving the device usable."""
        try:
            if not self._misuse(kind, self._slot(slot)):
                return
        except self.LATE_ERRORS:
            raise
        except HalError:
            return
        raise AssertionError(f"misuse {kind!r} was accepted")

    def _misuse(self, kind: str, model: BufferModel | None) -> bool:
        """Attempt misuse `kind` (a MISUSES entry); False when it does not apply here."""
        if kind == "copy_out_of_range" and model is not None:
            model.buffer.copyout(WORD, offset=WORD * model.count)
        elif kind == "freed_buffer":
            buffer = self.dev.allocate(WORD)
            buffer.free()
            buffer.copyin(b"\0" * WORD)
        elif kind == "zero_size":
            self.dev.allocate(0)
        elif kind == "local_size_too_large" and model is not None:
            self._program("memset_u32")(model.buffer, 0, 1, global_size=1, local_size=4096)
        elif kind == "wrong_argument_count" and model is not None:
            self._program("copy_u32")(model.buffer, 1, global_size=1, local_size=1)
        elif kind == "reduce_local_size" and model is not None:
            self._program("reduce_sum_i32")(model.buffer, model.buffer, 1, global_size=64, local_size=64)
        else:
            return False
        return True

    # -- invariants and teardown -----------------------------------------------------------------
    @invariant()
    def timeline_never_passes_what_was_handed_out(self) -> None:
        type(self).steps += 1
        if self.dev is not None and self.dev.timeline.value > self.dev.timeline_value - 1:
            raise ModelMismatch(f"the timeline holds {self.dev.timeline.value}, but only "
                                f"{self.dev.timeline_value - 1} was handed out")

    def teardown(self) -> None:
        try:
            if self.dev is not None:
                with watchdog(STEP_TIMEOUT_S, "teardown"):
                    self.dev.close()
        finally:
            self.dev = None
            self.factory.dispose()
            self._restore_factory()


# a few short sequences by default; tools.fuzz and callers pass their own settings
DriverStateMachine.TestCase.settings = settings(
    max_examples=10, stateful_step_count=15, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
