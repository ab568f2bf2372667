"""Kernels that go wrong on Device("mock:0"): one that never ends times out with a message naming the
queue, the value and the HQD state, and the device works again after the compute queue is reset; one
that touches an unmapped address raises a typed VM fault from the wait, naming the address."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

from compute.device import Device
from drivers.am.ih import VMFault
from hal.errors import DeviceTimeout
from mockgpu import GPU_BDF

PREBUILT = pathlib.Path(__file__).resolve().parents[2] / "compute" / "amd" / "kernels" / "prebuilt"
TIMEOUT_S = 0.3


@pytest.fixture
def dev():
    device = Device("mock:0", timeout_s=TIMEOUT_S)
    yield device
    device.close()


def mec(dev: Device):
    return dev.backend.machine.machine.device(GPU_BDF).mec


def vector_add(dev: Device, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n).astype(np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    a, b, c = (dev.allocate(4 * n) for _ in range(3))
    a.copyin(x)
    b.copyin(y)
    dev.load(PREBUILT / "vector_add.co", "vector_add_f32")(a, b, c, n, global_size=n, local_size=256,
                                                           wait=True)
    np.testing.assert_array_equal(np.frombuffer(c.copyout(), np.float32), x + y)


def test_a_kernel_that_never_ends_times_out_and_the_queue_reset_brings_the_device_back(dev):
    # a grid the interpreter cannot finish within its budget stays running, as an infinite loop does
    mec(dev).instruction_budget = 10
    n = 4096
    a, b, c = (dev.allocate(4 * n) for _ in range(3))
    program = dev.load(PREBUILT / "vector_add.co", "vector_add_f32")
    value = program(a, b, c, n, global_size=n, local_size=256)
    with pytest.raises(DeviceTimeout) as caught:
        dev.timeline.wait(value)
    message = str(caught.value)
    assert f"did not reach {value}" in message and "compute queue" in message
    assert "CP_HQD_ACTIVE 0x00000001" in message and "CP_HQD_PQ_RPTR" in message
    assert mec(dev).queues and any(q.hung for q in mec(dev).queues.values())
    mec(dev).instruction_budget = 10**9
    dev.reset_compute_queue()
    assert not any(q.hung for q in mec(dev).queues.values())
    assert dev.timeline.value >= value  # the lost work counts as retired: nothing waits for it
    vector_add(dev, 1000)
    dev.synchronize()


def test_a_kernel_that_touches_an_unmapped_address_raises_a_vm_fault_from_the_wait(dev):
    n = 300
    a = dev.allocate(4 * n)
    c = dev.allocate(4 * n)
    freed = dev.allocate(4 * n, host=True)
    bogus = freed.gpu_address + 4  # inside the GART window, its pages unmapped by free()
    freed.free()
    program = dev.load(PREBUILT / "vector_add.co", "vector_add_f32")
    value = program(a, bogus, c, n, global_size=n, local_size=256)
    with pytest.raises(VMFault) as caught:
        dev.timeline.wait(value)
    fault = caught.value
    assert fault.address == bogus & ~0xFFF
    assert f"{bogus & ~0xFFF:#014x}" in str(fault)
    dev.reset_compute_queue()
    vector_add(dev, 1000, seed=1)
