"""The stub's Windows branch, proven under Wine.

No Windows CPython runs here. So the real stub (rendered by dllreg, as in any consumer wheel)
runs under Linux CPython with its Windows decisions switched on (``_dllreg_state.windows``)
and the loader replaced by a recorder: the seams in ``_runtime._open``. The recorded preloads
(absolute paths, order, flags) are then replayed by harness.exe under Wine, which loads the
consumer ``.pyd`` exactly like CPython's dynload_win.c. The library is a real PE wheel made by
``package-lib`` from mingw-built DLLs; the consumer links through the wheel's pkg-config flags.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import winebed
from dllreg.cli.main import main
from dllreg.stub import IMPORT_LINE
from test_stub_runtime import install_wheel
from winebed import CPYTHON_EXT_FLAGS, WineBed, mingw, parse_harness, winpath, write_preloads

pytestmark = pytest.mark.wine
wine = winebed.wine

QSUM = "__declspec(dllexport) int qsum(int n){int s=0;for(int i=1;i<=n;i++)s+=i;return s;}\n"
OTHER = "__declspec(dllexport) int qsum(int n){(void)n;return -1;}\n"
EXT = ("#include <qsum.h>\n"
       "__declspec(dllexport) int ext_init(void){return qsum(100);}\n")
DEP = "__declspec(dllexport) int dep_base(void){return 50;}\n"
QSUM2 = ("__declspec(dllimport) int dep_base(void);\n"
         "__declspec(dllexport) int qsum2(int n){return dep_base()+n;}\n")


def package(tmp: Path, name: str, src: Path, *extra: str) -> Path:
    out = tmp / "wheels" / name
    assert main(["package-lib", name, "--version", "1.0", "--from", str(src), "-o", str(out),
                 *extra]) == 0
    return next(out.glob("*.whl"))


def library_dir(tmp: Path, name: str, code: str, dll: str, *link: str) -> Path:
    src = tmp / "src" / name
    (src / "lib").mkdir(parents=True)
    mingw(src / "bin" / dll, code, "-shared", f"-Wl,--out-implib,{src / 'lib' / (dll + '.a')}",
          *link)
    (src / "include").mkdir()
    (src / "include" / "qsum.h").write_text("__declspec(dllimport) int qsum(int);\n")
    return src


def consumer(site: Path, package_name: str, requires: str) -> None:
    from dllreg.names import NativeRequirement
    from dllreg.stub import render_stub

    pkg = site / package_name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(IMPORT_LINE)
    (pkg / "_dlls.py").write_text(render_stub(package_name, [NativeRequirement.parse(requires)]))


def record(*sites: Path, imports: str, extra: str = "") -> tuple[list[list[object]], str]:
    """Import consumers with the real stub in Windows mode; return the recorded preloads."""
    code = textwrap.dedent(f"""\
        import json, sys
        sys.path[:0] = {[str(s) for s in sites]!r}
        from dllreg.stub._runtime import _state
        st = _state()
        st.windows = True
        calls, dirs = [], []
        st.loader = lambda path, flags: calls.append((flags, path)) or len(calls)
        st.add_dll_directory = lambda path: dirs.append(path) or "handle"
        err = ""
        try:
            import {imports}
        except ImportError as e:
            err = type(e).__name__ + ": " + str(e)
        {extra}
        print(json.dumps([calls, dirs, err]))
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    calls, dirs, err = json.loads(proc.stdout.splitlines()[-1])
    return [*calls, *[["dir", d] for d in dirs]], err


