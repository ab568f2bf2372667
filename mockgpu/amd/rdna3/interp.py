"""The gfx1100 (RDNA3) shader interpreter of the mock GPU: runs a compute dispatch's waves.

Owns what the shader engine does once the MEC accepted a DISPATCH_DIRECT: launching every
workgroup of the grid as wave32 waves with the initial state the hardware gives them (LLVM
AMDGPUUsage, "Initial Kernel Execution State"), fetching and executing their instructions from the
program address, and every memory access they make.

- Instruction fetch, scalar loads and vector memory go through the GMC model's page walk of the
  dispatch's VMID (GFX hub; gfxhub_v3_0.c gfxhub_client_ids: TCP for vector memory, SQC (inst)
  for fetches, which need an executable page, SQC (data) for scalar loads). A fault is latched and
  handed to `gmc.on_fault` (the IH) by the GMC; the wave stops and `ShaderMemoryFault` names the
  address, the access and the instruction.
- Instructions are decoded by decoder.py the first time a PC is reached and compiled into a Python
  closure kept for the rest of the dispatch. Vector lanes are numpy arrays of 32 dwords; EXEC masks
  every VALU write and memory access; VCC, SCC and EXEC behave as the RDNA3 ISA reference guide
  describes each instruction. An instruction this interpreter does not implement raises
  `UnsupportedInstruction` naming it and its address: nothing is skipped silently.
- s_waitcnt, s_delay_alu, s_clause and the cache invalidates (buffer_gl0_inv / gl1_inv) are no-ops:
  every access completes before the next instruction, so ordering holds without counters.
- LDS: one zeroed allocation per workgroup of COMPUTE_PGM_RSRC2.LDS_SIZE granules; s_barrier
  parks a wave until every wave of its workgroup that has not ended reached the barrier.
- A dispatch may execute at most `budget` wave instructions; past that `ShaderHang` is raised, so a
  kernel that never ends looks to the driver like a queue that never finishes (it can time out and
  reset the queue) instead of a hung Python process.

- Scratch (COMPUTE_PGM_RSRC2.SCRATCH_EN): gfx11's architected flat scratch. The dispatch carries
  COMPUTE_DISPATCH_SCRATCH_BASE (address >> 8) and COMPUTE_TMPRING_SIZE (WAVES slots of WAVESIZE
  256-byte units); the waves of a workgroup take slots 0, 1, ... (this model runs one workgroup at
  a time, so a workgroup needing more waves than WAVES never launches and the dispatch is refused).
  A wave's private base is base + slot * WAVESIZE bytes, its private segment wave offset SGPR the
  slot's offset. SCRATCH loads/stores address base + the dword-interleaved private address of each
  lane (LLVM AMDGPUUsage, "Memory Spaces", private segment: lane L's dword at private address A lies
  at ((A / 4) * wave size + L) * 4 + A % 4), through the GMC walk like every access.

Not modelled: wave64, atomics, FLAT and buffer memory instructions, 16-bit and packed VALU
operations, traps and exceptions, denormal and rounding modes
(numpy's float32 round-to-nearest-even, denormals kept), the order in which waves of different
workgroups interleave (a workgroup runs to completion before the next starts).
"""
from __future__ import annotations

import dataclasses
import re
import time
from typing import Callable

import numpy as np

from autogen.amd.regs import gc_11_0_0
from mockgpu.amd.gmc import GFX_HUB, GPU_PAGE_SIZE, Access, GPUBusError, GPUVMFault
from mockgpu.amd.rdna3 import decoder
from mockgpu.amd.rdna3.decoder import EXEC_LO, NULL, VCC_LO, Instruction, Operand

PAGE_SHIFT = GPU_PAGE_SIZE.bit_length() - 1  # GPU pages are 4 KiB (gmc.py GPU_PAGE_SIZE)
WAVE_LANES = 32  # RDNA3 ISA guide, "Wave32 and Wave64": this interpreter runs wave32 only
FULL_EXEC = (1 << WAVE_LANES) - 1
WORD_MASK = 0xFFFFFFFF
SGPR_SLOTS = 128  # scalar operand codes 0..127: SGPRs, VCC, TTMPs, NULL, M0, EXEC (ISA guide)
# gfxhub_v3_0.c gfxhub_client_ids: the UTCL2 client index of each shader-side requester
CLIENT_TCP = 8
CLIENT_SQC_INST = 9
CLIENT_SQC_DATA = 10
# the largest gfx11 instruction: a 64-bit encoding plus a 32-bit literal (ISA guide, "Microcode
# Formats"); a fetch near a page end needs that many bytes
MAX_INSTRUCTION_BYTES = 12
# LLVM AMDGPUUsage, "Initial Kernel Execution State", GFX11: VGPR0 holds the packed work-item ids,
# X in bits 9:0, Y in 19:10, Z in 29:20
WORKITEM_ID_BITS = 10
VGPR_GRANULE_WAVE32 = 8  # ISA guide 3.3.1: COMPUTE_PGM_RSRC1.VGPRS counts blocks of 8 in wave32
LDS_GRANULE_BYTES = 512  # AMDGPUUsage, COMPUTE_PGM_RSRC2.LDS_SIZE for GFX11: 128-dword units
# COMPUTE_PGM_RSRC2.TG_SIZE_EN loads the work-group's wave count into bits 5:0 of an SGPR (ISA
# guide, "Compute Shader" initial state); this model fills only that field
TG_SIZE_WAVES_BITS = 6
DEFAULT_BUDGET = 1 << 24  # wave instructions per dispatch before this model calls it a hang
# SOPP branch targets: PC of the next instruction + simm16 * 4 (ISA guide, S_BRANCH)
BRANCH_UNIT = 4
SRC_VCCZ = 251
SRC_EXECZ = 252
SRC_SCC = 253
# s_sendmsg ids a compute wave may send without effect here (ISA guide S_SENDMSG)
SENDMSG_DEALLOC_VGPRS = 3
# global/flat saddr 0x7F (like NULL) means "no scalar base" (ISA guide, "Global" addressing)
SADDR_OFF = (NULL, 0x7F)
# LLVM SIProgramInfo / large-alloca-graphics.ll (GFX11 checks): COMPUTE_TMPRING_SIZE.WAVESIZE
# counts 256-byte units on gfx11 (1 KiB before)
SCRATCH_WAVESIZE_UNIT = 256
SCRATCH_BASE_SHIFT = 8  # COMPUTE_DISPATCH_SCRATCH_BASE_LO/HI hold the address >> 8
SCRATCH_DWORD = 4  # AMDGPUUsage: private memory interleaves the lanes of a wave per dword

_RSRC1 = gc_11_0_0.get("regCOMPUTE_PGM_RSRC1")
_RSRC2 = gc_11_0_0.get("regCOMPUTE_PGM_RSRC2")
_INITIATOR = gc_11_0_0.get("regCOMPUTE_DISPATCH_INITIATOR")
_TMPRING = gc_11_0_0.get("regCOMPUTE_TMPRING_SIZE")

_LANE_BITS = np.left_shift(np.uint64(1), np.arange(WAVE_LANES, dtype=np.uint64))
_DTYPES = {"u32": np.uint32, "i32": np.int32, "f32": np.float32,
           "u64": np.uint64, "i64": np.int64, "f64": np.float64}
_WIDE = {"u64", "i64", "f64"}


# -- errors -----------------------------------------------------------------------------------------
class ShaderError(Exception):
    """A wave stopped: the dispatch does not complete. `address` is the instruction's PC."""

    def __init__(self, message: str, address: int | None = None) -> None:
        super().__init__(message)
        self.address = address


class UnsupportedInstruction(ShaderError):
    """An instruction (or encoding) this interpreter does not execute: named, with its address."""


class ShaderMemoryFault(ShaderError):
    """A wave's memory access faulted in the GMC (already latched and sent to the IH) or reached
    no memory; `fault_address` is the virtual address the wave used."""

    def __init__(self, message: str, address: int | None, fault_address: int) -> None:
        super().__init__(message, address)
        self.fault_address = fault_address


class ShaderHang(ShaderError):
    """The dispatch ran its whole instruction budget without every wave ending."""


class _MemoryFault(Exception):
    """Raised by the memory helpers; the run loop adds the instruction that made the access."""

    def __init__(self, va: int, access: Access, detail: str) -> None:
        super().__init__(detail)
        self.va = va
        self.access = access


@dataclasses.dataclass
class DispatchStats:
    """What one dispatch cost: waves launched, wave instructions, lane instructions (EXEC lanes
    summed over the executed instructions), wall time in seconds."""

    workgroups: int = 0
    waves: int = 0
    wave_instructions: int = 0
    lane_instructions: int = 0
    seconds: float = 0.0


