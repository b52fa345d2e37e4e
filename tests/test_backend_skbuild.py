"""CMake consumers: the library wheel's CMake package config and scikit-build-core.

* render_cmake_config for Windows and macOS manifests (strings, then real CMake reading them);
* plain CMake: find_package(qsum CONFIG) against an installed library directory builds an
  executable that runs, from any location, with SameMajorVersion version checks;
* scikit-build-core through dllreg.build (e2e): find_package(qsum CONFIG) and
  pkg_check_modules(qsum) variants of tests/packages/skbuild_consumer, isolated pip builds,
  DT_NEEDED by SONAME and no build-time RUNPATH, installs, imports and editable installs
  (the wrapper's build-time overhead: benchmarks/build_overhead.py).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import sys
import sysconfig
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from installer.sources import WheelFile

from conftest import QSUM_C, ROOT, Venv, gcc_shared, run
from dllreg.cli.main import main
from dllreg.libwheel.cmakeconfig import render_cmake_config
from dllreg.libwheel.manifest import LibraryFile, Manifest
from dllreg.names import NativeRequirement

PROJECT = Path(__file__).resolve().parent / "packages" / "skbuild_consumer"
IMPORT_LINE = "from . import _dlls  # dllreg: preload native libraries first"
#: pip arguments of the two variants of the consumer.
VARIANTS = {"config": [], "pkgconfig": ["-C", "cmake.define.SKQ_USE_PKGCONFIG=ON"]}
H = "0" * 64

needs_cmake = pytest.mark.skipif(not (shutil.which("cmake") and shutil.which("gcc")),
                                 reason="needs cmake and gcc")


def generator() -> list[str]:
    return ["-G", "Ninja"] if shutil.which("ninja") else []


def cmake_configure(src: Path, build: Path, *args: str, prefix_path: Path | None = None) -> str:
    env = {**os.environ, "CMAKE_PREFIX_PATH": str(prefix_path or "")}
    return run(["cmake", "-S", str(src), "-B", str(build), *generator(), *args], env=env).stdout


def write_files(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def package_qsum(src: Path, out: Path, version: str = "3.1.4") -> Path:
    buf = io.StringIO()
    code = main(["package-lib", "qsum", "--version", version, "--from", str(src), "-o", str(out)],
                buf)
    assert code == 0, buf.getvalue()
    return next(out.glob(f"dllreg_lib_qsum-{version}-*.whl"))


def install_library(wheel: Path, site: Path) -> Path:
    """What pip puts into site-packages: dllreg.libs/NAME/ (the dist-info is not needed)."""
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.startswith("dllreg.libs/"):
                zf.extract(name, site)
    return next((site / "dllreg.libs").iterdir())


# --- render_cmake_config: strings -------------------------------------------------------

def win_manifest(import_libraries: tuple[str, ...]) -> Manifest:
    return Manifest(
        "openblas", "0.3.28", "win_amd64",
        (LibraryFile("bin/libgfortran-5.dll", "libgfortran-5.dll", H, ("KERNEL32.dll",)),
         LibraryFile("bin/libopenblas.dll", "libopenblas.dll", H, ("libgfortran-5.dll",))),
        requires=(NativeRequirement.parse("gfortran>=5"),),
        headers=("include/cblas.h",), import_libraries=import_libraries,
        generator="dllreg 0.1.0")


def mac_manifest() -> Manifest:
    return Manifest("foo", "1.2rc1", "macosx_11_0_arm64",
                    (LibraryFile("lib/libfoo.1.dylib", "@rpath/libfoo.1.dylib", H, ()),),
                    generator="dllreg 0.1.0")


def test_render_paths_and_linux_target() -> None:
    m = Manifest("qsum", "3.1.4", "manylinux_2_28_x86_64.manylinux_2_27_x86_64",
                 (LibraryFile("lib/libqdep.so.1", "libqdep.so.1", H, ("libc.so.6",)),
                  LibraryFile("lib/libqsum.so.3", "libqsum.so.3", H, ("libqdep.so.1",))),
                 headers=("include/qsum.h",))
    files = render_cmake_config(m, "-I/x -DBLAS_SYMBOL_PREFIX=scipy_ -D QS_64 -pthread")
    assert sorted(files) == ["lib/cmake/qsum/qsum-config-version.cmake",
                             "lib/cmake/qsum/qsum-config.cmake"]
    cfg = files["lib/cmake/qsum/qsum-config.cmake"]
    assert 'get_filename_component(_dllreg_qsum_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)' \
        in cfg
    assert "add_library(dllreg::qsum SHARED IMPORTED)" in cfg
    assert 'IMPORTED_LOCATION "${_dllreg_qsum_prefix}/lib/libqsum.so.3"' in cfg
    assert 'IMPORTED_SONAME "libqsum.so.3"' in cfg
    assert 'INTERFACE_INCLUDE_DIRECTORIES "${_dllreg_qsum_prefix}/include"' in cfg
    assert 'INTERFACE_COMPILE_DEFINITIONS "BLAS_SYMBOL_PREFIX=scipy_;QS_64"' in cfg
    assert 'INTERFACE_COMPILE_OPTIONS "-pthread"' in cfg
    # the principal needs a sibling file: GNU ld must be able to find it at link time
    assert 'INTERFACE_LINK_OPTIONS "LINKER:-rpath-link,${_dllreg_qsum_prefix}/lib"' in cfg
    assert 'set(qsum_VERSION "3.1.4")' in cfg and "set(qsum_FOUND TRUE)" in cfg
    assert "/x" not in cfg and "RPATH" not in cfg.replace("rpath-link", "")
    ver = files["lib/cmake/qsum/qsum-config-version.cmake"]
    assert 'set(PACKAGE_VERSION "3.1.4")' in ver and "SameMajorVersion" in ver
    assert 'PACKAGE_FIND_VERSION_MAJOR STREQUAL "3"' in ver
    assert 'NOT CMAKE_SIZEOF_VOID_P STREQUAL "8"' in ver


def test_render_windows_both_import_libraries() -> None:
    files = render_cmake_config(win_manifest(("lib/libopenblas.dll.a", "lib/libopenblas.lib")))
    cfg = files["lib/cmake/openblas/openblas-config.cmake"]
    assert 'IMPORTED_LOCATION "${_dllreg_openblas_prefix}/bin/libopenblas.dll"' in cfg
    assert ('if(MSVC)\n  set(_dllreg_implib "${_dllreg_openblas_prefix}/lib/libopenblas.lib")\n'
            'else()\n  set(_dllreg_implib "${_dllreg_openblas_prefix}/lib/libopenblas.dll.a")\n'
            'endif()') in cfg
    assert 'IMPORTED_IMPLIB "${_dllreg_implib}"' in cfg
    assert "IMPORTED_SONAME" not in cfg and "rpath-link" not in cfg
    # another registry library: found next to this one, linked through its target
    assert 'find_dependency(gfortran CONFIG HINTS "${_dllreg_openblas_prefix}/../gfortran")' in cfg
    assert "APPEND PROPERTY INTERFACE_LINK_LIBRARIES dllreg::gfortran" in cfg
    assert "unset(_dllreg_implib)" in cfg


def test_render_windows_one_or_no_import_library() -> None:
    cfg = render_cmake_config(win_manifest(("lib/openblas.lib",)))[
        "lib/cmake/openblas/openblas-config.cmake"]
    assert 'IMPORTED_IMPLIB "${_dllreg_openblas_prefix}/lib/openblas.lib"' in cfg
    assert "if(MSVC)" not in cfg
    cfg = render_cmake_config(win_manifest(()))["lib/cmake/openblas/openblas-config.cmake"]
    # GNU ld links against the DLL itself; MSVC gets a clear not-found message
    assert 'IMPORTED_IMPLIB "${_dllreg_openblas_prefix}/bin/libopenblas.dll"' in cfg
    assert "no import library (.lib) for MSVC" in cfg


def test_render_macos() -> None:
    files = render_cmake_config(mac_manifest())
    cfg = files["lib/cmake/foo/foo-config.cmake"]
    assert 'IMPORTED_LOCATION "${_dllreg_foo_prefix}/lib/libfoo.1.dylib"' in cfg
    assert 'IMPORTED_SONAME "@rpath/libfoo.1.dylib"' in cfg
    assert "INTERFACE_INCLUDE_DIRECTORIES" not in cfg and 'set(foo_INCLUDE_DIRS "")' in cfg
    assert 'set(foo_VERSION "1.2rc1")' in cfg
    ver = files["lib/cmake/foo/foo-config-version.cmake"]
    assert 'set(PACKAGE_VERSION "1.2")' in ver  # CMake compares the release segment
    assert 'NOT CMAKE_SIZEOF_VOID_P STREQUAL "8"' in ver


CONFIGURE_ONLY = """\
cmake_minimum_required(VERSION 3.19)
project(probe NONE)
find_package(${PKG} ${REQ} CONFIG QUIET)
if(${PKG}_FOUND)
  message(STATUS "probe: found=TRUE")
