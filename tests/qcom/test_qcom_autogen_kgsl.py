"""autogen.qcom.kgsl: the KGSL uapi generated from Mesa's msm_kgsl.h, spot-checked against the header
text, and `python -m autogen --check qcom.kgsl` reproducing the committed module."""
from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from autogen import manifest, sources
from autogen.qcom import kgsl

REPOSITORY = pathlib.Path(__file__).resolve().parents[2]
TARGET = manifest.BY_NAME["qcom.kgsl"]


def _header_text() -> str:
    try:
        root = sources.source_root(TARGET.source, TARGET.paths, download=False)
    except sources.SourceUnavailable as exc:
        pytest.skip(f"mesa sources not on this machine: {exc}")
    return (root / TARGET.paths[0]).read_text()


def _ioc(direction: int, number: int, size: int) -> int:
    # include/uapi/asm-generic/ioctl.h: nr 0-7, type 8-15, size 16-29, direction 30-31
    return (direction << 30) | (size << 16) | (kgsl.KGSL_IOC_TYPE << 8) | number


def test_ioctl_numbers_carry_the_struct_sizes():
    read_write = 3
    write = 1
    assert kgsl.KGSL_IOC_TYPE == 0x09
    assert kgsl.kgsl_gpuobj_alloc.SIZE == 48
    assert kgsl.IOCTL_KGSL_GPUOBJ_ALLOC == _ioc(read_write, 0x45, kgsl.kgsl_gpuobj_alloc.SIZE)
    assert kgsl.IOCTL_KGSL_GPU_COMMAND == _ioc(read_write, 0x4A, kgsl.kgsl_gpu_command.SIZE)
    assert kgsl.IOCTL_KGSL_DEVICE_GETPROPERTY == _ioc(read_write, 0x2,
                                                      kgsl.kgsl_device_getproperty.SIZE)
    assert kgsl.IOCTL_KGSL_DRAWCTXT_CREATE == _ioc(read_write, 0x13, kgsl.kgsl_drawctxt_create.SIZE)
    assert kgsl.IOCTL_KGSL_DEVICE_WAITTIMESTAMP_CTXTID == _ioc(
        write, 0x7, kgsl.kgsl_device_waittimestamp_ctxtid.SIZE)


def test_flags_and_property_ids_match_the_header_text():
    text = _header_text()
    assert "#define KGSL_PROP_DEVICE_INFO\t\t0x1" in text
    assert kgsl.KGSL_PROP_DEVICE_INFO == 1
    assert "#define KGSL_CONTEXT_NO_GMEM_ALLOC\t0x00000002" in text
    assert kgsl.KGSL_CONTEXT_NO_GMEM_ALLOC == 2
    assert "#define KGSL_MEMFLAGS_IOCOHERENT      (1ULL << 31)" in text
    assert kgsl.KGSL_MEMFLAGS_IOCOHERENT == 1 << 31
    assert kgsl.KGSL_CMDBATCH_PROFILING == 0x10


def test_structs_have_the_header_layout():
    fields = kgsl.kgsl_gpu_command.FIELDS
    assert fields["cmdlist"].offset == 8
    assert kgsl.kgsl_devinfo.FIELDS["gpu_id"].offset == 24
    command = kgsl.kgsl_command_object(gpuaddr=0x1000, size=64, flags=kgsl.KGSL_CMDLIST_IB)
    assert bytes(command)[8:16] == (0x1000).to_bytes(8, "little")
    assert kgsl.kgsl_command_object.SIZE == 32


def test_regeneration_is_byte_identical():
    pytest.importorskip("clang.cindex", reason="the generator needs libclang")
    _header_text()
    result = subprocess.run([sys.executable, "-m", "autogen", "--check", "--offline", "qcom.kgsl"],
                            capture_output=True, text=True, cwd=REPOSITORY, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout


def test_a_source_member_may_name_one_file(tmp_path):
    """The mesa pin unpacks msm_kgsl.h alone from src/freedreno/vulkan/ (not the whole folder)."""
    import io
    import tarfile

    tarball = tmp_path / "t.tar"
    with tarfile.open(tarball, "w") as archive:
        for name in ("top/a/wanted.h", "top/a/other.h", "top/b/c.xml"):
            data = name.encode()
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            archive.addfile(entry, io.BytesIO(data))
    tree = tmp_path / "tree"
    assert sources.extract_members(tarball, tree, "top", ("a/wanted.h", "b")) == 2
    assert sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file()) == [
        "a/wanted.h", "b/c.xml"]
