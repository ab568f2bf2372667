"""GC 11.0.0 (gfx11, Navi3x): one kernel compute queue on MEC1 pipe 0 queue 0, set up from an MQD
straight into the HQD registers (no MES, no KIQ), after amdgpu's gfx_v11_0.c.

What it owns:
- sw_init (no MMIO): in VRAM (device.memory) the MQD (struct v11_compute_mqd), the EOP buffer
  (GFX11_MEC_HPD_SIZE), the ring (`AMConfig.gc_ring_size` bytes) and one writeback page holding the
  rptr report, the wptr poll slot and the fence slot; the MQD is filled as gfx_v11_0_compute_mqd_init
  fills it (register images from gc_11_0_0_default.h with amdgpu's fields set);
- hw_init (gfx_v11_0_hw_init with firmware loaded by the PSP and RLC autoload; a failure after the
  MEC was un-halted dequeues and halts it again before it is raised):
  1. wait, bounded by `AMConfig.gc_autoload_timeout_s`, for CP_STAT == 0 and
     RLC_RLCS_BOOTLOAD_STATUS.BOOTLOAD_COMPLETE (gfx_v11_0_wait_for_rlc_autoload_complete);
  2. RS64 MEC program start from the MEC image's v2 header, pipes reset and released
     (the MEC part of gfx_v11_0_config_gfx_rs64);
  3. the GFX hub (GMC's `enable_hub(GFX_HUB)`, gfx_v11_0_gfxhub_enable);
  4. golden settings (golden_settings_gc_11_0) and the constants the compute path needs
     (gfx_v11_0_constants_init: GRBM_CNTL.READ_TIMEOUT, SH_MEM_CONFIG/SH_MEM_BASES per VMID);
  5. NBIO's GC doorbell routes (nbio_v4_3_gc_doorbell_init), MEC doorbell range
     (gfx_v11_0_cp_set_doorbell_range), MEC un-halt (gfx_v11_0_cp_compute_enable), the CP
     interrupts (EOP on the queue's pipe, privileged-register and bad-opcode faults on every ME1
     pipe) and the IH handler of the EOP interrupt;
  6. the queue mapped from the MQD into the HQD registers under GRBM_GFX_CNTL selection
     (gfx_v11_0_kiq_init_register), then the ring test (gfx_v11_0_ring_test_ring: SET_UCONFIG_REG
     of 0xDEADBEEF into SCRATCH_REG0 over 0xCAFEDEAD);
- the ring writer (drivers.am.ring, shared with SDMA): dwords go in at wptr (64-bit, in dwords) and
  the doorbell commits them
  (gfx_v11_0_ring_set_wptr_compute: the wptr poll slot, then a 64-bit doorbell write). It never
  overwrites entries the MEC has not consumed: room comes from the rptr the CP reports to memory;
  when there is none it waits, bounded by `AMConfig.gc_timeout_s` (DeviceTimeout names the queue,
  rptr, wptr and the HQD state);
- PM4 packet builders over the generated nvd definitions: RELEASE_MEM, WAIT_REG_MEM, ACQUIRE_MEM,
  INDIRECT_BUFFER, DISPATCH_DIRECT, SET_SH_REG, SET_UCONFIG_REG, EVENT_WRITE, NOP;
- `signal()` a RELEASE_MEM fence with the next 32-bit sequence number, `wait(seq)`, `fence_value()`;
  `signal(interrupt=True)` and `wait_interrupt(seq)` wake through the IH's EOP interrupt;
- warm_init: the queue a previous owner left active with this block's MQD is re-bound in place;
  otherwise hw_init runs again;
- hw_fini: the queue dequeued (CP_HQD_DEQUEUE_REQUEST, bounded wait for CP_HQD_ACTIVE to clear), the
  MEC halted (gfx_v11_0_cp_compute_enable(false)). The GFX hub is left to GMC's hw_fini, which
  disables every hub it enabled (amdgpu's gfx_v11_0_hw_fini calls gfxhub gart_disable itself).
Not done here: gfx rings (PFP/ME), KIQ/MES, compute VMIDs 8..15 and GDS setup
(gfx_v11_0_init_compute_vmid / init_gds_vmid), RLC resume beyond what autoload leaves running.
"""
from __future__ import annotations

import errno
import logging

from autogen.amd import amdgpu_ucode as ucode
from autogen.amd import irqsrcs_gfx_11_0_0 as gfx_sources
from autogen.amd import navi10_enum as enums
from autogen.amd import nvd
from autogen.amd import soc15_ih_clientid as ih_clients
from autogen.amd.v11_structs import v11_compute_mqd
from drivers.am import ring
from drivers.am.gmc import GFX_HUB
from drivers.am.ip import POLL_INTERVAL_S, IPBlock, poll
from hal.errors import DeviceTimeout, HalError, InvalidArgument

log = logging.getLogger(__name__)

