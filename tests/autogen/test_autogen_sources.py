"""autogen.sources: the private apt configuration and unpacking packages into the cache (no network)."""
from __future__ import annotations

import pathlib
import shutil
import subprocess
import tarfile

import pytest

from autogen import sources

ARCHIVE_STANZAS = """\
Types: deb
URIs: http://archive.invalid/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://archive.invalid/debian-security
Suites: bookworm-security
"""


def test_private_apt_configuration_takes_the_archive_from_the_system(monkeypatch, tmp_path):
    system_sources = tmp_path / "debian.sources"
    system_sources.write_text(ARCHIVE_STANZAS)
    monkeypatch.setattr(sources, "SYSTEM_APT_SOURCES", system_sources)
    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path / "cache"))
    assert sources.archive_uri() == "http://archive.invalid/debian"
    sources.write_apt_config()
    written = (tmp_path / "cache" / "apt" / "sources.sources").read_text()
    assert "URIs: http://archive.invalid/debian\n" in written
    assert "Suites: bookworm trixie\n" in written
    assert "Components: main contrib non-free non-free-firmware\n" in written
    assert (tmp_path / "cache" / "apt" / "lists" / "partial").is_dir()
    options = sources.apt_options()
    assert options[options.index("-o") + 1] == "Dir::Etc::SourceList=/dev/null"


def test_missing_system_apt_sources_is_a_typed_error(monkeypatch, tmp_path):
    monkeypatch.setattr(sources, "SYSTEM_APT_SOURCES", tmp_path / "absent.sources")
    with pytest.raises(sources.SourceUnavailable, match="archive URI"):
        sources.archive_uri()


needs_dpkg_deb = pytest.mark.skipif(shutil.which("dpkg-deb") is None,
                                    reason="dpkg-deb is not installed (not a Debian system)")


def _build_deb(tmp_path: pathlib.Path, name: str, version: str) -> pathlib.Path:
    """A small .deb holding usr/src/<name>.tar.xz, laid out like linux-source-*."""
    tree = tmp_path / "tarball" / name
    (tree / "drivers" / "gpu").mkdir(parents=True)
    (tree / "drivers" / "gpu" / "wanted.h").write_text("#define WANTED 1\n")
    (tree / "other").mkdir()
    (tree / "other" / "unwanted.h").write_text("#define UNWANTED 1\n")
    package = tmp_path / "package"
    (package / "DEBIAN").mkdir(parents=True)
    (package / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: test <test@example.invalid>\n"
        "Description: test package\n")
    (package / "usr" / "src").mkdir(parents=True)
    with tarfile.open(package / "usr" / "src" / f"{name}.tar.xz", "w:xz") as archive:
        archive.add(tmp_path / "tarball" / name, arcname=name)
    debs = tmp_path / "cache" / "debs"
    debs.mkdir(parents=True)
    deb = debs / f"{name}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(package), str(deb)], check=True,
                   capture_output=True)
    return deb


@needs_dpkg_deb
def test_cached_deb_with_a_tarball_is_unpacked_member_by_member(monkeypatch, tmp_path):
    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path / "cache"))
    package = sources.Package("gpuhal-test-source", "1.2-3", "MIT", layout="tarball",
                              tarball="usr/src/gpuhal-test-source.tar.xz", members=("drivers/gpu",))
    _build_deb(tmp_path, package.name, package.version)
    root = sources.source_root(package, ["drivers/gpu/wanted.h"], download=False)
    assert root == tmp_path / "cache" / "src" / "gpuhal-test-source_1.2-3"
    assert (root / "drivers/gpu/wanted.h").read_text() == "#define WANTED 1\n"
    assert not (root / "other").exists()
    assert [p.name for p in root.parent.iterdir()] == ["gpuhal-test-source_1.2-3"]  # no scratch left


@needs_dpkg_deb
def test_cached_plain_deb_is_unpacked(monkeypatch, tmp_path):
    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path / "cache"))
    package = sources.Package("gpuhal-test-headers", "4.5-6", "MIT")
    _build_deb(tmp_path, package.name, package.version)
    root = sources.source_root(package, ["usr/src/gpuhal-test-headers.tar.xz"], download=False)
    assert (root / "usr/src/gpuhal-test-headers.tar.xz").is_file()


def test_installed_version_of_an_absent_package_is_none():
    assert sources.installed_version("gpuhal-no-such-package") is None
