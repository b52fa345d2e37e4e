"""Every wheel dllreg writes passes what an upload is checked with: ``packaging.metadata``'s
validation (PyPI's) and ``twine check --strict``; a consumer's sdist declares the Requires-Dist
its wheels add (PEP 643). Real tools on real wheels: package-lib, dllreg.build, vendor, devendor."""

from __future__ import annotations

import email
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from packaging.metadata import Metadata

from conftest import CACHE, QSUM_C, gcc_shared, run
from dllreg.cli.main import main
from test_e2e import write_consumer

DOWNLOADS = CACHE / "downloads"


def metadata_text(dist: Path) -> str:
    if dist.suffix == ".whl":
        with zipfile.ZipFile(dist) as zf:
            return zf.read(next(n for n in zf.namelist() if n.count("/") == 1
                                and n.endswith(".dist-info/METADATA"))).decode()
    with tarfile.open(dist) as tf:
        member = next(m for m in tf.getmembers() if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO"))
        f = tf.extractfile(member)
        assert f is not None
        return f.read().decode()


def assert_uploadable(*dists: Path) -> list[Metadata]:
    """PyPI's own validation of each distribution's metadata, then twine's strict check of all."""
    parsed = [Metadata.from_email(metadata_text(d), validate=True) for d in dists]
    r = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, dists)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("PASSED") == len(dists), r.stdout
    return parsed


def requires_dist(text: str) -> list[str]:
    return sorted(email.message_from_string(text).get_all("Requires-Dist") or [])


def test_library_wheel_from_a_directory(qsum_dir: Path, tmp_path: Path) -> None:
    (qsum_dir / "LICENSE").write_text("MIT License\n\nCopyright (c) qsum authors\n")
    out = tmp_path / "out"
    assert main(["package-lib", "qsum", "--version", "3.1.4", "--from", str(qsum_dir), "-o", str(out),
                 "--requires", "zlib>=1.2", "--license", "mit"]) == 0
    wheel = next(out.glob("*.whl"))
    (meta,) = assert_uploadable(wheel)
    assert meta.metadata_version == "2.4" and str(meta.license_expression) == "MIT"
    assert meta.license_files == ["LICENSE"] and [str(r) for r in meta.requires_dist or []] == [
        "dllreg-lib-zlib>=1.2"]
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("dllreg_lib_qsum-3.1.4.dist-info/licenses/LICENSE").startswith(b"MIT License")
    # without a licence anywhere: no License-Expression, still valid
    assert main(["package-lib", "qsum", "--version", "3.1.5", "--from", str(qsum_dir), "-o",
                 str(tmp_path / "bare")]) == 0
    (meta,) = assert_uploadable(next((tmp_path / "bare").glob("*.whl")))
    assert meta.license_expression is None
    # a licence that is not SPDX is refused before anything is written
    assert main(["package-lib", "qsum", "--version", "3.1.6", "--from", str(qsum_dir), "-o",
                 str(tmp_path / "bad"), "--license", "BSD-ish"]) == 2
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").iterdir())


