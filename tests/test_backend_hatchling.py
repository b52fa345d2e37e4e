"""A pure-Python ctypes consumer built with hatchling through dllreg.build (no extension
module): the stub preloads the library and exposes its path, so the package never guesses
a file name."""

from __future__ import annotations

import textwrap
import zipfile
from pathlib import Path

import pytest

from test_e2e import built  # noqa: F401  (the module-scoped library/consumer wheels)

pytestmark = pytest.mark.e2e


def write_ctypes_consumer(root: Path) -> Path:
    proj = root / "qct"
    (proj / "qct").mkdir(parents=True)
    (proj / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = ["dllreg", "hatchling"]
        build-backend = "dllreg.build"
        [project]
        name = "qct"
        version = "0.1"
        [tool.dllreg]
        backend = "hatchling.build"
        requires = ["qsum>=3"]
        """))
    (proj / "qct" / "__init__.py").write_text(textwrap.dedent('''\
        """qsum through ctypes: the path comes from the dllreg stub."""
        from . import _dlls

        import ctypes

        _lib = ctypes.CDLL(_dlls.path("qsum"))
        _lib.qsum.restype = ctypes.c_long
        _lib.qsum.argtypes = [ctypes.c_long]
        qsum = _lib.qsum
        '''))
    return proj


def test_ctypes_consumer_with_hatchling(tmp_path: Path, built: Path, make_venv) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    venv = make_venv()
    out = tmp_path / "out"
    venv.pip("wheel", "--no-deps", "-w", str(out), str(write_ctypes_consumer(tmp_path)),
             env={"PIP_FIND_LINKS": f"{venv.house} {built}"})
    (wheel,) = out.glob("qct-0.1-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        init = zf.read("qct/__init__.py").decode()
        meta = zf.read("qct-0.1.dist-info/METADATA").decode()
    assert "qct/_dlls.py" in names and "Requires-Dist: dllreg-lib-qsum>=3" in meta
    # The source already imports the stub (it uses _dlls.path); dllreg does not add a second
    # import, and the docstring stays first.
    assert init.count("from . import _dlls") == 1 and init.startswith('"""qsum through ctypes')
    venv.pip("install", "--find-links", str(built), str(wheel))
    out_lines = venv.py("import qct; print(qct.qsum(100)); print(qct._dlls.path('qsum'))",
                        cwd=tmp_path).stdout.split()
    assert out_lines[0] == "5050"
    assert out_lines[1] == str(venv.site / "dllreg.libs" / "qsum" / "lib" / "libqsum.so.3")


def test_hatchling_build_hook_without_the_wrapper(tmp_path: Path, built: Path, make_venv  # type: ignore[no-untyped-def]  # noqa: F811
                                                 ) -> None:
    """Projects that keep hatchling as their backend use dllreg's hatch build hook (the
    public render_stub API); their __init__ imports the stub itself."""
    proj = tmp_path / "qhk"
    (proj / "src" / "qhk").mkdir(parents=True)
    (proj / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = ["hatchling", "dllreg"]
        build-backend = "hatchling.build"
        [project]
        name = "qhk"
        version = "0.1"
        [tool.hatch.build.hooks.dllreg]
        requires = ["qsum>=3"]
        packages = ["qhk"]
        """))
    init = proj / "src" / "qhk" / "__init__.py"
    init.write_text("import ctypes\n")
    venv = make_venv()
    env = {"PIP_FIND_LINKS": f"{venv.house} {built}"}
    r = venv.pip("wheel", "--no-deps", "-w", str(tmp_path / "out"), str(proj), check=False, env=env)
    assert r.returncode != 0 and "make 'from . import _dlls" in r.stdout + r.stderr
    init.write_text('"""Hook."""\nfrom . import _dlls\n\nimport ctypes\n\n'
                    'qsum = ctypes.CDLL(_dlls.path("qsum")).qsum\n')
    venv.pip("wheel", "--no-deps", "-w", str(tmp_path / "out"), str(proj), env=env)
    (wheel,) = (tmp_path / "out").glob("qhk-0.1-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = zf.read("qhk-0.1.dist-info/METADATA").decode()
    assert "qhk/_dlls.py" in names and "qhk-0.1.dist-info/extra_metadata/dllreg.json" in names
    assert "Requires-Dist: dllreg-lib-qsum>=3" in meta
    venv.pip("install", "--find-links", str(built), str(wheel), "dllreg")
    assert venv.py("import qhk; print(qhk.qsum(10))", cwd=tmp_path).stdout.strip() == "55"
    assert "qhk (qsum>=3)" in venv.dllreg("list").stdout
