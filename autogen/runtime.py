"""The runtime every generated binding module imports: typed, zero-copy views of C structs over bytes.

A generated struct or union is a subclass of `Struct` whose class body lists its members as
`LAYOUT = (("name", byte_offset, type), ...)`, with `SIZE` and `ALIGN` in bytes. The metaclass turns
that list into `FIELDS` (name -> `Field`) and one descriptor per member, so attribute access is a
single `struct.unpack_from`/`pack_into` on the shared buffer.

Member types:
- scalars: `U8 U16 U32 U64 I8 I16 I32 I64 F32 F64 BOOL` (little-endian, as on x86-64 and arm64);
- `Array(elem, count)`: fixed arrays, nested for more dimensions; reading one returns an `ArrayView`
  (list-like and zero-copy: element writes go through to the buffer); assigning a sequence (or bytes,
  for 8-bit elements) copies it in and zero-fills the rest;
- `Bits(nbytes, shift, width, signed)`: a bitfield inside the `nbytes` bytes starting at its offset;
- a `Struct` subclass: nested structs and unions read as views sharing the parent's buffer;
- `Flex(elem)`: a flexible array member (`__u8 data[]`); it has no size and reads as an `ArrayView`
  reaching to the end of the underlying buffer.

Instances: `Cls(**fields)` owns a zero-filled bytearray of SIZE bytes; `Cls.from_buffer(buf, offset)`
is a view over a writable buffer (bytearray, memoryview, mmap, or anything with a memoryview-returning
`view(offset)` method such as a memory-backed Region); `Cls.from_bytes(data)` copies;
`Cls.read_from(region, offset)` and `inst.write_to(region, offset)` copy through a Region's read/write
(for regions without a mapping). `inst.buffer` is the writable memoryview of exactly SIZE bytes (an
ioctl argument); `bytes(inst)` copies it.

Member names that collide with this API or with Python keywords get a trailing underscore in the
generated class (`buffer` -> `buffer_`); the generated module lists every such rename.
This module imports nothing outside the standard library.
"""
from __future__ import annotations

import keyword
import struct as _struct
from typing import Any, ClassVar, Iterator, NamedTuple, Sequence


class LayoutError(ValueError):
    """A buffer or value that does not fit a struct layout (too short, read-only, out of range)."""


class Scalar:
    """A fixed-size integer, float or bool member type."""

    __slots__ = ("name", "size", "align", "kind", "packer", "minimum", "maximum")

    def __init__(self, name: str, fmt: str, kind: str) -> None:
        self.name = name
        self.packer = _struct.Struct("<" + fmt)
        self.size = self.packer.size
        self.align = self.size
        self.kind = kind
        bits = self.size * 8
        if kind == "int":
            self.minimum = -(1 << (bits - 1))
            self.maximum = (1 << (bits - 1)) - 1
        else:
            self.minimum = 0
            self.maximum = (1 << bits) - 1

    def __repr__(self) -> str:
        return self.name


U8 = Scalar("U8", "B", "uint")
U16 = Scalar("U16", "H", "uint")
U32 = Scalar("U32", "I", "uint")
U64 = Scalar("U64", "Q", "uint")
I8 = Scalar("I8", "b", "int")
I16 = Scalar("I16", "h", "int")
I32 = Scalar("I32", "i", "int")
I64 = Scalar("I64", "q", "int")
F32 = Scalar("F32", "f", "float")
F64 = Scalar("F64", "d", "float")
BOOL = Scalar("BOOL", "?", "bool")

SCALARS: dict[str, Scalar] = {s.name: s for s in (U8, U16, U32, U64, I8, I16, I32, I64, F32, F64, BOOL)}


class Array:
    """A fixed array of `count` elements of `elem` (a Scalar, a Struct subclass or another Array)."""

    __slots__ = ("elem", "count", "size", "align")

    def __init__(self, elem: Any, count: int) -> None:
        self.elem = elem
        self.count = count
        self.size = _size_of(elem) * count
        self.align = _align_of(elem)

    def __repr__(self) -> str:
        return f"Array({_type_name(self.elem)}, {self.count})"


