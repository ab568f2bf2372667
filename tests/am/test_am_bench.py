"""The `boot` benchmark: its JSON shape, positive figures, and how time is told apart (driver/model)."""
from __future__ import annotations

import cProfile
import json

import pytest

from drivers.am import bench
from hal.errors import InvalidArgument
from tools import bench as bench_tool

COLD_FIGURES = ("cold_total_s", "cold_machine_s", "cold_bringup_s", "cold_driver_s", "cold_model_s",
                "cold_profiled_driver_s", "cold_profiled_model_s")
WARM_FIGURES = ("warm_bringup_s", "warm_driver_s", "warm_model_s")
TARGETS = {"cold_driver_target_s": 0.5, "cold_total_target_s": 5.0}


def test_json_lists_positive_figures_beside_the_targets(capsys):
    assert bench_tool.main(["--json", "boot"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [result["name"] for result in results] == ["boot"]
    figures = results[0]["figures"]
    assert results[0]["seconds"] > 0
    for name in COLD_FIGURES:
        assert isinstance(figures[name], (int, float)) and figures[name] > 0, name
    for name, value in TARGETS.items():
        assert figures[name] == value
    # the figures are rounded to 0.1 ms each, so the parts may exceed the whole by that much twice
    rounding_s = 2e-4
    assert figures["cold_driver_s"] + figures["cold_model_s"] <= figures["cold_bringup_s"] + rounding_s
    assert figures["cold_total_s"] >= figures["cold_bringup_s"]
    assert figures["warm_available"] in (0, 1)
    if figures["warm_available"]:
        for name in WARM_FIGURES:
            assert figures[name] > 0, name
        assert figures["warm_driver_target_s"] == 0.05


def test_text_output_prints_each_figure(capsys):
    assert bench_tool.main(["boot"]) == 0
    out = capsys.readouterr().out
    assert "cold_driver_s" in out and "cold_driver_target_s" in out and "warm_available" in out


def test_needs_a_mock_gpu_from_its_caller():
    with pytest.raises(InvalidArgument, match="tools.bench boot"):
        bench.run()


def _functions_in(directory: str, source: str) -> dict:
    """Functions whose code claims to live in the project's `directory` (driver or model side)."""
    namespace: dict = {}
    filename = str(bench._PROJECT_ROOT / directory / "_bench_probe.py")
    exec(compile(source, filename, "exec"), namespace)
    return namespace


def test_time_in_library_code_goes_to_the_side_that_called_it():
    model = _functions_in("mockgpu", "def model_work(items):\n    return sorted(items)\n")
    driver = _functions_in("drivers", "def driver_work(n):\n"
                                      "    total = 0\n"
                                      "    for i in range(n):\n"
                                      "        total += i\n"
                                      "    return total\n")
    items = [(i * 7919) % 100003 for i in range(200_000)]
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(3):
        model["model_work"](items)  # the time is sorted()'s: a builtin, called by the model
    driver["driver_work"](20_000)
    profile.disable()
    sides = bench.attribute(profile)
    assert sides[bench.MODEL] > 0 and sides[bench.DRIVER] > 0
    # sorted() is not project code; counted by file alone it would be "other"
    assert sides[bench.OTHER] < 0.05 * (sides[bench.MODEL] + sides[bench.DRIVER])
    assert sides[bench.MODEL] > sides[bench.DRIVER]
