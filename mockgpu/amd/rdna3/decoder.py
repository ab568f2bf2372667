"""The gfx1100 (RDNA3) instruction decoder of the mock GPU's shader interpreter.

Turns code-object bytes into typed `Instruction`s: encoding class, opcode, mnemonic, operands
(register ranges, inline constants, literals), modifiers, and a text form that matches
llvm-objdump-16's disassembly (so tests can cross-check every instruction against LLVM).

Field layouts follow the "Microcode Formats" chapter of the AMD "RDNA3 Instruction Set
Architecture" reference guide; opcode names and operand layouts come from tables.py, generated
from LLVM 16's disassembler by gen_tables.py. An encoding or opcode that is not in them raises
`UnknownInstruction` naming the dwords and the address.
"""
from __future__ import annotations

import dataclasses
import struct

from mockgpu.amd.rdna3 import tables


class UnknownInstruction(Exception):
    """An encoding class or opcode the gfx1100 decoder does not know, at a given address."""

    def __init__(self, address: int, dwords: tuple[int, ...], reason: str):
        self.address = address
        self.dwords = dwords
        words = " ".join(f"{d:08X}" for d in dwords)
        super().__init__(f"cannot decode the instruction at 0x{address:x} ({words}): {reason}")


@dataclasses.dataclass(frozen=True)
class Operand:
    """One source or destination. kind: vgpr, sgpr (value = first register), special (a named
    scalar operand such as vcc_lo, value = its source code), inline (value = the constant's bits),
    literal (value = the dword that followed the instruction), text (a fixed word LLVM prints)."""
    kind: str
    value: int
    count: int = 1
    field: str = ""
    neg: bool = False
    abs: bool = False
    text: str = ""


@dataclasses.dataclass(frozen=True)
class Instruction:
    address: int
    size: int
    encoding: str
    opcode: int
    name: str
    operands: tuple[Operand, ...]
    fields: dict
    text: str
    second: "Instruction | None" = None   # VOPD: the Y half


# Encoding classes, matched on the top bits of the first dword, most specific first.
# RDNA3 ISA guide, "Microcode Formats": each format's ENCODING field.
ENCODINGS = (
    ("SOP1", 0xFF800000, 0xBE800000),
    ("SOPC", 0xFF800000, 0xBF000000),
    ("SOPP", 0xFF800000, 0xBF800000),
    ("SOPK", 0xF0000000, 0xB0000000),
    ("SOP2", 0xC0000000, 0x80000000),
    ("SMEM", 0xFC000000, 0xF4000000),
    ("VOP1", 0xFE000000, 0x7E000000),
    ("VOPC", 0xFE000000, 0x7C000000),
    ("VOP2", 0x80000000, 0x00000000),
    ("VOP3", 0xFC000000, 0xD4000000),
    ("VOP3P", 0xFF000000, 0xCC000000),
    ("VOPD", 0xFC000000, 0xC8000000),
    ("DS", 0xFC000000, 0xD8000000),
    ("FLAT", 0xFC000000, 0xDC000000),
    ("MUBUF", 0xFC000000, 0xE0000000),
)
# The MUBUF opcodes compute kernels use: the operand-less cache invalidates that memory fences
# emit (RDNA3 ISA guide, MUBUF opcodes 43 and 44; llvm-objdump-16 names them so). Buffer loads and
# stores are not decoded yet.
MUBUF_CACHE_OPS = {0x2B: "buffer_gl0_inv", 0x2C: "buffer_gl1_inv"}

