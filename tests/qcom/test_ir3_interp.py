"""The mock's ir3 interpreter (mockgpu/qcom/ir3interp.py), one instruction at a time against numpy:
each test assembles a few lines with drivers.qcom.ir3, seeds registers through the const file and
checks what the lanes hold; unsupported instructions and footprint overruns are IR3Fault naming them."""
from __future__ import annotations

import numpy as np
import pytest

from drivers.qcom.ir3.asm import assemble_program
from mockgpu.qcom import ir3interp

LANES = 32
RNG = np.random.default_rng(7)


def run(text: str, consts: np.ndarray, *, footprint: int = 8, memory: bytearray | None = None,
        local_memory: int = 0) -> np.ndarray:
    """Run `text` (followed by `end`) over one group of LANES threads; returns the registers."""
    program = assemble_program(text + "\nend\n")
    memory = bytearray(4096) if memory is None else memory
    seen = {}

    def read(address, size):
        return bytes(memory[address:address + size])

    def write(address, data):
        memory[address:address + len(data)] = data

    original = ir3interp.Interpreter.run_group

    def capture(self, group):
        original(self, group)
        seen["regs"] = group.regs

    ir3interp.Interpreter.run_group = capture
    try:
        ir3interp.run(program.words, groups=(1, 1, 1), local_size=(LANES, 1, 1),
                      consts=list(consts.view(np.uint32)), local_memory=local_memory,
                      footprint=footprint, local_id_regid=0, workgroup_id_regid=4 * 48,
                      read=read, write=write)
    finally:
        ir3interp.Interpreter.run_group = original
    return seen["regs"]


def lane_values(regs: np.ndarray, regid: int, dtype) -> np.ndarray:
    return regs[regid].view(dtype)


# the lane id is in r0.x; c0.x and c0.y are two per-test numbers
@pytest.mark.parametrize("op, reference", [
    ("add.u", lambda a, b: a + b), ("sub.u", lambda a, b: a - b), ("mull.u", lambda a, b: a * b),
    ("and.b", np.bitwise_and), ("or.b", np.bitwise_or), ("xor.b", np.bitwise_xor),
    ("min.u", np.minimum), ("max.u", np.maximum),
    ("shl.b", lambda a, b: a << (b & 31)), ("shr.b", lambda a, b: a >> (b & 31)),
])
def test_integer_binary_ops_match_numpy(op, reference):
    consts = np.array([RNG.integers(0, 2**32), RNG.integers(0, 40), 0, 0], dtype=np.uint32)
    regs = run(f"mov.u32u32 r1.x, c0.x\nmov.u32u32 r1.y, c0.y\nadd.u r1.x, r1.x, r0.x\n"
               f"{op} r2.x, r1.x, r1.y", consts)
    lanes = np.arange(LANES, dtype=np.uint32) + consts[0]
    with np.errstate(all="ignore"):
        expected = reference(lanes, np.full(LANES, consts[1], dtype=np.uint32)).astype(np.uint32)
    np.testing.assert_array_equal(regs[8], expected)


def test_signed_ops_and_arithmetic_shift():
    consts = np.array([-5, 3, 0, 0], dtype=np.int32)
    regs = run("mov.u32u32 r1.x, c0.x\nmov.u32u32 r1.y, c0.y\nsub.s r2.x, r1.x, r0.x\n"
               "ashr.b r2.y, r2.x, r1.y\nmax.s r2.z, r2.x, r1.y\nmin.s r2.w, r2.x, r1.y\n"
               "sub.s r3.x, r1.x, 3", consts)
    values = -5 - np.arange(LANES, dtype=np.int32)
    np.testing.assert_array_equal(lane_values(regs, 8, np.int32), values)
    np.testing.assert_array_equal(lane_values(regs, 9, np.int32), values >> 3)
    np.testing.assert_array_equal(lane_values(regs, 10, np.int32), np.maximum(values, 3))
    np.testing.assert_array_equal(lane_values(regs, 11, np.int32), np.minimum(values, 3))
    assert (lane_values(regs, 12, np.int32) == -8).all()


