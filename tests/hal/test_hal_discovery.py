"""Discovery, device strings, driver binding and the ownership lock across two real processes, on the
mock machine."""
from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import pytest

import hal
from hal.errors import DeviceBusy, DeviceNotFound, UnsupportedOperation
from hal.os import O_RDWR, O_WRONLY
from hal.pci.sysfs import USER_SPACE_OVERRIDE, SysfsPCI
from mockgpu import EDU_BDF, GPU_AUDIO_BDF, GPU_BDF, Identity, Machine, PCIFunction, RootPort
from mockgpu.edu import EduDevice

REPO = pathlib.Path(__file__).resolve().parents[2]

HOLDER = textwrap.dedent("""
    import sys
    import hal
    from mockgpu import Machine
    machine = Machine.default(lock_dir=sys.argv[1])
    device = hal.open(sys.argv[2], os=machine.os, unbind=True)
    print("open", flush=True)
    sys.stdin.readline()
    device.close()
""")


def test_list_devices_shows_display_functions_with_path_driver_and_backends(machine):
    infos = hal.list_devices(os=machine.os)
    assert [info.bdf for info in infos] == [GPU_BDF]
    gpu = infos[0]
    assert (gpu.vendor_id, gpu.device_id, gpu.class_code, gpu.driver) == (0x1002, 0x744C, 0x030000, "amdgpu")
    assert gpu.path == ["0000:00:02.0", "0000:02:00.0", "0000:03:00.0"]
    assert set(gpu.backends) == {"vfio", "pci"}
    assert all("amdgpu" in reason for reason in gpu.backends.values())
    assert f"shared with {GPU_AUDIO_BDF} (snd_hda_intel)" in gpu.backends["vfio"]
    assert gpu.device == GPU_BDF


def test_list_all_classes_and_backend_verdicts(machine):
    machine.kernel.unbind(EDU_BDF, "edu")
    infos = {info.bdf: info for info in hal.list_devices(os=machine.os, all_classes=True)}
    assert {EDU_BDF, GPU_BDF, GPU_AUDIO_BDF, "0000:00:01.0"} <= set(infos)
    edu = infos[EDU_BDF]
    assert edu.driver is None
    assert edu.backends["pci"] == "ok"
    assert edu.backends["vfio"].startswith("ok")
    assert edu.device == f"vfio:{EDU_BDF}"
    assert edu.path == ["0000:00:01.0"]


@pytest.mark.parametrize("text", ["mock:0", "nvidia:0", "pci:0000:09:00.0", "0000:01:00.7"])
def test_unknown_or_missing_devices(machine, text):
    with pytest.raises(DeviceNotFound):
        hal.open(text, os=machine.os)
    assert machine.os.open_fds == []


def test_lock_contention_between_two_real_processes(machine, tmp_path):
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), f"pci:{EDU_BDF}"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(REPO))
    try:
        assert child.stdout.readline().strip() == "open"
        with pytest.raises(DeviceBusy) as info:
            hal.open(f"vfio:{EDU_BDF}", os=machine.os, unbind=True)
        assert info.value.holder_pid == child.pid
        assert f"process {child.pid}" in str(info.value)
        assert machine.kernel.driver_of(EDU_BDF) == "edu"
        assert machine.os.open_fds == []
    finally:
        child.stdin.write("\n")
        child.stdin.flush()
        child.wait(timeout=20)
    with hal.open(f"vfio:{EDU_BDF}", os=machine.os, unbind=True) as dev:
        assert dev.vendor_id == 0x1234


def test_same_process_second_open_is_busy_too(machine):
    with hal.open(f"pci:{EDU_BDF}", os=machine.os, unbind=True):
        with pytest.raises(DeviceBusy):
            hal.open(f"pci:{EDU_BDF}", os=machine.os, unbind=True)


