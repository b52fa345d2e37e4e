"""``devendor``: decide, per vendored library of repaired wheels, what becomes of it.

Pure: input wheels (already read and checked by convert.read), the recipes and the
available library wheels in; a ``DevendorPlan`` out. Each library in a ``<dist>.libs/``
directory is **substituted** by a registry library (its recipe matches and the substitute
exports every symbol the wheel's binaries import from the copy), **packaged** as a library
wheel of its own (name and version from the file, docs/devendor.md), **dropped** (only
substituted or dropped libraries need it) or **kept** vendored, with the reason.
convert/write.py turns the plan into bytes.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import posixpath
from collections.abc import Mapping, Sequence

from packaging.utils import parse_wheel_filename
from packaging.version import InvalidVersion, Version

from ..env.inspect import Report
from ..errors import DllregError
from ..libwheel.naming import best_version, build_tag, derived_names, split_abi, unmangle
from ..names import NativeRequirement, library_name
from ..recipes.schema import Recipe, RecipeBook
from ..recipes.source import platform_family
from . import macos
from .analyse import VendoredLib, analyse, cycles, order
from .read import DevendorError, InputWheel, LibraryWheel
from .share import Copy, Key, Served, choose_servers

__all__ = ["Decision", "DevendorError", "DevendorPlan", "NewLibrary", "WheelPlan", "plan_devendor",
           "unmangle"]

ACTIONS = ("substitute", "package", "drop", "keep")


@dataclasses.dataclass(frozen=True)
class Decision:
    member: str  # the vendored wheel member
    action: str  # one of ACTIONS
    reason: str
    size: int = 0
    library: str | None = None  # substitute / package: the registry library
    version: str | None = None
    runtime: str | None = None  # the name binaries need after the rewrite
    served_by: str | None = None  # package: "WHEEL: MEMBER" of the copy whose library wheel it uses

    @property
    def requirement(self) -> NativeRequirement | None:
        if self.library is None or self.version is None:
            return None
        public = Version(self.version).public
        exact = self.action == "package" or public != self.version  # >= takes no local label
        return NativeRequirement(self.library, f"=={self.version}" if exact else f">={public}")


@dataclasses.dataclass(frozen=True)
class NewLibrary:
    """A library wheel to build from a vendored copy (action ``package``)."""

    name: str
    version: str
    runtime: str
    wheel: str  # the input wheel it comes from
    member: str
    platform: str
    sha256: str
    renames: tuple[tuple[str, str], ...]  # its own needed names -> registry runtime names
    requires: tuple[NativeRequirement, ...]
    users: tuple[str, ...] = ()  # input wheels that need it
    license: str | None = None  # the recipe's, when the library is a registry recipe's
    #: other (member, runtime, sha256) of its wheel in the same library: files that need each
    #: other (a cycle, such as pillow's freetype and harfbuzz) load as one group
    group: tuple[tuple[str, str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class WheelPlan:
    wheel: InputWheel
    tool: str | None
    decisions: tuple[Decision, ...]
    removed: tuple[str, ...]  # members that leave the wheel
    renames: tuple[tuple[str, str], ...]  # needed name -> new runtime name, for remaining binaries
    emptied: tuple[str, ...]  # libs dirs (as installed) that no longer exist
    patch_file: str | None  # delvewheel's __init__.py, when its patch must go
    requires: tuple[NativeRequirement, ...]
    binaries: tuple[str, ...]  # remaining binary members that need a rewrite
    libs_dirs: tuple[str, ...] = ()  # every <x>.libs / .dylibs dir of the input (as installed)

    @property
    def changed(self) -> bool:
        return bool(self.removed)

    @property
    def bytes_before(self) -> int:
        return sum(d.size for d in self.decisions)

    @property
    def bytes_after(self) -> int:
        return sum(d.size for d in self.decisions if d.action == "keep")


@dataclasses.dataclass(frozen=True)
class DevendorPlan:
    wheels: tuple[WheelPlan, ...]
    libraries: tuple[NewLibrary, ...]
    substitutes: tuple[LibraryWheel, ...]  # library wheels the output needs next to it
    missing: tuple[tuple[str, str], ...] = ()  # (recipe, platform) matched without a library wheel

    @property
    def packaged_bytes(self) -> int:
        """Bytes of the vendored copies the new library wheels are made of (each once)."""
        size = {(wp.wheel.filename, d.member): d.size for wp in self.wheels for d in wp.decisions}
        return sum(size[(nl.wheel, m)] for nl in self.libraries
                   for m in (nl.member, *(g[0] for g in nl.group)))


def _recipes_for(lib: VendoredLib, family: str, book: RecipeBook) -> list[tuple[Recipe, str | None]]:
    """Recipes whose vendored or runtime names match; with why the copy is not that recipe's ABI."""
    base = posixpath.basename(lib.member)
    plain = unmangle(posixpath.basename(lib.runtime))
    fold = str.lower if family == "windows" else str
    out = []
    for r in book.recipes:
        abi = r.abi_for(family)
        if abi is None:
            continue
        names = [fold(posixpath.basename(n)) for n in abi.runtime_names]
        if not (any(fnmatch.fnmatchcase(fold(base), fold(g)) for g in abi.vendored_names)
                or fold(plain) in names):
            continue
        absent = [s for s in abi.expected_symbols() if s not in lib.exported]
        why = None
        if absent and lib.format != "macho":
            why = (f"matches recipe {r.name} by name but does not export {', '.join(absent)}"
                   f" (not its {abi.integer or 'symbol'} ABI)")
        out.append((r, why))
    return out


