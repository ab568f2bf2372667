"""Rebuild the committed fatbinaries of the CUDA kernel library: `python -m compute.nv.build_kernels`.

Each `compute/nv/kernels/<name>.cu` becomes `kernels/prebuilt/<name>.fatbin`, compiled without the
cache, and `prebuilt/manifest.json` records nvcc's version, the flags and each file's sha256.
`--check` rebuilds into memory and reports any difference from the committed files (exit status 1).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from compute.kernel_build import PrebuiltLibrary
from compute.nv import compiler

LIBRARY = PrebuiltLibrary(compiler.PREBUILT_DIR, ".fatbin", "fatbinaries")
MANIFEST = LIBRARY.manifest_path


def build_all() -> tuple[dict[str, bytes], dict[str, object]]:
    """Compile every library source; return {file name: bytes} and the manifest describing them."""
    tools = compiler.find_toolchain()
    sources = sorted(compiler.KERNELS_DIR.glob("*.cu"))
    # nvcc runs its five targets one after another: compile the sources side by side instead.
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        blobs = list(pool.map(lambda source: compiler.compile_file(source, use_cache=False,
                                                                   toolchain=tools), sources))
    objects = {f"{source.stem}.fatbin": blob for source, blob in zip(sources, blobs)}
    manifest = LIBRARY.describe(objects, compiler=tools.version, compile_flags=list(compiler.COMPILE_FLAGS))
    return objects, manifest


def differences(objects: dict[str, bytes], manifest: dict[str, object]) -> list[str]:
    """What differs between a fresh build and the committed files (empty when identical)."""
    return LIBRARY.differences(objects, manifest)


def main(argv: list[str] | None = None) -> int:
    return LIBRARY.main("python -m compute.nv.build_kernels", __doc__, build_all, argv)


if __name__ == "__main__":
    raise SystemExit(main())
