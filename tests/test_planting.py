"""No planting: a library with the registry library's SONAME, put where a loader or a naive
search would look, is never loaded in place of the registry copy.

Each planted ``libqsum.so.3`` has a constructor that creates a marker file, so "never loaded"
is observed directly (a mapped-but-unused copy would not change ``qsum``'s result). Every
vector asserts three things in a fresh interpreter: no marker, only the registry copy of
libqsum in ``/proc/self/maps`` (and ``qsum`` computes with it), and every path the stub handed
to the loader (recorded through the ``_dllreg_state.loader`` seam, which then really loads)
is absolute, normalized, and under a site directory or a registered provider's path.

test_stub_runtime.py already shows the right *result* for the current directory and
LD_LIBRARY_PATH; here each vector also gets the marker, the maps and the loader record.
The Windows vector (a directory added with ``os.add_dll_directory`` by another package) is
replayed under Wine, as in test_wine_stub.py.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import test_stub_runtime
import winebed
from conftest import gcc_shared, has_gcc
from dllreg.cli.main import main
from test_stub_runtime import add_consumer, add_library

pytestmark = pytest.mark.skipif(not has_gcc(), reason="needs gcc")

PLANT_C = r"""
#include <fcntl.h>
#include <unistd.h>
__attribute__((constructor)) static void planted(void) {
    int fd = open("MARKER", O_WRONLY | O_CREAT, 0644);
    if (fd >= 0) close(fd);
}
long qsum(long n) { (void)n; return -1; }
"""

# Runs in the child: optionally record every path the stub gives the loader (then load it for
# real with _ctypes, RTLD_LOCAL as the stub asks), import the consumer, report what happened.
PROBE = """
import json, os, sys, _ctypes
sys.path[:0] = [*{front!r}, {site!r}]  # relative plants first, then the real site
calls = []
if {record!r}:
    from dllreg.stub._runtime import _state
    st = _state()
    st.loader = lambda path, flags: calls.append(path) or _ctypes.dlopen(path, flags)
try:
    import cpkg
    total, err = cpkg.total(100), ""
except ImportError as e:
    total, err = None, type(e).__name__ + ": " + str(e)
maps = sorted({{l.split()[-1] for l in open('/proc/self/maps') if 'libqsum' in l}})
print(json.dumps({{"total": total, "err": err, "calls": calls, "maps": maps}}))
"""

wine = winebed.wine  # the session fixture (see winebed.py)

TESTED: dict[str, str] = {}  # vector -> outcome, printed once at the end of the module


@pytest.fixture(scope="module", autouse=True)
def _count() -> Iterator[None]:
    yield
    if TESTED:
        held = sum(v in ("registry copy only", "cwd never used", "refused") for v in TESTED.values())
        print(f"\nplanting: {len(TESTED)} vectors tested, {held} held: "
              + ", ".join(f"{k}={v}" for k, v in TESTED.items()))


def plant_library(path: Path, marker: Path) -> Path:
    """A libqsum.so.3 (same SONAME as the registry's) that leaves ``marker`` when loaded."""
    return gcc_shared(path, PLANT_C.replace("MARKER", str(marker)), "libqsum.so.3")


def plant_registry(tmp: Path, where: Path, marker: Path) -> Path:
    """A complete, well-formed ``dllreg.libs/qsum`` (9.9, satisfies any >=) inside ``where``."""
    return add_library(tmp, where, "9.9", PLANT_C.replace("MARKER", str(marker)))


@dataclass
class Probe:
    total: int | None
    err: str
    calls: list[str]
    maps: list[str]
    markers: list[str] = field(default_factory=list)


def probe(site: Path, *, front: tuple[str, ...] = (), record: bool, cwd: Path, markers: Path,
          **env: str) -> Probe:
    code = PROBE.format(front=list(front), site=str(site), record=record)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, "DLLREG_DEBUG": "", **env})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout.splitlines()[-1])
    return Probe(**doc, markers=sorted(p.name for p in markers.iterdir()))


