"""The usb: PCI backend: a GPU behind an ASM24xx USB-to-PCIe bridge (device string usb:BUS-PORT).

There is no mapping of anything: config space and BARs are reached by TLPs the bridge sends
(hal.usb.asm24xx), BARs are CallbackRegions, and DMA memory is the bridge's SRAM window (512 KiB
at PCIe address 0x200000), the only memory the GPU can reach; `alloc_dma` hands out slot-aligned
pieces of it whose Region copies through the bridge on every access (a staging window, not host
memory). `PCIDevice.dma_window` tells drivers how small it is.

Enumeration: neither firmware assigns bus numbers or BARs behind its downstream port, so the
backend does, at open (as tinygrad's pci_setup_usb_bars does): the port (bus 0, device 0) gets
secondary bus 1, the GPU's BARs are sized and given addresses (64-bit ones from 32 GiB, 32-bit
ones from 256 MiB; I/O BARs are left unassigned), and the port's windows are opened over them.

Access rules: a 32/64-bit access is one (or two) dword TLPs. `read(off, n)` of a prefetchable BAR
(VRAM: reads have no side effects, PCIe r5.0 sec 7.5.1.2.1) is coalesced into one streamed read;
elsewhere it is dword by dword. Writes are posted and left in flight (the bridge queues them) until
a read, a DMA copy or close, because a read may not pass a posted write. A TLP completing as
Unsupported Request or Completer Abort raises CompletionError naming the address, unless the GPU
is gone (its vendor ID reads all ones), which is DeviceLost. Config reads that are not answered
read all ones, as on any root port, so PCIDevice's liveness check applies.
"""
from __future__ import annotations

import errno as _errno
import logging
import struct

from autogen.linux import pci_regs

from hal.backend import BarResource, DMABuffer, PCIBackend
from hal.errors import (DeviceLost, DeviceNotFound, HalError, InvalidArgument, OutOfMemory,
                        UnsupportedOperation)
from hal.os import PAGE_SIZE
from hal.region import CallbackRegion, Region
from hal.usb import asm24xx
from hal.usb.asm24xx import CPL_RETRY, CPL_SUCCESS, CPL_UNSUPPORTED_REQUEST, ASM24xxBridge, CompletionError

log = logging.getLogger(__name__)

NAME = "usb"
PORT_BUS = 0  # the bridge's own downstream port answers type 0 requests on bus 0 (device 0)
GPU_BUS = 1  # the secondary bus the backend gives the port; the GPU is device 0 there
CONFIG_SPACE_SIZE = pci_regs.PCI_CFG_SPACE_EXP_SIZE
# tinygrad runtime/support/system.py pci_setup_usb_bars(mem_base=0x10000000, pref_mem_base=32 << 30)
MEM32_BASE = 0x10000000
PREF64_BASE = 32 << 30
WINDOW_GRANULE = 1 << 20  # PCI-to-PCI bridge r1.2 sec 3.2.5.8: windows are 1 MiB granular
WINDOW_SHIFT = 16  # base/limit registers hold address bits 31:20 in their bits 15:4
ALL_ONES32 = 0xFFFFFFFF
DWORD = 4
QWORD = 8


def _align_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


class SRAMAllocator:
    """First fit over the bridge SRAM in `granule` units (custom firmware DMA starts at a slot)."""

    def __init__(self, size: int, granule: int) -> None:
        self.size = size
        self.granule = granule
        self.used: dict[int, int] = {}  # offset -> bytes

    def alloc(self, size: int) -> int:
        size = _align_up(size, self.granule)
        offset = 0
        for start, length in sorted(self.used.items()):
            if start - offset >= size:
                break
            offset = max(offset, start + length)
        if offset + size > self.size:
            free = self.size - sum(self.used.values())
            raise OutOfMemory(f"the bridge SRAM window ({self.size:#x} bytes, the only memory the GPU can "
                              f"reach over USB) has no {size:#x}-byte gap; free DMA buffers or make them "
                              "smaller", requested=size, alignment=self.granule, free=free,
                              largest_free=self._largest_free())
        self.used[offset] = size
        return offset

    def _largest_free(self) -> int:
        largest, cursor = 0, 0
        for start, length in sorted(self.used.items()):
            largest = max(largest, start - cursor)
            cursor = start + length
        return max(largest, self.size - cursor)

    def free(self, offset: int) -> None:
        self.used.pop(offset, None)


