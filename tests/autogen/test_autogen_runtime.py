"""autogen.runtime: struct views over buffers, bitfields, arrays, flexible arrays and errors (no libclang)."""
from __future__ import annotations

import mmap
import pathlib
import sys

import pytest

from autogen.runtime import (
    U8, U16, U32, U64, I8, I32, Array, Bits, Flex, LayoutError, Struct, c_div, c_mod, c_signed,
)
from hal.region import MemoryRegion


class Header(Struct):
    SIZE = 8
    ALIGN = 4
    LAYOUT = (("kind", 0, U16), ("version", 2, U16), ("next", 4, U32))


class Packet(Struct):
    SIZE = 32
    ALIGN = 8
    LAYOUT = (
        ("header", 0, Header),
        ("opcode", 8, Bits(1, 0, 4)),
        ("sub", 8, Bits(2, 4, 9)),
        ("delta", 9, Bits(1, 5, 3, True)),
        ("count", 12, I32),
        ("address", 16, U64),
        ("name", 24, Array(U8, 6)),
        ("pairs", 30, Array(Array(I8, 1), 2)),
        ("payload", 32, Flex(U32)),
    )


def test_fields_describe_the_layout():
    assert Packet.FIELDS["address"] == (16, 8, "uint", U64, 0, 0)
    assert Packet.FIELDS["sub"][:3] == (8, 2, "bits")
    assert Packet.FIELDS["payload"][:3] == (32, 0, "flex")
    assert Packet.FIELDS["header"].spec is Header
    assert Packet.offset_of("count") == 12


def test_constructor_zero_fills_and_sets_fields():
    packet = Packet(count=-3, address=0x1122334455667788, opcode=9)
    assert len(packet.buffer) == Packet.SIZE
    assert packet.count == -3
    raw = bytes(packet)
    assert raw[16:24] == (0x1122334455667788).to_bytes(8, "little")
    assert raw[8] == 9
    assert raw[12:16] == (-3).to_bytes(4, "little", signed=True)


def test_from_buffer_is_a_view_with_writes_going_through():
    backing = bytearray(64)
    packet = Packet.from_buffer(backing, 16)
    packet.address = 0xDEADBEEF
    packet.header.next = 5
    assert backing[32:36] == (0xDEADBEEF).to_bytes(4, "little")
    assert backing[20] == 5
    backing[28] = 0x7F
    assert packet.count == 0x7F
    assert packet.buffer.readonly is False and len(packet.buffer) == 32


def test_from_buffer_over_mmap_and_region():
    anonymous = mmap.mmap(-1, 4096)
    view = Header.from_buffer(anonymous, 8)
    view.next = 0xAABBCCDD
    assert anonymous[12:16] == (0xAABBCCDD).to_bytes(4, "little")
    region = MemoryRegion(bytearray(64))
    over_region = Header.from_buffer(region, 16)
    over_region.kind = 0x1234
    assert region.read32(16) == 0x1234
    del view, over_region
    region.release()
    anonymous.close()


def test_from_bytes_copies():
    data = bytes(Header(kind=1, version=2, next=3))
    copy = Header.from_bytes(data)
    copy.kind = 9
    assert data[0] == 1 and copy.kind == 9
    assert copy == Header(kind=9, version=2, next=3)


def test_bitfields_get_set_and_range():
    packet = Packet()
    packet.sub = 0x1FF
    packet.opcode = 0xA
    assert (packet.opcode, packet.sub) == (0xA, 0x1FF)
    packet.delta = -4
    assert packet.delta == -4
    assert packet.sub == 0x1FF  # neighbours untouched
    with pytest.raises(LayoutError, match="does not fit 4 bits"):
        packet.opcode = 16
    with pytest.raises(LayoutError):
        packet.delta = 4


def test_integer_ranges():
    header = Header()
    with pytest.raises(LayoutError, match="Header.kind"):
        header.kind = 0x10000
    header.next = -(1 << 31)  # C's (1 << 31) flag stored into an unsigned member
    assert header.next == 0x80000000
    with pytest.raises(LayoutError):
        header.next = -(1 << 32)


def test_arrays_are_views_and_accept_sequences_and_bytes():
    packet = Packet()
    packet.name = b"gpu"
    assert packet.name.tobytes() == b"gpu\0\0\0"
    packet.name[5] = 0x21
    assert bytes(packet)[29] == 0x21
    packet.pairs = [[1], [-1]]
    assert packet.pairs.tolist() == [[1], [-1]]
    assert packet.name[-1] == 0x21 and packet.name[0:2] == [ord("g"), ord("p")]
    with pytest.raises(LayoutError):
        packet.name = b"too long!"
    with pytest.raises(IndexError):
        packet.name[6]


def test_flexible_array_reaches_the_end_of_the_buffer():
    backing = bytearray(Packet.SIZE + 12)
    packet = Packet.from_buffer(backing)
    assert len(packet.payload) == 3
    packet.payload[2] = 0xCAFEF00D
    assert backing[40:44] == (0xCAFEF00D).to_bytes(4, "little")
    assert len(Packet().payload) == 0
    assert "payload" not in Packet().to_dict()


def test_nested_struct_assignment_copies():
    packet = Packet()
    packet.header = Header(kind=7, next=8)
    assert packet.header.kind == 7
    packet.header = {"version": 3}
    assert (packet.header.kind, packet.header.version) == (7, 3)
    with pytest.raises(LayoutError):
        packet.header = Packet()


def test_errors_for_bad_buffers_and_names():
    with pytest.raises(LayoutError, match="writable"):
        Header.from_buffer(bytes(8))
    with pytest.raises(LayoutError, match="does not fit"):
        Header.from_buffer(bytearray(10), 4)
    with pytest.raises(LayoutError):
        Header.from_bytes(b"\0" * 4)
    with pytest.raises(TypeError, match="members: kind, version, next"):
        Header(knid=1)
    with pytest.raises(AttributeError):
        Header().typo = 1


def test_repr_and_dict():
    header = Header(kind=0x10, version=1, next=2)
    assert repr(header) == "Header(kind=0x10, version=0x1, next=0x2)"
    assert Packet(count=1).to_dict()["header"] == {"kind": 0, "version": 0, "next": 0}


def test_c_arithmetic_helpers():
    assert c_div(-7, 2) == -3 and c_mod(-7, 2) == -1 and c_div(7, -2) == -3
    assert c_signed(0xFF, 8) == -1 and c_signed(0x7F, 8) == 127


def test_generated_modules_do_not_import_libclang():
    import subprocess

    code = ("import sys, autogen.linux.vfio, autogen.linux.pci_regs\n"
            "print(any('clang' in name for name in sys.modules))")
    repository = pathlib.Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=repository)
    assert result.stdout.strip() == "False"
