"""The AM boot layout: what a later process needs to attach warm, find the structures, or spot a crash.

Two parts, both of them the driver's own format (no hardware defines them):
- the layout, a versioned block at a fixed VRAM offset, `LAYOUT_OFFSET` (right after the stolen VGA
  memory, so it is inside BAR0 on every BAR size and below every allocation), `LAYOUT_SIZE` bytes,
  kept out of the allocator (`device.memory.reserve_fixed`) before any block allocates. In this order:
  a header (`MAGIC`, `LAYOUT_VERSION`, the bytes used, a CRC-32 of all of them with the checksum
  field zero, the boot generation, the state word, the owner's pid); the blocks brought up (names,
  in order); one slot per persistent structure (`SLOTS`: MC address and size, 0 when absent); the
  firmware files the PSP loaded with their SHA-256; every VRAM allocation (offset, size, purpose);
- the flags, two GC scratch registers: regSCRATCH_REG6 holds the layout's VRAM offset in pages
  with `FLAG_VALID`, regSCRATCH_REG7 `FLAG_TAG` and the generation. Registers survive the
  owner's exit but not a mode1 reset or a power cycle (both return them to their power-on zero), so
  valid flags whose generation matches the header say the hardware still holds what the layout
  describes. tinygrad's AM driver keeps its own boot marker in regSCRATCH_REG7 the same way;
  amdgpu's GC ring tests use regSCRATCH_REG0, which is left alone.

The state word: BOOTING while blocks come up, UP while an owner drives the device, SHUTTING_DOWN
during a teardown, DOWN_CLEAN once the owner let go (detached with the hardware up, or after a full
teardown, which also clears the flags).

`inspect(device)` decides what a new owner (holding hal's ownership lock) does:
- no valid flags and no SOS running (MP0 C2PMSG_81 reads 0): cold boot;
- no valid flags but the SOS alive: a driver ran before (a PCI reset cleared its flags, it tore
  down, or it was not this driver) and the PSP may hold its TMR: mode1 reset, then a cold boot,
  as amdgpu does on init (soc21.c soc21_need_reset_on_init);
- valid flags but a header that does not parse, or whose generation differs: the hardware state is
  unknown: mode1 reset, then a cold boot (logged as a warning);
- BOOTING or SHUTTING_DOWN (the owner died in the middle), or UP with an owner pid that no longer
  runs (killed): the previous owner crashed: mode1 reset, then a cold boot;
- UP with a live owner that released the device, or DOWN_CLEAN: warm attach, when the same blocks
  are brought up (the firmware set is compared once the PSP block has read its files).
"""
from __future__ import annotations

import dataclasses
import enum
import logging
import struct
import zlib
from typing import TYPE_CHECKING

from drivers.am.memory import VBIOS_VGA_ALLOCATION
from hal.errors import BadBinary, HalError

if TYPE_CHECKING:
    from drivers.am.device import AMDevice
    from drivers.am.regs import Registers, VRAMWindow

log = logging.getLogger(__name__)

LAYOUT_OFFSET = VBIOS_VGA_ALLOCATION  # first byte after the stolen VGA memory (drivers.am.memory)
LAYOUT_SIZE = 64 << 10
LAYOUT_PURPOSE = "boot layout"
MAGIC = b"GPUHALAM"
LAYOUT_VERSION = 2  # 2: the GC compute queue slots appended
PAGE_SHIFT = 12  # the flag register counts 4 KiB pages

FLAG_VALID = 1 << 31
FLAG_OFFSET_MASK = FLAG_VALID - 1
FLAG_TAG = 0xA3 << 24  # regSCRATCH_REG7 bits 31:24 say "ours"; bits 23:0 the generation
FLAG_TAG_MASK = 0xFF << 24
GENERATION_MASK = (1 << 24) - 1
FLAG_REGISTERS = ("regSCRATCH_REG6", "regSCRATCH_REG7")  # GC: (offset and valid, tag and generation)

# header: magic, layout version, bytes used, CRC-32, generation, state, owner pid
_HEADER = struct.Struct("<8sIIIIII")
_CHECKSUM_AT = 16  # byte offset of the CRC-32 inside the header
_NAME = struct.Struct("<16s")
_SLOT = struct.Struct("<QQ")
_COUNT = struct.Struct("<I")
_FIRMWARE = struct.Struct("<48s32s")
_ALLOCATION = struct.Struct("<QQ40s")
MAX_BLOCKS = 16


class WarmAttachRefused(HalError):
    """The hardware does not hold what the layout says: the device resets and boots cold."""


class State(enum.IntEnum):
    """The owner's state word."""

    BOOTING = 1
    UP = 2
    SHUTTING_DOWN = 3
    DOWN_CLEAN = 4


