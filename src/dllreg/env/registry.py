"""Where libraries live: site directories, installed manifests and their consumers.

This module is the filesystem edge for reading the registry; decisions over what it
returns live in env/check.py and the CLI.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ..errors import DllregError, ManifestError
from ..libwheel.manifest import MANIFEST_NAME, Manifest
from ..names import (
    EXTERNAL_PROVIDERS,
    PYPI,
    REGISTRY_DIR,
    WHEEL,
    NativeRequirement,
    preference,
    registry_folder,
)
from ..stub import _runtime

#: File in a consumer's ``.dist-info`` recording its native requirements (docs/pyproject.md);
#: hatchling's build hook can only place it under ``extra_metadata/``.
CONSUMER_RECORD = "dllreg.json"
_RECORD_PLACES = (CONSUMER_RECORD, f"extra_metadata/{CONSUMER_RECORD}")
#: The stub's search order (its own site directory, then sys.path's absolute entries).
_search_dirs: Callable[[str | None, Sequence[object]], list[str]] = _runtime._search_dirs


@dataclasses.dataclass(frozen=True)
class InstalledLibrary:
    manifest: Manifest
    directory: Path  # <site>/dllreg.libs/<name>
    site: Path

    @property
    def provider(self) -> str:
        return self.manifest.provider

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST_NAME

    def file_path(self, rel: str) -> Path:
        if self.manifest.external and (rel.startswith("/") or rel[1:3] == ":/"):
            return Path(rel)  # an external provider's file, recorded by absolute path
        return self.directory.joinpath(*rel.split("/"))


@dataclasses.dataclass(frozen=True)
class Consumer:
    """An installed distribution that declares native requirements."""

    name: str
    version: str
    requires: tuple[NativeRequirement, ...]
    dist_info: Path
    vendored: tuple[str, ...] = ()  # libraries its wheel carries itself (`dllreg vendor`)


def site_dirs(extra: Iterable[str] = (), path: Sequence[object] | None = None) -> list[Path]:
    """The directories the stub searches, in order: ``extra`` then ``path`` (``sys.path``).

    The stub's own definition (``_runtime._search_dirs``): relative entries (the current
    directory among them) are never searched, and an entry that is not a directory (a zip,
    an egg, a file, a missing folder) holds nothing.
    """
    out: list[Path] = []
    for entry in extra:  # given by the user (--path): relative to the current directory
        if not os.path.isdir(entry):
            raise DllregError(f"--path {entry}: not a directory")
        if Path(os.path.abspath(entry)) not in out:
            out.append(Path(os.path.abspath(entry)))
    for entry in _search_dirs(None, sys.path if path is None else path):
        if os.path.isdir(entry) and Path(entry) not in out:
            out.append(Path(entry))
    return out


def drop_program_entry() -> None:
    """Remove the entry Python put first on ``sys.path`` for the running program (``python
    -m``'s current directory, a console script's folder): a consumer's import elsewhere does
    not search it, so neither may ``check``. Only the CLI's entry point calls this."""
    if sys.path and not (getattr(sys.flags, "safe_path", False) or sys.flags.isolated):
        del sys.path[0]


def folder_provider(folder: str) -> tuple[str, str] | None:
    """(library name, provider) of a folder under ``dllreg.libs``; None for anything else
    (the lock file, a writer's temporary files)."""
    name, dot, provider = folder.partition(".")
    if not dot:
        return folder, WHEEL
    return (name, provider) if provider in EXTERNAL_PROVIDERS else None


class BadRegistration(ManifestError):
    """An external registration whose manifest cannot be used (``unregister`` removes it)."""

    def __init__(self, message: str, name: str, provider: str) -> None:
        super().__init__(message)
        self.name, self.provider = name, provider


def read_library(directory: Path) -> InstalledLibrary:
    path = directory / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        raise ManifestError(f"{path}: cannot read manifest ({exc})") from None
    lib = InstalledLibrary(Manifest.from_text(text, str(path)), directory, directory.parent.parent)
    expected = folder_provider(directory.name)
    if expected != (lib.manifest.name, lib.manifest.provider):
        raise ManifestError(f"{path}: manifest of {lib.manifest.name} (provider "
                            f"{lib.manifest.provider}) in the folder {directory.name}")
    return lib


def prefer() -> tuple[str, ...]:
    """The provider order in effect, as the stub computes it (``DLLREG_PREFER``)."""
    return preference(os.environ.get("DLLREG_PREFER"))


