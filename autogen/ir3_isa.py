"""Generator for instruction-set tables from Mesa's isaspec XML (src/freedreno/isa/ir3*.xml, the format
that src/compiler/isaspec/isa.py reads): one Python module of plain data, for one GPU generation.

What the format says (facts read from isaspec's isa.py and isaspec_decode_impl.c):
- `<bitset name size>` is the root of an encoding hierarchy; `<bitset name extends>` refines its
  parent. A bitset adds `<pattern low high | pos>` bits (0, 1 or x for don't-care), `<field>`s
  (`low`/`high` or `pos`, a `type`: a builtin such as uint/int/bool/branch, an `<enum>`, or another
  bitset hierarchy decoded from those bits, with `<param name as>` handing fields down to it),
  `<derived>` fields computed by an expression, a `<display>` template with `{FIELD}` references,
  and `<override expr>` cases whose fields and display apply while the expression holds (the
  default case comes last). `<assert>` bits in a case must hold the given value.
- A leaf is a bitset nothing extends; all its bits are pattern or field bits. An instruction word
  decodes to the one leaf of the root whose merged pattern matches and whose `<gen min max>` range
  holds the GPU id. `{NAME}` in a display is the leaf's name.
- `<expr>` is a C expression over `{FIELD}` values and ISA_GPU_ID(); here it becomes a Python
  expression over `F("FIELD")`, with the GPU id substituted.

The module holds (all tuples and dicts of literals):
- `GPU_ID`, `ROOT`; `EXPRESSIONS` {name: Python expression};
- `ENUMS` {name: {value: display}};
- `BITSETS` {name: (size, extends, match, dontcare, mask, cases)}, where the pattern is merged over
  the bitset and all its parents, and `cases` is a tuple of (expression name or None, display or
  None, fields) with each field (name, low, high, type, display, params, expression, kind, value):
  kind "field", "derived" (value from the expression) or "assert" (`value` must be in the bits);
- `LEAVES` {bitset type: leaf names under it, in XML order}: what a field of that type decodes to;
- `FORCED` {bitset: {field: value}}: fields Mesa's encoder always sets (`<map force="true">` with a
  number), such as stg's DST_OFF.
Bitsets whose generation range excludes `GPU_ID` are left out (`SKIPPED` names them).
"""
from __future__ import annotations

import pathlib
import re
import xml.etree.ElementTree as ElementTree
from typing import Any

ROOT_FILE = "ir3.xml"
GEN_ANY_MAX = (1 << 32) - 1
_PATTERN_BITS = {"0", "1", "x"}
_CHIP_GPU_IDS = {"A6XX": 630}  # one Adreno 6xx id: the XML's generation thresholds are 600 and 700


class ISAError(ValueError):
    """The ISA XML does not follow the isaspec format (names the file and element)."""


def _bit_range(element: ElementTree.Element, where: str) -> tuple[int, int]:
    try:
        if "pos" in element.attrib:
            low = high = int(element.attrib["pos"])
        else:
            low = int(element.attrib["low"])
            high = int(element.attrib["high"])
    except (KeyError, ValueError) as exc:
        raise ISAError(f"{where}: bad bit range ({exc})") from None
    if low > high:
        raise ISAError(f"{where}: low {low} above high {high}")
    return low, high


def python_expression(c_text: str, gpu_id: int) -> str:
    """The isaspec C expression `c_text` as a Python expression over F("FIELD")."""
    text = re.sub(r"/\*.*?\*/", " ", c_text, flags=re.S)
    text = re.sub(r"\{([A-Za-z0-9_]+)\}", r'F("\1")', text)
    text = text.replace("ISA_GPU_ID()", str(gpu_id))
    text = re.sub(r"\b(0x[0-9a-fA-F]+|\d+)U?L{0,2}\b", r"\1", text)
    text = text.replace("&&", " and ").replace("||", " or ")
    text = re.sub(r"!(?!=)", " not ", text)
    text = " ".join(text.split())
    text = text.replace("( ", "(").replace(" )", ")")
    try:
        compile(text, "<isaspec expression>", "eval")
    except SyntaxError as exc:
        raise ISAError(f"expression {c_text.strip()!r} does not translate: {exc}") from None
    return text


