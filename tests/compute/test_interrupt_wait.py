"""compute.Device on a mock GPU opened through VFIO: the IH has MSI-X, the compute queue's signals
raise the CP's end-of-pipe interrupt, and a signal wait sleeps on that interrupt (woken by it, not
by a sleep slice running out)."""
from __future__ import annotations

import pytest

from compute import device as compute_device
from compute.device import Device
from hal.errors import DeviceTimeout
from mockgpu import GPU_BDF
from tools import mock_machines

GATE_DELAY_S = 0.05  # the host opens the gate after the waiter has gone to sleep


@pytest.fixture
def dev():
    compute_device.register_mock_factory(mock_machines.navi31_vfio)
    device = Device("mock:0", timeout_s=5.0)
    yield device
    device.close()


class IrqSpy:
    """Counts the backend's MSI-X waits (woken or timed out) and its plain sleeps."""

    def __init__(self, monkeypatch, backend) -> None:
        self.woken = 0
        self.timed_out = 0
        self.sleeps = 0
        wait_irq = backend.pci.wait_irq
        sleep = backend.os.sleep

        def counting_wait_irq(vector=0, timeout_s=1.0):
            try:
                count = wait_irq(vector, timeout_s=timeout_s)
            except DeviceTimeout:
                self.timed_out += 1
                raise
            self.woken += 1
            return count

        def counting_sleep(seconds):
            self.sleeps += 1
            sleep(seconds)

        monkeypatch.setattr(backend.pci, "wait_irq", counting_wait_irq)
        monkeypatch.setattr(backend.os, "sleep", counting_sleep)


def test_the_vfio_mock_delivers_msix_to_the_ih(dev):
    assert dev.backend.pci.bdf == GPU_BDF
    assert dev.backend.ih.msix
    assert dev.backend.ih.enabled


def test_a_compute_signal_wait_is_woken_by_the_end_of_pipe_interrupt(dev, monkeypatch):
    backend = dev.backend
    gpu = backend.machine.machine.device(GPU_BDF)
    gate = dev.new_signal("gate")
    done = dev.new_signal("done")
    # the compute queue stalls on the gate, then signals `done` at end of pipe
    dev.compute_queue.wait(gate, 1).signal(done, 1).submit()
    assert done.value == 0
    interrupts = gpu.ih.interrupts
    eops = backend.gc.eop_interrupts
    spy = IrqSpy(monkeypatch, backend)

    def open_gate():
        gate.value = 1

    backend.machine.machine.schedule(GATE_DELAY_S, open_gate)
    done.wait(1)
    assert done.value == 1
    assert gpu.ih.interrupts > interrupts  # the IH sent MSI-X for the RELEASE_MEM's EOP entry
    assert backend.gc.eop_interrupts > eops  # and the driver's EOP handler saw this queue's entry
    assert spy.woken >= 1  # a wait on vector 0 returned because the vector fired
    assert spy.sleeps == 0  # never fell back to sleep-polling
