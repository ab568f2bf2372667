"""An Adreno GPU opened through KGSL (/dev/kgsl-3d0): identity, contexts, GPU memory.

`KGSLDevice` owns the device fd, the page of user memory that ioctl arguments point into, the
contexts it created and the GPU objects it allocated (closed in reverse at `close()`):
- `info`: chip id, GPU id, GMEM size (KGSL_PROP_DEVICE_INFO) and the model string (KGSL_PROP_GPU_MODEL);
- `create_context()`: a draw context set up for compute (COMPUTE_CONTEXT_FLAGS) at a priority;
- `alloc(size)`: IOCTL_KGSL_GPUOBJ_ALLOC, its GPU address from IOCTL_KGSL_GPUOBJ_INFO and a CPU
  mapping of the object (mmap of the device fd at offset id << PAGE_SHIFT, kgsl.c kgsl_mmap);
- `map_user(memory)`: host memory from the seam mapped for the GPU (IOCTL_KGSL_MAP_USER_MEM).
"""
from __future__ import annotations

from dataclasses import dataclass

from autogen.qcom import kgsl as uapi
from drivers.qcom import kgsl
from hal import os as hal_os
from hal.errors import DeviceNotFound, InvalidArgument, from_oserror
from hal.os import OS, PAGE_SIZE, HostMemory
from hal.region import Region

# Compute contexts: no GMEM (no tiling for compute), a preamble so KGSL restores state when it
# switches contexts, no fault-tolerant replay (a faulting kernel would fault again; KGSL then
# invalidates the context at once, adreno_dispatch.c), type CL.
COMPUTE_CONTEXT_FLAGS = (uapi.KGSL_CONTEXT_NO_GMEM_ALLOC | uapi.KGSL_CONTEXT_PREAMBLE
                         | uapi.KGSL_CONTEXT_NO_FAULT_TOLERANCE
                         | uapi.KGSL_CONTEXT_TYPE_CL << uapi.KGSL_CONTEXT_TYPE_SHIFT)
# msm_kgsl.h: priorities 0 (highest) .. 15; the middle one for ordinary compute work
DEFAULT_PRIORITY = 8
MAX_PRIORITY_VALUE = uapi.KGSL_CONTEXT_PRIORITY_MASK >> uapi.KGSL_CONTEXT_PRIORITY_SHIFT


@dataclass
class DeviceInfo:
    chip_id: int
    gpu_id: int
    gmem_size: int
    model: str

    @property
    def name(self) -> str:
        return f"Adreno {self.gpu_id} ({self.model}, chip id {self.chip_id:#010x})"


@dataclass
class GPUBuffer:
    """A KGSL GPU object: `id` (its handle), `gpuaddr`, `size` bytes and its CPU mapping."""

    id: int
    gpuaddr: int
    size: int
    region: Region | None

    def view(self) -> memoryview:
        return self.region.view(0)


