"""``inspect``: what a shared library or a wheel's binaries need, and what provides each need.

The core is pure (bytes and member lists in, frozen dataclasses out); ``inspect_path`` is the file
and zip edge; ``render_text`` and ``to_json`` shape a Report. docs/inspect.md is the reference.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re
import struct
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from ..binary import BinaryError
from ..binary.elf import ELFError, is_elf, read_elf
from ..binary.macho import MachOError, is_macho, read_macho
from ..binary.pe import is_pe
from ..errors import DllregError, WheelError
from ..libwheel.syslibs import is_python, is_system
from ..names import REGISTRY_DIR, NativeRequirement
from ..wheelfile import open_wheel, read_member, safe_members
from .registry import CONSUMER_RECORD

#: How a need is met. A lone file has no wheel around it, so it says "other" instead of "missing".
CATEGORIES = ("vendored", "registry", "python", "system", "missing", "other")
FORMATS = {"elf": "ELF", "pe": "PE", "macho": "Mach-O"}
_LIBRARY_NAME = re.compile(r"\.(so(\.\d+)*|dll|pyd|dylib)$")
_ARCH_OF = {"win_amd64": "x86_64", "win32": "i386", "i686": "i386", "win_arm64": "arm64",
            "powerpc64le": "ppc64le", "armv7l": "arm"}
_SUFFIX_ARCH = re.compile(r"\.cp\d+-(win_amd64|win32|win_arm64)\.pyd$"
                          r"|\.cpython-\d+\w*-(\w+)-linux-(gnu|musl)")
_PATCH = re.compile(r"# start delvewheel patch.*?# end delvewheel patch", re.S)  # CRLF in numpy's
_PATCH_VERSION = re.compile(r"_delvewheel_patch_(\d+(?:_\d+)*)")
_READ_ERRORS = (OSError, EOFError, RuntimeError, NotImplementedError, ValueError, zlib.error,
                zipfile.BadZipFile, DllregError)


@dataclasses.dataclass(frozen=True)
class Need:
    name: str  # as the binary spells it
    category: str  # one of CATEGORIES
    delayed: bool = False  # a PE delay import
    via: str | None = None  # rpath, inherited-rpath, same-dir, libs-dir, loader_path, install-name, registry
    member: str | None = None  # the wheel member that meets it
    library: str | None = None  # the registry library that provides it
    provider: str | None = None  # who installed that library here: wheel, conda, system, pypi:<dist>


@dataclasses.dataclass(frozen=True)
class Binary:
    path: str  # as given, or the wheel member
    size: int
    format: str  # "elf" | "pe" | "macho"
    arch: str
    arches: tuple[str, ...]  # every slice of a fat Mach-O file, else (arch,)
    bits: int
    kind: str  # "library", "executable", "bundle", "object"
    name: str | None  # runtime name: ELF SONAME, PE file name, Mach-O install name
    export_name: str | None  # PE export-directory name, when it differs from the file name
    needed: tuple[str, ...]
    delay_needed: tuple[str, ...]  # PE delay imports
    rpath: tuple[str, ...]  # ELF DT_RPATH, Mach-O LC_RPATH
    runpath: tuple[str, ...]  # ELF DT_RUNPATH
    min_os: str | None = None  # Mach-O deployment target
    needs: tuple[Need, ...] = ()  # needed then delay_needed, resolved


@dataclasses.dataclass(frozen=True)
class Member:
    """A wheel member as the edge read it: a binary, an unreadable one, or an __init__.py's text."""

    path: str
    size: int
    binary: Binary | None = None
    error: str | None = None
    text: str | None = None


@dataclasses.dataclass(frozen=True)
class WheelFacts:
    name: str
    version: str
    platforms: tuple[str, ...]
    tool: str | None  # "auditwheel" | "delvewheel" | "delocate" | None
    libs_dirs: tuple[str, ...]  # <dist>.libs, .../.dylibs
    patch_file: str | None  # the file holding a delvewheel patch
    patch_version: str | None
    vendored: tuple[tuple[str, int], ...]  # (member, size)

    @property
    def vendored_bytes(self) -> int:
        return sum(size for _, size in self.vendored)


@dataclasses.dataclass(frozen=True)
class Report:
    path: str
    binaries: tuple[Binary, ...]
    wheel: WheelFacts | None = None
    errors: tuple[str, ...] = ()  # unreadable members; binaries of the wrong format or architecture
    warnings: tuple[str, ...] = ()  # rpaths that leave the package
    #: private copies of registry libraries the wheel also requires (dllreg.json): two copies map
    duplicates: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        return 1 if self.errors or self.duplicates else 0


