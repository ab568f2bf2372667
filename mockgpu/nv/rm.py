"""The simulated resource manager (RM): clients, their object trees, the class and parent rules,
memory objects backed by simulated VRAM or system memory, CPU mapping contexts and controls.

Facts come from the 535.261.03 open kernel modules (src/nvidia/src/...); each rule cites the place
that enforces it. Statuses are returned as NV_STATUS values, as the RM writes them into the caller's
parameter block; the escape layer (mockgpu.nv.driver) turns malformed ioctls into errnos first.
"""
from __future__ import annotations

import dataclasses
import importlib
import itertools
import mmap
import struct
import time
from typing import Callable

from autogen.nv.r535 import classes as cl
from autogen.nv.r535 import ctrl
from autogen.nv.r535 import nvos
from autogen.nv.r535 import status as st
from hal.os import PAGE_SIZE
from mockgpu.nv import branch as nv_branch
from mockgpu.nv.gpus import GPUIdentity

# src/nvidia/inc/libraries/resserv/resserv.h RS_CLIENT_HANDLE_BASE: where the RM numbers clients
CLIENT_HANDLE_BASE = 0xC1D00000
# src/nvidia/inc/libraries/resserv/rs_client.h RS_UNIQUE_HANDLE_BASE: handles made up for hObjectNew 0
UNIQUE_HANDLE_BASE = 0xCAF00000
# VRAM the RM keeps for itself (instance memory, page tables, GSP heap); not handed out to clients
RM_RESERVED_VRAM = 512 << 20  # order of magnitude of the GSP-RM heap on Hopper (gsp_fw_heap.h)

# ctrl2080gpu.h NV2080_GPU_CMD_GPU_GET_GID_FLAGS_FORMAT is the field 1:0 (a DRF range autogen skips)
GID_FLAGS_FORMAT_MASK = 0x3
# the simulated chips' stepping as MC_GET_ARCH_INFO reports it (A1: revision major 0xA, minor 1)
CHIP_REVISION = 0xA1
# src/nvidia/inc/kernel/rmapi/param_copy.h RMAPI_PARAM_COPY_MAX_PARAMS_SIZE: the most bytes
# rmapiParamsAcquire copies in for one pointed-to block
PARAM_COPY_MAX_SIZE = 1 << 20
U32_LIMIT = 1 << 32  # portSafeMulU32: the element count times the element size must fit 32 bits
ROOT = "root"  # RS_ROOT_OBJECT: only a client has no parent
ANY = "any"  # RS_ANY_PARENT

_CLIENT = (nvos.NV01_ROOT_CLIENT,)
_DEVICE = (cl.NV01_DEVICE_0,)
_SUBDEVICE = (cl.NV20_SUBDEVICE_0,)
_CHANNEL_GROUP = (cl.KEPLER_CHANNEL_GROUP_A,)
_CHANNELS = (cl.AMPERE_CHANNEL_GPFIFO_A, cl.HOPPER_CHANNEL_GPFIFO_A)
_USERMODES = (cl.VOLTA_USERMODE_A, cl.TURING_USERMODE_A, cl.AMPERE_USERMODE_A, cl.HOPPER_USERMODE_A)
_COMPUTES = (cl.AMPERE_COMPUTE_A, cl.AMPERE_COMPUTE_B, cl.ADA_COMPUTE_A, cl.HOPPER_COMPUTE_A)
_COPIES = (cl.AMPERE_DMA_COPY_A, cl.AMPERE_DMA_COPY_B, cl.HOPPER_DMA_COPY_A)
_MEMORIES = (cl.NV01_MEMORY_LOCAL_USER, cl.NV01_MEMORY_SYSTEM)


# memory objects from this size up are backed by anonymous mappings, whose pages the host zeroes only
# when touched: a local memory buffer (a slice per TPC of the die, 70-170 MiB) that no access of
# the model reaches then costs nothing
LAZY_BACKING_MIN = 1 << 21


def _zeroed(size: int):
    """`size` zero bytes that slice, assign and export buffers like a bytearray."""
    if size >= LAZY_BACKING_MIN:
        return mmap.mmap(-1, size)
    return bytearray(size)


@dataclasses.dataclass(frozen=True)
class ClassRule:
    """One RS_ENTRY of src/nvidia/src/kernel/rmapi/resource_list.h: who may be the parent, the
    allocation parameters (`params` None: RS_NONE) and whether they are RS_REQUIRED."""

    parents: tuple[int, ...] | str
    params: type | None = None
    required: bool = False


