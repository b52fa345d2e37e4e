"""Tests for dllreg.binary.elfpatch: gcc-built libraries patched and then loaded (readelf and
read_elf agree), hand-built images of every class and byte order, the build-time predicate,
and malformed input that may only ever raise ELFError."""

from __future__ import annotations

import contextlib
import random
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dllreg.binary.elf import ELFError, read_elf
from dllreg.binary.elfpatch import build_time_entry, drop_runpath, plan_runpath_edits
from test_elf import ARCHES, build_elf

needs_gcc = pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("readelf")),
                               reason="needs gcc and readelf")

BAR_C = "int bar(void) { return %d; }\n"
FOO_C = "int bar(void); int foo(int a) { return a * bar(); }\n"


def readelf_paths(path: Path) -> dict[str, str]:
    out = subprocess.run(["readelf", "-dW", str(path)], capture_output=True, text=True,
                         check=True, env={"LC_ALL": "C"}).stdout
    return dict(re.findall(r"\((RPATH|RUNPATH)\)\s+Library r(?:un)?path: \[(.*)\]", out))


def gcc(out: Path, code: str, *flags: str) -> Path:
    src = out.with_suffix(".c")
    src.write_text(code)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(out), str(src), *flags], check=True)
    return out


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """lib/libbar.so (bar() == 2) and a planted build-env/lib/libbar.so (bar() == 666)."""
    lib, planted = tmp_path / "lib", tmp_path / "build-env-xyz" / "lib"
    lib.mkdir()
    planted.mkdir(parents=True)
    gcc(lib / "libbar.so", BAR_C % 2, "-Wl,-soname,libbar.so")
    gcc(planted / "libbar.so", BAR_C % 666, "-Wl,-soname,libbar.so")
    return lib, planted


def foo_with(lib: Path, rpath: str, *flags: str) -> Path:
    return gcc(lib / "libfoo.so", FOO_C, f"-L{lib}", "-lbar", f"-Wl,-rpath,{rpath}", *flags)


def load_foo(path: Path) -> int:
    # A child process: the loader caches libbar.so by SONAME within one process.
    code = f"import ctypes; print(ctypes.CDLL({str(path)!r}).foo(10))"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, cwd="/").stdout)


def is_planted(planted: Path) -> Callable[[str], bool]:
    return lambda entry: entry == str(planted)


@needs_gcc
@pytest.mark.parametrize("tag,flags", [("RUNPATH", ()), ("RPATH", ("-Wl,--disable-new-dtags",))])
def test_keeps_origin_and_stops_the_planted_copy(tree: tuple[Path, Path], tag: str,
                                                 flags: tuple[str, ...]) -> None:
    lib, planted = tree
    foo = foo_with(lib, f"{planted}:$ORIGIN", *flags)
    assert readelf_paths(foo) == {tag: f"{planted}:$ORIGIN"}
    assert load_foo(foo) == 6660  # the planted copy wins before the patch
    before = foo.read_bytes()
    after = drop_runpath(before, is_planted(planted))
    assert after is not None and len(after) == len(before)
    foo.write_bytes(after)
    assert readelf_paths(foo) == {tag: "$ORIGIN"}
    info = read_elf(after)
    assert (info.runpath, info.rpath) == ((("$ORIGIN",), ()) if tag == "RUNPATH" else ((), ("$ORIGIN",)))
    assert load_foo(foo) == 20  # $ORIGIN's libbar