# the persistent structures, in layout order: (slot name, block, attribute path of the VRAMBuffer)
SLOTS: tuple[tuple[str, str, str], ...] = (
    ("gmc.vmid0_root", "GMC", ""),  # the VMID 0 page table's root (see _slot_value)
    ("psp.ring", "PSP", "ring_buffer"),
    ("psp.fence", "PSP", "fence_buffer"),
    ("psp.command", "PSP", "cmd_buffer"),
    ("psp.tmr", "PSP", "tmr"),
    ("ih.ring", "IH", "ring"),
    ("ih.wptr_writeback", "IH", "writeback"),
    ("smu.driver_table", "SMU", "driver_table"),
    ("sdma.ring", "SDMA", "ring"),
    ("sdma.writeback", "SDMA", "writeback"),
    ("gc.mqd", "GC", "mqd_buffer"),  # layout version 2 on: the GC compute queue
    ("gc.eop", "GC", "eop"),
    ("gc.ring", "GC", "ring"),
    ("gc.writeback", "GC", "writeback"),
)
# A slot's address is an MC address (fb_base + VRAM offset: what VMID 0 and the engines use) except
# for these, which hold VRAM physical addresses (vram_base_offset + VRAM offset): the VMID 0 root is
# what PAGE_TABLE_BASE_ADDR takes (gmc_v11_0.c gmc_v11_0_get_vm_pde turns MC into these)
PHYSICAL_SLOTS = frozenset({"gmc.vmid0_root"})
# drivers/gpu/drm/amd/amdgpu/soc21.c soc21_need_reset_on_init: the SOS's sign of life, non-zero once
# the bootloader started the SOS (psp_v13_0.c psp_v13_0_is_sos_alive reads the same register)
SOS_SIGN_OF_LIFE = ("MP0", "regMP0_SMN_C2PMSG_81")


def slot_address_kind(name: str) -> str:
    """What the address in slot `name` is: "vram_address" (physical) or "mc_address"."""
    return "vram_address" if name in PHYSICAL_SLOTS else "mc_address"


@dataclasses.dataclass(frozen=True)
class Allocation:
    """One VRAM allocation the owner had: byte offset, size, purpose."""

    offset: int
    size: int
    purpose: str


@dataclasses.dataclass
class Layout:
    """The decoded layout (see the module docstring)."""

    generation: int
    state: State
    owner_pid: int
    blocks: tuple[str, ...] = ()
    # name -> (address, size): an MC address, or a VRAM physical one for PHYSICAL_SLOTS
    slots: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    firmware: dict[str, str] = dataclasses.field(default_factory=dict)  # file -> SHA-256 (hex)
    allocations: tuple[Allocation, ...] = ()

    def encode(self) -> bytes:
        """The bytes at LAYOUT_OFFSET; BadBinary when they would not fit LAYOUT_SIZE."""
        body = bytearray()
        body += _COUNT.pack(len(self.blocks))
        for name in self.blocks:
            body += _NAME.pack(name.encode())
        for name, _, _ in SLOTS:
            body += _SLOT.pack(*self.slots.get(name, (0, 0)))
        body += _COUNT.pack(len(self.firmware))
        for name, digest in sorted(self.firmware.items()):
            body += _FIRMWARE.pack(name.encode()[-48:], bytes.fromhex(digest))
        body += _COUNT.pack(len(self.allocations))
        for item in self.allocations:
            body += _ALLOCATION.pack(item.offset, item.size, item.purpose.encode()[:40])
        used = _HEADER.size + len(body)
        if used > LAYOUT_SIZE or len(self.blocks) > MAX_BLOCKS:
            raise BadBinary(f"boot layout: {used} bytes ({len(self.allocations)} allocations) do not "
                            f"fit its {LAYOUT_SIZE} bytes")
        header = _HEADER.pack(MAGIC, LAYOUT_VERSION, used, 0, self.generation, int(self.state),
                              self.owner_pid)
        blob = bytearray(header + body)
        struct.pack_into("<I", blob, _CHECKSUM_AT, zlib.crc32(blob))
        return bytes(blob)