# 9-bit scalar/vector source operand codes (RDNA3 ISA guide, "Scalar ALU operands";
# LLVM SIDefines.h for the gfx11 numbering of null and m0).
SGPR_LAST = 105
VCC_LO = 106
VCC_HI = 107
TTMP_FIRST = 108
TTMP_LAST = 123
NULL = 124
M0 = 125
EXEC_LO = 126
EXEC_HI = 127
INT_ZERO = 128
INT_POS_LAST = 192
INT_NEG_LAST = 208
LITERAL = 255
VGPR_FIRST = 256
NAMED_SOURCES = {
    235: "src_shared_base", 236: "src_shared_limit", 237: "src_private_base",
    238: "src_private_limit", 239: "src_pops_exiting_wave_id", 251: "src_vccz",
    252: "src_execz", 253: "src_scc", 254: "src_lds_direct",
}
# Inline float constants 240..248: bits per operand width (ISA guide: "Inline constants").
FLOAT_CONSTANTS = {
    240: 0.5, 241: -0.5, 242: 1.0, 243: -1.0, 244: 2.0, 245: -2.0, 246: 4.0, 247: -4.0,
}
INV_2PI = 248
INV_2PI_BITS32 = 0x3E22F983
INV_2PI_BITS64 = 0x3FC45F306DC9C882
INV_2PI_TEXT32 = "0.15915494"
INV_2PI_TEXT64 = "0.15915494309189532"

# Names of the VOPD halves' fixed scalar operand, VOP3 output modifiers, and so on.
OMOD_TEXT = {1: "mul:2", 2: "mul:4", 3: "div:2"}
# s_delay_alu fields (LLVM AMDGPUInstPrinter::printDelayFlag; ISA guide S_DELAY_ALU)
DELAY_INSTID = ("NO_DEP", "VALU_DEP_1", "VALU_DEP_2", "VALU_DEP_3", "VALU_DEP_4",
                "TRANS32_DEP_1", "TRANS32_DEP_2", "TRANS32_DEP_3", "FMA_ACCUM_CYCLE_1",
                "SALU_CYCLE_1", "SALU_CYCLE_2", "SALU_CYCLE_3")
DELAY_SKIP = ("SAME", "NEXT", "SKIP_1", "SKIP_2", "SKIP_3", "SKIP_4")
# s_sendmsg message ids (ISA guide, "S_SENDMSG"; LLVM SIDefines.h ID_DEALLOC_VGPRS_GFX11Plus)
SENDMSG_NAMES = {1: "MSG_INTERRUPT", 3: "MSG_DEALLOC_VGPRS", 10: "MSG_GS_ALLOC_REQ"}
# s_waitcnt simm16 layout on gfx11 (ISA guide S_WAITCNT): expcnt[2:0] lgkmcnt[9:4] vmcnt[15:10]
WAITCNT_FIELDS = (("vmcnt", 10, 0x3F), ("expcnt", 0, 0x7), ("lgkmcnt", 4, 0x3F))
BRANCHES = {"s_branch", "s_cbranch_scc0", "s_cbranch_scc1", "s_cbranch_vccz", "s_cbranch_vccnz",
            "s_cbranch_execz", "s_cbranch_execnz", "s_cbranch_cdbgsys", "s_cbranch_cdbguser",
            "s_cbranch_cdbgsys_or_user", "s_cbranch_cdbgsys_and_user"}
SOPP_HEX = {"s_clause", "s_waitcnt_depctr", "s_set_inst_prefetch_distance", "s_inst_prefetch"}
SOPP_NO_OPERAND_WHEN_ZERO = {"s_endpgm", "s_barrier", "s_code_end", "s_icache_inv", "s_ttracedata",
                             "s_endpgm_saved", "s_wakeup", "s_endpgm_ordered_ps_done"}


def bits(value: int, low: int, width: int) -> int:
    return (value >> low) & ((1 << width) - 1)


def signed(value: int, width: int) -> int:
    return value - (1 << width) if value >> (width - 1) else value


def register_text(prefix: str, first: int, count: int) -> str:
    if count == 1:
        return f"{prefix}{first}"
    return f"{prefix}[{first}:{first + count - 1}]"


