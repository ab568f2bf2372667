"""tools.smi: a read-only second reader of a mock Navi31 that the AM driver owns."""
from __future__ import annotations

import json
import pathlib

import pytest

import hal
from drivers.am.device import AMConfig, AMDevice
from drivers.vm import amd_gfx11
from drivers.vm.pagetable import PageTable, RegionTableMemory
from drivers.vm.tlsf import TLSFAllocator
from hal.errors import DeviceBusy
from hal.region import MemoryRegion
from mockgpu import GPU_BDF, Machine
from mockgpu.amd.discovery_table import NAVI31_IPS
from mockgpu.amd.firmware_images import write_navi31_set
from tools import smi

GPU = f"pci:{GPU_BDF}"
MIB = 1 << 20
GIB = 1 << 30
PAGE = 4096


@pytest.fixture(scope="module")
def firmware_root(tmp_path_factory):
    return write_navi31_set(tmp_path_factory.mktemp("firmware"))


@pytest.fixture
def machine(tmp_path):
    return Machine.default(lock_dir=str(tmp_path))


@pytest.fixture
def owner(machine, firmware_root):
    """The AM driver brought up over a resized BAR0 (all of VRAM through the BAR)."""
    pci = hal.open(GPU, os=machine.os, unbind=True, bar_sizes={0: "max"})
    device = AMDevice(pci, config=AMConfig(firmware_dir=str(firmware_root)))
    yield device
    device.fini()
    pci.close()


def read(machine, firmware_root, tmp_path):
    return smi.read_status(machine.os, GPU, firmware_roots=[pathlib.Path(firmware_root)],
                           lock_dir=str(tmp_path))


def test_reads_the_models_ip_and_firmware_versions(machine, owner, firmware_root, tmp_path):
    gpu = machine.device(GPU_BDF)
    status = read(machine, firmware_root, tmp_path)
    listed = {(ip["name"], ip["instance"], ip["version"]) for ip in status["ips"]}
    assert listed == {(entry.block, entry.instance, ".".join(map(str, entry.version)))
                      for entry in NAVI31_IPS}
    versions = {ip["name"]: ip["version"] for ip in status["ips"]}
    assert versions["GC"] == "11.0.0" and versions["MP0"] == "13.0.0" and versions["MP1"] == "13.0.0"
    assert versions["SDMA0"] == "6.0.0" and versions["NBIO"] == "4.3.0"
    psp = status["firmware"]["psp"]
    assert psp["sos_alive"] is True
    assert int(psp["sos_version"], 16) == gpu.psp.sos_version != 0
    files = {item["name"]: item for item in status["firmware"]["files"]}
    sos = files["amdgpu/psp_13_0_0_sos.bin"]
    assert sos["found"] and int(sos["ucode_version"], 16) == gpu.psp.sos_version
    assert status["owner"]["pid"] == machine.os.getpid()


def test_the_reader_takes_no_lock_and_writes_nothing(machine, owner, firmware_root, tmp_path,
                                                     monkeypatch):
    gpu = machine.device(GPU_BDF)
    writes = []
    original_write = gpu.bar_write

    def record(index, offset, data):
        writes.append((index, offset, bytes(data)))
        original_write(index, offset, data)

    monkeypatch.setattr(gpu, "bar_write", record)
    owner.registers.reg("GC", "regSCRATCH_REG0").write(1)  # the owner's writes are seen
    assert writes
    writes.clear()
    command = owner.pci.cfg_read16(0x04)
    read(machine, firmware_root, tmp_path)
    assert writes == []
    assert owner.pci.cfg_read16(0x04) == command
    assert owner.pci.holds_ownership_lock
    with pytest.raises(DeviceBusy):
        hal.open(GPU, os=machine.os, unbind=True)


def test_vram_mapped_through_page_tables_is_counted(machine, owner, firmware_root, tmp_path):
    gmc = owner.block("GMC")
    buffer = owner.memory.alloc_vram(4 * MIB, alignment=2 * MIB, purpose="test")
    gmc.map(5, 8 * GIB, buffer)
    host = owner.pci.alloc_dma(3 * PAGE)
    system_va = 0x7000_0000_0000
    gmc.map(0, system_va, host)
    status = read(machine, firmware_root, tmp_path)
    vram = status["vram"]
    assert vram["available"]
    assert vram["mapped_vram_bytes"] == 4 * MIB
    assert vram["mapped_system_bytes"] == 3 * PAGE
    contexts = {(c["hub"], c["vmid"]): c for c in vram["contexts"]}
    assert contexts[("MMHUB", 5)]["mapped_vram_bytes"] == 4 * MIB
    assert contexts[("MMHUB", 0)]["mapped_system_bytes"] == 3 * PAGE
    assert vram["page_table_bytes"] == PAGE * (contexts[("MMHUB", 0)]["tables"]
                                               + contexts[("MMHUB", 5)]["tables"])
    assert vram["used_bytes"] == vram["page_table_bytes"] + 4 * MIB
    gmc.unmap(5, 8 * GIB, 4 * MIB)
    after = read(machine, firmware_root, tmp_path)["vram"]
    assert after["mapped_vram_bytes"] == 0


