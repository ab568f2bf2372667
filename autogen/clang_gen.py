"""Struct/constant generator: C headers -> one Python module of constants, functions and Struct classes.

libclang parses the target's headers (x86-64 Linux ABI) with a detailed preprocessing record:
- object-like #defines are evaluated by clang itself: each becomes `static const __auto_type` probe
  appended to the translation unit and read back with clang_Cursor_Evaluate, so ioctl numbers carry the
  real struct sizes and every value has C's type and arithmetic;
- function-like #defines whose body is an integer expression become Python functions (autogen.cexpr),
  each checked against clang's evaluation of the macro on sample arguments;
- enums become module-level ints plus an ENUMS table;
- structs and unions become `autogen.runtime.Struct` subclasses with clang's offsets and sizes
  (bitfields, anonymous members flattened with their offsets, nested and flexible arrays, packing);
- typedefs of records and integer types become aliases.
Everything not translated is listed in the module's SKIPPED tuple with the reason.
"""
from __future__ import annotations

import ast
import ctypes
import dataclasses
import importlib.metadata
import keyword
import pathlib
import re
import textwrap
from typing import Any, Iterable, Mapping

import clang.cindex as ci

from autogen import cexpr
from autogen.runtime import RESERVED_NAMES, c_div, c_mod, c_signed, python_name

# libclang's target: the layout every generated module records
TARGET_TRIPLE = "x86_64-pc-linux-gnu"
# the translation unit and its in-memory companions live under this directory, which never exists on disk
_VIRTUAL_ROOT = "/gpuhal-autogen"
_MAIN_FILE = f"{_VIRTUAL_ROOT}/main.c"
_PRELUDE_FILE = f"{_VIRTUAL_ROOT}/prelude.h"
_STUB_DIR = f"{_VIRTUAL_ROOT}/stubs"
_PROBE_PREFIX = "__gpuhal_probe_"
# sample argument values for checking a translated function-like macro against clang
# (a sample whose C evaluation is not a constant, e.g. a shift past the type's width, is left out)
_SAMPLE_ARGUMENTS = (3, 0x1F, 0x1234, 0xA5A5A5A5)
_COMMENT_LIMIT = 60
_DOCSTRING_WIDTH = 96


class HeaderParseError(ValueError):
    """Clang reported errors in the target's headers; the message lists them with file and line."""


@dataclasses.dataclass(frozen=True)
class ParseConfig:
    """What clang parses: headers (absolute), include dirs, a prelude and in-memory stub headers."""

    headers: tuple[pathlib.Path, ...]
    include_dirs: tuple[pathlib.Path, ...] = ()
    prelude: str = ""
    stubs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # records/typedefs left out on purpose: name -> reason (recorded in SKIPPED)
    exclude: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ModuleSource:
    """Provenance written at the top of a generated module."""

    target: str
    package: str
    version: str
    licence: str
    paths: tuple[str, ...]
    description: str
    repository: str = ""  # a "git" pin: "owner/name"; its files' sha256 go into the header
    file_sha256: tuple[tuple[str, str], ...] = ()


# ---------------------------------------------------------------------------------------- libclang


def _lib() -> Any:
    lib = ci.conf.lib
    if not getattr(lib, "_gpuhal_registered", False):
        lib.clang_Cursor_isMacroFunctionLike.argtypes = [ci.Cursor]
        lib.clang_Cursor_isMacroFunctionLike.restype = ctypes.c_uint
        lib.clang_Cursor_Evaluate.argtypes = [ci.Cursor]
        lib.clang_Cursor_Evaluate.restype = ctypes.c_void_p
        lib.clang_EvalResult_getKind.argtypes = [ctypes.c_void_p]
        lib.clang_EvalResult_getKind.restype = ctypes.c_int
        lib.clang_EvalResult_isUnsignedInt.argtypes = [ctypes.c_void_p]
        lib.clang_EvalResult_isUnsignedInt.restype = ctypes.c_uint
        lib.clang_EvalResult_getAsUnsigned.argtypes = [ctypes.c_void_p]
        lib.clang_EvalResult_getAsUnsigned.restype = ctypes.c_ulonglong
        lib.clang_EvalResult_getAsLongLong.argtypes = [ctypes.c_void_p]
        lib.clang_EvalResult_getAsLongLong.restype = ctypes.c_longlong
        lib.clang_EvalResult_getAsDouble.argtypes = [ctypes.c_void_p]
        lib.clang_EvalResult_getAsDouble.restype = ctypes.c_double
        lib.clang_EvalResult_getAsStr.argtypes = [ctypes.c_void_p]
        lib.clang_EvalResult_getAsStr.restype = ctypes.c_char_p
        lib.clang_EvalResult_dispose.argtypes = [ctypes.c_void_p]
        lib.clang_EvalResult_dispose.restype = None
        lib._gpuhal_registered = True
    return lib