# -- wave state -------------------------------------------------------------------------------------
class Wave:
    """One wave32: SGPRs (with VCC, M0, NULL, EXEC at their operand codes), VGPRs, SCC, PC."""

    __slots__ = ("s", "v", "scc", "pc", "done", "at_barrier", "lds", "scratch", "_mask_value", "_mask")

    def __init__(self, vgprs: int, pc: int, lds: np.ndarray) -> None:
        self.s = [0] * SGPR_SLOTS
        self.v = np.zeros((vgprs, WAVE_LANES), dtype=np.uint32)
        self.scc = 0
        self.pc = pc
        self.done = False
        self.at_barrier = False
        self.lds = lds
        self.scratch = 0  # the wave's private segment base (FLAT_SCRATCH), when scratch is enabled
        self._mask_value = -1
        self._mask = np.zeros(WAVE_LANES, dtype=bool)

    def mask(self) -> np.ndarray:
        """EXEC as 32 booleans (cached while EXEC does not change)."""
        value = self.s[EXEC_LO]
        if value != self._mask_value:
            self._mask = unpack(value)
            self._mask_value = value
        return self._mask

    def store(self, index: int, value) -> None:
        """Write VGPR `index` in the lanes EXEC enables."""
        exec_ = self.s[EXEC_LO]
        if exec_ == FULL_EXEC:
            self.v[index] = value
        elif exec_:
            np.copyto(self.v[index], value, casting="unsafe", where=self.mask())


def unpack(mask: int) -> np.ndarray:
    return (np.uint64(mask) & _LANE_BITS) != 0


def pack(lanes) -> int:
    """32 lane booleans (or one for all lanes) as a mask: lane i in bit i."""
    if np.ndim(lanes) == 0:
        return FULL_EXEC if lanes else 0
    return int.from_bytes(np.packbits(lanes, bitorder="little").tobytes(), "little")


# -- operands ---------------------------------------------------------------------------------------
def _is_scalar_register(op: Operand) -> bool:
    return op.kind in ("sgpr", "special") and op.value < SGPR_SLOTS


def scalar_reader(op: Operand) -> Callable[[Wave], int]:
    """A scalar source as an int (64-bit for a register pair)."""
    if _is_scalar_register(op):
        index = op.value
        if op.value == NULL:
            return lambda w: 0
        if op.count == 2:
            return lambda w: w.s[index] | w.s[index + 1] << 32
        if op.count > 2:
            raise UnsupportedInstruction(f"scalar operand {op.text} of {op.count} dwords")
        return lambda w: w.s[index]
    if op.kind in ("inline", "literal"):
        value = op.value
        return lambda w: value
    if op.kind == "special" and op.value == SRC_SCC:
        return lambda w: w.scc
    if op.kind == "special" and op.value == SRC_EXECZ:
        return lambda w: int(w.s[EXEC_LO] == 0)
    if op.kind == "special" and op.value == SRC_VCCZ:
        return lambda w: int(w.s[VCC_LO] == 0)
    raise UnsupportedInstruction(f"operand {op.text}")


def scalar_writer(op: Operand) -> Callable[[Wave, int], None]:
    if not _is_scalar_register(op):
        raise UnsupportedInstruction(f"scalar destination {op.text}")
    index = op.value
    if index == NULL:
        return lambda w, value: None
    if op.count == 1:
        def write(w: Wave, value: int) -> None:
            w.s[index] = value & WORD_MASK
        return write

    def write_many(w: Wave, value: int) -> None:
        for k in range(op.count):
            w.s[index + k] = (value >> (32 * k)) & WORD_MASK
    return write_many


def _float_modifiers(read, op: Operand, kind: str):
    if not (op.abs or op.neg):
        return read
    if kind not in ("f32", "f64"):
        raise UnsupportedInstruction(f"neg/abs modifier on the integer operand {op.text}")
    if op.abs and op.neg:
        return lambda w: -np.abs(read(w))
    if op.abs:
        return lambda w: np.abs(read(w))
    return lambda w: -read(w)


def vector_reader(op: Operand, kind: str, vgprs: int):
    """A VALU source as numpy values of `kind` (an array for a VGPR, a numpy scalar otherwise)."""
    dtype = _DTYPES[kind]
    wide = kind in _WIDE
    if op.kind == "vgpr":
        index = op.value
        if index + (2 if wide else 1) > vgprs:
            raise ShaderError(f"{op.text} is past the {vgprs} VGPRs COMPUTE_PGM_RSRC1 allocates")
        if wide:
            def read_pair(w: Wave):
                pair = w.v[index].astype(np.uint64) | (w.v[index + 1].astype(np.uint64) << np.uint64(32))
                return pair.view(dtype)
            read = read_pair
        elif kind == "u32":
            def read(w: Wave):
                return w.v[index]
        else:
            def read(w: Wave):
                return w.v[index].view(dtype)
    elif op.kind in ("inline", "literal"):
        constant = np.array(op.value, dtype=np.uint64 if wide else np.uint32).view(dtype)[()]

        def read(w: Wave):
            return constant
    else:
        scalar = scalar_reader(op)
        storage = np.uint64 if wide else np.uint32

        def read(w: Wave):
            return np.array(scalar(w), dtype=storage).view(dtype)[()]
    return _float_modifiers(read, op, kind)


SIGN_BIT = np.uint32(1 << 31)  # the float32 sign bit the neg/abs input modifiers act on


def _sign_bit_modifiers(op: Operand, vgprs: int):
    """A V_CNDMASK_B32 source as 32 bits, with its VOP3 neg/abs applied to the sign bit: LLVM's
    VOP2Instructions.td gives V_CNDMASK_B32_e64 float input modifiers on src0/src1 (VOP2e_SGPR
    with FP32InputMods), so `select c, -x, y` is emitted as `v_cndmask_b32_e64 d, -x, y, c`;
    the ISA guide's input modifiers negate (flip) and take the absolute value of (clear) the
    sign bit, NaNs included."""
    read = vector_reader(dataclasses.replace(op, neg=False, abs=False), U32, vgprs)
    if op.abs and op.neg:
        return lambda w: read(w) | SIGN_BIT
    if op.abs:
        return lambda w: read(w) & ~SIGN_BIT
    if op.neg:
        return lambda w: read(w) ^ SIGN_BIT
    return read


def vector_writer(op: Operand, kind: str, vgprs: int):
    if op.kind != "vgpr":
        raise UnsupportedInstruction(f"vector destination {op.text}")
    index = op.value
    dtype = _DTYPES[kind]
    if kind in _WIDE:
        if index + 2 > vgprs:
            raise ShaderError(f"{op.text} is past the {vgprs} VGPRs COMPUTE_PGM_RSRC1 allocates")

        def write_pair(w: Wave, value) -> None:
            bits = np.asarray(value).astype(dtype, copy=False).view(np.uint64)
            w.store(index, (bits & np.uint64(WORD_MASK)).astype(np.uint32))
            w.store(index + 1, (bits >> np.uint64(32)).astype(np.uint32))
        return write_pair
    if index >= vgprs:
        raise ShaderError(f"{op.text} is past the {vgprs} VGPRs COMPUTE_PGM_RSRC1 allocates")

    def write(w: Wave, value) -> None:
        w.store(index, np.asarray(value).astype(dtype, copy=False).view(np.uint32))
    return write


# -- VALU operations: name -> (source kinds in printed order, result kind, function) ----------------
def _fma32(a, b, c):
    # one rounding as V_FMA_F32 does, from the exact product in float64
    return (np.asarray(a, np.float64) * np.asarray(b, np.float64) + np.asarray(c, np.float64)
            ).astype(np.float32)


def _u64(x):
    return np.asarray(x).astype(np.uint64)


def _shift(x, mask: int):
    return np.asarray(x).astype(np.uint32) & np.uint32(mask)


# RDNA3 ISA guide, V_MUL_U32_U24 / V_MAD_I32_I24 and kin: the sources are their low 24 bits
# (pseudocode S0.u24 / S0.i24)
INT24_BITS = 24
_INT24_SHIFT = np.uint32(32 - INT24_BITS)


def _u24(x):
    return _u64(np.asarray(x).astype(np.uint32) & np.uint32((1 << INT24_BITS) - 1))


def _i24(x):
    """The low 24 bits sign-extended (32'I(S0.i24)), as int64 for an exact product."""
    high = np.left_shift(np.asarray(x).astype(np.uint32), _INT24_SHIFT).view(np.int32)
    return np.right_shift(high, _INT24_SHIFT.astype(np.int32)).astype(np.int64)


# V_SIN_F32 / V_COS_F32 take revolutions: the source times the float32 2*pi (pseudocode
# 32'F(PI * 2.0)), rounded to float32, then the sine or cosine
_TWO_PI_F32 = np.float32(2 * np.pi)


def _revolutions(function):
    def operation(a):
        radians = np.asarray(a, np.float32) * _TWO_PI_F32
        return function(radians.astype(np.float64)).astype(np.float32)
    return operation


def _cvt_to_int(a, dtype):
    # V_CVT_U32_F32 / V_CVT_I32_F32 saturate and turn NaN into 0 (ISA guide, VOP1 opcodes)
    info = np.iinfo(dtype)
    clipped = np.clip(np.nan_to_num(np.asarray(a, np.float64), nan=0.0), info.min, info.max)
    return np.trunc(clipped).astype(dtype)


