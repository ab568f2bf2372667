"""The simulated kernel's PCI core: drivers and binding, IOMMU groups, resource assignment, resets.

This is the policy Linux applies around the hardware (drivers/pci/pci-driver.c, pci-sysfs.c,
setup-bus.c, drivers/vfio): which driver a device binds to, what binding does to the Command
register, how `reset` saves and restores config state, and how BARs get addresses.
"""
from __future__ import annotations

import errno
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from autogen.linux import pci_regs

from mockgpu.pci import (PM_STATE_D0, PM_STATE_D3HOT, REBAR_ENTRY_SIZE, REBAR_UNIT, BarKind, BarSpec,
                         Bridge, PCIFunction)

if TYPE_CHECKING:
    from mockgpu.machine import Machine

log = logging.getLogger(__name__)

VFIO_PCI = "vfio-pci"
PCIEPORT = "pcieport"
# Where the simulated firmware places BARs: 32-bit MMIO below 4 GiB, 64-bit prefetchable high, I/O
MMIO32_BASE = 0xC000_0000
MMIO64_BASE = 0x38_0000_0000
IO_BASE = 0x1000
# Where pci_reset_function's save/restore covers: the standard header (include/linux/pci.h)
SAVED_HEADER_DWORDS = 16
RESET_READY_TIMEOUT_S = 60.0  # drivers/pci/pci.c: PCIE_RESET_READY_POLL_MS
# drivers/pci/pci-sysfs.c reset_method_store: this word selects every supported method again
RESET_METHOD_DEFAULT = "default"
# drivers/pci/pci.c pci_save_pcie_state: the PCIe control registers pci_restore_state writes back
SAVED_PCIE_CONTROLS = (pci_regs.PCI_EXP_DEVCTL, pci_regs.PCI_EXP_LNKCTL, pci_regs.PCI_EXP_SLTCTL,
                       pci_regs.PCI_EXP_RTCTL, pci_regs.PCI_EXP_DEVCTL2, pci_regs.PCI_EXP_LNKCTL2,
                       pci_regs.PCI_EXP_SLTCTL2)


@dataclass
class Driver:
    """A kernel PCI driver: its static id table plus ids added through new_id."""

    name: str
    ids: set[tuple[int, int]] = field(default_factory=set)
    bridges: bool = False
    dynamic_ids: set[tuple[int, int]] = field(default_factory=set)

    def matches(self, function: PCIFunction) -> bool:
        if self.bridges:
            return function.is_bridge
        key = (function.identity.vendor, function.identity.device)
        return key in self.ids or key in self.dynamic_ids