def _evaluate(cursor: ci.Cursor) -> int | float | str | None:
    """clang's value of a constant variable's initializer, or None when it is not a constant."""
    lib = _lib()
    result = lib.clang_Cursor_Evaluate(cursor)
    if not result:
        return None
    try:
        kind = lib.clang_EvalResult_getKind(result)
        if kind == 1:  # CXEval_Int
            if lib.clang_EvalResult_isUnsignedInt(result):
                return int(lib.clang_EvalResult_getAsUnsigned(result))
            return int(lib.clang_EvalResult_getAsLongLong(result))
        if kind == 2:  # CXEval_Float
            return float(lib.clang_EvalResult_getAsDouble(result))
        if kind == 4:  # CXEval_StrLiteral
            return lib.clang_EvalResult_getAsStr(result).decode("latin-1")
        return None
    finally:
        lib.clang_EvalResult_dispose(result)


def libclang_version() -> str:
    """The version of the libclang wheel in use (the generator's pinned dependency)."""
    try:
        return importlib.metadata.version("libclang")
    except importlib.metadata.PackageNotFoundError:
        return "(libclang from the system)"


def _args(config: ParseConfig) -> list[str]:
    args = ["-x", "c", "-std=gnu11", "-target", TARGET_TRIPLE, "-nostdinc", "-ferror-limit=0"]
    if config.stubs:
        args += ["-I", _STUB_DIR]
    for directory in config.include_dirs:
        args += ["-I", str(directory)]
    if config.prelude:
        args += ["-include", _PRELUDE_FILE]
    return args


def _unsaved(config: ParseConfig, main_text: str) -> list[tuple[str, str]]:
    files = [(_MAIN_FILE, main_text)]
    if config.prelude:
        files.append((_PRELUDE_FILE, config.prelude))
    for name, text in sorted(config.stubs.items()):
        files.append((f"{_STUB_DIR}/{name}", text))
    return files


def _main_text(config: ParseConfig, probes: Iterable[str] = ()) -> tuple[str, int]:
    lines = [f'#include "{header}"' for header in config.headers]
    first_probe_line = len(lines) + 1
    lines.extend(probes)
    return "\n".join(lines) + "\n", first_probe_line


def _format_diagnostic(diag: ci.Diagnostic) -> str:
    location = diag.location
    where = f"{location.file.name}:{location.line}:{location.column}" if location.file else "<command line>"
    return f"{where}: {diag.spelling}"


def parse(config: ParseConfig, probes: Iterable[str] = ()) -> tuple[ci.TranslationUnit, int]:
    """Parse the headers (plus probe lines); raise HeaderParseError on errors outside the probes."""
    for header in config.headers:
        if not header.is_file():
            raise HeaderParseError(f"{header}: no such header")
    main_text, first_probe_line = _main_text(config, probes)
    index = ci.Index.create()
    try:
        unit = index.parse(_MAIN_FILE, args=_args(config), unsaved_files=_unsaved(config, main_text),
                           options=ci.TranslationUnit.PARSE_DETAILED_PROCESSING_RECORD)
    except ci.TranslationUnitLoadError as exc:
        headers = ", ".join(map(str, config.headers))
        raise HeaderParseError(f"libclang could not parse {headers}: {exc}") from None
    problems = []
    for diag in unit.diagnostics:
        if diag.severity < ci.Diagnostic.Error:
            continue
        if _probe_line(diag, first_probe_line) is not None:
            continue
        problems.append(_format_diagnostic(diag))
    if problems:
        raise HeaderParseError("clang reported errors:\n  " + "\n  ".join(problems))
    return unit, first_probe_line


def _probe_line(diag: ci.Diagnostic, first_probe_line: int) -> int | None:
    """The probe line a diagnostic belongs to (following macro-expansion notes), or None."""
    candidates = [diag.location] + [child.location for child in diag.children]
    for location in candidates:
        if location.file and location.file.name == _MAIN_FILE and location.line >= first_probe_line:
            return location.line
    return None


# ---------------------------------------------------------------------------------------- collected model


@dataclasses.dataclass
class Macro:
    name: str
    params: tuple[str, ...] | None  # None for object-like
    body: tuple[cexpr.Token, ...]
    file: str
    line: int

    @property
    def body_text(self) -> str:
        return _join_tokens(self.body)


