"""The Adreno 6xx command processor of the mock: decodes indirect buffers and executes them.

`CommandProcessor.execute(gpuaddr, size)` walks one IB through the GPU address space it is given
(`GPUAddressSpace`: the process's KGSL objects and mapped user memory). It checks each header as
the CP does and raises `CPFault` for what the real CP turns into a fault (the kernel then marks
the context bad):
- a header that is neither type 4 nor type 7, or whose odd-parity bits do not match the count,
  register or opcode (the CP's "opcode error" interrupt, a6xx_gpu.c/adreno_a6xx.c CP_OPCODE_ERROR);
- a packet that runs past the end of its IB;
- a read or write of a GPU address nothing is mapped at, or a write to a GPU-read-only object
  (an IOMMU page fault, kgsl_iommu.c kgsl_iommu_fault_handler).
Type-4 writes land in a register file (`registers`); the type-7 packets the copy and signal paths
use are executed (CP_NOP, CP_MEM_WRITE, CP_EVENT_WRITE, CP_MEMCPY, CP_WAIT_FOR_IDLE,
CP_WAIT_MEM_WRITES, CP_INDIRECT_BUFFER, CP_WAIT_REG_MEM on memory, CP_REG_TO_MEM with the always-on
counter), and compute dispatch: CP_LOAD_STATE6_* of the compute shader and constants, CP_SET_MARKER
and CP_EXEC_CS, which runs the kernel on the ir3 interpreter (mockgpu/qcom/compute.py). A CP_WAIT_REG_MEM whose condition does not hold raises `Stalled`: the submission then
never completes, like a CP waiting for a value nothing writes. Any other opcode raises
`UnsupportedPacket`, naming it, so the mock never pretends to have run work it does not model.

Header layout facts: Mesa src/freedreno/common/freedreno_pm4.h (pkt4/pkt7 and their parity) and
src/freedreno/registers/adreno/adreno_pm4.xml (packet payloads).
"""
from __future__ import annotations

import bisect
import struct
import time
from dataclasses import dataclass, field

from autogen.qcom import a6xx, pm4
from mockgpu.qcom import compute

DWORD = 4
# freedreno_pm4.h: the packet type in the top nibble
TYPE_SHIFT = 28
TYPE4 = pm4.CP_TYPE4_PKT >> TYPE_SHIFT
TYPE7 = pm4.CP_TYPE7_PKT >> TYPE_SHIFT
# freedreno_pm4.h pkt4: count bits 0-6, its parity bit 7, register bits 8-25, its parity bit 27
PKT4_COUNT_MASK = 0x7F
PKT4_COUNT_PARITY = 7
PKT4_REG_SHIFT = 8
PKT4_REG_MASK = 0x3FFFF
PKT4_REG_PARITY = 27
# freedreno_pm4.h pkt7: count bits 0-13, its parity bit 15, opcode bits 16-22, its parity bit 23
PKT7_COUNT_MASK = 0x3FFF
PKT7_COUNT_PARITY = 15
PKT7_OPCODE_SHIFT = 16
PKT7_OPCODE_MASK = 0x7F
PKT7_OPCODE_PARITY = 23
# adreno_pm4.xml CP_EVENT_WRITE: the "_TS" events carry an address and a value
TIMESTAMP_EVENTS = frozenset({pm4.CACHE_FLUSH_TS, pm4.RB_DONE_TS})
# the CP runs the kernel's ringbuffer, KGSL's IB (IB1) and one more level (IB2); an
# indirect buffer packet inside IB2 is an error (adreno_pm4.xml: CP_INDIRECT_BUFFER targets IB2)
MAX_IB_LEVEL = 2
# adreno_dispatch.c _verify_ib: the CP takes IBs of at most 0xFFFFF dwords
MAX_IB_DWORDS = 0xFFFFF
# Mesa src/freedreno/vulkan/tu_device.cc tu_device_ticks_to_ns: the always-on RBBM timer
# (CP_ALWAYS_ON_COUNTER) runs at 19.2 MHz
ALWAYS_ON_HZ = 19_200_000
ALWAYS_ON_COUNTER = a6xx.REG_A6XX_CP_ALWAYS_ON_COUNTER.offset
# adreno_pm4.xml cp_cond_function / poll_memory_type
_CONDITIONS = pm4.ENUMS["cp_cond_function"]
POLL_MEMORY = pm4.ENUMS["poll_memory_type"]["POLL_MEMORY"]


