"""``repair``: the command line around convert/repair.py (docs/release.md)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO


def add_parsers(sub: Any) -> None:
    r = sub.add_parser("repair", help="run auditwheel/delocate/delvewheel on a consumer wheel with the "
                       "registry libraries left out, tagged no lower than they need")
    r.add_argument("wheel", type=Path)
    r.add_argument("-w", "--wheel-dir", required=True, type=Path, dest="output",
                   help="directory for the repaired wheel (cibuildwheel's {dest_dir})")
    r.add_argument("--find-libs", action="append", default=[], type=Path, metavar="DIR",
                   help="a directory of dllreg-lib-NAME wheels or recipes' PyPI provider wheels "
                   "(repeatable; the local directories of PIP_FIND_LINKS and UV_FIND_LINKS are "
                   "searched too)")
    r.add_argument("--with-lib", action="append", default=[], type=Path, metavar="WHEEL",
                   help="a dllreg-lib-NAME wheel (repeatable)")
    r.add_argument("--no-installed", action="store_true",
                   help="do not use the libraries installed in this environment")


def _link_dirs() -> list[Path]:
    """The local directories an isolated build was pointed at (URLs and missing paths skipped)."""
    out = []
    for var in ("PIP_FIND_LINKS", "UV_FIND_LINKS"):
        for item in os.environ.get(var, "").replace(",", " ").split():
            path = Path(item[len("file://"):] if item.startswith("file://") else item)
            if "://" not in item[len("file://"):] and path.is_dir():
                out.append(path)
    return out


def _library_wheels(directory: Path) -> list[Path]:
    """dllreg-lib-NAME wheels and recipes' PyPI provider wheels (scipy-openblas32) in a directory."""
    from ..recipes.wheelprovider import provider_of_wheel

    return [p for p in sorted(directory.glob("*.whl"))
            if p.name.startswith("dllreg_lib_") or provider_of_wheel(p.name) is not None]


def _repair(a: argparse.Namespace, out: TextIO) -> int:
    from ..convert.repair import repair_wheel
    from ..convert.vendor import LibraryCopy
    from ..env.registry import installed_libraries, site_dirs
    from .vendor import library_copy

    dirs = [*a.find_libs, *_link_dirs()]
    wheels = [*a.with_lib, *(p for d in dirs for p in _library_wheels(d))]
    available = [library_copy(p) for p in dict.fromkeys(wheels)]
    # only names and platforms matter here: every provider's copy counts, its files stay unread
    available += [] if a.no_installed else [LibraryCopy(lib.manifest, (), str(lib.directory))
                                            for lib in installed_libraries(site_dirs())[0]]
    path, plan = repair_wheel(a.wheel, a.output, available)
    libs = ", ".join(f"{lib.manifest.name} {lib.manifest.version} ({lib.manifest.platform})"
                     for lib in plan.libraries) or "none"
    print(f"ran {plan.tool} leaving out {', '.join(plan.excluded) or 'nothing'} (registry: {libs})\n"
          f"wrote {path}", file=out)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO], int]] = {"repair": _repair}
