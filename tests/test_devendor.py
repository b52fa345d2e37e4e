"""devendor: the naming rule, the plan over gcc-built auditwheel-style wheels, hostile inputs."""

from __future__ import annotations

import io
import struct
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import gcc_shared, has_gcc, run
from dllreg.cli.main import main
from dllreg.convert.plan import plan_devendor
from dllreg.convert.read import DevendorError, read_input_wheel, read_library_wheel
from dllreg.convert.write import build_outputs, set_soname, write_outputs
from dllreg.libwheel.naming import (
    derived_names,
    no_downgrade,
    split_abi,
    unmangle,
    upstream_versions,
)
from dllreg.libwheel.package import plan_library, read_source, write_library_wheel
from dllreg.recipes.schema import RecipeBook, load_recipes
from dllreg.wheelfile import WheelWriter

needs_gcc = pytest.mark.skipif(not has_gcc(), reason="needs gcc")

PY = f"cp{sys.version_info.major}{sys.version_info.minor}"
EXT_SUFFIX = str(sysconfig.get_config_var("EXT_SUFFIX"))
FOO_C = "int foo(int x){return 3*x+1;}\nint foo_extra(void){return 7;}\n"
FOO_ONLY_C = "int foo(int x){return 3*x+1;}\n"
EXT_C = """\
#include <Python.h>
int foo(int); int foo_extra(void);
static PyObject* call(PyObject* s, PyObject* a){ return PyLong_FromLong(foo(2) + {extra}); }
static PyMethodDef M[] = {{"call", call, METH_NOARGS, 0}, {0}};
static struct PyModuleDef D = {PyModuleDef_HEAD_INIT, "_ext", 0, -1, M};
PyMODINIT_FUNC PyInit__ext(void){ return PyModule_Create(&D); }
"""


def recipe_toml(family: str, runtime_name: str, vendored_name: str) -> str:
    """The recipe of the test library foo (exports foo) on one platform family."""
    return f"""\
name = "foo"
depurl = "dep:generic/foo"
summary = "a test library"
license = "MIT"
conda-forge = []
debian = []
[abi]
symbols = ["foo"]
[abi.{family}]
runtime-names = ["{runtime_name}"]
vendored-names = ["{vendored_name}"]
"""


RECIPE = recipe_toml("linux", "libfoo.so.1", "libfoo-*.so.1*")


def platform_tag() -> str:
    return sysconfig.get_platform().replace("-", "_").replace(".", "_")


def write_wheel(path: Path, members: dict[str, bytes], executable: tuple[str, ...] = ()) -> Path:
    """A wheel with a correct RECORD (dllreg's own atomic writer)."""
    name, version = path.name.split("-")[:2]
    dist_info = f"{name}-{version}.dist-info"
    meta = {f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
            f"{dist_info}/WHEEL": f"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: {PY}-{PY}-"
                                  f"{platform_tag()}\n".encode()}
    with WheelWriter(path, dist_info) as w:
        for n, data in {**members, **meta}.items():
            w.add(n, data, executable=n in executable)
    return path


def vendored_wheel(tmp: Path, dist: str = "pkga", *, lib_code: str = FOO_C, mangle: str = "1a2b3c4d",
                   uses_extra: bool = True, extra_libs: dict[str, str] | None = None) -> Path:
    """An auditwheel-style wheel: <dist>.libs/libfoo-<hash>.so.1 (SONAME = that name) and an
    extension needing it through RPATH $ORIGIN/../<dist>.libs."""
    build = tmp / f"build-{dist}-{mangle}"
    libs = f"{dist}.libs"
    mangled = f"libfoo-{mangle}.so.1"
    link = []
    members: dict[str, bytes] = {}
    for lname, code in (extra_libs or {}).items():  # libraries libfoo needs, vendored too
        gcc_shared(build / lname, code, lname)
        members[f"{libs}/{lname}"] = (build / lname).read_bytes()
        link += [f"-L{build}", f"-l:{lname}"]
    gcc_shared(build / mangled, lib_code, mangled, *link, "-Wl,--disable-new-dtags,-rpath,$ORIGIN")
    src = build / "ext.c"
    src.write_text(EXT_C.replace("{extra}", "foo_extra()" if uses_extra else "0"))
    ext = build / f"_ext{EXT_SUFFIX}"
    run(["gcc", "-shared", "-fPIC", f"-I{sysconfig.get_paths()['include']}", "-o", str(ext), str(src),
         f"-L{build}", f"-l:{mangled}", f"-Wl,--disable-new-dtags,-rpath,$ORIGIN/../{libs}"])
    members.update({f"{dist}/__init__.py": b'"""Test package."""\nfrom ._ext import call\n',
                    f"{dist}/_ext{EXT_SUFFIX}": ext.read_bytes(),
                    f"{libs}/{mangled}": (build / mangled).read_bytes()})
    return write_wheel(tmp / "in" / f"{dist}-1.0-{PY}-{PY}-{platform_tag()}.whl", members)


