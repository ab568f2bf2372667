"""The mock GPU's RDNA3 interpreter running the kernel library's prebuilt gfx1100 code objects.

Each test sets up what a driver would for a dispatch, by hand: the code in VRAM reached through
VMID 0's system aperture, an hsa_kernel_dispatch_packet and the kernarg segment in VRAM, the
COMPUTE_* values from the kernel descriptor and the user SGPRs it enables; then runs the grid in
the interpreter and checks the buffers against numpy."""
from __future__ import annotations

import pathlib
import struct

import numpy as np
import pytest

from autogen.amd.regs import gc_11_0_0
from compute.amd import codeobject
from mockgpu.amd.gmc import FaultKind
from mockgpu.amd.mec import Dispatch
from mockgpu.amd.rdna3 import interp
from tools.interp_bench import BareGPU

PREBUILT = pathlib.Path(codeobject.__file__).parent / "kernels" / "prebuilt"
# hsa.h hsa_kernel_dispatch_packet_t: header, setup, workgroup_size_x/y/z, reserved0,
# grid_size_x/y/z, private_segment_size, group_segment_size, kernel_object, kernarg_address,
# reserved2, completion_signal (64 bytes)
DISPATCH_PACKET = struct.Struct("<HHHHHHIIIIIQQQQ")
UNMAPPED = 0x1000  # below the FB range: outside the aperture, and VMID 0's context is disabled
# llvm-mc-16 -mcpu=gfx1100 encodings of single instructions
S_BRANCH_SELF = bytes([0xFF, 0xFF, 0xA0, 0xBF])  # s_branch 65535: jumps to itself
S_ENDPGM = bytes([0x00, 0x00, 0xB0, 0xBF])
V_SIN_F16 = bytes([0x00, 0xC1, 0x02, 0x7E])  # v_sin_f16_e32 v1, v0 (16-bit VALU: not modelled)