def _join_tokens(tokens: Iterable[cexpr.Token]) -> str:
    text = ""
    previous = None
    for token in tokens:
        if previous is not None and _needs_space(previous, token):
            text += " "
        text += token.spelling
        previous = token
    return text


def _needs_space(previous: cexpr.Token, token: cexpr.Token) -> bool:
    if previous.spelling in ("(", "[", "~", "!") or token.spelling in (")", "]", ","):
        return False
    if token.spelling == "(":
        return previous.kind == "PUNCTUATION"
    return True


def _macro_from_cursor(cursor: ci.Cursor) -> Macro:
    tokens = [cexpr.Token(t.spelling, t.kind.name) for t in cursor.get_tokens()]
    function_like = bool(_lib().clang_Cursor_isMacroFunctionLike(cursor))
    params: tuple[str, ...] | None = None
    body = tokens[1:]
    if function_like:
        close = next(i for i, token in enumerate(tokens) if token.spelling == ")")
        params = tuple(token.spelling for token in tokens[2:close] if token.spelling != ",")
        body = tokens[close + 1:]
    return Macro(cursor.spelling, params, tuple(body), cursor.location.file.name, cursor.location.line)


def _tag(declaration: ci.Cursor) -> str | None:
    """The struct/union tag of a record declaration, or None for an anonymous record.

    libclang spells an anonymous record that a typedef names with the typedef's name; its type's
    spelling then lacks the "struct "/"union " keyword, which tells the two apart.
    """
    spelling = declaration.spelling
    if not spelling.isidentifier():
        return None
    if not declaration.type.spelling.startswith(("struct ", "union ")):
        return None
    return spelling


_INT_KINDS: dict[ci.TypeKind, str] = {
    ci.TypeKind.BOOL: "BOOL",
    ci.TypeKind.CHAR_U: "U8", ci.TypeKind.UCHAR: "U8", ci.TypeKind.CHAR_S: "I8", ci.TypeKind.SCHAR: "I8",
    ci.TypeKind.USHORT: "U16", ci.TypeKind.SHORT: "I16",
    ci.TypeKind.UINT: "U32", ci.TypeKind.INT: "I32",
    ci.TypeKind.ULONG: "U64", ci.TypeKind.LONG: "I64",
    ci.TypeKind.ULONGLONG: "U64", ci.TypeKind.LONGLONG: "I64",
    ci.TypeKind.FLOAT: "F32", ci.TypeKind.DOUBLE: "F64",
}
_SIGNED_NAMES = {"I8", "I16", "I32", "I64"}


@dataclasses.dataclass(frozen=True)
class ProbeValue:
    """A constant clang evaluated, with the size in bytes of its C type."""

    value: int | float | str
    size: int


class Untranslatable(ValueError):
    """A type the runtime has no member type for."""


