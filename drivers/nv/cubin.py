"""NVIDIA cubins: the ELF images of SASS that ptxas writes, one per SM architecture.

`parse(data)` returns a Cubin: the SM architecture and, for each kernel entry point, what a launch
needs: the parameter layout in constant bank 0 (each parameter's ordinal, offset and size from
`EIATTR_KPARAM_INFO`, the block's bank offset and size from `EIATTR_PARAM_CBANK` and
`EIATTR_CBANK_PARAM_SIZE`), the register count (`EIATTR_REGCOUNT`), stack frame size
(`EIATTR_FRAME_SIZE`), maximum or required threads per block (`EIATTR_MAX_THREADS`,
`EIATTR_REQNTID`), static shared memory (the size of `.nv.shared.<kernel>`), the size of constant
bank 0 (`.nv.constant0.<kernel>`) and the code (`.text.<kernel>`).

`.nv.info` sections are a list of records `u8 format, u8 attribute, then by format: NVAL (u16 0),
BVAL/HVAL (u16 value), SVAL (u16 length, then that many bytes)`. The attribute and format numbers
below are those of cloudcores/CuAssembler (CuAsm/CuNVInfo.py), which match cuobjdump's names.
Per-function values (register count, frame and stack sizes) sit in the global `.nv.info` section,
keyed by the function's symbol index; the others in `.nv.info.<kernel>`.

Malformed input is BadBinary naming the section and the file offset; no allocation depends on a
size field (everything is a slice of the input).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from hal.errors import BadBinary

# ELF identification and header (the System V gABI; values in include/uapi/linux/elf.h).
_ELF_MAGIC = b"\x7fELF"
_ELFCLASS64 = 2
_ELFDATA2LSB = 1
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
# LLVM's BinaryFormat/ELF.h: EM_CUDA, ELFOSABI_CUDA (51) and ELFOSABI_CUDA_V2 (41). ptxas 12.x/13.x
# writes OS ABI 0x41 with ABI version 8 and keeps the SM number in e_flags bits 8..15 (observed
# on nvcc 13.0 output); the older ABIs keep it in bits 0..7.
EM_CUDA = 190
ELFOSABI_CUDA = 51
ELFOSABI_CUDA_V2 = 41
ELFOSABI_CUDA_ABI8 = 0x41
_SM_SHIFT_ABI8 = 8
_SM_MASK = 0xFF
SHT_NOBITS = 8
SHT_SYMTAB = 2
STT_FUNC = 2
_SHN_LORESERVE = 0xFF00

# CuAsm/CuNVInfo.py: EIFMT_* record formats.
EIFMT_NVAL = 1
EIFMT_BVAL = 2
EIFMT_HVAL = 3
EIFMT_SVAL = 4
# CuAsm/CuNVInfo.py: EIATTR_* attribute numbers (the high byte of its keys).
EIATTR_MAX_THREADS = 0x05
EIATTR_PARAM_CBANK = 0x0A
EIATTR_REQNTID = 0x10
EIATTR_FRAME_SIZE = 0x11
EIATTR_MIN_STACK_SIZE = 0x12
EIATTR_KPARAM_INFO = 0x17
EIATTR_CBANK_PARAM_SIZE = 0x19
EIATTR_MAXREG_COUNT = 0x1B
EIATTR_EXIT_INSTR_OFFSETS = 0x1C
EIATTR_MAX_STACK_SIZE = 0x23
EIATTR_REGCOUNT = 0x2F
EIATTR_CUDA_API_VERSION = 0x37
# EIATTR_KPARAM_INFO value: u32 index, u16 ordinal, u16 offset, u32 word whose bits 0..7 are the
# pointee's log2 alignment, 12..17 the constant bank and 18..31 the size in bytes (the field
# order cuobjdump prints; the size bits checked against every library kernel's signature).
_KPARAM = struct.Struct("<IHHI")
_KPARAM_SIZE_SHIFT = 18
_KPARAM_SIZE_MASK = 0x3FFF
_KPARAM_ALIGN_MASK = 0xFF
# EIATTR_PARAM_CBANK value: u32 symbol index of .nv.constant0.<kernel>, u16 offset, u16 size.
_PARAM_CBANK = struct.Struct("<IHH")


@dataclass(frozen=True)
class Section:
    index: int
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int

    def data(self, blob: bytes) -> bytes:
        return b"" if self.type == SHT_NOBITS else blob[self.offset:self.offset + self.size]


@dataclass(frozen=True)
class Attribute:
    """One `.nv.info` record: attribute number, format, raw value bytes and their file offset."""

    attribute: int
    format: int
    value: bytes
    offset: int

    @property
    def half(self) -> int:
        return int.from_bytes(self.value, "little")

    def words(self) -> tuple[int, ...]:
        usable = len(self.value) // 4 * 4
        return struct.unpack(f"<{usable // 4}I", self.value[:usable])


@dataclass(frozen=True)
class Param:
    """A kernel parameter in the constant-bank parameter block: byte `offset` from its start."""

    ordinal: int
    offset: int
    size: int
    log_alignment: int


@dataclass(frozen=True)
class CubinKernel:
    name: str
    params: tuple[Param, ...]
    param_size: int
    param_bank_offset: int
    registers: int
    frame_size: int
    min_stack_size: int
    max_threads: tuple[int, int, int] | None
    required_threads: tuple[int, int, int] | None
    shared_size: int
    constant0_size: int
    code: bytes
    attributes: tuple[Attribute, ...] = field(repr=False)


@dataclass(frozen=True)
class Cubin:
    arch: int
    os_abi: int
    abi_version: int
    flags: int
    sections: tuple[Section, ...]
    kernels: dict[str, CubinKernel]

    def __getitem__(self, name: str) -> CubinKernel:
        try:
            return self.kernels[name]
        except KeyError:
            raise BadBinary(f"cubin for sm_{self.arch} has no kernel {name!r} "
                            f"(it has {sorted(self.kernels)})") from None


def parse(data: bytes) -> Cubin:
    """Parse a cubin; BadBinary names the section and offset of anything malformed."""
    data = bytes(data)
    arch, os_abi, abi_version, flags, shoff, shnum, shstrndx = _header(data)
    sections = _sections(data, shoff, shnum, shstrndx)
    by_name = {section.name: section for section in sections}
    symbols = _symbols(data, sections)
    per_function = _per_function(data, by_name.get(".nv.info"))
    kernels = {}
    for index, (name, kind, shndx) in enumerate(symbols):
        info = by_name.get(f".nv.info.{name}")
        if kind != STT_FUNC or info is None:
            continue
        kernels[name] = _kernel(data, name, index, shndx, info, by_name, sections, per_function)
    return Cubin(arch=arch, os_abi=os_abi, abi_version=abi_version, flags=flags,
                 sections=tuple(sections), kernels=kernels)


def load_file(path: str | Path) -> Cubin:
    return parse(Path(path).read_bytes())


def parse_info(blob: bytes, offset: int, size: int, where: str) -> list[Attribute]:
    """Decode the `.nv.info` records in blob[offset:offset+size]."""
    records = []
    position = offset
    end = offset + size
    while position < end:
        if position + 4 > end:
            raise BadBinary(f"{where}: record at offset {position:#x} is cut short by the section end")
        fmt = blob[position]
        attribute = blob[position + 1]
        half = int.from_bytes(blob[position + 2:position + 4], "little")
        if fmt in (EIFMT_NVAL, EIFMT_BVAL, EIFMT_HVAL):
            value = blob[position + 2:position + 4]
            following = position + 4
        elif fmt == EIFMT_SVAL:
            following = position + 4 + half
            if following > end:
                raise BadBinary(f"{where}: record at offset {position:#x} has a {half}-byte value "
                                f"running past the section end ({end:#x})")
            value = blob[position + 4:following]
        else:
            raise BadBinary(f"{where}: record at offset {position:#x} has unknown format {fmt}")
        records.append(Attribute(attribute=attribute, format=fmt, value=value, offset=position))
        position = following
    return records


def _header(data: bytes) -> tuple[int, int, int, int, int, int, int]:
    if len(data) < _EHDR.size:
        raise BadBinary(f"cubin: {len(data)} bytes, shorter than an ELF64 header")
    (ident, _etype, machine, _version, _entry, _phoff, shoff, flags, _ehsize, _phentsize, _phnum,
     shentsize, shnum, shstrndx) = _EHDR.unpack_from(data, 0)
    if ident[:4] != _ELF_MAGIC:
        raise BadBinary("cubin: no ELF magic at offset 0x0")
    if ident[4] != _ELFCLASS64 or ident[5] != _ELFDATA2LSB:
        raise BadBinary(f"cubin: class {ident[4]} data {ident[5]} at offset 0x4: need ELF64 little-endian")
    if machine != EM_CUDA:
        raise BadBinary(f"cubin: e_machine {machine} at offset 0x12, expected EM_CUDA ({EM_CUDA})")
    os_abi = ident[7]
    abi_version = ident[8]
    if os_abi == ELFOSABI_CUDA_ABI8 and abi_version >= 8:
        arch = (flags >> _SM_SHIFT_ABI8) & _SM_MASK
    elif os_abi in (ELFOSABI_CUDA, ELFOSABI_CUDA_V2):
        arch = flags & _SM_MASK
    else:
        raise BadBinary(f"cubin: OS ABI {os_abi:#x} version {abi_version} at offset 0x7 is not a "
                        f"CUDA ABI")
    if shentsize != _SHDR.size:
        raise BadBinary(f"cubin: section header size {shentsize} at offset 0x3a, expected {_SHDR.size}")
    if shnum == 0 or shoff + shnum * _SHDR.size > len(data):
        raise BadBinary(f"cubin: {shnum} section headers at offset {shoff:#x} do not fit in "
                        f"{len(data):#x} bytes")
    if shstrndx >= shnum:
        raise BadBinary(f"cubin: section name table index {shstrndx} (offset 0x3e) >= {shnum} sections")
    return arch, os_abi, abi_version, flags, shoff, shnum, shstrndx


def _sections(data: bytes, shoff: int, shnum: int, shstrndx: int) -> list[Section]:
    raw = [_SHDR.unpack_from(data, shoff + i * _SHDR.size) for i in range(shnum)]
    for index, header in enumerate(raw):
        sh_type, sh_offset, sh_size = header[1], header[4], header[5]
        if sh_type != SHT_NOBITS and sh_offset + sh_size > len(data):
            where = shoff + index * _SHDR.size
            raise BadBinary(f"cubin: section {index} (header at offset {where:#x}) spans "
                            f"{sh_offset:#x}+{sh_size:#x}, past the end of the file ({len(data):#x})")
    names = raw[shstrndx]
    strtab = data[names[4]:names[4] + names[5]]
    sections = []
    for index, header in enumerate(raw):
        name = _string(strtab, header[0], f"section {index} name", names[4])
        sections.append(Section(index=index, name=name, type=header[1], flags=header[2],
                                offset=header[4], size=header[5], link=header[6], info=header[7]))
    return sections


def _string(table: bytes, offset: int, what: str, table_offset: int) -> str:
    end = table.find(b"\0", offset)
    if offset >= len(table) or end < 0:
        raise BadBinary(f"cubin: {what} at string offset {offset:#x} (table at file offset "
                        f"{table_offset:#x}) is not a terminated string")
    try:
        return table[offset:end].decode("ascii")
    except UnicodeDecodeError as exc:
        raise BadBinary(f"cubin: {what} at file offset {table_offset + offset:#x} is not ASCII") from exc


def _symbols(data: bytes, sections: list[Section]) -> list[tuple[str, int, int]]:
    symtab = next((section for section in sections if section.type == SHT_SYMTAB), None)
    if symtab is None:
        raise BadBinary("cubin: no symbol table")
    if symtab.link >= len(sections):
        raise BadBinary(f"cubin: .symtab links string table {symtab.link}, past {len(sections)} sections")
    strings = sections[symtab.link]
    table = strings.data(data)
    symbols = []
    for index in range(symtab.size // _SYM.size):
        offset = symtab.offset + index * _SYM.size
        name_offset, info, _other, shndx, _value, _size = _SYM.unpack_from(data, offset)
        name = _string(table, name_offset, f"symbol {index} name", strings.offset)
        symbols.append((name, info & 0xF, shndx))
    return symbols


def _per_function(data: bytes, info: Section | None) -> dict[tuple[int, int], int]:
    """{(attribute, symbol index): value} of the global `.nv.info` records keyed by symbol."""
    values: dict[tuple[int, int], int] = {}
    if info is None:
        return values
    for record in parse_info(data, info.offset, info.size, ".nv.info"):
        if record.format == EIFMT_SVAL and len(record.value) == 8:
            symbol, value = struct.unpack("<II", record.value)
            values[(record.attribute, symbol)] = value
    return values


def _kernel(data: bytes, name: str, index: int, shndx: int, info: Section,
            by_name: dict[str, Section], sections: list[Section],
            per_function: dict[tuple[int, int], int]) -> CubinKernel:
    where = f".nv.info.{name}"
    records = parse_info(data, info.offset, info.size, where)
    params = []
    param_size = 0
    bank_offset = 0
    max_threads = None
    required = None
    for record in records:
        if record.attribute == EIATTR_KPARAM_INFO:
            if record.format != EIFMT_SVAL or len(record.value) != _KPARAM.size:
                raise BadBinary(f"{where}: EIATTR_KPARAM_INFO at offset {record.offset:#x} is not "
                                f"a {_KPARAM.size}-byte value")
            _index, ordinal, offset, word = _KPARAM.unpack(record.value)
            size = (word >> _KPARAM_SIZE_SHIFT) & _KPARAM_SIZE_MASK
            params.append(Param(ordinal=ordinal, offset=offset, size=size,
                                log_alignment=word & _KPARAM_ALIGN_MASK))
        elif record.attribute == EIATTR_CBANK_PARAM_SIZE:
            param_size = record.half
        elif record.attribute == EIATTR_PARAM_CBANK:
            if record.format != EIFMT_SVAL or len(record.value) != _PARAM_CBANK.size:
                raise BadBinary(f"{where}: EIATTR_PARAM_CBANK at offset {record.offset:#x} is not "
                                f"an {_PARAM_CBANK.size}-byte value")
            _symbol, bank_offset, _size = _PARAM_CBANK.unpack(record.value)
        elif record.attribute in (EIATTR_MAX_THREADS, EIATTR_REQNTID):
            words = record.words()
            if len(words) != 3:
                raise BadBinary(f"{where}: thread dimensions at offset {record.offset:#x} are not 3 words")
            if record.attribute == EIATTR_MAX_THREADS:
                max_threads = (words[0], words[1], words[2])
            else:
                required = (words[0], words[1], words[2])
    params.sort(key=lambda param: param.ordinal)
    for param in params:
        if param.offset + param.size > param_size:
            raise BadBinary(f"{where}: parameter {param.ordinal} at {param.offset:#x}+{param.size:#x} "
                            f"lies outside the {param_size:#x}-byte parameter block")
    if shndx == 0 or shndx >= min(len(sections), _SHN_LORESERVE):
        raise BadBinary(f"cubin: kernel {name!r} symbol {index} names section {shndx}")
    text = sections[shndx]
    shared = by_name.get(f".nv.shared.{name}")
    constant0 = by_name.get(f".nv.constant0.{name}")
    return CubinKernel(
        name=name, params=tuple(params), param_size=param_size, param_bank_offset=bank_offset,
        registers=per_function.get((EIATTR_REGCOUNT, index), 0),
        frame_size=per_function.get((EIATTR_FRAME_SIZE, index), 0),
        min_stack_size=per_function.get((EIATTR_MIN_STACK_SIZE, index), 0),
        max_threads=max_threads, required_threads=required,
        shared_size=shared.size if shared is not None else 0,
        constant0_size=constant0.size if constant0 is not None else 0,
        code=text.data(data), attributes=tuple(records))
