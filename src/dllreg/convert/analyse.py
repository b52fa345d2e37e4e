"""What a repaired wheel vendors: its libraries, who needs each, and the symbols involved.

Pure (an InputWheel in, frozen dataclasses out), on top of env/inspect.py's resolution of needs;
with each library's build identity, upstream version and versioned symbols (libwheel/naming.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import posixpath
import re
from collections.abc import Collection, Mapping

from ..env.inspect import Member, Report, inspect_binary, inspect_wheel_members
from ..errors import DllregError
from ..libwheel.naming import unmangle, upstream_versions
from .read import DevendorError, InputWheel, WheelMember

__all__ = ["VendoredLib", "analyse", "cycles", "order", "unmangle"]

_LIKE_BINARY = re.compile(r"\.(so(\.\d+)*|dll|pyd|dylib)$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class VendoredLib:
    """A vendored library with what the planner needs to know about it."""

    member: str
    installed: str
    runtime: str  # SONAME (ELF), file name (PE), install name (Mach-O): what users need
    format: str
    arch: str
    size: int
    sha256: str
    exported: frozenset[str]
    needs: tuple[str, ...]  # members of other vendored libraries it needs
    users: tuple[str, ...]  # members (any binary of the wheel) that need it
    imported: frozenset[str]  # symbols its users import from it
    content: str = ""  # Mach-O: binary.machopatch.content_digest, its identity without export names
    build: str = ""  # its build identity (binary/elfversions.py; PE: its code's digest)
    upstream: tuple[tuple[str, str], ...] = ()  # libwheel.naming.upstream_versions, as pairs
    nodes: frozenset[str] = frozenset()  # version nodes it defines
    provides: frozenset[tuple[str, str | None]] = frozenset()  # (symbol, version node)
    wanted: frozenset[tuple[str, str | None]] = frozenset()  # what its users import from it
    wanted_nodes: frozenset[str] = frozenset()  # version nodes its users require of it


def _is_binary(m: WheelMember) -> bool:
    return bool(_LIKE_BINARY.search(m.name)) or m.head[:4] == b"\x7fELF" or m.head[:2] == b"MZ"


def _read(wheel: InputWheel) -> dict[str, bytes]:
    """The bytes analyse needs: binaries and ``__init__.py`` files, one wheel at a time."""
    return wheel.read(m.name for m in wheel.members
                      if _is_binary(m) or posixpath.basename(m.name) == "__init__.py")


def _members(wheel: InputWheel, data: Mapping[str, bytes]) -> list[Member]:
    out = []
    for m in wheel.members:
        if _is_binary(m):
            try:
                out.append(Member(m.name, m.size, binary=inspect_binary(data[m.name], m.name)))
            except DllregError as exc:
                out.append(Member(m.name, m.size, error=str(exc)))
        elif posixpath.basename(m.name) == "__init__.py":
            out.append(Member(m.name, m.size, text=data[m.name].decode("utf-8", "replace")))
        else:
            out.append(Member(m.name, m.size))
    return out


@dataclasses.dataclass(frozen=True)
class _Versions:
    build: str = ""
    nodes: frozenset[str] = frozenset()
    provides: frozenset[tuple[str, str | None]] = frozenset()
    imports: frozenset[tuple[str, str | None, str | None]] = frozenset()  # (symbol, node, file)
    requires: frozenset[tuple[str, str]] = frozenset()  # (file, node)


def _versions(data: bytes, exported: frozenset[str]) -> _Versions:
    """Build identity and versioned symbols; PE has no symbol versions, its code is its build."""
    if data[:4] == b"\x7fELF":
        from ..binary.elfversions import read_versions

        v = read_versions(data)
        return _Versions(v.build_id, v.defined, v.exports, v.imports, v.requires)
    if data[:2] == b"MZ":
        from ..binary.pe import parsed

        digest = hashlib.sha256()
        with parsed(data) as pe:
            for section in pe.sections:
                if section.Characteristics & 0x20000000:  # IMAGE_SCN_MEM_EXECUTE
                    digest.update(section.get_data())
        return _Versions("text:" + digest.hexdigest(), provides=frozenset((s, None) for s in exported))
    return _Versions()


def _symbols(data: bytes) -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
    """(exported, imported) of one binary; PE imports are (lowercased DLL, symbol) pairs."""
    if data[:4] == b"\x7fELF":
        from ..binary.elf import read_elf

        e = read_elf(data)
        return e.exported, frozenset(("", s) for s in e.imported)
    if data[:2] == b"MZ":
        from ..binary.pe import read_pe

        p = read_pe(data)
        return p.exports, p.imported
    return frozenset(), frozenset()  # Mach-O: dllreg does not read the export trie


def analyse(wheel: InputWheel) -> tuple[Report, dict[str, VendoredLib]]:
    """inspect's report of the wheel and its vendored libraries (in ``<x>.libs``/``.dylibs``, or
    loose beside the package)."""
    data = _read(wheel)  # let go when analyse returns: one wheel's binaries in memory at a time
    report = inspect_wheel_members(wheel.filename, _members(wheel, data), {})
    if report.errors:
        raise DevendorError(f"{wheel.path}: cannot devendor a wheel with unreadable or mismatched "
                            "binaries:\n  " + "\n  ".join(report.errors))
    facts = report.wheel
    assert facts is not None

    def in_libs(b_path: str) -> bool:
        installed = b_path.split("/", 2)[2] if b_path.split("/")[0].endswith(".data") else b_path
        return any(installed.startswith(d + "/") for d in facts.libs_dirs)

    # Vendored: what sits in a libs dir, and loose libraries that another binary of the wheel
    # loads through an rpath or its own directory (pymupdf's libmupdf beside pymupdf/), unless
    # they are extension modules themselves.
    needed = {n.member for b in report.binaries for n in b.needs if n.category == "vendored"}
    extension = {m.name for m in wheel.members if m.extension}
    vendored = [b for b in report.binaries
                if in_libs(b.path) or (b.path in needed and b.path not in extension)]
    users: dict[str, list[str]] = {b.path: [] for b in vendored}
    symbols = {b.path: _symbols(data[b.path]) for b in report.binaries}
    versions = {}
    for b in report.binaries:
        try:
            versions[b.path] = _versions(data[b.path], symbols[b.path][0])
        except ValueError as exc:  # ELFError, PEError: a part inspect does not read is malformed
            raise DevendorError(f"{wheel.path}: member {b.path!r}: cannot read its symbol versions or "
                                f"build identity ({exc})") from None
    imported: dict[str, set[str]] = {b.path: set() for b in vendored}
    wanted: dict[str, set[tuple[str, str | None]]] = {b.path: set() for b in vendored}
    nodes: dict[str, set[str]] = {b.path: set() for b in vendored}
    for b in report.binaries:
        for need in b.needs:
            if need.category == "vendored" and need.member in users:
                users[need.member].append(b.path)
                if b.format == "pe":
                    dll = need.name.lower()
                    imported[need.member] |= {s for d, s in symbols[b.path][1] if d == dll}
                    wanted[need.member] |= {(s, None) for d, s in symbols[b.path][1] if d == dll}
                else:
                    mine = symbols[need.member][0]
                    imported[need.member] |= {s for _, s in symbols[b.path][1] if s in mine}
                    # a versioned reference names its file; an unversioned one binds by name
                    wanted[need.member] |= {(s, node) for s, node, file in versions[b.path].imports
                                            if file == need.name or (file is None and s in mine)}
                    nodes[need.member] |= {n for f, n in versions[b.path].requires if f == need.name}
    libs = {}
    for b in vendored:
        needs = tuple(n.member for n in b.needs if n.category == "vendored" and n.member in users)
        installed = b.path.split("/", 2)[2] if b.path.split("/")[0].endswith(".data") else b.path
        runtime = b.name if b.format != "pe" and b.name else posixpath.basename(b.path)
        content = ""
        if b.format == "macho":
            from ..binary.machopatch import content_digest

            content = content_digest(data[b.path])
        v = versions[b.path]
        plain = unmangle(posixpath.basename(runtime))
        libs[b.path] = VendoredLib(b.path, installed, runtime, b.format, b.arch, b.size,
                            hashlib.sha256(data[b.path]).hexdigest(), symbols[b.path][0], needs,
                            tuple(dict.fromkeys(users[b.path])), frozenset(imported[b.path]), content,
                            v.build or f"macho:{content}",
                            tuple(sorted(upstream_versions(data[b.path], plain, v.nodes).items())),
                            v.nodes, v.provides, frozenset(wanted[b.path]), frozenset(nodes[b.path]))
    return report, libs


def order(libs: Mapping[str, VendoredLib]) -> list[str]:
    """Users before the libraries they need (a library's fate depends on its users')."""
    out: list[str] = []
    seen: set[str] = set()

    def visit(k: str) -> None:  # post-order over "needed by": dependencies come out last
        if k in seen:
            return
        seen.add(k)
        for u in libs[k].users:
            if u in libs:
                visit(u)
        out.append(k)

    for k in sorted(libs):
        visit(k)
    return out


def cycles(libs: Mapping[str, VendoredLib], among: Collection[str]) -> list[tuple[str, ...]]:
    """The groups of ``among`` that need each other (strongly connected, more than one member),
    each sorted, by Tarjan's algorithm over ``needs``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[tuple[str, ...]] = []

    def visit(k: str) -> None:
        index[k] = low[k] = len(index)
        stack.append(k)
        for n in libs[k].needs:
            if n not in among:
                continue
            if n not in index:
                visit(n)
                low[k] = min(low[k], low[n])
            elif n in stack:
                low[k] = min(low[k], index[n])
        if low[k] == index[k]:
            group = []
            while True:
                m = stack.pop()
                group.append(m)
                if m == k:
                    break
            if len(group) > 1:
                out.append(tuple(sorted(group)))

    for k in sorted(among):
        if k not in index:
            visit(k)
    return sorted(out)
