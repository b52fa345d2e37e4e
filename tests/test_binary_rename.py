"""Tests for the needed-library renamers (elfpatch.replace_needed, pepatch.rename_imports,
machopatch.change_load_dylibs): gcc- and mingw-built libraries patched and then loaded (glibc,
and Windows' loader under Wine), real wheels' extensions, hand-built Mach-O images parsed back,
and hostile input that may only raise the format's error."""

from __future__ import annotations

import contextlib
import random
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import gcc_shared
from dllreg.binary.elf import ELFError, read_elf
from dllreg.binary.elfpatch import replace_needed
from test_elf import build_elf

needs_gcc = pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("readelf")),
                               reason="needs gcc and readelf")
DOWNLOADS = Path(__file__).resolve().parent.parent / ".cache" / "downloads"

# --- ELF ----------------------------------------------------------------------------------------

FOO_C = "int foo(int a) { return a + %d; }\n"
FOO_MAP = "FOO_1 { global: foo; local: *; };\n"
SIDE_C = "int side(void) { return 1000; }\n"
USE_C = "int foo(int); int side(void); int use(int a) { return foo(a) + side(); }\n"


def readelf(*args: str | Path) -> str:
    return subprocess.run(["readelf", *map(str, args)], capture_output=True, text=True, check=True,
                          env={"LC_ALL": "C"}).stdout


def needed(path: Path) -> list[str]:
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.*)\]", readelf("-dW", path))


def version_files(path: Path) -> list[str]:
    return re.findall(r"File: (\S+)", readelf("-VW", path))


def call_use(consumer: Path, *preloads: Path) -> subprocess.CompletedProcess[str]:
    """Preload by absolute path (as dllreg's stub does), then load the consumer and call use(1)."""
    code = "import ctypes, sys\n" + "".join(f"ctypes.CDLL({str(p)!r})\n" for p in preloads)
    code += f"print(ctypes.CDLL({str(consumer)!r}).use(1))\n"
    # A child process: the loader caches libraries by SONAME within one process.
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")


class ElfBed:
    """libfoo-abc123.so (the vendored, mangled copy) and libuse.so needing it, the copies under
    the names the patched consumer must need, and abc123.so whose name is a tail of the mangled
    one (GNU ld then stores one string for both)."""

    def __init__(self, d: Path) -> None:
        self.d = d
        vers = d / "foo.map"
        vers.write_text(FOO_MAP)
        self.vendored = gcc_shared(d / "vendored" / "libfoo-abc123.so", FOO_C % 1, "libfoo-abc123.so",
                                   f"-Wl,--version-script={vers}")
        self.system = gcc_shared(d / "sys" / "libfoo.so.1", FOO_C % 40, "libfoo.so.1",
                                 f"-Wl,--version-script={vers}")
        self.longer = gcc_shared(d / "sys" / "libfoo-a-much-longer-name.so.1", FOO_C % 40,
                                 "libfoo-a-much-longer-name.so.1", f"-Wl,--version-script={vers}")
        self.side = gcc_shared(d / "vendored" / "abc123.so", SIDE_C, "abc123.so")
        self.use = gcc_shared(d / "ext" / "libuse.so", USE_C, None, str(self.vendored), str(self.side),
                              "-Wl,-rpath,$ORIGIN/../vendored:/keep/me")
        self.plain = gcc_shared(d / "ext" / "libplain.so", USE_C.replace("side()", "0"), None,
                                str(self.vendored), "-Wl,-rpath,$ORIGIN/../vendored")


@pytest.fixture(scope="module")
def elfbed(tmp_path_factory: pytest.TempPathFactory) -> ElfBed:
    if not (shutil.which("gcc") and shutil.which("readelf")):
        pytest.skip("needs gcc and readelf")
    return ElfBed(tmp_path_factory.mktemp("elfbed"))


def patched(src: Path, out: Path, renames: dict[str, str], **kw: object) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(replace_needed(src.read_bytes(), renames, **kw))  # type: ignore[arg-type]
    return out


def test_before_the_patch_only_the_vendored_name_satisfies_the_consumer(elfbed: ElfBed) -> None:
    assert needed(elfbed.plain) == ["libfoo-abc123.so"]
    assert version_files(elfbed.plain)[0] == "libfoo-abc123.so"
    assert call_use(elfbed.plain).stdout.strip() == "2"  # through its RUNPATH
    lone = elfbed.d / "lone" / "x" / "libplain.so"  # its RUNPATH finds nothing from here
    lone.parent.mkdir(parents=True)
    shutil.copy(elfbed.plain, lone)
    proc = call_use(lone, elfbed.system)
    assert proc.returncode != 0 and "libfoo-abc123.so: cannot open" in proc.stderr


