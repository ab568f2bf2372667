"""The simulated NVIDIA kernel driver: /dev/nvidiactl, /dev/nvidia0, /dev/nvidia-uvm and
/proc/driver/nvidia/version on a mock Machine, answering the escapes and UVM ioctls with the ABI of
the version's branch (r535, r550, r570, r575, r580, r590 or r595: mockgpu.nv.branch).

`install(machine, gpu=..., version=...)` adds the files (Machine.extra_files) and returns the
`NVKernelDriver`, which tests inspect (its `rm`, `uvm_spaces`). The escape layer follows
kernel-open/nvidia/nv.c nvidia_ioctl and src/nvidia/arch/nvalloc/unix/src/escape.c RmIoctl:
- the request's _IOC_NR is the escape and _IOC_SIZE the size of the caller's block; an RM escape
  whose size is not its structure's, or one issued on the wrong node (NV_CTL_DEVICE_ONLY /
  NV_ACTUAL_DEVICE_ONLY) makes RmIoctl fail, which nvidia_ioctl returns as EINVAL;
- otherwise the ioctl succeeds and the RM's verdict is the `status` in the block.
UVM ioctls (kernel-open/nvidia-uvm/uvm.c uvm_ioctl) report in `rmStatus`; every command but
UVM_INITIALIZE/UVM_MM_INITIALIZE on an uninitialised fd is NV_ERR_ILLEGAL_ACTION (uvm_api.h).
User pointers inside the blocks (pAllocParms, params) are read from the simulated process memory
(HostRAM.user_view), so they must point into memory from the seam's alloc_* calls.
"""
from __future__ import annotations

import errno

from autogen.nv.r535 import classes as cl
from autogen.nv.r535 import escape as esc
from autogen.nv.r535 import nvos
from autogen.nv.r535 import status as st
from autogen.nv.r535 import uvm
from hal.os import PAGE_SIZE
from hal.region import CallbackRegion, MemoryRegion, Region
from mockgpu.files import MockFile
from mockgpu.nv import branch as nv_branch
from mockgpu.nv.gpus import H100_SXM, NVIDIA_VENDOR_ID, GPUIdentity
from mockgpu.nv.rm import MmapContext, ResourceManager, RMObject, RMStatus
from mockgpu.sysfs import Attr, Special

CTL_PATH = "/dev/nvidiactl"
UVM_PATH = "/dev/nvidia-uvm"
VERSION_PATH = "/proc/driver/nvidia/version"
DEFAULT_VERSION = "535.261.03"  # the Debian 12 (bookworm) build the bindings come from

# include/uapi/asm-generic/ioctl.h: _IOC_NRBITS 8, _IOC_TYPEBITS 8, _IOC_SIZEBITS 14
IOC_NR_MASK = 0xFF
IOC_SIZE_SHIFT = 16
IOC_SIZE_MASK = 0x3FFF
# kernel-open/common/inc/nv.h NV_CONTROL_DEVICE_MINOR: /dev/nvidiactl's minor; GPUs count from 0
CONTROL_DEVICE_MINOR = 255
# BAR0 and the frame buffer BAR of the simulated board (physical addresses the card-info escape
# reports); sizes as on an H100 SXM: 16 MiB of registers
REG_ADDRESS = 0xE0000000
REG_SIZE = 16 << 20
FB_ADDRESS = 0x200000000000
# where the simulated board sits (PCI bus 0x18, device 0) and the RM's id for it, which packs the
# PCI location (domain << 16 | bus << 8 | device); nvidia_read_card_info reports both
PCI_BUS = 0x18
GPU_ID = PCI_BUS << 8

# escape.c RmIoctl: the RM escapes, the block each must be (dataSize), and which node may issue it
_CTL = "ctl"
_DEVICE = "device"
# (the structs are r535 names; their sizes are those of the driver's branch: mockgpu.nv.branch)
RM_ESCAPES = {
    esc.NV_ESC_RM_ALLOC: ((nvos.NVOS21_PARAMETERS, nvos.NVOS64_PARAMETERS), _CTL),
    esc.NV_ESC_RM_FREE: ((nvos.NVOS00_PARAMETERS,), _CTL),
    esc.NV_ESC_RM_CONTROL: ((nvos.NVOS54_PARAMETERS,), _CTL),
    esc.NV_ESC_RM_MAP_MEMORY: ((nvos.nv_ioctl_nvos33_parameters_with_fd,), _CTL),
    esc.NV_ESC_RM_UNMAP_MEMORY: ((nvos.NVOS34_PARAMETERS,), _CTL),
    esc.NV_ESC_ALLOC_OS_EVENT: ((esc.nv_ioctl_alloc_os_event,), None),
    esc.NV_ESC_REGISTER_FD: ((esc.nv_ioctl_register_fd,), _DEVICE),
}


