"""Small details a one-token slip in hal/ or mockgpu/ would break, each pinned by a test: the
address of a 64-bit BAR, all-ones detection on 64-bit reads of memory BARs, the PCIe control
registers kept across resets, DMA teardown, the MSI-X Table Size encoding, edu FLR and DMA bounds."""
from __future__ import annotations

import pytest
from autogen.linux import pci_regs as regs

import hal
from hal.errors import DeviceLost, InvalidArgument, UnsupportedOperation
from hal.os import PAGE_SIZE
from hal.region import WatchedMemoryRegion
from hal.vfio.iova import IOVAAllocator
from mockgpu import EDU_BDF, GPU_AUDIO_BDF, GPU_BDF
from mockgpu.edu import (EDU_DMA_BUFFER_BASE, EDU_DMA_BUFFER_SIZE, EDU_INTR_RAISE, EDU_MSIX_VECTORS,
                         EDU_STATUS_DMA_ERROR)

FOUR_GIB = 1 << 32
ALL_ONES64 = (1 << 64) - 1


def resource_start(machine, bdf: str, index: int) -> int:
    """The kernel's view: the first field of line `index` of the sysfs `resource` file."""
    lines = machine.os.read_text(f"/sys/bus/pci/devices/{bdf}/resource").splitlines()
    return int(lines[index].split()[0], 16)


# -- the address of a 64-bit BAR -----------------------------------------------------------------
@pytest.mark.parametrize("backend", ["pci", "vfio"])
def test_a_64bit_bar_address_has_its_upper_dword(machine, backend):
    machine.kernel.unbind(GPU_AUDIO_BDF, "snd_hda_intel")  # so its IOMMU group is usable by vfio
    start = resource_start(machine, GPU_BDF, 0)
    assert start >= FOUR_GIB  # the mock places 64-bit prefetchable BARs above 4 GiB
    assert machine.device(GPU_BDF).bar_address(0) == start  # what the hardware decodes
    with hal.open(f"{backend}:{GPU_BDF}", os=machine.os, unbind=True) as dev:
        vram = dev.bar_info(0)
        assert vram.is_64bit and vram.address == start
        assert dev.bar_info(2).address == resource_start(machine, GPU_BDF, 2)
        assert dev.bars()[0].address == start


# -- all ones on 64-bit reads of a memory-backed BAR ---------------------------------------------
def test_64bit_all_ones_on_a_memory_bar_checks_the_device(machine):
    with hal.open(f"pci:{GPU_BDF}", os=machine.os, unbind=True) as dev:
        vram = dev.bar(0)
        assert isinstance(vram, WatchedMemoryRegion)  # the memoryview fast path, watched
        vram.write64(0x100, 0x00000000FFFFFFFF)
        vram.write64(0x108, 0xFFFFFFFF00000000)
        vram.write64(0x110, ALL_ONES64)
        assert vram.read64(0x110) == ALL_ONES64  # a legitimate value: the device still answers
        # known limit of the mock: a memory BAR mapped before a surprise removal keeps its contents,
        # so only the vendor ID probe can tell that the device is gone
        machine.surprise_remove(GPU_BDF)
        assert vram.read64(0x100) == 0x00000000FFFFFFFF  # half ones is not all ones
        assert vram.read64(0x108) == 0xFFFFFFFF00000000
        with pytest.raises(DeviceLost):
            vram.read64(0x110)


# -- PCIe control registers across resets --------------------------------------------------------
@pytest.mark.parametrize(("backend", "method"), [("pci", "flr"), ("pci", "bus"), ("vfio", "bus")])
def test_devctl2_and_lnkctl2_survive_flr_and_bus_reset(machine, backend, method):
    """FLR and the raw secondary bus reset through sysfs, where hal restores the registers itself,
    and a bus reset of a device open through vfio-pci, where the kernel's pci_restore_state does
    it as well (either one keeps the register)."""
    if backend == "pci":
        # without "bus" in the kernel's selection hal toggles the bridge itself
        machine.os.write_text(f"/sys/bus/pci/devices/{EDU_BDF}/reset_method", "flr")
    with hal.open(f"{backend}:{EDU_BDF}", os=machine.os, unbind=True) as dev:
        pcie = dev.find_capability(regs.PCI_CAP_ID_EXP)
        devctl2 = regs.PCI_EXP_DEVCTL2_COMP_TMOUT_DIS | regs.PCI_EXP_DEVCTL2_LTR_EN
        dev.cfg_write16(pcie + regs.PCI_EXP_DEVCTL2, devctl2)
        assert dev.cfg_read16(pcie + regs.PCI_EXP_DEVCTL2) == devctl2  # the mock keeps what it takes
        # vfio_pci_config.c init_pci_cap_exp_perm lets user space write DevCtl2 but not LnkCtl2
        target_speed = regs.PCI_EXP_LNKCTL2_TLS_2_5GT
        if backend == "pci":
            dev.cfg_write16(pcie + regs.PCI_EXP_LNKCTL2, target_speed)
        lnkctl2 = dev.cfg_read16(pcie + regs.PCI_EXP_LNKCTL2)
        edu = machine.device(EDU_BDF)
        resets = edu.reset_count
        assert dev.reset(method) == method
        assert edu.reset_count == resets + 1  # the registers really went back to power-on values
        assert dev.cfg_read16(pcie + regs.PCI_EXP_DEVCTL2) == devctl2
        assert dev.cfg_read16(pcie + regs.PCI_EXP_LNKCTL2) == lnkctl2
        if backend == "pci":
            assert lnkctl2 & regs.PCI_EXP_LNKCTL2_TLS == target_speed


