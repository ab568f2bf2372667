"""Source packages for the generator: finding, downloading and unpacking pinned Debian packages.

Every target pins a package, an exact version and the archive suite/component that serves it.
`source_root(package)` returns a directory in which the target's paths resolve, trying in order:
1. the cache: `$GPUHAL_CACHE/src/<package>_<version>/` (already unpacked), then a cached
   `$GPUHAL_CACHE/debs/<package>_<version>_*.deb` (unpacked now);
2. the installed system package, when `dpkg-query` reports exactly the pinned version (its files are
   under `/`). Debian 12's own linux-libc-dev (6.1, pulled in by gcc) never matches the 6.12 pin, so
   on a Debian 12 machine the uapi targets come from the cache or a download;
3. `apt-get download <package>=<version>` with a private apt configuration under
   `$GPUHAL_CACHE/apt/`: one `deb` entry for the package's suite and component, the native
   architecture, the Packages index only (no translations, contents or source indexes). The archive
   URI is read at run time from the system's apt configuration (deb822 `*.sources` or the classic
   `sources.list`), or from $GPUHAL_DEBIAN_ARCHIVE; the system's own apt state is not touched.
A package with layout "source" is a Debian source package: only its upstream `.orig` tarball is
fetched (`apt-get source --download-only` over the suite's Sources index), checked against the
sha256 pinned in the manifest, and the listed subtrees are unpacked from it.
If none works, `SourceUnavailable` names the package, the pinned version, what is available and the
command to run; `PinNotServed` (a subclass) says the archive no longer serves the pinned version and
names the re-pin command. `$GPUHAL_CACHE` defaults to ~/.cache/gpuhal.
"""
from __future__ import annotations

import dataclasses
import hashlib
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
ARCHIVE_ENV = "GPUHAL_DEBIAN_ARCHIVE"
# where apt keeps the system's sources: deb822 `sources.list.d/*.sources` and the classic one-line
# `sources.list` (plus `sources.list.d/*.list`); see sources.list(5)
SYSTEM_APT_ETC = pathlib.Path("/etc/apt")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# Debian's release codenames and suite aliases: an entry for one of these with component main is
# the Debian archive (third-party repositories use their own suites or components)
DEBIAN_SUITES = frozenset({"buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
                           "oldoldstable", "oldstable", "stable", "testing", "unstable", "experimental"})
# the security archive is a different tree, which does not carry the pinned packages
SECURITY_SUFFIX = "-security"
_COMMAND_TIMEOUT_S = 900


class SourceUnavailable(RuntimeError):
    """A pinned source package is neither cached, installed at that version, nor downloadable."""

    def __init__(self, message: str, *, package: str, version: str) -> None:
        super().__init__(message)
        self.package = package
        self.version = version


class PinNotServed(SourceUnavailable):
    """The archive no longer serves a pinned version (Debian keeps only the newest of a suite)."""

    def __init__(self, message: str, *, package: str, version: str, served: list[str]) -> None:
        super().__init__(message, package=package, version=version)
        self.served = served


@dataclasses.dataclass(frozen=True)
class Package:
    """A pinned Debian package (binary, or source with layout "source") and its layout once unpacked.

    layout "deb": the package's own files (`usr/include/...`) are the source tree.
    layout "tarball": the package holds a source tarball (`tarball`, a path inside the package) whose
    top directory is stripped; only the `members` subtrees are unpacked.
    layout "source": `name` is a Debian source package; its upstream tarball
    (`<name>_<upstream version>.orig.tar.*`, whose sha256 must be `orig_sha256`) is unpacked with
    its top directory `top` stripped; only the `members` subtrees are unpacked.
    layout "git": files of a public git repository (`repository`, "owner/name") at commit `version`,
    placed by hand in the cache (`$GPUHAL_CACHE/src/<name>_<commit>/<path>`) and checked against
    `file_sha256` ((path, sha256) pairs); never downloaded: SourceUnavailable says how to place them.
    `suite` and `component` say where in the archive the pinned version lives; only that one index
    is downloaded.
    """

    name: str
    version: str
    licence: str
    suite: str = ""
    component: str = "main"
    layout: str = "deb"
    tarball: str = ""
    members: tuple[str, ...] = ()
    orig_sha256: str = ""
    top: str = ""
    repository: str = ""  # layout "git": "owner/name" of the repository
    file_sha256: tuple[tuple[str, str], ...] = ()  # layout "git": (path, sha256) of each file used

    @property
    def key(self) -> str:
        return f"{self.name}_{self.version}"

    @property
    def upstream_version(self) -> str:
        """The version without epoch and Debian revision: what the .orig tarball is named by."""
        without_epoch = self.version.rpartition(":")[2]
        return without_epoch.rpartition("-")[0] or without_epoch


def cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get(CACHE_ENV) or pathlib.Path.home() / ".cache" / "gpuhal")


def unpacked_dir(package: Package) -> pathlib.Path:
    return cache_dir() / "src" / package.key


def fetch_command(target_names: Iterable[str]) -> str:
    return "python -m autogen " + " ".join(target_names)


def repin_command(target_names: Iterable[str]) -> str:
    return "python -m autogen --repin " + (" ".join(target_names) or "TARGET")


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
        log.warning("dpkg-query did not answer in %s s; treating %s as not installed",
                    _COMMAND_TIMEOUT_S, name)
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
    if package.layout == "git":
        return _git_files(package, paths, target_names)
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


def _git_files(package: Package, paths: tuple[str, ...], target_names: Iterable[str]) -> pathlib.Path:
    """The cache directory holding `paths` of a "git" layout package, each with its pinned sha256."""
    cached = unpacked_dir(package)
    pinned = dict(package.file_sha256)
    for path in paths:
        file = cached / path
        if path not in pinned:
            raise SourceUnavailable(f"{package.name} {package.version}: {path} has no pinned sha256 in "
                                    f"the manifest", package=package.name, version=package.version)
        if not file.is_file():
            raise SourceUnavailable(
                f"{path} of {package.repository} at commit {package.version} is not in the cache "
                f"({file}); it is never downloaded by the generator. Place it with:\n"
                f"  git clone https://github.com/{package.repository} /tmp/{package.name}\n"
                f"  mkdir -p {file.parent}\n"
                f"  git -C /tmp/{package.name} show {package.version}:{path} > {file}\n"
                f"then run: {fetch_command(target_names)}", package=package.name, version=package.version)
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        if digest != pinned[path]:
            raise SourceUnavailable(f"{file}: sha256 {digest}, the manifest pins {pinned[path]} "
                                    f"({package.repository} at {package.version}); place that commit's "
                                    f"file there", package=package.name, version=package.version)
    return cached


def _missing_message(package: Package, target_names: Iterable[str]) -> str:
    installed = installed_version(package.name)
    have = f"installed: {installed}" if installed else "not installed"
    return (f"source package {package.name} {package.version} is not in the cache ({cache_dir()}) "
            f"and the system's is {have}; fetch it with: {fetch_command(target_names)}")


def cached_deb(package: Package) -> pathlib.Path | None:
    if package.layout == "source":
        pattern = f"{package.name}_{package.upstream_version}.orig.tar.*"
        origs = sorted((cache_dir() / "debs").glob(pattern))
        return origs[0] if origs else None
    debs = sorted((cache_dir() / "debs").glob(f"{package.name}_{_deb_version(package.version)}_*.deb"))
    return debs[0] if debs else None


def _deb_version(version: str) -> str:
    # an epoch "1:2.3" is spelled "1%3a2.3" in .deb file names
    return version.replace(":", "%3a")


# ---------------------------------------------------------------------------------------- apt


