"""The QMD version per generation: Hopper (HOPPER_COMPUTE_A) launches with QMD 04_00 (NVIDIA's
clcbc0qmd.h, autogen.nv.qmd_v04), Ampere and Ada with 03_00 (autogen.nv.qmd); the mock GPU reads the
versions each class's QMD header defines (Hopper 04_00 and 03_00, Ampere/Ada 03_00) and refuses
others as a GR exception; the 04_00 header's pin (a git commit, checked by sha256) and its provenance
in the generated module."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from autogen import manifest, sources
from autogen import __main__ as cli
from autogen.nv import qmd as qmd_v03_layout
from autogen.nv import qmd_v04 as qmd_v04_layout
from autogen.nv.r535 import classes as cl
from compute import device as compute_device
from compute.device import Device
from compute.nv import compiler
from drivers.nv import qmd
from mockgpu.nv import gpu as nvgpu
from tools import mock_machines

LAUNCH = dict(program_address=0x12_3456_7880, grid=(70000, 3, 2), block=(16, 8, 4),
              constant0_address=0x1_2345_6700, constant0_size=0x230, registers=40, shared_bytes=1000,
              local_bytes_per_thread=24, shared_limit_kib=228, barriers=2)
V04 = "NVCBC0_QMDV04_00_"
V03 = "NVC6C0_QMDV03_00_"


@pytest.fixture(autouse=True)
def _nv_factory():
    compute_device.register_mock_factory(mock_machines.nvidia_compute, kind="nv")
    yield
    compute_device.register_mock_factory(None, kind="nv")


def _bits(data: bytes, high: int, low: int) -> int:
    """A field read straight from the generated table's bit range (not through drivers.nv.qmd)."""
    return (int.from_bytes(data, "little") >> low) & ((1 << (high - low + 1)) - 1)


def _v04(data: bytes, name: str) -> int:
    return _bits(data, *qmd_v04_layout.FIELDS[V04 + name])


def _v04_bank0(data: bytes, name: str) -> int:
    return _bits(data, *qmd_v04_layout.INDEXED[V04 + name][:2])


def test_each_compute_class_reads_its_qmd_version() -> None:
    assert qmd.layout_for(cl.HOPPER_COMPUTE_A) is qmd.V04_00
    for compute_class in (cl.AMPERE_COMPUTE_A, cl.AMPERE_COMPUTE_B, cl.ADA_COMPUTE_A):
        assert qmd.layout_for(compute_class) is qmd.V03_00
    assert qmd.V04_00.size == 384 and qmd.V03_00.size == 256
    with pytest.raises(qmd.InvalidArgument, match="no QMD layout"):
        qmd.layout_for(0xC0C0)


def test_a_04_00_qmd_decodes_from_the_generated_layout_to_the_launch_values() -> None:
    data = qmd.QMD(**LAUNCH, layout=qmd.V04_00).build()
    assert len(data) == 384
    assert (_v04(data, "QMD_MAJOR_VERSION"), _v04(data, "QMD_MINOR_VERSION")) == (4, 0)
    assert (_v04(data, "GRID_WIDTH"), _v04(data, "GRID_HEIGHT"), _v04(data, "GRID_DEPTH")) == (70000, 3, 2)
    assert tuple(_v04(data, f"CTA_THREAD_DIMENSION{i}") for i in range(3)) == (16, 8, 4)
    assert _v04(data, "SHARED_MEMORY_SIZE") == 2048  # the kernel's, plus the 1 KiB reserve, 256-byte granular
    assert _v04(data, "REGISTER_COUNT") == 40
    assert _v04(data, "BARRIER_COUNT") == 2
    # the stack is at the top of each thread's local range: 24 bytes, 32-byte granular, in HIGH
    assert _v04(data, "SHADER_LOCAL_MEMORY_HIGH_SIZE") == 32
    assert _v04(data, "SHADER_LOCAL_MEMORY_LOW_SIZE") == 0
    program = _v04(data, "PROGRAM_ADDRESS_LOWER") | _v04(data, "PROGRAM_ADDRESS_UPPER") << 32
    assert program == LAUNCH["program_address"]
    assert _v04_bank0(data, "CONSTANT_BUFFER_VALID") == 1
    bank = (_v04_bank0(data, "CONSTANT_BUFFER_ADDR_LOWER_SHIFTED6")
            | _v04_bank0(data, "CONSTANT_BUFFER_ADDR_UPPER_SHIFTED6") << 32)
    assert bank << 6 == LAUNCH["constant0_address"]  # 04_00 holds the address >> 6
    assert _v04_bank0(data, "CONSTANT_BUFFER_SIZE_SHIFTED4") << 4 == 0x230
    assert _v04(data, "CWD_MEMBAR_TYPE") == qmd_v04_layout.NVCBC0_QMDV04_00_CWD_MEMBAR_TYPE_L1_SYSMEMBAR
    # patching constant bank 0 keeps the 04_00 encoding
    moved = qmd.with_constant0(data, 0x7_0000_0100, qmd.V04_00)
    assert qmd.constant0_address(moved, qmd.V04_00) == 0x7_0000_0100
    assert moved == qmd.QMD(**{**LAUNCH, "constant0_address": 0x7_0000_0100}, layout=qmd.V04_00).build()


