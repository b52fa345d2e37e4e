"""devendor on Windows wheels: the real numpy win_amd64 wheel devendored onto the openblas64 and
msvc-runtime library wheels, checked with ``inspect``, pefile and Wine's loader; and a signed
delvewheel-style wheel whose signature removal must be reported.

No Windows CPython exists here, so the loader check replays what CPython does with harness.exe
(tests/wine/harness.c): preloads by absolute path (what the stub does), then
``LoadLibraryExW(pyd, DEFAULT_DIRS | DLL_LOAD_DIR)``. The one mock in this module is a stand-in
``python311.dll`` that exports the names the .pyd files import from the interpreter.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pefile
import pytest
from packaging.utils import parse_wheel_filename

import winebed
from conftest import CACHE, run
from dllreg.cli.main import main
from dllreg.libwheel.package import plan_library, read_source, write_library_wheel
from dllreg.wheelfile import WheelWriter
from test_binary_rename import fake_signed
from test_devendor import recipe_toml
from winebed import CPYTHON_EXT_FLAGS, WineBed, mingw, parse_harness, winpath, write_preloads

wine = winebed.wine  # the session fixture (one prefix and wineserver per session)

DOWNLOADS = CACHE / "downloads"
NUMPY = "numpy-2.4.6-cp311-cp311-win_amd64.whl"
OPENBLAS = "libscipy_openblas64_.dll"  # the runtime names the recipes give (recipes/*.toml)
MSVCP = "msvcp140.dll"
# (recipe, pip requirement, cached file) of each library wheel's PyPI source
SOURCES = (("openblas64", "scipy-openblas64==0.3.34.481.3",
            "scipy_openblas64-0.3.34.481.3-py3-none-win_amd64.whl"),
           ("msvc-runtime", "msvc-runtime==14.44.35112",
            "msvc_runtime-14.44.35112-cp311-cp311-win_amd64.whl"))
LINALG = "numpy/linalg/_umath_linalg.cp311-win_amd64.pyd"  # imports OpenBLAS only
MULTIARRAY = "numpy/_core/_multiarray_umath.cp311-win_amd64.pyd"  # imports OpenBLAS and msvcp140
# The harness calls INIT_SYMBOL after a successful load. PyInit_* needs a real interpreter, so it
# is asked for a name no .pyd exports: "symbol-error" then means LoadLibraryExW succeeded and
# nothing of the module ran beyond its DllMain.
NO_INIT = "dllreg_load_only"


def _download(requirement: str, filename: str) -> Path:
    """A win_amd64 cp311 wheel from .cache/downloads, fetched with pip the first time."""
    path = DOWNLOADS / filename
    if not path.is_file():
        run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps",
             "--platform", "win_amd64", "--python-version", "3.11", "-d", str(DOWNLOADS), requirement])
    assert path.is_file(), f"pip did not save {filename}"
    return path


def _dllreg(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dllreg", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def _inspect(wheel: Path, site: Path | None = None) -> dict[str, Any]:
    # The registry inspect sees is the one on sys.path: the installed library wheels, if any.
    env = {"PYTHONPATH": str(site)} if site else None
    proc = _dllreg("inspect", wheel, "--json", env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def _extract(wheel: Path, dest: Path, members: Iterable[str] | None = None) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(dest, members)
    return dest


@dataclass(frozen=True)
class Devendored:
    original: Path  # numpy's win_amd64 wheel as published
    out: Path  # numpy devendored
    libs: dict[str, Path]  # recipe -> dllreg-lib wheel
    site: Path  # the library wheels installed: unzipped (no .data dir, so where pip puts each file)
    doc: dict[str, Any]  # devendor --json


@pytest.fixture(scope="module")
def devendored(tmp_path_factory: pytest.TempPathFactory) -> Devendored:
    tmp = tmp_path_factory.mktemp("devendor-win")
    numpy = _download("numpy==2.4.6", NUMPY)
    libs = {}
    for recipe, requirement, filename in SOURCES:
        # package-lib from the cached source wheel (fetched with pip once): the same wheel as
        # `package-lib NAME --platform win_amd64` builds, without asking the index on every run.
        source = _download(requirement, filename)
        version = str(parse_wheel_filename(filename)[1])
        proc = _dllreg("package-lib", recipe, "--from", source, "--version", version,
                       "--platform", "win_amd64", "-o", tmp / "libs")
        assert proc.returncode == 0, proc.stderr
        (libs[recipe],) = (tmp / "libs").glob(f"dllreg_lib_{recipe.replace('-', '_')}-*-win_amd64.whl")
    out = tmp / "out"
    proc = _dllreg("devendor", numpy, "--with-lib", libs["openblas64"], "--with-lib", libs["msvc-runtime"],
                   "-o", out, "--json")
    assert proc.returncode == 0, proc.stderr
    site = tmp / "site"
    for lib in libs.values():
        _extract(lib, site)
    return Devendored(numpy, out / NUMPY, libs, site, json.loads(proc.stdout))


def _renames(doc: dict[str, Any]) -> dict[str, str]:
    """Vendored file name -> registry runtime name, from devendor's report."""
    (w,) = doc["wheels"]
    return {Path(d["member"]).name: d["runtime"] for d in w["libraries"]}


