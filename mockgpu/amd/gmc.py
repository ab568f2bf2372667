"""The mock GMC of a Navi31 (GMC v11: the GC 11.0.0 GFXHUB and the MMHUB 3.0.0): GPU virtual memory.

Owns, for each hub: the translation of a GPU virtual address of (hub, VMID) to a VRAM offset or a
system (bus) address, the way the hardware's page-table walker reads the page tables amdgpu writes;
a small TLB that caches whole fragments (so a wrong FRAG field gives stale translations until an
invalidation, as on the hardware); the invalidation engines (VM_INVALIDATE_ENGn_SEM / _REQ / _ACK);
and the protection-fault status latch (VM_L2_PROTECTION_FAULT_STATUS / _ADDR_LO32 / _ADDR_HI32)
with a record per fault handed to `on_fault` (the IH model turns it into an interrupt entry).

Every other register it reads (FB location, apertures, VM_CONTEXTn_*: `read_registers()`) stays in
the register file: the model reads them through `RegisterSource.get(ip, name)` at the moment of each
access. The registers with side effects (`owned_registers()`: invalidation engines, the fault latch,
VM_L2_CNTL2's invalidate bits) go to `read_register` / `write_register`:
`connect(register_file)` gives them to the GMC in mockgpu.amd.regfile.RegisterFile (and marks the
ones it reads as the model's, for strict mode);
`StandaloneRegisters` is a dict register file for the GMC alone.
A faulting access raises GPUVMFault to the engine model that made it; the redirection of faulting
accesses to the dummy page (the *_ENABLE_DEFAULT bits) and the L2 caching of PDEs are not modelled.

The page-table format (gfx9 and later, as gmc v11 uses it; amdgpu_vm.h, amdgpu_vm_pt.c):
  - a context has PAGE_TABLE_DEPTH directory levels above the page table: depth 3 walks
    PDB2 -> PDB1 -> PDB0 -> PTB, depth 0 a single flat table (what the GART context 0 uses);
  - the page table (PTB) has 512 << PAGE_TABLE_BLOCK_SIZE entries, every directory below the root
    512; the root takes all remaining address bits (amdgpu_vm_pt_level_shift, _num_entries);
  - the walk starts from VM_CONTEXTn_PAGE_TABLE_BASE_ADDR, itself a PDE (amdgpu_gmc_pd_addr), and
    indexes with the page number relative to PAGE_TABLE_START_ADDR;
  - a PDE with PDE_PTE set is a leaf covering the whole range of its level (2 MiB at PDB0, 1 GiB
    at PDB1 with a 9-bit block): gmc v11 does not enable translate-further (only gmc_v9_0.c sets
    adev->gmc.translate_further), so gmc_v11_0_get_vm_pde keeps PDE_PTE at every level and
    amdgpu_vm_ptes_update (max_frag 31 from Vega10 on) places leaves at PDB1 when 1 GiB aligned;
  - the SYSTEM bit of a PDE says the table it points to is in system memory (read through the
    host bus and the IOMMU); in a PTE, that the page is.
VMID 0 also has the system aperture: an address in [SYSTEM_APERTURE_LOW, _HIGH] is not walked but
goes to VRAM (FB range), to system memory (AGP range), or else, as MC_VM_MX_L1_TLB_CNTL's
SYSTEM_APERTURE_UNMAPPED_ACCESS says, to the default page (1) or through untranslated as a VRAM
physical address (0, what amdgpu programs: past the end of VRAM the access fails with GPUBusError).
A VMID 0 address outside the aperture is walked in context 0 (the GART) and outside its
START..END is a RANGE fault.
"""
from __future__ import annotations

import enum
import functools
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Protocol

from autogen.amd import regs as amd_regs
from autogen.regs import Register

log = logging.getLogger(__name__)

# amdgpu_gart.h: AMDGPU_GPU_PAGE_SHIFT, the GPU's 4 KiB page
GPU_PAGE_SHIFT = 12
GPU_PAGE_SIZE = 1 << GPU_PAGE_SHIFT
# amdgpu_vm.h: PDE/PTE bits (gfx9 .. gfx11)
PTE_VALID = 1 << 0
PTE_SYSTEM = 1 << 1
PTE_SNOOPED = 1 << 2
PTE_EXECUTABLE = 1 << 4
PTE_READABLE = 1 << 5
PTE_WRITEABLE = 1 << 6
PTE_FRAG_SHIFT = 7  # amdgpu_vm.h: AMDGPU_PTE_FRAG(x) ((x & 0x1f) << 7)
PTE_FRAG_MASK = 0x1F
PTE_PRT = 1 << 51  # amdgpu_vm.h: AMDGPU_PTE_PRT (partially resident: no fault when not valid)
PDE_PTE = 1 << 54  # amdgpu_vm.h: AMDGPU_PDE_PTE, "PDE is handled as PTE"
# amdgpu_gmc.c amdgpu_gmc_set_pte_pde: a PTE's address is bits 47:12
PTE_ADDRESS_MASK = 0x0000_FFFF_FFFF_F000
# gmc_v11_0.c gmc_v11_0_get_vm_pde: a directory address is 64-byte aligned and below 2^48
PDE_ADDRESS_MASK = 0x0000_FFFF_FFFF_FFC0
ENTRY_SIZE = 8  # amdgpu_vm_pt.c: PDEs and PTEs are 64-bit (pe_start = index * 8)
DIRECTORY_BITS = 9  # amdgpu_vm_pt.c amdgpu_vm_pt_level_shift: 9 address bits per directory level
MAX_PAGE_TABLE_DEPTH = 3  # amdgpu_vm.c amdgpu_vm_adjust_size: "VMPT only supports 2~4+1 levels"
# mmhub_v3_0.c mmhub_v3_0_get_fb_location / _get_mc_fb_offset: FB base, top, offset and the AGP
# registers are in 16 MiB units; gfxhub/mmhub init_system_aperture_regs: the aperture in 256 KiB
FB_UNIT_SHIFT = 24
APERTURE_UNIT_SHIFT = 18
# START/END_ADDR and the fault address: a page number split into LO32 and a 4-bit HI32
PAGE_NUMBER_LO_BITS = 32
VMID_COUNT = 16  # VM_CONTEXT0 .. VM_CONTEXT15 in both hubs' headers
INVALIDATE_ENGINE_COUNT = 18  # VM_INVALIDATE_ENG0 .. ENG17 (gmc_v11_0.c uses 17 for the GART)
DEFAULT_TLB_ENTRIES = 64  # this model's L1 TLB size: enough to keep, small enough to evict

