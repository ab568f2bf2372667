"""The OpenCL C compiler wrapper for AMD gfx11: clang-16 and ld.lld-16 behind a content-addressed cache.

`compile_source(source)` returns the bytes of an HSA code object (an ELF shared object) for gfx1100.
Results are cached under `$GPUHAL_CACHE/kernels/<sha256>.co` (default `~/.cache/gpuhal`), where the
hash covers the source, the kernel prelude and any extra headers, the flags and the compiler's
version line, so a new compiler or a changed flag never reuses a stale object. Every compiler run
is bounded in time.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from compute.kernel_build import CompileError, cache_dir, cached_build, content_key, run_tool
from hal.errors import BackendUnavailable

__all__ = ["CompileError", "Toolchain", "cache_dir", "cache_key", "compile_file", "compile_source",
           "find_toolchain"]

KERNELS_DIR = Path(__file__).resolve().parent / "kernels"
PREBUILT_DIR = KERNELS_DIR / "prebuilt"
# Work-item functions and barrier for builds without a device library; included before each source.
PRELUDE = KERNELS_DIR / "workitem.h"

CLANG = "clang-16"
LLD = "ld.lld-16"
INSTALL_HINT = "apt-get install clang-16 lld-16 llvm-16"
TARGET_MCPU = "gfx1100"
# Code object v4: the ABI the loader in compute.amd.codeobject reads (metadata note amdhsa.version 1.1).
CODE_OBJECT_VERSION = 4
COMPILE_FLAGS: tuple[str, ...] = (
    "-x", "cl", "-cl-std=CL2.0", "-cl-no-stdinc",
    "-target", "amdgcn-amd-amdhsa", f"-mcpu={TARGET_MCPU}",
    f"-mcode-object-version={CODE_OBJECT_VERSION}", "-nogpulib", "-O3", "-cl-kernel-arg-info",
)
LINK_FLAGS: tuple[str, ...] = ("-shared", "--build-id=none")
# One compile or link of a library kernel takes well under a second; this bounds a wedged tool.
TOOL_TIMEOUT_S = 120.0



@dataclass(frozen=True)
class Toolchain:
    """Paths of the compiler and linker and the compiler's version line (part of every cache key)."""

    clang: str
    lld: str
    version: str


def find_toolchain() -> Toolchain:
    """Locate clang-16 and ld.lld-16, or raise BackendUnavailable naming the packages to install."""
    clang = shutil.which(CLANG)
    lld = shutil.which(LLD)
    if clang is None or lld is None:
        missing = [name for name, path in ((CLANG, clang), (LLD, lld)) if path is None]
        raise BackendUnavailable(f"{', '.join(missing)} not found on PATH: the AMD kernel compiler "
                                 f"needs them ({INSTALL_HINT}); the prebuilt code objects in "
                                 f"{PREBUILT_DIR} need no compiler")
    result = _run_tool([clang, "--version"], "clang-16 --version")
    version = result.stdout.decode(errors="replace").splitlines()[0].strip()
    return Toolchain(clang=clang, lld=lld, version=version)


def cache_key(source: str, flags: tuple[str, ...], version: str, includes: tuple[Path, ...] = ()) -> str:
    """The sha256 naming a code object: source, prelude, extra headers, flags and compiler version,
    each length-framed."""
    headers = tuple(Path(header).read_text() for header in includes)
    return content_key((source, PRELUDE.read_text(), *headers, "\0".join(flags), version))


def compile_source(source: str, *, extra_flags: tuple[str, ...] = (), use_cache: bool = True,
                   toolchain: Toolchain | None = None, includes: tuple[Path, ...] = ()) -> bytes:
    """Compile OpenCL C `source` for gfx1100 and link it into an HSA code object; return its bytes.
    `includes` are headers included after the prelude (their text is part of the cache key)."""
    tools = toolchain or find_toolchain()
    flags = COMPILE_FLAGS + tuple(extra_flags) + LINK_FLAGS
    key = cache_key(source, flags, tools.version, tuple(includes))
    def build(work: Path) -> Path:
        src, obj, out = work / "kernel.cl", work / "kernel.o", work / "kernel.co"
        src.write_text(source)
        headers = [arg for header in includes for arg in ("-include", str(header))]
        _run_tool([tools.clang, *COMPILE_FLAGS, *extra_flags, "-include", str(PRELUDE), *headers,
                   "-c", str(src), "-o", str(obj)], "clang-16 (compile)")
        _run_tool([tools.lld, *LINK_FLAGS, str(obj), "-o", str(out)], "ld.lld-16 (link)")
        return out

    return cached_build(f"{key}.co", use_cache, build)

def compile_file(path: str | os.PathLike[str], **kwargs: object) -> bytes:
    """Compile the OpenCL C file at `path` (see compile_source)."""
    return compile_source(Path(path).read_text(), **kwargs)  # type: ignore[arg-type]


def _run_tool(argv: list[str], what: str, cwd: str | None = None):
    """A compiler tool run bounded by TOOL_TIMEOUT_S (compute.kernel_build.run_tool)."""
    return run_tool(argv, what, timeout_s=TOOL_TIMEOUT_S, install_hint=INSTALL_HINT, cwd=cwd)
