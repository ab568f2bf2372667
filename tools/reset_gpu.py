"""`python -m tools.reset_gpu [DEVICE] [--mock] [--method auto|flr|sbr|hot|mode1] [--dry-run] [--unbind]
[--json] [--timeout SECONDS]`: reset a GPU by an escalating ladder and report what was done.

The ladder (`--method auto`) tries, in order, until one step leaves the device ready:
- flr: a Function Level Reset, when PCIe Device Capabilities advertise it and QUIRKS do not forbid it;
- sbr: a secondary bus reset through the upstream bridge (the kernel's `reset_subordinate` where the
  bridge has it, else Bridge Control). It resets every function on that bus, so each other function
  there is locked, its kernel driver detached, its config saved; afterwards each is waited for, its
  config restored and its driver bound again. Only through the sysfs backend;
- hot: VFIO_DEVICE_PCI_HOT_RESET (hal's "hot"): the same bus reset done by vfio-pci, which must own
  every function on the bus; only through the vfio backend;
- mode1: the vendor's own whole-chip reset from VENDOR_RESETS (AMD Navi31: AM mode1 through the SMU).
`--method` names one step instead. After each step the device must be ready: the backend's presence
register answers (not all ones, not the 0x0001 of Configuration Request Retry Status), the IDs read
back as before, and the upstream port's link is trained (Link Training clear; Data Link Layer Link
Active set where the port reports it). Every wait is bounded by `--timeout`.

A device a kernel driver owns is refused unless `--unbind`, which detaches the driver for the reset
and hands the device back afterwards. `--dry-run` says what each step would do or why it is refused
and changes nothing. `--json` prints one object: `device`, `steps` (each `method`, `ok`, `seconds`,
`detail`, `refused`), `final` ("ok" or the error), `dry_run` and `state` (the device after).
`--mock` resets the mock machine's Navi31 in the state a user-space driver leaves when its process
ends: no kernel driver on the GPU, the PSP's SOS and the SMU firmware (PMFW) running, so the mode1
step has an SMU to take its request.
"""
from __future__ import annotations

import argparse
import json
import logging
import os as host_environment
import sys
from dataclasses import dataclass, field
from typing import Callable

from autogen.linux import pci_regs as regs

import hal
from hal import config
from hal import reset as reset_ops
from hal.errors import (DeviceBusy, DeviceLost, DeviceTimeout, HalError, InvalidArgument,
                        UnsupportedOperation)
from hal.lock import OwnershipLock
from hal.os import OS, host
from hal.pci import backend as pci_backend
from hal.pci.backend import SysfsConfig
from hal.pci.sysfs import VFIO_PCI_DRIVER, SysfsPCI, normalize_bdf
from hal.pcidev import PCIDevice

log = logging.getLogger(__name__)

METHODS = ("flr", "sbr", "hot", "mode1")
AUTO = "auto"
SBR = "sbr"
HAL_METHOD = {"flr": "flr", "hot": "hot"}  # ladder steps that hal's PCIDevice.reset performs whole
# drivers/pci/pci-sysfs.c reset_subordinate_store (Linux 6.12): writing 1 to a bridge's attribute
# resets its secondary bus with the kernel's pci_reset_bus (every function saved and restored)
RESET_SUBORDINATE = "reset_subordinate"
LINK_POLL_S = 0.001  # pause between Link Status reads while the upstream link trains
DEVICE_ID_MASK = 0xFFFF

PCI_VENDOR_AMD = 0x1002  # include/linux/pci_ids.h PCI_VENDOR_ID_ATI (AMD's GPU functions use it)
PCI_VENDOR_AMD_CHIPSET = 0x1022  # include/linux/pci_ids.h PCI_VENDOR_ID_AMD
PCI_VENDOR_NVIDIA = 0x10DE  # include/linux/pci_ids.h PCI_VENDOR_ID_NVIDIA
NAVI31_DEVICE_ID = 0x744C  # pci.ids: Navi 31 [Radeon RX 7900 XT/7900 XTX]