# This model's reading of VM_L2_PROTECTION_FAULT_STATUS.PERMISSION_FAULTS (4 bits): valid, read,
# write, execute, the order of the protection bits the kfd decodes from a fault
# (amdkfd/kfd_int_process_v11.c: prot_valid 0x08, prot_read 0x10, prot_write 0x20; gmc_v8_0.c
# PROTECTIONS: read 0x8, write 0x10, exec 0x20)
PERMISSION_VALID = 1 << 0
PERMISSION_READ = 1 << 1
PERMISSION_WRITE = 1 << 2
PERMISSION_EXECUTE = 1 << 3
# this model's WALKER_ERROR value when the walker could not read a PDE/PTE (IOMMU fault, no VRAM)
WALKER_ERROR_FETCH = 1

GFX_HUB = "GC"  # gfxhub_v3_0.c: the GFX hub's registers are in the GC block (regGCVM_*, regGCMC_*)
MM_HUB = "MMHUB"  # mmhub_v3_0.c: regMMVM_*, regMMMC_*
_HUB_VERSIONS = {GFX_HUB: (11, 0, 0), MM_HUB: (3, 0, 0)}
_HUB_PREFIX = {GFX_HUB: "GC", MM_HUB: "MM"}


class Access(enum.Enum):
    READ = "read"
    WRITE = "write"
    EXECUTE = "execute"


class FaultKind(enum.Enum):
    """Why a translation failed."""

    RANGE = "range"  # outside PAGE_TABLE_START_ADDR .. END_ADDR, or the context is disabled
    PDE = "pde"  # a directory entry (or the base PDE) without VALID
    VALID = "valid"  # a PTE without VALID
    READ = "read"
    WRITE = "write"
    EXECUTE = "execute"
    WALKER = "walker"  # the walker could not fetch an entry


# the VM_CONTEXTn_CNTL <prefix>_PROTECTION_FAULT_ENABLE_INTERRUPT field that gates each kind's
# interrupt; the context has one PDE enable for every directory level, and this model gates
# walker errors with VALID
_INTERRUPT_FIELD_PREFIX = {
    FaultKind.RANGE: "RANGE", FaultKind.PDE: "PDE0", FaultKind.VALID: "VALID",
    FaultKind.READ: "READ", FaultKind.WRITE: "WRITE", FaultKind.EXECUTE: "EXECUTE",
    FaultKind.WALKER: "VALID",
}


@dataclass(frozen=True)
class Translation:
    """Where a GPU virtual address lands: a VRAM offset or a bus address (`system`), and how many
    bytes stay contiguous from it (to the end of the page or leaf)."""

    system: bool
    address: int
    contiguous: int
    prt: bool = False  # a PRT page that is not resident: reads give zeros, writes are dropped


@dataclass(frozen=True)
class VMFaultRecord:
    """One protection fault as the hub reports it: what the IH model turns into an entry."""

    hub: str
    vmid: int
    address: int  # the faulting GPU virtual address, page aligned
    client_id: int
    write: bool
    kind: FaultKind
    status: int  # the VM_L2_PROTECTION_FAULT_STATUS value for this fault alone
    interrupt: bool  # VM_CONTEXTn_CNTL enables the interrupt for this kind


class GPUVMFault(Exception):
    """A translation failed and the context does not redirect it to the default page."""

    def __init__(self, record: VMFaultRecord, detail: str) -> None:
        super().__init__(f"{record.hub} VMID {record.vmid} {record.kind.name} fault at "
                         f"{record.address:#x}: {detail}")
        self.record = record


class GPUBusError(Exception):
    """A translated access reached no memory: a VRAM offset past the end, or a system access the
    host refused (bus mastering off, IOMMU fault: see HostBus.faults)."""