def _pypi_copy(name: str, site: Path) -> InstalledLibrary | None:
    """The copy of ``name`` a PyPI wheel provider installed as it is in ``site``, if any."""
    from ..recipes.wheelprovider import host_providers, provider_home, wheel_manifest

    hit = host_providers().get(name)
    manifest = wheel_manifest(*hit, site) if hit else None
    return InstalledLibrary(manifest, provider_home(site, hit[1]), site) if hit and manifest else None


def installed_libraries(dirs: Sequence[Path]) -> tuple[list[InstalledLibrary], list[DllregError]]:
    """Every library in every site dir, in search order (shadowed copies included; within a
    site, the providers in preference order), and the manifests that could not be read."""
    from ..recipes.wheelprovider import host_providers

    found: list[InstalledLibrary] = []
    errors: list[DllregError] = []
    rank = {p: i for i, p in enumerate(prefer())}
    for site in dirs:
        pypi: dict[str, InstalledLibrary] = {}
        for name in host_providers():
            try:
                if (copy := _pypi_copy(name, site)) is not None:
                    pypi[name] = copy
            except DllregError as exc:
                errors.append(exc)
        root = site / REGISTRY_DIR
        try:
            folders = os.listdir(root)
        except OSError:
            folders = []
        entries = sorted([(np[0], rank[np[1]], f) for f in folders
                          if (np := folder_provider(f)) is not None]
                         + [(name, rank[PYPI], "") for name in pypi])
        for name, _, folder in entries:
            if not folder:
                found.append(pypi[name])
            elif (root / folder / MANIFEST_NAME).exists():
                try:
                    found.append(read_library(root / folder))
                except DllregError as exc:
                    name, provider = folder_provider(folder) or (folder, WHEEL)
                    errors.append(exc if provider == WHEEL else
                                  BadRegistration(str(exc), name, provider))
    return found, errors


def find_library(name: str, dirs: Sequence[Path]) -> InstalledLibrary | None:
    """The first installed copy of ``name`` in search order, as the stub would see it."""
    for site in dirs:
        for provider in prefer():
            if provider == PYPI:
                if (copy := _pypi_copy(name, site)) is not None:
                    return copy
                continue
            directory = site / REGISTRY_DIR / registry_folder(name, provider)
            if (directory / MANIFEST_NAME).is_file():
                return read_library(directory)
    return None


def _consumer_record_path(dist_info: Path) -> Path | None:
    for place in _RECORD_PLACES:
        if (dist_info / place).is_file():
            return dist_info / place
    return None


def read_consumer_record(dist_info: Path) -> tuple[NativeRequirement, ...]:
    path = _consumer_record_path(dist_info) or dist_info / CONSUMER_RECORD
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return tuple(NativeRequirement.parse(r) for r in data["requires"])
    except (OSError, ValueError, KeyError, TypeError, DllregError) as exc:
        raise ManifestError(f"{path}: unreadable consumer record ({exc})") from None


def _vendored(dist_info: Path) -> tuple[str, ...]:
    path = _consumer_record_path(dist_info) or dist_info / CONSUMER_RECORD
    try:
        return tuple(json.loads(path.read_text(encoding="utf-8")).get("vendored", {}))
    except (OSError, ValueError, AttributeError) as exc:
        raise ManifestError(f"{path}: unreadable consumer record ({exc})") from None


def consumer_stubs(dist_info: Path) -> tuple[str, ...]:
    """The stubs a consumer's wheel installed (``pkg/_dlls.py``), from its record."""
    path = _consumer_record_path(dist_info) or dist_info / CONSUMER_RECORD
    try:
        return tuple(json.loads(path.read_text(encoding="utf-8")).get("stubs", []))
    except (OSError, ValueError, AttributeError) as exc:
        raise ManifestError(f"{path}: unreadable consumer record ({exc})") from None


def installed_consumers(dirs: Sequence[Path]) -> tuple[list[Consumer], list[DllregError]]:
    consumers: list[Consumer] = []
    errors: list[DllregError] = []
    seen: set[str] = set()
    for site in dirs:
        try:
            entries = sorted(os.listdir(site))
        except OSError:
            continue
        for entry in entries:
            if not entry.endswith(".dist-info"):
                continue
            dist_info = site / entry
            if _consumer_record_path(dist_info) is None:
                continue
            name, _, version = entry[: -len(".dist-info")].partition("-")
            if name.lower() in seen:  # shadowed by an earlier site dir, as for imports
                continue
            seen.add(name.lower())
            try:
                requires = read_consumer_record(dist_info)
                vendored = _vendored(dist_info)
            except DllregError as exc:
                errors.append(exc)
                continue
            consumers.append(Consumer(name, version, requires, dist_info, vendored))
    return consumers, errors


