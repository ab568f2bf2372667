"""Register generator: AMD `*_offset.h` + `*_sh_mask.h` header pairs -> autogen/amd/regs/<ip>.py.

libclang parses each header with a detailed preprocessing record; every object-like #define becomes
a name and one integer literal. From the offset header come the registers (`regFOO`, `cfgFOO`,
`ixFOO`: offset) and their segments (`regFOO_BASE_IDX`); from the sh_mask header the fields
(`FOO__FIELD__SHIFT`, `FOO__FIELD_MASK`). The output is one module per header pair whose table
`autogen.regs.RegisterTable` decodes lazily. Whatever cannot be translated is listed in the module's
SKIPPED tuple with the reason.
"""
from __future__ import annotations

import ctypes
import pathlib
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import clang.cindex

from autogen.regs import NO_BASE_INDEX

OFFSET_SUFFIX = "_offset.h"
SH_MASK_SUFFIX = "_sh_mask.h"
# output folder of the generated modules, relative to the repository root
OUTPUT_DIR = "autogen/amd/regs"
BASE_IDX_SUFFIX = "_BASE_IDX"
SHIFT_SUFFIX = "__SHIFT"
MASK_SUFFIX = "_MASK"
# between a register's name and its field's name in the sh_mask headers
FIELD_SEPARATOR = "__"
# register names start with a lower-case address-space prefix: reg (MMIO), cfg (config space), ix (index)
_PREFIXED_NAME = re.compile(r"^([a-z]+)([A-Z0-9_]\w*)$")
_C_INTEGER = re.compile(r"^(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)[uUlL]*$")
_LEADING_COMMENT = re.compile(r"\A\s*/\*(.*?)\*/", re.S)


class RegisterHeaderError(ValueError):
    """A register header that cannot be read or parsed; the message names the file and the reason."""


@dataclass(frozen=True)
class Macro:
    """One #define: its name, the spellings of its replacement tokens, and its line."""

    name: str
    tokens: tuple[str, ...]
    line: int
    function_like: bool = False


@dataclass
class ParsedRegister:
    """A register as the generator collects it before writing the table."""

    name: str
    offset: int
    base_idx: int | None = None
    fields: list[tuple[str, int, int]] = field(default_factory=list)


@dataclass
class IPRegisters:
    """Everything read from one header pair: registers in header order and what was skipped."""

    registers: list[ParsedRegister]
    skipped: list[tuple[str, str]]


def _is_function_like(cursor: clang.cindex.Cursor) -> bool:
    """Whether a macro definition takes arguments (libclang has it; the bindings do not wrap it)."""
    function = clang.cindex.conf.lib.clang_Cursor_isMacroFunctionLike
    function.argtypes = [clang.cindex.Cursor]
    function.restype = ctypes.c_uint
    return bool(function(cursor))


def read_macros(path: pathlib.Path, index: clang.cindex.Index | None = None) -> list[Macro]:
    """Return the header's own #define macros in file order, read through libclang."""
    if not path.is_file():
        raise RegisterHeaderError(f"{path}: no such header")
    index = index or clang.cindex.Index.create()
    options = clang.cindex.TranslationUnit.PARSE_DETAILED_PROCESSING_RECORD
    try:
        unit = index.parse(str(path), args=["-x", "c", "-std=c11"], options=options)
    except clang.cindex.TranslationUnitLoadError as exc:
        raise RegisterHeaderError(f"{path}: libclang could not parse the header: {exc}") from exc
    errors = [
        f"{diag.location.file}:{diag.location.line}: {diag.spelling}"
        for diag in unit.diagnostics
        if diag.severity >= clang.cindex.Diagnostic.Error
    ]
    if errors:
        raise RegisterHeaderError(f"{path}: clang diagnostics:\n" + "\n".join(errors))
    macros = []
    for cursor in unit.cursor.get_children():
        if cursor.kind != clang.cindex.CursorKind.MACRO_DEFINITION:
            continue
        if cursor.location.file is None or pathlib.Path(cursor.location.file.name) != path:
            continue
        spellings = tuple(token.spelling for token in cursor.get_tokens())
        macro = Macro(spellings[0], spellings[1:], cursor.location.line, _is_function_like(cursor))
        macros.append(macro)
    return macros


