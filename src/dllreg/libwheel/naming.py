"""The naming rule for devendored libraries (docs/devendor.md, "The naming rule").

Pure. A packaged copy must never carry a runtime name (SONAME, DLL name, install name) that
the system, the interpreter or another provider may load into the same process: glibc, the
Windows loader and dyld reuse an already-loaded library whose name matches, so a plain
``libssl.so.3`` would capture CPython's ``_ssl`` or be captured by it. The runtime name is
therefore the plain stem, a build tag and the ABI major (``libcrypto-1a2b3c4d.so.3``), the
registry name the same without ``lib`` (``crypto-3-1a2b3c4d``). The build tag comes from the
library's own content (GNU build ID, else its code), so every wheel that vendors one build
names it alike and it dedupes across wheels and across runs, while two builds never meet under
one name. The version is the upstream version read from the file.
"""

from __future__ import annotations

import hashlib
import re

from packaging.version import InvalidVersion, Version

from ..names import library_name

__all__ = ["best_version", "build_tag", "deciding_kind", "derived_names", "no_downgrade", "split_abi",
           "unmangle", "upstream_versions"]

# auditwheel inserts -<8 hex> before the first dot (sometimes twice: a library repaired again),
# delvewheel -<32 hex> before the extension.
_HASHES = re.compile(r"(?:-[0-9a-f]{8}|-[0-9a-f]{32})+(?=\.|$)")
_SUFFIX = re.compile(r"\.(?:so(?=\.|$)|dll$|dylib$|pyd$)", re.IGNORECASE)
# Version strings some libraries carry under another name than their stem's.
_ALIASES = {"crypto": ("openssl",), "ssl": ("openssl",), "z": ("deflate", "inflate")}
_KINDS = ("string", "node", "file")  # where an upstream version was read, most telling first


def unmangle(filename: str) -> str:
    """``libfoo-1a2b3c4d.so.1.2`` -> ``libfoo.so.1.2``; ``libopenblasp-r0-37b5f859.3.3.so`` ->
    ``libopenblasp-r0.3.3.so``; ``msvcp140-<32 hex>.dll`` -> ``msvcp140.dll``."""
    m = _SUFFIX.search(filename)
    head, tail = (filename[:m.start()], filename[m.start():]) if m else (filename, "")
    first = head.find(".")
    if first < 0:
        return _HASHES.sub("", head) + tail
    return _HASHES.sub("", head[:first]) + head[first:] + tail


def split_abi(plain: str) -> tuple[str, str, str]:
    """(stem, ABI major, suffix) of an un-mangled name: ``libpng16.so.16.58.0`` -> (``libpng16``,
    ``16``, ``.so``); ``libopenblasp-r0.3.3.so`` -> (``libopenblasp-r0.3.3``, ``""``, ``.so``)
    (numbers before ``.so`` are part of the name); ``libgfortran-5.dll`` -> (``libgfortran-5``,
    ``""``, ``.dll``)."""
    m = _SUFFIX.search(plain)
    if m is None:
        return plain, "", ""
    major = re.match(r"\.(\d+)", plain[m.end():])
    return plain[:m.start()], major[1] if major else "", plain[m.start():m.end()]


def build_tag(build_id: str) -> str:
    """The 8 hex digits of a build identity that go into names."""
    return hashlib.sha256(build_id.encode()).hexdigest()[:8]


def derived_names(plain: str, build: str) -> tuple[str, str]:
    """(registry name, runtime name) of a packaged copy: ``libcrypto.so.3`` with tag
    ``1a2b3c4d`` -> (``crypto-3-1a2b3c4d``, ``libcrypto-1a2b3c4d.so.3``)."""
    stem, major, suffix = split_abi(plain)
    bare = stem[3:] if stem.lower().startswith("lib") and len(stem) > 3 else stem
    bare = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", bare)
    name = library_name("-".join(p for p in (bare, major, build) if p))
    dot = stem.find(".") if "." in stem else len(stem)  # where auditwheel puts its hash
    tagged = f"{stem[:dot]}-{build}{stem[dot:]}" if build else stem
    return name, tagged + suffix + (f".{major}" if major and suffix.lower() == ".so" else "")


def _numbers(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def upstream_versions(data: bytes, plain: str, nodes: frozenset[str] = frozenset()) -> dict[str, str]:
    """The library's upstream release as read from the file, by kind: ``string``, a version
    string next to its name (``OpenSSL 3.5.8``, ``libcurl/8.14.1``, ``libpng version 1.6.58``;
    the most frequent); ``node``, its highest version node (``OPENSSL_3.5.0``); ``file``, the
    numbers of its file name (``libzstd.so.1.5.7``), always present (``0`` without numbers)."""
    out: dict[str, str] = {}
    stem = split_abi(plain)[0]
    bare = stem[3:] if stem.lower().startswith("lib") else stem
    words = {w for w in {bare, bare.rstrip("0123456789_-."), *_ALIASES.get(bare, ())}
             if len(w) >= 2 or w in _ALIASES.get(bare, ())}
    found: set[Version] = set()
    if words:
        # One lowered copy and a literal-first pattern per word: re then skips ahead with a fast
        # literal search (a case-insensitive alternation scans every byte: 100 s on the stack).
        low = data.lower()
        for w in words:
            pattern = re.escape(w.lower().encode()) + rb"[ /-]?(?:version |v)?(\d+\.\d+(?:\.\d+)?)(?![\d.])"
            for hit in re.finditer(pattern, low):
                at = hit.start() - 3 if low[max(hit.start() - 3, 0):hit.start()] == b"lib" else hit.start()
                if at > 0 and low[at - 1:at].isalnum():
                    continue  # inside another word
                if (v := _numbers(hit[1].decode())) is not None:
                    found.add(v)
    versions = [v for n in nodes if (m := re.search(r"(\d+(?:\.\d+)*)$", n)) and (v := _numbers(m[1]))]
    # A release is never older than its newest version node: a lower string is something else
    # (a compatibility note, a version the library checks for).
    found = {v for v in found if not versions or v >= max(versions)}
    if found:
        out["string"] = str(max(found))
    if versions:
        out["node"] = str(max(versions))
    m = _SUFFIX.search(plain)
    tail = re.match(r"\.(\d+(?:\.\d+)*)", plain[m.end():]) if m else None
    out["file"] = str(Version(tail[1])) if tail else "0"
    return out


def best_version(versions: dict[str, str]) -> tuple[str, str]:
    """(kind, version): the most telling of ``upstream_versions``."""
    kind = next(k for k in _KINDS if k in versions)
    return kind, versions[kind]


def no_downgrade(mine: dict[str, str], other: dict[str, str]) -> str | None:
    """None when ``mine`` (``upstream_versions``) is provably not older than ``other``; else why.

    Kinds are tried most telling first; a kind both have decides when it differs. Equal is
    proof only for a version string or a file name of three numbers (libtool's revision moves
    with each release): equal version nodes (OPENSSL_3.5.0 in 3.5.1 and 3.5.8) prove nothing.
    """
    kind = deciding_kind(mine, other)
    if kind is None:
        return "no version string, equal version nodes and file numbers"
    a, b = Version(mine[kind]), Version(other[kind])
    return f"{a} < {b} (by {kind} version)" if a < b else None


def deciding_kind(mine: dict[str, str], other: dict[str, str]) -> str | None:
    """The kind of version that decides between two copies (no_downgrade), or None."""
    for kind in _KINDS:
        if kind not in mine or kind not in other:
            continue
        a, b = Version(mine[kind]), Version(other[kind])
        if a != b or kind == "string" or (kind == "file" and len(a.release) >= 3):
            return kind
    return None
