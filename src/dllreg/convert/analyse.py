"""What a repaired wheel vendors: its libraries, who needs each, and the symbols involved.

Pure (an InputWheel in, frozen dataclasses out), on top of env/inspect.py's resolution of needs;
with each library's build identity, upstream version and versioned symbols, all read with the
wheel (convert/facts.py): analyse parses no binary.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Collection, Mapping

from ..env.inspect import Member, Report, inspect_wheel_members
from .read import DevendorError, InputWheel

__all__ = ["VendoredLib", "analyse", "cycles", "order"]

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


def _members(wheel: InputWheel) -> list[Member]:
    """inspect's members from the facts read with the wheel; only ``__init__.py`` texts (a
    delvewheel patch, namespace folders) are read again, and they are small."""
    texts = wheel.read(m.name for m in wheel.members
                       if m.facts is None and posixpath.basename(m.name) == "__init__.py")
    out = []
    for m in wheel.members:
        if (f := m.facts) is not None:  # a binary (facts.is_binary)
            out.append(Member(m.name, m.size, binary=f.binary, error=f.error))
        elif m.name in texts:
            out.append(Member(m.name, m.size, text=texts[m.name].decode("utf-8", "replace")))
        else:
            out.append(Member(m.name, m.size))
    return out


def analyse(wheel: InputWheel) -> tuple[Report, dict[str, VendoredLib]]:
    """inspect's report of the wheel and its vendored libraries (in ``<x>.libs``/``.dylibs``, or
    loose beside the package), from the facts read with it (no binary is read again)."""
    report = inspect_wheel_members(wheel.filename, _members(wheel), {})
    if report.errors:
        raise DevendorError(f"{wheel.path}: cannot devendor a wheel with unreadable or mismatched "
                            "binaries:\n  " + "\n  ".join(report.errors))
    facts = report.wheel
    assert facts is not None
    member = {m.name: m for m in wheel.members}
    of = {b.path: f for b in report.binaries if (f := member[b.path].facts) is not None}

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
    for b in report.binaries:
        if of[b.path].versions_error is not None:
            raise DevendorError(f"{wheel.path}: member {b.path!r}: cannot read its symbol versions or "
                                f"build identity ({of[b.path].versions_error})")
    imported: dict[str, set[str]] = {b.path: set() for b in vendored}
    wanted: dict[str, set[tuple[str, str | None]]] = {b.path: set() for b in vendored}
    nodes: dict[str, set[str]] = {b.path: set() for b in vendored}
    for b in report.binaries:
        for need in b.needs:
            if need.category == "vendored" and need.member in users:
                users[need.member].append(b.path)
                if b.format == "pe":
                    dll = need.name.lower()
                    imported[need.member] |= {s for s, _, d in of[b.path].imports if d == dll}
                    wanted[need.member] |= {(s, None) for s, _, d in of[b.path].imports if d == dll}
                else:
                    mine = of[need.member].exported
                    imported[need.member] |= {s for s, _, _ in of[b.path].imports if s in mine}
                    # a versioned reference names its file; an unversioned one binds by name
                    wanted[need.member] |= {(s, node) for s, node, file in of[b.path].imports
                                            if file == need.name or (file is None and s in mine)}
                    nodes[need.member] |= {n for f, n in of[b.path].requires if f == need.name}
    libs = {}
    for b in vendored:
        needs = tuple(n.member for n in b.needs if n.category == "vendored" and n.member in users)
        installed = b.path.split("/", 2)[2] if b.path.split("/")[0].endswith(".data") else b.path
        runtime = b.name if b.format != "pe" and b.name else posixpath.basename(b.path)
        f = of[b.path]
        assert f.upstream is not None, b.path  # facts.may_be_vendored holds for every vendored one
        libs[b.path] = VendoredLib(b.path, installed, runtime, b.format, b.arch, b.size,
                                   member[b.path].sha256, f.exported, needs,
                                   tuple(dict.fromkeys(users[b.path])), frozenset(imported[b.path]),
                                   f.content, f.build, f.upstream, f.nodes, f.provides,
                                   frozenset(wanted[b.path]), frozenset(nodes[b.path]))
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