else()
  message(STATUS "probe: found=FALSE")
endif()
message(STATUS "probe: version=${${PKG}_VERSION}")
message(STATUS "probe: why=${${PKG}_NOT_FOUND_MESSAGE}")
if(TARGET dllreg::${PKG})
  foreach(p IMPORTED_LOCATION IMPORTED_IMPLIB IMPORTED_SONAME INTERFACE_INCLUDE_DIRECTORIES
            INTERFACE_LINK_LIBRARIES)
    get_target_property(v dllreg::${PKG} ${p})
    message(STATUS "probe: ${p}=${v}")
  endforeach()
endif()
"""


def probe(tmp: Path, pkg: str, prefix: Path, req: str = "") -> dict[str, str]:
    src = tmp / "probe"
    if not src.exists():
        write_files(src, {"CMakeLists.txt": CONFIGURE_ONLY})
    build = tmp / f"probe-build-{len(list(tmp.glob('probe-build-*')))}"
    out = cmake_configure(src, build, f"-DPKG={pkg}", f"-DREQ={req}", prefix_path=prefix)
    return dict(m.groups() for m in re.finditer(r"-- probe: (\w+)=(.*)", out))


@needs_cmake
@pytest.mark.parametrize("which", ["windows", "windows-no-implib", "macos"])
def test_foreign_configs_are_valid_cmake(tmp_path: Path, which: str) -> None:
    """CMake on Linux reads the Windows and macOS configs: the syntax, the relocatable
    prefix, the import-library choice (not MSVC here) and a sibling registry library."""
    site = tmp_path / "site" / "dllreg.libs"
    if which == "macos":
        m = mac_manifest()
    else:
        m = win_manifest(("lib/libopenblas.dll.a", "lib/libopenblas.lib") if which == "windows"
                         else ())
        dep = Manifest("gfortran", "5.0", "win_amd64",
                       (LibraryFile("bin/libgfortran-5.dll", "libgfortran-5.dll", H, ()),),
                       import_libraries=("lib/libgfortran-5.dll.a",))
        write_files(site / "gfortran", render_cmake_config(dep))
        for rel in ("bin/libgfortran-5.dll", "lib/libgfortran-5.dll.a"):
            write_files(site / "gfortran", {rel: ""})
    lib = site / m.name
    write_files(lib, render_cmake_config(m))
    write_files(lib, {rel: "" for rel in (*(f.path for f in m.libraries), *m.import_libraries,
                                          *m.headers)})
    got = probe(tmp_path, m.name, lib)
    assert got["found"] == "TRUE", got
    assert got["IMPORTED_LOCATION"] == str(lib / m.libraries[-1].path)
    if which == "macos":
        assert got["IMPORTED_SONAME"] == "@rpath/libfoo.1.dylib"
        assert got["IMPORTED_IMPLIB"] == "v-NOTFOUND"
    else:
        implib = "lib/libopenblas.dll.a" if which == "windows" else "bin/libopenblas.dll"
        assert got["IMPORTED_IMPLIB"] == str(lib / implib)
        assert got["INTERFACE_LINK_LIBRARIES"] == "dllreg::gfortran"
        assert got["INTERFACE_INCLUDE_DIRECTORIES"] == str(lib / "include")


# --- plain CMake against an installed library directory --------------------------------

APP = """\
cmake_minimum_required(VERSION 3.15)
project(qsumapp C)
find_package(qsum 3.1 CONFIG REQUIRED)
message(STATUS "app: qsum ${qsum_VERSION} major ${qsum_VERSION_MAJOR} at ${qsum_DIR}")
add_executable(qsumapp main.c)
target_link_libraries(qsumapp PRIVATE dllreg::qsum)
install(TARGETS qsumapp DESTINATION bin)
"""
APP_MAIN = """\
#include <stdio.h>
#include <qsum.h>
int main(void) { printf("%ld\\n", qsum(100)); return 0; }
"""


@pytest.fixture(scope="module")
def qsum_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("qsumlib")
    src = root / "src"
    gcc_shared(src / "lib" / "libqsum.so.3", QSUM_C, "libqsum.so.3")
    (src / "include").mkdir()
    (src / "include" / "qsum.h").write_text("long qsum(long n);\n")
    return package_qsum(src, root / "out")


def test_library_wheel_ships_the_config(qsum_wheel: Path) -> None:
    with zipfile.ZipFile(qsum_wheel) as zf:
        names = zf.namelist()
    assert "dllreg.libs/qsum/lib/cmake/qsum/qsum-config.cmake" in names
    assert "dllreg.libs/qsum/lib/cmake/qsum/qsum-config-version.cmake" in names
    with WheelFile.open(qsum_wheel) as source:
        source.validate_record()


def dynamic_section(binary: Path) -> tuple[list[str], list[str]]:
    """(DT_NEEDED names, RUNPATH/RPATH entries) of an ELF file."""
    dyn = run(["readelf", "-d", str(binary)]).stdout
    needed = re.findall(r"\(NEEDED\).*\[(.*)\]", dyn)
    paths = [e for p in re.findall(r"\((?:RUNPATH|RPATH)\).*\[(.*)\]", dyn) for e in p.split(":")]
    return needed, paths


@needs_cmake
def test_plain_cmake_find_package_from_any_location(tmp_path: Path, qsum_wheel: Path) -> None:
    lib = install_library(qsum_wheel, tmp_path / "env1" / "site-packages")
    write_files(tmp_path / "app", {"CMakeLists.txt": APP, "main.c": APP_MAIN})
    out = cmake_configure(tmp_path / "app", tmp_path / "b1", prefix_path=lib)
    assert f"app: qsum 3.1.4 major 3 at {lib}/lib/cmake/qsum" in out
    run(["cmake", "--build", str(tmp_path / "b1")])
    assert run([str(tmp_path / "b1" / "qsumapp")]).stdout == "5050\n"  # build tree: build RPATH
    run(["cmake", "--install", str(tmp_path / "b1"), "--prefix", str(tmp_path / "inst")])
    exe = tmp_path / "inst" / "bin" / "qsumapp"
    needed, paths = dynamic_section(exe)
    assert "libqsum.so.3" in needed and paths == []  # installed: by SONAME, no RUNPATH
    assert b"dllreg.libs" not in exe.read_bytes()
    r = run([str(exe)], env={**os.environ, "LD_LIBRARY_PATH": str(lib / "lib")})
    assert r.stdout == "5050\n"
    # Relocatable: the same files moved elsewhere (another environment) still work.
    moved = tmp_path / "env2" / "lib" / "python3" / "site-packages"
    moved.parent.mkdir(parents=True)
    shutil.move(str(tmp_path / "env1" / "site-packages"), str(moved))
    out = cmake_configure(tmp_path / "app", tmp_path / "b2", prefix_path=moved / "dllreg.libs" / "qsum")
    assert f"at {moved}/dllreg.libs/qsum/lib/cmake/qsum" in out
    run(["cmake", "--build", str(tmp_path / "b2")])
    assert run([str(tmp_path / "b2" / "qsumapp")]).stdout == "5050\n"


@needs_cmake
@pytest.mark.parametrize("req,found", [
    ("", "TRUE"), ("3", "TRUE"), ("3.1.4", "TRUE"), ("3.0...<4", "TRUE"), ("3.1...3.9", "TRUE"),
    ("3.2", "FALSE"), ("2", "FALSE"), ("4", "FALSE"), ("3.0...5", "FALSE"), ("2.0...<4", "FALSE"),
])
def test_version_is_same_major(tmp_path: Path, qsum_wheel: Path, req: str, found: str) -> None:
    lib = install_library(qsum_wheel, tmp_path / "site")
    got = probe(tmp_path, "qsum", lib, req)
    assert got["found"] == found, got
    if found == "TRUE":
        assert got["version"] == "3.1.4"


@needs_cmake
def test_missing_library_file_is_not_found(tmp_path: Path, qsum_wheel: Path) -> None:
    lib = install_library(qsum_wheel, tmp_path / "site")
    (lib / "lib" / "libqsum.so.3").unlink()
    got = probe(tmp_path, "qsum", lib)
    assert got["found"] == "FALSE"
    assert got["why"] == f"qsum: {lib}/lib/libqsum.so.3 is missing; reinstall dllreg-lib-qsum"


@needs_cmake
def test_sibling_library_found_at_link_time_without_rpath(tmp_path: Path) -> None:
    """libqsum.so.3 needs libqdep.so.1 from the same wheel: the target's -rpath-link lets GNU
    ld resolve it when CMake adds no RPATH at all (CMAKE_SKIP_RPATH)."""
    src = tmp_path / "src"
    gcc_shared(src / "lib" / "libqdep.so.1", "long qdep(long n){return n;}\n", "libqdep.so.1")
    gcc_shared(src / "lib" / "libqsum.so.3",
               "long qdep(long n); long qsum(long n){long s=0;for(long i=1;i<=n;i++)s+=qdep(i);"
               "return s;}\n", "libqsum.so.3", f"-L{src / 'lib'}", "-l:libqdep.so.1")
    (src / "include").mkdir()
    (src / "include" / "qsum.h").write_text("long qsum(long n);\n")
    lib = install_library(package_qsum(src, tmp_path / "out"), tmp_path / "site")
    write_files(tmp_path / "app", {"CMakeLists.txt": APP, "main.c": APP_MAIN})
    cmake_configure(tmp_path / "app", tmp_path / "b", "-DCMAKE_SKIP_RPATH=ON", prefix_path=lib)
    run(["cmake", "--build", str(tmp_path / "b")])
    exe = tmp_path / "b" / "qsumapp"
    needed, paths = dynamic_section(exe)
    assert needed[0] == "libqsum.so.3" and "libqdep.so.1" not in needed and paths == []
    r = run([str(exe)], env={**os.environ, "LD_LIBRARY_PATH": str(lib / "lib")})
    assert r.stdout == "5050\n"


# --- scikit-build-core through dllreg.build (end to end) ---------------------------------

def copy_project(dest: Path) -> Path:
    shutil.copytree(PROJECT, dest, ignore=shutil.ignore_patterns("_dlls.py", "__pycache__", "build"))
    return dest


def pip_wheel(builder: Venv, project: Path, out: Path, libs: Path, *extra: str,
              env: dict[str, str] | None = None) -> Path:
    builder.pip("wheel", "--no-deps", "-w", str(out), str(project), *extra,
                env={"PIP_FIND_LINKS": f"{builder.house} {libs}", **(env or {})})
    (wheel,) = out.glob("skq-0.1-*.whl")
    return wheel


@pytest.fixture(scope="module")
def house(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private directory with this checkout's dllreg wheel: .cache/wheelhouse is shared
    with concurrent test runs, which replace the wheel in it."""
    out = tmp_path_factory.mktemp("house")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)])
    return out