U32, I32, F32, U64, I64 = "u32", "i32", "f32", "u64", "i64"
VALU_OPS: dict[str, tuple[tuple[str, ...], str, Callable]] = {
    "v_mov_b32": ((U32,), U32, lambda a: a),
    "v_not_b32": ((U32,), U32, np.invert),
    "v_cvt_f32_u32": ((U32,), F32, lambda a: np.asarray(a).astype(np.float32)),
    "v_cvt_f32_i32": ((I32,), F32, lambda a: np.asarray(a).astype(np.float32)),
    "v_cvt_u32_f32": ((F32,), U32, lambda a: _cvt_to_int(a, np.uint32)),
    "v_cvt_i32_f32": ((F32,), I32, lambda a: _cvt_to_int(a, np.int32)),
    "v_rcp_f32": ((F32,), F32, lambda a: np.float32(1.0) / a),
    "v_sqrt_f32": ((F32,), F32, np.sqrt),
    "v_exp_f32": ((F32,), F32, np.exp2),
    "v_log_f32": ((F32,), F32, np.log2),
    "v_add_f32": ((F32, F32), F32, np.add),
    "v_sub_f32": ((F32, F32), F32, np.subtract),
    "v_subrev_f32": ((F32, F32), F32, lambda a, b: b - a),
    "v_mul_f32": ((F32, F32), F32, np.multiply),
    "v_max_f32": ((F32, F32), F32, np.fmax),
    "v_min_f32": ((F32, F32), F32, np.fmin),
    "v_fma_f32": ((F32, F32, F32), F32, _fma32),
    "v_fmaak_f32": ((F32, F32, F32), F32, _fma32),  # src0 * src1 + K
    "v_fmamk_f32": ((F32, F32, F32), F32, _fma32),  # src0 * K + src1 (printed in that order)
    "v_add_nc_u32": ((U32, U32), U32, lambda a, b: _u64(a) + b),
    "v_sub_nc_u32": ((U32, U32), U32, lambda a, b: _u64(a) - b),
    "v_subrev_nc_u32": ((U32, U32), U32, lambda a, b: _u64(b) - a),
    "v_and_b32": ((U32, U32), U32, np.bitwise_and),
    "v_or_b32": ((U32, U32), U32, np.bitwise_or),
    "v_xor_b32": ((U32, U32), U32, np.bitwise_xor),
    "v_lshlrev_b32": ((U32, U32), U32, lambda a, b: np.left_shift(b, _shift(a, 31))),
    "v_lshrrev_b32": ((U32, U32), U32, lambda a, b: np.right_shift(b, _shift(a, 31))),
    "v_ashrrev_i32": ((U32, I32), I32, lambda a, b: np.right_shift(b, _shift(a, 31).astype(np.int32))),
    "v_max_u32": ((U32, U32), U32, np.maximum),
    "v_min_u32": ((U32, U32), U32, np.minimum),
    "v_max_i32": ((I32, I32), I32, np.maximum),
    "v_min_i32": ((I32, I32), I32, np.minimum),
    "v_mul_lo_u32": ((U32, U32), U32, lambda a, b: _u64(a) * b),
    "v_mul_hi_u32": ((U32, U32), U32, lambda a, b: (_u64(a) * b) >> np.uint64(32)),
    "v_add3_u32": ((U32, U32, U32), U32, lambda a, b, c: _u64(a) + b + c),
    "v_lshl_or_b32": ((U32, U32, U32), U32,
                      lambda a, b, c: np.left_shift(a, _shift(b, 31)) | c),
    "v_lshl_add_u32": ((U32, U32, U32), U32,
                       lambda a, b, c: _u64(np.left_shift(a, _shift(b, 31))) + c),
    "v_and_or_b32": ((U32, U32, U32), U32, lambda a, b, c: (a & b) | c),
    "v_or3_b32": ((U32, U32, U32), U32, lambda a, b, c: a | b | c),
    "v_bfe_u32": ((U32, U32, U32), U32,
                  lambda a, b, c: (_u64(a) >> _u64(_shift(b, 31)))
                  & ((np.uint64(1) << _u64(_shift(c, 31))) - np.uint64(1))),
    "v_bfi_b32": ((U32, U32, U32), U32, lambda a, b, c: (a & b) | (np.invert(a) & c)),
    "v_lshlrev_b64": ((U32, U64), U64, lambda a, b: np.left_shift(b, _u64(_shift(a, 63)))),
    "v_lshrrev_b64": ((U32, U64), U64, lambda a, b: np.right_shift(b, _u64(_shift(a, 63)))),
    # RDNA3 ISA guide pseudocode (AMD's machine-readable ISA, as tinygrad's
    # runtime/autogen/amd/rdna3/str_pcode.py carries it):
    # V_ASHRREV_I64: D0.i64 = S1.i64 >> S0[5:0].u32
    "v_ashrrev_i64": ((U32, I64), I64,
                      lambda a, b: np.right_shift(b, _shift(a, 63).astype(np.int64))),
    # V_ADD_LSHL_U32: D0.u32 = (S0.u32 + S1.u32) << S2.u32[4:0] (the sum wraps first)
    "v_add_lshl_u32": ((U32, U32, U32), U32,
                       lambda a, b, c: np.left_shift((_u64(a) + b) & np.uint64(WORD_MASK),
                                                     _u64(_shift(c, 31)))),
    # V_MUL_U32_U24: D0.u32 = 32'U(S0.u24) * 32'U(S1.u24) (the low 32 bits of the 48-bit product)
    "v_mul_u32_u24": ((U32, U32), U32, lambda a, b: _u24(a) * _u24(b)),
    # V_MUL_I32_I24: D0.i32 = 32'I(S0.i24) * 32'I(S1.i24)
    "v_mul_i32_i24": ((U32, U32), I32, lambda a, b: _i24(a) * _i24(b)),
    # V_MAD_U32_U24: D0.u32 = 32'U(S0.u24) * 32'U(S1.u24) + S2.u32
    "v_mad_u32_u24": ((U32, U32, U32), U32, lambda a, b, c: _u24(a) * _u24(b) + c),
    # V_MAD_I32_I24: D0.i32 = 32'I(S0.i24) * 32'I(S1.i24) + S2.i32
    "v_mad_i32_i24": ((U32, U32, I32), I32, lambda a, b, c: _i24(a) * _i24(b) + c),
    # V_SIN_F32: D0.f32 = sin(S0.f32 * 32'F(PI * 2.0)); V_COS_F32 likewise
    "v_sin_f32": ((F32,), F32, _revolutions(np.sin)),
    "v_cos_f32": ((F32,), F32, _revolutions(np.cos)),
    # V_MAX3_U32: D0.u32 = v_max_u32(v_max_u32(S0.u32, S1.u32), S2.u32); MIN3 and I32/F32 alike
    # (F32 with V_MAX_F32's IEEE maxNum: a NaN operand loses)
    "v_max3_u32": ((U32, U32, U32), U32, lambda a, b, c: np.maximum(np.maximum(a, b), c)),
    "v_max3_i32": ((I32, I32, I32), I32, lambda a, b, c: np.maximum(np.maximum(a, b), c)),
    "v_max3_f32": ((F32, F32, F32), F32, lambda a, b, c: np.fmax(np.fmax(a, b), c)),
    "v_min3_u32": ((U32, U32, U32), U32, lambda a, b, c: np.minimum(np.minimum(a, b), c)),
    "v_min3_i32": ((I32, I32, I32), I32, lambda a, b, c: np.minimum(np.minimum(a, b), c)),
    "v_min3_f32": ((F32, F32, F32), F32, lambda a, b, c: np.fmin(np.fmin(a, b), c)),
}
# ops that also read their destination as the last source (VOP2 "mac" forms)
ACCUMULATE = {"v_fmac_f32": ("v_fma_f32", F32)}

# VOPC compare functions by the name's middle part (ISA guide, VOPC opcodes)
_INT_COMPARES = {
    "f": lambda a, b: np.zeros(np.broadcast(a, b).shape, bool),
    "lt": np.less, "eq": np.equal, "le": np.less_equal, "gt": np.greater,
    "ne": np.not_equal, "lg": np.not_equal, "ge": np.greater_equal,
    "t": lambda a, b: np.ones(np.broadcast(a, b).shape, bool),
}
_FLOAT_COMPARES = dict(_INT_COMPARES)
_FLOAT_COMPARES.update({
    "lg": lambda a, b: np.less(a, b) | np.greater(a, b),
    "o": lambda a, b: ~(np.isnan(a) | np.isnan(b)),
    "u": lambda a, b: np.isnan(a) | np.isnan(b),
    "nge": lambda a, b: ~np.greater_equal(a, b), "nlg": lambda a, b: ~(np.less(a, b) | np.greater(a, b)),
    "ngt": lambda a, b: ~np.greater(a, b), "nle": lambda a, b: ~np.less_equal(a, b),
    "neq": lambda a, b: ~np.equal(a, b), "nlt": lambda a, b: ~np.less(a, b),
})
_COMPARE_NAME = re.compile(r"v_(cmpx?)_([a-z]+)_(u32|i32|f32|u64|i64|f64)$")


