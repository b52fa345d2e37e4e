"""The conda hooks (hooks/conda/) in real conda transactions: a gcc-built libfoo in a conda
package carrying dllreg's link scripts, installed, upgraded and removed by py-rattler
(tests/condabed.py) in a prefix whose Python has dllreg, with a pip-installed dllreg consumer
that must bind to the conda copy. Slow: marked e2e."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import winebed
from conftest import ROOT, Venv, gcc_shared, run
from winebed import WineBed

pytest.importorskip("rattler")
from condabed import CondaBed, Run, hook_scripts, installed

pytestmark = pytest.mark.e2e

wine = winebed.wine  # the session fixture, for the .bat hooks under Wine (skips without Wine)

HOOKS = ROOT / "hooks" / "conda"
FOO_H = "int foo_answer(void);\n"
LIBFOO = ["lib/libfoo.so.1"]

EXT_C = """\
#include <Python.h>
#include <foo.h>
static PyObject* answer(PyObject* s, PyObject* unused){ return PyLong_FromLong(foo_answer()); }
static PyMethodDef M[] = {{"answer", answer, METH_NOARGS, 0}, {0}};
static struct PyModuleDef D = {PyModuleDef_HEAD_INIT, "_foo", 0, -1, M};
PyMODINIT_FUNC PyInit__foo(void){ return PyModule_Create(&D); }
"""
# The flags come from the registration's own .pc file (docs/providers.md): -I$PREFIX/include,
# -L$PREFIX/lib -l:libfoo.so.1, so DT_NEEDED is the SONAME and nothing records the prefix.
SETUP_PY = """\
import shlex, subprocess, sys
from setuptools import setup, Extension
f = shlex.split(subprocess.check_output(
    [sys.executable, "-m", "dllreg", "pkg-config", "foo", "--cflags", "--libs"], text=True))
setup(package_dir={"": "src"}, packages=["fooapp"],
      ext_modules=[Extension("fooapp._foo", ["src/fooapp/_foo.c"],
                             extra_compile_args=[x for x in f if x.startswith("-I")],
                             extra_link_args=[x for x in f if not x.startswith("-I")])])
