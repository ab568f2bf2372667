"""On a real NVIDIA GPU (sm_80/sm_89/sm_90 with the CUDA driver): the committed fatbinaries' SASS
gives the same results as the mock's PTX interpreter, and the driver's view of each kernel
(registers, shared memory, local memory, maximum threads) agrees with drivers.nv.cubin.

Runs through libcuda's driver API with ctypes; skipped where libcuda or a GPU is absent. Function
and enum names are those of the toolkit's include/cuda.h.
"""
from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np
import pytest

from compute.nv import compiler
from drivers.nv import cubin, fatbin
from mockgpu.nv.ptx import FlatMemory, Kernel

pytestmark = pytest.mark.hardware

# include/cuda.h: CUfunction_attribute and CUdevice_attribute values.
CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 0
CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES = 1
CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES = 3
CU_FUNC_ATTRIBUTE_NUM_REGS = 4
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76
SLOT = 0x40000
BASE = 0x7000_0000


class _Cuda:
    """The few driver API calls the test needs, on the device's primary context."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("cuda") or "libcuda.so.1"
        try:
            self.lib = ctypes.CDLL(name)
        except OSError as exc:
            pytest.skip(f"libcuda not loadable ({exc}): no NVIDIA driver")
        if self.lib.cuInit(0) != 0:
            pytest.skip("cuInit failed: no usable NVIDIA GPU")
        self.device = ctypes.c_int()
        self.check(self.lib.cuDeviceGet(ctypes.byref(self.device), 0), "cuDeviceGet")
        self.context = ctypes.c_void_p()
        self.check(self.lib.cuDevicePrimaryCtxRetain(ctypes.byref(self.context), self.device),
                   "cuDevicePrimaryCtxRetain")
        self.check(self.lib.cuCtxSetCurrent(self.context), "cuCtxSetCurrent")
        major = self.device_attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
        minor = self.device_attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
        self.arch = major * 10 + minor

    def check(self, status: int, what: str) -> None:
        if status != 0:
            raise AssertionError(f"{what} failed with CUresult {status}")

    def device_attribute(self, attribute: int) -> int:
        value = ctypes.c_int()
        self.check(self.lib.cuDeviceGetAttribute(ctypes.byref(value), attribute, self.device),
                   "cuDeviceGetAttribute")
        return value.value

    def function(self, image: bytes, name: str) -> tuple[ctypes.c_void_p, ctypes.c_void_p]:
        module = ctypes.c_void_p()
        self.check(self.lib.cuModuleLoadData(ctypes.byref(module), image), "cuModuleLoadData")
        function = ctypes.c_void_p()
        self.check(self.lib.cuModuleGetFunction(ctypes.byref(function), module, name.encode()),
                   "cuModuleGetFunction")
        return module, function

    def function_attribute(self, function: ctypes.c_void_p, attribute: int) -> int:
        value = ctypes.c_int()
        self.check(self.lib.cuFuncGetAttribute(ctypes.byref(value), attribute, function),
                   "cuFuncGetAttribute")
        return value.value

    def run(self, image: bytes, name: str, grid: tuple[int, int, int], block: tuple[int, int, int],
            params: bytes, memory: bytes) -> bytes:
        # size_t and CUdeviceptr arguments are passed as 64-bit ctypes values, never bare ints.
        """Copy `memory` to a device allocation standing for BASE, relocate the parameter block's
        pointers (any 8-byte value inside [BASE, BASE + len(memory))), launch, copy back."""
        module, function = self.function(image, name)
        pointer = ctypes.c_uint64()
        size_bytes = ctypes.c_size_t(len(memory))
        self.check(self.lib.cuMemAlloc_v2(ctypes.byref(pointer), size_bytes), "cuMemAlloc")
        try:
            self.check(self.lib.cuMemcpyHtoD_v2(pointer, memory, size_bytes), "cuMemcpyHtoD")
            block_bytes = bytearray(params)
            for offset in range(0, len(block_bytes) - 7, 8):
                value = int.from_bytes(block_bytes[offset:offset + 8], "little")
                if BASE <= value < BASE + len(memory):
                    relocated = value - BASE + pointer.value
                    block_bytes[offset:offset + 8] = relocated.to_bytes(8, "little")
            size = ctypes.c_size_t(len(block_bytes))
            buffer = ctypes.create_string_buffer(bytes(block_bytes), len(block_bytes))
            # CU_LAUNCH_PARAM_BUFFER_POINTER (1), CU_LAUNCH_PARAM_BUFFER_SIZE (2), CU_LAUNCH_PARAM_END (0).
            extra = (ctypes.c_void_p * 5)(1, ctypes.cast(buffer, ctypes.c_void_p), 2,
                                         ctypes.cast(ctypes.pointer(size), ctypes.c_void_p), 0)
            self.check(self.lib.cuLaunchKernel(function, *grid, *block, 0, None, None, extra),
                       "cuLaunchKernel")
            self.check(self.lib.cuCtxSynchronize(), "cuCtxSynchronize")
            out = ctypes.create_string_buffer(len(memory))
            self.check(self.lib.cuMemcpyDtoH_v2(out, pointer, size_bytes), "cuMemcpyDtoH")
            return out.raw
        finally:
            self.lib.cuMemFree_v2(pointer)
            self.lib.cuModuleUnload(module)


@pytest.fixture(scope="module")
def cuda() -> _Cuda:
    gpu = _Cuda()
    if gpu.arch not in (80, 86, 87, 89, 90):
        pytest.skip(f"sm_{gpu.arch}: the library is built for sm_80, sm_89 and sm_90")
    return gpu


def _cases() -> list[tuple[str, str, tuple[int, int, int], tuple[int, int, int], list, list]]:
    """(file, kernel, grid, block, arrays written to slots 0.., parameter values) where a parameter
    value "slotN" stands for the address of slot N."""
    rng = np.random.default_rng(5)
    n = 3001
    floats = rng.standard_normal(n).astype(np.float32)
    ints = rng.integers(0, 2**32, n, dtype=np.uint32)
    m, k, cols = 37, 29, 45
    pair = [floats, floats[::-1].copy()]
    return [
        ("vector_add", "vector_add_f32", (24, 1, 1), (128, 1, 1), pair, ["slot0", "slot1", "slot2", n]),
        ("saxpy", "saxpy", (12, 1, 1), (256, 1, 1), pair, [1.75, "slot0", "slot1", n]),
        ("memory", "memset_u32", (24, 1, 1), (128, 1, 1), [], ["slot0", 0xDEADBEEF, n]),
        ("memory", "copy_u32", (24, 1, 1), (128, 1, 1), [ints], ["slot0", "slot1", n]),
        ("reduce", "reduce_sum_f32", (12, 1, 1), (256, 1, 1), [floats], ["slot0", "slot1", n]),
        ("reduce", "reduce_sum_i32", (12, 1, 1), (256, 1, 1), [ints.view(np.int32)],
         ["slot0", "slot1", n]),
        ("matmul", "matmul_f32", (3, 3, 1), (16, 16, 1),
         [rng.standard_normal(m * k).astype(np.float32),
          rng.standard_normal(k * cols).astype(np.float32)], ["slot0", "slot1", "slot2", m, cols, k]),
        ("private_array", "private_array", (8, 1, 1), (128, 1, 1), [ints[:1000]],
         ["slot0", "slot1", 1000]),
        ("histogram", "histogram_u32", (5, 1, 1), (96, 1, 1), [ints], ["slot0", "slot1", n]),
    ]


@pytest.mark.parametrize("case", _cases(), ids=lambda case: case[1])
def test_sass_matches_the_ptx_interpreter(cuda: _Cuda, case: tuple) -> None:
    source, name, grid, block, inputs, values = case
    path = compiler.PREBUILT_DIR / f"{source}.fatbin"
    binary = fatbin.load_file(path)
    kernel = Kernel.from_ptx(binary.ptx(cuda.arch), name)
    memory = FlatMemory(BASE, SLOT * 4)
    for slot, array in enumerate(inputs):
        memory.write(BASE + slot * SLOT, np.ascontiguousarray(array).tobytes())
    resolved = [BASE + int(v[4:]) * SLOT if isinstance(v, str) else v for v in values]
    params = kernel.pack_params(*resolved)
    # The driver picks the SASS for the device from the fatbinary (or JITs compute_80's PTX).
    gpu = cuda.run(path.read_bytes(), name, grid, block, params, bytes(memory.data))
    kernel.run(grid, block, params, memory)
    mock = bytes(memory.data)
    if name.endswith("f32") or name == "saxpy":
        np.testing.assert_allclose(np.frombuffer(gpu, np.float32), np.frombuffer(mock, np.float32),
                                   rtol=1e-5, atol=1e-5)
    else:
        assert gpu == mock


def test_driver_agrees_with_the_cubin_parser(cuda: _Cuda) -> None:
    for path in sorted(compiler.PREBUILT_DIR.glob("*.fatbin")):
        binary = fatbin.load_file(path)
        if cuda.arch not in binary.sass_archs:
            pytest.skip(f"no SASS for sm_{cuda.arch} in the library (it runs the JIT-compiled PTX)")
        image_bytes = binary.cubin(cuda.arch)
        image = cubin.parse(image_bytes)
        for name, kernel in image.kernels.items():
            module, function = cuda.function(image_bytes, name)
            try:
                assert cuda.function_attribute(function, CU_FUNC_ATTRIBUTE_NUM_REGS) == kernel.registers
                assert cuda.function_attribute(function, CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES) == \
                    kernel.frame_size
                shared = cuda.function_attribute(function, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)
                assert shared <= kernel.shared_size
                if kernel.max_threads is not None:
                    limit = cuda.function_attribute(function, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK)
                    assert limit == kernel.max_threads[0]
            finally:
                cuda.lib.cuModuleUnload(module)
