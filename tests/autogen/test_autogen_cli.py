"""`python -m autogen`: listing, checking and the errors for bad input."""
from __future__ import annotations

import dataclasses
import subprocess

import pytest

from autogen import GenerationError, __main__ as cli, manifest, sources


def test_list_names_every_target_with_its_package_version_and_licence(capsys):
    assert cli.main(["--list"]) == 0
    out = capsys.readouterr().out
    for target in manifest.TARGETS:
        assert target.name in out
    for package in (manifest.LINUX_LIBC_DEV, manifest.LINUX_SOURCE_6_12):
        assert f"{package.name} {package.version}" in out
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
    assert sources.unpacked_dir(package) == tmp_path / "src" / f"linux-source-6.12_{package.version}"
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


@pytest.mark.parametrize("argv", [["--list", "--check"], ["--list", "--repin", "linux"],
                                  ["--check", "--repin", "linux"], ["--repin"],
                                  ["--repin", "--offline", "linux"], ["--list", "--offline"]])
def test_contradictory_flags_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(argv)
    assert raised.value.code == 2
    assert "usage:" in capsys.readouterr().err


# ------------------------------------------------------- an archive that has moved on (no network)

FAKE_HEADER = "#define FAKE_VALUE {value}\nstruct fake_record {{ int a; }};\n"


@pytest.fixture
def fake_archive(monkeypatch, tmp_path):
    """The archive as apt sees it, faked: `served` maps a package to the versions its suite serves.

    Nothing is cached or installed, every apt refresh is counted, `apt-get download` fails as it does
    when the archive cannot be reached, and any other command fails the test: no network here.
    """
    state = {"served": {}, "updates": []}

    def no_command(command, cwd=None):
        if command[:1] == ["apt-get"] and "download" in command:
            return subprocess.CompletedProcess(command, 100, "", "E: simulated: the download failed")
        raise AssertionError(f"nothing else may run here: {command}")

    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "apt_update", lambda package: state["updates"].append(package.key))
    monkeypatch.setattr(sources, "available_versions", lambda name: list(state["served"].get(name, [])))
    monkeypatch.setattr(sources, "installed_version", lambda name: None)
    monkeypatch.setattr(sources, "_run", no_command)
    monkeypatch.setattr(cli, "REPOSITORY_ROOT", tmp_path / "repository")
    return state


def _pinned_target(name: str, version: str, output: str) -> manifest.Target:
    package = sources.Package("gpuhal-test-headers", version, "MIT", suite="trixie")
    return manifest.Target(name, manifest.KIND_STRUCTS, package, ("usr/include/fake.h",), "Fake headers.",
                           output=output)


def _cache_tree(package: sources.Package, value: int) -> None:
    tree = sources.unpacked_dir(package) / "usr/include"
    tree.mkdir(parents=True)
    (tree / "fake.h").write_text(FAKE_HEADER.format(value=value))


def test_check_of_a_pin_no_longer_served_warns_loudly_and_is_not_checked(monkeypatch, fake_archive, capsys):
    first = _pinned_target("fake.one", "1.0-1", "autogen/fake/one.py")
    second = _pinned_target("fake.two", "1.0-1", "autogen/fake/two.py")
    monkeypatch.setattr(manifest, "TARGETS", (first, second))
    fake_archive["served"]["gpuhal-test-headers"] = ["2.0-1"]
    assert cli.main(["--check", "fake"]) == 0
    err = capsys.readouterr().err
    assert "WARNING: fake.one: NOT CHECKED" in err
    assert "WARNING: fake.two: NOT CHECKED, gpuhal-test-headers 1.0-1 as above" in err
    assert "gpuhal-test-headers 1.0-1" in err and "trixie/main serves: 2.0-1" in err
    assert "python -m autogen --repin fake.one" in err
    assert "2 target(s) not checked" in err and "python -m autogen --repin fake.one fake.two" in err
    assert fake_archive["updates"] == ["gpuhal-test-headers_1.0-1"]  # the archive is asked once


def test_regenerating_from_a_pin_no_longer_served_is_an_error(monkeypatch, fake_archive, capsys):
    monkeypatch.setattr(manifest, "TARGETS", (_pinned_target("fake.one", "1.0-1", "autogen/fake/one.py"),))
    fake_archive["served"]["gpuhal-test-headers"] = ["2.0-1"]
    assert cli.main(["fake.one"]) == 3
    assert "python -m autogen --repin fake.one" in capsys.readouterr().err


