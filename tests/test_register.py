"""``register``/``unregister``: external libraries in the registry, resolved by the real stub.

gcc-built libraries registered into a temporary site directory, consumers loaded in fresh
interpreters (the stub and helpers of test_stub_runtime), pip reading the dist-info a
registration writes, and Debian's own OpenBLAS unpacked from its .deb.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CACHE, QSUM_C, gcc_shared, run
from dllreg.cli.main import main
from dllreg.names import preference
from test_stub_runtime import add_consumer, add_library, python

QSUM2_C = "long qsum(long n){return n*(n+1)/2 + 1000000;}\n"  # tells the copies apart


def dllreg(*args: str) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "dllreg", *args], capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr


def registered(site: Path) -> list[str]:
    root = site / "dllreg.libs"
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) if root.exists() else []


@pytest.fixture
def site(tmp_path: Path) -> Path:
    s = tmp_path / "site"
    s.mkdir()
    return s


@pytest.fixture
def libdir(tmp_path: Path) -> Path:
    d = tmp_path / "usr" / "lib"
    gcc_shared(d / "libqsum.so.3.2.0", QSUM2_C, "libqsum.so.3")
    os.symlink("libqsum.so.3.2.0", d / "libqsum.so.3")
    return d


def test_registered_library_is_what_the_stub_loads(tmp_path: Path, site: Path, libdir: Path) -> None:
    assert main(["register", "--name", "qsum", "--version", "3.2", "--path", str(libdir / "libqsum.so.3"),
                 "--site", str(site), "--owner", "tester"]) == 0
    manifest = (site / "dllreg.libs" / "qsum.system" / "MANIFEST").read_text()
    assert "Provider: system\nRegistered-By: tester\n" in manifest
    assert f"Library: {libdir}/libqsum.so.3\tlibqsum.so.3\t" in manifest  # the path as given
    add_consumer(tmp_path, site, "cpkg")
    r = python("import cpkg\nfrom cpkg import _dlls\nprint(cpkg.total(10), _dlls.path('qsum'))\n"
               "print(sum('libqsum' in l for l in open('/proc/self/maps')) > 0)", site)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1000055", str(libdir / "libqsum.so.3"), "True"]
    _, out, _ = dllreg("list", "--json", "--path", str(site))
    (row,) = json.loads(out)["libraries"]
    assert (row["provider"], row["registered_by"], row["version"]) == ("system", "tester", "3.2")
    assert [c["name"] for c in row["consumers"]] == []  # cpkg has no dist-info here


def test_pip_sees_the_registration_and_not_twice(site: Path, libdir: Path) -> None:
    lib = str(libdir / "libqsum.so.3")
    for v in ("3.2", "3.3"):  # an upgrade: one dist-info, the new version
        assert main(["register", "--name", "qsum", "--version", v, "--path", lib, "--site", str(site)]) == 0
    pip = run([sys.executable, "-m", "pip", "list", "--path", str(site), "--format", "json"])
    assert {"name": "dllreg-lib-qsum", "version": "3.3"} in json.loads(pip.stdout)
    assert [p.name for p in site.glob("*.dist-info")] == ["dllreg_lib_qsum-3.3.dist-info"]
    assert main(["unregister", "--name", "qsum", "--site", str(site)]) == 0
    assert registered(site) == [] and list(site.glob("*.dist-info")) == []


def test_a_wheels_dist_info_is_left_to_pip(tmp_path: Path, site: Path, libdir: Path) -> None:
    add_library(tmp_path, site)  # dllreg_lib_qsum-3.1.4.dist-info, INSTALLER test
    assert main(["register", "--name", "qsum", "--version", "3.2", "--path", str(libdir / "libqsum.so.3"),
                 "--site", str(site)]) == 0
    assert [p.name for p in site.glob("*.dist-info")] == ["dllreg_lib_qsum-3.1.4.dist-info"]
    assert registered(site) == ["qsum", "qsum.system"]


def test_preference_between_providers(tmp_path: Path, site: Path, libdir: Path) -> None:
    add_library(tmp_path, site)  # the wheel's copy, 3.1.4, plain sum
    assert main(["register", "--name", "qsum", "--version", "3.2", "--path", str(libdir / "libqsum.so.3"),
                 "--site", str(site)]) == 0
    add_consumer(tmp_path, site, "cpkg")
    code = "import cpkg; print(cpkg.total(10))"
    assert python(code, site).stdout.split() == ["1000055"]  # registered beats the wheel's copy
    assert python(code, site, DLLREG_PREFER="wheel").stdout.split() == ["55"]
    assert python(code, site, DLLREG_PREFER="nonsense").stdout.split() == ["1000055"]
    shutil.rmtree(site / "cpkg")
    add_consumer(tmp_path, site, "cpkg", "qsum<3.2")  # the preferred copy is too new: next one
    assert python(code, site).stdout.split() == ["55"]
    _, out, _ = dllreg("list", "--path", str(site))
    assert out.splitlines()[1].split()[:3] == ["qsum", "3.2", "system"]
    assert out.splitlines()[2].split()[:4] == ["qsum", "3.1.4", "(shadowed)", "wheel"]
    env = {**os.environ, "DLLREG_PREFER": "wheel,bogus"}
    proc = subprocess.run([sys.executable, "-m", "dllreg", "check", "--path", str(site)],
                          capture_output=True, text=True, env=env)
    assert "warning: DLLREG_PREFER: unknown provider(s) bogus" in proc.stdout


def test_stub_and_dllreg_agree_on_the_preference() -> None:
    from dllreg.stub import _runtime

    cases = {"": False, "wheel": False, "system,wheel": False, "registry": False, "vendored": True,
             "wheel, conda": False, "x,,y": False, "WHEEL": False, "registry,vendored": False,
             " Vendored ,wheel": True, "wheel,vendored": False}
    for raw, vendored_first in cases.items():
        os.environ["DLLREG_PREFER"] = raw
        try:
            suffixes, first = _runtime._preference()
        finally:
            del os.environ["DLLREG_PREFER"]
        assert tuple("wheel" if p == "" else p[1:] for p in suffixes) == preference(raw), raw
        assert first is vendored_first, raw


def test_conda_registration_stays_in_its_prefix(tmp_path: Path, site: Path, libdir: Path) -> None:
    prefix = tmp_path / "prefix"
    (prefix / "lib").mkdir(parents=True)
    shutil.copy(libdir / "libqsum.so.3.2.0", prefix / "lib" / "libqsum.so.3")
    os.symlink(libdir / "libqsum.so.3.2.0", prefix / "lib" / "escape.so.3")
    for path in (libdir / "libqsum.so.3", prefix / "lib" / "escape.so.3"):
        rc, _, err = dllreg("register", "--name", "qsum", "--version", "3.2", "--provider", "conda",
                            "--prefix", str(prefix), "--path", str(path), "--site", str(site))
        assert rc == 2 and f"{path}: outside the conda prefix {prefix}" in err
    assert registered(site) == []
    rc, out, err = dllreg("register", "--name", "qsum", "--version", "3.2", "--prefix", str(prefix),
                          "--path", str(prefix / "lib" / "libqsum.so.3"), "--site", str(site),
                          "--owner", "libqsum")
    assert rc == 0, err
    assert "registered qsum 3.2 (conda, by libqsum)" in out
    rc, out, _ = dllreg("unregister", "--name", "qsum", "--provider", "conda", "--owner", "other",
                        "--site", str(site))
    assert rc == 0 and "registered by libqsum, not other; left in place" in out
    assert registered(site) == ["qsum.conda"]
    rc, _, _ = dllreg("unregister", "--name", "qsum", "--provider", "conda", "--owner", "libqsum",
                      "--site", str(site))
    assert rc == 0 and registered(site) == []
    rc, out, _ = dllreg("unregister", "--name", "qsum", "--provider", "conda", "--site", str(site))
    assert rc == 0 and "not registered by conda" in out


def _elf_for(arch: int, src: Path, dst: Path) -> Path:
    data = bytearray(src.read_bytes())
    data[18:20] = arch.to_bytes(2, "little")  # e_machine
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("case", ["source", "text", "arch", "name", "version", "missing", "nosoname",
                                  "recipe-abi"])
def test_bad_input_writes_nothing(tmp_path: Path, site: Path, libdir: Path, case: str) -> None:
    good = str(libdir / "libqsum.so.3")
    name, version, path = "qsum", "3.2", good
    expect = ""
    if case == "source":
        path = str(tmp_path / "qsum.c")
        Path(path).write_text(QSUM_C)
        expect = "qsum.c: not a shared library (expected a .so, .so.N, .dylib or .dll file)"
    elif case == "text":
        path = str(tmp_path / "libnot.so.1")
        Path(path).write_text("INPUT(-lfoo)\n")  # a linker script, not a library
        expect = "libnot.so.1: not an ELF, PE or Mach-O file"
    elif case == "arch":
        path = str(_elf_for(183, libdir / "libqsum.so.3.2.0", tmp_path / "libqsum.so.3"))  # aarch64
        expect = "architecture"
    elif case == "name":
        name, expect = "-bad name", "invalid library name '-bad name'"
    elif case == "version":
        version, expect = "three", "invalid version 'three'"
    elif case == "missing":
        path, expect = str(tmp_path / "nope.so"), "nope.so: no such file"
    elif case == "nosoname":
        path = str(gcc_shared(tmp_path / "libbare.so", QSUM_C, None))
        expect = "has no SONAME"
    elif case == "recipe-abi":  # the openblas recipe wants scipy_-prefixed symbols
        name, expect = "openblas", "this is not the openblas library the recipe describes"
    rc, out, err = dllreg("register", "--name", name, "--version", version, "--path", path,
                          "--site", str(site))
    assert rc == 2 and out == "" and err.startswith("error: ") and expect in err, err
    assert len(err.splitlines()) == 1
    assert registered(site) == [] and list(site.glob("*.dist-info")) == []


def test_a_corrupt_registration_is_named_and_removable(site: Path, libdir: Path) -> None:
    assert main(["register", "--name", "qsum", "--version", "3.2", "--path", str(libdir / "libqsum.so.3"),
                 "--site", str(site)]) == 0
    (site / "dllreg.libs" / "qsum.system" / "MANIFEST").write_text("Manifest-Version: 1\nName: qsum\n")
    rc, out, _ = dllreg("check", "--path", str(site))
    assert rc == 1
    assert "qsum.system/MANIFEST" in out
    assert "fix: python -m dllreg unregister --name qsum --provider system" in out
    assert main(["unregister", "--name", "qsum", "--provider", "system", "--site", str(site)]) == 0
    assert registered(site) == [] and list(site.glob("*.dist-info")) == []


def test_check_verify_notices_a_changed_system_file(site: Path, libdir: Path) -> None:
    assert main(["register", "--name", "qsum", "--version", "3.2", "--path", str(libdir / "libqsum.so.3"),
                 "--site", str(site)]) == 0
    assert dllreg("check", "--verify", "--path", str(site))[0] == 0
    with open(libdir / "libqsum.so.3.2.0", "ab") as f:  # an in-place upgrade by the provider
        f.write(b"\0")
    rc, out, _ = dllreg("check", "--verify", "--path", str(site))
    assert rc == 1 and "library qsum 3.2 (registered by system)" in out
    assert "register it again" in out


def test_leftovers_of_a_killed_writer_are_ignored_then_removed(site: Path, libdir: Path) -> None:
    root = site / "dllreg.libs"
    (root / "half.system").mkdir(parents=True)  # killed before its MANIFEST was renamed in
    (root / "half.system" / ".MANIFEST.x.part").write_text("Manifest-Version: 1\n")
    (root / ".removed-123-old.conda").mkdir()
    assert dllreg("check", "--path", str(site))[0] == 0
    assert main(["register", "--name", "qsum", "--version", "3.2", "--path", str(libdir / "libqsum.so.3"),
                 "--site", str(site)]) == 0
    assert sorted(p.name for p in root.iterdir()) == [".lock", "qsum.system"]


# -- Debian's OpenBLAS, unpacked from the distribution's packages ---------------------------

DEBS = ("libopenblas0-pthread", "libgfortran5")
DDOT_C = """
double cblas_ddot(int n, const double *x, int incx, const double *y, int incy);
double use(long n){double x[3]={1,2,3}, y[3]={4,5,6}; (void)n; return cblas_ddot(3,x,1,y,1);}
"""


def _debian_root(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    cache = CACHE / "downloads" / "debs"
    cache.mkdir(parents=True, exist_ok=True)
    versions = {}
    root = tmp_path / "debroot"
    for pkg in DEBS:
        debs = sorted(cache.glob(f"{pkg}_*.deb"))
        if not debs:
            run(["apt-get", "download", pkg], cwd=cache)
            debs = sorted(cache.glob(f"{pkg}_*.deb"))
        run(["dpkg-deb", "-x", str(debs[-1]), str(root)])
        versions[pkg] = run(["dpkg-deb", "-f", str(debs[-1]), "Version"]).stdout.strip()
    return root, versions


@pytest.mark.e2e
def test_debian_openblas_registered_as_system_provider(tmp_path: Path, site: Path) -> None:
    if not shutil.which("dpkg-deb") or not shutil.which("apt-get"):
        pytest.fail("this test needs Debian's dpkg-deb and apt-get (scripts/setup-system.sh)")
    root, versions = _debian_root(tmp_path)
    gfortran_v = versions["libgfortran5"].split("-")[0].split("+")[0]
    openblas_v = versions["libopenblas0-pthread"].split("-")[0].split("+")[0]
    rc, _, err = dllreg("register", "--system", "openblas", "--root", str(root), "--version", "1",
                        "--site", str(site))
    assert rc == 2 and "this system has libopenblas: register --system libopenblas" in err
    for args in (["gfortran", "--version", gfortran_v],
                 ["libopenblas", "--version", openblas_v, "--requires", "gfortran"]):
        rc, out, err = dllreg("register", "--system", args[0], "--root", str(root), *args[1:],
                              "--site", str(site))
        assert rc == 0, err
    blas = root / "usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0"
    assert f"files in preload order: {blas} (libopenblas.so.0)" in out
    # A consumer linked by runtime name with the registration's pkg-config flags, no RPATH.
    pc = site / "dllreg.libs" / "libopenblas.system" / "lib" / "pkgconfig" / "libopenblas.pc"
    gf_pc = site / "dllreg.libs" / "gfortran.system" / "lib" / "pkgconfig"  # Requires: gfortran
    env = {**os.environ, "PKG_CONFIG_PATH": f"{pc.parent}:{gf_pc}"}
    flags = subprocess.run(["pkg-config", "--libs", "libopenblas"], capture_output=True, text=True,
                           env=env, check=True).stdout.split()
    assert flags[:2] == [f"-L{blas.parent}", "-l:libopenblas.so.0"]
    pkg = site / "blasuse"
    pkg.mkdir()
    gcc_shared(pkg / "libuse.so", DDOT_C, None, *flags)
    from dllreg.names import NativeRequirement
    from dllreg.stub import IMPORT_LINE, render_stub

    req = NativeRequirement.parse(f"libopenblas>={openblas_v}")
    (pkg / "_dlls.py").write_text(render_stub("blasuse", [req]))
    (pkg / "__init__.py").write_text(
        IMPORT_LINE + "import ctypes, os\n_u = ctypes.CDLL(os.path.join("
        "os.path.dirname(__file__), 'libuse.so'))\n_u.use.restype = ctypes.c_double\n")
    r = python("import blasuse\nprint(blasuse._u.use(0))\n"
               "maps = {l.split()[-1] for l in open('/proc/self/maps')\n"
               "        if 'libopenblas' in l or 'gfortran' in l}\n"
               "print(sorted(maps))", site, OPENBLAS_NUM_THREADS="1")
    assert r.returncode == 0, r.stderr
    value, maps = r.stdout.splitlines()
    assert value == "32.0"
    real_blas = os.path.realpath(blas)
    real_gfortran = os.path.realpath(root / "usr/lib/x86_64-linux-gnu/libgfortran.so.5")
    assert sorted(eval(maps)) == sorted([real_blas, real_gfortran])  # one copy each, registered
    rc, out, _ = dllreg("check", "--verify", "--path", str(site))
    assert rc == 0, out


def test_a_dist_info_left_out_of_step_by_a_kill_is_healed_by_the_next_writer(
        site: Path, libdir: Path, tmp_path: Path) -> None:
    lib = str(libdir / "libqsum.so.3")
    for name in ("qsum", "other"):
        assert main(["register", "--name", name, "--version", "3.2", "--path", lib, "--site",
                     str(site)]) == 0
    # What a writer killed between its change and the dist-info sync leaves behind:
    shutil.rmtree(site / "dllreg.libs" / "qsum.system")  # a removal, dist-info not synced
    shutil.rmtree(site / "dllreg_lib_other-3.2.dist-info")  # a registration without dist-info
    assert main(["register", "--name", "third", "--version", "1", "--path", lib, "--site",
                 str(site)]) == 0
    assert sorted(p.name for p in site.glob("*.dist-info")) == [
        "dllreg_lib_other-3.2.dist-info", "dllreg_lib_third-1.dist-info"]


def test_check_path_may_be_relative(site: Path, libdir: Path) -> None:
    assert main(["register", "--name", "qsum", "--version", "3.2", "--path", str(libdir / "libqsum.so.3"),
                 "--site", str(site)]) == 0
    proc = subprocess.run([sys.executable, "-m", "dllreg", "list", "--path", site.name],
                          capture_output=True, text=True, cwd=site.parent)
    assert "qsum" in proc.stdout and "system" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "dllreg", "list", "--path", "nope"],
                          capture_output=True, text=True, cwd=site.parent)
    assert proc.returncode == 2 and proc.stderr == "error: --path nope: not a directory\n"


def test_check_names_a_dist_info_out_of_step(site: Path, libdir: Path) -> None:
    lib = str(libdir / "libqsum.so.3")
    for name in ("qsum", "other"):
        assert main(["register", "--name", name, "--version", "3.2", "--path", lib, "--site",
                     str(site)]) == 0
    shutil.rmtree(site / "dllreg.libs" / "qsum.system")  # what a killed unregister leaves
    shutil.rmtree(site / "dllreg_lib_other-3.2.dist-info")  # what a killed register leaves
    rc, out, _ = dllreg("check", "--path", str(site))
    assert rc == 0  # the registry itself is consistent, and the next writer heals pip's view
    assert (f"warning: library qsum: pip sees dllreg-lib-qsum 3.2 in {site}, but nothing is "
            "registered there") in out
    assert "fix: python -m dllreg unregister --name qsum" in out
    assert (f"warning: library other: registered in {site}, but pip sees no dllreg-lib-other "
            "there") in out
    assert main(["unregister", "--name", "qsum", "--site", str(site)]) == 0  # heals both
    assert dllreg("check", "--path", str(site))[1].endswith("1 libraries, 0 consumers: OK\n")
