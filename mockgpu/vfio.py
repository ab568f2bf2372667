"""The simulated kernel's VFIO: /dev/vfio/vfio (container), /dev/vfio/<group>, and device fds.

Ioctls, struct layouts and validation follow drivers/vfio/{container,group,vfio_main}.c,
vfio_iommu_type1.c and pci/vfio_pci_core.c: short `argsz` -> EINVAL, unknown ioctl -> ENOTTY,
pointer arguments given as plain integers -> EFAULT, a container ioctl before SET_IOMMU -> EINVAL,
a group whose devices are not all bound to vfio-pci (or unbound) cannot join a container (EPERM),
MAP_DMA alignment/overlap -> EINVAL/EEXIST, pinning past RLIMIT_MEMLOCK -> ENOMEM.
Device fds follow pci/vfio_pci_core.c, vfio_pci_rdwr.c and vfio_pci_config.c (`mockgpu.vfio_config`):
the first open resets the function and saves its state, the last close restores it (and may
reset the bus), config space is vfio's virtualised view, BAR access needs memory decoding (EIO,
or `BusError` for mmaps), hot reset takes the group fds of every function on the bus.
Interrupts: DEVICE_SET_IRQS binds MSI/MSI-X vectors to eventfds; the simulated kernel programs the
function's MSI capability or MSI-X table with a host vector whose delivery signals the eventfd.
When the host grants fewer vectors than asked, SET_IRQS returns that count and enables nothing.
"""
from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autogen.linux import pci_regs, vfio

from hal.os import PAGE_SIZE
from hal.region import CallbackRegion, MemoryRegion, Region
from mockgpu.bits import field_get, field_put
from mockgpu.files import EventFD, MockFile
from mockgpu.iommu import IOVA_PAGE_SIZES, MSI_WINDOW_BASE, IOMMUDomain, usable_iova_ranges
from mockgpu.kernel import VFIO_PCI, SavedState, restore_state, save_state
from mockgpu.pci import PM_STATE_D0, PM_STATE_D3HOT, BarKind, PCIFunction
from mockgpu.vfio_config import VirtualConfig

if TYPE_CHECKING:
    from mockgpu.machine import Machine

log = logging.getLogger(__name__)

# drivers/vfio/pci/vfio_pci_priv.h: VFIO_PCI_OFFSET_SHIFT, region index in the file offset's high bits
REGION_OFFSET_SHIFT = 40
REGION_OFFSET_MASK = (1 << REGION_OFFSET_SHIFT) - 1
EVENTFD_ARG_SIZE = 4  # include/uapi/linux/vfio.h: DATA_EVENTFD entries are __s32 file descriptors
BOOL_ARG_SIZE = 1  # include/uapi/linux/vfio.h: DATA_BOOL entries are __u8
NO_EVENTFD = -1  # include/uapi/linux/vfio.h: fd -1 de-assigns a trigger
TYPE1_TYPES = (vfio.VFIO_TYPE1_IOMMU, vfio.VFIO_TYPE1v2_IOMMU)
# vfio_iommu_type1.c vfio_iommu_type1_check_extension: answered without an opened container too
TYPE1_EXTENSIONS = (*TYPE1_TYPES, vfio.VFIO_TYPE1_NESTING_IOMMU, vfio.VFIO_UNMAP_ALL)
# ... and these only once SET_IOMMU opened the driver (iommu != NULL)
TYPE1_OPEN_EXTENSIONS = (vfio.VFIO_UPDATE_VADDR, vfio.VFIO_DMA_CC_IOMMU)
# container.c keeps a list of registered IOMMU drivers: vfio_main.c's soft dependency loads type1,
# and the no-IOMMU driver is built in (CONFIG_VFIO_NOIOMMU); it answers only in no-IOMMU mode
TYPE1_DRIVER = "type1"
NOIOMMU_DRIVER = "noiommu"
IOMMU_DRIVERS = (TYPE1_DRIVER, NOIOMMU_DRIVER)
IRQ_DATA_TYPES = vfio.VFIO_IRQ_SET_DATA_NONE | vfio.VFIO_IRQ_SET_DATA_BOOL | vfio.VFIO_IRQ_SET_DATA_EVENTFD
IRQ_ACTION_LIST = (vfio.VFIO_IRQ_SET_ACTION_MASK, vfio.VFIO_IRQ_SET_ACTION_UNMASK,
                   vfio.VFIO_IRQ_SET_ACTION_TRIGGER)
IRQ_ACTIONS = IRQ_ACTION_LIST[0] | IRQ_ACTION_LIST[1] | IRQ_ACTION_LIST[2]
DMA_MAP_FLAGS = vfio.VFIO_DMA_MAP_FLAG_READ | vfio.VFIO_DMA_MAP_FLAG_WRITE
NAME_MAX = 255
IOVA_RANGE_CAP_VERSION = 1  # drivers/vfio/vfio_iommu_type1.c: the IOVA range capability is version 1
# vfio_pci_core.c vfio_pci_ioctl_get_region_info: the VGA region covers legacy space 0..0xbffff
VGA_REGION_SIZE = 0xC0000
# vfio_pci_rdwr.c vfio_pci_vga_rw: legacy VGA memory, then the mono and colour I/O port ranges
VGA_RANGES = ((0xA0000, 0xC0000), (0x3B0, 0x3BC), (0x3C0, 0x3E0))
PCI_CLASS_DISPLAY_VGA = 0x0300  # include/linux/pci_ids.h: VGA-compatible display controller
CLASS_PROG_IF_BITS = 8  # the 24-bit class code ends with the 8-bit programming interface
DEVFN_SLOT_SHIFT = 3  # include/uapi/linux/pci.h PCI_DEVFN: slot << 3 | function


class BusError(Exception):
    """What a process gets as SIGBUS: an access to an mmap'ed BAR that vfio-pci would not map
    (vfio_pci_mmap_huge_fault answers VM_FAULT_SIGBUS while memory decoding is off). A real
    process dies of it; tests see this exception and `VFIOKernel.bus_errors`."""


@dataclass
class BusErrorEvent:
    bdf: str
    bar: int
    offset: int
    write: bool


@dataclass
class OpenDevice:
    """What vfio-pci keeps while a device is open: its config copy, whether the reset at open
    worked, the state saved then, VGA, and where the MSI-X table is (never reachable through the
    BAR regions)."""

    config: VirtualConfig
    reset_works: bool
    saved: SavedState
    has_vga: bool
    msix_bar: int
    msix_offset: int
    msix_size: int

    def msix_table_range(self, index: int) -> tuple[int, int]:
        if not self.msix_size or index != self.msix_bar:
            return 0, 0
        return self.msix_offset, self.msix_offset + self.msix_size


def bdf_numbers(bdf: str) -> tuple[int, int, int]:
    """(segment, bus, devfn) of "dddd:bb:dd.f"."""
    domain, bus, rest = bdf.split(":")
    slot, function = rest.split(".")
    return int(domain, 16), int(bus, 16), (int(slot, 16) << DEVFN_SLOT_SHIFT) | int(function, 16)


def minsz(cls, last_field: str) -> int:
    """offsetofend(struct, last_field): the size the kernel copies in first."""
    member = cls.FIELDS[last_field]
    return member.offset + member.size


class StructArg:
    """The user's struct as the kernel sees it: `info` to read and update, `commit()` to copy the
    updates back when the user's buffer is shorter than the full struct (argsz >= minsz)."""

    def __init__(self, cls, view: memoryview) -> None:
        self.view = view
        self._padded: bytearray | None = None
        if len(view) < cls.SIZE:
            self._padded = bytearray(cls.SIZE)
            self._padded[:len(view)] = view
            self.info = cls.from_buffer(self._padded)
        else:
            self.info = cls.from_buffer(view)

    def commit(self) -> None:
        if self._padded is not None:
            self.view[:] = self._padded[:len(self.view)]


def struct_arg(arg, cls, last_field: str) -> StructArg:
    """A view of the user's struct, or the errno the kernel would give."""
    if arg is None or isinstance(arg, int):
        raise OSError(errno.EFAULT, f"{cls.__name__} argument must be a buffer, not {arg!r}")
    view = memoryview(arg).cast("B")
    need = minsz(cls, last_field)
    if len(view) < need:
        raise OSError(errno.EFAULT, f"{cls.__name__} buffer of {len(view)} bytes is shorter than {need}")
    if view.readonly:
        raise OSError(errno.EFAULT, f"{cls.__name__} buffer is read-only")
    parsed = StructArg(cls, view)
    if parsed.info.argsz < need:
        raise OSError(errno.EINVAL, f"{cls.__name__}.argsz {parsed.info.argsz} < {need}")
    return parsed


