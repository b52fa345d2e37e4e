"""PyInstaller freezes an app that imports a dllreg consumer, onedir and onefile, with the real
PyInstaller and dllreg's own hook (found through the ``pyinstaller40`` entry point): no
"Library not found" about the registry library, and the frozen app runs from another
directory after the build environment is gone, the stub loading the copy inside the app
(``sys._MEIPASS/dllreg.libs``) with base_library.zip first on sys.path. Slow: e2e.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from clientbed import ClientBed
from conftest import has_gcc, run
from test_e2e import write_consumer

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not has_gcc(), reason="needs gcc")]

APP = """\
import sys
import qapp

maps = {l.split()[-1] for l in open("/proc/self/maps") if "libqsum" in l}
print(qapp.qsum(100), qapp._dlls.path("qsum"), sys._MEIPASS, len(maps), sys.path[0])
"""


@pytest.fixture(scope="module")
def frozen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """Both apps built, then the build venv removed; (root, mode -> PyInstaller's log)."""
    bed = ClientBed(tmp_path_factory.mktemp("freeze"))
    wheel = bed.build(write_consumer(bed.root, "qapp", ["qsum>=3.1"]))
    python = bed.venv("venv")
    import PyInstaller  # the version the test extra installed

    bed.install(python, str(wheel), "dllreg", f"pyinstaller=={PyInstaller.__version__}")
    (bed.root / "app.py").write_text(APP)
    logs = {}
    for mode in ("onedir", "onefile"):
        r = run([str(python), "-m", "PyInstaller", "--noconfirm", f"--{mode}", "--name",
                 f"app-{mode}", "--distpath", str(bed.root / "dist"), "--workpath",
                 str(bed.root / "work"), "--specpath", str(bed.root / "spec"),
                 str(bed.root / "app.py")], cwd=bed.root,
                env={**os.environ, "XDG_CACHE_HOME": str(bed.root / "cache")})  # hooks go here
        logs[mode] = r.stdout + r.stderr
    assert (bed.root / "cache" / "dllreg" / "pyinstaller-hooks").is_dir()
    shutil.rmtree(bed.root / "venv")  # the frozen apps must not need the build environment
    yield bed.root, logs


@pytest.mark.parametrize("mode", ["onedir", "onefile"])
def test_frozen_app_loads_the_collected_library(frozen: tuple[Path, dict[str, str]],
                                                mode: str) -> None:
    root, logs = frozen
    log = logs[mode]
    assert "dllreg" in log and "hook-qapp._dlls" in log, log[-3000:]
    missing = [line for line in log.splitlines() if "Library not found" in line]
    assert not [line for line in missing if "qsum" in line], missing
    exe = root / "dist" / (f"app-{mode}/app-{mode}" if mode == "onedir" else f"app-{mode}")
    elsewhere = root / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    for debug in ("", "1"):  # the fast path, then the full algorithm (DLLREG_DEBUG)
        r = subprocess.run([str(exe)], capture_output=True, text=True, cwd=elsewhere,
                           env={**os.environ, "DLLREG_DEBUG": debug})
        assert r.returncode == 0, r.stderr
        total, path, meipass, maps, first = r.stdout.split()
        assert (total, maps) == ("5050", "1")
        assert path == os.path.join(meipass, "dllreg.libs", "qsum", "lib", "libqsum.so.3")
        assert first.endswith("base_library.zip"), first
        if debug:
            assert f"qapp: loaded qsum by absolute path {path}" in r.stderr, r.stderr
