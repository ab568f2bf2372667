"""The gfx1100 decoder against LLVM: committed expectations (always) and live llvm-objdump-16."""
import json
import pathlib
import re
import shutil
import subprocess

import pytest

from mockgpu.amd.rdna3 import tables
from mockgpu.amd.rdna3.decoder import TruncatedInstruction, UnknownInstruction, decode

DATA = pathlib.Path(__file__).parent / "data"
KERNELS = DATA / "decoder_kernels.cl"
PREBUILT = pathlib.Path(__file__).parents[3] / "compute" / "amd" / "kernels" / "prebuilt"
OBJDUMP_LINE = re.compile(r"^\s+(\S.*?)\s*// ([0-9A-F]{12}): ((?:[0-9A-F]{8} ?)+)")
NEED_LLVM = "llvm-16 / clang-16 not installed (Debian: apt install clang-16 lld-16 llvm-16)"


def words_to_bytes(words):
    return b"".join(w.to_bytes(4, "little") for w in words)


def test_committed_expectations_match():
    expected = json.loads((DATA / "decoder_expected.json").read_text())["instructions"]
    assert len(expected) > 500
    for hex_words, text in expected:
        words = [int(w, 16) for w in hex_words.split()]
        instructions = decode(words_to_bytes(words))
        assert len(instructions) == 1, hex_words
        assert instructions[0].text == text, hex_words


def test_typed_operands_and_modifiers():
    # v_fma_f32 v13, |v0|, -s1, v13 ; v_add_co_u32 v2, vcc_lo, s6, v0 ; literal s_and_b32
    fma = decode(words_to_bytes([0xD613010D, 0x44340300]))[0]
    assert fma.encoding == "VOP3" and fma.name == "v_fma_f32"
    assert [o.kind for o in fma.operands] == ["vgpr", "vgpr", "sgpr", "vgpr"]
    assert fma.operands[1].abs and fma.operands[2].neg
    add = decode(words_to_bytes([0xD7006A02, 0x00020006]))[0]
    assert add.encoding == "VOP3SD" and add.operands[1].text == "vcc_lo"
    band = decode(words_to_bytes([0x8B04FF04, 0x0000FFFF]))[0]
    assert band.size == 8 and band.operands[2].kind == "literal" and band.operands[2].value == 0xFFFF
    load = decode(words_to_bytes([0xDC520000, 0x027C0002]))[0]
    assert load.encoding == "GLOBAL" and load.operands[1].count == 2


def test_unknown_opcode_names_address():
    missing = next(op for op in range(0x80) if op not in tables.SOPP)
    word = 0xBF800000 | missing << 16
    with pytest.raises(UnknownInstruction, match=r"0x1004.*BF8.*not a gfx1100 SOPP opcode"):
        decode(words_to_bytes([0xBF800000, word]), base_address=0x1000)


def test_unknown_encoding_class_is_an_error():
    # 0xFC000000 top bits belong to no gfx1100 format
    with pytest.raises(UnknownInstruction, match="0x2000"):
        decode(words_to_bytes([0xFC000000]), base_address=0x2000)


def test_missing_literal_is_an_error():
    with pytest.raises(UnknownInstruction, match="literal"):
        decode(words_to_bytes([0x8B04FF04]))


def objdump(code_object):
    out = subprocess.run(["llvm-objdump-16", "-d", "--mcpu=gfx1100", str(code_object)],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        match = OBJDUMP_LINE.match(line)
        if match:
            words = [int(w, 16) for w in match.group(3).split()]
            yield int(match.group(2), 16), words, match.group(1).strip()


def code_objects(tmp_path):
    objects = sorted(PREBUILT.glob("*.co")) if PREBUILT.is_dir() else []
    for level in ("-O1", "-O2", "-O3"):
        out = tmp_path / f"decoder_kernels{level}.co"
        subprocess.run(["clang-16", "-x", "cl", "-cl-std=CL2.0", "-target", "amdgcn-amd-amdhsa",
                        "-mcpu=gfx1100", level, "-nogpulib", "-o", str(out), str(KERNELS)],
                       check=True, capture_output=True)
        objects.append(out)
    return objects


@pytest.mark.skipif(shutil.which("llvm-objdump-16") is None or shutil.which("clang-16") is None,
                    reason=NEED_LLVM)
def test_cross_check_against_llvm_objdump(tmp_path):
    checked = 0
    mismatches = []
    for code_object in code_objects(tmp_path):
        for address, words, text in objdump(code_object):
            ours = decode(words_to_bytes(words), base_address=address)
            got = ours[0].text if len(ours) == 1 else f"{len(ours)} instructions"
            if got != text:
                mismatches.append(f"{code_object.name} 0x{address:x}: llvm {text!r} ours {got!r}")
            checked += 1
    assert checked > 1000
    assert not mismatches, "\n".join(mismatches[:20])


@pytest.mark.skipif(shutil.which("llvm-mc-16") is None, reason=NEED_LLVM)
def test_tables_record_the_installed_llvm():
    out = subprocess.run(["llvm-mc-16", "--version"], capture_output=True, text=True).stdout
    if tables.LLVM_VERSION not in out:
        pytest.skip(f"installed llvm-mc-16 is not {tables.LLVM_VERSION}; tables may differ")


@pytest.mark.parametrize("words, cut", [
    ([0x8B04FF04, 0x0000FFFF], 4),  # s_and_b32 s4, s4, 0xffff: the literal is missing
    ([0xDC520000, 0x027C0002], 4),  # global_load_b64: the second dword is missing
    ([0xDC520000, 0x027C0002], 6),  # ... or only half of it is there
])
def test_a_truncated_instruction_is_an_error_naming_its_address(words, cut):
    code = words_to_bytes([0xBF800000] + words)[:4 + cut]  # s_nop 0, then the cut instruction
    expected = r"instruction at 0x3004 .*truncated.*ends at 0x30"
    with pytest.raises(TruncatedInstruction, match=expected) as error:
        decode(code, base_address=0x3000)
    assert error.value.address == 0x3004
    assert isinstance(error.value, UnknownInstruction)