def int_pointer_arg(arg) -> int:
    """An `int *` argument (GROUP_SET_CONTAINER)."""
    if arg is None or isinstance(arg, int):
        raise OSError(errno.EFAULT, "argument must point to an int (pass a 4-byte buffer)")
    view = memoryview(arg).cast("B")
    if len(view) < EVENTFD_ARG_SIZE:
        raise OSError(errno.EFAULT, "argument buffer shorter than an int")
    return int.from_bytes(view[:EVENTFD_ARG_SIZE], "little", signed=True)


class Container:
    """A VFIO container: attached groups and, once SET_IOMMU ran, an IOMMU driver (type1: a domain)."""

    def __init__(self, machine: "Machine") -> None:
        self.machine = machine
        self.groups: set[int] = set()
        self.noiommu = False  # container.c container->noiommu: the kind of group it holds
        self.iommu_type: int | None = None
        self.domain: IOMMUDomain | None = None

    @property
    def driver(self) -> str | None:
        if self.iommu_type is None:
            return None
        return NOIOMMU_DRIVER if self.iommu_type == vfio.VFIO_NOIOMMU_IOMMU else TYPE1_DRIVER


class ContainerFile(MockFile):
    def __init__(self, machine: "Machine", path: str) -> None:
        super().__init__(path)
        self.machine = machine
        self.container = Container(machine)

    def ioctl(self, request: int, arg) -> int:
        container = self.container
        if request == vfio.VFIO_GET_API_VERSION:
            return vfio.VFIO_API_VERSION
        if request == vfio.VFIO_CHECK_EXTENSION:
            return self._check_extension(arg)
        if request == vfio.VFIO_SET_IOMMU:
            return self._set_iommu(arg)
        if container.driver is None:
            # container.c vfio_fops_unl_ioctl: with no IOMMU driver set, nothing takes the ioctl
            raise OSError(errno.EINVAL, f"container ioctl {request:#x} before VFIO_SET_IOMMU")
        if container.driver == NOIOMMU_DRIVER:
            # container.c vfio_noiommu_ioctl: only CHECK_EXTENSION
            raise OSError(errno.ENOTTY, f"no-IOMMU containers take no ioctl {request:#x}")
        if request == vfio.VFIO_IOMMU_GET_INFO:
            return self._get_info(arg)
        if request == vfio.VFIO_IOMMU_MAP_DMA:
            return self._map_dma(arg)
        if request == vfio.VFIO_IOMMU_UNMAP_DMA:
            return self._unmap_dma(arg)
        raise OSError(errno.ENOTTY, f"unknown (or not modelled) VFIO type1 ioctl {request:#x}")

    def _driver_extension(self, driver: str, arg, opened: bool) -> int:
        """What `driver`'s ioctl answers for CHECK_EXTENSION `arg` (`opened`: after SET_IOMMU)."""
        if driver == NOIOMMU_DRIVER:
            # container.c vfio_noiommu_ioctl: only with enable_unsafe_noiommu_mode set
            return 1 if self.machine.noiommu and arg == vfio.VFIO_NOIOMMU_IOMMU else 0
        if arg in TYPE1_EXTENSIONS:
            return 1
        if arg in TYPE1_OPEN_EXTENSIONS:
            # UPDATE_VADDR: no emulated (mdev) groups here; DMA_CC_IOMMU: AMD-Vi and VT-d with
            # snoop control enforce cache coherency (vfio_domains_have_enforce_cache_coherency)
            return 1 if opened else 0
        return 0

    def _allowed_drivers(self) -> tuple[str, ...]:
        # container.c vfio_iommu_driver_allowed: a container of no-IOMMU groups only takes the
        # no-IOMMU driver, any other container only the others
        return (NOIOMMU_DRIVER,) if self.container.noiommu else (TYPE1_DRIVER,)

    def _check_extension(self, arg) -> int:
        """container.c vfio_container_ioctl_check_extension: the set driver answers; without one,
        the first registered driver (of those the container's groups allow) that says yes."""
        container = self.container
        if container.driver is not None:
            return self._driver_extension(container.driver, arg, opened=True)
        drivers = self._allowed_drivers() if container.groups else IOMMU_DRIVERS
        for driver in drivers:
            answer = self._driver_extension(driver, arg, opened=False)
            if answer > 0:
                return answer
        return 0

    def _set_iommu(self, arg) -> int:
        """container.c vfio_ioctl_set_iommu: EINVAL without a group or with a driver already set;
        else the first allowed driver that reports `arg` and opens with it, ENODEV if none."""
        container = self.container
        if not isinstance(arg, int):
            raise OSError(errno.EINVAL, "SET_IOMMU takes the IOMMU type as an integer")
        if not container.groups:
            raise OSError(errno.EINVAL, "SET_IOMMU needs a group in the container first")
        if container.driver is not None:
            raise OSError(errno.EINVAL, "container already has an IOMMU driver")
        failure = OSError(errno.ENODEV, f"no IOMMU driver offers type {arg}")
        for driver in self._allowed_drivers():
            if self._driver_extension(driver, arg, opened=False) <= 0:
                continue
            if driver == NOIOMMU_DRIVER:
                if not self.machine.root:
                    # container.c vfio_noiommu_open: needs CAP_SYS_RAWIO
                    failure = OSError(errno.EPERM, "no-IOMMU mode needs CAP_SYS_RAWIO")
                    continue
                container.iommu_type = arg
                return 0
            if arg not in TYPE1_TYPES and arg != vfio.VFIO_TYPE1_NESTING_IOMMU:
                # vfio_iommu_type1_open: an extension that is not an IOMMU type (UNMAP_ALL...)
                failure = OSError(errno.EINVAL, f"extension {arg} is not a type1 IOMMU type")
                continue
            if arg == vfio.VFIO_TYPE1_NESTING_IOMMU:
                # vfio_iommu_type1_attach_group -> iommu_enable_nesting: EINVAL unless the IOMMU
                # driver has enable_nesting (only the Arm SMMUs do; not VT-d or AMD-Vi)
                failure = OSError(errno.EINVAL, "this IOMMU cannot nest (no enable_nesting)")
                continue
            container.iommu_type = arg
            container.domain = IOMMUDomain(self.machine.ram)
            return 0
        raise failure

    def _require_type1(self) -> IOMMUDomain:
        if self.container.domain is None:
            raise OSError(errno.ENOTTY, "no-IOMMU containers do not map DMA")
        return self.container.domain

    def _get_info(self, arg) -> int:
        self._require_type1()
        parsed = struct_arg(arg, vfio.vfio_iommu_type1_info, "iova_pgsizes")
        info = parsed.info
        info.flags = vfio.VFIO_IOMMU_INFO_PGSIZES | vfio.VFIO_IOMMU_INFO_CAPS
        info.iova_pgsizes = IOVA_PAGE_SIZES
        caps = iova_range_capability()
        needed = vfio.vfio_iommu_type1_info.SIZE + len(caps)
        if info.argsz < needed:
            info.argsz = needed  # vfio.h: the caller retries with a buffer this large
            info.cap_offset = 0
        else:
            info.cap_offset = vfio.vfio_iommu_type1_info.SIZE
            parsed.view[info.cap_offset:needed] = caps
        parsed.commit()
        return 0

    def _map_dma(self, arg) -> int:
        domain = self._require_type1()
        info = struct_arg(arg, vfio.vfio_iommu_type1_dma_map, "size").info
        if info.flags & ~DMA_MAP_FLAGS:
            raise OSError(errno.EINVAL, f"MAP_DMA flags {info.flags:#x} not supported")
        domain.map(info.iova, info.size, info.vaddr,
                   readable=bool(info.flags & vfio.VFIO_DMA_MAP_FLAG_READ),
                   writable=bool(info.flags & vfio.VFIO_DMA_MAP_FLAG_WRITE))
        return 0

    def _unmap_dma(self, arg) -> int:
        domain = self._require_type1()
        parsed = struct_arg(arg, vfio.vfio_iommu_type1_dma_unmap, "size")
        info = parsed.info
        if info.flags & vfio.VFIO_DMA_UNMAP_FLAG_ALL:
            if info.flags & ~vfio.VFIO_DMA_UNMAP_FLAG_ALL or info.iova or info.size:
                raise OSError(errno.EINVAL, "UNMAP_DMA FLAG_ALL takes iova = size = 0")
            info.size = domain.unmap_all()
        else:
            if info.flags:
                raise OSError(errno.EINVAL, f"UNMAP_DMA flags {info.flags:#x} not supported")
            if info.size == 0:
                raise OSError(errno.EINVAL, "UNMAP_DMA of size 0")
            info.size = domain.unmap(info.iova, info.size)
        parsed.commit()
        return 0

    def close(self) -> None:
        if not self.container.groups and self.container.domain is not None:
            self.container.domain.unmap_all()


