"""End to end, as users do it: gcc, package-lib, isolated pip builds through dllreg.build,
pip installs into fresh venvs, imports, list/check. Slow: marked e2e."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest
from installer.sources import WheelFile

from conftest import QSUM_C, Venv, gcc_shared, run

pytestmark = pytest.mark.e2e

EXT_C = """\
#include <Python.h>
#include <qsum.h>
static PyObject* f(PyObject* s, PyObject* a){ return PyLong_FromLong(qsum(PyLong_AsLong(a))); }
static PyMethodDef M[] = {{"qsum", f, METH_O, 0}, {0}};
static struct PyModuleDef D = {PyModuleDef_HEAD_INIT, "_q", 0, -1, M};
PyMODINIT_FUNC PyInit__q(void){ return PyModule_Create(&D); }
"""
SETUP_PY = """\
import shlex, subprocess, sys
from setuptools import setup, Extension
f = shlex.split(subprocess.check_output(
    [sys.executable, "-m", "dllreg", "pkg-config", "qsum", "--cflags", "--libs"], text=True))
setup(package_dir={{"": "src"}}, packages={packages!r},
      ext_modules=[Extension("{ext}", ["src/{ext_path}.c"],
                             extra_compile_args=[x for x in f if x.startswith("-I")],
                             extra_link_args=[x for x in f if not x.startswith("-I")])])
"""


def write_consumer(root: Path, name: str, requires: list[str], *, nested: bool = False,
                   tool_extra: str = "", init: str | None = None) -> Path:
    proj = root / name
    pkg = proj / "src" / name
    packages = [name, f"{name}.core"] if nested else [name]
    ext = f"{name}.core._q" if nested else f"{name}._q"
    (pkg / "core" if nested else pkg).mkdir(parents=True)
    (proj / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["dllreg", "setuptools>=68"]
        build-backend = "dllreg.build"
        [project]
        name = "{name}"
        version = "0.1"
        [tool.dllreg]
        backend = "setuptools.build_meta"
        requires = {json.dumps(requires)}
        """) + tool_extra)
    (proj / "setup.py").write_text(SETUP_PY.format(packages=packages, ext=ext,
                                                   ext_path=ext.replace(".", "/")))
    (proj / "src" / (ext.replace(".", "/") + ".c")).write_text(EXT_C)
    if nested:
        (pkg / "core" / "__init__.py").write_text("from ._q import qsum\n")
        (pkg / "__init__.py").write_text(init or '"""Nested."""\nfrom .core import qsum\n')
    else:
        (pkg / "__init__.py").write_text(init or "from ._q import qsum\n")
    return proj


def pip_wheel(venv: Venv, project: Path, out: Path, check: bool = True
              ) -> subprocess.CompletedProcess[str]:
    return venv.pip("wheel", "--no-deps", "-w", str(out), str(project), check=check,
                    env={"PIP_FIND_LINKS": f"{venv.house} {out}"})


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Path:
    """Library wheels (qsum 2.0, 3.1.4, 4.0) and consumer wheels, built once."""
    root = tmp_path_factory.mktemp("e2e")
    out = root / "wheels"
    out.mkdir()
    for version in ("2.0", "3.1.4", "4.0"):
        src = root / f"qsum-{version}"
        gcc_shared(src / "lib" / "libqsum.so.3", QSUM_C, "libqsum.so.3")
        (src / "include").mkdir()
        (src / "include" / "qsum.h").write_text("long qsum(long n);\n")
        run([sys.executable, "-m", "dllreg", "package-lib", "qsum", "--version", version,
             "--from", str(src), "-o", str(out)])
    builder = Venv(root / "unused", wheelhouse)
    builder.python = sys.executable
    pip_wheel(builder, write_consumer(root, "qapp", ["qsum>=3.1,<4"]), out)
    pip_wheel(builder, write_consumer(root, "qnest", ["qsum>=3"], nested=True,
                                      init='"""Doc."""\nfrom __future__ import annotations\n'
                                           'from .core import qsum\n'), out)
    pip_wheel(builder, write_consumer(root, "qold", ["qsum<3"]), out)
    return out


