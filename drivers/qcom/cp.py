"""Adreno 6xx command-processor (CP) streams: type-4 register writes and type-7 packets.

Owns the packet header encoding (the odd-parity bits the CP checks), a `CommandStream` that
builds an indirect buffer (IB) as a list of dwords, and the few packets the compute and copy
paths use: CP_MEM_WRITE, CP_EVENT_WRITE (cache flush / invalidate, timestamped writes),
CP_MEMCPY, CP_WAIT_FOR_IDLE, CP_WAIT_MEM_WRITES, CP_NOP.

Header layout (Mesa src/freedreno/common/freedreno_pm4.h pkt4/pkt7, adreno_pm4.xml):
- type 4: bits 0-6 count, bit 7 odd parity of the count, bits 8-25 register offset,
  bit 27 odd parity of the offset, bits 28-31 the type (CP_TYPE4_PKT);
- type 7: bits 0-13 count, bit 15 odd parity of the count, bits 16-22 opcode,
  bit 23 odd parity of the opcode, bits 28-31 the type (CP_TYPE7_PKT).
"""
from __future__ import annotations

import struct

from autogen.qcom import pm4

# freedreno_pm4.h pkt4: the count, register and their parity bits
PKT4_COUNT_MASK = 0x7F
PKT4_COUNT_PARITY_SHIFT = 7
PKT4_REG_SHIFT = 8
PKT4_REG_MASK = 0x3FFFF
PKT4_REG_PARITY_SHIFT = 27
# freedreno_pm4.h pkt7: the count, opcode and their parity bits
PKT7_COUNT_MASK = 0x3FFF
PKT7_COUNT_PARITY_SHIFT = 15
PKT7_OPCODE_SHIFT = 16
PKT7_OPCODE_MASK = 0x7F
PKT7_OPCODE_PARITY_SHIFT = 23
# freedreno_pm4.h pm4_pkt_is_type4/7: the type sits in the top nibble
PKT_TYPE_MASK = 0xF0000000
# adreno_pm4.xml CP_EVENT_WRITE: events whose packet carries an address and a value to write
# once the event completes (the "_TS" events); the others are one dword
TIMESTAMP_EVENTS = frozenset({pm4.CACHE_FLUSH_TS, pm4.RB_DONE_TS})
DWORD = 4


class PacketError(ValueError):
    """A packet that cannot be encoded (count or register out of the header's range)."""


def odd_parity_bit(value: int) -> int:
    """The bit that makes `value` plus itself hold an odd number of ones (freedreno_pm4.h
    _odd_parity_bit: 1 when `value` has an even number of set bits)."""
    return (bin(value).count("1") + 1) & 1


def pkt4_header(register: int, count: int) -> int:
    """Header of a type-4 packet writing `count` consecutive registers from `register`."""
    if not 0 < count <= PKT4_COUNT_MASK:
        raise PacketError(f"a type-4 packet writes 1..{PKT4_COUNT_MASK} registers, not {count}")
    if not 0 <= register <= PKT4_REG_MASK:
        raise PacketError(f"register offset {register:#x} does not fit a type-4 header")
    return (pm4.CP_TYPE4_PKT | count | odd_parity_bit(count) << PKT4_COUNT_PARITY_SHIFT
            | register << PKT4_REG_SHIFT | odd_parity_bit(register) << PKT4_REG_PARITY_SHIFT)


def pkt7_header(opcode: int, count: int) -> int:
    """Header of a type-7 packet `opcode` followed by `count` payload dwords."""
    if not 0 <= count <= PKT7_COUNT_MASK:
        raise PacketError(f"a type-7 packet carries 0..{PKT7_COUNT_MASK} dwords, not {count}")
    if not 0 <= opcode <= PKT7_OPCODE_MASK:
        raise PacketError(f"opcode {opcode:#x} does not fit a type-7 header")
    return (pm4.CP_TYPE7_PKT | count | odd_parity_bit(count) << PKT7_COUNT_PARITY_SHIFT
            | opcode << PKT7_OPCODE_SHIFT | odd_parity_bit(opcode) << PKT7_OPCODE_PARITY_SHIFT)


