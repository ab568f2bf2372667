"""The simulated kernel's VFIO: /dev/vfio/vfio (container), /dev/vfio/<group>, and device fds.

Ioctls, struct layouts and validation follow drivers/vfio/{container,group,vfio_main}.c,
vfio_iommu_type1.c and pci/vfio_pci_core.c: short `argsz` -> EINVAL, unknown ioctl -> ENOTTY,
pointer arguments given as plain integers -> EFAULT, a container ioctl before SET_IOMMU -> EINVAL,
a group whose devices are not all bound to vfio-pci (or unbound) cannot join a container (EPERM),
MAP_DMA alignment/overlap -> EINVAL/EEXIST, pinning past RLIMIT_MEMLOCK -> ENOMEM.
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
from hal.region import Region
from mockgpu.bits import field_get, field_put
from mockgpu.files import EventFD, MockFile
from mockgpu.iommu import IOVA_PAGE_SIZES, MSI_WINDOW_BASE, IOMMUDomain, usable_iova_ranges
from mockgpu.kernel import VFIO_PCI
from mockgpu.pci import BAR_DWORD, BarKind, PCIFunction

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
VIRTUAL_BARS_START = pci_regs.PCI_BASE_ADDRESS_0
VIRTUAL_BARS_END = pci_regs.PCI_BASE_ADDRESS_5 + 4


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
    def __init__(self, machine: "Machine", path: str, group: int) -> None:
        super().__init__(path)
        self.machine = machine
        self.group = group

    @property
    def state(self) -> "VFIOKernel":
        return self.machine.vfio

    def ioctl(self, request: int, arg) -> int:
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
        noiommu = not self.machine.iommu
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
        if any(self.state.device_open(bdf) for bdf in self.machine.kernel.groups[self.group]):
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
        if name not in kernel.groups[self.group] or kernel.driver_of(name) != VFIO_PCI:
            raise OSError(errno.ENODEV, f"no vfio-pci device {name!r} in group {self.group}")
        container = self.state.group_container.get(self.group)
        if container is None or container.iommu_type is None:
            raise OSError(errno.EINVAL, f"group {self.group} has no container with an IOMMU set")
        if not self.machine.kernel.group_viable(self.group):
            raise OSError(errno.EINVAL, f"group {self.group} is not viable")
        device = DeviceFile(self.machine, f"anon_inode:[vfio-device:{name}]", name, self.group)
        return self.machine.os.install(device)

    def close(self) -> None:
        self.state.group_open.discard(self.group)
        if not any(self.state.device_open(bdf) for bdf in self.machine.kernel.groups.get(self.group, [])):
            self.state.detach(self.group)


class DeviceFile(MockFile):
    """A vfio-pci device fd: info ioctls, region access at index << 40, interrupts, reset."""

    def __init__(self, machine: "Machine", path: str, bdf: str, group: int) -> None:
        super().__init__(path)
        self.machine = machine
        self.bdf = bdf
        self.group = group
        self.function: PCIFunction = machine.functions[bdf]
        self.state.open_device(self)
        # vfio_pci_config.c keeps a virtual copy of the BARs: sizing through the device fd works
        # without moving the real BARs away from the addresses the kernel assigned
        self.virtual_bars = bytearray(self.function.cfg.data[VIRTUAL_BARS_START:VIRTUAL_BARS_END])
        # vfio_config_init records the physical BARs (vdev->rbar) to put back after a reset that
        # happened behind vfio's back (vfio_bar_restore)
        self.physical_bars = bytes(self.function.cfg.data[VIRTUAL_BARS_START:VIRTUAL_BARS_END])

    @property
    def state(self) -> "VFIOKernel":
        return self.machine.vfio

    # -- ioctls --------------------------------------------------------------------------------
    def ioctl(self, request: int, arg) -> int:
        if request == vfio.VFIO_DEVICE_GET_INFO:
            parsed = struct_arg(arg, vfio.vfio_device_info, "num_irqs")
            flags = vfio.VFIO_DEVICE_FLAGS_PCI
            if self.machine.kernel.reset_methods(self.function):
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
            if not self.machine.kernel.reset_methods(self.function):
                raise OSError(errno.EINVAL, f"{self.bdf} cannot be reset")
            self.machine.kernel.reset_function(self.bdf)
            return 0
        raise OSError(errno.ENOTTY, f"unknown VFIO device ioctl {request:#x}")

    def region(self, index: int) -> tuple[int, int]:
        """(size, flags) of region `index`; raises EINVAL for regions this device lacks."""
        if index >= vfio.VFIO_PCI_NUM_REGIONS or index < 0:
            raise OSError(errno.EINVAL, f"region index {index} out of range")
        if index == vfio.VFIO_PCI_CONFIG_REGION_INDEX:
            return self.function.cfg.size, vfio.VFIO_REGION_INFO_FLAG_READ | vfio.VFIO_REGION_INFO_FLAG_WRITE
        if index == vfio.VFIO_PCI_VGA_REGION_INDEX:
            raise OSError(errno.EINVAL, "VGA region not enabled")
        if index == vfio.VFIO_PCI_ROM_REGION_INDEX:
            return 0, 0
        spec = self.function.bars.get(index)
        if spec is None:
            return 0, 0
        # vfio_pci_ioctl_get_region_info reports pci_resource_len: the kernel's resource size
        size = self.function.assigned_sizes.get(index, self.function.bar_sizes[index])
        flags = vfio.VFIO_REGION_INFO_FLAG_READ | vfio.VFIO_REGION_INFO_FLAG_WRITE
        if spec.kind is not BarKind.IO and size % PAGE_SIZE == 0:
            flags |= vfio.VFIO_REGION_INFO_FLAG_MMAP
        return size, flags

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

    # -- region access -------------------------------------------------------------------------
    def _locate(self, offset: int, n: int) -> tuple[int, int]:
        index = offset >> REGION_OFFSET_SHIFT
        within = offset & REGION_OFFSET_MASK
        size, flags = self.region(index)
        if n < 0 or within + n > size:
            raise OSError(errno.EINVAL,
                          f"access [{within:#x}, +{n:#x}) outside region {index} of {size:#x} bytes")
        return index, within

    def pread(self, n: int, offset: int) -> bytes:
        index, within = self._locate(offset, n)
        if index == vfio.VFIO_PCI_CONFIG_REGION_INDEX:
            return self._config_read(within, n)
        out = bytearray()
        for off, width in split_io(within, n):
            out += self.function.mmio_read(index, off, width)
        return bytes(out)

    def pwrite(self, data: bytes, offset: int) -> int:
        data = bytes(data)
        index, within = self._locate(offset, len(data))
        if index == vfio.VFIO_PCI_CONFIG_REGION_INDEX:
            self._config_write(within, data)
            return len(data)
        pos = 0
        for off, width in split_io(within, len(data)):
            self.function.mmio_write(index, off, data[pos:pos + width])
            pos += width
        return len(data)

    def _config_read(self, offset: int, n: int) -> bytes:
        data = bytearray(config_read_bytes(self.function, offset, n))
        if not self.function.responds():
            return bytes(data)
        for position in range(max(offset, VIRTUAL_BARS_START), min(offset + n, VIRTUAL_BARS_END)):
            data[position - offset] = self.virtual_bars[position - VIRTUAL_BARS_START]
        return bytes(data)

    def _config_write(self, offset: int, data: bytes) -> None:
        pos = 0
        for piece, width in split_io(offset, len(data)):
            chunk = data[pos:pos + width]
            pos += width
            if VIRTUAL_BARS_START <= piece < VIRTUAL_BARS_END:
                self._write_virtual_bars(piece, chunk)
                continue
            chunk = self._intercept_flr(piece, chunk)
            if piece <= pci_regs.PCI_COMMAND < piece + width:
                self._restore_bars_after_backdoor_reset()
            config_write_bytes(self.function, piece, chunk)

    def _restore_bars_after_backdoor_reset(self) -> None:
        """vfio_basic_config_write: a Command write finds the physical BARs changed (a reset vfio did
        not do, such as a bus reset through the bridge) and writes the recorded ones back first."""
        current = bytes(self.function.cfg.data[VIRTUAL_BARS_START:VIRTUAL_BARS_END])
        if current == self.physical_bars or not self.function.responds():
            return
        for offset in range(VIRTUAL_BARS_START, VIRTUAL_BARS_END, BAR_DWORD):
            start = offset - VIRTUAL_BARS_START
            value = int.from_bytes(self.physical_bars[start:start + BAR_DWORD], "little")
            self.function.config_write(offset, BAR_DWORD, value)

    def _write_virtual_bars(self, offset: int, chunk: bytes) -> None:
        for position, byte in enumerate(chunk, start=offset):
            mask = self.function.cfg.writable[position]
            slot = position - VIRTUAL_BARS_START
            self.virtual_bars[slot] = (self.virtual_bars[slot] & ~mask & 0xFF) | (byte & mask)

    def _intercept_flr(self, offset: int, chunk: bytes) -> bytes:
        """vfio_pci_config.c turns a write of the FLR bit into pci_try_reset_function (with
        config save/restore) instead of passing it to the device."""
        exp = self.function.cap_offsets.get(pci_regs.PCI_CAP_ID_EXP)
        if exp is None:
            return chunk
        devctl = exp + pci_regs.PCI_EXP_DEVCTL
        if not offset <= devctl + 1 < offset + len(chunk):
            return chunk
        high = devctl + 1 - offset  # the FLR bit lives in DevCtl's upper byte
        flr_high = pci_regs.PCI_EXP_DEVCTL_BCR_FLR >> 8
        if not chunk[high] & flr_high:
            return chunk
        stripped = bytearray(chunk)
        stripped[high] &= ~flr_high & 0xFF
        if self.function.has_flr():
            self.machine.kernel.reset_function(self.bdf)
        return bytes(stripped)

    def mmap(self, size: int, offset: int, writable: bool) -> Region:
        index = offset >> REGION_OFFSET_SHIFT
        within = offset & REGION_OFFSET_MASK
        region_size, flags = self.region(index)
        if not flags & vfio.VFIO_REGION_INFO_FLAG_MMAP:
            raise OSError(errno.EINVAL, f"region {index} of {self.bdf} is not mmap-able")
        if within % PAGE_SIZE or size % PAGE_SIZE or size == 0 or within + size > region_size:
            raise OSError(errno.EINVAL,
                          f"mmap [{within:#x}, +{size:#x}) invalid for region of {region_size:#x}")
        region = self.function.bar_region(index, region_size)
        if within == 0 and size == region.size:
            return region
        return region.sub(within, size)

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
            # vfio_pci_core_enable: pci_enable_device turns on decoding (not bus mastering)
            self.machine.kernel._enable(device.function, master=False)
        files.append(device)

    def close_device(self, device: DeviceFile) -> None:
        files = self.device_files.get(device.bdf, [])
        if device in files:
            files.remove(device)
        if files:
            return
        # vfio_pci_core_disable: interrupts off, bus master off, reset if the device can
        self.disable_msi(device)
        function = device.function
        command = function.cfg.read(pci_regs.PCI_COMMAND, 2) & ~pci_regs.PCI_COMMAND_MASTER
        function.cfg.set_value(pci_regs.PCI_COMMAND, 2, command)
        if self.machine.kernel.reset_methods(function) and function.responds():
            self.machine.kernel.reset_function(device.bdf)
        if device.group not in self.group_open:
            self.detach(device.group)

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
