"""PCI configuration-space layout: capability walks, BAR decoding, link status and Resizable BAR fields.

Pure functions over a `ConfigAccess` (anything with `cfg_read8/16/32` and `cfg_write16/32`), so the
same code serves PCIDevice, a bridge reached through sysfs, and tests. Register offsets and fields
come from the generated `autogen.linux.pci_regs` (include/uapi/linux/pci_regs.h).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from autogen.linux import pci_regs as regs

from hal.errors import InvalidArgument

# include/linux/pci.h PCI_FIND_CAP_TTL: at most 48 entries fit the 192 bytes after the header
CAPABILITY_WALK_LIMIT = 48
# (4096 - 256) / 8: each extended capability takes at least a header and one register
EXTENDED_CAPABILITY_WALK_LIMIT = (regs.PCI_CFG_SPACE_EXP_SIZE - regs.PCI_CFG_SPACE_SIZE) // 8
# PCI Local Bus r3.0 sec 6.7: capability pointers are dword aligned; the low two bits are reserved
CAPABILITY_POINTER_MASK = 0xFC
ALL_ONES8 = 0xFF  # a config byte read from a function that does not answer
ALL_ONES16 = 0xFFFF  # vendor ID of a function that does not answer (PCI Local Bus r3.0 sec 6.2.1)
ALL_ONES32 = 0xFFFFFFFF
U64_MASK = (1 << 64) - 1  # BAR arithmetic is on 64-bit addresses

# PCIe r5.0 sec 7.5.3.6 (Link Capabilities) / 7.5.3.8 (Link Status): speed code -> GT/s
LINK_SPEED_GTS = {
    regs.PCI_EXP_LNKSTA_CLS_2_5GB: 2.5,
    regs.PCI_EXP_LNKSTA_CLS_5_0GB: 5.0,
    regs.PCI_EXP_LNKSTA_CLS_8_0GB: 8.0,
    regs.PCI_EXP_LNKSTA_CLS_16_0GB: 16.0,
    regs.PCI_EXP_LNKSTA_CLS_32_0GB: 32.0,
    regs.PCI_EXP_LNKSTA_CLS_64_0GB: 64.0,
}
LINK_WIDTH_SHIFT = 4  # pci_regs.h: PCI_EXP_LNKSTA_NLW / PCI_EXP_LNKCAP_MLW start at bit 4
REBAR_SMALLEST_SIZE_SHIFT = 20  # PCIe r5.0 sec 7.8.6.2: size bit n means 2^(n+20) bytes (1 MiB)
REBAR_CAP_SIZES_SHIFT = 4  # PCIe r5.0 sec 7.8.6.2: the size vector starts at bit 4 (1 MiB)
REBAR_ENTRY_STRIDE = 8  # PCIe r5.0 sec 7.8.6: one capability + one control dword per BAR
BAR_REGISTER_BYTES = 4  # PCI Local Bus r3.0 sec 6.2.5.1: each BAR register is a dword


class ConfigAccess(Protocol):
    def cfg_read8(self, offset: int) -> int: ...
    def cfg_read16(self, offset: int) -> int: ...
    def cfg_read32(self, offset: int) -> int: ...
    def cfg_write16(self, offset: int, value: int) -> None: ...
    def cfg_write32(self, offset: int, value: int) -> None: ...


class RawConfigAccess:
    """A ConfigAccess over raw `read(offset, width)` / `write(offset, width, value)` callables, such as
    a bridge's config file reached through sysfs."""

    def __init__(self, read: Callable[[int, int], int],
                 write: Callable[[int, int, int], None] | None = None) -> None:
        self._read = read
        self._write = write

    def cfg_read8(self, offset: int) -> int:
        return self._read(offset, 1)

    def cfg_read16(self, offset: int) -> int:
        return self._read(offset, 2)

    def cfg_read32(self, offset: int) -> int:
        return self._read(offset, 4)

    def cfg_write16(self, offset: int, value: int) -> None:
        self._checked_write()(offset, 2, value)

    def cfg_write32(self, offset: int, value: int) -> None:
        self._checked_write()(offset, 4, value)

    def _checked_write(self) -> Callable[[int, int, int], None]:
        if self._write is None:
            raise InvalidArgument("this config space was opened read-only")
        return self._write


@dataclass(frozen=True)
class Capability:
    """One entry of a capability list: its ID and its offset in config space."""

    cap_id: int
    offset: int
    extended: bool = False


@dataclass(frozen=True)
class BarInfo:
    """A Base Address Register: `size` in bytes (0 when unimplemented) and its type bits."""

    index: int
    address: int
    size: int
    is_io: bool
    is_64bit: bool
    prefetchable: bool


@dataclass(frozen=True)
class LinkStatus:
    """PCIe link state: current and maximum speed (GT/s) and width (lanes); `training` while it trains."""

    speed_gts: float
    width: int
    max_speed_gts: float
    max_width: int
    training: bool


