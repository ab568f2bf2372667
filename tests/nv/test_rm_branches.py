"""Driver branches: the r570 bindings (NVIDIA/open-gpu-kernel-modules at tag 570.211.01) next to
r535's, the driver choosing them by the running driver's version, the mock answering with that
branch's parameter blocks, and a whole RM lifecycle and kernel launch on an H200 behind a 570 driver."""
from __future__ import annotations

import errno
import hashlib
import importlib
import pathlib
import re

import numpy as np
import pytest

from autogen import __main__ as cli
from autogen import manifest, sources
from autogen.nv.r535 import classes as cl535
from autogen.nv.r535 import nvos as nvos535
from autogen.nv.r535 import uvm as uvm535
from autogen.nv.r570 import classes as cl570
from autogen.nv.r570 import nvos as nvos570
from autogen.nv.r570 import uvm as uvm570
from compute import device as compute_device
from compute.device import Device
from compute.nv import compiler
from drivers.nv import abi as nv_abi
from drivers.nv.device import NVDevice
from drivers.nv.errors import UnsupportedDriver
from drivers.nv.rm import RM
from drivers.nv.uvm import UVM
from hal.errors import HalError
from tools import mock_machines

R570 = "570.211.01"
R570_TARGETS = [target for target in manifest.TARGETS if target.name.startswith("nv.r570.")]
ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_branches_differ_where_the_driver_must_follow():
    # these grew between 535.261.03 and 570.211.01; a 570 driver checks the new sizes
    assert (cl535.NV_CHANNEL_ALLOC_PARAMS.SIZE, cl570.NV_CHANNEL_ALLOC_PARAMS.SIZE) == (360, 368)
    assert (nvos535.NV_MEMORY_ALLOCATION_PARAMS.SIZE, nvos570.NV_MEMORY_ALLOCATION_PARAMS.SIZE) == (120, 128)
    assert uvm535.UVM_MAP_EXTERNAL_ALLOCATION_PARAMS.SIZE != uvm570.UVM_MAP_EXTERNAL_ALLOCATION_PARAMS.SIZE
    assert nv_abi.for_branch("570").classes is cl570 and nv_abi.for_branch("535").nvos is nvos535


def test_numbers_taken_from_r535_are_the_same_in_r570():
    """Modules keep importing numbers (escapes, classes, statuses, ioctls) from r535: each one the
    driver or the mock uses must be the same in r570, and so must the layouts they use directly."""
    files = [*ROOT.glob("drivers/nv/*.py"), *ROOT.glob("mockgpu/nv/*.py")]
    checked = 0
    for file in files:
        text = file.read_text()
        for module, alias in re.findall(r"from autogen\.nv\.r535 import (\w+)(?: as (\w+))?", text):
            old = importlib.import_module(f"autogen.nv.r535.{module}")
            new = importlib.import_module(f"autogen.nv.r570.{module}")
            for name in set(re.findall(rf"\b{alias or module}\.(\w+)", text)):
                value = getattr(old, name, None)  # None: a word of a comment ("nvos.h")
                if isinstance(value, int):
                    assert getattr(new, name) == value, f"{file.name}: {module}.{name}"
                    checked += 1
    assert checked > 100
    # drivers/nv/gpfifo.py and qmd.py read method fields from r535's fields module: r570 keeps them all
    from autogen.nv.r535 import fields as fields535
    from autogen.nv.r570 import fields as fields570
    assert {name: fields570.FIELDS.get(name) for name in fields535.FIELDS} == fields535.FIELDS
    # drivers/nv/gpfifo.py reads USERD offsets from r535's Nvc86fControl_struct
    assert repr(cl535.Nvc86fControl_struct.LAYOUT) == repr(cl570.Nvc86fControl_struct.LAYOUT)


def test_a_570_driver_selects_the_r570_bindings(nv_machine):
    machine = nv_machine("h200", version=R570)
    assert machine.driver.branch == "570"
    rm = RM.open(machine.os)
    assert (rm.version, rm.branch) == (R570, "570")
    assert rm.abi.classes is cl570
    rm.close()


def test_unknown_branch_refusal_names_every_supported_branch(nv_machine):
    machine = nv_machine("h200", version="575.64.05")
    with pytest.raises(UnsupportedDriver) as caught:
        RM.open(machine.os)
    message = str(caught.value)
    assert "575.64.05" in message and "r575" in message
    assert "r535" in message and "r570" in message
    assert machine.os.open_fds == []