def library_wheel(tmp: Path, code: str = FOO_C, version: str = "1.2") -> Path:
    d = tmp / f"libsrc-{version}"
    gcc_shared(d / "lib" / "libfoo.so.1", code, "libfoo.so.1")
    return write_library_wheel(plan_library(read_source(d), "foo", version), tmp / "libs")


@pytest.fixture
def recipes(tmp_path: Path) -> Path:
    d = tmp_path / "recipes"
    d.mkdir()
    (d / "foo.toml").write_text(RECIPE)
    return d


@pytest.fixture
def book(recipes: Path) -> RecipeBook:
    return load_recipes(recipes)


# --- the naming rule --------------------------------------------------------------------------


@pytest.mark.parametrize("filename,plain", [
    ("libfoo-1a2b3c4d.so.1.2.3", "libfoo.so.1.2.3"),
    ("libgfortran-040039e1-0352e75f.so.5.0.0", "libgfortran.so.5.0.0"),
    ("libscipy_openblas64_-32a4b2a6.so", "libscipy_openblas64_.so"),
    ("msvcp140-a4c2229bdc2a2a630acdc095b4d86008.dll", "msvcp140.dll"),
    ("libfoo.so.1", "libfoo.so.1"),
    ("libfoo-bar.so.1", "libfoo-bar.so.1"),
])
def test_unmangle(filename: str, plain: str) -> None:
    assert unmangle(filename) == plain


@pytest.mark.parametrize("plain,stem,major", [
    ("libcrypto.so.3", "libcrypto", "3"),
    ("libpng16.so.16.58.0", "libpng16", "16"),
    ("libopenblasp-r0.3.3.so", "libopenblasp-r0.3.3", ""),
    ("libscipy_openblas64_.so", "libscipy_openblas64_", ""),
    ("libgfortran-5.dll", "libgfortran-5", ""),
])
def test_split_abi(plain: str, stem: str, major: str) -> None:
    assert split_abi(plain)[:2] == (stem, major)


@pytest.mark.parametrize("filename,name,runtime", [
    # the ABI major is in the name: different majors coexist; the build tag keeps builds apart
    ("libcrypto-5d63cd29.so.3", "crypto-3-1a2b3c4d", "libcrypto-1a2b3c4d.so.3"),
    ("libssl-1a2b3c4d.so.1.1", "ssl-1-1a2b3c4d", "libssl-1a2b3c4d.so.1"),
    ("libjpeg-6dc8d115.so.62.4.0", "jpeg-62-1a2b3c4d", "libjpeg-1a2b3c4d.so.62"),
    ("libgfortran-91cc3cb1.so.3.0.0", "gfortran-3-1a2b3c4d", "libgfortran-1a2b3c4d.so.3"),
    # auditwheel's hash before the first dot goes, the build tag takes its place
    ("libopenblasp-r0-37b5f859.3.3.so", "openblasp-r0-3-3-1a2b3c4d", "libopenblasp-r0-1a2b3c4d.3.3.so"),
    ("libscipy_openblas64_-32a4b2a6.so", "scipy-openblas64-1a2b3c4d", "libscipy_openblas64_-1a2b3c4d.so"),
    ("msvcp140-a4c2229bdc2a2a630acdc095b4d86008.dll", "msvcp140-1a2b3c4d", "msvcp140-1a2b3c4d.dll"),
])
def test_derived_names(filename: str, name: str, runtime: str) -> None:
    got = derived_names(unmangle(filename), "1a2b3c4d")
    assert got == (name, runtime)
    # un-mangling the runtime name gives back the plain name's stem and major
    assert split_abi(unmangle(got[1]))[:2] == split_abi(unmangle(filename))[:2]


