"""The AM GMC block on the mock Navi31: hub bring-up, VMID 0 and more VMIDs walked by the mock GMC,
huge pages, host pages through the IOMMU, TLB invalidation handshake and its failures, teardown."""
from __future__ import annotations

import time

import pytest

import hal
from drivers.am.device import AMConfig, AMDevice
from drivers.am.gmc import GART_INVALIDATE_ENGINE, GFX_HUB, MM_HUB, GMCv11
from drivers.vm import amd_gfx11
from drivers.vm.pagetable import PageFlags
from hal.errors import DeviceLost, DeviceTimeout, OutOfMemory
from mockgpu import GPU_BDF, Machine
from mockgpu.amd import Navi31GPU
from mockgpu.amd.gmc import Access, FaultKind, GPUVMFault
from mockgpu.ports import RootPort

GPU = f"pci:{GPU_BDF}"
MIB = 1 << 20
GIB = 1 << 30
BLOCKS = ("NBIO", "HDP", "GMC")
VA = 0x1_0000_0000  # a VMID 0 address below the system aperture (VRAM sits at 512 GiB)


@pytest.fixture
def machine(tmp_path):
    return Machine.default(lock_dir=str(tmp_path))


def bring_up(pci, **config) -> AMDevice:
    return AMDevice(pci, config=AMConfig(**config), block_order=BLOCKS)


def hub_reg(gpu, hub: str, name: str) -> int:
    prefix = "GC" if hub == GFX_HUB else "MM"
    return gpu.regfile.get(hub, f"reg{prefix}{name}")