def test_shorter_name_in_place_loads_against_the_preloaded_copy(elfbed: ElfBed, tmp_path: Path) -> None:
    before = elfbed.plain.read_bytes()
    out = patched(elfbed.plain, tmp_path / "libplain.so", {"libfoo-abc123.so": "libfoo.so.1"},
                  drop_rpath=lambda e: e == "$ORIGIN/../vendored")
    after = out.read_bytes()
    assert len(after) == len(before)  # written over the old string
    assert needed(out) == ["libfoo.so.1"]
    # The version requirement names the file too; glibc asserts it finds that file loaded.
    assert version_files(out)[0] == "libfoo.so.1"
    assert read_elf(after).runpath == () and read_elf(after).needed == ("libfoo.so.1",)
    assert call_use(out, elfbed.system).stdout.strip() == "41"
    assert call_use(out).returncode != 0  # no search path left: only a preload satisfies it


def test_renaming_needed_without_vn_file_would_not_load(elfbed: ElfBed, tmp_path: Path) -> None:
    """Why vn_file is renamed too: with only DT_NEEDED renamed, glibc refuses the file."""
    old = elfbed.plain.read_bytes()
    new = "libfoo-a-much-longer-name.so.1"  # appended, so the old string stays where it was
    data = bytearray(replace_needed(old, {"libfoo-abc123.so": new}))
    verneed = re.search(r"'\.gnu\.version_r' contains.*?Offset: (0x[0-9a-f]+)", readelf("-VW", elfbed.plain),
                        re.S)
    assert verneed is not None and version_files(elfbed.plain)[0] == "libfoo-abc123.so"
    vn_file = int(verneed[1], 16) + 4  # the first Verneed's vn_file field
    original = old[vn_file:vn_file + 4]
    assert data[vn_file:vn_file + 4] != original
    data[vn_file:vn_file + 4] = original
    broken = tmp_path / "libplain.so"
    broken.write_bytes(bytes(data))
    assert needed(broken)[0] == new and version_files(broken)[0] == "libfoo-abc123.so"
    proc = call_use(broken, elfbed.longer)
    assert proc.returncode != 0


def test_longer_name_gets_a_new_string_table_and_loads(elfbed: ElfBed, tmp_path: Path) -> None:
    before = elfbed.plain.read_bytes()
    new = "libfoo-a-much-longer-name.so.1"
    out = patched(elfbed.plain, tmp_path / "libplain.so", {"libfoo-abc123.so": new})
    after = out.read_bytes()
    assert len(after) > len(before)
    assert needed(out) == [new] and version_files(out)[0] == new
    info, orig = read_elf(after), read_elf(before)
    assert (info.exported, info.imported, info.runpath) == (orig.exported, orig.imported, orig.runpath)
    assert "LOAD" in readelf("-lW", out).split("Section to Segment")[0]
    assert call_use(out, elfbed.longer).stdout.strip() == "41"
    # The copy of the table is a table like any other: a second rename works in place in it.
    again = replace_needed(after, {new: "libfoo.so.1"})
    assert len(again) == len(after) and read_elf(again).needed == ("libfoo.so.1",)


def test_shared_tail_takes_the_fallback_and_still_loads(elfbed: ElfBed, tmp_path: Path) -> None:
    before = elfbed.use.read_bytes()
    assert needed(elfbed.use) == ["libfoo-abc123.so", "abc123.so"]
    # GNU ld stored "abc123.so" only as the tail of "libfoo-abc123.so".
    assert before.count(b"abc123.so\0") == 1
    out = patched(elfbed.use, tmp_path / "libuse.so", {"libfoo-abc123.so": "libfoo.so.1"},
                  drop_rpath=lambda e: e.startswith("$ORIGIN"))
    assert len(out.read_bytes()) > len(before)
    assert needed(out) == ["libfoo.so.1", "abc123.so"]
    assert read_elf(out.read_bytes()).runpath == ("/keep/me",)
    assert call_use(out, elfbed.system, elfbed.side).stdout.strip() == "1041"


def test_identical_string_in_the_table_is_reused() -> None:
    # The symbol "libnew.so.1" already spells the new name, so no table needs to grow.
    data = build_elf(needed=("liba.so",), imported=("xlibnew.so.1",), soname="libself.so")
    out = replace_needed(data, {"liba.so": "libnew.so.1"})
    assert len(out) == len(data) and out.count(b"libnew.so.1\0") == 1
    info = read_elf(out)
    assert info.needed == ("libnew.so.1",) and info.imported == frozenset({"xlibnew.so.1"})


@pytest.mark.parametrize(("bits", "big"), [(64, False), (32, False), (64, True), (32, True)])
def test_hand_built_every_class_and_byte_order(bits: int, big: bool, tmp_path: Path) -> None:
    data = build_elf(bits=bits, big=big, hashing="sections", soname="libx.so.1",
                     needed=("liba-0123abcd.so", "libb.so.2"), runpath="$ORIGIN/../x.libs:/r",
                     exported=("f",), imported=("g",))
    renames = {"liba-0123abcd.so": "liba.so.3", "libb.so.2": "libb-with-a-longer-name.so.2"}
    out = replace_needed(data, renames, drop_rpath=lambda e: e.startswith("$ORIGIN"))
    info, orig = read_elf(out), read_elf(data)
    assert info.needed == ("liba.so.3", "libb-with-a-longer-name.so.2")
    assert (info.soname, info.exported, info.imported, info.runpath) == (
        orig.soname, orig.exported, orig.imported, ("/r",))
    if shutil.which("readelf"):
        (tmp_path / "x.so").write_bytes(out)
        assert needed(tmp_path / "x.so") == list(info.needed)


