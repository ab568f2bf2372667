"""The simulated NVIDIA GPU behind the mock kernel driver: host engine (PBDMA), compute and copy.

`GPUModel(driver)` is created by `mockgpu.nv.driver.install`; the usermode window's doorbell
(clc361.h NVC361_NOTIFY_CHANNEL_PENDING) calls `doorbell(token)`. For the channel whose
work-submit token was written, the model reads GPPut from its USERD (clc86f.h
Nvc86fControl_struct), fetches GP entries from GPGet on (clc56f.h GP_ENTRY0/1), decodes each
pushbuffer segment's method headers (incrementing, non-incrementing, immediate data, increment
once; clc56f.h "dma method formats") and executes the methods at once:

- host methods (below 0x100, any subchannel; clc56f.h/clc86f.h): SET_OBJECT binds a subchannel to
  the channel's engine class (another class is a PBDMA error), SEM_ADDR_LO/HI + SEM_PAYLOAD_LO/HI +
  SEM_EXECUTE (release with 32/64-bit payload and optional timestamp after the payload; acquire
  STRICT_GEQ / CIRC_GEQ blocks the channel until memory satisfies it; REDUCTION IMIN/IMAX unsigned,
  IXOR/IAND/IOR/IADD, with the timestamp after the value when asked), NOP, WFI, MEM_OP_A..D,
  NON_STALL_INTERRUPT (no effect here); an unknown host method is a PBDMA error;
- compute class (clc6c0.h ...): SEND_PCAS_A (the QMD's address >> 8) and SEND_SIGNALING_PCAS2_B
  (action SCHEDULE or INVALIDATE_COPY_SCHEDULE) launch the QMD in a version the channel's compute
  class reads (03_00 for Ampere/Ada, 04_00 or 03_00 for Hopper: `QMD_VERSIONS_OF_CLASS`; another
  version is a GR exception), checked as the hardware would reject it: `check_qmd`; other methods
  are stored;
- copy class (clc6b5.h ...): OFFSET_IN/OUT, LINE_LENGTH_IN, LINE_COUNT, SET_SEMAPHORE_*, LAUNCH_DMA
  (pitch-linear, one line; a one-word or four-word semaphore release after it).

GPU virtual addresses resolve through the mappings UVM recorded (`UVMFile.gpu_translate`); an
access to an unmapped address is an MMU fault. Semaphores are checked for alignment (8 bytes for a
64-bit payload, 16 for a release or reduction with a timestamp: dev_pbdma.ref.txt). A fault tears
the channel's whole channel group (TSG) down, as the RM's robust-channel handling does: every
channel of the group stops fetching and gets its error notifier written (nvgputypes.h
NvNotification: timeStamp, info32 = the nverror.h ROBUST_CHANNEL_* code, info16 = the NV2080 engine
type, status 0xffff); the fault is recorded in `errors`. Channels the RM freed are forgotten, so a
client can free the group and allocate a new one.

**How kernels run.** The mock cannot execute SASS. A launch's program address holds the SASS the
driver uploaded; the model compares the bytes there with the SASS of the kernels it was told
about (`programs`, a `ProgramRegistry`: tools.mock_machines registers the kernel library's
fatbinaries, and the compute layer registers any other binary it loads on a mock through the
machine's `register_program`) and runs the PTX of the same kernel from the same fatbinary with
mockgpu.nv.ptx, reading the parameters from constant bank 0 at the offset the cubin's
EIATTR_PARAM_CBANK gives. SASS the registry does not know is an illegal instruction (a GR
exception).

`hold(True)` stops fetching (doorbells are noted) until `hold(False)`, so a benchmark can time the
driver alone. Fault hooks: `inject("rc")` fails the next launch with a GR exception, `inject("mmu")`
faults the
next launch's first memory access, `inject("hang")` makes the next semaphore acquire never succeed.
"""
from __future__ import annotations

import dataclasses
import logging
import struct
import time

from autogen.nv import qmd as qmd_layout
from autogen.nv import qmd_v04 as qmd_v04_layout
from autogen.nv.r535 import classes as cl
from hal.errors import HalError
from mockgpu.nv.ptx import Kernel
from mockgpu.nv.ptx.interpreter import MemoryFault

log = logging.getLogger(__name__)

# clc56f.h dma method formats (the generator leaves the hi:lo ranges out)
_SEC_OP_SHIFT = 29
_COUNT_SHIFT = 16
_COUNT_MASK = 0x1FFF
_SUBCHANNEL_SHIFT = 13
_SUBCHANNEL_MASK = 7
_ADDRESS_MASK = 0xFFF
_HOST_METHOD_LIMIT = 0x100  # clc56f.h: host methods occupy 0x0000-0x00fc
# clc56f.h GP_ENTRY1: GET_HI 7:0, LENGTH 30:10
_GP_GET_HI_MASK = 0xFF
_GP_LENGTH_SHIFT = 10
_GP_LENGTH_MASK = 0x1FFFFF
# clc56f.h SEM_EXECUTE fields: OPERATION 2:0, PAYLOAD_SIZE 24:24, RELEASE_TIMESTAMP 25:25
_SEM_OPERATION_MASK = 0x7
_SEM_PAYLOAD_SIZE_SHIFT = 24
_SEM_TIMESTAMP_SHIFT = 25
# clc56f.h SEM_EXECUTE_REDUCTION 30:27 and REDUCTION_FORMAT 31:31; the reductions modelled
_SEM_REDUCTION_SHIFT = 27
_SEM_REDUCTION_MASK = 0xF
_SEM_FORMAT_SHIFT = 31
_REDUCTIONS = {cl.NVC56F_SEM_EXECUTE_REDUCTION_IMIN: min, cl.NVC56F_SEM_EXECUTE_REDUCTION_IMAX: max,
               cl.NVC56F_SEM_EXECUTE_REDUCTION_IXOR: lambda a, b: a ^ b,
               cl.NVC56F_SEM_EXECUTE_REDUCTION_IAND: lambda a, b: a & b,
               cl.NVC56F_SEM_EXECUTE_REDUCTION_IOR: lambda a, b: a | b,
               cl.NVC56F_SEM_EXECUTE_REDUCTION_IADD: lambda a, b: a + b}