def wheel_of(built: Path, name: str) -> Path:
    return next(built.glob(f"{name}-0.1-*.whl"))


def test_consumer_wheel_contents(built: Path) -> None:
    wheel = wheel_of(built, "qnest")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = zf.read("qnest-0.1.dist-info/METADATA").decode()
        record = json.loads(zf.read("qnest-0.1.dist-info/dllreg.json"))
        init = zf.read("qnest/__init__.py").decode()
        ext = next(n for n in names if n.endswith(".so"))
        so = zf.read(ext)
    assert "qnest/_dlls.py" in names and "qnest/core/_dlls.py" not in names
    assert "Requires-Dist: dllreg-lib-qsum>=3" in meta
    assert record["requires"] == ["qsum>=3"] and record["stubs"] == ["qnest/_dlls.py"]
    assert init.splitlines()[:3] == ['"""Doc."""', "from __future__ import annotations",
                                     "from . import _dlls  # dllreg: preload native libraries first"]
    with WheelFile.open(wheel) as source:
        source.validate_record()  # RECORD complete and correct
    tmp = built / "ext-check.so"
    tmp.write_bytes(so)
    dyn = run(["readelf", "-d", str(tmp)]).stdout
    assert "Shared library: [libqsum.so.3]" in dyn
    # The only RUNPATH allowed is the interpreter's own libdir (see FINDINGS); none into
    # the build environment or the registry.
    for path in re.findall(r"R(?:UN)?PATH.*\[(.*)\]", dyn):
        for entry in path.split(":"):
            assert "pip-build-env" not in entry and "dllreg.libs" not in entry, dyn


def test_two_consumers_share_one_copy(make_venv, built: Path) -> None:  # type: ignore[no-untyped-def]
    venv = make_venv()
    venv.pip("install", "--find-links", str(built), "qapp", "qnest", "dllreg")
    r = venv.py("""
        import qapp, qnest
        assert qapp.qsum(100) == 5050 and qnest.qsum(10) == 55
        maps = {l.split()[-1] for l in open('/proc/self/maps') if 'libqsum' in l}
        print(len(maps), qapp._dlls.path('qsum') == qnest._dlls.path('qsum'))
        """, cwd=venv.path)
    assert r.stdout.split() == ["1", "True"]
    data = json.loads(venv.dllreg("list", "--json").stdout)
    (lib,) = [x for x in data["libraries"] if x["name"] == "qsum"]
    assert lib["version"] == "3.1.4" and lib["path"] == str(venv.site / "dllreg.libs" / "qsum")
    assert sorted((c["name"], c["requirement"]) for c in lib["consumers"]) == [
        ("qapp", "qsum<4,>=3.1"), ("qnest", "qsum>=3")]
    table = venv.dllreg("list").stdout
    assert "qsum  3.1.4" in table and "qapp (qsum<4,>=3.1)" in table
    assert "1 libraries, 2 consumers: OK" in venv.dllreg("check", "--verify").stdout
    show = venv.dllreg("show", "qsum").stdout
    assert "libqsum.so.3" in show and "qnest 0.1 qsum>=3" in show


def test_pip_refuses_incompatible_consumers(make_venv, built: Path) -> None:  # type: ignore[no-untyped-def]
    venv = make_venv()
    r = venv.pip("install", "--find-links", str(built), "qapp", "qold", check=False)
    assert r.returncode != 0 and "dllreg-lib-qsum" in r.stdout + r.stderr
    assert "qapp" not in venv.py(f"import os; print(os.listdir({str(venv.site)!r}))").stdout


