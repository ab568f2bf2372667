"""Driver branches: the bindings of r550, r570, r575, r580, r590 and r595 (NVIDIA/open-gpu-kernel-modules
at each branch's newest tag) next to r535's, the driver choosing them by the running driver's version,
the mock answering with that branch's parameter blocks, and a whole RM lifecycle and kernel launch on
an H200 behind each branch."""
from __future__ import annotations

import errno
import hashlib
import importlib
import pathlib
import re

import numpy as np
import pytest

from autogen import manifest, sources
from autogen.nv.r535 import classes as cl535
from autogen.nv.r535 import ctrl as ctrl535
from autogen.nv.r535 import escape as esc535
from autogen.nv.r535 import status as st
from compute import device as compute_device
from compute.device import Device
from compute.nv import compiler
from drivers.nv import abi as nv_abi
from drivers.nv.device import NVDevice
from drivers.nv.errors import RMError, UnsupportedDriver
from drivers.nv.rm import RM, escape_request
from drivers.nv.uvm import UVM
from hal.errors import HalError
from hal.os import O_RDWR
from tools import mock_machines

ROOT = pathlib.Path(__file__).resolve().parents[2]
# branch -> (tag, package) of every branch pinned to NVIDIA's repository
GIT_BRANCHES = manifest.NVIDIA_OPEN_GIT
NEW_BRANCHES = sorted(GIT_BRANCHES)
RELEASES = nv_abi.RELEASES

# the parameter blocks whose size changes between branches, in bytes: NV_CHANNEL_ALLOC_PARAMS,
# NV_MEMORY_ALLOCATION_PARAMS, NV_VASPACE_ALLOCATION_PARAMETERS, UVM_MAP_EXTERNAL_ALLOCATION_PARAMS,
# UVM_FREE_PARAMS, UVM_UNREGISTER_CHANNEL_PARAMS, NVA06C_CTRL_GPFIFO_SCHEDULE_PARAMS
BLOCK_SIZES = {
    "535": (360, 120, 48, 1200, 24, 28, 2),
    "550": (360, 128, 48, 9264, 24, 28, 2),  # NV_MEMORY_ALLOCATION_PARAMS.numaNode; UVM_MAX_GPUS
    "570": (368, 128, 48, 9264, 24, 28, 2),  # NV_CHANNEL_ALLOC_PARAMS.tpcConfigID
    "575": (368, 128, 48, 9264, 24, 28, 3),  # GPFIFO_SCHEDULE bSkipEnable
    "580": (368, 128, 56, 9264, 24, 28, 3),  # NV_VASPACE_ALLOCATION_PARAMETERS.pasid
    "590": (368, 128, 56, 9264, 16, 12, 3),  # UVM_FREE without length, UNREGISTER_CHANNEL without gpuUuid
    "595": (368, 128, 56, 9264, 16, 12, 3),
}


def _sizes(branch: str) -> tuple[int, ...]:
    abi = nv_abi.for_branch(branch)
    return (abi.classes.NV_CHANNEL_ALLOC_PARAMS.SIZE, abi.nvos.NV_MEMORY_ALLOCATION_PARAMS.SIZE,
            abi.nvos.NV_VASPACE_ALLOCATION_PARAMETERS.SIZE, abi.uvm.UVM_MAP_EXTERNAL_ALLOCATION_PARAMS.SIZE,
            abi.uvm.UVM_FREE_PARAMS.SIZE, abi.uvm.UVM_UNREGISTER_CHANNEL_PARAMS.SIZE,
            abi.ctrl.NVA06C_CTRL_GPFIFO_SCHEDULE_PARAMS.SIZE)


def test_the_branches_differ_where_the_driver_must_follow():
    assert set(BLOCK_SIZES) == set(nv_abi.SUPPORTED_BRANCHES)
    assert {branch: _sizes(branch) for branch in BLOCK_SIZES} == BLOCK_SIZES
    assert nv_abi.for_branch("590").uvm is importlib.import_module("autogen.nv.r590.uvm")


