"""PCIDevice: one opened PCI function, whatever backend reaches it.

It owns the policy every backend shares: validated typed config access, capability walks, BARs as
Regions (watched for all-ones reads), Resizable BAR, link status, DMA buffer bookkeeping,
interrupt waits, the reset ladder (backend reset, FLR, secondary bus reset of the parent bridge,
keeping across hal's own resets the config state the kernel would keep), the ownership lock, handing
the device back to its kernel driver, and releasing everything on close. Backends
(`hal.backend.PCIBackend`) supply only raw access.

Losing the device: the first config read of all ones, or MMIO read of all ones followed by a vendor
ID read of 0xffff, raises DeviceLost; every later access raises it at once.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from autogen.linux import pci_regs as regs

from hal import config
from hal.backend import DMABuffer, PCIBackend
from hal.config import BarInfo, Capability, LinkStatus
from hal.errors import (DeviceLost, DeviceTimeout, HalError, InvalidArgument, UnsupportedOperation,
                        from_oserror)
from hal.lock import OwnershipLock
from hal.os import OS
from hal.pci.sysfs import SysfsPCI
from hal.region import Region, watch_all_ones

log = logging.getLogger(__name__)

CONFIG_WIDTHS = (1, 2, 4)
HEADER_DWORDS = regs.PCI_STD_HEADER_SIZEOF // 4  # the type 0/1 header saved around resets
# PCIe r5.0 sec 6.6.2: after an FLR, software waits 100 ms before the function must answer again
FLR_SETTLE_S = 0.1
# PCIe r5.0 sec 6.6.1: 100 ms after a conventional reset before the first configuration request
BUS_RESET_SETTLE_S = 0.1
# PCI-to-PCI Bridge r1.2 sec 3.2.5.17 (and Linux pci_reset_secondary_bus): hold reset >= 1 ms; 2 ms used
BUS_RESET_HOLD_S = 0.002
# drivers/pci/pci.c PCIE_RESET_READY_POLL_MS: how long Linux lets a reset device stay not ready
DEVICE_READY_TIMEOUT_S = 60.0
# PCIe r5.0 sec 6.6.1: a device not ready 1.0 s after a reset may be broken; hal says so and keeps waiting
DEVICE_READY_EXPECTED_S = 1.0
READY_POLL_FIRST_S = 0.001  # first pause between vendor ID reads; doubled each time (pci_dev_wait does too)
READY_POLL_MAX_S = 0.1  # longest pause between vendor ID reads while waiting for readiness
# PCIe r5.0 sec 2.3.2: with CRS Software Visibility a not-ready function's vendor ID reads 0x0001
CRS_VENDOR_ID = 0x0001
NOT_READY_VENDOR_IDS = (config.ALL_ONES16, CRS_VENDOR_ID)
TRANSACTIONS_PENDING_TIMEOUT_S = 0.1  # bounded wait for outstanding DMA before an FLR
POLL_INTERVAL_S = 0.001
RESET_METHODS = ("vfio", "sysfs", "flr", "bus")
KERNEL_BUS_RESET = "bus"  # drivers/pci/pci.c pci_reset_fn_methods: the name reset_method uses for SBR
CLASS_CODE_SHIFT = 8  # the revision ID is the low byte of the class/revision dword
PCIE_CAP_VERSION_2 = 2  # PCIe r5.0 sec 7.5.3.2: DevCtl2/LnkCtl2 exist from capability version 2


@dataclass
class SavedConfig:
    """Config state kept across a reset hal drives itself, restored in the order Linux's
    pci_restore_state uses: PCIe control and Resizable BAR sizes, then the header (BARs before
    Command), then MSI/MSI-X. Each list holds (offset, width, value)."""

    before_header: list[tuple[int, int, int]] = field(default_factory=list)
    header: list[int] = field(default_factory=list)
    after_header: list[tuple[int, int, int]] = field(default_factory=list)


class PCIDevice:
    """An opened PCI function. Use as a context manager or call close()."""

    def __init__(self, backend: PCIBackend, os: OS, *, lock: OwnershipLock | None = None,
                 original_driver: str | None = None, rebind_on_close: bool = True,
                 detached: bool = False) -> None:
        self.backend = backend
        self.os = os
        self.bdf = backend.bdf
        self.sysfs = SysfsPCI(os)
        self.original_driver = original_driver
        # hal changed the binding at open (unbound original_driver, or bound vfio-pci to a device that
        # had no driver): handing back means original_driver again, or no driver and no override
        self.detached = detached or original_driver is not None
        self.rebind_on_close = rebind_on_close
        self._lock = lock
        self._bars: dict[int, Region] = {}
        self._raw_bars: dict[int, Region] = {}
        self._dma: list[DMABuffer] = []
        self._irq_fds: list[int] = []
        self._irq_kind: str | None = None
        self._lost: str | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"PCIDevice({self.backend.name}:{self.bdf})"

    def __enter__(self) -> "PCIDevice":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def device_string(self) -> str:
        return f"{self.backend.name}:{self.bdf}"

    # -- liveness ----------------------------------------------------------------------------
    def _ensure_usable(self) -> None:
        if self._closed:
            raise InvalidArgument(f"{self!r} is closed")
        if self._lost is not None:
            raise DeviceLost(self._lost)

    def _mark_lost(self, error: DeviceLost) -> DeviceLost:
        self._lost = str(error)
        log.error("%s", error)
        return error

    def check_alive(self, what: str = "a register") -> None:
        """Raise DeviceLost if the vendor ID reads all ones (called when `what` read all ones)."""
        try:
            config.check_vendor_alive(self._raw_cfg_read16, what, self.bdf)
        except DeviceLost as error:
            raise self._mark_lost(error) from None

    def _raw_cfg_read16(self, offset: int) -> int:
        try:
            return self.backend.config_read(offset, 2)
        except OSError as exc:
            raise self._mark_lost(DeviceLost(
                f"{self.bdf}: config read failed while checking liveness: {exc}", errno=exc.errno)) from exc

    @property
    def lost(self) -> bool:
        return self._lost is not None

    # -- config space ------------------------------------------------------------------------
    def _check_config_access(self, offset: int, width: int) -> None:
        if width not in CONFIG_WIDTHS:
            raise InvalidArgument(f"config access width {width} is not 1, 2 or 4 bytes")
        limit = self.backend.config_size()
        if offset < 0 or offset + width > limit:
            raise InvalidArgument(f"config offset {offset:#x}+{width} is outside the {limit:#x} bytes "
                                  f"the {self.backend.name} backend reaches")
        if offset % width:
            raise InvalidArgument(f"config offset {offset:#x} is not aligned to its width {width}")

    def cfg_read(self, offset: int, width: int) -> int:
        """Read `width` bytes (1, 2, 4) of config space. All ones from a dead device -> DeviceLost."""
        self._ensure_usable()
        self._check_config_access(offset, width)
        try:
            value = self.backend.config_read(offset, width)
        except OSError as exc:
            raise from_oserror(exc, f"reading config offset {offset:#x} of {self.bdf} "
                                    f"through {self.backend.name}") from exc
        if value == (1 << (8 * width)) - 1:
            self.check_alive(f"config offset {offset:#x}")
        return value

    def cfg_write(self, offset: int, width: int, value: int) -> None:
        self._ensure_usable()
        self._check_config_access(offset, width)
        if not 0 <= value < 1 << (8 * width):
            raise InvalidArgument(f"{value:#x} does not fit a {width}-byte config register")
        try:
            self.backend.config_write(offset, width, value)
        except OSError as exc:
            raise from_oserror(exc, f"writing config offset {offset:#x} of {self.bdf} "
                                    f"through {self.backend.name}") from exc

    def cfg_read8(self, offset: int) -> int:
        return self.cfg_read(offset, 1)

    def cfg_read16(self, offset: int) -> int:
        return self.cfg_read(offset, 2)

    def cfg_read32(self, offset: int) -> int:
        return self.cfg_read(offset, 4)

    def cfg_write8(self, offset: int, value: int) -> None:
        self.cfg_write(offset, 1, value)

    def cfg_write16(self, offset: int, value: int) -> None:
        self.cfg_write(offset, 2, value)

    def cfg_write32(self, offset: int, value: int) -> None:
        self.cfg_write(offset, 4, value)

    @property
    def vendor_id(self) -> int:
        return self.cfg_read16(regs.PCI_VENDOR_ID)

    @property
    def device_id(self) -> int:
        return self.cfg_read16(regs.PCI_DEVICE_ID)

    @property
    def class_code(self) -> int:
        """24-bit class code (base class, subclass, programming interface)."""
        # PCI Local Bus r3.0 sec 6.2.1: the dword at PCI_CLASS_REVISION is class code (23:0 << 8) | revision
        return self.cfg_read32(regs.PCI_CLASS_REVISION) >> CLASS_CODE_SHIFT

    def capabilities(self) -> list[Capability]:
        return config.capabilities(self)

    def extended_capabilities(self) -> list[Capability]:
        if self.backend.config_size() <= regs.PCI_CFG_SPACE_SIZE:
            return []
        return config.extended_capabilities(self)

    def find_capability(self, cap_id: int) -> int | None:
        return config.find_capability(self, cap_id)

    def find_extended_capability(self, cap_id: int) -> int | None:
        if self.backend.config_size() <= regs.PCI_CFG_SPACE_SIZE:
            return None
        return config.find_extended_capability(self, cap_id)

    def _pcie_capability(self) -> int:
        offset = self.find_capability(regs.PCI_CAP_ID_EXP)
        if offset is None:
            raise UnsupportedOperation(f"{self.bdf} has no PCI Express capability")
        return offset

    def link_status(self) -> LinkStatus:
        return config.link_status(self, self._pcie_capability())

    def enable_bus_master(self) -> None:
        """Let the device decode memory and master DMA (PCI_COMMAND memory + bus master)."""
        command = self.cfg_read16(regs.PCI_COMMAND)
        wanted = command | regs.PCI_COMMAND_MEMORY | regs.PCI_COMMAND_MASTER
        if wanted != command:
            self.cfg_write16(regs.PCI_COMMAND, wanted)

    # -- BARs --------------------------------------------------------------------------------
    def bars(self) -> list[BarInfo]:
        """Implemented BARs, sized as the kernel assigned them, with their type bits from config space."""
        self._ensure_usable()
        sizes = {index: res.size for index, res in self.backend.bar_resources().items()}
        return [info for info in config.decode_bars(self, sizes) if info.size]

    def bar_info(self, index: int) -> BarInfo:
        for info in self.bars():
            if info.index == index:
                return info
        raise InvalidArgument(f"BAR{index} of {self.bdf} is not implemented or is the upper half of a "
                              "64-bit BAR")

    def size_bar(self, index: int) -> int:
        """Size BAR `index` through config space (write all ones, read the mask, restore)."""
        self._check_bar_index(index)
        if config.is_upper_half_of_64bit_bar(self, index):
            raise InvalidArgument(f"BAR{index} of {self.bdf} is the upper half of the 64-bit BAR{index - 1}; "
                                  f"size BAR{index - 1}")
        return config.size_bar(self, index)

    @staticmethod
    def _check_bar_index(index: int) -> None:
        if not 0 <= index < regs.PCI_STD_NUM_BARS:
            raise InvalidArgument(f"BAR index {index} is not 0..{regs.PCI_STD_NUM_BARS - 1}")

    def bar(self, index: int, min_size: int = 0) -> Region:
        """BAR `index` as a Region (mapped once, kept until close). `min_size`: fail if smaller."""
        self._ensure_usable()
        self._check_bar_index(index)
        region = self._bars.get(index)
        if region is None:
            resources = self.backend.bar_resources()
            if index not in resources:
                raise InvalidArgument(f"BAR{index} of {self.bdf} is not implemented (implemented: "
                                      f"{', '.join(f'BAR{i}' for i in sorted(resources)) or 'none'})")
            raw = self.backend.map_bar(index)
            region = watch_all_ones(raw, lambda what, bar=index: self.check_alive(f"BAR{bar} {what}"))
            self._raw_bars[index] = raw
            self._bars[index] = region
        if region.size < min_size:
            hint = ""
            sizes = self.rebar_sizes(index)
            if sizes and max(sizes) >= min_size:
                hint = f"; it is resizable: resize_bar({index}, {min(s for s in sizes if s >= min_size):#x})"
            raise InvalidArgument(f"BAR{index} of {self.bdf} is {region.size:#x} bytes, "
                                  f"smaller than the {min_size:#x} requested{hint}")
        return region

    def _unmap_bars(self) -> None:
        for index in list(self._raw_bars):
            raw = self._raw_bars.pop(index)
            self._bars.pop(index, None)
            self.backend.unmap_bar(raw)

    def _rebar_entry(self, index: int) -> int | None:
        cap = self.find_extended_capability(regs.PCI_EXT_CAP_ID_REBAR)
        if cap is None:
            return None
        return config.rebar_entry(self, cap, index)

    def rebar_sizes(self, index: int) -> list[int]:
        """Sizes (bytes) BAR `index` can take through Resizable BAR; empty when it is not resizable."""
        self._check_bar_index(index)
        entry = self._rebar_entry(index)
        return [] if entry is None else config.rebar_supported_sizes(self, entry)

    def rebar_current_size(self, index: int) -> int | None:
        entry = self._rebar_entry(index)
        return None if entry is None else config.rebar_current_size(self, entry)

    def resize_bar(self, index: int, size: int) -> None:
        """Resize BAR `index` to `size` bytes (one of `rebar_sizes(index)`); remaps lazily after."""
        self._ensure_usable()
        sizes = self.rebar_sizes(index)
        if not sizes:
            raise UnsupportedOperation(f"BAR{index} of {self.bdf} is not resizable (no Resizable BAR entry)")
        if size not in sizes:
            listed = ", ".join(f"{s:#x}" for s in sizes)
            raise InvalidArgument(f"BAR{index} of {self.bdf} cannot be {size:#x} bytes; supported: {listed}")
        raw = self._raw_bars.pop(index, None)
        if raw is not None:
            self._bars.pop(index, None)
            self.backend.unmap_bar(raw)
        self.backend.resize_bar(index, size)

    # -- DMA ---------------------------------------------------------------------------------
    def alloc_dma(self, size: int) -> DMABuffer:
        """Pinned host memory (whole pages) with bus addresses; freed by free_dma or close()."""
        self._ensure_usable()
        if size <= 0:
            raise InvalidArgument(f"DMA buffer size must be positive, not {size}")
        buffer = self.backend.alloc_dma(size)
        self._dma.append(buffer)
        return buffer

    def free_dma(self, buffer: DMABuffer) -> None:
        if buffer.freed:
            return
        if buffer not in self._dma:
            raise InvalidArgument("free_dma of a buffer this device did not allocate")
        self._dma.remove(buffer)
        self.backend.free_dma(buffer)
        buffer.freed = True

    @property
    def dma_buffers(self) -> list[DMABuffer]:
        return list(self._dma)

    # -- interrupts --------------------------------------------------------------------------
    def enable_interrupts(self, kind: str = "msi", count: int = 1) -> None:
        """Deliver `count` vectors of `kind` ("msi" or "msix"); wait for them with wait_irq."""
        self._ensure_usable()
        if kind not in ("msi", "msix"):
            raise InvalidArgument(f"interrupt kind {kind!r} is not 'msi' or 'msix'")
        if count < 1:
            raise InvalidArgument(f"interrupt vector count must be >= 1, not {count}")
        self.disable_interrupts()
        self._irq_fds = self.backend.enable_interrupts(kind, count)
        self._irq_kind = kind

    def disable_interrupts(self) -> None:
        if self._irq_fds:
            self.backend.disable_interrupts()
        self._irq_fds = []
        self._irq_kind = None

    def wait_irq(self, vector: int = 0, timeout_s: float = 1.0) -> int:
        """Wait for interrupt `vector`; returns how many fired since the last wait (>= 1)."""
        self._ensure_usable()
        if not self._irq_fds:
            raise InvalidArgument("no interrupts enabled; call enable_interrupts() first")
        if not 0 <= vector < len(self._irq_fds):
            raise InvalidArgument(f"vector {vector} is not 0..{len(self._irq_fds) - 1}")
        fd = self._irq_fds[vector]
        ready = self.os.poll([fd], timeout_s)
        if fd not in ready:
            raise DeviceTimeout(f"no {self._irq_kind} interrupt on vector {vector} of {self.bdf} "
                                f"within {timeout_s} s (eventfd count 0)")
        try:
            raw = self.os.read(fd, 8)  # eventfd(2): reads return the 8-byte counter and clear it
        except OSError as exc:
            raise from_oserror(exc, f"reading the interrupt eventfd of vector {vector}") from exc
        return int.from_bytes(raw, "little")

    # -- polling -----------------------------------------------------------------------------
    def poll32(self, bar: int, offset: int, mask: int, expected: int, timeout_s: float = 1.0,
               what: str = "") -> int:
        """Read the 32-bit register at `offset` of BAR `bar` until (value & mask) == expected.

        Returns the last value. Raises DeviceTimeout naming the register, the expectation and the last
        value seen; a device that falls off the bus meanwhile raises DeviceLost (all-ones watch).
        """
        region = self.bar(bar)
        deadline = self.os.monotonic() + timeout_s
        value = region.read32(offset)
        while value & mask != expected:
            if self.os.monotonic() >= deadline:
                label = what or f"BAR{bar}+{offset:#x}"
                raise DeviceTimeout(f"{self.bdf}: {label} & {mask:#010x} did not become {expected:#010x} "
                                    f"within {timeout_s} s (last value {value:#010x})")
            self.os.sleep(POLL_INTERVAL_S)
            value = region.read32(offset)
        return value

    # -- resets ------------------------------------------------------------------------------
    def flr_supported(self) -> bool:
        offset = self.find_capability(regs.PCI_CAP_ID_EXP)
        if offset is None:
            return False
        return bool(self.cfg_read32(offset + regs.PCI_EXP_DEVCAP) & regs.PCI_EXP_DEVCAP_FLR)

    def reset_methods(self) -> list[str]:
        """Reset methods available for this device, in the order `reset("auto")` tries them."""
        methods = list(self.backend.reset_methods())
        if self.flr_supported():
            methods.append("flr")
        if self.bus_reset_refusal() is None:
            methods.append("bus")
        return methods

    def bus_reset_refusal(self) -> str | None:
        """Why a secondary bus reset of this function is refused, or None when it may be done.

        Like Linux pci_parent_bus_reset: only a function alone on its parent's secondary bus (an
        SBR resets every function there, behind their drivers' backs), never a bridge. A raw SBR
        below a Hot-Plug Capable port makes pciehp see the link go down and remove the device; the
        kernel masks those events in its own bus reset, so there only the kernel's path is used.
        """
        bridge = self.sysfs.parent_bridge(self.bdf)
        if bridge is None:
            return f"{self.bdf} sits on a root bus; no bridge can reset it"
        header_type = self.cfg_read8(regs.PCI_HEADER_TYPE) & regs.PCI_HEADER_TYPE_MASK
        if header_type == regs.PCI_HEADER_TYPE_BRIDGE:
            return f"{self.bdf} is a bridge; a bus reset of its parent would reset everything below it"
        siblings = self._bus_siblings()
        if siblings:
            return (f"{self.bdf} shares its bus with {', '.join(siblings)}; a bus reset would reset them "
                    "too, behind their drivers' backs")
        if self._kernel_offers_bus_reset():
            return None
        try:
            hot_plug = self._bridge_hot_plug_capable(bridge)
        except (HalError, OSError) as exc:
            return f"the Slot Capabilities of {bridge} above {self.bdf} cannot be read ({exc})"
        if hot_plug:
            return (f"{bridge} above {self.bdf} is a hot-plug capable port: a raw secondary bus reset "
                    "there makes the hot-plug driver remove the device, and this kernel offers no "
                    "'bus' in reset_method to do it safely")
        return None

    def _bus_siblings(self) -> list[str]:
        bus = self.bdf.rsplit(":", 1)[0]
        return [bdf for bdf in self.sysfs.list_bdfs() if bdf != self.bdf and bdf.rsplit(":", 1)[0] == bus]

    def _kernel_reset_methods(self) -> list[str] | None:
        """The kernel's reset_method list (Linux 5.15+), or None where there is no such attribute."""
        if not self.os.exists(self.sysfs.device_path(self.bdf, "reset_method")):
            return None
        return self.sysfs.read_attribute(self.bdf, "reset_method").split()

    def _kernel_offers_bus_reset(self) -> bool:
        methods = self._kernel_reset_methods()
        return methods is not None and KERNEL_BUS_RESET in methods

    def _bridge_hot_plug_capable(self, bridge: str) -> bool:
        from hal.pci.backend import SysfsConfig

        with SysfsConfig(self.os, bridge, writable=False) as bridge_config:
            return config.hot_plug_capable(config.RawConfigAccess(bridge_config.read))

    def reset(self, method: str = "auto") -> str:
        """Reset the function; returns the method used. Device state is cleared, config state restored.

        method: "auto" (first of reset_methods()), "vfio" (VFIO_DEVICE_RESET), "sysfs" (the kernel's
        reset attribute), "flr" (function-level reset via PCIe Device Control), "bus" (secondary bus
        reset of the parent bridge, only for a function alone on that bus; through the kernel's
        reset_method when it offers "bus", else by the bridge's Bridge Control).
        """
        self._ensure_usable()
        available = self.reset_methods()
        if method == "auto":
            if not available:
                raise UnsupportedOperation(f"{self.bdf} offers no reset method through {self.backend.name}")
            method = available[0]
        elif method not in RESET_METHODS:
            known = ", ".join(RESET_METHODS)
            raise InvalidArgument(f"unknown reset method {method!r}; use one of auto, {known}")
        elif method not in available:
            reason = self.bus_reset_refusal() if method == "bus" else None
            if reason is not None:
                raise UnsupportedOperation(f"no 'bus' reset: {reason}")
            raise UnsupportedOperation(f"{self.bdf} cannot do a {method!r} reset here; available: "
                                       f"{', '.join(available) or 'none'}")
        log.info("resetting %s by %s", self.bdf, method)
        irq = (self._irq_kind, len(self._irq_fds)) if self._irq_fds else None
        self.disable_interrupts()
        if method in ("flr", "bus"):
            saved = self.save_config_state()
            if method == "flr":
                self._function_level_reset()
            elif self._kernel_offers_bus_reset():
                self._kernel_bus_reset()
            else:
                self._secondary_bus_reset()
            self._wait_device_ready(method)
            self.restore_config_state(saved)
        else:
            self.backend.reset(method)
            self._wait_device_ready(method)
        if irq is not None:
            self.enable_interrupts(*irq)
        return method

    # -- config state across resets -------------------------------------------------------------
    def save_config_state(self) -> SavedConfig:
        """What a reset clears and the kernel would restore: PCIe DevCtl/LnkCtl/DevCtl2/LnkCtl2,
        Resizable BAR sizes, the 64-byte header, MSI and MSI-X control."""
        saved = SavedConfig()
        saved.before_header = self._pcie_control_registers() + self._rebar_control_registers()
        saved.header = [self.cfg_read32(index * 4) for index in range(HEADER_DWORDS)]
        saved.after_header = self._msi_registers()
        return saved

    def restore_config_state(self, saved: SavedConfig) -> None:
        for offset, width, value in saved.before_header:
            self._restore_register(offset, width, value)
        # like Linux pci_restore_config_space: highest dword first, so the command register (which
        # turns decoding back on) comes after the BARs
        for index in reversed(range(HEADER_DWORDS)):
            if index * 4 == regs.PCI_COMMAND:
                continue
            self._restore_register(index * 4, 4, saved.header[index])
        # Command is always written (the upper half is Status, RW1C: left alone): vfio-pci puts the
        # physical BARs back on a Command write when a reset it did not do cleared them
        command = saved.header[regs.PCI_COMMAND // 4] & config.ALL_ONES16
        self.cfg_write16(regs.PCI_COMMAND, command)
        for offset, width, value in saved.after_header:
            self._restore_register(offset, width, value)

    def _restore_register(self, offset: int, width: int, value: int) -> None:
        if self.cfg_read(offset, width) != value:
            self.cfg_write(offset, width, value)

    def _pcie_control_registers(self) -> list[tuple[int, int, int]]:
        pcie = self.find_capability(regs.PCI_CAP_ID_EXP)
        if pcie is None:
            return []
        # the FLR and Retrain Link bits are commands, not state: never write them back
        devctl = self.cfg_read16(pcie + regs.PCI_EXP_DEVCTL) & ~regs.PCI_EXP_DEVCTL_BCR_FLR
        lnkctl = self.cfg_read16(pcie + regs.PCI_EXP_LNKCTL) & ~regs.PCI_EXP_LNKCTL_RL
        registers = [(pcie + regs.PCI_EXP_DEVCTL, 2, devctl), (pcie + regs.PCI_EXP_LNKCTL, 2, lnkctl)]
        version = self.cfg_read16(pcie + regs.PCI_EXP_FLAGS) & regs.PCI_EXP_FLAGS_VERS
        if version >= PCIE_CAP_VERSION_2:
            for register in (regs.PCI_EXP_DEVCTL2, regs.PCI_EXP_LNKCTL2):
                registers.append((pcie + register, 2, self.cfg_read16(pcie + register)))
        return registers

    def _rebar_control_registers(self) -> list[tuple[int, int, int]]:
        cap = self.find_extended_capability(regs.PCI_EXT_CAP_ID_REBAR)
        if cap is None:
            return []
        first = self.cfg_read32(cap + regs.PCI_REBAR_CTRL)
        count = (first & regs.PCI_REBAR_CTRL_NBAR_MASK) >> regs.PCI_REBAR_CTRL_NBAR_SHIFT
        registers = []
        for slot in range(max(count, 1)):
            offset = cap + slot * config.REBAR_ENTRY_STRIDE + regs.PCI_REBAR_CTRL
            registers.append((offset, 4, self.cfg_read32(offset)))
        return registers

    def _msi_registers(self) -> list[tuple[int, int, int]]:
        registers = []
        msi = self.find_capability(regs.PCI_CAP_ID_MSI)
        if msi is not None:
            flags = self.cfg_read16(msi + regs.PCI_MSI_FLAGS)
            data = regs.PCI_MSI_DATA_64 if flags & regs.PCI_MSI_FLAGS_64BIT else regs.PCI_MSI_DATA_32
            address_lo = msi + regs.PCI_MSI_ADDRESS_LO
            registers.append((address_lo, 4, self.cfg_read32(address_lo)))
            if flags & regs.PCI_MSI_FLAGS_64BIT:
                address_hi = msi + regs.PCI_MSI_ADDRESS_HI
                registers.append((address_hi, 4, self.cfg_read32(address_hi)))
            registers.append((msi + data, 2, self.cfg_read16(msi + data)))
            registers.append((msi + regs.PCI_MSI_FLAGS, 2, flags))  # enable last
        msix = self.find_capability(regs.PCI_CAP_ID_MSIX)
        if msix is not None:
            registers.append((msix + regs.PCI_MSIX_FLAGS, 2, self.cfg_read16(msix + regs.PCI_MSIX_FLAGS)))
        return registers

    def _function_level_reset(self) -> None:
        pcie = self._pcie_capability()
        deadline = self.os.monotonic() + TRANSACTIONS_PENDING_TIMEOUT_S
        status = self.cfg_read16(pcie + regs.PCI_EXP_DEVSTA)
        while status & regs.PCI_EXP_DEVSTA_TRPND and self.os.monotonic() < deadline:
            self.os.sleep(POLL_INTERVAL_S)
            status = self.cfg_read16(pcie + regs.PCI_EXP_DEVSTA)
        if status & regs.PCI_EXP_DEVSTA_TRPND:
            log.warning("%s still has transactions pending (DevSta %#x); resetting anyway", self.bdf, status)
        control = self.cfg_read16(pcie + regs.PCI_EXP_DEVCTL)
        self.cfg_write16(pcie + regs.PCI_EXP_DEVCTL, control | regs.PCI_EXP_DEVCTL_BCR_FLR)
        self.os.sleep(FLR_SETTLE_S)

    def _kernel_bus_reset(self) -> None:
        """Select "bus" in reset_method, write the reset attribute, put the selection back."""
        path = self.sysfs.device_path(self.bdf, "reset_method")
        original = self.sysfs.read_attribute(self.bdf, "reset_method")
        self.sysfs.write_attribute(path, KERNEL_BUS_RESET, f"selecting the kernel's bus reset of {self.bdf}")
        try:
            self.sysfs.write_attribute(self.sysfs.device_path(self.bdf, "reset"), "1",
                                       f"bus-resetting {self.bdf} through the kernel")
        finally:
            self.sysfs.write_attribute(path, original, f"restoring the reset methods of {self.bdf}")

    def _secondary_bus_reset(self) -> None:
        from hal.pci.backend import SysfsConfig

        bridge = self.sysfs.parent_bridge(self.bdf)
        if bridge is None:
            raise UnsupportedOperation(f"{self.bdf} sits on a root bus; no bridge can reset it")
        with SysfsConfig(self.os, bridge) as bridge_config:
            control = bridge_config.read(regs.PCI_BRIDGE_CONTROL, 2)
            bridge_config.write(regs.PCI_BRIDGE_CONTROL, 2, control | regs.PCI_BRIDGE_CTL_BUS_RESET)
            self.os.sleep(BUS_RESET_HOLD_S)
            released = control & ~regs.PCI_BRIDGE_CTL_BUS_RESET & config.ALL_ONES16
            bridge_config.write(regs.PCI_BRIDGE_CONTROL, 2, released)
        self.os.sleep(BUS_RESET_SETTLE_S)

    def _read_vendor_after_reset(self, method: str) -> int:
        try:
            return self.backend.config_read(regs.PCI_VENDOR_ID, 2)
        except OSError as exc:
            raise from_oserror(exc, f"reading the vendor ID of {self.bdf} after a {method} reset") from exc

    def _wait_device_ready(self, method: str) -> None:
        """Poll the vendor ID with growing pauses until the function answers (not all ones, not the
        0x0001 of Configuration Request Retry Status), for at most DEVICE_READY_TIMEOUT_S."""
        start = self.os.monotonic()
        deadline = start + DEVICE_READY_TIMEOUT_S
        pause = READY_POLL_FIRST_S
        warned = False
        vendor = self._read_vendor_after_reset(method)
        while vendor in NOT_READY_VENDOR_IDS:
            now = self.os.monotonic()
            if now >= deadline:
                raise self._mark_lost(DeviceLost(
                    f"{self.bdf} was not ready within {DEVICE_READY_TIMEOUT_S} s after a {method} reset "
                    f"(vendor ID still {vendor:#06x}; 0xffff: no answer, 0x0001: retry status)"))
            if not warned and now - start >= DEVICE_READY_EXPECTED_S:
                warned = True
                log.warning("%s not ready %.1f s after a %s reset (vendor ID %#06x); waiting up to %s s",
                            self.bdf, now - start, method, vendor, DEVICE_READY_TIMEOUT_S)
            self.os.sleep(min(pause, deadline - now))
            pause = min(pause * 2, READY_POLL_MAX_S)
            vendor = self._read_vendor_after_reset(method)

    # -- ownership and life cycle -------------------------------------------------------------
    def attach_lock(self, lock: OwnershipLock) -> None:
        """Make this device the holder of `lock`; close() releases it."""
        self._lock = lock

    def rebind(self) -> None:
        """Close the device now and hand it back to the kernel driver it had when opened."""
        self.close(rebind=True)

    def close(self, rebind: bool | None = None) -> None:
        """Release interrupts, DMA memory, BAR mappings, backend fds, the lock; hand the device back
        to its original kernel driver when `rebind` (default: as chosen at open)."""
        if self._closed:
            return
        self._closed = True
        errors: list[BaseException] = []
        steps = [self._close_interrupts, self._free_all_dma, self._unmap_bars, self.backend.close]
        for step in steps:
            try:
                step()
            except (HalError, OSError) as exc:
                errors.append(exc)
                log.warning("closing %s: %s", self.bdf, exc)
        should_rebind = self.rebind_on_close if rebind is None else rebind
        if should_rebind and self.detached:
            try:
                self.sysfs.rebind(self.bdf, self.original_driver)
            except HalError as exc:
                errors.append(exc)
        if self._lock is not None:
            self._lock.release()
        if errors:
            first = errors[0]
            if isinstance(first, HalError):
                raise first
            raise from_oserror(first, f"closing {self.bdf}")

    def _close_interrupts(self) -> None:
        if self._irq_fds:
            self.backend.disable_interrupts()
        self._irq_fds = []

    def _free_all_dma(self) -> None:
        """Free every buffer even when some fail; log each failure and raise the first."""
        first_error: HalError | OSError | None = None
        while self._dma:
            buffer = self._dma.pop()
            try:
                self.backend.free_dma(buffer)
            except (HalError, OSError) as exc:
                log.warning("%s: freeing a DMA buffer of %#x bytes failed: %s", self.bdf, buffer.size, exc)
                if first_error is None:
                    first_error = exc
                continue
            buffer.freed = True
        if first_error is not None:
            raise first_error
