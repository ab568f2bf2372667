"""compute.profile on mock:0: GPUHAL_PROFILE and Device.profile write a Chrome trace with one
complete event per kernel and per copy on per-queue GPU tracks, with GPU timestamps, plus the
driver's Python spans; graph replays report their kernels too."""
from __future__ import annotations

import json
import pathlib

import numpy as np

from compute.device import Device
from compute.graph import Graph
from compute.profile import DRIVER_PID, GPU_PID

PREBUILT = pathlib.Path(__file__).resolve().parents[2] / "compute" / "amd" / "kernels" / "prebuilt"
N = 256


def _load(path) -> tuple[list[dict], dict[int, str]]:
    trace = json.loads(pathlib.Path(path).read_text())
    events = trace["traceEvents"]
    for event in events:  # the fields every Chrome trace event carries
        assert {"name", "ph", "pid"} <= event.keys()
        if event["ph"] == "X":
            assert isinstance(event["ts"], (int, float)) and event["dur"] >= 0
    tracks = {e["tid"]: e["args"]["name"] for e in events
              if e["ph"] == "M" and e["name"] == "thread_name" and e["pid"] == GPU_PID}
    return [e for e in events if e["ph"] == "X"], tracks


def test_environment_variable_traces_every_kernel_and_copy(tmp_path, monkeypatch):
    path = tmp_path / "trace.json"
    monkeypatch.setenv("GPUHAL_PROFILE", str(path))
    with Device("mock:0", timeout_s=2.0) as dev:
        add = dev.load(PREBUILT / "vector_add.co", "vector_add_f32")
        a, c = dev.allocate(4 * N), dev.allocate(4 * N)
        a.copyin(np.arange(N, dtype=np.float32))
        for _ in range(3):
            add(a, a, c, N, global_size=N, local_size=64)
        c.copy_from(a)
    events, tracks = _load(path)
    kernels = [e for e in events if e["cat"] == "kernel"]
    copies = [e for e in events if e["cat"] == "copy"]
    assert [e["name"] for e in kernels] == ["vector_add_f32"] * 3
    # the program upload, the staged copy-in and the VRAM copy: one event per copy command
    assert len(copies) >= 2
    assert {tracks[e["tid"]] for e in kernels} == {"compute queue"}
    assert {tracks[e["tid"]] for e in copies} == {"copy queue"}
    for event in kernels + copies:
        assert event["pid"] == GPU_PID
        begin, end = event["args"]["gpu_begin_ticks"], event["args"]["gpu_end_ticks"]
        assert 0 < begin <= end  # the GPU wrote both timestamps
    ordered = sorted(e["args"]["gpu_begin_ticks"] for e in kernels)
    assert ordered == [e["args"]["gpu_begin_ticks"] for e in kernels]
    spans = [e["name"] for e in events if e["pid"] == DRIVER_PID]
    assert spans.count("launch vector_add_f32") == 3 and "synchronize" in spans


def test_profile_api_and_graph_replays(tmp_path):
    with Device("mock:0", timeout_s=2.0) as dev:
        add = dev.load(PREBUILT / "vector_add.co", "vector_add_f32")
        a, c = dev.allocate(4 * N), dev.allocate(4 * N)
        with dev.profile(tmp_path / "graph.json") as profiler:
            graph = Graph(dev)
            x = graph.input("x")
            graph.launch(add, x, x, c, N, global_size=N, local_size=64)
            graph.launch(add, c, c, c, N, global_size=N, local_size=64)
            graph.replay(x=a)
            graph.replay()
        assert dev.profiler is None and not profiler.pending
        add(a, a, c, N, global_size=N, local_size=64, wait=True)  # after stop: not traced
    events, tracks = _load(tmp_path / "graph.json")
    kernels = [e for e in events if e["cat"] == "kernel"]
    assert len(kernels) == 4  # two kernels, two replays
    assert len({e["args"]["timeline"] for e in kernels}) == 2
    assert all(0 < e["args"]["gpu_begin_ticks"] <= e["args"]["gpu_end_ticks"] for e in kernels)
    assert [e["name"] for e in events if e["pid"] == DRIVER_PID].count("graph replay") == 2