"""
PYPROJECT = """\
[build-system]
requires = ["dllreg", "setuptools>=68"]
build-backend = "dllreg.build"
[project]
name = "fooapp"
version = "0.1"
[tool.dllreg]
backend = "setuptools.build_meta"
requires = ["foo>=1.0"]
"""
# What the consumer sees: the answer, and which libfoo files the process maps.
PROBE = """\
import fooapp
maps = sorted({l.split()[-1] for l in open('/proc/self/maps') if 'libfoo' in l})
print(fooapp.answer(), *maps)
"""


def libfoo_package(bed: CondaBed, tmp: Path, version: str, answer: int) -> None:
    lib = gcc_shared(tmp / f"libfoo-{version}" / "libfoo.so.1",
                     f"int foo_answer(void){{return {answer};}}\n", "libfoo.so.1")
    bed.publish("libfoo", version, {"lib/libfoo.so.1": lib, "include/foo.h": FOO_H.encode(),
                                    **hook_scripts("libfoo", "foo", LIBFOO)})


@pytest.fixture
def bed(tmp_path: Path) -> CondaBed:
    bed = CondaBed(tmp_path / "conda")
    libfoo_package(bed, tmp_path, "1.0", 42)
    libfoo_package(bed, tmp_path, "2.0", 43)
    return bed


@pytest.fixture
def prefix(make_venv: Callable[[str], Venv]) -> Venv:
    """A conda prefix whose Python has dllreg: a venv first, rattler installs into it."""
    venv = make_venv("prefix")
    venv.pip("install", "--no-index", "dllreg", "setuptools", "wheel")
    return venv


def registered(venv: Venv) -> list[dict[str, object]]:
    data = json.loads(venv.dllreg("list", "--json").stdout)
    assert data["errors"] == []
    return [lib for lib in data["libraries"] if lib["name"] == "foo"]


def dist_infos(venv: Venv) -> list[str]:
    return sorted(d.name for d in venv.site.glob("dllreg_lib_foo-*.dist-info"))


def show(label: str, r: Run) -> None:
    """The transaction as observed (pytest -s shows it; the closing note quotes it)."""
    print(f"[rattler] {label}: solved {r.records}, {r.events}, scripts {r.scripts}, "
          f"{r.seconds:.2f} s" + (f", rattler stderr: {r.stderr.strip()}" if r.stderr.strip() else ""))


def test_install_upgrade_remove(tmp_path: Path, bed: CondaBed, prefix: Venv) -> None:
    root = Path(prefix.path)
    r = bed.install(root, ["libfoo==1.0"])
    show("install libfoo 1.0", r)
    assert r.scripts == [("post-link", "libfoo", True)] and r.messages == ""
    assert installed(root) == [("libfoo", "1.0")]
    (foo,) = registered(prefix)
    assert (foo["version"], foo["provider"], foo["registered_by"]) == ("1.0", "conda", "libfoo")
    assert [f["path"] for f in foo["files"]] == [str(root / "lib" / "libfoo.so.1")]  # type: ignore[attr-defined,index]
    assert dist_infos(prefix) == ["dllreg_lib_foo-1.0.dist-info"]

    # A consumer built in the prefix against the registration, installed by pip with its
    # dependencies: dllreg-lib-foo>=1.0 is satisfied by the registration's dist-info.
    proj = tmp_path / "fooapp"
    (proj / "src" / "fooapp").mkdir(parents=True)
    (proj / "pyproject.toml").write_text(PYPROJECT)
    (proj / "setup.py").write_text(SETUP_PY)
    (proj / "src" / "fooapp" / "_foo.c").write_text(EXT_C)
    (proj / "src" / "fooapp" / "__init__.py").write_text("from ._foo import answer\n")
    wheels = tmp_path / "wheels"
    prefix.pip("wheel", "--no-build-isolation", "--no-deps", "-w", str(wheels), str(proj))
    (wheel,) = wheels.glob("fooapp-*.whl")
    dyn = run(["readelf", "-d", str(_extension(wheel, tmp_path))]).stdout
    assert "Shared library: [libfoo.so.1]" in dyn and str(root / "lib") not in dyn, dyn
    pip = prefix.pip("install", "--no-index", "--find-links", str(wheels), "fooapp")
    assert "dllreg-lib-foo" not in pip.stdout.split("Successfully installed")[-1]
    out = prefix.py(PROBE, cwd=root).stdout.split()
    assert out == ["42", str(root / "lib" / "libfoo.so.1")]
    check = prefix.dllreg("check", "--verify").stdout
    assert "fooapp" in prefix.dllreg("show", "foo").stdout and "OK" in check, check

    # The hooks are POSIX sh: run the installed post-link under dash as well (rattler and
    # conda use bash). Registering again is idempotent.
    if shutil.which("dash"):
        env = {"PREFIX": str(root), "PKG_NAME": "libfoo", "PKG_VERSION": "1.0", "PKG_BUILDNUM": "0",
               "PATH": "/usr/bin:/bin"}
        run(["dash", str(root / "bin" / ".libfoo-post-link.sh")], env=env)
        assert [f["version"] for f in registered(prefix)] == ["1.0"]

    # Upgrade: the old pre-unlink unregisters, the new post-link registers 2.0.
    r = bed.install(root, ["libfoo==2.0"])
    show("upgrade to libfoo 2.0", r)
    assert r.scripts == [("pre-unlink", "libfoo", True), ("post-link", "libfoo", True)]
    assert installed(root) == [("libfoo", "2.0")]
    assert [(f["version"], f["provider"]) for f in registered(prefix)] == [("2.0", "conda")]
    assert dist_infos(prefix) == ["dllreg_lib_foo-2.0.dist-info"]
    assert prefix.py(PROBE, cwd=root).stdout.split() == ["43", str(root / "lib" / "libfoo.so.1")]

    # Removal: unregistered before the file goes; the consumer then fails with dllreg's error.
    r = bed.install(root, [])
    show("remove libfoo", r)
    assert r.scripts == [("pre-unlink", "libfoo", True)] and r.messages == ""
    assert installed(root) == [] and not (root / "lib" / "libfoo.so.1").exists()
    assert registered(prefix) == [] and dist_infos(prefix) == []
    assert not list((prefix.site / "dllreg.libs").glob("foo*"))
    fail = prefix.py("import fooapp", check=False, cwd=root)
    assert fail.returncode == 1
    assert "LibraryImportError: fooapp requires native library foo>=1.0" in fail.stderr, fail.stderr
    assert 'pip install "dllreg-lib-foo>=1.0"' in fail.stderr


def _extension(wheel: Path, tmp: Path) -> Path:
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".so")]
        out = tmp / "ext-check.so"
        out.write_bytes(zf.read(name))
    return out


@pytest.mark.parametrize("python", ["without-dllreg", "no-python"])
def test_prefix_without_dllreg(tmp_path: Path, bed: CondaBed, make_venv: Callable[[str], Venv],
                               python: str) -> None:
    """The hook must not fail the transaction for what is not the package's fault."""
    if python == "no-python":
        root = tmp_path / "bare"
        root.mkdir()
    else:
        root = Path(make_venv("nodllreg").path)
    r = bed.install(root, ["libfoo==1.0"])
    show(f"install libfoo 1.0, prefix {python}", r)
    assert r.scripts == [("post-link", "libfoo", True)]
    assert installed(root) == [("libfoo", "1.0")] and (root / "lib" / "libfoo.so.1").is_file()
    assert not list(root.glob("lib/python3*/site-packages/dllreg.libs"))
    py = root / "bin" / "python"
    assert r.messages == (
        f"dllreg: libfoo 1.0 (build 0) did not register library foo: {py} is missing or has no "
        f'dllreg; after installing dllreg run: "{py}" -m dllreg register --name foo --version 1.0 '
        f'--provider conda --prefix "{root}" --owner libfoo --path "{root}/lib/libfoo.so.1"\n')
    r = bed.install(root, [])
    assert r.scripts == [("pre-unlink", "libfoo", True)] and installed(root) == []
    assert r.messages == (f"dllreg: libfoo 1.0 (build 0) did not unregister library foo "
                          f"(lib/libfoo.so.1): {py} is missing or has no dllreg\n")


