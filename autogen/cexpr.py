"""Translation of C macro bodies (integer expressions) into Python expressions.

The struct/constant generator uses it for function-like macros such as
`#define PCI_EXT_CAP_NEXT(header) (((header) >> 20) & 0xffc)`. Only integer expressions are
accepted: literals, parameters, other names, calls, unary and binary operators, the conditional
operator and casts to integer types. Anything else (statements, sizeof, member access, token
pasting, strings) raises `NotAnExpression` with the reason, which the generator records.

C semantics kept: `/` and `%` truncate toward zero (`c_div`, `c_mod` from autogen.runtime), logical
and comparison operators yield 0 or 1, casts to unsigned types mask and casts to signed types wrap
(`c_signed`). Shifts and arithmetic use Python's unbounded integers; the generator checks each
translation against clang's own evaluation on sample arguments, modulo the width of the C result.
"""
from __future__ import annotations

import ast
import keyword
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

_INTEGER = re.compile(r"^(0[xX][0-9a-fA-F]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)([uUlL]*)$")
_CHAR = re.compile(r"^'(\\.[^']*|[^'\\])'$")

_BINARY_PRECEDENCE = {
    "||": 1, "&&": 2, "|": 3, "^": 4, "&": 5,
    "==": 6, "!=": 6, "<": 7, ">": 7, "<=": 7, ">=": 7,
    "<<": 8, ">>": 8, "+": 9, "-": 9, "*": 10, "/": 10, "%": 10,
}
_COMPARISONS = {"==", "!=", "<", ">", "<=", ">="}
_SIMPLE_BINARY = {"|", "^", "&", "<<", ">>", "+", "-", "*"}
# C integer type keywords; a cast made only of these is an integer cast
_INTEGER_KEYWORDS = {"unsigned", "signed", "int", "long", "short", "char", "_Bool"}
# a parenthesised type starting with one of these is a cast this translator refuses
_NON_INTEGER_TYPE_WORDS = {"struct", "union", "enum", "void", "const", "volatile", "float", "double"}


class NotAnExpression(ValueError):
    """The macro body is not an integer expression this translator handles; the message says why."""


@dataclass(frozen=True)
class Token:
    """One C token: its spelling and libclang kind name (PUNCTUATION, LITERAL, IDENTIFIER, KEYWORD)."""

    spelling: str
    kind: str


def python_identifier(name: str) -> str:
    """A C identifier as a Python name (keywords get a trailing underscore)."""
    return name + "_" if keyword.iskeyword(name) else name


def integer_literal(spelling: str) -> str:
    """A C integer or character literal as Python source; raises NotAnExpression otherwise."""
    match = _INTEGER.match(spelling)
    if match:
        digits = match.group(1)
        if len(digits) > 1 and digits[0] == "0" and digits[1] not in "xXbB":
            return "0o" + digits[1:]
        return digits
    if _CHAR.match(spelling):
        try:
            text = ast.literal_eval(spelling)
        except (ValueError, SyntaxError) as exc:
            raise NotAnExpression(f"character literal {spelling} not understood: {exc}") from None
        if len(text) != 1:
            raise NotAnExpression(f"multi-character literal {spelling}")
        return str(ord(text))
    raise NotAnExpression(f"literal {spelling!r} is not an integer")


def _keyword_cast_bits(words: Sequence[str]) -> tuple[int, bool]:
    """Width and signedness of a cast spelled with C keywords (x86-64 LP64)."""
    signed = "unsigned" not in words
    if "char" in words:
        return 8, signed
    if "short" in words:
        return 16, signed
    if "long" in words:
        return 64, signed
    if "_Bool" in words:
        return 1, False
    return 32, signed


