"""ir3 assembler: text in Mesa's disassembler syntax to 64-bit instruction words, through the tables
generated from Mesa's ISA description (autogen.qcom.ir3_isa); no bit position is written here.

How a line is encoded: each instruction form's display templates (its override cases and default,
then its parents') are matched against the line, field by field: an enum by its value's display, a
bool by its display text, numbers by their type, a field whose type is another bitset hierarchy
(a register, a source with its modifiers) by matching that hierarchy's own templates in turn. The
matched fields, the form's pattern bits and the chosen case's asserted bits make a candidate word;
the fields Mesa's encoder always sets (FORCED) are set; bits that the template does not show (a
precision flag a derived `h` implies, a nop count split over two bits) are searched, fewest set bits
first. A candidate is accepted only when decoding it gives back the line, so every word the
assembler writes disassembles to the text it was given.

Labels: `name:` on its own line names the next instruction; a branch operand may name a label (the
disassembler writes `lN`). Directives (the syntax of Mesa's computerator, src/freedreno/computerator):
`@localsize X, Y, Z`, `@buf SIZE (cN.x)` (a buffer whose 64-bit address is uploaded to cN.xy),
`@const(cN.x) a, b, c, d`, `@invocationid(rN.x)`, `@wgid(rN.x)`, `@numwg(cN.x)`, and ours:
`@localmem BYTES` (local memory the work group uses). `;` starts a comment.
"""
from __future__ import annotations

import dataclasses
import itertools
import re
import struct
from typing import Iterator

from autogen.qcom import ir3_isa
from drivers.qcom.ir3.isa import (WORD_BITS, WORD_BYTES, AssemblyError, Bitset, Case, DecodeError,
                                  Field, bitset, chain, decode_word, leaves, normalise)

# registers r48 and up are shared by every thread of a wave and exist without being allocated;
# they do not count in the footprint (Mesa src/freedreno/ir3/ir3.c collect_reg_info, ir3.h
# SHARED_REG_START = GPR_REG_SIZE = 4 * 48)
FIRST_SHARED_GPR = 48
COMPONENTS = "xyzw"
_HIDDEN_MAX_SET_BITS = 3
_NUMBER = {
    "uint": re.compile(r"\d+"),
    "int": re.compile(r"-?\d+"),
    "hex": re.compile(r"[0-9a-fA-F]+"),
    "offset": re.compile(r"[+-]\d+"),
    "uoffset": re.compile(r"\+\d+"),
    "float": re.compile(r"-?\d+\.\d+"),
}
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_BRANCH_NUMBER = re.compile(r"-?\d+")


@dataclasses.dataclass
class Buffer:
    """A buffer the kernel reads or writes: its size in bytes and the const vec4 holding its address."""
    size: int
    const: int  # const register index (cN.xy holds the 64-bit GPU address)


@dataclasses.dataclass
class Program:
    """An assembled kernel: its code and what the launcher must set up for it."""
    words: list[int]
    local_size: tuple[int, int, int] = (1, 1, 1)
    buffers: list[Buffer] = dataclasses.field(default_factory=list)
    consts: dict[int, tuple[float | int, ...]] = dataclasses.field(default_factory=dict)
    invocation_id_reg: int | None = None  # regid (4 * N + component) of rN.c, or None
    workgroup_id_reg: int | None = None
    num_workgroups_const: int | None = None  # regid of cN.c
    max_reg: int = -1  # highest full GPR rN used below r48 (-1: none)
    max_half_reg: int = -1  # highest half GPR hrN used
    max_const: int = -1  # highest const vec4 cN read
    local_memory: int = 0  # bytes of local (shared) memory the work group uses (@localmem)
    labels: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def code(self) -> bytes:
        return b"".join(word.to_bytes(WORD_BYTES, "little") for word in self.words)

    @property
    def instruction_count(self) -> int:
        return len(self.words)

    @property
    def const_vec4_count(self) -> int:
        """Const vec4s the program uses: instructions, buffers, constants and numwg."""
        used = [self.max_const, *(buffer.const for buffer in self.buffers), *self.consts]
        if self.num_workgroups_const is not None:
            used.append(self.num_workgroups_const >> 2)
        return max(used) + 1


# ---- template matching -------------------------------------------------------------------------

