"""Generates mockgpu/amd/rdna3/tables.py: gfx1100 opcode names and operand layouts, taken from LLVM.

LLVM's AMDGPU disassembler is the machine-readable source: for every encoding class and every
opcode value this script builds one canonical instruction (each register field holds a distinct,
recognisable register number), disassembles it with `llvm-mc-16 -disassemble -mcpu=gfx1100`, and
records the mnemonic plus, in printed order, which field each operand comes from, its register
file and its width in dwords. Opcodes LLVM rejects are left out, so the decoder rejects them too.

Run: `python -m mockgpu.amd.rdna3.gen_tables` (needs llvm-mc-16; Debian: apt install llvm-16).
The output is committed and reproducible: same LLVM version, same bytes.
"""
from __future__ import annotations

import concurrent.futures
import pathlib
import re
import shutil
import subprocess
import sys

LLVM_MC = "llvm-mc-16"
OUTPUT = pathlib.Path(__file__).with_name("tables.py")

# Canonical register numbers: a printed register's number says which field it came from.
# VGPR numbers carry the 256 offset of the 9-bit source operand encoding.
VDST = 20
SRC0 = 40
SRC1 = 60
SRC2 = 80
VDSTY_FIELD = 15      # VOPD: vdstY = field * 2 + (1 - vdstX & 1) -> v31
SRC0Y = 70
SRC1Y = 90
VGPR_BASE = 256       # 9-bit source operands: 256..511 are v0..v255
NULL_SGPR = 124       # gfx11 source operand 124 is null (SIDefines.h: SGPR_NULL_gfx11plus)
LITERAL = 255         # source operand 255: a 32-bit literal dword follows
LITERAL_DWORD = 0x11223344
SIMM16 = 0x1234

V_FIELDS = {VDST: "vdst", SRC0: "src0", SRC1: "src1", SRC2: "src2",
            2 * VDSTY_FIELD + 1: "vdsty", SRC0Y: "src0y", SRC1Y: "src1y"}
S_FIELDS = {VDST: "sdst", SRC0: "src0", SRC1: "src1", SRC2: "src2", 0: "sdst"}
SMEM_S_FIELDS = {VDST: "sdata", SRC0: "sbase", SRC1: "soffset"}
FLAT_V_FIELDS = {VDST: "vdst", SRC0: "addr", SRC1: "data"}
DS_V_FIELDS = {VDST: "vdst", SRC0: "addr", SRC1: "data0", SRC2: "data1"}


# Each encoder takes the opcode and a dict of field values (absent fields are zero).
def sop2(op: int, f: dict) -> list[int]:
    return [0x80000000 | op << 23 | f.get("sdst", 0) << 16 | f.get("src1", 0) << 8 | f.get("src0", 0),
            LITERAL_DWORD]


def sopk(op: int, f: dict) -> list[int]:
    return [0xB0000000 | op << 23 | f.get("sdst", 0) << 16 | SIMM16, LITERAL_DWORD]


def sop1(op: int, f: dict) -> list[int]:
    return [0xBE800000 | f.get("sdst", 0) << 16 | op << 8 | f.get("src0", 0), LITERAL_DWORD]


def sopc(op: int, f: dict) -> list[int]:
    return [0xBF000000 | op << 16 | f.get("src1", 0) << 8 | f.get("src0", 0), LITERAL_DWORD]


def sopp(op: int, f: dict) -> list[int]:
    return [0xBF800000 | op << 16, LITERAL_DWORD]


def smem(op: int, f: dict) -> list[int]:
    low = 0xF4000000 | op << 18 | f.get("sdata", 0) << 6 | f.get("sbase", 0) // 2
    return [low, NULL_SGPR << 25 | 0x10]


def vop1(op: int, f: dict) -> list[int]:
    return [0x7E000000 | f.get("vdst", 0) << 17 | op << 9 | f.get("src0", 0), LITERAL_DWORD]


def vop2(op: int, f: dict) -> list[int]:
    return [op << 25 | f.get("vdst", 0) << 17 | f.get("src1", 0) << 9 | f.get("src0", 0),
            LITERAL_DWORD]


def vopc(op: int, f: dict) -> list[int]:
    return [0x7C000000 | op << 17 | f.get("src1", 0) << 9 | f.get("src0", 0), LITERAL_DWORD]


def vop3_sources(f: dict) -> int:
    return f.get("src0", 0) | f.get("src1", 0) << 9 | f.get("src2", 0) << 18


def vop3(op: int, f: dict) -> list[int]:
    return [0xD4000000 | op << 16 | f.get("vdst", 0), vop3_sources(f), LITERAL_DWORD]