# --- devendor, inspect and pefile on the real wheel ----------------------------------------------


@pytest.mark.realwheels
def test_openblas_and_msvcp140_are_substituted(devendored: Devendored) -> None:
    (w,) = devendored.doc["wheels"]
    got = {(Path(d["member"]).name.split("-")[0], d["action"], d["library"], d["runtime"])
           for d in w["libraries"]}
    assert got == {("libscipy_openblas64_", "substitute", "openblas64", OPENBLAS),
                   ("msvcp140", "substitute", "msvc-runtime", MSVCP)}
    assert all(re.fullmatch(r"(libscipy_openblas64_|msvcp140)-[0-9a-f]{32}\.dll", n) for n in _renames(
        devendored.doc))
    assert (w["tool"], w["status"], w["bytes_after"]) == ("delvewheel", "devendored", 0)
    assert w["requires"] == ["msvc-runtime>=14.44.35112", "openblas64>=0.3.34.481.3"]
    assert w["notes"] == []  # numpy's .pyd files are not signed: nothing to report
    assert devendored.out.is_file()


@pytest.mark.realwheels
def test_inspect_shows_the_registry_names(devendored: Devendored) -> None:
    before = _inspect(devendored.original)
    after = _inspect(devendored.out, devendored.site)
    renames = _renames(devendored.doc)
    assert before["wheel"]["tool"] == "delvewheel" and len(before["wheel"]["vendored"]) == 2
    wheel = after["wheel"]
    assert (wheel["tool"], wheel["vendored"], wheel["patch_file"]) == (None, [], None)
    assert after["errors"] == [] and after["warnings"] == []

    libs = before["wheel"]["libs_dirs"]
    old = {b["path"]: b for b in before["binaries"] if not any(b["path"].startswith(d + "/") for d in libs)}
    new = {b["path"]: b for b in after["binaries"]}
    assert set(new) == set(old)
    users = sorted(p for p, b in old.items() if set(b["needed"]) & set(renames))
    assert users == ["numpy/_core/_multiarray_umath.cp311-win_amd64.pyd",
                     "numpy/fft/_pocketfft_umath.cp311-win_amd64.pyd",
                     "numpy/linalg/_umath_linalg.cp311-win_amd64.pyd",
                     "numpy/linalg/lapack_lite.cp311-win_amd64.pyd"]
    registry = {OPENBLAS: "openblas64", MSVCP: "msvc-runtime"}
    for path, b in new.items():
        # the same imports in the same order, only the vendored names replaced
        assert b["needed"] == [renames.get(n, n) for n in old[path]["needed"]], path
        for need in b["needs"]:
            assert need["category"] not in ("vendored", "missing"), (path, need)
            if need["name"] in registry:
                assert (need["category"], need["library"], need["via"]) == (
                    "registry", registry[need["name"]], "registry"), (path, need)
    with zipfile.ZipFile(devendored.out) as zf:
        init = zf.read("numpy/__init__.py").decode()
        assert not [n for n in zf.namelist() if n.startswith("numpy.libs/")]
    assert "delvewheel" not in init and "numpy.libs" not in init