def test_no_deps_install_is_caught(make_venv, built: Path) -> None:  # type: ignore[no-untyped-def]
    venv = make_venv()
    venv.pip("install", "--no-deps", str(wheel_of(built, "qapp")))
    venv.pip("install", "dllreg")
    check = venv.dllreg("check", check=False)
    assert check.returncode == 1
    assert "qapp 0.1: requires native library qsum<4,>=3.1, which is not installed" in check.stdout
    assert 'fix: pip install "dllreg-lib-qsum<4,>=3.1"' in check.stdout
    r = venv.py("import qapp", check=False)
    assert "qapp requires native library qsum<4,>=3.1, but it is not installed" in r.stderr


def test_library_upgraded_under_older_consumer(make_venv, built: Path) -> None:  # type: ignore[no-untyped-def]
    venv = make_venv()
    venv.pip("install", "--find-links", str(built), "qapp", "dllreg")
    venv.pip("install", "--find-links", str(built), "dllreg-lib-qsum==4.0")
    check = venv.dllreg("check", check=False)
    assert check.returncode == 1
    assert "requires qsum<4,>=3.1, but only qsum 4.0 at " in check.stdout
    r = venv.py("import qapp", check=False)
    assert "found only qsum 4.0 at" in r.stderr and "does not satisfy <4,>=3.1" in r.stderr


def test_check_verify_detects_modified_library(make_venv, built: Path) -> None:  # type: ignore[no-untyped-def]
    venv = make_venv()
    venv.pip("install", "--find-links", str(built), "qapp", "dllreg")
    lib = venv.site / "dllreg.libs" / "qsum" / "lib" / "libqsum.so.3"
    lib.write_bytes(lib.read_bytes() + b"\0")
    assert venv.dllreg("check").returncode == 0  # sizes are not hashed without --verify
    r = venv.dllreg("check", "--verify", check=False)
    assert r.returncode == 1 and "does not match the sha256 in its manifest" in r.stdout
    # An edited manifest (here: made to agree with the modified file) is caught by pip's RECORD.
    manifest = venv.site / "dllreg.libs" / "qsum" / "MANIFEST"
    text = manifest.read_text()
    old = text.split("Library: ")[1].split("\t")[2]
    manifest.write_text(text.replace(old, hashlib.sha256(lib.read_bytes()).hexdigest()))
    r = venv.dllreg("check", "--verify", check=False)
    assert "does not match the sha256 in its manifest" not in r.stdout
    assert r.returncode == 1 and f"file {manifest} does not match the hash pip recorded" in r.stdout
    assert f"file {lib} does not match the hash pip recorded" in r.stdout


@pytest.mark.parametrize("tool_extra,requires,expect", [
    ("", ["qsum>>3"], "pyproject.toml: [tool.dllreg] requires[0]: invalid requirement"),
    ('extra = 1\n', ["qsum"], "pyproject.toml: [tool.dllreg] extra: unknown key"),
], ids=["bad-specifier", "unknown-key"])
def test_bad_config_fails_the_build(tmp_path: Path, make_venv, tool_extra: str,  # type: ignore[no-untyped-def]
                                    requires: list[str], expect: str) -> None:
    venv = make_venv()
    proj = write_consumer(tmp_path, "qbad", requires, tool_extra=tool_extra)
    r = pip_wheel(venv, proj, tmp_path / "out", check=False)
    assert r.returncode != 0 and expect in r.stdout + r.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.whl"))


def test_declared_library_that_nothing_links_is_a_build_error(tmp_path: Path, built: Path,
                                                              make_venv) -> None:  # type: ignore[no-untyped-def]
    """As numpy's meson does with its defaults (no BLAS found, built without): the extension
    does not link qsum, so dllreg refuses to add a stub and Requires-Dist for it."""
    venv = make_venv()
    proj = write_consumer(tmp_path, "qnolink", ["qsum>=3"])
    setup = (proj / "setup.py").read_text().replace(
        "extra_link_args=[x for x in f if not x.startswith(\"-I\")]", "extra_link_args=[]")
    assert "extra_link_args=[]" in setup
    (proj / "setup.py").write_text(setup)
    r = venv.pip("wheel", "--no-deps", "-w", str(tmp_path / "out"), str(proj), check=False,
                 env={"PIP_FIND_LINKS": f"{venv.house} {built}"})
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "no binary in the wheel needs qsum>=3" in out, out[-4000:]
    assert 'dlopen = [\"qsum\"]' in out or 'dlopen = ["qsum"]' in out
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.whl"))


