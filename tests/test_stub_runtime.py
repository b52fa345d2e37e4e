"""The generated _dlls.py, run for real: gcc-built libraries, fresh interpreters.

The consumer here is a package whose __init__ imports the stub and then loads
``libuse.so`` with ctypes; libuse.so needs libqsum.so.3 by SONAME and has no RPATH,
so it only loads when the stub preloaded the registry copy, exactly like an extension.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile

from conftest import QSUM_C, gcc_shared
from dllreg.libwheel.package import plan_library, read_source, write_library_wheel
from dllreg.names import NativeRequirement
from dllreg.stub import IMPORT_LINE, render_stub


def install_wheel(wheel: Path, site: Path) -> None:
    scheme = {k: str(site) for k in ("purelib", "platlib", "headers", "scripts", "data")}
    dest = SchemeDictionaryDestination(scheme, sys.executable, "")
    with WheelFile.open(wheel) as source:
        install(source, dest, {"INSTALLER": b"test"})


def add_library(tmp: Path, site: Path, version: str = "3.1.4", code: str = QSUM_C,
                name: str = "qsum", soname: str = "libqsum.so.3",
                requires: tuple[str, ...] = ()) -> Path:
    src = tmp / f"src-{name}-{version}-{site.name}"
    gcc_shared(src / "lib" / soname, code, soname)
    plan = plan_library(read_source(src), name, version, requires=requires)
    install_wheel(write_library_wheel(plan, tmp / "wheels" / site.name), site)
    return site / "dllreg.libs" / name


def add_consumer(tmp: Path, site: Path, package: str, requires: str = "qsum>=3.1") -> None:
    pkg = site / package
    pkg.mkdir(parents=True)
    lib = tmp / "linkdir"
    if not (lib / "libqsum.so.3").exists():
        gcc_shared(lib / "libqsum.so.3", QSUM_C, "libqsum.so.3")
    gcc_shared(pkg / "libuse.so", "long qsum(long); long use(long n){return qsum(n);}", None,
               f"-L{lib}", "-l:libqsum.so.3")
    (pkg / "_dlls.py").write_text(render_stub(package, [NativeRequirement.parse(requires)]))
    (pkg / "__init__.py").write_text(IMPORT_LINE + textwrap.dedent("""\
        import ctypes, os
        _use = ctypes.CDLL(os.path.join(os.path.dirname(__file__), "libuse.so"))
        _use.use.restype = ctypes.c_long
        def total(n):
            return _use.use(n)
        """))


def python(code: str, *sites: Path, cwd: Path | None = None, **env: str
           ) -> subprocess.CompletedProcess[str]:
    prelude = "import sys\n" + "".join(f"sys.path.insert(0, {str(s)!r})\n" for s in sites[::-1])
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)],
                          capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "DLLREG_DEBUG": "", **env})


@pytest.fixture
def site(tmp_path: Path) -> Path:
    s = tmp_path / "site"
    s.mkdir()
    return s


def test_preloads_by_absolute_path_and_binds(tmp_path: Path, site: Path) -> None:
    libdir = add_library(tmp_path, site)
    add_consumer(tmp_path, site, "cpkg")
    r = python("import cpkg; from cpkg import _dlls\nprint(cpkg.total(100), _dlls.path('qsum'))",
               site, DLLREG_DEBUG="1")
    assert r.returncode == 0, r.stderr
    total, path = r.stdout.split()
    assert total == "5050" and path == str(libdir / "lib" / "libqsum.so.3")
    assert f"cpkg: loaded qsum by absolute path {path} (extension loader)" in r.stderr
    assert f"cpkg: found qsum 3.1.4 at {libdir}" in r.stderr


def test_debug_says_where_it_looked(tmp_path: Path, site: Path) -> None:
    other = tmp_path / "other"
    add_library(tmp_path, other)
    add_consumer(tmp_path, site, "cpkg")
    r = python("import cpkg", other, site, DLLREG_DEBUG="1")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    # own site dir first; in each, the registered providers and then the wheel's copy
    assert lines[:3] == [f"dllreg: cpkg: no qsum registered by conda in {site}",
                         f"dllreg: cpkg: no qsum registered by system in {site}",
                         f"dllreg: cpkg: no qsum in {site}"]
    assert f"dllreg: cpkg: found qsum 3.1.4 at {other / 'dllreg.libs' / 'qsum'}" in lines


def test_ctypes_fallback_when_the_process_loads_globally(tmp_path: Path, site: Path) -> None:
    # With RTLD_GLOBAL in sys.getdlopenflags() the extension loader would load globally, so
    # the stub must take the _ctypes path with RTLD_LOCAL instead.
    add_library(tmp_path, site)
    add_consumer(tmp_path, site, "cpkg")
    r = python("""
        import os
        sys.setdlopenflags(os.RTLD_NOW | os.RTLD_GLOBAL)
        import cpkg
        print(cpkg.total(100))
        """, site, DLLREG_DEBUG="1")
    assert r.returncode == 0 and r.stdout.strip() == "5050", r.stderr
    assert "(_ctypes)" in r.stderr


def test_consumer_fails_without_the_stub(tmp_path: Path, site: Path) -> None:
    # The control: the same consumer without the preload cannot find its library.
    add_library(tmp_path, site)
    add_consumer(tmp_path, site, "cpkg")
    init = site / "cpkg" / "__init__.py"
    init.write_text(init.read_text().replace(IMPORT_LINE, ""))
    r = python("import cpkg", site)
    assert r.returncode != 0 and "libqsum.so.3: cannot open shared object file" in r.stderr


def error_of(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("_dllreg_state.LibraryImportError: "), r.stderr
    return last


def test_not_installed(tmp_path: Path, site: Path) -> None:
    add_consumer(tmp_path, site, "cpkg")
    msg = error_of(python("import cpkg", site))
    assert "cpkg requires native library qsum>=3.1, but it is not installed" in msg
    assert str(site) in msg and 'Fix: pip install "dllreg-lib-qsum>=3.1"' in msg


def test_wrong_version(tmp_path: Path, site: Path) -> None:
    libdir = add_library(tmp_path, site, version="3.0")
    add_consumer(tmp_path, site, "cpkg")
    msg = error_of(python("import cpkg", site))
    assert f"found only qsum 3.0 at {libdir}, which does not satisfy >=3.1" in msg


def test_error_is_an_importerror_subclass(tmp_path: Path, site: Path) -> None:
    add_library(tmp_path, site)
    add_consumer(tmp_path, site, "cpkg", "qsum>=9")
    add_consumer(tmp_path, site, "okpkg", "qsum")
    r = python("""
        try:
            import cpkg
        except ImportError as e:
            print(type(e).__name__, e.name)
            import okpkg._dlls  # the class each stub exposes is the one that was raised
            print(type(e) is okpkg._dlls.LibraryImportError is
                  sys.modules['_dllreg_state'].LibraryImportError)
        """, site)
    assert r.stdout.split() == ["LibraryImportError", "cpkg", "True"], r.stderr


@pytest.mark.parametrize("damage,expect", [
    (lambda d: (d / "MANIFEST").write_text("Manifest-Version: 1\n"), "is unreadable"),
    (lambda d: (d / "lib" / "libqsum.so.3").unlink(), "No such file"),
    (lambda d: (d / "lib" / "libqsum.so.3").write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 40),
     "loading"),
], ids=["bad-manifest", "missing-file", "truncated-file"])
def test_broken_installs_get_clear_errors(tmp_path: Path, site: Path, damage, expect: str  # type: ignore[no-untyped-def]
                                          ) -> None:
    damage(add_library(tmp_path, site))
    add_consumer(tmp_path, site, "cpkg")
    msg = error_of(python("import cpkg", site))
    assert expect in msg and "cpkg requires native library qsum>=3.1" in msg
    assert "--force-reinstall" in msg


def test_second_consumer_reuses_the_loaded_copy(tmp_path: Path, site: Path) -> None:
    add_library(tmp_path, site)
    add_consumer(tmp_path, site, "cpkg")
    add_consumer(tmp_path, site, "dpkg", "qsum>=3,<4")
    r = python("""
        import cpkg, dpkg
        from cpkg import _dlls
        v, paths, users = _dlls.loaded()['qsum']
        print(v, len(paths), sorted(users.items()))
        maps = [l.split()[-1] for l in open('/proc/self/maps') if 'libqsum' in l]
        print(len(set(maps)))
        """, site)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "3.1.4 1 [('cpkg', '>=3.1'), ('dpkg', '<4,>=3')]", "1"]


def test_conflicting_consumer_names_both(tmp_path: Path, site: Path) -> None:
    add_library(tmp_path, site)
    add_consumer(tmp_path, site, "cpkg")
    add_consumer(tmp_path, site, "dpkg", "qsum<3")
    msg = error_of(python("import cpkg, dpkg", site))
    assert "dpkg requires native library qsum<3, but qsum 3.1.4 is already loaded" in msg
    assert "for cpkg (qsum>=3.1)" in msg


def test_library_dependencies_load_first(tmp_path: Path, site: Path) -> None:
    base = add_library(tmp_path, site, "1.0", "int base(void){return 1;}", "base", "libbase.so.1")
    add_library(tmp_path, site, requires=("base>=1",))
    add_consumer(tmp_path, site, "cpkg")
    r = python("import cpkg; from cpkg import _dlls; print(sorted(_dlls.loaded()))", site,
               DLLREG_DEBUG="1")
    assert r.returncode == 0 and r.stdout.strip() == "['base', 'qsum']", r.stderr
    assert r.stderr.index(str(base)) < r.stderr.index("loaded qsum")


def test_own_site_dir_comes_first(tmp_path: Path) -> None:
    own, other = tmp_path / "own", tmp_path / "other"
    add_library(tmp_path, own, "3.1.4")
    add_library(tmp_path, other, "3.9")
    add_consumer(tmp_path, own, "cpkg")
    r = python("import cpkg; from cpkg import _dlls; print(_dlls.path('qsum'))", other, own)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith(str(own))


def test_current_directory_and_ld_library_path_are_never_used(tmp_path: Path, site: Path) -> None:
    # A planted registry entry in the current directory and a planted libqsum.so.3 on
    # LD_LIBRARY_PATH both return -1; the real one returns 5050.
    plant = tmp_path / "cwd"
    add_library(tmp_path, plant, "9.9", "long qsum(long n){return -1;}")
    gcc_shared(tmp_path / "ldpath" / "libqsum.so.3", "long qsum(long n){return -1;}",
               "libqsum.so.3")
    add_library(tmp_path, site)
    add_consumer(tmp_path, site, "cpkg")
    r = python("sys.path.insert(0, ''); sys.path.insert(0, '.')\nimport cpkg; print(cpkg.total(100))",
               site, cwd=plant, LD_LIBRARY_PATH=str(tmp_path / "ldpath"), DLLREG_DEBUG="1")
    assert r.returncode == 0 and r.stdout.strip() == "5050", r.stderr
    assert str(plant) not in r.stderr


def test_stub_imports_only_builtins(tmp_path: Path, site: Path) -> None:
    add_library(tmp_path, site)
    (site / "bare").mkdir()
    (site / "bare" / "__init__.py").write_text(IMPORT_LINE)
    (site / "bare" / "_dlls.py").write_text(render_stub("bare", [NativeRequirement("qsum")]))
    r = python("""
        before = set(sys.modules)
        import bare
        new = sorted(set(sys.modules) - before - {'bare', 'bare._dlls', '_dllreg_state'})
        print(new)
        """, site)
    assert r.returncode == 0, r.stderr
    forbidden = {"ctypes", "json", "tomllib", "packaging", "importlib.metadata", "subprocess",
                 "zipfile", "re", "_ctypes"}
    assert not forbidden & set(eval(r.stdout)), r.stdout


@pytest.mark.parametrize("version,spec,loads", [
    ("3.2rc1", "qsum>=3.1", True),       # pre-release installed: the full matcher decides
    ("3.1.4.post2", "qsum~=3.1.4", True),
    ("1!3.0", "qsum<4", False),           # epoch 1 sorts after every epoch-0 version
    ("3.1.4", "qsum~=3.1.0", True),       # plain releases: the fast path decides
    ("3.2", "qsum~=3.1.0", False),
], ids=["pre", "post-compat", "epoch", "fast-compat", "fast-compat-out"])
def test_version_decisions_in_a_real_stub(tmp_path: Path, site: Path, version: str, spec: str,
                                          loads: bool) -> None:
    add_library(tmp_path, site, version=version)
    add_consumer(tmp_path, site, "cpkg", spec)
    r = python("import cpkg; print(cpkg.total(10))", site)
    if loads:
        assert r.returncode == 0 and r.stdout.strip() == "55", r.stderr
    else:
        assert "which does not satisfy" in error_of(r)


def test_windows_error_126_names_the_missing_import(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # The message builder runs on Linux here; the real Windows loader is exercised under
    # Wine in test_wine_stub.py. 126 for a DLL that exists means one of its imports is missing.
    from dllreg.stub._errors import describe_failure

    libdir = tmp_path / "bin"
    libdir.mkdir()
    (libdir / "libqsum.dll").write_bytes(b"MZ")
    (libdir / "libhere.dll").write_bytes(b"MZ")
    system = tmp_path / "Windows" / "System32"
    system.mkdir(parents=True)
    (system / "KERNEL32.dll").write_bytes(b"MZ")
    monkeypatch.setenv("SYSTEMROOT", str(tmp_path / "Windows"))

    class WinError(OSError):
        winerror = 126

    msg = describe_failure(
        "load", user="cpkg", name="qsum", spec=">=3", path=str(libdir / "libqsum.dll"),
        error=WinError("[WinError 126] The specified module could not be found"),
        needed=["KERNEL32.dll", "libhere.dll", "libdep.dll", "libloaded.dll"],
        loaded={"other": {"paths": [str(tmp_path / "x" / "LIBLOADED.DLL")]}}, windows=True)
    assert "libqsum.dll imports libdep.dll, which was not found" in msg
    assert "[WinError 126]" in msg and 'pip install "dllreg-lib-qsum>=3"' in msg


def test_second_copy_of_one_runtime_name_is_refused(tmp_path: Path, site: Path) -> None:
    # Two registry libraries shipping different files with SONAME libqsum.so.3: glibc would
    # map both if each were loaded by path (FINDINGS' hazard), so the stub refuses the second.
    add_library(tmp_path, site)
    add_library(tmp_path, site, name="qalt", code="long qsum(long n){return -1;}")
    add_consumer(tmp_path, site, "cpkg")
    add_consumer(tmp_path, site, "dpkg", "qalt")
    msg = error_of(python("import cpkg, dpkg", site))
    assert "dpkg requires native library qalt" in msg
    assert "would map a second copy of libqsum.so.3, already loaded in this process from " \
           f"{site / 'dllreg.libs' / 'qsum' / 'lib' / 'libqsum.so.3'}" in msg


def test_dllreg_verify_refuses_a_modified_library(tmp_path: Path, site: Path) -> None:
    libdir = add_library(tmp_path, site)
    add_consumer(tmp_path, site, "cpkg")
    lib = libdir / "lib" / "libqsum.so.3"
    r = python("import cpkg; print(cpkg.total(3))", site, DLLREG_VERIFY="1")
    assert r.stdout.strip() == "6", r.stderr  # intact: verified and loaded
    lib.write_bytes(lib.read_bytes() + b"\0")  # still loads: only the hash can tell
    assert python("import cpkg; print(cpkg.total(3))", site).stdout.strip() == "6"
    msg = error_of(python("import cpkg", site, DLLREG_VERIFY="1"))
    assert f"{lib} does not match the sha256 in its manifest" in msg
    assert "--force-reinstall" in msg


def test_fast_path_and_cold_path_make_the_same_record(tmp_path: Path, site: Path) -> None:
    """A plain successful import never compiles the stub's cold section; forcing the cold path
    (DLLREG_DEBUG) yields the same process-wide record, dependencies included."""
    add_library(tmp_path, site, name="base", soname="libbase.so.1", version="1.0",
                code="long base(void){return 1;}")
    add_library(tmp_path, site, requires=("base>=1",))
    add_consumer(tmp_path, site, "cpkg")
    code = ("import cpkg, json\nfrom cpkg import _dlls\n"
            "print(json.dumps([cpkg.total(10), '_require' in vars(_dlls), _dlls.loaded()]))")
    fast = python(code, site)
    cold = python(code, site, DLLREG_DEBUG="1")
    assert fast.returncode == 0 and cold.returncode == 0, fast.stderr + cold.stderr
    total, compiled, record = json.loads(fast.stdout)
    assert (total, compiled) == (55, False)
    assert json.loads(cold.stdout) == [55, True, record]
    assert record["base"][2] == {"cpkg (library qsum)": ">=1"} and list(record) == ["base", "qsum"]
