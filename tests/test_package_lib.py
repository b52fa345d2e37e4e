"""`python -m dllreg package-lib`: real gcc-built libraries in, verified wheels out."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from installer.sources import WheelFile
from installer.utils import parse_metadata_file

from conftest import QSUM_C, gcc_shared
from dllreg.cli.main import main
from dllreg.libwheel.manifest import Manifest


def package(source: Path, out: Path, *extra: str, version: str = "3.1.4") -> tuple[int, str]:
    buf = io.StringIO()
    code = main(["package-lib", "qsum", "--version", version, "--from", str(source), "-o",
                 str(out), *extra], buf)
    return code, buf.getvalue()


def test_directory_source(qsum_dir: Path, tmp_path: Path) -> None:
    code, text = package(qsum_dir, tmp_path / "out")
    assert code == 0, text
    wheel = tmp_path / "out" / "dllreg_lib_qsum-3.1.4-py3-none-linux_x86_64.whl"
    with zipfile.ZipFile(wheel) as zf:
        manifest = Manifest.from_text(zf.read("dllreg.libs/qsum/MANIFEST").decode())
        pc = zf.read("dllreg.libs/qsum/lib/pkgconfig/qsum.pc").decode()
        meta = parse_metadata_file(zf.read("dllreg_lib_qsum-3.1.4.dist-info/METADATA").decode())
        lib_mode = zf.getinfo("dllreg.libs/qsum/lib/libqsum.so.3").external_attr >> 16
    assert meta["Name"] == "dllreg-lib-qsum" and meta["Version"] == "3.1.4"
    assert [f.soname for f in manifest.libraries] == ["libqsum.so.3"]
    assert manifest.headers == ("include/qsum.h",)
    assert "prefix=${pcfiledir}/../.." in pc and "-l:libqsum.so.3" in pc
    assert "-rpath," not in pc  # consumers must not get an RPATH
    assert lib_mode & 0o111
    # installer validates RECORD hashes and sizes against the members.
    with WheelFile.open(wheel) as source:
        source.validate_record()


def test_dependency_order_and_requires(tmp_path: Path) -> None:
    src = tmp_path / "src"
    gcc_shared(src / "libdep.so.1", "int dep(void){return 7;}", "libdep.so.1")
    gcc_shared(src / "libqsum.so.3", "int dep(void); int top(void){return dep();}",
               "libqsum.so.3", f"-L{src}", "-l:libdep.so.1")
    code, text = package(src, tmp_path / "out", "--requires", "zlib>=1.2")
    assert code == 0, text
    assert "note:" not in text  # libdep is inside, libc is the system's
    with zipfile.ZipFile(next((tmp_path / "out").glob("*.whl"))) as zf:
        m = Manifest.from_text(zf.read("dllreg.libs/qsum/MANIFEST").decode())
        meta = zf.read("dllreg_lib_qsum-3.1.4.dist-info/METADATA").decode()
    assert [f.soname for f in m.libraries] == ["libdep.so.1", "libqsum.so.3"]
    assert "libdep.so.1" in m.libraries[1].needed
    assert "Requires-Dist: dllreg-lib-zlib>=1.2" in meta


def test_wheel_source_keeps_platform_and_extra_cflags(qsum_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "vendor-1.0-py3-none-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(src, "w") as zf:
        zf.write(qsum_dir / "lib" / "libqsum.so.3", "vendor/lib/libqsum.so.3")
        zf.write(qsum_dir / "include" / "qsum.h", "vendor/include/qsum.h")
        zf.writestr("vendor/lib/pkgconfig/q.pc", "Cflags: -I${includedir} -DQ_PREFIX=q_\n")
        zf.writestr("vendor-1.0.dist-info/licenses/LICENSE.txt", "BSD\n")
    code, text = package(src, tmp_path / "out")
    assert code == 0, text
    wheel = tmp_path / "out" / "dllreg_lib_qsum-3.1.4-py3-none-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel) as zf:
        pc = zf.read("dllreg.libs/qsum/lib/pkgconfig/qsum.pc").decode()
        assert zf.read("dllreg_lib_qsum-3.1.4.dist-info/licenses/LICENSE.txt") == b"BSD\n"
    assert "Cflags: -I${includedir} -DQ_PREFIX=q_" in pc


def bad_zip(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "bad-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(name, b"\x7fELF")
    return path


@pytest.mark.parametrize("make,args,match", [
    (lambda t, q: t, [], "no shared library found"),
    (lambda t, q: q, ["--version", "1.x"], "invalid version '1.x'"),
    (lambda t, q: bad_zip(t, "../../evil.so"), [], "unsafe member name"),
    (lambda t, q: bad_zip(t, "/etc/evil.so"), [], "unsafe member name"),
    (lambda t, q: t / "missing.whl", [], "expected a wheel"),
    (lambda t, q: q, ["--requires", "zlib>>1"], "invalid requirement"),
], ids=["empty-dir", "bad-version", "traversal", "absolute", "missing", "bad-requires"])
def test_bad_sources_write_nothing(tmp_path: Path, qsum_dir: Path, capsys: pytest.CaptureFixture[str],
                                   make, args: list[str], match: str) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "empty"
    empty.mkdir()
    source = make(empty, qsum_dir)
    out = tmp_path / "out"
    out.mkdir()
    extra = [a for a in args if a != "--version" and a != "1.x"]
    version = "1.x" if "1.x" in args else "3.1.4"
    code, _ = package(source, out, *extra, version=version)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and match in err, err
    assert err.count("\n") == 1  # one line
    assert list(out.iterdir()) == []


def test_library_without_soname_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gcc_shared(tmp_path / "src" / "libqsum.so", QSUM_C, None)
    code, _ = package(tmp_path / "src", tmp_path / "out")
    assert code == 2 and "has no SONAME" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_conflicting_copies_of_one_soname(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gcc_shared(tmp_path / "src" / "a" / "libqsum.so.3", QSUM_C, "libqsum.so.3")
    gcc_shared(tmp_path / "src" / "b" / "libqsum.so.3", "int other(void){return 1;}", "libqsum.so.3")
    code, _ = package(tmp_path / "src", tmp_path / "out")
    assert code == 2 and "two different files carry the name libqsum.so.3" in capsys.readouterr().err


def test_needs_outside_the_library_are_reported(tmp_path: Path) -> None:
    src = tmp_path / "src"
    gcc_shared(tmp_path / "other" / "libextra.so.7", "int extra(void){return 7;}", "libextra.so.7")
    gcc_shared(src / "libqsum.so.3", "int extra(void); int top(void){return extra();}",
               "libqsum.so.3", f"-L{tmp_path / 'other'}", "-l:libextra.so.7")
    code, text = package(src, tmp_path / "out")
    assert code == 0
    assert "note: libqsum.so.3 needs libextra.so.7, which this wheel does not carry" in text


@pytest.mark.parametrize("platform,match", [
    ("win_amd64", "is for PE binaries, but the libraries are ELF"),
    ("manylinux_2_28_aarch64", "does not match the libraries' architecture (x86_64)"),
    ("macosx_11_0_arm64", "is for MACHO binaries"),
    ("beos_x86_64", "unknown operating system"),
], ids=["windows-tag", "wrong-arch", "macos-tag", "unknown-os"])
def test_platform_tag_must_match_the_binaries(qsum_dir: Path, tmp_path: Path, platform: str,
                                              match: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = package(qsum_dir, tmp_path / "out", "--platform", platform)
    assert code == 2 and match in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_windows_library_from_mingw_dlls(tmp_path: Path) -> None:
    import shutil
    import subprocess

    if not shutil.which("x86_64-w64-mingw32-gcc"):
        pytest.skip("x86_64-w64-mingw32-gcc missing (scripts/setup-system.sh installs it)")
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "lib").mkdir()
    (tmp_path / "dep.c").write_text("__declspec(dllexport) int dep(void){return 1;}\n")
    (tmp_path / "q.c").write_text("__declspec(dllimport) int dep(void);\n"
                                  "__declspec(dllexport) int qsum(int n){return dep()+n;}\n")
    cc = "x86_64-w64-mingw32-gcc"
    subprocess.run([cc, "-shared", "-o", str(src / "bin" / "libdep.dll"), str(tmp_path / "dep.c")],
                   check=True)
    subprocess.run([cc, "-shared", "-o", str(src / "bin" / "libqsum.dll"), str(tmp_path / "q.c"),
                    str(src / "bin" / "libdep.dll"),
                    f"-Wl,--out-implib,{src / 'lib' / 'libqsum.dll.a'}"], check=True)
    code, text = package(src, tmp_path / "out")
    assert code == 0, text
    wheel = tmp_path / "out" / "dllreg_lib_qsum-3.1.4-py3-none-win_amd64.whl"
    with zipfile.ZipFile(wheel) as zf:
        m = Manifest.from_text(zf.read("dllreg.libs/qsum/MANIFEST").decode())
        pc = zf.read("dllreg.libs/qsum/lib/pkgconfig/qsum.pc").decode()
    assert [(f.path, f.soname) for f in m.libraries] == [("bin/libdep.dll", "libdep.dll"),
                                                         ("bin/libqsum.dll", "libqsum.dll")]
    assert m.import_libraries == ("lib/libqsum.dll.a",)
    assert "Libs: -L${libdir} -lqsum" in pc
    assert "note:" not in text  # KERNEL32/msvcrt are the system's, libdep is inside


@pytest.mark.realwheels
def test_macos_library_from_scipys_delocated_dylibs(tmp_path: Path) -> None:
    """The real libgfortran/libquadmath/libgcc_s dylibs of scipy's macOS arm64 wheel (cached
    in .cache/downloads by the Mach-O tests' fixture, or fetched here) become one library."""
    import subprocess
    import sys

    downloads = Path(__file__).resolve().parent.parent / ".cache" / "downloads"
    wheels = sorted(downloads.glob("scipy-*-macosx_*_arm64.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--only-binary=:all:", "--platform", "macosx_14_0_arm64",
                        "--python-version", "3.11", "-d", str(downloads), "scipy==1.17.1"],
                       check=True)
        wheels = sorted(downloads.glob("scipy-*-macosx_*_arm64.whl"))
    src = tmp_path / "dylibs"
    src.mkdir()
    with zipfile.ZipFile(wheels[-1]) as zf:
        for n in zf.namelist():
            if n.startswith("scipy/.dylibs/") and not n.endswith("/"):
                (src / n.rsplit("/", 1)[-1]).write_bytes(zf.read(n))
    out = tmp_path / "out"
    code = main(["package-lib", "gfortran", "--version", "14.2", "--from", str(src), "-o", str(out)])
    assert code == 0
    (wheel,) = out.glob("*.whl")
    assert wheel.name.startswith("dllreg_lib_gfortran-14.2-py3-none-macosx_") and \
        wheel.name.endswith("_arm64.whl")
    with zipfile.ZipFile(wheel) as zf:
        m = Manifest.from_text(zf.read("dllreg.libs/gfortran/MANIFEST").decode())
    names = [f.soname.rsplit("/", 1)[-1] for f in m.libraries]
    # dependencies first: libgfortran needs libquadmath and libgcc_s (by @loader_path)
    assert names[-1] == "libgfortran.5.dylib"
    assert names.index("libquadmath.0.dylib") < names.index("libgfortran.5.dylib")
    assert all(f.soname.startswith("/DLC/scipy/.dylibs/") for f in m.libraries)  # install names
    assert all(f.path == "lib/" + f.soname.rsplit("/", 1)[-1] for f in m.libraries)