@dataclass(frozen=True)
class Quirk:
    """A device whose reset needs care: `no_flr` (FLR hangs it), `no_bus_reset` (a secondary bus reset
    of its bus, or below it when it is a bridge, breaks it). Matches vendor and (device & mask)."""

    vendor: int
    device: int
    citation: str
    mask: int = DEVICE_ID_MASK
    no_flr: bool = False
    no_bus_reset: bool = False

    def matches(self, vendor: int, device: int) -> bool:
        return vendor == self.vendor and device & self.mask == self.device


QUIRKS: tuple[Quirk, ...] = (
    Quirk(PCI_VENDOR_AMD_CHIPSET, 0x1487, "drivers/pci/quirks.c quirk_no_flr: AMD Starship/Matisse HD "
          "Audio: FLR may hang it", no_flr=True),
    Quirk(PCI_VENDOR_AMD_CHIPSET, 0x148C, "drivers/pci/quirks.c quirk_no_flr: AMD Starship USB 3.0: "
          "FLR may hang it", no_flr=True),
    Quirk(PCI_VENDOR_AMD_CHIPSET, 0x149C, "drivers/pci/quirks.c quirk_no_flr: AMD Matisse USB 3.0: "
          "FLR may hang it", no_flr=True),
    Quirk(PCI_VENDOR_AMD_CHIPSET, 0x7901, "drivers/pci/quirks.c quirk_no_flr: FLR may hang it",
          no_flr=True),
    Quirk(PCI_VENDOR_NVIDIA, 0x2340, "drivers/pci/quirks.c quirk_nvidia_no_bus_reset: NVIDIA GPUs "
          "with (device & 0xffc0) == 0x2340 do not work after a bus reset", mask=0xFFC0,
          no_bus_reset=True),
    Quirk(PCI_VENDOR_NVIDIA, 0x22CE, "drivers/pci/quirks.c quirk_no_bus_reset: after a bus reset "
          "below an NVIDIA GB10 root port the link may not retrain", no_bus_reset=True),
    Quirk(PCI_VENDOR_NVIDIA, 0x22D0, "drivers/pci/quirks.c quirk_no_bus_reset: after a bus reset "
          "below an NVIDIA GB10 root port the link may not retrain", no_bus_reset=True),
    # not in Linux 6.12's quirks.c: public reports (2025) of GB202 boards (RTX 5090, RTX PRO 6000)
    # that stop answering after an FLR under VFIO, while a bus reset recovers them
    Quirk(PCI_VENDOR_NVIDIA, 0x2B85, "GB202 (RTX 5090): reported to hang after FLR; use a bus reset",
          no_flr=True),
    Quirk(PCI_VENDOR_NVIDIA, 0x2B87, "GB202: reported to hang after FLR; use a bus reset", no_flr=True),
    Quirk(PCI_VENDOR_NVIDIA, 0x2B8C, "GB202: reported to hang after FLR; use a bus reset", no_flr=True),
)


def quirks_for(vendor: int, device: int) -> list[Quirk]:
    return [quirk for quirk in QUIRKS if quirk.matches(vendor, device)]


# -- vendor resets ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VendorReset:
    """A vendor's whole-chip reset: `available()` says why it cannot run (None: it can),
    `perform(device, timeout_s)` resets the opened device and returns what it did."""

    name: str
    available: Callable[[], str | None]
    perform: Callable[[PCIDevice, float], str]


VENDOR_RESETS: dict[tuple[int, int], VendorReset] = {}


def register_vendor_reset(vendor: int, device: int, reset: VendorReset) -> None:
    VENDOR_RESETS[(vendor, device)] = reset


def _am_mode1_available() -> str | None:
    try:
        from drivers.am import reset as am_reset
    except ImportError as exc:
        return f"the AM driver has no reset module in this tree (drivers.am.reset: {exc})"
    if not hasattr(am_reset, "mode1_reset_pci"):
        return "drivers.am.reset lacks mode1_reset_pci"
    return None