# resource_list.h, the entries of the classes this mock models
RULES: dict[int, ClassRule] = {
    nvos.NV01_ROOT_CLIENT: ClassRule(ROOT),
    cl.NV01_DEVICE_0: ClassRule(_CLIENT, cl.NV0080_ALLOC_PARAMETERS),
    cl.NV20_SUBDEVICE_0: ClassRule(_DEVICE, cl.NV2080_ALLOC_PARAMETERS),
    cl.FERMI_VASPACE_A: ClassRule(_DEVICE + _SUBDEVICE, nvos.NV_VASPACE_ALLOCATION_PARAMETERS, True),
    cl.NV01_MEMORY_LOCAL_USER: ClassRule(_DEVICE + _SUBDEVICE, nvos.NV_MEMORY_ALLOCATION_PARAMS, True),
    cl.NV01_MEMORY_SYSTEM: ClassRule(_DEVICE, nvos.NV_MEMORY_ALLOCATION_PARAMS, True),
    cl.KEPLER_CHANNEL_GROUP_A: ClassRule(_DEVICE, nvos.NV_CHANNEL_GROUP_ALLOCATION_PARAMETERS, True),
    cl.FERMI_CONTEXT_SHARE_A: ClassRule(_CHANNEL_GROUP, nvos.NV_CTXSHARE_ALLOCATION_PARAMETERS, True),
    nvos.NV01_EVENT_OS_EVENT: ClassRule(ANY, cl.NV0005_ALLOC_PARAMETERS, True),
    **{channel: ClassRule(_DEVICE + _CHANNEL_GROUP, cl.NV_CHANNEL_ALLOC_PARAMS, True)
       for channel in _CHANNELS},
    **{usermode: ClassRule(_SUBDEVICE) for usermode in _USERMODES[:3]},
    cl.HOPPER_USERMODE_A: ClassRule(_SUBDEVICE, nvos.NV_HOPPER_USERMODE_A_PARAMS),
    **{compute: ClassRule(_CHANNELS, nvos.NV_GR_ALLOCATION_PARAMETERS) for compute in _COMPUTES},
    # RS_OPTIONAL(NVB0B5_ALLOCATION_PARAMETERS): { NvU32 version; NvU32 engineType; }
    **{copy: ClassRule(_CHANNELS) for copy in _COPIES},
}

# classes that are no GPU's (not in g_gpu_class_list.c): allowed whatever the GPU
GPU_INDEPENDENT = frozenset((nvos.NV01_ROOT_CLIENT, nvos.NV01_EVENT_OS_EVENT))

# resource_list.h "Resource Free Priority": RS_FREE_PRIORITY_HIGH objects of a client go first when
# the client is freed (serverFreeClient frees them before the rest of the tree)
FREE_FIRST = frozenset((cl.KEPLER_CHANNEL_GROUP_A, *_CHANNELS))


