"""The mock IH (OSSSYS 6.0.0 ring 0) at the register and memory layer, programmed the way
ih_v6_0.c programs it: entries, wptr writeback, overflow, read pointer by register or doorbell,
MSI-X with RPTR_REARM, resets, VM faults from the GMC model."""
from __future__ import annotations

import pytest

import hal
from autogen.amd import irqsrcs_vmc_1_0 as vmc
from autogen.amd import soc15_ih_clientid as clients
from autogen.amd.regs import osssys_6_0_0 as oss
from autogen.linux import pci_regs
from mockgpu import GPU_AUDIO_BDF, GPU_BDF, Machine
from mockgpu.amd.gmc import Access, GPUVMFault
from mockgpu.amd.gpu import NAVI31_FB_BASE
from mockgpu.amd.ih import ENTRY_BYTES, encode_entry

RING_OFFSET = 16 << 20  # VRAM offsets this test owns
WRITEBACK_OFFSET = 17 << 20
APERTURE_SHIFT = 18  # gfxhub/mmhub init_system_aperture_regs: the aperture in 256 KiB units


@pytest.fixture
def machine(tmp_path):
    machine = Machine.default(lock_dir=str(tmp_path))
    machine.kernel.unbind(GPU_AUDIO_BDF, "snd_hda_intel")  # so its IOMMU group is usable by vfio
    return machine


@pytest.fixture
def gpu(machine):
    gpu = machine.device(GPU_BDF)
    # what the GMC block programs before the IH (gmc_v11_0 hw_init: mmhub system aperture on VRAM)
    top = NAVI31_FB_BASE + gpu.vram_size - 1
    gpu.regfile.set("MMHUB", "regMMMC_VM_SYSTEM_APERTURE_LOW_ADDR", NAVI31_FB_BASE >> APERTURE_SHIFT)
    gpu.regfile.set("MMHUB", "regMMMC_VM_SYSTEM_APERTURE_HIGH_ADDR", top >> APERTURE_SHIFT)
    return gpu


def need_gmc(gpu) -> None:
    if getattr(gpu, "gmc", None) is None:
        pytest.skip("the GMC model is not wired into this GPU")


def write(gpu, name: str, value: int) -> None:
    gpu.regfile.write32(gpu.regfile.address("OSSSYS", name), value)


def read(gpu, name: str) -> int:
    return gpu.regfile.read32(gpu.regfile.address("OSSSYS", name))


