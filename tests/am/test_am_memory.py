"""The AM VRAM manager on the mock Navi31: FB location from MMHUB, reservations, buffers, views."""
from __future__ import annotations

import pytest

import hal
from drivers.am import discovery
from drivers.am.device import AMDevice
from drivers.am.memory import VBIOS_VGA_ALLOCATION
from hal.errors import InvalidArgument, OutOfMemory
from mockgpu import Machine
from mockgpu.amd import Navi31GPU
from mockgpu.amd.gpu import NAVI31_FB_BASE
from mockgpu.ports import RootPort

MIB = 1 << 20
BDF = "0000:01:00.0"


def small_machine(tmp_path, vram_size: int) -> Machine:
    m = Machine(lock_dir=str(tmp_path))
    m.add_device(RootPort(), "0000:00:01.0")
    m.add_device(Navi31GPU(vram_size=vram_size), BDF, "0000:00:01.0")
    return m


@pytest.fixture
def small(tmp_path):
    """512 MiB of VRAM behind the default 256 MiB BAR0: half of it is past BAR0."""
    return small_machine(tmp_path, 512 * MIB)


def test_fb_location_comes_from_mmhub_as_the_ifwi_left_it(small):
    with hal.open(f"pci:{BDF}", os=small.os, unbind=True) as pci:
        dev = AMDevice(pci, block_order=())
        assert dev.memory.fb_base == NAVI31_FB_BASE
        assert dev.memory.fb_top == NAVI31_FB_BASE + 512 * MIB - 1
        assert dev.memory.vram_base_offset == 0
        dev.fini()


def test_buffers_avoid_the_reservations_and_views_reach_vram(small):
    gpu = small.device(BDF)
    with hal.open(f"pci:{BDF}", os=small.os, unbind=True) as pci:
        dev = AMDevice(pci, block_order=())
        mem = dev.memory
        names = {r.name: (r.offset, r.size) for r in mem.reservations}
        assert names["stolen VGA memory"] == (0, VBIOS_VGA_ALLOCATION)
        top = 512 * MIB - discovery.DISCOVERY_TMR_OFFSET
        buffers = [mem.alloc_vram(MIB, purpose=f"b{i}") for i in range(8)]
        for buf in buffers:
            assert buf.offset >= VBIOS_VGA_ALLOCATION and buf.offset + buf.size <= top
            assert buf.mc_address == NAVI31_FB_BASE + buf.offset
            assert buf.cpu_visible
        buffers[3].view.write32(8, 0xC0FFEE11)
        assert gpu.vram[buffers[3].offset + 8:buffers[3].offset + 12] == (0xC0FFEE11).to_bytes(4, "little")
        aligned = mem.alloc_vram(2 * MIB, alignment=2 * MIB, purpose="huge")
        assert aligned.offset % (2 * MIB) == 0
        dev.fini()


def test_a_buffer_past_bar0_is_reached_through_the_mm_index_window(small):
    gpu = small.device(BDF)
    with hal.open(f"pci:{BDF}", os=small.os, unbind=True) as pci:
        dev = AMDevice(pci, block_order=())
        mem = dev.memory
        visible = mem.alloc_vram(mem.stats()[0].largest_free, purpose="fill BAR0")
        far = mem.alloc_vram(64 * 1024, purpose="past BAR0")
        assert visible.cpu_visible and not far.cpu_visible
        assert far.offset >= pci.bar(0).size
        far.view.write32(4, 0x12345678)
        assert gpu.vram[far.offset + 4:far.offset + 8] == (0x12345678).to_bytes(4, "little")
        assert far.view.read32(4) == 0x12345678
        dev.fini()


def test_exhaustion_is_out_of_memory_naming_the_purpose(small):
    with hal.open(f"pci:{BDF}", os=small.os, unbind=True) as pci:
        dev = AMDevice(pci, block_order=())
        with pytest.raises(OutOfMemory, match="ring") as info:
            dev.memory.alloc_vram(512 * MIB, purpose="ring")
        assert info.value.requested == 512 * MIB
        assert 0 < info.value.largest_free < 512 * MIB
        dev.fini()


def test_free_gives_the_space_back_and_a_double_free_is_refused(small):
    with hal.open(f"pci:{BDF}", os=small.os, unbind=True) as pci:
        dev = AMDevice(pci, block_order=())
        mem = dev.memory
        free_before = sum(s.free for s in mem.stats())
        buf = mem.alloc_vram(3 * MIB, purpose="x")
        assert sum(s.free for s in mem.stats()) == free_before - 3 * MIB
        mem.free_vram(buf)
        assert sum(s.free for s in mem.stats()) == free_before
        with pytest.raises(InvalidArgument, match="freed twice"):
            mem.free_vram(buf)
        dev.fini()


def test_an_unprogrammed_memory_controller_is_refused(small):
    gpu = small.device(BDF)
    gpu.regfile.set("MMHUB", "regMMMC_VM_FB_LOCATION_TOP", 0)
    with hal.open(f"pci:{BDF}", os=small.os, unbind=True) as pci:
        with pytest.raises(InvalidArgument, match="FB_LOCATION"):
            AMDevice(pci, block_order=())
