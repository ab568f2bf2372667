"""Mutated PTX (from the library's fatbinaries) must fail with the interpreter's typed errors
(all HalError: PTXSyntaxError, UnsupportedInstruction, InvalidArgument at load; MemoryFault,
BarrierDivergence, DeviceTimeout when run), never with a Python exception from inside the parser
or interpreter; and regressions the mutations found."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compute.nv import compiler
from drivers.nv import fatbin
from hal.errors import HalError
from mockgpu.nv.ptx import FlatMemory, Kernel, MemoryFault, PTXSyntaxError

BASE = 0x10000
_KERNELS = {"reduce": "reduce_sum_f32", "histogram": "histogram_u32", "private_array": "private_array",
            "matmul": "matmul_f32"}
_TEXT = {name: fatbin.load_file(compiler.PREBUILT_DIR / f"{name}.fatbin").ptx(80) for name in _KERNELS}
_HEADER = ".version 8.0\n.target sm_80\n.address_size 64\n"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_ptx_fails_only_with_typed_errors(data: st.DataObject) -> None:
    source = data.draw(st.sampled_from(sorted(_KERNELS)))
    text = list(_TEXT[source])
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(text) - 1))
        action = data.draw(st.sampled_from(["replace", "delete", "insert"]))
        character = data.draw(st.sampled_from(list("0123456789%.;,{}[]()+-_ \n@!<>xb")))
        if action == "replace":
            text[position] = character
        elif action == "delete":
            del text[position]
        else:
            text.insert(position, character)
    try:
        kernel = Kernel.from_ptx("".join(text), _KERNELS[source])
    except HalError:
        return
    values = [BASE + 0x4000 * index if slot.size == 8 else 37 for index, slot in enumerate(kernel.params)]
    block = (16, 16) if source == "matmul" else (256,) if source == "reduce" else (64,)
    try:
        kernel.run((2,), block, kernel.pack_params(*values), FlatMemory(BASE, 0x10000), max_steps=20000)
    except HalError:
        pass


def _entry(body: str) -> str:
    return (_HEADER + ".visible .entry k(.param .u64 out)\n{\n.reg .b32 %r<4>;\n.reg .b64 %rd<4>;\n"
            f"ld.param.u64 %rd1, [out];\n{body}\nret;\n}}\n")


def test_integer_constants_in_every_base() -> None:
    kernel = Kernel.from_ptx(_entry("mov.u32 %r1, 017;\nadd.u32 %r1, %r1, 0b101;\n"
                                    "add.u32 %r1, %r1, 0x10U;\nadd.u32 %r1, %r1, 0;\n"
                                    "st.global.u32 [%rd1], %r1;"), "k")
    memory = FlatMemory(BASE, 16)
    kernel.run((1,), (1,), kernel.pack_params(BASE), memory)
    assert int(np.frombuffer(memory.read(BASE, 4), dtype=np.uint32)[0]) == 15 + 5 + 16
    with pytest.raises(PTXSyntaxError, match="'09' is not an integer constant"):
        Kernel.from_ptx(_entry("mov.u32 %r1, 09;"), "k")


def test_malformed_operands_are_syntax_errors() -> None:
    with pytest.raises(PTXSyntaxError, match="an operand is missing"):
        Kernel.from_ptx(_entry("mov.u32 %r1, -;"), "k")
    with pytest.raises(PTXSyntaxError, match=r"register %tid.x1 is not declared"):
        Kernel.from_ptx(_entry("mov.u32 %r1, %tid.x1;"), "k")
    with pytest.raises(HalError, match="operands where 3 are expected"):
        Kernel.from_ptx(_entry("add.u32 %r1, %r2, %r3, %r1;"), "k")
    with pytest.raises(HalError, match="setp operand count"):
        Kernel.from_ptx(_entry("setp.eq.u32 %r1, %r2;"), "k")


def test_a_symbol_below_its_variable_faults() -> None:
    text = (_HEADER + ".visible .entry k()\n{\n.reg .b32 %r<2>;\n.shared .align 4 .b8 buf[8];\n"
            "ld.shared.u32 %r1, [buf+-4];\nret;\n}\n")
    kernel = Kernel.from_ptx(text, "k")
    with pytest.raises(MemoryFault, match=r"\.shared access at -0x4\+4 outside its 0x8 bytes"):
        kernel.run((1,), (1,), b"", FlatMemory(BASE, 16))


def test_cache_eviction_qualifiers_are_read_and_ignored() -> None:
    kernel = Kernel.from_ptx(_entry("ld.global.nc.L1::no_allocate.L2::128B.u32 %r1, [%rd1];\n"
                                    "add.u32 %r1, %r1, 1;\n"
                                    "st.global.L1::evict_last.u32 [%rd1], %r1;"), "k")
    memory = FlatMemory(BASE, 16)
    memory.write(BASE, (41).to_bytes(4, "little"))
    kernel.run((1,), (1,), kernel.pack_params(BASE), memory)
    assert memory.read(BASE, 4) == (42).to_bytes(4, "little")


def test_constant_and_module_global_variables_are_refused_at_load() -> None:
    from mockgpu.nv.ptx import UnsupportedInstruction

    declared = _HEADER + ".const .align 4 .u32 limit;\n.global .align 4 .u32 counter;\n"
    body = ".visible .entry k()\n{\n.reg .b32 %r<2>;\n"
    with pytest.raises(UnsupportedInstruction, match=r"PTX line 9: 'ld.const.u32 %r1, \[limit\]'"):
        Kernel.from_ptx(declared + body + "ld.const.u32 %r1, [limit];\nret;\n}\n", "k")
    with pytest.raises(UnsupportedInstruction, match="the address of counter"):
        Kernel.from_ptx(declared + body + "ld.global.u32 %r1, [counter];\nret;\n}\n", "k")
