"""`python -m tools.bind`: moving a function and the group members that must move to vfio-pci, and
back to the drivers they had; refusals with clear messages and a non-zero exit."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

import hal
from mockgpu import EDU_BDF, GPU_AUDIO_BDF, GPU_BDF, Machine, RootPort
from mockgpu.edu import EduDevice
from tools import bind

REPOSITORY = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def machine(tmp_path) -> Machine:
    return Machine.default(lock_dir=str(tmp_path))


def run(machine: Machine, capsys, *argv: str) -> tuple[int, str, str]:
    code = bind.main(list(argv), seam=machine.os)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_no_iommu_mode_moves_only_the_gpu_and_reports_its_own_group(tmp_path, capsys):
    machine = Machine.default(lock_dir=str(tmp_path), iommu=False, noiommu=True)
    code, out, _ = run(machine, capsys, GPU_BDF, "--vfio", "--json")
    assert code == 0
    result = json.loads(out)
    # vfio-pci's bind made the GPU a no-IOMMU group of its own; the audio function has none
    assert result["iommu_group"] == machine.kernel.group_of[GPU_BDF]
    assert result["moved"] == [{"bdf": GPU_BDF, "from": "amdgpu", "to": "vfio-pci"}]
    assert machine.kernel.driver_of(GPU_AUDIO_BDF) == "snd_hda_intel"
    code, out, _ = run(machine, capsys, GPU_BDF, "--kernel", "--json")
    assert code == 0
    assert json.loads(out)["moved"] == [{"bdf": GPU_BDF, "from": "vfio-pci", "to": "amdgpu"}]
    assert GPU_BDF not in machine.kernel.group_of


def test_the_gpu_and_its_audio_function_move_to_vfio_pci_and_back(machine, capsys):
    code, out, _ = run(machine, capsys, GPU_BDF, "--vfio", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["action"] == "vfio" and result["iommu_group"] == machine.kernel.group_of[GPU_BDF]
    assert result["moved"] == [{"bdf": GPU_BDF, "from": "amdgpu", "to": "vfio-pci"},
                               {"bdf": GPU_AUDIO_BDF, "from": "snd_hda_intel", "to": "vfio-pci"}]
    assert machine.kernel.driver_of(GPU_BDF) == machine.kernel.driver_of(GPU_AUDIO_BDF) == "vfio-pci"
    info = hal.list_devices(os=machine.os)[0]
    assert info.backends["vfio"] == "ok" and info.device == f"vfio:{GPU_BDF}"
    code, out, _ = run(machine, capsys, GPU_BDF, "--kernel", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["moved"] == [{"bdf": GPU_BDF, "from": "vfio-pci", "to": "amdgpu"},
                               {"bdf": GPU_AUDIO_BDF, "from": "vfio-pci", "to": "snd_hda_intel"}]
    assert machine.kernel.driver_of(GPU_BDF) == "amdgpu"
    assert machine.kernel.driver_of(GPU_AUDIO_BDF) == "snd_hda_intel"
    for bdf in (GPU_BDF, GPU_AUDIO_BDF):
        assert machine.os.read_text(f"/sys/bus/pci/devices/{bdf}/driver_override") == "(null)\n"


def test_a_bridge_in_the_group_stays_on_pcieport(tmp_path, capsys):
    m = Machine(lock_dir=str(tmp_path))
    m.add_device(RootPort(), "0000:00:01.0", group=0)
    m.add_device(EduDevice(), EDU_BDF, "0000:00:01.0", group=0)
    code, out, _ = run(m, capsys, EDU_BDF, "--vfio", "--json")
    assert code == 0
    result = json.loads(out)
    assert [entry["bdf"] for entry in result["moved"]] == [EDU_BDF]
    assert result["stayed"] == [{"bdf": "0000:00:01.0", "driver": "pcieport",
                                 "why": "its driver manages its own DMA"}]
    assert m.kernel.driver_of("0000:00:01.0") == "pcieport"


def test_kernel_without_a_record_lets_the_kernel_probe(machine, capsys):
    with hal.open(f"vfio:{EDU_BDF}", os=machine.os, unbind=True, rebind_on_close=False):
        pass
    assert machine.kernel.driver_of(EDU_BDF) == "vfio-pci"
    code, out, _ = run(machine, capsys, EDU_BDF, "--kernel")
    assert code == 0
    assert out.strip() == f"{EDU_BDF}: vfio-pci -> edu"
    assert machine.kernel.driver_of(EDU_BDF) == "edu"


def test_a_device_gpuhal_has_open_is_refused_with_the_holder(machine, capsys):
    with hal.open(f"pci:{GPU_AUDIO_BDF}", os=machine.os, unbind=True):
        code, _, err = run(machine, capsys, GPU_BDF, "--vfio")
        assert code == 1
        assert f"{GPU_AUDIO_BDF} is owned by process {machine.os.getpid()}" in err
    assert machine.kernel.driver_of(GPU_BDF) == "amdgpu"
    with hal.open(f"pci:{GPU_BDF}", os=machine.os, unbind=True):
        code, _, err = run(machine, capsys, GPU_BDF, "--vfio")
        assert code == 1 and f"{GPU_BDF} is owned by process {machine.os.getpid()}" in err
        assert machine.kernel.driver_of(GPU_AUDIO_BDF) == "snd_hda_intel"


def test_errors_are_clear_and_exit_non_zero(machine, capsys):
    code, _, err = run(machine, capsys, "0000:09:00.0", "--vfio")
    assert code == 1 and "no PCI device 0000:09:00.0" in err
    code, _, err = run(machine, capsys, "0000:00:01.0", "--vfio")
    assert code == 1 and "bridge" in err
    machine.set_root(False)
    code, _, err = run(machine, capsys, EDU_BDF, "--vfio")
    assert code == 1 and "root" in err
    assert machine.kernel.driver_of(EDU_BDF) == "edu"
    with pytest.raises(SystemExit):
        bind.main([EDU_BDF], seam=machine.os)  # --vfio or --kernel is required


def test_a_program_holding_the_group_through_vfio_keeps_it(machine, capsys):
    assert run(machine, capsys, EDU_BDF, "--vfio")[0] == 0
    node = f"/dev/vfio/{machine.kernel.group_of[EDU_BDF]}"
    other_program = machine.os.open(node, 2)
    try:
        code, _, err = run(machine, capsys, EDU_BDF, "--kernel")
        assert code == 1 and "held through VFIO by another program" in err
        assert machine.kernel.driver_of(EDU_BDF) == "vfio-pci"
    finally:
        machine.os.close(other_program)


def test_bind_runs_as_a_module_on_the_mock():
    result = subprocess.run([sys.executable, "-m", "tools.bind", "--mock", GPU_BDF, "--vfio", "--json"],
                            cwd=REPOSITORY, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    moved = json.loads(result.stdout)["moved"]
    assert [(entry["bdf"], entry["to"]) for entry in moved] == [(GPU_BDF, "vfio-pci"),
                                                                (GPU_AUDIO_BDF, "vfio-pci")]
