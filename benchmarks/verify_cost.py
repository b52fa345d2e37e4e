"""The stub's import cost with ``DLLREG_VERIFY=1`` (sha256 of each file before loading) vs without.

Builds everything in a temp dir (gcc, a throwaway venv, dllreg's own code paths, no network):
  openblas   the real OpenBLAS library wheel (``package-lib`` from the cached scipy-openblas32
             wheel, 25 MB .so) or, without it, the 8 MiB gcc stand-in (the output says which)
  small      libbench.so.1, a one-function gcc library (~15 KB)
  vbig/vsmall  packages whose __init__ is only the dllreg stub import, requiring one library each
Each figure is ``import vX`` timed inside a fresh interpreter; the four (library, verify off/on)
variants run interleaved in rotated order. The files are in the page cache (warm-up runs), so
the verify cost is hashing, not disk reads. Finally a changed library must fail with
DLLREG_VERIFY=1 and still load without it: the timed path really verifies.
Run: .venv/bin/python benchmarks/verify_cost.py [--runs N] [--json]. See benchmarks/README.md.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from _bench import install_wheels, library, parser, run, sh, stats

from dllreg.build.consumer import insert_stub_import
from dllreg.names import NativeRequirement
from dllreg.stub import STUB_FILE, render_stub

LIB_C = "int bench_answer(void) { return 42; }\n"
DRIVER = """import time
t0 = time.perf_counter_ns(); import {pkg}
print(time.perf_counter_ns() - t0)
"""
PACKAGES = {"openblas": "vbig", "small": "vsmall"}
VARIANTS = [(lib, verify) for lib in PACKAGES for verify in (False, True)]


def setup(root: Path, env: dict[str, str]) -> dict[str, Any]:
    big = library(root / "big")
    libsrc, dist = root / "small" / "lib", root / "small" / "dist"
    libsrc.mkdir(parents=True)
    (root / "small.c").write_text(LIB_C)
    sh("gcc", "-O2", "-shared", "-fPIC", "-Wl,-soname,libbench.so.1", root / "small.c",
       "-o", libsrc / "libbench.so.1")
    sh(sys.executable, "-m", "dllreg", "package-lib", "bench", "--version", "1.0",
       "--from", libsrc.parent, "-o", dist)
    venv = root / "venv"
    sh(sys.executable, "-m", "venv", "--without-pip", venv)
    py = venv / "bin" / "python"
    site = Path(sh(py, "-c", "import sysconfig; print(sysconfig.get_path('platlib'))").strip())
    install_wheels([big["wheel"], *dist.glob("dllreg_lib_*.whl")], site)
    reqs = {"openblas": f"{big['name']}>=1" if big["name"] == "blob" else "openblas>=0.3",
            "small": "bench>=1"}
    files = {"openblas": site / "dllreg.libs" / big["name"] / "lib" / big["file"].name,
             "small": site / "dllreg.libs" / "bench" / "lib" / "libbench.so.1"}
    for key, pkg in PACKAGES.items():
        (site / pkg).mkdir()
        (site / pkg / STUB_FILE).write_text(render_stub(pkg, [NativeRequirement.parse(reqs[key])]))
        (site / pkg / "__init__.py").write_text(insert_stub_import(f'"""{key}."""\n', pkg))
    sh(py, "-m", "compileall", "-q", site, env=env)
    cwd = root / "cwd"
    cwd.mkdir()
    for pkg in PACKAGES.values():  # loads, and warms __pycache__ and the page cache
        sh(py, "-c", f"import {pkg}", env={**env, "DLLREG_VERIFY": "1"}, cwd=cwd)
    return {"py": py, "cwd": cwd, "files": files, "label": big["label"]}


def measure(runs: int, s: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    envs = {False: env, True: {**env, "DLLREG_VERIFY": "1"}}
    samples: dict[tuple[str, bool], list[int]] = {v: [] for v in VARIANTS}
    for i in range(runs):
        for lib, verify in VARIANTS[i % 4:] + VARIANTS[:i % 4]:
            out = sh(s["py"], "-c", DRIVER.format(pkg=PACKAGES[lib]), env=envs[verify], cwd=s["cwd"])
            samples[(lib, verify)].append(int(out))
    result: dict[str, Any] = {}
    for lib in PACKAGES:
        off, on = samples[(lib, False)], samples[(lib, True)]
        row: dict[str, Any] = {"file_bytes": s["files"][lib].stat().st_size,
                               "off_ms": stats(off, 1e6), "on_ms": stats(on, 1e6)}
        row["delta_ms"] = round(row["on_ms"]["median"] - row["off_ms"]["median"], 3)
        row["ratio"] = round(row["on_ms"]["median"] / row["off_ms"]["median"], 3)
        row["paired_ratio"] = round(statistics.median(a / b for a, b in zip(on, off)), 3)
        result[lib] = row
    # The control: a changed file (one byte appended, still a loadable ELF) is refused only
    # when verifying.
    with open(s["files"]["small"], "ab") as f:
        f.write(b"\0")
    probe = [str(s["py"]), "-c", "import vsmall"]
    refused = subprocess.run(probe, env=envs[True], cwd=s["cwd"], capture_output=True, text=True)
    loaded = subprocess.run(probe, env=envs[False], cwd=s["cwd"], capture_output=True, text=True)
    assert refused.returncode and "libbench.so.1" in refused.stderr, refused.stderr
    assert loaded.returncode == 0, loaded.stderr
    return {"runs": runs, "python": sys.version.split()[0], "library": s["label"],
            "env": {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
            "import_ms": result, "changed_file_refused": True}


def report(r: dict[str, Any], elapsed: float) -> None:
    print(f"dllreg DLLREG_VERIFY=1 cost  (Python {r['python']}, {r['runs']} interleaved fresh-"
          f"interpreter runs each; openblas = {r['library']})\n")
    print("import of a package whose __init__ is the stub import (ms; ratio = on / off medians,")
    print("paired = median over rounds of on / off in the same round)")
    print(f"  {'library':<10}{'bytes':>12}{'off':>8}{'IQR':>7}{'on':>8}{'IQR':>7}{'on-off':>8}"
          f"{'ratio':>7}{'paired':>8}")
    for lib, x in r["import_ms"].items():
        print(f"  {lib:<10}{x['file_bytes']:>12,}{x['off_ms']['median']:8.2f}"
              f"{x['off_ms']['iqr']:7.2f}{x['on_ms']['median']:8.2f}{x['on_ms']['iqr']:7.2f}"
              f"{x['delta_ms']:+8.2f}{x['ratio']:7.2f}{x['paired_ratio']:8.2f}")
    print("  control: a changed library is refused with DLLREG_VERIFY=1, loaded without -> OK\n")
    print(f"total runtime {elapsed:.1f} s")


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__, runs=100)
    ap.add_argument("--quick", action="store_true", help="40 runs per variant")
    args = ap.parse_args(argv)
    runs = 40 if args.quick else args.runs
    return run("dllreg-verify-", args.keep, args.json,
               lambda root, env: measure(runs, setup(root, env), env), report)


if __name__ == "__main__":
    raise SystemExit(main())
