"""``python -m dllreg devendor IN.whl... -o DIR``: repaired wheels -> thin wheels + library wheels.

Reads and checks every input, plans, builds every output in memory, and only then writes
(docs/devendor.md). Heavy modules are imported inside the command.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from ..convert.plan import DevendorPlan
    from ..convert.read import LibraryWheel
    from ..convert.write import Outputs
    from ..libwheel.package import LibraryPlan
    from ..recipes.schema import RecipeBook

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


def _discover(args: argparse.Namespace, book: RecipeBook) -> list[LibraryWheel]:
    from packaging.utils import parse_wheel_filename

    from ..convert.read import DevendorError, read_library_wheel
    from ..names import library_of_dist

    found = list(args.with_lib)
    wanted = set(book.names())
    pypi = {p.dist for r in book.recipes for p in r.pypi}  # PyPI providers, as published
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


def _fetched(missing: tuple[tuple[str, str], ...], book: RecipeBook, outdir: Path,
             out: TextIO, quiet: bool) -> list[tuple[LibraryPlan, LibraryWheel]]:
    import tempfile

    from ..convert.read import planned_library
    from ..recipes.source import fetch_source, has_source

    plans = []
    with tempfile.TemporaryDirectory(prefix="dllreg-fetch-") as tmp:
        for name, platform in missing:
            recipe = book.require(name)
            if not has_source(recipe, platform):
                continue  # no PyPI source: packaged as-is
            if not quiet:
                print(f"fetching the {name} recipe's source for {platform} with pip", file=out)
            wheel = fetch_source(recipe, platform.split(".")[-1], Path(tmp))
            plans.append(planned_library(recipe, wheel, outdir))
    return plans


def _plan(args: argparse.Namespace, out: TextIO, spool: Path
          ) -> tuple[DevendorPlan, Outputs, list[LibraryPlan], list[str]]:
    """The plan, the outputs to write, the fetched library wheels they use, and every refusal
    met so far (each refused wheel is left out, so the others' refusals are found too)."""
    from ..convert.plan import plan_devendor
    from ..convert.read import read_inputs
    from ..convert.write import build_outputs
    from ..recipes.schema import load_recipes

    book = load_recipes(args.recipes)
    refused: list[str] = []
    wheels = read_inputs(args.wheels, refused, spool)  # every input is checked first
    available = _discover(args, book)
    planning: list[str] = []
    plan = plan_devendor(wheels, book, available, refused=planning)
    fetched = []
    if args.fetch and plan.missing:
        fetched = _fetched(plan.missing, book, args.output, out, args.json)
        if fetched:
            planning = []
            plan = plan_devendor(wheels, book, available + [lw for _, lw in fetched], refused=planning)
    refused += planning
    used = {s.path for s in plan.substitutes}
    extra = [lp for lp, lw in fetched if lw.path in used]
    outputs = build_outputs(plan, refused)
    planned = {lw.path for _, lw in fetched}  # written from their plans, not copied
    outputs = dataclasses.replace(outputs, substitutes=tuple(s for s in outputs.substitutes
                                                             if s.path not in planned))
    return plan, outputs, extra, refused


def _report(plan: DevendorPlan, written: dict[str, str],
            notes: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
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
    from ..convert.install import human_size

    lines = []
    for w in doc["wheels"]:
        name = Path(w["path"]).name
        if w["status"] == "nothing to do":
            lines.append(f"{name}: nothing to do (no vendored libraries)")
            continue
        tool = w["tool"] or "libraries beside the package"
        lines.append(f"{name} ({tool}): {human_size(w['bytes_before'])} of vendored libraries -> "
                     f"{human_size(w['bytes_after'])} left in the wheel")
        for d in w["libraries"]:
            what = f"  {_VERB[d['action']]:<11} {Path(d['member']).name} ({human_size(d['size'])})"
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
        lines.append(f"native libraries: {human_size(b['before'])} vendored before; after: "
                     f"{human_size(b['after_vendored'])} vendored + "
                     f"{human_size(b['after_registry'])} in library wheels = {human_size(b['after'])}")
    return "\n".join(lines) + "\n"


def _devendor(args: argparse.Namespace, out: TextIO) -> int:
    import tempfile

    from ..convert.write import write_outputs

    written: dict[str, str] = {}
    notes: Mapping[str, tuple[str, ...]] = {}
    # the checked binaries wait in a private spool for the write step (convert/spool.py)
    with tempfile.TemporaryDirectory(prefix="dllreg-spool-") as spool:
        plan, outputs, fetched, refused = _plan(args, out, Path(spool))
        if not (outputs.consumers or refused):  # a run that changes no wheel writes nothing
            done = None
        else:  # writing finds the last refusals (a binary that cannot be patched); any writes nothing
            done = write_outputs(outputs, args.output, extra=fetched, refused=refused,
                                 inputs=len(args.wheels))
    if done is not None:
        notes = done.notes
        names = {p.name: str(p) for p in done.paths}
        for lp in fetched:
            written[f"sub:{lp.manifest.name}"] = names[lp.wheel_name]
        for c in outputs.consumers:
            written[c.plan.wheel.filename] = str(done.consumers[c.plan.wheel.filename])
        for nl in outputs.libraries:
            written[f"lib:{nl.name}"] = str(done.libraries[nl.name])
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
