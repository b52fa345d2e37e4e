"""Consistency of an environment: what ``dllreg check`` reports, decided over data."""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from ..binary import BinaryInfo
from ..errors import DllregError
from ..names import DEFAULT_PREFERENCE, EXTERNAL_PROVIDERS, PYPI, NativeRequirement
from ..recipes.wheelprovider import suggested_requirement
from .registry import BadRegistration, Consumer, InstalledLibrary


@dataclasses.dataclass(frozen=True)
class Problem:
    subject: str  # the consumer or library concerned
    message: str
    fix: str
    severity: str = "error"  # "error" fails the check, "warning" does not

    def __str__(self) -> str:
        return f"{self.severity}: {self.subject}: {self.message}\n  fix: {self.fix}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_hash_of(hex_digest: str) -> str:
    """A hex sha256 in RECORD's form: 'sha256=' + urlsafe base64 without padding."""
    raw = base64.urlsafe_b64encode(bytes.fromhex(hex_digest)).rstrip(b"=").decode()
    return "sha256=" + raw


def effective(libraries: Sequence[InstalledLibrary]) -> dict[str, InstalledLibrary]:
    """The copy of each library the stub would load: the first in search order."""
    out: dict[str, InstalledLibrary] = {}
    for lib in libraries:
        out.setdefault(lib.manifest.name, lib)
    return out


def _requirement_problems(subject: str, requires: Sequence[NativeRequirement],
                          libraries: Sequence[InstalledLibrary]) -> list[Problem]:
    """Like the stub: the first copy in search order that satisfies the requirement wins."""
    out = []
    for req in requires:
        if not req.applies():
            continue
        copies = [lib for lib in libraries if lib.manifest.name == req.name]
        if not copies:
            out.append(Problem(subject, f"requires native library {req}, which is not installed",
                               f'pip install "{suggested_requirement(req)}"'))
        elif not any(req.accepts(lib.manifest.version) for lib in copies):
            found = ", ".join(f"{lib.manifest.version} at {lib.directory}" for lib in copies)
            out.append(Problem(subject, f"requires {req}, but only {req.name} {found} is installed",
                               f'pip install "{suggested_requirement(req)}"'))
    return out


def _stem(name: str) -> str:
    """'libqsum' for libqsum.so.3, libqsum.so, @rpath/libqsum.3.dylib, LIBQSUM.dll."""
    base = name.rsplit("/", 1)[-1].lower()
    for suffix in (".so", ".dylib", ".dll"):
        if suffix in base:
            base = base[: base.index(suffix)]
    return base.split(".", 1)[0]


_LIBRARY_FILE = re.compile(r"\.so(\.\d+)*$|\.(dll|dylib)$", re.IGNORECASE)


def duplicate_copies(paths: Iterable[str], runtime_names: Mapping[str, str]) -> list[tuple[str, str]]:
    """(path, library) for each file that is a private copy of a registry library the consumer
    requires: auditwheel's ``<dist>.libs/libqsum-1a2b3c4d.so.3``, delvewheel's mangled DLL or
    delocate's ``.dylibs/`` copy of a library whose runtime name (key of ``runtime_names``, the
    value being the library) is the same once the hash is dropped. Copies under ``dllreg.libs/``
    (``dllreg vendor``'s fallback, which the stub loads only when no registry copy is there) are
    not duplicates. Both copies map at import (different names), and the binaries that bind to
    the private one ignore the registry's."""
    from ..libwheel.naming import unmangle

    stems = {_stem(name): lib for name, lib in runtime_names.items()}
    out = []
    for path in paths:
        parts = path.replace("\\", "/").split("/")
        if "dllreg.libs" in parts or not _LIBRARY_FILE.search(parts[-1]):
            continue
        lib = stems.get(_stem(unmangle(parts[-1])))
        if lib is not None:
            out.append((path, lib))
    return out


def duplicate_fix(wheel: str) -> str:
    return (f"repair {wheel} with python -m dllreg repair (it runs auditwheel/delocate/delvewheel "
            "leaving the registry libraries out), or python -m dllreg devendor the repaired wheel")


def binding_problems(subject: str, binaries: Sequence[tuple[str, BinaryInfo]],
                     libraries: Sequence[InstalledLibrary]) -> list[Problem]:
    """Consumer binaries that name a registry library by something other than its runtime
    name: the stub's preload cannot satisfy them (e.g. a Mach-O LC_LOAD_DYLIB that is not the
    dylib's install name, an ELF DT_NEEDED of libfoo.so when the SONAME is libfoo.so.1)."""
    runtime: dict[str, tuple[str, InstalledLibrary]] = {}
    for lib in libraries:
        for f in lib.manifest.libraries:
            runtime.setdefault(_stem(f.soname), (f.soname, lib))
    out = []
    for path, info in binaries:
        for needed in info.needed + info.delay_needed:
            hit = runtime.get(_stem(needed))
            if hit is None:
                continue
            name, lib = hit
            same = needed.lower() == name.lower() if info.format == "pe" else needed == name
            if not same:
                out.append(Problem(
                    subject, f"{path} needs {needed}, but registry library {lib.manifest.name} "
                    f"{lib.manifest.version} provides {name}, so the preload cannot satisfy it",
                    f"rebuild {subject.split()[0]} against the registry library (flags from "
                    f"python -m dllreg pkg-config {lib.manifest.name})"))
    return out