class PCIKernel:
    """Driver binding, groups and resources for one Machine."""

    def __init__(self, machine: "Machine") -> None:
        self.machine = machine
        self.drivers: dict[str, Driver] = {
            PCIEPORT: Driver(PCIEPORT, bridges=True),
            VFIO_PCI: Driver(VFIO_PCI),
        }
        self.bound: dict[str, str | None] = {}
        self.overrides: dict[str, str | None] = {}
        self.enable_count: dict[str, int] = {}
        self.reset_selection: dict[str, list[str]] = {}
        self.groups: dict[int, list[str]] = {}
        self.group_of: dict[str, int] = {}
        self._next_mmio32 = MMIO32_BASE
        self._next_mmio64 = MMIO64_BASE
        self._next_io = IO_BASE

    # -- drivers -------------------------------------------------------------------------------
    def register_driver(self, name: str, vendor: int, device: int) -> None:
        driver = self.drivers.setdefault(name, Driver(name))
        driver.ids.add((vendor, device))

    def driver_of(self, bdf: str) -> str | None:
        return self.bound.get(bdf)

    def device_in_use(self, bdf: str) -> bool:
        return self.machine.vfio.device_open(bdf)

    def bind(self, bdf: str, driver_name: str) -> None:
        """drivers/<name>/bind: ENODEV unless the device exists, is unbound and the driver matches."""
        function = self.machine.functions.get(bdf)
        driver = self.drivers.get(driver_name)
        if function is None or driver is None or self.bound.get(bdf) is not None:
            raise OSError(errno.ENODEV, f"cannot bind {bdf} to {driver_name}")
        if not self._match(function, driver):
            raise OSError(errno.ENODEV, f"{driver_name} does not match {bdf}")
        self._attach(function, driver_name)

    def _match(self, function: PCIFunction, driver: Driver) -> bool:
        override = self.overrides.get(function.bdf)
        if override:
            return override == driver.name
        return driver.matches(function)

    def _attach(self, function: PCIFunction, name: str) -> None:
        if name == VFIO_PCI and function.is_bridge:
            raise OSError(errno.EINVAL, f"vfio-pci does not drive bridges ({function.bdf})")
        self.bound[function.bdf] = name
        if name != VFIO_PCI:
            self._enable(function, master=True)
        log.info("%s bound to %s", function.bdf, name)

    def unbind(self, bdf: str, driver_name: str) -> None:
        if self.bound.get(bdf) != driver_name:
            raise OSError(errno.ENODEV, f"{bdf} is not bound to {driver_name}")
        if driver_name == VFIO_PCI and self.device_in_use(bdf):
            # the real kernel blocks until the VFIO device fd is closed, signalling the user's REQ
            # trigger meanwhile (vfio_unregister_group_dev -> vfio_pci_core_request); answering at
            # once is kinder
            self.machine.vfio.request_release(bdf)
            raise OSError(errno.EBUSY, f"{bdf} is open through VFIO")
        function = self.machine.functions[bdf]
        self.bound[bdf] = None
        if driver_name != VFIO_PCI:
            command = function.cfg.read(pci_regs.PCI_COMMAND, 2) & ~pci_regs.PCI_COMMAND_MASTER
            function.cfg.set_value(pci_regs.PCI_COMMAND, 2, command)
        log.info("%s unbound from %s", bdf, driver_name)

    def probe(self, bdf: str) -> None:
        """drivers_probe / device add: bind an unbound device to the first matching driver."""
        function = self.machine.functions.get(bdf)
        if function is None:
            raise OSError(errno.ENODEV, f"no device {bdf}")
        if self.bound.get(bdf) is not None:
            return
        override = self.overrides.get(bdf)
        candidates = [override] if override else list(self.drivers)
        for name in candidates:
            driver = self.drivers.get(name)
            if driver is None or not self._match(function, driver):
                continue
            try:
                self._attach(function, name)
            except OSError as exc:
                log.info("%s: probe by %s failed: %s", bdf, name, exc)
                continue
            return

    def new_id(self, driver_name: str, text: str) -> None:
        fields = text.split()
        if len(fields) < 2:
            raise OSError(errno.EINVAL, "new_id wants 'vendor device' in hex")
        try:
            vendor = int(fields[0], 16)
            device = int(fields[1], 16)
        except ValueError as exc:
            raise OSError(errno.EINVAL, f"bad new_id {text!r}") from exc
        driver = self.drivers[driver_name]
        key = (vendor, device)
        if key in driver.ids or key in driver.dynamic_ids:
            raise OSError(errno.EEXIST, f"{driver_name} already has id {vendor:04x}:{device:04x}")
        driver.dynamic_ids.add(key)
        for bdf in list(self.machine.functions):
            if self.bound.get(bdf) is None:
                self.probe(bdf)

    def set_override(self, bdf: str, text: str) -> None:
        name = text.strip()
        self.overrides[bdf] = name or None

    # -- enable / resources --------------------------------------------------------------------
    def _enable(self, function: PCIFunction, master: bool) -> None:
        command = function.cfg.read(pci_regs.PCI_COMMAND, 2) | pci_regs.PCI_COMMAND_MEMORY
        if any(spec.kind is BarKind.IO for spec in function.bars.values()):
            command |= pci_regs.PCI_COMMAND_IO
        if master:
            command |= pci_regs.PCI_COMMAND_MASTER
        function.cfg.set_value(pci_regs.PCI_COMMAND, 2, command)

    def sysfs_enable(self, bdf: str, on: bool) -> None:
        """The `enable` attribute: pci_enable_device / pci_disable_device."""
        function = self.machine.functions[bdf]
        count = self.enable_count.get(bdf, 0)
        if on:
            self._enable(function, master=False)
            self.enable_count[bdf] = count + 1
            return
        if count == 0:
            raise OSError(errno.EIO, f"{bdf} is not enabled")
        self.enable_count[bdf] = count - 1
        command = function.cfg.read(pci_regs.PCI_COMMAND, 2) & ~pci_regs.PCI_COMMAND_MASTER
        function.cfg.set_value(pci_regs.PCI_COMMAND, 2, command)

    def is_enabled(self, bdf: str) -> bool:
        return self.enable_count.get(bdf, 0) > 0 or self.bound.get(bdf) not in (None, VFIO_PCI)

    def assign_resources(self, function: PCIFunction) -> None:
        """Give every BAR an address (boot-time enumeration, rescan, after a resize)."""
        for index, spec in sorted(function.bars.items()):
            size = function.bar_sizes[index]
            if spec.kind is BarKind.IO:
                address = _align(self._next_io, size)
                self._next_io = address + size
            elif spec.kind is BarKind.MEM64 and spec.prefetchable:
                address = _align(self._next_mmio64, size)
                self._next_mmio64 = address + size
            else:
                address = _align(self._next_mmio32, size)
                self._next_mmio32 = address + size
            function.assigned[index] = address
            function.assigned_sizes[index] = size
            function._program_bar(index, address)

    def resource_range(self, function: PCIFunction, index: int) -> tuple[int, int] | None:
        """The kernel's resource for BAR `index`: what it assigned, whatever the hardware decodes now
        (a ReBAR size changed behind the kernel's back does not move the resource)."""
        if index not in function.bars:
            return None
        start = function.assigned.get(index)
        if start is None:
            return None
        return start, start + function.assigned_sizes[index] - 1

    def restore_bars(self, function: PCIFunction) -> None:
        """Write the assigned addresses back into the BARs (rescan of a function that lost them)."""
        for index, address in function.assigned.items():
            function._program_bar(index, address)

    def resize(self, bdf: str, index: int, code: int) -> None:
        """resourceN_resize: only without a driver; the kernel reassigns the BAR afterwards."""
        function = self.machine.functions[bdf]
        if self.bound.get(bdf) is not None:
            raise OSError(errno.EBUSY, f"{bdf} is bound to {self.bound[bdf]}; unbind it before resizing")
        spec = function.bars.get(index)
        size = REBAR_UNIT << code
        if spec is None or size not in spec.rebar_sizes:
            raise OSError(errno.EINVAL, f"BAR{index} of {bdf} cannot be {size:#x} bytes")
        command = function.cfg.read(pci_regs.PCI_COMMAND, 2)
        function.cfg.set_value(pci_regs.PCI_COMMAND, 2, command & ~pci_regs.PCI_COMMAND_MEMORY)
        rebar = function.ext_cap_offsets[pci_regs.PCI_EXT_CAP_ID_REBAR]
        position = sorted(i for i, s in function.bars.items() if s.rebar_sizes).index(index)
        ctrl_off = rebar + position * REBAR_ENTRY_SIZE + pci_regs.PCI_REBAR_CTRL
        ctrl = function.cfg.read(ctrl_off, 4) & ~pci_regs.PCI_REBAR_CTRL_BAR_SIZE
        function.config_write(ctrl_off, 4, ctrl | (code << pci_regs.PCI_REBAR_CTRL_BAR_SHIFT))
        self._next_mmio64 = _align(self._next_mmio64, size)
        function.assigned[index] = self._next_mmio64
        function.assigned_sizes[index] = size
        function._program_bar(index, self._next_mmio64)
        self._next_mmio64 += size
        function.cfg.set_value(pci_regs.PCI_COMMAND, 2, command)

    # -- groups --------------------------------------------------------------------------------
    def assign_group(self, function: PCIFunction, group: int | None) -> int:
        if group is None:
            slot = function.bdf[:-1]
            for other, gid in self.group_of.items():
                if other[:-1] == slot and not function.is_bridge:
                    group = gid
                    break
        if group is None:
            group = max(self.groups, default=-1) + 1
        self.groups.setdefault(group, []).append(function.bdf)
        self.group_of[function.bdf] = group
        return group

    def group_viable(self, group: int) -> bool:
        """Every device in the group is bound to vfio-pci or to nothing (vfio's DMA ownership rule)."""
        return all(self.bound.get(bdf) in (None, VFIO_PCI) for bdf in self.groups.get(group, []))

    def group_has_vfio(self, group: int) -> bool:
        return any(self.bound.get(bdf) == VFIO_PCI for bdf in self.groups.get(group, []))

    # -- kernel-mediated reset ---------------------------------------------------------------
    def reset_methods(self, function: PCIFunction) -> list[str]:
        """pci_init_reset_methods: the methods of drivers/pci/pci.c pci_reset_fn_methods that
        probe successfully, in that table's order (no device-specific or ACPI method is modelled)."""
        methods = []
        if function.has_flr():
            methods.append("flr")  # pcie_reset_flr: DevCap advertises FLR
        if self._pm_reset_possible(function):
            methods.append("pm")
        if self._bus_reset_possible(function):
            methods.append("bus")
        return methods

    def _pm_reset_possible(self, function: PCIFunction) -> bool:
        """pci_pm_reset: a PM capability whose control register has No_Soft_Reset clear."""
        pm = function.cap_offsets.get(pci_regs.PCI_CAP_ID_PM)
        if pm is None:
            return False
        control = function.cfg.read(pm + pci_regs.PCI_PM_CTRL, 2)
        return not control & pci_regs.PCI_PM_CTRL_NO_SOFT_RESET

    def _bus_reset_possible(self, function: PCIFunction) -> bool:
        """pci_reset_bus_function -> pci_parent_bus_reset: not a bridge, not on a root bus, and no
        other function the kernel knows on the bus (a hot-plug slot's reset_slot is offered under
        the same conditions for a single-function device, so it is not told apart here)."""
        parent = function.parent
        if parent is None or function.is_bridge:
            return False
        known = [child for child in parent.children if child.bdf in self.machine.functions]
        return known == [function]

    def selected_reset_methods(self, function: PCIFunction) -> list[str]:
        """What `reset_method` shows: the methods `reset` tries, in order (default: all supported)."""
        selected = self.reset_selection.get(function.bdf)
        supported = self.reset_methods(function)
        if selected is None:
            return supported
        return [method for method in selected if method in supported]

    def set_reset_method(self, bdf: str, text: str) -> None:
        """reset_method_store: "default", an empty line (no method), or supported names in order."""
        function = self.machine.functions[bdf]
        names = text.split()
        if names == [RESET_METHOD_DEFAULT]:
            self.reset_selection.pop(bdf, None)
            return
        supported = self.reset_methods(function)
        for name in names:
            if name not in supported:
                raise OSError(errno.EINVAL, f"{bdf}: reset method {name!r} is not supported "
                                            f"(supported: {' '.join(supported)})")
        self.reset_selection[bdf] = names

    def reset_function(self, bdf: str) -> None:
        """pci_reset_function: save config state and disable the function, reset it by the first
        selected method, restore the state. ENOTTY without a method."""
        function = self.machine.functions[bdf]
        if not self.selected_reset_methods(function):
            raise OSError(errno.ENOTTY, f"{bdf} has no reset method")
        saved = save_and_disable(function)
        try:
            self.reset_function_locked(function)
        finally:
            restore_state(function, saved)

    def try_reset_function(self, bdf: str) -> bool:
        """pci_try_reset_function as vfio_pci_core_enable uses it: True when a reset was done."""
        try:
            self.reset_function(bdf)
        except OSError as exc:
            if exc.errno != errno.ENOTTY:
                raise
            return False
        return True

    def reset_function_locked(self, function: PCIFunction) -> None:
        """__pci_reset_function_locked: reset by the first selected method, no save or restore
        (the caller does that); ENOTTY without a method."""
        methods = self.selected_reset_methods(function)
        if not methods:
            raise OSError(errno.ENOTTY, f"{function.bdf} has no reset method")
        method = methods[0]
        if method == "flr":
            function.function_level_reset()
        elif method == "pm":
            self._pm_reset(function)
        else:
            self._secondary_bus_reset(function.parent)
        wait_until_ready(function)

    def _pm_reset(self, function: PCIFunction) -> None:
        """pci_pm_reset: PowerState to D3hot and back to D0 (pci_dev_d3_sleep between is not
        simulated: the model changes state at once)."""
        control_at = function.cap_offsets[pci_regs.PCI_CAP_ID_PM] + pci_regs.PCI_PM_CTRL
        control = function.cfg.read(control_at, 2) & ~pci_regs.PCI_PM_CTRL_STATE_MASK
        function.config_write(control_at, 2, control | PM_STATE_D3HOT)
        function.config_write(control_at, 2, control | PM_STATE_D0)

    @staticmethod
    def _secondary_bus_reset(bridge: Bridge) -> None:
        """pci_reset_secondary_bus with hot-plug events masked (pciehp_reset_slot does that for a
        hot-plug port; the kernel's own bus reset never makes pciehp remove the devices)."""
        control = bridge.cfg.read(pci_regs.PCI_BRIDGE_CONTROL, 2)
        bridge.hot_plug_events_masked = True
        try:
            bridge.config_write(pci_regs.PCI_BRIDGE_CONTROL, 2, control | pci_regs.PCI_BRIDGE_CTL_BUS_RESET)
            bridge.config_write(pci_regs.PCI_BRIDGE_CONTROL, 2, control)
        finally:
            bridge.hot_plug_events_masked = False

    def bus_resettable(self, function: PCIFunction) -> bool:
        """pci_probe_reset_bus(function's bus) == 0: the bus has a bridge above it."""
        return function.parent is not None

    def functions_on_bus(self, function: PCIFunction) -> list[PCIFunction]:
        """pci_walk_bus(function's bus): every function the kernel knows on that bus and below it."""
        parent = function.parent
        if parent is None:
            return [function]
        return [each for each in parent.descendants() if each.bdf in self.machine.functions]

    def reset_bus(self, function: PCIFunction) -> None:
        """pci_reset_bus: save and disable every function on `function`'s bus and below, reset
        the bus through its bridge, wait for each function, restore them top down."""
        if not self.bus_resettable(function):
            raise OSError(errno.ENOTTY, f"{function.bdf} sits on a root bus; no bridge can reset it")
        affected = self.functions_on_bus(function)
        saved = [(each, save_and_disable(each)) for each in affected]
        self._secondary_bus_reset(function.parent)
        for each, state in saved:
            wait_until_ready(each)
            restore_state(each, state)


