"""The mock Navi31 at the register and memory layer: register file, discovery table, NBIO windows,
persistence across a process exit, resets and surprise removal."""
from __future__ import annotations

import pytest

import hal
from autogen.amd import discovery as d
from autogen.amd.regs import nbio_4_3_0
from mockgpu import GPU_BDF, Machine
from mockgpu.amd.discovery_table import DISCOVERY_TMR_OFFSET, checksum, table_offset
from mockgpu.amd.gpu import IFWI_INIT_DONE

GPU = f"pci:{GPU_BDF}"
MM_INDEX = nbio_4_3_0.regBIF_BX_PF0_MM_INDEX


@pytest.fixture
def machine(tmp_path):
    return Machine.default(lock_dir=str(tmp_path))


def address(gpu, block: str, name: str) -> int:
    return gpu.regfile.address(block, name)


def test_unowned_registers_read_back_and_strict_mode_lists_them(machine):
    gpu = machine.device(GPU_BDF)
    scratch = address(gpu, "GC", "regSCRATCH_REG3")
    memsize = address(gpu, "NBIO", "regRCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE")
    gpu.regfile.strict = True
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        pci.enable_bus_master()
        mmio = pci.bar(5)
        mmio.write32(scratch, 0x12345678)
        assert mmio.read32(scratch) == 0x12345678
        assert mmio.read32(memsize) == gpu.vram_size >> 20
        mmio.write32(memsize, 1)  # read-only: the size stays
        assert mmio.read32(memsize) == gpu.vram_size >> 20
    kinds = [(access.kind, access.name) for access in gpu.regfile.unowned]
    assert kinds == [("write", "GC regSCRATCH_REG3"), ("read", "GC regSCRATCH_REG3")]


def test_the_discovery_table_sits_64_kib_below_the_top_of_vram(machine):
    gpu = machine.device(GPU_BDF)
    start = table_offset(gpu.vram_size)
    assert start == gpu.vram_size - DISCOVERY_TMR_OFFSET
    blob = bytes(gpu.vram[start:start + len(gpu.discovery_blob)])
    header = d.binary_header.from_bytes(blob[:d.binary_header.SIZE])
    assert header.binary_signature == d.BINARY_SIGNATURE
    covered = d.binary_header.offset_of("binary_size")
    assert checksum(blob[covered:header.binary_size]) == header.binary_checksum
    ip_table = header.table_list[d.IP_DISCOVERY]
    ip_header = d.ip_discovery_header.from_bytes(blob[ip_table.offset:][:d.ip_discovery_header.SIZE])
    assert ip_header.signature == d.DISCOVERY_TABLE_SIGNATURE
    assert checksum(blob[ip_table.offset:ip_table.offset + ip_header.size]) == ip_table.checksum


def test_the_mm_index_window_reaches_vram_and_registers(machine):
    gpu = machine.device(GPU_BDF)
    top = gpu.vram_size - 8  # far past the 256 MiB BAR0
    gpu.vram[top:top + 4] = b"\x11\x22\x33\x44"
    index = address(gpu, "NBIO", "regBIF_BX_PF0_MM_INDEX")
    index_hi = address(gpu, "NBIO", "regBIF_BX_PF0_MM_INDEX_HI")
    data = address(gpu, "NBIO", "regBIF_BX_PF0_MM_DATA")
    aperture = MM_INDEX.encode(MM_APER=1)
    offset_mask = MM_INDEX.field("MM_OFFSET").mask
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        pci.enable_bus_master()
        mmio = pci.bar(5)
        bar0 = pci.bar(0)
        mmio.write32(index_hi, top >> 31)
        mmio.write32(index, aperture | (top & offset_mask))
        assert mmio.read32(data) == 0x44332211
        mmio.write32(data, 0xA5A5A5A5)
        assert bytes(gpu.vram[top:top + 4]) == b"\xa5" * 4
        # inside BAR0 the window and BAR0 show the same bytes
        bar0.write32(0x1000, 0xDEADBEEF)
        mmio.write32(index_hi, 0)
        mmio.write32(index, aperture | 0x1000)
        assert mmio.read32(data) == bar0.read32(0x1000) == 0xDEADBEEF
        # aperture bit clear: the register space
        scratch = address(gpu, "GC", "regSCRATCH_REG1")
        mmio.write32(index, scratch)
        mmio.write32(data, 0x0BADCAFE)
        assert mmio.read32(scratch) == 0x0BADCAFE


def test_registers_and_vram_survive_the_process_closing_the_device(machine):
    gpu = machine.device(GPU_BDF)
    scratch = address(gpu, "GC", "regSCRATCH_REG0")
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        pci.enable_bus_master()
        pci.bar(5).write32(scratch, 0x5EED)
        pci.bar(0).write32(0x2000, 0xFEEDFACE)
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        pci.enable_bus_master()
        assert pci.bar(5).read32(scratch) == 0x5EED
        assert pci.bar(0).read32(0x2000) == 0xFEEDFACE


def test_a_pci_reset_restores_power_on_registers_and_keeps_vram(machine):
    gpu = machine.device(GPU_BDF)
    gpu.regfile.set("GC", "regSCRATCH_REG0", 0x5EED)
    gpu.regfile.set("MP0", "regMP0_SMN_C2PMSG_33", 0)
    gpu.vram[0:4] = b"keep"
    gpu.hardware_reset()
    assert gpu.regfile.get("GC", "regSCRATCH_REG0") == 0
    assert gpu.regfile.get("MP0", "regMP0_SMN_C2PMSG_33") == IFWI_INIT_DONE
    assert bytes(gpu.vram[0:4]) == b"keep"
    start = table_offset(gpu.vram_size)
    assert bytes(gpu.vram[start:start + len(gpu.discovery_blob)]) == gpu.discovery_blob


def test_hdp_flush_request_is_acknowledged_in_done(machine):
    gpu = machine.device(GPU_BDF)
    request = address(gpu, "NBIO", "regBIF_BX_PF0_GPU_HDP_FLUSH_REQ")
    done = address(gpu, "NBIO", "regBIF_BX_PF0_GPU_HDP_FLUSH_DONE")
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        pci.enable_bus_master()
        mmio = pci.bar(5)
        assert mmio.read32(done) == 0
        mmio.write32(request, 0x1)  # CP0
        assert mmio.read32(done) == 0x1
    assert gpu.hdp_flushes == 1


def test_a_vanished_gpu_reads_all_ones(machine):
    gpu = machine.device(GPU_BDF)
    memsize = address(gpu, "NBIO", "regRCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE")
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        pci.enable_bus_master()
        mmio = pci.bar(5)
        assert mmio.read32(memsize) == gpu.vram_size >> 20
        gpu.vanish()
        assert gpu.mmio_read(5, memsize, 4) == b"\xff" * 4
        assert not pci.lost  # nothing read through hal yet
