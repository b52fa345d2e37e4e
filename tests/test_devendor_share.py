"""Sharing across builds: one copy of a library serves other wheels' copies only when it provably
can (exports and version nodes cover what their users import, never older); the pure choice over
VendoredLib facts, then gcc-built wheels through devendor, pip and a real import."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from conftest import Venv, gcc_shared, has_gcc, run
from dllreg.cli.main import main
from dllreg.convert.analyse import VendoredLib
from dllreg.convert.plan import plan_devendor
from dllreg.convert.read import read_input_wheel
from dllreg.convert.share import Copy, choose_servers, gaps
from dllreg.recipes.schema import load_recipes
from test_devendor import EXT_SUFFIX, PY, platform_tag, write_wheel

needs_gcc = pytest.mark.skipif(not has_gcc() or sys.platform != "linux", reason="needs gcc on Linux")


def lib(member: str, build: str, string: str | None, provides: set[tuple[str, str | None]],
        wanted: set[tuple[str, str | None]], nodes: frozenset[str] = frozenset(),
        wanted_nodes: frozenset[str] = frozenset(), runtime: str = "libcrypto-00000000.so.3") -> VendoredLib:
    upstream = {"file": "3", **({"string": string} if string else {})}
    return VendoredLib(member, member, runtime, "elf", "x86_64", 1, build, frozenset(s for s, _ in provides),
                       (), ("user",), frozenset(s for s, _ in wanted), "", build,
                       tuple(sorted(upstream.items())), nodes, frozenset(provides), frozenset(wanted),
                       wanted_nodes)


def test_the_newest_covering_copy_serves_and_nothing_is_downgraded() -> None:
    both = {("EVP_new", "OPENSSL_3.0.0"), ("EVP_x", "OPENSSL_3.5.0")}
    old = lib("a.libs/libcrypto-1.so.3", "b1", "3.5.1", both, {("EVP_new", "OPENSSL_3.0.0")})
    new = lib("b.libs/libcrypto-2.so.3", "b2", "3.5.8", both, both)
    served, alone = choose_servers([Copy("a.whl", old), Copy("b.whl", new)])
    assert served[("a.whl", old.member)].by == ("b.whl", new.member)  # 3.5.8 serves the 3.5.1 users
    assert "3.5.8 >= 3.5.1 by string version" in served[("a.whl", old.member)].reason
    assert ("b.whl", new.member) not in served and not alone  # 3.5.1 never stands in for 3.5.8
    assert gaps(old, new) == "is not provably as new (3.5.1 < 3.5.8 (by string version))"


def test_a_newer_version_node_outranks_an_older_version_string() -> None:
    """pillow's libtiff tells 4.7.2 only by its version node, pyproj's 4.5.1 by a string too."""
    syms = {("TIFFOpen", "LIBTIFF_4.0")}
    pillow = dataclasses.replace(lib("pillow", "b1", None, syms, syms),
                                 upstream=(("file", "6.3.0"), ("node", "4.7.2")))
    pyproj = dataclasses.replace(lib("pyproj", "b2", None, syms, syms),
                                 upstream=(("file", "6.0.0"), ("node", "4.5"), ("string", "4.5.1")))
    served, _ = choose_servers([Copy("pyproj.whl", pyproj), Copy("pillow.whl", pillow)])
    assert served[("pyproj.whl", "pyproj")].by == ("pillow.whl", "pillow")
    assert "4.7.2 >= 4.5 by node version" in served[("pyproj.whl", "pyproj")].reason


def test_users_that_check_the_release_are_served_by_the_same_release_only() -> None:
    """h5py imports H5check_version and H5get_libversion: netCDF4's HDF5 2.2.0 must not serve
    its 2.0.0 (h5py warns and reports another HDF5); the same release still shares."""
    syms = {("H5Fopen", None), ("H5check_version", None), ("H5get_libversion", None)}
    h5py = dataclasses.replace(lib("h5py.libs/libhdf5-1.so.320", "b1", "2.0.0", syms, syms),
                               runtime="libhdf5-00000000.so.320")
    netcdf = dataclasses.replace(lib("netCDF4.libs/libhdf5-2.so.320", "b2", "2.2.0", syms, syms),
                                 runtime="libhdf5-00000001.so.320")
    served, alone = choose_servers([Copy("h5py.whl", h5py), Copy("netCDF4.whl", netcdf)])
    assert not served
    assert alone[("h5py.whl", h5py.member)] == (
        "the copy in netCDF4.whl is release 2.2.0 (by string version), and its users check the release "
        "they were built with (H5check_version, H5get_libversion), 2.0.0 (by string version)")
    # the real wheels carry no HDF5 version string: the file names' numbers tell the releases apart
    by_file = [dataclasses.replace(c, upstream=(("file", f),))
               for c, f in ((h5py, "320.0.0"), (netcdf, "320.2.0"))]
    assert "is release 320.2.0 (by file version)" in (gaps(by_file[1], by_file[0]) or "")
    same = dataclasses.replace(netcdf, upstream=h5py.upstream)  # another build of the same release
    served, _ = choose_servers([Copy("h5py.whl", h5py), Copy("netCDF4.whl", same)])
    assert list(served) == [("netCDF4.whl", same.member)] or list(served) == [("h5py.whl", h5py.member)]
    # users that do not check the release are served by the newer one, as before
    plain = {("H5Fopen", None)}
    served, _ = choose_servers([Copy("h5py.whl", dataclasses.replace(h5py, wanted=frozenset(plain))),
                                Copy("netCDF4.whl", netcdf)])
    assert served[("h5py.whl", h5py.member)].by == ("netCDF4.whl", netcdf.member)


def test_a_server_whose_own_needs_differ_from_the_copys_does_not_serve() -> None:
    """h5py's libhdf5_hl may not be served by netCDF4's when netCDF4's libhdf5 does not serve
    h5py's libhdf5: h5py would run two HDF5 libraries."""
    syms = {("H5Fopen", None), ("H5get_libversion", None)}
    hl_syms = {("H5DSattach_scale", None)}

    def pair(wheel: str, n: str, release: str) -> tuple[VendoredLib, VendoredLib]:
        core = dataclasses.replace(lib(f"{wheel}.libs/libhdf5-{n}.so.320", "c" + n, release, syms, syms),
                                   runtime=f"libhdf5-0000000{n}.so.320")
        hl = dataclasses.replace(lib(f"{wheel}.libs/libhdf5_hl-{n}.so.320", "h" + n, release, hl_syms,
                                     hl_syms),
                                 runtime=f"libhdf5_hl-0000000{n}.so.320", needs=(core.member,))
        return dataclasses.replace(core, users=("ext.so", hl.member)), hl

    h5, h5_hl = pair("h5py", "1", "2.0.0")
    nc, nc_hl = pair("netCDF4", "2", "2.2.0")
    copies = [Copy("h5py.whl", h5), Copy("h5py.whl", h5_hl), Copy("netCDF4.whl", nc),
              Copy("netCDF4.whl", nc_hl)]
    served, alone = choose_servers(copies)
    assert not served  # the core checks its release, so the hl library may not move either
    assert "needs its own libhdf5-2.so.320, which does not serve this copy's libhdf5-1.so.320" in (
        alone[("h5py.whl", h5_hl.member)])
    # without the release check both move together
    free = [dataclasses.replace(c, wanted=frozenset({("H5Fopen", None)})) if "hdf5-" in c.member else c
            for c in (h5, h5_hl, nc, nc_hl)]
    served, _ = choose_servers([Copy(w, c) for w, c in zip(["h5py.whl"] * 2 + ["netCDF4.whl"] * 2, free)])
    assert {k[1] for k in served} == {h5.member, h5_hl.member}
    # a need only the served copy used goes with it (scipy's libquadmath behind its libgfortran)
    alone_core = dataclasses.replace(h5, users=(h5_hl.member,))
    served, _ = choose_servers([Copy("h5py.whl", alone_core), Copy("h5py.whl", h5_hl),
                                Copy("netCDF4.whl", nc), Copy("netCDF4.whl", nc_hl)])
    assert served[("h5py.whl", h5_hl.member)].by == ("netCDF4.whl", nc_hl.member)


