"""The consumer-wheel decisions: where stubs go, how __init__ and METADATA change."""

from __future__ import annotations

import ast

import pytest

from dllreg.build.consumer import insert_stub_import, patch_metadata, stub_packages
from dllreg.errors import BuildError
from dllreg.names import NativeRequirement
from dllreg.stub import IMPORT_LINE

EXT = "_ext.cpython-311-x86_64-linux-gnu.so"


@pytest.mark.parametrize("members,expected", [
    (["a/__init__.py", f"a/{EXT}"], ["a"]),
    (["a/__init__.py", "a/b/__init__.py", f"a/b/{EXT}"], ["a"]),
    (["ns/b/__init__.py", f"ns/b/{EXT}", "ns/c/__init__.py"], ["ns.b"]),
    (["a/__init__.py", "a/b/__init__.py", f"a/b/ns/{EXT}", f"a/b/ns/deeper/{EXT}"], ["a"]),
    (["a/__init__.py", "a/x.abi3.so", "z/__init__.py", "z/y.pyd"], ["a", "z"]),
    (["p-1.data/platlib/a/__init__.py", f"p-1.data/platlib/a/{EXT}"], ["a"]),
    (["a/__init__.py", "a/util.py", "b/__init__.py", "p-1.dist-info/METADATA"], ["a", "b"]),
], ids=["flat", "nested", "namespace-parent", "namespace-inside-regular", "abi3-and-pyd", "data-platlib",
        "ctypes-only"])
def test_stub_packages(members: list[str], expected: list[str]) -> None:
    assert stub_packages(members) == expected


@pytest.mark.parametrize("members,match", [
    ([EXT], "top level of the wheel, outside any package"),
    (["ns/" + EXT], "no __init__.py"),
    (["ns/deeper/" + EXT], "no __init__.py"),
    (["p-1.dist-info/METADATA", "mod.py"], "neither extension modules nor a top-level package"),
])
def test_stub_packages_refuses_layouts_it_cannot_serve(members: list[str], match: str) -> None:
    with pytest.raises(BuildError, match=match):
        stub_packages(members)


def first_statement_is_stub(source: str) -> tuple[str | None, str]:
    tree = ast.parse(source)
    body = tree.body
    doc = ast.get_docstring(tree)
    rest = [n for n in body if not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
    if doc is not None:
        rest = rest[1:]
    first = rest[0]
    assert isinstance(first, ast.ImportFrom) and first.names[0].name == "_dlls", source
    return doc, source


@pytest.mark.parametrize("source", [
    "",
    "import os\n",
    '"""Doc."""\nimport os\n',
    '"""Multi\nline\ndoc."""\n\nfrom __future__ import annotations\nfrom __future__ import (\n'
    '    division,\n)\nimport os\n',
    "# comment only\n",
    '"""Doc without newline at end."""',
    "from __future__ import annotations",
], ids=["empty", "plain", "doc", "doc-future", "comment", "doc-no-newline", "future-only"])
def test_insert_stub_import_position(source: str) -> None:
    out = insert_stub_import(source, "x/__init__.py")
    doc, _ = first_statement_is_stub(out)
    assert doc == ast.get_docstring(ast.parse(source))
    assert insert_stub_import(out, "x") == out  # idempotent


def test_an_own_first_import_of_the_stub_is_kept() -> None:
    source = '"""Doc."""\nfrom . import _dlls\nimport ctypes\n'
    assert insert_stub_import(source, "x") == source
    late = '"""Doc."""\nimport ctypes\nfrom . import _dlls\n'  # not first: dllreg's goes first
    assert insert_stub_import(late, "x").splitlines()[1] == IMPORT_LINE.strip()


def test_insert_refuses_statement_sharing_the_docstring_line() -> None:
    with pytest.raises(BuildError, match="separate lines"):
        insert_stub_import('"""d"""; import os\n', "x/__init__.py")


def test_insert_reports_syntax_errors() -> None:
    with pytest.raises(BuildError, match=r"x/__init__\.py: cannot parse"):
        insert_stub_import("def (:\n", "x/__init__.py")


def test_patch_metadata_adds_requirements_in_headers() -> None:
    text = "Metadata-Version: 2.1\nName: a\nVersion: 1\nRequires-Dist: numpy\n\nBody text.\n"
    reqs = [NativeRequirement.parse("openblas>=0.3; sys_platform == 'linux'")]
    out = patch_metadata(text, reqs)
    head, _, body = out.partition("\n\n")
    assert head.splitlines()[-1] == ('Requires-Dist: dllreg-lib-openblas>=0.3; '
                                     'sys_platform == "linux"')
    assert body == "Body text.\n"
    assert patch_metadata(out, reqs) == out
    assert "Requires-Dist: dllreg-lib-openblas" in patch_metadata("Name: a\nVersion: 1\n", reqs)


def test_import_line_is_a_relative_import_of_the_stub() -> None:
    assert IMPORT_LINE.startswith("from . import _dlls")


def test_unused_requirements() -> None:
    from dllreg.build.consumer import unused_requirements

    reqs = [NativeRequirement.parse(r) for r in ("openblas>=0.3", "gfortran", "qsum", "foo")]
    libs = {"openblas": (("libscipy_openblas.so",), ("gfortran",)), "gfortran": (("libgfortran.so.5",), ()),
            "qsum": (("@rpath/libqsum.3.dylib",), ()), "foo": (("FOO.dll",), ())}
    needed = ["libscipy_openblas.so", "@rpath/libqsum.3.dylib", "libc.so.6"]
    # gfortran is used through openblas; foo by nothing, unless the package opens it itself
    assert [r.name for r in unused_requirements(needed, libs, reqs)] == ["foo"]
    assert unused_requirements([*needed, "foo.DLL"], libs, reqs) == []
    assert unused_requirements(needed, libs, reqs, dlopen=["foo"]) == []
