"""Rebuild the committed fatbinaries of the CUDA kernel library: `python -m compute.nv.build_kernels`.

Each `compute/nv/kernels/<name>.cu` becomes `kernels/prebuilt/<name>.fatbin`, compiled without the
cache, and `prebuilt/manifest.json` records nvcc's version, the flags and each file's sha256.
`--check` rebuilds into memory and reports any difference from the committed files (exit status 1).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from compute.nv import compiler

MANIFEST = compiler.PREBUILT_DIR / "manifest.json"


def build_all() -> tuple[dict[str, bytes], dict[str, object]]:
    """Compile every library source; return {file name: bytes} and the manifest describing them."""
    tools = compiler.find_toolchain()
    sources = sorted(compiler.KERNELS_DIR.glob("*.cu"))
    # nvcc runs its five targets one after another: compile the sources side by side instead.
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        blobs = list(pool.map(lambda source: compiler.compile_file(source, use_cache=False,
                                                                   toolchain=tools), sources))
    objects = {f"{source.stem}.fatbin": blob for source, blob in zip(sources, blobs)}
    manifest: dict[str, object] = {
        "compiler": tools.version,
        "compile_flags": list(compiler.COMPILE_FLAGS),
        "objects": {name: hashlib.sha256(blob).hexdigest() for name, blob in objects.items()},
    }
    return objects, manifest


def manifest_text(manifest: dict[str, object]) -> str:
    """The manifest as committed: sorted keys, two-space indent, trailing newline."""
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def differences(objects: dict[str, bytes], manifest: dict[str, object]) -> list[str]:
    """What differs between a fresh build and the committed files (empty when identical)."""
    problems = []
    for name, blob in objects.items():
        path = compiler.PREBUILT_DIR / name
        if not path.is_file():
            problems.append(f"{name}: not committed")
        elif path.read_bytes() != blob:
            problems.append(f"{name}: committed bytes differ from a fresh build")
    committed = {path.name for path in compiler.PREBUILT_DIR.glob("*.fatbin")}
    problems.extend(f"{name}: committed but has no source" for name in sorted(committed - set(objects)))
    if not MANIFEST.is_file() or MANIFEST.read_text() != manifest_text(manifest):
        problems.append("manifest.json: differs from a fresh build (nvcc version or flags changed?)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compute.nv.build_kernels", description=__doc__)
    parser.add_argument("--check", action="store_true",
                        help="compare a fresh build with the committed files instead of writing them")
    args = parser.parse_args(argv)
    objects, manifest = build_all()
    if args.check:
        problems = differences(objects, manifest)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    compiler.PREBUILT_DIR.mkdir(parents=True, exist_ok=True)
    for name, blob in objects.items():
        (compiler.PREBUILT_DIR / name).write_bytes(blob)
    MANIFEST.write_text(manifest_text(manifest))
    print(f"wrote {len(objects)} fatbinaries and manifest.json to {compiler.PREBUILT_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
