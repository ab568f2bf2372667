"""drivers.qcom.ir3.asm: text to words and back through the generated tables: hand-encoded words,
Mesa's test vectors, every line of the kernel library, labels, directives and errors."""
from __future__ import annotations

import pytest

from drivers.qcom import kernels
from drivers.qcom.ir3 import asm, isa
from drivers.qcom.ir3.disasm import disassemble
from hal.errors import BadBinary, InvalidArgument

# the same hand-derived words as tests/qcom/test_ir3_isa.py (ir3-cat0.xml, ir3-cat2.xml patterns)
END = 0b0110 << 55
RPT2_NOP = 2 << 40
ADD_S = (0b010 << 61) | (0b010001 << 53) | (1 << 52) | (1 << 32) | (4 << 16)

# Mesa src/freedreno/ir3/tests/disasm.c, INSTR_6XX entries (gpu_id 630) whose text encodes back to
# exactly Mesa's word
MESA_VECTORS = {
    "(rpt2)nop": 0x0000020000000000,
    "br p0.x, #-4": 0x00800000FFFFFFFC,
    "mov.f32f32 r0.x, c8.x": 0x2024400000000020,
    "(rpt1)mov.f32f32 r1.y, (r)c260.x": 0x2024490500000410,
    "mov.s32s32 r<a0.x + 4>, r2.x": 0x2017400400000008,
    "(sat)(nop3) add.s r0.y, r0.y, r1.x": 0x42380C0100040001,
    "cmps.s.eq p0.x, r1.x, 1": 0x42B400F820010004,
    "mad.f32 r1.y, (neg)c12.x, r1.x, c12.y": 0x6382000510315030,
    "rcp r2.z, r0.w": 0x8010000A00000003,
    "ldg.u32 r1.z, g[r1.z+7], 1": 0xC00600060181800F,
    "ldl.f32 r0.z, l[r0.z+12], 1": 0xC042000201808019,
    "stl.u32 l[r0.z], r1.x, 1": 0xC106050001800008,
}


def test_hand_encoded_words():
    assert asm.encode_line("end") == END
    assert asm.encode_line("(rpt2)nop") == RPT2_NOP
    assert asm.encode_line("add.s r0.y, r0.x, r1.x") == ADD_S
    # spacing does not matter; the words are little-endian in the code
    assert asm.assemble("  add.s   r0.y,  r0.x, r1.x ; comment\nend\n") == (
        ADD_S.to_bytes(8, "little") + END.to_bytes(8, "little"))


@pytest.mark.parametrize("text", sorted(MESA_VECTORS))
def test_encodes_mesas_vectors_to_mesas_words(text):
    assert asm.encode_line(text) == MESA_VECTORS[text]


@pytest.mark.parametrize("name", kernels.NAMES)
def test_every_kernel_line_round_trips(name):
    """assemble -> decode -> the same text, for every instruction form the kernel library uses."""
    source = kernels.source(name)
    program = asm.assemble_program(source)
    names_at = {position: label for label, position in program.labels.items()}
    lines = []
    for raw in source.splitlines():
        line = raw.split(";", 1)[0].strip()
        if line and not line.startswith("@") and not line.endswith(":"):
            lines.append(line)
    assert len(lines) == len(program.words)
    for position, (line, word) in enumerate(zip(lines, program.words)):
        text = isa.decode_word(word, position, lambda target: names_at.get(target, ""))
        assert isa.normalise(text) == isa.normalise(line)
    again = asm.assemble_program(disassemble(program.words))
    assert again.words == program.words


def test_labels_forward_and_backward():
    program = asm.assemble_program("top:\nnop\nbr p0.x, #top\nbr !p0.x, #out\nnop\nout:\nend\n")
    assert program.labels == {"top": 0, "out": 4}
    assert isa.decode_word(program.words[1], 1) == "br p0.x, #-1"
    assert isa.decode_word(program.words[2], 2) == "br !p0.x, #2"
    assert disassemble(program.words).splitlines() == [
        "l0:", "nop", "br p0.x, #l0", "br !p0.x, #l4", "nop", "l4:", "end"]


def test_errors_name_the_line():
    with pytest.raises(asm.AssemblyError, match="line 2: .*'add.q r0.x, r0.x, r0.x'"):
        asm.assemble("nop\nadd.q r0.x, r0.x, r0.x\n")
    with pytest.raises(asm.AssemblyError, match="line 2"):
        asm.assemble("nop\nbr p0.x, #nowhere\n")
    with pytest.raises(asm.AssemblyError, match="defined twice"):
        asm.assemble("a:\nnop\na:\nend\n")
    with pytest.raises(asm.AssemblyError, match="known directives"):
        asm.assemble("@frobnicate 3\nend\n")
    # a register outside the field's range has no encoding
    with pytest.raises(InvalidArgument):
        asm.assemble("mov.u32u32 r99.x, r0.x\n")


def test_directives_and_footprint():
    program = asm.assemble_program(
        "@localsize 32, 2, 1\n@buf 256 (c4.x)\n@const(c5.x) 1.0, 2, 0, 0\n@invocationid(r0.x)\n"
        "@wgid(r48.x)\n@numwg(c6.x)\n@localmem 128\n"
        "(rpt1)mov.f32f32 r1.y, (r)c2.x\nadd.f hr3.x, hr1.x, hr2.x\nmov.u32u32 r50.x, r0.x\nend\n")
    assert program.local_size == (32, 2, 1)
    assert program.buffers == [asm.Buffer(256, 4)]
    assert program.consts == {5: (1.0, 2, 0, 0)}
    assert program.invocation_id_reg == 0 and program.workgroup_id_reg == 48 * 4
    assert program.num_workgroups_const == 6 * 4
    assert program.local_memory == 128
    # (rpt1) writes r1.y and r1.z; r48 and up are shared registers, not counted
    assert program.max_reg == 1
    assert program.max_half_reg == 3
    assert program.max_const == 2
    assert program.const_vec4_count == 7


def test_library_loader_checks_the_declared_footprint(monkeypatch):
    for name in kernels.NAMES:
        program = kernels.load(name)
        assert program.words[-1] == END
        assert kernels.declared_footprint(kernels.source(name)) == kernels.footprint(program)
    original = kernels.source("copy")
    monkeypatch.setattr(kernels, "source", lambda name: original.replace("max_reg=3", "max_reg=9"))
    with pytest.raises(BadBinary, match="footprint"):
        kernels.load("copy")
