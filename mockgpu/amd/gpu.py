"""The Navi31 model: the RX 7900 XTX's PCI function with a register file, VRAM and IP discovery.

It extends mockgpu.navi31.Navi31Function (PCI identity, BARs, capabilities, ReBAR) with:
- BAR0: VRAM, plain memory (zero-copy); a resized BAR0 shows more of it;
- BAR2: the doorbell aperture: plain memory whose writes also reach the engines listening on it
  (`doorbell_listeners`: SDMA0's queue and the MEC's compute queues);
- BAR5: the MMIO register file (mockgpu.amd.regfile) keyed by the generated register definitions
  at the bases the discovery table gives;
- the IP discovery table in the last 64 KiB of VRAM, written at power-on like the IFWI does;
- NBIO: the memory-size register, the MM_INDEX/MM_INDEX_HI/MM_DATA window into VRAM (aperture
  bit set) and into the register space (aperture bit clear), the HDP flush remap hole and the
  GPU_HDP_FLUSH_REQ/DONE handshake, the doorbell aperture enable;
- MP0: the C2PMSG_33 "IFWI init done" flag amdgpu waits for before it reads the table.

The model lives in the Machine, not in the process that opened it: registers (scratch registers
included) and VRAM keep their contents when the process closes the device. A PCI reset (FLR, bus
reset) brings the registers back to their power-on values and keeps VRAM. `vanish()` takes the
function off the bus: its registers read all ones from then on.
"""
from __future__ import annotations

from autogen.amd.regs import nbio_4_3_0
from autogen.linux import kfd_ioctl

from hal.region import CallbackRegion, Region

from mockgpu.amd.discovery_table import NAVI31_IPS, IPEntry, build_table, table_offset
from mockgpu.amd.gmc import GMC
from mockgpu.amd.ih import IHModel
from mockgpu.amd.mec import MECModel
from mockgpu.amd.psp import PSPModel
from mockgpu.amd.regfile import REGISTER_BYTES, WORD_MASK, RegisterFile
from mockgpu.amd.rlc import RLCModel
from mockgpu.amd.sdma import SDMAModel
from mockgpu.amd.smn import SMNSpace
from mockgpu.amd.smu import SMUModel
from mockgpu.navi31 import NAVI31_BAR5_SIZE, NAVI31_VRAM_SIZE, Navi31Function

DOORBELL_BAR = 2  # amdgpu_doorbell_mgr.c amdgpu_doorbell_init: the doorbell aperture is BAR2
REGISTER_BAR = 5  # amdgpu_device.c amdgpu_device_init: rmmio is BAR5 from CHIP_BONAIRE on
MEBIBYTE_SHIFT = 20  # RCC_CONFIG_MEMSIZE counts MiB (amdgpu_discovery.c: RREG32(mmRCC_CONFIG_MEMSIZE) << 20)
# amdgpu_discovery.c amdgpu_discovery_read_binary_from_mem: bit 31 of MP0 C2PMSG_33 says the IFWI
# finished initialising the part (and wrote the discovery table)
IFWI_INIT_DONE = 1 << 31
# the MM_INDEX_HI register holds the VRAM address bits above MM_OFFSET (amdgpu_device.c
# amdgpu_device_mm_access: MM_INDEX_HI = pos >> 31)
MM_INDEX_HI_SHIFT = nbio_4_3_0.regBIF_BX_PF0_MM_INDEX.field("MM_APER").shift
# where the IFWI places VRAM in the MC address space on Navi2x/Navi3x dGPUs: amdgpu's boot log
# (amdgpu_gmc.c amdgpu_gmc_vram_location "VRAM: ...M 0x0000008000000000 - ...") shows 512 GiB
NAVI31_FB_BASE = 0x80_0000_0000
FB_UNIT_SHIFT = 24  # mmhub_v3_0.c mmhub_v3_0_get_fb_location: FB_BASE/FB_TOP count 16 MiB units


def _blocks(ips: tuple[IPEntry, ...]) -> dict[str, tuple[tuple[int, int, int], tuple[tuple[int, ...], ...]]]:
    """Register-file blocks from the discovery entries: name -> (version, bases per instance)."""
    blocks: dict[str, tuple[tuple[int, int, int], list[tuple[int, ...]]]] = {}
    for entry in ips:
        version, instances = blocks.setdefault(entry.block, (entry.version, []))
        while len(instances) <= entry.instance:
            instances.append(())
        instances[entry.instance] = entry.bases
    return {name: (version, tuple(instances)) for name, (version, instances) in blocks.items()}