class Flex:
    """A flexible array member: no size of its own, it runs to the end of the buffer."""

    __slots__ = ("elem", "size", "align")

    def __init__(self, elem: Any) -> None:
        self.elem = elem
        self.size = 0
        self.align = _align_of(elem)

    def __repr__(self) -> str:
        return f"Flex({_type_name(self.elem)})"


class Bits:
    """A bitfield: `width` bits starting `shift` bits into the `nbytes` little-endian bytes at its offset."""

    __slots__ = ("nbytes", "shift", "width", "signed", "size", "align")

    def __init__(self, nbytes: int, shift: int, width: int, signed: bool = False) -> None:
        self.nbytes = nbytes
        self.shift = shift
        self.width = width
        self.signed = signed
        self.size = nbytes
        self.align = 1

    def __repr__(self) -> str:
        return f"Bits({self.nbytes}, {self.shift}, {self.width}, {self.signed})"


class Field(NamedTuple):
    """One member of a struct: byte offset, size in bytes and kind, plus the details of that kind.

    kind is "uint", "int", "float", "bool", "bits", "struct", "array" or "flex". For "bits",
    `bit_shift`/`bit_width` locate it within the `size` bytes at `offset`; `spec` is the type object.
    """

    offset: int
    size: int
    kind: str
    spec: Any
    bit_shift: int = 0
    bit_width: int = 0


def _size_of(spec: Any) -> int:
    return spec.SIZE if isinstance(spec, type) and issubclass(spec, Struct) else spec.size


def _align_of(spec: Any) -> int:
    return spec.ALIGN if isinstance(spec, type) and issubclass(spec, Struct) else spec.align


def _type_name(spec: Any) -> str:
    return spec.__name__ if isinstance(spec, type) else repr(spec)


def _kind_of(spec: Any) -> str:
    if isinstance(spec, Scalar):
        return spec.kind
    if isinstance(spec, Bits):
        return "bits"
    if isinstance(spec, Array):
        return "array"
    if isinstance(spec, Flex):
        return "flex"
    if isinstance(spec, type) and issubclass(spec, Struct):
        return "struct"
    raise TypeError(f"not a member type: {spec!r}")


# ---------------------------------------------------------------------------------------- elements


def _read_elem(spec: Any, buf: memoryview, off: int) -> Any:
    if isinstance(spec, Scalar):
        return spec.packer.unpack_from(buf, off)[0]
    if isinstance(spec, Array):
        return ArrayView(buf, off, spec.elem, spec.count)
    return spec._view(buf, off)


def _write_elem(spec: Any, buf: memoryview, off: int, value: Any, what: str) -> None:
    if isinstance(spec, Scalar):
        _pack_scalar(spec, buf, off, value, what)
    elif isinstance(spec, Array):
        _write_array(spec.elem, spec.count, buf, off, value, what)
    else:
        _write_struct(spec, buf, off, value, what)


def _pack_scalar(spec: Scalar, buf: memoryview, off: int, value: Any, what: str) -> None:
    try:
        spec.packer.pack_into(buf, off, value)  # struct range-checks integers itself
        return
    except _struct.error as exc:
        problem = exc
    if spec.kind == "uint" and isinstance(value, int) and -(1 << (spec.size * 8 - 1)) <= value < 0:
        # C converts a negative int stored in an unsigned member modulo 2**bits; flags such as
        # (1 << 31) are negative ints in C and are meant as that bit
        spec.packer.pack_into(buf, off, value & spec.maximum)
        return
    if spec.kind in ("uint", "int") and isinstance(value, int):
        raise LayoutError(f"{what}: {value!r} does not fit {spec.name} [{spec.minimum}, {spec.maximum}]")
    raise LayoutError(f"{what}: cannot store {value!r} as {spec.name}: {problem}")


def _write_array(elem: Any, count: int, buf: memoryview, off: int, value: Any, what: str) -> None:
    elem_size = _size_of(elem)
    if isinstance(value, (bytes, bytearray, memoryview)) and elem_size == 1:
        data = memoryview(value).cast("B")
        if len(data) > count:
            raise LayoutError(f"{what}: {len(data)} bytes do not fit {count}")
        buf[off:off + len(data)] = data
        buf[off + len(data):off + count] = bytes(count - len(data))
        return
    items = list(value)
    if len(items) > count:
        raise LayoutError(f"{what}: {len(items)} elements do not fit {count}")
    for index, item in enumerate(items):
        _write_elem(elem, buf, off + index * elem_size, item, f"{what}[{index}]")
    tail = off + len(items) * elem_size
    buf[tail:off + count * elem_size] = bytes(off + count * elem_size - tail)


