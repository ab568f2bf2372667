"""The committed struct/constant targets: layouts against a compiled probe (or the recorded layout),
spot checks against the header text, and `python -m autogen --check` for the uapi targets."""
from __future__ import annotations

import importlib
import pathlib
import subprocess
import sys

import pytest

from autogen import manifest, sources
from cprobe import c_compiler, fields_mismatches, layout_mismatches

REPOSITORY = pathlib.Path(__file__).resolve().parents[2]
STRUCT_TARGETS = [target for target in manifest.TARGETS if target.kind == manifest.KIND_STRUCTS]


def _module(target: manifest.Target):
    return importlib.import_module(target.output[:-len(".py")].replace("/", "."))


def _source_root(target: manifest.Target) -> pathlib.Path:
    try:
        return sources.source_root(target.source, target.paths, download=False, target_names=[target.name])
    except sources.SourceUnavailable as exc:
        pytest.skip(f"sources not on this machine, checked against the recorded layout only: {exc}")


@pytest.mark.parametrize("target", STRUCT_TARGETS, ids=lambda target: target.name)
def test_classes_agree_with_the_recorded_layout(target):
    module = _module(target)
    assert module.SOURCE_PACKAGE == target.package and module.SOURCE_VERSION == target.version
    for class_name in module._LAYOUT:
        assert fields_mismatches(module, class_name) == []


@pytest.mark.parametrize("target", STRUCT_TARGETS, ids=lambda target: target.name)
def test_layouts_match_a_compiled_probe(target, tmp_path):
    if c_compiler() is None:
        pytest.skip("no C compiler (gcc, cc or clang) on PATH")
    pytest.importorskip("clang.cindex", reason="libclang is needed to build the parse configuration")
    from autogen.clang_gen import parse_config
    from cprobe import probe_layouts

    root = _source_root(target)
    module = _module(target)
    config = parse_config(target, root)
    probed = probe_layouts(config, module, tmp_path)
    assert layout_mismatches(module, probed) == []


def _header_text(target: manifest.Target) -> str:
    root = _source_root(target)
    return "\n".join((root / path).read_text() for path in target.paths)


def test_vfio_spot_checks():
    from autogen.linux import vfio

    target = manifest.BY_NAME["linux.vfio"]
    text = _header_text(target)
    assert "#define VFIO_DEVICE_GET_REGION_INFO\t_IO(VFIO_TYPE, VFIO_BASE + 8)" in text
    assert "#define VFIO_TYPE\t(';')" in text and "#define VFIO_BASE\t100" in text
    # _IO(type, nr): no direction, no size (include/uapi/asm-generic/ioctl.h)
    assert vfio.VFIO_DEVICE_GET_REGION_INFO == (ord(";") << 8) | (100 + 8)
    assert vfio.VFIO_IOMMU_MAP_DMA == (ord(";") << 8) | (100 + 13)
    assert vfio.VFIO_TYPE1v2_IOMMU == 3
    assert (vfio.VFIO_PCI_BAR0_REGION_INDEX, vfio.VFIO_PCI_CONFIG_REGION_INDEX) == (0, 7)
    assert vfio.VFIO_IRQ_SET_DATA_EVENTFD == 1 << 2
    assert vfio.vfio_region_info.SIZE == 32 and vfio.vfio_region_info.FIELDS["offset"].offset == 24
    assert vfio.vfio_irq_set.FIELDS["data"][:3] == (20, 0, "flex")


def test_pci_regs_spot_checks():
    from autogen.linux import pci_regs

    text = _header_text(manifest.BY_NAME["linux.pci_regs"])
    for line in ("#define PCI_COMMAND\t\t0x04", "#define  PCI_CAP_ID_EXP\t\t0x10",
                 "#define PCI_EXT_CAP_ID_REBAR\t0x15", "#define  PCI_EXP_DEVCTL_BCR_FLR 0x8000"):
        assert line in text
    assert (pci_regs.PCI_COMMAND, pci_regs.PCI_CAP_ID_EXP) == (0x04, 0x10)
    assert (pci_regs.PCI_EXT_CAP_ID_REBAR, pci_regs.PCI_EXP_DEVCTL_BCR_FLR) == (0x15, 0x8000)
    header = (0x150 << 20) | (1 << 16) | 0x15
    assert pci_regs.PCI_EXT_CAP_ID(header) == 0x15
    assert pci_regs.PCI_EXT_CAP_VER(header) == 1
    assert pci_regs.PCI_EXT_CAP_NEXT(header) == 0x150


def test_kfd_ioctl_spot_checks():
    from autogen.linux import kfd_ioctl

    text = _header_text(manifest.BY_NAME["linux.kfd_ioctl"])
    assert "AMDKFD_IOR(0x01, struct kfd_ioctl_get_version_args)" in text
    # _IOR: direction 2 (read) in bits 30-31, argument size in bits 16-29, type 'K', number
    size = kfd_ioctl.kfd_ioctl_get_version_args.SIZE
    assert kfd_ioctl.AMDKFD_IOC_GET_VERSION == (2 << 30) | (size << 16) | (ord("K") << 8) | 0x01
    size = kfd_ioctl.kfd_ioctl_alloc_memory_of_gpu_args.SIZE
    assert kfd_ioctl.AMDKFD_IOC_ALLOC_MEMORY_OF_GPU == (3 << 30) | (size << 16) | (ord("K") << 8) | 0x16


def test_amd_spot_checks():
    from autogen.amd import discovery, nvd, sdma_v6_0_0_pkt_open as sdma, smu_v13_0_0_ppsmc as ppsmc

    assert discovery.BINARY_SIGNATURE == 0x28211407
    assert discovery.ip_v4.FIELDS["sub_revision"].bit_width == 4
    assert nvd.PACKET3(nvd.PACKET3_NOP, 0x3FFF) == 0xC0000000 | (0x3FFF << 16) | (0x10 << 8)
    header = sdma.SDMA_PKT_COPY_LINEAR_HEADER_OP(sdma.SDMA_OP_COPY)
    assert header == sdma.SDMA_OP_COPY << sdma.SDMA_PKT_COPY_LINEAR_HEADER_op_shift
    assert ppsmc.PPSMC_MSG_TestMessage == 0x1
    root = None
    try:
        root = sources.source_root(manifest.BY_NAME["amd.nvd"].source, manifest.BY_NAME["amd.nvd"].paths,
                                   download=False)
    except sources.SourceUnavailable:
        pass
    if root is not None:
        text = (root / manifest.BY_NAME["amd.nvd"].paths[0]).read_text()
        assert "#define\tPACKET3_NOP\t\t\t\t\t0x10" in text


def test_uapi_check_passes():
    """The CI check: committed uapi bindings equal what the generator makes from linux-libc-dev."""
    pytest.importorskip("clang.cindex", reason="the generator needs libclang")
    _source_root(manifest.BY_NAME["linux.vfio"])
    result = subprocess.run([sys.executable, "-m", "autogen", "--check", "--offline", "linux"],
                            capture_output=True, text=True, cwd=REPOSITORY, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("up to date") == 3
