"""The host side of the PCI bus: where device DMA and MSI writes land.

A device's memory request goes: MSI window -> the interrupt controller; otherwise, if its IOMMU
group is attached to a VFIO container with an IOMMU set, through that container's IOMMUDomain
(an unmapped IOVA is recorded in `faults` and the request does not happen); otherwise straight to
host RAM by physical address (the kernel's identity/passthrough domain). A request that reaches
no RAM is recorded in `bus_errors` and fails.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from hal.os import PAGE_SIZE
from mockgpu.hostmem import HostRAM
from mockgpu.iommu import MSI_WINDOW_BASE, MSI_WINDOW_SIZE, IOMMUDomain, IOMMUFault

if TYPE_CHECKING:
    from mockgpu.pci import PCIFunction

log = logging.getLogger(__name__)

MSI_WRITE_SIZE = 4  # PCI r3.0 sec 6.8.3.1: an MSI is a DWORD memory write
# Intel SDM vol 3 sec 6.2: vectors 0-31 are reserved for exceptions; 32-255 are usable
FIRST_VECTOR = 32
VECTOR_COUNT = 256


@dataclass
class BusError:
    bdf: str
    address: int
    write: bool


class InterruptController:
    """Host interrupt vectors the simulated kernel hands out for MSI; each runs a callback.

    What the host's interrupt domain allows: `vector_limits` caps how many vectors a function gets
    when it enables MSI or MSI-X (bdf -> count; Machine.set_msi_vector_limit), and `msix_dynamic`
    says whether MSI-X vectors can be added while MSI-X is on (the x86 vector domain and the
    interrupt-remapping domains offer MSI_FLAG_PCI_MSIX_ALLOC_DYN, so True by default)."""

    def __init__(self) -> None:
        self._handlers: dict[int, Callable[[], None]] = {}
        self.spurious: list[tuple[int, int]] = []
        self.vector_limits: dict[str, int] = {}
        self.msix_dynamic = True

    def allocate(self, handler: Callable[[], None]) -> tuple[int, int]:
        """A free vector bound to `handler`; returns the MSI (address, data) that triggers it."""
        for vector in range(FIRST_VECTOR, VECTOR_COUNT):
            if vector not in self._handlers:
                self._handlers[vector] = handler
                return MSI_WINDOW_BASE, vector
        raise OSError(28, "no free interrupt vectors")  # ENOSPC

    def allocate_block(self, count: int) -> tuple[int, int]:
        """`count` (a power of two) free vectors starting at a multiple of `count`, as multi-message
        MSI needs (the function puts the message number in the low data bits). Each starts out
        unrouted (its messages count as spurious) until `route` gives it a handler. Returns the MSI
        (address, data) of the first."""
        first = -(-FIRST_VECTOR // count) * count
        for base in range(first, VECTOR_COUNT - count + 1, count):
            block = range(base, base + count)
            if all(vector not in self._handlers for vector in block):
                for vector in block:
                    self.route(vector, None)
                return MSI_WINDOW_BASE, base
        raise OSError(28, f"no {count} aligned free interrupt vectors")  # ENOSPC

    def route(self, data: int, handler: Callable[[], None] | None) -> None:
        """Point an allocated vector at `handler` (None: nobody listens; messages are spurious)."""
        if handler is None:
            handler = functools.partial(self._unrouted, data)
        self._handlers[data] = handler

    def _unrouted(self, data: int) -> None:
        self.spurious.append((MSI_WINDOW_BASE, data))

    def release(self, data: int) -> None:
        self._handlers.pop(data, None)

    def deliver(self, address: int, data: int) -> None:
        handler = self._handlers.get(data & 0xFF)
        if handler is None:
            self.spurious.append((address, data))
            log.debug("spurious MSI %#x <- %#x", address, data)
            return
        handler()


class HostBus:
    """Routes device memory requests to the interrupt controller, the IOMMU and host RAM."""

    def __init__(self, ram: HostRAM, domain_for: Callable[["PCIFunction"], IOMMUDomain | None]) -> None:
        self.ram = ram
        self.domain_for = domain_for
        self.interrupts = InterruptController()
        self.faults: list[IOMMUFault] = []
        self.bus_errors: list[BusError] = []
        # fault injection (mockgpu.faults): called for each page a device reaches through an IOMMU
        # domain; True makes the IOMMU find no mapping there, as if the IOVA were never mapped
        self.unmapped_iova: Callable[["PCIFunction", int, bool], bool] | None = None
        # where a device write outside DMA memory is reported (Machine.record_stray)
        self.on_stray_write: Callable[[str, int, int, str], None] | None = None

    def _pieces(self, address: int, n: int):
        while n:
            chunk = min(n, PAGE_SIZE - address % PAGE_SIZE)
            yield address, chunk
            address += chunk
            n -= chunk

    def _translate(self, function: "PCIFunction", address: int, n: int,
                   write: bool) -> list[tuple[int, int]] | None:
        domain = self.domain_for(function)
        spans = []
        for piece, chunk in self._pieces(address, n):
            if domain is None:
                spans.append((piece, chunk))
                continue
            phys, reason = domain.translate(piece, write)
            if phys is not None and self.unmapped_iova is not None and self.unmapped_iova(
                    function, piece, write):
                # drivers/iommu: the DMA remapping hardware finds no entry for the IOVA and
                # reports a translation fault; the request is aborted
                phys, reason = None, "IOVA not mapped (injected fault)"
            if phys is None:
                self.faults.append(IOMMUFault(function.bdf, piece, write, reason))
                direction = "write" if write else "read"
                log.info("IOMMU fault: %s %s IOVA %#x (%s)", function.bdf, direction, piece, reason)
                return None
            spans.append((phys, chunk))
        return spans

    def dma_read(self, function: "PCIFunction", address: int, n: int) -> bytes | None:
        spans = self._translate(function, address, n, write=False)
        if spans is None:
            return None
        out = bytearray()
        for phys, chunk in spans:
            data = self.ram.read(phys, chunk)
            if data is None:
                self.bus_errors.append(BusError(function.bdf, phys, False))
                return None
            out += data
        return bytes(out)

    def dma_write(self, function: "PCIFunction", address: int, data: bytes) -> bool:
        if MSI_WINDOW_BASE <= address < MSI_WINDOW_BASE + MSI_WINDOW_SIZE and len(data) == MSI_WRITE_SIZE:
            self.interrupts.deliver(address, int.from_bytes(data, "little"))
            return True
        spans = self._translate(function, address, len(data), write=True)
        if spans is None:
            return False
        if self.on_stray_write is not None and self.domain_for(function) is None:
            self._check_dma_memory(function, spans)
        pos = 0
        for phys, chunk in spans:
            if not self.ram.write(phys, data[pos:pos + chunk]):
                self.bus_errors.append(BusError(function.bdf, phys, True))
                return False
            pos += chunk
        return True

    def _check_dma_memory(self, function: "PCIFunction", spans: list[tuple[int, int]]) -> None:
        """Without an IOMMU domain nothing stops a device writing anywhere in RAM (identity or
        passthrough mapping): report each write that lands outside memory the program set aside
        for DMA; with VFIO the IOMMU faults instead."""
        for phys, chunk in spans:
            why = self.ram.dma_owner(phys)
            if why is not None:
                self.on_stray_write(function.bdf, phys, chunk, why)
