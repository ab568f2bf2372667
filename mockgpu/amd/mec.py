"""The mock MEC (compute micro-engine) of a Navi31 (GC 11.0.0): hardware queues and their PM4 engine.

What it owns, from the hardware side (gfx_v11_0.c, amdgpu_amdkfd_gfx_v11.c and nvd.h are the
protocol it is written against):
- the firmware state: the MEC runs nothing until its microcode is in. On the Navi31 the PSP loads
  the RS64 MEC image and its per-pipe stacks (LOAD_IP_FW GFX_FW_TYPE_RS64_MEC, _MEC_P0.._P3_STACK:
  amdgpu_psp.c psp_get_fw_type); `firmware_loaded` reads that from the PSP model, tests may force it.
  The engine is halted at power-on and after any reset; CP_MEC_RS64_CNTL (MEC_HALT clear, the
  pipe's ACTIVE set and RESET clear: gfx_v11_0_cp_compute_enable with rs64_enable) lets a pipe run.
  An F32 image (`firmware_kind = "f32"`, gfx_v11_0_cp_compute_enable without rs64) runs under
  CP_MEC_CNTL.MEC_ME1_HALT and the MEC_ME1_PIPEn_RESET bits instead;
- the HQD register banks: every CP_HQD_* / CP_MQD_* register exists once per (me, pipe, queue),
  the one GRBM_GFX_CNTL selects (soc21.c soc21_grbm_select: MEID, PIPEID, QUEUEID) reading and
  writing. ME 1 (MEC1: gfx_v11_0.c "mec0 is me1", num_mec = 1) has 4 pipes of 8 queues (the
  width of GRBM_GFX_CNTL.QUEUEID); banks of other MEs hold values but never run;
- queue activation: writing CP_HQD_ACTIVE.ACTIVE = 1 (gfx_v11_0_kiq_init_register, or the whole
  bank copied from the MQD as amdgpu_amdkfd_gfx_v11.c hqd_load_v11 does) checks the setup: the
  PQ base and QUEUE_SIZE (2 << QUEUE_SIZE dwords, hqd_load_v11), the rptr report
  address, the EOP buffer (2 << EOP_SIZE dwords), the doorbell (enabled and inside
  CP_MEC_DOORBELL_RANGE_LOWER/UPPER). A bad setup is refused: ACTIVE stays clear and `error` says
  why. Activation does not need the MEC to run yet (amdgpu activates the KIQ before
  gfx_v11_0_kcq_resume un-halts the MEC); the queue starts when it does;
- doorbells: a write in BAR2 reaches the MEC when the doorbell aperture is on, NBIO's GC port
  (S2A_DOORBELL_ENTRY_0_CTRL, nbio_v4_3.c nbio_v4_3_gc_doorbell_init) is enabled, CP_PQ_STATUS
  .DOORBELL_ENABLE is set and the dword index lies in the MEC range; the active queue with that
  DOORBELL_OFFSET takes the value as its 64-bit write pointer in dwords
  (gfx_v11_0_ring_set_wptr_compute: WDOORBELL64) and runs to it. The read pointer is the dword
  offset in the ring (hqd_load_v11: "the number of valid bits in the 32-bit RPTR depends on the
  queue size"), reported to the rptr report address after progress unless NO_UPDATE_RPTR;
- PM4 type-3 packets (nvd.h): NOP (count 0x3FFF: one dword, gfx_v11_0.c's compute ring nop),
  SET_SH_REG and SET_UCONFIG_REG (into those windows of the register file; amdgpu's compute ring
  test writes SCRATCH_REG0 so), WRITE_DATA (register or memory: amdgpu's IB test), ACQUIRE_MEM,
  RELEASE_MEM (EOP or EOS event; DATA_SEL none/32/64/GPU clock/system clock; INT_SEL
  none/interrupt/after write confirm, the
  interrupt being CP_EOP_INTERRUPT from SOC21_IH_CLIENTID_GRBM_CP when the pipe's
  TIME_STAMP_INT_ENABLE is set: gfx_v11_0_set_compute_eop_interrupt_state), WAIT_REG_MEM (register
  or memory, the seven compare functions, write-wait-write form), INDIRECT_BUFFER (one level),
  EVENT_WRITE, COPY_DATA (register / memory), DISPATCH_DIRECT (validates the COMPUTE_* state,
  with scratch (RSRC2.SCRATCH_EN) a COMPUTE_DISPATCH_SCRATCH_BASE and a COMPUTE_TMPRING_SIZE whose
  WAVES slots hold a work-group's waves, passes both to the interpreter, records the dispatch in
  `dispatches` and runs its grid to the end in the RDNA3 interpreter,
  mockgpu.amd.rdna3.interp, before the next packet: at most `instruction_budget` wave
  instructions; a grid still running then leaves the queue hung on the packet (`hung`) until a
  dequeue, as a kernel that never ends does. A wave's memory fault, sent to the IH by the GMC, or
  an instruction the interpreter lacks stops the queue with `error` naming the address). A
  header whose type is not 3, an unknown opcode, a count that does not fit the opcode or a field
  out of range stops the queue:
  OPCODE_ERROR_INT_STATUS is set in the pipe's CP_ME1_PIPEn_INT_STATUS and, when the pipe's
  OPCODE_ERROR_INT_ENABLE is set (gfx_v11_0_set_bad_op_fault_state), CP_BAD_OPCODE_ERROR goes to
  the IH with the queue in ring_id (gfx_v11_0.c gfx_v11_0_handle_priv_fault: me bits 3:2, pipe
  1:0, queue 6:4). A memory fault (the GMC posts the VM fault) sets the matching UTCL1 bit in
  CP_HQD_ERROR and stops the queue;
- addresses go through the GMC model's GFX hub (ring_vm_hub AMDGPU_GFXHUB(0)) with the queue's
  CP_HQD_VMID (VMID 0 for kernel queues), the IB's VMID inside an IB; fetches are UTCL2 client CPF,
  data accesses CPC (gfxhub_v3_0.c gfxhub_client_ids);
- dequeue: CP_HQD_DEQUEUE_REQUEST.DEQUEUE_REQ != 0 stops the queue at a packet boundary (a pending
  WAIT_REG_MEM is abandoned, an IB restarts from its packet), keeps rptr and wptr in the bank
  and clears CP_HQD_ACTIVE, which amdgpu and amdkfd poll (gfx_v11_0_kiq_init_register,
  amdgpu_amdkfd_gfx_v11.c hqd_destroy_v11);
- resets: any reset ("power_on", "pci", "mode1") clears the queues, the banks and the MEC state
  (halted); the firmware goes with the PSP's TMR;
- fault hooks: `stalled` (no queue consumes anything and a dequeue does not complete until it is
  cleared and `kick()` runs), `response_delay_s` (a queue starts on its doorbell that much later).

This model's own choices (the kernel documents none): a DISPATCH_DIRECT with a zero dimension or
invalid COMPUTE_* state stops the queue like a bad packet; nested IBs and the packets outside the
list above stop the queue as unsupported. Not modelled: WPTR polling (CP_PQ_WPTR_POLL_CNTL), the
CP saving queue state into the MQD on preemption, the EOP buffer's contents, caches.
SH registers are one set, not one per pipe.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Callable

from autogen.amd import irqsrcs_gfx_11_0_0 as srcid
from autogen.amd import nvd
from autogen.amd import psp_gfx_if as gfx
from autogen.amd import soc15_ih_clientid as clientid
from autogen.amd.regs import gc_11_0_0, nbio_4_3_0
from mockgpu.amd.gmc import GFX_HUB, GPUBusError, GPUVMFault
from mockgpu.amd.rdna3 import interp

if TYPE_CHECKING:
    from mockgpu.amd.gpu import Navi31GPU

log = logging.getLogger(__name__)

IP = "GC"
DWORD = 4
WORD_MASK = 0xFFFFFFFF
RESET_KINDS = ("power_on", "pci", "mode1")
COMPUTE_ME = 1  # gfx_v11_0.c gfx_v11_0_compute_ring_init: "mec0 is me1"
PIPES = 4  # gfx_v11_0.c gfx_v11_0_sw_init: num_pipe_per_mec = 4 for GC 11.0.0
# the GPU counters RELEASE_MEM's DATA_SEL 3/4 write tick at the reference clock: soc21.c
# soc21_get_xclk returns adev->clock.spll.reference_freq, 100 MHz on the Navi3x boards
CLOCK_HZ = 100_000_000
WAIT_RECHECK_S = 0.0005  # this model re-evaluates a pending WAIT_REG_MEM this often (simulated time)
# gfxhub_v3_0.c gfxhub_client_ids: the UTCL2 client index of the command fetcher and compute data
CLIENT_CPF = 4
CLIENT_CPC = 5
PGM_ADDRESS_SHIFT = 8  # COMPUTE_PGM_LO holds the program address >> 8, COMPUTE_PGM_HI bits 47:40
PGM_HI_SHIFT = 40
PQ_BASE_SHIFT = 8  # gfx_v11_0_compute_mqd_init: cp_hqd_pq_base_lo = hqd_base_gpu_addr >> 8
EOP_BASE_SHIFT = 8  # gfx_v11_0_compute_mqd_init: cp_hqd_eop_base_addr_lo = eop_gpu_addr >> 8
SIZE_SHIFT_BIAS = 1  # hqd_load_v11: queue_size = 2 << QUEUE_SIZE (dwords); EOP_SIZE likewise
# NOP with count 0x3FFF is a single dword (gfx_v11_0.c gfx_v11_0_ring_funcs_compute .nop;
# gfx_v11_ring_insert_nop writes it alone for one dword of padding)
NOP_ONE_DWORD_COUNT = 0x3FFF
HEADER_DWORDS = 1
# body lengths (count + 1) of the fixed-size packets, from the emitters in gfx_v11_0.c
ACQUIRE_MEM_BODY = 7  # gfx_v11_0_emit_mem_sync: PACKET3(PACKET3_ACQUIRE_MEM, 6)
RELEASE_MEM_BODY = 7  # gfx_v11_0_ring_emit_fence: PACKET3(PACKET3_RELEASE_MEM, 6)
WAIT_REG_MEM_BODY = 6  # gfx_v11_0_wait_reg_mem: PACKET3(PACKET3_WAIT_REG_MEM, 5)
INDIRECT_BUFFER_BODY = 3  # gfx_v11_0_ring_emit_ib_compute: PACKET3(PACKET3_INDIRECT_BUFFER, 2)
COPY_DATA_BODY = 5  # gfx_v11_0_ring_emit_rreg: PACKET3(PACKET3_COPY_DATA, 4)
DISPATCH_DIRECT_BODY = 4  # dim x, y, z and COMPUTE_DISPATCH_INITIATOR
WRITE_DATA_HEADER = 3  # gfx_v11_0_ring_emit_wreg: control, address lo, address hi before the data
# EVENT_WRITE: EVENT_INDEX 0 (any non-TS event) and 4 (*S_PARTIAL_FLUSH) carry no address; 1-3
# (ZPASS_DONE, SAMPLE_PIPELINESTAT, SAMPLE_STREAMOUTSTAT) carry a 64-bit one (nvd.h EVENT_INDEX)
EVENT_WRITE_PLAIN_INDICES = (0, 4)
EVENT_WRITE_ADDRESS_INDICES = (1, 2, 3)
EVENT_WRITE_ADDRESS_BODY = 3
# kfd_pm4_headers_ai.h mec_release_mem_event_index_enum: end_of_pipe = 5, shader_done = 6
RELEASE_MEM_EVENT_INDICES = (5, 6)
# kfd_pm4_headers_ai.h mec_release_mem_data_sel_enum / int_sel_enum (the codes nvd.h lists)
DATA_SEL_NONE = 0
DATA_SEL_32 = 1
DATA_SEL_64 = 2
DATA_SEL_GPU_CLOCK = 3
DATA_SEL_SYSTEM_CLOCK = 4
INT_SEL_NONE = 0
INT_SEL_INTERRUPT_ONLY = 1
INT_SEL_AFTER_WRITE_CONFIRM = 2
# kfd_pm4_headers_ai.h mec_release_mem_dst_sel_enum: memory_controller = 0, tc_l2 = 1
RELEASE_MEM_MEMORY_DESTINATIONS = (0, 1)
# WAIT_REG_MEM functions (nvd.h WAIT_REG_MEM_FUNCTION: 0 always, 1 <, 2 <=, 3 ==, 4 !=, 5 >=, 6 >)
WAIT_FUNCTIONS: dict[int, Callable[[int, int], bool]] = {
    0: lambda value, ref: True,
    1: lambda value, ref: value < ref,
    2: lambda value, ref: value <= ref,
    3: lambda value, ref: value == ref,
    4: lambda value, ref: value != ref,
    5: lambda value, ref: value >= ref,
    6: lambda value, ref: value > ref,
}
WAIT_SPACE_REGISTER = 0  # nvd.h WAIT_REG_MEM_MEM_SPACE: 0 reg, 1 mem
WAIT_SPACE_MEMORY = 1
WAIT_OPERATION_WAIT = 0  # nvd.h WAIT_REG_MEM_OPERATION: 0 wait_reg_mem, 1 wr_wait_wr_reg
WAIT_OPERATION_WRITE_WAIT = 1
# COPY_DATA selects: the PM4 codes kfd_pm4_headers_ai.h WRITE_data dst_sel_enum names
# (mem_mapped_register = 0, tc_l2 = 2, memory = 5); gfx_v11_0_ring_emit_rreg uses src 0, dst 5
COPY_REGISTER = 0
COPY_TC_L2 = 2
COPY_MEMORY = 5
COPY_SOURCES = (COPY_REGISTER, COPY_TC_L2)
COPY_DESTINATIONS = (COPY_REGISTER, COPY_TC_L2, COPY_MEMORY)
COPY_COUNT_64 = 1 << 16  # COPY_DATA control COUNT_SEL: 0 one dword, 1 two dwords
# RDNA3 ISA guide section 3.3.1: a wave32 allocates VGPRs in blocks of 8, at most 256 per wave
VGPR_GRANULE_WAVE32 = 8
MAX_VGPRS = 256
# LLVM AMDGPUUsage, COMPUTE_PGM_RSRC2.LDS_SIZE for GFX11: units of 128 dwords, 64 KiB per work-group
LDS_GRANULE_BYTES = 512
MAX_LDS_BYTES = 65536
MAX_WORKGROUP_THREADS = 1024  # LLVM AMDGPUUsage: the maximum flat work-group size is 1024

# this model's CP_HQD_ERROR bits for memory faults, by what the CP was accessing
ERROR_FETCH = "PQ_UTCL1_ERROR"
ERROR_IB = "IB_UTCL1_ERROR"
ERROR_RPTR_REPORT = "RRPT_UTCL1_ERROR"
ERROR_EOP = "EOP_UTCL1_ERROR"
ERROR_DATA_SOURCE = "DMA_SRC_UTCL1_ERROR"
ERROR_DATA_DESTINATION = "DMA_DST_UTCL1_ERROR"
ERROR_WAIT = "SEM_UTCL1_ERROR"


def _reg(name: str):
    return gc_11_0_0.get(name)


def _field(register: str, name: str):
    return gc_11_0_0.get(register).field(name)


SELECT_ME = _field("regGRBM_GFX_CNTL", "MEID")
SELECT_PIPE = _field("regGRBM_GFX_CNTL", "PIPEID")
SELECT_QUEUE = _field("regGRBM_GFX_CNTL", "QUEUEID")
RS64_HALT = _field("regCP_MEC_RS64_CNTL", "MEC_HALT")
RS64_PIPE_RESET = tuple(_field("regCP_MEC_RS64_CNTL", f"MEC_PIPE{p}_RESET") for p in range(PIPES))
RS64_PIPE_ACTIVE = tuple(_field("regCP_MEC_RS64_CNTL", f"MEC_PIPE{p}_ACTIVE") for p in range(PIPES))
F32_ME1_HALT = _field("regCP_MEC_CNTL", "MEC_ME1_HALT")
F32_ME2_HALT = _field("regCP_MEC_CNTL", "MEC_ME2_HALT")
F32_PIPE_RESET = tuple(_field("regCP_MEC_CNTL", f"MEC_ME1_PIPE{p}_RESET") for p in range(PIPES))
PQ_STATUS_DOORBELL_ENABLE = _field("regCP_PQ_STATUS", "DOORBELL_ENABLE")
RANGE_LOWER = _field("regCP_MEC_DOORBELL_RANGE_LOWER", "DOORBELL_RANGE_LOWER")
RANGE_UPPER = _field("regCP_MEC_DOORBELL_RANGE_UPPER", "DOORBELL_RANGE_UPPER")
GC_DOORBELL_PORT_ENABLE = nbio_4_3_0.regS2A_DOORBELL_ENTRY_0_CTRL.field("S2A_DOORBELL_PORT0_ENABLE")
ACTIVE = _field("regCP_HQD_ACTIVE", "ACTIVE")
DEQUEUE_REQ = _field("regCP_HQD_DEQUEUE_REQUEST", "DEQUEUE_REQ")
HQD_VMID = _field("regCP_HQD_VMID", "VMID")
QUEUE_SIZE = _field("regCP_HQD_PQ_CONTROL", "QUEUE_SIZE")
NO_UPDATE_RPTR = _field("regCP_HQD_PQ_CONTROL", "NO_UPDATE_RPTR")
EOP_SIZE = _field("regCP_HQD_EOP_CONTROL", "EOP_SIZE")
DOORBELL_EN = _field("regCP_HQD_PQ_DOORBELL_CONTROL", "DOORBELL_EN")
DOORBELL_OFFSET = _field("regCP_HQD_PQ_DOORBELL_CONTROL", "DOORBELL_OFFSET")
RPTR_REPORT = _field("regCP_HQD_PQ_RPTR_REPORT_ADDR", "RPTR_REPORT_ADDR")
RPTR_REPORT_HI = _field("regCP_HQD_PQ_RPTR_REPORT_ADDR_HI", "RPTR_REPORT_ADDR_HI")
INT_OPCODE_ERROR_ENABLE = _field("regCP_ME1_PIPE0_INT_CNTL", "OPCODE_ERROR_INT_ENABLE")
INT_TIME_STAMP_ENABLE = _field("regCP_ME1_PIPE0_INT_CNTL", "TIME_STAMP_INT_ENABLE")
INT_OPCODE_ERROR_STATUS = _field("regCP_ME1_PIPE0_INT_STATUS", "OPCODE_ERROR_INT_STATUS")
INT_TIME_STAMP_STATUS = _field("regCP_ME1_PIPE0_INT_STATUS", "TIME_STAMP_INT_STATUS")
# the largest ring CP_HQD_PQ_RPTR's 32-bit dword offset covers, and the largest EOP buffer the
# 13-bit CP_HQD_EOP_WPTR.WPTR covers
MAX_QUEUE_SIZE = _field("regCP_HQD_PQ_RPTR", "CONSUMED_OFFSET").width - SIZE_SHIFT_BIAS
MAX_EOP_SIZE = _field("regCP_HQD_EOP_WPTR", "WPTR").width - SIZE_SHIFT_BIAS
SHADER_EN = _field("regCOMPUTE_DISPATCH_INITIATOR", "COMPUTE_SHADER_EN")
CS_W32_EN = _field("regCOMPUTE_DISPATCH_INITIATOR", "CS_W32_EN")
RSRC1_VGPRS = _field("regCOMPUTE_PGM_RSRC1", "VGPRS")
RSRC2_USER_SGPR = _field("regCOMPUTE_PGM_RSRC2", "USER_SGPR")
RSRC2_LDS_SIZE = _field("regCOMPUTE_PGM_RSRC2", "LDS_SIZE")
RSRC2_SCRATCH_EN = _field("regCOMPUTE_PGM_RSRC2", "SCRATCH_EN")
TMPRING_WAVES = _field("regCOMPUTE_TMPRING_SIZE", "WAVES")
TMPRING_WAVESIZE = _field("regCOMPUTE_TMPRING_SIZE", "WAVESIZE")
NUM_THREAD_FULL = _field("regCOMPUTE_NUM_THREAD_X", "NUM_THREAD_FULL")
USER_DATA = tuple(name for name in (f"regCOMPUTE_USER_DATA_{i}" for i in range(64))
                  if name in set(gc_11_0_0.names()))

# the HQD bank: the registers CP_MQD_BASE_ADDR .. CP_HQD_PQ_WPTR_HI (the dwords of the MQD from
# cp_mqd_base_addr_lo on: hqd_load_v11) and the other CP_HQD_* registers, keyed by dword offset
_BANK_FIRST = _reg("regCP_MQD_BASE_ADDR").offset
_BANK_LAST = _reg("regCP_HQD_PQ_WPTR_HI").offset


def _bank_names() -> dict[int, str]:
    names: dict[int, str] = {}
    for name in gc_11_0_0.names():
        register = gc_11_0_0.get(name)
        if register.base_idx != 0:
            continue
        in_range = _BANK_FIRST <= register.offset <= _BANK_LAST
        if in_range or name.startswith("regCP_HQD_"):
            names.setdefault(register.offset, name)
    return names


BANK_REGISTERS = _bank_names()  # dword offset -> the first generated name at that offset
_OFFSET = {name: _reg(name).offset for name in (
    "regCP_HQD_ACTIVE", "regCP_HQD_DEQUEUE_REQUEST", "regCP_HQD_PQ_RPTR", "regCP_HQD_PQ_WPTR_LO",
    "regCP_HQD_PQ_WPTR_HI", "regCP_HQD_VMID", "regCP_HQD_PQ_BASE", "regCP_HQD_PQ_BASE_HI",
    "regCP_HQD_PQ_CONTROL", "regCP_HQD_EOP_BASE_ADDR", "regCP_HQD_EOP_BASE_ADDR_HI",
    "regCP_HQD_EOP_CONTROL", "regCP_HQD_PQ_DOORBELL_CONTROL", "regCP_HQD_PQ_RPTR_REPORT_ADDR",
    "regCP_HQD_PQ_RPTR_REPORT_ADDR_HI", "regCP_MQD_BASE_ADDR", "regCP_MQD_BASE_ADDR_HI",
    "regCP_MQD_CONTROL", "regCP_HQD_ERROR", "regCP_HQD_IB_BASE_ADDR", "regCP_HQD_IB_BASE_ADDR_HI")}


class PacketError(Exception):
    """The CP stopped a queue: a malformed packet or invalid state (`source_id` the interrupt),
    or a memory fault (`error_bit` the CP_HQD_ERROR field to set)."""

    def __init__(self, detail: str, source_id: int | None = srcid.GFX_11_0_0__SRCID__CP_BAD_OPCODE_ERROR,
                 error_bit: str | None = None) -> None:
        super().__init__(detail)
        self.source_id = source_id
        self.error_bit = error_bit


class _Pending(Exception):
    """The packet at the read pointer cannot complete yet (not all written, or a wait unmet)."""

    def __init__(self, recheck: bool = False) -> None:
        super().__init__()
        self.recheck = recheck


class _IBStarted(Exception):
    """Raised by INDIRECT_BUFFER: the queue now runs the IB before it moves past the packet."""


class _Hung(Exception):
    """Raised by DISPATCH_DIRECT: the grid ran out of its instruction budget; the queue stays on
    the packet (busy) until a dequeue."""


@dataclasses.dataclass
class Dispatch:
    """One DISPATCH_DIRECT the MEC accepted: where it came from and the COMPUTE_* state it used."""

    me: int
    pipe: int
    queue: int
    vmid: int
    dimensions: tuple[int, int, int]
    initiator: int
    program_address: int
    rsrc1: int
    rsrc2: int
    rsrc3: int
    threads: tuple[int, int, int]
    user_data: tuple[int, ...]
    scratch_base: int = 0  # COMPUTE_DISPATCH_SCRATCH_BASE_HI:LO (address >> 8)
    tmpring_size: int = 0  # COMPUTE_TMPRING_SIZE (WAVES, WAVESIZE)
    stats: interp.DispatchStats | None = None  # what running the grid cost, once it ran


@dataclasses.dataclass
class _IndirectBuffer:
    address: int
    length: int  # dwords
    vmid: int
    position: int = 0


class HardwareQueue:
    """One HQD: its register bank and what the CP keeps while it runs the queue."""

    def __init__(self, me: int, pipe: int, queue: int) -> None:
        self.me = me
        self.pipe = pipe
        self.queue = queue
        self.registers: dict[int, int] = {}
        self.active = False
        self.rptr = 0  # dword offset in the ring
        self.wptr = 0  # 64-bit dword count, as the doorbell writes it
        self.error: str | None = None
        self.dequeue_pending = False
        self.ib: _IndirectBuffer | None = None
        self.packets = 0
        self.events: list[tuple[int, int]] = []  # EVENT_WRITE (event type, event index)
        self.hung: str | None = None  # why a dispatch of this queue never finished

    @property
    def ring_id(self) -> int:
        """The IV ring_id of this queue (gfx_v11_0_handle_priv_fault: queue 6:4, me 3:2, pipe 1:0)."""
        return (self.queue << 4) | (self.me << 2) | self.pipe

    @property
    def name(self) -> str:
        return f"MEC queue {self.me}.{self.pipe}.{self.queue}"

    def get(self, name: str) -> int:
        return self.registers.get(_OFFSET[name], 0)

    def put(self, name: str, value: int) -> None:
        self.registers[_OFFSET[name]] = value & WORD_MASK

    @property
    def vmid(self) -> int:
        return HQD_VMID.decode(self.get("regCP_HQD_VMID"))

    @property
    def ring_dwords(self) -> int:
        return 2 << QUEUE_SIZE.decode(self.get("regCP_HQD_PQ_CONTROL"))

    @property
    def ring_address(self) -> int:
        return ((self.get("regCP_HQD_PQ_BASE") | self.get("regCP_HQD_PQ_BASE_HI") << 32)
                << PQ_BASE_SHIFT)

    @property
    def doorbell(self) -> int | None:
        control = self.get("regCP_HQD_PQ_DOORBELL_CONTROL")
        return DOORBELL_OFFSET.decode(control) if DOORBELL_EN.decode(control) else None


class MECModel:
    """MEC1 of a Navi31GPU (see the module docstring)."""

    def __init__(self, gpu: "Navi31GPU") -> None:
        self.gpu = gpu
        regfile = gpu.regfile
        self.stalled = False
        self.response_delay_s = 0.0  # fault hook: queues start on a doorbell only this much later
        self.firmware_kind: str | None = None  # forced by tests: "rs64" or "f32"
        self.queues: dict[tuple[int, int, int], HardwareQueue] = {}
        self.dispatches: list[Dispatch] = []
        self.instruction_budget = interp.DEFAULT_BUDGET  # wave instructions per dispatch
        self.acquires = 0
        self.error: str | None = None  # the last queue error, for tests and logs
        self._recheck_scheduled = False
        self._handlers = self._packet_handlers()
        self._select = regfile.own(IP, "regGRBM_GFX_CNTL")
        self._rs64_cntl = regfile.own(IP, "regCP_MEC_RS64_CNTL", write=self._write_mec_cntl(True))
        self._f32_cntl = regfile.own(IP, "regCP_MEC_CNTL", write=self._write_mec_cntl(False))
        self._pq_status = regfile.own(IP, "regCP_PQ_STATUS")
        self._range_lower = regfile.own(IP, "regCP_MEC_DOORBELL_RANGE_LOWER")
        self._range_upper = regfile.own(IP, "regCP_MEC_DOORBELL_RANGE_UPPER")
        self._gc_port = regfile.own("NBIO", "regS2A_DOORBELL_ENTRY_0_CTRL")
        self._int_cntl = tuple(regfile.own(IP, f"regCP_ME1_PIPE{p}_INT_CNTL") for p in range(PIPES))
        self._int_status = [0] * PIPES
        for pipe in range(PIPES):
            regfile.own(IP, f"regCP_ME1_PIPE{pipe}_INT_STATUS",
                        read=lambda pipe=pipe: self._int_status[pipe], write=lambda value: None)
        for offset, name in BANK_REGISTERS.items():
            regfile.own(IP, name, read=lambda offset=offset: self._bank_read(offset),
                        write=lambda value, offset=offset: self._bank_write(offset, value))
        self.reset("power_on")

    # -- reset -------------------------------------------------------------------------------------
    def reset(self, kind: str) -> None:
        """Any reset clears the queues and their banks and halts the MEC (amdgpu re-runs
        gfx_v11_0_cp_resume after each: the firmware comes back through the PSP)."""
        if kind not in RESET_KINDS:
            raise ValueError(f"reset kind {kind!r} is not one of {RESET_KINDS}")
        regfile = self.gpu.regfile
        self.queues.clear()
        self.dispatches.clear()
        self.acquires = 0
        self.error = None
        self.firmware_kind = None
        self._int_status = [0] * PIPES
        for address in (self._select, self._pq_status, self._range_lower, self._range_upper,
                        self._gc_port, *self._int_cntl):
            regfile.poke(address, 0)
        # halted until the driver runs it (gfx_v11_0_cp_compute_enable(adev, true))
        regfile.poke(self._rs64_cntl, RS64_HALT.mask)
        regfile.poke(self._f32_cntl, F32_ME1_HALT.mask | F32_ME2_HALT.mask)

    # -- firmware and halt -------------------------------------------------------------------------
    @property
    def firmware(self) -> str | None:
        """"rs64" once the PSP holds the RS64 MEC image and its four pipe stacks, "f32" for an F32
        image (GFX_FW_TYPE_CP_MEC), or what a test forced; None otherwise."""
        if self.firmware_kind is not None:
            return self.firmware_kind
        loaded = getattr(getattr(self.gpu, "psp", None), "loaded", {})
        rs64 = {gfx.GFX_FW_TYPE_RS64_MEC, gfx.GFX_FW_TYPE_RS64_MEC_P0_STACK,
                gfx.GFX_FW_TYPE_RS64_MEC_P1_STACK, gfx.GFX_FW_TYPE_RS64_MEC_P2_STACK,
                gfx.GFX_FW_TYPE_RS64_MEC_P3_STACK}
        if rs64 <= loaded.keys():
            return "rs64"
        if gfx.GFX_FW_TYPE_CP_MEC in loaded:
            return "f32"
        return None

    @property
    def firmware_loaded(self) -> bool:
        return self.firmware is not None

    @firmware_loaded.setter
    def firmware_loaded(self, value: bool) -> None:
        self.firmware_kind = "rs64" if value else None

    def pipe_running(self, me: int, pipe: int) -> bool:
        """Whether the MEC runs `pipe` of `me`: firmware in, not halted, the pipe out of reset."""
        firmware = self.firmware
        if me != COMPUTE_ME or firmware is None:
            return False
        regfile = self.gpu.regfile
        if firmware == "rs64":
            control = regfile.peek(self._rs64_cntl)
            return (not RS64_HALT.decode(control) and bool(RS64_PIPE_ACTIVE[pipe].decode(control))
                    and not RS64_PIPE_RESET[pipe].decode(control))
        control = regfile.peek(self._f32_cntl)
        return not F32_ME1_HALT.decode(control) and not F32_PIPE_RESET[pipe].decode(control)

    def _write_mec_cntl(self, rs64: bool) -> Callable[[int], None]:
        def write(value: int) -> None:
            self.gpu.regfile.poke(self._rs64_cntl if rs64 else self._f32_cntl, value)
            self.kick()
        return write

    # -- HQD banks ---------------------------------------------------------------------------------
    def selected(self) -> tuple[int, int, int]:
        """(me, pipe, queue) that GRBM_GFX_CNTL selects for the HQD registers."""
        select = self.gpu.regfile.peek(self._select)
        return SELECT_ME.decode(select), SELECT_PIPE.decode(select), SELECT_QUEUE.decode(select)

    def queue(self, me: int, pipe: int, queue: int) -> HardwareQueue:
        key = (me, pipe, queue)
        if key not in self.queues:
            self.queues[key] = HardwareQueue(me, pipe, queue)
        return self.queues[key]

    def _bank_read(self, offset: int) -> int:
        hqd = self.queue(*self.selected())
        if offset == _OFFSET["regCP_HQD_ACTIVE"]:
            return (hqd.registers.get(offset, 0) & ~ACTIVE.mask) | (ACTIVE.mask if hqd.active else 0)
        if offset == _OFFSET["regCP_HQD_PQ_RPTR"]:
            return hqd.rptr
        if offset == _OFFSET["regCP_HQD_PQ_WPTR_LO"]:
            return hqd.wptr & WORD_MASK
        if offset == _OFFSET["regCP_HQD_PQ_WPTR_HI"]:
            return hqd.wptr >> 32
        return hqd.registers.get(offset, 0)

    def _bank_write(self, offset: int, value: int) -> None:
        hqd = self.queue(*self.selected())
        hqd.registers[offset] = value
        if offset == _OFFSET["regCP_HQD_ACTIVE"]:
            if ACTIVE.decode(value):
                self._activate(hqd)
            else:
                self._deactivate(hqd)  # gfx_v11_0_kiq_init_register (SR-IOV) writes 0 to idle it
        elif offset == _OFFSET["regCP_HQD_DEQUEUE_REQUEST"]:
            if DEQUEUE_REQ.decode(value) and hqd.active:
                hqd.dequeue_pending = True
                self._run(hqd)
        elif offset == _OFFSET["regCP_HQD_PQ_RPTR"]:
            hqd.rptr = value
        elif offset == _OFFSET["regCP_HQD_PQ_WPTR_LO"]:
            hqd.wptr = (hqd.wptr & ~WORD_MASK) | value
        elif offset == _OFFSET["regCP_HQD_PQ_WPTR_HI"]:
            hqd.wptr = (hqd.wptr & WORD_MASK) | (value << 32)

    # -- activation and dequeue --------------------------------------------------------------------
    def _activate(self, hqd: HardwareQueue) -> None:
        problem = self._setup_problem(hqd)
        if problem is not None:
            hqd.active = False
            hqd.error = f"{hqd.name} not activated: {problem}"
            self.error = hqd.error
            log.info("%s", hqd.error)
            return
        hqd.active = True
        hqd.error = None
        hqd.hung = None
        hqd.ib = None
        hqd.dequeue_pending = False
        hqd.put("regCP_HQD_ERROR", 0)
        self._run(hqd)

    def _setup_problem(self, hqd: HardwareQueue) -> str | None:
        """Why the HQD setup cannot run (None when it can)."""
        if hqd.me != COMPUTE_ME or hqd.pipe >= PIPES:
            return f"ME {hqd.me} pipe {hqd.pipe} has no compute queues (gfx_v11_0.c: num_mec = 1)"
        if not hqd.ring_address:
            return "CP_HQD_PQ_BASE is not set"
        queue_size = QUEUE_SIZE.decode(hqd.get("regCP_HQD_PQ_CONTROL"))
        if queue_size > MAX_QUEUE_SIZE:
            return (f"CP_HQD_PQ_CONTROL.QUEUE_SIZE {queue_size}: 2 << {queue_size} dwords is more than "
                    f"the 32-bit CP_HQD_PQ_RPTR covers")
        control = hqd.get("regCP_HQD_PQ_CONTROL")
        if not NO_UPDATE_RPTR.decode(control) and not self._rptr_report_address(hqd):
            return "CP_HQD_PQ_RPTR_REPORT_ADDR is not set and NO_UPDATE_RPTR is clear"
        eop = ((hqd.get("regCP_HQD_EOP_BASE_ADDR") | hqd.get("regCP_HQD_EOP_BASE_ADDR_HI") << 32)
               << EOP_BASE_SHIFT)
        if not eop:
            return "CP_HQD_EOP_BASE_ADDR is not set (the EOP buffer holds the queue's end-of-pipe events)"
        eop_size = EOP_SIZE.decode(hqd.get("regCP_HQD_EOP_CONTROL"))
        if eop_size > MAX_EOP_SIZE:
            return f"CP_HQD_EOP_CONTROL.EOP_SIZE {eop_size}: more than CP_HQD_EOP_WPTR covers"
        doorbell = hqd.doorbell
        if doorbell is None:
            # gfx_v11_0_ring_set_wptr_compute: "only DOORBELL method supported on gfx11 now"
            return "CP_HQD_PQ_DOORBELL_CONTROL.DOORBELL_EN is clear (WPTR polling is not modelled)"
        lower, upper = self.doorbell_range()
        if not lower <= doorbell <= upper:
            return (f"doorbell dword {doorbell:#x} is outside the MEC range [{lower:#x}, {upper:#x}] "
                    f"(CP_MEC_DOORBELL_RANGE_LOWER/UPPER)")
        return None

    def _deactivate(self, hqd: HardwareQueue) -> None:
        hqd.active = False
        hqd.ib = None
        hqd.dequeue_pending = False

    def _finish_dequeue(self, hqd: HardwareQueue) -> None:
        """The queue stops at a packet boundary with its pointers in the bank; ACTIVE clears."""
        hqd.ib = None  # an interrupted IB restarts from its INDIRECT_BUFFER packet
        hqd.hung = None  # the dequeue ends the waves of a dispatch that never finished
        hqd.active = False
        hqd.dequeue_pending = False
        hqd.put("regCP_HQD_ACTIVE", 0)
        hqd.put("regCP_HQD_PQ_RPTR", hqd.rptr)
        hqd.put("regCP_HQD_PQ_WPTR_LO", hqd.wptr & WORD_MASK)
        hqd.put("regCP_HQD_PQ_WPTR_HI", hqd.wptr >> 32)

    # -- doorbells ---------------------------------------------------------------------------------
    def doorbell_range(self) -> tuple[int, int]:
        """[lower, upper] dword indices of the MEC doorbell range (gfx_v11_0_cp_set_doorbell_range
        writes byte offsets: the fields hold dword indices)."""
        regfile = self.gpu.regfile
        return (RANGE_LOWER.decode(regfile.peek(self._range_lower)),
                RANGE_UPPER.decode(regfile.peek(self._range_upper)))

    def doorbell(self, offset: int, data: bytes) -> None:
        """A write of BAR2 bytes [offset, offset + len(data)): a compute queue's doorbell."""
        if offset % DWORD or not self.gpu.doorbell_aperture_enabled:
            return
        regfile = self.gpu.regfile
        if not GC_DOORBELL_PORT_ENABLE.decode(regfile.peek(self._gc_port)):
            return  # NBIO forwards nothing to GC until nbio_v4_3_gc_doorbell_init opened the port
        if not PQ_STATUS_DOORBELL_ENABLE.decode(regfile.peek(self._pq_status)):
            return  # gfx_v11_0_kiq_init_register sets CP_PQ_STATUS.DOORBELL_ENABLE
        index = offset // DWORD
        lower, upper = self.doorbell_range()
        value = int.from_bytes(data, "little")
        for hqd in list(self.queues.values()):
            doorbell = hqd.doorbell
            if not hqd.active or doorbell is None:
                continue
            if doorbell == index and lower <= index <= upper:
                if len(data) < 2 * DWORD:
                    value |= hqd.wptr & ~WORD_MASK  # a 32-bit write moves the low half
                hqd.wptr = value
                self._run_after_doorbell(hqd)
            elif doorbell + 1 == index and len(data) == DWORD:
                hqd.wptr = (hqd.wptr & WORD_MASK) | (value << 32)  # the high half of a split write

    def _run_after_doorbell(self, hqd: HardwareQueue) -> None:
        machine = self.gpu.machine
        if self.response_delay_s > 0 and machine is not None:
            machine.schedule(self.response_delay_s, lambda: self._run(hqd))
            return
        self._run(hqd)

    # -- the engine --------------------------------------------------------------------------------
    def kick(self) -> None:
        """Run every active queue as far as it can go (after un-halting, memory changes, unstall)."""
        for hqd in list(self.queues.values()):
            if hqd.active:
                self._run(hqd)

    def _run(self, hqd: HardwareQueue) -> None:
        if self.stalled or not self.gpu.responds():
            return
        if hqd.dequeue_pending:
            self._finish_dequeue(hqd)
            return
        if not hqd.active or hqd.error is not None or hqd.hung is not None:
            return
        if not self.pipe_running(hqd.me, hqd.pipe):
            return
        start = hqd.rptr
        try:
            while True:
                if hqd.ib is not None:
                    self._run_ib(hqd)
                    continue
                if hqd.rptr == hqd.wptr % hqd.ring_dwords:
                    break
                try:
                    length = self._execute(hqd, self._ring_fetcher(hqd), hqd.vmid, in_ib=False)
                except _IBStarted:
                    continue
                hqd.rptr = (hqd.rptr + length) % hqd.ring_dwords
                hqd.packets += 1
        except _Pending as pending:
            if pending.recheck:
                self._schedule_recheck()
        except PacketError as exc:
            self._fail(hqd, exc)
        except _Hung:
            self.error = hqd.hung
            log.info("%s", hqd.hung)
        if hqd.rptr != start:
            self._report_rptr(hqd)

    def _schedule_recheck(self) -> None:
        machine = self.gpu.machine
        if machine is None or self._recheck_scheduled:
            return
        self._recheck_scheduled = True

        def recheck() -> None:
            self._recheck_scheduled = False
            self.kick()

        machine.schedule(WAIT_RECHECK_S, recheck)

    def _fail(self, hqd: HardwareQueue, exc: PacketError) -> None:
        hqd.error = f"{hqd.name} stopped at rptr {hqd.rptr:#x}: {exc}"
        self.error = hqd.error
        log.info("%s", hqd.error)
        if exc.error_bit is not None:
            bit = _field("regCP_HQD_ERROR", exc.error_bit)
            hqd.put("regCP_HQD_ERROR", hqd.get("regCP_HQD_ERROR") | bit.mask)
        if exc.source_id == srcid.GFX_11_0_0__SRCID__CP_BAD_OPCODE_ERROR:
            self._int_status[hqd.pipe] |= INT_OPCODE_ERROR_STATUS.mask
            if self._interrupt_enabled(hqd, INT_OPCODE_ERROR_ENABLE):
                self._post(hqd, exc.source_id)

    def _interrupt_enabled(self, hqd: HardwareQueue, enable) -> bool:
        return bool(enable.decode(self.gpu.regfile.peek(self._int_cntl[hqd.pipe])))

    def _post(self, hqd: HardwareQueue, source_id: int, context: int = 0) -> None:
        ih = getattr(self.gpu, "ih", None)
        if ih is not None:
            ih.post(clientid.SOC21_IH_CLIENTID_GRBM_CP, source_id, src_data=(context, 0, 0, 0),
                    ring_id=hqd.ring_id, vmid=hqd.vmid)

    def _rptr_report_address(self, hqd: HardwareQueue) -> int:
        low = RPTR_REPORT.decode(hqd.get("regCP_HQD_PQ_RPTR_REPORT_ADDR")) << RPTR_REPORT.shift
        return low | RPTR_REPORT_HI.decode(hqd.get("regCP_HQD_PQ_RPTR_REPORT_ADDR_HI")) << 32

    def _report_rptr(self, hqd: HardwareQueue) -> None:
        if NO_UPDATE_RPTR.decode(hqd.get("regCP_HQD_PQ_CONTROL")):
            return
        try:
            self._write(hqd.vmid, self._rptr_report_address(hqd), hqd.rptr.to_bytes(DWORD, "little"),
                        ERROR_RPTR_REPORT)
        except PacketError as exc:
            self._fail(hqd, exc)

    # -- memory ------------------------------------------------------------------------------------
    def _read(self, vmid: int, address: int, n: int, error_bit: str, client: int = CLIENT_CPC) -> bytes:
        try:
            return self.gpu.gmc.read(GFX_HUB, vmid, address, n, client)
        except (GPUVMFault, GPUBusError) as exc:
            raise PacketError(str(exc), source_id=None, error_bit=error_bit) from None

    def _write(self, vmid: int, address: int, data: bytes, error_bit: str) -> None:
        try:
            self.gpu.gmc.write(GFX_HUB, vmid, address, data, CLIENT_CPC)
        except (GPUVMFault, GPUBusError) as exc:
            raise PacketError(str(exc), source_id=None, error_bit=error_bit) from None

    def _ring_fetcher(self, hqd: HardwareQueue) -> Callable[[int], list[int]]:
        ring_dwords = hqd.ring_dwords
        base = hqd.ring_address
        available = (hqd.wptr - hqd.rptr) % ring_dwords

        def fetch(count: int) -> list[int]:
            if count > available:
                raise _Pending()  # the rest of the packet is not written yet
            words: list[int] = []
            position = hqd.rptr
            while len(words) < count:
                chunk = min(count - len(words), ring_dwords - position)
                data = self._read(hqd.vmid, base + position * DWORD, chunk * DWORD, ERROR_FETCH, CLIENT_CPF)
                words += memoryview(data).cast("I").tolist()
                position = (position + chunk) % ring_dwords
            return words

        return fetch

    def _run_ib(self, hqd: HardwareQueue) -> None:
        ib = hqd.ib
        assert ib is not None

        def fetch(count: int) -> list[int]:
            if ib.position + count > ib.length:
                raise PacketError(f"packet at IB dword {ib.position} needs {count} dwords; the IB "
                                  f"has {ib.length}")
            address = ib.address + ib.position * DWORD
            data = self._read(ib.vmid, address, count * DWORD, ERROR_IB, CLIENT_CPF)
            return memoryview(data).cast("I").tolist()

        while ib.position < ib.length:
            ib.position += self._execute(hqd, fetch, ib.vmid, in_ib=True)
            hqd.packets += 1
        hqd.ib = None
        hqd.rptr = (hqd.rptr + HEADER_DWORDS + INDIRECT_BUFFER_BODY) % hqd.ring_dwords

    # -- packets -----------------------------------------------------------------------------------
    def _execute(self, hqd: HardwareQueue, fetch, vmid: int, in_ib: bool) -> int:
        """Execute the packet `fetch` starts at; returns its length in dwords."""
        header = fetch(HEADER_DWORDS)[0]
        kind = nvd.CP_PACKET_GET_TYPE(header)
        if kind != nvd.PACKET_TYPE3:
            # gfx_v11_0_compute_ring_init: "type-2 packets are deprecated on MEC, use type-3 instead"
            raise PacketError(f"type-{kind} packet header {header:#010x} (the MEC takes type 3 only)")
        opcode = nvd.CP_PACKET3_GET_OPCODE(header)
        count = nvd.CP_PACKET_GET_COUNT(header)
        if opcode == nvd.PACKET3_NOP:
            if count == NOP_ONE_DWORD_COUNT:
                return HEADER_DWORDS
            fetch(HEADER_DWORDS + count + 1)
            return HEADER_DWORDS + count + 1
        handler = self._handlers.get(opcode)
        if handler is None:
            raise PacketError(f"unknown or unsupported opcode {opcode:#04x} (header {header:#010x})")
        body = fetch(HEADER_DWORDS + count + 1)[HEADER_DWORDS:]
        return HEADER_DWORDS + handler(hqd, body, vmid, in_ib, header)

    def _packet_handlers(self) -> dict[int, Callable]:
        return {
            nvd.PACKET3_SET_SH_REG: self._set_sh_reg,
            nvd.PACKET3_SET_UCONFIG_REG: self._set_uconfig_reg,
            nvd.PACKET3_WRITE_DATA: self._write_data,
            nvd.PACKET3_ACQUIRE_MEM: self._acquire_mem,
            nvd.PACKET3_RELEASE_MEM: self._release_mem,
            nvd.PACKET3_WAIT_REG_MEM: self._wait_reg_mem,
            nvd.PACKET3_INDIRECT_BUFFER: self._indirect_buffer,
            nvd.PACKET3_EVENT_WRITE: self._event_write,
            nvd.PACKET3_COPY_DATA: self._copy_data,
            nvd.PACKET3_DISPATCH_DIRECT: self._dispatch_direct,
        }

    @staticmethod
    def _expect(name: str, body: list[int], lengths: tuple[int, ...]) -> None:
        if len(body) not in lengths:
            raise PacketError(f"{name}: count {len(body) - 1} (a body of {len(body)} dwords; "
                              f"{name} has {' or '.join(str(n) for n in lengths)})")

    def _set_sh_reg(self, hqd, body, vmid, in_ib, header) -> int:
        return self._set_window("SET_SH_REG", nvd.PACKET3_SET_SH_REG_START, nvd.PACKET3_SET_SH_REG_END, body)

    def _set_uconfig_reg(self, hqd, body, vmid, in_ib, header) -> int:
        # gfx_v11_0_ring_test_ring: SET_UCONFIG_REG of SCRATCH_REG0 on the compute rings
        return self._set_window("SET_UCONFIG_REG", nvd.PACKET3_SET_UCONFIG_REG_START,
                                nvd.PACKET3_SET_UCONFIG_REG_END, body)

    def _set_window(self, name: str, start: int, end: int, body: list[int]) -> int:
        """SET_*_REG: consecutive registers from `start` + the offset in the first body dword."""
        if len(body) < 2:
            raise PacketError(f"{name}: count 0 writes no register")
        first = start + body[0]
        if body[0] >> 16 or first + len(body) - 1 > end:
            raise PacketError(f"{name}: registers {first:#x}+{len(body) - 1} are outside its window "
                              f"[{start:#x}, {end:#x})")
        for index, value in enumerate(body[1:]):
            self._register_write(first + index, value)
        return len(body)

    def _register_write(self, dword: int, value: int) -> None:
        """The CP writes a register: owned ones through their hooks, the others stored (not a
        driver access for strict mode to list)."""
        regfile = self.gpu.regfile
        address = dword * DWORD
        if regfile.owned(address):
            regfile.write32(address, value)
        else:
            regfile.poke(address, value)

    def _write_data(self, hqd, body, vmid, in_ib, header) -> int:
        # gfx_v11_0_ring_test_ib (memory) and gfx_v11_0_ring_emit_wreg (register): control, address
        # lo/hi, then the data dwords
        if len(body) < WRITE_DATA_HEADER + 1:
            raise PacketError(f"WRITE_DATA: count {len(body) - 1} carries no data")
        control = body[0]
        destination = (control >> 8) & 0xF  # nvd.h WRITE_DATA_DST_SEL(x) ((x) << 8)
        one_address = bool(control & nvd.WR_ONE_ADDR)
        data = body[WRITE_DATA_HEADER:]
        if destination == COPY_REGISTER:
            for index, value in enumerate(data):
                self._register_write(body[1] + (0 if one_address else index), value)
            return len(body)
        if destination not in (COPY_TC_L2, COPY_MEMORY):
            raise PacketError(f"WRITE_DATA: DST_SEL {destination} is not modelled")
        address = body[1] | body[2] << 32
        if address % DWORD:
            raise PacketError(f"WRITE_DATA: address {address:#x} is not dword aligned")
        if one_address:
            data = data[-1:]  # every dword lands on the same address: the last one stays
        payload = b"".join(value.to_bytes(DWORD, "little") for value in data)
        self._write(vmid, address, payload, ERROR_DATA_DESTINATION)
        return len(body)

    def _acquire_mem(self, hqd, body, vmid, in_ib, header) -> int:
        self._expect("ACQUIRE_MEM", body, (ACQUIRE_MEM_BODY,))
        # nvd.h PACKET3_ACQUIRE_MEM: COHER_BASE_HI [23:0], GCR_CNTL [18:0]. COHER_SIZE_HI is listed
        # as [7:0] there, yet gfx_v11_0_emit_mem_sync writes 0xffffff into it: not checked
        limits = (("COHER_BASE_HI", body[4], 24), ("GCR_CNTL", body[6], 19))
        for name, value, bits in limits:
            if value >> bits:
                raise PacketError(f"ACQUIRE_MEM: {name} {value:#x} has bits above bit {bits - 1}")
        self.acquires += 1  # no caches in this model: the acquire completes at once
        return len(body)

    def _release_mem(self, hqd, body, vmid, in_ib, header) -> int:
        self._expect("RELEASE_MEM", body, (RELEASE_MEM_BODY,))
        event_index = (body[0] >> 8) & 0xF  # nvd.h PACKET3_RELEASE_MEM_EVENT_INDEX(x) ((x) << 8)
        if event_index not in RELEASE_MEM_EVENT_INDICES:
            raise PacketError(f"RELEASE_MEM: event index {event_index} is neither end of pipe (5) "
                              f"nor shader done (6)")
        destination = (body[1] >> 16) & 0x3  # nvd.h PACKET3_RELEASE_MEM_DST_SEL(x) ((x) << 16)
        int_sel = (body[1] >> 24) & 0x7  # nvd.h PACKET3_RELEASE_MEM_INT_SEL(x) ((x) << 24)
        data_sel = (body[1] >> 29) & 0x7  # nvd.h PACKET3_RELEASE_MEM_DATA_SEL(x) ((x) << 29)
        address = body[2] | body[3] << 32
        if destination not in RELEASE_MEM_MEMORY_DESTINATIONS:
            raise PacketError(f"RELEASE_MEM: DST_SEL {destination} (queue write pointer destinations "
                              f"are not modelled)")
        if int_sel not in (INT_SEL_NONE, INT_SEL_INTERRUPT_ONLY, INT_SEL_AFTER_WRITE_CONFIRM):
            raise PacketError(f"RELEASE_MEM: INT_SEL {int_sel} is not modelled")
        if int_sel == INT_SEL_INTERRUPT_ONLY and data_sel != DATA_SEL_NONE:
            raise PacketError("RELEASE_MEM: INT_SEL 1 (interrupt only) with DATA_SEL "
                              f"{data_sel} (nvd.h: DATA_SEL = 0)")
        data = self._release_data(data_sel, body)
        if data is not None:
            # gfx_v11_0_ring_emit_fence: "Qword aligned if 64bit write, Dword aligned if 32bit"
            if address % len(data):
                raise PacketError(f"RELEASE_MEM: address {address:#x} is not {len(data)}-byte aligned")
            self._write(vmid, address, data, ERROR_EOP)
        if int_sel != INT_SEL_NONE:
            self._int_status[hqd.pipe] |= INT_TIME_STAMP_STATUS.mask
            if self._interrupt_enabled(hqd, INT_TIME_STAMP_ENABLE):
                self._post(hqd, srcid.GFX_11_0_0__SRCID__CP_EOP_INTERRUPT, context=body[6])
        return len(body)

    def _release_data(self, data_sel: int, body: list[int]) -> bytes | None:
        if data_sel == DATA_SEL_NONE:
            return None
        if data_sel == DATA_SEL_32:
            return body[4].to_bytes(DWORD, "little")
        if data_sel == DATA_SEL_64:
            return (body[4] | body[5] << 32).to_bytes(2 * DWORD, "little")
        if data_sel == DATA_SEL_GPU_CLOCK:
            return self.gpu_clock().to_bytes(2 * DWORD, "little")
        if data_sel == DATA_SEL_SYSTEM_CLOCK:
            return (time.monotonic_ns() * CLOCK_HZ // 1_000_000_000).to_bytes(2 * DWORD, "little")
        raise PacketError(f"RELEASE_MEM: DATA_SEL {data_sel} is not modelled")

    def gpu_clock(self) -> int:
        """The GPU clock counter: the SDMA model's when the GPU has one (one counter per ASIC)."""
        sdma = getattr(self.gpu, "sdma", None)
        if sdma is not None:
            return sdma.gpu_clock()
        return time.monotonic_ns() * CLOCK_HZ // 1_000_000_000

    def _wait_reg_mem(self, hqd, body, vmid, in_ib, header) -> int:
        self._expect("WAIT_REG_MEM", body, (WAIT_REG_MEM_BODY,))
        control = body[0]
        function = control & 0x7  # nvd.h WAIT_REG_MEM_FUNCTION(x) ((x) << 0)
        space = (control >> 4) & 0x3  # nvd.h WAIT_REG_MEM_MEM_SPACE(x) ((x) << 4)
        operation = (control >> 6) & 0x3  # nvd.h WAIT_REG_MEM_OPERATION(x) ((x) << 6)
        if function not in WAIT_FUNCTIONS:
            raise PacketError(f"WAIT_REG_MEM: compare function {function}")
        if space not in (WAIT_SPACE_REGISTER, WAIT_SPACE_MEMORY):
            raise PacketError(f"WAIT_REG_MEM: MEM_SPACE {space}")
        if operation not in (WAIT_OPERATION_WAIT, WAIT_OPERATION_WRITE_WAIT):
            raise PacketError(f"WAIT_REG_MEM: OPERATION {operation}")
        reference = body[3]
        mask = body[4]
        regfile = self.gpu.regfile
        if operation == WAIT_OPERATION_WRITE_WAIT:
            if space != WAIT_SPACE_REGISTER:
                raise PacketError("WAIT_REG_MEM: the write-wait-write form works on registers only")
            # gfx_v11_0_ring_emit_hdp_flush: write the reference to the register in ADDR0 (the
            # request), then wait on the register in ADDR1 (the done flag)
            self._register_write(body[1], reference)
            value = regfile.read32(body[2] * DWORD)
        elif space == WAIT_SPACE_MEMORY:
            address = body[1] | body[2] << 32
            if address % DWORD:
                raise PacketError(f"WAIT_REG_MEM: address {address:#x} is not dword aligned "
                                  f"(gfx_v11_0_wait_reg_mem: WARN_ON(addr0 & 0x3))")
            value = int.from_bytes(self._read(vmid, address, DWORD, ERROR_WAIT), "little")
        else:
            value = regfile.read32(body[1] * DWORD)
        if WAIT_FUNCTIONS[function](value & mask, reference):
            return len(body)
        raise _Pending(recheck=True)  # the CP polls again after the poll interval

    def _indirect_buffer(self, hqd, body, vmid, in_ib, header) -> int:
        self._expect("INDIRECT_BUFFER", body, (INDIRECT_BUFFER_BODY,))
        if in_ib:
            raise PacketError("INDIRECT_BUFFER inside an IB is not modelled")
        address = body[0] | body[1] << 32
        control = body[2]
        if address % DWORD:
            raise PacketError(f"INDIRECT_BUFFER: address {address:#x} is not dword aligned "
                              f"(gfx_v11_0_ring_emit_ib_compute: WARN_ON(ib->gpu_addr & 0x3))")
        if not control & nvd.INDIRECT_BUFFER_VALID:
            raise PacketError(f"INDIRECT_BUFFER: control {control:#010x} lacks INDIRECT_BUFFER_VALID")
        length = _field("regCP_HQD_IB_CONTROL", "IB_SIZE").decode(control)  # IB_SIZE: bits 19:0
        ib_vmid = (control >> 24) & 0xF  # gfx_v11_0_ring_emit_ib_compute: vmid << 24
        if not length:
            raise PacketError("INDIRECT_BUFFER: IB_SIZE 0")
        hqd.put("regCP_HQD_IB_BASE_ADDR", address)
        hqd.put("regCP_HQD_IB_BASE_ADDR_HI", address >> 32)
        hqd.ib = _IndirectBuffer(address, length, ib_vmid)
        raise _IBStarted()

    def _event_write(self, hqd, body, vmid, in_ib, header) -> int:
        event_type = body[0] & 0x3F  # nvd.h EVENT_TYPE(x) ((x) << 0)
        event_index = (body[0] >> 8) & 0xF  # nvd.h EVENT_INDEX(x) ((x) << 8)
        if event_index in EVENT_WRITE_PLAIN_INDICES:
            self._expect("EVENT_WRITE", body, (1,))
        elif event_index in EVENT_WRITE_ADDRESS_INDICES:
            self._expect("EVENT_WRITE", body, (EVENT_WRITE_ADDRESS_BODY,))
        else:
            raise PacketError(f"EVENT_WRITE: event index {event_index}")
        hqd.events.append((event_type, event_index))
        return len(body)

    def _copy_data(self, hqd, body, vmid, in_ib, header) -> int:
        self._expect("COPY_DATA", body, (COPY_DATA_BODY,))
        control = body[0]
        source = control & 0xF  # SRC_SEL bits 3:0 (gfx_v11_0_ring_emit_rreg: "0 src: register")
        destination = (control >> 8) & 0xF  # DST_SEL bits 11:8 ("(5 << 8) dst: memory")
        size = 2 * DWORD if control & COPY_COUNT_64 else DWORD
        if source not in COPY_SOURCES or destination not in COPY_DESTINATIONS:
            raise PacketError(f"COPY_DATA: SRC_SEL {source} / DST_SEL {destination} are not modelled")
        source_address = body[1] | body[2] << 32
        destination_address = body[3] | body[4] << 32
        regfile = self.gpu.regfile
        if source == COPY_REGISTER:
            data = b"".join(regfile.read32((body[1] + i) * DWORD).to_bytes(DWORD, "little")
                            for i in range(size // DWORD))
        else:
            if source_address % size:
                raise PacketError(f"COPY_DATA: source {source_address:#x} is not {size}-byte aligned")
            data = self._read(vmid, source_address, size, ERROR_DATA_SOURCE)
        if destination == COPY_REGISTER:
            for i in range(size // DWORD):
                self._register_write(body[3] + i, int.from_bytes(data[i * DWORD:(i + 1) * DWORD], "little"))
        else:
            if destination_address % size:
                raise PacketError(f"COPY_DATA: destination {destination_address:#x} is not "
                                  f"{size}-byte aligned")
            self._write(vmid, destination_address, data, ERROR_DATA_DESTINATION)
        return len(body)

    def _dispatch_direct(self, hqd, body, vmid, in_ib, header) -> int:
        self._expect("DISPATCH_DIRECT", body, (DISPATCH_DIRECT_BODY,))
        dimensions = (body[0], body[1], body[2])
        initiator = body[3]
        regfile = self.gpu.regfile

        def get(name: str) -> int:
            return regfile.get(IP, name)

        program = ((get("regCOMPUTE_PGM_LO") << PGM_ADDRESS_SHIFT)
                   | (get("regCOMPUTE_PGM_HI") << PGM_HI_SHIFT))
        rsrc1 = get("regCOMPUTE_PGM_RSRC1")
        rsrc2 = get("regCOMPUTE_PGM_RSRC2")
        threads = tuple(NUM_THREAD_FULL.decode(get(f"regCOMPUTE_NUM_THREAD_{axis}")) for axis in "XYZ")
        problems = []
        if not SHADER_EN.decode(initiator):
            problems.append("COMPUTE_DISPATCH_INITIATOR.COMPUTE_SHADER_EN is clear")
        if 0 in dimensions:
            problems.append(f"dimensions {dimensions} include 0")
        if not program:
            problems.append("COMPUTE_PGM_LO/HI hold no program address")
        if CS_W32_EN.decode(initiator):
            vgprs = (RSRC1_VGPRS.decode(rsrc1) + 1) * VGPR_GRANULE_WAVE32
            if vgprs > MAX_VGPRS:
                problems.append(f"COMPUTE_PGM_RSRC1.VGPRS allocates {vgprs} VGPRs per wave32 "
                                f"(at most {MAX_VGPRS})")
        user_sgprs = RSRC2_USER_SGPR.decode(rsrc2)
        if user_sgprs > len(USER_DATA):
            problems.append(f"COMPUTE_PGM_RSRC2.USER_SGPR {user_sgprs} is more than the "
                            f"{len(USER_DATA)} COMPUTE_USER_DATA registers")
        lds = RSRC2_LDS_SIZE.decode(rsrc2) * LDS_GRANULE_BYTES
        if lds > MAX_LDS_BYTES:
            problems.append(f"COMPUTE_PGM_RSRC2.LDS_SIZE asks {lds} bytes of LDS (at most {MAX_LDS_BYTES})")
        if 0 in threads:
            problems.append(f"COMPUTE_NUM_THREAD_X/Y/Z {threads} include 0")
        elif threads[0] * threads[1] * threads[2] > MAX_WORKGROUP_THREADS:
            problems.append(f"a work-group of {threads} is more than {MAX_WORKGROUP_THREADS} work-items")
        scratch_base = (get("regCOMPUTE_DISPATCH_SCRATCH_BASE_LO")
                        | get("regCOMPUTE_DISPATCH_SCRATCH_BASE_HI") << 32)
        tmpring = get("regCOMPUTE_TMPRING_SIZE")
        if RSRC2_SCRATCH_EN.decode(rsrc2) and 0 not in threads:
            # the SPI launches a wave only into a free scratch slot of COMPUTE_TMPRING_SIZE; the waves
            # of one work-group must all fit (they may wait for each other at s_barrier)
            waves = -(-(threads[0] * threads[1] * threads[2]) // interp.WAVE_LANES)
            slots = TMPRING_WAVES.decode(tmpring)
            if not scratch_base or not TMPRING_WAVESIZE.decode(tmpring):
                problems.append("COMPUTE_PGM_RSRC2.SCRATCH_EN is set but COMPUTE_DISPATCH_SCRATCH_BASE "
                                "or COMPUTE_TMPRING_SIZE.WAVESIZE is 0")
            elif slots < waves:
                problems.append(f"COMPUTE_TMPRING_SIZE.WAVES {slots} scratch slots cannot hold the "
                                f"{waves} waves of one work-group")
        if problems:
            raise PacketError("DISPATCH_DIRECT: " + "; ".join(problems))
        # the shader's first instructions must be reachable (SQC instruction fetch)
        self._read(vmid, program, DWORD, ERROR_DATA_SOURCE)
        dispatch = Dispatch(
            me=hqd.me, pipe=hqd.pipe, queue=hqd.queue, vmid=vmid, dimensions=dimensions,
            initiator=initiator, program_address=program, rsrc1=rsrc1, rsrc2=rsrc2,
            rsrc3=get("regCOMPUTE_PGM_RSRC3"), threads=threads,
            user_data=tuple(get(name) for name in USER_DATA[:user_sgprs]),
            scratch_base=scratch_base, tmpring_size=tmpring)
        self.dispatches.append(dispatch)
        self._run_grid(hqd, dispatch)
        return len(body)

    def _run_grid(self, hqd: HardwareQueue, dispatch: Dispatch) -> None:
        """The shader engine runs the whole grid before the CP moves on (this model's order)."""
        try:
            dispatch.stats = interp.run_dispatch(self.gpu.gmc, dispatch, self.instruction_budget,
                                                 GFX_HUB)
        except interp.ShaderHang as exc:
            hqd.hung = f"{hqd.name} hung in DISPATCH_DIRECT at rptr {hqd.rptr:#x}: {exc}"
            raise _Hung() from None
        except interp.ShaderError as exc:
            raise PacketError(f"DISPATCH_DIRECT: {exc}", source_id=None) from None
