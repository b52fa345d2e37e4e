"""Scale: the stub and ``python -m dllreg list`` with 1,000 libraries over 3 site dirs.

Builds everything in a temp dir (gcc, two throwaway venvs, dllreg's own code paths, no network):
  libbench.so.1   one C library, packaged once by dllreg.libwheel.package (name ``zzlibname``)
  env "1"         1 library (lib0999) installed, in the LAST of the 3 site dirs
  env "1000"      lib0000..lib0999 spread over the 3 site dirs, + 200 consumer dist-infos
The installed layout is written directly, as pip would leave it: <site>/dllreg.libs/NAME/
{MANIFEST, lib/...} plus dllreg_lib_NAME-1.0.dist-info/{METADATA,WHEEL,INSTALLER,RECORD}
(RECORD hashes are real). Every library is a copy of the same libbench.so.1 (same SONAME):
the stub refuses two copies of one runtime name in a process, but each run loads only ONE
library, so identical files are fine here (``dllreg check`` would flag them; not run).
Run: .venv/bin/python benchmarks/scale.py [--runs N] [--list-runs N] [--json]. See README.md.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import zipfile
from pathlib import Path

import packaging
from _bench import ROOT, at_least, parser, run, sh, stats, wall

import dllreg
from dllreg.build.consumer import insert_stub_import
from dllreg.libwheel.package import plan_library, read_source, write_library_wheel
from dllreg.names import NativeRequirement
from dllreg.stub import STUB_FILE, render_stub
from dllreg.wheelfile import record_hash

LIB_C = "int bench_answer(void) { return 42; }\n"


def _record_entry(data: bytes) -> str:
    return f"{record_hash(data)},{len(data)}"

PLACEHOLDER = "zzlibname"  # the library name in the template wheel, replaced per library
N_LIBS, N_CONSUMERS, N_SITES = 1000, 200, 3
TARGET = f"lib{N_LIBS - 1:04d}"  # the library the stub requires: in the last site dir
CONSUMER = "benchcons"  # the stubbed package, in the FIRST site dir (the stub looks there first)
# Fresh interpreter: the package dir's finder is warmed apart (a real package needs it for its
# own modules, stub or not), then `import benchcons._dlls` is timed, then a bare dlopen of
# the same file in a second process gives the floor.
DRIVER_STUB = """import sys, time
from importlib.machinery import PathFinder
m = type(sys)({pkg!r}); m.__path__ = [{pkgdir!r}]; sys.modules[{pkg!r}] = m
PathFinder.find_spec({pkg!r} + "._absent", m.__path__)
t0 = time.perf_counter_ns(); import benchcons._dlls as d
t1 = time.perf_counter_ns(); print(t1 - t0, d.path({target!r}))
"""
DRIVER_DLOPEN = """import _imp, os, sys, time
t0 = time.perf_counter_ns()
try:
    _imp.create_dynamic(type(sys.implementation)(name="_x", origin={lib!r}))
except ImportError:
    pass