def test_unchanged_input_is_equal_bytes() -> None:
    data = build_elf(needed=("liba.so",), runpath="/r")
    assert replace_needed(data, {}) == data
    assert replace_needed(data, {"libzzz.so": "liby.so", "liba.so": "liba.so"}) == data
    assert replace_needed(data, {}, drop_rpath=lambda e: False) == data


@pytest.mark.parametrize("new", ["", "a/b.so", "x\0y.so"])
def test_bad_new_names_are_refused(new: str) -> None:
    with pytest.raises(ELFError, match="not a library file name"):
        replace_needed(build_elf(needed=("liba.so",)), {"liba.so": new})


@pytest.mark.parametrize("data,message", [
    (b"", "not an ELF"), (b"\x7fELF", "not an ELF"), (b"MZ" + bytes(100), "not an ELF"),
    (b"\x7fELF\x03\x01" + bytes(60), "unsupported ELF class"),
    (b"\x7fELF\x02\x01" + bytes(20), "ELF header"),
])
def test_elf_rejects_non_elf(data: bytes, message: str) -> None:
    with pytest.raises(ELFError, match=message):
        replace_needed(data, {"liba.so": "libb.so"})


@needs_gcc
@pytest.mark.parametrize("seed", range(3))
def test_elf_random_damage_is_elferror_or_a_result(elfbed: ElfBed, seed: int) -> None:
    data = elfbed.use.read_bytes()
    rng = random.Random(seed)
    for i in range(200):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        new = "libfoo.so.1" if i % 2 else "libfoo-a-much-longer-name.so.1"
        for candidate in (bytes(damaged), bytes(damaged[: rng.randrange(len(damaged))])):
            with contextlib.suppress(ELFError):
                replace_needed(candidate, {"libfoo-abc123.so": new}, drop_rpath=lambda e: True)


NUMPY = "numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"
OPENBLAS64 = "scipy_openblas64-0.3.34.481.3-py3-none-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"


@pytest.mark.realwheels
def test_real_numpy_runs_on_the_unmangled_openblas(tmp_path: Path) -> None:
    """numpy's extensions, renamed from the vendored libscipy_openblas64_-<hash>.so to the name
    the scipy-openblas64 wheel ships, run on that wheel's library once it is preloaded."""
    if sys.version_info[:2] != (3, 11) or sys.platform != "linux" or not all(
            (DOWNLOADS / w).is_file() for w in (NUMPY, OPENBLAS64)):
        pytest.skip("needs CPython 3.11 on Linux and the cached numpy and scipy-openblas64 wheels")
    site = tmp_path / "site"
    with zipfile.ZipFile(DOWNLOADS / NUMPY) as zf:
        zf.extractall(site)
    with zipfile.ZipFile(DOWNLOADS / OPENBLAS64) as zf:
        blas = Path(zf.extract("scipy_openblas64/lib/libscipy_openblas64_.so", tmp_path / "blas"))
    shutil.rmtree(site / "numpy.libs")
    changed = 0
    for ext in (site / "numpy").rglob("*.so"):
        data = ext.read_bytes()
        vendored = [n for n in read_elf(data).needed if n.startswith("libscipy_openblas64_-")]
        out = replace_needed(data, dict.fromkeys(vendored, "libscipy_openblas64_.so"),
                             drop_rpath=lambda e: "numpy.libs" in e)
        if out != data:
            assert len(out) == len(data)  # shorter: every rename was written in place
            info = read_elf(out)
            assert not any("numpy.libs" in p for p in info.rpath + info.runpath), ext
            assert not any(n.startswith("libscipy_openblas64_-") for n in info.needed), ext
            ext.write_bytes(out)
            changed += 1
    assert changed >= 2  # _multiarray_umath and _umath_linalg at least
    code = (f"import ctypes, sys; ctypes.CDLL({str(blas)!r}); sys.path.insert(0, {str(site)!r})\n"
            "import numpy as np; a = np.random.default_rng(1).random((50, 50)) + 50 * np.eye(50)\n"
            "print(np.allclose(a @ np.linalg.inv(a), np.eye(50)), np.__file__)\n")
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", str(site / "numpy" / "__init__.py")]
    # Without the preload nothing finds the library any more.
    proc = subprocess.run([sys.executable, "-S", "-c", code.split("\n", 1)[1].replace("import numpy",
                          f"import sys; sys.path.insert(0, {str(site)!r}); import numpy", 1)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0 and "libscipy_openblas64_.so" in proc.stderr