def parse_integer(macro: Macro) -> int | None:
    """The value of an object-like macro that is one C integer literal (suffixes allowed), else None."""
    if macro.function_like or len(macro.tokens) != 1:
        return None
    match = _C_INTEGER.match(macro.tokens[0])
    if match is None:
        return None
    digits = match.group(1)
    if digits.lower().startswith("0x"):
        return int(digits, 16)
    if digits.startswith("0"):
        return int(digits, 8)
    return int(digits, 10)


def _why_not_integer(macro: Macro) -> str:
    if macro.function_like:
        return "function-like macro, not a register"
    if not macro.tokens:
        return "empty definition (include guard or flag), not a register"
    return "value is not a single integer literal: " + " ".join(macro.tokens)


def collect_registers(offset_macros: Iterable[Macro], offset_file: str) -> IPRegisters:
    """Registers and their base-index segments from an offset header's macros."""
    registers: dict[str, ParsedRegister] = {}
    base_indices: dict[str, tuple[int, Macro]] = {}
    skipped: list[tuple[str, str]] = []
    for macro in offset_macros:
        value = parse_integer(macro)
        if value is None:
            skipped.append((macro.name, f"{offset_file}:{macro.line}: {_why_not_integer(macro)}"))
            continue
        if macro.name.endswith(BASE_IDX_SUFFIX):
            register_name = macro.name[: -len(BASE_IDX_SUFFIX)]
            if register_name in base_indices:
                skipped.append((macro.name, f"{offset_file}:{macro.line}: defined again; first kept"))
                continue
            base_indices[register_name] = (value, macro)
            continue
        if _PREFIXED_NAME.match(macro.name) is None:
            reason = "no lower-case address-space prefix (reg, cfg, ix), not a register name"
            skipped.append((macro.name, f"{offset_file}:{macro.line}: {reason}"))
            continue
        if macro.name in registers:
            skipped.append((macro.name, f"{offset_file}:{macro.line}: defined again; first kept"))
            continue
        registers[macro.name] = ParsedRegister(macro.name, value)
    for register_name, (value, macro) in base_indices.items():
        register = registers.get(register_name)
        if register is None:
            reason = f"{offset_file}:{macro.line}: base index for {register_name}, which has no offset"
            skipped.append((macro.name, reason))
            continue
        register.base_idx = value
    for register in registers.values():
        if register.base_idx is None and register.name.startswith("reg"):
            reason = f"{offset_file}: no {BASE_IDX_SUFFIX} define for this reg register; base_idx is None"
            skipped.append((register.name + BASE_IDX_SUFFIX, reason))
    return IPRegisters(list(registers.values()), skipped)


def _register_for_stem(stem: str, registers_by_stem: dict[str, list[ParsedRegister]]) -> list[str]:
    """Register stems that `stem` (REG__FIELD) can start with; more than one means ambiguous."""
    parts = stem.split(FIELD_SEPARATOR)
    return [
        FIELD_SEPARATOR.join(parts[:count])
        for count in range(1, len(parts))
        if FIELD_SEPARATOR.join(parts[:count]) in registers_by_stem
    ]


def attach_fields(ip: IPRegisters, sh_mask_macros: Iterable[Macro], sh_mask_file: str) -> None:
    """Add each field of the sh_mask header to its register(s); list every field that cannot be placed."""
    shifts: dict[str, tuple[int, Macro]] = {}
    masks: dict[str, tuple[int, Macro]] = {}
    for macro in sh_mask_macros:
        value = parse_integer(macro)
        if value is None:
            ip.skipped.append((macro.name, f"{sh_mask_file}:{macro.line}: {_why_not_integer(macro)}"))
            continue
        if macro.name.endswith(SHIFT_SUFFIX):
            table = shifts
            stem = macro.name[: -len(SHIFT_SUFFIX)]
        elif macro.name.endswith(MASK_SUFFIX):
            table = masks
            stem = macro.name[: -len(MASK_SUFFIX)]
        else:
            reason = f"neither a {SHIFT_SUFFIX} nor a {MASK_SUFFIX} define"
            ip.skipped.append((macro.name, f"{sh_mask_file}:{macro.line}: {reason}"))
            continue
        if stem in table:
            ip.skipped.append((macro.name, f"{sh_mask_file}:{macro.line}: defined again; first kept"))
            continue
        table[stem] = (value, macro)
    for stem, (_mask, macro) in masks.items():
        if stem not in shifts:
            reason = f"{sh_mask_file}:{macro.line}: mask without a {SHIFT_SUFFIX} define"
            ip.skipped.append((macro.name, reason))
    registers_by_stem: dict[str, list[ParsedRegister]] = {}
    for register in ip.registers:
        match = _PREFIXED_NAME.match(register.name)
        registers_by_stem.setdefault(match.group(2), []).append(register)
    for stem, (shift, macro) in shifts.items():
        where = f"{sh_mask_file}:{macro.line}"
        if stem not in masks:
            ip.skipped.append((stem, f"{where}: shift without a {MASK_SUFFIX} define"))
            continue
        mask = masks[stem][0]
        problem = _mask_problem(shift, mask)
        if problem:
            ip.skipped.append((stem, f"{where}: {problem}"))
            continue
        register_stems = _register_for_stem(stem, registers_by_stem)
        if not register_stems:
            reason = f"{where}: its register (the name before {FIELD_SEPARATOR}) has no offset define"
            ip.skipped.append((stem, reason))
            continue
        if len(register_stems) > 1:
            reason = f"{where}: ambiguous, could belong to " + " or ".join(register_stems)
            ip.skipped.append((stem, reason))
            continue
        register_stem = register_stems[0]
        field_name = stem[len(register_stem) + len(FIELD_SEPARATOR):]
        for register in registers_by_stem[register_stem]:
            register.fields.append((field_name, shift, mask))


