"""Which vendored copy serves which: one library wheel for several builds of one library, only
where that is provably safe (docs/devendor.md, "Sharing across builds").

Pure. Copies are grouped by format, architecture, stem and ABI major (``libcrypto.so.3`` of
every input wheel). Within a group, a copy serves another when it exports every (symbol,
version node) the other's users import, defines every version node they require (glibc refuses
to load otherwise) and is provably not older (libwheel.naming.no_downgrade: its upstream version,
read from the file). Copies are tried newest first, so the newest covering copy serves; a copy
no other covers is packaged on its own, under its own name (the build tag keeps them apart).
A library whose users check its release at run time (they import a ``*check_version`` or
``*get_libversion`` function: HDF5's H5check_version, which h5py calls and compares) is served
only by a copy of the same release: a newer one makes them warn or abort.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from collections.abc import Collection, Sequence

from packaging.version import Version

from ..libwheel.naming import deciding_kind, no_downgrade, split_abi, unmangle
from .analyse import VendoredLib

__all__ = ["Copy", "Served", "choose_servers", "gaps"]

Key = tuple[str, str]  # (input wheel file name, member)
# A function its users call to learn or check the library's exact release (H5check_version,
# H5get_libversion, ..._libversion): such users hold the library to the release they were built with.
_RELEASE_CHECK = re.compile(r"check_?version|get_?lib_?version|_libversion$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Copy:
    wheel: str
    lib: VendoredLib

    @property
    def key(self) -> Key:
        return self.wheel, self.lib.member


@dataclasses.dataclass(frozen=True)
class Served:
    by: Key  # the copy whose library wheel stands in for this one
    reason: str


def _family(lib: VendoredLib) -> tuple[str, str, str, str] | None:
    if lib.format == "macho":  # no export trie: nothing can be proven (convert.macos)
        return None
    stem, major, _ = split_abi(unmangle(posixpath.basename(lib.runtime)))
    return lib.format, lib.arch, stem.lower() if lib.format == "pe" else stem, major


def _shown(items: Sequence[str]) -> str:
    return ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")


def gaps(server: VendoredLib, copy: VendoredLib) -> str | None:
    """None when ``server`` can stand in for ``copy`` for all of the copy's users; else why not."""
    if server.build == copy.build:
        return None
    names = {s for s, _ in server.provides}
    missing = sorted(s if v is None else f"{s}@{v}" for s, v in copy.wanted
                     if (s not in names if v is None else (s, v) not in server.provides))
    if missing:
        return f"does not export {len(missing)} symbol(s) its users import: {_shown(missing)}"
    nodes = sorted(copy.wanted_nodes - server.nodes)
    if nodes:
        return f"does not define the version node(s) its users require: {_shown(nodes)}"
    older = no_downgrade(dict(server.upstream), dict(copy.upstream))
    if older is not None:
        return f"is not provably as new ({older})"
    checks = sorted(s for s, _ in copy.wanted if _RELEASE_CHECK.search(s))
    same = no_downgrade(dict(copy.upstream), dict(server.upstream)) is None  # and not older, above
    if checks and not same:
        return (f"is release {_named(server)}, and its users check the release they were built with "
                f"({_shown(checks)}), {_named(copy)}")
    return None


def _named(lib: VendoredLib) -> str:
    v = dict(lib.upstream)
    return next((f"{v[k]} (by {k} version)" for k in ("string", "node", "file") if k in v), "unknown")


def _release(lib: VendoredLib) -> Version:
    """The release as far as the file tells: a version string is never below the newest node."""
    v = dict(lib.upstream)
    return max(Version(v.get("string", "0")), Version(v.get("node", "0")))


def _rank(lib: VendoredLib) -> tuple[Version, Version, int]:
    """Newest first: a version string is never below the newest node (upstream_versions), so
    the higher of the two is the release as far as the file tells; then the file numbers."""
    v = dict(lib.upstream)  # ties keep the input order (a stable sort)
    return _release(lib), Version(v.get("file", "0")), len(lib.provides)


