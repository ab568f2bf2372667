"""Firmware for AM bring-ups on the mock: the synthetic Navi31 set in a temporary firmware root.

Every AMDevice whose blocks load firmware (PSP) finds it through $GPUHAL_FIRMWARE_DIR, searched
before the system and cache directories; a root the environment already names stays behind it.
"""
from __future__ import annotations

import os

import pytest

from drivers.am.firmware import FIRMWARE_DIR_ENV
from mockgpu.amd.firmware_images import write_navi31_set


@pytest.fixture(scope="session", autouse=True)
def synthetic_firmware_root(tmp_path_factory):
    """The synthetic set's root, first on the firmware search path for the whole session."""
    root = write_navi31_set(tmp_path_factory.mktemp("firmware"))
    before = os.environ.get(FIRMWARE_DIR_ENV)
    os.environ[FIRMWARE_DIR_ENV] = os.pathsep.join(item for item in (str(root), before) if item)
    yield root
    if before is None:
        os.environ.pop(FIRMWARE_DIR_ENV, None)
    else:
        os.environ[FIRMWARE_DIR_ENV] = before
