"""Fault injection on a mock machine's Navi31: one `FaultPlan` arms named faults, each with a trigger.

    plan = FaultPlan(machine)                          # the GPU at GPU_BDF
    fault = plan.arm("mailbox_silent", Trigger.after_mmio(200), target="smu")
    ...                                                # run the driver
    fault.fired, fault.hits                            # did it happen, how often it bit
    fault.disarm()                                     # or plan.clear(): every fault undone

Faults (`FAULTS`, the names `tools.fault_matrix --faults` takes), what the model does, and the
options `arm` takes:
- surprise_removal: the GPU falls off the bus (Machine.surprise_remove): config space and registers
  read all ones, writes vanish, no DMA. Disarming is a hot plug: pciehp sees the slot's link go
  down and up, removes the functions below it and enumerates them again in their power-on state.
- mailbox_silent (`target` "psp", "smu" or "all"): the PSP (bootloader C2PMSG_35, KM ring
  C2PMSG_64, frames and fences) or the SMU (MP1 C2PMSG_66/90) takes messages and never answers;
  disarmed, the firmware resumes and finishes the last message it took.
- mailbox_error (`target`, `psp_status`, `smu_status`): every PSP GFX command is answered with
  `psp_status` (default TEE_ERROR_CANCEL, psp_gfx_if.h) and every SMU message with `smu_status`
  (default SMU_RESP_CMD_FAIL 0xFF, smu_cmn.c).
- ring_stall (`target` "sdma", "mec" or "all"): SDMA0's queue or the MEC's HQDs stop fetching: the
  read pointer never advances until disarmed (then the engines are kicked and go on).
- dropped_writes (`count`, default -1: all): posted MMIO writes to the GPU vanish.
- iommu_fault (`write`: None any, True/False one direction; `once`, default True): the IOMMU
  finds no mapping for the next DMA of the GPU through a VFIO container (an IOMMUFault in
  `machine.iommu_faults`; the engine sees its request aborted). No effect without an IOMMU domain.
- vm_fault (`hub`, default the GFX hub; `vmid`, `access` filters; `once`, default True): the GMC's
  walk finds the PTE of the next walked access not valid; the hub latches it and, where
  VM_CONTEXTn_CNTL enables the interrupt, the IH gets the VM fault entry gmc_v11_0 decodes.
- ras_interrupt (`source` "umc" or "fed"): the IH gets a RAS interrupt entry: UMC ECC through the DF
  client, source 0 (gmc_v11_0.c gmc_v11_0_sw_init, amdgpu_umc_process_ecc_irq), or the RLC's FED
  poison interrupt (gfx_v11_0.c). Posted once when it fires; lost when the IH ring is off.
- firmware_rejected (`status`, default TEE_ERROR_NOT_SUPPORTED, psp_gfx_if.h; `stage` "ip_fw" or
  "bootloader"): the SOS answers LOAD_IP_FW with `status`, or the bootloader refuses the next
  component (the model's BL_ERROR_BAD_IMAGE).
- slow_device (`delay_s`, default 0.05): PSP frames, SMU answers and compute queues start that long
  late, SDMA runs `sdma_dwords` (default 16) dwords per step of `delay_s`: slower than normal.
- slow_device_timeout: the same with `delay_s` (default 5 s) beyond the driver's timeouts.

Triggers (`Trigger`): `now()` (at `arm`), `after_mmio(n)` (at the n-th MMIO access to the GPU
from arming, before that access is served: register BAR and doorbells), `after_doorbells(n)`,
`at_time(seconds)` (simulated time: runs when the machine runs its due events) and `next()`
(like now, for faults that hit one operation: the next matching DMA, walk or write, then the fault
disarms itself).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Callable

from autogen.amd import irqsrcs_gfx_11_0_0 as gfx_sources
from autogen.amd import psp_gfx_if as gfx
from autogen.amd import soc15_ih_clientid as clients

from mockgpu.amd.gmc import GFX_HUB, Access
from mockgpu.amd.psp import BL_ERROR_BAD_IMAGE
from mockgpu.amd.smu import SMU_RESP_CMD_FAIL
from mockgpu.machine import GPU_BDF, Machine

log = logging.getLogger(__name__)

FAULTS: tuple[str, ...] = (
    "surprise_removal", "mailbox_silent", "mailbox_error", "ring_stall", "dropped_writes",
    "iommu_fault", "vm_fault", "ras_interrupt", "firmware_rejected", "slow_device",
    "slow_device_timeout",
)
ONCE_BY_DEFAULT = ("iommu_fault", "vm_fault")  # they bite one DMA or walk, then disarm
TARGETS = ("psp", "smu", "all")
RING_TARGETS = ("sdma", "mec", "all")
# gmc_v11_0.c gmc_v11_0_sw_init: UMC ECC errors reach the IH from the DF client with source 0
DF_ECC_SOURCE = 0
RAS_SOURCES = {
    "umc": (clients.SOC21_IH_CLIENTID_DF, DF_ECC_SOURCE),
    "fed": (clients.SOC21_IH_CLIENTID_GFX, gfx_sources.GFX_11_0_0__SRCID__RLC_GC_FED_INTERRUPT),
}
SLOW_DELAY_S = 0.05  # the fault's default: slower than the mock's instant answers, far below timeouts
SLOW_TIMEOUT_DELAY_S = 5.0  # the fault's default: past every timeout the driver uses by default
SLOW_SDMA_DWORDS = 16  # dwords SDMA runs per step while slow: a COPY_LINEAR packet is 7


@dataclasses.dataclass(frozen=True)
class Trigger:
    """When an armed fault fires: `kind` "now", "mmio", "doorbell", "time" or "next"."""

    kind: str = "now"
    count: int = 0
    seconds: float = 0.0

    @classmethod
    def now(cls) -> "Trigger":
        return cls("now")

    @classmethod
    def after_mmio(cls, count: int) -> "Trigger":
        if count < 1:
            raise ValueError(f"after_mmio({count}): count the accesses from 1")
        return cls("mmio", count=count)

    @classmethod
    def after_doorbells(cls, count: int) -> "Trigger":
        if count < 1:
            raise ValueError(f"after_doorbells({count}): count the doorbells from 1")
        return cls("doorbell", count=count)

    @classmethod
    def at_time(cls, seconds: float) -> "Trigger":
        return cls("time", seconds=max(seconds, 0.0))

    @classmethod
    def next(cls) -> "Trigger":
        return cls("next")

    def describe(self) -> str:
        if self.kind == "mmio":
            return f"at MMIO access {self.count}"
        if self.kind == "doorbell":
            return f"at doorbell {self.count}"
        if self.kind == "time":
            return f"after {self.seconds} s"
        return self.kind


class ArmedFault:
    """One fault of a plan: `state` "armed" (waiting for its trigger), "active", "disarmed";
    `fired` once it took effect, `hits` the operations it bit (DMAs, walks, IH entries)."""

    def __init__(self, plan: "FaultPlan", name: str, trigger: Trigger, options: dict) -> None:
        self.plan = plan
        self.name = name
        self.trigger = trigger
        self.options = options
        self.state = "armed"
        self.fired = False
        self.hits = 0
        self.seen = 0  # MMIO accesses or doorbells counted towards the trigger
        self._undo: Callable[[], None] | None = None

    @property
    def once(self) -> bool:
        default = self.name in ONCE_BY_DEFAULT
        return self.trigger.kind == "next" or bool(self.options.get("once", default))

    def fire(self) -> None:
        """Take effect now (the trigger calls it)."""
        if self.state != "armed":
            return
        self.state = "active"
        self.fired = True
        log.info("fault %s fires (%s)", self.name, self.trigger.describe())
        self._undo = _APPLY[self.name](self.plan, self)

    def hit(self) -> None:
        """The fault bit one operation; a once-only fault then disarms itself."""
        self.hits += 1
        if self.once:
            self.disarm()

    def disarm(self) -> None:
        """Undo the fault (or never let it fire) and forget it."""
        if self.state == "disarmed":
            return
        undo = self._undo
        self._undo = None
        self.state = "disarmed"
        if self in self.plan.faults:
            self.plan.faults.remove(self)
        self.plan._update_observers()
        if undo is not None:
            undo()

    def __repr__(self) -> str:
        return f"<ArmedFault {self.name} {self.state} {self.trigger.describe()} hits={self.hits}>"


class FaultPlan:
    """The faults armed on one machine's GPU (see the module docstring)."""

    def __init__(self, machine: Machine, bdf: str = GPU_BDF) -> None:
        self.machine = machine
        self.bdf = bdf
        self.gpu = machine.device(bdf)
        self.faults: list[ArmedFault] = []
        self._mmio_installed = False
        self._doorbell_installed = False

    def arm(self, name: str, trigger: Trigger | None = None, **options) -> ArmedFault:
        """Arm fault `name` (one of FAULTS) with `trigger` (default now) and its options."""
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r} (faults: {', '.join(FAULTS)})")
        _check_options(name, options)
        fault = ArmedFault(self, name, trigger or Trigger.now(), dict(options))
        self.faults.append(fault)
        kind = fault.trigger.kind
        if kind in ("now", "next"):
            fault.fire()
        elif kind == "time":
            self.machine.schedule(fault.trigger.seconds, fault.fire)
        elif kind not in ("mmio", "doorbell"):
            raise ValueError(f"unknown trigger kind {kind!r}")
        self._update_observers()
        return fault

    def clear(self) -> None:
        """Disarm every fault, newest first."""
        for fault in reversed(list(self.faults)):
            fault.disarm()

    def active(self, name: str) -> list[ArmedFault]:
        return [fault for fault in self.faults if fault.name == name and fault.state == "active"]

    # -- triggers ----------------------------------------------------------------------------------
    def _waiting(self, kind: str) -> list[ArmedFault]:
        return [fault for fault in self.faults if fault.state == "armed" and fault.trigger.kind == kind]

    def _update_observers(self) -> None:
        want_mmio = bool(self._waiting("mmio"))
        if want_mmio and not self._mmio_installed:
            self.gpu.mmio_observer = self._on_mmio
        elif not want_mmio and self._mmio_installed and self.gpu.mmio_observer == self._on_mmio:
            self.gpu.mmio_observer = None
        self._mmio_installed = want_mmio
        want_doorbell = bool(self._waiting("doorbell"))
        listeners = getattr(self.gpu, "doorbell_listeners", None)
        if listeners is not None and want_doorbell != self._doorbell_installed:
            if want_doorbell:
                listeners.insert(0, self._on_doorbell)  # before the engines: the fault comes first
            elif self._on_doorbell in listeners:
                listeners.remove(self._on_doorbell)
        self._doorbell_installed = want_doorbell and listeners is not None

    def _count(self, kind: str) -> None:
        for fault in self._waiting(kind):
            fault.seen += 1
            if fault.seen >= fault.trigger.count:
                fault.fire()
        self._update_observers()

    def _on_mmio(self, index: int, offset: int, write: bool) -> None:
        self._count("mmio")

    def _on_doorbell(self, offset: int, data: bytes) -> None:
        self._count("doorbell")

    # -- hooks the faults install ------------------------------------------------------------------
    def _iommu_hook(self, function, iova: int, write: bool) -> bool:
        if function is not self.gpu:
            return False
        for fault in self.active("iommu_fault"):
            wanted = fault.options.get("write")
            if wanted is None or wanted == write:
                fault.hit()
                return True
        return False

    def _vm_hook(self, hub: str, vmid: int, va: int, access: Access, client_id: int) -> bool:
        for fault in self.active("vm_fault"):
            options = fault.options
            if options.get("hub", GFX_HUB) != hub:
                continue
            if options.get("vmid") is not None and options["vmid"] != vmid:
                continue
            if options.get("access") is not None and options["access"] != access:
                continue
            fault.hit()
            return True
        return False


