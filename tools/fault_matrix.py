"""`python -m tools.fault_matrix [--faults a,b] [--operations x,y] [--json] [--seed S] [--timeout S]`:
every fault of mockgpu.faults against every driver operation on the mock Navi31, each outcome
checked against the expected one in `EXPECTED` (the spec).

Operations (`OPERATIONS`), each on a fresh default mock machine, through compute.Device("mock:0")
(tools.mock_machines; the VFIO machine for iommu_fault, where an IOMMU is in the way):
- cold_boot: bring the GPU up from power-on (the fault armed first);
- warm_attach: a process brings it up and exits without teardown, the next one attaches warm;
- sdma_copy: random bytes into a VRAM buffer and back through the staging buffers (SDMA);
- kernel_launch: vector_add on the compute queue, the result against numpy;
- signal_wait: the compute queue waits for a signal the copy queue writes, then both finish;
- reset_recovery: a process exits leaving the GPU up; `tools.reset_gpu`'s ladder (as a function).

Each case runs in a worker thread under a watchdog. Outcomes: `ok`; `typed:<HalError subclass>`
(the driver raised a typed error); `untyped:<Exception>` (anything else: a driver bug);
`wrong_data` (finished, but the data read back is not what went in); `stray_write` (the machine
recorded a device DMA write outside the program's DMA memory or a CPU access past a BAR:
`Machine.stray_accesses`); `hang` (no end within 3 x the timeout plus the operation's own time
(`OPERATION_ALLOWANCE_S`): the watchdog then pulls the GPU off the bus so the worker ends with
DeviceLost, and is not waited for). The driver's timeouts (every AMConfig wait, the signal waits)
are `--timeout` seconds.

Then recovery, where hardware allows it: the fault is disarmed, the device is abandoned as a
crashed process leaves it, `tools.reset_gpu.reset_gpu` runs (ladder `auto`), and a fresh Device
must copy data through VRAM. A surprise removal must first stay lost (the reset ladder and a
bring-up fail with DeviceLost while the fault holds); disarming it is the hot plug, after which the
device must work. `recovered` is None where not tried (a hang).

`--json` prints a list of objects (`fault`, `operation`, `result`, `expected`, `seconds`,
`recovered`, `expected_recovered`, `passed`, `detail`); otherwise a table, fault rows by operation
columns, failed cells marked `!` with what was expected. Exit status 1 when any cell fails.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import multiprocessing
import pathlib
import random
import sys
import threading
import time
from typing import Callable

import numpy as np

from compute import device as compute_device
from compute.device import Device
from drivers.am.device import AMConfig
from hal.errors import BackendUnavailable, DeviceLost, HalError
from hal.pci.sysfs import VFIO_PCI_DRIVER, SysfsPCI
from mockgpu import GPU_AUDIO_BDF, GPU_BDF
from mockgpu.faults import FAULTS, FaultPlan, Trigger
from tools import mock_machines
from tools.mock_machines import MockNavi31
from tools.reset_gpu import reset_gpu

log = logging.getLogger(__name__)

OPERATIONS: tuple[str, ...] = ("cold_boot", "warm_attach", "sdma_copy", "kernel_launch", "signal_wait",
                               "reset_recovery")
DEFAULT_TIMEOUT_S = 0.5
DEFAULT_WORKERS = 3  # cases at once: they mostly sleep on timeouts, so more than the 2 cores CI has
HANG_FACTOR = 3  # a case that takes longer than this many timeouts (plus its own work) hangs
# the operations' own work on the mock with no fault (a few times what it takes on one idle core),
# added to the hang budget so a loaded CI machine does not turn a typed error into a hang
OPERATION_ALLOWANCE_S = {"cold_boot": 3.0, "warm_attach": 3.0, "sdma_copy": 1.0, "kernel_launch": 2.0,
                         "signal_wait": 1.0, "reset_recovery": 3.0}
ABANDON_JOIN_S = 5.0  # how long a hung worker gets to end once the GPU is pulled off the bus
# the mock's SMU resets the chip DEFAULT_MODE1_DELAY_S (5 ms) after taking Mode1Reset; amdgpu's
# pause (SMU13_MODE1_RESET_WAIT_TIME_IN_MS, 500 ms) would dominate the matrix's time
MOCK_MODE1_WAIT_S = 0.02
# slow_device's delay as a share of the timeout: each wait stays far inside it, and a cold boot's
# hundred-odd delayed answers stay inside the hang budget
SLOW_FRACTION = 0.02
SURPRISE_REMOVAL_WINDOW = 2000  # the MMIO access a bring-up's surprise removal comes at, below this
COPY_BYTES = 64 * 1024  # this tool's choice: several SDMA packets, one staging chunk
LAUNCH_ELEMENTS = 1000  # vector_add elements: four work-groups of 256, the last partial
PREBUILT = pathlib.Path(__file__).resolve().parents[1] / "compute" / "amd" / "kernels" / "prebuilt"
VECTOR_ADD = PREBUILT / "vector_add.co"

OK = "ok"
HANG = "hang"
WRONG_DATA = "wrong_data"
STRAY_WRITE = "stray_write"


def typed(name: str) -> str:
    return f"typed:{name}"


@dataclasses.dataclass(frozen=True)
class Expected:
    """What a cell must show: the result and, where recovery is tried, whether it works."""

    result: str
    recovered: bool | None = True


def _spec() -> dict[tuple[str, str], Expected]:
    """The fault matrix's spec: every (fault, operation) cell's expected outcome, with the reason."""
    spec: dict[tuple[str, str], Expected] = {}

    def row(fault: str, **cells: Expected) -> None:
        missing = set(OPERATIONS) - set(cells)
        if missing:
            raise AssertionError(f"{fault}: no expectation for {', '.join(sorted(missing))}")
        for operation, expected in cells.items():
            spec[(fault, operation)] = expected

    lost = Expected(typed("DeviceLost"), recovered=True)
    timeout = Expected(typed("DeviceTimeout"))
    ok = Expected(OK)
    # the GPU is gone: the first all-ones read is DeviceLost (hal's watched BARs, the driver's
    # polls); it stays lost until the hot plug, after which it works again
    row("surprise_removal", cold_boot=lost, warm_attach=lost, sdma_copy=lost, kernel_launch=lost,
        signal_wait=lost, reset_recovery=lost)
    # a firmware that never answers: bounded mailbox and fence waits; a running device does not
    # talk to the PSP or the SMU for copies and kernels
    row("mailbox_silent", cold_boot=timeout, warm_attach=timeout, sdma_copy=ok, kernel_launch=ok,
        signal_wait=ok, reset_recovery=ok)
    # error answers: the PSP's status and the SMU's response decoded into FirmwareError subclasses
    row("mailbox_error", cold_boot=Expected(typed("FirmwareError")), warm_attach=Expected(typed("SMUError")),
        sdma_copy=ok, kernel_launch=ok, signal_wait=ok, reset_recovery=ok)
    # an engine that stops fetching: bring-up's ring tests and every fence wait time out
    row("ring_stall", cold_boot=timeout, warm_attach=timeout, sdma_copy=timeout, kernel_launch=timeout,
        signal_wait=timeout, reset_recovery=ok)
    # every posted write lost: nothing the driver asks for happens; its polls time out
    # (the discovery table is read through the MM_INDEX/MM_DATA window past BAR0: with its index
    # writes lost the bytes are not the table, whose checksums fail: BadBinary, as amdgpu's
    # amdgpu_discovery_init fails on the signature)
    bad_table = Expected(typed("BadBinary"))
    row("dropped_writes", cold_boot=bad_table, warm_attach=bad_table, sdma_copy=timeout,
        kernel_launch=timeout, signal_wait=timeout, reset_recovery=ok)
    # the IOMMU aborts the engine's next DMA: SDMA reports it and stops on the packet (SDMAError);
    # the CP's or a wave's aborted host access reaches no interrupt the driver reads (the host's
    # IOMMU driver logs it), so the fence never comes: DeviceTimeout naming the queue's state.
    # Bring-up touches host memory only through the SDMA staging of later copies
    row("iommu_fault", cold_boot=ok, warm_attach=ok, sdma_copy=Expected(typed("SDMAError")),
        kernel_launch=timeout, signal_wait=timeout, reset_recovery=ok)
    # a walked access (the GART: staging buffers, kernargs, signals in host memory) finds no PTE:
    # the GMC's VM fault reaches the IH and the waiter raises it; bring-up walks nothing (VMID 0
    # reaches VRAM through the system aperture)
    vm = Expected(typed("VMFault"))
    row("vm_fault", cold_boot=ok, warm_attach=ok, sdma_copy=vm, kernel_launch=vm, signal_wait=vm,
        reset_recovery=ok)
    # an uncorrectable ECC error: the next wait or synchronize that reads the IH raises it (amdgpu
    # resets the GPU); bring-up and the reset ladder read no IH entries
    ras = Expected(typed("RASError"))
    row("ras_interrupt", cold_boot=ok, warm_attach=ok, sdma_copy=ras, kernel_launch=ras, signal_wait=ras,
        reset_recovery=ok)
    # the SOS refuses LOAD_IP_FW: FirmwareError naming the ucode and the status; nothing else
    # loads firmware
    row("firmware_rejected", cold_boot=Expected(typed("FirmwareError")), warm_attach=ok, sdma_copy=ok,
        kernel_launch=ok, signal_wait=ok, reset_recovery=ok)
    # slower than normal, within every timeout: everything works
    row("slow_device", cold_boot=ok, warm_attach=ok, sdma_copy=ok, kernel_launch=ok, signal_wait=ok,
        reset_recovery=ok)
    # slower than the timeouts: each wait gives up with DeviceTimeout
    row("slow_device_timeout", cold_boot=timeout, warm_attach=timeout, sdma_copy=timeout,
        kernel_launch=timeout, signal_wait=timeout, reset_recovery=ok)
    return spec


EXPECTED: dict[tuple[str, str], Expected] = _spec()


@dataclasses.dataclass
class Outcome:
    """One cell: what happened (`result`), what the spec expects, how long the operation ran,
    whether the device worked again after recovery, and what went on (`detail`)."""

    fault: str
    operation: str
    result: str
    expected: str
    seconds: float
    recovered: bool | None
    detail: str
    expected_recovered: bool | None = None

    @property
    def passed(self) -> bool:
        if self.result != self.expected:
            return False
        return self.expected_recovered is None or self.recovered == self.expected_recovered

    def to_json(self) -> dict:
        return {"fault": self.fault, "operation": self.operation, "result": self.result,
                "expected": self.expected, "seconds": round(self.seconds, 4),
                "recovered": self.recovered, "expected_recovered": self.expected_recovered,
                "passed": self.passed, "detail": self.detail}


class _WrongData(Exception):
    """The operation finished but read back something else than it wrote."""


class _Borrowed(MockNavi31):
    """The case's machine lent to compute.Device: closing a Device does not delete the firmware
    and lock directory the next Device on the same machine needs."""

    def close(self) -> None:
        pass


@contextlib.contextmanager
def _mock_factory(mock: MockNavi31):
    try:
        previous = compute_device.mock_factory()
    except BackendUnavailable:
        previous = None
    borrowed = _Borrowed(mock.machine, mock.device, mock.firmware_dir, mock.scratch)
    compute_device.register_mock_factory(lambda index: borrowed)
    try:
        yield
    finally:
        compute_device.register_mock_factory(previous)


def _config(firmware_dir: str, timeout_s: float) -> AMConfig:
    """Every bounded wait of the driver at `timeout_s`."""
    return AMConfig(firmware_dir=firmware_dir, ifwi_timeout_s=timeout_s, psp_mailbox_timeout_s=timeout_s,
                    psp_command_timeout_s=timeout_s, gmc_invalidate_timeout_s=timeout_s,
                    ih_timeout_s=timeout_s, sdma_timeout_s=timeout_s, smu_timeout_s=timeout_s,
                    smu_mode1_wait_s=MOCK_MODE1_WAIT_S, smu_mode1_ready_timeout_s=timeout_s,
                    gc_autoload_timeout_s=timeout_s, gc_timeout_s=timeout_s)


def _run_bounded(work: Callable[[], object], budget_s: float) -> tuple[str, object, BaseException | None]:
    """Run `work` in a worker thread: ("done", value, None), ("raised", None, exc) or
    ("hang", thread, None) when it is still running after `budget_s`."""
    box: dict[str, object] = {}

    def worker() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # classified by the caller
            box["error"] = exc

    thread = threading.Thread(target=worker, name="fault-matrix-case", daemon=True)
    thread.start()
    thread.join(budget_s)
    if thread.is_alive():
        return HANG, thread, None
    if "error" in box:
        return "raised", None, box["error"]  # type: ignore[return-value]
    return "done", box.get("value"), None


def _classify(error: BaseException | None) -> str:
    if error is None:
        return OK
    if isinstance(error, _WrongData):
        return WRONG_DATA
    if isinstance(error, HalError):
        return typed(type(error).__name__)
    return f"untyped:{type(error).__name__}"


class _Case:
    """One fault x operation on its own mock machine."""

    def __init__(self, fault: str, operation: str, seed: int, timeout_s: float,
                 watchdog_s: float | None = None) -> None:
        self.fault = fault
        self.operation = operation
        self.timeout_s = timeout_s
        if watchdog_s is None:
            watchdog_s = HANG_FACTOR * timeout_s + OPERATION_ALLOWANCE_S[operation]
        self.watchdog_s = watchdog_s
        self.rng = random.Random(f"{fault}/{operation}/{seed}")
        backend = "vfio" if fault == "iommu_fault" else "pci"
        self.mock = mock_machines.navi31(0, backend=backend)
        self.machine = self.mock.machine
        if backend == "vfio":
            # the reset ladder's bus reset through VFIO (hot) needs every function on the bus on
            # vfio-pci (drivers/vfio/pci/vfio_pci_core.c vfio_pci_dev_set_hot_reset)
            SysfsPCI(self.machine.os).rebind(GPU_AUDIO_BDF, VFIO_PCI_DRIVER)
        self.plan = FaultPlan(self.machine)
        self.config = _config(self.mock.firmware_dir, timeout_s)
        self.device: Device | None = None
        self.armed = None
        self.notes: list[str] = []

    # -- devices -----------------------------------------------------------------------------------
    def open(self) -> Device:
        with _mock_factory(self.mock):
            return Device("mock:0", timeout_s=self.timeout_s, config=self.config)

    @staticmethod
    def abandon(dev: Device | None) -> None:
        """What a process exit leaves: the hardware as it is, the boot layout's state as the
        driver left it, hal's handle (fds, DMA memory, lock) released by the kernel."""
        if dev is None or dev.closed:
            return
        dev.closed = True
        backend = dev.backend
        try:
            if backend.am.hw_done:
                backend.am.detach()
        except HalError as exc:
            log.info("detach at exit: %s", exc)
        finally:
            backend.am.hw_done = []
            backend.am.sw_done = []
            try:
                backend.pci.close()
            except HalError as exc:
                log.info("closing the handle: %s", exc)

    # -- operations (setup, then the operation under the watchdog) ---------------------------------
    def setup(self) -> Callable[[], None]:
        return getattr(self, f"_setup_{self.operation}")()

    def _setup_cold_boot(self) -> Callable[[], None]:
        def cold_boot() -> None:
            self.device = self.open()
        return cold_boot

    def _setup_warm_attach(self) -> Callable[[], None]:
        self.abandon(self.open())

        def warm_attach() -> None:
            self.device = self.open()
            self.notes.append(f"boot {self.device.backend.am.boot_kind}")
        return warm_attach

    def _setup_sdma_copy(self) -> Callable[[], None]:
        dev = self.device = self.open()
        buffer = dev.allocate(COPY_BYTES)
        data = self.rng.randbytes(COPY_BYTES)

        def sdma_copy() -> None:
            buffer.copyin(data)
            if buffer.copyout() != data:
                raise _WrongData("the bytes read back from VRAM differ from those written")
            dev.synchronize()
        return sdma_copy

    def _setup_kernel_launch(self) -> Callable[[], None]:
        dev = self.device = self.open()
        rng = np.random.default_rng(self.rng.getrandbits(32))
        x = rng.standard_normal(LAUNCH_ELEMENTS).astype(np.float32)
        y = rng.standard_normal(LAUNCH_ELEMENTS).astype(np.float32)
        a, b, c = (dev.allocate(4 * LAUNCH_ELEMENTS) for _ in range(3))
        a.copyin(x)
        b.copyin(y)
        program = dev.load(VECTOR_ADD, "vector_add_f32")
        dev.synchronize()

        def kernel_launch() -> None:
            program(a, b, c, LAUNCH_ELEMENTS, global_size=LAUNCH_ELEMENTS, local_size=256, wait=True)
            if not np.array_equal(np.frombuffer(c.copyout(), np.float32), x + y):
                raise _WrongData("vector_add's result differs from numpy's")
            dev.synchronize()
        return kernel_launch

    def _setup_signal_wait(self) -> Callable[[], None]:
        dev = self.device = self.open()
        signal = dev.new_signal("handoff")

        def signal_wait() -> None:
            dev.compute_queue.wait(signal, 1).signal(signal, 2)
            compute_value = dev.compute_queue.submit(ordered=False)
            dev.copy_queue.signal(signal, 1)
            dev.copy_queue.submit(ordered=False)
            signal.wait(2)
            dev.timeline.wait(compute_value)
            dev.synchronize()
        return signal_wait

    def _setup_reset_recovery(self) -> Callable[[], None]:
        self.abandon(self.open())

        def reset_recovery() -> None:
            self._reset()
        return reset_recovery

    def _reset(self) -> None:
        report = reset_gpu(self.machine.os, self.mock.device, unbind=True, timeout_s=self.timeout_s)
        steps = ", ".join(f"{step.method} {'ok' if step.ok else 'failed'}" for step in report.steps
                          if not step.refused)
        self.notes.append(f"reset_gpu: {steps or 'no step'}: {report.final}")
        if not report.ok:
            raise _report_error(report.final)

    # -- the fault ---------------------------------------------------------------------------------
    def arm(self) -> None:
        """Arm the fault at a moment fitting the operation (the seed picks mid-boot moments)."""
        fault, operation, timeout = self.fault, self.operation, self.timeout_s
        options: dict = {}
        trigger = Trigger.now()
        if fault == "surprise_removal" and operation in ("cold_boot", "warm_attach"):
            # both make some 5000-6000 register and doorbell accesses on the mock
            trigger = Trigger.after_mmio(self.rng.randrange(1, SURPRISE_REMOVAL_WINDOW))
        elif fault == "ras_interrupt" and operation in ("cold_boot", "warm_attach"):
            trigger = Trigger.after_doorbells(1)  # once the IH ring is on
        elif fault == "slow_device":
            options["delay_s"] = timeout * SLOW_FRACTION
        elif fault == "slow_device_timeout":
            options["delay_s"] = timeout * 10
        self.armed = self.plan.arm(fault, trigger, **options)

    # -- recovery ----------------------------------------------------------------------------------
    def recover(self) -> tuple[bool, str]:
        """Disarm, abandon, reset, bring up, copy. For a surprise removal, first check that the
        device stays lost while the fault holds."""
        if self.fault == "surprise_removal":
            self.abandon(self.device)
            self.device = None
            state, _, error = _run_bounded(self._bring_back, self._recovery_budget())
            if state != "raised" or not isinstance(error, DeviceLost):
                return False, f"while removed: {state} {_classify(error)} (expected DeviceLost)"
            self.notes.append("stays DeviceLost until the hot plug")
        self.plan.clear()
        self.abandon(self.device)
        self.device = None
        state, _, error = _run_bounded(self._bring_back, self._recovery_budget())
        if state == HANG:
            self._pull_plug()
            return False, "recovery hung"
        if error is not None:
            return False, f"recovery failed: {_classify(error)}: {error}"
        return True, "recovered"

    def _bring_back(self) -> None:
        self._reset()
        dev = self.open()
        try:
            buffer = dev.allocate(4096)
            data = self.rng.randbytes(4096)
            buffer.copyin(data)
            if buffer.copyout() != data:
                raise _WrongData("after recovery the bytes read back differ")
        finally:
            dev.close()

    def _recovery_budget(self) -> float:
        return HANG_FACTOR * self.timeout_s + OPERATION_ALLOWANCE_S["cold_boot"] * 2

    def _pull_plug(self) -> None:
        """Stop a hung worker: with the GPU off the bus its next register read is DeviceLost."""
        self.machine.surprise_remove(GPU_BDF)

    def close(self) -> None:
        self.plan.clear()
        self.abandon(self.device)
        self.device = None
        self.mock.close()

    # -- the case ----------------------------------------------------------------------------------
    def run(self) -> Outcome:
        expected = EXPECTED[(self.fault, self.operation)]
        outcome = Outcome(self.fault, self.operation, "", expected.result, 0.0, None, "",
                          expected.recovered)
        state, operation, error = _run_bounded(self.setup, OPERATION_ALLOWANCE_S[self.operation] * 4)
        if state != "done":
            outcome.result = f"setup {HANG if state == HANG else _classify(error)}"
            outcome.detail = f"the operation's set-up (no fault armed) failed: {error}"
            if state == HANG:
                self._pull_plug()
            return outcome
        stray_before = len(self.machine.stray_accesses)
        self.arm()
        budget = self.watchdog_s
        start = time.monotonic()
        state, worker, error = _run_bounded(operation, budget)  # type: ignore[arg-type]
        outcome.seconds = time.monotonic() - start
        strays = self.machine.stray_accesses[stray_before:]
        if state == HANG:
            outcome.result = HANG
            self._pull_plug()
            worker.join(ABANDON_JOIN_S)  # type: ignore[union-attr]
            outcome.detail = f"no end within {budget:.2f} s; the GPU was pulled off the bus to stop it"
            return outcome
        outcome.result = STRAY_WRITE if strays else _classify(error)
        details = [str(error)] if error is not None else []
        if not self.armed.fired:
            details.append(f"the fault never fired ({self.armed.trigger.describe()})")
        details += [f"stray {access.kind} at {access.address:#x}: {access.reason}" for access in strays]
        if expected.recovered is not None:
            outcome.recovered, how = self.recover()
            details.append(how)
        outcome.detail = "; ".join(details + self.notes)
        return outcome