def _keep_on_vfio_pci(machine, bdf: str) -> None:
    dev = hal.open(f"vfio:{bdf}", os=machine.os, unbind=True, rebind_on_close=False)
    dev.close()
    assert machine.kernel.driver_of(bdf) == "vfio-pci"


def test_a_device_another_program_holds_through_vfio_is_not_unbound(machine):
    _keep_on_vfio_pci(machine, EDU_BDF)
    group_node = f"/dev/vfio/{machine.kernel.group_of[EDU_BDF]}"
    other_program = machine.os.open(group_node, O_RDWR)
    try:
        with pytest.raises(DeviceBusy, match=f"held through VFIO by another program.*{group_node}"):
            hal.open(f"pci:{EDU_BDF}", os=machine.os, unbind=True)
        assert machine.kernel.driver_of(EDU_BDF) == "vfio-pci"
        assert machine.os.read_text(f"/sys/bus/pci/devices/{EDU_BDF}/driver_override").strip() == "vfio-pci"
        with pytest.raises(DeviceBusy, match="held through VFIO"):
            SysfsPCI(machine.os).rebind(EDU_BDF, "edu")
        assert machine.kernel.driver_of(EDU_BDF) == "vfio-pci"
    finally:
        machine.os.close(other_program)
    with hal.open(f"pci:{EDU_BDF}", os=machine.os, unbind=True) as dev:
        assert dev.vendor_id == 0x1234
    assert machine.kernel.driver_of(EDU_BDF) == "vfio-pci"
    SysfsPCI(machine.os).rebind(EDU_BDF, "edu")
    assert machine.kernel.driver_of(EDU_BDF) == "edu"


def test_pci_open_keeps_every_driver_off_the_device_until_close(machine):
    override = f"/sys/bus/pci/devices/{EDU_BDF}/driver_override"
    with hal.open(f"pci:{EDU_BDF}", os=machine.os, unbind=True):
        assert machine.kernel.driver_of(EDU_BDF) is None
        assert machine.os.read_text(override).strip() == USER_SPACE_OVERRIDE
        # what a module reload, drivers_probe or a rescan does
        machine.os.write_text("/sys/bus/pci/drivers_probe", EDU_BDF)
        assert machine.kernel.driver_of(EDU_BDF) is None
    assert machine.kernel.driver_of(EDU_BDF) == "edu"
    assert machine.os.read_text(override).strip() == "(null)"


def test_pci_open_of_an_unbound_device_changes_no_binding(machine):
    override = f"/sys/bus/pci/devices/{EDU_BDF}/driver_override"
    machine.kernel.unbind(EDU_BDF, "edu")
    with hal.open(f"pci:{EDU_BDF}", os=machine.os):
        assert machine.os.read_text(override).strip() == "(null)"
    assert machine.kernel.driver_of(EDU_BDF) is None


def _move_audio_to(machine, driver: str) -> None:
    machine.os.write_text(f"/sys/bus/pci/devices/{GPU_AUDIO_BDF}/driver_override", driver)
    machine.os.write_text("/sys/bus/pci/drivers/snd_hda_intel/unbind", GPU_AUDIO_BDF)
    machine.os.write_text("/sys/bus/pci/drivers_probe", GPU_AUDIO_BDF)


def test_a_group_member_on_pci_stub_does_not_block_vfio(machine):
    # drivers/pci/pci-stub.c manages its own DMA (driver_managed_dma): the group stays viable
    _move_audio_to(machine, "pci-stub")
    gpu = hal.list_devices(os=machine.os)[0]
    assert gpu.backends["vfio"].startswith("in use by kernel driver amdgpu")
    assert "shared" not in gpu.backends["vfio"]
    assert gpu.vfio_moves == [GPU_BDF]
    with hal.open(f"vfio:{GPU_BDF}", os=machine.os, unbind=True) as dev:
        assert dev.vendor_id == 0x1002
        assert machine.kernel.driver_of(GPU_AUDIO_BDF) == "pci-stub"
    assert machine.kernel.driver_of(GPU_BDF) == "amdgpu"


