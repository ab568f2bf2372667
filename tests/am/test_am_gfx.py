"""The AM GC 11.0.0 block: PM4 packet builders against the generated nvd definitions, the compute
MQD against gfx_v11_0_compute_mqd_init, and the block's bring-up against the mock Navi31."""
from __future__ import annotations

import importlib.util
import time

import pytest

import hal
from autogen.amd import navi10_enum as enums
from autogen.amd import nvd
from autogen.amd.regs import gc_11_0_0 as gc
from autogen.amd.v11_structs import v11_compute_mqd
from drivers.am import gfx
from drivers.am.device import AMConfig, AMDevice
from drivers.am.gfx import GCv11_0
from hal.errors import DeviceLost, DeviceTimeout, InvalidArgument
from mockgpu import GPU_BDF, Machine

GPU = f"pci:{GPU_BDF}"
TIMEOUT_S = 0.2
# amdgpu_discovery_set_ip_blocks: GC comes after SMU and before SDMA (SDMA v6 rings use the GFX hub)
BEFORE_GC = ("NBIO", "HDP", "GMC", "IH", "PSP", "SMU")


def opcode(header: int) -> int:
    return nvd.CP_PACKET3_GET_OPCODE(header)


def count(header: int) -> int:
    return nvd.CP_PACKET_GET_COUNT(header)


def check_type3(words: list[int], op: int) -> None:
    """A type-3 header whose count is the body length minus one, all words 32-bit."""
    assert nvd.CP_PACKET_GET_TYPE(words[0]) == nvd.PACKET_TYPE3
    assert opcode(words[0]) == op
    assert count(words[0]) == len(words) - 2
    assert all(0 <= word <= 0xFFFFFFFF for word in words)


# -- packet builders ------------------------------------------------------------------------------------
def test_release_mem_fence_matches_gfx_v11_0_ring_emit_fence():
    words = gfx.release_mem_packet(0x1_2345_6780, 0x1234_5678_9ABC, bits64=True, interrupt=True)
    check_type3(words, nvd.PACKET3_RELEASE_MEM)
    assert len(words) == 8  # PACKET3(RELEASE_MEM, 6) and its seven dwords
    event = words[1]
    assert event & 0x3F == enums.CACHE_FLUSH_AND_INV_TS_EVENT == 20
    assert (event >> 8) & 0xF == 5  # EVENT_INDEX(5)
    for bit in (nvd.PACKET3_RELEASE_MEM_GCR_SEQ, nvd.PACKET3_RELEASE_MEM_GCR_GL2_WB,
                nvd.PACKET3_RELEASE_MEM_GCR_GLM_INV, nvd.PACKET3_RELEASE_MEM_GCR_GLM_WB):
        assert event & bit
    assert event & nvd.PACKET3_RELEASE_MEM_CACHE_POLICY(3) == nvd.PACKET3_RELEASE_MEM_CACHE_POLICY(3)
    assert words[2] == nvd.PACKET3_RELEASE_MEM_DATA_SEL(2) | nvd.PACKET3_RELEASE_MEM_INT_SEL(2)
    assert words[3:7] == [0x2345_6780, 0x1, 0x5678_9ABC, 0x1234]
    assert words[7] == 0
    plain = gfx.release_mem_packet(0x1000, 7)
    assert plain[2] == nvd.PACKET3_RELEASE_MEM_DATA_SEL(1)  # 32-bit, no interrupt
    with pytest.raises(InvalidArgument):
        gfx.release_mem_packet(0x1004, 1, bits64=True)  # 64-bit data wants 8-byte alignment
    with pytest.raises(InvalidArgument):
        gfx.release_mem_packet(0x1002, 1)