def test_upstream_version_is_read_from_the_file() -> None:
    blob = b"\0OPENSSL_3.5.0\0OpenSSL 3.0 compatible\0OpenSSL 3.5.8 25 Aug 2026\0"
    got = upstream_versions(blob, "libcrypto.so.3", frozenset({"OPENSSL_3.0.0", "OPENSSL_3.5.0"}))
    # the version node spelling is not a version string; a string below the newest node is
    # something else; the SONAME's "3" is only the fallback
    assert got == {"string": "3.5.8", "node": "3.5.0", "file": "3"}
    assert upstream_versions(b"", "libzstd.so.1.5.7") == {"file": "1.5.7"}
    assert upstream_versions(b"libcurl/8.14.1\0", "libcurl.so.4.8.0")["string"] == "8.14.1"
    assert upstream_versions(b"libpng version 1.6.58\0", "libpng16.so.16.58.0")["string"] == "1.6.58"


def test_no_downgrade() -> None:
    new = {"string": "3.5.8", "node": "3.5.0", "file": "3"}
    old = {"string": "3.5.1", "node": "3.5.0", "file": "3"}
    assert no_downgrade(new, old) is None
    assert no_downgrade(old, new) == "3.5.1 < 3.5.8 (by string version)"
    # equal version nodes prove nothing (3.5.1 and 3.5.8 both define OPENSSL_3.5.0)
    assert no_downgrade({"node": "3.5.0", "file": "3"}, {"node": "3.5.0", "file": "3"}) is not None
    assert no_downgrade({"file": "1.5.7"}, {"file": "1.5.7"}) is None  # libtool's revision
    assert no_downgrade({"node": "3.5.0", "file": "3"}, {"node": "3.4.0", "file": "3"}) is None


# --- planning ---------------------------------------------------------------------------------


@needs_gcc
def test_substitute_when_the_library_exports_every_imported_symbol(tmp_path: Path,
                                                                   book: RecipeBook) -> None:
    wheel = read_input_wheel(vendored_wheel(tmp_path))
    lib = read_library_wheel(library_wheel(tmp_path))
    plan = plan_devendor([wheel], book, [lib])
    (wp,) = plan.wheels
    (d,) = wp.decisions
    assert (d.action, d.library, d.version, d.runtime) == ("substitute", "foo", "1.2", "libfoo.so.1")
    assert [str(r) for r in wp.requires] == ["foo>=1.2"]
    assert wp.renames == (("libfoo-1a2b3c4d.so.1", "libfoo.so.1"),)
    assert wp.emptied == ("pkga.libs",) and wp.removed == ("pkga.libs/libfoo-1a2b3c4d.so.1",)
    assert plan.libraries == () and plan.substitutes == (lib,)
    assert (wp.bytes_before, wp.bytes_after) == (d.size, 0) and d.size > 0


@needs_gcc
def test_substitution_refused_when_a_symbol_is_missing(tmp_path: Path, book: RecipeBook) -> None:
    wheel = read_input_wheel(vendored_wheel(tmp_path))
    lib = read_library_wheel(library_wheel(tmp_path, FOO_ONLY_C))
    (wp,) = plan_devendor([wheel], book, [lib]).wheels
    (d,) = wp.decisions
    assert d.action == "package"  # kept out of the registry's foo, packaged as-is instead
    assert "does not export 1 symbol(s) the wheel imports from it: foo_extra" in d.reason
    # a consumer that does not import foo_extra can take it
    other = read_input_wheel(vendored_wheel(tmp_path, "pkgb", uses_extra=False))
    (wp,) = plan_devendor([other], book, [lib]).wheels
    assert wp.decisions[0].action == "substitute"


@needs_gcc
def test_recipe_abi_mismatch_is_not_substituted(tmp_path: Path, recipes: Path) -> None:
    (recipes / "foo.toml").write_text(RECIPE.replace('symbols = ["foo"]', 'symbols = ["foo64_"]'))
    wheel = read_input_wheel(vendored_wheel(tmp_path))
    lib = read_library_wheel(library_wheel(tmp_path))
    (wp,) = plan_devendor([wheel], load_recipes(recipes), [lib]).wheels
    (d,) = wp.decisions
    assert d.action == "package" and "does not export foo64_" in d.reason


