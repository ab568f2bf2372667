"""The OpenCL C compiler wrapper for AMD gfx11: clang-16 and ld.lld-16 behind a content-addressed cache.

`compile_source(source)` returns the bytes of an HSA code object (an ELF shared object) for gfx1100.
Results are cached under `$GPUHAL_CACHE/kernels/<sha256>.co` (default `~/.cache/gpuhal`), where the
hash covers the source, the kernel prelude and any extra headers, the flags and the compiler's
version line, so a new compiler or a changed flag never reuses a stale object. Every compiler run
is bounded in time.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hal.errors import BackendUnavailable, DeviceTimeout, HalError

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


class CompileError(HalError):
    """The compiler rejected a source, or the linker failed; the message carries its diagnostics."""


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
    result = _run([clang, "--version"], "clang-16 --version")
    version = result.stdout.decode(errors="replace").splitlines()[0].strip()
    return Toolchain(clang=clang, lld=lld, version=version)


def cache_dir() -> Path:
    """Where compiled code objects are cached: $GPUHAL_CACHE/kernels, default ~/.cache/gpuhal/kernels."""
    root = os.environ.get("GPUHAL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "gpuhal")
    return Path(root) / "kernels"


def cache_key(source: str, flags: tuple[str, ...], version: str, includes: tuple[Path, ...] = ()) -> str:
    """The sha256 naming a code object: source, prelude, extra headers, flags and compiler version,
    each length-framed."""
    digest = hashlib.sha256()
    headers = tuple(Path(header).read_text() for header in includes)
    parts = (source, PRELUDE.read_text(), *headers, "\0".join(flags), version)
    for part in parts:
        data = part.encode()
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def compile_source(source: str, *, extra_flags: tuple[str, ...] = (), use_cache: bool = True,
                   toolchain: Toolchain | None = None, includes: tuple[Path, ...] = ()) -> bytes:
    """Compile OpenCL C `source` for gfx1100 and link it into an HSA code object; return its bytes.
    `includes` are headers included after the prelude (their text is part of the cache key)."""
    tools = toolchain or find_toolchain()
    flags = COMPILE_FLAGS + tuple(extra_flags) + LINK_FLAGS
    key = cache_key(source, flags, tools.version, tuple(includes))
    cached = cache_dir() / f"{key}.co"
    if use_cache and cached.is_file():
        return cached.read_bytes()
    with tempfile.TemporaryDirectory(prefix="gpuhal-cl-") as work:
        src = Path(work) / "kernel.cl"
        obj = Path(work) / "kernel.o"
        out = Path(work) / "kernel.co"
        src.write_text(source)
        headers = [arg for header in includes for arg in ("-include", str(header))]
        _run([tools.clang, *COMPILE_FLAGS, *extra_flags, "-include", str(PRELUDE), *headers,
              "-c", str(src), "-o", str(obj)], "clang-16 (compile)")
        _run([tools.lld, *LINK_FLAGS, str(obj), "-o", str(out)], "ld.lld-16 (link)")
        blob = out.read_bytes()
    if use_cache:
        _store(cached, blob)
    return blob


def compile_file(path: str | os.PathLike[str], **kwargs: object) -> bytes:
    """Compile the OpenCL C file at `path` (see compile_source)."""
    return compile_source(Path(path).read_text(), **kwargs)  # type: ignore[arg-type]


def _store(path: Path, blob: bytes) -> None:
    """Write a cache entry atomically (a rename), so a concurrent reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(blob)
    os.replace(tmp, path)


def _run(argv: list[str], what: str) -> subprocess.CompletedProcess[bytes]:
    """Run a tool with a time bound; a non-zero exit becomes CompileError with its diagnostics."""
    try:
        result = subprocess.run(argv, capture_output=True, timeout=TOOL_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DeviceTimeout(f"{what} did not finish within {TOOL_TIMEOUT_S:.0f} s") from exc
    except OSError as exc:
        raise BackendUnavailable(f"{what} could not start: {exc} ({INSTALL_HINT})",
                                 errno=exc.errno) from exc
    if result.returncode != 0:
        diagnostics = result.stderr.decode(errors="replace").strip()
        raise CompileError(f"{what} failed (exit {result.returncode}):\n{diagnostics}")
    return result
