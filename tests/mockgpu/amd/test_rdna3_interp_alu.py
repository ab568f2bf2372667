"""Single VALU instructions of the mock GPU's RDNA3 interpreter against numpy.

Each test places one instruction (its llvm-mc-16 -mcpu=gfx1100 encoding, checked against llvm-mc-16
where it is installed) and s_endpgm in VRAM, launches one wave32 with random source VGPRs and
compares the destination lanes with the instruction's pseudocode (RDNA3 ISA guide) written in
numpy. Sources cover the edge cases: bits above 23 set (the 24-bit multiplies must ignore them),
negative 24-bit values, sums that wrap before a shift, shifts by 0 and 63."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from autogen.amd.regs import gc_11_0_0
from mockgpu.amd.mec import Dispatch
from mockgpu.amd.rdna3 import interp
from tools.interp_bench import BareGPU

S_ENDPGM = bytes([0x00, 0x00, 0xB0, 0xBF])
# llvm-mc-16 -arch=amdgcn -mcpu=gfx1100 -show-encoding
ENCODINGS = {
    "v_mad_u32_u24 v3, v1, v2, v4": bytes([0x03, 0x00, 0x0B, 0xD6, 0x01, 0x05, 0x12, 0x04]),
    "v_mad_i32_i24 v3, v1, v2, v4": bytes([0x03, 0x00, 0x0A, 0xD6, 0x01, 0x05, 0x12, 0x04]),
    "v_mul_u32_u24_e32 v3, v1, v2": bytes([0x01, 0x05, 0x06, 0x16]),
    "v_mul_i32_i24_e32 v3, v1, v2": bytes([0x01, 0x05, 0x06, 0x12]),
    "v_add_lshl_u32 v3, v1, v2, v4": bytes([0x03, 0x00, 0x47, 0xD6, 0x01, 0x05, 0x12, 0x04]),
    "v_ashrrev_i64 v[4:5], v1, v[2:3]": bytes([0x04, 0x00, 0x3E, 0xD7, 0x01, 0x05, 0x02, 0x00]),
    "v_cndmask_b32_e64 v3, -v1, v2, vcc_lo": bytes([0x03, 0x00, 0x01, 0xD5, 0x01, 0x05, 0xAA, 0x21]),
    "v_cndmask_b32_e64 v3, |v1|, -|v2|, vcc_lo":
        bytes([0x03, 0x03, 0x01, 0xD5, 0x01, 0x05, 0xAA, 0x41]),
    "v_sin_f32_e32 v3, v1": bytes([0x01, 0x6B, 0x06, 0x7E]),
    "v_cos_f32_e32 v3, v1": bytes([0x01, 0x6D, 0x06, 0x7E]),
    "v_max3_u32 v3, v1, v2, v4": bytes([0x03, 0x00, 0x1E, 0xD6, 0x01, 0x05, 0x12, 0x04]),
    "v_max3_i32 v3, v1, v2, v4": bytes([0x03, 0x00, 0x1D, 0xD6, 0x01, 0x05, 0x12, 0x04]),
    "v_max3_f32 v3, v1, v2, v4": bytes([0x03, 0x00, 0x1C, 0xD6, 0x01, 0x05, 0x12, 0x04]),
    "v_min3_u32 v3, v1, v2, v4": bytes([0x03, 0x00, 0x1B, 0xD6, 0x01, 0x05, 0x12, 0x04]),
    "v_min3_i32 v3, v1, v2, v4": bytes([0x03, 0x00, 0x1A, 0xD6, 0x01, 0x05, 0x12, 0x04]),
    "v_min3_f32 v3, v1, v2, v4": bytes([0x03, 0x00, 0x19, 0xD6, 0x01, 0x05, 0x12, 0x04]),
}
LANES = interp.WAVE_LANES
VGPRS_FIELD = 1  # COMPUTE_PGM_RSRC1.VGPRS = 1: 16 VGPRs in wave32 (blocks of 8)
U24 = (1 << 24) - 1


def run_one(text: str, sources: dict[int, np.ndarray], vcc: int = 0) -> np.ndarray:
    """Run `text` in one full wave with VGPR k = sources[k]; return the wave's VGPRs."""
    machine = BareGPU()
    code = machine.place(ENCODINGS[text] + S_ENDPGM)
    rsrc1 = gc_11_0_0.get("regCOMPUTE_PGM_RSRC1").encode(VGPRS=VGPRS_FIELD)
    initiator = gc_11_0_0.get("regCOMPUTE_DISPATCH_INITIATOR").encode(
        COMPUTE_SHADER_EN=1, FORCE_START_AT_000=1, CS_W32_EN=1)
    dispatch = Dispatch(me=1, pipe=0, queue=0, vmid=0, dimensions=(1, 1, 1), initiator=initiator,
                        program_address=code, rsrc1=rsrc1, rsrc2=0, rsrc3=0, threads=(LANES, 1, 1),
                        user_data=())
    runner = interp.Interpreter(machine.gpu.gmc, dispatch)
    wave = runner.launch((0, 0, 0), 0, 1, LANES, np.zeros(0, np.uint8))
    for register, values in sources.items():
        wave.v[register] = np.asarray(values).view(np.uint32)
    wave.s[interp.VCC_LO] = vcc
    runner.run_wave(wave)
    assert wave.done
    return wave.v


