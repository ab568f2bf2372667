"""The PCI function model: configuration-space semantics, BARs, resets, MSI/MSI-X and bus-side DMA.

`PCIFunction` is what every device model (edu, the Navi31-shaped endpoint, bridges) derives from.
It owns what the PCI and PCIe specifications fix for any function, so models only describe their
identity, BARs and registers:
- the Type 0 / Type 1 header with read-only identity and BAR sizing (write all ones, read the
  size mask back with the type bits; 64-bit BARs use two dwords);
- a capability list (PM, MSI, PCIe with Link Capabilities/Status, MSI-X) and extended list (ReBAR);
- Command register decoding: MMIO reads all ones while memory decoding is off (master abort), and
  no DMA happens while bus mastering is off;
- resets: FLR (PCIe Device Control bit 15), secondary bus reset (the bridge's Bridge Control) and
  the D3hot->D0 internal reset of a function without No_Soft_Reset, after which BARs read back
  only their type bits until software programs them again; in D3hot nothing but config decodes;
- a slot: a port can advertise Hot-Plug Capable in its Slot Capabilities;
- surprise removal: a vanished function reads all ones and drops writes.

Device-specific behaviour lives in subclasses through `bar_read`/`bar_write`, `bar_memory` (for
lazily-populated memory windows such as VRAM), `reset_device_state` and `build_capabilities`.
"""
from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from autogen.linux import pci_regs

from hal.region import CallbackRegion, MemoryRegion, Region
from mockgpu.bits import all_ones, field_get, field_put
from mockgpu.config import CapabilityBuilder, ConfigSpace

if TYPE_CHECKING:
    from mockgpu.machine import Machine

log = logging.getLogger(__name__)

NUM_BARS = 6  # PCI r3.0 sec 6.2.5.1: a Type 0 header has six BAR dwords
BRIDGE_NUM_BARS = 2  # PCI-to-PCI bridge r1.2 sec 3.2.5.1: a Type 1 header has two
BAR_DWORD = 4
MEBIBYTE = 1 << 20
# PCIe r5.0 sec 7.8.6: ReBAR sizes are encoded as log2(size in MiB)
REBAR_UNIT = MEBIBYTE
# PCIe r5.0 sec 7.5.1.1.10: Status bits a write of 1 clears (error and interrupt-status bits excluded)
STATUS_RW1C = (pci_regs.PCI_STATUS_PARITY | pci_regs.PCI_STATUS_SIG_TARGET_ABORT
               | pci_regs.PCI_STATUS_REC_TARGET_ABORT | pci_regs.PCI_STATUS_REC_MASTER_ABORT
               | pci_regs.PCI_STATUS_SIG_SYSTEM_ERROR | pci_regs.PCI_STATUS_DETECTED_PARITY)
COMMAND_WRITABLE = (pci_regs.PCI_COMMAND_IO | pci_regs.PCI_COMMAND_MEMORY | pci_regs.PCI_COMMAND_MASTER
                    | pci_regs.PCI_COMMAND_PARITY | pci_regs.PCI_COMMAND_SERR
                    | pci_regs.PCI_COMMAND_INTX_DISABLE)
# PCIe r5.0 sec 7.5.3.2: PCIe capability version 2
PCIE_CAP_VERSION = 2
# PCIe r5.0 sec 7.8.6.1: ReBAR extended capability version 1
REBAR_CAP_VERSION = 1
REBAR_ENTRY_SIZE = 8  # PCIe r5.0 sec 7.8.6: one capability + control dword pair per BAR
# PCIe r5.0 sec 2.3.2: with CRS Software Visibility a not-ready function's vendor ID reads 0x0001
CRS_VENDOR_ID = 0x0001
CRS_ALL_ONES_VENDOR = 0xFFFF  # the vendor ID bytes that CRS_VENDOR_ID replaces in an all-ones read
MSI_DATA_MASK = 0xFFFF  # PCI r3.0 sec 6.8.1.8: Message Data is 16 bits
MSI_ADDRESS_LO_WRITABLE = 0xFFFFFFFC  # PCI r3.0 sec 6.8.1.4: address bits [1:0] are reserved zero
PM_CAP_VERSION_1_2 = 0x3  # PCI PM r1.2 sec 3.2.3: Version field 011b
PM_CTRL_STATE_MASK = pci_regs.PCI_PM_CTRL_STATE_MASK  # PCI PM r1.2 sec 3.2.4: PowerState bits [1:0]
PM_STATE_D0 = 0  # include/linux/pci.h PCI_D0; PCI PM r1.2 sec 3.2.4: PowerState 00b
PM_STATE_D3HOT = 3  # include/linux/pci.h PCI_D3hot; PCI PM r1.2 sec 3.2.4: PowerState 11b
LNKCTL_WRITABLE = (pci_regs.PCI_EXP_LNKCTL_ASPMC | pci_regs.PCI_EXP_LNKCTL_CCC | pci_regs.PCI_EXP_LNKCTL_ES
                   | pci_regs.PCI_EXP_LNKCTL_CLKREQ_EN | pci_regs.PCI_EXP_LNKCTL_HAWD)
# Where this model family places its capabilities (our layout choice; any dword offset is legal)
PM_CAP_OFFSET = 0x40
MSI_CAP_OFFSET = 0x50
PCIE_CAP_OFFSET = 0x70
MSIX_CAP_OFFSET = 0xB0
REBAR_EXT_CAP_OFFSET = pci_regs.PCI_CFG_SPACE_SIZE  # PCIe r5.0 sec 7.6.3: the extended list starts at 0x100


class BarKind(enum.Enum):
    MEM32 = "mem32"
    MEM64 = "mem64"
    IO = "io"


