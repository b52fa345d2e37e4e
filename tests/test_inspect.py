"""Tests for dllreg.env.inspect and `python -m dllreg inspect`: gcc- and mingw-built binaries in wheels
written with zipfile, the pure core over hand-made facts (Mach-O, delay imports, registry), bad input,
and the real numpy/scipy wheels for manylinux, win_amd64 and macOS (marked realwheels)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import gcc_shared, has_gcc, run
from dllreg.binary import BinaryError
from dllreg.cli.inspect_output import render_text, to_json
from dllreg.cli.main import main
from dllreg.env.inspect import (
    Binary,
    Member,
    Report,
    inspect_file,
    inspect_path,
    inspect_wheel_members,
)
from dllreg.errors import DllregError

needs_gcc = pytest.mark.skipif(not has_gcc(), reason="needs gcc")
MINGW = "x86_64-w64-mingw32-gcc"
needs_mingw = pytest.mark.skipif(shutil.which(MINGW) is None, reason=f"needs {MINGW}")
LINUX_EXT = "_ext.cpython-311-x86_64-linux-gnu.so"


def cli(*args: str) -> tuple[int, str]:
    buf = io.StringIO()
    return main(["inspect", *args], buf), buf.getvalue()


def make_wheel(path: Path, files: dict[str, bytes], stored: tuple[str, ...] = ()) -> Path:
    dist, version = path.name.split("-")[:2]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data, zipfile.ZIP_STORED if name in stored else zipfile.ZIP_DEFLATED)
        zf.writestr(f"{dist}-{version}.dist-info/WHEEL", "Wheel-Version: 1.0\n")
    return path


def by_name(report: Report) -> dict[str, Binary]:
    return {b.path.rsplit("/", 1)[-1]: b for b in report.binaries}


def needs(b: Binary) -> dict[str, tuple[str, str | None]]:
    return {n.name: (n.category, n.via) for n in b.needs}


# --- ELF: an auditwheel-like wheel built with gcc ------------------------------------------------


@pytest.fixture(scope="module")
def elf(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """An extension with DT_RPATH $ORIGIN/../pkg.libs, one with DT_RUNPATH, and two mangled libraries:
    libdemo (no rpath of its own) needs libinner."""
    if not has_gcc():
        pytest.skip("needs gcc")
    d = tmp_path_factory.mktemp("elf")
    inner, demo = "libinner-1111aaaa.so.0", "libdemo-abcd1234.so.1"
    gcc_shared(d / inner, "int inner(int x){return x+1;}\n", inner)
    libc = "char *getenv(const char *);\n"  # a libc call keeps libc.so.6 in DT_NEEDED
    demo_c = libc + "int inner(int);\nint demo(int x){return getenv(\"X\") ? 0 : inner(x);}\n"
    gcc_shared(d / demo, demo_c, demo, f"-L{d}", f"-l:{inner}")
    code = libc + "int demo(int);\nint ext(int x){return getenv(\"X\") ? 0 : demo(x);}\n"
    link = (f"-L{d}", f"-l:{demo}", f"-Wl,-rpath-link,{d}")
    for kind, dtags in (("rpath", "--disable-new-dtags"), ("runpath", "--enable-new-dtags")):
        gcc_shared(d / kind / LINUX_EXT, code, None, *link, f"-Wl,{dtags},-rpath,$ORIGIN/../pkg.libs")
    return {"inner": (d / inner).read_bytes(), "demo": (d / demo).read_bytes(),
            "rpath_ext": (d / "rpath" / LINUX_EXT).read_bytes(),
            "runpath_ext": (d / "runpath" / LINUX_EXT).read_bytes()}


def elf_wheel(path: Path, elf: dict[str, bytes], ext: str = "rpath_ext", **extra: bytes) -> Path:
    files = {"pkg/__init__.py": b"", f"pkg/{LINUX_EXT}": elf[ext],
             "pkg.libs/libdemo-abcd1234.so.1": elf["demo"], "pkg.libs/libinner-1111aaaa.so.0": elf["inner"]}
    return make_wheel(path, {**files, **extra})


def test_elf_wheel_auditwheel_layout(tmp_path: Path, elf: dict[str, bytes]) -> None:
    report = inspect_path(elf_wheel(tmp_path / "pkg-1.0-cp311-cp311-manylinux_2_28_x86_64.whl", elf), {})
    assert report.errors == () and report.warnings == () and report.exit_code == 0
    w = report.wheel
    assert w and (w.name, w.version, w.tool, w.libs_dirs) == ("pkg", "1.0", "auditwheel", ("pkg.libs",))
    assert [p for p, _ in w.vendored] == ["pkg.libs/libdemo-abcd1234.so.1", "pkg.libs/libinner-1111aaaa.so.0"]
    assert w.vendored_bytes == len(elf["demo"]) + len(elf["inner"])
    b = by_name(report)
    ext = b[LINUX_EXT]
    assert (ext.format, ext.arch, ext.name, ext.rpath, ext.runpath) == (
        "elf", "x86_64", None, ("$ORIGIN/../pkg.libs",), ())
    assert needs(ext) == {"libdemo-abcd1234.so.1": ("vendored", "rpath"), "libc.so.6": ("system", None)}
    assert ext.needs[0].member == "pkg.libs/libdemo-abcd1234.so.1"
    # libdemo has no rpath: glibc finds libinner through the extension's DT_RPATH (the loading chain)
    assert b["libdemo-abcd1234.so.1"].name == "libdemo-abcd1234.so.1"
    assert needs(b["libdemo-abcd1234.so.1"])["libinner-1111aaaa.so.0"] == ("vendored", "inherited-rpath")
    text = render_text(report)
    assert "vendoring: auditwheel" in text and "missing: none" in text
    assert "1 x vendored: libdemo-abcd1234.so.1\n" in text


def test_runpath_is_not_inherited(tmp_path: Path, elf: dict[str, bytes]) -> None:
    """DT_RUNPATH serves only the object's own needs: libinner is then not found (as glibc does)."""
    path = elf_wheel(tmp_path / "pkg-1.0-cp311-cp311-manylinux_2_28_x86_64.whl", elf, "runpath_ext")
    b = by_name(inspect_path(path, {}))
    assert b[LINUX_EXT].runpath == ("$ORIGIN/../pkg.libs",) and b[LINUX_EXT].rpath == ()
    assert needs(b[LINUX_EXT])["libdemo-abcd1234.so.1"] == ("vendored", "rpath")
    assert needs(b["libdemo-abcd1234.so.1"])["libinner-1111aaaa.so.0"] == ("missing", None)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs the glibc loader")
