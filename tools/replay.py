"""`python -m tools.replay TRACE [--json]`: play a hardware trace back against the driver.

A trace (hal.trace, docs/tracing.md) names the scenario that was recorded and its arguments. This
tool runs that scenario again, on a PCIDevice whose backend answers reads from the trace and checks
every write, DMA allocation and submission against it, and prints either "no divergence, N
operations" (exit status 0) or the first divergence: the record index, what the trace expected,
what the driver did, and the operations before it (exit status 1). A trace that cannot be read or
names an unknown scenario is exit status 2.

`--record SCENARIO OUT --device DEVICE` records on a real GPU instead (docs/tracing.md).
`--diff OLD NEW` compares what the driver did in two traces (its writes, allocations, DMA contents,
not its reads) and names the first difference: what a re-recorded fixture changed.
`--record SCENARIO OUT [--arg KEY=VALUE ...]` records a scenario on the mock machine (a fresh default
Navi31 with the synthetic firmware set, opened through `--arg backend=pci` (default) or
`backend=vfio`, where the IH takes MSI-X) into OUT; `--dump TRACE` prints the header and records.

Scenarios (`SCENARIOS`), each `run(pci, args, firmware_dir) -> detail` on an opened PCIDevice:
- `am.boot`: drivers.am cold boot of every block, then the teardown;
- `selftest`: compute.Device bring-up, a host -> VRAM -> host copy of `copy_bytes` random bytes and a
  vector_add_i32 launch on `elements` random integers (numpy's generator seeded with `seed`),
  both checked, then the teardown.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pathlib
import sys
import tempfile
from typing import Callable

import hal
from hal import trace as hal_trace
from hal.errors import HalError
from hal.trace_format import DMA_DEVICE, OBSERVATIONS, BadTrace, TraceReader

SYNTHETIC_FIRMWARE = "synthetic"  # args["firmware"]: the mock's synthetic Navi31 set
SYSTEM_FIRMWARE = "system"  # args["firmware"]: the firmware search path (drivers.am.firmware)
FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "traces"
DIFF_CONTEXT = 5  # driver operations shown before the first difference by --diff
LOCAL = 256  # work-group size of the vector_add launch (the kernel allows it)
# the process id a mock recording runs as: the AM boot layout writes the owner's id into VRAM, so a
# fixed one makes recording the same scenario twice give the same bytes
FIXTURE_PID = 4242
RERECORD_HINT = ("a driver change made on purpose needs the trace recorded again: "
                 "python -m tools.replay --record SCENARIO TRACE (docs/tracing.md, Fixtures)")


@dataclasses.dataclass(frozen=True)
class Scenario:
    """What a trace recorded: `run(pci, args, firmware_dir) -> detail`, with its default args."""

    name: str
    run: Callable[..., str]
    defaults: dict
    summary: str


def run_am_boot(pci, args: dict, firmware_dir: str | None) -> str:
    from drivers.am.device import AMConfig, AMDevice

    device = AMDevice(pci, config=AMConfig(firmware_dir=firmware_dir))
    kind = device.boot_kind
    device.fini()
    return f"{kind} boot of {', '.join(block.block for block in device.blocks)}, then teardown"


def run_selftest(pci, args: dict, firmware_dir: str | None) -> str:
    import numpy as np

    from compute.device import Device
    from drivers.am.device import AMConfig
    from tools.selftest import KERNELS

    rng = np.random.default_rng(int(args["seed"]))
    size = int(args["copy_bytes"])
    count = int(args["elements"])
    dev = Device(pci.device_string, pci=pci, config=AMConfig(firmware_dir=firmware_dir))
    try:
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        buffer = dev.allocate(size)
        buffer.copyin(data)
        if buffer.copyout() != data:
            raise AssertionError(f"{size} bytes copied host -> VRAM -> host came back different")
        a = rng.integers(-2**31, 2**31, count, dtype=np.int64).astype(np.int32)
        b = rng.integers(-2**31, 2**31, count, dtype=np.int64).astype(np.int32)
        inputs = []
        for array in (a, b):
            inputs.append(dev.allocate(array.nbytes))
            inputs[-1].copyin(array)
        out = dev.allocate(a.nbytes)
        program = dev.load(KERNELS / "vector_add.co", "vector_add_i32")
        program(inputs[0], inputs[1], out, count, global_size=count, local_size=LOCAL, wait=True)
        got = np.frombuffer(out.copyout(), dtype=np.int32)
        with np.errstate(over="ignore"):
            want = a + b
        if not np.array_equal(got, want):
            raise AssertionError("vector_add_i32 differs from numpy")
    finally:
        dev.close()
    return f"{size} bytes host -> VRAM -> host, vector_add_i32 of {count} elements"


SCENARIOS: dict[str, Scenario] = {
    "am.boot": Scenario("am.boot", run_am_boot, {"firmware": SYNTHETIC_FIRMWARE},
                        "drivers.am cold boot of every block, then teardown"),
    "selftest": Scenario("selftest", run_selftest,
                         {"firmware": SYNTHETIC_FIRMWARE, "seed": 1, "copy_bytes": 12288,
                          "elements": 4 * LOCAL + 7},
                         "compute bring-up, a copy round trip and a vector_add_i32 launch"),
}


def _firmware_dir(args: dict, scratch: str) -> str | None:
    """The firmware root the recorded run used: the synthetic set written into `scratch`, or None
    (the search path)."""
    if args.get("firmware") == SYNTHETIC_FIRMWARE:
        from mockgpu.amd.firmware_images import write_navi31_set

        return str(write_navi31_set(pathlib.Path(scratch) / "firmware"))
    return None


def record(scenario: str, out: str, overrides: dict | None = None, device: str | None = None,
           os=None) -> str:
    """Record `scenario` into `out`; returns its detail line. Without `device`, on a fresh default
    mock machine whose process id is FIXTURE_PID (so an unchanged driver records the same bytes
    again); with one (`vfio:0000:03:00.0`), on that device, opened with `unbind=True` through the
    seam `os` (the real machine by default), with the firmware of the search path."""
    chosen = SCENARIOS[scenario]
    if device is not None:
        args = {**chosen.defaults, **(overrides or {}), "firmware": SYSTEM_FIRMWARE}
        with hal_trace.record(out, scenario, args):
            with hal.open(device, os=os, unbind=True) as pci:
                return chosen.run(pci, args, None)
    from tools import mock_machines

    args = {**chosen.defaults, **(overrides or {}), "firmware": SYNTHETIC_FIRMWARE}
    machine = mock_machines.navi31(0, backend=str(args.get("backend", "pci")))
    machine.os.getpid = lambda: FIXTURE_PID
    try:
        with hal_trace.record(out, scenario, args):
            pci = hal.open(machine.device, os=machine.os, unbind=True)
            try:
                return chosen.run(pci, args, machine.firmware_dir)
            finally:
                pci.close()
    finally:
        machine.close()


@dataclasses.dataclass
class ReplayResult:
    """What a replay found: `ok`, the operations matched, the trace's record count, the scenario's
    detail line, the first divergence (or None) and a failure that was not one (`error`)."""

    trace: str
    scenario: str
    ok: bool
    operations: int
    records: int
    detail: str = ""
    divergence: hal_trace.TraceDivergence | None = None
    error: str = ""

    @property
    def register(self) -> str:
        """The driver register the diverging access went through, when a register object made it
        (drivers.am.regs.BoundRegister in the innermost frames outside hal); else empty."""
        if self.divergence is None:
            return ""
        from drivers.am.regs import BoundRegister

        for frame in self.divergence.frames:
            register = frame.f_locals.get("self")
            if isinstance(register, BoundRegister):
                return f"{register.block}[{register.instance}] {register.name}"
        return ""

    def as_json(self) -> dict:
        divergence = None
        if self.divergence is not None:
            divergence = {"index": self.divergence.index, "expected": self.divergence.expected,
                          "got": self.divergence.got, "history": self.divergence.history,
                          "where": self.divergence.where, "register": self.register}
        return {"trace": self.trace, "scenario": self.scenario, "ok": self.ok,
                "operations": self.operations, "records": self.records, "detail": self.detail,
                "divergence": divergence, "error": self.error}

    def text(self) -> str:
        if self.ok:
            return f"{self.trace}: {self.scenario}: no divergence, {self.operations} operations " \
                   f"({self.records} records; {self.detail})"
        if self.divergence is not None:
            register = f"register: {self.register}\n" if self.register else ""
            return f"{self.trace}: {self.scenario}: {self.divergence}\n{register}{RERECORD_HINT}"
        return f"{self.trace}: {self.scenario}: the run failed without a divergence: {self.error}"


def replay(path: str) -> ReplayResult:
    """Play the trace at `path` back through its scenario (BadTrace when unreadable,
    HalError for an unknown scenario)."""
    pci, replayer = hal_trace.open_replay(path)
    header = replayer.header
    scenario = SCENARIOS.get(header.scenario)
    if scenario is None:
        known = ", ".join(SCENARIOS)
        raise HalError(f"scenario {header.scenario!r} is not one tools.replay can run "
                       f"(known: {known}); record with `python -m tools.replay --record` or "
                       "`hal.trace.record(path, scenario, args)`")
    result = ReplayResult(str(path), scenario.name, False, 0, len(replayer.records) - 1)
    failure: BaseException | None = None
    with tempfile.TemporaryDirectory(prefix="gpuhal-replay-") as scratch:
        try:
            result.detail = scenario.run(pci, header.args, _firmware_dir(header.args, scratch))
        except Exception as exc:  # the divergence, if any, is the replayer's; else this is reported
            failure = exc
        finally:
            try:
                pci.close()
            except HalError as exc:
                failure = failure or exc
    if replayer.divergence is None and failure is None:
        try:
            replayer.finish()
        except hal_trace.TraceDivergence:
            pass
    result.divergence = replayer.divergence
    result.operations = replayer.operations
    if result.divergence is None and failure is not None:
        result.error = f"{type(failure).__name__}: {failure}"
    result.ok = result.divergence is None and failure is None
    return result


def driver_operations(path: str) -> list[tuple[int, str]]:
    """What the driver did in a trace, as (record index, description): writes, allocations, DMA
    contents, interrupt changes, resets, seam changes; not its reads nor the device's writes, which
    follow the device's timing."""
    return [(index, record.describe()) for index, record in enumerate(TraceReader(path))
            if record.op not in OBSERVATIONS and record.op != DMA_DEVICE]


