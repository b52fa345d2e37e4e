"""``package-lib``: the command line around libwheel/package.py and recipes/source.py (docs/manifest.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ..errors import PackageLibError

if TYPE_CHECKING:
    from ..libwheel.package import LibraryPlan, Source


def add_parsers(sub: Any) -> None:
    pl = sub.add_parser("package-lib", help="build a dllreg-lib-NAME wheel from shared libraries")
    pl.add_argument("name")
    pl.add_argument("--version", dest="lib_version",
                    help="PEP 440 version (default: the version the source states: a recipe's "
                    "rule over its source wheel, or the Version of the source's .pc file)")
    pl.add_argument("--from", dest="source", type=Path,
                    help="a wheel, or a directory holding the shared libraries (and include/); "
                    "without it, the recipe's PyPI source is fetched with pip")
    pl.add_argument("-o", "--output", required=True, type=Path, help="directory for the wheel")
    pl.add_argument("--requires", action="append", default=[],
                    help="another registry library this one needs, e.g. 'gfortran>=12'")
    pl.add_argument("--platform", help="wheel platform tag (default: the source wheel's, or "
                    "derived from the binaries for a directory)")
    pl.add_argument("--license", help="SPDX license expression for the wheel's License-Expression "
                    "(default: the recipe's, else the source wheel's own)")
    pl.add_argument("--dll-directory", action="append", default=[], dest="dll_directories",
                    help="Windows: directory of this library (e.g. bin) the stub adds with "
                    "os.add_dll_directory, for libraries that load plugins by bare name")


def checked_version(given: str | None, stated: str | None, origin: str) -> str | None:
    """``--version`` against the version the source states: either alone, or both when they agree
    (equal, or one's release a prefix of the other's: 0.3.34 for 0.3.34.481.3)."""
    from packaging.version import InvalidVersion, Version

    if given is None or stated is None:
        return given or stated
    try:
        g, s = Version(given), Version(stated)
    except InvalidVersion:
        return given  # plan_library names a bad --version; an odd stated one proves nothing
    n = min(len(g.release), len(s.release))
    plain = not (g.pre or g.post or g.dev or s.pre or s.post or s.dev)
    if g == s or (plain and g.release[:n] == s.release[:n]):
        return given
    raise PackageLibError(f"--version {given}: {origin} states version {stated}; drop --version "
                          f"(the stated version is used) or pass --version {stated}")


def pc_version(source: Source) -> str | None:
    """The Version of the source's own pkg-config file, if it has exactly one."""
    from ..libwheel.pkgconfig import parse_pc

    pcs = [f for f in source.files if f.path.endswith(".pc")]
    if len(pcs) != 1:
        return None
    try:
        _, fields = parse_pc(pcs[0].data.decode("utf-8", "replace"), "", pcs[0].path)
    except Exception:  # an unreadable .pc states nothing; plan_library keeps only its Cflags
        return None
    return fields.get("Version") or None


def _plan_from_recipe(a: argparse.Namespace, out: TextIO) -> LibraryPlan:
    import tempfile

    from packaging.tags import sys_tags

    from ..recipes.schema import load_recipes
    from ..recipes.source import fetch_source

    recipe = load_recipes().require(a.name)
    # This machine's most specific installable tag: manylinux_2_X over linux_<arch>, which
    # no wheel on an index carries.
    platforms = list(dict.fromkeys(t.platform for t in sys_tags()))
    tag = a.platform or next((p for p in platforms if not p.startswith("linux_")), platforms[0])
    with tempfile.TemporaryDirectory(prefix="dllreg-fetch-") as tmp:
        print(f"fetching the {recipe.name} recipe's source for {tag} with pip", file=out)
        pinned = f"=={a.lib_version}" if a.lib_version else ""
        wheel = fetch_source(recipe, tag, Path(tmp), specifier=pinned)
        return _plan_recipe_wheel(a, recipe, wheel)


def _plan_recipe_wheel(a: argparse.Namespace, recipe: Any, wheel: Path) -> LibraryPlan:
    """A recipe's library from its source wheel: the recipe's files, version rule, ABI, licence."""
    from ..libwheel.package import plan_library
    from ..recipes.source import check_abi, recipe_source

    source, stated = recipe_source(recipe, wheel)
    version = checked_version(a.lib_version, stated, wheel.name) or stated
    plan = plan_library(source, recipe.name, version,
                        requires=[*map(str, recipe.requires), *a.requires], platform=a.platform,
                        dll_directories=a.dll_directories, license=a.license or recipe.license,
                        pkgconfig_names=recipe.pkgconfig_names)
    check_abi(recipe, plan)
    return plan


def _recipe_wheel(recipe: Any, path: Path) -> bool:
    """Whether ``path`` is a wheel for a platform the recipe names a source wheel for."""
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    from ..recipes.schema import RecipeError
    from ..recipes.source import has_source

    if path.suffix != ".whl" or not path.is_file():
        return False
    try:
        tags = parse_wheel_filename(path.name)[3]
        return has_source(recipe, ".".join(sorted({t.platform for t in tags})))
    except (InvalidWheelFilename, RecipeError):
        return False


def _package_lib(a: argparse.Namespace, out: TextIO) -> int:
    from ..libwheel.package import plan_library, read_source, write_library_wheel
    from ..recipes.schema import load_recipes

    recipe = load_recipes().get(a.name)
    if a.source is None:
        plan = _plan_from_recipe(a, out)
    elif recipe and _recipe_wheel(recipe, a.source):
        plan = _plan_recipe_wheel(a, recipe, a.source)
    else:
        source = read_source(a.source)
        version = checked_version(a.lib_version, pc_version(source), f"{a.source}'s .pc file")
        if version is None:
            raise PackageLibError(f"--from {a.source}: the source states no version (no recipe rule, "
                                  "no .pc Version); pass --version (the library's PEP 440 version)")
        plan = plan_library(source, a.name, version, requires=a.requires, platform=a.platform,
                            dll_directories=a.dll_directories,
                            license=a.license or (recipe.license if recipe else None))
    path = write_library_wheel(plan, a.output)
    files = ", ".join(f"{f.path} ({f.soname})" for f in plan.manifest.libraries)
    print(f"wrote {path}\n  libraries in preload order: {files}", file=out)
    for soname, needed in plan.external_needs:
        print(f"  note: {soname} needs {needed}, which this wheel does not carry; it must come "
              "from a registry library (--requires) or the target system", file=out)
    return 0


COMMANDS = {"package-lib": _package_lib}
