"""The library manifest: what a library wheel installed, in preload order.

The on-disk form is a small line format (``Key: value``) so that the import-time
stub can read it with ``str.partition`` instead of importing ``json``.
docs/manifest.md is the reference; keep both in step.
"""

from __future__ import annotations

import dataclasses

from ..errors import DllregError, ManifestError
from ..names import EXTERNAL_PROVIDERS, WHEEL, NativeRequirement, library_name, parse_version

FORMAT_VERSION = "1"
#: File name of the manifest inside ``<site>/dllreg.libs/<name>/``.
MANIFEST_NAME = "MANIFEST"


@dataclasses.dataclass(frozen=True)
class LibraryFile:
    """One shared library of a registry library."""

    path: str  # relative to the library directory, '/'-separated
    soname: str  # ELF SONAME, PE DLL name or Mach-O install name
    sha256: str
    needed: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    platform: str
    libraries: tuple[LibraryFile, ...]  # preload order: dependencies first
    requires: tuple[NativeRequirement, ...] = ()
    headers: tuple[str, ...] = ()
    import_libraries: tuple[str, ...] = ()  # Windows .lib / .dll.a files consumers link with
    dll_directories: tuple[str, ...] = ()  # Windows: dirs the stub adds (os.add_dll_directory)
    pkgconfig: str | None = None
    source: str = ""
    generator: str = ""
    provider: str = WHEEL  # external providers' Library paths are absolute (docs/providers.md)
    registered_by: str = ""  # external: who registered it (a conda package name, a user)

    @property
    def external(self) -> bool:
        return self.provider != WHEEL

    def to_text(self) -> str:
        for value in (self.name, self.version, self.platform, self.generator, self.source,
                      self.registered_by, *(lib.path for lib in self.libraries)):
            if any(c in value for c in "\r\n"):
                raise ManifestError(f"manifest value {value!r} contains a line break")
        lines = [
            f"Manifest-Version: {FORMAT_VERSION}",
            f"Name: {self.name}",
            f"Version: {self.version}",
            f"Platform: {self.platform}",
        ]
        if self.generator:
            lines.append(f"Generator: {self.generator}")
        if self.source:
            lines.append(f"Source: {self.source}")
        if self.external:
            lines.append(f"Provider: {self.provider}")
        if self.registered_by:
            lines.append(f"Registered-By: {self.registered_by}")
        lines += [f"Requires: {req}" for req in self.requires]
        for lib in self.libraries:
            fields = (lib.path, lib.soname, lib.sha256, ",".join(lib.needed))
            lines.append("Library: " + "\t".join(fields))
        lines += [f"Dll-Directory: {d}" for d in self.dll_directories]
        if self.pkgconfig:
            lines.append(f"Pkgconfig: {self.pkgconfig}")
        lines += [f"Import-Library: {x}" for x in self.import_libraries]
        lines += [f"Header: {h}" for h in self.headers]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_text(cls, text: str, origin: str = "<manifest>") -> Manifest:
        try:
            return _parse(text)
        except (ManifestError, DllregError) as exc:
            raise ManifestError(f"{origin}: {exc}") from None


_SINGLE = {"Manifest-Version", "Name", "Version", "Platform", "Generator", "Source", "Pkgconfig",
           "Provider", "Registered-By"}
_MULTI = {"Requires", "Library", "Header", "Import-Library", "Dll-Directory"}


def _check_relpath(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or ":" in parts[0] or any(
        p in ("", ".", "..") for p in parts
    ):
        raise ManifestError(f"path {path!r} must be relative, '/'-separated, without '..'")
    return path


def _check_abspath(path: str) -> str:
    # An external provider's file, recorded where the provider put it: POSIX or drive-absolute
    # ('C:/...'), '/'-separated, normalized (no '.' or '..' parts, no empty parts).
    drive = len(path) > 2 and path[0].isalpha() and path[1:3] == ":/"
    body = path[3:] if drive else path[1:]
    if not (drive or path.startswith("/")) or "\\" in path or "\t" in path or any(
            p in ("", ".", "..") for p in body.split("/")):
        raise ManifestError(f"path {path!r} of an external library must be absolute, "
                            "'/'-separated and normalized")
    return path


def _parse(text: str) -> Manifest:
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {k: [] for k in _MULTI}
    # Only \n ends a line (str.splitlines would also break at \x1c, \x85, \u2028...).
    for number, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip() or line.startswith("#"):
            continue
        key, sep, value = line.partition(": ")
        if not sep:
            raise ManifestError(f"line {number}: expected 'Key: value', got {line!r}")
        if key in _MULTI:
            multi[key].append(value)
        elif key in _SINGLE:
            if key in single:
                raise ManifestError(f"line {number}: {key} given twice")
            single[key] = value
        # Unknown keys are ignored so that newer manifests stay readable by older tools.
    if single.get("Manifest-Version") != FORMAT_VERSION:
        raise ManifestError(
            f"Manifest-Version is {single.get('Manifest-Version')!r}, this dllreg reads "
            f"{FORMAT_VERSION!r}; upgrade dllreg"
        )
    for key in ("Name", "Version", "Platform"):
        if not single.get(key):
            raise ManifestError(f"missing required key {key}")
    provider = single.get("Provider", WHEEL)
    if provider != WHEEL and provider not in EXTERNAL_PROVIDERS:
        raise ManifestError(f"Provider {provider!r} is not one of {', '.join(EXTERNAL_PROVIDERS)}")
    lib_path = _check_abspath if provider != WHEEL else _check_relpath
    libraries = []
    for value in multi["Library"]:
        fields = value.split("\t")
        if len(fields) != 4 or not fields[1] or len(fields[2]) != 64:
            raise ManifestError(f"Library entry {value!r}: expected PATH<TAB>NAME<TAB>SHA256<TAB>NEEDED")
        needed = tuple(n for n in fields[3].split(",") if n)
        libraries.append(LibraryFile(lib_path(fields[0]), fields[1], fields[2], needed))
    if not libraries:
        raise ManifestError("no Library entry: a registry library needs at least one file")
    parse_version(single["Version"])
    return Manifest(
        name=library_name(single["Name"]),
        version=single["Version"],
        platform=single["Platform"],
        libraries=tuple(libraries),
        requires=tuple(NativeRequirement.parse(r) for r in multi["Requires"]),
        headers=tuple(_check_relpath(h) for h in multi["Header"]),
        import_libraries=tuple(_check_relpath(x) for x in multi["Import-Library"]),
        dll_directories=tuple(_check_relpath(d) for d in multi["Dll-Directory"]),
        pkgconfig=_check_relpath(single["Pkgconfig"]) if "Pkgconfig" in single else None,
        source=single.get("Source", ""),
        generator=single.get("Generator", ""),
        provider=provider,
        registered_by=single.get("Registered-By", ""),
    )
