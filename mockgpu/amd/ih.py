"""The mock interrupt handler of a Navi31: OSSSYS 6.0.0's IH ring 0, seen from the hardware side.

Owns the ring-0 registers (IH_RB_CNTL, IH_RB_BASE/_HI, IH_RB_WPTR/RPTR, IH_RB_WPTR_ADDR_LO/HI,
IH_DOORBELL_RPTR, IH_STATUS) and `post()`, what an IP block does when it raises an interrupt: the IH
writes a 32-byte interrupt vector (IV) entry at the write pointer, writes the write pointer back to
memory, and signals MSI-X vector 0 through the PCI function.

What it follows (drivers/gpu/drm/amd/amdgpu in Linux 6.12):
- entry layout: amdgpu_ih.c amdgpu_ih_decode_iv_helper (dw0 client/source/ring/vmid/vmid type,
  dw1-2 48-bit timestamp, dw3 pasid/node, dw4-7 the source's data);
- ring size, base, writeback and rptr/wptr in bytes: ih_v6_0.c ih_v6_0_enable_ring, ih_v6_0_rb_cntl
  (RB_SIZE is log2 of the size in dwords; the base register holds address bits 39:8);
- overflow: with WPTR_OVERFLOW_ENABLE a full ring is written over and RB_OVERFLOW set in the write
  pointer (and its writeback) until software writes WPTR_OVERFLOW_CLEAR from 0 to 1; the driver
  then resumes at wptr + 32, "the last not overwritten vector" (ih_v6_0.c ih_v6_0_get_wptr, and
  radeon's r600_get_ih_wptr before it). Without it a full ring drops the new entry;
- the read pointer comes from IH_RB_RPTR, or, with IH_DOORBELL_RPTR.ENABLE, from the doorbell
  dword at IH_DOORBELL_RPTR.OFFSET in BAR2 (ih_v6_0.c ih_v6_0_set_rptr: WDOORBELL32). Doorbells are
  plain memory here, so the model reads that dword when it needs the read pointer;
- RPTR_REARM (set by amdgpu when MSI is on): one message per batch, the next only after software
  moved the read pointer; without it each entry sends one;
- addresses: MC_SPACE 4 is a GPU address through the MMHUB's VMID 0 (amdgpu's default, ring in
  VRAM or GART); any other value with IH_CHICKEN.MC_SPACE_GPA_ENABLE (which the PSP bootloader
  sets, ih_v6_0.c ih_v6_0_sw_init) a bus address read through the host's IOMMU;
- the pasid of an entry comes from IH_VMID_<n>_LUT (IH_VMID_<n>_LUT_MM for MMHUB clients), which
  the KFD programs (amdgpu_amdkfd_gfx_v11.c set_pasid_vmid_mapping_v11).

Not modelled: ring 1 and the soft ring (ring 1's registers read back what was written; every entry
goes to ring 0), the client-to-ring routing (IH_RING1_CLIENT_CFG), storm and flood control, and the
BIF doorbell range (nbio ih_doorbell_range): the doorbell is read whatever the range says.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from autogen.amd import irqsrcs_vmc_1_0 as vmc_sources
from autogen.amd import soc15_ih_clientid as clients
from autogen.amd.regs import osssys_6_0_0 as oss

if TYPE_CHECKING:
    from mockgpu.amd.gmc import VMFaultRecord
    from mockgpu.amd.gpu import Navi31GPU

log = logging.getLogger(__name__)

IP = "OSSSYS"
ENTRY_BYTES = 32  # amdgpu_ih.c amdgpu_ih_decode_iv_helper: eight dwords, rptr += 32
DWORD_BYTES = 4
MSIX_VECTOR = 0  # amdgpu_irq.c amdgpu_irq_init: one vector, the IH's
RING_BASE_SHIFT = 8  # ih_v6_0.c ih_v6_0_enable_ring: IH_RB_BASE = gpu_addr >> 8, BASE_HI bits 39:32
RING_BASE_HI_SHIFT = 40
WPTR_ADDR_HI_SHIFT = 32  # ih_v6_0.c: WPTR_ADDR_HI = upper_32_bits(wptr_addr) & 0xFFFF
MC_SPACE_GPU_ADDRESS = 4  # ih_v6_0.c ih_v6_0_rb_cntl: MC_SPACE = use_bus_addr ? 2 : 4
# the largest ring the write pointer can address: IH_RB_WPTR.OFFSET is bits 17:2
MAX_RING_BYTES = (oss.regIH_RB_WPTR.field("OFFSET").mask | (DWORD_BYTES - 1)) + 1
# amdgpu_ih.c amdgpu_ih_decode_iv_helper: field positions in the entry's dwords
CLIENT_SHIFT = 0
SOURCE_SHIFT = 8
RING_ID_SHIFT = 16
VMID_SHIFT = 24
VMID_TYPE_SHIFT = 31
BYTE_MASK = 0xFF
VMID_MASK = 0xF
TIMESTAMP_HI_MASK = 0xFFFF
TIMESTAMP_BITS = 48
PASID_MASK = 0xFFFF
NODE_SHIFT = 16
WORD_MASK = 0xFFFFFFFF
# soc21.c soc21_get_xclk: the reference clock, 100 MHz (reference_freq 10000 in 10 kHz units)
TIMESTAMP_HZ = 100_000_000
NANOSECONDS = 1_000_000_000
# gmc_v11_0.c gmc_v11_0_process_interrupt: the fault page in src_data[0] (address bits 43:12) and
# src_data[1] bits 3:0 (address bits 47:44) and the write bit 5 of src_data[1] (no retry faults here)
FAULT_PAGE_SHIFT = 12
FAULT_HIGH_SHIFT = 44
FAULT_HIGH_MASK = 0xF
FAULT_WRITE = 1 << 5
# mmhub_v3_0.c mmhub_v3_0_get_fb_location: FB_LOCATION_BASE/TOP count 16 MiB units
FB_UNIT_SHIFT = 24
VMID_COUNT = 16  # IH_VMID_0_LUT .. IH_VMID_15_LUT
RESET_KINDS = ("power_on", "pci", "mode1")


def encode_entry(client_id: int, source_id: int, src_data=(0, 0, 0, 0), ring_id: int = 0,
                 vmid: int = 0, vmid_src: int = 0, pasid: int = 0, node_id: int = 0,
                 timestamp: int = 0) -> bytes:
    """One IV entry in the layout amdgpu_ih_decode_iv_helper reads."""
    data = tuple(src_data) + (0,) * (4 - len(src_data))
    words = (
        (client_id & BYTE_MASK) << CLIENT_SHIFT | (source_id & BYTE_MASK) << SOURCE_SHIFT
        | (ring_id & BYTE_MASK) << RING_ID_SHIFT | (vmid & VMID_MASK) << VMID_SHIFT
        | (vmid_src & 1) << VMID_TYPE_SHIFT,
        timestamp & WORD_MASK,
        (timestamp >> 32) & TIMESTAMP_HI_MASK,  # bit 31, timestamp_src, stays 0
        (pasid & PASID_MASK) | (node_id & BYTE_MASK) << NODE_SHIFT,
        *(value & WORD_MASK for value in data[:4]),
    )
    return b"".join(word.to_bytes(DWORD_BYTES, "little") for word in words)


class IHModel:
    """IH ring 0 of the GPU (see the module docstring). Counters for tests: `posted` (entries
    written), `dropped` (lost: ring off, full without overflow, unwritable), `overwritten` (entries
    written over an unread one), `interrupts` (MSI-X messages raised); `errors` says why entries were
    lost to a bad configuration. Fault hook: `stalled` (nothing is written, as if the IH hung)."""

    def __init__(self, gpu: "Navi31GPU") -> None:
        self.gpu = gpu
        regfile = gpu.regfile
        self._cntl = regfile.own(IP, "regIH_RB_CNTL", write=self._write_cntl)
        self._base = regfile.own(IP, "regIH_RB_BASE")
        self._base_hi = regfile.own(IP, "regIH_RB_BASE_HI")
        regfile.own(IP, "regIH_RB_WPTR", read=self._read_wptr, write=self._write_wptr)
        self._rptr = regfile.own(IP, "regIH_RB_RPTR", read=self._read_rptr, write=self._write_rptr)
        self._wptr_addr_lo = regfile.own(IP, "regIH_RB_WPTR_ADDR_LO")
        self._wptr_addr_hi = regfile.own(IP, "regIH_RB_WPTR_ADDR_HI")
        self._doorbell_rptr = regfile.own(IP, "regIH_DOORBELL_RPTR")
        self._chicken = regfile.own(IP, "regIH_CHICKEN")
        regfile.own(IP, "regIH_STATUS", read=self._read_status, write=lambda value: None)
        self._lut = tuple(regfile.address(IP, f"regIH_VMID_{vmid}_LUT") for vmid in range(VMID_COUNT))
        self._lut_mm = tuple(regfile.address(IP, f"regIH_VMID_{vmid}_LUT_MM")
                             for vmid in range(VMID_COUNT))
        self.stalled = False
        self._posting = False
        self.errors: list[str] = []
        self.reset("power_on")

    # -- resets ----------------------------------------------------------------------------------
    def reset(self, kind: str) -> None:
        """Every kind clears the IH: its registers are in the part's register file, which a PCI
        reset (FLR, bus reset) and a mode1 reset return to power-on values (amdgpu re-runs
        ih_v6_0_irq_init after either: amdgpu_device.c amdgpu_device_ip_resume_phase1), so the
        pointers, the overflow flag and the rearm state go too."""
        if kind not in RESET_KINDS:
            raise ValueError(f"reset kind {kind!r} is not one of {RESET_KINDS}")
        self.wptr = 0
        self.overflow = False
        self.armed = True
        self._armed_rptr = 0
        self.posted = 0
        self.dropped = 0
        self.overwritten = 0
        self.interrupts = 0
        self.errors.clear()
        self._epoch_ns = time.monotonic_ns()

    # -- registers -------------------------------------------------------------------------------
    def _peek(self, address: int) -> int:
        return self.gpu.regfile.peek(address)

    def _write_cntl(self, value: int) -> None:
        old = self._peek(self._cntl)
        clear = oss.regIH_RB_CNTL.field("WPTR_OVERFLOW_CLEAR")
        # ih_v6_0.c ih_v6_0_toggle_ring_interrupts: the clear acts on the 0 -> 1 edge of the bit
        if clear.decode(value) and not clear.decode(old):
            self.overflow = False
        self.gpu.regfile.poke(self._cntl, value)

    def _read_wptr(self) -> int:
        return oss.regIH_RB_WPTR.encode(OFFSET=self.wptr >> 2, RB_OVERFLOW=int(self.overflow))

    def _write_wptr(self, value: int) -> None:
        """ih_v6_0.c ih_v6_0_enable_ring writes 0: the offset moves, the overflow flag stays."""
        self.wptr = oss.regIH_RB_WPTR.field("OFFSET").decode(value) << 2

    def _read_rptr(self) -> int:
        return oss.regIH_RB_RPTR.encode(OFFSET=self.read_pointer() >> 2)

    def _write_rptr(self, value: int) -> None:
        self.gpu.regfile.poke(self._rptr, value)
        self._rearm()

    def _read_status(self) -> int:
        """IH_STATUS: the model works synchronously, so it is always idle; the ring flags."""
        full = self.enabled and self._next(self.wptr) == self.read_pointer()
        return oss.regIH_STATUS.encode(IDLE=1, INPUT_IDLE=1, BUFFER_IDLE=1, MC_WR_IDLE=1,
                                       RB_FULL=int(full), RB_OVERFLOW=int(self.overflow))

    def _cntl_fields(self) -> dict[str, int]:
        return oss.regIH_RB_CNTL.decode(self._peek(self._cntl))

    @property
    def enabled(self) -> bool:
        return bool(self._cntl_fields()["RB_ENABLE"])

    @property
    def ring_bytes(self) -> int:
        """4 << RB_SIZE (ih_v6_0.c ih_v6_0_rb_cntl: RB_SIZE = order_base_2(ring_size / 4))."""
        return DWORD_BYTES << self._cntl_fields()["RB_SIZE"]

    @property
    def ring_address(self) -> int:
        return (self._peek(self._base) << RING_BASE_SHIFT
                | (self._peek(self._base_hi) & oss.regIH_RB_BASE_HI.field("ADDR").mask)
                << RING_BASE_HI_SHIFT)

    @property
    def writeback_address(self) -> int:
        low = self._peek(self._wptr_addr_lo) & oss.regIH_RB_WPTR_ADDR_LO.field("ADDR").mask
        high = self._peek(self._wptr_addr_hi) & oss.regIH_RB_WPTR_ADDR_HI.field("ADDR").mask
        return high << WPTR_ADDR_HI_SHIFT | low

    def read_pointer(self) -> int:
        """The read pointer in bytes: the doorbell's dword when IH_DOORBELL_RPTR enables it, else
        IH_RB_RPTR, masked to the ring."""
        doorbell = oss.regIH_DOORBELL_RPTR.decode(self._peek(self._doorbell_rptr))
        if doorbell["ENABLE"]:
            memory = self.gpu.bar_memory(2)
            start = doorbell["OFFSET"] * DWORD_BYTES
            if start + DWORD_BYTES <= len(memory):
                raw = int.from_bytes(memory[start:start + DWORD_BYTES], "little")
            else:
                raw = 0
        else:
            raw = self._peek(self._rptr)
        offset = oss.regIH_RB_RPTR.field("OFFSET")
        return (offset.decode(raw) << 2) & (self.ring_bytes - 1)

    def _next(self, pointer: int) -> int:
        return (pointer + ENTRY_BYTES) & (self.ring_bytes - 1)

    def _rearm(self) -> None:
        """RPTR_REARM: software wrote the read pointer, so the next message may go; if entries are
        still waiting, it goes now."""
        self.armed = True
        if self.enabled and self.read_pointer() != self.wptr:
            self._signal()

    # -- posting ---------------------------------------------------------------------------------
    def timestamp(self) -> int:
        """The 48-bit reference-clock count an entry carries."""
        elapsed = time.monotonic_ns() - self._epoch_ns
        return (elapsed * TIMESTAMP_HZ // NANOSECONDS) & ((1 << TIMESTAMP_BITS) - 1)

    def post(self, client_id: int, source_id: int, src_data=(0, 0, 0, 0), ring_id: int = 0,
             vmid: int = 0, pasid: int | None = None, vmid_src: int = 0, node_id: int = 0) -> bool:
        """An IP block raises an interrupt: write its entry, the wptr writeback, then MSI-X vector 0.
        `pasid` None: the IH's VMID LUT for `vmid` (the MM one when `vmid_src` is 1). Returns
        whether the entry reached the ring."""
        if not self.gpu.responds() or self.stalled or self._posting:
            return False  # _posting: a fault of the IH's own write is not posted into the ring
        self._posting = True
        try:
            return self._post(client_id, source_id, src_data, ring_id, vmid, pasid, vmid_src, node_id)
        finally:
            self._posting = False

    def _post(self, client_id: int, source_id: int, src_data, ring_id: int, vmid: int,
              pasid: int | None, vmid_src: int, node_id: int) -> bool:
        cntl = self._cntl_fields()
        if not cntl["RB_ENABLE"]:
            self.dropped += 1
            return False
        if self.ring_bytes > MAX_RING_BYTES:
            return self._reject(f"RB_SIZE {cntl['RB_SIZE']}: a ring of {self.ring_bytes} bytes is more "
                                f"than IH_RB_WPTR.OFFSET addresses ({MAX_RING_BYTES})")
        if self.ring_bytes < ENTRY_BYTES:
            return self._reject(f"RB_SIZE {cntl['RB_SIZE']}: the ring is smaller than one entry")
        if pasid is None:
            lut = self._lut_mm if vmid_src else self._lut
            pasid = self._peek(lut[vmid & VMID_MASK]) & PASID_MASK
        following = self._next(self.wptr)
        if self.overflow or following == self.read_pointer():
            if not cntl["WPTR_OVERFLOW_ENABLE"]:
                self.dropped += 1
                return False
            self.overflow = True  # from here on each entry goes over one not yet read
            self.overwritten += 1
        entry = encode_entry(client_id, source_id, src_data, ring_id, vmid, vmid_src, pasid, node_id,
                             self.timestamp())
        if not self._write(self.ring_address + self.wptr, entry, cntl):
            self.dropped += 1
            return False
        self.wptr = following
        self.posted += 1
        if cntl["WPTR_WRITEBACK_ENABLE"]:
            self._write(self.writeback_address, self._read_wptr().to_bytes(DWORD_BYTES, "little"), cntl)
        if not self.armed and self.read_pointer() != self._armed_rptr:
            self.armed = True  # a doorbell write moved the read pointer since the last message
        if cntl["ENABLE_INTR"] and (self.armed or not cntl["RPTR_REARM"]):
            self._signal()
        return True

    def _signal(self) -> None:
        cntl = self._cntl_fields()
        if not cntl["ENABLE_INTR"]:
            return
        if cntl["RPTR_REARM"]:
            self.armed = False
            self._armed_rptr = self.read_pointer()
        if self.gpu.raise_interrupt(MSIX_VECTOR):
            self.interrupts += 1

    def _reject(self, why: str) -> bool:
        self.errors.append(why)
        log.warning("IH: entry dropped: %s", why)
        self.dropped += 1
        return False

    def _write(self, address: int, data: bytes, cntl: dict[str, int]) -> bool:
        """A write from the IH to memory, in the address space MC_SPACE and IH_CHICKEN select."""
        chicken = oss.regIH_CHICKEN.decode(self._peek(self._chicken))
        if cntl["MC_SPACE"] != MC_SPACE_GPU_ADDRESS and chicken["MC_SPACE_GPA_ENABLE"]:
            if self.gpu.dma_write(address, data):
                return True
            return self._reject(f"bus write of {len(data)} bytes at {address:#x} refused")
        gmc = getattr(self.gpu, "gmc", None)
        if gmc is not None:
            try:
                gmc.write("MMHUB", 0, address, data)
            except Exception as exc:  # GPUVMFault, GPUBusError: the write is lost
                return self._reject(f"GPU write of {len(data)} bytes at {address:#x}: {exc}")
            return True
        return self._write_fb_aperture(address, data)

    def _write_fb_aperture(self, address: int, data: bytes) -> bool:
        """Without a GMC model: VMID 0's FB aperture only (MMHUB FB_LOCATION_BASE/TOP, 16 MiB units,
        mmhub_v3_0.c mmhub_v3_0_get_fb_location)."""
        base = self.gpu.regfile.get("MMHUB", "regMMMC_VM_FB_LOCATION_BASE") << FB_UNIT_SHIFT
        top = ((self.gpu.regfile.get("MMHUB", "regMMMC_VM_FB_LOCATION_TOP") + 1) << FB_UNIT_SHIFT) - 1
        offset = address - base
        if address < base or address + len(data) - 1 > top or offset + len(data) > self.gpu.vram_size:
            return self._reject(f"GPU address {address:#x} is outside VRAM's aperture "
                                f"[{base:#x}, {top:#x}] and no GMC model translates it")
        self.gpu.vram[offset:offset + len(data)] = data
        return True

    # -- sources ---------------------------------------------------------------------------------
    def vm_fault(self, record: "VMFaultRecord") -> None:
        """A hub's protection fault as gmc_v11_0_process_interrupt reads it: MMHUB faults come
        from the VMC client, GFX hub (UTCL2) faults from the GFX client, source 0 both
        (gmc_v11_0.c gmc_v11_0_sw_init), vmid type 1 for the MMHUB; the page in src_data."""
        if not record.interrupt:
            return
        mmhub = record.hub == "MMHUB"
        client = clients.SOC21_IH_CLIENTID_VMC if mmhub else clients.SOC21_IH_CLIENTID_GFX
        source = vmc_sources.VMC_1_0__SRCID__VM_FAULT if mmhub else vmc_sources.UTCL2_1_0__SRCID__FAULT
        page = record.address >> FAULT_PAGE_SHIFT
        high = (record.address >> FAULT_HIGH_SHIFT) & FAULT_HIGH_MASK
        detail = high | (FAULT_WRITE if record.write else 0)
        self.post(client, source, (page & WORD_MASK, detail, 0, 0), vmid=record.vmid,
                  vmid_src=int(mmhub))
