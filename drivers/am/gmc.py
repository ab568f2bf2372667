"""GMC v11.0.0: the GPU's memory controller hubs (GFXHUB 3.0 in GC, MMHUB 3.0), VM contexts, TLBs.

After amdgpu's gmc_v11_0.c, gfxhub_v3_0.c and mmhub_v3_0.c:
- sw_init: the MC layout (gmc_v11_0_vram_gtt_location): VRAM at `fb_start` .. `fb_end` (the FB
  location the IFWI programmed, drivers.am.memory), the AGP aperture off (amdgpu_gmc_set_agp_default;
  amdgpu_agp is not 1), a VRAM scratch page for the system aperture's default page
  (amdgpu_device_mem_scratch_init) and a host dummy page for protection faults
  (amdgpu_gart_dummy_page_init, through hal's DMA).
- hw_init: for each hub, *_gart_enable: VMID 0 context, system aperture (FB range; AGP empty),
  L1 TLB (SYSTEM_ACCESS_MODE 3, advanced driver model, MTYPE UC), L2 cache, identity aperture off,
  VMIDs 1..15 (depth and block size of drivers.vm.amd_gfx11, range 0 .. max_pfn - 1), invalidation
  address ranges; then the fault defaults (set_fault_enable_default) and a TLB flush of VMID 0.
  amdgpu enables the MMHUB in gmc_v11_0_gart_enable and the GFX hub in gfx_v11_0_hw_init once the
  RLC is up (gfx_v11_0_gfxhub_enable); here the GFX hub is enabled by GMC when the device has no
  GC block, else the GC block calls `enable_hub(GFX_HUB)`.
- VMID 0 differs from amdgpu's: instead of a flat GART table (depth 0), it is a four-level
  drivers.vm page table over the whole 47-bit MC space below the hole (start 0, end
  AMDGPU_GMC_HOLE_START - 1), tables in VRAM; the system aperture still sends the FB range straight
  to VRAM, so VRAM needs no entries. Other VMIDs get a page table at their first `map`.
- `map(vmid, va, target, flags)` maps a VRAMBuffer (one contiguous run, huge pages and fragments
  where aligned) or host pages (a hal DMA buffer's bus addresses, or a list of them); every map and
  unmap ends with a TLB invalidation of that VMID on each enabled hub.
- TLB invalidation (gmc_v11_0_flush_gpu_tlb, the path before KIQ/MES): HDP flush, then on the MMHUB
  acquire the engine's semaphore (a read of 1), write the request, poll ACK for the VMID's bit, release
  the semaphore. Engine 17 ("Use register 17 for GART"). Bounded by AMConfig.gmc_invalidate_timeout_s;
  DeviceTimeout names hub, engine, VMID and the last ACK; all ones is DeviceLost (hal's watched BAR).
- the GART window (drivers.am.gart, `gmc.gart`): host memory mapped into VMID 0 at addresses from
  an allocator over amdgpu's GART range (AMDGPU_GART_PLACEMENT_HIGH), unmapped and invalidated on
  free; every live mapping is unmapped at hw_fini.
- hw_fini: *_gart_disable on each enabled hub (contexts off, L1 TLB and L2 cache off).
"""
from __future__ import annotations

import logging
from typing import Sequence

from drivers.am.gart import GART
from drivers.am.ip import IPBlock, poll
from drivers.am.memory import VRAMBuffer
from drivers.am.regs import BoundRegister
from drivers.vm import amd_gfx11
from drivers.vm.pagetable import READ_WRITE, Mapping, PageFlags, PageTable, TableMemory
from drivers.vm.tlsf import GPU_PAGE_SIZE
from hal.errors import InvalidArgument
from hal.region import CallbackRegion, Region

log = logging.getLogger(__name__)

