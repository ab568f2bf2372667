"""The simulated KGSL driver: /dev/kgsl-3d0 on a mock Machine with one Adreno 6xx GPU.

`install(machine, gpu=ADRENO_630)` adds the device file (Machine.extra_files) and returns the
`KGSLDriver`; every open is a process's private state (`KGSLFile`: contexts, GPU objects, its GPU
address space). The ioctls answer with the msm_kgsl.h ABI (autogen.qcom.kgsl) and the errnos of
the downstream driver (drivers/gpu/msm/kgsl.c, adreno.c, adreno_drawctxt.c, adreno_dispatch.c of
Qualcomm's msm kernel trees; read in MiCode/Xiaomi_Kernel_OpenSource). Pointers inside arguments
are read from the simulated process memory (HostRAM.user_view); anything else is EFAULT.

Submissions run at once on the mock CP (mockgpu.qcom.cp) and retire their timestamp when the IB
completes. Faults, as KGSL handles them for a context created with KGSL_CONTEXT_NO_FAULT_TOLERANCE
(adreno_dispatch.c: no replay, the context is invalidated):
- a CP fault (bad header or parity, an IB overrun) or an IOMMU page fault invalidates the context:
  its queued timestamps are forced retired (adreno_drawctxt_invalidate), later GPU_COMMANDs and
  waits on it answer EDEADLK; the fault is recorded in `KGSLDriver.faults`;
- a CP_WAIT_REG_MEM whose condition does not hold when it runs stalls the context for good
  (recorded in `KGSLDriver.stalls`): like a hang, but with the reason named;
- `hang_next_submission()`: the next IB never completes, so its timestamp never retires and waits
  time out (ETIMEDOUT) until the context is destroyed, which stands for the recovery KGSL's fault
  detection runs (the hung work is dropped; other contexts keep running).
"""
from __future__ import annotations

import errno
import mmap
from dataclasses import dataclass, field

from autogen.qcom import kgsl
from hal.os import PAGE_SIZE
from hal.region import MemoryRegion, Region
from mockgpu.files import MockFile
from mockgpu.qcom.cp import CommandProcessor, CPFault, GPUAddressSpace, Mapping, Stalled
from mockgpu.sysfs import Special

DEVICE_PATH = "/dev/kgsl-3d0"
# include/uapi/asm-generic/ioctl.h: _IOC_SIZEBITS 14 at bit 16
IOC_SIZE_SHIFT = 16
IOC_SIZE_MASK = 0x3FFF
# kgsl_iommu.h KGSL_IOMMU_VA_BASE64 / KGSL_IOMMU_VA_END64: the 64-bit process GPU VA range
VA_BASE = 0x500000000
VA_END = 0x600000000
# kgsl.c kgsl_mem_entry_attach_process / kgsl_context_init: idr ids start at 1
FIRST_ID = 1
# kgsl.c gpumem_alloc_entry: the flags it keeps; the rest are cleared in the answer
ALLOC_FLAGS_KEPT = (kgsl.KGSL_MEMFLAGS_GPUREADONLY | kgsl.KGSL_CACHEMODE_MASK | kgsl.KGSL_MEMTYPE_MASK
                    | kgsl.KGSL_MEMALIGN_MASK | kgsl.KGSL_MEMFLAGS_USE_CPU_MAP
                    | kgsl.KGSL_MEMFLAGS_FORCE_32BIT | kgsl.KGSL_MEMFLAGS_IOCOHERENT
                    | kgsl.KGSL_MEMFLAGS_GUARD_PAGE)
# adreno.c adreno_set_constraint: KGSL_CONSTRAINT_PWR_MAXLEVELS levels (MIN and MAX)
PWR_MAXLEVELS = 2


@dataclass(frozen=True)
class AdrenoIdentity:
    """What KGSL_PROP_DEVICE_INFO and KGSL_PROP_GPU_MODEL report."""

    gpu_id: int
    chip_id: int
    gmem_size: int
    gmem_base: int
    model: str


