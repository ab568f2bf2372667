"""The mock GMC: page tables built by hand in VRAM, walked as the hardware walks them.

The tables here are written with bit constants taken from the kernel header in this file (not the
model's), so a wrong belief about the format in either shows up as a failure.
"""
from __future__ import annotations

import pytest
from mockgpu_helpers import bind_to_vfio, open_vfio

from autogen.amd.regs import gc_11_0_0, mmhub_3_0_0
from mockgpu import GPU_AUDIO_BDF, GPU_BDF, Machine
from mockgpu.amd.gmc import (GFX_HUB, GMC, MM_HUB, Access, FaultKind, GPUBusError, GPUVMFault,
                             StandaloneRegisters)

# drivers/gpu/drm/amd/amdgpu/amdgpu_vm.h
AMDGPU_PTE_VALID = 1 << 0
AMDGPU_PTE_SYSTEM = 1 << 1
AMDGPU_PTE_EXECUTABLE = 1 << 4
AMDGPU_PTE_READABLE = 1 << 5
AMDGPU_PTE_WRITEABLE = 1 << 6
AMDGPU_PDE_PTE = 1 << 54


def amdgpu_pte_frag(x: int) -> int:
    return (x & 0x1F) << 7  # amdgpu_vm.h: AMDGPU_PTE_FRAG(x)


RW = AMDGPU_PTE_VALID | AMDGPU_PTE_READABLE | AMDGPU_PTE_WRITEABLE
KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
VRAM_SIZE = 8 * MIB
TABLES_AT = 4 * MIB  # page tables in the upper half of the test VRAM, data in the lower half
VMID = 3
CLIENT = 0x1B  # an arbitrary UTCL2 client id for the fault status


class NoHost:
    """A host port that refuses every request (no system memory in these tests)."""

    def dma_read(self, address: int, n: int) -> bytes | None:
        return None

    def dma_write(self, address: int, data: bytes) -> bool:
        return False


