"""The real host seam against this machine's own PCI tree (read-only): discovery agrees with the
kernel's sysfs files, and config space read through the seam walks to sane capability lists.
Skipped where there is no /sys/bus/pci (macOS, containers without sysfs)."""
from __future__ import annotations

import os
import pathlib

import pytest
from autogen.linux import pci_regs as regs

import hal
from hal.config import RawConfigAccess, capabilities
from hal.os import O_CLOEXEC, O_RDONLY, host

SYSFS = pathlib.Path("/sys/bus/pci/devices")
pytestmark = pytest.mark.skipif(not SYSFS.is_dir() or not any(SYSFS.iterdir()),
                                reason="this machine has no PCI devices in sysfs")


def _read_only_config(seam, fd: int) -> RawConfigAccess:
    """Config space through the host seam's pread of the sysfs `config` file (no writes)."""

    def read(offset: int, width: int) -> int:
        data = seam.pread(fd, width, offset)
        if len(data) != width:
            pytest.skip(f"config space is cut short at {offset:#x} (not root)")
        return int.from_bytes(data, "little")

    return RawConfigAccess(read)


def test_list_devices_matches_the_kernels_view():
    infos = hal.list_devices(all_classes=True)
    assert sorted(info.bdf for info in infos) == sorted(os.listdir(SYSFS))
    for info in infos:
        assert info.vendor_id == int((SYSFS / info.bdf / "vendor").read_text(), 16)
        assert info.device_id == int((SYSFS / info.bdf / "device").read_text(), 16)
        assert info.class_code == int((SYSFS / info.bdf / "class").read_text(), 16)
        driver_link = SYSFS / info.bdf / "driver"
        assert info.driver == (os.path.basename(os.readlink(driver_link)) if driver_link.exists() else None)
        assert set(info.backends) == {"pci", "vfio"}


def test_config_space_through_the_host_seam_walks_to_sane_capabilities():
    seam = host()
    for bdf in sorted(os.listdir(SYSFS)):
        fd = seam.open(str(SYSFS / bdf / "config"), O_RDONLY | O_CLOEXEC)
        config = _read_only_config(seam, fd)
        try:
            vendor = config.cfg_read16(regs.PCI_VENDOR_ID)
            assert vendor == int((SYSFS / bdf / "vendor").read_text(), 16)
            found = capabilities(config)
            has_list = config.cfg_read16(regs.PCI_STATUS) & regs.PCI_STATUS_CAP_LIST
            assert bool(found) == bool(has_list), bdf
            for cap in found:
                assert regs.PCI_STD_HEADER_SIZEOF <= cap.offset < regs.PCI_CFG_SPACE_SIZE
                assert cap.offset % 4 == 0
            if (SYSFS / bdf / "msi_irqs").is_dir():
                ids = {cap.cap_id for cap in found}
                assert ids & {regs.PCI_CAP_ID_MSI, regs.PCI_CAP_ID_MSIX}, f"{bdf} uses MSI but lists no MSI cap"
        finally:
            seam.close(fd)