class _Parser:
    def __init__(self, tokens: Sequence[Token], params: Mapping[str, str],
                 integer_types: Mapping[str, tuple[int, bool]]) -> None:
        self.tokens = list(tokens)
        self.pos = 0
        self.params = params
        self.integer_types = integer_types

    def peek(self, ahead: int = 0) -> Token | None:
        index = self.pos + ahead
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise NotAnExpression("expression ends early")
        self.pos += 1
        return token

    def expect(self, spelling: str) -> None:
        token = self.take()
        if token.spelling != spelling:
            raise NotAnExpression(f"expected {spelling!r}, found {token.spelling!r}")

    def parse(self) -> str:
        if not self.tokens:
            raise NotAnExpression("empty body")
        result = self.conditional()
        if self.peek() is not None:
            raise NotAnExpression(f"unexpected {self.peek().spelling!r} after the expression")
        return result

    def conditional(self) -> str:
        condition = self.binary(1)
        token = self.peek()
        if token is not None and token.spelling == "?":
            self.take()
            when_true = self.conditional()
            self.expect(":")
            when_false = self.conditional()
            return f"({when_true} if {condition} else {when_false})"
        return condition

    def binary(self, min_precedence: int) -> str:
        left = self.unary()
        while True:
            token = self.peek()
            if token is None or token.kind != "PUNCTUATION":
                return left
            precedence = _BINARY_PRECEDENCE.get(token.spelling)
            if precedence is None or precedence < min_precedence:
                return left
            self.take()
            right = self.binary(precedence + 1)
            left = self.combine(token.spelling, left, right)

    @staticmethod
    def combine(operator: str, left: str, right: str) -> str:
        if operator in _SIMPLE_BINARY:
            return f"({left} {operator} {right})"
        if operator in _COMPARISONS:
            return f"int({left} {operator} {right})"
        if operator == "/":
            return f"c_div({left}, {right})"
        if operator == "%":
            return f"c_mod({left}, {right})"
        if operator == "&&":
            return f"int(bool({left}) and bool({right}))"
        return f"int(bool({left}) or bool({right}))"

    def cast_type(self) -> tuple[int, bool] | None:
        """If a parenthesised integer type name starts here, consume it and return (bits, signed)."""
        words = []
        ahead = 1
        while True:
            token = self.peek(ahead)
            if token is None:
                return None
            if token.spelling == ")":
                break
            if token.kind not in ("KEYWORD", "IDENTIFIER") and token.spelling != "*":
                return None
            words.append(token.spelling)
            ahead += 1
        if not words:
            return None
        names_a_type = words[0] in _INTEGER_KEYWORDS or (words[0] in self.integer_types
                                                         and words[0] not in self.params)
        if words[0] in _NON_INTEGER_TYPE_WORDS or ("*" in words and names_a_type):
            raise NotAnExpression(f"cast to ({' '.join(words)}) is not an integer cast")
        if "*" in words:
            return None  # a product such as (A * B)
        if all(word in _INTEGER_KEYWORDS for word in words):
            shape = _keyword_cast_bits(words)
        elif len(words) == 1 and words[0] in self.integer_types and words[0] not in self.params:
            shape = self.integer_types[words[0]]
        else:
            return None
        self.pos += ahead + 1
        return shape

    def unary(self) -> str:
        token = self.peek()
        if token is None:
            raise NotAnExpression("expression ends early")
        if token.kind == "PUNCTUATION" and token.spelling in ("-", "+", "~"):
            self.take()
            return f"({token.spelling}{self.unary()})"
        if token.kind == "PUNCTUATION" and token.spelling == "!":
            self.take()
            return f"int(not {self.unary()})"
        if token.spelling == "sizeof":
            raise NotAnExpression("uses sizeof")
        if token.spelling == "(":
            shape = self.cast_type()
            if shape is not None:
                bits, signed = shape
                operand = self.unary()
                if signed:
                    return f"c_signed({operand}, {bits})"
                return f"({operand} & {hex((1 << bits) - 1)})"
            self.take()
            inner = self.conditional()
            self.expect(")")
            return inner if _enclosed(inner) else f"({inner})"
        return self.postfix(self.primary())

    def primary(self) -> str:
        token = self.take()
        if token.kind == "LITERAL":
            return integer_literal(token.spelling)
        if token.kind == "IDENTIFIER":
            if token.spelling in self.params:
                return self.params[token.spelling]
            following = self.peek()
            if following is not None and following.spelling == "(":
                return self.call(token.spelling)
            return python_identifier(token.spelling)
        raise NotAnExpression(f"unexpected {token.spelling!r}")

    def call(self, name: str) -> str:
        self.expect("(")
        arguments = []
        token = self.peek()
        if token is not None and token.spelling == ")":
            self.take()
            return f"{python_identifier(name)}()"
        while True:
            arguments.append(self.conditional())
            token = self.take()
            if token.spelling == ")":
                break
            if token.spelling != ",":
                raise NotAnExpression(f"expected ',' or ')' in call of {name}, found {token.spelling!r}")
        return f"{python_identifier(name)}({', '.join(arguments)})"

    def postfix(self, operand: str) -> str:
        token = self.peek()
        if token is not None and token.spelling in ("[", ".", "->", "++", "--", "##", "#"):
            raise NotAnExpression(f"uses {token.spelling!r}")
        return operand


def _enclosed(text: str) -> bool:
    """Whether `text` is one parenthesised group, as in "(a + (b))" but not "(a) + (b)"."""
    if not text.startswith("(") or not text.endswith(")"):
        return False
    depth = 0
    for index, char in enumerate(text):
        depth += char == "("
        depth -= char == ")"
        if depth == 0 and index != len(text) - 1:
            return False
    return True


def translate(body: Sequence[Token], params: Sequence[str] = (),
              integer_types: Mapping[str, tuple[int, bool]] | None = None) -> str:
    """Python source for the C expression `body`; `params` are the macro's parameter names.

    `integer_types` maps typedef names to (bits, signed) so casts like `(u32)x` translate.
    """
    for token in body:
        if token.spelling in ("#", "##"):
            raise NotAnExpression("uses the preprocessor operator " + token.spelling)
        if token.kind == "LITERAL" and token.spelling.startswith(('"', "L\"", "u8\"")):
            raise NotAnExpression("uses a string literal")
    mapping = {name: python_identifier(name) for name in params}
    return _Parser(body, mapping, integer_types or {}).parse()