# adreno-gpulist.h adreno_gpu_core_a630v2: chip id 6.3.0.x, 1 MiB of GMEM at 0x100000
ADRENO_630 = AdrenoIdentity(gpu_id=630, chip_id=0x06030001, gmem_size=1 << 20, gmem_base=0x100000,
                            model="Adreno630v2")


def _ioc_size(request: int) -> int:
    return (request >> IOC_SIZE_SHIFT) & IOC_SIZE_MASK


@dataclass
class Fault:
    """One fault the GPU reported: the context, the kind (opcode, overrun, pagefault) and why."""

    context_id: int
    kind: str
    message: str
    address: int | None


@dataclass
class Context:
    id: int
    flags: int
    queued: int = 0
    retired: int = 0
    invalid: bool = False
    hung: bool = False
    constraint: int | None = None


@dataclass
class GPUObject:
    id: int
    gpuaddr: int
    size: int
    flags: int
    mapping: object  # mmap object backing it
    user: bool = False
    cpu_regions: list[Region] = field(default_factory=list)


class KGSLDriver:
    """kgsl.ko with one Adreno GPU."""

    def __init__(self, machine, gpu: AdrenoIdentity = ADRENO_630, memory_limit: int = 1 << 30) -> None:
        self.machine = machine
        self.gpu = gpu
        self.memory_limit = memory_limit
        self.cp = CommandProcessor()
        self.faults: list[Fault] = []
        self.stalls: list[tuple[int, str]] = []  # (context, why) of submissions stuck in a CP wait
        self.open_files: list[KGSLFile] = []
        self._hang_next = False

    def files(self) -> dict[str, object]:
        return {DEVICE_PATH: Special(0o666, self._open)}

    def _open(self, path: str, flags: int) -> MockFile:
        file = KGSLFile(self, path)
        self.open_files.append(file)
        return file

    def hang_next_submission(self) -> None:
        """The next GPU_COMMAND's work never completes (a shader or CP wait that never ends)."""
        self._hang_next = True

    def take_hang(self) -> bool:
        hang = self._hang_next
        self._hang_next = False
        return hang


