"""Turn the inner backend's wheel into a dllreg consumer wheel.

Adds ``<pkg>/_dlls.py`` to each package that holds extension modules, imports it first
in that package's ``__init__.py``, adds ``Requires-Dist`` and the ``dllreg.json`` record
to the dist-info, and rewrites RECORD. The decisions are pure functions over member
names and text; ``patch_wheel`` is the I/O edge.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import sys
import sysconfig
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from .. import __version__
from ..binary.elf import ELFError, is_elf
from ..binary.elfpatch import build_time_entry, drop_runpath
from ..errors import BuildError, DllregError
from ..names import NativeRequirement
from ..env.registry import CONSUMER_RECORD
from ..stub import IMPORT_LINE, STUB_FILE, STUB_MODULE, render_stub
from ..wheelfile import Staging, WheelWriter, open_wheel, read_member, safe_members
from ..recipes.wheelprovider import consumer_requirements

_EXT = re.compile(r"\.(so|pyd)$|\.(cpython|abi3|pypy)[^/]*\.so$")
_DATA_LIB = re.compile(r"^[^/]+\.data/(purelib|platlib)/")


def _import_path(member: str) -> str | None:
    """The path a member has on sys.path, or None for metadata, scripts and data."""
    m = _DATA_LIB.match(member)
    if m:
        return member[m.end():]
    first = member.split("/", 1)[0]
    if first.endswith((".dist-info", ".data")):
        return None
    return member


def extension_name(member: str) -> bool:
    """Whether a member is named like an extension module (``.so``, ``.pyd``, ``.cpython-*.so``)."""
    return bool(_EXT.search(member))


def is_extension_module(name: str, content: bytes) -> bool:
    """Whether a binary named like an extension module is one: an ELF or PE file is when it
    exports ``PyInit_<module>`` (what the import system calls); a library that something
    dlopens by path (netCDF4's HDF5 filter plugins in ``netCDF4/plugins/``) is not. Mach-O
    export tries are not read, and an unreadable file is not judged: both count by name."""
    try:
        if is_elf(content):
            from ..binary.elf import read_elf

            return exports_module_init(name, read_elf(content).exported)
        if content[:2] == b"MZ":
            from ..binary.pe import read_pe

            return exports_module_init(name, read_pe(content).exports)
    except ValueError:  # ELFError / PEError: some other tool will say what is wrong
        pass
    return True


def exports_module_init(name: str, exported: Iterable[str]) -> bool:
    """Whether ``exported`` (the symbols of the file ``name``) holds its module's init function."""
    module = name.rsplit("/", 1)[-1].split(".", 1)[0]
    wanted = f"PyInit_{module}"
    # PEP 489: a non-ASCII module name is exported punycoded as PyInitU_<name>
    return any(s == wanted or s.startswith("PyInitU_") for s in exported)


def stub_packages(members: Iterable[str], is_extension: Callable[[str], bool] | None = None) -> list[str]:
    """Dotted names of the packages that get a stub, decided from the wheel's file list.

    Each extension module's stub goes in the outermost package of an unbroken chain of
    regular packages (directories with ``__init__.py``) that contains it (or, for one in a
    namespace folder, its nearest regular parent package), so it runs before any extension
    of that chain can load. With no extension module at all (a ctypes/cffi
    consumer), every top-level regular package gets one. ``is_extension`` (given the member
    name) tells extension modules from other binaries named like them; by default the name
    decides.
    """
    members = list(members)
    paths = {p: m for m in members if (p := _import_path(m))}
    inits = {p.rsplit("/", 1)[0] for p in paths if p.endswith("/__init__.py")}
    exts = [p for p, m in paths.items() if _EXT.search(p) and (is_extension is None or is_extension(m))]
    chosen: list[str] = []
    for ext in exts:
        parts = ext.split("/")[:-1]
        if not parts:
            raise BuildError(
                f"extension module {ext} sits at the top level of the wheel, outside any "
                "package, so nothing can preload its libraries before it loads; move it into "
                "a package (e.g. mypkg/" + ext + ") whose __init__.py imports it"
            )
        # An extension in a namespace folder inside a regular package (scipy's
        # sparse/linalg/_propack/) is imported through that package: its stub serves.
        while len(parts) > 1 and "/".join(parts) not in inits:
            parts = parts[:-1]
        if "/".join(parts) not in inits:
            raise BuildError(
                f"extension module {ext} is in {'/'.join(parts)}/, which has no __init__.py "
                "(a namespace package); add an __init__.py there so dllreg can import its "
                "_dlls stub before the extension loads"
            )
        top = len(parts)
        while top > 1 and "/".join(parts[: top - 1]) in inits:
            top -= 1
        pkg = ".".join(parts[:top])
        if pkg not in chosen:
            chosen.append(pkg)
    if not exts:
        chosen = sorted(p for p in inits if "/" not in p)
        if not chosen:
            raise BuildError(
                "the wheel has neither extension modules nor a top-level package to hold the "
                "_dlls stub; dllreg consumers must be packages with an __init__.py"
            )
    return sorted(chosen)


def insert_stub_import(source: str, origin: str) -> str:
    """``source`` with the stub import as its first statement after the docstring and
    ``__future__`` imports; unchanged if the import is already there."""
    if IMPORT_LINE.strip() in (line.strip() for line in source.splitlines()):
        return source
    try:
        tree = ast.parse(source, origin)
    except SyntaxError as exc:
        raise BuildError(f"{origin}: cannot parse ({exc.msg}, line {exc.lineno})") from None
    body = tree.body
    keep = 0
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        keep = 1
    while keep < len(body) and isinstance(body[keep], ast.ImportFrom) \
            and getattr(body[keep], "module", None) == "__future__":
        keep += 1
    first = body[keep] if keep < len(body) else None
    if isinstance(first, ast.ImportFrom) and first.level == 1 and first.module is None and \
            any(alias.name == STUB_MODULE and alias.asname is None for alias in first.names):
        return source  # the package already imports its stub first, in its own words
    lines = source.splitlines(keepends=True)
    if keep == 0:
        at = 0
    else:
        at = body[keep - 1].end_lineno or 0
        if keep < len(body) and body[keep].lineno <= at:
            raise BuildError(
                f"{origin}: line {at} holds the docstring or a __future__ import together with "
                "other statements; put them on separate lines so the dllreg import can go between"
            )
    if at and lines and not lines[at - 1].endswith("\n"):
        lines[at - 1] += "\n"
    return "".join(lines[:at]) + IMPORT_LINE + "".join(lines[at:])


def patch_metadata(text: str, requires: Sequence[NativeRequirement],
                   choices: Mapping[str, str] | None = None) -> str:
    """METADATA with a ``Requires-Dist`` line for each library (idempotent): the distribution
    ``choices`` names for it (a recipe's PyPI wheel), else ``dllreg-lib-NAME``."""
    head, sep, body = text.partition("\n\n")
    lines = head.splitlines()
    present = {line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")}
    add = [f"Requires-Dist: {d}" for d in consumer_requirements(requires, choices) if d not in present]
    last = max((i for i, line in enumerate(lines) if line.startswith("Requires-Dist:")), default=-1)
    at = last + 1 if last >= 0 else len(lines)
    lines[at:at] = add
    return "\n".join(lines) + "\n" + (sep[1:] + body if sep else "")


def unused_requirements(needed: Iterable[str],
                        libraries: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]],
                        requires: Sequence[NativeRequirement], dlopen: Iterable[str] = ()
                        ) -> list[NativeRequirement]:
    """The requirements no binary of the wheel needs: ``needed`` is every name the wheel's binaries
    record (DT_NEEDED, PE imports, Mach-O load commands), ``libraries`` maps a library to (its runtime
    names, the libraries it requires). A library counts as used when a binary needs one of its
    runtime names (compared by file name, case-insensitively), when a used library requires it,
    or when ``dlopen`` names it (the package opens it through ``_dlls.path()``)."""
    wanted = {n.replace("\\", "/").rsplit("/", 1)[-1].lower() for n in needed}
    used = set(dlopen) | {name for name, (runtime, _) in libraries.items()
                          if any(r.rsplit("/", 1)[-1].lower() in wanted for r in runtime)}
    todo = list(used)
    while todo:
        for dep in libraries.get(todo.pop(), ((), ()))[1]:
            if dep not in used:
                used.add(dep)
                todo.append(dep)
    return [r for r in requires if r.name not in used]


