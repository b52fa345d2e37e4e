"""dllreg consumers imported by the official CPython for Windows (3.11.9, 3.12.9) under Wine.

No stand-in: python.exe, python3X.dll and their loader are python.org's embeddable
distribution (tests/winpython.py). The library wheel is ``package-lib`` of a mingw-built
DLL; the consumer's ``.pyd`` is built with mingw against the real python3X.dll and linked
through the library wheel's pkg-config flags, wrapped in a win_amd64 wheel that
``dllreg.build.consumer.patch_wheel`` (the backend's own code path) turns into a consumer; the
real Windows pip installs both (resolving the consumer's ``dllreg-lib-qsum`` requirement).

The planting vectors of test_planting.py that exist on Windows are re-run here with the
interpreter's own loader: PATH, the current directory, a copy beside the ``.pyd``, a
directory another package adds with ``os.add_dll_directory``, relative ``sys.path`` entries.
Each planted ``libqsum.dll`` writes a marker file from its DllMain; every vector asserts no
marker, ``qsum`` computed by the registry copy, and EnumProcessModules (through ctypes, in
the same process) listing only the registry copy of libqsum.dll. A control per vector shows
the plant is live (something else does load it). Then the embeddable's own rules:
``python3X._pth`` (sys.path fixed, PYTHONPATH ignored, the zip first) with the registry in
``Lib\\site-packages``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

import winebed
import winpython
from dllreg.build.consumer import patch_wheel
from dllreg.names import NativeRequirement
from dllreg.wheelfile import WheelWriter
from test_stub_runtime import install_wheel
from test_wine_stub import QSUM, Bed, library_dir, package
from winebed import WineBed, mingw, winpath
from winpython import WinPython

pytestmark = [pytest.mark.wine,
              pytest.mark.skipif(winebed.missing_tools() is not None, reason=str(winebed.missing_tools()))]
wine = winebed.wine

MINORS = sorted(winpython.EMBED)

# The few CPython declarations the extension needs (no headers ship with the embeddable):
# the object header, PyMethodDef and PyModuleDef as in CPython 3.11/3.12's Include/.
PYAPI = r"""
typedef long long Py_ssize_t;
typedef struct { Py_ssize_t ob_refcnt; void *ob_type; } PyObject;
typedef PyObject *(*PyCFunction)(PyObject *, PyObject *);
typedef struct { const char *ml_name; PyCFunction ml_meth; int ml_flags; const char *ml_doc; } PyMethodDef;
typedef struct { PyObject ob_base; PyObject *(*m_init)(void); Py_ssize_t m_index; PyObject *m_copy; }
    PyModuleDef_Base;
typedef struct { PyModuleDef_Base m_base; const char *m_name; const char *m_doc; Py_ssize_t m_size;
                 PyMethodDef *m_methods; void *m_slots, *m_traverse, *m_clear, *m_free; } PyModuleDef;
__declspec(dllimport) PyObject *PyModule_Create2(PyModuleDef *, int);
__declspec(dllimport) PyObject *PyLong_FromLong(long);
__declspec(dllimport) long PyLong_AsLong(PyObject *);
#define METH_O 0x0008
#define PYTHON_API_VERSION 1013
"""
EXT_C = PYAPI + r"""
#include <qsum.h>
static PyObject *total(PyObject *self, PyObject *arg) {
    (void)self;
    return PyLong_FromLong(qsum((int)PyLong_AsLong(arg)));
}
static PyMethodDef methods[] = {{"total", total, METH_O, 0}, {0, 0, 0, 0}};
static PyModuleDef def = {{{1, 0}, 0, 0, 0}, "_ext", 0, -1, methods, 0, 0, 0, 0};
__declspec(dllexport) PyObject *PyInit__ext(void) { return PyModule_Create2(&def, PYTHON_API_VERSION); }
"""
INIT = "from ._ext import total\n"

# Runs in python.exe. FRONT: entries put first on sys.path (the relative plants); OTHER:
# packages imported before the consumer (one adds a DLL directory); MODE: "stub" imports the
# consumer PKG (a package with a total() function), "pyd" loads its extension without the
# stub (as CPython's importer would), "ctypes0" loads libqsum.dll by name with plain
# LoadLibraryExW(name, 0, 0) (the pre-3.8 search: the application directory, system
# directories, the current directory, PATH).
PROBE = winpython.LOADED_MODULES + r"""
import json, os, sys
sys.path[:0] = FRONT
for name in OTHER:
    __import__(name)
