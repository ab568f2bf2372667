"""`python -m tools.fuzz`: a short budget prints the JSON fields and exits 0; a run that finds a bug
exits 1 and writes a reproducer; --faults runs tools.fault_matrix's cases, or says it is missing."""
from __future__ import annotations

import json
import sys
import types

import pytest

from compute import buffer
from tools import fuzz

ARGS = ["--minutes", "0", "--seed", "3", "--json", "--targets", "msgpack,discovery"]


@pytest.fixture(autouse=True)
def small_rounds(monkeypatch):
    monkeypatch.setattr(fuzz, "STATE_EXAMPLES", 1)
    monkeypatch.setattr(fuzz, "STATE_STEPS", 5)
    monkeypatch.setattr(fuzz, "INPUT_EXAMPLES", 20)


def run_main(capsys, *extra) -> tuple[int, dict]:
    code = fuzz.main([*ARGS, *extra])
    return code, json.loads(capsys.readouterr().out)


def test_a_short_run_prints_the_json_fields_and_exits_0(capsys, tmp_path):
    code, report = run_main(capsys, "--out", str(tmp_path / "out"))
    assert code == 0, report
    assert report["seed"] == 3 and report["minutes"] == 0 and report["ok"] is True
    assert report["rounds"] == 1 and report["failures"] == []
    assert report["targets"] == {"msgpack": 20, "discovery": 20}
    assert report["iterations"] == 41 and report["steps"] >= 1
    assert {"faults_injected", "notes", "out"} <= set(report)


def test_a_failing_run_exits_1_and_writes_a_reproducer(capsys, tmp_path, monkeypatch):
    original = buffer.StagingPool.copy_in

    def corrupted(self, gpu_address, data):
        data = bytearray(data)
        if len(data) > 100:
            data[100] ^= 1
        return original(self, gpu_address, memoryview(data))

    monkeypatch.setattr(buffer.StagingPool, "copy_in", corrupted)
    monkeypatch.setattr(fuzz, "STATE_EXAMPLES", 6)
    monkeypatch.setattr(fuzz, "STATE_STEPS", 8)
    code, report = run_main(capsys, "--out", str(tmp_path), "--seed", "1", "--shrink-seconds", "2",
                            "--no-database")
    assert code == 1 and report["ok"] is False
    failure = report["failures"][0]
    assert failure["kind"] == "state" and "ModelMismatch" in failure["error"]
    script = open(failure["reproducer"]).read()
    assert "from tools.fuzz_model import DriverStateMachine" in script and "state.teardown()" in script


def test_faults_run_the_fault_matrix_cases(capsys, tmp_path, monkeypatch):
    calls = []

    class Outcome:
        def __init__(self, passed):
            self.passed = passed

        def to_json(self):
            return {"passed": self.passed}

    def run_case(fault, operation, seed, timeout_s):
        calls.append((fault, operation, seed))
        return Outcome(operation != "copy")

    matrix = types.SimpleNamespace(FAULTS=("surprise_removal", "hang"), OPERATIONS=("launch", "copy"),
                                   run_case=run_case)
    monkeypatch.setitem(sys.modules, "tools.fault_matrix", matrix)
    monkeypatch.setattr(fuzz, "STATE_EXAMPLES", 0)
    code, report = run_main(capsys, "--out", str(tmp_path), "--faults", "hang")
    assert calls == [("hang", "launch", 3), ("hang", "copy", 3)]
    assert code == 1 and report["faults_injected"] == 2
    assert [f["target"] for f in report["failures"]] == ["hang/copy"]
    assert "fault_matrix.run_case('hang', 'copy', 3" in open(report["failures"][0]["reproducer"]).read()


def test_faults_without_the_fault_matrix_say_so(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tools.fault_matrix", None)
    monkeypatch.setattr(fuzz, "STATE_EXAMPLES", 0)
    code, report = run_main(capsys, "--out", str(tmp_path), "--faults", "all")
    assert code == 2 and "tools.fault_matrix" in report["error"]