def capabilities(cfg: ConfigAccess) -> list[Capability]:
    """The standard capability list, in list order; a loop or a bad pointer ends the walk."""
    status = cfg.cfg_read16(regs.PCI_STATUS)
    if not status & regs.PCI_STATUS_CAP_LIST:
        return []
    found: list[Capability] = []
    seen: set[int] = set()
    pointer = cfg.cfg_read8(regs.PCI_CAPABILITY_LIST) & CAPABILITY_POINTER_MASK
    for _ in range(CAPABILITY_WALK_LIMIT):
        if pointer < regs.PCI_STD_HEADER_SIZEOF or pointer in seen:
            break
        seen.add(pointer)
        cap_id = cfg.cfg_read8(pointer + regs.PCI_CAP_LIST_ID)
        if cap_id == ALL_ONES8:
            break
        found.append(Capability(cap_id, pointer))
        pointer = cfg.cfg_read8(pointer + regs.PCI_CAP_LIST_NEXT) & CAPABILITY_POINTER_MASK
    return found


def extended_capabilities(cfg: ConfigAccess) -> list[Capability]:
    """The PCIe extended capability list starting at offset 0x100; bounded and loop-safe."""
    found: list[Capability] = []
    seen: set[int] = set()
    offset = regs.PCI_CFG_SPACE_SIZE
    for _ in range(EXTENDED_CAPABILITY_WALK_LIMIT):
        if offset < regs.PCI_CFG_SPACE_SIZE or offset in seen:
            break
        seen.add(offset)
        header = cfg.cfg_read32(offset)
        if header == 0 or header == ALL_ONES32:
            break
        found.append(Capability(regs.PCI_EXT_CAP_ID(header), offset, extended=True))
        offset = regs.PCI_EXT_CAP_NEXT(header)
    return found


def find_capability(cfg: ConfigAccess, cap_id: int) -> int | None:
    for cap in capabilities(cfg):
        if cap.cap_id == cap_id:
            return cap.offset
    return None


def find_extended_capability(cfg: ConfigAccess, cap_id: int) -> int | None:
    for cap in extended_capabilities(cfg):
        if cap.cap_id == cap_id:
            return cap.offset
    return None


def bar_register(index: int) -> int:
    return regs.PCI_BASE_ADDRESS_0 + index * BAR_REGISTER_BYTES


def decode_bars(cfg: ConfigAccess, sizes: dict[int, int] | None = None) -> list[BarInfo]:
    """Decode the six BARs of a type 0 header. Sizes come from `sizes` (index -> bytes, as the
    kernel reports them) or, when None, from sizing each BAR in config space (`size_bar`)."""
    bars: list[BarInfo] = []
    index = 0
    while index < regs.PCI_STD_NUM_BARS:
        low = cfg.cfg_read32(bar_register(index))
        is_io = bool(low & regs.PCI_BASE_ADDRESS_SPACE_IO)
        mem_type = low & regs.PCI_BASE_ADDRESS_MEM_TYPE_MASK
        is_64bit = not is_io and mem_type == regs.PCI_BASE_ADDRESS_MEM_TYPE_64
        if is_io:
            address = low & regs.PCI_BASE_ADDRESS_IO_MASK & ALL_ONES32
        else:
            address = low & regs.PCI_BASE_ADDRESS_MEM_MASK & ALL_ONES32
        if is_64bit and index + 1 < regs.PCI_STD_NUM_BARS:
            address |= cfg.cfg_read32(bar_register(index + 1)) << 32
        size = sizes.get(index, 0) if sizes is not None else size_bar(cfg, index)
        prefetchable = not is_io and bool(low & regs.PCI_BASE_ADDRESS_MEM_PREFETCH)
        bars.append(BarInfo(index, address, size, is_io, is_64bit, prefetchable))
        index += 2 if is_64bit else 1
    return bars


def is_upper_half_of_64bit_bar(cfg: ConfigAccess, index: int) -> bool:
    """True when BAR register `index` holds the upper 32 address bits of the 64-bit BAR before it
    (walking from BAR0, as the type bits of an upper half are address bits, not a type)."""
    position = 0
    while position < index:
        low = cfg.cfg_read32(bar_register(position))
        is_io = bool(low & regs.PCI_BASE_ADDRESS_SPACE_IO)
        mem_type = low & regs.PCI_BASE_ADDRESS_MEM_TYPE_MASK
        is_64bit = not is_io and mem_type == regs.PCI_BASE_ADDRESS_MEM_TYPE_64
        if is_64bit and position + 1 == index:
            return True
        position += 2 if is_64bit else 1
    return False


def hot_plug_capable(cfg: ConfigAccess) -> bool:
    """True for a port whose slot is Hot-Plug Capable (PCIe r5.0 sec 7.5.3.9, Slot Capabilities bit 6);
    Slot Capabilities exists only when the PCIe capability's Slot Implemented flag is set."""
    pcie = find_capability(cfg, regs.PCI_CAP_ID_EXP)
    if pcie is None:
        return False
    if not cfg.cfg_read16(pcie + regs.PCI_EXP_FLAGS) & regs.PCI_EXP_FLAGS_SLOT:
        return False
    return bool(cfg.cfg_read32(pcie + regs.PCI_EXP_SLTCAP) & regs.PCI_EXP_SLTCAP_HPC)