@dataclass
class BarSpec:
    """One BAR as hardware implements it. `rebar_sizes` lists the sizes ReBAR may select."""

    index: int
    size: int
    kind: BarKind = BarKind.MEM32
    prefetchable: bool = False
    rebar_sizes: tuple[int, ...] = ()

    @property
    def type_bits(self) -> int:
        if self.kind is BarKind.IO:
            return pci_regs.PCI_BASE_ADDRESS_SPACE_IO
        bits = pci_regs.PCI_BASE_ADDRESS_MEM_TYPE_64 if self.kind is BarKind.MEM64 else 0
        if self.prefetchable:
            bits |= pci_regs.PCI_BASE_ADDRESS_MEM_PREFETCH
        return bits

    @property
    def flag_mask(self) -> int:
        """Low BAR bits that carry type information instead of address."""
        if self.kind is BarKind.IO:
            return ~pci_regs.PCI_BASE_ADDRESS_IO_MASK & 0xFFFFFFFF
        return ~pci_regs.PCI_BASE_ADDRESS_MEM_MASK & 0xFFFFFFFF


@dataclass
class PCIeLink:
    """Link parameters as PCIe encodes them: speed codes (PCI_EXP_LNKCAP_SLS_*) and lane counts."""

    max_speed: int
    max_width: int
    speed: int
    width: int


@dataclass
class MSIXLayout:
    """Where the MSI-X table and PBA live: BAR index and offsets; `vectors` table entries."""

    vectors: int
    bar: int
    table_offset: int
    pba_offset: int


@dataclass
class Identity:
    vendor: int
    device: int
    class_code: int
    revision: int = 0
    subsystem_vendor: int = 0
    subsystem_device: int = 0


@dataclass
class PCIeInfo:
    """The PCI Express capability's fixed fields. `hot_plug`: a port whose slot is Hot-Plug Capable
    (Thunderbolt/USB4 and ExpressCard-style ports; PCIe r5.0 sec 7.5.3.9)."""

    port_type: int
    link: PCIeLink
    flr: bool = False
    hot_plug: bool = False


@dataclass
class FunctionState:
    """Counters tests read to see what the hardware went through."""

    reset_count: int = 0
    flr_count: int = 0
    bus_reset_count: int = 0
    pm_reset_count: int = 0
    dropped_writes: int = 0


@dataclass
class FaultPlan:
    """Injected misbehaviour of one function; Machine's fault methods set it.

    `drop_writes`: how many of the next MMIO writes vanish on the way (posted writes carry no
    completion, so the driver cannot tell), -1 for all of them until cleared.
    `reset_ready_s`: after a reset the function is not ready this long, like a device still
    initialising (PCIe r5.0 sec 6.6.1: software may call it broken only after 1 s; Linux waits 60 s).
    Meanwhile its requests complete as Unsupported (reads all ones) or, with `crs_visible`, as
    Configuration Request Retry Status seen by software: a read of the vendor ID returns 0x0001 and
    other reads all ones (PCIe r5.0 sec 2.3.2, CRS Software Visibility)."""

    drop_writes: int = 0
    reset_ready_s: float = 0.0
    crs_visible: bool = False


