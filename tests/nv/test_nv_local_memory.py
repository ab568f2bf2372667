"""Local memory and the stack as nvcc's SASS expects them: the GR info the RM gives at bring-up
(NV2080_CTRL_CMD_GR_GET_INFO with its embedded list, and the RM's refusals), the per-thread size in
the QMD's SHADER_LOCAL_MEMORY_HIGH_SIZE, the stack top in constant bank 0 at 0x28, the buffer sized
per TPC (SET_SHADER_LOCAL_MEMORY_NON_THROTTLED_A/B/C), and the mock GPU refusing each of the driver's
former choices (QMD high size 0, no stack top, the whole buffer given as the per-TPC size, no buffer)
with an MMU fault that names what was wrong."""
from __future__ import annotations

import importlib
import struct

import numpy as np
import pytest

from autogen.nv.r535 import classes as cl
from autogen.nv.r535 import ctrl
from autogen.nv.r535 import status as st
from autogen.runtime import Struct
from compute import device as compute_device
from compute.device import Device
from compute.nv import compiler
from drivers.nv import abi as nv_abi
from drivers.nv import qmd
from drivers.nv.device import GR_INFO_INDICES, GRInfo, NVDevice
from drivers.nv.errors import RMError
from drivers.nv.gpfifo import ChannelError
from mockgpu.nv import gpu as nvgpu
from mockgpu.nv.gpus import GPUS
from nv_reference import private_array_reference
from tools import mock_machines

FAULT = "ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT"


@pytest.fixture(autouse=True)
def _nv_factory():
    compute_device.register_mock_factory(mock_machines.nvidia_compute, kind="nv")
    yield
    compute_device.register_mock_factory(None, kind="nv")


def _load(dev: Device, library: str, name: str):
    return dev.load(compiler.PREBUILT_DIR / f"{library}.fatbin", name)


def _vector_add_args(dev: Device, n: int = 256):
    buffers = [dev.allocate(4 * n) for _ in range(3)]
    buffers[0].copyin(np.ones(n, dtype=np.float32))
    buffers[1].copyin(np.full(n, 2, dtype=np.float32))
    return (*buffers, n)


def _close_faulted(dev: Device) -> None:
    dev.closed = True
    dev.backend.close()


def _engine_state(dev: Device) -> dict:
    """The compute channel's last value of each method (what the mock engine was told)."""
    gpu = dev.backend.machine.driver.gpu_model
    compute = [state for state in gpu.channels.values() if state.engine_class in nvgpu._COMPUTE_CLASSES]
    return compute[0].state


# -- sizes --------------------------------------------------------------------------------------------


def test_per_thread_bytes_are_the_stack_plus_the_reserve_32_byte_granular():
    assert qmd.local_bytes_per_thread(0) == 0x240
    assert qmd.local_bytes_per_thread(256) == 0x340  # private_array's 256-byte frame on the stack
    assert qmd.local_bytes_per_thread(1) == 0x260
    assert qmd.STACK_TOP == (16 << 20) - qmd.LOCAL_RESERVE


def test_per_tpc_and_buffer_sizes_follow_the_peers_rule():
    h100 = GRInfo(max_warps_per_sm=64, gpcs=8, tpcs_per_gpc=9, sms_per_tpc=2)
    # round_up(round_up(0x240 * 32, 0x200) * 64 * 2, 0x8000), then 72 slices rounded to 0x20000
    assert h100.local_bytes_per_tpc(0x240) == 0x240000
    assert h100.local_buffer_bytes(0x240000) == 72 * 0x240000
    ad102 = GRInfo(max_warps_per_sm=48, gpcs=12, tpcs_per_gpc=6, sms_per_tpc=2)
    assert ad102.local_bytes_per_tpc(0x260) == 0x1C8000  # 0x4c00 per warp x 96, rounded to 0x8000
    assert ad102.local_buffer_bytes(0x8000) == 0x240000  # 72 x 0x8000 is already 0x20000-granular


# -- the GR info query ----------------------------------------------------------------------------------


@pytest.mark.parametrize("gpu", sorted(GPUS))
def test_bring_up_reads_the_gr_info_of_the_chip(nv_machine, gpu):
    machine = nv_machine(gpu)
    device = NVDevice.open(machine.os)
    try:
        identity = GPUS[gpu]
        assert device.gr_info == GRInfo(identity.max_warps_per_sm, identity.gpcs, identity.tpcs_per_gpc,
                                        identity.sms_per_tpc)
    finally:
        device.close(strict=True)


