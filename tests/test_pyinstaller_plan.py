"""What dllreg's PyInstaller hook collects, decided over data (the real freeze is in
test_pyinstaller.py)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from dllreg.convert.pyinstaller import (
    HOOK_TEXT,
    Collected,
    get_hook_dirs,
    plan_collection,
    stub_modules,
)
from dllreg.env.registry import Consumer, InstalledLibrary
from dllreg.libwheel.manifest import LibraryFile, Manifest
from dllreg.names import NativeRequirement

SITE = Path("/site")


def lib(name: str, version: str, path: str, *requires: str, provider: str = "wheel",
        site: Path = SITE) -> InstalledLibrary:
    soname = path.rsplit("/", 1)[-1]
    m = Manifest(name, version, "linux_x86_64", (LibraryFile(path, soname, "0" * 64),),
                 tuple(NativeRequirement.parse(r) for r in requires), headers=("include/x.h",),
                 provider=provider)
    folder = name if provider == "wheel" else f"{name}.{provider}"
    return InstalledLibrary(m, site / "dllreg.libs" / folder, site)


def consumer(*requires: str, vendored: tuple[str, ...] = ()) -> Consumer:
    return Consumer("qapp", "0.1", tuple(NativeRequirement.parse(r) for r in requires),
                    SITE / "qapp-0.1.dist-info", vendored)


def test_dependencies_first_and_a_registration_becomes_a_wheel_copy() -> None:
    libs = [lib("qsum", "3.1.4", "lib/libqsum.so.3", "base>=1"),
            lib("base", "1.2", "/usr/lib/x86_64-linux-gnu/libbase.so.1", provider="system")]
    plan = plan_collection(consumer("qsum>=3"), libs)
    assert [dest for dest, _ in plan.manifests] == ["dllreg.libs/base", "dllreg.libs/qsum"]
    assert plan.files == (
        Collected(Path("/usr/lib/x86_64-linux-gnu/libbase.so.1"), "dllreg.libs/base/lib", True),
        Collected(SITE / "dllreg.libs/qsum/lib/libqsum.so.3", "dllreg.libs/qsum/lib", True))
    base = Manifest.from_text(plan.manifests[0][1], "base")
    assert (base.provider, base.libraries[0].path, base.headers) == ("wheel", "lib/libbase.so.1", ())
    assert plan.missing == ()


def test_the_first_copy_that_satisfies_wins_as_in_the_stub() -> None:
    old = lib("qsum", "2.0", "lib/libqsum.so.3", site=Path("/user"))
    new = lib("qsum", "3.1.4", "lib/libqsum.so.3")
    plan = plan_collection(consumer("qsum>=3"), [old, new])
    assert plan.files == (Collected(SITE / "dllreg.libs/qsum/lib/libqsum.so.3",
                                    "dllreg.libs/qsum/lib", True),)


def test_missing_is_reported_unless_vendored_and_markers_apply() -> None:
    plan = plan_collection(consumer("qsum>=3", "winonly; sys_platform == 'win32'"), [])
    assert [(who, str(r)) for who, r in plan.missing] == [("qapp 0.1", "qsum>=3")]
    vendored = [(SITE / "qapp/dllreg.libs/qsum/MANIFEST", "qapp/dllreg.libs/qsum")]
    plan = plan_collection(consumer("qsum>=3", vendored=("qsum",)), [], vendored)
    assert plan.missing == () and plan.files == (
        Collected(vendored[0][0], "qapp/dllreg.libs/qsum", False),)


def test_a_pypi_provider_copy_gets_its_files_hashed() -> None:
    # A PyPI wheel installed as it is (docs/recipes.md): absolute paths, RECORD-form hashes.
    path = "/site/scipy_openblas32/lib/libscipy_openblas.so"
    m = Manifest("openblas", "0.3.30", "manylinux_2_28_x86_64",
                 (LibraryFile(path, "libscipy_openblas.so", "sha256=abc"),),
                 provider="pypi:scipy-openblas32")
    copy = InstalledLibrary(m, SITE / "scipy_openblas32", SITE)
    plan = plan_collection(consumer("openblas>=0.3"), [copy], hasher=lambda p: "f" * 64)
    assert plan.files == (Collected(Path(path), "dllreg.libs/openblas/lib", True),)
    frozen = Manifest.from_text(plan.manifests[0][1], "openblas")
    assert frozen.libraries[0] == LibraryFile("lib/libscipy_openblas.so",
                                              "libscipy_openblas.so", "f" * 64)
    assert (frozen.provider, frozen.source) == ("wheel", "frozen from pypi:scipy-openblas32")


def test_stub_modules() -> None:
    assert stub_modules(["qapp/_dlls.py", "a/b/_dlls.py", "odd.py"]) == ["qapp._dlls", "a.b._dlls"]


def test_get_hook_dirs_writes_one_hook_per_installed_stub(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    for name, stubs in (("qapp", ["qapp/_dlls.py"]), ("qnest", ["qnest/core/_dlls.py"])):
        info = site / f"{name}-0.1.dist-info"
        info.mkdir(parents=True)
        (info / "dllreg.json").write_text(json.dumps({"requires": ["qsum"], "stubs": stubs}))
    monkeypatch.setattr(sys, "path", [str(site)])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (folder,) = get_hook_dirs()
    assert folder.startswith(str(tmp_path / "cache" / "dllreg" / "pyinstaller-hooks"))
    assert sorted(p.name for p in Path(folder).iterdir()) == ["hook-qapp._dlls.py",
                                                              "hook-qnest.core._dlls.py"]
    assert (Path(folder) / "hook-qapp._dlls.py").read_text() == HOOK_TEXT
    shutil.rmtree(site / "qnest-0.1.dist-info")  # uninstalled: its hook goes
    assert get_hook_dirs() == [folder]
    assert [p.name for p in Path(folder).iterdir()] == ["hook-qapp._dlls.py"]
    # No writable cache (here: XDG_CACHE_HOME is a file): a private temporary folder instead.
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    (other,) = get_hook_dirs()
    assert Path(other).name.startswith("dllreg-pyinstaller-hooks-")
    assert [p.name for p in Path(other).iterdir()] == ["hook-qapp._dlls.py"]
    shutil.rmtree(other)