@needs_gcc
@pytest.mark.parametrize("tag,flags", [("RUNPATH", ()), ("RPATH", ("-Wl,--disable-new-dtags",))])
def test_last_entry_dropped_removes_the_tag(tree: tuple[Path, Path], tag: str,
                                            flags: tuple[str, ...]) -> None:
    lib, planted = tree
    foo = foo_with(lib, str(planted), *flags)
    before = foo.read_bytes()
    count = len(read_elf(before).needed)
    after = drop_runpath(before, is_planted(planted))
    assert after is not None and len(after) == len(before)
    foo.write_bytes(after)
    assert readelf_paths(foo) == {}
    info = read_elf(after)
    assert (info.rpath, info.runpath, len(info.needed)) == ((), (), count)
    dyn = subprocess.run(["readelf", "-dW", str(foo)], capture_output=True, text=True).stdout
    assert "Shared library: [libbar.so]" in dyn and "(NULL)" in dyn
    # No search path left: libbar.so is found only once loaded by absolute path (as the stub does).
    code = "import ctypes; ctypes.CDLL({!r}); print(ctypes.CDLL({!r}).foo(3))"
    r = subprocess.run([sys.executable, "-c", code.format(str(lib / "libbar.so"), str(foo))],
                       capture_output=True, text=True, check=True, cwd="/")
    assert r.stdout.strip() == "6"
    r = subprocess.run([sys.executable, "-c", f"import ctypes; ctypes.CDLL({str(foo)!r})"],
                       capture_output=True, text=True, cwd="/")
    assert r.returncode != 0 and "libbar.so: cannot open shared object file" in r.stderr


@needs_gcc
def test_interpreter_libdir_and_origin_kept_build_env_dropped(tree: tuple[Path, Path]) -> None:
    lib, planted = tree
    libdir = str(lib)  # stands in for the interpreter's libdir: it exists and is listed in keep
    foo = foo_with(lib, f"{planted}:{libdir}:$ORIGIN/../x:{lib}/dllreg.libs/q/lib")
    drop = lambda e: build_time_entry(e, keep=[libdir], build_roots=[str(planted.parent)])  # noqa: E731
    after = drop_runpath(foo.read_bytes(), drop)
    assert after is not None
    assert read_elf(after).runpath == (libdir, "$ORIGIN/../x")
    assert drop_runpath(after, drop) is None  # idempotent


@needs_gcc
def test_nothing_to_drop_is_none(tree: tuple[Path, Path]) -> None:
    lib, _ = tree
    assert drop_runpath((lib / "libbar.so").read_bytes(), lambda e: True) is None  # no RUNPATH
    foo = foo_with(lib, "$ORIGIN")
    assert drop_runpath(foo.read_bytes(), lambda e: False) is None
    assert plan_runpath_edits(foo.read_bytes(), lambda e: e != "$ORIGIN") == []


@pytest.mark.parametrize(("bits", "big", "machine", "name"), ARCHES)
def test_hand_built_every_class_and_byte_order(bits: int, big: bool, machine: int, name: str,
                                               tmp_path: Path) -> None:
    data = build_elf(bits=bits, big=big, machine=machine, hashing="sections", soname="libx.so.1",
                     needed=("liba.so",), rpath="/build/r:/s", runpath="/build/q",
                     exported=("f",), imported=("g",))
    out = drop_runpath(data, lambda e: e.startswith("/build/"))
    assert out is not None and len(out) == len(data)
    info, orig = read_elf(out), read_elf(data)
    assert (info.rpath, info.runpath) == (("/s",), ())
    assert (info.soname, info.needed, info.exported, info.imported) == (
        orig.soname, orig.needed, orig.exported, orig.imported)
    if shutil.which("readelf"):
        (tmp_path / "x.so").write_bytes(out)
        assert readelf_paths(tmp_path / "x.so") == {"RPATH": "/s"}
    both = drop_runpath(data, lambda e: True)
    assert both is not None
    assert read_elf(both).needed == ("liba.so",) and not read_elf(both).rpath + read_elf(both).runpath


def _strtab(data: bytes) -> int:
    return data.index(b"\0a_local\0")  # build_elf's table starts with "", then "a_local"