def test_the_command_in_the_message_registers(tmp_path: Path, bed: CondaBed,
                                              make_venv: Callable[[str], Venv]) -> None:
    """dllreg installed after the library: the command the post-link message gives works."""
    venv = make_venv("late")
    root = Path(venv.path)
    r = bed.install(root, ["libfoo==1.0"])
    venv.pip("install", "--no-index", "dllreg")
    command = r.messages.split("after installing dllreg run: ")[1].strip()
    subprocess.run(command, shell=True, check=True, capture_output=True)
    (foo,) = registered(venv)
    assert (foo["version"], foo["provider"], foo["registered_by"]) == ("1.0", "conda", "libfoo")
    bed.install(root, [])  # and the pre-unlink, with dllreg present now, unregisters it
    assert registered(venv) == [] and dist_infos(venv) == []


def test_a_broken_file_list_fails_the_hook(tmp_path: Path, bed: CondaBed, prefix: Venv) -> None:
    """A hook that names files that are not libraries is the package's fault: register exits
    2 and so does the hook (conda would abort; rattler only records the failure)."""
    lib = gcc_shared(tmp_path / "bad" / "libbar.so.1", "int bar(void){return 1;}\n", "libbar.so.1")
    bed.publish("libbar", "1.0", {"lib/libbar.so.1": lib, "share/bar.txt": b"not a library\n",
                                  **hook_scripts("libbar", "bar", ["share/bar.txt"])})
    r = bed.install(Path(prefix.path), ["libbar"])
    assert r.scripts == [("post-link", "libbar", False)]
    data = json.loads(prefix.dllreg("list", "--json").stdout)
    assert data["libraries"] == [] and not list(prefix.site.glob("dllreg_lib_*"))


@pytest.mark.parametrize("script", ["post-link.sh", "pre-unlink.sh"])
def test_hooks_are_posix_sh(script: str) -> None:
    run(["sh", "-n", str(HOOKS / script)])
    if shutil.which("dash"):
        run(["dash", "-n", str(HOOKS / script)])
    text = (HOOKS / script).read_text()
    assert text.startswith("#!/bin/sh\n")
    assert text.count('\nDLLREG_NAME="') == 1 and text.count('\nDLLREG_FILES="') == 1
    # What a link script may rely on (conda-build docs), and nothing else from the caller.
    used = {w for w in ("PREFIX", "PKG_NAME", "PKG_VERSION", "PKG_BUILDNUM") if f"${w}" in text}
    assert {"PREFIX", "PKG_NAME"} <= used
    assert 'py="$PREFIX/bin/python"' in text and "$CONDA_PREFIX" not in text


def test_bat_hooks_have_crlf_and_the_same_two_lines() -> None:
    for script in ("post-link.bat", "pre-unlink.bat"):
        data = (HOOKS / script).read_bytes()
        assert data.count(b"\n") == data.count(b"\r\n"), script
        text = data.decode()
        assert text.count('\r\nset "DLLREG_NAME=') == 1 and text.count('\r\nset "DLLREG_FILES=') == 1
        assert '"%PREFIX%\\python.exe"' in text or "%PREFIX%\\python.exe" in text


# ---- the .bat hooks under Wine's cmd.exe ----------------------------------------------------