def test_coverage_counts_symbol_versions_and_version_nodes() -> None:
    server = lib("b", "b2", "3.6.0", {("f", "V_1"), ("g", None)}, set(), frozenset({"V_1"}))
    assert gaps(server, lib("a", "b1", "3.5.0", set(), {("f", "V_1"), ("g", None)})) is None
    # the same symbol at another version node is another symbol
    assert "f@V_2" in str(gaps(server, lib("a", "b1", "3.5.0", set(), {("f", "V_2")})))
    # glibc refuses a provider without a required node, even with every symbol
    why = gaps(server, lib("a", "b1", "3.5.0", set(), {("g", None)}, wanted_nodes=frozenset({"V_9"})))
    assert why == "does not define the version node(s) its users require: V_9"
    # the same build always serves, whatever was read
    assert gaps(server, lib("a", "b2", None, set(), {("h", None)})) is None


def test_copies_no_one_covers_stay_on_their_own_with_the_reason() -> None:
    a = lib("a", "b1", "3.5.1", {("only_a", None)}, {("only_a", None)})
    b = lib("b", "b2", "3.5.8", {("only_b", None)}, {("only_b", None)})
    served, alone = choose_servers([Copy("a.whl", a), Copy("b.whl", b)])
    assert served == {}
    assert "does not export 1 symbol(s) its users import: only_a" in alone[("a.whl", "a")]
    # different ABI majors are different families: never compared
    c = lib("c", "b3", "1.1.1", {("only_a", None)}, {("only_a", None)}, runtime="libcrypto-00000000.so.1.1")
    assert choose_servers([Copy("b.whl", b), Copy("c.whl", c)]) == ({}, {})
    # a banned copy (not packaged as itself) serves nobody, but can still be served
    served, _ = choose_servers([Copy("a.whl", a), Copy("b.whl", b), Copy("d.whl", a)],
                               banned={("a.whl", "a")})
    assert ("d.whl", "a") not in served