class RegisterSource(Protocol):
    """The register file as the GMC sees it: the stored value of a register by generated name
    (mockgpu.amd.regfile.RegisterFile.get satisfies it)."""

    def get(self, ip: str, name: str) -> int: ...


class HostPort(Protocol):
    """The GPU's PCI function toward the host (PCIFunction.dma_read / dma_write)."""

    def dma_read(self, address: int, n: int) -> bytes | None: ...

    def dma_write(self, address: int, data: bytes) -> bool: ...


class _HubRegisters:
    """The registers of one hub, resolved once from the generated module (a typo fails here)."""

    def __init__(self, hub: str) -> None:
        module = amd_regs.load(hub, _HUB_VERSIONS[hub])
        prefix = _HUB_PREFIX[hub]

        def get(name: str) -> Register:
            return module.get(f"reg{prefix}{name}")

        self.fb_base = get("MC_VM_FB_LOCATION_BASE")
        self.fb_top = get("MC_VM_FB_LOCATION_TOP")
        self.fb_offset = get("MC_VM_FB_OFFSET")
        self.agp_base = get("MC_VM_AGP_BASE")
        self.agp_bot = get("MC_VM_AGP_BOT")
        self.agp_top = get("MC_VM_AGP_TOP")
        self.aperture_low = get("MC_VM_SYSTEM_APERTURE_LOW_ADDR")
        self.aperture_high = get("MC_VM_SYSTEM_APERTURE_HIGH_ADDR")
        self.default_lsb = get("MC_VM_SYSTEM_APERTURE_DEFAULT_ADDR_LSB")
        self.default_msb = get("MC_VM_SYSTEM_APERTURE_DEFAULT_ADDR_MSB")
        self.l1_tlb_cntl = get("MC_VM_MX_L1_TLB_CNTL")
        self.fault_cntl = get("VM_L2_PROTECTION_FAULT_CNTL")
        self.fault_status = get("VM_L2_PROTECTION_FAULT_STATUS")
        self.fault_addr_lo = get("VM_L2_PROTECTION_FAULT_ADDR_LO32")
        self.fault_addr_hi = get("VM_L2_PROTECTION_FAULT_ADDR_HI32")
        self.fault_default_lo = get("VM_L2_PROTECTION_FAULT_DEFAULT_ADDR_LO32")
        self.fault_default_hi = get("VM_L2_PROTECTION_FAULT_DEFAULT_ADDR_HI32")
        self.l2_cntl2 = get("VM_L2_CNTL2")
        self.context_cntl = tuple(get(f"VM_CONTEXT{vmid}_CNTL") for vmid in range(VMID_COUNT))
        self.base_lo = tuple(get(f"VM_CONTEXT{v}_PAGE_TABLE_BASE_ADDR_LO32") for v in range(VMID_COUNT))
        self.base_hi = tuple(get(f"VM_CONTEXT{v}_PAGE_TABLE_BASE_ADDR_HI32") for v in range(VMID_COUNT))
        self.start_lo = tuple(get(f"VM_CONTEXT{v}_PAGE_TABLE_START_ADDR_LO32") for v in range(VMID_COUNT))
        self.start_hi = tuple(get(f"VM_CONTEXT{v}_PAGE_TABLE_START_ADDR_HI32") for v in range(VMID_COUNT))
        self.end_lo = tuple(get(f"VM_CONTEXT{v}_PAGE_TABLE_END_ADDR_LO32") for v in range(VMID_COUNT))
        self.end_hi = tuple(get(f"VM_CONTEXT{v}_PAGE_TABLE_END_ADDR_HI32") for v in range(VMID_COUNT))
        engines = range(INVALIDATE_ENGINE_COUNT)
        self.inv_sem = tuple(get(f"VM_INVALIDATE_ENG{n}_SEM") for n in engines)
        self.inv_req = tuple(get(f"VM_INVALIDATE_ENG{n}_REQ") for n in engines)
        self.inv_ack = tuple(get(f"VM_INVALIDATE_ENG{n}_ACK") for n in engines)


@dataclass
class _TLBEntry:
    system: bool
    base: int  # the address the first byte of the fragment translates to
    flags: int  # the leaf's PTE bits (permissions)


