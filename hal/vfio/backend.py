"""The VFIO backend: a PCI function owned through /dev/vfio with the IOMMU isolating its DMA.

Container, group and device fds; the type 1 IOMMU with DMA map/unmap at IOVAs from our allocator;
config space and BARs through the device fd's regions (mmap where the region allows it, pread and
pwrite otherwise); MSI/MSI-X delivered to eventfds; VFIO_DEVICE_RESET and, for functions that share
their bus, VFIO_DEVICE_PCI_HOT_RESET; the ERR and REQ indexes armed so that device_events() hears
of PCIe errors and of the kernel asking for the device back. Liveness is read from the class/revision
dword, because vfio-pci answers vendor and device ID from its own copy. No-IOMMU mode (no isolation,
physical addresses from pagemap) is used only when the caller asks for it. The ABI (ioctl numbers,
struct layouts) is the kernel's, from the generated `autogen.linux.vfio` (include/uapi/linux/vfio.h).
"""
from __future__ import annotations

import errno
import logging

from autogen.linux import pci_regs as regs
from autogen.linux import vfio

from hal.backend import (EVENT_ERROR, EVENT_RELEASE, BarResource, DeviceEvent, DMABuffer, PCIBackend,
                         locked_memory_with_physical_pages)
from hal.errors import (BackendUnavailable, DeviceBusy, HalError, InvalidArgument, PermissionDenied,
                        UnsupportedOperation, from_oserror)
from hal.os import O_CLOEXEC, O_RDWR, OS, PAGE_SIZE
from hal.pci.sysfs import (HOST_BRIDGE_REASON, LARGEST_BAR_SIZE, NOIOMMU_GROUP_PREFIX, VFIO_GROUP_DIR,
                           VFIO_PCI_DRIVER, SysfsPCI, manages_own_dma)
from hal.region import CallbackRegion, Region
from hal.vfio.iova import IOVAAllocator

log = logging.getLogger(__name__)

NAME = "vfio"
VFIO_DRIVER = VFIO_PCI_DRIVER
CONTAINER_PATH = "/dev/vfio/vfio"
GROUP_DIR = VFIO_GROUP_DIR
C_INT_BYTES = 4  # the kernel ABI's `int`/`__s32` (container and eventfd descriptors in ioctl args)
EVENTFD_NONE = -1  # vfio.h VFIO_DEVICE_SET_IRQS: an fd of -1 de-assigns that vector
EVENTFD_COUNTER_BYTES = 8  # eventfd(2): a read returns the 8-byte counter
HOT_RESET = "hot"  # VFIO_DEVICE_PCI_HOT_RESET: a bus reset of every function of the bus
DEVFN_SLOT_SHIFT = 3  # include/uapi/linux/pci.h PCI_SLOT(devfn): devfn >> 3
DEVFN_FUNCTION_MASK = 0x7  # include/uapi/linux/pci.h PCI_FUNC(devfn): devfn & 7
IRQ_KINDS = {"msi": vfio.VFIO_PCI_MSI_IRQ_INDEX, "msix": vfio.VFIO_PCI_MSIX_IRQ_INDEX}
BAR_REGION_INDEXES = [
    vfio.VFIO_PCI_BAR0_REGION_INDEX, vfio.VFIO_PCI_BAR1_REGION_INDEX, vfio.VFIO_PCI_BAR2_REGION_INDEX,
    vfio.VFIO_PCI_BAR3_REGION_INDEX, vfio.VFIO_PCI_BAR4_REGION_INDEX, vfio.VFIO_PCI_BAR5_REGION_INDEX,
]

MISSING_VFIO = ("VFIO is not available: {path} is missing. Load it with `sudo modprobe vfio-pci` and "
                "enable the IOMMU (intel_iommu=on or amd_iommu=on on the kernel command line, VT-d or "
                "AMD-Vi in firmware); or use the sysfs backend, pci:{bdf}")
MEMLOCK_HINT = ("{error}: pinning these {size:#x} bytes (on top of {mapped:#x} bytes of DMA buffers mapped "
               "already) passes the locked-memory limit (RLIMIT_MEMLOCK), which VFIO charges for every "
               "page it pins. Raise it: `ulimit -l unlimited` in the shell that starts the program, a "
               "`memlock` line in /etc/security/limits.conf (LimitMEMLOCK= for a systemd service), or "
               "give the program CAP_IPC_LOCK (`sudo setcap cap_ipc_lock+ep "
               "$(readlink -f $(command -v python3))`); or free DMA buffers first")
PARTIAL_VECTORS = ("{bdf}: the host granted only {granted} of the {count} {kind} vectors asked for and "
                   "enabled none; ask for {granted}{advice}")
# drivers/pci/msi/msi.c msi_capability_init: without interrupt remapping x86 gives MSI one vector
MSI_PARTIAL_ADVICE = (", or use MSI-X (multi-message MSI needs interrupt remapping: intel_iommu=on or "
                      "amd_iommu=on)")
VIABILITY_RULE = (f"every device in the group must be unbound or bound to a driver that manages its own "
                  f"DMA ({VFIO_PCI_DRIVER}, pcieport, pci-stub)")
