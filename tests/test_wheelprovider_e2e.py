"""PyPI wheels installed as they are as providers (recipes' [pypi.FAMILY]), end to end: the real
scipy-openblas32 wheel installed by real pip into a fresh venv, the two example consumers built
through dllreg.build (isolated, real gcc) against its own .pc file, both imported in one
process, /proc/self/maps showing that wheel's file and nothing else; list/show/check on it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import CACHE, ROOT, run
from test_devendor_e2e import Env

DOWNLOADS = CACHE / "downloads"
OPENBLAS32 = "scipy-openblas32==0.3.34.481.3"

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(sys.platform != "linux" or not shutil.which("gcc"),
                                                   reason="Linux with gcc")]


def openblas32_wheel() -> Path:
    pattern = "scipy_openblas32-0.3.34.481.3-py3-none-manylinux*x86_64.whl"
    found = sorted(DOWNLOADS.glob(pattern))
    if not found:
        run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps",
             "--platform", "manylinux_2_28_x86_64", "-d", str(DOWNLOADS), OPENBLAS32])
        found = sorted(DOWNLOADS.glob(pattern))
    return found[-1]


@pytest.fixture(scope="module")
def house(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build tools of the shared wheelhouse plus a dllreg wheel of this checkout, built
    here: the shared one is rebuilt by every test session that runs on this machine."""
    out = tmp_path_factory.mktemp("house")
    for w in wheelhouse.glob("*.whl"):
        if not w.name.startswith("dllreg-"):
            (out / w.name).symlink_to(w)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)])
    return out


def consumer(tmp_path: Path, example: str, wheelhouse: Path, links: Path, providers: str = "") -> Path:
    """Build examples/<example> through dllreg.build in an isolated build env that pip fills
    from local directories only (--no-index): the wheelhouse (dllreg, setuptools) and ``links``."""
    src = tmp_path / "src" / example
    shutil.copytree(ROOT / "examples" / example, src, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    py = src / "pyproject.toml"
    text = py.read_text()
    kept = "\n".join(line for line in text.splitlines() if not line.startswith("providers ="))
    py.write_text(kept + (f"\nproviders = {providers}\n" if providers else "\n"))
    out = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index", "--find-links",
         str(wheelhouse), "--find-links", str(links), "-w", str(out), str(src)])
    return next(out.glob(f"{example}-*.whl"))


def requires_dist(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return [line.split(":", 1)[1].strip() for line in zf.read(meta).decode().splitlines()
                if line.startswith("Requires-Dist:")]


RUN_BOTH = """
import blasdot, blasgemm
from blasdot import _dlls
print(blasdot.dot([1, 2, 3], [4, 5, 6]), blasgemm.matmul([[1, 2], [3, 4]], [[5, 6], [7, 8]]))
print(_dlls.path("openblas"))
"""


def test_two_consumers_load_the_pypi_wheel_own_file(tmp_path: Path, house: Path) -> None:
    wheelhouse = house
    links = tmp_path / "links"
    links.mkdir()
    shutil.copy(openblas32_wheel(), links)
    dot = consumer(tmp_path, "blasdot", wheelhouse, links)
    gemm = consumer(tmp_path, "blasgemm", wheelhouse, links)
    assert requires_dist(dot) == requires_dist(gemm) == ["scipy-openblas32>=0.3"]

    env = Env(tmp_path / "venv")
    env.install("--find-links", str(links), str(dot), str(gemm))
    text, maps = env.mapped(RUN_BOTH, ("openblas",))
    own = env.site / "scipy_openblas32" / "lib" / "libscipy_openblas.so"
    assert text.splitlines() == ["32.0 [[19.0, 22.0], [43.0, 50.0]]", str(own)]
    assert maps == [str(own)] and not (env.site / "dllreg.libs").exists()
    # The extensions name the runtime name, and no build-time RUNPATH survived (the wheel's own
    # .pc says -Wl,-rpath,<its libdir in the build env>).
    ext = next((env.site / "blasdot").glob("_blasdot*.so"))
    readelf = run(["readelf", "-d", str(ext)]).stdout
    assert "[libscipy_openblas.so]" in readelf and "build-env" not in readelf

    env.install(str(next(wheelhouse.glob("dllreg-*.whl"))), "--find-links", str(wheelhouse))
    listed = json.loads(run([env.python, "-m", "dllreg", "list", "--json"]).stdout)
    (lib,) = listed["libraries"]
    assert (lib["name"], lib["version"], lib["provider"]) == ("openblas", "0.3.34", "pypi:scipy-openblas32")
    assert lib["files"][0]["path"] == str(own) and lib["path"] == str(own.parent.parent)
    assert sorted(c["name"] for c in lib["consumers"]) == ["blasdot", "blasgemm"]
    shown = run([env.python, "-m", "dllreg", "show", "openblas"]).stdout
    assert "provider: pypi:scipy-openblas32" in shown
    inspected = run([env.python, "-m", "dllreg", "inspect", str(ext)]).stdout
    assert re.search(r"libscipy_openblas\.so \[openblas, pypi:scipy-openblas32\] +registry\n", inspected)
    doc = json.loads(run([env.python, "-m", "dllreg", "inspect", "--json", str(ext)]).stdout)
    need = next(n for n in doc["binaries"][0]["needs"] if n["name"] == "libscipy_openblas.so")
    assert (need["category"], need["library"], need["provider"]) == (
        "registry", "openblas", "pypi:scipy-openblas32")
    assert run([env.python, "-m", "dllreg", "check", "--verify"]).stdout.endswith(
        "1 libraries, 2 consumers: OK\n")
    # check --verify compares the wheel's files with pip's RECORD: an edited header shows
    header = env.site / "scipy_openblas32" / "include" / "cblas.h"
    header.write_text(header.read_text() + "/* edited */\n")
    proc = subprocess.run([env.python, "-m", "dllreg", "check", "--verify", "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (problem,) = json.loads(proc.stdout)["problems"]
    assert problem["subject"] == "library openblas 0.3.34 (provided by pypi:scipy-openblas32)"
    assert str(header) in problem["message"] and "hash pip recorded" in problem["message"]
    assert problem["fix"] == 'pip install --force-reinstall "scipy-openblas32==0.3.34.481.3"'
