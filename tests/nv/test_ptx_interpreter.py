"""Tests of the mock's PTX interpreter on small hand-written kernels: divergence and reconvergence,
barriers, integer and float semantics, memory spaces, atomics, and the errors for what PTX or the
hardware would not accept (unsupported instructions, misaligned or out-of-range accesses, a
divergent barrier, a kernel that never ends, syntax errors)."""
from __future__ import annotations

import numpy as np
import pytest

from hal.errors import BadBinary, DeviceTimeout, InvalidArgument
from mockgpu.nv.ptx import (BarrierDivergence, FlatMemory, Kernel, MemoryFault, PTXSyntaxError,
                            UnsupportedInstruction)

BASE = 0x1000_0000
HEADER = ".version 8.0\n.target sm_80\n.address_size 64\n"


def _kernel(body: str, params: str = ".param .u64 out", registers: str = "", name: str = "k",
            extra: str = "") -> Kernel:
    text = (f"{HEADER}{extra}\n.visible .entry {name}({params})\n{{\n"
            f".reg .pred %p<8>;\n.reg .b32 %r<32>;\n.reg .b64 %rd<16>;\n.reg .f32 %f<16>;\n"
            f"{registers}\n"
            f"ld.param.u64 %rd1, [out];\nmov.u32 %r1, %tid.x;\nmul.wide.u32 %rd2, %r1, 4;\n"
            f"add.s64 %rd3, %rd1, %rd2;\n{body}\nret;\n}}\n")
    return Kernel.from_ptx(text, name)


def _run(kernel: Kernel, lanes: int = 32, memory: FlatMemory | None = None, grid: int = 1,
         dtype: type = np.uint32, **kwargs: object) -> np.ndarray:
    memory = memory or FlatMemory(BASE, 1 << 16)
    kernel.run((grid,), (lanes,), kernel.pack_params(BASE), memory, **kwargs)
    return np.frombuffer(memory.read(BASE, 4 * lanes), dtype=dtype)


def test_if_else_divergence_reconverges() -> None:
    kernel = _kernel("""
    and.b32 %r2, %r1, 1;
    setp.eq.u32 %p1, %r2, 0;
    @%p1 bra EVEN;
    mul.lo.u32 %r3, %r1, 3;
    bra JOIN;
EVEN:
    add.u32 %r3, %r1, 100;
JOIN:
    add.u32 %r3, %r3, 1;
    st.global.u32 [%rd3], %r3;""")
    lanes = np.arange(32)
    expected = np.where(lanes % 2 == 0, lanes + 100, lanes * 3) + 1
    np.testing.assert_array_equal(_run(kernel), expected)


