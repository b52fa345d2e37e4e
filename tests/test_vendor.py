"""``vendor``: a consumer wheel made self-contained, installed, and loaded by the real stub.

The consumer is a wheel holding a package whose ``libuse.so`` needs ``libqsum.so.3`` by SONAME
(no RPATH), patched by dllreg as the build backend does; the library wheels are built with
package-lib's planner from gcc-built libraries. Installs use the ``installer`` package into
plain site directories, imports run in fresh interpreters.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from conftest import QSUM_C, gcc_shared
from dllreg.build.consumer import patch_wheel
from dllreg.libwheel.package import plan_library, read_source, write_library_wheel
from dllreg.names import NativeRequirement
from dllreg.wheelfile import WheelWriter
from test_stub_runtime import install_wheel, python

QSUM2_C = "long qsum(long n){return n*(n+1)/2 + 1000000;}\n"


def library_wheel(tmp: Path, version: str, code: str, out: Path, requires: tuple[str, ...] = ()) -> Path:
    src = tmp / f"qsum-src-{version}"
    gcc_shared(src / "lib" / "libqsum.so.3", code, "libqsum.so.3")
    return write_library_wheel(plan_library(read_source(src), "qsum", version, requires=requires), out)


def consumer_wheel(tmp: Path, out: Path, requires: str = "qsum>=3") -> Path:
    raw = tmp / "raw"
    linkdir = tmp / "linkdir"
    gcc_shared(linkdir / "libqsum.so.3", QSUM_C, "libqsum.so.3")
    lib = gcc_shared(tmp / "build" / "libuse.so", "long qsum(long); long use(long n){return qsum(n);}",
                     None, f"-L{linkdir}", "-l:libqsum.so.3")
    init = textwrap.dedent("""\
        import ctypes, os
        _use = ctypes.CDLL(os.path.join(os.path.dirname(__file__), "libuse.so"))
        _use.use.restype = ctypes.c_long
        def total(n):
            return _use.use(n)
        """)
    wheel = raw / "cpkg-1.0-py3-none-any.whl"
    with WheelWriter(wheel, "cpkg-1.0.dist-info") as w:
        w.add("cpkg/__init__.py", init.encode())
        w.add("cpkg/libuse.so", lib.read_bytes(), executable=True)
        w.add("cpkg-1.0.dist-info/METADATA", b"Metadata-Version: 2.1\nName: cpkg\nVersion: 1.0\n")
        w.add("cpkg-1.0.dist-info/WHEEL",
              b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    req = NativeRequirement.parse(requires)
    return patch_wheel(wheel, out, [req], [req], with_stubs=False, extra={
        "cpkg/_dlls.py": __import__("dllreg.stub", fromlist=["x"]).render_stub("cpkg", [req]).encode(),
        "cpkg/__init__.py": ("from . import _dlls  # dllreg\n" + init).encode(),
        "cpkg-1.0.dist-info/dllreg.json": json.dumps({"format": 1, "requires": [requires],
                                                        "stubs": ["cpkg/_dlls.py"]}).encode()})


def vendor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dllreg", "vendor", *args],
                          capture_output=True, text=True)


@pytest.fixture
def wheels(tmp_path: Path) -> tuple[Path, Path]:
    libs = tmp_path / "libs"
    library_wheel(tmp_path, "3.1.4", QSUM_C, libs)
    return consumer_wheel(tmp_path, tmp_path / "consumer"), libs


def test_vendored_wheel_works_alone_and_yields_to_the_registry(tmp_path: Path,
                                                               wheels: tuple[Path, Path]) -> None:
    consumer, libs = wheels
    r = vendor(str(consumer), "-o", str(tmp_path / "out"), "--find-libs", str(libs), "--no-installed")
    assert r.returncode == 0, r.stderr
    assert f"vendored qsum 3.1.4 from {libs}/dllreg_lib_qsum-3.1.4-py3-none-linux_x86_64.whl: " \
           "lib/libqsum.so.3" in r.stdout
    (out,) = (tmp_path / "out").glob("*.whl")
    assert out.name == "cpkg-1.0-py3-none-linux_x86_64.whl"  # binaries: no longer 'any'
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        meta = zf.read("cpkg-1.0.dist-info/METADATA").decode()
        record = json.loads(zf.read("cpkg-1.0.dist-info/dllreg.json"))
        wheel_file = zf.read("cpkg-1.0.dist-info/WHEEL").decode()
    assert {"cpkg/dllreg.libs/qsum/lib/libqsum.so.3", "cpkg/dllreg.libs/qsum/MANIFEST"} <= set(names)
    assert "Requires-Dist: dllreg-lib-qsum" not in meta  # self-contained: pip fetches nothing
    assert record["vendored"] == {"qsum": "3.1.4"}
    assert "Root-Is-Purelib: false" in wheel_file and "Tag: py3-none-linux_x86_64" in wheel_file
    site = tmp_path / "site"
    install_wheel(out, site)  # installer checks RECORD
    code = "import cpkg; print(cpkg.total(10))"
    alone = python(code, site, DLLREG_DEBUG="1")
    assert alone.stdout.split() == ["55"], alone.stderr
    assert f"found qsum 3.1.4 at {site}/cpkg/dllreg.libs/qsum (vendored copy)" in alone.stderr
    check = subprocess.run([sys.executable, "-m", "dllreg", "check", "--path", str(site)],
                           capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.endswith("0 libraries, 1 consumers: OK\n"), check.stdout
    # A compatible registry copy, once installed, wins; DLLREG_PREFER=vendored reverses it.
    install_wheel(library_wheel(tmp_path, "3.2", QSUM2_C, tmp_path / "libs2"), site)
    assert python(code, site).stdout.split() == ["1000055"]
    assert python(code, site, DLLREG_PREFER="vendored").stdout.split() == ["55"]
    maps = python("import cpkg\nprint(sorted({l.split()[-1] for l in open('/proc/self/maps') "
                  "if 'libqsum' in l}))", site, DLLREG_PREFER="vendored").stdout
    assert maps.strip() == repr([f"{site}/cpkg/dllreg.libs/qsum/lib/libqsum.so.3"])


def test_vendor_takes_the_installed_library_and_its_dependencies(tmp_path: Path) -> None:
    site = tmp_path / "site"
    dep = tmp_path / "dep-src"
    gcc_shared(dep / "lib" / "libbase.so.1", "long base(void){return 7;}", "libbase.so.1")
    from dllreg.libwheel.package import plan_library as plan

    install_wheel(write_library_wheel(plan(read_source(dep), "base", "1.0"), tmp_path / "w"), site)
    install_wheel(library_wheel(tmp_path, "3.1.4", QSUM_C, tmp_path / "w", ("base>=1",)), site)
    consumer = consumer_wheel(tmp_path, tmp_path / "consumer")
    r = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                        "from dllreg.cli.main import main; sys.exit(main(sys.argv[2:]))", str(site),
                        "vendor", str(consumer), "-o", str(tmp_path / "out")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("vendored base 1.0 from ") and lines[1].startswith("vendored qsum 3.1.4")


def test_a_platform_wheel_keeps_its_tags_and_refuses_another_platform(tmp_path: Path,
                                                                     wheels: tuple[Path, Path]) -> None:
    consumer, libs = wheels
    plat = tmp_path / "plat" / "cpkg-1.0-cp311-cp311-manylinux_2_28_x86_64.whl"
    plat.parent.mkdir()
    with zipfile.ZipFile(consumer) as src, zipfile.ZipFile(plat, "w") as dst:
        for info in src.infolist():  # the same wheel under a platform name (RECORD is unchanged)
            dst.writestr(info, src.read(info))
    r = vendor(str(plat), "-o", str(tmp_path / "out"), "--find-libs", str(libs), "--no-installed")
    assert r.returncode == 0, r.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == [plat.name]
    arm = tmp_path / "arm" / "cpkg-1.0-cp311-cp311-manylinux_2_28_aarch64.whl"
    arm.parent.mkdir()
    arm.write_bytes(plat.read_bytes())
    r = vendor(str(arm), "-o", str(tmp_path / "out2"), "--find-libs", str(libs), "--no-installed")
    assert r.returncode == 2 and "no qsum>=3 for manylinux_2_28_aarch64" in r.stderr


@pytest.mark.parametrize("case", ["not-consumer", "no-library", "too-old", "overwrite"])
def test_vendor_refusals_write_nothing(tmp_path: Path, wheels: tuple[Path, Path], case: str) -> None:
    consumer, libs = wheels
    out = tmp_path / "out"
    args = [str(consumer), "-o", str(out), "--no-installed", "--find-libs", str(libs)]
    expect = ""
    if case == "not-consumer":
        plain = tmp_path / "plain" / "plain-1.0-py3-none-any.whl"
        with WheelWriter(plain, "plain-1.0.dist-info") as w:
            w.add("plain/__init__.py", b"")
            w.add("plain-1.0.dist-info/METADATA", b"Metadata-Version: 2.1\nName: plain\nVersion: 1.0\n")
            w.add("plain-1.0.dist-info/WHEEL",
                  b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        args[0], expect = str(plain), "so it is not a dllreg consumer"
    elif case == "no-library":
        args = args[:4]
        expect = "no qsum>=3 for any among the library wheels given"
    elif case == "too-old":
        args[0] = str(consumer_wheel(tmp_path / "c2", tmp_path / "c2out", "qsum>=4"))
        expect = "(found: 3.1.4 (linux_x86_64)); pass --find-libs DIR with a dllreg-lib-qsum wheel"
    elif case == "overwrite":
        args[2] = str(consumer.parent)
        expect = ""  # the output name differs (retagged), so it is allowed; see below
    r = vendor(*args)
    if case == "overwrite":
        assert r.returncode == 0 and consumer.exists()
        return
    assert r.returncode == 2 and r.stderr.startswith("error: ") and expect in r.stderr, r.stderr
    assert not out.exists() or not list(out.iterdir())
