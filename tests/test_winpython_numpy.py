"""Real numpy, devendored by dllreg, on the official CPython for Windows under Wine.

numpy 2.0.2's win_amd64 wheels (cp311, cp312; numpy >= 2.2 does not import under Wine 8,
whose ucrtbase lacks crealf) are devendored onto the openblas64 and msvc-runtime library
wheels (``package-lib`` of scipy-openblas64's and msvc-runtime's win_amd64 wheels), installed
with the real Windows pip, and imported by python.exe: the loaded modules (EnumProcessModules
through ctypes, and Wine's +loaddll trace) hold only the registry's OpenBLAS and no numpy.libs
copy. numpy's own numpy.linalg tests then run under the devendored wheel and under the
original one, and must give every test the same outcome.

Under Wine 8 one numpy.linalg test (TestCond::test_sq_cases) kills the process with both
wheels: it takes abs() of complex64 values, which calls ucrtbase's cabsf, unimplemented in
Wine 8.0. winpython.run_pytest records such a test as CRASHED and runs the rest.

The test tools (pytest and its dependencies, win_amd64 where it matters) and the original
numpy are installed once into cached interpreters (.cache/winpython/<tag>-embed-*) by the
Windows pip; each run installs the freshly devendored wheel into a copy of the first.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

import winebed
import winpython
from conftest import run
from test_winpython import MINORS, same_path
from winebed import WineBed, winpath
from winpython import WinPython

pytestmark = [pytest.mark.wine, pytest.mark.realwheels,
              pytest.mark.skipif(winebed.missing_tools() is not None, reason=str(winebed.missing_tools()))]
wine = winebed.wine

NUMPY = "2.0.2"
OPENBLAS64 = ("scipy-openblas64", "0.3.34.481.3")
MSVC = ("msvc-runtime", "14.44.35112")
# pytest and what it needs on Windows (colorama), hypothesis for numpy's conftest; pinned.
TEST_TOOLS = (("pytest", "9.2.0", "py3-none-any"), ("pluggy", "1.7.0", "py3-none-any"),
              ("iniconfig", "2.3.1", "py3-none-any"), ("packaging", "26.4", "py3-none-any"),
              ("colorama", "0.4.6", "py2.py3-none-any"), ("pygments", "2.21.0", "py3-none-any"),
              ("sortedcontainers", "2.4.0", "py2.py3-none-any"), ("hypothesis", "6.170.27", None))
OPENBLAS_DLL = "libscipy_openblas64_.dll"
LINALG_TESTS = "Lib/site-packages/numpy/linalg/tests"


def tag(minor: str) -> str:
    return "cp" + minor.replace(".", "")


def win_wheel(name: str, version: str, tags: str | None, minor: str) -> Path:
    t = tags or f"{tag(minor)}-{tag(minor)}-win_amd64"
    return winpython.download(f"{name}=={version}", f"{name.replace('-', '_')}-{version}-{t}.whl",
                              minor=minor)


def test_tools(minor: str) -> list[Path]:
    return [win_wheel(n, v, t, minor) for n, v, t in TEST_TOOLS]


test_tools.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@pytest.fixture(scope="session")
def library_wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dllreg-lib-openblas64 and dllreg-lib-msvc-runtime, made by package-lib from the
    published win_amd64 wheels (the msvc-runtime DLLs are the same in every cpXY wheel)."""
    out = tmp_path_factory.mktemp("winpy-numpy-libs")
    for recipe, (dist, version), wtag in (("openblas64", OPENBLAS64, "py3-none-win_amd64"),
                                          ("msvc-runtime", MSVC, "cp311-cp311-win_amd64")):
        source = winpython.download(f"{dist}=={version}", f"{dist.replace('-', '_')}-{version}-{wtag}.whl",
                                    minor="3.11")
        run([sys.executable, "-m", "dllreg", "package-lib", recipe, "--from", str(source),
             "--platform", "win_amd64", "-o", str(out)])
    return out