def _write_struct(cls: type, buf: memoryview, off: int, value: Any, what: str) -> None:
    if isinstance(value, Struct):
        if type(value) is not cls:
            raise LayoutError(f"{what}: expected {cls.__name__}, got {type(value).__name__}")
        buf[off:off + cls.SIZE] = value.buffer
    elif isinstance(value, dict):
        view = cls._view(buf, off)
        for name, item in value.items():
            view._set_field(name, item)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = memoryview(value).cast("B")
        if len(data) != cls.SIZE:
            raise LayoutError(f"{what}: {len(data)} bytes given for {cls.__name__} of {cls.SIZE}")
        buf[off:off + cls.SIZE] = data
    else:
        raise LayoutError(f"{what}: cannot assign {type(value).__name__} to {cls.__name__}")


class ArrayView(Sequence):
    """A zero-copy, list-like view of a C array inside a struct's buffer.

    Indexing with an int reads (or, assigned, writes) one element; slices return lists. Elements
    that are structs or arrays are themselves views. `tolist()` copies recursively, `tobytes()`
    copies the raw bytes.
    """

    __slots__ = ("_buf", "_off", "_elem", "_count", "_elem_size")

    def __init__(self, buf: memoryview, off: int, elem: Any, count: int) -> None:
        self._buf = buf
        self._off = off
        self._elem = elem
        self._count = count
        self._elem_size = _size_of(elem)

    def __len__(self) -> int:
        return self._count

    def _index(self, index: int) -> int:
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError(f"index {index} outside array of {self._count}")
        return self._off + index * self._elem_size

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        return _read_elem(self._elem, self._buf, self._index(index))

    def __setitem__(self, index, value) -> None:
        if isinstance(index, slice):
            positions = range(*index.indices(self._count))
            values = list(value)
            if len(values) != len(positions):
                raise LayoutError(f"slice of {len(positions)} elements assigned {len(values)} values")
            for position, item in zip(positions, values):
                self[position] = item
            return
        _write_elem(self._elem, self._buf, self._index(index), value, f"[{index}]")

    def __iter__(self) -> Iterator[Any]:
        for index in range(self._count):
            yield _read_elem(self._elem, self._buf, self._off + index * self._elem_size)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ArrayView):
            return self.tolist() == other.tolist()
        if isinstance(other, (list, tuple)):
            return self.tolist() == list(other)
        return NotImplemented

    def tolist(self) -> list:
        return [_plain(item) for item in self]

    def tobytes(self) -> bytes:
        return bytes(self._buf[self._off:self._off + self._count * self._elem_size])

    def __repr__(self) -> str:
        return f"ArrayView({self.tolist()!r})"


def _plain(value: Any) -> Any:
    if isinstance(value, ArrayView):
        return value.tolist()
    if isinstance(value, Struct):
        return value.to_dict()
    return value


# ---------------------------------------------------------------------------------------- descriptors


class _ScalarMember:
    __slots__ = ("name", "offset", "spec", "unpack_from", "pack_into")

    def __init__(self, name: str, offset: int, spec: Scalar) -> None:
        self.name = name
        self.offset = offset
        self.spec = spec
        self.unpack_from = spec.packer.unpack_from
        self.pack_into = spec.packer.pack_into

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        return self.unpack_from(obj._buf, obj._off + self.offset)[0]

    def __set__(self, obj, value) -> None:
        try:
            self.pack_into(obj._buf, obj._off + self.offset, value)
        except _struct.error:
            what = f"{type(obj).__name__}.{self.name}"
            _pack_scalar(self.spec, obj._buf, obj._off + self.offset, value, what)


