"""Issue 12's field proof: a real stack of 21 popular native wheels through ``dllreg install``
and ``dllreg devendor``, against the same wheels installed by pip as released.

The stack is ``tests/realstack.txt`` (cp311 manylinux x86_64, every wheel pinned, downloaded once
into .cache/downloads/stack; tests/realstack.py). Everything is installed from that local cache
(``--no-index --find-links``), so the network does not dominate the times. Each round:
  pip      ``pip download`` of the requirements into a fresh directory, then ``pip install`` of
           them into a fresh ``venv --without-pip`` (this interpreter's pip, ``--python``)
  dllreg   ``python -m dllreg install --python VENV --no-index -f STACK`` of the same
           requirements into another fresh venv (pip download, devendor, pip install)
  devendor ``python -m dllreg devendor`` of the stack's platform wheels into a fresh directory,
           with the two registry sources' library wheels at hand (``--find-libs``)
the three interleaved in rotated order over ``--runs`` rounds. Peak memory is the ``ru_maxrss``
of the dllreg process (os.wait4: the largest of it and of the processes it waited for). Then, on the
last round's venvs:
  * vendored MB: native libraries installed in ``<x>.libs/`` dirs, ``dllreg.libs/*/lib/`` and
    loose ``lib*.so.N`` files (pymupdf's libmupdf), before (pip) and after (dllreg); the ideal is
    one copy per (stem, ABI major) of the originals (every group's bytes but its largest copy);
  * redundant mapped copies: every package imported in one process, the files mapped under the
    venv counted per (stem, ABI major) from /proc/self/maps, copies beyond the first.
Run: .venv/bin/python benchmarks/real_stack.py [--runs N] [--json]. ~10 min a round here.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _bench import ROOT, parser, run, sh

sys.path.insert(0, str(ROOT / "tests"))
import realstack

GOALS = {"saving_ge_80pct": 0.8, "install_ratio_le_1.3": 1.3, "peak_mb_lt_600": 600}


def timed(cmd: list[str | Path], env: dict[str, str]) -> tuple[float, int]:
    """(wall seconds, peak RSS in kB of the process itself) of a command that must succeed."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(c) for c in cmd], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{out[-4000:]}")
    return dt, usage.ru_maxrss


def venv(path: Path) -> Path:
    sh(sys.executable, "-m", "venv", "--without-pip", path)
    return path / "bin" / "python"


def site_of(py: Path) -> Path:
    return next((py.parent.parent / "lib").glob("python3*/site-packages"))


def vendored_files(site: Path) -> list[Path]:
    """Native library files that are vendored or registry copies (not extension modules)."""
    out = []
    for p in site.rglob("*.so*"):
        rel = p.relative_to(site).parts
        if not p.is_file() or p.is_symlink():
            continue
        in_libs = rel[0].endswith(".libs") and rel[0] != "dllreg.libs"
        registry = rel[0] == "dllreg.libs" and "lib" in rel[2:-1]
        loose = realstack.library_key(p.name) is not None and p.name.startswith("lib") and ".so." in p.name
        if in_libs or registry or loose:
            out.append(p)
    return out


def library_bytes(site: Path) -> dict[str, Any]:
    files = vendored_files(site)
    groups: dict[tuple[str, str], list[int]] = {}
    for p in files:
        key = realstack.library_key(p.name)
        groups.setdefault(key or (p.name, ""), []).append(p.stat().st_size)
    ideal = sum(sum(v) - max(v) for v in groups.values())
    return {"bytes": sum(p.stat().st_size for p in files), "files": len(files),
            "one_copy_saving": ideal}


def probe(py: Path, env: dict[str, str]) -> dict[str, Any]:
    out = sh(py, "-c", realstack.PROBE, ",".join(realstack.IMPORTS.values()), "ssl-last", "-", env=env)
    doc: dict[str, Any] = json.loads(out)
    under = str(site_of(py))
    doc["redundant"] = realstack.redundant(doc["maps"], under)
    return doc


