"""Generator for register databases in rules-ng-ng XML (Mesa's src/freedreno/registers): a front end
that reads domains, reg32/reg64, arrays, stripes, bitsets and enums, keeps what one chip variant has,
and writes a register module for the `autogen.regs` runtime.

The format (src/freedreno/registers/rules-fd.xsd, text-format.txt in the same folder):
- `<domain name width varset>` holds registers; an offset is in units of `width` bits (dwords here);
- `<reg32|reg64 offset name type>` is a register; its `<bitfield name low high | pos type shr>`
  children, plus those of the `<bitset>` its `type` names, are its fields. A register that carries
  `low`/`high`/`pos` itself is one field of that name;
- `<array offset name stride length>` repeats its registers `length` times, `stride` dwords apart;
  an array with no children is itself the register; an unnamed one names its registers
  `<domain>__<reg>`, as Mesa's gen_header.py does;
- `<stripe>` groups elements under one set of variants (and an optional name prefix);
- `variants="A2XX-A6XX" | "A6XX-" | "A6XX"` on any element selects chip generations from the `chip`
  enum (adreno_common.xml). Variants over another varset (packet modes such as EV_DST_RAM) name
  alternative layouts of the same bits; those are kept, each under its own name.

Per target: `target.paths[0]` is the XML whose content becomes the module, further paths are read
for types only (bitsets, enums) except those listed in `target.also_emit`, whose enums and domains
are emitted too; freedreno_copyright.xml supplies the licence. Generated modules hold:
- `_TABLE` in the `autogen.regs` format (register offset `-` field-count, then `name shift mask`),
  with register names `REG_<DOMAIN PREFIX>_<NAME>` for the chip domain and `<DOMAIN>_<NAME>` for the
  packet domains (CP_LOAD_STATE6_0: dword 0 of the packet's payload);
- `ARRAYS` {register: (stride, length)} for array registers (the offset is element 0's), `element()`;
- `REG64`: the 64-bit registers; `FIELD_TYPES`, `FIELD_SHR`, `FIELD_RADIX` keyed `REG.FIELD`;
- enum members as module constants and `ENUMS` {enum name: {member: value}};
- `SKIPPED`: each element left out and why.
Output is byte-identical for the same XML.
"""
from __future__ import annotations

import pathlib
import re
import textwrap
import xml.etree.ElementTree as ElementTree
from typing import Any, Iterable

NAMESPACE = "{http://nouveau.freedesktop.org/}"
COPYRIGHT_FILE = "freedreno_copyright.xml"
# the chip generations, in order, as adreno_common.xml's `chip` enum lists them (read from the XML)
CHIP_ENUM = "chip"
# types the format defines itself (rules-fd.xsd, text-format.txt): no enum or bitset behind them
BUILTIN_TYPES = frozenset({"uint", "int", "boolean", "hex", "float", "fixed", "ufixed", "address",
                           "waddress", "a3xx_regid"})
_WORD_BITS = 32
_WIDE_BITS = 64
_DOC_WIDTH = 100


class RegisterXMLError(ValueError):
    """The XML does not follow the format the generator reads (names the file and element)."""


def _tag(element: ElementTree.Element) -> str:
    return element.tag.replace(NAMESPACE, "")