def test_float_ops_conversions_and_flut_immediates():
    consts = np.array([1.75, -0.5, 0, 0], dtype=np.float32)
    regs = run("cov.u32f32 r1.x, r0.x\nmov.f32f32 r1.y, c0.x\nmov.f32f32 r1.z, c0.y\n"
               "add.f r2.x, r1.x, r1.y\nmul.f r2.y, r2.x, r1.z\nmad.f32 r2.z, r2.x, r1.z, r1.y\n"
               "cov.f32s32 r2.w, r2.y\nadd.f r3.x, r1.x, (1.0)\nabsneg.f r3.y, (neg)r2.x\n"
               "cmps.f.lt r3.z, r2.y, r1.z\nmov.f32f32 r3.w, (2.500000)", consts)
    x = np.arange(LANES, dtype=np.float32)
    total = x + np.float32(1.75)
    product = total * np.float32(-0.5)
    np.testing.assert_array_equal(lane_values(regs, 8, np.float32), total)
    np.testing.assert_array_equal(lane_values(regs, 9, np.float32), product)
    np.testing.assert_array_equal(lane_values(regs, 10, np.float32),
                                  (total.astype(np.float64) * -0.5 + 1.75).astype(np.float32))
    np.testing.assert_array_equal(lane_values(regs, 11, np.int32), np.trunc(product).astype(np.int32))
    np.testing.assert_array_equal(lane_values(regs, 12, np.float32), x + 1)
    np.testing.assert_array_equal(lane_values(regs, 13, np.float32), -total)
    np.testing.assert_array_equal(regs[14], (product < -0.5).astype(np.uint32))
    assert (lane_values(regs, 15, np.float32) == 2.5).all()


def test_rpt_repeats_destination_and_marked_sources():
    consts = np.array([10, 20, 30, 40], dtype=np.uint32)
    regs = run("mov.u32u32 r1.x, c0.x\nmov.u32u32 r1.y, c0.y\nmov.u32u32 r1.z, c0.z\n"
               "mov.u32u32 r1.w, c0.w\n(rpt3)add.u r2.x, (r)r1.x, r0.x", consts)
    lanes = np.arange(LANES, dtype=np.uint32)
    for component, base in enumerate((10, 20, 30, 40)):
        np.testing.assert_array_equal(regs[8 + component], lanes + base)


def test_sel_and_mad_u24():
    consts = np.array([7, 9, 0x1000001, 0], dtype=np.uint32)
    regs = run("mov.u32u32 r1.x, c0.x\nmov.u32u32 r1.y, c0.y\nand.b r1.z, r0.x, 1\n"
               "sel.b32 r2.x, r1.x, r1.z, r1.y\nmov.u32u32 r1.w, c0.z\n"
               "mad.u24 r2.y, r1.w, r0.x, r1.x", consts)
    lanes = np.arange(LANES, dtype=np.uint32)
    np.testing.assert_array_equal(regs[8], np.where(lanes & 1, 7, 9))
    np.testing.assert_array_equal(regs[9], (1 * lanes + 7).astype(np.uint32))


def test_divergent_branch_and_loop_run_per_lane():
    # lanes below 8 add 100 once; every lane loops lane-id times adding 1
    text = """mov.u32u32 r1.x, 0
cmps.u.ge p0.x, r0.x, 8
(rpt5)nop
br p0.x, #skip
add.u r1.x, r1.x, 100
skip:
mov.u32u32 r1.y, 0
loop:
cmps.u.ge p0.x, r1.y, r0.x
(rpt5)nop
br p0.x, #done
add.u r1.x, r1.x, 1
add.u r1.y, r1.y, 1
jump #loop
done:
nop"""
    regs = run(text, np.zeros(4, dtype=np.uint32))
    lanes = np.arange(LANES, dtype=np.uint32)
    np.testing.assert_array_equal(regs[4], lanes + np.where(lanes < 8, 100, 0))


