"""AMDevice: an AMD GPU opened through hal, discovered, and brought up block by block.

Bring-up (the order amdgpu follows in amdgpu_device_init / amdgpu_device_ip_init):
1. memory decoding on, BAR5 (registers) and BAR0 (VRAM) mapped through hal;
2. discovery: wait for the IFWI (MP0 C2PMSG_33 bit 31), read the VRAM size (RCC_CONFIG_MEMSIZE),
   read the table from VRAM size - 64 KiB through BAR0, or through the MM_INDEX window when BAR0 does
   not reach that far, parse it (drivers.am.discovery) and bind registers at the discovered bases;
3. resolve each block of `BLOCK_ORDER` once, by its discovered version, to its implementation
   (`IMPLEMENTATIONS`); an unknown version is an error naming it and the known ones;
4. sw_init of every block in order, then hw_init of every block in order.
With a boot layout (drivers.am.boot; any bring-up that has blocks), step 4 depends on what the
previous owner left: a cold boot as above; a warm attach (sw_init, then each block's warm_init:
rings and tables reused, no firmware loaded again); or, after a crashed owner, a layout that
does not match the hardware, or no valid layout while the PSP's SOS runs (a PCI reset, a teardown
or another driver came before: amdgpu's soc21_need_reset_on_init), a mode1 reset
(drivers.am.reset) and then a cold boot.
Teardown (`fini`, also after a failed step) runs hw_fini in reverse for each block whose hw_init
succeeded, then sw_fini in reverse for each block whose sw_init succeeded.

The driver reaches the GPU only through hal.PCIDevice Regions (bar) and config access, so other
transports work unchanged.
"""
from __future__ import annotations

import atexit
import dataclasses
import logging
import weakref

from autogen.linux import pci_regs

from drivers.am import discovery
from drivers.am import reset as am_reset
from drivers.am.boot import BootLayout, Decision, State, WarmAttachRefused
from drivers.am.gart import GART_SIZE
from drivers.am.gfx import GC_AUTOLOAD_TIMEOUT_S, GC_TIMEOUT_S, GCv11_0
from drivers.am.gfx import RING_SIZE as GC_RING_SIZE
from drivers.am.gmc import GMCv11
from drivers.am.ih import IH_RING_SIZE, IH_TIMEOUT_S, IHv6_0
from drivers.am.ip import IPBlock, poll
from drivers.am.memory import Memory
from drivers.am.nbio import HDPv6_0, NBIOv4_3
from drivers.am.psp import PSPv13_0
from drivers.am.regs import PRE_DISCOVERY_BLOCKS, Registers, VRAMWindow
from drivers.am.sdma import RING_SIZE as SDMA_RING_SIZE
from drivers.am.sdma import STAGING_SIZE as SDMA_STAGING_SIZE
from drivers.am.sdma import SDMA_TIMEOUT_S, SDMAv6_0
from drivers.am.smu import MODE1_READY_TIMEOUT_S, MODE1_WAIT_S, SMU_TIMEOUT_S, SMUv13_0_0
from hal.errors import BadBinary, UnsupportedOperation
from hal.pcidev import PCIDevice
from hal.region import Region

log = logging.getLogger(__name__)

REGISTER_BAR = 5  # amdgpu_device.c amdgpu_device_init: rmmio is BAR5 from CHIP_BONAIRE on
VRAM_BAR = 0  # the framebuffer aperture (amdgpu_gmc: aper_base = pci_resource_start(pdev, 0))
MEBIBYTE_SHIFT = 20  # amdgpu_discovery.c: RREG32(mmRCC_CONFIG_MEMSIZE) << 20
# amdgpu_discovery.c amdgpu_discovery_read_binary_from_mem: bit 31 of MP0 C2PMSG_33 once the IFWI is
# done; amdgpu gives it up to 2 s (2000 polls 1 ms apart)
IFWI_INIT_DONE = 1 << 31
IFWI_TIMEOUT_S = 2.0

# blocks brought up, in order (amdgpu_discovery.c amdgpu_discovery_set_ip_blocks: GC before SDMA;
# SDMA v6 rings go through the GFX hub that GC's hw_init enables)
BLOCK_ORDER: tuple[str, ...] = ("NBIO", "HDP", "GMC", "IH", "PSP", "SMU", "GC", "SDMA")
IMPLEMENTATIONS: tuple[type[IPBlock], ...] = (NBIOv4_3, HDPv6_0, GMCv11, IHv6_0, PSPv13_0, SMUv13_0_0,
                                                SDMAv6_0, GCv11_0)
