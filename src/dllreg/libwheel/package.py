"""``package-lib``: shared libraries from a wheel or a directory -> a ``dllreg-lib-NAME`` wheel.

``read_source`` is the I/O edge; ``plan_library`` decides everything over plain data;
``write_library_wheel`` writes the plan atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shlex
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from .. import __version__
from ..binary import BinaryInfo, read_binary
from ..errors import DllregError, PackageLibError
from ..names import REGISTRY_DIR, NativeRequirement, dist_name, library_name, parse_version
from ..wheelfile import Staging, WheelWriter, iter_files, open_wheel, read_member, safe_members
from .cmakeconfig import render_cmake_config
from .manifest import MANIFEST_NAME, LibraryFile, Manifest
from .pkgconfig import relocate_pc, render_pc
from .platforms import check_tag, default_tag
from .syslibs import is_system

_SHARED = re.compile(r"(\.so(\.[0-9]+)*|\.dylib|\.dll)$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class SourceFile:
    path: str  # '/'-separated, relative to the source root
    data: bytes


@dataclasses.dataclass(frozen=True)
class Source:
    description: str
    files: tuple[SourceFile, ...]
    platform: str | None = None  # the source wheel's platform tag(s), if any
    license: str | None = None  # the source wheel's own License-Expression, if it states one


@dataclasses.dataclass(frozen=True)
class LibraryPlan:
    manifest: Manifest
    files: tuple[tuple[str, bytes], ...]  # paths relative to the library directory
    licenses: tuple[tuple[str, bytes], ...]
    #: (file, needed name) pairs satisfied neither by this library nor by the base system:
    #: they must come from a --requires library or the user's system.
    external_needs: tuple[tuple[str, str], ...] = ()
    license: str | None = None  # SPDX expression for METADATA's License-Expression

    @property
    def dist(self) -> str:
        return dist_name(self.manifest.name)

    @property
    def wheel_name(self) -> str:
        stem = self.dist.replace("-", "_")
        return f"{stem}-{self.manifest.version}-py3-none-{self.manifest.platform}.whl"


def read_source(path: Path) -> Source:
    """Read a wheel or a directory into memory, refusing unsafe wheel members."""
    if path.is_dir():
        files = []
        for file in iter_files(path):
            if file.is_file():
                files.append(SourceFile(file.relative_to(path).as_posix(), file.read_bytes()))
        return Source(f"directory {_printable(str(path))}", tuple(files))
    if path.suffix == ".whl" and path.is_file():
        try:
            _, _, _, tags = parse_wheel_filename(path.name)
        except InvalidWheelFilename as exc:
            raise PackageLibError(f"{path}: {exc}") from None
        platform = ".".join(sorted({t.platform for t in tags}))
        with open_wheel(path) as zf:
            members = safe_members(zf, str(path))
            files = [SourceFile(i.filename, read_member(zf, i, str(path)))
                     for i in members if not i.is_dir()]
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return Source(f"wheel {_printable(path.name)} sha256={digest}", tuple(files), platform,
                      _source_license(files))
    raise PackageLibError(
        f"--from {path}: expected a wheel (.whl) or a directory holding shared libraries"
    )


def _source_license(files: Sequence[SourceFile]) -> str | None:
    """The License-Expression a source wheel's own METADATA states (scipy-openblas has none)."""
    for f in files:
        if f.path.count("/") == 1 and f.path.endswith(".dist-info/METADATA"):
            head = f.data.decode("utf-8", "replace").partition("\n\n")[0]
            for line in head.splitlines():
                key, _, value = line.partition(":")
                if key.lower() == "license-expression" and value.strip():
                    return value.strip()
    return None


def spdx_expression(text: str, origin: str) -> str:
    """``text`` as a canonical SPDX license expression (what PyPI's validation accepts)."""
    from packaging.licenses import InvalidLicenseExpression, canonicalize_license_expression

    try:
        return str(canonicalize_license_expression(text))
    except InvalidLicenseExpression as exc:
        raise PackageLibError(f"{origin}: license {text!r} is not an SPDX expression ({exc}); write "
                              "e.g. BSD-3-Clause, or LicenseRef-NAME for a licence SPDX lacks") from None


