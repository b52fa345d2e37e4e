"""A Windows loader test bed: one Wine prefix and wineserver per pytest session, mingw-w64 builds.

Usage from a test module (tests/ is on sys.path through pytest's rootdir-relative import mode)::

    import winebed
    from winebed import WineBed

    wine = winebed.wine  # the session fixture; a plain ``from winebed import wine`` also works,
                         # but ruff reports the parameter that uses it as F811

    def test_x(wine: WineBed, tmp_path):
        dll = winebed.mingw(tmp_path / "a.dll", "int f(void){return 1;}", "-shared")
        preloads = winebed.write_preloads(tmp_path / "pre.txt", [(winebed.CPYTHON_EXT_FLAGS, dll)])
        proc = wine.run(wine.harness(), preloads, consumer, "ext_init", "a.dll")
        result = winebed.parse_harness(proc.stdout)

A conftest can make the fixture available everywhere with ``from winebed import wine  # noqa: F401``
(or ``pytest_plugins = ["winebed"]`` in the top-level conftest). However many modules register it,
there is one bed per process: the fixture shares a reference-counted instance.

The prefix is cached in ``.cache/wineprefix`` (about 700 MB; creating it costs 4-7 s, reusing it
under 1 s). The stamp file is written only after a clean ``wineserver -k`` (that is when the
registry reaches the disk), and the prefix is reused only when the stamp matches this Wine (version,
wine.inf time, DLL overrides), ``.update-timestamp`` matches wine.inf and the registry files and
core DLLs are there; otherwise it is deleted and rebuilt (also once if the smoke run fails). A lock
file keeps two sessions from sharing it (the second one gets a throwaway prefix); a wineserver left
behind by a killed session is stopped first. ``DLLREG_WINE_CACHE=0`` always uses a throwaway prefix
under the system temp dir.

Every wine process gets a timeout; the wineserver is started detached first (see FINDINGS.md: a
wineserver started by a captured wine process inherits its pipes and makes capture slow or hang),
and ``wineserver -k`` at the end of the session is checked: no process of the prefix may survive.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
CACHE_PREFIX = ROOT / ".cache" / "wineprefix"
HARNESS_C = HERE / "wine" / "harness.c"
MINGW_CC = "x86_64-w64-mingw32-gcc"

# LoadLibraryExW flags (libloaderapi.h).
LOAD_WITH_ALTERED_SEARCH_PATH = 0x8
LOAD_LIBRARY_SEARCH_DLL_LOAD_DIR = 0x100
LOAD_LIBRARY_SEARCH_APPLICATION_DIR = 0x200
LOAD_LIBRARY_SEARCH_USER_DIRS = 0x400
LOAD_LIBRARY_SEARCH_SYSTEM32 = 0x800
LOAD_LIBRARY_SEARCH_DEFAULT_DIRS = 0x1000
# What CPython >= 3.8 passes when it loads an extension module (Python/dynload_win.c).
CPYTHON_EXT_FLAGS = LOAD_LIBRARY_SEARCH_DEFAULT_DIRS | LOAD_LIBRARY_SEARCH_DLL_LOAD_DIR

WINE_TIMEOUT = 60.0
STAMP = ".dllreg-wineprefix"


class WineError(RuntimeError):
    """The bed could not be set up or torn down."""


def missing_tools() -> str | None:
    """Why the bed cannot run here (a skip reason), or None when wine and mingw are usable."""
    missing = [t for t in ("wine", "wineserver", "wineboot", MINGW_CC) if shutil.which(t) is None]
    if missing:
        return ("Windows loader tests need " + ", ".join(missing)
                + " (scripts/setup-system.sh installs wine, wine64 and gcc-mingw-w64-x86-64)")
    if sys.platform != "linux":
        return "the Wine test bed is only set up for Linux hosts"
    return None


def winpath(p: Path | str) -> str:
    """The Windows form of a host path as Wine sees it: ``/a/b`` -> ``Z:\\a\\b``."""
    return "Z:" + os.path.abspath(p).replace("/", "\\")


def mingw(out: Path, sources: Path | str | Sequence[Path | str], *flags: str,
          timeout: float = 120) -> Path:
    """Compile with x86_64-w64-mingw32-gcc into ``out`` (add ``-shared`` for a DLL).

    Each source is a file (``Path``) or C source text (``str``, written next to ``out``).
    ``flags`` come after the sources, so ``-lfoo``/``-L`` and ``path/to/lib.dll`` link inputs work.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(sources, (str, Path)):
        sources = [sources]
    files: list[str] = []
    for i, src in enumerate(sources):
        if isinstance(src, Path):
            files.append(str(src))
        else:
            text_file = out.parent / f"{out.name}.src{i}.c"
            text_file.write_text(src)
            files.append(str(text_file))
    cmd = [MINGW_CC, "-o", str(out), *files, *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return out


def write_preloads(path: Path, entries: Iterable[tuple[int, Path | str]]) -> Path:
    """Write a harness PRELOADS_FILE: ``FLAGS_HEX<TAB>WINDOWS_PATH`` per line.

    A ``Path`` is converted with :func:`winpath`; a ``str`` is written as it is (already Windows).
    """
    lines = [f"{flags:X}\t{winpath(p) if isinstance(p, Path) else p}\n" for flags, p in entries]
    Path(path).write_text("".join(lines), encoding="utf-8")
    return Path(path)


@dataclass
class HarnessResult:
    """harness.exe's output, parsed. ``error`` is (kind, path or None, code, message)."""

    preloads: list[tuple[int, str]] = field(default_factory=list)
    error: tuple[str, str | None, int, str] | None = None
    init_result: int | None = None
    deps: dict[str, str | None] = field(default_factory=dict)


def parse_harness(stdout: str) -> HarnessResult:
    """Parse harness.exe's stdout (lines it does not know are ignored)."""
    res = HarnessResult()
    for line in stdout.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "preload":
            flags, _, path = rest.partition(" ")
            res.preloads.append((int(flags, 16), path))
        elif kind in ("preload-error", "symbol-error"):
            # "<path or symbol> <code> <message>": a path may contain blanks, a message starts
            # with a non-digit.
            m = re.fullmatch(r"(.+?) (\d+) (\D.*)", rest)
            if m:
                res.error = (kind, m[1], int(m[2]), m[3])
        elif kind == "load-error":
            code, _, msg = rest.partition(" ")
            res.error = (kind, None, int(code), msg)
        elif kind == "init-result":
            res.init_result = int(rest)
        elif kind == "dep":
            name, _, file = rest.partition(" ")
            res.deps[name] = None if file == "not-loaded" else file
    return res


def _wine_inf_mtime() -> str:
    for d in ("/usr/share/wine", "/usr/local/share/wine", "/opt/wine-stable/share/wine"):
        inf = Path(d) / "wine.inf"
        if inf.is_file():
            return str(int(inf.stat().st_mtime))
    return "unknown"


class WineBed:
    """One Wine prefix with a detached, persistent wineserver.

    Attributes: ``prefix`` (Path), ``env`` (the environment every wine call gets), ``cached``
    (whether ``prefix`` is the reusable cache), ``workdir`` (a scratch dir removed by ``stop``),
    ``timings`` (seconds: ``start``, ``stop``; ``how``: ``cached``/``rebuilt``/``fresh``).
    """

    def __init__(self, prefix: Path | None = None, *, cache: bool | None = None) -> None:
        reason = missing_tools()
        if reason:
            raise WineError(reason)
        self.wine = shutil.which("wine") or "wine"
        self.wineserver = shutil.which("wineserver") or "wineserver"
        self.wineboot = shutil.which("wineboot") or "wineboot"
        if cache is None:
            cache = os.environ.get("DLLREG_WINE_CACHE", "1") != "0" and prefix is None
        self._lock_fd: int | None = None
        self._temp_root: Path | None = None
        self.cached = False
        if prefix is None and cache:
            self._lock_fd = self._try_lock(CACHE_PREFIX.with_name("wineprefix.lock"))
            if self._lock_fd is not None:
                prefix, self.cached = CACHE_PREFIX, True
        if prefix is None:
            self._temp_root = Path(tempfile.mkdtemp(prefix="dllreg-wine-"))
            prefix = self._temp_root / "prefix"
        self.prefix = Path(prefix)
        self.workdir = Path(tempfile.mkdtemp(prefix="dllreg-winebed-"))
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("WINE") and k not in ("DISPLAY", "WAYLAND_DISPLAY")}
        env.update({
            "WINEPREFIX": str(self.prefix),
            "WINEARCH": "win64",
            "WINEDEBUG": "-all",
            # No Mono/Gecko install prompts; no winemenubuilder writing .desktop files into $HOME.
            "WINEDLLOVERRIDES": "mscoree,mshtml=;winemenubuilder.exe=d",
        })
        self.env = env
        self.timings: dict[str, float | str] = {}
        self.running = False
        self._stamp_pending = False
        self._harness: Path | None = None
        self._version = self._wine_version()

    # -- set-up and tear-down -------------------------------------------------------------------

    @staticmethod
    def _try_lock(path: Path) -> int | None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        return fd

    def _wine_version(self) -> str:
        proc = self._tool([self.wine, "--version"])
        return proc.stdout.strip()

    def _tool(self, cmd: list[str], timeout: float = WINE_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """A wine tool run with everything on /dev/null except stdout, which is read from a file."""
        with tempfile.TemporaryFile() as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.DEVNULL,
                                    env=self.env, start_new_session=True)
            rc = _wait(proc, timeout, cmd)
            out.seek(0)
            return subprocess.CompletedProcess(cmd, rc, out.read().decode("utf-8", "replace"), "")

    def stamp(self) -> str:
        """What a reusable prefix must have been built with."""
        return f"{self._version}\nwine.inf {_wine_inf_mtime()}\n{self.env['WINEDLLOVERRIDES']}\n"

    def prefix_problem(self, prefix: Path | None = None) -> str | None:
        """Why ``prefix`` cannot be reused (missing, half-built, other Wine), or None if it can."""
        p = Path(prefix or self.prefix)
        if not p.is_dir():
            return "no prefix"
        stamp = p / STAMP
        if not stamp.is_file():
            return "no stamp (never shut down cleanly)"
        if stamp.read_text() != self.stamp():
            return "stamp from another Wine or configuration"
        upd = p / ".update-timestamp"
        if not upd.is_file() or upd.read_text().strip() not in (_wine_inf_mtime(), "disable"):
            return ".update-timestamp does not match wine.inf"
        for rel in ("system.reg", "user.reg", "userdef.reg"):
            f = p / rel
            if not f.is_file() or f.stat().st_size == 0:
                return f"{rel} missing or empty"
        for rel in ("kernel32.dll", "ntdll.dll", "cmd.exe"):
            if not (p / "drive_c" / "windows" / "system32" / rel).is_file():
                return f"system32/{rel} missing"
        if (p / "dosdevices" / "z:").resolve() != Path("/") or not (p / "dosdevices" / "c:").is_dir():
            return "dosdevices c: or z: broken"
        return None

    def start(self) -> WineBed:
        """Create or reuse the prefix, start the detached wineserver, boot, and check a process runs.

        On failure everything started is stopped again before the exception propagates.
        """
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> WineBed:
        t0 = time.perf_counter()
        how = "fresh"
        if self.cached:
            # A session that died without tear-down may have left its persistent server behind.
            self._kill_server()
            problem = self.prefix_problem()
            if problem is None:
                how = "cached"
            else:
                how = f"rebuilt ({problem})"
                _rmtree(self.prefix)
        try:
            self._boot(init=how != "cached")
            self._smoke()
        except (WineError, subprocess.TimeoutExpired):
            if how != "cached":
                raise
            # The cache looked fine but does not work: rebuild it once.
            self._kill_server()
            _rmtree(self.prefix)
            how = "rebuilt (smoke run failed)"
            self._boot(init=True)
            self._smoke()
        # The stamp is written by stop(), once wineserver -k has saved the registry to disk.
        self._stamp_pending = how != "cached"
        self.timings["start"] = time.perf_counter() - t0
        self.timings["how"] = how
        atexit.register(self._atexit)
        return self

    def _boot(self, init: bool) -> None:
        self.prefix.mkdir(parents=True, exist_ok=True)
        self.running = True
        # Detached, so no later wine process's pipes are inherited by the server or its services.
        rc = _wait(subprocess.Popen([self.wineserver, "-p"], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    env=self.env, start_new_session=True), WINE_TIMEOUT, "wineserver -p")
        if rc != 0:
            raise WineError(f"wineserver -p failed ({rc}) for {self.prefix}")
        cmd = [self.wineboot, "-i"] if init else [self.wineboot]
        rc = _wait(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, env=self.env, start_new_session=True),
                   WINE_TIMEOUT, " ".join(cmd))
        if rc != 0:
            raise WineError(f"{' '.join(cmd)} failed ({rc}) for {self.prefix}")

    def _smoke(self) -> None:
        try:
            proc = self.run("cmd.exe", "/c", "echo winebed-ok", timeout=30)
        except subprocess.TimeoutExpired as e:
            raise WineError(f"smoke run timed out in {self.prefix}") from e
        if proc.returncode != 0 or "winebed-ok" not in proc.stdout:
            raise WineError(f"smoke run failed in {self.prefix}: {proc}")

    def _kill_server(self) -> None:
        if self.prefix.is_dir():
            with contextlib.suppress(subprocess.TimeoutExpired):
                _wait(subprocess.Popen([self.wineserver, "-k"], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       env=self.env, start_new_session=True), WINE_TIMEOUT, "wineserver -k")

    def wine_processes(self) -> list[tuple[int, str]]:
        """Live (non-zombie) processes of this prefix: (pid, command line)."""
        mine = f"WINEPREFIX={self.prefix}".encode()
        found = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) == os.getpid():
                continue
            try:
                if any(line.startswith("State:") and "Z" in line.split()[1]
                       for line in (d / "status").read_text().splitlines()):
                    continue
                if mine not in (d / "environ").read_bytes().split(b"\0"):
                    continue
                cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            except OSError:
                continue
            found.append((int(d.name), cmdline.strip()))
        return found

    def stop(self, *, remove_workdir: bool = True) -> list[tuple[int, str]]:
        """``wineserver -k``; returns the processes that survived it (then SIGKILLed). Idempotent."""
        left: list[tuple[int, str]] = []
        if self.running:
            t0 = time.perf_counter()
            self._kill_server()
            deadline = time.monotonic() + 10
            while (left := self.wine_processes()) and time.monotonic() < deadline:
                time.sleep(0.05)
            for pid, _ in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            self.running = False
            if self._stamp_pending and not left:
                (self.prefix / STAMP).write_text(self.stamp())
                self._stamp_pending = self.prefix_problem() is not None
            self.timings["stop"] = time.perf_counter() - t0
        if remove_workdir:
            _rmtree(self.workdir)
            self._harness = None
            if self._temp_root is not None:
                _rmtree(self._temp_root)
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
        return left

    def restart(self) -> list[tuple[int, str]]:
        """Stop the server (keeping prefix, workdir and lock) and start it again; returns survivors."""
        left = self.stop(remove_workdir=False)
        self._boot(init=False)
        self._smoke()
        return left

    def _atexit(self) -> None:
        if self.running:
            self.stop()

    # -- use ------------------------------------------------------------------------------------

    def run(self, exe: Path | str, *args: Path | str, env: Mapping[str, str] | None = None,
            timeout: float = WINE_TIMEOUT, cwd: Path | None = None, pipes: bool = False,
            base_env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a Windows program under the bed's wineserver and capture its output.

        ``Path`` arguments are passed in Windows form (:func:`winpath`), ``str`` ones unchanged.
        ``env`` entries are added to the bed's environment (or to ``base_env`` in its place).
        Wine ignores the host PATH for the Windows PATH: use ``WINEPATH`` (``;``-separated,
        Windows or host paths) for that.
        stdout/stderr go to files, not pipes, so a helper process that inherits them cannot make
        the capture hang; ``\\r\\n`` is turned into ``\\n``. ``pipes=True`` captures through pipes
        instead: Windows CPython cannot start with a regular file as stdout under Wine 8
        (init_sys_streams fails with WinError 6); the detached wineserver holds none of them.
        Raises ``subprocess.TimeoutExpired`` (after killing the process group) when ``timeout``
        passes.
        """
        if not self.running:
            raise WineError("the bed is not running")
        cmd = [self.wine, str(exe), *(winpath(a) if isinstance(a, Path) else a for a in args)]
        full_env = {**(self.env if base_env is None else base_env), **(env or {})}
        if pipes:
            return _run_piped(cmd, full_env, cwd, timeout)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=full_env,
                                    cwd=cwd, start_new_session=True)

            def read(f: IO[bytes]) -> str:
                f.seek(0)
                return f.read().decode("utf-8", "replace").replace("\r\n", "\n")

            try:
                rc = _wait(proc, timeout, cmd)
            except subprocess.TimeoutExpired as e:
                e.output, e.stderr = read(out), read(err)
                raise
            return subprocess.CompletedProcess(cmd, rc, read(out), read(err))

    def harness(self) -> Path:
        """harness.exe (tests/wine/harness.c), built once per bed into ``workdir``."""
        if self._harness is None or not self._harness.is_file():
            self._harness = mingw(self.workdir / "harness.exe", HARNESS_C, "-municode", "-O1", "-Wall")
        return self._harness

    def run_harness(self, preloads: Path | str, consumer: Path | str, init_symbol: str, *deps: str,
                    env: Mapping[str, str] | None = None, timeout: float = WINE_TIMEOUT
                    ) -> subprocess.CompletedProcess[str]:
        """``harness.exe PRELOADS_FILE CONSUMER_DLL INIT_SYMBOL DEP...``; ``preloads`` may be ``"-"``."""
        return self.run(self.harness(), preloads, consumer, init_symbol, *deps, env=env, timeout=timeout)


def _wait(proc: subprocess.Popen[bytes], timeout: float, what: object) -> int:
    """Wait for ``proc``; on timeout kill its whole process group and raise TimeoutExpired."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise subprocess.TimeoutExpired(what, timeout) from None


def _run_piped(cmd: list[str], env: Mapping[str, str], cwd: Path | None, timeout: float
               ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(env), cwd=cwd, start_new_session=True)

    def text(b: bytes | None) -> str:
        return (b or b"").decode("utf-8", "replace").replace("\r\n", "\n")

    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:  # a survivor that inherited the pipes must not hang the test too
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            out, err = b"", b""
        raise subprocess.TimeoutExpired(cmd, timeout, text(out), text(err)) from None
    return subprocess.CompletedProcess(cmd, proc.returncode, text(out), text(err))


def _rmtree(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True)


# -- the session fixture: one bed per process however many modules register it -----------------

_shared: WineBed | None = None
_users = 0


def acquire() -> WineBed:
    global _shared, _users
    if _shared is None:
        _shared = WineBed().start()
    _users += 1
    return _shared


def release() -> list[tuple[int, str]]:
    """Drop one user; the last one stops the bed. Returns processes that survived wineserver -k."""
    global _shared, _users
    _users -= 1
    if _users > 0 or _shared is None:
        return []
    bed, _shared = _shared, None
    return bed.stop()


@pytest.fixture(scope="session")
def wine() -> Iterator[WineBed]:
    """The session's WineBed; skips when wine or mingw-w64 is not installed."""
    reason = missing_tools()
    if reason:
        pytest.skip(reason)
    bed = acquire()
    yield bed
    left = release()
    assert not left, f"processes of {bed.prefix} survived wineserver -k (now killed): {left}"

