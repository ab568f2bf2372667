"""The `interp` benchmark (`python -m tools.bench interp`): the RDNA3 interpreter's speed.

Runs the prebuilt vector_add_f32 and matmul_f32 (compute/amd/kernels/prebuilt) straight through
`interp.run_dispatch` on a bare Navi31GPU whose VRAM the GFX hub reaches through VMID 0's system
aperture, as the mock MEC would after a DISPATCH_DIRECT, and reports lane-instructions per second
(EXEC lanes summed over executed wave instructions) and the wall time of a 1 M-element vector add.
Results are checked against numpy so a fast wrong interpreter cannot report a figure. Figures
only: the target (docs/mockgpu.md, "Speed") is printed beside them, nothing is asserted.
It lives in tools/ because it needs both the mock and compute's code-object loader, and mockgpu
may import only hal and autogen.
"""
from __future__ import annotations

import pathlib
import struct
import time

import numpy as np

from autogen.amd.regs import gc_11_0_0
from compute.amd import codeobject
from mockgpu.amd import Navi31GPU
from mockgpu.amd.mec import Dispatch
from mockgpu.amd.rdna3 import interp

NAME = "interp"
TARGET_LANE_INSTRUCTIONS_S = 5e6  # at least 5 M lane-instructions/s: a 1 M-element add under 1 s
VECTOR_ADD_N = 1 << 20
MATMUL_SIZE = 64
MIB = 1 << 20
VRAM_BYTES = 64 * MIB
FB_UNIT_SHIFT = 24  # GCMC_VM_FB_LOCATION_BASE/TOP hold bits 47:24
APERTURE_SHIFT = 18  # GCMC_VM_SYSTEM_APERTURE_LOW/HIGH_ADDR hold bits 47:18
PROGRAM_ALIGN = 256  # COMPUTE_PGM_LO holds the address >> 8
PACKET_ALIGN = 64  # hsa.h: AQL packets are 64-byte aligned
# hsa.h hsa_kernel_dispatch_packet_t (64 bytes)
DISPATCH_PACKET = struct.Struct("<HHHHHHIIIIIQQQQ")
PREBUILT = pathlib.Path(codeobject.__file__).parent / "kernels" / "prebuilt"