_ORDERED_REDUCTIONS = (cl.NVC56F_SEM_EXECUTE_REDUCTION_IMIN, cl.NVC56F_SEM_EXECUTE_REDUCTION_IMAX)
# clc6b5.h LAUNCH_DMA fields: DATA_TRANSFER_TYPE 1:0, SEMAPHORE_TYPE 4:3, SRC_MEMORY_LAYOUT 7:7,
# DST_MEMORY_LAYOUT 8:8, MULTI_LINE_ENABLE 9:9
_DMA_TRANSFER_MASK = 0x3
_DMA_SEMAPHORE_SHIFT = 3
_DMA_SEMAPHORE_MASK = 0x3
_DMA_SRC_PITCH_BIT = 1 << 7
_DMA_DST_PITCH_BIT = 1 << 8
_DMA_MULTI_LINE_BIT = 1 << 9
# clc6c0.h SEND_SIGNALING_PCAS2_B_PCAS_ACTION 3:0
_PCAS_ACTION_MASK = 0xF
_PCAS_LAUNCH_ACTIONS = (cl.NVC6C0_SEND_SIGNALING_PCAS2_B_PCAS_ACTION_SCHEDULE,
                        cl.NVC6C0_SEND_SIGNALING_PCAS2_B_PCAS_ACTION_INVALIDATE_COPY_SCHEDULE)
# nverror.h robust-channel error codes written to the error notifier's info32
ROBUST_CHANNEL_GR_EXCEPTION = 13
ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT = 31
ROBUST_CHANNEL_PBDMA_ERROR = 32
ROBUST_CHANNEL_CE0_ERROR = 39
# nvgputypes.h NvNotification.status of a robust-channel error: krcErrorSetNotifier passes 0xffff
# as notifierStatus (NVIDIA/open-gpu-kernel-modules 535.113.01
# src/nvidia/src/kernel/gpu/rc/kernel_rc_notification.c)
NOTIFICATION_STATUS_ERROR = 0xFFFF
NOTIFICATION_SIZE = 16
# QMD 03_00 (autogen.nv.qmd, from Mesa's clc6c0qmd.h): 256 bytes; the fields checked below
QMD_SIZE = 256
_QMD = "NVC6C0_QMDV03_00_"
_QMD_CHECKED = ("CTA_RASTER_WIDTH", "CTA_RASTER_HEIGHT", "CTA_RASTER_DEPTH", "SHARED_MEMORY_SIZE",
                "QMD_VERSION", "QMD_MAJOR_VERSION", "CTA_THREAD_DIMENSION0", "CTA_THREAD_DIMENSION1",
                "CTA_THREAD_DIMENSION2", "REGISTER_COUNT_V", "PROGRAM_ADDRESS_LOWER",
                "PROGRAM_ADDRESS_UPPER", "SHADER_LOCAL_MEMORY_HIGH_SIZE")
_QMD_BANK0 = ("CONSTANT_BUFFER_VALID", "CONSTANT_BUFFER_ADDR_LOWER", "CONSTANT_BUFFER_ADDR_UPPER",
              "CONSTANT_BUFFER_SIZE_SHIFTED4")
QMD_FIELDS = {name: qmd_layout.FIELDS[_QMD + name] for name in _QMD_CHECKED}
QMD_FIELDS.update({f"{name}0": qmd_layout.INDEXED[_QMD + name][:2] for name in _QMD_BANK0})
QMD_FIELDS["CONSTANT_BUFFER_SIZE_SHIFTED4_0"] = QMD_FIELDS.pop("CONSTANT_BUFFER_SIZE_SHIFTED40")
# QMD 04_00 (autogen.nv.qmd_v04, from NVIDIA's clcbc0qmd.h): the same fields under their 04_00
# names (the grid is GRID_*, the minor version QMD_MINOR_VERSION, the register count REGISTER_COUNT,
# and constant bank addresses are stored >> 6: CONSTANT_BUFFER_ADDR_*_SHIFTED6)
_QMD4 = "NVCBC0_QMDV04_00_"
_QMD4_NAMES = {"CTA_RASTER_WIDTH": "GRID_WIDTH", "CTA_RASTER_HEIGHT": "GRID_HEIGHT",
               "CTA_RASTER_DEPTH": "GRID_DEPTH", "QMD_VERSION": "QMD_MINOR_VERSION",
               "REGISTER_COUNT_V": "REGISTER_COUNT",
               "CONSTANT_BUFFER_ADDR_LOWER": "CONSTANT_BUFFER_ADDR_LOWER_SHIFTED6",
               "CONSTANT_BUFFER_ADDR_UPPER": "CONSTANT_BUFFER_ADDR_UPPER_SHIFTED6"}
QMD4_FIELDS = {name: qmd_v04_layout.FIELDS[_QMD4 + _QMD4_NAMES.get(name, name)] for name in _QMD_CHECKED}
QMD4_FIELDS.update({f"{name}0": qmd_v04_layout.INDEXED[_QMD4 + _QMD4_NAMES.get(name, name)][:2]
                    for name in _QMD_BANK0})
QMD4_FIELDS["CONSTANT_BUFFER_SIZE_SHIFTED4_0"] = QMD4_FIELDS.pop("CONSTANT_BUFFER_SIZE_SHIFTED40")


@dataclasses.dataclass(frozen=True)
class QMDVersion:
    """A QMD layout a compute class reads: its version, size and the fields the model checks."""

    major: int
    minor: int
    size: int
    fields: dict
    constant_shift: int  # constant bank addresses are stored >> this
    header: str


QMD_V03_00 = QMDVersion(3, 0, QMD_SIZE, QMD_FIELDS, 0, "clc6c0qmd.h QMDV03_00")
# clcbc0qmd.h: the highest 04_00 field ends at bit 3071, so the engine reads 384 bytes
QMD_V04_00 = QMDVersion(4, 0, (max(high for high, _ in qmd_v04_layout.FIELDS.values()) + 1) // 8,
                        QMD4_FIELDS, 6, "clcbc0qmd.h QMDV04_00")
# the QMD versions each compute class reads, as its class's QMD header defines them (the model
# decodes 03_00 and 04_00): clc6c0qmd.h/clc7c0qmd.h define 02_03, 02_04 and 03_00 for Ampere and Ada;
# Hopper's clcbc0qmd.h defines 03_00 and 04_00. The first is the class's newest, which the driver sends.
QMD_VERSIONS_OF_CLASS = {cl.AMPERE_COMPUTE_A: (QMD_V03_00,), cl.AMPERE_COMPUTE_B: (QMD_V03_00,),
                         cl.ADA_COMPUTE_A: (QMD_V03_00,), cl.HOPPER_COMPUTE_A: (QMD_V04_00, QMD_V03_00)}
# older versions the class headers define but the model does not decode: refused as not modelled
QMD_UNMODELLED_VERSIONS = {cl.AMPERE_COMPUTE_A: ((2, 3), (2, 4)), cl.AMPERE_COMPUTE_B: ((2, 3), (2, 4)),
                           cl.ADA_COMPUTE_A: ((2, 3), (2, 4))}
