"""What one input binary is, read once while its bytes are in hand (convert/read.py calls it).

Pure: bytes in, a frozen ``BinaryFacts`` out. It holds everything devendor later needs of a
binary: inspect's view, its symbols, symbol versions and build identity, its upstream release.
So analyse, plan and share work on facts, and no binary is decompressed or parsed again before
the write step (docs/architecture.md, "One way for data to flow").
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from typing import Any

from ..binary import BinaryError
from ..build.consumer import exports_module_init, extension_name
from ..env.inspect import Binary, read_binary
from ..libwheel.naming import unmangle, upstream_versions

__all__ = ["BinaryFacts", "binary_facts", "is_binary", "may_be_vendored"]

_LIKE_BINARY = re.compile(r"\.(so(\.\d+)*|dll|pyd|dylib)$", re.IGNORECASE)


def is_binary(name: str, head: bytes) -> bool:
    """Named like a native binary, or starting like an ELF or PE file."""
    return bool(_LIKE_BINARY.search(name)) or head[:4] == b"\x7fELF" or head[:2] == b"MZ"


def may_be_vendored(name: str, extension: bool) -> bool:
    """Whether analyse may take the member for a vendored library: anything in a ``<x>.libs``
    or ``.dylibs`` folder, and any binary that is not an extension module (analyse.py)."""
    parts = name.split("/")
    installed = parts[2:] if parts[0].endswith(".data") else parts  # <dist>.data/<scheme>/...
    return (not extension or any(p[:1] and p[0].endswith(".libs") for p in (parts, installed))
            or ".dylibs" in parts[:-1])


@dataclasses.dataclass(frozen=True)
class BinaryFacts:
    """One binary as devendor needs it. ``error`` says why inspect could not read it (then
    nothing else is known); ``versions_error`` why its symbol versions or build are unreadable."""

    binary: Binary | None = None
    error: str | None = None
    exported: frozenset[str] = frozenset()  # only of a binary that may be vendored
    module_init: bool = True  # exports PyInit_<module> (or cannot be judged: Mach-O, unreadable)
    build: str = ""  # its build identity (binary/elfversions.py; PE: its code's digest)
    nodes: frozenset[str] = frozenset()  # version nodes it defines
    provides: frozenset[tuple[str, str | None]] = frozenset()  # (symbol, version node), as exported
    #: (symbol, version node, file that must define the node); PE: (symbol, None, lowercased DLL)
    imports: frozenset[tuple[str, str | None, str | None]] = frozenset()
    requires: frozenset[tuple[str, str]] = frozenset()  # (needed file, version node)
    versions_error: str | None = None
    content: str = ""  # Mach-O: binary.machopatch.content_digest, its identity without export names
    upstream: tuple[tuple[str, str], ...] | None = None  # upstream_versions, when it may be vendored


def binary_facts(name: str, data: bytes) -> BinaryFacts:
    """The facts of the wheel member ``name`` from its bytes: each reader runs once."""
    try:
        binary, parsed = read_binary(data, name)
    except BinaryError as exc:
        return BinaryFacts(error=str(exc))
    facts = _symbols(binary, parsed)
    if binary.format == "elf":
        from ..binary.elfversions import read_versions

        try:
            v = read_versions(data)
        except ValueError as exc:  # ELFError: a part inspect does not read is malformed
            facts = dataclasses.replace(facts, versions_error=str(exc))
        else:
            facts = dataclasses.replace(facts, build=v.build_id, nodes=v.defined, provides=v.exports,
                                        imports=v.imports, requires=v.requires)
    elif binary.format == "macho":
        from ..binary.machopatch import content_digest

        content = content_digest(data)
        facts = dataclasses.replace(facts, content=content, build=f"macho:{content}")
    extension = bool(extension_name(name)) and facts.module_init
    if not may_be_vendored(name, extension):  # nobody asks what an extension module exports
        return dataclasses.replace(facts, exported=frozenset(), provides=frozenset(), nodes=frozenset())
    runtime = binary.name if binary.format != "pe" and binary.name else posixpath.basename(name)
    found = upstream_versions(data, unmangle(posixpath.basename(runtime)), facts.nodes)
    return dataclasses.replace(facts, upstream=tuple(sorted(found.items())))


def _symbols(binary: Binary, parsed: Any) -> BinaryFacts:
    """Exports (and PE imports) and the module-init verdict from the format reader's result;
    an ELF file's imports are read with its symbol versions."""
    if binary.format == "elf":
        return BinaryFacts(binary, exported=parsed.exported,
                           module_init=exports_module_init(binary.path, parsed.exported))
    if binary.format == "pe":
        return BinaryFacts(binary, exported=parsed.exports,
                           imports=frozenset((s, None, dll) for dll, s in parsed.imported),
                           module_init=exports_module_init(binary.path, parsed.exports),
                           build="text:" + parsed.code_digest,
                           provides=frozenset((s, None) for s in parsed.exports))
    return BinaryFacts(binary)  # Mach-O: dllreg does not read the export trie
