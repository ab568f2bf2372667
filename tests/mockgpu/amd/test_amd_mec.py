"""The mock MEC at the register and memory layer, programmed the way gfx_v11_0.c (and amdkfd's
hqd_load_v11) program a compute queue: MQD, HQD registers, doorbells, PM4 packets, dequeue, resets."""
from __future__ import annotations

import pytest

from autogen.amd import irqsrcs_gfx_11_0_0 as srcid
from autogen.amd import nvd
from autogen.amd import soc15_ih_clientid as clientid
from autogen.amd.regs import gc_11_0_0, nbio_4_3_0
from autogen.amd.v11_structs import v11_compute_mqd
from mockgpu.amd import Navi31GPU
from mockgpu.amd import mec as model
from mockgpu.amd.rdna3.tables import SOPP

MIB = 1 << 20
FB_UNIT_SHIFT = 24
RING_OFFSET = 16 * MIB
RING_BYTES = 4096
RPTR_OFFSET = 17 * MIB
WPTR_OFFSET = 17 * MIB + 8
EOP_OFFSET = 18 * MIB
EOP_BYTES = 2048  # gfx_v11_0.c GFX11_MEC_HPD_SIZE
MQD_OFFSET = 19 * MIB
FENCE_OFFSET = 20 * MIB
IB_OFFSET = 21 * MIB
PROGRAM_OFFSET = 22 * MIB
# amdgpu_doorbell.h AMDGPU_NAVI10_DOORBELL_*: KIQ 0x000, MEC_RING0 0x003, USERQUEUE_END 0x08A (64-bit
# slots); gfx_v11_0_compute_ring_init: ring->doorbell_index = (mec_ring0 + ring_id) << 1 (dwords)
DOORBELL_KIQ = 0x000
DOORBELL_MEC_RING0 = 0x003
DOORBELL_USERQUEUE_END = 0x08A
DOORBELL_INDEX = DOORBELL_MEC_RING0 << 1
ME, PIPE, QUEUE = 1, 0, 0
# gfx_v11_0_ring_emit_fence's RELEASE_MEM control: CACHE_FLUSH_AND_INV_TS_EVENT (navi10_enum.h: 20)
# with EVENT_INDEX(5); the GCR bits do not matter to the model
CACHE_FLUSH_AND_INV_TS_EVENT = 20
RELEASE_CONTROL = (nvd.PACKET3_RELEASE_MEM_GCR_SEQ | nvd.PACKET3_RELEASE_MEM_GCR_GL2_WB
                   | nvd.PACKET3_RELEASE_MEM_GCR_GLM_INV | nvd.PACKET3_RELEASE_MEM_GCR_GLM_WB
                   | nvd.PACKET3_RELEASE_MEM_CACHE_POLICY(3)
                   | nvd.PACKET3_RELEASE_MEM_EVENT_TYPE(CACHE_FLUSH_AND_INV_TS_EVENT)
                   | nvd.PACKET3_RELEASE_MEM_EVENT_INDEX(5))


def order_base_2(value: int) -> int:
    return (value - 1).bit_length()


class Interrupts:
    """Stands in for the IH model: records what the MEC posts."""

    def __init__(self) -> None:
        self.posted: list[tuple[int, int, tuple, int]] = []

    def post(self, client_id, source_id, src_data=(0, 0, 0, 0), ring_id=0, **_) -> bool:
        self.posted.append((client_id, source_id, tuple(src_data), ring_id))
        return True