@dataclass(frozen=True)
class NumpyBed:
    minor: str
    original: WinPython  # the published numpy wheel, as pip installs it
    devendored: WinPython  # the dllreg wheel and its two library wheels, installed by pip
    devendor_doc: dict[str, object]

    @property
    def registry(self) -> Path:
        return self.devendored.site_packages / "dllreg.libs"


@pytest.fixture(scope="module", params=MINORS, ids=[tag(m) for m in MINORS])
def numpy_bed(request: pytest.FixtureRequest, wine: WineBed, library_wheels: Path,
              tmp_path_factory: pytest.TempPathFactory) -> NumpyBed:
    minor = request.param
    tmp = tmp_path_factory.mktemp(f"winpy-numpy-{minor}")
    original = win_wheel("numpy", NUMPY, None, minor)
    house = tmp / "house"
    proc = run([sys.executable, "-m", "dllreg", "devendor", str(original),
                *[a for w in sorted(library_wheels.glob("*.whl")) for a in ("--with-lib", str(w))],
                "-o", str(house), "--json"])
    doc = json.loads(proc.stdout)
    tools = test_tools(minor)
    with ThreadPoolExecutor(2) as pool:  # two Windows pips at once: the machine has the cores
        orig = pool.submit(winpython.prepare_with, wine, minor, f"numpy{NUMPY}", [*tools, original])
        base = pool.submit(winpython.prepare_with, wine, minor, "pytest", tools)
        orig_py, base_py = orig.result(), base.result()
    dev = base_py.copy(tmp / "devendored")
    out = winpython.pip(wine, dev, "install", "--no-index", "--no-compile", "--find-links", winpath(house),
                        "numpy").stdout
    for installed in (f"numpy-{NUMPY}", "dllreg-lib-openblas64-", "dllreg-lib-msvc-runtime-"):
        assert installed in out, out
    return NumpyBed(minor, orig_py.copy(tmp / "original"), dev, doc)


PROBE = winpython.LOADED_MODULES + r"""
import json, os, sys
import numpy as np
a = np.random.default_rng(1).random((60, 60))
err = float(abs(a @ np.linalg.inv(a) - np.eye(60)).max())
print(json.dumps({"numpy": np.__file__, "version": np.__version__, "err": err,
                  "mods": loaded_modules()}))
"""


def probe(wine: WineBed, py: WinPython, env: dict[str, str] | None = None) -> tuple[dict[str, object], str]:
    return winpython.run_json(wine, py, PROBE, env=env, cwd=py.home)


def test_devendored_numpy_loads_only_the_registry_openblas(wine: WineBed, numpy_bed: NumpyBed) -> None:
    (w,) = numpy_bed.devendor_doc["wheels"]  # type: ignore[misc]
    assert (w["status"], w["bytes_after"]) == ("devendored", 0)
    doc, stderr = probe(wine, numpy_bed.devendored, {"WINEDEBUG": "+loaddll"})
    py = numpy_bed.devendored
    assert same_path(doc["numpy"], py.site_packages / "numpy" / "__init__.py")
    assert doc["version"] == NUMPY and doc["err"] < 1e-9, doc  # type: ignore[operator]
    mods = [str(m) for m in doc["mods"]]  # type: ignore[attr-defined]
    blas = [m for m in mods if "openblas" in m.lower()]
    registry_blas = numpy_bed.registry / "openblas64" / "bin" / OPENBLAS_DLL
    assert len(blas) == 1 and same_path(blas[0], registry_blas), blas
    assert not [m for m in mods if "numpy.libs" in m.lower()], mods
    assert not (py.site_packages / "numpy.libs").exists()
    traced = [(p.lower(), how) for p, how in winpython.loaddll_trace(stderr) if "openblas" in p.lower()]
    assert traced == [(winpath(registry_blas).lower(), "native")]
    # msvcp140: the registry's file is preloaded; Wine has a builtin of the same name, which it
    # prefers (load order builtin,native) unless told otherwise. Either way one copy, no numpy.libs one.
    msvcp = [m for m in mods if m.lower().endswith("\\msvcp140.dll")]
    assert len(msvcp) == 1, mods
    print(f"{numpy_bed.minor}: {len(mods)} modules; OpenBLAS {blas[0]}; msvcp140 {msvcp[0]}")
    # The control: the original wheel loads its own vendored copy from numpy.libs.
    doc, _ = probe(wine, numpy_bed.original)
    orig_blas = [str(m) for m in doc["mods"] if "openblas" in str(m).lower()]  # type: ignore[attr-defined]
    assert len(orig_blas) == 1 and "\\numpy.libs\\libscipy_openblas64_-" in orig_blas[0], orig_blas


