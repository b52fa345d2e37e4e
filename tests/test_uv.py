"""uv as a first-class client: `uv build` through dllreg.build (UV_FIND_LINKS), `uv pip
install --find-links`, `uv pip uninstall` of a library; imports and `dllreg check` over the
INSTALLER and RECORD uv writes itself. The real uv binary; slow: marked e2e."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from clientbed import PROBE, ClientBed, dllreg, py, uv
from conftest import has_gcc
from test_e2e import write_consumer

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not has_gcc(), reason="needs gcc")]


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClientBed, Path]]:
    bed = ClientBed(tmp_path_factory.mktemp("uv"))
    wheel = bed.build(write_consumer(bed.root, "qapp", ["qsum>=3.1,<4"]))
    yield bed, wheel


def test_uv_build_makes_a_consumer_wheel(bed: tuple[ClientBed, Path]) -> None:
    _, wheel = bed
    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read("qapp-0.1.dist-info/METADATA").decode()
        record = json.loads(zf.read("qapp-0.1.dist-info/dllreg.json"))
        assert "qapp/_dlls.py" in zf.namelist()
    assert "Requires-Dist: dllreg-lib-qsum<4,>=3.1" in meta
    assert record["requires"] == ["qsum<4,>=3.1"]


@pytest.mark.parametrize("link_mode", ["copy", "symlink"])
def test_uv_install_check_and_uninstall(bed: tuple[ClientBed, Path], link_mode: str) -> None:
    b, wheel = bed
    python = b.venv(f"venv-{link_mode}")
    b.install(python, str(wheel), "dllreg", UV_LINK_MODE=link_mode)
    site = Path(py(python, "import sysconfig; print(sysconfig.get_paths()['purelib'])")
                .stdout.strip())
    installer = next(site.glob("dllreg_lib_qsum-*.dist-info")) / "INSTALLER"
    assert installer.read_text().strip() == "uv"
    total, path, maps, cold = py(python, PROBE, cwd=b.root).stdout.split()
    assert (total, maps, cold) == ("5050", "1", "False")
    assert path == str(site / "dllreg.libs" / "qsum" / "lib" / "libqsum.so.3")
    if link_mode == "symlink":  # the registry files are uv's cache entries, linked
        assert Path(path).is_symlink()
    listed = json.loads(dllreg(python, "list", "--json").stdout)["libraries"]
    assert [(r["name"], r["version"], [c["name"] for c in r["consumers"]]) for r in listed] == [
        ("qsum", "3.1.4", ["qapp"])]
    # --verify also compares each file with the hash in uv's RECORD
    check = dllreg(python, "check", "--verify")
    assert check.returncode == 0 and "1 libraries, 1 consumers: OK" in check.stdout, check

    uv("pip", "uninstall", "--python", str(python), "dllreg-lib-qsum")
    assert not (site / "dllreg.libs" / "qsum" / "MANIFEST").exists()
    r = py(python, "import qapp", check=False, cwd=b.root)
    assert "qapp requires native library qsum<4,>=3.1, but it is not installed" in r.stderr, r
    check = dllreg(python, "check")
    assert check.returncode == 1, check
    assert "qapp 0.1: requires native library qsum<4,>=3.1, which is not installed" in check.stdout
    assert 'fix: pip install "dllreg-lib-qsum<4,>=3.1"' in check.stdout