BIND_HINT = "`python -m tools.bind {bdf} --vfio` moves it and the members that must move to vfio-pci"
IN_USE_PREFIX = "in use by kernel driver"  # probe verdicts that a change of binding would cure
SHARED_PREFIX = "its IOMMU group"
NO_GROUP = ("{bdf} has no IOMMU group: the IOMMU is off or absent. Enable it (intel_iommu=on or "
            "amd_iommu=on, VT-d/AMD-Vi in firmware), or open pci:{bdf} (sysfs backend, no isolation), "
            "or ask for VFIO no-IOMMU mode explicitly (noiommu=True; unsafe, no isolation)")

NOIOMMU_OPEN_HINT = "open it with noiommu=True (unsafe: no DMA isolation, needs root)"


def _ioctl(os: OS, fd: int, request: int, arg, what: str) -> int:
    try:
        return os.ioctl(fd, request, arg)
    except OSError as exc:
        raise from_oserror(exc, what) from exc


class VfioBackend(PCIBackend):
    """A PCI function bound to vfio-pci. Open it with `hal.open("vfio:<bdf>")`."""

    name = NAME
    # vfio_pci_config.c answers vendor and device ID from its copy (init_pci_cap_basic_perm), so a
    # device that fell off the bus still shows them; the class/revision dword is read from the device
    presence_register = (regs.PCI_CLASS_REVISION, 4)

    def __init__(self, os: OS, bdf: str, noiommu: bool = False) -> None:
        super().__init__(bdf)
        self.os = os
        self.sysfs = SysfsPCI(os)
        self.noiommu = noiommu
        self._container_fd: int | None = None
        self._group_fd: int | None = None
        self._group: int | None = None
        self._event_fds: dict[int, int] = {}  # VFIO_PCI_ERR/REQ_IRQ_INDEX -> eventfd
        self._device_fd: int | None = None
        self._irq_fds: list[int] = []
        self._irq_index: int | None = None
        self._mapped: list[Region] = []
        self._iova = IOVAAllocator()
        self._mapped_dma_bytes = 0
        try:
            self._open_fds()
            self._read_device_info()
        except BaseException:
            self.close()
            raise

    # -- opening -----------------------------------------------------------------------------
    def _open_fds(self) -> None:
        group = self.sysfs.iommu_group(self.bdf)
        if group is None and self.noiommu:
            raise BackendUnavailable(f"{self.bdf} has no IOMMU group even while bound to {VFIO_DRIVER}: "
                                     "is no-IOMMU mode on? `echo 1 | sudo tee "
                                     "/sys/module/vfio/parameters/enable_unsafe_noiommu_mode`")
        if group is None:
            raise BackendUnavailable(NO_GROUP.format(bdf=self.bdf))
        if not self.os.exists(CONTAINER_PATH):
            raise BackendUnavailable(MISSING_VFIO.format(path=CONTAINER_PATH, bdf=self.bdf))
        self._container_fd = self._open_node(CONTAINER_PATH)
        version = _ioctl(self.os, self._container_fd, vfio.VFIO_GET_API_VERSION, None,
                         "VFIO_GET_API_VERSION")
        if version != vfio.VFIO_API_VERSION:
            raise BackendUnavailable(f"VFIO API version {version}; need {vfio.VFIO_API_VERSION}")
        group_name = f"{NOIOMMU_GROUP_PREFIX}{group}" if self.noiommu else str(group)
        group_path = f"{GROUP_DIR}/{group_name}"
        if not self.os.exists(group_path):
            raise BackendUnavailable(self._missing_group_reason(group, group_path))
        self._group_fd = self._open_node(group_path)
        self._group = group
        self._check_group_viable(group)
        container = bytearray(self._container_fd.to_bytes(C_INT_BYTES, "little", signed=True))
        _ioctl(self.os, self._group_fd, vfio.VFIO_GROUP_SET_CONTAINER, container, "VFIO_GROUP_SET_CONTAINER")
        # asked only now: an empty container lets every loaded IOMMU driver answer (type1 says yes
        # even on a no-IOMMU host), one holding the group only the drivers it can use
        # (drivers/vfio/container.c vfio_container_ioctl_check_extension)
        iommu_type = self._pick_iommu_type()
        _ioctl(self.os, self._container_fd, vfio.VFIO_SET_IOMMU, iommu_type, "VFIO_SET_IOMMU")
        name = bytearray(self.bdf.encode() + b"\0")
        try:
            self._device_fd = self.os.ioctl(self._group_fd, vfio.VFIO_GROUP_GET_DEVICE_FD, name)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise DeviceBusy(f"{self.bdf} is already open through VFIO by another process",
                                 errno=exc.errno) from exc
            raise from_oserror(exc, f"VFIO_GROUP_GET_DEVICE_FD {self.bdf}") from exc
        if not self.noiommu:
            self._setup_iova_windows()

    def _missing_group_reason(self, group: int, group_path: str) -> str:
        noiommu_path = f"{GROUP_DIR}/{NOIOMMU_GROUP_PREFIX}{group}"
        if not self.noiommu and self.os.exists(noiommu_path):
            return (f"{group_path} is missing but {noiommu_path} exists: VFIO runs in no-IOMMU mode here "
                    "(no isolation); enable the IOMMU (intel_iommu=on or amd_iommu=on), or ask for "
                    "no-IOMMU mode explicitly (noiommu=True)")
        driver = self.sysfs.driver(self.bdf)
        return (f"{group_path} is missing: {self.bdf} is bound to {driver or 'no driver'}, not "
                f"{VFIO_DRIVER}; open it with unbind=True to rebind it")

    def _open_node(self, path: str) -> int:
        try:
            return self.os.open(path, O_RDWR | O_CLOEXEC)
        except OSError as exc:
            error = from_oserror(exc, f"opening {path}")
            if isinstance(error, PermissionDenied):
                raise PermissionDenied(f"opening {path} needs root or ownership of the node: run as root, or "
                                       f"`sudo chown $USER {path}` (and raise `ulimit -l` for DMA)",
                                       errno=exc.errno) from exc
            raise error from exc

    def _pick_iommu_type(self) -> int:
        if self.noiommu:
            wanted = [vfio.VFIO_NOIOMMU_IOMMU]
        else:
            wanted = [vfio.VFIO_TYPE1v2_IOMMU, vfio.VFIO_TYPE1_IOMMU]
        for iommu_type in wanted:
            supported = _ioctl(self.os, self._container_fd, vfio.VFIO_CHECK_EXTENSION, iommu_type,
                               "VFIO_CHECK_EXTENSION")
            if supported:
                return iommu_type
        if self.noiommu:
            raise BackendUnavailable("VFIO no-IOMMU mode is off: enable it with `echo 1 | sudo tee "
                                     "/sys/module/vfio/parameters/enable_unsafe_noiommu_mode`")
        raise BackendUnavailable("the VFIO container offers no type 1 IOMMU; is the IOMMU enabled?")

    def _check_group_viable(self, group: int) -> None:
        status = vfio.vfio_group_status(argsz=vfio.vfio_group_status.SIZE)
        _ioctl(self.os, self._group_fd, vfio.VFIO_GROUP_GET_STATUS, status.buffer, "VFIO_GROUP_GET_STATUS")
        if status.flags & vfio.VFIO_GROUP_FLAGS_VIABLE:
            return
        members = []
        for member in self.sysfs.iommu_group_devices(group):
            members.append(f"{member} ({self.sysfs.driver(member) or 'no driver'})")
        raise DeviceBusy(f"IOMMU group {group} is not viable: {VIABILITY_RULE}; members: "
                         f"{', '.join(members)}. {BIND_HINT.format(bdf=self.bdf)}")

    def _setup_iova_windows(self) -> None:
        info = vfio.vfio_iommu_type1_info(argsz=vfio.vfio_iommu_type1_info.SIZE)
        try:
            self.os.ioctl(self._container_fd, vfio.VFIO_IOMMU_GET_INFO, info.buffer)
        except OSError as exc:
            log.debug("VFIO_IOMMU_GET_INFO failed (%s); using the default IOVA window", exc)
            return
        page_sizes = info.iova_pgsizes if info.flags & vfio.VFIO_IOMMU_INFO_PGSIZES else 0
        if page_sizes and not page_sizes & PAGE_SIZE:
            raise BackendUnavailable(f"the IOMMU does not map {PAGE_SIZE}-byte pages "
                                     f"(page sizes {info.iova_pgsizes:#x})")
        if not info.flags & vfio.VFIO_IOMMU_INFO_CAPS or info.argsz <= vfio.vfio_iommu_type1_info.SIZE:
            return
        # vfio.h: the kernel wrote the argsz the capability chain needs; ask again with that much room
        full = bytearray(info.argsz)
        again = vfio.vfio_iommu_type1_info.from_buffer(full)
        again.argsz = len(full)
        _ioctl(self.os, self._container_fd, vfio.VFIO_IOMMU_GET_INFO, full, "VFIO_IOMMU_GET_INFO (caps)")
        windows = iova_windows_from_caps(full, again.cap_offset)
        del again
        if windows:
            log.debug("IOVA windows of %s: %s", self.bdf, [(hex(a), hex(b)) for a, b in windows])
            self._iova = IOVAAllocator(windows)

    def _read_device_info(self) -> None:
        info = vfio.vfio_device_info(argsz=vfio.vfio_device_info.SIZE)
        _ioctl(self.os, self._device_fd, vfio.VFIO_DEVICE_GET_INFO, info.buffer, "VFIO_DEVICE_GET_INFO")
        if not info.flags & vfio.VFIO_DEVICE_FLAGS_PCI:
            raise UnsupportedOperation(f"{self.bdf} is not a vfio-pci device (flags {info.flags:#x})")
        self.device_flags = info.flags
        self.num_regions = info.num_regions
        self.num_irqs = info.num_irqs
        self.config_region = self._region_info(vfio.VFIO_PCI_CONFIG_REGION_INDEX)
        self._arm_event_triggers()

    def _arm_event_triggers(self) -> None:
        """An eventfd on the ERR index (vfio_pci_core_aer_err_detected signals it when AER reports an
        error) and on the REQ index (vfio_pci_core_request signals it when the kernel wants the
        device back: unbind, hot unplug). `device_events` reads them."""
        for index in (vfio.VFIO_PCI_ERR_IRQ_INDEX, vfio.VFIO_PCI_REQ_IRQ_INDEX):
            if index >= self.num_irqs:
                continue
            info = vfio.vfio_irq_info(argsz=vfio.vfio_irq_info.SIZE, index=index)
            try:
                self.os.ioctl(self._device_fd, vfio.VFIO_DEVICE_GET_IRQ_INFO, info.buffer)
            except OSError as exc:
                log.debug("%s: no IRQ index %d (%s)", self.bdf, index, exc)
                continue
            if info.count < 1:
                continue
            fd = self.os.eventfd(0, nonblocking=True)
            self._event_fds[index] = fd
            self._set_irqs(index, vfio.VFIO_IRQ_SET_DATA_EVENTFD | vfio.VFIO_IRQ_SET_ACTION_TRIGGER, [fd])

    def device_events(self) -> list[DeviceEvent]:
        fds = list(self._event_fds.values())
        if not fds:
            return []
        try:
            ready = set(self.os.poll(fds, 0.0))
        except OSError as exc:
            log.debug("%s: polling the ERR/REQ eventfds failed: %s", self.bdf, exc)
            return []
        events = []
        for index, fd in self._event_fds.items():
            if fd not in ready:
                continue
            try:
                count = int.from_bytes(self.os.read(fd, EVENTFD_COUNTER_BYTES), "little")
            except OSError:
                continue
            if index == vfio.VFIO_PCI_REQ_IRQ_INDEX:
                events.append(DeviceEvent(EVENT_RELEASE, f"the kernel asked {count} time(s) for "
                                          f"{self.bdf} back (VFIO device request: unbind or removal)"))
            else:
                events.append(DeviceEvent(EVENT_ERROR, f"VFIO reported {count} PCIe error(s) (AER) "
                                          f"for {self.bdf}"))
        return events

    def _region_info(self, index: int):
        info = vfio.vfio_region_info(argsz=vfio.vfio_region_info.SIZE, index=index)
        _ioctl(self.os, self._device_fd, vfio.VFIO_DEVICE_GET_REGION_INFO, info.buffer,
               f"VFIO_DEVICE_GET_REGION_INFO index {index}")
        return info

    # -- config ------------------------------------------------------------------------------
    def config_read(self, offset: int, width: int) -> int:
        data = self.os.pread(self._device_fd, width, self.config_region.offset + offset)
        if len(data) != width:
            raise OSError(errno.EIO, f"short config read at {offset:#x}: {len(data)} of {width} bytes")
        return int.from_bytes(data, "little")

    def config_write(self, offset: int, width: int, value: int) -> None:
        written = self.os.pwrite(self._device_fd, value.to_bytes(width, "little"),
                                 self.config_region.offset + offset)
        if written != width:
            raise OSError(errno.EIO, f"short config write at {offset:#x}: {written} of {width} bytes")

    def config_size(self) -> int:
        return self.config_region.size

    # -- BARs --------------------------------------------------------------------------------
    def bar_resources(self) -> dict[int, BarResource]:
        found = {}
        for index, region_index in enumerate(BAR_REGION_INDEXES):
            info = self._region_info(region_index)
            if info.size == 0:
                continue
            found[index] = BarResource(index, info.size, bool(info.flags & vfio.VFIO_REGION_INFO_FLAG_MMAP))
        return found

    def map_bar(self, index: int) -> Region:
        info = self._region_info(BAR_REGION_INDEXES[index])
        if info.size == 0:
            raise InvalidArgument(f"BAR{index} of {self.bdf} is not implemented")
        if info.flags & vfio.VFIO_REGION_INFO_FLAG_MMAP:
            try:
                region = self.os.mmap(self._device_fd, info.size, info.offset)
            except OSError as exc:
                raise from_oserror(exc, f"mapping BAR{index} of {self.bdf} ({info.size:#x} bytes)") from exc
        else:
            region = self._callback_region(info.offset, info.size, index)
        self._mapped.append(region)
        return region

    def _callback_region(self, base: int, size: int, index: int) -> Region:
        """A BAR that VFIO will not let us mmap: every access is a pread/pwrite on the device fd."""
        device_fd = self._device_fd

        def read(offset: int, count: int) -> bytes:
            try:
                return self.os.pread(device_fd, count, base + offset)
            except OSError as exc:
                raise self._bar_access_error(exc, "reading", index, offset) from exc

        def write(offset: int, data: bytes) -> None:
            try:
                self.os.pwrite(device_fd, data, base + offset)
            except OSError as exc:
                raise self._bar_access_error(exc, "writing", index, offset) from exc

        return CallbackRegion(size, read, write)

    def _bar_access_error(self, exc: OSError, doing: str, index: int, offset: int) -> HalError:
        error = from_oserror(exc, f"{doing} BAR{index}+{offset:#x} of {self.bdf} through the VFIO device fd")
        if exc.errno == errno.EIO:
            # vfio_pci_rdwr.c vfio_pci_core_ioread/iowrite: EIO while memory decoding is off
            return HalError(f"{error}: memory decoding is off in the Command register; turn it on "
                            "(PCIDevice.enable_bus_master()) before touching BARs", errno=exc.errno)
        return error

    def resize_bar(self, index: int, size: int) -> None:
        # drivers/pci/pci-sysfs.c __resource_resize_store answers EBUSY while any driver is bound
        raise UnsupportedOperation(
            f"BAR{index} of {self.bdf} cannot be resized while it is open through vfio: the kernel "
            f"resizes only devices without a driver, and {self.bdf} is bound to {VFIO_DRIVER}. Close it "
            f"and open it again with the size: hal.open('vfio:{self.bdf}', unbind=True, "
            f"bar_sizes={{{index}: {size:#x}}}) resizes it while it is unbound, before binding "
            f"{VFIO_DRIVER} (or bar_sizes={{{index}: '{LARGEST_BAR_SIZE}'}} for the largest that fits)")

    def unmap_bar(self, region: Region) -> None:
        if region in self._mapped:
            self._mapped.remove(region)
        if not isinstance(region, CallbackRegion):
            self.os.munmap(region)

    # -- DMA ---------------------------------------------------------------------------------
    def alloc_dma(self, size: int) -> DMABuffer:
        if self.noiommu:
            return self._alloc_noiommu(size)
        # VFIO_IOMMU_MAP_DMA pins the pages and charges them to RLIMIT_MEMLOCK itself
        # (drivers/vfio/vfio_iommu_type1.c vfio_pin_pages_remote); an mlock on top would count them twice
        try:
            memory = self.os.alloc_pages(size)
        except OSError as exc:
            raise from_oserror(exc, f"allocating {size} bytes of host memory for DMA") from exc
        try:
            iova = self._iova.allocate(memory.size)
        except BaseException:
            self.os.free_locked(memory)
            raise
        mapping = vfio.vfio_iommu_type1_dma_map(
            argsz=vfio.vfio_iommu_type1_dma_map.SIZE,
            flags=vfio.VFIO_DMA_MAP_FLAG_READ | vfio.VFIO_DMA_MAP_FLAG_WRITE,
            vaddr=memory.addr, iova=iova, size=memory.size)
        try:
            self.os.ioctl(self._container_fd, vfio.VFIO_IOMMU_MAP_DMA, mapping.buffer)
        except OSError as exc:
            self._iova.free(iova)
            self.os.free_locked(memory)
            error = from_oserror(exc, f"VFIO_IOMMU_MAP_DMA of {memory.size:#x} bytes at IOVA {iova:#x}")
            if exc.errno == errno.ENOMEM:
                error = PermissionDenied(MEMLOCK_HINT.format(error=error, size=memory.size,
                                                             mapped=self._mapped_dma_bytes),
                                         errno=exc.errno)
            raise error from exc
        self._mapped_dma_bytes += memory.size
        pages = memory.size // PAGE_SIZE
        return DMABuffer(region=memory.region, size=memory.size,
                         bus_addresses=[iova + page * PAGE_SIZE for page in range(pages)],
                         contiguous=True, backend_handle=(memory, iova))

    def _alloc_noiommu(self, size: int) -> DMABuffer:
        memory, physical, contiguous = locked_memory_with_physical_pages(
            self.os, size, "no-IOMMU DMA", "run as root (no-IOMMU mode is root-only anyway)")
        return DMABuffer(region=memory.region, size=memory.size, bus_addresses=physical,
                         contiguous=contiguous, backend_handle=(memory, None))

    def free_dma(self, buffer: DMABuffer) -> None:
        memory, iova = buffer.backend_handle
        try:
            if iova is not None:
                unmap = vfio.vfio_iommu_type1_dma_unmap(argsz=vfio.vfio_iommu_type1_dma_unmap.SIZE,
                                                        iova=iova, size=memory.size)
                _ioctl(self.os, self._container_fd, vfio.VFIO_IOMMU_UNMAP_DMA, unmap.buffer,
                       f"VFIO_IOMMU_UNMAP_DMA at IOVA {iova:#x}")
                self._iova.free(iova)
                self._mapped_dma_bytes -= memory.size
        finally:
            self.os.free_locked(memory)

    # -- interrupts --------------------------------------------------------------------------
    def enable_interrupts(self, kind: str, count: int) -> list[int]:
        index = IRQ_KINDS[kind]
        info = vfio.vfio_irq_info(argsz=vfio.vfio_irq_info.SIZE, index=index)
        _ioctl(self.os, self._device_fd, vfio.VFIO_DEVICE_GET_IRQ_INFO, info.buffer,
               f"VFIO_DEVICE_GET_IRQ_INFO {kind}")
        if info.count < count:
            raise UnsupportedOperation(f"{self.bdf} offers {info.count} {kind} vectors; {count} requested")
        self.disable_interrupts()
        fds: list[int] = []
        try:
            for _ in range(count):
                fds.append(self.os.eventfd(0, nonblocking=True))
            trigger = vfio.VFIO_IRQ_SET_DATA_EVENTFD | vfio.VFIO_IRQ_SET_ACTION_TRIGGER
            granted = self._set_irqs(index, trigger, fds)
            if granted:
                # drivers/vfio/pci/vfio_pci_intrs.c vfio_msi_enable: the host could allocate only
                # `granted` vectors, gave them back and left the index disabled
                advice = MSI_PARTIAL_ADVICE if kind == "msi" else ""
                raise UnsupportedOperation(PARTIAL_VECTORS.format(bdf=self.bdf, granted=granted, count=count,
                                                                  kind=kind, advice=advice))
        except BaseException:
            for fd in fds:
                self.os.close(fd)
            raise
        self._irq_fds = fds
        self._irq_index = index
        return list(fds)

    def _set_irqs(self, index: int, flags: int, fds: list[int]) -> int:
        header_size = vfio.vfio_irq_set.SIZE
        argument = bytearray(header_size + C_INT_BYTES * len(fds))
        header = vfio.vfio_irq_set.from_buffer(argument)
        header.argsz = len(argument)
        header.flags = flags
        header.index = index
        header.start = 0
        header.count = len(fds)
        for position, fd in enumerate(fds):
            start = header_size + position * C_INT_BYTES
            argument[start:start + C_INT_BYTES] = fd.to_bytes(C_INT_BYTES, "little", signed=True)
        del header
        return _ioctl(self.os, self._device_fd, vfio.VFIO_DEVICE_SET_IRQS, argument,
                      f"VFIO_DEVICE_SET_IRQS index {index} ({len(fds)} vectors)")

    def disable_interrupts(self) -> None:
        """Turn the enabled kind off. Until the kernel confirms, it stays recorded as enabled, with
        its eventfds open (the kernel still signals them): a failure here leaves MSI or MSI-X on, so
        the next disable, or enable_interrupts, which disables first, tries again rather than asking
        for the other kind, which the kernel refuses while one is on (vfio_pci_intrs.c
        vfio_pci_set_msi_trigger: EINVAL)."""
        if self._irq_index is None:
            return
        self._set_irqs(self._irq_index, vfio.VFIO_IRQ_SET_DATA_NONE | vfio.VFIO_IRQ_SET_ACTION_TRIGGER, [])
        self._irq_index = None
        self._close_irq_fds()

    def _close_irq_fds(self) -> None:
        """Close every interrupt eventfd, even when one close fails; raise the first failure."""
        fds = self._irq_fds
        self._irq_fds = []
        first_error: OSError | None = None
        for fd in fds:
            try:
                self.os.close(fd)
            except OSError as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error

    # -- resets and life cycle ---------------------------------------------------------------
    def reset_methods(self) -> list[str]:
        """"vfio" when the reset vfio-pci tried at open worked (VFIO_DEVICE_FLAGS_RESET), "hot" when
        a bus reset is possible and every function it resets is on vfio-pci."""
        methods = []
        if self.device_flags & vfio.VFIO_DEVICE_FLAGS_RESET:
            methods.append("vfio")
        if self.reset_refusal(HOT_RESET) is None:
            methods.append(HOT_RESET)
        return methods

    def reset_refusal(self, method: str) -> str | None:
        if method == "vfio":
            if self.device_flags & vfio.VFIO_DEVICE_FLAGS_RESET:
                return None
            return (f"vfio-pci found no function reset for {self.bdf} when it was opened (no FLR, PM "
                    "reset or bus reset of its own); try 'hot'")
        if method != HOT_RESET:
            return None
        try:
            affected = self._hot_reset_devices()
        except (HalError, OSError) as exc:
            return f"VFIO_DEVICE_GET_PCI_HOT_RESET_INFO failed for {self.bdf}: {exc}"
        for bdf, _ in affected:
            driver = self.sysfs.driver(bdf)
            if driver != VFIO_DRIVER:
                return (f"a bus reset of {self.bdf} also resets {bdf}, which is bound to "
                        f"{driver or 'no driver'}; bind it to {VFIO_DRIVER} too (`echo {VFIO_DRIVER} | "
                        f"sudo tee /sys/bus/pci/devices/{bdf}/driver_override`, unbind it, then "
                        f"`echo {bdf} | sudo tee /sys/bus/pci/drivers_probe`)")
        return None

    def reset(self, method: str) -> None:
        if method == HOT_RESET:
            self._hot_reset()
            return
        if method != "vfio":
            super().reset(method)
        _ioctl(self.os, self._device_fd, vfio.VFIO_DEVICE_RESET, None, f"VFIO_DEVICE_RESET {self.bdf}")

    def _hot_reset_devices(self) -> list[tuple[str, int]]:
        """(bdf, IOMMU group) of every function a bus reset of this one resets
        (VFIO_DEVICE_GET_PCI_HOT_RESET_INFO; asked once for the count, again with room for all)."""
        header = vfio.vfio_pci_hot_reset_info.SIZE
        entry_size = vfio.vfio_pci_dependent_device.SIZE
        count = 0
        for _ in range(2):
            raw = bytearray(header + entry_size * count)
            info = vfio.vfio_pci_hot_reset_info.from_buffer(raw)
            info.argsz = len(raw)
            del info
            try:
                self.os.ioctl(self._device_fd, vfio.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, raw)
            except OSError as exc:
                if exc.errno == errno.ENOSPC and not count:
                    count = vfio.vfio_pci_hot_reset_info.from_buffer(raw).count
                    continue
                if exc.errno == errno.ENODEV:
                    raise UnsupportedOperation(f"{self.bdf} has no slot or bus reset (it sits on a root "
                                               "bus)", errno=exc.errno) from exc
                raise from_oserror(exc, f"VFIO_DEVICE_GET_PCI_HOT_RESET_INFO {self.bdf}") from exc
            found = vfio.vfio_pci_hot_reset_info.from_buffer(raw).count
            devices = []
            for position in range(found):
                entry = vfio.vfio_pci_dependent_device.from_buffer(raw, header + position * entry_size)
                slot = entry.devfn >> DEVFN_SLOT_SHIFT
                function = entry.devfn & DEVFN_FUNCTION_MASK
                devices.append((f"{entry.segment:04x}:{entry.bus:02x}:{slot:02x}.{function:x}",
                                entry.group_id))
                del entry
            return devices
        raise HalError(f"VFIO_DEVICE_GET_PCI_HOT_RESET_INFO {self.bdf}: the device count kept changing")

    def _hot_reset(self) -> None:
        """VFIO_DEVICE_PCI_HOT_RESET with the group fds of every function the bus reset affects:
        ours, plus the others opened here for the call (each node opens once: EBUSY means another
        program holds that group). The kernel saves and restores each function around the reset."""
        refusal = self.reset_refusal(HOT_RESET)
        if refusal is not None:
            raise UnsupportedOperation(f"no 'hot' reset: {refusal}")
        groups = sorted({group for _, group in self._hot_reset_devices()})
        opened: list[int] = []
        fds: list[int] = []
        try:
            for group in groups:
                if group == self._group:
                    fds.append(self._group_fd)
                    continue
                prefix = NOIOMMU_GROUP_PREFIX if self.noiommu else ""
                path = f"{GROUP_DIR}/{prefix}{group}"
                try:
                    fd = self.os.open(path, O_RDWR | O_CLOEXEC)
                except OSError as exc:
                    if exc.errno == errno.EBUSY:
                        raise DeviceBusy(f"a bus reset of {self.bdf} needs IOMMU group {group} too, and "
                                         f"another program holds {path}", errno=exc.errno) from exc
                    raise from_oserror(exc, f"opening {path} for a hot reset of {self.bdf}") from exc
                opened.append(fd)
                fds.append(fd)
            raw = bytearray(vfio.vfio_pci_hot_reset.SIZE + C_INT_BYTES * len(fds))
            request = vfio.vfio_pci_hot_reset.from_buffer(raw)
            request.argsz = len(raw)
            request.flags = 0
            request.count = len(fds)
            del request
            for position, fd in enumerate(fds):
                at = vfio.vfio_pci_hot_reset.SIZE + position * C_INT_BYTES
                raw[at:at + C_INT_BYTES] = fd.to_bytes(C_INT_BYTES, "little", signed=True)
            _ioctl(self.os, self._device_fd, vfio.VFIO_DEVICE_PCI_HOT_RESET, raw,
                   f"VFIO_DEVICE_PCI_HOT_RESET {self.bdf} (groups {', '.join(map(str, groups))})")
        finally:
            for fd in opened:
                self.os.close(fd)

    def close(self) -> None:
        errors: list[BaseException] = []
        for step in (self.disable_interrupts, self._unmap_all):
            try:
                step()
            except (HalError, OSError) as exc:
                errors.append(exc)
        for attribute in ("_device_fd", "_group_fd", "_container_fd"):
            fd = getattr(self, attribute)
            if fd is None:
                continue
            setattr(self, attribute, None)
            try:
                self.os.close(fd)
            except OSError as exc:
                errors.append(exc)
        # the last close of the device fd turned interrupts off and dropped the ERR/REQ triggers
        # (vfio_pci_core_close_device -> vfio_pci_core_disable), also where disabling them failed
        self._irq_index = None
        try:
            self._close_irq_fds()
        except OSError as exc:
            errors.append(exc)
        while self._event_fds:
            _, fd = self._event_fds.popitem()
            try:
                self.os.close(fd)
            except OSError as exc:
                errors.append(exc)
        if errors:
            first = errors[0]
            raise first if isinstance(first, HalError) else from_oserror(first, f"closing VFIO {self.bdf}")

    def _unmap_all(self) -> None:
        while self._mapped:
            region = self._mapped.pop()
            if not isinstance(region, CallbackRegion):
                self.os.munmap(region)


