"""Mock machines for the layers that must not import the mock themselves (compute, drivers).

`navi31(index)` is the factory `compute.device.register_mock_factory` takes for "mock:N": the
default mock machine (mockgpu.Machine.default, one Navi31) with the synthetic Navi31 firmware set
and the ownership lock directory in a temporary directory removed by `close()`.
`navi31_vfio(index)` is the same machine with its GPU opened through the VFIO backend (the audio
function unbound so vfio-pci can own the whole IOMMU group), where the IH delivers MSI-X.
`navi31_usb(index, firmware)` is a machine with a Navi31 behind an ASM24xx USB bridge at USB port
1-2 (mockgpu.usb), opened as "usb:1-2" through custom or stock firmware.
`nvidia(gpu, version)` is a machine with the simulated NVIDIA kernel driver (mockgpu.nv) loaded:
/dev/nvidiactl, /dev/nvidia0, /dev/nvidia-uvm for an H100 by default (docs/nv.md);
`nvidia_compute(gpu)` is the factory compute.device takes for "mock:nv[:gpu]" (kind "nv").
`qcom(gpu)` is a machine with the simulated KGSL driver (mockgpu.qcom) loaded: /dev/kgsl-3d0 for an
Adreno 630 (docs/qcom.md).
"""
from __future__ import annotations

import pathlib
import shutil
import tempfile
from dataclasses import dataclass

from hal.errors import DeviceNotFound
from mockgpu import GPU_AUDIO_BDF, GPU_BDF, Machine
from mockgpu.amd.firmware_images import write_navi31_set


class _ScratchMachine:
    """What every mock machine here shares: the OS seam of its `machine`, and `close()` removing
    its `scratch` directory (lock files, firmware)."""

    machine: Machine
    scratch: str

    @property
    def os(self):
        return self.machine.os

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


@dataclass
class MockNavi31(_ScratchMachine):
    """A default mock machine and what a driver needs to open its GPU."""

    machine: Machine
    device: str
    firmware_dir: str
    scratch: str


def navi31(index: int = 0, backend: str = "pci") -> MockNavi31:
    """The default machine's GPU as "mock:0" (it has one), opened through `backend` ("pci" or
    "vfio")."""
    if backend not in ("pci", "vfio"):
        raise DeviceNotFound(f"mock:{index}: no {backend!r} backend; the mock offers pci and vfio")
    if index != 0:
        raise DeviceNotFound(f"mock:{index}: the mock machine has one GPU, mock:0")
    scratch = tempfile.mkdtemp(prefix="gpuhal-mock-")
    lock_dir = pathlib.Path(scratch) / "lock"
    lock_dir.mkdir()
    firmware = write_navi31_set(pathlib.Path(scratch) / "firmware")
    machine = Machine.default(lock_dir=str(lock_dir))
    if backend == "vfio":
        # drivers/vfio/container.c vfio_container_attach_group -> iommu_group_claim_dma_owner: no
        # device of the group may stay bound to a kernel driver that uses DMA
        machine.kernel.unbind(GPU_AUDIO_BDF, "snd_hda_intel")
    return MockNavi31(machine, f"{backend}:{GPU_BDF}", str(firmware), scratch)


def navi31_vfio(index: int = 0) -> MockNavi31:
    """`navi31` with the GPU opened through VFIO: MSI-X reaches the IH."""
    return navi31(index, backend="vfio")


