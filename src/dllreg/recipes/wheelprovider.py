"""Libraries that a PyPI wheel installed as it is provides (a recipe's ``[pypi.FAMILY]``).

Reference: docs/recipes.md ("PyPI wheel providers"). The wheel's own files are the library:
nothing is copied. What dllreg knows of such a copy comes from the recipe (layout, runtime
names) and from pip's ``<dist>-<version>.dist-info`` (version, RECORD hashes). The readers
here return plain data; env/registry.py wraps them into InstalledLibrary. The same lookup runs in
the stub (stub/_runtime.py ``_wheel_copy``) without dllreg.
"""

from __future__ import annotations

import base64
import csv
import functools
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, Specifier, SpecifierSet
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from ..errors import DllregError, RequirementError
from ..libwheel.manifest import LibraryFile, Manifest
from ..names import NativeRequirement
from .schema import Recipe, RecipeBook, WheelProvider


@functools.lru_cache(maxsize=1)
def host_providers() -> dict[str, tuple[Recipe, WheelProvider]]:
    """Library name -> (recipe, PyPI wheel provider) for this platform, from the packaged recipes."""
    from .schema import load_recipes

    family = host_family()
    return {r.name: (r, p) for r in load_recipes().recipes if (p := r.pypi_for(family))}


def host_family() -> str:
    """``linux``, ``windows`` or ``macos``: the recipe family of this interpreter's platform."""
    return "windows" if os.name == "nt" else "macos" if sys.platform == "darwin" else "linux"


def library_version(provider: WheelProvider, wheel_version: str) -> str:
    """The library version a wheel version stands for (the ``version`` rule: ``wheel:3`` takes
    0.3.34 from 0.3.34.481.3). A RequirementError when the rule cannot apply."""
    if provider.version == "wheel":
        return wheel_version
    n = int(provider.version[6:])
    parts = wheel_version.split("+")[0].split(".")[:n]
    if len(parts) < n or not all(p.isdigit() for p in parts):
        raise RequirementError(f"{provider.dist} {wheel_version}: version rule {provider.version} "
                               f"needs {n} numeric release parts first")
    return ".".join(parts)


def find_dist_info(site: Path, stem: str) -> Path | None:
    """``<site>/<stem>-<version>.dist-info`` as pip names it (the stem as the wheel spells it:
    the normalized name, as the stub matches it), or None. Two of them (a broken uninstall) are
    an error: the version would be a guess."""
    try:
        entries = os.listdir(site)
    except OSError:
        return None
    hits = [e for e in entries if e.startswith(stem + "-") and e.endswith(".dist-info")]
    if len(hits) > 1:
        raise DllregError(f"{site}: several dist-info directories for {stem}: {', '.join(sorted(hits))}; "
                          f"reinstall it with pip install --force-reinstall")
    return site / hits[0] if hits else None


def _record(dist_info: Path) -> dict[str, str]:
    """RECORD path -> hex sha256 (pip writes urlsafe base64 without padding)."""
    try:
        rows = list(csv.reader((dist_info / "RECORD").read_text(encoding="utf-8").splitlines()))
    except OSError:
        return {}
    out = {}
    for row in rows:
        if len(row) >= 2 and row[1].startswith("sha256="):
            raw = row[1][7:]
            try:
                out[row[0]] = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).hex()
            except ValueError:
                continue
    return out


def _platform(dist_info: Path, family: str) -> str:
    """The platform part of the wheel's first ``Tag`` (WHEEL file); the family if unreadable."""
    try:
        for line in (dist_info / "WHEEL").read_text(encoding="utf-8").splitlines():
            if line.startswith("Tag:"):
                return line.split(":", 1)[1].strip().split("-")[-1]
    except OSError:
        pass
    return family


def provider_home(site: Path, provider: WheelProvider) -> Path:
    """The provider's own folder: above the principal library's ``lib``/``bin`` directory
    (``<site>/scipy_openblas32``, ``<site>/nvidia/cuda_runtime``)."""
    lib_dir = site.joinpath(*provider.libraries[-1].split("/")[:-1])
    return lib_dir.parent if lib_dir.name in ("lib", "lib64", "bin") and lib_dir.parent != site else lib_dir


