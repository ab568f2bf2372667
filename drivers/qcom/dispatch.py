"""Compute dispatch on Adreno 6xx: the CP packets and SP/HLSQ state that run one ir3 kernel over a grid.

`ComputeDispatch` describes one launch (code address and length, register footprint, the const file,
the ids' registers, local memory, local size and number of groups); `emit_dispatch(stream, launch,
scratch)` appends it to a `CommandStream` in the order Mesa's a6xx compute path uses (Mesa
src/gallium/drivers/freedreno/a6xx/fd6_compute.cc cs_program_emit and fd6_launch_grid,
fd6_emit_shader in fd6_program.cc, fd6_emit_user_consts in fd6_const.cc; turnip tu_dispatch):

1. CACHE_INVALIDATE so the kernel reads what the host and copies wrote;
2. HLSQ_INVALIDATE_CMD (CS state and IBOs), HLSQ_CS_CNTL (CONSTLEN, ENABLED), SP_CS_CONFIG (ENABLED),
   SP_CS_CTRL_REG0 (footprint, thread size, branch stack), HLSQ_CS_CNTL_0/1 (the registers the
   hardware fills with the work-group and local invocation ids);
3. SP_CS_OBJ_START, SP_CS_INSTRLEN and CP_LOAD_STATE6_FRAG (ST6_SHADER, SS6_INDIRECT, SB6_CS_SHADER);
4. CP_LOAD_STATE6_FRAG (ST6_CONSTANTS, SS6_DIRECT, SB6_CS_SHADER) with the const file inline;
5. SP_CS_CTRL_REG1 (local memory), HLSQ_CS_NDRANGE_0..6, HLSQ_CS_KERNEL_GROUP_X/Y/Z, CP_EXEC_CS;
6. CP_WAIT_FOR_IDLE and a cache flush (CACHE_FLUSH_TS) so later readers see the kernel's stores.
"""
from __future__ import annotations

import dataclasses
import struct

from autogen.qcom import a6xx, pm4
from drivers.qcom.cp import CommandStream
from hal.errors import InvalidArgument

# Mesa src/freedreno/ir3/ir3_compiler.c: on a6xx instructions are fetched in groups of 16
# (compiler->instr_align), so SP_CS_INSTRLEN and the shader's NUM_UNIT count 128-byte units
INSTRUCTION_BYTES = 8
INSTRUCTIONS_PER_UNIT = 16
UNIT_BYTES = INSTRUCTION_BYTES * INSTRUCTIONS_PER_UNIT
# Mesa ir3_shader.h: CONSTLEN counts vec4s and is aligned to 4 vec4s (ir3_const_state alignment)
CONSTLEN_ALIGN = 4
VEC4_DWORDS = 4
# Mesa ir3.h regid(63, 0): "this id is not used"
REGID_UNUSED = 4 * 63
# Mesa ir3.h: r48 and up are shared registers; a footprint counts r0..r47 at most
MAX_FULL_REGS = 48
# Mesa src/freedreno/common/freedreno_dev_info.py a6xx: max_compute_workgroup_invocations 1024
MAX_LOCAL_INVOCATIONS = 1024
# Mesa freedreno_dev_info.py a6xx: cs_shared_mem_size 32 KiB
MAX_LOCAL_MEMORY = 32 * 1024
# fd6_compute.cc fd6_launch_grid: SHARED_SIZE = max((bytes - 1) / 1024, 1), in KiB units
SHARED_SIZE_UNIT = 1024
# fd6_compute.cc: KERNELDIM is the number of dimensions of the launch (3 when unknown)
KERNEL_DIMENSIONS = 3
_STATE_BLOCK = pm4.ENUMS["a6xx_state_block"]
_STATE_TYPE = pm4.ENUMS["a6xx_state_type"]
_STATE_SRC = pm4.ENUMS["a6xx_state_src"]