# --- one binary --------------------------------------------------------------------------------


def inspect_binary(data: bytes, origin: str) -> Binary:
    """The facts of one ELF, PE or Mach-O file; BinaryError names *origin* and the problem."""
    return read_binary(data, origin)[0]


def read_binary(data: bytes, origin: str) -> tuple[Binary, Any]:
    """inspect_binary's facts and the format reader's own result (ELFInfo, PEInfo, MachOFile),
    so that a caller needing more of the file (its symbols) does not parse it again."""
    base = posixpath.basename(origin.replace("\\", "/"))
    try:
        if is_elf(data):
            e = read_elf(data)
            e_type = struct.unpack_from("<H" if data[5] == 1 else ">H", data, 16)[0]
            return Binary(origin, len(data), "elf", e.machine, (e.machine,), e.bits,
                          {1: "object", 2: "executable"}.get(e_type, "library"), e.soname, None,
                          e.needed, (), e.rpath, e.runpath), e
        if data[:2] == b"MZ":
            from ..binary.pe import PEError, read_pe  # pefile is imported only for PE files

            try:
                p = read_pe(data)
            except PEError as exc:
                raise BinaryError(f"{origin}: {exc}") from None
            export = p.dll_name if p.dll_name and p.dll_name.lower() != base.lower() else None
            return Binary(origin, len(data), "pe", p.machine, (p.machine,), p.bits,
                          "library" if p.is_dll else "executable", base, export, p.imports,
                          p.delay_imports, (), ()), p
        if is_macho(data):
            m = read_macho(data)
            a = m.arches[0]
            kind = {"dylib": "library", "execute": "executable"}.get(a.filetype, a.filetype)
            return Binary(origin, len(data), "macho", a.arch, tuple(x.arch for x in m.arches), a.bits,
                          kind, a.install_name, None, a.needed, (), a.rpaths, (), a.min_os), m
    except (ELFError, MachOError, struct.error) as exc:
        raise BinaryError(f"{origin}: {exc}") from None
    what = "empty file" if not data else f"starts with {data[:8]!r}"
    raise BinaryError(f"{origin}: not an ELF, PE or Mach-O file ({what})")


def _classify(b: Binary, need: str, book: Mapping[str, str]) -> tuple[str, str | None]:
    """(category, registry library) of a need that no file of the wheel meets."""
    lib = book.get(need) or (book.get(need.lower()) if b.format == "pe" else None)
    if lib or is_python(need):
        return ("registry", lib) if lib else ("python", None)
    return ("system" if is_system(b.format, need) else "missing"), None


def _name_problem(b: Binary) -> str | None:
    base = posixpath.basename(b.path.replace("\\", "/")).lower()
    fmt = "pe" if base.endswith((".dll", ".pyd", ".exe")) else "macho" if base.endswith(".dylib") else None
    if fmt and b.format != fmt:
        return f"{b.path}: an {FORMATS[b.format]} file with a {FORMATS[fmt]} name"
    m = _SUFFIX_ARCH.search(base)
    tag = m and (m.group(1) or m.group(2))
    if tag and _ARCH_OF.get(tag, tag) not in b.arches:
        return f"{b.path}: {'+'.join(b.arches)} binary, but its name is for {_ARCH_OF.get(tag, tag)}"
    return None


def _rpath_warnings(b: Binary) -> list[str]:
    tag = "LC_RPATH" if b.format == "macho" else "RPATH"
    return [f"{b.path}: {label} {entry} leaves the package (a directory of the build machine?)"
            for label, entries in ((tag, b.rpath), ("RUNPATH", b.runpath)) for entry in entries
            if not entry.startswith(("$ORIGIN", "${ORIGIN}", "@loader_path", "@executable_path"))]


def inspect_file(b: Binary, book: Mapping[str, str]) -> Report:
    """A lone binary: its needs classified without a wheel around it."""
    needs = [Need(n, "other" if cat == "missing" else cat, delayed, library=lib)
             for delayed, names in ((False, b.needed), (True, b.delay_needed)) for n in names
             for cat, lib in [_classify(b, n, book)]]
    problem = _name_problem(b)
    return Report(b.path, (dataclasses.replace(b, needs=tuple(needs)),),
                  errors=(problem,) if problem else (), warnings=tuple(_rpath_warnings(b)))