class _BitsMember:
    __slots__ = ("name", "offset", "end", "shift", "mask", "width", "signed")

    def __init__(self, name: str, offset: int, spec: Bits) -> None:
        self.name = name
        self.offset = offset
        self.end = offset + spec.nbytes
        self.shift = spec.shift
        self.width = spec.width
        self.mask = (1 << spec.width) - 1
        self.signed = spec.signed

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        base = obj._off
        word = int.from_bytes(obj._buf[base + self.offset:base + self.end], "little")
        value = (word >> self.shift) & self.mask
        if self.signed and value >> (self.width - 1):
            value -= 1 << self.width
        return value

    def __set__(self, obj, value: int) -> None:
        low = -(1 << (self.width - 1)) if self.signed else 0
        high = self.mask >> 1 if self.signed else self.mask
        if not low <= value <= high:
            raise LayoutError(f"{type(obj).__name__}.{self.name}: {value!r} does not fit {self.width} bits")
        start = obj._off + self.offset
        stop = obj._off + self.end
        word = int.from_bytes(obj._buf[start:stop], "little")
        word = (word & ~(self.mask << self.shift)) | ((value & self.mask) << self.shift)
        obj._buf[start:stop] = word.to_bytes(stop - start, "little")


class _CompoundMember:
    """Nested struct or fixed array: reads return a view, assignment copies in."""

    __slots__ = ("name", "offset", "spec")

    def __init__(self, name: str, offset: int, spec: Any) -> None:
        self.name = name
        self.offset = offset
        self.spec = spec

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        return _read_elem(self.spec, obj._buf, obj._off + self.offset)

    def __set__(self, obj, value) -> None:
        _write_elem(self.spec, obj._buf, obj._off + self.offset, value, f"{type(obj).__name__}.{self.name}")


class _FlexMember:
    __slots__ = ("name", "offset", "elem", "elem_size")

    def __init__(self, name: str, offset: int, spec: Flex) -> None:
        self.name = name
        self.offset = offset
        self.elem = spec.elem
        self.elem_size = _size_of(spec.elem)

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        start = obj._off + self.offset
        count = max(0, len(obj._buf) - start) // self.elem_size
        return ArrayView(obj._buf, start, self.elem, count)

    def __set__(self, obj, value) -> None:
        view = self.__get__(obj)
        _write_array(self.elem, len(view), obj._buf, view._off, value, f"{type(obj).__name__}.{self.name}")


# ---------------------------------------------------------------------------------------- Struct

# attribute names of the Struct API; generated members with these names get a trailing underscore
RESERVED_NAMES = frozenset({
    "SIZE", "ALIGN", "FIELDS", "LAYOUT", "from_buffer", "from_bytes", "read_from", "write_to", "buffer",
    "to_dict", "copy", "offset_of", "_buf", "_off", "_view", "_set_field", "mro",
})


def python_name(c_name: str) -> str:
    """The attribute name a C member gets: itself, or with a trailing underscore on a collision."""
    if keyword.iskeyword(c_name) or c_name in RESERVED_NAMES:
        return c_name + "_"
    return c_name


class _StructMeta(type):
    """Builds FIELDS and the member descriptors from the class body's LAYOUT."""

    def __new__(mcs, name: str, bases: tuple, namespace: dict):
        namespace.setdefault("__slots__", ())
        layout = namespace.get("LAYOUT", ())
        fields: dict[str, Field] = {}
        for member_name, offset, spec in layout:
            kind = _kind_of(spec)
            if kind == "bits":
                field = Field(offset, spec.nbytes, kind, spec, spec.shift, spec.width)
                namespace[member_name] = _BitsMember(member_name, offset, spec)
            elif kind == "flex":
                field = Field(offset, 0, kind, spec)
                namespace[member_name] = _FlexMember(member_name, offset, spec)
            elif kind in ("struct", "array"):
                field = Field(offset, _size_of(spec), kind, spec)
                namespace[member_name] = _CompoundMember(member_name, offset, spec)
            else:
                field = Field(offset, spec.size, kind, spec)
                namespace[member_name] = _ScalarMember(member_name, offset, spec)
            fields[member_name] = field
        if layout or "FIELDS" not in namespace:
            namespace["FIELDS"] = fields
        return super().__new__(mcs, name, bases, namespace)