class _Hub:
    """One hub's hardware state: TLB, invalidation engines, fault latch."""

    def __init__(self, name: str, tlb_entries: int) -> None:
        self.name = name
        self.regs = _HubRegisters(name)
        self.tlb_entries = tlb_entries
        self.reset()

    def reset(self) -> None:
        # per VMID: (log2 of the fragment size, fragment number) -> entry, oldest first
        self.tlb: list[OrderedDict[tuple[int, int], _TLBEntry]] = [OrderedDict() for _ in range(VMID_COUNT)]
        self.req = [0] * INVALIDATE_ENGINE_COUNT
        self.ack = [0] * INVALIDATE_ENGINE_COUNT
        self.sem_held = [False] * INVALIDATE_ENGINE_COUNT
        self.ack_reads_pending = [0] * INVALIDATE_ENGINE_COUNT
        self.fault_cntl = 0
        self.fault_status = 0
        self.fault_page = 0
        self.l2_cntl2 = 0

    def read_registers(self) -> list[Register]:
        """The registers the model reads from the register file when it translates."""
        regs = self.regs
        return [regs.fb_base, regs.fb_top, regs.fb_offset, regs.agp_base, regs.agp_bot, regs.agp_top,
                regs.aperture_low, regs.aperture_high, regs.default_lsb, regs.default_msb,
                regs.l1_tlb_cntl, *regs.context_cntl, *regs.base_lo, *regs.base_hi, *regs.start_lo,
                *regs.start_hi, *regs.end_lo, *regs.end_hi]

    def tlb_lookup(self, vmid: int, va: int) -> tuple[_TLBEntry, int] | None:
        """The cached entry covering `va` and the log2 of its size, or None."""
        entries = self.tlb[vmid]
        for size_log2 in {key[0] for key in entries}:
            entry = entries.get((size_log2, va >> size_log2))
            if entry is not None:
                return entry, size_log2
        return None

    def tlb_insert(self, vmid: int, va: int, size_log2: int, entry: _TLBEntry) -> None:
        entries = self.tlb[vmid]
        entries[(size_log2, va >> size_log2)] = entry
        while sum(len(per_vmid) for per_vmid in self.tlb) > self.tlb_entries:
            fullest = max(self.tlb, key=len)
            fullest.popitem(last=False)