def test_loops_with_per_thread_trip_counts() -> None:
    kernel = _kernel("""
    mov.u32 %r2, 0;
    mov.u32 %r3, 0;
LOOP:
    setp.ge.u32 %p1, %r3, %r1;
    @%p1 bra DONE;
    add.u32 %r2, %r2, %r3;
    add.u32 %r3, %r3, 1;
    bra LOOP;
DONE:
    st.global.u32 [%rd3], %r2;""")
    lanes = np.arange(40)
    np.testing.assert_array_equal(_run(kernel, lanes=40), lanes * (lanes - 1) // 2)


def test_barrier_orders_shared_memory_between_threads() -> None:
    kernel = _kernel("""
    shl.b32 %r2, %r1, 2;
    mov.u32 %r3, buf;
    add.u32 %r4, %r3, %r2;
    mul.lo.u32 %r5, %r1, 7;
    st.shared.u32 [%r4], %r5;
    bar.sync 0;
    mov.u32 %r6, %ntid.x;
    sub.u32 %r7, %r6, 1;
    sub.u32 %r8, %r7, %r1;
    shl.b32 %r9, %r8, 2;
    add.u32 %r10, %r3, %r9;
    ld.shared.u32 %r11, [%r10];
    st.global.u32 [%rd3], %r11;""", registers=".shared .align 4 .b8 buf[256];")
    np.testing.assert_array_equal(_run(kernel, lanes=64), (63 - np.arange(64)) * 7)


def test_barrier_skipped_by_exited_threads_is_fine_but_divergent_barrier_is_not() -> None:
    exits = _kernel("""
    setp.gt.u32 %p1, %r1, 7;
    @%p1 ret;
    bar.sync 0;
    st.global.u32 [%rd3], %r1;""")
    assert list(_run(exits, lanes=16)[:8]) == list(range(8))
    divergent = _kernel("""
    setp.gt.u32 %p1, %r1, 7;
    @%p1 bra SKIP;
    bar.sync 0;
SKIP:
    st.global.u32 [%rd3], %r1;
    bar.sync 0;""")
    with pytest.raises(BarrierDivergence, match=r"reached by 8 of 16 live threads"):
        _run(divergent, lanes=16)


def test_integer_semantics() -> None:
    kernel = _kernel("""
    sub.s32 %r2, 3, %r1;
    div.s32 %r3, %r2, -2;
    rem.s32 %r4, %r2, -2;
    st.global.u32 [%rd3], %r3;
    st.global.u32 [%rd3+128], %r4;
    shl.b32 %r5, 1, %r1;
    st.global.u32 [%rd3+256], %r5;
    shr.s32 %r6, -64, %r1;
    st.global.u32 [%rd3+384], %r6;
    mul.hi.u32 %r7, %r1, -1;
    st.global.u32 [%rd3+512], %r7;
    mul.wide.s32 %rd4, %r2, -3;
    cvt.u32.u64 %r8, %rd4;
    st.global.u32 [%rd3+640], %r8;
    div.u32 %r9, 7, %r1;
    st.global.u32 [%rd3+768], %r9;""")
    memory = FlatMemory(BASE, 1 << 16)
    _run(kernel, lanes=32, memory=memory)
    table = np.frombuffer(memory.read(BASE, 7 * 128), dtype=np.int32).reshape(7, 32)
    lanes = np.arange(32)
    values = 3 - lanes
    np.testing.assert_array_equal(table[0], np.trunc(values / -2).astype(np.int32))
    np.testing.assert_array_equal(table[1], values - np.trunc(values / -2).astype(np.int32) * -2)
    np.testing.assert_array_equal(table[2].view(np.uint32), (1 << lanes) & 0xFFFFFFFF)
    np.testing.assert_array_equal(table[3], -64 >> np.minimum(lanes, 31))
    np.testing.assert_array_equal(table[4].view(np.uint32),
                                  (lanes.astype(np.uint64) * 0xFFFFFFFF >> 32).astype(np.uint32))
    np.testing.assert_array_equal(table[5], (values * -3).astype(np.int32))
    quotient = table[6].view(np.uint32)
    assert quotient[0] == 0xFFFFFFFF
    np.testing.assert_array_equal(quotient[1:], 7 // lanes[1:])


def test_float_compare_select_and_conversions() -> None:
    kernel = _kernel("""
    cvt.rn.f32.u32 %f1, %r1;
    sub.f32 %f2, %f1, 0f41800000;
    mul.f32 %f3, %f2, 0f4F000000;
    cvt.rzi.s32.f32 %r2, %f3;
    st.global.u32 [%rd3], %r2;
    div.rn.f32 %f4, 0f00000000, %f2;
    setp.nan.f32 %p1, %f4, %f4;
    selp.u32 %r3, 1, 2, %p1;
    st.global.u32 [%rd3+128], %r3;
    setp.ltu.f32 %p2, %f4, 0f00000000;
    selp.u32 %r4, 7, 9, %p2;
    st.global.u32 [%rd3+256], %r4;""")
    memory = FlatMemory(BASE, 1 << 16)
    _run(kernel, lanes=32, memory=memory)
    table = np.frombuffer(memory.read(BASE, 3 * 128), dtype=np.int32).reshape(3, 32)
    lanes = np.arange(32)
    # (lane - 16) * 2^31 saturates to the int32 range.
    expected = np.clip((lanes - 16) * 2.0**31, -2**31, 2**31 - 1).astype(np.int64)
    np.testing.assert_array_equal(table[0], expected)
    nan_at_16 = np.where(lanes == 16, 1, 2)
    np.testing.assert_array_equal(table[1], nan_at_16)
    np.testing.assert_array_equal(table[2], np.where(lanes == 16, 7, np.where(lanes < 16, 9, 9)))


def test_atomics_take_effect_in_lane_order() -> None:
    kernel = _kernel("""
    ld.param.u64 %rd5, [counter];
    atom.global.add.u32 %r2, [%rd5], %r1;
    st.global.u32 [%rd3], %r2;
    and.b32 %r3, %r1, 3;
    shl.b32 %r4, %r3, 2;
    mov.u32 %r5, bins;
    add.u32 %r6, %r5, %r4;
    atom.shared.add.u32 %r7, [%r6], 1;
    bar.sync 0;
    setp.gt.u32 %p1, %r1, 3;
    @%p1 bra END;
    ld.shared.u32 %r8, [%r6];
    st.global.u32 [%rd3+256], %r8;
    atom.global.max.s32 %r9, [%rd5+4], %r1;
END:""", params=".param .u64 out, .param .u64 counter",
                     registers=".shared .align 4 .b8 bins[16];")
    memory = FlatMemory(BASE, 1 << 16)
    counter = BASE + 0x1000
    kernel.run((1,), (32,), kernel.pack_params(BASE, counter), memory)
    old = np.frombuffer(memory.read(BASE, 128), dtype=np.uint32)
    np.testing.assert_array_equal(old, np.concatenate([[0], np.cumsum(np.arange(31))]))
    assert np.frombuffer(memory.read(counter, 8), dtype=np.uint32).tolist() == [496, 3]
    assert np.frombuffer(memory.read(BASE + 256, 16), dtype=np.uint32).tolist() == [8, 8, 8, 8]


def test_generic_addresses_vectors_and_local_memory() -> None:
    kernel = _kernel("""
    mov.u64 %rd5, scratch;
    cvta.shared.u64 %rd6, %rd5;
    mov.b64 %rd7, {%r1, %r1};
    mov.u64 %rd8, depot;
    add.u64 %rd9, %rd8, 8;
    st.local.v2.u32 [%rd9], {%r1, %r1};
    ld.local.u64 %rd10, [%rd9];
    setp.eq.u64 %p1, %rd10, %rd7;
    selp.u32 %r2, 1, 0, %p1;
    setp.eq.u32 %p2, %r1, 0;
    @!%p2 bra SKIP;
    st.v4.u32 [%rd6], {%r2, 5, 6, 7};
SKIP:
    bar.sync 0;
    ld.shared.v4.u32 {%r3, %r4, %r5, %r6}, [scratch];
    add.u32 %r7, %r3, %r4;
    add.u32 %r7, %r7, %r5;
    add.u32 %r7, %r7, %r6;
    mov.b64 {%r8, %r9}, %rd7;
    add.u32 %r7, %r7, %r9;
    st.global.u32 [%rd3], %r7;""", registers=".shared .align 16 .b8 scratch[16];\n"
                                               ".local .align 8 .b8 depot[16];")
    lanes = np.arange(32)
    np.testing.assert_array_equal(_run(kernel), 1 + 5 + 6 + 7 + lanes)


def test_dynamic_shared_memory_follows_the_static_variables() -> None:
    kernel = _kernel("""
    mov.u32 %r2, dyn;
    shl.b32 %r3, %r1, 2;
    add.u32 %r4, %r2, %r3;
    st.shared.u32 [%r4], %r2;
    ld.shared.u32 %r5, [%r4];
    st.global.u32 [%rd3], %r5;""", registers=".shared .align 4 .b8 fixed[20];",
                     extra=".extern .shared .align 16 .b8 dyn[];")
    assert kernel.static_shared_size == 32
    assert (_run(kernel, lanes=8, shared_bytes=32) == 32).all()
    with pytest.raises(MemoryFault, match=r"\.shared access at 0x40\+4 outside its 0x40 bytes"):
        _run(kernel, lanes=16, shared_bytes=32)


def test_memory_faults_name_space_address_and_line() -> None:
    misaligned = _kernel("add.s64 %rd4, %rd3, 2;\nst.global.u32 [%rd4], %r1;")
    with pytest.raises(MemoryFault, match=r"misaligned 4-byte \.global access at 0x10000002 "
                                          r"\(PTX line \d+\)"):
        _run(misaligned)
    outside = _kernel("add.s64 %rd4, %rd3, 0x100000;\nst.global.u32 [%rd4], %r1;")
    with pytest.raises(MemoryFault, match="outside the memory"):
        _run(outside)
    local = _kernel("mov.u64 %rd4, depot;\nst.local.u32 [%rd4+8], %r1;",
                    registers=".local .align 4 .b8 depot[8];")
    with pytest.raises(MemoryFault, match=r"\.local access at 0x8\+4 outside its 0x8 bytes"):
        _run(local)


def test_unsupported_instruction_names_it_and_its_line() -> None:
    expected = r"PTX line 16: 'prmt.b32 %r2, %r1, %r3, %r4' .*opcode prmt"
    with pytest.raises(UnsupportedInstruction, match=expected):
        _kernel("prmt.b32 %r2, %r1, %r3, %r4;")
    with pytest.raises(UnsupportedInstruction, match="rounding mode .rz"):
        _kernel("add.rz.f32 %f1, %f2, %f3;")


def test_syntax_errors_name_the_line() -> None:
    with pytest.raises(PTXSyntaxError, match="PTX line 4: unexpected"):
        Kernel.from_ptx(HEADER + "bogus\n", "k")
    with pytest.raises(PTXSyntaxError, match="branch to unknown label NOWHERE"):
        _kernel("bra NOWHERE;")
    assert issubclass(PTXSyntaxError, BadBinary)
    with pytest.raises(InvalidArgument, match="no entry 'other'"):
        Kernel.from_ptx(HEADER + ".visible .entry k()\n{\nret;\n}\n", "other")


def test_a_kernel_that_never_ends_times_out() -> None:
    kernel = _kernel("SPIN:\nbra SPIN;")
    with pytest.raises(DeviceTimeout, match=r"did not finish within 1000 steps .*bra SPIN"):
        _run(kernel, max_steps=1000)


def test_launch_checks() -> None:
    kernel = Kernel.from_ptx(HEADER + ".visible .entry k(.param .u32 n)\n.maxntid 64, 1, 1\n{\nret;\n}\n",
                             "k")
    memory = FlatMemory(BASE, 16)
    with pytest.raises(InvalidArgument, match="does not satisfy .maxntid"):
        kernel.run((1,), (128,), kernel.pack_params(1), memory)
    with pytest.raises(InvalidArgument, match="0 bytes of parameters, the entry's block is 4"):
        kernel.run((1,), (32,), b"", memory)
    with pytest.raises(InvalidArgument, match="more than 1024"):
        kernel.run((1,), (32, 64), kernel.pack_params(1), memory)
    assert kernel.run((2, 2), (8, 2), kernel.pack_params(1), memory) == 4


def test_special_registers_over_a_3d_grid() -> None:
    kernel = _kernel("""
    mov.u32 %r2, %ctaid.y;
    mov.u32 %r3, %nctaid.x;
    mov.u32 %r4, %ctaid.x;
    mad.lo.u32 %r5, %r2, %r3, %r4;
    mov.u32 %r6, %ntid.x;
    mov.u32 %r7, %ntid.y;
    mul.lo.u32 %r8, %r6, %r7;
    mov.u32 %r9, %tid.y;
    mad.lo.u32 %r10, %r9, %r6, %r1;
    mad.lo.u32 %r11, %r5, %r8, %r10;
    mul.wide.u32 %rd6, %r11, 4;
    add.s64 %rd7, %rd1, %rd6;
    mov.u32 %r12, %laneid;
    shl.b32 %r13, %r11, 8;
    or.b32 %r14, %r13, %r12;
    st.global.u32 [%rd7], %r14;""")
    memory = FlatMemory(BASE, 1 << 16)
    kernel.run((3, 2), (8, 5), kernel.pack_params(BASE), memory)
    out = np.frombuffer(memory.read(BASE, 4 * 240), dtype=np.uint32)
    np.testing.assert_array_equal(out >> 8, np.arange(240))
    np.testing.assert_array_equal(out & 0xFF, np.tile(np.arange(40) % 32, 6))


def test_debug_information_is_skipped() -> None:
    text = (HEADER + '.file 1 "/src/kernel.cu"\n'
            ".visible .entry k(.param .u64 out)\n{\n.reg .b32 %r<2>;\n.reg .b64 %rd<2>;\n"
            ".loc 1 3 5\nld.param.u64 %rd1, [out];\n.loc 1 4 1, function_name $L__info_string0, "
            "inlined_at 1 7 3\nmov.u32 %r1, 42;\nst.global.u32 [%rd1], %r1;\nret;\n}\n"
            ".section .debug_abbrev\n{\n.b8 17\n.b8 1\n}\n")
    kernel = Kernel.from_ptx(text, "k")
    assert [i.opcode for i in kernel.instructions] == ["ld", "mov", "st", "ret"]
    memory = FlatMemory(BASE, 16)
    kernel.run((1,), (1,), kernel.pack_params(BASE), memory)
    assert memory.read(BASE, 4) == (42).to_bytes(4, "little")


def test_undeclared_registers_name_the_line() -> None:
    with pytest.raises(PTXSyntaxError, match=r"PTX line 16: register %q1 is not declared in k"):
        _kernel("mov.u32 %q1, 1;")
    with pytest.raises(PTXSyntaxError, match=r"PTX line 16: register %p9 is not declared"):
        _kernel("@%p9 bra END;\nEND:")


def test_array_element_addresses() -> None:
    kernel = _kernel("""
    mov.u64 %rd5, words[3];
    mov.u32 %r2, bytes[5];
    cvt.u32.u64 %r3, %rd5;
    add.u32 %r4, %r3, %r2;
    st.global.u32 [%rd3], %r4;""", registers=".shared .align 4 .b32 words[4];\n"
                                               ".shared .align 1 .b8 bytes[8];")
    # words at 0 (element 3 at byte 12), bytes at 16 (element 5 at byte 21)
    assert (_run(kernel, lanes=4) == 12 + 21).all()
