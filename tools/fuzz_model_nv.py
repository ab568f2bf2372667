"""Stateful fuzzing of the NVIDIA backend: the driver state machine over a mock GPU behind the RM.

`NVStateMachine` is tools.fuzz_model's `DriverStateMachine` on `compute.Device("mock:nv:<gpu>")`
(H100 by default: `gpu_name`; `driver_version` is the mock driver's release): the same
allocations and frees, copies in, out and GPU to GPU, graph replays, signals across the compute
and copy channels and the same numpy model (`BufferModel`), watchdog and invariant (the timeline
never passes what was handed out). What differs is NVIDIA's:

- `launch` runs the CUDA library (compute/nv/kernels/prebuilt/*.fatbin, executed by the mock from
  their PTX) with any block size from 1 to 1024 threads (a CUDA block is not a multiple of a wave),
  and adds `histogram_u32` (atomics on shared and global memory, added to the bins there);
- `signal_wait_64`: one queue waits for a 64-bit value the other writes later (NVIDIA's acquire
  compares all 64 bits, AMD's the low 32);
- `fault`: an injected robust-channel error (`inject("rc")`: the launch is a ChannelError naming
  ROBUST_CHANNEL_GR_EXCEPTION, raised again until `reset_compute_queue`) or MMU fault
  (`inject("mmu")`: ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT), an injected hang (`inject("hang")` on a
  semaphore acquire: DeviceTimeout after a short wait) each followed by the reset, a reset of an
  idle group, a close then a reopen on the same machine, and a process exit without a close (the
  kernel closes its descriptors; with a launch left waiting) then a new owner. The model forgets
  what the lost work (the faulting launch, a copy queued before it) would have written;
- `misuse`: what the driver must refuse with a typed error before anything reaches the GPU (a
  ChannelError or a timeout there is a failure: the refusal came too late).

A reproducer starts with `REPRODUCER_HEADER`. In pytest:

    from tools.fuzz_model_nv import NVStateMachine
    TestNV = NVStateMachine.TestCase
"""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from compute import device as compute_device
from compute.nv import compiler
from drivers.nv.gpfifo import ChannelError
from hal.errors import DeviceTimeout
from tools import mock_machines
from tools.fuzz_model import (HANG_TIMEOUT_S, MAX_WORDS, WORD, BufferModel, DriverStateMachine,
                              ModelMismatch, PersistentMock, bounded, seeds, slots)

DEFAULT_GPU = "h100"
# compute/nv/kernels/*.cu: the kernels the machine launches and their fatbinary
KERNELS = {
    "vector_add_i32": "vector_add",
    "vector_add_f32": "vector_add",
    "saxpy": "saxpy",
    "memset_u32": "memory",
    "copy_u32": "memory",
    "reduce_sum_i32": "reduce",
    "histogram_u32": "histogram",
}
MAX_BLOCK = 1024  # threads per block (CUDA C++ Programming Guide, every compute capability here)
REDUCE_BLOCK = 256  # compute/nv/kernels/reduce.cu REDUCE_BLOCK (its __launch_bounds__)
HISTOGRAM_BINS = 64  # compute/nv/kernels/histogram.cu BINS
# the `fault` rule: an injected GR exception or MMU fault, an injected hang, each then the channel
# group's reset; a reset with nothing wrong; close and reopen on the same machine; the process
# exiting without a close (its descriptors closed by the kernel), then a new one opening
FAULTS = ("rc_then_reset", "mmu_then_reset", "hang_then_reset", "reset_compute_queue", "reopen",
          "exit_then_reopen")
# what each injected channel error must be named (mockgpu/nv/gpu.py, nverror.h)
INJECTED = {"rc_then_reset": ("rc", "ROBUST_CHANNEL_GR_EXCEPTION"),
            "mmu_then_reset": ("mmu", "ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT")}
MISUSES = ("copy_out_of_range", "freed_buffer", "zero_size", "negative_size", "local_size_too_large",
           "wrong_argument_count", "reduce_block_past_bounds", "argument_too_wide", "grid_too_large",
           "freed_buffer_argument")
REPRODUCER_HEADER = "from tools.fuzz_model_nv import NVStateMachine\n"


