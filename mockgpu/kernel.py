"""The simulated kernel's PCI core: drivers and binding, IOMMU groups, resource assignment, resets.

This is the policy Linux applies around the hardware (drivers/pci/pci-driver.c, pci-sysfs.c,
setup-bus.c, drivers/vfio): which driver a device binds to, what binding does to the Command
register, how `reset` saves and restores config state, and how BARs get addresses.
"""
from __future__ import annotations

import errno
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from autogen.linux import pci_regs

from mockgpu.pci import (PM_STATE_D0, PM_STATE_D3HOT, REBAR_ENTRY_SIZE, REBAR_UNIT, BarKind, BarSpec,
                         Bridge, PCIFunction)

if TYPE_CHECKING:
    from mockgpu.machine import Machine

log = logging.getLogger(__name__)

VFIO_PCI = "vfio-pci"
PCIEPORT = "pcieport"
PCI_STUB = "pci-stub"  # drivers/pci/pci-stub.c: binds only ids given to it, does nothing with them
# Where the simulated firmware places BARs (our layout): 32-bit MMIO below 4 GiB, 64-bit
# prefetchable high, I/O above the legacy ports. Each is the host bridge's window for that kind.
MMIO32_BASE = 0xC000_0000
MMIO32_WINDOW = 0x3EC0_0000  # up to 0xfec00000, where x86 puts the IOAPIC and LAPIC
MMIO64_BASE = 0x38_0000_0000
MMIO64_WINDOW = 256 << 30  # default host bridge window for 64-bit prefetchable BARs
IO_BASE = 0x1000
IO_WINDOW = 0xF000  # x86 I/O space ends at 0xffff
BRIDGE_WINDOW_GRANULE = 1 << 20  # PCI-to-PCI bridge r1.2 sec 3.2.5.8: memory windows are 1 MiB aligned
WINDOW_IO = "io"
WINDOW_MEM = "mem"
WINDOW_PREF64 = "pref64"
REBAR_CODE_LIMIT = 64  # include/uapi/linux/pci_regs.h: the size field is 6 bits (PCIe r6.0 sec 7.8.6.3)
# include/linux/errno.h: ENOTSUPP, a kernel-internal code that reaches user space unchanged from sysfs
ENOTSUPP = 524
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
    """A kernel PCI driver: its static id table plus ids added through new_id.

    `manages_dma`: the driver sets driver_managed_dma (vfio-pci, pcieport, pci-stub), so binding it
    does not make the device a user of the kernel's DMA API (drivers/pci/pci-driver.c
    pci_dma_configure). `enables_device`: its probe calls pci_enable_device (vfio-pci does that only
    when a VFIO user opens the device; pci-stub never does)."""

    name: str
    ids: set[tuple[int, int]] = field(default_factory=set)
    bridges: bool = False
    dynamic_ids: set[tuple[int, int]] = field(default_factory=set)
    manages_dma: bool = False
    enables_device: bool = True

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
            PCIEPORT: Driver(PCIEPORT, bridges=True, manages_dma=True),  # drivers/pci/pcie/portdrv.c
            VFIO_PCI: Driver(VFIO_PCI, manages_dma=True, enables_device=False),  # vfio/pci/vfio_pci.c
            PCI_STUB: Driver(PCI_STUB, manages_dma=True, enables_device=False),  # drivers/pci/pci-stub.c
        }
        self.bound: dict[str, str | None] = {}
        self.overrides: dict[str, str | None] = {}
        self.enable_count: dict[str, int] = {}  # pci_enable_device calls made through `enable`
        self.reset_selection: dict[str, list[str]] = {}
        self.groups: dict[int, list[str]] = {}
        self.group_of: dict[str, int] = {}
        # fake groups vfio made for devices without an IOMMU (drivers/vfio/group.c VFIO_NO_IOMMU)
        self.noiommu_groups: set[int] = set()
        # which incarnation of a group number is live: a removed group's number is handed out again
        # (iommu_group_alloc takes the lowest free id), and files opened on the old one must notice
        self.group_serial: dict[int, int] = {}
        self._group_serials = itertools.count(1)
        # how to revoke each resource file mapping user space holds, per function
        self.resource_mappings: dict[str, list[Callable[[], None]]] = {}

    # -- drivers -------------------------------------------------------------------------------
    def register_driver(self, name: str, vendor: int, device: int) -> None:
        driver = self.drivers.setdefault(name, Driver(name))
        driver.ids.add((vendor, device))

    def driver_of(self, bdf: str) -> str | None:
        return self.bound.get(bdf)

    def device_in_use(self, bdf: str) -> bool:
        return self.machine.vfio.device_open(bdf)

    def bind(self, bdf: str, driver_name: str) -> None:
        """drivers/<name>/bind (drivers/base/bus.c bind_store): ENODEV when the device is absent or
        the driver does not match it, EBUSY when it already has a driver (dd.c
        __driver_probe_device), else the probe's own error."""
        function = self.machine.functions.get(bdf)
        driver = self.drivers.get(driver_name)
        if function is None or driver is None:
            raise OSError(errno.ENODEV, f"no device {bdf} for {driver_name}")
        if not self._match(function, driver):
            raise OSError(errno.ENODEV, f"{driver_name} does not match {bdf}")
        if self.bound.get(bdf) is not None:
            raise OSError(errno.EBUSY, f"{bdf} is already bound to {self.bound[bdf]}")
        self._dma_configure(function, driver)
        self._attach(function, driver_name)

    def _match(self, function: PCIFunction, driver: Driver) -> bool:
        override = self.overrides.get(function.bdf)
        if override:
            return override == driver.name
        return driver.matches(function)

    def _dma_configure(self, function: PCIFunction, driver: Driver) -> None:
        """pci_dma_configure before the probe: a driver that does not manage its own DMA becomes a
        user of the group's default domain (drivers/iommu/iommu.c iommu_device_use_default_domain),
        which fails with EBUSY while VFIO owns the group."""
        if driver.manages_dma or not self.machine.iommu:
            return
        group = self.group_of.get(function.bdf)
        if group is not None and self.group_claimed_by_vfio(group):
            raise OSError(errno.EBUSY, f"IOMMU group {group} of {function.bdf} is owned by VFIO; "
                                       f"{driver.name} cannot use the kernel's DMA API there")

    def _attach(self, function: PCIFunction, name: str) -> None:
        """The driver's probe; a failure leaves the device unbound."""
        if name == VFIO_PCI and function.is_bridge:
            # drivers/vfio/pci/vfio_pci_core.c vfio_pci_core_register_device: only type 0 headers
            raise OSError(errno.EINVAL, f"vfio-pci does not drive bridges ({function.bdf})")
        if name == VFIO_PCI:
            self._vfio_set_group(function)
        self.bound[function.bdf] = name
        if self.drivers[name].enables_device:
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
        self.release_driver(bdf)
        if self.drivers[driver_name].enables_device and not self.enable_count.get(bdf):
            # the driver's remove calls pci_disable_device; the last disable clears bus mastering
            # (drivers/pci/pci.c pci_disable_device -> do_pci_disable_device)
            command = function.cfg.read(pci_regs.PCI_COMMAND, 2) & ~pci_regs.PCI_COMMAND_MASTER
            function.cfg.set_value(pci_regs.PCI_COMMAND, 2, command)
        log.info("%s unbound from %s", bdf, driver_name)

    def probe(self, bdf: str, strict: bool = False) -> None:
        """Bind an unbound device to the first matching driver (drivers/base/dd.c __device_attach).

        A probe that fails lets the next driver try; a DMA-configuration failure (EBUSY while VFIO
        owns the group) stops the walk, and `strict` (the drivers_probe attribute) reports it."""
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
                self._dma_configure(function, driver)
            except OSError as exc:
                log.info("%s: %s", bdf, exc)
                if strict:
                    raise
                return
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

    def sysfs_enable(self, bdf: str, text: str) -> None:
        """drivers/pci/pci-sysfs.c enable_store: a number (kstrtoul), EBUSY while a driver is bound;
        non-zero is pci_enable_device (a counted reference, the first turns decoding on), zero is
        pci_disable_device (the last reference turns bus mastering off), EIO when not enabled."""
        value = parse_unsigned(text)
        function = self.machine.functions[bdf]
        driver = self.bound.get(bdf)
        if driver is not None:
            raise OSError(errno.EBUSY, f"{bdf} is bound to {driver}; `enable` is for devices without one")
        count = self.enable_count.get(bdf, 0)
        if value:
            if count == 0:
                self._enable(function, master=False)
            self.enable_count[bdf] = count + 1
            return
        if count == 0:
            raise OSError(errno.EIO, f"{bdf} is not enabled")
        self.enable_count[bdf] = count - 1
        if count == 1:
            command = function.cfg.read(pci_regs.PCI_COMMAND, 2) & ~pci_regs.PCI_COMMAND_MASTER
            function.cfg.set_value(pci_regs.PCI_COMMAND, 2, command)

    def enable_references(self, bdf: str) -> int:
        """What `enable` shows: pdev->enable_cnt, one reference per pci_enable_device (the `enable`
        attribute, the bound driver's probe, vfio-pci while a VFIO user has the device open)."""
        count = self.enable_count.get(bdf, 0)
        driver = self.bound.get(bdf)
        if driver is not None and self.drivers[driver].enables_device:
            count += 1
        if driver == VFIO_PCI and self.device_in_use(bdf):
            count += 1  # drivers/vfio/pci/vfio_pci_core.c vfio_pci_core_enable
        return count

    # -- address space ---------------------------------------------------------------------------
    def host_window(self, kind: str) -> tuple[int, int]:
        """[start, end) of the host bridge window BARs of `kind` are assigned from."""
        if kind == WINDOW_IO:
            return IO_BASE, IO_BASE + IO_WINDOW
        if kind == WINDOW_PREF64:
            return MMIO64_BASE, MMIO64_BASE + self.machine.mmio64_window
        return MMIO32_BASE, MMIO32_BASE + MMIO32_WINDOW

    def _ranges(self, kind: str, functions: list[PCIFunction],
                skip: tuple[PCIFunction, set[int]] | None = None) -> list[tuple[int, int]]:
        """[start, end) of the assigned resources of `kind` among `functions`, minus `skip`'s BARs."""
        found = []
        for function in functions:
            for index, start in function.assigned.items():
                if window_kind(function.bars[index]) != kind:
                    continue
                if skip is not None and function is skip[0] and index in skip[1]:
                    continue
                found.append((start, start + function.assigned_sizes[index]))
        return found

    def _live_below(self, bridge: Bridge | None) -> list[PCIFunction]:
        if bridge is None:
            return list(self.machine.functions.values())
        return [each for each in bridge.descendants() if each.bdf in self.machine.functions]

    def assign_resources(self, function: PCIFunction, indexes: set[int] | None = None) -> None:
        """Give BARs (default: all) an address: the simulated firmware at boot, first fit in the
        host window of their kind, largest first (BARs are naturally aligned, PCI r3.0 sec
        6.2.5.1). A BAR that does not fit stays unassigned, as Linux leaves it (no resource)."""
        wanted = set(function.bars) if indexes is None else indexes
        for index in sorted(wanted, key=lambda i: (-function.bar_sizes[i], i)):
            kind = window_kind(function.bars[index])
            size = function.bar_sizes[index]
            taken = self._ranges(kind, [*self._live_below(None), function], (function, wanted))
            address = _first_fit(self.host_window(kind), size, taken)
            if address is None:
                log.warning("%s: no room for BAR%d (%#x bytes) in the host window",
                            function.bdf, index, size)
                continue
            function.assigned[index] = address
            function.assigned_sizes[index] = size
            function._program_bar(index, address)
            wanted = wanted - {index}

    def resource_range(self, function: PCIFunction, index: int) -> tuple[int, int] | None:
        """The kernel's resource for BAR `index`: what it assigned, whatever the hardware decodes now
        (a ReBAR size changed behind the kernel's back does not move the resource)."""
        if index not in function.bars:
            return None
        start = function.assigned.get(index)
        if start is None:
            return None
        return start, start + function.assigned_sizes[index] - 1

    def reclaim_resources(self, function: PCIFunction) -> None:
        """A function the kernel enumerates again (rescan, hot-plug link up) claims the addresses
        its BARs hold when nothing took them meanwhile (drivers/pci/setup-res.c
        pci_claim_resource); BARs whose range was taken get new addresses."""
        live = [each for each in self._live_below(None) if each is not function]
        moved = set()
        for index in sorted(function.assigned):
            kind = window_kind(function.bars[index])
            start = function.assigned[index]
            end = start + function.assigned_sizes[index]
            others = self._ranges(kind, live)
            if any(start < other_end and other_start < end for other_start, other_end in others):
                moved.add(index)
                continue
            function._program_bar(index, start)
        for index in moved:
            del function.assigned[index]
            del function.assigned_sizes[index]
        if moved:
            self.assign_resources(function, moved)

    def restore_bars(self, function: PCIFunction) -> None:
        """Write the assigned addresses back into the BARs (rescan of a function that lost them)."""
        for index, address in function.assigned.items():
            function._program_bar(index, address)

    # -- resource files and Resizable BAR ------------------------------------------------------
    def track_mapping(self, function: PCIFunction, revoke: Callable[[], None]) -> None:
        """Remember how to revoke a mapping of one of `function`'s resource files."""
        self.resource_mappings.setdefault(function.bdf, []).append(revoke)

    def revoke_resource_mappings(self, function: PCIFunction) -> None:
        """pci_remove_resource_files: sysfs removes the resourceN files and kernfs unmaps every
        mapping of them (fs/kernfs/file.c kernfs_drain_open_files); touching one afterwards is
        SIGBUS (kernfs_vma_fault), modelled by released memoryviews and revoked callbacks."""
        for revoke in self.resource_mappings.pop(function.bdf, []):
            revoke()

    def resize(self, bdf: str, index: int, text: str) -> None:
        """drivers/pci/pci-sysfs.c __resource_resize_store: a size code (kstrtoul), EBUSY while a
        driver is bound; memory decoding off, the resource files removed (their mappings die),
        pci_resize_resource, the files back and Command restored, whatever the outcome."""
        code = parse_unsigned(text)
        function = self.machine.functions[bdf]
        if self.bound.get(bdf) is not None:
            raise OSError(errno.EBUSY, f"{bdf} is bound to {self.bound[bdf]}; unbind it before resizing")
        command = function.cfg.read(pci_regs.PCI_COMMAND, 2)
        function.config_write(pci_regs.PCI_COMMAND, 2, command & ~pci_regs.PCI_COMMAND_MEMORY)
        self.revoke_resource_mappings(function)
        try:
            self._resize_resource(function, index, code)
        finally:
            function.config_write(pci_regs.PCI_COMMAND, 2, command)

    def _resize_resource(self, function: PCIFunction, index: int, code: int) -> None:
        """drivers/pci/rebar.c pci_resize_resource: ENOTSUPP when firmware asked to keep its
        assignment (host->preserve_config), EINVAL for a size the capability does not list, then
        drivers/pci/setup-bus.c pci_do_resource_release_and_resize: the new size goes into the
        ReBAR control, every BAR of the function in the same bridge window is released, and they
        are assigned again; ENOSPC puts the old size and addresses back."""
        if self.machine.preserve_config:
            raise OSError(ENOTSUPP, "firmware asks to preserve the PCI resource assignment "
                                    f"({function.bdf})")
        spec = function.bars.get(index)
        size = REBAR_UNIT << code if code < REBAR_CODE_LIMIT else 0
        if spec is None or size not in spec.rebar_sizes:
            raise OSError(errno.EINVAL, f"BAR{index} of {function.bdf} cannot be {size:#x} bytes")
        kind = window_kind(spec)
        released = {i for i in function.assigned if window_kind(function.bars[i]) == kind}
        old_code = rebar_code_of(function.bar_sizes[index])
        self._write_rebar_size(function, index, code)
        sizes = {i: function.assigned_sizes[i] for i in released}
        sizes[index] = size
        container, others = self._resize_room(function, kind, released)
        placement = _place(sizes, container, others)
        if placement is None:
            # the BAR size first: it decides which address bits the BAR keeps
            self._write_rebar_size(function, index, old_code)
            self.restore_bars(function)
            raise OSError(errno.ENOSPC, f"no room for BAR{index} of {function.bdf} at {size:#x} bytes in "
                                        f"[{container[0]:#x}, {container[1]:#x})")
        for bar, address in placement.items():
            function.assigned[bar] = address
            function.assigned_sizes[bar] = sizes[bar]
            function._program_bar(bar, address)

    def _resize_room(self, function: PCIFunction, kind: str,
                     released: set[int]) -> tuple[tuple[int, int], list[tuple[int, int]]]:
        """Where the released BARs may go (drivers/pci/setup-bus.c pci_reassign_bridge_resources):
        the kernel climbs from the function's bridge, releasing each window that holds nothing
        else, and assigns inside the first window still in use (fixed where it is) or, when every
        window up to the root port was released, inside the host bridge window."""
        bridge = function.parent
        while bridge is not None:
            below = self._live_below(bridge)
            others = self._ranges(kind, below, (function, released))
            if others:
                everything = self._ranges(kind, below)
                lowest = min(first for first, _ in everything)
                start = lowest - lowest % BRIDGE_WINDOW_GRANULE
                end = _align(max(last for _, last in everything), BRIDGE_WINDOW_GRANULE)
                return (start, end), others
            bridge = bridge.parent
        return self.host_window(kind), self._ranges(kind, self._live_below(None), (function, released))

    @staticmethod
    def _write_rebar_size(function: PCIFunction, index: int, code: int) -> None:
        """drivers/pci/rebar.c pci_rebar_set_size: the size field of the BAR's ReBAR control."""
        rebar = function.ext_cap_offsets[pci_regs.PCI_EXT_CAP_ID_REBAR]
        position = sorted(i for i, s in function.bars.items() if s.rebar_sizes).index(index)
        ctrl_off = rebar + position * REBAR_ENTRY_SIZE + pci_regs.PCI_REBAR_CTRL
        ctrl = function.cfg.read(ctrl_off, 4) & ~pci_regs.PCI_REBAR_CTRL_BAR_SIZE
        function.config_write(ctrl_off, 4, ctrl | (code << pci_regs.PCI_REBAR_CTRL_BAR_SHIFT))

    def release_driver(self, bdf: str) -> None:
        """The driver's remove: vfio-pci's drops the device's VFIO group (vfio_unregister_group_dev
        -> drivers/vfio/group.c vfio_device_remove_group), which ends a no-IOMMU group."""
        if self.bound.get(bdf) == VFIO_PCI:
            self._vfio_remove_group(bdf)
        self.bound[bdf] = None

    # -- groups --------------------------------------------------------------------------------
    def assign_group(self, function: PCIFunction, group: int | None) -> int | None:
        """The IOMMU driver's probe puts the device in a group (drivers/iommu/iommu.c
        iommu_probe_device); without an IOMMU no device has one."""
        if not self.machine.iommu:
            return None
        if group is None:
            slot = function.bdf[:-1]
            for other, gid in self.group_of.items():
                if other[:-1] == slot and not function.is_bridge:
                    group = gid
                    break
        if group is None:
            group = max(self.groups, default=-1) + 1
        if group not in self.groups:
            self.group_serial[group] = next(self._group_serials)
        self.groups.setdefault(group, []).append(function.bdf)
        self.group_of[function.bdf] = group
        return group

    def _vfio_set_group(self, function: PCIFunction) -> None:
        """drivers/vfio/group.c vfio_group_find_or_alloc, from vfio-pci's probe
        (vfio_pci_core_register_device -> vfio_register_group_dev): a device in an IOMMU group uses
        it; one without gets, in no-IOMMU mode, a fake group of its own (vfio_noiommu_group_alloc:
        iommu_group_alloc takes the lowest free id, named "vfio-noiommu", /dev/vfio/noiommu-<id>);
        otherwise the probe fails with EINVAL and the device stays unbound."""
        if function.bdf in self.group_of:
            return
        if not self.machine.noiommu:
            raise OSError(errno.EINVAL, f"{function.bdf} has no IOMMU group and VFIO no-IOMMU mode is off")
        group = next(gid for gid in itertools.count() if gid not in self.groups)
        self.groups[group] = [function.bdf]
        self.group_of[function.bdf] = group
        self.noiommu_groups.add(group)
        self.group_serial[group] = next(self._group_serials)
        log.warning("%s: vfio-noiommu group %d (kernel tainted)", function.bdf, group)

    def _vfio_remove_group(self, bdf: str) -> None:
        """vfio_device_remove_group for a no-IOMMU group: the device leaves it
        (iommu_group_remove_device), the group detaches from its container and goes away, and its
        /dev/vfio node with it; files still open on it answer ENODEV."""
        group = self.group_of.get(bdf)
        if group not in self.noiommu_groups:
            return
        del self.group_of[bdf]
        del self.groups[group]
        del self.group_serial[group]
        self.noiommu_groups.discard(group)
        self.machine.vfio.group_removed(group)

    def group_alive(self, group: int, serial: int | None) -> bool:
        """The group a file was opened on still exists (and is not a later group with its number)."""
        return serial is not None and self.group_serial.get(group) == serial

    def kernel_dma_users(self, group: int) -> list[str]:
        """Members bound to a driver that uses the kernel's DMA API (each holds one of the group's
        owner_cnt references, drivers/iommu/iommu.c iommu_device_use_default_domain); drivers with
        driver_managed_dma (vfio-pci, pcieport, pci-stub) take none."""
        users = []
        for bdf in self.groups.get(group, []):
            driver = self.bound.get(bdf)
            if driver is not None and not self.drivers[driver].manages_dma:
                users.append(bdf)
        return users

    def group_claimed_by_vfio(self, group: int) -> bool:
        """VFIO owns the group's DMA (iommu_group_claim_dma_owner at VFIO_GROUP_SET_CONTAINER)."""
        return group in self.machine.vfio.group_container

    def group_viable(self, group: int) -> bool:
        """drivers/vfio/group.c vfio_group_ioctl_get_status: viable when the group is already in a
        container, or when nothing holds its DMA ownership (iommu_group_dma_owner_claimed): every
        member unbound or on a driver that manages its own DMA."""
        if self.group_claimed_by_vfio(group):
            return True
        return not self.kernel_dma_users(group)

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