def diff(old: str, new: str) -> tuple[bool, str]:
    """Compare two traces' driver operations: (same, text naming the first difference)."""
    before = driver_operations(old)
    after = driver_operations(new)
    for position, (was, now) in enumerate(zip(before, after)):
        if was[1] != now[1]:
            context = [f"  {text}" for _, text in before[max(0, position - DIFF_CONTEXT):position]]
            lines = [f"driver operation {position} differs (record {was[0]} of {old}, record {now[0]} "
                     f"of {new}):", f"  - {was[1]}", f"  + {now[1]}"]
            if context:
                lines[1:1] = ["after:", *context]
            return False, "\n".join(lines)
    if len(before) != len(after):
        shorter, longer = (old, new) if len(before) < len(after) else (new, old)
        extra = (after if len(before) < len(after) else before)[min(len(before), len(after))][1]
        return False, (f"{shorter} ends after {min(len(before), len(after))} driver operations; "
                       f"{longer} goes on with {extra}")
    return True, f"the same {len(before)} driver operations"


def dump(path: str) -> None:
    reader = TraceReader(path)
    print(json.dumps({"version": reader.header.version, **reader.header.to_json()}, indent=2))
    for index, record in enumerate(reader):
        count = f" (x{record.count})" if record.count > 1 else ""
        print(f"{index}: {record.describe()}{count}")


