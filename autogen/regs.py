"""Register runtime: named registers and bit fields read from the generated tables in autogen/amd/regs/.

A generated register module holds one text table per IP block (one line per register, one indented
line per field) and hands it to `RegisterTable`. Nothing is decoded at import: the first lookup of a
module builds a name -> line index, and each register becomes a `Register` with its `Field`s the first
time it is asked for. This keeps importing the whole RDNA3 register set cheap although the headers
define tens of thousands of fields.

Table format (whitespace-separated columns):
    <register name> <offset> <base index or -> <field count>
     <field name> <shift> <mask>
Offsets and masks are hexadecimal, shifts and counts decimal, exactly as the generator writes them.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Iterator, Mapping

# the base-index column holds this where the header defines no <register>_BASE_IDX
NO_BASE_INDEX = "-"
# how many close matches an unknown-name error suggests
_SUGGESTIONS = 4


class FieldError(ValueError):
    """A field name the register does not have, or a value that does not fit the field."""


class UnknownRegister(AttributeError):
    """A register name the module does not define; the message names close matches."""


def _close_matches(name: str, candidates: list[str] | tuple[str, ...]) -> str:
    """Format up to a few candidates close to `name` for an error message ('' when none)."""
    import difflib  # only error paths need it; importing it up front would slow every register import

    matches = difflib.get_close_matches(name, candidates, n=_SUGGESTIONS, cutoff=0.6)
    if not matches:
        return ""
    return "; did you mean " + ", ".join(matches) + "?"


class Field:
    """One bit field of a register: `mask` selects its bits in the register, `shift` is its lowest bit."""

    __slots__ = ("name", "shift", "mask", "register_name")

    def __init__(self, name: str, shift: int, mask: int, register_name: str = "") -> None:
        self.name = name
        self.shift = shift
        self.mask = mask
        self.register_name = register_name

    @property
    def width(self) -> int:
        """Number of bits in the field."""
        return (self.mask >> self.shift).bit_length()

    @property
    def max_value(self) -> int:
        """Largest value the field holds."""
        return self.mask >> self.shift

    def encode(self, value: int) -> int:
        """Return `value` moved into the field's bits; raises FieldError when it does not fit."""
        if not isinstance(value, int):
            raise FieldError(f"{self._qualified()}: value {value!r} is not an int")
        if value < 0 or value > self.max_value:
            raise FieldError(
                f"{self._qualified()}: value {value:#x} does not fit in {self.width} bit(s) "
                f"(0..{self.max_value:#x})"
            )
        return value << self.shift

    def decode(self, register_value: int) -> int:
        """Return the field's value taken out of a whole register value."""
        return (register_value & self.mask) >> self.shift

    def _qualified(self) -> str:
        if self.register_name:
            return f"{self.register_name}.{self.name}"
        return self.name

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Field):
            return NotImplemented
        return (self.name, self.shift, self.mask) == (other.name, other.shift, other.mask)

    def __hash__(self) -> int:
        return hash((self.name, self.shift, self.mask))

    def __repr__(self) -> str:
        return f"Field({self.name!r}, shift={self.shift}, mask={self.mask:#010x})"


class Register:
    """One register: its header name, offset (as the header gives it), base-index segment and fields.

    `offset` is the header's value: for `reg*` names a dword offset from the IP block's base in segment
    `base_idx`; for `cfg*` names a config-space byte address and for `ix*` names an index behind an
    index/data pair, both without a segment (`base_idx` is None).
    """

    __slots__ = ("name", "offset", "base_idx", "fields")

    def __init__(self, name: str, offset: int, base_idx: int | None, fields: tuple[Field, ...]) -> None:
        self.name = name
        self.offset = offset
        self.base_idx = base_idx
        self.fields: Mapping[str, Field] = MappingProxyType({field.name: field for field in fields})

    def field(self, name: str) -> Field:
        """Return the field called `name`; raises FieldError naming close matches when there is none."""
        try:
            return self.fields[name]
        except KeyError:
            hint = _close_matches(name, list(self.fields))
            raise FieldError(f"register {self.name} has no field {name}{hint}") from None

    def encode(self, **values: int) -> int:
        """Return the register value with each named field set and every other bit zero."""
        result = 0
        for name, value in values.items():
            result |= self.field(name).encode(value)
        return result

    def decode(self, value: int) -> dict[str, int]:
        """Return every field's value in `value`, in header order."""
        return {name: (value & field.mask) >> field.shift for name, field in self.fields.items()}

    def update(self, old_value: int, /, **values: int) -> int:
        """Read-modify-write helper: `old_value` with the named fields replaced, other bits kept."""
        if old_value < 0:
            raise FieldError(f"{self.name}: register value {old_value} is negative")
        result = old_value
        for name, value in values.items():
            field = self.field(name)
            result = (result & ~field.mask) | field.encode(value)
        return result

    def __repr__(self) -> str:
        return (
            f"Register({self.name!r}, offset={self.offset:#x}, base_idx={self.base_idx}, "
            f"fields={len(self.fields)})"
        )


class RegisterTable:
    """The registers of one generated module, decoded lazily from its text table."""

    def __init__(self, module_name: str, table: str) -> None:
        self.module_name = module_name
        self._table = table
        self._lines: list[str] | None = None
        self._line_of: dict[str, int] | None = None
        self._decoded: dict[str, Register] = {}

    def _index(self) -> dict[str, int]:
        """Build (once) the map from register name to its line in the table."""
        if self._line_of is None:
            lines = self._table.split("\n")
            line_of: dict[str, int] = {}
            position = 0
            count = len(lines)
            while position < count:
                line = lines[position]
                if not line:
                    position += 1
                    continue
                name, _offset, _base, field_count = line.split(" ")
                line_of[name] = position
                position += 1 + int(field_count)
            self._lines = lines
            self._line_of = line_of
        return self._line_of

    def names(self) -> tuple[str, ...]:
        """Every register name in the module, in header order."""
        return tuple(self._index())

    def __contains__(self, name: object) -> bool:
        return name in self._index()

    def __iter__(self) -> Iterator[Register]:
        for name in self._index():
            yield self.get(name)

    def __len__(self) -> int:
        return len(self._index())

    def get(self, name: str) -> Register:
        """Return the register called `name`; raises UnknownRegister naming close matches."""
        register = self._decoded.get(name)
        if register is not None:
            return register
        position = self._index().get(name)
        if position is None:
            raise self._unknown(name)
        register = self._decode(position)
        self._decoded[name] = register
        return register

    def _decode(self, position: int) -> Register:
        lines = self._lines
        name, offset, base, field_count = lines[position].split(" ")
        fields = []
        for line in lines[position + 1:position + 1 + int(field_count)]:
            field_name, shift, mask = line.split()
            fields.append(Field(field_name, int(shift), int(mask, 16), name))
        base_idx = None if base == NO_BASE_INDEX else int(base)
        return Register(name, int(offset, 16), base_idx, tuple(fields))

    def _unknown(self, name: str) -> UnknownRegister:
        hint = _close_matches(name, self.names())
        return UnknownRegister(f"module {self.module_name} has no register {name}{hint}")

    def module_getattr(self, name: str) -> Register:
        """Module-level `__getattr__`: a register by attribute name, or AttributeError."""
        if name.startswith("__"):
            # importlib and inspect probe dunder names; they are never registers
            raise AttributeError(f"module {self.module_name!r} has no attribute {name!r}")
        return self.get(name)

    def module_dir(self, module_globals: list[str]) -> list[str]:
        """Module-level `__dir__`: the module's own names plus every register name."""
        return sorted(set(module_globals) | set(self._index()))