def _am_mode1(device: PCIDevice, timeout_s: float) -> str:
    """drivers.am.reset's mode1 (bus mastering off, Mode1Reset through the SMU, readiness through
    hal, config restored, memory size and IFWI done polled, boot layout flags cleared)."""
    from drivers.am import reset as am_reset

    am_reset.mode1_reset_pci(device, timeout_s=timeout_s)
    return "Mode1Reset taken by the SMU, the memory-size register answers and the IFWI reports done"


register_vendor_reset(PCI_VENDOR_AMD, NAVI31_DEVICE_ID,
                      VendorReset("AM mode1 through the SMU mailbox", _am_mode1_available, _am_mode1))


# -- report -------------------------------------------------------------------------------------------
@dataclass
class Step:
    """One rung of the ladder: done (`ok`), failed, or `refused` with the reason in `detail`."""

    method: str
    ok: bool
    seconds: float
    detail: str
    refused: bool = False

    def as_json(self) -> dict:
        return {"method": self.method, "ok": self.ok, "seconds": round(self.seconds, 6),
                "detail": self.detail, "refused": self.refused}


@dataclass
class Report:
    device: str
    steps: list[Step] = field(default_factory=list)
    final: str = "ok"
    dry_run: bool = False
    state: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.final == "ok"

    def as_json(self) -> dict:
        return {"device": self.device, "steps": [step.as_json() for step in self.steps],
                "final": self.final, "dry_run": self.dry_run, "state": self.state}

    def as_text(self) -> str:
        verb = "would reset" if self.dry_run else "reset"
        lines = [f"reset_gpu: {verb} {self.device}"]
        width = max((len(step.method) for step in self.steps), default=0)
        for step in self.steps:
            if step.refused:
                outcome = "refused"
            elif self.dry_run:
                outcome = "would"
            else:
                outcome = "ok" if step.ok else "failed"
            lines.append(f"  {step.method:<{width}}  {outcome:<7}  {step.seconds:7.3f} s  {step.detail}")
        lines.append(f"final: {self.final}")
        for key, value in self.state.items():
            lines.append(f"  {key}: {value}")
        return "\n".join(lines)


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# -- the ladder ---------------------------------------------------------------------------------------
@dataclass
class Target:
    """What the ladder knows of the device: where it is and what surrounds it on its bus."""

    os: OS
    bdf: str
    backend: str
    vendor: int
    device_id: int
    bridge: str | None
    siblings: list[str]
    lock_dir: str | None = None

    @property
    def sysfs(self) -> SysfsPCI:
        return SysfsPCI(self.os)

    @property
    def device_string(self) -> str:
        return f"{self.backend}:{self.bdf}"


def _bus_of(bdf: str) -> str:
    return bdf.rsplit(":", 1)[0]


def _read_only_config(target_os: OS, bdf: str) -> tuple[config.RawConfigAccess, SysfsConfig]:
    """Config reads through sysfs that change nothing (for --dry-run and for the upstream bridge)."""
    config_file = SysfsConfig(target_os, bdf, writable=False)
    return config.RawConfigAccess(config_file.read), config_file


def _ids(sysfs: SysfsPCI, bdf: str) -> tuple[int, int]:
    return sysfs.read_hex(bdf, "vendor"), sysfs.read_hex(bdf, "device")


def _bus_reset_quirk(target: Target) -> str | None:
    """The quirk that forbids a bus reset of the target's bus (Linux pci_bus_resettable: the bridge
    or any function on the bus carries PCI_DEV_FLAGS_NO_BUS_RESET), or None."""
    sysfs = target.sysfs
    for bdf in [target.bdf, *target.siblings, *([target.bridge] if target.bridge else [])]:
        for quirk in quirks_for(*_ids(sysfs, bdf)):
            if quirk.no_bus_reset:
                return f"{bdf} is quirked against bus resets ({quirk.citation})"
    return None