# A stand-in for %PREFIX%\python.exe (no Windows CPython here): it appends its command line to
# calls.txt beside itself, fails `-c "import dllreg"` while NODLLREG exists there, and exits 7
# for anything else, so the test sees the exact dllreg command and that its status comes back.
FAKE_PYTHON_C = r"""
#include <windows.h>
#include <wchar.h>
int wmain(void){
  wchar_t dir[MAX_PATH], path[MAX_PATH]; DWORD n;
  GetModuleFileNameW(NULL, dir, MAX_PATH); *(wcsrchr(dir, L'\\') + 1) = 0;
  wcscpy(path, dir); wcscat(path, L"calls.txt");
  HANDLE h = CreateFileW(path, FILE_APPEND_DATA, 0, NULL, OPEN_ALWAYS, 0, NULL);
  char line[4096]; int len = WideCharToMultiByte(CP_UTF8, 0, GetCommandLineW(), -1, line, 4000, 0, 0);
  line[len - 1] = '\n'; WriteFile(h, line, len, &n, NULL); CloseHandle(h);
  if (wcsstr(GetCommandLineW(), L"import dllreg")) {
    wcscpy(path, dir); wcscat(path, L"NODLLREG");
    return GetFileAttributesW(path) != INVALID_FILE_ATTRIBUTES;
  }
  return 7;
}
"""


@pytest.fixture
def bat_hooks(tmp_path: Path) -> dict[str, Path]:
    """The .bat hooks with the two lines edited as a packager would (two DLLs)."""
    out = {}
    for kind in ("post-link", "pre-unlink"):
        text = (HOOKS / f"{kind}.bat").read_bytes().decode()
        text, n = re.subn(r'set "DLLREG_FILES=[^"\r\n]*"',
                          r'set "DLLREG_FILES=Library\\bin\\bar.dll Library\\bin\\foo.dll"', text)
        assert n == 1
        out[kind] = tmp_path / "Scripts" / f".libfoo-{kind}.bat"
        out[kind].parent.mkdir(exist_ok=True)
        out[kind].write_bytes(text.encode())
    return out


@pytest.mark.wine
def test_bat_hooks_under_wine_cmd(wine: WineBed, tmp_path: Path, bat_hooks: dict[str, Path]) -> None:
    root = tmp_path / "conda env"  # a space in the prefix: quoting must hold
    root.mkdir()
    prefix = winebed.winpath(root)
    env = {"PREFIX": prefix, "PKG_NAME": "libfoo", "PKG_VERSION": "1.0", "PKG_BUILDNUM": "3"}

    def hook(kind: str) -> int:
        return wine.run("cmd", "/c", bat_hooks[kind], env=env).returncode

    def calls() -> list[str]:
        path = root / "calls.txt"
        lines = path.read_text().splitlines() if path.exists() else []
        path.unlink(missing_ok=True)
        return [line.strip() for line in lines]

    # No python.exe at all: a message, exit 0.
    assert hook("post-link") == 0 and hook("pre-unlink") == 0
    messages = (root / ".messages.txt").read_text().splitlines()
    python = f"{prefix}\\python.exe"
    assert messages == [
        f"dllreg: libfoo 1.0 (build 3) did not register library foo: {python} is missing or "
        f'has no dllreg; after installing dllreg run: "{python}" -m dllreg register --name foo '
        f'--version 1.0 --provider conda --prefix "{prefix}" --owner libfoo '
        f'--path "{prefix}\\Library\\bin\\bar.dll" --path "{prefix}\\Library\\bin\\foo.dll"',
        f"dllreg: libfoo 1.0 (build 3) did not unregister library foo (Library\\bin\\bar.dll "
        f"Library\\bin\\foo.dll): {python} is missing or has no dllreg"]
    (root / ".messages.txt").unlink()

    winebed.mingw(root / "python.exe", FAKE_PYTHON_C, "-municode", "-O1")
    (root / "NODLLREG").touch()  # a python without dllreg: the same, after asking it
    assert hook("post-link") == 0
    assert calls() == [f'"{python}" -I -c "import dllreg"']
    assert "did not register library foo" in (root / ".messages.txt").read_text()
    (root / ".messages.txt").unlink()

    (root / "NODLLREG").unlink()  # dllreg present: the exact commands, and their status
    assert hook("post-link") == 7
    assert calls() == [
        f'"{python}" -I -c "import dllreg"',
        f'"{python}" -I -m dllreg register --name "foo" --version "1.0" --provider conda '
        f'--prefix "{prefix}" --owner "libfoo"  --path "{prefix}\\Library\\bin\\bar.dll" '
        f'--path "{prefix}\\Library\\bin\\foo.dll"']
    assert hook("pre-unlink") == 7
    assert calls() == [f'"{python}" -I -c "import dllreg"',
                       f'"{python}" -I -m dllreg unregister --name "foo" --provider conda '
                       f'--owner "libfoo"']
    assert not (root / ".messages.txt").exists()