def test_wait_reg_mem_fields():
    words = gfx.wait_memory_packet(0x8_0000_1004, 0xABCD, mask=0xFFFF)
    check_type3(words, nvd.PACKET3_WAIT_REG_MEM)
    assert words[1] == (nvd.WAIT_REG_MEM_MEM_SPACE(1) | nvd.WAIT_REG_MEM_FUNCTION(3)
                        | nvd.WAIT_REG_MEM_OPERATION(0) | nvd.WAIT_REG_MEM_ENGINE(0))
    assert words[2:7] == [0x1004, 0x8, 0xABCD, 0xFFFF, 0x20]
    registers = gfx.wait_reg_mem_packet(memory=False, address0=0x10, address1=0x11, reference=1, mask=1)
    assert registers[1] & nvd.WAIT_REG_MEM_MEM_SPACE(1) == 0
    with pytest.raises(InvalidArgument):
        gfx.wait_memory_packet(0x1002, 0)


def test_acquire_mem_is_gfx_v11_0_emit_mem_sync():
    words = gfx.acquire_mem_packet()
    check_type3(words, nvd.PACKET3_ACQUIRE_MEM)
    assert words[1:7] == [0, 0xFFFFFFFF, 0xFFFFFF, 0, 0, 0xA]
    gcr = words[7]
    for encoder in (nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GL2_INV, nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GL2_WB,
                    nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GLM_INV, nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GLM_WB,
                    nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GL1_INV, nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GLV_INV,
                    nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GLK_INV, nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GLI_INV):
        assert gcr & encoder(1) == encoder(1)
    assert not gcr & nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GL2_DISCARD(1)


def test_indirect_buffer_and_dispatch():
    words = gfx.indirect_buffer_packet(0x7_0000_0100, 64, vmid=3)
    check_type3(words, nvd.PACKET3_INDIRECT_BUFFER)
    assert words[1:] == [0x100, 0x7, nvd.INDIRECT_BUFFER_VALID | 64 | 3 << 24]
    for bad in ((0x102, 4), (0x100, 0), (0x100, 1 << 20)):
        with pytest.raises(InvalidArgument):
            gfx.indirect_buffer_packet(*bad)
    dispatch = gfx.dispatch_direct_packet(4, 2, 1, 0x1)
    check_type3(dispatch, nvd.PACKET3_DISPATCH_DIRECT)
    assert dispatch[0] & 2  # PACKET3_COMPUTE: the compute shader type
    assert dispatch[1:] == [4, 2, 1, 1]


def test_register_packets_take_offsets_from_their_window():
    base = nvd.PACKET3_SET_SH_REG_START + 0x20C  # COMPUTE_PGM_LO's place in the SH window
    words = gfx.set_sh_reg_packet(base, [0x11, 0x22])
    check_type3(words, nvd.PACKET3_SET_SH_REG)
    assert words[1] == base - nvd.PACKET3_SET_SH_REG_START
    assert words[2:] == [0x11, 0x22]
    with pytest.raises(InvalidArgument):
        gfx.set_sh_reg_packet(nvd.PACKET3_SET_SH_REG_END - 1, [1, 2])  # runs past the window
    with pytest.raises(InvalidArgument):
        gfx.set_sh_reg_packet(nvd.PACKET3_SET_SH_REG_START - 1, [1])
    uconfig = gfx.set_uconfig_reg_packet(nvd.PACKET3_SET_UCONFIG_REG_START + 0x40, [0xDEADBEEF])
    assert uconfig == [nvd.PACKET3(nvd.PACKET3_SET_UCONFIG_REG, 1), 0x40, 0xDEADBEEF]
    event = gfx.event_write_packet(enums.CS_PARTIAL_FLUSH, 4)
    assert event == [nvd.PACKET3(nvd.PACKET3_EVENT_WRITE, 0), nvd.EVENT_TYPE(7) | nvd.EVENT_INDEX(4)]


def test_nop_covers_exactly_the_dwords_asked():
    assert gfx.nop_packet(1) == [nvd.PACKET3(nvd.PACKET3_NOP, 0x3FFF)]
    words = gfx.nop_packet(5)
    check_type3(words, nvd.PACKET3_NOP)
    assert len(words) == 5


