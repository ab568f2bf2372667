"""The generator on a synthetic header with every construct, checked against a compiled C probe."""
from __future__ import annotations

import pathlib

import pytest

pytest.importorskip("clang.cindex", reason="the generator needs libclang (pip install libclang==18.1.1)")

from autogen.clang_gen import ModuleSource, ParseConfig, generate_module  # noqa: E402
from autogen.runtime import python_name  # noqa: E402
from cprobe import c_compiler, compile_and_run, layout_mismatches, load_module, probe_layouts  # noqa: E402

HEADER = pathlib.Path(__file__).parent / "data" / "synthetic.h"
CONFIG = ParseConfig(headers=(HEADER.resolve(),))
SOURCE = ModuleSource("synthetic", "none", "0", "MIT", ("synthetic.h",), "Synthetic test header.")
needs_compiler = pytest.mark.skipif(c_compiler() is None, reason="no C compiler (gcc, cc or clang) on PATH")


@pytest.fixture(scope="module")
def text() -> str:
    return generate_module(CONFIG, SOURCE)


@pytest.fixture(scope="module")
def syn(text):
    return load_module(text, "synthetic")


def test_output_is_deterministic(text):
    assert generate_module(CONFIG, SOURCE) == text


@needs_compiler
def test_layouts_match_the_c_compiler(syn, tmp_path):
    probed = probe_layouts(CONFIG, syn, tmp_path)
    assert set(probed) == set(syn._LAYOUT)
    assert layout_mismatches(syn, probed) == []


def test_every_construct_is_present(syn):
    assert {"syn_inner", "syn_bits", "syn_union", "syn_nested", "syn_packed", "syn_pragma_packed",
            "syn_aligned",
            "syn_flex", "syn_zero_length", "syn_typedef_t", "syn_reserved_names"} <= set(syn._LAYOUT)
    # bitfield crossing a 32-bit storage unit, and a 40-bit one straddling bytes
    assert syn.syn_bits.FIELDS["b"].kind == "bits"
    assert syn.syn_bits.FIELDS["wide"].bit_width == 40
    # anonymous struct inside an anonymous union: flattened with their offsets
    assert syn.syn_nested.FIELDS["x"].offset == syn.syn_nested.FIELDS["raw"].offset
    assert syn.syn_union.FIELDS["hi"].offset == 2
    # flexible and zero-length arrays: listed at their offset with no size, not counted in SIZE
    assert syn.syn_flex.FIELDS["entries"][:3] == (4, 0, "flex")
    assert syn.syn_flex.SIZE == 4
    assert syn.syn_zero_length.FIELDS["payload"].kind == "flex"
    assert syn.syn_packed.SIZE == 15
    assert syn.syn_inner_alias is syn.syn_inner


def test_constants_and_enums(syn):
    assert syn.SYN_ANSWER == 42
    assert syn.SYN_HEX_MASK == 0xFFFF0000
    assert syn.SYN_SHIFTED == 1 << 31
    assert syn.SYN_NEGATIVE == -5
    assert syn.SYN_CHAR == ord("K")
    assert syn.SYN_STRING == "synthetic"
    assert syn.SYN_EXPRESSION == (42 * 3 + 1) % 7
    assert syn.SYN_SIZE_OF_PACKED == 15
    # an ioctl-style number built from sizeof(struct) by a macro chain, evaluated by clang
    assert syn.SYN_IOC_READ == (2 << 30) | (15 << 16) | (ord("S") << 8) | 7
    assert syn.SYN_RED == -2 and syn.SYN_BLUE == 7 and syn.SYN_ANON_B == 101
    assert syn.ENUMS["syn_colour"] == {"SYN_RED": -2, "SYN_GREEN": 0, "SYN_BLUE": 7}