def _mingw_dll(tmp_path: Path, machine: int | None = None) -> Path:
    """A mingw-built DLL; with ``machine``, its COFF Machine field rewritten (there is no
    arm64/i686 mingw here, and the readers and tag checks only look at that field)."""
    import shutil
    import struct
    import subprocess

    if not shutil.which("x86_64-w64-mingw32-gcc"):
        pytest.skip("x86_64-w64-mingw32-gcc missing (scripts/setup-system.sh installs it)")
    src = tmp_path / f"dll-{machine}"
    src.mkdir()
    (tmp_path / "q.c").write_text("__declspec(dllexport) int qsum(int n){return n;}\n")
    dll = src / "libqsum.dll"
    subprocess.run(["x86_64-w64-mingw32-gcc", "-shared", "-o", str(dll), str(tmp_path / "q.c")],
                   check=True)
    if machine is not None:
        data = bytearray(dll.read_bytes())
        pe = struct.unpack_from("<I", data, 0x3C)[0]
        struct.pack_into("<H", data, pe + 4, machine)
        dll.write_bytes(bytes(data))
    return src


def test_windows_tags_follow_the_dll_machine(tmp_path: Path) -> None:
    code, text = package(_mingw_dll(tmp_path, 0xAA64), tmp_path / "arm")
    assert code == 0, text
    assert [p.name for p in (tmp_path / "arm").iterdir()] == [
        "dllreg_lib_qsum-3.1.4-py3-none-win_arm64.whl"]


