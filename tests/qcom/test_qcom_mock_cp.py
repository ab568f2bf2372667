"""The mock Adreno CP behind KGSL: header parity as the CP checks it, the packets it executes, and
the faults (CP opcode error, page fault, hang) that KGSL turns into an invalidated context or a
timestamp that never retires."""
from __future__ import annotations

import errno
import struct
import time

import pytest

from autogen.qcom import pm4
from drivers.qcom import kgsl
from drivers.qcom.cp import (CommandStream, PacketError, odd_parity_bit, pkt4_header, pkt7_header)
from drivers.qcom.device import KGSLDevice
from drivers.qcom.submit import Submitter, timestamp_passed
from hal.os import PAGE_SIZE
from mockgpu.qcom.cp import CommandProcessor, GPUAddressSpace, Mapping, UnsupportedPacket
from tools.mock_machines import qcom


@pytest.fixture
def rig():
    machine = qcom()
    device = KGSLDevice(machine.os)
    context = device.create_context()
    submitter = Submitter(device, context, ring_bytes=2 * PAGE_SIZE, timeout_s=1.0)
    yield machine, device, submitter
    device.close()
    machine.close()


# -- header encoding ---------------------------------------------------------------------------
def test_headers_match_known_cp_packets():
    # CP_WAIT_FOR_IDLE and CP_NOP without payload, as a6xx command stream dumps show them
    assert pkt7_header(pm4.CP_WAIT_FOR_IDLE, 0) == 0x70268000
    assert pkt7_header(pm4.CP_NOP, 0) == 0x70108000
    # the ones of value + parity bit are always odd
    for value in range(512):
        assert (bin(value).count("1") + odd_parity_bit(value)) % 2 == 1


def test_header_ranges_are_checked():
    with pytest.raises(PacketError):
        pkt4_header(0x100, 0)
    with pytest.raises(PacketError):
        pkt4_header(0x40000, 1)
    with pytest.raises(PacketError):
        pkt7_header(0x80, 1)


# -- packets -----------------------------------------------------------------------------------
def test_mem_write_event_and_register_writes(rig):
    machine, device, submitter = rig
    target = device.alloc(PAGE_SIZE)
    stream = CommandStream().reg_write(0xA800, 1, 2, 3).mem_write(target.gpuaddr + 8, 7, 8)
    stream.cache_invalidate().event_write_value(pm4.CACHE_FLUSH_TS, target.gpuaddr, 0x1234)
    submitter.wait(submitter.submit(stream))
    assert struct.unpack_from("<3I", target.region.read(0, 12)) == (0x1234, 0, 7)
    cp = machine.driver.cp
    assert [cp.registers[0xA800 + i] for i in range(3)] == [1, 2, 3]
    assert cp.events[-2:] == [pm4.CACHE_INVALIDATE, pm4.CACHE_FLUSH_TS]


