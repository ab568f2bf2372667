"""The ir3 instruction-set tables (autogen.qcom.ir3_isa) as objects, and decoding one word to text.

Decoding follows the isaspec rules (Mesa src/compiler/isaspec/isaspec_decode_impl.c, read for the
facts): a value decodes to the one leaf of its type whose pattern matches; a field is looked up in
the leaf's cases (an override only while its expression holds; the default case last), then in its
parents, then, through the `<param>`s of the field that led here, in the enclosing scope; the
display template is the first case's, walking up the same way, whose expression holds. `{NAME}` is
the leaf's name. Field types print as isaspec prints them (int sign-extended to the field width,
hex without 0x, offset as %+d when non-zero, uoffset as +%u when non-zero, bool as its display when
set, enum as its value's display, branch as a label or a relative offset).
"""
from __future__ import annotations

import dataclasses
import functools
import re
import struct
from typing import Callable, Iterator

from autogen.qcom import ir3_isa
from hal.errors import BadBinary, InvalidArgument

WORD_BITS = 64
WORD_BYTES = 8


class DecodeError(BadBinary):
    """A word that no instruction form of the GPU matches, or that two match."""


class AssemblyError(InvalidArgument):
    """A line of ir3 assembly that no instruction form encodes; names the line."""


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    low: int
    high: int
    type: str
    display: str | None
    params: tuple[tuple[str, str], ...]
    expression: str | None
    kind: str  # "field", "call" (a branch to a function), "derived", "assert"
    value: int

    @property
    def width(self) -> int:
        return self.high - self.low + 1

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.low


@dataclasses.dataclass(frozen=True)
class Case:
    expression: str | None
    display: str | None
    fields: tuple[Field, ...]

    def field(self, name: str) -> Field | None:
        for field in self.fields:
            if field.name == name:
                return field
        return None


@dataclasses.dataclass(frozen=True)
class Bitset:
    name: str
    size: int
    extends: str | None
    match: int
    dontcare: int
    mask: int
    cases: tuple[Case, ...]

    def matches(self, value: int) -> bool:
        return (value & self.mask & ~self.dontcare) == self.match


@functools.cache
def bitset(name: str) -> Bitset:
    size, extends, match, dontcare, mask, cases = ir3_isa.BITSETS[name]
    return Bitset(name, size, extends, match, dontcare, mask,
                  tuple(Case(expr, display, tuple(Field(*field) for field in fields))
                        for expr, display, fields in cases))


def chain(name: str) -> Iterator[Bitset]:
    """The bitset and its parents, leaf first."""
    current: str | None = name
    while current is not None:
        found = bitset(current)
        yield found
        current = found.extends


@functools.cache
def _compiled(expression: str):
    return compile(ir3_isa.EXPRESSIONS[expression], expression, "eval")


def leaves(type_name: str) -> tuple[str, ...]:
    return ir3_isa.LEAVES.get(type_name, ())


def find_leaf(type_name: str, value: int) -> Bitset:
    """The one leaf of `type_name` whose pattern matches `value` (DecodeError otherwise)."""
    found = [bitset(name) for name in leaves(type_name) if bitset(name).matches(value)]
    if len(found) != 1:
        what = "no form" if not found else "forms " + ", ".join(leaf.name for leaf in found)
        raise DecodeError(f"{type_name}: {what} of GPU {ir3_isa.GPU_ID} matches {value:#x}")
    return found[0]


def sign_extend(value: int, width: int) -> int:
    sign = 1 << (width - 1)
    return (value & (sign - 1)) - (value & sign)


