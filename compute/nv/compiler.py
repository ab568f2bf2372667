"""The CUDA C compiler wrapper for NVIDIA sm_80/sm_89/sm_90: nvcc behind a content-addressed cache.

`compile_source(source)` returns the bytes of an uncompressed fatbinary holding the SASS cubin of
each target architecture and the PTX of the virtual architectures listed in GENCODE (the PTX is
what the mock GPU executes; real GPUs run the SASS). Results are cached under
`$GPUHAL_CACHE/kernels/<sha256>.fatbin` (default `~/.cache/gpuhal`), where the hash covers the
source, the flags and nvcc's version lines, so a new toolkit or a changed flag never reuses a
stale binary. Every compiler run is bounded in time.
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

NVCC = "nvcc"
# Where the CUDA toolkit installs nvcc when it is not on PATH.
NVCC_FALLBACKS = ("/usr/local/cuda/bin/nvcc",)
INSTALL_HINT = "install the CUDA toolkit (nvcc 12.8 or newer) and put its bin/ on PATH"
# SASS for Ampere (sm_80), Ada (sm_89) and Hopper (sm_90); PTX for compute_80 (runs on all three
# through the driver's JIT) and compute_90. nvcc's -gencode syntax: `nvcc --help`, --generate-code.
GENCODE: tuple[str, ...] = (
    "-gencode", "arch=compute_80,code=[sm_80,compute_80]",
    "-gencode", "arch=compute_89,code=sm_89",
    "-gencode", "arch=compute_90,code=[sm_90,compute_90]",
)
# --no-compress: nvcc compresses PTX in fatbinaries by default (`nvcc --help`, --no-compress);
# drivers.nv.fatbin reads only uncompressed entries. The output was found byte-identical across
# build directories and source file names, so no path or time stamp needs masking.
COMPILE_FLAGS: tuple[str, ...] = ("-fatbin", "-O3", "--no-compress", *GENCODE)
# One compile of a library kernel takes about a second; this bounds a wedged tool.
TOOL_TIMEOUT_S = 120.0



@dataclass(frozen=True)
class Toolchain:
    """The path of nvcc and its version lines (part of every cache key and of the manifest)."""

    nvcc: str
    version: str


def find_nvcc() -> str | None:
    """The nvcc to use: the one on PATH, else the toolkit's default location; None when absent."""
    found = shutil.which(NVCC)
    if found is not None:
        return found
    for candidate in NVCC_FALLBACKS:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def find_toolchain() -> Toolchain:
    """Locate nvcc and read its version, or raise BackendUnavailable saying what to install."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise BackendUnavailable(f"nvcc not found on PATH nor in {', '.join(NVCC_FALLBACKS)}: the "
                                 f"NVIDIA kernel compiler needs it ({INSTALL_HINT}); the prebuilt "
                                 f"fatbinaries in {PREBUILT_DIR} need no compiler")
    result = _run_tool([nvcc, "--version"], "nvcc --version")
    lines = result.stdout.decode(errors="replace").strip().splitlines()
    # The last two lines name the release and the build ("Cuda compilation tools, release 13.0,
    # V13.0.88" / "Build cuda_13.0.r13.0/compiler.36424714_0"); the lines above carry a build date.
    version = " / ".join(line.strip() for line in lines[-2:])
    return Toolchain(nvcc=nvcc, version=version)


def cache_key(source: str, flags: tuple[str, ...], version: str) -> str:
    """The sha256 naming a fatbinary: source, flags and nvcc version, each length-framed."""
    return content_key(("nvcc", source, "\0".join(flags), version))


def compile_source(source: str, *, extra_flags: tuple[str, ...] = (), use_cache: bool = True,
                   toolchain: Toolchain | None = None) -> bytes:
    """Compile CUDA C `source` into a fatbinary (SASS per GENCODE target plus PTX); return its bytes."""
    tools = toolchain or find_toolchain()
    flags = COMPILE_FLAGS + tuple(extra_flags)
    key = cache_key(source, flags, tools.version)
    def build(work: Path) -> Path:
        src, out = work / "kernel.cu", work / "kernel.fatbin"
        src.write_text(source)
        _run_tool([tools.nvcc, *flags, "-o", str(out), str(src)], "nvcc (compile)", cwd=str(work))
        return out

    return cached_build(f"{key}.fatbin", use_cache, build)

def compile_file(path: str | os.PathLike[str], **kwargs: object) -> bytes:
    """Compile the CUDA C file at `path` (see compile_source)."""
    return compile_source(Path(path).read_text(), **kwargs)  # type: ignore[arg-type]


def _run_tool(argv: list[str], what: str, cwd: str | None = None):
    """A compiler tool run bounded by TOOL_TIMEOUT_S (compute.kernel_build.run_tool)."""
    return run_tool(argv, what, timeout_s=TOOL_TIMEOUT_S, install_hint=INSTALL_HINT, cwd=cwd)