def test_indirect_buffer_nests_once():
    space = GPUAddressSpace()
    memory = bytearray(PAGE_SIZE)
    space.add(Mapping(0x10000, PAGE_SIZE, memoryview(memory)))
    inner = CommandStream().mem_write(0x10800, 0xAB).to_bytes()
    memory[0x400:0x400 + len(inner)] = inner
    outer = CommandStream().packet(pm4.CP_INDIRECT_BUFFER, 0x10400, 0, len(inner) // 4).to_bytes()
    memory[0:len(outer)] = outer
    cp = CommandProcessor()
    cp.execute(space, 0x10000, len(outer))
    assert memory[0x800] == 0xAB


def test_unmodelled_packet_is_named():
    space = GPUAddressSpace()
    memory = bytearray(PAGE_SIZE)
    space.add(Mapping(0x10000, PAGE_SIZE, memoryview(memory)))
    stream = CommandStream().packet(pm4.CP_DRAW_INDX_OFFSET, 0, 1, 1).to_bytes()
    memory[:len(stream)] = stream
    with pytest.raises(UnsupportedPacket, match="CP_DRAW_INDX_OFFSET"):
        CommandProcessor().execute(space, 0x10000, len(stream))


# -- faults ------------------------------------------------------------------------------------
@pytest.mark.parametrize("flip", [7, 27], ids=["pkt4-count", "pkt4-register"])
def test_type4_parity_error_invalidates_the_context(rig, flip):
    _check_parity_fault(rig, CommandStream().reg_write(0xA800, 5), flip)


@pytest.mark.parametrize("flip", [15, 23], ids=["pkt7-count", "pkt7-opcode"])
def test_type7_parity_error_invalidates_the_context(rig, flip):
    machine, device, submitter = rig
    target = device.alloc(PAGE_SIZE)
    _check_parity_fault(rig, CommandStream().mem_write(target.gpuaddr, 9), flip)
    assert target.region.read32(0) == 0  # the packet never ran


def _check_parity_fault(rig, stream, flip):
    machine, device, submitter = rig
    stream.dwords[0] ^= 1 << flip
    timestamp = submitter.submit(stream)
    with pytest.raises(kgsl.ContextFaulted) as info:
        submitter.wait(timestamp)
    assert info.value.errno == errno.EDEADLK
    assert "IOCTL_KGSL_DEVICE_WAITTIMESTAMP_CTXTID" in str(info.value)
    fault = machine.driver.faults[-1]
    assert fault.kind == "opcode" and "parity" in fault.message
    assert fault.context_id == submitter.context_id
    with pytest.raises(kgsl.ContextFaulted, match="IOCTL_KGSL_GPU_COMMAND"):
        submitter.submit(CommandStream().nop())


def test_non_packet_dword_is_an_opcode_error(rig):
    machine, device, submitter = rig
    stream = CommandStream()
    stream.dwords.append(0x12345678)
    submitter.submit(stream)
    assert machine.driver.faults[-1].kind == "opcode"


def test_truncated_packet_is_an_overrun(rig):
    machine, device, submitter = rig
    stream = CommandStream().mem_write(0x500000000, 1, 2)
    stream.dwords.pop()
    submitter.submit(stream)
    assert machine.driver.faults[-1].kind == "overrun"


def test_page_fault_marks_the_context_bad_and_a_fresh_one_works(rig):
    machine, device, submitter = rig
    submitter.submit(CommandStream().mem_write(0x7000_0000_0000, 1))
    fault = machine.driver.faults[-1]
    assert fault.kind == "pagefault" and fault.address == 0x7000_0000_0000
    with pytest.raises(kgsl.ContextFaulted):
        submitter.submit(CommandStream().nop())
    fresh = Submitter(device, device.create_context())
    target = device.alloc(PAGE_SIZE)
    fresh.wait(fresh.submit(CommandStream().mem_write(target.gpuaddr, 0x55)), 1.0)
    assert target.region.read32(0) == 0x55


def test_write_to_gpu_read_only_object_faults(rig):
    from autogen.qcom import kgsl as uapi

    machine, device, submitter = rig
    readonly = device.alloc(PAGE_SIZE, flags=uapi.KGSL_MEMFLAGS_GPUREADONLY)
    submitter.submit(CommandStream().mem_write(readonly.gpuaddr, 1))
    assert machine.driver.faults[-1].kind == "pagefault"
    assert "read-only" in machine.driver.faults[-1].message


def test_hang_is_a_bounded_timeout_naming_context_and_timestamp(rig):
    machine, device, submitter = rig
    submitter.wait(submitter.submit(CommandStream().nop()))
    machine.driver.hang_next_submission()
    timestamp = submitter.submit(CommandStream().nop())
    started = time.monotonic()
    with pytest.raises(kgsl.KGSLTimeout) as info:
        submitter.wait(timestamp, timeout_s=0.1)
    assert time.monotonic() - started < 1.0
    error = info.value
    assert (error.context_id, error.timestamp, error.retired) == (submitter.context_id, timestamp, 1)
    assert f"context {submitter.context_id}" in str(error)
    assert f"timestamp {timestamp}" in str(error)
    # the context is useless now; a fresh one runs work
    device.destroy_context(submitter.context_id)
    fresh = Submitter(device, device.create_context())
    target = device.alloc(PAGE_SIZE)
    fresh.wait(fresh.submit(CommandStream().mem_write(target.gpuaddr, 0x77)), 1.0)
    assert target.region.read32(0) == 0x77


def test_ib_at_unmapped_address_is_refused_at_submission(rig):
    machine, device, submitter = rig
    with pytest.raises(kgsl.KGSLError) as info:
        kgsl.gpu_command(device.os, device.fd, device.scratch, submitter.context_id,
                         [(0x7000_0000_0000, 16)])
    assert info.value.errno == errno.EINVAL
    with pytest.raises(kgsl.KGSLError) as info:
        kgsl.gpu_command(device.os, device.fd, device.scratch, 99, [(submitter.ring.gpuaddr, 16)])
    assert info.value.errno == errno.EINVAL


# -- the ring ----------------------------------------------------------------------------------
def test_ring_space_is_reused_after_retirement(rig):
    machine, device, submitter = rig
    target = device.alloc(PAGE_SIZE)
    payload = [index for index in range(200)]
    for round_ in range(40):
        submitter.submit(CommandStream().mem_write(target.gpuaddr, *payload[:100]).mem_write(
            target.gpuaddr + 400, round_))
    submitter.synchronize()
    assert target.region.read32(400) == 39
    assert submitter.retired() == 40


def test_timestamps_compare_across_wraparound():
    assert timestamp_passed(5, 5)
    assert timestamp_passed(6, 5)
    assert not timestamp_passed(4, 5)
    assert timestamp_passed(2, 0xFFFFFFF0)
    assert not timestamp_passed(0xFFFFFFF0, 2)