def _number(text: str, where: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise RegisterXMLError(f"{where}: {text!r} is not a number") from None


class Database:
    """Every enum and bitset of a set of XML files, and the chip generations in order."""

    def __init__(self, roots: dict[str, ElementTree.Element]) -> None:
        self.roots = roots
        self.enums: dict[str, ElementTree.Element] = {}
        self.bitsets: dict[str, ElementTree.Element] = {}
        for root in roots.values():
            for element in root.iter():
                name = element.get("name", "")
                if _tag(element) == "enum" and name not in self.enums:
                    self.enums[name] = element
                if _tag(element) == "bitset" and name not in self.bitsets:
                    self.bitsets[name] = element
        chip = self.enums.get(CHIP_ENUM)
        if chip is None:
            raise RegisterXMLError(f"no <enum name=\"{CHIP_ENUM}\"> among {sorted(roots)}")
        self.chips = [value.get("name", "") for value in chip if _tag(value) == "value"]

    def chip_variants(self, text: str) -> set[str] | None:
        """The chips a `variants` value selects; None when it names another varset's values."""
        chosen: set[str] = set()
        for part in text.split(","):
            part = part.strip()
            low, dash, high = part.partition("-")
            if low not in self.chips or (high and high not in self.chips):
                return None
            first = self.chips.index(low)
            if not dash:
                last = first
            elif high:
                last = self.chips.index(high)
            else:
                last = len(self.chips) - 1
            chosen.update(self.chips[first:last + 1])
        return chosen


class Emitter:
    """Collects registers, arrays, enums and skipped elements for one module."""

    def __init__(self, database: Database, variant: str) -> None:
        self.database = database
        self.variant = variant
        self.registers: dict[str, tuple[int, list[tuple[str, int, int]]]] = {}
        self.arrays: dict[str, tuple[int, int]] = {}
        self.wide: set[str] = set()
        self.field_types: dict[str, str] = {}
        self.field_shr: dict[str, int] = {}
        self.field_radix: dict[str, int] = {}
        self.enums: dict[str, dict[str, int]] = {}
        self.constants: dict[str, int] = {}
        self.skipped: list[tuple[str, str]] = []

    def selected(self, element: ElementTree.Element) -> bool:
        variants = element.get("variants")
        if variants is None:
            return True
        chips = self.database.chip_variants(variants)
        return chips is None or self.variant in chips

    # ---- enums
    def add_enum(self, enum: ElementTree.Element) -> None:
        name = enum.get("name", "")
        if not self.selected(enum) or name == CHIP_ENUM:
            return
        members: dict[str, int] = {}
        for value in enum:
            if _tag(value) != "value" or not self.selected(value):
                continue
            member = value.get("name", "")
            if "value" not in value.attrib:
                self.skipped.append((member, f"enum {name}: member without a value"))
                continue
            number = _number(value.get("value", ""), f"enum {name} value {member}")
            if member in self.constants and self.constants[member] != number:
                self.skipped.append((member, f"enum {name}: {number:#x} conflicts with "
                                             f"{self.constants[member]:#x} defined earlier"))
                continue
            members[member] = number
            self.constants[member] = number
        if name in self.enums:
            self.enums[name].update(members)
        else:
            self.enums[name] = members

    # ---- registers
    def add_register(self, element: ElementTree.Element, name: str, offset: int,
                     stride_length: tuple[int, int] | None) -> None:
        bits = _WIDE_BITS if _tag(element) == "reg64" else _WORD_BITS
        fields: list[tuple[str, int, int]] = []
        if name in self.registers:
            first_offset, first_fields = self.registers[name]
            if first_offset != offset or (name in self.wide) != (bits == _WIDE_BITS):
                self.skipped.append((name, f"a second register of this name at {offset:#x} (the first "
                                           f"is at {first_offset:#x})"))
                return
            # the same dword described again under another packet mode: its fields join the first
            fields = first_fields
        if "low" in element.attrib or "pos" in element.attrib:
            # the register is one field named like the register itself
            self._add_field(name, element, fields, bits, field_name=name.rpartition("_")[2] or name)
        register_type = element.get("type", "")
        bitset = self.database.bitsets.get(register_type)
        sources = ([bitset] if bitset is not None else []) + [element]
        for source in sources:
            for child in source:
                if _tag(child) == "bitfield" and self.selected(child):
                    self._add_field(name, child, fields, bits)
        if register_type and bitset is None and not fields:
            self._note_type(name, register_type)
        self.registers[name] = (offset, fields)
        if bits == _WIDE_BITS:
            self.wide.add(name)
        if stride_length is not None:
            self.arrays[name] = stride_length

    def _add_field(self, register: str, element: ElementTree.Element, fields: list[tuple[str, int, int]],
                   bits: int, field_name: str = "") -> None:
        name = field_name or element.get("name", "")
        where = f"{register}.{name}"
        if "pos" in element.attrib:
            low = high = _number(element.get("pos", ""), where)
        else:
            low = _number(element.get("low", "0"), where)
            high = _number(element.get("high", str(bits - 1)), where)
        if not 0 <= low <= high < bits:
            self.skipped.append((where, f"bits {low}..{high} outside a {bits}-bit register"))
            return
        mask = ((1 << (high - low + 1)) - 1) << low
        if (name, low, mask) in fields:
            return  # the same field again, under another packet mode
        if any(existing == name for existing, _shift, _mask in fields):
            self.skipped.append((where, "a second field of this name with other bits in the register"))
            return
        fields.append((name, low, mask))
        field_type = element.get("type", "")
        if field_type and field_type != "uint":
            self._note_type(where, field_type)
        if "shr" in element.attrib:
            shr = _number(element.get("shr", ""), where)
            if shr:
                self.field_shr[where] = shr
        if "radix" in element.attrib:
            self.field_radix[where] = _number(element.get("radix", ""), where)

    def _note_type(self, key: str, type_name: str) -> None:
        self.field_types[key] = type_name

    def walk_domain(self, domain: ElementTree.Element, register_prefix: str, domain_name: str) -> None:
        for element in domain:
            self._walk(element, register_prefix, domain_name, 0, None)

    def _walk(self, element: ElementTree.Element, prefix: str, domain_name: str, base: int,
              stride_length: tuple[int, int] | None) -> None:
        tag = _tag(element)
        if tag in ("doc", "brief", "bitset"):
            return
        if tag == "enum":
            self.add_enum(element)
            return
        if not self.selected(element):
            return
        where = f"{domain_name} {tag} {element.get('name', '')}".rstrip()
        if tag == "stripe":
            stripe_prefix = element.get("prefix", "")
            chips = self.database.chip_variants(element.get("variants", "")) if element.get(
                "variants") else None
            inner = prefix
            if stripe_prefix and chips is None:
                inner = f"{prefix}{stripe_prefix}_"
            for child in element:
                self._walk(child, inner, domain_name, base, stride_length)
            return
        if tag == "array":
            if stride_length is not None:
                self.skipped.append((where, "an array inside an array"))
                return
            offset = base + _number(element.get("offset", "0"), where)
            stride = _number(element.get("stride", "1"), where)
            length = _number(element.get("length", "1"), where)
            array_name = element.get("name", "")
            children = [child for child in element if _tag(child) in ("reg32", "reg64", "array")]
            if not children:
                self.add_register(element, f"{prefix}{array_name}", offset, (stride, length))
                return
            inner = f"{prefix}{array_name}_" if array_name else f"{prefix}_"
            for child in element:
                self._walk(child, inner, domain_name, offset, (stride, length))
            return
        if tag in ("reg32", "reg64"):
            offset = base + _number(element.get("offset", ""), where)
            self.add_register(element, f"{prefix}{element.get('name', '')}", offset, stride_length)
            return
        self.skipped.append((where, f"element <{tag}> is not part of the register format read here"))


def licence_text(root: pathlib.Path) -> list[str]:
    """The copyright holders and MIT licence text of freedreno_copyright.xml, as comment lines."""
    path = root / COPYRIGHT_FILE
    tree = ElementTree.parse(path).getroot()
    lines = []
    for copyright_element in tree.iter(f"{NAMESPACE}copyright"):
        year = copyright_element.get("year", "")
        for author in copyright_element.iter(f"{NAMESPACE}author"):
            lines.append(f"Copyright {year} {author.get('name', '')}")
        for licence in copyright_element.iter(f"{NAMESPACE}license"):
            lines.append("")
            lines += [line.rstrip() for line in (licence.text or "").strip().splitlines()]
    return lines


def _render(target: Any, emitter: Emitter, notice: list[str], description: str) -> str:
    out: list[str] = []
    out.append(f"# Generated by autogen.xml_regs from {target.package} {target.version}; do not edit.")
    out.append(f"# Regenerate: python -m autogen {target.name}")
    out.append("# Sources (paths inside the package):")
    out += [f"#   {path}" for path in target.paths]
    out.append(f"# Chip variant kept where elements have variants: {target.variant}")
    out.append(f"# Licence of the source XML ({target.licence}), as freedreno_copyright.xml states it:")
    out.append("#")
    out += [f"#   {line}".rstrip() for line in notice]
    fields = sum(len(entry[1]) for entry in emitter.registers.values())
    wrapped = textwrap.wrap(description, width=_DOC_WIDTH)
    out.append(f'"""{wrapped[0]}')
    out += wrapped[1:]
    out.append("")
    out.append(f"{len(emitter.registers)} registers with {fields} fields, {len(emitter.enums)} enums; "
               f"{len(emitter.skipped)} elements SKIPPED (each with the reason).")
    out.append("Registers are `autogen.regs.Register`s: `module.NAME` or `module.get('NAME')`; "
               "`element(NAME, i)` is")
    out.append("the offset of element i of an array register. See autogen/xml_regs.py for the format.")
    out.append('"""')
    out.append("from autogen.regs import Register, RegisterTable")
    out.append("")
    out.append(f"SOURCE_PACKAGE = {target.package!r}")
    out.append(f"SOURCE_VERSION = {target.version!r}")
    out.append("SOURCE_PATHS = (")
    out += [f"    {path!r}," for path in target.paths]
    out.append(")")
    out.append(f"LICENCE = {target.licence!r}")
    out.append(f"VARIANT = {target.variant!r}")
    out.append("")
    out.append("# ---- enums: members as constants, ENUMS maps each enum to its members")
    for enum_name, members in emitter.enums.items():
        if not members:
            continue
        out.append(f"# {enum_name}")
        for member, value in members.items():
            out.append(f"{member} = {value:#x}")
    out.append("")
    out.append("ENUMS: dict[str, dict[str, int]] = {")
    for enum_name, members in emitter.enums.items():
        if not members:
            continue
        out.append(f"    {enum_name!r}: {{")
        for member, value in members.items():
            out.append(f"        {member!r}: {value:#x},")
        out.append("    },")
    out.append("}")
    out.append("")
    out.append("# array registers: name -> (stride in dwords, number of elements); offsets are element 0's")
    out.append("ARRAYS: dict[str, tuple[int, int]] = {")
    for name, (stride, length) in emitter.arrays.items():
        out.append(f"    {name!r}: ({stride}, {length}),")
    out.append("}")
    out.append("")
    out.append("# 64-bit registers (two dwords, low first)")
    out.append("REG64 = frozenset({")
    out += [f"    {name!r}," for name in sorted(emitter.wide)]
    out.append("})")
    out.append("")
    out.append("# fields whose type is not a plain uint: REG.FIELD -> enum, bitset or format type name")
    out.append("FIELD_TYPES: dict[str, str] = {")
    out += [f"    {key!r}: {value!r}," for key, value in emitter.field_types.items()]
    out.append("}")
    out.append("# fields that hold a value shifted right by this many bits (an aligned address)")
    out.append("FIELD_SHR: dict[str, int] = {")
    out += [f"    {key!r}: {value}," for key, value in emitter.field_shr.items()]
    out.append("}")
    out.append("# fixed-point fields: fraction bits")
    out.append("FIELD_RADIX: dict[str, int] = {")
    out += [f"    {key!r}: {value}," for key, value in emitter.field_radix.items()]
    out.append("}")
    out.append("")
    out.append("# elements the generator left out: (name, reason)")
    out.append("SKIPPED: tuple[tuple[str, str], ...] = (")
    out += [f"    ({name!r}, {reason!r})," for name, reason in emitter.skipped]
    out.append(")")
    out.append("")
    out.append("# register offset base_idx field_count, then one line per field: name shift mask")
    out.append('_TABLE = """\\')
    for name, (offset, register_fields) in emitter.registers.items():
        out.append(f"{name} {offset:#x} - {len(register_fields)}")
        out += [f" {field} {shift} {mask:#x}" for field, shift, mask in register_fields]
    out.append('"""')
    out.append("")
    out.append("_registers = RegisterTable(__name__, _TABLE)")
    out.append("get = _registers.get")
    out.append("names = _registers.names")
    out.append("")
    out.append("")
    out.append("def element(name: str, index: int) -> int:")
    out.append('    """The dword offset of element `index` of array register `name` (IndexError past its '
               'end)."""')
    out.append("    stride, length = ARRAYS[name]")
    out.append("    if not 0 <= index < length:")
    out.append('        raise IndexError(f"{name} has {length} elements, not index {index}")')
    out.append("    return _registers.get(name).offset + stride * index")
    out.append("")
    out.append("")
    out.append("def __getattr__(name: str) -> Register:")
    out.append("    return _registers.module_getattr(name)")
    out.append("")
    out.append("")
    out.append("def __dir__() -> list[str]:")
    out.append("    return _registers.module_dir(list(globals()))")
    return "\n".join(out) + "\n"


def _check_names(emitter: Emitter) -> None:
    """A constant that shadows a register would hide it from `module.NAME`: leave the constant out."""
    for name in list(emitter.constants):
        if name in emitter.registers:
            emitter.skipped.append((name, "enum member with a register's name (the register keeps it)"))
            for members in emitter.enums.values():
                members.pop(name, None)


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")


def _check_identifiers(emitter: Emitter) -> None:
    for members in emitter.enums.values():
        for member in list(members):
            if not _IDENTIFIER.match(member):
                emitter.skipped.append((member, "enum member that is not a Python identifier"))
                del members[member]


def generate(target: Any, source_root: pathlib.Path) -> dict[str, str]:
    """Generate the module of `target`: {repository-relative output path: text}.

    `target.paths`: the XML files (the first is the module's own, then the ones it imports, then
    freedreno_copyright.xml); `target.variant`: the chip kept; `target.also_emit`: further paths whose
    enums and domains go into the module too; `target.domain_prefixes`: {domain: register prefix}.
    """
    source_root = pathlib.Path(source_root)
    roots: dict[str, ElementTree.Element] = {}
    for path in target.paths:
        if pathlib.PurePosixPath(path).name == COPYRIGHT_FILE:
            continue
        try:
            roots[path] = ElementTree.parse(source_root / path).getroot()
        except (OSError, ElementTree.ParseError) as exc:
            raise RegisterXMLError(f"{path}: {exc}") from exc
    copyright_paths = [path for path in target.paths if pathlib.PurePosixPath(path).name == COPYRIGHT_FILE]
    if not copyright_paths:
        raise RegisterXMLError(f"{target.name}: {COPYRIGHT_FILE} must be among the paths (the licence)")
    notice = licence_text(source_root / pathlib.PurePosixPath(copyright_paths[0]).parent)
    database = Database(roots)
    emitter = Emitter(database, target.variant)
    emitted: Iterable[str] = (target.paths[0], *target.also_emit)
    for path in emitted:
        for element in roots[path]:
            tag = _tag(element)
            if tag == "enum":
                emitter.add_enum(element)
            elif tag == "domain" and emitter.selected(element):
                name = element.get("name", "")
                prefix = target.domain_prefixes.get(name, f"{name}_")
                emitter.walk_domain(element, prefix, name)
    _check_identifiers(emitter)
    _check_names(emitter)
    return {target.output: _render(target, emitter, notice, target.description)}
