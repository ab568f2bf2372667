"""Every kernel of the library (compute/amd/kernels/prebuilt) through Device("mock:0") and the mock's
RDNA3 interpreter, on a fixed set of random sizes including sizes off the work-group, against numpy."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

from compute.device import Device

PREBUILT = pathlib.Path(__file__).resolve().parents[2] / "compute" / "amd" / "kernels" / "prebuilt"
LOCAL = 256  # the work-group size the elementwise kernels are launched with here
REDUCE_WG = 256  # compute/amd/kernels/reduce.cl REDUCE_WG (its reqd_work_group_size)
TILE = 16  # compute/amd/kernels/matmul.cl TILE (its reqd_work_group_size is TILE x TILE)
SIZES = [1, 255, 256, 257, 1000, 3001]


@pytest.fixture(scope="module")
def dev():
    from compute import device as compute_device
    from tools import mock_machines
    compute_device.register_mock_factory(mock_machines.navi31)
    device = Device("mock:0", timeout_s=10)
    yield device
    device.close()


def upload(dev, array: np.ndarray):
    buffer = dev.allocate(max(array.nbytes, 4))
    buffer.copyin(array.tobytes())
    return buffer


def download(buffer, dtype, count: int) -> np.ndarray:
    return np.frombuffer(buffer.copyout(count * np.dtype(dtype).itemsize), dtype=dtype)


def random_array(rng, dtype, n: int) -> np.ndarray:
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(n).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, n, dtype=np.int64).astype(dtype)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name, dtype", [("vector_add_f32", np.float32), ("vector_add_i32", np.int32)])
def test_vector_add(dev, name, dtype, n):
    rng = np.random.default_rng(n)
    x = random_array(rng, dtype, n)
    y = random_array(rng, dtype, n)
    out = dev.allocate(4 * n)
    dev.load(PREBUILT / "vector_add.co", name)(upload(dev, x), upload(dev, y), out, n,
                                               global_size=n, local_size=LOCAL, wait=True)
    with np.errstate(over="ignore"):
        want = x + y
    np.testing.assert_array_equal(download(out, dtype, n), want)


@pytest.mark.parametrize("n", SIZES)
def test_saxpy(dev, n):
    rng = np.random.default_rng(100 + n)
    alpha = float(np.float32(rng.standard_normal()))
    x = random_array(rng, np.float32, n)
    y = random_array(rng, np.float32, n)
    y_buffer = upload(dev, y)
    dev.load(PREBUILT / "saxpy.co", "saxpy")(alpha, upload(dev, x), y_buffer, n, global_size=n,
                                             local_size=LOCAL, wait=True)
    np.testing.assert_allclose(download(y_buffer, np.float32, n), np.float32(alpha) * x + y,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name, dtype", [("reduce_sum_i32", np.int32), ("reduce_sum_f32", np.float32)])
def test_reduce_sum_per_work_group(dev, name, dtype, n):
    rng = np.random.default_rng(200 + n)
    if dtype is np.int32:
        data = rng.integers(-1000, 1000, n, dtype=np.int32)
    else:
        data = rng.standard_normal(n).astype(np.float32)
    groups = -(-n // REDUCE_WG)
    partial = dev.allocate(4 * groups)
    dev.load(PREBUILT / "reduce.co", name)(upload(dev, data), partial, n,
                                           global_size=groups * REDUCE_WG, local_size=REDUCE_WG,
                                           wait=True)
    got = download(partial, dtype, groups)
    want = np.array([data[g * REDUCE_WG:(g + 1) * REDUCE_WG].sum(dtype=np.float64 if dtype is
                                                                  np.float32 else np.int64)
                     for g in range(groups)]).astype(dtype)
    if dtype is np.int32:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (16, 16, 16), (17, 5, 33), (40, 23, 9)])
def test_matmul_f32(dev, m, k, n):
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c = dev.allocate(4 * m * n)
    cols = -(-n // TILE) * TILE
    rows = -(-m // TILE) * TILE
    dev.load(PREBUILT / "matmul.co", "matmul_f32")(upload(dev, a), upload(dev, b), c, m, n, k,
                                                   global_size=(cols, rows), local_size=(TILE, TILE),
                                                   wait=True)
    np.testing.assert_allclose(download(c, np.float32, m * n).reshape(m, n), a @ b,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name, dtype", [("memset_u32", np.uint32), ("memset_f32", np.float32)])
def test_memset_leaves_the_elements_after_n_alone(dev, name, dtype, n):
    rng = np.random.default_rng(300 + n)
    guard = 7
    fill = np.full(n + guard, 0xA5A5A5A5, dtype=np.uint32).view(dtype)
    buffer = upload(dev, fill)
    value = random_array(rng, dtype, 1)[0]
    dev.load(PREBUILT / "memory.co", name)(buffer, value.item(), n, global_size=n,
                                           local_size=LOCAL, wait=True)
    want = fill.copy()
    want[:n] = value
    np.testing.assert_array_equal(download(buffer, np.uint32, n + guard), want.view(np.uint32))


@pytest.mark.parametrize("n", SIZES)
def test_copy_u32(dev, n):
    rng = np.random.default_rng(400 + n)
    src = random_array(rng, np.uint32, n)
    dst = dev.allocate(4 * n)
    dev.load(PREBUILT / "memory.co", "copy_u32")(upload(dev, src), dst, n, global_size=n,
                                                 local_size=LOCAL, wait=True)
    np.testing.assert_array_equal(download(dst, np.uint32, n), src)
