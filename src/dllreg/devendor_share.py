"""Which vendored copy serves which: one library wheel for several builds of one library, only
where that is provably safe (docs/devendor.md, "Sharing across builds").

Pure. Copies are grouped by format, architecture, stem and ABI major (``libcrypto.so.3`` of
every input wheel). Within a group, a copy serves another when it exports every (symbol,
version node) the other's users import, defines every version node they require (glibc refuses
to load otherwise) and is provably not older (devendor_names.no_downgrade: its upstream version,
read from the file). Copies are tried newest first, so the newest covering copy serves; a copy
no other covers is packaged on its own, under its own name (the build tag keeps them apart).
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Collection, Sequence

from packaging.version import Version

from .devendor_facts import VendoredLib
from .devendor_names import deciding_kind, no_downgrade, split_abi, unmangle

__all__ = ["Copy", "Served", "choose_servers", "gaps"]

Key = tuple[str, str]  # (input wheel file name, member)


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
    if lib.format == "macho":  # no export trie: nothing can be proven (devendor_macos)
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
    return None if older is None else f"is not provably as new ({older})"


def _rank(c: Copy) -> tuple[Version, Version, int]:
    """Newest first: a version string is never below the newest node (upstream_versions), so
    the higher of the two is the release as far as the file tells; then the file numbers."""
    v = dict(c.lib.upstream)  # ties keep the input order (a stable sort)
    release = max(Version(v.get("string", "0")), Version(v.get("node", "0")))
    return release, Version(v.get("file", "0")), len(c.lib.provides)


def choose_servers(copies: Sequence[Copy], banned: Collection[Key] = ()
                   ) -> tuple[dict[Key, Served], dict[Key, str]]:
    """For each copy another one serves: that one and why; and for each copy that stays on its
    own although its group has another, why no other serves it. ``banned`` copies serve nobody
    (they are not packaged as themselves in their own wheel)."""
    families: dict[tuple[str, str, str, str], list[Copy]] = {}
    for c in copies:
        fam = _family(c.lib)
        if fam is not None:
            families.setdefault(fam, []).append(c)
    out: dict[Key, Served] = {}
    alone: dict[Key, str] = {}
    for group in families.values():
        servers: list[Copy] = []
        for c in sorted(group, key=_rank, reverse=True):
            refused = []
            for s in servers:
                why = gaps(s.lib, c.lib)
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


def _reason(server: Copy, copy: Copy) -> str:
    if server.lib.build == copy.lib.build:
        return f"identical to the copy in {server.wheel} (the same build): one library wheel"
    mine_all, theirs_all = dict(server.lib.upstream), dict(copy.lib.upstream)
    kind = deciding_kind(mine_all, theirs_all) or "file"
    mine, theirs = mine_all[kind], theirs_all[kind]
    return (f"replaced by the copy in {server.wheel} ({posixpath.basename(server.lib.member)}, {mine} >= "
            f"{theirs} by {kind} version): it exports all {len(copy.lib.wanted)} symbols and defines all "
            f"{len(copy.lib.wanted_nodes)} version nodes its users need")