def iova_windows_from_caps(info: bytearray, cap_offset: int) -> list[tuple[int, int]]:
    """Usable IOVA windows [start, end) from a VFIO_IOMMU_GET_INFO capability chain (empty if none)."""
    windows: list[tuple[int, int]] = []
    seen: set[int] = set()
    offset = cap_offset
    header_size = vfio.vfio_info_cap_header.SIZE
    while offset and offset not in seen and offset + header_size <= len(info):
        seen.add(offset)
        header = vfio.vfio_info_cap_header.from_buffer(info, offset)
        cap_id = header.id
        next_offset = header.next
        del header
        if cap_id == vfio.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE:
            ranges = vfio.vfio_iommu_type1_info_cap_iova_range.from_buffer(info, offset)
            count = ranges.nr_iovas
            del ranges
            first = offset + vfio.vfio_iommu_type1_info_cap_iova_range.SIZE
            for index in range(count):
                at = first + index * vfio.vfio_iova_range.SIZE
                if at + vfio.vfio_iova_range.SIZE > len(info):
                    break
                entry = vfio.vfio_iova_range.from_buffer(info, at)
                windows.append((entry.start, entry.end + 1))  # vfio.h: `end` is inclusive
                del entry
        offset = next_offset
    return windows


def members_to_move(sysfs: SysfsPCI, bdf: str, group: int) -> list[tuple[str, str]]:
    """Other members of `group` that keep it from being viable for VFIO, as (bdf, driver): those bound
    to a driver that uses the kernel's DMA API. A member with no driver, or on one that manages its
    own DMA (vfio-pci, pcieport, pci-stub), leaves the group usable (drivers/vfio/group.c
    vfio_group_ioctl_get_status asks drivers/iommu/iommu.c iommu_group_dma_owner_claimed)."""
    found = []
    for member in sysfs.iommu_group_devices(group):
        if member == bdf:
            continue
        driver = sysfs.driver(member)
        if driver is not None and not manages_own_dma(driver):
            found.append((member, driver))
    return found


