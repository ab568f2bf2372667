"""PTX text to a module of kernels: the front half of the mock GPU's PTX interpreter.

`parse_module(text)` reads the subset of PTX that nvcc emits for plain kernels (PTX ISA, chapter 5
"State Spaces, Types, and Variables", chapter 7 "Abstracting the ABI" for .entry/.param, chapter 9
"Instruction Set" for the statement syntax, chapter 11 "Directives"): the module header (.version,
.target, .address_size), module-scope variables (.global, .shared, .const, `.extern .shared` for
dynamic shared memory), and `.entry` functions with their parameters, performance directives
(.maxntid, .reqntid, ...), register declarations (`.reg .b32 %r<9>;`), function-scope .shared and
.local variables, labels and instructions `[@[!]%p] opcode.mod.mod operands;`. Nested `{ }` blocks
are flattened. `.func` device functions are recorded by name only: calling them is unsupported.

Syntax errors are PTXSyntaxError (a BadBinary) naming the line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from hal.errors import BadBinary

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"[^"\n]*")
  | (?P<float32>0[fF][0-9a-fA-F]{8})
  | (?P<float64>0[dD][0-9a-fA-F]{16})
  | (?P<hex>0[xX][0-9a-fA-F]+U?|0[bB][01]+U?)
  | (?P<decimal>\d+\.\d*(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+)
  | (?P<integer>\d+U?)
  | (?P<directive>\.[A-Za-z_][\w]*)
  | (?P<name>[A-Za-z_$%][\w$]*(?:\.[\w$]+(?:::[\w$]+)*)*)
  | (?P<punct>[{}()\[\],;:+\-<>|!@=])
""", re.VERBOSE)

# PTX ISA 5.2 "Types": the fundamental types and their sizes in bits.
TYPE_BITS = {
    "pred": 1,
    "b8": 8, "b16": 16, "b32": 32, "b64": 64, "b128": 128,
    "u8": 8, "u16": 16, "u32": 32, "u64": 64,
    "s8": 8, "s16": 16, "s32": 32, "s64": 64,
    "f16": 16, "f16x2": 32, "bf16": 16, "bf16x2": 32, "f32": 32, "f64": 64,
}
STATE_SPACES = ("reg", "sreg", "const", "global", "local", "param", "shared", "tex")
# PTX ISA 11.4 "Performance-Tuning Directives" (and 11.5 cluster directives): recorded, not enforced.
_PERFORMANCE = {".maxntid", ".reqntid", ".minnctapersm", ".maxnctapersm", ".maxnreg",
                ".maxclusterrank", ".reqnctapercluster", ".explicitcluster", ".noreturn", ".pragma",
                ".blocksareclusters"}


class PTXSyntaxError(BadBinary):
    """PTX text the parser cannot read; the message names the line."""


def integer_value(token: Token) -> int:
    """An integer constant (PTX ISA 4.5.1): hexadecimal 0x.., binary 0b.., octal 0.., decimal; an
    optional U suffix."""
    text = token.text.rstrip("U")
    try:
        if text[:2] in ("0x", "0X"):
            return int(text[2:], 16)
        if text[:2] in ("0b", "0B"):
            return int(text[2:], 2)
        if len(text) > 1 and text[0] == "0":
            return int(text[1:], 8)
        return int(text, 10)
    except ValueError:
        raise PTXSyntaxError(f"PTX line {token.line}: {token.text!r} is not an integer constant") from None


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    line: int


# Operands --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Register:
    name: str


@dataclass(frozen=True)
class Immediate:
    """An integer, or the bits of a float (`0f...`/`0d...`, or a decimal with a point) with `float_bits`."""

    value: int | float
    float_bits: int = 0


@dataclass(frozen=True)
class Symbol:
    """A label, variable or parameter name, optionally plus a byte offset; `a[i]` (PTX ISA 6.4.3,
    "Arrays as Operands": the address of element i) has `index` i."""

    name: str
    offset: int = 0
    index: int | None = None


@dataclass(frozen=True)
class Address:
    """`[base+offset]`: base is a Register, a Symbol or None (an absolute address)."""

    base: Register | Symbol | None
    offset: int


@dataclass(frozen=True)
class Vector:
    elements: tuple[object, ...]


