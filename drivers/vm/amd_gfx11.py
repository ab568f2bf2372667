"""The GFX11 (GC 11.0.0, GMC v11) GPU page-table format: levels, PDE/PTE encoding, fragments.

amdgpu configures gfx11 with a 48-bit virtual address space, four levels of 512 entries (PDB2 ->
PDB1 -> PDB0 -> PTB, 9 bits each above the 12-bit page offset) and a 9-bit block size
(gmc_v11_0.c: gmc_v11_0_sw_init calls amdgpu_vm_adjust_size(adev, 256 * 1024, 9, 3, 48);
amdgpu_vm.c: amdgpu_vm_adjust_size gives num_level 3, root PDB2, block_size 9).

- A directory entry (PDE) holds the next table's address in bits 47:6 with VALID, plus SYSTEM and
  SNOOPED when the table is in host memory (amdgpu_ttm.c: amdgpu_ttm_tt_pde_flags).
- A leaf at PDB1 (1 GiB) or PDB0 (2 MiB) is a PDE with the P bit (AMDGPU_PDE_PTE) and PTE bits;
  the PTB's entries are 4 KiB PTEs (amdgpu_vm_pt.c: amdgpu_vm_pte_update_flags). gfx11 leaves
  translate_further off (only gmc_v9_0.c sets it), so no PDE carries a block fragment size (BFS)
  and no PTE the TF bit (gmc_v11_0.c: gmc_v11_0_get_vm_pde returns early).
- Unmapped entries are what amdgpu writes: the P bit alone in directories, EXECUTABLE alone in
  the PTB (amdgpu_vm_pt.c: amdgpu_vm_pt_clear and amdgpu_vm_pte_update_flags, "fault priority"
  workaround); neither has VALID.
- The fragment field (bits 11:7) says the entry lies in an aligned, physically contiguous block of
  2**fragment pages (amdgpu_vm_pt.c: amdgpu_vm_pte_fragment; up to 31 from Vega10 on).
- MTYPE (bits 50:48, AMDGPU_PTE_MTYPE_NV10): NC by default, UC for uncached mappings
  (gmc_v11_0.c: gmc_v11_0_map_mtype; values from navi10_enum.h, which gmc_v11_0.c includes).

The VM context registers want `root_base(address, system)` (amdgpu_gmc.c: amdgpu_gmc_pd_addr:
the root's address with its PDE flags), PAGE_TABLE_DEPTH = `PAGE_TABLE_DEPTH` and
PAGE_TABLE_BLOCK_SIZE = `PAGE_TABLE_BLOCK_SIZE` (gfxhub_v3_0.c / mmhub_v3_0.c:
*_setup_vmid_config: depth num_level, block size block_size - 9). VMID 0 (GART) uses depth 0.
"""
from __future__ import annotations

from drivers.vm.pagetable import DecodedEntry, EntryKind, LevelFormat, PageFlags, PageTableFormat
from hal.errors import InvalidArgument

# PTE and PDE bits (amdgpu_vm.h)
PTE_VALID = 1 << 0  # AMDGPU_PTE_VALID
PTE_SYSTEM = 1 << 1  # AMDGPU_PTE_SYSTEM
PTE_SNOOPED = 1 << 2  # AMDGPU_PTE_SNOOPED
PTE_TMZ = 1 << 3  # AMDGPU_PTE_TMZ
PTE_EXECUTABLE = 1 << 4  # AMDGPU_PTE_EXECUTABLE
PTE_READABLE = 1 << 5  # AMDGPU_PTE_READABLE
PTE_WRITEABLE = 1 << 6  # AMDGPU_PTE_WRITEABLE
PTE_FRAG_SHIFT = 7  # AMDGPU_PTE_FRAG(x): ((x & 0x1f) << 7)
PTE_FRAG_MASK = 0x1F  # AMDGPU_PTE_FRAG(x): ((x & 0x1f) << 7)
PTE_PRT = 1 << 51  # AMDGPU_PTE_PRT
PDE_PTE = 1 << 54  # AMDGPU_PDE_PTE ("PDE is handled as PTE"; gfx12 moved it to bit 63)
PTE_LOG = 1 << 55  # AMDGPU_PTE_LOG
PTE_TF = 1 << 56  # AMDGPU_PTE_TF (translate further; unused on gfx11)
PTE_NOALLOC = 1 << 58  # AMDGPU_PTE_NOALLOC
PTE_MTYPE_SHIFT = 48  # AMDGPU_PTE_MTYPE_NV10_SHIFT(mtype): ((uint64_t)(mtype) << 48)
PTE_MTYPE_MASK = 7 << 48  # AMDGPU_PTE_MTYPE_NV10_MASK
# MTYPE values (navi10_enum.h: enum MTYPE)
MTYPE_NC = 0  # navi10_enum.h: MTYPE_NC
MTYPE_WC = 1  # navi10_enum.h: MTYPE_WC
MTYPE_CC = 2  # navi10_enum.h: MTYPE_CC
MTYPE_UC = 3  # navi10_enum.h: MTYPE_UC

# address fields (gmc_v11_0.c: the PTE/PDE format comment before gmc_v11_0_map_mtype)
PTE_ADDRESS_MASK = ((1 << 48) - 1) & ~((1 << 12) - 1)  # PTE bits 47:12, the 4 KiB page base
PDE_ADDRESS_MASK = ((1 << 48) - 1) & ~((1 << 6) - 1)  # PDE bits 47:6 (get_vm_pde's BUG_ON mask)