# --- a wheel -----------------------------------------------------------------------------------


def _installed(path: str) -> str:
    """Where a member lands relative to site-packages: <dist>.data/{pure,plat}lib/ is stripped."""
    parts = path.split("/")
    if len(parts) > 2 and parts[0].endswith(".data") and parts[1] in ("purelib", "platlib"):
        return "/".join(parts[2:])
    return path


def _relative_dirs(where: str, entries: Sequence[str], tokens: tuple[str, ...]) -> list[str]:
    """The rpath entries that start with one of *tokens* ($ORIGIN, @loader_path), as wheel dirs."""
    out = []
    for entry in entries:
        rest = next((entry[len(t):] for t in tokens if entry.startswith(t)), None)
        if rest is not None:
            path = posixpath.normpath(posixpath.join(posixpath.dirname(where), "./" + rest))
            out += [] if (path + "/").startswith("../") else [path]  # above site-packages: not ours
    return out


def _platform_specs(platforms: Sequence[str]) -> list[tuple[str, frozenset[str]]]:
    specs = []
    for p in platforms:
        linux = re.match(r"(?:many|musl)?linux(?:\d+|_\d+_\d+)?_(\w+)$", p)
        mac = re.match(r"macosx_\d+_\d+_(\w+)$", p)
        if p.startswith("win"):
            specs.append(("pe", frozenset({_ARCH_OF.get(p, p)})))
        elif linux:
            specs.append(("elf", frozenset({_ARCH_OF.get(linux[1], linux[1])})))
        elif mac:
            specs.append(("macho", frozenset({"universal2": {"x86_64", "arm64"}, "intel": {"x86_64"}}.get(
                mac[1], {mac[1]}))))
    return specs


def _declared(members: Sequence[Member]) -> list[NativeRequirement]:
    """The registry libraries a dllreg consumer wheel requires (its dllreg.json), vendored ones left out."""
    for m in members:
        if m.text is not None and m.path.endswith("/" + CONSUMER_RECORD) and ".dist-info/" in m.path:
            try:
                record = json.loads(m.text)
                vendored = record.get("vendored") or {}
                return [r for r in map(NativeRequirement.parse, record["requires"]) if r.name not in vendored]
            except (ValueError, KeyError, TypeError, AttributeError, DllregError):
                return []
    return []


def _declared_needs(report: Report, members: Sequence[Member], names: Mapping[str, str]) -> Report:
    """A dllreg consumer's view: a need of a library it declares but that is not installed here is
    that registry library (not "missing"); a private copy of a declared library is a duplicate.
    ``names`` maps runtime names (installed here, or a recipe's) to library names."""
    from .check import _stem, duplicate_copies, duplicate_fix

    declared = {r.name: r for r in _declared(members)}
    if not declared:
        return report
    runtime = {n: lib for n, lib in names.items() if lib in declared}
    runtime.update({f"lib{lib}.so": lib for lib in declared if f"lib{lib}.so" not in runtime})
    stems = {_stem(n): lib for n, lib in runtime.items()}
    binaries = tuple(dataclasses.replace(b, needs=tuple(
        dataclasses.replace(n, category="registry", via="not-installed", library=stems[_stem(n.name)])
        if n.category == "missing" and _stem(n.name) in stems else n for n in b.needs))
        for b in report.binaries)
    wheel = report.wheel.name if report.wheel else report.path
    dupes = tuple(f"{path}: a private copy of registry library {lib}, which {wheel} also requires "
                  f"({declared[lib]}): two copies are mapped at import; fix: {duplicate_fix(report.path)}"
                  for path, lib in duplicate_copies([m.path for m in members if m.binary], runtime))
    return dataclasses.replace(report, binaries=binaries, duplicates=dupes)


def inspect_wheel_members(filename: str, members: Sequence[Member], book: Mapping[str, str],
                          known: Mapping[str, str] | None = None) -> Report:
    """Resolve every need of every binary member of the wheel *filename*; for a dllreg consumer
    also against the runtime names in *known* (the recipes') of the libraries it declares."""
    report = _inspect_wheel(filename, members, book)
    return _declared_needs(report, members, {**(known or {}), **book})