@dataclasses.dataclass(frozen=True)
class AptEntry:
    """One entry of the system's apt sources: a line of sources.list or a stanza of a .sources file."""

    types: tuple[str, ...]
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    origin: str  # the file it came from, for messages

    def is_debian_archive(self) -> bool:
        """A binary or source entry of the Debian archive itself (not security, cdrom or third-party)."""
        if not {"deb", "deb-src"} & set(self.types) or self.uri.startswith("cdrom:"):
            return False
        if "main" not in self.components:
            return False
        return any(suite.partition("-")[0] in DEBIAN_SUITES and not suite.endswith(SECURITY_SUFFIX)
                   for suite in self.suites)


def parse_deb822_sources(text: str, origin: str) -> list[AptEntry]:
    """The enabled stanzas of a deb822 `.sources` file (sources.list(5), "DEB822-STYLE FORMAT")."""
    entries = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[:1].isspace() and key:
                fields[key] += " " + line.strip()
                continue
            key, separator, value = line.partition(":")
            if not separator:
                key = ""
                continue
            key = key.strip().lower()
            fields[key] = value.strip()
        if fields.get("enabled", "yes").lower() == "no" or not fields.get("uris"):
            continue
        for uri in fields["uris"].split():
            entries.append(AptEntry(tuple(fields.get("types", "").split()), uri,
                                    tuple(fields.get("suites", "").split()),
                                    tuple(fields.get("components", "").split()), origin))
    return entries


def parse_one_line_sources(text: str, origin: str) -> list[AptEntry]:
    """The entries of a classic `sources.list`: `deb [options] uri suite [component...]` per line."""
    entries = []
    for line in text.splitlines():
        words = line.partition("#")[0].split()
        if len(words) < 3:
            continue
        kind, rest = words[0], words[1:]
        if rest[0].startswith("["):
            # options run to the word that closes the bracket
            while rest and not rest[0].endswith("]"):
                rest = rest[1:]
            rest = rest[1:]
        if len(rest) < 2:
            continue
        entries.append(AptEntry((kind,), rest[0], (rest[1],), tuple(rest[2:]), origin))
    return entries


def system_apt_entries() -> tuple[list[AptEntry], list[pathlib.Path]]:
    """Every entry of the system's apt sources, and the files read (debian.sources first)."""
    parts = SYSTEM_APT_ETC / "sources.list.d"
    deb822 = sorted(parts.glob("*.sources"), key=lambda path: (path.name != "debian.sources", path.name))
    files = [*deb822, SYSTEM_APT_ETC / "sources.list", *sorted(parts.glob("*.list"))]
    entries: list[AptEntry] = []
    read = []
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        read.append(path)
        parse = parse_deb822_sources if path.suffix == ".sources" else parse_one_line_sources
        entries.extend(parse(text, str(path)))
    return entries, read


def archive_uri() -> str:
    """The Debian archive URI: $GPUHAL_DEBIAN_ARCHIVE, else the first one the system's apt uses."""
    configured = os.environ.get(ARCHIVE_ENV)
    if configured:
        return configured
    entries, read = system_apt_entries()
    for entry in entries:
        if entry.is_debian_archive():
            log.info("archive URI from %s", entry.origin)
            return entry.uri
    looked = ", ".join(str(path) for path in read) or "none could be read"
    raise SourceUnavailable(
        f"no Debian archive in the system's apt sources (files read: {looked}; looked for a 'deb' entry "
        f"with a Debian suite such as bookworm and component main, in "
        f"{SYSTEM_APT_ETC / 'sources.list.d'}/*.sources or {SYSTEM_APT_ETC / 'sources.list'}); add "
        f"one, e.g. the line 'deb <archive URI> bookworm main' to {SYSTEM_APT_ETC / 'sources.list'}, "
        f"or set {ARCHIVE_ENV}=<archive URI>", package="", version="")


def native_architecture() -> str:
    result = _run(["dpkg", "--print-architecture"])
    architecture = result.stdout.strip()
    if result.returncode != 0 or not architecture:
        raise SourceUnavailable(f"dpkg --print-architecture failed: {result.stderr.strip()}",
                                package="", version="")
    return architecture


def apt_dir() -> pathlib.Path:
    return cache_dir() / "apt"


