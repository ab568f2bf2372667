"""Capability walks and BAR decoding over a hand-built config space (loops and bad pointers included)."""
from __future__ import annotations

from autogen.linux import pci_regs as regs

from hal import config


class FakeConfig:
    """A 4 KiB config space in a bytearray; BAR registers answer sizing like hardware."""

    def __init__(self, bar_sizes: dict[int, int] | None = None) -> None:
        self.space = bytearray(regs.PCI_CFG_SPACE_EXP_SIZE)
        self.bar_sizes = bar_sizes or {}

    def cfg_read8(self, offset):
        return self.space[offset]

    def cfg_read16(self, offset):
        return int.from_bytes(self.space[offset:offset + 2], "little")

    def cfg_read32(self, offset):
        return int.from_bytes(self.space[offset:offset + 4], "little")

    def cfg_write16(self, offset, value):
        self.space[offset:offset + 2] = value.to_bytes(2, "little")

    def cfg_write32(self, offset, value):
        index = (offset - regs.PCI_BASE_ADDRESS_0) // 4
        if 0 <= index < 6 and offset % 4 == 0 and index in self.bar_sizes:
            type_bits = self.cfg_read32(offset) & 0xF
            value = (value & ~(self.bar_sizes[index] - 1) & 0xFFFFFFFF & ~0xF) | type_bits
        self.space[offset:offset + 4] = value.to_bytes(4, "little")


def add_capability(cfg, offset, cap_id, next_offset):
    cfg.space[offset] = cap_id
    cfg.space[offset + 1] = next_offset


def test_capability_walk_follows_the_list_and_stops_on_a_loop():
    cfg = FakeConfig()
    cfg.cfg_write16(regs.PCI_STATUS, regs.PCI_STATUS_CAP_LIST)
    cfg.space[regs.PCI_CAPABILITY_LIST] = 0x40
    add_capability(cfg, 0x40, regs.PCI_CAP_ID_PM, 0x50)
    add_capability(cfg, 0x50, regs.PCI_CAP_ID_MSI, 0x60)
    add_capability(cfg, 0x60, regs.PCI_CAP_ID_EXP, 0x40)  # loops back
    caps = config.capabilities(cfg)
    assert [(c.cap_id, c.offset) for c in caps] == [
        (regs.PCI_CAP_ID_PM, 0x40), (regs.PCI_CAP_ID_MSI, 0x50), (regs.PCI_CAP_ID_EXP, 0x60)]
    assert config.find_capability(cfg, regs.PCI_CAP_ID_EXP) == 0x60
    assert config.find_capability(cfg, regs.PCI_CAP_ID_MSIX) is None


def test_capability_walk_without_the_status_bit_is_empty():
    cfg = FakeConfig()
    cfg.space[regs.PCI_CAPABILITY_LIST] = 0x40
    add_capability(cfg, 0x40, regs.PCI_CAP_ID_PM, 0)
    assert config.capabilities(cfg) == []


def test_extended_capability_walk_is_bounded_on_a_self_loop():
    cfg = FakeConfig()
    header = regs.PCI_EXT_CAP_ID_REBAR | (1 << 16) | (0x100 << 20)  # next points at itself
    cfg.cfg_write32(0x100, header)
    caps = config.extended_capabilities(cfg)
    assert [(c.cap_id, c.offset) for c in caps] == [(regs.PCI_EXT_CAP_ID_REBAR, 0x100)]


def test_bar_sizing_decodes_64bit_and_32bit_bars_and_restores_them():
    cfg = FakeConfig(bar_sizes={0: 1 << 20, 2: 1 << 12})
    cfg.cfg_write16(regs.PCI_COMMAND, regs.PCI_COMMAND_MEMORY)
    bar0 = 0xC0000000 | regs.PCI_BASE_ADDRESS_MEM_TYPE_64 | regs.PCI_BASE_ADDRESS_MEM_PREFETCH
    cfg.space[0x10:0x14] = bar0.to_bytes(4, "little")
    cfg.space[0x18:0x1C] = (0xD0000000).to_bytes(4, "little")
    bars = config.decode_bars(cfg)
    assert [(b.index, b.size, b.is_64bit, b.prefetchable) for b in bars[:2]] == [
        (0, 1 << 20, True, True), (2, 1 << 12, False, False)]
    assert bars[0].address == 0xC0000000
    assert cfg.cfg_read32(0x10) == bar0
    assert cfg.cfg_read16(regs.PCI_COMMAND) == regs.PCI_COMMAND_MEMORY


def test_upper_half_of_a_64bit_bar_is_recognised_from_bar0_on():
    cfg = FakeConfig()
    bar64 = regs.PCI_BASE_ADDRESS_MEM_TYPE_64 | regs.PCI_BASE_ADDRESS_MEM_PREFETCH
    cfg.space[0x10:0x14] = bar64.to_bytes(4, "little")
    # BAR1 (the upper address bits) happens to look like a 64-bit memory BAR itself
    cfg.space[0x14:0x18] = bar64.to_bytes(4, "little")
    cfg.space[0x18:0x1C] = (0xD0000000).to_bytes(4, "little")
    upper = [index for index in range(6) if config.is_upper_half_of_64bit_bar(cfg, index)]
    assert upper == [1]


def test_hot_plug_capable_needs_the_slot_flag_and_the_hpc_bit():
    cfg = FakeConfig()
    pcie = 0x40
    cfg.cfg_write16(regs.PCI_STATUS, regs.PCI_STATUS_CAP_LIST)
    cfg.space[regs.PCI_CAPABILITY_LIST] = pcie
    add_capability(cfg, pcie, regs.PCI_CAP_ID_EXP, 0)
    cfg.cfg_write32(pcie + regs.PCI_EXP_SLTCAP, regs.PCI_EXP_SLTCAP_HPC)
    assert not config.hot_plug_capable(cfg)  # no slot implemented: Slot Capabilities is not there
    cfg.cfg_write16(pcie + regs.PCI_EXP_FLAGS, regs.PCI_EXP_FLAGS_SLOT)
    assert config.hot_plug_capable(cfg)
    cfg.cfg_write32(pcie + regs.PCI_EXP_SLTCAP, 0)
    assert not config.hot_plug_capable(cfg)
