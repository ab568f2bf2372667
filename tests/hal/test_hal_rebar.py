"""Resizable BAR through hal: resizing before the VFIO open (bar_sizes=), every BAR remapped after a
resize, and each refusal of the kernel as a typed error that says what to try."""
from __future__ import annotations

import errno

import pytest
from autogen.linux import pci_regs

import hal
from hal.errors import DeviceBusy, InvalidArgument, UnsupportedOperation
from hal.pci.sysfs import ENOTSUPP
from mockgpu import (GPU_AUDIO_BDF, GPU_BDF, BarKind, BarSpec, Identity, Machine, PCIeInfo, PCIeLink,
                     PCIFunction)
from mockgpu.navi31 import NAVI31_BAR0_DEFAULT
from mockgpu.ports import SwitchDownstreamPort

MIB = 1 << 20
GIB = 1 << 30
GPU_SYSFS = f"/sys/bus/pci/devices/{GPU_BDF}"


def audio_on_pci_stub(m: Machine) -> None:
    """The HDMI audio function on a driver that manages its own DMA, so the GPU's group is viable."""
    m.os.write_text(f"/sys/bus/pci/devices/{GPU_AUDIO_BDF}/driver_override", "pci-stub")
    m.os.write_text("/sys/bus/pci/drivers/snd_hda_intel/unbind", GPU_AUDIO_BDF)
    m.os.write_text("/sys/bus/pci/drivers_probe", GPU_AUDIO_BDF)


def kernel_bar0_size(m: Machine) -> int:
    start, end, _ = (int(field, 16) for field in m.os.read_text(f"{GPU_SYSFS}/resource").split()[:3])
    return end - start + 1


def test_vfio_open_resizes_before_binding_vfio_pci(machine):
    audio_on_pci_stub(machine)
    with hal.open(f"vfio:{GPU_BDF}", os=machine.os, unbind=True, bar_sizes={0: 16 * GIB}) as dev:
        assert machine.kernel.driver_of(GPU_BDF) == "vfio-pci"
        assert dev.bar_info(0).size == 16 * GIB
        assert dev.rebar_current_size(0) == 16 * GIB
        vram = dev.bar(0, min_size=16 * GIB)
        vram.write32(16 * GIB - 4, 0x5EED)
        assert machine.device(GPU_BDF).vram[16 * GIB - 4] == 0xED
        assert dev.bar(2).size == 2 * MIB
    assert machine.kernel.driver_of(GPU_BDF) == "amdgpu"
    assert kernel_bar0_size(machine) == 16 * GIB  # the new size stays for the kernel driver


def test_vfio_open_of_a_device_already_on_vfio_pci_resizes_in_between(machine):
    audio_on_pci_stub(machine)
    hal.open(f"vfio:{GPU_BDF}", os=machine.os, unbind=True, rebind_on_close=False).close()
    assert machine.kernel.driver_of(GPU_BDF) == "vfio-pci"
    with hal.open(f"vfio:{GPU_BDF}", os=machine.os, bar_sizes={0: 1 * GIB}) as dev:
        assert dev.bar_info(0).size == 1 * GIB
    assert machine.kernel.driver_of(GPU_BDF) == "vfio-pci"


def test_largest_size_the_windows_allow(tmp_path):
    m = Machine.default(lock_dir=str(tmp_path), mmio64_window=6 * GIB)
    audio_on_pci_stub(m)
    with hal.open(f"vfio:{GPU_BDF}", os=m.os, unbind=True, bar_sizes={0: "max"}) as dev:
        assert dev.bar_info(0).size == 4 * GIB  # 8 GiB and more do not fit a 6 GiB window


def test_a_refused_size_is_typed_and_the_device_goes_back(tmp_path):
    m = Machine.default(lock_dir=str(tmp_path), mmio64_window=4 * GIB)
    audio_on_pci_stub(m)
    baseline = list(m.os.open_fds)
    hint = r"no room .*Try a smaller size \(256 MiB, 512 MiB, 1 GiB, 2 GiB, 4 GiB\).*'max'"
    with pytest.raises(InvalidArgument, match=hint) as info:
        hal.open(f"vfio:{GPU_BDF}", os=m.os, unbind=True, bar_sizes={0: 8 * GIB})
    assert info.value.errno == errno.ENOSPC
    assert m.kernel.driver_of(GPU_BDF) == "amdgpu"
    assert m.os.read_text(f"{GPU_SYSFS}/driver_override") == "(null)\n"
    assert kernel_bar0_size(m) == NAVI31_BAR0_DEFAULT
    assert m.os.open_fds == baseline
    with hal.open(f"vfio:{GPU_BDF}", os=m.os, unbind=True) as dev:  # the lock was released
        assert dev.bar_info(0).size == NAVI31_BAR0_DEFAULT