class Reader:
    """Reads ir3.xml and its imports in isaspec's order (a file's imports before its own content)."""

    def __init__(self, directory: pathlib.Path, gpu_id: int) -> None:
        self.directory = directory
        self.gpu_id = gpu_id
        self.expressions: dict[str, str] = {}
        self.templates: dict[str, str] = {}
        self.enums: dict[str, dict[int, str]] = {}
        self.bitsets: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.extended: set[str] = set()
        self.forced: dict[str, dict[str, int]] = {}
        self.skipped: list[tuple[str, str]] = []
        self._anonymous = 0

    def read(self, name: str) -> None:
        path = self.directory / name
        try:
            root = ElementTree.parse(path).getroot()
        except (OSError, ElementTree.ParseError) as exc:
            raise ISAError(f"{name}: {exc}") from exc
        for child in root.findall("import"):
            self.read(child.attrib["file"])
        for child in root.findall("expr"):
            self._expression(child, child.attrib["name"])
        for child in root.findall("template"):
            self.templates[child.attrib["name"]] = (child.text or "").strip()
        for child in root.findall("enum"):
            values = {}
            for value in child.findall("value"):
                values[int(value.attrib["val"], 0)] = value.attrib.get("display", "")
            self.enums[child.attrib["name"]] = values
        for child in root.findall("bitset"):
            self._bitset(child, name)

    def _expression(self, element: ElementTree.Element, name: str) -> str:
        self.expressions[name] = python_expression(element.text or "", self.gpu_id)
        return name

    def _inline_expression(self, element: ElementTree.Element, owner: str) -> str:
        inner = element.findall("expr")
        if len(inner) != 1:
            raise ISAError(f"{owner}: expected one <expr> inside <{element.tag}>")
        self._anonymous += 1
        return self._expression(inner[0], f"{owner}#expr{self._anonymous}")

    def _case(self, element: ElementTree.Element, owner: str, expression: str | None) -> tuple:
        fields = []
        for derived in element.findall("derived"):
            name = derived.attrib["name"]
            if "expr" in derived.attrib:
                expr = derived.attrib["expr"]
            else:
                expr = self._inline_expression(derived, f"{owner}.{name}")
            width = int(derived.attrib.get("width", "1"))
            fields.append((name, 0, width - 1, derived.attrib["type"], derived.attrib.get("display"),
                           (), expr, "derived", 0))
        for number, check in enumerate(element.findall("assert")):
            low, high = _bit_range(check, f"{owner} assert")
            bits = (check.text or "").strip()
            if len(bits) != high - low + 1 or set(bits) - {"0", "1"}:
                raise ISAError(f"{owner}: assert {bits!r} does not fill bits {low}..{high}")
            fields.append((f"#assert{number}", low, high, "uint", None, (), None, "assert", int(bits, 2)))
        for field in element.findall("field"):
            name = field.attrib["name"]
            low, high = _bit_range(field, f"{owner}.{name}")
            params = tuple((param.attrib["name"], param.attrib.get("as", param.attrib["name"]))
                           for param in field.findall("param"))
            kind = "field"
            if field.attrib.get("call") == "true":
                kind = "call"
            fields.append((name, low, high, field.attrib["type"], field.attrib.get("display"), params,
                           None, kind, 0))
        display = None
        for template in element.findall("display"):
            display = (template.text or "").strip()
            for reference in re.findall(r"\{([^}]+)\}", display):
                if reference in self.templates:
                    display = display.replace("{" + reference + "}", self.templates[reference])
        return (expression, display, tuple(fields))

    def _bitset(self, element: ElementTree.Element, file_name: str) -> None:
        name = element.attrib["name"]
        gen_min, gen_max = 0, GEN_ANY_MAX
        for gen in element.findall("gen"):
            gen_min = int(gen.attrib.get("min", gen_min))
            gen_max = int(gen.attrib.get("max", gen_max))
        extends = element.attrib.get("extends")
        if extends is not None:
            # a bitset extended by any form, of any generation, is not a leaf (isaspec's isa.py)
            self.extended.add(extends)
        if not gen_min <= self.gpu_id <= gen_max:
            self.skipped.append((name, f"{file_name}: generations {gen_min}..{gen_max}, not {self.gpu_id}"))
            return
        size = int(element.attrib["size"]) if "size" in element.attrib else None
        match = dontcare = mask = 0
        for pattern in element.findall("pattern"):
            low, high = _bit_range(pattern, f"{name} pattern")
            bits = (pattern.text or "").strip()
            if len(bits) != high - low + 1 or set(bits) - _PATTERN_BITS:
                raise ISAError(f"{file_name}: {name}: pattern {bits!r} does not fill bits {low}..{high}")
            for position, bit in enumerate(reversed(bits)):
                value = 1 << (low + position)
                mask |= value
                if bit == "1":
                    match |= value
                elif bit == "x":
                    dontcare |= value
        cases = []
        for override in element.findall("override"):
            if "expr" in override.attrib:
                expression = override.attrib["expr"]
            else:
                expression = self._inline_expression(override, name)
            cases.append(self._case(override, name, expression))
        cases.append(self._case(element, name, None))
        forced = {}
        for encode in element.findall("encode"):
            for mapping in encode.findall("map"):
                text = (mapping.text or "").strip()
                if mapping.attrib.get("force") == "true" and re.fullmatch(r"\d+", text):
                    forced[mapping.attrib["name"]] = int(text)
        if forced:
            self.forced[name] = forced
        if name in self.bitsets:
            raise ISAError(f"{file_name}: a second bitset {name} for GPU {self.gpu_id}")
        self.bitsets[name] = {"size": size, "extends": extends, "match": match, "dontcare": dontcare,
                              "mask": mask, "cases": tuple(cases)}
        self.order.append(name)

    def drop_orphans(self) -> None:
        """Leave out bitsets whose parent this GPU lacks (parents may come later in the files)."""
        changed = True
        while changed:
            changed = False
            for name in list(self.order):
                extends = self.bitsets[name]["extends"]
                if extends is not None and extends not in self.bitsets:
                    self.skipped.append((name, f"extends {extends}, which GPU {self.gpu_id} lacks"))
                    del self.bitsets[name]
                    self.order.remove(name)
                    changed = True

    def merged(self, name: str) -> tuple[int, int, int, int]:
        """(size, match, dontcare, mask) over the bitset and its parents."""
        bitset = self.bitsets[name]
        if bitset["extends"] is None:
            return bitset["size"], bitset["match"], bitset["dontcare"], bitset["mask"]
        size, match, dontcare, mask = self.merged(bitset["extends"])
        if mask & bitset["mask"]:
            raise ISAError(f"{name}: pattern bits {mask & bitset['mask']:#x} also set by a parent")
        return size, match | bitset["match"], dontcare | bitset["dontcare"], mask | bitset["mask"]

    def ancestors(self, name: str) -> list[str]:
        chain = []
        while name is not None:
            chain.append(name)
            name = self.bitsets[name]["extends"]
        return chain

    def leaves(self) -> dict[str, tuple[str, ...]]:
        leaves = [name for name in self.order if name not in self.extended]
        by_type: dict[str, list[str]] = {}
        for leaf in leaves:
            for ancestor in self.ancestors(leaf):
                by_type.setdefault(ancestor, []).append(leaf)
        return {name: tuple(by_type[name]) for name in self.order if name in by_type}