def body(root: Path, env: dict[str, str], runs: int) -> dict[str, Any]:
    if (why := realstack.supported()) is not None:
        raise SystemExit(f"real_stack: {why}")
    stack = realstack.download()
    reqs = realstack.requirements()
    platform_wheels = [w for w in realstack.stack_wheels(stack) if not w.name.endswith("-none-any.whl")
                       and not w.name.startswith("scipy_openblas")]
    # devendor alone gets the registry libraries as install would fetch them (built once here)
    libs = root / "libs"
    for name, wheel in (("openblas64", "scipy_openblas64"), ("openblas", "scipy_openblas32")):
        (src,) = stack.glob(f"{wheel}-*.whl")
        sh(sys.executable, "-c", _LIB_SCRIPT, name, src, libs, env=env)
    pipcmd = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    walls: dict[str, list[float]] = {"pip download": [], "pip install": [], "pip total": [],
                                     "dllreg install": [], "dllreg devendor": []}
    peaks: dict[str, list[int]] = {"dllreg install": [], "dllreg devendor": []}
    last: dict[str, Path] = {}
    for i in range(runs):
        variants = ["pip", "dllreg", "devendor"]
        k = i % len(variants)
        for v in variants[k:] + variants[:k]:
            here = root / f"r{i}-{v}"
            if v == "pip":
                py = venv(here / "venv")
                t1, _ = timed([*pipcmd, "--python", py, "download", "-q", "--no-index", "--only-binary=:all:",
                               "--find-links", stack, "-d", here / "dl", *reqs], env)
                t2, _ = timed([*pipcmd, "--python", py, "install", "-q", "--no-index", "--only-binary=:all:",
                               "--find-links", here / "dl", *reqs], env)
                walls["pip download"].append(t1)
                walls["pip install"].append(t2)
                walls["pip total"].append(t1 + t2)
                last["pip"] = py
            elif v == "dllreg":
                py = venv(here / "venv")
                t, peak = timed([sys.executable, "-m", "dllreg", "install", "-q", "--python", py,
                                 "--no-index", "-f", stack, *reqs], env)
                walls["dllreg install"].append(t)
                peaks["dllreg install"].append(peak)
                last["dllreg"] = py
            else:
                t, peak = timed([sys.executable, "-m", "dllreg", "devendor", *platform_wheels,
                                 "-o", here / "out", "--find-libs", libs], env)
                walls["dllreg devendor"].append(t)
                peaks["dllreg devendor"].append(peak)
                if i < runs - 1:
                    subprocess.run(["rm", "-rf", str(here)], check=False)
    before, after = library_bytes(site_of(last["pip"])), library_bytes(site_of(last["dllreg"]))
    maps_before, maps_after = probe(last["pip"], env), probe(last["dllreg"], env)
    med = {k: round(statistics.median(v), 1) for k, v in walls.items()}
    paired = statistics.median(d / p for d, p in zip(walls["dllreg install"], walls["pip total"]))
    saved = before["bytes"] - after["bytes"]
    peak_mb = {k: round(max(v) / 1024, 1) for k, v in peaks.items()}
    result = {
        "wheels": len(realstack.stack_wheels(stack)), "platform_wheels": len(platform_wheels),
        "requirements": reqs, "runs": runs, "wall_s": med,
        "wall_s_all": {k: [round(x, 1) for x in v] for k, v in walls.items()},
        "install_ratio_paired": round(paired, 3), "peak_rss_mb": peak_mb,
        "vendored": {"before": before, "after": after, "saved": saved,
                     "saving_of_one_copy_ideal": round(saved / before["one_copy_saving"], 3)
                     if before["one_copy_saving"] else None},
        "redundant_mapped": {"before": maps_before["redundant"], "after": maps_after["redundant"],
                             "before_total": sum(maps_before["redundant"].values()),
                             "after_total": sum(maps_after["redundant"].values())},
        "import_errors": {"before": maps_before["import_errors"], "after": maps_after["import_errors"]},
        "openssl": {"before": maps_before["openssl"], "after": maps_after["openssl"]},
    }
    ratio = result["vendored"]["saving_of_one_copy_ideal"]
    result["goals"] = {
        "saving_ge_80pct": ratio is not None and ratio >= GOALS["saving_ge_80pct"],
        "install_ratio_le_1.3": paired <= GOALS["install_ratio_le_1.3"],
        "peak_mb_lt_600": max(peak_mb.values()) < GOALS["peak_mb_lt_600"],
        "redundant_after_0": result["redundant_mapped"]["after_total"] == 0,
    }
    return result


