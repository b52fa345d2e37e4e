"""A read-only site-packages, made read-only for real: a read-only bind mount.

File modes do not stop root (CI runs as root), so test_register's chmod test skips there.
A bind mount of the site onto itself, remounted ``ro`` inside a private mount namespace
(``unshare -m``; ``unshare -rm``, a user namespace, when not root), makes every write fail
with EROFS whoever the writer is, and disappears with the command. Each test first proves the
mount refuses a write, then runs the real command inside it.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import QSUM_C, gcc_shared, has_gcc
from dllreg.cli.main import main
from test_stub_runtime import add_consumer, add_library

# $1 is the directory to make read-only; the rest is the command run under that mount.
RO_SH = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'


def unshare_args() -> list[str]:
    return ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-r", "-m"]


def read_only_mounts() -> str | None:
    """Why a read-only bind mount cannot be made here, or None when it can."""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return "needs Linux and util-linux unshare"
    probe = subprocess.run([*unshare_args(), "sh", "-c", RO_SH, "sh", "/tmp", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make a read-only bind mount here: {probe.stderr.strip()}"
    return None


pytestmark = [pytest.mark.skipif(not has_gcc(), reason="needs gcc"),
              pytest.mark.skipif(bool(read_only_mounts()), reason=str(read_only_mounts()))]


def read_only(site: Path, *cmd: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` with ``site`` mounted read-only (for this command only)."""
    return subprocess.run([*unshare_args(), "sh", "-c", RO_SH, "sh", str(site), *cmd],
                          capture_output=True, text=True,
                          env={**os.environ, "DLLREG_DEBUG": "", **env})


def tree(root: Path) -> list[tuple[str, int, int]]:
    """Every path under ``root`` with its size and mtime: what a write would change."""
    return sorted((str(p.relative_to(root)), p.lstat().st_size, p.lstat().st_mtime_ns)
                  for p in root.rglob("*"))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    s = tmp_path / "site"
    s.mkdir()
    # The mount really refuses writes, even to root.
    r = read_only(s, "touch", str(s / "probe"))
    assert r.returncode != 0 and "Read-only file system" in r.stderr, r
    assert not (s / "probe").exists()
    return s


@pytest.fixture
def libfile(tmp_path: Path) -> Path:
    return gcc_shared(tmp_path / "usr" / "lib" / "libqsum.so.3", QSUM_C, "libqsum.so.3")


def dllreg(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return read_only(site, sys.executable, "-m", "dllreg", *args)


@pytest.mark.parametrize("state", ["empty", "registry"])
def test_register_into_a_read_only_site_is_a_clear_error(site: Path, libfile: Path,
                                                         state: str) -> None:
    if state == "registry":  # dllreg.libs and its lock file already there
        assert main(["register", "--name", "other", "--version", "1", "--path", str(libfile),
                     "--site", str(site)], out=io.StringIO()) == 0
    before = tree(site)
    r = dllreg(site, "register", "--name", "qsum", "--version", "3.2", "--path", str(libfile),
               "--site", str(site))
    assert r.returncode == 2 and r.stdout == "", r
    (line,) = r.stderr.splitlines()
    assert line == (f"error: {site / 'dllreg.libs'}: cannot write the registry (Read-only file "
                    "system); run as the environment's owner, or choose another site directory "
                    "with --site")
    assert tree(site) == before


def test_unregister_from_a_read_only_site_is_a_clear_error(site: Path, libfile: Path) -> None:
    assert main(["register", "--name", "qsum", "--version", "3.2", "--path", str(libfile),
                 "--site", str(site)], out=io.StringIO()) == 0
    before = tree(site)
    r = dllreg(site, "unregister", "--name", "qsum", "--site", str(site))
    assert r.returncode == 2 and "cannot write the registry (Read-only file system)" in r.stderr, r
    assert tree(site) == before


def test_the_stub_and_check_work_in_a_read_only_site(tmp_path: Path, site: Path,
                                                     libfile: Path) -> None:
    libdir = add_library(tmp_path, site)
    add_consumer(tmp_path, site, "cpkg")
    assert main(["register", "--name", "other", "--version", "1", "--path", str(libfile),
                 "--site", str(site)], out=io.StringIO()) == 0
    before = tree(site)
    code = (f"import sys; sys.path.insert(0, {str(site)!r}); import cpkg; from cpkg import _dlls\n"
            "print(cpkg.total(100), _dlls.path('qsum'))")
    for env in ({}, {"DLLREG_VERIFY": "1"}):
        r = read_only(site, sys.executable, "-c", code, **env)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["5050", str(libdir / "lib" / "libqsum.so.3")]
    for args in (["check"], ["check", "--verify"]):
        r = dllreg(site, *args, "--path", str(site))
        assert (r.returncode, r.stdout) == (0, "2 libraries, 0 consumers: OK\n"), r
    r = dllreg(site, "list", "--path", str(site))
    assert r.returncode == 0 and "qsum" in r.stdout and "other" in r.stdout, r
    # A problem is still found and explained without writing anything.
    libfile.unlink()
    r = dllreg(site, "check", "--path", str(site))
    assert r.returncode == 1 and str(libfile) in r.stdout and "problems found" in r.stdout, r
    assert tree(site) == before