class PCIFunction:
    """One PCI function. Subclasses set identity, BARs and behaviour; see the module docstring."""

    header_type = pci_regs.PCI_HEADER_TYPE_NORMAL
    multifunction = False
    msi_vectors = 0  # 0 = no MSI capability; else a power of two up to 32
    msix: MSIXLayout | None = None
    default_driver: str | None = None
    # PCI PM r1.2 sec 3.2.4 No_Soft_Reset: True keeps state across D3hot->D0, so Linux offers no
    # "pm" reset (drivers/pci/pci.c pci_pm_reset); False makes that transition an internal reset
    pm_no_soft_reset = True
    # where the function's memory requests go: None is the machine's host bus (IOMMU, RAM); a
    # function behind a USB bridge has the bridge there (mockgpu.usb.asm24xx: its SRAM window only)
    dma_port = None

    def __init__(self, identity: Identity, bars: list[BarSpec], pcie: PCIeInfo | None = None) -> None:
        self.identity = identity
        self.bars: dict[int, BarSpec] = {bar.index: bar for bar in bars}
        self.pcie = pcie
        self.machine: Machine | None = None
        self.bdf = ""
        self.parent: Bridge | None = None
        self.present = True
        self.in_reset = False
        self.state = FunctionState()
        self.faults = FaultPlan()
        # called before every MMIO access that reaches the function (mockgpu.faults counts them)
        self.mmio_observer: Callable[[int, int, bool], None] | None = None
        self.ready_at = 0.0
        self.bar_sizes: dict[int, int] = {bar.index: bar.size for bar in bars}
        self.assigned: dict[int, int] = {}  # BAR index -> address the kernel gave it
        self.assigned_sizes: dict[int, int] = {}  # BAR index -> size of the kernel's resource
        self.msix_table = bytearray()
        self.msix_pending: set[int] = set()
        self.cfg = ConfigSpace()
        self.cap_offsets: dict[int, int] = {}
        self.ext_cap_offsets: dict[int, int] = {}
        self._build_config()

    # -- identity and naming ------------------------------------------------------------------
    @property
    def reset_count(self) -> int:
        return self.state.reset_count

    @property
    def is_bridge(self) -> bool:
        return self.header_type == pci_regs.PCI_HEADER_TYPE_BRIDGE

    @property
    def bus(self) -> int:
        return int(self.bdf[5:7], 16)

    def has_flr(self) -> bool:
        return self.pcie is not None and self.pcie.flr

    # -- config space construction ------------------------------------------------------------
    def _build_config(self) -> None:
        """Power-on configuration space: header, BARs, capabilities."""
        cfg = ConfigSpace()
        self.cfg = cfg
        ident = self.identity
        cfg.put(pci_regs.PCI_VENDOR_ID, 2, ident.vendor)
        cfg.put(pci_regs.PCI_DEVICE_ID, 2, ident.device)
        cfg.put(pci_regs.PCI_COMMAND, 2, 0, writable=COMMAND_WRITABLE)
        cfg.put(pci_regs.PCI_STATUS, 2, 0, rw1c=STATUS_RW1C)
        cfg.put(pci_regs.PCI_CLASS_REVISION, 4, (ident.class_code << 8) | ident.revision)
        cfg.put(pci_regs.PCI_CACHE_LINE_SIZE, 1, 0, writable=0xFF)
        header = self.header_type
        if self.multifunction:
            header |= ~pci_regs.PCI_HEADER_TYPE_MASK & 0xFF
        cfg.put(pci_regs.PCI_HEADER_TYPE, 1, header)
        cfg.put(pci_regs.PCI_INTERRUPT_LINE, 1, 0, writable=0xFF)
        if not self.is_bridge:
            cfg.put(pci_regs.PCI_SUBSYSTEM_VENDOR_ID, 2, ident.subsystem_vendor)
            cfg.put(pci_regs.PCI_SUBSYSTEM_ID, 2, ident.subsystem_device)
        for index in self.bars:
            self._init_bar(index, None)
        self._build_type_specific(cfg)
        builder = CapabilityBuilder(cfg)
        self.build_capabilities(builder)
        self.cap_offsets = dict(builder.caps)
        self.ext_cap_offsets = dict(builder.ext_caps)
        vectors = self.msix.vectors if self.msix else 0
        self.msix_table = bytearray(vectors * pci_regs.PCI_MSIX_ENTRY_SIZE)
        for vector in range(vectors):
            entry = vector * pci_regs.PCI_MSIX_ENTRY_SIZE + pci_regs.PCI_MSIX_ENTRY_VECTOR_CTRL
            self.msix_table[entry:entry + 4] = pci_regs.PCI_MSIX_ENTRY_CTRL_MASKBIT.to_bytes(4, "little")
        self.msix_pending = set()

    def _build_type_specific(self, cfg: ConfigSpace) -> None:
        """Header fields that differ between Type 0 and Type 1 (bridges override)."""

    def _init_bar(self, index: int, address: int | None) -> None:
        """Lay out BAR `index` for its current size: type bits, writable address bits, then `address`
        written through the new mask (None: the power-on value, type bits only)."""
        spec = self.bars[index]
        size = self.bar_sizes[index]
        off = pci_regs.PCI_BASE_ADDRESS_0 + index * BAR_DWORD
        address_mask = ~(size - 1)
        low_writable = address_mask & ~spec.flag_mask & 0xFFFFFFFF
        self.cfg.put(off, 4, spec.type_bits, writable=low_writable)
        if spec.kind is BarKind.MEM64:
            high_writable = (address_mask >> 32) & 0xFFFFFFFF
            self.cfg.put(off + BAR_DWORD, 4, 0, writable=high_writable)
        if address is not None:
            self._program_bar(index, address)

    def _program_bar(self, index: int, address: int) -> None:
        """Write a BAR address the way software does, through the write masks."""
        spec = self.bars[index]
        off = pci_regs.PCI_BASE_ADDRESS_0 + index * BAR_DWORD
        self.cfg.write(off, 4, address & 0xFFFFFFFF)
        if spec.kind is BarKind.MEM64:
            self.cfg.write(off + BAR_DWORD, 4, address >> 32)

    def build_capabilities(self, caps: CapabilityBuilder) -> None:
        """Default list: PM, MSI (if msi_vectors), PCIe (if pcie), MSI-X (if msix), ReBAR (if any)."""
        self._add_pm(caps, PM_CAP_OFFSET)
        if self.msi_vectors:
            self._add_msi(caps, MSI_CAP_OFFSET)
        if self.pcie is not None:
            self._add_pcie(caps, PCIE_CAP_OFFSET)
        if self.msix is not None:
            self._add_msix(caps, MSIX_CAP_OFFSET)
        resizable = [spec for spec in self.bars.values() if spec.rebar_sizes]
        if resizable:
            self._add_rebar(caps, REBAR_EXT_CAP_OFFSET, resizable)

    def _add_pm(self, caps: CapabilityBuilder, offset: int) -> None:
        caps.add(pci_regs.PCI_CAP_ID_PM, offset)
        self.cfg.put(offset + pci_regs.PCI_PM_PMC, 2, PM_CAP_VERSION_1_2)
        control = pci_regs.PCI_PM_CTRL_NO_SOFT_RESET if self.pm_no_soft_reset else 0
        self.cfg.put(offset + pci_regs.PCI_PM_CTRL, 2, control, writable=PM_CTRL_STATE_MASK)

    def _add_msi(self, caps: CapabilityBuilder, offset: int) -> None:
        caps.add(pci_regs.PCI_CAP_ID_MSI, offset)
        multiple = self.msi_vectors.bit_length() - 1
        flags = (pci_regs.PCI_MSI_FLAGS_64BIT | pci_regs.PCI_MSI_FLAGS_MASKBIT
                 | field_put(pci_regs.PCI_MSI_FLAGS_QMASK, multiple))
        writable = pci_regs.PCI_MSI_FLAGS_ENABLE | pci_regs.PCI_MSI_FLAGS_QSIZE
        self.cfg.put(offset + pci_regs.PCI_MSI_FLAGS, 2, flags, writable=writable)
        self.cfg.put(offset + pci_regs.PCI_MSI_ADDRESS_LO, 4, 0, writable=MSI_ADDRESS_LO_WRITABLE)
        self.cfg.put(offset + pci_regs.PCI_MSI_ADDRESS_HI, 4, 0, writable=0xFFFFFFFF)
        self.cfg.put(offset + pci_regs.PCI_MSI_DATA_64, 2, 0, writable=MSI_DATA_MASK)
        vector_bits = (1 << self.msi_vectors) - 1
        self.cfg.put(offset + pci_regs.PCI_MSI_MASK_64, 4, 0, writable=vector_bits)
        self.cfg.put(offset + pci_regs.PCI_MSI_PENDING_64, 4, 0)

    def _add_pcie(self, caps: CapabilityBuilder, offset: int) -> None:
        info = self.pcie
        caps.add(pci_regs.PCI_CAP_ID_EXP, offset)
        flags = PCIE_CAP_VERSION | field_put(pci_regs.PCI_EXP_FLAGS_TYPE, info.port_type)
        self.cfg.put(offset + pci_regs.PCI_EXP_FLAGS, 2, flags)
        devcap = field_put(pci_regs.PCI_EXP_DEVCAP_PAYLOAD, 1)  # 256-byte max payload
        if info.flr:
            devcap |= pci_regs.PCI_EXP_DEVCAP_FLR
        if info.hot_plug:
            flags |= pci_regs.PCI_EXP_FLAGS_SLOT
            self.cfg.put(offset + pci_regs.PCI_EXP_FLAGS, 2, flags)
            self.cfg.put(offset + pci_regs.PCI_EXP_SLTCAP, 4, pci_regs.PCI_EXP_SLTCAP_HPC)
        self.cfg.put(offset + pci_regs.PCI_EXP_DEVCAP, 4, devcap)
        devctl_writable = (pci_regs.PCI_EXP_DEVCTL_CERE | pci_regs.PCI_EXP_DEVCTL_NFERE
                           | pci_regs.PCI_EXP_DEVCTL_FERE | pci_regs.PCI_EXP_DEVCTL_URRE
                           | pci_regs.PCI_EXP_DEVCTL_RELAX_EN | pci_regs.PCI_EXP_DEVCTL_PAYLOAD
                           | pci_regs.PCI_EXP_DEVCTL_EXT_TAG | pci_regs.PCI_EXP_DEVCTL_NOSNOOP_EN
                           | pci_regs.PCI_EXP_DEVCTL_READRQ | pci_regs.PCI_EXP_DEVCTL_BCR_FLR)
        devctl = (pci_regs.PCI_EXP_DEVCTL_RELAX_EN | pci_regs.PCI_EXP_DEVCTL_NOSNOOP_EN
                  | pci_regs.PCI_EXP_DEVCTL_READRQ_512B)
        self.cfg.put(offset + pci_regs.PCI_EXP_DEVCTL, 2, devctl, writable=devctl_writable)
        self.cfg.put(offset + pci_regs.PCI_EXP_DEVSTA, 2, 0)
        link = info.link
        lnkcap = (field_put(pci_regs.PCI_EXP_LNKCAP_SLS, link.max_speed)
                  | field_put(pci_regs.PCI_EXP_LNKCAP_MLW, link.max_width))
        self.cfg.put(offset + pci_regs.PCI_EXP_LNKCAP, 4, lnkcap)
        self.cfg.put(offset + pci_regs.PCI_EXP_LNKCTL, 2, 0, writable=LNKCTL_WRITABLE)
        self.cfg.put(offset + pci_regs.PCI_EXP_LNKSTA, 2, self._link_status(link))
        # PCIe r5.0 sec 7.5.3.15-16: Completion Timeout Disable and LTR supported, so those two
        # Device Control 2 enables are RW (power-on 0); no timeout ranges: the value field is 0
        self.cfg.put(offset + pci_regs.PCI_EXP_DEVCAP2, 4,
                     pci_regs.PCI_EXP_DEVCAP2_COMP_TMOUT_DIS | pci_regs.PCI_EXP_DEVCAP2_LTR)
        self.cfg.put(offset + pci_regs.PCI_EXP_DEVCTL2, 2, 0,
                     writable=pci_regs.PCI_EXP_DEVCTL2_COMP_TMOUT_DIS | pci_regs.PCI_EXP_DEVCTL2_LTR_EN)
        speeds = 0
        for code in range(1, link.max_speed + 1):
            speeds |= pci_regs.PCI_EXP_LNKCAP2_SLS_2_5GB << (code - 1)
        self.cfg.put(offset + pci_regs.PCI_EXP_LNKCAP2, 4, speeds)
        self.cfg.put(offset + pci_regs.PCI_EXP_LNKCTL2, 2, link.max_speed,
                     writable=pci_regs.PCI_EXP_LNKSTA_CLS)

    @staticmethod
    def _link_status(link: PCIeLink) -> int:
        return (field_put(pci_regs.PCI_EXP_LNKSTA_CLS, link.speed)
                | field_put(pci_regs.PCI_EXP_LNKSTA_NLW, link.width)
                | pci_regs.PCI_EXP_LNKSTA_DLLLA)

    def _add_msix(self, caps: CapabilityBuilder, offset: int) -> None:
        layout = self.msix
        caps.add(pci_regs.PCI_CAP_ID_MSIX, offset)
        flags = field_put(pci_regs.PCI_MSIX_FLAGS_QSIZE, layout.vectors - 1)
        writable = pci_regs.PCI_MSIX_FLAGS_ENABLE | pci_regs.PCI_MSIX_FLAGS_MASKALL
        self.cfg.put(offset + pci_regs.PCI_MSIX_FLAGS, 2, flags, writable=writable)
        self.cfg.put(offset + pci_regs.PCI_MSIX_TABLE, 4, layout.table_offset | layout.bar)
        self.cfg.put(offset + pci_regs.PCI_MSIX_PBA, 4, layout.pba_offset | layout.bar)

    def _add_rebar(self, caps: CapabilityBuilder, offset: int, resizable: list[BarSpec]) -> None:
        caps.add_ext(pci_regs.PCI_EXT_CAP_ID_REBAR, REBAR_CAP_VERSION, offset)
        for position, spec in enumerate(resizable):
            entry = offset + position * REBAR_ENTRY_SIZE
            supported = 0
            for size in spec.rebar_sizes:
                supported |= 1 << (rebar_code(size) + mask_low(pci_regs.PCI_REBAR_CAP_SIZES))
            self.cfg.put(entry + pci_regs.PCI_REBAR_CAP, 4, supported)
            size_code = rebar_code(self.bar_sizes[spec.index])
            ctrl = spec.index | field_put(pci_regs.PCI_REBAR_CTRL_BAR_SIZE, size_code)
            if position == 0:
                ctrl |= field_put(pci_regs.PCI_REBAR_CTRL_NBAR_MASK, len(resizable))
            self.cfg.put(entry + pci_regs.PCI_REBAR_CTRL, 4, ctrl, writable=pci_regs.PCI_REBAR_CTRL_BAR_SIZE)

    # -- config access (what the bus delivers) -----------------------------------------------
    def responds(self) -> bool:
        """False while the function is gone, held in reset or still coming out of one: requests
        then master-abort (reads all ones, writes dropped)."""
        if not self.present or self.in_reset:
            return False
        return not self.ready_at or time.monotonic() >= self.ready_at

    def config_read(self, off: int, n: int) -> int:
        check_config_access(off, n, self.cfg.size)
        if not self.responds():
            if self._retry_status_visible() and off == pci_regs.PCI_VENDOR_ID and n >= 2:
                return all_ones(n) & ~CRS_ALL_ONES_VENDOR | CRS_VENDOR_ID
            return all_ones(n)
        return self.cfg.read(off, n)

    def _retry_status_visible(self) -> bool:
        """Present but still initialising after a reset, with CRS Software Visibility in use."""
        return self.present and not self.in_reset and self.faults.crs_visible

    def config_write(self, off: int, n: int, value: int) -> None:
        check_config_access(off, n, self.cfg.size)
        if not self.responds():
            return
        before = self.cfg.snapshot()
        self.cfg.write(off, n, value)
        self._after_config_write(off, n, before)

    def _touches(self, off: int, n: int, reg: int, reg_size: int) -> bool:
        return off < reg + reg_size and reg < off + n

    def _after_config_write(self, off: int, n: int, before: bytes) -> None:
        exp = self.cap_offsets.get(pci_regs.PCI_CAP_ID_EXP)
        if exp is not None and self._touches(off, n, exp + pci_regs.PCI_EXP_DEVCTL, 2):
            devctl = self.cfg.read(exp + pci_regs.PCI_EXP_DEVCTL, 2)
            if devctl & pci_regs.PCI_EXP_DEVCTL_BCR_FLR:
                self._clear_bits(exp + pci_regs.PCI_EXP_DEVCTL, 2, pci_regs.PCI_EXP_DEVCTL_BCR_FLR)
                if self.has_flr():
                    self.function_level_reset()
        rebar = self.ext_cap_offsets.get(pci_regs.PCI_EXT_CAP_ID_REBAR)
        if rebar is not None and self._touches(off, n, rebar, REBAR_ENTRY_SIZE * NUM_BARS + 4):
            self._apply_rebar_controls(rebar)
        msix = self.cap_offsets.get(pci_regs.PCI_CAP_ID_MSIX)
        if msix is not None and self._touches(off, n, msix + pci_regs.PCI_MSIX_FLAGS, 2):
            self._deliver_pending_msix()
        pm = self.cap_offsets.get(pci_regs.PCI_CAP_ID_PM)
        if pm is not None and self._touches(off, n, pm + pci_regs.PCI_PM_CTRL, 2):
            self._power_state_written(pm, before)

    def _power_state_written(self, pm: int, before: bytes) -> None:
        """PCI PM r1.2 sec 5.4: D3hot->D0 with No_Soft_Reset clear is an internal reset that puts
        config space and device state back to power-on values (what Linux's pci_pm_reset uses)."""
        control_at = pm + pci_regs.PCI_PM_CTRL
        old = int.from_bytes(before[control_at:control_at + 2], "little") & PM_CTRL_STATE_MASK
        control = self.cfg.read(control_at, 2)
        new = control & PM_CTRL_STATE_MASK
        soft_reset = not control & pci_regs.PCI_PM_CTRL_NO_SOFT_RESET
        if old == PM_STATE_D3HOT and new == PM_STATE_D0 and soft_reset:
            log.info("%s: D3hot->D0 without No_Soft_Reset: internal reset", self.bdf)
            self.state.pm_reset_count += 1
            self.hardware_reset()

    def power_state(self) -> int:
        """The PowerState field of the PM capability (PM_STATE_D0 without one)."""
        pm = self.cap_offsets.get(pci_regs.PCI_CAP_ID_PM)
        if pm is None:
            return PM_STATE_D0
        return self.cfg.read(pm + pci_regs.PCI_PM_CTRL, 2) & PM_CTRL_STATE_MASK

    def _clear_bits(self, off: int, n: int, bits: int) -> None:
        self.cfg.set_value(off, n, self.cfg.read(off, n) & ~bits)

    def _apply_rebar_controls(self, rebar: int) -> None:
        first_ctrl = self.cfg.read(rebar + pci_regs.PCI_REBAR_CTRL, 4)
        nbars = field_get(first_ctrl, pci_regs.PCI_REBAR_CTRL_NBAR_MASK)
        for position in range(nbars):
            entry = rebar + position * REBAR_ENTRY_SIZE
            ctrl = self.cfg.read(entry + pci_regs.PCI_REBAR_CTRL, 4)
            index = ctrl & pci_regs.PCI_REBAR_CTRL_BAR_IDX
            code = field_get(ctrl, pci_regs.PCI_REBAR_CTRL_BAR_SIZE)
            supported = self.cfg.read(entry + pci_regs.PCI_REBAR_CAP, 4)
            if not supported & (1 << (code + mask_low(pci_regs.PCI_REBAR_CAP_SIZES))):
                # PCIe r5.0 sec 7.8.6.3: an unsupported size is undefined; hardware keeps the old one
                log.warning("%s: ReBAR size code %d for BAR%d not supported; ignored", self.bdf, code, index)
                old = field_put(pci_regs.PCI_REBAR_CTRL_BAR_SIZE, rebar_code(self.bar_sizes[index]))
                kept = (ctrl & ~pci_regs.PCI_REBAR_CTRL_BAR_SIZE) | old
                self.cfg.set_value(entry + pci_regs.PCI_REBAR_CTRL, 4, kept)
                continue
            new_size = REBAR_UNIT << code
            if new_size != self.bar_sizes[index]:
                self.resize_bar(index, new_size)

    def resize_bar(self, index: int, new_size: int) -> None:
        """Hardware side of a ReBAR resize: the BAR now decodes `new_size`. Address bits below the
        new size become read-only zero, so a BAR whose assigned address is not aligned to the new
        size stops claiming it until software programs a new address."""
        address = self.bar_address(index)
        self.bar_sizes[index] = new_size
        self._init_bar(index, address)
        self.on_bar_resized(index, new_size)

    def on_bar_resized(self, index: int, new_size: int) -> None:
        """Models with memory windows follow the new size here."""

    # -- decoded state ---------------------------------------------------------------------------
    @property
    def command(self) -> int:
        return self.cfg.read(pci_regs.PCI_COMMAND, 2)

    def memory_enabled(self) -> bool:
        return bool(self.command & pci_regs.PCI_COMMAND_MEMORY)

    def bus_master_enabled(self) -> bool:
        return bool(self.command & pci_regs.PCI_COMMAND_MASTER)

    def bar_address(self, index: int) -> int:
        spec = self.bars[index]
        off = pci_regs.PCI_BASE_ADDRESS_0 + index * BAR_DWORD
        address = self.cfg.read(off, 4) & ~spec.flag_mask
        if spec.kind is BarKind.MEM64:
            address |= self.cfg.read(off + BAR_DWORD, 4) << 32
        return address

    def upstream_path(self) -> list["Bridge"]:
        path = []
        bridge = self.parent
        while bridge is not None:
            path.append(bridge)
            bridge = bridge.parent
        return path

    def decodes_memory(self, index: int | None = None) -> bool:
        """True when a request reaches BAR `index` (memory, or I/O for an I/O BAR): the function
        and every bridge above it decode that space."""
        enable = pci_regs.PCI_COMMAND_MEMORY
        if index is not None and self.bars[index].kind is BarKind.IO:
            enable = pci_regs.PCI_COMMAND_IO
        if not self.responds() or not self.command & enable:
            return False
        # PCI PM r1.2 sec 5.3.1.4: in D3hot a function answers configuration requests only
        if self.power_state() == PM_STATE_D3HOT:
            return False
        return all(bridge.responds() and bridge.memory_enabled() for bridge in self.upstream_path())

    def can_master(self) -> bool:
        """True when a DMA request from this function reaches the host (bus master all the way up)."""
        if not self.responds() or not self.bus_master_enabled():
            return False
        if self.power_state() == PM_STATE_D3HOT:
            return False
        return all(bridge.responds() and bridge.bus_master_enabled() for bridge in self.upstream_path())

    # -- BAR access ----------------------------------------------------------------------------
    def bar_claims(self, index: int) -> bool:
        """True when BAR `index` still decodes the address the kernel assigned (a BAR left holding
        its sizing pattern, say, no longer answers at the mapped address)."""
        assigned = self.assigned.get(index)
        return assigned is None or self.bar_address(index) == assigned

    def mmio_read(self, index: int, off: int, n: int) -> bytes:
        if self.mmio_observer is not None:
            self.mmio_observer(index, off, False)
        if not self.decodes_memory(index) or not self.bar_claims(index):
            return bytes([0xFF]) * n
        if self._in_msix(index, off):
            return self._msix_read(off, n)
        return self.bar_read(index, off, n)

    def mmio_write(self, index: int, off: int, data: bytes) -> None:
        if self.mmio_observer is not None:
            self.mmio_observer(index, off, True)
        if not self.decodes_memory(index) or not self.bar_claims(index):
            return
        if self.faults.drop_writes:
            self.faults.drop_writes -= 1 if self.faults.drop_writes > 0 else 0
            self.state.dropped_writes += 1
            return
        if self._in_msix(index, off):
            self._msix_write(off, data)
            return
        self.bar_write(index, off, data)

    def bar_read(self, index: int, off: int, n: int) -> bytes:
        """Device registers: override. Default: a BAR backed by `bar_memory`, else zeros."""
        memory = self.bar_memory(index)
        if memory is not None:
            return bytes(memory[off:off + n])
        return bytes(n)

    def bar_write(self, index: int, off: int, data: bytes) -> None:
        memory = self.bar_memory(index)
        if memory is not None:
            memory[off:off + len(data)] = data

    def bar_memory(self, index: int) -> memoryview | None:
        """A writable buffer of the BAR's current size when the BAR is plain memory (VRAM, say).
        Such BARs map as MemoryRegion (zero-copy); others map through callbacks."""
        return None

    def bar_region(self, index: int, size: int | None = None) -> Region:
        """What mmap of `size` bytes (default: what the BAR decodes) of this BAR returns. Past the
        decoded size nothing answers: reads are all ones, writes vanish."""
        decoded = self.bar_sizes[index]
        size = decoded if size is None else size
        memory = self.bar_memory(index)
        if memory is not None and self.present and size <= decoded:
            return MemoryRegion(memory, size)
        return CallbackRegion(size,
                              lambda off, n: self._decoded_read(index, off, n),
                              lambda off, data: self._decoded_write(index, off, data))

    def _decoded_read(self, index: int, off: int, n: int) -> bytes:
        if off + n > self.bar_sizes[index]:
            self._stray_cpu_access(index, off, n, write=False)
            return bytes([0xFF]) * n
        return self.mmio_read(index, off, n)

    def _decoded_write(self, index: int, off: int, data: bytes) -> None:
        if off + len(data) <= self.bar_sizes[index]:
            self.mmio_write(index, off, data)
            return
        self._stray_cpu_access(index, off, len(data), write=True)

    def _stray_cpu_access(self, index: int, off: int, n: int, write: bool) -> None:
        """A CPU access through a mapping, past what the BAR decodes: on real hardware nothing
        claims it (the root complex completes it as Unsupported Request: reads all ones, writes
        lost), so the machine records it as a program error (`Machine.stray_accesses`)."""
        if self.machine is not None:
            self.machine.record_stray("cpu_write" if write else "cpu_read", self.bdf, off, n,
                                      f"BAR{index} offset {off:#x} (+{n}) is past the "
                                      f"{self.bar_sizes[index]:#x} bytes it decodes")

    # -- MSI-X table ---------------------------------------------------------------------------
    def _in_msix(self, index: int, off: int) -> bool:
        layout = self.msix
        if layout is None or layout.bar != index:
            return False
        table_end = layout.table_offset + len(self.msix_table)
        pba_end = layout.pba_offset + BAR_DWORD * 2
        return layout.table_offset <= off < table_end or layout.pba_offset <= off < pba_end

    def _msix_read(self, off: int, n: int) -> bytes:
        layout = self.msix
        if off >= layout.pba_offset and off < layout.pba_offset + BAR_DWORD * 2:
            pending = 0
            for vector in self.msix_pending:
                pending |= 1 << vector
            raw = pending.to_bytes(BAR_DWORD * 2, "little")
            start = off - layout.pba_offset
            return raw[start:start + n]
        start = off - layout.table_offset
        return bytes(self.msix_table[start:start + n])

    def _msix_write(self, off: int, data: bytes) -> None:
        layout = self.msix
        if off >= layout.pba_offset and off < layout.pba_offset + BAR_DWORD * 2:
            return  # PCIe r5.0 sec 7.7.2.6: the PBA is read-only
        start = off - layout.table_offset
        self.msix_table[start:start + len(data)] = data
        self._deliver_pending_msix()

    def _msix_entry(self, vector: int) -> tuple[int, int, bool]:
        base = vector * pci_regs.PCI_MSIX_ENTRY_SIZE
        table = self.msix_table
        lower = int.from_bytes(table[base + pci_regs.PCI_MSIX_ENTRY_LOWER_ADDR:][:4], "little")
        upper = int.from_bytes(table[base + pci_regs.PCI_MSIX_ENTRY_UPPER_ADDR:][:4], "little")
        data = int.from_bytes(table[base + pci_regs.PCI_MSIX_ENTRY_DATA:][:4], "little")
        ctrl = int.from_bytes(table[base + pci_regs.PCI_MSIX_ENTRY_VECTOR_CTRL:][:4], "little")
        return (upper << 32) | lower, data, bool(ctrl & pci_regs.PCI_MSIX_ENTRY_CTRL_MASKBIT)

    def msix_control(self) -> int:
        offset = self.cap_offsets.get(pci_regs.PCI_CAP_ID_MSIX)
        return 0 if offset is None else self.cfg.read(offset + pci_regs.PCI_MSIX_FLAGS, 2)

    def msi_control(self) -> int:
        offset = self.cap_offsets.get(pci_regs.PCI_CAP_ID_MSI)
        return 0 if offset is None else self.cfg.read(offset + pci_regs.PCI_MSI_FLAGS, 2)

    def _deliver_pending_msix(self) -> None:
        control = self.msix_control()
        if not control & pci_regs.PCI_MSIX_FLAGS_ENABLE or control & pci_regs.PCI_MSIX_FLAGS_MASKALL:
            return
        for vector in sorted(self.msix_pending):
            address, data, masked = self._msix_entry(vector)
            if not masked:
                self.msix_pending.discard(vector)
                self._send_message(address, data)

    # -- interrupts ----------------------------------------------------------------------------
    def raise_interrupt(self, vector: int = 0) -> bool:
        """Signal `vector` the way the function is configured: MSI-X, else MSI, else nothing (INTx
        is not modelled). Returns True if a message was sent or left pending in the PBA."""
        if not self.responds():
            return False
        control = self.msix_control()
        if control & pci_regs.PCI_MSIX_FLAGS_ENABLE:
            if vector >= self.msix.vectors:
                return False
            self.msix_pending.add(vector)
            self._deliver_pending_msix()
            return True
        msi_flags = self.msi_control()
        if msi_flags & pci_regs.PCI_MSI_FLAGS_ENABLE:
            offset = self.cap_offsets[pci_regs.PCI_CAP_ID_MSI]
            enabled = 1 << field_get(msi_flags, pci_regs.PCI_MSI_FLAGS_QSIZE)
            if vector >= enabled:
                return False
            mask = self.cfg.read(offset + pci_regs.PCI_MSI_MASK_64, 4)
            if mask & (1 << vector):
                pending = self.cfg.read(offset + pci_regs.PCI_MSI_PENDING_64, 4) | (1 << vector)
                self.cfg.set_value(offset + pci_regs.PCI_MSI_PENDING_64, 4, pending)
                return True
            address = self.cfg.read(offset + pci_regs.PCI_MSI_ADDRESS_LO, 4)
            address |= self.cfg.read(offset + pci_regs.PCI_MSI_ADDRESS_HI, 4) << 32
            data = self.cfg.read(offset + pci_regs.PCI_MSI_DATA_64, 2)
            # PCI r3.0 sec 6.8.1.8: with multiple messages the function modifies the low data bits
            self._send_message(address, (data & ~(enabled - 1)) | vector)
            return True
        status = self.cfg.read(pci_regs.PCI_STATUS, 2) | pci_regs.PCI_STATUS_INTERRUPT
        self.cfg.set_value(pci_regs.PCI_STATUS, 2, status)
        return False

    def _send_message(self, address: int, data: int) -> None:
        """An MSI is a posted 32-bit memory write of `data` to `address`, subject to bus mastering."""
        self.dma_write(address, (data & 0xFFFFFFFF).to_bytes(4, "little"))

    # -- DMA -----------------------------------------------------------------------------------
    def dma_read(self, address: int, n: int) -> bytes | None:
        """Read `n` bytes of host memory at bus `address`; None if the request failed."""
        if self.machine is None or not self.can_master():
            return None
        return (self.dma_port or self.machine.bus).dma_read(self, address, n)

    def dma_write(self, address: int, data: bytes) -> bool:
        if self.machine is None or not self.can_master():
            return False
        return (self.dma_port or self.machine.bus).dma_write(self, address, data)

    # -- resets --------------------------------------------------------------------------------
    def reset_device_state(self) -> None:
        """Device registers back to power-on values (override)."""

    def hardware_reset(self) -> None:
        """Whatever the reset kind: config space and device state return to power-on values.
        BARs are not sticky (PCIe r5.0 sec 6.6.2): they read back only their type bits until
        software writes the addresses again, as the kernel's reset paths do (pci_restore_state)."""
        self.state.reset_count += 1
        resized = [index for index, spec in self.bars.items() if self.bar_sizes[index] != spec.size]
        for index in resized:
            self.bar_sizes[index] = self.bars[index].size  # PCIe r5.0 sec 7.8.6.3: ReBAR size resets
        self._build_config()
        for index in resized:
            self.on_bar_resized(index, self.bar_sizes[index])
        self.reset_device_state()
        if self.faults.reset_ready_s > 0:
            self.ready_at = time.monotonic() + self.faults.reset_ready_s

    def function_level_reset(self) -> None:
        log.info("%s: function level reset", self.bdf)
        self.state.flr_count += 1
        self.hardware_reset()

    def set_link(self, speed: int, width: int) -> None:
        """Fault/condition hook: the link trained at another speed or width."""
        self.pcie.link.speed = speed
        self.pcie.link.width = width
        offset = self.cap_offsets[pci_regs.PCI_CAP_ID_EXP]
        self.cfg.set_value(offset + pci_regs.PCI_EXP_LNKSTA, 2, self._link_status(self.pcie.link))