GFX_HUB = "GC"  # gfxhub_v3_0.c: the GFX hub's registers are GC's (regGCVM_*, regGCMC_*)
MM_HUB = "MMHUB"  # mmhub_v3_0.c: regMMVM_*, regMMMC_*
_PREFIX = {GFX_HUB: "GC", MM_HUB: "MM"}
VMID_COUNT = 16  # CONTEXT0 .. CONTEXT15 in both hubs (gfxhub_v3_0_gart_disable: i < 16)
INVALIDATE_ENGINE_COUNT = 18  # gfxhub_v3_0_program_invalidation: i < 18
GART_INVALIDATE_ENGINE = 17  # gmc_v11_0_flush_gpu_tlb: "Use register 17 for GART"
PAGE_SHIFT = amd_gfx11.PAGE_SHIFT
HIGH_PAGE_SHIFT = 44  # *_init_gart_aperture_regs: the HI32 register holds address bits 47:44
FB_UNIT_SHIFT = 24  # *_init_system_aperture_regs: AGP_BOT/TOP in 16 MiB units
APERTURE_UNIT_SHIFT = 18  # *_init_system_aperture_regs: SYSTEM_APERTURE_LOW/HIGH in 256 KiB units
# amdgpu_gmc.h AMDGPU_GMC_HOLE_START: the MC space ends below the hole (amdgpu_gmc_gart_location)
GMC_HOLE_START = 0x0000_8000_0000_0000
# amdgpu_gmc.c amdgpu_gmc_set_agp_default: an empty AGP aperture (start above end)
AGP_START_OFF = 0xFFFF_FFFF_FFFF
AGP_END_OFF = 0
# gmc_v11_0_sw_init: amdgpu_vm_adjust_size(adev, 256 * 1024, ...) -> vm_size 256 TiB in GiB,
# amdgpu_vm.c: max_pfn = vm_size << 18 (GiB to 4 KiB pages)
VM_SIZE_GIB = 256 * 1024
MAX_PFN = VM_SIZE_GIB << 18
SYSTEM_ACCESS_MODE = 3  # *_init_tlb_regs: SYSTEM_ACCESS_MODE 3
# *_init_cache_regs without translate_further: BANK_SELECT 9, L2_CACHE_BIGK_FRAGMENT_SIZE 6
L2_BANK_SELECT = 9
L2_BIGK_FRAGMENT_SIZE = 6
# reset values the L2 registers start from (gc_11_0_0_default.h regGCVM_L2_CNTL3/4/5_DEFAULT;
# mmhub_v3_0.c regMMVM_L2_CNTL3/4/5_DEFAULT)
L2_CNTL_DEFAULTS = {
    GFX_HUB: {"L2_CNTL3": 0x80120007, "L2_CNTL4": 0x000000C1, "L2_CNTL5": 0x00003FE0},
    MM_HUB: {"L2_CNTL3": 0x80100007, "L2_CNTL4": 0x000000C1, "L2_CNTL5": 0x00003FE0},
}
# *_disable_identity_aperture: the identity aperture's low above its high (empty)
IDENTITY_LOW_LO32 = 0xFFFFFFFF
IDENTITY_LOW_HI32 = 0x0000000F
# *_program_invalidation: each engine's range covers every page
INVALIDATE_RANGE_LO32 = 0xFFFFFFFF
INVALIDATE_RANGE_HI32 = 0x1F
# the fault kinds set_fault_enable_default turns on (gfxhub_v3_0 / mmhub_v3_0_set_fault_enable_default)
_FAULT_DEFAULT_FIELDS = (
    "RANGE", "PDE0", "PDE1", "PDE2", "TRANSLATE_FURTHER", "NACK", "DUMMY_PAGE", "VALID", "READ",
    "WRITE", "EXECUTE",
)
# *_setup_vmid_config: the faults each VMID 1..15 context redirects to the default page
_CONTEXT_FAULT_DEFAULTS = ("RANGE", "DUMMY_PAGE", "PDE0", "VALID", "READ", "WRITE", "EXECUTE")
# amdgpu_gmc.c amdgpu_gmc_set_vm_fault_masks: the interrupt enables of every context
_CONTEXT_FAULT_INTERRUPTS = ("RANGE", "DUMMY_PAGE", "PDE0", "VALID", "READ", "WRITE", "EXECUTE")


def _split_page(address: int) -> tuple[int, int]:
    """(LO32, HI32) of a page number as the *_ADDR_LO32/_HI32 pairs take it."""
    return (address >> PAGE_SHIFT) & 0xFFFFFFFF, address >> HIGH_PAGE_SHIFT


