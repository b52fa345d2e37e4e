"""The clients a new user installs and builds with, for real: uv (the binary the `uv` wheel in
the test extra ships), the pyenv CPythons, PyInstaller. Shared by test_uv.py,
test_pythons.py and test_pyinstaller.py.

``ClientBed`` builds, once per module: this checkout's dllreg wheel (its own, not the shared
wheelhouse's, which parallel checkouts rewrite) and the qsum 3.1.4 library wheel. uv keeps
its downloads in .cache/uv, so a second run needs no network.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import CACHE, QSUM_C, ROOT, gcc_shared, run

VERSIONS = ("3.9", "3.10", "3.11", "3.12", "3.13")


def uv_bin() -> str:
    from uv import find_uv_bin  # the binary of the uv wheel (test extra)

    return str(find_uv_bin())


def uv_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    return {**env, "UV_CACHE_DIR": str(CACHE / "uv"), "UV_PYTHON_DOWNLOADS": "never",
            "UV_NO_PROGRESS": "1", **extra}


def uv(*args: str, check: bool = True, cwd: Path | None = None, **env: str
       ) -> subprocess.CompletedProcess[str]:
    cmd = [uv_bin(), *args]
    if check:
        return run(cmd, env=uv_env(**env), cwd=cwd)
    return subprocess.run(cmd, capture_output=True, text=True, env=uv_env(**env), cwd=cwd)


def pyenv_python(version: str) -> Path | None:
    """The pyenv CPython ``version`` (e.g. '3.12'), or None when this machine has none."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    found = sorted(root.glob(f"{version}.*/bin/python{version}"),
                   key=lambda p: [int(x) for x in p.parent.parent.name.split(".")
                                  if x.isdigit()])
    return found[-1] if found else None


class ClientBed:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.wheels = root / "wheels"
        self.wheels.mkdir(parents=True)
        uv("build", "--wheel", "--out-dir", str(self.wheels), str(ROOT))
        src = root / "qsum-src"
        gcc_shared(src / "lib" / "libqsum.so.3", QSUM_C, "libqsum.so.3")
        (src / "include").mkdir()
        (src / "include" / "qsum.h").write_text("long qsum(long n);\n")
        run([sys.executable, "-m", "dllreg", "package-lib", "qsum", "--version", "3.1.4",
             "--from", str(src), "-o", str(self.wheels)])

    def venv(self, name: str, python: str | Path = sys.executable) -> Path:
        """A fresh venv made by uv; returns its interpreter."""
        uv("venv", "--quiet", "--python", str(python), str(self.root / name))
        return self.root / name / "bin" / "python"

    def build(self, project: Path, python: str | Path = sys.executable) -> Path:
        """``uv build --wheel`` (an isolated build through dllreg.build); the wheel."""
        out = self.root / "built" / project.name / Path(python).name
        uv("build", "--wheel", "--python", str(python), "--out-dir", str(out), str(project),
           UV_FIND_LINKS=str(self.wheels))
        (wheel,) = out.glob("*.whl")
        return wheel

    def install(self, python: Path, *reqs: str, **env: str) -> None:
        uv("pip", "install", "--python", str(python), "--find-links", str(self.wheels), *reqs,
           **env)


def py(python: Path, code: str, *, check: bool = True, cwd: Path | None = None, **env: str
       ) -> subprocess.CompletedProcess[str]:
    cmd = [str(python), "-c", textwrap.dedent(code)]
    full = {**os.environ, "DLLREG_DEBUG": "", **env}
    if check:
        return run(cmd, cwd=cwd, env=full)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=full)


def dllreg(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m dllreg ARGS`` (not checked: the caller asserts the exit code)."""
    return subprocess.run([str(python), "-m", "dllreg", *args], capture_output=True, text=True)


# Run in a consumer's environment: its answer, where the library came from, how many distinct
# files named libqsum are mapped, and whether the stub stayed on its fast path.
PROBE = """
import qapp
maps = {l.split()[-1] for l in open("/proc/self/maps") if "libqsum" in l}
print(qapp.qsum(100), qapp._dlls.path("qsum"), len(maps), "_require" in vars(qapp._dlls))
"""