total, err = None, ""
try:
    if MODE == "stub":
        total = __import__(PKG).total(100)
    elif MODE == "pyd":
        import importlib.util
        spec = importlib.util.spec_from_file_location("_ext", PYD)
        total = importlib.util.module_from_spec(spec).total(100)
    else:
        import ctypes
        total = ctypes.WinDLL("libqsum.dll", winmode=0).qsum(100)
except (ImportError, OSError) as e:
    err = type(e).__name__ + ": " + str(e)
cpkg_file = getattr(sys.modules.get(PKG), "__file__", None)
print(json.dumps({"total": total, "err": err, "sys_path": sys.path, "isolated": sys.flags.isolated,
                  "cpkg_file": cpkg_file,
                  "mods": [m for m in loaded_modules() if "libqsum" in m.lower()],
                  "markers": sorted(os.listdir(MARKERS))}))
"""


def probe_code(*, mode: str = "stub", front: list[str] | None = None, other: list[str] | None = None,
               markers: Path, pyd: Path | None = None, pkg: str = "cpkg") -> str:
    head = (f"FRONT = {front or []!r}\nOTHER = {other or []!r}\nMODE = {mode!r}\nPKG = {pkg!r}\n"
            f"MARKERS = {winpath(markers)!r}\nPYD = {winpath(pyd) if pyd else ''!r}\n")
    return head + PROBE


def consumer_wheel(tmp: Path, py: WinPython, flags: tuple[str, ...], out: Path) -> Path:
    """cpkg 1.0 for ``py``: a mingw .pyd linked to python3X.dll and libqsum.dll, made a
    consumer of ``qsum>=1`` by dllreg's own wheel patcher (what ``dllreg.build`` runs)."""
    ext = f"_ext.{py.tag}-win_amd64.pyd"
    pyd = mingw(tmp / f"build-{py.tag}" / ext, EXT_C, "-shared", "-O1", *flags, str(py.dll))
    dist_info = "cpkg-1.0.dist-info"
    inner = tmp / f"inner-{py.tag}" / f"cpkg-1.0-{py.tag}-{py.tag}-win_amd64.whl"
    with WheelWriter(inner, dist_info) as w:
        w.add("cpkg/__init__.py", INIT.encode())
        w.add(f"cpkg/{ext}", pyd.read_bytes())
        w.add(f"{dist_info}/METADATA", b"Metadata-Version: 2.1\nName: cpkg\nVersion: 1.0\n")
        w.add(f"{dist_info}/WHEEL", f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n"
                                    f"Tag: {py.tag}-{py.tag}-win_amd64\n".encode())
    req = [NativeRequirement.parse("qsum>=1")]
    return patch_wheel(inner, out, req, req)


_HOUSE: list[Path] = []  # built once per process, however many modules use the fixture


