"""`python -m tools.reset_gpu`: the escalating reset ladder on the mock machine: the bus reset with the
GPU's audio function held and handed back, quirks, refusals, --dry-run, --unbind, the JSON report,
an all-ones device, bounded waits, the VFIO hot reset and the vendor step."""
from __future__ import annotations

import json
import time

import pytest

from autogen.linux import pci_regs

from hal.pci.sysfs import SysfsPCI
from mockgpu import GPU_AUDIO_BDF, GPU_BDF, Machine, RootPort
from mockgpu.amd.gpu import Navi31GPU
from mockgpu.navi31 import Navi31Audio
from mockgpu.pci import BarKind, BarSpec, Identity, PCIeInfo, PCIeLink, PCIFunction
from tools import bind, reset_gpu

GPU_BRIDGE = "0000:03:00.0"
LONE_BDF = "0000:01:00.0"
STEP_KEYS = {"method", "ok", "seconds", "detail", "refused"}
REAL_VENDOR_RESETS = dict(reset_gpu.VENDOR_RESETS)


@pytest.fixture
def machine(tmp_path) -> Machine:
    """The default machine with amdgpu unbound from the GPU (its audio keeps snd_hda_intel)."""
    made = Machine.default(lock_dir=str(tmp_path))
    SysfsPCI(made.os).rebind(GPU_BDF, None)
    return made


@pytest.fixture(autouse=True)
def no_vendor_reset_unless_asked(monkeypatch):
    """The vendor step stays out of the ladder tests unless a test plugs one in."""
    monkeypatch.setattr(reset_gpu, "VENDOR_RESETS", {})


def run(machine: Machine, capsys, *argv: str) -> tuple[int, dict]:
    code = reset_gpu.main([*argv, "--json"], seam=machine.os)
    return code, json.loads(capsys.readouterr().out)


def config_bytes(machine: Machine, bdf: str, size: int = pci_regs.PCI_STD_HEADER_SIZEOF) -> bytes:
    return bytes(machine.device(bdf).cfg.snapshot()[:size])


class PlainEndpoint(PCIFunction):
    """An endpoint with chosen IDs and FLR support, for quirk tests."""

    default_driver = None
    pm_no_soft_reset = True

    def __init__(self, vendor: int, device: int, flr: bool) -> None:
        link = PCIeLink(max_speed=pci_regs.PCI_EXP_LNKCAP_SLS_8_0GB, max_width=4,
                        speed=pci_regs.PCI_EXP_LNKCAP_SLS_8_0GB, width=4)
        identity = Identity(vendor, device, 0x030200, 0xA1)  # 3D controller
        super().__init__(identity, [BarSpec(0, 1 << 20, BarKind.MEM32)],
                         PCIeInfo(pci_regs.PCI_EXP_TYPE_ENDPOINT, link, flr=flr))

    def bar_read(self, index: int, off: int, n: int) -> bytes:
        return bytes(n)

    def bar_write(self, index: int, off: int, data: bytes) -> None:
        pass


def lone_device(tmp_path, vendor: int, device: int, flr: bool, hot_plug: bool = False) -> Machine:
    made = Machine(lock_dir=str(tmp_path))
    made.add_device(RootPort(hot_plug=hot_plug), "0000:00:01.0")
    made.add_device(PlainEndpoint(vendor, device, flr), LONE_BDF, "0000:00:01.0")
    return made