def library_dist_infos(dirs: Sequence[Path]) -> dict[Path, dict[str, tuple[str, str]]]:
    """What pip sees of library wheels: site -> {library name: (version, INSTALLER)} of every
    ``dllreg_lib_NAME-V.dist-info`` (registrations write ones whose INSTALLER is dllreg)."""
    out: dict[Path, dict[str, tuple[str, str]]] = {}
    for site in dirs:
        try:
            entries = os.listdir(site)
        except OSError:
            continue
        for entry in entries:
            if entry.startswith("dllreg_lib_") and entry.endswith(".dist-info"):
                name, _, version = entry[len("dllreg_lib_"):-len(".dist-info")].partition("-")
                try:
                    installer = (site / entry / "INSTALLER").read_text(encoding="utf-8").strip()
                except OSError:
                    installer = ""
                out.setdefault(site, {})[name.replace("_", "-")] = (version, installer)
    return out


_BINARY_SUFFIXES = (".so", ".pyd", ".dll", ".dylib")
_VERSIONED_SO = re.compile(r"\.so(\.\d+)+$")  # auditwheel's libqsum-1a2b3c4d.so.3


def consumer_binaries(consumer: Consumer) -> list[tuple[Path, bytes]]:
    """The native files a consumer installed, from its RECORD (read for ``check``)."""
    record = consumer.dist_info / "RECORD"
    try:
        lines = record.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    site = consumer.dist_info.parent
    out = []
    for row in csv.reader(lines):
        if row and (row[0].endswith(_BINARY_SUFFIXES) or _VERSIONED_SO.search(row[0])):
            path = (site / row[0]).resolve()
            try:
                out.append((path, path.read_bytes()))
            except OSError:
                continue  # a missing file is pip's business (pip check), not ours
    return out


def installed_record(lib: InstalledLibrary) -> list[tuple[Path, str]]:
    """(file, 'sha256=<urlsafe b64>') for every file pip recorded under the library's
    directory, from its ``dllreg_lib_NAME-*.dist-info/RECORD``: the manifest included, so an
    edited manifest shows up too. Empty when no RECORD is found (not installed by pip)."""
    if lib.provider.startswith(PYPI + ":"):  # a PyPI wheel installed as it is: its own RECORD
        from ..recipes.wheelprovider import host_providers, record_files

        hit = host_providers().get(lib.manifest.name)
        return record_files(lib.site, hit[1]) if hit else []
    stem = "dllreg_lib_" + lib.manifest.name.replace("-", "_")
    out = []
    for record in sorted(lib.site.glob(f"{stem}-*.dist-info/RECORD")):
        try:
            rows = list(csv.reader(record.read_text(encoding="utf-8").splitlines()))
        except OSError:
            continue
        for row in rows:
            if len(row) >= 2 and row[1].startswith("sha256="):
                path = (lib.site / row[0]).resolve()
                if lib.directory.resolve() in path.parents:
                    out.append((path, row[1]))
    return out


def provider_pc(lib: InstalledLibrary) -> str:
    """``NAME.pc`` for a library a PyPI wheel provides, with absolute directories into the
    wheel's files (written for a build only): ``Requires:`` the wheel's own ``.pc`` when it
    ships one (scipy-openblas), else the flags dllreg knows from the recipe (the nvidia
    wheels ship headers but no ``.pc``)."""
    from ..libwheel.pkgconfig import render_pc
    from ..recipes.wheelprovider import host_providers

    m = lib.manifest
    if m.pkgconfig:
        own = m.pkgconfig.rsplit("/", 1)[-1].removesuffix(".pc")
        return (f"Name: {m.name}\nDescription: {m.name} {m.version} from {m.provider}\n"
                f"Version: {m.version}\nRequires: {own}\nLibs:\nCflags:\n")
    hit = host_providers().get(m.name)
    include = [lib.site.joinpath(*d.split("/")).as_posix() for d in (hit[1].include if hit else ())]
    libdir = m.libraries[-1].path.rsplit("/", 1)[0]
    text = render_pc(m, " ".join(f"-I{d}" for d in include[1:]), prefix=lib.directory.as_posix(),
                     libdir=libdir, includedir=include[0] if include else None)
    return text.replace(" from the dllreg registry", f" from {m.provider}")