class Setup:
    """A GMC over a small VRAM, and a four-level table for VMID 3 on the GFX hub."""

    def __init__(self, host=None, hub: str = GFX_HUB) -> None:
        self.vram = bytearray(VRAM_SIZE)
        self.regs = StandaloneRegisters()
        self.gmc = GMC(self.regs, memoryview(self.vram), host or NoHost())
        self.regs.gmc = self.gmc
        self.hub = hub
        self.module = gc_11_0_0 if hub == GFX_HUB else mmhub_3_0_0
        self.prefix = "regGC" if hub == GFX_HUB else "regMM"
        self.next_table = TABLES_AT
        self.root = self.new_table()
        self.set("MC_VM_MX_L1_TLB_CNTL", ENABLE_L1_TLB=1)
        # gfxhub_v3_0.c setup_vmid_config: depth 3 (num_level), block size 9 - 9, interrupts on
        self.set(f"VM_CONTEXT{VMID}_CNTL", ENABLE_CONTEXT=1, PAGE_TABLE_DEPTH=3,
                 PAGE_TABLE_BLOCK_SIZE=0, RANGE_PROTECTION_FAULT_ENABLE_INTERRUPT=1,
                 PDE0_PROTECTION_FAULT_ENABLE_INTERRUPT=1, VALID_PROTECTION_FAULT_ENABLE_INTERRUPT=1,
                 WRITE_PROTECTION_FAULT_ENABLE_INTERRUPT=1)
        self.set_base(VMID, self.root | AMDGPU_PTE_VALID)
        self.set_range(VMID, 0, (1 << 36) - 1)

    def name(self, short: str) -> str:
        return self.module.get(self.prefix + short).name

    def set(self, short: str, **fields: int) -> None:
        register = self.module.get(self.prefix + short)
        self.regs.write(self.hub, register.name, register.encode(**fields))

    def write_raw(self, short: str, value: int) -> None:
        self.regs.write(self.hub, self.name(short), value)

    def read_raw(self, short: str) -> int:
        return self.regs.read(self.hub, self.name(short))

    def set_base(self, vmid: int, pde: int) -> None:
        self.write_raw(f"VM_CONTEXT{vmid}_PAGE_TABLE_BASE_ADDR_LO32", pde & 0xFFFFFFFF)
        self.write_raw(f"VM_CONTEXT{vmid}_PAGE_TABLE_BASE_ADDR_HI32", pde >> 32)

    def set_range(self, vmid: int, start_page: int, end_page: int) -> None:
        self.write_raw(f"VM_CONTEXT{vmid}_PAGE_TABLE_START_ADDR_LO32", start_page & 0xFFFFFFFF)
        self.write_raw(f"VM_CONTEXT{vmid}_PAGE_TABLE_START_ADDR_HI32", start_page >> 32)
        self.write_raw(f"VM_CONTEXT{vmid}_PAGE_TABLE_END_ADDR_LO32", end_page & 0xFFFFFFFF)
        self.write_raw(f"VM_CONTEXT{vmid}_PAGE_TABLE_END_ADDR_HI32", end_page >> 32)

    def new_table(self) -> int:
        address = self.next_table
        self.next_table += 4 * KIB
        return address

    def entry(self, table: int, index: int) -> int:
        at = table + index * 8
        return int.from_bytes(self.vram[at:at + 8], "little")

    def put(self, table: int, index: int, value: int) -> None:
        at = table + index * 8
        self.vram[at:at + 8] = value.to_bytes(8, "little")

    def directory(self, va: int, levels: int) -> int:
        """The table `levels` below the root for `va`, created on the way (PDB2 -> PDB1 -> PDB0)."""
        table = self.root
        for level in range(levels):
            shift = 39 - 9 * level  # amdgpu_vm_pt.c level shifts with a 9-bit block: 39, 30, 21
            index = (va >> shift) & 511
            entry = self.entry(table, index)
            if not entry & AMDGPU_PTE_VALID:
                child = self.new_table()
                self.put(table, index, child | AMDGPU_PTE_VALID)
                entry = child | AMDGPU_PTE_VALID
            table = entry & 0x0000FFFFFFFFF000
        return table

    def map_4k(self, va: int, address: int, flags: int) -> None:
        self.put(self.directory(va, 3), (va >> 12) & 511, address | flags)

    def map_2m(self, va: int, address: int, flags: int) -> None:
        self.put(self.directory(va, 2), (va >> 21) & 511, address | flags | AMDGPU_PDE_PTE)

    def map_1g(self, va: int, address: int, flags: int) -> None:
        self.put(self.directory(va, 1), (va >> 30) & 511, address | flags | AMDGPU_PDE_PTE)

    def invalidate(self, vmid: int, engine: int = 17) -> None:
        """gmc_v11_0.c gmc_v11_0_flush_gpu_tlb with mmhub_v3_0_get_invalidate_req's request."""
        assert self.read_raw(f"VM_INVALIDATE_ENG{engine}_SEM") & 1
        self.set(f"VM_INVALIDATE_ENG{engine}_REQ", PER_VMID_INVALIDATE_REQ=1 << vmid,
                 INVALIDATE_L2_PTES=1, INVALIDATE_L2_PDE0=1, INVALIDATE_L2_PDE1=1,
                 INVALIDATE_L2_PDE2=1, INVALIDATE_L1_PTES=1)
        assert self.read_raw(f"VM_INVALIDATE_ENG{engine}_ACK") & (1 << vmid)
        self.write_raw(f"VM_INVALIDATE_ENG{engine}_SEM", 0)


def test_4k_page_reads_and_writes_vram() -> None:
    s = Setup()
    va = 0x1234_5678_9000
    s.map_4k(va, 0x3000, RW)
    s.vram[0x3010:0x3014] = b"gmc!"
    where = s.gmc.translate(GFX_HUB, VMID, va + 0x10)
    assert (where.system, where.address, where.contiguous) == (False, 0x3010, 4 * KIB - 0x10)
    assert s.gmc.read(GFX_HUB, VMID, va + 0x10, 4) == b"gmc!"
    s.gmc.write(GFX_HUB, VMID, va + 0x20, b"back")
    assert bytes(s.vram[0x3020:0x3024]) == b"back"


def test_2m_leaf_at_pdb0_covers_its_range_with_one_walk() -> None:
    s = Setup()
    va = 0x40_0000_0000 + 2 * MIB * 5
    s.map_2m(va, 2 * MIB, RW)
    assert s.gmc.translate(GFX_HUB, VMID, va + 0x1_2345).address == 2 * MIB + 0x1_2345
    assert s.gmc.translate(GFX_HUB, VMID, va + 2 * MIB - 8).address == 4 * MIB - 8
    assert s.gmc.walks == 1  # the second address came from the TLB
    with pytest.raises(GPUVMFault):
        s.gmc.translate(GFX_HUB, VMID, va + 2 * MIB)  # the next 2 MiB has no entry


