"""tools.nv_hw_check on a real NVIDIA GPU (marked hardware; skipped without /dev/nvidiactl): the
selftest through the RM path passes, and CUDA's own launch and copy figures were measured beside it.
Without a driver the tool says so and exits 2 (that part runs everywhere)."""
from __future__ import annotations

import logging
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


def test_environment_reads_the_version_from_the_rm_without_proc(nv_machine) -> None:
    machine = nv_machine("h200", version="570.211.01", proc_version=False)
    facts = nv_hw_check.environment(machine.os)
    assert facts["rm_version"] == "570.211.01" and facts["branch_supported"] is True
    assert facts["proc_version"] is None
    assert "570" in facts["supported_branches"] and facts["numpy"]
    assert machine.os.open_fds == []


def test_environment_names_an_unsupported_branch(nv_machine) -> None:
    facts = nv_hw_check.environment(nv_machine(version="999.1").os)
    versions = (facts["proc_version"], facts["rm_version"], facts["branch_supported"])
    assert versions == ("999.1", "999.1", False)


def test_log_records_rm_escapes_with_their_status(nv_machine, tmp_path) -> None:
    from drivers.nv.rm import RM

    path = tmp_path / "nv.log"
    nv_hw_check.log_to(str(path))
    try:
        rm = RM.open(nv_machine().os)
        rm.close()
    finally:
        for name in nv_hw_check.LOGGERS:
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
                handler.close()
            logger.setLevel(logging.NOTSET)
    text = path.read_text()
    assert "root client" in text and "NV_OK" in text
