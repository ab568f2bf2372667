"""Device: a GPU opened by device string for compute, owning its queues, allocators and timeline.

`Device("mock:0")` builds a mock machine (a Navi31) through the factory the caller registered
(`register_mock_factory`; compute never imports the mock) and brings it up through drivers.am; any
other string (`pci:0000:03:00.0`, `vfio:0000:03:00.0`) is opened through hal and brought up the same
way. The backend (compute/amd/device.py for AMD) does the vendor work: memory, GPU addresses,
queues, programs and how to sleep until the GPU progresses. This module keeps what every backend
shares:

- `timeline`, a 64-bit `Signal`, and `timeline_value`, the next value a submission will signal
  (compute.queue explains the ordering); `synchronize()` waits for everything submitted;
- `compute_queue` and `copy_queue`;
- `allocate(size, host=False)`: VRAM or host `Buffer`s; `staging` (a `StagingPool` for VRAM copies)
  and `kernargs` (a `TimelineArena` of host memory for kernel arguments and dispatch packets);
- `new_signal(name)`: signals in host memory the CPU reads, several per page;
- `load(binary_or_path, name)`: a `Program`;
- `profiler` (None unless profiling: `profile(path)` or GPUHAL_PROFILE, compute/profile.py).
"""
from __future__ import annotations

import pathlib
from typing import Callable

from compute.buffer import HOST, VRAM, Buffer, StagingPool, TimelineArena
from compute.profile import Profiler, from_environment
from compute.program import Program
from compute.signal import DEFAULT_TIMEOUT_S, SIGNAL_BYTES, Signal
from hal.errors import BackendUnavailable, InvalidArgument

STAGING_COUNT = 4  # this layer's choice: staging buffers in flight per direction
STAGING_SIZE = 2 << 20  # amdgpu_ttm.h AMDGPU_GTT_MAX_TRANSFER_SIZE pages (512 x 4 KiB)
KERNARG_SIZE = 1 << 20  # this layer's choice: kernargs and dispatch packets in flight
SIGNAL_PAGE = 4096  # host memory for signals is taken a page at a time


_mock_factory: Callable[[int], object] | None = None
_mock_factories: dict[str, Callable] = {}  # other kinds of mock machine ("nv"), by kind


def register_mock_factory(factory: Callable[[int], object] | None, kind: str = "amd") -> None:
    """Let "mock:N" device strings build machines with `factory(N)`, which returns an object with
    `os` (the machine's OS seam), `device` (the hal device string of its GPU), `firmware_dir`,
    the model as `machine`, and `close()`. The compute layer never imports the mock itself:
    tools and tests register `tools.mock_machines.navi31`."""
    global _mock_factory
    if kind != "amd":
        # "mock:nv[:gpu]" (compute/nv/device.py): factory(gpu) returns an object with `os`,
        # `register_program(binary, name, sm)` and `close()` (tools.mock_machines.nvidia_compute)
        if factory is None:
            _mock_factories.pop(kind, None)
        else:
            _mock_factories[kind] = factory
        return
    _mock_factory = factory


def mock_factory(kind: str = "amd") -> Callable:
    if kind != "amd":
        if kind not in _mock_factories:
            raise BackendUnavailable(f"mock:{kind} devices need a mock machine factory: call "
                                     f"compute.device.register_mock_factory(tools.mock_machines."
                                     f"nvidia_compute, kind={kind!r}) first")
        return _mock_factories[kind]
    if _mock_factory is None:
        raise BackendUnavailable("mock:N devices need a mock machine factory: call "
                                 "compute.device.register_mock_factory(tools.mock_machines.navi31) "
                                 "first (the tools and the tests do)")
    return _mock_factory


def open_backend(device: str, **options):
    """The backend for a device string: NVIDIA for "nv:N" and "mock:nv[:gpu]", else AMD."""
    if device.startswith(("nv:", "mock:nv")):
        from compute.nv.device import NVBackend

        return NVBackend(device, **options)
    if device.startswith("qcom:"):
        # Adreno through KGSL (compute/qcom/device.py); a mock machine's seam comes as os=
        from compute.qcom.device import QCOMBackend

        return QCOMBackend(device, **options)
    from compute.amd.device import AMDBackend

    return AMDBackend(device, **options)


