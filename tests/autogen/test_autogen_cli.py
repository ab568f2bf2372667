"""`python -m autogen`: listing, checking and the errors for bad input."""
from __future__ import annotations

import dataclasses

import pytest

from autogen import GenerationError, __main__ as cli, manifest, sources


def test_list_names_every_target_with_its_package_version_and_licence(capsys):
    assert cli.main(["--list"]) == 0
    out = capsys.readouterr().out
    for target in manifest.TARGETS:
        assert target.name in out
    assert "linux-libc-dev 6.12.117-1" in out and "linux-source-6.12 6.12.117-1" in out
    assert "GPL-2.0 WITH Linux-syscall-note" in out
    assert "usr/include/linux/vfio.h" in out


def test_group_prefixes_select_targets():
    names = [target.name for target in manifest.select(["linux"])]
    assert names == ["linux.vfio", "linux.pci_regs", "linux.kfd_ioctl"]
    assert all(t.kind == manifest.KIND_AMD_REGS for t in manifest.select(["amd.regs"]))
    assert len(manifest.select([])) == len(manifest.TARGETS)


def test_unknown_target_lists_the_known_ones(capsys):
    assert cli.main(["linux.nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "unknown target 'linux.nonexistent'" in err
    assert "linux.vfio" in err and "amd.regs.gc_11_0_0" in err


def _fake_target() -> manifest.Target:
    package = sources.Package("gpuhal-no-such-package", "9.9-1", "MIT")
    return manifest.Target("fake.missing", manifest.KIND_STRUCTS, package, ("usr/include/missing.h",),
                           "A target whose package is nowhere.", output="autogen/fake/missing.py")


def test_missing_source_package_names_the_package_and_the_fetch_command(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path))
    target = _fake_target()
    monkeypatch.setattr(manifest, "TARGETS", manifest.TARGETS + (target,))
    assert cli.main(["--offline", "fake.missing"]) == 3
    err = capsys.readouterr().err
    assert "gpuhal-no-such-package 9.9-1" in err
    assert "python -m autogen fake.missing" in err
    with pytest.raises(sources.SourceUnavailable) as raised:
        sources.source_root(target.source, target.paths, download=False, target_names=[target.name])
    assert raised.value.package == "gpuhal-no-such-package" and raised.value.version == "9.9-1"


def test_offline_check_of_everything_reports_targets_without_sources(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(manifest, "TARGETS", (_fake_target(),))
    assert cli.run([], check=True, offline=True) == 0
    assert "fake.missing: not checked, sources not on this machine" in capsys.readouterr().out


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path))
    package = manifest.LINUX_SOURCE_6_12
    assert sources.unpacked_dir(package) == tmp_path / "src" / "linux-source-6.12_6.12.117-1"
    assert "Dir::Etc::SourceParts=" + str(tmp_path / "apt") in sources.apt_options()


def test_cached_source_tree_is_used_first(monkeypatch, tmp_path):
    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path))
    target = _fake_target()
    tree = sources.unpacked_dir(target.source)
    (tree / "usr/include").mkdir(parents=True)
    (tree / "usr/include/missing.h").write_text("#define PRESENT 1\n")
    assert sources.source_root(target.source, target.paths, download=False) == tree


def test_header_that_fails_to_parse_reports_clang_diagnostics(tmp_path):
    pytest.importorskip("clang.cindex", reason="the generator needs libclang")
    from autogen.clang_gen import HeaderParseError, ModuleSource, ParseConfig, generate_module

    header = tmp_path / "broken.h"
    header.write_text("struct fine { int a; };\nstruct broken { unknown_type b; };\n")
    source = ModuleSource("broken", "none", "0", "MIT", ("broken.h",), "Broken.")
    with pytest.raises(HeaderParseError) as raised:
        generate_module(ParseConfig(headers=(header,)), source)
    message = str(raised.value)
    assert f"{header}:2:" in message and "unknown type name 'unknown_type'" in message


def test_parse_failure_through_the_command_is_a_generation_error(monkeypatch, tmp_path, capsys):
    pytest.importorskip("clang.cindex", reason="the generator needs libclang")
    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path))
    target = _fake_target()
    tree = sources.unpacked_dir(target.source)
    (tree / "usr/include").mkdir(parents=True)
    (tree / "usr/include/missing.h").write_text("int broken(;\n")
    monkeypatch.setattr(manifest, "TARGETS", (target,))
    with pytest.raises(GenerationError):
        cli.generate_target(target, download=False)
    assert cli.main(["--offline", "fake.missing"]) == 4
    assert "missing.h:1:" in capsys.readouterr().err


def test_check_reports_a_difference(monkeypatch, tmp_path, capsys):
    pytest.importorskip("clang.cindex", reason="the generator needs libclang")
    target = manifest.BY_NAME["linux.pci_regs"]
    try:
        sources.source_root(target.source, target.paths, download=False)
    except sources.SourceUnavailable as exc:
        pytest.skip(f"uapi sources not on this machine: {exc}")
    copy = tmp_path / target.output
    copy.parent.mkdir(parents=True)
    original = (cli.REPOSITORY_ROOT / target.output).read_text()
    copy.write_text(original.replace("PCI_COMMAND = 4\n", "PCI_COMMAND = 5\n"))
    monkeypatch.setattr(cli, "REPOSITORY_ROOT", tmp_path)
    assert cli.run(["linux.pci_regs"], check=True, offline=True) == 1
    out = capsys.readouterr().out
    assert "autogen/linux/pci_regs.py: differs (2 lines changed)" in out
    assert "-PCI_COMMAND = 5" in out and "+PCI_COMMAND = 4" in out
    assert copy.read_text() != original  # --check writes nothing
    assert cli.run(["linux.pci_regs"], check=False, offline=True) == 0
    assert copy.read_text() == original


def test_adding_a_target_is_a_few_lines():
    package = sources.Package("linux-libc-dev", "6.1.187-1", manifest.UAPI_LICENCE)
    target = manifest.Target("linux.example", manifest.KIND_STRUCTS, package,
                             ("usr/include/linux/example.h",), "Example.", output="autogen/linux/example.py",
                             include_dirs=manifest.UAPI_INCLUDE_DIRS)
    assert (target.package, target.version) == ("linux-libc-dev", "6.1.187-1")
    assert target.licence == manifest.UAPI_LICENCE
    assert dataclasses.replace(target, licence_override="MIT").licence == "MIT"