def flr_refusal(target: Target, cfg) -> str | None:
    for quirk in quirks_for(target.vendor, target.device_id):
        if quirk.no_flr:
            return f"quirked: {quirk.citation}"
    pcie = config.find_capability(cfg, regs.PCI_CAP_ID_EXP)
    if pcie is None:
        return f"{target.bdf} has no PCI Express capability, so no FLR"
    if not cfg.cfg_read32(pcie + regs.PCI_EXP_DEVCAP) & regs.PCI_EXP_DEVCAP_FLR:
        return f"{target.bdf} does not advertise FLR in PCIe Device Capabilities"
    return None


def sbr_refusal(target: Target, cfg) -> str | None:
    if target.backend != "pci":
        return (f"vfio-pci owns {target.bdf}; a bus reset behind it would lose its saved state: "
                "the 'hot' step is the bus reset through VFIO")
    if target.bridge is None:
        return f"{target.bdf} sits on a root bus; no bridge can reset it"
    header_type = cfg.cfg_read8(regs.PCI_HEADER_TYPE) & regs.PCI_HEADER_TYPE_MASK
    if header_type == regs.PCI_HEADER_TYPE_BRIDGE:
        return f"{target.bdf} is a bridge; a bus reset would reset everything below it"
    quirk = _bus_reset_quirk(target)
    if quirk is not None:
        return quirk
    sysfs = target.sysfs
    for sibling in target.siblings:
        if sysfs.header_type(sibling) & regs.PCI_HEADER_TYPE_MASK == regs.PCI_HEADER_TYPE_BRIDGE:
            return f"{sibling} on the same bus is a bridge; a bus reset would reset everything below it"
        if sysfs.driver(sibling) == VFIO_PCI_DRIVER:
            return (f"{sibling} on the same bus is bound to vfio-pci, whose user would be reset behind "
                    f"its back; hand it back (python -m tools.bind {sibling} --kernel) or reset "
                    "through vfio ('hot')")
    if not target.siblings:
        return None  # hal's "bus" reset decides, with the kernel's hot-plug safe path where offered
    bridge_cfg, bridge_file = _read_only_config(target.os, target.bridge)
    try:
        hot_plug = config.hot_plug_capable(bridge_cfg)
    finally:
        bridge_file.close()
    if hot_plug:
        # the kernel masks hot-plug events only in its per-slot reset (pciehp_reset_slot), which it
        # offers for a function alone on the slot; neither a raw reset nor reset_subordinate
        # (drivers/pci/pci.c __pci_reset_bus) keeps pciehp from removing the devices
        return (f"{target.bridge} above {target.bdf} is a hot-plug capable port and {target.bdf} shares "
                f"its bus with {', '.join(target.siblings)}: a bus reset there makes the hot-plug "
                "driver remove the devices")
    return None


def hot_refusal(target: Target, device: PCIDevice | None) -> str | None:
    if target.backend != "vfio":
        return (f"a VFIO hot reset needs {target.bdf} opened through vfio (vfio:{target.bdf}); move it "
                f"and its IOMMU group with python -m tools.bind {target.bdf} --vfio")
    if device is not None:
        return device.backend.reset_refusal("hot")
    sysfs = target.sysfs
    others = [bdf for bdf in target.siblings if sysfs.driver(bdf) != VFIO_PCI_DRIVER]
    if others:
        return f"{', '.join(others)} on the same bus are not bound to vfio-pci"
    return None


def mode1_refusal(target: Target) -> str | None:
    reset = VENDOR_RESETS.get((target.vendor, target.device_id))
    if reset is None:
        return f"no vendor reset is known for {target.vendor:04x}:{target.device_id:04x}"
    return reset.available()


def refusal(target: Target, method: str, cfg, device: PCIDevice | None) -> str | None:
    if method == "flr":
        return flr_refusal(target, cfg)
    if method == SBR:
        return sbr_refusal(target, cfg)
    if method == "hot":
        return hot_refusal(target, device)
    return mode1_refusal(target)


