"""The command line: ``python -m dllreg COMMAND``. The only module that prints and exits."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from .. import __version__
from ..binary import BinaryInfo, read_binary
from ..env.check import effective, find_problems
from ..env.registry import (
    Consumer,
    InstalledLibrary,
    consumer_binaries,
    drop_program_entry,
    find_library,
    installed_consumers,
    installed_libraries,
    installed_record,
    library_dist_infos,
    site_dirs,
)
from ..errors import DllregError, LibraryNotFound
from ..libwheel.pkgconfig import flags, parse_pc
from ..names import NativeRequirement, library_name

#: What ``--help`` says (the module docstring is for developers).
DESCRIPTION = ("One shared copy of each native library per Python environment. Library wheels "
               "(dllreg-lib-NAME) install a library into <site-packages>/dllreg.libs/NAME/; consumers "
               "built with the dllreg.build backend preload it by absolute path at import. "
               "Run 'python -m dllreg COMMAND --help' for a command's options.")

#: Version of the ``--json`` output schemas (docs/cli-json.md).
JSON_FORMAT = 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dllreg", description=DESCRIPTION)
    p.add_argument("--version", action="version", version=f"dllreg {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pc = sub.add_parser("pkg-config", help="compiler and linker flags of an installed library")
    pc.add_argument("name")
    pc.add_argument("--cflags", action="store_true")
    pc.add_argument("--libs", action="store_true")
    pc.add_argument("--modversion", action="store_true")
    pc.add_argument("--variable")
    pc.add_argument("--pc-path", action="store_true", help="print the .pc file's directory")

    for name, text in (("list", "installed libraries and their consumers"),
                       ("show", "one library's manifest and consumers"),
                       ("check", "verify every consumer's requirements and every library file")):
        c = sub.add_parser(name, help=text)
        if name == "show":
            c.add_argument("name")
        if name == "check":
            c.add_argument("--verify", action="store_true", help="also compare sha256 of files")
        c.add_argument("--json", action="store_true")
        c.add_argument("--path", action="append", default=[],
                       help="search this site directory first (repeatable)")

    ins = sub.add_parser("inspect", help="what a .so/.dll/.pyd/.dylib or a wheel's binaries need")
    ins.add_argument("path", type=Path, help="a shared library or a wheel")
    ins.add_argument("--json", action="store_true")

    st = sub.add_parser("stub", help="write _dlls.py into a package (for your own backend)")
    st.add_argument("--package", required=True, help="dotted name, e.g. mypkg")
    st.add_argument("--requires", action="append", required=True)
    st.add_argument("--root", type=Path, default=Path("."),
                    help="directory holding the package (default: .)")
    for module in _command_modules():
        module.add_parsers(sub)
    return p


#: Modules with more commands: each has ``add_parsers(subparsers)`` and ``COMMANDS`` (name ->
#: function(args, out) -> exit code), and imports its heavy dependencies inside the commands.
_MORE_COMMANDS: tuple[str, ...] = ("package_lib", "register", "devendor", "vendor",
                                   "install", "repair")


def _command_modules() -> list[Any]:
    import importlib

    return [importlib.import_module(f"{__package__}.{m}") for m in _MORE_COMMANDS]


def _pkg_config(a: argparse.Namespace, out: TextIO) -> int:
    from ..build import NO_LIBRARY_PHASES, PHASE_VAR  # the backend's phase marker

    name = library_name(a.name)
    lib = find_library(name, site_dirs())
    if lib is None:
        phase = os.environ.get(PHASE_VAR)
        if phase in NO_LIBRARY_PHASES:
            # setuptools runs setup.py to list build requirements (before pip installs them)
            # and to make an sdist (which compiles nothing).
            print(f"dllreg: {name} not installed ({PHASE_VAR}={phase}); no flags needed yet",
                  file=sys.stderr)
            return 0
        raise LibraryNotFound(
            f"library {name} is not installed in any site directory of {sys.executable}; "
            f'pip install "dllreg-lib-{name}"')
    generated = lib.provider.startswith("pypi:") and not lib.manifest.pkgconfig
    if a.pc_path or not (lib.manifest.pkgconfig or generated):
        if not lib.manifest.pkgconfig:
            raise LibraryNotFound(f"library {name} at {lib.directory} ships no pkg-config file")
        print(lib.file_path(lib.manifest.pkgconfig).parent, file=out)
        return 0
    if generated:  # a PyPI wheel without a .pc of its own: the flags its recipe gives
        from ..env.registry import provider_pc

        text, pc = provider_pc(lib), lib.directory / f"{name}.pc"
    else:
        pc = lib.file_path(lib.manifest.pkgconfig or "")
        text = pc.read_text(encoding="utf-8")
    variables, fields = parse_pc(text, str(pc.parent), str(pc))
    if a.modversion:
        print(fields.get("Version", ""), file=out)
    elif a.variable:
        print(variables.get(a.variable, ""), file=out)
    else:
        result = flags(fields, a.cflags, a.libs)
        for req in lib.manifest.requires:
            dep = find_library(req.name, site_dirs())
            if dep and dep.manifest.pkgconfig:
                dpc = dep.file_path(dep.manifest.pkgconfig)
                _, dfields = parse_pc(dpc.read_text(encoding="utf-8"), str(dpc.parent), str(dpc))
                result += [f for f in flags(dfields, a.cflags, a.libs) if f not in result]
        print(" ".join(result), file=out)
    return 0


def _library_json(lib: InstalledLibrary, consumers: list[dict[str, Any]],
                  shadowed: bool) -> dict[str, Any]:
    m = lib.manifest
    return {
        "name": m.name, "version": m.version, "path": str(lib.directory), "site": str(lib.site),
        "platform": m.platform, "provider": m.provider, "registered_by": m.registered_by,
        "shadowed": shadowed,
        "requires": [str(r) for r in m.requires],
        "files": [{"path": str(lib.file_path(f.path)), "soname": f.soname, "sha256": f.sha256}
                  for f in m.libraries],
        "consumers": consumers,
    }


def _inventory(a: argparse.Namespace) -> tuple[list[dict[str, Any]], list[DllregError]]:
    dirs = site_dirs(a.path)
    libraries, errors = installed_libraries(dirs)
    consumers, cerrors = installed_consumers(dirs)
    first = effective(libraries)
    wanted: dict[str, list[tuple[Consumer, NativeRequirement]]] = {}
    for c in consumers:  # one pass, so the work grows with libraries + requirements
        for r in c.requires:
            wanted.setdefault(r.name, []).append((c, r))
    rows = []
    for lib in libraries:
        users = [{"name": c.name, "version": c.version, "requirement": str(r),
                  "satisfied": r.accepts(lib.manifest.version)}
                 for c, r in wanted.get(lib.manifest.name, ())]
        rows.append(_library_json(lib, users, first[lib.manifest.name] is not lib))
    return rows, errors + cerrors


def _print_table(rows: list[dict[str, Any]], out: TextIO) -> None:
    table = [("NAME", "VERSION", "PROVIDER", "CONSUMERS", "PATH")]
    for r in rows:
        users = ", ".join(f"{c['name']} ({c['requirement']})" for c in r["consumers"]) or "-"
        table.append((r["name"], r["version"] + (" (shadowed)" if r["shadowed"] else ""),
                      r["provider"], users, r["path"]))
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4], file=out)


def _list(a: argparse.Namespace, out: TextIO) -> int:
    rows, errors = _inventory(a)
    if a.json:
        json.dump({"format": JSON_FORMAT, "libraries": rows,
                   "errors": [str(e) for e in errors]}, out, indent=2)
        out.write("\n")
        return 0
    if not rows:
        print("no dllreg libraries installed in " + ", ".join(map(str, site_dirs(a.path))),
              file=out)
    else:
        _print_table(rows, out)
    for e in errors:
        print(f"warning: {e}", file=sys.stderr)
    return 0


def _show(a: argparse.Namespace, out: TextIO) -> int:
    name = library_name(a.name)
    rows, _ = _inventory(a)
    matches = [r for r in rows if r["name"] == name]
    if not matches:
        raise LibraryNotFound(f"library {name} is not installed; pip install \"dllreg-lib-{name}\"")
    if a.json:
        json.dump({"format": JSON_FORMAT, "library": matches[0], "shadowed_copies": matches[1:]},
                  out, indent=2)
        out.write("\n")
        return 0
    r = matches[0]
    print(f"{r['name']} {r['version']} ({r['platform']})\n  path: {r['path']}", file=out)
    by = f" (registered by {r['registered_by']})" if r["registered_by"] else ""
    print(f"  provider: {r['provider']}{by}", file=out)
    print("  requires: " + (", ".join(r["requires"]) or "-"), file=out)
    print("  files (preload order):", file=out)
    for f in r["files"]:
        print(f"    {f['path']}  name={f['soname']}  sha256={f['sha256']}", file=out)
    print("  consumers:", file=out)
    for c in r["consumers"] or [{"name": "-", "version": "", "requirement": "", "satisfied": 1}]:
        mark = "" if c["satisfied"] else "  NOT SATISFIED"
        print(f"    {c['name']} {c['version']} {c['requirement']}{mark}".rstrip(), file=out)
    for s in matches[1:]:
        print(f"  shadowed copy: {s['version']} at {s['path']}", file=out)
    return 0


def _check(a: argparse.Namespace, out: TextIO) -> int:
    dirs = site_dirs(a.path)
    libraries, errors = installed_libraries(dirs)
    consumers, cerrors = installed_consumers(dirs)
    def binaries(consumer: Consumer) -> list[tuple[str, BinaryInfo]]:
        out = []
        for path, data in consumer_binaries(consumer):
            try:
                out.append((str(path), read_binary(data, str(path))))
            except DllregError:
                continue  # not a binary dllreg reads (e.g. a linker script); nothing to bind
        return out

    problems = find_problems(libraries, consumers, errors + cerrors, verify=a.verify,
                             binaries=binaries, records=installed_record,
                             prefer_env=os.environ.get("DLLREG_PREFER"),
                             dist_infos=library_dist_infos(dirs))
    failed = any(p.severity == "error" for p in problems)
    if a.json:
        json.dump({"format": JSON_FORMAT, "ok": not failed,
                   "problems": [{"subject": p.subject, "message": p.message, "fix": p.fix,
                                 "severity": p.severity} for p in problems]}, out, indent=2)
        out.write("\n")
    else:
        for p in problems:
            print(p, file=out)
        print(f"{len(effective(libraries))} libraries, {len(consumers)} consumers: "
              + ("problems found" if failed else "OK"), file=out)
    return 1 if failed else 0


def _stub(a: argparse.Namespace, out: TextIO) -> int:
    from ..stub import STUB_FILE, render_stub
    from ..wheelfile import write_atomic

    requires = [NativeRequirement.parse(r) for r in a.requires]
    target = a.root.joinpath(*a.package.split("."))
    if not (target / "__init__.py").is_file():
        raise DllregError(f"{target}: not a regular package (no __init__.py); check --root")
    path = target / STUB_FILE
    write_atomic(path, render_stub(a.package, [r for r in requires if r.applies()]))
    print(f"wrote {path}; make 'from . import _dlls' the first statement of "
          f"{target / '__init__.py'}", file=out)
    return 0


def _inspect(a: argparse.Namespace, out: TextIO) -> int:
    from ..env.inspect import inspect_path
    from .inspect_output import render_text, to_json

    report = inspect_path(a.path)
    if a.json:
        json.dump({"format": JSON_FORMAT, **to_json(report)}, out, indent=2)
        out.write("\n")
    else:
        out.write(render_text(report))
    return report.exit_code


_COMMANDS = {"pkg-config": _pkg_config, "list": _list,
             "show": _show, "check": _check, "stub": _stub, "inspect": _inspect}


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else 2
    try:
        commands = dict(_COMMANDS)
        for module in _command_modules():
            commands.update(module.COMMANDS)
        return commands[args.command](args, out or sys.stdout)
    except DllregError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run() -> None:
    drop_program_entry()  # search what a consumer's import searches, whatever the cwd
    sys.exit(main())


if __name__ == "__main__":
    run()