class Scope:
    """One level of decoding: a leaf bitset, its bits, and the params that link it to its parent."""

    def __init__(self, leaf: Bitset, value: int, parent: "Scope | None",
                 params: tuple[tuple[str, str], ...], position: int,
                 branch_text: Callable[[int], str] | None) -> None:
        self.leaf = leaf
        self.value = value
        self.parent = parent
        self.params = params
        self.position = position
        self.branch_text = branch_text
        # the expressions being evaluated, shared by every scope of one decode (isaspec's
        # expr_stack): while an override's expression is evaluated, fields inside it are visible
        self._expressions: list[str] = parent._expressions if parent is not None else []
        self._cache: dict[str, int] = {}

    def evaluate(self, expression: str) -> int:
        cached = self._cache.get(expression)
        if cached is not None:
            return cached
        # an expression already being evaluated (below the first) reads as 0, uncached: isaspec's
        # push_expr refuses it, which ends the cycles overrides make by reading each other's fields
        if expression in self._expressions[1:]:
            return 0
        self._expressions.append(expression)
        try:
            result = int(eval(_compiled(expression), {"F": self.field_value}))  # noqa: S307 (generated)
        finally:
            self._expressions.pop()
        self._cache[expression] = result
        return result

    def _find(self, name: str) -> Field | None:
        current = self._expressions[-1] if self._expressions else None
        for level in chain(self.leaf.name):
            for case in level.cases:
                if case.expression is not None and case.expression != current:
                    if not self.evaluate(case.expression):
                        continue
                field = case.field(name)
                if field is not None:
                    return field
        return None

    def resolve(self, name: str) -> tuple[Field, int, "Scope"]:
        field = self._find(name)
        if field is None:
            for parent_name, alias in self.params:
                if alias == name and self.parent is not None:
                    return self.parent.resolve(parent_name)
            raise DecodeError(f"{self.leaf.name}: no field {name!r}")
        if field.kind == "derived":
            return field, self.evaluate(field.expression or ""), self
        return field, (self.value >> field.low) & ((1 << field.width) - 1), self

    def field_value(self, name: str) -> int:
        return self.resolve(name)[1]

    def display_template(self) -> str:
        for level in chain(self.leaf.name):
            for case in level.cases:
                if case.expression is not None and not self.evaluate(case.expression):
                    continue
                if case.display is not None:
                    return case.display
        raise DecodeError(f"{self.leaf.name}: no display template")

    def render(self) -> str:
        template = self.display_template()
        return re.sub(r"\{([^}]*)\}", lambda match: self.render_field(match.group(1)), template)

    def render_field(self, reference: str) -> str:
        name = reference.split(":align=")[0]
        if not name:
            return " "
        if name == "NAME":
            return self.leaf.name
        field, value, owner = self.resolve(name)
        return render_value(field, value, owner)


def render_value(field: Field, value: int, scope: Scope) -> str:
    kind = field.type
    width = field.width
    if kind in ("branch", "absbranch"):
        target = sign_extend(value, width) + scope.position if kind == "branch" else value
        if scope.branch_text is not None:
            text = scope.branch_text(target)
            if text:
                return text
        return str(sign_extend(value, width))
    if kind == "int":
        return str(sign_extend(value, width))
    if kind == "uint":
        return str(value)
    if kind == "hex":
        return f"{value:x}"
    if kind == "offset":
        return f"{sign_extend(value, width):+d}" if value else ""
    if kind == "uoffset":
        return f"+{value}" if value else ""
    if kind == "float":
        return f"{half_or_single(value, width):f}"
    if kind == "bool":
        if field.display is not None:
            return field.display if value else ""
        return str(value)
    if kind == "bool_inv":
        if field.display is not None:
            return "" if value else field.display
        return str(int(not value))
    if kind in ir3_isa.ENUMS:
        return ir3_isa.ENUMS[kind].get(value, str(value))
    if kind in ir3_isa.LEAVES:
        leaf = find_leaf(kind, value)
        nested = Scope(leaf, value, scope, field.params, scope.position, scope.branch_text)
        return nested.render()
    raise DecodeError(f"field {field.name}: type {kind!r} is not one the decoder knows")


def half_or_single(value: int, width: int) -> float:
    if width == 16:
        return struct.unpack("<e", value.to_bytes(2, "little"))[0]
    return struct.unpack("<f", value.to_bytes(4, "little"))[0]


def decode(word: int, position: int = 0) -> Scope:
    """The decoded instruction: `.leaf.name` is its form (`add.s`, `ldg.a`, `end`), `.field_value(NAME)`
    any field as the decoder resolves it (derived ones computed), `.render()` its text."""
    return Scope(find_leaf(ir3_isa.ROOT, word), word, None, (), position, None)


def decode_word(word: int, position: int = 0,
                branch_text: Callable[[int], str] | None = None) -> str:
    """One instruction word as text (Mesa's disassembler syntax)."""
    leaf = find_leaf(ir3_isa.ROOT, word)
    return Scope(leaf, word, None, (), position, branch_text).render()


def normalise(text: str) -> str:
    """One space between words, none at the ends: how text is compared."""
    return " ".join(text.split())