# -- what each fault does (each returns its undo) ---------------------------------------------------
def _check_options(name: str, options: dict) -> None:
    target = options.get("target")
    if name in ("mailbox_silent", "mailbox_error") and target not in (None, *TARGETS):
        raise ValueError(f"{name}: target {target!r} is not one of {', '.join(TARGETS)}")
    if name == "ring_stall" and target not in (None, *RING_TARGETS):
        raise ValueError(f"{name}: target {target!r} is not one of {', '.join(RING_TARGETS)}")
    if name == "ras_interrupt" and options.get("source", "umc") not in RAS_SOURCES:
        raise ValueError(f"{name}: source {options['source']!r} is not one of {', '.join(RAS_SOURCES)}")
    if name == "firmware_rejected" and options.get("stage", "ip_fw") not in ("ip_fw", "bootloader"):
        raise ValueError(f"{name}: stage {options['stage']!r} is not ip_fw or bootloader")


def _targets(fault: ArmedFault, kinds: tuple[str, ...]) -> tuple[str, ...]:
    target = fault.options.get("target") or "all"
    return tuple(kind for kind in kinds if target in (kind, "all"))


def _surprise_removal(plan: FaultPlan, fault: ArmedFault) -> Callable[[], None]:
    machine = plan.machine
    machine.surprise_remove(plan.bdf)

    def hot_plug() -> None:
        # drivers/pci/hotplug/pciehp_ctrl.c: the slot's link goes down (the functions below are
        # removed), the card is back in its power-on state, the link comes up (enumerated again)
        port = plan.gpu.parent
        if port is None:
            machine.hot_plug(plan.bdf)
            return
        machine.hot_plug_link_down(port)
        machine.hot_plug(plan.bdf)
        machine.hot_plug_link_up(port)

    return hot_plug


