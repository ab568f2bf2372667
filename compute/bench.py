"""The `launch` and `copy` benchmarks (`python -m tools.bench launch copy`) of the compute layer.

`launch`: the driver's Python time per kernel launch, enqueue plus submit, with the GPU's execution
excluded: the caller's `pause(device, True)` holds the engine (on the mock, the MEC consumes
nothing) while a batch is launched and timed, then `pause(device, False)` lets it run and the batch
is waited for untimed. Figures: per single launch (`program(...)`) and per kernel of a replayed
graph of GRAPH_KERNELS launches whose input buffer changes at every replay (the patch writes are
part of the figure). Targets: under 20 us per single launch, under 2 us per kernel in a replayed
graph.

On an Adreno (`qcom_device_factory`, the mock Adreno 630 from tools.bench) `launch` adds
`qcom_prepare_us` (building one dispatch's CP stream) and `qcom_launch_waited_us` (one launch waited
for, the mock's execution included: its KGSL runs a submission at once and cannot be held).

`copy`: copy-in and copy-out of COPY_BYTES between host memory and VRAM through the staging
pipeline, wall time with the modelled copy engine included (on the mock its copies are Python too),
as MiB per second and microseconds per MiB, and how often the pipeline waited for a staging buffer.

The device comes from the caller (`device_factory()`, a compute.Device; `pause`): compute never
imports the mock, tools.bench builds both. Figures only; nothing is asserted. Each figure is the
best of ROUNDS rounds (the least disturbed by the rest of the machine).
"""
from __future__ import annotations

import pathlib
import time
from typing import Callable

from compute.graph import Graph

NAME = "launch"
PREBUILT = pathlib.Path(__file__).resolve().parent / "amd" / "kernels" / "prebuilt"
KERNEL = ("vector_add.co", "vector_add_f32")
# NVIDIA devices (nv:N, mock:nv) run the CUDA library's fatbinary of the same kernel
NV_PREBUILT = pathlib.Path(__file__).resolve().parent / "nv" / "kernels" / "prebuilt"
NV_KERNEL = ("vector_add.fatbin", "vector_add_f32")
# Adreno (qcom:0) runs the ir3 library's vector add (drivers/qcom/kernels, local size 64)
QCOM_KERNEL = "vector_add"
ELEMENTS = 64  # a one work-group launch: the figure is the driver's, not the kernel's
BATCH = 100  # launches timed while the engine is held
GRAPH_KERNELS = 100  # the graph of 100 launches
ROUNDS = 5
COPY_BYTES = 8 << 20
MIB = 1 << 20
SINGLE_TARGET_US = 20.0
GRAPH_TARGET_US = 2.0


def _held(device, pause: Callable, work: Callable[[], None]) -> float:
    """Seconds `work` took while the engine was held; then everything runs and is waited for."""
    device.synchronize()
    pause(device, True)
    try:
        start = time.perf_counter()
        work()
        elapsed = time.perf_counter() - start
    finally:
        pause(device, False)
    device.synchronize()
    return elapsed


def run_launch(device_factory: Callable, pause: Callable) -> dict[str, float]:
    device = device_factory()
    try:
        if device.name.startswith(("nv:", "mock:nv")):
            program = device.load(NV_PREBUILT / NV_KERNEL[0], NV_KERNEL[1])
        else:
            program = device.load(PREBUILT / KERNEL[0], KERNEL[1])
        a, b = device.allocate(4 * ELEMENTS), device.allocate(4 * ELEMENTS)

        def batch() -> None:
            for _ in range(BATCH):
                program(a, b, b, ELEMENTS, global_size=ELEMENTS, local_size=ELEMENTS)

        single = min(_held(device, pause, batch) for _ in range(ROUNDS)) / BATCH
        graph = Graph(device)
        x = graph.input("x")
        for _ in range(GRAPH_KERNELS):
            graph.launch(program, x, b, b, ELEMENTS, global_size=ELEMENTS, local_size=ELEMENTS)
        graph.replay(x=a)
        device.synchronize()
        inputs = [a, b]
        replays = []
        for round_ in range(ROUNDS):
            source = inputs[round_ % 2]
            replays.append(_held(device, pause, lambda: graph.replay(x=source)))
        per_kernel = min(replays) / GRAPH_KERNELS
        graph.free()
    finally:
        device.close()
    return {
        "single_launch_us": single * 1e6,
        "single_launch_target_us": SINGLE_TARGET_US,
        "graph_kernels": float(GRAPH_KERNELS),
        "graph_replay_us": min(replays) * 1e6,
        "graph_per_kernel_us": per_kernel * 1e6,
        "graph_per_kernel_target_us": GRAPH_TARGET_US,
    }


def run_copy(device_factory: Callable) -> dict[str, float]:
    device = device_factory()
    try:
        data = bytes(range(256)) * (COPY_BYTES // 256)
        buffer = device.allocate(COPY_BYTES)
        copy_in = []
        copy_out = []
        waits = device.staging
        for _ in range(ROUNDS):
            start = time.perf_counter()
            buffer.copyin(data)
            device.synchronize()
            copy_in.append(time.perf_counter() - start)
            start = time.perf_counter()
            buffer.copyout()
            copy_out.append(time.perf_counter() - start)
        staging_waits = float(getattr(waits, "waits", 0))
    finally:
        device.close()
    mib = COPY_BYTES / MIB
    return {
        "bytes": float(COPY_BYTES),
        "copyin_mib_per_s": mib / min(copy_in),
        "copyout_mib_per_s": mib / min(copy_out),
        "copyin_us_per_mib": min(copy_in) / mib * 1e6,
        "copyout_us_per_mib": min(copy_out) / mib * 1e6,
        "staging_waits": staging_waits,
    }


def run_launch_qcom(device_factory: Callable) -> dict[str, float]:
    """The Adreno launch: the driver's Python time to build a dispatch (`prepare`: the const file and
    the CP stream of drivers.qcom.dispatch) and, separately, a launch waited for (enqueue, submit
    through KGSL and, on the mock, the ir3 interpreter running the group). The mock KGSL runs a
    submission inside GPU_COMMAND, so it cannot be held like the other engines."""
    device = device_factory()
    try:
        program = device.load(b"", QCOM_KERNEL)
        a, b = device.allocate(4 * ELEMENTS), device.allocate(4 * ELEMENTS)
        queue = device.compute_queue
        prepares = []
        launches = []
        for _ in range(ROUNDS):
            start = time.perf_counter()
            for _ in range(BATCH):
                program.prepare((a, b, b, ELEMENTS), ELEMENTS, 1, queue)
            prepares.append((time.perf_counter() - start) / BATCH)
            start = time.perf_counter()
            program(a, b, b, ELEMENTS, global_size=ELEMENTS, wait=True)
            launches.append(time.perf_counter() - start)
    finally:
        device.close()
    return {
        "qcom_prepare_us": min(prepares) * 1e6,
        "qcom_launch_waited_us": min(launches) * 1e6,
    }


def run(device_factory: Callable, pause: Callable | None = None, which: str = "launch",
        qcom_device_factory: Callable | None = None) -> dict[str, float]:
    """The `launch` or the `copy` benchmark (`which`); see the module docstring. With
    `qcom_device_factory`, `launch` adds the Adreno figures (run_launch_qcom)."""
    if which == "copy":
        return run_copy(device_factory)
    if pause is None:
        raise ValueError("the launch benchmark needs pause(device, held) to exclude GPU execution")
    figures = run_launch(device_factory, pause)
    if qcom_device_factory is not None:
        figures.update(run_launch_qcom(qcom_device_factory))
    return figures