class CPFault(Exception):
    """What the CP or the IOMMU reports for a bad stream: `kind` is "opcode" (bad header or
    parity), "overrun" (a packet past its IB) or "pagefault" (an unmapped or read-only address)."""

    def __init__(self, kind: str, message: str, address: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.address = address


class Stalled(Exception):
    """The CP waits (CP_WAIT_REG_MEM) on memory nothing will change while it waits: in this
    simulation, where each submission runs to its end at once, the stream can never go on."""


class UnsupportedPacket(Exception):
    """An opcode the mock's CP does not model; the message names it (never silently skipped)."""


def odd_parity_ok(value: int, parity_bit: int) -> bool:
    """Whether `parity_bit` makes the ones of `value` plus itself odd (freedreno_pm4.h)."""
    return (bin(value).count("1") + parity_bit) % 2 == 1


@dataclass
class Mapping:
    """A range of GPU addresses backed by `memory` (a writable memoryview)."""

    gpuaddr: int
    size: int
    memory: memoryview
    read_only: bool = False
    owner: object = None

    @property
    def end(self) -> int:
        return self.gpuaddr + self.size


@dataclass
class GPUAddressSpace:
    """One process's GPU page table: mappings sorted by address, no overlaps."""

    mappings: list[Mapping] = field(default_factory=list)

    def add(self, mapping: Mapping) -> None:
        starts = [m.gpuaddr for m in self.mappings]
        index = bisect.bisect_left(starts, mapping.gpuaddr)
        self.mappings.insert(index, mapping)

    def remove(self, gpuaddr: int) -> Mapping | None:
        for index, mapping in enumerate(self.mappings):
            if mapping.gpuaddr == gpuaddr:
                return self.mappings.pop(index)
        return None

    def find(self, address: int) -> Mapping | None:
        starts = [m.gpuaddr for m in self.mappings]
        index = bisect.bisect_right(starts, address) - 1
        if index < 0:
            return None
        mapping = self.mappings[index]
        return mapping if address < mapping.end else None

    def contains(self, address: int) -> bool:
        return self.find(address) is not None

    def _span(self, address: int, size: int, write: bool) -> tuple[Mapping, int]:
        mapping = self.find(address)
        access = "write" if write else "read"
        if mapping is None or address + size > mapping.end:
            raise CPFault("pagefault", f"GPU {access} of {size} bytes at {address:#x}: no mapping "
                                       "(IOMMU translation fault)", address)
        if write and mapping.read_only:
            raise CPFault("pagefault", f"GPU write at {address:#x} into a GPU-read-only object "
                                       "(IOMMU permission fault)", address)
        return mapping, address - mapping.gpuaddr

    def read(self, address: int, size: int) -> bytes:
        mapping, offset = self._span(address, size, write=False)
        return bytes(mapping.memory[offset:offset + size])

    def write(self, address: int, data: bytes) -> None:
        mapping, offset = self._span(address, len(data), write=True)
        mapping.memory[offset:offset + len(data)] = data


class CommandProcessor:
    """The CP of one GPU: a register file and the packet interpreter."""

    def __init__(self) -> None:
        self.registers: dict[int, int] = {}
        self.started = time.monotonic()
        self.events: list[int] = []  # CP_EVENT_WRITE events in order (cache flushes, invalidates)
        self.packets_executed = 0
        # CP_LOAD_STATE6 of the compute block: the const file (dwords) and the shader's address
        self.cs_consts: list[int] = []
        self.cs_shader: tuple[int, int] | None = None  # (GPU address, 128-byte units)
        self.kernels_run = 0
        self.instructions_executed = 0

    def execute(self, space: GPUAddressSpace, gpuaddr: int, size: int, level: int = 1) -> None:
        """Run the IB of `size` bytes at `gpuaddr`."""
        if size % DWORD:
            raise CPFault("overrun", f"IB at {gpuaddr:#x} of {size} bytes is not whole dwords", gpuaddr)
        raw = space.read(gpuaddr, size)
        dwords = struct.unpack(f"<{size // DWORD}I", raw)
        position = 0
        while position < len(dwords):
            header = dwords[position]
            where = gpuaddr + position * DWORD
            kind = header >> TYPE_SHIFT
            if kind == TYPE4:
                count, register = self._decode_type4(header, where)
                payload = self._payload(dwords, position, count, where)
                for index, value in enumerate(payload):
                    self.registers[register + index] = value
            elif kind == TYPE7:
                count, opcode = self._decode_type7(header, where)
                payload = self._payload(dwords, position, count, where)
                self._type7(space, opcode, payload, where, level)
            else:
                raise CPFault("opcode", f"dword {header:#010x} at {where:#x} is not a type-4 or "
                                        "type-7 packet header (CP opcode error)", where)
            self.packets_executed += 1
            position += 1 + count

    @staticmethod
    def _decode_type4(header: int, where: int) -> tuple[int, int]:
        count = header & PKT4_COUNT_MASK
        register = (header >> PKT4_REG_SHIFT) & PKT4_REG_MASK
        if not odd_parity_ok(count, (header >> PKT4_COUNT_PARITY) & 1):
            raise CPFault("opcode", f"type-4 header {header:#010x} at {where:#x}: count {count} "
                                    "fails its odd-parity bit (CP opcode error)", where)
        if not odd_parity_ok(register, (header >> PKT4_REG_PARITY) & 1):
            raise CPFault("opcode", f"type-4 header {header:#010x} at {where:#x}: register "
                                    f"{register:#x} fails its odd-parity bit (CP opcode error)", where)
        return count, register

    @staticmethod
    def _decode_type7(header: int, where: int) -> tuple[int, int]:
        count = header & PKT7_COUNT_MASK
        opcode = (header >> PKT7_OPCODE_SHIFT) & PKT7_OPCODE_MASK
        if not odd_parity_ok(count, (header >> PKT7_COUNT_PARITY) & 1):
            raise CPFault("opcode", f"type-7 header {header:#010x} at {where:#x}: count {count} "
                                    "fails its odd-parity bit (CP opcode error)", where)
        if not odd_parity_ok(opcode, (header >> PKT7_OPCODE_PARITY) & 1):
            raise CPFault("opcode", f"type-7 header {header:#010x} at {where:#x}: opcode "
                                    f"{opcode:#x} fails its odd-parity bit (CP opcode error)", where)
        return count, opcode

    @staticmethod
    def _payload(dwords, position: int, count: int, where: int) -> tuple[int, ...]:
        if position + 1 + count > len(dwords):
            raise CPFault("overrun", f"packet at {where:#x} wants {count} dwords; the IB ends after "
                                     f"{len(dwords) - position - 1}", where)
        return tuple(dwords[position + 1:position + 1 + count])

    def _type7(self, space: GPUAddressSpace, opcode: int, payload: tuple[int, ...], where: int,
               level: int) -> None:
        if opcode in (pm4.CP_NOP, pm4.CP_WAIT_FOR_IDLE, pm4.CP_WAIT_MEM_WRITES):
            # this CP runs each packet to completion before the next: idle already
            return
        if opcode == pm4.CP_MEM_WRITE:
            self._need(opcode, payload, 3, where)
            address = payload[0] | payload[1] << 32
            space.write(address, struct.pack(f"<{len(payload) - 2}I", *payload[2:]))
            return
        if opcode == pm4.CP_EVENT_WRITE:
            self._need(opcode, payload, 1, where)
            event = pm4.CP_EVENT_WRITE_0.field("EVENT").decode(payload[0])
            self.events.append(event)
            if event in TIMESTAMP_EVENTS:
                self._need(opcode, payload, 4, where)
                address = payload[1] | payload[2] << 32
                space.write(address, struct.pack("<I", payload[3]))
            return
        if opcode == pm4.CP_MEMCPY:
            self._need(opcode, payload, 5, where)
            count = payload[0]
            source = payload[1] | payload[2] << 32
            destination = payload[3] | payload[4] << 32
            space.write(destination, space.read(source, count * DWORD))
            return
        if opcode == pm4.CP_INDIRECT_BUFFER:
            self._need(opcode, payload, 3, where)
            if level >= MAX_IB_LEVEL:
                raise CPFault("opcode", f"CP_INDIRECT_BUFFER at {where:#x} inside IB{level}: the CP "
                                        f"nests IBs {MAX_IB_LEVEL} deep", where)
            address = payload[0] | payload[1] << 32
            size_dwords = payload[2] & MAX_IB_DWORDS
            self.execute(space, address, size_dwords * DWORD, level + 1)
            return
        if opcode == pm4.CP_WAIT_REG_MEM:
            self._wait_reg_mem(space, payload, where)
            return
        if opcode == pm4.CP_REG_TO_MEM:
            self._need(opcode, payload, 3, where)
            fields = pm4.CP_REG_TO_MEM_0.decode(payload[0])
            address = payload[1] | payload[2] << 32
            # adreno_pm4.xml CP_REG_TO_MEM: CNT registers from REG; 64B stores a register pair
            count = max(fields["CNT"], 2 if fields["64B"] else 1)
            values = [self.read_register(fields["REG"] + index) for index in range(count)]
            space.write(address, struct.pack(f"<{len(values)}I", *values))
            return
        if opcode in (pm4.CP_LOAD_STATE6_FRAG, pm4.CP_LOAD_STATE6_GEOM, pm4.CP_LOAD_STATE6):
            self._load_state6(space, opcode, payload, where)
            return
        if opcode == pm4.CP_SET_MARKER:
            # adreno_pm4.xml CP_SET_MARKER: a render-mode hint for the CP's preemption; no state here
            return
        if opcode == pm4.CP_EXEC_CS:
            self._need(opcode, payload, 4, where)
            groups = tuple(payload[1:4])
            compute.exec_cs(self, space, groups, where)
            return
        name = pm4.ENUMS.get("adreno_pm4_type3_packets", {})
        names = [key for key, value in name.items() if value == opcode]
        raise UnsupportedPacket(f"type-7 packet {names[0] if names else hex(opcode)} at {where:#x} "
                                "is not modelled by the mock CP")

    def _load_state6(self, space: GPUAddressSpace, opcode: int, payload: tuple[int, ...],
                     where: int) -> None:
        """CP_LOAD_STATE6_* (adreno_pm4.xml): the compute block's shader and constants."""
        self._need(opcode, payload, 3, where)
        compute.load_state6(self, space, payload, where)

    def read_register(self, offset: int) -> int:
        """A register as the CP reads it: the always-on counter counts, the rest hold what was
        written (0 before)."""
        if offset in (ALWAYS_ON_COUNTER, ALWAYS_ON_COUNTER + 1):
            ticks = int((time.monotonic() - self.started) * ALWAYS_ON_HZ)
            return ticks & 0xFFFFFFFF if offset == ALWAYS_ON_COUNTER else ticks >> 32
        return self.registers.get(offset, 0)

    def _wait_reg_mem(self, space: GPUAddressSpace, payload: tuple[int, ...], where: int) -> None:
        """CP_WAIT_REG_MEM on memory (adreno_pm4.xml): stall until (*POLL_ADDR & MASK) compares
        true against REF with FUNCTION."""
        self._need(pm4.CP_WAIT_REG_MEM, payload, 5, where)
        fields = pm4.CP_WAIT_REG_MEM_0.decode(payload[0])
        if fields["POLL"] != POLL_MEMORY:
            raise UnsupportedPacket(f"CP_WAIT_REG_MEM at {where:#x} polls a register or scratch; "
                                    "the mock CP polls memory only")
        address = payload[1] | payload[2] << 32
        reference = payload[3]
        mask = payload[4]
        value = struct.unpack("<I", space.read(address, 4))[0] & mask
        if fields["SIGNED_COMPARE"]:
            value = _signed32(value)
            reference = _signed32(reference)
        function = fields["FUNCTION"]
        met = {
            _CONDITIONS["WRITE_ALWAYS"]: True,
            _CONDITIONS["WRITE_LT"]: value < reference,
            _CONDITIONS["WRITE_LE"]: value <= reference,
            _CONDITIONS["WRITE_EQ"]: value == reference,
            _CONDITIONS["WRITE_NE"]: value != reference,
            _CONDITIONS["WRITE_GE"]: value >= reference,
            _CONDITIONS["WRITE_GT"]: value > reference,
        }.get(function)
        if met is None:
            raise CPFault("opcode", f"CP_WAIT_REG_MEM at {where:#x}: compare function {function}", where)
        if not met:
            raise Stalled(f"CP_WAIT_REG_MEM at {where:#x} waits for the dword at {address:#x} "
                          f"(now {value:#x}) against {reference:#x} (function {function})")

    @staticmethod
    def _need(opcode: int, payload: tuple[int, ...], count: int, where: int) -> None:
        if len(payload) < count:
            raise CPFault("opcode", f"type-7 opcode {opcode:#x} at {where:#x} carries {len(payload)} "
                                    f"dwords; it needs {count}", where)


def _signed32(value: int) -> int:
    return value - (1 << 32) if value & 0x80000000 else value
