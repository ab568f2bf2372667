"""vfio-pci's virtualised configuration space for one open device (drivers/vfio/pci/vfio_pci_config.c).

At the first open vfio-pci copies the device's header and capabilities into `vconfig` and from
then on answers every access to the config region through a permission table per capability
(vfio_config_do_rw): bits marked virtual are read from and written to the copy, writable bits that
are not virtual reach the device, every other bit is read from the device and a write of it is
dropped. What that means here, as in Linux 6.12:
- header: vendor and device ID, the capability pointer, Interrupt Line/Pin and all BARs come from
  the copy (BAR sizing is emulated from the kernel's resources, vfio_bar_fixup); Status cannot be
  written at all; a Command write puts the physical BARs back when a reset vfio did not do
  cleared them (vfio_bar_restore), and its Memory bit decides whether BAR access is allowed;
- PM: the power state is changed by the kernel on the user's behalf (vfio_pm_config_write);
- MSI: Message Control's low byte, address and data live in the copy (the host kernel programs
  the device's own registers); enable only sticks while MSI is on through VFIO_DEVICE_SET_IRQS;
- PCI Express: Device Control (except Phantom Functions) and Device Control 2 (except ARI) are
  writable; FLR is turned into the kernel's function reset; Link Control and Link Control 2 are
  read-only, so writes of them vanish;
- MSI-X, Resizable BAR and the other extended capabilities: read from the device, writes dropped;
  vendor-specific ones and the gaps between capabilities pass through both ways;
- accesses outside the region are EFAULT.
VPD, PCI-X, Advanced Features, AER and Power Budgeting have their own permissions in Linux; no
model here has them, and they would be read-only. Capabilities whose length vfio cannot work out
(and the ones it does not know) are hidden from the capability lists, as vfio_cap_init does.
"""
from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autogen.linux import pci_regs

from mockgpu.bits import field_get, field_put
from mockgpu.pci import BAR_DWORD, NUM_BARS, PM_STATE_D3HOT, BarKind, PCIFunction

if TYPE_CHECKING:
    from mockgpu.machine import Machine

log = logging.getLogger(__name__)

ALL = 0xFFFFFFFF
DWORD = 4
STD_CAP_LOOPS = (pci_regs.PCI_CFG_SPACE_SIZE - pci_regs.PCI_STD_HEADER_SIZEOF) // pci_regs.PCI_CAP_SIZEOF
EXT_CAP_NEXT_SHIFT = 20  # include/uapi/linux/pci_regs.h PCI_EXT_CAP_NEXT: bits [31:20]
EXT_CAP_NEXT_FIELD = 0xFFC << EXT_CAP_NEXT_SHIFT  # vfio_ecap_init: the next pointer of an ecap header
BAR_OFFSETS = range(pci_regs.PCI_BASE_ADDRESS_0, pci_regs.PCI_BASE_ADDRESS_5 + BAR_DWORD, BAR_DWORD)
MSI_QSIZE_SHIFT = 4  # include/uapi/linux/pci_regs.h: PCI_MSI_FLAGS_QSIZE is bits [6:4]
MSI_QMASK_SHIFT = 1  # include/uapi/linux/pci_regs.h: PCI_MSI_FLAGS_QMASK is bits [3:1]
# drivers/pci/pci.c pcie_get_mps / pcie_set_readrq: sizes are 128 << field
PCIE_SIZE_UNIT = 128
PAYLOAD_SHIFT = 5  # include/uapi/linux/pci_regs.h: PCI_EXP_DEVCTL_PAYLOAD is bits [7:5]
READRQ_SHIFT = 12  # include/uapi/linux/pci_regs.h: PCI_EXP_DEVCTL_READRQ is bits [14:12]
MAX_READRQ = 4096  # drivers/pci/pci.c pcie_set_readrq: 128..4096 bytes