@dataclasses.dataclass
class _Shared:
    """State across input wheels: one library wheel per identical copy."""

    book: RecipeBook
    available: Sequence[LibraryWheel]
    packaged: dict[str, tuple[VendoredLib, Decision, str]] = dataclasses.field(default_factory=dict)
    missing: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    served: dict[Key, Served] = dataclasses.field(default_factory=dict)  # convert.share
    alone: dict[Key, str] = dataclasses.field(default_factory=dict)
    copies: dict[Key, VendoredLib] = dataclasses.field(default_factory=dict)


def _substitute(lib: VendoredLib, recipe: Recipe, platform: str,
                shared: _Shared) -> tuple[Decision | None, str]:
    family = platform_family(platform)
    fold = str.lower if family == "windows" else str
    plain = fold(unmangle(posixpath.basename(lib.runtime)))
    candidates = sorted((w for w in shared.available if w.name == recipe.name),
                        key=lambda w: Version(w.version), reverse=True)
    if not candidates:
        shared.missing.add((recipe.name, platform))
        return None, (f"recipe {recipe.name} matches, but no dllreg-lib-{recipe.name} wheel was given "
                      "(--with-lib, --find-libs or --fetch)")
    reasons = []
    for w in candidates:
        if platform_family(w.platform) != family or w.arch != lib.arch:
            reasons.append(f"{posixpath.basename(w.path)} is for {w.platform} {w.arch}")
            continue
        files = w.manifest.libraries
        target = next((f for f in files if fold(posixpath.basename(f.soname)) == plain),
                      files[-1] if len(files) == 1 else None)
        if target is None:
            reasons.append(f"{posixpath.basename(w.path)} has no library named like {plain}")
            continue
        absent = sorted(s for s in lib.imported if s not in w.exports)
        if absent:
            shown = ", ".join(absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
            reasons.append(f"dllreg-lib-{w.name} {w.version} does not export {len(absent)} symbol(s) "
                           f"the wheel imports from it: {shown}")
            continue
        return Decision(lib.member, "substitute", f"exports all {len(lib.imported)} symbols the "
                        "wheel imports from it", lib.size, w.name, w.version, target.soname), ""
    return None, "; ".join(reasons)


def _identity(lib: VendoredLib, family: str,
              matched: list[tuple[Recipe, str | None]]) -> tuple[str, str, str]:
    """(name, version, runtime name) of a packaged copy: the naming rule (libwheel/naming.py), or
    a recipe's name and runtime name when the recipe vouches for the copy."""
    base = posixpath.basename(lib.member)
    tag = build_tag(lib.build)
    if lib.format == "macho":
        stem, major, _ = macos.split_dylib(base)
        for r, why in matched:  # as below: a recipe without a source, for its own ABI major
            abi = r.abi_for(family)
            names = abi.runtime_names if abi else ()
            if (why is None and len(names) == 1 and not any(src.family == family for src in r.sources)
                    and macos.split_dylib(posixpath.basename(names[0]))[:2] == (stem, major)):
                return r.name, macos.identity(base, lib.content)[1], macos.runtime_name(base)
        return macos.derived(base, tag)
    plain = unmangle(posixpath.basename(lib.runtime))
    version = best_version(dict(lib.upstream))[1]
    fold = str.lower if lib.format == "pe" else str
    for r, why in matched:
        abi = r.abi_for(family)
        names = abi.runtime_names if abi else ()
        # Only a recipe without a PyPI source vouches (else the real library would share its
        # name), and only for its own ABI major: libgfortran.so.3 is not the recipe's .so.5.
        fetchable = any(src.family == family for src in r.sources)
        if (why is None and len(names) == 1 and not fetchable
                and fold(split_abi(names[0])[0]) == fold(split_abi(plain)[0])
                and split_abi(names[0])[1] == split_abi(plain)[1]):
            return r.name, f"{version}+b{tag}", names[0]
    name, runtime = derived_names(plain, tag)
    return name, version, runtime


def _package(lib: VendoredLib, family: str, matched: list[tuple[Recipe, str | None]], wheel: str,
             shared: _Shared) -> Decision:
    try:
        name, version, runtime = _identity(lib, family, matched)
    except DllregError as exc:
        return Decision(lib.member, "keep", f"no library name can be derived from it ({exc})", lib.size)
    same = shared.packaged.get(name)
    if same is not None:
        other, decision, origin = same
        if other.sha256 == lib.sha256 or (other.build == lib.build and decision.version == version
                                          and decision.runtime == runtime):
            return dataclasses.replace(decision, member=lib.member, size=lib.size,
                                       reason=f"identical to the copy in {origin}: one library wheel")
        return Decision(lib.member, "keep", f"a different {runtime} (from {origin}) is already packaged "
                        f"as {name} {decision.version}; two builds of one name cannot share a process",
                        lib.size)
    clash = next((o for o, d, _ in shared.packaged.values() if d.runtime == runtime), None)
    if clash is not None:
        return Decision(lib.member, "keep", f"runtime name {runtime} is already taken by "
                        f"{clash.member}", lib.size)
    alone = shared.alone.get((wheel, lib.member))
    decision = Decision(lib.member, "package", "no registry library stands in for it" + (
        f"; packaged on its own: {alone}" if alone else ""), lib.size, name, version, runtime)
    shared.packaged[name] = (lib, decision, wheel)
    return decision


def _served(lib: VendoredLib, family: str, wheel: str, shared: _Shared) -> Decision | None:
    """The decision for a copy that another input's copy serves (convert.share), if one does."""
    served = shared.served.get((wheel, lib.member))
    if served is None:
        return None
    server = shared.copies[served.by]
    name, version, runtime = _identity(server, family, _recipes_for(server, family, shared.book))
    return Decision(lib.member, "package", served.reason, lib.size, name, version, runtime,
                    f"{served.by[0]}: {served.by[1]}")


def _decide(wheel: InputWheel, libs: Mapping[str, VendoredLib], platform: str, shared: _Shared,
            forced: Mapping[str, str]) -> dict[str, Decision]:
    family = platform_family(platform)
    decided: dict[str, Decision] = {}
    gone = ("substitute", "drop")
    for key in order(libs):
        lib = libs[key]
        if key in forced:
            decided[key] = Decision(key, "keep", forced[key], lib.size)
            continue
        # a copy another copy serves is gone too: that copy's wheel brings its dependencies
        live = [u for u in lib.users if u not in decided or (decided[u].action not in gone
                                                             and not decided[u].served_by)]
        if not lib.users:
            decided[key] = Decision(key, "keep", "no binary of the wheel needs it (loaded by path at "
                                    "run time?)", lib.size)
        elif not live:
            by = ", ".join(posixpath.basename(u) for u in lib.users)
            decided[key] = Decision(key, "drop", f"only {by} needed it, and that is replaced", lib.size)
        elif lib.format == "macho":  # never substituted: see convert.macos
            d = _package(lib, family, _recipes_for(lib, family, shared.book), wheel.filename, shared)
            as_is = d.action == "package" and not d.reason.startswith("identical")
            decided[key] = dataclasses.replace(d, reason=macos.NO_SUBSTITUTE) if as_is else d
        else:
            matched = _recipes_for(lib, family, shared.book)
            reasons = [why for _, why in matched if why]
            for recipe, why in matched:
                if why is None:
                    found, reason = _substitute(lib, recipe, platform, shared)
                    if found is not None:
                        decided[key] = found
                        break
                    reasons.append(reason)
            else:
                d = _served(lib, family, wheel.filename, shared) or _package(lib, family, matched,
                                                                             wheel.filename, shared)
                if reasons and d.action == "package":  # why no registry library stands in
                    reused = [d.reason] if d.reason.startswith("identical") else []
                    d = dataclasses.replace(d, reason="; ".join(reused + reasons))
                decided[key] = d
    return decided


def _groups(libs: Mapping[str, VendoredLib], decided: dict[str, Decision]
            ) -> tuple[list[tuple[str, ...]], dict[str, Decision]]:
    """Packaged copies that need each other become one library (every member's decision is
    changed to it): the first member's name with a tag of all members' builds. Returns the
    groups and the members' decisions before."""
    packaged = {k for k, d in decided.items() if d.action == "package" and not d.served_by}
    groups = cycles(libs, packaged)
    before: dict[str, Decision] = {}
    for g in groups:
        first = decided[g[0]]
        mine = build_tag(libs[g[0]].build)
        base = first.library or ""
        stem = base[:-len(mine) - 1] if base.endswith("-" + mine) else base
        name = library_name(f"{stem}-{build_tag('+'.join(libs[k].build for k in g))}")
        for k in g:
            before[k] = decided[k]
            others = ", ".join(posixpath.basename(m) for m in g if m != k)
            decided[k] = dataclasses.replace(decided[k], library=name, version=first.version, reason=(
                f"{decided[k].reason}; one library {name} with {others}: they need each other"))
    return groups, before


def _plan_wheel(wheel: InputWheel, report: Report, libs: Mapping[str, VendoredLib],
                shared: _Shared) -> tuple[WheelPlan, list[NewLibrary]]:
    facts = report.wheel
    assert facts is not None
    if not libs:
        return WheelPlan(wheel, facts.tool, (), (), (), (), None, (), (), facts.libs_dirs), []
    platform = ".".join(facts.platforms)
    forced: dict[str, str] = {}
    before = dict(shared.packaged)
    for _ in range(len(libs) + 1):  # a packaged library cannot need one that stays vendored
        shared.packaged = dict(before)
        decided = _decide(wheel, libs, platform, shared, forced)
        stuck = {k: f"needs {posixpath.basename(n)}, which stays vendored" for k, d in decided.items()
                 if d.action == "package" and not d.served_by
                 for n in libs[k].needs if decided[n].action == "keep"}
        if not stuck:
            break
        forced.update(stuck)
    groups, ungrouped = _groups(libs, decided)
    out_of = {k for k, d in decided.items() if d.action != "keep"}
    kept_dirs = {posixpath.dirname(libs[k].installed) for k in libs if k not in out_of}
    emptied = tuple(d for d in facts.libs_dirs if d not in kept_dirs)
    removed = set(out_of)
    for m in wheel.members:  # an emptied libs dir goes entirely (delvewheel's .load-order file)
        installed = m.name.split("/", 2)[2] if m.name.split("/")[0].endswith(".data") else m.name
        if any(installed.startswith(d + "/") for d in emptied):
            removed.add(m.name)
    renames: dict[str, str] = {}
    requires: dict[str, NativeRequirement] = {}
    binaries = []
    for b in report.binaries:
        if b.path in removed:
            continue
        mine = [(n.name, decided[n.member]) for n in b.needs
                if n.member in decided and decided[n.member].runtime]
        for need, d in mine:
            renames[need] = d.runtime or need
            req = d.requirement
            if req is not None:
                requires[req.name] = req
        if mine or (b.format in ("elf", "macho") and emptied and (b.rpath or b.runpath)):
            binaries.append(b.path)
    new_libs = []
    in_group = {k: g for g in groups for k in g}
    for k, d in decided.items():
        if d.action != "package" or d.served_by:
            continue
        members = in_group.get(k, (k,))
        if k != members[0] or any(shared.packaged.get(ungrouped.get(m, decided[m]).library or "",
                                                      (None, None, ""))[0] is not libs[m] for m in members):
            continue  # a group is built once, from its first member; identical copies not again
        deps = [(n.name, decided[n.member]) for b in report.binaries if b.path in members for n in b.needs
                if n.member in decided and decided[n.member].runtime]
        reqs = tuple(dict.fromkeys(r for _, dd in deps if (r := dd.requirement) is not None
                                   and r.name != d.library))
        recipe = shared.book.get(d.library or "")
        new_libs.append(NewLibrary(d.library or "", d.version or "", d.runtime or "", wheel.filename, k,
                                   platform, libs[k].sha256,
                                   tuple(dict.fromkeys((n, dd.runtime or n) for n, dd in deps)), reqs,
                                   license=recipe.license if recipe else None,
                                   group=tuple((m, decided[m].runtime or "", libs[m].sha256)
                                               for m in members[1:])))
    patch = facts.patch_file if facts.patch_file and emptied == tuple(facts.libs_dirs) else None
    order = [d for d in decided.values()]
    order.sort(key=lambda d: (ACTIONS.index(d.action), d.member))
    plan = WheelPlan(wheel, facts.tool, tuple(order), tuple(m.name for m in wheel.members
                                                             if m.name in removed),
                     tuple(sorted(renames.items())), emptied, patch,
                     tuple(requires[n] for n in sorted(requires)), tuple(binaries), facts.libs_dirs)
    return plan, new_libs


def plan_devendor(wheels: Sequence[InputWheel], book: RecipeBook,
                  available: Sequence[LibraryWheel] = (), *,
                  refused: list[str] | None = None) -> DevendorPlan:
    """Decide for every vendored library of every input wheel; identical copies are packaged once.
    With ``refused``, a wheel that cannot be planned is recorded there and left out of the plan
    (so one error can name every refused input); without, the first refusal raises."""
    names = [parse_wheel_filename(w.filename)[0] for w in wheels]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise DevendorError(f"two input wheels of {', '.join(sorted(dupes))}: give one wheel per project")
    analysed = []
    for w in wheels:  # one wheel's bytes at a time; only its facts are kept
        try:
            analysed.append((w, *analyse(w)))
        except DevendorError as exc:
            if refused is None:
                raise
            refused.append(str(exc))
    # members of a cycle move as one group (one library wheel), never one by one
    grouped = [{k for g in cycles(libs, libs) for k in g} for _, _, libs in analysed]
    copies = [Copy(w.filename, lib) for (w, _, libs), skip in zip(analysed, grouped)
              for lib in libs.values() if lib.member not in skip]
    banned: set[Key] = set()
    for _ in range(len(copies) + 1):  # until every serving copy is packaged as itself
        shared = _Shared(book, available)
        shared.served, shared.alone = choose_servers(copies, banned)
        shared.copies = {c.key: c.lib for c in copies}
        plans, libraries = [], []
        for w, report, libs in analysed:
            plan, new = _plan_wheel(w, report, libs, shared)
            plans.append(plan)
            libraries += new
        own = {(p.wheel.filename, d.member) for p in plans for d in p.decisions
               if d.action == "package" and not d.served_by}
        unserved = {v.by for v in shared.served.values()} - own
        if not unserved:
            break
        banned |= unserved  # substituted, dropped or kept in its own wheel: it serves nobody
    users: dict[str, set[str]] = {}
    for p in plans:
        for r in p.requires:
            users.setdefault(r.name, set()).add(p.wheel.filename)
    for _ in libraries:  # through the libraries' own requirements
        for lib in libraries:
            for r in lib.requires:
                users.setdefault(r.name, set()).update(users.get(lib.name, ()))
    libraries = [dataclasses.replace(lib, users=tuple(sorted(users.get(lib.name, ())))) for lib in libraries]
    used = {d.library for p in plans for d in p.decisions if d.action == "substitute"}
    substitutes = []
    for name in sorted(n for n in used if n):
        version = max((d.version or "0" for p in plans for d in p.decisions
                       if d.action == "substitute" and d.library == name), key=Version)
        substitutes.append(next(w for w in available if w.name == name and w.version == version))
    try:
        return DevendorPlan(tuple(plans), tuple(libraries), tuple(substitutes), tuple(sorted(shared.missing)))
    except InvalidVersion as exc:  # pragma: no cover - versions were parsed on the way
        raise DevendorError(str(exc)) from None