def apt_options() -> list[str]:
    """apt options that use only the private configuration and keep its footprint small."""
    directory = apt_dir()
    return ["-o", "Dir::Etc::SourceList=/dev/null", "-o", f"Dir::Etc::SourceParts={directory}",
            "-o", f"Dir::State::Lists={directory / 'lists'}", "-o", f"Dir::Cache={directory / 'cache'}",
            # no binary caches on disk (rebuilt in memory, about a second), indexes kept compressed
            "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=",
            "-o", "Acquire::GzipIndexes=true", "-o", "Acquire::Languages=none"]


def apt_sources_text(package: Package, uri: str, architecture: str) -> str:
    """The one entry `package` needs: its suite and component, one architecture, Packages only.

    `Targets: Packages` leaves out every other index apt would fetch by default or by local
    configuration (translations, contents, DEP-11 metadata); sources.list(5) "Targets".
    """
    if not package.suite:
        raise SourceUnavailable(f"{package.name} {package.version} has no archive suite in "
                                f"autogen/manifest.py (Package(..., suite=...))",
                                package=package.name, version=package.version)
    if package.layout == "source":
        # a source package: the Sources index of the suite, nothing else (sources.list(5))
        return (f"Types: deb-src\nURIs: {uri}\nSuites: {package.suite}\n"
                f"Components: {package.component}\nTargets: Sources\nSigned-By: {KEYRING}\n")
    return (f"Types: deb\nURIs: {uri}\nSuites: {package.suite}\nComponents: {package.component}\n"
            f"Architectures: {architecture}\nTargets: Packages\nSigned-By: {KEYRING}\n")


