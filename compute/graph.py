"""Graphs: a sequence of launches and copies recorded once and replayed with new inputs.

```python
graph = Graph(dev)
a, b, c, n = graph.input("a"), graph.input("b"), graph.input("c"), graph.input("n")
graph.launch(add, a, b, c, n, global_size=1024, local_size=256)
graph.copy(out, c, 4096)                       # Buffers or inputs
graph.replay(a=x, b=y, c=z, n=1024)            # the timeline value that ends it
graph.replay(a=y)                              # inputs not given keep their last value
```

The first replay (or `build()`) builds everything a replay needs once:
- each launch's kernargs and dispatch packet in memory the graph owns (host memory, written once
  through the backend's `prepare_in`); an input used as a kernel argument becomes a patch slot, the
  argument's offset in that memory and its packer;
- consecutive commands on one queue form a segment; a compute segment's commands (each kernel's
  PM4, bracketed by timestamps when the device is being profiled) are written once into an
  indirect buffer of the graph's memory, so a replay records one INDIRECT_BUFFER packet for the
  whole segment; a copy segment keeps its packets, and a copy whose address is an input emits its
  packet again at each replay.

A replay waits for the previous replay to finish (it rewrites the memory that one reads; the wait
is bounded), writes each changed input into its slots, and submits the segments in order (the
queues order segments on different queues through the timeline, compute/queue.py). Its Python cost
is the patch writes plus a fixed cost per segment: nothing per kernel. `global_size` and
`local_size` are fixed at recording; a scalar input is repacked by its kernel argument's type.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from compute.buffer import Buffer
from compute.program import dimensions
from hal.errors import InvalidArgument

if TYPE_CHECKING:
    from compute.device import Device
    from compute.program import Program
    from compute.queue import Queue

DWORD = 4
ARG_ALIGNMENT = 16  # this layer's choice: every block the graph places starts 16-byte aligned
PAGE = 4096
# this layer's bound on one command's words in an indirect buffer (a launch with timestamps is
# about 100 dwords); a graph whose commands need more is refused when built
IB_BYTES_PER_COMMAND = 1024


class Input:
    """A named placeholder for a buffer (or GPU address) or a scalar, bound at replay."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<graph input {self.name!r}>"


def _address(value, what: str) -> int:
    address = value.gpu_address if isinstance(value, Buffer) else value
    if not isinstance(address, int):
        raise InvalidArgument(f"{what} takes a Buffer or a GPU address, not {value!r}")
    return address


class _Segment:
    """Consecutive commands of one queue, submitted as one recording per replay."""

    def __init__(self, queue: "Queue") -> None:
        self.queue = queue
        self.commands: list[tuple] = []
        self.words: list[int] = []  # what a replay records (an indirect buffer packet, or packets)
        self.copies: list[tuple[int, object, object, int]] = []  # (word index, dst, src, size)


