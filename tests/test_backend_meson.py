"""meson-python consumers through dllreg.build, end to end: tests/packages/meson_consumer says
``dependency('qsum')`` and is built by real isolated pip builds on a PATH without any
pkg-config program (the PyPI ``pkgconf`` build requirement brings one), links the registry
library through its .pc file, loses meson's build-time RUNPATH, and imports through the stub.
Slow: marked e2e."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from installer.sources import WheelFile

from conftest import QSUM_C, ROOT, Venv, gcc_shared, run
from dllreg.binary.elf import read_elf

pytestmark = pytest.mark.e2e

PROJECT = Path(__file__).resolve().parent / "packages" / "meson_consumer"
NO_PKG_CONFIG = "Pkg-config for machine host machine not found"
HIDDEN = ("pkg-config", "pkgconf", "cmake")


def copy_project(dest: Path, *, wrapper: bool = True, pkgconf: bool = True) -> Path:
    """The fixture project; ``wrapper=False`` is the same project on plain mesonpy."""
    shutil.copytree(PROJECT, dest, ignore=shutil.ignore_patterns(".mesonpy*", "build"))
    text = (dest / "pyproject.toml").read_text()
    if not pkgconf:
        text = text.replace(', "pkgconf"]', "]")
    if not wrapper:
        text = text.replace('"dllreg", ', "").replace('"dllreg.build"', '"mesonpy"')
        text = text[: text.index("[tool.dllreg]")]
    (dest / "pyproject.toml").write_text(text)
    return dest


def path_without_pkg_config(shadow: Path) -> str:
    """A PATH with every program of the current one (symlinks) except pkg-config/pkgconf, and
    cmake: meson falls back to a CMake lookup, which the library's lib/cmake config satisfies."""
    shadow.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            if not any(hidden in name for hidden in HIDDEN) and not (shadow / name).exists():
                (shadow / name).symlink_to(Path(directory, name))
    assert not any(shutil.which(name, path=str(shadow)) for name in HIDDEN)
    return str(shadow)


def runpath(data: bytes) -> list[str]:
    info = read_elf(data)
    return [*info.rpath, *info.runpath]


class Build:
    def __init__(self, root: Path, house: Path, libs: Path) -> None:
        self.root, self.libs = root, libs
        self.builder = Venv(root / "unused", house)
        self.builder.python = sys.executable  # one pip drives every build (as in test_e2e)
        self.find_links = f"{house} {libs}"

    def wheel(self, project: Path, out: Path, *, check: bool = True, verbose: bool = False,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.builder.pip("wheel", "--no-deps", *(["-v"] if verbose else ["-q"]),
                                "-w", str(out), str(project), check=check,
                                env={"PIP_FIND_LINKS": self.find_links, **(env or {})})


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Build:
    root = tmp_path_factory.mktemp("meson")
    # A private copy of the wheelhouse with its own dllreg wheel: other test sessions rebuild
    # the shared one's dllreg wheel at any moment, and an isolated build must find it.
    house = root / "house"
    shutil.copytree(wheelhouse, house, ignore=shutil.ignore_patterns("dllreg-*"))
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(house), str(ROOT)])
    libs = root / "libs"
    src = root / "qsum-3.1.4"
    gcc_shared(src / "lib" / "libqsum.so.3", QSUM_C, "libqsum.so.3")
    (src / "include").mkdir()
    (src / "include" / "qsum.h").write_text("long qsum(long n);\n")
    run([sys.executable, "-m", "dllreg", "package-lib", "qsum", "--version", "3.1.4",
         "--from", str(src), "-o", str(libs)])
    return Build(root, house, libs)


@pytest.fixture(scope="module")
def meson_wheel(build: Build) -> tuple[Path, str]:
    """The consumer built by `pip wheel` (isolated) on a PATH without pkg-config, and its log."""
    path = path_without_pkg_config(build.root / "bin-without-pkg-config")
    out = build.root / "out"
    r = build.wheel(copy_project(build.root / "mesq"), out, verbose=True, env={"PATH": path})
    return next(out.glob("mesq-0.1-*.whl")), r.stdout + r.stderr


def test_pkg_config_comes_from_the_pkgconf_build_requirement(meson_wheel: tuple[Path, str]) -> None:
    _, log = meson_wheel
    # Once for the metadata, once for the wheel (mesonpy has no prepare_metadata hook).
    found = re.findall(r"Found pkg-config: YES \((\S+)\) \S+\s+Run-time dependency qsum found: YES 3\.1\.4",
                       log)
    assert found, log[-3000:]
    assert all(re.search(r"/pip-build-env-[^/]+/(overlay|normal)/bin/pkg-config$", f) for f in found)