def _ioc_nr(request: int) -> int:
    return request & IOC_NR_MASK


def _ioc_size(request: int) -> int:
    return (request >> IOC_SIZE_SHIFT) & IOC_SIZE_MASK


def _block(arg, size: int) -> memoryview:
    """The caller's parameter block: copy_from_user of _IOC_SIZE bytes (EFAULT when shorter)."""
    if not isinstance(arg, (bytearray, memoryview)) or len(arg) < size:
        raise OSError(errno.EFAULT, f"ioctl argument shorter than its _IOC_SIZE {size}")
    return memoryview(arg).cast("B")[:size]


class NVKernelDriver:
    """nvidia.ko and nvidia-uvm.ko of one machine with one GPU."""

    def __init__(self, machine, gpu: GPUIdentity = H100_SXM, version: str = DEFAULT_VERSION,
                 proc_version: bool = True) -> None:
        self.machine = machine
        self.gpu = gpu
        self.version = version
        # False: no /proc/driver/nvidia/version, as in a sandbox that proxies the device nodes but not
        # the host's procfs; the RM still answers the version query on /dev/nvidiactl
        self.proc_version = proc_version
        # the parameter-block layouts of the branch this version belongs to (mockgpu.nv.branch)
        self.branch = nv_branch.abi_branch(version)
        self.rm = ResourceManager(gpu, self._read_user, self._write_user, self.branch)
        self.open_files: list[MockFile] = []
        self.uvm_spaces: list["UVMFile"] = []
        self.gpu_model = None  # mockgpu.nv.gpu.GPUModel, set by install()

    # copy_from_user / copy_to_user over the simulated process memory
    def _read_user(self, address: int, size: int) -> bytes | None:
        view = self.machine.ram.user_view(address, size)
        return None if view is None else bytes(view)

    def _write_user(self, address: int, data: bytes) -> bool:
        view = self.machine.ram.user_view(address, len(data))
        if view is None:
            return False
        view[:] = data
        return True

    def version_text(self) -> str:
        # kernel-open/nvidia/nv-procfs.c nv_procfs_read_version: "NVRM version: <pNVRM_ID>" and the
        # compiler line
        return (f"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {self.version}  Release Build  "
                f"(mockgpu)\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")

    def files(self) -> dict[str, object]:
        files: dict[str, object] = {
            CTL_PATH: Special(0o666, lambda path, flags: self._opened(NVFile(self, path, _CTL))),
            "/dev/nvidia0": Special(0o666, lambda path, flags: self._opened(NVFile(self, path, _DEVICE))),
            UVM_PATH: Special(0o666, lambda path, flags: self._opened(UVMFile(self, path))),
        }
        if self.proc_version:
            files[VERSION_PATH] = Attr(0o444, self.version_text)
        return files

    def _opened(self, file: MockFile) -> MockFile:
        self.open_files.append(file)
        return file

    def file_of_fd(self, fd: int) -> MockFile | None:
        try:
            return self.machine.os.file_of(fd)
        except OSError:
            return None


