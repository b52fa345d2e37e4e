from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from dllreg.cli.main import main
from dllreg.errors import DllregError
from dllreg.libwheel.manifest import LibraryFile, Manifest
from dllreg.libwheel.pkgconfig import flags, parse_pc, render_pc
from dllreg.names import NativeRequirement


def manifest(**kw: object) -> Manifest:
    base: dict[str, object] = dict(
        name="qsum", version="3.1.4", platform="linux_x86_64",
        libraries=(LibraryFile("lib/libqsum.so.3", "libqsum.so.3", "0" * 64),),
        headers=("include/qsum.h",))
    base.update(kw)
    return Manifest(**base)  # type: ignore[arg-type]


def test_render_then_evaluate_relocates_to_the_pc_directory() -> None:
    text = render_pc(manifest(requires=(NativeRequirement.parse("zlib>=1.2,<2,!=1.3"),)),
                     "-DQ=1")
    variables, fields = parse_pc(text, "/env/dllreg.libs/qsum/lib/pkgconfig", "qsum.pc")
    assert variables["libdir"] == "/env/dllreg.libs/qsum/lib/pkgconfig/../../lib"
    assert sorted(fields["Requires"].split(", ")) == ["zlib < 2", "zlib >= 1.2"]  # != is dllreg's job
    assert flags(fields, cflags=True, libs=False) == [
        "-I/env/dllreg.libs/qsum/lib/pkgconfig/../../include", "-DQ=1"]
    libs = flags(fields, cflags=False, libs=True)
    assert libs[1] == "-l:libqsum.so.3" and not any("-rpath," in f for f in libs)


def test_no_headers_no_include_flag() -> None:
    _, fields = parse_pc(render_pc(manifest(headers=())), "/x", "q.pc")
    assert flags(fields, cflags=True, libs=False) == []


@pytest.mark.parametrize("text,match", [
    ("a=${b}\nb=${a}\nLibs: ${a}\n", "loop"),
    ("Libs: ${nope}\n", "undefined variable"),
    ("this is not pkg-config\n", "cannot parse"),
])
def test_bad_pc_files(text: str, match: str) -> None:
    with pytest.raises(DllregError, match=match):
        parse_pc(text, "/x", "bad.pc")


@pytest.mark.realwheels
def test_library_wheel_keeps_the_sources_pc_for_existing_blas_detection(tmp_path: Path) -> None:
    """numpy/scipy look for scipy-openblas(64) and read openblas_config: the real pkg-config finds
    them in the library wheel's files, relocated (no -rpath, paths inside the library directory)."""
    downloads = Path(__file__).resolve().parent.parent / ".cache" / "downloads"
    source = sorted(downloads.glob("scipy_openblas64-*manylinux*x86_64.whl"))
    if not source or not shutil.which("pkg-config"):
        pytest.skip("needs the cached scipy-openblas64 wheel and pkg-config")
    assert main(["package-lib", "openblas64", "--from", str(source[-1]), "-o", str(tmp_path / "w")]) == 0
    root = tmp_path / "site"
    with zipfile.ZipFile(next((tmp_path / "w").glob("*.whl"))) as zf:
        zf.extractall(root)
    pcdir = root / "dllreg.libs" / "openblas64" / "lib" / "pkgconfig"
    assert sorted(p.name for p in pcdir.iterdir()) == ["openblas64.pc", "scipy-openblas.pc",
                                                        "scipy-openblas64.pc"]
    env = {**os.environ, "PKG_CONFIG_PATH": str(pcdir)}
    for module in ("scipy-openblas", "scipy-openblas64"):
        def pc(*args: str, module: str = module) -> str:
            return subprocess.run(["pkg-config", *args, module], env=env, capture_output=True, text=True,
                                  check=True).stdout.strip()

        assert "USE_64BITINT=1" in pc("--variable=openblas_config")
        assert pc("--modversion") == source[-1].name.split("-")[1]
        libs = pc("--libs")
        lib = root / "dllreg.libs" / "openblas64" / "lib"
        assert f"-L{lib}" in libs and "-l:libscipy_openblas64_.so" in libs and "rpath," not in libs, libs
        assert "-DBLAS_SYMBOL_SUFFIX=64_" in pc("--cflags")