def _licence(path: pathlib.Path) -> list[str]:
    """The comment block at the top of ir3.xml (copyright and MIT permission notice)."""
    text = path.read_text()
    start = text.find("<!--")
    end = text.find("-->", start)
    if start < 0 or end < 0:
        raise ISAError(f"{path.name}: no licence comment")
    return [line.rstrip() for line in text[start + 4:end].strip().splitlines()]


def _render(target: Any, reader: Reader, notice: list[str]) -> str:
    leaves = reader.leaves()
    instructions = leaves.get("#instruction", ())
    out = [f"# Generated by autogen.ir3_isa from {target.package} {target.version}; do not edit.",
           f"# Regenerate: python -m autogen {target.name}",
           "# Sources (paths inside the package):"]
    out += [f"#   {path}" for path in target.paths]
    out.append(f"# Licence of the source XML ({target.licence}), as ir3.xml states it:")
    out.append("#")
    out += [f"#   {line}".rstrip() for line in notice]
    out.append('"""ir3 instruction-set tables (Adreno shader ISA) from Mesa\'s isaspec description, '
               f"for GPU id {reader.gpu_id}.")
    out.append("")
    out.append(f"{len(reader.bitsets)} bitsets, {len(instructions)} instruction forms, "
               f"{len(reader.expressions)} expressions, {len(reader.enums)} enums;")
    out.append(f"{len(reader.skipped)} bitsets of other generations SKIPPED. The layout of each table "
               "is described in")
    out.append("autogen/ir3_isa.py; drivers/qcom/ir3 decodes and encodes with them.")
    out.append('"""')
    out.append("")
    out.append(f"SOURCE_PACKAGE = {target.package!r}")
    out.append(f"SOURCE_VERSION = {target.version!r}")
    out.append("SOURCE_PATHS = (")
    out += [f"    {path!r}," for path in target.paths]
    out.append(")")
    out.append(f"LICENCE = {target.licence!r}")
    out.append(f"GPU_ID = {reader.gpu_id}")
    out.append('ROOT = "#instruction"')
    out.append("")
    out.append("# expression name -> Python expression over F(\"FIELD\") (the field's value)")
    out.append("EXPRESSIONS: dict[str, str] = {")
    out += [f"    {name!r}: {text!r}," for name, text in reader.expressions.items()]
    out.append("}")
    out.append("")
    out.append("# enum name -> {value: display}")
    out.append("ENUMS: dict[str, dict[int, str]] = {")
    for name, values in reader.enums.items():
        out.append(f"    {name!r}: {{")
        out += [f"        {value}: {display!r}," for value, display in values.items()]
        out.append("    },")
    out.append("}")
    out.append("")
    out.append("# name -> (size, extends, match, dontcare, mask, cases); the pattern is merged over the "
               "parents;")
    out.append("# case: (expression or None, display or None, fields); field: (name, low, high, type, "
               "display,")
    out.append("# params ((name, as), ...), expression, kind, assert value)")
    out.append("BITSETS: dict[str, tuple] = {")
    for name in reader.order:
        bitset = reader.bitsets[name]
        size, match, dontcare, mask = reader.merged(name)
        out.append(f"    {name!r}: ({size}, {bitset['extends']!r}, {match:#x}, {dontcare:#x}, {mask:#x}, (")
        for expression, display, fields in bitset["cases"]:
            out.append(f"        ({expression!r}, {display!r}, (")
            out += [f"            {field!r}," for field in fields]
            out.append("        )),")
        out.append("    )),")
    out.append("}")
    out.append("")
    out.append("# fields the encoder always sets to a value (`<encode><map force=\"true\">`), per bitset")
    out.append("FORCED: dict[str, dict[str, int]] = {")
    out += [f"    {name!r}: {values!r}," for name, values in reader.forced.items() if name in reader.bitsets]
    out.append("}")
    out.append("")
    out.append("# bitset type -> the leaves under it (what a field of that type decodes to)")
    out.append("LEAVES: dict[str, tuple[str, ...]] = {")
    for name, names in leaves.items():
        out.append(f"    {name!r}: (")
        out += [f"        {leaf!r}," for leaf in names]
        out.append("    ),")
    out.append("}")
    out.append("")
    out.append("# bitsets left out: (name, reason)")
    out.append("SKIPPED: tuple[tuple[str, str], ...] = (")
    out += [f"    ({name!r}, {reason!r})," for name, reason in reader.skipped]
    out.append(")")
    return "\n".join(out) + "\n"


def generate(target: Any, source_root: pathlib.Path) -> dict[str, str]:
    """Generate `target.output` from the ir3.xml among `target.paths` for chip `target.variant`."""
    root_paths = [path for path in target.paths if pathlib.PurePosixPath(path).name == ROOT_FILE]
    if not root_paths:
        raise ISAError(f"{target.name}: {ROOT_FILE} must be among the paths")
    if target.variant not in _CHIP_GPU_IDS:
        raise ISAError(f"{target.name}: no GPU id known for variant {target.variant!r}")
    root_path = pathlib.Path(source_root) / root_paths[0]
    reader = Reader(root_path.parent, _CHIP_GPU_IDS[target.variant])
    reader.read(ROOT_FILE)
    reader.drop_orphans()
    return {target.output: _render(target, reader, _licence(root_path))}