@pytest.mark.parametrize("ext", ["rpath_ext", "runpath_ext"])
def test_resolver_agrees_with_glibc(tmp_path: Path, elf: dict[str, bytes], ext: str) -> None:
    """Install the wheel's files and let the real loader try: loadable exactly when nothing is missing."""
    report = inspect_path(elf_wheel(tmp_path / "pkg-1.0-cp311-cp311-manylinux_2_28_x86_64.whl", elf, ext), {})
    site = tmp_path / "site"
    with zipfile.ZipFile(tmp_path / report.path) as zf:
        zf.extractall(site)
    code = f"import ctypes; ctypes.CDLL({str(site / 'pkg' / LINUX_EXT)!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    missing = [n.name for b in report.binaries for n in b.needs if n.category == "missing"]
    assert (proc.returncode == 0) == (not missing), proc.stderr
    assert all(name in proc.stderr for name in missing)


def test_platlib_members_and_installed_registry(tmp_path: Path, elf: dict[str, bytes]) -> None:
    """<dist>.data/platlib/ members land in site-packages; a name no wheel file meets but an installed
    registry library provides is `registry`."""
    files = {f"pkg-1.0.data/platlib/pkg/{LINUX_EXT}": elf["rpath_ext"],
             "pkg.libs/libinner-1111aaaa.so.0": elf["inner"]}
    report = inspect_path(make_wheel(tmp_path / "pkg-1.0-cp311-cp311-linux_x86_64.whl", files),
                          {"libdemo-abcd1234.so.1": "demo"})
    (need,) = [n for n in by_name(report)[LINUX_EXT].needs if n.name.startswith("libdemo")]
    assert (need.category, need.library, need.via) == ("registry", "demo", "registry")
    assert report.wheel and report.wheel.tool == "auditwheel" and report.errors == ()