def _parse_arg(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def main(argv: list[str] | None = None) -> int:
    scenarios = "; ".join(f"{name}: {scenario.summary}" for name, scenario in SCENARIOS.items())
    parser = argparse.ArgumentParser(prog="python -m tools.replay", description=__doc__.splitlines()[0],
                                     epilog=f"scenarios: {scenarios}. Exit status: 0 no divergence, 1 a "
                                            "divergence or a failed run, 2 an unreadable trace or an "
                                            "unknown scenario.")
    parser.add_argument("trace", nargs="?", help="the trace to replay (or to dump)")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON object: "trace", "scenario", "ok", "operations", "records", '
                             '"detail", "divergence" (index, expected, got, history, where, register) '
                             'or null, "error"')
    parser.add_argument("--record", nargs=2, metavar=("SCENARIO", "OUT"),
                        help=f"record SCENARIO ({', '.join(SCENARIOS)}) on the mock machine into OUT")
    parser.add_argument("--device", metavar="DEVICE",
                        help="record on this device (vfio:0000:03:00.0; its kernel driver is detached and "
                             "given back) with the firmware of the search path, not on the mock")
    parser.add_argument("--arg", action="append", default=[], type=_parse_arg, metavar="KEY=VALUE",
                        help="a scenario argument for --record (JSON value or text)")
    parser.add_argument("--dump", action="store_true", help="print the trace's header and records")
    parser.add_argument("--diff", nargs=2, metavar=("OLD", "NEW"),
                        help="compare what the driver did in two traces (its writes, allocations, DMA "
                             "contents; not its reads); exit status 1 when they differ")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show the driver's log (after a divergence its teardown fails loudly)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL)
    if args.record:
        scenario, out = args.record
        if scenario not in SCENARIOS:
            parser.error(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
        try:
            detail = record(scenario, out, dict(args.arg), device=args.device)
        except HalError as exc:
            print(f"recording {scenario} into {out}: {exc}", file=sys.stderr)
            return 1
        print(f"recorded {scenario} into {out}: {detail}")
        return 0
    if args.diff:
        try:
            same, text = diff(*args.diff)
        except (BadTrace, OSError) as exc:
            print(f"{exc}", file=sys.stderr)
            return 2
        print(text)
        return 0 if same else 1
    if not args.trace:
        parser.error("give a TRACE (or --record SCENARIO OUT, --diff OLD NEW)")
    try:
        if args.dump:
            dump(args.trace)
            return 0
        result = replay(args.trace)
    except BrokenPipeError:  # --dump into `head`
        return 0
    except (BadTrace, OSError, HalError) as exc:
        if args.json:
            print(json.dumps({"trace": args.trace, "ok": False, "error": f"{type(exc).__name__}: {exc}"}))
        else:
            print(f"{args.trace}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.as_json(), indent=2) if args.json else result.text())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