@pytest.mark.realwheels
def test_patched_pe_files_are_valid(devendored: Devendored) -> None:
    renames = {k.lower(): v for k, v in _renames(devendored.doc).items()}
    with zipfile.ZipFile(devendored.original) as zf:
        old = {n: zf.read(n) for n in zf.namelist() if n.endswith(".pyd")}
    with zipfile.ZipFile(devendored.out) as zf:
        new = {n: zf.read(n) for n in zf.namelist() if n.endswith(".pyd")}
    assert set(new) == set(old)
    patched = []
    for name, data in new.items():
        before = pefile.PE(data=old[name], fast_load=True)
        before.parse_data_directories()
        wanted = [renames.get(e.dll.decode().lower(), e.dll.decode()) for e in before.DIRECTORY_ENTRY_IMPORT]
        if data == old[name]:
            assert not any(n.lower() in renames for n in wanted), f"{name} was not patched"
            continue
        patched.append(name)
        pe = pefile.PE(data=data)  # full parse: every directory, and pefile's warnings
        assert [e.dll.decode() for e in pe.DIRECTORY_ENTRY_IMPORT] == wanted, name
        # each import keeps its functions (same names, same hint/name table)
        assert ([[i.name for i in e.imports] for e in pe.DIRECTORY_ENTRY_IMPORT]
                == [[i.name for i in e.imports] for e in before.DIRECTORY_ENTRY_IMPORT]), name
        assert not hasattr(pe, "DIRECTORY_ENTRY_DELAY_IMPORT")
        assert [s.Name for s in pe.sections] == [s.Name for s in before.sections]  # renamed in place
        assert len(data) == len(old[name])
        assert not [w for w in pe.get_warnings() if "import" in w.lower()], name
        if before.OPTIONAL_HEADER.CheckSum:
            assert pe.OPTIONAL_HEADER.CheckSum == pe.generate_checksum() != before.OPTIONAL_HEADER.CheckSum
        else:
            assert pe.OPTIONAL_HEADER.CheckSum == 0
        pe.close()
        before.close()
    assert sorted(patched) == ["numpy/_core/_multiarray_umath.cp311-win_amd64.pyd",
                               "numpy/fft/_pocketfft_umath.cp311-win_amd64.pyd",
                               "numpy/linalg/_umath_linalg.cp311-win_amd64.pyd",
                               "numpy/linalg/lapack_lite.cp311-win_amd64.pyd"]


# --- Wine: the renamed imports bind to the registry copies ---------------------------------------

# Names that python311.dll exports as data (the .pyd reads them; it never calls them). The
# loader only binds addresses, so a wrong guess here cannot change what the test shows.
_DATA = re.compile(r"PyExc_\w+|_Py_\w+Struct|Py\w*_Type|_Py_ascii_whitespace|_Py_ctype_\w+|Py_\w+Flag")