class GroupFile(MockFile):
    def __init__(self, machine: "Machine", path: str, group: int, serial: int | None) -> None:
        super().__init__(path)
        self.machine = machine
        self.group = group
        self.serial = serial  # which incarnation of the group number this file was opened on

    @property
    def state(self) -> "VFIOKernel":
        return self.machine.vfio

    @property
    def alive(self) -> bool:
        return self.machine.kernel.group_alive(self.group, self.serial)

    def ioctl(self, request: int, arg) -> int:
        if not self.alive and request in (vfio.VFIO_GROUP_GET_STATUS, vfio.VFIO_GROUP_SET_CONTAINER):
            # group.c vfio_group_ioctl_get_status / _set_container: the group's last device left
            # (vfio_device_remove_group cleared group->iommu_group)
            raise OSError(errno.ENODEV, f"VFIO group {self.group} is gone: its device left vfio-pci")
        if request == vfio.VFIO_GROUP_GET_STATUS:
            parsed = struct_arg(arg, vfio.vfio_group_status, "flags")
            flags = 0
            if self.group in self.state.group_container:
                # group.c vfio_group_ioctl_get_status: a group in a container owns its DMA, so it
                # is viable by definition
                flags |= vfio.VFIO_GROUP_FLAGS_CONTAINER_SET | vfio.VFIO_GROUP_FLAGS_VIABLE
            elif self.machine.kernel.group_viable(self.group):
                flags |= vfio.VFIO_GROUP_FLAGS_VIABLE
            parsed.info.flags = flags
            parsed.commit()
            return 0
        if request == vfio.VFIO_GROUP_SET_CONTAINER:
            return self._set_container(int_pointer_arg(arg))
        if request == vfio.VFIO_GROUP_UNSET_CONTAINER:
            return self._unset_container()
        if request == vfio.VFIO_GROUP_GET_DEVICE_FD:
            return self._get_device_fd(arg)
        raise OSError(errno.ENOTTY, f"unknown VFIO group ioctl {request:#x}")

    def _set_container(self, fd: int) -> int:
        """group.c vfio_group_ioctl_set_container and container.c vfio_container_attach_group."""
        target = self.machine.os.file_of(fd)  # fdget: EBADF for an fd that is not open
        if self.group in self.state.group_container:
            raise OSError(errno.EINVAL, f"group {self.group} is already in a container")
        if not isinstance(target, ContainerFile):
            # neither a container nor an iommufd: "The FD passed is not recognized"
            raise OSError(errno.EBADFD, f"fd {fd} is not a VFIO container")
        container = target.container
        # container.c vfio_container_attach_group: group->type == VFIO_NO_IOMMU
        noiommu = self.group in self.machine.kernel.noiommu_groups
        if noiommu and not self.machine.root:
            raise OSError(errno.EPERM, "a no-IOMMU group needs CAP_SYS_RAWIO")
        if container.groups and container.noiommu != noiommu:
            raise OSError(errno.EPERM, "cannot mix IOMMU and no-IOMMU groups in one container")
        if not self.machine.kernel.group_viable(self.group):
            # iommu_group_claim_dma_owner: a host driver uses the group's DMA API (owner_cnt)
            raise OSError(errno.EPERM, f"group {self.group} has devices bound to host drivers")
        container.groups.add(self.group)
        container.noiommu = noiommu
        self.state.group_container[self.group] = container
        return 0

    def _unset_container(self) -> int:
        container = self.state.group_container.get(self.group)
        if container is None:
            raise OSError(errno.EINVAL, f"group {self.group} is not in a container")
        if any(self.state.device_open(bdf) for bdf in self.members()):
            raise OSError(errno.EBUSY, f"group {self.group} still has open devices")
        self.state.detach(self.group)
        return 0

    def _get_device_fd(self, arg) -> int:
        if arg is None or isinstance(arg, int):
            raise OSError(errno.EFAULT, "GET_DEVICE_FD takes a NUL-terminated device name buffer")
        raw = bytes(memoryview(arg).cast("B"))[:NAME_MAX + 1]
        name = raw.split(b"\0", 1)[0].decode(errors="replace")
        kernel = self.machine.kernel
        # group.c vfio_group_ioctl_get_device_fd: the name is looked up first (ENODEV), then
        # vfio_df_group_open / vfio_group_use_container want a container with a driver (EINVAL)
        if name not in self.members() or kernel.driver_of(name) != VFIO_PCI:
            raise OSError(errno.ENODEV, f"no vfio-pci device {name!r} in group {self.group}")
        container = self.state.group_container.get(self.group)
        if container is None or container.iommu_type is None:
            raise OSError(errno.EINVAL, f"group {self.group} has no container with an IOMMU set")
        if not self.machine.kernel.group_viable(self.group):
            raise OSError(errno.EINVAL, f"group {self.group} is not viable")
        device = DeviceFile(self.machine, f"anon_inode:[vfio-device:{name}]", name, self.group)
        return self.machine.os.install(device)

    def members(self) -> list[str]:
        """The group's devices; none once the group is gone."""
        if not self.alive:
            return []
        return self.machine.kernel.groups.get(self.group, [])

    def close(self) -> None:
        if not self.alive:
            return  # vfio_device_remove_group already detached it; the number may be another's now
        self.state.group_open.discard(self.group)
        if not any(self.state.device_open(bdf) for bdf in self.members()):
            self.state.detach(self.group)