@dataclass
class SavedState:
    """pci_save_state: the config space as it was and the MSI-X table the kernel's MSI descriptors
    would rewrite (pci_restore_msi_state)."""

    config: bytes
    msix_table: bytes
    accessible: bool


def save_state(function: PCIFunction) -> SavedState:
    """pci_save_state (nothing to restore later from a function that does not answer)."""
    return SavedState(function.cfg.snapshot(), bytes(function.msix_table), function.responds())


def save_and_disable(function: PCIFunction) -> SavedState:
    """pci_dev_save_and_disable: save the state, then Command = INTx disable only (no decoding,
    no bus mastering). A function that does not answer is left alone (pci_dev_config_accessible)."""
    saved = save_state(function)
    if saved.accessible:
        function.config_write(pci_regs.PCI_COMMAND, 2, pci_regs.PCI_COMMAND_INTX_DISABLE)
    return saved


def wait_until_ready(function: PCIFunction) -> None:
    """pci_dev_wait: poll until the function answers again, for at most PCIE_RESET_READY_POLL_MS."""
    delay = function.ready_at - time.monotonic()
    if delay <= 0:
        return
    if delay > RESET_READY_TIMEOUT_S:
        raise OSError(errno.ENOTTY, f"{function.bdf} not ready {RESET_READY_TIMEOUT_S} s after reset")
    time.sleep(delay)