def random_words(seed: int) -> np.ndarray:
    words = np.random.default_rng(seed).integers(0, 1 << 32, LANES, dtype=np.uint64).astype(np.uint32)
    # edge lanes: zero, all ones, the largest and smallest 24-bit values, bit 23 alone
    words[:5] = [0, 0xFFFFFFFF, 0x007FFFFF, 0x00800000, 0xFF800000]
    return words


def signed24(words: np.ndarray) -> np.ndarray:
    low = words.astype(np.int64) & U24
    return np.where(low >= 1 << 23, low - (1 << 24), low)


@pytest.mark.skipif(shutil.which("llvm-mc-16") is None, reason="llvm-mc-16 is not installed")
def test_the_encodings_are_llvm_mc_16s():
    for text, encoding in ENCODINGS.items():
        result = subprocess.run(["llvm-mc-16", "-arch=amdgcn", "-mcpu=gfx1100", "-show-encoding"],
                                input=text, capture_output=True, text=True, timeout=60, check=True)
        shown = result.stdout.split("encoding: [")[1].split("]")[0]
        assert bytes(int(byte, 16) for byte in shown.split(",")) == encoding, text


def test_v_mul_u32_u24_multiplies_the_low_24_bits():
    a, b = random_words(1), random_words(2)
    v = run_one("v_mul_u32_u24_e32 v3, v1, v2", {1: a, 2: b})
    want = ((a.astype(np.uint64) & U24) * (b.astype(np.uint64) & U24)) & 0xFFFFFFFF
    np.testing.assert_array_equal(v[3], want.astype(np.uint32))


def test_v_mul_i32_i24_sign_extends_the_low_24_bits():
    a, b = random_words(3), random_words(4)
    v = run_one("v_mul_i32_i24_e32 v3, v1, v2", {1: a, 2: b})
    want = (signed24(a) * signed24(b)).astype(np.int32)
    np.testing.assert_array_equal(v[3].view(np.int32), want)


def test_v_mad_u32_u24_adds_the_third_source_and_wraps():
    a, b, c = random_words(5), random_words(6), random_words(7)
    v = run_one("v_mad_u32_u24 v3, v1, v2, v4", {1: a, 2: b, 4: c})
    want = ((a.astype(np.uint64) & U24) * (b.astype(np.uint64) & U24) + c) & 0xFFFFFFFF
    np.testing.assert_array_equal(v[3], want.astype(np.uint32))


def test_v_mad_i32_i24_adds_a_signed_third_source():
    a, b, c = random_words(8), random_words(9), random_words(10)
    v = run_one("v_mad_i32_i24 v3, v1, v2, v4", {1: a, 2: b, 4: c})
    want = (signed24(a) * signed24(b) + c.view(np.int32)).astype(np.int32)
    np.testing.assert_array_equal(v[3].view(np.int32), want)


