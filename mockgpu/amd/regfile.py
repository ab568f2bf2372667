"""The MMIO register file of the mock AMD GPU, keyed by the generated register definitions.

Addresses are bytes in the GPU's register space. A register `reg` of IP block `ip` (instance `i`)
lives at `(base[ip][i][reg.base_idx] + reg.offset) * 4`: amdgpu's SOC15_REG_OFFSET
(drivers/gpu/drm/amd/amdgpu/soc15_common.h) adds the discovered base of the register's segment to
its dword offset, and RREG32 multiplies by 4 (amdgpu_device.c: amdgpu_device_rreg). The first
`direct_size` bytes are what BAR5 shows; registers above are reached through the indirect window
(MM_INDEX/MM_DATA with the aperture bit clear), so they are kept sparsely.

Registers no model owns read back what was written (zero at power-on, unless the model sets a
power-on value). A model owns a register with `own(ip, name, read=, write=)`: its read hook
returns the value, its write hook receives it (and stores it or not). In strict mode every access to
a register no model owns is recorded in `unowned` (name and address), so tests and fuzzers can list
what a driver touched that the mock does not model.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from autogen.amd import regs as amd_regs
from autogen.regs import Register

REGISTER_BYTES = 4
WORD_MASK = 0xFFFFFFFF
ReadHook = Callable[[], int]
WriteHook = Callable[[int], None]


@dataclasses.dataclass(frozen=True)
class Access:
    """One access strict mode recorded: 'read' or 'write', the byte address and register name."""

    kind: str
    address: int
    name: str
    value: int | None = None


class UnknownBlock(KeyError):
    """A register asked for by an IP block the register file has no base for."""


class RegisterFile:
    """32-bit registers by byte address, with hooks per owned register and an optional strict mode.

    `blocks` maps an IP block name ("GC", "NBIO", ...) to (version, per-instance base segments).
    `storage` is the bytearray behind the directly mapped part (BAR5); tests may poke it.
    """

    def __init__(self, direct_size: int,
                 blocks: dict[str, tuple[tuple[int, int, int], tuple[tuple[int, ...], ...]]]) -> None:
        self.direct_size = direct_size
        self.storage = bytearray(direct_size)
        self._words = memoryview(self.storage).cast("I")
        self._sparse: dict[int, int] = {}
        self.blocks = dict(blocks)
        self._reads: dict[int, ReadHook] = {}
        self._writes: dict[int, WriteHook] = {}
        self._owners: dict[int, str] = {}
        self.strict = False
        self.unowned: list[Access] = []
        self._names: dict[int, str] | None = None

    # -- layout --------------------------------------------------------------------------------
    def register(self, ip: str, name: str) -> Register:
        """The generated definition of register `name` of block `ip`, at the block's version."""
        if ip not in self.blocks:
            raise UnknownBlock(f"no IP block {ip} in this register file (have {', '.join(self.blocks)})")
        version, _ = self.blocks[ip]
        return amd_regs.load(ip, version).get(name)

    def address(self, ip: str, name: str, instance: int = 0) -> int:
        """Byte address of register `name` of `ip` instance `instance` (SOC15_REG_OFFSET * 4)."""
        register = self.register(ip, name)
        _, instances = self.blocks[ip]
        segments = instances[instance]
        if register.base_idx is None or register.base_idx >= len(segments):
            raise UnknownBlock(f"{ip} {name}: base index {register.base_idx} is not among the "
                               f"{len(segments)} segments of {ip} instance {instance}")
        return (segments[register.base_idx] + register.offset) * REGISTER_BYTES

    def own(self, ip: str, name: str, read: ReadHook | None = None, write: WriteHook | None = None,
            instance: int = 0) -> int:
        """Give a model register `name`: reads call `read()`, writes call `write(value)`."""
        address = self.address(ip, name, instance)
        if read is not None:
            self._reads[address] = read
        if write is not None:
            self._writes[address] = write
        self._owners[address] = name
        return address

    def owned(self, address: int) -> bool:
        return address in self._owners

    # -- raw storage ----------------------------------------------------------------------------
    def peek(self, address: int) -> int:
        """The stored value at `address`, bypassing hooks (what an unowned register holds)."""
        if address < self.direct_size:
            return self._words[address >> 2]
        return self._sparse.get(address, 0)

    def poke(self, address: int, value: int) -> None:
        """Store `value` at `address`, bypassing hooks (power-on values, model state)."""
        value &= WORD_MASK
        if address < self.direct_size:
            self._words[address >> 2] = value
        else:
            self._sparse[address] = value

    def set(self, ip: str, name: str, value: int, instance: int = 0) -> None:
        """Store a value in a register by name, bypassing hooks."""
        self.poke(self.address(ip, name, instance), value)

    def get(self, ip: str, name: str, instance: int = 0) -> int:
        """The stored value of a register by name, bypassing hooks."""
        return self.peek(self.address(ip, name, instance))

    def clear(self) -> None:
        """Every register back to zero (hooks stay)."""
        self.storage[:] = bytes(self.direct_size)
        self._sparse.clear()

    # -- accesses -------------------------------------------------------------------------------
    def read32(self, address: int) -> int:
        hook = self._reads.get(address)
        if hook is not None:
            return hook() & WORD_MASK
        if self.strict and address not in self._owners:
            self.unowned.append(Access("read", address, self.name_of(address)))
        return self.peek(address)

    def write32(self, address: int, value: int) -> None:
        value &= WORD_MASK
        hook = self._writes.get(address)
        if hook is not None:
            hook(value)
            return
        if self.strict and address not in self._owners:
            self.unowned.append(Access("write", address, self.name_of(address), value))
        self.poke(address, value)

    def read(self, address: int, n: int) -> bytes:
        """Bytes [address, address+n): whole aligned dwords go through read32, the rest is storage."""
        if address % REGISTER_BYTES == 0 and n % REGISTER_BYTES == 0:
            out = bytearray()
            for word in range(address, address + n, REGISTER_BYTES):
                out += self.read32(word).to_bytes(REGISTER_BYTES, "little")
            return bytes(out)
        return bytes(self.storage[address:address + n])

    def write(self, address: int, data: bytes) -> None:
        if address % REGISTER_BYTES == 0 and len(data) % REGISTER_BYTES == 0:
            for index in range(0, len(data), REGISTER_BYTES):
                word = int.from_bytes(data[index:index + REGISTER_BYTES], "little")
                self.write32(address + index, word)
            return
        self.storage[address:address + len(data)] = data

    # -- names ----------------------------------------------------------------------------------
    def name_of(self, address: int) -> str:
        """'IP regNAME' of the register at `address` ('' when no generated register sits there).

        Several blocks can share an address (SDMA registers live in GC's header, MP0 and MP1 share
        one): the first block listed wins."""
        if self._names is None:
            self._names = self._build_names()
        return self._names.get(address, "")

    def _build_names(self) -> dict[int, str]:
        names: dict[int, str] = {}
        for ip, (version, instances) in self.blocks.items():
            try:
                module = amd_regs.load(ip, version)
            except LookupError:
                continue
            for instance, segments in enumerate(instances):
                suffix = f"[{instance}]" if len(instances) > 1 else ""
                for register in _registers(module):
                    if register.base_idx is None or register.base_idx >= len(segments):
                        continue
                    address = (segments[register.base_idx] + register.offset) * REGISTER_BYTES
                    names.setdefault(address, f"{ip}{suffix} {register.name}")
        return names


def _registers(module) -> list[Register]:
    """Every register of a generated module (decoded on demand by the module's table)."""
    return [module.get(name) for name in module.names()]