@needs_gcc
def test_installed_registry_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A library installed by a real dllreg-lib wheel (package-lib) is found through sys.path."""
    from test_stub_runtime import add_library

    site = tmp_path / "site"
    site.mkdir()
    (lib,) = add_library(tmp_path, site).rglob("libqsum.so.3")
    monkeypatch.setattr(sys, "path", [str(site), *sys.path])
    use = gcc_shared(tmp_path / "libuse.so", "long qsum(long); long use(long n){return qsum(n);}", None,
                     f"-L{lib.parent}", "-l:libqsum.so.3")
    code, out = cli(str(use))
    assert code == 0 and re.search(r"libqsum.so.3 \[qsum\] +registry\n", out), out
    (wheel,) = (tmp_path / "wheels" / "site").glob("dllreg_lib_qsum-*.whl")
    report = inspect_path(wheel, {})
    assert report.errors == () and report.wheel and report.wheel.tool is None
    assert [b.path for b in report.binaries] == ["dllreg.libs/qsum/lib/libqsum.so.3"]


def test_dllreg_lib_wheel_members_are_registry(tmp_path: Path, elf: dict[str, bytes]) -> None:
    files = {"dllreg.libs/demo/lib/libdemo-abcd1234.so.1": elf["demo"],
             "dllreg.libs/demo/lib/libinner-1111aaaa.so.0": elf["inner"]}
    report = inspect_path(make_wheel(tmp_path / "dllreg_lib_demo-1.0-py3-none-linux_x86_64.whl", files), {})
    (need,) = [n for n in by_name(report)["libdemo-abcd1234.so.1"].needs if n.name.startswith("libinner")]
    assert (need.category, need.library, need.member) == (
        "registry", "demo", "dllreg.libs/demo/lib/libinner-1111aaaa.so.0")
    assert report.wheel and report.wheel.tool is None and report.wheel.vendored == ()


def test_corrupt_members_are_reported_not_fatal(tmp_path: Path, elf: dict[str, bytes]) -> None:
    broken = "pkg/_broken.cpython-311-x86_64-linux-gnu.so"
    path = elf_wheel(tmp_path / "pkg-1.0-cp311-cp311-manylinux_2_28_x86_64.whl", elf,
                     **{broken: elf["rpath_ext"][:200], "pkg/_crc.so": elf["inner"], "pkg/x.dll": b"text"})
    raw = bytearray(path.read_bytes())  # flip a byte inside _crc.so's deflated data: a CRC failure
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("pkg/_crc.so")
    at = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    report = inspect_path(path, {})
    assert report.exit_code == 1 and len(report.errors) == 3, report.errors
    truncated, crc, text = sorted(report.errors)
    assert truncated.startswith(broken + ": ") and "outside the 200-byte file" in truncated
    assert crc.startswith("pkg/_crc.so: unreadable member (")
    assert text.startswith("pkg/x.dll: not an ELF, PE or Mach-O file")
    assert LINUX_EXT in by_name(report)  # the rest of the report is intact
    code, out = cli(str(path))
    assert code == 1 and f"  error: {broken}: " in out


def test_wrong_architecture_and_format(tmp_path: Path, elf: dict[str, bytes]) -> None:
    path = elf_wheel(tmp_path / "pkg-1.0-cp311-cp311-manylinux_2_28_aarch64.whl", elf)
    report = inspect_path(path, {})
    assert report.exit_code == 1 and len(report.errors) == 3
    assert f"pkg/{LINUX_EXT}: ELF x86_64 binary in a manylinux_2_28_aarch64 wheel" in report.errors
    win = make_wheel(tmp_path / "pkg-1.0-cp311-cp311-win_amd64.whl", {"pkg.libs/libdemo.so": elf["demo"]})
    assert inspect_path(win, {}).errors == ("pkg.libs/libdemo.so: ELF x86_64 binary in a win_amd64 wheel",)
    lone = tmp_path / "_ext.cpython-311-aarch64-linux-gnu.so"
    lone.write_bytes(elf["rpath_ext"])
    code, out = cli(str(lone))
    assert code == 1 and f"error: {lone}: x86_64 binary, but its name is for aarch64" in out
    dll = tmp_path / "libdemo.dll"
    dll.write_bytes(elf["demo"])
    assert inspect_path(dll, {}).errors == (f"{dll}: an ELF file with a PE name",)


def test_lone_elf_file(tmp_path: Path, elf: dict[str, bytes]) -> None:
    path = tmp_path / "libdemo-abcd1234.so.1"
    path.write_bytes(elf["demo"])
    code, out = cli(str(path))
    assert code == 0
    assert out.splitlines()[:2] == [f"{path}: ELF x86_64 64-bit library, {len(elf['demo']) / 1e3:.1f} kB",
                                    "  name: libdemo-abcd1234.so.1"]
    assert re.search(r"libinner-1111aaaa.so.0 +other\n", out) and re.search(r"libc.so.6 +system\n", out)


# --- PE: a delvewheel-like wheel built with mingw-w64 --------------------------------------------


@pytest.fixture(scope="module")
def pe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    if shutil.which(MINGW) is None:
        pytest.skip(f"needs {MINGW}")
    d = tmp_path_factory.mktemp("pe")
    (d / "foo.c").write_text("__declspec(dllexport) int foo(int x) { return x + 1; }\n")
    (d / "bar.c").write_text("__declspec(dllexport) int bar(int x) { return x * 2; }\n")
    (d / "ext.c").write_text("int foo(int); int bar(int);\n"
                             "__declspec(dllexport) int PyInit__ext(void) { return foo(1) + bar(2); }\n")
    for name, out in (("foo", "libfoo-1a2b3c4d.dll"), ("bar", "libbar.dll"), ("foo", "libfoo.dll")):
        run([MINGW, "-shared", "-o", str(d / out), str(d / f"{name}.c"), f"-Wl,--out-implib,{d}/{out}.a"])
    run([MINGW, "-shared", "-o", str(d / "_ext.pyd"), str(d / "ext.c"),
         str(d / "libfoo-1a2b3c4d.dll.a"), str(d / "libbar.dll.a")])
    return {p.name: p.read_bytes() for p in d.glob("*.dll")} | {"_ext.pyd": (d / "_ext.pyd").read_bytes()}


PATCH = ("# start delvewheel patch\r\ndef _delvewheel_patch_1_11_2():\r\n    pass\r\n\r\n\r\n"
         "_delvewheel_patch_1_11_2()\r\ndel _delvewheel_patch_1_11_2\r\n# end delvewheel patch\r\n")


def test_pe_wheel_delvewheel_layout(tmp_path: Path, pe: dict[str, bytes]) -> None:
    """The .libs dir (matched case-insensitively, as Windows does), the DLL's own dir, the patch."""
    files = {"pkg/__init__.py": ('"""doc"""\r\n\r\n' + PATCH + "import os\r\n").encode(),
             "pkg/_ext.cp311-win_amd64.pyd": pe["_ext.pyd"], "pkg/libbar.dll": pe["libbar.dll"],
             "pkg.libs/LIBFOO-1A2B3C4D.dll": pe["libfoo-1a2b3c4d.dll"]}
    report = inspect_path(make_wheel(tmp_path / "pkg-1.0-cp311-cp311-win_amd64.whl", files), {})
    assert report.errors == () and report.exit_code == 0
    w = report.wheel
    assert w and (w.tool, w.libs_dirs, w.patch_file, w.patch_version) == (
        "delvewheel", ("pkg.libs",), "pkg/__init__.py", "1.11.2")
    assert [p for p, _ in w.vendored] == ["pkg.libs/LIBFOO-1A2B3C4D.dll", "pkg/libbar.dll"]
    ext = by_name(report)["_ext.cp311-win_amd64.pyd"]
    assert (ext.format, ext.arch, ext.bits, ext.name) == ("pe", "x86_64", 64, "_ext.cp311-win_amd64.pyd")
    got = needs(ext)
    assert got.pop("libfoo-1a2b3c4d.dll") == ("vendored", "libs-dir")
    assert got.pop("libbar.dll") == ("vendored", "same-dir")
    assert got and {category for category, _ in got.values()} == {"system"}  # KERNEL32, the CRT
    text = render_text(report)
    assert "vendoring: delvewheel; patch in pkg/__init__.py (delvewheel 1.11.2)" in text
    # the patch alone says delvewheel, even with nothing vendored
    alone = make_wheel(tmp_path / "pkg-2.0-cp311-cp311-win_amd64.whl", {"pkg/__init__.py": PATCH.encode()})
    facts = inspect_path(alone, {}).wheel
    assert facts and (facts.tool, facts.patch_file, facts.vendored) == ("delvewheel", "pkg/__init__.py", ())


