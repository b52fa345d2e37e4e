"""devendor on delocate-repaired macOS wheels: set_install_name, the code-signature facts, the
naming rule for dylibs, a hand-built delocate wheel and the real scipy arm64 wheel (structural
checks only: there is no Mac here to load the results)."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import pytest

from dllreg.binary.macho import MachOError, read_macho
from dllreg.binary.machopatch import code_signed, content_digest, set_install_name
from dllreg.cli.main import main
from dllreg.convert.macos import NO_SUBSTITUTE, identity
from dllreg.convert.plan import plan_devendor
from dllreg.convert.read import read_input_wheel, read_library_wheel
from dllreg.convert.write import build_outputs, write_outputs
from dllreg.env.inspect import inspect_path
from dllreg.libwheel.package import Source as LibSource
from dllreg.libwheel.package import SourceFile, plan_library, write_library_wheel
from dllreg.recipes.schema import load_recipes
from dllreg.wheelfile import WheelWriter
from test_binary_rename import commands_end, image
from test_macho import (
    CPU_ARM64,
    CPU_X86_64,
    LC_ID_DYLIB,
    LC_LOAD_DYLIB,
    MH_BUNDLE,
    build_fat,
    build_macho,
    dylib,
    rpath,
)

LC_CODE_SIGNATURE = 0x1D
SYSTEM = "/usr/lib/libSystem.B.dylib"
DOWNLOADS = Path(__file__).resolve().parent.parent / ".cache" / "downloads"
SCIPY_MAC = "scipy-1.17.1-cp311-cp311-macosx_14_0_arm64.whl"
TAG = "cp311-cp311-macosx_11_0_arm64"
ARM = {"cputype": CPU_ARM64, "subtype": 0}


def signature(offset: int, size: int) -> tuple[int, str, tuple[int, ...], bytes]:
    return (LC_CODE_SIGNATURE, "2I", (offset, size), b"")


def signed_image(commands: list[tuple[int, str, tuple[int, ...], bytes]], pad: int = 256,
                 **kw: int) -> bytes:
    """``image`` plus an LC_CODE_SIGNATURE over 16 bytes appended at the end (as ld puts it)."""
    size = len(image([*commands, signature(0, 16)], pad, **kw))
    return image([*commands, signature(size, 16)], pad, **kw) + b"\xfa\xde\x0c\xc0" * 4


# --- set_install_name and the signature facts ---------------------------------------------------


def test_install_name_in_place_when_it_fits() -> None:
    data = image([dylib(LC_ID_DYLIB, "/DLC/pkg/.dylibs/libfoo.1.dylib"), dylib(LC_LOAD_DYLIB, SYSTEM)], 0)
    out = set_install_name(data, "@rpath/libfoo.1.dylib")
    assert read_macho(out).arches[0].install_name == "@rpath/libfoo.1.dylib"
    assert len(out) == len(data) and commands_end(out) == commands_end(data)
    assert set_install_name(out, "@rpath/libfoo.1.dylib") == out  # unchanged: equal bytes


def test_install_name_grows_into_the_header_padding() -> None:
    data = image([dylib(LC_ID_DYLIB, "libfoo.dylib"), dylib(LC_LOAD_DYLIB, SYSTEM)], 128)
    new = "@rpath/a/much/longer/install/name/libfoo.1.dylib"
    out = set_install_name(data, new)
    arch = read_macho(out).arches[0]
    assert (arch.install_name, arch.needed) == (new, (SYSTEM,))
    assert len(out) == len(data) and out[-16:] == data[-16:]  # the section did not move
    assert commands_end(data) < commands_end(out) and struct.unpack_from("<I", out, 20)[0] % 8 == 0


def test_install_name_fat_and_32bit() -> None:
    commands = [dylib(LC_ID_DYLIB, "/DLC/x/libfoo.dylib"), dylib(LC_LOAD_DYLIB, SYSTEM)]
    fat = build_fat([(CPU_X86_64, 3, image(commands, 128)), (CPU_ARM64, 0, image(commands, 128, **ARM))])
    out = set_install_name(fat, "@rpath/libfoo-with-a-longer-name.dylib")
    assert len(out) == len(fat)
    assert [a.install_name for a in read_macho(out).arches] == ["@rpath/libfoo-with-a-longer-name.dylib"] * 2
    thin32 = build_macho(commands, bits=32, cputype=7, tail=bytes(128))
    out = set_install_name(thin32, "@rpath/libfoo-with-a-longer-name.dylib")
    assert read_macho(out).arches[0].install_name == "@rpath/libfoo-with-a-longer-name.dylib"


@pytest.mark.parametrize("commands,pad,new,message", [
    ([dylib(LC_LOAD_DYLIB, SYSTEM)], 64, "@rpath/x.dylib", "0 LC_ID_DYLIB commands"),
    ([dylib(LC_ID_DYLIB, "a.dylib"), dylib(LC_ID_DYLIB, "b.dylib")], 64, "@rpath/x.dylib", "2 LC_ID_DYLIB"),
    ([dylib(LC_ID_DYLIB, "a.dylib")], 0, "@rpath/" + "x" * 40 + ".dylib", "headerpad_max_install_names"),
    ([dylib(LC_ID_DYLIB, "a.dylib")], 64, "", "not a dylib name"),
], ids=["no-id", "two-ids", "no-padding", "empty"])
def test_install_name_refused(commands: list[tuple[int, str, tuple[int, ...], bytes]], pad: int, new: str,
                              message: str) -> None:
    with pytest.raises(MachOError, match=message):
        set_install_name(image(commands, pad), new)


def test_code_signature_and_content_digest() -> None:
    commands = [dylib(LC_ID_DYLIB, "/DLC/pkg/.dylibs/libfoo.1.dylib"), dylib(LC_LOAD_DYLIB, SYSTEM)]
    plain, signed = image(commands, 256), signed_image(commands)
    assert not code_signed(plain) and code_signed(signed)
    assert code_signed(build_fat([(CPU_X86_64, 3, plain), (CPU_ARM64, 0, signed_image(commands, **ARM))]))
    # One build whatever delocate named it (load commands, padding and signature left out) ...
    other = signed_image([dylib(LC_ID_DYLIB, "/DLC/otherpkg/.dylibs/libfoo.1.dylib"),
                          dylib(LC_LOAD_DYLIB, SYSTEM)])
    renamed = set_install_name(signed, "@rpath/libfoo.1.dylib")
    assert content_digest(signed) == content_digest(other) == content_digest(renamed)
    # ... but any change to its code is another build.
    assert content_digest(signed[:-20] + b"\xc4" + signed[-19:]) != content_digest(signed)


@pytest.mark.parametrize("filename,name,release", [
    ("libgfortran.5.dylib", "gfortran", "5"),
    ("libgcc_s.1.1.dylib", "gcc-s", "1.1"),
    ("libquadmath.0.dylib", "quadmath", "0"),
    ("libomp.dylib", "omp", "0"),
    ("libfoo-1a2b3c4d.2.dylib", "foo", "2"),
])
def test_dylib_naming_rule(filename: str, name: str, release: str) -> None:
    assert identity(filename, "0123456789abcdef") == (name, f"{release}+h01234567")


# --- a hand-built delocate wheel ----------------------------------------------------------------

FOO = "libfoo.1.dylib"
BAR = "libbar.2.dylib"


def delocate_wheel(tmp: Path, dist: str = "pkg") -> Path:
    """pkg/_ext (a bundle) loads @loader_path/.dylibs/libfoo.1.dylib with an rpath into .dylibs;
    libfoo loads libbar by @loader_path; both carry delocate's /DLC install names and signatures."""
    dylibs = f"{dist}/.dylibs"
    foo = signed_image([dylib(LC_ID_DYLIB, f"/DLC/{dylibs}/{FOO}"),
                        dylib(LC_LOAD_DYLIB, f"@loader_path/{BAR}"), rpath("@loader_path"),
                        dylib(LC_LOAD_DYLIB, SYSTEM)], **ARM)
    bar = signed_image([dylib(LC_ID_DYLIB, f"/DLC/{dylibs}/{BAR}"), dylib(LC_LOAD_DYLIB, SYSTEM)], **ARM)
    ext = signed_image([dylib(LC_LOAD_DYLIB, f"@loader_path/.dylibs/{FOO}"), rpath("@loader_path/.dylibs"),
                        rpath("/opt/build/lib"), dylib(LC_LOAD_DYLIB, SYSTEM)], filetype=MH_BUNDLE, **ARM)
    # the other forms a load of a vendored copy takes: @rpath with an rpath into .dylibs, and
    # delocate's /DLC install name itself
    by_rpath = signed_image([dylib(LC_LOAD_DYLIB, f"@rpath/{FOO}"), rpath("@loader_path/../.dylibs")],
                            filetype=MH_BUNDLE, **ARM)
    by_id = signed_image([dylib(LC_LOAD_DYLIB, f"/DLC/{dylibs}/{BAR}")], filetype=MH_BUNDLE, **ARM)
    members = {f"{dist}/__init__.py": b"from ._ext import call\n", f"{dist}/_ext.cpython-311-darwin.so": ext,
               f"{dist}/sub/__init__.py": b"", f"{dist}/sub/_rp.cpython-311-darwin.so": by_rpath,
               f"{dist}/sub/_id.cpython-311-darwin.so": by_id, f"{dylibs}/{FOO}": foo, f"{dylibs}/{BAR}": bar}
    dist_info = f"{dist}-1.0.dist-info"
    members[f"{dist_info}/METADATA"] = f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n".encode()
    members[f"{dist_info}/WHEEL"] = f"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: {TAG}\n".encode()
    path = tmp / "in" / f"{dist}-1.0-{TAG}.whl"
    with WheelWriter(path, dist_info) as w:
        for n, d in members.items():
            w.add(n, d)
    return path