def test_function_like_macros(syn):
    assert syn.SYN_FIELD_GET(0xABCD, 4, 8) == 0xBC
    assert syn.SYN_SELECT(3, 10) == 7
    assert syn.SYN_NOT(0) == 1 and syn.SYN_NOT(5) == 0
    assert syn.SYN_DIVIDE(-7, 2) == -3  # C truncates toward zero
    assert syn.SYN_CAST(0x1FF) == 0xFF + -1
    assert syn._SYN_IOC(1, 2, 3, 4) == (1 << 30) | (4 << 16) | (2 << 8) | 3


def test_untranslated_constructs_are_listed_with_reasons(syn):
    skipped = dict(syn.SKIPPED)
    assert "sizeof" in skipped["_SYN_IOR"]
    assert "do" in skipped["SYN_STATEMENT"]
    assert "##" in skipped["SYN_PASTE"]
    assert "not a constant expression" in skipped["SYN_TYPE_ALIAS"]
    assert "empty" in skipped["SYN_EMPTY"]
    assert "never defined" in skipped["struct syn_forward"]


def test_reserved_member_names_are_renamed(syn):
    assert ("syn_reserved_names.buffer", "syn_reserved_names.buffer_") in syn.RENAMED
    names = syn.syn_reserved_names(buffer_=1, from_=2, SIZE_=3, class_=4, lambda_=5)
    assert len(names.buffer) == syn.syn_reserved_names.SIZE == 16
    assert bytes(names)[:12] == bytes([1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0])


def _pattern(index: int, bits: int, signed: bool) -> int:
    value = (0x9E3779B97F4A7C15 * (index + 1)) & ((1 << bits) - 1)
    if signed and value >> (bits - 1):
        value -= 1 << bits
    return value


@needs_compiler
def test_written_bytes_match_c_assignments(syn, tmp_path):
    """Every integer member and bitfield written from Python gives the bytes C's assignments give."""
    body = []
    expected: dict[str, bytes] = {}
    for class_name, (c_type, size, _, members) in syn._LAYOUT.items():
        cls = getattr(syn, class_name)
        instance = cls()
        body.append("{")
        body.append(f"  {c_type} v; unsigned char *p = (unsigned char *)&v;")
        body.append("  __builtin_memset(&v, 0, sizeof v);")
        for index, (c_member, _, bit_width) in enumerate(members):
            member = python_name(c_member)
            field = cls.FIELDS[member]
            if field.kind not in ("uint", "int", "bits") or c_member == "pointer":
                continue  # floats, bools and the pointer are not integer patterns
            signed = field.kind == "int" or (field.kind == "bits" and field.spec.signed)
            value = _pattern(index, bit_width, signed)
            body.append(f"  v.{c_member} = {value}{'LL' if signed else 'ULL'};")
            setattr(instance, member, value)
            assert getattr(instance, member) == value
        body.append(f'  printf("{class_name} ");')
        body.append(f'  for (unsigned long i = 0; i < {size}; i++) printf("%02x", p[i]);')
        body.append('  printf("\\n");')
        body.append("}")
        expected[class_name] = bytes(instance)
    output = compile_and_run(CONFIG, body, tmp_path)
    for line in output.splitlines():
        class_name, _, hex_bytes = line.partition(" ")
        assert bytes.fromhex(hex_bytes.strip()) == expected[class_name], class_name


def test_nested_views_write_through(syn):
    nested = syn.syn_nested(tag=1)
    nested.grid[1][2].low = 0xBEEF
    nested.matrix[1][0][1] = 7
    nested.unions[1].hi = 0x1234
    nested.named.second = 0x55
    raw = bytes(nested)
    grid = syn.syn_nested.FIELDS["grid"].offset
    assert raw[grid + (1 * 3 + 2) * 4:grid + (1 * 3 + 2) * 4 + 2] == (0xBEEF).to_bytes(2, "little")
    assert nested.unions[1].word == 0x12340000
    assert nested.matrix.tolist() == [[[0, 0], [0, 0]], [[0, 7], [0, 0]]]
    assert nested.named.to_dict() == {"first": 0, "second": 0x55}
