"""The KGSL ioctl layer: one function per ioctl of /dev/kgsl-3d0, each through the OS seam.

Owns the argument structs (autogen.qcom.kgsl, from msm_kgsl.h), the retry of EINTR/EAGAIN, and the
mapping of every failure into a typed error that names the ioctl, keeps the errno and says what the
kernel meant (facts from the downstream driver, drivers/gpu/msm/kgsl.c and adreno_*.c of Qualcomm's
msm kernel trees, e.g. MiCode/Xiaomi_Kernel_OpenSource). Pointers inside ioctl arguments (the
property value, the command list) point into a `UserBuffer`: page-locked memory from the seam,
whose virtual address the kernel copies from and to.
"""
from __future__ import annotations

import errno as _errno

from autogen.qcom import kgsl
from hal.errors import (DeviceTimeout, HalError, InvalidArgument, OutOfMemory, PermissionDenied,
                        UnsupportedOperation)
from hal.os import OS, PAGE_SIZE

DEVICE_PATH = "/dev/kgsl-3d0"
# how many times an ioctl interrupted by a signal (EINTR) or told to retry (EAGAIN) is issued again
RETRIES = 8

# what an errno means for each ioctl, where the kernel gives it a specific sense
_MEANINGS = {
    # adreno_dispatch.c _check_context_state / adreno_drawctxt_wait: the context faulted and
    # was invalidated; nothing more runs on it
    _errno.EDEADLK: "the context was invalidated after a GPU fault; destroy it and create a new one",
    # kgsl.c kgsl_context_get_owner fails, or adreno_dispatch.c _verify_ib rejects an IB
    _errno.EINVAL: "rejected argument (unknown context or object id, bad size, flag or IB address)",
    _errno.ENOENT: "the context was destroyed (detached)",
    _errno.ENOMEM: "the GPU memory pool or the GPU address space is exhausted",
    _errno.ETIMEDOUT: "the timestamp did not retire within the wait's timeout",
    _errno.EFAULT: "a user pointer in the argument is not mapped memory",
    _errno.ERANGE: "a mapping length that does not match the object",
}


class KGSLError(HalError):
    """A KGSL ioctl failed: `ioctl` names it, `errno` is the kernel's answer."""

    def __init__(self, ioctl: str, code: int | None, detail: str = "") -> None:
        self.ioctl = ioctl
        # errno.errorcode names EDEADLK by its alias EDEADLOCK; KGSL's sources say EDEADLK
        name = "EDEADLK" if code == _errno.EDEADLK else _errno.errorcode.get(code or 0, str(code))
        meaning = _MEANINGS.get(code or 0, "")
        text = f"{ioctl} failed: {name}"
        if detail:
            text += f" ({detail})"
        if meaning:
            text += f": {meaning}"
        super().__init__(text, errno=code)


class ContextFaulted(KGSLError):
    """EDEADLK: the context was marked bad after a fault (page fault, CP error, hang recovery)."""


class KGSLTimeout(DeviceTimeout):
    """A bounded wait on a context's timestamp ran out; `context_id` and `timestamp` name it."""

    def __init__(self, message: str, *, context_id: int, timestamp: int, retired: int | None) -> None:
        super().__init__(message, errno=_errno.ETIMEDOUT)
        self.context_id = context_id
        self.timestamp = timestamp
        self.retired = retired


def _error(name: str, exc: OSError, detail: str) -> Exception:
    """The typed error for a failed ioctl `name` (the one place KGSL errnos are mapped)."""
    code = exc.errno
    if code == _errno.EDEADLK:
        return ContextFaulted(name, code, detail)
    if code in (_errno.EACCES, _errno.EPERM):
        return PermissionDenied(f"{name}: {exc.strerror or exc} (grant access to {DEVICE_PATH}: "
                                "the video group, or run as root)", errno=code)
    if code == _errno.ENOTTY:
        return UnsupportedOperation(f"{name}: this kernel's KGSL does not know the ioctl "
                                    "(have an older msm_kgsl.h ABI)", errno=code)
    return KGSLError(name, code, detail)


def ioctl(os: OS, fd: int, request: int, arg, name: str, detail: str = "") -> int:
    """Issue one KGSL ioctl; EINTR/EAGAIN are retried a few times, every other failure is typed."""
    attempt = 0
    while True:
        try:
            return os.ioctl(fd, request, arg)
        except OSError as exc:
            if exc.errno in (_errno.EINTR, _errno.EAGAIN) and attempt < RETRIES:
                attempt += 1
                continue
            raise _error(name, exc, detail) from exc


