"""IH 6.0 (OSSSYS 6.0.0): the interrupt ring, its write-pointer writeback, decode and dispatch.

What amdgpu does for this version (drivers/gpu/drm/amd/amdgpu/ih_v6_0.c, amdgpu_ih.c, amdgpu_irq.c)
and this block does too:
- sw_init: the ring (IH_RING_SIZE, 256 KiB by default, `AMConfig.ih_ring_size`) and the 4-byte
  write-pointer writeback slot, both in VRAM (`device.memory`), addressed by their MC address;
- hw_init (ih_v6_0_irq_init): ring off, base (address bits 39:8), IH_RB_CNTL (MC_SPACE 4: a GPU
  address, RB_SIZE = log2 of the size in dwords, writeback and overflow on, WPTR_OVERFLOW_CLEAR),
  the writeback address, wptr and rptr 0, the doorbell off (the read pointer goes to IH_RB_RPTR),
  storm and flood control as amdgpu sets them, then on with the WPTR_OVERFLOW_CLEAR 0 -> 1 -> 0
  toggle and ENABLE_INTR, then the self-interrupt wptr update. MSI-X vector 0 through hal when the
  backend delivers interrupts (VFIO, the mock), RPTR_REARM then, as amdgpu sets it with MSI on;
  polling otherwise (the NBIO side, nbio_v4_3_ih_control and ih_doorbell_range, is not done);
- `process()` (amdgpu_ih_process): the write pointer from the writeback slot; when it carries
  RB_OVERFLOW, confirmed in IH_RB_WPTR, reading resumes at wptr + 32 (the oldest entry not written
  over) and the flag is cleared (ih_v6_0_get_wptr); each 32-byte entry from rptr to wptr decoded
  (amdgpu_ih_decode_iv_helper) into an `IHEvent`, handed to the handlers registered for its
  (client, source), and the read pointer written back (ih_v6_0_set_rptr);
- decode into typed errors: VM faults (gmc_v11_0.c gmc_v11_0_process_interrupt: the page in
  src_data, the hub from the client, the status read from and cleared in the hub's
  VM_L2_PROTECTION_FAULT_STATUS/CNTL) as `VMFault`; CP faults in the command stream (gfx_v11_0.c
  bad opcode, privileged register, privileged instruction: me/pipe/queue from ring_id) as
  `CPFault`; SQ error reports (kfd_int_process_v11.c: the SQ interrupt word's ERROR encoding) as
  `SQError`; RAS events the IH carries (UMC ECC through the DF client, gmc_v11_0.c; the RLC's FED
  poison interrupt, gfx_v11_0.c) as `RASError`;
- `wait(what, timeout_s)`: until an entry arrives, bounded: DeviceTimeout names the ring, rptr,
  wptr and whether it waited on MSI-X or by polling; a device that fell off the bus raises
  DeviceLost on the first read that sees all ones.
Not done: ring 1 (the retry-fault ring amdgpu keeps on dGPUs), the soft ring and the doorbell
read-pointer path; a ring in system memory (needs GART).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Callable

from autogen.amd import irqsrcs_gfx_11_0_0 as gfx_sources
from autogen.amd import irqsrcs_vmc_1_0 as vmc_sources
from autogen.amd import soc15_ih_clientid as clients
from drivers.am.ip import IPBlock
from hal.errors import DeviceTimeout, HalError, InvalidArgument, UnsupportedOperation

log = logging.getLogger(__name__)

IH_RING_SIZE = 256 * 1024  # amdgpu_ih.h IH_RING_SIZE
IH_TIMEOUT_S = 1.0  # this driver's default for wait(): one second, like amdgpu's IH checkpoint wait
ENTRY_BYTES = 32  # amdgpu_ih.c amdgpu_ih_decode_iv_helper: eight dwords per entry
DWORD_BYTES = 4
WORD_MASK = 0xFFFFFFFF
MSIX_VECTOR = 0  # amdgpu_irq.c amdgpu_irq_init: the IH's one vector
RING_ALIGNMENT = 4096  # amdgpu_ih.c amdgpu_ih_ring_init: amdgpu_bo_create_kernel(..., PAGE_SIZE, ...)
RING_BASE_SHIFT = 8  # ih_v6_0.c ih_v6_0_enable_ring: IH_RB_BASE = gpu_addr >> 8, BASE_HI = >> 40
RING_BASE_HI_SHIFT = 40
WPTR_ADDR_HI_SHIFT = 32
MC_SPACE_GPU_ADDRESS = 4  # ih_v6_0.c ih_v6_0_rb_cntl: MC_SPACE = use_bus_addr ? 2 : 4
POLL_INTERVAL_S = 0.001  # between writeback reads when no MSI-X is delivered
# ih_v6_0.c ih_v6_0_irq_init: the MSI storm delay for UTCL2 fault storms; force_update_wptr_for_self_int
# (adev, 0, 8, ...): the self-interrupt wptr report threshold and timeout
MSI_STORM_DELAY = 3
SELF_IV_THRESHOLD = 0
SELF_IV_TIMEOUT = 8
MAX_ENTRIES_PER_PASS = 32  # amdgpu_irq.h AMDGPU_IH_MAX_NUM_IVS: entries before the rptr is written
# amdgpu_ih.c amdgpu_ih_decode_iv_helper: the fields of an entry
CLIENT_SHIFT = 0
SOURCE_SHIFT = 8
RING_ID_SHIFT = 16
VMID_SHIFT = 24
VMID_TYPE_SHIFT = 31
BYTE_MASK = 0xFF
VMID_MASK = 0xF
TIMESTAMP_HI_MASK = 0xFFFF
TIMESTAMP_SRC_SHIFT = 31
PASID_MASK = 0xFFFF
NODE_SHIFT = 16
# gmc_v11_0.c gmc_v11_0_process_interrupt: the fault address and the write/retry bits
FAULT_PAGE_SHIFT = 12
FAULT_HIGH_SHIFT = 44
FAULT_HIGH_MASK = 0xF
FAULT_WRITE = 1 << 5
FAULT_RETRY = 1 << 7
# gfx_v11_0.c gfx_v11_0_handle_priv_fault: me, pipe and queue packed in ring_id
RING_ME_MASK = 0x0C
RING_ME_SHIFT = 2
RING_PIPE_MASK = 0x03
RING_QUEUE_MASK = 0x70
RING_QUEUE_SHIFT = 4
# kfd_int_process_v11.c SQ_INTERRUPT_WORD_*: context_id1 (src_data[1]) bits 7:6 the encoding;
# ERROR encoding: context_id0 bits 20:0 detail, 24:21 type, 25 sh, 26 priv, 31:27 wave, and
# context_id1 bits 1:0 simd, 5:2 wgp
SQ_ENCODING_SHIFT = 6
SQ_ENCODING_MASK = 0x3
SQ_ENCODING_ERROR = 2  # kfd_int_process_v11.c enum SQ_INTERRUPT_WORD_ENCODING: AUTO, INST, ERROR
SQ_ERROR_DETAIL_MASK = 0x1FFFFF
SQ_ERROR_TYPE_SHIFT = 21
SQ_ERROR_TYPE_MASK = 0xF
SQ_SH_SHIFT = 25
SQ_PRIV_SHIFT = 26
SQ_WAVE_SHIFT = 27
SQ_WAVE_MASK = 0x1F
SQ_SIMD_MASK = 0x3
SQ_WGP_SHIFT = 2
SQ_WGP_MASK = 0xF
# kfd_int_process_v11.c enum SQ_INTERRUPT_ERROR_TYPE
SQ_ERROR_TYPES = {0: "EDC_FUE", 1: "ILLEGAL_INST", 2: "MEMVIOL", 3: "EDC_FED"}
# gmc_v11_0.c gmc_v11_0_sw_init: UMC ECC errors reach the IH from the DF client, source 0
DF_ECC_SOURCE = 0

GFX_HUB = "GC"
MM_HUB = "MMHUB"
# gmc_v11_0.c gmc_v11_0_sw_init: (client, source) pairs of VM faults: the MMHUB's VMC, the GFX UTCL2
VM_FAULT_SOURCES = (
    (clients.SOC21_IH_CLIENTID_VMC, vmc_sources.VMC_1_0__SRCID__VM_FAULT),
    (clients.SOC21_IH_CLIENTID_GFX, vmc_sources.UTCL2_1_0__SRCID__FAULT),
)
# RAS events the IH carries: gmc_v11_0.c gmc_v11_0_sw_init (UMC ECC via the DF client) and
# gfx_v11_0.c gfx_v11_0_sw_init (the RLC's FED interrupt for poisoned data)
RAS_SOURCES = {
    (clients.SOC21_IH_CLIENTID_DF, DF_ECC_SOURCE): "UMC ECC",
    (clients.SOC21_IH_CLIENTID_GFX, gfx_sources.GFX_11_0_0__SRCID__RLC_GC_FED_INTERRUPT):
        "RLC FED poison",
}


# -- typed errors ------------------------------------------------------------------------------
class GPUInterruptError(HalError):
    """An error the GPU reported through the interrupt ring; `entry` is the decoded IV entry."""

    def __init__(self, message: str, entry: "IHEntry") -> None:
        super().__init__(message)
        self.entry = entry


class VMFault(GPUInterruptError):
    """A GPU virtual-memory fault: `address` (page aligned), `hub` ("GC"/"MMHUB"), `vmid`, `pasid`,
    `client_id` (the IH client), `write`, `retry`, `status` (the hub's VM_L2_PROTECTION_FAULT_STATUS,
    `status_fields` decoded; 0 when not read)."""

    def __init__(self, entry: "IHEntry", *, address: int, hub: str, write: bool, retry: bool,
                 status: int, status_fields: dict[str, int]) -> None:
        self.address = address
        self.hub = hub
        self.vmid = entry.vmid
        self.pasid = entry.pasid
        self.client_id = entry.client_id
        self.write = write
        self.retry = retry
        self.status = status
        self.status_fields = status_fields
        fields = ", ".join(f"{name} {value:#x}" for name, value in status_fields.items() if value)
        super().__init__(
            f"GPU page fault ({'write' if write else 'read'}) at {address:#014x} on the "
            f"{'MMHUB' if hub == MM_HUB else 'GFX hub'}, VMID {entry.vmid}, pasid {entry.pasid}, "
            f"IH client {client_name(entry.client_id)} source {entry.source_id}; "
            f"VM_L2_PROTECTION_FAULT_STATUS {status:#010x} ({fields or 'no bits'}): map the page, "
            "or find the command that used a stale or wrong address", entry)


class CPFault(GPUInterruptError):
    """The command processor refused a packet: `kind` ("bad opcode", "privileged register",
    "privileged instruction"), `me`, `pipe`, `queue` of the ring that sent it."""

    def __init__(self, entry: "IHEntry", kind: str) -> None:
        self.kind = kind
        self.me = (entry.ring_id & RING_ME_MASK) >> RING_ME_SHIFT
        self.pipe = entry.ring_id & RING_PIPE_MASK
        self.queue = (entry.ring_id & RING_QUEUE_MASK) >> RING_QUEUE_SHIFT
        super().__init__(f"CP {kind} in the command stream of me {self.me} pipe {self.pipe} queue "
                         f"{self.queue} (VMID {entry.vmid}): the queue's packets are malformed", entry)


class SQError(GPUInterruptError):
    """A shader error the SQ reported: `error_type` (SQ_INTERRUPT_ERROR_TYPE name), `detail`,
    `wave`, `simd`, `wgp`, `sh`, `privileged`."""

    def __init__(self, entry: "IHEntry") -> None:
        context0, context1 = entry.src_data[0], entry.src_data[1]
        type_id = (context0 >> SQ_ERROR_TYPE_SHIFT) & SQ_ERROR_TYPE_MASK
        self.error_type = SQ_ERROR_TYPES.get(type_id, f"type {type_id}")
        self.detail = context0 & SQ_ERROR_DETAIL_MASK
        self.sh = (context0 >> SQ_SH_SHIFT) & 1
        self.privileged = bool((context0 >> SQ_PRIV_SHIFT) & 1)
        self.wave = (context0 >> SQ_WAVE_SHIFT) & SQ_WAVE_MASK
        self.simd = context1 & SQ_SIMD_MASK
        self.wgp = (context1 >> SQ_WGP_SHIFT) & SQ_WGP_MASK
        super().__init__(f"SQ error {self.error_type} (detail {self.detail:#x}) from wave {self.wave} "
                         f"simd {self.simd} wgp {self.wgp} sh {self.sh}, VMID {entry.vmid}, pasid "
                         f"{entry.pasid}", entry)


class RASError(GPUInterruptError):
    """A reliability event: `source` ("UMC ECC", "RLC FED poison")."""

    def __init__(self, entry: "IHEntry", source: str) -> None:
        self.source = source
        super().__init__(f"RAS event: {source} (IH client {client_name(entry.client_id)} source "
                         f"{entry.source_id}, data {', '.join(f'{v:#x}' for v in entry.src_data)}): "
                         "the part reported a hardware error; reset it before trusting its memory",
                         entry)


def client_name(client_id: int) -> str:
    """SOC21_IH_CLIENTID_<name> of a client id (soc15_ih_clientid.h), or the number."""
    for name, value in vars(clients).items():
        if name.startswith("SOC21_IH_CLIENTID_") and value == client_id and not name.endswith("MAX"):
            return name.removeprefix("SOC21_IH_CLIENTID_")
    return str(client_id)


# -- entries and events ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class IHEntry:
    """One interrupt vector as amdgpu_ih_decode_iv_helper decodes it."""

    client_id: int
    source_id: int
    ring_id: int
    vmid: int
    vmid_src: int
    timestamp: int
    timestamp_src: int
    pasid: int
    node_id: int
    src_data: tuple[int, int, int, int]

    @classmethod
    def decode(cls, raw: bytes) -> "IHEntry":
        """One ring entry of exactly ENTRY_BYTES; a shorter one is refused, never padded."""
        if len(raw) != ENTRY_BYTES:
            raise InvalidArgument(f"an IH ring entry is {ENTRY_BYTES} bytes, got {len(raw)}")
        words = [int.from_bytes(raw[i:i + DWORD_BYTES], "little")
                 for i in range(0, ENTRY_BYTES, DWORD_BYTES)]
        head = words[0]
        return cls(
            client_id=(head >> CLIENT_SHIFT) & BYTE_MASK,
            source_id=(head >> SOURCE_SHIFT) & BYTE_MASK,
            ring_id=(head >> RING_ID_SHIFT) & BYTE_MASK,
            vmid=(head >> VMID_SHIFT) & VMID_MASK,
            vmid_src=head >> VMID_TYPE_SHIFT,
            timestamp=words[1] | (words[2] & TIMESTAMP_HI_MASK) << 32,
            timestamp_src=words[2] >> TIMESTAMP_SRC_SHIFT,
            pasid=words[3] & PASID_MASK,
            node_id=(words[3] >> NODE_SHIFT) & BYTE_MASK,
            src_data=(words[4], words[5], words[6], words[7]),
        )


@dataclasses.dataclass
class IHEvent:
    """A decoded entry: `kind` ("vm_fault", "cp_fault", "sq", "ras", "interrupt") and, for the
    error kinds, the typed `error` (not raised: handlers and callers decide)."""

    entry: IHEntry
    kind: str
    error: GPUInterruptError | None = None


Handler = Callable[[IHEvent], None]


class IHv6_0(IPBlock):
    """OSSSYS 6.0.0 interrupt handler, ring 0 (see the module docstring)."""

    block = "IH"
    versions = ((6, 0, 0),)

    def sw_init(self) -> None:
        device = self.device
        size = getattr(device.config, "ih_ring_size", IH_RING_SIZE)
        if size < ENTRY_BYTES * 2 or size & (size - 1):
            raise InvalidArgument(f"IH ring size {size} is not a power of two of at least "
                                  f"{ENTRY_BYTES * 2} bytes (ih_v6_0.c: RB_SIZE is a log2)")
        self.ring_size = size
        self.ptr_mask = size - 1
        self.timeout_s = getattr(device.config, "ih_timeout_s", IH_TIMEOUT_S)
        registers = device.registers

        def reg(name: str):
            return registers.reg("OSSSYS", name)

        self.rb_cntl = reg("regIH_RB_CNTL")
        self.rb_base = reg("regIH_RB_BASE")
        self.rb_base_hi = reg("regIH_RB_BASE_HI")
        self.rb_wptr = reg("regIH_RB_WPTR")
        self.rb_rptr = reg("regIH_RB_RPTR")
        self.wptr_addr_lo = reg("regIH_RB_WPTR_ADDR_LO")
        self.wptr_addr_hi = reg("regIH_RB_WPTR_ADDR_HI")
        self.doorbell_rptr = reg("regIH_DOORBELL_RPTR")
        self.storm_clients = reg("regIH_STORM_CLIENT_LIST_CNTL")
        self.flood_cntl = reg("regIH_INT_FLOOD_CNTL")
        self.msi_storm = reg("regIH_MSI_STORM_CTRL")
        self.cntl2 = reg("regIH_CNTL2")
        self.rb_cntl_ring1 = reg("regIH_RB_CNTL_RING1")
        self.fault_registers = {
            GFX_HUB: (registers.reg("GC", "regGCVM_L2_PROTECTION_FAULT_STATUS"),
                      registers.reg("GC", "regGCVM_L2_PROTECTION_FAULT_CNTL")),
            MM_HUB: (registers.reg("MMHUB", "regMMVM_L2_PROTECTION_FAULT_STATUS"),
                     registers.reg("MMHUB", "regMMVM_L2_PROTECTION_FAULT_CNTL")),
        }
        # the ring, then the writeback dword in its own page (amdgpu: a writeback slot)
        self.ring = device.memory.alloc_vram(size, alignment=RING_ALIGNMENT, purpose="IH ring")
        self.writeback = device.memory.alloc_vram(RING_ALIGNMENT, alignment=RING_ALIGNMENT,
                                                  purpose="IH wptr writeback")
        self.rptr = 0
        self.enabled = False
        self.msix = False
        self.handlers: dict[tuple[int, int], list[Handler]] = {}
        self.overflows = 0
        self.processed = 0

    def sw_fini(self) -> None:
        memory = self.device.memory
        memory.free_vram(self.writeback)
        memory.free_vram(self.ring)

    # -- hw --------------------------------------------------------------------------------------
    def hw_init(self) -> None:
        """ih_v6_0.c ih_v6_0_irq_init for ring 0."""
        self._toggle(False)
        ring_address = self.ring.mc_address
        self.rb_base.write(ring_address >> RING_BASE_SHIFT)
        self.rb_base_hi.write_fields(ADDR=ring_address >> RING_BASE_HI_SHIFT)
        self.msix = self._enable_msix()
        order = (self.ring_size // DWORD_BYTES).bit_length() - 1
        self.rb_cntl.update(MC_SPACE=MC_SPACE_GPU_ADDRESS, WPTR_OVERFLOW_CLEAR=1, WPTR_OVERFLOW_ENABLE=1,
                            RB_SIZE=order, WPTR_WRITEBACK_ENABLE=1, MC_SNOOP=1, MC_RO=0, MC_VMID=0,
                            RPTR_REARM=int(self.msix))
        writeback_address = self.writeback.mc_address
        self.writeback.view.write32(0, 0)
        self.wptr_addr_lo.write(writeback_address & WORD_MASK)
        self.wptr_addr_hi.write_fields(ADDR=writeback_address >> WPTR_ADDR_HI_SHIFT)
        self.rb_wptr.write(0)
        self.rb_rptr.write(0)
        self.doorbell_rptr.write_fields(ENABLE=0)
        self.rptr = 0
        # UTCL2 faults (client 18 in the storm list) are MSI storm capable: flood control on and
        # a delay between their messages
        self.storm_clients.update(CLIENT18_IS_STORM_CLIENT=1)
        self.flood_cntl.update(FLOOD_CNTL_ENABLE=1)
        self.msi_storm.update(DELAY=MSI_STORM_DELAY)
        self._toggle(True)
        self._self_interrupt_wptr_update(True)

    def hw_fini(self) -> None:
        """ih_v6_0.c ih_v6_0_irq_disable; interrupts handed back to hal."""
        self._self_interrupt_wptr_update(False)
        self._toggle(False)
        if self.msix:
            self.device.pci.disable_interrupts()
            self.msix = False

    def _self_interrupt_wptr_update(self, enable: bool) -> None:
        """ih_v6_0.c force_update_wptr_for_self_int(adev, 0, 8, enable)."""
        self.rb_cntl_ring1.update(RB_USED_INT_THRESHOLD=SELF_IV_THRESHOLD)
        self.cntl2.update(SELF_IV_FORCE_WPTR_UPDATE_TIMEOUT=SELF_IV_TIMEOUT,
                          SELF_IV_FORCE_WPTR_UPDATE_ENABLE=int(enable))

    def _enable_msix(self) -> bool:
        """MSI-X vector 0 through hal where the backend delivers interrupts, else polling."""
        try:
            self.device.pci.enable_interrupts("msix", 1)
        except UnsupportedOperation as exc:
            log.info("%s: IH polls (no MSI-X: %s)", self.device.pci.bdf, exc)
            return False
        return True

    def _toggle(self, enable: bool) -> None:
        """ih_v6_0.c ih_v6_0_toggle_ring_interrupts: on with a 0 -> 1 -> 0 WPTR_OVERFLOW_CLEAR."""
        value = self.rb_cntl.definition.update(self.rb_cntl.read(), RB_ENABLE=int(enable))
        if enable:
            value = self.rb_cntl.definition.update(value, WPTR_OVERFLOW_CLEAR=0)
            self.rb_cntl.write(value)
            self.rb_cntl.write(self.rb_cntl.definition.update(value, WPTR_OVERFLOW_CLEAR=1))
        self.rb_cntl.write(self.rb_cntl.definition.update(value, ENABLE_INTR=int(enable)))
        if not enable:
            self.rb_rptr.write(0)
            self.rb_wptr.write(0)
            self.rptr = 0
        self.enabled = enable

    # -- pointers --------------------------------------------------------------------------------
    def get_wptr(self) -> int:
        """ih_v6_0.c ih_v6_0_get_wptr: the writeback value; on RB_OVERFLOW (confirmed in the
        register) resume after the oldest entry written over and clear the flag."""
        raw = self.writeback.view.read32(0)
        if raw == WORD_MASK:
            self.device.pci.check_alive("the IH wptr writeback")
        wptr_register = self.rb_wptr.definition
        if not wptr_register.field("RB_OVERFLOW").decode(raw):
            return self._offset(raw)
        raw = self.rb_wptr.read()
        if not wptr_register.field("RB_OVERFLOW").decode(raw):
            return self._offset(raw)
        wptr = self._offset(raw)
        resume = (wptr + ENTRY_BYTES) & self.ptr_mask
        log.warning("%s: IH ring overflow (wptr %#x, rptr %#x, resuming at %#x)", self.device.pci.bdf,
                    wptr, self.rptr, resume)
        self.rptr = resume
        self.overflows += 1
        cntl = self.rb_cntl.update(WPTR_OVERFLOW_CLEAR=1)
        self.rb_cntl.write(self.rb_cntl.definition.update(cntl, WPTR_OVERFLOW_CLEAR=0))
        return wptr

    def _offset(self, raw: int) -> int:
        return (self.rb_wptr.definition.field("OFFSET").decode(raw) << 2) & self.ptr_mask

    def set_rptr(self) -> None:
        """ih_v6_0.c ih_v6_0_set_rptr without a doorbell: the register."""
        self.rb_rptr.write_fields(OFFSET=self.rptr >> 2)

    # -- processing ------------------------------------------------------------------------------
    def register(self, client_id: int, source_id: int, handler: Handler) -> None:
        """Call `handler(event)` for every entry from (client, source) (amdgpu_irq_add_id)."""
        self.handlers.setdefault((client_id, source_id), []).append(handler)

    def process(self) -> list[IHEvent]:
        """amdgpu_ih.c amdgpu_ih_process: every entry from rptr to wptr, decoded and dispatched; the
        read pointer written back each pass of at most MAX_ENTRIES_PER_PASS entries."""
        events: list[IHEvent] = []
        if not self.enabled:
            return events
        wptr = self.get_wptr()
        while self.rptr != wptr:
            count = 0
            while self.rptr != wptr and count < MAX_ENTRIES_PER_PASS:
                raw = self.ring.view.read(self.rptr, ENTRY_BYTES)
                self.rptr = (self.rptr + ENTRY_BYTES) & self.ptr_mask
                event = self.decode(IHEntry.decode(raw))
                events.append(event)
                self.processed += 1
                count += 1
                for handler in self.handlers.get((event.entry.client_id, event.entry.source_id), ()):
                    handler(event)
            self.set_rptr()
            wptr = self.get_wptr()  # more may have come while these were handled
        return events

    def decode(self, entry: IHEntry) -> IHEvent:
        """The typed event of an entry (see the module docstring for the sources)."""
        client, source = entry.client_id, entry.source_id
        if (client, source) in VM_FAULT_SOURCES:
            return IHEvent(entry, "vm_fault", self._vm_fault(entry))
        cp_faults = {
            gfx_sources.GFX_11_0_0__SRCID__CP_BAD_OPCODE_ERROR: "bad opcode",
            gfx_sources.GFX_11_0_0__SRCID__CP_PRIV_REG_FAULT: "privileged register",
            gfx_sources.GFX_11_0_0__SRCID__CP_PRIV_INSTR_FAULT: "privileged instruction",
        }
        if client == clients.SOC21_IH_CLIENTID_GRBM_CP and source in cp_faults:
            return IHEvent(entry, "cp_fault", CPFault(entry, cp_faults[source]))
        sq_clients = (clients.SOC21_IH_CLIENTID_GRBM_CP, clients.SOC21_IH_CLIENTID_GFX)
        if client in sq_clients and source == gfx_sources.GFX_11_0_0__SRCID__SQ_INTERRUPT_ID:
            encoding = (entry.src_data[1] >> SQ_ENCODING_SHIFT) & SQ_ENCODING_MASK
            if encoding == SQ_ENCODING_ERROR:
                return IHEvent(entry, "sq", SQError(entry))
            return IHEvent(entry, "sq")
        ras_source = RAS_SOURCES.get((client, source))
        if ras_source is not None:
            return IHEvent(entry, "ras", RASError(entry, ras_source))
        return IHEvent(entry, "interrupt")

    def _vm_fault(self, entry: IHEntry) -> VMFault:
        """gmc_v11_0.c gmc_v11_0_process_interrupt: the address from src_data, the hub from the
        client; the status read from the hub, then CLEAR_PROTECTION_FAULT_STATUS_ADDR set."""
        hub = MM_HUB if entry.client_id == clients.SOC21_IH_CLIENTID_VMC else GFX_HUB
        address = entry.src_data[0] << FAULT_PAGE_SHIFT
        address |= (entry.src_data[1] & FAULT_HIGH_MASK) << FAULT_HIGH_SHIFT
        status_register, cntl_register = self.fault_registers[hub]
        if hub == GFX_HUB:
            status_register.read()  # gmc_v11_0.c: a dummy read first on the GFX hub
        status = status_register.read()
        cntl_register.update(CLEAR_PROTECTION_FAULT_STATUS_ADDR=1)
        return VMFault(entry, address=address, hub=hub, write=bool(entry.src_data[1] & FAULT_WRITE),
                       retry=bool(entry.src_data[1] & FAULT_RETRY), status=status,
                       status_fields=status_register.decode(status))

    # -- waiting ---------------------------------------------------------------------------------
    def wait(self, what: str = "an interrupt", timeout_s: float | None = None,
             predicate: Callable[[IHEvent], bool] | None = None) -> list[IHEvent]:
        """Process entries until one satisfies `predicate` (default: any); returns every event
        processed meanwhile. Sleeps on MSI-X vector 0 when enabled, else polls the writeback.
        DeviceTimeout names the ring, rptr and wptr after `timeout_s` (AMConfig.ih_timeout_s)."""
        if not self.enabled:
            raise InvalidArgument("the IH ring is not enabled (hw_init has not run, or hw_fini did)")
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        os = self.device.pci.os
        deadline = os.monotonic() + timeout_s
        seen: list[IHEvent] = []
        while True:
            events = self.process()
            seen.extend(events)
            if any(predicate is None or predicate(event) for event in events):
                return seen
            # a register read each round: a device that fell off the bus raises DeviceLost here
            wptr_register = self.rb_wptr.read()
            remaining = deadline - os.monotonic()
            if remaining <= 0:
                wptr = self._offset(self.writeback.view.read32(0))
                raise DeviceTimeout(
                    f"{self.device.pci.bdf}: IH ring 0: no entry for {what} within {timeout_s} s "
                    f"({'MSI-X vector 0' if self.msix else 'polling the wptr writeback'}; "
                    f"rptr {self.rptr:#x}, wptr {wptr:#x}, IH_RB_WPTR {wptr_register:#010x}, "
                    f"{len(seen)} other entries)")
            if self.msix:
                try:
                    self.device.pci.wait_irq(MSIX_VECTOR, timeout_s=remaining)
                except DeviceTimeout:
                    continue  # the deadline check above reports it with the ring's state
            else:
                os.sleep(min(remaining, POLL_INTERVAL_S))