def wheel_manifest(recipe: Recipe, provider: WheelProvider, site: Path) -> Manifest | None:
    """The manifest-shaped view of the provider's copy in ``site``, or None when it is not
    there (its principal file or its dist-info is absent). Library paths are absolute; each
    sha256 is RECORD's (so ``check --verify`` compares the files with what pip recorded)."""
    if not site.joinpath(*provider.libraries[0].split("/")).is_file():
        return None
    dist_info = find_dist_info(site, provider.stem)
    if dist_info is None:
        return None
    wheel_version = dist_info.name[len(provider.stem) + 1:-len(".dist-info")]
    record = _record(dist_info)
    files = tuple(LibraryFile(site.joinpath(*rel.split("/")).as_posix(), name, record.get(rel, ""))
                  for rel, name in zip(provider.libraries, provider.runtime_names))
    pc = site.joinpath(*provider.pkgconfig.split("/")).as_posix() if provider.pkgconfig else None
    return Manifest(recipe.name, library_version(provider, wheel_version),
                    _platform(dist_info, provider.family), files, recipe.requires,
                    pkgconfig=pc, source=f"{provider.dist} {wheel_version}", provider=provider.label)


def provider_of_wheel(filename: str) -> tuple[Recipe, WheelProvider, str, str] | None:
    """(recipe, provider, wheel version, platform tag) when ``filename`` is a wheel of a
    recipe's PyPI provider for its platform family (scipy_openblas64-...-manylinux...whl)."""
    from .schema import load_recipes
    from .source import platform_family

    try:
        dist, wheel_version, _, tags = parse_wheel_filename(filename)
        platform = next(iter(tags)).platform
        family = platform_family(platform)
    except (InvalidWheelFilename, DllregError, StopIteration):
        return None
    for recipe in load_recipes().recipes:
        provider = recipe.pypi_for(family)
        if provider is not None and provider.dist == dist:
            return recipe, provider, str(wheel_version), platform
    return None


def manifest_of_wheel(found: tuple[Recipe, WheelProvider, str, str], members: Mapping[str, str],
                      origin: str) -> Manifest:
    """The library's manifest from that wheel's members (path as in the wheel -> hex sha256)."""
    recipe, p, version, platform = found
    missing = [f for f in p.libraries if f not in members]
    if missing:
        raise DllregError(f"{origin}: no {', '.join(missing)} (the layout of {p.dist} in "
                          f"{recipe.path} [pypi.{p.family}])")
    files = tuple(LibraryFile(f, n, members[f])
                  for f, n in zip(p.libraries, p.runtime_names))
    return Manifest(recipe.name, library_version(p, version), platform, files, recipe.requires,
                    source=f"{p.dist} {version}", provider=p.label)


def record_files(site: Path, provider: WheelProvider) -> list[tuple[Path, str]]:
    """(file, 'sha256=...') of every file the provider's RECORD lists under its own folder."""
    dist_info = find_dist_info(site, provider.stem)
    if dist_info is None:
        return []
    home = provider_home(site, provider).resolve()
    out = []
    for rel, hexdigest in sorted(_record(dist_info).items()):
        path = (site / rel).resolve()
        if home in path.parents:
            raw = base64.urlsafe_b64encode(bytes.fromhex(hexdigest)).rstrip(b"=").decode()
            out.append((path, "sha256=" + raw))
    return out


# --- what a consumer requires --------------------------------------------------------------


def _next_release(release: tuple[int, ...], n: int) -> str:
    padded = (*release, *(0,) * (n - len(release)))[:n]
    return ".".join(map(str, (*padded[:-1], padded[-1] + 1)))


def wheel_specifier(provider: WheelProvider, specifier: str) -> str:
    """A library specifier as one on the provider wheel's version: under ``wheel:3``,
    ``==0.3.34`` is ``==0.3.34.*`` and ``<=0.3.34`` is ``<0.3.35`` (0.3.34.481.3 > 0.3.34).
    What cannot be said exactly (pre-releases, local labels, ``===``) is refused."""
    if provider.version == "wheel" or not specifier:
        return specifier
    n = int(provider.version[6:])
    out = []
    for spec in SpecifierSet(specifier):
        try:
            v = Version(spec.version.removesuffix(".*"))
        except InvalidVersion:
            v = None
        if v is None or spec.operator == "===" or v.pre or v.dev or v.post or v.local or v.epoch \
                or len(v.release) > n:
            raise RequirementError(
                f"{spec}: cannot be said of {provider.dist}'s version (the library version is its "
                f"first {n} release parts); use ==, !=, <, <=, >, >=, ~= with plain versions of at "
                f"most {n} parts")
        text = ".".join(map(str, v.release))
        wild = spec.version.endswith(".*")
        op = spec.operator
        if op in ("==", "!=") and not wild and len(v.release) <= n:
            out.append(f"{op}{text}.*")  # every wheel build of that library version
        elif op == "<=":
            out.append(f"<{_next_release(v.release, n)}")
        elif op == ">":
            out.append(f">={_next_release(v.release, n)}")
        else:  # >=, <, ~=, ==V.*, !=V.*: the same on the longer wheel version
            out.append(str(Specifier(f"{op}{spec.version}")))
    try:
        return str(SpecifierSet(",".join(out)))
    except InvalidSpecifier as exc:  # pragma: no cover - built from valid parts
        raise RequirementError(str(exc)) from None


