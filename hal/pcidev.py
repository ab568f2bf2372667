"""PCIDevice: one opened PCI function, whatever backend reaches it.

It owns the policy every backend shares: validated typed config access, capability walks, BARs as
Regions (watched for all-ones reads), Resizable BAR, link status, DMA buffer bookkeeping,
interrupt waits, the choice of reset method (backend reset, FLR, secondary bus reset of the parent
bridge; `hal.reset` carries each out and keeps the config state the kernel would keep), the
ownership lock, handing the device back to its kernel driver, and releasing everything on close. Backends
(`hal.backend.PCIBackend`) supply only raw access.

Losing the device: a config or MMIO read of all ones followed by a read of all ones from a config
register that reaches the function (the vendor ID; the class/revision dword under VFIO, which
virtualises the IDs) raises DeviceLost; so does a backend that finds its transport gone (a USB
bridge unplugged, a remote socket closed). Either way the device remembers it: every later access
(config, BARs reached through callbacks, DMA buffers, interrupts) raises DeviceLost at once without
reaching the backend. Mapped BARs and host DMA memory are plain loads and stores and keep their
fast path (a device gone there reads all ones, which the watch catches).
"""
from __future__ import annotations

import logging

from autogen.linux import pci_regs as regs

from hal import config
from hal import reset as reset_ops
from hal.backend import EVENT_RELEASE, DMABuffer, PCIBackend
from hal.config import BarInfo, Capability, LinkStatus
from hal.errors import (DeviceLost, DeviceTimeout, HalError, InvalidArgument, UnsupportedOperation,
                        from_oserror)
from hal.lock import OwnershipLock
from hal.os import OS
from hal.pci.sysfs import SysfsPCI
from hal.region import Region, guard, watch_all_ones
from hal.reset import SavedConfig

log = logging.getLogger(__name__)