def _mask_problem(shift: int, mask: int) -> str:
    """Why a shift/mask pair is not one contiguous field starting at `shift` ('' when it is)."""
    if mask <= 0:
        return f"mask {mask:#x} selects no bits"
    lowest_bit = (mask & -mask).bit_length() - 1
    if lowest_bit != shift:
        return f"mask {mask:#010x} starts at bit {lowest_bit}, not at the shift {shift}"
    bits = mask >> shift
    if bits & (bits + 1):
        return f"mask {mask:#010x} is not contiguous"
    return ""


def read_ip(offset_path: pathlib.Path, sh_mask_path: pathlib.Path, offset_file: str,
            sh_mask_file: str) -> IPRegisters:
    """Read one header pair into registers with fields plus the skip list."""
    index = clang.cindex.Index.create()
    ip = collect_registers(read_macros(offset_path, index), offset_file)
    attach_fields(ip, read_macros(sh_mask_path, index), sh_mask_file)
    return ip


def licence_notice(path: pathlib.Path) -> list[str]:
    """The header's leading comment (AMD's copyright and permission notice), one string per line."""
    text = path.read_text(encoding="utf-8", errors="replace")
    match = _LEADING_COMMENT.match(text)
    if match is None:
        raise RegisterHeaderError(f"{path}: no leading licence comment")
    lines = [line.strip() for line in match.group(1).splitlines()]
    lines = [line[1:].strip() if line.startswith("*") else line for line in lines]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def render_table(registers: list[ParsedRegister]) -> str:
    """The module's register table in the format autogen.regs.RegisterTable reads."""
    lines = []
    for register in registers:
        base = NO_BASE_INDEX if register.base_idx is None else str(register.base_idx)
        lines.append(f"{register.name} {register.offset:#x} {base} {len(register.fields)}")
        for field_name, shift, mask in register.fields:
            lines.append(f" {field_name} {shift} {mask:#x}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class SourceInfo:
    """Where a module's headers come from, as its file header states it."""

    package: str
    version: str
    licence: str


def source_info(target: Any, source_root: pathlib.Path) -> SourceInfo:
    """Package, version and licence of the target's source (from the manifest target when it has them).

    Without them on the target, the cache folder's name `<package>_<version>` gives package and version.
    """
    package = getattr(target, "package", None)
    version = getattr(target, "version", None)
    if not package or not version:
        folder_package, _, folder_version = source_root.name.partition("_")
        package = package or folder_package
        version = version or folder_version
    licence = getattr(target, "licence", None) or getattr(target, "license", None) or "MIT"
    return SourceInfo(str(package), str(version), str(licence))


def _checked_table_text(text: str) -> str:
    if '"""' in text or "\\" in text:
        raise RegisterHeaderError("register table holds characters that need escaping")
    return text


def render_module(target_name: str, ip_name: str, ip: IPRegisters, source: SourceInfo, offset_file: str,
                  sh_mask_file: str, notices: list[list[str]]) -> str:
    """The text of one generated register module."""
    field_count = sum(len(register.fields) for register in ip.registers)
    out = [
        f"# Generated by autogen.gen_regs from {source.package} {source.version}; do not edit.",
        f"# Regenerate: python -m autogen {target_name}",
        "# Sources (paths inside the package):",
        f"#   {offset_file}",
        f"#   {sh_mask_file}",
        f"# Licence of the source headers ({source.licence}), as they state it:",
    ]
    for notice in notices:
        out.append("#")
        out.extend(f"#   {line}".rstrip() for line in notice)
    out += [
        f'"""AMD {ip_name} registers: {len(ip.registers)} registers with {field_count} fields,',
        f"and {len(ip.skipped)} definitions SKIPPED (each with the reason).",
        "",
        f"Use `{ip_name}.regNAME` or `{ip_name}.get('regNAME')`; `{ip_name}.names()` lists them all.",
        '"""',
        "from autogen.regs import Register, RegisterTable",
        "",
        f"SOURCE_PACKAGE = {source.package!r}",
        f"SOURCE_VERSION = {source.version!r}",
        "SOURCE_PATHS = (",
        f"    {offset_file!r},",
        f"    {sh_mask_file!r},",
        ")",
        f"LICENCE = {source.licence!r}",
        "",
        "# definitions the generator could not translate: (name, reason)",
        "SKIPPED: tuple[tuple[str, str], ...] = (",
    ]
    for name, reason in ip.skipped:
        out.append(f"    ({name!r},")
        out.append(f"     {reason!r}),")
    out += [
        ")",
        "",
        "# register offset base_idx field_count, then one line per field: name shift mask",
        '_TABLE = """\\',
    ]
    out.append(_checked_table_text(render_table(ip.registers)) + '"""')
    out += [
        "",
        "_registers = RegisterTable(__name__, _TABLE)",
        "get = _registers.get",
        "names = _registers.names",
        "",
        "",
        "def __getattr__(name: str) -> Register:",
        "    return _registers.module_getattr(name)",
        "",
        "",
        "def __dir__() -> list[str]:",
        "    return _registers.module_dir(list(globals()))",
        "",
    ]
    return "\n".join(out)


def header_pairs(paths: Iterable[str]) -> list[tuple[str, str]]:
    """Pair each `<ip>_offset.h` with its `<ip>_sh_mask.h` from a target's path list."""
    paths = list(paths)
    offsets = [path for path in paths if path.endswith(OFFSET_SUFFIX)]
    masks = {path for path in paths if path.endswith(SH_MASK_SUFFIX)}
    pairs = []
    for offset_file in offsets:
        sh_mask_file = offset_file[: -len(OFFSET_SUFFIX)] + SH_MASK_SUFFIX
        if sh_mask_file not in masks:
            raise RegisterHeaderError(f"{offset_file} has no {sh_mask_file} beside it in the target's paths")
        masks.discard(sh_mask_file)
        pairs.append((offset_file, sh_mask_file))
    unpaired = sorted(masks) + [p for p in paths if not p.endswith((OFFSET_SUFFIX, SH_MASK_SUFFIX))]
    if unpaired:
        raise RegisterHeaderError("not part of an offset/sh_mask pair: " + ", ".join(unpaired))
    if not pairs:
        raise RegisterHeaderError("target lists no *_offset.h header")
    return pairs


def generate(target: Any, source_root: pathlib.Path) -> dict[str, str]:
    """Generate the register modules of `target` (anything with `.name` and `.paths`).

    Returns {output path relative to the repository root: module text}; the text is byte-identical for
    the same headers.
    """
    source_root = pathlib.Path(source_root)
    source = source_info(target, source_root)
    outputs: dict[str, str] = {}
    for offset_file, sh_mask_file in header_pairs(target.paths):
        offset_path = source_root / offset_file
        sh_mask_path = source_root / sh_mask_file
        ip_name = pathlib.PurePosixPath(offset_file).name[: -len(OFFSET_SUFFIX)]
        ip = read_ip(offset_path, sh_mask_path, offset_path.name, sh_mask_path.name)
        notices = []
        for notice in (licence_notice(offset_path), licence_notice(sh_mask_path)):
            if notice not in notices:
                notices.append(notice)
        text = render_module(str(target.name), ip_name, ip, source, offset_file, sh_mask_file, notices)
        outputs[f"{OUTPUT_DIR}/{ip_name}.py"] = text
    return outputs