def would_do(target: Target, method: str) -> str:
    if method == "flr":
        return f"FLR of {target.bdf} through PCIe Device Control, config saved and restored"
    if method == SBR and not target.siblings:
        return f"secondary bus reset of {target.bdf}, alone on its bus (hal's 'bus' reset)"
    if method == SBR:
        how = (f"{RESET_SUBORDINATE} of {target.bridge}"
               if target.os.exists(target.sysfs.device_path(target.bridge, RESET_SUBORDINATE))
               else f"Bridge Control of {target.bridge}")
        held = []
        for sibling in target.siblings:
            driver = target.sysfs.driver(sibling)
            held.append(f"{sibling} (driver {driver}: detached, then bound again)" if driver
                        else f"{sibling} (no driver)")
        also = f"; also resets, saves and restores {', '.join(held)}" if held else ""
        return f"secondary bus reset by {how}{also}"
    if method == "hot":
        return f"VFIO_DEVICE_PCI_HOT_RESET of the bus of {target.bdf}"
    return VENDOR_RESETS[(target.vendor, target.device_id)].name


class _HeldSibling:
    """Another function on the bus, held across a bus reset: locked, its kernel driver detached, its
    config saved; `restore` waits for it and puts the config back, `release` hands it back."""

    def __init__(self, target: Target, bdf: str) -> None:
        self.target = target
        self.bdf = bdf
        self.lock = OwnershipLock(target.os, bdf, target.lock_dir)
        self.driver: str | None = None
        self.device: PCIDevice | None = None
        self.saved: reset_ops.SavedConfig | None = None
        self.detached = False

    def hold(self) -> None:
        self.lock.acquire()
        sysfs = self.target.sysfs
        self.driver = sysfs.detach_for_user_space(self.bdf)
        self.detached = self.driver is not None
        self.device = PCIDevice(pci_backend.open_backend(self.target.os, self.bdf), self.target.os)
        self.saved = self.device.save_config_state()

    def restore(self, timeout_s: float) -> None:
        reset_ops.wait_device_ready(self.device, SBR, timeout_s)
        self.device.restore_config_state(self.saved)

    def release(self) -> list[str]:
        """Close and hand back; returns what went wrong (each also logged), so every sibling is tried."""
        problems = []
        if self.device is not None:
            try:
                self.device.close(rebind=False)
            except HalError as exc:
                problems.append(f"closing {self.bdf}: {exc}")
        if self.detached:
            try:
                self.target.sysfs.rebind(self.bdf, self.driver)
            except HalError as exc:
                problems.append(f"binding {self.bdf} to {self.driver} again: {exc}")
        if self.lock.held:
            self.lock.release()
        for problem in problems:
            log.warning("%s", problem)
        return problems


def secondary_bus_reset(target: Target, device: PCIDevice, timeout_s: float) -> str:
    """Reset the target's bus with every function on it held (see _HeldSibling); returns the detail."""
    if not target.siblings:
        refused = device.bus_reset_refusal()
        if refused is not None:
            raise UnsupportedOperation(f"no bus reset: {refused}")
        device.reset("bus", ready_timeout_s=timeout_s)
        how = "the kernel's reset_method 'bus'" if reset_ops.kernel_offers_bus_reset(device) else (
            f"Bridge Control of {target.bridge}")
        return f"by {how} ({target.bdf} is alone on its bus)"
    held = [_HeldSibling(target, bdf) for bdf in target.siblings]
    problems: list[str] = []
    try:
        for sibling in held:
            sibling.hold()
        saved = device.save_config_state()
        sysfs = target.sysfs
        kernel_path = sysfs.device_path(target.bridge, RESET_SUBORDINATE)
        if target.os.exists(kernel_path):
            how = f"{RESET_SUBORDINATE} of {target.bridge}"
            sysfs.write_attribute(kernel_path, "1", f"resetting the bus below {target.bridge}")
        else:
            how = f"Bridge Control of {target.bridge}"
            reset_ops.secondary_bus_reset(device)
        reset_ops.wait_device_ready(device, SBR, timeout_s)
        device.restore_config_state(saved)
        for sibling in held:
            sibling.restore(timeout_s)
    finally:
        for sibling in reversed(held):
            problems += sibling.release()
    if problems:
        raise HalError(f"the bus reset was done, but handing back failed: {'; '.join(problems)}")
    restored = [f"{s.bdf} config restored" + (f", {s.driver} bound again" if s.detached else "")
                for s in held]
    return f"by {how}" + (f"; {'; '.join(restored)}" if restored else "")