def test_pe_export_name_and_truncated_dll(tmp_path: Path, pe: dict[str, bytes],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    renamed = tmp_path / "libfoo-deadbeef.dll"  # as delvewheel mangles: file name != export name
    renamed.write_bytes(pe["libfoo.dll"])
    b = inspect_path(renamed, {}).binaries[0]
    assert (b.name, b.export_name, b.kind) == ("libfoo-deadbeef.dll", "libfoo.dll", "library")
    name_line = cli(str(renamed))[1].splitlines()[1]
    assert name_line == "  name: libfoo-deadbeef.dll (export directory: libfoo.dll)"
    truncated = tmp_path / "libfoo.dll"
    truncated.write_bytes(pe["libfoo.dll"][:1500])
    capsys.readouterr()
    assert cli(str(truncated)) == (2, "")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {truncated}: truncated: section ")


# --- the pure core over hand-made facts ------------------------------------------------------------


def fake(path: str, fmt: str, needed: tuple[str, ...] = (), *, arch: str = "x86_64", name: str | None = None,
         rpath: tuple[str, ...] = (), delay: tuple[str, ...] = (), arches: tuple[str, ...] = ()) -> Member:
    b = Binary(path, 1000, fmt, arch, arches or (arch,), 64, "library", name, None, needed, delay, rpath, ())
    return Member(path, 1000, binary=b)


def test_macho_delocate_layout() -> None:
    dylibs = "pkg/.dylibs"
    members = [
        fake("pkg/_ext.cpython-311-darwin.so", "macho",
             ("@rpath/libfoo.1.dylib", "/usr/lib/libSystem.B.dylib",
              "@loader_path/../pkg/.dylibs/libbar.dylib", "@rpath/libnone.dylib", "/opt/x/libz.dylib"),
             arch="arm64", rpath=("@loader_path/.dylibs", "/opt/homebrew/lib")),
        fake(f"{dylibs}/libfoo.1.dylib", "macho", ("@loader_path/libbar.dylib",), arch="arm64",
             name="/DLC/pkg/.dylibs/libfoo.1.dylib"),
        fake(f"{dylibs}/libbar.dylib", "macho", ("/System/Library/Frameworks/Accelerate.framework/A",),
             arch="arm64"),
    ]
    report = inspect_wheel_members("pkg-1.0-cp311-cp311-macosx_11_0_arm64.whl", members, {})
    assert report.wheel and (report.wheel.tool, report.wheel.libs_dirs) == ("delocate", (dylibs,))
    assert [p for p, _ in report.wheel.vendored] == [f"{dylibs}/libbar.dylib", f"{dylibs}/libfoo.1.dylib"]
    ext, foo, bar = report.binaries
    assert needs(ext) == {"@rpath/libfoo.1.dylib": ("vendored", "rpath"),
                          "/usr/lib/libSystem.B.dylib": ("system", None),
                          "@loader_path/../pkg/.dylibs/libbar.dylib": ("vendored", "loader_path"),
                          "@rpath/libnone.dylib": ("missing", None), "/opt/x/libz.dylib": ("missing", None)}
    assert needs(foo) == {"@loader_path/libbar.dylib": ("vendored", "loader_path")}
    assert needs(bar)["/System/Library/Frameworks/Accelerate.framework/A"] == ("system", None)
    assert report.warnings == ("pkg/_ext.cpython-311-darwin.so: LC_RPATH /opt/homebrew/lib leaves the "
                               "package (a directory of the build machine?)",)
    assert "missing: /opt/x/libz.dylib, @rpath/libnone.dylib" in render_text(report)


def test_universal2_needs_both_slices() -> None:
    fat = fake("a/x.so", "macho", arch="x86_64", arches=("x86_64", "arm64"))
    thin = fake("a/y.so", "macho", arch="arm64")
    report = inspect_wheel_members("a-1-cp311-cp311-macosx_11_0_universal2.whl", [fat, thin], {})
    assert report.errors == ("a/y.so: Mach-O arm64 binary in a macosx_11_0_universal2 wheel",)


def test_pe_delay_imports_python_and_runtime() -> None:
    members = [fake("pkg/m.cp311-win_amd64.pyd", "pe", ("python311.dll", "VCRUNTIME140_1.dll", "USER32.dll",
                                                         "msvcp140.dll", "libmystery.dll"),
                    delay=("libfoo.dll", "api-ms-win-core-synch-l1-2-0.dll")),
               fake("pkg/msvcp140.dll", "pe", ("KERNEL32.dll",))]
    report = inspect_wheel_members("pkg-1-cp311-cp311-win_amd64.whl", members, {})
    ext = report.binaries[0]
    assert [(n.name, n.category, n.delayed) for n in ext.needs] == [
        ("python311.dll", "python", False), ("VCRUNTIME140_1.dll", "system", False),
        ("USER32.dll", "system", False), ("msvcp140.dll", "vendored", False),  # vendored beats system
        ("libmystery.dll", "missing", False), ("libfoo.dll", "missing", True),
        ("api-ms-win-core-synch-l1-2-0.dll", "system", True)]
    assert "missing: libfoo.dll, libmystery.dll" in render_text(report)
    assert "libfoo.dll (delay)" in render_text(report)
    # a lone file says "other" for what it cannot place; the registry matches DLL names case-insensitively
    lone = inspect_file(ext, {"libfoo.dll": "foo"})
    assert [(n.category, n.library) for n in lone.binaries[0].needs if n.name.startswith("lib")] == [
        ("other", None), ("registry", "foo")]


# --- the CLI -----------------------------------------------------------------------------------------


def test_cli_json_schema(tmp_path: Path, elf: dict[str, bytes]) -> None:
    path = elf_wheel(tmp_path / "pkg-1.0-cp311-cp311-manylinux_2_28_x86_64.whl", elf)
    code, out = cli(str(path), "--json")
    doc = json.loads(out)
    assert code == 0 and doc == json.loads(json.dumps({"format": 1, **to_json(inspect_path(path))}))
    assert set(doc) == {"format", "path", "type", "wheel", "binaries", "errors", "warnings", "duplicates"}
    assert doc["type"] == "wheel" and doc["path"] == path.name
    assert set(doc["wheel"]) == {"name", "version", "platforms", "tool", "libs_dirs", "patch_file",
                                 "patch_version", "vendored", "vendored_bytes"}
    assert doc["wheel"]["vendored"][0] == {"path": "pkg.libs/libdemo-abcd1234.so.1", "size": len(elf["demo"])}
    ext = next(b for b in doc["binaries"] if b["path"] == f"pkg/{LINUX_EXT}")
    assert set(ext) == {"path", "size", "format", "arch", "arches", "bits", "kind", "name", "export_name",
                        "needed", "delay_needed", "rpath", "runpath", "min_os", "needs"}
    assert ext["needs"][0] == {"name": "libdemo-abcd1234.so.1", "category": "vendored", "delayed": False,
                               "via": "rpath", "member": "pkg.libs/libdemo-abcd1234.so.1", "library": None,
                               "provider": None}
    lone = tmp_path / "libinner.so"
    lone.write_bytes(elf["inner"])
    doc = json.loads(cli(str(lone), "--json")[1])
    assert (doc["type"], doc["wheel"], doc["binaries"][0]["name"]) == ("file", None, "libinner-1111aaaa.so.0")


@pytest.mark.parametrize(("name", "data", "message"), [
    ("empty.so", b"", "not an ELF, PE or Mach-O file (empty file)"),
    ("notes.dll", b"hello\n", "not an ELF, PE or Mach-O file (starts with b'hello\\n')"),
    ("fake.dylib", b"MZ" + bytes(100), "not a PE file: "),
    ("short.so", b"\x7fELF\x02\x01\x01", "truncated ELF identification"),
    ("pkg-1.0-py3-none-any.whl", b"not a zip", "not a readable wheel"),
    ("bad.whl", b"", "Invalid wheel filename"),
    ("missing.so", None, "cannot read (No such file or directory)"),
])
def test_bad_input_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str,
                                   data: bytes | None, message: str) -> None:
    path = tmp_path / name
    if data is not None:
        path.write_bytes(data)
    assert cli(str(path)) == (2, "")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: ") and message in err, err
    with pytest.raises(BinaryError if not name.endswith(".whl") else DllregError):
        inspect_path(path, {})