class GMC:
    """Both hubs of the GPU's memory controller, over the register file, VRAM and the host port.

    `faults` lists every fault record; `on_fault(record)` is called for each (the IH hook).
    Fault injection: `stall_invalidations` (no ACK ever comes), `ack_delay_reads` (ACK reads that
    still show the request pending), `invalid_pte(hub, vmid, va, access, client_id)` (True: the
    walk finds that page's PTE not valid, as if it had been unmapped; accesses the system aperture
    serves never walk)."""

    def __init__(self, registers: RegisterSource, vram: memoryview, host: HostPort,
                 tlb_entries: int = DEFAULT_TLB_ENTRIES) -> None:
        self.registers = registers
        self.vram = vram
        self.host = host
        self.hubs = {GFX_HUB: _Hub(GFX_HUB, tlb_entries), MM_HUB: _Hub(MM_HUB, tlb_entries)}
        self.faults: list[VMFaultRecord] = []
        self.on_fault: Callable[[VMFaultRecord], None] | None = None
        self.stall_invalidations = False
        self.ack_delay_reads = 0
        self.invalid_pte: Callable[[str, int, int, Access, int], bool] | None = None
        self.walks = 0  # page-table walks done (TLB misses), for tests and benchmarks
        self._owned: dict[tuple[str, str], tuple[_Hub, str, int]] = {}
        for hub in self.hubs.values():
            regs = hub.regs
            for kind, table in (("sem", regs.inv_sem), ("req", regs.inv_req), ("ack", regs.inv_ack)):
                for engine, register in enumerate(table):
                    self._owned[(hub.name, register.name)] = (hub, kind, engine)
            self._owned[(hub.name, regs.fault_cntl.name)] = (hub, "fault_cntl", 0)
            self._owned[(hub.name, regs.fault_status.name)] = (hub, "fault_status", 0)
            self._owned[(hub.name, regs.fault_addr_lo.name)] = (hub, "fault_addr_lo", 0)
            self._owned[(hub.name, regs.fault_addr_hi.name)] = (hub, "fault_addr_hi", 0)
            self._owned[(hub.name, regs.l2_cntl2.name)] = (hub, "l2_cntl2", 0)

    def connect(self, register_file) -> None:
        """Own this model's registers in a mockgpu.amd.regfile.RegisterFile (its `own` hooks); the
        registers it reads at each translation stay plain storage, owned without hooks."""
        for ip, name in self._owned:
            register_file.own(ip, name, read=functools.partial(self.read_register, ip, name),
                              write=functools.partial(self.write_register, ip, name))
        for ip, name in self.read_registers():
            register_file.own(ip, name)

    def read_registers(self) -> list[tuple[str, str]]:
        """(ip, register name) of every register the model reads from the register file."""
        return [(hub.name, register.name) for hub in self.hubs.values() for register in hub.read_registers()]

    # -- power-on state --------------------------------------------------------------------------
    def reset(self, kind: str = "power_on") -> None:
        """What every reset leaves ("power_on", "pci" (FLR, bus reset), "mode1"): empty TLBs,
        idle engines, no latched fault; the hubs' registers are in the register file, which each
        of them returns to power-on values (amdgpu re-runs gart_enable after any of them:
        amdgpu_device.c amdgpu_device_ip_resume_phase2 -> gmc_v11_0_hw_init)."""
        for hub in self.hubs.values():
            hub.reset()

    # -- registers with side effects ------------------------------------------------------------
    def owned_registers(self) -> list[tuple[str, str]]:
        """(ip, register name) of every register whose reads or writes this model handles."""
        return list(self._owned)

    def owns(self, ip: str, name: str) -> bool:
        return (ip, name) in self._owned

    def read_register(self, ip: str, name: str) -> int:
        hub, kind, engine = self._owned[(ip, name)]
        if kind == "sem":
            # gmc_v11_0.c gmc_v11_0_flush_gpu_tlb: "a read return value of 1 means semaphore
            # acquire"; a held semaphore reads 0 until its owner writes 0
            if hub.sem_held[engine]:
                return 0
            hub.sem_held[engine] = True
            return hub.regs.inv_sem[engine].encode(SEMAPHORE=1)
        if kind == "req":
            return hub.req[engine]
        if kind == "ack":
            return self._read_ack(hub, engine)
        if kind == "fault_cntl":
            return hub.fault_cntl
        if kind == "fault_status":
            return hub.fault_status
        if kind == "l2_cntl2":
            return hub.l2_cntl2
        if kind == "fault_addr_lo":
            return hub.fault_page & ((1 << PAGE_NUMBER_LO_BITS) - 1)
        high = hub.regs.fault_addr_hi.field("LOGICAL_PAGE_ADDR_HI4")
        return high.encode((hub.fault_page >> PAGE_NUMBER_LO_BITS) & high.max_value)

    def write_register(self, ip: str, name: str, value: int) -> None:
        hub, kind, engine = self._owned[(ip, name)]
        if kind == "sem":
            if not hub.regs.inv_sem[engine].field("SEMAPHORE").decode(value):
                hub.sem_held[engine] = False
            return
        if kind == "req":
            hub.req[engine] = value
            self._invalidate(hub, engine, value)
            return
        if kind == "l2_cntl2":
            # gfxhub_v3_0.c / mmhub_v3_0.c *_init_cache_regs set INVALIDATE_ALL_L1_TLBS and
            # INVALIDATE_L2_CACHE: every VMID's cached translations go (both levels, as a REQ needs)
            hub.l2_cntl2 = value
            fields = hub.regs.l2_cntl2.decode(value)
            if fields["INVALIDATE_ALL_L1_TLBS"] and fields["INVALIDATE_L2_CACHE"]:
                for per_vmid in hub.tlb:
                    per_vmid.clear()
            return
        if kind == "fault_cntl":
            hub.fault_cntl = value
            # gmc_v11_0.c gmc_v11_0_process_interrupt: WREG32_P(vm_l2_pro_fault_cntl, 1, ~1)
            # clears the latched status and address for the next fault
            if hub.regs.fault_cntl.field("CLEAR_PROTECTION_FAULT_STATUS_ADDR").decode(value):
                hub.fault_status = 0
                hub.fault_page = 0
            return
        # ACK, STATUS and ADDR are read-only: the hardware ignores the write
        log.debug("%s: write %#x to read-only %s ignored", ip, value, name)

    def _read_ack(self, hub: _Hub, engine: int) -> int:
        value = hub.ack[engine]
        if hub.ack_reads_pending[engine] > 0:
            hub.ack_reads_pending[engine] -= 1
            value &= ~hub.regs.inv_ack[engine].field("PER_VMID_INVALIDATE_ACK").mask
        if hub.sem_held[engine]:
            value |= hub.regs.inv_ack[engine].encode(SEMAPHORE=1)
        return value

    def _invalidate(self, hub: _Hub, engine: int, request: int) -> None:
        """An invalidation request: flush the requested VMIDs, then acknowledge them (gmc_v11_0.c
        gmc_v11_0_flush_gpu_tlb writes REQ, then polls ACK for 1 << vmid)."""
        req = hub.regs.inv_req[engine]
        fields = req.decode(request)
        vmids = fields["PER_VMID_INVALIDATE_REQ"]
        # a cached leaf is in the L1 and the L2: both must be invalidated or the stale copy refills
        if fields["INVALIDATE_L1_PTES"] and fields["INVALIDATE_L2_PTES"]:
            for vmid in range(VMID_COUNT):
                if vmids & (1 << vmid):
                    hub.tlb[vmid].clear()
        if fields["CLEAR_PROTECTION_FAULT_STATUS_ADDR"]:
            hub.fault_status = 0
            hub.fault_page = 0
        if self.stall_invalidations:
            hub.ack[engine] = 0
            return
        ack = hub.regs.inv_ack[engine]
        hub.ack[engine] = ack.encode(PER_VMID_INVALIDATE_ACK=vmids)
        hub.ack_reads_pending[engine] = self.ack_delay_reads

    # -- translation -----------------------------------------------------------------------------
    def _read(self, hub: _Hub, register: Register) -> int:
        return self.registers.get(hub.name, register.name)

    def _page_number(self, hub: _Hub, lo: Register, hi: Register) -> int:
        """A page number split over a LO32 register and a HI register of one 4-bit field."""
        high_mask = 0
        for field in hi.fields.values():
            high_mask |= field.mask
        return ((self._read(hub, hi) & high_mask) << PAGE_NUMBER_LO_BITS) | self._read(hub, lo)

    def _fb_offset(self, hub: _Hub) -> int:
        return self._read(hub, hub.regs.fb_offset) << FB_UNIT_SHIFT

    def translate(self, hub_name: str, vmid: int, va: int, access: Access = Access.READ,
                  client_id: int = 0) -> Translation:
        """Translate one GPU virtual address; raises GPUVMFault (after latching the fault status
        and calling on_fault) when the hardware would fault."""
        hub = self.hubs[hub_name]
        if vmid == 0:
            aperture = self._system_aperture(hub, va)
            if aperture is not None:
                return aperture
        cntl_register = hub.regs.context_cntl[vmid]
        cntl = cntl_register.decode(self._read(hub, cntl_register))
        page = va >> GPU_PAGE_SHIFT
        start = self._page_number(hub, hub.regs.start_lo[vmid], hub.regs.start_hi[vmid])
        end = self._page_number(hub, hub.regs.end_lo[vmid], hub.regs.end_hi[vmid])
        if not cntl["ENABLE_CONTEXT"] or not start <= page <= end:
            detail = "context disabled" if not cntl["ENABLE_CONTEXT"] else (
                f"outside pages {start:#x}..{end:#x}")
            raise self._fault(hub, vmid, va, access, client_id, FaultKind.RANGE, cntl, detail)
        if self.invalid_pte is not None and self.invalid_pte(hub_name, vmid, va, access, client_id):
            # the leaf reads without VALID: what gmc_v11_0_process_interrupt sees for a page
            # amdgpu_vm_bo_unmap cleared (PERMISSION_FAULTS bit 0, no translation)
            raise self._fault(hub, vmid, va, access, client_id, FaultKind.VALID, cntl,
                              "PTE is not valid (injected fault)")
        cached = hub.tlb_lookup(vmid, va)
        if cached is None:
            entry, size_log2 = self._walk(hub, vmid, va, page - start, cntl, access, client_id)
            if entry.flags & PTE_VALID and self._tlb_enabled(hub):
                hub.tlb_insert(vmid, va, size_log2, entry)
        else:
            entry, size_log2 = cached
        if not entry.flags & PTE_VALID:
            # amdgpu_vm.h AMDGPU_PTE_PRT: a partially resident page that is not there
            return Translation(False, 0, GPU_PAGE_SIZE - va % GPU_PAGE_SIZE, prt=True)
        self._check_permission(hub, vmid, va, access, client_id, entry.flags, cntl)
        offset = va & ((1 << size_log2) - 1)
        address = entry.base + offset
        if not entry.system:
            # a PTE holds the VRAM physical address: the FB offset plus the offset in VRAM
            # (amdgpu_gmc.c amdgpu_gmc_vram_mc2pa)
            address -= self._fb_offset(hub)
        return Translation(entry.system, address, (1 << size_log2) - offset)

    def _tlb_enabled(self, hub: _Hub) -> bool:
        register = hub.regs.l1_tlb_cntl
        return bool(register.field("ENABLE_L1_TLB").decode(self._read(hub, register)))

    def _system_aperture(self, hub: _Hub, va: int) -> Translation | None:
        """gfxhub_v3_0.c / mmhub_v3_0.c init_system_aperture_regs: VMID 0 addresses inside the
        system aperture bypass the page tables (FB, then AGP, else the default page)."""
        regs = hub.regs
        low = self._read(hub, regs.aperture_low) << APERTURE_UNIT_SHIFT
        high = ((self._read(hub, regs.aperture_high) + 1) << APERTURE_UNIT_SHIFT) - 1
        if not low <= va <= high:
            return None
        fb_base = self._read(hub, regs.fb_base) << FB_UNIT_SHIFT
        fb_top = ((self._read(hub, regs.fb_top) + 1) << FB_UNIT_SHIFT) - 1
        if fb_base <= va <= fb_top:
            return Translation(False, va - fb_base, fb_top + 1 - va)
        agp_bot = self._read(hub, regs.agp_bot) << FB_UNIT_SHIFT
        agp_top = ((self._read(hub, regs.agp_top) + 1) << FB_UNIT_SHIFT) - 1
        if agp_bot <= va <= agp_top:
            agp_base = self._read(hub, regs.agp_base) << FB_UNIT_SHIFT
            return Translation(True, va - agp_bot + agp_base, agp_top + 1 - va)
        offset = va % GPU_PAGE_SIZE
        # MC_VM_MX_L1_TLB_CNTL.SYSTEM_APERTURE_UNMAPPED_ACCESS picks what an aperture address outside
        # FB and AGP does: 1 sends it to the default page, 0 (what gfxhub_v3_0.c / mmhub_v3_0.c
        # init_tlb_regs program) passes it through untranslated (the field's two values as radeon's
        # rs600 / r600 headers name them: _DEFAULT_PAGE and _PASS_THRU)
        tlb_cntl = self._read(hub, regs.l1_tlb_cntl)
        if regs.l1_tlb_cntl.field("SYSTEM_APERTURE_UNMAPPED_ACCESS").decode(tlb_cntl):
            # the default page is a VRAM physical address (amdgpu_gmc_vram_mc2pa of mem_scratch)
            default_page = self._page_number(hub, regs.default_lsb, regs.default_msb)
            physical = (default_page << GPU_PAGE_SHIFT) - self._fb_offset(hub)
            return Translation(False, physical + offset, GPU_PAGE_SIZE - offset)
        # pass-through: the address goes to memory as a VRAM physical address, unchanged; past the
        # end of VRAM the access is not served (GPUBusError from the access, no VM fault: the system
        # aperture is not a VM context and latches no protection fault)
        log.info("%s VMID 0: %#x is in the system aperture outside FB and AGP: passed through",
                 hub.name, va)
        return Translation(False, va - self._fb_offset(hub), GPU_PAGE_SIZE - offset)

    def _walk(self, hub: _Hub, vmid: int, va: int, relative_page: int, cntl: dict[str, int],
              access: Access, client_id: int) -> tuple[_TLBEntry, int]:
        """Walk the tables from the context's base PDE down to the leaf for `relative_page`."""
        self.walks += 1
        depth = cntl["PAGE_TABLE_DEPTH"]
        if depth > MAX_PAGE_TABLE_DEPTH:
            raise self._fault(hub, vmid, va, access, client_id, FaultKind.WALKER, cntl,
                              f"PAGE_TABLE_DEPTH {depth} is not a depth the walker supports")
        block_bits = DIRECTORY_BITS + cntl["PAGE_TABLE_BLOCK_SIZE"]
        base_lo = self._read(hub, hub.regs.base_lo[vmid])
        base_hi = self._read(hub, hub.regs.base_hi[vmid])
        pde = (base_hi << PAGE_NUMBER_LO_BITS) | base_lo
        for level in range(depth, 0, -1):
            # level 3 is PDB2 (the root of a 4-level table), level 1 is PDB0; PTB is level 0
            pde_name = f"PDB{level - 1}"
            parent_is_root = level == depth
            if not pde & PTE_VALID:
                where = "base PDE" if parent_is_root else f"PDE above {pde_name}"
                raise self._fault(hub, vmid, va, access, client_id, FaultKind.PDE, cntl,
                                  f"{where} {pde:#x} is not valid")
            shift = block_bits + DIRECTORY_BITS * (level - 1)  # pages covered below one entry
            index = relative_page >> shift
            if not parent_is_root:
                index &= (1 << DIRECTORY_BITS) - 1
            entry = self._fetch(hub, vmid, va, pde, index, cntl, access, client_id)
            if not entry & PTE_VALID:
                if entry & PTE_PRT:
                    return _TLBEntry(False, 0, entry), GPU_PAGE_SHIFT
                raise self._fault(hub, vmid, va, access, client_id, FaultKind.PDE, cntl,
                                  f"{pde_name} entry {index} = {entry:#x} is not valid")
            if entry & PDE_PTE:
                return self._leaf(va, entry, shift + GPU_PAGE_SHIFT)
            pde = entry
        if not pde & PTE_VALID:
            raise self._fault(hub, vmid, va, access, client_id, FaultKind.PDE, cntl,
                              f"PDE above the page table {pde:#x} is not valid")
        index = relative_page
        if depth:
            index &= (1 << block_bits) - 1
        pte = self._fetch(hub, vmid, va, pde, index, cntl, access, client_id)
        if not pte & PTE_VALID:
            if pte & PTE_PRT:
                return _TLBEntry(False, 0, pte), GPU_PAGE_SHIFT
            raise self._fault(hub, vmid, va, access, client_id, FaultKind.VALID, cntl,
                              f"PTE {index} = {pte:#x} is not valid")
        return self._leaf(va, pte, GPU_PAGE_SHIFT)

    @staticmethod
    def _leaf(va: int, entry: int, leaf_log2: int) -> tuple[_TLBEntry, int]:
        """The TLB entry for a leaf: it covers the larger of the leaf and its FRAG fragment, and
        assumes the fragment is contiguous (amdgpu_vm_pt.c amdgpu_vm_pte_fragment: "the PTE flags
        are considered valid for all PTEs within the fragment range")."""
        fragment_log2 = GPU_PAGE_SHIFT + ((entry >> PTE_FRAG_SHIFT) & PTE_FRAG_MASK)
        size_log2 = max(leaf_log2, fragment_log2)
        leaf_base = entry & PTE_ADDRESS_MASK & ~((1 << leaf_log2) - 1)
        # the address of the fragment's first byte, as if it were contiguous
        into_fragment = va & ((1 << size_log2) - 1) & ~((1 << leaf_log2) - 1)
        return _TLBEntry(bool(entry & PTE_SYSTEM), leaf_base - into_fragment, entry), size_log2

    def _fetch(self, hub: _Hub, vmid: int, va: int, pde: int, index: int, cntl: dict[str, int],
               access: Access, client_id: int) -> int:
        """Read entry `index` of the table the directory entry `pde` points to."""
        address = (pde & PDE_ADDRESS_MASK) + index * ENTRY_SIZE
        if pde & PTE_SYSTEM:
            data = self.host.dma_read(address, ENTRY_SIZE)
            where = f"system address {address:#x}"
        else:
            offset = address - self._fb_offset(hub)
            data = None
            if 0 <= offset and offset + ENTRY_SIZE <= len(self.vram):
                data = bytes(self.vram[offset:offset + ENTRY_SIZE])
            where = f"VRAM offset {offset:#x}"
        if data is None:
            raise self._fault(hub, vmid, va, access, client_id, FaultKind.WALKER, cntl,
                              f"the walker could not read an entry at {where}")
        return int.from_bytes(data, "little")

    def _check_permission(self, hub: _Hub, vmid: int, va: int, access: Access, client_id: int,
                          flags: int, cntl: dict[str, int]) -> None:
        needed = {Access.READ: (PTE_READABLE, FaultKind.READ),
                  Access.WRITE: (PTE_WRITEABLE, FaultKind.WRITE),
                  Access.EXECUTE: (PTE_EXECUTABLE, FaultKind.EXECUTE)}
        bit, kind = needed[access]
        if not flags & bit:
            raise self._fault(hub, vmid, va, access, client_id, kind, cntl,
                              f"the page does not allow {access.value} (PTE bits {flags:#x})")

    # -- faults ----------------------------------------------------------------------------------
    def _fault(self, hub: _Hub, vmid: int, va: int, access: Access, client_id: int,
               kind: FaultKind, cntl: dict[str, int], detail: str) -> GPUVMFault:
        """Latch the fault status (first fault wins unless subsequent updates are allowed; a later
        one sets MORE_FAULTS), record it, call on_fault; returns the exception to raise."""
        status_register = hub.regs.fault_status
        permission = {FaultKind.PDE: PERMISSION_VALID, FaultKind.VALID: PERMISSION_VALID,
                      FaultKind.READ: PERMISSION_READ, FaultKind.WRITE: PERMISSION_WRITE,
                      FaultKind.EXECUTE: PERMISSION_EXECUTE}.get(kind, 0)
        cid_field = status_register.field("CID")
        status = status_register.encode(
            PERMISSION_FAULTS=permission,
            MAPPING_ERROR=int(kind is FaultKind.RANGE),
            WALKER_ERROR=WALKER_ERROR_FETCH if kind is FaultKind.WALKER else 0,
            CID=client_id & cid_field.max_value,
            RW=int(access is Access.WRITE),
            VMID=vmid,
        )
        allow_updates = hub.regs.fault_cntl.field(
            "ALLOW_SUBSEQUENT_PROTECTION_FAULT_STATUS_ADDR_UPDATES").decode(hub.fault_cntl)
        if hub.fault_status == 0 or allow_updates:
            more = hub.fault_status & status_register.field("MORE_FAULTS").mask
            hub.fault_status = status | more
            hub.fault_page = va >> GPU_PAGE_SHIFT
        else:
            hub.fault_status |= status_register.encode(MORE_FAULTS=1)
        prefix = _INTERRUPT_FIELD_PREFIX[kind]
        interrupt = bool(cntl[f"{prefix}_PROTECTION_FAULT_ENABLE_INTERRUPT"])
        record = VMFaultRecord(hub.name, vmid, va & ~(GPU_PAGE_SIZE - 1), client_id,
                               access is Access.WRITE, kind, status, interrupt)
        self.faults.append(record)
        log.info("%s VMID %d fault at %#x: %s", hub.name, vmid, va, detail)
        if self.on_fault is not None:
            self.on_fault(record)
        return GPUVMFault(record, detail)

    # -- memory access for engine models ---------------------------------------------------------
    def read(self, hub: str, vmid: int, va: int, n: int, client_id: int = 0) -> bytes:
        """Read `n` bytes at a GPU virtual address, page by page, as an engine would."""
        out = bytearray()
        while n:
            where = self.translate(hub, vmid, va, Access.READ, client_id)
            chunk = min(n, where.contiguous)
            out += self._access(where, chunk, None)
            va += chunk
            n -= chunk
        return bytes(out)

    def write(self, hub: str, vmid: int, va: int, data: bytes, client_id: int = 0) -> None:
        """Write `data` at a GPU virtual address, page by page, as an engine would."""
        position = 0
        while position < len(data):
            where = self.translate(hub, vmid, va + position, Access.WRITE, client_id)
            chunk = min(len(data) - position, where.contiguous)
            self._access(where, chunk, bytes(data[position:position + chunk]))
            position += chunk

    def _access(self, where: Translation, n: int, data: bytes | None) -> bytes:
        if where.prt:
            return bytes(n)
        if where.system:
            if data is None:
                got = self.host.dma_read(where.address, n)
                if got is None:
                    raise GPUBusError(f"system read of {n} bytes at {where.address:#x} refused")
                return got
            if not self.host.dma_write(where.address, data):
                raise GPUBusError(f"system write of {n} bytes at {where.address:#x} refused")
            return b""
        if where.address < 0 or where.address + n > len(self.vram):
            raise GPUBusError(f"VRAM offset {where.address:#x} + {n:#x} is past the end of VRAM")
        if data is None:
            return bytes(self.vram[where.address:where.address + n])
        self.vram[where.address:where.address + n] = data
        return b""


class StandaloneRegisters:
    """A dict register file for the GMC alone: plain registers read back what was written; the
    GMC's own registers go to it. What the device's register file does, in twenty lines."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], int] = {}
        self.gmc: GMC | None = None

    def get(self, ip: str, name: str) -> int:
        return self.values.get((ip, name), 0)

    def read(self, ip: str, name: str) -> int:
        """A register read as the driver does it (side effects included)."""
        if self.gmc is not None and self.gmc.owns(ip, name):
            return self.gmc.read_register(ip, name)
        return self.get(ip, name)

    def write(self, ip: str, name: str, value: int) -> None:
        """A register write as the driver does it."""
        if self.gmc is not None and self.gmc.owns(ip, name):
            self.gmc.write_register(ip, name, value)
            return
        self.values[(ip, name)] = value
