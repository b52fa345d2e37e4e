"""PEP 725 ``[external]`` DepURLs -> native requirements, and their agreement with
``[tool.dllreg] requires`` (docs/recipes.md, "PEP 725")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from packaging.markers import InvalidMarker, Marker
from packaging.specifiers import SpecifierSet

from ..names import NativeRequirement
from .schema import MAPPED_KEYS, DepURL, RecipeBook, RecipeError, parse_depurl


def _marker(text: str, where: str) -> str | None:
    if not text.strip():
        return None
    try:
        return str(Marker(text))
    except InvalidMarker as exc:
        raise RecipeError(f"{where}: invalid environment marker {text.strip()!r} ({exc})") from None


def _tool_requires(pyproject: dict[str, Any]) -> list[NativeRequirement]:
    tool = pyproject.get("tool", {})
    table = tool.get("dllreg", {}) if isinstance(tool, dict) else {}
    raw = table.get("requires", []) if isinstance(table, dict) else []
    return [NativeRequirement.parse(r) for r in raw] if isinstance(raw, list) else []


def requirements_from_external(pyproject: dict[str, Any], book: RecipeBook, *,
                               tool_requires: Sequence[NativeRequirement] | None = None,
                               ignore_unknown: bool = False) -> list[NativeRequirement]:
    """Map ``[external] host-requires`` and ``dependencies`` DepURLs to registry libraries.

    A virtual DepURL resolves to the one ``[tool.dllreg] requires`` entry (``tool_requires``, by
    default read from ``pyproject``) whose recipe provides it, else to its only provider; several
    candidates are an error. Unknown DepURLs are an error (with a did-you-mean) unless
    ``ignore_unknown``. A library named twice gets the intersection of the version ranges.
    """
    table = pyproject.get("external")
    if table is None:
        return []
    if not isinstance(table, dict):
        raise RecipeError("pyproject.toml: [external] must be a table (PEP 725)")
    tools = list(_tool_requires(pyproject) if tool_requires is None else tool_requires)
    merged: dict[str, NativeRequirement] = {}
    for key in MAPPED_KEYS:
        entries = table.get(key, [])
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise RecipeError(f"pyproject.toml: [external] {key}: must be a list of DepURL strings (PEP 725)")
        for i, entry in enumerate(entries):
            where = f"pyproject.toml: [external] {key}[{i}]"
            text, _, marker_text = entry.partition(";")
            try:
                dep = parse_depurl(text.strip())
            except RecipeError as exc:
                raise RecipeError(f"{where}: {exc}") from None
            req = _resolve(dep, _marker(marker_text, where), book, tools, where, ignore_unknown)
            if req is None:
                continue
            prev = merged.get(req.name)
            if prev is not None:
                if prev.marker != req.marker:
                    raise RecipeError(f"{where}: {req.name} is listed again with another marker "
                                      f"({prev.marker!r} vs {req.marker!r}); use one entry per library")
                spec = SpecifierSet(prev.specifier) & SpecifierSet(req.specifier)
                req = NativeRequirement(req.name, str(spec), req.marker)
            merged[req.name] = req
    return list(merged.values())


def _resolve(dep: DepURL, marker: str | None, book: RecipeBook, tools: list[NativeRequirement],
             where: str, ignore_unknown: bool) -> NativeRequirement | None:
    if dep.type != "virtual":
        recipe = book.by_depurl(dep)
        if recipe is None:
            if ignore_unknown:
                return None
            raise RecipeError(f"{where}: no recipe in the registry has the DepURL {dep.key}"
                              f"{book.hint(str(dep))}")
        return NativeRequirement(recipe.name, dep.version_spec, marker)
    providers = {r.name for r in book.providers(dep)}  # an interface version cannot be checked
    if not providers:
        if ignore_unknown:
            return None
        raise RecipeError(f"{where}: no recipe provides {dep.key}")
    chosen = [t for t in tools if t.name in providers]
    if len(chosen) == 1:
        return NativeRequirement(chosen[0].name, chosen[0].specifier, marker)
    if len(providers) == 1 and not chosen:
        return NativeRequirement(providers.pop(), "", marker)
    names = sorted(t.name for t in chosen) if chosen else sorted(providers)
    raise RecipeError(f"{where}: {dep.key} is ambiguous: provided by {', '.join(names)}; name exactly "
                      "one of them in [tool.dllreg] requires, or write its dep:generic/NAME DepURL")


def reconcile(tool_requires: Sequence[NativeRequirement],
              external_requires: Sequence[NativeRequirement]) -> list[NativeRequirement]:
    """One list of requirements; when both are given they must name the same libraries with equal
    version ranges and markers, else a RecipeError lists every disagreement."""
    if not tool_requires or not external_requires:
        return list(tool_requires or external_requires)
    tool = {r.name: r for r in tool_requires}
    ext = {r.name: r for r in external_requires}
    problems = []
    for name in sorted(tool.keys() | ext.keys()):
        a, b = tool.get(name), ext.get(name)
        if a is None:
            problems.append(f"{name}: [external] requires {b}, [tool.dllreg] requires does not list it")
        elif b is None:
            problems.append(f"{name}: [tool.dllreg] requires lists {a}, [external] does not")
        elif SpecifierSet(a.specifier) != SpecifierSet(b.specifier) or a.marker != b.marker:
            problems.append(f"{name}: [tool.dllreg] requires says '{a}', [external] says '{b}'")
    if problems:
        raise RecipeError("pyproject.toml: [tool.dllreg] requires and [external] disagree; they must name "
                          "the same libraries with the same versions:\n  " + "\n  ".join(problems))
    return list(tool_requires)
