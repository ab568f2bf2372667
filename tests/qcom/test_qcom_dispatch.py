"""Kernels on the mock Adreno 630 through compute.Device("qcom:0"): every library kernel against numpy
at random sizes, a vendor binary with its stated footprint, the dispatch stream the driver builds
(drivers/qcom/dispatch.py) as the mock CP sees it, and what the mock rejects as a context fault."""
from __future__ import annotations

import numpy as np
import pytest

from autogen.qcom import a6xx, pm4
from compute.device import Device
from compute.qcom.program import load_vendor
from drivers.qcom import kernels
from drivers.qcom.cp import CommandStream, pkt4_header
from drivers.qcom.dispatch import ComputeDispatch, emit_dispatch
from drivers.qcom.ir3.asm import assemble_program
from drivers.qcom.kgsl import ContextFaulted
from hal.errors import InvalidArgument, UnsupportedOperation
from tools.mock_machines import qcom


@pytest.fixture
def rig():
    machine = qcom()
    device = Device("qcom:0", os=machine.os, timeout_s=5.0)
    yield machine, device
    device.close()
    machine.close()


def upload(device, array: np.ndarray):
    buffer = device.allocate(max(array.nbytes, 4))
    buffer.copyin(array.tobytes())
    return buffer


def download(buffer, count: int, dtype) -> np.ndarray:
    return np.frombuffer(buffer.copyout(count * np.dtype(dtype).itemsize), dtype=dtype)


@pytest.mark.parametrize("seed", [1, 2])
def test_library_kernels_match_numpy(rig, seed):
    machine, device = rig
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 700))
    a = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    words = rng.integers(0, 2**32, n, dtype=np.uint32)

    out = device.allocate(4 * n)
    device.load(b"", "vector_add")(upload(device, a), upload(device, b), out, n, global_size=n,
                                   wait=True)
    np.testing.assert_array_equal(download(out, n, np.float32), a + b)

    y = upload(device, b)
    alpha = float(rng.standard_normal())
    device.load(b"", "saxpy")(upload(device, a), y, n, alpha, global_size=n, wait=True)
    # mad.f32: one rounding of alpha * x + y
    expected = (np.float64(np.float32(alpha)) * a.astype(np.float64) + b).astype(np.float32)
    np.testing.assert_array_equal(download(y, n, np.float32), expected)

    target = device.allocate(4 * n + 4)
    target.copyin(b"\xee" * (4 * n + 4))
    device.load(b"", "memset")(target, n, 0x12345678, global_size=n, wait=True)
    filled = download(target, n + 1, np.uint32)
    assert (filled[:n] == 0x12345678).all() and filled[n] == 0xEEEEEEEE

    copy = device.allocate(4 * n)
    device.load(b"", "copy")(upload(device, words), copy, n, global_size=n, wait=True)
    np.testing.assert_array_equal(download(copy, n, np.uint32), words)

    groups = int(rng.integers(1, 6))
    values = rng.integers(0, 2**20, 64 * groups, dtype=np.uint32)
    sums = device.allocate(4 * groups)
    device.load(b"", "reduce_sum")(upload(device, values), sums, global_size=64 * groups, wait=True)
    np.testing.assert_array_equal(download(sums, groups, np.uint32),
                                  values.reshape(groups, 64).sum(axis=1, dtype=np.uint32))
    assert machine.driver.cp.kernels_run == 5


def test_ir3_text_and_vendor_binary(rig):
    machine, device = rig
    n = 100
    a = np.arange(n, dtype=np.float32)
    out = device.allocate(4 * n)
    text = kernels.source("vector_add").encode()
    device.load(text, "mine")(upload(device, a), upload(device, a), out, n, global_size=n, wait=True)
    np.testing.assert_array_equal(download(out, n, np.float32), 2 * a)
    code = kernels.load("vector_add").code
    vendor = load_vendor(device, code, "vendor_add", max_reg=4, local_size=(64, 1, 1),
                         buffers=[0, 1, 2], consts={3: (0, 0, 0, 0)})
    out2 = device.allocate(4 * n)
    vendor(upload(device, a), upload(device, 3 * a), out2, n, global_size=n, wait=True)
    np.testing.assert_array_equal(download(out2, n, np.float32), 4 * a)
    with pytest.raises(InvalidArgument, match="@localsize"):
        vendor(out, out, out2, n, global_size=n, local_size=32)