class NVFile(MockFile):
    """An open /dev/nvidiactl (`kind` "ctl") or /dev/nvidia0 ("device")."""

    def __init__(self, driver: NVKernelDriver, path: str, kind: str) -> None:
        super().__init__(path)
        self.driver = driver
        self.kind = kind
        self.mmap_context: MmapContext | None = None
        self.registered_ctl: "NVFile | None" = None
        self.clients: set[int] = set()
        self.closed = False

    # -- ioctl -----------------------------------------------------------------------------------
    def ioctl(self, request: int, arg) -> int:
        nr = _ioc_nr(request)
        size = _ioc_size(request)
        if nr == esc.NV_ESC_CARD_INFO:
            return self._card_info(_block(arg, size))
        if nr == esc.NV_ESC_CHECK_VERSION_STR:
            return self._check_version(_block(arg, size))
        entry = RM_ESCAPES.get(nr)
        if entry is None:
            # escape.c RmIoctl default: "unknown NVRM ioctl command" -> nvidia_ioctl's EINVAL
            raise OSError(errno.EINVAL, f"{self.path}: escape {nr:#x} is not one this driver models")
        structs, node = entry
        sizes = tuple(self.layout(struct).SIZE for struct in structs)
        block = _block(arg, size)
        if node is not None and node != self.kind:
            # escape.c NV_CTL_DEVICE_ONLY / NV_ACTUAL_DEVICE_ONLY: the wrong node
            raise OSError(errno.EINVAL, f"escape {nr:#x} is served on the {node} node, not {self.path}")
        if size not in sizes:
            # escape.c RmIoctl: "if (dataSize != sizeof(...)) rmStatus = NV_ERR_INVALID_ARGUMENT"
            raise OSError(errno.EINVAL, f"escape {nr:#x}: block of {size} bytes, expected one of {sizes}")
        handler = {
            esc.NV_ESC_RM_ALLOC: self._alloc, esc.NV_ESC_RM_FREE: self._free,
            esc.NV_ESC_RM_CONTROL: self._control, esc.NV_ESC_RM_MAP_MEMORY: self._map_memory,
            esc.NV_ESC_RM_UNMAP_MEMORY: self._unmap_memory, esc.NV_ESC_ALLOC_OS_EVENT: self._alloc_os_event,
            esc.NV_ESC_REGISTER_FD: self._register_fd,
        }[nr]
        handler(block)
        return 0

    def layout(self, struct: type) -> type:
        """`struct` (an r535 type) as the driver's branch lays it out."""
        return nv_branch.layout(struct, self.driver.branch)

    def _card_info(self, block: memoryview) -> int:
        # nv.c NV_ESC_CARD_INFO (NV_CTL_DEVICE_ONLY): an array of nv_ioctl_card_info_t, as many as fit
        if self.kind != _CTL:
            raise OSError(errno.EINVAL, "NV_ESC_CARD_INFO is served on /dev/nvidiactl")
        record = self.layout(esc.nv_ioctl_card_info).SIZE
        if self.driver.branch in nv_branch.VALIDATING_BRANCHES and (not block or len(block) % record):
            # 595 nv.c nv_validate_ioctls: an argument array of whole nv_ioctl_card_info_t, else EINVAL
            raise OSError(errno.EINVAL, f"NV_ESC_CARD_INFO block of {len(block)} bytes is not a whole "
                                        f"number of {record}-byte records")
        count = len(block) // record
        block[:] = bytes(len(block))
        if count == 0:
            return 0
        info = self.layout(esc.nv_ioctl_card_info).from_buffer(block)
        gpu = self.driver.gpu
        info.valid = 1
        info.pci_info.vendor_id = NVIDIA_VENDOR_ID
        info.pci_info.device_id = gpu.device_id
        info.pci_info.bus = PCI_BUS
        info.gpu_id = GPU_ID
        info.reg_address = REG_ADDRESS
        info.reg_size = REG_SIZE
        info.fb_address = FB_ADDRESS
        info.fb_size = gpu.vram_size
        info.minor_number = 0
        return 0

    def _check_version(self, block: memoryview) -> int:
        # nv.c NV_ESC_CHECK_VERSION_STR -> osapi.c RmPerformVersionCheck
        if self.kind != _CTL:
            raise OSError(errno.EINVAL, "NV_ESC_CHECK_VERSION_STR is served on /dev/nvidiactl")
        if len(block) != self.layout(esc.nv_ioctl_rm_api_version).SIZE:
            raise OSError(errno.EINVAL, f"version block of {len(block)} bytes")
        params = self.layout(esc.nv_ioctl_rm_api_version).from_buffer(block)
        params.reply = esc.NV_RM_API_VERSION_REPLY_RECOGNIZED
        ours = self.driver.version.encode()
        if params.cmd == esc.NV_RM_API_VERSION_CMD_QUERY:
            params.versionString = ours
            return 0
        theirs = bytes(params.versionString).split(b"\0")[0]
        if params.cmd == esc.NV_RM_API_VERSION_CMD_RELAXED:
            # relaxed: compare up to the first '.'
            matches = theirs.split(b".")[0] == ours.split(b".")[0]
        else:
            matches = theirs == ours
        if not matches:
            params.versionString = ours
            raise OSError(errno.EINVAL, f"client version {theirs!r} does not match {ours!r}")
        return 0

    def _alloc(self, block: memoryview) -> None:
        params = self.layout(nvos.NVOS21_PARAMETERS).from_buffer(block)
        try:
            handle = self.driver.rm.alloc(params.hRoot, params.hObjectParent, params.hObjectNew,
                                          params.hClass, params.pAllocParms)
        except RMStatus as failure:
            params.status = failure.status
            return
        params.hObjectNew = handle
        params.status = st.NV_OK
        if params.hClass in (nvos.NV01_ROOT, nvos.NV01_ROOT_CLIENT):
            self.clients.add(handle)

    def _free(self, block: memoryview) -> None:
        params = self.layout(nvos.NVOS00_PARAMETERS).from_buffer(block)
        try:
            self.driver.rm.free(params.hRoot, params.hObjectParent, params.hObjectOld)
        except RMStatus as failure:
            params.status = failure.status
            return
        if params.hObjectOld == params.hRoot:
            self.clients.discard(params.hRoot)
        params.status = st.NV_OK

    def _control(self, block: memoryview) -> None:
        params = self.layout(nvos.NVOS54_PARAMETERS).from_buffer(block)
        try:
            self.driver.rm.control(params.hClient, params.hObject, params.cmd, params.params,
                                   params.paramsSize)
        except RMStatus as failure:
            params.status = failure.status
            return
        params.status = st.NV_OK

    def _map_memory(self, block: memoryview) -> None:
        wrapper = self.layout(nvos.nv_ioctl_nvos33_parameters_with_fd).from_buffer(block)
        params = wrapper.params
        try:
            memory = self.driver.rm.map_memory(params.hClient, params.hDevice, params.hMemory, params.offset,
                                               params.length)
            target = self.driver.file_of_fd(wrapper.fd)
            # osapi.c RmCreateMmapContextLocked: system memory is mapped through the control node,
            # BAR memory (VRAM, the usermode window) through the GPU's node; nv-usermap.c
            # nv_add_mapping_context_to_file looks the fd up as that kind of node
            wanted = _CTL if memory.location == "sysmem" else _DEVICE
            if not isinstance(target, NVFile) or target.kind != wanted:
                node = CTL_PATH if wanted == _CTL else "GPU node"
                what = memory.location or "registers"
                raise RMStatus(st.NV_ERR_INVALID_ARGUMENT,
                               f"fd {wrapper.fd} is not an open {node}, which a mapping of {what} needs")
            if target.mmap_context is not None:
                # nv_add_mapping_context_to_file: one mapping context per fd
                raise RMStatus(st.NV_ERR_STATE_IN_USE, f"fd {wrapper.fd} holds a mapping context already")
        except RMStatus as failure:
            params.status = failure.status
            return
        mmap_size = -(-params.length // PAGE_SIZE) * PAGE_SIZE
        # the address the RM hands back only names the mapping (the caller mmaps the fd at offset 0)
        address = FB_ADDRESS + memory.vram_offset + params.offset
        target.mmap_context = MmapContext(params.hClient, memory, params.offset, params.length, mmap_size,
                                          address)
        params.pLinearAddress = address
        params.status = st.NV_OK

    def _unmap_memory(self, block: memoryview) -> None:
        params = self.layout(nvos.NVOS34_PARAMETERS).from_buffer(block)
        try:
            client = self.driver.rm.client(params.hClient)
            self.driver.rm.object(client, params.hMemory)
        except RMStatus as failure:
            params.status = failure.status
            return
        params.status = st.NV_OK

    def _alloc_os_event(self, block: memoryview) -> None:
        # escape.c NV_ESC_ALLOC_OS_EVENT: the fd becomes an event sink for (hClient, hDevice)
        params = self.layout(esc.nv_ioctl_alloc_os_event).from_buffer(block)
        try:
            client = self.driver.rm.client(params.hClient)
            self.driver.rm.object(client, params.hDevice)
        except RMStatus as failure:
            params.Status = failure.status
            return
        params.Status = st.NV_OK

    def _register_fd(self, block: memoryview) -> None:
        # escape.c NV_ESC_REGISTER_FD (NV_ACTUAL_DEVICE_ONLY): ties this GPU fd to a control fd, once
        params = self.layout(esc.nv_ioctl_register_fd).from_buffer(block)
        ctl = self.driver.file_of_fd(params.ctl_fd)
        if not isinstance(ctl, NVFile) or ctl.kind != _CTL:
            raise OSError(errno.EINVAL, f"fd {params.ctl_fd} is not /dev/nvidiactl")
        if self.registered_ctl is not None:
            raise OSError(errno.EBUSY, f"{self.path} is registered already")
        self.registered_ctl = ctl

    # -- mmap --------------------------------------------------------------------------------------
    def mmap(self, size: int, offset: int, writable: bool) -> Region:
        # kernel-open/nvidia/nv-mmap.c nvidia_mmap_helper
        context = self.mmap_context
        if context is None:
            raise OSError(errno.EINVAL, f"{self.path}: no NV_ESC_RM_MAP_MEMORY prepared this fd")
        if offset != 0:
            raise OSError(errno.EINVAL, f"{self.path}: mmap offset must be 0, got {offset:#x}")
        memory = context.memory
        if self.kind == _DEVICE and size != context.mmap_size:
            # a GPU node maps exactly the BAR window the RM validated
            raise OSError(errno.ENXIO, f"{self.path}: mmap of {size:#x} bytes, the mapping is "
                                       f"{context.mmap_size:#x}")
        view = memoryview(memory.backing)[context.offset:context.offset + size]
        if len(view) < size:
            # the control node maps system memory pages: past the allocation's last page is ERANGE
            raise OSError(errno.ERANGE if self.kind == _CTL else errno.ENXIO,
                          f"{self.path}: mapping runs past the allocation's last page")
        if memory.cls in _USERMODE_CLASSES and self.driver.gpu_model is not None:
            region = _doorbell_region(view, self.driver.gpu_model)
        else:
            region = MemoryRegion(view, addr=context.address, owner=memory.backing)
        memory.info.setdefault("cpu_mappings", 0)
        memory.info["cpu_mappings"] += 1
        return region

    def close(self) -> None:
        # nv.c nvidia_close -> rm_cleanup_file_private: clients this fd made are freed
        if self.closed:
            return
        self.closed = True
        for handle in sorted(self.clients):
            if handle in self.driver.rm.clients:
                self.driver.rm.free(handle, handle, handle)
        self.clients.clear()


class UVMFile(MockFile):
    """An open /dev/nvidia-uvm: after UVM_INITIALIZE, one VA space with GPUs, VA spaces and ranges."""

    def __init__(self, driver: NVKernelDriver, path: str) -> None:
        super().__init__(path)
        self.driver = driver
        self.initialized = False
        self.gpus: set[bytes] = set()
        self.gpu_va_spaces: dict[bytes, tuple[int, int]] = {}  # uuid -> (hClient, hVaSpace)
        self.external_ranges: dict[int, int] = {}  # base -> length
        self.mappings: dict[int, tuple[int, int, RMObject]] = {}  # base -> (length, offset, memory)
        self.channels: dict[tuple[int, int], tuple[int, int]] = {}  # (hClient, hChannel) -> (base, length)

    def close(self) -> None:
        # uvm.c uvm_release -> uvm_va_space.c uvm_va_space_destroy: the fd's VA space goes with it (its
        # channels stopped and detached, every VA range destroyed, its GPUs unregistered), so the GPU
        # translates nothing through it any more; this object stays as the record of what the
        # process had left in it (tests read it)
        if self in self.driver.uvm_spaces:
            self.driver.uvm_spaces.remove(self)

    def ioctl(self, request: int, arg) -> int:
        handlers = {
            uvm.UVM_INITIALIZE: (uvm.UVM_INITIALIZE_PARAMS, self._initialize),
            uvm.UVM_REGISTER_GPU: (uvm.UVM_REGISTER_GPU_PARAMS, self._register_gpu),
            uvm.UVM_UNREGISTER_GPU: (uvm.UVM_UNREGISTER_GPU_PARAMS, self._unregister_gpu),
            uvm.UVM_REGISTER_GPU_VASPACE: (uvm.UVM_REGISTER_GPU_VASPACE_PARAMS, self._register_va_space),
            uvm.UVM_CREATE_EXTERNAL_RANGE: (uvm.UVM_CREATE_EXTERNAL_RANGE_PARAMS,
                                            self._create_external_range),
            uvm.UVM_MAP_EXTERNAL_ALLOCATION: (uvm.UVM_MAP_EXTERNAL_ALLOCATION_PARAMS, self._map_external),
            uvm.UVM_FREE: (uvm.UVM_FREE_PARAMS, self._free),
            uvm.UVM_REGISTER_CHANNEL: (uvm.UVM_REGISTER_CHANNEL_PARAMS, self._register_channel),
            uvm.UVM_UNREGISTER_CHANNEL: (uvm.UVM_UNREGISTER_CHANNEL_PARAMS, self._unregister_channel),
        }
        entry = handlers.get(request)
        if entry is None:
            # uvm.c uvm_ioctl: a command it does not route is -EINVAL
            raise OSError(errno.EINVAL, f"{self.path}: UVM command {request:#x} is not modelled")
        params_type, handler = entry
        params_type = nv_branch.layout(params_type, self.driver.branch)
        params = params_type.from_buffer(_block(arg, params_type.SIZE))
        if request != uvm.UVM_INITIALIZE and not self.initialized:
            # uvm_api.h UVM_ROUTE_CMD_*_INIT_CHECK: the fd has no VA space yet
            params.rmStatus = st.NV_ERR_ILLEGAL_ACTION
            return 0
        try:
            handler(params)
        except RMStatus as failure:
            params.rmStatus = failure.status
            return 0
        params.rmStatus = st.NV_OK
        return 0

    def _initialize(self, params) -> None:
        # uvm.c uvm_api_initialize: a second initialize with the same flags is fine
        self.initialized = True
        if self not in self.driver.uvm_spaces:
            self.driver.uvm_spaces.append(self)

    def _uuid_known(self, uuid: bytes) -> None:
        if uuid != self.driver.rm.uuid:
            # uvm_gpu.c uvm_gpu_retain_by_uuid: no GPU with that UUID
            raise RMStatus(st.NV_ERR_GPU_UUID_NOT_FOUND, f"no GPU with UUID {uuid.hex()}")

    def _register_gpu(self, params) -> None:
        uuid = bytes(params.gpu_uuid.uuid)
        self._uuid_known(uuid)
        if uuid in self.gpus:
            # uvm_va_space.c uvm_va_space_register_gpu: registered in this VA space already
            raise RMStatus(st.NV_ERR_INVALID_DEVICE, "GPU registered already")
        self.gpus.add(uuid)

    def _unregister_gpu(self, params) -> None:
        uuid = bytes(params.gpu_uuid.uuid)
        if uuid not in self.gpus:
            raise RMStatus(st.NV_ERR_INVALID_DEVICE, "GPU is not registered")
        self.gpus.discard(uuid)
        self.gpu_va_spaces.pop(uuid, None)

    def _register_va_space(self, params) -> None:
        uuid = bytes(params.gpuUuid.uuid)
        if uuid not in self.gpus:
            # uvm_va_space.c uvm_va_space_register_gpu_va_space: the GPU must be registered first
            raise RMStatus(st.NV_ERR_INVALID_DEVICE, "GPU is not registered in this VA space")
        rm = self.driver.rm
        ctl = self.driver.file_of_fd(params.rmCtrlFd)
        if not isinstance(ctl, NVFile) or ctl.kind != _CTL:
            raise RMStatus(st.NV_ERR_INVALID_ARGUMENT, f"rmCtrlFd {params.rmCtrlFd} is not /dev/nvidiactl")
        client = rm.client(params.hClient)
        vaspace = rm.object(client, params.hVaSpace)
        if vaspace.cls != cl.FERMI_VASPACE_A:
            # uvm_gpu.c / nv_gpu_ops.c nvGpuOpsAddressSpaceCreate: hVaSpace must be a FERMI_VASPACE_A
            raise RMStatus(st.NV_ERR_INVALID_OBJECT_HANDLE, "hVaSpace is not a VA space")
        if uuid in self.gpu_va_spaces:
            # uvm_va_space.c: one GPU VA space per GPU
            raise RMStatus(st.NV_ERR_INVALID_DEVICE, "a GPU VA space is registered for this GPU already")
        self.gpu_va_spaces[uuid] = (params.hClient, params.hVaSpace)

    def _create_external_range(self, params) -> None:
        base, length = params.base, params.length
        if _range_invalid(base, length, PAGE_SIZE):
            # uvm_map_external.c uvm_create_external_range: uvm_api_range_invalid_4k
            raise RMStatus(st.NV_ERR_INVALID_ADDRESS, f"{base:#x}+{length:#x} is not a 4K range")
        for start, size in [*self.external_ranges.items(), *self.channels.values()]:
            if base < start + size and start < base + length:
                # uvm_range_tree.c uvm_range_tree_add: overlaps an existing range
                raise RMStatus(st.NV_ERR_UVM_ADDRESS_IN_USE, f"{base:#x}+{length:#x} overlaps {start:#x}")
        self.external_ranges[base] = length

    def _map_external(self, params) -> None:
        base, length = params.base, params.length
        if _range_invalid(base, length, PAGE_SIZE):
            raise RMStatus(st.NV_ERR_INVALID_ADDRESS, f"{base:#x}+{length:#x} is not a 4K range")
        count = params.gpuAttributesCount
        if count == 0 or count > len(params.perGpuAttributes):
            # uvm_map_external.c uvm_api_map_external_allocation: 1..UVM_MAX_GPUS attributes
            raise RMStatus(st.NV_ERR_INVALID_ARGUMENT, f"gpuAttributesCount {count}")
        start = next((s for s, size in self.external_ranges.items() if s <= base < s + size), None)
        if start is None or base + length > start + self.external_ranges[start]:
            # uvm_api_map_external_allocation: the span must lie in one external range
            raise RMStatus(st.NV_ERR_INVALID_ADDRESS, f"{base:#x}+{length:#x} is in no external range")
        for index in range(count):
            uuid = bytes(params.perGpuAttributes[index].gpuUuid.uuid)
            if uuid not in self.gpu_va_spaces:
                # uvm_va_space_get_gpu_by_uuid_with_gpu_va_space: the GPU needs a registered VA space
                raise RMStatus(st.NV_ERR_INVALID_DEVICE, "GPU has no registered VA space here")
        rm = self.driver.rm
        client = rm.client(params.hClient)
        memory = rm.object(client, params.hMemory)
        if memory.backing is None or memory.location == "":
            raise RMStatus(st.NV_ERR_INVALID_OBJECT_HANDLE, f"{params.hMemory:#x} is not memory")
        if params.offset + length > memory.size:
            # uvm_map_external.c: the mapping runs past the allocation
            raise RMStatus(st.NV_ERR_INVALID_OFFSET, f"offset {params.offset:#x}+{length:#x} past "
                                                     f"{memory.size:#x}")
        self.mappings[base] = (length, params.offset, memory)

    def _free(self, params) -> None:
        base = params.base
        if "length" in params.FIELDS:
            length = params.length
            if _range_invalid(base, length, PAGE_SIZE) or self.external_ranges.get(base) != length:
                # uvm_va_range.c uvm_free (to 580): the range must be exactly one that exists
                raise RMStatus(st.NV_ERR_INVALID_ADDRESS, f"no range {base:#x}+{length:#x}")
        else:
            # 590 uvm_va_range.c uvm_free(va_space, base): the range that starts at base, whatever
            # its length (590's UVM_FREE_PARAMS has no length)
            length = self.external_ranges.get(base, 0)
            if length == 0:
                raise RMStatus(st.NV_ERR_INVALID_ADDRESS, f"no range starts at {base:#x}")
        del self.external_ranges[base]
        for start in [s for s in self.mappings if base <= s < base + length]:
            del self.mappings[start]

    def _register_channel(self, params) -> None:
        # uvm_user_channel.c uvm_register_channel / uvm_user_channel_create
        uuid = bytes(params.gpuUuid.uuid)
        if uuid not in self.gpu_va_spaces:
            raise RMStatus(st.NV_ERR_INVALID_DEVICE, "GPU has no registered VA space here")
        rm = self.driver.rm
        client = rm.client(params.hClient)
        channel = client.objects.get(params.hChannel)
        if channel is None or channel.cls not in (cl.AMPERE_CHANNEL_GPFIFO_A, cl.HOPPER_CHANNEL_GPFIFO_A):
            # nv_gpu_ops.c nvGpuOpsVerifyChannel: CliGetKernelChannel finds no channel
            raise RMStatus(st.NV_ERR_INVALID_OBJECT_HANDLE, f"{params.hChannel:#x} is not a channel")
        key = (params.hClient, params.hChannel)
        if key in self.channels:
            # uvm_register_channel_under_write: find_user_channel found it registered
            raise RMStatus(st.NV_ERR_INVALID_CHANNEL, "channel registered already")
        base, length = params.base, params.length
        if _range_invalid(base, length, PAGE_SIZE):
            # uvm_user_channel_create: uvm_api_range_invalid for a channel with context buffers
            raise RMStatus(st.NV_ERR_INVALID_ADDRESS, f"{base:#x}+{length:#x} is not a page range")
        if base + length - 1 >= self.driver.gpu.max_channel_va:
            # uvm_register_channel_under_write: the end must be below parent_gpu->max_channel_va
            limit = self.driver.gpu.max_channel_va
            raise RMStatus(st.NV_ERR_OUT_OF_RANGE, f"channel range ends past {limit:#x}")
        taken = [*self.external_ranges.items(), *self.channels.values()]
        if any(base < start + size and start < base + length for start, size in taken):
            # create_va_ranges -> uvm_range_tree_add: overlaps an existing range
            raise RMStatus(st.NV_ERR_UVM_ADDRESS_IN_USE, f"{base:#x}+{length:#x} overlaps a range")
        self.channels[key] = (base, length)

    def _unregister_channel(self, params) -> None:
        # uvm_user_channel.c uvm_unregister_channel: find_user_channel or NV_ERR_INVALID_CHANNEL
        if self.channels.pop((params.hClient, params.hChannel), None) is None:
            raise RMStatus(st.NV_ERR_INVALID_CHANNEL, f"channel {params.hChannel:#x} is not registered")

    def gpu_translate(self, address: int) -> tuple[RMObject, int] | None:
        """(memory, offset) behind a GPU virtual address (mockgpu/nv/gpu.py reads through it)."""
        for start, (length, offset, memory) in self.mappings.items():
            if start <= address < start + length:
                return memory, offset + address - start
        return None


def _range_invalid(base: int, length: int, alignment: int) -> bool:
    # kernel-open/nvidia-uvm/uvm_api.h uvm_api_range_invalid_aligned
    return (base % alignment != 0 or length % alignment != 0 or base == 0 or length == 0
            or base + length >= 1 << 64)


_USERMODE_CLASSES = (cl.VOLTA_USERMODE_A, cl.TURING_USERMODE_A, cl.AMPERE_USERMODE_A, cl.HOPPER_USERMODE_A)


def _doorbell_region(view: memoryview, gpu) -> Region:
    """The usermode window: plain memory, except that a 32-bit write of a work-submit token to
    NOTIFY_CHANNEL_PENDING (clc361.h) makes the GPU model fetch that channel's work."""
    def read(offset: int, size: int) -> bytes:
        return bytes(view[offset:offset + size])

    def write(offset: int, data: bytes) -> None:
        view[offset:offset + len(data)] = data
        if offset == cl.NVC361_NOTIFY_CHANNEL_PENDING and len(data) == 4:
            gpu.doorbell(int.from_bytes(data, "little"))

    return CallbackRegion(len(view), read, write)


def install(machine, gpu: GPUIdentity = H100_SXM, version: str = DEFAULT_VERSION,
            proc_version: bool = True) -> NVKernelDriver:
    """Load the simulated nvidia and nvidia-uvm modules on `machine`; returns the driver (its
    `gpu_model` is the simulated GPU, mockgpu.nv.gpu). `proc_version=False` leaves out
    /proc/driver/nvidia/version."""
    from mockgpu.nv.gpu import GPUModel

    driver = NVKernelDriver(machine, gpu, version, proc_version)
    driver.gpu_model = GPUModel(driver)
    machine.extra_files.update(driver.files())
    machine.nvidia = driver
    return driver
