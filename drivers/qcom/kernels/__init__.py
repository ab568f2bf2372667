"""The ir3 kernel library: vector add, saxpy, memset, copy and a work-group sum, written in ir3 assembly
(one .asm file each) and assembled on load. Each file states its calling convention in its header
and its footprint in a `; footprint:` line that the loader checks against what the assembler finds;
docs/qcom.md ("Programs") describes the convention they share.
"""
from __future__ import annotations

import pathlib
import re

from drivers.qcom.ir3.asm import Program, assemble_program
from hal.errors import BadBinary

KERNEL_DIR = pathlib.Path(__file__).resolve().parent
NAMES = ("vector_add", "saxpy", "memset", "copy", "reduce_sum")
_FOOTPRINT = re.compile(r"^; footprint: (.*)$", re.M)


def source(name: str) -> str:
    if name not in NAMES:
        raise KeyError(f"no ir3 kernel {name!r}; the library has {', '.join(NAMES)}")
    return (KERNEL_DIR / f"{name}.asm").read_text()


def footprint(program: Program) -> dict[str, int]:
    return {"max_reg": program.max_reg, "max_half_reg": program.max_half_reg,
            "const_vec4s": program.const_vec4_count, "local_memory": program.local_memory,
            "instructions": len(program.words)}


def declared_footprint(text: str) -> dict[str, int]:
    match = _FOOTPRINT.search(text)
    if match is None:
        return {}
    return {key: int(value) for key, value in (item.split("=") for item in match.group(1).split())}


def load(name: str) -> Program:
    """Assemble library kernel `name`; BadBinary when its declared footprint is not what it uses."""
    text = source(name)
    program = assemble_program(text)
    declared = declared_footprint(text)
    if declared != footprint(program):
        raise BadBinary(f"ir3 kernel {name}: the header declares {declared}, the code uses "
                        f"{footprint(program)}; update its '; footprint:' line")
    return program
