"""Kernels with a private segment (scratch): compute/amd/kernels/private_array.cl through
Device("mock:0") against numpy, the scratch registers the launcher programs, the per-lane interleave
the mock's interpreter gives SCRATCH accesses, and the MEC refusing scratch it cannot place."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

from compute.device import Device
from hal.errors import DeviceTimeout
from mockgpu import GPU_BDF

PREBUILT = pathlib.Path(__file__).resolve().parents[2] / "compute" / "amd" / "kernels" / "prebuilt"
BINS = 64  # compute/amd/kernels/private_array.cl BINS
SIZES = [1, 31, 257, 1000]
WAVE = 32


def reference(values: np.ndarray) -> np.ndarray:
    """private_array.cl's result for each input, in numpy."""
    out = np.empty(len(values), dtype=np.uint32)
    for index, value in enumerate(values.astype(np.uint64)):
        steps = BINS - int(value % 8)
        stride = int(value % 5 + 1)
        walk = (int(value) + np.arange(steps, dtype=np.uint64) * stride) % BINS
        counts = np.bincount(walk.astype(np.int64), minlength=BINS)
        out[index] = counts[int(value % BINS)] * 1000 + counts[int(value * 7 % BINS)]
    return out


@pytest.fixture(scope="module")
def dev():
    from compute import device as compute_device
    from tools import mock_machines
    compute_device.register_mock_factory(mock_machines.navi31)
    device = Device("mock:0", timeout_s=10)
    yield device
    device.close()


def mec(dev: Device):
    return dev.backend.machine.machine.device(GPU_BDF).mec


def run(dev, values: np.ndarray, local: int):
    n = len(values)
    source = dev.allocate(4 * n)
    source.copyin(values.tobytes())
    out = dev.allocate(4 * n)
    program = dev.load(PREBUILT / "private_array.co", "private_array")
    program(source, out, n, global_size=n, local_size=local, wait=True)
    return program, np.frombuffer(out.copyout(4 * n), dtype=np.uint32)


@pytest.mark.parametrize("local", [64, 256])
@pytest.mark.parametrize("n", SIZES)
def test_private_array_matches_numpy(dev, n, local):
    values = np.random.default_rng(n + local).integers(0, 1 << 20, n, dtype=np.uint32)
    _, got = run(dev, values, local)
    np.testing.assert_array_equal(got, reference(values))


def test_launch_programs_scratch_registers(dev):
    values = np.arange(100, dtype=np.uint32)
    program, _ = run(dev, values, 64)
    impl = program.impl
    size = impl.program.scratch_size
    assert size > 0
    # LLVM: WAVESIZE counts 256 bytes on gfx11; one wave holds the fixed size for each of its lanes
    assert impl.scratch_wave_bytes == -(-size * WAVE // 256) * 256
    dispatch = mec(dev).dispatches[-1]
    assert dispatch.scratch_base << 8 == impl.scratch.gpu_address
    waves = dispatch.tmpring_size & 0xFFF
    wavesize = dispatch.tmpring_size >> 12
    assert wavesize * 256 == impl.scratch_wave_bytes
    assert waves * impl.scratch_wave_bytes <= impl.scratch.size
    assert waves >= 2  # the two waves of a 64-item work-group


def test_scratch_is_interleaved_per_lane(dev):
    # one work-group of one wave: the last work-group's counts stay in its slot 0
    values = np.arange(WAVE, dtype=np.uint32) * 3 + 5
    program, got = run(dev, values, WAVE)
    np.testing.assert_array_equal(got, reference(values))
    impl = program.impl
    area = np.frombuffer(impl.scratch.copyout(impl.scratch_wave_bytes), dtype=np.uint32)
    # the kernel keeps counts[k] at private address 4 + 4 k; lane L's dword D lies at D * 32 + L
    for lane in (0, 7, 31):
        value = int(values[lane])
        steps = BINS - value % 8
        walk = (value + np.arange(steps) * (value % 5 + 1)) % BINS
        counts = np.bincount(walk, minlength=BINS)
        dwords = area[(1 + np.arange(BINS)) * WAVE + lane]
        np.testing.assert_array_equal(dwords, counts)


def test_mec_refuses_scratch_slots_smaller_than_a_work_group(monkeypatch):
    from compute.amd import launch
    real = launch.AMDProgram.scratch_for

    def one_slot(self, groups, local_size):
        base, tmpring = real(self, groups, local_size)
        return base, (tmpring & ~0xFFF) | 1  # WAVES = 1 for a work-group of two waves

    monkeypatch.setattr(launch.AMDProgram, "scratch_for", one_slot)
    device = Device("mock:0", timeout_s=1)
    try:
        with pytest.raises(DeviceTimeout):
            run(device, np.arange(64, dtype=np.uint32), 64)
        errors = [str(q.error) for q in mec(device).queues.values() if q.error]
        assert any("TMPRING_SIZE.WAVES 1 scratch slots" in error for error in errors), errors
        device.reset_compute_queue()
    finally:
        device.close()