def test_the_driver_knows_the_release_each_branch_was_generated_from():
    assert RELEASES["535"] == manifest.NVIDIA_OPEN_535.upstream_version
    assert {branch: RELEASES[branch] for branch in GIT_BRANCHES} == {
        branch: tag for branch, (tag, _) in GIT_BRANCHES.items()}
    assert set(nv_abi.SUPPORTED_BRANCHES) == {"535", *GIT_BRANCHES}


@pytest.mark.parametrize("branch", NEW_BRANCHES)
def test_numbers_taken_from_r535_are_the_same_in_every_branch(branch):
    """Modules keep importing numbers (escapes, classes, statuses, ioctls) from r535: each one the
    driver, the compute backend or the mock uses must be the same in `branch`, and so must the layouts
    they use directly."""
    files = [*ROOT.glob("drivers/nv/*.py"), *ROOT.glob("mockgpu/nv/*.py"), *ROOT.glob("compute/nv/*.py")]
    checked = 0
    for file in files:
        text = file.read_text()
        for module, alias in re.findall(r"from autogen\.nv\.r535 import (\w+)(?: as (\w+))?", text):
            old = importlib.import_module(f"autogen.nv.r535.{module}")
            new = importlib.import_module(f"autogen.nv.r{branch}.{module}")
            for name in set(re.findall(rf"\b{alias or module}\.(\w+)", text)):
                value = getattr(old, name, None)  # None: a word of a comment ("nvos.h")
                if isinstance(value, int):
                    assert getattr(new, name, None) == value, f"{file.name}: {module}.{name}"
                    checked += 1
    assert checked > 100
    # drivers/nv/gpfifo.py and qmd.py read method fields from r535's fields module: every branch keeps them
    fields535 = importlib.import_module("autogen.nv.r535.fields")
    fields = importlib.import_module(f"autogen.nv.r{branch}.fields")
    assert {name: fields.FIELDS.get(name) for name in fields535.FIELDS} == fields535.FIELDS
    # drivers/nv/gpfifo.py reads USERD offsets from r535's Nvc86fControl_struct
    classes = importlib.import_module(f"autogen.nv.r{branch}.classes")
    assert repr(cl535.Nvc86fControl_struct.LAYOUT) == repr(classes.Nvc86fControl_struct.LAYOUT)


@pytest.mark.parametrize("branch", NEW_BRANCHES)
def test_each_driver_version_selects_its_branch(nv_machine, branch):
    machine = nv_machine("h200", version=RELEASES[branch])
    assert machine.driver.branch == branch
    rm = RM.open(machine.os)
    assert (rm.version, rm.branch) == (RELEASES[branch], branch)
    assert rm.abi.classes is importlib.import_module(f"autogen.nv.r{branch}.classes")
    rm.close()


@pytest.mark.parametrize("version", ["560.35.03", "999.1"])
def test_unknown_branch_refusal_names_every_supported_branch(nv_machine, version):
    machine = nv_machine("h200", version=version)
    with pytest.raises(UnsupportedDriver) as caught:
        RM.open(machine.os)
    message = str(caught.value)
    assert version in message and f"r{version.split('.')[0]}" in message
    for branch in ("535", "550", "570", "575", "580", "590", "595"):
        assert f"r{branch}" in message
    assert machine.os.open_fds == []


@pytest.mark.parametrize("branch", NEW_BRANCHES)
def test_whole_rm_lifecycle_on_an_h200(nv_machine, branch):
    machine = nv_machine("h200", version=RELEASES[branch])
    device = NVDevice.open(machine.os)
    assert device.rm.branch == branch and device.uvm.layouts is nv_abi.for_branch(branch).uvm
    vram = device.alloc_memory(4 << 20, location="vram")
    host = device.alloc_memory(1 << 20, location="sysmem")
    host.cpu.region.write(0, branch.encode())
    assert host.cpu.region.read(0, 3) == branch.encode()
    device.free_memory(vram)  # UVM_FREE: from 590 by base alone
    device.free_memory(host)
    space = machine.driver.uvm_spaces[0]
    device.close(strict=True)  # UVM_UNREGISTER_CHANNEL: from 590 without the GPU's UUID
    assert machine.driver.rm.clients == {}
    assert space.external_ranges == {} and machine.driver.uvm_spaces == []
    assert machine.os.open_fds == []


