"""What a repaired wheel vendors: its libraries, who needs each, and the symbols involved.

Pure (an InputWheel in, frozen dataclasses out), on top of inspect.py's resolution of needs;
also the naming rule for vendored files (``unmangle``, ``derived_identity``, docs/devendor.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import posixpath
import re
from collections.abc import Mapping

from packaging.version import Version

from .consumer import is_extension_module
from .devendor_read import DevendorError, InputWheel
from .errors import DllregError
from .inspect import Member, Report, inspect_binary, inspect_wheel_members
from .names import library_name

__all__ = ["VendoredLib", "analyse", "derived_identity", "order", "unmangle"]

# auditwheel appends -<8 hex> (sometimes twice: a library repaired again), delvewheel -<32 hex>.
_HASHES = re.compile(r"(?:-[0-9a-f]{8}|-[0-9a-f]{32})+$")
_SUFFIX = re.compile(r"\.(?:so(?=\.|$)|dll$|dylib$|pyd$)", re.IGNORECASE)
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
    content: str = ""  # Mach-O: devendor_macos.content_digest, its identity without export names


def unmangle(filename: str) -> str:
    """``libfoo-1a2b3c4d.so.1.2`` -> ``libfoo.so.1.2``; ``msvcp140-<32 hex>.dll`` -> ``msvcp140.dll``."""
    m = _SUFFIX.search(filename)
    if not m:
        return _HASHES.sub("", filename)
    return _HASHES.sub("", filename[:m.start()]) + filename[m.start():]


def derived_identity(filename: str, exported: frozenset[str]) -> tuple[str, str]:
    """(library name, version) of a vendored file that no recipe covers (docs/devendor.md)."""
    plain = unmangle(filename)
    m = _SUFFIX.search(plain)
    stem, suffix = (plain[:m.start()], plain[m.end():]) if m else (plain, "")
    if stem.lower().startswith("lib") and len(stem) > 3:
        stem = stem[3:]
    numbers = re.match(r"\.(\d+(?:\.\d+)*)", suffix)
    trailing = re.search(r"[-.]?(\d+(?:\.\d+)*)$", stem) if not numbers and not m else None
    release = numbers[1] if numbers else trailing[1] if trailing else "0"
    name = library_name(re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", stem))
    label = hashlib.sha256("\n".join(sorted(exported)).encode()).hexdigest()[:8]
    return name, f"{Version(release)}+s{label}"


def _members(wheel: InputWheel) -> list[Member]:
    out = []
    for m in wheel.members:
        head = m.data[:4]
        if _LIKE_BINARY.search(m.name) or head == b"\x7fELF" or head[:2] == b"MZ":
            try:
                out.append(Member(m.name, len(m.data), binary=inspect_binary(m.data, m.name)))
            except DllregError as exc:
                out.append(Member(m.name, len(m.data), error=str(exc)))
        elif posixpath.basename(m.name) == "__init__.py":
            out.append(Member(m.name, len(m.data), text=m.data.decode("utf-8", "replace")))
        else:
            out.append(Member(m.name, len(m.data)))
    return out


def _symbols(data: bytes) -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
    """(exported, imported) of one binary; PE imports are (lowercased DLL, symbol) pairs."""
    if data[:4] == b"\x7fELF":
        from .binary.elf import read_elf

        e = read_elf(data)
        return e.exported, frozenset(("", s) for s in e.imported)
    if data[:2] == b"MZ":
        from .binary.pe import read_pe

        p = read_pe(data)
        return p.exports, p.imported
    return frozenset(), frozenset()  # Mach-O: dllreg does not read the export trie


def analyse(wheel: InputWheel) -> tuple[Report, dict[str, VendoredLib]]:
    """inspect's report of the wheel and its vendored libraries (in ``<x>.libs``/``.dylibs``, or
    loose beside the package)."""
    report = inspect_wheel_members(wheel.filename, _members(wheel), {})
    if report.errors:
        raise DevendorError(f"{wheel.path}: cannot devendor a wheel with unreadable or mismatched "
                            "binaries:\n  " + "\n  ".join(report.errors))
    facts = report.wheel
    assert facts is not None
    data = wheel.data()

    def in_libs(b_path: str) -> bool:
        installed = b_path.split("/", 2)[2] if b_path.split("/")[0].endswith(".data") else b_path
        return any(installed.startswith(d + "/") for d in facts.libs_dirs)

    # Vendored: what sits in a libs dir, and loose libraries that another binary of the wheel
    # loads through an rpath or its own directory (pymupdf's libmupdf beside pymupdf/), unless
    # they are extension modules themselves.
    needed = {n.member for b in report.binaries for n in b.needs if n.category == "vendored"}
    vendored = [b for b in report.binaries if in_libs(b.path) or (
        b.path in needed and not is_extension_module(b.path, data[b.path]))]
    users: dict[str, list[str]] = {b.path: [] for b in vendored}
    symbols = {b.path: _symbols(data[b.path]) for b in report.binaries}
    imported: dict[str, set[str]] = {b.path: set() for b in vendored}
    for b in report.binaries:
        for need in b.needs:
            if need.category == "vendored" and need.member in users:
                users[need.member].append(b.path)
                if b.format == "pe":
                    dll = need.name.lower()
                    imported[need.member] |= {s for d, s in symbols[b.path][1] if d == dll}
                else:
                    mine = symbols[need.member][0]
                    imported[need.member] |= {s for _, s in symbols[b.path][1] if s in mine}
    libs = {}
    for b in vendored:
        needs = tuple(n.member for n in b.needs if n.category == "vendored" and n.member in users)
        installed = b.path.split("/", 2)[2] if b.path.split("/")[0].endswith(".data") else b.path
        runtime = b.name if b.format != "pe" and b.name else posixpath.basename(b.path)
        content = ""
        if b.format == "macho":
            from .devendor_macos import content_digest

            content = content_digest(data[b.path])
        libs[b.path] = VendoredLib(b.path, installed, runtime, b.format, b.arch, b.size,
                            hashlib.sha256(data[b.path]).hexdigest(), symbols[b.path][0], needs,
                            tuple(dict.fromkeys(users[b.path])), frozenset(imported[b.path]), content)
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