def test_1g_leaf_at_pdb1() -> None:
    # a 1 GiB leaf needs 1 GiB of VRAM behind it only when used: the model reads no data here
    s = Setup()
    va = 7 * GIB
    s.map_1g(va, 3 * GIB, RW)
    where = s.gmc.translate(GFX_HUB, VMID, va + 0x2345_6789)
    assert (where.system, where.address) == (False, 3 * GIB + 0x2345_6789)
    assert where.contiguous == GIB - 0x2345_6789


def test_wrong_frag_gives_stale_translations_until_invalidated() -> None:
    s = Setup()
    va = 0x10_0000_0000
    # two pages that are not contiguous in VRAM, the first claiming an 8 KiB fragment (FRAG 1)
    s.map_4k(va, 0x10000, RW | amdgpu_pte_frag(1))
    s.map_4k(va + 4 * KIB, 0x50000, RW)
    assert s.gmc.translate(GFX_HUB, VMID, va).address == 0x10000
    # the TLB trusts the fragment: the second page translates as if contiguous
    assert s.gmc.translate(GFX_HUB, VMID, va + 4 * KIB).address == 0x11000
    s.invalidate(VMID)
    assert s.gmc.translate(GFX_HUB, VMID, va + 4 * KIB).address == 0x50000


def test_correct_frag_zero_pages_translate_independently() -> None:
    s = Setup()
    va = 0x10_0000_0000
    s.map_4k(va, 0x10000, RW)
    s.map_4k(va + 4 * KIB, 0x50000, RW)
    assert s.gmc.translate(GFX_HUB, VMID, va).address == 0x10000
    assert s.gmc.translate(GFX_HUB, VMID, va + 4 * KIB).address == 0x50000


def test_changed_pte_is_stale_until_a_full_invalidation() -> None:
    s = Setup()
    va = 0x2000_0000
    s.map_4k(va, 0x10000, RW)
    assert s.gmc.translate(GFX_HUB, VMID, va).address == 0x10000
    s.map_4k(va, 0x20000, RW)
    assert s.gmc.translate(GFX_HUB, VMID, va).address == 0x10000
    # only the L1 invalidated: the L2 refills the stale leaf
    s.set("VM_INVALIDATE_ENG0_REQ", PER_VMID_INVALIDATE_REQ=1 << VMID, INVALIDATE_L1_PTES=1)
    assert s.gmc.translate(GFX_HUB, VMID, va).address == 0x10000
    s.invalidate(VMID)
    assert s.gmc.translate(GFX_HUB, VMID, va).address == 0x20000


def test_invalidation_of_another_vmid_keeps_this_one() -> None:
    s = Setup()
    va = 0x2000_0000
    s.map_4k(va, 0x10000, RW)
    s.gmc.translate(GFX_HUB, VMID, va)
    s.map_4k(va, 0x20000, RW)
    s.invalidate(VMID + 1)
    assert s.gmc.translate(GFX_HUB, VMID, va).address == 0x10000


