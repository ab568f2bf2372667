"""ir3 disassembler: 64-bit instruction words to text in Mesa's disassembler syntax, through the tables
generated from Mesa's ISA description (autogen.qcom.ir3_isa; the decoding rules are in isa.py).

`disassemble(words)` takes bytes (little-endian words, as the GPU reads them) or a sequence of ints
and returns one line per instruction. With labels (the default) a branch prints its target as `lN`
(N: the target's instruction index) and a line `lN:` precedes each target, as Mesa's disassembler
does with branch labels on; the assembler reads the same text back.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from drivers.qcom.ir3.isa import WORD_BYTES, DecodeError, decode_word


def words_of(code: bytes | bytearray | memoryview | Iterable[int]) -> list[int]:
    """Instruction words from little-endian bytes or from ints."""
    if isinstance(code, (bytes, bytearray, memoryview)):
        data = bytes(code)
        if len(data) % WORD_BYTES:
            raise DecodeError(f"ir3 code is {len(data)} bytes, not a whole number of "
                              f"{WORD_BYTES}-byte instructions")
        return [int.from_bytes(data[offset:offset + WORD_BYTES], "little")
                for offset in range(0, len(data), WORD_BYTES)]
    return [int(word) for word in code]


def branch_targets(words: Sequence[int]) -> set[int]:
    """Instruction indices that the branches among `words` name (those their text shows)."""
    targets: set[int] = set()

    def record(target: int) -> str:
        targets.add(target)
        return ""

    for position, word in enumerate(words):
        decode_word(word, position, record)
    return targets


def disassemble(code: bytes | bytearray | memoryview | Iterable[int], *, labels: bool = True) -> str:
    """The text of `code`, one instruction a line (and `lN:` label lines when `labels`)."""
    words = words_of(code)
    targets = branch_targets(words) if labels else set()
    in_range = {target for target in targets if 0 <= target < len(words)}

    def label(target: int) -> str:
        return f"l{target}" if target in in_range else ""

    lines = []
    for position, word in enumerate(words):
        if position in in_range:
            lines.append(f"l{position}:")
        lines.append(decode_word(word, position, label if labels else None))
    return "\n".join(lines) + ("\n" if lines else "")
