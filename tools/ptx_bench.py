"""The `ptx` benchmark (`python -m tools.bench ptx`): the mock NVIDIA GPU's PTX interpreter's speed.

Runs the PTX of the library's vector_add_f32 and matmul_f32 (compute/nv/kernels/prebuilt) through
`mockgpu.nv.ptx.Kernel.run` on a flat global memory and reports thread-instructions per second
(instructions executed, summed over the threads at them) and the wall time of the
vector add. Results are checked against numpy, so a fast wrong interpreter cannot report a figure.
Figures only, nothing is asserted. It lives in tools/ because it needs both the mock and the
driver's fatbinary parser, and mockgpu may import only hal and autogen.
"""
from __future__ import annotations

import time

import numpy as np

from compute.nv import compiler
from drivers.nv import fatbin
from mockgpu.nv.ptx import FlatMemory, Kernel

NAME = "ptx"
VECTOR_ADD_N = 1 << 18
MATMUL_SIZE = 64
BLOCK = 256
TILE = 16  # matmul.cu's TILE: the block is TILE x TILE threads
BASE = 0x1000_0000
ARCH = 90


def _kernel(library: str, name: str) -> Kernel:
    binary = fatbin.load_file(compiler.PREBUILT_DIR / f"{library}.fatbin")
    return Kernel.from_ptx(binary.ptx(ARCH), name)


def _vector_add(n: int) -> tuple[float, int]:
    rng = np.random.default_rng(1)
    a = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    size = 4 * n
    memory = FlatMemory(BASE, 3 * size)
    memory.write(BASE, a.tobytes())
    memory.write(BASE + size, b.tobytes())
    kernel = _kernel("vector_add", "vector_add_f32")
    params = kernel.pack_params(BASE, BASE + size, BASE + 2 * size, n)
    start = time.perf_counter()
    kernel.run((-(-n // BLOCK),), (BLOCK,), params, memory)
    seconds = time.perf_counter() - start
    result = np.frombuffer(memory.read(BASE + 2 * size, size), dtype=np.float32)
    if not np.array_equal(result, a + b):
        raise AssertionError("vector_add_f32 through the PTX interpreter disagrees with numpy")
    return seconds, kernel.thread_instructions


def _matmul(size: int) -> tuple[float, int]:
    rng = np.random.default_rng(2)
    a = rng.standard_normal((size, size)).astype(np.float32)
    b = rng.standard_normal((size, size)).astype(np.float32)
    nbytes = 4 * size * size
    memory = FlatMemory(BASE, 3 * nbytes)
    memory.write(BASE, a.tobytes())
    memory.write(BASE + nbytes, b.tobytes())
    kernel = _kernel("matmul", "matmul_f32")
    params = kernel.pack_params(BASE, BASE + nbytes, BASE + 2 * nbytes, size, size, size)
    groups = -(-size // TILE)
    start = time.perf_counter()
    kernel.run((groups, groups), (TILE, TILE), params, memory)
    seconds = time.perf_counter() - start
    result = np.frombuffer(memory.read(BASE + 2 * nbytes, nbytes), dtype=np.float32)
    if not np.allclose(result.reshape(size, size), a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4):
        raise AssertionError("matmul_f32 through the PTX interpreter disagrees with numpy")
    return seconds, kernel.thread_instructions


def run(vector_add_n: int = VECTOR_ADD_N, matmul_size: int = MATMUL_SIZE) -> dict[str, float]:
    add_seconds, add_instructions = _vector_add(vector_add_n)
    mat_seconds, mat_instructions = _matmul(matmul_size)
    return {
        "vector_add_elements": vector_add_n,
        "vector_add_s": add_seconds,
        "vector_add_thread_instructions_per_s": add_instructions / add_seconds,
        "matmul_size": matmul_size,
        "matmul_thread_instructions_per_s": mat_instructions / mat_seconds,
    }
