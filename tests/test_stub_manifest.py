"""The stub's manifest reader (``_runtime._manifest``) against dllreg's own (``libwheel/manifest.py``).

The stub cannot import libwheel/manifest.py, so it carries a reader of its own, written for speed
(str.find, no dataclasses). It is also the stub's security boundary: every path it returns
goes to the loader. Hypothesis checks that it accepts exactly the Library paths libwheel/manifest.py
accepts, for wheels and for external providers, that what it accepts stays inside the
library's folder (or is absolute and normalized), and that it reads what libwheel/manifest.py writes.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dllreg.errors import DllregError
from dllreg.libwheel.manifest import LibraryFile, Manifest, _check_abspath, _check_relpath
from dllreg.names import NativeRequirement
from dllreg.stub import _runtime

SHA = "ab" * 32
_DIR = Path(tempfile.mkdtemp(prefix="dllreg-stub-manifest-"))
LIB_DIR = str(_DIR / "dllreg.libs" / "foo")
os.makedirs(LIB_DIR)

# Paths from the characters that matter to the checks (separators, dots, drive colons).
paths = st.text(alphabet="ab/\\.:C ", max_size=12)


def read(text: str, provider: str = "") -> tuple:
    with open(os.path.join(LIB_DIR, "MANIFEST"), "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return _runtime._manifest(LIB_DIR, provider)


def manifest_with(path: str, provider: str = "") -> str:
    lines = ["Manifest-Version: 1", "Name: foo", "Version: 1.0", "Platform: any"]
    if provider:
        lines.append(f"Provider: {provider[1:]}")
    return "\n".join([*lines, f"Library: {path}\tlibfoo.so.1\t{SHA}\t", ""])


def accepted_by_manifest_py(path: str, external: bool) -> bool:
    try:
        (_check_abspath if external else _check_relpath)(path)
    except DllregError:
        return False
    return True


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=paths, provider=st.sampled_from(["", ".conda", ".system"]))
def test_library_paths_accepted_exactly_as_manifest_py_does(path: str, provider: str) -> None:
    try:
        _, _, got, _, _ = read(manifest_with(path, provider), provider)
    except ValueError:
        assert not accepted_by_manifest_py(path, bool(provider)), path
        return
    assert accepted_by_manifest_py(path, bool(provider)), path
    (loaded,) = got
    if provider:
        assert loaded == path.replace("/", os.sep)
    else:  # inside the library's folder, and nothing to normalize away
        assert loaded == LIB_DIR + os.sep + path.replace("/", os.sep)
        assert os.path.normpath(loaded) == loaded
        assert os.path.commonpath([loaded, LIB_DIR]) == LIB_DIR


@pytest.mark.parametrize(("path", "provider", "loaded"), [
    ("lib/libfoo.so.1", "", LIB_DIR + os.sep + "lib" + os.sep + "libfoo.so.1"),
    ("a..b/x", "", LIB_DIR + os.sep + "a..b" + os.sep + "x"),
    ("/opt/conda/lib/libfoo.so.1", ".conda", os.sep.join(["", "opt", "conda", "lib", "libfoo.so.1"])),
    ("C:/conda/Library/bin/foo.dll", ".conda", os.sep.join(["C:", "conda", "Library", "bin", "foo.dll"])),
])
def test_accepted_paths(path: str, provider: str, loaded: str) -> None:
    assert read(manifest_with(path, provider), provider)[2] == [loaded]


@pytest.mark.parametrize("path", ["../x.so", "lib/../../x.so", "/etc/x.so", "C:/x.dll", "lib//x",
                                  "./x.so", "lib\\x.dll", "c:x.dll", "", "lib/"])
def test_a_wheel_manifest_cannot_point_outside_its_folder(path: str) -> None:
    with pytest.raises(ValueError, match="relative"):
        read(manifest_with(path))


requirements = st.builds(
    lambda name, spec: NativeRequirement.parse(name + spec),
    st.sampled_from(["gfortran", "Open_BLAS", "a.b-c", "x1"]),
    st.sampled_from(["", ">=1", ">=0.3,<2", "==1.2.*", "~=1.4", "!=2"]))


@settings(max_examples=300, deadline=None)
@given(reqs=st.lists(requirements, max_size=3),
       libs=st.lists(st.sampled_from(["lib/libfoo.so.1", "lib/libbar.so.2", "bin/x.dll"]),
                     min_size=1, max_size=3, unique=True),
       version=st.sampled_from(["1.0", "0.3.21", "2.0rc1", "1.0+local"]),
       dll_dirs=st.lists(st.sampled_from(["bin", "lib/plugins"]), max_size=2, unique=True),
       crlf=st.booleans())
def test_reads_what_manifest_py_writes(reqs: list[NativeRequirement], libs: list[str],
                                       version: str, dll_dirs: list[str], crlf: bool) -> None:
    m = Manifest(name="foo", version=version, platform="linux_x86_64",
                 libraries=tuple(LibraryFile(p, p.rsplit("/", 1)[-1], SHA, ("libc.so.6",))
                                 for p in libs),
                 requires=tuple(reqs), dll_directories=tuple(dll_dirs), headers=("foo.h",))
    text = m.to_text()
    assert Manifest.from_text(text) == m
    got_version, got_libs, got_paths, got_reqs, got_dirs = read(
        text.replace("\n", "\r\n") if crlf else text)
    assert got_version == version
    assert [f[:3] for f in got_libs] == [[p, p.rsplit("/", 1)[-1], SHA] for p in libs]
    assert got_paths == [LIB_DIR + os.sep + p.replace("/", os.sep) for p in libs]
    assert got_reqs == [(r.name, r.specifier) for r in reqs]
    assert got_dirs == [LIB_DIR + os.sep + d.replace("/", os.sep) for d in dll_dirs]


def test_missing_and_incomplete_manifests() -> None:
    Path(LIB_DIR, "MANIFEST").unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError):
        _runtime._manifest(LIB_DIR, "")
    with pytest.raises(ValueError, match="no Version"):
        read("Manifest-Version: 1\nLibrary: lib/x\tx\t" + SHA + "\n")
    with pytest.raises(ValueError, match="no Version"):
        read("Version: 1.0\n")
    with pytest.raises(ValueError, match="lacks its fields"):
        read("Version: 1.0\nLibrary: lib/x.so\n")
