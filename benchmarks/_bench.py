"""Helpers shared by the benchmarks: subprocess runs, a pinned environment, statistics."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


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


def stats(ns: list[float], unit: float) -> dict[str, float]:
    q1, med, q3 = statistics.quantiles(ns, n=4, method="inclusive")
    return {"median": round(med / unit, 4), "q1": round(q1 / unit, 4),
            "q3": round(q3 / unit, 4), "iqr": round((q3 - q1) / unit, 4), "n": len(ns)}


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
