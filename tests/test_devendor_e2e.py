"""devendor end to end: devendored wheels installed with real pip into fresh venvs, imported, and
/proc/self/maps showing the registry copies only. The real numpy wheel is marked realwheels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import CACHE, run
from dllreg.cli.main import main
from test_devendor import library_wheel, needs_gcc, recipes, vendored_wheel

__all__ = ["recipes"]  # the fixture, shared with test_devendor

DOWNLOADS = CACHE / "downloads"
NUMPY = "numpy==2.4.6"
MAPS = """
import json
maps = {l.split()[-1] for l in open('/proc/self/maps') if '/' in l.split()[-1]}
print(json.dumps(sorted(p for p in maps if any(k in p for k in KEYS))))
"""


class Env:
    """A venv without pip of its own: the test runner's pip installs into it (--python)."""

    def __init__(self, path: Path) -> None:
        run([sys.executable, "-m", "venv", "--without-pip", str(path)])
        self.python = str(path / "bin" / "python")
        self.site = next((path / "lib").glob("python3*/site-packages"))

    def install(self, *args: str, index: bool = False) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "pip", "--python", self.python, "install", "-q",
               "--disable-pip-version-check", *([] if index else ["--no-index"]), *args]
        return run(cmd)

    def mapped(self, code: str, keys: tuple[str, ...]) -> tuple[str, list[str]]:
        """Run ``code``; return its stdout (without the last line) and the mapped files matching keys."""
        script = textwrap.dedent(code) + f"\nKEYS = {keys!r}\n" + MAPS
        out = run([self.python, "-c", script], env={**os.environ, "OPENBLAS_NUM_THREADS": "1"}).stdout
        *lines, last = out.strip().splitlines()
        return "\n".join(lines), json.loads(last)


pytestmark = pytest.mark.e2e


@needs_gcc
def test_substituted_library_is_the_only_copy_mapped(tmp_path: Path, recipes: Path) -> None:
    wheel = vendored_wheel(tmp_path)
    lib = library_wheel(tmp_path)
    out = tmp_path / "out"
    assert main(["devendor", str(wheel), "-o", str(out), "--with-lib", str(lib),
                 "--recipes", str(recipes)]) == 0
    env = Env(tmp_path / "venv")
    env.install("--find-links", str(out), "pkga")
    text, maps = env.mapped("import pkga; print(pkga.call())", ("libfoo",))
    assert text == "14"
    assert maps == [str(env.site / "dllreg.libs" / "foo" / "lib" / "libfoo.so.1")]
    assert not (env.site / "pkga.libs").exists()


@needs_gcc
def test_two_wheels_share_one_packaged_copy(tmp_path: Path, recipes: Path) -> None:
    out = tmp_path / "out"
    wheels = [vendored_wheel(tmp_path, d) for d in ("pkga", "pkgb")]
    assert main(["devendor", *map(str, wheels), "-o", str(out), "--recipes", str(recipes)]) == 0
    libs = sorted(p.name for p in out.glob("dllreg_lib_*.whl"))
    # the recipe (no PyPI source) vouches for libfoo.so.1: its name, the build tag as label
    assert len(libs) == 1 and libs[0].startswith("dllreg_lib_foo-1+b")
    env = Env(tmp_path / "venv")
    env.install("--find-links", str(out), "pkga", "pkgb")
    text, maps = env.mapped("import pkga, pkgb; print(pkga.call() + pkgb.call())", ("libfoo",))
    assert text == "28"
    assert maps == [str(env.site / "dllreg.libs" / "foo" / "lib" / "libfoo.so.1")]


@needs_gcc
def test_packaged_chain_without_any_recipe(tmp_path: Path) -> None:
    """No recipe at all: libfoo and the libbar it needs become two library wheels, foo requiring bar;
    their SONAMEs, DT_NEEDED and RPATHs are rewritten."""
    empty = tmp_path / "no-recipes"
    empty.mkdir()
    bar = {"libbar-99aa88bb.so.2": "int bar(void){return 5;}\n"}
    code = "int bar(void);\nint foo(int x){return 3*x+bar()-4;}\nint foo_extra(void){return 7;}\n"
    wheel = vendored_wheel(tmp_path, lib_code=code, extra_libs=bar)
    out = tmp_path / "out"
    assert main(["devendor", str(wheel), "-o", str(out), "--recipes", str(empty)]) == 0
    env = Env(tmp_path / "venv")
    env.install("--find-links", str(out), "pkga")
    # The packaged libraries are required as ==V (libwheel.naming): the stub's fast path
    # decides that itself, so the import never compiles the stub's cold section.
    text, maps = env.mapped("import pkga; print(pkga.call(), '_require' in vars(pkga._dlls))",
                            ("libfoo", "libbar"))
    assert text == "14 False"
    bar, foo = sorted((env.site / "dllreg.libs").iterdir())
    assert bar.name.startswith("bar-2-") and foo.name.startswith("foo-1-")
    assert maps == [str(bar / "lib" / f"libbar-{bar.name[-8:]}.so.2"),
                    str(foo / "lib" / f"libfoo-{foo.name[-8:]}.so.1")]