@pytest.mark.parametrize("machine,tag", [(0xAA64, "win_amd64"), (None, "win_arm64"),
                                         (None, "win32")], ids=["arm64-as-amd64",
                                                                "amd64-as-arm64", "amd64-as-32"])
def test_wrong_architecture_dll_is_refused(tmp_path: Path, machine: int | None, tag: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = package(_mingw_dll(tmp_path, machine), tmp_path / "out", "--platform", tag)
    err = capsys.readouterr().err
    assert code == 2 and f"platform tag {tag} does not match the libraries' architecture" in err


def test_version_comes_from_the_source_and_must_agree(qsum_dir: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    pc = qsum_dir / "lib" / "pkgconfig" / "qsum.pc"
    pc.parent.mkdir()
    pc.write_text("version=3.1.4\nName: qsum\nDescription: q\nVersion: ${version}\nLibs: -lqsum\n")
    out = tmp_path / "out"
    assert main(["package-lib", "qsum", "--from", str(qsum_dir), "-o", str(out)]) == 0
    assert [w.name for w in out.glob("*.whl")] == ["dllreg_lib_qsum-3.1.4-py3-none-linux_x86_64.whl"]
    assert main(["package-lib", "qsum", "--version", "3.1", "--from", str(qsum_dir), "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["package-lib", "qsum", "--version", "0.2.20", "--from", str(qsum_dir), "-o",
                 str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "states version 3.1.4" in err and "pass --version 3.1.4" in err, err
    assert not (tmp_path / "bad").exists()
    pc.unlink()  # nothing states a version: --version is needed, and the error says so
    assert main(["package-lib", "qsum", "--from", str(qsum_dir), "-o", str(tmp_path / "bad")]) == 2
    assert "pass --version" in capsys.readouterr().err