def test_delocate_wheel_devendored(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wheel = delocate_wheel(tmp_path)
    out = tmp_path / "out"
    assert main(["devendor", str(wheel), "-o", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (w,) = doc["wheels"]
    assert w["status"] == "devendored" and w["bytes_after"] == 0
    got = {d["member"].rsplit("/", 1)[1]: (d["action"], d["library"], d["runtime"]) for d in w["libraries"]}
    # the naming rule: stem, ABI major and build tag, never an install name another copy may carry
    foo_lib, bar_lib = got[FOO][1], got[BAR][1]
    new_foo, new_bar = f"libfoo-{foo_lib[-8:]}.1.dylib", f"libbar-{bar_lib[-8:]}.2.dylib"
    assert got == {FOO: ("package", foo_lib, f"@rpath/{new_foo}"),
                   BAR: ("package", bar_lib, f"@rpath/{new_bar}")}
    assert foo_lib.startswith("foo-1-") and bar_lib.startswith("bar-2-")
    assert all(d["reason"] == NO_SUBSTITUTE for d in w["libraries"])
    assert [r.split("==")[0] for r in w["requires"]] == [bar_lib, foo_lib]
    notes = " | ".join(w["notes"])
    assert "code signature invalidated in 3 Mach-O binaries (pkg/_ext.cpython-311-darwin.so, " in notes
    assert notes.count("codesign -s - -f") == 3  # the extensions, then libfoo and libbar
    with zipfile.ZipFile(out / wheel.name) as z:
        assert not any("/.dylibs/" in n for n in z.namelist())
        ext, by_rpath, by_id = (read_macho(z.read(f"pkg/{n}.cpython-311-darwin.so")).arches[0]
                                for n in ("_ext", "sub/_rp", "sub/_id"))
    assert ext.needed == (f"@rpath/{new_foo}", SYSTEM)
    assert ext.rpaths == ("/opt/build/lib",)  # only the rpath into .dylibs goes
    assert (by_rpath.needed, by_rpath.rpaths) == ((f"@rpath/{new_foo}",), ())
    assert (by_id.needed, by_id.rpaths) == ((f"@rpath/{new_bar}",), ())
    read_input_wheel(out / wheel.name)  # a valid RECORD
    libs = {lw["name"]: read_library_wheel(Path(lw["path"])) for lw in doc["library_wheels"]}
    assert set(libs) == {foo_lib, bar_lib}
    (foo,) = libs[foo_lib].manifest.libraries
    assert (foo.path, foo.soname, foo.needed) == (f"lib/{new_foo}", f"@rpath/{new_foo}",
                                                  (f"@rpath/{new_bar}", SYSTEM))
    assert [r.name for r in libs[foo_lib].manifest.requires] == [bar_lib]
    with zipfile.ZipFile(libs[foo_lib].path) as z:
        info = read_macho(z.read(f"dllreg.libs/{foo_lib}/lib/{new_foo}")).arches[0]
    assert (info.install_name, info.rpaths) == (f"@rpath/{new_foo}", ())  # every rpath goes


def test_a_matching_registry_library_is_not_substituted(tmp_path: Path) -> None:
    """Without an export-trie reader the safety rule cannot hold: no macOS substitution."""
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "foo.toml").write_text(
        'name = "foo"\ndepurl = "dep:generic/foo"\nsummary = "s"\nlicense = "MIT"\nconda-forge = []\n'
        'debian = []\n[abi]\nsymbols = ["foo"]\n[abi.macos]\nruntime-names = ["libfoo.1.dylib"]\n'
        'vendored-names = ["libfoo.1.dylib"]\n')
    book = load_recipes(recipes)
    lib = image([dylib(LC_ID_DYLIB, f"@rpath/{FOO}"), dylib(LC_LOAD_DYLIB, SYSTEM)], 64, **ARM)
    src = LibSource("test", (SourceFile(f"lib/{FOO}", lib),), "macosx_11_0_arm64")
    available = read_library_wheel(write_library_wheel(plan_library(src, "foo", "1.2"), tmp_path / "libs"))
    wheel = read_input_wheel(delocate_wheel(tmp_path))
    plan = plan_devendor([wheel], book, [available])
    (wp,) = plan.wheels
    foo = next(d for d in wp.decisions if d.member.endswith(FOO))
    # the recipe (no source) vouches for the name; still never substituted
    assert (foo.action, foo.library, foo.reason) == ("package", "foo", NO_SUBSTITUTE)
    assert plan.substitutes == () and plan.missing == ()


def test_two_wheels_share_one_library_wheel_per_build(tmp_path: Path) -> None:
    """delocate writes each package's name into its copies' install names; the copies are still
    one build and become one library wheel."""
    a, b = (read_input_wheel(delocate_wheel(tmp_path / d, d)) for d in ("pkga", "pkgb"))
    assert a.data()[f"pkga/.dylibs/{FOO}"] != b.data()[f"pkgb/.dylibs/{FOO}"]
    plan = plan_devendor([a, b], load_recipes(None), [])
    assert sorted(lib.name.split("-")[0] for lib in plan.libraries) == ["bar", "foo"]
    assert [str(r) for r in plan.wheels[0].requires] == [str(r) for r in plan.wheels[1].requires]
    assert all(lib.users == (a.filename, b.filename) for lib in plan.libraries if lib.name.startswith("foo"))
    written = write_outputs(build_outputs(plan), tmp_path / "out")
    assert len(written.libraries) == 2 and len(written.consumers) == 2


# --- the real scipy arm64 wheel -----------------------------------------------------------------


@pytest.mark.realwheels
def test_real_scipy_arm64_devendored(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    if not (DOWNLOADS / SCIPY_MAC).is_file():
        pytest.skip(f"needs the cached {SCIPY_MAC} (tests/test_macho.py downloads it)")
    out = tmp_path / "out"
    assert main(["devendor", str(DOWNLOADS / SCIPY_MAC), "-o", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (w,) = doc["wheels"]
    assert w["status"] == "devendored" and w["bytes_after"] == 0 and w["bytes_before"] > 2_000_000
    assert any("code signature invalidated in 3 Mach-O binaries" in n for n in w["notes"])
    install_names, needed = {}, {}
    for lw in doc["library_wheels"]:
        lib = read_library_wheel(Path(lw["path"]))
        (f,) = lib.manifest.libraries
        with zipfile.ZipFile(lib.path) as z:
            info = read_macho(z.read(f"dllreg.libs/{lib.name}/{f.path}")).arches[0]
        assert info.install_name == f.soname == lw["runtime"] == "@rpath/" + f.path.rsplit("/", 1)[1]
        assert info.rpaths == () and not any(".dylibs" in n for n in info.needed)
        install_names[lib.name] = f.soname
        needed[lib.name] = info.needed
    # gfortran and quadmath: their recipes (no PyPI source) vouch for the plain names; libgcc_s
    # has no recipe and gets the naming rule's
    (gcc_s,) = set(install_names) - {"gfortran", "quadmath"}
    assert gcc_s.startswith("gcc-s-1-")
    assert install_names == {"gfortran": "@rpath/libgfortran.5.dylib",
                             "quadmath": "@rpath/libquadmath.0.dylib",
                             gcc_s: f"@rpath/libgcc_s-{gcc_s[-8:]}.1.1.dylib"}
    registry_names = set(install_names.values())
    # libgfortran loads its companions by their new install names, as the stub preloads them
    assert set(needed["gfortran"]) - {SYSTEM} == {install_names["quadmath"], install_names[gcc_s]}
    with zipfile.ZipFile(out / SCIPY_MAC) as z:
        names = z.namelist()
        assert not any("/.dylibs/" in n for n in names)
        patched = 0
        for n in (n for n in names if n.endswith(".so")):
            arch = read_macho(z.read(n)).arches[0]
            wanted = [x for x in arch.needed if not x.startswith(("/usr/lib/", "/System/"))]
            assert set(wanted) <= registry_names, (n, wanted)
            assert not any(".dylibs" in x for x in (*arch.needed, *arch.rpaths)), n
            patched += bool(wanted)
    assert patched == 3  # odr/__odrpack, interpolate/_fitpack and _dfitpack load libgfortran
    # `inspect`, with the library wheels installed on sys.path, finds each need in the registry
    site = tmp_path / "site"
    for lw in doc["library_wheels"]:
        with zipfile.ZipFile(lw["path"]) as z:
            z.extractall(site)
    monkeypatch.syspath_prepend(str(site))
    report = inspect_path(out / SCIPY_MAC)
    needs = {(n.name, n.category, n.library) for b in report.binaries for n in b.needs
             if not n.name.startswith(("/usr/lib/", "/System/"))}
    assert needs == {("@rpath/libgfortran.5.dylib", "registry", "gfortran")}
    assert report.wheel is not None and report.wheel.tool is None and not report.errors
    assert main(["inspect", str(out / SCIPY_MAC)]) == 0
    assert "3 x registry: @rpath/libgfortran.5.dylib [gfortran]" in capsys.readouterr().out