def _tokens(template: str) -> list[tuple[str, str]]:
    parts = []
    for index, piece in enumerate(re.split(r"\{([^}]*)\}", template)):
        if index % 2:
            parts.append(("field", piece.split(":align=")[0]))
        elif piece:
            parts.append(("text", piece))
    return parts


@dataclasses.dataclass(frozen=True)
class Form:
    """One way to write a leaf: a display template and the case it belongs to."""
    leaf: Bitset
    level: str
    case: Case
    tokens: tuple[tuple[str, str], ...]


def forms(leaf_name: str) -> list[Form]:
    found = []
    for level in chain(leaf_name):
        for case in level.cases:
            if case.display is not None:
                found.append(Form(bitset(leaf_name), level.name, case, tuple(_tokens(case.display))))
    return found


_FORMS: dict[str, list[Form]] = {}


def _forms_of(leaf_name: str) -> list[Form]:
    cached = _FORMS.get(leaf_name)
    if cached is None:
        cached = forms(leaf_name)
        _FORMS[leaf_name] = cached
    return cached


def _lookup(form: Form, name: str) -> Field | None:
    """The field `name` as the form sees it: its own case, then each level's default case."""
    for level in chain(form.leaf.name):
        cases = [case for case in level.cases if case.expression is None]
        if level.name == form.level and form.case.expression is not None:
            cases.insert(0, form.case)
        for case in cases:
            field = case.field(name)
            if field is not None:
                return field
    return None


@dataclasses.dataclass
class Match:
    position: int
    fields: dict[str, int]  # field name -> value (in this leaf's bits)
    outer: dict[str, int]  # values for fields of the enclosing scope (through params)
    shown: dict[str, int]  # derived fields as the text shows them (checked by decoding)


class Context:
    def __init__(self, text: str, position: int, labels: dict[str, int]) -> None:
        self.text = text
        self.position = position
        self.labels = labels


def _skip_spaces(text: str, position: int) -> int:
    while position < len(text) and text[position] == " ":
        position += 1
    return position


def _match_text(literal: str, text: str, position: int) -> int | None:
    for char in literal:
        if char == " ":
            position = _skip_spaces(text, position)
            continue
        if position >= len(text) or text[position] != char:
            return None
        position += 1
    return position


def _float_bits(text: str, width: int) -> int:
    value = float(text)
    if width == 16:
        return int.from_bytes(struct.pack("<e", value), "little")
    return int.from_bytes(struct.pack("<f", value), "little")


def _values(field: Field, context: Context, text: str, position: int) -> Iterator[tuple[int, int]]:
    """(new position, field value) for each way `field` can be read at `position`."""
    kind = field.type
    # a derived field has a width only when it is signed; its value is checked by decoding
    width = field.width if field.kind != "derived" or field.type == "int" else WORD_BITS
    limit = (1 << width) - 1
    if kind in ("bool", "bool_inv"):
        shown, hidden = (1, 0) if kind == "bool" else (0, 1)
        if field.display is not None:
            if field.display and text.startswith(field.display, position):
                yield position + len(field.display), shown
            yield position, hidden
            return
        if position < len(text) and text[position] in "01":
            digit = int(text[position])
            yield position + 1, digit if kind == "bool" else 1 - digit
        return
    if kind in ir3_isa.ENUMS:
        values = sorted(ir3_isa.ENUMS[kind].items(), key=lambda item: -len(item[1]))
        for value, display in values:
            if text.startswith(display, position):
                yield position + len(display), value
        number = _NUMBER["uint"].match(text, position)
        if number and int(number.group()) <= limit:
            yield number.end(), int(number.group())
        return
    if kind in ("branch", "absbranch"):
        label = _LABEL.match(text, position)
        if label and label.group() in context.labels:
            target = context.labels[label.group()]
            offset = target - context.position if kind == "branch" else target
            yield label.end(), offset & limit
        number = _BRANCH_NUMBER.match(text, position)
        if number:
            yield number.end(), int(number.group()) & limit
        return
    if kind in ("offset", "uoffset"):
        number = _NUMBER[kind].match(text, position)
        if number:
            yield number.end(), int(number.group()) & limit
        yield position, 0
        return
    if kind == "float":
        number = _NUMBER["float"].match(text, position)
        if number:
            yield number.end(), _float_bits(number.group(), width)
        return
    if kind in _NUMBER:
        number = _NUMBER[kind].match(text, position)
        if number:
            value = int(number.group(), 16 if kind == "hex" else 10)
            if kind == "int" and not -(1 << (width - 1)) <= value <= limit:
                return
            if kind != "int" and value > limit:
                return
            yield number.end(), value & limit
        return