@dataclass(frozen=True)
class Negated:
    """`!%p` as an operand (setp/selp predicate inputs)."""

    operand: object


@dataclass(frozen=True)
class PredicatePair:
    """`%p|%q`: the two destinations of setp."""

    first: Register
    second: Register


# Statements ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Instruction:
    opcode: str
    modifiers: tuple[str, ...]
    operands: tuple[object, ...]
    guard: Register | None
    guard_negated: bool
    line: int
    text: str


@dataclass(frozen=True)
class Variable:
    """A .shared/.local/.global/.const variable: `size` bytes (0 for `.extern` unsized arrays)."""

    name: str
    space: str
    type: str
    align: int
    size: int
    extern: bool
    line: int


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    align: int
    size: int


@dataclass
class Function:
    name: str
    kind: str
    params: list[Param] = field(default_factory=list)
    registers: dict[str, str] = field(default_factory=dict)
    register_prefixes: dict[str, tuple[str, int]] = field(default_factory=dict)
    variables: list[Variable] = field(default_factory=list)
    instructions: list[Instruction] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    directives: dict[str, tuple[int, ...]] = field(default_factory=dict)
    line: int = 0

    def register_type(self, name: str) -> str | None:
        """The declared type of register `name` (`%r5` declared by `.reg .b32 %r<9>`), or None."""
        declared = self.registers.get(name)
        if declared is not None:
            return declared
        match = re.fullmatch(r"(%?[A-Za-z_$][\w$]*?)(\d+)", name)
        if match is None:
            return None
        prefix = self.register_prefixes.get(match.group(1))
        if prefix is None or int(match.group(2)) >= prefix[1]:
            return None
        return prefix[0]


@dataclass
class Module:
    version: str = ""
    target: tuple[str, ...] = ()
    address_size: int = 64
    variables: list[Variable] = field(default_factory=list)
    functions: dict[str, Function] = field(default_factory=dict)


def tokenize(text: str) -> list[Token]:
    """Split PTX into tokens with line numbers; comments (// and /* */) are dropped."""
    tokens = []
    position = 0
    line = 1
    length = len(text)
    while position < length:
        if text.startswith("//", position):
            end = text.find("\n", position)
            position = length if end < 0 else end
            continue
        if text.startswith("/*", position):
            end = text.find("*/", position + 2)
            if end < 0:
                raise PTXSyntaxError(f"PTX line {line}: comment never closed")
            line += text.count("\n", position, end)
            position = end + 2
            continue
        match = _TOKEN.match(text, position)
        if match is None:
            raise PTXSyntaxError(f"PTX line {line}: unexpected character {text[position]!r}")
        kind = match.lastgroup or ""
        value = match.group()
        if kind != "space":
            tokens.append(Token(kind, value, line))
        line += value.count("\n")
        position = match.end()
    return tokens


class _Reader:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.index = 0

    def peek(self, ahead: int = 0) -> Token | None:
        index = self.index + ahead
        return self.tokens[index] if index < len(self.tokens) else None

    def line(self) -> int:
        token = self.peek()
        if token is not None:
            return token.line
        return self.tokens[-1].line if self.tokens else 0

    def next(self, what: str = "a token") -> Token:
        token = self.peek()
        if token is None:
            raise PTXSyntaxError(f"PTX line {self.line()}: text ends where {what} was expected")
        self.index += 1
        return token

    def expect(self, text: str) -> Token:
        token = self.next(repr(text))
        if token.text != text:
            raise PTXSyntaxError(f"PTX line {token.line}: expected {text!r}, found {token.text!r}")
        return token

    def accept(self, text: str) -> bool:
        token = self.peek()
        if token is not None and token.text == text:
            self.index += 1
            return True
        return False

    def integer(self) -> int:
        negative = self.accept("-")
        token = self.next("a number")
        if token.kind not in ("integer", "hex"):
            raise PTXSyntaxError(f"PTX line {token.line}: expected an integer, found {token.text!r}")
        value = integer_value(token)
        return -value if negative else value


