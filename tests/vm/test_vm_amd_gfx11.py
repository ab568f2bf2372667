"""drivers.vm.amd_gfx11: the GFX11 entry bits, checked against amdgpu's headers when the pinned
kernel source is on the machine, and the encodings amdgpu would produce for each kind of entry."""
from __future__ import annotations

import re

import pytest

from autogen import manifest, sources
from drivers.vm import amd_gfx11
from drivers.vm.amd_gfx11 import GFX11, PDB0, PDB1, PDB2, PTB
from drivers.vm.pagetable import EntryKind, PageFlags, READ_WRITE
from hal.errors import InvalidArgument

AMDGPU_VM_H = f"{manifest.AMD_DIR}/amdgpu/amdgpu_vm.h"
NAVI10_ENUM_H = f"{manifest.AMD_DIR}/include/navi10_enum.h"


def _kernel_text(path: str) -> str:
    try:
        root = sources.source_root(manifest.LINUX_SOURCE_6_12, (path,), download=False)
    except sources.SourceUnavailable as exc:
        pytest.skip(f"linux-source-6.12 not on this machine: {exc}")
    return (root / path).read_text()


def _shift_define(text: str, name: str) -> int:
    match = re.search(rf"#define\s+{name}\s+\(1ULL << (\d+)\)", text)
    assert match, f"{name} not found as (1ULL << n)"
    return 1 << int(match.group(1))


@pytest.mark.parametrize("name, value", [
    ("AMDGPU_PTE_VALID", amd_gfx11.PTE_VALID),
    ("AMDGPU_PTE_SYSTEM", amd_gfx11.PTE_SYSTEM),
    ("AMDGPU_PTE_SNOOPED", amd_gfx11.PTE_SNOOPED),
    ("AMDGPU_PTE_TMZ", amd_gfx11.PTE_TMZ),
    ("AMDGPU_PTE_EXECUTABLE", amd_gfx11.PTE_EXECUTABLE),
    ("AMDGPU_PTE_READABLE", amd_gfx11.PTE_READABLE),
    ("AMDGPU_PTE_WRITEABLE", amd_gfx11.PTE_WRITEABLE),
    ("AMDGPU_PTE_PRT", amd_gfx11.PTE_PRT),
    ("AMDGPU_PDE_PTE", amd_gfx11.PDE_PTE),
    ("AMDGPU_PTE_LOG", amd_gfx11.PTE_LOG),
    ("AMDGPU_PTE_TF", amd_gfx11.PTE_TF),
    ("AMDGPU_PTE_NOALLOC", amd_gfx11.PTE_NOALLOC),
])
def test_bits_match_amdgpu_vm_h(name, value):
    assert _shift_define(_kernel_text(AMDGPU_VM_H), name) == value


def test_fragment_and_mtype_fields_match_amdgpu_vm_h_and_navi10_enum_h():
    text = _kernel_text(AMDGPU_VM_H)
    assert re.search(r"#define AMDGPU_PTE_FRAG\(x\)\s+\(\(x & 0x1fULL\) << 7\)", text)
    assert re.search(r"#define AMDGPU_PTE_MTYPE_NV10_SHIFT\(mtype\)\s+\(\(uint64_t\)\(mtype\) << 48\)",
                     text)
    assert "AMDGPU_PTE_MTYPE_NV10_MASK     AMDGPU_PTE_MTYPE_NV10_SHIFT(7ULL)" in text
    enums = _kernel_text(NAVI10_ENUM_H)
    for name in ("MTYPE_NC", "MTYPE_WC", "MTYPE_CC", "MTYPE_UC"):
        match = re.search(rf"^{name}\s+= (0x[0-9a-fA-F]+),", enums, re.MULTILINE)
        assert int(match.group(1), 16) == getattr(amd_gfx11, name)


def test_levels_are_four_of_nine_bits_over_48_bit_addresses():
    assert [level.name for level in GFX11.levels] == ["PDB2", "PDB1", "PDB0", "PTB"]
    assert [level.shift for level in GFX11.levels] == [39, 30, 21, 12]
    assert all(level.entries == 512 and level.table_bytes == 4096 for level in GFX11.levels)
    assert GFX11.va_bits == 48
    assert [level.leaf for level in GFX11.levels] == [False, True, True, True]
    assert (amd_gfx11.PAGE_TABLE_DEPTH, amd_gfx11.PAGE_TABLE_BLOCK_SIZE) == (3, 0)


def test_vram_pte_has_valid_read_write_fragment_and_mtype_nc():
    raw = GFX11.encode_leaf(PTB, 0x1234_5000, READ_WRITE, False, 4)
    assert raw == 0x1234_5000 | 1 | (1 << 5) | (1 << 6) | (4 << 7)


def test_huge_leaves_carry_the_pde_as_pte_bit():
    for level in (PDB1, PDB0):
        raw = GFX11.encode_leaf(level, 1 << 30, PageFlags.READ, False, 18)
        assert raw & (1 << 54)
        entry = GFX11.decode(level, raw)
        assert (entry.kind, entry.address, entry.fragment) == (EntryKind.LEAF, 1 << 30, 18)


def test_system_and_uncached_pages():
    raw = GFX11.encode_leaf(PTB, 0x8000_0000, READ_WRITE | PageFlags.UNCACHED, True, 0)
    assert raw & 0b111 == 0b111  # VALID | SYSTEM | SNOOPED
    assert (raw >> 48) & 7 == 3  # MTYPE_UC
    entry = GFX11.decode(PTB, raw)
    assert entry.system and entry.flags == READ_WRITE | PageFlags.UNCACHED


def test_directory_entries_and_the_root_base():
    assert GFX11.encode_table(PDB2, 0x40_0000, False) == 0x40_0001
    assert GFX11.encode_table(PDB0, 0x40_0000, True) == 0x40_0007
    entry = GFX11.decode(PDB1, 0x40_0001)
    assert (entry.kind, entry.address) == (EntryKind.TABLE, 0x40_0000)
    assert GFX11.root_base(0x1000) == 0x1001
    with pytest.raises(InvalidArgument):
        GFX11.encode_table(PDB1, 0x40_0020, False)  # bits 5:0 are not address
    with pytest.raises(InvalidArgument):
        GFX11.encode_leaf(PTB, 1 << 48, READ_WRITE, False, 0)


def test_unmapped_entries_are_what_amdgpu_clears_them_to():
    assert GFX11.invalid_entry(PTB) == 1 << 4  # EXECUTABLE: the fault-priority workaround
    for level in (PDB2, PDB1, PDB0):
        assert GFX11.invalid_entry(level) == 1 << 54  # AMDGPU_PDE_PTE without VALID
        assert GFX11.decode(level, GFX11.invalid_entry(level)).kind is EntryKind.INVALID
