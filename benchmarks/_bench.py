"""Helpers shared by the benchmarks: subprocess runs, a pinned environment, statistics."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile

ROOT = Path(__file__).resolve().parent.parent


def sh(*cmd: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, cwd=cwd)
    if proc.returncode:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def bench_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "DLLREG_")) and k != "LD_LIBRARY_PATH"}
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    return env


def wall(cmd: list[str], env: dict[str, str], cwd: Path) -> int:
    t0 = time.perf_counter_ns()
    proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL)
    dt = time.perf_counter_ns() - t0
    if proc.returncode:
        raise SystemExit(f"failed: {cmd}")
    return dt


def stats(ns: Sequence[float], unit: float) -> dict[str, float]:
    q1, med, q3 = statistics.quantiles(ns, n=4, method="inclusive")
    return {"median": round(med / unit, 4), "q1": round(q1 / unit, 4),
            "q3": round(q3 / unit, 4), "iqr": round((q3 - q1) / unit, 4), "n": len(ns)}


def at_least(n: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``n`` (medians and quartiles need a few runs)."""
    def check(text: str) -> int:
        value = int(text)
        if value < n:
            raise argparse.ArgumentTypeError(f"must be at least {n}, not {value}")
        return value
    return check


def parser(doc: str | None, runs: int | None = None, runs_help: str = "runs per variant",
           min_runs: int = 4) -> argparse.ArgumentParser:
    """The options every benchmark takes: --json and --keep, and --runs (at least ``min_runs``)
    when it repeats runs."""
    ap = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    if runs is not None:
        ap.add_argument("--runs", type=at_least(min_runs), default=runs,
                        help=f"{runs_help} (default {runs})")
    ap.add_argument("--json", action="store_true", help="print machine-readable JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir and print its path")
    return ap


def interleaved(cmds: dict[str, list[str]] | Callable[[int], dict[str, list[str]]], runs: int,
                env: dict[str, str], cwd: Path) -> dict[str, list[int]]:
    """Wall times (ns) of each command, ``runs`` rounds in rotated order: each leads in turn.
    ``cmds`` may be a function of the round number (the same commands for every variant in a
    round, e.g. each round at another point of the garbage collector's cycle)."""
    names = list(cmds(0) if callable(cmds) else cmds)
    walls: dict[str, list[int]] = {v: [] for v in names}
    for i in range(runs):
        k = i % len(names)
        now = cmds(i) if callable(cmds) else cmds
        for v in names[k:] + names[:k]:
            walls[v].append(wall(now[v], env, cwd))
    return walls


def ratio_table(walls: dict[str, list[int]], base: str) -> dict[str, dict[str, float]]:
    """Statistics in ms of each variant, its ratio to the base median and its paired ratio
    (median over rounds of variant / base in the same round)."""
    fig = {v: stats(w, 1e6) for v, w in walls.items()}
    for v, w in walls.items():
        fig[v]["ratio"] = round(fig[v]["median"] / fig[base]["median"], 4)
        fig[v]["paired_ratio"] = round(statistics.median(a / b for a, b in zip(w, walls[base])), 4)
    return fig


def print_ratio_table(fig: dict[str, dict[str, float]]) -> None:
    print(f"  {'variant':<16}{'median':>8}{'q1':>8}{'q3':>8}{'IQR':>7}{'ratio':>8}{'paired':>8}")
    for v, s in fig.items():
        print(f"  {v:<16}{s['median']:8.2f}{s['q1']:8.2f}{s['q3']:8.2f}{s['iqr']:7.2f}"
              f"{s['ratio']:8.3f}{s['paired_ratio']:8.3f}")


def run(prefix: str, keep: bool, as_json: bool, body: Callable[[Path, dict[str, str]], dict[str, Any]],
        report: Callable[[dict[str, Any], float], None]) -> int:
    """Run ``body(temp_dir, env)`` in a fresh temp dir (kept with ``keep``), then print its
    result as JSON or through ``report``."""
    start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        result = body(root, bench_env())
    finally:
        if keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    elapsed = time.perf_counter() - start
    result["total_runtime_s"] = round(elapsed, 1)
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        report(result, elapsed)
    return 0


# The stand-in: a non-zero initializer keeps the array in .rodata, so the file really is big.
BLOB_C = """const unsigned char blob_data[8u << 20] = {1};
double blob_ddot(int n, const double *x, const double *y) {
    double s = 0; for (int i = 0; i < n; i++) s += x[i] * y[i]; return s + blob_data[0];
}
"""


def library(root: Path, *, real: bool = True) -> dict[str, Any]:
    """A library wheel made by ``dllreg package-lib``: the real OpenBLAS if its source wheel
    is cached (and ``real``), else the 8 MiB stand-in; ``label`` says which."""
    dist = root / "libdist"
    cached = sorted((ROOT / ".cache" / "downloads").glob(
        f"scipy_openblas32-*-py3-none-manylinux*_{platform.machine()}.whl"))
    if cached and real:
        src, version = cached[-1], cached[-1].name.split("-")[1]
        name, sym, label = "openblas", "scipy_cblas_ddot", f"OpenBLAS from {cached[-1].name}"
    else:
        src, version = root / "blobsrc", "1.0"
        (src / "lib").mkdir(parents=True)
        (root / "blob.c").write_text(BLOB_C)
        sh("gcc", "-O2", "-shared", "-fPIC", "-Wl,-soname,libblob.so.1", root / "blob.c",
           "-o", src / "lib" / "libblob.so.1")
        name, sym, label = "blob", "blob_ddot", "gcc-built 8 MiB stand-in libblob.so.1"
    sh(sys.executable, "-m", "dllreg", "package-lib", name, "--version", version,
       "--from", src, "-o", dist)
    (wheel,) = dist.glob("dllreg_lib_*.whl")
    unpacked = root / "libunpacked"
    install_wheels([wheel], unpacked)
    (lib,) = (p for p in (unpacked / "dllreg.libs" / name / "lib").iterdir() if ".so" in p.name)
    return {"name": name, "version": version, "symbol": sym, "label": label, "wheel": wheel,
            "file": lib}


def install_wheels(wheels: list[Path], prefix: Path) -> None:
    """Install like pip (bytecode compiled) into a plain prefix."""
    scheme = {k: str(prefix / k) for k in ("scripts", "data", "headers")}
    scheme.update(purelib=str(prefix), platlib=str(prefix))
    for wheel in wheels:
        with WheelFile.open(wheel) as whl:
            install(whl, SchemeDictionaryDestination(scheme, sys.executable, "posix",
                                                     bytecode_optimization_levels=(0,)),
                    {"INSTALLER": b"dllreg-benchmark"})