# drivers/vfio/pci/vfio_pci_config.c pci_cap_length: fixed lengths (variable ones are computed)
STD_CAP_LENGTHS = {
    pci_regs.PCI_CAP_ID_PM: pci_regs.PCI_PM_SIZEOF,
    pci_regs.PCI_CAP_ID_AGP: pci_regs.PCI_AGP_SIZEOF,
    pci_regs.PCI_CAP_ID_VPD: pci_regs.PCI_CAP_VPD_SIZEOF,
    pci_regs.PCI_CAP_ID_MSIX: pci_regs.PCI_CAP_MSIX_SIZEOF,
    pci_regs.PCI_CAP_ID_AF: pci_regs.PCI_CAP_AF_SIZEOF,
}
# drivers/vfio/pci/vfio_pci_config.c pci_ext_cap_length: fixed lengths
EXT_CAP_LENGTHS = {
    pci_regs.PCI_EXT_CAP_ID_ERR: pci_regs.PCI_ERR_ROOT_COMMAND,
    pci_regs.PCI_EXT_CAP_ID_DSN: pci_regs.PCI_EXT_CAP_DSN_SIZEOF,
    pci_regs.PCI_EXT_CAP_ID_PWR: pci_regs.PCI_EXT_CAP_PWR_SIZEOF,
    pci_regs.PCI_EXT_CAP_ID_ARI: pci_regs.PCI_EXT_CAP_ARI_SIZEOF,
    pci_regs.PCI_EXT_CAP_ID_ATS: pci_regs.PCI_EXT_CAP_ATS_SIZEOF,
    pci_regs.PCI_EXT_CAP_ID_SRIOV: pci_regs.PCI_EXT_CAP_SRIOV_SIZEOF,
    pci_regs.PCI_EXT_CAP_ID_MCAST: pci_regs.PCI_EXT_CAP_MCAST_ENDPOINT_SIZEOF,
    pci_regs.PCI_EXT_CAP_ID_PRI: pci_regs.PCI_EXT_CAP_PRI_SIZEOF,
    pci_regs.PCI_EXT_CAP_ID_LTR: pci_regs.PCI_EXT_CAP_LTR_SIZEOF,
}
# vfio_pci_init_perm_bits: capabilities whose writes pass straight to the device
RAW_WRITE_STD = {pci_regs.PCI_CAP_ID_VNDR}
RAW_WRITE_EXT = {pci_regs.PCI_EXT_CAP_ID_VNDR, pci_regs.PCI_EXT_CAP_ID_DVSEC}


@dataclass
class Area:
    """One stretch of config space as vfio_config_init mapped it: the header, a capability or an
    extended capability. `kind` picks the read/write functions; `virt` and `write` are the
    per-byte permission masks (absent for capabilities read straight from the device)."""

    kind: str
    start: int
    length: int
    virt: bytearray | None = None
    write: bytearray | None = None

    def set(self, offset: int, width: int, virt: int, write: int) -> None:
        """p_setb/p_setw/p_setd."""
        mask = (1 << (8 * width)) - 1
        self.virt[offset:offset + width] = (virt & mask).to_bytes(width, "little")
        self.write[offset:offset + width] = (write & mask).to_bytes(width, "little")