def restore_rebar_state(function: PCIFunction) -> None:
    """pci_restore_rebar_state: write each ReBAR control's size field from the kernel's resource."""
    rebar = function.ext_cap_offsets.get(pci_regs.PCI_EXT_CAP_ID_REBAR)
    if rebar is None:
        return
    resizable = sorted(index for index, spec in function.bars.items() if spec.rebar_sizes)
    for position, index in enumerate(resizable):
        size = function.assigned_sizes.get(index)
        if size is None:
            continue
        ctrl_off = rebar + position * REBAR_ENTRY_SIZE + pci_regs.PCI_REBAR_CTRL
        ctrl = function.cfg.read(ctrl_off, 4) & ~pci_regs.PCI_REBAR_CTRL_BAR_SIZE
        code = (size // REBAR_UNIT).bit_length() - 1
        function.config_write(ctrl_off, 4, ctrl | (code << pci_regs.PCI_REBAR_CTRL_BAR_SHIFT))


def restore_state(function: PCIFunction, saved: SavedState) -> None:
    """pci_restore_state, in its order: PCIe control registers, ReBAR sizes, the standard header
    (highest dword first, so Command comes after the BARs), MSI, then MSI-X."""
    if not saved.accessible or not function.responds():
        return
    data = saved.config
    exp = function.cap_offsets.get(pci_regs.PCI_CAP_ID_EXP)
    if exp is not None:
        for register in SAVED_PCIE_CONTROLS:
            start = exp + register
            function.config_write(start, 2, int.from_bytes(data[start:start + 2], "little"))
    restore_rebar_state(function)
    for index in range(SAVED_HEADER_DWORDS - 1, -1, -1):
        off = index * 4
        if off == pci_regs.PCI_COMMAND:
            continue
        function.config_write(off, 4, int.from_bytes(data[off:off + 4], "little"))
    command = int.from_bytes(data[pci_regs.PCI_COMMAND:pci_regs.PCI_COMMAND + 2], "little")
    function.config_write(pci_regs.PCI_COMMAND, 2, command)
    msi = function.cap_offsets.get(pci_regs.PCI_CAP_ID_MSI)
    if msi is not None:
        for sub, width in ((pci_regs.PCI_MSI_ADDRESS_LO, 4), (pci_regs.PCI_MSI_ADDRESS_HI, 4),
                           (pci_regs.PCI_MSI_DATA_64, 2), (pci_regs.PCI_MSI_MASK_64, 4),
                           (pci_regs.PCI_MSI_FLAGS, 2)):
            start = msi + sub
            function.config_write(start, width, int.from_bytes(data[start:start + width], "little"))
    function.msix_table[:] = saved.msix_table
    msix = function.cap_offsets.get(pci_regs.PCI_CAP_ID_MSIX)
    if msix is not None:
        start = msix + pci_regs.PCI_MSIX_FLAGS
        function.config_write(start, 2, int.from_bytes(data[start:start + 2], "little"))
    if isinstance(function, Bridge):
        function._program_buses(function.cfg)


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) & ~(alignment - 1)
