"""dllreg itself on the official CPython for Windows under Wine: ``list``, ``check`` and
``inspect`` give the answers they give on Linux for the same wheels.

The real Windows pip installs dllreg (the wheel built from this checkout) with packaging,
installer and pefile, the qsum library wheel and the cpkg consumer (test_winpython.py
builds both) into the interpreter's Lib\\site-packages; on Linux ``installer`` puts the same
two wheels into a directory that dllreg is pointed at. The ``--json`` outputs are compared
after the site directory is replaced by ``<site>`` and Windows separators by ``/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import winebed
import winpython
from test_stub_runtime import install_wheel
from test_winpython import house
from winebed import WineBed, winpath
from winpython import WinPython

pytestmark = [pytest.mark.wine,
              pytest.mark.skipif(winebed.missing_tools() is not None, reason=str(winebed.missing_tools()))]
wine = winebed.wine
__all__ = ["house"]

MINOR = "3.12"  # the newer one (its _wmi gap is worked around by the bed's sitecustomize)


def normalise(doc: Any, places: dict[str, str]) -> Any:
    """``doc`` with each directory in ``places`` replaced by its token (``<site>``) and
    ``\\`` as ``/`` in every string."""
    if isinstance(doc, dict):
        return {k: normalise(v, places) for k, v in doc.items()}
    if isinstance(doc, list):
        return [normalise(v, places) for v in doc]
    if isinstance(doc, str):
        for where, token in places.items():
            doc = doc.replace(where, token)
        return doc.replace("\\", "/")
    return doc


def py_tag(minor: str) -> str:
    return "cp" + minor.replace(".", "")


def wheels_for(house: Path) -> tuple[Path, Path]:
    (library,) = house.glob("dllreg_lib_qsum-*.whl")
    (consumer,) = house.glob(f"cpkg-1.0-{py_tag(MINOR)}-*.whl")
    return library, consumer


@pytest.fixture(scope="module")
def windows_dllreg(wine: WineBed, wheelhouse: Path, house: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> WinPython:
    py = winpython.prepare(MINOR).copy(tmp_path_factory.mktemp("winpy-dllreg") / "python")
    out = winpython.pip(wine, py, "install", "--no-index", "--no-compile", "--find-links",
                        winpath(wheelhouse), "--find-links", winpath(house), "dllreg", "cpkg").stdout
    for dist in ("dllreg-", "packaging-", "installer-", "pefile-", "cpkg-1.0", "dllreg-lib-qsum-1.0"):
        assert dist in out, out
    return py


def on_windows(wine: WineBed, py: WinPython, *args: str | Path, house: Path) -> tuple[int, Any]:
    proc = winpython.run(wine, py, "-m", "dllreg", *args, cwd=py.home)
    assert proc.stdout.strip(), proc.stderr
    places = {winpath(py.site_packages): "<site>", winpath(house): "<house>"}
    return proc.returncode, normalise(json.loads(proc.stdout), places)


def on_linux(site: Path, *args: str | Path, house: Path) -> tuple[int, Any]:
    proc = subprocess.run([sys.executable, "-m", "dllreg", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(site)}, cwd=site)
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, normalise(json.loads(proc.stdout), {str(site): "<site>", str(house): "<house>"})


@pytest.fixture(scope="module")
def linux_site(house: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("linux-site") / "site-packages"
    for wheel in wheels_for(house):
        install_wheel(wheel, site)
    return site


def test_runs_on_the_windows_interpreter(wine: WineBed, windows_dllreg: WinPython) -> None:
    code = "import dllreg, sys; print(dllreg.__file__, sys.platform)"
    proc = winpython.run(wine, windows_dllreg, "-c", code)
    assert proc.returncode == 0 and proc.stdout.strip().endswith(" win32"), proc
    assert "\\Lib\\site-packages\\dllreg\\" in proc.stdout


@pytest.mark.parametrize("command", [["list", "--json"], ["check", "--json"]], ids=["list", "check"])
def test_list_and_check_agree_with_linux(wine: WineBed, windows_dllreg: WinPython, linux_site: Path,
                                         house: Path, command: list[str]) -> None:
    win_rc, win = on_windows(wine, windows_dllreg, *command, house=house)
    lin_rc, lin = on_linux(linux_site, *command, "--path", str(linux_site), house=house)
    print(json.dumps(win, indent=1))
    assert win_rc == lin_rc
    assert win == lin


def test_inspect_agrees_with_linux(wine: WineBed, windows_dllreg: WinPython, linux_site: Path,
                                   house: Path) -> None:
    for wheel in wheels_for(house):
        win_rc, win = on_windows(wine, windows_dllreg, "inspect", wheel, "--json", house=house)
        lin_rc, lin = on_linux(linux_site, "inspect", wheel, "--json", house=house)
        print(json.dumps(win, indent=1))
        assert (win_rc, win) == (lin_rc, lin), wheel.name


def test_check_finds_the_same_problems(wine: WineBed, windows_dllreg: WinPython, linux_site: Path,
                                       house: Path) -> None:
    # Last in the module: it breaks both sites the same way (the library's DLL deleted).
    for site in (windows_dllreg.site_packages, linux_site):
        (site / "dllreg.libs" / "qsum" / "bin" / "libqsum.dll").unlink()
    win_rc, win = on_windows(wine, windows_dllreg, "check", "--verify", "--json", house=house)
    lin_rc, lin = on_linux(linux_site, "check", "--verify", "--json", "--path", str(linux_site), house=house)
    print(json.dumps(win, indent=1))
    assert win_rc == lin_rc != 0
    assert win == lin and win["problems"], win