def test_dispatch_state_as_the_cp_sees_it(rig):
    machine, device = rig
    n = 130
    out = device.allocate(4 * n)
    device.load(b"", "vector_add")(out, out, out, n, global_size=n, wait=True)
    registers = machine.driver.cp.registers
    control = a6xx.REG_A6XX_SP_CS_CTRL_REG0.decode(registers[a6xx.REG_A6XX_SP_CS_CTRL_REG0.offset])
    assert control["FULLREGFOOTPRINT"] == 5 and control["HALFREGFOOTPRINT"] == 0
    ids = a6xx.REG_A6XX_HLSQ_CS_CNTL_0.decode(registers[a6xx.REG_A6XX_HLSQ_CS_CNTL_0.offset])
    assert ids["LOCALIDREGID"] == 0 and ids["WGIDCONSTID"] == 4 * 48
    ndrange = a6xx.REG_A6XX_HLSQ_CS_NDRANGE_0.decode(registers[a6xx.REG_A6XX_HLSQ_CS_NDRANGE_0.offset])
    assert ndrange["LOCALSIZEX"] == 63
    assert registers[a6xx.REG_A6XX_HLSQ_CS_NDRANGE_1.offset] == 64 * 3  # three groups of 64
    assert a6xx.REG_A6XX_HLSQ_CS_CNTL.decode(registers[a6xx.REG_A6XX_HLSQ_CS_CNTL.offset])["CONSTLEN"] == 4
    events = machine.driver.cp.events
    assert pm4.CACHE_INVALIDATE in events and pm4.CACHE_FLUSH_TS in events


def _launch(device, program_text: str, *, max_reg: int, local_size=(64, 1, 1), n=64):
    """A hand-made dispatch (bypassing the compute layer's checks) submitted on the compute queue."""
    program = assemble_program(program_text)
    image = device.allocate(4096)
    image.copyin(program.code)
    out = device.allocate(4096)
    stream = CommandStream()
    launch = ComputeDispatch(code_address=image.gpu_address, instructions=len(program.words),
                             max_reg=max_reg, max_half_reg=-1,
                             consts=[out.gpu_address & 0xFFFFFFFF, out.gpu_address >> 32, 0, 0,
                                     out.gpu_address & 0xFFFFFFFF, out.gpu_address >> 32, 0, 0,
                                     out.gpu_address & 0xFFFFFFFF, out.gpu_address >> 32, 0, 0,
                                     n, 0, 0, 0],
                             local_size=local_size, groups=(1, 1, 1), local_id_regid=0,
                             workgroup_id_regid=4 * 48)
    emit_dispatch(stream, launch, device.backend.scratch.gpuaddr)
    queue = device.compute_queue
    queue._words += stream.dwords
    return queue.submit()


def test_a_footprint_smaller_than_the_code_is_a_context_fault(rig):
    machine, device = rig
    value = _launch(device, kernels.source("vector_add"), max_reg=2)
    with pytest.raises(ContextFaulted):
        device.timeline.wait(value)
    fault = machine.driver.faults[-1]
    assert fault.kind == "shader" and "outside the register footprint" in fault.message
    device.reset_compute_queue("test")


def test_an_unsupported_instruction_is_a_context_fault_naming_it(rig):
    machine, device = rig
    value = _launch(device, "mov.u32u32 r1.x, 1\n(rpt5)nop\nrcp r1.y, r1.x\nend\n", max_reg=1)
    with pytest.raises(ContextFaulted):
        device.timeline.wait(value)
    assert "rcp is not modelled" in machine.driver.faults[-1].message
    device.reset_compute_queue("test")