def test_unsafe_wheel_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_wheel(tmp_path / "pkg-1.0-py3-none-any.whl", {"../evil.so": b"x"})
    assert cli(str(path)) == (2, "")
    assert "unsafe member name '../evil.so'" in capsys.readouterr().err


# --- real wheels from PyPI ------------------------------------------------------------------------

DOWNLOADS = Path(__file__).resolve().parent.parent / ".cache" / "downloads"
LINUX = "manylinux_2_27_x86_64.manylinux_2_28_x86_64"
REAL = {  # wheel file: (requirement, pip --platform)
    f"numpy-2.4.6-cp311-cp311-{LINUX}.whl": ("numpy==2.4.6", "manylinux_2_28_x86_64"),
    f"scipy-1.17.1-cp311-cp311-{LINUX}.whl": ("scipy==1.17.1", "manylinux_2_28_x86_64"),
    "numpy-2.4.6-cp311-cp311-win_amd64.whl": ("numpy==2.4.6", "win_amd64"),
    "scipy-1.17.1-cp311-cp311-win_amd64.whl": ("scipy==1.17.1", "win_amd64"),
    "numpy-2.4.6-cp311-cp311-macosx_10_9_x86_64.whl": ("numpy==2.4.6", "macosx_10_9_x86_64"),
    "numpy-2.4.6-cp311-cp311-macosx_14_0_arm64.whl": ("numpy==2.4.6", "macosx_14_0_arm64"),
    "scipy-1.17.1-cp311-cp311-macosx_14_0_arm64.whl": ("scipy==1.17.1", "macosx_14_0_arm64"),
}
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="session")
def real() -> Iterator[dict[str, Report]]:
    """Every real wheel, downloaded once into .cache/downloads, inspected once (registry left out)."""
    DOWNLOADS.mkdir(parents=True, exist_ok=True)
    reports = {}
    for filename, (requirement, platform) in REAL.items():
        path = DOWNLOADS / filename
        if not path.exists():
            cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                   "--platform", platform, "--python-version", "3.11", "-d", str(DOWNLOADS), requirement]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            assert proc.returncode == 0 and path.exists(), f"{cmd} failed:\n{proc.stderr}"
        start = time.perf_counter()
        reports[filename] = inspect_path(path, {})
        TIMINGS[filename] = time.perf_counter() - start
    yield reports
    print("\ninspect timings: " + ", ".join(f"{k.split('-cp311-')[0]}-{k.rsplit('-', 1)[1][:-4]} {v:.2f}s"
                                            for k, v in TIMINGS.items()))


