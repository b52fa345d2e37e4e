"""Tests for dllreg.recipes.schema: the shipped recipes, the schema's errors, DepURLs, the PEP 725
[external] mapping and its reconciliation with [tool.dllreg], ABI checks on gcc-built libraries
and on the real scipy-openblas wheels (marked realwheels), and fetching a source with pip."""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from conftest import gcc_shared, has_gcc
from dllreg.libwheel.package import plan_library, read_source, write_library_wheel
from dllreg.names import NativeRequirement
from dllreg.recipes.pep725 import reconcile, requirements_from_external
from dllreg.recipes.schema import DepURL, RecipeBook, RecipeError, load_recipes, parse_depurl
from dllreg.recipes.source import (
    check_abi,
    compatible_platforms,
    fetch_source,
    platform_family,
    recipe_source,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DOWNLOADS = ROOT / ".cache" / "downloads"
needs_gcc = pytest.mark.skipif(not has_gcc(), reason="needs gcc")
SHIPPED = {"openblas", "openblas64", "libopenblas", "gfortran", "quadmath", "msvc-runtime", "cudart", "nvrtc",
           "nvjitlink"}


@pytest.fixture(scope="module")
def book() -> RecipeBook:
    return load_recipes()


def req(text: str) -> NativeRequirement:
    return NativeRequirement.parse(text)


# --- the shipped recipes ----------------------------------------------------------------------


def test_every_shipped_recipe_validates(book: RecipeBook) -> None:
    assert set(book.names()) == SHIPPED
    from_dir = load_recipes(ROOT / "recipes")  # the packaged copy is the repository's
    assert [(r.name, r.depurl, r.abi, r.sources) for r in from_dir.recipes] == \
        [(r.name, r.depurl, r.abi, r.sources) for r in book.recipes]
    for r in book.recipes:
        assert r.path.endswith(f"{r.name}.toml") and r.summary and r.license and r.abi


def test_shipped_facts(book: RecipeBook) -> None:
    lp64, ilp64 = book.require("openblas"), book.require("openblas64")
    assert str(lp64.depurl) == "dep:generic/openblas"
    assert lp64.abi_for("linux").runtime_names == ("libscipy_openblas.so",)  # type: ignore[union-attr]
    assert ilp64.abi_for("windows").runtime_names == ("libscipy_openblas64_.dll",)  # type: ignore[union-attr]
    assert ilp64.abi_for("linux").expected_symbols()[0] == "scipy_dgemm_64_"  # type: ignore[union-attr]
    assert {a.integer for a in lp64.abi} == {"lp64"} and {a.integer for a in ilp64.abi} == {"ilp64"}
    assert lp64.source_for("linux").requirement == "scipy-openblas32"
    assert ilp64.source_for("macos").requirement == "scipy-openblas64"
    assert book.by_depurl("dep:github/OpenMathLib/OpenBLAS") is lp64
    assert {r.name for r in book.providers("dep:virtual/interface/blas")} == {"openblas", "openblas64"}
    assert book.require("gfortran").requires == (req("quadmath"),)
    assert book.require("msvc-runtime").abi_for("linux") is None
    for name in ("gfortran", "quadmath"):  # no wheel on PyPI ships them standalone
        with pytest.raises(RecipeError, match=rf"{name}\.toml: no PyPI source for {name} .*--from"):
            book.require(name).source_for("linux")


def test_packages_in_pyproject_match_the_source_tree() -> None:
    """pyproject.toml lists packages by hand (package-dir maps recipes/ to dllreg._recipes)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT / "src").parts)
               for p in (ROOT / "src" / "dllreg").rglob("__init__.py")}
    assert set(config["packages"]) == on_disk | {"dllreg._recipes"}
    assert config["package-dir"]["dllreg._recipes"] == "recipes"


def test_every_recipe_key_is_documented() -> None:
    doc = (ROOT / "docs" / "recipes.md").read_text()
    keys: set[str] = set()

    def walk(table: dict[str, Any]) -> None:
        for k, v in table.items():
            keys.add(k)
            if isinstance(v, dict):
                walk(v)

    for f in (ROOT / "recipes").glob("*.toml"):
        walk(tomllib.loads(f.read_text()))
    assert {k for k in keys if f"`{k}`" not in doc} == set()


# --- schema errors --------------------------------------------------------------------------

GOOD = """\
name = "foo"
depurl = "dep:generic/foo"
summary = "a test library"
license = "MIT"
conda-forge = []
debian = ["libfoo1"]

[abi]
symbols = ["foo_init"]

[abi.linux]
runtime-names = ["libfoo.so.1"]
"""


def test_minimal_recipe_loads(tmp_path: Path) -> None:
    (tmp_path / "foo.toml").write_text(GOOD)
    (foo,) = load_recipes(tmp_path).recipes
    assert (foo.name, foo.depurl, foo.sources, foo.provides) == \
        ("foo", parse_depurl("dep:generic/foo"), (), ())


BAD: dict[str, tuple[dict[str, str], str, str]] = {  # id: (files, file named, key named)
    "missing key": ({"foo.toml": GOOD.replace('license = "MIT"\n', "")}, "foo.toml", "license: missing"),
    "unknown key": ({"foo.toml": GOOD.replace("debian", 'licence = "MIT"\ndebian')}, "foo.toml",
                    "licence: unknown key"),
    "unknown nested key": ({"foo.toml": GOOD + 'sonames = ["x"]\n'}, "foo.toml",
                           "abi.linux.sonames: unknown key"),
    "bad DepURL": ({"foo.toml": GOOD.replace("dep:generic/foo", "pkg:generic/foo")}, "foo.toml",
                   "depurl: 'pkg:generic/foo' is not a DepURL"),
    "malformed DepURL": ({"foo.toml": GOOD.replace("dep:generic/foo", "dep:generic//foo")}, "foo.toml",
                         "depurl: 'dep:generic//foo' is not a well-formed DepURL"),
    "versioned DepURL": ({"foo.toml": GOOD.replace("dep:generic/foo", "dep:generic/foo@1.0")}, "foo.toml",
                         "depurl: 'dep:generic/foo@1.0': a recipe's DepURLs carry no version"),
    "virtual depurl": ({"foo.toml": GOOD.replace("dep:generic/foo", "dep:virtual/interface/foo")},
                       "foo.toml", "depurl: 'dep:virtual/interface/foo': must be not virtual"),
    "concrete provides": ({"foo.toml": GOOD.replace("debian", 'provides = ["dep:generic/blas"]\ndebian')},
                          "foo.toml", "provides[0]: 'dep:generic/blas': must be virtual"),
    "wrong type": ({"foo.toml": GOOD.replace('"a test library"', "3")}, "foo.toml",
                   "summary: must be a string, not int"),
    "wrong list type": ({"foo.toml": GOOD.replace('["libfoo1"]', '"libfoo1"')}, "foo.toml",
                        "debian: must be a list of non-empty strings"),
    "empty runtime-names": ({"foo.toml": GOOD.replace('["libfoo.so.1"]', "[]")}, "foo.toml",
                            "abi.linux.runtime-names: must not be empty"),
    "no abi family": ({"foo.toml": GOOD.split("[abi.linux]")[0]}, "foo.toml", "abi: describe at least one"),
    "bad integer": ({"foo.toml": GOOD.replace("[abi]\n", '[abi]\ninteger = "lp32"\n')}, "foo.toml",
                    "abi.integer: 'lp32'"),
    "name is not the file's": ({"foo.toml": GOOD.replace('name = "foo"', 'name = "bar"')}, "foo.toml",
                               "name: 'bar' must equal the file name"),
    "source without abi": ({"foo.toml": GOOD + '[source.windows]\nrequirement = "foo"\nfiles = ["*.dll"]\n'},
                           "foo.toml", "source.windows: has no matching [abi.windows]"),
    "bad version rule": ({"foo.toml": GOOD + '[source.linux]\nrequirement = "foo"\nfiles = ["x"]\n'
                          'version = "latest"\n'}, "foo.toml", "source.linux.version: 'latest'"),
    "requirement with URL": ({"foo.toml": GOOD + '[source.linux]\nrequirement = "foo @ https://x/y.whl"\n'
                              'files = ["x"]\n'}, "foo.toml", "source.linux.requirement:"),
    "requires unknown library": ({"foo.toml": GOOD.replace("debian", 'requires = ["barlib"]\ndebian')},
                                 "foo.toml", "requires[0]: no recipe named 'barlib'"),
    "invalid TOML": ({"foo.toml": GOOD + "[abi\n"}, "foo.toml", "invalid TOML"),
    "duplicate DepURL": ({"foo.toml": GOOD, "bar.toml": GOOD.replace('name = "foo"', 'name = "bar"')},
                         "foo.toml", "depurl: dep:generic/foo is already claimed by "),
    "duplicate via alias": ({"foo.toml": GOOD, "bar.toml": GOOD.replace('name = "foo"', 'name = "bar"')
                             .replace("dep:generic/foo", "dep:generic/bar").replace(
                                 "debian", 'aliases = ["dep:generic/FOO"]\ndebian')},
                            "foo.toml", "depurl: dep:generic/foo is already claimed by "),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_schema_errors_name_file_and_key(tmp_path: Path, case: str) -> None:
    files, culprit, message = BAD[case]
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(RecipeError) as info:
        load_recipes(tmp_path)
    text = str(info.value)
    assert text.startswith(str(tmp_path / culprit) + ": "), text
    assert message in text, text
    if case.startswith("duplicate"):
        assert str(tmp_path / "bar.toml") in text


# --- DepURLs --------------------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("dep:generic/openblas", DepURL("generic", None, "openblas")),
    ("dep:generic/openblas@>=0.3", DepURL("generic", None, "openblas", ">=0.3")),
    ("dep:generic/openblas@0.3.21", DepURL("generic", None, "openblas", "==0.3.21")),
    ("dep:generic/openblas@>=0.3,<0.4", DepURL("generic", None, "openblas", "<0.4,>=0.3")),
    ("dep:virtual/interface/blas", DepURL("virtual", "interface", "blas")),
    ("dep:virtual/interface/lapack@>=3.7.1", DepURL("virtual", "interface", "lapack", ">=3.7.1")),
    ("dep:GitHub/OpenMathLib/OpenBLAS", DepURL("github", "OpenMathLib", "OpenBLAS")),
    ("dep:golang/github.com/junegunn/fzf", DepURL("golang", "github.com/junegunn", "fzf")),
    ("dep:cran/nat.nblast", DepURL("cran", None, "nat.nblast")),
])
def test_parse_depurl(text: str, expected: DepURL) -> None:
    assert parse_depurl(text) == expected


@pytest.mark.parametrize("text,message", [
    ("pkg:generic/openblas", "is not a DepURL"),
    ("openblas", "is not a DepURL"),
    ("dep:openblas", "not a well-formed DepURL"),
    ("dep:generic/", "not a well-formed DepURL"),
    ("dep:generic//openblas", "not a well-formed DepURL"),
    ("dep:1generic/openblas", "not a well-formed DepURL"),
    ("dep:generic/open%20blas", "not a well-formed DepURL"),
    ("dep:virtual/blas", "dep:virtual/interface/NAME"),
    ("dep:virtual/library/blas", "dep:virtual/interface/NAME"),
    ("dep:generic/cmake?repository_url=x", "qualifiers"),
    ("dep:generic/openblas#lib", "subpaths"),
    ("dep:generic/openblas@", "invalid version ''"),
    ("dep:generic/openblas@~=0.3", "invalid version '~=0.3'"),
    ("dep:generic/openblas@>=0.3,!=0.3.5", "invalid version"),
    ("dep:generic/openblas@>=zz", "invalid version '>=zz'"),
    ("dep:generic/openssl@1.1.1w", "invalid version '1.1.1w'"),
])
def test_parse_depurl_refuses(text: str, message: str) -> None:
    with pytest.raises(RecipeError, match=re.escape(message)):
        parse_depurl(text)


def test_depurl_key_and_text() -> None:
    dep = parse_depurl("dep:github/OpenMathLib/OpenBLAS@>=0.3")
    assert dep.key == "dep:github/openmathlib/openblas"
    assert str(dep) == "dep:github/OpenMathLib/OpenBLAS@>=0.3"


# --- PEP 725 [external] and [tool.dllreg] ---------------------------------------------------


def external(*host: str, tool: list[str] | None = None, **more: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"external": {"host-requires": list(host), **more}}
    if tool is not None:
        data["tool"] = {"dllreg": {"backend": "setuptools.build_meta", "requires": tool}}
    return data


def test_external_gives_the_same_result_as_tool_dllreg(book: RecipeBook) -> None:
    ext = requirements_from_external(external("dep:generic/openblas@>=0.3"), book)
    assert ext == [req("openblas>=0.3")]
    assert reconcile([req("openblas>=0.3")], ext) == [req("openblas>=0.3")]
    assert reconcile([], ext) == ext and reconcile([req("openblas>=0.3")], []) == [req("openblas>=0.3")]


def test_external_mapping_rules(book: RecipeBook) -> None:
    data = external("dep:github/OpenMathLib/OpenBLAS@>=0.3", "dep:generic/openblas@<0.4",
                    "dep:virtual/compiler/c")  # compilers belong in build-requires
    with pytest.raises(RecipeError, match=r"\[external\] host-requires\[2\]: no recipe provides "
                                          r"dep:virtual/compiler/c"):
        requirements_from_external(data, book)
    data["external"]["host-requires"].pop()
    data["external"]["build-requires"] = ["dep:virtual/compiler/c", "dep:generic/ninja"]  # not mapped
    data["external"]["optional-host-requires"] = {"extra": ["dep:generic/zlib"]}  # not mapped
    data["external"]["dependencies"] = ["dep:generic/libgfortran; sys_platform == 'linux'"]
    assert requirements_from_external(data, book) == [
        req("openblas<0.4,>=0.3"), req('gfortran; sys_platform == "linux"')]


def test_virtual_interfaces(book: RecipeBook) -> None:
    scipy_like = external("dep:virtual/interface/blas", "dep:virtual/interface/lapack@>=3.7.1")
    with pytest.raises(RecipeError, match=r"host-requires\[0\]: dep:virtual/interface/blas is ambiguous: "
                                          r"provided by openblas, openblas64; name exactly one"):
        requirements_from_external(scipy_like, book)
    scipy_like["tool"] = {"dllreg": {"requires": ["openblas64>=0.3.27"]}}
    # both interfaces resolve to the library [tool.dllreg] names, with its version range
    assert requirements_from_external(scipy_like, book) == [req("openblas64>=0.3.27")]
    both = [req("openblas"), req("openblas64")]
    with pytest.raises(RecipeError, match="ambiguous: provided by openblas, openblas64"):
        requirements_from_external(scipy_like, book, tool_requires=both)


def test_unknown_depurls_get_a_did_you_mean(book: RecipeBook) -> None:
    with pytest.raises(RecipeError, match=r"pyproject.toml: \[external\] host-requires\[0\]: no recipe in "
                                          r"the registry has the DepURL dep:generic/openbals; did you mean "
                                          r"openblas or openblas64 or libopenblas\?"):
        requirements_from_external(external("dep:generic/openbals"), book)
    with pytest.raises(RecipeError,
                       match=r"DepURL dep:generic/libffi; known: cudart, gfortran, libopenblas, "
                             r"msvc-runtime"):
        requirements_from_external(external("dep:generic/libffi"), book)
    assert requirements_from_external(external("dep:generic/libffi", "dep:generic/openblas"), book,
                                      ignore_unknown=True) == [req("openblas")]


@pytest.mark.parametrize("data,message", [
    ({"external": ["dep:generic/openblas"]}, r"\[external\] must be a table"),
    (external(dependencies="dep:generic/openblas"), r"\[external\] dependencies: must be a list"),
    (external("generic/openblas"), r"host-requires\[0\]: 'generic/openblas' is not a DepURL"),
    (external("dep:generic/openblas; os_name = 'nt'"), r"host-requires\[0\]: invalid environment marker"),
    (external("dep:generic/openblas; os_name == 'nt'", "dep:generic/openblas"),
     r"host-requires\[1\]: openblas is listed again with another marker"),
])
def test_bad_external_tables(book: RecipeBook, data: dict[str, Any], message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        requirements_from_external(data, book)


def test_reconcile_names_every_disagreement() -> None:
    tool = [req("openblas>=0.3"), req("gfortran"), req("quadmath; os_name == 'posix'")]
    ext = [req("openblas>=0.3.1"), req("msvc-runtime"), req("quadmath")]
    with pytest.raises(RecipeError) as info:
        reconcile(tool, ext)
    assert str(info.value).splitlines() == [
        "pyproject.toml: [tool.dllreg] requires and [external] disagree; they must name the same "
        "libraries with the same versions:",
        "  gfortran: [tool.dllreg] requires lists gfortran, [external] does not",
        "  msvc-runtime: [external] requires msvc-runtime, [tool.dllreg] requires does not list it",
        "  openblas: [tool.dllreg] requires says 'openblas>=0.3', [external] says 'openblas>=0.3.1'",
        "  quadmath: [tool.dllreg] requires says 'quadmath; os_name == \"posix\"', [external] says "
        "'quadmath'",
    ]
    # specifier sets compare as sets, not as strings
    assert reconcile([req("openblas>=0.3,<1")], [req("openblas<1.0,>=0.3")]) == [req("openblas>=0.3,<1")]


def test_suggest(book: RecipeBook) -> None:
    assert book.suggest("openbals") == ["openblas", "openblas64", "libopenblas"]
    assert book.suggest("libgfortran") == ["gfortran"]  # through the DepURL's name
    assert book.suggest("dep:generic/quadmth@>=1") == ["quadmath"]
    assert book.suggest("zlib") == []
    with pytest.raises(RecipeError, match="no recipe for library 'OpenBlas6' in the registry; did you mean "
                                          "openblas64 or openblas"):
        book.require("OpenBlas6")


# --- platforms ------------------------------------------------------------------------------


def test_platform_family_and_pip_platforms() -> None:
    assert [platform_family(t) for t in ("manylinux_2_27_x86_64.manylinux_2_28_x86_64", "linux_aarch64",
                                         "musllinux_1_2_x86_64", "win_amd64", "win32",
                                         "macosx_11_0_arm64")] == ["linux", "linux", "linux", "windows",
                                                                   "windows", "macos"]
    with pytest.raises(RecipeError, match="'any': not a Linux, Windows or macOS"):
        platform_family("any")
    tags = compatible_platforms("manylinux_2_28_x86_64")
    assert tags[:2] == ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64"] and "manylinux_2_5_x86_64" in tags
    assert {"manylinux2014_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert compatible_platforms("musllinux_1_2_aarch64") == ["musllinux_1_2_aarch64", "musllinux_1_1_aarch64"]
    assert "macosx_11_0_arm64" in compatible_platforms("macosx_14_0_arm64")
    assert compatible_platforms("win_amd64") == ["win_amd64"]


# --- ABI checks on gcc-built libraries ------------------------------------------------------

BLAS_C = "void {p}dgemm_{s}(void){{}} void {p}cblas_dgemm{s}(void){{}} void {p}dgetrf_{s}(void){{}}\n"


def fake_blas(tmp_path: Path, soname: str, prefix: str, suffix: str) -> Path:
    d = tmp_path / f"{soname}-{prefix}-{suffix}"
    gcc_shared(d / "lib" / soname, BLAS_C.format(p=prefix, s=suffix), soname)
    return d


@needs_gcc
def test_check_abi_on_built_libraries(tmp_path: Path, book: RecipeBook) -> None:
    lp64, ilp64 = book.require("openblas"), book.require("openblas64")
    good = plan_library(read_source(fake_blas(tmp_path, "libscipy_openblas.so", "scipy_", "")),
                        "openblas", "1")
    check_abi(lp64, good)
    good64 = plan_library(read_source(fake_blas(tmp_path, "libscipy_openblas64_.so", "scipy_", "64_")),
                          "openblas64", "1")
    check_abi(ilp64, good64)
    unprefixed = plan_library(read_source(fake_blas(tmp_path, "libscipy_openblas.so", "", "")),
                              "openblas", "1")
    with pytest.raises(RecipeError) as info:
        check_abi(lp64, unprefixed)
    assert str(info.value) == (
        f"{lp64.path}: abi.symbols (symbol-prefix 'scipy_', symbol-suffix ''): libscipy_openblas.so does not "
        "export scipy_dgemm_, scipy_cblas_dgemm, scipy_dgetrf_ (it exports dgemm_, cblas_dgemm, dgetrf_): "
        "this is not the openblas library the recipe describes")
    renamed = plan_library(read_source(fake_blas(tmp_path, "libopenblas.so.0", "scipy_", "")),
                           "openblas", "1")
    with pytest.raises(RecipeError, match=r"openblas\.toml: abi\.linux\.runtime-names: the recipe expects "
                                          r"libscipy_openblas\.so, the source has libopenblas\.so\.0: "
                                          r"this is"):
        check_abi(lp64, renamed)
    with pytest.raises(RecipeError, match=r"msvc-runtime\.toml: abi\.linux: missing"):
        check_abi(book.require("msvc-runtime"), good)


@needs_gcc
def test_recipe_source_keeps_the_recipes_files(tmp_path: Path) -> None:
    lib = fake_blas(tmp_path, "libfoo.so.1", "foo_", "") / "lib" / "libfoo.so.1"
    wheel = tmp_path / "foo_bin-2.5.1-py3-none-manylinux_2_17_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("foo_bin/lib/libfoo.so.1", lib.read_bytes())
        zf.writestr("foo_bin/lib/libfoo_extra.so.1", lib.read_bytes())  # not the recipe's
        zf.writestr("foo_bin/include/foo.h", "void foo_dgemm_(void);\n")
        zf.writestr("foo_bin/__init__.py", "")
        zf.writestr("foo_bin-2.5.1.dist-info/licenses/LICENSE", "MIT\n")
        zf.writestr("foo_bin-2.5.1.dist-info/WHEEL", "Wheel-Version: 1.0\n")
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    text = GOOD.replace('"libfoo.so.1"]', '"libfoo.so.1"]\n[source.linux]\nrequirement = "foo-bin"\n'
                        'files = ["foo_bin/lib/libfoo.so.*", "foo_bin/include/*"]\nversion = "wheel:2"\n')
    (recipes / "foo.toml").write_text(text.replace('"foo_init"', '"dgemm_"').replace(
        "[abi]\n", '[abi]\nsymbol-prefix = "foo_"\n'))
    foo = load_recipes(recipes).require("foo")
    source, version = recipe_source(foo, wheel)
    assert version == "2.5"
    assert sorted(f.path for f in source.files) == [
        "foo_bin-2.5.1.dist-info/licenses/LICENSE", "foo_bin/include/foo.h", "foo_bin/lib/libfoo.so.1"]
    plan = plan_library(source, foo.name, version)
    check_abi(foo, plan)
    assert plan.manifest.platform == "manylinux_2_17_x86_64" and plan.manifest.headers == ("include/foo.h",)
    (recipes / "foo.toml").write_text(text.replace("foo_bin/include/*", "foo_bin/include/*.hpp"))
    with pytest.raises(RecipeError, match=r"foo\.toml: source\.linux\.files\[1\]: "
                                          r"'foo_bin/include/\*\.hpp' matches no file in "
                                          r"foo_bin-2\.5\.1-py3-none-manylinux_2_17_x86_64"):
        recipe_source(load_recipes(recipes).require("foo"), wheel)


# --- the real scipy-openblas wheels ---------------------------------------------------------

PINNED = "==0.3.34.481.3"


@pytest.fixture(scope="module")
def openblas32_wheel(book: RecipeBook) -> Path:
    """scipy-openblas32 for manylinux x86_64, fetched by fetch_source into .cache/downloads (pip
    finds it there after the first run)."""
    return fetch_source(book.require("openblas"), "manylinux_2_28_x86_64", DOWNLOADS, specifier=PINNED)


@pytest.mark.realwheels
def test_real_scipy_openblas32_matches_openblas_not_openblas64(openblas32_wheel: Path,
                                                               book: RecipeBook) -> None:
    assert openblas32_wheel.name == ("scipy_openblas32-0.3.34.481.3-py3-none-"
                                     "manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl")
    plan = plan_library(read_source(openblas32_wheel), "openblas", "0.3.34.481.3")
    check_abi(book.require("openblas"), plan)
    with pytest.raises(RecipeError) as info:
        check_abi(book.require("openblas64"), plan)
    text = str(info.value)
    assert text.startswith(f"{book.require('openblas64').path}: abi.linux.runtime-names: the recipe "
                           "expects libscipy_openblas64_.so, the source has libscipy_openblas.so; ")
    assert "abi.symbols (symbol-prefix 'scipy_', symbol-suffix '64_'): libscipy_openblas.so does not " \
           "export scipy_dgemm_64_, scipy_cblas_dgemm64_, scipy_dgetrf_64_ (it exports scipy_dgemm_, " \
           "scipy_cblas_dgemm, scipy_dgetrf_)" in text


@pytest.mark.realwheels
def test_package_lib_from_the_recipe_source(openblas32_wheel: Path, book: RecipeBook,
                                            tmp_path: Path) -> None:
    """What `package-lib openblas` without --from does: fetch, keep the recipe's files, plan,
    check the ABI, write."""
    recipe = book.require("openblas")
    source, version = recipe_source(recipe, openblas32_wheel)
    plan = plan_library(source, recipe.name, version)
    check_abi(recipe, plan)
    wheel = write_library_wheel(plan, tmp_path)
    assert wheel.name == ("dllreg_lib_openblas-0.3.34.481.3-py3-none-"
                          "manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        pc = zf.read("dllreg.libs/openblas/lib/pkgconfig/openblas.pc").decode()
    assert "dllreg.libs/openblas/lib/libscipy_openblas.so" in names
    assert "dllreg.libs/openblas/include/cblas.h" in names
    assert not any("OpenBLASConfig" in n or n.endswith("__init__.py") for n in names)  # not the recipe's
    assert "-DBLAS_SYMBOL_PREFIX=scipy_" in pc


@pytest.mark.realwheels
def test_fetch_source_downloads_with_pip(book: RecipeBook, tmp_path: Path) -> None:
    wheel = fetch_source(book.require("openblas"), "manylinux_2_28_x86_64", tmp_path / "dl",
                         specifier=PINNED)
    assert wheel.parent == tmp_path / "dl" and wheel.is_file()
    assert wheel.name.startswith("scipy_openblas32-0.3.34.481.3-py3-none-manylinux_")
    again = fetch_source(book.require("openblas"), "manylinux_2_28_x86_64", tmp_path / "dl",
                         specifier=PINNED)
    assert again == wheel  # pip: "File was already downloaded"
    with pytest.raises(RecipeError, match=r"openblas\.toml: source\.linux\.requirement: pip could not "
                                          r"download scipy-openblas32==0\.0\.0\.1 for manylinux_2_28_x86_64"):
        fetch_source(book.require("openblas"), "manylinux_2_28_x86_64", tmp_path / "dl",
                     specifier="==0.0.0.1")


@pytest.mark.realwheels
def test_package_lib_without_from_uses_the_recipe(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m dllreg package-lib openblas` fetches scipy-openblas32 with pip (pip's cache
    makes repeat runs offline-fast) and checks the result against the recipe's ABI."""
    import io

    from dllreg.cli.main import main

    buf = io.StringIO()
    assert main(["package-lib", "openblas", "--platform", "manylinux_2_28_x86_64", "-o",
                 str(tmp_path)], buf) == 0, capsys.readouterr().err
    (wheel,) = tmp_path.glob("dllreg_lib_openblas-*.whl")
    assert "manylinux" in wheel.name and "lib/libscipy_openblas.so" in buf.getvalue()
    assert main(["package-lib", "openbals", "-o", str(tmp_path)]) == 2
    assert "did you mean openblas or openblas64 or libopenblas?" in capsys.readouterr().err
    assert main(["package-lib", "gfortran", "-o", str(tmp_path)]) == 2
    assert "no PyPI source for gfortran" in capsys.readouterr().err
