"""PCI configuration space storage: bytes, per-bit write masks, write-1-to-clear bits, capability layout.

`ConfigSpace` is the raw 4 KiB (PCIe) space of one function. Every bit is read-only unless the
model marks it writable (`writable` mask) or write-1-to-clear (`rw1c` mask), so a write to a
read-only field is silently ignored, exactly as hardware does. BAR sizing falls out of the same
rule: a BAR's address bits below its size are not writable, so writing all ones reads back the
size mask with the type bits.

`CapabilityBuilder` lays out the standard capability list (from 0x40) and the extended list (from
0x100) and links them.
"""
from __future__ import annotations

from autogen.linux import pci_regs

from mockgpu.bits import field_put

# PCIe r5.0 sec 7.6.3: extended capability header = ID [15:0], version [19:16], next offset [31:20]
EXT_CAP_ID_MASK = 0x0000FFFF
EXT_CAP_VERSION_MASK = 0x000F0000
EXT_CAP_NEXT_MASK = 0xFFF00000
# PCI r3.0 sec 6.7: a standard capability starts with ID (byte 0) and next pointer (byte 1)
CAP_NEXT_OFFSET = 1
# PCI r3.0 sec 6.7: capability pointers are dword aligned; the low two bits are reserved
CAP_POINTER_ALIGN = 4


class ConfigSpace:
    """Raw configuration space of `size` bytes with write masks."""

    def __init__(self, size: int = pci_regs.PCI_CFG_SPACE_EXP_SIZE) -> None:
        self.size = size
        self.data = bytearray(size)
        self.writable = bytearray(size)
        self.rw1c = bytearray(size)

    def read(self, off: int, n: int) -> int:
        return int.from_bytes(self.data[off:off + n], "little")

    def write(self, off: int, n: int, value: int) -> None:
        """A config write: writable bits take `value`, RW1C bits clear where `value` has ones."""
        for i in range(n):
            byte = (value >> (8 * i)) & 0xFF
            pos = off + i
            old = self.data[pos]
            merged = (old & ~self.writable[pos]) | (byte & self.writable[pos])
            merged &= ~(byte & self.rw1c[pos])
            self.data[pos] = merged & 0xFF

    def put(self, off: int, n: int, value: int, writable: int = 0, rw1c: int = 0) -> None:
        """Initialise a register: its reset value and which bits software may change."""
        self.data[off:off + n] = value.to_bytes(n, "little")
        self.writable[off:off + n] = writable.to_bytes(n, "little")
        self.rw1c[off:off + n] = rw1c.to_bytes(n, "little")

    def set_value(self, off: int, n: int, value: int) -> None:
        """Hardware-side update of a register (status bits, link state), ignoring write masks."""
        self.data[off:off + n] = value.to_bytes(n, "little")

    def set_writable(self, off: int, n: int, writable: int) -> None:
        self.writable[off:off + n] = writable.to_bytes(n, "little")

    def snapshot(self) -> bytes:
        return bytes(self.data)


class CapabilityBuilder:
    """Appends capabilities to a ConfigSpace and keeps both linked lists consistent."""

    def __init__(self, cfg: ConfigSpace) -> None:
        self.cfg = cfg
        self.caps: dict[int, int] = {}
        self.ext_caps: dict[int, int] = {}
        self._last_cap: int | None = None
        self._last_ext: int | None = None

    def add(self, cap_id: int, offset: int) -> int:
        """Start a standard capability with `cap_id` at `offset`; returns `offset`."""
        if offset % CAP_POINTER_ALIGN or offset < pci_regs.PCI_STD_HEADER_SIZEOF:
            raise ValueError(f"capability offset {offset:#x} is not a valid dword offset past the header")
        self.cfg.put(offset, 1, cap_id)
        self.cfg.put(offset + CAP_NEXT_OFFSET, 1, 0)
        if self._last_cap is None:
            self.cfg.put(pci_regs.PCI_CAPABILITY_LIST, 1, offset)
            status = self.cfg.read(pci_regs.PCI_STATUS, 2) | pci_regs.PCI_STATUS_CAP_LIST
            self.cfg.set_value(pci_regs.PCI_STATUS, 2, status)
        else:
            self.cfg.put(self._last_cap + CAP_NEXT_OFFSET, 1, offset)
        self._last_cap = offset
        self.caps[cap_id] = offset
        return offset

    def add_ext(self, cap_id: int, version: int, offset: int) -> int:
        """Start an extended capability at `offset` (>= 0x100); returns `offset`."""
        if offset % CAP_POINTER_ALIGN or offset < pci_regs.PCI_CFG_SPACE_SIZE:
            raise ValueError(f"extended capability offset {offset:#x} is invalid")
        header = field_put(EXT_CAP_ID_MASK, cap_id) | field_put(EXT_CAP_VERSION_MASK, version)
        self.cfg.put(offset, 4, header)
        if self._last_ext is not None:
            prev = self.cfg.read(self._last_ext, 4) | field_put(EXT_CAP_NEXT_MASK, offset)
            self.cfg.put(self._last_ext, 4, prev)
        self._last_ext = offset
        self.ext_caps[cap_id] = offset
        return offset