class Bridge(PCIFunction):
    """A PCI-to-PCI bridge (Type 1 header): a root port or a switch port with a secondary bus."""

    header_type = pci_regs.PCI_HEADER_TYPE_BRIDGE
    default_driver = "pcieport"

    def __init__(self, identity: Identity, pcie: PCIeInfo) -> None:
        self.children: list[PCIFunction] = []
        self.secondary_bus = 0
        self.subordinate_bus = 0
        self.hot_plug_events_masked = False  # the kernel's own bus reset masks them (pciehp_reset_slot)
        super().__init__(identity, [], pcie)

    def _build_type_specific(self, cfg: ConfigSpace) -> None:
        cfg.put(pci_regs.PCI_PRIMARY_BUS, 1, 0, writable=0xFF)
        cfg.put(pci_regs.PCI_SECONDARY_BUS, 1, 0, writable=0xFF)
        cfg.put(pci_regs.PCI_SUBORDINATE_BUS, 1, 0, writable=0xFF)
        # PCI-to-PCI bridge r1.2 sec 3.2.5.8-9: memory base/limit hold address bits [31:20]
        window_bits = 0xFFF0
        cfg.put(pci_regs.PCI_MEMORY_BASE, 2, 0, writable=window_bits)
        cfg.put(pci_regs.PCI_MEMORY_LIMIT, 2, 0, writable=window_bits)
        cfg.put(pci_regs.PCI_PREF_MEMORY_BASE, 2, pci_regs.PCI_PREF_RANGE_TYPE_64, writable=window_bits)
        cfg.put(pci_regs.PCI_PREF_MEMORY_LIMIT, 2, pci_regs.PCI_PREF_RANGE_TYPE_64, writable=window_bits)
        cfg.put(pci_regs.PCI_PREF_BASE_UPPER32, 4, 0, writable=0xFFFFFFFF)
        cfg.put(pci_regs.PCI_PREF_LIMIT_UPPER32, 4, 0, writable=0xFFFFFFFF)
        bridge_control_writable = (pci_regs.PCI_BRIDGE_CTL_PARITY | pci_regs.PCI_BRIDGE_CTL_SERR
                                   | pci_regs.PCI_BRIDGE_CTL_BUS_RESET)
        cfg.put(pci_regs.PCI_BRIDGE_CONTROL, 2, 0, writable=bridge_control_writable)
        if self.secondary_bus:
            self._program_buses(cfg)

    def _program_buses(self, cfg: ConfigSpace) -> None:
        parent_bus = self.parent.secondary_bus if self.parent is not None else 0
        cfg.write(pci_regs.PCI_PRIMARY_BUS, 1, parent_bus)
        cfg.write(pci_regs.PCI_SECONDARY_BUS, 1, self.secondary_bus)
        cfg.write(pci_regs.PCI_SUBORDINATE_BUS, 1, self.subordinate_bus)

    def build_capabilities(self, caps: CapabilityBuilder) -> None:
        self._add_pm(caps, PM_CAP_OFFSET)
        self._add_pcie(caps, PCIE_CAP_OFFSET)

    def _after_config_write(self, off: int, n: int, before: bytes) -> None:
        super()._after_config_write(off, n, before)
        if self._touches(off, n, pci_regs.PCI_BRIDGE_CONTROL, 2):
            control_bytes = before[pci_regs.PCI_BRIDGE_CONTROL:pci_regs.PCI_BRIDGE_CONTROL + 2]
            old = int.from_bytes(control_bytes, "little")
            new = self.cfg.read(pci_regs.PCI_BRIDGE_CONTROL, 2)
            was = bool(old & pci_regs.PCI_BRIDGE_CTL_BUS_RESET)
            now = bool(new & pci_regs.PCI_BRIDGE_CTL_BUS_RESET)
            if now and not was:
                self._assert_secondary_reset()
            elif was and not now:
                self._release_secondary_reset()

    def descendants(self) -> list[PCIFunction]:
        found = []
        for child in self.children:
            found.append(child)
            if isinstance(child, Bridge):
                found.extend(child.descendants())
        return found

    def _assert_secondary_reset(self) -> None:
        log.info("%s: secondary bus reset asserted", self.bdf)
        for function in self.descendants():
            function.state.bus_reset_count += 1
            function.hardware_reset()
            function.in_reset = True
        if self._hot_plug_driver_sees_link_changes():
            self.machine.hot_plug_link_down(self)

    def _release_secondary_reset(self) -> None:
        log.info("%s: secondary bus reset released", self.bdf)
        for function in self.descendants():
            function.in_reset = False
            if isinstance(function, Bridge):
                function._program_buses(function.cfg)
        if self._hot_plug_driver_sees_link_changes():
            self.machine.hot_plug_link_up(self)

    def _hot_plug_driver_sees_link_changes(self) -> bool:
        """pciehp runs on a Hot-Plug Capable port its port driver owns; a bus reset the kernel did
        not start takes the link down under it."""
        if self.pcie is None or not self.pcie.hot_plug or self.hot_plug_events_masked or self.machine is None:
            return False
        return self.machine.kernel.driver_of(self.bdf) == self.default_driver



def rebar_code(size: int) -> int:
    """ReBAR size encoding: log2(size / 1 MiB)."""
    if size < REBAR_UNIT or size & (size - 1):
        raise ValueError(f"ReBAR size {size:#x} is not a power of two of at least 1 MiB")
    return (size // REBAR_UNIT).bit_length() - 1


def mask_low(mask: int) -> int:
    return (mask & -mask).bit_length() - 1


def check_config_access(off: int, n: int, size: int) -> None:
    """Config transactions are 1, 2 or 4 bytes, naturally aligned, inside the space."""
    if n not in (1, 2, 4) or off % n or off < 0 or off + n > size:
        raise ValueError(f"invalid config access of {n} bytes at {off:#x}")
