"""Mock machines with the simulated NVIDIA kernel driver (mockgpu.nv), for the RM and UVM tests."""
from __future__ import annotations

import pytest

from tools.mock_machines import nvidia


@pytest.fixture
def nv_machine():
    """A factory: nv_machine(gpu="h100", version=None, proc_version=True) -> MockNVIDIA, closed after
    the test."""
    made = []

    def make(gpu: str = "h100", version: str | None = None, proc_version: bool = True):
        machine = nvidia(gpu, version, proc_version)
        made.append(machine)
        return machine

    yield make
    for machine in made:
        machine.close()


@pytest.fixture
def h100(nv_machine):
    """The default mock: one H100 (GH100) behind driver 535.261.03."""
    return nv_machine()
