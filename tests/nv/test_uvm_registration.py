"""UVM on the mock: initialisation, GPU and VA-space registration, external ranges and mappings,
with the statuses nvidia-uvm returns for misuse."""
from __future__ import annotations

import pytest

from autogen.nv.r535 import status as nv_status
from autogen.nv.r535 import uvm as uvm_abi
from drivers.nv.device import NVDevice
from drivers.nv.errors import RMError
from drivers.nv.uvm import UVM
from hal.os import O_RDWR


def test_commands_before_initialize_are_illegal(h100):
    fd = h100.os.open("/dev/nvidia-uvm", O_RDWR)
    params = uvm_abi.UVM_CREATE_EXTERNAL_RANGE_PARAMS(base=1 << 40, length=1 << 21)
    assert h100.os.ioctl(fd, uvm_abi.UVM_CREATE_EXTERNAL_RANGE, params.buffer) == 0
    assert params.rmStatus == nv_status.NV_ERR_ILLEGAL_ACTION
    h100.os.close(fd)


def test_device_bring_up_registers_the_gpu_and_its_va_space(h100):
    device = NVDevice.open(h100.os)
    space = h100.driver.uvm_spaces[0]
    assert space.gpus == {h100.driver.rm.uuid}
    assert space.gpu_va_spaces[device.uuid] == (device.rm.root.handle, device.vaspace.handle)
    device.close(strict=True)
    assert h100.driver.rm.clients == {}


def test_registration_misuse(h100):
    device = NVDevice.open(h100.os)
    with pytest.raises(RMError) as caught:
        device.uvm.register_gpu(device.uuid)
    assert caught.value.status_name == "NV_ERR_INVALID_DEVICE"
    other = UVM.open(h100.os)
    with pytest.raises(RMError) as caught:
        other.register_gpu(bytes(16))
    assert caught.value.status_name == "NV_ERR_GPU_UUID_NOT_FOUND"
    with pytest.raises(RMError) as caught:
        other.register_gpu_va_space(device.uuid, device.rm.ctl_fd, device.rm.root.handle,
                                    device.vaspace.handle)
    assert caught.value.status_name == "NV_ERR_INVALID_DEVICE"
    other.close()
    device.close(strict=True)


def test_external_ranges(h100):
    device = NVDevice.open(h100.os)
    space = device.uvm
    with pytest.raises(RMError) as caught:
        space.create_external_range((1 << 44) + 0x800, 1 << 21)
    assert caught.value.status_name == "NV_ERR_INVALID_ADDRESS"
    space.create_external_range(1 << 44, 1 << 21)
    with pytest.raises(RMError) as caught:
        space.create_external_range((1 << 44) + 0x1000, 1 << 21)
    assert caught.value.status_name == "NV_ERR_UVM_ADDRESS_IN_USE"
    memory = device.alloc_memory(1 << 21, cpu_access=False)
    with pytest.raises(RMError) as caught:
        space.map_external_allocation((1 << 45), 1 << 21, device.uuid, device.rm.ctl_fd,
                                      device.rm.root.handle, memory.obj.handle)
    assert caught.value.status_name == "NV_ERR_INVALID_ADDRESS"
    space.map_external_allocation(1 << 44, 1 << 21, device.uuid, device.rm.ctl_fd, device.rm.root.handle,
                                  memory.obj.handle)
    assert h100.driver.uvm_spaces[0].gpu_translate((1 << 44) + 8)[1] == 8
    space.free(1 << 44, 1 << 21)
    assert h100.driver.uvm_spaces[0].gpu_translate((1 << 44) + 8) is None
    device.free_memory(memory)
    device.close(strict=True)


@pytest.mark.parametrize("gpu,generation", [("h100", "Hopper"), ("h200", "Hopper"), ("a100", "Ampere GA100"),
                                            ("rtx3090", "Ampere GA10x"), ("rtx4090", "Ada")])
def test_each_generation_brings_up_its_classes(nv_machine, gpu, generation):
    machine = nv_machine(gpu)
    device = NVDevice.open(machine.os)
    assert device.generation.name == generation
    kernel = machine.driver.rm.clients[device.rm.root.handle]
    assert kernel.objects[device.compute.engine.handle].cls == machine.driver.gpu.compute_class
    assert kernel.objects[device.copy.engine.handle].cls == machine.driver.gpu.copy_class
    assert (device.rm.root.handle, device.channel_group.handle) in machine.driver.rm.scheduled_groups
    assert device.compute.work_submit_token != device.copy.work_submit_token
    device.close(strict=True)
    assert machine.driver.rm.clients == {} and machine.os.open_fds == []


def test_channels_are_registered_with_uvm_below_the_generations_limit(nv_machine):
    machine = nv_machine("rtx4090")
    device = NVDevice.open(machine.os)
    space = machine.driver.uvm_spaces[0]
    root = device.rm.root.handle
    assert space.channels[(root, device.compute.obj.handle)][0] == device.compute.uvm_base
    # twice: NV_ERR_INVALID_CHANNEL; a non-channel: NV_ERR_INVALID_OBJECT_HANDLE
    with pytest.raises(RMError) as caught:
        device.uvm.register_channel(device.uuid, device.rm.ctl_fd, root, device.compute.obj.handle, 1 << 36,
                                    1 << 26)
    assert caught.value.status_name == "NV_ERR_INVALID_CHANNEL"
    with pytest.raises(RMError) as caught:
        device.uvm.register_channel(device.uuid, device.rm.ctl_fd, root, device.vaspace.handle, 1 << 36,
                                    1 << 26)
    assert caught.value.status_name == "NV_ERR_INVALID_OBJECT_HANDLE"
    # Ada's channel VA ends at 1 TiB (uvm_ada.c max_channel_va); an unregistered channel can go there
    device.uvm.unregister_channel(device.uuid, root, device.copy.obj.handle)
    device.uvm_channels.remove(device.copy.obj)
    with pytest.raises(RMError) as caught:
        device.uvm.register_channel(device.uuid, device.rm.ctl_fd, root, device.copy.obj.handle, 1 << 40,
                                    1 << 26)
    assert caught.value.status_name == "NV_ERR_OUT_OF_RANGE"
    with pytest.raises(RMError) as caught:
        device.uvm.register_channel(device.uuid, device.rm.ctl_fd, root, device.copy.obj.handle,
                                    device.compute.uvm_base, 1 << 26)
    assert caught.value.status_name == "NV_ERR_UVM_ADDRESS_IN_USE"
    with pytest.raises(RMError) as caught:
        device.uvm.unregister_channel(device.uuid, root, device.copy.obj.handle)
    assert caught.value.status_name == "NV_ERR_INVALID_CHANNEL"
    device.close(strict=True)
    assert space.channels == {} and machine.os.open_fds == []


def test_hopper_takes_channel_ranges_above_one_tib(h100):
    device = NVDevice.open(h100.os)
    root = device.rm.root.handle
    device.uvm.unregister_channel(device.uuid, root, device.copy.obj.handle)
    device.uvm_channels.remove(device.copy.obj)
    device.uvm.register_channel(device.uuid, device.rm.ctl_fd, root, device.copy.obj.handle, 1 << 41,
                                1 << 26)
    device.uvm_channels.append(device.copy.obj)
    device.close(strict=True)
