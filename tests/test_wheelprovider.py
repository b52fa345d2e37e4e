"""PyPI wheel providers (recipes' [pypi.FAMILY]): the schema, the requirement a consumer gets,
and the real stub finding a library in a pip-shaped wheel layout (gcc-built library, real
dlopen, the fast path and the cold path)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import QSUM_C, gcc_shared, has_gcc
from dllreg.errors import RequirementError
from dllreg.names import NativeRequirement
from dllreg.recipes.schema import RecipeError, load_recipes, parse_recipe
from dllreg.recipes.wheelprovider import (
    library_version,
    requirement_for,
    resolve_choices,
    wheel_manifest,
    wheel_specifier,
)
from dllreg.stub import render_stub

REG = load_recipes()
LP64 = REG.require("openblas").pypi_for("linux")
assert LP64 is not None


@pytest.mark.parametrize(("library", "wheel"), [
    (">=0.3", ">=0.3"), (">=0.3.34,<0.4", "<0.4,>=0.3.34"), ("==0.3.34", "==0.3.34.*"),
    ("!=0.3.30", "!=0.3.30.*"), ("<=0.3.34", "<0.3.35"), (">0.3.34", ">=0.3.35"),
    (">0.3", ">=0.3.1"), ("<=0.3", "<0.3.1"),
    ("~=0.3.30", "~=0.3.30"), ("==0.3.*", "==0.3.*"), ("", ""),
])
def test_library_specifier_said_of_the_wheel_version(library: str, wheel: str) -> None:
    assert wheel_specifier(LP64, library) == wheel


@pytest.mark.parametrize("bad", [">=0.3.34.481", "==0.3.34rc1", "==0.3.34+local", "===0.3.34"])
def test_specifiers_the_wheel_version_cannot_express_are_refused(bad: str) -> None:
    with pytest.raises(RequirementError, match="scipy-openblas32's version"):
        wheel_specifier(LP64, bad)


def test_library_version_from_the_wheel_version() -> None:
    assert library_version(LP64, "0.3.34.481.3") == "0.3.34"
    with pytest.raises(RequirementError, match="wheel:3 needs 3 numeric release parts"):
        library_version(LP64, "0.3rc1")


def test_consumers_require_the_pypi_wheel_by_default() -> None:
    reqs = [NativeRequirement.parse("openblas>=0.3; sys_platform == 'linux'"),
            NativeRequirement.parse("gfortran>=12")]
    chosen = resolve_choices(reqs, {}, REG, "linux")
    assert chosen == {"openblas": "scipy-openblas32", "gfortran": "dllreg-lib-gfortran"}
    assert requirement_for(reqs[0], chosen["openblas"], REG, "linux") == \
        'scipy-openblas32>=0.3; sys_platform == "linux"'
    local = resolve_choices(reqs[:1], {"openblas": "dllreg-lib-openblas"}, REG, "linux")
    assert requirement_for(reqs[0], local["openblas"], REG, "linux") == \
        'dllreg-lib-openblas>=0.3; sys_platform == "linux"'
    with pytest.raises(RequirementError, match="'scipy-openblas64' is neither 'dllreg-lib-openblas' "
                                               "nor a PyPI wheel its recipe names"):
        resolve_choices(reqs, {"openblas": "scipy-openblas64"}, REG)
    with pytest.raises(RequirementError, match="zlib is not in requires"):
        resolve_choices(reqs, {"zlib": "dllreg-lib-zlib"}, REG)


def _openblas_data() -> dict[str, Any]:
    import tomllib

    return tomllib.loads((Path(__file__).parent.parent / "recipes" / "openblas.toml").read_text())


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["pypi"]["linux"].update(libraries=["a.so", "b.so"]),
     r"pypi\.linux\.libraries: lists 2 files, but \[abi\.linux\] runtime-names has 1"),
    (lambda d: d["pypi"]["linux"].update(dist="dllreg-lib-openblas"),
     r"pypi\.linux\.dist: .*not a PyPI provider"),
    (lambda d: d["pypi"]["linux"].update(libraries=["../x.so"]), r"pypi\.linux\.libraries\[0\]: .*relative"),
    (lambda d: d["pypi"]["linux"].update(version="first3"), r"pypi\.linux\.version: 'first3'"),
    (lambda d: d["pypi"]["linux"].update(extra=1), r"pypi\.linux\.extra: unknown key"),
    (lambda d: d["abi"].pop("macos"), r"pypi\.macos: has no matching \[abi\.macos\]"),
])
def test_bad_pypi_tables_name_file_and_key(edit: Any, message: str) -> None:
    data = copy.deepcopy(_openblas_data())
    edit(data)
    data.pop("source")
    with pytest.raises(RecipeError, match=r"openblas\.toml: " + message):
        parse_recipe(data, "recipes/openblas.toml")


# --- the real stub on a pip-shaped layout ---------------------------------------------------


def _site(tmp_path: Path, *dist_infos: str) -> Path:
    site = tmp_path / "site"
    gcc_shared(site / "fakeblas" / "lib" / "libqsum.so.3", QSUM_C, "libqsum.so.3")
    for d in dist_infos:
        (site / d).mkdir(parents=True)
        (site / d / "RECORD").write_text("")
    pkg = site / "cpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from . import _dlls\n")
    stub = render_stub("cpkg", [NativeRequirement.parse("qsum>=1.2")])
    layout = ("_PYPI = {'qsum': ('fakeblas', 2, ('fakeblas/lib/libqsum.so.3',), ('libqsum.so.3',), (), "
              "'fakeblas>=1.2'),}\n")
    (pkg / "_dlls.py").write_text(stub.replace("_load_all('cpkg'", layout + "_load_all('cpkg'"))
    return site


def _import(site: Path, **env: str) -> subprocess.CompletedProcess[str]:
    code = ("import cpkg, sys; st = sys.modules['_dllreg_state']; r = st.loaded['qsum']; "
            "print(r['version'], r['paths'], r['dir'], '_require' in vars(cpkg._dlls))")
    return subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                          cwd=site.parent, env={**os.environ, "PYTHONPATH": str(site), **env})


needs_gcc = pytest.mark.skipif(not has_gcc() or sys.platform != "linux", reason="needs gcc on Linux")


@needs_gcc
@pytest.mark.parametrize("cold", [False, True])
def test_stub_loads_the_wheel_own_file_with_the_dist_info_version(tmp_path: Path, cold: bool) -> None:
    site = _site(tmp_path, "fakeblas-1.3.7.2.dist-info", "fakeblas_extra-2.0.dist-info")
    r = _import(site, **({"DLLREG_DEBUG": "1"} if cold else {}))
    lib = site / "fakeblas" / "lib" / "libqsum.so.3"
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1.3", f"['{lib}']", str(lib.parent), str(cold)]
    if cold:
        assert f"dllreg: cpkg: loaded qsum by absolute path {lib} (extension loader)" in r.stderr


@needs_gcc
def test_stub_refuses_a_version_the_requirement_excludes(tmp_path: Path) -> None:
    site = _site(tmp_path, "fakeblas-1.1.9.dist-info")
    r = _import(site)
    assert r.returncode == 1
    assert (f"cpkg requires native library qsum>=1.2, but found only qsum 1.1 at "
            f"{site / 'fakeblas' / 'lib'}, which does not satisfy >=1.2") in r.stderr
    assert 'Fix: pip install "fakeblas>=1.2"' in r.stderr


@needs_gcc
def test_two_dist_infos_are_unreadable_not_a_guess(tmp_path: Path) -> None:
    site = _site(tmp_path, "fakeblas-1.3.dist-info", "fakeblas-1.4.dist-info")
    r = _import(site)
    assert r.returncode == 1 and "two dist-info directories for fakeblas" in r.stderr


@needs_gcc
@pytest.mark.parametrize("dist_infos", [(), ("FakeBlas-1.3.dist-info",), ("fakeblas-1.3.egg-info",)])
def test_files_without_their_dist_info_are_not_a_copy(tmp_path: Path, dist_infos: tuple[str, ...]) -> None:
    # the stem as the wheel spells it (the normalized name): what pip writes for these wheels
    site = _site(tmp_path, *dist_infos)
    r = _import(site)
    assert r.returncode == 1 and "it is not installed" in r.stderr
    assert "or the files of fakeblas>=1.2" in r.stderr


@needs_gcc
def test_wheel_manifest_reads_version_and_record(tmp_path: Path) -> None:
    site = tmp_path / "site"
    lib = gcc_shared(site / "scipy_openblas32" / "lib" / "libscipy_openblas.so", QSUM_C,
                     "libscipy_openblas.so")
    di = site / "scipy_openblas32-0.3.34.481.3.dist-info"
    di.mkdir()
    import base64
    import hashlib

    digest = hashlib.sha256(lib.read_bytes()).digest()
    (di / "RECORD").write_text("scipy_openblas32/lib/libscipy_openblas.so,sha256="
                               + base64.urlsafe_b64encode(digest).rstrip(b"=").decode() + ",1\n")
    (di / "WHEEL").write_text("Tag: py3-none-manylinux_2_28_x86_64\n")
    m = wheel_manifest(REG.require("openblas"), LP64, site)
    assert m is not None
    assert (m.version, m.provider, m.platform, m.source) == (
        "0.3.34", "pypi:scipy-openblas32", "manylinux_2_28_x86_64", "scipy-openblas32 0.3.34.481.3")
    assert [(f.path, f.soname, f.sha256) for f in m.libraries] == [
        (lib.as_posix(), "libscipy_openblas.so", digest.hex())]
    lib.unlink()
    assert wheel_manifest(REG.require("openblas"), LP64, site) is None


@needs_gcc
def test_verify_compares_the_wheel_files_with_its_record(tmp_path: Path) -> None:
    import base64
    import hashlib

    site = _site(tmp_path, "fakeblas-1.3.dist-info")
    lib = site / "fakeblas" / "lib" / "libqsum.so.3"
    record = site / "fakeblas-1.3.dist-info" / "RECORD"
    digest = base64.urlsafe_b64encode(hashlib.sha256(lib.read_bytes()).digest()).rstrip(b"=").decode()
    record.write_text(f"fakeblas/__init__.py,,\nfakeblas/lib/libqsum.so.3,sha256={digest},1\n")
    r = _import(site, DLLREG_VERIFY="1")
    assert r.returncode == 0 and r.stdout.split()[0] == "1.3", r.stderr
    record.write_text(f"fakeblas/lib/libqsum.so.3,sha256={digest[::-1]},1\n")
    r = _import(site, DLLREG_VERIFY="1")
    assert r.returncode == 1 and f"but {lib} does not match the sha256" in r.stderr
    assert 'pip install "fakeblas>=1.2" --force-reinstall' in r.stderr


def test_check_suggests_the_pypi_wheel_for_a_missing_library(tmp_path: Path) -> None:
    from dllreg.env.check import find_problems
    from dllreg.env.registry import Consumer

    reqs = (NativeRequirement.parse("openblas>=0.3.30"), NativeRequirement.parse("openblas64>=0.3.34.481.3"))
    (a, b) = find_problems([], [Consumer("pkg", "1.0", reqs, tmp_path)], [])
    assert a.fix == 'pip install "scipy-openblas32>=0.3.30"'
    assert b.fix == 'pip install "dllreg-lib-openblas64>=0.3.34.481.3"'  # not said of the wheel's version