def vendored(report: Report) -> dict[str, int]:
    assert report.wheel
    return {p: size for p, size in report.wheel.vendored}


def is_extension(path: str) -> bool:
    return ".cpython-311" in path or ".cp311-" in path


@pytest.mark.realwheels
@pytest.mark.parametrize("filename", REAL)
def test_real_wheels_resolve_every_need(real: dict[str, Report], filename: str) -> None:
    report = real[filename]
    assert report.errors == () and report.exit_code == 0
    missing = [(b.path, n.name) for b in report.binaries for n in b.needs if n.category == "missing"]
    assert missing == []
    extensions = [b for b in report.binaries if is_extension(b.path)]
    assert len(extensions) >= 15
    for b in extensions:
        assert {n.category for n in b.needs} <= {"vendored", "system", "python"}, b.path
        assert all(n.member in vendored(report) for n in b.needs if n.category == "vendored")
    text = render_text(report)
    assert len(text.splitlines()) < 60 and "missing: none" in text


@pytest.mark.realwheels
def test_real_manylinux(real: dict[str, Report]) -> None:
    numpy, scipy = real[f"numpy-2.4.6-cp311-cp311-{LINUX}.whl"], real[f"scipy-1.17.1-cp311-cp311-{LINUX}.whl"]
    assert numpy.wheel and numpy.wheel.tool == "auditwheel" and numpy.wheel.libs_dirs == ("numpy.libs",)
    names = sorted(p.split("/")[1] for p in vendored(numpy))
    assert [re.sub(r"-[0-9a-f]{8}", "-H", n) for n in names] == [
        "libgfortran-H-H.so.5.0.0", "libquadmath-H-H.so.0.0.0", "libscipy_openblas64_-H.so"]
    assert round(numpy.wheel.vendored_bytes / 1e6, 1) == 28.5
    assert round(vendored(numpy)["numpy.libs/" + names[2]] / 1e6, 1) == 25.4
    by = by_name(numpy)
    assert all(by[n].name == n for n in names)  # every vendored SONAME is its mangled file name
    users = [b for b in numpy.binaries if names[2] in b.needed]
    assert len(users) == 3 and {b.rpath for b in users} == {("$ORIGIN/../../numpy.libs",)}
    assert all(needs(b)[names[2]] == ("vendored", "rpath") for b in users)

    assert scipy.wheel and scipy.wheel.tool == "auditwheel"
    stems = sorted(re.sub(r"-[0-9a-f-]+\.so.*", "", p.split("/")[1]) for p in vendored(scipy))
    assert stems == ["libgfortran", "libgfortran", "libquadmath", "libquadmath", "libscipy_openblas"]
    assert round(scipy.wheel.vendored_bytes / 1e6, 1) == 30.9
    by = by_name(scipy)
    # a libgfortran without RPATH finds its libquadmath through the extensions' DT_RPATH
    (plain,) = [b for b in scipy.binaries if b.path.startswith("scipy.libs/libgfortran") and not b.rpath]
    quadmath = next(n for n in plain.needs if n.name.startswith("libquadmath"))
    assert (quadmath.category, quadmath.via) == ("vendored", "inherited-rpath")
    leaked = [w for w in scipy.warnings if "RUNPATH /opt/_internal/" in w]
    assert len(leaked) == 1 and leaked[0].startswith("scipy/special/cython_special.")
    assert by["cython_special.cpython-311-x86_64-linux-gnu.so"].runpath[0].startswith("/opt/_internal/")


