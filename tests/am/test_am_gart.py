"""The GART window (host memory in VMID 0) and SDMA host <-> VRAM copies on the mock Navi31."""
from __future__ import annotations

import pytest

import hal
from autogen.amd import irqsrcs_gfx_11_0_0 as srcid
from drivers.am.device import AMConfig, AMDevice
from drivers.am.gart import GART_SIZE, gart_location
from drivers.am.gmc import GFX_HUB, GMC_HOLE_START, MM_HUB
from drivers.am.sdma import SDMAError
from hal.errors import InvalidArgument
from mockgpu import GPU_AUDIO_BDF, GPU_BDF, Machine
from mockgpu.amd.gmc import GPUVMFault

GPU = f"pci:{GPU_BDF}"
GIB = 1 << 30
PAGE = 4096
BLOCKS = ("NBIO", "HDP", "GMC", "IH", "PSP", "SMU", "SDMA")
STAGING = 2 * PAGE  # small, so that copies cross the staging buffer several times


@pytest.fixture
def machine(tmp_path):
    return Machine.default(lock_dir=str(tmp_path))


def bring_up(pci, blocks=BLOCKS, **config) -> AMDevice:
    settings = dict(sdma_timeout_s=0.3, sdma_staging_size=STAGING)
    settings.update(config)
    return AMDevice(pci, config=AMConfig(**settings), block_order=blocks)


def test_the_window_sits_where_amdgpu_places_it_for_gfx11():
    # AMDGPU_GART_PLACEMENT_HIGH: the top of the MC space below the hole, aligned down to 4 GiB
    fb_start = 0x80_0000_0000
    start, end = gart_location(fb_start, fb_start + 24 * GIB - 1, GART_SIZE, GMC_HOLE_START - 1)
    assert (start, end) == (0x7FFF_0000_0000, 0x7FFF_0000_0000 + GART_SIZE - 1)
    # a GART larger than the room beside VRAM is cut to the larger gap
    top = GMC_HOLE_START - 1
    start, end = gart_location(0, top - 8 * GIB, 16 * GIB, top)
    assert (start, end) == (GMC_HOLE_START - 8 * GIB, top)
    with pytest.raises(InvalidArgument, match="GART size"):
        gart_location(fb_start, fb_start + GIB - 1, 100, top)


def test_host_buffers_map_into_vmid0_and_unmap_with_an_invalidation(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = bring_up(pci, blocks=("NBIO", "HDP", "GMC"))
        gmc = dev.block("GMC")
        gart = gmc.gart
        assert not gart.start <= dev.memory.fb_base <= gart.end
        host = pci.alloc_dma(3 * PAGE)
        host.region.write(PAGE + 8, b"gart page")
        mapping = gart.map(host)
        assert gart.contains(mapping.va) and mapping.size == 3 * PAGE
        for hub in (GFX_HUB, MM_HUB):
            where = gpu.gmc.translate(hub, 0, mapping.address_of(PAGE + 8))
            assert where.system and where.address == host.bus_address_of(PAGE + 8)
        assert gpu.gmc.read(GFX_HUB, 0, mapping.address_of(PAGE + 8), 9) == b"gart page"
        flushes = gmc.flushes
        gart.unmap(mapping)
        assert gmc.flushes > flushes  # TLBs invalidated before the VA can be reused
        with pytest.raises(GPUVMFault):
            gpu.gmc.translate(GFX_HUB, 0, mapping.va)
        with pytest.raises(InvalidArgument, match="not a live mapping"):
            gart.unmap(mapping)
        again = gart.map(host)
        assert again.va == mapping.va  # the freed addresses are handed out again
        dev.fini()
        assert gart.mappings() == []  # hw_fini unmapped what was left
        pci.free_dma(host)


def test_the_window_allocates_disjoint_ranges_and_runs_out(machine):
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = bring_up(pci, blocks=("NBIO", "HDP", "GMC"), gart_size=4 * PAGE)
        gart = dev.block("GMC").gart
        host = pci.alloc_dma(2 * PAGE)
        first = gart.map(host)
        second = gart.map(host.bus_addresses)
        assert {first.va, second.va} == {gart.start, gart.start + 2 * PAGE}
        with pytest.raises(Exception, match="GART"):
            gart.map(host)
        gart.unmap(first)
        assert gart.map(host).va == first.va
        dev.fini()


@pytest.mark.parametrize("size", [1, 7, PAGE, PAGE + 3, 2 * STAGING + 5])
def test_host_to_vram_and_back_with_unaligned_tails(machine, size):
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = bring_up(pci)
        sdma = dev.block("SDMA")
        vram = dev.memory.alloc_vram(size + 64, purpose="copy target")
        vram.view.write(0, b"\xEE" * (size + 64))
        payload = bytes((i * 7 + 3) % 253 for i in range(size))
        sdma.copy_to_vram(vram, payload, offset=5)
        assert vram.view.read(5, size) == payload
        assert vram.view.read(0, 5) == b"\xEE" * 5  # nothing before or after was touched
        assert vram.view.read(5 + size, 4) == b"\xEE" * 4
        vram.view.write(5 + size, b"tail")
        assert sdma.copy_from_vram(vram, size + 4, offset=5) == payload + b"tail"
        assert len(dev.block("GMC").gart.mappings()) == 1  # one staging buffer, reused
        dev.fini()
        assert sdma.staging is None
        assert dev.block("GMC").gart.mappings() == []


def test_copies_refuse_spans_outside_the_buffer(machine):
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = bring_up(pci)
        sdma = dev.block("SDMA")
        vram = dev.memory.alloc_vram(PAGE, purpose="small")
        with pytest.raises(InvalidArgument, match="not inside"):
            sdma.copy_to_vram(vram, b"x" * 10, offset=PAGE - 4)
        with pytest.raises(InvalidArgument, match="not inside"):
            sdma.copy_from_vram(vram, 0)
        dev.fini()


def test_an_iommu_unmapped_page_faults_in_the_iommu_and_is_a_typed_error(machine, monkeypatch):
    gpu = machine.device(GPU_BDF)
    machine.kernel.unbind(GPU_AUDIO_BDF, "snd_hda_intel")  # so vfio can take the GPU's group
    with hal.open(f"vfio:{GPU_BDF}", os=machine.os, unbind=True) as pci:
        dev = bring_up(pci)
        sdma = dev.block("SDMA")
        gart = dev.block("GMC").gart
        host = pci.alloc_dma(PAGE)
        stray = host.bus_address + 64 * PAGE  # an IOVA nothing is mapped at in the container
        mapping = gart.map([host.bus_address, stray])
        vram = dev.memory.alloc_vram(2 * PAGE, purpose="target")
        posted = []
        post = gpu.ih.post
        monkeypatch.setattr(gpu.ih, "post",
                            lambda client, source, **kw: posted.append(source) or post(client, source, **kw))
        # the mapped page copies through the IOMMU
        host.region.write(0, b"through the iommu")
        sdma.wait(sdma.copy(vram.mc_address, mapping.va, 17))
        assert vram.view.read(0, 17) == b"through the iommu"
        assert machine.iommu_faults == []
        with pytest.raises(SDMAError, match="SDMA_OP_COPY"):
            sdma.wait(sdma.copy(vram.mc_address, mapping.address_of(PAGE), 16))
        assert [fault.iova for fault in machine.iommu_faults] == [stray]
        assert srcid.GFX_11_0_0__SRCID__SDMA_PAGE_FAULT in posted
        pci.free_dma(host)