class USBBackend(PCIBackend):
    """One GPU behind an ASM24xx bridge (see the module docstring)."""

    name = NAME

    def __init__(self, bridge: ASM24xxBridge, path: str) -> None:
        super().__init__(path)
        self.bridge = bridge
        self._bars: dict[int, tuple[int, int, bool]] = {}  # index -> (address, size, prefetchable)
        start_granule = asm24xx.SRAM_SLOT_SIZE if bridge.firmware == asm24xx.CUSTOM else asm24xx.SECTOR_SIZE
        self._sram_start_granule = start_granule
        self.sram = SRAMAllocator(bridge.sram_size, max(start_granule, PAGE_SIZE))
        self._enumerate()

    @property
    def dma_window(self) -> int:
        """Bytes of memory the device can reach by DMA (the bridge SRAM)."""
        return self.bridge.sram_size

    # -- enumeration ---------------------------------------------------------------------------------
    def _port_read(self, register: int, size: int) -> int:
        completion = self.bridge.config_read(PORT_BUS, 0, 0, register, size, type1=False)
        asm24xx.check_completion(completion, asm24xx.TLP_CFG_READ0, register, "bridge port config read")
        return completion.value

    def _port_write(self, register: int, size: int, value: int) -> None:
        completion = self.bridge.config_write(PORT_BUS, 0, 0, register, size, value, type1=False)
        asm24xx.check_completion(completion, asm24xx.TLP_CFG_WRITE0, register, "bridge port config write")

    def _enumerate(self) -> None:
        header = self._port_read(pci_regs.PCI_HEADER_TYPE, 1) & pci_regs.PCI_HEADER_TYPE_MASK
        if header != pci_regs.PCI_HEADER_TYPE_BRIDGE:
            raise UnsupportedOperation(f"usb:{self.bdf}: the bridge's PCIe function is not a port "
                                       f"(header type {header}); this firmware is not supported")
        self._port_write(pci_regs.PCI_PRIMARY_BUS, 1, PORT_BUS)
        self._port_write(pci_regs.PCI_SECONDARY_BUS, 1, GPU_BUS)
        self._port_write(pci_regs.PCI_SUBORDINATE_BUS, 1, GPU_BUS)
        vendor = self.config_read(pci_regs.PCI_VENDOR_ID, 2)
        if vendor == 0xFFFF:
            raise DeviceNotFound(f"usb:{self.bdf}: nothing answers behind the bridge (is the GPU powered, "
                                 "its power cables connected and the link trained?)")
        mem32, pref64 = MEM32_BASE, PREF64_BASE
        index = 0
        while index < pci_regs.PCI_STD_NUM_BARS:
            register = pci_regs.PCI_BASE_ADDRESS_0 + index * DWORD
            original = self.config_read(register, DWORD)
            is_io = original & pci_regs.PCI_BASE_ADDRESS_SPACE_IO
            is64 = not is_io and original & pci_regs.PCI_BASE_ADDRESS_MEM_TYPE_MASK == \
                pci_regs.PCI_BASE_ADDRESS_MEM_TYPE_64
            size = self._size_bar(register, is64, bool(is_io))
            if size and not is_io:
                prefetchable = bool(original & pci_regs.PCI_BASE_ADDRESS_MEM_PREFETCH)
                if is64:
                    address = _align_up(pref64, size)
                    pref64 = address + size
                else:
                    address = _align_up(mem32, size)
                    mem32 = address + size
                self.config_write(register, DWORD, address & ALL_ONES32)
                if is64:
                    self.config_write(register + DWORD, DWORD, address >> 32)
                self._bars[index] = (address, size, prefetchable)
            index += 2 if is64 else 1
        self._open_windows(mem32, pref64)
        command = self._port_read(pci_regs.PCI_COMMAND, 2)
        self._port_write(pci_regs.PCI_COMMAND, 2,
                         command | pci_regs.PCI_COMMAND_MEMORY | pci_regs.PCI_COMMAND_MASTER)
        log.info("usb:%s: BARs assigned behind the bridge: %s", self.bdf,
                 ", ".join(f"BAR{i} {a:#x}+{s:#x}" for i, (a, s, _) in sorted(self._bars.items())))

    def _size_bar(self, register: int, is64: bool, is_io: bool) -> int:
        """Size a BAR the PCI way (write all ones, read the mask back, restore) with decoding off."""
        command = self.config_read(pci_regs.PCI_COMMAND, 2)
        self.config_write(pci_regs.PCI_COMMAND, 2,
                          command & ~(pci_regs.PCI_COMMAND_MEMORY | pci_regs.PCI_COMMAND_IO))
        low = self.config_read(register, DWORD)
        self.config_write(register, DWORD, ALL_ONES32)
        mask = self.config_read(register, DWORD)
        self.config_write(register, DWORD, low)
        if is64:
            high = self.config_read(register + DWORD, DWORD)
            self.config_write(register + DWORD, DWORD, ALL_ONES32)
            mask |= self.config_read(register + DWORD, DWORD) << 32
            self.config_write(register + DWORD, DWORD, high)
        self.config_write(pci_regs.PCI_COMMAND, 2, command)
        if is_io:
            mask &= pci_regs.PCI_BASE_ADDRESS_IO_MASK
        else:
            mask &= pci_regs.PCI_BASE_ADDRESS_MEM_MASK | (ALL_ONES32 << 32 if is64 else 0)
        if not mask:
            return 0
        width = 64 if is64 else 32
        return (~mask + 1) & ((1 << width) - 1)

    def _open_windows(self, mem32_end: int, pref64_end: int) -> None:
        def field(address: int) -> int:
            return (address >> WINDOW_SHIFT) & 0xFFF0

        mem32_end = _align_up(mem32_end, WINDOW_GRANULE)
        pref64_end = _align_up(pref64_end, WINDOW_GRANULE)
        if mem32_end > MEM32_BASE:
            self._port_write(pci_regs.PCI_MEMORY_BASE, 2, field(MEM32_BASE))
            self._port_write(pci_regs.PCI_MEMORY_LIMIT, 2, field(mem32_end - 1))
        if pref64_end > PREF64_BASE:
            self._port_write(pci_regs.PCI_PREF_MEMORY_BASE, 2,
                             field(PREF64_BASE) | pci_regs.PCI_PREF_RANGE_TYPE_64)
            self._port_write(pci_regs.PCI_PREF_MEMORY_LIMIT, 2,
                             field(pref64_end - 1) | pci_regs.PCI_PREF_RANGE_TYPE_64)
            self._port_write(pci_regs.PCI_PREF_BASE_UPPER32, 4, PREF64_BASE >> 32)
            self._port_write(pci_regs.PCI_PREF_LIMIT_UPPER32, 4, (pref64_end - 1) >> 32)

    # -- config space --------------------------------------------------------------------------------
    def config_read(self, offset: int, width: int) -> int:
        completion = self.bridge.config_read(GPU_BUS, 0, 0, offset, width, type1=True)
        if completion.status in (CPL_UNSUPPORTED_REQUEST, CPL_RETRY):
            return (1 << 8 * width) - 1  # nobody answered: what a root port returns for a config read
        asm24xx.check_completion(completion, asm24xx.TLP_CFG_READ1, offset, f"usb:{self.bdf} config read")
        return completion.value

    def config_write(self, offset: int, width: int, value: int) -> None:
        completion = self.bridge.config_write(GPU_BUS, 0, 0, offset, width, value, type1=True)
        if completion.status == CPL_UNSUPPORTED_REQUEST:
            log.info("usb:%s: config write at %#x went unanswered", self.bdf, offset)
            return
        asm24xx.check_completion(completion, asm24xx.TLP_CFG_WRITE1, offset, f"usb:{self.bdf} config write")

    def config_size(self) -> int:
        return CONFIG_SPACE_SIZE

    # -- BARs ----------------------------------------------------------------------------------------
    def bar_resources(self) -> dict[int, BarResource]:
        return {index: BarResource(index, size, mappable=False)
                for index, (_, size, _) in self._bars.items()}

    def map_bar(self, index: int) -> Region:
        if index not in self._bars:
            raise InvalidArgument(f"usb:{self.bdf}: BAR{index} has no address behind the bridge")
        base, size, prefetchable = self._bars[index]
        return CallbackRegion(size,
                              lambda off, n: self._bar_read(index, base, prefetchable, off, n),
                              lambda off, data: self._bar_write(base, off, data))

    def unmap_bar(self, region: Region) -> None:
        """Nothing is mapped."""

    def _lost_or(self, error: CompletionError) -> HalError:
        """DeviceLost when the GPU no longer answers config reads, else the completion error."""
        try:
            vendor = self.config_read(pci_regs.PCI_VENDOR_ID, 2)
        except HalError:
            vendor = 0xFFFF
        if vendor == 0xFFFF:
            return DeviceLost(f"usb:{self.bdf}: the GPU behind the bridge stopped answering ({error}); "
                              "check its power and the cable, then open it again", errno=_errno.ENODEV)
        return error

    def _bar_read(self, index: int, base: int, prefetchable: bool, off: int, n: int) -> bytes:
        bridge = self.bridge
        try:
            if n == DWORD and not off % DWORD:
                return struct.pack("<I", bridge.memory_read32(base + off))
            if n == QWORD and not off % QWORD:
                low = bridge.memory_read32(base + off)
                high = bridge.memory_read32(base + off + DWORD)
                return struct.pack("<II", low, high)
            start = off - off % DWORD
            end = _align_up(off + n, DWORD)
            if prefetchable:
                data = bridge.memory_read(base + start, end - start)
            else:
                words = [bridge.memory_read32(base + at) for at in range(start, end, DWORD)]
                data = struct.pack(f"<{len(words)}I", *words)
            return data[off - start:off - start + n]
        except CompletionError as exc:
            raise self._lost_or(exc) from exc

    def _bar_write(self, base: int, off: int, data: bytes) -> None:
        bridge = self.bridge
        n = len(data)
        if n == DWORD and not off % DWORD:
            bridge.memory_write32(base + off, struct.unpack("<I", data)[0])
            return
        if n == QWORD and not off % QWORD:
            low, high = struct.unpack("<II", data)
            bridge.memory_write32(base + off, low)
            bridge.memory_write32(base + off + DWORD, high)
            return
        view = memoryview(bytes(data))
        head = (-off) % DWORD
        if head:
            self._partial_write(base, off, bytes(view[:head]))
            view = view[head:]
            off += head
        whole = len(view) - len(view) % DWORD
        if whole:
            bridge.memory_write(base + off, bytes(view[:whole]))
        if len(view) > whole:
            self._partial_write(base, off + whole, bytes(view[whole:]))

    def _partial_write(self, base: int, off: int, data: bytes) -> None:
        """Bytes inside one dword: a write TLP with just their byte enables."""
        within = off % DWORD
        for index, byte in enumerate(data):
            enables = 1 << (within + index)
            self.bridge.memory_write32(base + off - within, byte << 8 * (within + index), enables)

    # -- DMA: the SRAM window ------------------------------------------------------------------------
    def alloc_dma(self, size: int) -> DMABuffer:
        size = _align_up(size, PAGE_SIZE)
        offset = self.sram.alloc(size)
        bus = self.bridge.sram_pcie_address + offset
        region = CallbackRegion(size,
                                lambda off, n: self._sram_read(offset + off, n),
                                lambda off, data: self._sram_write(offset + off, data))
        pages = [bus + page * PAGE_SIZE for page in range(size // PAGE_SIZE)]
        return DMABuffer(region, size, pages, True, backend_handle=offset)

    def free_dma(self, buffer: DMABuffer) -> None:
        self.sram.free(buffer.backend_handle)

    def _span(self, offset: int, n: int) -> tuple[int, int]:
        start = offset - offset % self._sram_start_granule
        end = _align_up(offset + n, asm24xx.SECTOR_SIZE)
        return start, end

    def _sram_read(self, offset: int, n: int) -> bytes:
        start, end = self._span(offset, n)
        data = self.bridge.sram_read(start, end - start)
        return data[offset - start:offset - start + n]

    def _sram_write(self, offset: int, data: bytes) -> None:
        start, end = self._span(offset, len(data))
        if start == offset and end == offset + len(data):
            self.bridge.sram_write(offset, data)
            return
        # the bridge moves whole sectors from a slot start: read around the bytes, patch, write back
        around = bytearray(self.bridge.sram_read(start, end - start))
        around[offset - start:offset - start + len(data)] = data
        self.bridge.sram_write(start, bytes(around))

    # -- life cycle -------------------------------------------------------------------------------------
    def close(self) -> None:
        self.bridge.close()


def probe(os, path: str) -> str:
    """"ok" when the device at `path` is an ASM24xx bridge hal can speak to, else why not."""
    try:
        host = os.usb_host()
        identities = dict(host.list())
    except HalError as exc:
        return str(exc)
    identity = identities.get(path)
    if identity is None:
        return f"no USB device at {path}"
    if not is_bridge(identity.vendor_id, identity.product_id):
        return f"{identity.vendor_id:04x}:{identity.product_id:04x} is not an ASM24xx bridge"
    return "ok"


def firmware_of(identity) -> str:
    """"custom" or "stock": which firmware a bridge's USB identity belongs to."""
    if (identity.vendor_id, identity.product_id) == (asm24xx.CUSTOM_VENDOR_ID, asm24xx.CUSTOM_PRODUCT_ID):
        return asm24xx.CUSTOM
    return asm24xx.STOCK


def is_bridge(vendor: int, product: int) -> bool:
    return ((vendor, product) == (asm24xx.CUSTOM_VENDOR_ID, asm24xx.CUSTOM_PRODUCT_ID)
            or (vendor == asm24xx.ASMEDIA_VENDOR_ID and product in asm24xx.STOCK_PRODUCT_IDS))


def open_backend(os, path: str, timeout_s: float = 1.0) -> USBBackend:
    """Open the bridge at USB port `path` and enumerate the GPU behind it."""
    transport = os.usb_host().open(path)
    try:
        bridge = asm24xx.open_bridge(transport, timeout_s)
        return USBBackend(bridge, path)
    except BaseException:
        transport.close()
        raise


__all__ = ["USBBackend", "SRAMAllocator", "open_backend", "probe", "is_bridge", "CPL_SUCCESS"]