def _match_form(form: Form, context: Context, text: str, position: int, index: int,
                fields: dict[str, int], outer: dict[str, int], shown: dict[str, int],
                params: tuple[tuple[str, str], ...], parent: Form | None = None) -> Iterator[Match]:
    if index == len(form.tokens):
        yield Match(position, dict(fields), dict(outer), dict(shown))
        return
    kind, value = form.tokens[index]
    if kind == "text":
        after = _match_text(value, text, position)
        if after is not None:
            yield from _match_form(form, context, text, after, index + 1, fields, outer, shown, params,
                                   parent)
        return
    if value == "NAME":
        after = _match_text(form.leaf.name, text, position)
        if after is not None:
            yield from _match_form(form, context, text, after, index + 1, fields, outer, shown, params,
                                   parent)
        return
    if not value:
        yield from _match_form(form, context, text, position, index + 1, fields, outer, shown, params,
                               parent)
        return
    field = _lookup(form, value)
    target = fields
    name = value
    if field is None:
        # a param: the field lives in the enclosing scope under the param's name
        aliases = {alias: parent for parent, alias in params}
        if value not in aliases:
            return
        field = _lookup(parent, aliases[value]) if parent is not None else None
        if field is None:
            return
        target = outer
        name = aliases[value]
    if field.kind == "derived":
        target = shown
    for after, found, updates in _field_values(field, context, text, position, form):
        if name in target and target[name] != found:
            continue
        merged = _merge(form, params, updates, fields, outer, shown)
        if merged is None:
            continue
        added = [(target, name)] if name not in target else []
        target[name] = found
        yield from _match_form(form, context, text, after, index + 1, fields, outer, shown, params,
                                   parent)
        for where, key in added + merged:
            del where[key]


def _merge(form: Form, params: tuple[tuple[str, str], ...], updates: dict[str, int],
           fields: dict[str, int], outer: dict[str, int],
           shown: dict[str, int]) -> list[tuple[dict[str, int], str]] | None:
    """Put a nested field's param values where they belong in this scope; None on a conflict.
    Returns the entries added (to take out again when backtracking)."""
    added: list[tuple[dict[str, int], str]] = []
    aliases = {alias: parent for parent, alias in params}
    for name, value in updates.items():
        field = _lookup(form, name)
        if field is not None:
            where = shown if field.kind == "derived" else fields
        elif name in aliases:
            where = outer
            name = aliases[name]
        else:
            continue
        if name in where:
            if where[name] != value:
                for added_where, key in added:
                    del added_where[key]
                return None
            continue
        where[name] = value
        added.append((where, name))
    return added


def _field_values(field: Field, context: Context, text: str, position: int,
                  form: Form) -> Iterator[tuple[int, int, dict[str, int]]]:
    if field.type in ir3_isa.LEAVES and field.type not in ir3_isa.ENUMS:
        yield from _sub_values(field, context, text, position, form)
        return
    if field.kind == "derived" and field.type == "bool" and field.display is None:
        yield position, 0, {}
        return
    for after, value in _values(field, context, text, position):
        yield after, value, {}


def _sub_values(field: Field, context: Context, text: str, position: int,
                parent: Form) -> Iterator[tuple[int, int, dict[str, int]]]:
    """Values of a field decoded by another bitset hierarchy, with the values its text gives to
    fields of this scope through the field's params (decoding the whole word checks the rest)."""
    for leaf_name in leaves(field.type):
        for form in _forms_of(leaf_name):
            for match in _match_form(form, context, text, position, 0, {}, {}, {}, field.params,
                                     parent):
                for value in _candidate_words(form, match.fields, match.shown):
                    yield match.position, value, match.outer


# derived values the text shows, computed from fields by these expression shapes (as the generated
# EXPRESSIONS write them), give those fields back: a value split over two fields, a count minus one
_SPLIT = re.compile(r'^\(F\("(\w+)"\) (?:<< (\d+)|\* 2)\) \| F\("(\w+)"\)$')
_SPLIT_LOW_FIRST = re.compile(r'^F\("(\w+)"\) \| \(F\("(\w+)"\) << (\d+)\)$')
_PLUS = re.compile(r'^F\("(\w+)"\) \+ (\d+)$')
_POWER = re.compile(r'^2 << F\("(\w+)"\)$')
_TIMES = re.compile(r'^\(F\("(\w+)"\) \+ 1\) \* (\d+)$')