def test_global_and_local_memory():
    memory = bytearray(4096)
    memory[256:256 + 4 * LANES] = np.arange(LANES, dtype=np.uint32).tobytes()
    consts = np.array([256, 0, 1024, 0], dtype=np.uint32)
    text = """mov.u32u32 r1.x, c0.x
mov.u32u32 r1.y, c0.y
mov.u32u32 r1.z, c0.z
mov.u32u32 r1.w, c0.w
ldg.a.u32 r2.x, g[r1.x+(r0.x)<<2], 1
shl.b r2.y, r0.x, 2
(sy)add.u r2.x, r2.x, r2.x
stl.u32 l[r2.y], r2.x, 1
bar
ldl.u32 r2.z, l[r2.y], 1
(ss)nop
stg.a.u32 g[r1.z+(r0.x)<<2], r2.z, 1
stg.u32 g[r1.z-4], r2.z, 1"""
    run(text, consts, memory=memory, local_memory=1024)
    stored = np.frombuffer(bytes(memory[1024:1024 + 4 * LANES]), dtype=np.uint32)
    np.testing.assert_array_equal(stored, 2 * np.arange(LANES, dtype=np.uint32))
    assert int.from_bytes(memory[1020:1024], "little") == 2 * (LANES - 1)  # the last lane wins


def test_an_unsupported_instruction_is_a_fault_naming_it():
    with pytest.raises(ir3interp.IR3Fault, match=r"rcp is not modelled.*instruction 1"):
        run("mov.u32u32 r1.x, 1\nrcp r1.y, r1.x", np.zeros(4, dtype=np.uint32))


def test_a_register_outside_the_footprint_is_a_fault():
    with pytest.raises(ir3interp.IR3Fault, match="r3.x is outside the register footprint"):
        run("mov.u32u32 r3.x, 1", np.zeros(4, dtype=np.uint32), footprint=3)


def test_const_past_the_loaded_file_and_local_overrun_fault():
    with pytest.raises(ir3interp.IR3Fault, match="c1.x is past the const file"):
        run("mov.u32u32 r1.x, c1.x", np.zeros(4, dtype=np.uint32))
    with pytest.raises(ir3interp.IR3Fault, match="local memory access"):
        run("shl.b r1.x, r0.x, 6\nstl.u32 l[r1.x], r0.x, 1", np.zeros(4, dtype=np.uint32),
            local_memory=1024)


def test_a_kernel_that_never_ends_is_a_hang(monkeypatch):
    monkeypatch.setattr(ir3interp, "MAX_STEPS", 1000)
    with pytest.raises(ir3interp.IR3Fault, match="hang"):
        run("loop:\njump #loop", np.zeros(4, dtype=np.uint32))


def test_reading_a_loaded_register_before_sy_or_ss_is_a_fault():
    consts = np.array([256, 0, 0, 0], dtype=np.uint32)
    with pytest.raises(ir3interp.IR3Fault, match=r"r2.x is read before a \(sy\)"):
        run("mov.u32u32 r1.x, c0.x\nmov.u32u32 r1.y, c0.y\nldg.a.u32 r2.x, g[r1.x+(r0.x)<<2], 1\n"
            "add.u r2.y, r2.x, 1", consts)
    with pytest.raises(ir3interp.IR3Fault, match=r"r2.x is read before a \(ss\)"):
        run("shl.b r1.x, r0.x, 2\nldl.u32 r2.x, l[r1.x], 1\n(sy)add.u r2.y, r2.x, 1", consts,
            local_memory=1024)
    regs = run("shl.b r1.x, r0.x, 2\nldl.u32 r2.x, l[r1.x], 1\n(ss)add.u r2.y, r2.x, 1", consts,
               local_memory=1024)
    assert (regs[9] == 1).all()