def size_bar(cfg: ConfigAccess, index: int) -> int:
    """Size a BAR the PCI way: write all ones, read back the mask, restore. Decoding is turned off
    meanwhile (PCI Local Bus r3.0 sec 6.2.5.1) and the command register restored after."""
    offset = bar_register(index)
    command = cfg.cfg_read16(regs.PCI_COMMAND)
    decode_bits = regs.PCI_COMMAND_MEMORY | regs.PCI_COMMAND_IO
    cfg.cfg_write16(regs.PCI_COMMAND, command & ~decode_bits & ALL_ONES16)
    try:
        low = cfg.cfg_read32(offset)
        is_io = bool(low & regs.PCI_BASE_ADDRESS_SPACE_IO)
        mem_type = low & regs.PCI_BASE_ADDRESS_MEM_TYPE_MASK
        is_64bit = not is_io and mem_type == regs.PCI_BASE_ADDRESS_MEM_TYPE_64
        cfg.cfg_write32(offset, ALL_ONES32)
        mask_low = cfg.cfg_read32(offset)
        cfg.cfg_write32(offset, low)
        mask = mask_low
        high = 0
        if is_64bit and index + 1 < regs.PCI_STD_NUM_BARS:
            high = cfg.cfg_read32(offset + BAR_REGISTER_BYTES)
            cfg.cfg_write32(offset + BAR_REGISTER_BYTES, ALL_ONES32)
            mask |= cfg.cfg_read32(offset + BAR_REGISTER_BYTES) << 32
            cfg.cfg_write32(offset + BAR_REGISTER_BYTES, high)
        else:
            mask |= 0xFFFFFFFF00000000  # a 32-bit BAR's upper half reads as all ones when sized
    finally:
        cfg.cfg_write16(regs.PCI_COMMAND, command)
    address_mask = regs.PCI_BASE_ADDRESS_IO_MASK if is_io else regs.PCI_BASE_ADDRESS_MEM_MASK
    mask &= address_mask & U64_MASK
    if mask_low == 0 or mask == 0:
        return 0
    size = (~mask & U64_MASK) + 1
    if is_io:
        size &= 0xFFFF  # I/O BARs decode at most 16 address bits on x86 (PCI Local Bus r3.0 sec 6.2.5.1)
    return size


def link_status(cfg: ConfigAccess, pcie_cap: int) -> LinkStatus:
    """Current and maximum link speed/width from the PCI Express capability at `pcie_cap`."""
    link_cap = cfg.cfg_read32(pcie_cap + regs.PCI_EXP_LNKCAP)
    link_sta = cfg.cfg_read16(pcie_cap + regs.PCI_EXP_LNKSTA)
    return LinkStatus(
        speed_gts=LINK_SPEED_GTS.get(link_sta & regs.PCI_EXP_LNKSTA_CLS, 0.0),
        width=(link_sta & regs.PCI_EXP_LNKSTA_NLW) >> LINK_WIDTH_SHIFT,
        max_speed_gts=LINK_SPEED_GTS.get(link_cap & regs.PCI_EXP_LNKCAP_SLS, 0.0),
        max_width=(link_cap & regs.PCI_EXP_LNKCAP_MLW) >> LINK_WIDTH_SHIFT,
        training=bool(link_sta & regs.PCI_EXP_LNKSTA_LT),
    )


def rebar_entry(cfg: ConfigAccess, rebar_cap: int, bar: int) -> int | None:
    """Offset of the Resizable BAR capability/control pair that serves `bar`, or None."""
    first_control = cfg.cfg_read32(rebar_cap + regs.PCI_REBAR_CTRL)
    count = (first_control & regs.PCI_REBAR_CTRL_NBAR_MASK) >> regs.PCI_REBAR_CTRL_NBAR_SHIFT
    for slot in range(max(count, 1)):
        entry = rebar_cap + slot * REBAR_ENTRY_STRIDE
        control = cfg.cfg_read32(entry + regs.PCI_REBAR_CTRL)
        if control & regs.PCI_REBAR_CTRL_BAR_IDX == bar:
            return entry
    return None


def rebar_supported_sizes(cfg: ConfigAccess, entry: int) -> list[int]:
    """BAR sizes in bytes that a Resizable BAR entry advertises, smallest first."""
    cap = cfg.cfg_read32(entry + regs.PCI_REBAR_CAP)
    vector = (cap & regs.PCI_REBAR_CAP_SIZES) >> REBAR_CAP_SIZES_SHIFT
    return [1 << (bit + REBAR_SMALLEST_SIZE_SHIFT) for bit in range(vector.bit_length()) if vector >> bit & 1]


def rebar_current_size(cfg: ConfigAccess, entry: int) -> int:
    control = cfg.cfg_read32(entry + regs.PCI_REBAR_CTRL)
    # the field is 5 bits in older pci_regs.h and 6 bits (PCIe r5.0 sec 7.8.6.3) in newer ones
    size_field = (control >> regs.PCI_REBAR_CTRL_BAR_SHIFT) & 0x3F
    return 1 << (size_field + REBAR_SMALLEST_SIZE_SHIFT)
