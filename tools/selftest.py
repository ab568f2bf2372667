"""`python -m tools.selftest [DEVICE] [--mock [amd|nv|qcom]] [--json] [--timeout S]`: bring a GPU up,
prove it computes.

Picks the device: DEVICE when given, the mock machine's GPU ("mock:0") with --mock ("mock:nv", a
simulated H100 behind the NVIDIA kernel driver, with --mock nv; nv:N for a real one; "qcom:0" on a
simulated Adreno 630 behind KGSL with --mock qcom, whose kernels are the ir3 library), otherwise the
first AMD GPU that hal's discovery says a backend can open (and the mock, saying why, when there is
none). Then it brings the device up through compute.Device and runs the checks: copy round trips of
random data (host -> VRAM -> host, VRAM -> VRAM), signals handed across the copy and compute queues,
and each kernel of the library against numpy on sizes that are not a multiple of the work-group.
It measures copy bandwidth both ways and launch latency, and prints a report (or, with --json, one
object with `device`, `checks` as `name`/`ok`/`detail` and `figures`). A step that runs longer than
two seconds says so on stderr while it runs. The exit status is 1 when any check fails.
"""
from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import hal
from compute import device as compute_device
from hal.errors import HalError

log = logging.getLogger(__name__)

KERNELS = pathlib.Path(__file__).resolve().parents[1] / "compute" / "amd" / "kernels" / "prebuilt"
# the CUDA library's fatbinaries (docs/nv-programs.md): the same kernels, file "<name>.fatbin"
NV_KERNELS = pathlib.Path(__file__).resolve().parents[1] / "compute" / "nv" / "kernels" / "prebuilt"
MOCK_DEVICE = "mock:0"
MOCK_NV_DEVICE = "mock:nv"
QCOM_DEVICE = "qcom:0"
# drivers/qcom/kernels/*.asm: @localsize 64, 1, 1 (reduce_sum sums 64 inputs per group)
QCOM_LOCAL = 64
AMD_VENDOR_ID = 0x1002  # include/linux/pci_ids.h PCI_VENDOR_ID_ATI (AMD GPUs)
LOCAL = 256  # work-group size for the 1-D kernels (their max flat work-group size allows it)
REDUCE_WG = 256  # compute/amd/kernels/reduce.cl REDUCE_WG (its reqd_work_group_size)
TILE = 16  # compute/amd/kernels/matmul.cl TILE (its reqd_work_group_size is TILE x TILE)
PROGRESS_AFTER_S = 2.0  # steps running longer than this report progress on stderr
MiB = 1 << 20


@dataclass
class Report:
    device: str
    note: str = ""
    checks: list[dict] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(check["ok"] for check in self.checks)

    def as_json(self) -> dict:
        return {"device": self.device, "note": self.note, "ok": self.ok,
                "checks": self.checks, "figures": self.figures}


class Progress:
    """Says on stderr that a step is still running once it passed PROGRESS_AFTER_S, then every
    PROGRESS_AFTER_S; quiet for quick steps."""

    def __init__(self, name: str, stream=None) -> None:
        self.name = name
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._tell, daemon=True)

    def _tell(self) -> None:
        while not self.done.wait(PROGRESS_AFTER_S):
            elapsed = time.monotonic() - self.start
            print(f"selftest: {self.name}: still running ({elapsed:.0f} s)", file=self.stream,
                  flush=True)

    def __enter__(self) -> "Progress":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()


def choose_device(device: str | None, mock: bool | str) -> tuple[str, str]:
    """The device string to open and a note saying how it was chosen (`mock` True or "amd": the
    mock Navi31, "nv": the mock NVIDIA H100)."""
    if mock == "nv":
        return MOCK_NV_DEVICE, "the mock machine (--mock nv): a simulated H100, not a real GPU"
    if mock == "qcom":
        return QCOM_DEVICE, "the mock machine (--mock qcom): a simulated Adreno 630, not a real GPU"
    if mock:
        return MOCK_DEVICE, "the mock machine (--mock): a simulated Navi31, not a real GPU"
    if device:
        return device, "as asked"
    reasons = []
    try:
        found = hal.list_devices()
    except (HalError, OSError) as exc:
        found = []
        reasons.append(f"discovery failed: {exc}")
    for info in found:
        if info.vendor_id != AMD_VENDOR_ID:
            reasons.append(f"{info.bdf}: not an AMD GPU ({info.vendor_id:#06x})")
            continue
        usable = [name for name, verdict in info.backends.items() if verdict.startswith("ok")]
        if usable:
            return info.device, f"the first usable AMD GPU ({info.bdf}, backend {usable[0]})"
        why = "; ".join(f"{name}: {verdict}" for name, verdict in info.backends.items())
        reasons.append(f"{info.bdf}: no backend can open it ({why})")
    if not found and not reasons:
        reasons.append("no display-class PCI device on this machine")
    return MOCK_DEVICE, "no usable AMD GPU (" + "; ".join(reasons) + "), so the mock machine"


