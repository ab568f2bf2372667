"""The driver state machine (tools.fuzz_model): short random runs pass, every rule and fault kind
works on its own, a corrupted copy path is caught and shrunk to a reproducer that runs as a script,
and what the machine found stays fixed (a warm re-attach after staged copies)."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from compute import buffer
from tools import fuzz, fuzz_model
from tools.fuzz_model import DriverStateMachine, ModelMismatch


def test_short_random_runs_of_the_driver_state_machine_pass():
    run_state_machine_as_test(DriverStateMachine, settings=settings(
        max_examples=2, stateful_step_count=8, deadline=None, derandomize=True, database=None,
        suppress_health_check=list(HealthCheck)))


def test_every_rule_and_fault_kind_runs_against_the_model():
    state = DriverStateMachine()
    try:
        state.first_buffers(buffers=[(700, False), (300, True), (1100, False)], seed=5)
        for kernel in sorted(fuzz_model.KERNELS):
            state.launch(kernel=kernel, out=2, a=0, b=1, n=1000, local_size=64, seed=9)
        state.copy_gpu(dst=0, src=2, dst_start=3, src_start=10, count=200)
        state.graph_replay(a=0, b=1, c=2, n=257)
        state.signal_across_queues(value=(1 << 40) + 7, high=True)
        # low 32 bits zero: the GPU-side wait compares those only (found by the machine: the rule
        # waited for the whole value and timed out)
        state.signal_across_queues(value=1 << 42, high=True)
        for kind in fuzz_model.MISUSES:
            state.misuse(kind=kind, slot=0)
        for kind in fuzz_model.FAULTS:
            state.fault(kind=kind, words=300)
            state.alloc(words=64, host=False)
            state.copy_in(slot=0, start=0, count=64, seed=3, floats=False)
            state.copy_out(slot=0)
        state.free(slot=0)
        state.synchronize()
    finally:
        state.teardown()


def corrupt_staged_copies(monkeypatch):
    """The copy-in path flips one bit of byte 100 of every staged copy longer than that."""
    original = buffer.StagingPool.copy_in

    def corrupted(self, gpu_address, data):
        data = bytearray(data)
        if len(data) > 100:
            data[100] ^= 1
        return original(self, gpu_address, memoryview(data))

    monkeypatch.setattr(buffer.StagingPool, "copy_in", corrupted)


def test_a_corrupted_copy_is_caught_and_shrunk_to_a_runnable_reproducer(monkeypatch, tmp_path):
    corrupt_staged_copies(monkeypatch)
    with fuzz.shrink_limit(2):
        failures = fuzz.run_state_machine(seed=1, examples=6, steps=8, out=tmp_path, database=None)
    assert failures and failures[0].kind == "state"
    assert "ModelMismatch" in failures[0].error
    script = pathlib.Path(failures[0].reproducer).read_text()
    assert "from tools.fuzz_model import DriverStateMachine" in script
    assert "state = DriverStateMachine()" in script and script.rstrip().endswith("state.teardown()")
    # the printed program runs as a script and fails the same way (with the bug still in place)
    with pytest.raises(ModelMismatch):
        exec(compile(script, failures[0].reproducer, "exec"), {"__name__": "__main__"})


def test_a_model_mismatch_names_the_word():
    model = fuzz_model.BufferModel(None, 4)
    model.set(0, np.array([1, 2, 3, 4], np.uint32))
    with pytest.raises(ModelMismatch, match="word 2 is 0x00000009"):
        model.check(np.array([1, 2, 9, 4], np.uint32), "read")
    model.set(0, np.array([1.0, 2.0], np.float32).view(np.uint32), approx=True)
    near = np.concatenate([np.array([1.0000001, 2.0], np.float32).view(np.uint32),
                           np.array([3, 4], np.uint32)])
    model.check(near, "read")  # float words within FLOAT_RTOL


def test_the_watchdog_ends_a_step_that_hangs():
    with pytest.raises(fuzz_model.StepHung, match="spin did not finish within 0.2 s"):
        with fuzz_model.watchdog(0.2, "spin"):
            while True:
                pass


class QuickTimeouts(DriverStateMachine):
    wait_timeout_s = 0.3


def test_a_warm_reattach_after_staged_copies_copies_through_fresh_translations():
    # found by the state machine: the GC's warm attach left the GFX hub out of the GMC's enabled
    # hubs, so no TLB flush reached it and the SDMA read the previous owner's freed staging page
    state = QuickTimeouts()
    try:
        state.first_buffers(buffers=[(532, False)], seed=1)
        state.fault(kind="reopen_warm", words=27)
        state.alloc(host=False, words=200)
        state.copy_in(slot=0, start=0, count=200, seed=2, floats=False)
        state.copy_out(slot=0)
        state.signal_across_queues(value=7, high=False)
        assert state.dev.backend.am.boot_kind == "warm"
    finally:
        state.teardown()


def test_saxpy_on_words_whose_product_overflows_matches_the_fused_multiply_add():
    # found by the state machine: the model rounded alpha * x to float32 (inf) before adding y,
    # where the kernel's fused multiply-add rounds once (a finite result)
    state = DriverStateMachine()
    try:
        state.first_buffers(buffers=[(72, False)], seed=0)
        state.launch(a=0, b=0, kernel="saxpy", local_size=32, n=1558, out=0, seed=67043328)
    finally:
        state.teardown()
