"""An NVIDIA GPU through the kernel driver: the RM object tree a compute process needs, built once.

`NVDevice.open(os, index)` builds, in this order (each freed in reverse by `close()`):

    root client (NV01_ROOT_CLIENT)
    └─ device (NV01_DEVICE_0) ─ subdevice (NV20_SUBDEVICE_0) ─ usermode (doorbell window, CPU-mapped)
       ├─ VA space (FERMI_VASPACE_A), registered with UVM together with the GPU
       ├─ memory (NV01_MEMORY_LOCAL_USER / NV01_MEMORY_SYSTEM): per channel, GPFIFO ring + USERD
       │  and an error notifier
       └─ channel group (KEPLER_CHANNEL_GROUP_A) ─ context share (FERMI_CONTEXT_SHARE_A)
          ├─ compute channel (GPFIFO class) ─ compute object
          └─ copy channel (GPFIFO class) ─ copy-engine object

The generation is resolved once from NV2080_CTRL_CMD_MC_GET_ARCH_INFO into the classes to use
(`Generation`), and the graphics engine's shape once from NV2080_CTRL_CMD_GR_GET_INFO (`GRInfo`: GPCs,
TPCs per GPC, SMs per TPC, warps per SM, which size the local memory buffer); nothing below asks
again. `alloc_memory` makes VRAM or system memory, maps it for the CPU (NV_ESC_RM_MAP_MEMORY + mmap)
and into the GPU VA space through UVM (external range + map external allocation). Submission
(GPFIFO entries, doorbell writes) is drivers/nv/gpfifo.py's.

Robust-channel errors are TSG-wide: the RM stops every channel of the faulting channel's group and
writes each one's error notifier, and never runs that group again. `reset_channel_group` frees the
group (its channels, engine objects and context share) and builds a new one on the same memory.
"""
from __future__ import annotations

import dataclasses
import logging

from autogen.nv.r535 import classes as cl
from autogen.nv.r535 import ctrl
from autogen.nv.r535 import nvos
from autogen.nv.r535 import uvm as uvm_abi
from drivers.nv.rm import RM, CPUMapping, ResourceLeak, RMObject
from drivers.nv.uvm import UVM
from drivers.vm.tlsf import TLSFAllocator
from hal.errors import DeviceNotFound, InvalidArgument, UnsupportedOperation
from hal.os import OS, PAGE_SIZE

log = logging.getLogger(__name__)

# nvos.h DRF ranges of the memory attributes (autogen leaves "hi:lo" ranges out):
# NVOS32_ATTR_PAGE_SIZE 24:23, NVOS32_ATTR_LOCATION 26:25, NVOS32_ATTR_PHYSICALITY 28:27,
# NVOS32_ATTR_COHERENCY 31:29, NVOS32_ATTR2_GPU_CACHEABLE 3:2
ATTR_PAGE_SIZE_SHIFT = 23
ATTR_LOCATION_SHIFT = 25
ATTR_PHYSICALITY_SHIFT = 27
ATTR_COHERENCY_SHIFT = 29
ATTR2_GPU_CACHEABLE_SHIFT = 2
# nvos.h NVOS32_ATTR_* values used here
ATTR_PAGE_SIZE_HUGE = 3  # NVOS32_ATTR_PAGE_SIZE_HUGE: 2 MiB GPU pages
ATTR_LOCATION_VIDMEM = 0  # NVOS32_ATTR_LOCATION_VIDMEM
ATTR_LOCATION_PCI = 1  # NVOS32_ATTR_LOCATION_PCI: system memory
ATTR_PHYSICALITY_CONTIGUOUS = 2  # NVOS32_ATTR_PHYSICALITY_CONTIGUOUS
ATTR_COHERENCY_CACHED = 1  # NVOS32_ATTR_COHERENCY_CACHED
ATTR2_GPU_CACHEABLE_YES = 1  # NVOS32_ATTR2_GPU_CACHEABLE_YES

