"""devendor's edges on the layouts real wheels have: legacy and compound platform tags, binaries
that are not extension modules (netCDF4's HDF5 plugins), loose libraries beside the package
(pymupdf's libmupdf), and every refused input reported at once. gcc-built wheels."""

from __future__ import annotations

import sysconfig
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Venv, gcc_shared, run
from dllreg.binary.elf import read_elf
from dllreg.build.consumer import is_extension_module, stub_packages
from dllreg.cli.main import main
from dllreg.convert.plan import plan_devendor
from dllreg.convert.read import DevendorError, read_input_wheel, read_library_wheel
from dllreg.convert.write import build_outputs, write_outputs
from dllreg.errors import BuildError, PackageLibError
from dllreg.libwheel.package import plan_library, read_source
from dllreg.libwheel.platforms import check_tag, normalize_platform, platforms_of
from dllreg.recipes.schema import RecipeBook
from dllreg.recipes.source import compatible_platforms
from test_devendor import (
    EXT_C,
    EXT_SUFFIX,
    FOO_C,
    PY,
    book,
    needs_gcc,
    platform_tag,
    recipes,
    vendored_wheel,
    write_wheel,
)

__all__ = ["book", "recipes"]  # the fixtures, shared with test_devendor

PLUGIN_C = "int foo(int); int plugin_apply(int x){ return foo(x) * 10; }\n"
INCLUDE = sysconfig.get_paths()["include"]


# --- platform tags ----------------------------------------------------------------------------


@pytest.mark.parametrize("tag,pep600", [
    ("manylinux1_x86_64", "manylinux_2_5_x86_64"), ("manylinux2010_i686", "manylinux_2_12_i686"),
    ("manylinux2014_aarch64", "manylinux_2_17_aarch64"), ("manylinux_2_28_x86_64", "manylinux_2_28_x86_64"),
    ("musllinux_1_2_x86_64", "musllinux_1_2_x86_64"), ("win_amd64", "win_amd64"),
])
def test_legacy_manylinux_tags_are_their_glibc_versions(tag: str, pep600: str) -> None:
    assert normalize_platform(tag) == pep600