@pytest.fixture(scope="session")
def house(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pip's --find-links: the qsum library wheel and a cpkg consumer wheel per interpreter."""
    if not _HOUSE:
        _HOUSE.append(_build_house(tmp_path_factory.mktemp("winpy-wheels")))
    return _HOUSE[0]


def _build_house(tmp: Path) -> Path:
    library = package(tmp, "qsum", library_dir(tmp, "qsum", QSUM, "libqsum.dll"))
    probe = tmp / "probe-site"
    install_wheel(library, probe)
    flags = tuple(Bed.pkg_config(probe))  # the consumer links as a user's build would
    house = tmp / "house"
    house.mkdir()
    shutil.copy2(library, house)
    for minor in MINORS:
        consumer_wheel(tmp, winpython.prepare(minor), flags, house)
    return house


# One planted libqsum.dll for every vector: DllMain creates a file in %PLANT_MARKERS% named
# after the DLL's own path, so a marker says which copy was loaded.
PLANT_C = r"""
#include <windows.h>
BOOL WINAPI DllMain(HINSTANCE h, DWORD reason, LPVOID reserved) {
    static wchar_t dir[4096], me[4096], path[8200];
    (void)reserved;
    if (reason != DLL_PROCESS_ATTACH) return TRUE;
    DWORD n = GetEnvironmentVariableW(L"PLANT_MARKERS", dir, 4096);
    if (n == 0 || n >= 4096 || !GetModuleFileNameW(h, me, 4096)) return TRUE;
    for (wchar_t *c = me; *c; c++) if (*c == L'\\' || *c == L':' || *c == L'/') *c = L'_';
    lstrcpyW(path, dir); lstrcatW(path, L"\\"); lstrcatW(path, me);
    HANDLE f = CreateFileW(path, GENERIC_WRITE, 0, NULL, CREATE_ALWAYS, FILE_ATTRIBUTE_NORMAL, NULL);
    if (f != INVALID_HANDLE_VALUE) CloseHandle(f);
    return TRUE;
}
__declspec(dllexport) int qsum(int n) { (void)n; return -1; }
"""


def marker_name(dll: Path) -> str:
    """The marker file the plant at ``dll`` leaves when loaded."""
    return "".join("_" if c in "\\:/" else c for c in winpath(dll))


@dataclass(frozen=True)
class Plants:
    dll: Path  # the planted libqsum.dll
    wheel: Path  # a well-formed qsum 9.9 library wheel (satisfies >=1) carrying it

    def dll_at(self, where: Path) -> Path:
        where.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.dll, where / "libqsum.dll")
        return where / "libqsum.dll"

    def registry_at(self, where: Path) -> Path:
        """``where/dllreg.libs/qsum`` installed from the plant wheel; returns its DLL."""
        install_wheel(self.wheel, where)
        return where / "dllreg.libs" / "qsum" / "bin" / "libqsum.dll"


@pytest.fixture(scope="module")
def plants(tmp_path_factory: pytest.TempPathFactory) -> Plants:
    from dllreg.cli.main import main

    tmp = tmp_path_factory.mktemp("winpy-plants")
    dll = mingw(tmp / "src" / "bin" / "libqsum.dll", PLANT_C, "-shared")
    assert main(["package-lib", "qsum", "--version", "9.9", "--from", str(tmp / "src"),
                 "-o", str(tmp / "wheel")]) == 0
    return Plants(dll, next((tmp / "wheel").glob("*.whl")))


@dataclass
class Installed:
    """An interpreter copy with qsum and cpkg installed into Lib\\site-packages by its pip."""

    py: WinPython
    tmp: Path
    markers: Path
    house: Path

    @property
    def registry_dll(self) -> Path:
        return self.py.site_packages / "dllreg.libs" / "qsum" / "bin" / "libqsum.dll"

    @property
    def pyd(self) -> Path:
        return self.py.site_packages / "cpkg" / f"_ext.{self.py.tag}-win_amd64.pyd"

    def probe(self, wine: WineBed, *, env: dict[str, str] | None = None, cwd: Path | None = None,
              **kw: object) -> dict[str, object]:
        code = probe_code(markers=self.markers, pyd=self.pyd, **kw)  # type: ignore[arg-type]
        env = {"PLANT_MARKERS": winpath(self.markers), **(env or {})}
        doc, stderr = winpython.run_json(wine, self.py, code, env=env, cwd=cwd or self.tmp)
        doc["stderr"] = stderr
        return doc