def assert_registry_copy_only(r: Probe, registry_file: Path, roots: tuple[Path, ...]) -> None:
    assert r.markers == [], f"a planted library ran its constructor: {r.markers}"
    assert (r.err, r.total) == ("", 5050)
    assert r.maps == [os.path.realpath(registry_file)]
    for p in r.calls:
        assert os.path.isabs(p) and os.path.normpath(p) == p, p
        assert any(Path(p).is_relative_to(root) for root in roots), p


class World:
    """A real site with the registry qsum 3.1.4 and consumer cpkg; plants go elsewhere."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.site = tmp / "site"
        self.site.mkdir()
        self.registry = add_library(tmp, self.site) / "lib" / "libqsum.so.3"
        add_consumer(tmp, self.site, "cpkg")
        self.markers = tmp / "markers"
        self.markers.mkdir()
        self.cwd = tmp / "cwd"
        self.cwd.mkdir()

    def marker(self, vector: str) -> Path:
        return self.markers / vector

    def check(self, vector: str, *, front: tuple[str, ...] = (), **env: str) -> None:
        for record in (True, False):  # recorded loader calls, then the stub's own loader
            r = probe(self.site, front=front, record=record, cwd=self.cwd, markers=self.markers,
                      **env)
            assert_registry_copy_only(r, self.registry, (self.site,))
            assert r.calls == ([str(self.registry)] if record else [])
        TESTED[vector] = "registry copy only"


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_control_a_planted_library_leaves_its_marker(world: World) -> None:
    # The marker is real: loading a plant (here on purpose) creates it.
    lib = plant_library(world.tmp / "control" / "libqsum.so.3", world.marker("control"))
    subprocess.run([sys.executable, "-c", f"import ctypes; ctypes.CDLL({str(lib)!r})"], check=True)
    assert [p.name for p in world.markers.iterdir()] == ["control"]


def test_a_current_directory(world: World) -> None:
    # python -c puts '' first on sys.path; a bare library and a full registry entry both sit
    # in the current directory, and '.' is on sys.path too.
    plant_library(world.cwd / "libqsum.so.3", world.marker("cwd-lib"))
    plant_registry(world.tmp, world.cwd, world.marker("cwd-registry"))
    world.check("a:cwd", front=(".",))


@pytest.mark.parametrize("entry", ["", "rel/dir"], ids=["empty", "rel-dir"])
def test_b_relative_sys_path_entry(world: World, entry: str) -> None:
    where = world.cwd / entry
    where.mkdir(parents=True, exist_ok=True)
    plant_registry(world.tmp, where, world.marker(f"relpath-{entry or 'empty'}"))
    plant_library(where / "libqsum.so.3", world.marker(f"relpath-lib-{entry or 'empty'}"))
    world.check(f"b:sys.path[{entry!r}]", front=(entry,))


def test_c_path_directory(world: World) -> None:
    plant = world.tmp / "on-path"
    plant_library(plant / "libqsum.so.3", world.marker("path-lib"))
    plant_registry(world.tmp, plant, world.marker("path-registry"))
    world.check("c:PATH", PATH=f"{plant}{os.pathsep}{os.environ.get('PATH', '')}")


def test_d_ld_library_path_at_start(world: World) -> None:
    plant = world.tmp / "ldpath"
    plant_library(plant / "libqsum.so.3", world.marker("ld-lib"))
    plant_registry(world.tmp, plant, world.marker("ld-registry"))
    world.check("d:LD_LIBRARY_PATH", LD_LIBRARY_PATH=str(plant))


def test_f_package_directory_loses_to_the_registry(world: World) -> None:
    pkg = world.site / "cpkg"
    plant_library(pkg / "libqsum.so.3", world.marker("beside-extension"))
    vendored = plant_registry(world.tmp, pkg, world.marker("vendored"))  # <pkg>/dllreg.libs/qsum
    world.check("f:package-dir")
    # Only DLLREG_PREFER=vendored lets the package's own copy win: the documented override,
    # and the proof that the vendored plant was loadable all along.
    r = probe(world.site, record=True, cwd=world.cwd, markers=world.markers,
              DLLREG_PREFER="vendored")
    mine = vendored / "lib" / "libqsum.so.3"
    assert (r.total, r.calls, r.maps, r.markers) == (-1, [str(mine)], [str(mine)], ["vendored"])


# -- (g) a registration whose manifest records a relative path ---------------------------------


def register(world: World) -> Path:
    """qsum registered from a directory outside the site; returns its MANIFEST."""
    libdir = world.tmp / "usr" / "lib"
    gcc_shared(libdir / "libqsum.so.3", "long qsum(long n){return n*(n+1)/2;}", "libqsum.so.3")
    assert main(["register", "--name", "qsum", "--version", "3.2", "--path",
                 str(libdir / "libqsum.so.3"), "--site", str(world.site)], out=io.StringIO()) == 0
    return world.site / "dllreg.libs" / "qsum.system" / "MANIFEST"


def test_g_a_registration_is_loaded_only_by_its_absolute_path(world: World) -> None:
    manifest = register(world)
    libdir = world.tmp / "usr" / "lib"
    plant_library(world.cwd / "libqsum.so.3", world.marker("cwd"))
    for record in (True, False):
        r = probe(world.site, record=record, cwd=world.cwd, markers=world.markers)
        assert_registry_copy_only(r, libdir / "libqsum.so.3", (world.site, libdir))
    assert f"Library: {libdir}/libqsum.so.3\t" in manifest.read_text()


def rewrite_library_path(manifest: Path, new: str) -> None:
    lines = manifest.read_text().split("\n")
    manifest.write_text("\n".join(
        "Library: " + "\t".join([new, *line.split("\t")[1:]]) if line.startswith("Library: ")
        else line for line in lines))


RELATIVE = {
    # (folder the manifest is in, Library path, where the plant goes relative to that folder)
    "registration-inside": ("qsum.system", "lib/libqsum.so.3", "lib/libqsum.so.3"),
    "registration-dotdot": ("qsum.system", "../../../plant/libqsum.so.3",
                            "../../../plant/libqsum.so.3"),
    "registration-cwd": ("qsum.system", "libqsum.so.3", None),  # plant in the current directory
    "wheel-dotdot": ("qsum", "../../../plant/libqsum.so.3", "../../../plant/libqsum.so.3"),
}


@pytest.mark.parametrize("case", sorted(RELATIVE))
def test_g_a_relative_library_path_is_refused_as_unreadable(world: World, case: str) -> None:
    folder, rel, plant_at = RELATIVE[case]
    if folder == "qsum.system":
        manifest = register(world)
        shutil.rmtree(world.site / "dllreg.libs" / "qsum")  # only the registration is left
    else:
        manifest = world.site / "dllreg.libs" / "qsum" / "MANIFEST"
    rewrite_library_path(manifest, rel)
    plant = manifest.parent / plant_at if plant_at else world.cwd / rel
    plant_library(Path(os.path.normpath(plant)), world.marker(case))
    r = probe(world.site, record=True, cwd=world.cwd, markers=world.markers)
    TESTED[f"g:{case}"] = ("PLANT LOADED" if r.markers else "refused" if "is unreadable" in r.err
                           else "not loaded, not refused")
    assert r.markers == [] and r.calls == [] and r.maps == []
    assert "is unreadable" in r.err and str(manifest) in r.err


def test_g_a_relative_registration_path_never_resolves_against_the_cwd(world: World) -> None:
    # A relative path in a registration is refused before the loader sees anything, so it is
    # never looked up from the current directory (nor joined to the registration's folder).
    manifest = register(world)
    shutil.rmtree(world.site / "dllreg.libs" / "qsum")
    rewrite_library_path(manifest, "libqsum.so.3")
    plant_library(world.cwd / "libqsum.so.3", world.marker("cwd"))
    r = probe(world.site, record=True, cwd=world.cwd, markers=world.markers)
    assert r.markers == [] and r.maps == [] and r.total is None
    assert r.calls == [] and "is unreadable" in r.err
    TESTED["g:registration-relative-vs-cwd"] = "cwd never used"


# -- (e) Windows: a directory another package added with os.add_dll_directory ------------------

# DllMain writes the marker: the Windows counterpart of the ELF constructor.
PLANT_DLL_C = r"""
#include <windows.h>
BOOL WINAPI DllMain(HINSTANCE h, DWORD reason, LPVOID reserved) {
    (void)h; (void)reserved;
    if (reason == DLL_PROCESS_ATTACH) {
        HANDLE f = CreateFileW(L"MARKER", GENERIC_WRITE, 0, NULL, CREATE_ALWAYS,
                               FILE_ATTRIBUTE_NORMAL, NULL);
        if (f != INVALID_HANDLE_VALUE) CloseHandle(f);
    }
    return TRUE;
}
__declspec(dllexport) int qsum(int n) { (void)n; return -1; }
"""
# Another package's extension that, on load, does what os.add_dll_directory does.
OTHER_PKG_C = r"""
#include <windows.h>
BOOL WINAPI DllMain(HINSTANCE h, DWORD reason, LPVOID reserved) {
    (void)h; (void)reserved;
    if (reason == DLL_PROCESS_ATTACH) AddDllDirectory(L"DIR");
    return TRUE;
}
"""


def c_wide(path: str) -> str:
    return path.replace("\\", "\\\\")


@pytest.mark.wine
def test_e_dll_directory_added_by_another_package(wine: winebed.WineBed, tmp_path: Path) -> None:
    from test_wine_stub import Bed, consumer, record

    (tmp_path / "bed").mkdir()
    bed = Bed(tmp_path / "bed")
    site = tmp_path / "site"
    test_stub_runtime.install_wheel(bed.wheel, site)
    consumer(site, "cpkg", "qsum>=1")
    registry_dll = site / "dllreg.libs" / "qsum" / "bin" / "libqsum.dll"
    marker = tmp_path / "markers" / "added-dir"
    marker.parent.mkdir()
    added = tmp_path / "added"
    winebed.mingw(added / "libqsum.dll",
                  PLANT_DLL_C.replace("MARKER", c_wide(winebed.winpath(marker))), "-shared")
    other = winebed.mingw(tmp_path / "otherpkg" / "_other.pyd",
                          OTHER_PKG_C.replace("DIR", c_wide(winebed.winpath(added))), "-shared")

    # The real stub's decisions (Windows mode, seams recording): one absolute registry path,
    # no DLL directory of its own.
    calls, err = record(site, imports="cpkg")
    assert (calls, err) == ([[winebed.CPYTHON_EXT_FLAGS, str(registry_dll)]], "")

    def replay(name: str, preloads: list[tuple[int, Path]]) -> winebed.HarnessResult:
        pre = winebed.write_preloads(tmp_path / f"{name}.preloads",
                                     [(winebed.CPYTHON_EXT_FLAGS, other), *preloads])
        proc = wine.run_harness(pre, bed.pyd, "ext_init", "libqsum.dll")
        print(f"$ replay {name}\n{proc.stdout}rc={proc.returncode}")
        return winebed.parse_harness(proc.stdout)

    # The control: the vector is live. With only the other package loaded, CPython's flags
    # (DEFAULT_DIRS includes the added directories) find the planted copy.
    res = replay("control", [])
    assert (res.init_result, res.deps["libqsum.dll"]) == (-1, winebed.winpath(added / "libqsum.dll"))
    assert marker.exists()
    marker.unlink()
    # With the stub's preloads replayed after it, the registry copy is the one bound.
    res = replay("stub", [(int(f), Path(str(p))) for f, p in calls])  # type: ignore[call-overload]
    assert (res.error, res.init_result) == (None, 5050)
    assert res.deps["libqsum.dll"] == winebed.winpath(registry_dll)
    assert not marker.exists(), "the planted DLL in the added directory was loaded"
    TESTED["e:os.add_dll_directory (Wine)"] = "registry copy only"