def test_a_real_difference_still_fails_beside_a_pin_no_longer_served(monkeypatch, fake_archive, capsys):
    pytest.importorskip("clang.cindex", reason="the generator needs libclang")
    gone = _pinned_target("fake.gone", "1.0-1", "autogen/fake/gone.py")
    present_package = sources.Package("gpuhal-test-present", "3.0-1", "MIT", suite="trixie")
    present = dataclasses.replace(_pinned_target("fake.present", "3.0-1", "autogen/fake/present.py"),
                                  source=present_package)
    monkeypatch.setattr(manifest, "TARGETS", (gone, present))
    fake_archive["served"]["gpuhal-test-headers"] = ["2.0-1"]
    _cache_tree(present.source, 7)
    assert cli.main(["fake.present"]) == 0  # the committed file, at the pinned version
    committed = cli.REPOSITORY_ROOT / present.output
    committed.write_text(committed.read_text().replace("FAKE_VALUE = 7\n", "FAKE_VALUE = 8\n"))
    capsys.readouterr()
    assert cli.main(["--check", "fake"]) == 1
    captured = capsys.readouterr()
    assert "fake.gone: NOT CHECKED" in captured.err
    assert "autogen/fake/present.py: differs" in captured.out and "+FAKE_VALUE = 7" in captured.out


MANIFEST_TEXT = """\
FAKE = Package("gpuhal-test-headers", "1.0-1", "MIT", suite="trixie")
OTHER = Package("gpuhal-test-other", "1.0-1", "MIT", suite="trixie")
"""


def test_repin_pins_the_served_version_regenerates_and_shows_the_diff(monkeypatch, fake_archive, capsys):
    pytest.importorskip("clang.cindex", reason="the generator needs libclang")
    target = _pinned_target("fake.one", "1.0-1", "autogen/fake/one.py")
    monkeypatch.setattr(manifest, "TARGETS", (target,))
    manifest_file = cli.REPOSITORY_ROOT / cli.MANIFEST_PATH
    manifest_file.parent.mkdir(parents=True)
    manifest_file.write_text(MANIFEST_TEXT)
    _cache_tree(target.source, 1)
    assert cli.main(["fake.one"]) == 0
    output = cli.REPOSITORY_ROOT / target.output
    assert "SOURCE_VERSION = '1.0-1'" in output.read_text()
    fake_archive["served"]["gpuhal-test-headers"] = ["2.0-1"]
    _cache_tree(dataclasses.replace(target.source, version="2.0-1"), 2)
    capsys.readouterr()
    assert cli.main(["--repin", "fake.one"]) == 0
    out = capsys.readouterr().out
    assert manifest_file.read_text() == MANIFEST_TEXT.replace('headers", "1.0-1"', 'headers", "2.0-1"')
    assert "SOURCE_VERSION = '2.0-1'" in output.read_text()
    assert "FAKE_VALUE = 2" in output.read_text()
    assert "-FAKE_VALUE = 1" in out and "+FAKE_VALUE = 2" in out
    assert '+FAKE = Package("gpuhal-test-headers", "2.0-1"' in out
    assert "gpuhal-test-headers 1.0-1 -> 2.0-1" in out


def test_repin_leaves_the_manifest_alone_when_regeneration_fails(monkeypatch, fake_archive, capsys):
    target = _pinned_target("fake.one", "1.0-1", "autogen/fake/one.py")
    monkeypatch.setattr(manifest, "TARGETS", (target,))
    manifest_file = cli.REPOSITORY_ROOT / cli.MANIFEST_PATH
    manifest_file.parent.mkdir(parents=True)
    manifest_file.write_text(MANIFEST_TEXT)
    fake_archive["served"]["gpuhal-test-headers"] = ["2.0-1"]
    # 2.0-1 is served but its download fails
    assert cli.main(["--repin", "fake.one"]) == 3
    assert "E: simulated: the download failed" in capsys.readouterr().err
    assert manifest_file.read_text() == MANIFEST_TEXT
    assert not (cli.REPOSITORY_ROOT / target.output).exists()


def test_rewrite_pin_needs_exactly_one_pin():
    package = sources.Package("gpuhal-test-headers", "1.0-1", "MIT", suite="trixie")
    assert '"gpuhal-test-headers", "9.0-1"' in cli.rewrite_pin(MANIFEST_TEXT, package, "9.0-1")
    with pytest.raises(GenerationError, match="found 0"):
        cli.rewrite_pin(MANIFEST_TEXT, dataclasses.replace(package, version="0.5-1"), "9.0-1")
