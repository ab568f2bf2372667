"""Mock machines for the layers that must not import the mock themselves (compute, drivers).

`navi31(index)` is the factory `compute.device.register_mock_factory` takes for "mock:N": the
default mock machine (mockgpu.Machine.default, one Navi31) with the synthetic Navi31 firmware set
and the ownership lock directory in a temporary directory removed by `close()`.
`navi31_vfio(index)` is the same machine with its GPU opened through the VFIO backend (the audio
function unbound so vfio-pci can own the whole IOMMU group), where the IH delivers MSI-X.
"""
from __future__ import annotations

import pathlib
import shutil
import tempfile
from dataclasses import dataclass

from hal.errors import DeviceNotFound
from mockgpu import GPU_AUDIO_BDF, GPU_BDF, Machine
from mockgpu.amd.firmware_images import write_navi31_set


@dataclass
class MockNavi31:
    """A default mock machine and what a driver needs to open its GPU."""

    machine: Machine
    device: str
    firmware_dir: str
    scratch: str

    @property
    def os(self):
        return self.machine.os

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


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
