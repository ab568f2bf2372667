"""Memory through the RM: VRAM and system memory objects, CPU mappings (NV_ESC_RM_MAP_MEMORY and
mmap of a /dev/nvidiaN fd) whose writes land in the simulated memory, and the mapping checks."""
from __future__ import annotations

import errno

import pytest

from autogen.nv.r535 import classes as cl
from autogen.nv.r535 import nvos
from autogen.nv.r535 import status as nv_status
from drivers.nv import device as device_va
from drivers.nv.device import NVDevice
from drivers.nv.errors import RMError
from drivers.nv.rm import RM
from hal.errors import DeviceNotFound, InvalidArgument, OutOfMemory


@pytest.mark.parametrize("location", ["vram", "sysmem"])
def test_alloc_map_write_read_back(h100, location):
    device = NVDevice.open(h100.os)
    memory = device.alloc_memory(0x3000, location=location)
    memory.cpu.region.write(0x10, b"gpuhal")
    memory.cpu.region.write32(0x2000, 0xC0FFEE)
    kernel_object = h100.driver.rm.clients[device.rm.root.handle].objects[memory.obj.handle]
    assert kernel_object.location == location
    assert bytes(kernel_object.backing[0x10:0x16]) == b"gpuhal"
    assert memory.cpu.region.read32(0x2000) == 0xC0FFEE
    # what the CPU wrote is what the GPU sees at the UVM-mapped virtual address
    behind, offset = h100.driver.uvm_spaces[0].gpu_translate(memory.gpu_va + 0x2000)
    assert behind is kernel_object
    assert int.from_bytes(behind.backing[offset:offset + 4], "little") == 0xC0FFEE
    device.free_memory(memory)
    device.close(strict=True)
    assert h100.driver.rm.clients == {} and h100.os.open_fds == []


def test_unfreed_memory_is_a_leak_at_close(h100):
    from drivers.nv.rm import ResourceLeak

    device = NVDevice.open(h100.os)
    device.alloc_memory(0x1000)
    with pytest.raises(ResourceLeak):
        device.close(strict=True)
    assert h100.driver.rm.clients == {} and h100.os.open_fds == []


def test_vram_exhaustion_is_out_of_memory(nv_machine):
    machine = nv_machine("rtx4090")
    device = NVDevice.open(machine.os)
    with pytest.raises(RMError) as caught:
        device.alloc_memory(32 << 30)
    assert caught.value.status_name == "NV_ERR_NO_MEMORY"
    device.close(strict=True)


def test_bad_sizes_are_refused_before_the_rm(h100):
    device = NVDevice.open(h100.os)
    with pytest.raises(InvalidArgument):
        device.alloc_memory(0)
    with pytest.raises(InvalidArgument):
        device.alloc_memory(0x1000, location="peer")
    device.close(strict=True)


def _vram(rm: RM, size: int):
    device = rm.alloc(rm.root, cl.NV01_DEVICE_0, cl.NV0080_ALLOC_PARAMETERS(hClientShare=rm.root.handle))
    memory = rm.alloc(device, cl.NV01_MEMORY_LOCAL_USER, nvos.NV_MEMORY_ALLOCATION_PARAMS(
        owner=rm.root.handle, size=size))
    return device, memory


def test_map_past_the_allocation_is_invalid_limit(h100):
    rm = RM.open(h100.os)
    device, memory = _vram(rm, 0x2000)
    with pytest.raises(RMError) as caught:
        rm.map_to_cpu(device, memory, 0x3000, 0)
    assert caught.value.status_name == "NV_ERR_INVALID_LIMIT"
    with pytest.raises(RMError) as caught:
        rm.map_to_cpu(device, memory, 0x1000, 0, offset=0x2000)
    assert caught.value.status_name == "NV_ERR_INVALID_BASE"
    rm.close()
    assert h100.os.open_fds == []


def test_mmap_needs_a_prepared_fd_of_the_right_size(h100):
    rm = RM.open(h100.os)
    device, memory = _vram(rm, 0x2000)
    fd = rm.open_device(0)
    # nv-mmap.c nvidia_mmap_helper: no mapping context on this fd
    with pytest.raises(OSError) as caught:
        h100.os.mmap(fd, 0x2000, 0)
    assert caught.value.errno == errno.EINVAL
    mapping = rm.map_to_cpu(device, memory, 0x2000, 0)
    with pytest.raises(OSError) as caught:
        h100.os.mmap(mapping.fd, 0x1000, 0)
    assert caught.value.errno == errno.ENXIO
    h100.os.close(fd)
    rm.close()


