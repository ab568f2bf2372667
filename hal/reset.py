"""Resets of one PCI function: which methods are safe here, how each is done, and the config state
kept across the resets hal drives itself.

`PCIDevice.reset()` chooses the method; this module does the work on the device it is given:
- FLR through PCIe Device Control, after a bounded wait for pending transactions;
- secondary bus reset: through the kernel's `reset_method`/`reset` attributes when it offers "bus"
  (it masks hot-plug events around the reset), else by the parent bridge's Bridge Control; refused
  for a function that shares its bus or sits below a hot-plug capable port without the kernel path;
- after any reset, a bounded wait until the function answers (a config register that reaches it
  is not all ones; a vendor ID is not the CRS 0x0001);
- the config state a reset clears and Linux's pci_restore_state brings back: PCIe DevCtl/LnkCtl/
  DevCtl2/LnkCtl2, Resizable BAR sizes, the header (BARs before Command), MSI and MSI-X control.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from autogen.linux import pci_regs as regs

from hal import config
from hal.errors import DeviceLost, HalError, UnsupportedOperation, from_oserror

if TYPE_CHECKING:
    from hal.pcidev import PCIDevice

log = logging.getLogger(__name__)

HEADER_DWORDS = regs.PCI_STD_HEADER_SIZEOF // 4  # the type 0/1 header saved around resets
# PCIe r5.0 sec 6.6.2: after an FLR, software waits 100 ms before the function must answer again
FLR_SETTLE_S = 0.1
# PCIe r5.0 sec 6.6.1: 100 ms after a conventional reset before the first configuration request
BUS_RESET_SETTLE_S = 0.1
# PCI-to-PCI Bridge r1.2 sec 3.2.5.17 (and Linux pci_reset_secondary_bus): hold reset >= 1 ms; 2 ms used
BUS_RESET_HOLD_S = 0.002
# drivers/pci/pci.c PCIE_RESET_READY_POLL_MS: how long Linux lets a reset device stay not ready
DEVICE_READY_TIMEOUT_S = 60.0
# PCIe r5.0 sec 6.6.1: a device not ready 1.0 s after a reset may be broken; hal says so and keeps waiting
DEVICE_READY_EXPECTED_S = 1.0
READY_POLL_FIRST_S = 0.001  # first pause between vendor ID reads; doubled each time (pci_dev_wait does too)
READY_POLL_MAX_S = 0.1  # longest pause between vendor ID reads while waiting for readiness
# PCIe r5.0 sec 2.3.2: with CRS Software Visibility a not-ready function's vendor ID reads 0x0001
CRS_VENDOR_ID = 0x0001
NOT_READY_VENDOR_IDS = (config.ALL_ONES16, CRS_VENDOR_ID)
TRANSACTIONS_PENDING_TIMEOUT_S = 0.1  # bounded wait for outstanding DMA before an FLR
POLL_INTERVAL_S = 0.001  # pause between Device Status reads while transactions are pending
KERNEL_BUS_RESET = "bus"  # drivers/pci/pci.c pci_reset_fn_methods: the name reset_method uses for SBR
PCIE_CAP_VERSION_2 = 2  # PCIe r5.0 sec 7.5.3.2: DevCtl2/LnkCtl2 exist from capability version 2


@dataclass
class SavedConfig:
    """Config state kept across a reset hal drives itself, restored in the order Linux's
    pci_restore_state uses: PCIe control and Resizable BAR sizes, then the header (BARs before
    Command), then MSI/MSI-X. Each list holds (offset, width, value)."""

    before_header: list[tuple[int, int, int]] = field(default_factory=list)
    header: list[int] = field(default_factory=list)
    after_header: list[tuple[int, int, int]] = field(default_factory=list)


def flr_supported(dev: PCIDevice) -> bool:
    offset = dev.find_capability(regs.PCI_CAP_ID_EXP)
    if offset is None:
        return False
    return bool(dev.cfg_read32(offset + regs.PCI_EXP_DEVCAP) & regs.PCI_EXP_DEVCAP_FLR)


def bus_reset_refusal(dev: PCIDevice) -> str | None:
    """Why a secondary bus reset of this function is refused, or None when it may be done.

    Like Linux pci_parent_bus_reset: only a function alone on its parent's secondary bus (an
    SBR resets every function there, behind their drivers' backs), never a bridge. A raw SBR
    below a Hot-Plug Capable port makes pciehp see the link go down and remove the device; the
    kernel masks those events in its own bus reset, so there only the kernel's path is used.
    """
    bridge = dev.sysfs.parent_bridge(dev.bdf)
    if bridge is None:
        return f"{dev.bdf} sits on a root bus; no bridge can reset it"
    header_type = dev.cfg_read8(regs.PCI_HEADER_TYPE) & regs.PCI_HEADER_TYPE_MASK
    if header_type == regs.PCI_HEADER_TYPE_BRIDGE:
        return f"{dev.bdf} is a bridge; a bus reset of its parent would reset everything below it"
    siblings = _bus_siblings(dev)
    if siblings:
        return (f"{dev.bdf} shares its bus with {', '.join(siblings)}; a bus reset would reset them "
                "too, behind their drivers' backs")
    if kernel_offers_bus_reset(dev):
        return None
    try:
        hot_plug = _bridge_hot_plug_capable(dev, bridge)
    except (HalError, OSError) as exc:
        return f"the Slot Capabilities of {bridge} above {dev.bdf} cannot be read ({exc})"
    if hot_plug:
        return (f"{bridge} above {dev.bdf} is a hot-plug capable port: a raw secondary bus reset "
                "there makes the hot-plug driver remove the device, and this kernel offers no "
                "'bus' in reset_method to do it safely")
    return None


def _bus_siblings(dev: PCIDevice) -> list[str]:
    bus = dev.bdf.rsplit(":", 1)[0]
    return [bdf for bdf in dev.sysfs.list_bdfs() if bdf != dev.bdf and bdf.rsplit(":", 1)[0] == bus]


def _kernel_reset_methods(dev: PCIDevice) -> list[str] | None:
    """The kernel's reset_method list (Linux 5.15+), or None where there is no such attribute."""
    if not dev.os.exists(dev.sysfs.device_path(dev.bdf, "reset_method")):
        return None
    return dev.sysfs.read_attribute(dev.bdf, "reset_method").split()


