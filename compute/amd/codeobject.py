"""Loader of AMD HSA code objects (code object v4/v5 for gfx11): ELF, kernel descriptors, metadata note.

`load(data)` checks the ELF header (ELF64, EM_AMDGPU, the HSA OS ABI, e_flags' mach and xnack/sramecc
modes), the section headers, the symbol table, each kernel's 64-byte descriptor `<name>.kd` in
.rodata, and the NT_AMDGPU_METADATA note (MessagePack, decoded by compute.amd.msgpack), and returns a
CodeObject whose `programs` are typed Program objects: code, entry offset, decoded descriptor,
COMPUTE_PGM_RSRC1/2/3 and the user SGPR layout the hardware loads. Anything malformed is BadBinary
naming the section, field or offset. Nothing here touches a device.

Facts come from LLVM 16 (Debian llvm-16-dev): llvm/BinaryFormat/ELF.h (EM_AMDGPU, ELFOSABI_AMDGPU_HSA,
EF_AMDGPU_*, NT_AMDGPU_METADATA), llvm/Support/AMDHSAKernelDescriptor.h (kernel_descriptor_t and its
bit fields) and LLVM's AMDGPUUsage document (metadata keys, initial SGPR order); generic ELF values
from the kernel's include/uapi/linux/elf.h.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from compute.amd import msgpack
from hal.errors import BadBinary

# --- generic ELF (include/uapi/linux/elf.h) ---
ELF_MAGIC = b"\x7fELF"          # elf.h: ELFMAG
EI_CLASS = 4                    # elf.h: EI_CLASS
EI_DATA = 5                     # elf.h: EI_DATA
EI_OSABI = 7                    # elf.h: EI_OSABI
EI_ABIVERSION = 8               # elf.h: EI_ABIVERSION (index in e_ident; not in the uapi header)
ELFCLASS64 = 2                  # elf.h: ELFCLASS64
ELFDATA2LSB = 1                 # elf.h: ELFDATA2LSB
ET_DYN = 3                      # elf.h: ET_DYN
PT_LOAD = 1                     # elf.h: PT_LOAD
SHT_SYMTAB = 2                  # elf.h: SHT_SYMTAB
SHT_NOTE = 7                    # elf.h: SHT_NOTE
SHT_NOBITS = 8                  # elf.h: SHT_NOBITS
SHT_DYNSYM = 11                 # elf.h: SHT_DYNSYM
SHF_EXECINSTR = 0x4             # elf.h: SHF_EXECINSTR
SHN_UNDEF = 0                   # elf.h: SHN_UNDEF
SHN_LORESERVE = 0xFF00          # elf.h: SHN_LORESERVE
STT_OBJECT = 1                  # elf.h: STT_OBJECT
STT_FUNC = 2                    # elf.h: STT_FUNC
# elf.h: Elf64_Ehdr, Elf64_Phdr, Elf64_Shdr, Elf64_Sym, Elf64_Nhdr (little-endian, as ELFDATA2LSB says)
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_NHDR = struct.Struct("<III")
NOTE_ALIGN = 4                  # elf.h: Elf64_Nhdr; AMDGPUUsage: note name and desc are 4-byte aligned

# --- AMDGPU ELF (llvm-16 llvm/BinaryFormat/ELF.h) ---
EM_AMDGPU = 224                 # ELF.h: EM_AMDGPU
ELFOSABI_AMDGPU_HSA = 64        # ELF.h: ELFOSABI_AMDGPU_HSA
ELFABIVERSION_AMDGPU_HSA_V4 = 2  # ELF.h: ELFABIVERSION_AMDGPU_HSA_V4
ELFABIVERSION_AMDGPU_HSA_V5 = 3  # ELF.h: ELFABIVERSION_AMDGPU_HSA_V5
CODE_OBJECT_VERSIONS = {ELFABIVERSION_AMDGPU_HSA_V4: 4, ELFABIVERSION_AMDGPU_HSA_V5: 5}
EF_AMDGPU_MACH = 0x0FF          # ELF.h: EF_AMDGPU_MACH
# ELF.h: EF_AMDGPU_MACH_AMDGCN_GFX1100..GFX1103 (the RDNA3 machs)
MACH_NAMES = {0x041: "gfx1100", 0x046: "gfx1101", 0x047: "gfx1102", 0x044: "gfx1103"}
EF_AMDGPU_FEATURE_XNACK_V4 = 0x300    # ELF.h: EF_AMDGPU_FEATURE_XNACK_V4
EF_AMDGPU_FEATURE_SRAMECC_V4 = 0xC00  # ELF.h: EF_AMDGPU_FEATURE_SRAMECC_V4
# ELF.h: EF_AMDGPU_FEATURE_{XNACK,SRAMECC}_{UNSUPPORTED,ANY,OFF,ON}_V4, as the field's value 0..3
FEATURE_MODES = ("unsupported", "any", "off", "on")
_KNOWN_E_FLAGS = EF_AMDGPU_MACH | EF_AMDGPU_FEATURE_XNACK_V4 | EF_AMDGPU_FEATURE_SRAMECC_V4
NT_AMDGPU_METADATA = 32         # ELF.h: NT_AMDGPU_METADATA
NOTE_OWNER_AMDGPU = b"AMDGPU\0"  # AMDGPUUsage "Note Records": the owner name of code object v3+ notes

# --- kernel descriptor (llvm-16 llvm/Support/AMDHSAKernelDescriptor.h: kernel_descriptor_t) ---
KERNEL_DESCRIPTOR_SIZE = 64
KERNEL_DESCRIPTOR_ALIGN = 64    # AMDGPUUsage "Kernel Descriptor": 64-byte aligned
# group, private, kernarg_size, reserved0[4], entry offset, reserved1[20], rsrc3, rsrc1, rsrc2,
# kernel_code_properties, reserved2[6]
_KD = struct.Struct("<III4sq20sIIIH6s")
KD_SYMBOL_SUFFIX = ".kd"        # AMDGPUUsage "Symbols": a kernel descriptor is named <kernel>.kd


def _bits(shift: int, width: int) -> tuple[int, int]:
    return shift, width


# AMDHSAKernelDescriptor.h: COMPUTE_PGM_RSRC1(NAME, SHIFT, WIDTH)
RSRC1_FIELDS = {
    "GRANULATED_WORKITEM_VGPR_COUNT": _bits(0, 6), "GRANULATED_WAVEFRONT_SGPR_COUNT": _bits(6, 4),
    "PRIORITY": _bits(10, 2), "FLOAT_ROUND_MODE_32": _bits(12, 2),
    "FLOAT_ROUND_MODE_16_64": _bits(14, 2), "FLOAT_DENORM_MODE_32": _bits(16, 2),
    "FLOAT_DENORM_MODE_16_64": _bits(18, 2), "PRIV": _bits(20, 1), "ENABLE_DX10_CLAMP": _bits(21, 1),
    "DEBUG_MODE": _bits(22, 1), "ENABLE_IEEE_MODE": _bits(23, 1), "BULKY": _bits(24, 1),
    "CDBG_USER": _bits(25, 1), "FP16_OVFL": _bits(26, 1), "RESERVED0": _bits(27, 2),
    "WGP_MODE": _bits(29, 1), "MEM_ORDERED": _bits(30, 1), "FWD_PROGRESS": _bits(31, 1),
}
# AMDHSAKernelDescriptor.h: COMPUTE_PGM_RSRC2(NAME, SHIFT, WIDTH)
RSRC2_FIELDS = {
    "ENABLE_PRIVATE_SEGMENT": _bits(0, 1), "USER_SGPR_COUNT": _bits(1, 5),
    "ENABLE_TRAP_HANDLER": _bits(6, 1), "ENABLE_SGPR_WORKGROUP_ID_X": _bits(7, 1),
    "ENABLE_SGPR_WORKGROUP_ID_Y": _bits(8, 1), "ENABLE_SGPR_WORKGROUP_ID_Z": _bits(9, 1),
    "ENABLE_SGPR_WORKGROUP_INFO": _bits(10, 1), "ENABLE_VGPR_WORKITEM_ID": _bits(11, 2),
    "ENABLE_EXCEPTION_ADDRESS_WATCH": _bits(13, 1), "ENABLE_EXCEPTION_MEMORY": _bits(14, 1),
    "GRANULATED_LDS_SIZE": _bits(15, 9),
    "ENABLE_EXCEPTION_IEEE_754_FP_INVALID_OPERATION": _bits(24, 1),
    "ENABLE_EXCEPTION_FP_DENORMAL_SOURCE": _bits(25, 1),
    "ENABLE_EXCEPTION_IEEE_754_FP_DIVISION_BY_ZERO": _bits(26, 1),
    "ENABLE_EXCEPTION_IEEE_754_FP_OVERFLOW": _bits(27, 1),
    "ENABLE_EXCEPTION_IEEE_754_FP_UNDERFLOW": _bits(28, 1),
    "ENABLE_EXCEPTION_IEEE_754_FP_INEXACT": _bits(29, 1),
    "ENABLE_EXCEPTION_INT_DIVIDE_BY_ZERO": _bits(30, 1), "RESERVED0": _bits(31, 1),
}
# AMDHSAKernelDescriptor.h: COMPUTE_PGM_RSRC3_GFX10_PLUS(NAME, SHIFT, WIDTH)
RSRC3_FIELDS = {
    "SHARED_VGPR_COUNT": _bits(0, 4), "INST_PREF_SIZE": _bits(4, 6), "TRAP_ON_START": _bits(10, 1),
    "TRAP_ON_END": _bits(11, 1), "RESERVED0": _bits(12, 19), "IMAGE_OP": _bits(31, 1),
}
# AMDHSAKernelDescriptor.h: KERNEL_CODE_PROPERTY(NAME, SHIFT, WIDTH)
KERNEL_CODE_PROPERTY_FIELDS = {
    "ENABLE_SGPR_PRIVATE_SEGMENT_BUFFER": _bits(0, 1), "ENABLE_SGPR_DISPATCH_PTR": _bits(1, 1),
    "ENABLE_SGPR_QUEUE_PTR": _bits(2, 1), "ENABLE_SGPR_KERNARG_SEGMENT_PTR": _bits(3, 1),
    "ENABLE_SGPR_DISPATCH_ID": _bits(4, 1), "ENABLE_SGPR_FLAT_SCRATCH_INIT": _bits(5, 1),
    "ENABLE_SGPR_PRIVATE_SEGMENT_SIZE": _bits(6, 1), "RESERVED0": _bits(7, 3),
    "ENABLE_WAVEFRONT_SIZE32": _bits(10, 1), "USES_DYNAMIC_STACK": _bits(11, 1),
    "RESERVED1": _bits(12, 4),
}
# AMDGPUUsage "Initial Kernel Execution State", user SGPRs: the order the hardware loads them and the
# number of SGPRs each takes, keyed by the kernel_code_properties bit that enables it.
USER_SGPR_ORDER = (
    ("ENABLE_SGPR_PRIVATE_SEGMENT_BUFFER", "private_segment_buffer", 4),
    ("ENABLE_SGPR_DISPATCH_PTR", "dispatch_ptr", 2),
    ("ENABLE_SGPR_QUEUE_PTR", "queue_ptr", 2),
    ("ENABLE_SGPR_KERNARG_SEGMENT_PTR", "kernarg_segment_ptr", 2),
    ("ENABLE_SGPR_DISPATCH_ID", "dispatch_id", 2),
    ("ENABLE_SGPR_FLAT_SCRATCH_INIT", "flat_scratch_init", 2),
    ("ENABLE_SGPR_PRIVATE_SEGMENT_SIZE", "private_segment_size", 1),
)
# The same table, system SGPRs: they follow the USER_SGPR_COUNT user SGPRs, enabled by RSRC2 bits.
SYSTEM_SGPR_ORDER = (
    ("ENABLE_SGPR_WORKGROUP_ID_X", "workgroup_id_x", 1),
    ("ENABLE_SGPR_WORKGROUP_ID_Y", "workgroup_id_y", 1),
    ("ENABLE_SGPR_WORKGROUP_ID_Z", "workgroup_id_z", 1),
    ("ENABLE_SGPR_WORKGROUP_INFO", "workgroup_info", 1),
    ("ENABLE_PRIVATE_SEGMENT", "private_segment_wave_offset", 1),
)
# Loaded images larger than this are not code objects clang makes; refusing them bounds memory.
MAX_IMAGE_BYTES = 256 << 20
# AMDGPUUsage "Code Object V3 Metadata": amdhsa.version major for code object v3 and later.
METADATA_VERSION_MAJOR = 1


def field_value(word: int, fields: dict[str, tuple[int, int]], name: str) -> int:
    """The value of bit field `name` (from one of the *_FIELDS tables) in `word`."""
    shift, width = fields[name]
    return (word >> shift) & ((1 << width) - 1)


def decode_fields(word: int, fields: dict[str, tuple[int, int]]) -> dict[str, int]:
    """Every field of `word` by name."""
    return {name: field_value(word, fields, name) for name in fields}


@dataclass(frozen=True)
class Section:
    """One section header: name, type, flags, address, file offset, size, link."""

    index: int
    name: str
    type: int
    flags: int
    address: int
    offset: int
    size: int
    link: int
    entry_size: int


@dataclass(frozen=True)
class Segment:
    """One PT_LOAD program header: where its file bytes go in the loaded image."""

    offset: int
    address: int
    file_size: int
    memory_size: int
    flags: int


@dataclass(frozen=True)
class KernelDescriptor:
    """kernel_descriptor_t as stored (AMDHSAKernelDescriptor.h), its words kept raw and decodable."""

    group_segment_fixed_size: int
    private_segment_fixed_size: int
    kernarg_size: int
    kernel_code_entry_byte_offset: int
    compute_pgm_rsrc1: int
    compute_pgm_rsrc2: int
    compute_pgm_rsrc3: int
    kernel_code_properties: int

    @property
    def rsrc1(self) -> dict[str, int]:
        return decode_fields(self.compute_pgm_rsrc1, RSRC1_FIELDS)

    @property
    def rsrc2(self) -> dict[str, int]:
        return decode_fields(self.compute_pgm_rsrc2, RSRC2_FIELDS)

    @property
    def rsrc3(self) -> dict[str, int]:
        return decode_fields(self.compute_pgm_rsrc3, RSRC3_FIELDS)

    @property
    def properties(self) -> dict[str, int]:
        return decode_fields(self.kernel_code_properties, KERNEL_CODE_PROPERTY_FIELDS)

    @property
    def wavefront_size(self) -> int:
        wave32 = field_value(self.kernel_code_properties, KERNEL_CODE_PROPERTY_FIELDS,
                             "ENABLE_WAVEFRONT_SIZE32")
        return 32 if wave32 else 64

    @property
    def user_sgpr_count(self) -> int:
        return field_value(self.compute_pgm_rsrc2, RSRC2_FIELDS, "USER_SGPR_COUNT")


@dataclass(frozen=True)
class KernelArg:
    """One kernel argument from the metadata note (`.args` entry)."""

    name: str
    type_name: str
    size: int
    offset: int
    value_kind: str
    address_space: str | None
    is_const: bool


@dataclass(frozen=True)
class KernelMetadata:
    """One `amdhsa.kernels` entry of the metadata note."""

    name: str
    symbol: str
    args: tuple[KernelArg, ...]
    kernarg_segment_size: int
    kernarg_segment_align: int
    group_segment_fixed_size: int
    private_segment_fixed_size: int
    wavefront_size: int
    sgpr_count: int
    vgpr_count: int
    max_flat_workgroup_size: int
    reqd_workgroup_size: tuple[int, int, int] | None


@dataclass(frozen=True)
class SGPRSlot:
    """A value the hardware loads into SGPRs `first`..`first + count - 1` at wave launch."""

    name: str
    first: int
    count: int


@dataclass(frozen=True)
class Program:
    """One kernel, ready for a dispatch: where its code is, how to launch it, what it takes.

    `code` is the whole .text section (kernels may call functions beside them) and `entry_offset` the
    kernel's first instruction within it; `code_address` and `descriptor_address` are the ELF virtual
    addresses of .text and of the descriptor (the image offsets when the whole image is loaded).
    """

    name: str
    code: bytes = field(repr=False)
    code_address: int
    entry_offset: int
    code_size: int
    descriptor_address: int
    descriptor: KernelDescriptor
    metadata: KernelMetadata
    user_sgprs: tuple[SGPRSlot, ...]
    system_sgprs: tuple[SGPRSlot, ...]

    @property
    def args(self) -> tuple[KernelArg, ...]:
        return self.metadata.args

    @property
    def rsrc1(self) -> int:
        return self.descriptor.compute_pgm_rsrc1

    @property
    def rsrc2(self) -> int:
        return self.descriptor.compute_pgm_rsrc2

    @property
    def rsrc3(self) -> int:
        return self.descriptor.compute_pgm_rsrc3

    @property
    def wavefront_size(self) -> int:
        return self.descriptor.wavefront_size

    @property
    def kernarg_size(self) -> int:
        return self.metadata.kernarg_segment_size

    @property
    def kernarg_align(self) -> int:
        return self.metadata.kernarg_segment_align

    @property
    def lds_size(self) -> int:
        return self.descriptor.group_segment_fixed_size

    @property
    def scratch_size(self) -> int:
        return self.descriptor.private_segment_fixed_size

    def user_sgpr(self, name: str) -> SGPRSlot | None:
        """The slot of user SGPR `name` (e.g. "kernarg_segment_ptr"), or None when not enabled."""
        for slot in self.user_sgprs:
            if slot.name == name:
                return slot
        return None


@dataclass(frozen=True)
class CodeObject:
    """A loaded code object: target, sections, the PT_LOAD segments and the programs by name."""

    mach: str
    e_flags: int
    code_object_version: int
    xnack: str
    sramecc: str
    target: str
    sections: tuple[Section, ...] = field(repr=False)
    segments: tuple[Segment, ...] = field(repr=False)
    programs: dict[str, Program]
    metadata: dict[str, Any] = field(repr=False)
    data: bytes = field(repr=False)

    def image(self) -> bytes:
        """The loaded image: every PT_LOAD segment at its virtual address, zero-filled between."""
        size = max((seg.address + seg.memory_size for seg in self.segments), default=0)
        out = bytearray(size)
        for seg in self.segments:
            out[seg.address:seg.address + seg.file_size] = self.data[seg.offset:seg.offset + seg.file_size]
        return bytes(out)

    def __getitem__(self, name: str) -> Program:
        try:
            return self.programs[name]
        except KeyError:
            known = sorted(self.programs)
            raise KeyError(f"no kernel {name!r} in this code object; it has {known}") from None


def load(data: bytes | bytearray | memoryview) -> CodeObject:
    """Parse an HSA code object; every malformation is BadBinary naming what is wrong and where."""
    return _Loader(bytes(data)).load()


def load_file(path: str) -> CodeObject:
    """Read and parse the code object at `path`."""
    with open(path, "rb") as handle:
        return load(handle.read())


class _Loader:
    """One parse: header, sections, segments, symbols, note, then each kernel."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def unpack(self, layout: struct.Struct, offset: int, what: str) -> tuple[Any, ...]:
        if offset < 0 or offset + layout.size > len(self.data):
            raise BadBinary(f"{what}: {layout.size} bytes at offset {offset} lie beyond the end of the "
                            f"{len(self.data)}-byte file")
        return layout.unpack_from(self.data, offset)

    def load(self) -> CodeObject:
        header = self.header()
        e_flags, abi_version, phoff, phentsize, phnum, shoff, shentsize, shnum, shstrndx = header
        mach = MACH_NAMES[e_flags & EF_AMDGPU_MACH]
        sections = self.sections(shoff, shentsize, shnum, shstrndx)
        segments = self.segments(phoff, phentsize, phnum)
        metadata = self.metadata(sections)
        target = self.check_target(metadata, mach, e_flags)
        symbols = self.symbols(sections)
        text = self.text_section(sections)
        kernels = self.kernel_metadata(metadata)
        programs = {}
        for meta in kernels:
            programs[meta.name] = self.program(meta, symbols, sections, text)
        xnack = FEATURE_MODES[(e_flags & EF_AMDGPU_FEATURE_XNACK_V4) >> 8]
        sramecc = FEATURE_MODES[(e_flags & EF_AMDGPU_FEATURE_SRAMECC_V4) >> 10]
        return CodeObject(mach=mach, e_flags=e_flags, code_object_version=CODE_OBJECT_VERSIONS[abi_version],
                          xnack=xnack, sramecc=sramecc, target=target, sections=tuple(sections),
                          segments=tuple(segments), programs=programs, metadata=metadata, data=self.data)

    # --- ELF structure ---

    def header(self) -> tuple[int, ...]:
        if len(self.data) < _EHDR.size:
            raise BadBinary(f"ELF header: file is {len(self.data)} bytes, shorter than the "
                            f"{_EHDR.size}-byte Elf64_Ehdr")
        (ident, e_type, e_machine, _version, _entry, phoff, shoff, e_flags, ehsize, phentsize, phnum,
         shentsize, shnum, shstrndx) = _EHDR.unpack_from(self.data, 0)
        if ident[:4] != ELF_MAGIC:
            raise BadBinary(f"ELF header: e_ident magic is {ident[:4]!r}, not {ELF_MAGIC!r}")
        if ident[EI_CLASS] != ELFCLASS64:
            raise BadBinary(f"ELF header: EI_CLASS is {ident[EI_CLASS]}, AMDGPU code objects are ELFCLASS64")
        if ident[EI_DATA] != ELFDATA2LSB:
            raise BadBinary(f"ELF header: EI_DATA is {ident[EI_DATA]}, "
                            "AMDGPU code objects are little-endian")
        if ident[EI_OSABI] != ELFOSABI_AMDGPU_HSA:
            raise BadBinary(f"ELF header: EI_OSABI is {ident[EI_OSABI]}, not ELFOSABI_AMDGPU_HSA "
                            f"({ELFOSABI_AMDGPU_HSA})")
        abi_version = ident[EI_ABIVERSION]
        if abi_version not in CODE_OBJECT_VERSIONS:
            raise BadBinary(f"ELF header: EI_ABIVERSION {abi_version} is not code object v4 or v5 "
                            "(rebuild with -mcode-object-version=4)")
        if e_machine != EM_AMDGPU:
            raise BadBinary(f"ELF header: e_machine is {e_machine}, not EM_AMDGPU ({EM_AMDGPU})")
        if e_type != ET_DYN:
            raise BadBinary(f"ELF header: e_type is {e_type}, a loadable code object is ET_DYN "
                            "(link it with ld.lld -shared)")
        if ehsize != _EHDR.size:
            raise BadBinary(f"ELF header: e_ehsize is {ehsize}, not {_EHDR.size}")
        if e_flags & ~_KNOWN_E_FLAGS:
            raise BadBinary(f"ELF header: e_flags 0x{e_flags:x} has unknown bits "
                            f"0x{e_flags & ~_KNOWN_E_FLAGS:x}")
        if e_flags & EF_AMDGPU_MACH not in MACH_NAMES:
            raise BadBinary(f"ELF header: e_flags mach 0x{e_flags & EF_AMDGPU_MACH:02x} is not an RDNA3 "
                            f"target ({', '.join(sorted(MACH_NAMES.values()))})")
        return e_flags, abi_version, phoff, phentsize, phnum, shoff, shentsize, shnum, shstrndx

    def check_range(self, offset: int, size: int, what: str) -> None:
        if offset + size > len(self.data):
            raise BadBinary(f"{what}: bytes {offset}..{offset + size} lie beyond the end of the "
                            f"{len(self.data)}-byte file")

    def sections(self, shoff: int, shentsize: int, shnum: int, shstrndx: int) -> list[Section]:
        if shnum == 0:
            raise BadBinary("ELF header: e_shnum is 0, the code object has no section headers")
        if shentsize != _SHDR.size:
            raise BadBinary(f"ELF header: e_shentsize is {shentsize}, not {_SHDR.size}")
        self.check_range(shoff, shnum * _SHDR.size, "section header table (e_shoff, e_shnum)")
        if shstrndx >= shnum:
            raise BadBinary(f"ELF header: e_shstrndx {shstrndx} is not below e_shnum {shnum}")
        raw = [_SHDR.unpack_from(self.data, shoff + i * _SHDR.size) for i in range(shnum)]
        for index, (_name, sh_type, _flags, _addr, offset, size, *_rest) in enumerate(raw):
            if sh_type != SHT_NOBITS:
                self.check_range(offset, size, f"section {index} (sh_offset, sh_size)")
        names_offset = raw[shstrndx][4]
        names_size = raw[shstrndx][5]
        sections = []
        for index, (name_at, sh_type, flags, addr, offset, size, link, _info, _align, entsize) in \
                enumerate(raw):
            name = self.string(names_offset, names_size, name_at, f"section {index} sh_name")
            sections.append(Section(index=index, name=name, type=sh_type, flags=flags, address=addr,
                                    offset=offset, size=size, link=link, entry_size=entsize))
        return sections

    def string(self, table_offset: int, table_size: int, index: int, what: str) -> str:
        if index >= table_size:
            raise BadBinary(f"{what}: string index {index} is past the {table_size}-byte string table")
        start = table_offset + index
        end = self.data.find(b"\0", start, table_offset + table_size)
        if end < 0:
            raise BadBinary(f"{what}: string at offset {start} is not NUL-terminated within its table")
        try:
            return self.data[start:end].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadBinary(f"{what}: string at offset {start} is not UTF-8") from exc

    def segments(self, phoff: int, phentsize: int, phnum: int) -> list[Segment]:
        if phnum and phentsize != _PHDR.size:
            raise BadBinary(f"ELF header: e_phentsize is {phentsize}, not {_PHDR.size}")
        self.check_range(phoff, phnum * _PHDR.size, "program header table (e_phoff, e_phnum)")
        segments = []
        for index in range(phnum):
            p_type, p_flags, offset, vaddr, _paddr, filesz, memsz, _align = \
                _PHDR.unpack_from(self.data, phoff + index * _PHDR.size)
            if p_type != PT_LOAD:
                continue
            what = f"program header {index} (PT_LOAD)"
            if filesz > memsz:
                raise BadBinary(f"{what}: p_filesz {filesz} exceeds p_memsz {memsz}")
            self.check_range(offset, filesz, f"{what} p_offset, p_filesz")
            if vaddr + memsz > MAX_IMAGE_BYTES:
                raise BadBinary(f"{what}: p_vaddr 0x{vaddr:x} + p_memsz 0x{memsz:x} exceeds the "
                                f"{MAX_IMAGE_BYTES >> 20} MiB a code object image may span")
            segments.append(Segment(offset=offset, address=vaddr, file_size=filesz, memory_size=memsz,
                                    flags=p_flags))
        if not segments:
            raise BadBinary("program headers: no PT_LOAD segment, nothing to load")
        return segments

    def section_bytes(self, section: Section) -> bytes:
        return self.data[section.offset:section.offset + section.size]

    def symbols(self, sections: list[Section]) -> dict[str, tuple[int, int, int, int]]:
        """Defined symbols by name: (value, size, type, section index); .symtab, else .dynsym."""
        tables = [s for s in sections if s.type == SHT_SYMTAB]
        if not tables:
            tables = [s for s in sections if s.type == SHT_DYNSYM]
        if not tables:
            raise BadBinary("sections: no .symtab or .dynsym, kernel descriptors cannot be found")
        table = tables[0]
        if table.size % _SYM.size:
            raise BadBinary(f"section {table.name}: sh_size {table.size} is not a multiple of the "
                            f"{_SYM.size}-byte Elf64_Sym")
        if table.link >= len(sections):
            raise BadBinary(f"section {table.name}: sh_link {table.link} names no section")
        strtab = sections[table.link]
        found = {}
        for index in range(table.size // _SYM.size):
            entry_at = table.offset + index * _SYM.size
            name_at, info, _other, shndx, value, size = _SYM.unpack_from(self.data, entry_at)
            if shndx == SHN_UNDEF or shndx >= SHN_LORESERVE or name_at == 0:
                continue
            name = self.string(strtab.offset, strtab.size, name_at, f"{table.name} symbol {index} st_name")
            if shndx >= len(sections):
                raise BadBinary(f"{table.name} symbol {name!r}: st_shndx {shndx} names no section")
            found[name] = (value, size, info & 0xF, shndx)
        return found

    def text_section(self, sections: list[Section]) -> Section:
        texts = [s for s in sections if s.name == ".text"]
        if not texts:
            raise BadBinary("sections: no .text section")
        text = texts[0]
        if not text.flags & SHF_EXECINSTR or text.type == SHT_NOBITS:
            raise BadBinary("section .text: not an executable section with contents (sh_flags, sh_type)")
        return text

    # --- metadata note ---

    def metadata(self, sections: list[Section]) -> dict[str, Any]:
        blobs = []
        for section in sections:
            if section.type == SHT_NOTE:
                blobs.extend(self.notes(section))
        if not blobs:
            raise BadBinary("notes: no NT_AMDGPU_METADATA note with owner AMDGPU")
        if len(blobs) > 1:
            raise BadBinary(f"notes: {len(blobs)} NT_AMDGPU_METADATA notes, a code object has one")
        decoded = msgpack.unpack(blobs[0], what="NT_AMDGPU_METADATA note")
        if not isinstance(decoded, dict):
            raise BadBinary("NT_AMDGPU_METADATA note: the top-level value is not a map")
        return decoded

    def notes(self, section: Section) -> list[bytes]:
        found = []
        pos = section.offset
        end = section.offset + section.size
        while pos < end:
            what = f"section {section.name} note at offset {pos}"
            if pos + _NHDR.size > end:
                raise BadBinary(f"{what}: the 12-byte note header runs past the section end ({end})")
            namesz, descsz, note_type = _NHDR.unpack_from(self.data, pos)
            name_at = pos + _NHDR.size
            desc_at = name_at + _align(namesz, NOTE_ALIGN)
            next_at = desc_at + _align(descsz, NOTE_ALIGN)
            if desc_at + descsz > end:
                raise BadBinary(f"{what}: n_namesz {namesz} + n_descsz {descsz} overflow the section "
                                f"({end - name_at} bytes remain)")
            name = self.data[name_at:name_at + namesz]
            if name == NOTE_OWNER_AMDGPU and note_type == NT_AMDGPU_METADATA:
                found.append(self.data[desc_at:desc_at + descsz])
            pos = next_at
        return found

    def check_target(self, metadata: dict[str, Any], mach: str, e_flags: int) -> str:
        version = metadata.get("amdhsa.version")
        if not (isinstance(version, list) and len(version) == 2 and all(type(v) is int for v in version)):
            raise BadBinary(f"metadata amdhsa.version: {version!r} is not [major, minor]")
        if version[0] != METADATA_VERSION_MAJOR:
            raise BadBinary(f"metadata amdhsa.version: major {version[0]}, "
                            f"expected {METADATA_VERSION_MAJOR}")
        target = metadata.get("amdhsa.target")
        if not isinstance(target, str):
            raise BadBinary(f"metadata amdhsa.target: {target!r} is not a string")
        processor = target.rsplit("--", 1)[-1].split(":")[0]
        if processor != mach:
            raise BadBinary(f"metadata amdhsa.target: {target!r} names {processor!r} but e_flags "
                            f"0x{e_flags:x} says {mach}")
        return target

    def kernel_metadata(self, metadata: dict[str, Any]) -> list[KernelMetadata]:
        kernels = metadata.get("amdhsa.kernels")
        if not isinstance(kernels, list) or not kernels:
            raise BadBinary("metadata amdhsa.kernels: missing or empty, the code object has no kernels")
        result = []
        names = set()
        for index, entry in enumerate(kernels):
            meta = _kernel_entry(entry, f"metadata amdhsa.kernels[{index}]")
            if meta.name in names:
                raise BadBinary(f"metadata amdhsa.kernels[{index}]: kernel {meta.name!r} appears twice")
            names.add(meta.name)
            result.append(meta)
        return result

    # --- kernels ---

    def program(self, meta: KernelMetadata, symbols: dict[str, tuple[int, int, int, int]],
                sections: list[Section], text: Section) -> Program:
        what = f"kernel {meta.name!r} descriptor {meta.symbol!r}"
        if not meta.symbol.endswith(KD_SYMBOL_SUFFIX) or meta.symbol not in symbols:
            raise BadBinary(f"{what}: no such symbol in the symbol table")
        kd_address, kd_size, kd_type, kd_shndx = symbols[meta.symbol]
        if kd_type != STT_OBJECT or kd_size != KERNEL_DESCRIPTOR_SIZE:
            raise BadBinary(f"{what}: symbol is type {kd_type} size {kd_size}, expected an STT_OBJECT "
                            f"of {KERNEL_DESCRIPTOR_SIZE} bytes")
        if kd_address % KERNEL_DESCRIPTOR_ALIGN:
            raise BadBinary(f"{what}: address 0x{kd_address:x} is not "
                            f"{KERNEL_DESCRIPTOR_ALIGN}-byte aligned")
        home = sections[kd_shndx]
        inside = home.address <= kd_address
        inside = inside and kd_address + KERNEL_DESCRIPTOR_SIZE <= home.address + home.size
        if home.type == SHT_NOBITS or not inside:
            raise BadBinary(f"{what}: address 0x{kd_address:x} is out of range of section {home.name} "
                            f"(0x{home.address:x}, {home.size} bytes)")
        descriptor = self.descriptor(home.offset + kd_address - home.address, what)
        entry = kd_address + descriptor.kernel_code_entry_byte_offset
        if not text.address <= entry < text.address + text.size:
            raise BadBinary(f"{what}: kernel_code_entry_byte_offset "
                            f"{descriptor.kernel_code_entry_byte_offset} "
                            f"points to 0x{entry:x}, outside .text (0x{text.address:x}, {text.size} bytes)")
        code_size = text.address + text.size - entry
        function = symbols.get(meta.name)
        if function is not None and function[0] == entry and function[2] == STT_FUNC:
            code_size = min(code_size, function[1])
        _check_against_metadata(descriptor, meta, what)
        user_sgprs, system_sgprs = _sgpr_layout(descriptor, what)
        return Program(name=meta.name, code=self.section_bytes(text), code_address=text.address,
                       entry_offset=entry - text.address, code_size=code_size, descriptor_address=kd_address,
                       descriptor=descriptor, metadata=meta, user_sgprs=user_sgprs,
                       system_sgprs=system_sgprs)

    def descriptor(self, offset: int, what: str) -> KernelDescriptor:
        (group, private, kernarg, reserved0, entry_offset, reserved1, rsrc3, rsrc1, rsrc2, properties,
         reserved2) = self.unpack(_KD, offset, what)
        for name, raw in (("reserved0", reserved0), ("reserved1", reserved1), ("reserved2", reserved2)):
            if any(raw):
                raise BadBinary(f"{what}: {name} is not zero (file offset {offset})")
        for word_name, word, fields in (("compute_pgm_rsrc1", rsrc1, RSRC1_FIELDS),
                                        ("compute_pgm_rsrc2", rsrc2, RSRC2_FIELDS),
                                        ("compute_pgm_rsrc3", rsrc3, RSRC3_FIELDS),
                                        ("kernel_code_properties", properties, KERNEL_CODE_PROPERTY_FIELDS)):
            for field_name in fields:
                if field_name.startswith("RESERVED") and field_value(word, fields, field_name):
                    raise BadBinary(f"{what}: {word_name} 0x{word:x} sets reserved field {field_name}")
        return KernelDescriptor(group_segment_fixed_size=group, private_segment_fixed_size=private,
                                kernarg_size=kernarg, kernel_code_entry_byte_offset=entry_offset,
                                compute_pgm_rsrc1=rsrc1, compute_pgm_rsrc2=rsrc2, compute_pgm_rsrc3=rsrc3,
                                kernel_code_properties=properties)


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def _sgpr_layout(descriptor: KernelDescriptor,
                 what: str) -> tuple[tuple[SGPRSlot, ...], tuple[SGPRSlot, ...]]:
    """User SGPRs in hardware order from s0; system SGPRs after the USER_SGPR_COUNT user SGPRs."""
    properties = descriptor.properties
    user = []
    next_sgpr = 0
    for bit, name, count in USER_SGPR_ORDER:
        if properties[bit]:
            user.append(SGPRSlot(name=name, first=next_sgpr, count=count))
            next_sgpr += count
    if next_sgpr > descriptor.user_sgpr_count:
        raise BadBinary(f"{what}: kernel_code_properties enable {next_sgpr} user SGPRs but "
                        f"compute_pgm_rsrc2 USER_SGPR_COUNT is {descriptor.user_sgpr_count}")
    rsrc2 = descriptor.rsrc2
    system = []
    next_sgpr = descriptor.user_sgpr_count
    for bit, name, count in SYSTEM_SGPR_ORDER:
        if rsrc2[bit]:
            system.append(SGPRSlot(name=name, first=next_sgpr, count=count))
            next_sgpr += count
    return tuple(user), tuple(system)


def _check_against_metadata(descriptor: KernelDescriptor, meta: KernelMetadata, what: str) -> None:
    pairs = (("group_segment_fixed_size", descriptor.group_segment_fixed_size,
              meta.group_segment_fixed_size),
             ("private_segment_fixed_size", descriptor.private_segment_fixed_size,
              meta.private_segment_fixed_size),
             ("kernarg_size", descriptor.kernarg_size, meta.kernarg_segment_size),
             ("wavefront size", descriptor.wavefront_size, meta.wavefront_size))
    for name, in_descriptor, in_metadata in pairs:
        if in_descriptor != in_metadata:
            raise BadBinary(f"{what}: {name} is {in_descriptor} in the descriptor but {in_metadata} "
                            "in the metadata note")


def _need(entry: dict[str, Any], key: str, kind: type, what: str) -> Any:
    if key not in entry:
        raise BadBinary(f"{what}: required key {key} is missing")
    value = entry[key]
    if kind is int:
        if type(value) is not int or value < 0:
            raise BadBinary(f"{what}: {key} is {value!r}, not a non-negative integer")
    elif not isinstance(value, kind):
        raise BadBinary(f"{what}: {key} is {value!r}, not a {kind.__name__}")
    return value


def _kernel_entry(entry: Any, what: str) -> KernelMetadata:
    """One amdhsa.kernels map into KernelMetadata; keys per AMDGPUUsage "Code Object V3 Metadata"."""
    if not isinstance(entry, dict):
        raise BadBinary(f"{what}: not a map")
    name = _need(entry, ".name", str, what)
    what = f"{what} ({name})"
    kernarg_size = _need(entry, ".kernarg_segment_size", int, what)
    kernarg_align = _need(entry, ".kernarg_segment_align", int, what)
    if kernarg_align == 0 or kernarg_align & (kernarg_align - 1):
        raise BadBinary(f"{what}: .kernarg_segment_align {kernarg_align} is not a power of two")
    wavefront_size = _need(entry, ".wavefront_size", int, what)
    if wavefront_size not in (32, 64):
        raise BadBinary(f"{what}: .wavefront_size {wavefront_size} is neither 32 nor 64")
    reqd = entry.get(".reqd_workgroup_size")
    if reqd is not None:
        if not (isinstance(reqd, list) and len(reqd) == 3 and all(type(v) is int and v > 0 for v in reqd)):
            raise BadBinary(f"{what}: .reqd_workgroup_size {reqd!r} is not three positive integers")
        reqd = (reqd[0], reqd[1], reqd[2])
    raw_args = entry.get(".args", [])
    if not isinstance(raw_args, list):
        raise BadBinary(f"{what}: .args is not an array")
    args = tuple(_kernel_arg(arg, f"{what} .args[{i}]", kernarg_size) for i, arg in enumerate(raw_args))
    return KernelMetadata(
        name=name, symbol=_need(entry, ".symbol", str, what), args=args, kernarg_segment_size=kernarg_size,
        kernarg_segment_align=kernarg_align,
        group_segment_fixed_size=_need(entry, ".group_segment_fixed_size", int, what),
        private_segment_fixed_size=_need(entry, ".private_segment_fixed_size", int, what),
        wavefront_size=wavefront_size, sgpr_count=_need(entry, ".sgpr_count", int, what),
        vgpr_count=_need(entry, ".vgpr_count", int, what),
        max_flat_workgroup_size=_need(entry, ".max_flat_workgroup_size", int, what),
        reqd_workgroup_size=reqd)


def _kernel_arg(arg: Any, what: str, kernarg_size: int) -> KernelArg:
    if not isinstance(arg, dict):
        raise BadBinary(f"{what}: not a map")
    size = _need(arg, ".size", int, what)
    offset = _need(arg, ".offset", int, what)
    if offset + size > kernarg_size:
        raise BadBinary(f"{what}: .offset {offset} + .size {size} exceed "
                        f".kernarg_segment_size {kernarg_size}")
    address_space = arg.get(".address_space")
    if address_space is not None and not isinstance(address_space, str):
        raise BadBinary(f"{what}: .address_space {address_space!r} is not a string")
    name = arg.get(".name", "")
    type_name = arg.get(".type_name", "")
    is_const = arg.get(".is_const", False)
    if not isinstance(name, str) or not isinstance(type_name, str) or not isinstance(is_const, bool):
        raise BadBinary(f"{what}: .name, .type_name or .is_const has the wrong type")
    return KernelArg(name=name, type_name=type_name, size=size, offset=offset,
                     value_kind=_need(arg, ".value_kind", str, what), address_space=address_space,
                     is_const=is_const)