def _random_bytes(rng, size: int) -> bytes:
    return rng.integers(0, 256, size, dtype=np.uint8).tobytes()


def _compare(name: str, got: np.ndarray, want: np.ndarray, exact: bool = True) -> str:
    if exact:
        bad = np.flatnonzero(got != want)
    else:
        bad = np.flatnonzero(~np.isclose(got, want, rtol=1e-5, atol=1e-5))
    if bad.size:
        first = int(bad[0])
        raise AssertionError(f"{name}: {bad.size} of {want.size} elements differ, first at "
                             f"[{first}]: got {got.flat[first]!r}, want {want.flat[first]!r}")
    return f"{want.size} elements match numpy"


class Checks:
    """The checks on one open compute Device; each returns a detail string or raises."""

    def __init__(self, dev, rng, report: Report) -> None:
        self.dev = dev
        self.rng = rng
        self.report = report
        self.programs: dict[tuple[str, str], object] = {}

    def program(self, file: str, name: str):
        key = (file, name)
        if key not in self.programs:
            if self.dev.name.startswith(("nv:", "mock:nv")):
                path = NV_KERNELS / file.replace(".co", ".fatbin")
            else:
                path = KERNELS / file
            self.programs[key] = self.dev.load(path, name)
        return self.programs[key]

    def size(self, base: int, multiple: int = LOCAL) -> int:
        """`base` plus a random remainder, never a multiple of the work-group."""
        return base + int(self.rng.integers(1, multiple))

    # -- copies --------------------------------------------------------------------------------
    def copy_host_vram_host(self) -> str:
        size = self.size(3 * MiB, 4096)
        data = _random_bytes(self.rng, size)
        buffer = self.dev.allocate(size)
        start = time.perf_counter()
        buffer.copyin(data)
        middle = time.perf_counter()
        back = buffer.copyout()
        end = time.perf_counter()
        buffer.free()
        self.report.figures["copy_in_MiB_s"] = round(size / MiB / (middle - start), 2)
        self.report.figures["copy_out_MiB_s"] = round(size / MiB / (end - middle), 2)
        if back != data:
            first = next(i for i, (x, y) in enumerate(zip(back, data)) if x != y)
            raise AssertionError(f"{size} bytes: first difference at byte {first}")
        return f"{size} random bytes in and back out"

    def copy_vram_vram(self) -> str:
        size = self.size(MiB, 4096)
        data = _random_bytes(self.rng, size)
        source = self.dev.allocate(size)
        target = self.dev.allocate(size)
        source.copyin(data)
        target.copy_from(source)
        back = target.copyout()
        source.free()
        target.free()
        if back != data:
            raise AssertionError(f"{size} bytes copied VRAM -> VRAM came back different")
        return f"{size} random bytes VRAM -> VRAM"

    def signals_across_queues(self) -> str:
        # the copy queue waits for a value the compute queue writes later, then answers
        signal = self.dev.new_signal("selftest")
        self.dev.copy_queue.wait(signal, 1).signal(signal, 2).timestamp(signal)
        copy_value = self.dev.copy_queue.submit(ordered=False)
        self.dev.compute_queue.signal(signal, 1)
        self.dev.compute_queue.submit(ordered=False)
        signal.wait(2)
        self.dev.timeline.wait(copy_value)
        large = (1 << 32) + 3
        self.dev.compute_queue.signal(signal, large)
        self.dev.compute_queue.submit()
        signal.wait(large)
        if signal.value != large:
            raise AssertionError(f"64-bit value: got {signal.value:#x}, want {large:#x}")
        return "copy waited for compute, 64-bit values and a timestamp"

    # -- kernels -------------------------------------------------------------------------------
    def _upload(self, array: np.ndarray):
        buffer = self.dev.allocate(array.nbytes)
        buffer.copyin(array)
        return buffer

    def _download(self, buffer, dtype, count: int) -> np.ndarray:
        return np.frombuffer(buffer.copyout(count * np.dtype(dtype).itemsize), dtype=dtype)

    def vector_add(self, kind: str) -> str:
        n = self.size(4 * LOCAL)
        if kind == "f32":
            a = self.rng.standard_normal(n).astype(np.float32)
            b = self.rng.standard_normal(n).astype(np.float32)
        else:
            a = self.rng.integers(-2**31, 2**31, n, dtype=np.int64).astype(np.int32)
            b = self.rng.integers(-2**31, 2**31, n, dtype=np.int64).astype(np.int32)
        out = self.dev.allocate(a.nbytes)
        program = self.program("vector_add.co", f"vector_add_{kind}")
        program(self._upload(a), self._upload(b), out, n, global_size=n, local_size=LOCAL,
                wait=True)
        with np.errstate(over="ignore"):
            want = a + b
        return _compare(f"vector_add_{kind}", self._download(out, a.dtype, n), want)

    def saxpy(self) -> str:
        n = self.size(4 * LOCAL)
        alpha = float(np.float32(self.rng.standard_normal()))
        x = self.rng.standard_normal(n).astype(np.float32)
        y = self.rng.standard_normal(n).astype(np.float32)
        y_buffer = self._upload(y)
        self.program("saxpy.co", "saxpy")(alpha, self._upload(x), y_buffer, n, global_size=n,
                                          local_size=LOCAL, wait=True)
        want = np.float32(alpha) * x + y
        return _compare("saxpy", self._download(y_buffer, np.float32, n), want, exact=False)

    def memset(self) -> str:
        n = self.size(4 * LOCAL)
        guard = 7
        fill = np.full(n + guard, 0xA5A5A5A5, dtype=np.uint32)
        buffer = self._upload(fill)
        value = int(self.rng.integers(0, 2**32, dtype=np.uint64))
        self.program("memory.co", "memset_u32")(buffer, value, n, global_size=n, local_size=LOCAL,
                                                wait=True)
        want = fill.copy()
        want[:n] = value
        _compare("memset_u32", self._download(buffer, np.uint32, n + guard), want)
        return f"{n} elements set, the {guard} after them untouched"

    def copy_kernel(self) -> str:
        n = self.size(4 * LOCAL)
        src = self.rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
        dst = self.dev.allocate(src.nbytes)
        self.program("memory.co", "copy_u32")(self._upload(src), dst, n, global_size=n,
                                              local_size=LOCAL, wait=True)
        return _compare("copy_u32", self._download(dst, np.uint32, n), src)

    def reduce(self) -> str:
        n = self.size(4 * REDUCE_WG, REDUCE_WG)
        groups = -(-n // REDUCE_WG)
        data = self.rng.integers(-1000, 1000, n, dtype=np.int32)
        partial = self.dev.allocate(4 * groups)
        self.program("reduce.co", "reduce_sum_i32")(self._upload(data), partial, n,
                                                    global_size=groups * REDUCE_WG,
                                                    local_size=REDUCE_WG, wait=True)
        got = self._download(partial, np.int32, groups)
        want = np.array([data[g * REDUCE_WG:(g + 1) * REDUCE_WG].sum() for g in range(groups)],
                        dtype=np.int32)
        _compare("reduce_sum_i32", got, want)
        return f"{n} elements in {groups} partial sums match numpy"

    def matmul(self) -> str:
        m, n, k = (self.size(TILE, TILE) for _ in range(3))
        a = self.rng.standard_normal((m, k)).astype(np.float32)
        b = self.rng.standard_normal((k, n)).astype(np.float32)
        c = self.dev.allocate(4 * m * n)
        rows = -(-m // TILE) * TILE
        cols = -(-n // TILE) * TILE
        self.program("matmul.co", "matmul_f32")(self._upload(a), self._upload(b), c, m, n, k,
                                                global_size=(cols, rows), local_size=(TILE, TILE),
                                                wait=True)
        got = self._download(c, np.float32, m * n).reshape(m, n)
        _compare("matmul_f32", got, a @ b, exact=False)
        return f"{m}x{k} @ {k}x{n} matches numpy"

    def launch_latency(self) -> str:
        n = 1
        buffer = self.dev.allocate(4)
        program = self.program("memory.co", "memset_u32")
        program(buffer, 0, n, global_size=n, local_size=1, wait=True)
        return self._time_launches(buffer, lambda value: program(buffer, value, n, global_size=n,
                                                                 local_size=1, wait=True))

    def _time_launches(self, buffer, launch: Callable[[int], object]) -> str:
        """`launch(value)` for values 1..10 (each must leave `value` in the first word of `buffer`),
        timed one by one; the median is the launch_latency_us figure."""
        times = []
        for value in range(1, 11):
            start = time.perf_counter()
            launch(value)
            times.append(time.perf_counter() - start)
        got = self._download(buffer, np.uint32, 1)[0]
        if got != 10:
            raise AssertionError(f"the last of 10 launches left {got}, want 10")
        self.report.figures["launch_latency_us"] = round(1e6 * float(np.median(times)), 1)
        return "10 one-work-item launches, each waited for"

    def all(self) -> list[tuple[str, Callable[[], str]]]:
        return [
            ("copy host->vram->host", self.copy_host_vram_host),
            ("copy vram->vram", self.copy_vram_vram),
            ("signals across queues", self.signals_across_queues),
            ("vector_add_f32", lambda: self.vector_add("f32")),
            ("vector_add_i32", lambda: self.vector_add("i32")),
            ("saxpy", self.saxpy),
            ("memset_u32", self.memset),
            ("copy_u32", self.copy_kernel),
            ("reduce_sum_i32", self.reduce),
            ("matmul_f32", self.matmul),
            ("launch latency", self.launch_latency),
        ]


class QCOMChecks(Checks):
    """The checks on an Adreno: copies and signals as everywhere, the ir3 kernel library
    (drivers/qcom/kernels) against numpy."""

    def size(self, base: int, multiple: int = QCOM_LOCAL) -> int:
        """`base` plus a random remainder of whole dwords (CP_MEMCPY moves dwords), never a
        multiple of the work group."""
        return base + 4 * int(self.rng.integers(1, max(2, multiple // 4)))

    def signals_across_queues(self) -> str:
        # the mock KGSL runs each submission to its end at once, so the compute queue signals
        # first; the copy queue's wait is then met when it runs
        signal = self.dev.new_signal("selftest")
        self.dev.compute_queue.signal(signal, 1)
        self.dev.compute_queue.submit(ordered=False)
        self.dev.copy_queue.wait(signal, 1).signal(signal, 2).timestamp(signal)
        copy_value = self.dev.copy_queue.submit(ordered=False)
        signal.wait(2)
        self.dev.timeline.wait(copy_value)
        large = (1 << 32) + 3
        self.dev.compute_queue.signal(signal, large)
        self.dev.compute_queue.submit()
        signal.wait(large)
        if signal.value != large:
            raise AssertionError(f"64-bit value: got {signal.value:#x}, want {large:#x}")
        return "copy waited for compute, 64-bit values and a timestamp"

    def library(self, name: str):
        key = ("ir3", name)
        if key not in self.programs:
            self.programs[key] = self.dev.load(b"", name)
        return self.programs[key]

    def vector_add_f32(self) -> str:
        n = self.size(4 * QCOM_LOCAL)
        a = self.rng.standard_normal(n).astype(np.float32)
        b = self.rng.standard_normal(n).astype(np.float32)
        out = self.dev.allocate(a.nbytes)
        self.library("vector_add")(self._upload(a), self._upload(b), out, n, global_size=n, wait=True)
        return _compare("vector_add", self._download(out, np.float32, n), a + b)

    def saxpy(self) -> str:
        n = self.size(4 * QCOM_LOCAL)
        alpha = float(np.float32(self.rng.standard_normal()))
        x = self.rng.standard_normal(n).astype(np.float32)
        y = self.rng.standard_normal(n).astype(np.float32)
        y_buffer = self._upload(y)
        self.library("saxpy")(self._upload(x), y_buffer, n, alpha, global_size=n, wait=True)
        want = np.float32(alpha) * x + y
        return _compare("saxpy", self._download(y_buffer, np.float32, n), want, exact=False)

    def memset(self) -> str:
        n = self.size(4 * QCOM_LOCAL)
        guard = 7
        fill = np.full(n + guard, 0xA5A5A5A5, dtype=np.uint32)
        buffer = self._upload(fill)
        value = int(self.rng.integers(0, 2**32, dtype=np.uint64))
        self.library("memset")(buffer, n, value, global_size=n, wait=True)
        want = fill.copy()
        want[:n] = value
        _compare("memset", self._download(buffer, np.uint32, n + guard), want)
        return f"{n} words set, the {guard} after them untouched"

    def copy_kernel(self) -> str:
        n = self.size(4 * QCOM_LOCAL)
        src = self.rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
        dst = self.dev.allocate(src.nbytes)
        self.library("copy")(self._upload(src), dst, n, global_size=n, wait=True)
        return _compare("copy", self._download(dst, np.uint32, n), src)

    def reduce(self) -> str:
        groups = int(self.rng.integers(2, 9))
        data = self.rng.integers(0, 2**24, groups * QCOM_LOCAL, dtype=np.uint32)
        sums = self.dev.allocate(4 * groups)
        self.library("reduce_sum")(self._upload(data), sums, global_size=groups * QCOM_LOCAL,
                                   wait=True)
        want = data.reshape(groups, QCOM_LOCAL).sum(axis=1, dtype=np.uint32)
        _compare("reduce_sum", self._download(sums, np.uint32, groups), want)
        return f"{groups} work-group sums of {QCOM_LOCAL} match numpy"

    def launch_latency(self) -> str:
        buffer = self.dev.allocate(4)
        program = self.library("memset")
        return self._time_launches(buffer, lambda value: program(buffer, 1, value, global_size=1, wait=True))

    def all(self) -> list[tuple[str, Callable[[], str]]]:
        return [
            ("copy host->vram->host", self.copy_host_vram_host),
            ("copy vram->vram", self.copy_vram_vram),
            ("signals across queues", self.signals_across_queues),
            ("vector_add", self.vector_add_f32),
            ("saxpy", self.saxpy),
            ("memset", self.memset),
            ("copy", self.copy_kernel),
            ("reduce_sum", self.reduce),
            ("launch latency", self.launch_latency),
        ]


def _run_step(report: Report, name: str, step: Callable[[], str]) -> bool:
    start = time.perf_counter()
    try:
        with Progress(name):
            detail = step()
        ok = True
    except Exception as exc:  # noqa: BLE001 - any failure of a step is that check's verdict
        detail = f"{type(exc).__name__}: {exc}"
        ok = False
        log.debug("check %s failed", name, exc_info=True)
    elapsed = time.perf_counter() - start
    report.checks.append({"name": name, "ok": ok, "detail": detail, "seconds": round(elapsed, 3)})
    return ok


def run(device: str | None = None, mock: bool = False, *, timeout_s: float | None = None,
        seed: int | None = None, mock_factory=None) -> Report:
    """Choose, bring up and check a device; `mock_factory` replaces tools.mock_machines.navi31."""
    from tools import mock_machines

    name, note = choose_device(device, mock)
    report = Report(name, note)
    rng = np.random.default_rng(seed)
    options = {} if timeout_s is None else {"timeout_s": timeout_s}
    compute_device.register_mock_factory(mock_factory or mock_machines.navi31)
    compute_device.register_mock_factory(mock_machines.nvidia_compute, kind="nv")
    opened = []
    machines = []
    if mock == "qcom":
        machines.append(mock_machines.qcom())
        options["os"] = machines[0].os
    try:
        def bring_up() -> str:
            start = time.perf_counter()
            opened.append(compute_device.Device(name, **options))
            report.figures["bring_up_s"] = round(time.perf_counter() - start, 3)
            return f"{name} up"

        if not _run_step(report, "bring-up", bring_up):
            return report
        kind = QCOMChecks if name.startswith("qcom:") else Checks
        checks = kind(opened[0], rng, report)
        for check_name, step in checks.all():
            _run_step(report, check_name, step)
    finally:
        for dev in opened:
            try:
                dev.close()
            except HalError as exc:
                report.checks.append({"name": "close", "ok": False, "detail": str(exc),
                                      "seconds": 0.0})
        compute_device.register_mock_factory(None)
        compute_device.register_mock_factory(None, kind="nv")
        for machine in machines:
            machine.close()
    return report


def format_report(report: Report) -> str:
    lines = [f"device: {report.device} ({report.note})"]
    if "bring_up_s" in report.figures:
        lines.append(f"bring-up: {report.figures['bring_up_s']:.2f} s")
    width = max(len(check["name"]) for check in report.checks)
    for check in report.checks:
        verdict = "pass" if check["ok"] else "FAIL"
        lines.append(f"  {verdict}  {check['name']:<{width}}  {check['detail']}")
    if report.figures:
        lines.append("figures:")
        for key, value in report.figures.items():
            lines.append(f"  {key}: {value}")
    failed = sum(not check["ok"] for check in report.checks)
    lines.append("all checks passed" if not failed else f"{failed} check(s) failed")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.selftest", description=__doc__.split(
        "\n")[0])
    parser.add_argument("device", nargs="?", help="device string (pci:..., vfio:..., mock:0)")
    parser.add_argument("--mock", nargs="?", const="amd", choices=("amd", "nv", "qcom"), default=None,
                        help="use a mock machine's GPU: amd (a Navi31, the default), nv (an H100) or "
                             "qcom (an Adreno 630)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="bound on each wait for the GPU (default: compute's)")
    args = parser.parse_args(argv)
    if args.mock and args.device:
        parser.error("give either a DEVICE or --mock")
    report = run(args.device, args.mock, timeout_s=args.timeout)
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        print(format_report(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
