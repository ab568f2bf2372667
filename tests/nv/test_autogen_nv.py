"""The generated NVIDIA r535 bindings: independent spot checks, a cross-check against nouveau's copy
of the 535 RM headers in linux-source-6.12 (same struct layouts and constants where both define
them), and regeneration from the pinned source reproducing the committed modules byte for byte."""
from __future__ import annotations

import pathlib

import pytest

from autogen import manifest, sources
from autogen.nv.r535 import classes, ctrl, escape, nvos, status, uvm
from drivers.nv.rm import escape_request

REPOSITORY = pathlib.Path(__file__).resolve().parents[2]
NV_TARGETS = [target for target in manifest.TARGETS if target.name.startswith("nv.")]
# drivers/gpu/drm/nouveau/include/nvrm/535.113.01: the subset of the RM API nouveau's GSP path uses
NOUVEAU_INCLUDE = "drivers/gpu/drm/nouveau/include"
NOUVEAU_SDK = "nvrm/535.113.01/common/sdk/nvidia/inc"
NOUVEAU_HEADERS = ("nvos.h", "class/cl0000.h", "class/cl0005.h", "class/cl0080.h", "class/cl2080.h",
                   "class/cl2080_notification.h", "class/cl90f1.h", "alloc/alloc_channel.h",
                   "ctrl/ctrl2080/ctrl2080gpu.h", "ctrl/ctrl90f1.h", "ctrl/ctrla06f/ctrla06fgpfifo.h")
# structures both define; nouveau must have each of these or the cross-check has lost its teeth
SHARED_STRUCTS = ("NV0000_ALLOC_PARAMETERS", "NV0005_ALLOC_PARAMETERS", "NV0080_ALLOC_PARAMETERS",
                  "NV2080_ALLOC_PARAMETERS", "NV_VASPACE_ALLOCATION_PARAMETERS", "NV_CHANNEL_ALLOC_PARAMS",
                  "NV_MEMORY_DESC_PARAMS", "NV2080_CTRL_GPU_GET_GID_INFO_PARAMS",
                  "NVA06F_CTRL_GPFIFO_SCHEDULE_PARAMS")


def _r535_namespace() -> dict:
    merged: dict = {"_LAYOUT": {}}
    for module in (nvos, classes, ctrl, escape, status, uvm):
        for name in dir(module):
            value = getattr(module, name)
            if isinstance(value, int) and not isinstance(value, bool) and name.isupper():
                merged.setdefault(name, value)
        merged["_LAYOUT"].update(module._LAYOUT)
    return merged


def test_escape_requests_match_the_numbers_userspace_uses():
    # _IOWR('F', NV_ESC_RM_ALLOC, sizeof(NVOS21_PARAMETERS)): 0xc020462b in every strace of a CUDA process
    assert escape_request(escape.NV_ESC_RM_ALLOC, nvos.NVOS21_PARAMETERS.SIZE) == 0xC020462B
    assert escape_request(escape.NV_ESC_RM_CONTROL, nvos.NVOS54_PARAMETERS.SIZE) == 0xC020462A
    assert escape_request(escape.NV_ESC_RM_MAP_MEMORY,
                          nvos.nv_ioctl_nvos33_parameters_with_fd.SIZE) == 0xC038464E
    assert escape_request(escape.NV_ESC_CARD_INFO, escape.nv_ioctl_card_info.SIZE * 32) == 0xC90046C8
    assert uvm.UVM_INITIALIZE == 0x30000001 and uvm.UVM_REGISTER_GPU == 37
    assert status.NV_ERR_INVALID_OBJECT_PARENT == 0x36 and status.NV_ERR_INVALID_CLASS == 0x22
    assert (classes.HOPPER_COMPUTE_A, classes.HOPPER_CHANNEL_GPFIFO_A, classes.HOPPER_USERMODE_A) == (
        0xCBC0, 0xC86F, 0xC661)


def _source_root(package, paths, name):
    try:
        return sources.source_root(package, paths, download=False, target_names=[name])
    except sources.SourceUnavailable as exc:
        pytest.skip(f"sources not on this machine: {exc}")


