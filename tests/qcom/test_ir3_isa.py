"""autogen.qcom.ir3_isa and the decoder over it: instruction words written out by hand from the bit
patterns of Mesa's ISA XML (the lines are cited), a set of Mesa's own disassembler test vectors for
GPU 630, and regeneration byte for byte."""
from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from autogen import manifest, sources
from autogen.qcom import ir3_isa
from drivers.qcom.ir3 import isa
from drivers.qcom.ir3.disasm import disassemble

REPOSITORY = pathlib.Path(__file__).resolve().parents[2]
TARGET = manifest.BY_NAME["qcom.ir3_isa"]


def _xml(name: str) -> str:
    try:
        root = sources.source_root(TARGET.source, TARGET.paths, download=False)
    except sources.SourceUnavailable as exc:
        pytest.skip(f"mesa sources not on this machine: {exc}")
    return (root / "src/freedreno/isa" / name).read_text()


# ir3-cat0.xml:45 `<pattern low="61" high="63">000</pattern>` (cat0), :74 end's OPC (bits 55-58) 0110
END = 0b0110 << 55
# ir3-cat0.xml:39 REPEAT bits 40-42 (#rptN)
RPT2_NOP = 2 << 40
# ir3-cat2.xml:43 cat2 pattern 61-63 010, :243 add.s bits 53-58 010001, FULL at bit 52 (full regs),
# DST bits 32-39 (#reg-gpr: GPR << 2 | component), SRC1 bits 0-15 and SRC2 bits 16-31 (#multisrc-gpr:
# register in bits 0-7, ir3-common.xml:205)
ADD_S = (0b010 << 61) | (0b010001 << 53) | (1 << 52) | (1 << 32) | (0 << 0) | (4 << 16)


def test_hand_encoded_words_match_the_xml_patterns():
    cat0 = _xml("ir3-cat0.xml")
    cat2 = _xml("ir3-cat2.xml")
    assert '<pattern low="61" high="63">000</pattern>  <!-- cat0 -->' in cat0
    assert '<pattern low="55" high="58">0110</pattern> <!-- OPC -->' in cat0
    assert '<field name="REPEAT" low="40" high="42" type="#rptN"/>' in cat0
    assert '<pattern low="61" high="63">010</pattern>  <!-- cat2 -->' in cat2
    assert ('<bitset name="add.s" extends="#instruction-cat2-2src">\n'
            '\t<pattern low="53" high="58">010001') in cat2
    assert isa.decode_word(END) == "end"
    assert isa.decode_word(0) == "nop"
    assert isa.decode_word(RPT2_NOP) == "(rpt2)nop"
    assert isa.decode_word(ADD_S) == "add.s r0.y, r0.x, r1.x"


def test_fields_mesas_encoder_forces_are_set():
    """ir3-cat6.xml #instruction-cat6-stg: `<map name="DST_OFF" force="true">1</map>` (bit 40)."""
    assert '<map name="DST_OFF" force="true">1</map>' in _xml("ir3-cat6.xml")
    assert ir3_isa.FORCED == {"#instruction-cat6-stg": {"DST_OFF": 1}}
    from drivers.qcom.ir3 import asm

    word = asm.encode_line("stg.a.f32 g[r1.x+(r1.z)<<2], r0.z, 2")
    assert word >> 40 & 1
    assert word == 0xC0D2090602800004  # Mesa's disasm.c vector for this text


def test_generated_tables_hold_patterns_fields_and_displays():
    size, extends, match, dontcare, mask, cases = ir3_isa.BITSETS["end"]
    assert size == 64 and extends == "#instruction-cat0-0src"
    assert match == END and mask & (0xf << 55) == 0xf << 55
    cat2 = ir3_isa.BITSETS["#instruction-cat2-2src"]
    default = cat2[5][-1]
    assert default[0] is None
    assert default[1] == "{SY}{SS}{JP}{SAT}{REPEAT}{UL}{NAME} {EI}{DST_HALF}{DST}, {SRC1}, {SRC2}"
    names = {field[0]: field for field in default[2]}
    assert names["SRC2"][1:4] == (16, 31, "#multisrc")
    assert ir3_isa.ENUMS["#swiz"] == {0: "x", 1: "y", 2: "z", 3: "w"}
    assert "add.s" in ir3_isa.LEAVES["#instruction"]
    assert ir3_isa.GPU_ID == 630


