"""``python -m dllreg devendor IN.whl... -o DIR``: repaired wheels -> thin wheels + library wheels.

Reads and checks every input, plans, builds every output in memory, and only then writes
(docs/devendor.md). Heavy modules are imported inside the command.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from .devendor import DevendorPlan
    from .devendor_read import LibraryWheel
    from .devendor_write import Outputs
    from .libwheel import LibraryPlan
    from .recipes import Registry

JSON_FORMAT = 1
_VERB = {"substitute": "substituted", "package": "packaged", "drop": "dropped", "keep": "kept"}


def add_parsers(subparsers: Any) -> None:
    p = subparsers.add_parser("devendor", help="turn repaired wheels (auditwheel, delvewheel, delocate) "
                              "into thin wheels plus the library wheels they need")
    p.add_argument("wheels", nargs="+", type=Path, metavar="IN.whl")
    p.add_argument("-o", "--output", required=True, type=Path, help="directory for the wheels")
    p.add_argument("--with-lib", action="append", default=[], type=Path, metavar="WHEEL",
                   help="a dllreg-lib-NAME wheel that may stand in for vendored copies (repeatable)")
    p.add_argument("--find-libs", action="append", default=[], type=Path, metavar="DIR",
                   help="look for dllreg-lib-NAME wheels here too (repeatable; -o DIR always is)")
    p.add_argument("--fetch", action="store_true",
                   help="build the missing registry library wheels from their recipe's PyPI source (pip)")
    p.add_argument("--recipes", type=Path, metavar="DIR",
                   help="read the recipes from DIR instead of the registry shipped with dllreg")
    p.add_argument("--json", action="store_true")


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB" if n else "0 B"


def _discover(args: argparse.Namespace, registry: Registry) -> list[LibraryWheel]:
    from packaging.utils import parse_wheel_filename

    from .devendor_read import DevendorError, read_library_wheel
    from .names import library_of_dist

    found = list(args.with_lib)
    wanted = set(registry.names())
    pypi = {p.dist for r in registry.recipes for p in r.pypi}  # PyPI providers, as published
    for d in [*args.find_libs, args.output]:
        for wheel in sorted(d.glob("*.whl")) if d.is_dir() else []:
            try:
                dist = str(parse_wheel_filename(wheel.name)[0])
            except ValueError:
                continue
            name = library_of_dist(dist) or (dist if dist in pypi else None)
            if (name in wanted or name in pypi) and wheel.resolve() not in {f.resolve() for f in found}:
                found.append(wheel)
    libs = []
    for wheel in found:
        if not wheel.is_file():
            raise DevendorError(f"--with-lib {wheel}: no such wheel")
        libs.append(read_library_wheel(wheel))
    return libs


def _fetched(missing: tuple[tuple[str, str], ...], registry: Registry, outdir: Path,
             out: TextIO, quiet: bool) -> list[tuple[LibraryPlan, LibraryWheel]]:
    import tempfile

    from .recipe_build import fetch_source, has_source, planned_library

    plans = []
    with tempfile.TemporaryDirectory(prefix="dllreg-fetch-") as tmp:
        for name, platform in missing:
            recipe = registry.require(name)
            if not has_source(recipe, platform):
                continue  # no PyPI source: packaged as-is
            if not quiet:
                print(f"fetching the {name} recipe's source for {platform} with pip", file=out)
            wheel = fetch_source(recipe, platform.split(".")[-1], Path(tmp))
            plans.append(planned_library(recipe, wheel, outdir))
    return plans


def _plan(args: argparse.Namespace, out: TextIO) -> tuple[DevendorPlan, Outputs, list[LibraryPlan]]:
    from .devendor import plan_devendor
    from .devendor_read import read_input_wheel
    from .devendor_write import build_outputs
    from .recipes import load_registry

    registry = load_registry(args.recipes)
    wheels = [read_input_wheel(p) for p in args.wheels]  # every input is checked first
    available = _discover(args, registry)
    plan = plan_devendor(wheels, registry, available)
    fetched = []
    if args.fetch and plan.missing:
        fetched = _fetched(plan.missing, registry, args.output, out, args.json)
        if fetched:
            plan = plan_devendor(wheels, registry, available + [lw for _, lw in fetched])
    used = {s.path for s in plan.substitutes}
    extra = [lp for lp, lw in fetched if lw.path in used]
    outputs = build_outputs(plan)
    planned = {lw.path for _, lw in fetched}  # written from their plans, not copied
    outputs = dataclasses.replace(outputs, substitutes=tuple(s for s in outputs.substitutes
                                                             if s.path not in planned))
    return plan, outputs, extra


def _report(plan: DevendorPlan, written: dict[str, str], notes: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    wheels = []
    for wp in plan.wheels:
        status = ("nothing to do" if not wp.decisions else "devendored" if wp.changed else "unchanged")
        wheels.append({
            "path": wp.wheel.path, "tool": wp.tool, "status": status,
            "output": written.get(wp.wheel.filename),
            "bytes_before": wp.bytes_before, "bytes_after": wp.bytes_after,
            "requires": [str(r) for r in wp.requires],
            "libraries": [{"member": d.member, "action": d.action, "reason": d.reason, "size": d.size,
                           "library": d.library, "version": d.version, "runtime": d.runtime,
                           "served_by": d.served_by}
                          for d in wp.decisions],
            "notes": list(notes.get(wp.wheel.filename, ())),
        })
    libs = [{"name": nl.name, "version": nl.version, "runtime": nl.runtime,
             "from": f"{nl.wheel}: {nl.member}", "needed_by": list(nl.users),
             "path": written.get(f"lib:{nl.name}")} for nl in plan.libraries]
    subs = [{"name": s.name, "version": s.version, "path": written.get(f"sub:{s.name}", s.path),
             "bytes": s.lib_bytes} for s in plan.substitutes]
    before = sum(wp.bytes_before for wp in plan.wheels)
    vendored_after = sum(wp.bytes_after for wp in plan.wheels)
    registry_after = plan.packaged_bytes + sum(s.lib_bytes for s in plan.substitutes)
    return {"wheels": wheels, "library_wheels": libs, "substitutes": subs,
            "bytes": {"before": before, "after_vendored": vendored_after, "after_registry": registry_after,
                      "after": vendored_after + registry_after}}


def _text(doc: dict[str, Any]) -> str:
    lines = []
    for w in doc["wheels"]:
        name = Path(w["path"]).name
        if w["status"] == "nothing to do":
            lines.append(f"{name}: nothing to do (no vendored libraries)")
            continue
        tool = w["tool"] or "libraries beside the package"
        lines.append(f"{name} ({tool}): {_size(w['bytes_before'])} of vendored libraries -> "
                     f"{_size(w['bytes_after'])} left in the wheel")
        for d in w["libraries"]:
            what = f"  {_VERB[d['action']]:<11} {Path(d['member']).name} ({_size(d['size'])})"
            if d["action"] in ("substitute", "package"):
                what += f" -> {d['library']} {d['version']} ({d['runtime']})"
            lines.append(f"{what}: {d['reason']}")
        lines += [f"  note: {n}" for n in w["notes"]]
        if w["output"]:
            reqs = ", ".join(w["requires"]) or "nothing"
            lines.append(f"  wrote {w['output']} (requires {reqs})")
        else:
            lines.append("  nothing changed: the wheel was not written")
    for lib in doc["library_wheels"]:
        lines.append(f"library {lib['name']} {lib['version']} ({lib['runtime']}) from {lib['from']}: "
                     f"wrote {lib['path']}")
    for s in doc["substitutes"]:
        lines.append(f"registry library {s['name']} {s['version']}: {s['path']}")
    b = doc["bytes"]
    if b["before"]:
        lines.append(f"native libraries: {_size(b['before'])} vendored before; after: "
                     f"{_size(b['after_vendored'])} vendored + {_size(b['after_registry'])} in library "
                     f"wheels = {_size(b['after'])}")
    return "\n".join(lines) + "\n"


def _devendor(args: argparse.Namespace, out: TextIO) -> int:
    from .devendor_write import write_outputs
    from .libwheel import write_library_wheel

    plan, outputs, fetched = _plan(args, out)
    written: dict[str, str] = {}
    notes = {c.plan.wheel.filename: c.notes for c in outputs.consumers}
    if outputs.consumers:  # a run that changes no wheel writes nothing
        for lp in fetched:
            written[f"sub:{lp.manifest.name}"] = str(write_library_wheel(lp, args.output))
        paths = write_outputs(outputs, args.output)
        names = {Path(p).name: str(p) for p in paths}
        for c in outputs.consumers:
            written[c.plan.wheel.filename] = names[c.plan.wheel.filename]
        for nl, lp in outputs.libraries:
            written[f"lib:{nl.name}"] = names[lp.wheel_name]
        for s in outputs.substitutes:
            written[f"sub:{s.name}"] = names.get(Path(s.path).name, s.path)
    doc = _report(plan, written, notes)
    if args.json:
        json.dump({"format": JSON_FORMAT, **doc}, out, indent=2)
        out.write("\n")
    else:
        out.write(_text(doc))
    return 0


COMMANDS = {"devendor": _devendor}
