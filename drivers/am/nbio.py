"""NBIO 4.3.0 (with the SOC21 common setup) and HDP 6.0.0: doorbell aperture, HDP flush, bus mastering.

What amdgpu does for these versions (drivers/gpu/drm/amd/amdgpu/soc21.c soc21_common_hw_init and
hw_fini, nbio_v4_3.c, hdp_v6_0.c):
- hw_init: bus mastering on (through hal's config access), the HDP flush registers remapped into
  the MMIO hole at MMIO_REG_HOLE_OFFSET so a flush is one posted write, the doorbell aperture on;
- hw_fini: the doorbell aperture off, bus mastering off;
- HDP flush: a write to the remapped HDP_MEM_FLUSH_CNTL, posted by reading the memory-size register;
- HDP invalidate: nothing on HDP 6.0 (hdp_v6_0.c has no invalidate hook and the part no
  HDP_READ_CACHE_INVALIDATE register).
"""
from __future__ import annotations

from autogen.linux import kfd_ioctl, pci_regs

from drivers.am.ip import IPBlock
from hal.os import PAGE_SIZE

# nbio_v4_3.c: MMIO_REG_HOLE_OFFSET (the register hole amdgpu uses with 4 KiB pages)
MMIO_REG_HOLE_OFFSET = 0x80000 - PAGE_SIZE


class NBIOv4_3(IPBlock):
    """NBIO 4.3.0 plus the SOC21 common block's register setup."""

    block = "NBIO"
    versions = ((4, 3, 0),)

    def sw_init(self) -> None:
        registers = self.device.registers
        self.memsize = registers.reg("NBIO", "regRCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE")
        self.doorbell_aperture = registers.reg("NBIO", "regRCC_DEV0_EPF0_RCC_DOORBELL_APER_EN")
        self.remap_mem_flush = registers.reg("NBIO", "regBIF_BX0_REMAP_HDP_MEM_FLUSH_CNTL")
        self.remap_reg_flush = registers.reg("NBIO", "regBIF_BX0_REMAP_HDP_REG_FLUSH_CNTL")
        self.remap_offset = MMIO_REG_HOLE_OFFSET
        self.bus_master_enabled = False

    def hw_init(self) -> None:
        self.set_bus_master(True)
        self.remap_mem_flush.write(self.remap_offset + kfd_ioctl.KFD_MMIO_REMAP_HDP_MEM_FLUSH_CNTL)
        self.remap_reg_flush.write(self.remap_offset + kfd_ioctl.KFD_MMIO_REMAP_HDP_REG_FLUSH_CNTL)
        self.set_doorbell_aperture(True)

    def hw_fini(self) -> None:
        self.set_doorbell_aperture(False)
        self.set_bus_master(False)

    def set_doorbell_aperture(self, enable: bool) -> None:
        """nbio_v4_3.c nbio_v4_3_enable_doorbell_aperture."""
        self.doorbell_aperture.update(BIF_DOORBELL_APER_EN=1 if enable else 0)

    def set_bus_master(self, enable: bool) -> None:
        """PCI_COMMAND bus master (and memory decoding, which BAR access needs) through hal."""
        pci = self.device.pci
        if enable:
            pci.enable_bus_master()
        else:
            command = pci.cfg_read16(pci_regs.PCI_COMMAND)
            if command & pci_regs.PCI_COMMAND_MASTER:
                pci.cfg_write16(pci_regs.PCI_COMMAND, command & ~pci_regs.PCI_COMMAND_MASTER)
        self.bus_master_enabled = enable

    def vram_size_mib(self) -> int:
        """nbio_v4_3.c nbio_v4_3_get_memsize."""
        return self.memsize.read()


class HDPv6_0(IPBlock):
    """HDP 6.0.0: the host data path's flush (it caches no reads to invalidate)."""

    block = "HDP"
    versions = ((6, 0, 0),)

    def sw_init(self) -> None:
        self.flushes = 0

    def flush(self) -> None:
        """hdp_v6_0.c hdp_v6_0_flush_hdp: write the remapped flush register, then read back the
        memory-size register to post the write (reading the remapped one back upsets some hosts)."""
        nbio = self.device.block("NBIO")
        flush_register = nbio.remap_offset + kfd_ioctl.KFD_MMIO_REMAP_HDP_MEM_FLUSH_CNTL
        self.device.registers.mmio.write32(flush_register, 0)
        nbio.vram_size_mib()
        self.flushes += 1

    def invalidate(self) -> None:
        """Nothing to do on HDP 6.0 (hdp_v6_0.c has no invalidate_hdp)."""