def wait_link_trained(target: Target, timeout_s: float) -> str:
    """Poll the upstream port's Link Status until Link Training is clear and, where the port reports it
    (Link Capabilities DLLLARC), Data Link Layer Link Active is set; bounded by `timeout_s`."""
    if target.bridge is None:
        return "no upstream port"
    cfg, config_file = _read_only_config(target.os, target.bridge)
    try:
        pcie = config.find_capability(cfg, regs.PCI_CAP_ID_EXP)
        if pcie is None:
            return f"{target.bridge} has no PCIe capability"
        reports_active = bool(cfg.cfg_read32(pcie + regs.PCI_EXP_LNKCAP) & regs.PCI_EXP_LNKCAP_DLLLARC)
        deadline = target.os.monotonic() + timeout_s
        while True:
            status = cfg.cfg_read16(pcie + regs.PCI_EXP_LNKSTA)
            training = bool(status & regs.PCI_EXP_LNKSTA_LT)
            inactive = reports_active and not status & regs.PCI_EXP_LNKSTA_DLLLA
            if status != config.ALL_ONES16 and not training and not inactive:
                break
            if target.os.monotonic() >= deadline:
                raise DeviceTimeout(f"the link below {target.bridge} was not trained within {timeout_s} s "
                                    f"(Link Status {status:#06x}: training {training}, "
                                    f"link active {not inactive})")
            target.os.sleep(LINK_POLL_S)
    finally:
        config_file.close()
    speed = config.LINK_SPEED_GTS.get(status & regs.PCI_EXP_LNKSTA_CLS, 0.0)
    width = (status & regs.PCI_EXP_LNKSTA_NLW) >> config.LINK_WIDTH_SHIFT
    active = ", link active" if reports_active else ""
    return f"link trained at {speed:g} GT/s x{width}{active}"


def check_ready(target: Target, device: PCIDevice, before: int, method: str, timeout_s: float) -> str:
    """After a step: the presence register answers (CRS honoured) with what it read before, and the
    link above is trained."""
    reset_ops.wait_device_ready(device, method, timeout_s)
    offset, width = device.backend.presence_register
    value = device.cfg_read(offset, width)
    if value != before:
        raise DeviceLost(f"{target.bdf}'s {reset_ops.presence_name(offset)} reads {value:#x} after the "
                         f"{method} step, not the {before:#x} it read before")
    link = wait_link_trained(target, timeout_s)
    return f"ready: {reset_ops.presence_name(offset)} {value:#x} reads back, {link}"


def perform(target: Target, device: PCIDevice, method: str, timeout_s: float) -> str:
    if method in HAL_METHOD:
        device.reset(HAL_METHOD[method], ready_timeout_s=timeout_s)
        return f"{method} done through {device.backend.name}"
    if method == SBR:
        return secondary_bus_reset(target, device, timeout_s)
    reset = VENDOR_RESETS[(target.vendor, target.device_id)]
    return f"{reset.name}: {reset.perform(device, timeout_s)}"


def _chosen_methods(method: str) -> tuple[str, ...]:
    if method == AUTO:
        return METHODS
    if method not in METHODS:
        raise InvalidArgument(f"unknown reset method {method!r}; use auto or one of {', '.join(METHODS)}")
    return (method,)


def _no_step_worked(report: Report) -> str:
    reasons = "; ".join(f"{step.method}: {step.detail}" for step in report.steps)
    return describe_error(UnsupportedOperation(f"nothing could reset {report.device}: {reasons}"))