def _inverted(form: Form, shown: dict[str, int]) -> dict[str, int]:
    """Field values that make each shown derived value, where its expression has a known shape."""
    found: dict[str, int] = {}
    for name, value in shown.items():
        field = _lookup(form, name)
        if field is None or field.expression is None:
            continue
        expression = ir3_isa.EXPRESSIONS.get(field.expression, "")
        split = _SPLIT.match(expression)
        low_first = _SPLIT_LOW_FIRST.match(expression)
        plus = _PLUS.match(expression)
        power = _POWER.match(expression)
        times = _TIMES.match(expression)
        if split:
            shift = int(split.group(2) or 1)
            found[split.group(1)] = value >> shift
            found[split.group(3)] = value & ((1 << shift) - 1)
        elif low_first:
            shift = int(low_first.group(3))
            found[low_first.group(1)] = value & ((1 << shift) - 1)
            found[low_first.group(2)] = value >> shift
        elif plus:
            found[plus.group(1)] = value - int(plus.group(2))
        elif power and value >= 2 and value & (value - 1) == 0:
            found[power.group(1)] = value.bit_length() - 2
        elif times and value % int(times.group(2)) == 0:
            found[times.group(1)] = value // int(times.group(2)) - 1
    return found


def _candidate_words(form: Form, values: dict[str, int],
                     shown: dict[str, int] | None = None) -> Iterator[int]:
    """Words for `form` with `values` in their fields, then the unshown bits searched."""
    if shown:
        values = {**_inverted(form, shown), **values}
    for level in chain(form.leaf.name):
        for name, value in ir3_isa.FORCED.get(level.name, {}).items():
            values.setdefault(name, value)
    leaf = form.leaf
    word = leaf.match
    used = leaf.mask
    for name, value in values.items():
        field = _lookup(form, name)
        if field is None or field.kind not in ("field", "call"):
            continue
        mask = field.mask
        if used & mask:
            continue
        word |= (value << field.low) & mask
        used |= mask
    for field in form.case.fields:
        if field.kind == "assert":
            word = (word & ~field.mask) | (field.value << field.low)
            used |= field.mask
    free = ((1 << leaf.size) - 1) & ~used & ~leaf.dontcare
    free_bits = [bit for bit in range(leaf.size) if free >> bit & 1]
    yield from _spread(word, free_bits)


def _spread(word: int, free_bits: list[int]) -> Iterator[int]:
    for count in range(min(_HIDDEN_MAX_SET_BITS, len(free_bits)) + 1):
        for chosen in itertools.combinations(free_bits, count):
            value = word
            for bit in chosen:
                value |= 1 << bit
            yield value


def encode_line(line: str, position: int = 0, labels: dict[str, int] | None = None) -> int:
    """One instruction's text to its word (AssemblyError when no form encodes it exactly)."""
    text = normalise(line)
    labels = labels or {}
    context = Context(text, position, labels)
    names_at = {}
    for name, target in labels.items():
        names_at.setdefault(target, name)
    referenced = {label.group() for label in _LABEL.finditer(text) if label.group() in labels}

    def branch_text(target: int) -> str:
        for name in referenced:
            if labels[name] == target:
                return name
        return f"l{target}" if target in names_at else ""

    for leaf_name in leaves(ir3_isa.ROOT):
        for form in _forms_of(leaf_name):
            for match in _match_form(form, context, text, 0, 0, {}, {}, {}, ()):
                if match.position != len(text):
                    continue
                for word in _candidate_words(form, match.fields, match.shown):
                    try:
                        decoded = decode_word(word, position, branch_text)
                    except DecodeError:
                        continue
                    if normalise(decoded) == text:
                        return word
    raise AssemblyError(f"no ir3 instruction form of GPU {ir3_isa.GPU_ID} encodes {line.strip()!r}")


# ---- programs ----------------------------------------------------------------------------------