def test_bring_up_programs_both_hubs_and_fini_turns_them_off(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = bring_up(pci)
        gmc = dev.block("GMC")
        assert isinstance(gmc, GMCv11)  # chosen by the GC version the table gives
        for hub in (GFX_HUB, MM_HUB):
            cntl = gpu.regfile.get(hub, f"reg{'GC' if hub == GFX_HUB else 'MM'}VM_CONTEXT0_CNTL")
            module = gmc.hubs[hub].context(0, "CNTL")
            fields = module.decode(cntl)
            assert fields["ENABLE_CONTEXT"] == 1
            assert fields["PAGE_TABLE_DEPTH"] == amd_gfx11.PAGE_TABLE_DEPTH
            assert hub_reg(gpu, hub, "MC_VM_SYSTEM_APERTURE_LOW_ADDR") == dev.memory.fb_base >> 18
            assert hub_reg(gpu, hub, "MC_VM_SYSTEM_APERTURE_HIGH_ADDR") == gmc.fb_end >> 18
            tlb = gmc.hubs[hub].reg("MC_VM_MX_L1_TLB_CNTL").decode(hub_reg(gpu, hub, "MC_VM_MX_L1_TLB_CNTL"))
            assert tlb["ENABLE_L1_TLB"] == 1 and tlb["SYSTEM_ACCESS_MODE"] == 3
        # VRAM through the system aperture of VMID 0, no table walk
        walks = gpu.gmc.walks
        where = gpu.gmc.translate(MM_HUB, 0, dev.memory.fb_base + 0x5000)
        assert (where.system, where.address, gpu.gmc.walks) == (False, 0x5000, walks)
        tables = [b for b in dev.memory.buffers() if b.purpose == "page table"]
        assert tables
        dev.fini()
        for hub in (GFX_HUB, MM_HUB):
            prefix = "GC" if hub == GFX_HUB else "MM"
            assert all(gpu.regfile.get(hub, f"reg{prefix}VM_CONTEXT{v}_CNTL") == 0 for v in range(16))
            l2 = gpu.regfile.get(hub, f"reg{prefix}VM_L2_CNTL")
            assert gmc.hubs[hub].reg("VM_L2_CNTL").definition.field("ENABLE_L2_CACHE").decode(l2) == 0
        assert dev.memory.buffers() == []  # tables, scratch page: all given back


def test_vram_mapped_in_vmid0_and_vmid1_translates_where_the_driver_put_it(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = bring_up(pci)
        gmc = dev.block("GMC")
        small = dev.memory.alloc_vram(3 * 4096, purpose="small")
        gmc.map(0, VA, small)
        for offset in (0, 4096 + 8, 3 * 4096 - 4):
            where = gpu.gmc.translate(GFX_HUB, 0, VA + offset)
            assert (where.system, where.address) == (False, small.offset + offset)
        huge = dev.memory.alloc_vram(4 * MIB, alignment=2 * MIB, purpose="2M")
        gmc.map(1, 0x40_0000_0000, huge)
        walked = gmc.contexts[1].page_table.walk(0x40_0000_0000 + MIB + 12)
        assert walked.page_size == 2 * MIB
        for hub in (GFX_HUB, MM_HUB):
            where = gpu.gmc.translate(hub, 1, 0x40_0000_0000 + 3 * MIB + 12)
            assert where.address == huge.offset + 3 * MIB + 12
        dev.fini()


def test_a_1_gib_buffer_maps_with_a_1_gib_leaf(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = bring_up(pci)
        gmc = dev.block("GMC")
        big = dev.memory.alloc_vram(GIB, alignment=GIB, purpose="1G")
        gmc.map(2, 0x80_0000_0000, big, PageFlags.READ)
        walked = gmc.contexts[2].page_table.walk(0x80_0000_0000 + 5 * MIB)
        assert (walked.page_size, walked.level) == (GIB, amd_gfx11.PDB1)
        where = gpu.gmc.translate(MM_HUB, 2, 0x80_0000_0000 + GIB - 4096)
        assert where.address == big.offset + GIB - 4096
        with pytest.raises(GPUVMFault) as fault:
            gpu.gmc.translate(MM_HUB, 2, 0x80_0000_0000, Access.WRITE)
        assert fault.value.record.kind is FaultKind.WRITE
        dev.fini()


def test_host_pages_are_reached_through_the_iommu(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = bring_up(pci)
        gmc = dev.block("GMC")
        host = pci.alloc_dma(3 * 4096)
        host.region.write(4096 + 16, b"host bytes")
        gmc.map(3, 0x2000_0000, host)
        where = gpu.gmc.translate(GFX_HUB, 3, 0x2000_0000 + 4096 + 16)
        assert where.system and where.address == host.bus_address_of(4096 + 16)
        assert gpu.gmc.read(GFX_HUB, 3, 0x2000_0000 + 4096 + 16, 10) == b"host bytes"
        gpu.gmc.write(MM_HUB, 3, 0x2000_0000 + 8, b"from gpu")
        assert host.region.read(8, 8) == b"from gpu"
        dev.fini()


def test_remapping_a_va_is_seen_at_once_because_the_driver_invalidates(machine):
    """The mock's TLB keeps stale translations until an invalidation: without the REQ/ACK
    handshake after unmap and map, the second translate would still land in `first`."""
    gpu = machine.device(GPU_BDF)
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = bring_up(pci)
        gmc = dev.block("GMC")
        first = dev.memory.alloc_vram(4096, purpose="first")
        second = dev.memory.alloc_vram(4096, purpose="second")
        gmc.map(1, VA, first)
        assert gpu.gmc.translate(GFX_HUB, 1, VA).address == first.offset
        flushes = gmc.flushes
        gmc.unmap(1, VA, 4096)
        with pytest.raises(GPUVMFault):
            gpu.gmc.translate(GFX_HUB, 1, VA)
        gmc.map(1, VA, second)
        assert gpu.gmc.translate(GFX_HUB, 1, VA).address == second.offset
        assert gmc.flushes - flushes == 4  # unmap and map, each on both hubs
        dev.fini()


def test_a_late_ack_is_waited_for(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = bring_up(pci)
        gpu.gmc.ack_delay_reads = 3
        dev.block("GMC").flush_tlb(5, MM_HUB)
        dev.fini()


def test_a_stalled_ack_is_a_timeout_naming_hub_engine_vmid_and_ack(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = bring_up(pci, gmc_invalidate_timeout_s=0.05)
        gmc = dev.block("GMC")
        gpu.gmc.stall_invalidations = True
        started = time.monotonic()
        with pytest.raises(DeviceTimeout) as info:
            gmc.flush_tlb(4, GFX_HUB)
        assert time.monotonic() - started < 1.0
        text = str(info.value)
        assert "GC" in text and f"ENG{GART_INVALIDATE_ENGINE}_ACK" in text
        assert "VMID 4" in text and "last value 0x00000000" in text
        # the MMHUB's semaphore is released even when the ACK never comes
        with pytest.raises(DeviceTimeout, match="MMHUB"):
            gmc.flush_tlb(4, MM_HUB)
        sem = gmc.hubs[MM_HUB].sem
        assert sem.read() & 1  # free again: this read acquires it
        sem.write(0)
        gpu.gmc.stall_invalidations = False
        dev.fini()


def test_a_semaphore_held_by_another_client_is_a_timeout(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = bring_up(pci, gmc_invalidate_timeout_s=0.05)
        gmc = dev.block("GMC")
        gmc.hubs[MM_HUB].sem.read()  # someone else acquires engine 17's semaphore
        with pytest.raises(DeviceTimeout, match="semaphore"):
            gmc.flush_tlb(0, MM_HUB)
        gmc.hubs[MM_HUB].sem.write(0)
        dev.fini()


def test_a_vanished_gpu_is_device_lost_on_the_first_poll(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = bring_up(pci)
        gpu.vanish()
        with pytest.raises(DeviceLost):
            dev.block("GMC").flush_tlb(0, GFX_HUB)


def test_page_tables_out_of_vram_are_out_of_memory(tmp_path):
    m = Machine(lock_dir=str(tmp_path))
    m.add_device(RootPort(), "0000:00:01.0")
    m.add_device(Navi31GPU(vram_size=64 * MIB), "0000:01:00.0", "0000:00:01.0")
    with hal.open("pci:0000:01:00.0", os=m.os, unbind=True) as pci:
        dev = bring_up(pci)
        for stats in dev.memory.stats():
            dev.memory.alloc_vram(stats.free, purpose="filler")
        with pytest.raises(OutOfMemory, match="page table"):
            dev.block("GMC").context(7)
        dev.fini()


def test_the_mock_gmc_is_reset_with_the_function_and_reports_faults(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = bring_up(pci)
        gmc = dev.block("GMC")
        buf = dev.memory.alloc_vram(4096, purpose="x")
        gmc.map(1, VA, buf)
        gpu.gmc.translate(GFX_HUB, 1, VA)
        assert any(gpu.gmc.hubs[GFX_HUB].tlb)
        with pytest.raises(GPUVMFault):
            gpu.gmc.translate(GFX_HUB, 1, VA + 4096)
        assert gpu.gmc.faults[-1].kind is FaultKind.VALID
        dev.fini()
    gpu.reset_device_state()
    assert not any(gpu.gmc.hubs[GFX_HUB].tlb)
