"""The CUDA fatbinary container, as nvcc's `-fatbin` writes it (a host object's `.nv_fatbin` section
holds the same containers).

`parse(data)` returns a FatBinary: its entries, each a PTX text or an ELF cubin for one SM
architecture. `FatBinary.ptx(arch)` is the PTX a GPU of that architecture would JIT (the highest
virtual architecture not above it); `FatBinary.cubin(arch)` is the SASS cubin built for it.

Layout (little-endian; the format is not published by NVIDIA: the field names and flags follow
n-eiling/cuda-fatbin-decompression, fatbin-decompress.h, and jiegec/fatbinary, fatbinary/src/lib.rs,
and were checked against nvcc 13.0 output):

  container header, 16 bytes: u32 magic 0xBA55ED50, u16 version 1, u16 header size 16,
                              u64 size of the entries that follow
  entry header, >= 64 bytes:  u16 kind (1 PTX, 2 ELF), u16 0x0101, u32 header size,
                              u64 payload size, u32 compressed size, u32 options offset,
                              u16 minor, u16 major, u32 arch (80 = sm_80), u32 name offset,
                              u32 name length, u64 flags, u64 zero, u64 decompressed size
  payload:                    `payload size` bytes after the entry header (PTX padded with NULs)

Compressed entries (flag 0x2000) are refused: the library is built with `nvcc --no-compress`.
Every malformed input is BadBinary naming the file offset; nothing is allocated beyond the input.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from hal.errors import BadBinary

# fatbin-decompress.h: FATBIN_TEXT_MAGIC.
MAGIC = 0xBA55ED50
VERSION = 1
_HEADER = struct.Struct("<IHHQ")
_ENTRY = struct.Struct("<HHIQIIHHIIIQQQ")

KIND_PTX = 1
KIND_ELF = 2
_KIND_NAMES = {KIND_PTX: "ptx", KIND_ELF: "elf"}

# fatbin-decompress.c / fatbinary lib.rs: entry flag bits.
FLAG_64BIT = 0x1
FLAG_DEBUG = 0x2
FLAG_HOST_LINUX = 0x10
FLAG_COMPRESSED = 0x2000

# ELF header identification, to check an ELF entry really holds one.
_ELF_MAGIC = b"\x7fELF"
# The largest SM number a fatbinary of today names (sm_120); a larger one means a corrupt header.
_MAX_ARCH = 1000


@dataclass(frozen=True)
class Entry:
    """One image of a fatbinary: `kind` 'ptx' or 'elf', for SM `arch` (80 = sm_80 / compute_80)."""

    kind: str
    arch: int
    version: tuple[int, int]
    flags: int
    offset: int
    payload: bytes

    @property
    def text(self) -> str:
        """The PTX source of a 'ptx' entry (its trailing NUL padding removed)."""
        if self.kind != "ptx":
            raise BadBinary(f"fatbinary entry at offset {self.offset:#x} is {self.kind}, not ptx")
        body = self.payload.rstrip(b"\0")
        try:
            return body.decode("ascii")
        except UnicodeDecodeError as exc:
            raise BadBinary(f"fatbinary entry at offset {self.offset:#x}: PTX is not ASCII text "
                            f"(byte {exc.start:#x} of the payload)") from exc


@dataclass(frozen=True)
class FatBinary:
    """The entries of a fatbinary in file order."""

    entries: tuple[Entry, ...]

    @property
    def ptx_archs(self) -> list[int]:
        return sorted({entry.arch for entry in self.entries if entry.kind == "ptx"})

    @property
    def sass_archs(self) -> list[int]:
        return sorted({entry.arch for entry in self.entries if entry.kind == "elf"})

    def ptx(self, arch: int | None = None) -> str:
        """The PTX for a GPU of SM `arch`: the highest PTX architecture not above it (any when None)."""
        usable = [entry for entry in self.entries
                  if entry.kind == "ptx" and (arch is None or entry.arch <= arch)]
        if not usable:
            raise BadBinary(f"fatbinary has no PTX usable on sm_{arch} (PTX for {self.ptx_archs})")
        return max(usable, key=lambda entry: entry.arch).text

    def cubin(self, arch: int) -> bytes:
        """The SASS cubin built for SM `arch` exactly (SASS runs only on its own architecture)."""
        for entry in self.entries:
            if entry.kind == "elf" and entry.arch == arch:
                return entry.payload
        raise BadBinary(f"fatbinary has no cubin for sm_{arch} (cubins for {self.sass_archs})")


def parse(data: bytes) -> FatBinary:
    """Parse a fatbinary container; BadBinary names the offset of anything malformed."""
    data = bytes(data)
    if len(data) < _HEADER.size:
        raise BadBinary(f"fatbinary: {len(data)} bytes, shorter than its {_HEADER.size}-byte header")
    magic, version, header_size, size = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise BadBinary(f"fatbinary: magic {magic:#010x} at offset 0x0, expected {MAGIC:#010x}")
    if version != VERSION:
        raise BadBinary(f"fatbinary: version {version} at offset 0x4, expected {VERSION}")
    if header_size != _HEADER.size:
        raise BadBinary(f"fatbinary: header size {header_size} at offset 0x6, expected {_HEADER.size}")
    end = header_size + size
    if end > len(data):
        raise BadBinary(f"fatbinary: entries of {size:#x} bytes (offset 0x8) run past the end of the "
                        f"{len(data):#x}-byte input")
    entries = []
    offset = header_size
    while offset < end:
        entry, offset = _parse_entry(data, offset, end)
        entries.append(entry)
    if not entries:
        raise BadBinary("fatbinary: no entries")
    return FatBinary(entries=tuple(entries))


def load_file(path: str | Path) -> FatBinary:
    """Parse the fatbinary file at `path`."""
    return parse(Path(path).read_bytes())


def _parse_entry(data: bytes, offset: int, end: int) -> tuple[Entry, int]:
    """Parse the entry whose header starts at `offset`; return it and the offset of the next one."""
    if offset + _ENTRY.size > end:
        raise BadBinary(f"fatbinary: entry header at offset {offset:#x} runs past the end of the "
                        f"container ({end:#x})")
    (kind, _marker, header_size, size, compressed_size, options_offset, minor, major, arch,
     _name_offset, _name_length, flags, _zero, _decompressed) = _ENTRY.unpack_from(data, offset)
    where = f"fatbinary entry at offset {offset:#x}"
    if kind not in _KIND_NAMES:
        raise BadBinary(f"{where}: kind {kind}, expected 1 (PTX) or 2 (ELF)")
    if header_size < _ENTRY.size or header_size % 8 != 0:
        raise BadBinary(f"{where}: header size {header_size} (offset {offset + 4:#x}) is not a "
                        f"multiple of 8 of at least {_ENTRY.size}")
    payload_start = offset + header_size
    payload_end = payload_start + size
    if payload_end > end:
        raise BadBinary(f"{where}: payload of {size:#x} bytes (offset {offset + 8:#x}) runs past the "
                        f"end of the container ({end:#x})")
    if options_offset and options_offset + 8 > header_size:
        raise BadBinary(f"{where}: options offset {options_offset:#x} lies outside its "
                        f"{header_size}-byte header")
    if flags & FLAG_COMPRESSED or compressed_size:
        raise BadBinary(f"{where}: compressed entry (flags {flags:#x}): rebuild with nvcc "
                        f"--no-compress (compute.nv.compiler does)")
    if not flags & FLAG_64BIT:
        raise BadBinary(f"{where}: a 32-bit image (flags {flags:#x}); only 64-bit code is supported")
    if not 0 < arch < _MAX_ARCH:
        raise BadBinary(f"{where}: architecture {arch} (offset {offset + 28:#x}) is not an SM number")
    payload = data[payload_start:payload_end]
    if kind == KIND_ELF and not payload.startswith(_ELF_MAGIC):
        raise BadBinary(f"{where}: an ELF entry whose payload (offset {payload_start:#x}) is not ELF")
    entry = Entry(kind=_KIND_NAMES[kind], arch=arch, version=(major, minor), flags=flags,
                  offset=offset, payload=payload)
    return entry, payload_end
