"""Source packages for the generator: finding, downloading and unpacking pinned Debian packages.

Every target pins a package and an exact version. `source_root(package)` returns a directory in which
the target's paths resolve, trying in order:
1. the cache: `$GPUHAL_CACHE/src/<package>_<version>/` (already unpacked), then a cached
   `$GPUHAL_CACHE/debs/<package>_<version>_*.deb` (unpacked now);
2. the installed system package, when `dpkg-query` reports exactly the pinned version (its files are
   under `/`): CI has linux-libc-dev installed and checks the uapi targets without a download;
3. `apt-get download <package>=<version>` with a private apt configuration under
   `$GPUHAL_CACHE/apt/` whose archive URI is read from the system's
   /etc/apt/sources.list.d/debian.sources at run time (the system's own apt state is not touched).
If none works, `SourceUnavailable` names the package, the pinned version, what is available and the
command to run. `$GPUHAL_CACHE` defaults to ~/.cache/gpuhal.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import re
import shutil
import subprocess
import tarfile
import tempfile
from typing import Iterable

log = logging.getLogger(__name__)
# one line per slow step (download, unpack); the CLI shows these even when not verbose
progress = logging.getLogger("autogen.progress")

CACHE_ENV = "GPUHAL_CACHE"
SYSTEM_APT_SOURCES = pathlib.Path("/etc/apt/sources.list.d/debian.sources")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
APT_SUITES = "bookworm trixie"
APT_COMPONENTS = "main contrib non-free non-free-firmware"
_COMMAND_TIMEOUT_S = 900


class SourceUnavailable(RuntimeError):
    """A pinned source package is neither cached, installed at that version, nor downloadable."""

    def __init__(self, message: str, *, package: str, version: str) -> None:
        super().__init__(message)
        self.package = package
        self.version = version


@dataclasses.dataclass(frozen=True)
class Package:
    """A pinned Debian binary package and how its files are laid out once unpacked.

    layout "deb": the package's own files (`usr/include/...`) are the source tree.
    layout "tarball": the package holds a source tarball (`tarball`, a path inside the package) whose
    top directory is stripped; only the `members` subtrees are unpacked.
    """

    name: str
    version: str
    licence: str
    layout: str = "deb"
    tarball: str = ""
    members: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.name}_{self.version}"


def cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get(CACHE_ENV) or pathlib.Path.home() / ".cache" / "gpuhal")


def unpacked_dir(package: Package) -> pathlib.Path:
    return cache_dir() / "src" / package.key


def fetch_command(target_names: Iterable[str]) -> str:
    return "python -m autogen " + " ".join(target_names)


def _has_paths(root: pathlib.Path, paths: Iterable[str]) -> bool:
    return all((root / path).is_file() for path in paths)


def installed_version(name: str) -> str | None:
    """The version dpkg reports for an installed package, or None."""
    if shutil.which("dpkg-query") is None:
        return None
    try:
        result = subprocess.run(["dpkg-query", "-W", "-f", "${Status}|${Version}", name],
                                capture_output=True, text=True, check=False, timeout=_COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log.warning("dpkg-query did not answer in %s s; treating %s as not installed", _COMMAND_TIMEOUT_S, name)
        return None
    if result.returncode != 0:
        return None
    status, _, version = result.stdout.partition("|")
    return version if status.endswith(" installed") else None


def source_root(package: Package, paths: Iterable[str], *, download: bool = True,
                target_names: Iterable[str] = ()) -> pathlib.Path:
    """A directory where every one of `paths` (inside the package) exists; see the module docstring."""
    paths = tuple(paths)
    cached = unpacked_dir(package)
    if _has_paths(cached, paths):
        return cached
    deb = cached_deb(package)
    if deb is not None:
        progress.info("unpacking %s %s into %s ...", package.name, package.version, cached)
        unpack(package, deb)
        if _has_paths(cached, paths):
            return cached
    if installed_version(package.name) == package.version and _has_paths(pathlib.Path("/"), paths):
        return pathlib.Path("/")
    if download:
        progress.info("downloading %s=%s into %s ...", package.name, package.version, cache_dir() / "debs")
        deb = download_deb(package, target_names)
        progress.info("unpacking %s %s into %s ...", package.name, package.version, cached)
        unpack(package, deb)
        if _has_paths(cached, paths):
            return cached
        missing = [path for path in paths if not (cached / path).is_file()]
        raise SourceUnavailable(f"{package.name} {package.version} does not contain: {', '.join(missing)}",
                                package=package.name, version=package.version)
    raise SourceUnavailable(_missing_message(package, target_names), package=package.name,
                            version=package.version)


def _missing_message(package: Package, target_names: Iterable[str]) -> str:
    installed = installed_version(package.name)
    have = f"installed: {installed}" if installed else "not installed"
    return (f"source package {package.name} {package.version} is not in the cache ({cache_dir()}) "
            f"and the system's is {have}; fetch it with: {fetch_command(target_names)}")


def cached_deb(package: Package) -> pathlib.Path | None:
    debs = sorted((cache_dir() / "debs").glob(f"{package.name}_{_deb_version(package.version)}_*.deb"))
    return debs[0] if debs else None


def _deb_version(version: str) -> str:
    # an epoch "1:2.3" is spelled "1%3a2.3" in .deb file names
    return version.replace(":", "%3a")


# ---------------------------------------------------------------------------------------- apt


def archive_uri() -> str:
    """The archive URI this machine's apt already uses (first URIs: line of debian.sources)."""
    try:
        text = SYSTEM_APT_SOURCES.read_text()
    except OSError as exc:
        raise SourceUnavailable(f"cannot read {SYSTEM_APT_SOURCES} for the archive URI: {exc}",
                                package="", version="") from None
    match = re.search(r"^URIs:\s*(\S+)", text, re.M)
    if match is None:
        raise SourceUnavailable(f"{SYSTEM_APT_SOURCES} has no URIs: line", package="", version="")
    return match.group(1)


