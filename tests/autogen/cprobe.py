"""Test helper: compile a C program against a header and read back the layout the C compiler gives.

`probe_layouts(config, module)` writes one C file that includes the parsed headers (with the same
prelude and stub headers the generator used), prints sizeof/_Alignof of every class in the module's
`_LAYOUT`, the bit offset and bit size of every member (bitfields found by setting them to all ones in
a zeroed object), and returns {class: (size, align, {C member: (bit offset, bit width)})}.
"""
from __future__ import annotations

import pathlib
import shutil
import subprocess
import types

from autogen.clang_gen import ParseConfig
from autogen.runtime import python_name


def c_compiler() -> str | None:
    for name in ("gcc", "cc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    return None


def load_module(text: str, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(text, f"<generated {name}>", "exec"), module.__dict__)
    return module


def _setup(config: ParseConfig, workdir: pathlib.Path) -> list[str]:
    flags = ["-std=gnu11", "-nostdinc", "-w"]
    if config.stubs:
        stub_dir = workdir / "stubs"
        for name, text in config.stubs.items():
            path = stub_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        flags += ["-I", str(stub_dir)]
    for directory in config.include_dirs:
        flags += ["-I", str(directory)]
    if config.prelude:
        prelude = workdir / "prelude.h"
        prelude.write_text(config.prelude)
        flags += ["-include", str(prelude)]
    return flags


def compile_and_run(config: ParseConfig, body: list[str], workdir: pathlib.Path) -> str:
    """Compile `body` (statements of main) after the headers; return the program's output."""
    compiler = c_compiler()
    flags = _setup(config, workdir)
    source = ["int printf(const char *format, ...);"]
    source += [f'#include "{header}"' for header in config.headers]
    source += ["int main(void) {", *body, "return 0;", "}"]
    c_file = workdir / "probe.c"
    c_file.write_text("\n".join(source) + "\n")
    program = workdir / "probe"
    result = subprocess.run([compiler, *flags, str(c_file), "-o", str(program)], capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise AssertionError(f"the probe does not compile:\n{result.stderr[:4000]}")
    return subprocess.run([str(program)], capture_output=True, text=True, check=True).stdout


def _bit_scan(c_type: str, member: str, label: str) -> list[str]:
    return [
        "{",
        f"  {c_type} v; unsigned char *p = (unsigned char *)&v; int first = -1, count = 0;",
        "  __builtin_memset(&v, 0, sizeof v);",
        f"  v.{member} = -1;",
        "  for (unsigned long i = 0; i < sizeof v * 8; i++)",
        "    if ((p[i / 8] >> (i % 8)) & 1) { if (first < 0) first = (int)i; count++; }",
        f'  printf("M {label} %d %d\\n", first, count);',
        "}",
    ]


def probe_layouts(config: ParseConfig, module: types.ModuleType, workdir: pathlib.Path) -> dict:
    body: list[str] = []
    for class_name, (c_type, _, _, members) in module._LAYOUT.items():
        cls = getattr(module, class_name)
        body.append(f'printf("S {class_name} %lu %lu\\n", (unsigned long)sizeof({c_type}), '
                    f"(unsigned long)_Alignof({c_type}));")
        for c_member, _, _ in members:
            field = cls.FIELDS[python_name(c_member)]
            label = f"{class_name} {c_member}"
            if field.kind == "bits":
                body += _bit_scan(c_type, c_member, label)
            elif field.kind == "flex":
                body.append(f'printf("M {label} %lu 0\\n", '
                            f"(unsigned long)__builtin_offsetof({c_type}, {c_member}) * 8);")
            else:
                body.append(f'printf("M {label} %lu %lu\\n", '
                            f"(unsigned long)__builtin_offsetof({c_type}, {c_member}) * 8, "
                            f"(unsigned long)sizeof((({c_type} *)0)->{c_member}) * 8);")
    output = compile_and_run(config, body, workdir)
    layouts: dict[str, tuple[int, int, dict]] = {}
    for line in output.splitlines():
        parts = line.split()
        if parts[0] == "S":
            layouts[parts[1]] = (int(parts[2]), int(parts[3]), {})
        else:
            layouts[parts[1]][2][parts[2]] = (int(parts[3]), int(parts[4]))
    return layouts


def layout_mismatches(module: types.ModuleType, probed: dict) -> list[str]:
    """Differences between the compiler's layout, the recorded _LAYOUT and the classes' FIELDS."""
    problems = []
    for class_name, (_, size, align, members) in module._LAYOUT.items():
        cls = getattr(module, class_name)
        c_size, c_align, c_members = probed[class_name]
        if (c_size, c_align) != (size, align) or cls.SIZE != size or cls.ALIGN != align:
            problems.append(f"{class_name}: C size/align {c_size}/{c_align}, recorded {size}/{align}, "
                            f"class {cls.SIZE}/{cls.ALIGN}")
        for c_member, bit_offset, bit_width in members:
            if c_members.get(c_member) != (bit_offset, bit_width):
                problems.append(f"{class_name}.{c_member}: C {c_members.get(c_member)}, "
                                f"recorded {(bit_offset, bit_width)}")
        problems += fields_mismatches(module, class_name)
    return problems


def fields_mismatches(module: types.ModuleType, class_name: str) -> list[str]:
    """Differences between a class's FIELDS and its recorded _LAYOUT entry."""
    _, size, _, members = module._LAYOUT[class_name]
    cls = getattr(module, class_name)
    problems = []
    if set(cls.FIELDS) != {python_name(member) for member, _, _ in members}:
        problems.append(f"{class_name}: FIELDS {sorted(cls.FIELDS)} != recorded members")
    for c_member, bit_offset, bit_width in members:
        field = cls.FIELDS.get(python_name(c_member))
        if field is None:
            continue
        if field.kind == "bits":
            actual = (field.offset * 8 + field.bit_shift, field.bit_width)
        else:
            actual = (field.offset * 8, field.size * 8)
        if actual != (bit_offset, bit_width):
            problems.append(f"{class_name}.{c_member}: FIELDS give {actual}, "
                            f"recorded {(bit_offset, bit_width)}")
        if field.kind != "flex" and field.offset + field.size > size:
            problems.append(f"{class_name}.{c_member}: runs past SIZE {size}")
    return problems
