"""``register`` and ``unregister``: external libraries (conda, the system) in the registry."""

from __future__ import annotations

import argparse
import os
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from ..errors import DllregError
from ..names import EXTERNAL_PROVIDERS, library_name


def add_parsers(sub: Any) -> None:
    r = sub.add_parser("register", help="record a conda or system library in the registry")
    what = r.add_mutually_exclusive_group(required=True)
    what.add_argument("--name", help="the dllreg library name to register the files as")
    what.add_argument("--system", metavar="NAME",
                      help="find the operating system's copy of the recipe library NAME "
                      "(by the recipe's SONAME, as the dynamic loader would) and register it")
    r.add_argument("--version", dest="lib_version",
                   help="PEP 440 version (--system: default from dpkg/rpm)")
    r.add_argument("--path", action="append", default=[], dest="paths",
                   help="a shared library file (repeatable, any order)")
    r.add_argument("--provider", choices=EXTERNAL_PROVIDERS,
                   help="who owns the files (default: conda with --prefix, else system)")
    r.add_argument("--prefix", help="conda: the environment prefix; every file must be in it")
    r.add_argument("--owner", default="", help="who registers (conda hooks pass the package name)")
    r.add_argument("--requires", action="append", default=[],
                   help="another registry library these files need, e.g. 'gfortran>=12'")
    r.add_argument("--include", help="header directory for the generated pkg-config file")
    r.add_argument("--root", default="",
                   help="--system: look in this unpacked distribution tree instead of /")
    _site_option(r)

    u = sub.add_parser("unregister", help="remove a conda or system library from the registry")
    u.add_argument("--name", required=True)
    u.add_argument("--provider", choices=EXTERNAL_PROVIDERS,
                   help="only this provider's registration (default: every external one)")
    u.add_argument("--owner", default="",
                   help="only if this owner registered it (conda hooks pass the package name)")
    _site_option(u)


def _site_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--site", type=Path,
                   help="site directory holding the registry (default: this interpreter's "
                   "platlib)")


def _site(a: argparse.Namespace) -> Path:
    return Path(os.path.abspath(a.site or sysconfig.get_paths()["platlib"]))


def _read(paths: list[str]) -> list[tuple[str, bytes]]:
    out = []
    for p in paths:
        try:
            if not os.path.isfile(p):
                raise DllregError(f"{p}: no such file")
            with open(p, "rb") as f:
                out.append((os.path.abspath(p), f.read()))
        except OSError as exc:
            raise DllregError(f"{p}: cannot read ({exc.strerror})") from None
    return out


def _register(a: argparse.Namespace, out: TextIO) -> int:
    from ..env.register import RegisterError, check_in_prefix, plan_registration
    from ..env.write import write_registration

    provider = a.provider or ("conda" if a.prefix else "system")
    if a.system:
        return _register_system(a, out)
    if a.root:
        raise RegisterError("--root goes with --system")
    if not a.lib_version:
        raise RegisterError("register --name needs --version (the library's PEP 440 version)")
    if provider == "conda":
        if not a.prefix:
            raise RegisterError("--provider conda needs --prefix (the environment's prefix)")
        check_in_prefix(a.paths, a.prefix)
    reg = plan_registration(a.name, a.lib_version, _read(a.paths), provider=provider,
                            owner=a.owner, requires=a.requires, include=a.include)
    folder = write_registration(_site(a), reg)
    _report(reg.manifest, folder, out)
    return 0


def _register_system(a: argparse.Namespace, out: TextIO) -> int:
    from ..env.register import RegisterError, plan_registration
    from ..env.syslookup import find_system_library, package_version
    from ..env.write import write_registration
    from ..recipes.schema import load_recipes

    if a.paths or a.prefix or (a.provider and a.provider != "system"):
        raise RegisterError("--system finds the files itself: leave out --path, --prefix and "
                            "--provider")
    recipe = load_recipes().require(a.system)
    abi = recipe.abi_for("linux")
    if os.name == "nt" or abi is None:
        raise RegisterError(f"--system {recipe.name}: only Linux system libraries can be found "
                            "automatically; use --name with --path")
    candidates = find_system_library(list(abi.runtime_names), a.root)
    if not candidates:
        where = a.root or "this system"
        # Recipes for other builds of the same distribution packages (openblas is
        # scipy-openblas; Debian's OpenBLAS is libopenblas): name the ones present here.
        book = load_recipes()
        kin = []
        for other in map(book.require, book.names()):
            other_abi = other.abi_for("linux")
            if (other is not recipe and set(other.debian) & set(recipe.debian) and other_abi
                    and find_system_library(list(other_abi.runtime_names), a.root)):
                kin.append(other.name)
        hint = f"; this system has {' and '.join(kin)}: register --system {kin[0]}" if kin else ""
        raise RegisterError(
            f"{', '.join(abi.runtime_names)} ({recipe.name}) not found in {where}'s loader paths"
            + (hint or f"; install the distribution's package ("
               f"{', '.join(recipe.debian) or 'see the recipe'}) or use --name with --path"))
    refused = []
    for path in candidates:
        version = a.lib_version or package_version(os.path.realpath(path)) or package_version(path)
        if not version:
            raise RegisterError(f"{path}: no package manager knows its version; give --version "
                                "(for an unpacked .deb: dpkg-deb -f FILE.deb Version)")
        try:
            reg = plan_registration(recipe.name, version, _read([path]), provider="system",
                                    owner=a.owner or "dllreg register --system",
                                    requires=a.requires, include=a.include)
        except DllregError as exc:
            refused.append(str(exc))
            continue
        _report(reg.manifest, write_registration(_site(a), reg), out)
        return 0
    raise RegisterError(f"no usable {recipe.name} among {', '.join(candidates)}: "
                        + "; ".join(refused))


def _report(m: Any, folder: Path, out: TextIO) -> None:
    files = ", ".join(f"{f.path} ({f.soname})" for f in m.libraries)
    by = f", by {m.registered_by}" if m.registered_by else ""
    print(f"registered {m.name} {m.version} ({m.provider}{by}) in {folder}\n  files in preload "
          f"order: {files}", file=out)


def _unregister(a: argparse.Namespace, out: TextIO) -> int:
    from ..env.write import remove_registration

    name = library_name(a.name)
    for provider in (a.provider,) if a.provider else EXTERNAL_PROVIDERS:
        print(remove_registration(_site(a), name, provider, a.owner), file=out)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO], int]] = {
    "register": _register, "unregister": _unregister}