def decode(blob: bytes) -> Layout:
    """Parse the bytes at LAYOUT_OFFSET; BadBinary names the field that is wrong."""
    if len(blob) < _HEADER.size:
        raise BadBinary(f"boot layout: {len(blob)} bytes, the header alone is {_HEADER.size}")
    magic, version, used, checksum, generation, state, pid = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise BadBinary(f"boot layout: magic {magic!r}, expected {MAGIC!r}")
    if version != LAYOUT_VERSION:
        raise BadBinary(f"boot layout: version {version}, this driver reads version {LAYOUT_VERSION}")
    if not _HEADER.size <= used <= min(len(blob), LAYOUT_SIZE):
        raise BadBinary(f"boot layout: size {used} outside [{_HEADER.size}, {LAYOUT_SIZE}]")
    data = bytearray(blob[:used])
    struct.pack_into("<I", data, _CHECKSUM_AT, 0)
    if zlib.crc32(data) != checksum:
        raise BadBinary(f"boot layout: checksum {checksum:#010x}, the bytes give {zlib.crc32(data):#010x}")
    try:
        state_word = State(state)
    except ValueError:
        raise BadBinary(f"boot layout: state word {state} is not one of {[s.name for s in State]}") from None
    reader = _Reader(bytes(data), _HEADER.size)
    try:
        blocks = tuple(reader.text(_NAME) for _ in range(reader.count(MAX_BLOCKS)))
        slots = {}
        for name, _, _ in SLOTS:
            address, size = reader.take(_SLOT)
            if size:
                slots[name] = (address, size)
        firmware = {}
        for _ in range(reader.count(LAYOUT_SIZE // _FIRMWARE.size)):
            name, digest = reader.take(_FIRMWARE)
            firmware[name.rstrip(b"\0").decode()] = digest.hex()
        allocations = []
        for _ in range(reader.count(LAYOUT_SIZE // _ALLOCATION.size)):
            offset, size, purpose = reader.take(_ALLOCATION)
            allocations.append(Allocation(offset, size, purpose.rstrip(b"\0").decode()))
    except (struct.error, UnicodeDecodeError) as exc:
        raise BadBinary(f"boot layout: body: {exc}") from exc
    return Layout(generation, state_word, pid, blocks, slots, firmware, tuple(allocations))


class _Reader:
    def __init__(self, data: bytes, offset: int) -> None:
        self.data = data
        self.offset = offset

    def take(self, shape: struct.Struct) -> tuple:
        values = shape.unpack_from(self.data, self.offset)
        self.offset += shape.size
        return values

    def text(self, shape: struct.Struct) -> str:
        return self.take(shape)[0].rstrip(b"\0").decode()

    def count(self, limit: int) -> int:
        value = self.take(_COUNT)[0]
        if value > limit:
            raise struct.error(f"count {value} over {limit}")
        return value


# -- flags -------------------------------------------------------------------------------------------
def read_flags(registers: "Registers") -> tuple[int, int] | None:
    """(layout VRAM offset, generation) when the flag registers say a layout is valid, else None."""
    where, tag = (registers.reg("GC", name).read() for name in FLAG_REGISTERS)
    if not where & FLAG_VALID or tag & FLAG_TAG_MASK != FLAG_TAG:
        return None
    return (where & FLAG_OFFSET_MASK) << PAGE_SHIFT, tag & GENERATION_MASK


def write_flags(registers: "Registers", offset: int, generation: int) -> None:
    where, tag = (registers.reg("GC", name) for name in FLAG_REGISTERS)
    tag.write(FLAG_TAG | generation & GENERATION_MASK)
    where.write(FLAG_VALID | offset >> PAGE_SHIFT)


def clear_flags(registers: "Registers") -> None:
    """No valid layout: the next owner boots cold."""
    for name in FLAG_REGISTERS:
        registers.reg("GC", name).write(0)


def find(registers: "Registers", vram: "VRAMWindow") -> Layout | None:
    """Read-only (for status tools): the layout the flags point at, or None; BadBinary if corrupt."""
    flags = read_flags(registers)
    if flags is None:
        return None
    offset, _ = flags
    return decode(vram.read(offset, LAYOUT_SIZE))


def process_alive(os, pid: int) -> bool:
    """Whether `pid` runs: our own pid, or /proc/<pid> exists (proc(5)) through the OS seam."""
    if pid == os.getpid():
        return True
    return pid > 0 and os.exists(f"/proc/{pid}")


# -- decisions ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Decision:
    """What a new owner does: "cold", "warm" (with the layout) or "reset" (mode1, then cold)."""

    kind: str
    reason: str
    layout: Layout | None = None


class BootLayout:
    """The device's layout: inspected at open, written through bring-up, teardown and detach."""

    def __init__(self, device: "AMDevice") -> None:
        self.device = device
        self.view = None
        self.layout: Layout | None = None

    def reserve(self) -> None:
        """Keep LAYOUT_OFFSET out of the allocator (before any block's sw_init)."""
        self.view = self.device.memory.reserve_fixed(LAYOUT_OFFSET, LAYOUT_SIZE, LAYOUT_PURPOSE)

    def inspect(self) -> Decision:
        device = self.device
        flags = read_flags(device.registers)
        if flags is None:
            return self._without_flags()
        offset, generation = flags
        try:
            layout = decode(device.vram.read(offset, LAYOUT_SIZE))
        except BadBinary as exc:
            return Decision("reset", f"the flags name a layout at VRAM {offset:#x} but it is corrupt: {exc}")
        if offset != LAYOUT_OFFSET:
            return Decision("reset", f"the layout sits at VRAM {offset:#x}, this driver keeps it at "
                                     f"{LAYOUT_OFFSET:#x}", layout)
        if layout.generation != generation:
            return Decision("reset", f"the layout is generation {layout.generation}, the flags say "
                                     f"{generation}", layout)
        pid = layout.owner_pid
        if layout.state in (State.BOOTING, State.SHUTTING_DOWN):
            return Decision("reset", f"the previous owner (pid {pid}) crashed while "
                                     f"{layout.state.name.lower().replace('_', ' ')}", layout)
        if layout.state is State.UP and not process_alive(device.pci.os, pid):
            return Decision("reset", f"the previous owner (pid {pid}) died while the device was up",
                            layout)
        wanted = tuple(block.block for block in device.blocks)
        if layout.blocks != wanted:
            return Decision("reset", f"the layout holds blocks {', '.join(layout.blocks)}, this bring-up "
                                     f"wants {', '.join(wanted)}", layout)
        return Decision("warm", f"generation {generation} left {layout.state.name} by pid {pid}", layout)

    def _without_flags(self) -> Decision:
        """No layout to trust: cold, unless the SOS runs (amdgpu_device.c amdgpu_device_init asks
        amdgpu_asic_need_reset_on_init; on soc21 a non-zero sign of life means a driver ran before,
        and amdgpu then resets the ASIC before init). Navi3x dGPUs only: amdgpu skips APUs."""
        block, name = SOS_SIGN_OF_LIFE
        sign = self.device.registers.reg(block, name).read()
        if sign:
            return Decision("reset", f"no boot layout flags but the PSP's SOS is alive ({block} {name} "
                                     f"reads {sign:#x}): a driver ran before "
                                     "(its flags cleared by a PCI reset or its teardown, or another "
                                     "driver) and the PSP may hold its TMR")
        return Decision("cold", "no boot layout flags and no SOS running (power-on or after a mode1)")

    # -- writing -----------------------------------------------------------------------------------
    def begin(self, previous: Layout | None) -> None:
        """A cold boot starts: a new generation, state BOOTING, flags pointing at it."""
        generation = ((previous.generation if previous else 0) % GENERATION_MASK) + 1
        self.layout = Layout(generation, State.BOOTING, self.device.pci.os.getpid())
        self._write()

    def attach(self, layout: Layout) -> None:
        """A warm attach starts: the same generation, this process as the owner, BOOTING."""
        self.layout = dataclasses.replace(layout, state=State.BOOTING, owner_pid=self.device.pci.os.getpid())
        self._write()

    def up(self) -> None:
        """Bring-up done: record the structures, the firmware and the allocations; state UP."""
        self.layout = self._snapshot(State.UP)
        self._write()

    def set_state(self, state: State) -> None:
        if self.layout is None:
            return
        self.layout = dataclasses.replace(self.layout, state=state)
        self._write()

    def torn_down(self) -> None:
        """A full teardown finished: DOWN_CLEAN, and the flags cleared (nothing persists)."""
        self.set_state(State.DOWN_CLEAN)
        clear_flags(self.device.registers)

    def _snapshot(self, state: State) -> Layout:
        device = self.device
        slots = {}
        for name, block_name, attribute in SLOTS:
            value = _slot_value(device, block_name, attribute)
            if value is not None:
                slots[name] = value
        firmware = {}
        try:
            psp = device.block("PSP")
            firmware = {name: image.sha256 for name, image in getattr(psp, "firmware", {}).items()}
        except LookupError:
            pass
        allocations = tuple(Allocation(buffer.offset, buffer.size, buffer.purpose)
                            for buffer in device.memory.buffers())
        return Layout(self.layout.generation, state, device.pci.os.getpid(),
                      tuple(block.block for block in device.blocks), slots, firmware, allocations)

    def _write(self) -> None:
        blob = self.layout.encode()
        self.view.write(0, blob)
        write_flags(self.device.registers, LAYOUT_OFFSET, self.layout.generation)


def _slot_value(device: "AMDevice", block_name: str, attribute: str) -> tuple[int, int] | None:
    try:
        block = device.block(block_name)
    except LookupError:
        return None
    if block_name == "GMC":
        context = getattr(block, "contexts", {}).get(0)
        if context is None:
            return None
        return context.page_table.root_address, 1 << PAGE_SHIFT
    buffer = getattr(block, attribute, None)
    if buffer is None:
        return None
    return buffer.mc_address, buffer.size
