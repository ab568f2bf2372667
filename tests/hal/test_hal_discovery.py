"""Discovery, device strings, driver binding and the ownership lock across two real processes, on the
mock machine."""
from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import pytest

import hal
from hal.errors import DeviceBusy, DeviceNotFound
from hal.os import O_RDWR
from hal.pci.sysfs import USER_SPACE_OVERRIDE, SysfsPCI
from mockgpu import EDU_BDF, GPU_AUDIO_BDF, GPU_BDF

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