def test_opening_a_gpu_that_does_not_exist(h100):
    with pytest.raises(DeviceNotFound):
        NVDevice.open(h100.os, index=1)
    assert h100.driver.rm.clients == {} and h100.os.open_fds == []


def _map_block(rm: RM, device, memory, fd: int, size: int):
    params = nvos.NVOS33_PARAMETERS(hClient=rm.root.handle, hDevice=device.handle, hMemory=memory.handle,
                                    length=size)
    return nvos.nv_ioctl_nvos33_parameters_with_fd(params=params, fd=fd)


def test_system_memory_maps_through_the_control_node_and_vram_through_the_gpu_node(h100):
    from autogen.nv.r535 import escape as esc

    rm = RM.open(h100.os)
    device, vram = _vram(rm, 0x2000)
    sysmem = rm.alloc(device, cl.NV01_MEMORY_SYSTEM, nvos.NV_MEMORY_ALLOCATION_PARAMS(
        owner=rm.root.handle, size=0x2000))
    gpu_fd = rm.open_device(0)
    ctl_fd = rm.open_control()
    # nv-usermap.c nv_add_mapping_context_to_file: the fd must be the node that maps that memory
    wrong = _map_block(rm, device, sysmem, gpu_fd, 0x2000)
    rm.escape(rm.ctl_fd, esc.NV_ESC_RM_MAP_MEMORY, wrong, "sysmem through the GPU node")
    assert wrong.params.status == nv_status.NV_ERR_INVALID_ARGUMENT
    right = _map_block(rm, device, sysmem, ctl_fd, 0x2000)
    rm.escape(rm.ctl_fd, esc.NV_ESC_RM_MAP_MEMORY, right, "sysmem through the control node")
    assert right.params.status == nv_status.NV_OK
    region = h100.os.mmap(ctl_fd, 0x2000, 0)
    region.write32(0, 7)
    assert h100.driver.rm.clients[rm.root.handle].objects[sysmem.handle].backing[0] == 7
    # one mapping context per fd
    again = _map_block(rm, device, vram, gpu_fd, 0x2000)
    rm.escape(rm.ctl_fd, esc.NV_ESC_RM_MAP_MEMORY, again, "VRAM through the GPU node")
    assert again.params.status == nv_status.NV_OK
    twice = _map_block(rm, device, vram, gpu_fd, 0x2000)
    rm.escape(rm.ctl_fd, esc.NV_ESC_RM_MAP_MEMORY, twice, "the same fd again")
    assert twice.params.status == nv_status.NV_ERR_STATE_IN_USE
    h100.os.munmap(region)
    for fd in (gpu_fd, ctl_fd):
        h100.os.close(fd)
    rm.close()


def test_freed_memory_gives_its_gpu_addresses_back(h100):
    # a bump allocator would hand out ever higher addresses and cross 1 << 40, past what a GP entry
    # and SEM_ADDR_HI address (drivers.nv.device VA_END)
    device = NVDevice.open(h100.os)
    try:
        first = device.alloc_memory(64 << 20, location="sysmem", cpu_access=False)
        address = first.gpu_va
        device.free_memory(first)
        for _ in range(3):
            again = device.alloc_memory(64 << 20, location="sysmem", cpu_access=False)
            assert again.gpu_va == address
            device.free_memory(again)
        assert device_va.VA_START <= address < device_va.VA_END
    finally:
        device.close(strict=True)


def test_an_exhausted_gpu_va_window_is_out_of_memory_and_frees_nothing_twice(h100, monkeypatch):
    # bring-up takes four 2 MiB pages (two notifiers, two GPFIFO areas); four more stay
    monkeypatch.setattr(device_va, "VA_END", device_va.VA_START + (16 << 20))
    device = NVDevice.open(h100.os)
    try:
        held = device.alloc_memory(6 << 20, location="sysmem", cpu_access=False)
        objects = len(device.rm.objects)
        with pytest.raises(OutOfMemory, match="virtual addresses"):
            device.alloc_memory(4 << 20, location="sysmem", cpu_access=False)
        assert len(device.rm.objects) == objects  # refused before the RM allocated anything
        device.free_memory(held)
        device.free_memory(device.alloc_memory(8 << 20, location="sysmem", cpu_access=False))
    finally:
        device.close(strict=True)
