"""The driver-version check at open: /proc/driver/nvidia/version, the RM's own answer, and the
refusal of a branch without bindings."""
from __future__ import annotations

import errno

import pytest

from autogen.nv.r535 import escape as esc
from drivers.nv.errors import UnsupportedDriver
from drivers.nv.rm import RM, check_branch, driver_version, escape_request
from hal.errors import DeviceNotFound
from mockgpu.machine import Machine


def test_version_is_read_from_proc(h100):
    assert driver_version(h100.os) == "535.261.03"
    rm = RM.open(h100.os)
    assert (rm.version, rm.branch) == ("535.261.03", "535")
    rm.close()


def test_unknown_branch_is_refused_naming_it_and_the_supported_ones(nv_machine):
    machine = nv_machine(version="550.163.01")
    with pytest.raises(UnsupportedDriver) as caught:
        RM.open(machine.os)
    message = str(caught.value)
    assert "550.163.01" in message and "r550" in message and "r535" in message
    assert caught.value.branch == "550"
    # nothing was left open
    assert machine.os.open_fds == []


def test_check_branch_accepts_every_535_build():
    assert check_branch("535.113.01") == "535"
    with pytest.raises(UnsupportedDriver):
        check_branch("575.64.05")


def test_no_driver_loaded_says_so():
    machine = Machine()
    with pytest.raises(DeviceNotFound) as caught:
        RM.open(machine.os)
    assert "not loaded" in str(caught.value)


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