class Bed:
    """A base site and a user site, the qsum library wheel, and the consumer .pyd."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.base, self.user = tmp / "base-site", tmp / "user-site"
        self.base.mkdir()
        self.user.mkdir()
        self.wheel = package(tmp, "qsum", library_dir(tmp, "qsum", QSUM, "libqsum.dll"))
        self.other = mingw(tmp / "other" / "libqsum.dll", OTHER, "-shared")
        # The consumer links like a user's build would: through the wheel's pkg-config flags.
        probe = tmp / "probe-site"
        probe.mkdir()
        install_wheel(self.wheel, probe)
        flags = self.pkg_config(probe)
        self.pyd = mingw(tmp / "ext" / "_ext.pyd", EXT, "-shared", *flags)

    @staticmethod
    def pkg_config(site: Path) -> list[str]:
        code = (f"import sys; sys.path.insert(0, {str(site)!r}); from dllreg.cli.main import main; "
                "sys.exit(main(['pkg-config', 'qsum', '--cflags', '--libs']))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return shlex.split(out.stdout)


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Bed:
    return Bed(tmp_path_factory.mktemp("wine-stub"))


def replay(wine: WineBed, bed: Bed, name: str, calls: list[list[object]],
           env: dict[str, str] | None = None, pyd: Path | None = None) -> winebed.HarnessResult:
    pre = write_preloads(bed.tmp / f"{name}.preloads",
                         [(int(f), Path(str(p))) for f, p in calls if f != "dir"])  # type: ignore[call-overload]
    proc = wine.run_harness(pre, pyd or bed.pyd, "ext_init", "libqsum.dll", env=env)
    print(f"$ replay {name}\n{proc.stdout}rc={proc.returncode}")
    return parse_harness(proc.stdout)


def test_stub_preloads_make_the_pyd_bind_to_the_registry_copy(wine: WineBed, bed: Bed,
                                                              tmp_path: Path) -> None:
    site = tmp_path / "site"
    install_wheel(bed.wheel, site)
    consumer(site, "cpkg", "qsum>=1")
    calls, err = record(site, imports="cpkg")
    dll = site / "dllreg.libs" / "qsum" / "bin" / "libqsum.dll"
    assert (calls, err) == ([[CPYTHON_EXT_FLAGS, str(dll)]], "")
    res = replay(wine, bed, "stub", calls)
    assert (res.error, res.init_result, res.deps) == (None, 5050, {"libqsum.dll": winpath(dll)})
    # The control: the same .pyd without the stub's preloads is CPython's error 126.
    res = replay(wine, bed, "none", [])
    assert res.error is not None and res.error[2] == 126


def test_path_and_a_copy_beside_the_pyd_change_nothing(wine: WineBed, bed: Bed,
                                                       tmp_path: Path) -> None:
    site = tmp_path / "site"
    install_wheel(bed.wheel, site)
    consumer(site, "cpkg", "qsum>=1")
    calls, _ = record(site, imports="cpkg")
    beside = tmp_path / "beside" / "_ext.pyd"
    beside.parent.mkdir()
    beside.write_bytes(bed.pyd.read_bytes())
    (beside.parent / "libqsum.dll").write_bytes(bed.other.read_bytes())
    env = {"PATH": f"{bed.other.parent}:{wine.env['PATH']}", "WINEPATH": winpath(bed.other.parent)}
    res = replay(wine, bed, "path", calls, env=env, pyd=beside)
    dll = site / "dllreg.libs" / "qsum" / "bin" / "libqsum.dll"
    assert (res.init_result, res.deps["libqsum.dll"]) == (5050, winpath(dll))


@pytest.mark.parametrize("library_in,consumer_in", [("user", "base"), ("base", "user")])
def test_user_site_both_directions(wine: WineBed, bed: Bed, tmp_path: Path, library_in: str,
                                   consumer_in: str) -> None:
    # The Store-Python case (bpo-35688): `pip install --user` puts one half in the user site.
    user, base = tmp_path / "user", tmp_path / "base"
    sites = {"user": user, "base": base}
    install_wheel(bed.wheel, sites[library_in])
    consumer(sites[consumer_in], "cpkg", "qsum>=1")
    calls, err = record(user, base, imports="cpkg")  # sys.path order: user site first
    dll = sites[library_in] / "dllreg.libs" / "qsum" / "bin" / "libqsum.dll"
    assert (calls, err) == ([[CPYTHON_EXT_FLAGS, str(dll)]], "")
    res = replay(wine, bed, f"user-{library_in}", calls)
    assert (res.init_result, res.deps["libqsum.dll"]) == (5050, winpath(dll))


def test_second_copy_of_a_dll_name_is_refused_before_the_loader(bed: Bed, tmp_path: Path) -> None:
    site = tmp_path / "site"
    install_wheel(bed.wheel, site)
    src = tmp_path / "alt"
    mingw(src / "LIBQSUM.DLL", OTHER, "-shared")  # same DLL name, other case, other file
    install_wheel(package(tmp_path, "qalt", src), site)
    consumer(site, "cpkg", "qsum>=1")
    consumer(site, "dpkg", "qalt>=1")
    calls, err = record(site, imports="cpkg, dpkg")
    assert calls == [[CPYTHON_EXT_FLAGS, str(site / "dllreg.libs" / "qsum" / "bin" / "libqsum.dll")]]
    assert err.startswith("LibraryImportError: dpkg requires native library qalt>=1, but loading ")
    assert "would map a second copy of LIBQSUM.DLL" in err


def test_missing_dependency_of_the_dependency_is_named(wine: WineBed, bed: Bed, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    dep = mingw(tmp_path / "dep" / "libdep.dll", DEP, "-shared")
    src = tmp_path / "q2"
    mingw(src / "libqsum2.dll", QSUM2, "-shared", str(dep))
    site = tmp_path / "site"
    install_wheel(package(tmp_path, "qsum2", src), site)
    consumer(site, "cpkg", "qsum2>=1")
    calls, _ = record(site, imports="cpkg")
    res = replay(wine, bed, "dep", calls)  # Windows' own answer: the preload fails with 126
    assert res.error is not None and res.error[0] == "preload-error" and res.error[2] == 126
    # The stub's message for that exact error names the DLL that is really missing.
    from dllreg.libwheel.manifest import Manifest
    from dllreg.stub._errors import describe_failure

    manifest = Manifest.from_text((site / "dllreg.libs" / "qsum2" / "MANIFEST").read_text())

    class WinError(OSError):
        winerror = res.error[2]

    path = site / "dllreg.libs" / "qsum2" / "bin" / "libqsum2.dll"
    windows = tmp_path / "Windows"  # %SystemRoot%\System32 is Wine's real system32
    windows.mkdir()
    (windows / "System32").symlink_to(wine.prefix / "drive_c" / "windows" / "system32")
    monkeypatch.setenv("SYSTEMROOT", str(windows))
    msg = describe_failure("load", user="cpkg", name="qsum2", spec=">=1", path=str(path),
                           error=WinError(f"[WinError 126] {res.error[3]}"),
                           needed=list(manifest.libraries[0].needed), loaded={}, windows=True)
    assert "libqsum2.dll imports libdep.dll, which was not found" in msg


def test_dll_directory_only_when_the_manifest_asks(bed: Bed, tmp_path: Path) -> None:
    src = library_dir(tmp_path, "mkl", QSUM, "libqsum.dll")
    asked, plain = tmp_path / "asked", tmp_path / "plain"
    install_wheel(package(tmp_path, "mkl", src, "--dll-directory", "bin"), asked)
    install_wheel(bed.wheel, plain)
    consumer(asked, "cpkg", "mkl>=1")
    consumer(plain, "dpkg", "qsum>=1")
    show = "print(sys.modules['_dllreg_state'].loaded['mkl']['dll_dirs'])"
    calls, _ = record(asked, imports="cpkg", extra=show)
    directory = str(asked / "dllreg.libs" / "mkl" / "bin")
    assert calls[-1] == ["dir", directory]  # scoped to the library's own directory
    calls, _ = record(plain, imports="dpkg")
    assert not [c for c in calls if c[0] == "dir"]


# The win_amd64 wheel ships no headers; declare the one function (LP64: blasint is int).
DDOT = """double scipy_cblas_ddot(int n, const double *x, int incx, const double *y, int incy);
__declspec(dllexport) int ext_init(void) {
    double x[3] = {1, 2, 3}, y[3] = {4, 5, 6};
    return (int)scipy_cblas_ddot(3, x, 1, y, 1);
}
"""


def openblas_win_wheel() -> Path:
    downloads = Path(__file__).resolve().parent.parent / ".cache" / "downloads"
    found = sorted(downloads.glob("scipy_openblas32-*-win_amd64.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--only-binary=:all:", "--platform", "win_amd64", "--python-version",
                        "3.11", "-d", str(downloads), "scipy-openblas32"], check=True)
        found = sorted(downloads.glob("scipy_openblas32-*-win_amd64.whl"))
    return found[-1]


@pytest.mark.realwheels
def test_real_openblas_dll_from_the_scipy_openblas32_wheel(wine: WineBed, bed: Bed,
                                                          tmp_path: Path) -> None:
    """package-lib turns the real win_amd64 scipy-openblas32 wheel into a registry library; a
    mingw consumer links its import library through the .pc flags; the stub's preload makes
    it bind under Wine and compute with the real OpenBLAS."""
    source = openblas_win_wheel()
    version = source.name.split("-")[1]
    out = tmp_path / "wheels"
    assert main(["package-lib", "openblas", "--version", version, "--from", str(source),
                 "-o", str(out)]) == 0
    wheel = next(out.glob("*.whl"))
    assert wheel.name.endswith("-py3-none-win_amd64.whl")
    site = tmp_path / "site"
    install_wheel(wheel, site)
    lib = site / "dllreg.libs" / "openblas"
    text = (lib / "MANIFEST").read_text()
    assert "Library: bin/libscipy_openblas.dll\tlibscipy_openblas.dll\t" in text
    assert "Import-Library: lib/libscipy_openblas.lib" in text
    code = (f"import sys; sys.path.insert(0, {str(site)!r}); from dllreg.cli.main import main; "
            "sys.exit(main(['pkg-config', 'openblas', '--cflags', '--libs']))")
    flags = shlex.split(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                       text=True, check=True).stdout)
    assert "-lscipy_openblas" in flags and "-DBLAS_SYMBOL_PREFIX=scipy_" in flags
    pyd = mingw(tmp_path / "ext" / "_ext.pyd", DDOT, "-shared", *flags)
    consumer(site, "cpkg", "openblas>=0.3")
    calls, err = record(site, imports="cpkg")
    dll = lib / "bin" / "libscipy_openblas.dll"
    assert (calls, err) == ([[CPYTHON_EXT_FLAGS, str(dll)]], "")
    pre = write_preloads(tmp_path / "openblas.preloads", [(CPYTHON_EXT_FLAGS, dll)])
    proc = wine.run_harness(pre, pyd, "ext_init", "libscipy_openblas.dll", timeout=120)
    print(proc.stdout)
    res = parse_harness(proc.stdout)
    assert (res.error, res.init_result) == (None, 32)
    assert res.deps["libscipy_openblas.dll"] == winpath(dll)
