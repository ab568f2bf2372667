"""Signals start 16-byte aligned: an NVIDIA host semaphore release with a timestamp writes 16 bytes
(dev_pbdma.ref.txt), so a signal that is only 8-byte aligned is refused when it is made."""
from __future__ import annotations

import pytest

from compute.signal import SIGNAL_ALIGNMENT, Signal
from hal.errors import InvalidArgument
from hal.region import MemoryRegion


def test_a_signal_must_start_16_byte_aligned():
    region = MemoryRegion(bytearray(64))
    Signal(None, "ok", region, 16, 0x1000 + 16)
    with pytest.raises(InvalidArgument, match=f"{SIGNAL_ALIGNMENT}-byte aligned"):
        Signal(None, "half", region, 8, 0x1000 + 8)
