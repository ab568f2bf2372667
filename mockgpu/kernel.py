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

from mockgpu.pci import REBAR_ENTRY_SIZE, REBAR_UNIT, BarKind, Bridge, PCIFunction

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
            # the real kernel blocks until the VFIO device fd is closed; answering at once is kinder
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
        methods = []
        if function.has_flr():
            methods.append("flr")
        parent = function.parent
        # pci_parent_bus_reset: -ENOTTY when any other function the kernel knows shares the bus
        known = [child for child in parent.children if child.bdf in self.machine.functions] if parent else []
        alone = parent is not None and known == [function]
        if alone and not function.is_bridge:
            methods.append("bus")
        return methods

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
        """pci_reset_function: save config state, reset by the first method, restore the state."""
        function = self.machine.functions[bdf]
        methods = self.selected_reset_methods(function)
        if not methods:
            raise OSError(errno.ENOTTY, f"{bdf} has no reset method")
        saved = function.cfg.snapshot()
        saved_msix_table = bytes(function.msix_table)
        if methods[0] == "flr":
            function.function_level_reset()
        else:
            parent = function.parent
            control = parent.cfg.read(pci_regs.PCI_BRIDGE_CONTROL, 2)
            # pci_reset_hotplug_slot / pciehp_reset_slot: link events are masked around the reset
            parent.hot_plug_events_masked = True
            try:
                asserted = control | pci_regs.PCI_BRIDGE_CTL_BUS_RESET
                parent.config_write(pci_regs.PCI_BRIDGE_CONTROL, 2, asserted)
                parent.config_write(pci_regs.PCI_BRIDGE_CONTROL, 2, control)
            finally:
                parent.hot_plug_events_masked = False
        delay = function.ready_at - time.monotonic()
        if delay > 0:
            # pci_dev_wait: the kernel polls until the device answers again (up to a minute)
            if delay > RESET_READY_TIMEOUT_S:
                raise OSError(errno.ENOTTY, f"{bdf} not ready {RESET_READY_TIMEOUT_S} s after reset")
            time.sleep(delay)
        restore_rebar_state(function)
        restore_state(function, saved)
        function.msix_table[:] = saved_msix_table


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


def restore_state(function: PCIFunction, saved: bytes) -> None:
    """pci_restore_state: the standard header (BARs, Command last) and MSI/MSI-X control."""
    for index in range(SAVED_HEADER_DWORDS - 1, -1, -1):
        off = index * 4
        if off == pci_regs.PCI_COMMAND:
            continue
        function.cfg.write(off, 4, int.from_bytes(saved[off:off + 4], "little"))
    controls = ((pci_regs.PCI_CAP_ID_MSI, pci_regs.PCI_MSI_FLAGS),
                (pci_regs.PCI_CAP_ID_MSIX, pci_regs.PCI_MSIX_FLAGS))
    for cap_id, reg in controls:
        offset = function.cap_offsets.get(cap_id)
        if offset is None:
            continue
        if cap_id == pci_regs.PCI_CAP_ID_MSI:
            for sub in (pci_regs.PCI_MSI_ADDRESS_LO, pci_regs.PCI_MSI_ADDRESS_HI, pci_regs.PCI_MSI_DATA_64):
                start = offset + sub
                function.cfg.write(start, 4, int.from_bytes(saved[start:start + 4], "little"))
        start = offset + reg
        function.cfg.write(start, 2, int.from_bytes(saved[start:start + 2], "little"))
    command = int.from_bytes(saved[pci_regs.PCI_COMMAND:pci_regs.PCI_COMMAND + 2], "little")
    function.cfg.write(pci_regs.PCI_COMMAND, 2, command)
    if isinstance(function, Bridge):
        function._program_buses(function.cfg)


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) & ~(alignment - 1)
