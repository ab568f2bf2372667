"""`python -m tools.fuzz`: fuzz the driver stack under the mock GPU for a time budget.

    python -m tools.fuzz [--minutes N] [--seed S] [--faults LIST] [--json] [--out DIR]
                         [--targets LIST] [--shrink-seconds S] [--no-database] [--machine amd|nv]

Rounds run until the budget is spent, each with the next seed (S, S+1, ...): the driver state
machine (tools.fuzz_model.DriverStateMachine on a mock Navi31, or with `--machine nv`
tools.fuzz_model_nv.NVStateMachine on a mock H100) for a few examples, then every input target
(tools.fuzz_inputs.TARGETS, or those `--targets` names) for a few hundred inputs, then, with
`--faults` (a comma list of fault names, or "all"), the fault-injection cases of tools.fault_matrix
for every operation. hypothesis runs with the round's seed, no deadline, and its example database
in DIR/hypothesis unless --no-database; shrinking stops after --shrink-seconds. A failure is saved
as a reproducer, DIR/<kind>-<n>.py (default DIR: ./fuzz-reproducers), a script that runs the
shrunk example again. Progress goes to stderr; the exit status is 1 when anything failed, 2 when
the fuzzer cannot run (hypothesis not installed: pip install -e '.[fuzz]').

`--json` prints one object: seed, minutes, rounds, iterations (state machine examples, inputs and
fault cases run), steps, faults_injected, failures (kind, target, error, reproducer path),
targets (inputs run per target), notes (seed sources that were missing), out.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import logging
import pathlib
import random
import sys
import time

from hal.errors import BackendUnavailable, HalError

DEFAULT_OUT = "fuzz-reproducers"
STATE_EXAMPLES = 4  # state machine examples per round
STATE_STEPS = 15  # rules per example
INPUT_EXAMPLES = 150  # inputs per target per round
SHRINK_SECONDS = 60.0
FAULT_TIMEOUT_S = 0.5  # the driver's waits in a fault case (tools.fault_matrix DEFAULT_TIMEOUT_S)
# --machine: the state machine's module and class for each kind of mock GPU
MACHINES = {"amd": ("tools.fuzz_model", "DriverStateMachine"),
            "nv": ("tools.fuzz_model_nv", "NVStateMachine")}


@dataclasses.dataclass
class Failure:
    kind: str  # "state", "input" or "fault"
    target: str
    error: str
    reproducer: str | None = None  # path of the saved script

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Result:
    seed: int
    minutes: float
    out: str
    rounds: int = 0
    iterations: int = 0
    steps: int = 0
    faults_injected: int = 0
    failures: list[Failure] = dataclasses.field(default_factory=list)
    targets: dict[str, int] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["failures"] = [failure.to_json() for failure in self.failures]
        data["ok"] = self.ok
        return data


def _require_hypothesis():
    try:
        import hypothesis  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable("tools.fuzz needs hypothesis: pip install -e '.[fuzz]'") from exc


@contextlib.contextmanager
def shrink_limit(seconds: float):
    """Bound hypothesis's shrinking of one failure to `seconds` (its own bound is 5 minutes)."""
    from hypothesis.internal.conjecture import engine

    before = engine.MAX_SHRINKING_SECONDS
    engine.MAX_SHRINKING_SECONDS = seconds
    try:
        yield
    finally:
        engine.MAX_SHRINKING_SECONDS = before


def _settings(examples: int, database: pathlib.Path | None, **extra):
    from hypothesis import HealthCheck, Phase, settings
    from hypothesis.database import DirectoryBasedExampleDatabase

    db = DirectoryBasedExampleDatabase(str(database)) if database is not None else None
    # no Phase.explain: its traced re-runs cost more than the shrinking, for a line list
    phases = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]
    return settings(max_examples=examples, deadline=None, database=db, print_blob=False,
                    suppress_health_check=list(HealthCheck), phases=phases, **extra)


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def state_program(error: BaseException) -> str | None:
    """The shrunk steps hypothesis attached to a state machine failure, as a script."""
    lines = []
    for note in getattr(error, "__notes__", ()):
        for line in str(note).splitlines():
            if line.startswith("state = ") or line.startswith("state."):
                lines.append(line)
    if not lines:
        return None
    if lines[-1] != "state.teardown()":
        lines.append("state.teardown()")
    return "\n".join(lines) + "\n"


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0][:500]