class NVPersistentMock(PersistentMock):
    """One mock NVIDIA machine for the whole run (tools.fuzz_model.PersistentMock): closing a
    Device keeps it, as a host keeps its GPU and its loaded kernel driver."""

    def __init__(self, gpu: str, version: str | None = None) -> None:
        super().__init__()
        self.gpu_name = gpu
        self.version = version

    def __call__(self, gpu: str | None = None):
        if self.mock is None:
            self.mock = mock_machines.nvidia(gpu or self.gpu_name, self.version)
        return _NVHandle(self.mock)

    @property
    def gpu(self):
        return self.mock.driver.gpu_model


class _NVHandle:
    """What the NVIDIA backend holds of the machine: everything but a `close` that removes it."""

    def __init__(self, mock) -> None:
        self._mock = mock
        self.machine = mock.machine
        self.driver = mock.driver
        self.os = mock.os

    def register_program(self, binary: bytes, name: str, sm: int) -> None:
        self._mock.register_program(binary, name, sm)

    def close(self) -> None:
        pass


class NVStateMachine(DriverStateMachine):
    """Random use of a mock NVIDIA GPU through compute.Device, checked against numpy."""

    gpu_name = DEFAULT_GPU
    driver_version: str | None = None  # the mock driver's release (default r535's; drivers.nv.abi)
    runs = 0
    steps = 0
    faults_injected = 0

    # -- internals -------------------------------------------------------------------------------
    def _install_factory(self) -> NVPersistentMock:
        factory = NVPersistentMock(self.gpu_name, self.driver_version)
        self.previous_factory = compute_device._mock_factories.get("nv")
        compute_device.register_mock_factory(factory, kind="nv")
        return factory

    def _restore_factory(self) -> None:
        compute_device.register_mock_factory(self.previous_factory, kind="nv")

    def _open(self, expected_boot=None) -> None:
        self.dev = compute_device.Device(f"mock:nv:{self.gpu_name}", timeout_s=self.wait_timeout_s)
        self.opened += 1
        self.live = []
        self.programs = {}
        self.graph = None

    def _program(self, name: str):
        program = self.programs.get(name)
        if program is None:
            program = self.dev.load(compiler.PREBUILT_DIR / f"{KERNELS[name]}.fatbin", name)
            self.programs[name] = program
        return program

    def _forget(self, model, start: int, count: int) -> None:
        """What lost work would have written there is unknown now."""
        model.known[start:start + count] = False

    # -- kernels ---------------------------------------------------------------------------------
    @precondition(lambda self: self.live)
    @rule(kernel=st.sampled_from(sorted(KERNELS)), out=slots, a=slots, b=slots,
          n=st.integers(1, MAX_WORDS), local_size=st.integers(1, MAX_BLOCK), seed=seeds)
    @bounded
    def launch(self, kernel: str, out: int, a: int, b: int, n: int, local_size: int, seed: int) -> None:
        if kernel != "histogram_u32":
            DriverStateMachine.launch(self, kernel, out, a, b, n, local_size, seed)
            return
        bins, samples = self._slot(out), self._slot(a)
        if bins is samples or bins.count < HISTOGRAM_BINS:
            return  # the bins would overlap the samples or end before the last bin
        n = min(n, samples.count)
        counts = np.bincount(samples.words[:n] % HISTOGRAM_BINS, minlength=HISTOGRAM_BINS)
        known_in = bool((samples.known[:n] & ~samples.approx[:n]).all())
        before = bins.words[:HISTOGRAM_BINS].astype(np.uint64)
        known = bins.known[:HISTOGRAM_BINS] & ~bins.approx[:HISTOGRAM_BINS] & known_in
        self._program(kernel)(samples.buffer, bins.buffer, n, global_size=n, local_size=local_size,
                              wait=True)
        bins.set(0, ((before + counts.astype(np.uint64)) & 0xFFFFFFFF).astype(np.uint32), known)
        self._verify(bins, kernel)

    # -- signals ---------------------------------------------------------------------------------
    @rule(value=st.integers(1, (1 << 62) - 1), compute_waits=st.booleans())
    @bounded
    def signal_wait_64(self, value: int, compute_waits: bool) -> None:
        """One queue waits for a 64-bit value the other writes later. Unlike AMD's, NVIDIA's
        GPU-side wait (SEM_EXECUTE ACQ_CIRC_GEQ with a 64-bit payload, compute/nv/queues.py) compares
        all 64 bits: a value whose low word is below the current one's still holds the waiter."""
        wide = value | 1 << 32
        signal = self.dev.new_signal("fuzz: 64-bit", value=wide & 0xFFFFFFFF)
        waiter, writer = self.dev.compute_queue, self.dev.copy_queue
        if not compute_waits:
            waiter, writer = writer, waiter
        waiter.wait(signal, wide).signal(signal, wide + 1)
        done = waiter.submit(ordered=False)
        if self.dev.timeline.value >= done or signal.value != wide & 0xFFFFFFFF:
            raise ModelMismatch(f"a wait for {wide:#x} passed on {signal.value:#x}")
        writer.signal(signal, wide)
        writer.submit(ordered=False)
        self.dev.timeline.wait(done)
        if signal.value != wide + 1:
            raise ModelMismatch(f"signal holds {signal.value:#x}, expected {wide + 1:#x}")

    # -- faults and recovery ---------------------------------------------------------------------
    @precondition(lambda self: self.live)
    @rule(kind=st.sampled_from(FAULTS), slot=slots, src=slots, n=st.integers(1, MAX_WORDS),
          pending=st.booleans())
    @bounded
    def fault(self, kind: str, slot: int, src: int, n: int, pending: bool) -> None:
        """Something goes wrong on the GPU, or the owner goes away, and the stack recovers. With
        `pending`, work is left queued first: a GPU copy before an injected channel error, a launch
        waiting on a semaphore nobody releases before a process exit."""
        type(self).faults_injected += 1
        if kind in INJECTED:
            self._channel_error_then_reset(kind, slot, src, n, pending)
        elif kind == "hang_then_reset":
            self._hang_then_reset(slot, n)
        elif kind == "reset_compute_queue":
            self.dev.synchronize()
            self.dev.reset_compute_queue("fuzz: an idle reset")
        elif kind == "reopen":
            self.dev.close()
            self.dev = None
            self._open()
        elif kind == "exit_then_reopen":
            if pending:
                self._leave_a_launch_waiting(slot, n)
            self._exit_without_close()
            self._open()

    def _leave_a_launch_waiting(self, slot: int, n: int) -> None:
        """A launch behind a semaphore nobody will release: the process exits with its channel
        blocked (and the copy queue's next work ordered after it)."""
        target = self._slot(slot)
        n = min(n, target.count)
        program = self._program("memset_u32")
        never = self.dev.new_signal("fuzz: never released")
        queue = self.dev.compute_queue
        queue.wait(never, 1)
        queue.exec(program.prepare((target.buffer, 0, n), n, 64, queue))
        value = queue.submit()
        if self.dev.timeline.value >= value:
            raise ModelMismatch("a launch behind a wait for a signal holding 0 finished")

    def _exit_without_close(self) -> None:
        """What a process exit does: the kernel closes every descriptor the process held, in
        order, with no RM free or UVM unregistration before; closing the control node frees the
        clients it made (nv.c nvidia_close), closing /dev/nvidia-uvm destroys the VA space (uvm.c
        uvm_release). Nothing of the process may stay behind in the kernel driver."""
        dev = self.dev
        self.dev = None
        dev.closed = True  # nothing of this process runs again: its work is gone with it
        os = dev.backend.os
        for fd in os.open_fds:
            os.close(fd)
        driver = self.factory.mock.driver
        if driver.rm.clients or driver.uvm_spaces:
            raise ModelMismatch(f"after the process exited the kernel driver still holds "
                                f"{len(driver.rm.clients)} RM client(s) and {len(driver.uvm_spaces)} "
                                f"UVM VA space(s)")

    def _channel_error_then_reset(self, kind: str, slot: int, src: int, n: int, pending: bool) -> None:
        """A launch faults (after a GPU copy queued without a wait, when `pending`): the
        error names the injected code until the reset; the lost work's targets become unknown."""
        target = self._slot(slot)
        n = min(n, target.count)
        injection, name = INJECTED[kind]
        if pending:
            source = self._slot(src)
            count = min(n, source.count)
            if source is not target:
                target.buffer.copy_from(source.buffer, WORD * count)
                self._forget(target, 0, count)
        program = self._program("memset_u32")
        self.gpu.inject(injection)
        try:
            program(target.buffer, 0, n, global_size=n, local_size=64, wait=True)
        except ChannelError as error:
            if error.name != name or error.engine != "compute":
                raise ModelMismatch(f"an injected {injection!r} fault was reported as {error.name} on "
                                    f"the {error.engine!r} channel, expected {name} on compute") from error
            why = self.gpu.errors[-1][1] if self.gpu.errors else ""
            if "injected" not in why:  # the launch faulted before the armed fault could fire
                raise ModelMismatch(f"a launch before an injected {injection!r} fault failed on its "
                                    f"own: {why}") from error
        else:
            raise ModelMismatch(f"an injected {injection!r} fault was not reported")
        finally:
            self._forget(target, 0, n)
        try:
            self.dev.synchronize()
        except ChannelError:
            pass
        else:
            raise ModelMismatch(f"{name} was forgotten before reset_compute_queue")
        self.dev.reset_compute_queue(f"fuzz: injected {injection}")
        self.dev.synchronize()

    def _hang_then_reset(self, slot: int, n: int) -> None:
        """A semaphore acquire that never succeeds holds a launch back: the wait for it is a
        bounded DeviceTimeout, and the reset passes the timeline over the lost launch."""
        target = self._slot(slot)
        n = min(n, target.count)
        program = self._program("memset_u32")
        ready = self.dev.new_signal("fuzz: ready")
        queue = self.dev.compute_queue
        self.gpu.inject("hang")
        queue.wait(ready, 0)
        queue.exec(program.prepare((target.buffer, 0, n), n, 64, queue))
        value = queue.submit()
        self._forget(target, 0, n)
        try:
            self.dev.timeline.wait(value, HANG_TIMEOUT_S)
        except DeviceTimeout:
            pass
        else:
            raise ModelMismatch("a launch behind an injected hang finished")
        self.dev.reset_compute_queue("fuzz: a semaphore that never comes")
        if self.dev.timeline.value < value:
            raise ModelMismatch(f"after the reset the timeline holds {self.dev.timeline.value}, below "
                                f"the lost launch's {value}")

    # -- misuse ----------------------------------------------------------------------------------
    # a misuse that surfaces as one of these reached the GPU: the driver should have refused it
    LATE_ERRORS = (ChannelError, DeviceTimeout)

    def _misuse(self, kind: str, model: BufferModel | None) -> bool:
        """The NVIDIA library's misuses, then the ones every backend shares (DriverStateMachine)."""
        if kind == "negative_size":
            self.dev.allocate(-WORD, host=True)
        elif kind == "local_size_too_large" and model is not None:
            self._program("memset_u32")(model.buffer, 0, 1, global_size=1, local_size=MAX_BLOCK + 1)
        elif kind == "reduce_block_past_bounds" and model is not None:
            self._program("reduce_sum_i32")(model.buffer, model.buffer, 1, global_size=2 * REDUCE_BLOCK,
                                            local_size=2 * REDUCE_BLOCK)
        elif kind == "argument_too_wide" and model is not None:
            self._program("memset_u32")(model.buffer, 0, 1 << 32, global_size=1, local_size=1)
        elif kind == "grid_too_large" and model is not None:
            self._program("memset_u32")(model.buffer, 0, 1, global_size=1 << 31, local_size=1)
        elif kind == "freed_buffer_argument":
            buffer = self.dev.allocate(WORD)
            buffer.free()
            self._program("memset_u32")(buffer, 0, 1, global_size=1, local_size=1, wait=True)
        else:
            return super()._misuse(kind, model)
        return True


# a few short sequences by default; tools.fuzz and callers pass their own settings
NVStateMachine.TestCase.settings = settings(
    max_examples=10, stateful_step_count=15, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