# --- real binaries ------------------------------------------------------------------------------

COL = 'const char* col_version(void){{return "libcol version {v}";}}\nint col_base(void){{return {n};}}\n'
EXT_C = """\
#include <Python.h>
int {fn}(void);
static PyObject* call(PyObject* s, PyObject* a){{ return PyLong_FromLong({fn}()); }}
static PyMethodDef M[] = {{{{"call", call, METH_NOARGS, 0}}, {{0}}}};
static struct PyModuleDef D = {{PyModuleDef_HEAD_INIT, "_ext", 0, -1, M}};
PyMODINIT_FUNC PyInit__ext(void){{ return PyModule_Create(&D); }}
"""


def col_wheel(tmp: Path, dist: str, version: str, code: str, uses: str, mangle: str) -> Path:
    import sysconfig

    build = tmp / f"build-{dist}"
    mangled = f"libcol-{mangle}.so.1"
    gcc_shared(build / mangled, COL.format(v=version, n=10) + code, mangled)
    (build / "ext.c").write_text(EXT_C.format(fn=uses))
    ext = build / f"_ext{EXT_SUFFIX}"
    run(["gcc", "-shared", "-fPIC", f"-I{sysconfig.get_paths()['include']}", "-o", str(ext),
         str(build / "ext.c"), f"-L{build}", f"-l:{mangled}",
         f"-Wl,--disable-new-dtags,-rpath,$ORIGIN/../{dist}.libs"])
    return write_wheel(tmp / "in" / f"{dist}-1.0-{PY}-{PY}-{platform_tag()}.whl", {
        f"{dist}/__init__.py": b"from ._ext import call\n", f"{dist}/_ext{EXT_SUFFIX}": ext.read_bytes(),
        f"{dist}.libs/{mangled}": (build / mangled).read_bytes()})


