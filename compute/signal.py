"""Timeline signals: a 64-bit value and a 64-bit timestamp in memory both the CPU and the GPU reach.

A queue writes a signal's value (`Queue.signal`) and timestamp (`Queue.timestamp`) from the GPU;
the CPU reads them. `Signal.wait(value)` returns once the value is at least `value`: it spins for
`SPIN_S`, then sleeps in slices through the device backend (`sleep_for_progress`: on the interrupt
where the backend has one, else a short sleep), and is bounded. A timeout is `DeviceTimeout` naming
the signal, the value awaited and the value seen, the queue last asked to signal it and what that
queue's hardware shows (read/write pointers, the engine's state).

Memory layout of one signal (SIGNAL_BYTES): the value at VALUE_OFFSET, the timestamp at
TIMESTAMP_OFFSET, both little-endian 64-bit; a signal starts 16-byte aligned (RELEASE_MEM's 64-bit
data and SDMA's TIMESTAMP need 8 bytes; an NVIDIA host semaphore release with a timestamp writes 16
bytes and needs 16, open-gpu-doc manuals/ampere/ga100/dev_pbdma.ref.txt SEM_EXECUTE).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from hal.errors import DeviceTimeout, InvalidArgument
from hal.region import Region

if TYPE_CHECKING:
    from compute.device import Device
    from compute.queue import Queue

VALUE_OFFSET = 0
TIMESTAMP_OFFSET = 8
SIGNAL_BYTES = 16
SIGNAL_ALIGNMENT = 16  # see the module docstring
VALUE_MASK = (1 << 64) - 1
SPIN_S = 0.0002  # this layer's choice: a submission on an idle engine completes within this
SLEEP_SLICE_S = 0.005  # longest single sleep between checks when no interrupt wakes the waiter
DEFAULT_TIMEOUT_S = 10.0  # this layer's choice; Device(timeout_s=...) overrides it


class Signal:
    """One timeline signal (see the module docstring). `gpu_address` is where a queue writes it."""

    __slots__ = ("device", "name", "region", "offset", "gpu_address", "writer")

    def __init__(self, device: "Device", name: str, region: Region, offset: int,
                 gpu_address: int) -> None:
        if offset % SIGNAL_ALIGNMENT or gpu_address % SIGNAL_ALIGNMENT:
            raise InvalidArgument(f"signal {name!r}: memory at {gpu_address:#x} is not "
                                  f"{SIGNAL_ALIGNMENT}-byte aligned")
        self.device = device
        self.name = name
        self.region = region
        self.offset = offset
        self.gpu_address = gpu_address
        self.writer: Queue | None = None  # the queue last asked to signal it, for timeout messages

    @property
    def value(self) -> int:
        return self.region.read64(self.offset + VALUE_OFFSET)

    @value.setter
    def value(self, new: int) -> None:
        self.region.write64(self.offset + VALUE_OFFSET, new & VALUE_MASK)

    @property
    def timestamp(self) -> int:
        """The GPU clock counter the last `Queue.timestamp` wrote (ticks of the backend's clock)."""
        return self.region.read64(self.offset + TIMESTAMP_OFFSET)

    @property
    def value_address(self) -> int:
        return self.gpu_address + VALUE_OFFSET

    @property
    def timestamp_address(self) -> int:
        return self.gpu_address + TIMESTAMP_OFFSET

    def wait(self, value: int, timeout_s: float | None = None) -> None:
        """Return once `value` is reached; spin, then sleep, bounded (see the module docstring)."""
        if self.value >= value:
            return
        os = self.device.os
        timeout_s = self.device.timeout_s if timeout_s is None else timeout_s
        start = os.monotonic()
        spin_until = start + SPIN_S
        deadline = start + timeout_s
        while os.monotonic() < spin_until:
            if self.value >= value:
                return
        while self.value < value:
            remaining = deadline - os.monotonic()
            if remaining <= 0:
                raise self._timeout(value, timeout_s)
            self.device.backend.sleep_for_progress(min(remaining, SLEEP_SLICE_S))

    def _timeout(self, value: int, timeout_s: float) -> DeviceTimeout:
        if self.writer is None:
            who = "no queue was asked to signal it"
        else:
            who = f"last signalled by the {self.writer.name} queue ({self.writer.hardware_state()})"
        return DeviceTimeout(f"{self.device.name}: signal {self.name!r} did not reach {value} within "
                             f"{timeout_s} s (it holds {self.value}); {who}")

    def __repr__(self) -> str:
        return f"<Signal {self.name!r} at {self.gpu_address:#x} value {self.value}>"