def test_03_00_and_04_00_differ_where_the_launch_lives() -> None:
    v03 = qmd.QMD(**LAUNCH).build()
    assert _bits(v03, *qmd_v03_layout.FIELDS[V03 + "CTA_RASTER_WIDTH"]) == 70000
    assert _bits(v03, *qmd_v03_layout.FIELDS[V03 + "QMD_MAJOR_VERSION"]) == 3
    # the 03_00 bytes read as 04_00 give neither the version nor the grid
    padded = v03 + bytes(128)
    assert _v04(padded, "QMD_MAJOR_VERSION") == 3
    assert _v04(padded, "GRID_WIDTH") != 70000


def test_the_mock_refuses_a_qmd_of_the_other_version() -> None:
    limit = nvgpu.MAX_SHARED_PER_BLOCK["GH100"]
    v04 = qmd.QMD(**LAUNCH, layout=qmd.V04_00).build()
    v03 = qmd.QMD(**LAUNCH).build()
    grid, block, cb0, size, program, shared = nvgpu.check_qmd(v04, limit, cl.HOPPER_COMPUTE_A)
    assert (grid, block, cb0, size, program, shared) == ((70000, 3, 2), (16, 8, 4), 0x1_2345_6700, 0x230,
                                                         0x12_3456_7880, 2048)
    assert nvgpu.check_qmd(v03, limit, cl.AMPERE_COMPUTE_A)[0] == (70000, 3, 2)
    # clcbc0qmd.h defines 03_00 for Hopper too: the engine reads it in that layout
    assert nvgpu.check_qmd(v03, limit, cl.HOPPER_COMPUTE_A)[0] == (70000, 3, 2)
    # a version no class header defines for Hopper is refused
    v02 = bytearray(v03)
    high, low = qmd_v03_layout.FIELDS[V03 + "QMD_MAJOR_VERSION"]
    word = int.from_bytes(v02, "little") & ~(((1 << (high - low + 1)) - 1) << low) | (2 << low)
    v02[:] = word.to_bytes(len(v02), "little")
    with pytest.raises(nvgpu.ChannelFault, match=r"version 2\.0, compute class 0xcbc0 reads 4\.0") as caught:
        nvgpu.check_qmd(bytes(v02), limit, cl.HOPPER_COMPUTE_A)
    assert caught.value.code == nvgpu.ROBUST_CHANNEL_GR_EXCEPTION
    for ampere_or_ada in (cl.AMPERE_COMPUTE_A, cl.AMPERE_COMPUTE_B, cl.ADA_COMPUTE_A):
        with pytest.raises(nvgpu.ChannelFault, match=r"version 4\.0, .* reads 3\.0") as caught:
            nvgpu.check_qmd(v04, limit, ampere_or_ada)
        assert caught.value.code == nvgpu.ROBUST_CHANNEL_GR_EXCEPTION


def _vector_add(dev: Device):
    return dev.load(compiler.PREBUILT_DIR / "vector_add.fatbin", "vector_add_f32")


def _arrays(dev: Device, n: int = 256):
    buffers = [dev.allocate(4 * n) for _ in range(3)]
    buffers[0].copyin(np.ones(n, dtype=np.float32))
    buffers[1].copyin(np.full(n, 2, dtype=np.float32))
    return buffers


@pytest.mark.parametrize("gpu, major", [("h100", 4), ("a100", 3), ("rtx4090", 3)])
def test_a_launch_uses_its_generations_qmd(gpu: str, major: int) -> None:
    with Device(f"mock:nv:{gpu}") as dev:
        program = _vector_add(dev)
        built = []
        make = program.impl.qmd
        program.impl.qmd = lambda *a: built.append(make(*a)) or built[-1]
        a, b, c = _arrays(dev)
        program(a, b, c, 256, global_size=256, local_size=128, wait=True)
        np.testing.assert_array_equal(np.frombuffer(c.copyout(1024), dtype=np.float32), 3.0)
        assert dev.backend.machine.driver.gpu_model.launches == 1
        data = built[0]
        assert len(data) == (384 if major == 4 else 256)
        if major == 4:
            assert (_v04(data, "QMD_MAJOR_VERSION"), _v04(data, "GRID_WIDTH")) == (4, 2)
            assert _v04(data, "CTA_THREAD_DIMENSION0") == 128
        else:
            assert _bits(data, *qmd_v03_layout.FIELDS[V03 + "QMD_MAJOR_VERSION"]) == 3
            assert _bits(data, *qmd_v03_layout.FIELDS[V03 + "CTA_RASTER_WIDTH"]) == 2


