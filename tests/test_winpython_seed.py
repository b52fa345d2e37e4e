"""The seed (bpo-35688, ../shared/seed), replayed on the official CPython for Windows under Wine.

"pip install --user numpy fails": the extension's DLL cannot be found once PATH is no
longer searched (CPython >= 3.8). Here the real Windows pip installs the qsum library wheel
and the cpkg consumer (test_winpython.py builds both) with ``--user`` into the user site
(``%APPDATA%\\Python\\Python3X\\site-packages`` inside the Wine prefix), split both ways
between the user site and the base environment, and python.exe imports the consumer.

The control is the same extension vendored the pre-3.8 way: ``vpkg/.libs/libqsum.dll``,
which ``vpkg/__init__.py`` puts on PATH before importing the extension (what numpy did
then). The interpreter fails it with its own error, "DLL load failed while importing _ext".

These run on the ``full`` layout (the embeddable without its ._pth: CPython's default
sys.path, as an installed Python has), so the user site is what site.py makes of APPDATA.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import winebed
import winpython
from dllreg.wheelfile import WheelWriter
from test_winpython import MINORS, house, probe_code, same_path
from winebed import WineBed, winpath
from winpython import WinPython

pytestmark = [pytest.mark.wine,
              pytest.mark.skipif(winebed.missing_tools() is not None, reason=str(winebed.missing_tools()))]
wine = winebed.wine
__all__ = ["house"]  # the fixture, shared with test_winpython

VENDORED_INIT = """\
# The pre-3.8 recipe: put the package's DLL folder on PATH, then import the extension.
import os
_libs = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".libs")
os.environ["PATH"] = _libs + os.pathsep + os.environ.get("PATH", "")
from ._ext import total
"""


def vendored_wheel(house: Path, tag: str) -> Path:
    """vpkg: cpkg's own extension and the library's own DLL, vendored the pre-3.8 way."""
    (consumer,) = house.glob(f"cpkg-1.0-{tag}-{tag}-win_amd64.whl")
    (library,) = house.glob("dllreg_lib_qsum-*.whl")
    with zipfile.ZipFile(consumer) as zf:
        (ext,) = [n for n in zf.namelist() if n.endswith(".pyd")]
        pyd = zf.read(ext)
    with zipfile.ZipFile(library) as zf:
        (member,) = [n for n in zf.namelist() if n.endswith("/libqsum.dll")]
        dll = zf.read(member)
    dist_info = "vpkg-1.0.dist-info"
    out = house.parent / "vendored" / f"vpkg-1.0-{tag}-{tag}-win_amd64.whl"
    with WheelWriter(out, dist_info) as w:
        w.add("vpkg/__init__.py", VENDORED_INIT.encode())
        w.add(f"vpkg/{ext.split('/')[-1]}", pyd)
        w.add("vpkg/.libs/libqsum.dll", dll)
        w.add(f"{dist_info}/METADATA", b"Metadata-Version: 2.1\nName: vpkg\nVersion: 1.0\n")
        w.add(f"{dist_info}/WHEEL", f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n"
                                    f"Tag: {tag}-{tag}-win_amd64\n".encode())
    return out


def c_drive(wine: WineBed, path: Path) -> str:
    """The Windows path of a host path in the prefix's drive C: (Wine reports C:, not Z:)."""
    return "C:\\" + str(path.relative_to(wine.prefix / "drive_c")).replace("/", "\\")


@dataclass(frozen=True)
class Seeded:
    py: WinPython
    user_site: Path  # host path of %APPDATA%\Python\Python3X\site-packages in the prefix
    markers: Path
    house: Path

    def pip(self, wine: WineBed, *args: str) -> str:
        proc = winpython.pip(wine, self.py, "install", "--no-index", "--no-compile", "--find-links",
                             winpath(self.house), *args)
        return proc.stdout

    def probe(self, wine: WineBed, pkg: str = "cpkg") -> dict[str, object]:
        doc, _ = winpython.run_json(wine, self.py, probe_code(markers=self.markers, pkg=pkg),
                                    cwd=self.markers)
        return doc