def _printable(text: str) -> str:
    """A path for the manifest's one-line Source field (no line or control characters)."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _include_path(path: str) -> str | None:
    parts = PurePosixPath(path).parts
    if "include" in parts[:-1]:
        return "/".join(parts[parts.index("include") + 1:])
    return None


def _extra_cflags(source: Source) -> str:
    # Keep defines such as scipy-openblas's -DBLAS_SYMBOL_PREFIX=scipy_ from the source's own
    # .pc; include paths are replaced by the registry's own.
    for f in source.files:
        if f.path.endswith(".pc"):
            for line in f.data.decode("utf-8", "replace").splitlines():
                if line.startswith("Cflags:"):
                    tokens = shlex.split(line.partition(":")[2])
                    return " ".join(t for t in tokens if not t.startswith("-I"))
    return ""


def _source_pcs(source: Source, manifest: Manifest, extra_names: Sequence[str]) -> list[tuple[str, bytes]]:
    """The source's own pkg-config file, relocated, under its own name and ``extra_names``: numpy
    and scipy look for ``scipy-openblas`` and read its ``openblas_config`` (docs/meson.md)."""
    pcs = [f for f in source.files if f.path.endswith(".pc")]
    if len(pcs) != 1:
        return []
    text = relocate_pc(pcs[0].data.decode("utf-8", "replace"), manifest, _extra_cflags(source))
    names = dict.fromkeys([pcs[0].path.rsplit("/", 1)[-1][:-3], *extra_names])
    return [(f"lib/pkgconfig/{n}.pc", text.encode()) for n in names if n != manifest.name]


def _preload_order(libs: dict[str, LibraryFile], key: Callable[[str], str],
                   cycles: bool = False) -> list[LibraryFile]:
    """Dependencies before dependents, by the needed names among the library's own files.

    ``key`` maps a needed name to the ``libs`` key it refers to (PE names are matched
    case-insensitively, Mach-O install paths by file name). With ``cycles``, files that need
    each other are legal (they find each other through ``$ORIGIN``: devendor's groups).
    """
    order: list[LibraryFile] = []
    state: dict[str, int] = {}

    def visit(k: str, chain: tuple[str, ...]) -> None:
        if state.get(k) == 2:
            return
        if state.get(k) == 1:
            if cycles:
                return
            raise PackageLibError(f"shared libraries need each other in a cycle: {' -> '.join(chain)}")
        state[k] = 1
        for needed in libs[k].needed:
            if key(needed) in libs:
                visit(key(needed), (*chain, key(needed)))
        state[k] = 2
        order.append(libs[k])

    for k in sorted(libs):
        visit(k, (k,))
    # The principal library (last) is the one no other file of the set needs.
    return order


def _library_key(fmt: str) -> Callable[[str], str]:
    if fmt == "pe":
        return str.lower
    if fmt == "macho":
        return lambda name: name.rsplit("/", 1)[-1]
    return lambda name: name


def _classify(f: SourceFile, origin: str) -> tuple[BinaryInfo, str, str]:
    """(facts, destination in the library dir, runtime name) of one shared library file."""
    base = f.path.rsplit("/", 1)[-1]
    try:
        info = read_binary(f.data, f"{origin}: {f.path}")
    except DllregError as exc:
        raise PackageLibError(str(exc)) from None
    if info.kind not in ("library", "bundle"):
        raise PackageLibError(f"{origin}: {f.path} is a {info.format} {info.kind}, not a shared "
                              "library")
    if info.format == "pe":  # the loader reuses a loaded DLL by its file name
        return info, f"bin/{base}", base
    if not info.name:
        what = "SONAME" if info.format == "elf" else "install name (LC_ID_DYLIB)"
        fix = "-Wl,-soname,<name>" if info.format == "elf" else "-install_name @rpath/<name>"
        raise PackageLibError(f"{origin}: {f.path} has no {what}, so consumers cannot bind to it "
                              f"by name; relink it with {fix}")
    if info.format == "elf":
        return info, f"lib/{info.name}", info.name
    return info, f"lib/{base}", info.name


def plan_library(source: Source, name: str, version: str, *, requires: Sequence[str] = (),
                 platform: str | None = None, dll_directories: Sequence[str] = (),
                 license: str | None = None, cycles: bool = False,
                 pkgconfig_names: Sequence[str] = ()) -> LibraryPlan:
    """``license`` (an SPDX expression; default: the source wheel's own) goes to METADATA;
    ``cycles`` allows files that need each other (_preload_order); the source's own ``.pc`` is
    kept, relocated, under its name and each of ``pkgconfig_names``."""
    name = library_name(name)
    norm_version = str(parse_version(version))
    reqs = tuple(NativeRequirement.parse(r) for r in requires)
    origin = source.description
    libs: dict[str, LibraryFile] = {}
    data_of: dict[str, bytes] = {}
    infos: list[BinaryInfo] = []
    headers: list[tuple[str, bytes]] = []
    import_libs: list[tuple[str, bytes]] = []
    licenses: list[tuple[str, bytes]] = []
    for f in source.files:
        base = f.path.rsplit("/", 1)[-1]
        inc = _include_path(f.path)
        if inc:
            headers.append((inc, f.data))
        elif ".dist-info/licenses/" in f.path or base.upper().startswith(("LICENSE", "COPYING")):
            licenses.append((base, f.data))
        elif base.lower().endswith((".lib", ".dll.a")):
            import_libs.append((f"lib/{base}", f.data))
        elif _SHARED.search(base):
            info, dest, runtime_name = _classify(f, origin)
            key = _library_key(info.format)(runtime_name)
            if key in libs and data_of[key] != f.data:
                raise PackageLibError(
                    f"{origin}: two different files carry the name {runtime_name} "
                    f"({libs[key].path} and {f.path}); keep only one")
            infos.append(info)
            data_of[key] = f.data
            libs[key] = LibraryFile(dest, runtime_name, hashlib.sha256(f.data).hexdigest(),
                                    info.needed + info.delay_needed)
    if not libs:
        raise PackageLibError(
            f"{origin}: no shared library found (looked for *.so, *.so.N, *.dylib, *.dll); "
            "point --from at the directory or wheel that holds them")
    formats = {i.format for i in infos}
    arches = {a for i in infos for a in (i.arches or (i.arch,))}
    if len(formats) > 1:
        raise PackageLibError(f"{origin}: mixed binary formats {sorted(formats)}")
    fmt = formats.pop()
    if fmt != "macho" and len(arches) > 1:
        raise PackageLibError(f"{origin}: mixed architectures {sorted(arches)}")
    if fmt == "macho":  # every dylib must carry every architecture of a fat wheel
        arches = set.intersection(*({*(i.arches or (i.arch,))} for i in infos))
    min_os = max((i.min_os for i in infos if i.min_os),
                 key=lambda v: tuple(int(x) for x in v.split(".")), default=None)
    plat = platform or source.platform or default_tag(fmt, arches, min_os)
    if not re.fullmatch(r"[a-z0-9_.]+", plat):
        raise PackageLibError(f"--platform {plat!r}: not a wheel platform tag")
    check_tag(plat, fmt, arches, origin)
    dirs = {lib.path.rsplit("/", 1)[0] for lib in libs.values()}
    for d in dll_directories:
        if fmt != "pe" or d not in dirs:
            raise PackageLibError(
                f"--dll-directory {d!r}: only a directory holding this wheel's DLLs "
                f"({', '.join(sorted(dirs))}) of a Windows library can be requested")
    order = _preload_order(libs, _library_key(fmt), cycles)
    manifest = Manifest(
        name=name, version=norm_version, platform=plat, libraries=tuple(order), requires=reqs,
        headers=tuple(f"include/{h}" for h, _ in sorted(headers)),
        import_libraries=tuple(sorted(p for p, _ in import_libs)),
        dll_directories=tuple(dll_directories),
        pkgconfig=f"lib/pkgconfig/{name}.pc", source=origin,
        generator=f"dllreg {__version__}",
    )
    by_path = {lib.path: data_of[k] for k, lib in libs.items()}
    files = [(lib.path, by_path[lib.path]) for lib in order]
    files += [(f"include/{h}", data) for h, data in sorted(headers)] + sorted(import_libs)
    files.append((f"lib/pkgconfig/{name}.pc", render_pc(manifest, _extra_cflags(source)).encode()))
    files += _source_pcs(source, manifest, pkgconfig_names)
    files += [(p, t.encode()) for p, t in render_cmake_config(manifest, _extra_cflags(source)).items()]
    files.append((MANIFEST_NAME, manifest.to_text().encode()))
    key_of = _library_key(fmt)
    external = tuple((lib.soname, n) for lib in order for n in lib.needed
                     if key_of(n) not in libs and not is_system(fmt, n))
    spdx = license or source.license
    return LibraryPlan(manifest, tuple(files), tuple(dict(licenses).items()), external,
                       spdx_expression(spdx, origin) if spdx else None)


def _metadata(plan: LibraryPlan) -> str:
    """Core metadata 2.4 (License-Expression and License-File need it), valid for PyPI's upload
    checks and ``twine check --strict`` (tests/test_metadata.py runs both)."""
    m = plan.manifest
    lines = [
        "Metadata-Version: 2.4",
        f"Name: {plan.dist}",
        f"Version: {m.version}",
        f"Summary: The {m.name} native library, installed once for the environment by dllreg",
    ]
    lines += [f"License-Expression: {plan.license}"] if plan.license else []
    lines += [f"License-File: {n}" for n, _ in plan.licenses]
    lines += [f"Requires-Dist: {r.dist_requirement}" for r in m.requires]
    lines.append("Description-Content-Type: text/plain; charset=UTF-8")
    names = ", ".join(f.soname for f in m.libraries)
    body = (f"The {m.name} {m.version} native library ({names}) for {m.platform}, as a dllreg library "
            f"wheel: it installs into <site-packages>/{REGISTRY_DIR}/{m.name}/, where the _dlls.py "
            f"stub of every dllreg consumer that requires {m.name} preloads it by absolute path, so "
            f"one copy serves the whole environment.\n\nPackaged from {m.source} by {m.generator}.\n")
    return "\n".join(lines) + "\n\n" + body


def write_library_wheel(plan: LibraryPlan, outdir: Path, *, stage: Staging | None = None,
                        compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """Write the wheel into ``outdir`` atomically (or ``stage`` it) and return its path."""
    out = outdir / plan.wheel_name
    dist_info = f"{plan.dist.replace('-', '_')}-{plan.manifest.version}.dist-info"
    root = f"{REGISTRY_DIR}/{plan.manifest.name}"
    wheel_meta = (
        f"Wheel-Version: 1.0\nGenerator: dllreg {__version__}\nRoot-Is-Purelib: false\n"
        + "".join(f"Tag: py3-none-{p}\n" for p in plan.manifest.platform.split("."))
    )
    shared = {lib.path for lib in plan.manifest.libraries}
    with WheelWriter(out, dist_info, stage=stage, compression=compression) as w:
        for rel, data in plan.files:
            w.add(f"{root}/{rel}", data, executable=rel in shared)
        for name, data in plan.licenses:
            w.add(f"{dist_info}/licenses/{name}", data)
        w.add(f"{dist_info}/METADATA", _metadata(plan).encode())
        w.add(f"{dist_info}/WHEEL", wheel_meta.encode())
    return out