def test_v_add_lshl_u32_wraps_the_sum_then_shifts_by_five_bits():
    a, b = random_words(11), random_words(12)
    shift = np.arange(LANES, dtype=np.uint32) * 3  # 0..93: bits above 4 are ignored
    v = run_one("v_add_lshl_u32 v3, v1, v2, v4", {1: a, 2: b, 4: shift})
    total = (a.astype(np.uint64) + b) & 0xFFFFFFFF
    want = (total << (shift.astype(np.uint64) & 31)) & 0xFFFFFFFF
    np.testing.assert_array_equal(v[3], want.astype(np.uint32))


def test_v_ashrrev_i64_shifts_a_signed_pair_by_six_bits():
    low, high = random_words(13), random_words(14)
    shift = np.arange(LANES, dtype=np.uint32) * 5  # 0..155: bits above 5 are ignored
    shift[-1] = 63
    v = run_one("v_ashrrev_i64 v[4:5], v1, v[2:3]", {1: shift, 2: low, 3: high})
    value = (low.astype(np.uint64) | (high.astype(np.uint64) << np.uint64(32))).view(np.int64)
    want = value >> (shift.astype(np.int64) & 63)
    got = (v[4].astype(np.uint64) | (v[5].astype(np.uint64) << np.uint64(32))).view(np.int64)
    np.testing.assert_array_equal(got, want)


def test_v_cndmask_b32_neg_flips_the_sign_bit_of_the_selected_source():
    a, b = random_words(15), random_words(16)
    a[5] = 0x7FC00000  # a NaN: neg flips its sign bit too
    vcc = 0x0F0F00FF
    v = run_one("v_cndmask_b32_e64 v3, -v1, v2, vcc_lo", {1: a, 2: b}, vcc=vcc)
    lanes = (vcc >> np.arange(LANES)) & 1 == 1
    np.testing.assert_array_equal(v[3], np.where(lanes, b, a ^ np.uint32(1 << 31)))


def test_v_cndmask_b32_abs_clears_and_neg_abs_sets_the_sign_bit():
    a, b = random_words(17), random_words(18)
    vcc = 0xAAAA5555
    v = run_one("v_cndmask_b32_e64 v3, |v1|, -|v2|, vcc_lo", {1: a, 2: b}, vcc=vcc)
    lanes = (vcc >> np.arange(LANES)) & 1 == 1
    want = np.where(lanes, b | np.uint32(1 << 31), a & np.uint32((1 << 31) - 1))
    np.testing.assert_array_equal(v[3], want)


@pytest.mark.parametrize("name, function", [("sin", np.sin), ("cos", np.cos)])
def test_v_sin_and_cos_f32_take_revolutions(name, function):
    turns = np.linspace(-1.5, 1.5, LANES).astype(np.float32)
    turns[0] = 0.25
    v = run_one(f"v_{name}_f32_e32 v3, v1", {1: turns})
    got = v[3].view(np.float32).astype(np.float64)
    radians = 2 * np.pi * turns.astype(np.float64)
    # the argument is rounded to float32 (|error| <= eps |radians|), then the result
    eps = np.finfo(np.float32).eps / 2
    assert np.all(np.abs(got - function(radians)) <= eps * np.abs(radians) + eps)
    if name == "sin":
        assert got[0] == 1.0  # a quarter turn


@pytest.mark.parametrize("kind, dtype", [("u32", np.uint32), ("i32", np.int32), ("f32", np.float32)])
@pytest.mark.parametrize("which", ["max3", "min3"])
def test_v_max3_and_min3_pick_among_three_sources(which, kind, dtype):
    a, b, c = random_words(19), random_words(20), random_words(21)
    if dtype is np.float32:
        # finite floats from the random bits, and a NaN in each source once: the others win
        a, b, c = (np.random.default_rng(seed).standard_normal(LANES).astype(np.float32).view(np.uint32)
                   for seed in (19, 20, 21))
        a[0] = b[1] = c[2] = 0x7FC00000
    v = run_one(f"v_{which}_{kind} v3, v1, v2, v4", {1: a, 2: b, 4: c})
    x, y, z = (word.view(dtype) for word in (a, b, c))
    pick = {"max3": np.fmax, "min3": np.fmin}[which]
    np.testing.assert_array_equal(v[3].view(dtype), pick(pick(x, y), z))
    if dtype is np.float32:
        assert not np.isnan(v[3][:3].view(np.float32)).any()