@pytest.mark.realwheels
def test_real_win_amd64(real: dict[str, Report]) -> None:
    numpy = real["numpy-2.4.6-cp311-cp311-win_amd64.whl"]
    scipy = real["scipy-1.17.1-cp311-cp311-win_amd64.whl"]
    for report, dist in ((numpy, "numpy"), (scipy, "scipy")):
        w = report.wheel
        assert w and (w.tool, w.libs_dirs) == ("delvewheel", (f"{dist}.libs",))
        assert w.patch_file == f"{dist}/__init__.py"
        assert w.patch_version and re.fullmatch(r"1\.\d+\.\d+", w.patch_version)
        assert all(b.arches == ("x86_64",) and b.format == "pe" for b in report.binaries)
        python = {n.name for b in report.binaries for n in b.needs if n.category == "python"}
        assert python == {"python311.dll"}
    libs = vendored(numpy)
    assert [re.sub(r"-[0-9a-f]{32}\.dll$", "-H.dll", p) for p in sorted(libs)] == [
        "numpy.libs/libscipy_openblas64_-H.dll", "numpy.libs/msvcp140-H.dll"]
    assert round(max(libs.values()) / 1e6, 1) == 20.4
    by = by_name(numpy)
    exports = [by[p.split("/")[1]].export_name for p in sorted(libs)]
    assert exports == ["libscipy_openblas64_.dll", "MSVCP140.dll"]
    with zipfile.ZipFile(DOWNLOADS / "numpy-2.4.6-cp311-cp311-win_amd64.whl") as zf:  # delvewheel's hash
        for p in libs:
            assert p.rsplit("-", 1)[1][:32] == hashlib.sha256(zf.read(p)).hexdigest()[:32]
    (blas,) = vendored(scipy)
    assert re.fullmatch(r"scipy.libs/libscipy_openblas-[0-9a-f]{32}\.dll", blas)
    assert round(vendored(scipy)[blas] / 1e6, 1) == 20.3


