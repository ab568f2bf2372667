"""The page tables drivers.vm builds, walked by the mock GMC (mockgpu.amd.gmc), which was written
separately from the hardware documentation: a belief about the GFX11 format that only one side
holds shows up here. The GMC's fragment TLB is on, so a fragment field that claims too much gives
a wrong translation; the builder's invalidate hook flushes it through the real request/ack
registers."""
from __future__ import annotations

import random

import pytest

from autogen.amd.regs import gc_11_0_0
from drivers.vm import amd_gfx11
from drivers.vm.amd_gfx11 import GFX11
from drivers.vm.pagetable import PageFlags, PageTable, READ_WRITE, RegionTableMemory
from drivers.vm.tlsf import TLSFAllocator
from hal.region import MemoryRegion
from mockgpu.amd.gmc import GFX_HUB, GMC, Access, GPUVMFault, StandaloneRegisters

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
VRAM_SIZE = 16 * MIB  # page tables only: translation does not touch the data pages
VMID = 1
ENGINE = 0


class NoHost:
    """No system memory behind the GPU: tables stay in VRAM, system pages are only translated."""

    def dma_read(self, address: int, n: int) -> bytes | None:
        return None

    def dma_write(self, address: int, data: bytes) -> bool:
        return False


class Rig:
    """A GMC whose VMID 1 context points at a PageTable in the same VRAM."""

    def __init__(self) -> None:
        self.vram = bytearray(VRAM_SIZE)
        self.regs = StandaloneRegisters()
        self.gmc = GMC(self.regs, memoryview(self.vram), NoHost())
        self.regs.gmc = self.gmc
        memory = RegionTableMemory(MemoryRegion(self.vram), TLSFAllocator(0, VRAM_SIZE))
        self.table = PageTable(GFX11, memory, on_invalidate=self.invalidate)
        self.set("GCMC_VM_MX_L1_TLB_CNTL", ENABLE_L1_TLB=1)
        self.set(f"GCVM_CONTEXT{VMID}_CNTL", ENABLE_CONTEXT=1,
                 PAGE_TABLE_DEPTH=amd_gfx11.PAGE_TABLE_DEPTH,
                 PAGE_TABLE_BLOCK_SIZE=amd_gfx11.PAGE_TABLE_BLOCK_SIZE)
        base = GFX11.root_base(self.table.root_address)
        self.write(f"GCVM_CONTEXT{VMID}_PAGE_TABLE_BASE_ADDR_LO32", base & 0xFFFFFFFF)
        self.write(f"GCVM_CONTEXT{VMID}_PAGE_TABLE_BASE_ADDR_HI32", base >> 32)
        last_page = (1 << (GFX11.va_bits - amd_gfx11.PAGE_SHIFT)) - 1
        self.write(f"GCVM_CONTEXT{VMID}_PAGE_TABLE_END_ADDR_LO32", last_page & 0xFFFFFFFF)
        self.write(f"GCVM_CONTEXT{VMID}_PAGE_TABLE_END_ADDR_HI32", last_page >> 32)

    def write(self, name: str, value: int) -> None:
        self.regs.write(GFX_HUB, gc_11_0_0.get(f"reg{name}").name, value)

    def set(self, name: str, **fields: int) -> None:
        register = gc_11_0_0.get(f"reg{name}")
        self.regs.write(GFX_HUB, register.name, register.encode(**fields))

    def invalidate(self, va: int, size: int) -> None:
        request = gc_11_0_0.get(f"regGCVM_INVALIDATE_ENG{ENGINE}_REQ")
        self.regs.write(GFX_HUB, request.name, request.encode(
            PER_VMID_INVALIDATE_REQ=1 << VMID, INVALIDATE_L2_PTES=1, INVALIDATE_L2_PDE0=1,
            INVALIDATE_L2_PDE1=1, INVALIDATE_L2_PDE2=1, INVALIDATE_L1_PTES=1))
        ack = gc_11_0_0.get(f"regGCVM_INVALIDATE_ENG{ENGINE}_ACK")
        value = self.regs.read(GFX_HUB, ack.name)
        assert ack.decode(value)["PER_VMID_INVALIDATE_ACK"] & (1 << VMID)

    def translate(self, va: int, access: Access = Access.READ):
        return self.gmc.translate(GFX_HUB, VMID, va, access)


def _expect(rig: Rig, expected: dict[int, tuple[int, bool]], probes: list[int]) -> None:
    for va in probes:
        page = va & ~(4 * KIB - 1)
        if page not in expected:
            with pytest.raises(GPUVMFault):
                rig.translate(va)
            continue
        address, system = expected[page]
        found = rig.translate(va)
        assert (found.address, found.system) == (address + va % (4 * KIB), system), hex(va)


def test_mock_gmc_translates_huge_pages_fragments_and_page_lists_as_built():
    rig = Rig()
    expected: dict[int, tuple[int, bool]] = {}
    probes: list[int] = []
    rng = random.Random(7)

    def mapped(va: int, pages: list[int], system: bool) -> None:
        for index, address in enumerate(pages):
            expected[va + index * 4 * KIB] = (address, system)
        size = len(pages) * 4 * KIB
        probes.extend([va, va + size - 4 * KIB, va + size - 1, va + size])
        probes.extend(va + rng.randrange(size) for _ in range(40))

    # 1 GiB leaves, 2 MiB leaves around them, 4 KiB pages at the unaligned ends
    va = 3 * GIB - 2 * MIB - 12 * KIB
    size = 12 * KIB + 2 * MIB + 2 * GIB + 2 * MIB + 20 * KIB
    rig.table.map(va, va + 64 * GIB, size)
    mapped(va, list(range(va + 64 * GIB, va + 64 * GIB + size, 4 * KIB)), False)
    # physically misaligned by 64 KiB: 4 KiB PTEs in 16-page fragments
    rig.table.map(16 * GIB, 64 * KIB, 4 * MIB, READ_WRITE | PageFlags.EXECUTE)
    mapped(16 * GIB, list(range(64 * KIB, 64 * KIB + 4 * MIB, 4 * KIB)), False)
    # a DMA buffer's pages: stretches of contiguous bus addresses and strays
    pages = [0x7_0000_0000 + index * 4 * KIB for index in range(700)]
    pages[5] = 0x1234_5000
    pages[300:310] = [0x9_0000_0000 + index * 4 * KIB for index in range(10)]
    rig.table.map_pages(32 * GIB, pages)
    mapped(32 * GIB, pages, True)
    _expect(rig, expected, probes)

    # punch holes: through a 1 GiB leaf, a fragment, a page list; the TLB must not keep them
    for hole_va, hole_size in ((3 * GIB + 4 * MIB, 12 * KIB), (16 * GIB + 256 * KIB, 4 * KIB),
                               (32 * GIB + 8 * KIB, 64 * KIB)):
        rig.table.unmap(hole_va, hole_size)
        for page in range(hole_va, hole_va + hole_size, 4 * KIB):
            del expected[page]
        probes.extend([hole_va - 1, hole_va, hole_va + hole_size - 1, hole_va + hole_size])
    _expect(rig, expected, probes)


def test_mock_gmc_honours_the_access_bits_the_format_writes():
    rig = Rig()
    rig.table.map(GIB, 0, 2 * MIB, PageFlags.READ)
    assert rig.translate(GIB + 4 * KIB).address == 4 * KIB
    with pytest.raises(GPUVMFault):
        rig.translate(GIB, Access.WRITE)
    with pytest.raises(GPUVMFault):
        rig.translate(GIB, Access.EXECUTE)
