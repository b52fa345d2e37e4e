"""Text and JSON output of ``python -m dllreg inspect`` (docs/inspect.md)."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..env.inspect import CATEGORIES, FORMATS, Binary, Need, Report, WheelFacts
from ..names import dist_name


def to_json(report: Report) -> dict[str, Any]:
    """The document of docs/inspect.md without its "format" key, which the CLI adds."""
    w = report.wheel
    wheel = w and {**dataclasses.asdict(w), "vendored": [{"path": p, "size": s} for p, s in w.vendored],
                   "vendored_bytes": w.vendored_bytes}
    return {"path": report.path, "type": "wheel" if w else "file", "wheel": wheel,
            "binaries": [dataclasses.asdict(b) for b in report.binaries],
            "errors": list(report.errors), "warnings": list(report.warnings),
            "duplicates": list(report.duplicates)}


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def _label(n: Need) -> str:
    lib = f"{n.library}, {n.provider}" if n.provider not in (None, "wheel") else n.library
    return n.name + (" (delay)" if n.delayed else "") + (f" [{lib}]" if lib else "")


def _binary_text(b: Binary) -> list[str]:
    lines = [f"{b.path}: {FORMATS[b.format]} {'+'.join(b.arches)} {b.bits}-bit {b.kind}, {_mb(b.size)}",
             f"  name: {b.name or '-'}" + (f" (export directory: {b.export_name})" if b.export_name else "")]
    paths = (("rpath", ":".join(b.rpath)), ("runpath", ":".join(b.runpath)), ("min os", b.min_os))
    lines += [f"  {label}: {value}" for label, value in paths if value]
    width = max((len(_label(n)) for n in b.needs), default=0)
    lines.append(f"  needs ({len(b.needs)}):" if b.needs else "  needs: nothing")
    return lines + [f"    {_label(n).ljust(width)}  {n.category}" for n in b.needs]


def _wheel_text(r: Report, w: WheelFacts) -> list[str]:
    formats = sorted({f"{FORMATS[b.format]} {'+'.join(b.arches)}" for b in r.binaries})
    lines = [f"{r.path}: {w.name} {w.version} ({', '.join(w.platforms)}), "
             f"{len(r.binaries)} binar{'y' if len(r.binaries) == 1 else 'ies'} ({', '.join(formats) or '-'})",
             f"  vendoring: {w.tool or 'none'}" + (f"; patch in {w.patch_file}" if w.patch_file else "")
             + (f" (delvewheel {w.patch_version})" if w.patch_version else "")]
    if w.vendored:
        count = f"{len(w.vendored)} {'library' if len(w.vendored) == 1 else 'libraries'}"
        lines.append(f"  vendored: {count}, {_mb(w.vendored_bytes)} ({w.vendored_bytes:,} bytes) "
                     f"in {', '.join(w.libs_dirs) or '-'}")
        exports = {b.path: b.export_name for b in r.binaries if b.export_name}
        lines += [f"    {_mb(s):>8}  {p}" + (f" (export directory: {exports[p]})" if p in exports else "")
                  for p, s in w.vendored]
    groups: dict[tuple[tuple[int, str], ...], list[str]] = {}
    system: dict[str, int] = {}
    for b in r.binaries:
        key = tuple(sorted((CATEGORIES.index(n.category), _label(n))
                           for n in b.needs if n.category != "system"))
        groups.setdefault(key, []).append(b.path)
        for n in b.needs:
            system[n.name] = system.get(n.name, 0) + (n.category == "system")
    lines += ["  binaries grouped by what they need besides system libraries:"] if groups else []
    for key, paths in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        cats = {c: ", ".join(text for i, text in key if CATEGORIES[i] == c) for c in CATEGORIES}
        lines.append(f"    {len(paths)} x " + ("; ".join(f"{c}: {t}" for c, t in cats.items() if t)
                                              or "system libraries only"))
        lines += [f"        {p}" for p in paths[:3]]
        lines += [f"        ... and {len(paths) - 3} more"] if len(paths) > 3 else []
    api = [n for n in system if system[n] and n.lower().startswith(("api-ms-win-", "ext-ms-"))]
    shown = [f"{n} ({system[n]})" for n in sorted(system, key=str.lower) if system[n] and n not in api]
    lines.append("  system libraries (binaries needing them): "
                 + (", ".join(shown + [f"api-ms-win-* ({len(api)} sets)"] * bool(api)) or "none"))
    missing = sorted({n.name for b in r.binaries for n in b.needs if n.category == "missing"})
    absent = sorted({(n.library or "", n.name) for b in r.binaries for n in b.needs
                     if n.via == "not-installed"})
    lines += [f"  registry library {lib} ({need}) is declared but not installed here: "
              f'pip install "{dist_name(lib)}"' for lib, need in absent]
    return [*lines, "  missing: " + (", ".join(missing) or "none")]


def render_text(report: Report) -> str:
    lines = _binary_text(report.binaries[0]) if report.wheel is None else _wheel_text(report, report.wheel)
    lines += [f"  error: {e}" for e in (*report.errors, *report.duplicates)]
    lines += [f"  warning: {w}" for w in report.warnings]
    return "\n".join(lines) + "\n"