def navi31_usb(index: int = 0, firmware: str = "custom") -> MockNavi31:
    """"mock:0" as a Navi31 behind an ASM24xx USB bridge with `firmware` ("custom" or "stock",
    the latter over UAS), opened as usb:1-2 (DMA memory is the bridge's 512 KiB SRAM window)."""
    from mockgpu.usb import DEFAULT_PATH, navi31_behind_bridge

    if index != 0:
        raise DeviceNotFound(f"mock:{index}: the mock machine has one USB GPU, mock:0")
    scratch = tempfile.mkdtemp(prefix="gpuhal-mock-usb-")
    lock_dir = pathlib.Path(scratch) / "lock"
    lock_dir.mkdir()
    firmware_dir = write_navi31_set(pathlib.Path(scratch) / "firmware")
    machine = Machine.default(lock_dir=str(lock_dir))
    navi31_behind_bridge(machine, DEFAULT_PATH, firmware=firmware)
    return MockNavi31(machine, f"usb:{DEFAULT_PATH}", str(firmware_dir), scratch)


@dataclass
class MockNVIDIA(_ScratchMachine):
    """A mock machine with the simulated NVIDIA kernel driver loaded; `driver` is its kernel side."""

    machine: Machine
    driver: object
    scratch: str

    def register_program(self, binary: bytes, name: str, sm: int) -> None:
        """Tell the mock GPU the SASS and PTX of kernel `name` of a fatbinary (or cubin), so a
        launch of that SASS runs the PTX (mockgpu/nv/gpu.py). The parsing is the driver's, done here
        because the mock imports no driver code."""
        from compute.nv.program import select_cubin
        from drivers.nv import cubin as cubin_format

        cubin_bytes, ptx = select_cubin(bytes(binary), sm)
        if ptx is None:
            return  # a bare cubin has no PTX: the mock cannot run it (an illegal instruction there)
        kernel = cubin_format.parse(cubin_bytes)[name]
        self.driver.gpu_model.programs.add(name, kernel.code, ptx, kernel.param_bank_offset,
                                           kernel.param_size, kernel.shared_size, kernel.min_stack_size)


def nvidia_compute(gpu: str | None = None) -> MockNVIDIA:
    """The factory compute.device takes for "mock:nv[:gpu]": `nvidia(gpu)`, H100 by default."""
    return nvidia(gpu or "h100")


def nvidia(gpu: str = "h100", version: str | None = None, proc_version: bool = True) -> MockNVIDIA:
    """A machine whose NVIDIA driver (`version`, default the r535 build the bindings come from; a
    release of any branch in drivers.nv.abi.RELEASES, e.g. "580.142", answers with that branch's ABI)
    drives one GPU: "h100" (GH100, default), "h200", "a100" (GA100), "rtx3090" (GA102), "rtx4090" (AD102).
    `proc_version=False`: the machine has no /proc/driver/nvidia/version (a sandbox's view)."""
    from mockgpu.nv import driver as nv_driver
    from mockgpu.nv.gpus import GPUS

    if gpu not in GPUS:
        raise DeviceNotFound(f"no mock NVIDIA GPU {gpu!r}; have {', '.join(GPUS)}")
    scratch = tempfile.mkdtemp(prefix="gpuhal-mock-nv-")
    machine = Machine(lock_dir=scratch)
    loaded = nv_driver.install(machine, GPUS[gpu], version or nv_driver.DEFAULT_VERSION, proc_version)
    return MockNVIDIA(machine, loaded, scratch)


@dataclass
class MockQCOM(_ScratchMachine):
    """A mock machine with the simulated KGSL driver loaded; `driver` is its kernel side."""

    machine: Machine
    driver: object
    scratch: str


def qcom(gpu: str = "a630") -> MockQCOM:
    """A machine whose KGSL driver drives one Adreno GPU: "a630" (Snapdragon 845)."""
    from mockgpu.qcom import kgsl as qcom_kgsl

    gpus = {"a630": qcom_kgsl.ADRENO_630}
    if gpu not in gpus:
        raise DeviceNotFound(f"no mock Adreno GPU {gpu!r}; have {', '.join(gpus)}")
    scratch = tempfile.mkdtemp(prefix="gpuhal-mock-qcom-")
    machine = Machine(lock_dir=scratch)
    loaded = qcom_kgsl.install(machine, gpus[gpu])
    return MockQCOM(machine, loaded, scratch)
