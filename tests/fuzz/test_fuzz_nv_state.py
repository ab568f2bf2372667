"""The NVIDIA state machine (tools.fuzz_model_nv): short random runs pass, every rule, fault and
misuse kind works on its own, and each rule family can fail: a copy engine that flips a bit, a
launch of the wrong kernel, a semaphore release of the wrong value, an injected fault the GPU
ignores, a timeline past what was handed out and a misuse the driver accepts. What the machine
found stays fixed (a freed buffer as a kernel argument)."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from autogen.nv.r535 import classes as cl
from compute import buffer
from compute.nv import program as nv_program
from drivers.nv.device import NVDevice
from drivers.nv.gpfifo import ChannelError
from hal.errors import InvalidArgument
from mockgpu.nv import gpu as nvgpu
from tools import fuzz, fuzz_model_nv, mock_machines
from tools.fuzz_model import ModelMismatch
from tools.fuzz_model_nv import NVStateMachine


def test_short_random_runs_of_the_nv_state_machine_pass():
    run_state_machine_as_test(NVStateMachine, settings=settings(
        max_examples=3, stateful_step_count=12, deadline=None, derandomize=True, database=None,
        suppress_health_check=list(HealthCheck)))


def test_every_rule_fault_and_misuse_runs_against_the_model():
    state = NVStateMachine()
    try:
        state.first_buffers(buffers=[(700, False), (300, True), (1100, False)], seed=5)
        for kernel in sorted(fuzz_model_nv.KERNELS):
            state.launch(kernel=kernel, out=2, a=0, b=1, n=1000, local_size=97, seed=9)
        state.launch(kernel="vector_add_i32", out=2, a=0, b=1, n=1000, local_size=1024, seed=9)
        state.copy_gpu(dst=0, src=2, dst_start=3, src_start=10, count=200)
        state.graph_replay(a=0, b=1, c=2, n=257)
        state.signal_across_queues(value=(1 << 40) + 7, high=True)
        state.signal_wait_64(value=5, compute_waits=True)
        state.signal_wait_64(value=(1 << 40) + 3, compute_waits=False)
        for kind in fuzz_model_nv.MISUSES:
            state.misuse(kind=kind, slot=0)
        for kind in fuzz_model_nv.FAULTS:
            state.fault(kind=kind, slot=1, src=0, n=500, pending=True)
            state.alloc(words=64, host=False)
            state.copy_in(slot=0, start=0, count=64, seed=3, floats=False)
            for slot in range(len(state.live)):
                state.copy_out(slot=slot)
        state.free(slot=0)
        state.synchronize()
    finally:
        state.teardown()


def test_lost_work_is_forgotten_and_the_rest_still_checked():
    state = NVStateMachine()
    try:
        state.first_buffers(buffers=[(400, False), (400, False)], seed=1)
        state.fault(kind="rc_then_reset", slot=1, src=0, n=100, pending=True)
        target = state.live[1]
        assert not target.known[:100].any() and target.known[100:].all()
        state.copy_out(slot=1)  # the words the lost launch never reached are still compared
    finally:
        state.teardown()


def test_many_allocations_and_frees_reuse_addresses_without_aliasing():
    state = NVStateMachine()
    try:
        state.first_buffers(buffers=[(64, False), (64, True)], seed=2)
        addresses = set()
        for cycle in range(300):
            state.alloc(words=1 + cycle % 700, host=bool(cycle % 3 == 0))
            addresses.add(state.live[-1].buffer.gpu_address)
            state.copy_in(slot=2, start=0, count=64, seed=cycle, floats=False)
            state.free(slot=2)
        assert len(addresses) < 300  # the driver took addresses back
        state.copy_out(slot=0)
        state.copy_out(slot=1)
    finally:
        state.teardown()


def test_a_new_process_after_one_exited_without_closing_runs_kernels_and_copies():
    # found by the state machine: closing /dev/nvidia-uvm left the VA space in the mock, which
    # translated the next process's GPU addresses through the dead one's mappings first (the same
    # addresses: a fresh allocator starts at the same base), so the new timeline never moved
    state = NVStateMachine()
    try:
        state.first_buffers(buffers=[(700, False), (300, True)], seed=5)
        state.launch(kernel="vector_add_i32", out=1, a=0, b=0, n=300, local_size=64, seed=1)
        state.fault(kind="exit_then_reopen", slot=0, src=0, n=1, pending=True)
        assert len(state.factory.mock.driver.uvm_spaces) == 1  # the new process's alone
        state.alloc(words=300, host=False)
        state.copy_in(slot=0, start=0, count=300, seed=2, floats=False)
        state.launch(kernel="vector_add_i32", out=0, a=0, b=0, n=300, local_size=64, seed=1)
        state.copy_out(slot=0)
    finally:
        state.teardown()


def test_closing_the_uvm_descriptor_destroys_its_va_space():
    machine = mock_machines.nvidia("h100")
    try:
        device = NVDevice.open(machine.os)
        device.alloc_memory(1 << 21, location="vram")
        space = machine.driver.uvm_spaces[0]
        assert space.mappings and space.channels
        for fd in machine.os.open_fds:  # a process exit: no frees, every descriptor closed
            machine.os.close(fd)
        assert machine.driver.uvm_spaces == []
        assert machine.driver.gpu_model.memory.first_unmapped(min(space.mappings), 1) is not None
        assert machine.driver.rm.clients == {}
    finally:
        machine.close()


def _flip_copied_bit(monkeypatch):
    """The mock copy engine flips bit 0 of byte 100 of every copy longer than that."""
    original = nvgpu.GPUModel._copy_method

    def corrupted(self, state, method, value):
        original(self, state, method, value)
        regs = state.state
        length = regs.get(cl.NVC6B5_LINE_LENGTH_IN, 0)
        if method == cl.NVC6B5_LAUNCH_DMA and length > 100:
            target = regs[cl.NVC6B5_OFFSET_OUT_UPPER] << 32 | regs[cl.NVC6B5_OFFSET_OUT_LOWER]
            byte = self._read(target + 100, 1)[0]
            self._write(target + 100, bytes([byte ^ 1]))

    monkeypatch.setattr(nvgpu.GPUModel, "_copy_method", corrupted)


def test_a_copy_engine_that_flips_a_bit_is_a_mismatch(monkeypatch):
    state = NVStateMachine()
    try:
        # host buffers: the CPU writes and reads them, the copy engine only runs the GPU copy
        state.first_buffers(buffers=[(64, True), (64, True)], seed=0)
        _flip_copied_bit(monkeypatch)
        with pytest.raises(ModelMismatch, match="word 25"):
            state.copy_gpu(dst=1, src=0, dst_start=0, src_start=0, count=64)
    finally:
        monkeypatch.undo()
        state.teardown()


def test_a_corrupted_read_back_is_caught_and_shrunk_to_a_runnable_reproducer(monkeypatch, tmp_path):
    original = buffer.StagingPool.copy_out

    def corrupted(self, gpu_address, size):
        data = bytearray(original(self, gpu_address, size))
        if len(data) > 100:
            data[100] ^= 1
        return bytes(data)

    monkeypatch.setattr(buffer.StagingPool, "copy_out", corrupted)
    with fuzz.shrink_limit(2):
        failures = fuzz.run_state_machine(seed=1, examples=6, steps=8, out=tmp_path, database=None,
                                          machine=NVStateMachine)
    assert failures and failures[0].kind == "state" and failures[0].target == "NVStateMachine"
    assert "ModelMismatch" in failures[0].error
    script = pathlib.Path(failures[0].reproducer).read_text()
    assert "from tools.fuzz_model_nv import NVStateMachine" in script
    assert "state = NVStateMachine()" in script and script.rstrip().endswith("state.teardown()")
    with pytest.raises(ModelMismatch):
        exec(compile(script, failures[0].reproducer, "exec"), {"__name__": "__main__"})


def test_a_launch_of_the_wrong_kernel_is_a_mismatch(monkeypatch):
    monkeypatch.setitem(fuzz_model_nv.KERNELS, "vector_add_i32", "vector_add")
    state = NVStateMachine()
    try:
        state.first_buffers(buffers=[(256, False), (256, False)], seed=3)
        # what a driver that uploaded another kernel's code would run
        state.programs["vector_add_i32"] = state._program("vector_add_f32")
        with pytest.raises(ModelMismatch, match="vector_add_i32"):
            state.launch(kernel="vector_add_i32", out=1, a=0, b=0, n=256, local_size=64, seed=0)
    finally:
        state.teardown()


def test_a_semaphore_release_of_the_wrong_value_is_a_mismatch(monkeypatch):
    original = nvgpu.GPUModel._semaphore
    state = NVStateMachine()
    timeline = state.dev.timeline.gpu_address

    def off_by_one(self, channel, value):
        done = original(self, channel, value)
        regs = channel.state
        address = regs.get(cl.NVC86F_SEM_ADDR_LO, 0) | regs.get(cl.NVC86F_SEM_ADDR_HI, 0) << 32
        operation = value & 0x7  # clc56f.h SEM_EXECUTE_OPERATION 2:0
        if operation == cl.NVC56F_SEM_EXECUTE_OPERATION_RELEASE and address != timeline:
            current = int.from_bytes(self._read(address, 8), "little")
            self._write(address, (current + 1).to_bytes(8, "little"))
        return done

    try:
        state.first_buffers(buffers=[(16, True)], seed=0)
        monkeypatch.setattr(nvgpu.GPUModel, "_semaphore", off_by_one)
        with pytest.raises(ModelMismatch, match="signal holds"):
            state.signal_wait_64(value=9, compute_waits=True)
    finally:
        monkeypatch.undo()
        state.teardown()


@pytest.mark.parametrize("kind, injection", [("rc_then_reset", "rc"), ("mmu_then_reset", "mmu"),
                                             ("hang_then_reset", "hang")])
def test_an_injected_fault_the_gpu_ignores_fails_the_fault_rule(monkeypatch, kind, injection):
    original = nvgpu.GPUModel.inject
    monkeypatch.setattr(nvgpu.GPUModel, "inject",
                        lambda self, what: None if what == injection else original(self, what))
    state = NVStateMachine()
    try:
        state.first_buffers(buffers=[(128, False)], seed=4)
        with pytest.raises(ModelMismatch, match="was not reported|finished"):
            state.fault(kind=kind, slot=0, src=0, n=128, pending=False)
    finally:
        state.teardown()


def test_a_timeline_past_what_was_handed_out_fails_the_invariant():
    state = NVStateMachine()
    try:
        state.first_buffers(buffers=[(32, False)], seed=0)
        state.timeline_never_passes_what_was_handed_out()
        state.dev.timeline_value -= 1  # as if the GPU wrote a value no submission was given
        with pytest.raises(ModelMismatch, match="was handed out"):
            state.timeline_never_passes_what_was_handed_out()
        state.dev.timeline_value += 1
    finally:
        state.teardown()


def test_a_misuse_the_driver_accepts_fails_the_misuse_rule(monkeypatch):
    def lenient(self, args):  # a driver that packs what it is given, short or not
        block = bytearray(self.kernel.param_size)
        for arg, value in zip(self.params, args):
            block[arg.offset:arg.offset + arg.size] = self.pack_arg(arg, value)
        return bytes(block)

    monkeypatch.setattr(nv_program.NVProgram, "pack_kernargs", lenient)
    state = NVStateMachine()
    try:
        state.first_buffers(buffers=[(32, False)], seed=0)
        with pytest.raises(AssertionError, match="wrong_argument_count"):
            state.misuse(kind="wrong_argument_count", slot=0)
    finally:
        state.teardown()


@pytest.mark.parametrize("loaded", [True, False])
def test_a_freed_buffer_argument_that_reaches_the_gpu_fails_the_misuse_rule(monkeypatch, loaded):
    def unchecked(self, arg, value):  # the packing before the fix: a freed buffer's old address
        if isinstance(value, buffer.Buffer):
            value = value.gpu_address
        return (value % (1 << (8 * arg.size))).to_bytes(arg.size, "little")

    monkeypatch.setattr(nv_program.NVProgram, "pack_arg", unchecked)
    state = NVStateMachine()
    try:
        state.first_buffers(buffers=[(32, False)], seed=0)
        if loaded:
            state._program("memset_u32")
            with pytest.raises(ChannelError, match="MMU_ERR_FLT"):  # the address is unmapped
                state.misuse(kind="freed_buffer_argument", slot=0)
        else:
            # the program's image is allocated after the free and gets the freed address: the
            # kernel writes over its own code, and nothing notices
            with pytest.raises(AssertionError, match="was accepted"):
                state.misuse(kind="freed_buffer_argument", slot=0)
    finally:
        state.dev.closed = True  # the channel group is stopped: close without a reset
        state.dev.backend.close()
        state.dev = None
        state.teardown()


def test_a_freed_buffer_as_a_kernel_argument_is_refused_before_the_gpu_sees_it():
    # found by the state machine: the address of a freed buffer went into the launch, the kernel
    # faulted (or, once the address was handed out again, wrote another buffer's memory)
    state = NVStateMachine()
    try:
        state.first_buffers(buffers=[(64, False)], seed=0)
        freed = state.dev.allocate(256)
        freed.free()
        with pytest.raises(InvalidArgument, match="was freed"):
            state._program("memset_u32")(freed, 7, 64, global_size=64, local_size=64)
        with pytest.raises(InvalidArgument, match="was freed"):
            state.graph_replay(a=0, b=0, c=0, n=64)  # builds the graph
            state.graph.replay(a=freed, b=state.live[0].buffer, c=state.live[0].buffer, n=64)
        state.dev.synchronize()  # no channel error: nothing reached the GPU
        state.copy_out(slot=0)
        assert state.gpu.errors == []
    finally:
        state.teardown()


def test_tools_fuzz_runs_the_nv_machine(capsys, tmp_path):
    import json

    code = fuzz.main(["--machine", "nv", "--minutes", "0", "--seed", "3", "--targets", "msgpack",
                      "--out", str(tmp_path), "--no-database", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"] and report["steps"] > 0
    assert NVStateMachine.runs >= fuzz.STATE_EXAMPLES


def test_the_model_reads_what_the_gpu_holds():
    state = NVStateMachine()
    try:
        state.first_buffers(buffers=[(10, False)], seed=0)
        model = state.live[0]
        model.words[3] ^= 1
        with pytest.raises(ModelMismatch, match="word 3"):
            state.copy_out(slot=0)
        model.words[3] ^= 1
        assert np.array_equal(state._read(model), model.words)
    finally:
        state.teardown()