def _inspect_wheel(filename: str, members: Sequence[Member], book: Mapping[str, str]) -> Report:
    try:
        name, version, _, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename as exc:
        raise WheelError(f"{filename}: {exc}") from None
    platforms = tuple(sorted({t.platform for t in tags}))
    binaries = {_installed(m.path): m.binary for m in members if m.binary}
    member_of = {_installed(m.path): m for m in members if m.binary}
    folded = {p.lower(): p for p in binaries}
    libs_dirs = sorted({p.split("/")[0] for p in binaries if p.split("/")[0].endswith(".libs")}
                       - {REGISTRY_DIR} | {posixpath.dirname(p) for p in binaries if "/.dylibs/" in "/" + p})
    own_registry = {key: p for p, b in binaries.items() if p.startswith(REGISTRY_DIR + "/")
                    for key in (b.name or posixpath.basename(p), posixpath.basename(p).lower())}
    inherited: dict[str, list[str]] = {p: [] for p in binaries}  # DT_RPATHs of the ELF loading chain
    # delocate names its copies /DLC/<pkg>/.dylibs/<file>: a path that exists nowhere, met only by
    # dyld reusing the loaded copy whose install name it is
    delocated = {b.name: p for p, b in binaries.items() if b.format == "macho" and b.name
                 and b.name.startswith("/DLC/") and any(p.startswith(d + "/") for d in libs_dirs)}

    def locate(p: str, b: Binary, need: str) -> tuple[str, str] | None:
        """(installed path, how) of the wheel file the loader would take for *need*, if any."""
        here = posixpath.dirname(p)
        if b.format == "elf":
            dirs = [(d, "rpath") for d in _relative_dirs(p, b.runpath or b.rpath, ("$ORIGIN", "${ORIGIN}"))]
            dirs += [] if b.runpath else [(d, "inherited-rpath") for d in inherited[p]]
        elif b.format == "pe":  # CPython: the DLL's own directory, then delvewheel's add_dll_directory
            dirs = [(here, "same-dir")] + [(d, "libs-dir") for d in libs_dirs]
            return next(((folded[c], via) for d, via in dirs
                         if (c := posixpath.join(d, need).lower()) in folded), None)
        elif need.startswith("@loader_path/"):
            dirs, need = [(here, "loader_path")], need[len("@loader_path/"):]
        elif need.startswith("@rpath/"):
            dirs = [(d, "rpath") for d in _relative_dirs(p, b.rpath, ("@loader_path",))]
            need = need[len("@rpath/"):]
        else:
            return (delocated[need], "install-name") if need in delocated else None
        return next(((c, via) for d, via in dirs if (c := posixpath.normpath(posixpath.join(d, need)))
                     in binaries), None)

    for _ in range(len(binaries)):  # glibc: a DT_RPATH also serves the objects it loads, and theirs
        changed = False
        for p, b in binaries.items():
            passed = [] if b.format != "elf" or b.runpath else [
                *_relative_dirs(p, b.rpath, ("$ORIGIN", "${ORIGIN}")), *inherited[p]]
            for found in filter(None, (locate(p, b, n) for n in b.needed if passed)):
                target = found[0]
                new = [] if binaries[target].runpath else [d for d in passed if d not in inherited[target]]
                inherited[target] += new
                changed = changed or bool(new)
        if not changed:
            break

    resolved, errors, warnings, targets = [], [], [], set()
    specs = _platform_specs(platforms)
    for m in members:
        errors += [m.error] if m.error else []
        if not m.binary:
            continue
        p, b, needs = _installed(m.path), m.binary, []
        for delayed, names in ((False, b.needed), (True, b.delay_needed)):
            for n in names:
                hit = locate(p, b, n)
                own = own_registry.get(n) or own_registry.get(n.lower())
                if hit and not hit[0].startswith(REGISTRY_DIR + "/"):
                    targets.add(hit[0])
                    needs.append(Need(n, "vendored", delayed, hit[1], member_of[hit[0]].path))
                elif hit or own:
                    where = hit[0] if hit else str(own)
                    needs.append(Need(n, "registry", delayed, hit[1] if hit else "registry",
                                      member_of[where].path, where.split("/")[1]))
                else:
                    category, lib = _classify(b, n, book)
                    needs.append(Need(n, category, delayed, "registry" if lib else None, library=lib))
        resolved.append(dataclasses.replace(b, needs=tuple(needs)))
        problem = _name_problem(b)
        if not problem and specs and not any(b.format == f and a <= set(b.arches) for f, a in specs):
            problem = (f"{b.path}: {FORMATS[b.format]} {'+'.join(b.arches)} binary in a "
                       f"{'/'.join(platforms)} wheel")
        errors += [problem] if problem else []
        warnings += _rpath_warnings(b)

    vendored = tuple(sorted((member_of[p].path, member_of[p].size) for p in binaries
                            if p in targets or any(p.startswith(d + "/") for d in libs_dirs)))
    patch = next(((m.path, mark[0]) for m in members if m.text and (mark := _PATCH.search(m.text))), None)
    patch_version = patch and _PATCH_VERSION.search(patch[1])
    formats = {binaries[p].format for p in binaries if any(p.startswith(d + "/") for d in libs_dirs)}
    tool = ("delocate" if any(d.endswith(".dylibs") for d in libs_dirs) else "delvewheel"
            if patch or "pe" in formats else "auditwheel" if "elf" in formats else None)
    facts = WheelFacts(str(name), str(version), platforms, tool, tuple(libs_dirs), patch and patch[0],
                       patch_version[1].replace("_", ".") if patch_version else None, vendored)
    return Report(filename, tuple(resolved), facts, tuple(errors), tuple(warnings))