def test_whole_rm_lifecycle_on_an_h200_behind_570(nv_machine):
    machine = nv_machine("h200", version=R570)
    device = NVDevice.open(machine.os)
    assert device.rm.branch == "570" and device.uvm.layouts is uvm570
    vram = device.alloc_memory(4 << 20, location="vram")
    host = device.alloc_memory(1 << 20, location="sysmem")
    host.cpu.region.write(0, b"r570")
    assert host.cpu.region.read(0, 4) == b"r570"
    device.free_memory(vram)
    device.free_memory(host)
    device.close(strict=True)
    assert machine.driver.rm.clients == {}
    assert machine.os.open_fds == []


def test_a_570_driver_refuses_r535_sized_uvm_blocks(nv_machine):
    machine = nv_machine("h200", version=R570)
    old_abi = UVM.open(machine.os, "535")
    # uvm_api_map_external_allocation copies sizeof(UVM_MAP_EXTERNAL_ALLOCATION_PARAMS) of r570
    with pytest.raises(HalError) as caught:
        old_abi.map_external_allocation(1 << 40, 1 << 21, bytes(16), -1, 0, 0)
    assert caught.value.errno == errno.EFAULT  # the block is shorter than what the driver copies
    old_abi.close()


def test_kernel_launch_on_mock_h200_behind_570():
    compute_device.register_mock_factory(lambda gpu: mock_machines.nvidia(gpu or "h100", R570), kind="nv")
    try:
        with Device("mock:nv:h200") as dev:
            n = 1000
            rng = np.random.default_rng(5)
            a = rng.standard_normal(n).astype(np.float32)
            b = rng.standard_normal(n).astype(np.float32)
            buffers = [dev.allocate(4 * n) for _ in range(3)]
            buffers[0].copyin(a)
            buffers[1].copyin(b)
            kernel = dev.load(compiler.PREBUILT_DIR / "vector_add.fatbin", "vector_add_f32")
            kernel(*buffers, n, global_size=n, local_size=128, wait=True)
            out = np.frombuffer(buffers[2].copyout(4 * n), dtype=np.float32)
            np.testing.assert_array_equal(out, a + b)
            driver = dev.backend.machine.driver
            assert driver.branch == "570" and driver.gpu_model.launches == 1
    finally:
        compute_device.register_mock_factory(None, kind="nv")


def test_r570_modules_record_their_provenance():
    package = manifest.NVIDIA_OPEN_570
    assert package.layout == "git" and package.repository == "NVIDIA/open-gpu-kernel-modules"
    pinned = dict(package.file_sha256)
    assert {target.name.rpartition(".")[2] for target in R570_TARGETS} == {
        "escape", "nvos", "status", "classes", "ctrl", "uvm", "fields"}
    for target in R570_TARGETS:
        head = (ROOT / target.output).read_text().split('"""', 1)
        assert f"https://github.com/{package.repository} at commit {package.version}" in head[0]
        assert manifest.NVIDIA_OPEN_570_TAG in head[1].split('"""', 1)[0]  # the docstring names the tag
        for path in target.paths:
            assert f"{path} {pinned[path]}" in head[0]


def test_a_missing_r570_header_says_how_to_place_it(monkeypatch, tmp_path):
    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path))
    target = manifest.BY_NAME["nv.r570.nvos"]
    with pytest.raises(sources.SourceUnavailable) as raised:
        sources.source_root(target.source, target.paths, target_names=[target.name])
    message = str(raised.value)
    assert "git clone https://github.com/NVIDIA/open-gpu-kernel-modules" in message
    assert f"show {target.source.version}:" in message


def test_the_pinned_headers_regenerate_the_r570_modules(capsys):
    package = manifest.NVIDIA_OPEN_570
    root = sources.unpacked_dir(package)
    for path, sha in package.file_sha256:
        placed = root / path
        if not placed.is_file():
            pytest.skip(f"{placed} is not in the cache (python -m autogen nv.r570.nvos says how to place "
                        f"the files of {package.repository} at {package.version})")
        assert hashlib.sha256(placed.read_bytes()).hexdigest() == sha
    assert cli.run([target.name for target in R570_TARGETS], check=True, offline=True) == 0
    assert capsys.readouterr().out.count("up to date") == len(R570_TARGETS)
