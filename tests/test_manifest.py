from __future__ import annotations

import pytest

from dllreg.errors import ManifestError
from dllreg.libwheel.manifest import LibraryFile, Manifest
from dllreg.names import NativeRequirement

SHA = "a" * 64


def sample() -> Manifest:
    return Manifest(
        name="openblas", version="0.3.34", platform="manylinux_2_28_x86_64",
        libraries=(LibraryFile("lib/libgfortran.so.5", "libgfortran.so.5", SHA),
                   LibraryFile("lib/libopenblas.so.0", "libopenblas.so.0", SHA,
                               ("libgfortran.so.5", "libm.so.6"))),
        requires=(NativeRequirement.parse("quadmath>=1"),),
        headers=("include/cblas.h",), pkgconfig="lib/pkgconfig/openblas.pc",
        import_libraries=("lib/libopenblas.dll.a",), dll_directories=("bin/plugins",),
        source="wheel x.whl", generator="dllreg 0.1.0")


def test_round_trip() -> None:
    m = sample()
    assert Manifest.from_text(m.to_text()) == m


def test_unknown_keys_are_ignored_for_forward_compatibility() -> None:
    text = sample().to_text() + "Future-Key: whatever\n"
    assert Manifest.from_text(text) == sample()


@pytest.mark.parametrize("edit,match", [
    (lambda t: t.replace("Manifest-Version: 1", "Manifest-Version: 9"), "upgrade dllreg"),
    (lambda t: t.replace("Name: openblas\n", ""), "missing required key Name"),
    (lambda t: t.replace("lib/libgfortran.so.5\t", "../evil.so\t"), "without '..'"),
    (lambda t: t.replace("\t" + SHA, "\tshort", 1), "PATH<TAB>NAME"),
    (lambda t: t.replace("Version: 0.3.34", "Version: 0.x"), "invalid version"),
    (lambda t: t + "garbage line\n", "expected 'Key: value'"),
    (lambda t: t + "Name: again\n", "given twice"),
    (lambda t: "\n".join(x for x in t.splitlines() if not x.startswith("Library")), "no Library"),
], ids=["version", "no-name", "traversal", "bad-sha", "bad-version", "garbage", "dup",
        "no-library"])
def test_bad_manifests_name_the_origin(edit, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ManifestError, match=match) as info:
        Manifest.from_text(edit(sample().to_text()), "/x/MANIFEST")
    assert str(info.value).startswith("/x/MANIFEST: ")
