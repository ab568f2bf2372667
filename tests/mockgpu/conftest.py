"""Fixtures for the mock machine's own tests: a default Machine and an edu device opened via VFIO."""
from __future__ import annotations

import pytest
from mockgpu_helpers import VFIODevice, open_vfio

from mockgpu import EDU_BDF, Machine


@pytest.fixture
def machine() -> Machine:
    return Machine.default()


@pytest.fixture
def vfio_edu(machine: Machine) -> VFIODevice:
    return open_vfio(machine, EDU_BDF)
