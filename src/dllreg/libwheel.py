"""``package-lib``: shared libraries from a wheel or a directory -> a ``dllreg-lib-NAME`` wheel.

``read_source`` is the I/O edge; ``plan_library`` decides everything over plain data;
``write_library_wheel`` writes the plan atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shlex
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from . import __version__
from .binary.elf import ELFError, is_elf, read_elf
from .errors import PackageLibError
from .manifest import MANIFEST_NAME, LibraryFile, Manifest
from .names import REGISTRY_DIR, NativeRequirement, dist_name, library_name, parse_version
from .pkgconfig import render_pc
from .wheelfile import WheelWriter, iter_files, open_wheel, read_member, safe_members

_SHARED = re.compile(r"(\.so(\.[0-9]+)*|\.dylib|\.dll)$", re.IGNORECASE)
_ELF_MACHINE_TAG = {"x86_64": "x86_64", "aarch64": "aarch64", "i386": "i686",
                    "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


@dataclasses.dataclass(frozen=True)
class SourceFile:
    path: str  # '/'-separated, relative to the source root
    data: bytes


@dataclasses.dataclass(frozen=True)
class Source:
    description: str
    files: tuple[SourceFile, ...]
    platform: str | None = None  # the source wheel's platform tag(s), if any


# Libraries every manylinux system provides (the manylinux policy's base set).
_SYSTEM_PREFIXES = ("libc.so", "libm.so", "libpthread.so", "libdl.so", "librt.so", "ld-linux",
                    "libgcc_s.so", "libstdc++.so", "libutil.so", "libresolv.so", "ld64.so")


@dataclasses.dataclass(frozen=True)
class LibraryPlan:
    manifest: Manifest
    files: tuple[tuple[str, bytes], ...]  # paths relative to the library directory
    licenses: tuple[tuple[str, bytes], ...]
    #: (file, needed name) pairs satisfied neither by this library nor by the base system:
    #: they must come from a --requires library or the user's system.
    external_needs: tuple[tuple[str, str], ...] = ()

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
        return Source(f"directory {path}", tuple(files))
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
        return Source(f"wheel {path.name} sha256={digest}", tuple(files), platform)
    raise PackageLibError(
        f"--from {path}: expected a wheel (.whl) or a directory holding shared libraries"
    )


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


def _preload_order(libs: dict[str, LibraryFile]) -> list[LibraryFile]:
    """Dependencies before dependents (by DT_NEEDED among the library's own files)."""
    order: list[LibraryFile] = []
    state: dict[str, int] = {}

    def visit(soname: str, chain: tuple[str, ...]) -> None:
        if state.get(soname) == 2:
            return
        if state.get(soname) == 1:
            raise PackageLibError(f"shared libraries need each other in a cycle: {' -> '.join(chain)}")
        state[soname] = 1
        for needed in libs[soname].needed:
            if needed in libs:
                visit(needed, (*chain, needed))
        state[soname] = 2
        order.append(libs[soname])

    for soname in sorted(libs):
        visit(soname, (soname,))
    # The principal library (last) is the one no other file of the set needs.
    return order


def plan_library(source: Source, name: str, version: str, *,
                 requires: Sequence[str] = (), platform: str | None = None) -> LibraryPlan:
    name = library_name(name)
    norm_version = str(parse_version(version))
    reqs = tuple(NativeRequirement.parse(r) for r in requires)
    libs: dict[str, LibraryFile] = {}
    data_by_soname: dict[str, bytes] = {}
    machines: set[str] = set()
    headers: list[tuple[str, bytes]] = []
    licenses: list[tuple[str, bytes]] = []
    for f in source.files:
        base = f.path.rsplit("/", 1)[-1]
        inc = _include_path(f.path)
        if inc:
            headers.append((inc, f.data))
        elif ".dist-info/licenses/" in f.path or base.upper().startswith(("LICENSE", "COPYING")):
            licenses.append((base, f.data))
        elif _SHARED.search(base):
            if not is_elf(f.data):
                raise PackageLibError(
                    f"{source.description}: {f.path} is not an ELF shared library; this "
                    "dllreg packages Linux libraries (Windows and macOS come with the PE/Mach-O "
                    "readers)"
                )
            try:
                info = read_elf(f.data)
            except ELFError as exc:
                raise PackageLibError(f"{source.description}: {f.path}: {exc}") from None
            if not info.soname:
                raise PackageLibError(
                    f"{source.description}: {f.path} has no SONAME, so consumers cannot bind "
                    "to it by name; relink it with -Wl,-soname,<name>"
                )
            digest = hashlib.sha256(f.data).hexdigest()
            if info.soname in libs and data_by_soname[info.soname] != f.data:
                raise PackageLibError(
                    f"{source.description}: two different files carry SONAME {info.soname} "
                    f"({libs[info.soname].path} and {f.path}); keep only one"
                )
            machines.add(info.machine)
            data_by_soname[info.soname] = f.data
            libs[info.soname] = LibraryFile(f"lib/{info.soname}", info.soname, digest, info.needed)
    if not libs:
        raise PackageLibError(
            f"{source.description}: no shared library found (looked for *.so, *.so.N, "
            "*.dylib, *.dll); point --from at the directory or wheel that holds them"
        )
    if len(machines) > 1:
        raise PackageLibError(f"{source.description}: mixed architectures {sorted(machines)}")
    machine = machines.pop()
    plat = platform or source.platform or f"linux_{_ELF_MACHINE_TAG.get(machine, machine)}"
    if not re.fullmatch(r"[a-z0-9_.]+", plat):
        raise PackageLibError(f"--platform {plat!r}: not a wheel platform tag")
    order = _preload_order(libs)
    names = [h for h, _ in headers]
    manifest = Manifest(
        name=name, version=norm_version, platform=plat, libraries=tuple(order), requires=reqs,
        headers=tuple(f"include/{h}" for h in sorted(names)),
        pkgconfig=f"lib/pkgconfig/{name}.pc", source=source.description,
        generator=f"dllreg {__version__}",
    )
    files = [(lib.path, data_by_soname[lib.soname]) for lib in order]
    files += [(f"include/{h}", data) for h, data in sorted(headers)]
    files.append((f"lib/pkgconfig/{name}.pc", render_pc(manifest, _extra_cflags(source)).encode()))
    files.append((MANIFEST_NAME, manifest.to_text().encode()))
    external = tuple((lib.soname, n) for lib in order for n in lib.needed
                     if n not in libs and not n.startswith(_SYSTEM_PREFIXES))
    return LibraryPlan(manifest, tuple(files), tuple(dict(licenses).items()), external)


def _metadata(plan: LibraryPlan) -> str:
    m = plan.manifest
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {plan.dist}",
        f"Version: {m.version}",
        f"Summary: The {m.name} native library, installed once for the environment by dllreg",
    ]
    lines += [f"Requires-Dist: {r.dist_requirement}" for r in m.requires]
    lines += [f"License-File: {n}" for n, _ in plan.licenses]
    return "\n".join(lines) + "\n\n" + f"Packaged from {m.source} by {m.generator}.\n"


def write_library_wheel(plan: LibraryPlan, outdir: Path) -> Path:
    """Write the wheel into ``outdir`` atomically and return its path."""
    out = outdir / plan.wheel_name
    dist_info = f"{plan.dist.replace('-', '_')}-{plan.manifest.version}.dist-info"
    root = f"{REGISTRY_DIR}/{plan.manifest.name}"
    wheel_meta = (
        f"Wheel-Version: 1.0\nGenerator: dllreg {__version__}\nRoot-Is-Purelib: false\n"
        + "".join(f"Tag: py3-none-{p}\n" for p in plan.manifest.platform.split("."))
    )
    shared = {lib.path for lib in plan.manifest.libraries}
    with WheelWriter(out, dist_info) as w:
        for rel, data in plan.files:
            w.add(f"{root}/{rel}", data, executable=rel in shared)
        for name, data in plan.licenses:
            w.add(f"{dist_info}/licenses/{name}", data)
        w.add(f"{dist_info}/METADATA", _metadata(plan).encode())
        w.add(f"{dist_info}/WHEEL", wheel_meta.encode())
    return out