@needs_gcc
def test_libraries_needed_only_by_a_substituted_one_are_dropped(tmp_path: Path, book: RecipeBook) -> None:
    bar = {"libbar-99aa88bb.so.2": "int bar(void){return 5;}\n"}
    code = "int bar(void);\nint foo(int x){return 3*x+bar()-4;}\nint foo_extra(void){return 7;}\n"
    wheel = read_input_wheel(vendored_wheel(tmp_path, lib_code=code, extra_libs=bar))
    lib = read_library_wheel(library_wheel(tmp_path))
    (wp,) = plan_devendor([wheel], book, [lib]).wheels
    assert {(d.action, d.member.split("/")[-1]) for d in wp.decisions} == {
        ("substitute", "libfoo-1a2b3c4d.so.1"), ("drop", "libbar-99aa88bb.so.2")}
    # without the substitute, both are packaged, and foo requires bar
    plan = plan_devendor([wheel], book, [])
    names = {lib.name.rsplit("-", 1)[0] if lib.name != "foo" else "foo": lib for lib in plan.libraries}
    assert set(names) == {"foo", "bar-2"}  # foo: the recipe vouches; bar: the naming rule
    tag = names["bar-2"].name[-8:]
    assert names["bar-2"].runtime == f"libbar-{tag}.so.2" != "libbar-99aa88bb.so.2"
    assert [r.name for r in names["foo"].requires] == [f"bar-2-{tag}"]
    assert names["foo"].renames == (("libbar-99aa88bb.so.2", f"libbar-{tag}.so.2"),)


@needs_gcc
def test_two_wheels_vendoring_one_library_make_one_library_wheel(tmp_path: Path, book: RecipeBook) -> None:
    a = read_input_wheel(vendored_wheel(tmp_path, "pkga"))
    b = read_input_wheel(vendored_wheel(tmp_path, "pkgb"))
    plan = plan_devendor([a, b], book, [])
    (lib,) = plan.libraries
    assert (lib.name, lib.runtime) == ("foo", "libfoo.so.1")  # the recipe has no PyPI source
    assert lib.users == (a.filename, b.filename)
    assert plan.wheels[1].decisions[0].reason.startswith("identical to the copy in pkga-1.0")
    assert [str(r) for r in plan.wheels[0].requires] == [str(r) for r in plan.wheels[1].requires]
    written = write_outputs(build_outputs(plan), tmp_path / "out")
    (wheel,) = written.libraries.values()
    assert [f.soname for f in read_library_wheel(wheel).manifest.libraries] == ["libfoo.so.1"]


@needs_gcc
def test_a_different_build_of_the_same_name_stays_vendored(tmp_path: Path, book: RecipeBook) -> None:
    a = read_input_wheel(vendored_wheel(tmp_path, "pkga"))
    b = read_input_wheel(vendored_wheel(tmp_path, "pkgb", lib_code=FOO_C + "int foo_more(void){return 1;}\n",
                                        mangle="5e6f7a8b"))
    plan = plan_devendor([a, b], book, [])
    assert len(plan.libraries) == 1
    (d,) = plan.wheels[1].decisions
    assert d.action == "keep" and "two builds of one name cannot share a process" in d.reason
    assert not plan.wheels[1].changed


@needs_gcc
def test_set_soname_in_place(tmp_path: Path) -> None:
    from dllreg.binary.elf import ELFError, read_elf

    lib = gcc_shared(tmp_path / "libfoo-1a2b3c4d.so.1", FOO_C, "libfoo-1a2b3c4d.so.1")
    data = lib.read_bytes()
    out = set_soname(data, "libfoo.so.1")
    assert read_elf(out).soname == "libfoo.so.1" and len(out) == len(data)
    # a longer name (a loose library's libfoo.so.1 -> libfoo-<tag>.so.1) gets a new string table
    longer = set_soname(data, "libfoo-1a2b3c4d-longer.so.1")
    assert read_elf(longer).soname == "libfoo-1a2b3c4d-longer.so.1" and len(longer) > len(data)
    assert read_elf(longer).exported == read_elf(data).exported
    with pytest.raises(ELFError, match="cannot become"):
        set_soname(data, "")


# --- the command: output, nothing to do, hostile input ----------------------------------------