DWORD = 4
WORD_MASK = 0xFFFFFFFF
GC_TIMEOUT_S = 2.0  # amdgpu_device.c: usec_timeout, AMDGPU_MAX_USEC_TIMEOUT (100000 us) x 20 polls
# gfx_v11_0_wait_for_rlc_autoload_complete: adev->usec_timeout polls 1 us apart (100 ms)
GC_AUTOLOAD_TIMEOUT_S = 0.1
RING_SIZE = 64 << 10  # this driver's choice (amdgpu_gfx.c compute rings: 1024 dwords x submissions)
WRITEBACK_BYTES = 4096  # one page: rptr report (4), wptr poll (8), fence (4)
RPTR_SLOT = 0
WPTR_SLOT = 8
FENCE_SLOT = 16
# gfx_v11_0_compute_ring_init: ring->me = mec + 1, the first queue of the first pipe
MEC_ME = 1
MEC_PIPE = 0
MEC_QUEUE = 0
MEC_PIPES = 4  # gfx_v11_0_config_gfx_rs64: "for (pipe_id = 0; pipe_id < 4; ...)" on ME1
VMID_COUNT = 16  # gfx_v11_0_constants_init: id_mgr[AMDGPU_GFXHUB(0)].num_ids, AMDGPU_NUM_VMID
GFX11_MEC_HPD_SIZE = 2048  # gfx_v11_0.c GFX11_MEC_HPD_SIZE: the EOP buffer of one queue
EOP_ALIGNMENT = 256  # gfx_v11_0_mec_init allocates the HPD buffer PAGE_SIZE aligned; EOP_BASE is >> 8
MQD_ALIGNMENT = 4096  # amdgpu_gfx_mqd_sw_init: AMDGPU_GPU_PAGE_SIZE
RING_BASE_SHIFT = 8  # gfx_v11_0_compute_mqd_init: cp_hqd_pq_base = hqd_base_gpu_addr >> 8
ADDRESS_HI_MASK = 0xFFFF  # compute_mqd_init: rptr report / wptr poll address HI keep 16 bits
ADDRESS_LO_MASK = 0xFFFFFFFC  # compute_mqd_init: the same addresses' LO are dword aligned
GPU_PAGE_SIZE = 4096  # amdgpu_gpu_page: AMDGPU_GPU_PAGE_SIZE, used for RPTR_BLOCK_SIZE
# gfx_v11_0_compute_mqd_init: the MQD header, and the fixed values it sets
MQD_HEADER = 0xC0310800
MQD_PIPELINESTAT_ENABLE = 0x00000001
MQD_STATIC_THREAD_MGMT_ALL = 0xFFFFFFFF
MQD_MISC_RESERVED = 0x00000007
MQD_STATIC_THREAD_SES = 4  # compute_static_thread_mgmt_se0..se3 are set, se4..se7 left 0
MQD_PRELOAD_SIZE = 0x55
MQD_MIN_IB_AVAIL_SIZE = 3
# gc_11_0_0_default.h: the reset values compute_mqd_init starts each HQD register image from
CP_HQD_EOP_CONTROL_DEFAULT = 0x00000006
CP_HQD_PQ_DOORBELL_CONTROL_DEFAULT = 0x00000000
CP_MQD_CONTROL_DEFAULT = 0x00000100
CP_HQD_PQ_CONTROL_DEFAULT = 0x00308509
CP_HQD_PQ_RPTR_DEFAULT = 0x00000000
CP_HQD_PERSISTENT_STATE_DEFAULT = 0x0BE05501
CP_HQD_IB_CONTROL_DEFAULT = 0x00300000
# soc21.c soc21_doorbell_index_init with amdgpu_doorbell.h: AMDGPU_NAVI10_DOORBELL_KIQ 0x000,
# _MEC_RING0 0x003, _USERQUEUE_END 0x08A (64-bit doorbells); gfx_v11_0_compute_ring_init shifts the
# ring's left by one for dwords, cp_set_doorbell_range turns the range into bytes ((x * 2) << 2)
DOORBELL_KIQ = 0x000
DOORBELL_MEC_RING0 = 0x003
DOORBELL_USERQUEUE_END = 0x08A
# nbio_v4_3.c nbio_v4_3_gc_doorbell_init: S2A_DOORBELL_ENTRY_0_CTRL = 0x30000007 and
# S2A_DOORBELL_ENTRY_3_CTRL = 0x3000000d, i.e. the port on, AWID 3 / 6, AWADDR[31:28] 3
GC_DOORBELL_PORT0_AWID = 3
GC_DOORBELL_PORT3_AWID = 6
GC_DOORBELL_AWADDR_31_28 = 3
# gfx_v11_0_constants_init: GRBM_CNTL.READ_TIMEOUT 0xff
GRBM_READ_TIMEOUT = 0xFF
# gfx_v11_0.c DEFAULT_SH_MEM_CONFIG: INITIAL_INST_PREFETCH 3
SH_MEM_INITIAL_INST_PREFETCH = 3
# gmc_v11_0.c gmc_v11_0_sw_init: private / shared apertures; SH_MEM_BASES takes bits 63:48
PRIVATE_APERTURE_START = 0x1000000000000000
SHARED_APERTURE_START = 0x2000000000000000
APERTURE_BASE_SHIFT = 48
# gfx_v11_0.c golden_settings_gc_11_0 (a table, not a header): TCP_CNTL, and-mask and or-value
GOLDEN_SETTINGS_GC_11_0 = (("regTCP_CNTL", 0x20000000, 0x20000000),)
# soc15.c soc15_program_register_sequence: an and-mask of all ones writes the value as is
GOLDEN_FULL_MASK = 0xFFFFFFFF
# gfx_v11_0_ring_test_ring: SCRATCH_REG0 starts as 0xCAFEDEAD and the CP writes 0xDEADBEEF
RING_TEST_SEED = 0xCAFEDEAD
RING_TEST_VALUE = 0xDEADBEEF
# gfx_v11_0_ring_emit_fence: RELEASE_MEM CACHE_POLICY(3), EVENT_INDEX(5); DATA_SEL 1 (32-bit
# low) or 2 (64-bit), INT_SEL 2 (interrupt once the write is confirmed) or 0
RELEASE_MEM_CACHE_POLICY = 3
RELEASE_MEM_EVENT_INDEX = 5
RELEASE_MEM_DATA_32 = 1
RELEASE_MEM_DATA_64 = 2
RELEASE_MEM_INT_CONFIRM = 2
# gfx_v11_0_wait_reg_mem / nvd.h: MEM_SPACE 0 register, 1 memory; FUNCTION 3 "equal";
# OPERATION 0 wait; ENGINE 0 ME
WAIT_REG_MEM_SPACE_REGISTER = 0
WAIT_REG_MEM_SPACE_MEMORY = 1
WAIT_REG_MEM_EQUAL = 3
WAIT_REG_MEM_OP_WAIT = 0
WAIT_REG_MEM_ENGINE_ME = 0
WAIT_REG_MEM_POLL_INTERVAL = 0x20  # gfx_v11_0_ring_emit_hdp_flush's poll interval
# gfx_v11_0_emit_mem_sync: ACQUIRE_MEM over everything (CP_COHER_SIZE all ones, SIZE_HI 24 bits)
ACQUIRE_MEM_SIZE_ALL = 0xFFFFFFFF
ACQUIRE_MEM_SIZE_HI_ALL = 0xFFFFFF
ACQUIRE_MEM_POLL_INTERVAL = 0x0000000A
# gfx_v11_0_ring_emit_ib_compute: the IB's VMID sits in bits 31:24 of the control dword
IB_VMID_SHIFT = 24
IB_SIZE_MASK = 0xFFFFF  # nvd.h / CP_HQD_IB_CONTROL.IB_SIZE: 20 bits of dwords
# gfx_v11_0.c gfx_v11_0_eop_irq / handle_priv_fault: the IV ring_id of a compute queue
RING_ID_QUEUE_SHIFT = 4
RING_ID_ME_SHIFT = 2
PACKET3_MAX_COUNT = 0x3FFF  # nvd.h PACKET3: the count field is 14 bits


class GCError(HalError):
    """The compute queue is in a state the CP reports as broken; names the queue and HQD state."""

    def __init__(self, message: str) -> None:
        super().__init__(message, errno=errno.EIO)


# -- PM4 packet builders (nvd.h) ----------------------------------------------------------------------
def _header(opcode: int, body_dwords: int, compute: bool = False) -> int:
    """PACKET3(op, n) with n = body dwords - 1 (PACKET3_COMPUTE sets the shader-type bit)."""
    if not 1 <= body_dwords <= PACKET3_MAX_COUNT + 1:
        raise InvalidArgument(f"PM4 packet {opcode:#x} with {body_dwords} body dwords")
    if compute:
        return nvd.PACKET3_COMPUTE(opcode, body_dwords - 1)
    return nvd.PACKET3(opcode, body_dwords - 1)