# -- the MQD and the block --------------------------------------------------------------------------
@pytest.fixture
def machine(tmp_path):
    return Machine.default(lock_dir=str(tmp_path))


def open_device(machine, block_order=BEFORE_GC, **config):
    pci = hal.open(GPU, os=machine.os, unbind=True)
    settings = dict(gc_timeout_s=TIMEOUT_S, gc_autoload_timeout_s=TIMEOUT_S)
    settings.update(config)
    dev = AMDevice(pci, config=AMConfig(**settings), block_order=block_order)
    return pci, dev


def test_mqd_is_gfx_v11_0_compute_mqd_init(machine):
    pci, dev = open_device(machine)
    block = GCv11_0(dev)
    block.sw_init()  # no MMIO: only VRAM allocations and the MQD image
    mqd = v11_compute_mqd.from_bytes(bytes(block.mqd))
    assert mqd.header == 0xC0310800
    assert mqd.compute_static_thread_mgmt_se3 == 0xFFFFFFFF and mqd.compute_static_thread_mgmt_se4 == 0
    assert (mqd.cp_hqd_eop_base_addr_hi << 32 | mqd.cp_hqd_eop_base_addr_lo) << 8 == block.eop.mc_address
    # EOP_SIZE: 2^(EOP_SIZE+1) dwords = GFX11_MEC_HPD_SIZE bytes
    eop_size = gc.regCP_HQD_EOP_CONTROL.field("EOP_SIZE").decode(mqd.cp_hqd_eop_control)
    assert 2 ** (eop_size + 1) * 4 == gfx.GFX11_MEC_HPD_SIZE
    control = gc.regCP_HQD_PQ_CONTROL.decode(mqd.cp_hqd_pq_control)
    assert 2 ** (control["QUEUE_SIZE"] + 1) * 4 == block.ring_bytes
    assert 2 ** (control["RPTR_BLOCK_SIZE"] + 1) * 4 == 4096
    assert control["UNORD_DISPATCH"] == control["PRIV_STATE"] == control["KMD_QUEUE"] == 1
    assert (mqd.cp_hqd_pq_base_hi << 32 | mqd.cp_hqd_pq_base_lo) << 8 == block.ring.mc_address
    doorbell = gc.regCP_HQD_PQ_DOORBELL_CONTROL.decode(mqd.cp_hqd_pq_doorbell_control)
    assert doorbell["DOORBELL_EN"] == 1
    assert doorbell["DOORBELL_OFFSET"] == 0x3 << 1  # AMDGPU_NAVI10_DOORBELL_MEC_RING0, in dwords
    rptr = mqd.cp_hqd_pq_rptr_report_addr_hi << 32 | mqd.cp_hqd_pq_rptr_report_addr_lo
    assert rptr == block.writeback.mc_address + gfx.RPTR_SLOT
    wptr = mqd.cp_hqd_pq_wptr_poll_addr_hi << 32 | mqd.cp_hqd_pq_wptr_poll_addr_lo
    assert wptr == block.writeback.mc_address + gfx.WPTR_SLOT
    assert (mqd.cp_mqd_base_addr_hi << 32 | mqd.cp_mqd_base_addr_lo) == block.mqd_buffer.mc_address
    assert gc.regCP_HQD_PERSISTENT_STATE.field("PRELOAD_SIZE").decode(mqd.cp_hqd_persistent_state) == 0x55
    assert gc.regCP_HQD_IB_CONTROL.field("MIN_IB_AVAIL_SIZE").decode(mqd.cp_hqd_ib_control) == 3
    assert mqd.cp_hqd_active == 1 and mqd.cp_hqd_vmid == 0
    # register offsets for SET_SH_REG are absolute dword offsets (SOC15_REG_OFFSET)
    pgm_lo = block.register_offset("regCOMPUTE_PGM_LO")
    assert nvd.PACKET3_SET_SH_REG_START <= pgm_lo < nvd.PACKET3_SET_SH_REG_END
    assert gfx.set_sh_reg_packet(pgm_lo, [0])[1] == pgm_lo - nvd.PACKET3_SET_SH_REG_START
    block.sw_fini()
    dev.fini()
    pci.close()