# CUDA C++ Programming Guide, "Technical Specifications per Compute Capability": threads per block
# 1024, block dimensions (1024, 1024, 64), grid (2**31 - 1, 65535, 65535), 255 registers per thread
MAX_THREADS_PER_BLOCK = 1024
MAX_BLOCK = (1024, 1024, 64)
MAX_GRID = ((1 << 31) - 1, 65535, 65535)
MAX_REGISTERS = 255
CONSTANT_BANK_MAX = 1 << 16  # 64 KiB of constant memory per bank (same table)
# same table, "Maximum amount of shared memory per thread block": 163 KiB on 8.0 (GA100), 99 KiB
# on 8.6 (GA10x) and 8.9 (AD10x), 227 KiB on 9.0 (GH100)
MAX_SHARED_PER_BLOCK = {"GA100": 163 << 10, "GA102": 99 << 10, "AD102": 99 << 10, "GH100": 227 << 10}
# same guide: 1 KB more per block is reserved for system use on 8.x and 9.0, so a block's QMD may
# ask for the kernel's maximum plus that (the SM carve-outs are 164, 100 and 228 KB)
SHARED_RESERVE_PER_BLOCK = 1 << 10
SHARED_WINDOW_ALIGNMENT_HOPPER = 1 << 32  # see GPUModel._check_windows
# Local memory as nvcc's SASS and the SM use it. No NVIDIA document we have states these: they are
# the rules the driver's peers apply, which this model enforces as such. tinygrad's ops_nv.py
# (NVProgram and NVDevice._ensure_has_local_memory, the nvcc path): every kernel loads its stack
# pointer from constant bank 0 at 0x28, where CUDA's launches put 0xfffdc0 (the top of each thread's
# 16 MiB local range less 0x240), and needs EIATTR_MIN_STACK_SIZE + 0x240 bytes per thread backed at
# the top of the range (QMD SHADER_LOCAL_MEMORY_HIGH_SIZE). A TPC's slice of the local memory buffer
# (SET_SHADER_LOCAL_MEMORY_NON_THROTTLED_A/B) holds round_up(per thread * 32, 0x200) bytes for each
# warp of each SM (tinygrad, and Mesa's src/nouveau/vulkan/nvk_device.c nvk_slm_area_ensure), and
# the buffer (SET_SHADER_LOCAL_MEMORY_A/B) has a slice for every TPC of the die.
STACK_TOP = 0xFFFDC0
STACK_POINTER_OFFSET = 0x28
LOCAL_RESERVE = 0x240
WARP_SIZE = 32
LOCAL_WARP_ALIGNMENT = 0x200


class ChannelFault(Exception):
    """A method the hardware would refuse or an access it could not translate: RC the channel."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code
        self.why = why


class _MMUFault(HalError):
    pass


@dataclasses.dataclass
class RegisteredKernel:
    """One kernel of a fatbinary the model can run: its SASS, PTX and constant-bank layout."""

    name: str
    sass: bytes
    ptx: str
    param_offset: int
    param_size: int
    static_shared: int
    min_stack_size: int = 0  # the cubin's EIATTR_MIN_STACK_SIZE (0 when it has none)
    kernel: Kernel | None = None


class ProgramRegistry:
    """SASS bytes -> the PTX of the same kernel (see the module docstring)."""

    def __init__(self) -> None:
        self.by_prefix: dict[bytes, list[RegisteredKernel]] = {}

    def add(self, name: str, sass: bytes, ptx: str, param_offset: int, param_size: int,
            static_shared: int = 0, min_stack_size: int = 0) -> None:
        entry = RegisteredKernel(name, bytes(sass), ptx, param_offset, param_size, static_shared,
                                 min_stack_size)
        bucket = self.by_prefix.setdefault(entry.sass[:32], [])
        if not any(known.sass == entry.sass and known.name == name for known in bucket):
            bucket.append(entry)

    def find(self, read) -> RegisteredKernel | None:
        """The kernel whose SASS is at the program address (`read(offset, n)` reads there)."""
        for entry in self.by_prefix.get(read(0, 32), []):
            if read(0, len(entry.sass)) == entry.sass:
                return entry
        return None


@dataclasses.dataclass
class _Channel:
    obj: object
    engine_class: int
    subchannels: dict[int, int] = dataclasses.field(default_factory=dict)
    methods: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)  # current segment
    method_index: int = 0
    get: int = 0
    state: dict[int, int] = dataclasses.field(default_factory=dict)  # method -> last value
    faulted: bool = False
    blocked: str = ""  # what an acquire waits for
    hung: bool = False  # inject("hang") caught this channel's acquire


class GPUMemory:
    """GPU virtual memory through UVM's recorded external mappings."""

    def __init__(self, driver) -> None:
        self.driver = driver
        self.fault_next = False

    def _translate(self, address: int, size: int) -> tuple[bytearray, int, int]:
        for space in self.driver.uvm_spaces:
            found = space.gpu_translate(address)
            if found is not None:
                memory, offset = found
                length = next(length for start, (length, _, m) in space.mappings.items()
                              if m is memory and start <= address < start + length)
                start = next(start for start, (_, _, m) in space.mappings.items()
                             if m is memory and start <= address < start + length)
                return memory.backing, offset, min(size, start + length - address)
        raise _MMUFault(f"GPU address {address:#x} is not mapped")

    def read(self, address: int, size: int) -> bytes:
        if self.fault_next:
            self.fault_next = False
            raise _MMUFault(f"injected MMU fault reading {address:#x}")
        out = bytearray()
        while len(out) < size:
            backing, offset, run = self._translate(address + len(out), size - len(out))
            out += backing[offset:offset + run]
        return bytes(out)

    def first_unmapped(self, address: int, size: int) -> int | None:
        """The first address of [address, address + size) no mapping covers, None if all are
        (nothing is read: a local memory buffer is checked without copying it)."""
        position = address
        end = address + size
        while position < end:
            covered = None
            for space in self.driver.uvm_spaces:
                for start, (length, _, _) in space.mappings.items():
                    if start <= position < start + length:
                        covered = start + length
                        break
                if covered is not None:
                    break
            if covered is None:
                return position
            position = covered
        return None

    def write(self, address: int, data) -> None:
        if self.fault_next:
            self.fault_next = False
            raise _MMUFault(f"injected MMU fault writing {address:#x}")
        data = bytes(data)
        done = 0
        while done < len(data):
            backing, offset, run = self._translate(address + done, len(data) - done)
            backing[offset:offset + run] = data[done:done + run]
            done += run


