"""The stub's cost on a real ``import numpy``: numpy 2.4.6 devendored onto the registry OpenBLAS64
vs the same wheel as released (OpenBLAS, libgfortran and libquadmath vendored in numpy.libs).

Builds in a temp dir, from the wheels in .cache/downloads (fetched with pip, as the realwheels
tests do, only when missing), two venvs with pip's own installs (``--no-index``, bytecode
compiled by pip):
  vendored   numpy-2.4.6-cp311-...manylinux wheel as released, numpy.libs and all
  dllreg     ``python -m dllreg devendor numpy.whl --with-lib <openblas64 wheel>`` output:
             numpy with its _dlls.py stub, plus dllreg-lib-openblas64 (built by the recipe
             machinery from the cached scipy-openblas64 wheel)
Then ``python -c "import numpy"`` in both (and ``python -c pass``), interleaved in rotated
order. The vendored side also maps libgfortran + libquadmath, which the registry OpenBLAS64
(gfortran linked statically) does not need: that is part of what is compared.
Run: .venv/bin/python benchmarks/numpy_import.py [--runs N] [--json]. See benchmarks/README.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from _bench import ROOT, interleaved, parser, print_ratio_table, ratio_table, run, sh, wall

from dllreg.libwheel.package import plan_library, write_library_wheel
from dllreg.recipes.schema import load_recipes
from dllreg.recipes.source import check_abi, fetch_source, recipe_source

DOWNLOADS = ROOT / ".cache" / "downloads"
NUMPY = "numpy==2.4.6"
NUMPY_GLOB = "numpy-2.4.6-cp311-cp311-manylinux*x86_64.whl"
VARIANTS = ("vendored", "dllreg", "python -c pass")
KEYS = ("openblas", "gfortran", "quadmath")
# Outside the timing: numpy works, and which native libraries the process maps.
PROBE = f"""import json, numpy as np
a = np.arange(9.0).reshape(3, 3) + 3 * np.eye(3)
assert np.allclose(np.linalg.inv(a) @ a, np.eye(3))
maps = {{l.split()[-1] for l in open('/proc/self/maps') if '/' in l.split()[-1]}}
print(json.dumps(sorted(p for p in maps if any(k in p for k in {KEYS!r}))))
"""


def numpy_wheel() -> Path:
    found = sorted(DOWNLOADS.glob(NUMPY_GLOB))
    if not found:
        sh(sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps",
           "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "-d", DOWNLOADS, NUMPY)
        found = sorted(DOWNLOADS.glob(NUMPY_GLOB))
    return found[-1]


def openblas64_wheel(outdir: Path) -> Path:
    """dllreg-lib-openblas64 from the cached scipy-openblas64 wheel, through the recipe (ABI checked)."""
    recipe = load_recipes().require("openblas64")
    cached = sorted(DOWNLOADS.glob("scipy_openblas64-*manylinux*x86_64.whl"))
    source = cached[-1] if cached else fetch_source(recipe, "manylinux_2_28_x86_64", DOWNLOADS)
    files, version = recipe_source(recipe, source)
    plan = plan_library(files, recipe.name, version)
    check_abi(recipe, plan)
    return write_library_wheel(plan, outdir)


def make_venv(path: Path, env: dict[str, str], *install: str | Path) -> tuple[Path, Path]:
    """A venv without pip of its own; this interpreter's pip installs into it (as the tests do).
    ``env`` has no PYTHON* variables, so PYTHONDONTWRITEBYTECODE cannot stop pip compiling."""
    sh(sys.executable, "-m", "venv", "--without-pip", path)
    py = path / "bin" / "python"
    sh(sys.executable, "-m", "pip", "--python", py, "install", "-q", "--disable-pip-version-check",
       "--no-index", *install, env=env)
    site = next((path / "lib").glob("python3*/site-packages"))
    return py, site


def setup(root: Path, env: dict[str, str]) -> dict[str, Any]:
    if sys.version_info[:2] != (3, 11) or sys.platform != "linux":
        raise SystemExit("numpy_import needs CPython 3.11 on Linux x86_64 (the cp311 manylinux wheel)")
    wheel = numpy_wheel()
    lib = openblas64_wheel(root / "libs")
    out = root / "devendored"
    devendor = json.loads(sh(sys.executable, "-m", "dllreg", "devendor", wheel, "--with-lib", lib,
                             "-o", out, "--json", env=env))
    actions = {Path(d["member"]).name.split("-")[0]: d["action"]
               for d in devendor["wheels"][0]["libraries"]}
    venvs = {"vendored": make_venv(root / "vendored", env, wheel),
             "dllreg": make_venv(root / "dllreg", env, "--find-links", out, "numpy")}
    cwd = root / "cwd"
    cwd.mkdir()
    info: dict[str, Any] = {"numpy_wheel": wheel.name, "library_wheel": lib.name,
                            "devendor_actions": actions}
    for name, (py, site) in venvs.items():
        pycs = list((site / "numpy").rglob("*.cpython-311.pyc"))
        if not (site / "numpy" / "__pycache__" / "__init__.cpython-311.pyc").is_file():
            raise SystemExit(f"{name}: pip left numpy without bytecode")
        mapped = json.loads(sh(py, "-c", PROBE, env=env, cwd=cwd))
        info[name] = {"site": str(site), "pyc_files": len(pycs), "mapped": [
            {"path": str(Path(p).relative_to(site)) if p.startswith(str(site)) else p,
             "bytes": Path(p).stat().st_size} for p in mapped]}
    # What each side must map: only the registry copy, or only numpy.libs' own three.
    registry = "dllreg.libs/openblas64/lib/libscipy_openblas64_.so"
    dmaps = [m["path"] for m in info["dllreg"]["mapped"]]
    vmaps = [m["path"] for m in info["vendored"]["mapped"]]
    if dmaps != [registry]:
        raise SystemExit(f"dllreg venv maps {dmaps}, expected only site-packages/{registry}")
    if (len(vmaps) != 3 or not all(p.startswith("numpy.libs/") for p in vmaps)
            or not all(any(k in p for p in vmaps) for k in KEYS)):
        raise SystemExit(f"vendored venv maps {vmaps}, expected numpy.libs' openblas, gfortran, quadmath")
    return {"py": {k: v[0] for k, v in venvs.items()}, "cwd": cwd, "info": info}


def measure(runs: int, s: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    py, cwd = s["py"], s["cwd"]
    cmds = {"vendored": [str(py["vendored"]), "-c", "import numpy"],
            "dllreg": [str(py["dllreg"]), "-c", "import numpy"],
            "python -c pass": [str(py["vendored"]), "-c", "pass"]}
    for _ in range(3):  # warm the page cache
        for cmd in cmds.values():
            wall(cmd, env, cwd)
    fig = ratio_table(interleaved({v: cmds[v] for v in VARIANTS}, runs, env, cwd), "vendored")
    diff = round(fig["dllreg"]["median"] - fig["vendored"]["median"], 3)
    return {"runs": runs, "python": sys.version.split()[0],
            "env": {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
            **s["info"], "whole_process_ms": fig, "dllreg_minus_vendored_ms": diff,
            "goals": {"dllreg_ratio_le_1.03": fig["dllreg"]["paired_ratio"] <= 1.03}}


def report(r: dict[str, Any], elapsed: float) -> None:
    f = r["whole_process_ms"]
    ok = {True: "OK", False: "MISSED"}
    print(f"real numpy import: {r['numpy_wheel']} vendored vs devendored + {r['library_wheel']}")
    print(f"(Python {r['python']}, {r['runs']} interleaved runs each, "
          "OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=1, both installed by pip with bytecode: "
          f"{r['vendored']['pyc_files']} / {r['dllreg']['pyc_files']} numpy .pyc files)\n")
    print("devendor: " + ", ".join(f"{k} {v}" for k, v in r["devendor_actions"].items()))
    for name in ("vendored", "dllreg"):
        print(f"mapped after import numpy, {name}:")
        for m in r[name]["mapped"]:
            print(f"  {m['path']}  ({m['bytes'] / 1e6:.1f} MB)")
    print("(the vendored numpy also maps libgfortran + libquadmath, which the registry OpenBLAS64\n"
          " does not need: their loading is part of what is compared)\n")
    print("whole process: python -c 'import numpy'   (ms; ratio = median / vendored median;")
    print("paired = median over rounds of X / vendored in the same round)")
    print_ratio_table(f)
    print(f"  dllreg - vendored = {r['dllreg_minus_vendored_ms']:+.2f} ms;  "
          f"goal: dllreg paired ratio <= 1.03 -> {ok[r['goals']['dllreg_ratio_le_1.03']]}\n")
    print(f"total runtime {elapsed:.1f} s")


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__, runs=100)
    args = ap.parse_args(argv)

    def body(root: Path, env: dict[str, str]) -> dict[str, Any]:
        return measure(args.runs, setup(root, env), env)

    return run("dllreg-bench-numpy-", args.keep, args.json, body, report)


if __name__ == "__main__":
    raise SystemExit(main())