def user_site(wine: WineBed, py: WinPython) -> Path:
    """The host path of the interpreter's user site (site.getusersitepackages()), via Wine."""
    proc = winpython.run(wine, py, "-c", "import json, site; print(json.dumps(site.getusersitepackages()))")
    win = json.loads(proc.stdout)
    assert win.lower().startswith("c:\\users\\") and "\\appdata\\roaming\\python\\" in win.lower(), win
    drive_c = wine.prefix / "drive_c"
    return drive_c.joinpath(*win[3:].split("\\"))


@pytest.fixture(params=MINORS, ids=[f"cp{m.replace('.', '')}" for m in MINORS])
def seeded(request: pytest.FixtureRequest, wine: WineBed, house: Path, tmp_path: Path
           ) -> Iterator[Seeded]:
    py = winpython.prepare(request.param, "full").copy(tmp_path / "python")
    site = user_site(wine, py)
    python_dir = site.parent.parent  # %APPDATA%\Python: shared by the prefix's sessions
    shutil.rmtree(python_dir, ignore_errors=True)
    markers = tmp_path / "markers"
    markers.mkdir()
    try:
        yield Seeded(py, site, markers, house)
    finally:
        shutil.rmtree(python_dir, ignore_errors=True)


def assert_imports_from(r: dict[str, object], dll: Path | str) -> None:
    assert (r["err"], r["total"], r["markers"]) == ("", 5050, []), r
    mods = r["mods"]
    assert isinstance(mods, list) and len(mods) == 1 and same_path(mods[0], dll), mods


@pytest.mark.parametrize("split", ["library-user", "consumer-user"])
def test_pip_install_user_then_import(wine: WineBed, seeded: Seeded, split: str) -> None:
    # (both in the user site: test_control_vendored_...)
    base = seeded.py.site_packages
    if split == "library-user":
        seeded.pip(wine, "--user", "dllreg-lib-qsum")
        seeded.pip(wine, "--no-deps", "cpkg")
        lib_site, consumer_site = seeded.user_site, base
    else:
        seeded.pip(wine, "dllreg-lib-qsum")
        out = seeded.pip(wine, "--user", "cpkg")  # the requirement is already met by the base site
        assert "Successfully installed cpkg-1.0\n" in out, out
        lib_site, consumer_site = base, seeded.user_site
    dll = lib_site / "dllreg.libs" / "qsum" / "bin" / "libqsum.dll"
    assert dll.is_file() and (consumer_site / "cpkg" / "_dlls.py").is_file()
    other = base if lib_site == seeded.user_site else seeded.user_site
    assert not (other / "dllreg.libs").exists()

    def win(p: Path) -> str:
        return winpath(p) if p == base or p.is_relative_to(base) else c_drive(wine, p)

    r = seeded.probe(wine)
    assert_imports_from(r, win(dll))
    assert same_path(r["cpkg_file"], win(consumer_site / "cpkg" / "__init__.py"))
    sys_path = [str(e).lower() for e in r["sys_path"]]  # type: ignore[attr-defined]
    assert sys_path.index(win(seeded.user_site).lower()) < sys_path.index(winpath(base).lower())


def test_control_vendored_the_pre_38_way_fails_with_the_interpreters_error(
        wine: WineBed, seeded: Seeded) -> None:
    """And the seed itself: library and consumer both ``pip install --user``-ed."""
    vendored = vendored_wheel(seeded.house, seeded.py.tag)
    out = seeded.pip(wine, "--user", str(winpath(vendored)), "cpkg")
    # pip resolves dllreg-lib-qsum into the user site too
    assert "Successfully installed cpkg-1.0 dllreg-lib-qsum-1.0 vpkg-1.0" in out, out
    r = seeded.probe(wine, pkg="vpkg")
    assert r["total"] is None and r["mods"] == [], r
    assert str(r["err"]).startswith("ImportError: DLL load failed while importing _ext: "), r
    assert (seeded.user_site / "vpkg" / ".libs" / "libqsum.dll").is_file()
    # The dllreg build of the same extension, in the same user site, imports.
    dll = seeded.user_site / "dllreg.libs" / "qsum" / "bin" / "libqsum.dll"
    assert not (seeded.py.site_packages / "dllreg.libs").exists()
    r = seeded.probe(wine)
    assert_imports_from(r, c_drive(wine, dll))
    assert same_path(r["cpkg_file"], c_drive(wine, seeded.user_site / "cpkg" / "__init__.py"))
