"""Build time through the ``dllreg.build`` wrapper vs the same project on its plain backend.

Isolated ``pip wheel --no-deps`` builds (pip fetches each backend into a fresh build env, as
for any user), in a temp dir, of three consumers of ``qsum`` (a gcc library packaged by
``dllreg package-lib``):
  meson-python        tests/packages/meson_consumer; plain: mesonpy, PKG_CONFIG_PATH by hand
  scikit-build-core   tests/packages/skbuild_consumer; plain: scikit_build_core.build,
                      CMAKE_PREFIX_PATH by hand
  hatchling           a pure ctypes consumer; plain: hatchling.build
Each wrapped project is built once untimed first (fills pip's cache with the backend and
build tools, which the plain build needs too); then rounds alternate the order of the pair.
The wrapped builds also fetch this checkout's dllreg wheel (built into the temp dir).
Run: .venv/bin/python benchmarks/build_overhead.py [--runs N] [--json]. See README.md.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

from _bench import ROOT, install_wheels, parser, run, sh

from dllreg.binary.elf import read_elf

PACKAGES = ROOT / "tests" / "packages"
QSUM_C = "long qsum(long n){long s=0;for(long i=1;i<=n;i++)s+=i;return s;}\n"
HATCH_TOML = """\
[build-system]
requires = ["dllreg", "hatchling"]
build-backend = "dllreg.build"
[project]
name = "qct"
version = "0.1"
[tool.dllreg]
backend = "hatchling.build"
requires = ["qsum>=3"]
dlopen = ["qsum"]
"""
HATCH_INIT = '''"""qsum through ctypes: the path comes from the dllreg stub."""
from . import _dlls

import ctypes

qsum = ctypes.CDLL(_dlls.path("qsum")).qsum
'''


def unwrap(toml: str, backend: str) -> str:
    """The same pyproject on the plain backend: no dllreg requirement, no [tool.dllreg]."""
    text = toml.replace('"dllreg", ', "").replace('"dllreg.build"', f'"{backend}"')
    return text[: text.index("[tool.dllreg]")] if "[tool.dllreg]" in text else text


def projects(root: Path, qsum: Path) -> dict[str, dict[str, tuple[Path, dict[str, str]]]]:
    """backend -> {"dllreg.build": (project, env), "plain": (project, env)}."""
    ignore = shutil.ignore_patterns(".mesonpy*", "build", "_dlls.py", "__pycache__")
    out: dict[str, dict[str, tuple[Path, dict[str, str]]]] = {}
    plain_env = {"meson-python": {"PKG_CONFIG_PATH": str(qsum / "lib" / "pkgconfig")},
                 "scikit-build-core": {"CMAKE_PREFIX_PATH": str(qsum)}, "hatchling": {}}
    for label, src, backend in (("meson-python", "meson_consumer", "mesonpy"),
                                ("scikit-build-core", "skbuild_consumer", "scikit_build_core.build"),
                                ("hatchling", None, "hatchling.build")):
        pair = {}
        for variant in ("dllreg.build", "plain"):
            proj = root / "src" / label / variant
            if src:
                shutil.copytree(PACKAGES / src, proj, ignore=ignore)
            else:
                (proj / "qct").mkdir(parents=True)
                (proj / "pyproject.toml").write_text(HATCH_TOML)
                (proj / "qct" / "__init__.py").write_text(HATCH_INIT)
            if variant == "plain":
                toml = proj / "pyproject.toml"
                toml.write_text(unwrap(toml.read_text(), backend))
            pair[variant] = (proj, plain_env[label] if variant == "plain" else {})
        out[label] = pair
    return out


def setup(root: Path) -> tuple[str, Path]:
    """PIP_FIND_LINKS for the builds (this checkout's dllreg wheel, the qsum library wheel)
    and the installed qsum library directory."""
    house, libs, src = root / "house", root / "libs", root / "qsum-3.1.4"
    (src / "lib").mkdir(parents=True)
    (src / "include").mkdir()
    (src / "include" / "qsum.h").write_text("long qsum(long n);\n")
    (root / "qsum.c").write_text(QSUM_C)
    sh("gcc", "-O2", "-shared", "-fPIC", "-Wl,-soname,libqsum.so.3", root / "qsum.c",
       "-o", src / "lib" / "libqsum.so.3")
    sh(sys.executable, "-m", "dllreg", "package-lib", "qsum", "--version", "3.1.4",
       "--from", src, "-o", libs)
    # setuptools would leave build/ in the checkout: point it at the temp dir.
    cfg = root / "dllreg-build.cfg"
    cfg.write_text(f"[build]\nbuild_base = {root / 'b'}\n[egg_info]\negg_base = {root}\n")
    sh(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", house, ROOT,
       env={**os.environ, "DIST_EXTRA_CONFIG": str(cfg)})
    install_wheels(list(libs.glob("dllreg_lib_qsum-*.whl")), root / "qsum-site")
    links = " ".join(filter(None, [str(house), str(libs), os.environ.get("PIP_FIND_LINKS")]))
    return links, root / "qsum-site" / "dllreg.libs" / "qsum"


def build(proj: Path, out: Path, links: str, env: dict[str, str], extra: dict[str, str]) -> float:
    start = time.perf_counter()
    sh(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, proj,
       env={**env, "PIP_FIND_LINKS": links, **extra})
    return time.perf_counter() - start


def measure(root: Path, runs: int, env: dict[str, str]) -> dict[str, Any]:
    links, qsum = setup(root)
    pairs = projects(root, qsum)
    for label, pair in pairs.items():  # warm pip's cache; the wheel is checked below
        proj, extra = pair["dllreg.build"]
        build(proj, root / "out" / label / "warm", links, env, extra)
    times: dict[str, dict[str, list[float]]] = {b: {v: [] for v in p} for b, p in pairs.items()}
    for i in range(runs):
        for label, pair in pairs.items():
            for variant in (list(pair) if i % 2 == 0 else list(pair)[::-1]):
                proj, extra = pair[variant]
                times[label][variant].append(
                    build(proj, root / "out" / label / f"{variant}-{i}", links, env, extra))
    result: dict[str, Any] = {}
    for label, by_variant in times.items():
        wrapped, plain = (statistics.median(by_variant[v]) for v in ("dllreg.build", "plain"))
        result[label] = {"dllreg.build_s": round(wrapped, 2), "plain_s": round(plain, 2),
                         "overhead_s": round(wrapped - plain, 2), "ratio": round(wrapped / plain, 3),
                         "all_s": {v: [round(t, 2) for t in ts] for v, ts in by_variant.items()},
                         "wheel": check(root / "out" / label)}
    return {"runs": runs, "python": sys.version.split()[0], "backends": result}


def check(out: Path) -> dict[str, Any]:
    """What the wrapper's time buys: the stub, the library requirement, no build RUNPATH."""
    facts: dict[str, Any] = {}
    for variant in ("dllreg.build", "plain"):
        (wheel,) = (out / f"{variant}-0").glob("*.whl")
        with zipfile.ZipFile(wheel) as zf:
            names = zf.namelist()
            meta = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
            sos = [zf.read(n) for n in names if n.endswith(".so")]
        has_stub = any(n.endswith("/_dlls.py") for n in names)
        assert has_stub is (variant == "dllreg.build"), (wheel, names)
        assert ("Requires-Dist: dllreg-lib-qsum" in meta) is has_stub, meta
        facts[variant] = {"runpath": sorted({p for so in sos for p in (*read_elf(so).rpath,
                                                                       *read_elf(so).runpath)})}
    return facts


def report(r: dict[str, Any], elapsed: float) -> None:
    print(f"dllreg build overhead  (Python {r['python']}; isolated pip wheel --no-deps, median "
          f"of {r['runs']} alternating runs each, after one untimed warm-up build)\n")
    print(f"  {'backend':<20}{'dllreg.build':>13}{'plain':>8}{'overhead':>10}{'ratio':>7}  runs (s)")
    for label, x in r["backends"].items():
        runs = "; ".join(f"{v} {', '.join(f'{t:.1f}' for t in ts)}" for v, ts in x["all_s"].items())
        print(f"  {label:<20}{x['dllreg.build_s']:12.2f}s{x['plain_s']:7.2f}s"
              f"{x['overhead_s']:+9.2f}s{x['ratio']:7.2f}  {runs}")
    print("\n  RUNPATH left in the extension (dllreg.build removes build-time paths):")
    for label, x in r["backends"].items():
        for variant, facts in x["wheel"].items():
            if label != "hatchling":
                print(f"  {label:<20}{variant:<14}{facts['runpath'] or '-'}")
    print(f"\ntotal runtime {elapsed:.1f} s")


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__, runs=3, runs_help="timed builds per variant", min_runs=1)
    args = ap.parse_args(argv)
    return run("dllreg-buildtime-", args.keep, args.json,
               lambda root, env: measure(root, args.runs, env), report)


if __name__ == "__main__":
    raise SystemExit(main())
