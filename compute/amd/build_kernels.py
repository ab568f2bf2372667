"""Rebuild the committed code objects of the kernel library: `python -m compute.amd.build_kernels`.

Each `compute/amd/kernels/<name>.cl` becomes `kernels/prebuilt/<name>.co`, compiled without the
cache, and `prebuilt/manifest.json` records the compiler version, the flags and each file's sha256.
`--check` rebuilds into memory and reports any difference from the committed files (exit status 1).
"""
from __future__ import annotations

from compute.amd import compiler
from compute.kernel_build import PrebuiltLibrary

LIBRARY = PrebuiltLibrary(compiler.PREBUILT_DIR, ".co", "code objects")
MANIFEST = LIBRARY.manifest_path


def build_all() -> tuple[dict[str, bytes], dict[str, object]]:
    """Compile every library source; return {file name: bytes} and the manifest describing them."""
    tools = compiler.find_toolchain()
    objects: dict[str, bytes] = {}
    for source in sorted(compiler.KERNELS_DIR.glob("*.cl")):
        objects[f"{source.stem}.co"] = compiler.compile_file(source, use_cache=False, toolchain=tools)
    manifest = LIBRARY.describe(objects, compiler=tools.version, compile_flags=list(compiler.COMPILE_FLAGS),
                                link_flags=list(compiler.LINK_FLAGS), prelude=compiler.PRELUDE.name)
    return objects, manifest


def differences(objects: dict[str, bytes], manifest: dict[str, object]) -> list[str]:
    """What differs between a fresh build and the committed files (empty when identical)."""
    return LIBRARY.differences(objects, manifest)


def main(argv: list[str] | None = None) -> int:
    return LIBRARY.main("python -m compute.amd.build_kernels", __doc__, build_all, argv)


if __name__ == "__main__":
    raise SystemExit(main())