def enable_ring(gpu, ring_bytes: int, overflow: bool = True, rearm: bool = False) -> None:
    """ih_v6_0.c ih_v6_0_enable_ring + toggle_ring_interrupts, register by register."""
    ring = NAVI31_FB_BASE + RING_OFFSET
    writeback = NAVI31_FB_BASE + WRITEBACK_OFFSET
    write(gpu, "regIH_RB_BASE", ring >> 8)
    write(gpu, "regIH_RB_BASE_HI", ring >> 40)
    cntl = oss.regIH_RB_CNTL.encode(MC_SPACE=4, WPTR_OVERFLOW_CLEAR=1, WPTR_OVERFLOW_ENABLE=int(overflow),
                                    RB_SIZE=(ring_bytes // 4).bit_length() - 1, WPTR_WRITEBACK_ENABLE=1,
                                    MC_SNOOP=1, RPTR_REARM=int(rearm))
    write(gpu, "regIH_RB_CNTL", cntl)
    write(gpu, "regIH_RB_WPTR_ADDR_LO", writeback & 0xFFFFFFFF)
    write(gpu, "regIH_RB_WPTR_ADDR_HI", writeback >> 32)
    write(gpu, "regIH_RB_WPTR", 0)
    write(gpu, "regIH_RB_RPTR", 0)
    cntl = oss.regIH_RB_CNTL.update(cntl, RB_ENABLE=1, WPTR_OVERFLOW_CLEAR=0)
    write(gpu, "regIH_RB_CNTL", cntl)
    write(gpu, "regIH_RB_CNTL", oss.regIH_RB_CNTL.update(cntl, WPTR_OVERFLOW_CLEAR=1))
    write(gpu, "regIH_RB_CNTL", oss.regIH_RB_CNTL.update(cntl, ENABLE_INTR=1))


def writeback(gpu) -> int:
    return int.from_bytes(gpu.vram[WRITEBACK_OFFSET:WRITEBACK_OFFSET + 4], "little")


def entry_at(gpu, offset: int) -> bytes:
    start = RING_OFFSET + offset
    return bytes(gpu.vram[start:start + ENTRY_BYTES])


def test_an_entry_has_amdgpus_layout_and_the_wptr_is_written_back(gpu):
    enable_ring(gpu, 4096)
    gpu.regfile.set("OSSSYS", "regIH_VMID_3_LUT", oss.regIH_VMID_3_LUT.encode(PASID=0x1234))
    assert gpu.ih.post(clients.SOC21_IH_CLIENTID_GRBM_CP, 181, (1, 2, 3, 4), ring_id=5, vmid=3)
    raw = entry_at(gpu, 0)
    words = [int.from_bytes(raw[i:i + 4], "little") for i in range(0, 32, 4)]
    # amdgpu_ih.c amdgpu_ih_decode_iv_helper
    assert words[0] & 0xFF == clients.SOC21_IH_CLIENTID_GRBM_CP
    assert (words[0] >> 8) & 0xFF == 181
    assert (words[0] >> 16) & 0xFF == 5
    assert (words[0] >> 24) & 0xF == 3
    assert words[0] >> 31 == 0
    assert words[3] & 0xFFFF == 0x1234  # the pasid from the IH's VMID LUT
    assert words[4:] == [1, 2, 3, 4]
    assert writeback(gpu) == ENTRY_BYTES
    assert read(gpu, "regIH_RB_WPTR") == ENTRY_BYTES
    assert raw == encode_entry(clients.SOC21_IH_CLIENTID_GRBM_CP, 181, (1, 2, 3, 4), 5, 3, 0, 0x1234, 0,
                               words[1] | (words[2] & 0xFFFF) << 32)


def test_a_disabled_ring_takes_nothing(gpu):
    assert not gpu.ih.post(clients.SOC21_IH_CLIENTID_GFX, 0)
    assert gpu.ih.dropped == 1 and gpu.ih.posted == 0


def test_a_full_ring_with_overflow_enabled_is_written_over_and_flags_it(gpu):
    enable_ring(gpu, 4 * ENTRY_BYTES)
    for number in range(6):
        assert gpu.ih.post(clients.SOC21_IH_CLIENTID_GFX, 0, (number,))
    # entries 0..2 fill the ring (one slot stays free), 3 goes over: from then on every entry does
    assert gpu.ih.overwritten == 3
    wptr = read(gpu, "regIH_RB_WPTR")
    assert oss.regIH_RB_WPTR.field("RB_OVERFLOW").decode(wptr) == 1
    assert writeback(gpu) == wptr  # the writeback carries the flag, as ih_v6_0_get_wptr expects
    assert oss.regIH_RB_WPTR.field("OFFSET").decode(wptr) << 2 == (6 * ENTRY_BYTES) % (4 * ENTRY_BYTES)
    assert oss.regIH_STATUS.field("RB_OVERFLOW").decode(read(gpu, "regIH_STATUS")) == 1
    # the oldest entry not written over is at wptr + 32 (ih_v6_0_get_wptr resumes there)
    resume = (2 * ENTRY_BYTES + ENTRY_BYTES) % (4 * ENTRY_BYTES)
    assert int.from_bytes(entry_at(gpu, resume)[16:20], "little") == 3
    # WPTR_OVERFLOW_CLEAR acts on its 0 -> 1 edge (enable_ring left it 0, as amdgpu does)
    cntl = read(gpu, "regIH_RB_CNTL")
    write(gpu, "regIH_RB_CNTL", oss.regIH_RB_CNTL.update(cntl, WPTR_OVERFLOW_CLEAR=1))
    assert oss.regIH_RB_WPTR.field("RB_OVERFLOW").decode(read(gpu, "regIH_RB_WPTR")) == 0
    write(gpu, "regIH_RB_RPTR", read(gpu, "regIH_RB_WPTR"))  # caught up
    for number in range(4):
        gpu.ih.post(clients.SOC21_IH_CLIENTID_GFX, 0, (number,))
    assert oss.regIH_RB_WPTR.field("RB_OVERFLOW").decode(read(gpu, "regIH_RB_WPTR")) == 1
    write(gpu, "regIH_RB_CNTL", oss.regIH_RB_CNTL.update(cntl, WPTR_OVERFLOW_CLEAR=1))  # no edge
    assert oss.regIH_RB_WPTR.field("RB_OVERFLOW").decode(read(gpu, "regIH_RB_WPTR")) == 1
    write(gpu, "regIH_RB_CNTL", oss.regIH_RB_CNTL.update(cntl, WPTR_OVERFLOW_CLEAR=0))
    write(gpu, "regIH_RB_CNTL", oss.regIH_RB_CNTL.update(cntl, WPTR_OVERFLOW_CLEAR=1))
    assert oss.regIH_RB_WPTR.field("RB_OVERFLOW").decode(read(gpu, "regIH_RB_WPTR")) == 0


def test_a_full_ring_without_overflow_drops_new_entries(gpu):
    enable_ring(gpu, 4 * ENTRY_BYTES, overflow=False)
    results = [gpu.ih.post(clients.SOC21_IH_CLIENTID_GFX, 0, (n,)) for n in range(5)]
    assert results == [True, True, True, False, False]
    assert gpu.ih.dropped == 2
    write(gpu, "regIH_RB_RPTR", 2 * ENTRY_BYTES)  # two entries consumed: room again
    assert gpu.ih.post(clients.SOC21_IH_CLIENTID_GFX, 0, (9,))


def test_the_doorbell_read_pointer_counts_when_enabled(gpu):
    enable_ring(gpu, 4 * ENTRY_BYTES, overflow=False)
    doorbell_index = 0x30  # a dword index, as ih_v6_0_doorbell_rptr programs OFFSET
    write(gpu, "regIH_DOORBELL_RPTR", oss.regIH_DOORBELL_RPTR.encode(OFFSET=doorbell_index, ENABLE=1))
    for n in range(3):
        assert gpu.ih.post(clients.SOC21_IH_CLIENTID_GFX, 0, (n,))
    assert not gpu.ih.post(clients.SOC21_IH_CLIENTID_GFX, 0)
    write(gpu, "regIH_RB_RPTR", 3 * ENTRY_BYTES)  # ignored: the doorbell holds the read pointer
    assert not gpu.ih.post(clients.SOC21_IH_CLIENTID_GFX, 0)
    doorbells = gpu.bar_memory(2)
    doorbells[doorbell_index * 4:doorbell_index * 4 + 4] = (3 * ENTRY_BYTES).to_bytes(4, "little")
    assert gpu.ih.post(clients.SOC21_IH_CLIENTID_GFX, 0)
    assert read(gpu, "regIH_RB_RPTR") == 3 * ENTRY_BYTES


def test_msix_one_message_per_rearm(machine, gpu):
    with hal.open(f"vfio:{GPU_BDF}", os=machine.os, unbind=True) as pci:
        pci.enable_bus_master()
        pci.enable_interrupts("msix", 1)
        enable_ring(gpu, 4096, rearm=True)
        gpu.ih.post(clients.SOC21_IH_CLIENTID_GFX, 0)
        gpu.ih.post(clients.SOC21_IH_CLIENTID_GFX, 0)
        assert pci.wait_irq(0, timeout_s=0.5) == 1
        assert gpu.ih.interrupts == 1  # RPTR_REARM: no second message before the rptr moves
        write(gpu, "regIH_RB_RPTR", ENTRY_BYTES)  # one consumed, one still there: a message now
        assert pci.wait_irq(0, timeout_s=0.5) == 1
        write(gpu, "regIH_RB_RPTR", 2 * ENTRY_BYTES)  # all consumed: armed, nothing to send
        assert gpu.ih.interrupts == 2
        gpu.ih.post(clients.SOC21_IH_CLIENTID_GFX, 0)
        assert pci.wait_irq(0, timeout_s=0.5) == 1
        assert gpu.ih.interrupts == 3


def test_without_rearm_each_entry_sends_a_message(machine, gpu):
    with hal.open(f"vfio:{GPU_BDF}", os=machine.os, unbind=True) as pci:
        pci.enable_bus_master()
        pci.enable_interrupts("msix", 1)
        enable_ring(gpu, 4096)
        for _ in range(3):
            gpu.ih.post(clients.SOC21_IH_CLIENTID_GFX, 0)
        assert pci.wait_irq(0, timeout_s=0.5) == 3


def test_every_reset_clears_the_ring_state(gpu):
    enable_ring(gpu, 4 * ENTRY_BYTES)
    for _ in range(5):
        gpu.ih.post(clients.SOC21_IH_CLIENTID_GFX, 0)
    gpu.reset_device_state()
    assert read(gpu, "regIH_RB_CNTL") == 0
    assert read(gpu, "regIH_RB_WPTR") == 0
    assert not gpu.ih.post(clients.SOC21_IH_CLIENTID_GFX, 0)
    with pytest.raises(ValueError, match="reset kind"):
        gpu.ih.reset("warm")


def test_an_mmhub_fault_becomes_a_vmc_fault_entry(gpu):
    need_gmc(gpu)
    enable_ring(gpu, 4096)
    vmid = 3
    cntl = gpu.gmc.hubs["MMHUB"].regs.context_cntl[vmid]
    gpu.regfile.set("MMHUB", cntl.name, cntl.encode(RANGE_PROTECTION_FAULT_ENABLE_INTERRUPT=1))
    address = 0x1234_5678_9000  # bits 47:44 are 1
    with pytest.raises(GPUVMFault):
        gpu.gmc.translate("MMHUB", vmid, address, Access.WRITE)
    raw = entry_at(gpu, 0)
    words = [int.from_bytes(raw[i:i + 4], "little") for i in range(0, 32, 4)]
    assert words[0] & 0xFF == clients.SOC21_IH_CLIENTID_VMC
    assert (words[0] >> 8) & 0xFF == vmc.VMC_1_0__SRCID__VM_FAULT
    assert (words[0] >> 24) & 0xF == vmid
    assert words[0] >> 31 == 1  # vmid_src: the MMHUB
    # gmc_v11_0_process_interrupt: addr = src_data[0] << 12 | (src_data[1] & 0xf) << 44; bit 5 write
    assert words[4] << 12 | (words[5] & 0xF) << 44 == address
    assert words[5] & 0x20


def test_a_fault_without_its_interrupt_enabled_posts_nothing(gpu):
    need_gmc(gpu)
    enable_ring(gpu, 4096)
    with pytest.raises(GPUVMFault):
        gpu.gmc.translate("GC", 2, 0x1000, Access.READ)
    assert gpu.ih.posted == 0


def test_a_ring_outside_any_mapping_loses_entries_and_says_why(gpu):
    enable_ring(gpu, 4096)
    write(gpu, "regIH_RB_BASE", 0x100)  # MC address 0x10000: no aperture, VMID 0 context off
    assert not gpu.ih.post(clients.SOC21_IH_CLIENTID_GFX, 0)
    assert gpu.ih.errors and "0x10000" in gpu.ih.errors[-1]


def test_the_ring_in_system_memory_needs_the_gpa_chicken_bit(machine, gpu):
    with hal.open(f"vfio:{GPU_BDF}", os=machine.os, unbind=True) as pci:
        pci.enable_bus_master()
        host = pci.alloc_dma(8192)
        enable_ring(gpu, 4096)
        cntl = read(gpu, "regIH_RB_CNTL")
        write(gpu, "regIH_RB_CNTL", oss.regIH_RB_CNTL.update(cntl, MC_SPACE=2))
        write(gpu, "regIH_RB_BASE", host.bus_address >> 8)
        write(gpu, "regIH_RB_BASE_HI", host.bus_address >> 40)
        write(gpu, "regIH_CHICKEN", oss.regIH_CHICKEN.encode(MC_SPACE_GPA_ENABLE=1))
        write(gpu, "regIH_RB_WPTR_ADDR_LO", (host.bus_address + 4096) & 0xFFFFFFFF)
        write(gpu, "regIH_RB_WPTR_ADDR_HI", (host.bus_address + 4096) >> 32)
        assert gpu.ih.post(clients.SOC21_IH_CLIENTID_GFX, 7, (0xABC,))
        assert host.region.read32(0) & 0xFFFF == 7 << 8 | clients.SOC21_IH_CLIENTID_GFX
        assert host.region.read32(16) == 0xABC
        assert host.region.read32(4096) == ENTRY_BYTES
        command = pci.cfg_read16(pci_regs.PCI_COMMAND)
        pci.cfg_write16(pci_regs.PCI_COMMAND, command & ~pci_regs.PCI_COMMAND_MASTER)
        assert not gpu.ih.post(clients.SOC21_IH_CLIENTID_GFX, 7)  # no bus mastering: lost
