"""The stub on every CPython this machine has (pyenv's 3.9 to 3.13): a C-extension consumer
built by dllreg.build under that interpreter (`uv build --python`), installed into a venv of
it, imported on the fast path and on the full algorithm, `python -m dllreg check` run, and a
traceback through the cold section read by that version's own excepthook. Slow: e2e.

A version is skipped only when no pyenv interpreter of it exists (the reason names where it
was looked for); the module prints which versions ran.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from clientbed import PROBE, VERSIONS, ClientBed, dllreg, py, pyenv_python
from conftest import has_gcc
from test_e2e import write_consumer
from test_stub_traceback import EXPECTED, frames

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not has_gcc(), reason="needs gcc")]

RAN: list[str] = []


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClientBed, Path]]:
    bed = ClientBed(tmp_path_factory.mktemp("pythons"))
    yield bed, write_consumer(bed.root, "qapp", ["qsum>=3.1"])
    print(f"\npythons: the stub ran on CPython {', '.join(RAN) or 'none'}")


@pytest.mark.parametrize("version", VERSIONS)
def test_a_consumer_builds_and_imports(bed: tuple[ClientBed, Path], version: str) -> None:
    b, project = bed
    python = pyenv_python(version)
    if python is None:
        root = os.environ.get("PYENV_ROOT") or "~/.pyenv"
        pytest.skip(f"no CPython {version} on this machine (looked for "
                    f"{root}/versions/{version}.*/bin/python{version})")
    venv = b.venv(f"venv{version}", python)
    wheel = b.build(project, python)
    assert f"-cp{version.replace('.', '')}-" in wheel.name, wheel
    b.install(venv, str(wheel), "dllreg")
    assert py(venv, "import sys; print('%d.%d' % sys.version_info[:2])").stdout.strip() == version
    site = Path(py(venv, "import sysconfig; print(sysconfig.get_paths()['purelib'])")
                .stdout.strip())
    lib = str(site / "dllreg.libs" / "qsum" / "lib" / "libqsum.so.3")
    assert py(venv, PROBE, cwd=b.root).stdout.split() == ["5050", lib, "1", "False"]
    cold = py(venv, PROBE, cwd=b.root, DLLREG_DEBUG="1")
    assert cold.stdout.split() == ["5050", lib, "1", "True"]
    assert f"qapp: loaded qsum by absolute path {lib} (extension loader)" in cold.stderr
    check = dllreg(venv, "check")
    assert check.returncode == 0 and "1 libraries, 1 consumers: OK" in check.stdout, check

    # A traceback through the cold section and the lazy matcher, as this version prints it.
    stub = site / "qapp" / "_dlls.py"
    stub.write_text(stub.read_text().replace("('qsum', '>=3.1')", "('qsum', '>=3.1,=<4')"))
    r = py(venv, "import qapp", check=False, cwd=b.root)
    assert "ValueError: Invalid specifier: '=<4'" in r.stderr, r.stderr
    shown = frames(r.stderr, stub)
    assert {f: shown.get(f) for f in EXPECTED} == EXPECTED, r.stderr
    RAN.append(version)