def test_bad_bar_sizes_are_refused_before_anything_changes(machine):
    for bar_sizes in ({0: 3 * MIB}, {9: GIB}, {0: "biggest"}):
        with pytest.raises(InvalidArgument):
            hal.open(f"pci:{GPU_BDF}", os=machine.os, unbind=True, bar_sizes=bar_sizes)
        assert machine.kernel.driver_of(GPU_BDF) == "amdgpu"


def test_firmware_that_keeps_its_assignment_is_unsupported(tmp_path):
    m = Machine.default(lock_dir=str(tmp_path), preserve_config=True)
    with pytest.raises(UnsupportedOperation, match="firmware setup") as info:
        hal.open(f"pci:{GPU_BDF}", os=m.os, unbind=True, bar_sizes={0: GIB})
    assert info.value.errno == ENOTSUPP
    assert m.kernel.driver_of(GPU_BDF) == "amdgpu"


def test_resize_through_pci_remaps_every_bar(machine):
    with hal.open(f"pci:{GPU_BDF}", os=machine.os, unbind=True) as dev:
        doorbells = dev.bar(2)
        doorbells.write32(0, 0x1111)
        registers = dev.bar(5)
        dev.resize_bar(0, 4 * GIB)
        # BAR2 shares BAR0's bridge window, so the kernel moved it; BAR5 did not move, but its
        # resource file was removed and created again all the same
        assert dev.bar(2).read32(0) == 0x1111
        dev.bar(2).write32(4, 0x2222)
        assert bytes(machine.device(GPU_BDF).bar_memory(2)[4:8]) == (0x2222).to_bytes(4, "little")
        assert dev.bar(5).size == 1 * MIB
        assert dev.bar(0).size == 4 * GIB
        with pytest.raises(ValueError):
            doorbells.read32(0)  # a Region from before the resize is dead, as on Linux
        assert registers is not dev.bar(5)


def test_resize_refused_by_a_pinned_bridge_window_says_what_to_try(machine):
    machine.add_device(SwitchDownstreamPort(), "0000:03:01.0", "0000:02:00.0")
    bus = machine.device("0000:03:01.0").secondary_bus
    link = PCIeLink(pci_regs.PCI_EXP_LNKCAP_SLS_8_0GB, 4, pci_regs.PCI_EXP_LNKCAP_SLS_8_0GB, 4)
    bar = BarSpec(0, MIB, BarKind.MEM64, prefetchable=True)
    pcie = PCIeInfo(pci_regs.PCI_EXP_TYPE_ENDPOINT, link)
    peer = PCIFunction(Identity(0x1234, 0xBEE5, 0xFF0000), [bar], pcie)
    machine.add_device(peer, f"0000:{bus:02x}:00.0", "0000:03:01.0", driver=None)
    with hal.open(f"pci:{GPU_BDF}", os=machine.os, unbind=True) as dev:
        with pytest.raises(InvalidArgument, match="remove.*rescan") as info:
            dev.resize_bar(0, 2 * GIB)
        assert info.value.errno == errno.ENOSPC
        assert dev.bar_info(0).size == NAVI31_BAR0_DEFAULT
        assert dev.bar(0).read32(0) == 0  # still mapped and answering at the old size


def test_resize_while_bound_names_the_open_option(machine):
    machine.kernel.unbind(GPU_BDF, "amdgpu")
    with hal.open(f"pci:{GPU_BDF}", os=machine.os) as dev:
        machine.kernel.bind(GPU_BDF, "amdgpu")
        with pytest.raises(DeviceBusy, match=r"amdgpu.*bar_sizes=\{0: 0x20000000\}"):
            dev.resize_bar(0, 512 * MIB)
        machine.kernel.unbind(GPU_BDF, "amdgpu")