def test_the_gr_info_control_and_its_structs_are_the_same_in_every_branch():
    names = ["NV2080_CTRL_CMD_GR_GET_INFO", *(f"NV2080_CTRL_GR_INFO_INDEX_{suffix}" for suffix in (
        "MAX_WARPS_PER_SM", "LITTER_NUM_GPCS", "LITTER_NUM_TPC_PER_GPC", "LITTER_NUM_SM_PER_TPC"))]
    for branch in nv_abi.SUPPORTED_BRANCHES:
        module = nv_abi.for_branch(branch).ctrl
        assert [getattr(module, name) for name in names] == [getattr(ctrl, name) for name in names]
        for struct_name in ("NV2080_CTRL_GR_GET_INFO_PARAMS", "NV2080_CTRL_GR_INFO",
                            "NV2080_CTRL_GR_ROUTE_INFO"):
            assert _shape(getattr(module, struct_name)) == _shape(getattr(ctrl, struct_name)), branch
        # the list's maximum grows with the branch (53 in r535): every index asked stays below it
        assert max(GR_INFO_INDICES.values()) < module.NV2080_CTRL_GR_INFO_MAX_SIZE


def _shape(struct_type) -> tuple:
    """A struct's size and fields (name, offset, the field type's name and size), whatever module."""
    fields = tuple((name, offset, getattr(kind, "__name__", repr(kind)), getattr(kind, "SIZE", None))
                   for name, offset, kind in struct_type.LAYOUT)
    return struct_type.SIZE, fields


def _gr_query(device: NVDevice, indices, *, count=None, pointer=None, params_type=None):
    """NV2080_CTRL_CMD_GR_GET_INFO with `indices` in the arena; (RMError or None, the list after)."""
    rm = device.rm
    entry = rm.abi.ctrl.NV2080_CTRL_GR_INFO
    request = b"".join(bytes(entry(index=index, data=0xEEEE)) for index in indices)
    address = rm.arena.place_embedded(request) if request else 0
    params_type = params_type or rm.abi.ctrl.NV2080_CTRL_GR_GET_INFO_PARAMS
    params = params_type(grInfoListSize=len(indices) if count is None else count,
                         grInfoList=address if pointer is None else pointer)
    error = None
    try:
        rm.control(device.subdevice, ctrl.NV2080_CTRL_CMD_GR_GET_INFO, params)
    except RMError as caught:
        error = caught
    answer = rm.arena.read_embedded(len(request))
    records = [entry.from_bytes(answer[i * entry.SIZE:(i + 1) * entry.SIZE])
               for i in range(len(indices))]
    return error, [(record.index, record.data) for record in records]