@pytest.mark.realwheels
def test_library_wheel_from_the_real_scipy_openblas64(tmp_path: Path) -> None:
    source = sorted(DOWNLOADS.glob("scipy_openblas64-*manylinux*x86_64.whl"))
    if not source:
        pytest.skip("needs the cached scipy-openblas64 wheel (tests/test_devendor_e2e.py downloads it)")
    out = tmp_path / "out"
    # no --version: the recipe's rule reads it from the source wheel
    assert main(["package-lib", "openblas64", "--from", str(source[-1]), "-o", str(out)]) == 0
    wheel = next(out.glob("*.whl"))
    (meta,) = assert_uploadable(wheel)
    assert str(meta.license_expression) == ("BSD-3-Clause-Attribution AND GPL-3.0-or-later WITH "
                                            "GCC-exception-3.1")  # the recipe's
    assert meta.license_files == ["LICENSE.txt"] and meta.version is not None
    assert str(meta.version) == source[-1].name.split("-")[1]
    # a --version the binary's own wheel contradicts is refused, naming the stated version
    assert main(["package-lib", "openblas64", "--version", "0.2.20", "--from", str(source[-1]), "-o",
                 str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()


@pytest.mark.e2e
def test_consumer_sdist_wheel_and_vendored_wheel(tmp_path: Path, wheelhouse: Path) -> None:
    libs = tmp_path / "libs"
    src = tmp_path / "qsum"
    gcc_shared(src / "lib" / "libqsum.so.3", QSUM_C, "libqsum.so.3")
    (src / "include").mkdir()
    (src / "include" / "qsum.h").write_text("long qsum(long n);\n")
    assert main(["package-lib", "qsum", "--version", "3.1.4", "--from", str(src), "-o", str(libs),
                 "--license", "MIT"]) == 0
    proj = write_consumer(tmp_path, "qmeta", ["qsum>=3; sys_platform == 'linux'"])
    pyproject = proj / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(
        'version = "0.1"\n', 'version = "0.1"\nlicense = "MIT"\ndependencies = ["packaging"]\n'
        'readme = {text = "A qsum consumer.", content-type = "text/plain"}\n'))
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "build", "-o", str(dist), str(proj)],
        env={**os.environ, "PIP_FIND_LINKS": f"{libs} {wheelhouse}"})
    sdist, wheel = next(dist.glob("*.tar.gz")), next(dist.glob("*.whl"))
    sdist_meta, _ = assert_uploadable(sdist, wheel)
    # PEP 643: a 2.2+ sdist's fields not marked Dynamic are what every wheel says
    assert sdist_meta.metadata_version in ("2.2", "2.3", "2.4")
    assert "requires-dist" not in (sdist_meta.dynamic or [])
    assert requires_dist(metadata_text(sdist)) == requires_dist(metadata_text(wheel)) == [
        'dllreg-lib-qsum>=3; sys_platform == "linux"', "packaging"]
    with tarfile.open(sdist) as tf:  # setuptools' egg-info copy says the same
        egg = next(m for m in tf.getmembers() if m.name.endswith(".egg-info/PKG-INFO"))
        f = tf.extractfile(egg)
        assert f is not None and requires_dist(f.read().decode()) == requires_dist(metadata_text(sdist))
    vendored = tmp_path / "vendored"
    assert main(["vendor", str(wheel), "-o", str(vendored), "--find-libs", str(libs), "--no-installed"]) == 0
    (vmeta,) = assert_uploadable(next(vendored.glob("*.whl")))
    assert [str(r) for r in vmeta.requires_dist or []] == ["packaging"]


@pytest.mark.realwheels
@pytest.mark.skipif(sys.version_info[:2] != (3, 11) or sys.platform != "linux", reason="cp311 Linux wheel")
def test_devendored_numpy_and_its_library_wheels(tmp_path: Path) -> None:
    from test_devendor_e2e import _numpy_wheel, _openblas64_wheel

    out = tmp_path / "out"
    lib = _openblas64_wheel(tmp_path / "libs")  # the recipe's wheel, as devendor --fetch makes it
    assert main(["devendor", str(_numpy_wheel()), "-o", str(out), "--with-lib", str(lib)]) == 0
    wheels = sorted(out.glob("*.whl"))
    assert {w.name.split("-")[0] for w in wheels} >= {"numpy", "dllreg_lib_openblas64"}
    parsed = dict(zip((w.name.split("-")[0] for w in wheels), assert_uploadable(*wheels)))
    assert str(parsed["dllreg_lib_openblas64"].license_expression).startswith("BSD-3-Clause-Attribution")
    assert any(str(r).startswith("dllreg-lib-openblas64") for r in parsed["numpy"].requires_dist or [])


def test_sdist_requires_dist_is_static_only_when_every_platform_agrees() -> None:
    from dllreg.build import _static_choices
    from dllreg.build.config import ConsumerConfig, parse_config
    from dllreg.build.sdist import sdist_changes

    def config(requires: list[str]) -> ConsumerConfig:
        return parse_config({"tool": {"dllreg": {"backend": "setuptools.build_meta", "requires": requires}}})

    pkg_info = {"p-1/PKG-INFO": b"Metadata-Version: 2.4\nName: p\nVersion: 1\n\nbody\n"}
    # scipy-openblas32 serves openblas on Linux, Windows and macOS: static, identical lines
    choices = _static_choices(config(["openblas>=0.3"]))
    assert choices is not None
    text = sdist_changes(pkg_info, config(["openblas>=0.3"]).requires, choices)["p-1/PKG-INFO"].decode()
    assert requires_dist(text) == ["scipy-openblas32>=0.3"] and "Dynamic" not in text
    # the CUDA runtime's PyPI wheel is Linux-only: the wheels differ by platform, so Dynamic
    assert _static_choices(config(["cudart>=12"])) is None
    text = sdist_changes(pkg_info, (), None)["p-1/PKG-INFO"].decode()
    meta = Metadata.from_email(text, validate=True)
    assert meta.dynamic == ["requires-dist"] and not meta.requires_dist