def float_bits(value: float, dwords: int) -> int:
    if dwords == 2:
        return struct.unpack("<Q", struct.pack("<d", value))[0]
    return struct.unpack("<I", struct.pack("<f", value))[0]


def immediate_text(value: int, dwords: int) -> str:
    """An immediate as LLVM prints it (AMDGPUInstPrinter::printImmediate32/64)."""
    width = 64 if dwords == 2 else 32
    as_signed = signed(value, width)
    if -16 <= as_signed <= 64:
        return str(as_signed)
    for constant in FLOAT_CONSTANTS.values():
        if value == float_bits(constant, dwords):
            return repr(constant)
    if dwords == 2 and value == INV_2PI_BITS64:
        return INV_2PI_TEXT64
    if dwords != 2 and value == INV_2PI_BITS32:
        return INV_2PI_TEXT32
    return f"0x{value:x}"


def inline_bits(code: int, dwords: int) -> int:
    width = 64 if dwords == 2 else 32
    if code <= INT_POS_LAST:
        return code - INT_ZERO
    if code <= INT_NEG_LAST:
        return (INT_POS_LAST - code) & ((1 << width) - 1)
    if code == INV_2PI:
        return INV_2PI_BITS64 if dwords == 2 else INV_2PI_BITS32
    return float_bits(FLOAT_CONSTANTS[code], dwords)


def source_operand(code: int, count: int, field: str, literal: int | None) -> Operand:
    """A 9-bit source operand code (scalar fields use the low 8 bits of the same space)."""
    if code >= VGPR_FIRST:
        first = code - VGPR_FIRST
        return Operand("vgpr", first, count, field, text=register_text("v", first, count))
    if code <= SGPR_LAST:
        return Operand("sgpr", code, count, field, text=register_text("s", code, count))
    if TTMP_FIRST <= code <= TTMP_LAST:
        first = code - TTMP_FIRST
        return Operand("sgpr", code, count, field, text=register_text("ttmp", first, count))
    pairs = {VCC_LO: ("vcc_lo", "vcc"), EXEC_LO: ("exec_lo", "exec"), NULL: ("null", "null")}
    singles = {VCC_HI: "vcc_hi", EXEC_HI: "exec_hi", M0: "m0"}
    if code in pairs:
        return Operand("special", code, count, field, text=pairs[code][count > 1])
    if code in singles:
        return Operand("special", code, count, field, text=singles[code])
    if code in NAMED_SOURCES:
        return Operand("special", code, count, field, text=NAMED_SOURCES[code])
    if INT_ZERO <= code <= INT_NEG_LAST or code in FLOAT_CONSTANTS or code == INV_2PI:
        value = inline_bits(code, count)
        return Operand("inline", value, count, field, text=immediate_text(value, count))
    if code == LITERAL:
        if literal is None:
            raise ValueError("literal operand without a literal dword")
        return Operand("literal", literal, count, field, text=immediate_text(literal, 1))
    raise ValueError(f"reserved source operand code {code}")


def with_modifiers(operand: Operand, neg: bool, abs_: bool) -> Operand:
    text = operand.text
    if abs_:
        text = f"|{text}|"
    if neg:
        text = f"-{text}"
    return dataclasses.replace(operand, neg=neg, abs=abs_, text=text)


class TruncatedInstruction(UnknownInstruction):
    """The code ends inside an instruction: its encoding (or its literal) needs more dwords."""