@pytest.mark.parametrize("branch", NEW_BRANCHES)
def test_a_driver_refuses_r535_sized_uvm_blocks(nv_machine, branch):
    machine = nv_machine("h200", version=RELEASES[branch])
    old_abi = UVM.open(machine.os, "535")
    # uvm_api_map_external_allocation copies sizeof(UVM_MAP_EXTERNAL_ALLOCATION_PARAMS) of the branch
    with pytest.raises(HalError) as caught:
        old_abi.map_external_allocation(1 << 40, 1 << 21, bytes(16), -1, 0, 0)
    assert caught.value.errno == errno.EFAULT  # the block is shorter than what the driver copies
    old_abi.close()


@pytest.mark.parametrize("branch", ["575", "580", "590", "595"])
def test_a_575_or_later_driver_refuses_r570_sized_gpfifo_schedule(nv_machine, branch):
    machine = nv_machine("h200", version=RELEASES[branch])
    device = NVDevice.open(machine.os)
    try:
        # ctrla06fgpfifo.h from 575: NVA06F_CTRL_GPFIFO_SCHEDULE_PARAMS gained bSkipEnable (3 bytes)
        old = nv_abi.for_branch("570").ctrl.NVA06C_CTRL_GPFIFO_SCHEDULE_PARAMS(bEnable=1)
        with pytest.raises(RMError) as caught:
            device.rm.control(device.channel_group, ctrl535.NVA06C_CTRL_CMD_GPFIFO_SCHEDULE, old)
        assert caught.value.status == st.NV_ERR_INVALID_PARAM_STRUCT
    finally:
        device.close()


@pytest.mark.parametrize(("branch", "frees"), [("580", False), ("590", True)])
def test_uvm_free_takes_the_length_until_580_and_the_base_alone_from_590(nv_machine, branch, frees):
    machine = nv_machine("h200", version=RELEASES[branch])
    session = UVM.open(machine.os, branch)
    space = machine.driver.uvm_spaces[0]
    base = 1 << 40
    session.create_external_range(base, 4 << 20)
    with pytest.raises(RMError) as caught:
        session.free(base + (2 << 20), 2 << 20)  # no range starts there in either branch
    assert caught.value.status == st.NV_ERR_INVALID_ADDRESS
    if frees:  # uvm_free(va_space, base): the range that starts at base, whatever the caller's length
        session.free(base, 2 << 20)
        assert space.external_ranges == {}
    else:  # uvm_free(va_space, base, length): the range must be exactly [base, base + length)
        with pytest.raises(RMError) as caught:
            session.free(base, 2 << 20)
        assert caught.value.status == st.NV_ERR_INVALID_ADDRESS
        session.free(base, 4 << 20)
        assert space.external_ranges == {}
    session.close()


@pytest.mark.parametrize("branch", NEW_BRANCHES)
def test_kernel_launch_on_mock_h200(branch):
    compute_device.register_mock_factory(lambda gpu: mock_machines.nvidia(gpu or "h100", RELEASES[branch]),
                                         kind="nv")
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
            assert driver.branch == branch and driver.gpu_model.launches == 1
    finally:
        compute_device.register_mock_factory(None, kind="nv")


def _targets(branch: str) -> list[manifest.Target]:
    return [target for target in manifest.TARGETS if target.name.startswith(f"nv.r{branch}.")]