class VRAMTableMemory(TableMemory):
    """Page tables in VRAM from device.memory; device addresses are VRAM physical addresses
    (vram_base_offset + offset: gmc_v11_0.c gmc_v11_0_get_vm_pde turns MC addresses into these)."""

    system = False

    def __init__(self, device) -> None:
        memory = device.memory
        self.memory = memory
        self.base = memory.vram_base_offset
        if device.vram_bar.size >= memory.vram_size:
            self.region: Region = device.vram_bar
        else:
            window = device.vram
            self.region = CallbackRegion(memory.vram_size, window.read, window.write)
        self._buffers: dict[int, VRAMBuffer] = {}

    def alloc(self, size: int, alignment: int) -> tuple[int, int]:
        buffer = self.memory.alloc_vram(size, alignment, purpose="page table")
        address = self.base + buffer.offset
        self._buffers[address] = buffer
        return address, buffer.offset

    def free(self, address: int) -> None:
        self.memory.free_vram(self._buffers.pop(address))

    def offset_of(self, address: int) -> int:
        offset = address - self.base
        if not 0 <= offset < self.memory.vram_size:
            raise InvalidArgument(f"page-table address {address:#x} is not in VRAM")
        return offset


class Hub:
    """One hub's registers by their generic names ("VM_CONTEXT0_CNTL" -> regGCVM_CONTEXT0_CNTL)."""

    def __init__(self, device, name: str) -> None:
        self.device = device
        self.name = name
        self.prefix = _PREFIX[name]
        self.enabled = False
        self.use_semaphore = name == MM_HUB  # gmc_v11_0_use_invalidate_semaphore: MMHUB only
        self.sem = self.reg(f"VM_INVALIDATE_ENG{GART_INVALIDATE_ENGINE}_SEM")
        self.req = self.reg(f"VM_INVALIDATE_ENG{GART_INVALIDATE_ENGINE}_REQ")
        self.ack = self.reg(f"VM_INVALIDATE_ENG{GART_INVALIDATE_ENGINE}_ACK")

    def reg(self, name: str) -> BoundRegister:
        return self.device.registers.reg(self.name, f"reg{self.prefix}{name}")

    def context(self, vmid: int, name: str) -> BoundRegister:
        return self.reg(f"VM_CONTEXT{vmid}_{name}")

    def write_page_pair(self, name: str, address: int) -> None:
        """A *_LO32/_HI32 register pair holding the page number of `address`."""
        lo, hi = _split_page(address)
        self.reg(f"{name}_LO32").write(lo)
        self.reg(f"{name}_HI32").write(hi)

    def invalidate_request(self, vmid: int, flush_type: int = 0) -> int:
        """gfxhub_v3_0 / mmhub_v3_0_get_invalidate_req: legacy per-VMID invalidation of L1 and L2."""
        return self.req.definition.encode(
            PER_VMID_INVALIDATE_REQ=1 << vmid, FLUSH_TYPE=flush_type, INVALIDATE_L2_PTES=1,
            INVALIDATE_L2_PDE0=1, INVALIDATE_L2_PDE1=1, INVALIDATE_L2_PDE2=1, INVALIDATE_L1_PTES=1,
            CLEAR_PROTECTION_FAULT_STATUS_ADDR=0)


class VMContext:
    """One VMID's address space: its page table and the hubs' context registers."""

    def __init__(self, vmid: int, page_table: PageTable, start: int, end: int) -> None:
        self.vmid = vmid
        self.page_table = page_table
        self.start = start  # first MC/virtual address the context translates
        self.end = end  # last one (inclusive)


