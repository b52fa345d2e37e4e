"""Shared fixtures: gcc-built libraries, library directories and throwaway venvs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a command, failing the test with its output when it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc  # type: ignore[no-any-return]


def gcc_shared(out: Path, code: str, soname: str | None, *extra: str) -> Path:
    """Compile ``code`` into the shared library ``out`` with gcc."""
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.with_name(out.name.split(".")[0] + "_src.c")
    src.write_text(textwrap.dedent(code))
    flags = [f"-Wl,-soname,{soname}"] if soname else []
    run(["gcc", "-shared", "-fPIC", "-O1", *flags, "-o", str(out), str(src), *extra])
    src.unlink()
    return out


QSUM_C = "long qsum(long n){long s=0;for(long i=1;i<=n;i++)s+=i;return s;}\n"


@pytest.fixture
def qsum_dir(tmp_path: Path) -> Path:
    """A source directory as a user would hand to package-lib: lib/ and include/."""
    d = tmp_path / "qsum"
    gcc_shared(d / "lib" / "libqsum.so.3", QSUM_C, "libqsum.so.3")
    (d / "include").mkdir()
    (d / "include" / "qsum.h").write_text("long qsum(long n);\n")
    return d


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """A directory with a freshly built dllreg wheel plus cached build tools.

    Isolated builds in the e2e tests find dllreg here (PIP_FIND_LINKS); setuptools and
    wheel are downloaded once into .cache and reused by later runs.
    """
    house = CACHE / "wheelhouse"
    house.mkdir(parents=True, exist_ok=True)
    for old in house.glob("dllreg-*.whl"):
        old.unlink()
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(house), str(ROOT)])
    if not list(house.glob("setuptools-*.whl")):
        run([sys.executable, "-m", "pip", "download", "-q", "-d", str(house),
             "setuptools>=68", "wheel", "packaging", "installer", "pefile"])
    return house


class Venv:
    def __init__(self, path: Path, house: Path) -> None:
        self.path = path
        self.python = str(path / "bin" / "python")
        self.house = house

    @property
    def site(self) -> Path:
        return next((self.path / "lib").glob("python3*/site-packages"))

    def pip(self, *args: str, check: bool = True, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        # One pip (the test runner's) drives every venv through --python: no pip per venv.
        cmd = [sys.executable, "-m", "pip", "--python", self.python, *args]
        full_env = {**os.environ, "PIP_FIND_LINKS": str(self.house),
                    "PIP_DISABLE_PIP_VERSION_CHECK": "1", **(env or {})}
        if check:
            return run(cmd, env=full_env)
        return subprocess.run(cmd, capture_output=True, text=True, env=full_env)

    def py(self, code: str, *, check: bool = True, cwd: Path | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [self.python, "-c", textwrap.dedent(code)]
        full_env = {**os.environ, **(env or {})}
        if check:
            return run(cmd, cwd=cwd, env=full_env)
        return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=full_env)

    def dllreg(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [self.python, "-m", "dllreg", *args]
        return run(cmd) if check else subprocess.run(cmd, capture_output=True, text=True)


@pytest.fixture
def make_venv(tmp_path: Path, wheelhouse: Path) -> Iterator[Callable[[str], Venv]]:
    def make(name: str = "venv") -> Venv:
        path = tmp_path / name
        run([sys.executable, "-m", "venv", "--without-pip", str(path)])
        return Venv(path, wheelhouse)

    yield make


def has_gcc() -> bool:
    return shutil.which("gcc") is not None
