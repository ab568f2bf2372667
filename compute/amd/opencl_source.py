"""OpenCL C from other compilers (tinygrad's OpenCL renderer) built for gfx1100 by compute.amd.compiler.

Such source is written for a full OpenCL implementation: it uses the vector types, the math
builtins and the as_<type>() casts of the OpenCL headers, which our builds (`-cl-no-stdinc
-nogpulib`) do not have. `compile_opencl(source)` includes `kernels/tinygrad_shims.h` after the
work-item prelude, so the code object keeps no external symbols. `kernel_names(source)` lists
the `__kernel` functions it defines, in order, and `work_items(groups, local)` turns a launch
given as work-groups per axis (tinygrad's ProgramInfo.global_size, which its OpenCL runtime
multiplies by the local size before clEnqueueNDRangeKernel) into the work-item counts
`compute.program.Program` takes.
"""
from __future__ import annotations

import re
from typing import Sequence

from compute.amd import compiler

SHIMS = compiler.KERNELS_DIR / "tinygrad_shims.h"
# a kernel definition: "__kernel void name(" or "kernel void name(" (OpenCL C 2.0 section 6.7.1)
_KERNEL = re.compile(r"\b(?:__)?kernel\s+void\s+([A-Za-z_][A-Za-z0-9_]*)\s*\(")


def compile_opencl(source: str, **kwargs) -> bytes:
    """Compile OpenCL C written for a full OpenCL implementation; the code object's bytes.
    Keyword arguments go to compiler.compile_source (extra_flags, use_cache, toolchain)."""
    return compiler.compile_source(source, includes=(SHIMS,), **kwargs)


def kernel_names(source: str) -> list[str]:
    """The names of the kernels `source` defines, in the order they appear."""
    return _KERNEL.findall(source)


def work_items(groups: Sequence[int], local: Sequence[int]) -> tuple[int, ...]:
    """Work-items per axis for a launch of `groups` work-groups of `local` work-items."""
    if len(groups) != len(local):
        raise ValueError(f"{len(groups)} work-group counts for {len(local)} local sizes")
    return tuple(int(g) * int(size) for g, size in zip(groups, local))