def _mailbox_silent(plan: FaultPlan, fault: ArmedFault) -> Callable[[], None]:
    models = [getattr(plan.gpu, kind) for kind in _targets(fault, ("psp", "smu"))]
    for model in models:
        model.hang = True

    def answer_again() -> None:
        for model in models:
            model.resume()

    return answer_again


def _mailbox_error(plan: FaultPlan, fault: ArmedFault) -> Callable[[], None]:
    targets = _targets(fault, ("psp", "smu"))
    psp = plan.gpu.psp
    smu = plan.gpu.smu
    if "psp" in targets:
        psp.error_status = fault.options.get("psp_status", gfx.TEE_ERROR_CANCEL)
    if "smu" in targets:
        smu.error_response = fault.options.get("smu_status", SMU_RESP_CMD_FAIL)

    def answer_right() -> None:
        if "psp" in targets:
            psp.error_status = None
        if "smu" in targets:
            smu.error_response = None

    return answer_right


def _ring_stall(plan: FaultPlan, fault: ArmedFault) -> Callable[[], None]:
    engines = [getattr(plan.gpu, kind) for kind in _targets(fault, ("sdma", "mec"))]
    for engine in engines:
        engine.stalled = True

    def fetch_again() -> None:
        for engine in engines:
            engine.stalled = False
            engine.kick()

    return fetch_again


