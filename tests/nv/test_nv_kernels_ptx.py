"""Every kernel of the CUDA library run through the mock's PTX interpreter against numpy.

The PTX comes from the committed fatbinaries (compute/nv/kernels/prebuilt), as the mock GPU will
take it; sizes are random and not multiples of the block. The interpreter's parameter layout must
equal the cubins' EIATTR_KPARAM_INFO for every kernel and architecture.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from compute.nv import compiler
from drivers.nv import cubin, fatbin
from mockgpu.nv.ptx import FlatMemory, Kernel
from nv_reference import private_array_reference

BASE = 0x7000_0000
MEMORY_SIZE = 1 << 21
BUFFER = 0x40000


def _ptx(name: str, arch: int = 90) -> str:
    return fatbin.load_file(compiler.PREBUILT_DIR / f"{name}.fatbin").ptx(arch)


class _Buffers:
    """Global memory carved into BUFFER-sized slots; slot i is at BASE + i * BUFFER."""

    def __init__(self) -> None:
        self.memory = FlatMemory(BASE, MEMORY_SIZE)

    def put(self, slot: int, array: np.ndarray) -> int:
        self.memory.write(BASE + slot * BUFFER, np.ascontiguousarray(array).tobytes())
        return BASE + slot * BUFFER

    def get(self, slot: int, count: int, dtype: type) -> np.ndarray:
        size = count * np.dtype(dtype).itemsize
        return np.frombuffer(self.memory.read(BASE + slot * BUFFER, size), dtype=dtype)


@pytest.fixture(params=[80, 90], ids=["compute_80", "compute_90"])
def arch(request: pytest.FixtureRequest) -> int:
    return request.param


def _blocks(n: int, block: int) -> int:
    return (n + block - 1) // block


def test_vector_add(arch: int) -> None:
    rng = np.random.default_rng(11)
    for name, dtype in (("vector_add_f32", np.float32), ("vector_add_i32", np.int32)):
        n = int(rng.integers(300, 3000))
        if dtype is np.float32:
            a = rng.standard_normal(n).astype(dtype)
            b = rng.standard_normal(n).astype(dtype)
        else:
            a = rng.integers(-2**31, 2**31, n, dtype=dtype)
            b = rng.integers(-2**31, 2**31, n, dtype=dtype)
        buffers = _Buffers()
        guard = np.full(8, 0x5A5A5A5A, dtype=np.uint32)
        buffers.memory.write(BASE + 2 * BUFFER + 4 * n, guard.tobytes())
        kernel = Kernel.from_ptx(_ptx("vector_add", arch), name)
        params = kernel.pack_params(buffers.put(0, a), buffers.put(1, b), BASE + 2 * BUFFER, n)
        kernel.run((_blocks(n, 128),), (128,), params, buffers.memory)
        np.testing.assert_array_equal(buffers.get(2, n, dtype), a + b)
        after = np.frombuffer(buffers.memory.read(BASE + 2 * BUFFER + 4 * n, 32), dtype=np.uint32)
        np.testing.assert_array_equal(after, guard)


def test_saxpy(arch: int) -> None:
    rng = np.random.default_rng(12)
    n = int(rng.integers(300, 3000))
    x = rng.standard_normal(n).astype(np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    alpha = np.float32(rng.standard_normal())
    buffers = _Buffers()
    kernel = Kernel.from_ptx(_ptx("saxpy", arch), "saxpy")
    params = kernel.pack_params(float(alpha), buffers.put(0, x), buffers.put(1, y), n)
    kernel.run((_blocks(n, 256),), (256,), params, buffers.memory)
    expected = (alpha.astype(np.float64) * x + y).astype(np.float32)
    np.testing.assert_allclose(buffers.get(1, n, np.float32), expected, rtol=1e-6, atol=1e-6)


def test_memset_and_copy(arch: int) -> None:
    rng = np.random.default_rng(13)
    n = int(rng.integers(300, 3000))
    buffers = _Buffers()
    source = rng.integers(0, 2**32, n + 16, dtype=np.uint32)
    buffers.put(0, source)
    memset = Kernel.from_ptx(_ptx("memory", arch), "memset_u32")
    memset.run((_blocks(n, 64),), (64,), memset.pack_params(BASE + BUFFER, 0xDEADBEEF, n),
               buffers.memory)
    filled = buffers.get(1, n + 4, np.uint32)
    assert (filled[:n] == 0xDEADBEEF).all() and (filled[n:] == 0).all()
    memset_f32 = Kernel.from_ptx(_ptx("memory", arch), "memset_f32")
    memset_f32.run((_blocks(n, 64),), (64,), memset_f32.pack_params(BASE + 2 * BUFFER, -1.5, n),
                   buffers.memory)
    assert (buffers.get(2, n, np.float32) == np.float32(-1.5)).all()
    copy = Kernel.from_ptx(_ptx("memory", arch), "copy_u32")
    copy.run((_blocks(n, 96),), (96,), copy.pack_params(BASE, BASE + 3 * BUFFER, n), buffers.memory)
    np.testing.assert_array_equal(buffers.get(3, n, np.uint32), source[:n])
    assert (buffers.get(3, n + 16, np.uint32)[n:] == 0).all()


def test_reduce(arch: int) -> None:
    rng = np.random.default_rng(14)
    n = int(rng.integers(700, 3000))
    blocks = _blocks(n, 256)
    buffers = _Buffers()
    values_f = rng.standard_normal(n).astype(np.float32)
    kernel = Kernel.from_ptx(_ptx("reduce", arch), "reduce_sum_f32")
    kernel.run((blocks,), (256,), kernel.pack_params(buffers.put(0, values_f), BASE + BUFFER, n),
               buffers.memory)
    partial = buffers.get(1, blocks, np.float32)
    expected = [values_f[i * 256:(i + 1) * 256].astype(np.float64).sum() for i in range(blocks)]
    np.testing.assert_allclose(partial, expected, rtol=1e-4, atol=1e-4)
    values_i = rng.integers(-2**20, 2**20, n, dtype=np.int32)
    kernel = Kernel.from_ptx(_ptx("reduce", arch), "reduce_sum_i32")
    kernel.run((blocks,), (256,), kernel.pack_params(buffers.put(0, values_i), BASE + BUFFER, n),
               buffers.memory)
    expected_i = [values_i[i * 256:(i + 1) * 256].sum() for i in range(blocks)]
    np.testing.assert_array_equal(buffers.get(1, blocks, np.int32), expected_i)


def test_matmul(arch: int) -> None:
    rng = np.random.default_rng(15)
    m, n, k = (int(v) for v in rng.integers(17, 50, 3))
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    buffers = _Buffers()
    kernel = Kernel.from_ptx(_ptx("matmul", arch), "matmul_f32")
    params = kernel.pack_params(buffers.put(0, a), buffers.put(1, b), BASE + 2 * BUFFER, m, n, k)
    kernel.run((_blocks(n, 16), _blocks(m, 16)), (16, 16), params, buffers.memory)
    result = buffers.get(2, m * n, np.float32).reshape(m, n)
    np.testing.assert_allclose(result, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)


def test_private_array(arch: int) -> None:
    rng = np.random.default_rng(16)
    n = int(rng.integers(200, 600))
    values = rng.integers(0, 2**32, n, dtype=np.uint32)
    buffers = _Buffers()
    kernel = Kernel.from_ptx(_ptx("private_array", arch), "private_array")
    assert kernel.local_size >= 256
    kernel.run((_blocks(n, 128),), (128,), kernel.pack_params(buffers.put(0, values), BASE + BUFFER, n),
               buffers.memory)
    np.testing.assert_array_equal(buffers.get(1, n, np.uint32), private_array_reference(values))


def test_histogram(arch: int) -> None:
    rng = np.random.default_rng(17)
    n = int(rng.integers(500, 3000))
    values = rng.integers(0, 2**32, n, dtype=np.uint32)
    buffers = _Buffers()
    kernel = Kernel.from_ptx(_ptx("histogram", arch), "histogram_u32")
    kernel.run((3,), (96,), kernel.pack_params(buffers.put(0, values), BASE + BUFFER, n),
               buffers.memory)
    np.testing.assert_array_equal(buffers.get(1, 64, np.uint32),
                                  np.bincount(values % 64, minlength=64))


def test_every_library_kernel_is_tested() -> None:
    names = set()
    for source in compiler.KERNELS_DIR.glob("*.cu"):
        for header in re.findall(r"__global__(.*?)\{", source.read_text(), re.DOTALL):
            calls = [n for n in re.findall(r"(\w+)\s*\(", header) if n != "__launch_bounds__"]
            names.add(calls[0])
    tested = {"vector_add_f32", "vector_add_i32", "saxpy", "memset_u32", "memset_f32", "copy_u32",
              "reduce_sum_f32", "reduce_sum_i32", "matmul_f32", "private_array", "histogram_u32"}
    assert names == tested


def test_param_layout_matches_cubin() -> None:
    for path in sorted(compiler.PREBUILT_DIR.glob("*.fatbin")):
        binary = fatbin.load_file(path)
        for arch in binary.sass_archs:
            image = cubin.parse(binary.cubin(arch))
            ptx = binary.ptx(arch)
            for name, kernel in image.kernels.items():
                interpreted = Kernel.from_ptx(ptx, name)
                assert [(p.offset, p.size) for p in kernel.params] == \
                    [(s.offset, s.size) for s in interpreted.params], (path.name, arch, name)
                assert kernel.param_size == interpreted.param_size