class UserBuffer:
    """Page-locked memory whose address ioctl arguments point to (copy_from_user sources)."""

    def __init__(self, os: OS, size: int = PAGE_SIZE) -> None:
        self.os = os
        self.memory = os.alloc_pages(size)
        self.size = self.memory.size

    @property
    def address(self) -> int:
        return self.memory.addr

    def write(self, offset: int, data: bytes) -> int:
        if offset + len(data) > self.size:
            raise InvalidArgument(f"{len(data)} bytes at {offset} do not fit the {self.size}-byte "
                                  "ioctl argument buffer")
        self.memory.region.write(offset, bytes(data))
        return self.address + offset

    def read(self, offset: int, size: int) -> bytes:
        return bytes(self.memory.region.read(offset, size))

    def close(self) -> None:
        if self.memory is not None:
            self.os.free_locked(self.memory)
            self.memory = None


# -- properties --------------------------------------------------------------------------------
def get_property(os: OS, fd: int, scratch: UserBuffer, prop: int, struct_cls, name: str):
    """IOCTL_KGSL_DEVICE_GETPROPERTY of `prop` into a `struct_cls` (kgsl.c kgsl_ioctl_device_getproperty:
    the value is copied out to the user pointer; adreno_getproperty wants sizebytes == the struct's)."""
    value = struct_cls()
    pointer = scratch.write(0, bytes(value))
    arg = kgsl.kgsl_device_getproperty(type=prop, value=pointer, sizebytes=struct_cls.SIZE)
    ioctl(os, fd, kgsl.IOCTL_KGSL_DEVICE_GETPROPERTY, arg.buffer, "IOCTL_KGSL_DEVICE_GETPROPERTY",
          name)
    return struct_cls.from_bytes(scratch.read(0, struct_cls.SIZE))


def set_power_constraint(os: OS, fd: int, scratch: UserBuffer, context_id: int, level: int) -> None:
    """IOCTL_KGSL_SETPROPERTY KGSL_PROP_PWR_CONSTRAINT: hold the GPU at power level `level`
    (KGSL_CONSTRAINT_PWR_MAX / _MIN) while `context_id` has work queued."""
    level_struct = kgsl.kgsl_device_constraint_pwrlevel(level=level)
    level_pointer = scratch.write(kgsl.kgsl_device_constraint.SIZE, bytes(level_struct))
    constraint = kgsl.kgsl_device_constraint(type=kgsl.KGSL_CONSTRAINT_PWRLEVEL, context_id=context_id,
                                             data=level_pointer, size=level_struct.SIZE)
    pointer = scratch.write(0, bytes(constraint))
    arg = kgsl.kgsl_device_getproperty(type=kgsl.KGSL_PROP_PWR_CONSTRAINT, value=pointer,
                                       sizebytes=constraint.SIZE)
    ioctl(os, fd, kgsl.IOCTL_KGSL_SETPROPERTY, arg.buffer, "IOCTL_KGSL_SETPROPERTY",
          f"power constraint level {level} on context {context_id}")


# -- contexts ----------------------------------------------------------------------------------
def drawctxt_create(os: OS, fd: int, flags: int) -> int:
    arg = kgsl.kgsl_drawctxt_create(flags=flags)
    ioctl(os, fd, kgsl.IOCTL_KGSL_DRAWCTXT_CREATE, arg.buffer, "IOCTL_KGSL_DRAWCTXT_CREATE",
          f"flags {flags:#x}")
    return arg.drawctxt_id


def drawctxt_destroy(os: OS, fd: int, context_id: int) -> None:
    arg = kgsl.kgsl_drawctxt_destroy(drawctxt_id=context_id)
    ioctl(os, fd, kgsl.IOCTL_KGSL_DRAWCTXT_DESTROY, arg.buffer, "IOCTL_KGSL_DRAWCTXT_DESTROY",
          f"context {context_id}")


# -- memory ------------------------------------------------------------------------------------
def gpuobj_alloc(os: OS, fd: int, size: int, flags: int) -> kgsl.kgsl_gpuobj_alloc:
    arg = kgsl.kgsl_gpuobj_alloc(size=size, flags=flags)
    try:
        ioctl(os, fd, kgsl.IOCTL_KGSL_GPUOBJ_ALLOC, arg.buffer, "IOCTL_KGSL_GPUOBJ_ALLOC",
              f"{size} bytes, flags {flags:#x}")
    except KGSLError as exc:
        if exc.errno == _errno.ENOMEM:
            raise OutOfMemory(f"IOCTL_KGSL_GPUOBJ_ALLOC of {size} bytes: ENOMEM (GPU memory or "
                              "address space exhausted; free buffers first)", requested=size,
                              alignment=PAGE_SIZE, free=0, largest_free=0) from exc
        raise
    return arg