class Decoder:
    """Decodes gfx1100 instructions from a bytes-like object holding a code section."""

    def __init__(self, code: bytes, base_address: int = 0):
        self.code = bytes(code)
        self.base = base_address
        self.start = 0  # offset of the instruction being decoded

    def dword(self, offset: int, what: str = "dword") -> int:
        if offset < 0 or offset + 4 > len(self.code):
            end = self.base + len(self.code)
            words = tuple(int.from_bytes(self.code[k:k + 4], "little")
                          for k in range(self.start, len(self.code) - 3, 4))
            raise TruncatedInstruction(
                self.base + self.start, words,
                f"truncated: it needs the {what} at 0x{self.base + offset:x} "
                f"but the code ends at 0x{end:x}")
        return int.from_bytes(self.code[offset:offset + 4], "little")

    def decode_all(self) -> list[Instruction]:
        out = []
        offset = 0
        while offset + 4 <= len(self.code):
            instruction = self.decode_at(offset)
            out.append(instruction)
            offset += instruction.size
        return out

    def decode_at(self, offset: int) -> Instruction:
        self.start = offset
        address = self.base + offset
        first = self.dword(offset)
        for encoding, mask, match in ENCODINGS:
            if first & mask == match:
                break
        else:
            raise UnknownInstruction(address, (first,), "no gfx1100 encoding class has these top bits")
        try:
            return getattr(self, "decode_" + encoding.lower())(offset, address, first)
        except (ValueError, KeyError, IndexError) as error:
            size = min(12, len(self.code) - offset)
            dwords = tuple(self.dword(offset + i) for i in range(0, size - size % 4, 4))
            raise UnknownInstruction(address, dwords, f"{encoding}: {error}") from None

    # -- helpers --------------------------------------------------------------------------------
    def opcode_entry(self, table_name: str, opcode: int) -> tuple:
        table = getattr(tables, table_name)
        if opcode not in table:
            raise KeyError(f"opcode {opcode} (0x{opcode:x}) is not a gfx1100 {table_name} opcode")
        return table[opcode]

    def literal_after(self, offset: int, size: int, codes: list[int]) -> tuple[int | None, int]:
        if LITERAL in codes:
            return self.dword(offset + size, "literal dword"), size + 4
        return None, size

    def make(self, address, size, encoding, opcode, name, operands, fields, suffix="",
             second=None) -> Instruction:
        text = name
        if operands:
            text += " " + ", ".join(o.text for o in operands)
        if suffix:
            text += suffix
        return Instruction(address, size, encoding, opcode, name, tuple(operands), fields, text,
                           second)

    def template_operands(self, template, codes: dict, literal, modifiers=None) -> list[Operand]:
        """Operands in LLVM's printed order from a generated template and the field codes."""
        out = []
        for field, file, count in template:
            if field == "=":
                out.append(Operand("text", 0, 0, text=file))
                continue
            if field == "literal":
                out.append(Operand("literal", literal, 1, "literal",
                                   text=immediate_text(literal, 1)))
                continue
            operand = source_operand(codes[field], count, field, literal)
            if modifiers and field in modifiers:
                operand = with_modifiers(operand, *modifiers[field])
            out.append(operand)
        return out

    # -- scalar ---------------------------------------------------------------------------------
    def decode_sop2(self, offset, address, word):
        opcode = bits(word, 23, 7)
        name, template = self.opcode_entry("SOP2", opcode)
        codes = {"sdst": bits(word, 16, 7), "src0": bits(word, 0, 8), "src1": bits(word, 8, 8)}
        literal, size = self.literal_after(offset, 4, [codes["src0"], codes["src1"]])
        operands = self.template_operands(template, codes, literal)
        return self.make(address, size, "SOP2", opcode, name, operands, codes)

    def decode_sop1(self, offset, address, word):
        opcode = bits(word, 8, 8)
        name, template = self.opcode_entry("SOP1", opcode)
        codes = {"sdst": bits(word, 16, 7), "src0": bits(word, 0, 8)}
        literal, size = self.literal_after(offset, 4, [codes["src0"]])
        operands = self.template_operands(template, codes, literal)
        return self.make(address, size, "SOP1", opcode, name, operands, codes)

    def decode_sopc(self, offset, address, word):
        opcode = bits(word, 16, 7)
        name, template = self.opcode_entry("SOPC", opcode)
        codes = {"src0": bits(word, 0, 8), "src1": bits(word, 8, 8)}
        literal, size = self.literal_after(offset, 4, [codes["src0"], codes["src1"]])
        operands = self.template_operands(template, codes, literal)
        return self.make(address, size, "SOPC", opcode, name, operands, codes)

    def decode_sopk(self, offset, address, word):
        opcode = bits(word, 23, 5)
        name, template = self.opcode_entry("SOPK", opcode)
        simm16 = bits(word, 0, 16)
        codes = {"sdst": bits(word, 16, 7), "simm16": simm16}
        registers = [t for t in template if t[0] == "sdst"]
        operands = self.template_operands(registers, codes, None)
        if name == "s_call_b64":
            immediate = str(signed(simm16, 16))
        else:
            immediate = f"0x{simm16:x}"
        operands.append(Operand("inline", simm16, 1, "simm16", text=immediate))
        return self.make(address, 4, "SOPK", opcode, name, operands, codes)

    def decode_sopp(self, offset, address, word):
        opcode = bits(word, 16, 7)
        name, template = self.opcode_entry("SOPP", opcode)
        simm16 = bits(word, 0, 16)
        codes = {"simm16": simm16}
        text = self.sopp_operand_text(name, simm16, bool(template))
        operands = [Operand("inline", simm16, 1, "simm16", text=text)] if text else []
        return self.make(address, 4, "SOPP", opcode, name, operands, codes)

    def sopp_operand_text(self, name: str, simm16: int, has_operand: bool) -> str:
        if name == "s_waitcnt":
            parts = []
            for counter, low, mask in WAITCNT_FIELDS:
                value = bits(simm16, low, mask.bit_length())
                if value != mask:
                    parts.append(f"{counter}({value})")
            if not parts:
                parts = [f"{c}({bits(simm16, low, m.bit_length())})" for c, low, m in WAITCNT_FIELDS]
            return " ".join(parts)
        if name == "s_delay_alu":
            parts = []
            instid0 = bits(simm16, 0, 4)
            skip = bits(simm16, 4, 3)
            instid1 = bits(simm16, 7, 4)
            if instid0:
                parts.append(f"instid0({DELAY_INSTID[instid0]})")
            if skip:
                parts.append(f"instskip({DELAY_SKIP[skip]})")
            if instid1:
                parts.append(f"instid1({DELAY_INSTID[instid1]})")
            return " | ".join(parts) if parts else "0"
        if name == "s_sendmsg":
            message = bits(simm16, 0, 8)
            if message in SENDMSG_NAMES and simm16 == message:
                return f"sendmsg({SENDMSG_NAMES[message]})"
            return f"sendmsg({message}, {bits(simm16, 4, 3)}, {bits(simm16, 8, 2)})"
        if name in BRANCHES:
            # LLVM 16 prints the branch offset (in dwords) as an unsigned 16-bit number
            return str(simm16)
        if name in SOPP_NO_OPERAND_WHEN_ZERO and simm16 == 0:
            return ""
        if not has_operand and simm16 == 0:
            return ""
        if name in SOPP_HEX:
            return f"0x{simm16:x}"
        return str(simm16)

    def decode_smem(self, offset, address, word):
        high = self.dword(offset + 4)
        opcode = bits(word, 18, 8)
        name, template = self.opcode_entry("SMEM", opcode)
        codes = {"sdata": bits(word, 6, 7), "sbase": bits(word, 0, 6) * 2,
                 "soffset": bits(high, 25, 7), "offset": signed(bits(high, 0, 21), 21),
                 "glc": bits(word, 14, 1), "dlc": bits(word, 13, 1)}
        registers = [t for t in template if t[0] in ("sdata", "sbase")]
        operands = self.template_operands(registers, codes, None)
        offset_value = codes["offset"]
        offset_text = f"0x{offset_value & 0x1FFFFF:x}" if offset_value >= 0 else str(offset_value)
        if codes["soffset"] != NULL:
            operands.append(source_operand(codes["soffset"], 1, "soffset", None))
            suffix = f" offset:{offset_text}" if offset_value else ""
        elif offset_value:
            operands.append(Operand("inline", offset_value, 1, "offset", text=offset_text))
            suffix = ""
        else:
            operands.append(source_operand(NULL, 1, "soffset", None))
            suffix = ""
        suffix += " glc" * codes["glc"] + " dlc" * codes["dlc"]
        return self.make(address, 8, "SMEM", opcode, name, operands, codes, suffix)

    # -- vector ALU -----------------------------------------------------------------------------
    def decode_vop1(self, offset, address, word):
        opcode = bits(word, 9, 8)
        name, template = self.opcode_entry("VOP1", opcode)
        codes = {"vdst": bits(word, 17, 8) + VGPR_FIRST, "src0": bits(word, 0, 9)}
        if any(t[0] == "vdst" and t[1] == "s" for t in template):
            codes["vdst"] -= VGPR_FIRST
        literal, size = self.literal_after(offset, 4, [codes["src0"]])
        operands = self.template_operands(template, codes, literal)
        return self.make(address, size, "VOP1", opcode, name, operands, codes)

    def decode_vop2(self, offset, address, word):
        opcode = bits(word, 25, 6)
        name, template = self.opcode_entry("VOP2", opcode)
        codes = {"vdst": bits(word, 17, 8) + VGPR_FIRST, "src0": bits(word, 0, 9),
                 "src1": bits(word, 9, 8) + VGPR_FIRST}
        needs_literal = [codes["src0"]] + ([LITERAL] if any(t[0] == "literal" for t in template) else [])
        literal, size = self.literal_after(offset, 4, needs_literal)
        operands = self.template_operands(template, codes, literal)
        return self.make(address, size, "VOP2", opcode, name, operands, codes)

    def decode_vopc(self, offset, address, word):
        opcode = bits(word, 17, 8)
        name, template = self.opcode_entry("VOPC", opcode)
        codes = {"src0": bits(word, 0, 9), "src1": bits(word, 9, 8) + VGPR_FIRST}
        literal, size = self.literal_after(offset, 4, [codes["src0"]])
        operands = self.template_operands(template, codes, literal)
        return self.make(address, size, "VOPC", opcode, name, operands, codes)

    def vop3_codes(self, word: int, high: int, template) -> dict:
        codes = {"vdst": bits(word, 0, 8), "src0": bits(high, 0, 9), "src1": bits(high, 9, 9),
                 "src2": bits(high, 18, 9), "clamp": bits(word, 15, 1)}
        if not any(t[0] == "vdst" and t[1] == "s" for t in template):
            codes["vdst"] += VGPR_FIRST
        return codes

    def decode_vop3(self, offset, address, word):
        high = self.dword(offset + 4)
        opcode = bits(word, 16, 10)
        name, template = self.opcode_entry("VOP3", opcode)
        codes = self.vop3_codes(word, high, template)
        sources = [t[0] for t in template if t[0] in ("src0", "src1", "src2")]
        literal, size = self.literal_after(offset, 8, [codes[s] for s in sources])
        is_sd = any(t[0] == "sdst" for t in template)
        neg = bits(high, 29, 3)
        codes.update(omod=bits(high, 27, 2), neg=neg)
        modifiers = {}
        if is_sd:
            codes["sdst"] = bits(word, 8, 7)
            abs_bits = 0
            op_sel = 0
        else:
            abs_bits = bits(word, 8, 3)
            op_sel = bits(word, 11, 4)
            codes.update(abs=abs_bits, op_sel=op_sel)
        for index, source in enumerate(("src0", "src1", "src2")):
            modifiers[source] = (bool(neg >> index & 1), bool(abs_bits >> index & 1))
        operands = self.template_operands(template, codes, literal, modifiers)
        suffix = ""
        if op_sel:
            flags = [op_sel >> i & 1 for i in range(len(sources))] + [op_sel >> 3 & 1]
            suffix += " op_sel:[" + ",".join(map(str, flags)) + "]"
        if codes["clamp"]:
            suffix += " clamp"
        if codes["omod"]:
            suffix += " " + OMOD_TEXT[codes["omod"]]
        encoding = "VOP3SD" if is_sd else "VOP3"
        return self.make(address, size, encoding, opcode, name, operands, codes, suffix)

    def decode_vop3p(self, offset, address, word):
        high = self.dword(offset + 4)
        opcode = bits(word, 16, 7)
        name, template = self.opcode_entry("VOP3P", opcode)
        codes = self.vop3_codes(word, high, template)
        sources = [t[0] for t in template if t[0] in ("src0", "src1", "src2")]
        literal, size = self.literal_after(offset, 8, [codes[s] for s in sources])
        op_sel = bits(word, 11, 3)
        op_sel_hi = bits(high, 27, 2) | bits(word, 14, 1) << 2
        neg_lo = bits(high, 29, 3)
        neg_hi = bits(word, 8, 3)
        codes.update(op_sel=op_sel, op_sel_hi=op_sel_hi, neg_lo=neg_lo, neg_hi=neg_hi)
        operands = self.template_operands(template, codes, literal)
        count = len(sources)
        all_ones = (1 << count) - 1

        def flags(name_: str, value: int) -> str:
            return f" {name_}:[" + ",".join(str(value >> i & 1) for i in range(count)) + "]"

        suffix = ""
        if op_sel & all_ones:
            suffix += flags("op_sel", op_sel)
        if op_sel_hi & all_ones != all_ones:
            suffix += flags("op_sel_hi", op_sel_hi)
        if neg_lo & all_ones:
            suffix += flags("neg_lo", neg_lo)
        if neg_hi & all_ones:
            suffix += flags("neg_hi", neg_hi)
        if codes["clamp"]:
            suffix += " clamp"
        return self.make(address, size, "VOP3P", opcode, name, operands, codes, suffix)

    def decode_vopd(self, offset, address, word):
        high = self.dword(offset + 4)
        opx = bits(word, 22, 4)
        opy = bits(word, 17, 5)
        name_x, template_x = self.opcode_entry("VOPD_X", opx)
        name_y, template_y = self.opcode_entry("VOPD_Y", opy)
        vdst_x = bits(high, 24, 8)
        # ISA guide VOPD: vdstY's low bit is the inverse of vdstX's (they sit in different banks)
        vdst_y = bits(high, 17, 7) << 1 | (vdst_x & 1 ^ 1)
        codes_x = {"vdst": vdst_x + VGPR_FIRST, "src0": bits(word, 0, 9),
                   "src1": bits(word, 9, 8) + VGPR_FIRST}
        codes_y = {"vdsty": vdst_y + VGPR_FIRST, "src0y": bits(high, 0, 9),
                   "src1y": bits(high, 9, 8) + VGPR_FIRST}
        uses_k = any(t[0] == "literal" for t in template_x + template_y)
        literal, size = self.literal_after(
            offset, 8, [codes_x["src0"], codes_y["src0y"]] + ([LITERAL] if uses_k else []))
        half_x = self.make(address, size, "VOPD", opx, name_x,
                           self.template_operands(template_x, codes_x, literal), codes_x)
        half_y = self.make(address, size, "VOPD", opy, name_y,
                           self.template_operands(template_y, codes_y, literal), codes_y)
        instruction = dataclasses.replace(half_x, second=half_y,
                                          text=f"{half_x.text} :: {half_y.text}")
        return instruction

    # -- memory ---------------------------------------------------------------------------------
    def decode_ds(self, offset, address, word):
        high = self.dword(offset + 4)
        opcode = bits(word, 18, 8)
        name, template = self.opcode_entry("DS", opcode)
        codes = {"offset0": bits(word, 0, 8), "offset1": bits(word, 8, 8), "gds": bits(word, 17, 1),
                 "addr": bits(high, 0, 8) + VGPR_FIRST, "data0": bits(high, 8, 8) + VGPR_FIRST,
                 "data1": bits(high, 16, 8) + VGPR_FIRST, "vdst": bits(high, 24, 8) + VGPR_FIRST}
        operands = self.template_operands(template, codes, None)
        suffix = ""
        if "2addr" in name:
            if codes["offset0"]:
                suffix += f" offset0:{codes['offset0']}"
            if codes["offset1"]:
                suffix += f" offset1:{codes['offset1']}"
        else:
            combined = codes["offset0"] | codes["offset1"] << 8
            if combined:
                suffix += f" offset:{combined}"
        if codes["gds"]:
            suffix += " gds"
        return self.make(address, 8, "DS", opcode, name, operands, codes, suffix)

    def decode_mubuf(self, offset, address, word):
        opcode = bits(word, 18, 8)
        if opcode not in MUBUF_CACHE_OPS:
            raise KeyError(f"MUBUF opcode {opcode} (0x{opcode:x}) is not decoded (only cache invalidates)")
        return self.make(address, 8, "MUBUF", opcode, MUBUF_CACHE_OPS[opcode], [], {})

    def decode_flat(self, offset, address, word):
        high = self.dword(offset + 4)
        opcode = bits(word, 18, 7)
        segment = bits(word, 16, 2)
        encoding = ("FLAT", "SCRATCH", "GLOBAL", "")[segment]
        if not encoding:
            raise ValueError("FLAT segment 3 is reserved")
        name, template = self.opcode_entry(encoding, opcode)
        codes = {"offset": bits(word, 0, 13), "dlc": bits(word, 13, 1), "glc": bits(word, 14, 1),
                 "slc": bits(word, 15, 1), "addr": bits(high, 0, 8) + VGPR_FIRST,
                 "data": bits(high, 8, 8) + VGPR_FIRST, "saddr": bits(high, 16, 7),
                 "sve": bits(high, 23, 1), "vdst": bits(high, 24, 8) + VGPR_FIRST}
        registers = [t for t in template if t[0] in ("vdst", "addr", "data")]
        if "atomic" in name and codes["glc"] and not any(t[0] == "vdst" for t in registers):
            data_count = next(t[2] for t in registers if t[0] == "data")
            returned = data_count // 2 if "cmpswap" in name else data_count
            registers.insert(0, ("vdst", "v", returned))
        has_saddr = codes["saddr"] != NULL and codes["saddr"] != 0x7F
        fixed = []
        for field, file, count in registers:
            if field == "addr":
                if encoding == "GLOBAL" and has_saddr:
                    count = 1
                if encoding == "SCRATCH" and not codes["sve"]:
                    fixed.append(("=", "off", 0))
                    continue
            fixed.append((field, file, count))
        operands = self.template_operands(fixed, codes, None)
        if encoding == "GLOBAL":
            operands.append(source_operand(codes["saddr"], 2, "saddr", None) if has_saddr
                            else Operand("text", 0, 0, "saddr", text="off"))
        elif encoding == "SCRATCH":
            operands.append(source_operand(codes["saddr"], 1, "saddr", None) if has_saddr
                            else Operand("text", 0, 0, "saddr", text="off"))
        suffix = ""
        offset_value = codes["offset"] if encoding == "FLAT" else signed(codes["offset"], 13)
        if offset_value:
            suffix += f" offset:{offset_value}"
        suffix += " glc" * codes["glc"] + " slc" * codes["slc"] + " dlc" * codes["dlc"]
        return self.make(address, 8, encoding, opcode, name, operands, codes, suffix)


def decode(code: bytes, base_address: int = 0) -> list[Instruction]:
    """Every instruction in a code section, in order."""
    return Decoder(code, base_address).decode_all()