class DeviceFile(MockFile):
    """A vfio-pci device fd: info ioctls, region access at index << 40, interrupts, resets.

    The config region is vfio's virtualised view (`mockgpu.vfio_config`); BAR regions answer
    pread/pwrite only while the virtual Command register has memory decoding on (else EIO) and
    never touch the MSI-X table; mmap'ed BARs raise `BusError` (the SIGBUS of a real process) on
    access while decoding is off."""

    def __init__(self, machine: "Machine", path: str, bdf: str, group: int) -> None:
        super().__init__(path)
        self.machine = machine
        self.bdf = bdf
        self.group = group
        self.function: PCIFunction = machine.functions[bdf]
        self.state.open_device(self)

    @property
    def state(self) -> "VFIOKernel":
        return self.machine.vfio

    @property
    def session(self) -> "OpenDevice":
        return self.state.sessions[self.bdf]

    # -- ioctls --------------------------------------------------------------------------------
    def ioctl(self, request: int, arg) -> int:
        if request == vfio.VFIO_DEVICE_GET_INFO:
            parsed = struct_arg(arg, vfio.vfio_device_info, "num_irqs")
            flags = vfio.VFIO_DEVICE_FLAGS_PCI
            if self.session.reset_works:  # vfio_pci_ioctl_get_info: what the reset at open proved
                flags |= vfio.VFIO_DEVICE_FLAGS_RESET
            parsed.info.flags = flags
            parsed.info.num_regions = vfio.VFIO_PCI_NUM_REGIONS
            parsed.info.num_irqs = vfio.VFIO_PCI_NUM_IRQS
            parsed.commit()
            return 0
        if request == vfio.VFIO_DEVICE_GET_REGION_INFO:
            return self._region_info(arg)
        if request == vfio.VFIO_DEVICE_GET_IRQ_INFO:
            return self._irq_info(arg)
        if request == vfio.VFIO_DEVICE_SET_IRQS:
            return self._set_irqs(arg)
        if request == vfio.VFIO_DEVICE_RESET:
            # vfio_pci_ioctl_reset: EINVAL unless the reset at open worked; D0, then the kernel's reset
            if not self.session.reset_works:
                raise OSError(errno.EINVAL, f"{self.bdf} cannot be reset")
            self.state.set_power_state(self.function, PM_STATE_D0)
            self.machine.kernel.reset_function(self.bdf)
            return 0
        if request == vfio.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO:
            return self._hot_reset_info(arg)
        if request == vfio.VFIO_DEVICE_PCI_HOT_RESET:
            return self._hot_reset(arg)
        raise OSError(errno.ENOTTY, f"unknown VFIO device ioctl {request:#x}")

    def region(self, index: int) -> tuple[int, int]:
        """(size, flags) of region `index` (vfio_pci_ioctl_get_region_info); EINVAL for regions
        this device lacks."""
        if index >= vfio.VFIO_PCI_NUM_REGIONS or index < 0:
            raise OSError(errno.EINVAL, f"region index {index} out of range")
        read_write = vfio.VFIO_REGION_INFO_FLAG_READ | vfio.VFIO_REGION_INFO_FLAG_WRITE
        if index == vfio.VFIO_PCI_CONFIG_REGION_INDEX:
            return self.session.config.size, read_write
        if index == vfio.VFIO_PCI_VGA_REGION_INDEX:
            if not self.session.has_vga:
                raise OSError(errno.EINVAL, f"{self.bdf} is not a VGA device: no VGA region")
            return VGA_REGION_SIZE, read_write
        if index == vfio.VFIO_PCI_ROM_REGION_INDEX:
            return 0, 0
        size = self._resource_len(index)
        if not size:
            return 0, 0
        flags = read_write
        if self._mmap_supported(index):
            flags |= vfio.VFIO_REGION_INFO_FLAG_MMAP
        return size, flags

    def _resource_len(self, index: int) -> int:
        """pci_resource_len: the kernel's resource (0 for unimplemented BARs and upper halves)."""
        if index not in self.function.bars or not self.function.assigned.get(index):
            return 0
        return self.function.assigned_sizes[index]

    def _mmap_supported(self, index: int) -> bool:
        """vfio_pci_probe_mmaps: memory BARs of at least a page, or smaller ones that start on a
        page boundary (vfio reserves the rest of that page)."""
        size = self._resource_len(index)
        if not size or self.function.bars[index].kind is BarKind.IO:
            return False
        return size >= PAGE_SIZE or self.function.assigned[index] % PAGE_SIZE == 0

    def _region_info(self, arg) -> int:
        parsed = struct_arg(arg, vfio.vfio_region_info, "offset")
        info = parsed.info
        size, flags = self.region(info.index)
        info.size = size
        info.flags = flags
        info.cap_offset = 0
        info.offset = info.index << REGION_OFFSET_SHIFT
        parsed.commit()
        return 0

    def _irq_count(self, index: int) -> int:
        """vfio_pci_core.c vfio_pci_get_irq_count: MSI and MSI-X counts come from the capability
        registers (Multiple Message Capable; Table Size, which encodes N-1), not from the model."""
        function = self.function
        if index == vfio.VFIO_PCI_INTX_IRQ_INDEX:
            return 1 if function.cfg.read(pci_regs.PCI_INTERRUPT_PIN, 1) else 0
        if index == vfio.VFIO_PCI_MSI_IRQ_INDEX:
            msi = function.cap_offsets.get(pci_regs.PCI_CAP_ID_MSI)
            if msi is None:
                return 0
            flags = function.cfg.read(msi + pci_regs.PCI_MSI_FLAGS, 2)
            return 1 << field_get(flags, pci_regs.PCI_MSI_FLAGS_QMASK)
        if index == vfio.VFIO_PCI_MSIX_IRQ_INDEX:
            msix = function.cap_offsets.get(pci_regs.PCI_CAP_ID_MSIX)
            if msix is None:
                return 0
            flags = function.cfg.read(msix + pci_regs.PCI_MSIX_FLAGS, 2)
            return (flags & pci_regs.PCI_MSIX_FLAGS_QSIZE) + 1
        if index == vfio.VFIO_PCI_ERR_IRQ_INDEX:
            return 1 if function.pcie is not None else 0
        return 1

    def _irq_info(self, arg) -> int:
        """vfio_pci_core.c vfio_pci_ioctl_get_irq_info."""
        parsed = struct_arg(arg, vfio.vfio_irq_info, "count")
        info = parsed.info
        if info.index >= vfio.VFIO_PCI_NUM_IRQS:
            raise OSError(errno.EINVAL, f"IRQ index {info.index} out of range")
        if info.index == vfio.VFIO_PCI_ERR_IRQ_INDEX and self.function.pcie is None:
            raise OSError(errno.EINVAL, f"{self.bdf} is not PCIe: no error IRQ index")
        flags = vfio.VFIO_IRQ_INFO_EVENTFD
        if info.index == vfio.VFIO_PCI_INTX_IRQ_INDEX:
            flags |= vfio.VFIO_IRQ_INFO_MASKABLE | vfio.VFIO_IRQ_INFO_AUTOMASKED
        elif info.index != vfio.VFIO_PCI_MSIX_IRQ_INDEX or not self.state.msix_dynamic(self.function):
            # MSI-X can grow after it is enabled only where pci_msix_can_alloc_dyn
            flags |= vfio.VFIO_IRQ_INFO_NORESIZE
        info.flags = flags
        info.count = self._irq_count(info.index)
        parsed.commit()
        return 0

    def _set_irqs(self, arg) -> int:
        parsed = struct_arg(arg, vfio.vfio_irq_set, "count")
        info = parsed.info
        view = parsed.view
        header = minsz(vfio.vfio_irq_set, "count")
        if info.index >= vfio.VFIO_PCI_NUM_IRQS:
            raise OSError(errno.EINVAL, f"IRQ index {info.index} out of range")
        if info.flags & ~(IRQ_DATA_TYPES | IRQ_ACTIONS):
            raise OSError(errno.EINVAL, f"SET_IRQS flags {info.flags:#x} unknown")
        data_type = info.flags & IRQ_DATA_TYPES
        action = info.flags & IRQ_ACTIONS
        sizes = {vfio.VFIO_IRQ_SET_DATA_NONE: 0, vfio.VFIO_IRQ_SET_DATA_BOOL: BOOL_ARG_SIZE,
                 vfio.VFIO_IRQ_SET_DATA_EVENTFD: EVENTFD_ARG_SIZE}
        if data_type not in sizes or action not in IRQ_ACTION_LIST:
            raise OSError(errno.EINVAL,
                          f"SET_IRQS needs exactly one data type and one action, got {info.flags:#x}")
        max_count = self._irq_count(info.index)
        no_data_disable = data_type == vfio.VFIO_IRQ_SET_DATA_NONE and info.count == 0
        end = info.start + info.count
        if not no_data_disable and (max_count == 0 or info.start >= max_count or end > max_count):
            raise OSError(errno.EINVAL, f"vectors [{info.start}, {end}) exceed {max_count}")
        data_size = sizes[data_type] * info.count
        if data_size and (info.argsz - header < data_size or len(view) < header + data_size):
            raise OSError(errno.EINVAL, f"SET_IRQS argsz {info.argsz} too small for {info.count} entries")
        payload = bytes(view[header:header + data_size])
        if info.index not in (vfio.VFIO_PCI_MSI_IRQ_INDEX, vfio.VFIO_PCI_MSIX_IRQ_INDEX):
            return self._set_other_irq(info.index, action, data_type, payload)
        if action != vfio.VFIO_IRQ_SET_ACTION_TRIGGER:
            raise OSError(errno.ENOTTY, "MSI/MSI-X support only ACTION_TRIGGER")
        msix = info.index == vfio.VFIO_PCI_MSIX_IRQ_INDEX
        in_use = self.state.msi_kind.get(self.bdf)
        if no_data_disable and in_use == msix:
            self.state.disable_msi(self)
            return 0
        if data_type != vfio.VFIO_IRQ_SET_DATA_EVENTFD and in_use != msix:
            # vfio_pci_set_msi_trigger: -EINVAL unless irq_is(vdev, index)
            kind = "MSI-X" if msix else "MSI"
            raise OSError(errno.EINVAL, f"{kind} is not enabled on {self.bdf}")
        if data_type == vfio.VFIO_IRQ_SET_DATA_EVENTFD:
            fds = [int.from_bytes(payload[i:i + EVENTFD_ARG_SIZE], "little", signed=True)
                   for i in range(0, data_size, EVENTFD_ARG_SIZE)]
            # a positive result is vfio_msi_enable's "fewer vectors than asked": nothing enabled
            return self.state.set_msi_triggers(self, msix, info.start, fds)
        bools = payload if data_type == vfio.VFIO_IRQ_SET_DATA_BOOL else None
        self.state.loopback(self, msix, info.start, info.count, bools)
        return 0

    def _set_other_irq(self, index: int, action: int, data_type: int, payload: bytes) -> int:
        if index == vfio.VFIO_PCI_INTX_IRQ_INDEX:
            raise OSError(errno.EINVAL, f"{self.bdf} has no INTx pin")
        if action != vfio.VFIO_IRQ_SET_ACTION_TRIGGER:
            raise OSError(errno.ENOTTY, "ERR/REQ support only ACTION_TRIGGER")
        if data_type == vfio.VFIO_IRQ_SET_DATA_EVENTFD:
            fd = int.from_bytes(payload[:EVENTFD_ARG_SIZE], "little", signed=True)
            if fd != NO_EVENTFD:
                self.machine.os.eventfd_of(fd)
            self.state.other_triggers[(self.bdf, index)] = fd
        return 0

    # -- hot reset -----------------------------------------------------------------------------
    def _hot_reset_info(self, arg) -> int:
        """vfio_pci_ioctl_get_pci_hot_reset_info: every function a bus reset would reset, with its
        IOMMU group; ENOSPC (count written back) when the array is too short."""
        parsed = struct_arg(arg, vfio.vfio_pci_hot_reset_info, "count")
        info = parsed.info
        info.flags = 0
        kernel = self.machine.kernel
        if not kernel.bus_resettable(self.function):
            raise OSError(errno.ENODEV, f"{self.bdf} has no slot or bus reset")
        affected = kernel.functions_on_bus(self.function)
        entry_size = vfio.vfio_pci_dependent_device.SIZE
        room = max(info.argsz - vfio.vfio_pci_hot_reset_info.SIZE, 0) // entry_size
        if len(affected) > room:
            info.count = len(affected)
            parsed.commit()
            raise OSError(errno.ENOSPC, f"{len(affected)} functions affected; room for {room}")
        if len(parsed.view) < vfio.vfio_pci_hot_reset_info.SIZE + entry_size * len(affected):
            raise OSError(errno.EFAULT, "hot reset info buffer shorter than its argsz")
        for position, function in enumerate(affected):
            group = kernel.group_of.get(function.bdf)
            if group is None:
                raise OSError(errno.EPERM, f"{function.bdf} has no IOMMU group: it cannot be reset")
            at = vfio.vfio_pci_hot_reset_info.SIZE + position * entry_size
            entry = vfio.vfio_pci_dependent_device.from_buffer(parsed.view, at)
            domain, bus, devfn = bdf_numbers(function.bdf)
            entry.group_id = group
            entry.segment = domain
            entry.bus = bus
            entry.devfn = devfn
            del entry
        info.count = len(affected)
        parsed.commit()
        return 0

    def _hot_reset(self, arg) -> int:
        """vfio_pci_ioctl_pci_hot_reset (group path): the caller names, by group fds, the groups of
        every vfio-pci device the bus reset affects; all functions on the bus must be bound to
        vfio-pci (vfio_pci_dev_set_resettable). Then pci_reset_bus."""
        parsed = struct_arg(arg, vfio.vfio_pci_hot_reset, "count")
        info = parsed.info
        if info.flags:
            raise OSError(errno.EINVAL, f"PCI_HOT_RESET flags {info.flags:#x}")
        if info.count == 0:
            raise OSError(errno.EINVAL, "PCI_HOT_RESET of a group-opened device needs group fds")
        kernel = self.machine.kernel
        if not kernel.bus_resettable(self.function):
            raise OSError(errno.ENODEV, f"{self.bdf} has no slot or bus reset")
        if info.count > len(kernel.functions_on_bus(self.function)):
            raise OSError(errno.EINVAL, f"{info.count} group fds for a smaller reset")
        start = vfio.vfio_pci_hot_reset.SIZE
        if len(parsed.view) < start + EVENTFD_ARG_SIZE * info.count:
            raise OSError(errno.EFAULT, "group fd array shorter than count")
        groups = set()
        for position in range(info.count):
            at = start + position * EVENTFD_ARG_SIZE
            fd = int.from_bytes(parsed.view[at:at + EVENTFD_ARG_SIZE], "little", signed=True)
            file = self.machine.os.file_of(fd)  # EBADF
            if not isinstance(file, GroupFile):
                raise OSError(errno.EINVAL, f"fd {fd} is not a VFIO group")
            if file.alive:
                # a group that is gone holds no device (vfio_file_has_dev finds nothing in it)
                groups.add(file.group)
        self.state.hot_reset(self.function, groups)
        return 0

    # -- region access -------------------------------------------------------------------------
    def pread(self, n: int, offset: int) -> bytes:
        index = offset >> REGION_OFFSET_SHIFT
        within = offset & REGION_OFFSET_MASK
        if n <= 0:
            return b""
        if index == vfio.VFIO_PCI_CONFIG_REGION_INDEX:
            return self.session.config.read(within, n)
        if index == vfio.VFIO_PCI_VGA_REGION_INDEX:
            return self._vga_rw(within, n, None)
        if index == vfio.VFIO_PCI_ROM_REGION_INDEX or index >= vfio.VFIO_PCI_NUM_REGIONS:
            raise OSError(errno.EINVAL, f"region {index} of {self.bdf} cannot be read")
        return self._bar_rw(index, within, n, None)

    def pwrite(self, data: bytes, offset: int) -> int:
        data = bytes(data)
        index = offset >> REGION_OFFSET_SHIFT
        within = offset & REGION_OFFSET_MASK
        if not data:
            return 0
        if index == vfio.VFIO_PCI_CONFIG_REGION_INDEX:
            return self.session.config.write(within, data)
        if index == vfio.VFIO_PCI_VGA_REGION_INDEX:
            return len(self._vga_rw(within, len(data), data))
        if index == vfio.VFIO_PCI_ROM_REGION_INDEX or index >= vfio.VFIO_PCI_NUM_REGIONS:
            raise OSError(errno.EINVAL, f"region {index} of {self.bdf} cannot be written")
        return len(self._bar_rw(index, within, len(data), data))

    def _bar_rw(self, index: int, pos: int, count: int, data: bytes | None) -> bytes:
        """vfio_pci_bar_rw: EINVAL at or past the end (a longer access is cut short there), the
        MSI-X table reads all ones and drops writes, and memory BARs need the virtual Command's
        memory decoding (EIO otherwise). Returns what was read, or the part of `data` written."""
        end = self._resource_len(index)
        if not end or pos >= end:
            raise OSError(errno.EINVAL, f"BAR{index} access at {pos:#x} outside {end:#x} bytes")
        count = min(count, end - pos)
        test_mem = self.function.bars[index].kind is not BarKind.IO
        session = self.session
        excluded_start, excluded_end = session.msix_table_range(index)
        out = bytearray()
        for off, width in split_io(pos, count):
            if excluded_start <= off < excluded_end:
                if data is None:
                    out += bytes([0xFF]) * width
                continue
            if test_mem and not session.config.memory_enabled():
                raise OSError(errno.EIO, f"BAR{index} of {self.bdf}: memory decoding is off")
            if data is None:
                out += self.function.mmio_read(index, off, width)
            else:
                self.function.mmio_write(index, off, data[off - pos:off - pos + width])
        return bytes(out) if data is None else data[:count]

    def _vga_rw(self, pos: int, count: int, data: bytes | None) -> bytes:
        """vfio_pci_vga_rw: the legacy VGA memory and I/O ranges only (EINVAL elsewhere). No model
        decodes legacy VGA cycles, so reads are all ones and writes go nowhere."""
        for start, end in VGA_RANGES:
            if start <= pos < end:
                count = min(count, end - pos)
                return bytes([0xFF]) * count if data is None else data[:count]
        raise OSError(errno.EINVAL, f"VGA region offset {pos:#x} is not a legacy VGA range")

    def mmap(self, size: int, offset: int, writable: bool) -> Region:
        """vfio_pci_core_mmap: BARs whose mmap vfio supports, within the page-aligned resource.
        Accesses fault (BusError) while the virtual Command has memory decoding off."""
        index = offset >> REGION_OFFSET_SHIFT
        within = offset & REGION_OFFSET_MASK
        if index >= vfio.VFIO_PCI_ROM_REGION_INDEX or index < 0:
            raise OSError(errno.EINVAL, f"region {index} of {self.bdf} cannot be mapped")
        if not self._mmap_supported(index):
            raise OSError(errno.EINVAL, f"BAR{index} of {self.bdf} is not mmap-able")
        length = self._resource_len(index)
        mapped_length = -(-length // PAGE_SIZE) * PAGE_SIZE  # PAGE_ALIGN
        if size <= 0 or within % PAGE_SIZE or within + size > mapped_length:
            raise OSError(errno.EINVAL,
                          f"mmap [{within:#x}, +{size:#x}) invalid for BAR{index} of {length:#x} bytes")
        region = self.function.bar_region(index, within + size)
        if within:
            region = region.sub(within, size)
        if isinstance(region, MemoryRegion):
            # plain memory cannot be trapped: a known limit of the mock (docs/mockgpu.md)
            return region
        return self.state.faulting_mapping(self.bdf, index, within, region)

    def close(self) -> None:
        self.state.close_device(self)


@dataclass
class MSIBlock:
    """The host vectors behind a function's MSI: `size` data values from `base` (a power of two,
    aligned), of which the first `vectors` were asked for when MSI was enabled."""

    base: int
    size: int
    vectors: int


class VFIOKernel:
    """Machine-wide VFIO state: which groups are open, their containers, open devices, IRQ wiring."""

    def __init__(self, machine: "Machine") -> None:
        self.machine = machine
        self.group_open: set[int] = set()
        self.group_container: dict[int, Container] = {}
        self.device_files: dict[str, list[DeviceFile]] = {}
        self.msi_vectors: dict[str, dict[int, tuple[int, EventFD]]] = {}
        self.msi_blocks: dict[str, MSIBlock] = {}
        self.msi_kind: dict[str, bool] = {}
        self.msix_allocated: dict[str, set[int]] = {}  # MSI-X table entries with a Linux IRQ
        self.other_triggers: dict[tuple[str, int], int] = {}
        self.sessions: dict[str, OpenDevice] = {}  # vfio_pci_core_enable .. vfio_pci_core_disable
        self.needs_reset: dict[str, bool] = {}  # vdev->needs_reset
        self.pm_saved: dict[str, SavedState] = {}  # vdev->pm_save
        self._msi_qmax: dict[str, int] = {}
        self.bus_errors: list[BusErrorEvent] = []  # mmap'ed accesses that would have been SIGBUS
        self.kernel_domain = IOMMUDomain(machine.ram)

    def device_open(self, bdf: str) -> bool:
        return bool(self.device_files.get(bdf))

    def domain_for(self, function: PCIFunction) -> IOMMUDomain | None:
        """The IOMMU domain translating `function`'s DMA; None means physical addresses.

        A group in a type1 container uses the container's domain; otherwise the kernel's default
        domain applies: identity (passthrough) or, with `iommu_passthrough=False`, a DMA domain in
        which nothing of ours is mapped, so DMA by physical address faults."""
        group = self.machine.kernel.group_of.get(function.bdf)
        container = self.group_container.get(group)
        if container is not None:
            return container.domain
        if self.machine.iommu and not self.machine.iommu_passthrough:
            return self.kernel_domain
        return None

    def attached(self, function: PCIFunction) -> bool:
        return self.machine.kernel.group_of.get(function.bdf) in self.group_container

    def group_removed(self, group: int) -> None:
        """drivers/vfio/group.c vfio_device_remove_group: a group whose last device left is
        detached from its container and can no longer be opened; an open file on it stays open."""
        self.group_open.discard(group)
        self.detach(group)

    def detach(self, group: int) -> None:
        container = self.group_container.pop(group, None)
        if container is None:
            return
        container.groups.discard(group)
        if not container.groups:
            if container.domain is not None:
                container.domain.unmap_all()
            container.iommu_type = None
            container.domain = None

    def open_device(self, device: DeviceFile) -> None:
        files = self.device_files.setdefault(device.bdf, [])
        if not files:
            self.sessions[device.bdf] = self._enable(device.function)
        files.append(device)

    def _enable(self, function: PCIFunction) -> "OpenDevice":
        """vfio_pci_core_enable, the first open: bus mastering off, pci_enable_device (decoding
        on), a function reset by the kernel's method order whose success is VFIO_DEVICE_FLAGS_RESET,
        the state saved for the last close, then vfio's config copy."""
        kernel = self.machine.kernel
        command = function.config_read(pci_regs.PCI_COMMAND, 2)
        function.config_write(pci_regs.PCI_COMMAND, 2, command & ~pci_regs.PCI_COMMAND_MASTER)
        kernel._enable(function, master=False)
        reset_works = kernel.try_reset_function(function.bdf)
        saved = save_state(function)
        config = VirtualConfig(self.machine, function)
        table = (0, 0, 0)
        msix = function.cap_offsets.get(pci_regs.PCI_CAP_ID_MSIX)
        if msix is not None:
            flags = function.config_read(msix + pci_regs.PCI_MSIX_FLAGS, 2)
            where = function.config_read(msix + pci_regs.PCI_MSIX_TABLE, 4)
            entries = (flags & pci_regs.PCI_MSIX_FLAGS_QSIZE) + 1
            table = (where & pci_regs.PCI_MSIX_TABLE_BIR, where & pci_regs.PCI_MSIX_TABLE_OFFSET,
                     entries * pci_regs.PCI_MSIX_ENTRY_SIZE)
        # vfio_pci_is_vga: the class code's base class and subclass say VGA-compatible display
        has_vga = function.identity.class_code >> CLASS_PROG_IF_BITS == PCI_CLASS_DISPLAY_VGA
        return OpenDevice(config, reset_works, saved, has_vga, *table)

    def close_device(self, device: DeviceFile) -> None:
        files = self.device_files.get(device.bdf, [])
        if device in files:
            files.remove(device)
        if files:
            return
        self._disable(device)
        if device.group not in self.group_open:
            self.detach(device.group)

    def _disable(self, device: DeviceFile) -> None:
        """vfio_pci_core_disable, the last close: D0, bus mastering off, interrupts and the ERR/REQ
        triggers gone, the state saved at open loaded, Command cleared, a function reset if the
        one at open worked, the saved state restored, bus mastering off; then, when nothing else
        in the device's reset set is open and a device needs it, a bus reset of the set."""
        function = device.function
        kernel = self.machine.kernel
        session = self.sessions.pop(device.bdf)
        self.set_power_state(function, PM_STATE_D0)
        self._clear_master(function)
        self.disable_msi(device)
        for index in (vfio.VFIO_PCI_ERR_IRQ_INDEX, vfio.VFIO_PCI_REQ_IRQ_INDEX):
            self.other_triggers.pop((device.bdf, index), None)
        self.needs_reset[device.bdf] = True
        function.config_write(pci_regs.PCI_COMMAND, 2, pci_regs.PCI_COMMAND_INTX_DISABLE)
        if session.reset_works and function.responds():
            try:
                kernel.reset_function_locked(function)
                self.needs_reset[device.bdf] = False
            except OSError as exc:
                log.info("%s: reset at close failed: %s", device.bdf, exc)
        restore_state(function, session.saved)
        self._clear_master(function)  # pci_disable_device
        self._try_bus_reset(function)

    @staticmethod
    def _clear_master(function: PCIFunction) -> None:
        """pci_clear_master."""
        command = function.config_read(pci_regs.PCI_COMMAND, 2)
        if command & pci_regs.PCI_COMMAND_MASTER:
            function.config_write(pci_regs.PCI_COMMAND, 2, command & ~pci_regs.PCI_COMMAND_MASTER)

    # -- reset sets and hot reset (vfio_pci_core.c) -------------------------------------------
    def dev_set(self, function: PCIFunction) -> list[PCIFunction]:
        """vfio_pci_core_register_device: the vfio-pci devices that share a reset: those on the
        same bus (a function on a root bus is a set of its own)."""
        kernel = self.machine.kernel
        if function.parent is None:
            return [function]
        return [child for child in function.parent.children
                if child.bdf in self.machine.functions and kernel.driver_of(child.bdf) == VFIO_PCI]

    def dev_set_resettable(self, function: PCIFunction) -> bool:
        """vfio_pci_dev_set_resettable: a bus reset exists and every function it would reset is
        in the set (bound to vfio-pci), so no other driver is surprised."""
        kernel = self.machine.kernel
        if not kernel.bus_resettable(function):
            return False
        members = self.dev_set(function)
        return all(each in members for each in kernel.functions_on_bus(function))

    def _try_bus_reset(self, function: PCIFunction) -> None:
        """vfio_pci_dev_set_try_reset: after the last close in the set, reset the bus when some
        device of the set still needs a reset (no FLR, say) and the set covers the bus."""
        members = self.dev_set(function)
        if any(self.device_open(member.bdf) for member in members if member is not function):
            return
        if not any(self.needs_reset.get(member.bdf) for member in members):
            return
        if not self.dev_set_resettable(function):
            return
        self.machine.kernel.reset_bus(function)
        for member in members:
            self.needs_reset[member.bdf] = False

    def hot_reset(self, function: PCIFunction, groups: set[int]) -> None:
        """vfio_pci_dev_set_hot_reset: every device of the set must belong to one of `groups`;
        each goes to D0; then pci_reset_bus."""
        if not self.dev_set_resettable(function):
            raise OSError(errno.EINVAL,
                          f"a bus reset of {function.bdf} would reset functions not on vfio-pci")
        kernel = self.machine.kernel
        members = self.dev_set(function)
        for member in members:
            if kernel.group_of.get(member.bdf) not in groups:
                raise OSError(errno.EINVAL, f"{member.bdf} is not in the groups given")
        for member in members:
            self.set_power_state(member, PM_STATE_D0)
        kernel.reset_bus(function)

    # -- power, MSI bookkeeping, requests ------------------------------------------------------
    def set_power_state(self, function: PCIFunction, state: int) -> None:
        """vfio_pci_set_power_state: pci_set_power_state, saving the state before D3hot and putting
        it back on the way to D0 for a function that resets itself then (No_Soft_Reset clear)."""
        pm = function.cap_offsets.get(pci_regs.PCI_CAP_ID_PM)
        if pm is None or not function.responds():
            return
        control_at = pm + pci_regs.PCI_PM_CTRL
        control = function.config_read(control_at, 2)
        current = control & pci_regs.PCI_PM_CTRL_STATE_MASK
        if current == state:
            return
        needs_restore = not control & pci_regs.PCI_PM_CTRL_NO_SOFT_RESET
        if needs_restore and current < PM_STATE_D3HOT <= state:
            self.pm_saved[function.bdf] = save_state(function)
        function.config_write(control_at, 2, control & ~pci_regs.PCI_PM_CTRL_STATE_MASK | state)
        saved = self.pm_saved.pop(function.bdf, None) if state == PM_STATE_D0 else None
        if needs_restore and saved is not None:
            restore_state(function, saved)

    def msi_qmax(self, bdf: str) -> int:
        """vdev->msi_qmax: log2 of the MSI vectors vfio last enabled (0 before any)."""
        block = self.msi_blocks.get(bdf)
        if block is not None:
            self._msi_qmax[bdf] = block.size.bit_length() - 1
        return self._msi_qmax.get(bdf, 0)

    def request_release(self, bdf: str) -> None:
        """vfio_pci_core_request: the kernel wants the device back (unbind, removal) and signals
        the REQ trigger the user set."""
        self._signal_trigger(bdf, vfio.VFIO_PCI_REQ_IRQ_INDEX)

    def error_detected(self, bdf: str) -> None:
        """vfio_pci_core_aer_err_detected: AER reported an error below this device; the ERR
        trigger is signalled."""
        self._signal_trigger(bdf, vfio.VFIO_PCI_ERR_IRQ_INDEX)

    def _signal_trigger(self, bdf: str, index: int) -> None:
        fd = self.other_triggers.get((bdf, index), NO_EVENTFD)
        if fd == NO_EVENTFD or not self.device_open(bdf):
            return
        try:
            self.machine.os.eventfd_of(fd).signal()
        except OSError:
            log.info("%s: trigger fd %d of IRQ index %d is gone", bdf, fd, index)

    def faulting_mapping(self, bdf: str, index: int, start: int, region: Region) -> Region:
        """An mmap of a register BAR: each access faults in vfio_pci_mmap_huge_fault, which answers
        VM_FAULT_SIGBUS while memory decoding is off (or the device is closed): BusError here,
        recorded in `bus_errors`."""
        def check(offset: int, write: bool) -> None:
            session = self.sessions.get(bdf)
            if session is not None and session.config.memory_enabled():
                return
            event = BusErrorEvent(bdf, index, start + offset, write)
            self.bus_errors.append(event)
            raise BusError(f"SIGBUS: {'write to' if write else 'read of'} BAR{index}+{start + offset:#x} "
                           f"of {bdf} while vfio-pci has memory decoding off")

        def read(offset: int, n: int) -> bytes:
            check(offset, False)
            return region.read(offset, n)

        def write(offset: int, data: bytes) -> None:
            check(offset, True)
            region.write(offset, data)

        return CallbackRegion(region.size, read, write)

    # -- interrupts ----------------------------------------------------------------------------
    def msix_dynamic(self, function: PCIFunction) -> bool:
        """pci_msix_can_alloc_dyn: MSI-X vectors can be added after MSI-X is enabled (vfio-pci then
        leaves VFIO_IRQ_INFO_NORESIZE off for the MSI-X index)."""
        return function.msix is not None and self.machine.bus.interrupts.msix_dynamic

    def disable_msi(self, device: DeviceFile) -> None:
        """vfio_msi_disable: every trigger goes, the vectors are freed, the capability is off."""
        vectors = self.msi_vectors.pop(device.bdf, {})
        for data, _ in vectors.values():
            self.machine.bus.interrupts.release(data)
        block = self.msi_blocks.pop(device.bdf, None)
        if block is not None:
            for data in range(block.base, block.base + block.size):
                self.machine.bus.interrupts.release(data)
        self.msix_allocated.pop(device.bdf, None)
        function = device.function
        controls = ((pci_regs.PCI_CAP_ID_MSI, pci_regs.PCI_MSI_FLAGS, pci_regs.PCI_MSI_FLAGS_ENABLE),
                    (pci_regs.PCI_CAP_ID_MSIX, pci_regs.PCI_MSIX_FLAGS, pci_regs.PCI_MSIX_FLAGS_ENABLE))
        for cap_id, reg, enable in controls:
            offset = function.cap_offsets.get(cap_id)
            if offset is not None:
                control = function.cfg.read(offset + reg, 2)
                function.cfg.set_value(offset + reg, 2, control & ~enable)
        self.msi_kind.pop(device.bdf, None)

    def set_msi_triggers(self, device: DeviceFile, msix: bool, start: int, fds: list[int]) -> int:
        """vfio_pci_set_msi_trigger with DATA_EVENTFD. Returns 0, or the positive number of vectors
        the host could grant when that is fewer than asked (then nothing is enabled)."""
        bdf = device.bdf
        current = self.msi_kind.get(bdf)
        if current is not None and current != msix:
            raise OSError(errno.EINVAL, f"{bdf} already uses {'MSI-X' if current else 'MSI'}")
        eventfds = [None if fd == NO_EVENTFD else self.machine.os.eventfd_of(fd) for fd in fds]
        enabling = current is None
        if enabling:
            asked = start + len(fds)
            granted = self._enable_vectors(device, msix, asked)
            if granted < asked:
                return granted
        try:
            self._set_block(device, msix, start, eventfds)
        except OSError:
            if enabling:
                self.disable_msi(device)
            raise
        return 0

    def _enable_vectors(self, device: DeviceFile, msix: bool, asked: int) -> int:
        """vfio_msi_enable: pci_alloc_irq_vectors(pdev, 1, asked). Fewer than `asked` granted: they
        are freed again and the count is returned; none at all: ENOSPC. MSI gets a power-of-two
        aligned block of host vectors; MSI-X gets table entries 0..asked-1, all masked until
        bound."""
        bdf = device.bdf
        limit = self.machine.bus.interrupts.vector_limits.get(bdf)
        granted = asked if limit is None else min(asked, limit)
        if granted < 1:
            raise OSError(errno.ENOSPC, f"the host has no interrupt vectors for {bdf}")
        if granted < asked:
            log.info("%s: %d of %d %s vectors granted; nothing enabled", bdf, granted, asked,
                     "MSI-X" if msix else "MSI")
            return granted
        if msix:
            self.msix_allocated[bdf] = set(range(asked))
        else:
            enabled = 1 << (asked - 1).bit_length()
            _, base = self.machine.bus.interrupts.allocate_block(enabled)
            self.msi_blocks[bdf] = MSIBlock(base, enabled, asked)
        self.msi_kind[bdf] = msix
        return asked

    def _set_block(self, device: DeviceFile, msix: bool, start: int,
                   eventfds: list[EventFD | None]) -> None:
        """vfio_msi_set_block: vector by vector; on a failure the vectors this call already set lose
        their triggers again. The hardware is then programmed with what is bound."""
        done: list[int] = []
        try:
            for position, eventfd in enumerate(eventfds):
                vector = start + position
                self._set_vector(device, msix, vector, eventfd)
                done.append(vector)
        except OSError:
            for vector in done:
                self._set_vector(device, msix, vector, None)
            raise
        finally:
            if msix:
                self._program_msix(device.function, self.msi_vectors.get(device.bdf, {}))
            else:
                self._program_msi(device.function, self.msi_blocks[device.bdf])

    def _set_vector(self, device: DeviceFile, msix: bool, vector: int, eventfd: EventFD | None) -> None:
        """vfio_msi_set_vector_signal: drop the old trigger, then bind `eventfd` (None: leave it
        unbound). A vector outside what was enabled is EINVAL (pci_irq_vector), except that MSI-X
        adds it where dynamic allocation exists (vfio_msi_alloc_irq -> pci_msix_alloc_irq_at)."""
        bdf = device.bdf
        interrupts = self.machine.bus.interrupts
        vectors = self.msi_vectors.setdefault(bdf, {})
        old = vectors.pop(vector, None)
        if msix:
            if old is not None:
                interrupts.release(old[0])
            if eventfd is None:
                return
            allocated = self.msix_allocated[bdf]
            if vector not in allocated:
                if not self.msix_dynamic(device.function):
                    raise OSError(errno.EINVAL, f"MSI-X vector {vector} of {bdf} was not enabled and "
                                                "this host cannot add vectors (NORESIZE)")
                allocated.add(vector)
            _, data = interrupts.allocate(eventfd.signal)
            vectors[vector] = (data, eventfd)
            return
        block = self.msi_blocks[bdf]
        data = block.base + vector
        if old is not None:
            interrupts.route(data, None)
        if eventfd is None:
            return
        if vector >= block.vectors:
            # the MSI vector count is fixed when MSI is enabled
            raise OSError(errno.EINVAL, f"MSI vector {vector} of {bdf}: only {block.vectors} enabled")
        interrupts.route(data, eventfd.signal)
        vectors[vector] = (data, eventfd)

    def _program_msi(self, function: PCIFunction, block: MSIBlock) -> None:
        """What the host kernel writes into the MSI capability: address, first data value, the
        enabled vector count (Multiple Message Enable) and MSI Enable."""
        offset = function.cap_offsets[pci_regs.PCI_CAP_ID_MSI]
        function.cfg.set_value(offset + pci_regs.PCI_MSI_ADDRESS_LO, 4, MSI_WINDOW_BASE)
        function.cfg.set_value(offset + pci_regs.PCI_MSI_ADDRESS_HI, 4, 0)
        function.cfg.set_value(offset + pci_regs.PCI_MSI_DATA_64, 2, block.base)
        flags = function.cfg.read(offset + pci_regs.PCI_MSI_FLAGS, 2) & ~pci_regs.PCI_MSI_FLAGS_QSIZE
        flags |= field_put(pci_regs.PCI_MSI_FLAGS_QSIZE, block.size.bit_length() - 1)
        flags |= pci_regs.PCI_MSI_FLAGS_ENABLE
        function.cfg.set_value(offset + pci_regs.PCI_MSI_FLAGS, 2, flags)

    def _program_msix(self, function: PCIFunction, vectors: dict[int, tuple[int, EventFD]]) -> None:
        """What the host kernel writes into the MSI-X table so the messages reach our vectors."""
        offset = function.cap_offsets[pci_regs.PCI_CAP_ID_MSIX]
        for vector in range(function.msix.vectors):
            base = vector * pci_regs.PCI_MSIX_ENTRY_SIZE
            entry = vectors.get(vector)
            control = 0 if entry else pci_regs.PCI_MSIX_ENTRY_CTRL_MASKBIT
            data = entry[0] if entry else 0
            for field_offset, value in ((pci_regs.PCI_MSIX_ENTRY_LOWER_ADDR, MSI_WINDOW_BASE),
                                        (pci_regs.PCI_MSIX_ENTRY_UPPER_ADDR, 0),
                                        (pci_regs.PCI_MSIX_ENTRY_DATA, data),
                                        (pci_regs.PCI_MSIX_ENTRY_VECTOR_CTRL, control)):
                start = base + field_offset
                function.msix_table[start:start + 4] = value.to_bytes(4, "little")
        control = function.cfg.read(offset + pci_regs.PCI_MSIX_FLAGS, 2) | pci_regs.PCI_MSIX_FLAGS_ENABLE
        control &= ~pci_regs.PCI_MSIX_FLAGS_MASKALL
        function.cfg.set_value(offset + pci_regs.PCI_MSIX_FLAGS, 2, control)

    def loopback(self, device: DeviceFile, msix: bool, start: int, count: int, bools: bytes | None) -> None:
        vectors = self.msi_vectors.get(device.bdf, {})
        for position in range(count):
            if bools is not None and not bools[position]:
                continue
            entry = vectors.get(start + position)
            if entry is not None:
                entry[1].signal()


def split_io(offset: int, n: int) -> list[tuple[int, int]]:
    """Naturally aligned 8/4/2/1-byte pieces, as vfio_pci_core_do_io_rw issues them."""
    pieces = []
    while n:
        for width in (8, 4, 2, 1):
            if n >= width and offset % width == 0:
                pieces.append((offset, width))
                offset += width
                n -= width
                break
    return pieces


def config_read_bytes(function: PCIFunction, offset: int, n: int) -> bytes:
    out = bytearray()
    for off, width in split_io(offset, n):
        if width == 8:
            out += function.config_read(off, 4).to_bytes(4, "little")
            out += function.config_read(off + 4, 4).to_bytes(4, "little")
        else:
            out += function.config_read(off, width).to_bytes(width, "little")
    return bytes(out)


def config_write_bytes(function: PCIFunction, offset: int, data: bytes) -> None:
    pos = 0
    for off, width in split_io(offset, len(data)):
        if width == 8:
            function.config_write(off, 4, int.from_bytes(data[pos:pos + 4], "little"))
            function.config_write(off + 4, 4, int.from_bytes(data[pos + 4:pos + 8], "little"))
        else:
            function.config_write(off, width, int.from_bytes(data[pos:pos + width], "little"))
        pos += width


def iova_range_capability() -> bytes:
    """VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE (version 1) listing the usable IOVA ranges."""
    ranges = usable_iova_ranges()
    size = vfio.vfio_iommu_type1_info_cap_iova_range.SIZE + vfio.vfio_iova_range.SIZE * len(ranges)
    raw = bytearray(size)
    cap = vfio.vfio_iommu_type1_info_cap_iova_range.from_buffer(raw)
    cap.header.id = vfio.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE
    cap.header.version = IOVA_RANGE_CAP_VERSION
    cap.header.next = 0
    cap.nr_iovas = len(ranges)
    for position, (start, end) in enumerate(ranges):
        entry = vfio.vfio_iova_range.from_buffer(raw, cap.SIZE + position * vfio.vfio_iova_range.SIZE)
        entry.start = start
        entry.end = end
    return bytes(raw)
