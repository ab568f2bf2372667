"""The compute tests open "mock:0" through the mock factory tools.mock_machines provides."""
from __future__ import annotations

import pytest

from compute import device
from tools import mock_machines


@pytest.fixture(autouse=True)
def mock_factory():
    device.register_mock_factory(mock_machines.navi31)
    yield
    device.register_mock_factory(None)
