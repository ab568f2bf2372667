"""drivers.qcom.kgsl and drivers.qcom.device on the mock KGSL driver: identity, contexts, GPU objects,
user memory, and the typed errors each ioctl failure becomes."""
from __future__ import annotations

import errno

import pytest

from autogen.qcom import kgsl as uapi
from drivers.qcom import kgsl
from drivers.qcom.cp import CommandStream
from drivers.qcom.device import COMPUTE_CONTEXT_FLAGS, KGSLDevice
from drivers.qcom.submit import Submitter
from hal.errors import DeviceNotFound, InvalidArgument
from hal.os import PAGE_SIZE
from tools.mock_machines import qcom


@pytest.fixture
def mock():
    machine = qcom()
    yield machine
    machine.close()


@pytest.fixture
def device(mock):
    dev = KGSLDevice(mock.os)
    yield dev
    dev.close()


def test_device_info_reports_the_adreno_630(device):
    assert device.info.gpu_id == 630
    assert device.info.chip_id >> 24 == 6
    assert device.info.gmem_size == 1 << 20
    assert device.info.model == "Adreno630v2"
    assert "Adreno 630" in device.info.name


def test_missing_device_file_says_kgsl_is_absent():
    from mockgpu import Machine

    with pytest.raises(DeviceNotFound, match="KGSL"):
        KGSLDevice(Machine().os)


def test_contexts_get_ids_and_compute_flags(mock, device):
    first = device.create_context()
    second = device.create_context(priority=2, power_max=True)
    assert (first, second) == (1, 2)
    contexts = mock.driver.open_files[0].contexts
    assert contexts[first].flags & uapi.KGSL_CONTEXT_NO_GMEM_ALLOC
    assert contexts[first].flags & ~uapi.KGSL_CONTEXT_PRIORITY_MASK == COMPUTE_CONTEXT_FLAGS
    assert contexts[second].flags >> uapi.KGSL_CONTEXT_PRIORITY_SHIFT & 0xF == 2
    assert contexts[second].constraint == uapi.KGSL_CONSTRAINT_PWR_MAX
    device.destroy_context(first)
    assert first not in contexts


def test_destroying_an_unknown_context_names_the_ioctl_and_errno(device):
    with pytest.raises(kgsl.KGSLError) as info:
        kgsl.drawctxt_destroy(device.os, device.fd, 42)
    assert info.value.errno == errno.EINVAL
    assert "IOCTL_KGSL_DRAWCTXT_DESTROY" in str(info.value)
    assert "context 42" in str(info.value)


def test_priority_out_of_range_is_refused(device):
    with pytest.raises(InvalidArgument, match="priority"):
        device.create_context(priority=16)


def test_power_constraint_checks_level_and_context(device):
    context = device.create_context()
    with pytest.raises(kgsl.KGSLError) as info:
        kgsl.set_power_constraint(device.os, device.fd, device.scratch, context, 2)
    assert info.value.errno == errno.EINVAL
    with pytest.raises(kgsl.KGSLError):
        kgsl.set_power_constraint(device.os, device.fd, device.scratch, context + 7,
                                  uapi.KGSL_CONSTRAINT_PWR_MAX)


def test_property_with_the_wrong_size_is_einval(device):
    pointer = device.scratch.write(0, bytes(64))
    arg = uapi.kgsl_device_getproperty(type=uapi.KGSL_PROP_DEVICE_INFO, value=pointer, sizebytes=8)
    with pytest.raises(kgsl.KGSLError) as info:
        kgsl.ioctl(device.os, device.fd, uapi.IOCTL_KGSL_DEVICE_GETPROPERTY, arg.buffer,
                   "IOCTL_KGSL_DEVICE_GETPROPERTY")
    assert info.value.errno == errno.EINVAL


def test_property_into_unmapped_memory_is_efault(device):
    arg = uapi.kgsl_device_getproperty(type=uapi.KGSL_PROP_DEVICE_INFO, value=0x1000,
                                       sizebytes=uapi.kgsl_devinfo.SIZE)
    with pytest.raises(kgsl.KGSLError) as info:
        kgsl.ioctl(device.os, device.fd, uapi.IOCTL_KGSL_DEVICE_GETPROPERTY, arg.buffer,
                   "IOCTL_KGSL_DEVICE_GETPROPERTY")
    assert info.value.errno == errno.EFAULT


def test_gpu_objects_are_page_rounded_mapped_and_freed(mock, device):
    buffer = device.alloc(100)
    assert buffer.size == PAGE_SIZE
    assert buffer.gpuaddr % PAGE_SIZE == 0
    buffer.region.write(0, b"adreno")
    space = mock.driver.open_files[0].space
    assert space.read(buffer.gpuaddr, 6) == b"adreno"
    other = device.alloc(3 * PAGE_SIZE)
    assert other.gpuaddr >= buffer.gpuaddr + buffer.size
    device.free(buffer)
    with pytest.raises(kgsl.KGSLError) as info:
        kgsl.gpuobj_info(device.os, device.fd, buffer.id)
    assert info.value.errno == errno.EINVAL
    assert not space.contains(buffer.gpuaddr)
    with pytest.raises(InvalidArgument):
        device.free(buffer)


