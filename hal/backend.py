"""The backend interface under PCIDevice, and the DMA buffer it hands out.

A backend is how one PCI function is reached: sysfs (`hal.pci`), VFIO (`hal.vfio`), later a USB
bridge or a remote socket. It implements the raw operations below; `PCIDevice` holds the policy
every backend shares (validation, all-ones detection, capability walks, FLR and bus reset, bookkeeping
and cleanup). Every method documents its units; defaults raise UnsupportedOperation, so a backend
that lacks a feature fails loudly and says so.

A backend without mappings (USB bridge) returns CallbackRegions from `map_bar` and DMA buffers that
live in a small bridge SRAM window; nothing above the backend assumes mmap.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from autogen.linux import pci_regs

from hal.errors import PermissionDenied, UnsupportedOperation, from_oserror
from hal.os import OS, PAGE_SIZE, HostMemory
from hal.region import Region


@dataclass(frozen=True)
class BarResource:
    """What the backend knows of a BAR: `size` in bytes and whether it can be mapped."""

    index: int
    size: int
    mappable: bool = True


@dataclass
class DMABuffer:
    """Host memory the device can reach. `region` is the CPU's view; `bus_addresses[i]` is the
    address the device uses for page i (PAGE_SIZE bytes each); `contiguous` when they are one run."""

    region: Region
    size: int
    bus_addresses: list[int]
    contiguous: bool
    backend_handle: object = None
    freed: bool = field(default=False)

    @property
    def bus_address(self) -> int:
        """Bus address of the first byte."""
        return self.bus_addresses[0]

    def bus_address_of(self, offset: int) -> int:
        """Bus address of byte `offset` of the buffer."""
        page, within = divmod(offset, PAGE_SIZE)
        return self.bus_addresses[page] + within


@dataclass(frozen=True)
class DeviceEvent:
    """A notification about the device: `kind` is EVENT_RELEASE (the kernel wants the device
    back: it is being unbound or removed) or EVENT_ERROR (a PCIe error was reported for it)."""

    kind: str
    message: str


EVENT_RELEASE = "release"
EVENT_ERROR = "error"


class PCIBackend(ABC):
    """Raw access to one PCI function. Methods raise OSError (real errno) or a HalError."""

    name = "abstract"
    # (offset, width) of a config register whose reads reach the function itself, for liveness
    # and post-reset readiness: all ones means nobody answered. The vendor ID, unless the OS
    # answers it from a copy (VFIO does; its backend names another register)
    presence_register: tuple[int, int] = (pci_regs.PCI_VENDOR_ID, 2)
    # bytes of memory the device can reach by DMA when that is scarce (a USB bridge's SRAM
    # window); None: whatever the host can pin
    dma_window: int | None = None

    def __init__(self, bdf: str) -> None:
        self.bdf = bdf

    def device_events(self) -> list[DeviceEvent]:
        """What the OS told about the device since the last call (VFIO: the kernel asks for it
        back, a PCIe error was reported); empty where a backend hears nothing."""
        return []

    # -- config space ------------------------------------------------------------------------
    @abstractmethod
    def config_read(self, offset: int, width: int) -> int:
        """Read `width` (1, 2 or 4) bytes of config space at `offset`, little-endian."""

    @abstractmethod
    def config_write(self, offset: int, width: int, value: int) -> None:
        """Write `width` (1, 2 or 4) bytes of config space at `offset`."""

    @abstractmethod
    def config_size(self) -> int:
        """Bytes of config space this backend can reach (256 or 4096)."""

    # -- BARs --------------------------------------------------------------------------------
    @abstractmethod
    def bar_resources(self) -> dict[int, BarResource]:
        """Implemented BARs (size > 0) by index, as the kernel assigned them."""

    @abstractmethod
    def map_bar(self, index: int) -> Region:
        """A Region over the whole of BAR `index` (an mmap, or callbacks when mapping is impossible)."""

    @abstractmethod
    def unmap_bar(self, region: Region) -> None:
        """Release a Region from `map_bar`."""

    def resize_bar(self, index: int, size: int) -> None:
        """Change a resizable BAR to `size` bytes (the kernel reassigns the resources)."""
        raise UnsupportedOperation(f"the {self.name} backend cannot resize BARs")

    # -- DMA ---------------------------------------------------------------------------------
    @abstractmethod
    def alloc_dma(self, size: int) -> DMABuffer:
        """Host memory of at least `size` bytes (whole pages) that the device can read and write."""

    @abstractmethod
    def free_dma(self, buffer: DMABuffer) -> None:
        """Make `buffer` unreachable by the device and release it."""

    # -- interrupts --------------------------------------------------------------------------
    def enable_interrupts(self, kind: str, count: int) -> list[int]:
        """Route `count` vectors of `kind` ("msi" or "msix") to eventfds; returns them."""
        raise UnsupportedOperation(
            f"the {self.name} backend cannot deliver interrupts to user space; poll device "
            "registers instead, or open the device through vfio: for MSI/MSI-X")

    def disable_interrupts(self) -> None:
        """Stop delivering interrupts (no-op when none are enabled)."""

    # -- resets and life cycle ---------------------------------------------------------------
    def reset_methods(self) -> list[str]:
        """Reset methods the backend itself performs ("vfio", "sysfs"); best first."""
        return []

    def reset_refusal(self, method: str) -> str | None:
        """Why backend reset `method` is not offered now, when the backend can tell; else None."""
        return None

    def reset(self, method: str) -> None:
        """Perform a backend reset method from `reset_methods()`."""
        raise UnsupportedOperation(f"the {self.name} backend has no {method!r} reset")

    @abstractmethod
    def close(self) -> None:
        """Release every fd and mapping the backend holds (BARs and DMA are released before)."""


def locked_memory_with_physical_pages(os: OS, size: int, purpose: str,
                                      root_hint: str) -> tuple[HostMemory, list[int], bool]:
    """Page-locked host memory for DMA by physical address (sysfs, VFIO no-IOMMU): the memory, the
    physical address of each page, and whether they form one run. `root_hint` says how to get the
    privilege the kernel asks before it shows physical addresses. Nothing is kept on error."""
    try:
        memory = os.alloc_locked(size)
    except OSError as exc:
        raise from_oserror(exc, f"allocating {size} bytes of locked memory for {purpose}") from exc
    try:
        physical = os.pagemap(memory)
    except OSError as exc:
        os.free_locked(memory)
        error = from_oserror(exc, f"reading physical addresses for {purpose} from /proc/self/pagemap")
        if isinstance(error, PermissionDenied):
            raise PermissionDenied(f"{purpose} needs physical page addresses, which the kernel shows only "
                                   f"to root: {root_hint}", errno=exc.errno) from exc
        raise error from exc
    except BaseException:
        os.free_locked(memory)
        raise
    contiguous = all(physical[i + 1] == physical[i] + PAGE_SIZE for i in range(len(physical) - 1))
    return memory, list(physical), contiguous