@needs_gcc
def test_real_newer_build_serves_the_older_and_all_import(tmp_path: Path, make_venv: object) -> None:
    old = col_wheel(tmp_path, "pkgold", "1.2.0", "", "col_base", "11111111")
    new = col_wheel(tmp_path, "pkgnew", "1.3.0", "int col_more(void){return 32;}\n", "col_more", "22222222")
    narrow = col_wheel(tmp_path, "pkgnarrow", "1.4.0", "int col_other(void){return 5;}\n", "col_other",
                       "33333333")
    (tmp_path / "no-recipes").mkdir()
    book = load_recipes(tmp_path / "no-recipes")
    inputs = [read_input_wheel(w) for w in (old, new)]
    plan = plan_devendor(inputs, book)
    (d_old,), (d_new,) = (p.decisions for p in plan.wheels)
    assert d_old.served_by == f"{new.name}: pkgnew.libs/libcol-22222222.so.1"
    assert "1.3.0 >= 1.2.0 by string version" in d_old.reason
    assert (d_old.library, d_old.runtime) == (d_new.library, d_new.runtime) and d_new.served_by is None
    assert d_new.version == "1.3.0" and len(plan.libraries) == 1
    # in the other input order the newer copy still serves: never a downgrade
    (d_new2,), (d_old2,) = (p.decisions for p in plan_devendor(inputs[::-1], book).wheels)
    assert d_new2.served_by is None and d_old2.served_by == d_old.served_by
    # 1.4.0 lacks col_more: it cannot serve pkgnew, which stays its own library, but as the
    # newest copy with col_base it serves pkgold
    three = plan_devendor([*inputs, read_input_wheel(narrow)], book)
    (d_old3,), (d_new3,), (d_narrow,) = (p.decisions for p in three.wheels)
    assert d_narrow.served_by is None and d_new3.served_by is None and len(three.libraries) == 2
    assert d_old3.served_by == f"{narrow.name}: pkgnarrow.libs/libcol-33333333.so.1"
    assert "does not export 1 symbol(s) its users import: col_more" in d_new3.reason

    out = tmp_path / "out"
    assert main(["devendor", str(old), str(new), str(narrow), "-o", str(out),
                 "--recipes", str(tmp_path / "no-recipes")]) == 0
    venv = make_venv("venv")  # type: ignore[operator]
    assert isinstance(venv, Venv)
    venv.pip("install", "-q", "--no-index", "--find-links", str(out), "pkgold", "pkgnew", "pkgnarrow")
    got = venv.py("import pkgold, pkgnew, pkgnarrow\nprint(pkgold.call(), pkgnew.call(), pkgnarrow.call())\n"
                  "import json; print(json.dumps(sorted({l.split()[-1].split('dllreg.libs/')[1] "
                  "for l in open('/proc/self/maps') if 'libcol' in l})))").stdout.splitlines()
    assert got[0] == "10 32 5"
    maps = json.loads(got[1])
    assert len(maps) == 2 and all(m.split("/")[0].startswith("col-1-") for m in maps)


# --- cycles -------------------------------------------------------------------------------------


def test_cycles_are_the_strongly_connected_groups() -> None:
    from dllreg.convert.analyse import cycles

    def node(member: str, *needs: str) -> VendoredLib:
        return dataclasses.replace(lib(member, member, None, set(), set()), needs=needs)

    libs = {k.member: k for k in (node("a", "b"), node("b", "a", "c"), node("c"), node("d", "e"),
                                  node("e", "f"), node("f", "d"), node("g", "g"))}
    assert cycles(libs, libs) == [("a", "b"), ("d", "e", "f")]  # c: no cycle; g: itself only
    assert cycles(libs, {"a", "c"}) == []  # only among the given members


RING_A = "int ring_b(int);\nint ring_a(int n){return n <= 0 ? 1 : 2 * ring_b(n - 1);}\n"
RING_B = "int ring_a(int);\nint ring_b(int n){return n <= 0 ? 1 : 3 * ring_a(n - 1);}\n"


def ring_wheel(tmp: Path) -> Path:
    """liba and libb need each other (DT_NEEDED both ways, RPATH $ORIGIN as auditwheel writes it),
    as pillow's freetype and harfbuzz do; the extension calls ring_a."""
    import sysconfig

    build = tmp / "ring"
    a, b = "libringa-1a1a1a1a.so.1", "libringb-2b2b2b2b.so.2"
    gcc_shared(build / a, "int ring_a(int n){return n;}\n", a)  # a first draft to link b against
    rpath = "-Wl,--disable-new-dtags,-rpath,$ORIGIN"
    gcc_shared(build / b, RING_B, b, f"-L{build}", f"-l:{a}", rpath)
    gcc_shared(build / a, RING_A, a, f"-L{build}", f"-l:{b}", rpath)
    (build / "ext.c").write_text(EXT_C.format(fn="ring4").replace("int ring4(void);",
                                 "int ring_a(int);\nstatic int ring4(void){ return ring_a(4); }"))
    ext = build / f"_ext{EXT_SUFFIX}"
    run(["gcc", "-shared", "-fPIC", f"-I{sysconfig.get_paths()['include']}", "-o", str(ext),
         str(build / "ext.c"), f"-L{build}", f"-l:{a}",
         "-Wl,--disable-new-dtags,-rpath,$ORIGIN/../pkgr.libs"])
    return write_wheel(tmp / "in" / f"pkgr-1.0-{PY}-{PY}-{platform_tag()}.whl", {
        "pkgr/__init__.py": b"from ._ext import call\n", f"pkgr/_ext{EXT_SUFFIX}": ext.read_bytes(),
        f"pkgr.libs/{a}": (build / a).read_bytes(), f"pkgr.libs/{b}": (build / b).read_bytes()})


