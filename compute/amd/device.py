"""The AMD backend of compute.Device: an AM-driven GPU (drivers.am) as memory, queues and programs.

- Opening: "mock:N" asks the mock factory registered with compute.device for a machine (its OS
  seam, the hal device string of its GPU, a firmware root) and opens the GPU through hal; any
  other device string goes to hal.open (`unbind=True` detaches a bound kernel driver).
  `AMDevice` then brings every block up (NBIO .. GC, SDMA).
- Memory: VRAM from `AMDevice.memory` (MC addresses, VMID 0 reaches them through the system
  aperture; a CPU view when inside BAR0); host memory from hal's DMA buffers mapped into the GART
  window (the GPU address is the GART VA, the CPU view the DMA buffer's Region).
- Queues: compute on GC's kernel compute queue, copy on SDMA0's gfx ring (compute/amd/queues.py).
- Sleeping until the GPU progresses (`sleep_for_progress`): on the IH when it delivers MSI-X
  (any interrupt wakes the waiter, who then re-reads its signal), else a plain bounded sleep.
"""
from __future__ import annotations

import dataclasses
import re

import hal
from compute.amd.launch import AMDProgram
from compute.amd.queues import AMDComputeQueue, AMDCopyQueue
from compute.buffer import HOST
from drivers.am.device import AMConfig, AMDevice
from hal.errors import DeviceTimeout

MOCK_PATTERN = re.compile(r"mock:(\d+)$")
VRAM_ALIGNMENT = 4096  # AMDGPU_GPU_PAGE_SIZE
# the GPU clock RELEASE_MEM (DATA_SEL 3) and SDMA TIMESTAMP write ticks at the reference clock:
# soc21.c soc21_get_xclk returns adev->clock.spll.reference_freq, 100 MHz on Navi3x boards
CLOCK_HZ = 100_000_000


class AMDBackend:
    """One AM-driven GPU for the compute layer (see the module docstring)."""

    def __init__(self, device: str, *, config: AMConfig | None = None, os=None,
                 unbind: bool = False, pci: hal.PCIDevice | None = None) -> None:
        self.machine = None
        match = MOCK_PATTERN.match(device)
        if pci is not None:
            self.pci = pci  # opened by the caller (tools.replay); closed with this backend
        elif match:
            self.pci = self._open_mock(int(match.group(1)), config)
        else:
            self.pci = hal.open(device, os=os, unbind=unbind)
        try:
            if config is None:
                config = AMConfig(firmware_dir=self._firmware_dir)
            elif config.firmware_dir is None and self._firmware_dir is not None:
                config = dataclasses.replace(config, firmware_dir=self._firmware_dir)
            self.am = AMDevice(self.pci, config=config)
        except BaseException:
            self._release()
            raise
        self.os = self.pci.os
        self.gc = self.am.block("GC")
        self.sdma = self.am.block("SDMA")
        self.gart = self.am.block("GMC").gart
        self.ih = self.am.block("IH")

    _firmware_dir: str | None = None
    clock_hz = CLOCK_HZ  # ticks per second of the GPU timestamps (compute.profile)

    def _open_mock(self, index: int, config: AMConfig | None):
        """The mock machine from the factory registered with compute.device (the compute layer
        never imports the mock: tools and tests register `tools.mock_machines.navi31`)."""
        from compute.device import mock_factory

        self.machine = mock_factory()(index)
        self._firmware_dir = self.machine.firmware_dir
        return hal.open(self.machine.device, os=self.machine.os, unbind=True)

    def describe(self) -> str:
        kind = "mock GPU" if self.machine is not None else "AMD GPU"
        return f"{kind} at {self.pci.bdf}"

    # -- memory ------------------------------------------------------------------------------------
    def alloc_vram(self, size: int):
        buffer = self.am.memory.alloc_vram(size, alignment=VRAM_ALIGNMENT, purpose="compute buffer")
        view = buffer.view if buffer.cpu_visible else None
        return buffer.mc_address, view, buffer

    def alloc_host(self, size: int):
        if self.pci.dma_window is not None:
            # DMA memory is scarce (a USB bridge's SRAM window, which SDMA staging uses): a host
            # buffer is CPU-visible VRAM, which the GPU reaches and the CPU writes through the BAR
            buffer = self.am.memory.alloc_vram(size, alignment=VRAM_ALIGNMENT, purpose="host buffer")
            return buffer.mc_address, buffer.view, buffer
        dma = self.pci.alloc_dma(size)
        try:
            mapping = self.gart.map(dma)
        except BaseException:
            self.pci.free_dma(dma)
            raise
        return mapping.va, dma.region, (dma, mapping)

    def free(self, kind: str, handle) -> None:
        if kind == HOST and isinstance(handle, tuple):
            dma, mapping = handle
            try:
                self.gart.unmap(mapping)
            finally:
                self.pci.free_dma(dma)
        else:
            self.am.memory.free_vram(handle)

    # -- queues and programs -----------------------------------------------------------------------
    def compute_queue(self, device) -> AMDComputeQueue:
        return AMDComputeQueue(device, self.gc)

    def copy_queue(self, device) -> AMDCopyQueue:
        return AMDCopyQueue(device, self.sdma)

    def load_program(self, device, binary: bytes, name: str) -> AMDProgram:
        return AMDProgram(device, binary, name)

    def sleep_for_progress(self, timeout_s: float) -> None:
        """Sleep up to `timeout_s`, woken early by any interrupt when the IH has MSI-X. A VM fault
        the IH delivers meanwhile is raised (drivers.am.ih.VMFault naming the address): a wave that
        faults stops its queue (gfx_v11_0.c: the CP halts on a UTCL1 error), so waiting on is
        useless; `reset_compute_queue` brings the queue back. A RAS event is raised too."""
        ih = self.ih
        if ih is not None and getattr(ih, "msix", False) and getattr(ih, "enabled", False):
            try:
                self._raise_faults(ih.wait("progress of a queue", timeout_s=timeout_s))
            except DeviceTimeout:
                pass
            return
        self.os.sleep(timeout_s)
        if ih is not None and getattr(ih, "enabled", False):
            self._raise_faults(ih.process())

    def check_errors(self) -> None:
        """Read what the IH holds and raise the first VM fault or RAS error in it (called after a
        synchronize: errors the GPU reported while nobody slept on the IH are not lost)."""
        ih = self.ih
        if ih is not None and getattr(ih, "enabled", False):
            self._raise_faults(ih.process())

    @staticmethod
    def _raise_faults(events) -> None:
        """A VM fault stops the faulting queue (see sleep_for_progress); a RAS event (an
        uncorrectable UMC ECC error, poisoned data) means results may be corrupt: amdgpu's
        handler (amdgpu_umc.c amdgpu_umc_do_page_retirement) resets the GPU, failing the jobs in
        flight. Both are raised (drivers.am.ih.VMFault, RASError)."""
        for event in events:
            if event.kind in ("vm_fault", "ras") and event.error is not None:
                raise event.error

    def reset_compute_queue(self, why: str) -> None:
        """Dequeue the compute queue, drop its unconsumed work and map it again (GCv11_0.reset_queue)."""
        self.gc.reset_queue(why)

    # -- teardown ----------------------------------------------------------------------------------
    def close(self) -> None:
        try:
            self.am.fini()
        finally:
            self._release()

    def _release(self) -> None:
        try:
            self.pci.close()
        finally:
            if self.machine is not None:
                self.machine.close()