def base_name(name: str) -> str:
    """The operation without LLVM's encoding suffix (v_add_f32_e32 -> v_add_f32)."""
    for suffix in ("_e32", "_e64"):
        if name.endswith(suffix):
            return name[:-len(suffix)]
    return name


# -- the interpreter --------------------------------------------------------------------------------
class Interpreter:
    """Runs one dispatch: `run()` launches every workgroup and returns its DispatchStats."""

    def __init__(self, gmc, dispatch, budget: int = DEFAULT_BUDGET, hub: str = GFX_HUB) -> None:
        self.gmc = gmc
        self.hub = hub
        self.vmid = dispatch.vmid
        self.dispatch = dispatch
        self.budget = budget
        self.left = budget
        self.stats = DispatchStats()
        self.code: dict[int, Callable[[Wave], int]] = {}
        self.pages: dict[int, bytes] = {}
        self.tlb: dict[tuple[int, Access, int], int | None] = {}
        self.vram = np.frombuffer(gmc.vram, dtype=np.uint8)
        rsrc1 = _RSRC1.decode(dispatch.rsrc1)
        self.rsrc2 = _RSRC2.decode(dispatch.rsrc2)
        initiator = _INITIATOR.decode(dispatch.initiator)
        if not initiator["CS_W32_EN"]:
            raise UnsupportedInstruction("a wave64 dispatch (COMPUTE_DISPATCH_INITIATOR.CS_W32_EN "
                                         "clear): this interpreter runs wave32 only",
                                         dispatch.program_address)
        if initiator["USE_THREAD_DIMENSIONS"]:
            raise UnsupportedInstruction("DISPATCH_DIRECT with USE_THREAD_DIMENSIONS is not modelled",
                                         dispatch.program_address)
        self.scratch_base = 0
        self.scratch_slots = 0
        self.scratch_wave_bytes = 0
        if self.rsrc2["SCRATCH_EN"]:
            tmpring = _TMPRING.decode(dispatch.tmpring_size)
            self.scratch_base = dispatch.scratch_base << SCRATCH_BASE_SHIFT
            self.scratch_slots = tmpring["WAVES"]
            self.scratch_wave_bytes = tmpring["WAVESIZE"] * SCRATCH_WAVESIZE_UNIT
        self.vgprs = (rsrc1["VGPRS"] + 1) * VGPR_GRANULE_WAVE32
        self.lds_bytes = self.rsrc2["LDS_SIZE"] * LDS_GRANULE_BYTES

    # -- the grid ---------------------------------------------------------------------------------
    def run(self) -> DispatchStats:
        start = time.perf_counter()
        gx, gy, gz = self.dispatch.dimensions
        with np.errstate(all="ignore"):
            for z in range(gz):
                for y in range(gy):
                    for x in range(gx):
                        self.run_workgroup((x, y, z))
        self.stats.seconds = time.perf_counter() - start
        return self.stats

    def run_workgroup(self, group: tuple[int, int, int]) -> None:
        nx, ny, nz = self.dispatch.threads
        count = nx * ny * nz
        wave_count = -(-count // WAVE_LANES)
        if self.rsrc2["SCRATCH_EN"] and wave_count > self.scratch_slots:
            raise ShaderError(f"COMPUTE_TMPRING_SIZE.WAVES {self.scratch_slots} scratch slots cannot hold "
                              f"a work-group of {wave_count} waves", self.dispatch.program_address)
        lds = np.zeros(self.lds_bytes, dtype=np.uint8)
        waves = [self.launch(group, index, wave_count, count, lds) for index in range(wave_count)]
        self.stats.workgroups += 1
        self.stats.waves += wave_count
        while True:
            for wave in waves:
                if not wave.done and not wave.at_barrier:
                    self.run_wave(wave)
            alive = [w for w in waves if not w.done]
            if not alive:
                return
            # every wave still running waits at the barrier: release them all together
            for wave in alive:
                wave.at_barrier = False

    def launch(self, group, index: int, wave_count: int, count: int, lds: np.ndarray) -> Wave:
        """A wave with the initial state of AMDGPUUsage "Initial Kernel Execution State"."""
        wave = Wave(self.vgprs, self.dispatch.program_address, lds)
        user = self.dispatch.user_data
        wave.s[:len(user)] = [value & WORD_MASK for value in user]
        slot = self.rsrc2["USER_SGPR"]
        for axis, enable in enumerate(("TGID_X_EN", "TGID_Y_EN", "TGID_Z_EN")):
            if self.rsrc2[enable]:
                wave.s[slot] = group[axis]
                slot += 1
        if self.rsrc2["TG_SIZE_EN"]:
            wave.s[slot] = wave_count & ((1 << TG_SIZE_WAVES_BITS) - 1)
            slot += 1
        if self.rsrc2["SCRATCH_EN"]:
            # AMDGPUUsage "Initial Kernel Execution State": the private segment wave offset SGPR
            # follows the workgroup info; architected flat scratch puts the base in FLAT_SCRATCH
            offset = index * self.scratch_wave_bytes
            wave.s[slot] = offset & WORD_MASK
            wave.scratch = self.scratch_base + offset
        nx, ny, _ = self.dispatch.threads
        flat = np.arange(index * WAVE_LANES, (index + 1) * WAVE_LANES, dtype=np.uint32)
        ids = flat % nx
        components = self.rsrc2["TIDIG_COMP_CNT"]
        if components >= 1:
            ids = ids | ((flat // nx) % ny) << WORKITEM_ID_BITS
        if components >= 2:
            ids = ids | (flat // (nx * ny)) << (2 * WORKITEM_ID_BITS)
        wave.v[0] = ids
        wave.s[EXEC_LO] = pack(flat < count)
        return wave

    def run_wave(self, wave: Wave) -> None:
        """Run until the wave ends or reaches s_barrier."""
        code = self.code
        pc = wave.pc
        executed = 0
        lanes = 0
        left = self.left
        s = wave.s
        try:
            while pc >= 0:
                if executed >= left:
                    self.left = 0
                    raise ShaderHang(f"the dispatch ran {self.budget} wave instructions without "
                                     f"ending (this model's instruction budget); a wave was at "
                                     f"{pc:#x}", pc)
                step = code.get(pc)
                if step is None:
                    step = self.compile_at(pc)
                wave.pc = pc
                lanes += s[EXEC_LO].bit_count()
                pc = step(wave)
                executed += 1
        except _MemoryFault as fault:
            address = wave.pc
            raise ShaderMemoryFault(
                f"the wave faulted on a {fault.access.value} of {fault.va:#x} at {address:#x} "
                f"({self.describe(address)}): {fault}", address, fault.va) from None
        finally:
            self.left -= min(executed, self.left)
            self.stats.wave_instructions += executed
            self.stats.lane_instructions += lanes

    def describe(self, address: int) -> str:
        try:
            return self.decode_at(address).text
        except ShaderError:
            return "undecodable"

    # -- instruction fetch ------------------------------------------------------------------------
    def page_bytes(self, page: int) -> bytes:
        """The bytes of the code page at `page` (a page-aligned address), fetched once."""
        if page not in self.pages:
            try:
                where = self.gmc.translate(self.hub, self.vmid, page, Access.EXECUTE, CLIENT_SQC_INST)
                self.pages[page] = self.physical_read(where, GPU_PAGE_SIZE)
            except (GPUVMFault, GPUBusError) as exc:
                raise ShaderMemoryFault(f"instruction fetch at {page:#x} faulted: {exc}", page,
                                        page) from None
        return self.pages[page]

    def decode_at(self, address: int) -> Instruction:
        page = address & ~(GPU_PAGE_SIZE - 1)
        data = self.page_bytes(page)[address - page:]
        if len(data) < MAX_INSTRUCTION_BYTES:
            try:
                data += self.page_bytes(page + GPU_PAGE_SIZE)[:MAX_INSTRUCTION_BYTES]
            except ShaderMemoryFault:
                pass  # an instruction that fits in this page still decodes
        try:
            return decoder.Decoder(data, address).decode_at(0)
        except decoder.UnknownInstruction as exc:
            if isinstance(exc, decoder.TruncatedInstruction) and len(data) < MAX_INSTRUCTION_BYTES:
                self.page_bytes(page + GPU_PAGE_SIZE)  # the rest of it lies on a page that faults
            raise UnsupportedInstruction(str(exc), address) from None

    def compile_at(self, address: int) -> Callable[[Wave], int]:
        instruction = self.decode_at(address)
        compiler = getattr(self, "compile_" + instruction.encoding.lower(), None)
        step = compiler(instruction) if compiler is not None else None
        if step is None:
            raise UnsupportedInstruction(
                f"{instruction.name} ({instruction.encoding}) at {address:#x} is not implemented "
                f"by the mock GPU's interpreter: {instruction.text}", address)
        self.code[address] = step
        return step

    # -- memory -----------------------------------------------------------------------------------
    def physical_read(self, where, n: int) -> bytes:
        if where.prt:
            return bytes(n)
        if where.system:
            data = self.gmc.host.dma_read(where.address, n)
            if data is None:
                raise GPUBusError(f"system read of {n} bytes at {where.address:#x} refused")
            return data
        if where.address + n > len(self.vram):
            raise GPUBusError(f"VRAM offset {where.address:#x} + {n:#x} is past the end of VRAM")
        return self.vram[where.address:where.address + n].tobytes()

    def physical_write(self, where, data: bytes) -> None:
        if where.prt:
            return
        if where.system:
            if not self.gmc.host.dma_write(where.address, data):
                raise GPUBusError(f"system write of {len(data)} bytes at {where.address:#x} refused")
            return
        if where.address + len(data) > len(self.vram):
            raise GPUBusError(f"VRAM offset {where.address:#x} + {len(data):#x} is past the end of VRAM")
        self.vram[where.address:where.address + len(data)] = np.frombuffer(data, np.uint8)

    def translate(self, va: int, access: Access, client: int):
        try:
            return self.gmc.translate(self.hub, self.vmid, va, access, client)
        except GPUVMFault as exc:
            raise _MemoryFault(va, access, str(exc)) from None

    def read(self, va: int, n: int, client: int) -> bytes:
        page = va >> PAGE_SHIFT
        if (va + n - 1) >> PAGE_SHIFT == page:
            base = self.page_base(page, Access.READ, client)
            if base is not None:
                start = base + (va & (GPU_PAGE_SIZE - 1))
                if start + n <= len(self.vram):
                    return self.vram[start:start + n].tobytes()
        out = b""
        while len(out) < n:
            where = self.translate(va + len(out), Access.READ, client)
            chunk = min(n - len(out), where.contiguous)
            try:
                out += self.physical_read(where, chunk)
            except GPUBusError as exc:
                raise _MemoryFault(va, Access.READ, str(exc)) from None
        return out

    def write(self, va: int, data: bytes, client: int) -> None:
        done = 0
        while done < len(data):
            where = self.translate(va + done, Access.WRITE, client)
            chunk = min(len(data) - done, where.contiguous)
            try:
                self.physical_write(where, data[done:done + chunk])
            except GPUBusError as exc:
                raise _MemoryFault(va, Access.WRITE, str(exc)) from None
            done += chunk

    def lane_offsets(self, addresses: np.ndarray, size: int, access: Access) -> np.ndarray | None:
        """VRAM offsets of each lane's access when every one stays in one VRAM page (the fast
        path); None when some lane needs the byte-wise path (system memory, PRT, page crossing)."""
        in_page = (addresses & np.uint64(GPU_PAGE_SIZE - 1)).astype(np.int64)
        if int(in_page.max()) + size > GPU_PAGE_SIZE:
            return None
        pages = addresses >> np.uint64(PAGE_SHIFT)
        low = int(pages.min())
        high = int(pages.max())
        if high == low:
            base = self.page_base(low, access)
            if base is None:
                return None
            offsets = in_page + base
        else:
            unique, inverse = np.unique(pages, return_inverse=True)
            bases = np.empty(len(unique), dtype=np.int64)
            for k, page in enumerate(unique.tolist()):
                base = self.page_base(page, access)
                if base is None:
                    return None
                bases[k] = base
            offsets = bases[inverse.reshape(-1)] + in_page
        if np.any(offsets + size > len(self.vram)):
            bad = int(addresses[int(np.argmax(offsets + size > len(self.vram)))])
            raise _MemoryFault(bad, access, "the access is past the end of VRAM")
        return offsets

    def page_base(self, page: int, access: Access, client: int = CLIENT_TCP) -> int | None:
        """The VRAM offset of GPU page number `page` for `client`'s access, or None when it is
        system memory or PRT (the byte-wise path). A successful walk is kept for the rest of the
        dispatch as the UTCL1/UTCL2 TLBs keep it: nothing invalidates the VMID's TLB while its
        dispatch runs (gmc_v11_0.c gmc_v11_0_flush_gpu_tlb is a driver request between jobs);
        a walk that faults is never kept, so each faulting access reaches the GMC and the IH."""
        key = (page, access, client)
        tlb = self.tlb
        if key in tlb:
            return tlb[key]
        va = page << PAGE_SHIFT
        where = self.translate(va, access, client)
        base = None if where.system or where.prt else where.address
        tlb[key] = base
        return base

    def gather(self, addresses: np.ndarray, size: int) -> np.ndarray:
        """`size` bytes at each address: an (n, size) uint8 array."""
        offsets = self.lane_offsets(addresses, size, Access.READ)
        if offsets is not None:
            return self.vram[offsets[:, None] + np.arange(size)]
        rows = [np.frombuffer(self.read(int(a), size, CLIENT_TCP), np.uint8) for a in addresses]
        return np.array(rows, dtype=np.uint8).reshape(len(addresses), size)

    def scatter(self, addresses: np.ndarray, data: np.ndarray) -> None:
        size = data.shape[1]
        offsets = self.lane_offsets(addresses, size, Access.WRITE)
        if offsets is not None:
            self.vram[offsets[:, None] + np.arange(size)] = data
            return
        for address, row in zip(addresses, data):
            self.write(int(address), row.tobytes(), CLIENT_TCP)

    # -- SOPP ---------------------------------------------------------------------------------------
    def compile_sopp(self, ins: Instruction):
        name = ins.name
        after = ins.address + ins.size
        simm = decoder.signed(ins.fields["simm16"], 16)
        target = after + simm * BRANCH_UNIT
        if name in ("s_waitcnt", "s_delay_alu", "s_clause", "s_nop", "s_waitcnt_depctr",
                    "s_set_inst_prefetch_distance", "s_sleep", "s_setprio", "s_icache_inv"):
            return lambda w: after  # no counters to wait on: every access completed in order
        if name == "s_endpgm":
            def end(w: Wave) -> int:
                w.done = True
                return -1
            return end
        if name == "s_barrier":
            def barrier(w: Wave) -> int:
                w.at_barrier = True
                w.pc = after
                return -1
            return barrier
        if name == "s_sendmsg" and ins.fields["simm16"] == SENDMSG_DEALLOC_VGPRS:
            return lambda w: after
        conditions = {
            "s_branch": lambda w: True,
            "s_cbranch_scc0": lambda w: w.scc == 0,
            "s_cbranch_scc1": lambda w: w.scc != 0,
            "s_cbranch_vccz": lambda w: w.s[VCC_LO] == 0,
            "s_cbranch_vccnz": lambda w: w.s[VCC_LO] != 0,
            "s_cbranch_execz": lambda w: w.s[EXEC_LO] == 0,
            "s_cbranch_execnz": lambda w: w.s[EXEC_LO] != 0,
        }
        if name in conditions:
            taken = conditions[name]
            return lambda w: target if taken(w) else after
        return None

    # -- SOPK ---------------------------------------------------------------------------------------
    def compile_sopk(self, ins: Instruction):
        name = ins.name
        after = ins.address + ins.size
        imm = ins.fields["simm16"]
        simm = decoder.signed(imm, 16)
        if name.startswith("s_waitcnt_"):
            return lambda w: after
        dst = ins.fields["sdst"]
        if name == "s_movk_i32":
            value = simm & WORD_MASK

            def movk(w: Wave) -> int:
                w.s[dst] = value
                return after
            return movk
        if name == "s_addk_i32":
            def addk(w: Wave) -> int:
                old = w.s[dst]
                result = old + (simm & WORD_MASK)
                w.s[dst] = result & WORD_MASK
                w.scc = _signed_overflow(old, simm & WORD_MASK, result)
                return after
            return addk
        if name == "s_mulk_i32":
            def mulk(w: Wave) -> int:
                w.s[dst] = (decoder.signed(w.s[dst], 32) * simm) & WORD_MASK
                return after
            return mulk
        match = re.fullmatch(r"s_cmpk_([a-z]+)_(i32|u32)", name)
        if match and match.group(1) in _SCALAR_COMPARES:
            compare = _SCALAR_COMPARES[match.group(1)]
            is_signed = match.group(2) == "i32"
            constant = simm if is_signed else imm

            def cmpk(w: Wave) -> int:
                value = decoder.signed(w.s[dst], 32) if is_signed else w.s[dst]
                w.scc = int(compare(value, constant))
                return after
            return cmpk
        return None

    # -- SOPC ---------------------------------------------------------------------------------------
    def compile_sopc(self, ins: Instruction):
        after = ins.address + ins.size
        a = scalar_reader(ins.operands[0])
        b = scalar_reader(ins.operands[1])
        match = re.fullmatch(r"s_cmp_([a-z]+)_(i32|u32|u64)", ins.name)
        if match and match.group(1) in _SCALAR_COMPARES:
            compare = _SCALAR_COMPARES[match.group(1)]
            if match.group(2) == "i32":
                def cmp_signed(w: Wave) -> int:
                    w.scc = int(compare(decoder.signed(a(w), 32), decoder.signed(b(w), 32)))
                    return after
                return cmp_signed

            def cmp(w: Wave) -> int:
                w.scc = int(compare(a(w), b(w)))
                return after
            return cmp
        if ins.name in ("s_bitcmp0_b32", "s_bitcmp1_b32"):
            want = int(ins.name == "s_bitcmp1_b32")

            def bitcmp(w: Wave) -> int:
                w.scc = int((a(w) >> (b(w) & 31) & 1) == want)
                return after
            return bitcmp
        return None

    # -- SOP1 / SOP2 --------------------------------------------------------------------------------
    def compile_sop1(self, ins: Instruction):
        after = ins.address + ins.size
        name = ins.name
        if len(ins.operands) != 2:
            return None  # s_getpc_b64, s_setpc_b64 and the like are not implemented
        dst_op, src_op = ins.operands[0], ins.operands[1]
        write = scalar_writer(dst_op)
        read = scalar_reader(src_op)
        mask = (1 << (32 * dst_op.count)) - 1
        if name in ("s_mov_b32", "s_mov_b64"):
            def mov(w: Wave) -> int:
                write(w, read(w))
                return after
            return mov
        if name in ("s_cmov_b32", "s_cmov_b64"):
            def cmov(w: Wave) -> int:
                if w.scc:
                    write(w, read(w))
                return after
            return cmov
        if name in ("s_not_b32", "s_not_b64"):
            def not_(w: Wave) -> int:
                result = ~read(w) & mask
                write(w, result)
                w.scc = int(result != 0)
                return after
            return not_
        saveexec = {
            "s_and_saveexec_b32": lambda s, e: s & e,
            "s_or_saveexec_b32": lambda s, e: s | e,
            "s_xor_saveexec_b32": lambda s, e: s ^ e,
            "s_and_not0_saveexec_b32": lambda s, e: ~e & s,
            "s_and_not1_saveexec_b32": lambda s, e: s & ~e,
            "s_or_not0_saveexec_b32": lambda s, e: ~e | s,
            "s_or_not1_saveexec_b32": lambda s, e: s | ~e,
        }
        if name in saveexec:
            operation = saveexec[name]

            def save(w: Wave) -> int:
                old = w.s[EXEC_LO]
                new = operation(read(w), old) & WORD_MASK
                write(w, old)
                w.s[EXEC_LO] = new
                w.scc = int(new != 0)
                return after
            return save
        return None

    def compile_sop2(self, ins: Instruction):
        after = ins.address + ins.size
        name = ins.name
        dst_op = ins.operands[0]
        write = scalar_writer(dst_op)
        a = scalar_reader(ins.operands[1])
        b = scalar_reader(ins.operands[2])
        operation = _SOP2.get(name)
        if operation is None:
            return None
        width = 32 * dst_op.count

        def step(w: Wave) -> int:
            result, scc = operation(a(w), b(w), w.scc, width)
            write(w, result)
            if scc is not None:
                w.scc = scc
            return after
        return step

    # -- SMEM ---------------------------------------------------------------------------------------
    def compile_smem(self, ins: Instruction):
        match = re.fullmatch(r"s_load_b(32|64|128|256|512)", ins.name)
        if match is None:
            return None
        after = ins.address + ins.size
        dwords = int(match.group(1)) // 32
        first = ins.fields["sdata"]
        base = scalar_reader(ins.operands[1])
        offset = ins.fields["offset"]
        soffset_code = ins.fields["soffset"]
        soffset = (scalar_reader(decoder.source_operand(soffset_code, 1, "soffset", None))
                   if soffset_code != NULL else (lambda w: 0))
        if first + dwords > decoder.SGPR_LAST + 1:
            raise ShaderError(f"{ins.text}: s[{first}:{first + dwords - 1}] is past the SGPRs")

        def load(w: Wave) -> int:
            # ISA guide, SMEM: the two low address bits are ignored (dword aligned)
            address = (base(w) + offset + soffset(w)) & ~3 & ((1 << 64) - 1)
            data = self.read(address, dwords * 4, CLIENT_SQC_DATA)
            w.s[first:first + dwords] = memoryview(data).cast("I").tolist()
            return after
        return load

    # -- VALU ---------------------------------------------------------------------------------------
    def compile_vop1(self, ins: Instruction):
        return self.compile_valu(ins)

    def compile_vop2(self, ins: Instruction):
        return self.compile_valu(ins)

    def compile_vop3(self, ins: Instruction):
        if ins.fields.get("op_sel") or ins.fields.get("omod"):
            raise UnsupportedInstruction(f"{ins.text} at {ins.address:#x}: op_sel/omod are not "
                                         f"implemented by the mock GPU's interpreter", ins.address)
        return self.compile_valu(ins)

    def compile_vop3sd(self, ins: Instruction):
        return self.compile_valu(ins)

    def compile_vopc(self, ins: Instruction):
        return self.compile_valu(ins)

    def compile_vopd(self, ins: Instruction):
        after = ins.address + ins.size
        halves = []
        for half in (ins, ins.second):
            name = "v_" + half.name[len("v_dual_"):]
            parts = self.valu_parts(dataclasses.replace(half, name=name))
            if parts is None:
                return None
            halves.append(parts)
        (compute_x, write_x), (compute_y, write_y) = halves

        def dual(w: Wave) -> int:
            # both halves read their sources before either writes (ISA guide, VOPD)
            x = compute_x(w)
            y = compute_y(w)
            write_x(w, x)
            write_y(w, y)
            return after
        return dual

    def compile_valu(self, ins: Instruction):
        after = ins.address + ins.size
        parts = self.valu_parts(ins)
        if parts is None:
            return None
        compute, write = parts

        def step(w: Wave) -> int:
            write(w, compute(w))
            return after
        return step

    def valu_parts(self, ins: Instruction):
        """(compute(wave) -> value, write(wave, value)) for a VALU instruction, or None."""
        name = base_name(ins.name)
        operands = [op for op in ins.operands if op.kind != "text"]
        clamp = ins.fields.get("clamp", 0)
        if name.startswith("v_cmp"):
            return self.compare_parts(ins, name, operands)
        special = {"v_add_co_u32": self.carry_parts, "v_sub_co_u32": self.carry_parts,
                   "v_subrev_co_u32": self.carry_parts, "v_add_co_ci_u32": self.carry_parts,
                   "v_sub_co_ci_u32": self.carry_parts, "v_subrev_co_ci_u32": self.carry_parts,
                   "v_mad_u64_u32": self.mad64_parts, "v_cndmask_b32": self.cndmask_parts}
        if name in special:
            if clamp:
                raise UnsupportedInstruction(f"{ins.text}: clamp is not implemented", ins.address)
            return special[name](ins, name, operands)
        accumulate = name in ACCUMULATE
        if accumulate:
            name, kind = ACCUMULATE[name]
            operands = operands + [operands[0]]
        if name not in VALU_OPS:
            return None
        kinds, result_kind, function = VALU_OPS[name]
        if len(operands) - 1 != len(kinds):
            return None
        if clamp and result_kind != F32:
            raise UnsupportedInstruction(f"{ins.text}: integer clamp is not implemented", ins.address)
        sources = [vector_reader(op, kind, self.vgprs) for op, kind in zip(operands[1:], kinds)]
        write = vector_writer(operands[0], result_kind, self.vgprs)
        if len(sources) == 1:
            (s0,) = sources

            def compute(w: Wave):
                return function(s0(w))
        elif len(sources) == 2:
            s0, s1 = sources

            def compute(w: Wave):
                return function(s0(w), s1(w))
        else:
            s0, s1, s2 = sources

            def compute(w: Wave):
                return function(s0(w), s1(w), s2(w))
        if clamp:
            unclamped = compute

            def compute(w: Wave):
                return np.clip(unclamped(w), np.float32(0.0), np.float32(1.0))
        return compute, write

    def compare_parts(self, ins: Instruction, name: str, operands: list[Operand]):
        match = _COMPARE_NAME.match(name)
        if match is None:
            return None
        kind = match.group(3)
        table = _FLOAT_COMPARES if kind.startswith("f") else _INT_COMPARES
        if match.group(2) not in table:
            return None
        compare = table[match.group(2)]
        to_exec = match.group(1) == "cmpx"
        if ins.encoding == "VOP3" and not to_exec:
            destination = scalar_writer(operands[0])
            operands = operands[1:]
        else:
            destination = scalar_writer(decoder.source_operand(EXEC_LO if to_exec else VCC_LO, 1, "", None))
        a = vector_reader(operands[0], kind, self.vgprs)
        b = vector_reader(operands[1], kind, self.vgprs)

        def compute(w: Wave):
            # inactive lanes write 0 (ISA guide, "Vector Compare")
            return pack(compare(a(w), b(w))) & w.s[EXEC_LO]
        return compute, destination

    def carry_parts(self, ins: Instruction, name: str, operands: list[Operand]):
        destination = vector_writer(operands[0], U32, self.vgprs)
        if ins.encoding == "VOP2":
            carry_out = scalar_writer(decoder.source_operand(VCC_LO, 1, "", None))
            sources = operands[1:]
            carry_in = scalar_reader(decoder.source_operand(VCC_LO, 1, "", None))
        else:
            carry_out = scalar_writer(operands[1])
            sources = operands[2:]
            carry_in = scalar_reader(sources[2]) if len(sources) > 2 else (lambda w: 0)
        a = vector_reader(sources[0], U32, self.vgprs)
        b = vector_reader(sources[1], U32, self.vgprs)
        with_carry = "_ci_" in name
        reverse = "subrev" in name
        subtract = "sub" in name

        def compute(w: Wave):
            x = a(w).astype(np.int64)
            y = b(w).astype(np.int64)
            if reverse:
                x, y = y, x
            c = unpack(carry_in(w)).astype(np.int64) if with_carry else 0
            result = x - y - c if subtract else x + y + c
            carry = (result < 0) if subtract else (result >> 32) != 0
            return result.astype(np.uint32), pack(carry) & w.s[EXEC_LO]

        def write(w: Wave, value) -> None:
            destination(w, value[0])
            carry_out(w, value[1])
        return compute, write

    def mad64_parts(self, ins: Instruction, name: str, operands: list[Operand]):
        destination = vector_writer(operands[0], U64, self.vgprs)
        carry_out = scalar_writer(operands[1])
        a = vector_reader(operands[2], U32, self.vgprs)
        b = vector_reader(operands[3], U32, self.vgprs)
        c = vector_reader(operands[4], U64, self.vgprs)

        def compute(w: Wave):
            product = _u64(a(w)) * _u64(b(w))
            addend = _u64(c(w))
            total = product + addend
            return total, pack(total < addend) & w.s[EXEC_LO]

        def write(w: Wave, value) -> None:
            destination(w, value[0])
            carry_out(w, value[1])
        return compute, write

    def cndmask_parts(self, ins: Instruction, name: str, operands: list[Operand]):
        destination = vector_writer(operands[0], U32, self.vgprs)
        a = _sign_bit_modifiers(operands[1], self.vgprs)
        b = _sign_bit_modifiers(operands[2], self.vgprs)
        select_op = operands[3] if len(operands) > 3 else decoder.source_operand(VCC_LO, 1, "", None)
        select = scalar_reader(select_op)

        def compute(w: Wave):
            return np.where(unpack(select(w)), b(w), a(w))
        return compute, destination

    # -- GLOBAL -------------------------------------------------------------------------------------
    def compile_global(self, ins: Instruction):
        match = re.fullmatch(r"global_(load|store)_(b32|b64|b96|b128|u8|i8|u16|i16|b8|b16)", ins.name)
        if match is None:
            return None
        after = ins.address + ins.size
        store = match.group(1) == "store"
        kind = match.group(2)
        size = {"b32": 4, "b64": 8, "b96": 12, "b128": 16, "u8": 1, "i8": 1, "b8": 1,
                "u16": 2, "i16": 2, "b16": 2}[kind]
        dwords = max(1, size // 4)
        fields = ins.fields
        offset = decoder.signed(fields["offset"], 13)
        vaddr = fields["addr"] - decoder.VGPR_FIRST
        saddr_code = fields["saddr"]
        vgprs = self.vgprs
        register = (fields["data"] if store else fields["vdst"]) - decoder.VGPR_FIRST
        if register + dwords > vgprs or vaddr + 2 > vgprs:
            raise ShaderError(f"{ins.text}: a register is past the {vgprs} VGPRs allocated", ins.address)
        if saddr_code in SADDR_OFF:
            def addresses(w: Wave) -> np.ndarray:
                base = w.v[vaddr].astype(np.uint64) | (w.v[vaddr + 1].astype(np.uint64) << np.uint64(32))
                return base + np.uint64(offset & ((1 << 64) - 1))
        else:
            saddr = scalar_reader(decoder.source_operand(saddr_code, 2, "saddr", None))

            def addresses(w: Wave) -> np.ndarray:
                total = np.uint64((saddr(w) + offset) & ((1 << 64) - 1))
                return w.v[vaddr].astype(np.uint64) + total

        def active(w: Wave):
            lanes = w.mask()
            return lanes, addresses(w)[lanes]

        if store:
            def do_store(w: Wave) -> int:
                lanes, where = active(w)
                if len(where):
                    data = np.ascontiguousarray(w.v[register:register + dwords, lanes].T)
                    self.scatter(where, data.view(np.uint8)[:, :size])
                return after
            return do_store
        extend = {"i8": np.int8, "i16": np.int16, "u8": np.uint8, "u16": np.uint16}.get(kind)

        def do_load(w: Wave) -> int:
            lanes, where = active(w)
            if len(where):
                raw = self.gather(where, size)
                if extend is not None:
                    values = raw.copy().view(extend).reshape(-1).astype(np.int64).astype(np.uint32)
                    w.v[register, lanes] = values
                else:
                    words = raw.copy().view(np.uint32).reshape(len(where), dwords)
                    for k in range(dwords):
                        w.v[register + k, lanes] = words[:, k]
            return after
        return do_load

    # -- SCRATCH (private segment) ------------------------------------------------------------------
    def compile_scratch(self, ins: Instruction):
        match = re.fullmatch(r"scratch_(load|store)_(b32|b64|b96|b128|u8|i8|u16|i16|b8|b16)", ins.name)
        if match is None:
            return None
        if not self.rsrc2["SCRATCH_EN"]:
            raise ShaderError(f"{ins.text}: the dispatch has no scratch (COMPUTE_PGM_RSRC2.SCRATCH_EN "
                              "is clear)", ins.address)
        after = ins.address + ins.size
        store = match.group(1) == "store"
        kind = match.group(2)
        size = {"b32": 4, "b64": 8, "b96": 12, "b128": 16, "u8": 1, "i8": 1, "b8": 1,
                "u16": 2, "i16": 2, "b16": 2}[kind]
        dwords = max(1, size // 4)
        fields = ins.fields
        # ISA guide, "Scratch" addressing: VGPR (when SVE) + SGPR (unless off) + the signed offset
        offset = decoder.signed(fields["offset"], 13)
        vaddr = fields["addr"] - decoder.VGPR_FIRST if fields["sve"] else None
        saddr_code = fields["saddr"]
        saddr = None
        if saddr_code not in SADDR_OFF:
            saddr = scalar_reader(decoder.source_operand(saddr_code, 1, "saddr", None))
        vgprs = self.vgprs
        register = (fields["data"] if store else fields["vdst"]) - decoder.VGPR_FIRST
        if register + dwords > vgprs or (vaddr is not None and vaddr >= vgprs):
            raise ShaderError(f"{ins.text}: a register is past the {vgprs} VGPRs allocated", ins.address)
        span = np.arange(size, dtype=np.uint64)
        lane_ids = np.arange(WAVE_LANES, dtype=np.uint64)

        def addresses(w: Wave, lanes: np.ndarray) -> np.ndarray:
            """(active lanes, size) GPU addresses of each byte the access touches."""
            private = np.full(WAVE_LANES, offset & WORD_MASK, dtype=np.uint64)
            if vaddr is not None:
                private += w.v[vaddr].astype(np.uint64)
            if saddr is not None:
                private += np.uint64(saddr(w) & WORD_MASK)
            private &= np.uint64(WORD_MASK)
            byte = private[lanes, None] + span
            unit = np.uint64(SCRATCH_DWORD)
            # AMDGPUUsage "Memory Spaces": dword A / 4 of every lane lies together, lane by lane
            interleaved = ((byte // unit) * np.uint64(WAVE_LANES) + lane_ids[lanes, None]) * unit
            return np.uint64(w.scratch) + interleaved + byte % unit

        if store:
            def do_store(w: Wave) -> int:
                lanes = w.mask()
                if lanes.any():
                    where = addresses(w, lanes)
                    data = np.ascontiguousarray(w.v[register:register + dwords, lanes].T)
                    payload = data.view(np.uint8)[:, :size].reshape(-1, 1)
                    self.scatter(where.reshape(-1), payload)
                return after
            return do_store
        extend = {"i8": np.int8, "i16": np.int16, "u8": np.uint8, "u16": np.uint16}.get(kind)

        def do_load(w: Wave) -> int:
            lanes = w.mask()
            if lanes.any():
                where = addresses(w, lanes)
                raw = self.gather(where.reshape(-1), 1).reshape(len(where), size)
                if extend is not None:
                    values = raw.copy().view(extend).reshape(-1).astype(np.int64).astype(np.uint32)
                    w.v[register, lanes] = values
                else:
                    words = raw.copy().view(np.uint32).reshape(len(where), dwords)
                    for k in range(dwords):
                        w.v[register + k, lanes] = words[:, k]
            return after
        return do_load

    # -- DS (LDS) -----------------------------------------------------------------------------------
    def compile_ds(self, ins: Instruction):
        match = re.fullmatch(r"ds_(load|store)_(2addr_stride64_|2addr_)?"
                             r"(b32|b64|b96|b128|u8|i8|u16|i16|b8|b16)", ins.name)
        if match is None or ins.fields["gds"]:
            return None
        after = ins.address + ins.size
        store = match.group(1) == "store"
        pair = match.group(2)
        kind = match.group(3)
        size = {"b32": 4, "b64": 8, "b96": 12, "b128": 16, "u8": 1, "i8": 1, "b8": 1,
                "u16": 2, "i16": 2, "b16": 2}[kind]
        dwords = max(1, size // 4)
        fields = ins.fields
        address_register = fields["addr"] - decoder.VGPR_FIRST
        if pair:
            # ISA guide, DS_LOAD_2ADDR / _STRIDE64: the offsets count elements (64 of them)
            unit = size * (64 if "stride64" in pair else 1)
            offsets = (fields["offset0"] * unit, fields["offset1"] * unit)
        else:
            offsets = (fields["offset0"] | fields["offset1"] << 8,)
        if store:
            sources = [fields["data0"] - decoder.VGPR_FIRST, fields["data1"] - decoder.VGPR_FIRST]
            registers = [sources[i] for i in range(len(offsets))]
        else:
            first = fields["vdst"] - decoder.VGPR_FIRST
            registers = [first + i * dwords for i in range(len(offsets))]
        if max(registers) + dwords > self.vgprs or address_register >= self.vgprs:
            raise ShaderError(f"{ins.text}: a register is past the {self.vgprs} VGPRs allocated",
                              ins.address)
        span = np.arange(size)
        extend = {"i8": np.int8, "i16": np.int16, "u8": np.uint8, "u16": np.uint16}.get(kind)

        def step(w: Wave) -> int:
            lanes = w.mask()
            base = w.v[address_register, lanes].astype(np.int64)
            lds = w.lds
            for offset, register in zip(offsets, registers):
                where = base + offset
                # an access outside the work-group's allocation reads 0 and writes nothing
                # (ISA guide, "LDS" out-of-range behaviour)
                inside = where + size <= len(lds)
                index = where[inside, None] + span
                if store:
                    data = np.ascontiguousarray(w.v[register:register + dwords, lanes].T)
                    lds[index] = data.view(np.uint8)[:, :size][inside]
                    continue
                raw = np.zeros((len(where), size), dtype=np.uint8)
                raw[inside] = lds[index]
                if extend is not None:
                    w.v[register, lanes] = raw.view(extend).reshape(-1).astype(np.int64).astype(np.uint32)
                    continue
                words = raw.view(np.uint32).reshape(len(where), dwords)
                for k in range(dwords):
                    w.v[register + k, lanes] = words[:, k]
            return after
        return step

    # -- MUBUF: only the cache invalidates decode ----------------------------------------------------
    def compile_mubuf(self, ins: Instruction):
        if ins.name in ("buffer_gl0_inv", "buffer_gl1_inv"):
            after = ins.address + ins.size
            return lambda w: after  # no caches in this model
        return None


# -- scalar ALU helpers -----------------------------------------------------------------------------
_SCALAR_COMPARES = {"eq": lambda a, b: a == b, "lg": lambda a, b: a != b, "gt": lambda a, b: a > b,
                    "ge": lambda a, b: a >= b, "lt": lambda a, b: a < b, "le": lambda a, b: a <= b}


def _signed_overflow(a: int, b: int, result: int) -> int:
    """SCC of S_ADD_I32: the operands have the same sign and the result's differs."""
    sign = 1 << 31
    return int(not (a ^ b) & sign and bool((a ^ result) & sign))


def _logic(function):
    def operation(a, b, scc, width):
        result = function(a, b) & ((1 << width) - 1)
        return result, int(result != 0)
    return operation


def _add_u32(a, b, scc, width):
    total = a + b
    return total & WORD_MASK, total >> 32


def _addc_u32(a, b, scc, width):
    total = a + b + scc
    return total & WORD_MASK, total >> 32


def _sub_u32(a, b, scc, width):
    return (a - b) & WORD_MASK, int(b > a)


def _subb_u32(a, b, scc, width):
    return (a - b - scc) & WORD_MASK, int(b + scc > a)


def _add_i32(a, b, scc, width):
    result = (a + b) & WORD_MASK
    return result, _signed_overflow(a, b, result)


def _sub_i32(a, b, scc, width):
    result = (a - b) & WORD_MASK
    sign = 1 << 31
    return result, int(bool((a ^ b) & sign) and bool((a ^ result) & sign))


def _shift_left(a, b, scc, width):
    result = (a << (b & (width - 1))) & ((1 << width) - 1)
    return result, int(result != 0)


def _shift_right(a, b, scc, width):
    result = a >> (b & (width - 1))
    return result, int(result != 0)


def _shift_right_arithmetic(a, b, scc, width):
    result = (decoder.signed(a, width) >> (b & (width - 1))) & ((1 << width) - 1)
    return result, int(result != 0)


def _lshl_add(shift):
    def operation(a, b, scc, width):
        total = (a << shift) + b
        return total & WORD_MASK, int(total >> 32 != 0)
    return operation


def _bfe(is_signed):
    def operation(a, b, scc, width):
        offset = b & (width - 1)
        size = (b >> 16) & 0x7F
        field = (a >> offset) & ((1 << size) - 1) if size else 0
        if is_signed and size:
            field = decoder.signed(field, size) & ((1 << width) - 1)
        return field, int(field != 0)
    return operation


def _minmax(choose, is_signed):
    def operation(a, b, scc, width):
        x = decoder.signed(a, 32) if is_signed else a
        y = decoder.signed(b, 32) if is_signed else b
        first = choose(x, y)
        return (a if first else b), int(first)
    return operation


_SOP2 = {
    "s_add_u32": _add_u32, "s_addc_u32": _addc_u32, "s_sub_u32": _sub_u32, "s_subb_u32": _subb_u32,
    "s_add_i32": _add_i32, "s_sub_i32": _sub_i32,
    "s_lshl_b32": _shift_left, "s_lshl_b64": _shift_left, "s_lshr_b32": _shift_right,
    "s_lshr_b64": _shift_right, "s_ashr_i32": _shift_right_arithmetic,
    "s_ashr_i64": _shift_right_arithmetic,
    "s_lshl1_add_u32": _lshl_add(1), "s_lshl2_add_u32": _lshl_add(2), "s_lshl3_add_u32": _lshl_add(3),
    "s_lshl4_add_u32": _lshl_add(4),
    "s_min_i32": _minmax(lambda x, y: x < y, True), "s_min_u32": _minmax(lambda x, y: x < y, False),
    "s_max_i32": _minmax(lambda x, y: x > y, True), "s_max_u32": _minmax(lambda x, y: x > y, False),
    "s_mul_i32": lambda a, b, scc, width: ((a * b) & WORD_MASK, None),
    "s_mul_hi_u32": lambda a, b, scc, width: ((a * b) >> 32, None),
    "s_mul_hi_i32": lambda a, b, scc, width: (
        ((decoder.signed(a, 32) * decoder.signed(b, 32)) >> 32) & WORD_MASK, None),
    "s_cselect_b32": lambda a, b, scc, width: (a if scc else b, None),
    "s_cselect_b64": lambda a, b, scc, width: (a if scc else b, None),
    "s_bfe_u32": _bfe(False), "s_bfe_i32": _bfe(True), "s_bfe_u64": _bfe(False), "s_bfe_i64": _bfe(True),
    "s_bfm_b32": lambda a, b, scc, width: ((((1 << (a & 31)) - 1) << (b & 31)) & WORD_MASK, None),
}
for _width in ("b32", "b64"):
    _SOP2.update({
        f"s_and_{_width}": _logic(lambda a, b: a & b), f"s_or_{_width}": _logic(lambda a, b: a | b),
        f"s_xor_{_width}": _logic(lambda a, b: a ^ b), f"s_nand_{_width}": _logic(lambda a, b: ~(a & b)),
        f"s_nor_{_width}": _logic(lambda a, b: ~(a | b)), f"s_xnor_{_width}": _logic(lambda a, b: ~(a ^ b)),
        f"s_and_not1_{_width}": _logic(lambda a, b: a & ~b),
        f"s_or_not1_{_width}": _logic(lambda a, b: a | ~b),
    })


def run_dispatch(gmc, dispatch, budget: int = DEFAULT_BUDGET, hub: str = GFX_HUB) -> DispatchStats:
    """Run every workgroup of `dispatch` (an object with vmid, dimensions, initiator,
    program_address, rsrc1, rsrc2, threads and user_data, as mec.Dispatch has them)."""
    return Interpreter(gmc, dispatch, budget, hub).run()