@dataclasses.dataclass
class ComputeDispatch:
    """One kernel launch (see the module docstring); sizes in work items and groups."""

    code_address: int
    instructions: int
    max_reg: int  # highest full register r0..r47 the code uses (-1: none)
    max_half_reg: int  # highest half register (-1: none)
    consts: list[int]  # the const file from c0.x on, dwords
    local_size: tuple[int, int, int]
    groups: tuple[int, int, int]
    local_id_regid: int = REGID_UNUSED
    workgroup_id_regid: int = REGID_UNUSED
    local_memory: int = 0
    branch_stack: int = 0
    # the const file from memory (SS6_INDIRECT) instead of inline: its GPU address (16-byte aligned)
    consts_address: int | None = None

    @property
    def instrlen(self) -> int:
        return -(-self.instructions // INSTRUCTIONS_PER_UNIT)

    @property
    def constlen(self) -> int:
        vec4s = -(-len(self.consts) // VEC4_DWORDS)
        return -(-vec4s // CONSTLEN_ALIGN) * CONSTLEN_ALIGN

    def validate(self) -> None:
        if self.code_address % UNIT_BYTES:
            raise InvalidArgument(f"kernel code at {self.code_address:#x}: the SP fetches "
                                  f"{UNIT_BYTES}-byte units; align it to {UNIT_BYTES}")
        if self.instructions < 1:
            raise InvalidArgument("a kernel has at least one instruction (end)")
        if not -1 <= self.max_reg < MAX_FULL_REGS:
            raise InvalidArgument(f"full register footprint r0..r{self.max_reg}: the SP allocates "
                                  f"r0..r{MAX_FULL_REGS - 1} per thread at most")
        invocations = self.local_size[0] * self.local_size[1] * self.local_size[2]
        if min(self.local_size) < 1 or invocations > MAX_LOCAL_INVOCATIONS:
            raise InvalidArgument(f"local size {self.local_size}: 1..{MAX_LOCAL_INVOCATIONS} "
                                  "invocations per work group on a6xx")
        if min(self.groups) < 1:
            raise InvalidArgument(f"grid {self.groups}: at least one group per dimension")
        if not 0 <= self.local_memory <= MAX_LOCAL_MEMORY:
            raise InvalidArgument(f"{self.local_memory} bytes of local memory: a6xx has "
                                  f"{MAX_LOCAL_MEMORY} per work group")


def shared_size_field(local_memory: int) -> int:
    """SP_CS_CTRL_REG1 SHARED_SIZE for `local_memory` bytes (fd6_launch_grid)."""
    return max((local_memory - 1) // SHARED_SIZE_UNIT, 1)


def branch_stack_field(depth: int) -> int:
    """SP_CS_CTRL_REG0 BRANCHSTACK for a branch depth (Mesa ir3_shader_branchstack_hw, a6xx)."""
    return depth // 2 + 1 if depth > 0 else 0


def _lo(value: int) -> int:
    return value & 0xFFFFFFFF


def _hi(value: int) -> int:
    return (value >> 32) & 0xFFFFFFFF


def _ext_src(address: int) -> tuple[int, int]:
    """CP_LOAD_STATE6_1/2: EXT_SRC_ADDR holds the address shifted right by 2 (FIELD_SHR)."""
    shift = pm4.FIELD_SHR["CP_LOAD_STATE6_1.EXT_SRC_ADDR"]
    low = pm4.CP_LOAD_STATE6_1.encode(EXT_SRC_ADDR=_lo(address) >> shift)
    return low, pm4.CP_LOAD_STATE6_2.encode(EXT_SRC_ADDR_HI=_hi(address))


def emit_dispatch(stream: CommandStream, launch: ComputeDispatch, scratch: int) -> CommandStream:
    """Append `launch` to `stream` (the order of the module docstring); `scratch` is a dword the
    closing cache flush writes."""
    launch.validate()
    stream.cache_invalidate()
    stream.reg_write(a6xx.REG_A6XX_HLSQ_INVALIDATE_CMD.offset,
                     a6xx.REG_A6XX_HLSQ_INVALIDATE_CMD.encode(CS_STATE=1, CS_IBO=1))
    stream.reg_write(a6xx.REG_A6XX_HLSQ_CS_CNTL.offset,
                     a6xx.REG_A6XX_HLSQ_CS_CNTL.encode(CONSTLEN=launch.constlen, ENABLED=1))
    stream.reg_write(a6xx.REG_A6XX_SP_CS_CONFIG.offset, a6xx.REG_A6XX_SP_CS_CONFIG.encode(ENABLED=1))
    stream.reg_write(a6xx.REG_A6XX_SP_CS_CTRL_REG0.offset, a6xx.REG_A6XX_SP_CS_CTRL_REG0.encode(
        THREADSIZE=a6xx.THREAD64, FULLREGFOOTPRINT=launch.max_reg + 1,
        HALFREGFOOTPRINT=launch.max_half_reg + 1, BRANCHSTACK=branch_stack_field(launch.branch_stack)))
    stream.reg_write(a6xx.REG_A6XX_HLSQ_CS_CNTL_0.offset,
                     a6xx.REG_A6XX_HLSQ_CS_CNTL_0.encode(
                         WGIDCONSTID=launch.workgroup_id_regid, WGSIZECONSTID=REGID_UNUSED,
                         WGOFFSETCONSTID=REGID_UNUSED, LOCALIDREGID=launch.local_id_regid),
                     a6xx.REG_A6XX_HLSQ_CS_CNTL_1.encode(LINEARLOCALIDREGID=REGID_UNUSED,
                                                         THREADSIZE=a6xx.THREAD64))
    # fd6_program.cc fd6_emit_shader: the code's address and length, then the shader load
    stream.reg_write(a6xx.REG_A6XX_SP_CS_OBJ_START.offset, _lo(launch.code_address),
                     _hi(launch.code_address))
    stream.reg_write(a6xx.REG_A6XX_SP_CS_INSTRLEN.offset,
                     a6xx.REG_A6XX_SP_CS_INSTRLEN.encode(INSTRLEN=launch.instrlen))
    stream.packet(pm4.CP_LOAD_STATE6_FRAG,
                  pm4.CP_LOAD_STATE6_0.encode(DST_OFF=0, STATE_TYPE=_STATE_TYPE["ST6_SHADER"],
                                              STATE_SRC=_STATE_SRC["SS6_INDIRECT"],
                                              STATE_BLOCK=_STATE_BLOCK["SB6_CS_SHADER"],
                                              NUM_UNIT=launch.instrlen),
                  *_ext_src(launch.code_address))
    if launch.consts_address is not None:
        # a graph's launch: the const file lives in memory that replays patch
        stream.packet(pm4.CP_LOAD_STATE6_FRAG,
                      pm4.CP_LOAD_STATE6_0.encode(DST_OFF=0, STATE_TYPE=_STATE_TYPE["ST6_CONSTANTS"],
                                                  STATE_SRC=_STATE_SRC["SS6_INDIRECT"],
                                                  STATE_BLOCK=_STATE_BLOCK["SB6_CS_SHADER"],
                                                  NUM_UNIT=-(-len(launch.consts) // VEC4_DWORDS)),
                      *_ext_src(launch.consts_address))
    elif launch.consts:
        consts = list(launch.consts) + [0] * (-len(launch.consts) % VEC4_DWORDS)
        # fd6_const.cc fd6_emit_const_user: CONSTANTS inline (SS6_DIRECT); the two address
        # dwords are zero
        stream.packet(pm4.CP_LOAD_STATE6_FRAG,
                      pm4.CP_LOAD_STATE6_0.encode(DST_OFF=0, STATE_TYPE=_STATE_TYPE["ST6_CONSTANTS"],
                                                  STATE_SRC=_STATE_SRC["SS6_DIRECT"],
                                                  STATE_BLOCK=_STATE_BLOCK["SB6_CS_SHADER"],
                                                  NUM_UNIT=len(consts) // VEC4_DWORDS),
                      0, 0, *consts)
    stream.reg_write(a6xx.REG_A6XX_SP_CS_CTRL_REG1.offset, a6xx.REG_A6XX_SP_CS_CTRL_REG1.encode(
        SHARED_SIZE=shared_size_field(launch.local_memory)))
    x, y, z = launch.local_size
    gx, gy, gz = launch.groups
    ndrange = a6xx.REG_A6XX_HLSQ_CS_NDRANGE_0.encode(KERNELDIM=KERNEL_DIMENSIONS, LOCALSIZEX=x - 1,
                                                    LOCALSIZEY=y - 1, LOCALSIZEZ=z - 1)
    # HLSQ_CS_NDRANGE_1..6: global size and offset per dimension (offsets 0)
    stream.reg_write(a6xx.REG_A6XX_HLSQ_CS_NDRANGE_0.offset, ndrange, x * gx, 0, y * gy, 0, z * gz, 0)
    # fd6_launch_grid: HLSQ_CS_KERNEL_GROUP_X/Y/Z are 1
    stream.reg_write(a6xx.REG_A6XX_HLSQ_CS_KERNEL_GROUP_X.offset, 1, 1, 1)
    stream.packet(pm4.CP_EXEC_CS, 0, pm4.CP_EXEC_CS_1.encode(NGROUPS_X=gx),
                  pm4.CP_EXEC_CS_2.encode(NGROUPS_Y=gy), pm4.CP_EXEC_CS_3.encode(NGROUPS_Z=gz))
    stream.wait_for_idle()
    stream.cache_flush(scratch)
    return stream


def pack_consts(values: dict[int, tuple], buffers: dict[int, int]) -> list[int]:
    """The const file as dwords from c0.x: `buffers` maps a const vec4 index to a 64-bit address
    (cN.x low, cN.y high); `values` maps a vec4 index to up to four numbers (floats as f32 bits)."""
    used = list(values) + list(buffers)
    dwords = [0] * (VEC4_DWORDS * (max(used) + 1) if used else 0)
    for index, vector in values.items():
        for component, value in enumerate(vector):
            dwords[index * VEC4_DWORDS + component] = dword_of(value)
    for index, address in buffers.items():
        dwords[index * VEC4_DWORDS] = _lo(address)
        dwords[index * VEC4_DWORDS + 1] = _hi(address)
    return dwords


def dword_of(value: int | float) -> int:
    """A const value's bits: a float as IEEE f32, an int as 32 bits (two's complement)."""
    if isinstance(value, float):
        return struct.unpack("<I", struct.pack("<f", value))[0]
    return value & 0xFFFFFFFF