def _pip_view_problems(libraries: Sequence[InstalledLibrary],
                       dist_infos: Mapping[Path, Mapping[str, tuple[str, str]]]) -> list[Problem]:
    """A registration pip does not see (it would fetch a second copy), and a dist-info a
    registration wrote for something no longer registered (pip would skip a needed install):
    what a writer killed between its two steps leaves; the next register/unregister heals it."""
    out = []
    registered = {(lib.site, lib.manifest.name) for lib in libraries
                  if lib.provider in EXTERNAL_PROVIDERS}
    for site, name in sorted(registered):
        if name not in dist_infos.get(site, {}):
            out.append(Problem(
                f"library {name}", f"registered in {site}, but pip sees no dllreg-lib-{name} "
                "there, so installing a consumer fetches a second copy",
                "register it again (the registry writes the dist-info pip reads)", "warning"))
    for site, seen in sorted(dist_infos.items()):
        for name, (version, installer) in sorted(seen.items()):
            if installer == "dllreg" and (site, name) not in registered:
                out.append(Problem(
                    f"library {name}", f"pip sees dllreg-lib-{name} {version} in {site}, but "
                    "nothing is registered there", f"python -m dllreg unregister --name {name} "
                    "(removes the stale dist-info), or register the library again", "warning"))
    return out


def find_problems(libraries: Sequence[InstalledLibrary], consumers: Sequence[Consumer],
                  read_errors: Sequence[DllregError], *, verify: bool = False,
                  hasher: Callable[[Path], str] = _sha256,
                  binaries: Callable[[Consumer], Sequence[tuple[str, BinaryInfo]]] | None = None,
                  records: Callable[[InstalledLibrary], Sequence[tuple[Path, str]]] | None = None,
                  prefer_env: str | None = None,
                  dist_infos: Mapping[Path, Mapping[str, tuple[str, str]]] | None = None
                  ) -> list[Problem]:
    problems = [Problem("registry", str(e), (
        f"python -m dllreg unregister --name {e.name} --provider {e.provider}, then register "
        "it again" if isinstance(e, BadRegistration) else
        "reinstall the distribution that owns this file")) for e in read_errors]
    hasher = functools.lru_cache(maxsize=None)(hasher)  # manifest and RECORD hash the same files
    libs = effective(libraries)
    for consumer in consumers:
        subject = f"{consumer.name} {consumer.version}"
        # A vendored library is the stub's last resort: only a registry copy can be missing.
        problems += _requirement_problems(
            subject, [r for r in consumer.requires if r.name not in consumer.vendored], libraries)
        if binaries is not None:
            found = binaries(consumer)
            problems += binding_problems(subject, found, list(libs.values()))
            wanted = {r.name for r in consumer.requires if r.applies() and r.name not in consumer.vendored}
            names = {f.soname: lib.manifest.name for lib in libs.values() if lib.manifest.name in wanted
                     for f in lib.manifest.libraries}
            for copy, lib_name in duplicate_copies([p for p, _ in found], names):
                problems.append(Problem(
                    subject, f"{copy} is a private copy of registry library {lib_name}, which it "
                    "also requires: two copies are mapped at import",
                    duplicate_fix(f"the {consumer.name} wheel")))
    for lib in libs.values():
        m = lib.manifest
        subject = f"library {m.name} {m.version}"
        fix = f'pip install --force-reinstall "dllreg-lib-{m.name}=={m.version}"'
        pypi = m.provider.startswith(PYPI + ":")
        if pypi:  # a PyPI wheel installed as it is: pip's files, checked against its RECORD
            subject += f" (provided by {m.provider})"
            fix = f'pip install --force-reinstall "{m.source.replace(" ", "==")}"'
        elif m.external:
            subject += f" (registered by {m.provider})"
            fix = (f"the {m.provider} provider changed or removed it (an upgrade?): register it "
                   f"again, or python -m dllreg unregister --name {m.name} --provider {m.provider}")
        problems += _requirement_problems(subject, m.requires, libraries)
        for f in m.libraries:
            path = lib.file_path(f.path)
            if not path.is_file():
                problems.append(Problem(subject, f"file {path} listed in its manifest is missing",
                                        fix))
            elif verify and not pypi and hasher(path) != f.sha256:  # pypi: RECORD, below
                problems.append(Problem(
                    subject, f"file {path} does not match the sha256 in its manifest "
                    "(modified, truncated or replaced after install)", fix))
        for path, recorded in (records(lib) if verify and records else ()):
            # pip's RECORD also covers the manifest itself: an edited manifest shows here
            if path.is_file() and record_hash_of(hasher(path)) != recorded:
                problems.append(Problem(
                    subject, f"file {path} does not match the hash pip recorded when it "
                    "installed the library (edited or replaced since)", fix))
    problems += _pip_view_problems(libraries, dist_infos or {})
    if prefer_env is not None:
        unknown = [w for w in prefer_env.split(",") if w.strip() and w.strip().lower() not in
                   (*DEFAULT_PREFERENCE, "registry", "vendored")]
        if unknown:
            problems.append(Problem("DLLREG_PREFER", f"unknown provider(s) {', '.join(unknown)} "
                                    "(the stub ignores them)", "use a comma-separated list of "
                                    "conda, system, pypi, wheel, vendored, registry", "warning"))
    for lib in libraries:
        first = libs[lib.manifest.name]
        if lib is not first and lib.manifest.version != first.manifest.version:
            problems.append(Problem(
                f"library {lib.manifest.name}",
                f"{lib.manifest.version} at {lib.directory} is shadowed by "
                f"{first.manifest.version} at {first.directory}, which comes first (sys.path "
                "order, then the provider preference)",
                "uninstall one of them if this is not intended", "warning"))
    return problems