class BareGPU:
    """A Navi31GPU with VMID 0's system aperture over its VRAM and a bump allocator: what a dispatch
    needs without a driver (the interpreter tests build on it too)."""

    def __init__(self) -> None:
        self.gpu = Navi31GPU(vram_size=VRAM_BYTES)
        regfile = self.gpu.regfile
        self.fb_base = regfile.get("GC", "regGCMC_VM_FB_LOCATION_BASE") << FB_UNIT_SHIFT
        top = regfile.get("GC", "regGCMC_VM_FB_LOCATION_TOP") << FB_UNIT_SHIFT
        # gfxhub_v3_0_init_system_aperture_regs: the VMID 0 aperture covers the FB range
        self.write("regGCMC_VM_SYSTEM_APERTURE_LOW_ADDR", self.fb_base >> APERTURE_SHIFT)
        high = (top + (1 << FB_UNIT_SHIFT) - 1) >> APERTURE_SHIFT
        self.write("regGCMC_VM_SYSTEM_APERTURE_HIGH_ADDR", high)
        self.next = MIB

    def write(self, name: str, value: int) -> None:
        self.gpu.regfile.write32(self.gpu.regfile.address("GC", name), value)

    def place(self, data: bytes, align: int = PROGRAM_ALIGN) -> int:
        offset = -(-self.next // align) * align
        self.gpu.vram[offset:offset + len(data)] = data
        self.next = offset + max(len(data), 1)
        return self.fb_base + offset

    def fetch(self, address: int, dtype, count: int) -> np.ndarray:
        offset = address - self.fb_base
        size = np.dtype(dtype).itemsize * count
        return np.frombuffer(bytes(self.gpu.vram[offset:offset + size]), dtype=dtype)

    def run(self, name: str, kernel: str, args: list, global_xy: tuple[int, int],
            local_xy: tuple[int, int]) -> interp.DispatchStats:
        program = codeobject.load_file(str(PREBUILT / name)).programs[kernel]
        code = self.place(program.code)
        kernarg = bytearray(program.kernarg_size)
        for arg, value in zip(program.args, args):
            size = 8 if arg.value_kind == "global_buffer" else arg.size
            kernarg[arg.offset:arg.offset + size] = value.to_bytes(size, "little")
        kernarg_address = self.place(bytes(kernarg), program.kernarg_align)
        packet = DISPATCH_PACKET.pack(0, 2, *local_xy, 1, 0, *global_xy, 1, 0, program.lds_size, 0,
                                      kernarg_address, 0, 0)
        values = {"dispatch_ptr": self.place(packet, PACKET_ALIGN),
                  "kernarg_segment_ptr": kernarg_address}
        user = [0] * program.descriptor.user_sgpr_count
        for slot in program.user_sgprs:
            for k in range(slot.count):
                user[slot.first + k] = (values[slot.name] >> (32 * k)) & 0xFFFFFFFF
        rsrc2_register = gc_11_0_0.get("regCOMPUTE_PGM_RSRC2")
        granules = -(-program.lds_size // interp.LDS_GRANULE_BYTES)
        rsrc2 = program.rsrc2 | rsrc2_register.encode(LDS_SIZE=granules)
        initiator = gc_11_0_0.get("regCOMPUTE_DISPATCH_INITIATOR").encode(
            COMPUTE_SHADER_EN=1, FORCE_START_AT_000=1, CS_W32_EN=1)
        groups = tuple(-(-g // size) for g, size in zip(global_xy, local_xy)) + (1,)
        dispatch = Dispatch(me=1, pipe=0, queue=0, vmid=0, dimensions=groups, initiator=initiator,
                            program_address=code + program.entry_offset, rsrc1=program.rsrc1,
                            rsrc2=rsrc2, rsrc3=program.rsrc3, threads=(*local_xy, 1),
                            user_data=tuple(user))
        return interp.run_dispatch(self.gpu.gmc, dispatch)


def _vector_add(machine: BareGPU, n: int) -> interp.DispatchStats:
    rng = np.random.default_rng(n)
    a = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    addresses = [machine.place(a.tobytes()), machine.place(b.tobytes()), machine.place(bytes(4 * n))]
    local = 256
    stats = machine.run("vector_add.co", "vector_add_f32", addresses + [n], (-(-n // local) * local, 1),
                        (local, 1))
    if not np.array_equal(machine.fetch(addresses[2], np.float32, n), a + b):
        raise AssertionError("the interpreter's vector_add_f32 does not match numpy")
    return stats


def _matmul(machine: BareGPU, size: int) -> interp.DispatchStats:
    rng = np.random.default_rng(size)
    a = rng.standard_normal((size, size)).astype(np.float32)
    b = rng.standard_normal((size, size)).astype(np.float32)
    addresses = [machine.place(a.tobytes()), machine.place(b.tobytes()),
                 machine.place(bytes(4 * size * size))]
    tile = 16  # matmul.cl TILE
    stats = machine.run("matmul.co", "matmul_f32", addresses + [size, size, size], (size, size),
                        (tile, tile))
    c = machine.fetch(addresses[2], np.float32, size * size).reshape(size, size)
    if not np.allclose(c, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5):
        raise AssertionError("the interpreter's matmul_f32 does not match numpy")
    return stats


def run(vector_add_n: int = VECTOR_ADD_N, matmul_size: int = MATMUL_SIZE) -> dict[str, float]:
    machine = BareGPU()
    start = time.perf_counter()
    add = _vector_add(machine, vector_add_n)
    add_seconds = time.perf_counter() - start
    mat = _matmul(BareGPU(), matmul_size)
    return {
        "vector_add_elements": vector_add_n,
        "vector_add_s": add_seconds,
        "vector_add_lane_instructions_per_s": add.lane_instructions / add.seconds,
        "matmul_size": matmul_size,
        "matmul_lane_instructions_per_s": mat.lane_instructions / mat.seconds,
        "target_lane_instructions_per_s": TARGET_LANE_INSTRUCTIONS_S,
    }
