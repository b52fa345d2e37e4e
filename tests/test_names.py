from __future__ import annotations

import pytest

from dllreg.errors import RequirementError
from dllreg.names import NativeRequirement, dist_name, library_name, library_of_dist, parse_version


@pytest.mark.parametrize("raw,norm", [("openblas", "openblas"), ("OpenBLAS", "openblas"),
                                      ("lib_foo.bar", "lib-foo-bar"), ("a", "a")])
def test_library_name_normalizes(raw: str, norm: str) -> None:
    assert library_name(raw) == norm


@pytest.mark.parametrize("raw", ["", "-x", "x-", "a b", "a/b", "ü", "x;y"])
def test_library_name_rejects(raw: str) -> None:
    with pytest.raises(RequirementError, match="invalid library name"):
        library_name(raw)


def test_dist_names_round_trip() -> None:
    assert dist_name("OpenBLAS") == "dllreg-lib-openblas"
    assert library_of_dist("dllreg_lib_OpenBLAS") == "openblas"
    assert library_of_dist("numpy") is None


def test_requirement_parse_and_render() -> None:
    req = NativeRequirement.parse("OpenBLAS >=0.3, <0.4 ; sys_platform == 'linux'")
    assert req.name == "openblas"
    assert req.dist_requirement == 'dllreg-lib-openblas<0.4,>=0.3; sys_platform == "linux"'
    assert req.accepts("0.3.34.481.3") and not req.accepts("0.4")
    assert req.accepts("0.3.35rc1")  # installed pre-releases count, as in pip check


@pytest.mark.parametrize("raw,match", [
    ("openblas>>0.3", "invalid requirement"),
    ("openblas[x]>=1", "no extras"),
    ("openblas @ https://example.invalid/x.whl", "URLs are not allowed"),
])
def test_requirement_rejects(raw: str, match: str) -> None:
    with pytest.raises(RequirementError, match=match):
        NativeRequirement.parse(raw)


def test_parse_version_error_names_value() -> None:
    with pytest.raises(RequirementError, match=r"'1\.x'"):
        parse_version("1.x")
