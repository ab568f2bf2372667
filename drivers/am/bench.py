"""The `boot` benchmark (`python -m tools.bench boot`): cold and warm bring-up of a mock Navi31.

Each round builds a fresh mock machine, opens the GPU through hal and brings every block of
`BLOCK_ORDER` up (a cold boot); then, where the driver attaches warm (`AMDevice.boot_kind`), the
owner lets go as a process exit does (`detach`, the PCIDevice closed without teardown) and a second
`AMDevice` attaches. Wall times are the median of the unprofiled rounds.

The driver's own Python time is told apart from the model's with one profiled round (cProfile):
each function's own time goes to the driver when its code lives in drivers/ or hal/, to the model
when it lives in mockgpu/, and otherwise (standard library, generated bindings, builtins) to its
callers in proportion to the time each caller spent in it, up the call graph. The shares found
that way split the unprofiled wall time (profiling slows both sides alike, roughly).

The mock machine comes from the caller (`mock_gpu_factory`), because drivers never import the mock:
tools.bench builds it. Figures only; the targets are printed beside them, nothing is asserted.
"""
from __future__ import annotations

import cProfile
import dataclasses
import logging
import pathlib
import pstats
import statistics
import time
from typing import Callable, Protocol

import hal
from drivers.am.device import AMConfig, AMDevice
from hal.errors import InvalidArgument

log = logging.getLogger(__name__)

NAME = "boot"
# the AM driver's bring-up targets (docs/am.md, "Boot benchmark")
COLD_DRIVER_TARGET_S = 0.5
WARM_DRIVER_TARGET_S = 0.05
COLD_TOTAL_TARGET_S = 5.0
DEFAULT_ROUNDS = 3

_PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[2]
_DRIVER_DIRS = (str(_PROJECT_ROOT / "drivers") + "/", str(_PROJECT_ROOT / "hal") + "/")
_MODEL_DIRS = (str(_PROJECT_ROOT / "mockgpu") + "/",)
DRIVER = "driver"
MODEL = "model"
OTHER = "other"


class MockGPU(Protocol):
    """One fresh mock machine with a Navi31: its OS seam, the GPU's device string, and a firmware
    root holding a set the model accepts."""

    seam: object
    device: str
    firmware_dir: str


# -- time attribution -------------------------------------------------------------------------------
def _category(filename: str) -> str | None:
    path = str(pathlib.Path(filename).resolve()) if filename.startswith("/") else filename
    if path.startswith(_DRIVER_DIRS):
        return DRIVER
    if path.startswith(_MODEL_DIRS):
        return MODEL
    return None


def attribute(profile: cProfile.Profile) -> dict[str, float]:
    """Seconds of own time per side (driver, model, other) in `profile` (see the module docstring)."""
    stats = pstats.Stats(profile).stats
    shares: dict[tuple, dict[str, float]] = {}
    categories = {key: _category(key[0]) for key in stats}

    def share_of(key: tuple) -> dict[str, float]:
        known = shares.get(key)
        if known is not None:
            return known
        category = categories.get(key)
        if category is not None:
            shares[key] = {category: 1.0}
            return shares[key]
        shares[key] = {OTHER: 1.0}  # a cycle back to this function counts as other
        callers = stats[key][4] if key in stats else {}
        weights = {caller: edge[2] for caller, edge in callers.items()}
        total = sum(weights.values())
        if total <= 0:
            weights = {caller: edge[1] for caller, edge in callers.items()}  # by call count
            total = sum(weights.values())
        if total <= 0:
            return shares[key]
        result: dict[str, float] = {}
        for caller, weight in weights.items():
            for side, fraction in share_of(caller).items():
                result[side] = result.get(side, 0.0) + fraction * weight / total
        shares[key] = result
        return result

    seconds = {DRIVER: 0.0, MODEL: 0.0, OTHER: 0.0}
    for key, (_, _, own_time, _, _) in stats.items():
        for side, fraction in share_of(key).items():
            seconds[side] += own_time * fraction
    return seconds


# -- one round --------------------------------------------------------------------------------------
@dataclasses.dataclass
class Round:
    machine_s: float = 0.0
    cold_s: float = 0.0
    warm_s: float | None = None
    cold_sides: dict[str, float] | None = None
    warm_sides: dict[str, float] | None = None
    warm_refusal: str = ""


