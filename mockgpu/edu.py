"""The edu test device: a small DMA + MSI function in the spirit of QEMU's hw/misc/edu.c.

This register map is our own specification (offsets below are the spec; tests import them).
BAR0 is 1 MiB of 32-bit non-prefetchable MMIO. Registers are 32 bits unless noted; the DMA
registers are 64 bits and accept one 64-bit access or two 32-bit halves. Accesses of any other
size, or unaligned, are rejected: reads return all ones, writes are dropped, and both are recorded
in `access_errors`.

    0x00  ID          RO  EDU_ID_VALUE
    0x04  LIVENESS    RW  reads back the bitwise NOT of the last value written
    0x20  STATUS      RO  EDU_STATUS_DMA_BUSY | EDU_STATUS_DMA_ERROR (error sticks until next DMA)
    0x24  INTR_STATUS RO  pending interrupt causes
    0x60  INTR_RAISE  WO  ORs the value into INTR_STATUS and signals vector 0 (MSI-X, else MSI)
    0x64  INTR_ACK    WO  clears the written bits from INTR_STATUS
    0x80  DMA_SRC     RW  64-bit source address (bus address, or buffer address in BAR space)
    0x88  DMA_DST     RW  64-bit destination address
    0x90  DMA_COUNT   RW  64-bit byte count, at most EDU_DMA_BUFFER_SIZE
    0x98  DMA_CMD     RW  EDU_DMA_CMD_START | EDU_DMA_CMD_TO_HOST | EDU_DMA_CMD_IRQ; START self-clears
    0x40000..0x40FFF  the 4 KiB DMA buffer, also directly accessible through BAR0 (any width)
    0xF0000 MSI-X table (2 vectors), 0xF8000 MSI-X PBA

A DMA with EDU_DMA_CMD_TO_HOST clear copies host memory at DMA_SRC into the buffer at DMA_DST
(EDU_DMA_BUFFER_BASE + offset); with it set, the buffer at DMA_SRC goes to host memory at DMA_DST.
The buffer range must lie inside the 4 KiB buffer. The transfer completes after `dma_delay_s`
(0: at once). If bus mastering is off, the IOMMU faults, or the host address is not RAM, nothing
is copied and EDU_STATUS_DMA_ERROR is set. Completion sets EDU_INTR_DMA in INTR_STATUS and, with
EDU_DMA_CMD_IRQ, signals vector 0.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from mockgpu.pci import BarKind, BarSpec, Identity, MSIXLayout, PCIeInfo, PCIeLink, PCIFunction
from autogen.linux import pci_regs

log = logging.getLogger(__name__)

EDU_VENDOR_ID = 0x1234  # QEMU hw/misc/edu.c: PCI_VENDOR_ID_QEMU
EDU_DEVICE_ID = 0x11E8  # QEMU hw/misc/edu.c: edu device id
EDU_CLASS = 0x00FF00  # PCI code and ID assignment r1.11: 0x00ff = unclassified "other" device
EDU_REVISION = 0x10  # revision of our edu model
EDU_BAR0_SIZE = 1 << 20
EDU_DRIVER = "edu"

EDU_ID = 0x00
EDU_LIVENESS = 0x04
EDU_STATUS = 0x20
EDU_INTR_STATUS = 0x24
EDU_INTR_RAISE = 0x60
EDU_INTR_ACK = 0x64
EDU_DMA_SRC = 0x80
EDU_DMA_DST = 0x88
EDU_DMA_COUNT = 0x90
EDU_DMA_CMD = 0x98
EDU_DMA_BUFFER_BASE = 0x40000
EDU_DMA_BUFFER_SIZE = 0x1000
EDU_MSIX_TABLE = 0xF0000
EDU_MSIX_PBA = 0xF8000
EDU_MSIX_VECTORS = 2

EDU_ID_VALUE = 0x010000ED  # version 1.0, "ed"
EDU_STATUS_DMA_BUSY = 1 << 0
EDU_STATUS_DMA_ERROR = 1 << 1
EDU_INTR_DMA = 1 << 8
EDU_DMA_CMD_START = 1 << 0
EDU_DMA_CMD_TO_HOST = 1 << 1
EDU_DMA_CMD_IRQ = 1 << 2

_REG32 = {EDU_ID, EDU_LIVENESS, EDU_STATUS, EDU_INTR_STATUS, EDU_INTR_RAISE, EDU_INTR_ACK}
_REG64 = {EDU_DMA_SRC, EDU_DMA_DST, EDU_DMA_COUNT, EDU_DMA_CMD}


@dataclass
class DMATransfer:
    """One DMA the device attempted: addresses as programmed, direction, and whether it happened."""

    src: int
    dst: int
    count: int
    to_host: bool
    ok: bool
    reason: str = ""


@dataclass
class AccessError:
    offset: int
    size: int
    write: bool


class EduDevice(PCIFunction):
    """The edu function. See the module docstring for the register map."""

    msi_vectors = 1
    msix = MSIXLayout(vectors=EDU_MSIX_VECTORS, bar=0, table_offset=EDU_MSIX_TABLE, pba_offset=EDU_MSIX_PBA)
    default_driver = EDU_DRIVER

    def __init__(self, dma_delay_s: float = 0.0) -> None:
        identity = Identity(EDU_VENDOR_ID, EDU_DEVICE_ID, EDU_CLASS, EDU_REVISION,
                            subsystem_vendor=EDU_VENDOR_ID, subsystem_device=EDU_DEVICE_ID)
        bars = [BarSpec(0, EDU_BAR0_SIZE, BarKind.MEM32)]
        link = PCIeLink(max_speed=pci_regs.PCI_EXP_LNKCAP_SLS_8_0GB, max_width=1,
                        speed=pci_regs.PCI_EXP_LNKCAP_SLS_8_0GB, width=1)
        pcie = PCIeInfo(pci_regs.PCI_EXP_TYPE_ENDPOINT, link, flr=True)
        self.dma_delay_s = dma_delay_s
        self.dma_log: list[DMATransfer] = []
        self.access_errors: list[AccessError] = []
        self.interrupts_sent = 0
        self._regs: dict[int, int] = {}
        self.buffer = bytearray(EDU_DMA_BUFFER_SIZE)
        super().__init__(identity, bars, pcie)
        self.reset_device_state()

    def reset_device_state(self) -> None:
        self._regs = {offset: 0 for offset in _REG32 | _REG64}
        self._regs[EDU_ID] = EDU_ID_VALUE
        self.buffer[:] = bytes(EDU_DMA_BUFFER_SIZE)

    # -- MMIO --------------------------------------------------------------------------------
    def _in_buffer(self, off: int, n: int) -> bool:
        return EDU_DMA_BUFFER_BASE <= off and off + n <= EDU_DMA_BUFFER_BASE + EDU_DMA_BUFFER_SIZE

    def _register(self, off: int, n: int) -> tuple[int, int] | None:
        """(register offset, byte shift) for a legal access, else None."""
        if n == 4 and off in _REG32:
            return off, 0
        if n == 8 and off in _REG64:
            return off, 0
        if n == 4 and (off in _REG64 or off - 4 in _REG64):
            base = off if off in _REG64 else off - 4
            return base, (off - base) * 8
        return None

    def bar_read(self, index: int, off: int, n: int) -> bytes:
        if self.machine is not None:
            self.machine.run_due_events()
        if self._in_buffer(off, n):
            start = off - EDU_DMA_BUFFER_BASE
            return bytes(self.buffer[start:start + n])
        located = self._register(off, n)
        if located is None:
            if off % 4 == 0 and n in (4, 8):
                return bytes(n)  # reserved register space reads as zero
            self.access_errors.append(AccessError(off, n, write=False))
            log.warning("edu %s: rejected %d-byte read at %#x", self.bdf, n, off)
            return bytes([0xFF]) * n
        reg, shift = located
        value = self._regs[reg]
        if reg == EDU_LIVENESS:
            value = ~value & 0xFFFFFFFF
        return ((value >> shift) & ((1 << (8 * n)) - 1)).to_bytes(n, "little")

    def bar_write(self, index: int, off: int, data: bytes) -> None:
        n = len(data)
        if self._in_buffer(off, n):
            start = off - EDU_DMA_BUFFER_BASE
            self.buffer[start:start + n] = data
            return
        located = self._register(off, n)
        if located is None:
            self.access_errors.append(AccessError(off, n, write=True))
            log.warning("edu %s: rejected %d-byte write at %#x", self.bdf, n, off)
            return
        reg, shift = located
        value = int.from_bytes(data, "little")
        if reg == EDU_LIVENESS:
            self._regs[reg] = value
        elif reg == EDU_INTR_RAISE:
            self._regs[EDU_INTR_STATUS] |= value
            self._signal()
        elif reg == EDU_INTR_ACK:
            self._regs[EDU_INTR_STATUS] &= ~value
        elif reg in _REG64:
            width_mask = ((1 << (8 * n)) - 1) << shift
            merged = (self._regs[reg] & ~width_mask) | (value << shift)
            self._regs[reg] = merged & ((1 << 64) - 1)
            if reg == EDU_DMA_CMD and shift == 0 and value & EDU_DMA_CMD_START:
                self._start_dma()

    # -- behaviour ---------------------------------------------------------------------------
    def _signal(self) -> None:
        if self.raise_interrupt(0):
            self.interrupts_sent += 1

    def _start_dma(self) -> None:
        if self._regs[EDU_STATUS] & EDU_STATUS_DMA_BUSY:
            log.warning("edu %s: DMA started while busy; ignored", self.bdf)
            return
        self._regs[EDU_STATUS] = EDU_STATUS_DMA_BUSY
        if self.dma_delay_s > 0 and self.machine is not None:
            self.machine.schedule(self.dma_delay_s, self._finish_dma)
        else:
            self._finish_dma()

    def _finish_dma(self) -> None:
        if not self.responds():
            return
        cmd = self._regs[EDU_DMA_CMD]
        src = self._regs[EDU_DMA_SRC]
        dst = self._regs[EDU_DMA_DST]
        count = self._regs[EDU_DMA_COUNT]
        to_host = bool(cmd & EDU_DMA_CMD_TO_HOST)
        ok, reason = self._transfer(src, dst, count, to_host)
        self.dma_log.append(DMATransfer(src, dst, count, to_host, ok, reason))
        status = 0 if ok else EDU_STATUS_DMA_ERROR
        self._regs[EDU_STATUS] = status
        self._regs[EDU_DMA_CMD] = cmd & ~EDU_DMA_CMD_START
        self._regs[EDU_INTR_STATUS] |= EDU_INTR_DMA
        if cmd & EDU_DMA_CMD_IRQ:
            self._signal()

    def _transfer(self, src: int, dst: int, count: int, to_host: bool) -> tuple[bool, str]:
        local = src if to_host else dst
        host = dst if to_host else src
        start = local - EDU_DMA_BUFFER_BASE
        if count == 0 or start < 0 or start + count > EDU_DMA_BUFFER_SIZE:
            return False, f"buffer range [{local:#x}, +{count:#x}) outside the DMA buffer"
        if not self.can_master():
            return False, "bus mastering disabled"
        if to_host:
            if not self.dma_write(host, bytes(self.buffer[start:start + count])):
                return False, "host write failed"
            return True, ""
        data = self.dma_read(host, count)
        if data is None:
            return False, "host read failed"
        self.buffer[start:start + count] = data
        return True, ""