def nop_packet(dwords: int) -> list[int]:
    """gfx_v11_ring_insert_nop: a NOP covering `dwords` in all (header included)."""
    if dwords < 1:
        raise InvalidArgument(f"a NOP of {dwords} dwords")
    if dwords == 1:
        # nvd.h: a type-3 NOP with count 0x3FFF is one dword (amdgpu's ring nop)
        return [nvd.PACKET3(nvd.PACKET3_NOP, PACKET3_MAX_COUNT)]
    return [_header(nvd.PACKET3_NOP, dwords - 1)] + [0] * (dwords - 1)


def _register_packet(opcode: int, start: int, end: int, register: int, values: list[int],
                     compute: bool, what: str) -> list[int]:
    if not values:
        raise InvalidArgument(f"{what} with no values")
    if not (start <= register and register + len(values) <= end):
        raise InvalidArgument(f"{what}: register {register:#x} (+{len(values)}) is outside "
                              f"{start:#x}..{end:#x}")
    return [_header(opcode, len(values) + 1, compute), register - start,
            *(value & WORD_MASK for value in values)]


def set_sh_reg_packet(register: int, values: list[int], compute: bool = True) -> list[int]:
    """SET_SH_REG of consecutive registers from `register` (a dword offset in the register space)."""
    return _register_packet(nvd.PACKET3_SET_SH_REG, nvd.PACKET3_SET_SH_REG_START,
                            nvd.PACKET3_SET_SH_REG_END, register, values, compute, "SET_SH_REG")


def set_uconfig_reg_packet(register: int, values: list[int]) -> list[int]:
    """SET_UCONFIG_REG (gfx_v11_0_ring_test_ring writes SCRATCH_REG0 this way)."""
    return _register_packet(nvd.PACKET3_SET_UCONFIG_REG, nvd.PACKET3_SET_UCONFIG_REG_START,
                            nvd.PACKET3_SET_UCONFIG_REG_END, register, values, False,
                            "SET_UCONFIG_REG")


def release_mem_packet(address: int, value: int, *, bits64: bool = False,
                       interrupt: bool = False) -> list[int]:
    """gfx_v11_0_ring_emit_fence: flush and invalidate caches at end of pipe, then write `value`."""
    alignment = 8 if bits64 else DWORD
    if address % alignment:
        raise InvalidArgument(f"RELEASE_MEM address {address:#x} is not {alignment}-byte aligned")
    event = (nvd.PACKET3_RELEASE_MEM_GCR_SEQ | nvd.PACKET3_RELEASE_MEM_GCR_GL2_WB
             | nvd.PACKET3_RELEASE_MEM_GCR_GLM_INV | nvd.PACKET3_RELEASE_MEM_GCR_GLM_WB
             | nvd.PACKET3_RELEASE_MEM_CACHE_POLICY(RELEASE_MEM_CACHE_POLICY)
             | nvd.PACKET3_RELEASE_MEM_EVENT_TYPE(enums.CACHE_FLUSH_AND_INV_TS_EVENT)
             | nvd.PACKET3_RELEASE_MEM_EVENT_INDEX(RELEASE_MEM_EVENT_INDEX))
    data_sel = RELEASE_MEM_DATA_64 if bits64 else RELEASE_MEM_DATA_32
    int_sel = RELEASE_MEM_INT_CONFIRM if interrupt else 0
    select = nvd.PACKET3_RELEASE_MEM_DATA_SEL(data_sel) | nvd.PACKET3_RELEASE_MEM_INT_SEL(int_sel)
    return [_header(nvd.PACKET3_RELEASE_MEM, 7), event, select, address & WORD_MASK, address >> 32,
            value & WORD_MASK, (value >> 32) & WORD_MASK, 0]


def wait_reg_mem_packet(*, memory: bool, address0: int, address1: int, reference: int, mask: int,
                        function: int = WAIT_REG_MEM_EQUAL, engine: int = WAIT_REG_MEM_ENGINE_ME,
                        operation: int = WAIT_REG_MEM_OP_WAIT,
                        poll_interval: int = WAIT_REG_MEM_POLL_INTERVAL) -> list[int]:
    """gfx_v11_0_wait_reg_mem: wait until (value & mask) compares with `reference`. For memory,
    address0/1 are the low/high address; for registers, two dword register offsets."""
    if memory and address0 % DWORD:
        raise InvalidArgument(f"WAIT_REG_MEM address {address0:#x} is not dword aligned")
    space = WAIT_REG_MEM_SPACE_MEMORY if memory else WAIT_REG_MEM_SPACE_REGISTER
    control = (nvd.WAIT_REG_MEM_MEM_SPACE(space) | nvd.WAIT_REG_MEM_OPERATION(operation)
               | nvd.WAIT_REG_MEM_FUNCTION(function) | nvd.WAIT_REG_MEM_ENGINE(engine))
    return [_header(nvd.PACKET3_WAIT_REG_MEM, 6), control, address0 & WORD_MASK, address1 & WORD_MASK,
            reference & WORD_MASK, mask & WORD_MASK, poll_interval]


def wait_memory_packet(address: int, reference: int, mask: int = WORD_MASK) -> list[int]:
    """WAIT_REG_MEM on a dword in memory until it equals `reference` under `mask`."""
    return wait_reg_mem_packet(memory=True, address0=address, address1=address >> 32,
                               reference=reference, mask=mask)


def acquire_mem_packet() -> list[int]:
    """gfx_v11_0_emit_mem_sync: invalidate/write back every cache level over all addresses."""
    gcr = (nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GL2_INV(1) | nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GL2_WB(1)
           | nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GLM_INV(1) | nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GLM_WB(1)
           | nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GL1_INV(1) | nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GLV_INV(1)
           | nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GLK_INV(1) | nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GLI_INV(1))
    return [_header(nvd.PACKET3_ACQUIRE_MEM, 7), 0, ACQUIRE_MEM_SIZE_ALL, ACQUIRE_MEM_SIZE_HI_ALL, 0, 0,
            ACQUIRE_MEM_POLL_INTERVAL, gcr]


def indirect_buffer_packet(address: int, size_dwords: int, vmid: int = 0) -> list[int]:
    """gfx_v11_0_ring_emit_ib_compute: run `size_dwords` of PM4 at GPU address `address`."""
    if address % DWORD:
        raise InvalidArgument(f"indirect buffer at {address:#x} is not dword aligned")
    if not 0 < size_dwords <= IB_SIZE_MASK:
        raise InvalidArgument(f"indirect buffer of {size_dwords} dwords (1..{IB_SIZE_MASK})")
    control = nvd.INDIRECT_BUFFER_VALID | size_dwords | (vmid << IB_VMID_SHIFT)
    return [_header(nvd.PACKET3_INDIRECT_BUFFER, 3), address & WORD_MASK, address >> 32, control]