def test_layouts_and_constants_agree_with_nouveaus_535_headers():
    pytest.importorskip("clang.cindex", reason="libclang parses nouveau's headers")
    from autogen import clang_gen

    paths = tuple(f"{NOUVEAU_INCLUDE}/{NOUVEAU_SDK}/{header}" for header in NOUVEAU_HEADERS)
    root = _source_root(manifest.LINUX_SOURCE_6_12, paths, "amd")
    include = root / NOUVEAU_INCLUDE
    config = clang_gen.ParseConfig(headers=tuple(root / path for path in paths), include_dirs=(include,),
                                   prelude=manifest.KERNEL_PRELUDE + "#include <nvrm/nvtypes.h>\n")
    source = clang_gen.ModuleSource("nouveau.nvrm535", manifest.LINUX_SOURCE_6_12.name,
                                    manifest.LINUX_SOURCE_6_12.version, "MIT", paths, "cross-check")
    nouveau: dict = {}
    exec(compile(clang_gen.generate_module(config, source), "nouveau-nvrm-535", "exec"), nouveau)
    ours = _r535_namespace()
    for name in SHARED_STRUCTS:
        assert name in nouveau["_LAYOUT"] and name in ours["_LAYOUT"], name
    shared = sorted(set(nouveau["_LAYOUT"]) & set(ours["_LAYOUT"]))
    layout_mismatches = [name for name in shared
                         if nouveau["_LAYOUT"][name][1:] != ours["_LAYOUT"][name][1:]]
    assert layout_mismatches == []
    constants = sorted(name for name, value in nouveau.items()
                       if isinstance(value, int) and not isinstance(value, bool) and name.isupper()
                       and name in ours)
    assert len(constants) > 100
    constant_mismatches = [(name, nouveau[name], ours[name]) for name in constants
                           if nouveau[name] != ours[name]]
    assert constant_mismatches == []


@pytest.mark.parametrize("target", NV_TARGETS, ids=lambda target: target.name)
def test_regeneration_reproduces_the_committed_module(target):
    pytest.importorskip("clang.cindex", reason="libclang regenerates the bindings")
    from autogen.__main__ import generate_target

    _source_root(target.source, target.paths, target.name)
    for relative, text in generate_target(target, download=False).items():
        committed = (REPOSITORY / relative).read_text()
        assert committed == text, f"{relative} differs: run python -m autogen {target.name}"


def test_source_packages_pin_the_upstream_tarball(tmp_path, monkeypatch):
    import io
    import tarfile

    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path))
    text = b"#define NV_ESC_RM_ALLOC 0x2B\n"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as archive:
        for name, data in (("pkg-1.0/src/inc/a.h", text), ("pkg-1.0/other/b.h", b"x")):
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            archive.addfile(entry, io.BytesIO(data))
    blob = buffer.getvalue()
    debs = tmp_path / "debs"
    debs.mkdir()
    orig = debs / "pkg_1.0.orig.tar.xz"
    orig.write_bytes(blob)
    import hashlib

    package = sources.Package("pkg", "1:1.0-2", "MIT", suite="bookworm", component="contrib",
                              layout="source", orig_sha256=hashlib.sha256(blob).hexdigest(),
                              top="pkg-1.0", members=("src",))
    assert package.upstream_version == "1.0"
    entry = sources.apt_sources_text(package, "http://archive.invalid/debian", "amd64")
    assert "Types: deb-src" in entry and "Targets: Sources" in entry and "Architectures" not in entry
    root = sources.source_root(package, ("src/inc/a.h",), download=False)
    assert (root / "src/inc/a.h").read_bytes() == text and not (root / "other").exists()
    # a tarball that is not the pinned one is refused
    tampered = sources.Package("pkg", "1.0-3", "MIT", suite="bookworm", layout="source",
                               orig_sha256="0" * 64, top="pkg-1.0", members=("src",))
    with pytest.raises(sources.SourceUnavailable) as caught:
        sources.source_root(tampered, ("src/inc/a.h",), download=False)
    assert "sha256" in str(caught.value)