class KGSLDevice:
    """One open /dev/kgsl-3d0 (a process's KGSL private data: its contexts and memory)."""

    def __init__(self, os: OS | None = None, path: str = kgsl.DEVICE_PATH) -> None:
        self.os = os or hal_os.host()
        self.path = path
        try:
            self.fd = self.os.open(path, hal_os.O_RDWR | hal_os.O_CLOEXEC)
        except OSError as exc:
            error = from_oserror(exc, f"open {path}")
            if isinstance(error, DeviceNotFound):
                raise DeviceNotFound(f"{path} does not exist: no Adreno GPU with the KGSL driver "
                                     "(KGSL is the downstream msm kernel's driver; freedreno/msm "
                                     "kernels offer /dev/dri instead)", errno=exc.errno) from exc
            raise error from exc
        self.contexts: list[int] = []
        self.buffers: dict[int, GPUBuffer] = {}
        self.user_maps: dict[int, int] = {}  # gpuaddr -> length
        try:
            self.scratch = kgsl.UserBuffer(self.os)
        except BaseException:
            self.os.close(self.fd)
            raise
        try:
            self.info = self._read_info()
        except BaseException:
            self.scratch.close()
            self.os.close(self.fd)
            raise

    def _read_info(self) -> DeviceInfo:
        devinfo = kgsl.get_property(self.os, self.fd, self.scratch, uapi.KGSL_PROP_DEVICE_INFO,
                                    uapi.kgsl_devinfo, "KGSL_PROP_DEVICE_INFO")
        try:
            model_struct = kgsl.get_property(self.os, self.fd, self.scratch,
                                             uapi.KGSL_PROP_GPU_MODEL, uapi.kgsl_gpu_model,
                                             "KGSL_PROP_GPU_MODEL")
            raw = bytes(b & 0xFF for b in model_struct.gpu_model)
            model = raw.split(b"\0", 1)[0].decode(errors="replace")
        except kgsl.KGSLError:
            # kernels older than the GPU model property answer EINVAL (adreno_getproperty default)
            model = f"Adreno{devinfo.gpu_id}"
        return DeviceInfo(devinfo.chip_id, devinfo.gpu_id, devinfo.gmem_sizebytes, model)

    # -- contexts ------------------------------------------------------------------------------
    def create_context(self, priority: int = DEFAULT_PRIORITY, power_max: bool = False) -> int:
        """A compute draw context; with `power_max`, a constraint holding the top power level."""
        if not 0 <= priority <= MAX_PRIORITY_VALUE:
            raise InvalidArgument(f"KGSL priority {priority} is outside 0..{MAX_PRIORITY_VALUE}")
        flags = COMPUTE_CONTEXT_FLAGS | priority << uapi.KGSL_CONTEXT_PRIORITY_SHIFT
        context_id = kgsl.drawctxt_create(self.os, self.fd, flags)
        self.contexts.append(context_id)
        if power_max:
            kgsl.set_power_constraint(self.os, self.fd, self.scratch, context_id,
                                      uapi.KGSL_CONSTRAINT_PWR_MAX)
        return context_id

    def destroy_context(self, context_id: int) -> None:
        self.contexts.remove(context_id)
        kgsl.drawctxt_destroy(self.os, self.fd, context_id)

    # -- memory --------------------------------------------------------------------------------
    def alloc(self, size: int, flags: int = 0, cpu_map: bool = True) -> GPUBuffer:
        """A GPU object of `size` bytes (rounded up to pages by KGSL), mapped for the CPU."""
        if size <= 0:
            raise InvalidArgument(f"a GPU buffer needs a positive size, not {size}")
        created = kgsl.gpuobj_alloc(self.os, self.fd, size, flags)
        try:
            info = kgsl.gpuobj_info(self.os, self.fd, created.id)
            region = None
            if cpu_map:
                try:
                    region = self.os.mmap(self.fd, created.mmapsize, created.id * PAGE_SIZE)
                except OSError as exc:
                    raise kgsl.KGSLError("mmap of a KGSL object", exc.errno,
                                         f"id {created.id}, {created.mmapsize} bytes") from exc
        except BaseException:
            kgsl.gpuobj_free(self.os, self.fd, created.id)
            raise
        buffer = GPUBuffer(created.id, info.gpuaddr, info.size, region)
        self.buffers[buffer.id] = buffer
        return buffer

    def free(self, buffer: GPUBuffer) -> None:
        if self.buffers.pop(buffer.id, None) is None:
            raise InvalidArgument(f"GPU object {buffer.id} is not allocated on this device")
        if buffer.region is not None:
            self.os.munmap(buffer.region)
            buffer.region = None
        kgsl.gpuobj_free(self.os, self.fd, buffer.id)

    def map_user(self, memory: HostMemory) -> int:
        """Map host memory from the seam (page aligned) for the GPU; returns its GPU address."""
        gpuaddr = kgsl.map_user_mem(self.os, self.fd, memory.addr, memory.size)
        self.user_maps[gpuaddr] = memory.size
        return gpuaddr

    def unmap_user(self, gpuaddr: int) -> None:
        if self.user_maps.pop(gpuaddr, None) is None:
            raise InvalidArgument(f"nothing of this device's user memory is mapped at {gpuaddr:#x}")
        kgsl.sharedmem_free(self.os, self.fd, gpuaddr)

    # -- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        if self.fd is None:
            return
        try:
            for context_id in reversed(list(self.contexts)):
                self.destroy_context(context_id)
            for buffer in reversed(list(self.buffers.values())):
                self.free(buffer)
            for gpuaddr in reversed(list(self.user_maps)):
                self.unmap_user(gpuaddr)
        finally:
            self.scratch.close()
            self.os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "KGSLDevice":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