# the GPU virtual address window this process manages (the VA space's vaBase/vaSize); memory gets
# addresses in [VA_START, VA_END) in HUGE_PAGE units from a TLSF allocator (drivers.vm.tlsf), which
# takes them back when the memory is freed. 2 MiB is the Ampere-Hopper big page.
VA_BASE = 0x1000  # NV_VASPACE_ALLOCATION_PARAMETERS.vaBase: page 0 stays unmapped
VA_SIZE = 1 << 48  # the 49-bit GPU VA of Ampere-Hopper MMU v2/v3, lower half
# above the channels' UVM ranges (CHANNEL_VA_START) and below 1 << 40, since a GP entry (clc56f.h
# GP_ENTRY1_GET_HI 7:0) and Ampere's SEM_ADDR_HI (7:0) carry 40 address bits
VA_START = 1 << 37
VA_END = 1 << 40
HUGE_PAGE = 2 << 20
GPFIFO_ENTRIES = 0x400  # a power of two, as the RM requires
GPFIFO_ENTRY_SIZE = cl.NVC86F_GP_ENTRY__SIZE  # clc86f.h (as clc56f.h): one GP entry is 8 bytes
GPFIFO_AREA = 0x10000  # ring (8 KiB) + USERD (the Nvc86fControl_struct block) in one allocation
NOTIFIER_SIZE = 0x1000  # a channel's error notifier (NvNotification array, one page)
# nvos.h NV_CHANNELGPFIFO_NOTIFICATION_TYPE_*: the RM writes an error at index 0 of the channel's
# hObjectError memory and the work-submit token at index 1 (kernel_channel.c
# kchannelNotifyWorkSubmitToken), so each channel gets a notifier of its own
NOTIFICATION_BYTES = 16  # nvgputypes.h NvNotification: timeStamp, info32, info16, status
# where UVM maps each channel's context buffers (UVM_REGISTER_CHANNEL): below 1 TiB, the limit of
# Ampere and Ada (uvm_ampere.c/uvm_ada.c max_channel_va), 64 MiB each (room for a graphics context)
CHANNEL_VA_START = 1 << 32
CHANNEL_VA_SIZE = 64 << 20


@dataclasses.dataclass(frozen=True)
class Generation:
    """The classes one GPU generation is driven with."""

    name: str
    compute_class: int
    copy_class: int
    gpfifo_class: int
    usermode_class: int


AMPERE_GA100 = Generation("Ampere GA100", cl.AMPERE_COMPUTE_A, cl.AMPERE_DMA_COPY_A,
                          cl.AMPERE_CHANNEL_GPFIFO_A, cl.AMPERE_USERMODE_A)
AMPERE_GA10X = Generation("Ampere GA10x", cl.AMPERE_COMPUTE_B, cl.AMPERE_DMA_COPY_B,
                          cl.AMPERE_CHANNEL_GPFIFO_A, cl.AMPERE_USERMODE_A)
ADA = Generation("Ada", cl.ADA_COMPUTE_A, cl.AMPERE_DMA_COPY_B, cl.AMPERE_CHANNEL_GPFIFO_A,
                 cl.AMPERE_USERMODE_A)
# Hopper has its own GPFIFO, usermode, compute and copy classes (g_gpu_class_list.c, GH100); an
# Ampere-era driver (tinygrad's) allocates AMPERE_* classes the GH100 list lacks for compute and copy
HOPPER = Generation("Hopper", cl.HOPPER_COMPUTE_A, cl.HOPPER_DMA_COPY_A, cl.HOPPER_CHANNEL_GPFIFO_A,
                    cl.HOPPER_USERMODE_A)

# ctrl2080mc.h NV2080_CTRL_MC_ARCH_INFO_IMPLEMENTATION_GA100: the only GA10x with AMPERE_COMPUTE_A
_GA100_IMPLEMENTATION = ctrl.NV2080_CTRL_MC_ARCH_INFO_IMPLEMENTATION_GA100