def same_path(a: object, b: Path | str) -> bool:
    """``a`` (a path python.exe reported) names ``b`` (a host path, or a Windows one)."""
    return isinstance(a, str) and a.lower() == (winpath(b) if isinstance(b, Path) else b).lower()


@pytest.fixture(scope="module", params=MINORS, ids=[f"cp{m.replace('.', '')}" for m in MINORS])
def installed(request: pytest.FixtureRequest, wine: WineBed, house: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp(f"winpy-{request.param}")
    py = winpython.prepare(request.param).copy(tmp / "python")
    # The real pip resolves cpkg's Requires-Dist (dllreg-lib-qsum>=1) from the find-links dir.
    proc = winpython.pip(wine, py, "install", "--no-index", "--no-compile", "--find-links",
                         winpath(house), "cpkg")
    assert "Successfully installed cpkg-1.0 dllreg-lib-qsum-1.0" in proc.stdout, proc.stdout
    markers = tmp / "markers"
    markers.mkdir()
    inst = Installed(py, tmp, markers, house)
    assert inst.registry_dll.is_file() and inst.pyd.is_file()
    return inst


def assert_registry_copy_only(inst: Installed, r: dict[str, object]) -> None:
    assert r["markers"] == [], f"a planted libqsum.dll ran its DllMain: {r['markers']}"
    assert (r["err"], r["total"]) == ("", 5050), r
    mods = r["mods"]
    assert isinstance(mods, list) and len(mods) == 1 and same_path(mods[0], inst.registry_dll), mods


def test_the_interpreter_is_the_official_one(wine: WineBed, installed: Installed) -> None:
    code = ("import sys, json; print(json.dumps([sys.version, sys.platform, sys.executable, "
            "sys.winver]))")
    proc = winpython.run(wine, installed.py, "-c", code)
    version, platform, exe, winver = __import__("json").loads(proc.stdout)
    cpython = winpython.EMBED[installed.py.minor][1]
    assert version.startswith(f"{cpython} (tags/v{cpython}:") and "MSC v." in version, version
    assert (platform, winver) == ("win32", installed.py.minor)
    assert same_path(exe, installed.py.exe)


def test_stub_preloads_the_registry_copy(wine: WineBed, installed: Installed) -> None:
    r = installed.probe(wine)
    assert_registry_copy_only(installed, r)
    # The control: CPython's own loader, without the stub, does not find libqsum.dll.
    r = installed.probe(wine, mode="pyd")
    assert r["total"] is None and r["mods"] == []
    assert str(r["err"]).startswith("ImportError: DLL load failed while importing _ext:"), r


def test_debug_trace_and_loaddll_come_from_the_real_interpreter(wine: WineBed, installed: Installed) -> None:
    r = installed.probe(wine, env={"DLLREG_DEBUG": "1", "WINEDEBUG": "+loaddll"})
    assert_registry_copy_only(installed, r)
    stderr = str(r["stderr"])
    lines = [line for line in stderr.splitlines() if line.startswith("dllreg: ")]
    site = winpath(installed.py.site_packages)
    dll = winpath(installed.registry_dll)
    assert lines == [f"dllreg: cpkg: no qsum registered by conda in {site}",
                     f"dllreg: cpkg: no qsum registered by system in {site}",
                     f"dllreg: cpkg: found qsum 1.0 at {site}\\dllreg.libs\\qsum",
                     f"dllreg: cpkg: loaded qsum by absolute path {dll} (_ctypes)"]
    qsum = [(p, how) for p, how in winpython.loaddll_trace(stderr) if "libqsum" in p.lower()]
    assert [(p.lower(), how) for p, how in qsum] == [(winpath(installed.registry_dll).lower(), "native")]
    # the interpreter's own modules, as Wine's loader saw them: python3X.dll from the distribution
    assert any(same_path(p, installed.py.dll) for p, _ in winpython.loaddll_trace(stderr))


# -- planting vectors, with python.exe's own loader ---------------------------------------------


def assert_plant_loaded(r: dict[str, object], plant: Path) -> None:
    """The control: the vector is live (the plant at ``plant`` was loaded and computed)."""
    assert (r["total"], r["markers"]) == (-1, [marker_name(plant)]), r
    mods = r["mods"]
    assert isinstance(mods, list) and len(mods) == 1 and same_path(mods[0], plant), mods


@contextmanager
def library_elsewhere(inst: Installed) -> Iterator[Path]:
    """qsum moved out of the consumer's own site into ``<tmp>/libsite`` for the duration:
    then the stub's search walks sys.path, where the relative entries are."""
    here, there = inst.py.site_packages / "dllreg.libs", inst.tmp / "libsite" / "dllreg.libs"
    there.parent.mkdir(exist_ok=True)
    here.rename(there)
    try:
        yield there.parent
    finally:
        there.rename(here)


def test_plant_on_path(wine: WineBed, installed: Installed, plants: Plants) -> None:
    where = installed.tmp / "on-path"
    plant = plants.dll_at(where)
    plants.registry_at(where)
    env = {"WINEPATH": winpath(where)}
    assert_plant_loaded(installed.probe(wine, mode="ctypes0", env=env), plant)  # LoadLibrary(name)
    clear(installed)
    assert_registry_copy_only(installed, installed.probe(wine, env=env))


def test_plant_in_the_current_directory(wine: WineBed, installed: Installed, plants: Plants) -> None:
    cwd = installed.tmp / "cwd"
    plant = plants.dll_at(cwd)
    plants.registry_at(cwd)
    # the pre-3.8 search includes the current directory
    assert_plant_loaded(installed.probe(wine, mode="ctypes0", cwd=cwd), plant)
    clear(installed)
    assert_registry_copy_only(installed, installed.probe(wine, cwd=cwd, front=["", "."]))
    # and with the library not in the consumer's own site, so the search walks sys.path
    with library_elsewhere(installed) as libsite:
        r = installed.probe(wine, cwd=cwd, front=["", ".", winpath(libsite)])
    lib = libsite / "dllreg.libs" / "qsum" / "bin" / "libqsum.dll"
    assert (r["markers"], r["err"], r["total"]) == ([], "", 5050), r
    assert len(r["mods"]) == 1 and same_path(r["mods"][0], lib), r  # type: ignore[arg-type,index]


def test_plant_beside_the_pyd(wine: WineBed, installed: Installed, plants: Plants) -> None:
    plant = plants.dll_at(installed.pyd.parent)
    try:
        # LOAD_LIBRARY_SEARCH_DLL_LOAD_DIR: CPython's importer alone loads the copy beside the .pyd
        assert_plant_loaded(installed.probe(wine, mode="pyd"), plant)
        clear(installed)
        assert_registry_copy_only(installed, installed.probe(wine))
    finally:
        plant.unlink()


def test_plant_in_another_packages_dll_directory(wine: WineBed, installed: Installed,
                                                 plants: Plants) -> None:
    added = installed.tmp / "added"
    plant = plants.dll_at(added)
    other = installed.tmp / "other-site" / "otherpkg"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text(f"import os\n_h = os.add_dll_directory({winpath(added)!r})\n")
    front = [winpath(other.parent)]
    assert_plant_loaded(installed.probe(wine, mode="pyd", front=front, other=["otherpkg"]), plant)
    clear(installed)
    assert_registry_copy_only(installed, installed.probe(wine, front=front, other=["otherpkg"]))


@pytest.mark.parametrize("entry", ["", ".", "rel\\dir"], ids=["empty", "dot", "rel-dir"])
def test_plant_behind_a_relative_sys_path_entry(wine: WineBed, installed: Installed, plants: Plants,
                                                entry: str) -> None:
    cwd = installed.tmp / f"relcwd-{len(entry)}"
    where = cwd / entry.replace("\\", "/")
    plant = plants.registry_at(where)
    plants.dll_at(where)
    with library_elsewhere(installed) as libsite:
        # The control: the same directory as an absolute entry is searched, and its plant loads.
        r = installed.probe(wine, cwd=cwd, front=[winpath(where), winpath(libsite)])
        assert_plant_loaded(r, plant)
        clear(installed)
        r = installed.probe(wine, cwd=cwd, front=[entry, winpath(libsite)])
    lib = libsite / "dllreg.libs" / "qsum" / "bin" / "libqsum.dll"
    assert (r["markers"], r["err"], r["total"]) == ([], "", 5050), r
    assert len(r["mods"]) == 1 and same_path(r["mods"][0], lib), r  # type: ignore[arg-type,index]


def clear(inst: Installed) -> None:
    for m in inst.markers.iterdir():
        m.unlink()


# -- the embeddable distribution's own rules ----------------------------------------------------


def test_pth_fixes_sys_path_and_ignores_pythonpath(wine: WineBed, installed: Installed,
                                                   plants: Plants) -> None:
    # A full plant on PYTHONPATH: a registry entry, a bare DLL and a cpkg of its own.
    where = installed.tmp / "pythonpath"
    plants.registry_at(where)
    plants.dll_at(where)
    (where / "cpkg").mkdir()
    (where / "cpkg" / "__init__.py").write_text("raise ImportError('the PYTHONPATH cpkg')\n")
    r = installed.probe(wine, env={"PYTHONPATH": winpath(where), "PYTHONHOME": winpath(where)})
    home = installed.py.home
    zip_entry = home / f"python{installed.py.tag[2:]}.zip"
    # exactly the ._pth lines, the zip first; not the script's folder, not PYTHONPATH
    assert r["sys_path"] == [winpath(zip_entry), winpath(home), winpath(installed.py.site_packages)]
    assert zip_entry.is_file() and r["isolated"] == 1
    assert_registry_copy_only(installed, r)


def test_a_zip_entry_on_sys_path_is_searched_past(wine: WineBed, installed: Installed) -> None:
    """The consumer in a folder the ._pth lists after Lib\\site-packages, the library in
    Lib\\site-packages: the stub walks sys.path from python3X.zip (a file) onwards."""
    py = installed.py
    target = py.home / "consumers"
    (wheel,) = installed.house.glob(f"cpkg-1.0-{py.tag}-*.whl")
    install_wheel(wheel, target)  # the layout is under test here, not pip (the fixture used it)
    original = py.pth.read_text()
    lines = original.splitlines()
    py.pth.unlink()  # the file is hard-linked to the cache: replace it, never write through it
    py.pth.write_text("\n".join([*lines[:-1], "consumers", lines[-1], ""]))
    away = installed.tmp / "cpkg-away"
    (py.site_packages / "cpkg").rename(away)  # only the copy in consumers\ is left
    try:
        for debug in ("", "1"):  # the fast path, then the traced cold path
            r = installed.probe(wine, env={"DLLREG_DEBUG": debug})
            assert r["sys_path"][-1] == winpath(target)  # type: ignore[index]
            assert_registry_copy_only(installed, r)
            assert same_path(r["cpkg_file"], target / "cpkg" / "__init__.py")
        trace = [line for line in str(r["stderr"]).splitlines() if line.startswith("dllreg: ")]
        zip_entry = winpath(py.home / f"python{py.tag[2:]}.zip")
        assert f"dllreg: cpkg: no qsum in {zip_entry}" in trace, trace
        dll = winpath(installed.registry_dll)
        assert trace[-1] == f"dllreg: cpkg: loaded qsum by absolute path {dll} (_ctypes)"
    finally:
        py.pth.unlink()
        py.pth.write_text(original)
        shutil.rmtree(target)
        away.rename(py.site_packages / "cpkg")
