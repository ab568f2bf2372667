"""A GPU-shaped endpoint with AMD Navi31's PCI identity and BAR layout, and its HDMI audio function.

PCI function only; GPU internals come later. Config space, BARs, MSI/MSI-X and ReBAR behave like
the real part's PCI function; the MMIO BAR is a plain register file and VRAM is plain memory.

BAR layout (as the RX 7900 XTX presents it):
    BAR0  64-bit prefetchable VRAM window, 256 MiB at power-on, resizable via ReBAR to 32 GiB
    BAR2  64-bit prefetchable doorbell aperture, 2 MiB
    BAR4  I/O ports, 256 bytes (legacy VGA-compatible register access)
    BAR5  32-bit non-prefetchable MMIO registers, 1 MiB (MSI-X table and PBA live here)

VRAM (24 GiB) is an anonymous, lazily-populated private mapping: pages exist only once touched,
so the machine costs no RAM up front. BAR0 always shows the first BAR0-size bytes of it.
"""
from __future__ import annotations

import mmap
import sys

from autogen.linux import pci_regs

from mockgpu.pci import BarKind, BarSpec, Identity, MSIXLayout, PCIeInfo, PCIeLink, PCIFunction

MEBIBYTE = 1 << 20
GIBIBYTE = 1 << 30

AMD_VENDOR_ID = 0x1002  # pci.ids: Advanced Micro Devices, Inc. [AMD/ATI]
NAVI31_DEVICE_ID = 0x744C  # pci.ids: Navi 31 [Radeon RX 7900 XT/7900 XTX]
NAVI31_REVISION = 0xC8  # RX 7900 XTX reference board revision
NAVI31_AUDIO_DEVICE_ID = 0xAB30  # pci.ids: Navi 31 HDMI/DP Audio
DISPLAY_VGA_CLASS = 0x030000  # PCI code and ID assignment r1.11: display controller, VGA compatible
AUDIO_HDA_CLASS = 0x040300  # PCI code and ID assignment r1.11: multimedia, audio device (HD Audio)
NAVI31_VRAM_SIZE = 24 * GIBIBYTE  # RX 7900 XTX: 24 GiB GDDR6
NAVI31_BAR0_DEFAULT = 256 * MEBIBYTE  # the VRAM window firmware sets up without ReBAR
NAVI31_BAR0_REBAR_SIZES = tuple(MEBIBYTE << code for code in range(8, 16))  # 256 MiB .. 32 GiB
NAVI31_BAR2_SIZE = 2 * MEBIBYTE
NAVI31_BAR4_SIZE = 256
NAVI31_BAR5_SIZE = 1 * MEBIBYTE
NAVI31_MSIX_VECTORS = 3
NAVI31_MSIX_TABLE = 0x42000  # in BAR5; our placement, clear of the register ranges drivers use first
NAVI31_MSIX_PBA = 0x43000
AUDIO_BAR0_SIZE = 16 * 1024
NAVI31_DRIVER = "amdgpu"
AUDIO_DRIVER = "snd_hda_intel"
# include/uapi/asm-generic/mman.h: MAP_NORESERVE (Python's mmap module does not export it before 3.13)
LINUX_MAP_NORESERVE = 0x4000


def _anonymous_memory(size: int) -> mmap.mmap:
    """Private anonymous memory the kernel fills on first touch; nothing reserved up front."""
    noreserve = getattr(mmap, "MAP_NORESERVE", LINUX_MAP_NORESERVE if sys.platform.startswith("linux") else 0)
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | noreserve
    return mmap.mmap(-1, size, flags=flags)


