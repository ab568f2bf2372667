"""drivers.nv.gpfifo and drivers.nv.qmd: method headers, GP entries and the QMD layout against the
bit ranges of clc56f.h and Mesa's clc6c0qmd.h (written out here as the headers give them)."""
from __future__ import annotations

import pytest

from autogen.nv.r535 import classes as cl
from drivers.nv import gpfifo, qmd
from hal.errors import InvalidArgument


def test_method_headers_follow_clc56f() -> None:
    # NVC56F_DMA_INCR: opcode 1 in 31:29, count 28:16, subchannel 15:13, dword address 11:0
    assert gpfifo.incrementing(1, cl.NVC86F_SEM_ADDR_LO, 1, 2) == [
        (1 << 29) | (2 << 16) | (1 << 13) | (0x5C >> 2), 1, 2]
    assert gpfifo.non_incrementing(4, 0x400, 7)[0] == (3 << 29) | (1 << 16) | (4 << 13) | 0x100
    assert gpfifo.one_increment(0, 0x10, 1, 2, 3)[0] == (5 << 29) | (3 << 16) | 4
    assert gpfifo.immediate(2, 0x8, 0x1FFF) == [(4 << 29) | (0x1FFF << 16) | (2 << 13) | 2]
    header = gpfifo.decode_header(gpfifo.incrementing(7, 0x3FFC, 0)[0])
    assert (header.sec_op, header.subchannel, header.method, header.count) == (1, 7, 0x3FFC, 1)
    for bad in (lambda: gpfifo.immediate(0, 8, 0x2000), lambda: gpfifo.method_header(1, 8, 0, 0),
                lambda: gpfifo.method_header(1, 0, 0x4000, 0), lambda: gpfifo.method_header(1, 0, 2, 0)):
        with pytest.raises(InvalidArgument):
            bad()


def test_gp_entries_carry_forty_address_bits() -> None:
    # GP_ENTRY0_GET 31:2, GP_ENTRY1_GET_HI 7:0, GP_ENTRY1_LENGTH 30:10
    word0, word1 = gpfifo.gp_entry(0xAB_1234_5678, 0x40)
    assert word0 == 0x1234_5678 and word1 == 0xAB | 0x40 << 10
    assert gpfifo.decode_gp_entry(word0, word1) == (0xAB_1234_5678, 0x40)
    with pytest.raises(InvalidArgument, match="below 0x10000000000"):
        gpfifo.gp_entry(1 << 40, 4)
    with pytest.raises(InvalidArgument):
        gpfifo.gp_entry(0x1002, 4)


def test_device_addresses_fit_gp_entries_and_ampere_semaphores(nv_machine) -> None:
    """Every allocation's GPU address lies below 2**40 (it was from 1 << 40 up before)."""
    from drivers.nv.device import NVDevice

    machine = nv_machine("rtx3090")
    device = NVDevice.open(machine.os)
    try:
        memory = device.alloc_memory(4096, location="sysmem")
        assert memory.gpu_va + memory.size <= gpfifo.GP_ENTRY_ADDRESS_LIMIT
        gpfifo.gp_entry(memory.gpu_va, 1)
        device.free_memory(memory)
    finally:
        device.close()


def test_qmd_fields_at_mesa_bit_ranges() -> None:
    launch = qmd.QMD(program_address=0x12_3456_7880, grid=(70000, 3, 2), block=(16, 8, 4),
                     constant0_address=0x45_0000_0100, constant0_size=0x230, registers=40,
                     shared_bytes=5000, local_bytes_per_thread=200, shared_limit_kib=228)
    data = launch.build()
    assert len(data) == qmd.QMD_SIZE
    whole = int.from_bytes(data, "little")

    def bits(high: int, low: int) -> int:
        return (whole >> low) & ((1 << (high - low + 1)) - 1)

    assert bits(583, 580) == 3 and bits(579, 576) == 0  # QMD_MAJOR_VERSION, QMD_VERSION
    assert (bits(415, 384), bits(431, 416), bits(463, 448)) == (70000, 3, 2)  # CTA_RASTER_*
    assert (bits(607, 592), bits(623, 608), bits(639, 624)) == (16, 8, 4)  # CTA_THREAD_DIMENSION*
    assert bits(1567, 1536) == 0x3456_7880 and bits(1584, 1568) == 0x12  # PROGRAM_ADDRESS_*
    assert bits(1055, 1024) == 0x0000_0100 and bits(1072, 1056) == 0x45  # CONSTANT_BUFFER_ADDR(0)
    assert bits(1087, 1075) == 0x23 and bits(640, 640) == 1  # SIZE_SHIFTED4(0), VALID(0)
    assert bits(656, 648) == 40  # REGISTER_COUNT_V
    assert bits(561, 544) == 6144  # SHARED_MEMORY_SIZE: 5000 + the 1 KiB reserve, 256-byte granular
    # the stack at the top of the local range: SHADER_LOCAL_MEMORY_HIGH_SIZE, 32-byte granular; LOW 0
    assert bits(1623, 1600) == 224 and bits(759, 736) == 0
    assert bits(191, 186) == 0x3F  # every INVALIDATE_* cache bit
    assert qmd.field(data, "CTA_RASTER_WIDTH") == 70000


def test_qmd_refuses_what_does_not_fit() -> None:
    base = dict(program_address=0x1000, grid=(1, 1, 1), block=(1, 1, 1), constant0_address=0x2000,
                constant0_size=0x200, registers=8, shared_bytes=0, local_bytes_per_thread=0,
                shared_limit_kib=100)
    with pytest.raises(InvalidArgument, match="carve-out of 100 KiB"):
        qmd.QMD(**{**base, "shared_bytes": 101 * 1024}).build()
    with pytest.raises(InvalidArgument, match="256-byte aligned"):
        qmd.QMD(**{**base, "constant0_address": 0x2010}).build()
    with pytest.raises(InvalidArgument, match="CTA_RASTER_HEIGHT"):
        qmd.QMD(**{**base, "grid": (1, 1 << 16, 1)}).build()


def test_a_qmd_with_another_constant_bank_is_the_one_built_with_it() -> None:
    base = dict(program_address=0x1000, grid=(3, 2, 1), block=(64, 2, 1), constant0_size=0x230,
                registers=24, shared_bytes=1024, local_bytes_per_thread=0, shared_limit_kib=228)
    template = qmd.QMD(constant0_address=0, **base).build()
    for address in (0x20_0000_0100, 0x1_FFFF_FF00, 0x1FFFF_0000_0000):
        assert qmd.with_constant0(template, address) == qmd.QMD(constant0_address=address, **base).build()
