"""A library wheel from a recipe: fetch its PyPI source with pip, pick its files, and
check the result against the recipe's ABI (docs/recipes.md)."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.tags import mac_platforms
from packaging.utils import parse_wheel_filename
from packaging.version import Version

from ..libwheel.package import LibraryPlan, Source, read_source
from ..libwheel.platforms import LEGACY_MANYLINUX, platforms_of
from .schema import Recipe, RecipeError


def platform_family(tag: str) -> str:
    """``linux``, ``windows`` or ``macos`` for a wheel platform tag (the first of a ``.``-joined set)."""
    first = tag.split(".")[0]
    for prefix, family in (("manylinux", "linux"), ("musllinux", "linux"), ("linux", "linux"),
                           ("win", "windows"), ("macosx", "macos")):
        if first.startswith(prefix):
            return family
    raise RecipeError(f"platform tag {tag!r}: not a Linux, Windows or macOS wheel platform tag")


def compatible_platforms(tag: str) -> list[str]:
    """The tags pip must be given to accept every wheel that installs on ``tag`` (pip's --platform
    does not expand manylinux_2_28 to the older manylinux tags itself)."""
    out: list[str] = []
    for t in platforms_of(tag):
        m = re.fullmatch(r"(manylinux|musllinux)_(\d+)_(\d+)_(\w+)", t)
        mac = re.fullmatch(r"macosx_(\d+)_(\d+)_(\w+)", t)
        if m:
            kind, major, minor, arch = m[1], int(m[2]), int(m[3]), m[4]
            low = {("manylinux", 2): 5, ("musllinux", 1): 1}.get((kind, major), 0)
            out += [f"{kind}_{major}_{n}_{arch}" for n in range(minor, low - 1, -1)]
            if (kind, major) == ("manylinux", 2):
                out += [f"{old}_{arch}" for old, (_, n) in sorted(LEGACY_MANYLINUX.items(),
                                                                    key=lambda kv: -kv[1][1]) if n <= minor]
        elif mac:
            out += list(mac_platforms((int(mac[1]), int(mac[2])), mac[3]))
        else:
            out.append(t)
    return list(dict.fromkeys(out))


def fetch_source(recipe: Recipe, platform_tag: str, dest: Path, *, specifier: str = "") -> Path:
    """Download the recipe's source wheel for ``platform_tag`` with pip into ``dest``; its path."""
    family = platform_family(platform_tag)
    src = recipe.source_for(family)
    req = Requirement(src.requirement)
    if specifier:
        req.specifier &= SpecifierSet(specifier)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-d", str(dest)]
    for tag in compatible_platforms(platform_tag):
        cmd += ["--platform", tag]
    proc = subprocess.run([*cmd, str(req)], capture_output=True, text=True)
    lines = proc.stdout.splitlines()
    saved = [m[1] for m in (re.match(r"\s*(?:Saved|File was already downloaded) (.+\.whl)\s*$", x)
                            for x in lines) if m]
    if proc.returncode != 0 or not saved:
        why = (proc.stderr.strip().splitlines() or lines or ["no output"])[-1]
        raise RecipeError(f"{recipe.path}: source.{family}.requirement: pip could not download {req} "
                          f"for {platform_tag}: {why}")
    return dest / Path(saved[-1]).name


def _glob(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\*\*|\*|\?)", pattern)
    sub = {"**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(sub.get(p, re.escape(p)) for p in parts))


def recipe_source(recipe: Recipe, wheel: Path) -> tuple[Source, str]:
    """Read a source wheel and keep the recipe's ``files`` (and license files); with the library
    version its ``version`` rule gives."""
    source = read_source(wheel)
    family = platform_family(source.platform or "")
    src = recipe.source_for(family)
    globs = [_glob(g) for g in src.files]
    for i, g in enumerate(globs):
        if not any(g.fullmatch(f.path) for f in source.files):
            raise RecipeError(f"{recipe.path}: source.{family}.files[{i}]: {src.files[i]!r} matches no file "
                              f"in {wheel.name}")
    kept = tuple(f for f in source.files
                 if ".dist-info/licenses/" in f.path or any(g.fullmatch(f.path) for g in globs))
    version = parse_wheel_filename(wheel.name)[1]
    if src.version != "wheel":
        version = Version(".".join(str(n) for n in version.release[:int(src.version[6:])]))
    return dataclasses.replace(source, files=kept), str(version)


def _runtime_match(family: str, want: str, have: str) -> bool:
    if family == "windows":
        return want.lower() == have.lower()
    if family == "macos" and "/" not in want:  # a bare file name matches any install-name directory
        return want == have.rsplit("/", 1)[-1]
    return want == have


def _exports(data: bytes) -> frozenset[str]:
    if data[:2] == b"MZ":
        from ..binary.pe import read_pe

        return read_pe(data).exports
    from ..binary.elf import read_elf

    return read_elf(data).exported


def check_abi(recipe: Recipe, plan: LibraryPlan) -> None:
    """Check that a planned library is the one the recipe describes: its runtime names and, on
    Linux and Windows, the exported ``symbol-prefix + NAME + symbol-suffix`` symbols."""
    family = platform_family(plan.manifest.platform)
    abi = recipe.abi_for(family)
    if abi is None:
        raise RecipeError(f"{recipe.path}: abi.{family}: missing, so {recipe.name} binaries for {family} "
                          f"cannot be checked; add an [abi.{family}] table")
    have = [lib.soname for lib in plan.manifest.libraries]
    problems = []
    missing = [w for w in abi.runtime_names if not any(_runtime_match(family, w, h) for h in have)]
    extra = [h for h in have if not any(_runtime_match(family, w, h) for w in abi.runtime_names)]
    if missing or extra:
        problems.append(f"abi.{family}.runtime-names: the recipe expects {', '.join(abi.runtime_names)}, "
                        f"the source has {', '.join(have)}")
    wanted = abi.expected_symbols()
    if wanted and family != "macos":  # dllreg's Mach-O reader does not read the export trie
        data = dict(plan.files)
        exported = frozenset().union(*(_exports(data[lib.path]) for lib in plan.manifest.libraries))
        absent = [s for s in wanted if s not in exported]
        if absent:
            instead = [min((e for e in exported if s in e and len(e) <= len(s) + 8), key=len, default="")
                       for s in abi.symbols]
            found = ", ".join(e for e in instead if e and e not in wanted)
            problems.append(f"abi.symbols (symbol-prefix {abi.symbol_prefix!r}, symbol-suffix "
                            f"{abi.symbol_suffix!r}): {', '.join(have)} does not export {', '.join(absent)}"
                            + (f" (it exports {found})" if found else ""))
    if problems:
        raise RecipeError(f"{recipe.path}: " + "; ".join(problems)
                          + f": this is not the {recipe.name} library the recipe describes")


def has_source(recipe: Recipe, platform: str) -> bool:
    """Whether the recipe names a source wheel (e.g. scipy-openblas32) for ``platform``."""
    family = platform_family(platform)
    return any(s.family == family for s in recipe.sources)