@needs_gcc
def test_rerun_into_the_input_directory_is_refused(tmp_path: Path, recipes: Path) -> None:
    wheel = vendored_wheel(tmp_path)
    before = wheel.read_bytes()
    assert main(["devendor", str(wheel), "-o", str(wheel.parent), "--recipes", str(recipes)]) == 2
    assert wheel.read_bytes() == before


# --- the real numpy wheel -----------------------------------------------------------------------


def _numpy_wheel() -> Path:
    pattern = "numpy-2.4.6-cp311-cp311-manylinux*x86_64.whl"
    found = sorted(DOWNLOADS.glob(pattern))
    if not found:
        run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps",
             "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "-d", str(DOWNLOADS), NUMPY])
        found = sorted(DOWNLOADS.glob(pattern))
    return found[-1]


def _openblas64_wheel(outdir: Path) -> Path:
    """dllreg-lib-openblas64 from scipy-openblas64, built by the recipe machinery (cached source)."""
    return _recipe_wheel("openblas64", "scipy_openblas64-*manylinux*x86_64.whl", outdir)


@pytest.mark.realwheels
@pytest.mark.skipif(sys.version_info[:2] != (3, 11) or sys.platform != "linux", reason="cp311 Linux wheel")
def test_real_numpy_on_the_registry_openblas64(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    numpy = _numpy_wheel()
    lib = _openblas64_wheel(tmp_path / "libs")
    out = tmp_path / "out"
    assert main(["devendor", str(numpy), "-o", str(out), "--with-lib", str(lib), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (w,) = doc["wheels"]
    actions = {Path(d["member"]).name.split("-")[0]: d["action"] for d in w["libraries"]}
    assert actions == {"libscipy_openblas64_": "substitute", "libgfortran": "drop", "libquadmath": "drop"}
    assert w["requires"] == ["openblas64>=0.3.34.481.3"] and w["bytes_after"] == 0
    print(f"numpy: {w['bytes_before']} bytes vendored before, {doc['bytes']['after']} after "
          f"(registry OpenBLAS {doc['substitutes'][0]['bytes']})", file=sys.stderr)

    env = Env(tmp_path / "venv")
    env.install("--find-links", str(out), "numpy")
    text, maps = env.mapped("""
        import numpy as np
        rng = np.random.default_rng(0)
        a = rng.random((200, 200)) + 200 * np.eye(200)
        print(np.allclose(a @ np.linalg.inv(a), np.eye(200)), np.allclose(np.linalg.solve(a, a[:, 0]),
              np.eye(200)[:, 0]))
        print(np.linalg.eigvalsh(a + a.T).shape, np.linalg.svd(a[:20, :10], compute_uv=False).shape)
        """, ("openblas", "gfortran", "quadmath"))
    assert text.splitlines() == ["True True", "(200,) (10,)"]
    assert maps == [str(env.site / "dllreg.libs" / "openblas64" / "lib" / "libscipy_openblas64_.so")]
    assert not (env.site / "numpy.libs").exists()

    # numpy's own linalg test-suite, when pytest and hypothesis can be installed
    try:
        env.install("pytest", "hypothesis", "threadpoolctl", index=True)
    except AssertionError as exc:
        pytest.skip(f"pytest/hypothesis not installable here: {str(exc)[-200:]}")
    # What runs is the registry's OpenBLAS (threadpoolctl reads the loaded library itself);
    # numpy.show_config() reports what numpy was built against, which devendoring cannot change.
    report = subprocess.run([env.python, "-c", textwrap.dedent("""
        import json, numpy, threadpoolctl
        info = [i for i in threadpoolctl.threadpool_info() if i["internal_api"] == "openblas"]
        cfg = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        print(json.dumps([info, cfg]))
        """)], capture_output=True, text=True, cwd=tmp_path, check=True,
                            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"}).stdout
    (blas,), cfg = json.loads(report)
    registry_copy = env.site / "dllreg.libs" / "openblas64" / "lib" / "libscipy_openblas64_.so"
    assert blas["filepath"] == str(registry_copy)
    assert blas["version"].startswith("0.3.34") and blas["prefix"] == "libscipy_openblas"
    print(f"threadpoolctl: {blas['filepath']} {blas['version']}; numpy.show_config() blas "
          f"(build time): {cfg.get('name')} {cfg.get('version')}", file=sys.stderr)
    tests = env.site / "numpy" / "linalg" / "tests"
    proc = subprocess.run([env.python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", str(tests)],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    summary = proc.stdout.strip().splitlines()[-1:]
    print(f"numpy/linalg/tests on the devendored numpy: {summary}", file=sys.stderr)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


def _recipe_wheel(name: str, pattern: str, outdir: Path) -> Path:
    """The recipe's library wheel, made as devendor --fetch and install make it."""
    from dllreg.convert.read import planned_library
    from dllreg.libwheel.package import write_library_wheel
    from dllreg.recipes.schema import load_recipes
    from dllreg.recipes.source import fetch_source, has_source

    recipe = load_recipes().require(name)
    assert has_source(recipe, "manylinux_2_28_x86_64")
    cached = sorted(DOWNLOADS.glob(pattern))
    source = cached[-1] if cached else fetch_source(recipe, "manylinux_2_28_x86_64", DOWNLOADS)
    plan, planned = planned_library(recipe, source, outdir)
    written = write_library_wheel(plan, outdir)
    assert Path(planned.path) == written and planned.manifest == plan.manifest
    return written


@pytest.mark.realwheels
@pytest.mark.skipif(sys.version_info[:2] != (3, 11) or sys.platform != "linux", reason="cp311 Linux wheels")
def test_real_numpy_and_scipy_share_one_gfortran(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    numpy = _numpy_wheel()
    scipy = sorted(DOWNLOADS.glob("scipy-1.17.1-cp311-cp311-manylinux*x86_64.whl"))
    if not scipy:
        run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps",
             "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "-d", str(DOWNLOADS),
             "scipy==1.17.1"])
        scipy = sorted(DOWNLOADS.glob("scipy-1.17.1-cp311-cp311-manylinux*x86_64.whl"))
    libs = tmp_path / "libs"
    _recipe_wheel("openblas64", "scipy_openblas64-*manylinux*x86_64.whl", libs)
    _recipe_wheel("openblas", "scipy_openblas32-*manylinux*x86_64.whl", libs)
    out = tmp_path / "out"
    assert main(["devendor", str(numpy), str(scipy[-1]), "-o", str(out), "--find-libs", str(libs),
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [w["bytes_after"] for w in doc["wheels"]] == [0, 0]
    print(f"numpy + scipy: {doc['bytes']['before']} bytes vendored before, {doc['bytes']['after']} "
          "after", file=sys.stderr)
    env = Env(tmp_path / "venv")
    env.install("--find-links", str(out), "numpy", "scipy")
    text, maps = env.mapped("""
        import numpy as np, scipy.linalg as sl, scipy.special as sp
        rng = np.random.default_rng(0)
        a = rng.random((100, 100)) + 100 * np.eye(100)
        print(np.allclose(sl.inv(a) @ a, np.eye(100)), np.allclose(sl.lu_solve(sl.lu_factor(a), a[:, 0]),
              np.eye(100)[:, 0]), float(sp.gamma(5)))
        import sys  # stubs that went to the cold path (gfortran is required as ==5.0.0+b...)
        print([n for n, m in sys.modules.items() if n.endswith("._dlls") and "_require" in vars(m)])
        """, ("openblas", "gfortran", "quadmath"))
    assert text == "True True 24.0\n[]"
    names = sorted(Path(p).relative_to(env.site).as_posix() for p in maps)
    assert names == ["dllreg.libs/gfortran/lib/libgfortran.so.5",
                     "dllreg.libs/openblas/lib/libscipy_openblas.so",
                     "dllreg.libs/openblas64/lib/libscipy_openblas64_.so",
                     "dllreg.libs/quadmath/lib/libquadmath.so.0"]
    try:
        env.install("pytest", "hypothesis", "pooch", index=True)
    except AssertionError as exc:
        pytest.skip(f"pytest/hypothesis not installable here: {str(exc)[-200:]}")
    tests = env.site / "scipy" / "linalg" / "tests"
    proc = subprocess.run([env.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    print(f"scipy/linalg/tests on the devendored scipy: {proc.stdout.strip().splitlines()[-1:]}",
          file=sys.stderr)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


def _pypi_wheel(dist: str) -> Path:
    """scipy-openblas32/64 0.3.34.481.3 for manylinux x86_64, as published (cached download)."""
    pattern = f"{dist.replace('-', '_')}-0.3.34.481.3-py3-none-manylinux*x86_64.whl"
    found = sorted(DOWNLOADS.glob(pattern))
    if not found:
        run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps",
             "--platform", "manylinux_2_28_x86_64", "-d", str(DOWNLOADS), f"{dist}==0.3.34.481.3"])
        found = sorted(DOWNLOADS.glob(pattern))
    return found[-1]


@pytest.mark.realwheels
@pytest.mark.skipif(sys.version_info[:2] != (3, 11) or sys.platform != "linux", reason="cp311 Linux wheels")
def test_real_numpy_and_scipy_on_the_pypi_openblas_wheels(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """numpy's and scipy's vendored OpenBLAS replaced by scipy-openblas64 / scipy-openblas32 as
    published (no repackaging): the outputs require those wheels, pip installs them from the
    output directory only, and the libraries load from the wheels' own files."""
    numpy = _numpy_wheel()
    scipy = sorted(DOWNLOADS.glob("scipy-1.17.1-cp311-cp311-manylinux*x86_64.whl"))
    if not scipy:
        run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps",
             "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "-d", str(DOWNLOADS),
             "scipy==1.17.1"])
        scipy = sorted(DOWNLOADS.glob("scipy-1.17.1-cp311-cp311-manylinux*x86_64.whl"))
    out = tmp_path / "out"
    assert main(["devendor", str(numpy), str(scipy[-1]), "-o", str(out), "--json",
                 "--with-lib", str(_pypi_wheel("scipy-openblas64")),
                 "--with-lib", str(_pypi_wheel("scipy-openblas32"))]) == 0
    doc = json.loads(capsys.readouterr().out)
    by_wheel = {Path(w["path"]).name.split("-")[0]: w for w in doc["wheels"]}
    assert by_wheel["numpy"]["requires"] == ["openblas64>=0.3.34"]
    assert "openblas>=0.3.34" in by_wheel["scipy"]["requires"]
    assert sorted(Path(s["path"]).name.split("-")[0] for s in doc["substitutes"]) == [
        "scipy_openblas32", "scipy_openblas64"]
    import zipfile

    def requires_dist(prefix: str) -> list[str]:
        with zipfile.ZipFile(next(out.glob(f"{prefix}-*.whl"))) as zf:
            meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
            return [x[15:] for x in zf.read(meta).decode().splitlines() if x.startswith("Requires-Dist: ")]
    assert "scipy-openblas64>=0.3.34" in requires_dist("numpy")
    assert "scipy-openblas32>=0.3.34" in requires_dist("scipy")
    assert not any(r.startswith("dllreg-lib-openblas")
                   for r in requires_dist("scipy") + requires_dist("numpy"))

    env = Env(tmp_path / "venv")
    env.install("--find-links", str(out), "numpy", "scipy")
    text, maps = env.mapped("""
        import numpy as np, scipy.linalg as sl
        rng = np.random.default_rng(0)
        a = rng.random((100, 100)) + 100 * np.eye(100)
        print(np.allclose(np.linalg.inv(a) @ a, np.eye(100)), np.allclose(sl.inv(a) @ a, np.eye(100)))
        """, ("openblas", "gfortran", "quadmath"))
    assert text == "True True"
    names = sorted(Path(p).relative_to(env.site).as_posix() for p in maps)
    assert names == ["dllreg.libs/gfortran/lib/libgfortran.so.5",
                     "dllreg.libs/quadmath/lib/libquadmath.so.0",
                     "scipy_openblas32/lib/libscipy_openblas.so",
                     "scipy_openblas64/lib/libscipy_openblas64_.so"]
    try:
        env.install("pytest", "hypothesis", "pooch", index=True)
    except AssertionError as exc:
        pytest.skip(f"pytest/hypothesis not installable here: {str(exc)[-200:]}")
    for tests in (env.site / "numpy" / "linalg" / "tests", env.site / "scipy" / "linalg" / "tests"):
        proc = subprocess.run([env.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
                              capture_output=True, text=True, cwd=tmp_path,
                              env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
        print(f"{tests.relative_to(env.site)} on the PyPI OpenBLAS wheels: "
              f"{proc.stdout.strip().splitlines()[-1:]}", file=sys.stderr)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