def test_compound_and_legacy_tags_are_checked_against_the_binaries() -> None:
    assert platforms_of("manylinux_2_17_x86_64.manylinux2014_x86_64") == ["manylinux_2_17_x86_64"]
    assert platforms_of("manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64") == [
        "manylinux_2_5_x86_64", "manylinux_2_28_x86_64"]
    for tags in ("manylinux2014_x86_64", "manylinux1_x86_64.manylinux_2_5_x86_64",
                 "manylinux2010_x86_64.manylinux_2_12_x86_64.manylinux_2_28_x86_64"):
        check_tag(tags, "elf", ["x86_64"], "w")
    with pytest.raises(PackageLibError, match="platform tag manylinux2014_aarch64 does not match"):
        check_tag("manylinux2014_aarch64", "elf", ["x86_64"], "w")
    with pytest.raises(PackageLibError, match="is for PE binaries"):
        check_tag("manylinux2014_x86_64.win_amd64", "elf", ["x86_64"], "w")
    # pip's --platform list for a legacy tag: every glibc version up to it, in both spellings
    tags = compatible_platforms("manylinux2014_x86_64")
    assert tags[0] == "manylinux_2_17_x86_64" and "manylinux_2_5_x86_64" in tags
    assert {"manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert "manylinux_2_18_x86_64" not in tags


@needs_gcc
def test_a_legacy_tagged_wheel_devendors_into_a_library_wheel_of_its_tags(tmp_path: Path,
                                                                          book: RecipeBook) -> None:
    if not platform_tag().endswith("x86_64"):
        pytest.skip("the tags below are x86_64 ones")
    built = vendored_wheel(tmp_path)
    tags = "manylinux_2_17_x86_64.manylinux2014_x86_64"
    legacy = built.with_name(built.name.replace(platform_tag(), tags))
    built.rename(legacy)
    plan = plan_devendor([read_input_wheel(legacy)], book, [])
    (wheel,) = write_outputs(build_outputs(plan), tmp_path / "out").libraries.values()
    assert read_library_wheel(wheel).platform == "manylinux2014_x86_64.manylinux_2_17_x86_64"
    # and package-lib takes a compound tag given by hand
    src = tmp_path / "src"
    gcc_shared(src / "lib" / "libq.so.1", "int q(void){return 1;}\n", "libq.so.1")
    assert plan_library(read_source(src), "q", "1", platform=tags).manifest.platform == tags


# --- binaries that are not extension modules ----------------------------------------------------


def _ext(build: Path, name: str, *link: str) -> Path:
    src = build / f"{name}.c"
    src.write_text(EXT_C.replace("{extra}", "0").replace('"_ext"', f'"{name}"')
                   .replace("PyInit__ext", f"PyInit_{name}"))
    out = build / f"{name}{EXT_SUFFIX}"
    run(["gcc", "-shared", "-fPIC", f"-I{INCLUDE}", "-o", str(out), str(src), *link])
    return out


@needs_gcc
def test_is_extension_module_reads_the_file(tmp_path: Path) -> None:
    ext = _ext(tmp_path, "_mod", "-Wl,--unresolved-symbols=ignore-all")
    plugin = gcc_shared(tmp_path / "libplug.so", "int plugin_apply(int x){ return x; }\n", None)
    assert is_extension_module(f"pkg/_mod{EXT_SUFFIX}", ext.read_bytes())
    assert not is_extension_module("pkg/plugins/libplug.so", plugin.read_bytes())
    assert not is_extension_module(f"pkg/_other{EXT_SUFFIX}", ext.read_bytes())  # exports PyInit__mod
    assert is_extension_module("pkg/_x.so", b"not a binary")  # not judged: the name decides
    names = ["pkg/__init__.py", f"pkg/_mod{EXT_SUFFIX}", "libplug.so"]
    with pytest.raises(BuildError, match=r"extension module libplug\.so sits at the top level"):
        stub_packages(names)  # by name alone, the plugin looks like an extension module
    assert stub_packages(names, lambda n: "plug" not in n) == ["pkg"]


def _plugin_wheel(tmp: Path) -> Path:
    """pkga (an extension needing pkga.libs/libfoo) plus pkga/plugins/libplug.so (no
    __init__.py there), which needs libfoo through RUNPATH $ORIGIN/../../pkga.libs and is
    dlopened by path, as HDF5 does with netCDF4's filter plugins."""
    base = vendored_wheel(tmp)
    with zipfile.ZipFile(base) as z:
        members = {n: z.read(n) for n in z.namelist() if ".dist-info/" not in n}
    build = tmp / "plug"
    libfoo = next(n for n in members if n.startswith("pkga.libs/"))
    (build / "l").mkdir(parents=True)
    (build / "l" / libfoo.split("/")[1]).write_bytes(members[libfoo])
    plugin = gcc_shared(build / "libplug.so", PLUGIN_C, None, f"-L{build / 'l'}",
                        f"-l:{libfoo.split('/')[1]}", "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../../pkga.libs")
    members["pkga/plugins/libplug.so"] = plugin.read_bytes()
    members["pkga/plugins/README.txt"] = b"HDF5-style filter plugins\n"
    base.unlink()
    return write_wheel(base, members)


@needs_gcc
def test_plugins_in_a_folder_without_init_are_payload(tmp_path: Path, book: RecipeBook,
                                                      make_venv: Callable[[str], Venv]) -> None:
    wheel = _plugin_wheel(tmp_path)
    out = tmp_path / "out"
    assert main(["devendor", str(wheel), "-o", str(out), "--recipes", str(tmp_path / "recipes")]) == 0
    with zipfile.ZipFile(out / wheel.name) as z:
        names = set(z.namelist())
        plugin = read_elf(z.read("pkga/plugins/libplug.so"))
    assert "pkga/_dlls.py" in names and not any(n.startswith("pkga/plugins/_dlls") for n in names)
    assert not any(n.startswith("pkga.libs/") for n in names)
    assert "libfoo.so.1" in plugin.needed and plugin.runpath == ()  # its need follows the library
    # installed, the plugin loads by path after the package, binding to the registry copy
    venv = make_venv("v")
    venv.pip("install", "--no-index", "--find-links", str(out), "pkga")
    got = venv.py("""
        import ctypes, os, pkga
        plug = ctypes.CDLL(os.path.join(os.path.dirname(pkga.__file__), "plugins", "libplug.so"))
        maps = {l.split()[-1] for l in open('/proc/self/maps') if 'libfoo' in l}
        print(plug.plugin_apply(2), sorted(os.path.relpath(m, os.path.dirname(os.path.dirname(pkga.__file__)))
                                            for m in maps))
    """).stdout.split(maxsplit=1)
    assert got[0] == "70" and got[1].strip() == "['dllreg.libs/foo/lib/libfoo.so.1']"


# --- loose libraries beside the package ---------------------------------------------------------


def _loose_wheel(tmp: Path) -> Path:
    """pkgl/_core (an extension) needs pkgl/libloose.so.3 through RUNPATH $ORIGIN: no .libs dir."""
    build = tmp / "loose"
    lib = gcc_shared(build / "libloose.so.3", FOO_C, "libloose.so.3")
    ext = _ext(build, "_core", f"-L{build}", "-l:libloose.so.3", "-Wl,--enable-new-dtags,-rpath,$ORIGIN")
    return write_wheel(tmp / "in" / f"pkgl-1.0-{PY}-{PY}-{platform_tag()}.whl", {
        "pkgl/__init__.py": b"from ._core import call\n", f"pkgl/_core{EXT_SUFFIX}": ext.read_bytes(),
        "pkgl/libloose.so.3": lib.read_bytes()})


@needs_gcc
def test_loose_libraries_beside_the_package_are_devendored(tmp_path: Path, book: RecipeBook,
                                                           make_venv: Callable[[str], Venv]) -> None:
    wheel = _loose_wheel(tmp_path)
    (wp,) = plan_devendor([read_input_wheel(wheel)], book, []).wheels
    (d,) = wp.decisions
    # the naming rule: never the plain libloose.so.3 (its SONAME grows by the build tag)
    tag = str(d.library)[-8:]
    assert (d.member, d.action, d.runtime) == ("pkgl/libloose.so.3", "package", f"libloose-{tag}.so.3")
    assert wp.removed == ("pkgl/libloose.so.3",) and wp.emptied == ()
    out = tmp_path / "out"
    assert main(["devendor", str(wheel), "-o", str(out), "--recipes", str(tmp_path / "recipes")]) == 0
    venv = make_venv("v")
    venv.pip("install", "--no-index", "--find-links", str(out), "pkgl")
    got = venv.py("""
        import pkgl
        print(pkgl.call(), sorted(l.split()[-1].split('site-packages/')[1] for l in open('/proc/self/maps')
                                  if 'libloose' in l))
    """).stdout.split(maxsplit=1)
    assert got[0] == "7" and f"dllreg.libs/loose-3-{tag}/lib/libloose-{tag}.so.3" in got[1]
    assert "pkgl/" not in got[1]


@needs_gcc
def test_an_extension_another_one_links_is_not_a_vendored_library(tmp_path: Path, book: RecipeBook) -> None:
    build = tmp_path / "b"
    build.mkdir()
    first = _ext(build, "_first")
    second = _ext(build, "_second", f"-L{build}", f"-l:{first.name}", "-Wl,--enable-new-dtags,-rpath,$ORIGIN")
    wheel = write_wheel(tmp_path / "in" / f"pkge-1.0-{PY}-{PY}-{platform_tag()}.whl", {
        "pkge/__init__.py": b"", f"pkge/_second{EXT_SUFFIX}": second.read_bytes(),
        f"pkge/{first.name}": first.read_bytes()})
    (wp,) = plan_devendor([read_input_wheel(wheel)], book, []).wheels
    assert wp.decisions == () and not wp.changed


# --- every refusal at once, nothing half-written ------------------------------------------------


def _top_level_ext_wheel(tmp: Path) -> Path:
    """A real extension module at the top level, outside any package: no stub can run before it."""
    base = vendored_wheel(tmp, "pkgn")
    with zipfile.ZipFile(base) as z:
        members = {n: z.read(n) for n in z.namelist() if ".dist-info/" not in n}
    members[f"_ext{EXT_SUFFIX}"] = members[f"pkgn/_ext{EXT_SUFFIX}"]
    base.unlink()
    return write_wheel(base, members)


def _bad_record_wheel(tmp: Path) -> Path:
    good = vendored_wheel(tmp, "pkgr")
    with zipfile.ZipFile(good) as z:
        members = [(n, z.read(n) + (b"\0" if n == "pkgr/__init__.py" else b"")) for n in z.namelist()]
    with zipfile.ZipFile(good, "w") as z:
        for n, d in members:
            z.writestr(n, d)
    return good


@needs_gcc
def test_every_refused_input_is_named_in_one_error(tmp_path: Path, book: RecipeBook,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    good = vendored_wheel(tmp_path, "pkga")
    bad_record = _bad_record_wheel(tmp_path)
    namespace = _top_level_ext_wheel(tmp_path)
    out = tmp_path / "out"
    recipes = ["--recipes", str(tmp_path / "recipes")]
    args = [str(good), str(bad_record), str(namespace), "-o", str(out), *recipes]
    assert main(["devendor", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 2 of 3 input wheel(s) refused, nothing was written")
    assert f"{bad_record}: refused" in err and "'pkgr/__init__.py' does not match its RECORD hash" in err
    assert namespace.name in err and f"extension module _ext{EXT_SUFFIX} sits at the top level" in err
    assert good.name not in err
    assert not out.exists() or list(out.iterdir()) == []  # not even the good wheel, no .part left
    # without the refused ones the same run writes
    assert main(["devendor", str(good), "-o", str(out), *recipes]) == 0
    assert sorted(p.name.split("-")[0] for p in out.iterdir()) == ["dllreg_lib_foo", "pkga"]


@needs_gcc
def test_install_refuses_every_bad_download_at_once(tmp_path: Path, book: RecipeBook) -> None:
    from dllreg.convert.install import devendor, write_wheelhouse

    downloads = [vendored_wheel(tmp_path, "pkga"), _bad_record_wheel(tmp_path),
                 _top_level_ext_wheel(tmp_path)]
    result = devendor(downloads, book, [], None, lambda line: None)
    house = tmp_path / "house"
    with pytest.raises(DevendorError) as exc:
        write_wheelhouse(result, house)
    text = str(exc.value)
    assert text.startswith("2 of 3 input wheel(s) refused") and "pkgr" in text
    assert "sits at the top level" in text
    assert list(house.iterdir()) == []


@needs_gcc
def test_a_wheel_changed_after_its_check_writes_nothing(tmp_path: Path, book: RecipeBook) -> None:
    path = vendored_wheel(tmp_path)
    wheel = read_input_wheel(path)
    outputs = build_outputs(plan_devendor([wheel], book, []))
    with zipfile.ZipFile(path) as z:
        members = [(n, z.read(n).replace(b"Test package.", b"Evil package.")) for n in z.namelist()]
    with zipfile.ZipFile(path, "w") as z:  # the same file, other bytes (RECORD no longer matches)
        for n, d in members:
            z.writestr(n, d)
    out = tmp_path / "out"
    with pytest.raises(DevendorError, match="the wheel changed since it was checked"):
        write_outputs(outputs, out)
    assert list(out.iterdir()) == []


@needs_gcc
def test_members_are_not_held_in_memory(tmp_path: Path) -> None:
    wheel = read_input_wheel(vendored_wheel(tmp_path))
    assert all(not any(isinstance(v, bytes) and len(v) > 8 for v in vars(m).values()) for m in wheel.members)
    init = b'"""Test package."""\nfrom ._ext import call\n'
    assert wheel.read(["pkga/__init__.py"]) == {"pkga/__init__.py": init}