def test_walk_tree_agrees_with_the_builder():
    region = MemoryRegion(bytearray(64 * MIB))
    base = 0x1_0000_0000  # table addresses are VRAM physical addresses, offset by this
    table = PageTable(amd_gfx11.GFX11, RegionTableMemory(region, TLSFAllocator(base, 8 * MIB), base=base))
    table.map(0, base + 0x4000_0000, GIB)  # a 1 GiB leaf
    table.map(2 * GIB, base + 0x20_0000, 2 * MIB)  # a 2 MiB leaf
    table.map(3 * GIB, base + 0x10_0000, 3 * PAGE)  # 4 KiB PTEs
    table.map(3 * GIB + 2 * MIB, base + 0x10_0000, PAGE)  # the same page again: counted once
    table.map_pages(4 * GIB, [0x5000, 0x9000], system=True)

    def read_table(offset, size):
        return region.read(offset, size)

    walk = smi.walk_tree(read_table, table.root_address, base)
    assert smi.union_bytes(walk.vram_ranges) == GIB + 2 * MIB + 3 * PAGE
    assert walk.system_bytes == 2 * PAGE
    assert not walk.truncated and walk.unreadable_tables == 0
    assert table.root_address in walk.tables


def test_walk_tree_is_bounded_on_a_table_that_points_to_itself():
    region = MemoryRegion(bytearray(PAGE))
    region.write64(0, amd_gfx11.GFX11.encode_table(0, 0, False))
    walk = smi.walk_tree(lambda offset, size: region.read(offset, size) if offset == 0 else None, 0, 0)
    assert len(walk.tables) <= 2 and not walk.truncated


def test_union_bytes_counts_overlaps_once():
    assert smi.union_bytes([(0, 10), (5, 10), (20, 5), (21, 1)]) == 20
    assert smi.union_bytes([]) == 0


def test_small_bar0_makes_discovery_unavailable_not_a_race(machine, firmware_root, tmp_path):
    with hal.open(GPU, os=machine.os, unbind=True) as pci:  # BAR0 at its power-on 256 MiB
        device = AMDevice(pci, config=AMConfig(firmware_dir=str(firmware_root)))
        gpu = machine.device(GPU_BDF)
        index_before = gpu.regfile.get("NBIO", "regBIF_BX_PF0_MM_INDEX")
        status = read(machine, firmware_root, tmp_path)
        assert status["ips"]["available"] is False
        assert "MM_INDEX" in status["ips"]["reason"]
        assert gpu.regfile.get("NBIO", "regBIF_BX_PF0_MM_INDEX") == index_before
        device.fini()


def test_metrics_need_the_boot_layout(machine, owner, firmware_root, tmp_path):
    status = read(machine, firmware_root, tmp_path)
    if status["boot_layout"]["available"]:
        pytest.skip("the driver writes a boot layout: covered by the layout test")
    assert status["metrics"] == {"available": False, "reason": "not available: no boot layout"}
    assert status["firmware"]["smu"]["available"] is False


def test_metrics_and_smu_version_from_a_boot_layout(machine, owner, firmware_root, tmp_path):
    boot = pytest.importorskip("drivers.am.boot")
    if not hasattr(boot, "find"):
        pytest.skip("drivers.am.boot has no read-only reader")
    gpu = machine.device(GPU_BDF)
    smu = owner.block("SMU")
    if not boot.read_flags(owner.registers):  # a driver without the layout wired in: write one
        psp = owner.block("PSP")
        page = owner.memory.alloc_vram(boot.LAYOUT_SIZE, purpose="layout")
        slots = {"smu.driver_table": (smu.driver_table.mc_address, smu.driver_table.size)}
        firmware = {name: image.sha256 for name, image in psp.firmware.items()}
        layout = boot.Layout(1, boot.State.UP, machine.os.getpid(), ("SMU",), slots, firmware)
        page.view.write(0, layout.encode())
        boot.write_flags(owner.registers, page.offset, 1)
    first = smu.metrics()
    status = read(machine, firmware_root, tmp_path)
    assert status["boot_layout"]["available"] and status["boot_layout"]["state"] == "UP"
    metrics = status["metrics"]
    assert metrics["available"] and metrics["counter"] == first["counter"]
    assert metrics["clocks_mhz"] == first["clocks_mhz"]
    assert int(status["firmware"]["smu"]["version"], 16) == gpu.smu.firmware_version
    smu.metrics()
    assert read(machine, firmware_root, tmp_path)["metrics"]["counter"] == first["counter"] + 1


def test_a_vanished_device_is_reported_as_lost(machine, firmware_root, tmp_path, capsys):
    pci = hal.open(GPU, os=machine.os, unbind=True, bar_sizes={0: "max"})
    AMDevice(pci, config=AMConfig(firmware_dir=str(firmware_root)))
    machine.device(GPU_BDF).vanish()
    code = smi._report(machine.os, GPU, _Args(json=True), [pathlib.Path(firmware_root)],
                       str(tmp_path))
    assert code == 1
    assert "DeviceLost" in json.loads(capsys.readouterr().out)["error"]
    pci.close(rebind=False)  # the device is gone: nothing to tear down


class _Args:
    def __init__(self, json=False, watch=None, count=None):
        self.json = json
        self.watch = watch
        self.count = count


def test_cli_mock_json_and_watch(capsys):
    assert smi.main(["--mock", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert {"device", "ips", "firmware", "vram", "metrics", "boot_layout", "owner"} <= set(status)
    assert {ip["name"]: ip["version"] for ip in status["ips"]}["GC"] == "11.0.0"
    assert status["firmware"]["psp"]["sos_alive"] is True
    assert smi.main(["--mock", "--json", "--watch", "0.01", "--count", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["ips"] for line in lines)
    assert smi.main(["--mock"]) == 0
    text = capsys.readouterr().out
    assert "GC 11.0.0" in text and "PSP: SOS running" in text


def test_cli_rejects_bad_watch():
    with pytest.raises(SystemExit):
        smi.main(["--mock", "--watch", "0"])
