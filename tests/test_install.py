"""``python -m dllreg install``: the pure decisions, then pip download -> devendor -> pip install into
fresh venvs from a local find-links directory (offline), and the real numpy (realwheels)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import CACHE, Venv, run
from dllreg.convert.install import (
    InstallError,
    Target,
    check_requirements,
    constraints,
    is_platform_wheel,
    isolated_env,
    pip_prefix,
)
from dllreg.wheelfile import WheelWriter
from test_devendor import PY, library_wheel, needs_gcc, platform_tag, recipes, vendored_wheel

__all__ = ["recipes"]  # the fixture, shared with test_devendor

MAPS = """
import json
maps = {l.split()[-1] for l in open('/proc/self/maps') if '/' in l.split()[-1]}
print(json.dumps(sorted(p for p in maps if any(k in p for k in KEYS))))
"""


# --- the pure parts ---------------------------------------------------------------------------


@pytest.mark.parametrize("req", ["./pkg-1.0-py3-none-any.whl", "pkg @ https://example.invalid/p.whl",
                                 "/tmp/pkg", "not a requirement!"])
def test_files_urls_and_junk_are_refused(req: str) -> None:
    with pytest.raises(InstallError, match="not files or URLs"):
        check_requirements(["numpy", req])


def test_requirements_pass_through() -> None:
    reqs = ["numpy>=2", "pkg[extra]==1.0", 'foo; python_version >= "3"']
    assert check_requirements(reqs) == tuple(reqs)


def test_constraints_pin_each_wheel() -> None:
    text = constraints(["numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl",
                        "dllreg_lib_foo-1+s12ab34cd-py3-none-linux_x86_64.whl",
                        "six-1.17.0-py2.py3-none-any.whl"])
    assert text == "dllreg-lib-foo==1+s12ab34cd\nnumpy==2.4.6\nsix==1.17.0\n"


def test_pip_is_the_running_one_pointed_at_the_target() -> None:
    assert pip_prefix(None, "/a/bin/python") == ("/a/bin/python", "-m", "pip")
    assert pip_prefix("/a/bin/python", "/a/bin/python") == ("/a/bin/python", "-m", "pip")
    assert pip_prefix("/v/bin/python", "/a/bin/python") == ("/a/bin/python", "-m", "pip", "--python",
                                                            "/v/bin/python")
    t = Target(("py", "-m", "pip"), ("--no-index", "--find-links", "L"))
    assert t.download(Path("d"), ["x"], deps=False) == [
        "py", "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:", "--no-deps",
        "--no-index", "--find-links", "L", "-d", "d", "x"]
    # the install never sees the user's index: the wheelhouse only, pinned
    argv = t.install(Path("h"), Path("c.txt"), ["x>=1"])
    assert "--no-index" in argv and "L" not in argv and argv[-1] == "x>=1" and "c.txt" in argv


def test_the_install_step_sees_no_pip_configuration() -> None:
    env = isolated_env({"PATH": "/bin", "PIP_FIND_LINKS": "/orig", "pip_index_url": "x", "PIPX": "1"})
    assert env == {"PATH": "/bin", "PIPX": "1", "PIP_CONFIG_FILE": os.devnull}


def test_platform_wheels() -> None:
    assert is_platform_wheel("numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl")
    assert not is_platform_wheel("six-1.17.0-py2.py3-none-any.whl")


# --- end to end, offline -------------------------------------------------------------------------


def _wheel(path: Path, members: dict[str, bytes], requires: tuple[str, ...] = ()) -> Path:
    name, version, tag = path.name.split("-")[0], path.name.split("-")[1], "-".join(path.stem.split("-")[2:])
    dist_info = f"{name}-{version}.dist-info"
    meta = (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            + "".join(f"Requires-Dist: {r}\n" for r in requires))
    purelib = "true" if tag.endswith("none-any") else "false"
    with WheelWriter(path, dist_info) as w:
        for n, data in members.items():
            w.add(n, data)
        w.add(f"{dist_info}/METADATA", meta.encode())
        w.add(f"{dist_info}/WHEEL", f"Wheel-Version: 1.0\nRoot-Is-Purelib: {purelib}\nTag: {tag}\n".encode())
    return path


def _links(tmp: Path, hostile_dep: bool = False) -> Path:
    """A find-links directory: pkga (auditwheel-style, libfoo vendored) requiring pkgdep."""
    links = tmp / "links"
    src = vendored_wheel(tmp)
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist() if ".dist-info/" not in n}
    _wheel(links / src.name, members, requires=("pkgdep>=2",))
    if not hostile_dep:
        _wheel(links / "pkgdep-2.0-py3-none-any.whl", {"pkgdep/__init__.py": b"VALUE = 7\n"})
        return links
    # a platform wheel whose RECORD no longer matches a member: devendor refuses it
    good = _wheel(tmp / f"pkgdep-2.0-{PY}-{PY}-{platform_tag()}.whl", {"pkgdep/__init__.py": b"VALUE = 7\n"})
    with zipfile.ZipFile(good) as z, zipfile.ZipFile(links / good.name, "w") as bad:
        for n in z.namelist():
            bad.writestr(n, b"VALUE = 666\n" if n == "pkgdep/__init__.py" else z.read(n))
    return links


def _dllreg_install(venv: Venv, *args: str, env: dict[str, str] | None = None
                    ) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "dllreg", "install", "--python", venv.python, *args]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PIP_")}, **(env or {})}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def _files_of(site: Path, dist: str) -> set[str]:
    return {p.relative_to(site).as_posix() for p in site.rglob("*")
            if p.relative_to(site).parts[0].split(".")[0].split("-")[0] == dist}


@pytest.fixture
def venv(make_venv: Callable[[str], Venv]) -> Venv:
    env = make_venv("venv")
    env.pip("install", "-q", "--no-index", "dllreg")  # for `python -m dllreg check` inside it
    return env


@pytest.mark.e2e
@needs_gcc
def test_install_devendors_and_pip_owns_every_file(tmp_path: Path, venv: Venv) -> None:
    links = _links(tmp_path)
    dry = _dllreg_install(venv, "--no-index", "--find-links", str(links), "--dry-run", "pkga")
    assert dry.returncode == 0, dry.stderr
    assert "would install" in dry.stdout and "Would install" in dry.stderr
    assert not _files_of(venv.site, "pkga")

    # pip's own find-links (PIP_FIND_LINKS) hold the original wheel under the same file name; the
    # install step runs without them (isolated_env), and the thin wheel is what lands
    house = tmp_path / "house"
    proc = _dllreg_install(venv, "--no-index", "--find-links", str(links), "--wheelhouse", str(house), "pkga",
                           env={"PIP_FIND_LINKS": str(links)})
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert "dllreg: downloading pkga" in err and "dllreg: devendoring 1 platform wheel(s) of 2" in err
    assert f"pkga-1.0-{PY}-{PY}-{platform_tag()}.whl: 0 substituted, 1 packaged, 0 dropped, 0 kept" in err
    assert "dllreg: installing pkga with pip from" in err
    summary = "installed with pip from a wheelhouse of 3 wheel(s): 1 devendored, 1 library wheel(s) packaged"
    assert summary in proc.stdout
    assert "native libraries:" in proc.stdout and f"wheelhouse: {house}" in proc.stdout
    dists = {p.name.split("-")[0] for p in house.glob("*.whl")}
    (lib,) = dists - {"pkga", "pkgdep"}
    # no recipe: the naming rule's name, stem + ABI major + build tag, never a plain libfoo.so.1
    assert lib.startswith("dllreg_lib_foo_1_") and len(dists) == 3
    tag = lib.rsplit("_", 1)[1]

    code = "import pkga, pkgdep; print(pkga.call() + pkgdep.VALUE)\nKEYS = ('libfoo',)\n" + MAPS
    out = venv.py(code).stdout.split()
    assert out[0] == "21"
    lib_dir = venv.site / "dllreg.libs" / f"foo-1-{tag}"
    assert json.loads(out[1]) == [str(lib_dir / "lib" / f"libfoo-{tag}.so.1")]
    assert not (venv.site / "pkga.libs").exists()

    listed = {d["name"].lower(): d["version"] for d in json.loads(venv.pip("list", "--format=json").stdout)}
    assert listed["pkga"] == "1.0" and listed["pkgdep"] == "2.0"
    assert listed[f"dllreg-lib-foo-1-{tag}"] == "1"  # the file's version numbers (libfoo.so.1)
    venv.dllreg("check")
    assert f"foo-1-{tag}" in venv.dllreg("list").stdout

    # pip installed with --no-compile; dllreg compiled every installed .py (the stub too) with
    # the venv's interpreter, and pip uninstall takes the bytecode with its source
    sources = [p for p in venv.site.rglob("*.py") if p.relative_to(venv.site).parts[0] in ("pkga", "pkgdep")]
    assert {p.name for p in sources} == {"__init__.py", "_dlls.py"}
    assert all(p.with_name("__pycache__").is_dir() for p in sources)
    pycs = {q.name.split(".")[0] for p in sources for q in (p.parent / "__pycache__").glob("*.pyc")}
    assert pycs == {"__init__", "_dlls"} and "dllreg: compiled the bytecode of" in err
    venv.pip("uninstall", "-y", "pkga")
    assert _files_of(venv.site, "pkga") == set()
    assert "pkga" not in {d["name"].lower() for d in json.loads(venv.pip("list", "--format=json").stdout)}


@pytest.mark.e2e
@needs_gcc
def test_a_library_wheel_in_find_links_substitutes(tmp_path: Path, venv: Venv, recipes: Path) -> None:
    """With a recipe for foo, the dllreg-lib-foo wheel next to the packages stands in for the copy."""
    links = _links(tmp_path)
    shutil.copy(library_wheel(tmp_path), links)
    proc = _dllreg_install(venv, "--no-index", "--find-links", str(links), "--recipes", str(recipes),
                           "--no-compile", "pkga")
    assert proc.returncode == 0, proc.stderr
    assert "1 substituted, 0 packaged, 0 dropped, 0 kept" in proc.stderr
    assert not list((venv.site / "pkga").rglob("*.pyc")) and "compiled the bytecode" not in proc.stderr
    assert "1 registry library wheel(s) used" in proc.stdout
    code = "import pkga; print(pkga.call())\nKEYS = ('libfoo',)\n" + MAPS
    out = venv.py(code).stdout.split()
    assert out[0] == "14"
    assert json.loads(out[1]) == [str(venv.site / "dllreg.libs" / "foo" / "lib" / "libfoo.so.1")]
    listed = {d["name"].lower(): d["version"] for d in json.loads(venv.pip("list", "--format=json").stdout)}
    assert listed["dllreg-lib-foo"] == "1.2"
    venv.dllreg("check")


@pytest.mark.e2e
@needs_gcc
def test_a_refused_wheel_installs_nothing(tmp_path: Path, venv: Venv) -> None:
    links = _links(tmp_path, hostile_dep=True)
    before = sorted(p.name for p in venv.site.iterdir())
    proc = _dllreg_install(venv, "--no-index", "--find-links", str(links), "pkga")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "pkgdep-2.0" in errors[0] and "refused" in errors[0], proc.stderr
    assert "pkgdep/__init__.py" in proc.stderr
    assert "installing" not in proc.stderr
    assert sorted(p.name for p in venv.site.iterdir()) == before


@pytest.mark.e2e
def test_a_file_requirement_is_refused_before_pip_runs(tmp_path: Path, venv: Venv) -> None:
    proc = _dllreg_install(venv, str(tmp_path / "pkga-1.0-py3-none-any.whl"))
    assert proc.returncode == 2 and proc.stderr.startswith("error: install takes requirements")
    assert "downloading" not in proc.stderr


# --- the real numpy --------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.realwheels
@pytest.mark.skipif(sys.version_info[:2] != (3, 11) or sys.platform != "linux", reason="cp311 Linux wheel")
def test_real_numpy(tmp_path: Path, venv: Venv) -> None:
    """numpy 2.4.6 with its openblas64 source, from the downloads cache when they are there."""
    downloads = CACHE / "downloads"
    cached = sorted(downloads.glob("numpy-2.4.6-cp311-cp311-manylinux*x86_64.whl"))
    source = sorted(downloads.glob("scipy_openblas64-*manylinux*x86_64.whl"))
    links = ["--no-index", "--find-links", str(downloads)] if cached and source else []
    proc = _dllreg_install(venv, *links, "numpy==2.4.6")
    if proc.returncode != 0 and not links:
        pytest.skip(f"numpy not downloadable here: {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stderr
    assert "1 substituted, 0 packaged, 2 dropped, 0 kept; 28.5 MB vendored -> 0 B" in proc.stderr
    code = """
        import numpy as np
        a = np.random.default_rng(0).random((100, 100)) + 100 * np.eye(100)
        print(np.allclose(a @ np.linalg.inv(a), np.eye(100)))
        KEYS = ('openblas', 'gfortran', 'quadmath')
        """
    out = run([venv.python, "-c", textwrap.dedent(code) + MAPS],
              env={**os.environ, "OPENBLAS_NUM_THREADS": "1"}).stdout.split("\n")
    assert out[0] == "True"
    registry = venv.site / "dllreg.libs" / "openblas64" / "lib" / "libscipy_openblas64_.so"
    assert json.loads(out[1]) == [str(registry)]
    venv.dllreg("check")
    print(proc.stdout, file=sys.stderr)


@pytest.mark.e2e
@needs_gcc
def test_a_library_wheel_from_an_index_is_refused(tmp_path: Path, venv: Venv) -> None:
    """Dependency confusion: a consumer requires dllreg-lib-foo and an index (here a real
    file:// simple index that pip reads) has one; install refuses it unless the same wheel
    is in a local --find-links directory."""
    lib = library_wheel(tmp_path)  # dllreg-lib-foo 1.2, gcc-built
    index = tmp_path / "simple" / "dllreg-lib-foo"
    index.mkdir(parents=True)
    shutil.copy(lib, index)  # a static PEP 503 page: what pip reads from a file:// index
    (index / "index.html").write_text(f'<html><body><a href="{lib.name}">{lib.name}</a></body></html>\n')
    links = tmp_path / "links"
    _wheel(links / "pkgx-1.0-py3-none-any.whl", {"pkgx/__init__.py": b""}, requires=("dllreg-lib-foo>=1",))
    before = sorted(p.name for p in venv.site.iterdir())
    args = ("--index-url", (tmp_path / "simple").as_uri(), "--find-links", str(links), "pkgx")
    proc = _dllreg_install(venv, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: pip took {lib.name} from an index, not from a local --find-links")
    assert line.endswith("nothing was installed")
    assert sorted(p.name for p in venv.site.iterdir()) == before

    shutil.copy(lib, links)  # the wheel meant is local: pip may take either copy, both are it
    proc = _dllreg_install(venv, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (venv.site / "dllreg.libs" / "foo" / "MANIFEST").is_file()