def test_write_to_read_only_page_latches_the_fault_status() -> None:
    s = Setup()
    records = []
    s.gmc.on_fault = records.append
    va = 0xABC_DEF0_1000
    s.map_4k(va, 0x3000, AMDGPU_PTE_VALID | AMDGPU_PTE_READABLE)
    assert s.gmc.read(GFX_HUB, VMID, va, 4) == bytes(4)
    with pytest.raises(GPUVMFault) as caught:
        s.gmc.write(GFX_HUB, VMID, va + 8, b"nope", client_id=CLIENT)
    assert bytes(s.vram[0x3008:0x300C]) == bytes(4)
    status = gc_11_0_0.regGCVM_L2_PROTECTION_FAULT_STATUS.decode(
        s.read_raw("VM_L2_PROTECTION_FAULT_STATUS"))
    # this model's PERMISSION_FAULTS bits: valid, read, write, execute (kfd_int_process_v11.c order)
    assert status["PERMISSION_FAULTS"] == 0b0100
    assert (status["RW"], status["VMID"], status["CID"]) == (1, VMID, CLIENT)
    assert (status["MAPPING_ERROR"], status["WALKER_ERROR"], status["MORE_FAULTS"]) == (0, 0, 0)
    assert s.read_raw("VM_L2_PROTECTION_FAULT_ADDR_LO32") == (va >> 12) & 0xFFFFFFFF
    assert s.read_raw("VM_L2_PROTECTION_FAULT_ADDR_HI32") == va >> 44
    assert records == [caught.value.record]
    assert (records[0].kind, records[0].write, records[0].interrupt) == (FaultKind.WRITE, True, True)
    # a second fault leaves the first latched and says there were more
    with pytest.raises(GPUVMFault):
        s.gmc.translate(GFX_HUB, VMID, va + 16 * KIB, Access.READ)
    status_after = gc_11_0_0.regGCVM_L2_PROTECTION_FAULT_STATUS.decode(
        s.read_raw("VM_L2_PROTECTION_FAULT_STATUS"))
    assert status_after["MORE_FAULTS"] == 1 and status_after["PERMISSION_FAULTS"] == 0b0100
    assert s.read_raw("VM_L2_PROTECTION_FAULT_ADDR_LO32") == (va >> 12) & 0xFFFFFFFF
    # gmc_v11_0_process_interrupt: WREG32_P(fault_cntl, 1, ~1) clears the latch
    s.write_raw("VM_L2_PROTECTION_FAULT_CNTL", s.read_raw("VM_L2_PROTECTION_FAULT_CNTL") | 1)
    assert s.read_raw("VM_L2_PROTECTION_FAULT_STATUS") == 0


def test_execute_needs_the_executable_bit() -> None:
    s = Setup()
    s.map_4k(0x5000_0000, 0x3000, RW)
    with pytest.raises(GPUVMFault) as caught:
        s.gmc.translate(GFX_HUB, VMID, 0x5000_0000, Access.EXECUTE)
    assert caught.value.record.kind is FaultKind.EXECUTE
    assert caught.value.record.interrupt is False  # EXECUTE interrupts are not enabled here
    s.map_4k(0x5000_1000, 0x4000, RW | AMDGPU_PTE_EXECUTABLE)
    assert s.gmc.translate(GFX_HUB, VMID, 0x5000_1000, Access.EXECUTE).address == 0x4000


def test_invalid_pde_is_a_no_translation_fault() -> None:
    s = Setup()
    va = 0x7000_0000
    s.map_4k(va, 0x3000, RW)
    pdb1 = s.directory(va, 1)
    s.put(pdb1, (va >> 30) & 511, 0)  # drop the PDB0 under it
    with pytest.raises(GPUVMFault) as caught:
        s.gmc.translate(GFX_HUB, VMID, va, client_id=CLIENT)
    record = caught.value.record
    assert (record.kind, record.write, record.interrupt) == (FaultKind.PDE, False, True)
    status = gc_11_0_0.regGCVM_L2_PROTECTION_FAULT_STATUS.decode(record.status)
    assert status["PERMISSION_FAULTS"] == 0b0001 and status["RW"] == 0


def test_invalid_pte_is_a_valid_fault() -> None:
    s = Setup()
    va = 0x7000_0000
    s.map_4k(va, 0x3000, RW)
    with pytest.raises(GPUVMFault) as caught:
        s.gmc.translate(GFX_HUB, VMID, va + 4 * KIB)
    assert caught.value.record.kind is FaultKind.VALID


def test_base_without_valid_faults() -> None:
    # amdgpu_gmc_pd_addr always sets VALID in the base PDE; without it nothing is translated
    s = Setup()
    s.map_4k(0x7000_0000, 0x3000, RW)
    s.set_base(VMID, s.root)
    with pytest.raises(GPUVMFault) as caught:
        s.gmc.translate(GFX_HUB, VMID, 0x7000_0000)
    assert caught.value.record.kind is FaultKind.PDE


def test_va_outside_start_end_is_a_range_fault() -> None:
    s = Setup()
    s.set_range(VMID, 0, 0x1FF)  # END is the last valid page, inclusive
    s.map_4k(0x1FF000, 0x3000, RW)
    s.map_4k(0x200000, 0x4000, RW)
    assert s.gmc.translate(GFX_HUB, VMID, 0x1FF000).address == 0x3000
    with pytest.raises(GPUVMFault) as caught:
        s.gmc.translate(GFX_HUB, VMID, 0x200000)
    status = gc_11_0_0.regGCVM_L2_PROTECTION_FAULT_STATUS.decode(caught.value.record.status)
    assert caught.value.record.kind is FaultKind.RANGE and status["MAPPING_ERROR"] == 1