def test_numpy_linalg_tests_as_with_the_original_wheel(wine: WineBed, numpy_bed: NumpyBed) -> None:
    def linalg(py: WinPython) -> dict[str, str]:
        # test_openblas_threading runs a second interpreter and takes ~30 s under Wine: left out
        # of both runs for the time budget (the Linux e2e tests run it on the devendored wheel).
        return winpython.run_pytest(wine, py, ["--rootdir=.", "--pyargs", "numpy.linalg", "--deselect",
                                               f"{LINALG_TESTS}/test_regression.py::TestRegression::"
                                               "test_openblas_threading"],
                                    cwd=py.home, env={"OPENBLAS_NUM_THREADS": "1"})

    with ThreadPoolExecutor(2) as pool:
        dev, orig = pool.map(linalg, [numpy_bed.devendored, numpy_bed.original])
    counts = Counter(dev.values())
    print(f"{numpy_bed.minor} numpy.linalg: devendored {dict(counts)}, "
          f"original {dict(Counter(orig.values()))}")
    assert dev == orig  # every test, the same outcome
    assert counts["PASSED"] > 400 and counts["FAILED"] == counts["ERROR"] == 0, counts
    # The one Wine 8 gap (ucrtbase has no cabsf), the same with both wheels.
    crashed = [t for t, o in dev.items() if o == "CRASHED"]
    assert crashed == [f"{LINALG_TESTS}/test_linalg.py::TestCond::test_sq_cases"]


def test_cached_interpreters_are_not_modified(numpy_bed: NumpyBed) -> None:
    # what a test installs lands in its hard-linked copy only
    cached = winpython.PREPARED / f"{tag(numpy_bed.minor)}-embed-pytest" / "Lib" / "site-packages"
    assert (cached / "pytest").is_dir()
    assert not (cached / "numpy").exists() and not (cached / "dllreg.libs").exists()


BLAS_TESTS = "Lib/site-packages/scipy/linalg/tests/test_blas.py"  # scipy's tests of its BLAS wrappers
SCIPY = "1.14.1"  # built against numpy 2.0; imports under Wine 8 with numpy 2.0.2
OPENBLAS32 = ("scipy-openblas32", "0.3.34.481.3")
SCIPY_PROBE = winpython.LOADED_MODULES + r"""
import json
import numpy as np, scipy, scipy.linalg, scipy.special, scipy.sparse, scipy.sparse.linalg
a = np.random.default_rng(2).random((40, 40))
err = float(abs(scipy.linalg.inv(a) @ a - np.eye(40)).max())
# svds with PROPACK: the extension in scipy/sparse/linalg/_propack/, a namespace folder
s = scipy.sparse.linalg.svds(scipy.sparse.random(30, 30, density=0.3, random_state=3), k=3,
                             solver="propack")[1]
print(json.dumps({"scipy": scipy.__file__, "err": err, "svds": len(s), "gamma": float(scipy.special.gamma(5)),
                  "mods": loaded_modules()}))
"""