@needs_gcc
def test_real_cycle_is_one_library_that_loads(tmp_path: Path, make_venv: object) -> None:
    wheel = ring_wheel(tmp_path)
    (tmp_path / "no-recipes").mkdir()
    plan = plan_devendor([read_input_wheel(wheel)], load_recipes(tmp_path / "no-recipes"))
    (nl,) = plan.libraries
    da, db = plan.wheels[0].decisions
    assert da.library == db.library == nl.name and nl.name.startswith("ringa-1-")
    assert {nl.runtime, *(r for _, r, _ in nl.group)} == {da.runtime, db.runtime}
    assert "they need each other" in da.reason and not nl.requires  # not a requirement on itself
    out = tmp_path / "out"
    assert main(["devendor", str(wheel), "-o", str(out), "--recipes", str(tmp_path / "no-recipes")]) == 0
    venv = make_venv("venv")  # type: ignore[operator]
    assert isinstance(venv, Venv)
    venv.pip("install", "-q", "--no-index", "--find-links", str(out), "pkgr")
    got = venv.py("import json, pkgr\nprint(pkgr.call())\nprint(json.dumps(sorted({l.split()[-1] for l in "
                  "open('/proc/self/maps') if 'libring' in l})))").stdout.splitlines()
    assert got[0] == str(2 * 3 * 2 * 3 * 1)  # a(4) = 2 b(3) = 6 a(2) = 12 b(1) = 36 a(0)
    maps = json.loads(got[1])
    assert len(maps) == 2 and len({Path(m).parent for m in maps}) == 1
    assert all(f"/dllreg.libs/{nl.name}/lib/" in m for m in maps)


# --- real wheels ----------------------------------------------------------------------------------

realwheel = pytest.mark.skipif(sys.version_info[:2] != (3, 11) or sys.platform != "linux",
                               reason="cp311 manylinux wheels")


@pytest.mark.realwheels
@realwheel
def test_real_openssl_3_5_8_is_never_replaced_by_3_5_1() -> None:
    """psycopg2-binary ships OpenSSL 3.5.8, netCDF4 3.5.1; both are libcrypto.so.3 with the same
    version nodes. The newer one serves netCDF4's users; never the other way round."""
    from test_devendor_collisions import _psycopg2_wheel, stack_wheel

    netcdf = stack_wheel("netcdf4-1.7.5.1.post1-cp311-abi3-manylinux_2_28_x86_64.whl",
                         "netCDF4==1.7.5.1.post1", "manylinux_2_28_x86_64")
    inputs = [read_input_wheel(w) for w in (netcdf, _psycopg2_wheel(Path()))]
    for order in (inputs, inputs[::-1]):
        plan = plan_devendor(order, load_recipes())
        crypto = {p.wheel.filename.split("-")[0]: d for p in plan.wheels for d in p.decisions
                  if "/libcrypto-" in d.member}
        assert crypto["psycopg2_binary"].served_by is None and crypto["psycopg2_binary"].version == "3.5.8"
        assert crypto["netcdf4"].served_by is not None and "psycopg2_binary" in crypto["netcdf4"].served_by
        assert "3.5.8 >= 3.5.1 by string version" in crypto["netcdf4"].reason
        assert crypto["netcdf4"].library == crypto["psycopg2_binary"].library