# blocks whose version is another IP's in the discovery table (amdgpu_discovery.c
# amdgpu_discovery_set_{gmc,ih,psp,smu,sdma}_ip_blocks switch on GC, OSSSYS, MP0, MP1, SDMA0)
VERSION_FROM: dict[str, str] = {"GMC": "GC", "IH": "OSSSYS", "PSP": "MP0", "SMU": "MP1",
                                "SDMA": "SDMA0"}


@dataclasses.dataclass
class AMConfig:
    """Device-wide settings: the timeout of the IFWI wait (others join as blocks arrive)."""

    ifwi_timeout_s: float = IFWI_TIMEOUT_S
    # PSP: C2PMSG mailbox waits (amdgpu: psp_wait_for, adev->usec_timeout each, 10 tries for the
    # bootloader) and the KM ring fence wait (psp_cmd_submit_buf: adev->psp_timeout, about 2 s)
    psp_mailbox_timeout_s: float = 1.0
    psp_command_timeout_s: float = 2.0
    firmware_dir: str | None = None  # a firmware root (amdgpu/<file>); None: the search path
    # gmc_v11_0_flush_gpu_tlb polls the invalidation semaphore and ACK adev->usec_timeout
    # (AMDGPU_MAX_USEC_TIMEOUT, 100 ms) each
    gmc_invalidate_timeout_s: float = 0.1
    gart_size: int = GART_SIZE  # bytes of the VMID 0 window for host memory (amdgpu_gart_size)
    ih_ring_size: int = IH_RING_SIZE  # bytes, a power of two (amdgpu_ih.h IH_RING_SIZE)
    ih_timeout_s: float = IH_TIMEOUT_S  # IHv6_0.wait's default bound
    sdma_ring_size: int = SDMA_RING_SIZE  # bytes, a power of two
    sdma_timeout_s: float = SDMA_TIMEOUT_S  # ring space, fences and the ring test
    sdma_staging_size: int = SDMA_STAGING_SIZE  # bytes of host memory host <-> VRAM copies stage in
    smu_timeout_s: float = SMU_TIMEOUT_S  # one SMU message's answer (smu_cmn.c __smu_cmn_poll_stat)
    smu_mode1_wait_s: float = MODE1_WAIT_S  # the pause after the SMU took a mode1 request
    smu_mode1_ready_timeout_s: float = MODE1_READY_TIMEOUT_S  # registers answer again after mode1
    gc_autoload_timeout_s: float = GC_AUTOLOAD_TIMEOUT_S  # RLC autoload complete (gfx_v11_0)
    gc_timeout_s: float = GC_TIMEOUT_S  # compute ring space, fences, ring test and dequeue
    gc_ring_size: int = GC_RING_SIZE  # bytes, a power of two


def _version_text(version: tuple[int, int, int]) -> str:
    return ".".join(str(part) for part in version)


def resolve(block: str, version: tuple[int, int, int],
            implementations: tuple[type[IPBlock], ...] = IMPLEMENTATIONS) -> type[IPBlock]:
    """The class serving `block` at `version`; UnsupportedOperation names what is known."""
    for cls in implementations:
        if cls.block == block and version in cls.versions:
            return cls
    known = [_version_text(v) for cls in implementations if cls.block == block for v in cls.versions]
    raise UnsupportedOperation(f"{block} {_version_text(version)} has no implementation in this driver "
                               f"(known {block} versions: {', '.join(known) or 'none'})")