def _lo(value: int) -> int:
    return value & 0xFFFFFFFF


def _hi(value: int) -> int:
    return (value >> 32) & 0xFFFFFFFF


class CommandStream:
    """An indirect buffer under construction: append packets, then `to_bytes()`."""

    def __init__(self) -> None:
        self.dwords: list[int] = []

    def __len__(self) -> int:
        return len(self.dwords)

    def to_bytes(self) -> bytes:
        return struct.pack(f"<{len(self.dwords)}I", *self.dwords)

    def reg_write(self, register: int, *values: int) -> "CommandStream":
        """Type-4: write `values` to `register`, `register + 1`, ..."""
        self.dwords.append(pkt4_header(register, len(values)))
        self.dwords.extend(value & 0xFFFFFFFF for value in values)
        return self

    def packet(self, opcode: int, *payload: int) -> "CommandStream":
        """Type-7: `opcode` with its payload dwords."""
        self.dwords.append(pkt7_header(opcode, len(payload)))
        self.dwords.extend(value & 0xFFFFFFFF for value in payload)
        return self

    def nop(self, *payload: int) -> "CommandStream":
        return self.packet(pm4.CP_NOP, *payload)

    def mem_write(self, address: int, *values: int) -> "CommandStream":
        """CP_MEM_WRITE: dwords `values` to GPU `address` (adreno_pm4.xml CP_MEM_WRITE_0/1)."""
        return self.packet(pm4.CP_MEM_WRITE, _lo(address), _hi(address), *values)

    def mem_write64(self, address: int, value: int) -> "CommandStream":
        return self.mem_write(address, _lo(value), _hi(value))

    def event(self, event: int) -> "CommandStream":
        """CP_EVENT_WRITE of an event without a payload (CACHE_INVALIDATE, say)."""
        if event in TIMESTAMP_EVENTS:
            raise PacketError(f"event {event:#x} writes a value: use event_write_value")
        return self.packet(pm4.CP_EVENT_WRITE, pm4.CP_EVENT_WRITE_0.encode(EVENT=event))

    def event_write_value(self, event: int, address: int, value: int) -> "CommandStream":
        """CP_EVENT_WRITE of a "_TS" event: once the event (a cache flush for CACHE_FLUSH_TS)
        completes, the CP writes the dword `value` to `address`."""
        if event not in TIMESTAMP_EVENTS:
            raise PacketError(f"event {event:#x} writes no value")
        return self.packet(pm4.CP_EVENT_WRITE, pm4.CP_EVENT_WRITE_0.encode(EVENT=event),
                           _lo(address), _hi(address), _lo(value))

    def cache_flush(self, scratch: int) -> "CommandStream":
        """Write back dirty caches (CACHE_FLUSH_TS to a scratch dword, as Mesa's a6xx compute
        path and tinygrad's do) so later readers see the kernel's stores."""
        return self.event_write_value(pm4.CACHE_FLUSH_TS, scratch, 0)

    def cache_invalidate(self) -> "CommandStream":
        """Drop cached lines so a kernel reads what the host or a copy wrote (CACHE_INVALIDATE)."""
        return self.event(pm4.CACHE_INVALIDATE)

    def wait_for_idle(self) -> "CommandStream":
        return self.packet(pm4.CP_WAIT_FOR_IDLE)

    def wait_mem_writes(self) -> "CommandStream":
        return self.packet(pm4.CP_WAIT_MEM_WRITES)

    def memcpy(self, destination: int, source: int, dwords: int) -> "CommandStream":
        """CP_MEMCPY (adreno_pm4.xml, A6XX and later): copy `dwords` dwords from `source` to
        `destination`; both dword aligned."""
        if destination % DWORD or source % DWORD:
            raise PacketError(f"CP_MEMCPY moves dwords: {source:#x} -> {destination:#x} is not aligned")
        return self.packet(pm4.CP_MEMCPY, dwords, _lo(source), _hi(source),
                           _lo(destination), _hi(destination))