def test_zero_sized_object_is_refused_by_the_kernel(device):
    with pytest.raises(kgsl.KGSLError) as info:
        kgsl.gpuobj_alloc(device.os, device.fd, 0, 0)
    assert info.value.errno == errno.EINVAL
    assert "IOCTL_KGSL_GPUOBJ_ALLOC" in str(info.value)


def test_mmap_of_an_unknown_object_or_too_long_fails(device):
    buffer = device.alloc(PAGE_SIZE)
    with pytest.raises(OSError) as info:
        device.os.mmap(device.fd, PAGE_SIZE, 77 * PAGE_SIZE)
    assert info.value.errno == errno.EINVAL
    with pytest.raises(OSError) as info:
        device.os.mmap(device.fd, 2 * PAGE_SIZE, buffer.id * PAGE_SIZE)
    assert info.value.errno == errno.ERANGE


def test_pool_exhaustion_is_out_of_memory(mock, device):
    from hal.errors import OutOfMemory

    mock.driver.memory_limit = 4 * PAGE_SIZE
    device.alloc(3 * PAGE_SIZE)
    with pytest.raises(OutOfMemory, match="GPUOBJ_ALLOC"):
        device.alloc(2 * PAGE_SIZE)


def test_user_memory_is_reachable_by_the_gpu(device):
    host = device.os.alloc_pages(2 * PAGE_SIZE)
    try:
        host.region.write(0, bytes(range(256)) * 32)
        gpuaddr = device.map_user(host)
        target = device.alloc(2 * PAGE_SIZE)
        context = device.create_context()
        submitter = Submitter(device, context)
        submitter.wait(submitter.submit(CommandStream().memcpy(target.gpuaddr, gpuaddr,
                                                               2 * PAGE_SIZE // 4)), 1.0)
        assert target.region.read(0, 2 * PAGE_SIZE) == bytes(range(256)) * 32
        device.unmap_user(gpuaddr)
        with pytest.raises(kgsl.KGSLError) as info:
            kgsl.sharedmem_free(device.os, device.fd, gpuaddr)
        assert info.value.errno == errno.EINVAL
    finally:
        device.os.free_locked(host)


def test_user_memory_must_be_whole_pages_of_mapped_memory(device):
    host = device.os.alloc_pages(PAGE_SIZE)
    try:
        with pytest.raises(kgsl.KGSLError) as info:
            kgsl.map_user_mem(device.os, device.fd, host.addr, 100)
        assert info.value.errno == errno.EINVAL
        with pytest.raises(kgsl.KGSLError) as info:
            kgsl.map_user_mem(device.os, device.fd, host.addr, 4 * PAGE_SIZE)
        assert info.value.errno == errno.EFAULT
    finally:
        device.os.free_locked(host)


def test_close_releases_everything(mock):
    dev = KGSLDevice(mock.os)
    dev.create_context()
    dev.alloc(PAGE_SIZE)
    opened = mock.driver.open_files[-1]
    dev.close()
    assert opened.closed or (not opened.contexts and not opened.objects)
    assert dev.fd is None
    dev.close()


class _InterruptedOS:
    """A seam whose first ioctl is interrupted by a signal."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def ioctl(self, fd, request, arg=None):
        self.calls += 1
        if self.calls <= self.failures:
            raise OSError(errno.EINTR, "interrupted")
        return 0


def test_eintr_is_retried_then_reported():
    os = _InterruptedOS(2)
    assert kgsl.ioctl(os, 3, 0, None, "IOCTL_X") == 0
    assert os.calls == 3
    with pytest.raises(kgsl.KGSLError, match="IOCTL_X failed: EINTR"):
        kgsl.ioctl(_InterruptedOS(100), 3, 0, None, "IOCTL_X")


def test_wait_of_zero_ms_is_refused(device):
    with pytest.raises(InvalidArgument, match="forever"):
        kgsl.wait_timestamp(device.os, device.fd, 1, 1, 0)


def test_a_failed_open_leaves_no_fd_behind(mock, monkeypatch):
    from mockgpu.qcom.kgsl import KGSLFile

    def broken(self, arg):
        raise OSError(errno.EIO, "property read failed")

    monkeypatch.setattr(KGSLFile, "__init__", _with_broken_handlers(KGSLFile.__init__, broken))
    before = list(mock.os.open_fds)
    with pytest.raises(kgsl.KGSLError, match="EIO"):
        KGSLDevice(mock.os)
    assert list(mock.os.open_fds) == before


def _with_broken_handlers(init, broken):
    def patched(self, driver, path):
        init(self, driver, path)
        self.handlers[uapi.IOCTL_KGSL_DEVICE_GETPROPERTY] = lambda arg: broken(self, arg)
    return patched