def resolve_generation(architecture: int, implementation: int) -> Generation:
    """The Generation for NV2080_CTRL_CMD_MC_GET_ARCH_INFO's answer, or UnsupportedOperation."""
    if architecture == uvm_abi.NV2080_CTRL_MC_ARCH_INFO_ARCHITECTURE_GA100:
        return AMPERE_GA100 if implementation == _GA100_IMPLEMENTATION else AMPERE_GA10X
    if architecture == uvm_abi.NV2080_CTRL_MC_ARCH_INFO_ARCHITECTURE_AD100:
        return ADA
    if architecture == uvm_abi.NV2080_CTRL_MC_ARCH_INFO_ARCHITECTURE_GH100:
        return HOPPER
    raise UnsupportedOperation(f"GPU architecture {architecture:#x} (implementation {implementation:#x}) "
                               f"is not supported: have Ampere (0x170), Ada (0x190), Hopper (0x180)")


@dataclasses.dataclass(frozen=True)
class GRInfo:
    """What NV2080_CTRL_CMD_GR_GET_INFO says of the graphics engine, for sizing local memory: the
    chip's GPC count, TPCs per GPC and SMs per TPC (the "litter" values: the whole die, whatever
    is fused off) and the most warps one SM holds."""

    max_warps_per_sm: int
    gpcs: int
    tpcs_per_gpc: int
    sms_per_tpc: int

    @property
    def tpcs(self) -> int:
        """TPCs of the whole die: the local memory buffer has a slice for each."""
        return self.gpcs * self.tpcs_per_gpc

    def local_bytes_per_tpc(self, per_thread: int) -> int:
        """The slice of the local memory buffer one TPC uses when each thread has `per_thread`
        bytes (SET_SHADER_LOCAL_MEMORY_NON_THROTTLED_A/B): a warp's 32 threads rounded up to
        0x200, for every warp of every SM of the TPC, rounded up to 0x8000."""
        per_warp = -(-per_thread * WARP_SIZE // LOCAL_WARP_ALIGNMENT) * LOCAL_WARP_ALIGNMENT
        per_tpc = per_warp * self.max_warps_per_sm * self.sms_per_tpc
        return -(-per_tpc // LOCAL_TPC_ALIGNMENT) * LOCAL_TPC_ALIGNMENT

    def local_buffer_bytes(self, per_tpc: int) -> int:
        """The whole local memory buffer: a `per_tpc` slice for each TPC, rounded up to 0x20000."""
        return -(-per_tpc * self.tpcs // LOCAL_BUFFER_ALIGNMENT) * LOCAL_BUFFER_ALIGNMENT


# Local memory sizing: the rule of tinygrad's ops_nv.py (NVDevice._ensure_has_local_memory) and of
# Mesa's NVK (src/nouveau/vulkan/nvk_device.c nvk_slm_area_ensure, whose comments say the hardware
# "seems to require" these alignments); no NVIDIA document we have states it.
WARP_SIZE = 32
LOCAL_WARP_ALIGNMENT = 0x200
LOCAL_TPC_ALIGNMENT = 0x8000
LOCAL_BUFFER_ALIGNMENT = 0x20000


# ctrl2080gr.h NV2080_CTRL_GR_INFO_INDEX_*: the GRInfo field each index answers
GR_INFO_INDICES = {"max_warps_per_sm": ctrl.NV2080_CTRL_GR_INFO_INDEX_MAX_WARPS_PER_SM,
                   "gpcs": ctrl.NV2080_CTRL_GR_INFO_INDEX_LITTER_NUM_GPCS,
                   "tpcs_per_gpc": ctrl.NV2080_CTRL_GR_INFO_INDEX_LITTER_NUM_TPC_PER_GPC,
                   "sms_per_tpc": ctrl.NV2080_CTRL_GR_INFO_INDEX_LITTER_NUM_SM_PER_TPC}


@dataclasses.dataclass(eq=False)
class NVMemory:
    """An RM memory object with its GPU virtual address and (optionally) CPU mapping."""

    obj: RMObject
    size: int
    location: str  # "vram" or "sysmem"
    gpu_va: int
    cpu: CPUMapping | None


@dataclasses.dataclass(eq=False)
class NVChannel:
    """A GPFIFO channel with its engine object, doorbell token and error notifier."""

    obj: RMObject
    engine: RMObject
    gpfifo: NVMemory
    gpfifo_offset: int
    entries: int
    work_submit_token: int
    uvm_base: int  # where UVM maps the channel's context buffers
    notifier: NVMemory
    name: str = ""


class NVDevice:
    """One GPU driven through the kernel RM and UVM. See the module docstring."""

    def __init__(self, os: OS, rm: RM, index: int) -> None:
        self.os = os
        self.rm = rm
        self.index = index
        self.device_fd: int | None = None
        self.uvm: UVM | None = None
        self.memories: list[NVMemory] = []
        self._va = TLSFAllocator(VA_START, VA_END - VA_START, granule=HUGE_PAGE,
                                 name=f"NVIDIA GPU {index} virtual addresses [{VA_START:#x}, {VA_END:#x})")
        self.generation: Generation | None = None
        self.gr_info: GRInfo | None = None
        self.uuid = b""
        self.uvm_gpu_registered = False
        self.uvm_channels: list[RMObject] = []  # registered with UVM_REGISTER_CHANNEL
        self._next_channel_va = CHANNEL_VA_START

    @classmethod
    def open(cls, os: OS, index: int = 0) -> "NVDevice":
        rm = RM.open(os)
        device = cls(os, rm, index)
        try:
            device._bring_up()
        except BaseException:
            device.close()
            raise
        return device

    def _bring_up(self) -> None:
        rm = self.rm
        cards = rm.card_info()
        if self.index >= len(cards):
            raise DeviceNotFound(f"NVIDIA GPU {self.index} does not exist: the driver has "
                                 f"{len(cards)} GPU(s)")
        card = cards[self.index]
        self.minor = card.minor_number
        self.pci_device_id = card.pci_info.device_id
        # an open /dev/nvidiaN keeps the GPU initialised while the objects live
        self.device_fd = rm.open_device(self.minor)
        self.device = rm.alloc(rm.root, cl.NV01_DEVICE_0, rm.abi.classes.NV0080_ALLOC_PARAMETERS(
            deviceId=self.index, hClientShare=rm.root.handle,
            vaMode=nvos.NV_DEVICE_ALLOCATION_VAMODE_MULTIPLE_VASPACES), name="device")
        self.subdevice = rm.alloc(self.device, cl.NV20_SUBDEVICE_0, rm.abi.classes.NV2080_ALLOC_PARAMETERS(),
                                  name="subdevice")
        arch = rm.control(self.subdevice, ctrl.NV2080_CTRL_CMD_MC_GET_ARCH_INFO,
                          rm.abi.ctrl.NV2080_CTRL_MC_GET_ARCH_INFO_PARAMS())
        self.generation = resolve_generation(arch.architecture, arch.implementation)
        generation = self.generation
        self.gr_info = self._query_gr_info()
        self.usermode = rm.alloc(self.subdevice, generation.usermode_class, name="usermode")
        self.doorbell = rm.map_to_cpu(self.subdevice, self.usermode, cl.NVC361_NV_USERMODE__SIZE, self.minor)
        blocks = rm.abi.nvos  # the parameter blocks of the driver's branch
        self.vaspace = rm.alloc(self.device, cl.FERMI_VASPACE_A, blocks.NV_VASPACE_ALLOCATION_PARAMETERS(
            vaBase=VA_BASE, vaSize=VA_SIZE,
            flags=nvos.NV_VASPACE_ALLOCATION_FLAGS_ENABLE_PAGE_FAULTING
            | nvos.NV_VASPACE_ALLOCATION_FLAGS_IS_EXTERNALLY_OWNED), name="VA space")
        gid_query = rm.abi.ctrl.NV2080_CTRL_GPU_GET_GID_INFO_PARAMS(
            flags=ctrl.NV2080_GPU_CMD_GPU_GET_GID_FLAGS_FORMAT_BINARY, length=rm.abi.uvm.nv_uuid.SIZE)
        gid = rm.control(self.subdevice, ctrl.NV2080_CTRL_CMD_GPU_GET_GID_INFO, gid_query)
        self.uuid = bytes(gid.data[:gid.length])
        self.uvm = UVM.open(self.os, rm.branch)
        self.uvm.register_gpu(self.uuid)
        self.uvm_gpu_registered = True
        self.uvm.register_gpu_va_space(self.uuid, rm.ctl_fd, rm.root.handle, self.vaspace.handle)
        # the channels' memory outlives a channel group (reset_channel_group reuses it)
        self._channel_memory = {
            name: (self.alloc_memory(GPFIFO_AREA, location="vram", name=f"{name} GPFIFO + USERD"),
                   self.alloc_memory(NOTIFIER_SIZE, location="sysmem", name=f"{name} error notifier"),
                   self._next_channel_uvm_base())
            for name in ("compute", "copy")}
        self._build_channel_group()
        log.info("NVIDIA GPU %d (%#06x, %s) up through the RM, driver %s", self.index, self.pci_device_id,
                 generation.name, rm.version)

    def _query_gr_info(self) -> GRInfo:
        """NV2080_CTRL_CMD_GR_GET_INFO on the subdevice: grInfoList points to an array of
        NV2080_CTRL_GR_INFO {index, data} that the RM copies in, fills and copies back
        (embedded_param_copy.c, subdeviceCtrlCmdKGrGetInfo); the array sits in the argument arena."""
        rm = self.rm
        entry = rm.abi.ctrl.NV2080_CTRL_GR_INFO
        names = tuple(GR_INFO_INDICES)
        request = b"".join(bytes(entry(index=GR_INFO_INDICES[name])) for name in names)
        address = rm.arena.place_embedded(request)
        params = rm.abi.ctrl.NV2080_CTRL_GR_GET_INFO_PARAMS(grInfoListSize=len(names), grInfoList=address)
        rm.control(self.subdevice, ctrl.NV2080_CTRL_CMD_GR_GET_INFO, params)
        answer = rm.arena.read_embedded(len(request))
        values = {}
        for position, name in enumerate(names):
            record = entry.from_bytes(answer[position * entry.SIZE:(position + 1) * entry.SIZE])
            if record.data == 0:
                raise UnsupportedOperation(f"NV2080_CTRL_CMD_GR_GET_INFO answered 0 for {name} "
                                           f"(index {record.index}): local memory cannot be sized")
            values[name] = record.data
        return GRInfo(**values)

    def _next_channel_uvm_base(self) -> int:
        base = self._next_channel_va
        self._next_channel_va += CHANNEL_VA_SIZE
        return base

    def _build_channel_group(self) -> None:
        """The channel group, its context share and the two channels, registered with UVM, then
        scheduled (NVA06C_CTRL_CMD_GPFIFO_SCHEDULE)."""
        rm = self.rm
        self.channel_group = rm.alloc(self.device, cl.KEPLER_CHANNEL_GROUP_A,
                                      rm.abi.nvos.NV_CHANNEL_GROUP_ALLOCATION_PARAMETERS(
                                          engineType=cl.NV2080_ENGINE_TYPE_GRAPHICS), name="channel group")
        self.context_share = rm.alloc(self.channel_group, cl.FERMI_CONTEXT_SHARE_A,
                                      rm.abi.nvos.NV_CTXSHARE_ALLOCATION_PARAMETERS(
                                          hVASpace=self.vaspace.handle,
                                          flags=nvos.NV_CTXSHARE_ALLOCATION_FLAGS_SUBCONTEXT_ASYNC),
                                      name="context share")
        self.compute = self._channel(self.generation.compute_class, "compute")
        self.copy = self._channel(self.generation.copy_class, "copy")
        rm.control(self.channel_group, ctrl.NVA06C_CTRL_CMD_GPFIFO_SCHEDULE,
                   rm.abi.ctrl.NVA06C_CTRL_GPFIFO_SCHEDULE_PARAMS(bEnable=1))

    @property
    def channels(self) -> tuple[NVChannel, NVChannel]:
        return self.compute, self.copy

    def reset_channel_group(self, why: str) -> None:
        """Free the channel group and build a new one: the way back after a robust-channel error
        (the RM never runs a torn-down TSG again) or a channel that never finishes.

        Order: UVM lets every channel of the group go first (uvm.h UvmUnregisterChannel: it stops
        the channel, and a channel's VA range is released only once every channel of its TSG is
        unregistered), then one NV_ESC_RM_FREE of the group frees its channels, their engine objects
        and the context share (serverFreeResourceTree, dependants first). The ring, USERD and
        notifier memory belong to the device and are reused: zeroed here, so the new channels start
        at GPGet = GPPut = 0 with clean notifiers (535.113.01 kernel_channel.c calls
        kfifoSetupUserD_HAL, which clears USERD, only for virtual GPUs), at the same UVM ranges."""
        log.warning("NVIDIA GPU %d: freeing channel group %s and building a new one (%s)", self.index,
                    self.channel_group, why)
        for channel in self.channels:
            if channel.obj in self.uvm_channels:
                self.uvm.unregister_channel(self.uuid, self.rm.root.handle, channel.obj.handle)
                self.uvm_channels.remove(channel.obj)
        if not self.channel_group.freed:  # a reset that failed while building may be retried
            self.rm.free(self.channel_group)
        for ring, notifier, _ in self._channel_memory.values():
            for memory in (ring, notifier):
                memory.cpu.region.write(0, bytes(memory.size))
        self._build_channel_group()

    def _channel(self, engine_class: int, name: str) -> NVChannel:
        rm = self.rm
        ring, notifier, base = self._channel_memory[name]
        userd_offset = GPFIFO_ENTRIES * GPFIFO_ENTRY_SIZE
        params = rm.abi.classes.NV_CHANNEL_ALLOC_PARAMS(hObjectError=notifier.obj.handle,
                                                        hObjectBuffer=ring.obj.handle,
                                                        gpFifoOffset=ring.gpu_va,
                                                        gpFifoEntries=GPFIFO_ENTRIES,
                                                        hContextShare=self.context_share.handle)
        params.hUserdMemory[0] = ring.obj.handle
        params.userdOffset[0] = userd_offset
        channel = rm.alloc(self.channel_group, self.generation.gpfifo_class, params, name=f"{name} channel")
        engine = rm.alloc(channel, engine_class, name=f"{name} engine")
        token = rm.control(channel, ctrl.NVC36F_CTRL_CMD_GPFIFO_GET_WORK_SUBMIT_TOKEN,
                           rm.abi.ctrl.NVC36F_CTRL_CMD_GPFIFO_GET_WORK_SUBMIT_TOKEN_PARAMS())
        # UVM maps the channel's context buffers in this VA space, so faults on it can be serviced
        self.uvm.register_channel(self.uuid, rm.ctl_fd, rm.root.handle, channel.handle, base,
                                  CHANNEL_VA_SIZE)
        self.uvm_channels.append(channel)
        return NVChannel(channel, engine, ring, 0, GPFIFO_ENTRIES, token.workSubmitToken, base, notifier,
                         name)

    # -- memory -------------------------------------------------------------------------------------
    def alloc_memory(self, size: int, location: str = "vram", cpu_access: bool = True,
                     name: str = "") -> NVMemory:
        """`size` bytes of VRAM or system memory, mapped for the GPU (UVM) and, with cpu_access, the CPU."""
        if size <= 0:
            raise InvalidArgument(f"memory size must be positive, got {size}")
        if location not in ("vram", "sysmem"):
            raise InvalidArgument(f"location is 'vram' or 'sysmem', got {location!r}")
        size = -(-size // HUGE_PAGE) * HUGE_PAGE if size >= HUGE_PAGE else -(-size // PAGE_SIZE) * PAGE_SIZE
        vram = location == "vram"
        cls_id = cl.NV01_MEMORY_LOCAL_USER if vram else cl.NV01_MEMORY_SYSTEM
        attr = ((ATTR_LOCATION_VIDMEM if vram else ATTR_LOCATION_PCI) << ATTR_LOCATION_SHIFT)
        if vram:
            attr |= (ATTR_PHYSICALITY_CONTIGUOUS << ATTR_PHYSICALITY_SHIFT)
            if size >= HUGE_PAGE:
                attr |= ATTR_PAGE_SIZE_HUGE << ATTR_PAGE_SIZE_SHIFT
        else:
            attr |= ATTR_COHERENCY_CACHED << ATTR_COHERENCY_SHIFT
        params = self.rm.abi.nvos.NV_MEMORY_ALLOCATION_PARAMS(
            owner=self.rm.root.handle, type=nvos.NVOS32_TYPE_IMAGE, attr=attr,
            attr2=ATTR2_GPU_CACHEABLE_YES << ATTR2_GPU_CACHEABLE_SHIFT,
            flags=nvos.NVOS32_ALLOC_FLAGS_ALIGNMENT_FORCE, size=size,
            alignment=HUGE_PAGE if vram else PAGE_SIZE)
        # a full heap is RMError NV_ERR_NO_MEMORY (the RM does not say how much is free); a full VA
        # window is OutOfMemory naming it
        gpu_va = self._va.alloc(size)
        try:
            obj = self.rm.alloc(self.device, cls_id, params, name=name or location)
        except BaseException:
            self._va.free(gpu_va)
            raise
        cpu = None
        try:
            self.uvm.create_external_range(gpu_va, size)
            self.uvm.map_external_allocation(gpu_va, size, self.uuid, self.rm.ctl_fd, self.rm.root.handle,
                                             obj.handle)
            if cpu_access:
                cpu = self.rm.map_to_cpu(self.device, obj, size, self.minor, system=not vram)
        except BaseException:
            if gpu_va in self.uvm.ranges:
                self.uvm.free(gpu_va, size)
            self.rm.free(obj)
            self._va.free(gpu_va)
            raise
        memory = NVMemory(obj, size, location, gpu_va, cpu)
        self.memories.append(memory)
        return memory

    def free_memory(self, memory: NVMemory) -> None:
        """Unmap `memory` from the CPU and GPU and free it."""
        self.memories.remove(memory)
        if memory.cpu is not None:
            self.rm.unmap(memory.cpu)
        self.uvm.free(memory.gpu_va, memory.size)
        self.rm.free(memory.obj)
        self._va.free(memory.gpu_va)

    # -- teardown -------------------------------------------------------------------------------------
    def close(self, strict: bool = False) -> None:
        """Undo the bring-up: CPU and GPU mappings go, UVM lets the GPU go, then the RM frees every
        object in reverse allocation order (channels before the memory they use). With `strict`,
        memory from alloc_memory that the caller never freed is a ResourceLeak (freed all the same)."""
        leaked = [memory.obj for memory in self.memories if memory.obj.name not in _OWN_MEMORY]
        try:
            for memory in reversed(list(self.memories)):
                if memory.cpu is not None:
                    self.rm.unmap(memory.cpu)
                    memory.cpu = None
                if self.uvm is not None and memory.gpu_va in self.uvm.ranges:
                    self.uvm.free(memory.gpu_va, memory.size)
            self.memories.clear()
            if self.uvm is not None:
                for channel in reversed(self.uvm_channels):
                    self.uvm.unregister_channel(self.uuid, self.rm.root.handle, channel.handle)
                self.uvm_channels.clear()
                if self.uvm_gpu_registered:
                    self.uvm.unregister_gpu(self.uuid)
                    self.uvm_gpu_registered = False
                self.uvm.close()
                self.uvm = None
            self.rm.free_all()
        finally:
            try:
                self.rm.close()
            finally:
                if self.device_fd is not None:
                    self.os.close(self.device_fd)
                    self.device_fd = None
        if strict and leaked:
            raise ResourceLeak(leaked)


_OWN_MEMORY = frozenset(("compute error notifier", "copy error notifier", "compute GPFIFO + USERD",
                         "copy GPFIFO + USERD"))