def consumer_record(requires: Sequence[NativeRequirement], stubs: Sequence[str]) -> str:
    return json.dumps({
        "format": 1,
        "generator": f"dllreg {__version__}",
        "requires": [str(r) for r in requires],
        "stubs": list(stubs),
    }, indent=2) + "\n"


def _build_time_filter() -> Callable[[str], bool]:
    """Which RPATH/RUNPATH entries point at build-time locations, judged on this machine:
    the temp dir (isolated build environments) and a build venv; the interpreter's own
    libdir stays (FINDINGS: this CPython adds it to every extension)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    roots = [tempfile.gettempdir()] + ([sys.prefix] if sys.prefix != sys.base_prefix else [])
    return functools.partial(
        build_time_entry, keep=[libdir] if isinstance(libdir, str) else [],
        build_roots=sorted({*roots, *map(os.path.realpath, roots)}), exists=os.path.isdir)


def _clean_runpaths(wheel: str, members: dict[str, bytes]) -> dict[str, bytes]:
    """ELF members with build-time RUNPATH entries removed (meson-python keeps the -L
    directory of a pkg-config dependency: the registry inside a vanished build env)."""
    drop = _build_time_filter()
    out = {}
    for name, content in members.items():
        if not is_elf(content):
            continue
        try:
            patched = drop_runpath(content, drop)
        except ELFError as exc:
            if _EXT.search(name):
                raise BuildError(f"{wheel}: {name}: cannot clean its RUNPATH: {exc}") from None
            continue  # an ELF-looking data file the loader never sees
        if patched is not None:
            out[name] = patched
    return out


def consumer_changes(wheel: str, data: Mapping[str, bytes], requires: Sequence[NativeRequirement],
                     active: Sequence[NativeRequirement], *, with_stubs: bool = True,
                     choices: Mapping[str, str] | None = None,
                     is_extension: Callable[[str], bool] | None = None) -> tuple[str, dict[str, bytes]]:
    """The dist-info directory and the members to add or replace: stubs, their imports in
    ``__init__.py``, METADATA's ``Requires-Dist`` and the dllreg.json record. Pure: ``data``
    maps every member name of the wheel ``wheel`` to its bytes, in archive order (only the few
    it changes are read); ``is_extension`` answers is_extension_module for a member, when the
    caller knows (else the bytes are read)."""
    names = list(data)
    dist_infos = {n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")}
    if len(dist_infos) != 1:
        raise BuildError(f"{wheel}: expected one .dist-info directory, found {sorted(dist_infos)}")
    dist_info = dist_infos.pop()
    try:
        judge = is_extension or (lambda n: is_extension_module(n, data[n]))
        packages = stub_packages(names, judge) if with_stubs else []
    except DllregError as exc:
        raise BuildError(f"{wheel}: {exc}") from None
    prefix = {(_import_path(n) or ""): n[: len(n) - len(_import_path(n) or "")] for n in names}
    changes: dict[str, bytes] = {}
    stubs = []
    for pkg in packages:
        rel = pkg.replace(".", "/")
        init = f"{rel}/__init__.py"
        member = prefix.get(init, "") + init
        if member not in data:  # pragma: no cover - stub_packages checked the __init__
            raise BuildError(f"{wheel}: {init} missing")
        stub_member = prefix.get(init, "") + f"{rel}/{STUB_FILE}"
        if stub_member in data and b"Generated by dllreg" not in data[stub_member]:
            raise BuildError(
                f"{wheel}: {stub_member} already exists and was not generated by dllreg; "
                "rename it, dllreg needs that module name for its stub"
            )
        text = data[member].decode("utf-8")
        changes[member] = insert_stub_import(text, f"{wheel}:{member}").encode("utf-8")
        changes[stub_member] = render_stub(pkg, active, choices).encode("utf-8")
        stubs.append(stub_member)
    meta = f"{dist_info}/METADATA"
    changes[meta] = patch_metadata(data[meta].decode("utf-8"), requires, choices).encode("utf-8")
    changes[f"{dist_info}/{CONSUMER_RECORD}"] = consumer_record(requires, stubs).encode()
    return dist_info, changes


#: A member to write: name, bytes, executable, zip date_time (None: the writer's default).
OutMember = tuple[str, "bytes | bytearray", bool, "tuple[int, int, int, int, int, int] | None"]


def write_members(out: Path, dist_info: str, members: Iterable[OutMember], *, stage: Staging | None = None,
                  compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """Write a wheel atomically (or ``stage`` it); its RECORD is generated from what was written
    (any old RECORD among ``members`` is skipped). ``members`` may be a generator: each is
    written as it comes."""
    with WheelWriter(out, dist_info, stage=stage, compression=compression) as w:
        for name, content, executable, date_time in members:
            if name == f"{dist_info}/RECORD":
                continue
            if date_time is None:
                w.add(name, content, executable=executable)
            else:
                w.add(name, content, executable=executable, date_time=date_time)
    return out


def patch_wheel(src: Path, dst_dir: Path, requires: Sequence[NativeRequirement],
                active: Sequence[NativeRequirement], *, with_stubs: bool = True,
                extra: dict[str, bytes] | None = None, choices: Mapping[str, str] | None = None
                ) -> Path:
    """Write the consumer wheel for ``src`` into ``dst_dir`` (same file name).

    ``requires`` go to the metadata (with markers, for pip); ``active`` are those whose
    markers hold for this build and go into the stubs.
    """
    with open_wheel(src) as zf:
        infos = [i for i in safe_members(zf, str(src)) if not i.is_dir()]
        data = {i.filename: read_member(zf, i, str(src)) for i in infos}
    names = [i.filename for i in infos]
    dist_info, changes = consumer_changes(src.name, data, requires, active, with_stubs=with_stubs,
                                          choices=choices)
    changes.update(extra or {})
    changes.update(_clean_runpaths(src.name, {n: data[n] for n in names if n not in changes}))
    by_name = {i.filename: i for i in infos}
    kept: list[OutMember] = [
        (name, changes.pop(name, data[name]), bool((by_name[name].external_attr >> 16) & 0o111),
         by_name[name].date_time) for name in names]
    return write_members(dst_dir / src.name, dist_info, kept + [
        (name, content, False, None) for name, content in changes.items()])