@needs_gcc
def test_cli_devendors_and_reports(tmp_path: Path, recipes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wheel = vendored_wheel(tmp_path)
    lib = library_wheel(tmp_path)
    out = tmp_path / "out"
    assert main(["devendor", str(wheel), "-o", str(out), "--with-lib", str(lib),
                 "--recipes", str(recipes)]) == 0
    text = capsys.readouterr().out
    assert "substituted libfoo-1a2b3c4d.so.1" in text and "-> foo 1.2 (libfoo.so.1)" in text
    assert sorted(p.name for p in out.iterdir()) == sorted([wheel.name, lib.name])
    with zipfile.ZipFile(out / wheel.name) as z:
        names = z.namelist()
        init = z.read("pkga/__init__.py").decode()
        meta = z.read("pkga-1.0.dist-info/METADATA").decode()
    assert not any(n.startswith("pkga.libs/") for n in names)
    assert "pkga/_dlls.py" in names and "pkga-1.0.dist-info/dllreg.json" in names
    assert init.splitlines()[1].startswith("from . import _dlls")
    assert "Requires-Dist: dllreg-lib-foo>=1.2" in meta
    read_input_wheel(out / wheel.name)  # RECORD regenerated and right
    assert main(["devendor", str(wheel), "-o", str(tmp_path / "j"), "--with-lib", str(lib),
                 "--recipes", str(recipes), "--json"]) == 0
    import json

    doc = json.loads(capsys.readouterr().out)
    assert doc["wheels"][0]["libraries"][0]["action"] == "substitute"
    assert doc["bytes"]["after_vendored"] == 0 and doc["bytes"]["before"] > 0


@needs_gcc
def test_nothing_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wheel = write_wheel(tmp_path / f"plain-1.0-{PY}-{PY}-{platform_tag()}.whl",
                        {"plain/__init__.py": b"", f"plain/_x{EXT_SUFFIX}": gcc_shared(
                            tmp_path / "b" / "x.so", FOO_C, None).read_bytes()})
    out = tmp_path / "out"
    assert main(["devendor", str(wheel), "-o", str(out)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert not out.exists() or not list(out.iterdir())


def _zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for info, data in entries:
            z.writestr(info, data)
    return path


def _good_members(tmp: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(vendored_wheel(tmp)) as z:
        return {n: z.read(n) for n in z.namelist()}


def _symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = 0o120777 << 16
    return info


def _forge_size(path: Path, member: str, size: int) -> Path:
    """Rewrite the central directory's uncompressed size of ``member`` (a zip-bomb header)."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        name_len = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46:at + 46 + name_len].decode() == member:
            struct.pack_into("<I", data, at + 24, size)
            break
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))
    return path


HOSTILE = ["traversal", "absolute", "symlink", "duplicate", "case-collision", "record-hash",
           "not-in-record", "zip-bomb", "crc"]


@needs_gcc
@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_wheels_are_refused_before_anything_is_written(tmp_path: Path, case: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    good = _good_members(tmp_path)
    name = next(iter(n for n in good if n.startswith("pkga.libs/")))
    path = tmp_path / f"pkga-1.0-{PY}-{PY}-{platform_tag()}.whl"
    entries: list[tuple[zipfile.ZipInfo | str, bytes]] = list(good.items())
    expect = name
    if case == "traversal":
        entries.append(("pkga/../../evil.py", b"x")); expect = "evil.py"  # noqa: E702
    elif case == "absolute":
        entries.append(("/etc/evil.py", b"x")); expect = "/etc/evil.py"  # noqa: E702
    elif case == "symlink":
        entries.append((_symlink("pkga/link"), b"/etc/passwd")); expect = "pkga/link"  # noqa: E702
    elif case == "duplicate":
        entries.append((name, good[name]))
    elif case == "case-collision":
        entries.append((name.upper().replace("PKGA.LIBS", "pkga.libs"), b"x"))
    elif case == "record-hash":
        entries = [(n, d + b"\0" if n == name else d) for n, d in entries]
    elif case == "not-in-record":
        entries.append(("pkga/extra.py", b"x")); expect = "pkga/extra.py"  # noqa: E702
    elif case == "crc":
        pass
    if case == "duplicate":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
            _zip(path, entries)
    else:
        _zip(path, entries)
    if case == "zip-bomb":
        _forge_size(path, name, 0xFFFFFF00)
    if case == "crc":  # flip a byte inside the library's compressed data
        data = bytearray(path.read_bytes())
        with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
            info = z.getinfo(name)
        at = info.header_offset + 30 + len(name.encode()) + len(info.extra) + 100
        data[at] ^= 0xFF
        path.write_bytes(bytes(data))
    out = tmp_path / "out"
    assert main(["devendor", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and path.name in err and expect in err, err
    assert not out.exists() or not list(out.iterdir())


def test_errors_collect_every_record_problem(tmp_path: Path) -> None:
    path = write_wheel(tmp_path / "w-1.0-py3-none-any.whl", {"w/__init__.py": b"", "w/a.py": b"a"})
    data = {n: zipfile.ZipFile(path).read(n) for n in zipfile.ZipFile(path).namelist()}
    data["w/a.py"] = b"changed"
    data["w/b.py"] = b"new"
    _zip(path, list(data.items()))
    with pytest.raises(DevendorError) as exc:
        read_input_wheel(path)
    text = str(exc.value)
    assert "'w/a.py' does not match its RECORD hash" in text and "'w/b.py' is not listed" in text
    assert "nothing was written" in text
