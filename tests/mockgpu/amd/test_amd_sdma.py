"""The mock SDMA 6.0 engine at the register and memory layer, driven the way sdma_v6_0.c drives it."""
from __future__ import annotations

import pytest

from autogen.amd import irqsrcs_gfx_11_0_0 as srcid
from autogen.amd import sdma_v6_0_0_pkt_open as pkt
from autogen.amd import soc15_ih_clientid as clientid
from mockgpu.amd import Navi31GPU
from mockgpu.amd import sdma as model

MIB = 1 << 20
RING_OFFSET = 16 * MIB
RING_BYTES = 4096
RPTR_OFFSET = 17 * MIB
DOORBELL_INDEX = 0x100 << 1  # soc21.c: sdma_engine[0] = AMDGPU_NAVI10_DOORBELL_sDMA_ENGINE0, in dwords


class Interrupts:
    """Stands in for the IH model: records what the engine posts."""

    def __init__(self) -> None:
        self.posted: list[tuple[int, int, tuple]] = []

    def post(self, client_id, source_id, src_data=(0, 0, 0, 0), ring_id=0, **_) -> bool:
        self.posted.append((client_id, source_id, tuple(src_data)))
        return True


class Engine:
    """A Navi31GPU with SDMA0's gfx queue set up as sdma_v6_0_gfx_resume does."""

    def __init__(self) -> None:
        self.gpu = gpu = Navi31GPU(vram_size=64 * MIB)
        self.sdma = gpu.sdma
        self.interrupts = Interrupts()
        gpu.ih = self.interrupts
        self.fb_base = gpu.regfile.get("GC", "regGCMC_VM_FB_LOCATION_BASE") << model.FB_UNIT_SHIFT
        # gfxhub_v3_0_init_system_aperture_regs: the VMID 0 aperture covers the FB range
        top = gpu.regfile.get("GC", "regGCMC_VM_FB_LOCATION_TOP") << model.FB_UNIT_SHIFT
        self.write("GC", "regGCMC_VM_SYSTEM_APERTURE_LOW_ADDR", self.fb_base >> 18)
        self.write("GC", "regGCMC_VM_SYSTEM_APERTURE_HIGH_ADDR", (top + (1 << 24) - 1) >> 18)
        self.wptr = 0
        self.sdma.firmware_loaded = True

    def write(self, ip: str, name: str, value: int) -> None:
        self.gpu.regfile.write32(self.gpu.regfile.address(ip, name), value)

    def read(self, ip: str, name: str) -> int:
        return self.gpu.regfile.read32(self.gpu.regfile.address(ip, name))

    def mc(self, offset: int) -> int:
        return self.fb_base + offset

    def resume(self, doorbell: bool = True) -> None:
        ring = self.mc(RING_OFFSET)
        rptr = self.mc(RPTR_OFFSET)
        size = (RING_BYTES // 4).bit_length() - 1
        cntl = model.RB_SIZE.encode(size) | model.RPTR_WRITEBACK_ENABLE.mask
        self.write("SDMA0", "regSDMA0_QUEUE0_RB_CNTL", cntl)
        for name in ("RB_RPTR", "RB_RPTR_HI", "RB_WPTR", "RB_WPTR_HI"):
            self.write("SDMA0", f"regSDMA0_QUEUE0_{name}", 0)
        self.write("SDMA0", "regSDMA0_QUEUE0_RB_RPTR_ADDR_HI", rptr >> 32)
        self.write("SDMA0", "regSDMA0_QUEUE0_RB_RPTR_ADDR_LO", rptr & 0xFFFFFFFC)
        self.write("SDMA0", "regSDMA0_QUEUE0_RB_BASE", (ring >> 8) & 0xFFFFFFFF)
        self.write("SDMA0", "regSDMA0_QUEUE0_RB_BASE_HI", ring >> 40)
        self.write("SDMA0", "regSDMA0_QUEUE0_MINOR_PTR_UPDATE", 1)
        self.write("SDMA0", "regSDMA0_QUEUE0_RB_WPTR", 0)
        self.write("SDMA0", "regSDMA0_QUEUE0_DOORBELL", model.DOORBELL_ENABLE.mask if doorbell else 0)
        self.write("SDMA0", "regSDMA0_QUEUE0_DOORBELL_OFFSET", model.DOORBELL_OFFSET.encode(DOORBELL_INDEX))
        route = (model.S2A_ENABLE.mask | model.S2A_RANGE_OFFSET.encode(DOORBELL_INDEX)
                 | model.S2A_RANGE_SIZE.encode(40))
        self.write("NBIO", "regS2A_DOORBELL_ENTRY_2_CTRL", route)
        self.write("NBIO", "regRCC_DEV0_EPF0_RCC_DOORBELL_APER_EN", 1)
        self.write("SDMA0", "regSDMA0_QUEUE0_MINOR_PTR_UPDATE", 0)
        self.write("SDMA0", "regSDMA0_F32_CNTL", 0)
        self.write("SDMA0", "regSDMA0_QUEUE0_RB_CNTL", cntl | model.RB_ENABLE.mask)

    def submit(self, *words: int, doorbell: bool = True) -> None:
        for word in words:
            position = RING_OFFSET + (self.wptr % RING_BYTES)
            self.gpu.vram[position:position + 4] = word.to_bytes(4, "little")
            self.wptr += 4
        if doorbell:
            self.gpu.bar_write(2, DOORBELL_INDEX * 4, self.wptr.to_bytes(8, "little"))
        else:
            self.write("SDMA0", "regSDMA0_QUEUE0_RB_WPTR", self.wptr)

    def vram32(self, offset: int) -> int:
        return int.from_bytes(self.gpu.vram[offset:offset + 4], "little")

    def rptr_writeback(self) -> int:
        return int.from_bytes(self.gpu.vram[RPTR_OFFSET:RPTR_OFFSET + 8], "little")


def write_linear(address: int, *data: int) -> tuple[int, ...]:
    return (pkt.SDMA_OP_WRITE | pkt.SDMA_SUBOP_WRITE_LINEAR << 8, address & 0xFFFFFFFF, address >> 32,
            len(data) - 1, *data)


def copy_linear(source: int, destination: int, size: int) -> tuple[int, ...]:
    return (pkt.SDMA_OP_COPY | pkt.SDMA_SUBOP_COPY_LINEAR << 8, size - 1, 0, source & 0xFFFFFFFF,
            source >> 32, destination & 0xFFFFFFFF, destination >> 32)


def fence(address: int, value: int) -> tuple[int, ...]:
    return (pkt.SDMA_OP_FENCE | 3 << 16, address & 0xFFFFFFFF, address >> 32, value)


@pytest.fixture
def engine() -> Engine:
    e = Engine()
    e.resume()
    return e


def test_ring_test_write_runs_on_the_doorbell_and_writes_back_rptr(engine):
    target = 20 * MIB
    engine.submit(*write_linear(engine.mc(target), 0xDEADBEEF))
    assert engine.vram32(target) == 0xDEADBEEF
    assert engine.rptr_writeback() == engine.wptr == 20
    assert engine.read("SDMA0", "regSDMA0_QUEUE0_RB_RPTR") == 20
    assert engine.read("SDMA0", "regSDMA0_STATUS_REG") & model.STATUS_IDLE.mask


def test_wptr_register_write_runs_the_engine_too():
    e = Engine()
    e.resume(doorbell=False)
    e.submit(*fence(e.mc(20 * MIB), 7), doorbell=False)
    assert e.vram32(20 * MIB) == 7


def test_nothing_runs_until_the_firmware_is_loaded():
    e = Engine()
    e.sdma.firmware_loaded = False
    e.resume()
    e.submit(*fence(e.mc(20 * MIB), 7))
    assert e.vram32(20 * MIB) == 0
    e.sdma.firmware_loaded = True
    e.sdma.kick()
    assert e.vram32(20 * MIB) == 7


def test_doorbell_without_the_s2a_route_is_dropped(engine):
    engine.write("NBIO", "regS2A_DOORBELL_ENTRY_2_CTRL", 0)
    engine.submit(*fence(engine.mc(20 * MIB), 7))
    assert engine.vram32(20 * MIB) == 0


@pytest.mark.parametrize("size", [1, 3, 4096, 4097, 100_003])
def test_copy_linear_copies_bytes(engine, size):
    source, destination = 20 * MIB + 1, 30 * MIB + 3
    payload = bytes((i * 7 + 1) % 256 for i in range(size))
    engine.gpu.vram[source:source + size] = payload
    engine.submit(*copy_linear(engine.mc(source), engine.mc(destination), size))
    assert bytes(engine.gpu.vram[destination:destination + size]) == payload
    assert engine.gpu.vram[destination + size] == 0


def test_packets_wrap_around_the_ring_end(engine):
    for value in range(1, 400):  # 4 dwords each: wraps the 1024-dword ring
        engine.submit(*fence(engine.mc(20 * MIB), value))
        assert engine.vram32(20 * MIB) == value
    assert engine.rptr_writeback() == engine.wptr > RING_BYTES


def test_unknown_opcode_stops_the_queue_with_an_exception(engine):
    engine.submit(0x000000FF, 0)
    status = engine.read("SDMA0", "regSDMA0_QUEUE0_CONTEXT_STATUS")
    assert model.CONTEXT_EXCEPTION.decode(status) == model.EXCEPTION_ILLEGAL_PACKET
    assert not engine.read("SDMA0", "regSDMA0_STATUS_REG") & model.STATUS_IDLE.mask
    assert engine.rptr_writeback() == 0  # rptr stays on the bad packet
    assert engine.interrupts.posted == [(clientid.SOC21_IH_CLIENTID_GFX,
                                         srcid.GFX_11_0_0__SRCID__SDMA_SRBMWRITE, (0, 0, 0, 0))]
    engine.submit(*fence(engine.mc(20 * MIB), 7))
    assert engine.vram32(20 * MIB) == 0  # nothing runs after it


@pytest.mark.parametrize("words", [
    fence(0x8000000002, 1),  # misaligned fence
    (pkt.SDMA_OP_WRITE | pkt.SDMA_SUBOP_WRITE_LINEAR << 8, 0x2, 0x80, 0, 1),  # misaligned write
    (pkt.SDMA_OP_FENCE | 1 << 8, 0, 0x80, 1),  # bad sub-opcode
    (pkt.SDMA_OP_INDIRECT, 0x10, 0x80, 4, 0, 0),  # IB base not 32-byte aligned
    (pkt.SDMA_OP_POLL_REGMEM | 7 << 28 | 1 << 31, 0, 0x80, 0, 0, 0),  # compare function 7
])
def test_malformed_packets_are_rejected(engine, words):
    engine.submit(*words)
    assert engine.sdma.exception == model.EXCEPTION_ILLEGAL_PACKET, engine.sdma.error


def test_address_outside_vram_faults(engine):
    engine.submit(*fence(0x1000, 1))
    assert engine.sdma.exception == model.EXCEPTION_MEMORY


def test_trap_posts_the_sdma_trap_interrupt(engine):
    engine.submit(pkt.SDMA_OP_TRAP, 5)
    assert engine.interrupts.posted == [(clientid.SOC21_IH_CLIENTID_GFX,
                                         srcid.GFX_11_0_0__SRCID__SDMA_TRAP, (5, 0, 0, 0))]


def test_indirect_buffer_runs_its_packets(engine):
    ib_offset = 21 * MIB
    ib = fence(engine.mc(20 * MIB), 0x1234) + write_linear(engine.mc(20 * MIB + 64), 1, 2)
    for index, word in enumerate(ib):
        engine.gpu.vram[ib_offset + 4 * index:ib_offset + 4 * index + 4] = word.to_bytes(4, "little")
    ib_address = engine.mc(ib_offset)
    engine.submit(pkt.SDMA_OP_INDIRECT, ib_address & 0xFFFFFFFF, ib_address >> 32, len(ib), 0, 0)
    assert engine.vram32(20 * MIB) == 0x1234
    assert engine.vram32(20 * MIB + 68) == 2


def test_poll_regmem_waits_for_memory_then_continues(engine):
    flag = 22 * MIB
    poll = (pkt.SDMA_OP_POLL_REGMEM | 3 << 28 | 1 << 31, engine.mc(flag) & 0xFFFFFFFF,
            engine.mc(flag) >> 32, 1, 0xFFFFFFFF, 0xFFF << 16 | 10)
    engine.submit(*poll, *fence(engine.mc(20 * MIB), 9))
    assert engine.vram32(20 * MIB) == 0
    assert engine.rptr_writeback() == 0
    engine.gpu.vram[flag:flag + 4] = (1).to_bytes(4, "little")
    engine.sdma.kick()
    assert engine.vram32(20 * MIB) == 9


def test_poll_regmem_with_a_retry_count_gives_up_and_reports_it(engine):
    poll = (pkt.SDMA_OP_POLL_REGMEM | 3 << 28 | 1 << 31, engine.mc(22 * MIB) & 0xFFFFFFFF,
            engine.mc(22 * MIB) >> 32, 1, 0xFFFFFFFF, 2 << 16 | 10)
    engine.submit(*poll, *fence(engine.mc(20 * MIB), 9))
    for _ in range(3):
        engine.sdma.kick()
    assert engine.vram32(20 * MIB) == 9
    assert engine.interrupts.posted[-1][1] == srcid.GFX_11_0_0__SRCID__SDMA_POLL_TIMEOUT


def test_hdp_flush_poll_writes_the_request_and_polls_done(engine):
    regfile = engine.gpu.regfile
    done = regfile.address("NBIO", "regBIF_BX_PF0_GPU_HDP_FLUSH_DONE")
    request = regfile.address("NBIO", "regBIF_BX_PF0_GPU_HDP_FLUSH_REQ")
    flushes = engine.gpu.hdp_flushes
    engine.submit(pkt.SDMA_OP_POLL_REGMEM | 1 << 26 | 3 << 28, done, request, 1 << 2, 1 << 2,
                  0xFFF << 16 | 10, *fence(engine.mc(20 * MIB), 3))
    assert engine.gpu.hdp_flushes == flushes + 1
    assert engine.vram32(20 * MIB) == 3


def test_timestamp_get_writes_the_gpu_clock(engine):
    engine.submit(pkt.SDMA_OP_TIMESTAMP | pkt.SDMA_SUBOP_TIMESTAMP_GET << 8,
                  engine.mc(20 * MIB) & 0xFFFFFFFF, engine.mc(20 * MIB) >> 32)
    first = int.from_bytes(engine.gpu.vram[20 * MIB:20 * MIB + 8], "little")
    engine.submit(pkt.SDMA_OP_TIMESTAMP | pkt.SDMA_SUBOP_TIMESTAMP_GET << 8,
                  engine.mc(20 * MIB) & 0xFFFFFFFF, engine.mc(20 * MIB) >> 32)
    assert int.from_bytes(engine.gpu.vram[20 * MIB:20 * MIB + 8], "little") > first > 0


def test_stalled_engine_consumes_nothing_until_released(engine):
    engine.sdma.stalled = True
    engine.submit(*fence(engine.mc(20 * MIB), 5))
    assert engine.rptr_writeback() == 0
    engine.sdma.stalled = False
    engine.sdma.kick()
    assert engine.vram32(20 * MIB) == 5


def test_a_half_written_packet_waits_for_the_rest(engine):
    words = fence(engine.mc(20 * MIB), 5)
    engine.submit(*words[:2])
    assert engine.rptr_writeback() == 0
    engine.submit(*words[2:])
    assert engine.vram32(20 * MIB) == 5


def test_reset_clears_firmware_and_halts(engine):
    engine.sdma.reset("mode1")
    assert not engine.sdma.firmware_loaded
    assert engine.read("SDMA0", "regSDMA0_F32_CNTL") & model.F32_HALT.mask
