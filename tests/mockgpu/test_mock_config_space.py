"""Config-space semantics of the PCI model, read and written as raw bytes through sysfs `config`."""
from __future__ import annotations

from autogen.linux import pci_regs

from mockgpu import EDU_BDF, GPU_BDF
from mockgpu.config import EXT_CAP_ID_MASK, EXT_CAP_NEXT_MASK
from mockgpu.bits import field_get
from mockgpu.edu import EDU_BAR0_SIZE, EDU_DEVICE_ID, EDU_VENDOR_ID
from mockgpu.navi31 import NAVI31_BAR0_DEFAULT, NAVI31_BAR4_SIZE

from mockgpu_helpers import config_read, config_write


def size_bar(m, bdf, index):
    off = pci_regs.PCI_BASE_ADDRESS_0 + 4 * index
    saved = config_read(m, bdf, off, 4)
    config_write(m, bdf, off, 4, 0xFFFFFFFF)
    sized = config_read(m, bdf, off, 4)
    config_write(m, bdf, off, 4, saved)
    return sized


def test_identity_reads(machine):
    assert config_read(machine, EDU_BDF, pci_regs.PCI_VENDOR_ID, 2) == EDU_VENDOR_ID
    assert config_read(machine, EDU_BDF, pci_regs.PCI_DEVICE_ID, 2) == EDU_DEVICE_ID
    assert config_read(machine, GPU_BDF, pci_regs.PCI_CLASS_REVISION, 4) >> 8 == 0x030000


def test_identity_is_read_only(machine):
    config_write(machine, EDU_BDF, pci_regs.PCI_VENDOR_ID, 2, 0xBEEF)
    assert config_read(machine, EDU_BDF, pci_regs.PCI_VENDOR_ID, 2) == EDU_VENDOR_ID


def test_bar_sizing_32bit(machine):
    sized = size_bar(machine, EDU_BDF, 0)
    assert sized == (~(EDU_BAR0_SIZE - 1)) & 0xFFFFFFFF
    assert sized & pci_regs.PCI_BASE_ADDRESS_SPACE == pci_regs.PCI_BASE_ADDRESS_SPACE_MEMORY


def test_bar_sizing_64bit_prefetchable_uses_two_dwords(machine):
    low = size_bar(machine, GPU_BDF, 0)
    high = size_bar(machine, GPU_BDF, 1)
    assert low & pci_regs.PCI_BASE_ADDRESS_MEM_TYPE_MASK == pci_regs.PCI_BASE_ADDRESS_MEM_TYPE_64
    assert low & pci_regs.PCI_BASE_ADDRESS_MEM_PREFETCH
    mask = ((high << 32) | low) & pci_regs.PCI_BASE_ADDRESS_MEM_MASK
    assert (~mask & ((1 << 64) - 1)) + 1 == NAVI31_BAR0_DEFAULT


def test_bar_sizing_io_bar(machine):
    sized = size_bar(machine, GPU_BDF, 4)
    assert sized & pci_regs.PCI_BASE_ADDRESS_SPACE == pci_regs.PCI_BASE_ADDRESS_SPACE_IO
    assert (~(sized & pci_regs.PCI_BASE_ADDRESS_IO_MASK) & 0xFFFFFFFF) + 1 == NAVI31_BAR4_SIZE


def test_unimplemented_bar_reads_zero_after_sizing(machine):
    assert size_bar(machine, EDU_BDF, 3) == 0


def walk_caps(m, bdf):
    found = []
    assert config_read(m, bdf, pci_regs.PCI_STATUS, 2) & pci_regs.PCI_STATUS_CAP_LIST
    pos = config_read(m, bdf, pci_regs.PCI_CAPABILITY_LIST, 1)
    while pos:
        found.append(config_read(m, bdf, pos, 1))
        pos = config_read(m, bdf, pos + 1, 1)
    return found


def walk_ext_caps(m, bdf):
    found = []
    pos = pci_regs.PCI_CFG_SPACE_SIZE
    while pos:
        header = config_read(m, bdf, pos, 4)
        if header == 0:
            break
        found.append(header & EXT_CAP_ID_MASK)
        pos = field_get(header, EXT_CAP_NEXT_MASK)
    return found