def _dropped_writes(plan: FaultPlan, fault: ArmedFault) -> Callable[[], None]:
    plan.machine.drop_posted_writes(plan.bdf, fault.options.get("count", -1))
    return lambda: plan.machine.drop_posted_writes(plan.bdf, 0)


def _iommu_fault(plan: FaultPlan, fault: ArmedFault) -> Callable[[], None]:
    bus = plan.machine.bus
    bus.unmapped_iova = plan._iommu_hook

    def unhook() -> None:
        if not plan.active("iommu_fault") and bus.unmapped_iova == plan._iommu_hook:
            bus.unmapped_iova = None

    return unhook


def _vm_fault(plan: FaultPlan, fault: ArmedFault) -> Callable[[], None]:
    gmc = plan.gpu.gmc
    gmc.invalid_pte = plan._vm_hook

    def unhook() -> None:
        if not plan.active("vm_fault") and gmc.invalid_pte == plan._vm_hook:
            gmc.invalid_pte = None

    return unhook


def _ras_interrupt(plan: FaultPlan, fault: ArmedFault) -> Callable[[], None]:
    client, source = RAS_SOURCES[fault.options.get("source", "umc")]
    if plan.gpu.ih.post(client, source):
        fault.hits += 1
    else:
        log.info("ras_interrupt: the IH ring is off; the entry is lost")
    return lambda: None


def _firmware_rejected(plan: FaultPlan, fault: ArmedFault) -> Callable[[], None]:
    psp = plan.gpu.psp
    if fault.options.get("stage", "ip_fw") == "bootloader":
        psp.bootloader_error = fault.options.get("status", BL_ERROR_BAD_IMAGE)

        def forget() -> None:
            psp.bootloader_error = None

        return forget
    psp.fail_commands[gfx.GFX_CMD_ID_LOAD_IP_FW] = fault.options.get("status", gfx.TEE_ERROR_NOT_SUPPORTED)
    return lambda: psp.fail_commands.pop(gfx.GFX_CMD_ID_LOAD_IP_FW, None)


def _slow(plan: FaultPlan, fault: ArmedFault, default_delay_s: float) -> Callable[[], None]:
    gpu = plan.gpu
    delay = fault.options.get("delay_s", default_delay_s)
    saved = (gpu.psp.response_delay_s, gpu.smu.response_delay_s, gpu.mec.response_delay_s,
             gpu.sdma.throttle_dwords, gpu.sdma.throttle_delay_s)
    gpu.psp.response_delay_s = delay
    gpu.smu.response_delay_s = delay
    gpu.mec.response_delay_s = delay
    gpu.sdma.throttle_dwords = fault.options.get("sdma_dwords", SLOW_SDMA_DWORDS)
    gpu.sdma.throttle_delay_s = delay

    def normal_speed() -> None:
        (gpu.psp.response_delay_s, gpu.smu.response_delay_s, gpu.mec.response_delay_s,
         gpu.sdma.throttle_dwords, gpu.sdma.throttle_delay_s) = saved
        gpu.sdma.kick()
        gpu.mec.kick()

    return normal_speed


_APPLY: dict[str, Callable[[FaultPlan, ArmedFault], Callable[[], None]]] = {
    "surprise_removal": _surprise_removal,
    "mailbox_silent": _mailbox_silent,
    "mailbox_error": _mailbox_error,
    "ring_stall": _ring_stall,
    "dropped_writes": _dropped_writes,
    "iommu_fault": _iommu_fault,
    "vm_fault": _vm_fault,
    "ras_interrupt": _ras_interrupt,
    "firmware_rejected": _firmware_rejected,
    "slow_device": lambda plan, fault: _slow(plan, fault, SLOW_DELAY_S),
    "slow_device_timeout": lambda plan, fault: _slow(plan, fault, SLOW_TIMEOUT_DELAY_S),
}