def test_walk_is_relative_to_the_start_address() -> None:
    # the GART context: one flat level (depth 0), indexed from PAGE_TABLE_START_ADDR
    s = Setup(hub=MM_HUB)
    gart_start = 0xFF_0000_0000
    table = s.new_table()
    s.set("VM_CONTEXT0_CNTL", ENABLE_CONTEXT=1, PAGE_TABLE_DEPTH=0)
    s.set_base(0, table | AMDGPU_PTE_VALID)
    s.set_range(0, gart_start >> 12, (gart_start >> 12) + 511)
    s.put(table, 2, 0x7000 | RW)
    assert s.gmc.translate(MM_HUB, 0, gart_start + 2 * 4 * KIB + 4).address == 0x7004
    with pytest.raises(GPUVMFault) as caught:
        s.gmc.translate(MM_HUB, 0, gart_start - 4 * KIB)  # below START
    assert caught.value.record.kind is FaultKind.RANGE


def test_vmid0_system_aperture_fb_agp_and_default_page() -> None:
    s = Setup(hub=MM_HUB)
    fb_start = 0x80_0000_0000
    fb_end = fb_start + VRAM_SIZE - 1
    agp_start = 0x90_0000_0000
    agp_end = agp_start + 16 * MIB - 1
    # mmhub_v3_0.c init_system_aperture_regs units: FB and AGP in 16 MiB, the aperture in 256 KiB
    s.write_raw("MC_VM_FB_LOCATION_BASE", fb_start >> 24)
    s.write_raw("MC_VM_FB_LOCATION_TOP", fb_end >> 24)
    s.write_raw("MC_VM_AGP_BASE", 0)
    s.write_raw("MC_VM_AGP_BOT", agp_start >> 24)
    s.write_raw("MC_VM_AGP_TOP", agp_end >> 24)
    s.write_raw("MC_VM_SYSTEM_APERTURE_LOW_ADDR", fb_start >> 18)
    s.write_raw("MC_VM_SYSTEM_APERTURE_HIGH_ADDR", agp_end >> 18)
    s.write_raw("MC_VM_SYSTEM_APERTURE_DEFAULT_ADDR_LSB", 0x5000 >> 12)
    fb = s.gmc.translate(MM_HUB, 0, fb_start + 0x1234)
    assert (fb.system, fb.address) == (False, 0x1234)
    agp = s.gmc.translate(MM_HUB, 0, agp_start + 0x5678)
    assert (agp.system, agp.address) == (True, 0x5678)
    # SYSTEM_APERTURE_UNMAPPED_ACCESS = 1: the gap between FB and AGP goes to the default page
    s.set("MC_VM_MX_L1_TLB_CNTL", ENABLE_L1_TLB=1, SYSTEM_APERTURE_UNMAPPED_ACCESS=1)
    between = s.gmc.translate(MM_HUB, 0, fb_start + 32 * MIB + 0x10)
    assert (between.system, between.address) == (False, 0x5010)
    # the aperture is VMID 0 only: VMID 3 walks its tables for the same address
    with pytest.raises(GPUVMFault):
        s.gmc.translate(MM_HUB, VMID, fb_start + 0x1234)


def test_vmid0_aperture_gap_passes_through_and_is_not_served_past_vram() -> None:
    # gfxhub_v3_0.c / mmhub_v3_0.c init_tlb_regs: SYSTEM_APERTURE_UNMAPPED_ACCESS = 0 (pass-through)
    s = Setup(hub=MM_HUB)
    fb_start = 0x80_0000_0000
    agp_start = 0x90_0000_0000
    agp_end = agp_start + 16 * MIB - 1
    s.write_raw("MC_VM_FB_LOCATION_BASE", fb_start >> 24)
    s.write_raw("MC_VM_FB_LOCATION_TOP", (fb_start + VRAM_SIZE - 1) >> 24)
    s.write_raw("MC_VM_AGP_BOT", agp_start >> 24)
    s.write_raw("MC_VM_AGP_TOP", agp_end >> 24)
    s.write_raw("MC_VM_SYSTEM_APERTURE_LOW_ADDR", fb_start >> 18)
    s.write_raw("MC_VM_SYSTEM_APERTURE_HIGH_ADDR", agp_end >> 18)
    s.write_raw("MC_VM_SYSTEM_APERTURE_DEFAULT_ADDR_LSB", 0x5000 >> 12)
    s.vram[0x5010:0x5014] = b"\xaa\xbb\xcc\xdd"
    stray = fb_start + 32 * MIB + 0x10
    # not the default page: the address goes through untranslated, far past the end of VRAM
    assert s.gmc.translate(MM_HUB, 0, stray).address == stray
    with pytest.raises(GPUBusError):
        s.gmc.read(MM_HUB, 0, stray, 4)
    with pytest.raises(GPUBusError):
        s.gmc.write(MM_HUB, 0, stray, b"\x00" * 4)
    assert s.vram[0x5010:0x5014] == b"\xaa\xbb\xcc\xdd"
    assert s.gmc.faults == []  # the system aperture is no VM context: no protection fault