def gpuobj_info(os: OS, fd: int, object_id: int) -> kgsl.kgsl_gpuobj_info:
    arg = kgsl.kgsl_gpuobj_info(id=object_id)
    ioctl(os, fd, kgsl.IOCTL_KGSL_GPUOBJ_INFO, arg.buffer, "IOCTL_KGSL_GPUOBJ_INFO", f"id {object_id}")
    return arg


def gpuobj_free(os: OS, fd: int, object_id: int) -> None:
    arg = kgsl.kgsl_gpuobj_free(id=object_id)
    ioctl(os, fd, kgsl.IOCTL_KGSL_GPUOBJ_FREE, arg.buffer, "IOCTL_KGSL_GPUOBJ_FREE", f"id {object_id}")


def map_user_mem(os: OS, fd: int, hostptr: int, length: int, flags: int = 0) -> int:
    """IOCTL_KGSL_MAP_USER_MEM of anonymous memory (KGSL_USER_MEM_TYPE_ADDR): the kernel pins the
    pages and maps them into the process's GPU address space; returns the GPU address."""
    arg = kgsl.kgsl_map_user_mem(fd=-1, hostptr=hostptr, len=length,
                                 memtype=kgsl.KGSL_USER_MEM_TYPE_ADDR, flags=flags)
    ioctl(os, fd, kgsl.IOCTL_KGSL_MAP_USER_MEM, arg.buffer, "IOCTL_KGSL_MAP_USER_MEM",
          f"{length} bytes at {hostptr:#x}")
    return arg.gpuaddr


def sharedmem_free(os: OS, fd: int, gpuaddr: int) -> None:
    arg = kgsl.kgsl_sharedmem_free(gpuaddr=gpuaddr)
    ioctl(os, fd, kgsl.IOCTL_KGSL_SHAREDMEM_FREE, arg.buffer, "IOCTL_KGSL_SHAREDMEM_FREE",
          f"GPU address {gpuaddr:#x}")


# -- submission and timestamps -----------------------------------------------------------------
def gpu_command(os: OS, fd: int, scratch: UserBuffer, context_id: int,
                ibs: list[tuple[int, int]], flags: int = 0) -> int:
    """IOCTL_KGSL_GPU_COMMAND with one kgsl_command_object per (gpuaddr, size in bytes) IB;
    returns the timestamp the context's work retires at."""
    objects = b"".join(bytes(kgsl.kgsl_command_object(gpuaddr=gpuaddr, size=size,
                                                       flags=kgsl.KGSL_CMDLIST_IB))
                       for gpuaddr, size in ibs)
    pointer = scratch.write(0, objects)
    arg = kgsl.kgsl_gpu_command(flags=flags, cmdlist=pointer, cmdsize=kgsl.kgsl_command_object.SIZE,
                                numcmds=len(ibs), context_id=context_id)
    ioctl(os, fd, kgsl.IOCTL_KGSL_GPU_COMMAND, arg.buffer, "IOCTL_KGSL_GPU_COMMAND",
          f"context {context_id}, {len(ibs)} IB(s)")
    return arg.timestamp


def read_timestamp(os: OS, fd: int, context_id: int, kind: int = kgsl.KGSL_TIMESTAMP_RETIRED) -> int:
    arg = kgsl.kgsl_cmdstream_readtimestamp_ctxtid(context_id=context_id, type=kind)
    ioctl(os, fd, kgsl.IOCTL_KGSL_CMDSTREAM_READTIMESTAMP_CTXTID, arg.buffer,
          "IOCTL_KGSL_CMDSTREAM_READTIMESTAMP_CTXTID", f"context {context_id}")
    return arg.timestamp


def wait_timestamp(os: OS, fd: int, context_id: int, timestamp: int, timeout_ms: int) -> bool:
    """IOCTL_KGSL_DEVICE_WAITTIMESTAMP_CTXTID for at most `timeout_ms` (never 0: KGSL waits
    forever then, adreno_drawctxt_wait); True when retired, False when the wait timed out."""
    if timeout_ms <= 0:
        raise InvalidArgument("a KGSL timestamp wait of 0 ms waits forever; give a positive timeout")
    arg = kgsl.kgsl_device_waittimestamp_ctxtid(context_id=context_id, timestamp=timestamp,
                                                timeout=timeout_ms)
    try:
        ioctl(os, fd, kgsl.IOCTL_KGSL_DEVICE_WAITTIMESTAMP_CTXTID, arg.buffer,
              "IOCTL_KGSL_DEVICE_WAITTIMESTAMP_CTXTID", f"context {context_id} timestamp {timestamp}")
    except KGSLError as exc:
        if exc.errno == _errno.ETIMEDOUT:
            return False
        raise
    return True