def test_ring_size_must_be_a_power_of_two(machine):
    pci, dev = open_device(machine, block_order=("NBIO", "HDP"), gc_ring_size=3 * 4096)
    with pytest.raises(InvalidArgument, match="power of two"):
        GCv11_0(dev).sw_init()
    dev.fini()
    pci.close()


def test_rlc_autoload_never_completing_is_a_bounded_timeout(machine):
    # without the PSP's AUTOLOAD_RLC the RLC never reports BOOTLOAD_COMPLETE
    start = time.monotonic()
    with pytest.raises(DeviceTimeout, match=r"GC: the RLC autoload.*RLC_RLCS_BOOTLOAD_STATUS 0x"):
        open_device(machine, block_order=("NBIO", "HDP", "GMC", "GC"))
    assert time.monotonic() - start < TIMEOUT_S + 1.0


def test_all_ones_during_the_autoload_wait_is_device_lost(machine):
    gpu = machine.device(GPU_BDF)
    pci, dev = open_device(machine, block_order=("NBIO", "HDP", "GMC"))
    block = GCv11_0(dev)
    block.sw_init()
    gpu.vanish()
    with pytest.raises(DeviceLost):
        block.hw_init()
    pci.close()


# -- against the mock MEC ---------------------------------------------------------------------------
WITH_GC = BEFORE_GC + ("GC", "SDMA")


def open_with_gc(machine, **config):
    return open_device(machine, block_order=WITH_GC, **config)


needs_mec = pytest.mark.skipif(importlib.util.find_spec("mockgpu.amd.mec") is None,
                               reason="the mock Navi31 has no MEC model yet (mockgpu.amd.mec)")


@needs_mec
def test_bring_up_with_gc_runs_the_ring_test_and_a_fence_round_trip(machine):
    gpu = machine.device(GPU_BDF)
    pci, dev = open_with_gc(machine)
    block = dev.block("GC")
    assert isinstance(block, GCv11_0)
    assert gpu.regfile.get("GC", "regSCRATCH_REG0") == gfx.RING_TEST_VALUE  # the ring test ran
    assert dev.block("GMC").hubs["GC"].enabled  # the GFX hub, enabled by GC after the autoload
    sequence = block.signal()
    block.wait(sequence)
    assert block.fence_value() == sequence == 1
    assert block.pending_dwords() == 0
    dev.fini()
    pci.close()


@needs_mec
def test_ring_overrun_ten_times_the_ring_completes_in_order(machine):
    pci, dev = open_with_gc(machine, gc_ring_size=4096)
    block = dev.block("GC")
    fence_dwords = len(gfx.release_mem_packet(0, 0))
    submissions = 10 * block.ring_dwords // fence_dwords
    seen = []
    for _ in range(submissions):
        block.signal()
        seen.append(block.fence_value())
        assert block.pending_dwords() < block.ring_dwords  # nothing unconsumed was overwritten
    block.wait(block.sequence)
    assert block.fence_value() == block.sequence == submissions
    assert seen == sorted(seen)
    dev.fini()
    pci.close()


@needs_mec
def test_a_halted_mec_is_a_timeout_naming_queue_pointers_and_hqd_state(machine):
    pci, dev = open_with_gc(machine, gc_ring_size=4096)
    block = dev.block("GC")
    block.mec_cntl.update(MEC_HALT=1)  # the MEC stops fetching: the ring stalls
    start = time.monotonic()
    with pytest.raises(DeviceTimeout, match=r"GC compute queue ME1 pipe 0 queue 0: room for 8 dwords.*"
                                            r"rptr report 0x.*wptr 0x.*CP_HQD_ACTIVE 0x0*1"):
        for _ in range(block.ring_dwords):
            block.signal()
    assert time.monotonic() - start < TIMEOUT_S + 1.0
    pci.close()