def _report_error(final: str) -> HalError:
    """The typed error `reset_gpu`'s report names in `final` ("DeviceLost: ...")."""
    import hal.errors as errors

    name, _, message = final.partition(": ")
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, HalError):
        return cls(message)
    return HalError(final)


def run_case(fault: str, operation: str, seed: int = 0, timeout_s: float = DEFAULT_TIMEOUT_S, *,
             watchdog_s: float | None = None) -> Outcome:
    """Run one cell of the matrix (see the module docstring). `watchdog_s` replaces the hang budget
    (3 x `timeout_s` plus the operation's allowance)."""
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r} (faults: {', '.join(FAULTS)})")
    if operation not in OPERATIONS:
        raise ValueError(f"unknown operation {operation!r} (operations: {', '.join(OPERATIONS)})")
    case = _Case(fault, operation, seed, timeout_s, watchdog_s)
    try:
        return case.run()
    finally:
        case.close()


def _worker_init(level: int) -> None:
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)


def run_matrix(faults=None, operations=None, seed: int = 0, timeout_s: float = DEFAULT_TIMEOUT_S,
               progress: Callable[[Outcome], None] | None = None, *,
               workers: int = DEFAULT_WORKERS) -> list[Outcome]:
    """Every fault x operation (or the ones named), in matrix order; `progress(outcome)` as each
    ends. Cases run in `workers` processes at once (each case mostly waits on timeouts, and a
    process of its own keeps a hung case's worker thread away from the others); 1: in this one."""
    cells = [(fault, operation) for fault in faults or FAULTS for operation in operations or OPERATIONS]
    if workers <= 1 or len(cells) <= 1:
        outcomes = []
        for fault, operation in cells:
            outcome = run_case(fault, operation, seed, timeout_s)
            outcomes.append(outcome)
            if progress is not None:
                progress(outcome)
        return outcomes
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads running
    results: dict[tuple[str, str], Outcome] = {}
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                                                initargs=(logging.getLogger().level,)) as pool:
        futures = {pool.submit(run_case, fault, operation, seed, timeout_s): (fault, operation)
                   for fault, operation in cells}
        for future in concurrent.futures.as_completed(futures):
            outcome = future.result()
            results[futures[future]] = outcome
            if progress is not None:
                progress(outcome)
    return [results[cell] for cell in cells]


