"""tools.selftest on the mock: the report and its JSON shape, the mock named as such, discovery
falling back to the mock with the reason, and a non-zero exit status when a check fails (a mock
whose copy engine drops copies, one whose copy engine is stalled)."""
from __future__ import annotations

import json
import time

from mockgpu import GPU_BDF
from mockgpu.amd import sdma
from tools import selftest

KERNEL_CHECKS = ["vector_add_f32", "vector_add_i32", "saxpy", "memset_u32", "copy_u32",
                 "reduce_sum_i32", "matmul_f32"]


def test_json_shape_and_every_check_ok_on_the_mock(capsys):
    assert selftest.main(["--mock", "--json", "--timeout", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["device"] == "mock:0"
    assert "mock" in report["note"]
    names = [check["name"] for check in report["checks"]]
    assert names[0] == "bring-up"
    for name in ["copy host->vram->host", "copy vram->vram", "signals across queues",
                 *KERNEL_CHECKS]:
        assert name in names
    for check in report["checks"]:
        assert set(check) >= {"name", "ok", "detail"}
        assert check["ok"] is True, check
        assert isinstance(check["detail"], str) and check["detail"]
    figures = report["figures"]
    for key in ["bring_up_s", "copy_in_MiB_s", "copy_out_MiB_s", "launch_latency_us"]:
        assert figures[key] > 0


def test_the_text_report_says_it_uses_the_mock(capsys):
    assert selftest.main(["--mock", "--timeout", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("device: mock:0 (the mock machine (--mock): a simulated Navi31")
    assert "pass  vector_add_f32" in out
    assert "bring-up:" in out and "all checks passed" in out


def test_without_a_usable_amd_gpu_discovery_falls_back_to_the_mock_saying_why(monkeypatch):
    class Info:
        bdf = "0000:01:00.0"
        device = "pci:0000:01:00.0"
        vendor_id = 0x1002
        backends = {"sysfs": "bound to amdgpu", "vfio": "no IOMMU group"}

    monkeypatch.setattr(selftest.hal, "list_devices", lambda: [Info()])
    device, note = selftest.choose_device(None, False)
    assert device == "mock:0"
    assert "0000:01:00.0: no backend can open it (sysfs: bound to amdgpu" in note
    Info.backends = {"sysfs": "ok", "vfio": "no IOMMU group"}
    assert selftest.choose_device(None, False)[0] == "pci:0000:01:00.0"
    assert selftest.choose_device("vfio:0000:02:00.0", False)[0] == "vfio:0000:02:00.0"


def test_a_copy_engine_that_drops_copies_fails_the_checks_and_the_exit_status(monkeypatch, capsys):
    def dropped(self, fetch, sub_op, vmid):
        fetch(sdma.COPY_LINEAR_DWORDS)  # consumed, never executed
        return sdma.COPY_LINEAR_DWORDS

    monkeypatch.setattr(sdma.SDMAModel, "_copy", dropped)
    assert selftest.main(["--mock", "--json", "--timeout", "0.3"]) == 1
    report = json.loads(capsys.readouterr().out)
    checks = {check["name"]: check for check in report["checks"]}
    assert report["ok"] is False
    assert checks["bring-up"]["ok"] is True
    assert checks["copy host->vram->host"]["ok"] is False
    assert "first difference at byte" in checks["copy host->vram->host"]["detail"]
    assert checks["vector_add_f32"]["ok"] is False


def test_a_stalled_copy_engine_is_a_bounded_failure(monkeypatch, capsys):
    real_device = selftest.compute_device.Device

    def stalling_device(name, **options):
        dev = real_device(name, **options)
        dev.backend.machine.machine.device(GPU_BDF).sdma.stalled = True  # stops after bring-up
        return dev

    monkeypatch.setattr(selftest.compute_device, "Device", stalling_device)
    assert selftest.main(["--mock", "--timeout", "0.2"]) == 1
    out = capsys.readouterr().out
    assert "pass  bring-up" in out
    assert "FAIL  copy host->vram->host  DeviceTimeout" in out
    assert "check(s) failed" in out


def test_a_step_past_the_progress_delay_says_so_and_a_raising_step_is_a_failure(monkeypatch,
                                                                                  capsys):
    monkeypatch.setattr(selftest, "PROGRESS_AFTER_S", 0.02)
    report = selftest.Report("mock:0")

    def slow() -> str:
        time.sleep(0.1)
        return "done"

    def broken() -> str:
        raise RuntimeError("interpreter: unsupported instruction")

    assert selftest._run_step(report, "slow", slow) is True
    assert selftest._run_step(report, "quick but broken", broken) is False
    err = capsys.readouterr().err
    assert "selftest: slow: still running" in err
    assert "quick but broken" not in err
    assert report.checks[1]["detail"] == "RuntimeError: interpreter: unsupported instruction"
    assert report.ok is False