@pytest.mark.parametrize("branch", NEW_BRANCHES)
def test_git_pinned_modules_record_their_provenance(branch):
    tag, package = GIT_BRANCHES[branch]
    assert package.layout == "git" and package.repository == "NVIDIA/open-gpu-kernel-modules"
    pinned = dict(package.file_sha256)
    assert set(pinned) == set(manifest.nv_pinned_files(branch))
    assert {target.name.rpartition(".")[2] for target in _targets(branch)} == {
        "escape", "nvos", "status", "classes", "ctrl", "uvm", "fields"}
    for target in _targets(branch):
        head = (ROOT / target.output).read_text().split('"""', 1)
        assert f"https://github.com/{package.repository} at commit {package.version}" in head[0]
        assert f"r{branch} ({tag})" in head[1].split('"""', 1)[0]  # the docstring names the tag
        for path in target.paths:
            assert f"{path} {pinned[path]}" in head[0]


def test_moved_headers_are_read_where_each_branch_keeps_them():
    # from 580 UvmGpuMappingType (the driver's gpuMappingType) is in nv_uvm_user_types.h
    for branch in NEW_BRANCHES:
        uvm_paths = manifest.BY_NAME[f"nv.r{branch}.uvm"].paths
        assert (manifest.NV_UVM_USER_TYPES in uvm_paths) == (branch in manifest.NV_UVM_USER_TYPES_BRANCHES)
        uvm = importlib.import_module(f"autogen.nv.r{branch}.uvm")
        assert uvm.UvmGpuMappingTypeReadWriteAtomic == 1
    # from 590 nv-ioctl.h includes nv-ioctl-numa.h, which includes <stdint.h>
    assert "stdint.h" in manifest.BY_NAME["nv.r590.escape"].stubs
    assert manifest.BY_NAME["nv.r580.escape"].stubs == {}


@pytest.mark.parametrize("branch", NEW_BRANCHES)
def test_a_missing_header_says_how_to_place_it(monkeypatch, tmp_path, branch):
    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path))
    target = manifest.BY_NAME[f"nv.r{branch}.nvos"]
    with pytest.raises(sources.SourceUnavailable) as raised:
        sources.source_root(target.source, target.paths, target_names=[target.name])
    message = str(raised.value)
    assert "git clone https://github.com/NVIDIA/open-gpu-kernel-modules" in message
    assert f"show {target.source.version}:" in message


@pytest.mark.parametrize("branch", NEW_BRANCHES)
def test_the_cached_headers_are_the_pinned_ones(branch):
    """The placed files match their pins; tests/nv/test_autogen_nv.py regenerates every target from
    them (`python -m autogen --check nv.r<branch>` does the same) and skips, with the commands that
    place them, where they are not cached."""
    tag, package = GIT_BRANCHES[branch]
    root = sources.unpacked_dir(package)
    for path, sha in package.file_sha256:
        placed = root / path
        if not placed.is_file():
            pytest.skip(f"{placed} is not in the cache: place the files of {package.repository} at tag "
                        f"{tag} (commit {package.version}) as docs/autogen.md says (git archive of the four "
                        f"member folders); python -m autogen nv.r{branch}.nvos names the commands")
        assert hashlib.sha256(placed.read_bytes()).hexdigest() == sha, path


@pytest.mark.parametrize(("branch", "refused"), [("590", False), ("595", True)])
def test_card_info_takes_whole_records_from_595(nv_machine, branch, refused):
    machine = nv_machine("h200", version=RELEASES[branch])
    record = nv_abi.for_branch(branch).escape.nv_ioctl_card_info.SIZE
    block = bytearray(record + record // 2)  # one record and a half
    fd = machine.os.open("/dev/nvidiactl", O_RDWR)
    try:
        request = escape_request(esc535.NV_ESC_CARD_INFO, len(block))
        if refused:  # 595 nv.c nv_validate_ioctls: a whole, non-zero number of records
            with pytest.raises(OSError) as caught:
                machine.os.ioctl(fd, request, block)
            assert caught.value.errno == errno.EINVAL
        else:  # nvidia_ioctl NV_ESC_CARD_INFO: as many records as fit
            machine.os.ioctl(fd, request, block)
            assert nv_abi.for_branch(branch).escape.nv_ioctl_card_info.from_bytes(block[:record]).valid == 1
    finally:
        machine.os.close(fd)
