from __future__ import annotations

import pytest

from dllreg.errors import DllregError
from dllreg.manifest import LibraryFile, Manifest
from dllreg.names import NativeRequirement
from dllreg.pkgconfig import flags, parse_pc, render_pc


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