@pytest.fixture(scope="module")
def skbuilt(tmp_path_factory: pytest.TempPathFactory, house: Path, qsum_wheel: Path
            ) -> dict[str, Path]:
    """The qsum 3.1.4 library wheel (under "libs") and the consumer wheel of each variant."""
    root = tmp_path_factory.mktemp("skbuild")
    libs = qsum_wheel.parent
    builder = Venv(root / "unused", house)
    builder.python = sys.executable
    built = {"libs": libs, "house": house}
    for variant, extra in VARIANTS.items():
        built[variant] = pip_wheel(builder, copy_project(root / variant / "skq"),
                                   root / variant / "out", libs, *extra)
    return built


@pytest.mark.e2e
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_skbuild_wheel(skbuilt: dict[str, Path], variant: str, tmp_path: Path) -> None:
    wheel = skbuilt[variant]
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        init = zf.read("skq/__init__.py").decode()
        meta = zf.read("skq-0.1.dist-info/METADATA").decode()
        (ext,) = [n for n in names if n.endswith(".so")]
        so = tmp_path / "ext.so"
        so.write_bytes(zf.read(ext))
    assert ext.startswith("skq/_q.cpython-") and "skq/_dlls.py" in names
    assert init.splitlines()[:2] == ['"""A scikit-build-core consumer of the qsum library."""',
                                     IMPORT_LINE]
    assert "Requires-Dist: dllreg-lib-qsum>=3" in meta
    with WheelFile.open(wheel) as source:
        source.validate_record()
    needed, paths = dynamic_section(so)
    assert "libqsum.so.3" in needed
    # CMake's build RPATH (the library directory in the build environment) is replaced at
    # install time; only the interpreter's own libdir would be acceptable.
    assert set(paths) <= {sysconfig.get_config_var("LIBDIR")}, paths
    data = so.read_bytes()
    assert b"pip-build-env" not in data and b"dllreg.libs" not in data


