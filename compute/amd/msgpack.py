"""A small, bounded MessagePack decoder for the AMDGPU metadata note (no third-party dependency).

Decodes the subset the format defines for values (nil, booleans, integers, floats, str, bin, arrays,
maps); extension types are refused. Every length is checked against the bytes that remain before
anything is allocated, nesting is limited, and every failure is BadBinary naming the byte offset.
Format reference: the MessagePack specification (github.com/msgpack/msgpack/blob/master/spec.md).
"""
from __future__ import annotations

import struct
from typing import Any

from hal.errors import BadBinary

# Deeper nesting than this is never produced by the metadata emitter (it uses four levels).
MAX_DEPTH = 32

# Type bytes from the MessagePack specification, "Formats" table.
_NIL = 0xC0
_FALSE = 0xC2
_TRUE = 0xC3
_BIN = {0xC4: 1, 0xC5: 2, 0xC6: 4}
_FLOAT32 = 0xCA
_FLOAT64 = 0xCB
_UINT = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
_INT = {0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}
_STR = {0xD9: 1, 0xDA: 2, 0xDB: 4}
_ARRAY = {0xDC: 2, 0xDD: 4}
_MAP = {0xDE: 2, 0xDF: 4}
_EXT = frozenset((0xC7, 0xC8, 0xC9, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8))
_POSITIVE_FIXINT_MAX = 0x7F
_FIXMAP = (0x80, 0x8F)
_FIXARRAY = (0x90, 0x9F)
_FIXSTR = (0xA0, 0xBF)
_NEGATIVE_FIXINT_MIN = 0xE0
_FIX_LENGTH_MASK = 0x0F
_FIXSTR_LENGTH_MASK = 0x1F


def unpack(data: bytes, *, what: str = "msgpack") -> Any:
    """Decode exactly one MessagePack value filling `data`; BadBinary (prefixed by `what`) otherwise."""
    decoder = _Decoder(bytes(data), what)
    value = decoder.value(0)
    if decoder.pos != len(decoder.data):
        raise BadBinary(f"{what}: {len(decoder.data) - decoder.pos} stray bytes after the value "
                        f"at offset {decoder.pos}")
    return value


class _Decoder:
    """Cursor over the input; each method consumes one element."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.what = what
        self.pos = 0

    def fail(self, message: str, at: int) -> BadBinary:
        return BadBinary(f"{self.what}: {message} at offset {at}")

    def take(self, count: int, at: int) -> bytes:
        end = self.pos + count
        if end > len(self.data):
            raise self.fail(f"needs {count} bytes but only {len(self.data) - self.pos} remain", at)
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def length(self, width: int, at: int) -> int:
        return int.from_bytes(self.take(width, at), "big")

    def value(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise self.fail(f"nesting deeper than {MAX_DEPTH}", self.pos)
        at = self.pos
        tag = self.take(1, at)[0]
        if tag <= _POSITIVE_FIXINT_MAX:
            return tag
        if tag >= _NEGATIVE_FIXINT_MIN:
            return tag - 0x100
        if _FIXMAP[0] <= tag <= _FIXMAP[1]:
            return self.map(tag & _FIX_LENGTH_MASK, depth, at)
        if _FIXARRAY[0] <= tag <= _FIXARRAY[1]:
            return self.array(tag & _FIX_LENGTH_MASK, depth, at)
        if _FIXSTR[0] <= tag <= _FIXSTR[1]:
            return self.string(tag & _FIXSTR_LENGTH_MASK, at)
        if tag == _NIL:
            return None
        if tag == _FALSE:
            return False
        if tag == _TRUE:
            return True
        if tag in _UINT:
            return int.from_bytes(self.take(_UINT[tag], at), "big")
        if tag in _INT:
            return int.from_bytes(self.take(_INT[tag], at), "big", signed=True)
        if tag == _FLOAT32:
            return struct.unpack(">f", self.take(4, at))[0]
        if tag == _FLOAT64:
            return struct.unpack(">d", self.take(8, at))[0]
        if tag in _STR:
            return self.string(self.length(_STR[tag], at), at)
        if tag in _BIN:
            return self.take(self.length(_BIN[tag], at), at)
        if tag in _ARRAY:
            return self.array(self.length(_ARRAY[tag], at), depth, at)
        if tag in _MAP:
            return self.map(self.length(_MAP[tag], at), depth, at)
        if tag in _EXT:
            raise self.fail(f"extension type 0x{tag:02x} is not used by AMDGPU metadata", at)
        raise self.fail(f"type byte 0x{tag:02x} is reserved", at)

    def string(self, count: int, at: int) -> str:
        raw = self.take(count, at)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(f"string is not UTF-8 ({exc.reason})", at) from exc

    def array(self, count: int, depth: int, at: int) -> list[Any]:
        # Every element takes at least one byte: a count beyond what remains is corrupt.
        if count > len(self.data) - self.pos:
            raise self.fail(f"array of {count} elements exceeds the {len(self.data) - self.pos} "
                            "bytes that remain", at)
        return [self.value(depth + 1) for _ in range(count)]

    def map(self, count: int, depth: int, at: int) -> dict[Any, Any]:
        if 2 * count > len(self.data) - self.pos:
            raise self.fail(f"map of {count} entries exceeds the {len(self.data) - self.pos} "
                            "bytes that remain", at)
        result: dict[Any, Any] = {}
        for _ in range(count):
            key_at = self.pos
            key = self.value(depth + 1)
            if not isinstance(key, (str, int, bool)) and key is not None:
                raise self.fail(f"map key of type {type(key).__name__} is not a scalar", key_at)
            result[key] = self.value(depth + 1)
        return result