def vop3p(op: int, f: dict) -> list[int]:
    # op_sel_hi defaults to all ones, so LLVM prints no modifier
    return [0xCC000000 | op << 16 | 1 << 14 | f.get("vdst", 0), vop3_sources(f) | 3 << 27,
            LITERAL_DWORD]


def vopd(opx: int, opy: int, f: dict) -> list[int]:
    low = 0xC8000000 | opx << 22 | opy << 17 | f.get("src1", 0) << 9 | f.get("src0", 0)
    high = f.get("vdst", 0) << 24 | f.get("vdsty", 0) << 17 | f.get("src1y", 0) << 9
    return [low, high | f.get("src0y", 0), LITERAL_DWORD]


def ds(op: int, f: dict) -> list[int]:
    high = f.get("addr", 0) | f.get("data0", 0) << 8 | f.get("data1", 0) << 16
    return [0xD8000000 | op << 18, high | f.get("vdst", 0) << 24]


def flat_segment(segment: int, sve: int):
    def encode(op: int, f: dict) -> list[int]:
        low = 0xDC000000 | op << 18 | segment << 16
        high = f.get("addr", 0) | f.get("data", 0) << 8 | f.get("saddr", NULL_SGPR) << 16
        return [low, high | sve << 23 | f.get("vdst", 0) << 24]
    return encode


V = VGPR_BASE
# Field values tried per class: a field is used when LLVM accepts a nonzero value in it.
SOP_FIELDS = {"sdst": [VDST], "src0": [SRC0], "src1": [SRC1]}
VOP_FIELDS = {"vdst": [VDST], "src0": [V + SRC0, SRC0], "src1": [SRC1], "src2": [V + SRC2, SRC2]}
VOP3_FIELDS = {"vdst": [VDST], "src0": [V + SRC0, SRC0], "src1": [V + SRC1, SRC1],
               "src2": [V + SRC2, SRC2]}
VOPD_FIELDS = {"vdst": [VDST], "src0": [V + SRC0], "src1": [SRC1],
               "vdsty": [VDSTY_FIELD], "src0y": [V + SRC0Y], "src1y": [SRC1Y]}
DS_FIELDS = {"vdst": [VDST], "addr": [SRC0], "data0": [SRC1], "data1": [SRC2]}
FLAT_FIELDS = {"vdst": [VDST], "addr": [SRC0], "data": [SRC1]}
SMEM_FIELDS = {"sdata": [VDST], "sbase": [SRC0]}

# (table name, encoder, opcode count, fields)
CLASSES = [
    ("SOP2", sop2, 0x60, SOP_FIELDS), ("SOPK", sopk, 0x1D, {"sdst": [VDST]}),
    ("SOP1", sop1, 0x100, SOP_FIELDS), ("SOPC", sopc, 0x80, SOP_FIELDS), ("SOPP", sopp, 0x80, {}),
    ("SMEM", smem, 0x100, SMEM_FIELDS), ("VOP1", vop1, 0x100, VOP_FIELDS),
    ("VOP2", vop2, 0x3E, VOP_FIELDS), ("VOPC", vopc, 0x100, VOP_FIELDS),
    ("VOP3", vop3, 0x400, VOP3_FIELDS), ("VOP3P", vop3p, 0x80, VOP3_FIELDS),
    ("DS", ds, 0x100, DS_FIELDS),
    ("FLAT", flat_segment(0, 0), 0x80, FLAT_FIELDS),
    ("SCRATCH", flat_segment(1, 1), 0x80, FLAT_FIELDS),
    ("GLOBAL", flat_segment(2, 0), 0x80, FLAT_FIELDS),
]
VOPD_Y_FOR_X_SCAN = 8   # v_dual_mov_b32: a valid opY while scanning opX
VOPD_X_FOR_Y_SCAN = 8


def disassemble(words: list[int]) -> str | None:
    """First instruction LLVM prints for these little-endian dwords, or None when it rejects them."""
    data = b"".join(w.to_bytes(4, "little") for w in words)
    text = ",".join(f"0x{b:02x}" for b in data)
    cmd = [LLVM_MC, "-arch=amdgcn", "-mcpu=gfx1100", "-disassemble"]
    out = subprocess.run(cmd, input=text, capture_output=True, text=True, check=True)
    if out.stderr.startswith("<stdin>:1:1: warning: invalid instruction encoding"):
        return None
    if "Invalid register" in out.stdout.split("\n", 2)[1]:
        return None
    lines = [line.strip() for line in out.stdout.splitlines()]
    lines = [line for line in lines if line and not line.startswith(".")]
    return lines[0] if lines else None


REGISTER = re.compile(r"^([vs])(?:(\d+)|\[(\d+):(\d+)\])$")