class Machine(BareGPU):
    """The bare GPU of the interp benchmark with the dispatch set-up these tests need."""

    def dispatch(self, program: codeobject.Program, code_address: int, args: list, global_size,
                 local_size) -> Dispatch:
        """The Dispatch the MEC would record for `program(*args)` over `global_size` work-items
        (an int or an (x, y) pair, as `local_size`)."""
        global_xyz = dims(global_size)
        local_xyz = dims(local_size)
        setup = 1 if isinstance(global_size, int) else len(global_size)  # hsa.h: the dimensions
        kernarg = bytearray(program.kernarg_size)
        for arg, value in zip(program.args, args):
            if arg.value_kind == "global_buffer":
                kernarg[arg.offset:arg.offset + 8] = value.to_bytes(8, "little")
            elif isinstance(value, float):
                kernarg[arg.offset:arg.offset + 4] = struct.pack("<f", value)
            else:
                kernarg[arg.offset:arg.offset + arg.size] = value.to_bytes(arg.size, "little")
        kernarg_address = self.place(bytes(kernarg), program.kernarg_align)
        packet = DISPATCH_PACKET.pack(0, setup, *local_xyz, 0, *global_xyz, 0,
                                      program.lds_size, 0, kernarg_address, 0, 0)
        packet_address = self.place(packet, 64)
        values = {"dispatch_ptr": packet_address, "kernarg_segment_ptr": kernarg_address}
        user = [0] * program.descriptor.user_sgpr_count
        for slot in program.user_sgprs:
            value = values[slot.name]
            for k in range(slot.count):
                user[slot.first + k] = (value >> (32 * k)) & 0xFFFFFFFF
        groups = tuple(-(-g // size) for g, size in zip(global_xyz, local_xyz))
        # the driver sizes LDS from the descriptor's group segment (LLVM AMDGPUUsage: "the
        # runtime" fills COMPUTE_PGM_RSRC2.LDS_SIZE; the descriptor's field is zero)
        lds_granules = -(-program.lds_size // interp.LDS_GRANULE_BYTES)
        rsrc2 = program.rsrc2 | gc_11_0_0.get("regCOMPUTE_PGM_RSRC2").encode(LDS_SIZE=lds_granules)
        initiator = gc_11_0_0.get("regCOMPUTE_DISPATCH_INITIATOR").encode(
            COMPUTE_SHADER_EN=1, FORCE_START_AT_000=1, CS_W32_EN=int(program.wavefront_size == 32))
        return Dispatch(me=1, pipe=0, queue=0, vmid=0, dimensions=groups, initiator=initiator,
                        program_address=code_address + program.entry_offset, rsrc1=program.rsrc1,
                        rsrc2=rsrc2, rsrc3=program.rsrc3, threads=local_xyz,
                        user_data=tuple(user))

    def load(self, name: str, kernel: str) -> tuple[codeobject.Program, int]:
        program = codeobject.load_file(str(PREBUILT / name)).programs[kernel]
        return program, self.place(program.code)

    def run(self, name: str, kernel: str, args: list, global_size: int, local_size: int = 64,
            budget: int = interp.DEFAULT_BUDGET) -> interp.DispatchStats:
        program, code = self.load(name, kernel)
        dispatch = self.dispatch(program, code, args, global_size, local_size)
        return interp.run_dispatch(self.gpu.gmc, dispatch, budget)


def dims(size) -> tuple[int, int, int]:
    """An int or a tuple of sizes as (x, y, z)."""
    sizes = (size,) if isinstance(size, int) else tuple(size)
    return sizes + (1,) * (3 - len(sizes))


@pytest.fixture
def machine() -> Machine:
    return Machine()


def grid_for(n: int, local: int) -> int:
    return -(-n // local) * local


@pytest.mark.parametrize("n, local", [(1000, 64), (77, 32), (4099, 256), (1, 64)])
def test_vector_add_f32_matches_numpy(machine, n, local):
    rng = np.random.default_rng(n)
    a = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    sentinel = np.full(n + 64, -7.0, dtype=np.float32)
    a_address = machine.place(a.tobytes())
    b_address = machine.place(b.tobytes())
    c_address = machine.place(sentinel.tobytes())
    stats = machine.run("vector_add.co", "vector_add_f32", [a_address, b_address, c_address, n],
                        grid_for(n, local), local)
    result = machine.fetch(c_address, np.float32, n + 64)
    assert np.array_equal(result[:n], a + b)
    assert np.all(result[n:] == -7.0)  # the lanes past n stored nothing
    assert stats.waves == grid_for(n, local) // 32


def test_vector_add_i32_wraps_like_the_hardware(machine):
    n = 333
    rng = np.random.default_rng(1)
    a = rng.integers(-2**31, 2**31, n, dtype=np.int64).astype(np.int32)
    b = rng.integers(-2**31, 2**31, n, dtype=np.int64).astype(np.int32)
    addresses = [machine.place(a.tobytes()), machine.place(b.tobytes()), machine.place(bytes(4 * n))]
    machine.run("vector_add.co", "vector_add_i32", addresses + [n], grid_for(n, 64))
    expected = (a.astype(np.int64) + b).astype(np.int32)
    assert np.array_equal(machine.fetch(addresses[2], np.int32, n), expected)


@pytest.mark.parametrize("n", [1000, 65])
def test_saxpy_matches_numpy(machine, n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    alpha = 1.75
    x_address = machine.place(x.tobytes())
    y_address = machine.place(y.tobytes())
    machine.run("saxpy.co", "saxpy", [alpha, x_address, y_address, n], grid_for(n, 64))
    expected = np.float32(alpha) * x + y
    assert np.allclose(machine.fetch(y_address, np.float32, n), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kernel, value", [("memset_u32", 0xDEADBEEF), ("memset_f32", 2.5)])
def test_memset_fills_exactly_n_elements(machine, kernel, value):
    n = 301
    address = machine.place(bytes(4 * (n + 32)))
    machine.run("memory.co", kernel, [address, value, n], grid_for(n, 64))
    words = machine.fetch(address, np.uint32, n + 32)
    expected = value if isinstance(value, int) else struct.unpack("<I", struct.pack("<f", value))[0]
    assert np.all(words[:n] == expected)
    assert np.all(words[n:] == 0)


def test_copy_u32(machine):
    n = 129
    source = np.arange(n, dtype=np.uint32) * 3 + 1
    source_address = machine.place(source.tobytes())
    destination = machine.place(bytes(4 * n))
    machine.run("memory.co", "copy_u32", [source_address, destination, n], grid_for(n, 64))
    assert np.array_equal(machine.fetch(destination, np.uint32, n), source)


REDUCE_WG = 256  # reduce.cl REDUCE_WG: the required work-group size
TILE = 16  # matmul.cl TILE


@pytest.mark.parametrize("kernel, dtype", [("reduce_sum_f32", np.float32), ("reduce_sum_i32", np.int32)])
@pytest.mark.parametrize("n", [1000, 256, 3])
def test_reduce_sums_each_workgroup_through_lds_and_barriers(machine, kernel, dtype, n):
    """Eight waves per work-group meet at every s_barrier of the LDS tree; the descriptor's LDS
    reaches COMPUTE_PGM_RSRC2.LDS_SIZE (without it every partial sum reads 0)."""
    rng = np.random.default_rng(n)
    if dtype is np.float32:
        values = rng.standard_normal(n).astype(np.float32)
    else:
        values = rng.integers(-2**31, 2**31, n, dtype=np.int64).astype(np.int32)
    groups = -(-n // REDUCE_WG)
    in_address = machine.place(values.tobytes())
    partial_address = machine.place(bytes(4 * groups))
    stats = machine.run("reduce.co", kernel, [in_address, partial_address, n],
                        grid_for(n, REDUCE_WG), REDUCE_WG)
    partial = machine.fetch(partial_address, dtype, groups)
    padded = np.zeros(groups * REDUCE_WG, dtype=np.int64 if dtype is np.int32 else np.float64)
    padded[:n] = values
    expected = padded.reshape(groups, REDUCE_WG).sum(axis=1)
    if dtype is np.int32:
        assert np.array_equal(partial, expected.astype(np.int64).astype(np.uint64).astype(np.uint32)
                              .view(np.int32))
    else:
        assert np.allclose(partial, expected, rtol=1e-5, atol=1e-4)
    assert stats.waves == groups * REDUCE_WG // 32


@pytest.mark.parametrize("m, n, k", [(16, 16, 16), (37, 29, 45), (1, 70, 3)])
def test_matmul_tiles_through_lds_match_numpy(machine, m, n, k):
    rng = np.random.default_rng(m * n * k)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    a_address = machine.place(a.tobytes())
    b_address = machine.place(b.tobytes())
    c_address = machine.place(np.full(m * n + 16, -7.0, np.float32).tobytes())
    machine.run("matmul.co", "matmul_f32", [a_address, b_address, c_address, m, n, k],
                (grid_for(n, TILE), grid_for(m, TILE)), (TILE, TILE))
    c = machine.fetch(c_address, np.float32, m * n + 16)
    assert np.allclose(c[:m * n].reshape(m, n), a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)
    assert np.all(c[m * n:] == -7.0)  # the guarded edge lanes stored nothing


def test_reduce_and_matmul_kernels_use_lds_and_barriers(machine):
    """Every kernel in reduce.co and matmul.co decodes and compiles: their LDS and barrier
    instructions are implemented (a missing one raises UnsupportedInstruction)."""
    for name in ("reduce.co", "matmul.co"):
        for kernel in codeobject.load_file(str(PREBUILT / name)).programs:
            program, code = machine.load(name, kernel)
            dispatch = machine.dispatch(program, code, [0] * len(program.args), 32, 32)
            runner = interp.Interpreter(machine.gpu.gmc, dispatch)
            address = code + program.entry_offset
            end = address + program.code_size
            while address < end:
                runner.compile_at(address)
                address += runner.decode_at(address).size


def test_an_unsupported_instruction_is_an_error_naming_it_and_its_address(machine):
    program, code = machine.load("vector_add.co", "vector_add_f32")
    dispatch = machine.dispatch(program, code, [0, 0, 0, 0], 32, 32)
    bad = machine.place(V_SIN_F16 + S_ENDPGM)
    dispatch.program_address = bad
    with pytest.raises(interp.UnsupportedInstruction) as error:
        interp.run_dispatch(machine.gpu.gmc, dispatch)
    assert "v_sin_f16" in str(error.value)
    assert f"{bad:#x}" in str(error.value)
    assert error.value.address == bad


def test_an_unmapped_address_faults_in_the_gmc_and_stops_the_wave(machine):
    faults = []
    machine.gpu.gmc.on_fault = faults.append
    n = 40
    with pytest.raises(interp.ShaderMemoryFault) as error:
        machine.run("memory.co", "memset_u32", [UNMAPPED, 5, n], grid_for(n, 64))
    assert error.value.fault_address == UNMAPPED
    assert f"{UNMAPPED:#x}" in str(error.value)
    assert "global_store_b32" in str(error.value)
    (record,) = faults
    assert record.address == UNMAPPED and record.write and record.kind is FaultKind.RANGE
    assert record.client_id == interp.CLIENT_TCP


def test_a_kernel_that_never_ends_is_a_hang_after_the_budget(machine):
    program, code = machine.load("vector_add.co", "vector_add_f32")
    dispatch = machine.dispatch(program, code, [0, 0, 0, 0], 32, 32)
    dispatch.program_address = machine.place(S_BRANCH_SELF)
    with pytest.raises(interp.ShaderHang) as error:
        interp.run_dispatch(machine.gpu.gmc, dispatch, budget=500)
    assert "500 wave instructions" in str(error.value)


def test_the_initial_state_follows_the_descriptor(machine):
    """v0 packs the work-item ids; the workgroup id follows the USER_SGPR user SGPRs; EXEC covers
    the work-items of the last, partial wave only."""
    program, code = machine.load("vector_add.co", "vector_add_f32")
    dispatch = machine.dispatch(program, code, [0, 0, 0, 0], 40, 40)
    runner = interp.Interpreter(machine.gpu.gmc, dispatch)
    lds = np.zeros(0, np.uint8)
    wave = runner.launch((3, 0, 0), 1, 2, 40, lds)
    assert wave.s[program.system_sgprs[0].first] == 3
    assert wave.s[0:4] == list(dispatch.user_data[0:4])
    assert wave.s[interp.EXEC_LO] == (1 << 8) - 1
    assert list(wave.v[0][:8]) == list(range(32, 40))


def test_interpreter_speed_on_vector_add(machine):
    """The figure tools.bench reports: lane instructions per second on a 32 Ki-element add."""
    n = 32 * 1024
    a = np.ones(n, np.float32)
    addresses = [machine.place(a.tobytes()), machine.place(a.tobytes()), machine.place(bytes(4 * n))]
    stats = machine.run("vector_add.co", "vector_add_f32", addresses + [n], n, 256)
    assert np.all(machine.fetch(addresses[2], np.float32, n) == 2.0)
    rate = stats.lane_instructions / stats.seconds
    print(f"interpreter: {rate / 1e6:.2f} M lane-instructions/s "
          f"({stats.wave_instructions} wave instructions in {stats.seconds:.3f} s)")
    assert stats.lane_instructions == stats.wave_instructions * 32