class GMCv11(IPBlock):
    """GMC 11.0.0 (see the module docstring)."""

    block = "GMC"
    versions = ((11, 0, 0),)

    def __init__(self, device) -> None:
        super().__init__(device)
        self.hubs: dict[str, Hub] = {}
        self.contexts: dict[int, VMContext] = {}
        self.tables: VRAMTableMemory | None = None
        self.scratch: VRAMBuffer | None = None
        self.dummy_page = None
        self.gart: GART | None = None
        self.fb_start = self.fb_end = 0
        self.agp_start, self.agp_end = AGP_START_OFF, AGP_END_OFF
        self.max_mc_address = GMC_HOLE_START - 1
        self.flushes = 0

    # -- lifecycle ---------------------------------------------------------------------------------
    def sw_init(self) -> None:
        device = self.device
        memory = device.memory
        # gmc_v11_0_vram_gtt_location / amdgpu_gmc_vram_location: VRAM where the IFWI put it
        self.fb_start = memory.fb_base
        self.fb_end = memory.fb_base + memory.vram_size - 1
        self.hubs = {name: Hub(device, name) for name in (MM_HUB, GFX_HUB)}
        self.tables = VRAMTableMemory(device)
        # amdgpu_device_mem_scratch_init: one GPU page of VRAM, the system aperture's default page
        self.scratch = memory.alloc_vram(GPU_PAGE_SIZE, purpose="GMC scratch page")
        # amdgpu_gart_dummy_page_init: a host page protection faults are redirected to
        self.dummy_page = device.pci.alloc_dma(GPU_PAGE_SIZE)
        # gmc_v11_0_vram_gtt_location: the GART window above VRAM, below the hole
        self.gart = GART(self, device.config.gart_size)

    def hw_init(self) -> None:
        # the VMID 0 page table, written before any hub walks it
        self._vmid0()
        self.enable_hub(MM_HUB)
        if not any(block.block == "GC" for block in self.device.blocks):
            self.enable_hub(GFX_HUB)

    def hw_fini(self) -> None:
        try:
            if self.gart is not None:
                self.gart.unmap_all()
        finally:
            for hub in self.hubs.values():
                if hub.enabled:
                    self._gart_disable(hub)

    def sw_fini(self) -> None:
        for vmid in sorted(self.contexts, reverse=True):
            self.contexts.pop(vmid).page_table.close()
        if self.scratch is not None:
            self.device.memory.free_vram(self.scratch)
            self.scratch = None
        if self.dummy_page is not None:
            self.device.pci.free_dma(self.dummy_page)
            self.dummy_page = None

    # -- hub bring-up --------------------------------------------------------------------------------
    def enable_hub(self, name: str) -> None:
        """*_gart_enable for hub `name`, then the fault defaults and a VMID 0 flush
        (gmc_v11_0_gart_enable for the MMHUB, gfx_v11_0_gfxhub_enable for the GFX hub)."""
        hub = self.hubs[name]
        self._init_gart_aperture(hub)
        self._init_system_aperture(hub)
        self._init_tlb(hub)
        self._init_cache(hub)
        hub.context(0, "CNTL").update(ENABLE_CONTEXT=1, PAGE_TABLE_DEPTH=amd_gfx11.PAGE_TABLE_DEPTH,
                                      PAGE_TABLE_BLOCK_SIZE=amd_gfx11.PAGE_TABLE_BLOCK_SIZE,
                                      RETRY_PERMISSION_OR_INVALID_PAGE_FAULT=0)
        self._disable_identity_aperture(hub)
        self._setup_vmid_config(hub)
        for engine in range(INVALIDATE_ENGINE_COUNT):
            hub.reg(f"VM_INVALIDATE_ENG{engine}_ADDR_RANGE_LO32").write(INVALIDATE_RANGE_LO32)
            hub.reg(f"VM_INVALIDATE_ENG{engine}_ADDR_RANGE_HI32").write(INVALIDATE_RANGE_HI32)
        hub.enabled = True
        self._flush_hdp()
        self.set_fault_enable_default(name, True)
        self.set_fault_interrupts(name, True)
        self.flush_tlb(0, name)
        log.info("%s: %s hub enabled (VMID 0 root at %#x)", self.device.pci.bdf, name,
                 self.contexts[0].page_table.root_address)

    def _vmid0(self) -> None:
        if 0 in self.contexts:
            return
        table = PageTable(amd_gfx11.GFX11, self.tables, on_invalidate=self._invalidate_hook(0))
        self.contexts[0] = VMContext(0, table, 0, self.max_mc_address)

    def _init_gart_aperture(self, hub: Hub) -> None:
        """*_init_gart_aperture_regs: VMID 0's table base and range."""
        context = self.contexts[0]
        self._write_base(hub, 0, context.page_table)
        hub.write_page_pair("VM_CONTEXT0_PAGE_TABLE_START_ADDR", context.start)
        hub.write_page_pair("VM_CONTEXT0_PAGE_TABLE_END_ADDR", context.end)

    def _write_base(self, hub: Hub, vmid: int, table: PageTable) -> None:
        """*_setup_vm_pt_regs: the root as a PDE (amdgpu_gmc_pd_addr)."""
        base = amd_gfx11.GFX11.root_base(table.root_address, self.tables.system)
        hub.context(vmid, "PAGE_TABLE_BASE_ADDR_LO32").write(base & 0xFFFFFFFF)
        hub.context(vmid, "PAGE_TABLE_BASE_ADDR_HI32").write(base >> 32)

    def _init_system_aperture(self, hub: Hub) -> None:
        """*_init_system_aperture_regs: AGP (empty), the aperture over FB and AGP, default pages."""
        hub.reg("MC_VM_AGP_BASE").write(0)
        hub.reg("MC_VM_AGP_BOT").write(self.agp_start >> FB_UNIT_SHIFT)
        hub.reg("MC_VM_AGP_TOP").write(self.agp_end >> FB_UNIT_SHIFT)
        low = min(self.fb_start, self.agp_start) >> APERTURE_UNIT_SHIFT
        high = max(self.fb_end, self.agp_end) >> APERTURE_UNIT_SHIFT
        hub.reg("MC_VM_SYSTEM_APERTURE_LOW_ADDR").write(low)
        hub.reg("MC_VM_SYSTEM_APERTURE_HIGH_ADDR").write(high)
        # amdgpu_gmc_vram_mc2pa: the scratch page's physical address
        scratch = self.device.memory.vram_base_offset + self.scratch.offset
        lo, hi = _split_page(scratch)
        hub.reg("MC_VM_SYSTEM_APERTURE_DEFAULT_ADDR_LSB").write(lo)
        hub.reg("MC_VM_SYSTEM_APERTURE_DEFAULT_ADDR_MSB").write(hi)
        hub.write_page_pair("VM_L2_PROTECTION_FAULT_DEFAULT_ADDR", self.dummy_page.bus_address)
        hub.reg("VM_L2_PROTECTION_FAULT_CNTL2").update(ACTIVE_PAGE_MIGRATION_PTE_READ_RETRY=1)

    @staticmethod
    def _init_tlb(hub: Hub) -> None:
        """*_init_tlb_regs: L1 TLB on, uncached system accesses."""
        hub.reg("MC_VM_MX_L1_TLB_CNTL").update(
            ENABLE_L1_TLB=1, SYSTEM_ACCESS_MODE=SYSTEM_ACCESS_MODE, ENABLE_ADVANCED_DRIVER_MODEL=1,
            SYSTEM_APERTURE_UNMAPPED_ACCESS=0, ECO_BITS=0, MTYPE=amd_gfx11.MTYPE_UC)

    @staticmethod
    def _init_cache(hub: Hub) -> None:
        """*_init_cache_regs: L2 on, no fragment processing, invalidate L1 TLBs and the L2."""
        hub.reg("VM_L2_CNTL").update(
            ENABLE_L2_CACHE=1, ENABLE_L2_FRAGMENT_PROCESSING=0,
            ENABLE_DEFAULT_PAGE_OUT_TO_SYSTEM_MEMORY=1, L2_PDE0_CACHE_TAG_GENERATION_MODE=0,
            PDE_FAULT_CLASSIFICATION=0, CONTEXT1_IDENTITY_ACCESS_MODE=1, IDENTITY_MODE_FRAGMENT_SIZE=0)
        hub.reg("VM_L2_CNTL2").update(INVALIDATE_ALL_L1_TLBS=1, INVALIDATE_L2_CACHE=1)
        defaults = L2_CNTL_DEFAULTS[hub.name]
        cntl3 = hub.reg("VM_L2_CNTL3")
        cntl3.write(cntl3.definition.update(defaults["L2_CNTL3"], BANK_SELECT=L2_BANK_SELECT,
                                            L2_CACHE_BIGK_FRAGMENT_SIZE=L2_BIGK_FRAGMENT_SIZE))
        cntl4 = hub.reg("VM_L2_CNTL4")
        cntl4.write(cntl4.definition.update(defaults["L2_CNTL4"], VMC_TAP_PDE_REQUEST_PHYSICAL=0,
                                            VMC_TAP_PTE_REQUEST_PHYSICAL=0))
        cntl5 = hub.reg("VM_L2_CNTL5")
        cntl5.write(cntl5.definition.update(defaults["L2_CNTL5"], L2_CACHE_SMALLK_FRAGMENT_SIZE=0))

    @staticmethod
    def _disable_identity_aperture(hub: Hub) -> None:
        hub.reg("VM_L2_CONTEXT1_IDENTITY_APERTURE_LOW_ADDR_LO32").write(IDENTITY_LOW_LO32)
        hub.reg("VM_L2_CONTEXT1_IDENTITY_APERTURE_LOW_ADDR_HI32").write(IDENTITY_LOW_HI32)
        hub.reg("VM_L2_CONTEXT1_IDENTITY_APERTURE_HIGH_ADDR_LO32").write(0)
        hub.reg("VM_L2_CONTEXT1_IDENTITY_APERTURE_HIGH_ADDR_HI32").write(0)
        hub.reg("VM_L2_CONTEXT_IDENTITY_PHYSICAL_OFFSET_LO32").write(0)
        hub.reg("VM_L2_CONTEXT_IDENTITY_PHYSICAL_OFFSET_HI32").write(0)

    def _setup_vmid_config(self, hub: Hub) -> None:
        """*_setup_vmid_config: VMIDs 1..15 on, four levels, range 0 .. max_pfn - 1; tables come
        with each VMID's first map. Faults do not retry (amdgpu_noretry defaults to 1 on gfx11)."""
        fields = {f"{kind}_PROTECTION_FAULT_ENABLE_DEFAULT": 1 for kind in _CONTEXT_FAULT_DEFAULTS}
        last_lo = (MAX_PFN - 1) & 0xFFFFFFFF
        last_hi = (MAX_PFN - 1) >> 32
        for vmid in range(1, VMID_COUNT):
            hub.context(vmid, "CNTL").update(
                ENABLE_CONTEXT=1, PAGE_TABLE_DEPTH=amd_gfx11.PAGE_TABLE_DEPTH,
                PAGE_TABLE_BLOCK_SIZE=amd_gfx11.PAGE_TABLE_BLOCK_SIZE,
                RETRY_PERMISSION_OR_INVALID_PAGE_FAULT=0, **fields)
            hub.context(vmid, "PAGE_TABLE_START_ADDR_LO32").write(0)
            hub.context(vmid, "PAGE_TABLE_START_ADDR_HI32").write(0)
            hub.context(vmid, "PAGE_TABLE_END_ADDR_LO32").write(last_lo)
            hub.context(vmid, "PAGE_TABLE_END_ADDR_HI32").write(last_hi)
            context = self.contexts.get(vmid)
            if context is not None:
                self._write_base(hub, vmid, context.page_table)

    def set_fault_enable_default(self, name: str, value: bool) -> None:
        """*_set_fault_enable_default: redirect faults to the dummy page (`value`), and for the GFX
        hub keep the CP running on UTCL1 errors."""
        hub = self.hubs[name]
        if name == GFX_HUB:
            self.device.registers.reg("GC", "regCP_DEBUG").update(CPG_UTCL1_ERROR_HALT_DISABLE=1)
        fields = {f"{kind}_PROTECTION_FAULT_ENABLE_DEFAULT": int(value) for kind in _FAULT_DEFAULT_FIELDS}
        if not value:
            fields.update(CRASH_ON_NO_RETRY_FAULT=1, CRASH_ON_RETRY_FAULT=1)
        hub.reg("VM_L2_PROTECTION_FAULT_CNTL").update(**fields)

    def set_fault_interrupts(self, name: str, enable: bool) -> None:
        """amdgpu_gmc_set_vm_fault_masks: the fault interrupt enables of all 16 contexts."""
        hub = self.hubs[name]
        fields = {f"{kind}_PROTECTION_FAULT_ENABLE_INTERRUPT": int(enable)
                  for kind in _CONTEXT_FAULT_INTERRUPTS}
        for vmid in range(VMID_COUNT):
            hub.context(vmid, "CNTL").update(**fields)

    def _gart_disable(self, hub: Hub) -> None:
        """*_gart_disable: every context off, L1 TLB and the advanced driver model off, L2 off."""
        for vmid in range(VMID_COUNT):
            hub.context(vmid, "CNTL").write(0)
        hub.reg("MC_VM_MX_L1_TLB_CNTL").update(ENABLE_L1_TLB=0, ENABLE_ADVANCED_DRIVER_MODEL=0)
        hub.reg("VM_L2_CNTL").update(ENABLE_L2_CACHE=0)
        hub.reg("VM_L2_CNTL3").write(0)
        hub.enabled = False

    # -- TLB invalidation ----------------------------------------------------------------------------
    def _flush_hdp(self) -> None:
        """amdgpu_device_flush_hdp: CPU writes to VRAM reach memory before the hubs read it."""
        for block in self.device.blocks:
            if block.block == "HDP" and block in self.device.hw_done:
                block.flush()

    def flush_tlb(self, vmid: int, hub_name: str, flush_type: int = 0) -> None:
        """gmc_v11_0_flush_gpu_tlb on engine 17 of `hub_name` (a hub not enabled has nothing cached)."""
        hub = self.hubs[hub_name]
        if not hub.enabled:
            return
        if not 0 <= vmid < VMID_COUNT:
            raise InvalidArgument(f"VMID {vmid} is not 0..{VMID_COUNT - 1}")
        timeout = self.device.config.gmc_invalidate_timeout_s
        engine = GART_INVALIDATE_ENGINE
        self._flush_hdp()
        if hub.use_semaphore:
            semaphore = hub.sem.definition.field("SEMAPHORE").mask
            poll(self.device, hub.sem, semaphore, semaphore, timeout,
                 f"GMC: the {hub_name} hub's invalidation engine {engine} semaphore for VMID {vmid}")
        try:
            hub.req.write(hub.invalidate_request(vmid, flush_type))
            poll(self.device, hub.ack, 1 << vmid, 1 << vmid, timeout,
                 f"GMC: the {hub_name} hub's invalidation engine {engine} to acknowledge VMID {vmid}")
        finally:
            if hub.use_semaphore:
                hub.sem.write(0)
        self.flushes += 1

    def _invalidate_hook(self, vmid: int):
        def invalidate(va: int, size: int) -> None:
            for name in self.hubs:
                self.flush_tlb(vmid, name)
        return invalidate

    # -- VM contexts -----------------------------------------------------------------------------------
    def context(self, vmid: int) -> VMContext:
        """VMID `vmid`'s context; VMIDs 1..15 get their page table here, bound on every enabled hub."""
        context = self.contexts.get(vmid)
        if context is not None:
            return context
        if not 0 < vmid < VMID_COUNT:
            raise InvalidArgument(f"VMID {vmid} is not 0..{VMID_COUNT - 1}")
        if 0 not in self.contexts:
            raise InvalidArgument("GMC: no VM contexts before hw_init")
        table = PageTable(amd_gfx11.GFX11, self.tables, on_invalidate=self._invalidate_hook(vmid))
        context = VMContext(vmid, table, 0, (MAX_PFN << PAGE_SHIFT) - 1)
        self.contexts[vmid] = context
        for hub in self.hubs.values():
            if hub.enabled:
                self._write_base(hub, vmid, table)
        return context

    def map(self, vmid: int, va: int, target, flags: PageFlags = READ_WRITE, *,
            size: int | None = None) -> Mapping:
        """Map `target` at GPU virtual address `va` of `vmid`: a VRAMBuffer (its first `size` bytes,
        default all), a hal DMA buffer (its pages' bus addresses) or a sequence of 4 KiB host page
        bus addresses. Invalidates the VMID's TLBs on each enabled hub."""
        context = self.context(vmid)
        self._check_va(context, va)
        table = context.page_table
        if isinstance(target, VRAMBuffer):
            length = target.size if size is None else size
            if not 0 < length <= target.size:
                raise InvalidArgument(f"map of {length:#x} bytes of {target!r}")
            physical = self.device.memory.vram_base_offset + target.offset
            return table.map(va, physical, length, flags, system=False)
        pages: Sequence[int] = getattr(target, "bus_addresses", target)
        if size is not None:
            pages = pages[:-(-size // GPU_PAGE_SIZE)]
        return table.map_pages(va, list(pages), flags, system=True)

    def unmap(self, vmid: int, va: int, size: int) -> None:
        """Unmap [va, va + size) of `vmid` (all of it must be mapped); invalidates its TLBs."""
        context = self.contexts.get(vmid)
        if context is None:
            raise InvalidArgument(f"VMID {vmid} has no mappings")
        context.page_table.unmap(va, size)

    def _check_va(self, context: VMContext, va: int) -> None:
        if not context.start <= va <= context.end:
            raise InvalidArgument(f"VA {va:#x} is outside VMID {context.vmid}'s range "
                                  f"[{context.start:#x}, {context.end:#x}]")
        if context.vmid == 0 and self.fb_start <= va <= self.fb_end:
            raise InvalidArgument(f"VA {va:#x} of VMID 0 is in the system aperture over VRAM "
                                  f"[{self.fb_start:#x}, {self.fb_end:#x}]: the hubs never walk it")
