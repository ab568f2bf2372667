"""The UVM driver's ioctls on /dev/nvidia-uvm: initialise a VA space, register a GPU and its RM VA
space, create external ranges and map RM memory into them (the GPU virtual addresses work submitted
to the GPU uses), free ranges.

Every call reports in the block's `rmStatus` (kernel-open/nvidia-uvm/uvm_ioctl.h); a failure is an
RMError naming the status. The ioctl numbers are plain (uvm_linux_ioctl.h UVM_IOCTL_BASE).
"""
from __future__ import annotations

import logging

from autogen.nv.r535 import status as nv_status
from autogen.nv.r535 import uvm
from drivers.nv import abi as nv_abi
from drivers.nv.errors import RMError, status_name
from hal.errors import from_oserror
from hal.os import O_CLOEXEC, O_RDWR, OS

log = logging.getLogger(__name__)

UVM_PATH = "/dev/nvidia-uvm"


class UVM:
    """An initialised /dev/nvidia-uvm fd (one UVM VA space)."""

    def __init__(self, os: OS, fd: int, branch: str = "535") -> None:
        self.os = os
        self.fd = fd
        self.layouts = nv_abi.for_branch(branch).uvm  # the driver branch's parameter blocks
        self.ranges: dict[int, int] = {}  # base -> length of the external ranges made here

    @classmethod
    def open(cls, os: OS, branch: str = "535") -> "UVM":
        try:
            fd = os.open(UVM_PATH, O_RDWR | O_CLOEXEC)
        except OSError as exc:
            raise from_oserror(exc, f"opening {UVM_PATH} (is nvidia-uvm loaded?)") from exc
        session = cls(os, fd, branch)
        try:
            session.call(uvm.UVM_INITIALIZE, session.layouts.UVM_INITIALIZE_PARAMS(), "UVM_INITIALIZE")
        except BaseException:
            os.close(fd)
            raise
        return session

    def call(self, request: int, params, what: str):
        try:
            self.os.ioctl(self.fd, request, params.buffer)
        except OSError as exc:
            log.debug("%s: errno %d", what, exc.errno)
            raise from_oserror(exc, what) from exc
        log.debug("%s: %s", what, status_name(params.rmStatus))
        if params.rmStatus != nv_status.NV_OK:
            raise RMError(what, params.rmStatus)
        return params

    def register_gpu(self, uuid: bytes, ctl_fd: int = -1) -> None:
        params = self.layouts.UVM_REGISTER_GPU_PARAMS(rmCtrlFd=ctl_fd)
        params.gpu_uuid.uuid = uuid
        self.call(uvm.UVM_REGISTER_GPU, params, f"UVM_REGISTER_GPU {uuid.hex()}")

    def unregister_gpu(self, uuid: bytes) -> None:
        params = self.layouts.UVM_UNREGISTER_GPU_PARAMS()
        params.gpu_uuid.uuid = uuid
        self.call(uvm.UVM_UNREGISTER_GPU, params, f"UVM_UNREGISTER_GPU {uuid.hex()}")

    def register_gpu_va_space(self, uuid: bytes, ctl_fd: int, client: int, va_space: int) -> None:
        params = self.layouts.UVM_REGISTER_GPU_VASPACE_PARAMS(rmCtrlFd=ctl_fd, hClient=client,
                                                              hVaSpace=va_space)
        params.gpuUuid.uuid = uuid
        self.call(uvm.UVM_REGISTER_GPU_VASPACE, params, f"UVM_REGISTER_GPU_VASPACE {va_space:#x}")

    def create_external_range(self, base: int, length: int) -> None:
        params = self.layouts.UVM_CREATE_EXTERNAL_RANGE_PARAMS(base=base, length=length)
        self.call(uvm.UVM_CREATE_EXTERNAL_RANGE, params, f"UVM_CREATE_EXTERNAL_RANGE {base:#x}+{length:#x}")
        self.ranges[base] = length

    def map_external_allocation(self, base: int, length: int, uuid: bytes, ctl_fd: int, client: int,
                                memory: int, offset: int = 0) -> None:
        params = self.layouts.UVM_MAP_EXTERNAL_ALLOCATION_PARAMS(base=base, length=length, offset=offset,
                                                                 gpuAttributesCount=1, rmCtrlFd=ctl_fd,
                                                                 hClient=client, hMemory=memory)
        params.perGpuAttributes[0].gpuUuid.uuid = uuid
        params.perGpuAttributes[0].gpuMappingType = uvm.UvmGpuMappingTypeReadWriteAtomic
        self.call(uvm.UVM_MAP_EXTERNAL_ALLOCATION, params,
                  f"UVM_MAP_EXTERNAL_ALLOCATION {memory:#x} at {base:#x}+{length:#x}")

    def register_channel(self, uuid: bytes, ctl_fd: int, client: int, channel: int, base: int,
                         length: int) -> None:
        """UVM_REGISTER_CHANNEL: UVM maps the channel's context buffers at [base, base + length)."""
        params = self.layouts.UVM_REGISTER_CHANNEL_PARAMS(rmCtrlFd=ctl_fd, hClient=client, hChannel=channel,
                                                          base=base, length=length)
        params.gpuUuid.uuid = uuid
        self.call(uvm.UVM_REGISTER_CHANNEL, params, f"UVM_REGISTER_CHANNEL {channel:#x} at {base:#x}")

    def unregister_channel(self, uuid: bytes, client: int, channel: int) -> None:
        params = self.layouts.UVM_UNREGISTER_CHANNEL_PARAMS(hClient=client, hChannel=channel)
        if "gpuUuid" in params.FIELDS:  # uvm_ioctl.h: from 590 the channel is named by its handles alone
            params.gpuUuid.uuid = uuid
        self.call(uvm.UVM_UNREGISTER_CHANNEL, params, f"UVM_UNREGISTER_CHANNEL {channel:#x}")

    def free(self, base: int, length: int) -> None:
        layout = self.layouts.UVM_FREE_PARAMS
        # uvm_ioctl.h: from 590 UVM_FREE names the range by its base alone (uvm_va_range.c uvm_free)
        span = {"length": length} if "length" in layout.FIELDS else {}
        params = layout(base=base, **span)
        self.call(uvm.UVM_FREE, params, f"UVM_FREE {base:#x}+{length:#x}")
        self.ranges.pop(base, None)

    def close(self) -> None:
        self.os.close(self.fd)