print(time.perf_counter_ns() - t0)
"""
WALL = {"python -c pass": ["-c", "pass"], "dllreg --version": ["-m", "dllreg", "--version"],
        "dllreg list": ["-m", "dllreg", "list"], "dllreg list --json": ["-m", "dllreg", "list",
                                                                        "--json"]}


def template(root: Path) -> dict[str, bytes]:
    """The library wheel's files (path -> bytes), built once through dllreg's real code path."""
    libsrc, dist = root / "libsrc", root / "dist"
    libsrc.mkdir()
    dist.mkdir()
    (root / "lib.c").write_text(LIB_C)
    sh("gcc", "-O2", "-shared", "-fPIC", "-Wl,-soname,libbench.so.1", root / "lib.c",
       "-o", libsrc / "libbench.so.1")
    wheel = write_library_wheel(plan_library(read_source(libsrc), PLACEHOLDER, "1.0"), dist)
    with zipfile.ZipFile(wheel) as z:
        return {n: z.read(n) for n in z.namelist() if not n.endswith("/RECORD")}


def install_library(site: Path, name: str, files: dict[str, bytes]) -> None:
    """Write what pip would: the files with the name substituted, INSTALLER and a true RECORD."""
    stem = name.replace("-", "_")
    rows, dist_info = [], f"dllreg_lib_{stem}-1.0.dist-info"
    for rel, data in files.items():
        rel = rel.replace(f"dllreg_lib_{PLACEHOLDER}", f"dllreg_lib_{stem}")
        rel = rel.replace(PLACEHOLDER, name)
        if not rel.endswith((".so", ".so.1")):
            data = data.replace(PLACEHOLDER.encode(), name.encode())
        _write(site / rel, data)
        rows.append(f"{rel},{_record_entry(data)}")
    installer = b"pip\n"
    _write(site / dist_info / "INSTALLER", installer)
    rows += [f"{dist_info}/INSTALLER,{_record_entry(installer)}", f"{dist_info}/RECORD,,"]
    _write(site / dist_info / "RECORD", ("\n".join(rows) + "\n").encode())


def install_consumer(site: Path, i: int) -> None:
    """A consumer distribution's dist-info with a dllreg.json of 3 requirements."""
    name, dist_info = f"cons{i:03d}", site / f"cons{i:03d}-1.0.dist-info"
    reqs = [f"lib{(i * 5 + k * 337) % N_LIBS:04d}>=1.0" for k in range(3)]
    files = {"METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
             "INSTALLER": b"pip\n", "dllreg.json": json.dumps({"requires": reqs}).encode()}
    rows = []
    for fname, data in files.items():
        _write(dist_info / fname, data)
        rows.append(f"{dist_info.name}/{fname},{_record_entry(data)}")
    _write(dist_info / "RECORD", ("\n".join([*rows, f"{dist_info.name}/RECORD,,"]) + "\n").encode())


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def make_env(root: Path, n_libs: int, n_consumers: int, files: dict[str, bytes],
             env: dict[str, str]) -> dict[str, object]:
    """A venv --without-pip whose site-packages is site 1; sites 2 and 3 are plain directories
    appended to sys.path by a .pth file in site 1 (as a --user or distro site would be)."""
    venv = root / "venv"
    sh(sys.executable, "-m", "venv", "--without-pip", venv)
    py = venv / "bin" / "python"
    site1 = Path(sh(py, "-c", "import sysconfig; print(sysconfig.get_path('platlib'))").strip())
    sites = [site1, root / "site2", root / "site3"]
    for s in sites[1:]:
        s.mkdir()
    (site1 / "zz_bench_sites.pth").write_text("".join(f"{s}\n" for s in sites[1:]))
    # dllreg itself and its one dependency, installed as plain copies in site 1.
    ignore = shutil.ignore_patterns("__pycache__")
    for mod in (dllreg, packaging):
        shutil.copytree(Path(mod.__file__).parent, site1 / mod.__name__, ignore=ignore)
    # the recipes, which a built wheel carries as the data package dllreg._recipes (pyproject.toml)
    shutil.copytree(ROOT / "recipes", site1 / "dllreg" / "_recipes", ignore=ignore)
    for i in range(N_LIBS - n_libs, N_LIBS):  # contiguous thirds: TARGET in site 3 of 3
        install_library(sites[i * N_SITES // N_LIBS], f"lib{i:04d}", files)
    for i in range(n_consumers):
        install_consumer(sites[i % N_SITES], i)
    pkg = site1 / CONSUMER
    pkg.mkdir()
    (pkg / STUB_FILE).write_text(render_stub(CONSUMER, [NativeRequirement.parse(f"{TARGET}>=1")]))
    (pkg / "__init__.py").write_text(insert_stub_import('"""Scale benchmark consumer."""\n', CONSUMER))
    sh(py, "-m", "compileall", "-q", site1, env=env)
    cwd = root / "cwd"  # empty: `-m` puts the (absolute) cwd first on sys.path
    cwd.mkdir()
    sys_path = json.loads(sh(py, "-c", "import json, sys; print(json.dumps(sys.path))", env=env,
                             cwd=cwd))
    assert [p for p in sys_path if p in map(str, sites)] == list(map(str, sites)), sys_path
    lib = sites[-1] / "dllreg.libs" / TARGET / "lib" / "libbench.so.1"
    listing = json.loads(sh(py, "-m", "dllreg", "list", "--json", env=env, cwd=cwd))
    assert len(listing["libraries"]) == n_libs and not listing["errors"], listing["errors"]
    n_users = sum(len(r["consumers"]) for r in listing["libraries"])
    assert n_users == 3 * n_consumers, n_users
    return {"py": py, "cwd": cwd, "sites": sites, "lib": lib, "pkgdir": pkg}


def measure(runs: int, list_runs: int, envs: dict[str, dict], env: dict[str, str]) -> dict:
    # 1. In-process stub import, env "1" vs env "1000", fresh interpreters, interleaved.
    keys = [(e, k) for e in envs for k in ("stub", "dlopen")]
    samples: dict[tuple[str, str], list[int]] = {k: [] for k in keys}
    for i in range(runs):
        for e, k in keys[i % len(keys):] + keys[:i % len(keys)]:
            v = envs[e]
            drv = (DRIVER_STUB.format(pkg=CONSUMER, pkgdir=str(v["pkgdir"]), target=TARGET)
                   if k == "stub" else DRIVER_DLOPEN.format(lib=str(v["lib"])))
            out = sh(v["py"], "-c", drv, env=env, cwd=v["cwd"]).split()
            if k == "stub":
                assert out[1] == str(v["lib"]), (out, v["lib"])  # found in site 3
            samples[(e, k)].append(int(out[0]))
    ms = 1e6
    fig1: dict[str, dict] = {}
    for e in envs:
        fig1[e] = {k: stats(samples[(e, k)], ms) for k in ("stub", "dlopen")}
        fig1[e]["stub_minus_dlopen"] = round(fig1[e]["stub"]["median"] - fig1[e]["dlopen"]["median"], 4)
    small, big = envs
    ratio = round(fig1[big]["stub"]["median"] / fig1[small]["stub"]["median"], 4)
    paired = round(statistics.median(a / b for a, b in zip(samples[(big, "stub")],
                                                           samples[(small, "stub")])), 4)
    own_ratio = round(fig1[big]["stub_minus_dlopen"] / fig1[small]["stub_minus_dlopen"], 4)
    # 2. Whole-process wall time in env "1000", interleaved in rotated order.
    v = envs[big]
    cmds = {k: [str(v["py"]), *a] for k, a in WALL.items()}
    for cmd in cmds.values():  # warm the page cache and __pycache__
        wall(cmd, env, v["cwd"])
    walls: dict[str, list[int]] = {k: [] for k in cmds}
    order = list(cmds)
    for i in range(list_runs):
        for k in order[i % len(order):] + order[:i % len(order)]:
            walls[k].append(wall(cmds[k], env, v["cwd"]))
    fig2 = {k: stats(w, ms) for k, w in walls.items()}
    return {
        "runs": runs, "list_runs": list_runs, "python": sys.version.split()[0],
        "layout": {"libraries": N_LIBS, "consumers": N_CONSUMERS, "site_dirs": N_SITES,
                   "sys_path": "venv site-packages + 2 dirs appended by a .pth file",
                   "target": f"{TARGET} (site 3 of 3)", "consumer_package": f"{CONSUMER} (site 1)"},
        "stub_in_process_ms": {**fig1, "ratio": ratio, "paired_ratio": paired,
                               "own_cost_ratio": own_ratio},
        "whole_process_ms": fig2,
        "goals": {"stub_ratio_le_1.10": paired <= 1.10,
                  "list_lt_300ms": fig2["dllreg list"]["median"] < 300,
                  "list_json_lt_300ms": fig2["dllreg list --json"]["median"] < 300},
    }


def report(r: dict, elapsed: float) -> None:
    ok = {True: "OK", False: "MISSED"}
    f1, f2, lay = r["stub_in_process_ms"], r["whole_process_ms"], r["layout"]
    print(f"dllreg scale  (Python {r['python']}; {lay['libraries']} libraries, {lay['consumers']} "
          f"consumers over {lay['site_dirs']} site dirs: {lay['sys_path']})\n")
    print(f"1. stub in process: import {CONSUMER}._dlls requiring {lay['target']}, fresh "
          f"interpreters, {r['runs']} interleaved runs (ms)")
    print(f"  {'installed libraries':<22}{'stub':>8}{'q1':>8}{'q3':>8}{'IQR':>7}{'dlopen':>8}"
          f"{'stub-dlopen':>13}")
    for e in ("1", str(N_LIBS)):
        s = f1[e]
        print(f"  {e:<22}{s['stub']['median']:8.3f}{s['stub']['q1']:8.3f}{s['stub']['q3']:8.3f}"
              f"{s['stub']['iqr']:7.3f}{s['dlopen']['median']:8.3f}{s['stub_minus_dlopen']:13.3f}")
    print(f"  ratio {N_LIBS}/1 = {f1['ratio']:.3f} (paired {f1['paired_ratio']:.3f}; stub-dlopen "
          f"only {f1['own_cost_ratio']:.3f})   goal: paired <= 1.10 -> {ok[r['goals']['stub_ratio_le_1.10']]}"
          "\n")
    print(f"2. whole process wall time with {lay['libraries']} libraries / {lay['consumers']} "
          f"consumers, {r['list_runs']} interleaved runs (ms)")
    print(f"  {'command':<22}{'median':>8}{'q1':>8}{'q3':>8}{'IQR':>7}")
    for k, s in f2.items():
        print(f"  {k:<22}{s['median']:8.1f}{s['q1']:8.1f}{s['q3']:8.1f}{s['iqr']:7.1f}")
    print(f"  goal: list < 300 ms -> {ok[r['goals']['list_lt_300ms']]}, list --json < 300 ms -> "
          f"{ok[r['goals']['list_json_lt_300ms']]}\n")
    print(f"total runtime {elapsed:.1f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__, runs=150, runs_help="stub runs per environment")
    ap.add_argument("--list-runs", type=at_least(4), default=40,
                    help="wall-time runs per command (default 40)")
    args = ap.parse_args(argv)
    def body(root: Path, env: dict[str, str]) -> dict:
        files = template(root)
        envs = {}
        for n_libs, n_cons in ((1, 0), (N_LIBS, N_CONSUMERS)):
            (root / f"env{n_libs}").mkdir()
            envs[str(n_libs)] = make_env(root / f"env{n_libs}", n_libs, n_cons, files, env)
        return measure(args.runs, args.list_runs, envs, env)

    return run("dllreg-scale-", args.keep, args.json, body, report)


if __name__ == "__main__":
    raise SystemExit(main())