def test_mock_cli_ends_ok_and_lists_its_steps(capsys):
    assert reset_gpu.main(["--mock", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["final"] == "ok"
    assert [step["method"] for step in report["steps"]] == ["flr", "sbr"]
    assert report["steps"][0]["refused"] and "FLR" in report["steps"][0]["detail"]
    assert report["steps"][1]["ok"]


def test_mock_cli_mode1_finds_the_pmfw_a_previous_driver_left_running(capsys, monkeypatch):
    # the --mock machine starts as a user-space driver leaves the GPU: SOS and PMFW running
    monkeypatch.setattr(reset_gpu, "VENDOR_RESETS", REAL_VENDOR_RESETS)
    assert reset_gpu.main(["--mock", "--method", "mode1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["final"] == "ok"
    assert [(step["method"], step["ok"]) for step in report["steps"]] == [("mode1", True)]


def test_json_shape(machine, capsys):
    code, report = run(machine, capsys, GPU_BDF)
    assert code == 0
    assert set(report) == {"device", "steps", "final", "dry_run", "state"}
    assert report["device"] == f"pci:{GPU_BDF}" and report["dry_run"] is False
    for step in report["steps"]:
        assert set(step) == STEP_KEYS
        assert isinstance(step["ok"], bool) and isinstance(step["seconds"], float)
        assert isinstance(step["detail"], str) and step["detail"]
    assert report["state"]["vendor_device"] == "1002:744c"
    assert report["state"]["drivers"] == {GPU_BDF: None, GPU_AUDIO_BDF: "snd_hda_intel"}


def test_bus_reset_restores_the_audio_function_and_its_driver(machine, capsys):
    gpu = machine.device(GPU_BDF)
    audio = machine.device(GPU_AUDIO_BDF)
    audio.registers[:4] = b"\x5a\x5a\x5a\x5a"  # device state a bus reset clears
    before = config_bytes(machine, GPU_AUDIO_BDF)
    resets = (gpu.state.bus_reset_count, audio.state.bus_reset_count)
    code, report = run(machine, capsys, GPU_BDF, "--method", "sbr")
    assert code == 0 and report["final"] == "ok"
    assert (gpu.state.bus_reset_count, audio.state.bus_reset_count) == (resets[0] + 1, resets[1] + 1)
    assert audio.registers[:4] == bytes(4)
    # the BARs, Command and the rest of the header the kernel had programmed are back
    assert config_bytes(machine, GPU_AUDIO_BDF) == before
    assert machine.kernel.driver_of(GPU_AUDIO_BDF) == "snd_hda_intel"
    assert machine.kernel.overrides.get(GPU_AUDIO_BDF) is None
    assert "snd_hda_intel bound again" in report["steps"][0]["detail"]


def test_the_gpu_config_is_restored_after_the_bus_reset(machine, capsys):
    before = config_bytes(machine, GPU_BDF)
    code, _ = run(machine, capsys, GPU_BDF, "--method", "sbr")
    assert code == 0
    after = config_bytes(machine, GPU_BDF)
    bars = slice(pci_regs.PCI_BASE_ADDRESS_0, pci_regs.PCI_BASE_ADDRESS_5 + 4)
    assert after[bars] == before[bars]


def test_refused_without_unbind_and_nothing_is_reset(tmp_path, capsys):
    machine = Machine.default(lock_dir=str(tmp_path))
    gpu = machine.device(GPU_BDF)
    count = gpu.state.reset_count
    code, report = run(machine, capsys, GPU_BDF)
    assert code == 1
    assert report["final"].startswith("DeviceBusy") and "--unbind" in report["final"]
    assert "amdgpu" in report["final"] and report["steps"] == []
    assert gpu.state.reset_count == count
    assert machine.kernel.driver_of(GPU_BDF) == "amdgpu"


def test_unbind_detaches_the_driver_and_hands_the_device_back(tmp_path, capsys):
    machine = Machine.default(lock_dir=str(tmp_path))
    gpu = machine.device(GPU_BDF)
    count = gpu.state.bus_reset_count
    code, report = run(machine, capsys, GPU_BDF, "--unbind")
    assert code == 0 and report["final"] == "ok"
    assert gpu.state.bus_reset_count == count + 1
    assert machine.kernel.driver_of(GPU_BDF) == "amdgpu"
    assert machine.kernel.driver_of(GPU_AUDIO_BDF) == "snd_hda_intel"
    assert report["state"]["drivers"] == {GPU_BDF: "amdgpu", GPU_AUDIO_BDF: "snd_hda_intel"}


def test_dry_run_changes_nothing(machine, capsys):
    functions = [GPU_BDF, GPU_AUDIO_BDF, GPU_BRIDGE]
    before = {bdf: bytes(machine.device(bdf).cfg.snapshot()) for bdf in functions}
    counts = {bdf: machine.device(bdf).state.reset_count for bdf in functions}
    drivers = {bdf: machine.kernel.driver_of(bdf) for bdf in functions}
    code, report = run(machine, capsys, GPU_BDF, "--dry-run")
    assert code == 0 and report["dry_run"] is True and report["final"] == "ok"
    assert report["steps"][0]["refused"] and report["steps"][1]["method"] == "sbr"
    assert report["steps"][1]["detail"].startswith("would do: secondary bus reset")
    assert {bdf: bytes(machine.device(bdf).cfg.snapshot()) for bdf in functions} == before
    assert {bdf: machine.device(bdf).state.reset_count for bdf in functions} == counts
    assert {bdf: machine.kernel.driver_of(bdf) for bdf in functions} == drivers


def test_an_all_ones_device_is_reported_lost(machine, capsys):
    machine.surprise_remove(GPU_BDF)
    code, report = run(machine, capsys, GPU_BDF)
    assert code == 1
    assert report["final"].startswith("DeviceLost")


def test_a_device_that_never_comes_back_fails_the_step_within_the_timeout(machine, capsys):
    machine.set_reset_delay(GPU_BDF, 30.0)
    start = time.monotonic()
    code, report = run(machine, capsys, GPU_BDF, "--timeout", "0.2")
    assert time.monotonic() - start < 5.0
    assert code == 1 and report["final"].startswith("DeviceLost")
    assert "0.2 s" in report["final"]
    sbr = report["steps"][-1]
    assert sbr["method"] == "sbr" and not sbr["ok"] and not sbr["refused"]
    # the audio function was handed back even though the GPU did not answer
    assert machine.kernel.driver_of(GPU_AUDIO_BDF) == "snd_hda_intel"


def test_retry_status_is_waited_out(machine, capsys):
    machine.set_reset_delay(GPU_BDF, 0.3, crs_visible=True)
    start = time.monotonic()
    code, report = run(machine, capsys, GPU_BDF, "--timeout", "5")
    assert code == 0 and report["final"] == "ok"
    assert time.monotonic() - start >= 0.3


def test_quirk_forbids_flr_and_the_ladder_uses_the_bus_reset(tmp_path, capsys):
    machine = lone_device(tmp_path, reset_gpu.PCI_VENDOR_NVIDIA, 0x2B85, flr=True)
    function = machine.device(LONE_BDF)
    code, report = run(machine, capsys, LONE_BDF)
    assert code == 0
    flr, sbr = report["steps"]
    assert flr["refused"] and flr["detail"].startswith("quirked: GB202")
    assert sbr["ok"]
    assert (function.state.flr_count, function.state.bus_reset_count) == (0, 1)


def test_quirk_forbids_the_bus_reset(tmp_path, capsys):
    machine = lone_device(tmp_path, reset_gpu.PCI_VENDOR_NVIDIA, 0x2342, flr=False)
    code, report = run(machine, capsys, LONE_BDF, "--method", "sbr")
    assert code == 1
    assert report["steps"][0]["refused"]
    assert "quirk_nvidia_no_bus_reset" in report["steps"][0]["detail"]
    assert machine.device(LONE_BDF).state.bus_reset_count == 0


def test_an_unquirked_flr_capable_device_gets_an_flr(tmp_path, capsys):
    machine = lone_device(tmp_path, reset_gpu.PCI_VENDOR_NVIDIA, 0x2684, flr=True)
    code, report = run(machine, capsys, LONE_BDF)
    assert code == 0
    assert [step["method"] for step in report["steps"]] == ["flr"]
    assert machine.device(LONE_BDF).state.flr_count == 1


def test_nobody_can_reset_names_every_step_and_why(tmp_path, capsys):
    machine = Machine(lock_dir=str(tmp_path))
    machine.add_device(RootPort(hot_plug=True), "0000:00:01.0")
    machine.add_device(Navi31GPU(), "0000:01:00.0", "0000:00:01.0", driver=None)
    machine.add_device(Navi31Audio(), "0000:01:00.1", "0000:00:01.0", driver=None)
    code, report = run(machine, capsys, "0000:01:00.0")
    assert code == 1
    assert [step["method"] for step in report["steps"]] == list(reset_gpu.METHODS)
    assert all(step["refused"] for step in report["steps"])
    final = report["final"]
    assert final.startswith("UnsupportedOperation: nothing could reset")
    for method, words in (("flr", "FLR"), ("sbr", "hot-plug"), ("hot", "vfio"),
                          ("mode1", "no vendor reset")):
        assert f"{method}: " in final and words in final


def test_hot_reset_through_vfio(machine, capsys):
    assert bind.main([GPU_BDF, "--vfio"], seam=machine.os) == 0
    capsys.readouterr()
    gpu = machine.device(GPU_BDF)
    count = gpu.state.bus_reset_count
    code, report = run(machine, capsys, f"vfio:{GPU_BDF}")
    assert code == 0, report
    methods = {step["method"]: step for step in report["steps"]}
    assert methods["sbr"]["refused"] and "'hot'" in methods["sbr"]["detail"]
    assert methods["hot"]["ok"]
    # the hot reset, and maybe vfio-pci's own bus reset when the last user closes the set
    assert gpu.state.bus_reset_count > count
    assert machine.kernel.driver_of(GPU_BDF) == machine.kernel.driver_of(GPU_AUDIO_BDF) == "vfio-pci"


def test_vendor_step_runs_from_the_registry_and_is_checked_for_readiness(machine, capsys, monkeypatch):
    calls = []

    def perform(device, timeout_s):
        calls.append((device.bdf, timeout_s))
        return "done"

    registry = {(0x1002, 0x744C): reset_gpu.VendorReset("test reset", lambda: None, perform)}
    monkeypatch.setattr(reset_gpu, "VENDOR_RESETS", registry)
    code, report = run(machine, capsys, GPU_BDF, "--method", "mode1", "--timeout", "1")
    assert code == 0 and calls == [(GPU_BDF, 1.0)]
    assert report["steps"][0]["detail"].startswith("test reset: done; ready:")


def test_vendor_step_refused_with_its_reason(machine, capsys, monkeypatch):
    registry = {(0x1002, 0x744C): reset_gpu.VendorReset("test reset", lambda: "no SMU here", None)}
    monkeypatch.setattr(reset_gpu, "VENDOR_RESETS", registry)
    code, report = run(machine, capsys, GPU_BDF, "--method", "mode1")
    assert code == 1
    assert report["steps"][0]["refused"] and report["steps"][0]["detail"] == "no SMU here"


def test_text_report(machine, capsys):
    assert reset_gpu.main([GPU_BDF], seam=machine.os) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"reset_gpu: reset pci:{GPU_BDF}")
    assert "final: ok" in out and "refused" in out


def test_am_mode1_through_the_smu(machine, capsys, monkeypatch):
    gpu = machine.device(GPU_BDF)
    smu = getattr(gpu, "smu", None)
    if smu is None:
        pytest.skip("this tree's mock GPU has no SMU model")
    monkeypatch.setattr(reset_gpu, "VENDOR_RESETS", REAL_VENDOR_RESETS)
    code, report = run(machine, capsys, GPU_BDF, "--method", "mode1", "--timeout", "1")
    assert code == 1 and "SMU firmware is not running" in report["final"]
    smu.start()
    gpu.vram[:4] = b"\x11\x22\x33\x44"
    mode1s = []
    smu.on_mode1 = lambda: mode1s.append(True)
    count = gpu.state.reset_count
    code, report = run(machine, capsys, GPU_BDF, "--method", "mode1", "--timeout", "2")
    assert code == 0, report
    assert mode1s == [True] and gpu.state.reset_count == count + 1
    assert bytes(gpu.vram[:4]) == b"\x11\x22\x33\x44"  # mode1 keeps VRAM
    assert not smu.running  # the PMFW is gone until PSP loads it again
    assert report["steps"][0]["detail"].startswith("AM mode1 through the SMU mailbox: Mode1Reset taken")