class Graph:
    """A recorded sequence of launches and copies (see the module docstring)."""

    def __init__(self, device: "Device") -> None:
        self.device = device
        self._inputs: dict[str, Input] = {}
        self._values: dict[str, object] = {}
        self._commands: list[tuple] = []
        self._segments: list[_Segment] | None = None
        # input name -> [(packer, argument, write, [offsets in the graph's memory])]
        self._patches: dict[str, list[tuple[Callable, object, Callable, list[int]]]] = {}
        self._memory = None
        self._records: list = []  # profiler records whose slots the graph owns
        self.last_value = 0
        self.replays = 0

    # -- recording ---------------------------------------------------------------------------------
    def input(self, name: str) -> Input:
        """The placeholder named `name` (the same object for the same name)."""
        if self._segments is not None:
            raise InvalidArgument("graph: built already; record before the first replay")
        return self._inputs.setdefault(name, Input(name))

    def launch(self, program: "Program", *args, global_size, local_size=(1, 1, 1)) -> "Graph":
        """Record a kernel launch on the compute queue; arguments may be inputs."""
        self._record(("launch", self.device.compute_queue, program, args,
                      dimensions(global_size, "global_size"), dimensions(local_size, "local_size")))
        return self

    def copy(self, dst, src, size: int) -> "Graph":
        """Record a copy of `size` bytes on the copy queue; `dst`, `src` are Buffers, addresses
        or inputs."""
        if size <= 0:
            raise InvalidArgument(f"graph: a copy of {size} bytes")
        for end in (dst, src):
            if isinstance(end, Buffer) and size > end.size:
                raise InvalidArgument(f"graph: a copy of {size} bytes does not fit {end!r}")
        self._record(("copy", self.device.copy_queue, dst, src, size))
        return self

    def _record(self, command: tuple) -> None:
        if self._segments is not None:
            raise InvalidArgument("graph: built already; record before the first replay")
        self._commands.append(command)

    # -- building ----------------------------------------------------------------------------------
    def build(self) -> "Graph":
        """Place kernargs, write the indirect buffers and find the patch slots (once)."""
        if self._segments is not None:
            return self
        if not self._commands:
            raise InvalidArgument("graph: nothing recorded")
        segments: list[_Segment] = []
        for command in self._commands:
            if not segments or segments[-1].queue is not command[1]:
                segments.append(_Segment(command[1]))
            segments[-1].commands.append(command)
        staged = bytearray()
        placed: list[tuple[int, bytes]] = []

        def reserve(data: bytes, alignment: int) -> int:
            offset = -(-len(staged) // alignment) * alignment
            staged.extend(bytes(offset - len(staged)) + data)
            return offset

        # sizes first: the memory's GPU address is known only once it is allocated, so blocks are
        # laid out relative to 0, then the launches are prepared against the real addresses
        launches = [c for c in self._commands if c[0] == "launch"]
        layout = []
        for _, _, program, args, global_size, local_size in launches:
            kernargs = program.impl.pack_kernargs([0 if isinstance(a, Input) else a for a in args])
            layout.append(kernargs)
            reserve(kernargs, ARG_ALIGNMENT)
            reserve(bytes(program.impl.dispatch_packet(global_size, local_size, 0)), ARG_ALIGNMENT)
        memory_size = len(staged) + IB_BYTES_PER_COMMAND * len(self._commands) + PAGE
        memory = self.device.allocate(memory_size, host=True)
        base = memory.gpu_address
        view = memory.cpu_view
        staged.clear()

        def place(data: bytes, alignment: int) -> int:
            offset = reserve(data, max(alignment, ARG_ALIGNMENT))
            placed.append((offset, data))
            return base + offset

        profiler = self.device.profiler
        prepared = {}
        for command, kernargs in zip(launches, layout):
            _, queue, program, args, global_size, local_size = command
            launch, kernarg_address = program.impl.prepare_in(place, kernargs, global_size, local_size)
            prepared[id(command)] = launch
            offset = kernarg_address - base
            for arg, value in zip(program.impl.explicit_args(), args):
                if isinstance(value, Input):
                    self._slot(value.name, view, offset + arg.offset, program.impl, arg)
        ib_words: list[tuple[_Segment, list[int]]] = []
        for segment in segments:
            queue = segment.queue
            words: list[int] = []
            for command in segment.commands:
                record = None
                if profiler is not None:
                    name = command[2].name if command[0] == "launch" else f"copy {command[4]} B"
                    kind = "kernel" if command[0] == "launch" else "copy"
                    record = profiler.command(queue, name, kind, owned=True)
                    profiler.pending.remove(record)
                    self._records.append(record)
                    words += queue._emit_timestamp(record.start)
                if command[0] == "launch":
                    words += queue._emit_exec(prepared[id(command)])
                else:
                    _, _, dst, src, size = command
                    if isinstance(dst, Input) or isinstance(src, Input):
                        segment.copies.append((len(words), dst, src, size))
                    else:
                        words += queue._emit_copy(_address(dst, "copy"), _address(src, "copy"), size)
                if record is not None:
                    words += queue._emit_timestamp(record.end)
            ib_words.append((segment, words))
        for segment, words in ib_words:
            if segment.queue.kind == "compute" and words:
                offset = -(-len(staged) // ARG_ALIGNMENT) * ARG_ALIGNMENT
                data = b"".join((w & 0xFFFFFFFF).to_bytes(DWORD, "little") for w in words)
                reserve(data, ARG_ALIGNMENT)
                placed.append((offset, data))
                segment.words = segment.queue._emit_indirect(base + offset, len(words))
            else:
                segment.words = words
        if len(staged) > memory_size:
            memory.free()
            raise InvalidArgument(f"graph: {len(staged)} bytes of commands and arguments do not fit "
                                  f"the graph's {memory_size} bytes")
        for offset, data in placed:
            view.write(offset, data)
        self._memory = memory
        self._segments = segments
        return self

    def _slot(self, name: str, view, offset: int, impl, arg) -> None:
        """Input `name` is written at `offset` of the graph's memory, packed as `arg` of `impl`;
        uses packed the same way share one packing per replay."""
        for pack, other, write, offsets in self._patches.setdefault(name, []):
            if pack == impl.pack_arg and (other.value_kind, other.type_name, other.size) == (
                    arg.value_kind, arg.type_name, arg.size):
                offsets.append(offset)
                return
        self._patches[name].append((impl.pack_arg, arg, view.write, [offset]))

    # -- replay ------------------------------------------------------------------------------------
    def replay(self, **values) -> int:
        """Patch the inputs given, submit the graph; returns the timeline value that ends it."""
        if self._segments is None:
            self.build()
        unknown = [name for name in values if name not in self._inputs]
        if unknown:
            raise InvalidArgument(f"graph: no input {', '.join(unknown)} (inputs: "
                                  f"{', '.join(self._inputs) or 'none'})")
        missing = [n for n in self._inputs if n not in values and n not in self._values]
        if missing:
            raise InvalidArgument(f"graph: the first replay needs a value for {', '.join(missing)}")
        device = self.device
        profiler = device.profiler
        if profiler is None:
            return self._replay(values, None)
        with profiler.span("graph replay", commands=len(self._commands)):
            return self._replay(values, profiler)

    def _replay(self, values: dict, profiler) -> int:
        device = self.device
        if self.last_value and device.timeline.value < self.last_value:
            device.timeline.wait(self.last_value)  # its kernargs and timestamps are rewritten next
        if profiler is not None and self._records:
            profiler.collect()
            for record in self._records:
                profiler.replayed(record)
        patches = self._patches
        for name, value in values.items():
            for pack, arg, write, offsets in patches.get(name, ()):
                data = pack(arg, value)
                for offset in offsets:
                    write(offset, data)
        self._values.update(values)
        value = 0
        for segment in self._segments:
            queue = segment.queue
            if segment.copies:
                self._emit_copies(segment)
            else:
                queue._words += segment.words
            value = queue.submit()
        self.last_value = value
        self.replays += 1
        return value

    def _emit_copies(self, segment: _Segment) -> None:
        """A copy segment with input addresses: its packets with this replay's addresses."""
        queue = segment.queue
        words = segment.words
        start = 0
        bound = self._values
        for index, dst, src, size in segment.copies:
            queue._words += words[start:index]
            dst = bound[dst.name] if isinstance(dst, Input) else dst
            src = bound[src.name] if isinstance(src, Input) else src
            queue._words += queue._emit_copy(_address(dst, "copy destination"),
                                             _address(src, "copy source"), size)
            start = index
        queue._words += words[start:]

    def free(self) -> None:
        """Give the graph's memory back (after its last replay finished)."""
        if self._memory is not None:
            self._memory.free()
            self._memory = None
        self._segments = None
