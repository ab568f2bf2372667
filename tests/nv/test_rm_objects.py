"""The RM object layer against the mock RM: the tree, the parent and class rules, the statuses
returned as typed errors with their names, reverse-order teardown and the leak check."""
from __future__ import annotations

import errno

import pytest

from autogen.nv.r535 import classes as cl
from autogen.nv.r535 import ctrl
from autogen.nv.r535 import escape as esc
from autogen.nv.r535 import nvos
from autogen.nv.r535 import status as nv_status
from drivers.nv.errors import RMError, status_name
from drivers.nv.rm import RM, ResourceLeak, escape_request
from hal.errors import HalError


def _device(rm: RM):
    device = rm.alloc(rm.root, cl.NV01_DEVICE_0, cl.NV0080_ALLOC_PARAMETERS(
        hClientShare=rm.root.handle, vaMode=nvos.NV_DEVICE_ALLOCATION_VAMODE_MULTIPLE_VASPACES))
    subdevice = rm.alloc(device, cl.NV20_SUBDEVICE_0, cl.NV2080_ALLOC_PARAMETERS())
    return device, subdevice


def test_status_names_come_from_nvstatuscodes():
    assert status_name(nv_status.NV_ERR_INVALID_OBJECT_PARENT) == "NV_ERR_INVALID_OBJECT_PARENT"
    assert status_name(0) == "NV_OK"
    assert status_name(0x7FFFFFF1) == "NV_STATUS 0x7ffffff1"


def test_root_client_device_subdevice_tree(h100):
    rm = RM.open(h100.os)
    device, subdevice = _device(rm)
    kernel = h100.driver.rm
    client = kernel.clients[rm.root.handle]
    assert client.objects[device.handle].parent is client.root
    assert client.objects[subdevice.handle].parent.handle == device.handle
    assert rm.close() == [device, subdevice]
    assert kernel.clients == {}


def test_close_frees_in_reverse_allocation_order(h100):
    rm = RM.open(h100.os)
    device, subdevice = _device(rm)
    vaspace = rm.alloc(device, cl.FERMI_VASPACE_A, nvos.NV_VASPACE_ALLOCATION_PARAMETERS(vaSize=1 << 40))
    rm.close()
    freed = [handle for handle, _ in h100.driver.rm.freed_log]
    assert freed == [vaspace.handle, subdevice.handle, device.handle, rm.root.handle]


def test_leak_check_on_close_names_the_objects_and_still_frees_them(h100):
    rm = RM.open(h100.os)
    device, _ = _device(rm)
    with pytest.raises(ResourceLeak) as caught:
        rm.close(strict=True)
    assert device in caught.value.objects and "class 0x0080" in str(caught.value)
    assert h100.driver.rm.clients == {}


def test_freeing_a_parent_frees_its_children_as_the_rm_does(h100):
    rm = RM.open(h100.os)
    device, subdevice = _device(rm)
    usermode = rm.alloc(subdevice, cl.HOPPER_USERMODE_A)
    rm.free(device)
    assert subdevice.freed and usermode.freed and rm.leaks() == []
    client = h100.driver.rm.clients[rm.root.handle]
    assert set(client.objects) == {rm.root.handle}
    # the RM no longer knows the child: freeing it again is the RM's "no such object"
    block = nvos.NVOS00_PARAMETERS(hRoot=rm.root.handle, hObjectParent=device.handle,
                                   hObjectOld=usermode.handle)
    rm.escape(rm.ctl_fd, esc.NV_ESC_RM_FREE, block, "free again")
    assert block.status == nv_status.NV_ERR_OBJECT_NOT_FOUND
    assert rm.close(strict=True) == []


def test_siblings_free_in_any_order(h100):
    rm = RM.open(h100.os)
    device, subdevice = _device(rm)
    first = rm.alloc(device, cl.FERMI_VASPACE_A, nvos.NV_VASPACE_ALLOCATION_PARAMETERS(vaSize=1 << 40))
    second = rm.alloc(device, cl.FERMI_VASPACE_A, nvos.NV_VASPACE_ALLOCATION_PARAMETERS(vaSize=1 << 40))
    rm.free(first)
    rm.free(subdevice)
    rm.free(second)
    rm.free(device)
    assert rm.close(strict=True) == []


def test_wrong_parent_is_invalid_object_parent(h100):
    rm = RM.open(h100.os)
    device, _ = _device(rm)
    # resource_list.h: a subdevice's parent is a device, not the client
    with pytest.raises(RMError) as caught:
        rm.alloc(rm.root, cl.NV20_SUBDEVICE_0, cl.NV2080_ALLOC_PARAMETERS())
    assert caught.value.status == nv_status.NV_ERR_INVALID_OBJECT_PARENT
    assert caught.value.status_name == "NV_ERR_INVALID_OBJECT_PARENT"
    assert "NV_ERR_INVALID_OBJECT_PARENT" in str(caught.value)
    rm.close()