def test_shared_string_tail_is_refused() -> None:
    # A linker may store "/s" as the tail of "/build/r:/s"; shortening in place would break it.
    data = build_elf(needed=("liba.so",), rpath="/build/r:/s")
    table = _strtab(data)
    needed, rpath = data.index(b"liba.so\0") - table, data.index(b"/build/r:/s\0") - table
    shared = data.replace(struct.pack("<qQ", 1, needed), struct.pack("<qQ", 1, rpath + 9))
    assert read_elf(shared).needed == ("/s",)
    with pytest.raises(ELFError, match="shares its bytes"):
        drop_runpath(shared, lambda e: e.startswith("/build/"))
    # Removing the whole tag leaves the string alone, so that stays possible.
    out = drop_runpath(shared, lambda e: True)
    assert out is not None and read_elf(out).needed == ("/s",) and read_elf(out).rpath == ()


@pytest.mark.parametrize("entry,expected", [
    ("$ORIGIN", False), ("$ORIGIN/../lib", False), ("${ORIGIN}/x", False),
    ("/py/lib", False),  # the interpreter's libdir (keep)
    ("/usr/lib", False),  # exists, outside every build root
    ("/tmp/pip-build-env-abc/overlay/lib", True), ("/tmp/build-env-1/lib", True),
    ("/env/site-packages/dllreg.libs/qsum/lib", True), ("/no/such/dir", True),
    ("", True), ("lib", True), ("./lib", True),  # resolved against the current directory
])
def test_build_time_entry(entry: str, expected: bool) -> None:
    exists = {"/usr/lib", "/py/lib", "/env/site-packages/dllreg.libs/qsum/lib"}.__contains__
    assert build_time_entry(entry, keep=["/py/lib/"], build_roots=["/tmp"], exists=exists) is expected


@pytest.mark.parametrize("data,message", [
    (b"", "not an ELF"), (b"\x7fELF", "not an ELF"), (b"MZ" + bytes(100), "not an ELF"),
    (b"\x7fELF\x03\x01" + bytes(60), "unsupported ELF class"),
    (b"\x7fELF\x02\x03" + bytes(60), "unsupported ELF class"),
    (b"\x7fELF\x02\x01" + bytes(20), "ELF header"),
])
def test_rejects_non_elf(data: bytes, message: str) -> None:
    with pytest.raises(ELFError, match=message):
        drop_runpath(data, lambda e: True)


def test_rejects_broken_dynamic() -> None:
    data = build_elf(rpath="/r")
    table = _strtab(data)
    size = data.index(b"/r\0") + 3 - table

    def swap(old: tuple[int, int], new: tuple[int, int]) -> bytes:
        assert data.count(struct.pack("<qQ", *old)) == 1
        return data.replace(struct.pack("<qQ", *old), struct.pack("<qQ", *new))

    rpath = (15, size - 3)
    cases = [
        (data[:-16] + struct.pack("<qQ", 24, 0), "no DT_NULL"),  # the array ends the image
        (swap((10, size), (10, size - 1)), "not NUL-terminated"),
        (swap(rpath, (15, size + 5)), "outside the string table"),
        (swap((5, 0x10000 + table), (5, 0x90000000)), "not inside any PT_LOAD"),
        (swap((10, size), (10, 1 << 40)), "outside the file"),
        (swap((5, 0x10000 + table), (11, 0)), "without DT_STRTAB"),
        (data[:100], "outside the"),
    ]
    for broken, message in cases:
        with pytest.raises(ELFError, match=message):
            drop_runpath(broken, lambda e: True)


@needs_gcc
@pytest.mark.parametrize("seed", range(4))
def test_random_damage_is_elferror_or_a_result(tree: tuple[Path, Path], seed: int) -> None:
    lib, planted = tree
    data = foo_with(lib, f"{planted}:$ORIGIN").read_bytes()
    rng = random.Random(seed)
    for _ in range(300):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        for candidate in (bytes(damaged), bytes(damaged[: rng.randrange(len(damaged))])):
            with contextlib.suppress(ELFError):
                drop_runpath(candidate, lambda e: e == str(planted))