def test_invalidate_request_ack_and_semaphore() -> None:
    s = Setup(hub=MM_HUB)
    assert s.read_raw("VM_INVALIDATE_ENG17_SEM") == 1  # acquired
    assert s.read_raw("VM_INVALIDATE_ENG17_SEM") == 0  # held: a second reader does not get it
    s.set("VM_INVALIDATE_ENG17_REQ", PER_VMID_INVALIDATE_REQ=1 << 5, INVALIDATE_L1_PTES=1,
          INVALIDATE_L2_PTES=1)
    ack = mmhub_3_0_0.regMMVM_INVALIDATE_ENG17_ACK.decode(s.read_raw("VM_INVALIDATE_ENG17_ACK"))
    assert ack["PER_VMID_INVALIDATE_ACK"] == 1 << 5
    s.write_raw("VM_INVALIDATE_ENG17_SEM", 0)
    assert s.read_raw("VM_INVALIDATE_ENG17_SEM") == 1  # released, acquired again
    s.write_raw("VM_INVALIDATE_ENG17_SEM", 0)
    # a slow engine: the ACK bit appears only after some polls
    s.gmc.ack_delay_reads = 2
    s.set("VM_INVALIDATE_ENG3_REQ", PER_VMID_INVALIDATE_REQ=1 << 1)
    polls = [s.read_raw("VM_INVALIDATE_ENG3_ACK") & (1 << 1) for _ in range(3)]
    assert polls == [0, 0, 1 << 1]
    # a hung engine never acknowledges (what the driver's bounded wait must catch)
    s.gmc.stall_invalidations = True
    s.set("VM_INVALIDATE_ENG3_REQ", PER_VMID_INVALIDATE_REQ=1 << 1)
    assert all(s.read_raw("VM_INVALIDATE_ENG3_ACK") == 0 for _ in range(10))


def test_reset_empties_the_tlb_and_the_fault_latch() -> None:
    s = Setup()
    s.map_4k(0x2000_0000, 0x10000, RW)
    s.gmc.translate(GFX_HUB, VMID, 0x2000_0000)
    with pytest.raises(GPUVMFault):
        s.gmc.translate(GFX_HUB, VMID, 0x3000_0000)
    s.map_4k(0x2000_0000, 0x20000, RW)
    s.gmc.reset()
    assert s.read_raw("VM_L2_PROTECTION_FAULT_STATUS") == 0
    assert s.gmc.translate(GFX_HUB, VMID, 0x2000_0000).address == 0x20000


@pytest.fixture
def gpu_in_vfio():
    machine = Machine.default()
    bind_to_vfio(machine, GPU_AUDIO_BDF)  # the group is viable only with both functions
    device = open_vfio(machine, GPU_BDF)
    device.enable_bus_master()
    return machine, device


def test_system_page_and_system_page_table_through_the_iommu(gpu_in_vfio) -> None:
    machine, device = gpu_in_vfio
    memory = machine.ram.allocate(16 * KIB)
    iova = 0x1_0000_0000
    device.map_dma(memory.vaddr, iova, 16 * KIB)
    s = Setup(host=machine.device(GPU_BDF))
    va = 0x3_0000_0000
    # a page table in system memory (SYSTEM in the PDE) whose PTE points at a system page
    pdb0 = s.directory(va, 2)
    s.put(pdb0, (va >> 21) & 511, iova | AMDGPU_PTE_VALID | AMDGPU_PTE_SYSTEM)
    pte = (iova + 8 * KIB) | RW | AMDGPU_PTE_SYSTEM
    memory.view[(va >> 12 & 511) * 8:(va >> 12 & 511) * 8 + 8] = pte.to_bytes(8, "little")
    memory.view[8 * KIB + 0x40:8 * KIB + 0x44] = b"host"
    assert s.gmc.read(GFX_HUB, VMID, va + 0x40, 4) == b"host"
    s.gmc.write(GFX_HUB, VMID, va + 0x80, b"from gpu")
    assert bytes(memory.view[8 * KIB + 0x80:8 * KIB + 0x88]) == b"from gpu"
    assert machine.iommu_faults == []


