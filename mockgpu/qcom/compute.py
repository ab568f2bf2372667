"""Compute dispatch in the mock CP: CP_LOAD_STATE6 of the compute block and CP_EXEC_CS.

What the hardware checks, or what would make it fault or run garbage, is a `CPFault` here (the
context is then invalidated, as KGSL does after a fault):
- CP_LOAD_STATE6 for another block than SB6_CS_SHADER, or a source the mock does not model, is
  `UnsupportedPacket`; a direct constant load whose payload is not NUM_UNIT vec4s overruns the packet;
  an indirect load from an unmapped address is a page fault;
- CP_EXEC_CS without HLSQ_CS_CNTL ENABLED and SP_CS_CONFIG ENABLED, with SP_CS_OBJ_START not
  128-byte aligned or SP_CS_INSTRLEN 0, with a full register footprint past r47 (SP_CS_CTRL_REG0
  FULLREGFOOTPRINT; Mesa ir3.h: r48 and up are shared) or a work group past 1024 invocations
  (HLSQ_CS_NDRANGE_0; Mesa freedreno_dev_info.py max_compute_workgroup_invocations) is kind "dispatch";
- the kernel itself (mockgpu/qcom/ir3interp.py) faults with kind "shader" (an instruction the mock
  does not model, a register outside the footprint, a const past CONSTLEN, local memory out of
  range, a hang) or "pagefault" (a global access to an unmapped address).
"""
from __future__ import annotations

import struct

from autogen.qcom import a6xx, pm4
from mockgpu.qcom import cp as cp_model
from mockgpu.qcom import ir3interp

# adreno_pm4.xml a6xx_state_block / a6xx_state_type / a6xx_state_src
_BLOCK = pm4.ENUMS["a6xx_state_block"]
_TYPE = pm4.ENUMS["a6xx_state_type"]
_SOURCE = pm4.ENUMS["a6xx_state_src"]
VEC4_DWORDS = 4
# Mesa ir3_compiler.c: instructions are fetched in 16-instruction (128-byte) units on a6xx
UNIT_BYTES = 128
INSTRUCTION_BYTES = 8
# Mesa ir3_compiler.c a6xx: max_const_compute 256 vec4s
MAX_CONST_VEC4S = 256
# Mesa ir3.h: r0..r47 per thread (r48 and up are shared)
MAX_FULL_REGS = 48
# Mesa freedreno_dev_info.py a6xx: max_compute_workgroup_invocations
MAX_INVOCATIONS = 1024
# fd6_compute.cc fd6_launch_grid: SHARED_SIZE is (bytes - 1) / 1024 (at least 1), so a group has
# (SHARED_SIZE + 1) KiB of local memory
SHARED_UNIT = 1024
# Mesa ir3.h regid(63, 0): an id register that is not used
REGID_UNUSED = 4 * 63


def _fault(message: str, where: int, kind: str = "dispatch"):
    return cp_model.CPFault(kind, message, where)


def load_state6(cp, space, payload: tuple[int, ...], where: int) -> None:
    fields = pm4.CP_LOAD_STATE6_0.decode(payload[0])
    block = fields["STATE_BLOCK"]
    kind = fields["STATE_TYPE"]
    source = fields["STATE_SRC"]
    units = fields["NUM_UNIT"]
    if block != _BLOCK["SB6_CS_SHADER"]:
        raise cp_model.UnsupportedPacket(f"CP_LOAD_STATE6 at {where:#x} for state block {block}: "
                                         "the mock CP models the compute shader block only")
    address = payload[1] | payload[2] << 32
    if kind == _TYPE["ST6_SHADER"] and source == _SOURCE["SS6_INDIRECT"]:
        # the SP prefetches the code: it must be mapped
        space.read(address, units * UNIT_BYTES)
        cp.cs_shader = (address, units)
        return
    if kind != _TYPE["ST6_CONSTANTS"]:
        raise cp_model.UnsupportedPacket(f"CP_LOAD_STATE6 at {where:#x}: state type {kind} with "
                                         f"source {source} is not modelled")
    first = fields["DST_OFF"]
    if first + units > MAX_CONST_VEC4S:
        raise _fault(f"CP_LOAD_STATE6 at {where:#x}: constants c{first}..c{first + units - 1} past "
                     f"the {MAX_CONST_VEC4S} vec4s of the compute const file", where)
    if source == _SOURCE["SS6_DIRECT"]:
        values = list(payload[3:])
        if len(values) != units * VEC4_DWORDS:
            raise _fault(f"CP_LOAD_STATE6 at {where:#x}: NUM_UNIT {units} vec4s, the packet carries "
                         f"{len(values)} dwords", where, "overrun")
    elif source == _SOURCE["SS6_INDIRECT"]:
        raw = space.read(address, units * VEC4_DWORDS * 4)
        values = list(struct.unpack(f"<{units * VEC4_DWORDS}I", raw))
    else:
        raise cp_model.UnsupportedPacket(f"CP_LOAD_STATE6 at {where:#x}: constants from source "
                                         f"{source} are not modelled")
    end = (first + units) * VEC4_DWORDS
    if len(cp.cs_consts) < end:
        cp.cs_consts.extend([0] * (end - len(cp.cs_consts)))
    cp.cs_consts[first * VEC4_DWORDS:end] = values