@needs_mec
def test_all_ones_while_waiting_for_a_fence_is_device_lost(machine):
    gpu = machine.device(GPU_BDF)
    pci, dev = open_with_gc(machine)
    block = dev.block("GC")
    block.mec_cntl.update(MEC_HALT=1)
    sequence = block.signal()
    gpu.vanish()
    with pytest.raises(DeviceLost):
        block.wait(sequence)
    pci.close()


@needs_mec
def test_fini_dequeues_the_queue_and_halts_the_mec(machine):
    gpu = machine.device(GPU_BDF)
    pci, dev = open_with_gc(machine)
    block = dev.block("GC")
    dev.fini()
    block._select(gfx.MEC_ME, gfx.MEC_PIPE, gfx.MEC_QUEUE, 0)
    assert block.hqd_active.read() & 1 == 0
    block._select(0, 0, 0, 0)
    assert gc.regCP_MEC_RS64_CNTL.field("MEC_HALT").decode(gpu.regfile.get("GC", "regCP_MEC_RS64_CNTL")) == 1
    pci.close()


# -- failure cleanup, interrupts, warm attach ----------------------------------------------------------
INT_CNTL = gc.regCP_ME1_PIPE0_INT_CNTL


def mec_halted(gpu) -> bool:
    return gc.regCP_MEC_RS64_CNTL.field("MEC_HALT").decode(gpu.regfile.get("GC", "regCP_MEC_RS64_CNTL")) == 1


def test_the_rlc_autoload_the_psp_started_is_what_gc_waits_for(machine):
    gpu = machine.device(GPU_BDF)
    pci, dev = open_with_gc(machine)
    assert gpu.rlc.autoloads == 1 and gpu.rlc.bootload_complete
    dev.fini()
    pci.close()


def test_an_rlc_that_never_finishes_its_autoload_is_a_timeout_naming_the_status(machine):
    gpu = machine.device(GPU_BDF)
    gpu.rlc.autoload_hang = True
    start = time.monotonic()
    with pytest.raises(DeviceTimeout, match=r"GC: the RLC autoload did not complete.*"
                                            r"RLC_RLCS_BOOTLOAD_STATUS 0x00000000"):
        open_with_gc(machine)
    assert time.monotonic() - start < TIMEOUT_S + 1.0
    assert gpu.rlc.autoloads == 1  # the PSP did send AUTOLOAD_RLC
    assert mec_halted(gpu)  # never un-halted


def test_a_failure_after_the_mec_was_unhalted_halts_it_again(machine):
    gpu = machine.device(GPU_BDF)
    gpu.mec.stalled = True  # the queue maps, but the ring test never completes
    with pytest.raises(DeviceTimeout, match=r"ring test"):
        open_with_gc(machine)
    assert mec_halted(gpu)
    fields = INT_CNTL.decode(gpu.regfile.get("GC", "regCP_ME1_PIPE0_INT_CNTL"))
    assert fields["TIME_STAMP_INT_ENABLE"] == fields["OPCODE_ERROR_INT_ENABLE"] == 0


def test_bring_up_enables_the_eop_and_fault_interrupts_and_fini_disables_them(machine):
    gpu = machine.device(GPU_BDF)
    pci, dev = open_with_gc(machine)
    for pipe in range(gfx.MEC_PIPES):
        fields = INT_CNTL.decode(gpu.regfile.get("GC", f"regCP_ME1_PIPE{pipe}_INT_CNTL"))
        assert fields["OPCODE_ERROR_INT_ENABLE"] == fields["PRIV_REG_INT_ENABLE"] == 1
        assert fields["TIME_STAMP_INT_ENABLE"] == (1 if pipe == gfx.MEC_PIPE else 0)
    dev.fini()
    assert INT_CNTL.decode(gpu.regfile.get("GC", "regCP_ME1_PIPE0_INT_CNTL"))["TIME_STAMP_INT_ENABLE"] == 0
    pci.close()


