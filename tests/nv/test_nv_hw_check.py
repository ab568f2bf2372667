"""tools.nv_hw_check on a real NVIDIA GPU (marked hardware; skipped without /dev/nvidiactl): the
selftest through the RM path passes, and CUDA's own launch and copy figures were measured beside it.
Without a driver the tool says so and exits 2 (that part runs everywhere)."""
from __future__ import annotations

import os

import pytest

from tools import nv_hw_check


def test_without_a_driver_the_tool_says_so(monkeypatch, capsys) -> None:
    monkeypatch.setattr(nv_hw_check, "CTL_PATH", "/nonexistent/nvidiactl")
    assert nv_hw_check.main([]) == 2
    assert "no NVIDIA kernel driver" in capsys.readouterr().err


@pytest.mark.hardware
@pytest.mark.skipif(not os.path.exists("/dev/nvidiactl"), reason="no NVIDIA kernel driver (/dev/nvidiactl)")
def test_selftest_and_cuda_figures_on_a_real_gpu() -> None:
    result = nv_hw_check.check("nv:0", timeout_s=10.0)
    failed = [check for check in result["selftest"]["checks"] if not check["ok"]]
    assert not failed, failed
    assert "error" not in result["cuda"], result["cuda"]
    print(result["gpuhal"], result["cuda"], result["ratio_gpuhal_to_cuda"])