class Compute:
    """A Navi31GPU with one compute queue set up the way gfx_v11_0.c sets up its rings."""

    def __init__(self) -> None:
        self.gpu = gpu = Navi31GPU(vram_size=64 * MIB)
        self.mec = gpu.mec
        self.interrupts = Interrupts()
        gpu.ih = self.interrupts
        self.fb_base = gpu.regfile.get("GC", "regGCMC_VM_FB_LOCATION_BASE") << FB_UNIT_SHIFT
        top = gpu.regfile.get("GC", "regGCMC_VM_FB_LOCATION_TOP") << FB_UNIT_SHIFT
        # gfxhub_v3_0_init_system_aperture_regs: the VMID 0 aperture covers the FB range
        self.write("GC", "regGCMC_VM_SYSTEM_APERTURE_LOW_ADDR", self.fb_base >> 18)
        self.write("GC", "regGCMC_VM_SYSTEM_APERTURE_HIGH_ADDR", (top + (1 << 24) - 1) >> 18)
        self.wptr = 0

    # -- registers and memory -----------------------------------------------------------------
    def write(self, ip: str, name: str, value: int) -> None:
        self.gpu.regfile.write32(self.gpu.regfile.address(ip, name), value)

    def read(self, ip: str, name: str) -> int:
        return self.gpu.regfile.read32(self.gpu.regfile.address(ip, name))

    def mc(self, offset: int) -> int:
        return self.fb_base + offset

    def vram32(self, offset: int) -> int:
        return int.from_bytes(self.gpu.vram[offset:offset + 4], "little")

    def vram64(self, offset: int) -> int:
        return int.from_bytes(self.gpu.vram[offset:offset + 8], "little")

    def put32(self, offset: int, value: int) -> None:
        self.gpu.vram[offset:offset + 4] = value.to_bytes(4, "little")

    def grbm_select(self, me: int, pipe: int, queue: int) -> None:
        """soc21.c soc21_grbm_select."""
        register = gc_11_0_0.get("regGRBM_GFX_CNTL")
        self.write("GC", "regGRBM_GFX_CNTL", register.encode(MEID=me, PIPEID=pipe, QUEUEID=queue))

    # -- bring-up ------------------------------------------------------------------------------
    def route_doorbells(self) -> None:
        """nbio_v4_3.c: the doorbell aperture and the GC port (nbio_v4_3_gc_doorbell_init);
        gfx_v11_0_cp_set_doorbell_range: the MEC range from the KIQ to the last user queue."""
        self.write("NBIO", "regRCC_DEV0_EPF0_RCC_DOORBELL_APER_EN", 1)
        port = nbio_4_3_0.regS2A_DOORBELL_ENTRY_0_CTRL.encode(
            S2A_DOORBELL_PORT0_ENABLE=1, S2A_DOORBELL_PORT0_AWID=3, S2A_DOORBELL_PORT0_AWADDR_31_28_VALUE=3)
        self.write("NBIO", "regS2A_DOORBELL_ENTRY_0_CTRL", port)
        self.write("GC", "regCP_MEC_DOORBELL_RANGE_LOWER", (DOORBELL_KIQ * 2) << 2)
        self.write("GC", "regCP_MEC_DOORBELL_RANGE_UPPER", (DOORBELL_USERQUEUE_END * 2) << 2)

    def enable_interrupts(self) -> None:
        """gfx_v11_0_set_compute_eop_interrupt_state and gfx_v11_0_set_bad_op_fault_state."""
        register = gc_11_0_0.get("regCP_ME1_PIPE0_INT_CNTL")
        self.write("GC", "regCP_ME1_PIPE0_INT_CNTL",
                   register.encode(TIME_STAMP_INT_ENABLE=1, GENERIC0_INT_ENABLE=1,
                                   OPCODE_ERROR_INT_ENABLE=1))

    def compute_enable(self) -> None:
        """gfx_v11_0_cp_compute_enable(adev, true) with rs64_enable."""
        register = gc_11_0_0.get("regCP_MEC_RS64_CNTL")
        value = register.update(self.read("GC", "regCP_MEC_RS64_CNTL"), MEC_INVALIDATE_ICACHE=0,
                                MEC_PIPE0_RESET=0, MEC_PIPE1_RESET=0, MEC_PIPE2_RESET=0, MEC_PIPE3_RESET=0,
                                MEC_PIPE0_ACTIVE=1, MEC_PIPE1_ACTIVE=1, MEC_PIPE2_ACTIVE=1,
                                MEC_PIPE3_ACTIVE=1, MEC_HALT=0)
        self.write("GC", "regCP_MEC_RS64_CNTL", value)

    def build_mqd(self, queue_bytes: int = RING_BYTES, doorbell: int = DOORBELL_INDEX) -> v11_compute_mqd:
        """gfx_v11_0_compute_mqd_init, written into VRAM at MQD_OFFSET."""
        mqd = v11_compute_mqd.from_buffer(self.gpu.vram, MQD_OFFSET)
        mqd.buffer[:] = bytes(v11_compute_mqd.SIZE)
        eop = self.mc(EOP_OFFSET) >> 8
        mqd.cp_hqd_eop_base_addr_lo = eop & 0xFFFFFFFF
        mqd.cp_hqd_eop_base_addr_hi = eop >> 32
        mqd.cp_hqd_eop_control = gc_11_0_0.get("regCP_HQD_EOP_CONTROL").encode(
            EOP_SIZE=order_base_2(EOP_BYTES // 4) - 1)
        mqd.cp_hqd_pq_doorbell_control = gc_11_0_0.get("regCP_HQD_PQ_DOORBELL_CONTROL").encode(
            DOORBELL_OFFSET=doorbell, DOORBELL_EN=1)
        mqd.cp_mqd_base_addr_lo = self.mc(MQD_OFFSET) & 0xFFFFFFFC
        mqd.cp_mqd_base_addr_hi = self.mc(MQD_OFFSET) >> 32
        ring = self.mc(RING_OFFSET) >> 8
        mqd.cp_hqd_pq_base_lo = ring & 0xFFFFFFFF
        mqd.cp_hqd_pq_base_hi = ring >> 32
        mqd.cp_hqd_pq_control = gc_11_0_0.get("regCP_HQD_PQ_CONTROL").encode(
            QUEUE_SIZE=order_base_2(queue_bytes // 4) - 1, RPTR_BLOCK_SIZE=order_base_2(4096 // 4) - 1,
            UNORD_DISPATCH=1, PRIV_STATE=1, KMD_QUEUE=1)
        mqd.cp_hqd_pq_rptr_report_addr_lo = self.mc(RPTR_OFFSET) & 0xFFFFFFFC
        mqd.cp_hqd_pq_rptr_report_addr_hi = (self.mc(RPTR_OFFSET) >> 32) & 0xFFFF
        mqd.cp_hqd_pq_wptr_poll_addr_lo = self.mc(WPTR_OFFSET) & 0xFFFFFFFC
        mqd.cp_hqd_pq_wptr_poll_addr_hi = (self.mc(WPTR_OFFSET) >> 32) & 0xFFFF
        mqd.cp_hqd_persistent_state = gc_11_0_0.get("regCP_HQD_PERSISTENT_STATE").encode(PRELOAD_SIZE=0x55)
        mqd.cp_hqd_ib_control = gc_11_0_0.get("regCP_HQD_IB_CONTROL").encode(MIN_IB_AVAIL_SIZE=3)
        mqd.cp_hqd_active = 1
        return mqd

    def init_registers(self, mqd: v11_compute_mqd) -> None:
        """gfx_v11_0_kiq_init_register, between soc21_grbm_select(me, pipe, queue) and (0, 0, 0)."""
        self.grbm_select(ME, PIPE, QUEUE)
        self.write("GC", "regCP_PQ_WPTR_POLL_CNTL", 0)
        self.write("GC", "regCP_HQD_EOP_BASE_ADDR", mqd.cp_hqd_eop_base_addr_lo)
        self.write("GC", "regCP_HQD_EOP_BASE_ADDR_HI", mqd.cp_hqd_eop_base_addr_hi)
        self.write("GC", "regCP_HQD_EOP_CONTROL", mqd.cp_hqd_eop_control)
        self.write("GC", "regCP_HQD_PQ_DOORBELL_CONTROL", mqd.cp_hqd_pq_doorbell_control)
        if self.read("GC", "regCP_HQD_ACTIVE") & 1:
            self.write("GC", "regCP_HQD_DEQUEUE_REQUEST", 1)
            for _ in range(100):
                if not self.read("GC", "regCP_HQD_ACTIVE") & 1:
                    break
            self.write("GC", "regCP_HQD_DEQUEUE_REQUEST", mqd.cp_hqd_dequeue_request)
            self.write("GC", "regCP_HQD_PQ_RPTR", mqd.cp_hqd_pq_rptr)
            self.write("GC", "regCP_HQD_PQ_WPTR_LO", mqd.cp_hqd_pq_wptr_lo)
            self.write("GC", "regCP_HQD_PQ_WPTR_HI", mqd.cp_hqd_pq_wptr_hi)
        self.write("GC", "regCP_MQD_BASE_ADDR", mqd.cp_mqd_base_addr_lo)
        self.write("GC", "regCP_MQD_BASE_ADDR_HI", mqd.cp_mqd_base_addr_hi)
        self.write("GC", "regCP_MQD_CONTROL", mqd.cp_mqd_control)
        self.write("GC", "regCP_HQD_PQ_BASE", mqd.cp_hqd_pq_base_lo)
        self.write("GC", "regCP_HQD_PQ_BASE_HI", mqd.cp_hqd_pq_base_hi)
        self.write("GC", "regCP_HQD_PQ_CONTROL", mqd.cp_hqd_pq_control)
        self.write("GC", "regCP_HQD_PQ_RPTR_REPORT_ADDR", mqd.cp_hqd_pq_rptr_report_addr_lo)
        self.write("GC", "regCP_HQD_PQ_RPTR_REPORT_ADDR_HI", mqd.cp_hqd_pq_rptr_report_addr_hi)
        self.write("GC", "regCP_HQD_PQ_WPTR_POLL_ADDR", mqd.cp_hqd_pq_wptr_poll_addr_lo)
        self.write("GC", "regCP_HQD_PQ_WPTR_POLL_ADDR_HI", mqd.cp_hqd_pq_wptr_poll_addr_hi)
        self.write("GC", "regCP_MEC_DOORBELL_RANGE_LOWER", (DOORBELL_KIQ * 2) << 2)
        self.write("GC", "regCP_MEC_DOORBELL_RANGE_UPPER", (DOORBELL_USERQUEUE_END * 2) << 2)
        self.write("GC", "regCP_HQD_PQ_DOORBELL_CONTROL", mqd.cp_hqd_pq_doorbell_control)
        self.write("GC", "regCP_HQD_PQ_WPTR_LO", mqd.cp_hqd_pq_wptr_lo)
        self.write("GC", "regCP_HQD_PQ_WPTR_HI", mqd.cp_hqd_pq_wptr_hi)
        self.write("GC", "regCP_HQD_VMID", mqd.cp_hqd_vmid)
        self.write("GC", "regCP_HQD_PERSISTENT_STATE", mqd.cp_hqd_persistent_state)
        self.write("GC", "regCP_HQD_ACTIVE", mqd.cp_hqd_active)
        status = gc_11_0_0.get("regCP_PQ_STATUS")
        value = status.update(self.read("GC", "regCP_PQ_STATUS"), DOORBELL_ENABLE=1)
        self.write("GC", "regCP_PQ_STATUS", value)
        self.grbm_select(0, 0, 0)

    def bring_up(self, firmware: bool = True) -> None:
        self.route_doorbells()
        self.enable_interrupts()
        self.mec.firmware_loaded = firmware
        self.init_registers(self.build_mqd())
        self.compute_enable()

    # -- submission ----------------------------------------------------------------------------
    def submit(self, *words: int, ring: bool = True) -> None:
        for word in words:
            position = RING_OFFSET + (self.wptr * 4) % RING_BYTES
            self.put32(position, word)
            self.wptr += 1
        if ring:
            self.ring_doorbell()

    def ring_doorbell(self) -> None:
        """gfx_v11_0_ring_set_wptr_compute: WDOORBELL64(ring->doorbell_index, ring->wptr)."""
        self.gpu.bar_write(2, DOORBELL_INDEX * 4, self.wptr.to_bytes(8, "little"))

    def hqd(self) -> model.HardwareQueue:
        return self.mec.queue(ME, PIPE, QUEUE)

    def selected_read(self, name: str) -> int:
        self.grbm_select(ME, PIPE, QUEUE)
        value = self.read("GC", name)
        self.grbm_select(0, 0, 0)
        return value


def packet3(opcode: int, *body: int) -> tuple[int, ...]:
    return (nvd.PACKET3(opcode, len(body) - 1), *body)


def release_mem(address: int, value: int, write64: bool = True, interrupt: bool = True,
                context: int = 0, data_sel: int | None = None) -> tuple[int, ...]:
    """gfx_v11_0_ring_emit_fence."""
    if data_sel is None:
        data_sel = 2 if write64 else 1
    control = (nvd.PACKET3_RELEASE_MEM_DATA_SEL(data_sel)
               | nvd.PACKET3_RELEASE_MEM_INT_SEL(2 if interrupt else 0))
    return packet3(nvd.PACKET3_RELEASE_MEM, RELEASE_CONTROL, control, address & 0xFFFFFFFF, address >> 32,
                   value & 0xFFFFFFFF, value >> 32, context)


def wait_reg_mem(mem_space: int, operation: int, addr0: int, addr1: int, ref: int, mask: int,
                 function: int = 3) -> tuple[int, ...]:
    """gfx_v11_0_wait_reg_mem (engine ME)."""
    control = (nvd.WAIT_REG_MEM_MEM_SPACE(mem_space) | nvd.WAIT_REG_MEM_OPERATION(operation)
               | nvd.WAIT_REG_MEM_FUNCTION(function) | nvd.WAIT_REG_MEM_ENGINE(0))
    return packet3(nvd.PACKET3_WAIT_REG_MEM, control, addr0, addr1, ref, mask, 4)


def indirect_buffer(address: int, length: int, vmid: int = 0) -> tuple[int, ...]:
    """gfx_v11_0_ring_emit_ib_compute."""
    control = nvd.INDIRECT_BUFFER_VALID | length | (vmid << 24)
    return packet3(nvd.PACKET3_INDIRECT_BUFFER, address & 0xFFFFFFFC, address >> 32, control)


def set_sh_reg(name: str, *values: int) -> tuple[int, ...]:
    """PACKET3_SET_SH_REG with the register's offset from PACKET3_SET_SH_REG_START."""
    return packet3(nvd.PACKET3_SET_SH_REG, _sh_offset(name), *values)


_SH_CACHE: dict[str, int] = {}
_LAYOUT_GPU: list[Navi31GPU] = []


def _sh_offset(name: str) -> int:
    """The register's dword address at the Navi31's GC base, less PACKET3_SET_SH_REG_START."""
    if name not in _SH_CACHE:
        if not _LAYOUT_GPU:
            _LAYOUT_GPU.append(Navi31GPU(vram_size=64 * MIB))
        _SH_CACHE[name] = _LAYOUT_GPU[0].regfile.address("GC", name) // 4 - nvd.PACKET3_SET_SH_REG_START
    return _SH_CACHE[name]


@pytest.fixture
def compute() -> Compute:
    c = Compute()
    c.bring_up()
    return c


# -- queue map and doorbells --------------------------------------------------------------------------
def test_queue_mapped_from_the_mqd_runs_to_the_doorbell_wptr_and_reports_rptr(compute):
    assert compute.selected_read("regCP_HQD_ACTIVE") & 1
    assert compute.hqd().error is None
    compute.submit(*packet3(nvd.PACKET3_NOP, 0, 0), nvd.PACKET3(nvd.PACKET3_NOP, 0x3FFF))
    assert compute.vram32(RPTR_OFFSET) == compute.wptr == 4
    assert compute.selected_read("regCP_HQD_PQ_RPTR") == 4
    assert compute.hqd().packets == 2


def test_other_queues_banks_are_separate(compute):
    compute.grbm_select(ME, 1, 2)
    assert compute.read("GC", "regCP_HQD_PQ_BASE") == 0
    assert compute.read("GC", "regCP_HQD_ACTIVE") == 0
    compute.grbm_select(ME, PIPE, QUEUE)
    assert compute.read("GC", "regCP_HQD_PQ_BASE") == (compute.mc(RING_OFFSET) >> 8) & 0xFFFFFFFF


def test_the_queue_activated_before_the_mec_runs_starts_when_it_is_unhalted():
    c = Compute()
    c.route_doorbells()
    c.mec.firmware_loaded = True
    c.init_registers(c.build_mqd())  # gfx_v11_0_kiq_resume comes before gfx_v11_0_kcq_resume's enable
    assert c.hqd().active
    c.submit(*release_mem(c.mc(FENCE_OFFSET), 5, interrupt=False))
    assert c.vram64(FENCE_OFFSET) == 0
    c.compute_enable()
    assert c.vram64(FENCE_OFFSET) == 5


def test_nothing_runs_without_mec_firmware():
    c = Compute()
    c.bring_up(firmware=False)
    c.submit(*release_mem(c.mc(FENCE_OFFSET), 5, interrupt=False))
    assert c.vram64(FENCE_OFFSET) == 0
    c.mec.firmware_loaded = True
    c.mec.kick()
    assert c.vram64(FENCE_OFFSET) == 5


def test_firmware_comes_from_the_psp_rs64_mec_image_and_stacks():
    from autogen.amd import psp_gfx_if as gfx
    c = Compute()
    assert c.mec.firmware is None
    needed = (gfx.GFX_FW_TYPE_RS64_MEC, gfx.GFX_FW_TYPE_RS64_MEC_P0_STACK, gfx.GFX_FW_TYPE_RS64_MEC_P1_STACK,
              gfx.GFX_FW_TYPE_RS64_MEC_P2_STACK)
    for fw_type in needed:
        c.gpu.psp.loaded[fw_type] = object()
    assert c.mec.firmware is None  # the P3 stack is still missing
    c.gpu.psp.loaded[gfx.GFX_FW_TYPE_RS64_MEC_P3_STACK] = object()
    assert c.mec.firmware == "rs64"


def test_halted_or_reset_pipe_runs_nothing(compute):
    register = gc_11_0_0.get("regCP_MEC_RS64_CNTL")
    compute.write("GC", "regCP_MEC_RS64_CNTL", register.update(compute.read("GC", "regCP_MEC_RS64_CNTL"),
                                                                 MEC_PIPE0_RESET=1))
    compute.submit(*release_mem(compute.mc(FENCE_OFFSET), 9, interrupt=False))
    assert compute.vram64(FENCE_OFFSET) == 0
    compute.compute_enable()
    assert compute.vram64(FENCE_OFFSET) == 9


def test_f32_firmware_runs_under_cp_mec_cntl():
    c = Compute()
    c.route_doorbells()
    c.mec.firmware_kind = "f32"
    c.init_registers(c.build_mqd())
    c.submit(*release_mem(c.mc(FENCE_OFFSET), 3, interrupt=False))
    assert c.vram64(FENCE_OFFSET) == 0
    register = gc_11_0_0.get("regCP_MEC_CNTL")
    c.write("GC", "regCP_MEC_CNTL", register.update(c.read("GC", "regCP_MEC_CNTL"), MEC_ME1_HALT=0))
    assert c.vram64(FENCE_OFFSET) == 3


@pytest.mark.parametrize("missing", ["aperture", "gc_port", "pq_status"])
def test_doorbells_need_the_nbio_route_and_cp_pq_status(missing):
    c = Compute()
    c.bring_up()
    if missing == "aperture":
        c.write("NBIO", "regRCC_DEV0_EPF0_RCC_DOORBELL_APER_EN", 0)
    elif missing == "gc_port":
        c.write("NBIO", "regS2A_DOORBELL_ENTRY_0_CTRL", 0)
    else:
        c.write("GC", "regCP_PQ_STATUS", 0)
    c.submit(*release_mem(c.mc(FENCE_OFFSET), 1, interrupt=False))
    assert c.vram64(FENCE_OFFSET) == 0


def test_a_32_bit_doorbell_write_moves_the_low_half(compute):
    compute.submit(*release_mem(compute.mc(FENCE_OFFSET), 0x77, interrupt=False), ring=False)
    compute.gpu.bar_write(2, DOORBELL_INDEX * 4, compute.wptr.to_bytes(4, "little"))
    assert compute.vram64(FENCE_OFFSET) == 0x77


def test_packets_wrap_around_the_ring_end(compute):
    compute.wptr = RING_BYTES // 4 - 3  # the RELEASE_MEM straddles the end of the ring
    compute.grbm_select(ME, PIPE, QUEUE)
    compute.write("GC", "regCP_HQD_PQ_RPTR", compute.wptr)
    compute.grbm_select(0, 0, 0)
    compute.submit(*release_mem(compute.mc(FENCE_OFFSET), 0x1234, interrupt=False))
    assert compute.vram64(FENCE_OFFSET) == 0x1234
    assert compute.vram32(RPTR_OFFSET) == compute.wptr % (RING_BYTES // 4)


def test_a_half_written_packet_waits_for_the_rest(compute):
    words = release_mem(compute.mc(FENCE_OFFSET), 0x55, interrupt=False)
    compute.submit(*words[:4])
    assert compute.vram64(FENCE_OFFSET) == 0 and compute.hqd().rptr == 0
    compute.submit(*words[4:])
    assert compute.vram64(FENCE_OFFSET) == 0x55


# -- activation checks --------------------------------------------------------------------------------
@pytest.mark.parametrize("breakage, why", [
    ("doorbell_outside", "outside the MEC range"),
    ("doorbell_off", "DOORBELL_EN"),
    ("no_eop", "CP_HQD_EOP_BASE_ADDR"),
    ("big_eop", "EOP_SIZE"),
    ("huge_queue", "QUEUE_SIZE"),
    ("no_pq_base", "CP_HQD_PQ_BASE"),
    ("no_rptr_report", "RPTR_REPORT_ADDR"),
])
def test_activation_with_a_bad_setup_is_refused(breakage, why):
    c = Compute()
    c.route_doorbells()
    c.mec.firmware_loaded = True
    mqd = c.build_mqd()
    doorbell_control = gc_11_0_0.get("regCP_HQD_PQ_DOORBELL_CONTROL")
    if breakage == "doorbell_outside":
        mqd.cp_hqd_pq_doorbell_control = doorbell_control.encode(DOORBELL_OFFSET=0x200, DOORBELL_EN=1)
    elif breakage == "doorbell_off":
        mqd.cp_hqd_pq_doorbell_control = 0
    elif breakage == "no_eop":
        mqd.cp_hqd_eop_base_addr_lo = mqd.cp_hqd_eop_base_addr_hi = 0
    elif breakage == "big_eop":
        mqd.cp_hqd_eop_control = gc_11_0_0.get("regCP_HQD_EOP_CONTROL").encode(EOP_SIZE=13)
    elif breakage == "huge_queue":
        mqd.cp_hqd_pq_control = gc_11_0_0.get("regCP_HQD_PQ_CONTROL").encode(QUEUE_SIZE=32)
    elif breakage == "no_pq_base":
        mqd.cp_hqd_pq_base_lo = mqd.cp_hqd_pq_base_hi = 0
    else:
        mqd.cp_hqd_pq_rptr_report_addr_lo = mqd.cp_hqd_pq_rptr_report_addr_hi = 0
    c.init_registers(mqd)
    assert not c.selected_read("regCP_HQD_ACTIVE") & 1
    assert why in c.hqd().error


def test_hqd_loaded_from_the_mqd_dwords_like_amdkfd_does():
    """amdgpu_amdkfd_gfx_v11.c hqd_load_v11: the MQD dwords from cp_mqd_base_addr_lo are written to
    CP_MQD_BASE_ADDR .. CP_HQD_PQ_WPTR_HI in order, then DOORBELL_EN and ACTIVE."""
    c = Compute()
    c.route_doorbells()
    c.mec.firmware_loaded = True
    c.compute_enable()
    status = gc_11_0_0.get("regCP_PQ_STATUS")
    c.write("GC", "regCP_PQ_STATUS", status.encode(DOORBELL_ENABLE=1))
    mqd = c.build_mqd()
    mqd.cp_hqd_active = 0
    image = bytes(mqd.buffer)
    first = gc_11_0_0.get("regCP_MQD_BASE_ADDR").offset
    last = gc_11_0_0.get("regCP_HQD_PQ_WPTR_HI").offset
    start = v11_compute_mqd.offset_of("cp_mqd_base_addr_lo")
    c.grbm_select(ME, PIPE, QUEUE)
    base = c.gpu.regfile.address("GC", "regCP_MQD_BASE_ADDR")
    for index in range(last - first + 1):
        word = int.from_bytes(image[start + index * 4:start + index * 4 + 4], "little")
        c.gpu.regfile.write32(base + index * 4, word)
    assert not c.read("GC", "regCP_HQD_ACTIVE") & 1
    c.write("GC", "regCP_HQD_ACTIVE", 1)
    c.grbm_select(0, 0, 0)
    assert c.hqd().active
    c.submit(*release_mem(c.mc(FENCE_OFFSET), 11, interrupt=False))
    assert c.vram64(FENCE_OFFSET) == 11


# -- RELEASE_MEM ---------------------------------------------------------------------------------------
def test_release_mem_writes_the_fence_and_posts_the_eop_interrupt(compute):
    compute.submit(*release_mem(compute.mc(FENCE_OFFSET), 0x1_0000_0002, context=0x42))
    assert compute.vram64(FENCE_OFFSET) == 0x1_0000_0002
    ring_id = (QUEUE << 4) | (ME << 2) | PIPE
    eop = srcid.GFX_11_0_0__SRCID__CP_EOP_INTERRUPT
    assert compute.interrupts.posted == [(clientid.SOC21_IH_CLIENTID_GRBM_CP, eop, (0x42, 0, 0, 0), ring_id)]


def test_release_mem_32_bit_keeps_the_high_dword(compute):
    compute.gpu.vram[FENCE_OFFSET:FENCE_OFFSET + 8] = (0xAAAAAAAA_BBBBBBBB).to_bytes(8, "little")
    compute.submit(*release_mem(compute.mc(FENCE_OFFSET), 0x1_0000_0007, write64=False, interrupt=False))
    assert compute.vram64(FENCE_OFFSET) == 0xAAAAAAAA_00000007
    assert compute.interrupts.posted == []


def test_release_mem_interrupt_needs_time_stamp_int_enable():
    c = Compute()
    c.bring_up()
    c.write("GC", "regCP_ME1_PIPE0_INT_CNTL", 0)
    c.submit(*release_mem(c.mc(FENCE_OFFSET), 1))
    assert c.vram64(FENCE_OFFSET) == 1
    assert c.interrupts.posted == []
    status = c.read("GC", "regCP_ME1_PIPE0_INT_STATUS")
    assert status & model.INT_TIME_STAMP_STATUS.mask


def test_release_mem_gpu_clock(compute):
    compute.submit(*release_mem(compute.mc(FENCE_OFFSET), 0, interrupt=False, data_sel=3))
    first = compute.vram64(FENCE_OFFSET)
    compute.submit(*release_mem(compute.mc(FENCE_OFFSET), 0, interrupt=False, data_sel=3))
    assert 0 < first <= compute.vram64(FENCE_OFFSET)


def test_release_mem_misaligned_64_bit_address_stops_the_queue(compute):
    compute.submit(*release_mem(compute.mc(FENCE_OFFSET) + 4, 1, interrupt=False))
    assert "not 8-byte aligned" in compute.hqd().error


# -- WAIT_REG_MEM -------------------------------------------------------------------------------------
def test_wait_reg_mem_on_memory_holds_the_queue_until_the_value_arrives(compute):
    flag = compute.mc(FENCE_OFFSET + 64)
    compute.submit(*wait_reg_mem(1, 0, flag & 0xFFFFFFFF, flag >> 32, 7, 0xFFFFFFFF),
                   *release_mem(compute.mc(FENCE_OFFSET), 0x99, interrupt=False))
    assert compute.vram64(FENCE_OFFSET) == 0
    assert compute.hqd().rptr == 0  # stopped on the WAIT_REG_MEM
    compute.put32(FENCE_OFFSET + 64, 7)
    compute.mec.kick()
    assert compute.vram64(FENCE_OFFSET) == 0x99


@pytest.mark.parametrize("function, value, passes", [
    (1, 3, True), (1, 7, False), (4, 7, False), (5, 7, True), (6, 7, False), (0, 0, True), (2, 7, True)])
def test_wait_reg_mem_compare_functions(compute, function, value, passes):
    flag = compute.mc(FENCE_OFFSET + 64)
    compute.put32(FENCE_OFFSET + 64, value)
    compute.submit(*wait_reg_mem(1, 0, flag & 0xFFFFFFFF, flag >> 32, 7, 0xFFFFFFFF, function=function),
                   *release_mem(compute.mc(FENCE_OFFSET), 1, interrupt=False))
    assert (compute.vram64(FENCE_OFFSET) == 1) is passes


def test_wait_reg_mem_write_wait_on_registers_is_the_hdp_flush(compute):
    """gfx_v11_0_ring_emit_hdp_flush: write GPU_HDP_FLUSH_REQ, wait on GPU_HDP_FLUSH_DONE."""
    regfile = compute.gpu.regfile
    request = regfile.address("NBIO", "regBIF_BX_PF0_GPU_HDP_FLUSH_REQ") // 4
    done = regfile.address("NBIO", "regBIF_BX_PF0_GPU_HDP_FLUSH_DONE") // 4
    mask = 1 << 2  # nbio_v4_3 hdp_flush_reg ref_and_mask_cp2 << pipe 0
    flushes = compute.gpu.hdp_flushes
    compute.submit(*wait_reg_mem(0, 1, request, done, mask, mask),
                   *release_mem(compute.mc(FENCE_OFFSET), 4, interrupt=False))
    assert compute.gpu.hdp_flushes == flushes + 1
    assert compute.vram64(FENCE_OFFSET) == 4


def test_wait_reg_mem_on_a_register(compute):
    scratch = compute.gpu.regfile.address("GC", "regSCRATCH_REG0")
    compute.submit(*wait_reg_mem(0, 0, scratch // 4, 0, 0xCAFE, 0xFFFF),
                   *release_mem(compute.mc(FENCE_OFFSET), 2, interrupt=False))
    assert compute.vram64(FENCE_OFFSET) == 0
    compute.write("GC", "regSCRATCH_REG0", 0x1CAFE)
    compute.mec.kick()
    assert compute.vram64(FENCE_OFFSET) == 2


# -- INDIRECT_BUFFER, SET_SH_REG, COPY_DATA, EVENT_WRITE, ACQUIRE_MEM --------------------------------
def test_indirect_buffer_runs_its_packets_then_the_ring_goes_on(compute):
    ib = (*set_sh_reg("regCOMPUTE_USER_DATA_0", 0x11, 0x22),
          *release_mem(compute.mc(FENCE_OFFSET), 0xAB, interrupt=False))
    for index, word in enumerate(ib):
        compute.put32(IB_OFFSET + index * 4, word)
    compute.submit(*indirect_buffer(compute.mc(IB_OFFSET), len(ib)),
                   *release_mem(compute.mc(FENCE_OFFSET + 8), 0xCD, interrupt=False))
    assert compute.gpu.regfile.get("GC", "regCOMPUTE_USER_DATA_1") == 0x22
    assert compute.vram64(FENCE_OFFSET) == 0xAB
    assert compute.vram64(FENCE_OFFSET + 8) == 0xCD
    assert compute.vram32(RPTR_OFFSET) == compute.wptr


def test_a_wait_inside_an_ib_resumes_in_the_ib(compute):
    flag = compute.mc(FENCE_OFFSET + 64)
    ib = (*wait_reg_mem(1, 0, flag & 0xFFFFFFFF, flag >> 32, 1, 1),
          *release_mem(compute.mc(FENCE_OFFSET), 0xEE, interrupt=False))
    for index, word in enumerate(ib):
        compute.put32(IB_OFFSET + index * 4, word)
    compute.submit(*indirect_buffer(compute.mc(IB_OFFSET), len(ib)))
    assert compute.vram64(FENCE_OFFSET) == 0
    compute.put32(FENCE_OFFSET + 64, 1)
    compute.mec.kick()
    assert compute.vram64(FENCE_OFFSET) == 0xEE
    assert compute.hqd().rptr == compute.wptr


def test_indirect_buffer_without_valid_bit_or_past_its_end_stops_the_queue(compute):
    words = list(indirect_buffer(compute.mc(IB_OFFSET), 4))
    words[3] &= ~nvd.INDIRECT_BUFFER_VALID
    compute.submit(*words)
    assert "INDIRECT_BUFFER_VALID" in compute.hqd().error


def test_packet_running_past_the_ib_end_stops_the_queue(compute):
    ib = release_mem(compute.mc(FENCE_OFFSET), 1, interrupt=False)
    for index, word in enumerate(ib):
        compute.put32(IB_OFFSET + index * 4, word)
    compute.submit(*indirect_buffer(compute.mc(IB_OFFSET), len(ib) - 2))
    assert "the IB has 6" in compute.hqd().error


def test_set_sh_reg_outside_the_sh_window_is_refused(compute):
    past_the_end = nvd.PACKET3_SET_SH_REG_END - nvd.PACKET3_SET_SH_REG_START
    compute.submit(*packet3(nvd.PACKET3_SET_SH_REG, past_the_end, 1))
    assert "SET_SH_REG: registers" in compute.hqd().error and "outside its window" in compute.hqd().error


def test_copy_data_register_to_memory_like_emit_rreg(compute):
    compute.write("GC", "regSCRATCH_REG0", 0x5151)
    scratch = compute.gpu.regfile.address("GC", "regSCRATCH_REG0") // 4
    target = compute.mc(FENCE_OFFSET + 128)
    compute.submit(*packet3(nvd.PACKET3_COPY_DATA, 0 | (5 << 8) | (1 << 20), scratch, 0,
                            target & 0xFFFFFFFF, target >> 32))
    assert compute.vram32(FENCE_OFFSET + 128) == 0x5151


def test_copy_data_memory_to_register(compute):
    compute.put32(FENCE_OFFSET + 256, 0x6262)
    source = compute.mc(FENCE_OFFSET + 256)
    scratch = compute.gpu.regfile.address("GC", "regSCRATCH_REG1") // 4
    compute.submit(*packet3(nvd.PACKET3_COPY_DATA, 2, source & 0xFFFFFFFF, source >> 32, scratch, 0))
    assert compute.read("GC", "regSCRATCH_REG1") == 0x6262


def test_acquire_mem_and_event_write(compute):
    gcr = (nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GL2_INV(1) | nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GL2_WB(1)
           | nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GLI_INV(1))
    compute.submit(*packet3(nvd.PACKET3_ACQUIRE_MEM, 0, 0xFFFFFFFF, 0xFFFFFF, 0, 0, 0xA, gcr),
                   *packet3(nvd.PACKET3_EVENT_WRITE, nvd.EVENT_TYPE(7) | nvd.EVENT_INDEX(4)))
    assert compute.mec.acquires == 1
    assert compute.hqd().events == [(7, 4)]
    assert compute.hqd().error is None


def test_acquire_mem_with_reserved_bits_stops_the_queue(compute):
    compute.submit(*packet3(nvd.PACKET3_ACQUIRE_MEM, 0, 0xFFFFFFFF, 0xFFFFFF, 0, 0, 0xA, 1 << 19))
    assert "GCR_CNTL" in compute.hqd().error


# -- DISPATCH_DIRECT ----------------------------------------------------------------------------------
def dispatch_state(program: int, threads=(64, 1, 1), rsrc1: int = 0, rsrc2: int = 0) -> tuple[int, ...]:
    rsrc2 = rsrc2 or gc_11_0_0.get("regCOMPUTE_PGM_RSRC2").encode(USER_SGPR=2, TGID_X_EN=1)
    return (*set_sh_reg("regCOMPUTE_PGM_LO", (program >> 8) & 0xFFFFFFFF, (program >> 40) & 0xFF),
            *set_sh_reg("regCOMPUTE_PGM_RSRC1", rsrc1, rsrc2),
            *set_sh_reg("regCOMPUTE_NUM_THREAD_X", *threads),
            *set_sh_reg("regCOMPUTE_USER_DATA_0", 0xAAAA, 0xBBBB))


# RDNA3 ISA guide, SOPP encoding (0b101111111 in bits 31:23) with S_ENDPGM's opcode in bits 22:16
S_ENDPGM = 0xBF800000 | next(op for op, (name, _) in SOPP.items() if name == "s_endpgm") << 16
# llvm-mc-16 -mcpu=gfx1100 encodings: s_branch 65535 (to itself); global_store_b32 v[0:1], v0, off
S_BRANCH_SELF = 0xBFA0FFFF
GLOBAL_STORE_V0_AT_V01 = (0xDC6A0000, 0x007C0000)


def dispatch_direct(x: int, y: int = 1, z: int = 1, wave32: bool = True) -> tuple[int, ...]:
    initiator = gc_11_0_0.get("regCOMPUTE_DISPATCH_INITIATOR").encode(
        COMPUTE_SHADER_EN=1, FORCE_START_AT_000=1, CS_W32_EN=int(wave32))
    return packet3(nvd.PACKET3_DISPATCH_DIRECT, x, y, z, initiator)


def test_dispatch_direct_records_the_dispatch_with_its_state(compute):
    program = compute.mc(PROGRAM_OFFSET)
    compute.put32(PROGRAM_OFFSET, S_ENDPGM)  # the grid runs: each wave ends at once
    compute.submit(*dispatch_state(program), *dispatch_direct(4, 2, 1),
                   *release_mem(compute.mc(FENCE_OFFSET), 1, interrupt=False))
    assert compute.hqd().error is None
    (dispatch,) = compute.mec.dispatches
    assert dispatch.dimensions == (4, 2, 1)
    assert dispatch.program_address == program
    assert dispatch.threads == (64, 1, 1)
    assert dispatch.user_data == (0xAAAA, 0xBBBB)
    assert (dispatch.me, dispatch.pipe, dispatch.queue, dispatch.vmid) == (ME, PIPE, QUEUE, 0)
    assert compute.vram64(FENCE_OFFSET) == 1


def test_a_dispatch_that_never_ends_leaves_the_queue_hung_until_a_dequeue(compute):
    program = compute.mc(PROGRAM_OFFSET)
    compute.put32(PROGRAM_OFFSET, S_BRANCH_SELF)
    compute.mec.instruction_budget = 200
    compute.submit(*dispatch_state(program), *dispatch_direct(1),
                   *release_mem(compute.mc(FENCE_OFFSET), 1, interrupt=False))
    hqd = compute.hqd()
    assert hqd.error is None and "200 wave instructions" in hqd.hung
    assert compute.vram64(FENCE_OFFSET) == 0  # the fence after the dispatch never comes
    compute.grbm_select(ME, PIPE, QUEUE)
    assert compute.read("GC", "regCP_HQD_ACTIVE") & 1
    compute.write("GC", "regCP_HQD_DEQUEUE_REQUEST", 1)
    assert not compute.read("GC", "regCP_HQD_ACTIVE") & 1
    assert hqd.hung is None


def test_a_wave_fault_stops_the_queue_naming_the_address(compute):
    program = compute.mc(PROGRAM_OFFSET)
    compute.put32(PROGRAM_OFFSET, GLOBAL_STORE_V0_AT_V01[0])
    compute.put32(PROGRAM_OFFSET + 4, GLOBAL_STORE_V0_AT_V01[1])
    compute.submit(*dispatch_state(program), *dispatch_direct(1),
                   *release_mem(compute.mc(FENCE_OFFSET), 1, interrupt=False))
    # lane 0 stores at v[0:1] = 0 (work-item id 0, v1 zero): below the FB aperture, unmapped
    assert "faulted on a write of 0x0" in compute.hqd().error
    assert compute.gpu.gmc.faults[-1].address == 0
    assert compute.vram64(FENCE_OFFSET) == 0


@pytest.mark.parametrize("problem", ["no_program", "zero_dimension", "zero_threads", "too_many_threads",
                                     "vgprs", "user_sgprs", "lds", "shader_off"])
def test_dispatch_direct_with_bad_state_stops_the_queue_with_the_bad_op_interrupt(compute, problem):
    program = compute.mc(PROGRAM_OFFSET)
    state = dict(program=program)
    dims = (1, 1, 1)
    if problem == "no_program":
        state["program"] = 0
    elif problem == "zero_dimension":
        dims = (1, 0, 1)
    elif problem == "zero_threads":
        state["threads"] = (0, 1, 1)
    elif problem == "too_many_threads":
        state["threads"] = (64, 32, 1)
    elif problem == "vgprs":
        state["rsrc1"] = gc_11_0_0.get("regCOMPUTE_PGM_RSRC1").encode(VGPRS=63)
    elif problem == "user_sgprs":
        state["rsrc2"] = gc_11_0_0.get("regCOMPUTE_PGM_RSRC2").encode(USER_SGPR=17)
    elif problem == "lds":
        state["rsrc2"] = gc_11_0_0.get("regCOMPUTE_PGM_RSRC2").encode(LDS_SIZE=129)
    words = list(dispatch_direct(*dims))
    if problem == "shader_off":
        words[4] = 0
    fence = release_mem(compute.mc(FENCE_OFFSET), 1, interrupt=False)
    compute.submit(*dispatch_state(**state), *words, *fence)
    assert compute.mec.dispatches == []
    assert "DISPATCH_DIRECT" in compute.hqd().error
    assert compute.vram64(FENCE_OFFSET) == 0
    assert compute.interrupts.posted[-1][1] == srcid.GFX_11_0_0__SRCID__CP_BAD_OPCODE_ERROR


# -- bad packets --------------------------------------------------------------------------------------
def test_unknown_opcode_stops_the_queue_and_raises_the_bad_opcode_interrupt(compute):
    compute.submit(*packet3(nvd.PACKET3_NOP, 0), *packet3(0xEE, 1, 2),
                   *release_mem(compute.mc(FENCE_OFFSET), 1, interrupt=False))
    hqd = compute.hqd()
    assert "opcode 0xee" in hqd.error
    assert hqd.rptr == 2  # stopped on the bad packet
    assert compute.vram64(FENCE_OFFSET) == 0
    ring_id = (QUEUE << 4) | (ME << 2) | PIPE
    bad_opcode = srcid.GFX_11_0_0__SRCID__CP_BAD_OPCODE_ERROR
    expected = (clientid.SOC21_IH_CLIENTID_GRBM_CP, bad_opcode, (0, 0, 0, 0), ring_id)
    assert compute.interrupts.posted == [expected]
    assert compute.read("GC", "regCP_ME1_PIPE0_INT_STATUS") & model.INT_OPCODE_ERROR_STATUS.mask
    compute.submit(*release_mem(compute.mc(FENCE_OFFSET), 2, interrupt=False))
    assert compute.vram64(FENCE_OFFSET) == 0  # a stopped queue stays stopped


@pytest.mark.parametrize("words", [
    packet3(nvd.PACKET3_RELEASE_MEM, 0, 0, 0, 0, 0, 0),  # count 5: RELEASE_MEM has 7 body dwords
    packet3(nvd.PACKET3_WAIT_REG_MEM, 0, 0, 0, 0),
    packet3(nvd.PACKET3_DISPATCH_DIRECT, 1, 1),
    (0x80000000,),  # a type-2 packet
    (0x00001234,),  # a type-0 packet
])
def test_bad_count_or_packet_type_stops_the_queue(compute, words):
    compute.submit(*words)
    assert compute.hqd().error is not None
    assert compute.interrupts.posted[-1][1] == srcid.GFX_11_0_0__SRCID__CP_BAD_OPCODE_ERROR


def test_bad_opcode_interrupt_needs_opcode_error_int_enable():
    c = Compute()
    c.bring_up()
    c.write("GC", "regCP_ME1_PIPE0_INT_CNTL", 0)
    c.submit(*packet3(0xEE, 0))
    assert c.hqd().error is not None
    assert c.interrupts.posted == []


def test_a_fault_on_the_ring_sets_the_hqd_error(compute):
    compute.write("GC", "regGCMC_VM_SYSTEM_APERTURE_HIGH_ADDR", 0)
    compute.write("GC", "regGCMC_VM_SYSTEM_APERTURE_LOW_ADDR", 0x3FFFFFFF)
    compute.submit(*packet3(nvd.PACKET3_NOP, 0))
    assert compute.hqd().error is not None
    error = compute.selected_read("regCP_HQD_ERROR")
    assert error & gc_11_0_0.get("regCP_HQD_ERROR").field("PQ_UTCL1_ERROR").mask


# -- dequeue, stall, reset ----------------------------------------------------------------------------
def test_dequeue_request_clears_active_and_keeps_the_pointers(compute):
    """amdgpu_amdkfd_gfx_v11.c hqd_destroy_v11: DEQUEUE_REQUEST, then poll CP_HQD_ACTIVE."""
    compute.submit(*release_mem(compute.mc(FENCE_OFFSET), 1, interrupt=False))
    compute.grbm_select(ME, PIPE, QUEUE)
    compute.write("GC", "regCP_HQD_DEQUEUE_REQUEST", 1)
    assert not compute.read("GC", "regCP_HQD_ACTIVE") & 1
    assert compute.read("GC", "regCP_HQD_PQ_RPTR") == compute.wptr == 8
    assert compute.read("GC", "regCP_HQD_PQ_WPTR_LO") == 8
    compute.grbm_select(0, 0, 0)
    compute.submit(*release_mem(compute.mc(FENCE_OFFSET), 2, interrupt=False))
    assert compute.vram64(FENCE_OFFSET) == 1  # an inactive queue takes no doorbells


def test_dequeue_abandons_a_pending_wait(compute):
    flag = compute.mc(FENCE_OFFSET + 64)
    compute.submit(*wait_reg_mem(1, 0, flag & 0xFFFFFFFF, flag >> 32, 1, 1))
    compute.grbm_select(ME, PIPE, QUEUE)
    compute.write("GC", "regCP_HQD_DEQUEUE_REQUEST", 1)
    assert not compute.read("GC", "regCP_HQD_ACTIVE") & 1
    assert compute.read("GC", "regCP_HQD_PQ_RPTR") == 0


def test_a_stalled_mec_consumes_nothing_and_does_not_finish_a_dequeue(compute):
    compute.mec.stalled = True
    compute.submit(*release_mem(compute.mc(FENCE_OFFSET), 1, interrupt=False))
    assert compute.vram64(FENCE_OFFSET) == 0
    compute.grbm_select(ME, PIPE, QUEUE)
    compute.write("GC", "regCP_HQD_DEQUEUE_REQUEST", 1)
    assert compute.read("GC", "regCP_HQD_ACTIVE") & 1
    compute.mec.stalled = False
    compute.mec.kick()
    assert not compute.read("GC", "regCP_HQD_ACTIVE") & 1


def test_reinit_of_an_active_queue_goes_through_dequeue(compute):
    compute.submit(*packet3(nvd.PACKET3_NOP, 0))
    compute.init_registers(compute.build_mqd())  # gfx_v11_0_kiq_init_register's "disable the queue" path
    assert compute.hqd().active
    assert compute.hqd().rptr == 0
    compute.wptr = 0
    compute.submit(*release_mem(compute.mc(FENCE_OFFSET), 3, interrupt=False))
    assert compute.vram64(FENCE_OFFSET) == 3


@pytest.mark.parametrize("kind", ["mode1", "pci"])
def test_reset_clears_queues_and_halts_the_mec(compute, kind):
    if kind == "mode1":
        compute.gpu.mode1_reset()
    else:
        compute.gpu.reset_device_state()
    assert not compute.selected_read("regCP_HQD_ACTIVE") & 1
    assert compute.selected_read("regCP_HQD_PQ_BASE") == 0
    assert compute.read("GC", "regCP_MEC_RS64_CNTL") & model.RS64_HALT.mask
    assert not compute.mec.firmware_loaded
    compute.submit(*release_mem(compute.mc(FENCE_OFFSET), 1, interrupt=False))
    assert compute.vram64(FENCE_OFFSET) == 0


def test_queues_of_other_mes_are_refused():
    c = Compute()
    c.route_doorbells()
    c.mec.firmware_loaded = True
    mqd = c.build_mqd()
    c.init_registers(mqd)
    c.grbm_select(2, 0, 0)
    c.write("GC", "regCP_HQD_ACTIVE", 1)
    assert not c.read("GC", "regCP_HQD_ACTIVE") & 1
    assert "no compute queues" in c.mec.queue(2, 0, 0).error


class Clock:
    """Stands in for the Machine's simulated time: keeps what the model schedules."""

    def __init__(self) -> None:
        self.actions: list = []

    def schedule(self, delay_s: float, action) -> None:
        self.actions.append(action)

    def run(self) -> None:
        actions, self.actions = self.actions, []
        for action in actions:
            action()


def test_an_unmet_wait_is_rechecked_in_simulated_time(compute):
    clock = Clock()
    compute.gpu.machine = clock
    flag = compute.mc(FENCE_OFFSET + 64)
    compute.submit(*wait_reg_mem(1, 0, flag & 0xFFFFFFFF, flag >> 32, 3, 0xFF),
                   *release_mem(compute.mc(FENCE_OFFSET), 0x42, interrupt=False))
    assert len(clock.actions) == 1
    clock.run()  # still unmet: the CP polls again
    assert len(clock.actions) == 1 and compute.vram64(FENCE_OFFSET) == 0
    compute.put32(FENCE_OFFSET + 64, 3)
    clock.run()
    assert compute.vram64(FENCE_OFFSET) == 0x42
    assert clock.actions == []


def test_ring_test_set_uconfig_reg_writes_scratch_reg0(compute):
    """gfx_v11_0_ring_test_ring on a compute ring: SET_UCONFIG_REG of SCRATCH_REG0."""
    compute.write("GC", "regSCRATCH_REG0", 0xCAFEDEAD)
    scratch = compute.gpu.regfile.address("GC", "regSCRATCH_REG0") // 4
    compute.submit(*packet3(nvd.PACKET3_SET_UCONFIG_REG, scratch - nvd.PACKET3_SET_UCONFIG_REG_START,
                            0xDEADBEEF))
    assert compute.read("GC", "regSCRATCH_REG0") == 0xDEADBEEF


def test_ib_test_write_data_to_memory(compute):
    """gfx_v11_0_ring_test_ib: WRITE_DATA (DST_SEL 5, WR_CONFIRM) in an IB, then a fence."""
    target = compute.mc(FENCE_OFFSET + 512)
    compute.put32(FENCE_OFFSET + 512, 0xCAFEDEAD)
    ib = packet3(nvd.PACKET3_WRITE_DATA, nvd.WRITE_DATA_DST_SEL(5) | nvd.WR_CONFIRM,
                 target & 0xFFFFFFFF, target >> 32, 0xDEADBEEF)
    for index, word in enumerate(ib):
        compute.put32(IB_OFFSET + index * 4, word)
    compute.submit(*indirect_buffer(compute.mc(IB_OFFSET), len(ib)),
                   *release_mem(compute.mc(FENCE_OFFSET), 1))
    assert compute.vram32(FENCE_OFFSET + 512) == 0xDEADBEEF
    assert compute.vram64(FENCE_OFFSET) == 1


def test_write_data_to_a_register_like_emit_wreg(compute):
    scratch = compute.gpu.regfile.address("GC", "regSCRATCH_REG2") // 4
    compute.submit(*packet3(nvd.PACKET3_WRITE_DATA, nvd.WR_CONFIRM, scratch, 0, 0x1357))
    assert compute.read("GC", "regSCRATCH_REG2") == 0x1357


def test_write_data_misaligned_or_empty_stops_the_queue(compute):
    target = compute.mc(FENCE_OFFSET) + 2
    compute.submit(*packet3(nvd.PACKET3_WRITE_DATA, nvd.WRITE_DATA_DST_SEL(5), target & 0xFFFFFFFF, 0, 1))
    assert "not dword aligned" in compute.hqd().error