def _permissions(kind: str, start: int, length: int) -> Area:
    """alloc_perm_bits: everything readable, nothing writable or virtual; rounded up to dwords."""
    size = -(-length // DWORD) * DWORD
    return Area(kind, start, length, bytearray(size), bytearray(size))


class VirtualConfig:
    """The config region of one device open through VFIO. `read`/`write` take region offsets."""

    def __init__(self, machine: "Machine", function: PCIFunction) -> None:
        self.machine = machine
        self.function = function
        self.size = function.cfg.size  # pdev->cfg_size
        self.vconfig = bytearray(self.size)
        self.map: list[Area | None] = [None] * self.size
        self.bardirty = True
        self.extended_caps = False
        header = self._basic_permissions()
        self._claim(header)
        self._fill(0, pci_regs.PCI_STD_HEADER_SIZEOF)
        # vfio_config_init: the physical BARs, to put back after a reset vfio did not do
        self.rbar = [self._vdword(offset) for offset in BAR_OFFSETS]
        self.vconfig[pci_regs.PCI_INTERRUPT_PIN] = 0  # INTx is not modelled: the pin reads 0
        self._init_capabilities()
        self._init_extended_capabilities()

    # -- layout (vfio_config_init, vfio_cap_init, vfio_ecap_init) -------------------------------
    def _claim(self, area: Area) -> None:
        for pos in range(area.start, min(area.start + area.length, self.size)):
            if self.map[pos] is not None:
                log.warning("%s: config conflict at %#x", self.function.bdf, pos)
            self.map[pos] = area

    def _fill(self, start: int, length: int) -> None:
        """vfio_fill_vconfig_bytes: copy the device's registers into the virtual space."""
        pos = start
        end = start + length
        while pos < end:
            width = 4 if end - pos >= 4 and pos % 4 == 0 else 2 if end - pos >= 2 and pos % 2 == 0 else 1
            value = self.function.config_read(pos, width)
            self.vconfig[pos:pos + width] = value.to_bytes(width, "little")
            pos += width

    def _vdword(self, offset: int) -> int:
        return int.from_bytes(self.vconfig[offset:offset + DWORD], "little")

    def _hw(self, pos: int, width: int) -> int:
        return self.function.config_read(pos, width)

    def _init_capabilities(self) -> None:
        status = self._hw(pci_regs.PCI_STATUS, 2)
        if not status & pci_regs.PCI_STATUS_CAP_LIST:
            return
        pos = self._hw(pci_regs.PCI_CAPABILITY_LIST, 1)
        prev = pci_regs.PCI_CAPABILITY_LIST
        found = 0
        loops = STD_CAP_LOOPS
        while pos and loops:
            loops -= 1
            cap = self._hw(pos, 1)
            following = self._hw(pos + pci_regs.PCI_CAP_LIST_NEXT, 1)
            length = self._std_cap_length(cap, pos) if 0 < cap <= pci_regs.PCI_CAP_ID_MAX else 0
            if not length:
                self.vconfig[prev] = following  # hidden: the previous pointer skips it
                pos = following
                continue
            self._claim(self._std_cap_area(cap, pos, length))
            self._fill(pos, length)
            if cap == pci_regs.PCI_CAP_ID_PM:
                self._clear_pme_bits(pos)
            prev = pos + pci_regs.PCI_CAP_LIST_NEXT
            pos = following
            found += 1
        if not found:
            status_v = int.from_bytes(self.vconfig[pci_regs.PCI_STATUS:pci_regs.PCI_STATUS + 2], "little")
            status_v &= ~pci_regs.PCI_STATUS_CAP_LIST
            self.vconfig[pci_regs.PCI_STATUS:pci_regs.PCI_STATUS + 2] = status_v.to_bytes(2, "little")

    def _std_cap_length(self, cap: int, pos: int) -> int:
        """pci_cap_length / vfio_cap_len."""
        if cap in STD_CAP_LENGTHS:
            return STD_CAP_LENGTHS[cap]
        if cap == pci_regs.PCI_CAP_ID_MSI:
            flags = self._hw(pos + pci_regs.PCI_MSI_FLAGS, 2)
            return msi_cap_length(flags)
        if cap == pci_regs.PCI_CAP_ID_VNDR:
            return self._hw(pos + pci_regs.PCI_CAP_FLAGS, 1)
        if cap == pci_regs.PCI_CAP_ID_EXP:
            if self.size > pci_regs.PCI_CFG_SPACE_SIZE:
                self.extended_caps = self._hw(pci_regs.PCI_CFG_SPACE_SIZE, 4) != 0
            flags = self._hw(pos + pci_regs.PCI_EXP_FLAGS, 2)
            if flags & pci_regs.PCI_EXP_FLAGS_VERS == 1:
                return pci_regs.PCI_CAP_EXP_ENDPOINT_SIZEOF_V1
            return pci_regs.PCI_CAP_EXP_ENDPOINT_SIZEOF_V2
        if cap in (pci_regs.PCI_CAP_ID_PCIX, pci_regs.PCI_CAP_ID_HT, pci_regs.PCI_CAP_ID_SATA):
            log.warning("%s: capability %#x at %#x is not modelled by the mock's vfio; hidden",
                        self.function.bdf, cap, pos)
        return 0

    def _std_cap_area(self, cap: int, pos: int, length: int) -> Area:
        if cap == pci_regs.PCI_CAP_ID_PM:
            return self._pm_permissions(pos, length)
        if cap == pci_regs.PCI_CAP_ID_MSI:
            return self._msi_permissions(pos, length, self._hw(pos + pci_regs.PCI_MSI_FLAGS, 2))
        if cap == pci_regs.PCI_CAP_ID_EXP:
            return self._exp_permissions(pos, length)
        return Area("raw_write" if cap in RAW_WRITE_STD else "direct", pos, length)

    def _init_extended_capabilities(self) -> None:
        if not self.extended_caps:
            return
        epos = pci_regs.PCI_CFG_SPACE_SIZE
        loops = (self.size - pci_regs.PCI_CFG_SPACE_SIZE) // pci_regs.PCI_CAP_SIZEOF
        prev: int | None = None
        found = 0
        while loops and epos >= pci_regs.PCI_CFG_SPACE_SIZE:
            loops -= 1
            header = self._hw(epos, 4)
            ecap = pci_regs.PCI_EXT_CAP_ID(header)
            length = self._ext_cap_length(ecap, epos) if ecap <= pci_regs.PCI_EXT_CAP_ID_MAX else 0
            hidden = False
            if not length:
                following = pci_regs.PCI_EXT_CAP_NEXT(header)
                if prev is not None:
                    value = self._vdword(prev) & ~EXT_CAP_NEXT_FIELD | (following << EXT_CAP_NEXT_SHIFT)
                    self.vconfig[prev:prev + DWORD] = value.to_bytes(DWORD, "little")
                    epos = following
                    continue
                length = pci_regs.PCI_CAP_SIZEOF  # a placeholder anchors the list
                hidden = True
            kind = "raw_write" if ecap in RAW_WRITE_EXT and not hidden else "direct"
            self._claim(Area(kind, epos, length))
            self._fill(epos, length)
            if hidden:
                value = self._vdword(epos) & EXT_CAP_NEXT_FIELD
                self.vconfig[epos:epos + DWORD] = value.to_bytes(DWORD, "little")
            else:
                found += 1
            prev = epos
            epos = pci_regs.PCI_EXT_CAP_NEXT(header)
        if not found:
            start = pci_regs.PCI_CFG_SPACE_SIZE
            self.vconfig[start:start + DWORD] = bytes(DWORD)

    def _ext_cap_length(self, ecap: int, epos: int) -> int:
        """pci_ext_cap_length / vfio_ext_cap_len."""
        if ecap in EXT_CAP_LENGTHS:
            return EXT_CAP_LENGTHS[ecap]
        if ecap == pci_regs.PCI_EXT_CAP_ID_REBAR:
            control = self._hw(epos + pci_regs.PCI_REBAR_CTRL, 1)
            count = (control & pci_regs.PCI_REBAR_CTRL_NBAR_MASK) >> pci_regs.PCI_REBAR_CTRL_NBAR_SHIFT
            return DWORD + count * 2 * DWORD
        if ecap == pci_regs.PCI_EXT_CAP_ID_VNDR:
            return self._hw(epos + pci_regs.PCI_VSEC_HDR, 4) >> pci_regs.PCI_VSEC_HDR_LEN_SHIFT
        if ecap == pci_regs.PCI_EXT_CAP_ID_DVSEC:
            return pci_regs.PCI_DVSEC_HEADER1_LEN(self._hw(epos + pci_regs.PCI_DVSEC_HEADER1, 4))
        variable = (pci_regs.PCI_EXT_CAP_ID_VC, pci_regs.PCI_EXT_CAP_ID_VC9, pci_regs.PCI_EXT_CAP_ID_MFVC,
                    pci_regs.PCI_EXT_CAP_ID_ACS, pci_regs.PCI_EXT_CAP_ID_DPA, pci_regs.PCI_EXT_CAP_ID_TPH)
        if ecap in variable:
            log.warning("%s: extended capability %#x at %#x is not modelled by the mock's vfio; hidden",
                        self.function.bdf, ecap, epos)
        return 0

    def _clear_pme_bits(self, pos: int) -> None:
        """vfio_update_pm_vconfig_bytes: the user sees no PME support, PME_Status or PME_En."""
        pmc_at = pos + pci_regs.PCI_PM_PMC
        control_at = pos + pci_regs.PCI_PM_CTRL
        pmc = int.from_bytes(self.vconfig[pmc_at:pmc_at + 2], "little") & ~pci_regs.PCI_PM_CAP_PME_MASK
        control = int.from_bytes(self.vconfig[control_at:control_at + 2], "little")
        control &= ~(pci_regs.PCI_PM_CTRL_PME_ENABLE | pci_regs.PCI_PM_CTRL_PME_STATUS)
        self.vconfig[pmc_at:pmc_at + 2] = (pmc & 0xFFFF).to_bytes(2, "little")
        self.vconfig[control_at:control_at + 2] = (control & 0xFFFF).to_bytes(2, "little")

    # -- permission tables (vfio_pci_init_perm_bits) ------------------------------------------
    @staticmethod
    def _basic_permissions() -> Area:
        """init_pci_cap_basic_perm."""
        area = _permissions("basic", 0, pci_regs.PCI_STD_HEADER_SIZEOF)
        area.set(pci_regs.PCI_VENDOR_ID, 2, ALL, 0)
        area.set(pci_regs.PCI_DEVICE_ID, 2, ALL, 0)
        area.set(pci_regs.PCI_COMMAND, 2, pci_regs.PCI_COMMAND_INTX_DISABLE, ALL)
        area.set(pci_regs.PCI_STATUS, 2, pci_regs.PCI_STATUS_CAP_LIST, 0)
        area.set(pci_regs.PCI_CACHE_LINE_SIZE, 1, 0, ALL)
        area.set(pci_regs.PCI_LATENCY_TIMER, 1, 0, ALL)
        area.set(pci_regs.PCI_BIST, 1, 0, ALL)
        for offset in BAR_OFFSETS:
            area.set(offset, DWORD, ALL, ALL)
        area.set(pci_regs.PCI_ROM_ADDRESS, DWORD, ALL, ALL)
        area.set(pci_regs.PCI_CAPABILITY_LIST, 1, ALL, 0)
        area.set(pci_regs.PCI_INTERRUPT_LINE, 1, ALL, ALL)
        area.set(pci_regs.PCI_INTERRUPT_PIN, 1, ALL, 0)
        return area

    @staticmethod
    def _pm_permissions(pos: int, length: int) -> Area:
        """init_pci_cap_pm_perm: the power state is changed by vfio, PME is hidden."""
        area = _permissions("pm", pos, length)
        area.set(pci_regs.PCI_CAP_LIST_NEXT, 1, ALL, 0)
        area.set(pci_regs.PCI_PM_PMC, 2, pci_regs.PCI_PM_CAP_PME_MASK, 0)
        pme = pci_regs.PCI_PM_CTRL_PME_ENABLE | pci_regs.PCI_PM_CTRL_PME_STATUS
        area.set(pci_regs.PCI_PM_CTRL, DWORD, pme, ~(pme | pci_regs.PCI_PM_CTRL_STATE_MASK))
        return area

    @staticmethod
    def _msi_permissions(pos: int, length: int, flags: int) -> Area:
        """init_pci_cap_msi_perm: control's low byte, address and data are virtual."""
        area = _permissions("msi", pos, length)
        area.set(pci_regs.PCI_CAP_LIST_NEXT, 1, ALL, 0)
        area.set(pci_regs.PCI_MSI_FLAGS, 1, ALL, ALL)
        area.set(pci_regs.PCI_MSI_ADDRESS_LO, DWORD, ALL, ALL)
        if flags & pci_regs.PCI_MSI_FLAGS_64BIT:
            area.set(pci_regs.PCI_MSI_ADDRESS_HI, DWORD, ALL, ALL)
            area.set(pci_regs.PCI_MSI_DATA_64, 2, ALL, ALL)
            mask_at, pending_at = pci_regs.PCI_MSI_MASK_64, pci_regs.PCI_MSI_PENDING_64
        else:
            area.set(pci_regs.PCI_MSI_DATA_32, 2, ALL, ALL)
            mask_at, pending_at = pci_regs.PCI_MSI_MASK_32, pci_regs.PCI_MSI_PENDING_32
        if flags & pci_regs.PCI_MSI_FLAGS_MASKBIT:
            area.set(mask_at, DWORD, 0, ALL)
            area.set(pending_at, DWORD, 0, ALL)
        return area

    @staticmethod
    def _exp_permissions(pos: int, length: int) -> Area:
        """init_pci_cap_exp_perm: Device Control (FLR, MPS and MRRS virtual) and Device Control 2."""
        area = _permissions("exp", pos, max(length, pci_regs.PCI_CAP_EXP_ENDPOINT_SIZEOF_V2))
        area.length = length
        area.set(pci_regs.PCI_CAP_LIST_NEXT, 1, ALL, 0)
        virtual = (pci_regs.PCI_EXP_DEVCTL_BCR_FLR | pci_regs.PCI_EXP_DEVCTL_PAYLOAD
                   | pci_regs.PCI_EXP_DEVCTL_READRQ)
        area.set(pci_regs.PCI_EXP_DEVCTL, 2, virtual, ~pci_regs.PCI_EXP_DEVCTL_PHANTOM)
        area.set(pci_regs.PCI_EXP_DEVCTL2, 2, 0, ~pci_regs.PCI_EXP_DEVCTL2_ARI)
        return area

    # -- the region (vfio_pci_config_rw, vfio_config_do_rw) -----------------------------------
    def _check(self, pos: int, count: int) -> None:
        if pos < 0 or pos >= self.size or pos + count > self.size:
            raise OSError(errno.EFAULT,
                          f"config access [{pos:#x}, +{count:#x}) outside {self.size:#x} bytes")

    def _chunk(self, pos: int, count: int) -> int:
        """Aligned pieces that stay inside one capability and one dword."""
        area = self.map[pos]
        run = 1
        while (pos + run) % DWORD and self.map[pos + run] is area:
            run += 1
        count = min(count, run)
        if count >= 4 and pos % 4 == 0:
            return 4
        if count >= 2 and pos % 2 == 0:
            return 2
        return 1

    def read(self, pos: int, count: int) -> bytes:
        self._check(pos, count)
        out = bytearray()
        while count:
            width = self._chunk(pos, count)
            out += self._read_piece(pos, width).to_bytes(width, "little")
            pos += width
            count -= width
        return bytes(out)

    def write(self, pos: int, data: bytes) -> int:
        self._check(pos, len(data))
        done = 0
        while done < len(data):
            width = self._chunk(pos, len(data) - done)
            self._write_piece(pos, width, int.from_bytes(data[done:done + width], "little"))
            pos += width
            done += width
        return done

    def _read_piece(self, pos: int, width: int) -> int:
        area = self.map[pos]
        if area is None:
            return self._hw(pos, width)  # unassigned_perms: raw
        offset = pos - area.start
        if area.kind in ("direct", "raw_write"):
            return self._direct_read(pos, width, offset)
        if area.kind == "basic":
            if is_bar(pos):
                self._bar_fixup()
        elif area.kind == "msi":
            self._msi_show_qmax(area, pos, width, offset)
        return self._default_read(area, pos, width, offset)

    def _write_piece(self, pos: int, width: int, value: int) -> None:
        area = self.map[pos]
        if area is None or area.kind == "raw_write":
            self.function.config_write(pos, width, value)
            return
        if area.kind == "direct":
            return  # no writefn: dropped
        offset = pos - area.start
        if area.kind == "basic":
            self._basic_write(area, pos, width, offset, value)
        elif area.kind == "pm":
            self._default_write(area, pos, width, offset, value)
            if offset == pci_regs.PCI_PM_CTRL:
                self.machine.vfio.set_power_state(self.function, value & pci_regs.PCI_PM_CTRL_STATE_MASK)
        elif area.kind == "exp":
            self._exp_write(area, pos, width, offset, value)
        elif area.kind == "msi":
            self._msi_write(area, pos, width, offset, value)

    # -- read and write functions ---------------------------------------------------------------
    def _vget(self, pos: int, width: int) -> int:
        return int.from_bytes(self.vconfig[pos:pos + width], "little")

    def _vput(self, pos: int, width: int, value: int) -> None:
        self.vconfig[pos:pos + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")

    def _default_read(self, area: Area, pos: int, width: int, offset: int) -> int:
        """vfio_default_config_read: virtual bits from the copy, the rest from the device."""
        value = self._vget(pos, width)
        virt = int.from_bytes(area.virt[offset:offset + width], "little")
        if virt != (1 << (8 * width)) - 1:
            value = (self._hw(pos, width) & ~virt) | (value & virt)
        return value

    def _direct_read(self, pos: int, width: int, offset: int) -> int:
        """vfio_direct_config_read: from the device, except the list pointers vfio may rewrite."""
        value = self._hw(pos, width)
        raw = bytearray(value.to_bytes(width, "little"))
        if pos >= pci_regs.PCI_CFG_SPACE_SIZE:
            if offset < DWORD:
                raw[:] = self.vconfig[pos:pos + width]
        elif pos >= pci_regs.PCI_STD_HEADER_SIZEOF:
            if offset == pci_regs.PCI_CAP_LIST_ID and width > 1:
                keep = min(pci_regs.PCI_CAP_FLAGS, width)
                raw[:keep] = self.vconfig[pos:pos + keep]
            elif offset == pci_regs.PCI_CAP_LIST_NEXT:
                raw[0] = self.vconfig[pos]
        return int.from_bytes(raw, "little")

    def _default_write(self, area: Area, pos: int, width: int, offset: int, value: int) -> None:
        """vfio_default_config_write: virtual writable bits to the copy, the rest of the writable
        bits to the device (read-modify-write), nothing of the read-only bits."""
        write = int.from_bytes(area.write[offset:offset + width], "little")
        if not write:
            return
        virt = int.from_bytes(area.virt[offset:offset + width], "little")
        if write & virt:
            current = self._vget(pos, width)
            self._vput(pos, width, (current & ~(write & virt)) | (value & write & virt))
        if write & ~virt:
            physical = self._hw(pos, width)
            merged = (physical & ~(write & ~virt)) | (value & write & ~virt)
            self.function.config_write(pos, width, merged & ((1 << (8 * width)) - 1))

    def _basic_write(self, area: Area, pos: int, width: int, offset: int, value: int) -> None:
        """vfio_basic_config_write."""
        command_write = offset == pci_regs.PCI_COMMAND
        new_command = value & 0xFFFF
        if command_write:
            physical = self._hw(pci_regs.PCI_COMMAND, 2)
            virtual = self._vget(pci_regs.PCI_COMMAND, 2)
            restore = False
            for bit in (pci_regs.PCI_COMMAND_MEMORY, pci_regs.PCI_COMMAND_IO):
                if new_command & bit and virtual & bit and not physical & bit:
                    restore = True  # enabled as far as vfio knows, off in the device: a backdoor reset
            if restore or self._need_bar_restore():
                self._bar_restore()
        self._default_write(area, pos, width, offset, value)
        if command_write:
            decode = pci_regs.PCI_COMMAND_MEMORY | pci_regs.PCI_COMMAND_IO
            virtual = self._vget(pci_regs.PCI_COMMAND, 2) & ~decode | (new_command & decode)
            self._vput(pci_regs.PCI_COMMAND, 2, virtual)
        if is_bar(pos):
            self.bardirty = True

    def _need_bar_restore(self) -> bool:
        """vfio_need_bar_restore: a physical BAR no longer holds what it held at open."""
        for recorded, offset in zip(self.rbar, BAR_OFFSETS):
            if recorded and self._hw(offset, DWORD) != recorded:
                return True
        return False

    def _bar_restore(self) -> None:
        """vfio_bar_restore: write the recorded physical BARs back."""
        log.info("%s: reset recovery - restoring BARs", self.function.bdf)
        for recorded, offset in zip(self.rbar, BAR_OFFSETS):
            self.function.config_write(offset, DWORD, recorded)

    def _bar_fixup(self) -> None:
        """vfio_bar_fixup: make the virtual BARs behave like hardware for sizing, from the kernel's
        resources (an unassigned BAR reads 0); there is no ROM."""
        if not self.bardirty:
            return
        function = self.function
        index = 0
        while index < NUM_BARS:
            at = pci_regs.PCI_BASE_ADDRESS_0 + index * BAR_DWORD
            start = function.assigned.get(index)
            spec = function.bars.get(index)
            if not start or spec is None:
                self._vput(at, DWORD, 0)
                index += 1
                continue
            mask = ~(function.assigned_sizes[index] - 1)
            value = self._vget(at, DWORD) & mask & ALL
            if spec.kind is BarKind.IO:
                value |= pci_regs.PCI_BASE_ADDRESS_SPACE_IO
            else:
                value |= pci_regs.PCI_BASE_ADDRESS_SPACE_MEMORY
                if spec.prefetchable:
                    value |= pci_regs.PCI_BASE_ADDRESS_MEM_PREFETCH
                if spec.kind is BarKind.MEM64:
                    value |= pci_regs.PCI_BASE_ADDRESS_MEM_TYPE_64
            self._vput(at, DWORD, value)
            if spec.kind is BarKind.MEM64:
                upper = at + BAR_DWORD
                self._vput(upper, DWORD, self._vget(upper, DWORD) & (mask >> 32) & ALL)
                index += 1
            index += 1
        self._vput(pci_regs.PCI_ROM_ADDRESS, DWORD, 0)
        self.bardirty = False

    def _exp_write(self, area: Area, pos: int, width: int, offset: int, value: int) -> None:
        """vfio_exp_config_write: FLR becomes the kernel's reset; MRRS reaches the device, no lower
        than the device's MPS (pcie_set_readrq)."""
        devctl_at = area.start + pci_regs.PCI_EXP_DEVCTL
        readrq_before = self._vget(devctl_at, 2) & pci_regs.PCI_EXP_DEVCTL_READRQ
        self._default_write(area, pos, width, offset, value)
        devctl = self._vget(devctl_at, 2)
        if devctl & pci_regs.PCI_EXP_DEVCTL_BCR_FLR:
            self._vput(devctl_at, 2, devctl & ~pci_regs.PCI_EXP_DEVCTL_BCR_FLR)
            devcap = self._hw(area.start + pci_regs.PCI_EXP_DEVCAP, DWORD)
            if devcap & pci_regs.PCI_EXP_DEVCAP_FLR:
                self.machine.kernel.try_reset_function(self.function.bdf)
        readrq = self._vget(devctl_at, 2) & pci_regs.PCI_EXP_DEVCTL_READRQ
        if readrq != readrq_before:
            wanted = PCIE_SIZE_UNIT << (readrq >> READRQ_SHIFT)
            physical = self._hw(devctl_at, 2)
            mps = PCIE_SIZE_UNIT << ((physical & pci_regs.PCI_EXP_DEVCTL_PAYLOAD) >> PAYLOAD_SHIFT)
            size = max(wanted, mps)
            if size > MAX_READRQ:
                return  # pcie_set_readrq: -EINVAL, the device keeps its value
            code = (size // PCIE_SIZE_UNIT).bit_length() - 1
            physical = physical & ~pci_regs.PCI_EXP_DEVCTL_READRQ | (code << READRQ_SHIFT)
            self.function.config_write(devctl_at, 2, physical)

    def _msi_qmax(self) -> int:
        return self.machine.vfio.msi_qmax(self.function.bdf)

    def _msi_show_qmax(self, area: Area, pos: int, width: int, offset: int) -> None:
        """vfio_msi_config_read: Multiple Message Capable shows what vfio last enabled."""
        if offset <= pci_regs.PCI_MSI_FLAGS and offset + width >= pci_regs.PCI_MSI_FLAGS:
            flags_at = area.start + pci_regs.PCI_MSI_FLAGS
            flags = self._vget(flags_at, 2) & ~pci_regs.PCI_MSI_FLAGS_QMASK
            self._vput(flags_at, 2, flags | (self._msi_qmax() << MSI_QMASK_SHIFT))

    def _msi_write(self, area: Area, pos: int, width: int, offset: int, value: int) -> None:
        """vfio_msi_config_write: enable only sticks while VFIO has MSI on; the queue size is
        capped; the result goes to the copy and to the device."""
        self._default_write(area, pos, width, offset, value)
        if not (offset <= pci_regs.PCI_MSI_FLAGS and offset + width >= pci_regs.PCI_MSI_FLAGS):
            return
        flags_at = area.start + pci_regs.PCI_MSI_FLAGS
        flags = self._vget(flags_at, 2)
        if self.machine.vfio.msi_kind.get(self.function.bdf) is not False:
            flags &= ~pci_regs.PCI_MSI_FLAGS_ENABLE  # MSI is enabled through the ioctl only
        qmax = self._msi_qmax()
        if field_get(flags, pci_regs.PCI_MSI_FLAGS_QSIZE) > qmax:
            flags = flags & ~pci_regs.PCI_MSI_FLAGS_QSIZE | field_put(pci_regs.PCI_MSI_FLAGS_QSIZE, qmax)
        self._vput(flags_at, 2, flags)
        self.function.config_write(flags_at, 2, flags)

    # -- what the rest of vfio-pci asks -------------------------------------------------------
    def memory_enabled(self) -> bool:
        """__vfio_pci_memory_enabled: the virtual Command's Memory bit, and not in D3hot."""
        if self.function.power_state() >= PM_STATE_D3HOT:
            return False
        return bool(self._vget(pci_regs.PCI_COMMAND, 2) & pci_regs.PCI_COMMAND_MEMORY)


def is_bar(offset: int) -> bool:
    """vfio_pci_config.c is_bar: inside the BAR dwords or the ROM BAR."""
    in_bars = pci_regs.PCI_BASE_ADDRESS_0 <= offset < pci_regs.PCI_BASE_ADDRESS_5 + BAR_DWORD
    return in_bars or pci_regs.PCI_ROM_ADDRESS <= offset < pci_regs.PCI_ROM_ADDRESS + BAR_DWORD


def msi_cap_length(flags: int) -> int:
    """vfio_msi_cap_len: 10 bytes, +4 for 64-bit addresses, +10 for per-vector masking."""
    length = 10  # drivers/vfio/pci/vfio_pci_config.c vfio_msi_cap_len: minimum size
    if flags & pci_regs.PCI_MSI_FLAGS_64BIT:
        length += 4  # the upper address dword
    if flags & pci_regs.PCI_MSI_FLAGS_MASKBIT:
        length += 10  # mask and pending dwords (and the padding before them)
    return length
