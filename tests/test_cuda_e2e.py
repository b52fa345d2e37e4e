"""CUDA without a GPU: NVIDIA's real nvidia-cuda-runtime-cu12, nvidia-cuda-nvrtc-cu12 and
nvidia-nvjitlink-cu12 wheels (12.4.127, downloaded once into .cache/downloads) installed as they
are by real pip; two C consumers built through dllreg.build (isolated builds, gcc) load them by
absolute path and call version queries that need no device; one copy of each is mapped."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from conftest import CACHE, run
from test_devendor_e2e import Env
from test_wheelprovider_e2e import house

__all__ = ["house"]  # the fixture

DOWNLOADS = CACHE / "downloads"
VERSION = "12.4.127"
WHEELS = ("nvidia-cuda-runtime-cu12", "nvidia-cuda-nvrtc-cu12", "nvidia-nvjitlink-cu12")
# manylinux2014 wheels; pip's --platform does not widen manylinux_2_28 to them by itself
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")

pytestmark = [pytest.mark.e2e, pytest.mark.realwheels,
              pytest.mark.skipif(sys.platform != "linux" or not shutil.which("gcc"),
                                 reason="Linux x86_64 with gcc")]

EXT_C = """\
#include <Python.h>
%(includes)s
/* cuda_runtime_api.h needs crt/host_defines.h, which the wheel does not ship: the one
   prototype used here, as CUDA declares it (cudaError_t is an enum). */
int cudaRuntimeGetVersion(int *runtimeVersion);

static PyObject *versions(PyObject *m, PyObject *a) {
    int rt = 0, major = 0, minor = 0; unsigned int jmajor = 0, jminor = 0;
    int e1 = cudaRuntimeGetVersion(&rt);
    %(calls)s
    return Py_BuildValue("(iiiiii)", e1, rt, major, minor, (int)jmajor, (int)jminor);
}
static PyMethodDef methods[] = {{"versions", versions, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_ext", NULL, -1, methods};
PyMODINIT_FUNC PyInit__ext(void) { return PyModule_Create(&mod); }
"""
SETUP = """\
import shlex, subprocess, sys
from setuptools import Extension, setup

flags = []
for lib in {libs!r}:  # no flags while setuptools lists the build requirements
    flags += shlex.split(subprocess.run([sys.executable, "-m", "dllreg", "pkg-config", lib, "--cflags",
                                         "--libs"], check=True, stdout=subprocess.PIPE, text=True).stdout)
setup(ext_modules=[Extension("{name}._ext", ["{name}/_ext.c"],
                             extra_compile_args=[f for f in flags if f.startswith("-I")],
                             extra_link_args=[f for f in flags if not f.startswith("-I")])])
"""


def nvidia_wheels() -> list[Path]:
    found = [sorted(DOWNLOADS.glob(f"{d.replace('-', '_')}-{VERSION}-*.whl")) for d in WHEELS]
    if not all(found):
        run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps",
             *(x for p in PLATFORMS for x in ("--platform", p)), "-d", str(DOWNLOADS),
             *(f"{d}=={VERSION}" for d in WHEELS)])
        found = [sorted(DOWNLOADS.glob(f"{d.replace('-', '_')}-{VERSION}-*.whl")) for d in WHEELS]
    return [f[-1] for f in found]


def project(root: Path, name: str, libs: tuple[str, ...]) -> Path:
    src = root / name
    (src / name).mkdir(parents=True)
    includes = "\n".join(h for lib, h in (("nvrtc", "#include <nvrtc.h>"),
                                          ("nvjitlink", "#include <nvJitLink.h>")) if lib in libs)
    calls = "\n    ".join(c for lib, c in (("nvrtc", "nvrtcVersion(&major, &minor);"),
                                           ("nvjitlink", "nvJitLinkVersion(&jmajor, &jminor);"))
                          if lib in libs)
    (src / name / "_ext.c").write_text(EXT_C % {"includes": includes, "calls": calls})
    (src / name / "__init__.py").write_text("from ._ext import versions\n")
    (src / "setup.py").write_text(SETUP.format(libs=libs, name=name))
    reqs = ", ".join(f'"{lib}>=12.4"' for lib in libs)
    (src / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["dllreg", "setuptools>=68"]
        build-backend = "dllreg.build"
        [project]
        name = "{name}"
        version = "1.0"
        [tool.setuptools]
        packages = ["{name}"]
        [tool.dllreg]
        backend = "setuptools.build_meta"
        requires = [{reqs}]
        """))
    return src


def test_two_consumers_of_the_real_cuda_wheels_map_one_copy_each(tmp_path: Path, house: Path) -> None:
    links = tmp_path / "links"
    links.mkdir()
    for w in nvidia_wheels():
        (links / w.name).symlink_to(w)
    out = tmp_path / "wheels"
    for name, libs in (("cudaver", ("cudart", "nvrtc", "nvjitlink")), ("cudart_only", ("cudart",))):
        run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index", "--find-links",
             str(house), "--find-links", str(links), "-w", str(out), str(project(tmp_path, name, libs))])
    with zipfile.ZipFile(next(out.glob("cudaver-*.whl"))) as zf:
        meta = zf.read("cudaver-1.0.dist-info/METADATA").decode()
    assert [x for x in meta.splitlines() if x.startswith("Requires-Dist:")] == [
        "Requires-Dist: nvidia-cuda-runtime-cu12>=12.4", "Requires-Dist: nvidia-cuda-nvrtc-cu12>=12.4",
        "Requires-Dist: nvidia-nvjitlink-cu12>=12.4"]

    env = Env(tmp_path / "venv")
    env.install("--find-links", str(links), *map(str, out.glob("*.whl")))
    text, maps = env.mapped("""
        import cudart_only, cudaver
        print(cudart_only.versions()[:2], cudaver.versions())
        """, ("libcudart", "libnvrtc", "libnvJitLink"))
    # cudaSuccess, CUDA 12.4 (12040), NVRTC 12.4, nvJitLink 12.4: no GPU or driver needed
    assert text == "(0, 12040) (0, 12040, 12, 4, 12, 4)"
    nv = env.site / "nvidia"
    assert maps == [str(nv / "cuda_nvrtc" / "lib" / "libnvrtc.so.12"),
                    str(nv / "cuda_runtime" / "lib" / "libcudart.so.12"),
                    str(nv / "nvjitlink" / "lib" / "libnvJitLink.so.12")]
    assert not (env.site / "dllreg.libs").exists()

    env.install(str(next(house.glob("dllreg-*.whl"))), "--find-links", str(house))
    listed = json.loads(run([env.python, "-m", "dllreg", "list", "--json"]).stdout)["libraries"]
    assert {(x["name"], x["version"], x["provider"], len(x["consumers"])) for x in listed} == {
        ("cudart", VERSION, "pypi:nvidia-cuda-runtime-cu12", 2),
        ("nvrtc", VERSION, "pypi:nvidia-cuda-nvrtc-cu12", 1),
        ("nvjitlink", VERSION, "pypi:nvidia-nvjitlink-cu12", 1)}
    check = run([env.python, "-m", "dllreg", "check", "--verify"]).stdout
    assert check.endswith("3 libraries, 2 consumers: OK\n"), check
