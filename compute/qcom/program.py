"""Qualcomm programs: ir3 kernels in a KGSL object and their launches through CP_EXEC_CS.

A kernel comes from one of three places (`Device.load(binary, name)`):
- the library (drivers/qcom/kernels): `dev.load(b"", "vector_add")`;
- ir3 assembly text in Mesa's syntax with computerator directives (docs/qcom.md, Programs):
  `dev.load(text.encode(), "mykernel")`;
- a vendor binary (instruction words made elsewhere) with the footprint the caller states:
  `load_vendor(dev, code, name, max_reg=..., buffers=[0, 1], ...)`.

Arguments follow the directives: the buffers first, in `@buf` order (each Buffer's GPU address goes to
its const vec4's x and y), then scalars, which replace the `@const` values component by component in
the order the directives list them (a float where the directive has a float, an int where it has an
int). `global_size` is in work items; the local size is the kernel's `@localsize` (the library's
kernels compute their index with it), so a different `local_size` is refused. The grid is rounded up
to whole groups; the kernels guard their index.

A launch is a CP command stream (drivers.qcom.dispatch.emit_dispatch) that the compute queue inserts.
In a graph (compute.graph) the const file is placed in the graph's memory and loaded indirectly, so a
replay patches inputs there (explicit_args / pack_arg / pack_kernargs / prepare_in).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Sequence

from compute.buffer import Buffer
from compute.program import Program, dimensions
from drivers.qcom import kernels
from drivers.qcom.cp import CommandStream
from drivers.qcom.dispatch import (INSTRUCTION_BYTES, UNIT_BYTES, ComputeDispatch, REGID_UNUSED,
                                   dword_of, emit_dispatch, pack_consts)
from drivers.qcom.ir3.asm import Buffer as BufferDirective
from drivers.qcom.ir3.asm import Program as IR3Program
from drivers.qcom.ir3.asm import assemble_program
from hal.errors import BadBinary, InvalidArgument, UnsupportedOperation

if TYPE_CHECKING:
    from compute.device import Device

DEFAULT_LOCAL_SIZE = (1, 1, 1)
CONST_VEC4_BYTES = 16


class QCOMLaunch:
    """One prepared launch: the CP dwords that dispatch it."""

    __slots__ = ("program", "words", "groups", "local_size")

    def __init__(self, program: "QCOMProgram", words: list[int], groups, local_size) -> None:
        self.program = program
        self.words = words
        self.groups = groups
        self.local_size = local_size

    @property
    def name(self) -> str:
        return self.program.name


class QCOMProgram:
    """One ir3 kernel uploaded to a KGSL object (see the module docstring)."""

    def __init__(self, device: "Device", kernel: IR3Program, name: str) -> None:
        self.device = device
        self.name = name
        self.kernel = kernel
        code = kernel.code
        # whole 128-byte fetch units (the padding words are zero, which decode as nop)
        padded = -(-len(code) // UNIT_BYTES) * UNIT_BYTES
        self.image = device.allocate(padded)
        if self.image.gpu_address % UNIT_BYTES:
            raise BadBinary(f"{name}: code at {self.image.gpu_address:#x} is not {UNIT_BYTES}-byte "
                            "aligned")
        self.image.copyin(code + bytes(padded - len(code)))
        self.instructions = padded // INSTRUCTION_BYTES
        self.scalar_slots = [(index, component, value) for index, vector in kernel.consts.items()
                             for component, value in enumerate(vector)]

    @classmethod
    def from_binary(cls, device: "Device", binary: bytes, name: str) -> "QCOMProgram":
        if not binary:
            try:
                return cls(device, kernels.load(name), name)
            except KeyError as exc:
                raise InvalidArgument(str(exc.args[0])) from None
        try:
            text = binary.decode("utf-8")
        except UnicodeDecodeError:
            raise BadBinary(f"{name}: not ir3 assembly text; load a vendor binary with "
                            "compute.qcom.program.load_vendor and its footprint") from None
        return cls(device, assemble_program(text), name)

    def _consts(self, args: Sequence, groups) -> list[int]:
        buffers = self.kernel.buffers
        if len(args) < len(buffers) or len(args) > len(buffers) + len(self.scalar_slots):
            raise InvalidArgument(f"kernel {self.name!r} takes {len(buffers)} buffers and up to "
                                  f"{len(self.scalar_slots)} scalars, not {len(args)} arguments")
        addresses = {}
        for directive, value in zip(buffers, args):
            if isinstance(value, int) and value == 0:  # compute.graph's placeholder for an input
                value = _NULL_BUFFER
            if not isinstance(value, (Buffer, _NullBuffer)):
                raise InvalidArgument(f"kernel {self.name!r}: argument for c{directive.const} is a "
                                      f"buffer, not {value!r}")
            addresses[directive.const] = (value.argument_address(f"kernel {self.name!r} c{directive.const}")
                                          if isinstance(value, Buffer) else value.gpu_address)
        values = {index: list(vector) for index, vector in self.kernel.consts.items()}
        for (index, component, default), value in zip(self.scalar_slots, args[len(buffers):]):
            if isinstance(default, float):
                if not isinstance(value, (int, float)):
                    raise InvalidArgument(f"kernel {self.name!r}: c{index}.{'xyzw'[component]} is a "
                                          f"float, not {value!r}")
                value = float(value)
            elif not isinstance(value, int) or isinstance(value, bool):
                raise InvalidArgument(f"kernel {self.name!r}: c{index}.{'xyzw'[component]} is an "
                                      f"integer, not {value!r}")
            values[index][component] = value
        numwg = self.kernel.num_workgroups_const
        if numwg is not None:
            vector = values.setdefault(numwg >> 2, [0, 0, 0, 0])
            vector.extend([0] * (4 - len(vector)))
            for offset, count in enumerate(groups):
                vector[(numwg & 3) + offset] = count
        consts = pack_consts({index: tuple(vector) for index, vector in values.items()}, addresses)
        needed = 4 * self.kernel.const_vec4_count
        return consts + [0] * (needed - len(consts))

    def prepare(self, queue, args: Sequence, global_size: tuple[int, int, int],
                local_size: tuple[int, int, int]) -> QCOMLaunch:
        groups = self._groups(global_size, local_size)
        return self._launch(self._consts(args, groups), global_size, local_size, None)

    def _groups(self, global_size, local_size) -> tuple[int, int, int]:
        kernel = self.kernel
        if local_size not in (DEFAULT_LOCAL_SIZE, kernel.local_size):
            raise InvalidArgument(f"kernel {self.name!r} runs with its @localsize {kernel.local_size}, "
                                  f"not {local_size}")
        return tuple(-(-g // size) for g, size in zip(global_size, kernel.local_size))

    def _launch(self, consts: list[int], global_size, local_size, consts_address) -> QCOMLaunch:
        kernel = self.kernel
        local = kernel.local_size
        groups = self._groups(global_size, local_size)
        launch = ComputeDispatch(
            code_address=self.image.gpu_address, instructions=self.instructions,
            max_reg=kernel.max_reg, max_half_reg=kernel.max_half_reg,
            consts=consts, local_size=local, groups=groups, consts_address=consts_address,
            local_id_regid=_regid(kernel.invocation_id_reg),
            workgroup_id_regid=_regid(kernel.workgroup_id_reg), local_memory=kernel.local_memory,
            branch_stack=1 if kernel.labels else 0)
        stream = emit_dispatch(CommandStream(), launch, self.device.backend.scratch.gpuaddr)
        return QCOMLaunch(self, stream.dwords, groups, local)


    # -- compute.graph's hooks: the const file in the graph's memory, loaded with SS6_INDIRECT ----
    def explicit_args(self) -> list["_Arg"]:
        args = [_Arg(f"c{d.const}", CONST_VEC4_BYTES * d.const, 8, "buffer")
                for d in self.kernel.buffers]
        args += [_Arg(f"c{index}.{'xyzw'[component]}",
                      CONST_VEC4_BYTES * index + 4 * component, 4,
                      "float" if isinstance(default, float) else "int")
                 for index, component, default in self.scalar_slots]
        return args

    def pack_arg(self, arg: "_Arg", value) -> bytes:
        if arg.value_kind == "buffer":
            address = (value.argument_address(f"kernel {self.name!r} {arg.name}")
                       if isinstance(value, Buffer) else value)
            return int(address).to_bytes(8, "little")
        return dword_of(float(value) if arg.value_kind == "float" else int(value)).to_bytes(4, "little")

    def pack_kernargs(self, args: Sequence) -> bytes:
        """The const file for `args` (0 stands for a buffer the graph patches in)."""
        if self.kernel.num_workgroups_const is not None:
            raise UnsupportedOperation(f"kernel {self.name!r} reads @numwg; a graph cannot launch it")
        consts = self._consts(args, (1, 1, 1))
        return b"".join(word.to_bytes(4, "little") for word in consts)

    def dispatch_packet(self, global_size, local_size, address: int) -> bytes:
        return b""  # the dispatch itself is CP state in the graph's IB

    def prepare_in(self, place, kernargs: bytes, global_size, local_size):
        address = place(kernargs, CONST_VEC4_BYTES)
        launch = self._launch(kernargs_words(kernargs), global_size, local_size, address)
        return launch, address


class _Arg:
    """An argument as compute.graph sees one: where it sits in the const file."""

    __slots__ = ("name", "offset", "size", "value_kind", "type_name")

    def __init__(self, name: str, offset: int, size: int, value_kind: str) -> None:
        self.name = name
        self.offset = offset
        self.size = size
        self.value_kind = value_kind
        self.type_name = value_kind


class _NullBuffer:
    gpu_address = 0


_NULL_BUFFER = _NullBuffer()


def kernargs_words(data: bytes) -> list[int]:
    return [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data), 4)]


def _regid(value: int | None) -> int:
    return REGID_UNUSED if value is None else value


@dataclasses.dataclass
class VendorFootprint:
    """What a vendor binary needs from the launcher, as its compiler reports it."""

    max_reg: int
    local_size: tuple[int, int, int]
    buffers: Sequence[int] = ()  # const vec4 index of each buffer argument, in order
    max_half_reg: int = -1
    local_id_regid: int | None = 0  # r0.x
    workgroup_id_regid: int | None = 4 * 48  # r48.x
    local_memory: int = 0
    consts: dict = dataclasses.field(default_factory=dict)


class VendorProgram(Program):
    """A compute.Program over instruction words made elsewhere."""

    def __init__(self, device: "Device", code: bytes, name: str, footprint: VendorFootprint) -> None:
        if not code or len(code) % INSTRUCTION_BYTES:
            raise BadBinary(f"{name}: ir3 code is whole 8-byte instructions, not {len(code)} bytes")
        words = [int.from_bytes(code[i:i + INSTRUCTION_BYTES], "little")
                 for i in range(0, len(code), INSTRUCTION_BYTES)]
        kernel = IR3Program(words=words, local_size=dimensions(footprint.local_size, "local_size"),
                            buffers=[BufferDirective(0, const) for const in footprint.buffers],
                            consts=dict(footprint.consts),
                            invocation_id_reg=footprint.local_id_regid,
                            workgroup_id_reg=footprint.workgroup_id_regid,
                            max_reg=footprint.max_reg, max_half_reg=footprint.max_half_reg,
                            local_memory=footprint.local_memory)
        self.device = device
        self.name = name
        self.impl = QCOMProgram(device, kernel, name)


def load_vendor(device: "Device", code: bytes, name: str, **footprint) -> Program:
    """A kernel from instruction words and its footprint (VendorFootprint's fields)."""
    return VendorProgram(device, bytes(code), name, VendorFootprint(**footprint))