def test_without_pkgconf_the_same_machine_cannot_build(build: Build) -> None:
    """The control: the same build without the pkgconf requirement fails in meson."""
    path = path_without_pkg_config(build.root / "bin-control")
    proj = copy_project(build.root / "mesq-no-pkgconf", pkgconf=False)
    r = build.wheel(proj, build.root / "out-control", check=False, verbose=True, env={"PATH": path})
    assert r.returncode != 0 and NO_PKG_CONFIG in r.stdout + r.stderr, r.stdout[-3000:] + r.stderr[-3000:]


def test_wheel_links_the_registry_library_without_build_time_runpath(
        meson_wheel: tuple[Path, str]) -> None:
    wheel, _ = meson_wheel
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        init = zf.read("mesq/__init__.py").decode()
        (ext,) = [n for n in names if n.startswith("mesq/_q.") and n.endswith(".so")]
        so = zf.read(ext)
    assert "mesq/_dlls.py" in names and "mesq-0.1.dist-info/dllreg.json" in names
    assert "from . import _dlls  # dllreg: preload native libraries first" in init.splitlines()
    with WheelFile.open(wheel) as source:
        source.validate_record()
    assert read_elf(so).needed[0] == "libqsum.so.3"
    # Only the interpreter's own libdir may remain (FINDINGS); meson adds none here.
    assert set(runpath(so)) <= {sysconfig.get_config_var("LIBDIR")}, runpath(so)


def test_install_and_import_through_the_stub(make_venv, build: Build,  # type: ignore[no-untyped-def]
                                             meson_wheel: tuple[Path, str]) -> None:
    venv = make_venv()
    venv.pip("install", "--find-links", str(build.libs), str(meson_wheel[0]))
    r = venv.py("""
        import mesq
        maps = {l.split()[-1] for l in open('/proc/self/maps') if 'libqsum' in l}
        print(mesq.qsum(100), mesq._dlls.path('qsum'), *maps)
        """, cwd=venv.path)
    total, path, *mapped = r.stdout.split()
    registry = venv.site / "dllreg.libs" / "qsum" / "lib" / "libqsum.so.3"
    assert (total, path, mapped) == ("5050", str(registry), [str(registry)])


def test_editable_install_serves_the_stub_through_its_own_finder(tmp_path: Path, make_venv,  # type: ignore[no-untyped-def]
                                                                build: Build) -> None:
    """meson-python's editable wheel is an import hook (a .pth that imports a loader serving
    only meson's install plan), not a source directory on sys.path. dllreg ships the stub in
    the editable wheel with a finder of its own, for the packages that import it first.
    meson-python rebuilds on import, so its editables need --no-build-isolation."""
    venv = make_venv()
    venv.pip("install", "-q", "meson-python", "meson", "ninja", "pkgconf", "dllreg",
             "dllreg-lib-qsum", env={"PIP_FIND_LINKS": build.find_links})
    proj = copy_project(tmp_path / "mesq")
    editable = ("install", "--no-build-isolation", "-e", str(proj))
    # The venv's meson, ninja and pkg-config, as in an activated environment
    env = {"PIP_FIND_LINKS": build.find_links,
           "PATH": f"{venv.path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    r = venv.pip(*editable, check=False, env=env)
    assert r.returncode != 0 and "make 'from . import _dlls" in r.stdout + r.stderr, r.stderr[-2500:]
    init = proj / "mesq" / "__init__.py"
    text = init.read_text()
    init.write_text(text.replace('"""\n', '"""\nfrom . import _dlls\n', 1))
    venv.pip(*editable, env=env)
    out = venv.py("import mesq; print(mesq.qsum(100)); print(mesq._dlls.path('qsum')); "
                  "print(mesq.__file__); print(mesq._dlls.__file__)", cwd=tmp_path,
                  env={"PATH": env["PATH"]}).stdout.split()
    assert out[0] == "5050"
    assert out[1] == str(venv.site / "dllreg.libs" / "qsum" / "lib" / "libqsum.so.3")
    assert out[2] == str(init)  # the package really comes from the source tree
    assert out[3] == str(venv.site / "_dllreg_editable_mesq" / "mesq" / "_dlls.py")
    assert not (proj / "mesq" / "_dlls.py").exists()  # nothing written into the sources
