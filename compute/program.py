"""Programs: a kernel loaded on a device and launched as `program(*buffers, *scalars, global_size=...,
local_size=...)`.

The backend loads the binary (`backend.load_program`: for AMD an HSA code object, uploaded to VRAM)
and prepares each launch (`prepare`: kernargs packed from the kernel's argument metadata into the
device's kernarg arena, plus whatever in-memory state the kernel reads); the queue's `exec` records
the dispatch and `submit` sends it. Sizes are in work-items per dimension (OpenCL's convention):
`global_size` need not be a multiple of `local_size`; the last work-group is partial and kernels
guard their index.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from hal.errors import InvalidArgument

if TYPE_CHECKING:
    from compute.device import Device
    from compute.queue import Queue


def dimensions(size: int | Sequence[int], what: str) -> tuple[int, int, int]:
    """A size as three positive dimensions (missing ones are 1)."""
    values = (size,) if isinstance(size, int) else tuple(size)
    if not 1 <= len(values) <= 3 or any(not isinstance(v, int) or v < 1 for v in values):
        raise InvalidArgument(f"{what} {size!r}: one to three positive integers")
    return values + (1,) * (3 - len(values))  # type: ignore[return-value]


class Program:
    """One kernel of a binary, loaded on `device` (see the module docstring)."""

    def __init__(self, device: "Device", binary: bytes, name: str) -> None:
        self.device = device
        self.name = name
        self.impl = device.backend.load_program(device, binary, name)

    def prepare(self, args: Sequence, global_size, local_size, queue: "Queue"):
        """Pack the arguments and build the launch `queue.exec` records."""
        return self.impl.prepare(queue, tuple(args), dimensions(global_size, "global_size"),
                                 dimensions(local_size, "local_size"))

    def __call__(self, *args, global_size, local_size=(1, 1, 1), wait: bool = False,
                 queue: "Queue | None" = None) -> int:
        """Launch on the compute queue; returns the timeline value that ends the kernel (waited
        for when `wait`)."""
        queue = self.device.compute_queue if queue is None else queue
        profiler = self.device.profiler
        if profiler is None:
            queue.exec(self.prepare(args, global_size, local_size, queue))
            value = queue.submit()
        else:
            with profiler.span(f"launch {self.name}"):
                queue.exec(self.prepare(args, global_size, local_size, queue))
                value = queue.submit()
        if wait:
            self.device.timeline.wait(value)
        return value

    def __repr__(self) -> str:
        return f"<Program {self.name!r} on {self.device.name}>"
