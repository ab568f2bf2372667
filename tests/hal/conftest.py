"""Fixtures for hal tests: a fresh mock machine per test, and helpers to drive the edu device."""
from __future__ import annotations

import pytest

from mockgpu import Machine
from mockgpu.edu import (EDU_DMA_CMD, EDU_DMA_CMD_IRQ, EDU_DMA_CMD_START,
                         EDU_DMA_CMD_TO_HOST, EDU_DMA_COUNT, EDU_DMA_DST, EDU_DMA_SRC, EDU_STATUS)


@pytest.fixture
def machine(tmp_path):
    return Machine.default(lock_dir=str(tmp_path))


def _edu_dma(bar, src: int, dst: int, count: int, to_host: bool, irq: bool = False) -> int:
    """Program one edu DMA through BAR0 and return EDU_STATUS afterwards."""
    bar.write64(EDU_DMA_SRC, src)
    bar.write64(EDU_DMA_DST, dst)
    bar.write64(EDU_DMA_COUNT, count)
    command = EDU_DMA_CMD_START
    if to_host:
        command |= EDU_DMA_CMD_TO_HOST
    if irq:
        command |= EDU_DMA_CMD_IRQ
    bar.write64(EDU_DMA_CMD, command)
    return bar.read32(EDU_STATUS)


@pytest.fixture
def edu_dma():
    """The helper that runs one edu DMA: edu_dma(bar, src, dst, count, to_host, irq=False) -> status."""
    return _edu_dma