# --- the edge: files, zips and the installed registry ---------------------------------------------


def installed_runtime_names() -> dict[str, str]:
    """Runtime name (SONAME, DLL name also lowercased, install name) -> installed registry library."""
    from .registry import installed_libraries, site_dirs

    out: dict[str, str] = {}
    for lib in installed_libraries(site_dirs())[0]:  # search order: the first copy wins
        for f in lib.manifest.libraries:
            for key in {f.soname, f.soname.lower() if f.soname.lower().endswith(".dll") else f.soname}:
                out.setdefault(key, lib.manifest.name)
    return out


def installed_providers() -> dict[str, str]:
    """Installed registry library -> the provider of the copy that comes first (search order)."""
    from .registry import installed_libraries, site_dirs

    out: dict[str, str] = {}
    for lib in installed_libraries(site_dirs())[0]:
        out.setdefault(lib.manifest.name, lib.provider)
    return out


def with_providers(report: Report, providers: Mapping[str, str]) -> Report:
    """The report with each registry need's installed provider (``pypi:scipy-openblas32``)."""
    binaries = tuple(dataclasses.replace(b, needs=tuple(
        dataclasses.replace(n, provider=providers.get(n.library)) if n.library and n.via != "not-installed"
        and n.member is None else n for n in b.needs)) for b in report.binaries)
    return dataclasses.replace(report, binaries=binaries)


def recipe_runtime_names() -> dict[str, str]:
    """Runtime name (every platform's) -> recipe name, from dllreg's registry of recipes."""
    from ..recipes.schema import load_recipes

    return {n: r.name for r in load_recipes().recipes for abi in r.abi for n in abi.runtime_names}


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, origin: str) -> Member:
    path, size = info.filename, info.file_size
    try:
        with zf.open(info) as f:
            head = f.read(4)
        named = bool(_LIBRARY_NAME.search(path.lower()))
        if named or is_elf(head) or head[:2] == b"MZ" or head[:3] == b"\xca\xfe\xba" or is_macho(head):
            data = read_member(zf, info, origin)
            if named or is_elf(data) or is_pe(data) or is_macho(data):  # not a Java class file...
                return Member(path, size, binary=inspect_binary(data, path))
        elif posixpath.basename(path) in ("__init__.py", CONSUMER_RECORD):
            return Member(path, size, text=read_member(zf, info, origin).decode("utf-8", "replace"))
    except BinaryError as exc:
        return Member(path, size, error=str(exc))
    except _READ_ERRORS as exc:
        return Member(path, size, error=f"{path}: unreadable member ({exc})")
    return Member(path, size)


def inspect_path(path: Path, book: Mapping[str, str] | None = None) -> Report:
    """Inspect a wheel (by its .whl suffix) or a single ELF / PE / Mach-O file."""
    names = installed_runtime_names() if book is None else book
    if book is None:
        return with_providers(inspect_path(path, names), installed_providers())
    if path.suffix.lower() == ".whl":
        try:
            parse_wheel_filename(path.name)
        except InvalidWheelFilename as exc:
            raise WheelError(f"{path}: {exc}") from None
        with open_wheel(path) as zf:
            members = [_read_member(zf, i, str(path)) for i in safe_members(zf, str(path)) if not i.is_dir()]
        return inspect_wheel_members(path.name, members, names, recipe_runtime_names())
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BinaryError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return inspect_file(inspect_binary(data, str(path)), names)


# --- output ------------------------------------------------------------------------------------