@pytest.mark.realwheels
@realwheel
def test_real_pillow_with_its_freetype_harfbuzz_cycle_imports(tmp_path: Path, make_venv: object) -> None:
    from test_devendor_collisions import stack_wheel

    pillow = stack_wheel("pillow-13.0.0-cp311-cp311-manylinux*x86_64*.whl", "pillow==13.0.0",
                         "manylinux_2_28_x86_64")
    out = tmp_path / "out"
    assert main(["devendor", str(pillow), "-o", str(out)]) == 0
    venv = make_venv("venv")  # type: ignore[operator]
    assert isinstance(venv, Venv)
    venv.pip("install", "-q", "--no-index", "--find-links", str(out), "pillow")
    got = venv.py("""
        import io, json
        from PIL import Image, ImageDraw, ImageFont, features
        im = Image.new("RGB", (64, 32))
        ImageDraw.Draw(im).text((0, 0), "Hi", font=ImageFont.load_default(size=20))
        for f in ("PNG", "WEBP", "JPEG", "TIFF"):
            im.save(io.BytesIO(), f)
        maps = sorted({l.split()[-1] for l in open("/proc/self/maps") if "freetype" in l or "harfbuzz" in l})
        print(json.dumps([features.check("freetype2"), features.check("raqm"), im.getbbox() is not None,
                          maps]))
    """).stdout
    ft, raqm, drawn, maps = json.loads(got)
    assert ft and raqm and drawn
    assert len(maps) == 2 and len({Path(m).parent for m in maps}) == 1
    assert "/dllreg.libs/freetype-6-" in maps[0]


@needs_gcc
def test_a_malformed_build_note_is_one_clear_error(tmp_path: Path) -> None:
    """inspect reads a library fine, but its PT_NOTE (the build ID) is broken: one error naming
    the wheel and the member, nothing planned."""
    import struct
    import zipfile

    from dllreg.convert.read import DevendorError
    from test_devendor import vendored_wheel

    path = vendored_wheel(tmp_path)
    with zipfile.ZipFile(path) as z:  # the wheel again, with its library's note broken
        members = {n: z.read(n) for n in z.namelist() if ".dist-info/" not in n}
    name = next(n for n in members if n.startswith("pkga.libs/"))
    data = bytearray(members[name])
    phoff, phentsize, phnum = struct.unpack_from("<Q", data, 32)[0], *struct.unpack_from("<HH", data, 54)
    notes = [struct.unpack_from("<IIQ", data, phoff + i * phentsize) for i in range(phnum)]
    offset = next(off for kind, _, off in notes if kind == 4)  # PT_NOTE
    struct.pack_into("<I", data, offset + 4, 0x7FFFFFF0)  # descsz far beyond the file
    members[name] = bytes(data)
    path.unlink()
    broken = wheel = read_input_wheel(write_wheel(path, members))
    member = next(m for m in broken.members if m.name == name)
    (tmp_path / "no-recipes").mkdir()
    with pytest.raises(DevendorError, match=rf"{wheel.path}: member '{member.name}': cannot read its "
                                            r"symbol versions or build identity"):
        plan_devendor([broken], load_recipes(tmp_path / "no-recipes"))


def test_install_reports_each_replacement() -> None:
    from dllreg.convert.install import wheel_lines
    from dllreg.convert.plan import Decision, WheelPlan
    from dllreg.convert.read import InputWheel

    served = Decision("a.libs/libcol-1.so.1", "package",
                      "replaced by the copy in b.whl (libcol-2.so.1, 1.3.0 >= 1.2.0 by string version): ...",
                      10, "col-1-x", "1.3.0", "libcol-x.so.1", "b.whl: b.libs/libcol")
    same = Decision("a.libs/libz-1.so.1", "package",
                    "identical to the copy in b.whl (the same build): one library wheel",
                    10, "z-1-y", "1.3", "libz-y.so.1", "b.whl: b.libs/libz")
    wp = WheelPlan(InputWheel("a.whl", "a-1.0-py3-none-linux_x86_64.whl", ()), "auditwheel",
                   (served, same), ("a.libs/libcol-1.so.1",), (), (), None, (), ())
    lines = wheel_lines(wp)
    # the replacement is named; the identical build is not news
    assert lines[1] == f"    shared libcol-1.so.1: {served.reason}" and len(lines) == 2