class KGSLFile(MockFile):
    """One open of /dev/kgsl-3d0: the process private data of kgsl.c (kgsl_process_private)."""

    def __init__(self, driver: KGSLDriver, path: str) -> None:
        super().__init__(path)
        self.driver = driver
        self.contexts: dict[int, Context] = {}
        self.objects: dict[int, GPUObject] = {}
        self.user_maps: dict[int, GPUObject] = {}
        self.space = GPUAddressSpace()
        self._next_context = FIRST_ID
        self._next_object = FIRST_ID
        self._next_va = VA_BASE
        self.allocated = 0
        self.closed = False
        self.handlers = {
            kgsl.IOCTL_KGSL_DEVICE_GETPROPERTY: self._getproperty,
            kgsl.IOCTL_KGSL_SETPROPERTY: self._setproperty,
            kgsl.IOCTL_KGSL_DRAWCTXT_CREATE: self._drawctxt_create,
            kgsl.IOCTL_KGSL_DRAWCTXT_DESTROY: self._drawctxt_destroy,
            kgsl.IOCTL_KGSL_GPUOBJ_ALLOC: self._gpuobj_alloc,
            kgsl.IOCTL_KGSL_GPUOBJ_INFO: self._gpuobj_info,
            kgsl.IOCTL_KGSL_GPUOBJ_FREE: self._gpuobj_free,
            kgsl.IOCTL_KGSL_MAP_USER_MEM: self._map_user_mem,
            kgsl.IOCTL_KGSL_SHAREDMEM_FREE: self._sharedmem_free,
            kgsl.IOCTL_KGSL_GPU_COMMAND: self._gpu_command,
            kgsl.IOCTL_KGSL_CMDSTREAM_READTIMESTAMP_CTXTID: self._readtimestamp,
            kgsl.IOCTL_KGSL_DEVICE_WAITTIMESTAMP_CTXTID: self._waittimestamp,
        }

    # -- plumbing ------------------------------------------------------------------------------
    def ioctl(self, request: int, arg) -> int:
        handler = self.handlers.get(request)
        if handler is None:
            # kgsl.c kgsl_ioctl_helper: a command outside the table is ENOIOCTLCMD -> ENOTTY
            raise OSError(errno.ENOTTY, f"KGSL ioctl {request:#x} is not implemented here")
        size = _ioc_size(request)
        if not isinstance(arg, (bytearray, memoryview)) or len(arg) < size:
            raise OSError(errno.EFAULT, f"ioctl argument shorter than its _IOC_SIZE {size}")
        return handler(memoryview(arg).cast("B")[:size])

    def _user(self, address: int, size: int) -> memoryview:
        view = self.driver.machine.ram.user_view(address, size)
        if view is None:
            raise OSError(errno.EFAULT, f"user pointer {address:#x} (+{size}) is not mapped memory")
        return view

    def _context(self, context_id: int) -> Context:
        # kgsl.c kgsl_context_get_owner: an id this process does not own is EINVAL
        context = self.contexts.get(context_id)
        if context is None:
            raise OSError(errno.EINVAL, f"no context {context_id} in this process")
        return context

    def _reserve_va(self, size: int) -> int:
        address = self._next_va
        if address + size > VA_END:
            raise OSError(errno.ENOMEM, "the process GPU address space is exhausted")
        self._next_va = address + size + PAGE_SIZE  # a guard page between objects
        return address

    # -- properties ----------------------------------------------------------------------------
    def _getproperty(self, arg: memoryview) -> int:
        param = kgsl.kgsl_device_getproperty.from_buffer(arg)
        if param.type == kgsl.KGSL_PROP_DEVICE_INFO:
            # adreno.c adreno_getproperty KGSL_PROP_DEVICE_INFO: device_id is the device's id + 1
            # (the 3D device is the first), mmu_enabled whether the MMU pages (always on a6xx)
            value = kgsl.kgsl_devinfo(device_id=1, chip_id=self.driver.gpu.chip_id, mmu_enabled=1,
                                      gmem_gpubaseaddr=self.driver.gpu.gmem_base,
                                      gpu_id=self.driver.gpu.gpu_id,
                                      gmem_sizebytes=self.driver.gpu.gmem_size)
        elif param.type == kgsl.KGSL_PROP_GPU_MODEL:
            value = kgsl.kgsl_gpu_model()
            value.gpu_model = list(self.driver.gpu.model.encode())
        else:
            # adreno.c adreno_getproperty: an unknown property is EINVAL
            raise OSError(errno.EINVAL, f"property {param.type:#x} is not modelled")
        # adreno.c adreno_getproperty: sizebytes must be the property struct's size
        if param.sizebytes != value.SIZE:
            raise OSError(errno.EINVAL, f"property {param.type:#x} is {value.SIZE} bytes, "
                                        f"not {param.sizebytes}")
        self._user(param.value, value.SIZE)[:] = bytes(value)
        return 0

    def _setproperty(self, arg: memoryview) -> int:
        param = kgsl.kgsl_device_getproperty.from_buffer(arg)
        if param.type != kgsl.KGSL_PROP_PWR_CONSTRAINT:
            raise OSError(errno.EINVAL, f"setting property {param.type:#x} is not modelled")
        # adreno.c adreno_setproperty KGSL_PROP_PWR_CONSTRAINT: the struct's exact size
        if param.sizebytes != kgsl.kgsl_device_constraint.SIZE:
            raise OSError(errno.EINVAL, "power constraint of the wrong size")
        constraint = kgsl.kgsl_device_constraint.from_bytes(
            bytes(self._user(param.value, kgsl.kgsl_device_constraint.SIZE)))
        context = self._context(constraint.context_id)
        if constraint.type == kgsl.KGSL_CONSTRAINT_NONE:
            context.constraint = None
            return 0
        # adreno.c adreno_set_constraint: PWRLEVEL wants a kgsl_device_constraint_pwrlevel and a
        # level below KGSL_CONSTRAINT_PWR_MAXLEVELS; other types are EINVAL
        if constraint.type != kgsl.KGSL_CONSTRAINT_PWRLEVEL:
            raise OSError(errno.EINVAL, f"constraint type {constraint.type} is not modelled")
        if constraint.size != kgsl.kgsl_device_constraint_pwrlevel.SIZE:
            raise OSError(errno.EINVAL, "power level constraint of the wrong size")
        level = kgsl.kgsl_device_constraint_pwrlevel.from_bytes(
            bytes(self._user(constraint.data, constraint.size))).level
        if level >= PWR_MAXLEVELS:
            raise OSError(errno.EINVAL, f"power level {level} is not MIN or MAX")
        context.constraint = level
        return 0

    # -- contexts ------------------------------------------------------------------------------
    def _drawctxt_create(self, arg: memoryview) -> int:
        param = kgsl.kgsl_drawctxt_create.from_buffer(arg)
        # adreno_drawctxt.c adreno_drawctxt_create: secure contexts need secure support (none here)
        if param.flags & kgsl.KGSL_CONTEXT_SECURE:
            raise OSError(errno.EOPNOTSUPP, "this GPU has no secure mode")
        context = Context(self._next_context, param.flags)
        self._next_context += 1
        self.contexts[context.id] = context
        param.drawctxt_id = context.id
        return 0

    def _drawctxt_destroy(self, arg: memoryview) -> int:
        param = kgsl.kgsl_drawctxt_destroy.from_buffer(arg)
        context = self._context(param.drawctxt_id)
        # adreno_drawctxt.c adreno_drawctxt_detach: outstanding work is waited for, then dropped;
        # for hung work that is the fault recovery of the dispatcher
        del self.contexts[context.id]
        return 0

    # -- memory --------------------------------------------------------------------------------
    def _gpuobj_alloc(self, arg: memoryview) -> int:
        param = kgsl.kgsl_gpuobj_alloc.from_buffer(arg)
        size = param.size
        # kgsl.c gpumem_alloc_entry / kgsl_allocate_user: zero or absurd sizes are EINVAL
        if size == 0 or size > VA_END - VA_BASE:
            raise OSError(errno.EINVAL, f"GPU object of {size} bytes")
        if param.flags & (kgsl.KGSL_MEMFLAGS_SECURE | kgsl.KGSL_MEMFLAGS_SPARSE_PHYS
                          | kgsl.KGSL_MEMFLAGS_SPARSE_VIRT | kgsl.KGSL_MEMFLAGS_VBO):
            raise OSError(errno.EOPNOTSUPP, "secure, sparse and VBO objects are not modelled")
        footprint = -(-size // PAGE_SIZE) * PAGE_SIZE
        if self.allocated + footprint > self.driver.memory_limit:
            raise OSError(errno.ENOMEM, f"{footprint} more bytes exceed the GPU memory pool")
        gpuaddr = self._reserve_va(footprint)
        backing = mmap.mmap(-1, footprint, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        flags = param.flags & ALLOC_FLAGS_KEPT
        obj = GPUObject(self._next_object, gpuaddr, footprint, flags, backing)
        self._next_object += 1
        self.objects[obj.id] = obj
        self.allocated += footprint
        self.space.add(Mapping(gpuaddr, footprint, memoryview(backing),
                               read_only=bool(flags & kgsl.KGSL_MEMFLAGS_GPUREADONLY), owner=obj))
        param.flags = flags
        param.mmapsize = footprint
        param.va_len = footprint
        param.id = obj.id
        return 0

    def _object(self, object_id: int) -> GPUObject:
        obj = self.objects.get(object_id)
        if obj is None:
            # kgsl.c kgsl_sharedmem_find_id fails: EINVAL
            raise OSError(errno.EINVAL, f"no GPU object {object_id} in this process")
        return obj

    def _gpuobj_info(self, arg: memoryview) -> int:
        param = kgsl.kgsl_gpuobj_info.from_buffer(arg)
        obj = self._object(param.id)
        param.gpuaddr = obj.gpuaddr
        param.flags = obj.flags
        param.size = obj.size
        param.va_len = obj.size
        param.va_addr = obj.gpuaddr
        return 0

    def _gpuobj_free(self, arg: memoryview) -> int:
        param = kgsl.kgsl_gpuobj_free.from_buffer(arg)
        obj = self._object(param.id)
        if param.flags & kgsl.KGSL_GPUOBJ_FREE_ON_EVENT:
            raise OSError(errno.EOPNOTSUPP, "free on event is not modelled")
        del self.objects[obj.id]
        self.space.remove(obj.gpuaddr)
        self.allocated -= obj.size
        return 0

    def mmap(self, size: int, offset: int, writable: bool) -> Region:
        # kgsl.c kgsl_mmap -> get_mmap_entry: the page offset is the object id
        obj = self.objects.get(offset // PAGE_SIZE)
        if obj is None or obj.user:
            raise OSError(errno.EINVAL, f"no GPU object {offset // PAGE_SIZE} to map")
        if size > obj.size:
            raise OSError(errno.ERANGE, f"mapping {size} bytes of a {obj.size}-byte object")
        region = MemoryRegion(memoryview(obj.mapping)[:size], owner=obj.mapping)
        obj.cpu_regions.append(region)
        return region

    def _map_user_mem(self, arg: memoryview) -> int:
        param = kgsl.kgsl_map_user_mem.from_buffer(arg)
        if param.memtype != kgsl.KGSL_USER_MEM_TYPE_ADDR:
            raise OSError(errno.EOPNOTSUPP, f"user memory type {param.memtype} is not modelled")
        # kgsl.c kgsl_setup_anon_useraddr: a zero or partial-page length, or an offset, is EINVAL
        if param.len == 0 or param.offset != 0 or param.len % PAGE_SIZE:
            raise OSError(errno.EINVAL, f"user memory of {param.len} bytes at offset {param.offset}")
        # kgsl.c memdesc_sg_virt: check_vma fails for memory that is not one mapping (EFAULT)
        if param.hostptr % PAGE_SIZE:
            raise OSError(errno.EINVAL, f"host pointer {param.hostptr:#x} is not page aligned")
        view = self._user(param.hostptr, param.len)
        gpuaddr = self._reserve_va(param.len)
        read_only = bool(param.flags & kgsl.KGSL_MEMFLAGS_GPUREADONLY)
        obj = GPUObject(self._next_object, gpuaddr, param.len, param.flags, None, user=True)
        self._next_object += 1
        self.user_maps[gpuaddr] = obj
        self.space.add(Mapping(gpuaddr, param.len, view, read_only=read_only, owner=obj))
        param.gpuaddr = gpuaddr
        return 0

    def _sharedmem_free(self, arg: memoryview) -> int:
        param = kgsl.kgsl_sharedmem_free.from_buffer(arg)
        obj = self.user_maps.pop(param.gpuaddr, None)
        if obj is None:
            gpuobj = next((o for o in self.objects.values() if o.gpuaddr == param.gpuaddr), None)
            if gpuobj is None:
                # kgsl.c kgsl_ioctl_sharedmem_free: no entry at that address is EINVAL
                raise OSError(errno.EINVAL, f"nothing mapped at GPU address {param.gpuaddr:#x}")
            del self.objects[gpuobj.id]
            self.allocated -= gpuobj.size
        self.space.remove(param.gpuaddr)
        return 0

    # -- submission ----------------------------------------------------------------------------
    def _gpu_command(self, arg: memoryview) -> int:
        param = kgsl.kgsl_gpu_command.from_buffer(arg)
        context = self._context(param.context_id)
        # adreno_dispatch.c _check_context_state: an invalidated context is EDEADLK
        if context.invalid:
            raise OSError(errno.EDEADLK, f"context {context.id} was invalidated by a fault")
        # kgsl.c kgsl_ioctl_gpu_command: a command needs a command list (markers aside)
        marker = bool(param.flags & kgsl.KGSL_CMDBATCH_MARKER)
        if param.numcmds == 0 and not marker:
            raise OSError(errno.EINVAL, "GPU_COMMAND without commands")
        if param.numcmds and param.cmdsize < kgsl.kgsl_command_object.SIZE:
            raise OSError(errno.EINVAL, f"command object size {param.cmdsize}")
        ibs = []
        for index in range(param.numcmds):
            raw = bytes(self._user(param.cmdlist + index * param.cmdsize, kgsl.kgsl_command_object.SIZE))
            command = kgsl.kgsl_command_object.from_bytes(raw)
            # adreno_dispatch.c _verify_ib: size 0 or over 0xFFFFF dwords, or an unmapped address
            if command.size == 0 or (command.size >> 2) > 0xFFFFF:
                raise OSError(errno.EINVAL, f"IB {index} of {command.size} bytes")
            if not self.space.contains(command.gpuaddr):
                raise OSError(errno.EINVAL, f"IB {index} at unmapped GPU address {command.gpuaddr:#x}")
            ibs.append((command.gpuaddr, command.size))
        context.queued += 1
        timestamp = context.queued & 0xFFFFFFFF
        param.timestamp = timestamp
        if context.hung:
            return 0
        if self.driver.take_hang():
            context.hung = True
            return 0
        try:
            for gpuaddr, size in ibs:
                self.driver.cp.execute(self.space, gpuaddr, size)
        except CPFault as fault:
            self._invalidate(context, fault)
            return 0
        except Stalled as stall:
            context.hung = True
            self.driver.stalls.append((context.id, str(stall)))
            return 0
        context.retired = timestamp
        return 0

    def _invalidate(self, context: Context, fault: CPFault) -> None:
        self.driver.faults.append(Fault(context.id, fault.kind, str(fault), fault.address))
        # adreno_drawctxt.c adreno_drawctxt_invalidate: mark it, retire its timestamps so no
        # waiter sleeps on work that will never run
        context.invalid = True
        context.retired = context.queued

    def _readtimestamp(self, arg: memoryview) -> int:
        param = kgsl.kgsl_cmdstream_readtimestamp_ctxtid.from_buffer(arg)
        context = self._context(param.context_id)
        if param.type == kgsl.KGSL_TIMESTAMP_QUEUED:
            param.timestamp = context.queued & 0xFFFFFFFF
        elif param.type in (kgsl.KGSL_TIMESTAMP_RETIRED, kgsl.KGSL_TIMESTAMP_CONSUMED):
            param.timestamp = context.retired & 0xFFFFFFFF
        else:
            # kgsl.c _cmdstream_readtimestamp: an unknown type is EINVAL
            raise OSError(errno.EINVAL, f"timestamp type {param.type}")
        return 0

    def _waittimestamp(self, arg: memoryview) -> int:
        param = kgsl.kgsl_device_waittimestamp_ctxtid.from_buffer(arg)
        context = self._context(param.context_id)
        # adreno.c adreno_device_waittimestamp / adreno_drawctxt_wait: invalid context EDEADLK
        if context.invalid:
            raise OSError(errno.EDEADLK, f"context {context.id} was invalidated by a fault")
        if _passed(context.retired, param.timestamp):
            return 0
        if param.timeout == 0:
            # adreno_drawctxt_wait: 0 waits forever; this simulation cannot, and says so
            raise RuntimeError(f"mock KGSL: an unbounded wait on context {context.id} timestamp "
                               f"{param.timestamp} that will never retire")
        # the caller sleeps for the whole timeout (milliseconds), scheduled device events running
        self.driver.machine.os.sleep(param.timeout / 1000)
        if _passed(context.retired, param.timestamp):
            return 0
        raise OSError(errno.ETIMEDOUT, f"context {context.id} timestamp {param.timestamp} "
                                       f"not retired (retired {context.retired})")

    def close(self) -> None:
        self.closed = True
        self.contexts.clear()
        self.objects.clear()
        self.user_maps.clear()


def _passed(retired: int, wanted: int) -> bool:
    # kgsl.h timestamp_cmp: 32-bit timestamps compared across wrap-around
    return ((retired - wanted) & 0xFFFFFFFF) < 0x80000000


def install(machine, gpu: AdrenoIdentity = ADRENO_630) -> KGSLDriver:
    """Load the simulated KGSL driver on `machine`; returns it."""
    driver = KGSLDriver(machine, gpu)
    machine.extra_files.update(driver.files())
    machine.kgsl = driver
    return driver