def group_blockers(sysfs: SysfsPCI, bdf: str, group: int) -> list[str]:
    """`members_to_move` as "<bdf> (<driver>)" strings."""
    return [f"{member} ({driver})" for member, driver in members_to_move(sysfs, bdf, group)]


def require_viable_group(sysfs: SysfsPCI, bdf: str) -> None:
    """DeviceBusy naming the members that keep `bdf`'s IOMMU group from being usable through VFIO, checked
    before anything is unbound or bound (nothing to check without a group)."""
    group = sysfs.iommu_group(bdf)
    if group is None:
        return
    blockers = group_blockers(sysfs, bdf, group)
    if blockers:
        raise DeviceBusy(f"IOMMU group {group} of {bdf} is shared with {', '.join(blockers)}: "
                         f"{VIABILITY_RULE} before {bdf} can be opened through VFIO. "
                         f"{BIND_HINT.format(bdf=bdf)}, or unbind them yourself (`echo <bdf> | sudo tee "
                         f"/sys/bus/pci/drivers/<driver>/unbind`), or open pci:{bdf}. Nothing was unbound")


def probe(os: OS, bdf: str) -> str:
    """'ok' when this backend can open `bdf` now, else the reason it cannot. Read-only: the
    container node is opened (and closed) only to learn whether this process may."""
    sysfs = SysfsPCI(os)
    if not sysfs.exists(bdf):
        return f"no such device {bdf}"
    if sysfs.is_host_bridge(bdf):
        return HOST_BRIDGE_REASON
    if sysfs.header_type(bdf) != regs.PCI_HEADER_TYPE_NORMAL:
        # drivers/vfio/pci/vfio_pci_core.c vfio_pci_core_register_device refuses other headers
        return f"not openable: {VFIO_DRIVER} drives only type 0 functions, and {bdf} is a bridge"
    if sysfs.iommu_group(bdf) is None and sysfs.noiommu_mode():
        # drivers/vfio/group.c vfio_group_find_or_alloc: vfio-pci gives it a group when it binds
        return f"no IOMMU group; VFIO no-IOMMU mode is on: {NOIOMMU_OPEN_HINT}"
    if sysfs.iommu_group(bdf) is None:
        return "no IOMMU group (IOMMU off: intel_iommu=on / amd_iommu=on)"
    if not os.exists(CONTAINER_PATH):
        return f"VFIO not available ({CONTAINER_PATH} missing: sudo modprobe vfio-pci)"
    try:
        fd = os.open(CONTAINER_PATH, O_RDWR | O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            return f"needs root ({CONTAINER_PATH}: permission denied)"
        return f"cannot open {CONTAINER_PATH}: {exc.strerror}"
    os.close(fd)
    group = sysfs.iommu_group(bdf)
    blockers = group_blockers(sysfs, bdf, group)
    driver = sysfs.driver(bdf)
    problems = []
    if driver not in (None, VFIO_DRIVER):
        problems.append(f"{IN_USE_PREFIX} {driver}; opening with unbind=True moves it to {VFIO_DRIVER}")
    if blockers:
        problems.append(f"{SHARED_PREFIX} {group} is shared with {', '.join(blockers)}, which must be "
                        f"unbound or on a driver that manages its own DMA ({VFIO_DRIVER}, pci-stub) too")
    if problems:
        return "; ".join(problems)
    if sysfs.is_noiommu_group(group):
        return f"ok (a no-IOMMU group: {NOIOMMU_OPEN_HINT})"
    return "ok" if driver == VFIO_DRIVER else f"ok (binds {VFIO_DRIVER})"


def open_backend(os: OS, bdf: str, noiommu: bool = False) -> VfioBackend:
    return VfioBackend(os, bdf, noiommu=noiommu)
