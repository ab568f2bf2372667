"""autogen.cexpr: C macro bodies to Python expressions (no libclang: tokens are built by hand)."""
from __future__ import annotations

import re

import pytest

from autogen import cexpr
from autogen.runtime import c_div, c_mod, c_signed

_TOKEN = re.compile(r"0[xX][0-9a-fA-F]+[uUlL]*|\d+[uUlL]*|'[^']*'|\w+|->|<<|>>|<=|>=|==|!=|&&|\|\||##|\S")


C_KEYWORDS = {"unsigned", "int", "char", "long", "short", "sizeof", "do", "struct"}


def tokens(text: str) -> list[cexpr.Token]:
    result = []
    for spelling in _TOKEN.findall(text):
        if spelling[0].isdigit() or spelling[0] == "'":
            kind = "LITERAL"
        elif spelling[0].isalpha() or spelling[0] == "_":
            kind = "KEYWORD" if spelling in C_KEYWORDS else "IDENTIFIER"
        else:
            kind = "PUNCTUATION"
        result.append(cexpr.Token(spelling, kind))
    return result


def evaluate(text: str, params: tuple[str, ...] = (), arguments: tuple[int, ...] = (), **names) -> int:
    expression = cexpr.translate(tokens(text), params, {"u8": (8, False), "s16": (16, True)})
    scope = {"c_div": c_div, "c_mod": c_mod, "c_signed": c_signed, "A": 3, "B": 4, **names}
    scope.update({cexpr.python_identifier(p): a for p, a in zip(params, arguments)})
    return eval(expression, scope)


@pytest.mark.parametrize("text, value", [
    ("1 + 2 * 3", 7),
    ("(1 + 2) * 3", 9),
    ("1 << 4 | 1", 17),
    ("0x10UL >> 2", 4),
    ("010", 8),
    ("'A'", 65),
    ("-7 / 2", -3),
    ("-7 % 2", -1),
    ("!0 + !5", 1),
    ("3 > 2 && 0 || 1", 1),
    ("1 ? 2 ? 3 : 4 : 5", 3),
    ("0 ? 1 : 0 ? 2 : 6", 6),
    ("~0 & 0xff", 0xFF),
    ("(u8)0x1ff", 0xFF),
    ("(s16)0xffff", -1),
    ("(unsigned char)300", 44),
    ("1 == 1 != 0", 1),
    ("(A * B) + 1", 13),
])
def test_expressions_follow_c(text, value):
    assert evaluate(text) == value


def test_parameters_names_and_calls():
    assert evaluate("((x) & MASK) << SHIFT", ("x",), (0x1F3,), MASK=0xF, SHIFT=4) == 0x30
    assert evaluate("TWICE(lambda) + 1", ("lambda",), (5,), TWICE=lambda v: 2 * v) == 11


@pytest.mark.parametrize("text, reason", [
    ("sizeof(int)", "sizeof"),
    ("a ## b", "##"),
    ("x.y", "'.'"),
    ("p->q", "'->'"),
    ("do { } while (0)", "unexpected"),
    ("", "empty"),
    ("(1 + 2", "ends early"),
    ("1 2", "after the expression"),
    ("(struct foo *)0", "not an integer cast"),
    ("(u8 *)x", "not an integer cast"),
])
def test_untranslatable_bodies_say_why(text, reason):
    with pytest.raises(cexpr.NotAnExpression, match=re.escape(reason)):
        cexpr.translate(tokens(text), ("x",), {"u8": (8, False)})


def test_string_literals_are_refused():
    with pytest.raises(cexpr.NotAnExpression, match="string"):
        cexpr.translate([cexpr.Token('"text"', "LITERAL")])