class AMDevice:
    """An AMD GPU brought up over `pci` (see the module docstring). `fini()` tears it down."""

    def __init__(self, pci: PCIDevice, *, config: AMConfig | None = None,
                 block_order: tuple[str, ...] = BLOCK_ORDER,
                 implementations: tuple[type[IPBlock], ...] = IMPLEMENTATIONS) -> None:
        self.pci = pci
        self.config = config or AMConfig()
        self.blocks: list[IPBlock] = []
        self.sw_done: list[IPBlock] = []
        self.hw_done: list[IPBlock] = []
        self._enable_memory_decoding()
        self.mmio: Region = pci.bar(REGISTER_BAR)
        self.vram_bar: Region = pci.bar(VRAM_BAR)
        self.registers = Registers(self.mmio, PRE_DISCOVERY_BLOCKS)
        self.vram_size = 0
        self.discovery = self._discover()
        self.registers = Registers(self.mmio, self.discovery.blocks())
        self.vram = VRAMWindow(self.vram_bar, self.registers)
        self.memory = Memory(self)  # VRAM location, reservations and allocator, before any sw_init
        self._classes = [resolve(block, self.discovery.version(VERSION_FROM.get(block, block)),
                                 implementations) for block in block_order]
        self.blocks = [cls(self) for cls in self._classes]
        # a discovery-only device (block_order=(), tools) neither reads nor writes the boot layout
        self.boot: BootLayout | None = BootLayout(self) if self.blocks else None
        if self.boot is not None:
            self.boot.reserve()
        self.boot_kind = "cold"  # how init() brought the blocks up: "cold", "warm" or "reset"
        self.boot_reason = ""
        self.init()

    # -- discovery -----------------------------------------------------------------------------
    def _enable_memory_decoding(self) -> None:
        """BARs answer only while Command decodes memory (amdgpu: pci_enable_device)."""
        command = self.pci.cfg_read16(pci_regs.PCI_COMMAND)
        if not command & pci_regs.PCI_COMMAND_MEMORY:
            self.pci.cfg_write16(pci_regs.PCI_COMMAND, command | pci_regs.PCI_COMMAND_MEMORY)

    def _discover(self) -> discovery.Discovery:
        ifwi = self.registers.reg("MP0", "regMP0_SMN_C2PMSG_33")
        poll(self, ifwi, IFWI_INIT_DONE, IFWI_INIT_DONE, self.config.ifwi_timeout_s,
             "the IFWI to finish initialising the GPU")
        memsize = self.registers.reg("NBIO", "regRCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE").read()
        self.vram_size = memsize << MEBIBYTE_SHIFT
        if self.vram_size < discovery.DISCOVERY_TMR_OFFSET:
            raise UnsupportedOperation(
                f"{self.pci.bdf}: RCC_CONFIG_MEMSIZE reads {memsize} MiB; parts whose discovery table "
                "lives in system memory (no VRAM size register) are not supported")
        window = VRAMWindow(self.vram_bar, self.registers)
        offset = self.vram_size - discovery.DISCOVERY_TMR_OFFSET
        blob = window.read(offset, discovery.DISCOVERY_TMR_SIZE)
        try:
            result = discovery.parse(blob)
        except BadBinary as exc:
            raise BadBinary(f"{self.pci.bdf}: {exc} (read from VRAM offset {offset:#x})") from exc
        log.info("%s: %d MiB VRAM, %d IPs discovered", self.pci.bdf, memsize, len(result.ips()))
        return result

    # -- blocks ----------------------------------------------------------------------------------
    def block(self, name: str) -> IPBlock:
        """The brought-up block called `name` ("NBIO")."""
        for block in self.blocks:
            if block.block == name:
                return block
        raise LookupError(f"no {name} block (blocks: {', '.join(b.block for b in self.blocks)})")

    def init(self) -> None:
        """Bring every block up: cold, warm or after a mode1 reset, as the boot layout says (see the
        module docstring); on failure undo what succeeded and raise."""
        if self.boot is None:
            self._cold()
            return
        bdf = self.pci.bdf
        decision = self.boot.inspect()
        if decision.kind == "warm":
            try:
                self._warm(decision)
                return
            except WarmAttachRefused as exc:
                decision = Decision("reset", f"warm attach refused: {exc}", decision.layout)
        if decision.kind == "reset":
            log.warning("%s: %s: mode1 reset, then a cold boot", bdf, decision.reason)
            self._reset_for_cold_boot()
        else:
            log.info("%s: cold boot: %s", bdf, decision.reason)
        self.boot_kind = decision.kind
        self.boot_reason = decision.reason
        self.boot.begin(decision.layout)
        self._cold()
        self.boot.up()
        self._detach_at_exit()

    def _cold(self) -> None:
        """sw_init every block, then hw_init every block."""
        try:
            for block in self.blocks:
                block.sw_init()
                self.sw_done.append(block)
            for block in self.blocks:
                block.hw_init()
                self.hw_done.append(block)
        except BaseException:
            self._teardown()  # failures there are logged; the bring-up error is the one to see
            raise

    def _warm(self, decision: Decision) -> None:
        """sw_init every block on the previous owner's allocations, then warm_init every block."""
        layout = decision.layout
        self.memory.adopt([(item.offset, item.size, item.purpose) for item in layout.allocations])
        self.boot.attach(layout)
        try:
            for block in self.blocks:
                block.sw_init()
                self.sw_done.append(block)
            self._check_firmware(layout.firmware)
            for block in self.blocks:
                block.warm_init()
                self.hw_done.append(block)
        except WarmAttachRefused:
            self._teardown(record=False)
            raise
        except BaseException:
            self._teardown()
            raise
        for offset, size, purpose in self.memory.end_adoption():
            log.info("%s: warm attach: %r at VRAM %#x (+%#x) of the previous owner freed", self.pci.bdf,
                     purpose, offset, size)
        self.boot_kind = "warm"
        self.boot_reason = decision.reason
        self.boot.up()
        self._detach_at_exit()
        log.info("%s: attached warm (%s)", self.pci.bdf, decision.reason)

    def _check_firmware(self, recorded: dict[str, str]) -> None:
        try:
            psp = self.block("PSP")
        except LookupError:
            return
        now = {name: image.sha256 for name, image in psp.firmware.items()}
        if now != recorded:
            names = set(now) | set(recorded)
            changed = sorted(name for name in names if now.get(name) != recorded.get(name))
            raise WarmAttachRefused(f"{self.pci.bdf}: the firmware files differ from the running set: "
                                    f"{', '.join(changed)}")

    def _reset_for_cold_boot(self) -> None:
        """Mode1 (drivers.am.reset), then fresh VRAM bookkeeping and blocks for a cold boot."""
        try:
            am_reset.mode1_reset_device(self)
        except UnsupportedOperation as exc:
            # no PMFW: the previous owner died before the PSP loaded it, and on MP0 13.0.0 the
            # SMU firmware precedes SETUP_TMR (psp_hw_start), so no TMR is set up either
            log.warning("%s: no mode1 reset (%s); booting cold over what is left", self.pci.bdf, exc)
        self.memory = Memory(self)
        self.blocks = [cls(self) for cls in self._classes]
        self.sw_done = []
        self.hw_done = []
        self.boot.reserve()

    def detach(self) -> None:
        """Let go with the hardware up, as a process exit does: state DOWN_CLEAN, the flags kept, so
        the next owner attaches warm. Host-side resources go with the PCIDevice when it closes."""
        if self.boot is not None and self.hw_done:
            self.boot.set_state(State.DOWN_CLEAN)
        self.hw_done = []
        self.sw_done = []

    def _detach_at_exit(self) -> None:
        reference = weakref.ref(self)

        def detach() -> None:
            device = reference()
            if device is None or not device.hw_done or not device.pci.holds_ownership_lock:
                return
            try:
                device.detach()
            except Exception as exc:  # exiting: say why the next owner will see a crash
                log.warning("%s: detach at exit failed: %s", device.pci.bdf, exc)

        atexit.register(detach)

    def fini(self) -> None:
        """hw_fini in reverse for the blocks whose hw_init succeeded, then sw_fini likewise. Every
        step runs even when one fails; the first failure is raised at the end."""
        failures = self._teardown()
        if failures:
            raise failures[0]

    def _teardown(self, record: bool = True) -> list[Exception]:
        """Undo what succeeded. With `record`, the boot layout says SHUTTING_DOWN meanwhile, and
        after a clean teardown DOWN_CLEAN with the flags cleared (a failed one stays SHUTTING_DOWN,
        so the next owner resets the GPU)."""
        boot = self.boot if record and (self.hw_done or self.sw_done) else None
        if boot is not None:
            boot.set_state(State.SHUTTING_DOWN)
        failures: list[Exception] = []
        while self.hw_done:
            block = self.hw_done.pop()
            try:
                block.hw_fini()
            except Exception as exc:  # keep tearing down the rest, report the first
                log.error("%s: hw_fini of %s failed: %s", self.pci.bdf, block.name, exc)
                failures.append(exc)
        while self.sw_done:
            block = self.sw_done.pop()
            try:
                block.sw_fini()
            except Exception as exc:
                log.error("%s: sw_fini of %s failed: %s", self.pci.bdf, block.name, exc)
                failures.append(exc)
        if boot is not None and not failures:
            boot.torn_down()
        return failures

    def __enter__(self) -> "AMDevice":
        return self

    def __exit__(self, *exc_info) -> None:
        self.fini()