PAGE_SHIFT = 12  # amdgpu.h: AMDGPU_GPU_PAGE_SHIFT
LEVEL_BITS = 9  # amdgpu_vm_pt.c: amdgpu_vm_pt_level_shift, 9 bits per directory level
BLOCK_SIZE = 9  # gmc_v11_0_sw_init: amdgpu_vm_adjust_size(..., 9, 3, 48) -> block_size 9
VA_BITS = 48  # gmc_v11_0_sw_init: amdgpu_vm_adjust_size(..., max_bits 48)
MAX_FRAGMENT = 31  # amdgpu_vm_pt.c: amdgpu_vm_pte_fragment: max_frag = 31 from Vega10 on
PAGE_TABLE_DEPTH = 3  # amdgpu_vm_adjust_size: num_level for a 48-bit space with 9-bit levels
PAGE_TABLE_BLOCK_SIZE = BLOCK_SIZE - 9  # gfxhub_v3_0.c: PAGE_TABLE_BLOCK_SIZE = block_size - 9

PDB2 = 0
PDB1 = 1
PDB0 = 2
PTB = 3

_READ_WRITE_EXECUTE = (
    (PageFlags.READ, PTE_READABLE),
    (PageFlags.WRITE, PTE_WRITEABLE),
    (PageFlags.EXECUTE, PTE_EXECUTABLE),
)


class Gfx11Format(PageTableFormat):
    """GMC v11 page tables as amdgpu lays them out for GC 11.0.x."""

    name = "amd-gfx11"
    # enum amdgpu_vm_level order; shifts from amdgpu_vm_pt_level_shift with block_size 9. A leaf
    # at the root (512 GiB) is not used: amdgpu's huge pages are the 2 MiB and 1 GiB ones.
    levels = (
        LevelFormat("PDB2", PAGE_SHIFT + BLOCK_SIZE + 2 * LEVEL_BITS, LEVEL_BITS, leaf=False),
        LevelFormat("PDB1", PAGE_SHIFT + BLOCK_SIZE + LEVEL_BITS, LEVEL_BITS, leaf=True),
        LevelFormat("PDB0", PAGE_SHIFT + BLOCK_SIZE, LEVEL_BITS, leaf=True),
        LevelFormat("PTB", PAGE_SHIFT, BLOCK_SIZE, leaf=True),
    )
    max_fragment = MAX_FRAGMENT

    def invalid_entry(self, level: int) -> int:
        if level == PTB:
            return PTE_EXECUTABLE
        return PDE_PTE

    def encode_table(self, level: int, table_address: int, table_system: bool) -> int:
        self._check_address(table_address, PDE_ADDRESS_MASK, "page-table")
        value = table_address | PTE_VALID
        if table_system:
            value |= PTE_SYSTEM | PTE_SNOOPED
        return value

    def leaf_bits(self, level: int, flags: PageFlags, system: bool, fragment: int) -> int:
        """Every bit of a leaf except its address."""
        value = PTE_VALID | ((fragment & PTE_FRAG_MASK) << PTE_FRAG_SHIFT)
        for wanted, bit in _READ_WRITE_EXECUTE:
            if flags & wanted:
                value |= bit
        mtype = MTYPE_UC if flags & PageFlags.UNCACHED else MTYPE_NC
        value |= mtype << PTE_MTYPE_SHIFT
        if system:
            value |= PTE_SYSTEM | PTE_SNOOPED
        if level != PTB:
            value |= PDE_PTE
        return value

    def encode_leaf(self, level: int, address: int, flags: PageFlags, system: bool,
                    fragment: int) -> int:
        self._check_address(address, PTE_ADDRESS_MASK, "page")
        return self.leaf_bits(level, flags, system, fragment) | address

    def encode_leaves(self, level: int, address: int, count: int, flags: PageFlags,
                      system: bool, fragment: int) -> list[int]:
        step = self.levels[level].page_size
        self._check_address(address + (count - 1) * step, PTE_ADDRESS_MASK, "page")
        self._check_address(address, PTE_ADDRESS_MASK, "page")
        bits = self.leaf_bits(level, flags, system, fragment)
        return [bits | page for page in range(address, address + count * step, step)]

    def decode(self, level: int, raw: int) -> DecodedEntry:
        if not raw & PTE_VALID:
            return DecodedEntry(EntryKind.INVALID, raw=raw)
        system = bool(raw & PTE_SYSTEM)
        if level != PTB and not raw & PDE_PTE:
            return DecodedEntry(EntryKind.TABLE, raw & PDE_ADDRESS_MASK, system, raw=raw)
        flags = PageFlags(0)
        for wanted, bit in _READ_WRITE_EXECUTE:
            if raw & bit:
                flags |= wanted
        if (raw & PTE_MTYPE_MASK) >> PTE_MTYPE_SHIFT == MTYPE_UC:
            flags |= PageFlags.UNCACHED
        fragment = (raw >> PTE_FRAG_SHIFT) & PTE_FRAG_MASK
        return DecodedEntry(EntryKind.LEAF, raw & PTE_ADDRESS_MASK, system, flags, fragment, raw)

    def root_base(self, address: int, system: bool = False) -> int:
        """The page-table base register value for a root table at `address`."""
        return self.encode_table(PDB2, address, system)

    @staticmethod
    def _check_address(address: int, mask: int, what: str) -> None:
        if address & ~mask:
            raise InvalidArgument(f"{what} address {address:#x} does not fit the GFX11 address "
                                  f"field (mask {mask:#x})")


GFX11 = Gfx11Format()