@pytest.mark.e2e
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_skbuild_install_and_import(skbuilt: dict[str, Path], variant: str,
                                    make_venv: Callable[..., Venv]) -> None:
    venv = make_venv()
    venv.pip("install", "--find-links", str(skbuilt["libs"]), str(skbuilt[variant]))
    r = venv.py("""
        import skq
        maps = {l.split()[-1] for l in open('/proc/self/maps') if 'libqsum' in l}
        print(skq.qsum(100), skq._dlls.path('qsum'), len(maps))
        """, cwd=venv.path)
    total, path, copies = r.stdout.split()
    assert total == "5050" and copies == "1"
    assert path == str(venv.site / "dllreg.libs" / "qsum" / "lib" / "libqsum.so.3")


@pytest.mark.e2e
def test_skbuild_editable_install(tmp_path: Path, skbuilt: dict[str, Path],
                                  make_venv: Callable[..., Venv]) -> None:
    """scikit-build-core's redirect-mode editable wheel: an import hook for the modules plus a
    .pth that also lists the source roots (src/), so dllreg can place the stub there."""
    venv = make_venv()
    proj = copy_project(tmp_path / "skq")
    init = proj / "src" / "skq" / "__init__.py"
    env = {"PIP_FIND_LINKS": f"{skbuilt['house']} {skbuilt['libs']}"}
    r = venv.pip("install", "-e", str(proj), check=False, env=env)
    assert r.returncode != 0
    assert "make this line the first statement" in r.stderr and str(init) in r.stderr
    lines = init.read_text().splitlines()
    init.write_text("\n".join([lines[0], IMPORT_LINE, *lines[1:]]) + "\n")
    (proj / "src" / "skq" / "_dlls.py").unlink()  # as from a clean checkout
    venv.pip("install", "-e", str(proj), env=env)
    pth = [p.name for p in venv.site.glob("*.pth")]
    assert any(n.startswith("_editable_skbc_skq") or n == "_skq_editable.pth" for n in pth), pth
    out = venv.py("import skq; print(skq.qsum(10), skq.__file__, skq._dlls.__file__, "
                  "skq._q.__file__, skq._dlls.path('qsum'))", cwd=tmp_path).stdout.split()
    assert out[0] == "55"
    assert out[1] == str(init) and out[2] == str(init.with_name("_dlls.py"))  # the sources
    assert out[3].startswith(str(venv.site / "skq" / "_q."))  # the built module, installed
    assert out[4] == str(venv.site / "dllreg.libs" / "qsum" / "lib" / "libqsum.so.3")
