"""tools.replay: the committed traces replay against today's driver, a fresh mock recording
replays, a changed register write in drivers.am is reported with its offset and both values, and
the command line's output and exit status."""
from __future__ import annotations

import json
import tempfile

import pytest

import hal
from drivers.am import ih
from drivers.am.device import AMConfig, AMDevice
from hal.trace_format import DMA_DEVICE, OBSERVATIONS, TraceReader
from mockgpu.amd.firmware_images import write_navi31_set
from tools import mock_machines, replay

FIXTURES = replay.FIXTURES
BOOT = FIXTURES / "am_boot.trace"
SELFTEST = FIXTURES / "selftest.trace"
FIXTURE_LIMIT = 1 << 20  # bytes: fixtures stay well under this
RERECORD = ("if the driver changed on purpose, record the fixtures again: "
            "python -m tools.replay --record am.boot tests/fixtures/traces/am_boot.trace; "
            "python -m tools.replay --record selftest tests/fixtures/traces/selftest.trace")


@pytest.mark.parametrize("path", [BOOT, SELFTEST], ids=["am_boot", "selftest"])
def test_committed_traces_replay_without_divergence(path):
    result = replay.replay(str(path))
    assert result.ok, f"{result.text()}\n{RERECORD}"
    assert result.operations > 1000
    assert path.stat().st_size < FIXTURE_LIMIT


def test_a_fresh_mock_recording_replays(tmp_path):
    path = tmp_path / "boot.trace"
    replay.record("am.boot", str(path))
    result = replay.replay(str(path))
    assert result.ok, result.text()
    assert result.scenario == "am.boot" and result.operations > 1000


def test_a_fresh_vfio_recording_with_msix_replays(tmp_path):
    path = tmp_path / "selftest.trace"
    replay.record("selftest", str(path), {"backend": "vfio", "copy_bytes": 4096, "elements": 300})
    result = replay.replay(str(path))
    assert result.ok, result.text()


def msi_storm_offset() -> int:
    """The byte offset of IH_MSI_STORM_CTRL in BAR5 on the mock Navi31."""
    machine = mock_machines.navi31()
    try:
        with hal.open(machine.device, os=machine.os, unbind=True) as pci:
            device = AMDevice(pci, config=AMConfig(firmware_dir=machine.firmware_dir))
            offset = device.block("IH").msi_storm.address
            device.fini()
    finally:
        machine.close()
    return offset


def test_a_changed_register_write_is_reported_with_offset_and_values(monkeypatch):
    offset = msi_storm_offset()
    recorded_delay = ih.MSI_STORM_DELAY
    monkeypatch.setattr(ih, "MSI_STORM_DELAY", recorded_delay + 2)
    result = replay.replay(str(BOOT))
    assert not result.ok
    divergence = result.divergence
    assert divergence.expected.startswith(f"MMIO write32 BAR5+{offset:#x} = ")
    assert divergence.got.startswith(f"MMIO write32 BAR5+{offset:#x} = ")
    expected_value = int(divergence.expected.rsplit("=", 1)[1], 16)
    got_value = int(divergence.got.rsplit("=", 1)[1], 16)
    assert expected_value != got_value
    assert len(divergence.history) == 10
    assert divergence.where.endswith("hw_init") and "drivers/am/ih.py" in divergence.where
    assert result.register == "OSSSYS[0] regIH_MSI_STORM_CTRL"
    text = result.text()
    assert f"record {divergence.index}" in text and f"{expected_value:#010x}" in text
    assert "register: OSSSYS[0] regIH_MSI_STORM_CTRL" in text


def test_cli_no_divergence(capsys):
    assert replay.main([str(BOOT)]) == 0
    out = capsys.readouterr().out
    assert "no divergence" in out and "operations" in out


def test_cli_divergence_is_exit_status_one_and_json(capsys, monkeypatch):
    monkeypatch.setattr(ih, "MSI_STORM_DELAY", ih.MSI_STORM_DELAY + 1)
    assert replay.main(["--json", str(BOOT)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["divergence"]["index"] > 0
    assert set(report["divergence"]) == {"index", "expected", "got", "history", "where", "register"}


def test_cli_unreadable_trace_is_exit_status_two(tmp_path, capsys):
    path = tmp_path / "cut.trace"
    path.write_bytes(BOOT.read_bytes()[:200])
    assert replay.main([str(path)]) == 2
    assert "cut short" in capsys.readouterr().err


def test_cli_record_and_dump(tmp_path, capsys):
    path = tmp_path / "boot.trace"
    assert replay.main(["--record", "am.boot", str(path)]) == 0
    assert replay.main(["--dump", str(path)]) == 0
    out = capsys.readouterr().out
    assert '"scenario": "am.boot"' in out and "MMIO write32 BAR5+" in out


def test_cli_diff_names_the_first_changed_driver_operation(tmp_path, monkeypatch, capsys):
    assert replay.main(["--diff", str(BOOT), str(BOOT)]) == 0
    assert "the same" in capsys.readouterr().out
    monkeypatch.setattr(ih, "MSI_STORM_DELAY", ih.MSI_STORM_DELAY + 2)
    changed = tmp_path / "changed.trace"
    replay.record("am.boot", str(changed))
    assert replay.main(["--diff", str(BOOT), str(changed)]) == 1
    out = capsys.readouterr().out
    offset = msi_storm_offset()
    assert f"  - MMIO write32 BAR5+{offset:#x} = " in out and f"  + MMIO write32 BAR5+{offset:#x} = " in out


def test_a_recording_on_a_device_string_replays_with_the_search_path_firmware(tmp_path, monkeypatch):
    """The real-hardware path (--device), on the mock's GPU: firmware from the search path, which
    the replay uses too."""
    from drivers.am.firmware import FIRMWARE_DIR_ENV

    machine = mock_machines.navi31()
    try:
        monkeypatch.setenv(FIRMWARE_DIR_ENV, machine.firmware_dir)
        path = tmp_path / "device.trace"
        replay.record("am.boot", str(path), device=machine.device, os=machine.os)
    finally:
        machine.close()
    assert TraceReader(str(path)).header.args["firmware"] == replay.SYSTEM_FIRMWARE
    with tempfile.TemporaryDirectory() as firmware:
        monkeypatch.setenv(FIRMWARE_DIR_ENV, str(write_navi31_set(firmware)))
        result = replay.replay(str(path))
    assert result.ok, result.text()


def driver_sequence(path) -> list:
    """What the driver did (writes, allocations, DMA contents, interrupt changes), without what it
    read: reads and device writes follow the device's timing."""
    return [(record.op, record.fields, record.data) for record in TraceReader(str(path))
            if record.op not in OBSERVATIONS and record.op != DMA_DEVICE]


def test_a_fresh_mock_recording_has_the_fixture_driver_sequence(tmp_path):
    """Recorded again today (as the same process id, which the boot layout writes into VRAM),
    the driver writes exactly what the committed boot trace holds."""
    assert TraceReader(str(BOOT)).header.device["pid"] == replay.FIXTURE_PID
    path = tmp_path / "boot.trace"
    replay.record("am.boot", str(path))
    fresh = driver_sequence(path)
    committed = driver_sequence(BOOT)
    first = next((i for i, (a, b) in enumerate(zip(fresh, committed)) if a != b), None)
    assert first is None and len(fresh) == len(committed), (
        f"operation {first}: {fresh[first] if first is not None else len(fresh)} vs "
        f"{committed[first] if first is not None else len(committed)}; {RERECORD}")
