"""The driver's register accessor: generated register names and their base index, never raw offsets.

`Registers(mmio, blocks)` resolves `reg("GC", "regSCRATCH_REG0")` once into a `BoundRegister` that
holds its byte address in the register BAR: (discovered base of the register's segment + the
header's dword offset) * 4, as amdgpu's SOC15_REG_OFFSET and RREG32 compute it
(drivers/gpu/drm/amd/amdgpu/soc15_common.h, amdgpu_device.c amdgpu_device_rreg). Hot paths keep
the BoundRegister (no dict lookups per access). Registers past the end of the BAR go through NBIO's
PCIE index/data pair, as amdgpu_device_rreg hands them to adev->pcie_rreg: on soc21 that is
amdgpu_device_indirect_rreg (soc21.c soc21_common_early_init), whose pair NBIO 4.3 names
RSMU_INDEX/RSMU_DATA (nbio_v4_3.c nbio_v4_3_get_pcie_index_offset / _get_pcie_data_offset): the
register's byte address (an SMN address) goes to the index, the index is read back to post it, then
the data register moves the value. `smn_read`/`smn_write` reach any SMN address the same way.
VRAM past BAR0 still goes through MM_INDEX/MM_INDEX_HI/MM_DATA (`VRAMWindow`), as
amdgpu_device_mm_access does.

Reads go through hal's watched BAR Region, so a read of all ones asks PCIDevice.check_alive, which
raises DeviceLost when the device fell off the bus.

Before discovery, amdgpu reaches a few registers at fixed addresses (amdgpu_discovery.c:
mmRCC_CONFIG_MEMSIZE 0xde3, mmMM_INDEX 0x0, mmMM_DATA 0x1, mmMM_INDEX_HI 0x6, mmMP0_SMN_C2PMSG_33
0x16061): these are the NBIO and MP0 registers of the same names at the bases in
`PRE_DISCOVERY_BLOCKS`.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from autogen.amd import regs as amd_regs
from autogen.amd.regs import nbio_4_3_0
from autogen.regs import Field, Register
from hal.errors import InvalidArgument
from hal.region import Region

REGISTER_BYTES = 4
WORD_MASK = 0xFFFFFFFF
Blocks = Mapping[str, tuple[tuple[int, int, int], tuple[tuple[int, ...], ...]]]

# the fixed addresses amdgpu_discovery.c uses before the table is read, as base segments of the
# blocks whose registers they are: NBIO segment 0 (mmMM_INDEX 0x0 = 0x0 + regBIF_BX_PF0_MM_INDEX),
# segment 2 (mmRCC_CONFIG_MEMSIZE 0xde3 = 0xd20 + regRCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE 0xc3) and
# MP0 segment 0 (mmMP0_SMN_C2PMSG_33 0x16061 = 0x16000 + regMP0_SMN_C2PMSG_33 0x61); segment 1 of
# NBIO is unused before discovery (sienna_cichlid_ip_offset.h NBIO_BASE gives 0x14)
PRE_DISCOVERY_BLOCKS: dict[str, tuple[tuple[int, int, int], tuple[tuple[int, ...], ...]]] = {
    "NBIO": ((4, 3, 0), ((0x0, 0x14, 0xD20),)),
    "MP0": ((13, 0, 0), ((0x16000,),)),
}


class BoundRegister:
    """One register of one IP instance, bound to its address: read(), write(), update(), fields."""

    __slots__ = ("definition", "block", "instance", "address", "_read", "_write")

    def __init__(self, definition: Register, block: str, instance: int, address: int, read, write) -> None:
        self.definition = definition
        self.block = block
        self.instance = instance
        self.address = address
        self._read = read
        self._write = write

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def fields(self) -> Mapping[str, Field]:
        return self.definition.fields

    def read(self) -> int:
        return self._read(self.address)

    def write(self, value: int) -> None:
        self._write(self.address, value & WORD_MASK)

    def write_fields(self, **values: int) -> int:
        """Write the named fields, every other bit zero; returns the value written."""
        value = self.definition.encode(**values)
        self._write(self.address, value)
        return value

    def update(self, **values: int) -> int:
        """Read-modify-write: replace the named fields, keep the other bits; returns the new value."""
        value = self.definition.update(self._read(self.address), **values)
        self._write(self.address, value)
        return value

    def read_field(self, name: str) -> int:
        return self.definition.field(name).decode(self._read(self.address))

    def decode(self, value: int | None = None) -> dict[str, int]:
        """Every field of `value` (default: a fresh read)."""
        if value is None:
            value = self._read(self.address)
        return self.definition.decode(value)

    def __repr__(self) -> str:
        return f"<{self.block}[{self.instance}] {self.name} @ {self.address:#x}>"


class Registers:
    """Register lookup by (block, name, instance) over the discovered bases of `blocks`."""

    def __init__(self, mmio: Region, blocks: Blocks) -> None:
        self.mmio = mmio
        self.blocks: Mapping[str, tuple[tuple[int, int, int], tuple[tuple[int, ...], ...]]] = \
            MappingProxyType(dict(blocks))
        self._bound: dict[tuple[str, str, int], BoundRegister] = {}
        self._pcie_index: int | None = None
        self._pcie_data: int | None = None

    def module(self, block: str):
        """The generated register module of `block` at its discovered version."""
        if block not in self.blocks:
            raise InvalidArgument(f"no {block} block was discovered (have {', '.join(self.blocks)})")
        version, _ = self.blocks[block]
        try:
            return amd_regs.load(block, version)
        except LookupError as exc:
            raise InvalidArgument(str(exc)) from None

    def address(self, block: str, name: str, instance: int = 0) -> int:
        """Byte address of a register in the register space (SOC15_REG_OFFSET * 4)."""
        definition = self.module(block).get(name)
        return self._address(block, definition, instance)

    def _address(self, block: str, definition: Register, instance: int) -> int:
        _, instances = self.blocks[block]
        if not 0 <= instance < len(instances) or not instances[instance]:
            raise InvalidArgument(f"{block} has no instance {instance} (the table lists {len(instances)})")
        segments = instances[instance]
        if definition.base_idx is None:
            raise InvalidArgument(f"{block} {definition.name} has no base index: "
                                  "not a register in MMIO space")
        if definition.base_idx >= len(segments):
            raise InvalidArgument(f"{block} {definition.name} is in segment {definition.base_idx}, but "
                                  f"{block}[{instance}] has {len(segments)} base segments")
        return (segments[definition.base_idx] + definition.offset) * REGISTER_BYTES

    def reg(self, block: str, name: str, instance: int = 0) -> BoundRegister:
        """The register `name` ("regGRBM_STATUS") of `block` ("GC") instance `instance`, bound once."""
        key = (block, name, instance)
        bound = self._bound.get(key)
        if bound is not None:
            return bound
        definition = self.module(block).get(name)
        address = self._address(block, definition, instance)
        if address + REGISTER_BYTES <= self.mmio.size:
            bound = BoundRegister(definition, block, instance, address, self.mmio.read32, self.mmio.write32)
        else:
            bound = BoundRegister(definition, block, instance, address, self._indirect_read,
                                  self._indirect_write)
        self._bound[key] = bound
        return bound

    # -- registers past the BAR and SMN addresses: the PCIE index/data pair (RSMU_INDEX/_DATA) -------
    def _window(self) -> tuple[int, int]:
        if self._pcie_index is None:
            self._pcie_index = self._address("NBIO", nbio_4_3_0.regBIF_BX_PF0_RSMU_INDEX, 0)
            self._pcie_data = self._address("NBIO", nbio_4_3_0.regBIF_BX_PF0_RSMU_DATA, 0)
        return self._pcie_index, self._pcie_data

    def smn_read(self, address: int) -> int:
        """amdgpu_device_indirect_rreg: the SMN address to the index, the index read back (posting
        it), then the data register. Register byte addresses are SMN addresses."""
        if not 0 <= address <= WORD_MASK:
            raise InvalidArgument(f"SMN address {address:#x} does not fit the 32-bit PCIE index "
                                  "(amdgpu_device_indirect_rreg_ext's PCIE_INDEX_HI is not used here)")
        index, data = self._window()
        self.mmio.write32(index, address)
        self.mmio.read32(index)
        return self.mmio.read32(data)

    def smn_write(self, address: int, value: int) -> None:
        """amdgpu_device_indirect_wreg: index, index read back, data, data read back."""
        if not 0 <= address <= WORD_MASK:
            raise InvalidArgument(f"SMN address {address:#x} does not fit the 32-bit PCIE index")
        index, data = self._window()
        self.mmio.write32(index, address)
        self.mmio.read32(index)
        self.mmio.write32(data, value & WORD_MASK)
        self.mmio.read32(data)

    def _indirect_read(self, address: int) -> int:
        return self.smn_read(address)

    def _indirect_write(self, address: int, value: int) -> None:
        self.smn_write(address, value)


class VRAMWindow:
    """Reads and writes of VRAM through BAR0 where it reaches, else through MM_INDEX/MM_DATA with
    the aperture bit set (amdgpu_device.c amdgpu_device_vram_access / amdgpu_device_mm_access)."""

    def __init__(self, vram_bar: Region, registers: Registers) -> None:
        self.bar = vram_bar
        index_register = registers.reg("NBIO", "regBIF_BX_PF0_MM_INDEX")
        self._index = index_register
        self._index_hi = registers.reg("NBIO", "regBIF_BX_PF0_MM_INDEX_HI")
        self._data = registers.reg("NBIO", "regBIF_BX_PF0_MM_DATA")
        offset_field = index_register.definition.field("MM_OFFSET")
        self._offset_mask = offset_field.mask
        self._high_shift = index_register.definition.field("MM_APER").shift
        self._aperture = index_register.definition.encode(MM_APER=1)

    def read(self, offset: int, size: int) -> bytes:
        if offset + size <= self.bar.size:
            return self.bar.read(offset, size)
        if offset % REGISTER_BYTES or size % REGISTER_BYTES:
            raise InvalidArgument(f"VRAM [{offset:#x}, +{size:#x}) is past BAR0 ({self.bar.size:#x} bytes): "
                                  "the MM_INDEX window moves whole dwords only")
        out = bytearray()
        high = None
        index_write = self._index.write
        data_read = self._data.read
        for address in range(offset, offset + size, REGISTER_BYTES):
            if address >> self._high_shift != high:
                high = address >> self._high_shift
                self._index_hi.write(high)
            index_write(self._aperture | (address & self._offset_mask))
            out += data_read().to_bytes(REGISTER_BYTES, "little")
        return bytes(out)

    def write(self, offset: int, data: bytes) -> None:
        if offset + len(data) <= self.bar.size:
            self.bar.write(offset, data)
            return
        if offset % REGISTER_BYTES or len(data) % REGISTER_BYTES:
            raise InvalidArgument(f"VRAM [{offset:#x}, +{len(data):#x}) is past BAR0: whole dwords only")
        high = None
        for start in range(0, len(data), REGISTER_BYTES):
            address = offset + start
            if address >> self._high_shift != high:
                high = address >> self._high_shift
                self._index_hi.write(high)
            self._index.write(self._aperture | (address & self._offset_mask))
            self._data.write(int.from_bytes(data[start:start + REGISTER_BYTES], "little"))