def _timed(action: Callable[[], object], profile: bool) -> tuple[object, float, dict | None]:
    profiler = cProfile.Profile() if profile else None
    start = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    try:
        result = action()
    finally:
        if profiler is not None:
            profiler.disable()
    elapsed = time.perf_counter() - start
    return result, elapsed, attribute(profiler) if profiler is not None else None


def _bring_up(target: MockGPU):
    pci = hal.open(target.device, os=target.seam, unbind=True)
    try:
        return pci, AMDevice(pci, config=AMConfig(firmware_dir=target.firmware_dir))
    except BaseException:
        pci.close()
        raise


def one_round(factory: Callable[[], MockGPU], profile: bool = False) -> Round:
    sample = Round()
    target, sample.machine_s, _ = _timed(factory, False)
    (pci, device), sample.cold_s, sample.cold_sides = _timed(lambda: _bring_up(target), profile)
    if not hasattr(device, "boot_kind") or not hasattr(device, "detach"):
        sample.warm_refusal = "this driver has no warm attach (AMDevice.boot_kind / detach)"
        device.fini()
        pci.close()
        return sample
    device.detach()  # the owner lets go as a process exit does: no teardown
    pci.close()
    (pci, device), warm_s, warm_sides = _timed(lambda: _bring_up(target), profile)
    try:
        if device.boot_kind == "warm":
            sample.warm_s, sample.warm_sides = warm_s, warm_sides
        else:
            sample.warm_refusal = f"the second bring-up was {device.boot_kind}: {device.boot_reason}"
    finally:
        device.fini()
        pci.close()
    return sample


# -- the benchmark ------------------------------------------------------------------------------------
def _split(wall: float, sides: dict[str, float]) -> tuple[float, float]:
    """(driver, model) seconds of `wall` by the profiled shares; other time goes with neither."""
    total = sum(sides.values())
    if total <= 0:
        return 0.0, 0.0
    return wall * sides[DRIVER] / total, wall * sides[MODEL] / total


def run(mock_gpu_factory: Callable[[], MockGPU] | None = None,
        rounds: int = DEFAULT_ROUNDS) -> dict[str, float]:
    if mock_gpu_factory is None:
        raise InvalidArgument("the boot benchmark brings up a mock Navi31 that its caller builds: "
                              "run it as `python -m tools.bench boot`")
    if rounds < 1:
        raise InvalidArgument(f"rounds {rounds} must be at least 1")
    profiled = one_round(mock_gpu_factory, profile=True)
    timed = [one_round(mock_gpu_factory) for _ in range(rounds)]
    machine_s = statistics.median(sample.machine_s for sample in timed)
    cold_s = statistics.median(sample.cold_s for sample in timed)
    cold_driver_s, cold_model_s = _split(cold_s, profiled.cold_sides)
    figures: dict[str, float] = {
        "rounds": rounds,
        "cold_total_s": round(machine_s + cold_s, 4),
        "cold_total_target_s": COLD_TOTAL_TARGET_S,
        "cold_machine_s": round(machine_s, 4),
        "cold_bringup_s": round(cold_s, 4),
        "cold_driver_s": round(cold_driver_s, 4),
        "cold_driver_target_s": COLD_DRIVER_TARGET_S,
        "cold_model_s": round(cold_model_s, 4),
        "cold_profiled_driver_s": round(profiled.cold_sides[DRIVER], 4),
        "cold_profiled_model_s": round(profiled.cold_sides[MODEL], 4),
    }
    warm = [sample.warm_s for sample in timed if sample.warm_s is not None]
    if warm and profiled.warm_sides is not None and len(warm) == len(timed):
        warm_s = statistics.median(warm)
        warm_driver_s, warm_model_s = _split(warm_s, profiled.warm_sides)
        figures.update({"warm_available": 1, "warm_bringup_s": round(warm_s, 4),
                        "warm_driver_s": round(warm_driver_s, 4),
                        "warm_driver_target_s": WARM_DRIVER_TARGET_S,
                        "warm_model_s": round(warm_model_s, 4)})
    else:
        figures["warm_available"] = 0
        refusal = next((s.warm_refusal for s in [profiled, *timed] if s.warm_refusal), "")
        log.warning("boot benchmark: warm: not available: %s", refusal or "a round did not attach warm")
    return figures