def test_duplicate_handle_and_missing_parent(h100):
    rm = RM.open(h100.os)
    device, subdevice = _device(rm)
    with pytest.raises(RMError) as caught:
        rm.alloc(device, cl.NV20_SUBDEVICE_0, cl.NV2080_ALLOC_PARAMETERS(), handle=subdevice.handle)
    assert caught.value.status_name == "NV_ERR_INSERT_DUPLICATE_NAME"
    with pytest.raises(RMError) as caught:
        rm.alloc(device, cl.NV20_SUBDEVICE_0, cl.NV2080_ALLOC_PARAMETERS(), handle=rm.root.handle)
    assert caught.value.status_name == "NV_ERR_INVALID_OBJECT_HANDLE"
    ghost = type(device)(0xCAF0FFFF, cl.NV01_DEVICE_0, None)
    with pytest.raises(RMError) as caught:
        rm.alloc(ghost, cl.NV20_SUBDEVICE_0, cl.NV2080_ALLOC_PARAMETERS())
    assert caught.value.status_name == "NV_ERR_OBJECT_NOT_FOUND"
    rm.close()


def test_unknown_class_and_class_of_another_generation(nv_machine):
    machine = nv_machine("a100")
    rm = RM.open(machine.os)
    _, subdevice = _device(rm)
    with pytest.raises(RMError) as caught:
        rm.alloc(subdevice, 0x1234)
    assert caught.value.status_name == "NV_ERR_INVALID_CLASS"
    # g_gpu_class_list.c: GA100 has no HOPPER_USERMODE_A
    with pytest.raises(RMError) as caught:
        rm.alloc(subdevice, cl.HOPPER_USERMODE_A)
    assert caught.value.status_name == "NV_ERR_INVALID_CLASS"
    assert rm.alloc(subdevice, cl.AMPERE_USERMODE_A)
    rm.close()


def test_required_parameters_missing_is_invalid_argument(h100):
    rm = RM.open(h100.os)
    device, _ = _device(rm)
    with pytest.raises(RMError) as caught:
        rm.alloc(device, cl.FERMI_VASPACE_A)
    assert caught.value.status_name == "NV_ERR_INVALID_ARGUMENT"
    rm.close()


def test_control_with_the_wrong_parameter_size_is_invalid_param_struct(h100):
    rm = RM.open(h100.os)
    _, subdevice = _device(rm)
    # the GID control with the arch-info block (the wrong size for that command)
    with pytest.raises(RMError) as caught:
        rm.control(subdevice, ctrl.NV2080_CTRL_CMD_GPU_GET_GID_INFO,
                   ctrl.NV2080_CTRL_MC_GET_ARCH_INFO_PARAMS())
    assert caught.value.status_name == "NV_ERR_INVALID_PARAM_STRUCT"
    arch = rm.control(subdevice, ctrl.NV2080_CTRL_CMD_MC_GET_ARCH_INFO,
                      ctrl.NV2080_CTRL_MC_GET_ARCH_INFO_PARAMS())
    assert arch.architecture == h100.driver.gpu.arch_id
    rm.close()


def test_escape_with_a_wrong_block_size_fails_the_ioctl(h100):
    rm = RM.open(h100.os)
    short = bytearray(nvos.NVOS21_PARAMETERS.SIZE - 8)
    with pytest.raises(OSError) as caught:
        h100.os.ioctl(rm.ctl_fd, escape_request(esc.NV_ESC_RM_ALLOC, len(short)), short)
    assert caught.value.errno == errno.EINVAL
    # an RM escape on /dev/nvidia0 is refused too (escape.c NV_CTL_DEVICE_ONLY)
    device_fd = rm.open_device(0)
    block = nvos.NVOS21_PARAMETERS(hClass=nvos.NV01_ROOT_CLIENT)
    with pytest.raises(HalError) as refused:
        rm.escape(device_fd, esc.NV_ESC_RM_ALLOC, block, "alloc on the GPU node")
    assert refused.value.errno == errno.EINVAL
    h100.os.close(device_fd)
    rm.close()


def test_closing_the_control_fd_frees_the_client_in_the_kernel(h100):
    rm = RM.open(h100.os)
    _device(rm)
    h100.os.close(rm.ctl_fd)  # the process dies without freeing: nvidia_close cleans up
    assert h100.driver.rm.clients == {}
    rm.arena.close()


def test_os_event_needs_a_device_of_this_client(h100):
    rm = RM.open(h100.os)
    device, _ = _device(rm)
    event_fd = h100.os.eventfd()
    rm.alloc_os_event(device, event_fd)
    ghost = type(device)(0xCAF0FFFF, cl.NV01_DEVICE_0, None)
    with pytest.raises(RMError) as caught:
        rm.alloc_os_event(ghost, event_fd)
    assert caught.value.status_name == "NV_ERR_OBJECT_NOT_FOUND"
    h100.os.close(event_fd)
    rm.close()