_DIRECTIVE = re.compile(r"@(\w+)\s*(?:\(([^)]*)\))?\s*(.*)$")
_REGISTER = re.compile(r"^(h?)([rc])(\d+)\.([xyzw])$")


def regid(text: str, line_number: int) -> int:
    """`r3.y` -> 4 * 3 + 1 (Mesa's regid: register * 4 + component)."""
    match = _REGISTER.match(text.strip())
    if match is None:
        raise AssemblyError(f"line {line_number}: {text.strip()!r} is not a register such as r0.x")
    return int(match.group(3)) * 4 + COMPONENTS.index(match.group(4))


def _directive(program: Program, line: str, line_number: int) -> None:
    match = _DIRECTIVE.match(line)
    if match is None:
        raise AssemblyError(f"line {line_number}: cannot read directive {line!r}")
    name, argument, rest = match.group(1), match.group(2), match.group(3).strip()
    try:
        if name == "localsize":
            sizes = tuple(int(part) for part in rest.split(","))
            if len(sizes) != 3 or min(sizes) < 1:
                raise ValueError("three sizes of at least 1")
            program.local_size = sizes  # type: ignore[assignment]
        elif name == "buf":
            size_text, _, where = rest.partition("(")
            if not where:
                raise ValueError("@buf SIZE (cN.x)")
            program.buffers.append(Buffer(int(size_text, 0), regid(where.rstrip(")"), line_number) >> 2))
        elif name == "const":
            values = tuple(float(part) if "." in part else int(part, 0) for part in rest.split(","))
            program.consts[regid(argument or "", line_number) >> 2] = values
        elif name == "invocationid":
            program.invocation_id_reg = regid(argument or "", line_number)
        elif name == "wgid":
            program.workgroup_id_reg = regid(argument or "", line_number)
        elif name == "localmem":
            program.local_memory = int(rest, 0)
        elif name == "numwg":
            program.num_workgroups_const = regid(argument or "", line_number)
        else:
            raise ValueError("known directives: @localsize, @buf, @const, @invocationid, @wgid, @numwg, "
                             "@localmem")
    except ValueError as exc:
        raise AssemblyError(f"line {line_number}: {line!r}: {exc}") from None


def _footprint(program: Program, texts: list[str]) -> None:
    """Highest full/half GPR and const vec4 the instructions name; an (rptN) instruction may step
    each operand up to N components further (counted in full)."""
    extra_regs = [program.invocation_id_reg, program.workgroup_id_reg]
    for reg in extra_regs:
        if reg is not None and reg >> 2 < FIRST_SHARED_GPR:
            program.max_reg = max(program.max_reg, reg >> 2)
    for text in texts:
        repeat = re.search(r"\(rpt(\d)\)", text)
        steps = int(repeat.group(1)) if repeat else 0
        for half, kind, number, component in re.findall(r"(?<![\w<])(h?)([rc])(\d+)\.([xyzw])", text):
            last = int(number) * 4 + COMPONENTS.index(component) + steps
            if kind == "c":
                program.max_const = max(program.max_const, last >> 2)
            elif last >> 2 >= FIRST_SHARED_GPR:
                continue
            elif half:
                program.max_half_reg = max(program.max_half_reg, last >> 2)
            else:
                program.max_reg = max(program.max_reg, last >> 2)


def assemble_program(text: str) -> Program:
    """Assemble a kernel (directives, labels, instructions) into a Program."""
    program = Program(words=[])
    instructions: list[tuple[int, str]] = []
    for line_number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("@"):
            _directive(program, line, line_number)
            continue
        label = re.match(r"^([A-Za-z_][A-Za-z0-9_.]*):\s*(.*)$", line)
        if label:
            if label.group(1) in program.labels:
                raise AssemblyError(f"line {line_number}: label {label.group(1)} defined twice")
            program.labels[label.group(1)] = len(instructions)
            line = label.group(2).strip()
            if not line:
                continue
        instructions.append((line_number, line))
    texts = []
    for position, (line_number, line) in enumerate(instructions):
        try:
            program.words.append(encode_line(line, position, program.labels))
        except AssemblyError as exc:
            raise AssemblyError(f"line {line_number}: {exc}") from None
        texts.append(line)
    _footprint(program, texts)
    return program


def assemble(text: str) -> bytes:
    """Assemble ir3 text to little-endian instruction bytes (see assemble_program for the footprint)."""
    return assemble_program(text).code