def dispatch_direct_packet(x: int, y: int, z: int, initiator: int) -> list[int]:
    """DISPATCH_DIRECT of x*y*z workgroups; `initiator` is COMPUTE_DISPATCH_INITIATOR's value."""
    return [_header(nvd.PACKET3_DISPATCH_DIRECT, 4, compute=True), x, y, z, initiator & WORD_MASK]


def event_write_packet(event_type: int, event_index: int) -> list[int]:
    """EVENT_WRITE of one event (nvd.h EVENT_TYPE / EVENT_INDEX)."""
    return [_header(nvd.PACKET3_EVENT_WRITE, 1), nvd.EVENT_TYPE(event_type) | nvd.EVENT_INDEX(event_index)]


class GCv11_0(IPBlock):
    """GC 11.0.0's compute queue (see the module docstring)."""

    block = "GC"
    versions = ((11, 0, 0),)

    def sw_init(self) -> None:
        config = self.device.config
        self.timeout_s = config.gc_timeout_s
        self.autoload_timeout_s = config.gc_autoload_timeout_s
        self.ring_bytes = config.gc_ring_size
        if self.ring_bytes < GPU_PAGE_SIZE or self.ring_bytes & (self.ring_bytes - 1):
            raise InvalidArgument(f"GC compute ring size {self.ring_bytes} must be a power of two of at "
                                  f"least {GPU_PAGE_SIZE} bytes (QUEUE_SIZE is log2 of the dwords)")
        self.ring_dwords = self.ring_bytes // DWORD
        self.buffers = []
        self.mqd_buffer = self._alloc(v11_compute_mqd.SIZE, MQD_ALIGNMENT, "GC compute MQD")
        self.eop = self._alloc(GFX11_MEC_HPD_SIZE, EOP_ALIGNMENT, "GC compute EOP")
        self.ring = self._alloc(self.ring_bytes, self.ring_bytes, "GC compute ring")
        self.writeback = self._alloc(WRITEBACK_BYTES, GPU_PAGE_SIZE, "GC compute writeback")
        self.wptr = 0  # dwords written, 64-bit (amdgpu ring->wptr with ptr_mask all ones)
        self.sequence = 0
        self.queue_active = False
        self.mec_enabled = False
        self.eop_interrupts = 0  # this queue's EOP interrupts the IH delivered
        self._eop_handler_registered = False
        # gfx_v11_0_compute_ring_init: (mec_ring0 + ring_id) << 1, in dwords
        self.doorbell_index = DOORBELL_MEC_RING0 << 1
        registers = self.device.registers

        def reg(name: str):
            return registers.reg("GC", name)

        self.reg = reg
        self.grbm_gfx_cntl = reg("regGRBM_GFX_CNTL")
        self.cp_stat = reg("regCP_STAT")
        self.bootload_status = reg("regRLC_RLCS_BOOTLOAD_STATUS")
        self.mec_cntl = reg("regCP_MEC_RS64_CNTL")
        self.hqd_active = reg("regCP_HQD_ACTIVE")
        self.hqd_dequeue = reg("regCP_HQD_DEQUEUE_REQUEST")
        self.hqd_rptr = reg("regCP_HQD_PQ_RPTR")
        self.hqd_wptr_lo = reg("regCP_HQD_PQ_WPTR_LO")
        self.hqd_wptr_hi = reg("regCP_HQD_PQ_WPTR_HI")
        self.scratch = reg("regSCRATCH_REG0")
        self.mqd = self._build_mqd()

    def _alloc(self, size: int, alignment: int, purpose: str):
        buffer = self.device.memory.alloc_vram(size, alignment=alignment, purpose=purpose)
        self.buffers.append(buffer)
        return buffer

    def sw_fini(self) -> None:
        memory = self.device.memory
        while self.buffers:
            memory.free_vram(self.buffers.pop())

    def _build_mqd(self) -> v11_compute_mqd:
        """gfx_v11_0_compute_mqd_init for a kernel queue on VMID 0 with a doorbell."""
        gc = self.device.registers.module("GC")
        mqd = v11_compute_mqd()
        mqd.header = MQD_HEADER
        mqd.compute_pipelinestat_enable = MQD_PIPELINESTAT_ENABLE
        for se in range(MQD_STATIC_THREAD_SES):
            setattr(mqd, f"compute_static_thread_mgmt_se{se}", MQD_STATIC_THREAD_MGMT_ALL)
        mqd.compute_misc_reserved = MQD_MISC_RESERVED
        eop_base = self.eop.mc_address >> RING_BASE_SHIFT
        mqd.cp_hqd_eop_base_addr_lo = eop_base & WORD_MASK
        mqd.cp_hqd_eop_base_addr_hi = eop_base >> 32
        # EOP_SIZE: the buffer is 2^(EOP_SIZE+1) dwords
        eop_size = (GFX11_MEC_HPD_SIZE // DWORD).bit_length() - 2
        mqd.cp_hqd_eop_control = gc.regCP_HQD_EOP_CONTROL.update(CP_HQD_EOP_CONTROL_DEFAULT,
                                                                 EOP_SIZE=eop_size)
        mqd.cp_hqd_dequeue_request = 0
        mqd.cp_hqd_pq_rptr = CP_HQD_PQ_RPTR_DEFAULT
        mqd.cp_hqd_pq_wptr_lo = 0
        mqd.cp_hqd_pq_wptr_hi = 0
        mqd.cp_mqd_base_addr_lo = self.mqd_buffer.mc_address & ADDRESS_LO_MASK
        mqd.cp_mqd_base_addr_hi = self.mqd_buffer.mc_address >> 32
        mqd.cp_mqd_control = gc.regCP_MQD_CONTROL.update(CP_MQD_CONTROL_DEFAULT, VMID=0)
        ring_base = self.ring.mc_address >> RING_BASE_SHIFT
        mqd.cp_hqd_pq_base_lo = ring_base & WORD_MASK
        mqd.cp_hqd_pq_base_hi = ring_base >> 32
        queue_size = (self.ring_dwords).bit_length() - 2  # order_base_2(dwords) - 1
        rptr_block = (GPU_PAGE_SIZE // DWORD).bit_length() - 2
        mqd.cp_hqd_pq_control = gc.regCP_HQD_PQ_CONTROL.update(
            CP_HQD_PQ_CONTROL_DEFAULT, QUEUE_SIZE=queue_size, RPTR_BLOCK_SIZE=rptr_block,
            UNORD_DISPATCH=1, TUNNEL_DISPATCH=0, PRIV_STATE=1, KMD_QUEUE=1)
        rptr_address = self.writeback.mc_address + RPTR_SLOT
        wptr_address = self.writeback.mc_address + WPTR_SLOT
        mqd.cp_hqd_pq_rptr_report_addr_lo = rptr_address & ADDRESS_LO_MASK
        mqd.cp_hqd_pq_rptr_report_addr_hi = (rptr_address >> 32) & ADDRESS_HI_MASK
        mqd.cp_hqd_pq_wptr_poll_addr_lo = wptr_address & ADDRESS_LO_MASK
        mqd.cp_hqd_pq_wptr_poll_addr_hi = (wptr_address >> 32) & ADDRESS_HI_MASK
        mqd.cp_hqd_pq_doorbell_control = gc.regCP_HQD_PQ_DOORBELL_CONTROL.update(
            CP_HQD_PQ_DOORBELL_CONTROL_DEFAULT, DOORBELL_OFFSET=self.doorbell_index, DOORBELL_EN=1,
            DOORBELL_SOURCE=0, DOORBELL_HIT=0)
        mqd.cp_hqd_vmid = 0
        mqd.cp_hqd_persistent_state = gc.regCP_HQD_PERSISTENT_STATE.update(
            CP_HQD_PERSISTENT_STATE_DEFAULT, PRELOAD_SIZE=MQD_PRELOAD_SIZE)
        mqd.cp_hqd_ib_control = gc.regCP_HQD_IB_CONTROL.update(
            CP_HQD_IB_CONTROL_DEFAULT, MIN_IB_AVAIL_SIZE=MQD_MIN_IB_AVAIL_SIZE)
        mqd.cp_hqd_pipe_priority = 0
        mqd.cp_hqd_queue_priority = 0
        mqd.cp_hqd_active = 1  # amdgpu_ring_init_mqd: prop.hqd_active for a kernel queue
        return mqd

    # -- bring-up -----------------------------------------------------------------------------------
    def hw_init(self) -> None:
        """gfx_v11_0_hw_init's compute part (module docstring). A failure after the MEC was
        un-halted dequeues what was mapped and halts the MEC again before it is raised."""
        self.mec_enabled = False
        try:
            self._start()
        except BaseException:
            if self.mec_enabled or self.queue_active:
                try:
                    self.hw_fini()
                except Exception as exc:  # the bring-up error is the one to see
                    log.error("%s: GC cleanup after a failed start: %s", self.device.pci.bdf, exc)
            raise

    def _start(self) -> None:
        device = self.device
        self._wait_autoload()
        self._config_mec_rs64()
        gmc = self._gmc()
        if gmc is not None:
            gmc.enable_hub(GFX_HUB)  # gfx_v11_0_gfxhub_enable
        self._golden_settings()
        self._constants_init()
        self._gc_doorbell_init()
        self._set_doorbell_range()
        self._compute_enable(True)
        self.mec_enabled = True
        self._enable_interrupts(True)
        self.ring.view.write(0, bytes(self.ring_bytes))
        self.writeback.view.write(0, bytes(WRITEBACK_BYTES))
        self.eop.view.write(0, bytes(GFX11_MEC_HPD_SIZE))
        self.mqd_buffer.view.write(0, bytes(self.mqd))
        self.wptr = 0
        self._map_queue()
        self.test_ring()
        log.info("%s: GC compute queue ME%d pipe %d queue %d up (ring %#x bytes at MC %#x)",
                 device.pci.bdf, MEC_ME, MEC_PIPE, MEC_QUEUE, self.ring_bytes, self.ring.mc_address)

    def _gmc(self):
        return self._block("GMC")

    def _block(self, name: str):
        for block in self.device.blocks:
            if block.block == name:
                return block
        return None

    def warm_init(self) -> None:
        """Attach to the queue a previous owner left running: when the HQD of ME1 pipe 0 queue 0 is
        active with this block's MQD and ring (the boot layout gave the buffers back in place), the
        RLC autoload is complete and the MEC runs the pipe, the queue is re-bound (wptr from the
        HQD, fences continuing from the fence slot) and proves itself with the ring test; else
        the GC is programmed again as a cold hw_init does (the queue re-mapped from the MQD)."""
        reason = self._warm_mismatch()
        if reason is not None:
            log.info("%s: GC warm attach: %s; programming the compute queue again",
                     self.device.pci.bdf, reason)
            self.hw_init()
            return
        gmc = self._gmc()
        if gmc is not None:
            # the hub the CP and SDMA translate through: marked enabled for this owner's TLB
            # flushes, and VMID 0 flushed, else it keeps the previous owner's GART translations
            gmc.enable_hub(GFX_HUB)  # gfx_v11_0_gfxhub_enable, as on resume
        self._select(MEC_ME, MEC_PIPE, MEC_QUEUE, 0)
        try:
            self.wptr = self.hqd_wptr_lo.read() | self.hqd_wptr_hi.read() << 32
        finally:
            self._select(0, 0, 0, 0)
        self.queue_active = True
        self.mec_enabled = True
        self.sequence = self.fence_value()
        self._enable_interrupts(True)
        self._register_eop_handler()
        self.test_ring()
        log.info("%s: GC compute queue re-bound warm (wptr %#x, fence %d)", self.device.pci.bdf,
                 self.wptr, self.sequence)

    def _warm_mismatch(self) -> str | None:
        """Why the running queue cannot be re-bound, or None when it can."""
        status = self.bootload_status.read()
        if not self.bootload_status.definition.field("BOOTLOAD_COMPLETE").decode(status):
            return f"RLC_RLCS_BOOTLOAD_STATUS {status:#010x} without BOOTLOAD_COMPLETE"
        control = self.mec_cntl.decode(self.mec_cntl.read())
        pipe_off = control[f"MEC_PIPE{MEC_PIPE}_RESET"] or not control[f"MEC_PIPE{MEC_PIPE}_ACTIVE"]
        if control["MEC_HALT"] or pipe_off:
            return f"the MEC is halted or pipe {MEC_PIPE} is off (CP_MEC_RS64_CNTL {control})"
        mqd = self.mqd
        expected = {
            "regCP_HQD_ACTIVE": mqd.cp_hqd_active,
            "regCP_MQD_BASE_ADDR": mqd.cp_mqd_base_addr_lo,
            "regCP_MQD_BASE_ADDR_HI": mqd.cp_mqd_base_addr_hi,
            "regCP_HQD_PQ_BASE": mqd.cp_hqd_pq_base_lo,
            "regCP_HQD_PQ_BASE_HI": mqd.cp_hqd_pq_base_hi,
            "regCP_HQD_PQ_CONTROL": mqd.cp_hqd_pq_control,
            "regCP_HQD_PQ_DOORBELL_CONTROL": mqd.cp_hqd_pq_doorbell_control,
        }
        self._select(MEC_ME, MEC_PIPE, MEC_QUEUE, 0)
        try:
            found = {name: self.reg(name).read() for name in expected}
        finally:
            self._select(0, 0, 0, 0)
        found["regCP_HQD_ACTIVE"] &= 1
        for name, value in expected.items():
            if found[name] != value:
                return f"{name} reads {found[name]:#x}, this block's MQD has {value:#x}"
        return None

    def _wait_autoload(self) -> None:
        """gfx_v11_0_wait_for_rlc_autoload_complete: CP idle and the RLC's BOOTLOAD_COMPLETE."""
        complete = self.bootload_status.definition.field("BOOTLOAD_COMPLETE")
        os = self.device.pci.os
        deadline = os.monotonic() + self.autoload_timeout_s
        while True:
            cp_stat = self.cp_stat.read()
            status = self.bootload_status.read()
            if cp_stat == 0 and complete.decode(status):
                return
            if os.monotonic() >= deadline:
                raise DeviceTimeout(
                    f"{self.device.pci.bdf}: GC: the RLC autoload did not complete within "
                    f"{self.autoload_timeout_s} s (CP_STAT {cp_stat:#010x}, expected 0; "
                    f"RLC_RLCS_BOOTLOAD_STATUS {status:#010x}, BOOTLOAD_COMPLETE expected 1); "
                    "did the PSP load the GC firmware and AUTOLOAD_RLC?")
            os.sleep(POLL_INTERVAL_S)

    def _mec_image(self):
        """The RS64 MEC image the PSP loaded (header 2.0), or None without a PSP block."""
        for block in self.device.blocks:
            if block.block != "PSP":
                continue
            for image in getattr(block, "firmware", {}).values():
                if any(s.ucode_id == ucode.AMDGPU_UCODE_ID_CP_RS64_MEC for s in image.sections):
                    return image
        return None

    def _config_mec_rs64(self) -> None:
        """The MEC part of gfx_v11_0_config_gfx_rs64: every ME1 pipe starts at the image's
        ucode_start_addr, then the pipes are reset and released."""
        image = self._mec_image()
        if image is None:
            log.warning("%s: GC: no RS64 MEC image known; MEC program start left as is",
                        self.device.pci.bdf)
            return
        header = image.versioned_header
        start_lo = header.ucode_start_addr_lo
        start_hi = header.ucode_start_addr_hi
        start = self.reg("regCP_MEC_RS64_PRGRM_CNTR_START")
        start_high = self.reg("regCP_MEC_RS64_PRGRM_CNTR_START_HI")
        for pipe in range(MEC_PIPES):
            self._select(MEC_ME, pipe, 0, 0)
            start.write((start_lo >> 2) | (start_hi << 30))
            start_high.write(start_hi >> 2)
        self._select(0, 0, 0, 0)
        resets = {f"MEC_PIPE{pipe}_RESET": 1 for pipe in range(MEC_PIPES)}
        self.mec_cntl.update(**resets)
        self.mec_cntl.update(**{name: 0 for name in resets})

    def _select(self, me: int, pipe: int, queue: int, vmid: int) -> None:
        """soc21_grbm_select: route per-queue registers to (me, pipe, queue, vmid)."""
        self.grbm_gfx_cntl.write_fields(MEID=me, PIPEID=pipe, QUEUEID=queue, VMID=vmid)

    def _golden_settings(self) -> None:
        """soc15_program_register_sequence over golden_settings_gc_11_0."""
        for name, and_mask, or_value in GOLDEN_SETTINGS_GC_11_0:
            register = self.reg(name)
            if and_mask == GOLDEN_FULL_MASK:
                register.write(or_value)
            else:
                register.write((register.read() & ~and_mask) | (or_value & and_mask))

    def _constants_init(self) -> None:
        """The compute part of gfx_v11_0_constants_init."""
        self.reg("regGRBM_CNTL").update(READ_TIMEOUT=GRBM_READ_TIMEOUT)
        sh_mem_config = self.reg("regSH_MEM_CONFIG")
        sh_mem_bases = self.reg("regSH_MEM_BASES")
        config = sh_mem_config.definition.encode(
            ADDRESS_MODE=enums.SH_MEM_ADDRESS_MODE_64, ALIGNMENT_MODE=enums.SH_MEM_ALIGNMENT_MODE_UNALIGNED,
            INITIAL_INST_PREFETCH=SH_MEM_INITIAL_INST_PREFETCH)
        bases = sh_mem_bases.definition.encode(
            PRIVATE_BASE=PRIVATE_APERTURE_START >> APERTURE_BASE_SHIFT,
            SHARED_BASE=SHARED_APERTURE_START >> APERTURE_BASE_SHIFT)
        try:
            for vmid in range(VMID_COUNT):
                self._select(0, 0, 0, vmid)
                sh_mem_config.write(config)
                if vmid:
                    sh_mem_bases.write(bases)
        finally:
            self._select(0, 0, 0, 0)

    def _gc_doorbell_init(self) -> None:
        """nbio_v4_3_gc_doorbell_init: S2A doorbell routes 0 and 3 for the GC."""
        registers = self.device.registers
        registers.reg("NBIO", "regS2A_DOORBELL_ENTRY_0_CTRL").write_fields(
            S2A_DOORBELL_PORT0_ENABLE=1, S2A_DOORBELL_PORT0_AWID=GC_DOORBELL_PORT0_AWID,
            S2A_DOORBELL_PORT0_AWADDR_31_28_VALUE=GC_DOORBELL_AWADDR_31_28)
        registers.reg("NBIO", "regS2A_DOORBELL_ENTRY_3_CTRL").write_fields(
            S2A_DOORBELL_PORT3_ENABLE=1, S2A_DOORBELL_PORT3_AWID=GC_DOORBELL_PORT3_AWID,
            S2A_DOORBELL_PORT3_AWADDR_31_28_VALUE=GC_DOORBELL_AWADDR_31_28)

    def _set_doorbell_range(self) -> None:
        """gfx_v11_0_cp_set_doorbell_range, compute part: KIQ .. USERQUEUE_END, in bytes."""
        self.reg("regCP_MEC_DOORBELL_RANGE_LOWER").write((DOORBELL_KIQ * 2) << 2)
        self.reg("regCP_MEC_DOORBELL_RANGE_UPPER").write((DOORBELL_USERQUEUE_END * 2) << 2)

    def _compute_enable(self, enable: bool) -> None:
        """gfx_v11_0_cp_compute_enable, RS64: pipes active and out of reset, MEC un-halted."""
        off = 0 if enable else 1
        on = 1 - off
        fields = {"MEC_INVALIDATE_ICACHE": off, "MEC_HALT": off}
        for pipe in range(MEC_PIPES):
            fields[f"MEC_PIPE{pipe}_RESET"] = off
            fields[f"MEC_PIPE{pipe}_ACTIVE"] = on
        self.mec_cntl.update(**fields)

    def _enable_interrupts(self, enable: bool) -> None:
        """The CP interrupts amdgpu enables for its compute pipes: on every ME1 pipe the
        privileged-register and bad-opcode faults (gfx_v11_0_late_init's irq gets through
        gfx_v11_0_set_priv_reg_fault_state / set_bad_op_fault_state), on this queue's pipe the EOP
        interrupt RELEASE_MEM raises (gfx_v11_0_set_compute_eop_interrupt_state:
        TIME_STAMP_INT_ENABLE and GENERIC0_INT_ENABLE)."""
        on = 1 if enable else 0
        for pipe in range(MEC_PIPES):
            fields = {"PRIV_REG_INT_ENABLE": on, "OPCODE_ERROR_INT_ENABLE": on}
            if pipe == MEC_PIPE:
                fields.update(TIME_STAMP_INT_ENABLE=on, GENERIC0_INT_ENABLE=on)
            self.reg(f"regCP_ME{MEC_ME}_PIPE{pipe}_INT_CNTL").update(**fields)
        if enable:
            self._register_eop_handler()

    @property
    def ring_id(self) -> int:
        """The IV ring_id the CP gives this queue's interrupts (gfx_v11_0_eop_irq decodes it)."""
        return MEC_QUEUE << RING_ID_QUEUE_SHIFT | MEC_ME << RING_ID_ME_SHIFT | MEC_PIPE

    def _register_eop_handler(self) -> None:
        """amdgpu_irq_add_id(GRBM_CP, CP_EOP_INTERRUPT): EOP interrupts counted per queue."""
        ih = self._block("IH")
        if ih is None or self._eop_handler_registered:
            return
        ih.register(ih_clients.SOC21_IH_CLIENTID_GRBM_CP, gfx_sources.GFX_11_0_0__SRCID__CP_EOP_INTERRUPT,
                    self._on_eop)
        self._eop_handler_registered = True

    def is_eop(self, event) -> bool:
        """Whether an IH event is this queue's EOP interrupt."""
        entry = event.entry
        return (entry.client_id == ih_clients.SOC21_IH_CLIENTID_GRBM_CP
                and entry.source_id == gfx_sources.GFX_11_0_0__SRCID__CP_EOP_INTERRUPT
                and entry.ring_id == self.ring_id)

    def _on_eop(self, event) -> None:
        if self.is_eop(event):
            self.eop_interrupts += 1

    def _map_queue(self) -> None:
        """gfx_v11_0_kiq_init_register for our queue, under GRBM selection."""
        mqd = self.mqd
        reg = self.reg
        self._select(MEC_ME, MEC_PIPE, MEC_QUEUE, 0)
        try:
            reg("regCP_PQ_WPTR_POLL_CNTL").update(EN=0)
            reg("regCP_HQD_EOP_BASE_ADDR").write(mqd.cp_hqd_eop_base_addr_lo)
            reg("regCP_HQD_EOP_BASE_ADDR_HI").write(mqd.cp_hqd_eop_base_addr_hi)
            reg("regCP_HQD_EOP_CONTROL").write(mqd.cp_hqd_eop_control)
            reg("regCP_HQD_PQ_DOORBELL_CONTROL").write(mqd.cp_hqd_pq_doorbell_control)
            if self.hqd_active.read() & 1:
                # a queue left active (a previous owner): dequeue it first, as amdgpu does
                self._dequeue("remapping")
                self.hqd_dequeue.write(mqd.cp_hqd_dequeue_request)
                self.hqd_rptr.write(mqd.cp_hqd_pq_rptr)
                self.hqd_wptr_lo.write(mqd.cp_hqd_pq_wptr_lo)
                self.hqd_wptr_hi.write(mqd.cp_hqd_pq_wptr_hi)
            reg("regCP_MQD_BASE_ADDR").write(mqd.cp_mqd_base_addr_lo)
            reg("regCP_MQD_BASE_ADDR_HI").write(mqd.cp_mqd_base_addr_hi)
            reg("regCP_MQD_CONTROL").write(mqd.cp_mqd_control)
            reg("regCP_HQD_PQ_BASE").write(mqd.cp_hqd_pq_base_lo)
            reg("regCP_HQD_PQ_BASE_HI").write(mqd.cp_hqd_pq_base_hi)
            reg("regCP_HQD_PQ_CONTROL").write(mqd.cp_hqd_pq_control)
            reg("regCP_HQD_PQ_RPTR_REPORT_ADDR").write(mqd.cp_hqd_pq_rptr_report_addr_lo)
            reg("regCP_HQD_PQ_RPTR_REPORT_ADDR_HI").write(mqd.cp_hqd_pq_rptr_report_addr_hi)
            reg("regCP_HQD_PQ_WPTR_POLL_ADDR").write(mqd.cp_hqd_pq_wptr_poll_addr_lo)
            reg("regCP_HQD_PQ_WPTR_POLL_ADDR_HI").write(mqd.cp_hqd_pq_wptr_poll_addr_hi)
            self._set_doorbell_range()
            reg("regCP_HQD_PQ_DOORBELL_CONTROL").write(mqd.cp_hqd_pq_doorbell_control)
            self.hqd_wptr_lo.write(mqd.cp_hqd_pq_wptr_lo)
            self.hqd_wptr_hi.write(mqd.cp_hqd_pq_wptr_hi)
            reg("regCP_HQD_VMID").write(mqd.cp_hqd_vmid)
            reg("regCP_HQD_PERSISTENT_STATE").write(mqd.cp_hqd_persistent_state)
            self.hqd_active.write(mqd.cp_hqd_active)
            reg("regCP_PQ_STATUS").update(DOORBELL_ENABLE=1)
            self.queue_active = True
        finally:
            self._select(0, 0, 0, 0)

    def _dequeue(self, why: str) -> None:
        """CP_HQD_DEQUEUE_REQUEST, then CP_HQD_ACTIVE clear within gc_timeout_s (the queue is
        selected by the caller)."""
        self.hqd_dequeue.write_fields(DEQUEUE_REQ=1)
        poll(self.device, self.hqd_active, 1, 0, self.timeout_s,
             f"the GC compute queue ME{MEC_ME} pipe {MEC_PIPE} queue {MEC_QUEUE} to dequeue ({why}); "
             f"rptr {self.rptr():#x}, wptr {self.wptr:#x}")

    def reset_queue(self, why: str) -> None:
        """Recover a queue stuck on a kernel that never ends or stopped by a fault: dequeue it
        (which ends its waves), drop what it had not consumed and map it again, as
        gfx_v11_0.c gfx_v11_0_reset_kcq does (dequeue, re-init the MQD, remap). The write pointer
        stays monotonic: the queue restarts empty at rptr = wptr."""
        position = self.wptr % self.ring_dwords
        self._select(MEC_ME, MEC_PIPE, MEC_QUEUE, 0)
        try:
            if self.hqd_active.read() & 1:
                self._dequeue(f"queue reset: {why}")
            self.hqd_dequeue.write(0)
            # the CP resumes from CP_HQD_PQ_RPTR (gfx_v11_0_kiq_init_register writes it from the MQD)
            self.hqd_rptr.write(position)
        finally:
            self._select(0, 0, 0, 0)
        self.writeback.view.write32(RPTR_SLOT, position)
        self.mqd.cp_hqd_pq_rptr = position
        self.mqd.cp_hqd_pq_wptr_lo = self.wptr & WORD_MASK
        self.mqd.cp_hqd_pq_wptr_hi = self.wptr >> 32
        self.mqd_buffer.view.write(0, bytes(self.mqd))
        self._map_queue()

    def hw_fini(self) -> None:
        """Dequeue the queue, then halt the MEC (gfx_v11_0_hw_fini without KIQ)."""
        try:
            if self.queue_active:
                self._select(MEC_ME, MEC_PIPE, MEC_QUEUE, 0)
                try:
                    if self.hqd_active.read() & 1:
                        self._dequeue("fini")
                    self.hqd_dequeue.write(0)
                    self.hqd_rptr.write(0)
                    self.hqd_wptr_lo.write(0)
                    self.hqd_wptr_hi.write(0)
                finally:
                    self._select(0, 0, 0, 0)
                self.queue_active = False
        finally:
            try:
                self._enable_interrupts(False)
            finally:
                self._compute_enable(False)
                self.mec_enabled = False

    # -- ring -----------------------------------------------------------------------------------------
    def rptr(self) -> int:
        """The CP's read pointer in dwords as it reports it to memory (32 bits, gfx11)."""
        return self.writeback.view.read32(RPTR_SLOT)

    def pending_dwords(self) -> int:
        """Dwords written and not yet consumed (the rptr report taken within the ring)."""
        return (self.wptr - self.rptr()) % self.ring_dwords

    def hqd_state(self) -> str:
        """The queue's HQD registers, for error messages."""
        self._select(MEC_ME, MEC_PIPE, MEC_QUEUE, 0)
        try:
            values = {
                "CP_HQD_ACTIVE": self.hqd_active.read(),
                "CP_HQD_PQ_RPTR": self.hqd_rptr.read(),
                "CP_HQD_PQ_WPTR_LO": self.hqd_wptr_lo.read(),
                "CP_HQD_DEQUEUE_REQUEST": self.hqd_dequeue.read(),
            }
        finally:
            self._select(0, 0, 0, 0)
        values["CP_STAT"] = self.cp_stat.read()
        values["CP_MEC_RS64_CNTL"] = self.mec_cntl.read()
        return ", ".join(f"{name} {value:#010x}" for name, value in values.items())

    def _wait(self, done, what: str) -> None:
        """Poll `done()` until true, bounded; CP_STAT read every round (all ones: DeviceLost)."""
        os = self.device.pci.os
        deadline = os.monotonic() + self.timeout_s
        while not done():
            self.cp_stat.read()
            if os.monotonic() >= deadline:
                raise self._timeout(what)
            os.sleep(POLL_INTERVAL_S)

    def _timeout(self, what: str) -> DeviceTimeout:
        return DeviceTimeout(
            f"{self.device.pci.bdf}: GC compute queue ME{MEC_ME} pipe {MEC_PIPE} queue "
            f"{MEC_QUEUE}: {what} did not happen within {self.timeout_s} s (rptr report "
            f"{self.rptr():#x}, wptr {self.wptr:#x} dwords, ring {self.ring_dwords:#x} dwords; "
            f"{self.hqd_state()})")

    def submit(self, words: list[int]) -> None:
        """Write `words` into the ring (waiting for room) and ring the doorbell."""
        count = len(words)
        # one dword stays free so that a full ring never reads as empty (rptr == wptr)
        if count >= self.ring_dwords:
            raise InvalidArgument(f"GC compute ring: {count} dwords do not fit a "
                                  f"{self.ring_dwords}-dword ring")
        if self.pending_dwords() + count >= self.ring_dwords:
            self._wait(lambda: self.pending_dwords() + count < self.ring_dwords,
                       f"room for {count} dwords")
        position = (self.wptr % self.ring_dwords) * DWORD
        ring.write_words(self.ring.view, self.ring_bytes, position, words)
        self.wptr += count
        self._commit()

    def _commit(self) -> None:
        """gfx_v11_0_ring_set_wptr_compute: the wptr poll slot, then WDOORBELL64."""
        ring.commit(self.device, self.writeback.view, WPTR_SLOT, self.doorbell_index, self.wptr)

    def register_offset(self, name: str) -> int:
        """A GC register's dword offset in the register space (SOC15_REG_OFFSET), as SET_SH_REG,
        SET_UCONFIG_REG and WAIT_REG_MEM take it."""
        return self.device.registers.address("GC", name) // DWORD

    def test_ring(self) -> None:
        """gfx_v11_0_ring_test_ring: SET_UCONFIG_REG writes RING_TEST_VALUE into SCRATCH_REG0."""
        self.scratch.write(RING_TEST_SEED)
        register = self.register_offset("regSCRATCH_REG0")
        self.submit(set_uconfig_reg_packet(register, [RING_TEST_VALUE]))
        self._wait(lambda: self.scratch.read() == RING_TEST_VALUE,
                   f"the ring test write of {RING_TEST_VALUE:#x} to SCRATCH_REG0")

    # -- work ------------------------------------------------------------------------------------------
    def signal(self, interrupt: bool = False) -> int:
        """A RELEASE_MEM writing the next sequence number (EOP interrupt when asked); returns it."""
        self.sequence = (self.sequence + 1) & WORD_MASK
        self.submit(release_mem_packet(self.writeback.mc_address + FENCE_SLOT, self.sequence,
                                       interrupt=interrupt))
        return self.sequence

    def fence_value(self) -> int:
        return self.writeback.view.read32(FENCE_SLOT)

    def wait(self, sequence: int) -> None:
        """Wait until the fence reached `sequence` (32-bit wrap-around aware)."""
        def reached() -> bool:
            return (self.fence_value() - sequence) & WORD_MASK < 1 << 31

        self._wait(reached, f"fence {sequence}")

    def wait_interrupt(self, sequence: int) -> None:
        """Wait until the fence reached `sequence`, sleeping on the IH (the fence signalled with
        `signal(interrupt=True)`): each EOP interrupt of this queue wakes it to check the fence;
        bounded by `AMConfig.gc_timeout_s`. Without an enabled IH block, as `wait`."""
        ih = self._block("IH")
        if ih is None or not getattr(ih, "enabled", False):
            self.wait(sequence)
            return
        os = self.device.pci.os
        deadline = os.monotonic() + self.timeout_s
        while (self.fence_value() - sequence) & WORD_MASK >= 1 << 31:
            remaining = deadline - os.monotonic()
            if remaining <= 0:
                self.cp_stat.read()  # all ones: DeviceLost rather than a timeout
                raise self._timeout(f"fence {sequence} (woken by EOP interrupts, "
                                    f"{self.eop_interrupts} seen)")
            try:
                ih.wait(f"the GC EOP interrupt for fence {sequence}", timeout_s=remaining,
                        predicate=self.is_eop)
            except DeviceTimeout:
                continue  # the deadline check above reports it with the queue's state