def climb(target: Target, device: PCIDevice, method: str, timeout_s: float, report: Report) -> None:
    """Run the chosen steps until one leaves the device ready; record each in `report`."""
    offset, width = device.backend.presence_register
    before = device.cfg_read(offset, width)
    for name in _chosen_methods(method):
        reason = refusal(target, name, device, device)
        if reason is not None:
            report.steps.append(Step(name, False, 0.0, reason, refused=True))
            continue
        start = target.os.monotonic()
        try:
            detail = perform(target, device, name, timeout_s)
            detail += "; " + check_ready(target, device, before, name, timeout_s)
        except HalError as exc:
            report.steps.append(Step(name, False, target.os.monotonic() - start, describe_error(exc)))
            if isinstance(exc, DeviceLost) or device.lost:
                report.final = describe_error(exc)
                return
            continue
        report.steps.append(Step(name, True, target.os.monotonic() - start, detail))
        report.final = "ok"
        return
    report.final = _no_step_worked(report)


def plan(target: Target, method: str, report: Report) -> None:
    """--dry-run: what each chosen step would do, or why it is refused; nothing is written."""
    cfg, config_file = _read_only_config(target.os, target.bdf)
    try:
        for name in _chosen_methods(method):
            reason = refusal(target, name, cfg, None)
            if reason is None:
                report.steps.append(Step(name, True, 0.0, f"would do: {would_do(target, name)}"))
                if method == AUTO:
                    report.final = "ok"
                    return
            else:
                report.steps.append(Step(name, False, 0.0, reason, refused=True))
        if any(step.ok for step in report.steps):
            report.final = "ok"
        else:
            report.final = _no_step_worked(report)
    finally:
        config_file.close()


def _state(target: Target, device: PCIDevice | None) -> dict:
    """The device after the ladder: IDs, link, and the driver of each function on its bus."""
    state: dict = {}
    if device is not None and not device.lost:
        try:
            state["vendor_device"] = f"{device.vendor_id:04x}:{device.device_id:04x}"
            link = device.link_status()
            state["link"] = f"{link.speed_gts:g} GT/s x{link.width}"
        except HalError as exc:
            state["error"] = describe_error(exc)
    return state


def _drivers(target: Target) -> dict[str, str | None]:
    sysfs = target.sysfs
    return {bdf: sysfs.driver(bdf) for bdf in [target.bdf, *target.siblings] if sysfs.exists(bdf)}


def _default_device(seam: OS) -> str:
    gpus = hal.list_devices(os=seam)
    if len(gpus) != 1:
        found = ", ".join(info.bdf for info in gpus) or "none"
        raise InvalidArgument(f"name the GPU to reset (display-class functions found: {found}); "
                              "list them with python -m tools.lsgpu")
    return gpus[0].bdf


def _target(seam: OS, device: str | None, lock_dir: str | None) -> Target:
    text = device or _default_device(seam)
    prefix, separator, rest = text.partition(":")
    backend = None
    if separator and prefix in ("pci", "vfio"):
        backend = prefix
        text = rest
    bdf = normalize_bdf(text)
    sysfs = SysfsPCI(seam)
    sysfs.require(bdf)
    if backend is None:
        backend = "vfio" if sysfs.driver(bdf) == VFIO_PCI_DRIVER else "pci"
    bridge = sysfs.parent_bridge(bdf)
    siblings = [other for other in sysfs.list_bdfs() if other != bdf and _bus_of(other) == _bus_of(bdf)]
    vendor, device_id = _ids(sysfs, bdf)
    return Target(seam, bdf, backend, vendor, device_id, bridge, siblings, lock_dir)


def _ownership_refusal(target: Target, unbind: bool) -> HalError | None:
    driver = target.sysfs.driver(target.bdf)
    if driver is None or unbind or (driver == VFIO_PCI_DRIVER and target.backend == "vfio"):
        return None
    return DeviceBusy(f"{target.bdf} is owned by kernel driver {driver}; rerun with --unbind to detach it "
                      "for the reset (it is bound again afterwards)")