# A library wheel from a registry source through the recipe (ABI checked), as install fetches it.
_LIB_SCRIPT = """import sys
from pathlib import Path
from dllreg.libwheel.package import plan_library, write_library_wheel
from dllreg.recipes.source import check_abi, recipe_source
from dllreg.recipes.schema import load_recipes
recipe = load_recipes().require(sys.argv[1])
files, version = recipe_source(recipe, Path(sys.argv[2]))
plan = plan_library(files, recipe.name, version)
check_abi(recipe, plan)
write_library_wheel(plan, Path(sys.argv[3]))
"""


def report(r: dict[str, Any], elapsed: float) -> None:
    w, v, m = r["wall_s"], r["vendored"], r["redundant_mapped"]
    ok = {True: "OK", False: "MISSED"}
    print(f"real stack: {r['wheels']} wheels ({r['platform_wheels']} platform wheels), "
          f"{len(r['requirements'])} requirements, {r['runs']} round(s), from the local cache "
          f"(--no-index --find-links); {elapsed / 60:.1f} min")
    print(f"  pip download + pip install: {w['pip download']:.1f} + {w['pip install']:.1f} = "
          f"{w['pip total']:.1f} s")
    print(f"  dllreg install:             {w['dllreg install']:.1f} s  (paired ratio "
          f"{r['install_ratio_paired']:.2f}, goal <= 1.3: {ok[r['goals']['install_ratio_le_1.3']]})")
    print(f"  dllreg devendor alone:      {w['dllreg devendor']:.1f} s")
    print(f"  peak memory: devendor {r['peak_rss_mb']['dllreg devendor']:.0f} MB, install "
          f"{r['peak_rss_mb']['dllreg install']:.0f} MB (goal < 600: {ok[r['goals']['peak_mb_lt_600']]})")
    b, a = v["before"], v["after"]
    print(f"  vendored native libraries installed: {b['bytes'] / 1e6:.1f} MB in {b['files']} files -> "
          f"{a['bytes'] / 1e6:.1f} MB in {a['files']} files; saved {v['saved'] / 1e6:.1f} MB of the "
          f"{b['one_copy_saving'] / 1e6:.1f} MB one copy per (stem, ABI major) would save "
          f"({v['saving_of_one_copy_ideal']:.0%}, goal >= 80%: {ok[r['goals']['saving_ge_80pct']]})")
    print(f"  redundant mapped copies, everything imported: {m['before_total']} -> {m['after_total']} "
          f"({ok[r['goals']['redundant_after_0']]} for 0)")
    print(f"    before: {', '.join(f'{k} x{n + 1}' for k, n in m['before'].items()) or 'none'}")
    print(f"    after:  {', '.join(f'{k} x{n + 1}' for k, n in m['after'].items()) or 'none'}")
    errs = r["import_errors"]
    if errs["before"] or errs["after"]:
        print(f"  import errors: before {errs['before']}, after {errs['after']}")
    print(f"  CPython's ssl: {r['openssl']['before']} -> {r['openssl']['after']}")


def main() -> int:
    ap = parser(__doc__, runs=1, runs_help="interleaved rounds (each installs the stack twice)", min_runs=1)
    a = ap.parse_args()
    return run("dllreg-realstack-", a.keep, a.json, lambda root, env: body(root, env, a.runs), report)


if __name__ == "__main__":
    raise SystemExit(main())