def resolve_choices(requires: Sequence[NativeRequirement], configured: Mapping[str, str],
                    book: RecipeBook, family: str | None = None) -> dict[str, str]:
    """Which distribution provides each required library: ``[tool.dllreg] providers`` when
    given (``dllreg-lib-NAME`` or the recipe's PyPI wheel), else the recipe's PyPI wheel when
    it has one for ``family``, else ``dllreg-lib-NAME`` (docs/pyproject.md)."""
    fam = family or host_family()
    out = {}
    for name in configured:
        if name not in {r.name for r in requires}:
            raise RequirementError(f"[tool.dllreg] providers: {name} is not in requires; "
                                   "name a provider only for a required library")
    for req in requires:
        recipe = book.get(req.name)
        dists = {p.dist for p in recipe.pypi} if recipe else set()
        local = "dllreg-lib-" + req.name
        want = configured.get(req.name)
        if want is not None and want != local and want not in dists:
            raise RequirementError(
                f"[tool.dllreg] providers: {req.name} = {want!r} is neither {local!r} nor a PyPI "
                f"wheel its recipe names ({', '.join(sorted(dists)) or 'none'})")
        provider = recipe.pypi_for(fam) if recipe else None
        out[req.name] = want or (provider.dist if provider else local)
    return out


def requirement_for(req: NativeRequirement, dist: str, book: RecipeBook,
                    family: str | None = None) -> str:
    """The pip requirement for ``req`` served by ``dist``: ``dllreg-lib-openblas>=0.3``, or
    ``scipy-openblas32>=0.3`` with the specifier said of the wheel's version."""
    recipe = book.get(req.name)
    provider = recipe.pypi_for(family or host_family()) if recipe else None
    if provider is None or dist != provider.dist:
        return req.dist_requirement
    text = provider.dist + wheel_specifier(provider, req.specifier)
    return f"{text}; {req.marker}" if req.marker else text


def suggested_requirement(req: NativeRequirement) -> str:
    """The pip requirement a fix suggests for a missing or too old library: the recipe's PyPI
    wheel when it has one here (the stub finds either copy), else ``dllreg-lib-NAME``."""
    from .schema import load_recipes

    book = load_recipes()
    try:
        return requirement_for(req, resolve_choices([req], {}, book)[req.name], book)
    except DllregError:  # a specifier the wheel's version cannot say (>=0.3.34.481.3)
        return req.dist_requirement


def consumer_requirements(requires: Sequence[NativeRequirement], choices: Mapping[str, str] | None,
                          book: RecipeBook | None = None) -> list[str]:
    """The ``Requires-Dist`` (and build requirement) of each library: ``choices`` maps a
    library to its distribution; a library without a choice gets ``dllreg-lib-NAME``."""
    if not choices:
        return [r.dist_requirement for r in requires]
    from .schema import load_recipes

    reg = book or load_recipes()
    return [requirement_for(r, choices.get(r.name, "dllreg-lib-" + r.name), reg) for r in requires]


Layout = tuple[str, str, tuple[str, ...], tuple[str, ...], str, tuple[tuple[str, str], ...]]


def stub_layouts(names: list[str], book: RecipeBook, family: str | None = None) -> dict[str, Layout]:
    """What a stub needs to find each library's PyPI provider (and its dependencies'):
    name -> (dist-info stem, version rule, library paths, runtime names, dist name, the
    recipe's requires as (name, specifier))."""
    out: dict[str, Layout] = {}
    todo = list(names)
    while todo:
        name = todo.pop(0)
        recipe = book.get(name)
        if recipe is None or name in out:
            continue
        todo += [r.name for r in recipe.requires]
        p = recipe.pypi_for(family or host_family())
        if p is not None:
            out[name] = (p.stem, p.version, p.libraries, p.runtime_names, p.dist,
                         tuple((r.name, r.specifier) for r in recipe.requires))
    return out


