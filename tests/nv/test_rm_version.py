"""The driver-version check at open: /proc/driver/nvidia/version, the RM's own answer, and the
refusal of a branch without bindings."""
from __future__ import annotations

import errno

import pytest

from autogen.nv.r535 import escape as esc
from drivers.nv.errors import UnsupportedDriver
from drivers.nv import abi as nv_abi
from drivers.nv.rm import RM, check_branch, driver_version, escape_request
from hal.errors import DeviceNotFound
from mockgpu.machine import Machine
from mockgpu.nv.driver import VERSION_PATH
from mockgpu.sysfs import Attr


def test_version_is_read_from_proc(h100):
    assert driver_version(h100.os) == "535.261.03"
    rm = RM.open(h100.os)
    assert (rm.version, rm.branch) == ("535.261.03", "535")
    rm.close()


def test_unknown_branch_is_refused_naming_it_and_the_supported_ones(nv_machine):
    machine = nv_machine(version="560.35.03")
    with pytest.raises(UnsupportedDriver) as caught:
        RM.open(machine.os)
    message = str(caught.value)
    assert "560.35.03" in message and "r560" in message and "r535" in message
    assert caught.value.branch == "560"
    # nothing was left open
    assert machine.os.open_fds == []


def test_check_branch_accepts_every_535_build():
    assert check_branch("535.113.01") == "535"
    with pytest.raises(UnsupportedDriver):
        check_branch("560.35.03")


def test_no_driver_loaded_says_so():
    machine = Machine()
    assert driver_version(machine.os) is None
    with pytest.raises(DeviceNotFound) as caught:
        RM.open(machine.os)
    assert "not loaded" in str(caught.value)


def test_without_the_proc_file_the_rm_query_gives_the_version(nv_machine):
    machine = nv_machine("h200", version="570.211.01", proc_version=False)
    assert driver_version(machine.os) is None
    rm = RM.open(machine.os)
    assert (rm.version, rm.branch) == ("570.211.01", "570")
    assert rm.abi is nv_abi.for_branch("570")
    rm.close()


def test_an_unknown_branch_is_refused_without_the_proc_file_too(nv_machine):
    machine = nv_machine(version="999.1", proc_version=False)
    with pytest.raises(UnsupportedDriver) as caught:
        RM.open(machine.os)
    assert "999.1" in str(caught.value) and caught.value.branch == "999"
    assert machine.os.open_fds == []


def test_proc_and_rm_disagreeing_is_refused(h100):
    # /proc shows another build than the module that answers on /dev/nvidiactl
    h100.machine.extra_files[VERSION_PATH] = Attr(0o444, lambda: (
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  535.104.05  Release Build\n"))
    with pytest.raises(UnsupportedDriver) as caught:
        RM.open(h100.os)
    assert "535.104.05" in str(caught.value) and "535.261.03" in str(caught.value)
    assert h100.os.open_fds == []


def test_the_version_block_is_the_same_in_every_branch():
    # RM.open asks the version with r535's block before it knows the branch
    base = nv_abi.for_branch("535").escape.nv_ioctl_rm_api_version
    for branch in nv_abi.SUPPORTED_BRANCHES:
        other = nv_abi.for_branch(branch).escape.nv_ioctl_rm_api_version
        assert repr(other.LAYOUT) == repr(base.LAYOUT), branch


def test_strict_version_check_escape(h100):
    rm = RM.open(h100.os)
    request = escape_request(esc.NV_ESC_CHECK_VERSION_STR, esc.nv_ioctl_rm_api_version.SIZE)
    ours = esc.nv_ioctl_rm_api_version(cmd=esc.NV_RM_API_VERSION_CMD_STRICT)
    ours.versionString = b"535.261.03"
    assert h100.os.ioctl(rm.ctl_fd, request, ours.buffer) == 0
    assert ours.reply == esc.NV_RM_API_VERSION_REPLY_RECOGNIZED
    other = esc.nv_ioctl_rm_api_version(cmd=esc.NV_RM_API_VERSION_CMD_STRICT)
    other.versionString = b"535.104.05"
    with pytest.raises(OSError) as caught:
        h100.os.ioctl(rm.ctl_fd, request, other.buffer)
    assert caught.value.errno == errno.EINVAL
    # RmPerformVersionCheck answers with its own version on a mismatch
    assert bytes(other.versionString).split(b"\0")[0] == b"535.261.03"
    rm.close()