def test_unmapped_iova_is_an_iommu_fault(gpu_in_vfio) -> None:
    machine, device = gpu_in_vfio
    s = Setup(host=machine.device(GPU_BDF))
    va = 0x3_0000_0000
    unmapped = 0x2_0000_0000
    s.map_4k(va, unmapped, RW | AMDGPU_PTE_SYSTEM)
    with pytest.raises(GPUBusError):
        s.gmc.read(GFX_HUB, VMID, va, 4)
    assert [(f.bdf, f.iova, f.write) for f in machine.iommu_faults] == [(GPU_BDF, unmapped, False)]


def test_page_table_behind_an_unmapped_iova_is_a_walker_error(gpu_in_vfio) -> None:
    machine, device = gpu_in_vfio
    s = Setup(host=machine.device(GPU_BDF))
    va = 0x3_0000_0000
    pdb0 = s.directory(va, 2)
    s.put(pdb0, (va >> 21) & 511, 0x2_0000_0000 | AMDGPU_PTE_VALID | AMDGPU_PTE_SYSTEM)
    with pytest.raises(GPUVMFault) as caught:
        s.gmc.translate(GFX_HUB, VMID, va)
    status = gc_11_0_0.regGCVM_L2_PROTECTION_FAULT_STATUS.decode(caught.value.record.status)
    assert caught.value.record.kind is FaultKind.WALKER and status["WALKER_ERROR"] != 0
    assert len(machine.iommu_faults) == 1


def test_connected_to_the_device_register_file_through_mmio_addresses() -> None:
    from mockgpu.amd.gpu import Navi31GPU

    gpu = Navi31GPU(vram_size=64 * MIB)
    regfile = gpu.regfile
    gmc = GMC(regfile, gpu.vram, gpu)
    gmc.connect(regfile)

    def at(short: str) -> int:
        return regfile.address(MM_HUB, "regMM" + short)

    # the MMHUB flush sequence of gmc_v11_0_flush_gpu_tlb, as register writes by address
    assert regfile.read32(at("VM_INVALIDATE_ENG17_SEM")) == 1
    request = mmhub_3_0_0.regMMVM_INVALIDATE_ENG17_REQ.encode(
        PER_VMID_INVALIDATE_REQ=1, INVALIDATE_L1_PTES=1, INVALIDATE_L2_PTES=1)
    regfile.write32(at("VM_INVALIDATE_ENG17_REQ"), request)
    assert regfile.read32(at("VM_INVALIDATE_ENG17_ACK")) & 1
    regfile.write32(at("VM_INVALIDATE_ENG17_SEM"), 0)
    # plain context registers are read from the register file's storage at each access
    regfile.write32(at("VM_CONTEXT1_CNTL"), mmhub_3_0_0.regMMVM_CONTEXT1_CNTL.encode(ENABLE_CONTEXT=1))
    regfile.write32(at("VM_CONTEXT1_PAGE_TABLE_END_ADDR_LO32"), 0xF)
    regfile.write32(at("VM_CONTEXT1_PAGE_TABLE_BASE_ADDR_LO32"), 0x10000 | AMDGPU_PTE_VALID)
    gpu.vram[0x10000 + 8:0x10000 + 16] = (0x20000 | RW).to_bytes(8, "little")
    assert gmc.translate(MM_HUB, 1, 0x1010).address == 0x20010
    with pytest.raises(GPUVMFault):
        gmc.translate(MM_HUB, 1, 0x10000)  # past END: a range fault
    status = regfile.read32(at("VM_L2_PROTECTION_FAULT_STATUS"))
    assert mmhub_3_0_0.regMMVM_L2_PROTECTION_FAULT_STATUS.decode(status)["MAPPING_ERROR"] == 1