def parse_module(text: str) -> Module:
    """Parse a PTX module (see the module docstring for the subset)."""
    reader = _Reader(tokenize(text))
    module = Module()
    while reader.peek() is not None:
        token = reader.next()
        if token.text == ".version":
            module.version = reader.next("a version").text
        elif token.text == ".target":
            targets = [reader.next("a target").text]
            while reader.accept(","):
                targets.append(reader.next("a target").text)
            module.target = tuple(targets)
        elif token.text == ".address_size":
            module.address_size = reader.integer()
            if module.address_size != 64:
                raise PTXSyntaxError(f"PTX line {token.line}: .address_size {module.address_size}: "
                                     f"only 64-bit addressing is supported")
        elif token.text in (".visible", ".extern", ".weak", ".entry", ".func", ".global", ".shared",
                            ".const", ".local"):
            _parse_module_item(reader, token, module)
        elif token.text == ".file":
            _skip_line(reader, token.line)
        elif token.text == ".section":
            _skip_statement(reader)
        else:
            raise PTXSyntaxError(f"PTX line {token.line}: unexpected {token.text!r} at module scope")
    return module


def _skip_line(reader: _Reader, line: int) -> None:
    """Skip the rest of a directive that ends with its line (.file, .loc: debug information)."""
    while reader.peek() is not None and reader.peek().line == line:
        reader.next()


def _skip_statement(reader: _Reader) -> None:
    """Skip a `.section name { ... }` block of debug information."""
    depth = 0
    while True:
        token = reader.next("the end of a .section")
        if token.text == "{":
            depth += 1
        elif token.text == "}":
            depth -= 1
            if depth == 0:
                return


def _parse_module_item(reader: _Reader, first: Token, module: Module) -> None:
    linkage = []
    token = first
    while token.text in (".visible", ".extern", ".weak"):
        linkage.append(token.text)
        token = reader.next("a declaration")
    if token.text in (".entry", ".func"):
        function = _parse_function(reader, token)
        module.functions[function.name] = function
        return
    if token.text not in (".global", ".shared", ".const", ".local"):
        raise PTXSyntaxError(f"PTX line {token.line}: unexpected {token.text!r} after {linkage}")
    variable = _parse_variable(reader, token.text[1:], ".extern" in linkage, token.line)
    module.variables.append(variable)