# -- DMA teardown --------------------------------------------------------------------------------
def test_free_dma_leaves_no_mapping_and_the_next_allocation_reuses_the_range(machine, edu_dma):
    with hal.open(f"vfio:{EDU_BDF}", os=machine.os, unbind=True) as dev:
        domain = machine.vfio.domain_for(machine.device(EDU_BDF))
        first = dev.alloc_dma(2 * PAGE_SIZE)
        assert [(m.iova, m.size) for m in domain.mappings] == [(first.bus_address, 2 * PAGE_SIZE)]
        dev.free_dma(first)
        assert domain.mappings == []
        assert machine.locked_memory_bytes == 0
        second = dev.alloc_dma(2 * PAGE_SIZE)
        assert second.bus_address == first.bus_address  # the IOVA range went back to the allocator
        second.region.write(0, b"second")
        status = edu_dma(dev.bar(0), second.bus_address, EDU_DMA_BUFFER_BASE, 6, to_host=False)
        assert not status & EDU_STATUS_DMA_ERROR
        assert dev.bar(0).read(EDU_DMA_BUFFER_BASE, 6) == b"second"


def test_iova_allocator_refuses_nonsense():
    allocator = IOVAAllocator()
    with pytest.raises(InvalidArgument, match="positive"):
        allocator.allocate(0)
    with pytest.raises(InvalidArgument, match="alignment"):
        allocator.allocate(PAGE_SIZE, alignment=3 * PAGE_SIZE)
    with pytest.raises(InvalidArgument, match="was not allocated"):
        allocator.free(0x1234000)


# -- the MSI-X Table Size field ------------------------------------------------------------------
def test_msix_table_size_is_n_minus_1_and_n_vectors_work(machine):
    with hal.open(f"vfio:{EDU_BDF}", os=machine.os, unbind=True) as dev:
        msix = dev.find_capability(regs.PCI_CAP_ID_MSIX)
        table_size = dev.cfg_read16(msix + regs.PCI_MSIX_FLAGS) & regs.PCI_MSIX_FLAGS_QSIZE
        assert table_size + 1 == EDU_MSIX_VECTORS
        with pytest.raises(UnsupportedOperation, match=f"offers {EDU_MSIX_VECTORS} msix vectors"):
            dev.enable_interrupts("msix", EDU_MSIX_VECTORS + 1)
        dev.enable_interrupts("msix", EDU_MSIX_VECTORS)
        dev.bar(0).write32(EDU_INTR_RAISE, 1)
        assert dev.wait_irq(0, timeout_s=1.0) == 1
    with hal.open(f"pci:{GPU_BDF}", os=machine.os, unbind=True) as gpu:
        msix = gpu.find_capability(regs.PCI_CAP_ID_MSIX)
        vectors = machine.device(GPU_BDF).msix.vectors
        assert gpu.cfg_read16(msix + regs.PCI_MSIX_FLAGS) & regs.PCI_MSIX_FLAGS_QSIZE == vectors - 1


# -- edu: FLR clears the buffer; a DMA may end exactly at its end ----------------------------------
@pytest.mark.parametrize("method", ["flr", "vfio"])
def test_flr_clears_the_edu_buffer(machine, method):
    with hal.open(f"vfio:{EDU_BDF}", os=machine.os, unbind=True) as dev:
        bar = dev.bar(0)
        bar.write(EDU_DMA_BUFFER_BASE + EDU_DMA_BUFFER_SIZE - 8, b"lastword")
        bar.write32(EDU_DMA_BUFFER_BASE, 0x12345678)
        assert dev.reset(method) == method
        assert bar.read(EDU_DMA_BUFFER_BASE, EDU_DMA_BUFFER_SIZE) == bytes(EDU_DMA_BUFFER_SIZE)


@pytest.mark.parametrize("to_host", [False, True])
def test_a_dma_may_end_exactly_at_the_end_of_the_edu_buffer(machine, edu_dma, to_host):
    with hal.open(f"vfio:{EDU_BDF}", os=machine.os, unbind=True) as dev:
        bar = dev.bar(0)
        host = dev.alloc_dma(PAGE_SIZE)
        host.region.write(0, b"0123456789abcdef")
        last = EDU_DMA_BUFFER_BASE + EDU_DMA_BUFFER_SIZE - 16
        bar.write(last, b"fedcba9876543210")
        assert bar.read32(EDU_DMA_BUFFER_BASE + EDU_DMA_BUFFER_SIZE - 4) == int.from_bytes(b"3210", "little")
        src, dst = (last, host.bus_address) if to_host else (host.bus_address, last)
        assert not edu_dma(bar, src, dst, 16, to_host=to_host) & EDU_STATUS_DMA_ERROR
        if to_host:
            assert host.region.read(0, 16) == b"fedcba9876543210"
        else:
            assert bar.read(last, 16) == b"0123456789abcdef"
        src, dst = (last + 1, host.bus_address) if to_host else (host.bus_address, last + 1)
        assert edu_dma(bar, src, dst, 16, to_host=to_host) & EDU_STATUS_DMA_ERROR  # one byte past
        buffer = EDU_DMA_BUFFER_BASE
        whole = (buffer, host.bus_address) if to_host else (host.bus_address, buffer)
        assert not edu_dma(bar, *whole, EDU_DMA_BUFFER_SIZE, to_host=to_host) & EDU_STATUS_DMA_ERROR
        assert edu_dma(bar, *whole, EDU_DMA_BUFFER_SIZE + 1, to_host=to_host) & EDU_STATUS_DMA_ERROR
