"""DMA through the sysfs backend (pci:) only where physical addresses are bus addresses, on the mock."""
from __future__ import annotations

import pytest

import hal
from hal.errors import UnsupportedOperation
from mockgpu import EDU_BDF, Machine
from mockgpu.edu import EDU_DMA_BUFFER_BASE, EDU_ID, EDU_ID_VALUE, EDU_STATUS_DMA_ERROR

EDU = f"pci:{EDU_BDF}"


def test_a_translating_iommu_refuses_physical_address_dma_and_says_what_to_do(tmp_path):
    machine = Machine.default(lock_dir=str(tmp_path), iommu_passthrough=False)
    baseline_ram = len(machine.ram.allocations)
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        with pytest.raises(UnsupportedOperation, match=f"translates DMA.*type DMA.*vfio:{EDU_BDF}.*iommu=pt"):
            dev.alloc_dma(4096)
        assert len(machine.ram.allocations) == baseline_ram
        assert dev.bar(0).read32(EDU_ID) == EDU_ID_VALUE, "config space and BARs still work without DMA"
    assert machine.iommu_faults == []


def test_discovery_says_the_sysfs_backend_has_no_dma_under_a_translating_iommu(tmp_path):
    machine = Machine.default(lock_dir=str(tmp_path), iommu_passthrough=False)
    machine.kernel.unbind(EDU_BDF, "edu")
    infos = {info.bdf: info for info in hal.list_devices(os=machine.os, all_classes=True)}
    verdict = infos[EDU_BDF].backends["pci"]
    assert verdict.startswith("ok (no DMA:") and "iommu=pt" in verdict


@pytest.mark.parametrize("settings", [{"iommu_passthrough": True}, {"iommu": False}],
                         ids=["passthrough", "no-iommu"])
def test_physical_address_dma_works_in_passthrough_and_without_an_iommu(tmp_path, edu_dma, settings):
    machine = Machine.default(lock_dir=str(tmp_path), **settings)
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        buffer = dev.alloc_dma(4096)
        buffer.region.write(0, b"physical")
        status = edu_dma(dev.bar(0), buffer.bus_address, EDU_DMA_BUFFER_BASE, 8, to_host=False)
        assert not status & EDU_STATUS_DMA_ERROR
        assert dev.bar(0).read(EDU_DMA_BUFFER_BASE, 8) == b"physical"
    machine.kernel.unbind(EDU_BDF, "edu")
    infos = {info.bdf: info for info in hal.list_devices(os=machine.os, all_classes=True)}
    assert infos[EDU_BDF].backends["pci"] == "ok"
    assert machine.iommu_faults == []