def test_a_release_mem_with_interrupt_reaches_the_ih_as_this_queues_eop_event(machine):
    pci, dev = open_with_gc(machine)
    block = dev.block("GC")
    ih = dev.block("IH")
    sequence = block.signal(interrupt=True)
    events = ih.wait("the EOP interrupt", timeout_s=TIMEOUT_S, predicate=block.is_eop)
    eop = [event for event in events if block.is_eop(event)]
    assert len(eop) == 1 and eop[0].kind == "interrupt" and eop[0].error is None
    assert eop[0].entry.ring_id == 1 << 2  # ME1 pipe 0 queue 0 (gfx_v11_0_eop_irq's decode)
    assert block.eop_interrupts == 1
    block.wait_interrupt(sequence)
    gpu = machine.device(GPU_BDF)
    gpu.mec.stalled = True  # the fence lands later: wait_interrupt sleeps on the IH meanwhile

    def resume() -> None:
        gpu.mec.stalled = False
        gpu.mec.kick()

    later = block.signal(interrupt=True)
    assert block.fence_value() == sequence
    machine.schedule(0.02, resume)
    block.wait_interrupt(later)  # woken through the IH
    assert block.fence_value() == later and block.eop_interrupts == 2
    dev.fini()
    pci.close()


def test_wait_interrupt_without_an_interrupt_is_a_bounded_timeout(machine):
    pci, dev = open_with_gc(machine)
    block = dev.block("GC")
    block.mec_cntl.update(MEC_HALT=1)
    sequence = block.signal(interrupt=True)
    start = time.monotonic()
    with pytest.raises(DeviceTimeout, match=r"fence 1 \(woken by EOP interrupts, 0 seen\)"):
        block.wait_interrupt(sequence)
    assert time.monotonic() - start < TIMEOUT_S + 1.0
    pci.close()


def test_a_warm_attach_rebinds_the_running_queue_without_remapping_it(machine):
    gpu = machine.device(GPU_BDF)
    pci, first = open_with_gc(machine)
    block = first.block("GC")
    for _ in range(3):
        block.wait(block.signal())
    wptr = block.wptr
    ring = block.ring.mc_address
    pci.close()  # the process exits with the queue running
    pci, second = open_with_gc(machine)
    assert second.boot_kind == "warm", second.boot_reason
    block = second.block("GC")
    assert block.ring.mc_address == ring
    ring_test = len(gfx.set_uconfig_reg_packet(block.register_offset("regSCRATCH_REG0"), [0]))
    assert block.wptr == wptr + ring_test  # the HQD kept its pointers: not re-mapped from the MQD
    assert block.sequence == 3
    assert block.signal() == 4
    block.wait(4)
    assert not mec_halted(gpu)
    second.fini()
    pci.close()


def test_a_warm_attach_with_a_halted_mec_programs_the_queue_again(machine):
    gpu = machine.device(GPU_BDF)
    pci, first = open_with_gc(machine)
    first.block("GC").wait(first.block("GC").signal())
    pci.close()
    gpu.regfile.write32(gpu.regfile.address("GC", "regCP_MEC_RS64_CNTL"),
                        gc.regCP_MEC_RS64_CNTL.encode(MEC_HALT=1))  # someone halted the MEC
    pci, second = open_with_gc(machine)
    assert second.boot_kind == "warm", second.boot_reason
    block = second.block("GC")
    ring_test = len(gfx.set_uconfig_reg_packet(block.register_offset("regSCRATCH_REG0"), [0]))
    assert block.wptr == ring_test  # mapped afresh from the MQD
    block.wait(block.signal())
    second.fini()
    pci.close()