@pytest.mark.realwheels
def test_real_macos(real: dict[str, Report]) -> None:
    scipy = real["scipy-1.17.1-cp311-cp311-macosx_14_0_arm64.whl"]
    assert scipy.wheel and (scipy.wheel.tool, scipy.wheel.libs_dirs) == ("delocate", ("scipy/.dylibs",))
    assert sorted(vendored(scipy)) == [f"scipy/.dylibs/{n}" for n in (
        "libgcc_s.1.1.dylib", "libgfortran.5.dylib", "libquadmath.0.dylib")]
    assert round(scipy.wheel.vendored_bytes / 1e6, 1) == 2.4
    assert all("/opt/homebrew/" in w for w in scipy.warnings) and scipy.warnings
    numpy_arm = real["numpy-2.4.6-cp311-cp311-macosx_14_0_arm64.whl"]  # Accelerate, nothing vendored
    assert numpy_arm.wheel and (numpy_arm.wheel.tool, numpy_arm.wheel.vendored) == (None, ())
    accelerate = {n.category for b in numpy_arm.binaries for n in b.needs if "Accelerate" in n.name}
    assert accelerate == {"system"}
    numpy_x86 = real["numpy-2.4.6-cp311-cp311-macosx_10_9_x86_64.whl"]
    assert numpy_x86.wheel and numpy_x86.wheel.tool == "delocate"
    assert sorted(p.split("/")[-1] for p in vendored(numpy_x86)) == [
        "libgcc_s.1.1.dylib", "libgfortran.5.dylib", "libquadmath.0.dylib", "libscipy_openblas64_.dylib"]
    assert {b.min_os for b in numpy_x86.binaries if is_extension(b.path)} == {"10.9"}
