"""Run every benchmark, print each one's report, then one summary table (``make bench``).

Each benchmark runs as its own process with ``--json`` (so one crash does not end the rest);
its report is printed from that JSON by the benchmark's own ``report``. The summary is a
Markdown table with the machine and date, ready for the README.
Run: .venv/bin/python benchmarks/run_all.py [--quick] [--save FILE.json]. See README.md.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
#: name -> (arguments, arguments with --quick)
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "import_overhead": ([], ["--runs", "50"]),
    "numpy_import": ([], ["--runs", "30"]),
    "scale": ([], ["--runs", "40", "--list-runs", "10"]),
    "disk": ([], []),
    "verify_cost": ([], ["--quick"]),
    "build_overhead": ([], ["--runs", "1"]),
    "real_stack": ([], []),
}
Row = tuple[str, str, str, str]  # measure, value, goal, met


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _import_overhead(r: dict[str, Any]) -> list[Row]:
    w, s, g = r["whole_process_ms"], r["stub_in_process_ms"], r["goals"]
    c = r["whole_process_gc_cycle_ms"]
    return [
        ("whole-process import, stub / vendored, across the GC cycle",
         f"paired {c['stub']['paired_ratio']:.3f} (medians {c['stub']['ratio']:.3f})", "<= 1.03",
         _met(g["stub_ratio_le_1.03"])),
        ("the same at `python -c`'s fixed GC phase (one more gen-0 collection)",
         f"paired {w['stub']['paired_ratio']:.3f} (medians {w['stub']['ratio']:.3f})", "-", "-"),
        ("whole-process import, design floor / vendored",
         f"paired {c['floor']['paired_ratio']:.3f} (medians {c['floor']['ratio']:.3f})", "-", "-"),
        ("whole-process import, delvewheel style / vendored",
         f"{w['delvewheel-style']['ratio']:.3f}", "-", "-"),
        ("whole-process import, torch style / vendored", f"{w['torch-style']['ratio']:.3f}", "-", "-"),
        ("stub cost excluding dlopen, cold", f"{s['stub_minus_dlopen']:.3f} ms", "<= 0.5 ms",
         _met(g["stub_cost_le_0.5ms"])),
        ("stub, library already loaded", f"{r['already_loaded_exec_us']['median']:.1f} us",
         "<= 20 us", _met(g["already_loaded_le_20us"])),
        ("PyPI wheel provider absent: the extra `os.access` per site dir (stub import, paired)",
         f"{r['pypi_provider_vs_stub']['paired_extra_us']['benchmiss']:+.1f} us", "measured", "-"),
        (f"PyPI wheel provider found: its dist-info lookup, site of "
         f"{r['pypi_provider_vs_stub']['site_entries']} entries (stub import, paired)",
         f"{r['pypi_provider_vs_stub']['paired_extra_us']['benchpypi']:+.1f} us", "measured", "-"),
    ]


def _numpy_import(r: dict[str, Any]) -> list[Row]:
    d = r["whole_process_ms"]["dllreg"]
    return [("whole-process import numpy 2.4.6, devendored + stub / vendored",
             f"paired {d['paired_ratio']:.3f} (medians {d['ratio']:.3f}, "
             f"{r['dllreg_minus_vendored_ms']:+.1f} ms)",
             "<= 1.03", _met(r["goals"]["dllreg_ratio_le_1.03"]))]


def _scale(r: dict[str, Any]) -> list[Row]:
    s, w, g = r["stub_in_process_ms"], r["whole_process_ms"], r["goals"]
    return [
        ("stub with 1,000 libraries / with 1", f"paired {s['paired_ratio']:.3f} (medians {s['ratio']:.3f})",
         "<= 1.10", _met(g["stub_ratio_le_1.10"])),
        ("`dllreg list`, 1,000 libraries", f"{w['dllreg list']['median']:.0f} ms", "< 300 ms",
         _met(g["list_lt_300ms"])),
        ("`dllreg list --json`, 1,000 libraries", f"{w['dllreg list --json']['median']:.0f} ms",
         "< 300 ms", _met(g["list_json_lt_300ms"])),
    ]


def _disk(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for k, x in r["k"].items():
        d, v = x["dllreg"], x["vendored"]
        ok = d["library_copies"] == 1 and v["library_copies"] == int(k)
        rows.append((f"installed MB, K={k} consumers: dllreg / vendored",
                     f"{d['bytes'] / 1e6:.1f} / {v['bytes'] / 1e6:.1f} ({x['ratio']:.2f})",
                     "one library copy", _met(ok)))
    return rows


def _verify_cost(r: dict[str, Any]) -> list[Row]:
    return [(f"DLLREG_VERIFY=1 import cost, {lib} ({x['file_bytes'] / 1e6:.2g} MB)",
             f"+{x['delta_ms']:.1f} ms ({x['off_ms']['median']:.1f} -> "
             f"{x['on_ms']['median']:.1f}, x{x['ratio']:.1f})", "measured", "-")
            for lib, x in r["import_ms"].items()]


def _build_overhead(r: dict[str, Any]) -> list[Row]:
    return [(f"isolated build, dllreg.build / plain {label}",
             f"{x['dllreg.build_s']:.1f} s / {x['plain_s']:.1f} s ({x['ratio']:.2f})", "measured", "-")
            for label, x in r["backends"].items()]


def _real_stack(r: dict[str, Any]) -> list[Row]:
    w, v, m, g = r["wall_s"], r["vendored"], r["redundant_mapped"], r["goals"]
    return [
        ("real stack: vendored MB installed, pip / dllreg install",
         f"{v['before']['bytes'] / 1e6:.0f} / {v['after']['bytes'] / 1e6:.0f} (saved "
         f"{v['saving_of_one_copy_ideal']:.0%} of one copy per (stem, ABI major))", ">= 80%",
         _met(g["saving_ge_80pct"])),
        ("real stack: redundant mapped copies, everything imported",
         f"{m['before_total']} -> {m['after_total']}", "0", _met(g["redundant_after_0"])),
        ("real stack: dllreg install / (pip download + pip install), local cache",
         f"{w['dllreg install']:.0f} s / {w['pip total']:.0f} s (paired {r['install_ratio_paired']:.2f})",
         "<= 1.3", _met(g["install_ratio_le_1.3"])),
        ("real stack: devendor alone", f"{w['dllreg devendor']:.0f} s", "measured", "-"),
        ("real stack: peak memory, devendor / install",
         f"{r['peak_rss_mb']['dllreg devendor']:.0f} / {r['peak_rss_mb']['dllreg install']:.0f} MB",
         "< 600 MB", _met(g["peak_mb_lt_600"])),
    ]


ROWS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "import_overhead": _import_overhead, "numpy_import": _numpy_import, "scale": _scale, "disk": _disk,
    "verify_cost": _verify_cost, "build_overhead": _build_overhead, "real_stack": _real_stack}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{cpu}, {usable} CPUs usable ({os.cpu_count()} online), {platform.platform()}, "
            f"Python {platform.python_version()}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs (a smoke test, ~2 min)")
    ap.add_argument("--save", type=Path, help="also write every benchmark's JSON to this file")
    ap.add_argument("only", nargs="*", metavar="NAME",
                    help=f"run only these ({', '.join(BENCHMARKS)})")
    args = ap.parse_args(argv)
    if unknown := set(args.only) - set(BENCHMARKS):
        ap.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    sys.path.insert(0, str(HERE))
    start = time.perf_counter()
    results: dict[str, Any] = {}
    rows: list[tuple[str, Row]] = []
    failed = []
    for name, (full, quick) in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        print(f"\n===== {name}", flush=True)
        cmd = [sys.executable, str(HERE / f"{name}.py"), "--json", *(quick if args.quick else full)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # stderr passes through
        if proc.returncode:
            print(proc.stdout[-3000:])
            failed.append(name)
            rows.append((name, ("run", f"failed (exit {proc.returncode})", "-", "**no**")))
            continue
        results[name] = result = json.loads(proc.stdout)
        importlib.import_module(name).report(result, result["total_runtime_s"])
        rows += [(name, row) for row in ROWS[name](result)]
    elapsed = time.perf_counter() - start
    if args.save:
        args.save.write_text(json.dumps(results, indent=2) + "\n")
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\n===== summary{' (--quick)' if args.quick else ''}\n")
    print(f"Machine: {machine()}; {date}; all benchmarks {elapsed / 60:.1f} min.\n")
    print("| benchmark | measure | value | goal | met? |")
    print("|---|---|---|---|---|")
    for name, (measure, value, goal, met) in rows:
        print(f"| {name} | {measure} | {value} | {goal} | {met} |")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