def test_devendored_scipy_loads_only_registry_libraries(wine: WineBed, numpy_bed: NumpyBed,
                                                        library_wheels: Path, tmp_path: Path) -> None:
    """Last in the module: it adds scipy to both of the module's interpreters."""
    if numpy_bed.minor != "3.11":
        pytest.skip("scipy is checked on cp311 only (the Windows part's time budget)")
    original = win_wheel("scipy", SCIPY, None, numpy_bed.minor)
    dist, version = OPENBLAS32
    source = winpython.download(f"{dist}=={version}", f"scipy_openblas32-{version}-py3-none-win_amd64.whl",
                                minor=numpy_bed.minor)
    libs = tmp_path / "libs"
    run([sys.executable, "-m", "dllreg", "package-lib", "openblas", "--from", str(source),
         "--platform", "win_amd64", "-o", str(libs)])
    house = tmp_path / "house"
    withs = [*libs.glob("*.whl"), *library_wheels.glob("dllreg_lib_msvc_runtime-*.whl")]
    proc = run([sys.executable, "-m", "dllreg", "devendor", str(original),
                *[a for w in withs for a in ("--with-lib", str(w))], "-o", str(house), "--json"])
    (w,) = json.loads(proc.stdout)["wheels"]
    assert (w["status"], w["bytes_after"]) == ("devendored", 0), w
    with ThreadPoolExecutor(2) as pool:
        installs = [pool.submit(winpython.pip, wine, numpy_bed.devendored, "install", "--no-index",
                                "--no-compile", "--find-links", winpath(house), "scipy"),
                    pool.submit(winpython.pip, wine, numpy_bed.original, "install", "--no-index",
                                "--no-deps", "--no-compile", winpath(original))]
        out = installs[0].result().stdout
        installs[1].result()
    assert f"scipy-{SCIPY}" in out and "dllreg-lib-openblas-" in out, out
    doc, _ = winpython.run_json(wine, numpy_bed.devendored, SCIPY_PROBE, cwd=numpy_bed.devendored.home)
    assert doc["err"] < 1e-9 and doc["svds"] == 3 and doc["gamma"] == 24.0, doc  # type: ignore[operator]
    mods = [str(m) for m in doc["mods"]]  # type: ignore[attr-defined]
    blas = sorted(m.lower() for m in mods if "openblas" in m.lower())
    reg = numpy_bed.registry
    assert blas == sorted(winpath(p).lower() for p in (reg / "openblas" / "bin" / "libscipy_openblas.dll",
                                                       reg / "openblas64" / "bin" / OPENBLAS_DLL)), blas
    assert not [m for m in mods if "\\numpy.libs\\" in m.lower() or "\\scipy.libs\\" in m.lower()], mods
    # The original loads its own copy from scipy.libs, beside numpy's from numpy.libs.
    doc, _ = winpython.run_json(wine, numpy_bed.original, SCIPY_PROBE, cwd=numpy_bed.original.home)
    orig = [str(m) for m in doc["mods"] if "openblas" in str(m).lower()]  # type: ignore[attr-defined]
    assert len(orig) == 2 and any("\\scipy.libs\\" in m for m in orig), orig

    def blas_tests(py: WinPython) -> dict[str, str]:
        return winpython.run_pytest(wine, py, ["--rootdir=.", BLAS_TESTS], cwd=py.home,
                                    env={"OPENBLAS_NUM_THREADS": "1"})

    with ThreadPoolExecutor(2) as pool:
        dev_out, orig_out = pool.map(blas_tests, [numpy_bed.devendored, numpy_bed.original])
    counts = Counter(dev_out.values())
    print(f"scipy.linalg test_blas: devendored {dict(counts)}, original {dict(Counter(orig_out.values()))}, "
          f"crashed (both): {[t for t, o in dev_out.items() if o == 'CRASHED']}")
    assert dev_out == orig_out  # every test, the same outcome
    assert counts["PASSED"] >= 50 and not counts["FAILED"] and not counts["ERROR"], counts
