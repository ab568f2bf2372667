"""The `trace` benchmark (`python -m tools.bench trace`): what recording a hardware trace costs.

Each round boots a fresh mock Navi31 cold through drivers.am and tears it down, once plain and once
recorded (hal.trace, as GPUHAL_TRACE does), and replays the recorded trace (tools.replay's
`am.boot` scenario). Figures: the median wall time of each, the recording's overhead as a ratio,
the trace's size and record count, and the records written per second of recorded boot.
Figures only; nothing is asserted.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time

import hal
from drivers.am.device import AMConfig, AMDevice
from hal import trace as hal_trace
from hal.trace_format import TraceReader

NAME = "trace"
DEFAULT_ROUNDS = 3


def _boot(trace_path: str | None) -> float:
    from tools import mock_machines

    machine = mock_machines.navi31()
    try:
        start = time.perf_counter()
        pci = hal.open(machine.device, os=machine.os, unbind=True, trace=trace_path)
        try:
            device = AMDevice(pci, config=AMConfig(firmware_dir=machine.firmware_dir))
            device.fini()
        finally:
            pci.close()
        return time.perf_counter() - start
    finally:
        machine.close()


def run(rounds: int = DEFAULT_ROUNDS, **_) -> dict[str, float]:
    from tools import replay

    plain: list[float] = []
    recorded: list[float] = []
    replayed: list[float] = []
    with tempfile.TemporaryDirectory(prefix="gpuhal-trace-bench-") as scratch:
        path = os.path.join(scratch, "boot.trace")
        for _ in range(rounds):
            plain.append(_boot(None))
            with hal_trace.record(path, "am.boot", {"firmware": replay.SYNTHETIC_FIRMWARE}):
                recorded.append(_boot(None))
            start = time.perf_counter()
            result = replay.replay(path)
            replayed.append(time.perf_counter() - start)
        size = os.path.getsize(path)
        records = sum(1 for _ in TraceReader(path))
    plain_s = statistics.median(plain)
    recorded_s = statistics.median(recorded)
    return {
        "boot_plain_s": round(plain_s, 4),
        "boot_recorded_s": round(recorded_s, 4),
        "recording_overhead_ratio": round(recorded_s / plain_s, 3),
        "replay_s": round(statistics.median(replayed), 4),
        "replay_ok": float(result.ok),
        "trace_bytes": float(size),
        "trace_records": float(records),
        "records_per_s_recorded": round(records / recorded_s, 1),
    }
