"""`python -m autogen [--list | --check | --repin] [--offline] [TARGET...]`: the bindings' command line.

TARGET is a manifest name (`linux.vfio`) or a group prefix (`linux`, `amd`, `amd.regs`); none means
all. Without an action flag, sources are fetched into the cache when missing (see autogen.sources)
and the outputs are rewritten where they changed. With --check nothing is written: the command exits
1 and summarises the differences when a committed file differs from what the generator produces now.
A pinned version that is neither cached, installed nor served by the archive any more is reported
loudly with the re-pin command and counts as "not checked" (exit 0 for that target), since nothing
can be compared; a difference at the pinned version always fails.
--repin TARGET... pins each named target's package to the version its suite serves now, regenerates
every target built from that package, rewrites autogen/manifest.py and prints the diff.
--offline never downloads. With it and no TARGET, targets whose sources are not on the machine are
reported and left out; a TARGET named explicitly must be checkable, so its missing sources are an
error (exit 3) that names the package and the command that fetches it.
--list, --check and --repin exclude each other; --offline goes with --check or a regeneration.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import logging
import pathlib
import re
import sys

from autogen import GenerationError, manifest, sources

REPOSITORY_ROOT = pathlib.Path(__file__).resolve().parent.parent
MANIFEST_PATH = "autogen/manifest.py"  # repository-relative; --repin rewrites the pins in it
# per target kind: the generator module, exposing generate(target, source_root) -> {path: text},
# and the name of the exception it raises for headers it cannot read
GENERATORS = {
    manifest.KIND_STRUCTS: ("autogen.clang_gen", "HeaderParseError"),
    manifest.KIND_AMD_REGS: ("autogen.gen_regs", "RegisterHeaderError"),
    manifest.KIND_XML_REGS: ("autogen.xml_regs", "RegisterXMLError"),
    manifest.KIND_ISASPEC: ("autogen.ir3_isa", "ISAError"),
    manifest.KIND_NV_FIELDS: ("autogen.nv_fields", "FieldHeaderError"),
}
_DIFF_LINES_SHOWN = 12
_WARNING_RULE = "!" * 100


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


def _warn_not_served(target: manifest.Target, exc: sources.PinNotServed) -> None:
    print(_WARNING_RULE, file=sys.stderr)
    print(f"WARNING: {target.name}: NOT CHECKED. {exc}", file=sys.stderr)
    print(_WARNING_RULE, file=sys.stderr)


def run(names: list[str], *, check: bool, offline: bool) -> int:
    targets = manifest.select(names)
    failures = 0
    not_checked: list[str] = []
    not_served: dict[str, sources.PinNotServed] = {}  # per package: ask the archive once
    for target in targets:
        if target.source.key in not_served:
            print(f"WARNING: {target.name}: NOT CHECKED, {target.package} {target.version} as above",
                  file=sys.stderr)
            not_checked.append(target.name)
            continue
        try:
            outputs = generate_target(target, download=not offline)
        except sources.PinNotServed as exc:
            if not check:
                raise
            not_served[target.source.key] = exc
            _warn_not_served(target, exc)
            not_checked.append(target.name)
            continue
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
    if not_checked:
        print(f"WARNING: {len(not_checked)} target(s) not checked, their pinned version is no longer "
              f"served: {', '.join(not_checked)}; run: {sources.repin_command(not_checked)}",
              file=sys.stderr)
    if failures:
        print(f"{failures} generated file(s) differ from the committed ones; run: python -m autogen "
              + " ".join(names))
        return 1
    return 0


# ---------------------------------------------------------------------------------------- repin


def rewrite_pin(text: str, package: sources.Package, version: str) -> str:
    """`text` (the manifest's source) with `package`'s pinned version replaced by `version`."""
    pattern = re.compile(r'(Package\(\s*"' + re.escape(package.name) + r'",\s*")'
                         + re.escape(package.version) + '"')
    matches = pattern.findall(text)
    if len(matches) != 1:
        raise GenerationError(f"{MANIFEST_PATH}: expected one Package(\"{package.name}\", "
                              f"\"{package.version}\", ...), found {len(matches)}; edit the pin by hand")
    return pattern.sub(lambda match: match.group(1) + version + '"', text)


def _full_diff(path: str, before: str | None, after: str) -> str:
    lines = difflib.unified_diff((before or "").splitlines(), after.splitlines(), f"a/{path}",
                                 f"b/{path}", lineterm="")
    return "\n".join(lines)


def repin(names: list[str]) -> int:
    """Pin each named target's package to the served version, regenerate its targets, show the diff."""
    packages: list[sources.Package] = []
    for target in manifest.select(names):
        if target.source not in packages:
            packages.append(target.source)
    manifest_file = REPOSITORY_ROOT / MANIFEST_PATH
    manifest_text = manifest_file.read_text()
    outputs: dict[str, str] = {}
    moved = []
    for package in packages:
        if package.layout == "git":
            raise sources.SourceUnavailable(
                f"{package.name} is pinned to commit {package.version} of {package.repository}, not to "
                f"a Debian package: edit its commit and sha256 in {MANIFEST_PATH}",
                package=package.name, version=package.version)
        served = sources.served_versions(package)
        if not served:
            raise sources.SourceUnavailable(
                f"the archive's {package.suite}/{package.component} has no package {package.name}; "
                f"nothing to pin", package=package.name, version=package.version)
        newest = served[0]
        built = [target for target in manifest.TARGETS if target.source == package]
        print(f"{package.name}: pinned {package.version}, {package.suite}/{package.component} serves "
              f"{', '.join(served)}; regenerating {', '.join(target.name for target in built)}")
        repinned = dataclasses.replace(package, version=newest)
        for target in built:
            outputs.update(generate_target(dataclasses.replace(target, source=repinned)))
        if newest != package.version:
            manifest_text = rewrite_pin(manifest_text, package, newest)
            moved.append(f"{package.name} {package.version} -> {newest}")
    # written only once every target regenerated, so a failure leaves the pins as they were
    if moved:
        before = manifest_file.read_text()
        print(_full_diff(MANIFEST_PATH, before, manifest_text))
        manifest_file.write_text(manifest_text)
    changed = 0
    for relative, text in sorted(outputs.items()):
        path = REPOSITORY_ROOT / relative
        committed = path.read_text() if path.is_file() else None
        if committed == text:
            continue
        changed += 1
        print(_full_diff(relative, committed, text))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    pins = "; ".join(moved) if moved else "pins unchanged (already the served versions)"
    print(f"repinned: {pins}; {changed} generated file(s) rewritten. Review the diff above, run the "
          f"tests, and update the version table in docs/autogen.md.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autogen", description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", metavar="TARGET", help="target names or group prefixes")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--list", action="store_true", help="list the targets and their pinned sources")
    action.add_argument("--check", action="store_true", help="fail if committed output differs")
    action.add_argument("--repin", action="store_true",
                        help="pin the named targets' packages to the served version, regenerate, "
                             "show the diff")
    parser.add_argument("--offline", action="store_true",
                        help="never download; skip targets without sources")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the commands run")
    args = parser.parse_args(argv)
    if args.offline and (args.list or args.repin):
        parser.error("--offline goes with --check or a regeneration, not with --list or --repin")
    if args.repin and not args.targets:
        parser.error("--repin needs a TARGET (a name or group prefix, e.g. linux)")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("autogen.progress").setLevel(logging.INFO)
    try:
        if args.list:
            return _list(manifest.select(args.targets))
        if args.repin:
            return repin(args.targets)
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
