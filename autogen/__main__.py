"""`python -m autogen [--list | --check] [--offline] [TARGET...]`: regenerate or check the bindings.

TARGET is a manifest name (`linux.vfio`) or a group prefix (`linux`, `amd`, `amd.regs`); none means
all. Without --check, sources are fetched into the cache when missing (see autogen.sources) and the
outputs are rewritten where they changed. With --check nothing is written: the command exits 1 and
summarises the differences when a committed file differs from what the generator produces now.
--offline never downloads. With it and no TARGET, targets whose sources are not on the machine are
reported and left out; a TARGET named explicitly must be checkable, so its missing sources are an
error (exit 3) that names the package and the command that fetches it.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import pathlib
import sys

from autogen import GenerationError, manifest, sources

REPOSITORY_ROOT = pathlib.Path(__file__).resolve().parent.parent
# per target kind: the generator module, exposing generate(target, source_root) -> {path: text},
# and the name of the exception it raises for headers it cannot read
GENERATORS = {
    manifest.KIND_STRUCTS: ("autogen.clang_gen", "HeaderParseError"),
    manifest.KIND_AMD_REGS: ("autogen.gen_regs", "RegisterHeaderError"),
}
_DIFF_LINES_SHOWN = 12


def generate_target(target: manifest.Target, *, download: bool = True) -> dict[str, str]:
    """Resolve the target's source package and run its generator."""
    root = sources.source_root(target.source, target.paths, download=download, target_names=[target.name])
    module_name, error_name = GENERATORS[target.kind]
    generator = importlib.import_module(module_name)
    try:
        return generator.generate(target, root)
    except getattr(generator, error_name) as exc:
        raise GenerationError(f"{target.name}: {exc}") from exc


def _list(targets: list[manifest.Target]) -> int:
    width = max(len(target.name) for target in targets)
    for target in targets:
        source = f"{target.package} {target.version}"
        print(f"{target.name:<{width}}  {target.kind:<8} {source}  [{target.licence}]")
        for path in target.paths:
            print(f"{'':<{width}}    {path}")
    return 0


def _diff_summary(path: str, committed: str | None, generated: str) -> str:
    if committed is None:
        return f"{path}: missing (the generator produces {generated.count(chr(10))} lines)"
    diff = list(difflib.unified_diff(committed.splitlines(), generated.splitlines(),
                                     f"{path} (committed)", f"{path} (generated)", lineterm="", n=0))
    changed = sum(1 for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---")))
    shown = "\n".join("    " + line for line in diff[:_DIFF_LINES_SHOWN])
    hidden = len(diff) - _DIFF_LINES_SHOWN
    more = f"\n    ... {hidden} more diff lines" if hidden > 0 else ""
    return f"{path}: differs ({changed} lines changed)\n{shown}{more}"


def run(names: list[str], *, check: bool, offline: bool) -> int:
    targets = manifest.select(names)
    failures = 0
    for target in targets:
        try:
            outputs = generate_target(target, download=not offline)
        except sources.SourceUnavailable as exc:
            if offline and not names:
                print(f"{target.name}: not checked, sources not on this machine "
                      f"({exc.package} {exc.version})")
                continue
            raise
        for relative, text in sorted(outputs.items()):
            path = REPOSITORY_ROOT / relative
            committed = path.read_text() if path.is_file() else None
            if committed == text:
                print(f"{target.name}: {relative} up to date")
                continue
            if check:
                failures += 1
                print(_diff_summary(relative, committed, text))
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"{target.name}: wrote {relative}")
    if failures:
        print(f"{failures} generated file(s) differ from the committed ones; run: python -m autogen "
              + " ".join(names))
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autogen", description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", metavar="TARGET", help="target names or group prefixes")
    parser.add_argument("--list", action="store_true", help="list the targets and their pinned sources")
    parser.add_argument("--check", action="store_true", help="fail if committed output differs")
    parser.add_argument("--offline", action="store_true", help="never download; skip targets without sources")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the commands run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("autogen.progress").setLevel(logging.INFO)
    try:
        if args.list:
            return _list(manifest.select(args.targets))
        return run(args.targets, check=args.check, offline=args.offline)
    except manifest.UnknownTarget as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except sources.SourceUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except GenerationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4


if __name__ == "__main__":
    sys.exit(main())