def reset_gpu(seam: OS, device: str | None = None, method: str = AUTO, *, unbind: bool = False,
              dry_run: bool = False, timeout_s: float = reset_ops.DEVICE_READY_TIMEOUT_S,
              lock_dir: str | None = None) -> Report:
    """Run the ladder (or one step) on `device` and report; every failure is in the report's `final`."""
    report = Report(device=device or "", dry_run=dry_run)
    try:
        _chosen_methods(method)
        target = _target(seam, device, lock_dir)
    except HalError as exc:
        report.final = describe_error(exc)
        return report
    report.device = target.device_string
    refused = _ownership_refusal(target, unbind)
    if refused is not None:
        report.final = describe_error(refused)
        report.state["drivers"] = _drivers(target)
        return report
    if dry_run:
        try:
            plan(target, method, report)
        except HalError as exc:
            report.final = describe_error(exc)
        report.state["drivers"] = _drivers(target)
        return report
    _run(target, method, unbind, timeout_s, report)
    report.state["drivers"] = _drivers(target)
    return report


def _run(target: Target, method: str, unbind: bool, timeout_s: float, report: Report) -> None:
    try:
        opened = hal.open_device(target.device_string, target.os, unbind=unbind, rebind_on_close=True,
                                 lock_dir=target.lock_dir)
    except HalError as exc:
        report.final = describe_error(exc)
        return
    try:
        climb(target, opened, method, timeout_s, report)
        report.state.update(_state(target, opened))
    except HalError as exc:
        report.final = describe_error(exc)
    finally:
        try:
            opened.close()
        except HalError as exc:
            log.warning("closing %s: %s", target.bdf, exc)
            if report.ok:
                report.final = describe_error(exc)


def _mock_os() -> OS:
    """The default mock machine as a user-space driver leaves it when it exits without a reset: the
    GPU's kernel driver not loaded, the PSP's SOS running and the PMFW it loaded answering the SMU
    mailbox (so every step of the ladder, mode1 included, has something to reset); its HDMI audio
    function keeps its driver."""
    from mockgpu import GPU_BDF, Machine
    from mockgpu.navi31 import NAVI31_DRIVER

    machine = Machine.default()
    if machine.kernel.driver_of(GPU_BDF) == NAVI31_DRIVER:
        SysfsPCI(machine.os).rebind(GPU_BDF, None)
    gpu = machine.device(GPU_BDF)
    # what a driver's bring-up leaves running: the SOS (psp_v13_0 bootloader phase done) and the
    # PMFW the PSP loaded (amdgpu_psp.c psp_load_smu_fw)
    if getattr(gpu, "psp", None) is not None:
        gpu.psp.start_sos()
    if getattr(gpu, "smu", None) is not None:
        gpu.smu.start()
    return machine.os


def main(argv: list[str] | None = None, seam: OS | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.reset_gpu", description=__doc__.splitlines()[0])
    parser.add_argument("device", metavar="DEVICE", nargs="?",
                        help="the GPU: 0000:03:00.0, pci:0000:03:00.0 or vfio:0000:03:00.0 (default: the "
                             "only display-class function)")
    parser.add_argument("--method", default=AUTO, choices=(AUTO, *METHODS),
                        help="auto: the ladder flr, sbr, hot, mode1 until one works; or one step")
    parser.add_argument("--dry-run", action="store_true", help="say what would be done; change nothing")
    parser.add_argument("--unbind", action="store_true",
                        help="detach the kernel driver that owns the device for the reset, bind it after")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON object: {"device", "steps": [{"method", "ok", "seconds", '
                             '"detail", "refused"}], "final", "dry_run", "state"}')
    parser.add_argument("--timeout", type=float, default=reset_ops.DEVICE_READY_TIMEOUT_S,
                        metavar="SECONDS",
                        help="bound of each wait for the device after a step (default %(default)s)")
    mock_default = host_environment.environ.get("GPUHAL_MOCK") == "1"
    parser.add_argument("--mock", action="store_true", default=mock_default,
                        help="reset the mock machine's GPU (also GPUHAL_MOCK=1)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is done")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if seam is None:
        seam = _mock_os() if args.mock else host()
    report = reset_gpu(seam, args.device, args.method, unbind=args.unbind, dry_run=args.dry_run,
                       timeout_s=args.timeout)
    print(json.dumps(report.as_json(), indent=2) if args.json else report.as_text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