def operand_template(token: str, cls_name: str) -> tuple:
    match = REGISTER.match(token)
    if not match:
        if token == f"0x{LITERAL_DWORD:x}":
            return ("literal", "k", 1)
        return ("=", token, 0)
    file = match.group(1)
    first = int(match.group(2) or match.group(3))
    count = 1 if match.group(2) else int(match.group(4)) - first + 1
    if cls_name == "SMEM":
        fields = SMEM_S_FIELDS
    elif cls_name in ("FLAT", "SCRATCH", "GLOBAL"):
        fields = FLAT_V_FIELDS
    elif cls_name == "DS":
        fields = DS_V_FIELDS
    else:
        fields = V_FIELDS if file == "v" else S_FIELDS
    if cls_name in ("VOP3", "VOP3P", "VOPC", "VOP1", "VOP2") and file == "s" and first == VDST:
        return ("vdst", "s", count)
    if first not in fields:
        return ("=", token, 0)
    return (fields[first], file, count)


def split_operands(text: str) -> tuple[str, list[str], str]:
    """mnemonic, operand tokens, trailing modifiers"""
    head, _, rest = text.partition(" ")
    parts = [p.strip() for p in rest.split(",")] if rest else []
    modifiers = ""
    if parts and " " in parts[-1]:
        last, _, modifiers = parts[-1].partition(" ")
        parts[-1] = last
    return head, [p for p in parts if p], modifiers


def entry(cls_name: str, text: str) -> tuple:
    mnemonic, operands, _ = split_operands(text)
    if cls_name in ("SOPP", "SOPK"):
        return (mnemonic, tuple(operand_template(o, cls_name) for o in operands))
    return (mnemonic, tuple(operand_template(o, cls_name) for o in operands))


def probe(encoder, op: int, fields: dict) -> str | None:
    """Template text for one opcode: finds the fields LLVM accepts nonzero values in."""
    if disassemble(encoder(op, {})) is None:
        return None
    used = {}
    for name, values in fields.items():
        for value in values:
            if disassemble(encoder(op, {name: value})) is not None:
                used[name] = value
                break
    return disassemble(encoder(op, used))


def scan(cls_name: str, encoder, count: int, fields: dict) -> dict[int, tuple]:
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        texts = list(pool.map(lambda op: probe(encoder, op, fields), range(count)))
    return {op: entry(cls_name, t) for op, t in enumerate(texts) if t is not None}


def scan_vopd() -> tuple[dict[int, tuple], dict[int, tuple]]:
    def for_x(opx):
        return probe(lambda op, f: vopd(op, VOPD_Y_FOR_X_SCAN, f), opx, VOPD_FIELDS)

    def for_y(opy):
        return probe(lambda op, f: vopd(VOPD_X_FOR_Y_SCAN, op, f), opy, VOPD_FIELDS)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        xs = list(pool.map(for_x, range(16)))
        ys = list(pool.map(for_y, range(32)))
    table_x = {}
    table_y = {}
    for op, text in enumerate(xs):
        if text is not None:
            table_x[op] = entry("VOPD", text.split("::")[0].strip())
    for op, text in enumerate(ys):
        if text is not None:
            table_y[op] = entry("VOPD", text.split("::")[1].strip())
    return table_x, table_y


def llvm_version() -> str:
    out = subprocess.run([LLVM_MC, "--version"], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        if "LLVM version" in line:
            return line.strip()
    return out.stdout.strip().splitlines()[0]


def render(tables: dict[str, dict[int, tuple]], version: str) -> str:
    lines = [
        '"""gfx1100 opcode tables: mnemonic and operand layout per encoding class and opcode.',
        "",
        "Generated by `python -m mockgpu.amd.rdna3.gen_tables` from the disassembler of",
        f"{version} (llvm-mc-16 -mcpu=gfx1100). Do not edit by hand.",
        "Each entry: opcode -> (mnemonic, operands in printed order); an operand is",
        "(field, register file 'v'/'s' or 'k' for a literal, dwords) or ('=', fixed text, 0).",
        '"""',
        "",
        f"LLVM_VERSION = {version!r}",
        "",
    ]
    for name, table in tables.items():
        lines.append(f"{name} = {{")
        for op, (mnemonic, operands) in sorted(table.items()):
            lines.append(f"    0x{op:03x}: ({mnemonic!r}, {operands!r}),")
        lines.append("}")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    if shutil.which(LLVM_MC) is None:
        print(f"{LLVM_MC} not found; install it: apt install llvm-16", file=sys.stderr)
        return 1
    tables = {}
    for cls_name, encoder, count, fields in CLASSES:
        tables[cls_name] = scan(cls_name, encoder, count, fields)
    tables["VOPD_X"], tables["VOPD_Y"] = scan_vopd()
    OUTPUT.write_text(render(tables, llvm_version()))
    print(f"wrote {OUTPUT}: " + ", ".join(f"{k} {len(v)}" for k, v in tables.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