# Mesa src/freedreno/ir3/tests/disasm.c, INSTR_6XX entries (gpu_id 630): word -> Mesa's text
MESA_VECTORS = {
    0x0000020000000000: "(rpt2)nop",
    0x0300000000000000: "end",
    0x0080000000000004: "br p0.x, #4",
    0x00900000_00000003: "br !p0.x, #3",
    0x2024400000000020: "mov.f32f32 r0.x, c8.x",
    0x2020000000000020: "mov.f16f16 hr0.x, hc8.x",
    0x2015000000000000: "cov.s32s16 hr0.x, r0.x",
    0x2015600400000C11: "(ul)mov.s32s32 r1.x, c<a0.x + 17>",
    0x42380C0100040001: "(sat)(nop3) add.s r0.y, r0.y, r1.x",
    0x40B8080410408004: "(nop3) cmps.f.lt r1.x, (abs)r1.x, c16.x",
    0x42B400F820010004: "cmps.s.eq p0.x, r1.x, 1",
    0x6205000900091000: "mad.u24 r2.y, c0.x, r2.z, r2.y",
    0xC00600060181800F: "ldg.u32 r1.z, g[r1.z+7], 1",
    0xC0D2090602800004: "stg.a.f32 g[r1.x+(r1.z)<<2], r0.z, 2",
    0xC106050001800008: "stl.u32 l[r0.z], r1.x, 1",
    0xC046000101804001: "ldl.u32 r0.y, l[r0.y], 1",
}


@pytest.mark.parametrize("word", sorted(MESA_VECTORS), ids=lambda word: f"{word:016x}")
def test_decoder_agrees_with_mesas_disassembler(word):
    assert isa.decode_word(word) == MESA_VECTORS[word]


def test_structured_decode_gives_the_form_and_its_fields():
    instruction = isa.decode(ADD_S)
    assert instruction.leaf.name == "add.s"
    assert instruction.field_value("FULL") == 1
    assert instruction.field_value("DST") == 1  # r0.y: register 0, component y
    assert instruction.field_value("DST_HALF") == 0  # derived from FULL and DST_CONV
    assert instruction.render() == "add.s r0.y, r0.x, r1.x"


def test_a_word_no_form_matches_is_a_decode_error():
    with pytest.raises(isa.DecodeError, match="no form"):
        isa.decode_word(0xFFFFFFFFFFFFFFFF)
    with pytest.raises(isa.DecodeError, match="whole number"):
        disassemble(b"\x00" * 12)


def test_disassembler_labels_branch_targets():
    # br p0.x, #2 at 0 jumps over one nop to end
    text = disassemble([0x0080000000000002, 0, END])
    assert text == "br p0.x, #l2\nnop\nl2:\nend\n"
    assert disassemble([0x0080000000000002, 0, END], labels=False).splitlines()[0] == "br p0.x, #2"


def test_regeneration_is_byte_identical():
    _xml("ir3.xml")
    result = subprocess.run([sys.executable, "-m", "autogen", "--check", "--offline", "qcom.ir3_isa"],
                            capture_output=True, text=True, cwd=REPOSITORY, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout


def _mesa_vectors() -> list[tuple[int, str]]:
    """The active INSTR_6XX entries of Mesa's ir3 disassembler test (comments left out)."""
    import re

    try:
        root = sources.source_root(TARGET.source, (manifest.MESA_IR3_TEST_VECTORS,), download=False)
    except sources.SourceUnavailable as exc:
        pytest.skip(f"mesa sources not on this machine: {exc}")
    text = (root / manifest.MESA_IR3_TEST_VECTORS).read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    vectors = []
    for match in re.finditer(r'\bINSTR_6XX\(([0-9a-fA-F]{8})_([0-9a-fA-F]{8}), "((?:[^"\\]|\\.)*)"', text):
        vectors.append((int(match.group(1) + match.group(2), 16), match.group(3)))
    return vectors


# forms the assembler does not encode yet (docs/qcom.md): texture and sampler descriptors, the
# dot-product accumulators, a 16-bit negative immediate, and Mesa's fallback text for an unknown word
NOT_ENCODED = ("sam", "getlod", "isaml", "saml", "dp2acc", "dp4acc", "mov.s16s16 hr1.y, -1", "raw ")


def test_every_mesa_vector_decodes_to_mesas_text_and_encodes_back():
    vectors = _mesa_vectors()
    assert len(vectors) > 200
    from drivers.qcom.ir3 import asm

    for word, text in vectors:
        if text.startswith("raw "):
            with pytest.raises(isa.DecodeError):
                isa.decode_word(word)
            continue
        assert isa.decode_word(word) == text, f"{word:016x}"
        skipped = any(text.startswith(prefix) or f" {prefix}" in text for prefix in NOT_ENCODED)
        if skipped:
            continue
        encoded = asm.encode_line(text)
        # Mesa's word, but for bits the form leaves free (don't-care; Mesa's vectors set some)
        dontcare = isa.find_leaf(ir3_isa.ROOT, word).dontcare
        assert (encoded ^ word) & ~dontcare == 0, f"{text!r}: {encoded:016x}, Mesa {word:016x}"
        assert isa.decode_word(encoded) == text