def test_top_level_extension_is_a_build_error(tmp_path: Path, built: Path, make_venv  # type: ignore[no-untyped-def]
                                              ) -> None:
    venv = make_venv()
    proj = write_consumer(tmp_path, "qtop", ["qsum>=3"])
    setup = (proj / "setup.py").read_text().replace('Extension("qtop._q"', 'Extension("_q"')
    setup = setup.replace("src/qtop/_q.c", "src/_q.c")
    (proj / "setup.py").write_text(setup)
    shutil.move(str(proj / "src" / "qtop" / "_q.c"), str(proj / "src" / "_q.c"))
    r = venv.pip("wheel", "--no-deps", "-w", str(tmp_path / "out"), str(proj), check=False,
                 env={"PIP_FIND_LINKS": f"{venv.house} {built}"})
    assert r.returncode != 0
    assert "sits at the top level of the wheel, outside any package" in r.stdout + r.stderr, (
        r.stdout[-4000:] + r.stderr[-2000:])


def test_sdist_round_trip_has_no_stub(tmp_path: Path, built: Path, wheelhouse: Path) -> None:
    proj = write_consumer(tmp_path, "qsd", ["qsum>=3"])
    r = subprocess.run([sys.executable, "-m", "build", "-o", str(tmp_path / "dist"), str(proj)],
                       capture_output=True, text=True,
                       env={**os.environ, "PIP_FIND_LINKS": f"{built} {wheelhouse}"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with tarfile.open(next((tmp_path / "dist").glob("*.tar.gz"))) as tf:
        assert not [n for n in tf.getnames() if n.endswith("_dlls.py")]
    with zipfile.ZipFile(next((tmp_path / "dist").glob("*.whl"))) as zf:
        from_sdist = {n: zf.read(n) for n in zf.namelist()}
    assert "qsd/_dlls.py" in from_sdist
    # A direct wheel build of the same tree gives the same members, and the same bytes for
    # everything but the compiled extension (its debug info holds the build directory).
    direct_out = tmp_path / "direct"
    r = subprocess.run([sys.executable, "-m", "build", "--wheel", "-o", str(direct_out), str(proj)],
                       capture_output=True, text=True,
                       env={**os.environ, "PIP_FIND_LINKS": f"{built} {wheelhouse}"})
    assert r.returncode == 0, r.stderr[-3000:]
    with zipfile.ZipFile(next(direct_out.glob("*.whl"))) as zf:
        direct = {n: zf.read(n) for n in zf.namelist()}
    assert sorted(direct) == sorted(from_sdist)
    differ = [n for n in direct if direct[n] != from_sdist[n]]
    assert all(n.endswith((".so", "/RECORD")) for n in differ), differ


def test_editable_install(tmp_path: Path, built: Path, make_venv) -> None:  # type: ignore[no-untyped-def]
    venv = make_venv()
    proj = write_consumer(tmp_path, "qed", ["qsum>=3"])
    env = {"PIP_FIND_LINKS": f"{venv.house} {built}"}
    r = venv.pip("install", "-e", str(proj), check=False, env=env)
    init = proj / "src" / "qed" / "__init__.py"
    assert r.returncode != 0
    assert "make this line the first statement" in r.stdout + r.stderr and str(init) in r.stderr
    init.write_text("from . import _dlls  # dllreg: preload native libraries first\n"
                    + init.read_text())
    venv.pip("install", "-e", str(proj), env=env)
    out = venv.py("import qed; print(qed.qsum(100), qed._dlls.path('qsum'), qed.__file__)",
                  cwd=tmp_path).stdout.split()
    assert out[0] == "5050"
    assert out[1].startswith(str(venv.site / "dllreg.libs" / "qsum"))
    assert out[2] == str(init)  # really the source tree
    assert "Generated by dllreg" in (proj / "src" / "qed" / "_dlls.py").read_text()


def test_real_pkg_config_through_pkg_config_path(tmp_path: Path, built: Path, make_venv  # type: ignore[no-untyped-def]
                                                 ) -> None:
    """A setup.py that asks the pkg-config program (not dllreg) gets working flags from
    the PKG_CONFIG_PATH the backend sets; while the library is not installed yet
    (DLLREG_BUILD_PHASE), it must tolerate the failure, as FINDINGS describes."""
    venv = make_venv()
    proj = write_consumer(tmp_path, "qpc", ["qsum>=3"])
    (proj / "setup.py").write_text(textwrap.dedent("""\
        import os, shlex, subprocess, sys
        from setuptools import setup, Extension
        r = subprocess.run(["pkg-config", "--cflags", "--libs", "qsum"], capture_output=True,
                           text=True)
        if r.returncode and not os.environ.get("DLLREG_BUILD_PHASE"):
            sys.exit("pkg-config failed: " + r.stderr)
        f = shlex.split(r.stdout)
        setup(package_dir={"": "src"}, packages=["qpc"],
              ext_modules=[Extension("qpc._q", ["src/qpc/_q.c"],
                                     extra_compile_args=[x for x in f if x.startswith("-I")],
                                     extra_link_args=[x for x in f if not x.startswith("-I")])])
        """))
    out = tmp_path / "out"
    venv.pip("wheel", "--no-deps", "-w", str(out), str(proj),
             env={"PIP_FIND_LINKS": f"{venv.house} {built}"})
    venv.pip("install", "--find-links", str(built), str(next(out.glob("qpc-*.whl"))))
    assert venv.py("import qpc; print(qpc.qsum(4))", cwd=tmp_path).stdout.strip() == "10"


def test_demo_with_the_real_openblas(tmp_path: Path) -> None:
    """`make demo` end to end in a temp dir: the real OpenBLAS from the scipy-openblas32
    wheel (downloaded once into .cache/downloads), two C-extension consumers, one copy."""
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run(["bash", str(root / "examples" / "demo.sh")], capture_output=True,
                       text=True, env={**os.environ, "DLLREG_DEMO_OUT": str(tmp_path / "demo"),
                                       "DLLREG_DEMO_PYTHON": sys.executable})
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "[ok] distinct OpenBLAS files mapped: 1 (expected 1)" in r.stdout
    assert "OK: one OpenBLAS serves both packages" in r.stdout
    assert re.search(r"openblas +0\.3\.\S+ +wheel +blasdot \(openblas>=0\.3\), blasgemm", r.stdout)


def test_example_installs_editable_as_it_is(tmp_path: Path, make_venv) -> None:  # type: ignore[no-untyped-def]
    """examples/blasdot carries the stub import line, so `pip install -e` works unedited."""
    root = Path(__file__).resolve().parent.parent
    downloads = root / ".cache" / "downloads"
    source = sorted(downloads.glob("scipy_openblas32-*manylinux*x86_64.whl"))
    if not source:
        run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
             "-d", str(downloads), "scipy-openblas32"])
        source = sorted(downloads.glob("scipy_openblas32-*manylinux*x86_64.whl"))
    libs = tmp_path / "libs"
    run([sys.executable, "-m", "dllreg", "package-lib", "openblas", "--from", str(source[-1]),
         "-o", str(libs)])
    project = tmp_path / "blasdot"
    shutil.copytree(root / "examples" / "blasdot", project,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "_dlls.py", "__pycache__"))
    venv = make_venv()
    venv.pip("install", "-q", "-e", str(project), env={"PIP_FIND_LINKS": f"{venv.house} {libs}"})
    assert (project / "src" / "blasdot" / "_dlls.py").is_file()
    out = venv.py("import blasdot; print(blasdot.dot([1, 2, 3], [4, 5, 6]), blasdot.__file__)",
                  cwd=tmp_path).stdout.split()
    assert out == ["32.0", str(project / "src" / "blasdot" / "__init__.py")]