def _python_imports(pyds: Iterable[Path]) -> list[str]:
    names: set[str] = set()
    for path in pyds:
        pe = pefile.PE(str(path), fast_load=True)
        pe.parse_data_directories([pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_IMPORT"]])
        for entry in pe.DIRECTORY_ENTRY_IMPORT:
            if entry.dll.lower() == b"python311.dll":
                assert all(i.name for i in entry.imports), "an import by ordinal"
                names |= {i.name.decode() for i in entry.imports}
        pe.close()
    return sorted(names)


def _stand_in_python(out: Path, pyds: Iterable[Path]) -> Path:
    """The mock: a python311.dll exporting every name the .pyd files import from it, functions
    as empty functions and data as zero-filled objects."""
    names = _python_imports(pyds)
    assert "PyModuleDef_Init" in names and "PyExc_ValueError" in names
    src = "".join(f"__declspec(dllexport) char {n}[256];\n" if _DATA.fullmatch(n)
                  else f"__declspec(dllexport) void {n}(void) {{}}\n" for n in names)
    return mingw(out, src, "-shared")


@dataclass(frozen=True)
class WineLoad:
    """One harness run, with what Wine's loader traced (+module,+loaddll)."""

    rc: int
    stdout: str
    loaded: dict[str, tuple[str, str]]  # base name (lower) -> (Windows path, native|builtin)
    bound: dict[str, str]  # imported name (lower) -> path of the loaded module it bound to
    not_found: list[tuple[str, str]]  # (imported name, needed by)


def _trace(text: str) -> str:
    return text.replace("\\\\", "\\")  # Wine's traces escape backslashes


def _load(bed: WineBed, preloads: Path, pyd: Path, *, native_msvcp: bool = True) -> WineLoad:
    env = {"WINEDEBUG": "+module,+loaddll"}
    if native_msvcp:
        # Wine would run its own builtin msvcp140 in place of the file; the registry's Microsoft
        # DLL itself is what must load. Without the override, the builtin in system32 plays a
        # system-wide VC++ runtime.
        env["WINEDLLOVERRIDES"] = bed.env["WINEDLLOVERRIDES"] + ";msvcp140=n"
    proc = bed.run_harness(preloads, pyd, NO_INIT, env=env)
    err = proc.stderr
    loaded = {_trace(p).rsplit("\\", 1)[-1].lower(): (_trace(p), how)
              for p, how in re.findall(r'loaddll:build_module Loaded L"(.+?)" at \w+: (\w+)', err)}
    bound = {_trace(name).lower(): _trace(path)
             for path, name in re.findall(r'load_dll Found L"(.+?)" for L"(.+?)" at', err)}
    missing = [(name, _trace(by)) for name, by in
               re.findall(r'import_dll Library (\S+) \(which is needed by L"(.+?)"\) not found', err)]
    print(f"$ harness {preloads.name} {pyd.name}\n{proc.stdout}rc={proc.returncode}\n"
          f"loaded {loaded}\nbound {bound}\nnot found {missing}")
    return WineLoad(proc.returncode, proc.stdout, loaded, bound, missing)


@pytest.mark.realwheels
@pytest.mark.wine
def test_renamed_imports_bind_to_the_registry_copies_under_wine(
        wine: WineBed, devendored: Devendored, tmp_path: Path) -> None:
    patched = _extract(devendored.out, tmp_path / "patched", [LINALG, MULTIARRAY])
    # The original as delvewheel installs it: numpy.libs two levels up (found only through the
    # add_dll_directory call in numpy/__init__.py, which nothing makes here).
    with zipfile.ZipFile(devendored.original) as zf:
        libs = [n for n in zf.namelist() if n.startswith("numpy.libs/")]
    original = _extract(devendored.original, tmp_path / "original", [LINALG, MULTIARRAY, *libs])
    registry = devendored.site / "dllreg.libs"
    openblas = registry / "openblas64" / "bin" / OPENBLAS
    msvcp = registry / "msvc-runtime" / "bin" / MSVCP
    # python.exe has python311.dll loaded before any extension module is imported, so the stand-in
    # is preloaded by absolute path from a directory of its own: it is neither next to the .pyd
    # nor in a searched directory, and cannot help any other name be found.
    python = _stand_in_python(tmp_path / "python" / "python311.dll", [patched / LINALG, patched / MULTIARRAY])
    stub = write_preloads(tmp_path / "stub.preloads",
                          [(CPYTHON_EXT_FLAGS, p) for p in (python, msvcp, openblas)])
    bare = write_preloads(tmp_path / "bare.preloads", [(CPYTHON_EXT_FLAGS, python)])
    vendored = {Path(n).name.lower() for n in libs}

    for member, names in ((LINALG, [OPENBLAS]), (MULTIARRAY, [OPENBLAS, MSVCP])):
        pyd = patched / member
        # 1. the preloads the stub would make: the .pyd loads and its imports bind to them
        res = _load(wine, stub, pyd)
        assert parse_harness(res.stdout).error == ("symbol-error", NO_INIT, 127, "Procedure not found."), res
        assert res.loaded[OPENBLAS.lower()] == (winpath(openblas), "native")
        assert res.loaded[MSVCP] == (winpath(msvcp), "native")
        for name in names:
            assert res.bound[name.lower()] == winpath({OPENBLAS: openblas, MSVCP: msvcp}[name]), member
        assert not res.not_found
        # 2. without them: the renamed import is not found (126), and it is the only thing missing
        res = _load(wine, bare, pyd, native_msvcp=False)
        assert parse_harness(res.stdout).error == ("load-error", None, 126, "Module not found."), res
        assert res.not_found == [(OPENBLAS, winpath(pyd))]
        assert OPENBLAS.lower() not in res.loaded
        # 3. the original with the same preloads: its vendored names match nothing loaded
        orig = original / member
        res = _load(wine, stub, orig)
        assert parse_harness(res.stdout).error == ("load-error", None, 126, "Module not found."), res
        assert res.not_found and {n.lower() for n, _ in res.not_found} <= vendored
        assert all(by == winpath(orig) for _, by in res.not_found)
        assert OPENBLAS.lower() not in res.bound


# --- a signed PE file: the signature is removed, and the output says so --------------------------

LIBFOO = "libfoo-0123456789abcdef0123456789abcdef.dll"  # delvewheel's <name>-<32 hex>.dll
LIBBAR = "libbar-fedcba9876543210fedcba9876543210.dll"
FOO_C = "__declspec(dllexport) int foo(int x) { return 3 * x + 1; }\n"
BAR_C = "__declspec(dllimport) int foo(int);\n__declspec(dllexport) int bar(int x) { return foo(x) + 1; }\n"
EXT_C = ("__declspec(dllimport) int {fn}(int);\n"
         "__declspec(dllexport) void *PyInit__ext(void) {{ return (void *)(long long){fn}(2); }}\n")
EXT = "pkgw/_ext.cp311-win_amd64.pyd"
RECIPE = recipe_toml("windows", "libfoo.dll", "libfoo-*.dll")
PATCH = """\
# start delvewheel patch
def _delvewheel_patch_1_11_2():
    import os
    if os.path.isdir(libs_dir := os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir,
                                                              'pkgw.libs'))):
        os.add_dll_directory(libs_dir)


_delvewheel_patch_1_11_2()
del _delvewheel_patch_1_11_2
# end delvewheel patch
"""


def _signed_wheel(tmp: Path, signed: str) -> tuple[Path, Path, Path]:
    """(a delvewheel-style pkgw wheel, a dllreg-lib-foo wheel, a recipes directory).

    ``signed`` is the member that carries a certificate table: the extension, which imports
    libfoo-<hash>.dll, or ``pkgw.libs/libbar-<hash>.dll``, which the extension imports and which
    imports libfoo-<hash>.dll itself (no recipe: it is packaged, its import renamed)."""
    build = tmp / "build"
    foo = mingw(build / LIBFOO, FOO_C, "-shared")
    files = {f"pkgw.libs/{LIBFOO}": foo.read_bytes()}
    if signed == EXT:
        ext = mingw(build / "_ext.pyd", EXT_C.format(fn="foo"), "-shared", str(foo))
    else:
        bar = mingw(build / LIBBAR, BAR_C, "-shared", str(foo))
        files[f"pkgw.libs/{LIBBAR}"] = bar.read_bytes()
        ext = mingw(build / "_ext.pyd", EXT_C.format(fn="bar"), "-shared", str(bar))
    files[EXT] = ext.read_bytes()
    files[signed], _ = fake_signed(files[signed])
    dist_info = "pkgw-1.0.dist-info"
    files.update({"pkgw/__init__.py": f'"""pkgw."""\n\n\n{PATCH}from ._ext import *\n'.encode(),
                  f"{dist_info}/METADATA": b"Metadata-Version: 2.1\nName: pkgw\nVersion: 1.0\n",
                  f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: false\n"
                                        b"Tag: cp311-cp311-win_amd64\n"})
    wheel = tmp / "in" / "pkgw-1.0-cp311-cp311-win_amd64.whl"
    wheel.parent.mkdir()
    with WheelWriter(wheel, dist_info) as w:
        for name, data in files.items():
            w.add(name, data)
    mingw(tmp / "libsrc" / "bin" / "libfoo.dll", FOO_C, "-shared")
    lib = write_library_wheel(plan_library(read_source(tmp / "libsrc"), "foo", "1.2", platform="win_amd64"),
                              tmp / "libs")
    recipes = tmp / "recipes"
    recipes.mkdir()
    (recipes / "foo.toml").write_text(RECIPE)
    return wheel, lib, recipes


def _unsigned_with_checksum(data: bytes) -> pefile.PE:
    pe = pefile.PE(data=data)
    security = pe.OPTIONAL_HEADER.DATA_DIRECTORY[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_SECURITY"]]
    assert (security.VirtualAddress, security.Size) == (0, 0)
    assert pe.OPTIONAL_HEADER.CheckSum == pe.generate_checksum() != 0
    return pe


@pytest.mark.skipif(shutil.which(winebed.MINGW_CC) is None, reason=f"needs {winebed.MINGW_CC}")
@pytest.mark.parametrize("signed", [EXT, f"pkgw.libs/{LIBBAR}"], ids=["extension", "packaged-library"])
def test_removed_signature_is_reported(signed: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    wheel, lib, recipes = _signed_wheel(tmp_path, signed)
    note = f"{signed}: its Authenticode signature was removed (the import table changed)"
    args = ["devendor", str(wheel), "--with-lib", str(lib), "--recipes", str(recipes)]

    assert main([*args, "-o", str(tmp_path / "text")]) == 0
    text = capsys.readouterr().out
    assert f"  note: {note}\n" in text
    assert re.search(rf"substituted {re.escape(LIBFOO)} .* -> foo 1\.2 \(libfoo\.dll\)", text), text

    out = tmp_path / "json"
    assert main([*args, "-o", str(out), "--json"]) == 0
    (w,) = json.loads(capsys.readouterr().out)["wheels"]
    assert (w["status"], w["notes"]) == ("devendored", [note])  # reported once, unsigned ones not
    with zipfile.ZipFile(out / wheel.name) as zf:
        assert "delvewheel" not in zf.read("pkgw/__init__.py").decode()
        ext_data = zf.read(EXT)
    ext = pefile.PE(data=ext_data)
    if signed == EXT:
        pe = _unsigned_with_checksum(ext_data)
        assert "libfoo.dll" in [e.dll.decode() for e in pe.DIRECTORY_ENTRY_IMPORT]
    else:
        # the packaged DLL's name carries its build tag: never a plain libbar.dll another
        # provider could have loaded first (docs/devendor.md, the naming rule)
        (bar_wheel,) = out.glob("dllreg_lib_bar_*.whl")
        tag = bar_wheel.name.split("-")[0].rsplit("_", 1)[1]
        assert f"libbar-{tag}.dll" in [e.dll.decode() for e in ext.DIRECTORY_ENTRY_IMPORT]
        with zipfile.ZipFile(bar_wheel) as zf:
            (member,) = [n for n in zf.namelist() if n.endswith(f"libbar-{tag}.dll")]
            pe = _unsigned_with_checksum(zf.read(member))
        assert "libfoo.dll" in [e.dll.decode() for e in pe.DIRECTORY_ENTRY_IMPORT]