def test_the_mock_rejects_a_local_size_past_1024(rig):
    machine, device = rig
    program = assemble_program("end\n")
    image = device.allocate(4096)
    image.copyin(program.code)
    stream = CommandStream()
    launch = ComputeDispatch(code_address=image.gpu_address, instructions=1, max_reg=0,
                             max_half_reg=-1, consts=[], local_size=(64, 1, 1), groups=(1, 1, 1))
    emit_dispatch(stream, launch, device.backend.scratch.gpuaddr)
    ndrange_header = stream.dwords.index(pkt4_header(a6xx.REG_A6XX_HLSQ_CS_NDRANGE_0.offset, 7))
    stream.dwords[ndrange_header + 1] = a6xx.REG_A6XX_HLSQ_CS_NDRANGE_0.encode(
        KERNELDIM=3, LOCALSIZEX=1023, LOCALSIZEY=1, LOCALSIZEZ=0)
    device.compute_queue._words += stream.dwords
    value = device.compute_queue.submit()
    with pytest.raises(ContextFaulted):
        device.timeline.wait(value)
    fault = machine.driver.faults[-1]
    assert fault.kind == "dispatch" and "over 1024" in fault.message
    device.reset_compute_queue("test")
    with pytest.raises(InvalidArgument, match="1024"):
        emit_dispatch(CommandStream(), ComputeDispatch(
            code_address=image.gpu_address, instructions=1, max_reg=0, max_half_reg=-1, consts=[],
            local_size=(1024, 2, 1), groups=(1, 1, 1)), 0)


def test_selftest_mock_qcom_every_check_ok(capsys):
    import json

    from tools import selftest

    status = selftest.main(["--mock", "qcom", "--json", "--timeout", "5"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0, report
    names = [check["name"] for check in report["checks"]]
    assert {"vector_add", "saxpy", "memset", "copy", "reduce_sum"} <= set(names)
    assert all(check["ok"] for check in report["checks"])
    assert report["figures"]["launch_latency_us"] > 0


def test_launch_benchmark_has_the_adreno_figures():
    from compute import bench

    def factory():
        machine = qcom()
        device = Device("qcom:0", os=machine.os)
        factory.machines.append(machine)
        return device

    factory.machines = []
    figures = bench.run_launch_qcom(factory)
    for machine in factory.machines:
        machine.close()
    assert figures["qcom_prepare_us"] > 0 and figures["qcom_launch_waited_us"] > 0


def test_a_graph_of_kernels_replays_with_patched_inputs(rig):
    from compute.graph import Graph

    machine, device = rig
    n = 150
    first = np.arange(n, dtype=np.float32)
    second = np.full(n, 3.0, dtype=np.float32)
    a, b = upload(device, first), upload(device, second)
    out, y = device.allocate(4 * n), upload(device, np.ones(n, dtype=np.float32))
    graph = Graph(device)
    x = graph.input("x")
    graph.launch(device.load(b"", "vector_add"), x, b, out, n, global_size=n)
    graph.launch(device.load(b"", "saxpy"), x, y, n, 2.0, global_size=n)
    device.timeline.wait(graph.replay(x=a))
    np.testing.assert_array_equal(download(out, n, np.float32), first + second)
    np.testing.assert_array_equal(download(y, n, np.float32), 2 * first + 1)
    device.timeline.wait(graph.replay(x=b))
    np.testing.assert_array_equal(download(out, n, np.float32), 2 * second)
    np.testing.assert_array_equal(download(y, n, np.float32), 2 * first + 1 + 2 * second)
    graph.free()


def test_a_freed_buffer_is_refused_as_a_kernel_argument(rig):
    _, device = rig
    a, b, out = (device.allocate(4 * 64) for _ in range(3))
    a.free()
    with pytest.raises(InvalidArgument, match="was freed"):
        device.load(b"", "vector_add")(a, b, out, 64, global_size=64, wait=True)