def write_apt_config(package: Package) -> None:
    directory = apt_dir()
    (directory / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (directory / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    text = apt_sources_text(package, archive_uri(), native_architecture())
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


def apt_update(package: Package) -> None:
    """Refresh the private index for `package`'s suite and component."""
    write_apt_config(package)
    progress.info("updating the %s/%s package index into %s ...", package.suite, package.component,
                  apt_dir() / "lists")
    result = _run(["apt-get", *apt_options(), "update"])
    if result.returncode != 0:
        raise SourceUnavailable(f"apt-get update with the private configuration failed:\n{result.stderr}",
                                package="", version="")
    _report_fetched(result.stdout)


def _report_fetched(apt_output: str) -> None:
    """Pass on apt's own "Fetched N kB in T s" line, so the amount downloaded is visible."""
    for line in apt_output.splitlines():
        if line.startswith("Fetched "):
            progress.info("  apt: %s", line.strip())


def available_versions(name: str) -> list[str]:
    """Versions of `name` the archive offers (private apt lists), newest first as apt-cache prints them."""
    result = _run(["apt-cache", *apt_options(), "madison", name])
    versions = []
    for line in result.stdout.splitlines():
        parts = [part.strip() for part in line.split("|")]
        if len(parts) >= 2 and parts[1] not in versions:
            versions.append(parts[1])
    return versions


def served_versions(package: Package) -> list[str]:
    """The versions of `package` its suite and component serve now (fresh index), newest first."""
    apt_update(package)
    return available_versions(package.name)


def check_served(package: Package, target_names: Iterable[str] = ()) -> list[str]:
    """The served versions; PinNotServed when the pinned one is not among them."""
    versions = served_versions(package)
    where = f"{package.suite}/{package.component}"
    if not versions:
        raise SourceUnavailable(f"the archive's {where} has no package {package.name} at all; check the "
                                f"suite and component pinned in autogen/manifest.py",
                                package=package.name, version=package.version)
    if package.version not in versions:
        raise PinNotServed(
            f"the pinned {package.name} {package.version} is not cached, not installed, and no longer "
            f"served by the archive ({where} serves: {', '.join(versions)}); re-pin to the served "
            f"version, regenerate and review the diff with: {repin_command(target_names)}",
            package=package.name, version=package.version, served=versions)
    return versions


def download_deb(package: Package, target_names: Iterable[str] = ()) -> pathlib.Path:
    """Download the pinned .deb into $GPUHAL_CACHE/debs with the private apt configuration."""
    debs = cache_dir() / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    versions = check_served(package, target_names)
    if package.layout == "source":
        return _download_orig(package, versions, target_names)
    result = _run(["apt-get", *apt_options(), "download", f"{package.name}={package.version}"], cwd=debs)
    _report_fetched(result.stdout)
    deb = cached_deb(package)
    if result.returncode != 0 or deb is None:
        raise SourceUnavailable(
            f"cannot download {package.name}={package.version} (the archive offers: "
            f"{', '.join(versions)}):\n{result.stderr.strip()}\n"
            f"after fixing, run: {fetch_command(target_names)}",
            package=package.name, version=package.version)
    return deb


def sha256_of(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_orig(package: Package, versions: list[str], target_names: Iterable[str]) -> pathlib.Path:
    """Fetch a source package's upstream tarball into $GPUHAL_CACHE/debs and check its sha256.

    apt-get also asks for the .dsc and the Debian packaging tarball; only the upstream tarball is
    read, so a mirror that lacks the others (apt exits non-zero) is fine once the hash matches.
    """
    debs = cache_dir() / "debs"
    with tempfile.TemporaryDirectory(dir=debs, prefix=f".{package.key}.") as scratch:
        result = _run(["apt-get", *apt_options(), "source", "--download-only",
                       f"{package.name}={package.version}"], cwd=pathlib.Path(scratch))
        _report_fetched(result.stdout)
        origs = sorted(pathlib.Path(scratch).glob(f"{package.name}_{package.upstream_version}.orig.tar.*"))
        if not origs:
            raise SourceUnavailable(
                f"cannot download the upstream tarball of {package.name}={package.version} (the archive "
                f"offers: {', '.join(versions)}):\n{result.stderr.strip()}\n"
                f"after fixing, run: {fetch_command(target_names)}",
                package=package.name, version=package.version)
        digest = sha256_of(origs[0])
        if digest != package.orig_sha256:
            raise SourceUnavailable(
                f"{origs[0].name}: sha256 {digest}, the manifest pins {package.orig_sha256}; the "
                f"archive's tarball is not the pinned one", package=package.name, version=package.version)
        final = debs / origs[0].name
        origs[0].rename(final)
    return final


def unpack(package: Package, deb: pathlib.Path) -> pathlib.Path:
    """Unpack `deb` into the cache's src/<package>_<version>/ (atomically: a temporary dir, then rename)."""
    final = unpacked_dir(package)
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=f".{package.key}.") as scratch:
        scratch_path = pathlib.Path(scratch)
        contents = scratch_path / "deb"
        if package.layout == "source":
            if sha256_of(deb) != package.orig_sha256:
                raise SourceUnavailable(f"{deb}: sha256 differs from the pinned {package.orig_sha256}; "
                                        f"delete it and fetch again", package=package.name,
                                        version=package.version)
            tree = scratch_path / "tree"
            tree.mkdir()
            try:
                extract_members(deb, tree, package.top, package.members)
            except (OSError, tarfile.TarError, EOFError, ValueError) as exc:
                raise SourceUnavailable(f"unpacking {deb} failed: {exc}", package=package.name,
                                        version=package.version) from exc
            if final.exists():
                shutil.rmtree(final)
            tree.rename(final)
            return final
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

    A member may also name a single file (`src/freedreno/vulkan/msm_kgsl.h`).

    Python's tarfile (with the standard library's lzma) does the work, so no `xz` program is needed.
    Names that are absolute or climb out with `..` are refused; links and devices are not unpacked
    (the generators read headers only). Returns how many files were written.
    """
    prefixes = tuple(f"{top}/{member.strip('/')}/" for member in members)
    files = frozenset(f"{top}/{member.strip('/')}" for member in members)
    written = 0
    with tarfile.open(tarball, "r:*") as archive:
        for entry in archive:
            if not entry.isfile() or not (entry.name.startswith(prefixes) or entry.name in files):
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