def test_the_mock_rm_refuses_what_the_rm_refuses(nv_machine):
    device = NVDevice.open(nv_machine("h100").os)
    warps = ctrl.NV2080_CTRL_GR_INFO_INDEX_MAX_WARPS_PER_SM
    most = ctrl.NV2080_CTRL_GR_INFO_MAX_SIZE  # r535: 53
    try:
        error, records = _gr_query(device, [warps])
        assert error is None and records == [(warps, 64)]
        # an index past NV2080_CTRL_GR_INFO_MAX_SIZE: _kgraphicsCtrlCmdGrGetInfoV2, nothing copied out
        error, records = _gr_query(device, [warps, most])
        assert error.status == st.NV_ERR_INVALID_ARGUMENT
        assert records == [(warps, 0xEEEE), (most, 0xEEEE)]
        # a pointer the kernel cannot read: os_memcpy_from_user fails
        error, _ = _gr_query(device, [], count=1, pointer=0xDEAD_0000)
        assert error.status == st.NV_ERR_INVALID_ADDRESS
        # a size without a pointer, and a pointer without a size: rmapiParamsAcquire
        error, _ = _gr_query(device, [], count=4, pointer=0)
        assert error.status == st.NV_ERR_INVALID_ARGUMENT
        error, _ = _gr_query(device, [warps], count=0)
        assert error.status == st.NV_ERR_INVALID_ARGUMENT
        # neither: the handler's NULL list check
        error, _ = _gr_query(device, [], count=0, pointer=0)
        assert error.status == st.NV_ERR_INVALID_ARGUMENT
        # more than RMAPI_PARAM_COPY_MAX_PARAMS_SIZE (1 MiB) of list
        anywhere = device.rm.arena.place_embedded(b"")
        error, _ = _gr_query(device, [], count=(1 << 20) // 8 + 1, pointer=anywhere)
        assert error.status == st.NV_ERR_INVALID_ARGUMENT
        # past the maximum the control answers the first NV2080_CTRL_GR_INFO_MAX_SIZE entries and
        # copies the rest back as it came (subdeviceCtrlCmdKGrGetInfo: NV_MIN of the two sizes)
        error, records = _gr_query(device, [warps] * most + [warps, warps])
        assert error is None
        assert records[most - 1] == (warps, 64) and records[most:] == [(warps, 0xEEEE)] * 2
        # another parameter size: embedded_param_copy.c CHECK_PARAMS_OR_RETURN, before the lookup
        whole = ctrl.NV2080_CTRL_GR_GET_INFO_PARAMS
        short = type("Short", (Struct,), {"SIZE": 24, "ALIGN": whole.ALIGN, "LAYOUT": whole.LAYOUT[:2]})
        error, _ = _gr_query(device, [warps], params_type=short)
        assert error.status == st.NV_ERR_INVALID_ARGUMENT
        # on the device (NV01_DEVICE_0) the NV2080 command is not a method
        params = ctrl.NV2080_CTRL_GR_GET_INFO_PARAMS(grInfoListSize=1,
                                                     grInfoList=device.rm.arena.place_embedded(bytes(8)))
        with pytest.raises(RMError) as caught:
            device.rm.control(device.device, ctrl.NV2080_CTRL_CMD_GR_GET_INFO, params)
        assert caught.value.status == st.NV_ERR_NOT_SUPPORTED
    finally:
        device.close(strict=True)


@pytest.mark.parametrize(("branch", "accepted"), [("535", False), ("590", True)])
def test_the_list_maximum_is_the_branchs(nv_machine, branch, accepted):
    device = NVDevice.open(nv_machine("h200", version=nv_abi.RELEASES[branch]).os)
    try:
        index = 54  # past r535's 53 entries, inside r590's 59
        ours = importlib.import_module(f"autogen.nv.r{branch}.ctrl").NV2080_CTRL_GR_INFO_MAX_SIZE
        assert (index < ours) == accepted
        error, _ = _gr_query(device, [index])
        assert (error is None) == accepted
    finally:
        device.close()


# -- what the driver programs ------------------------------------------------------------------------


@pytest.mark.parametrize("gpu", ["h100", "a100"])
def test_private_array_runs_with_its_stack_in_the_high_region(gpu):
    with Device(f"mock:nv:{gpu}") as dev:
        built = []
        program = _load(dev, "private_array", "private_array")
        make = program.impl.qmd
        program.impl.qmd = lambda *a: built.append(make(*a)) or built[-1]
        rng = np.random.default_rng(7)
        inputs = rng.integers(0, 2**32, 300, dtype=np.uint32)
        source = dev.allocate(4 * 300)
        source.copyin(inputs)
        outputs = dev.allocate(4 * 300)
        program(source, outputs, 300, global_size=300, local_size=128, wait=True)
        np.testing.assert_array_equal(np.frombuffer(outputs.copyout(1200), dtype=np.uint32),
                                      private_array_reference(inputs))
        layout = qmd.layout_for(dev.backend.nv.generation.compute_class)
        assert qmd.field(built[0], "SHADER_LOCAL_MEMORY_HIGH_SIZE", layout) == 256 + 0x240
        assert qmd.field(built[0], "SHADER_LOCAL_MEMORY_LOW_SIZE", layout) == 0
        bank = program.impl.constant0(bytes(program.impl.kernel.param_size), (300, 1, 1), (128, 1, 1))
        assert struct.unpack_from("<Q", bank, qmd.STACK_POINTER_OFFSET)[0] == 0xFFFDC0
        gr_info = dev.backend.nv.gr_info
        per_tpc = gr_info.local_bytes_per_tpc(0x340)
        state = _engine_state(dev)
        assert (state[cl.NVC6C0_SET_SHADER_LOCAL_MEMORY_NON_THROTTLED_A] << 32
                | state[cl.NVC6C0_SET_SHADER_LOCAL_MEMORY_NON_THROTTLED_B]) == per_tpc
        assert state[cl.NVC6C0_SET_SHADER_LOCAL_MEMORY_NON_THROTTLED_C] == 0xFF
        assert dev.backend.local_memory.size == gr_info.local_buffer_bytes(per_tpc)


def test_the_buffer_grows_for_a_bigger_stack_and_the_old_one_stays():
    with Device("mock:nv") as dev:
        small = _load(dev, "vector_add", "vector_add_f32")
        first = dev.backend.local_memory
        assert dev.backend.local_per_thread == 0x240
        args = _vector_add_args(dev)
        small(*args, global_size=256, local_size=128, wait=True)
        _load(dev, "private_array", "private_array")
        assert dev.backend.local_per_thread == 0x340 and dev.backend.local_memory is not first
        assert first in dev.backend.nv.memories  # work submitted before may still use it
        small(*args, global_size=256, local_size=128, wait=True)  # the grown buffer serves it too
        np.testing.assert_array_equal(np.frombuffer(args[2].copyout(1024), dtype=np.float32), 3.0)
        state = _engine_state(dev)
        base = state[cl.NVC6C0_SET_SHADER_LOCAL_MEMORY_A] << 32 | state[cl.NVC6C0_SET_SHADER_LOCAL_MEMORY_B]
        assert base == dev.backend.local_memory.gpu_va


# -- the mock refuses the former choices --------------------------------------------------------------


def _fault_of(dev: Device, program, args, **launch) -> str:
    with pytest.raises(ChannelError, match=FAULT) as caught:
        program(*args, wait=True, **launch)
    assert caught.value.code == nvgpu.ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT
    return dev.backend.machine.driver.gpu_model.errors[0][1]


def _with_local_sizes(data: bytes, layout, high: int, low: int) -> bytes:
    patched = bytearray(data)
    qmd._put(patched, "SHADER_LOCAL_MEMORY_HIGH_SIZE", high, layout)
    qmd._put(patched, "SHADER_LOCAL_MEMORY_LOW_SIZE", low, layout)
    return bytes(patched)


@pytest.mark.parametrize("gpu", ["h100", "rtx4090"])
def test_a_qmd_without_the_high_size_faults(gpu):
    """The former QMD: the frame in LOW_SIZE, HIGH_SIZE 0 (both QMD versions)."""
    dev = Device(f"mock:nv:{gpu}", timeout_s=2.0)
    try:
        program = _load(dev, "vector_add", "vector_add_f32")
        layout = qmd.layout_for(dev.backend.nv.generation.compute_class)
        make = program.impl.qmd
        program.impl.qmd = lambda *a: _with_local_sizes(make(*a), layout, 0, 0)
        why = _fault_of(dev, program, _vector_add_args(dev), global_size=256, local_size=128)
        assert "SHADER_LOCAL_MEMORY_HIGH_SIZE is 0" in why and "needs 576" in why
    finally:
        _close_faulted(dev)


def test_a_high_size_below_the_stack_faults():
    dev = Device("mock:nv", timeout_s=2.0)
    try:
        program = _load(dev, "private_array", "private_array")
        layout = qmd.layout_for(dev.backend.nv.generation.compute_class)
        make = program.impl.qmd
        program.impl.qmd = lambda *a: _with_local_sizes(make(*a), layout, 0x240, 256)  # frame in LOW
        args = (dev.allocate(4 * 64), dev.allocate(4 * 64), 64)
        why = _fault_of(dev, program, args, global_size=64, local_size=64)
        assert "EIATTR_MIN_STACK_SIZE 256" in why and "needs 832" in why
    finally:
        _close_faulted(dev)


def test_a_bank_without_the_stack_top_faults():
    """The former constant bank 0: nothing at 0x28."""
    dev = Device("mock:nv", timeout_s=2.0)
    try:
        program = _load(dev, "vector_add", "vector_add_f32")
        check = program.impl._check_layout

        def without_stack_top(global_size, local_size):
            groups, template, bank = check(global_size, local_size)
            bank = bytearray(bank)
            bank[qmd.STACK_POINTER_OFFSET:qmd.STACK_POINTER_OFFSET + 8] = bytes(8)
            return groups, template, bytes(bank)
        program.impl._check_layout = without_stack_top
        why = _fault_of(dev, program, _vector_add_args(dev), global_size=256, local_size=128)
        assert "constant bank 0 at 0x28 is 0x0, not the stack top 0xfffdc0" in why
    finally:
        _close_faulted(dev)


def test_the_whole_buffer_as_the_per_tpc_size_faults():
    """The former SET_SHADER_LOCAL_MEMORY_NON_THROTTLED_A/B: the whole buffer's size, so TPC n's slice
    starts n buffer sizes in, past the buffer."""
    dev = Device("mock:nv", timeout_s=2.0)
    try:
        program = _load(dev, "vector_add", "vector_add_f32")
        backend = dev.backend
        backend.compute.local_memory(backend.local_memory.gpu_va, backend.local_memory.size)
        why = _fault_of(dev, program, _vector_add_args(dev), global_size=256, local_size=128)
        assert "72 TPC slices" in why and "is not mapped" in why
    finally:
        _close_faulted(dev)


def test_a_per_tpc_size_too_small_for_the_high_size_faults():
    dev = Device("mock:nv:a100", timeout_s=2.0)
    try:
        program = _load(dev, "vector_add", "vector_add_f32")
        backend = dev.backend
        per_tpc = backend.local[1]
        backend.compute.local_memory(backend.local_memory.gpu_va, per_tpc - 0x8000)
        why = _fault_of(dev, program, _vector_add_args(dev), global_size=256, local_size=128)
        assert f"need {per_tpc:#x}" in why and "64 warps x 2 SMs" in why
    finally:
        _close_faulted(dev)


def test_a_launch_without_a_local_memory_buffer_faults(monkeypatch):
    """The former driver set no buffer up for a kernel without a frame."""
    dev = Device("mock:nv", timeout_s=2.0)
    try:
        monkeypatch.setattr(dev.backend, "ensure_local_memory", lambda per_thread: None)
        program = _load(dev, "vector_add", "vector_add_f32")
        why = _fault_of(dev, program, _vector_add_args(dev), global_size=256, local_size=128)
        assert "no local memory buffer" in why
    finally:
        _close_faulted(dev)


# the first instruction of each prebuilt kernel, as 64-bit words: sm_80/sm_89 `MOV R1, c[0x0][0x28]`
# (0x00000a0000017a02) or `IMAD.MOV.U32 R1, RZ, RZ, c[0x0][0x28]` (0x00000a00ff017624), sm_90
# `LDC R1, c[0x0][0x28]` (0x00000a00ff017b82): R1 in bits 23:16, the bank offset in words (0x28 / 4)
# from bit 40 (encodings observed in nvcc 13.0's output, not from a published ISA document)
STACK_POINTER_LOADS = {0x00000A0000017A02, 0x00000A00FF017624, 0x00000A00FF017B82}


def test_every_prebuilt_kernel_starts_by_loading_its_stack_pointer_from_bank_0_at_0x28():
    from drivers.nv import cubin, fatbin

    seen = 0
    for path in sorted(compiler.PREBUILT_DIR.glob("*.fatbin")):
        binary = fatbin.parse(path.read_bytes())
        for arch in binary.sass_archs:
            for name, kernel in cubin.parse(binary.cubin(arch)).kernels.items():
                first = int.from_bytes(kernel.code[:8], "little")
                assert first in STACK_POINTER_LOADS, (path.name, arch, name, hex(first))
                assert (first >> 16) & 0xFF == 1 and (first >> 40) & 0x3FFF == qmd.STACK_POINTER_OFFSET // 4
                seen += 1
    assert seen >= 30


def test_the_program_image_keeps_room_for_the_instruction_prefetcher():
    """At least NVK's 2 KiB (tinygrad's 4 KiB) past the last instruction belong to the program's
    allocation (it was 256 bytes)."""
    with Device("mock:nv") as dev:
        program = _load(dev, "vector_add", "vector_add_f32").impl
        end_of_code = program.code_address + len(program.kernel.code)
        assert program.image.gpu_address + program.image.size - end_of_code >= 0x1000
