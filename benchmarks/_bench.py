"""Helpers shared by the benchmarks: subprocess runs, a pinned environment, statistics."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from pathlib import Path


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