class RMStatus(Exception):
    """An RM call ends with this NV_STATUS (carried back into the parameter block)."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


@dataclasses.dataclass(eq=False)
class RMObject:
    """One resource: handle, class, parent and children, plus what its class keeps."""

    handle: int
    cls: int
    parent: "RMObject | None" = dataclasses.field(repr=False)
    children: dict[int, "RMObject"] = dataclasses.field(default_factory=dict, repr=False)
    params: bytes = dataclasses.field(default=b"", repr=False)
    # memory (a bytearray, or an anonymous mmap from LAZY_BACKING_MIN up), usermode windows
    backing: bytearray | mmap.mmap | None = dataclasses.field(default=None, repr=False)
    size: int = 0
    location: str = ""  # "vram" or "sysmem" for memory objects
    vram_offset: int = 0
    info: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class MmapContext:
    """What NV_ESC_RM_MAP_MEMORY leaves on the fd it names (nv-mmap.c nv_alloc_mapping_context_t)."""

    client: int
    memory: RMObject
    offset: int
    length: int
    mmap_size: int
    address: int


class Client:
    """An RM client (NV01_ROOT_CLIENT) and the handles it owns."""

    def __init__(self, handle: int) -> None:
        self.root = RMObject(handle, nvos.NV01_ROOT_CLIENT, None)
        self.objects: dict[int, RMObject] = {handle: self.root}
        self._next_handle = itertools.count(UNIQUE_HANDLE_BASE)

    def new_handle(self) -> int:
        """rs_client.c clientGenResourceHandle: the next unused handle from RS_UNIQUE_HANDLE_BASE."""
        while True:
            handle = next(self._next_handle)
            if handle not in self.objects:
                return handle


class ResourceManager:
    """The RM of one simulated machine with one GPU (instance 0)."""

    def __init__(self, gpu: GPUIdentity, read_user: Callable[[int, int], bytes | None],
                 write_user: Callable[[int, bytes], bool], branch: str = nv_branch.BASE_BRANCH) -> None:
        self.gpu = gpu
        self.branch = branch  # whose parameter-block layouts this RM reads (mockgpu.nv.branch)
        self.read_user = read_user  # copy_from_user: None when the address is not mapped
        self.write_user = write_user
        self.clients: dict[int, Client] = {}
        self._next_client = itertools.count(CLIENT_HANDLE_BASE)
        self.vram_free = gpu.vram_size - RM_RESERVED_VRAM
        self.vram_used = 0
        self._vram_cursor = 0
        self.uuid = bytes(range(0x10, 0x20))  # the GPU's 16-byte UUID, made up per machine
        self.work_submit_tokens = itertools.count(1)
        self.freed_log: list[tuple[int, int]] = []  # (handle, class), in the order the RM freed them
        self.scheduled_groups: set[tuple[int, int]] = set()

    # -- lookups ---------------------------------------------------------------------------------
    def client(self, handle: int) -> Client:
        found = self.clients.get(handle)
        if found is None:
            # rs_server.c _serverFindClientEntry: no such client handle
            raise RMStatus(st.NV_ERR_INVALID_OBJECT_HANDLE, f"no client {handle:#x}")
        return found

    def object(self, client: Client, handle: int) -> RMObject:
        found = client.objects.get(handle)
        if found is None:
            # rs_client.c clientGetResourceRef: the handle is not in this client's map
            raise RMStatus(st.NV_ERR_OBJECT_NOT_FOUND,
                           f"no object {handle:#x} in client {client.root.handle:#x}")
        return found

    def live_objects(self) -> int:
        return sum(len(client.objects) for client in self.clients.values())

    # -- alloc -------------------------------------------------------------------------------------
    def alloc(self, h_root: int, h_parent: int, h_new: int, h_class: int, params_ptr: int) -> int:
        """NV_ESC_RM_ALLOC (Nv04AllocWithSecInfo -> rmapiAllocWithSecInfo): returns the new handle."""
        rule = RULES.get(h_class)
        if rule is None:
            # alloc_free.c serverAllocResourceUnderLock: RsResInfoByExternalClassId found nothing
            raise RMStatus(st.NV_ERR_INVALID_CLASS, f"class {h_class:#x} is not one the RM knows")
        params = self._copy_in_params(rule, h_class, params_ptr)
        if h_class == nvos.NV01_ROOT_CLIENT:
            return self._alloc_client(h_new)
        client = self.client(h_root)
        parent = self.object(client, h_parent)
        if rule.parents != ANY and parent.cls not in rule.parents:
            # alloc_free.c serverAllocResourceUnderLock: "Check if hParent is an allowed parent"
            raise RMStatus(st.NV_ERR_INVALID_OBJECT_PARENT,
                           f"class {h_class:#x} cannot have a parent of class {parent.cls:#x}")
        if h_class not in self.gpu.classes and h_class not in GPU_INDEPENDENT:
            # the GPU's class list (g_gpu_class_list.c) lacks it: gpuGetClassByClassId fails and
            # the allocation is NV_ERR_INVALID_CLASS
            raise RMStatus(st.NV_ERR_INVALID_CLASS,
                           f"class {h_class:#x} is not supported by {self.gpu.name} ({self.gpu.chip})")
        if h_new == 0:
            h_new = client.new_handle()
        elif h_new == client.root.handle:
            # rs_client.c clientValidateNewResourceHandle: not the client's own handle
            raise RMStatus(st.NV_ERR_INVALID_OBJECT_HANDLE, "a resource cannot take the client's handle")
        elif h_new in client.objects:
            # rs_client.c clientValidateNewResourceHandle: handles are unique per client
            raise RMStatus(st.NV_ERR_INSERT_DUPLICATE_NAME, f"handle {h_new:#x} is in use")
        obj = RMObject(h_new, h_class, parent, params=params)
        self._construct(client, obj, params, params_ptr)
        parent.children[h_new] = obj
        client.objects[h_new] = obj
        return h_new

    def _copy_in_params(self, rule: ClassRule, h_class: int, params_ptr: int) -> bytes:
        """param_copy.c rmapiParamsCopyInit/rmapiParamsAcquire: the class's own parameter size is
        copied from the caller; a required block with a NULL pointer is NV_ERR_INVALID_ARGUMENT."""
        if rule.params is None or params_ptr == 0:
            if rule.required:
                raise RMStatus(st.NV_ERR_INVALID_ARGUMENT,
                               f"class {h_class:#x} needs allocation parameters and got NULL")
            return b""
        data = self.read_user(params_ptr, self.layout(rule.params).SIZE)
        if data is None:
            # rmapiParamsAcquire: the copy from the user pointer failed
            raise RMStatus(st.NV_ERR_INVALID_POINTER, f"allocation parameters at {params_ptr:#x} unreadable")
        return data

    def _alloc_client(self, h_new: int) -> int:
        # client.c / rs_server.c serverAllocClient: 0 asks the RM for a handle; a taken one is a
        # duplicate
        if h_new == 0:
            h_new = next(self._next_client)
            while h_new in self.clients:
                h_new = next(self._next_client)
        elif h_new in self.clients:
            raise RMStatus(st.NV_ERR_INSERT_DUPLICATE_NAME, f"client {h_new:#x} exists")
        self.clients[h_new] = Client(h_new)
        return h_new

    def _construct(self, client: Client, obj: RMObject, params: bytes, params_ptr: int) -> None:
        """The class's constructor: the checks and state this mock keeps per class."""
        if obj.cls == cl.NV01_DEVICE_0 and params:
            device = self.layout(cl.NV0080_ALLOC_PARAMETERS).from_bytes(params)
            if device.deviceId != 0:
                # device.c deviceConstruct: no GPU at that device instance
                raise RMStatus(st.NV_ERR_INVALID_ARGUMENT, f"no device instance {device.deviceId}")
        elif obj.cls == cl.NV20_SUBDEVICE_0 and params:
            if self.layout(cl.NV2080_ALLOC_PARAMETERS).from_bytes(params).subDeviceId != 0:
                # subdevice.c subdeviceConstruct: one subdevice per device here (no SLI)
                raise RMStatus(st.NV_ERR_INVALID_ARGUMENT, "no such subdevice")
        elif obj.cls == cl.FERMI_VASPACE_A:
            vaspace = self.layout(nvos.NV_VASPACE_ALLOCATION_PARAMETERS).from_bytes(params)
            obj.info["va_base"] = vaspace.vaBase
            obj.info["va_size"] = vaspace.vaSize
        elif obj.cls in _MEMORIES:
            self._construct_memory(obj, params, params_ptr)
        elif obj.cls in _USERMODES:
            # clc361.h NVC361_NV_USERMODE__SIZE: the usermode register window (doorbell)
            obj.backing = bytearray(cl.NVC361_NV_USERMODE__SIZE)
            obj.size = cl.NVC361_NV_USERMODE__SIZE
        elif obj.cls in _CHANNELS:
            self._construct_channel(client, obj, params)
        elif obj.cls == cl.FERMI_CONTEXT_SHARE_A:
            share = self.layout(nvos.NV_CTXSHARE_ALLOCATION_PARAMETERS).from_bytes(params)
            vaspace = client.objects.get(share.hVASpace)
            if share.hVASpace and (vaspace is None or vaspace.cls != cl.FERMI_VASPACE_A):
                # kernel_ctxshare.c kctxshareapiConstruct: hVASpace must name a VA space
                raise RMStatus(st.NV_ERR_INVALID_OBJECT_HANDLE, f"{share.hVASpace:#x} is not a VA space")

    def _construct_memory(self, obj: RMObject, params: bytes, params_ptr: int) -> None:
        alloc = self.layout(nvos.NV_MEMORY_ALLOCATION_PARAMS).from_bytes(params)
        if alloc.size == 0:
            # video_mem.c / system_mem.c: a zero-sized allocation is refused
            raise RMStatus(st.NV_ERR_INVALID_ARGUMENT, "memory allocation of size 0")
        alignment = max(alloc.alignment, PAGE_SIZE)
        size = -(-alloc.size // PAGE_SIZE) * PAGE_SIZE
        obj.size = size
        if obj.cls == cl.NV01_MEMORY_LOCAL_USER:
            if size > self.vram_free - self.vram_used:
                # video_mem.c vidmemConstruct: the heap (PMA) cannot place it
                raise RMStatus(st.NV_ERR_NO_MEMORY, f"{size:#x} bytes of VRAM asked, "
                                                    f"{self.vram_free - self.vram_used:#x} free")
            self._vram_cursor = -(-self._vram_cursor // alignment) * alignment
            obj.vram_offset = self._vram_cursor
            self._vram_cursor += size
            self.vram_used += size
            obj.location = "vram"
        else:
            obj.location = "sysmem"
        obj.backing = _zeroed(size)
        # the RM reports what it did in the caller's block (size rounded, offset, limit)
        alloc.size = size
        alloc.offset = obj.vram_offset
        alloc.limit = size - 1
        self.write_user(params_ptr, bytes(alloc))

    def _construct_channel(self, client: Client, obj: RMObject, params: bytes) -> None:
        channel = self.layout(cl.NV_CHANNEL_ALLOC_PARAMS).from_bytes(params)
        for name in ("hObjectError", "hObjectBuffer"):
            handle = getattr(channel, name)
            if handle and handle not in client.objects:
                # kernel_channel.c kchannelConstruct: the error notifier and push buffer must exist
                raise RMStatus(st.NV_ERR_OBJECT_NOT_FOUND, f"{name} {handle:#x} is not an object")
        userd = channel.hUserdMemory[0]
        if userd and userd not in client.objects:
            raise RMStatus(st.NV_ERR_OBJECT_NOT_FOUND, f"hUserdMemory {userd:#x} is not an object")
        if channel.gpFifoEntries == 0 or channel.gpFifoEntries & (channel.gpFifoEntries - 1):
            # kernel_channel.c kchannelConstruct: the GPFIFO length must be a power of two
            raise RMStatus(st.NV_ERR_INVALID_ARGUMENT, f"gpFifoEntries {channel.gpFifoEntries} "
                                                       f"is not a power of two")
        obj.info["gpfifo_offset"] = channel.gpFifoOffset
        obj.info["gpfifo_entries"] = channel.gpFifoEntries
        obj.info["userd"] = (userd, channel.userdOffset[0])
        obj.info["work_submit_token"] = next(self.work_submit_tokens)

    # -- free --------------------------------------------------------------------------------------
    def free(self, h_root: int, h_parent: int, h_object: int) -> None:
        """NV_ESC_RM_FREE (Nv01FreeWithSecInfo): the object and everything below it."""
        client = self.client(h_root)
        if h_object == h_root:
            # rs_server.c serverFreeClient: freeing the client handle frees the whole client,
            # RS_FREE_PRIORITY_HIGH objects (channels, channel groups) first
            for obj in [o for o in client.objects.values() if o.cls in FREE_FIRST and o.parent
                        and o.parent.cls not in FREE_FIRST]:
                self._free_tree(client, obj)
            for child in list(client.root.children.values()):
                self._free_tree(client, child)
            self.freed_log.append((h_root, nvos.NV01_ROOT_CLIENT))
            del self.clients[h_root]
            return
        obj = self.object(client, h_object)
        self._free_tree(client, obj)

    def _free_tree(self, client: Client, obj: RMObject) -> None:
        # rs_server.c serverFreeResourceTree: dependants first (depth first), then the object
        for child in list(obj.children.values()):
            self._free_tree(client, child)
        if obj.location == "vram":
            self.vram_used -= obj.size
        if obj.cls == cl.KEPLER_CHANNEL_GROUP_A:
            self.scheduled_groups.discard((client.root.handle, obj.handle))
        obj.info["freed"] = True
        if obj.parent is not None:
            obj.parent.children.pop(obj.handle, None)
        client.objects.pop(obj.handle, None)
        self.freed_log.append((obj.handle, obj.cls))

    def layout(self, struct: type) -> type:
        """`struct` (an r535 type) as this RM's driver branch lays it out."""
        return nv_branch.layout(struct, self.branch)

    # -- controls ----------------------------------------------------------------------------------
    def control(self, h_client: int, h_object: int, cmd: int, params_ptr: int, params_size: int) -> None:
        """NV_ESC_RM_CONTROL (Nv04ControlWithSecInfo) for the commands this mock serves."""
        extra: tuple = ()
        embedded = EMBEDDED_LISTS.get(cmd)
        if embedded is not None:
            # rs_server.c serverControl: with bUnlockedParamCopy (rmapi.c sets it) the parameters
            # and the blocks they point to are copied in (serverControlApiCopyIn) before the client
            # and the object are looked up
            extra = (self._copy_in_embedded(cmd, embedded, params_ptr, params_size),)
        client = self.client(h_client)
        obj = self.object(client, h_object)
        entry = CONTROLS.get(cmd)
        if entry is None or obj.cls not in entry[0]:
            # rs_resource.c resControlLookup: no such method on that class
            raise RMStatus(st.NV_ERR_NOT_SUPPORTED, f"control {cmd:#x} on class {obj.cls:#x}")
        owner_classes, params_type, handler = entry
        # rs_resource.c resControlLookup: paramsSize must equal the method's parameter size
        params = self._read_params(cmd, params_type, params_ptr, params_size, st.NV_ERR_INVALID_PARAM_STRUCT)
        handler(self, client, obj, params, *extra)
        if extra and extra[0].pointer:
            # serverControlApiCopyOut -> embeddedParamCopyOut -> rmapiParamsRelease: the block goes
            # back to the caller only when the control succeeded (an error skips the copy-out)
            self.write_user(extra[0].pointer, bytes(extra[0].data))
        self.write_user(params_ptr, bytes(params))

    def _read_params(self, cmd: int, params_type: type, params_ptr: int, params_size: int,
                     wrong_size: int):
        """A control's parameter block (`params_type` in this branch's layout) from the caller's
        memory: another size than the command's is `wrong_size`, an unreadable pointer
        NV_ERR_INVALID_POINTER."""
        params_type = self.layout(params_type)
        if params_size != params_type.SIZE:
            raise RMStatus(wrong_size,
                           f"control {cmd:#x}: paramsSize {params_size}, expected {params_type.SIZE}")
        data = self.read_user(params_ptr, params_size)
        if data is None:
            raise RMStatus(st.NV_ERR_INVALID_POINTER, f"control parameters at {params_ptr:#x} unreadable")
        return params_type.from_bytes(data)

    def _copy_in_embedded(self, cmd: int, embedded: "EmbeddedList", params_ptr: int,
                          params_size: int) -> "EmbeddedBlock":
        """embedded_param_copy.c embeddedParamCopyIn for `cmd`, then param_copy.c rmapiParamsAcquire
        on the block the parameters point to."""
        # embedded_param_copy.c CHECK_PARAMS_OR_RETURN: NULL or another size than the command's
        params = self._read_params(cmd, embedded.params, params_ptr, params_size, st.NV_ERR_INVALID_ARGUMENT)
        count = getattr(params, embedded.count_field)
        pointer = getattr(params, embedded.pointer_field)
        size = count * self.layout(embedded.element).SIZE
        # RMAPI_PARAM_COPY_INIT: portSafeMulU32(count, element size) must not overflow (bSizeValid);
        # rmapiParamsAcquire: a size needs a pointer and a pointer a size
        if size >= U32_LIMIT or (size != 0) != (pointer != 0):
            raise RMStatus(st.NV_ERR_INVALID_ARGUMENT, f"control {cmd:#x}: {embedded.pointer_field} "
                                                       f"{pointer:#x} with {embedded.count_field} {count}")
        if size > PARAM_COPY_MAX_SIZE:
            # rmapiParamsAcquire: RMAPI_PARAM_COPY_MAX_PARAMS_SIZE
            raise RMStatus(st.NV_ERR_INVALID_ARGUMENT,
                           f"control {cmd:#x}: {size} bytes at {embedded.pointer_field}, "
                           f"at most {PARAM_COPY_MAX_SIZE}")
        block = b""
        if size:
            block = self.read_user(pointer, size)
            if block is None:
                # portMemExCopyFromUser -> os_memcpy_from_user (os-interface.c): NV_ERR_INVALID_ADDRESS
                raise RMStatus(st.NV_ERR_INVALID_ADDRESS,
                               f"control {cmd:#x}: {size} bytes at {pointer:#x} unreadable")
        return EmbeddedBlock(pointer, count, bytearray(block))

    def branch_constant(self, name: str) -> int:
        """A number of this RM's branch that differs between branches (NV2080_CTRL_GR_INFO_MAX_SIZE)."""
        return getattr(importlib.import_module(f"autogen.nv.r{self.branch}.ctrl"), name)

    # -- CPU mappings --------------------------------------------------------------------------------
    def map_memory(self, h_client: int, h_device: int, h_memory: int, offset: int, length: int) -> RMObject:
        """Nv04MapMemoryWithSecInfo (rmapi/mapping_cpu.c memMap_IMPL): checks, returns the memory."""
        client = self.client(h_client)
        device = self.object(client, h_device)
        if device.cls not in _DEVICE + _SUBDEVICE:
            # mapping_cpu.c rmapiMapToCpu: hDevice must be a device or subdevice
            raise RMStatus(st.NV_ERR_INVALID_OBJECT_PARENT, f"{h_device:#x} is not a device")
        memory = self.object(client, h_memory)
        if memory.backing is None:
            raise RMStatus(st.NV_ERR_INVALID_CLASS, f"object {h_memory:#x} (class {memory.cls:#x}) "
                                                    f"has no memory to map")
        # mapping_cpu.c memMap_IMPL: "Validate the offset and limit passed in"
        if offset >= memory.size:
            raise RMStatus(st.NV_ERR_INVALID_BASE, f"offset {offset:#x} past the {memory.size:#x} bytes")
        if length == 0 or offset + length > memory.size:
            raise RMStatus(st.NV_ERR_INVALID_LIMIT, f"{offset:#x}+{length:#x} past {memory.size:#x} bytes")
        return memory


# -- control handlers --------------------------------------------------------------------------------


def _get_gid_info(rm: ResourceManager, client: Client, obj: RMObject, params) -> None:
    # ctrl2080gpu.h NV2080_CTRL_CMD_GPU_GET_GID_INFO: the binary form is the 16-byte UUID
    binary = (params.flags & GID_FLAGS_FORMAT_MASK) == ctrl.NV2080_GPU_CMD_GPU_GET_GID_FLAGS_FORMAT_BINARY
    if not binary:
        text = "GPU-" + rm.uuid.hex()
        data = text.encode() + b"\0"
    else:
        data = rm.uuid
    params.length = len(data)
    params.data = data


# nvos.h NV_CHANNELGPFIFO_NOTIFICATION_STATUS: VALUE 14:0 and IN_PROGRESS 15:15 (ranges autogen
# leaves out), both set by kchannelNotifyWorkSubmitToken (VALUE 0xffff masked to the field)
WORK_SUBMIT_TOKEN_NOTIFY_STATUS = (0x7FFF
                                   | nvos.NV_CHANNELGPFIFO_NOTIFICATION_STATUS_IN_PROGRESS_TRUE << 15)
NOTIFICATION_BYTES = 16  # nvgputypes.h NvNotification


def _work_submit_token(rm: ResourceManager, client: Client, obj: RMObject, params) -> None:
    # ctrlc36f.h NVC36F_CTRL_CMD_GPFIFO_GET_WORK_SUBMIT_TOKEN: the value to write to the doorbell
    params.workSubmitToken = obj.info["work_submit_token"]
    # kernel_channel.c kchannelCtrlCmdGpfifoGetWorkSubmitToken -> kchannelNotifyWorkSubmitToken: the
    # token also goes to NvNotification index NV_CHANNELGPFIFO_NOTIFICATION_TYPE_WORK_SUBMIT_TOKEN of
    # the channel's error notifier (info32 the token, info16 0), when the memory is big enough
    channel = rm.layout(cl.NV_CHANNEL_ALLOC_PARAMS).from_bytes(obj.params)
    notifier = client.objects.get(channel.hObjectError)
    index = nvos.NV_CHANNELGPFIFO_NOTIFICATION_TYPE_WORK_SUBMIT_TOKEN
    if notifier is None or notifier.backing is None or notifier.size < (index + 1) * NOTIFICATION_BYTES:
        return
    now = time.monotonic_ns()
    # notifyFillNvNotification order: timeStamp.nanoseconds[0] the high word, [1] the low
    struct.pack_into("<IIIHH", notifier.backing, index * NOTIFICATION_BYTES, now >> 32, now & 0xFFFFFFFF,
                     params.workSubmitToken, 0, WORK_SUBMIT_TOKEN_NOTIFY_STATUS)


def _schedule(rm: ResourceManager, client: Client, obj: RMObject, params) -> None:
    # ctrla06c.h NVA06C_CTRL_CMD_GPFIFO_SCHEDULE: enable the group's channels on the runlist
    if not any(child.cls in _CHANNELS for child in obj.children.values()):
        # kernel_channel_group_api.c kchangrpapiCtrlCmdGpFifoSchedule: nothing to schedule
        raise RMStatus(st.NV_ERR_INVALID_STATE, "channel group has no channel")
    if params.bEnable:
        rm.scheduled_groups.add((client.root.handle, obj.handle))
    else:
        rm.scheduled_groups.discard((client.root.handle, obj.handle))


def _arch_info(rm: ResourceManager, client: Client, obj: RMObject, params) -> None:
    # ctrl2080mc.h NV2080_CTRL_CMD_MC_GET_ARCH_INFO: architecture and implementation of the chip
    params.architecture = rm.gpu.arch_id
    params.implementation = rm.gpu.implementation
    params.revision = CHIP_REVISION


@dataclasses.dataclass(frozen=True)
class EmbeddedList:
    """A control whose parameters point to an array the RM copies in and out
    (embedded_param_copy.c RMAPI_PARAM_COPY_INIT): the fields holding the pointer and the count."""

    params: type
    pointer_field: str
    count_field: str
    element: type


@dataclasses.dataclass
class EmbeddedBlock:
    """The RM's copy of the pointed-to array of one control (written back on success)."""

    pointer: int
    count: int
    data: bytearray


def _gr_get_info(rm: ResourceManager, client: Client, obj: RMObject, params, listing: EmbeddedBlock) -> None:
    # kernel_graphics.c subdeviceCtrlCmdKGrGetInfo: a NULL list is NV_ERR_INVALID_ARGUMENT; at most
    # NV2080_CTRL_GR_INFO_MAX_SIZE entries are answered (the rest is copied back as it came), and
    # _kgraphicsCtrlCmdGrGetInfoV2 refuses an empty list and any index past that size (the
    # maximum grows with the branch: 53 in r535, 59 in r590)
    if listing.pointer == 0:
        raise RMStatus(st.NV_ERR_INVALID_ARGUMENT, "grInfoList is NULL")
    most = rm.branch_constant("NV2080_CTRL_GR_INFO_MAX_SIZE")
    count = min(listing.count, most)
    if count == 0:
        raise RMStatus(st.NV_ERR_INVALID_ARGUMENT, "grInfoListSize is 0")
    entry = rm.layout(ctrl.NV2080_CTRL_GR_INFO)
    answers = _gr_info_table(rm.gpu)
    records = []
    for position in range(count):
        record = entry.from_bytes(bytes(listing.data[position * entry.SIZE:(position + 1) * entry.SIZE]))
        if record.index >= most:
            raise RMStatus(st.NV_ERR_INVALID_ARGUMENT, f"grInfoList[{position}].index {record.index} "
                                                       f"(at most {most - 1})")
        # an index this model has no value for reads 0 (the static info table's unset entries)
        record.data = answers.get(record.index, 0)
        records.append(record)
    for position, record in enumerate(records):
        listing.data[position * entry.SIZE:(position + 1) * entry.SIZE] = bytes(record)


def _gr_info_table(gpu: GPUIdentity) -> dict[int, int]:
    """The NV2080_CTRL_GR_INFO_INDEX_* values this model answers (mockgpu.nv.gpus GR_SHAPES)."""
    return {ctrl.NV2080_CTRL_GR_INFO_INDEX_MAX_WARPS_PER_SM: gpu.max_warps_per_sm,
            ctrl.NV2080_CTRL_GR_INFO_INDEX_LITTER_NUM_GPCS: gpu.gpcs,
            ctrl.NV2080_CTRL_GR_INFO_INDEX_LITTER_NUM_TPC_PER_GPC: gpu.tpcs_per_gpc,
            ctrl.NV2080_CTRL_GR_INFO_INDEX_LITTER_NUM_SM_PER_TPC: gpu.sms_per_tpc}


# embedded_param_copy.c embeddedParamCopyIn: the controls served here whose parameters carry a pointer
EMBEDDED_LISTS: dict[int, EmbeddedList] = {
    ctrl.NV2080_CTRL_CMD_GR_GET_INFO: EmbeddedList(ctrl.NV2080_CTRL_GR_GET_INFO_PARAMS, "grInfoList",
                                                   "grInfoListSize", ctrl.NV2080_CTRL_GR_INFO),
}

CONTROLS: dict[int, tuple[tuple[int, ...], type, Callable]] = {
    ctrl.NV2080_CTRL_CMD_MC_GET_ARCH_INFO: (
        _SUBDEVICE, ctrl.NV2080_CTRL_MC_GET_ARCH_INFO_PARAMS, _arch_info),
    ctrl.NV2080_CTRL_CMD_GPU_GET_GID_INFO: (
        _SUBDEVICE, ctrl.NV2080_CTRL_GPU_GET_GID_INFO_PARAMS, _get_gid_info),
    ctrl.NVC36F_CTRL_CMD_GPFIFO_GET_WORK_SUBMIT_TOKEN: (
        _CHANNELS, ctrl.NVC36F_CTRL_CMD_GPFIFO_GET_WORK_SUBMIT_TOKEN_PARAMS, _work_submit_token),
    ctrl.NVA06C_CTRL_CMD_GPFIFO_SCHEDULE: (
        _CHANNEL_GROUP, ctrl.NVA06C_CTRL_GPFIFO_SCHEDULE_PARAMS, _schedule),
    ctrl.NV2080_CTRL_CMD_GR_GET_INFO: (
        _SUBDEVICE, ctrl.NV2080_CTRL_GR_GET_INFO_PARAMS, _gr_get_info),
}
