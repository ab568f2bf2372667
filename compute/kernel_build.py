"""Build plumbing the vendor kernel compilers share: bounded tool runs, the content-addressed cache
of compiled binaries, and the check/write of a committed prebuilt library and its manifest.

A vendor module (compute.amd.compiler, compute.nv.compiler) owns its flags and toolchain; this
module owns what is the same for all of them: where the cache lives ($GPUHAL_CACHE/kernels, default
~/.cache/gpuhal/kernels), how an entry is named (sha256 over length-framed parts) and written (an
atomic rename), how a tool run becomes a typed error, and `python -m compute.<vendor>.build_kernels`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from hal.errors import BackendUnavailable, DeviceTimeout, HalError


class CompileError(HalError):
    """A compiler rejected a source, or a linker failed; the message carries its diagnostics."""


def cache_dir() -> Path:
    """Where compiled kernels are cached: $GPUHAL_CACHE/kernels, default ~/.cache/gpuhal/kernels."""
    root = os.environ.get("GPUHAL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "gpuhal")
    return Path(root) / "kernels"


def content_key(parts: Iterable[str]) -> str:
    """The sha256 of `parts`, each length-framed so that no two different lists collide."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode()
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def store(path: Path, blob: bytes) -> None:
    """Write a cache entry atomically (a rename), so a concurrent reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(blob)
    os.replace(tmp, path)


def cached_build(name: str, use_cache: bool, build: Callable[[Path], Path]) -> bytes:
    """The binary cached as `cache_dir()/name`, else `build(work_dir)`'s output file (built in a
    temporary directory, then stored when `use_cache`)."""
    cached = cache_dir() / name
    if use_cache and cached.is_file():
        return cached.read_bytes()
    with tempfile.TemporaryDirectory(prefix="gpuhal-kernel-") as work:
        blob = build(Path(work)).read_bytes()
    if use_cache:
        store(cached, blob)
    return blob


def run_tool(argv: list[str], what: str, *, timeout_s: float, install_hint: str,
             cwd: str | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a compiler tool within `timeout_s`: a tool that cannot start is BackendUnavailable (with
    `install_hint`), one that overruns is DeviceTimeout, a non-zero exit is CompileError carrying
    its diagnostics."""
    try:
        result = subprocess.run(argv, capture_output=True, timeout=timeout_s, check=False, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        raise DeviceTimeout(f"{what} did not finish within {timeout_s:.0f} s") from exc
    except OSError as exc:
        raise BackendUnavailable(f"{what} could not start: {exc} ({install_hint})",
                                 errno=exc.errno) from exc
    if result.returncode != 0:
        diagnostics = (result.stderr or result.stdout).decode(errors="replace").strip()
        raise CompileError(f"{what} failed (exit {result.returncode}):\n{diagnostics}")
    return result


class PrebuiltLibrary:
    """The committed binaries of a kernel library: `prebuilt_dir/<name><suffix>` and a manifest.json
    that records the toolchain, the flags and each file's sha256 (what `build_all` returns)."""

    def __init__(self, prebuilt_dir: Path, suffix: str, noun: str) -> None:
        self.prebuilt_dir = prebuilt_dir
        self.suffix = suffix
        self.noun = noun
        self.manifest_path = prebuilt_dir / "manifest.json"

    @staticmethod
    def manifest_text(manifest: dict[str, object]) -> str:
        """The manifest as committed: sorted keys, two-space indent, trailing newline."""
        return json.dumps(manifest, indent=2, sort_keys=True) + "\n"

    @staticmethod
    def describe(objects: dict[str, bytes], **fields: object) -> dict[str, object]:
        """A manifest: `fields` (toolchain version, flags...) and the sha256 of each object."""
        digests = {name: hashlib.sha256(blob).hexdigest() for name, blob in objects.items()}
        return {**fields, "objects": digests}

    def differences(self, objects: dict[str, bytes], manifest: dict[str, object]) -> list[str]:
        """What differs between a fresh build and the committed files (empty when identical)."""
        problems = []
        for name, blob in objects.items():
            path = self.prebuilt_dir / name
            if not path.is_file():
                problems.append(f"{name}: not committed")
            elif path.read_bytes() != blob:
                problems.append(f"{name}: committed bytes differ from a fresh build")
        committed = {path.name for path in self.prebuilt_dir.glob(f"*{self.suffix}")}
        problems.extend(f"{name}: committed but has no source" for name in sorted(committed - set(objects)))
        committed_manifest = self.manifest_path.read_text() if self.manifest_path.is_file() else None
        if committed_manifest != self.manifest_text(manifest):
            problems.append("manifest.json: differs from a fresh build (compiler version or flags changed?)")
        return problems

    def main(self, prog: str, description: str | None,
             build_all: Callable[[], tuple[dict[str, bytes], dict[str, object]]],
             argv: list[str] | None = None) -> int:
        """The build_kernels command line: write the fresh build, or with --check compare it."""
        parser = argparse.ArgumentParser(prog=prog, description=description)
        parser.add_argument("--check", action="store_true",
                            help="compare a fresh build with the committed files instead of writing them")
        args = parser.parse_args(argv)
        objects, manifest = build_all()
        if args.check:
            problems = self.differences(objects, manifest)
            for problem in problems:
                print(problem, file=sys.stderr)
            return 1 if problems else 0
        self.prebuilt_dir.mkdir(parents=True, exist_ok=True)
        for name, blob in objects.items():
            (self.prebuilt_dir / name).write_bytes(blob)
        self.manifest_path.write_text(self.manifest_text(manifest))
        print(f"wrote {len(objects)} {self.noun} and manifest.json to {self.prebuilt_dir}")
        return 0