class _Generator:
    def __init__(self, config: ParseConfig, source: ModuleSource) -> None:
        self.config = config
        self.source = source
        self.header_names = {str(path) for path in config.headers}
        self.constants: list[tuple[str, Any, str]] = []  # name, value, C text for the comment
        self.functions: list[str] = []
        self.classes: list[str] = []
        self.aliases: list[tuple[str, str]] = []
        self.enums: dict[str, dict[str, int]] = {}
        self.skipped: list[tuple[str, str]] = []
        self.renamed: list[tuple[str, str]] = []
        self.layouts: dict[str, tuple] = {}
        self.class_names: dict[str, str] = {}  # record USR or key -> python class name
        self.used_names: set[str] = set()
        self.integer_types: dict[str, tuple[int, bool]] = {}
        self.included_files: dict[str, None] = {}  # headers outside the target that records came from

    # -------------------------------------------------------------------- entry point

    def run(self) -> str:
        unit, _ = parse(self.config)
        macros = []
        for cursor in unit.cursor.get_children():
            if cursor.kind == ci.CursorKind.MACRO_DEFINITION and self._ours(cursor):
                macros.append(_macro_from_cursor(cursor))
        self._collect_integer_typedefs(unit)
        object_like = [macro for macro in macros if macro.params is None]
        function_like = [macro for macro in macros if macro.params is not None]
        self._evaluate_object_macros(object_like)
        for cursor in unit.cursor.get_children():
            if not self._ours(cursor):
                continue
            if cursor.kind == ci.CursorKind.ENUM_DECL and cursor.is_definition():
                self._enum(cursor)
        self._translate_function_macros(function_like)
        for cursor in unit.cursor.get_children():
            if not self._ours(cursor):
                continue
            if cursor.kind in (ci.CursorKind.STRUCT_DECL, ci.CursorKind.UNION_DECL):
                self._top_level_record(cursor)
            elif cursor.kind == ci.CursorKind.TYPEDEF_DECL:
                self._typedef(cursor)
            elif cursor.kind == ci.CursorKind.FUNCTION_DECL:
                self.skipped.append((cursor.spelling, "function declaration (code, not data)"))
            elif cursor.kind == ci.CursorKind.VAR_DECL:
                self.skipped.append((cursor.spelling, "variable declaration (storage, not a type)"))
        return self._render()

    def _ours(self, cursor: ci.Cursor) -> bool:
        location = cursor.location
        return location.file is not None and location.file.name in self.header_names

    def _claim(self, name: str) -> bool:
        if name in self.used_names:
            return False
        self.used_names.add(name)
        return True

    # -------------------------------------------------------------------- macros

    def _collect_integer_typedefs(self, unit: ci.TranslationUnit) -> None:
        for cursor in unit.cursor.get_children():
            if cursor.kind != ci.CursorKind.TYPEDEF_DECL:
                continue
            scalar = _INT_KINDS.get(cursor.underlying_typedef_type.get_canonical().kind)
            if scalar is not None and scalar[0] in "UI":
                self.integer_types[cursor.spelling] = (int(scalar[1:]), scalar in _SIGNED_NAMES)

    def _evaluate_object_macros(self, macros: list[Macro]) -> None:
        candidates = []
        for macro in macros:
            if not macro.body:
                self.skipped.append((macro.name, "empty definition (include guard or feature flag)"))
                continue
            candidates.append(macro)
        results = self._probe([f"({macro.name})" for macro in candidates], ci.Diagnostic.Error)
        for macro, result in zip(candidates, results):
            value = _string_value(macro.body)
            if value is None and isinstance(result, ProbeValue):
                value = result.value
            if value is None:
                reason = result if isinstance(result, str) else "clang cannot evaluate it to a constant"
                self.skipped.append((macro.name, f"not a constant expression: {reason}"))
                continue
            self._add_constant(macro.name, value, macro.body_text)

    def _probe(self, expressions: list[str], failing_severity: int) -> list["ProbeValue | str"]:
        """clang's value of each C expression, or the first diagnostic about it (at or above the
        given severity) as a string."""
        probes = [f"static const __auto_type {_PROBE_PREFIX}{index} = {expression};"
                  for index, expression in enumerate(expressions)]
        unit, first_line = parse(self.config, probes)
        errors: dict[int, str] = {}
        for diag in unit.diagnostics:
            if diag.severity >= failing_severity:
                line = _probe_line(diag, first_line)
                if line is not None and line - first_line not in errors:
                    errors[line - first_line] = diag.spelling
        results: list[ProbeValue | str] = [errors.get(index, "clang cannot evaluate it to a constant")
                                           for index in range(len(expressions))]
        for cursor in unit.cursor.get_children():
            if cursor.kind == ci.CursorKind.VAR_DECL and cursor.spelling.startswith(_PROBE_PREFIX):
                index = int(cursor.spelling[len(_PROBE_PREFIX):])
                if index in errors:
                    continue
                value = _evaluate(cursor)
                if value is not None:
                    results[index] = ProbeValue(value, cursor.type.get_size())
        return results

    def _add_constant(self, c_name: str, value: Any, c_text: str) -> None:
        name = python_name_for_constant(c_name)
        if not self._claim(name):
            self.skipped.append((c_name, "name already used by another definition"))
            return
        self.constants.append((name, value, c_text))

    def _translate_function_macros(self, macros: list[Macro]) -> None:
        translated: list[tuple[Macro, str]] = []
        for macro in macros:
            if any(param.endswith("...") or param == "..." for param in macro.params or ()):
                self.skipped.append((macro.name, "variadic macro"))
                continue
            try:
                expression = cexpr.translate(macro.body, macro.params or (), self.integer_types)
            except cexpr.NotAnExpression as exc:
                self.skipped.append((macro.name, f"function-like macro not translated: {exc}"))
                continue
            translated.append((macro, expression))
        checked = self._check_functions(translated)
        for macro, expression in translated:
            problem = checked.get(macro.name)
            if problem is not None:
                self.skipped.append((macro.name, problem))
                continue
            if not self._claim(macro.name):
                self.skipped.append((macro.name, "name already used by another definition"))
                continue
            self.functions.append(_function_source(macro, expression))

    def _check_functions(self, translated: list[tuple[Macro, str]]) -> dict[str, str]:
        """Compare each translation with clang on sample arguments; return {name: problem}.

        A sample clang warns about (a shift past the type's width, say) is undefined behaviour in C
        and is left out; a macro needs at least one sample clang evaluates, and all of them must agree.
        """
        expressions = []
        cases = []
        for macro, _ in translated:
            for sample in _SAMPLE_ARGUMENTS:
                arguments = [sample + index for index in range(len(macro.params or ()))]
                suffix = "u" if sample > 0x7FFFFFFF else ""
                expressions.append(f"{macro.name}({', '.join(f'{a:#x}{suffix}' for a in arguments)})")
                cases.append((macro.name, arguments))
        results = self._probe(expressions, ci.Diagnostic.Warning)
        namespace: dict[str, Any] = {"c_div": c_div, "c_mod": c_mod, "c_signed": c_signed}
        for name, value, _ in self.constants:
            namespace[name] = value
        problems: dict[str, str] = {}
        for macro, expression in translated:
            try:
                exec(_function_source(macro, expression), namespace)
            except SyntaxError as exc:
                problems[macro.name] = f"translation is not valid Python: {exc}"
        agreed: set[str] = set()
        first_error: dict[str, str] = {}
        for (name, arguments), expected in zip(cases, results):
            if name in problems:
                continue
            if not isinstance(expected, ProbeValue) or not isinstance(expected.value, int):
                first_error.setdefault(name, expected if isinstance(expected, str) else "not an integer")
                continue
            try:
                actual = namespace[name](*arguments)
            except Exception as exc:  # the translation calls something the module does not define
                problems[name] = f"translation fails on sample arguments: {type(exc).__name__}: {exc}"
                continue
            mask = (1 << (8 * expected.size)) - 1
            if not isinstance(actual, int) or (actual & mask) != (expected.value & mask):
                shown = hex(actual & mask) if isinstance(actual, int) else repr(actual)[:40]
                problems[name] = (f"translation differs from clang for arguments {arguments}: "
                                  f"{shown} != {expected.value & mask:#x}")
                continue
            agreed.add(name)
        for name, _ in cases:
            if name not in problems and name not in agreed:
                problems[name] = f"not an integer function of its arguments: {first_error.get(name, '')}"
        return problems

    # -------------------------------------------------------------------- enums

    def _enum(self, cursor: ci.Cursor) -> None:
        members: dict[str, int] = {}
        for child in cursor.get_children():
            if child.kind != ci.CursorKind.ENUM_CONSTANT_DECL:
                continue
            name = python_name_for_constant(child.spelling)
            if not self._claim(name):
                self.skipped.append((child.spelling, "name already used by another definition"))
                continue
            self.constants.append((name, child.enum_value, f"enum {cursor.spelling or '(anonymous)'}"))
            members[name] = child.enum_value
        if cursor.spelling and cursor.spelling.isidentifier():
            self.enums[cursor.spelling] = members

    # -------------------------------------------------------------------- records

    def _top_level_record(self, cursor: ci.Cursor) -> None:
        if _tag(cursor) is None:
            return  # anonymous: emitted through the typedef or the member that uses it
        if cursor.spelling in self.config.exclude:
            if cursor.is_definition():
                self.skipped.append((cursor.spelling, self.config.exclude[cursor.spelling]))
            return
        if not cursor.is_definition():
            if cursor.type.get_size() < 0 and cursor.get_definition() is None:
                self.skipped.append((f"struct {cursor.spelling}", "declared but never defined here"))
            return
        self._record_class(cursor.type, None)

    def _typedef(self, cursor: ci.Cursor) -> None:
        underlying = cursor.underlying_typedef_type
        canonical = underlying.get_canonical()
        name = cursor.spelling
        if name in self.config.exclude:
            self.skipped.append((name, self.config.exclude[name]))
            return
        if canonical.kind == ci.TypeKind.RECORD:
            declaration = canonical.get_declaration()
            if declaration.get_definition() is None:
                self.skipped.append((name, "typedef of a record that is never defined here"))
                return
            anonymous = _tag(declaration) is None
            target = self._record_class(canonical, name if anonymous else None, name if anonymous else "")
            if target is not None and target != name:
                self._alias(name, target)
            return
        scalar = _INT_KINDS.get(canonical.kind)
        if scalar is not None:
            self._alias(name, scalar)
            return
        try:
            spec = self._type_spec(canonical)
        except Untranslatable as exc:
            self.skipped.append((name, f"typedef not translated: {exc}"))
            return
        self._alias(name, spec)

    def _alias(self, name: str, target: str) -> None:
        python = python_name(name)
        if not self._claim(python):
            self.skipped.append((name, "name already used by another definition"))
            return
        self.aliases.append((python, target))

    def _record_key(self, declaration: ci.Cursor) -> str:
        return declaration.get_usr() or f"{declaration.location.file}:{declaration.location.line}"

    def _record_class(self, record_type: ci.Type, name_hint: str | None, c_hint: str = "") -> str | None:
        """The Python class for a record type, generating it (and its dependencies) on first use."""
        declaration = record_type.get_canonical().get_declaration()
        definition = declaration.get_definition()
        if definition is None:
            raise Untranslatable(f"{declaration.spelling or 'anonymous record'} is never defined")
        key = self._record_key(definition)
        if key in self.class_names:
            return self.class_names[key]
        tag = _tag(definition)
        if tag is not None:
            base_name = tag
        elif name_hint:
            base_name = name_hint
        else:
            stem = pathlib.Path(definition.location.file.name).stem
            base_name = f"anonymous_{stem}_{definition.location.line}"
        class_name = base_name
        if keyword.iskeyword(class_name) or class_name in RESERVED_NAMES or class_name in self.used_names:
            class_name = f"{'union' if definition.kind == ci.CursorKind.UNION_DECL else 'struct'}_{base_name}"
            self.renamed.append((base_name, class_name))
        self.used_names.add(class_name)
        self.class_names[key] = class_name
        size = record_type.get_canonical().get_size()
        align = record_type.get_canonical().get_align()
        members: list[tuple[str, int, str]] = []
        layout: list[tuple[str, int, int]] = []
        kind = "union" if definition.kind == ci.CursorKind.UNION_DECL else "struct"
        c_type = f"{kind} {tag}" if tag is not None else c_hint or name_hint or ""
        self._members(record_type.get_canonical(), 0, class_name, members, layout, c_type)
        lines = [f"class {class_name}(Struct):"]
        location = f"{pathlib.Path(definition.location.file.name).name}:{definition.location.line}"
        title = f"{kind} {tag}" if tag is not None else f"{kind} ({class_name}, anonymous)"
        lines.append(f'    """{title} ({location})"""')
        lines.append("")
        lines.append(f"    SIZE = {size}")
        lines.append(f"    ALIGN = {align}")
        if members:
            lines.append("    LAYOUT = (")
            for member_name, offset, spec in members:
                lines.append(f"        ({member_name!r}, {offset}, {spec}),")
            lines.append("    )")
        else:
            lines.append("    LAYOUT = ()")
        self.classes.append("\n".join(lines))
        self.layouts[class_name] = (c_type, size, align, tuple(layout))
        defined_in = definition.location.file.name
        if defined_in not in self.header_names:
            self.included_files.setdefault(pathlib.PurePosixPath(defined_in).name, None)
        return class_name

    def _members(self, record_type: ci.Type, base_bits: int, class_name: str,
                 members: list, layout: list, c_type: str) -> None:
        for field in record_type.get_fields():
            bit_offset = base_bits + field.get_field_offsetof()
            field_type = field.type.get_canonical()
            if not field.spelling.isidentifier():
                # an anonymous struct or union member: its members belong to this record
                self._members(field_type, bit_offset, class_name, members, layout, c_type)
                continue
            c_name = field.spelling
            member_name = python_name(c_name)
            if member_name != c_name:
                self.renamed.append((f"{class_name}.{c_name}", f"{class_name}.{member_name}"))
            if field.is_bitfield():
                width = field.get_bitfield_width()
                nbytes = (bit_offset % 8 + width + 7) // 8
                signed = self._is_signed(field_type)
                members.append((member_name, bit_offset // 8,
                                f"Bits({nbytes}, {bit_offset % 8}, {width}, {signed})"))
                layout.append((c_name, bit_offset, width))
                continue
            try:
                spec = self._type_spec(field_type, f"{class_name}_{c_name}",
                                       f"__typeof__((({c_type} *)0)->{c_name})")
            except Untranslatable as exc:
                self.skipped.append((f"{class_name}.{c_name}", f"member not translated: {exc}"))
                continue
            members.append((member_name, bit_offset // 8, spec))
            size = max(field_type.get_size(), 0)
            layout.append((c_name, bit_offset, size * 8))

    @staticmethod
    def _is_signed(field_type: ci.Type) -> bool:
        if field_type.kind == ci.TypeKind.ENUM:
            field_type = field_type.get_declaration().enum_type.get_canonical()
        return _INT_KINDS.get(field_type.kind, "U") in _SIGNED_NAMES

    def _type_spec(self, field_type: ci.Type, name_hint: str | None = None, c_hint: str = "") -> str:
        canonical = field_type.get_canonical()
        kind = canonical.kind
        if kind in _INT_KINDS:
            return _INT_KINDS[kind]
        if kind == ci.TypeKind.ENUM:
            underlying = canonical.get_declaration().enum_type.get_canonical()
            return _INT_KINDS[underlying.kind]
        if kind == ci.TypeKind.POINTER:
            return "U64"
        if kind == ci.TypeKind.RECORD:
            return self._record_class(canonical, name_hint, c_hint)
        element_hint = c_hint[:-1] + "[0])" if c_hint else ""
        if kind == ci.TypeKind.CONSTANTARRAY:
            element = self._type_spec(canonical.element_type, name_hint, element_hint)
            if canonical.element_count == 0:
                return f"Flex({element})"
            return f"Array({element}, {canonical.element_count})"
        if kind == ci.TypeKind.INCOMPLETEARRAY:
            return f"Flex({self._type_spec(canonical.element_type, name_hint, element_hint)})"
        if kind in (ci.TypeKind.INT128, ci.TypeKind.UINT128, ci.TypeKind.LONGDOUBLE):
            return f"Array(U8, {canonical.get_size()})"
        raise Untranslatable(f"type {field_type.spelling} ({kind.name})")

    # -------------------------------------------------------------------- output

    def _render(self) -> str:
        source = self.source
        out = [
            f"# Generated by autogen.clang_gen from {source.package} {source.version}; do not edit.",
            f"# Regenerate: python -m autogen {source.target}",
        ]
        if source.repository:
            # provenance of files taken from a git repository: which commit, which file, which bytes
            pinned = dict(source.file_sha256)
            out.append(f"# Repository: https://github.com/{source.repository} at commit {source.version}")
            out.append("# Sources (paths inside the repository, sha256):")
            out += [f"#   {path} {pinned[path]}" for path in source.paths]
        else:
            out.append("# Sources (paths inside the package):")
            out += [f"#   {path}" for path in source.paths]
        if self.included_files:
            out.append(f"#   (records used by them, from included headers: {', '.join(self.included_files)})")
        out.append(f"# Licence of the source headers: {source.licence}")
        out.append(f"# Layout computed by libclang {libclang_version()} for {TARGET_TRIPLE}.")
        if self.config.prelude:
            out.append("# Parsed with this prelude (kernel types and macros the headers rely on):")
            out += [f"#   {line}" for line in self.config.prelude.strip().splitlines()]
        for stub, text in sorted(self.config.stubs.items()):
            first_line = text.strip().splitlines()[0] if text.strip() else "(empty)"
            out.append(f"# In-memory stand-in for <{stub}>: {first_line}")
        out.append(f'"""{source.description}')
        out.append("")
        out.append(f"{len(self.constants)} constants, {len(self.functions)} functions, "
                   f"{len(self.classes)} structs/unions;")
        out.append(f"{len(self.skipped)} definitions are listed in SKIPPED with the reason they were not "
                   "translated.")
        out.append('"""')
        out.append("from autogen.runtime import (  # noqa: F401")
        out.append("    BOOL, F32, F64, I8, I16, I32, I64, U8, U16, U32, U64,")
        out.append("    Array, Bits, Flex, Struct, c_div, c_mod, c_signed,")
        out.append(")")
        out.append("")
        out.append(f"SOURCE_PACKAGE = {source.package!r}")
        out.append(f"SOURCE_VERSION = {source.version!r}")
        out.append("SOURCE_PATHS = (")
        out += [f"    {path!r}," for path in source.paths]
        out.append(")")
        out.append(f"LICENCE = {source.licence!r}")
        out.append("")
        out.append("# ---- constants: object-like #defines (evaluated by clang) and enum members")
        for name, value, text in self.constants:
            out.append(_constant_line(name, value, text))
        if self.functions:
            out.append("")
            out.append("")
            out.append("# ---- functions: function-like #defines")
            for function in self.functions:
                out.append("")
                out.append("")
                out.append(function)
        for cls in self.classes:
            out.append("")
            out.append("")
            out.append(cls)
        out.append("")
        out.append("")
        out.append("# ---- typedefs")
        for name, target in self.aliases:
            out.append(f"{name} = {target}")
        out.append("")
        out.append("# enum name -> {member: value}")
        out.append("ENUMS = {")
        for enum_name, members in self.enums.items():
            out.append(f"    {enum_name!r}: {{")
            for member, value in members.items():
                out.append(f"        {member!r}: {value},")
            out.append("    },")
        out.append("}")
        out.append("")
        out.append("# C names given another Python name: (C name, Python name)")
        out.append("RENAMED: tuple[tuple[str, str], ...] = (")
        out += [f"    ({c_name!r}, {py_name!r})," for c_name, py_name in self.renamed]
        out.append(")")
        out.append("")
        out.append("# definitions the generator did not translate: (name, reason)")
        out.append("SKIPPED: tuple[tuple[str, str], ...] = (")
        for name, reason in self.skipped:
            reason = _without_directories(reason)
            out.append(f"    ({name!r},")
            out.append(f"     {reason!r}),")
        out.append(")")
        out.append("")
        out.append("# clang's layout at generation time: class -> (C type, size, align,")
        out.append("#   ((C member name, bit offset, bit width), ...)); tests compare it with a C probe")
        out.append("_LAYOUT = {")
        for class_name, (c_type, size, align, members) in self.layouts.items():
            out.append(f"    {class_name!r}: ({c_type!r}, {size}, {align}, (")
            for member in members:
                out.append(f"        {member!r},")
            out.append("    )),")
        out.append("}")
        out.append("")
        return "\n".join(out)


def python_name_for_constant(name: str) -> str:
    return cexpr.python_identifier(name)


def _string_value(body: tuple[cexpr.Token, ...]) -> str | None:
    """The text of a body made only of string literals (and parentheses), else None."""
    literals = [token.spelling for token in body if token.spelling not in ("(", ")")]
    if not literals or not all(spelling.startswith('"') for spelling in literals):
        return None
    try:
        return "".join(ast.literal_eval(spelling) for spelling in literals)
    except (ValueError, SyntaxError):
        return None


def _constant_line(name: str, value: Any, c_text: str) -> str:
    comment = " ".join(c_text.split())
    single_literal = re.fullmatch(r"\(*\s*-?\s*(0[xX][0-9a-fA-F]+|\d+)[uUlL]*\s*\)*", comment)
    if isinstance(value, int):
        hexadecimal = "0x" in comment.lower() if single_literal else abs(value) >= 0x100
        literal = hex(value) if hexadecimal and abs(value) >= 10 else str(value)
    else:
        literal = repr(value)
    line = f"{name} = {literal}"
    if single_literal or isinstance(value, str):
        return line
    if comment and not comment.startswith("enum "):
        if len(comment) > _COMMENT_LIMIT:
            comment = comment[: _COMMENT_LIMIT - 3] + "..."
        line += f"  # {comment}"
    return line


def _function_source(macro: Macro, expression: str) -> str:
    params = ", ".join(cexpr.python_identifier(param) for param in macro.params or ())
    definition = " ".join(f"#define {macro.name}({', '.join(macro.params or ())}) {macro.body_text}".split())
    definition = definition.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    docstring = textwrap.wrap(definition, _DOCSTRING_WIDTH, break_long_words=False, break_on_hyphens=False)
    docstring[0] = '    """' + docstring[0]
    docstring[1:] = ["    " + line for line in docstring[1:]]
    docstring[-1] += '"""'
    return "\n".join([f"def {macro.name}({params}):", *docstring, f"    return {expression}"])


def generate_module(config: ParseConfig, source: ModuleSource) -> str:
    """The text of the generated module for `config`; byte-identical for the same inputs."""
    return _Generator(config, source).run()


_ABSOLUTE_PATH = re.compile(r"/(?:[^\s:'\"()/]+/)+([^\s:'\"()/]+)")


def _without_directories(text: str) -> str:
    """Reduce absolute paths in clang messages to file names, so output does not depend on the cache."""
    return _ABSOLUTE_PATH.sub(r"\1", text)


def parse_config(target: Any, source_root: pathlib.Path) -> ParseConfig:
    """What clang parses for a manifest target whose package is unpacked at `source_root`."""
    root = pathlib.Path(source_root)
    return ParseConfig(
        headers=tuple(root / path for path in target.paths),
        include_dirs=tuple(root / directory for directory in target.include_dirs),
        prelude=target.prelude,
        stubs=dict(target.stubs),
        exclude=dict(target.exclude),
    )


def generate(target: Any, source_root: pathlib.Path) -> dict[str, str]:
    """Generate a "structs" manifest target: {repository-relative output path: module text}."""
    config = parse_config(target, source_root)
    pin = target.source
    git = pin.layout == "git"
    source = ModuleSource(target.name, target.package, target.version, target.licence, tuple(target.paths),
                          target.description, repository=pin.repository if git else "",
                          file_sha256=pin.file_sha256 if git else ())
    return {target.output: generate_module(config, source)}