def parse_unsigned(text: str) -> int:
    """kstrtoul(buf, 0, ...) as sysfs stores use it (lib/kstrtox.c): decimal, 0x hex or 0-prefixed
    octal, at most one trailing newline; EINVAL for anything else."""
    value = text[:-1] if text.endswith("\n") else text
    base = 10
    digits = value
    if value[:2].lower() == "0x":
        base = 16
        digits = value[2:]
    elif len(value) > 1 and value.startswith("0"):
        base = 8
        digits = value[1:]
    if not digits.isascii() or not digits.isalnum():
        raise OSError(errno.EINVAL, f"expected an unsigned number, got {text!r}")
    try:
        return int(digits, base)
    except ValueError as exc:
        raise OSError(errno.EINVAL, f"expected an unsigned number, got {text!r}") from exc


def window_kind(spec: BarSpec) -> str:
    """Which bridge window holds a BAR (PCI-to-PCI bridge r1.2 sec 3.2.5): I/O, the 64-bit
    prefetchable window, or the non-prefetchable memory window (everything else)."""
    if spec.kind is BarKind.IO:
        return WINDOW_IO
    if spec.kind is BarKind.MEM64 and spec.prefetchable:
        return WINDOW_PREF64
    return WINDOW_MEM


def rebar_code_of(size: int) -> int:
    return (size // REBAR_UNIT).bit_length() - 1


def _first_fit(window: tuple[int, int], size: int, taken: list[tuple[int, int]]) -> int | None:
    """The lowest address in `window` aligned to `size` where `size` bytes overlap nothing taken."""
    address = _align(window[0], size)
    for start, end in sorted(taken):
        if address + size <= start:
            break
        if end > address:
            address = _align(end, size)
    if address + size > window[1]:
        return None
    return address


def _place(sizes: dict[int, int], window: tuple[int, int],
           taken: list[tuple[int, int]]) -> dict[int, int] | None:
    """Addresses for the BARs in `sizes`, largest first (drivers/pci/setup-bus.c sorts by
    alignment); None when one does not fit."""
    placed: dict[int, int] = {}
    occupied = list(taken)
    for index in sorted(sizes, key=lambda i: (-sizes[i], i)):
        address = _first_fit(window, sizes[index], occupied)
        if address is None:
            return None
        placed[index] = address
        occupied.append((address, address + sizes[index]))
    return placed


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) & ~(alignment - 1)