def _register(cp, register) -> dict[str, int]:
    return register.decode(cp.registers.get(register.offset, 0))


def exec_cs(cp, space, groups: tuple[int, ...], where: int) -> None:
    """Run the compute kernel the registers describe over `groups` (CP_EXEC_CS NGROUPS_X/Y/Z)."""
    control = _register(cp, a6xx.REG_A6XX_HLSQ_CS_CNTL)
    if not control["ENABLED"] or not _register(cp, a6xx.REG_A6XX_SP_CS_CONFIG)["ENABLED"]:
        raise _fault(f"CP_EXEC_CS at {where:#x}: the compute stage is not enabled (HLSQ_CS_CNTL / "
                     "SP_CS_CONFIG ENABLED)", where)
    start_register = a6xx.REG_A6XX_SP_CS_OBJ_START.offset
    start = cp.registers.get(start_register, 0) | cp.registers.get(start_register + 1, 0) << 32
    units = _register(cp, a6xx.REG_A6XX_SP_CS_INSTRLEN)["INSTRLEN"]
    if start % UNIT_BYTES or units == 0:
        raise _fault(f"CP_EXEC_CS at {where:#x}: SP_CS_OBJ_START {start:#x} (128-byte aligned) with "
                     f"SP_CS_INSTRLEN {units} (at least 1)", where)
    shader = _register(cp, a6xx.REG_A6XX_SP_CS_CTRL_REG0)
    footprint = shader["FULLREGFOOTPRINT"]
    if footprint > MAX_FULL_REGS:
        raise _fault(f"CP_EXEC_CS at {where:#x}: FULLREGFOOTPRINT {footprint} registers; a thread "
                     f"has {MAX_FULL_REGS}", where)
    ndrange = _register(cp, a6xx.REG_A6XX_HLSQ_CS_NDRANGE_0)
    local_size = (ndrange["LOCALSIZEX"] + 1, ndrange["LOCALSIZEY"] + 1, ndrange["LOCALSIZEZ"] + 1)
    if local_size[0] * local_size[1] * local_size[2] > MAX_INVOCATIONS:
        raise _fault(f"CP_EXEC_CS at {where:#x}: local size {local_size} is over {MAX_INVOCATIONS} "
                     "invocations", where)
    ids = _register(cp, a6xx.REG_A6XX_HLSQ_CS_CNTL_0)
    constlen = control["CONSTLEN"]
    consts = (cp.cs_consts + [0] * (constlen * VEC4_DWORDS))[:constlen * VEC4_DWORDS]
    shared = (_register(cp, a6xx.REG_A6XX_SP_CS_CTRL_REG1)["SHARED_SIZE"] + 1) * SHARED_UNIT
    raw = space.read(start, units * UNIT_BYTES)
    words = list(struct.unpack(f"<{units * UNIT_BYTES // INSTRUCTION_BYTES}Q", raw))
    try:
        interpreter = ir3interp.run(
            words, groups=tuple(groups), local_size=local_size, consts=consts, local_memory=shared,
            footprint=footprint,
            local_id_regid=None if ids["LOCALIDREGID"] == REGID_UNUSED else ids["LOCALIDREGID"],
            workgroup_id_regid=None if ids["WGIDCONSTID"] == REGID_UNUSED else ids["WGIDCONSTID"],
            read=space.read, write=space.write)
    except ir3interp.IR3Fault as fault:
        raise _fault(f"kernel at {start:#x} (CP_EXEC_CS at {where:#x}): {fault}", where, "shader") from None
    cp.kernels_run += 1
    cp.instructions_executed += interpreter.instructions_executed