class Device:
    """A compute device (see the module docstring)."""

    def __init__(self, device: str = "mock:0", *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 staging_count: int = STAGING_COUNT, staging_size: int = STAGING_SIZE,
                 kernarg_size: int = KERNARG_SIZE, **backend_options) -> None:
        self.name = device
        self.timeout_s = timeout_s
        self.backend = open_backend(device, **backend_options)
        self.os = self.backend.os
        self._buffers: list[Buffer] = []
        self._signal_pages: list[Buffer] = []
        self._signal_free = 0  # bytes used in the last signal page
        self.closed = False
        self.profiler = None  # a started compute.profile.Profiler, when profiling
        try:
            self.timeline = self.new_signal("timeline")
            self.timeline_value = 1
            self.last_queue = None
            self.compute_queue = self.backend.compute_queue(self)
            self.copy_queue = self.backend.copy_queue(self)
            self.staging = StagingPool(self, staging_count, staging_size)
            self.kernargs = TimelineArena("kernargs", self.allocate(kernarg_size, host=True),
                                          self.timeline)
            self.profiler = from_environment(self)
        except BaseException:
            self.backend.close()
            raise

    # -- memory ------------------------------------------------------------------------------------
    def allocate(self, size: int, host: bool = False) -> Buffer:
        """A buffer of `size` bytes in VRAM, or in host memory the GPU reaches when `host`."""
        if size <= 0:
            raise InvalidArgument(f"{self.name}: a buffer of {size} bytes")
        if host:
            address, view, handle = self.backend.alloc_host(size)
            buffer = Buffer(self, HOST, size, address, view, handle)
        else:
            address, view, handle = self.backend.alloc_vram(size)
            buffer = Buffer(self, VRAM, size, address, view, handle)
        self._buffers.append(buffer)
        return buffer

    def free_buffer(self, buffer: Buffer) -> None:
        if buffer not in self._buffers:
            raise InvalidArgument(f"{self.name}: {buffer!r} is not a live buffer of this device")
        self.synchronize()
        self._buffers.remove(buffer)
        self.backend.free(buffer.kind, buffer.handle)

    def new_signal(self, name: str, value: int = 0) -> Signal:
        """A signal in host memory (value and timestamp), set to `value`."""
        if not self._signal_pages or self._signal_free + SIGNAL_BYTES > SIGNAL_PAGE:
            self._signal_pages.append(self.allocate(SIGNAL_PAGE, host=True))
            self._signal_free = 0
        page = self._signal_pages[-1]
        offset = self._signal_free
        self._signal_free += SIGNAL_BYTES
        signal = Signal(self, name, page.cpu_view, offset, page.gpu_address + offset)
        signal.value = value
        page.cpu_view.write64(offset + SIGNAL_BYTES // 2, 0)
        return signal

    # -- work --------------------------------------------------------------------------------------
    def committed(self, queue, value: int) -> None:
        """`queue` submitted with timeline `value`: what it allocated while recording is tagged."""
        self.kernargs.commit(queue, value)
        if self.profiler is not None:
            self.profiler.committed(queue, value)

    def synchronize(self, timeout_s: float | None = None) -> None:
        """Wait until every submission is done; then raise an error the GPU reported meanwhile (a
        VM fault, a RAS event) that no wait has raised yet."""
        if self.timeline_value > 1:
            if self.profiler is None:
                self.timeline.wait(self.timeline_value - 1, timeout_s)
            else:
                with self.profiler.span("synchronize"):
                    self.timeline.wait(self.timeline_value - 1, timeout_s)
        check_errors = getattr(self.backend, "check_errors", None)
        if check_errors is not None:
            check_errors()

    def reset_compute_queue(self, why: str = "requested") -> None:
        """Recover from a kernel that never ends or a VM fault: the backend dequeues the compute
        queue and maps it again, empty. Work submitted before is lost; the timeline is advanced to
        the last value handed out so nothing waits for it (ring and kernarg space is reclaimed)."""
        self.backend.reset_compute_queue(why)
        last = self.timeline_value - 1
        if self.timeline.value < last:
            self.timeline.value = last

    def profile(self, path: str | pathlib.Path | None = None) -> Profiler:
        """Start profiling (compute.profile): `with dev.profile("trace.json"): ...` writes the
        trace on leaving; or keep the Profiler and call `save(path)`."""
        return Profiler(self, None if path is None else str(path)).start()

    def load(self, binary: bytes | str | pathlib.Path, name: str) -> Program:
        """Kernel `name` of a binary (bytes or a path)."""
        if isinstance(binary, (str, pathlib.Path)):
            binary = pathlib.Path(binary).read_bytes()
        return Program(self, bytes(binary), name)

    def close(self) -> None:
        """Wait for the GPU, then tear the backend down (the driver's fini)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.synchronize()
            profiler = self.profiler
            if profiler is not None and profiler.path is not None:
                profiler.stop()
                profiler.save()
        finally:
            self.backend.close()

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Device {self.name!r} ({self.backend.describe()})>"