def test_capability_walk(machine):
    assert walk_caps(machine, EDU_BDF) == [pci_regs.PCI_CAP_ID_PM, pci_regs.PCI_CAP_ID_MSI,
                                           pci_regs.PCI_CAP_ID_EXP, pci_regs.PCI_CAP_ID_MSIX]
    assert pci_regs.PCI_CAP_ID_EXP in walk_caps(machine, "0000:00:01.0")
    assert walk_ext_caps(machine, EDU_BDF) == []
    assert walk_ext_caps(machine, GPU_BDF) == [pci_regs.PCI_EXT_CAP_ID_REBAR]


def pcie_offset(m, bdf):
    pos = config_read(m, bdf, pci_regs.PCI_CAPABILITY_LIST, 1)
    while config_read(m, bdf, pos, 1) != pci_regs.PCI_CAP_ID_EXP:
        pos = config_read(m, bdf, pos + 1, 1)
    return pos


def test_link_capabilities_and_status(machine):
    exp = pcie_offset(machine, GPU_BDF)
    lnkcap = config_read(machine, GPU_BDF, exp + pci_regs.PCI_EXP_LNKCAP, 4)
    lnksta = config_read(machine, GPU_BDF, exp + pci_regs.PCI_EXP_LNKSTA, 2)
    assert field_get(lnkcap, pci_regs.PCI_EXP_LNKCAP_SLS) == pci_regs.PCI_EXP_LNKCAP_SLS_16_0GB
    assert field_get(lnkcap, pci_regs.PCI_EXP_LNKCAP_MLW) == 16
    assert field_get(lnksta, pci_regs.PCI_EXP_LNKSTA_NLW) == 16
    machine.set_link(GPU_BDF, pci_regs.PCI_EXP_LNKSTA_CLS_2_5GB, 4)
    lnksta = config_read(machine, GPU_BDF, exp + pci_regs.PCI_EXP_LNKSTA, 2)
    assert field_get(lnksta, pci_regs.PCI_EXP_LNKSTA_CLS) == pci_regs.PCI_EXP_LNKSTA_CLS_2_5GB
    assert machine.os.read_text(f"/sys/bus/pci/devices/{GPU_BDF}/current_link_width") == "4\n"
    assert machine.os.read_text(f"/sys/bus/pci/devices/{GPU_BDF}/current_link_speed") == "2.5 GT/s PCIe\n"
    assert machine.os.read_text(f"/sys/bus/pci/devices/{GPU_BDF}/max_link_speed") == "16.0 GT/s PCIe\n"


def test_flr_advertised_only_where_implemented(machine):
    edu_cap = config_read(machine, EDU_BDF, pcie_offset(machine, EDU_BDF) + pci_regs.PCI_EXP_DEVCAP, 4)
    gpu_cap = config_read(machine, GPU_BDF, pcie_offset(machine, GPU_BDF) + pci_regs.PCI_EXP_DEVCAP, 4)
    assert edu_cap & pci_regs.PCI_EXP_DEVCAP_FLR
    assert not gpu_cap & pci_regs.PCI_EXP_DEVCAP_FLR


def test_status_error_bits_are_write_one_to_clear(machine):
    function = machine.device(EDU_BDF)
    function.cfg.set_value(pci_regs.PCI_STATUS, 2, function.cfg.read(pci_regs.PCI_STATUS, 2)
                           | pci_regs.PCI_STATUS_REC_MASTER_ABORT)
    config_write(machine, EDU_BDF, pci_regs.PCI_STATUS, 2, pci_regs.PCI_STATUS_REC_MASTER_ABORT)
    status = config_read(machine, EDU_BDF, pci_regs.PCI_STATUS, 2)
    assert not status & pci_regs.PCI_STATUS_REC_MASTER_ABORT
    assert status & pci_regs.PCI_STATUS_CAP_LIST


def test_gpu_is_multifunction_and_bridges_have_bus_numbers(machine):
    header = config_read(machine, GPU_BDF, pci_regs.PCI_HEADER_TYPE, 1)
    assert header & ~pci_regs.PCI_HEADER_TYPE_MASK
    root_port_header = config_read(machine, "0000:00:02.0", pci_regs.PCI_HEADER_TYPE, 1)
    assert root_port_header == pci_regs.PCI_HEADER_TYPE_BRIDGE
    assert config_read(machine, "0000:03:00.0", pci_regs.PCI_SECONDARY_BUS, 1) == 4
    assert config_read(machine, "0000:00:02.0", pci_regs.PCI_SUBORDINATE_BUS, 1) == 4


def test_unaligned_multi_byte_config_read_is_split(machine):
    whole = config_read(machine, EDU_BDF, 0, 4)
    assert config_read(machine, EDU_BDF, 1, 3) == whole >> 8
