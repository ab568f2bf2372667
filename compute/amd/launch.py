"""AMD programs: an HSA code object loaded into VRAM, and the launches the compute queue records.

`AMDProgram` loads the code object (compute.amd.codeobject.load), uploads its whole loaded image
(every PT_LOAD segment at its virtual address, so PC-relative references between .text and .rodata
hold) to VRAM through the copy queue, and keeps the kernel's entry address (COMPUTE_PGM_LO/HI take
it >> 8, so it must be 256-byte aligned).

Scratch: a kernel whose descriptor has a private segment (private_segment_fixed_size bytes per
work-item; gfx11 architected flat scratch, so no user SGPR carries it) gets a VRAM scratch area of
COMPUTE_TMPRING_SIZE.WAVES slots of WAVESIZE bytes: one wave's private segment is the fixed size
times the wave's lanes, rounded up to the 256-byte WAVESIZE unit of gfx11 (LLVM SIProgramInfo;
large-alloca-graphics.ll's GFX11 checks); WAVES covers the waves of SCRATCH_WORKGROUPS work-groups
(at least one work-group: its waves may wait for each other at a barrier). The area is kept by the
program, grown (the old one kept until `free`) when a launch needs more slots, and each such launch
sets COMPUTE_DISPATCH_SCRATCH_BASE_LO/HI (address >> 8) and COMPUTE_TMPRING_SIZE.

`prepare(queue, args, global_size, local_size)`:
- kernargs: a block of `kernarg_size` bytes, `kernarg_align` aligned, from the device's kernarg
  arena; each argument of the metadata at its offset: `global_buffer` takes a `Buffer` (its GPU
  address) or an int address, `by_value` an int or float packed by its type name and size; hidden
  arguments stay zero;
- the dispatch packet, when the kernel enables the dispatch pointer: an
  `hsa_kernel_dispatch_packet_t` (HSA Platform System Architecture Specification 1.2, 2.9.6; ROCR
  hsa.h) of DISPATCH_PACKET_BYTES in the same arena: header (kernel dispatch type), setup
  (dimensions), workgroup sizes, grid sizes in work-items, segment sizes, the kernel object (the
  descriptor's address) and the kernarg address. Kernels read their work-group size and grid size
  from it (AMDGPUUsage, "Initial Kernel Execution State");
- the user SGPRs in the order Program.user_sgprs gives (dispatch ptr, kernarg segment ptr, ...;
  a slot the launcher cannot fill is refused) into COMPUTE_USER_DATA_n;
- COMPUTE_PGM_RSRC1/2/3 from the descriptor, COMPUTE_TMPRING_SIZE 0 (or the scratch area's, see
  above), COMPUTE_START_X/Y/Z 0,
  COMPUTE_NUM_THREAD_X/Y/Z the local size, then DISPATCH_DIRECT of the work-group counts
  (ceil(global / local)) with COMPUTE_SHADER_EN, FORCE_START_AT_000 and, for wave32 kernels,
  CS_W32_EN; PARTIAL_TG_EN when the grid is not a multiple of the work-group.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Sequence

from autogen.amd.regs import gc_11_0_0 as gc_regs
from compute.amd import codeobject
from compute.buffer import Buffer
from drivers.am import gfx as pm4
from hal.errors import BadBinary, InvalidArgument, UnsupportedOperation

if TYPE_CHECKING:
    from compute.amd.queues import AMDComputeQueue
    from compute.device import Device

PGM_ADDRESS_SHIFT = 8  # COMPUTE_PGM_LO holds address bits 39:8 (gfx_v8_0.c: gpu_addr >> 8)
PGM_ADDRESS_ALIGNMENT = 1 << PGM_ADDRESS_SHIFT
CODE_ALIGNMENT = 4096  # the image keeps its segments' page alignment
# hsa.h hsa_kernel_dispatch_packet_t: header u16, setup u16, workgroup_size_x/y/z u16, reserved0 u16,
# grid_size_x/y/z u32, private_segment_size u32, group_segment_size u32, kernel_object u64,
# kernarg_address u64, reserved2 u64, completion_signal u64
DISPATCH_PACKET = struct.Struct("<HHHHHHIIIIIQQQQ")
DISPATCH_PACKET_BYTES = 64
DISPATCH_PACKET_ALIGNMENT = 64  # hsa.h: AQL packets are 64-byte aligned
HSA_PACKET_TYPE_KERNEL_DISPATCH = 2  # hsa.h hsa_packet_type_t
HSA_PACKET_HEADER_TYPE = 0  # hsa.h hsa_packet_header_t: the type's bit offset
MAX_WORKGROUP_THREADS = 1024  # AMDGPUUsage: the largest flat work-group size
LDS_GRANULE_BYTES = 512  # AMDGPUUsage, COMPUTE_PGM_RSRC2.LDS_SIZE on GFX11: 128-dword granules
MAX_DIMENSION = 0xFFFFFFFF  # COMPUTE_DIM_X.SIZE / DISPATCH_DIRECT: 32-bit work-group counts
# LLVM SIProgramInfo (getScratchBlockGranularity) and large-alloca-graphics.ll's GFX11 checks:
# COMPUTE_TMPRING_SIZE.WAVESIZE counts 256-byte units on gfx11
SCRATCH_WAVESIZE_UNIT = 256
SCRATCH_BASE_SHIFT = 8  # COMPUTE_DISPATCH_SCRATCH_BASE_LO/HI hold the address >> 8 (256-byte aligned)
SCRATCH_WORKGROUPS = 4  # this launcher's choice: scratch slots for four work-groups in flight
_TMPRING = gc_regs.get("regCOMPUTE_TMPRING_SIZE")

_INITIATOR = gc_regs.regCOMPUTE_DISPATCH_INITIATOR
_SCALAR_FORMATS = {("float", 4): "<f", ("double", 8): "<d", ("half", 2): "<e"}


def _scalar(arg, value) -> bytes:
    """A by-value argument packed by its metadata type and size."""
    base = arg.type_name.replace("const ", "").strip()
    fmt = _SCALAR_FORMATS.get((base, arg.size))
    if fmt is not None:
        return struct.pack(fmt, float(value))
    if not isinstance(value, int):
        raise InvalidArgument(f"argument {arg.name!r} ({arg.type_name}) takes an integer, not {value!r}")
    signed = not base.startswith("u") and base not in ("size_t", "bool")
    low = -(1 << (8 * arg.size - 1)) if signed else 0
    high = (1 << (8 * arg.size - 1)) - 1 if signed else (1 << (8 * arg.size)) - 1
    if not low <= value <= high:
        raise InvalidArgument(f"argument {arg.name!r} ({arg.type_name}) = {value} is out of range")
    return value.to_bytes(arg.size, "little", signed=signed)


class AMDLaunch:
    """One prepared dispatch: what the compute queue records for it."""

    __slots__ = ("program", "kernarg_address", "dispatch_address", "groups", "local_size", "initiator",
                 "scratch")

    def __init__(self, program: "AMDProgram", kernarg_address: int, dispatch_address: int,
                 groups: tuple[int, int, int], local_size: tuple[int, int, int], initiator: int,
                 scratch: tuple[int, int] | None = None) -> None:
        self.scratch = scratch  # (COMPUTE_DISPATCH_SCRATCH_BASE as address >> 8, COMPUTE_TMPRING_SIZE)
        self.program = program
        self.kernarg_address = kernarg_address
        self.dispatch_address = dispatch_address
        self.groups = groups
        self.local_size = local_size
        self.initiator = initiator

    @property
    def name(self) -> str:
        return self.program.program.name

    def user_data(self) -> list[int]:
        """COMPUTE_USER_DATA_0.. for the program's user SGPR layout."""
        program = self.program.program
        values = [0] * program.descriptor.user_sgpr_count
        sources = {"dispatch_ptr": self.dispatch_address, "kernarg_segment_ptr": self.kernarg_address}
        for slot in program.user_sgprs:
            value = sources[slot.name]
            values[slot.first] = value & 0xFFFFFFFF
            values[slot.first + 1] = value >> 32
        return values

    def words(self, queue: "AMDComputeQueue") -> list[int]:
        key = (queue, self.local_size)
        words = self.program.prefixes.get(key)
        if words is None:
            words = self.program.prefixes[key] = self._prefix(queue)
        words = words + []
        if self.scratch is not None:
            base, tmpring = self.scratch
            words += pm4.set_sh_reg_packet(queue.register("regCOMPUTE_DISPATCH_SCRATCH_BASE_LO"),
                                           [base & 0xFFFFFFFF, base >> 32])
            words += pm4.set_sh_reg_packet(queue.register("regCOMPUTE_TMPRING_SIZE"), [tmpring])
        user_data = self.user_data()
        if user_data:
            words += pm4.set_sh_reg_packet(queue.register("regCOMPUTE_USER_DATA_0"), user_data)
        words += pm4.dispatch_direct_packet(*self.groups, self.initiator)
        return words

    def _prefix(self, queue: "AMDComputeQueue") -> list[int]:
        """The registers a program sets the same for every launch of one work-group size (built
        once per program, queue and size: the launch's Python cost is its user data and dispatch)."""
        program = self.program
        code = program.program
        entry = program.entry_address >> PGM_ADDRESS_SHIFT
        words = pm4.set_sh_reg_packet(queue.register("regCOMPUTE_PGM_LO"),
                                      [entry & 0xFFFFFFFF, entry >> 32])
        # AMDGPUUsage: the descriptor's GRANULATED_LDS_SIZE is 0 and the launcher fills
        # COMPUTE_PGM_RSRC2.LDS_SIZE from the group segment (512-byte granules on GFX11)
        granules = -(-code.lds_size // LDS_GRANULE_BYTES)
        lds = gc_regs.get("regCOMPUTE_PGM_RSRC2").encode(LDS_SIZE=granules)
        words += pm4.set_sh_reg_packet(queue.register("regCOMPUTE_PGM_RSRC1"),
                                       [code.rsrc1, code.rsrc2 | lds])
        words += pm4.set_sh_reg_packet(queue.register("regCOMPUTE_PGM_RSRC3"), [code.rsrc3])
        words += pm4.set_sh_reg_packet(queue.register("regCOMPUTE_TMPRING_SIZE"), [0])
        words += pm4.set_sh_reg_packet(queue.register("regCOMPUTE_RESOURCE_LIMITS"), [0])
        words += pm4.set_sh_reg_packet(queue.register("regCOMPUTE_START_X"),
                                       [0, 0, 0, *self.local_size])
        return words


class AMDProgram:
    """A kernel of an HSA code object, uploaded to VRAM (see the module docstring)."""

    def __init__(self, device: "Device", binary: bytes, name: str) -> None:
        self.device = device
        self.code_object = codeobject.load(binary)
        try:
            self.program = self.code_object[name]
        except KeyError:
            raise InvalidArgument(f"the code object has no kernel {name!r} (it has "
                                  f"{', '.join(sorted(self.code_object.programs))})") from None
        program = self.program
        for slot in program.user_sgprs:
            if slot.name not in ("dispatch_ptr", "kernarg_segment_ptr"):
                raise UnsupportedOperation(f"kernel {name!r} enables the user SGPR {slot.name!r}, "
                                           "which this launcher does not provide")
        image = self.code_object.image()
        self.image = device.allocate(max(len(image), 1))
        self.image.copyin(image)
        self.entry_address = self.image.gpu_address + program.code_address + program.entry_offset
        self.descriptor_address = self.image.gpu_address + program.descriptor_address
        if self.entry_address % PGM_ADDRESS_ALIGNMENT:
            raise BadBinary(f"kernel {name!r}: entry at image offset "
                            f"{program.code_address + program.entry_offset:#x} is not "
                            f"{PGM_ADDRESS_ALIGNMENT}-byte aligned (COMPUTE_PGM_LO holds address >> 8)")
        self.wave32 = program.wavefront_size == 32
        self.needs_dispatch_packet = program.user_sgpr("dispatch_ptr") is not None
        self.prefixes: dict[tuple, list[int]] = {}  # (queue, local size) -> AMDLaunch._prefix
        # (global size, local size) -> (work-group counts, COMPUTE_DISPATCH_INITIATOR), checked once
        self._shapes: dict[tuple, tuple] = {}
        self._explicit = [arg for arg in program.args if not arg.value_kind.startswith("hidden_")]
        per_wave = program.scratch_size * program.wavefront_size
        self.scratch_wave_bytes = -(-per_wave // SCRATCH_WAVESIZE_UNIT) * SCRATCH_WAVESIZE_UNIT
        self.scratch: Buffer | None = None
        self.retired_scratch: list[Buffer] = []  # outgrown areas an earlier launch may still use

    def scratch_for(self, groups: tuple[int, int, int],
                    local_size: tuple[int, int, int]) -> tuple[int, int] | None:
        """The scratch registers of a launch (None when the kernel has no private segment)."""
        if not self.scratch_wave_bytes:
            return None
        lanes = self.program.wavefront_size
        waves = -(-(local_size[0] * local_size[1] * local_size[2]) // lanes)
        slots = waves * max(1, min(groups[0] * groups[1] * groups[2], SCRATCH_WORKGROUPS))
        if slots > _TMPRING.field("WAVES").max_value or (
                self.scratch_wave_bytes // SCRATCH_WAVESIZE_UNIT > _TMPRING.field("WAVESIZE").max_value):
            raise UnsupportedOperation(f"kernel {self.program.name!r}: {slots} waves of "
                                       f"{self.scratch_wave_bytes} bytes of scratch do not fit "
                                       "COMPUTE_TMPRING_SIZE")
        size = slots * self.scratch_wave_bytes
        if self.scratch is None or self.scratch.size < size:
            if self.scratch is not None:
                self.retired_scratch.append(self.scratch)
            self.scratch = self.device.allocate(size)
        address = self.scratch.gpu_address
        if address % (1 << SCRATCH_BASE_SHIFT):
            raise UnsupportedOperation(f"scratch at {address:#x} is not {1 << SCRATCH_BASE_SHIFT}-byte "
                                       "aligned (COMPUTE_DISPATCH_SCRATCH_BASE holds address >> 8)")
        slots = self.scratch.size // self.scratch_wave_bytes
        slots = min(slots, _TMPRING.field("WAVES").max_value)
        tmpring = _TMPRING.encode(WAVES=slots, WAVESIZE=self.scratch_wave_bytes // SCRATCH_WAVESIZE_UNIT)
        return address >> SCRATCH_BASE_SHIFT, tmpring

    def explicit_args(self) -> list:
        """The kernel's arguments the caller passes (hidden ones stay zero)."""
        return self._explicit

    def pack_arg(self, arg, value) -> bytes:
        """One explicit argument's bytes at its kernarg offset (`arg` from `explicit_args`)."""
        if arg.value_kind == "global_buffer":
            address = (value.argument_address(f"kernel {self.program.name!r} {arg.name}")
                       if isinstance(value, Buffer) else value)
            if not isinstance(address, int):
                raise InvalidArgument(f"argument {arg.name!r} takes a Buffer or a GPU address, "
                                      f"not {value!r}")
            return address.to_bytes(arg.size, "little")
        if arg.value_kind == "by_value":
            return _scalar(arg, value)
        raise UnsupportedOperation(f"kernel {self.program.name!r} argument {arg.name!r}: value kind "
                                   f"{arg.value_kind!r} is not supported")

    def pack_kernargs(self, args: Sequence) -> bytes:
        program = self.program
        explicit = self._explicit
        if len(args) != len(explicit):
            names = ", ".join(arg.name for arg in explicit)
            raise InvalidArgument(f"kernel {program.name!r} takes {len(explicit)} arguments ({names}), "
                                  f"not {len(args)}")
        block = bytearray(max(program.kernarg_size, 1))
        for arg, value in zip(explicit, args):
            block[arg.offset:arg.offset + arg.size] = self.pack_arg(arg, value)
        return bytes(block)

    def layout(self, global_size: tuple[int, int, int],
               local_size: tuple[int, int, int]) -> tuple[tuple[int, int, int], int]:
        """Check the sizes; returns the work-group counts and COMPUTE_DISPATCH_INITIATOR (a shape seen
        before is answered from `_shapes`: the launch's Python cost)."""
        key = (global_size, local_size)
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._shapes[key] = self._check_layout(global_size, local_size)
        return shape

    def _check_layout(self, global_size: tuple[int, int, int],
                      local_size: tuple[int, int, int]) -> tuple[tuple[int, int, int], int]:
        program = self.program
        threads = local_size[0] * local_size[1] * local_size[2]
        limit = min(MAX_WORKGROUP_THREADS, program.metadata.max_flat_workgroup_size or MAX_WORKGROUP_THREADS)
        if threads > limit:
            raise InvalidArgument(f"kernel {program.name!r}: a work-group of {local_size} is more than "
                                  f"{limit} work-items")
        required = program.metadata.reqd_workgroup_size
        if required is not None and tuple(required) != local_size:
            raise InvalidArgument(f"kernel {program.name!r} requires local_size {tuple(required)}, "
                                  f"not {local_size}")
        groups = tuple(-(-g // l) for g, l in zip(global_size, local_size))
        if any(count > MAX_DIMENSION for count in groups):
            raise InvalidArgument(f"kernel {program.name!r}: {groups} work-groups is too many")
        partial = any(g % l for g, l in zip(global_size, local_size))
        initiator = _INITIATOR.encode(COMPUTE_SHADER_EN=1, FORCE_START_AT_000=1,
                                      CS_W32_EN=int(self.wave32), PARTIAL_TG_EN=int(partial))
        return groups, initiator  # type: ignore[return-value]

    def prepare(self, queue, args: Sequence, global_size: tuple[int, int, int],
                local_size: tuple[int, int, int]) -> AMDLaunch:
        arena = self.device.kernargs

        def place(data: bytes, alignment: int) -> int:
            offset, address = arena.alloc(len(data), alignment, queue)
            arena.write(offset, data)
            return address

        return self.prepare_in(place, self.pack_kernargs(args), global_size, local_size)[0]

    def prepare_in(self, place, kernargs: bytes, global_size: tuple[int, int, int],
                   local_size: tuple[int, int, int]) -> tuple[AMDLaunch, int]:
        """A launch whose kernargs (and dispatch packet) `place(data, alignment) -> GPU address`
        puts in memory; returns it and the kernarg block's GPU address. compute.graph places them
        in memory of its own, written once and patched per replay."""
        groups, initiator = self.layout(global_size, local_size)
        kernarg_address = place(kernargs, max(self.program.kernarg_align, 16))
        dispatch_address = 0
        if self.needs_dispatch_packet:
            dispatch_address = place(self.dispatch_packet(global_size, local_size, kernarg_address),
                                     DISPATCH_PACKET_ALIGNMENT)
        launch = AMDLaunch(self, kernarg_address, dispatch_address, groups, local_size, initiator,
                           self.scratch_for(groups, local_size))
        return launch, kernarg_address

    def dispatch_packet(self, global_size, local_size, kernarg_address: int) -> bytes:
        dims = 1
        for axis in (1, 2):
            if global_size[axis] > 1 or local_size[axis] > 1:
                dims = axis + 1
        header = HSA_PACKET_TYPE_KERNEL_DISPATCH << HSA_PACKET_HEADER_TYPE
        program = self.program
        return DISPATCH_PACKET.pack(header, dims, *local_size, 0, *global_size, program.scratch_size,
                                    program.lds_size, self.descriptor_address, kernarg_address, 0, 0)

    def free(self) -> None:
        self.image.free()
        for area in [self.scratch, *self.retired_scratch]:
            if area is not None:
                area.free()
        self.scratch = None
        self.retired_scratch = []

