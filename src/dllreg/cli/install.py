"""``python -m dllreg install PKG...``: pip download, devendor, pip install from a wheelhouse.

The steps live in convert/install.py; this module parses options, runs pip, and shows progress on
stderr and the summary on stdout (docs/install.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from ..convert.install import PipRunner


def add_parsers(subparsers: Any) -> None:
    p = subparsers.add_parser("install", help="download wheels with pip, devendor them, and install the "
                              "result with pip (pip owns every file)")
    p.add_argument("requirements", nargs="+", metavar="PKG", help="a requirement, e.g. 'numpy>=2'")
    p.add_argument("--python", metavar="PATH",
                   help="install into this interpreter's environment (default: the running one)")
    p.add_argument("--wheelhouse", type=Path, metavar="DIR",
                   help="write the wheels to install here and keep them (default: a temporary directory)")
    p.add_argument("--keep-wheelhouse", action="store_true",
                   help="keep the temporary wheelhouse and print its path")
    p.add_argument("--dry-run", action="store_true",
                   help="download and devendor, then ask pip what it would install; install nothing")
    p.add_argument("--no-fetch", action="store_true",
                   help="do not download registry libraries' sources; package vendored copies as-is")
    p.add_argument("--recipes", type=Path, metavar="DIR",
                   help="read the recipes from DIR instead of the registry shipped with dllreg")
    p.add_argument("-q", "--quiet", action="store_true", help="pass -q to pip")
    g = p.add_argument_group("passed to pip download")
    g.add_argument("-i", "--index-url", metavar="URL")
    g.add_argument("--extra-index-url", action="append", default=[], metavar="URL")
    g.add_argument("-f", "--find-links", action="append", default=[], metavar="DIR_OR_URL")
    g.add_argument("--no-index", action="store_true")
    g.add_argument("--pre", action="store_true")
    g = p.add_argument_group("passed to pip install")
    g.add_argument("--force-reinstall", action="store_true",
                   help="replace installed copies, e.g. a vendored numpy of the same version")
    g.add_argument("--no-compile", action="store_true",
                   help="do not compile the installed Python files to bytecode (by default dllreg "
                   "compiles them after pip, on every core)")


def _index_args(a: argparse.Namespace) -> tuple[str, ...]:
    out = ["--index-url", a.index_url] if a.index_url else []
    for url in a.extra_index_url:
        out += ["--extra-index-url", url]
    for link in a.find_links:
        out += ["--find-links", link]
    return tuple(out + (["--no-index"] if a.no_index else []) + (["--pre"] if a.pre else []))


def _runner(err: TextIO) -> PipRunner:
    from ..convert.install import isolated_env

    def run(argv: Sequence[str], isolated: bool) -> int:
        env = isolated_env(os.environ) if isolated else None
        err.flush()
        try:
            fd = err.fileno()
        except (OSError, ValueError):  # a stream without a descriptor (tests): relay the output
            proc = subprocess.run(list(argv), capture_output=True, text=True, env=env)
            err.write(proc.stdout + proc.stderr)
            return proc.returncode
        # pip's output (and its progress bars, on a terminal) goes to stderr as it comes
        return subprocess.run(list(argv), stdout=fd, env=env).returncode

    return run


def _install(a: argparse.Namespace, out: TextIO) -> int:
    from ..convert.install import (
        InstallError,
        Target,
        byte_totals,
        check_requirements,
        devendor,
        download,
        fetch_libraries,
        human_size,
        index_library_wheels,
        install,
        local_find_links,
        pip_prefix,
        wheel_lines,
        write_wheelhouse,
    )
    from ..recipes.schema import load_recipes

    err = sys.stderr

    def progress(line: str) -> None:
        print(f"dllreg: {line}", file=err, flush=True)

    requirements = check_requirements(a.requirements)
    if importlib.util.find_spec("pip") is None:  # the running pip drives every step (--python too)
        raise InstallError(f"pip is not installed for {sys.executable}; install it there, or run dllreg "
                           "from an environment that has pip with --python TARGET")
    book = load_recipes(a.recipes)
    target = Target(pip_prefix(a.python), _index_args(a), a.quiet, a.python or sys.executable)
    run = _runner(err)
    local_links = local_find_links(a.find_links, os.environ)
    with tempfile.TemporaryDirectory(prefix="dllreg-install-") as tmp:
        work = Path(tmp)
        if a.wheelhouse is not None:
            house = a.wheelhouse
        elif a.keep_wheelhouse:
            house = Path(tempfile.mkdtemp(prefix="dllreg-wheelhouse-"))
        else:
            house = work / "wheelhouse"
        downloads = download(target, requirements, work / "downloads", run, progress)
        remote = index_library_wheels(downloads, local_links)
        if remote:  # a dllreg-lib name anyone may publish: only a local wheel is meant
            raise InstallError(
                f"pip took {', '.join(w.name for w in remote)} from an index, not from a local "
                "--find-links directory; dllreg-lib-* names are not registered on PyPI, so anyone "
                "may publish one (dependency confusion). Put the library wheel you mean in a "
                "directory and pass --find-links DIR (with --no-index to use nothing else), or "
                "build the consumer to require the recipe's PyPI wheel (docs/install.md); "
                "nothing was installed")
        fetch = None if a.no_fetch else (
            lambda missing: fetch_libraries(target, book, missing, work / "fetched", run, progress))
        (work / "spool").mkdir()
        result = devendor(downloads, book, [work / "downloads", *local_links], fetch, progress,
                          spool=work / "spool")
        for line in (line for wp in result.plan.wheels for line in wheel_lines(wp)):
            progress(line)
        wheels = write_wheelhouse(result, house)
        flags = {"--force-reinstall": a.force_reinstall, "--no-compile": a.no_compile}
        extra = [flag for flag, given in flags.items() if given]
        install(target, house, wheels, requirements, run, progress,
                [*extra, *(["--dry-run"] if a.dry_run else [])],
                compile=not (a.dry_run or a.no_compile))
        before, after = byte_totals(result)
        changed = sum(wp.changed for wp in result.plan.wheels)
        verb = "would install" if a.dry_run else "installed"
        print(f"{verb} with pip from a wheelhouse of {len(wheels)} wheel(s): {changed} devendored, "
              f"{len(result.plan.libraries)} library wheel(s) packaged, "
              f"{len(result.plan.substitutes)} registry library wheel(s) used", file=out)
        if before:
            print(f"native libraries: {human_size(before)} vendored before; {human_size(after)} after",
                  file=out)
        if a.wheelhouse is not None or a.keep_wheelhouse:
            print(f"wheelhouse: {house}", file=out)
    return 0


COMMANDS = {"install": _install}