class Struct(metaclass=_StructMeta):
    """Base of every generated struct and union. See the module docstring for the API."""

    __slots__ = ("_buf", "_off")
    SIZE: ClassVar[int] = 0
    ALIGN: ClassVar[int] = 1
    LAYOUT: ClassVar[tuple] = ()
    FIELDS: ClassVar[dict[str, Field]] = {}

    def __init__(self, **fields: Any) -> None:
        self._buf = memoryview(bytearray(self.SIZE))
        self._off = 0
        for name, value in fields.items():
            self._set_field(name, value)

    @classmethod
    def _view(cls, buf: memoryview, off: int) -> "Struct":
        inst = cls.__new__(cls)
        inst._buf = buf
        inst._off = off
        return inst

    @classmethod
    def from_buffer(cls, buf: Any, offset: int = 0) -> "Struct":
        """A view of SIZE bytes at `offset` in a writable buffer; writes go through to it."""
        try:
            mv = memoryview(buf)
        except TypeError:
            # not a buffer: a memory-backed Region hands out a memoryview of itself
            view = getattr(buf, "view", None)
            if view is None:
                raise LayoutError(f"{cls.__name__}.from_buffer needs a writable buffer, "
                                  f"not {type(buf).__name__}") from None
            mv = view(offset)
            offset = 0
        if mv.readonly:
            raise LayoutError(f"{cls.__name__}.from_buffer needs a writable buffer; use from_bytes to copy")
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        if offset < 0 or offset + cls.SIZE > len(mv):
            raise LayoutError(f"{cls.__name__} of {cls.SIZE} bytes at offset {offset} "
                              f"does not fit a buffer of {len(mv)} bytes")
        return cls._view(mv, offset)

    @classmethod
    def from_bytes(cls, data: Any) -> "Struct":
        """A copy of `data` (at least SIZE bytes; extra bytes stay reachable by flexible arrays)."""
        copied = bytearray(data)
        if len(copied) < cls.SIZE:
            raise LayoutError(f"{cls.__name__} needs {cls.SIZE} bytes, got {len(copied)}")
        return cls._view(memoryview(copied), 0)

    @classmethod
    def read_from(cls, source: Any, offset: int = 0) -> "Struct":
        """A copy of SIZE bytes read with `source.read(offset, size)` (a Region without a mapping)."""
        return cls.from_bytes(source.read(offset, cls.SIZE))

    def write_to(self, target: Any, offset: int = 0) -> None:
        """Write the SIZE bytes with `target.write(offset, data)` (a Region without a mapping)."""
        target.write(offset, bytes(self))

    @classmethod
    def offset_of(cls, name: str) -> int:
        return cls.FIELDS[name].offset

    @property
    def buffer(self) -> memoryview:
        """The writable memoryview of exactly SIZE bytes this instance reads and writes."""
        return self._buf[self._off:self._off + self.SIZE]

    def __bytes__(self) -> bytes:
        return bytes(self._buf[self._off:self._off + self.SIZE])

    def copy(self) -> "Struct":
        return type(self).from_bytes(bytes(self))

    def _set_field(self, name: str, value: Any) -> None:
        if name not in self.FIELDS:
            known = ", ".join(self.FIELDS) or "none"
            raise TypeError(f"{type(self).__name__} has no member {name!r} (members: {known})")
        setattr(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """Every member as plain Python values (nested dicts and lists); flexible arrays omitted."""
        return {name: _plain(getattr(self, name))
                for name, field in self.FIELDS.items() if field.kind != "flex"}

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return bytes(self) == bytes(other)

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        parts = []
        for name, value in self.to_dict().items():
            parts.append(f"{name}={value:#x}" if isinstance(value, int) and not isinstance(value, bool)
                         else f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


# ---------------------------------------------------------------------------------------- C arithmetic

def c_div(numerator: int, denominator: int) -> int:
    """C integer division (truncates toward zero), used by functions generated from C macros."""
    quotient = abs(numerator) // abs(denominator)
    return quotient if (numerator < 0) == (denominator < 0) else -quotient


def c_mod(numerator: int, denominator: int) -> int:
    """C remainder (takes the sign of the numerator)."""
    return numerator - c_div(numerator, denominator) * denominator


def c_signed(value: int, bits: int) -> int:
    """A C cast to a signed integer of `bits` bits (two's complement wrap-around)."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value
