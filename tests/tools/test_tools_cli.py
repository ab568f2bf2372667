"""The command-line tools: lsgpu's table and JSON over the mock machine, bench's CLI, and the README's
quick-start test command being the one .ci/run runs."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from mockgpu import EDU_BDF, GPU_AUDIO_BDF, GPU_BDF, Machine
from tools import bench, lsgpu

REPOSITORY = pathlib.Path(__file__).resolve().parents[2]


def test_lsgpu_json_lists_the_mock_gpu(capsys):
    assert lsgpu.main(["--mock", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["bdf"] for row in rows] == [GPU_BDF, "1-2"]  # the second is behind a USB bridge
    gpu = rows[0]
    assert (gpu["vendor_id"], gpu["device_id"], gpu["vendor"]) == (0x1002, 0x744C, "AMD")
    assert gpu["class_code"] >> 16 == 0x03
    assert gpu["driver"] == "amdgpu"
    assert set(gpu["backends"]) == {"pci", "vfio"}
    assert gpu["path"][0] == "0000:00:02.0" and gpu["path"][-1] == "0000:03:00.0"
    for key in ("device", "vendor_id", "device_id", "bdf", "driver", "backends"):
        assert key in gpu


def test_lsgpu_all_includes_non_display_functions(capsys):
    assert lsgpu.main(["--mock", "--json", "--all"]) == 0
    bdfs = {row["bdf"] for row in json.loads(capsys.readouterr().out)}
    assert {EDU_BDF, GPU_BDF} <= bdfs


def test_lsgpu_table_names_each_column(capsys):
    assert lsgpu.main(["--mock"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header == ["DEVICE", "VENDOR:DEVICE", "CLASS", "DRIVER", "PATH"]
    assert "1002:744c (AMD)" in out and "amdgpu" in out
    backend_lines = [line.strip() for line in out.splitlines()
                     if line.startswith("    ") and not line.strip().startswith("try:")]
    assert [line.split(":")[0] for line in backend_lines] == ["vfio", "pci", "usb"]


def test_lsgpu_says_when_no_gpu_is_found(capsys, monkeypatch):
    monkeypatch.setattr(lsgpu, "_mock_os", lambda: Machine().os)
    assert lsgpu.main(["--mock"]) == 0
    out = capsys.readouterr().out
    assert "No PCI GPUs found in the mock machine. Try --all for every PCI function." in out
    assert "--mock" not in out


def test_lsgpu_all_with_nothing_found_does_not_suggest_all(capsys, monkeypatch):
    monkeypatch.setattr(lsgpu, "_mock_os", lambda: Machine().os)
    assert lsgpu.main(["--mock", "--all"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == "No PCI functions found in the mock machine."


def test_lsgpu_hints_name_the_bind_tool(capsys):
    assert lsgpu.main(["--mock"]) == 0
    out = capsys.readouterr().out
    assert f"try: python -m tools.bind {GPU_BDF} --vfio" in out
    assert GPU_AUDIO_BDF in out.split("tools.bind", 1)[1]
    assert lsgpu.main(["--mock", "--json"]) == 0
    gpu = json.loads(capsys.readouterr().out)[0]
    assert gpu["vfio_moves"] == [GPU_BDF, GPU_AUDIO_BDF]
    assert gpu["hints"][0].startswith(f"python -m tools.bind {GPU_BDF} --vfio")


def test_lsgpu_verdict_matches_the_kernel_for_a_member_on_pci_stub(capsys, monkeypatch):
    machine = Machine.default()
    machine.os.write_text(f"/sys/bus/pci/devices/{GPU_AUDIO_BDF}/driver_override", "pci-stub")
    machine.os.write_text("/sys/bus/pci/drivers/snd_hda_intel/unbind", GPU_AUDIO_BDF)
    machine.os.write_text("/sys/bus/pci/drivers_probe", GPU_AUDIO_BDF)
    monkeypatch.setattr(lsgpu, "_mock_os", lambda: machine.os)
    assert lsgpu.main(["--mock", "--json"]) == 0
    gpu = json.loads(capsys.readouterr().out)[0]
    assert "IOMMU group" not in gpu["backends"]["vfio"]
    assert gpu["vfio_moves"] == [GPU_BDF]


def test_lsgpu_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "tools.lsgpu", "--mock", "--json"], cwd=REPOSITORY,
                            capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["bdf"] == GPU_BDF


def test_bench_json_prints_figures(capsys):
    assert bench.main(["--json", "autogen"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [result["name"] for result in results] == ["autogen"]
    figures = results[0]["figures"]
    assert figures["register_lookups"] == 1000 and figures["total_s"] > 0


def test_bench_help_describes_the_json_it_prints(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert 'JSON list' in out and '"name"' in out and '"seconds"' in out and '"figures"' in out
    assert "one JSON object per benchmark" not in out


def test_bench_rejects_an_unknown_name(capsys):
    with pytest.raises(SystemExit):
        bench.main(["nosuchbench"])
    assert "known: hal, autogen" in capsys.readouterr().err


def test_ci_runs_the_readme_test_command():
    readme = (REPOSITORY / "README.md").read_text()
    commands = [line for line in readme.splitlines() if "pytest" in line and line.startswith("apt-get")]
    assert len(commands) == 1, "the README's quick start has exactly one test command"
    steps = REPOSITORY / ".ci" / "readme-steps"
    printed = subprocess.run([str(steps), "--print"], capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == commands[0] + "\n"
    ci_lines = (REPOSITORY / ".ci" / "run").read_text().splitlines()
    assert ".ci/readme-steps README.md" in ci_lines
    assert not any("pytest" in line and "&&" in line for line in ci_lines), "no second copy to drift"


def test_ci_fails_at_the_first_failing_readme_step(tmp_path):
    # a README whose test command fails in its second step (as apt-get or pip would on a bad day)
    ran = tmp_path / "ran"
    command = f"echo one >> {ran} && (exit 7) && echo three >> {ran} && echo pytest >> {ran}"
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Quick start\n\n```\necho main job\n```\n\n```\n{command}\n```\n\n"
                      "## Other\n\n```\necho not a step\n```\n")
    steps = REPOSITORY / ".ci" / "readme-steps"
    result = subprocess.run([str(steps), str(readme)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 7
    assert ran.read_text() == "one\n"  # nothing after the failing step ran
    assert "ci: FAILED: step 2/4 of the README's test command exited 7: (exit 7)" in result.stderr
