"""`Machine`: one simulated computer (PCI topology, host RAM, IOMMU, kernel) and its OS seam.

    m = Machine.default()          # the standard topology, see `default`
    m.os                           # a hal.os.OS over the simulated kernel; give it to hal backends
    m.device("0000:01:00.0")       # the device model (EduDevice here)
    m.surprise_remove(bdf)         # fault injection: the function vanishes (all ones)

Time: device models may schedule work (`schedule`); pending work runs whenever the seam polls
(`OS.poll`) or a model's register read asks for it, so waits in the simulated machine advance
simulated events in real time, bounded by the caller's timeout.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import re
import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass
from typing import Callable

from autogen.linux import pci_regs

from hal.os import PAGE_SIZE
from mockgpu.bus import HostBus
from mockgpu.edu import EduDevice
from mockgpu.hostmem import DEFAULT_MEMLOCK_LIMIT, HostRAM, LockedMemoryAccount
from mockgpu.iommu import IOMMUFault
from mockgpu.kernel import MMIO64_WINDOW, PCIKernel
from mockgpu.mockos import MockOS
from mockgpu.amd.gpu import Navi31GPU
from mockgpu.navi31 import Navi31Audio
from mockgpu.pci import Bridge, PCIFunction
from mockgpu.ports import RootPort, SwitchDownstreamPort, SwitchUpstreamPort
from mockgpu.sysfs import SysfsTree
from mockgpu.usb.bus import USBBus
from mockgpu.vfio import GroupFile, VFIOKernel

log = logging.getLogger(__name__)

BDF_PATTERN = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$")
MAX_BUS = 255  # PCI r3.0 sec 3.2.2.3.1: bus numbers are 8 bits

EDU_BDF = "0000:01:00.0"
GPU_BDF = "0000:04:00.0"
GPU_AUDIO_BDF = "0000:04:00.1"
_DEFAULT = object()


@dataclass(frozen=True)
class StrayAccess:
    """An access outside what the program owns: `kind` "dma_write" (a device wrote host memory
    not set aside for DMA: `address` is physical), "cpu_read"/"cpu_write" (the CPU reached past
    what a mapped BAR decodes: `address` is the BAR offset); `reason` says which rule it broke."""

    kind: str
    bdf: str
    address: int
    size: int
    reason: str


class Machine:
    """A simulated machine. See the module docstring and docs/mockgpu.md."""

    def __init__(self, lock_dir: str | None = None, root: bool = True, iommu: bool = True,
                 noiommu: bool = False, scattered_ram: bool = True, iommu_passthrough: bool = True,
                 memlock_limit: int | None = DEFAULT_MEMLOCK_LIMIT,
                 cap_ipc_lock: bool | None = None,
                 mmio64_window: int = MMIO64_WINDOW, preserve_config: bool = False,
                 resource_files: bool = True) -> None:
        self.root = root
        # False: an architecture without PCI resource mmap (drivers/pci/pci-sysfs.c builds
        # pci_create_resource_files only with HAVE_PCI_MMAP or ARCH_GENERIC_PCI_MMAP_RESOURCE)
        self.resource_files = resource_files
        # the host bridge's window for 64-bit prefetchable BARs (what firmware gives PCI above 4 GiB)
        self.mmio64_window = mmio64_window
        # firmware asks the OS to keep its PCI resource assignment (ACPI _DSM function 5,
        # drivers/pci/pci-acpi.c pci_acpi_preserve_config): Linux then resizes no BAR (ENOTSUPP)
        self.preserve_config = preserve_config
        self._cap_ipc_lock = cap_ipc_lock
        self.iommu = iommu
        self.iommu_passthrough = iommu_passthrough
        self.noiommu = noiommu
        if lock_dir is None:
            lock_dir = tempfile.mkdtemp(prefix="gpuhal-mock-lock-")
            self._finalizer = weakref.finalize(self, shutil.rmtree, lock_dir, True)
        self.lock_dir = lock_dir
        self.functions: dict[str, PCIFunction] = {}
        self.removed: dict[str, PCIFunction] = {}
        self.ram = HostRAM(scattered=scattered_ram,
                           locked_vm=LockedMemoryAccount(memlock_limit, lambda: self.cap_ipc_lock))
        self.kernel = PCIKernel(self)
        self.vfio = VFIOKernel(self)
        self.bus = HostBus(self.ram, self.vfio.domain_for)
        self.stray_accesses: list[StrayAccess] = []
        self.bus.on_stray_write = lambda bdf, address, size, reason: self.record_stray(
            "dma_write", bdf, address, size, reason)
        # absolute path -> sysfs.Node for files kernel drivers outside the PCI core add (/dev nodes,
        # /proc files); mockgpu.nv adds /dev/nvidiactl and its neighbours here
        self.extra_files: dict[str, object] = {}
        self.sysfs = SysfsTree(self)
        self.usb = USBBus()  # USB devices by port path (mockgpu.usb: the ASM24xx bridge)
        self.os = MockOS(self)
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._event_order = itertools.count()
        self._next_bus = 1
        self._unplugged: dict[str, list[str]] = {}  # hot-plug port -> functions pciehp removed

    @classmethod
    def default(cls, lock_dir: str | None = None, root: bool = True, iommu: bool = True,
                **kwargs) -> "Machine":
        """The standard topology:

            00:01.0 root port -> 01:00.0 edu (driver "edu")
            00:02.0 root port -> 02:00.0 switch upstream -> 03:00.0 switch downstream
                -> 04:00.0 Navi31 GPU (mockgpu.amd, driver "amdgpu"), 04:00.1 HDMI audio ("snd_hda_intel")
        """
        machine = cls(lock_dir=lock_dir, root=root, iommu=iommu, **kwargs)
        machine.add_device(RootPort(pci_regs.PCI_EXP_LNKCAP_SLS_8_0GB, 1), "0000:00:01.0")
        machine.add_device(EduDevice(), EDU_BDF, "0000:00:01.0")
        machine.add_device(RootPort(), "0000:00:02.0")
        machine.add_device(SwitchUpstreamPort(), "0000:02:00.0", "0000:00:02.0")
        machine.add_device(SwitchDownstreamPort(), "0000:03:00.0", "0000:02:00.0")
        machine.add_device(Navi31GPU(), GPU_BDF, "0000:03:00.0")
        machine.add_device(Navi31Audio(), GPU_AUDIO_BDF, "0000:03:00.0")
        return machine

    # -- topology ------------------------------------------------------------------------------
    def add_device(self, model: PCIFunction, bdf: str, parent_bdf: str | None = None,
                   driver: str | None | object = _DEFAULT, group: int | None = None) -> PCIFunction:
        """Plug `model` in at `bdf` below the bridge `parent_bdf` (None: the root bus 0).

        The simulated firmware assigns its BARs (and, for a bridge, the next free bus number);
        the kernel puts it in an IOMMU group (shared with its slot's other functions unless
        `group` says otherwise) and binds `driver` (default: the model's `default_driver`)."""
        if not BDF_PATTERN.match(bdf):
            raise ValueError(f"{bdf!r} is not a domain:bus:device.function address")
        if bdf in self.functions:
            raise ValueError(f"{bdf} is already occupied")
        parent = None
        if parent_bdf is None:
            if int(bdf[5:7], 16) != 0:
                raise ValueError(f"{bdf} is not on the root bus; give its parent bridge")
        else:
            parent = self.functions.get(parent_bdf)
            if not isinstance(parent, Bridge):
                raise ValueError(f"{parent_bdf} is not a bridge in this machine")
            if int(bdf[5:7], 16) != parent.secondary_bus:
                raise ValueError(f"{bdf} is not on bus {parent.secondary_bus:02x} behind {parent_bdf}")
        model.machine = self
        model.bdf = bdf
        model.parent = parent
        if parent is not None:
            parent.children.append(model)
        if isinstance(model, Bridge):
            self._number_bridge(model)
        self.functions[bdf] = model
        self.kernel.assign_resources(model)
        self.kernel.assign_group(model, group)
        name = model.default_driver if driver is _DEFAULT else driver
        if name is not None:
            self.kernel.register_driver(name, model.identity.vendor, model.identity.device)
            self.kernel.probe(bdf)
        return model

    def _number_bridge(self, bridge: Bridge) -> None:
        if self._next_bus > MAX_BUS:
            raise ValueError("no bus numbers left")
        bridge.secondary_bus = self._next_bus
        bridge.subordinate_bus = self._next_bus
        self._next_bus += 1
        bridge._program_buses(bridge.cfg)
        for upstream in bridge.upstream_path():
            upstream.subordinate_bus = max(upstream.subordinate_bus, bridge.secondary_bus)
            upstream._program_buses(upstream.cfg)

    def device(self, bdf: str) -> PCIFunction:
        """The model at `bdf` (also after `remove`); KeyError if there never was one."""
        if bdf in self.functions:
            return self.functions[bdf]
        return self.removed[bdf]

    def remove(self, bdf: str) -> None:
        """The sysfs `remove` attribute: the kernel forgets the device and everything below it."""
        function = self.functions.get(bdf)
        if function is None:
            return
        below = function.descendants() if isinstance(function, Bridge) else []
        for gone in [*reversed(below), function]:
            driver = self.kernel.driver_of(gone.bdf)
            # vfio-pci's remove asks the user for the device (vfio_pci_core_request) and, in Linux,
            # waits for it; the simulation removes it at once
            self.vfio.request_release(gone.bdf)
            if driver is not None:
                self.kernel.release_driver(gone.bdf)
            # the struct pci_dev is freed: a rescan makes a new one without override, reset choice
            # or enable count; its resource files go, and with them every mapping of them
            self.kernel.overrides.pop(gone.bdf, None)
            self.kernel.reset_selection.pop(gone.bdf, None)
            self.kernel.enable_count.pop(gone.bdf, None)
            self.kernel.revoke_resource_mappings(gone)
            self.functions.pop(gone.bdf, None)
            self.removed[gone.bdf] = gone
        log.info("%s removed", bdf)

    def rescan(self) -> None:
        """The sysfs `rescan` attribute: find removed functions that still answer, rebind drivers."""
        for bdf, function in sorted(self.removed.items()):
            parent = function.parent
            if not function.present or (parent is not None and parent.bdf not in self.functions):
                continue
            del self.removed[bdf]
            self.functions[bdf] = function
            self.kernel.reclaim_resources(function)
            self.kernel.probe(bdf)

    def hot_plug_link_down(self, port: Bridge) -> None:
        """pciehp saw the link of `port` go down: the kernel removes everything below it."""
        gone = [bdf for bdf in (f.bdf for f in port.descendants()) if bdf in self.functions]
        self._unplugged.setdefault(port.bdf, []).extend(gone)
        for child in port.children:
            self.remove(child.bdf)
        log.info("%s: link down, hot-plug driver removed %s", port.bdf, ", ".join(gone) or "nothing")

    def hot_plug_link_up(self, port: Bridge) -> None:
        """pciehp saw the link come back: enumerate what is below, assign BARs, bind drivers."""
        for bdf in self._unplugged.pop(port.bdf, []):
            function = self.removed.pop(bdf, None)
            if function is None:
                continue
            self.functions[bdf] = function
            self.kernel.reclaim_resources(function)
            self.kernel.probe(bdf)
        log.info("%s: link up, devices below enumerated again", port.bdf)

    # -- privileges ----------------------------------------------------------------------------
    def set_root(self, root: bool) -> None:
        """Run the simulated process as root (True) or as an unprivileged user."""
        self.root = root

    @property
    def cap_ipc_lock(self) -> bool:
        """capable(CAP_IPC_LOCK): root has it unless `set_cap_ipc_lock` said otherwise."""
        if self._cap_ipc_lock is None:
            return self.root
        return self._cap_ipc_lock

    def set_cap_ipc_lock(self, capable: bool | None) -> None:
        """Give the process CAP_IPC_LOCK (True), take it away (False, also from root: a container
        that drops capabilities), or let it follow root again (None)."""
        self._cap_ipc_lock = capable

    def set_memlock_limit(self, limit_bytes: int | None) -> None:
        """RLIMIT_MEMLOCK of the process (`ulimit -l` times 1024; None: unlimited). mlock'ed memory
        and pages pinned by VFIO_IOMMU_MAP_DMA count against it without CAP_IPC_LOCK."""
        self.ram.locked_vm.limit_bytes = limit_bytes

    @property
    def locked_memory_bytes(self) -> int:
        """mm->locked_vm of the process in bytes (VmLck in /proc/self/status)."""
        return self.ram.locked_vm.locked_pages * PAGE_SIZE

    def set_msi_vector_limit(self, bdf: str, count: int | None) -> None:
        """The host grants `bdf` at most `count` MSI or MSI-X vectors when they are enabled (None:
        as many as asked). pci_alloc_irq_vectors then returns fewer than asked, and
        VFIO_DEVICE_SET_IRQS returns that positive count with the index left disabled
        (drivers/vfio/pci/vfio_pci_intrs.c vfio_msi_enable). On x86 without interrupt remapping a
        multi-message MSI gets 1 (drivers/pci/msi/msi.c msi_capability_init)."""
        if count is None:
            self.bus.interrupts.vector_limits.pop(bdf, None)
            return
        self.bus.interrupts.vector_limits[bdf] = count

    def open_group(self, path: str, group: int) -> GroupFile:
        """The kernel side of open("/dev/vfio/<group>"): one opener at a time."""
        if group in self.vfio.group_open:
            raise OSError(16, f"{path} is already open")  # EBUSY
        self.vfio.group_open.add(group)
        return GroupFile(self, path, group, self.kernel.group_serial.get(group))

    # -- observations --------------------------------------------------------------------------
    @property
    def iommu_faults(self) -> list[IOMMUFault]:
        """DMA the IOMMU refused, oldest first."""
        return self.bus.faults

    @property
    def stray_writes(self) -> list[StrayAccess]:
        """Writes outside what the program owns: device DMA to host memory it did not set aside
        for DMA (no IOMMU in the way) and CPU writes past a mapped BAR, oldest first."""
        return [access for access in self.stray_accesses if access.kind != "cpu_read"]

    def record_stray(self, kind: str, bdf: str, address: int, size: int, reason: str) -> None:
        self.stray_accesses.append(StrayAccess(kind, bdf, address, size, reason))
        log.warning("stray %s by %s at %#x (+%d): %s", kind, bdf, address, size, reason)

    # -- fault injection -----------------------------------------------------------------------
    def surprise_remove(self, bdf: str) -> None:
        """The function (and anything below it) drops off the bus without the kernel noticing:
        config space and register BARs read all ones, writes are dropped, no DMA or MSI.
        Memory-backed BAR mappings made before the removal keep their old contents."""
        function = self.device(bdf)
        gone = [function, *(function.descendants() if isinstance(function, Bridge) else [])]
        for each in gone:
            each.present = False
        log.info("%s surprise-removed", bdf)

    def hot_plug(self, bdf: str) -> None:
        """A surprise-removed function (and what was below it) is back, in its power-on state; the
        kernel restores its BAR assignment when it sees it again (`rescan`)."""
        function = self.device(bdf)
        for each in [function, *(function.descendants() if isinstance(function, Bridge) else [])]:
            each.present = True
            each.hardware_reset()

    def drop_posted_writes(self, bdf: str, count: int = -1) -> None:
        """The next `count` MMIO writes to `bdf` are lost (-1: all, until `count=0` is set)."""
        self.device(bdf).faults.drop_writes = count

    def set_reset_delay(self, bdf: str, seconds: float, crs_visible: bool = False) -> None:
        """After each reset, `bdf` reads all ones for `seconds` before it answers again; with
        `crs_visible` its vendor ID reads 0x0001 meanwhile (CRS Software Visibility)."""
        faults = self.device(bdf).faults
        faults.reset_ready_s = seconds
        faults.crs_visible = crs_visible

    def set_link(self, bdf: str, speed: int, width: int) -> None:
        """The link of `bdf` retrained at `speed` (PCI_EXP_LNKSTA_CLS_* code) and `width` lanes."""
        self.device(bdf).set_link(speed, width)

    # -- simulated time ------------------------------------------------------------------------
    def schedule(self, delay_s: float, action: Callable[[], None]) -> None:
        """Run `action` once `delay_s` seconds have passed (at the next poll or register read)."""
        heapq.heappush(self._events, (time.monotonic() + delay_s, next(self._event_order), action))

    def next_event_time(self) -> float | None:
        return self._events[0][0] if self._events else None

    def run_due_events(self) -> None:
        now = time.monotonic()
        while self._events and self._events[0][0] <= now:
            _, _, action = heapq.heappop(self._events)
            action()