def table(outcomes: list[Outcome]) -> str:
    """Fault rows by operation columns; a failed cell is `! result (want expected)`."""
    faults = list(dict.fromkeys(outcome.fault for outcome in outcomes))
    operations = list(dict.fromkeys(outcome.operation for outcome in outcomes))
    cells = {(o.fault, o.operation): o for o in outcomes}

    def text(outcome: Outcome | None) -> str:
        if outcome is None:
            return "-"
        recovered = {True: "", False: " norecover", None: ""}[outcome.recovered]
        cell = outcome.result.removeprefix("typed:") + recovered
        if outcome.passed:
            return cell
        want = outcome.expected.removeprefix("typed:")
        if outcome.expected_recovered and not outcome.recovered:
            want += " +recover"
        return f"! {cell} (want {want})"

    rows = [["fault", *operations]]
    rows += [[fault, *(text(cells.get((fault, op))) for op in operations)] for fault in faults]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    failed = sum(not o.passed for o in outcomes)
    lines.append(f"{len(outcomes) - failed} of {len(outcomes)} cells as expected")
    return "\n".join(lines)


def _names(text: str | None, known: tuple[str, ...], what: str) -> list[str] | None:
    if not text:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.fault_matrix",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--faults", metavar="LIST", help=f"comma-separated, of: {', '.join(FAULTS)}")
    parser.add_argument("--operations", metavar="LIST", help=f"comma-separated, of: {', '.join(OPERATIONS)}")
    parser.add_argument("--seed", type=int, default=0, help="picks the data and the mid-boot fault moments")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                        help="every driver wait's bound (default %(default)s)")
    parser.add_argument("--json", action="store_true",
                        help='print a JSON list: {"fault", "operation", "result", "expected", "seconds", '
                             '"recovered", "expected_recovered", "passed", "detail"} per cell')
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, metavar="N",
                        help="cases run at once, each in a process of its own (default %(default)s; "
                             "1: one after another in this process)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the driver and the mock do")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL,
                        format="%(levelname)s %(name)s: %(message)s")
    faults = _names(args.faults, FAULTS, "faults")
    operations = _names(args.operations, OPERATIONS, "operations")

    def progress(outcome: Outcome) -> None:
        if not args.json:
            mark = "" if outcome.passed else "  <- FAILED"
            print(f"{outcome.fault} x {outcome.operation}: {outcome.result} ({outcome.seconds:.2f} s)"
                  f"{mark}", file=sys.stderr)

    outcomes = run_matrix(faults, operations, args.seed, args.timeout, progress, workers=args.workers)
    if args.json:
        print(json.dumps([outcome.to_json() for outcome in outcomes], indent=1))
    else:
        print(table(outcomes))
    return 0 if all(outcome.passed for outcome in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
