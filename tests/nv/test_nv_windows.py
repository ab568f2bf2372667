"""The shared and local memory windows a launch needs: both set on the channel before any launch, and
on Hopper the shared window 4 GiB aligned (Mesa's NVK, nvk_cmd_dispatch.c); the mock GPU refuses a
launch otherwise, and the driver's windows pass on every generation."""
from __future__ import annotations

import numpy as np
import pytest

from compute import device as compute_device
from compute.device import Device
from compute.nv import compiler
from compute.nv import device as nv_compute_device
from drivers.nv.gpfifo import ChannelError
from tools import mock_machines


@pytest.fixture(autouse=True)
def _nv_factory():
    compute_device.register_mock_factory(mock_machines.nvidia_compute, kind="nv")
    yield
    compute_device.register_mock_factory(None, kind="nv")


def _vector_add(dev: Device) -> np.ndarray:
    program = dev.load(compiler.PREBUILT_DIR / "vector_add.fatbin", "vector_add_f32")
    n = 256
    buffers = [dev.allocate(4 * n) for _ in range(3)]
    buffers[0].copyin(np.ones(n, dtype=np.float32))
    buffers[1].copyin(np.full(n, 2, dtype=np.float32))
    program(*buffers, n, global_size=n, local_size=128, wait=True)
    return np.frombuffer(buffers[2].copyout(4 * n), dtype=np.float32)


def _refused(device: str, why: str) -> None:
    """A launch on `device` is a GR exception whose recorded reason holds `why`."""
    dev = Device(device)
    try:
        with pytest.raises(ChannelError, match="ROBUST_CHANNEL_GR_EXCEPTION"):
            _vector_add(dev)
        assert why in dev.backend.machine.driver.gpu_model.errors[-1][1]
    finally:
        dev.closed = True  # a faulted device is closed without the strict teardown
        dev.backend.close()


@pytest.mark.parametrize("gpu", ["h100", "a100", "rtx4090"])
def test_the_drivers_windows_run_on_every_generation(gpu):
    assert nv_compute_device.WINDOWS[0] % (1 << 32) == 0  # Hopper's rule holds for every chip
    with Device(f"mock:nv:{gpu}") as dev:
        np.testing.assert_array_equal(_vector_add(dev), 3.0)


def test_hopper_refuses_a_shared_window_off_4_gib(monkeypatch):
    # the pre-Hopper NVK pair (shared at 0xfe000000): fine on Ampere, refused on Hopper
    monkeypatch.setattr(nv_compute_device, "WINDOWS", (0xFE000000, 0xFF000000))
    with Device("mock:nv:a100") as dev:
        np.testing.assert_array_equal(_vector_add(dev), 3.0)
    _refused("mock:nv:h100", "4 GiB aligned")


def test_a_launch_without_windows_is_refused(monkeypatch):
    from compute.nv import queues as nv_queues

    real = nv_queues.NVComputeQueue.initial_words

    def without_windows(self):
        words = real(self)
        return words[:2]  # SET_OBJECT only: its header and the class
    monkeypatch.setattr(nv_queues.NVComputeQueue, "initial_words", without_windows)
    _refused("mock:nv:h100", "memory window")