def apt_dir() -> pathlib.Path:
    return cache_dir() / "apt"


def apt_options() -> list[str]:
    directory = apt_dir()
    return ["-o", "Dir::Etc::SourceList=/dev/null", "-o", f"Dir::Etc::SourceParts={directory}",
            "-o", f"Dir::State::Lists={directory / 'lists'}", "-o", f"Dir::Cache={directory / 'cache'}"]


def write_apt_config() -> None:
    directory = apt_dir()
    (directory / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (directory / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    text = (f"Types: deb deb-src\nURIs: {archive_uri()}\nSuites: {APT_SUITES}\n"
            f"Components: {APT_COMPONENTS}\nSigned-By: {KEYRING}\n")
    path = directory / "sources.sources"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _run(command: list[str], cwd: pathlib.Path | None = None) -> subprocess.CompletedProcess:
    log.info("running %s", " ".join(command))
    try:
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False,
                              timeout=_COMMAND_TIMEOUT_S)
    except FileNotFoundError as exc:
        raise SourceUnavailable(f"{command[0]} is not installed: {exc}", package="", version="") from None
    except subprocess.TimeoutExpired:
        raise SourceUnavailable(f"{' '.join(command)} did not finish in {_COMMAND_TIMEOUT_S} s",
                                package="", version="") from None


def apt_update() -> None:
    write_apt_config()
    result = _run(["apt-get", *apt_options(), "update"])
    if result.returncode != 0:
        raise SourceUnavailable(f"apt-get update with the private configuration failed:\n{result.stderr}",
                                package="", version="")


def available_versions(name: str) -> list[str]:
    """Versions of `name` the archive offers (private apt lists), newest first as apt-cache prints them."""
    result = _run(["apt-cache", *apt_options(), "madison", name])
    versions = []
    for line in result.stdout.splitlines():
        parts = [part.strip() for part in line.split("|")]
        if len(parts) >= 2 and parts[1] not in versions:
            versions.append(parts[1])
    return versions


def download_deb(package: Package, target_names: Iterable[str] = ()) -> pathlib.Path:
    """Download the pinned .deb into $GPUHAL_CACHE/debs with the private apt configuration."""
    debs = cache_dir() / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    apt_update()
    result = _run(["apt-get", *apt_options(), "download", f"{package.name}={package.version}"], cwd=debs)
    deb = cached_deb(package)
    if result.returncode != 0 or deb is None:
        versions = available_versions(package.name)
        offered = ", ".join(versions) if versions else "none"
        raise SourceUnavailable(
            f"cannot download {package.name}={package.version} (the archive offers: {offered}):\n"
            f"{result.stderr.strip()}\nafter fixing, run: {fetch_command(target_names)}",
            package=package.name, version=package.version)
    return deb


def unpack(package: Package, deb: pathlib.Path) -> pathlib.Path:
    """Unpack `deb` into the cache's src/<package>_<version>/ (atomically: a temporary dir, then rename)."""
    final = unpacked_dir(package)
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=f".{package.key}.") as scratch:
        scratch_path = pathlib.Path(scratch)
        contents = scratch_path / "deb"
        result = _run(["dpkg-deb", "-x", str(deb), str(contents)])
        if result.returncode != 0:
            raise SourceUnavailable(f"dpkg-deb -x {deb} failed: {result.stderr}", package=package.name,
                                    version=package.version)
        if package.layout == "tarball":
            tree = scratch_path / "tree"
            tree.mkdir()
            tarball = contents / package.tarball
            top = pathlib.PurePosixPath(package.tarball).name.split(".tar")[0]
            try:
                extract_members(tarball, tree, top, package.members)
            except (OSError, tarfile.TarError, EOFError, ValueError) as exc:
                raise SourceUnavailable(f"unpacking {package.tarball} from {deb} failed: {exc}",
                                        package=package.name, version=package.version) from exc
        else:
            tree = contents
        if final.exists():
            shutil.rmtree(final)
        tree.rename(final)
    return final


def extract_members(tarball: pathlib.Path, tree: pathlib.Path, top: str, members: Iterable[str]) -> int:
    """Unpack the regular files under `top/<member>/` of `tarball` into `tree`, without `top/`.

    Python's tarfile (with the standard library's lzma) does the work, so no `xz` program is needed.
    Names that are absolute or climb out with `..` are refused; links and devices are not unpacked
    (the generators read headers only). Returns how many files were written.
    """
    prefixes = tuple(f"{top}/{member.strip('/')}/" for member in members)
    written = 0
    with tarfile.open(tarball, "r:*") as archive:
        for entry in archive:
            if not entry.isfile() or not entry.name.startswith(prefixes):
                continue
            relative = pathlib.PurePosixPath(entry.name).relative_to(top)
            if relative.is_absolute() or ".." in relative.parts:
                raise ValueError(f"{tarball} holds an unsafe path {entry.name!r}")
            destination = tree.joinpath(*relative.parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(entry)
            if source is None:
                continue
            with source, open(destination, "wb") as out:
                shutil.copyfileobj(source, out)
            written += 1
    if written == 0:
        raise ValueError(f"{tarball} has no files under {', '.join(prefixes)}")
    return written