class Navi31GPU(Navi31Function):
    """Function 0 of the RX 7900 XTX, with the GPU behind its BARs (see the module docstring)."""

    def __init__(self, vram_size: int = NAVI31_VRAM_SIZE, ips: tuple[IPEntry, ...] = NAVI31_IPS,
                 discovery_blob: bytes | None = None) -> None:
        super().__init__(vram_size)
        self.ips = ips
        self.regfile = RegisterFile(NAVI31_BAR5_SIZE, _blocks(ips))
        self.registers = self.regfile.storage  # the BAR5 bytes, as mockgpu.navi31 exposed them
        self.hdp_flushes = 0
        self._install_nbio()
        # amdgpu_discovery.c amdgpu_discovery_read_binary_from_mem: the IFWI's init-done flag in MP0
        # C2PMSG_33, a mailbox register the firmware sets (here at power-on) and drivers read
        self.regfile.own("MP0", "regMP0_SMN_C2PMSG_33")
        self._power_on_registers()
        self.discovery_blob = build_table(ips) if discovery_blob is None else discovery_blob
        self.write_discovery_table(self.discovery_blob)
        self.models: list = []  # the IP models; each clears what a reset clears (reset(kind))
        self.psp = PSPModel(self)  # MP0: bootloader, SOS, KM ring
        self.models.append(self.psp)
        self.smn = SMNSpace(self)  # SMN addresses behind NBIO's RSMU_INDEX/RSMU_DATA window
        self.models.append(self.smn)
        self.smu = SMUModel(self)  # MP1: the PMFW mailbox, tables, features, DPM, mode1 requests
        self.models.append(self.smu)
        self.ih = IHModel(self)
        self.models.append(self.ih)
        # the memory controller's two hubs (GMC v11): page-table walks of VRAM and of host memory
        # through this function's DMA (the IOMMU), TLBs and the invalidation engines
        self.gmc = GMC(self.regfile, self.vram, self)
        self.gmc.connect(self.regfile)
        self.models.append(self.gmc)
        if getattr(self, "gmc", None) is not None:
            self.gmc.on_fault = self.ih.vm_fault  # hub faults reach the IH ring
        # BAR2 writes go to each listener (offset, bytes): the engines that ring on doorbells
        self.doorbell_listeners: list = []
        self.sdma = SDMAModel(self)  # SDMA0's gfx queue, run by its doorbell or RB_WPTR writes
        self.models.append(self.sdma)
        self.doorbell_listeners.append(self.sdma.doorbell)
        self.rlc = RLCModel(self)  # the RLC's bootload status, set by the PSP's AUTOLOAD_RLC
        self.models.append(self.rlc)
        self.mec = MECModel(self)  # MEC1: compute HQDs selected through GRBM_GFX_CNTL, PM4 on doorbells
        self.models.append(self.mec)
        self.doorbell_listeners.append(self.mec.doorbell)

    # -- power-on state -------------------------------------------------------------------------
    def write_discovery_table(self, blob: bytes) -> None:
        """Put `blob` where the IFWI leaves the discovery table (tests corrupt it through here)."""
        start = table_offset(self.vram_size)
        self.vram[start:start + len(blob)] = blob

    def _power_on_registers(self) -> None:
        self.regfile.clear()
        self.regfile.set("MP0", "regMP0_SMN_C2PMSG_33", IFWI_INIT_DONE)
        # the IFWI programs the memory controller before any driver runs: both hubs see VRAM at
        # MC address NAVI31_FB_BASE up to its last 16 MiB unit (FB_LOCATION_TOP is inclusive) and
        # no FB offset on a dGPU (mmhub_v3_0.c mmhub_v3_0_get_fb_location / _get_mc_fb_offset and
        # gfxhub_v3_0.c read these and never write them on bare metal)
        base = NAVI31_FB_BASE >> FB_UNIT_SHIFT
        top = (NAVI31_FB_BASE + self.vram_size - 1) >> FB_UNIT_SHIFT
        for ip, prefix in (("MMHUB", "regMMMC_VM_"), ("GC", "regGCMC_VM_")):
            self.regfile.set(ip, prefix + "FB_LOCATION_BASE", base)
            self.regfile.set(ip, prefix + "FB_LOCATION_TOP", top)
            self.regfile.set(ip, prefix + "FB_OFFSET", 0)

    def reset_device_state(self) -> None:
        """A PCI reset: registers to power-on values; VRAM (and the discovery table in it) is kept."""
        self._power_on_registers()
        self.hdp_flushes = 0
        kind = "mode1" if getattr(self, "_in_mode1", False) else "pci"
        for model in getattr(self, "models", ()):
            model.reset(kind)

    def mode1_reset(self) -> None:
        """Mode1: the SMU resets the whole ASIC (soc21.c soc21_asic_mode1_reset). Config space and
        registers return to power-on values (amdgpu_device.c amdgpu_device_mode1_reset caches the PCI
        config state before and restores it after), VRAM keeps its contents, and each model clears
        what a mode1 clears (PSP and SMU firmware state: reset("mode1"))."""
        self._in_mode1 = True
        try:
            self.hardware_reset()
        finally:
            self._in_mode1 = False

    # -- NBIO ------------------------------------------------------------------------------------
    def _install_nbio(self) -> None:
        regfile = self.regfile
        # nbio_v4_3.c nbio_v4_3_get_memsize: the VRAM size in MiB, read-only
        regfile.own("NBIO", "regRCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE",
                    read=lambda: self.vram_size >> MEBIBYTE_SHIFT, write=lambda value: None)
        self._mm_index = regfile.own("NBIO", "regBIF_BX_PF0_MM_INDEX")
        self._mm_index_hi = regfile.own("NBIO", "regBIF_BX_PF0_MM_INDEX_HI")
        self._mm_data = regfile.own("NBIO", "regBIF_BX_PF0_MM_DATA", read=self._mm_data_read,
                                    write=self._mm_data_write)
        self._remap_mem_flush = regfile.own("NBIO", "regBIF_BX0_REMAP_HDP_MEM_FLUSH_CNTL")
        regfile.own("NBIO", "regBIF_BX0_REMAP_HDP_REG_FLUSH_CNTL")
        # nbio_v4_3.c nbio_v4_3_set_reg_remap: with pages over 4 KiB amdgpu flushes through this one
        regfile.own("NBIO", "regBIF_BX_PF0_HDP_MEM_COHERENCY_FLUSH_CNTL", read=lambda: 0,
                    write=lambda value: self._hdp_flush())
        self._hdp_flush_done = regfile.own("NBIO", "regBIF_BX_PF0_GPU_HDP_FLUSH_DONE",
                                           write=lambda value: None)
        regfile.own("NBIO", "regBIF_BX_PF0_GPU_HDP_FLUSH_REQ", write=self._hdp_flush_request)
        self._doorbell_aperture = regfile.own("NBIO", "regRCC_DEV0_EPF0_RCC_DOORBELL_APER_EN")
        regfile.own("NBIO", "regBIF_BX0_BIF_FB_EN")
        self._mm_offset = nbio_4_3_0.regBIF_BX_PF0_MM_INDEX.field("MM_OFFSET")
        self._mm_aper = nbio_4_3_0.regBIF_BX_PF0_MM_INDEX.field("MM_APER")
        self._remap_address = nbio_4_3_0.regBIF_BX0_REMAP_HDP_MEM_FLUSH_CNTL.field("ADDRESS")
        doorbell_register = nbio_4_3_0.regRCC_DEV0_EPF0_RCC_DOORBELL_APER_EN
        self._doorbell_enable = doorbell_register.field("BIF_DOORBELL_APER_EN")

    @property
    def doorbell_aperture_enabled(self) -> bool:
        """RCC_DOORBELL_APER_EN.BIF_DOORBELL_APER_EN (nbio_v4_3.c nbio_v4_3_enable_doorbell_aperture)."""
        return bool(self._doorbell_enable.decode(self.regfile.peek(self._doorbell_aperture)))

    def _mm_target(self) -> tuple[bool, int]:
        """(VRAM?, address) the MM_INDEX/MM_INDEX_HI pair selects."""
        index = self.regfile.peek(self._mm_index)
        to_vram = bool(self._mm_aper.decode(index))
        address = self._mm_offset.decode(index)
        if to_vram:
            # MM_INDEX_HI extends VRAM addresses only: amdgpu's register path through the window
            # (amdgpu_device.c, the MM_INDEX/MM_DATA fallback of RREG32) never writes it
            address |= self.regfile.peek(self._mm_index_hi) << MM_INDEX_HI_SHIFT
        return to_vram, address

    def _mm_data_read(self) -> int:
        to_vram, address = self._mm_target()
        if to_vram:
            if address % REGISTER_BYTES or address + REGISTER_BYTES > self.vram_size:
                return WORD_MASK  # nothing answers past the end of VRAM
            return int.from_bytes(self.vram[address:address + REGISTER_BYTES], "little")
        if address == self._mm_data:
            return 0  # the window does not reach itself
        return self.regfile.read32(address & ~(REGISTER_BYTES - 1))

    def _mm_data_write(self, value: int) -> None:
        to_vram, address = self._mm_target()
        if to_vram:
            if address % REGISTER_BYTES == 0 and address + REGISTER_BYTES <= self.vram_size:
                self.vram[address:address + REGISTER_BYTES] = value.to_bytes(REGISTER_BYTES, "little")
            return
        if address != self._mm_data:
            self._register_write(address & ~(REGISTER_BYTES - 1), value)

    def _hdp_flush(self) -> None:
        """The HDP write path drains to memory; nothing is cached in this model, so count it."""
        self.hdp_flushes += 1

    def _hdp_flush_request(self, value: int) -> None:
        """GPU_HDP_FLUSH_REQ: each requester bit is acknowledged in GPU_HDP_FLUSH_DONE once the
        flush is done (nbio_v4_3.c nbio_v4_3_hdp_flush_reg; gfx_v11_0.c emit_hdp_flush waits on it)."""
        self._hdp_flush()
        self.regfile.poke(self._hdp_flush_done, value)

    def _remap_hole(self) -> int | None:
        """Byte address of the remapped HDP_MEM_FLUSH_CNTL (nbio_v4_3.c remap_hdp_registers)."""
        programmed = self.regfile.peek(self._remap_mem_flush)
        if not programmed:
            return None
        return self._remap_address.decode(programmed) << self._remap_address.shift

    def _register_write(self, address: int, value: int) -> None:
        hole = self._remap_hole()
        if hole is not None and address == hole + kfd_ioctl.KFD_MMIO_REMAP_HDP_MEM_FLUSH_CNTL:
            self._hdp_flush()
            return
        self.regfile.write32(address, value)

    # -- BAR access ------------------------------------------------------------------------------
    def bar_region(self, index: int, size: int | None = None) -> Region:
        """BAR2 (doorbells) maps through callbacks, so that a doorbell write reaches its engine as
        on the hardware; its bytes stay readable (bar_memory) like the plain memory they model."""
        if index != DOORBELL_BAR:
            return super().bar_region(index, size)
        size = self.bar_sizes[index] if size is None else size
        return CallbackRegion(size, lambda off, n: self._decoded_read(index, off, n),
                              lambda off, data: self._decoded_write(index, off, data))

    def bar_read(self, index: int, off: int, n: int) -> bytes:
        if index == REGISTER_BAR:
            return self.regfile.read(off, n)
        return super().bar_read(index, off, n)

    def bar_write(self, index: int, off: int, data: bytes) -> None:
        if index == REGISTER_BAR:
            if off % REGISTER_BYTES or len(data) % REGISTER_BYTES:
                self.regfile.write(off, data)
                return
            for start in range(0, len(data), REGISTER_BYTES):
                value = int.from_bytes(data[start:start + REGISTER_BYTES], "little")
                self._register_write(off + start, value)
            return
        super().bar_write(index, off, data)
        if index == DOORBELL_BAR:
            for listener in self.doorbell_listeners:
                listener(off, bytes(data))

    # -- faults -----------------------------------------------------------------------------------
    def vanish(self) -> None:
        """The GPU drops off the bus (surprise removal): config and registers read all ones."""
        if self.machine is not None:
            self.machine.surprise_remove(self.bdf)
        else:
            self.present = False