def choose_servers(copies: Sequence[Copy], banned: Collection[Key] = ()
                   ) -> tuple[dict[Key, Served], dict[Key, str]]:
    """For each copy another one serves: that one and why; and for each copy that stays on its
    own although its group has another, why no other serves it. ``banned`` copies serve nobody
    (they are not packaged as themselves in their own wheel). A server must also agree on what
    it needs: its libraries have to be the ones that serve the copy's own (h5py's libhdf5_hl
    cannot be served by one that needs another HDF5 than h5py's), else that pair is ruled out
    and the choice made again."""
    ruled_out: dict[tuple[Key, Key], str] = {}
    while True:
        out, alone = _choose(copies, banned, ruled_out)
        clash = _first_clash(copies, out)
        if clash is None:
            return out, alone
        ruled_out[clash[0]] = clash[1]


def _choose(copies: Sequence[Copy], banned: Collection[Key], ruled_out: dict[tuple[Key, Key], str]
            ) -> tuple[dict[Key, Served], dict[Key, str]]:
    families: dict[tuple[str, str, str, str], list[Copy]] = {}
    for c in copies:
        fam = _family(c.lib)
        if fam is not None:
            families.setdefault(fam, []).append(c)
    out: dict[Key, Served] = {}
    alone: dict[Key, str] = {}
    for group in families.values():
        servers: list[Copy] = []
        for c in sorted(group, key=lambda c: _rank(c.lib), reverse=True):
            refused = []
            for s in servers:
                why = ruled_out.get((c.key, s.key)) or gaps(s.lib, c.lib)
                if why is None:
                    out[c.key] = Served(s.key, _reason(s, c))
                    break
                refused.append(f"the copy in {s.wheel} {why}")
            else:
                if refused:
                    alone[c.key] = "; ".join(refused)
                if c.key not in banned:
                    servers.append(c)
    return out, alone


def _first_clash(copies: Sequence[Copy], out: dict[Key, Served]) -> tuple[tuple[Key, Key], str] | None:
    """A served copy whose server needs a library that is not what serves the copy's own need,
    while something else of the copy's wheel still uses that need (h5py's extensions use its
    libhdf5 beside libhdf5_hl). A need only the copy used goes with it: the server brings its own."""
    libs = {c.key: c.lib for c in copies}

    def resolved(key: Key) -> Key:
        return out[key].by if key in out else key

    for key, served in out.items():
        copy, server = libs[key], libs.get(served.by)
        if server is None:
            continue
        theirs = {_family(libs[k]): k for k in ((served.by[0], m) for m in server.needs) if k in libs}
        for need in ((key[0], m) for m in copy.needs):
            other = theirs.get(_family(libs[need])) if need in libs else None
            still_used = other is not None and any(
                u != key[1] and (key[0], u) not in out for u in libs[need].users)
            if still_used and other is not None and resolved(need) != resolved(other):
                return (key, served.by), (f"needs its own {posixpath.basename(other[1])}, which does not "
                                          f"serve this copy's {posixpath.basename(need[1])}")
    return None


def _reason(server: Copy, copy: Copy) -> str:
    if server.lib.build == copy.lib.build:
        return f"identical to the copy in {server.wheel} (the same build): one library wheel"
    mine_all, theirs_all = dict(server.lib.upstream), dict(copy.lib.upstream)
    kind = deciding_kind(mine_all, theirs_all) or "file"
    mine, theirs = mine_all[kind], theirs_all[kind]
    return (f"replaced by the copy in {server.wheel} ({posixpath.basename(server.lib.member)}, {mine} >= "
            f"{theirs} by {kind} version): it exports all {len(copy.lib.wanted)} symbols and defines all "
            f"{len(copy.lib.wanted_nodes)} version nodes its users need")