def kernel_offers_bus_reset(dev: PCIDevice) -> bool:
    methods = _kernel_reset_methods(dev)
    return methods is not None and KERNEL_BUS_RESET in methods


def _bridge_hot_plug_capable(dev: PCIDevice, bridge: str) -> bool:
    from hal.pci.backend import SysfsConfig

    with SysfsConfig(dev.os, bridge, writable=False) as bridge_config:
        return config.hot_plug_capable(config.RawConfigAccess(bridge_config.read))


def save_config_state(dev: PCIDevice) -> SavedConfig:
    """What a reset clears and the kernel would restore: PCIe DevCtl/LnkCtl/DevCtl2/LnkCtl2,
    Resizable BAR sizes, the 64-byte header, MSI and MSI-X control."""
    saved = SavedConfig()
    saved.before_header = _pcie_control_registers(dev) + _rebar_control_registers(dev)
    saved.header = [dev.cfg_read32(index * 4) for index in range(HEADER_DWORDS)]
    saved.after_header = _msi_registers(dev)
    return saved


def restore_config_state(dev: PCIDevice, saved: SavedConfig) -> None:
    for offset, width, value in saved.before_header:
        _restore_register(dev, offset, width, value)
    # like Linux pci_restore_config_space: highest dword first, so the command register (which
    # turns decoding back on) comes after the BARs
    for index in reversed(range(HEADER_DWORDS)):
        if index * 4 == regs.PCI_COMMAND:
            continue
        _restore_register(dev, index * 4, 4, saved.header[index])
    # Command is always written (the upper half is Status, RW1C: left alone): vfio-pci puts the
    # physical BARs back on a Command write when a reset it did not do cleared them
    command = saved.header[regs.PCI_COMMAND // 4] & config.ALL_ONES16
    dev.cfg_write16(regs.PCI_COMMAND, command)
    for offset, width, value in saved.after_header:
        _restore_register(dev, offset, width, value)


def _restore_register(dev: PCIDevice, offset: int, width: int, value: int) -> None:
    if dev.cfg_read(offset, width) != value:
        dev.cfg_write(offset, width, value)


def _pcie_control_registers(dev: PCIDevice) -> list[tuple[int, int, int]]:
    pcie = dev.find_capability(regs.PCI_CAP_ID_EXP)
    if pcie is None:
        return []
    # the FLR and Retrain Link bits are commands, not state: never write them back
    devctl = dev.cfg_read16(pcie + regs.PCI_EXP_DEVCTL) & ~regs.PCI_EXP_DEVCTL_BCR_FLR
    lnkctl = dev.cfg_read16(pcie + regs.PCI_EXP_LNKCTL) & ~regs.PCI_EXP_LNKCTL_RL
    registers = [(pcie + regs.PCI_EXP_DEVCTL, 2, devctl), (pcie + regs.PCI_EXP_LNKCTL, 2, lnkctl)]
    version = dev.cfg_read16(pcie + regs.PCI_EXP_FLAGS) & regs.PCI_EXP_FLAGS_VERS
    if version >= PCIE_CAP_VERSION_2:
        for register in (regs.PCI_EXP_DEVCTL2, regs.PCI_EXP_LNKCTL2):
            registers.append((pcie + register, 2, dev.cfg_read16(pcie + register)))
    return registers


def _rebar_control_registers(dev: PCIDevice) -> list[tuple[int, int, int]]:
    cap = dev.find_extended_capability(regs.PCI_EXT_CAP_ID_REBAR)
    if cap is None:
        return []
    first = dev.cfg_read32(cap + regs.PCI_REBAR_CTRL)
    count = (first & regs.PCI_REBAR_CTRL_NBAR_MASK) >> regs.PCI_REBAR_CTRL_NBAR_SHIFT
    registers = []
    for slot in range(max(count, 1)):
        offset = cap + slot * config.REBAR_ENTRY_STRIDE + regs.PCI_REBAR_CTRL
        registers.append((offset, 4, dev.cfg_read32(offset)))
    return registers


def _msi_registers(dev: PCIDevice) -> list[tuple[int, int, int]]:
    registers = []
    msi = dev.find_capability(regs.PCI_CAP_ID_MSI)
    if msi is not None:
        flags = dev.cfg_read16(msi + regs.PCI_MSI_FLAGS)
        data = regs.PCI_MSI_DATA_64 if flags & regs.PCI_MSI_FLAGS_64BIT else regs.PCI_MSI_DATA_32
        address_lo = msi + regs.PCI_MSI_ADDRESS_LO
        registers.append((address_lo, 4, dev.cfg_read32(address_lo)))
        if flags & regs.PCI_MSI_FLAGS_64BIT:
            address_hi = msi + regs.PCI_MSI_ADDRESS_HI
            registers.append((address_hi, 4, dev.cfg_read32(address_hi)))
        registers.append((msi + data, 2, dev.cfg_read16(msi + data)))
        registers.append((msi + regs.PCI_MSI_FLAGS, 2, flags))  # enable last
    msix = dev.find_capability(regs.PCI_CAP_ID_MSIX)
    if msix is not None:
        registers.append((msix + regs.PCI_MSIX_FLAGS, 2, dev.cfg_read16(msix + regs.PCI_MSIX_FLAGS)))
    return registers


def function_level_reset(dev: PCIDevice) -> None:
    pcie = dev.pcie_capability()
    deadline = dev.os.monotonic() + TRANSACTIONS_PENDING_TIMEOUT_S
    status = dev.cfg_read16(pcie + regs.PCI_EXP_DEVSTA)
    while status & regs.PCI_EXP_DEVSTA_TRPND and dev.os.monotonic() < deadline:
        dev.os.sleep(POLL_INTERVAL_S)
        status = dev.cfg_read16(pcie + regs.PCI_EXP_DEVSTA)
    if status & regs.PCI_EXP_DEVSTA_TRPND:
        log.warning("%s still has transactions pending (DevSta %#x); resetting anyway", dev.bdf, status)
    control = dev.cfg_read16(pcie + regs.PCI_EXP_DEVCTL)
    dev.cfg_write16(pcie + regs.PCI_EXP_DEVCTL, control | regs.PCI_EXP_DEVCTL_BCR_FLR)
    dev.os.sleep(FLR_SETTLE_S)


def kernel_bus_reset(dev: PCIDevice) -> None:
    """Select "bus" in reset_method, write the reset attribute, put the selection back."""
    path = dev.sysfs.device_path(dev.bdf, "reset_method")
    original = dev.sysfs.read_attribute(dev.bdf, "reset_method")
    dev.sysfs.write_attribute(path, KERNEL_BUS_RESET, f"selecting the kernel's bus reset of {dev.bdf}")
    try:
        dev.sysfs.write_attribute(dev.sysfs.device_path(dev.bdf, "reset"), "1",
                                   f"bus-resetting {dev.bdf} through the kernel")
    finally:
        dev.sysfs.write_attribute(path, original, f"restoring the reset methods of {dev.bdf}")


def secondary_bus_reset(dev: PCIDevice) -> None:
    from hal.pci.backend import SysfsConfig

    bridge = dev.sysfs.parent_bridge(dev.bdf)
    if bridge is None:
        raise UnsupportedOperation(f"{dev.bdf} sits on a root bus; no bridge can reset it")
    with SysfsConfig(dev.os, bridge) as bridge_config:
        control = bridge_config.read(regs.PCI_BRIDGE_CONTROL, 2)
        bridge_config.write(regs.PCI_BRIDGE_CONTROL, 2, control | regs.PCI_BRIDGE_CTL_BUS_RESET)
        dev.os.sleep(BUS_RESET_HOLD_S)
        released = control & ~regs.PCI_BRIDGE_CTL_BUS_RESET & config.ALL_ONES16
        bridge_config.write(regs.PCI_BRIDGE_CONTROL, 2, released)
    dev.os.sleep(BUS_RESET_SETTLE_S)


PRESENCE_NAMES = {regs.PCI_VENDOR_ID: "vendor ID", regs.PCI_CLASS_REVISION: "class/revision dword"}


def presence_name(offset: int) -> str:
    """How messages call the register a liveness or readiness check reads."""
    return PRESENCE_NAMES.get(offset, f"config register {offset:#x}")


def _read_presence_after_reset(dev: PCIDevice, method: str) -> int:
    offset, width = dev.backend.presence_register
    try:
        return dev.backend.config_read(offset, width)
    except OSError as exc:
        raise from_oserror(exc, f"reading config offset {offset:#x} of {dev.bdf} after a {method} "
                                "reset") from exc


def _not_ready_values(dev: PCIDevice) -> tuple[int, ...]:
    """All ones (no answer); for the vendor ID also the 0x0001 of Configuration Request Retry
    Status (CRS Software Visibility applies to vendor ID reads only)."""
    offset, width = dev.backend.presence_register
    all_ones = (1 << (8 * width)) - 1
    if offset == regs.PCI_VENDOR_ID:
        return NOT_READY_VENDOR_IDS
    return (all_ones,)


def wait_device_ready(dev: PCIDevice, method: str, timeout_s: float | None = None) -> None:
    """Poll a config register that reaches the function (the backend's presence register: the
    vendor ID, or under VFIO, which answers the IDs from its own copy, the class/revision dword)
    with growing pauses until it answers, for at most `timeout_s` (None: DEVICE_READY_TIMEOUT_S)."""
    if timeout_s is None:
        timeout_s = DEVICE_READY_TIMEOUT_S
    offset, width = dev.backend.presence_register
    not_ready = _not_ready_values(dev)
    start = dev.os.monotonic()
    deadline = start + timeout_s
    pause = READY_POLL_FIRST_S
    warned = False
    value = _read_presence_after_reset(dev, method)
    while value in not_ready:
        now = dev.os.monotonic()
        if now >= deadline:
            raise DeviceLost(
                f"{dev.bdf} was not ready within {timeout_s} s after a {method} reset "
                f"({presence_name(offset)} still {value:#0{2 + 2 * width}x}; all ones: no answer, "
                "a vendor ID of 0x0001: retry status)")
        if not warned and now - start >= DEVICE_READY_EXPECTED_S:
            warned = True
            log.warning("%s not ready %.1f s after a %s reset (%s reads %#x); waiting up to %s s",
                        dev.bdf, now - start, method, presence_name(offset), value, timeout_s)
        dev.os.sleep(min(pause, deadline - now))
        pause = min(pause * 2, READY_POLL_MAX_S)
        value = _read_presence_after_reset(dev, method)