def _save(out: pathlib.Path, kind: str, text: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    index = 1
    while (out / f"{kind}-{index}.py").exists():
        index += 1
    path = out / f"{kind}-{index}.py"
    path.write_text(text)
    return str(path)


def run_state_machine(seed: int, examples: int, steps: int, out: pathlib.Path,
                      database: pathlib.Path | None, machine=None) -> list[Failure]:
    """The driver state machine for `examples` examples; each failure saved as a script."""
    from hypothesis import seed as use_seed
    from hypothesis.stateful import get_state_machine_test

    from tools import fuzz_model

    machine = machine or fuzz_model.DriverStateMachine
    test = get_state_machine_test(machine, settings=_settings(examples, database,
                                                              stateful_step_count=steps))
    test = use_seed(seed)(test)
    try:
        test()
    except Exception as error:  # noqa: BLE001 - every failure becomes a reproducer
        failures = []
        for leaf in _leaves(error):
            program = state_program(leaf)
            path = None
            if program is not None:
                what = _describe(leaf)[:200]
                header = (f'"""Reproducer from python -m tools.fuzz --seed {seed}: {what}\n\n'
                          f'Run it from the checkout root: PYTHONPATH=. python <this file>."""\n'
                          f"from {machine.__module__} import {machine.__name__}\n\n")
                path = _save(out, "state", header + program)
            failures.append(Failure("state", machine.__name__, _describe(leaf), path))
        return failures
    return []


def run_input_target(name: str, seed: int, examples: int, out: pathlib.Path,
                     database: pathlib.Path | None) -> list[Failure]:
    """One input target for `examples` inputs; a failure saves the shrunk input and a script."""
    from hypothesis import given
    from hypothesis import seed as use_seed

    from tools import fuzz_inputs

    target = fuzz_inputs.TARGETS[name]
    found: list[tuple[str, bytes]] = []
    try:
        strategy = fuzz_inputs.inputs(target)
    except Exception as error:  # noqa: BLE001 - a seed source that fails is reported, not fatal
        return [Failure("input", name, f"seeds: {_describe(error)}")]

    @use_seed(seed)
    @_settings(examples, database)
    @given(strategy)
    def test(item):
        found.clear()
        found.append(item)
        fuzz_inputs.check(target, *item)

    try:
        test()
    except Exception as error:  # noqa: BLE001
        what = _describe(_leaves(error)[0])
        if not found:
            return [Failure("input", name, what)]
        label, data = found[-1]
        flaky = "Flaky" in type(error).__name__
        rerun = (f"\n\nIt failed after earlier inputs on the same mock GPU and may pass alone: run the "
                 f"round again with python -m tools.fuzz --seed {seed}") if flaky else ""
        script = (f'"""Reproducer from python -m tools.fuzz --seed {seed}: {what[:200]}{rerun}"""\n'
                  f"from tools import fuzz_inputs\n\n"
                  f"fuzz_inputs.check(fuzz_inputs.TARGETS[{name!r}], {label!r},\n"
                  f"                  {data!r})\n")
        return [Failure("input", name, what, _save(out, f"input-{name}", script))]
    return []


def run_fault_cases(faults: list[str], seed: int, out: pathlib.Path, result: Result) -> list[Failure]:
    """Every (fault, operation) case of tools.fault_matrix once with `seed`."""
    try:
        fault_matrix = importlib.import_module("tools.fault_matrix")
    except ImportError as exc:
        raise BackendUnavailable(f"--faults needs tools.fault_matrix, which is not installed here "
                                 f"({exc})") from exc
    names = list(fault_matrix.FAULTS) if faults == ["all"] else faults
    unknown = [name for name in names if name not in fault_matrix.FAULTS]
    if unknown:
        raise HalError(f"unknown faults {', '.join(unknown)}; known: {', '.join(fault_matrix.FAULTS)}")
    failures = []
    for fault in names:
        for operation in fault_matrix.OPERATIONS:
            outcome = fault_matrix.run_case(fault, operation, seed, FAULT_TIMEOUT_S)
            result.iterations += 1
            result.faults_injected += 1
            if not outcome.passed:
                script = (f'"""Reproducer from python -m tools.fuzz --faults {fault} --seed {seed}"""\n'
                          f"from tools import fault_matrix\n\n"
                          f"print(fault_matrix.run_case({fault!r}, {operation!r}, {seed}, "
                          f"{FAULT_TIMEOUT_S}).to_json())\n")
                failures.append(Failure("fault", f"{fault}/{operation}",
                                        json.dumps(outcome.to_json())[:500],
                                        _save(out, "fault", script)))
    return failures


def run(minutes: float, seed: int | None = None, *, faults: list[str] | None = None,
        targets: list[str] | None = None, out: str = DEFAULT_OUT, shrink_seconds: float = SHRINK_SECONDS,
        database: bool = True, state_examples: int | None = None, input_examples: int | None = None,
        progress=None, machine=None) -> Result:
    """Fuzz for `minutes` (at least one round runs); see the module docstring."""
    _require_hypothesis()
    state_examples = STATE_EXAMPLES if state_examples is None else state_examples
    input_examples = INPUT_EXAMPLES if input_examples is None else input_examples
    from tools import fuzz_inputs, fuzz_model

    seed = random.randrange(1 << 32) if seed is None else seed
    out_dir = pathlib.Path(out)
    db = out_dir / "hypothesis" if database else None
    names = list(fuzz_inputs.TARGETS) if not targets else targets
    unknown = [name for name in names if name not in fuzz_inputs.TARGETS]
    if unknown:
        raise HalError(f"unknown input targets {', '.join(unknown)}; known: "
                       f"{', '.join(fuzz_inputs.TARGETS)}")
    result = Result(seed=seed, minutes=minutes, out=str(out_dir))
    result.notes = [f"{t.name}: {t.note}" for t in fuzz_inputs.TARGETS.values() if t.note]
    if isinstance(machine, str):
        machine = state_machine(machine)  # --machine's name
    machine = machine or fuzz_model.DriverStateMachine
    say = progress or (lambda text: None)
    deadline = time.monotonic() + minutes * 60
    runs_before = machine.runs
    steps_before = machine.steps
    faults_before = machine.faults_injected
    inputs_before = {name: fuzz_inputs.TARGETS[name].runs for name in names}
    from hypothesis.reporting import with_reporter

    try:
        # hypothesis reports falsifying examples on stdout; stdout is the report's (--json)
        with shrink_limit(shrink_seconds), with_reporter(lambda text: print(text, file=sys.stderr)):
            while True:
                round_seed = (seed + result.rounds) % (1 << 32)
                if state_examples:
                    say(f"round {result.rounds + 1} (seed {round_seed}): state machine")
                    result.failures += run_state_machine(round_seed, state_examples, STATE_STEPS,
                                                         out_dir, db, machine)
                for name in names:
                    if time.monotonic() >= deadline and result.rounds:
                        break
                    say(f"round {result.rounds + 1}: inputs of {name}")
                    result.failures += run_input_target(name, round_seed, input_examples, out_dir, db)
                # a fresh mock GPU each round: fuzzed packets write all over its memory, and every
                # page they touch stays resident
                fuzz_inputs.MockSession.close()
                if faults:
                    say(f"round {result.rounds + 1}: fault matrix")
                    result.failures += run_fault_cases(faults, round_seed, out_dir, result)
                result.rounds += 1
                if time.monotonic() >= deadline:
                    break
    finally:
        fuzz_inputs.MockSession.close()
    result.steps = machine.steps - steps_before
    result.faults_injected += machine.faults_injected - faults_before
    result.targets = {name: fuzz_inputs.TARGETS[name].runs - inputs_before[name] for name in names}
    result.iterations += machine.runs - runs_before + sum(result.targets.values())
    return result


def state_machine(kind: str):
    """The state machine class `--machine kind` names (MACHINES)."""
    module, name = MACHINES[kind]
    return getattr(importlib.import_module(module), name)


def format_result(result: Result) -> str:
    lines = [f"seed {result.seed}, {result.rounds} rounds in {result.minutes} min: {result.iterations} "
             f"iterations ({result.steps} state machine steps, "
             f"{sum(result.targets.values())} inputs), {result.faults_injected} faults injected"]
    lines += [f"note: {note}" for note in result.notes]
    for failure in result.failures:
        lines.append(f"FAIL {failure.kind} {failure.target}: {failure.error}")
        if failure.reproducer:
            lines.append(f"     reproducer: {failure.reproducer}")
    lines.append("ok" if result.ok else f"{len(result.failures)} failures")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="time budget (default 1)")
    parser.add_argument("--seed", type=int, default=None, help="first round's seed (default random)")
    parser.add_argument("--faults", default=None,
                        help="comma list of tools.fault_matrix faults to inject, or 'all'")
    parser.add_argument("--targets", default=None, help="comma list of input targets (default all)")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help=f"reproducers and database (default {DEFAULT_OUT})")
    parser.add_argument("--shrink-seconds", type=float, default=SHRINK_SECONDS,
                        help=f"bound on shrinking one failure (default {SHRINK_SECONDS:g})")
    parser.add_argument("--no-database", action="store_true", help="keep no hypothesis database")
    parser.add_argument("--machine", choices=sorted(MACHINES), default="amd",
                        help="the state machine's mock GPU: amd (Navi31, default) or nv (H100)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("hypothesis").setLevel(logging.ERROR)
    started = time.monotonic()

    def progress(text: str) -> None:
        print(f"fuzz [{time.monotonic() - started:6.1f} s] {text}", file=sys.stderr)

    try:
        result = run(args.minutes, args.seed,
                     faults=args.faults.split(",") if args.faults else None,
                     targets=args.targets.split(",") if args.targets else None,
                     out=args.out, shrink_seconds=args.shrink_seconds,
                     database=not args.no_database, progress=progress,
                     machine=args.machine)
    except HalError as exc:
        if args.json:
            print(json.dumps({"ok": False, "error": str(exc)}))
        else:
            print(f"tools.fuzz: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_json(), indent=2) if args.json else format_result(result))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
