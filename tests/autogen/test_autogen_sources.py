"""autogen.sources: the private apt configuration and unpacking packages into the cache (no network)."""
from __future__ import annotations

import pathlib
import shutil
import subprocess
import tarfile

import pytest

from autogen import sources

ARCHIVE = "http://archive.example/debian"

ARCHIVE_STANZAS = f"""\
Types: deb
URIs: {ARCHIVE}
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://archive.example/debian-security
Suites: bookworm-security
Components: main
"""

# what debootstrap writes, plus what a user might add around it
ONE_LINE_SOURCES = f"""\
# deb cdrom:[Debian GNU/Linux 12]/ bookworm main
deb http://archive.example/debian-security bookworm-security main
deb [arch=amd64 signed-by=/usr/share/keyrings/vendor.gpg] http://vendor.example/apt bookworm stable
deb [ arch=amd64 ] {ARCHIVE} bookworm main contrib  # the archive
"""


def _system_apt(monkeypatch, tmp_path, *, deb822: dict[str, str] | None = None,
                one_line: str | None = None) -> pathlib.Path:
    """A made-up /etc/apt with the given sources.list.d/*.sources files and sources.list."""
    etc = tmp_path / "etc-apt"
    (etc / "sources.list.d").mkdir(parents=True)
    for name, text in (deb822 or {}).items():
        (etc / "sources.list.d" / name).write_text(text)
    if one_line is not None:
        (etc / "sources.list").write_text(one_line)
    monkeypatch.setattr(sources, "SYSTEM_APT_ETC", etc)
    monkeypatch.delenv(sources.ARCHIVE_ENV, raising=False)
    return etc


def test_archive_is_read_from_the_deb822_sources(monkeypatch, tmp_path):
    _system_apt(monkeypatch, tmp_path, deb822={"debian.sources": ARCHIVE_STANZAS})
    assert sources.archive_uri() == ARCHIVE


def test_archive_is_read_from_a_one_line_sources_list(monkeypatch, tmp_path):
    # a debootstrapped Debian 12 has only /etc/apt/sources.list
    _system_apt(monkeypatch, tmp_path, one_line=ONE_LINE_SOURCES)
    assert sources.archive_uri() == ARCHIVE


def test_security_disabled_and_third_party_entries_are_passed_over(monkeypatch, tmp_path):
    vendor = ("Types: deb\nURIs: http://vendor.example/node\nSuites: nodistro\nComponents: main\n\n"
              "Types: deb\nURIs: http://disabled.example/debian\nSuites: trixie\nComponents: main\n"
              "Enabled: no\n")
    security_only = "Types: deb\nURIs: http://archive.example/debian-security\nSuites: bookworm-security\n" \
                    "Components: main\n"
    _system_apt(monkeypatch, tmp_path, deb822={"a-vendor.sources": vendor, "debian.sources": security_only},
                one_line=f"deb {ARCHIVE} bookworm main\n")
    assert sources.archive_uri() == ARCHIVE


def test_no_debian_archive_anywhere_says_what_to_configure(monkeypatch, tmp_path):
    etc = _system_apt(monkeypatch, tmp_path, one_line="deb http://vendor.example/apt bookworm stable\n")
    with pytest.raises(sources.SourceUnavailable) as raised:
        sources.archive_uri()
    message = str(raised.value)
    assert str(etc / "sources.list") in message and "*.sources" in message
    assert "deb <archive URI> bookworm main" in message and sources.ARCHIVE_ENV in message


def test_the_environment_names_the_archive_when_apt_does_not(monkeypatch, tmp_path):
    _system_apt(monkeypatch, tmp_path)
    monkeypatch.setenv(sources.ARCHIVE_ENV, ARCHIVE)
    assert sources.archive_uri() == ARCHIVE


def test_private_apt_configuration_fetches_one_index(monkeypatch, tmp_path):
    _system_apt(monkeypatch, tmp_path, deb822={"debian.sources": ARCHIVE_STANZAS})
    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "native_architecture", lambda: "amd64")
    package = sources.Package("gpuhal-test-headers", "1.0-1", "MIT", suite="trixie")
    sources.write_apt_config(package)
    written = (tmp_path / "cache" / "apt" / "sources.sources").read_text()
    # one suite, one component, one architecture, binary Packages only: no deb-src, no translations,
    # contents or DEP-11 (the old configuration asked for 2 suites x 4 components x deb and deb-src)
    assert written == (f"Types: deb\nURIs: {ARCHIVE}\nSuites: trixie\nComponents: main\n"
                       f"Architectures: amd64\nTargets: Packages\nSigned-By: {sources.KEYRING}\n")
    assert (tmp_path / "cache" / "apt" / "lists" / "partial").is_dir()
    options = sources.apt_options()
    assert options[options.index("-o") + 1] == "Dir::Etc::SourceList=/dev/null"
    assert "Acquire::Languages=none" in options and "Dir::Cache::pkgcache=" in options


def test_a_package_without_a_suite_cannot_be_downloaded():
    with pytest.raises(sources.SourceUnavailable, match="suite"):
        sources.apt_sources_text(sources.Package("gpuhal-test-headers", "1.0-1", "MIT"), ARCHIVE, "amd64")


def test_every_pinned_package_names_its_suite():
    from autogen import manifest
    debian = [target for target in manifest.TARGETS if target.source.layout != "git"]
    assert all(target.source.suite for target in debian)
    # a git-pinned file names its repository and the sha256 of every path used
    for target in manifest.TARGETS:
        if target.source.layout == "git":
            assert target.source.repository
            assert set(target.paths) <= set(dict(target.source.file_sha256))


def _fake_archive(monkeypatch, served: list[str]) -> list[str]:
    asked: list[str] = []
    monkeypatch.setattr(sources, "apt_update", lambda package: asked.append(package.name))
    monkeypatch.setattr(sources, "available_versions", lambda name: list(served))
    return asked


def test_a_pin_the_archive_dropped_is_pin_not_served(monkeypatch):
    asked = _fake_archive(monkeypatch, ["6.12.120-1", "6.12.118-1"])
    package = sources.Package("linux-libc-dev", "6.12.117-1", "GPL", suite="trixie")
    with pytest.raises(sources.PinNotServed) as raised:
        sources.check_served(package, ["linux.vfio"])
    assert raised.value.served == ["6.12.120-1", "6.12.118-1"]
    message = str(raised.value)
    assert "linux-libc-dev 6.12.117-1" in message and "trixie/main serves: 6.12.120-1" in message
    assert "python -m autogen --repin linux.vfio" in message
    assert asked == ["linux-libc-dev"]


def test_a_package_missing_from_its_suite_is_not_a_repin_case(monkeypatch):
    _fake_archive(monkeypatch, [])
    package = sources.Package("gpuhal-test-headers", "1.0-1", "MIT", suite="trixie")
    with pytest.raises(sources.SourceUnavailable) as raised:
        sources.check_served(package)
    assert not isinstance(raised.value, sources.PinNotServed)
    assert "no package gpuhal-test-headers" in str(raised.value)


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