CONFIG_WIDTHS = (1, 2, 4)
RESET_METHODS = ("vfio", "hot", "sysfs", "flr", "bus", "remote")  # "remote": the server resets it
POLL_INTERVAL_S = 0.001  # pause between register reads in poll32
CLASS_CODE_SHIFT = 8  # the revision ID is the low byte of the class/revision dword


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
        if self._lost is None:
            self._lost = str(error)
            log.error("%s", error)
        return error

    def _ensure_not_lost(self) -> None:
        if self._lost is not None:
            raise DeviceLost(self._lost)

    def _guard(self, region: Region) -> Region:
        """`region` as handed out: callback regions (a transport behind them) check liveness first
        and remember a DeviceLost; memory regions are returned as they are (the fast path)."""
        return guard(region, self._ensure_not_lost, self._mark_lost)

    def check_alive(self, what: str = "a register") -> None:
        """Raise DeviceLost when the function stopped answering (called when `what` read all ones).

        Asked of a config register that reaches the function: the vendor ID, except under VFIO,
        which answers vendor and device ID from its own copy (drivers/vfio/pci/vfio_pci_config.c),
        so there the class/revision dword is read. Under VFIO a request from the kernel to give
        the device back (it is being unbound or removed) also counts as lost; a reported PCIe error
        is named in the message."""
        if self._lost is not None:
            raise DeviceLost(self._lost)
        offset, width = self.backend.presence_register
        try:
            events = self.backend.device_events()
            value = self.backend.config_read(offset, width)
        except DeviceLost as error:
            raise self._mark_lost(error) from None
        except OSError as exc:
            raise self._mark_lost(DeviceLost(
                f"{self.bdf}: config read failed while checking liveness: {exc}", errno=exc.errno)) from exc
        told = "".join(f"; {event.message}" for event in events)
        if value == (1 << (8 * width)) - 1:
            raise self._mark_lost(DeviceLost(
                f"{self.bdf} stopped answering: {what} read all ones and its config "
                f"{reset_ops.presence_name(offset)} reads {value:#x} (surprise removal, link down or a hung "
                f"device){told}; reset the slot or re-seat the card, then open the device again"))
        if any(event.kind == EVENT_RELEASE for event in events):
            raise self._mark_lost(DeviceLost(
                f"{self.bdf} is being taken away: {what} read all ones{told}; close it (the kernel "
                "waits for that before it can unbind or remove the device)"))

    def device_events(self) -> list[str]:
        """What the OS reported about the device since the last call (VFIO: the kernel asks for it
        back, a PCIe error was detected), one sentence each."""
        return [event.message for event in self.backend.device_events()]

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
        except DeviceLost as error:
            raise self._mark_lost(error) from None
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
        except DeviceLost as error:
            raise self._mark_lost(error) from None
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

    def pcie_capability(self) -> int:
        """Offset of the PCI Express capability; UnsupportedOperation when there is none."""
        offset = self.find_capability(regs.PCI_CAP_ID_EXP)
        if offset is None:
            raise UnsupportedOperation(f"{self.bdf} has no PCI Express capability")
        return offset

    def link_status(self) -> LinkStatus:
        return config.link_status(self, self.pcie_capability())

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
            self._require_decoding(index)
            raw = self.backend.map_bar(index)

            def probe(what: str, bar: int = index) -> None:
                self.check_alive(f"BAR{bar} {what}")

            region = watch_all_ones(self._guard(raw), probe)
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

    def _require_decoding(self, index: int) -> None:
        """A BAR is reached only while Command decodes its space. Under VFIO an mmap'ed access then
        is a SIGBUS that kills the process (drivers/vfio/pci/vfio_pci_core.c
        vfio_pci_mmap_huge_fault) and pread/pwrite fail with EIO (vfio_pci_rdwr.c), so hal maps no
        BAR while decoding is off. Checked when the BAR is first mapped, not on every bar() call (a
        hot path: drivers ring doorbells through it); turning decoding off later is the caller's
        doing."""
        is_io = self.cfg_read32(config.bar_register(index)) & regs.PCI_BASE_ADDRESS_SPACE_IO
        enable = regs.PCI_COMMAND_IO if is_io else regs.PCI_COMMAND_MEMORY
        if not self.cfg_read16(regs.PCI_COMMAND) & enable:
            fix = "set PCI_COMMAND_IO in Command" if is_io else "call enable_bus_master()"
            space = "I/O" if is_io else "memory"
            raise UnsupportedOperation(f"BAR{index} of {self.bdf} is unreachable: {space} decoding is off "
                                       f"in the Command register (an access would fault); {fix} first")

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
        """Resize BAR `index` to `size` bytes (one of `rebar_sizes(index)`).

        The kernel releases and reassigns every BAR of the device in the same bridge window (the
        others may move) and removes the resource files meanwhile, which kills their mappings
        (drivers/pci/pci-sysfs.c __resource_resize_store); so every BAR is unmapped first and mapped
        again by the next `bar()` call. Regions from `bar()` before the resize must not be used
        after it. Through vfio: this is refused (the kernel resizes only driverless devices); open
        with `bar_sizes=` instead."""
        self._ensure_usable()
        sizes = self.rebar_sizes(index)
        if not sizes:
            raise UnsupportedOperation(f"BAR{index} of {self.bdf} is not resizable (no Resizable BAR entry)")
        if size not in sizes:
            listed = ", ".join(f"{s:#x}" for s in sizes)
            raise InvalidArgument(f"BAR{index} of {self.bdf} cannot be {size:#x} bytes; supported: {listed}")
        self._unmap_bars()
        self.backend.resize_bar(index, size)

    # -- DMA ---------------------------------------------------------------------------------
    def alloc_dma(self, size: int) -> DMABuffer:
        """Pinned host memory (whole pages) with bus addresses; freed by free_dma or close()."""
        self._ensure_usable()
        if size <= 0:
            raise InvalidArgument(f"DMA buffer size must be positive, not {size}")
        try:
            buffer = self.backend.alloc_dma(size)
        except DeviceLost as error:
            raise self._mark_lost(error) from None
        buffer.region = self._guard(buffer.region)
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
    def dma_window(self) -> int | None:
        """Bytes of DMA memory the device can reach in all when that is scarce (the SRAM window of
        a USB bridge: put rings and tables in VRAM, stage copies), None when only the host limits
        it."""
        return self.backend.dma_window

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
        try:
            self._irq_fds = self.backend.enable_interrupts(kind, count)
        except DeviceLost as error:
            raise self._mark_lost(error) from None
        self._irq_kind = kind

    def disable_interrupts(self) -> None:
        if self._irq_fds:
            try:
                self.backend.disable_interrupts()
            except DeviceLost as error:
                raise self._mark_lost(error) from None
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

    # -- resets (hal.reset holds how each is done) -------------------------------------------
    def flr_supported(self) -> bool:
        return reset_ops.flr_supported(self)

    def reset_methods(self) -> list[str]:
        """Reset methods available for this device, in the order `reset("auto")` tries them."""
        methods = list(self.backend.reset_methods())
        if self.flr_supported():
            methods.append("flr")
        if reset_ops.bus_reset_refusal(self) is None:
            methods.append("bus")
        return methods

    def bus_reset_refusal(self) -> str | None:
        """Why a secondary bus reset of this function is refused, or None (see hal.reset)."""
        return reset_ops.bus_reset_refusal(self)

    def reset(self, method: str = "auto", ready_timeout_s: float | None = None) -> str:
        """Reset the function; returns the method used. Device state is cleared, config state restored.
        `ready_timeout_s` bounds the wait for the function to answer again afterwards (DeviceLost;
        None: hal.reset.DEVICE_READY_TIMEOUT_S).

        method: "auto" (first of reset_methods()), "vfio" (VFIO_DEVICE_RESET), "hot"
        (VFIO_DEVICE_PCI_HOT_RESET: a bus reset of this function and every other one on its bus, all
        of which must be bound to vfio-pci; for a GPU that shares its bus with its audio function),
        "sysfs" (the kernel's reset attribute), "flr" (function-level reset via PCIe Device Control),
        "bus" (secondary bus reset of the parent bridge, only for a function alone on that bus;
        through the kernel's reset_method when it offers "bus", else by the bridge's Bridge Control).
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
            reason = self.bus_reset_refusal() if method == "bus" else self.backend.reset_refusal(method)
            if reason is not None:
                raise UnsupportedOperation(f"no {method!r} reset: {reason}")
            raise UnsupportedOperation(f"{self.bdf} cannot do a {method!r} reset here; available: "
                                       f"{', '.join(available) or 'none'}")
        log.info("resetting %s by %s", self.bdf, method)
        irq = (self._irq_kind, len(self._irq_fds)) if self._irq_fds else None
        self.disable_interrupts()
        try:
            if method in ("flr", "bus"):
                saved = reset_ops.save_config_state(self)
                if method == "flr":
                    reset_ops.function_level_reset(self)
                elif reset_ops.kernel_offers_bus_reset(self):
                    reset_ops.kernel_bus_reset(self)
                else:
                    reset_ops.secondary_bus_reset(self)
                reset_ops.wait_device_ready(self, method, ready_timeout_s)
                reset_ops.restore_config_state(self, saved)
            else:
                self.backend.reset(method)
                reset_ops.wait_device_ready(self, method, ready_timeout_s)
        except DeviceLost as error:
            raise self._mark_lost(error) from None
        if irq is not None:
            self.enable_interrupts(*irq)
        return method

    # -- config state across resets -------------------------------------------------------------

    def save_config_state(self) -> SavedConfig:
        """The config state a reset clears and the kernel would restore (see hal.reset)."""
        return reset_ops.save_config_state(self)

    def restore_config_state(self, saved: SavedConfig) -> None:
        reset_ops.restore_config_state(self, saved)

    # -- ownership and life cycle -------------------------------------------------------------
    @property
    def holds_ownership_lock(self) -> bool:
        """Whether this handle holds the device's ownership lock (hal.open takes it)."""
        return self._lock is not None and self._lock.held

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