def test_a_bridge_on_pcieport_in_the_group_does_not_block_vfio(tmp_path):
    m = Machine(lock_dir=str(tmp_path))
    m.add_device(RootPort(), "0000:00:01.0", group=0)
    m.add_device(EduDevice(), EDU_BDF, "0000:00:01.0", group=0)
    edu = hal.list_devices(os=m.os, all_classes=True)[1]
    assert edu.bdf == EDU_BDF and edu.vfio_moves == [EDU_BDF]
    assert "shared" not in edu.backends["vfio"]
    with hal.open(f"vfio:{EDU_BDF}", os=m.os, unbind=True) as dev:
        assert dev.vendor_id == 0x1234
    assert m.kernel.driver_of("0000:00:01.0") == "pcieport"


def test_the_gpu_and_its_audio_function_must_move_together(machine):
    gpu = hal.list_devices(os=machine.os)[0]
    assert gpu.iommu_group == machine.kernel.group_of[GPU_BDF]
    assert gpu.vfio_moves == [GPU_BDF, GPU_AUDIO_BDF]
    with pytest.raises(DeviceBusy, match=f"tools.bind {GPU_BDF} --vfio"):
        hal.open(f"vfio:{GPU_BDF}", os=machine.os, unbind=True)


def test_listing_opens_no_config_file_for_writing(machine, monkeypatch):
    opened = []
    real_open = machine.os.open

    def spy(path, flags, mode=0o600):
        opened.append((path, flags))
        return real_open(path, flags, mode)

    monkeypatch.setattr(machine.os, "open", spy)
    infos = hal.list_devices(os=machine.os, all_classes=True)
    assert infos and any(path.endswith("/config") for path, _ in opened)
    writers = [path for path, flags in opened if path.startswith("/sys/") and flags & (O_WRONLY | O_RDWR)]
    assert writers == []


def test_without_root_listing_says_root_is_needed(machine):
    machine.kernel.unbind(EDU_BDF, "edu")
    machine.set_root(False)
    edu = next(info for info in hal.list_devices(os=machine.os, all_classes=True) if info.bdf == EDU_BDF)
    assert edu.backends["pci"].startswith("needs root")


class HostBridge(PCIFunction):
    """The root complex's own function at 00:00.0 (class 0x060000, type 0 header, no driver)."""

    def __init__(self) -> None:
        super().__init__(Identity(0x8086, 0x3E30, 0x060000), [])


def test_a_host_bridge_is_not_called_openable(tmp_path):
    m = Machine.default(lock_dir=str(tmp_path))
    m.add_device(HostBridge(), "0000:00:00.0", driver=None)
    infos = {info.bdf: info for info in hal.list_devices(os=m.os, all_classes=True)}
    host = infos["0000:00:00.0"]
    assert all(reason.startswith("not openable: a host bridge") for reason in host.backends.values())
    assert host.device == "0000:00:00.0" and host.vfio_moves == []
    port = infos["0000:00:01.0"]
    assert port.backends["vfio"].startswith("not openable: vfio-pci drives only type 0")


def test_a_bar_without_a_resource_file_is_not_mappable(tmp_path):
    m = Machine.default(lock_dir=str(tmp_path), resource_files=False)
    m.kernel.unbind(EDU_BDF, "edu")
    edu = next(info for info in hal.list_devices(os=m.os, all_classes=True) if info.bdf == EDU_BDF)
    assert edu.backends["pci"].startswith("ok (no BAR mappings: the kernel created no resourceN file")
    with hal.open(f"pci:{EDU_BDF}", os=m.os) as dev:
        assert dev.bar_info(0).size == 1 << 20
        with pytest.raises(UnsupportedOperation, match="resource0 does not exist.*vfio:"):
            dev.bar(0)
