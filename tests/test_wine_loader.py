"""CPython's (>= 3.8) extension-loading rules on Windows, checked under Wine with mingw-built DLLs.

harness.exe (tests/wine/harness.c) replays preloads with LoadLibraryExW and then loads the consumer
exactly like Python/dynload_win.c. What dllreg's stub relies on:

* an extension's import of ``libqsum.dll`` is not found in PATH (error 126 without a preload);
* once a file with that base name is loaded, by absolute path, the import binds to it, even when
  another copy sits next to the extension and another copy's directory is in PATH;
* preloading a library whose own dependency cannot be found fails on that library (126): preloads
  must go dependencies first.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

import winebed
from winebed import CPYTHON_EXT_FLAGS, WineBed, mingw, parse_harness, winpath, write_preloads

pytestmark = pytest.mark.wine

wine = winebed.wine  # the session fixture (one prefix and wineserver per session)

QSUM_REAL = "__declspec(dllexport) int qsum(int n){int s=0;for(int i=1;i<=n;i++)s+=i;return s;}\n"
QSUM_OTHER = "__declspec(dllexport) int qsum(int n){(void)n;return -1;}\n"
EXT = "__declspec(dllimport) int qsum(int);\n__declspec(dllexport) int ext_init(void){return qsum(100);}\n"
DEP = "__declspec(dllexport) int dep_base(void){return 50;}\n"
QSUM2 = ("__declspec(dllimport) int dep_base(void);\n"
         "__declspec(dllexport) int qsum2(int n){return dep_base()+n;}\n")
EXT2 = "__declspec(dllimport) int qsum2(int);\n__declspec(dllexport) int ext_init(void){return qsum2(7);}\n"
# Control: a plain LoadLibraryW(name), which does search PATH, and the PATH the process sees.
PLAINLOAD = r"""
#include <windows.h>
#include <stdio.h>
int wmain(int argc, wchar_t **argv) {
    static wchar_t buf[32768];
    if (argc < 2) return 1;
    GetEnvironmentVariableW(L"PATH", buf, 32768);
    printf("path %ls\n", buf);
    HMODULE h = LoadLibraryW(argv[1]);
    if (!h) { printf("plain-error %lu\n", GetLastError()); fflush(stdout); return 3; }
    GetModuleFileNameW(h, buf, 32768);
    printf("plain-loaded %ls\n", buf);
    fflush(stdout);
    return 0;
}
"""
NOT_FOUND = "126 Module not found."  # Wine's FormatMessageW text for ERROR_MOD_NOT_FOUND


class Dlls:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.registry = mingw(base / "registry" / "libqsum.dll", QSUM_REAL, "-shared")
        self.other = mingw(base / "other" / "libqsum.dll", QSUM_OTHER, "-shared")
        # The consumer imports libqsum.dll (the name, not a path); nothing sits next to it.
        self.ext = mingw(base / "ext" / "_ext.pyd", EXT, "-shared", str(self.registry))
        # The same consumer with the "other" copy beside it.
        self.ext_beside = base / "ext_beside" / "_ext.pyd"
        self.ext_beside.parent.mkdir()
        self.ext_beside.write_bytes(self.ext.read_bytes())
        (self.ext_beside.parent / "libqsum.dll").write_bytes(self.other.read_bytes())
        # libdep.dll <- libqsum2.dll <- _ext2.pyd; libqsum2.dll is installed without libdep.dll.
        self.dep = mingw(base / "dep" / "libdep.dll", DEP, "-shared")
        built = mingw(base / "build2" / "libqsum2.dll", QSUM2, "-shared", str(self.dep))
        self.qsum2 = base / "lib2" / "libqsum2.dll"
        self.qsum2.parent.mkdir()
        self.qsum2.write_bytes(built.read_bytes())
        self.ext2 = mingw(base / "ext2" / "_ext2.pyd", EXT2, "-shared", str(built))
        self.plainload = mingw(base / "plainload.exe", PLAINLOAD, "-municode")

    def preloads(self, name: str, *entries: tuple[int, Path]) -> Path:
        return write_preloads(self.base / f"{name}.preloads", entries)


@pytest.fixture(scope="module")
def dlls(wine: WineBed, tmp_path_factory: pytest.TempPathFactory) -> Dlls:
    return Dlls(tmp_path_factory.mktemp("wine-dlls"))


def harness(bed: WineBed, *args: Path | str, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    proc = bed.run_harness(*args, env=env)  # type: ignore[arg-type]
    print(f"$ harness {' '.join(map(str, args))}\n{proc.stdout}rc={proc.returncode}")
    return proc


def test_a_no_preload_is_not_found(wine: WineBed, dlls: Dlls) -> None:
    proc = harness(wine, "-", dlls.ext, "ext_init", "libqsum.dll")
    assert (proc.returncode, proc.stdout) == (3, f"load-error {NOT_FOUND}\n")


def test_b_preload_by_absolute_path_satisfies_the_import(wine: WineBed, dlls: Dlls) -> None:
    pre = dlls.preloads("b", (CPYTHON_EXT_FLAGS, dlls.registry))
    proc = harness(wine, pre, dlls.ext, "ext_init", "libqsum.dll")
    assert proc.returncode == 0, proc
    assert proc.stdout == (f"preload 1100 {winpath(dlls.registry)}\n"
                           "init-result 5050\n"
                           f"dep libqsum.dll {winpath(dlls.registry)}\n")
    res = parse_harness(proc.stdout)
    assert (res.init_result, res.deps, res.error) == (5050, {"libqsum.dll": winpath(dlls.registry)}, None)


def test_c_preload_wins_over_copy_beside_consumer_and_in_path(wine: WineBed, dlls: Dlls) -> None:
    other_dir = dlls.other.parent
    env = {"PATH": f"{other_dir}:{wine.env['PATH']}", "WINEPATH": winpath(other_dir)}
    # Controls: the copy beside the consumer is what loads without a preload, and a plain
    # LoadLibraryW in this environment finds the other copy through PATH.
    proc = harness(wine, "-", dlls.ext_beside, "ext_init", "libqsum.dll", env=env)
    assert "init-result -1\n" in proc.stdout
    assert f"dep libqsum.dll {winpath(dlls.ext_beside.parent / 'libqsum.dll')}\n" in proc.stdout
    plain = wine.run(dlls.plainload, "libqsum.dll", env=env)
    assert plain.stdout.startswith(f"path {winpath(other_dir)};"), plain.stdout
    assert f"plain-loaded {winpath(dlls.other)}\n" in plain.stdout

    pre = dlls.preloads("c", (CPYTHON_EXT_FLAGS, dlls.registry))
    proc = harness(wine, pre, dlls.ext_beside, "ext_init", "libqsum.dll", env=env)
    assert proc.returncode == 0, proc
    assert proc.stdout == (f"preload 1100 {winpath(dlls.registry)}\n"
                           "init-result 5050\n"
                           f"dep libqsum.dll {winpath(dlls.registry)}\n")


def test_d_path_alone_is_not_searched(wine: WineBed, dlls: Dlls) -> None:
    reg_dir = dlls.registry.parent
    env = {"PATH": f"{reg_dir}:{wine.env['PATH']}", "WINEPATH": winpath(reg_dir)}
    plain = wine.run(dlls.plainload, "libqsum.dll", env=env)
    assert f"plain-loaded {winpath(dlls.registry)}\n" in plain.stdout  # PATH is in effect ...
    proc = harness(wine, "-", dlls.ext, "ext_init", "libqsum.dll", env=env)
    assert (proc.returncode, proc.stdout) == (3, f"load-error {NOT_FOUND}\n")  # ... but not used


def test_e_dependency_of_a_preload_must_be_loadable(wine: WineBed, dlls: Dlls) -> None:
    # libqsum2.dll needs libdep.dll, which is neither beside it nor loaded: its preload fails.
    pre = dlls.preloads("e", (CPYTHON_EXT_FLAGS, dlls.qsum2))
    proc = harness(wine, pre, dlls.ext2, "ext_init", "libqsum2.dll", "libdep.dll")
    assert (proc.returncode, proc.stdout) == (2, f"preload-error {winpath(dlls.qsum2)} {NOT_FOUND}\n")
    assert parse_harness(proc.stdout).error == ("preload-error", winpath(dlls.qsum2), 126,
                                                "Module not found.")
    # Dependencies first: preloading libdep.dll by absolute path makes libqsum2.dll loadable.
    pre = dlls.preloads("e-ordered", (CPYTHON_EXT_FLAGS, dlls.dep), (CPYTHON_EXT_FLAGS, dlls.qsum2))
    proc = harness(wine, pre, dlls.ext2, "ext_init", "libqsum2.dll", "libdep.dll")
    assert proc.returncode == 0, proc
    res = parse_harness(proc.stdout)
    assert res.init_result == 57
    assert res.deps == {"libqsum2.dll": winpath(dlls.qsum2), "libdep.dll": winpath(dlls.dep)}


def test_f_preload_is_reliable(wine: WineBed, dlls: Dlls) -> None:
    pre = dlls.preloads("f", (CPYTHON_EXT_FLAGS, dlls.registry))
    other_dir = dlls.other.parent
    env = {"WINEPATH": winpath(other_dir)}
    wine.harness()
    t0 = time.perf_counter()
    outs = [wine.run_harness(pre, dlls.ext_beside, "ext_init", "libqsum.dll", env=env) for _ in range(30)]
    per_run = (time.perf_counter() - t0) / len(outs)
    print(f"30 runs, {per_run * 1000:.1f} ms per run")
    reg = winpath(dlls.registry)
    expected = f"preload 1100 {reg}\ninit-result 5050\ndep libqsum.dll {reg}\n"
    assert [(p.returncode, p.stdout) for p in outs] == [(0, expected)] * 30


def test_harness_reports_a_missing_symbol(wine: WineBed, dlls: Dlls) -> None:
    pre = dlls.preloads("sym", (CPYTHON_EXT_FLAGS, dlls.registry))
    proc = harness(wine, pre, dlls.ext, "PyInit__ext", "libqsum.dll")
    assert proc.returncode == 4
    assert parse_harness(proc.stdout).error[:3] == ("symbol-error", "PyInit__ext", 127)  # type: ignore[index]


def test_stale_prefix_is_detected(wine: WineBed, tmp_path: Path) -> None:
    fake = tmp_path / "prefix"
    assert wine.prefix_problem(fake) == "no prefix"
    fake.mkdir()
    assert wine.prefix_problem(fake) == "no stamp (never shut down cleanly)"
    (fake / winebed.STAMP).write_text("wine-0.1\n")
    assert wine.prefix_problem(fake) == "stamp from another Wine or configuration"
    (fake / winebed.STAMP).write_text(wine.stamp())
    (fake / ".update-timestamp").write_text((wine.prefix / ".update-timestamp").read_text())
    (fake / "system.reg").write_text("")
    assert wine.prefix_problem(fake) == "system.reg missing or empty"


def test_stop_leaves_nothing_running(wine: WineBed) -> None:
    assert wine.wine_processes(), "the bed should be running"
    survivors = wine.stop(remove_workdir=False)
    assert survivors == []
    assert wine.wine_processes() == []
    assert wine.prefix_problem() is None  # shut down cleanly: stamped, registry saved, reusable
    pgrep = subprocess.run(["pgrep", "-f", "wineserver"], capture_output=True, text=True)
    ours = [pid for pid in pgrep.stdout.split() if _is_live_in_prefix(int(pid), wine.prefix)]
    assert ours == [], pgrep.stdout
    left = wine.restart()  # the rest of the session keeps a working bed
    assert left == []
    assert wine.run(wine.harness(), "-", "Z:\\nowhere\\x.pyd", "x").returncode == 3


def _is_live_in_prefix(pid: int, prefix: Path) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    zombie = any(line.startswith("State:") and "Z" in line for line in status.splitlines())
    return not zombie and f"WINEPREFIX={prefix}".encode() in environ