def _parse_variable(reader: _Reader, space: str, extern: bool, line: int) -> Variable:
    """After the state space: `[.align N] .type name[N]... [= {...}];`."""
    align = 0
    var_type = ""
    while True:
        token = reader.next("a variable declaration")
        if token.text == ".align":
            align = reader.integer()
        elif token.kind == "directive" and token.text[1:] in TYPE_BITS:
            var_type = token.text[1:]
        elif token.kind == "directive":
            continue
        else:
            break
    if not var_type or token.kind != "name":
        raise PTXSyntaxError(f"PTX line {token.line}: malformed {space} variable declaration")
    element = max(TYPE_BITS[var_type] // 8, 1)
    count = 1
    unsized = False
    while reader.accept("["):
        if reader.accept("]"):
            unsized = True
            continue
        count *= reader.integer()
        reader.expect("]")
    if reader.accept("="):
        _skip_initializer(reader)
    reader.expect(";")
    size = 0 if unsized else element * count
    return Variable(name=token.text, space=space, type=var_type, align=align or element, size=size,
                    extern=extern or unsized, line=line)


def _skip_initializer(reader: _Reader) -> None:
    depth = 0
    while True:
        token = reader.peek()
        if token is None:
            raise PTXSyntaxError(f"PTX line {reader.line()}: initializer never ends")
        if token.text == ";" and depth == 0:
            return
        reader.next()
        if token.text == "{":
            depth += 1
        elif token.text == "}":
            depth -= 1


def _parse_function(reader: _Reader, kind_token: Token) -> Function:
    if kind_token.text == ".func" and reader.peek() is not None and reader.peek().text == "(":
        _parse_params(reader)  # return value parameters
    name = reader.next("a function name")
    if name.kind != "name":
        raise PTXSyntaxError(f"PTX line {name.line}: expected a function name, found {name.text!r}")
    function = Function(name=name.text, kind=kind_token.text[1:], line=kind_token.line)
    if reader.peek() is not None and reader.peek().text == "(":
        function.params = _parse_params(reader)
    while True:
        token = reader.peek()
        if token is None:
            raise PTXSyntaxError(f"PTX line {reader.line()}: function {function.name} has no body")
        if token.text == ";":
            reader.next()
            return function
        if token.text == "{":
            break
        if token.text not in _PERFORMANCE:
            raise PTXSyntaxError(f"PTX line {token.line}: unexpected {token.text!r} before the body of "
                                 f"{function.name}")
        reader.next()
        values = []
        while reader.peek() is not None and reader.peek().kind in ("integer", "hex", "string"):
            item = reader.next()
            if item.kind != "string":
                values.append(integer_value(item))
            if not reader.accept(","):
                break
        reader.accept(";")
        function.directives[token.text[1:]] = tuple(values)
    reader.expect("{")
    _parse_body(reader, function)
    return function


def _parse_params(reader: _Reader) -> list[Param]:
    reader.expect("(")
    params: list[Param] = []
    if reader.accept(")"):
        return params
    while True:
        space = reader.next("a parameter")
        if space.text != ".param":
            raise PTXSyntaxError(f"PTX line {space.line}: expected .param, found {space.text!r}")
        align = 0
        param_type = ""
        token = reader.next("a parameter declaration")
        while token.kind == "directive":
            if token.text == ".align":
                align = reader.integer()
            elif token.text[1:] in TYPE_BITS:
                param_type = token.text[1:]
            elif token.text != ".ptr" and not token.text.startswith((".global", ".shared", ".const",
                                                                     ".local")):
                raise PTXSyntaxError(f"PTX line {token.line}: unexpected {token.text!r} in a parameter")
            token = reader.next("a parameter name")
        if token.kind != "name" or not param_type:
            raise PTXSyntaxError(f"PTX line {token.line}: malformed parameter declaration")
        element = max(TYPE_BITS[param_type] // 8, 1)
        count = 1
        while reader.accept("["):
            count *= reader.integer()
            reader.expect("]")
        params.append(Param(name=token.text, type=param_type, align=align or element,
                            size=element * count))
        if reader.accept(")"):
            return params
        reader.expect(",")


def _parse_body(reader: _Reader, function: Function) -> None:
    depth = 1
    while True:
        token = reader.next("'}' closing the function body")
        if token.text == "{":
            depth += 1
            continue
        if token.text == "}":
            depth -= 1
            if depth == 0:
                return
            continue
        following = reader.peek()
        if token.kind == "name" and following is not None and following.text == ":":
            reader.next()
            function.labels[token.text] = len(function.instructions)
            continue
        if token.text == ".reg":
            _parse_registers(reader, function, token.line)
        elif token.text in (".shared", ".local", ".global", ".const"):
            function.variables.append(_parse_variable(reader, token.text[1:], False, token.line))
        elif token.text == ".pragma":
            _skip_initializer(reader)
            reader.expect(";")
        elif token.text == ".loc":
            _skip_line(reader, token.line)
        elif token.kind == "directive":
            raise PTXSyntaxError(f"PTX line {token.line}: directive {token.text} is not supported "
                                 f"inside a function")
        else:
            function.instructions.append(_parse_instruction(reader, token))


def _parse_registers(reader: _Reader, function: Function, line: int) -> None:
    type_token = reader.next("a register type")
    if type_token.text == ".v2" or type_token.text == ".v4":
        raise PTXSyntaxError(f"PTX line {line}: vector registers are not supported")
    reg_type = type_token.text[1:]
    if reg_type not in TYPE_BITS:
        raise PTXSyntaxError(f"PTX line {line}: unknown register type {type_token.text!r}")
    while True:
        name = reader.next("a register name")
        if name.kind != "name":
            raise PTXSyntaxError(f"PTX line {name.line}: expected a register name, found {name.text!r}")
        if reader.accept("<"):
            count = reader.integer()
            reader.expect(">")
            function.register_prefixes[name.text] = (reg_type, count)
        else:
            function.registers[name.text] = reg_type
        if reader.accept(";"):
            return
        reader.expect(",")


def _parse_instruction(reader: _Reader, first: Token) -> Instruction:
    line = first.line
    guard = None
    negated = False
    token = first
    if token.text == "@":
        negated = reader.accept("!")
        predicate = reader.next("a guard predicate")
        if predicate.kind != "name":
            raise PTXSyntaxError(f"PTX line {line}: expected a predicate after '@'")
        guard = Register(predicate.text)
        token = reader.next("an opcode")
    if token.kind != "name":
        raise PTXSyntaxError(f"PTX line {line}: expected an opcode, found {token.text!r}")
    parts = token.text.split(".")
    raw: list[list[Token]] = [[]]
    depth = 0
    while True:
        item = reader.next("';' ending the instruction")
        if item.text == ";" and depth == 0:
            break
        if item.text in ("{", "["):
            depth += 1
        elif item.text in ("}", "]"):
            depth -= 1
        if item.text == "," and depth == 0:
            raw.append([])
        else:
            raw[-1].append(item)
    operands = tuple(_operand(group, line) for group in raw if group)
    text = ", ".join("".join(t.text for t in group) for group in raw if group)
    return Instruction(opcode=parts[0], modifiers=tuple(parts[1:]), operands=operands, guard=guard,
                       guard_negated=negated, line=line, text=f"{token.text} {text}".strip())


def _operand(tokens: list[Token], line: int) -> object:
    if not tokens:
        raise PTXSyntaxError(f"PTX line {line}: an operand is missing")
    first = tokens[0]
    if first.text == "{":
        if tokens[-1].text != "}":
            raise PTXSyntaxError(f"PTX line {line}: vector operand not closed")
        inner: list[list[Token]] = [[]]
        for token in tokens[1:-1]:
            if token.text == ",":
                inner.append([])
            else:
                inner[-1].append(token)
        return Vector(tuple(_operand(group, line) for group in inner if group))
    if first.text == "[":
        if tokens[-1].text != "]":
            raise PTXSyntaxError(f"PTX line {line}: address operand not closed")
        return _address(tokens[1:-1], line)
    if first.text == "!":
        return Negated(_operand(tokens[1:], line))
    if len(tokens) == 3 and tokens[1].text == "|":
        return PredicatePair(Register(tokens[0].text), Register(tokens[2].text))
    if first.text == "-":
        value = _operand(tokens[1:], line)
        if not isinstance(value, Immediate):
            raise PTXSyntaxError(f"PTX line {line}: '-' before a non-constant operand")
        return Immediate(-value.value, value.float_bits)
    if len(tokens) == 1:
        return _single(first, line)
    if (first.kind == "name" and len(tokens) == 4 and tokens[1].text == "[" and tokens[3].text == "]"
            and tokens[2].kind in ("integer", "hex")):
        return Symbol(first.text, 0, integer_value(tokens[2]))
    if (first.kind == "name" and len(tokens) == 3 and tokens[1].text in ("+", "-")
            and tokens[2].kind in ("integer", "hex")):
        offset = integer_value(tokens[2])
        return Symbol(first.text, offset if tokens[1].text == "+" else -offset)
    raise PTXSyntaxError(f"PTX line {line}: cannot read operand {' '.join(t.text for t in tokens)!r}")


def _single(token: Token, line: int) -> object:
    if token.kind == "name":
        return Register(token.text) if token.text.startswith("%") else Symbol(token.text)
    if token.kind in ("integer", "hex"):
        return Immediate(integer_value(token))
    if token.kind == "float32":
        return Immediate(int(token.text[2:], 16), 32)
    if token.kind == "float64":
        return Immediate(int(token.text[2:], 16), 64)
    if token.kind == "decimal":
        return Immediate(float(token.text), -1)
    raise PTXSyntaxError(f"PTX line {line}: unexpected operand {token.text!r}")


def _address(tokens: list[Token], line: int) -> Address:
    if not tokens:
        raise PTXSyntaxError(f"PTX line {line}: empty address")
    base: Register | Symbol | None
    first = tokens[0]
    rest = tokens[1:]
    if first.kind == "name":
        base = Register(first.text) if first.text.startswith("%") else Symbol(first.text)
    elif first.kind in ("integer", "hex"):
        base = None
        rest = tokens
    else:
        raise PTXSyntaxError(f"PTX line {line}: unexpected {first.text!r} in an address")
    offset = 0
    position = 0
    sign = 1
    while position < len(rest):
        token = rest[position]
        if token.text == "+":
            sign = sign
        elif token.text == "-":
            sign = -sign
        elif token.kind in ("integer", "hex"):
            offset += sign * integer_value(token)
            sign = 1
        else:
            raise PTXSyntaxError(f"PTX line {line}: unexpected {token.text!r} in an address")
        position += 1
    return Address(base, offset)