class GPUModel:
    """The GPU of one mock NVIDIA driver (see the module docstring)."""

    def __init__(self, driver) -> None:
        self.driver = driver
        self.memory = GPUMemory(driver)
        self.programs = ProgramRegistry()
        self.channels: dict[int, _Channel] = {}  # id(channel RMObject) -> state
        self.errors: list[tuple[int, str]] = []  # (ROBUST_CHANNEL_* code, why)
        self.launches = 0
        self.copies = 0
        self._inject: set[str] = set()
        self._running = False
        self.held = False  # `hold(True)`: doorbells are noted, nothing runs (benchmarks of the driver)

    def inject(self, kind: str) -> None:
        """Arm a fault for the next launch ("rc", "mmu") or acquire ("hang")."""
        if kind not in ("rc", "mmu", "hang"):
            raise ValueError(f"unknown fault {kind!r}: rc, mmu or hang")
        self._inject.add(kind)

    def hold(self, held: bool) -> None:
        """Stop (True) or restart (False) fetching; on restart everything pending runs."""
        self.held = held
        if not held:
            self._forget_freed()
            for state in list(self.channels.values()):
                self.doorbell(state.obj.info["work_submit_token"])
                break

    @staticmethod
    def clock_ns() -> int:
        # semaphore timestamps and NvNotification.timeStamp count nanoseconds (nvgputypes.h)
        return time.monotonic_ns()

    # -- doorbell ----------------------------------------------------------------------------------
    def doorbell(self, token: int) -> None:
        """NOTIFY_CHANNEL_PENDING with a work-submit token: run what every channel can."""
        channel = self._channel_by_token(token)
        if channel is None:
            log.warning("doorbell with unknown work-submit token %#x ignored", token)
            return
        if self._running or self.held:
            return  # the running loop (or the restart after a hold) picks the work up
        self._running = True
        try:
            self._forget_freed()
            progress = True
            while progress:
                progress = False
                for state in list(self.channels.values()):
                    progress |= self._run_channel(state)
        finally:
            self._running = False

    def _channel_by_token(self, token: int):
        """The live channel whose work-submit token this is; None for a freed channel's token (the RM
        hands a freed channel's ID out again only to a new channel, which gets its own state)."""
        for client in self.driver.rm.clients.values():
            for obj in client.objects.values():
                if obj.info.get("work_submit_token") == token and "gpfifo_entries" in obj.info:
                    return self._state_of(obj)
        return None

    def _state_of(self, obj) -> _Channel:
        engine = next((child.cls for child in obj.children.values()), 0)
        state = self.channels.get(id(obj))
        if state is None or state.obj is not obj:
            state = _Channel(obj, engine)
            self.channels[id(obj)] = state
        if engine:
            state.engine_class = engine
        return state

    def _forget_freed(self) -> None:
        """Drop the state of channels the RM freed (with their channel group, or alone)."""
        for key, state in list(self.channels.items()):
            if state.obj.info.get("freed"):
                del self.channels[key]

    def _userd(self, state: _Channel) -> tuple[bytearray, int]:
        handle, offset = state.obj.info["userd"]
        client = self._client_of(state.obj)
        return client.objects[handle].backing, offset

    def _client_of(self, obj):
        for client in self.driver.rm.clients.values():
            if client.objects.get(obj.handle) is obj:
                return client
        raise ChannelFault(ROBUST_CHANNEL_PBDMA_ERROR, f"channel {obj.handle:#x} has no client any more")

    def _run_channel(self, state: _Channel) -> bool:
        """Execute until the channel is idle or blocked; True when anything moved."""
        if state.faulted:
            return False
        backing, userd = self._userd(state)
        put = struct.unpack_from("<I", backing, userd + 0x8C)[0]  # Nvc86fControl_struct.GPPut
        entries = state.obj.info["gpfifo_entries"]
        moved = False
        try:
            while True:
                if state.method_index < len(state.methods):
                    if not self._execute(state):
                        return moved
                    moved = True
                    continue
                if state.get == put % entries:
                    return moved
                ring = state.obj.info["gpfifo_offset"]
                word0, word1 = struct.unpack("<II", self._read(ring + state.get * 8, 8))
                address = (word0 & 0xFFFFFFFC) | (word1 & _GP_GET_HI_MASK) << 32
                dwords = (word1 >> _GP_LENGTH_SHIFT) & _GP_LENGTH_MASK
                state.methods = self._decode(self._read(address, dwords * 4)) if dwords else []
                state.method_index = 0
                state.get = (state.get + 1) % entries
                struct.pack_into("<I", backing, userd + 0x88, state.get)  # GPGet
                moved = True
        except ChannelFault as fault:
            self._rc(state, fault.code, fault.why)
            return True

    def _read(self, address: int, size: int) -> bytes:
        try:
            return self.memory.read(address, size)
        except _MMUFault as fault:
            raise ChannelFault(ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT, str(fault)) from None

    def _write(self, address: int, data: bytes) -> None:
        try:
            self.memory.write(address, data)
        except _MMUFault as fault:
            raise ChannelFault(ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT, str(fault)) from None

    @staticmethod
    def _decode(segment: bytes) -> list[tuple[int, int, int]]:
        """(subchannel, method byte offset, value) for every method of a pushbuffer segment."""
        words = struct.unpack(f"<{len(segment) // 4}I", segment)
        out: list[tuple[int, int, int]] = []
        index = 0
        while index < len(words):
            header = words[index]
            index += 1
            sec_op = header >> _SEC_OP_SHIFT
            subchannel = (header >> _SUBCHANNEL_SHIFT) & _SUBCHANNEL_MASK
            method = (header & _ADDRESS_MASK) << 2
            count = (header >> _COUNT_SHIFT) & _COUNT_MASK
            if header == 0:
                continue  # NVC56F_DMA_NOP
            if sec_op == cl.NVC56F_DMA_SEC_OP_IMMD_DATA_METHOD:
                out.append((subchannel, method, count))
                continue
            if sec_op not in (cl.NVC56F_DMA_SEC_OP_INC_METHOD, cl.NVC56F_DMA_SEC_OP_NON_INC_METHOD,
                              cl.NVC56F_DMA_SEC_OP_ONE_INC):
                raise ChannelFault(ROBUST_CHANNEL_PBDMA_ERROR,
                                   f"method header {header:#010x}: SEC_OP {sec_op} is not supported")
            if index + count > len(words):
                raise ChannelFault(ROBUST_CHANNEL_PBDMA_ERROR,
                                   f"method header {header:#010x} wants {count} words past the segment")
            for position in range(count):
                if sec_op == cl.NVC56F_DMA_SEC_OP_INC_METHOD:
                    step = position
                elif sec_op == cl.NVC56F_DMA_SEC_OP_ONE_INC:
                    step = min(position, 1)
                else:
                    step = 0
                out.append((subchannel, method + 4 * step, words[index + position]))
            index += count
        return out

    # -- methods -----------------------------------------------------------------------------------
    def _execute(self, state: _Channel) -> bool:
        """Run one method; False when it blocks (an unsatisfied acquire)."""
        subchannel, method, value = state.methods[state.method_index]
        if method < _HOST_METHOD_LIMIT:
            if not self._host_method(state, subchannel, method, value):
                return False
        else:
            bound = state.subchannels.get(subchannel)
            if bound is None:
                raise ChannelFault(ROBUST_CHANNEL_PBDMA_ERROR, f"method {method:#x} on subchannel "
                                   f"{subchannel}, which no SET_OBJECT bound")
            state.state[method] = value
            if bound in _COMPUTE_CLASSES:
                self._compute_method(state, method, value)
            else:
                self._copy_method(state, method, value)
        state.method_index += 1
        return True

    def _host_method(self, state: _Channel, subchannel: int, method: int, value: int) -> bool:
        if method == cl.NVC86F_SET_OBJECT:
            class_id = value & 0xFFFF  # clc6c0.h SET_OBJECT_CLASS_ID 15:0
            if class_id != state.engine_class:
                raise ChannelFault(ROBUST_CHANNEL_PBDMA_ERROR, f"SET_OBJECT {class_id:#x} on a channel "
                                   f"whose engine object is {state.engine_class:#x}")
            state.subchannels[subchannel] = class_id
            return True
        if method in _HOST_STORED:
            state.state[method] = value
            return True
        if method == cl.NVC86F_SEM_EXECUTE:
            return self._semaphore(state, value)
        if method in _HOST_NO_EFFECT:
            return True
        raise ChannelFault(ROBUST_CHANNEL_PBDMA_ERROR, f"host method {method:#x} is not one the mock knows")

    def _semaphore(self, state: _Channel, value: int) -> bool:
        regs = state.state
        address = regs.get(cl.NVC86F_SEM_ADDR_LO, 0) | regs.get(cl.NVC86F_SEM_ADDR_HI, 0) << 32
        payload = regs.get(cl.NVC86F_SEM_PAYLOAD_LO, 0) | regs.get(cl.NVC86F_SEM_PAYLOAD_HI, 0) << 32
        wide = (value >> _SEM_PAYLOAD_SIZE_SHIFT) & 1 == cl.NVC56F_SEM_EXECUTE_PAYLOAD_SIZE_64BIT
        operation = value & _SEM_OPERATION_MASK
        size = 8 if wide else 4
        timestamped = (value >> _SEM_TIMESTAMP_SHIFT) & 1 == cl.NVC56F_SEM_EXECUTE_RELEASE_TIMESTAMP_EN
        releases = operation in (cl.NVC56F_SEM_EXECUTE_OPERATION_RELEASE,
                                 cl.NVC56F_SEM_EXECUTE_OPERATION_REDUCTION)
        # NVIDIA/open-gpu-doc c8607fe576b53ff821ffcf97e7548d2de11c4eaf manuals/ampere/ga100/
        # dev_pbdma.ref.txt SEM_EXECUTE: a 64-bit payload needs an 8-byte aligned address (SEM_ADDR_LO
        # keeps bits 31:2, so 4 bytes at least); with RELEASE_TIMESTAMP EN on a RELEASE or REDUCTION
        # 16 bytes are written and the address must be 16-byte aligned (an acquire ignores the bit);
        # otherwise Host raises NV_PBDMA_INTR_0_SEMAPHORE, which the RM reports as a PBDMA error
        alignment = 16 if timestamped and releases else size
        if address % alignment:
            what = "a timestamped release" if alignment == 16 else f"a {size * 8}-bit semaphore"
            raise ChannelFault(ROBUST_CHANNEL_PBDMA_ERROR, f"semaphore at {address:#x} is not "
                               f"{alignment}-byte aligned, as {what} needs (NV_PBDMA_INTR_0_SEMAPHORE)")
        if not wide:
            payload &= 0xFFFFFFFF
        if operation == cl.NVC56F_SEM_EXECUTE_OPERATION_RELEASE:
            if timestamped:
                self._release_timestamped(address, payload)
            else:
                self._write(address, payload.to_bytes(size, "little"))
            return True
        if operation in (cl.NVC56F_SEM_EXECUTE_OPERATION_ACQ_STRICT_GEQ,
                         cl.NVC56F_SEM_EXECUTE_OPERATION_ACQ_CIRC_GEQ,
                         cl.NVC56F_SEM_EXECUTE_OPERATION_ACQUIRE):
            if "hang" in self._inject:
                self._inject.discard("hang")
                state.blocked = f"semaphore at {address:#x} (injected hang)"
                state.hung = True  # this acquire is never satisfied: the hook's meaning
            if state.hung:
                return False
            current = int.from_bytes(self._read(address, size), "little")
            if operation == cl.NVC56F_SEM_EXECUTE_OPERATION_ACQUIRE:
                satisfied = current == payload
            elif operation == cl.NVC56F_SEM_EXECUTE_OPERATION_ACQ_STRICT_GEQ:
                satisfied = current >= payload
            else:
                # circular: the difference, as a signed number of the payload's width, is >= 0
                bits = size * 8
                satisfied = (current - payload) % (1 << bits) < 1 << (bits - 1)
            state.blocked = "" if satisfied else f"semaphore at {address:#x} >= {payload}"
            return satisfied
        if operation == cl.NVC56F_SEM_EXECUTE_OPERATION_REDUCTION:
            reduction = (value >> _SEM_REDUCTION_SHIFT) & _SEM_REDUCTION_MASK
            unsigned = (value >> _SEM_FORMAT_SHIFT) & 1 == cl.NVC56F_SEM_EXECUTE_REDUCTION_FORMAT_UNSIGNED
            if reduction not in _REDUCTIONS or (reduction in _ORDERED_REDUCTIONS and not unsigned):
                raise ChannelFault(ROBUST_CHANNEL_PBDMA_ERROR, f"semaphore reduction {reduction} "
                                   f"(unsigned {unsigned}) is not modelled")
            current = int.from_bytes(self._read(address, size), "little")
            result = _REDUCTIONS[reduction](current, payload) % (1 << (8 * size))
            if timestamped:
                self._release_timestamped(address, result)
            else:
                self._write(address, result.to_bytes(size, "little"))
            return True
        raise ChannelFault(ROBUST_CHANNEL_PBDMA_ERROR, f"SEM_EXECUTE operation {operation} is not supported")

    def _release_timestamped(self, address: int, payload: int) -> None:
        """The 16-byte semaphore (dev_pbdma.ref.txt at the commit above, "Semaphore timestamp
        option"): the payload in bytes 0-7 (a 32-bit payload's upper half is 0), the ns timer in bytes
        8-15, the timestamp written before the payload so a satisfied acquire sees a fresh time."""
        self._write(address + 8, self.clock_ns().to_bytes(8, "little"))
        self._write(address, payload.to_bytes(8, "little"))

    # -- compute -------------------------------------------------------------------------------------
    def _compute_method(self, state: _Channel, method: int, value: int) -> None:
        if method == cl.NVC6C0_SEND_SIGNALING_PCAS2_B:
            action = value & _PCAS_ACTION_MASK
            if action in _PCAS_LAUNCH_ACTIONS:
                address = state.state.get(cl.NVC6C0_SEND_PCAS_A, 0) << 8
                self._launch(address, state)

    def _launch(self, address: int, state: _Channel) -> None:
        compute_class = state.engine_class
        # every QMD version keeps its version in bits 583:576 (see check_qmd): read the shortest
        # layout first, then the rest the version it names needs
        qmd = self._read(address, QMD_V03_00.size)
        version = qmd_version_of(qmd, compute_class)
        if version is not None and version.size > len(qmd):
            qmd = self._read(address, version.size)
        if "rc" in self._inject:
            self._inject.discard("rc")
            raise ChannelFault(ROBUST_CHANNEL_GR_EXCEPTION, "injected graphics exception")
        limit = MAX_SHARED_PER_BLOCK[self.driver.gpu.chip] + SHARED_RESERVE_PER_BLOCK
        grid, block, cb0, cb0_size, program, shared = check_qmd(qmd, limit, compute_class)
        for start, size in ((cb0, cb0_size), (program, 32)):
            self._read(start, size)  # an unmapped bank or program is an MMU fault at launch
        kernel = self.programs.find(lambda offset, n: self._read(program + offset, n))
        if kernel is None:
            raise ChannelFault(ROBUST_CHANNEL_GR_EXCEPTION, f"illegal instruction: the SASS at {program:#x} "
                               f"is no kernel the mock knows (register its fatbinary)")
        if kernel.kernel is None:
            kernel.kernel = Kernel.from_ptx(kernel.ptx, kernel.name)
        self._check_windows(state, compute_class)
        constants = self._read(cb0, cb0_size)
        self._check_local_memory(kernel, qmd_field(qmd, "SHADER_LOCAL_MEMORY_HIGH_SIZE", compute_class),
                                 constants, state)
        if kernel.param_offset + kernel.param_size > cb0_size:
            raise ChannelFault(ROBUST_CHANNEL_GR_EXCEPTION, f"{kernel.name}: parameters at "
                               f"{kernel.param_offset:#x}+{kernel.param_size} past constant bank 0's "
                               f"{cb0_size}")
        params = constants[kernel.param_offset:kernel.param_offset + kernel.param_size]
        if "mmu" in self._inject:
            self._inject.discard("mmu")
            self.memory.fault_next = True
        # SHARED_MEMORY_SIZE covers the static variables (and sm_90's reserved 1 KiB), which the
        # interpreter lays out itself; what lies beyond them is the dynamic shared memory
        dynamic = max(0, shared - -(-kernel.static_shared // 256) * 256)
        try:
            kernel.kernel.run(grid, block, params, self.memory, shared_bytes=dynamic)
        except (_MMUFault, MemoryFault) as fault:
            self.memory.fault_next = False
            raise ChannelFault(ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT, f"{kernel.name}: {fault}") from None
        except HalError as fault:
            raise ChannelFault(ROBUST_CHANNEL_GR_EXCEPTION, f"{kernel.name}: {fault}") from None
        self.launches += 1

    @staticmethod
    def _check_windows(state: _Channel, compute_class: int) -> None:
        """The shared and local memory windows a launch needs (Mesa src/nouveau/vulkan/
        nvk_cmd_dispatch.c nvk_push_dispatch_state_init: "We set memory windows unconditionally.
        Otherwise, the memory window might be in a random place and cause us to fault off into
        nowhere", and "shared memory window needs 4GB alignment on hopper+")."""
        regs = state.state
        windows = {"shared": (cl.NVC6C0_SET_SHADER_SHARED_MEMORY_WINDOW_A,
                              cl.NVC6C0_SET_SHADER_SHARED_MEMORY_WINDOW_B),
                   "local": (cl.NVC6C0_SET_SHADER_LOCAL_MEMORY_WINDOW_A,
                             cl.NVC6C0_SET_SHADER_LOCAL_MEMORY_WINDOW_B)}
        for name, (upper, lower) in windows.items():
            if upper not in regs or lower not in regs:
                raise ChannelFault(ROBUST_CHANNEL_GR_EXCEPTION, f"launch without a {name} memory window "
                                   f"(SET_SHADER_{name.upper()}_MEMORY_WINDOW_A/B never sent)")
        shared = regs[windows["shared"][0]] << 32 | regs[windows["shared"][1]]
        if compute_class == cl.HOPPER_COMPUTE_A and shared % SHARED_WINDOW_ALIGNMENT_HOPPER:
            raise ChannelFault(ROBUST_CHANNEL_GR_EXCEPTION, f"shared memory window at {shared:#x}: Hopper "
                               f"needs it {SHARED_WINDOW_ALIGNMENT_HOPPER >> 30} GiB aligned")

    def _check_local_memory(self, kernel: RegisteredKernel, high: int, constants: bytes,
                            state: _Channel) -> None:
        """What the SM would fault on when the kernel touches its stack (see STACK_TOP): the stack
        pointer in constant bank 0, the QMD's high local size, and the channel's local memory buffer
        (SET_SHADER_LOCAL_MEMORY_A/B and _NON_THROTTLED_A/B) for every TPC of the die. The model cannot
        tell whether the SASS touches its stack, so it refuses these for every launch."""
        def fault(why: str) -> ChannelFault:
            return ChannelFault(ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT, f"{kernel.name}: local memory: {why}")

        stack = constants[STACK_POINTER_OFFSET:STACK_POINTER_OFFSET + 8]
        pointer = int.from_bytes(stack, "little") if len(stack) == 8 else None
        if pointer != STACK_TOP:
            shown = "past the bank's end" if pointer is None else f"{pointer:#x}"
            raise fault(f"the stack pointer the kernel loads from constant bank 0 at "
                        f"{STACK_POINTER_OFFSET:#x} is {shown}, not the stack top {STACK_TOP:#x}")
        need = kernel.min_stack_size + LOCAL_RESERVE
        if high < need:
            raise fault(f"the QMD's SHADER_LOCAL_MEMORY_HIGH_SIZE is {high} bytes per thread; the kernel "
                        f"needs {need} (EIATTR_MIN_STACK_SIZE {kernel.min_stack_size} + the "
                        f"{LOCAL_RESERVE:#x}-byte area above the stack top)")
        regs = state.state
        methods = (cl.NVC6C0_SET_SHADER_LOCAL_MEMORY_A, cl.NVC6C0_SET_SHADER_LOCAL_MEMORY_B,
                   cl.NVC6C0_SET_SHADER_LOCAL_MEMORY_NON_THROTTLED_A,
                   cl.NVC6C0_SET_SHADER_LOCAL_MEMORY_NON_THROTTLED_B)
        if any(method not in regs for method in methods):
            raise fault("no local memory buffer: SET_SHADER_LOCAL_MEMORY_A/B and "
                        "SET_SHADER_LOCAL_MEMORY_NON_THROTTLED_A/B were never sent on this channel")
        base = regs[cl.NVC6C0_SET_SHADER_LOCAL_MEMORY_A] << 32 | regs[cl.NVC6C0_SET_SHADER_LOCAL_MEMORY_B]
        per_tpc = (regs[cl.NVC6C0_SET_SHADER_LOCAL_MEMORY_NON_THROTTLED_A] << 32
                   | regs[cl.NVC6C0_SET_SHADER_LOCAL_MEMORY_NON_THROTTLED_B])
        gpu = self.driver.gpu
        per_warp = -(-high * WARP_SIZE // LOCAL_WARP_ALIGNMENT) * LOCAL_WARP_ALIGNMENT
        wanted = per_warp * gpu.max_warps_per_sm * gpu.sms_per_tpc
        if per_tpc < wanted:
            raise fault(f"SET_SHADER_LOCAL_MEMORY_NON_THROTTLED gives each TPC {per_tpc:#x} bytes; "
                        f"{high} bytes per thread need {wanted:#x} ({per_warp:#x} per warp x "
                        f"{gpu.max_warps_per_sm} warps x {gpu.sms_per_tpc} SMs)")
        size = per_tpc * gpu.tpcs
        hole = self.memory.first_unmapped(base, size)
        if hole is not None:
            raise fault(f"the buffer at {base:#x} must hold {gpu.tpcs} TPC slices of {per_tpc:#x} bytes "
                        f"({size:#x}), but GPU address {hole:#x} is not mapped")

    # -- copy ----------------------------------------------------------------------------------------
    def _copy_method(self, state: _Channel, method: int, value: int) -> None:
        if method != cl.NVC6B5_LAUNCH_DMA:
            return
        regs = state.state
        if value & _DMA_TRANSFER_MASK:
            if not value & _DMA_SRC_PITCH_BIT or not value & _DMA_DST_PITCH_BIT:
                raise ChannelFault(ROBUST_CHANNEL_CE0_ERROR, "block-linear copies are not modelled")
            if value & _DMA_MULTI_LINE_BIT:
                raise ChannelFault(ROBUST_CHANNEL_CE0_ERROR, "multi-line copies are not modelled")
            source = regs.get(cl.NVC6B5_OFFSET_IN_UPPER, 0) << 32 | regs.get(cl.NVC6B5_OFFSET_IN_LOWER, 0)
            target = regs.get(cl.NVC6B5_OFFSET_OUT_UPPER, 0) << 32 | regs.get(cl.NVC6B5_OFFSET_OUT_LOWER, 0)
            length = regs.get(cl.NVC6B5_LINE_LENGTH_IN, 0)
            if length:
                self._write(target, self._read(source, length))
            self.copies += 1
        semaphore = (value >> _DMA_SEMAPHORE_SHIFT) & _DMA_SEMAPHORE_MASK
        if semaphore:
            address = regs.get(cl.NVC6B5_SET_SEMAPHORE_A, 0) << 32 | regs.get(cl.NVC6B5_SET_SEMAPHORE_B, 0)
            payload = regs.get(cl.NVC6B5_SET_SEMAPHORE_PAYLOAD, 0)
            if semaphore == cl.NVC6B5_LAUNCH_DMA_SEMAPHORE_TYPE_RELEASE_ONE_WORD_SEMAPHORE:
                self._write(address, payload.to_bytes(4, "little"))
            else:
                self._write(address, payload.to_bytes(8, "little") + self.clock_ns().to_bytes(8, "little"))

    # -- robust channel ------------------------------------------------------------------------------
    def _rc(self, state: _Channel, code: int, why: str) -> None:
        """Tear the faulting channel's TSG down and write every member's error notifier.

        NVIDIA/open-gpu-doc c8607fe576b53ff821ffcf97e7548d2de11c4eaf manuals/ampere/ga100/
        dev_runlist.ref.txt "Channel Teardown Sequence": after a PBDMA, CE or MMU fault the RM
        disables all channels of the faulting context's TSG (or drops the TSG from the runlist), so
        no channel of that TSG runs again. NVIDIA/open-gpu-kernel-modules 535.113.01
        src/nvidia/src/kernel/gpu/rc/kernel_rc_notification.c krcErrorSetNotifier: with
        RC_NOTIFIER_SCOPE_TSG and subcontexts (not a vGPU host) it walks the TSG's channel list and
        writes each channel's notifier (krcErrorWriteNotifier_CPU); 570.86.16
        src/nvidia/src/kernel/gpu/mmu/arch/volta/kern_gmmu_gv100.c asks for that scope on an MMU
        fault. A channel outside a channel group is torn down alone."""
        group = state.obj.parent
        if group is not None and group.cls == cl.KEPLER_CHANNEL_GROUP_A:
            members = [child for child in group.children.values() if "gpfifo_entries" in child.info]
        else:
            members = [state.obj]
        engine = _ENGINE_TYPE_OF.get(state.engine_class, cl.NV2080_ENGINE_TYPE_NULL)
        self.errors.append((code, why))
        log.info("channel %#x: robust-channel error %d: %s (%d channel(s) of its group stopped)",
                 state.obj.handle, code, why, len(members))
        for member in members:
            member_state = self._state_of(member)
            member_state.faulted = True
            member_state.methods = []
            self._write_notifier(member, code, engine)

    def _write_notifier(self, channel, code: int, engine: int) -> None:
        """NvNotification index 0 of the channel's hObjectError memory (535.113.01
        src/nvidia/src/kernel/gpu/mem_mgr/method_notification.c notifyFillNvNotification):
        timeStamp, info32 = the nverror.h code, info16 = the NV2080 engine type of the engine that
        raised it, status = the 0xffff krcErrorSetNotifier passes."""
        params = self.driver.rm.layout(cl.NV_CHANNEL_ALLOC_PARAMS).from_bytes(channel.params)
        notifier = self._client_of(channel).objects.get(params.hObjectError)
        if notifier is None or notifier.backing is None:
            return
        now = self.clock_ns()
        # notifyFillNvNotification writes timeStamp.nanoseconds[0] = the time's high word, [1] the low
        record = struct.pack("<IIIHH", now >> 32, now & 0xFFFFFFFF, code, engine, NOTIFICATION_STATUS_ERROR)
        notifier.backing[:NOTIFICATION_SIZE] = record


def _qmd_version_bits(qmd: bytes) -> tuple[int, int]:
    """(major, minor) of a QMD of any version: 03_00 and 04_00 both hold them in bits 583:580 and
    579:576 (clc6c0qmd.h QMD_MAJOR_VERSION/QMD_VERSION, clcbc0qmd.h QMD_MAJOR_VERSION/QMD_MINOR_VERSION)."""
    word = int.from_bytes(qmd[:QMD_V03_00.size], "little")

    def bits(name: str) -> int:
        high, low = QMD_V03_00.fields[name]
        return (word >> low) & ((1 << (high - low + 1)) - 1)

    return bits("QMD_MAJOR_VERSION"), bits("QMD_VERSION")


def qmd_version_of(qmd: bytes, compute_class: int) -> QMDVersion | None:
    """The layout of `qmd` among those `compute_class` reads and the model decodes; None if none."""
    major, minor = _qmd_version_bits(qmd)
    for version in QMD_VERSIONS_OF_CLASS[compute_class]:
        if (version.major, version.minor) == (major, minor):
            return version
    return None


def qmd_field(qmd: bytes, name: str, compute_class: int) -> int:
    """Field `name` (its 03_00 name) of a QMD the class reads (check_qmd has accepted it)."""
    version = qmd_version_of(qmd, compute_class)
    high, low = version.fields[name]
    return (int.from_bytes(qmd[:version.size], "little") >> low) & ((1 << (high - low + 1)) - 1)


def check_qmd(qmd: bytes, max_shared: int, compute_class: int = cl.AMPERE_COMPUTE_A) -> tuple:
    """Refuse what the compute engine of `compute_class` would: returns grid, block, constant bank 0
    address and size, program address and shared memory size. A bad field is a GR exception naming
    it; a QMD of another version than the class reads is one too (03_00 and 04_00 both hold the
    major version in bits 583:580 and the minor in 579:576, so the engine reads the version first)."""
    def bad(why: str) -> ChannelFault:
        return ChannelFault(ROBUST_CHANNEL_GR_EXCEPTION, f"QMD: {why}")

    version = qmd_version_of(qmd, compute_class)
    if version is None:
        major, minor = _qmd_version_bits(qmd)
        reads = ", ".join(f"{v.major}.{v.minor} ({v.header})" for v in QMD_VERSIONS_OF_CLASS[compute_class])
        if (major, minor) in QMD_UNMODELLED_VERSIONS.get(compute_class, ()):
            raise bad(f"version {major}.{minor} is one compute class {compute_class:#x} reads, but this "
                      f"model decodes only {reads}")
        raise bad(f"version {major}.{minor}, compute class {compute_class:#x} reads {reads}")
    if len(qmd) < version.size:
        raise bad(f"{len(qmd)} bytes, version {version.major}.{version.minor} is {version.size}")

    def _qmd_field(data: bytes, name: str) -> int:
        high, low = version.fields[name]
        return (int.from_bytes(data[:version.size], "little") >> low) & ((1 << (high - low + 1)) - 1)
    grid = tuple(_qmd_field(qmd, name)
                 for name in ("CTA_RASTER_WIDTH", "CTA_RASTER_HEIGHT", "CTA_RASTER_DEPTH"))
    block = tuple(_qmd_field(qmd, f"CTA_THREAD_DIMENSION{i}") for i in range(3))
    for axis, (count, limit) in enumerate(zip(grid, MAX_GRID)):
        if not 1 <= count <= limit:
            raise bad(f"grid dimension {axis} is {count} (1..{limit})")
    for axis, (count, limit) in enumerate(zip(block, MAX_BLOCK)):
        if not 1 <= count <= limit:
            raise bad(f"block dimension {axis} is {count} (1..{limit})")
    if block[0] * block[1] * block[2] > MAX_THREADS_PER_BLOCK:
        raise bad(f"{block[0] * block[1] * block[2]} threads per block (at most {MAX_THREADS_PER_BLOCK})")
    registers = _qmd_field(qmd, "REGISTER_COUNT_V")
    if not 1 <= registers <= MAX_REGISTERS:
        raise bad(f"register count {registers} (1..{MAX_REGISTERS})")
    shared = _qmd_field(qmd, "SHARED_MEMORY_SIZE")
    if shared > max_shared:
        raise bad(f"shared memory {shared} bytes, this GPU allows {max_shared} per block")
    if not _qmd_field(qmd, "CONSTANT_BUFFER_VALID0"):
        raise bad("constant buffer 0 is not valid (the kernel parameters live there)")
    cb0 = (_qmd_field(qmd, "CONSTANT_BUFFER_ADDR_LOWER0")
           | _qmd_field(qmd, "CONSTANT_BUFFER_ADDR_UPPER0") << 32) << version.constant_shift
    cb0_size = _qmd_field(qmd, "CONSTANT_BUFFER_SIZE_SHIFTED4_0") << 4
    if cb0 % 256 or not 0 < cb0_size <= CONSTANT_BANK_MAX:
        raise bad(f"constant buffer 0 at {cb0:#x} size {cb0_size} (256-byte aligned, 1..64 KiB)")
    program = _qmd_field(qmd, "PROGRAM_ADDRESS_LOWER") | _qmd_field(qmd, "PROGRAM_ADDRESS_UPPER") << 32
    if program % 128 or program == 0:
        # SASS instructions are 16 bytes, fetched in 128-byte lines
        raise bad(f"program address {program:#x} is not 128-byte aligned")
    return grid, block, cb0, cb0_size, program, shared  # type: ignore[return-value]


_COMPUTE_CLASSES = frozenset((cl.AMPERE_COMPUTE_A, cl.AMPERE_COMPUTE_B, cl.ADA_COMPUTE_A,
                              cl.HOPPER_COMPUTE_A))
_COPY_CLASSES = frozenset((cl.AMPERE_DMA_COPY_A, cl.AMPERE_DMA_COPY_B, cl.HOPPER_DMA_COPY_A))
# the NV2080 engine type a channel's error notifier names (info16): compute runs on the graphics
# engine; the model has one copy engine, COPY0 (on hardware a graphics TSG's copy channel runs on a
# GRCE whose index the chip's engine table gives)
_ENGINE_TYPE_OF = {**{cls: cl.NV2080_ENGINE_TYPE_GRAPHICS for cls in _COMPUTE_CLASSES},
                   **{cls: cl.NV2080_ENGINE_TYPE_COPY0 for cls in _COPY_CLASSES}}
_HOST_STORED = frozenset((cl.NVC86F_SEM_ADDR_LO, cl.NVC86F_SEM_ADDR_HI, cl.NVC86F_SEM_PAYLOAD_LO,
                          cl.NVC86F_SEM_PAYLOAD_HI))
_HOST_NO_EFFECT = frozenset((cl.NVC56F_NOP, cl.NVC56F_WFI, cl.NVC56F_MEM_OP_A, cl.NVC56F_MEM_OP_B,
                             cl.NVC56F_MEM_OP_C, cl.NVC56F_MEM_OP_D, cl.NVC56F_NON_STALL_INTERRUPT))