class Navi31Function(PCIFunction):
    """Function 0 of the GPU: PCI identity, BARs, capabilities; register file MMIO."""

    multifunction = True
    msi_vectors = 1
    msix = MSIXLayout(vectors=NAVI31_MSIX_VECTORS, bar=5, table_offset=NAVI31_MSIX_TABLE,
                      pba_offset=NAVI31_MSIX_PBA)
    default_driver = NAVI31_DRIVER
    # This model's choice (no lspci dump of the part was at hand to check): no FLR in DevCap and
    # No_Soft_Reset in PM control, so with the audio function on its bus Linux finds no reset
    # method (drivers/pci/pci.c pci_init_reset_methods) and vfio-pci reports no RESET flag
    pm_no_soft_reset = True

    def __init__(self, vram_size: int = NAVI31_VRAM_SIZE) -> None:
        identity = Identity(AMD_VENDOR_ID, NAVI31_DEVICE_ID, DISPLAY_VGA_CLASS, NAVI31_REVISION,
                            subsystem_vendor=AMD_VENDOR_ID, subsystem_device=NAVI31_DEVICE_ID)
        bars = [
            BarSpec(0, NAVI31_BAR0_DEFAULT, BarKind.MEM64, prefetchable=True,
                    rebar_sizes=NAVI31_BAR0_REBAR_SIZES),
            BarSpec(2, NAVI31_BAR2_SIZE, BarKind.MEM64, prefetchable=True),
            BarSpec(4, NAVI31_BAR4_SIZE, BarKind.IO),
            BarSpec(5, NAVI31_BAR5_SIZE, BarKind.MEM32),
        ]
        link = PCIeLink(max_speed=pci_regs.PCI_EXP_LNKCAP_SLS_16_0GB, max_width=16,
                        speed=pci_regs.PCI_EXP_LNKCAP_SLS_16_0GB, width=16)
        self.vram_size = vram_size
        window = max(NAVI31_BAR0_REBAR_SIZES)
        self._vram = _anonymous_memory(max(vram_size, window))
        self._vram_view = memoryview(self._vram)
        self._doorbells = _anonymous_memory(NAVI31_BAR2_SIZE)
        self._doorbell_view = memoryview(self._doorbells)
        self.registers = bytearray(NAVI31_BAR5_SIZE)
        super().__init__(identity, bars, PCIeInfo(pci_regs.PCI_EXP_TYPE_ENDPOINT, link, flr=False))

    @property
    def vram(self) -> memoryview:
        """All of VRAM (the BAR0 window is its first BAR0-size bytes)."""
        return self._vram_view[:self.vram_size]

    def bar_memory(self, index: int) -> memoryview | None:
        if index == 0:
            return self._vram_view[:self.bar_sizes[0]]
        if index == 2:
            return self._doorbell_view
        return None

    def bar_read(self, index: int, off: int, n: int) -> bytes:
        if index == 5:
            return bytes(self.registers[off:off + n])
        if index == 4:
            return bytes(n)
        return super().bar_read(index, off, n)

    def bar_write(self, index: int, off: int, data: bytes) -> None:
        if index == 5:
            self.registers[off:off + len(data)] = data
            return
        if index == 4:
            return
        super().bar_write(index, off, data)

    def reset_device_state(self) -> None:
        self.registers[:] = bytes(len(self.registers))


class Navi31Audio(PCIFunction):
    """Function 1: the HDMI/DP audio controller every Navi31 board carries."""

    msi_vectors = 1
    default_driver = AUDIO_DRIVER
    pm_no_soft_reset = True  # like the GPU function: no PM reset

    def __init__(self) -> None:
        identity = Identity(AMD_VENDOR_ID, NAVI31_AUDIO_DEVICE_ID, AUDIO_HDA_CLASS, 0,
                            subsystem_vendor=AMD_VENDOR_ID, subsystem_device=NAVI31_AUDIO_DEVICE_ID)
        link = PCIeLink(max_speed=pci_regs.PCI_EXP_LNKCAP_SLS_16_0GB, max_width=16,
                        speed=pci_regs.PCI_EXP_LNKCAP_SLS_16_0GB, width=16)
        self.registers = bytearray(AUDIO_BAR0_SIZE)
        super().__init__(identity, [BarSpec(0, AUDIO_BAR0_SIZE, BarKind.MEM32)],
                         PCIeInfo(pci_regs.PCI_EXP_TYPE_ENDPOINT, link, flr=False))

    def bar_read(self, index: int, off: int, n: int) -> bytes:
        return bytes(self.registers[off:off + n])

    def bar_write(self, index: int, off: int, data: bytes) -> None:
        self.registers[off:off + len(data)] = data

    def reset_device_state(self) -> None:
        self.registers[:] = bytes(len(self.registers))