def test_a_03_00_qmd_on_hopper_runs_as_its_class_header_defines() -> None:
    with Device("mock:nv:h100", timeout_s=2.0) as dev:
        program = _vector_add(dev)
        make = program.impl.qmd

        def as_03_00(constant0_address, global_size, local_size):
            data = make(constant0_address, global_size, local_size)
            layout = qmd.V04_00
            return qmd.QMD(program_address=qmd.field(data, "PROGRAM_ADDRESS_LOWER", layout)
                           | qmd.field(data, "PROGRAM_ADDRESS_UPPER", layout) << 32,
                           grid=(2, 1, 1), block=(128, 1, 1), constant0_address=constant0_address,
                           constant0_size=qmd.field(data, "CONSTANT_BUFFER_SIZE_SHIFTED4_0", layout) << 4,
                           registers=16, shared_bytes=0,
                           local_bytes_per_thread=qmd.field(data, "SHADER_LOCAL_MEMORY_HIGH_SIZE", layout),
                           shared_limit_kib=228).build()
        program.impl.qmd = as_03_00
        a, b, c = _arrays(dev)
        program(a, b, c, 256, global_size=256, local_size=128, wait=True)
        np.testing.assert_array_equal(np.frombuffer(c.copyout(1024), dtype=np.float32), 3.0)
        gpu = dev.backend.machine.driver.gpu_model
        assert gpu.errors == [] and gpu.launches == 1


# -- the 04_00 header's pin -------------------------------------------------------------------------

TARGET = manifest.BY_NAME["nv.qmd_v04"]


def test_the_generated_module_records_its_provenance() -> None:
    source = TARGET.source
    assert source.layout == "git" and source.repository == "NVIDIA/open-gpu-doc"
    assert len(source.version) == 40 and source.licence == "MIT"
    sha = dict(source.file_sha256)[manifest.OPEN_GPU_DOC_QMD]
    text = (cli.REPOSITORY_ROOT / TARGET.output).read_text()
    head = text.split('"""', 1)[0]
    assert f"https://github.com/{source.repository} at commit {source.version}" in head
    assert f"{manifest.OPEN_GPU_DOC_QMD} {sha}" in head
    assert "Licence of the source headers: MIT" in head
    assert qmd_v04_layout.SOURCE_VERSION == source.version


def test_a_missing_header_says_how_to_place_it(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path))
    with pytest.raises(sources.SourceUnavailable) as raised:
        sources.source_root(TARGET.source, TARGET.paths, target_names=[TARGET.name])
    message = str(raised.value)
    assert "git clone https://github.com/NVIDIA/open-gpu-doc" in message
    assert f"show {TARGET.source.version}:{manifest.OPEN_GPU_DOC_QMD}" in message
    assert "python -m autogen nv.qmd_v04" in message
    assert raised.value.package == "open-gpu-doc"


def test_a_header_with_other_bytes_is_refused(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path))
    placed = sources.unpacked_dir(TARGET.source) / manifest.OPEN_GPU_DOC_QMD
    placed.parent.mkdir(parents=True)
    placed.write_text("#define NVCBC0_QMDV04_00_QMD_MAJOR_VERSION MW(583:580)\n")
    with pytest.raises(sources.SourceUnavailable, match="sha256"):
        sources.source_root(TARGET.source, TARGET.paths, target_names=[TARGET.name])


def test_the_pinned_header_regenerates_the_committed_module(capsys) -> None:
    placed = sources.unpacked_dir(TARGET.source) / manifest.OPEN_GPU_DOC_QMD
    if not placed.is_file():
        pytest.skip(f"{placed} is not in the cache (python -m autogen nv.qmd_v04 says how to place it)")
    assert hashlib.sha256(placed.read_bytes()).hexdigest() == dict(TARGET.source.file_sha256)[
        manifest.OPEN_GPU_DOC_QMD]
    assert cli.run(["nv.qmd_v04"], check=True, offline=True) == 0
    assert "up to date" in capsys.readouterr().out
