"""Tests for the needed-library renamers (elfpatch.replace_needed, pepatch.rename_imports,
machopatch.change_load_dylibs): gcc- and mingw-built libraries patched and then loaded (glibc,
and Windows' loader under Wine), real wheels' extensions, hand-built Mach-O images parsed back,
and hostile input that may only raise the format's error."""

from __future__ import annotations

import contextlib
import random
import re
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pefile
import pytest

import winebed
from conftest import gcc_shared
from dllreg.binary.elf import ELFError, read_elf
from dllreg.binary.elfpatch import replace_needed
from dllreg.binary.macho import MachOError, read_macho
from dllreg.binary.machopatch import change_load_dylibs
from dllreg.binary.pe import PEError, read_pe
from dllreg.binary.pepatch import PatchResult, rename_imports
from test_elf import build_elf
from test_macho import (
    CPU_ARM64,
    CPU_X86_64,
    DYLIB_COMMANDS,
    LC_LOAD_DYLIB,
    LC_SEGMENT_64,
    build_fat,
    build_macho,
    dylib,
    rpath,
)
from winebed import CPYTHON_EXT_FLAGS, WineBed, mingw, parse_harness, winpath, write_preloads

wine = winebed.wine  # the session fixture (one prefix and wineserver per session)

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
    static = bytearray(data)
    static[16 + 2 * 8 + 24:16 + 2 * 8 + 26] = b"\0\0"  # e_phnum = 0: no PT_DYNAMIC
    assert replace_needed(bytes(static), {"liba.so": "libb.so"}) == bytes(static)


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


def cached(filename: str, requirement: str, platform: str) -> Path:
    """A real wheel from .cache/downloads, downloaded with pip the first time."""
    path = DOWNLOADS / filename
    if not path.is_file():
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
                        "--no-deps", "--platform", platform, "--python-version", "3.11",
                        "-d", str(DOWNLOADS), requirement], check=True, capture_output=True)
    assert path.is_file(), f"pip did not download {filename}"
    return path


@pytest.mark.realwheels
def test_real_numpy_runs_on_the_unmangled_openblas(tmp_path: Path) -> None:
    """numpy's extensions, renamed from the vendored libscipy_openblas64_-<hash>.so to the name
    the scipy-openblas64 wheel ships, run on that wheel's library once it is preloaded."""
    if sys.version_info[:2] != (3, 11) or sys.platform != "linux":
        pytest.skip("needs CPython 3.11 on Linux (the numpy wheel is cp311 manylinux)")
    cached(NUMPY, "numpy==2.4.6", "manylinux_2_28_x86_64")
    cached(OPENBLAS64, "scipy-openblas64==0.3.34.481.3", "manylinux_2_28_x86_64")
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


# --- PE -----------------------------------------------------------------------------------------

PE_FOO_C = "__declspec(dllexport) int foo(int a) { return a + %d; }\n"
PE_EXT_C = ("__declspec(dllimport) int foo(int);\n"
            "__declspec(dllexport) int ext_init(void) { return foo(2); }\n")
LONG_DLL = "libfoo-a-much-longer-name.dll"


class PeBed:
    """libfoo-abc123.dll (the vendored copy) and _ext.pyd importing it; libfoo.dll and the
    longer-named copy are what a renamed import must bind to."""

    def __init__(self, d: Path) -> None:
        self.d = d
        self.vendored = mingw(d / "vendored" / "libfoo-abc123.dll", PE_FOO_C % 1, "-shared")
        self.system = mingw(d / "sys" / "libfoo.dll", PE_FOO_C % 40, "-shared")
        self.longer = mingw(d / "sys" / LONG_DLL, PE_FOO_C % 40, "-shared")
        self.ext = mingw(d / "ext" / "_ext.pyd", PE_EXT_C, "-shared", str(self.vendored))
        self.delayed = self._delay_loading(d)

    def _delay_loading(self, d: Path) -> Path:
        """_ext.pyd linked against a dlltool delay-import library. binutils 2.40 leaves the
        delay-import data directory empty (the helper code finds its descriptor by symbol), so a
        copy of the descriptor, with the terminator the format needs, is put into .idata's slack
        and the directory pointed at it. The copy shares the name string with the original."""
        (d / "foo.def").write_text("LIBRARY libfoo-abc123.dll\nEXPORTS\n    foo\n")
        subprocess.run(["x86_64-w64-mingw32-dlltool", "--input-def", str(d / "foo.def"), "--dllname",
                        "libfoo-abc123.dll", "--output-delaylib", str(d / "libfoo_delay.a")], check=True)
        built = mingw(d / "delayed" / "_ext.pyd", PE_EXT_C, "-shared", str(d / "libfoo_delay.a"))
        symbols = subprocess.run(["x86_64-w64-mingw32-nm", str(built)], capture_output=True, text=True,
                                 check=True).stdout
        found = re.search(r"^([0-9a-f]+) T __DELAY_IMPORT_DESCRIPTOR_", symbols, re.M)
        assert found is not None
        address = int(found[1], 16)
        pe = pefile.PE(data=built.read_bytes(), fast_load=True)
        idata = next(s for s in pe.sections if s.Name.startswith(b".idata"))
        at = -(-idata.Misc_VirtualSize // 8) * 8
        descriptor = pe.get_data(address - pe.OPTIONAL_HEADER.ImageBase, 32)
        pe.set_bytes_at_rva(idata.VirtualAddress + at, descriptor + bytes(32))
        idata.Misc_VirtualSize = at + 64
        pe.OPTIONAL_HEADER.DATA_DIRECTORY[13].VirtualAddress = idata.VirtualAddress + at
        pe.OPTIONAL_HEADER.DATA_DIRECTORY[13].Size = 64
        pe.OPTIONAL_HEADER.CheckSum = 0
        built.write_bytes(pe.write())
        return built

    def variant(self, name: str, data: bytes) -> Path:
        out = self.d / name / "_ext.pyd"
        out.parent.mkdir(exist_ok=True)
        out.write_bytes(data)
        return out


@pytest.fixture(scope="module")
def pebed(tmp_path_factory: pytest.TempPathFactory) -> PeBed:
    if not shutil.which(winebed.MINGW_CC):
        pytest.skip(f"needs {winebed.MINGW_CC}")
    return PeBed(tmp_path_factory.mktemp("pebed"))


def section_sizes(data: bytes) -> dict[str, int]:
    pe = pefile.PE(data=data, fast_load=True)
    return {s.Name.rstrip(b"\0").decode(): s.Misc_VirtualSize for s in pe.sections}


def checksum_ok(data: bytes) -> bool:
    return bool(pefile.PE(data=data, fast_load=True).verify_checksum())


def fill_slack(data: bytes) -> bytes:
    """The image with every section's raw tail past its virtual size non-zero (no slack left)."""
    out = bytearray(data)
    for s in pefile.PE(data=data, fast_load=True).sections:
        if s.SizeOfRawData > s.Misc_VirtualSize:
            start = s.PointerToRawData + s.Misc_VirtualSize
            out[start:s.PointerToRawData + s.SizeOfRawData] = b"\xcc" * (s.SizeOfRawData - s.Misc_VirtualSize)
    return bytes(out)


def fake_signed(data: bytes) -> tuple[bytes, int]:
    """The image with a WIN_CERTIFICATE appended and the security directory pointing at it, and a
    valid CheckSum; returns the bytes and the certificate table's offset."""
    pe = pefile.PE(data=data, fast_load=True)
    offset = len(data) + (-len(data) % 8)
    cert = struct.pack("<IHH", 8 + 256, 0x200, 2) + bytes(range(256))  # revision 2.0, PKCS#7
    pe.OPTIONAL_HEADER.DATA_DIRECTORY[4].VirtualAddress = offset
    pe.OPTIONAL_HEADER.DATA_DIRECTORY[4].Size = len(cert)
    signed = bytearray(pe.write()).ljust(offset, b"\0") + cert
    pe = pefile.PE(data=bytes(signed), fast_load=True)
    pe.OPTIONAL_HEADER.CheckSum = pe.generate_checksum()
    return bytes(pe.write()), offset


def test_pe_shorter_name_in_place(pebed: PeBed) -> None:
    data = pebed.ext.read_bytes()
    assert read_pe(data).imports[-1] == "libfoo-abc123.dll"
    assert pefile.PE(data=data, fast_load=True).OPTIONAL_HEADER.CheckSum != 0  # mingw sets one
    result = rename_imports(data, {"LIBFOO-ABC123.DLL": "libfoo.dll"})  # Windows ignores case
    assert (result.signature_removed, result.checksum_updated) == (False, True)
    assert len(result.data) == len(data) and section_sizes(result.data) == section_sizes(data)
    assert read_pe(result.data).imports == (*read_pe(data).imports[:-1], "libfoo.dll")
    assert {n for n, _ in read_pe(result.data).imported} == {"kernel32.dll", "msvcrt.dll", "libfoo.dll"}
    assert checksum_ok(result.data)


def test_pe_longer_name_goes_into_section_slack(pebed: PeBed) -> None:
    data = pebed.ext.read_bytes()
    result = rename_imports(data, {"libfoo-abc123.dll": LONG_DLL})
    assert len(result.data) == len(data)
    before, after = section_sizes(data), section_sizes(result.data)
    grown = [name for name in before if after[name] != before[name]]
    assert grown == [".idata"] and after[".idata"] - before[".idata"] == len(LONG_DLL) + 1
    assert read_pe(result.data).imports[-1] == LONG_DLL and checksum_ok(result.data)


def test_pe_longer_name_without_slack_adds_a_section(pebed: PeBed) -> None:
    data = fill_slack(pebed.ext.read_bytes())
    result = rename_imports(data, {"libfoo-abc123.dll": LONG_DLL})
    pe = pefile.PE(data=result.data, fast_load=True)
    new = pe.sections[-1]
    assert new.Name.rstrip(b"\0") == b".dlname" and len(pe.sections) == len(section_sizes(data)) + 1
    assert new.Characteristics == 0x40000040  # initialized data, read-only
    assert pe.OPTIONAL_HEADER.SizeOfImage == new.VirtualAddress + 0x1000
    assert read_pe(result.data).imports[-1] == LONG_DLL and checksum_ok(result.data)


def test_pe_signature_is_removed_and_reported(pebed: PeBed) -> None:
    data = pebed.ext.read_bytes()
    signed, offset = fake_signed(data)
    assert checksum_ok(signed) and len(signed) > len(data)
    result = rename_imports(signed, {"libfoo-abc123.dll": "libfoo.dll"})
    assert (result.signature_removed, result.checksum_updated) == (True, True)
    assert len(result.data) == offset  # the certificate table was the file's tail
    directory = pefile.PE(data=result.data, fast_load=True).OPTIONAL_HEADER.DATA_DIRECTORY[4]
    assert (directory.VirtualAddress, directory.Size) == (0, 0)
    assert checksum_ok(result.data) and read_pe(result.data).imports[-1] == "libfoo.dll"


def test_pe_zero_checksum_stays_zero(pebed: PeBed) -> None:
    pe = pefile.PE(data=pebed.ext.read_bytes(), fast_load=True)
    pe.OPTIONAL_HEADER.CheckSum = 0
    result = rename_imports(bytes(pe.write()), {"libfoo-abc123.dll": "libfoo.dll"})
    assert not result.checksum_updated
    assert pefile.PE(data=result.data, fast_load=True).OPTIONAL_HEADER.CheckSum == 0


def test_pe_unchanged_input_is_equal_bytes(pebed: PeBed) -> None:
    data, _ = fake_signed(pebed.ext.read_bytes())
    for renames in ({}, {"libzzz.dll": "liby.dll"}, {"libfoo-abc123.dll": "libfoo-abc123.dll"}):
        assert rename_imports(data, renames) == PatchResult(data, False, False)


@pytest.mark.parametrize("renames,message", [
    ({"a.dll": "b.dll", "A.DLL": "c.dll"}, "two renames"),
    ({"a.dll": ""}, "not a DLL file name"), ({"a.dll": "x/b.dll"}, "not a DLL file name"),
    ({"a.dll": "b\u00e9.dll"}, "not a DLL file name"),
])
def test_pe_bad_renames_are_refused(pebed: PeBed, renames: dict[str, str], message: str) -> None:
    with pytest.raises(PEError, match=message):
        rename_imports(pebed.ext.read_bytes(), renames)


@pytest.mark.parametrize("data,message", [
    (b"", "not a PE file"), (b"MZ" + bytes(100), "not a PE file"), (b"\x7fELF" + bytes(60), "not a PE"),
])
def test_pe_rejects_non_pe(data: bytes, message: str) -> None:
    with pytest.raises(PEError, match=message):
        rename_imports(data, {"a.dll": "b.dll"})


@pytest.mark.parametrize("seed", range(2))
def test_pe_random_damage_is_peerror_or_a_result(pebed: PeBed, seed: int) -> None:
    data, _ = fake_signed(pebed.ext.read_bytes())
    rng = random.Random(seed)
    head = 0x600  # the headers and the start of .text, where damage matters most
    for i in range(60):  # pefile takes ~10 ms per damaged image
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(head) if i % 2 else rng.randrange(len(damaged))
            damaged[at] = rng.randrange(256)
        for candidate in (bytes(damaged), bytes(damaged[: rng.randrange(len(damaged))])):
            with contextlib.suppress(PEError):
                rename_imports(candidate, {"libfoo-abc123.dll": LONG_DLL if i % 3 else "libfoo.dll"})


def test_pe_delay_import_is_renamed(pebed: PeBed) -> None:
    data = pebed.delayed.read_bytes()
    assert read_pe(data).delay_imports == ("libfoo-abc123.dll",)
    for new in ("libfoo.dll", LONG_DLL):
        result = rename_imports(data, {"libfoo-abc123.dll": new})
        info = read_pe(result.data)
        assert (info.delay_imports, result.checksum_updated) == ((new,), False)
        assert ("libfoo-abc123.dll", "foo") not in info.imported and (new.lower(), "foo") in info.imported


@pytest.mark.wine
def test_pe_renamed_imports_bind_to_the_preloaded_dll_under_wine(wine: WineBed, pebed: PeBed) -> None:
    data = pebed.ext.read_bytes()
    cases = {  # variant: (renamed image, the DLL it must bind to)
        "inplace": (rename_imports(data, {"libfoo-abc123.dll": "libfoo.dll"}).data, pebed.system),
        "slack": (rename_imports(data, {"libfoo-abc123.dll": LONG_DLL}).data, pebed.longer),
        "section": (rename_imports(fill_slack(data), {"libfoo-abc123.dll": LONG_DLL}).data, pebed.longer),
        "signed": (rename_imports(fake_signed(data)[0], {"libfoo-abc123.dll": "libfoo.dll"}).data,
                   pebed.system),
        # In place, so the descriptor the delay-load helper uses sees the new name too.
        "delayed": (rename_imports(pebed.delayed.read_bytes(), {"libfoo-abc123.dll": "libfoo.dll"}).data,
                    pebed.system),
    }
    # Control: the unpatched consumer with the same preload still looks for the vendored name.
    pre = write_preloads(pebed.d / "system.preloads", [(CPYTHON_EXT_FLAGS, pebed.system)])
    proc = wine.run_harness(pre, pebed.ext, "ext_init", "libfoo.dll")
    assert proc.returncode == 3 and "load-error 126" in proc.stdout
    for name, (image, dll) in cases.items():
        consumer = pebed.variant(name, image)
        pre = write_preloads(pebed.d / f"{name}.preloads", [(CPYTHON_EXT_FLAGS, dll)])
        proc = wine.run_harness(pre, consumer, "ext_init", dll.name)
        result = parse_harness(proc.stdout)
        assert (proc.returncode, result.init_result, result.error) == (0, 42, None), (name, proc.stdout)
        assert result.deps == {dll.name: winpath(dll)}, name


# --- Mach-O -------------------------------------------------------------------------------------

GFORTRAN = "@loader_path/../.dylibs/libgfortran.5.dylib"
REGISTRY_GFORTRAN = "@loader_path/../../../dllreg.libs/gfortran/lib/libgfortran.5.dylib"
SCIPY_MAC = "scipy-1.17.1-cp311-cp311-macosx_14_0_arm64.whl"


def segment_with_section(first_data: int) -> tuple[int, str, tuple[int, ...], bytes]:
    """__TEXT (file offset 0, covering the header) with one __text section at ``first_data``."""
    section = struct.pack("<16s16sQQIIIIIIII", b"__text", b"__TEXT", 0x1000 + first_data, 16,
                          first_data, 4, 0, 0, 0x80000400, 0, 0, 0)
    return (LC_SEGMENT_64, "16sQQQQiiII", (b"__TEXT", 0x1000, 0x1000, 0, 0x1000, 5, 5, 1, 0), section)


def image(commands: list[tuple[int, str, tuple[int, ...], bytes]], pad: int, **kw: int) -> bytes:
    """A thin image whose first section starts ``pad`` zero bytes after the load commands."""
    probe = build_macho([segment_with_section(0), *commands], **kw)
    first = len(probe) + pad
    body = build_macho([segment_with_section(first), *commands], **kw)
    return body + bytes(pad) + b"\xc3" * 16  # the section's bytes must not move


def commands_end(data: bytes) -> int:
    return 32 + int(struct.unpack_from("<I", data, 20)[0])


def test_macho_in_place_when_the_command_has_room() -> None:
    data = image([dylib(LC_LOAD_DYLIB, GFORTRAN), dylib(LC_LOAD_DYLIB, "/usr/lib/libSystem.B.dylib")], 0)
    out = change_load_dylibs(data, {GFORTRAN: "@rpath/libgfortran.5.dylib"})
    assert len(out) == len(data) and commands_end(out) == commands_end(data)
    assert read_macho(out).arches[0].needed == ("@rpath/libgfortran.5.dylib", "/usr/lib/libSystem.B.dylib")


def test_macho_longer_name_grows_into_the_header_padding() -> None:
    data = image([dylib(LC_LOAD_DYLIB, GFORTRAN), rpath("@loader_path/../.dylibs"),
                  dylib(0x80000018, "@rpath/libweak.dylib"), dylib(0x8000001F, "/opt/libre.dylib")], 128)
    renames = {GFORTRAN: REGISTRY_GFORTRAN, "@rpath/libweak.dylib": "@rpath/libweak-longer-name.dylib",
               "/opt/libre.dylib": "/o/r.dylib"}
    out = change_load_dylibs(data, renames)
    arch = read_macho(out).arches[0]
    assert arch.needed == (REGISTRY_GFORTRAN, "@rpath/libweak-longer-name.dylib", "/o/r.dylib")
    assert arch.weak == frozenset({"@rpath/libweak-longer-name.dylib"})
    assert arch.rpaths == ("@loader_path/../.dylibs",)
    assert len(out) == len(data) and out[-16:] == data[-16:]  # the section did not move
    assert commands_end(data) < commands_end(out) <= len(data) - 16
    assert struct.unpack_from("<I", out, 20)[0] % 8 == 0  # 64-bit commands stay 8-byte aligned


def test_macho_without_padding_is_a_clear_error() -> None:
    data = image([dylib(LC_LOAD_DYLIB, GFORTRAN)], 8)
    with pytest.raises(MachOError, match=r"only \d+ fit before the first section"):
        change_load_dylibs(data, {GFORTRAN: REGISTRY_GFORTRAN})
    # Dropping an rpath frees room that a rename can then use.
    data = image([rpath("/a/very/long/build/time/path/that/is/no/longer/wanted"),
                  dylib(LC_LOAD_DYLIB, GFORTRAN)], 0)
    out = change_load_dylibs(data, {GFORTRAN: REGISTRY_GFORTRAN}, drop_rpaths=lambda p: True)
    assert read_macho(out).arches[0].needed == (REGISTRY_GFORTRAN,)


def test_macho_padding_in_use_is_not_overwritten() -> None:
    data = bytearray(image([dylib(LC_LOAD_DYLIB, GFORTRAN)], 128))
    data[commands_end(bytes(data)) + 8] = 1  # the rename needs 24 more bytes
    with pytest.raises(MachOError, match="not free padding"):
        change_load_dylibs(bytes(data), {GFORTRAN: REGISTRY_GFORTRAN})


def test_macho_fat_and_32bit_slices() -> None:
    commands = [dylib(LC_LOAD_DYLIB, GFORTRAN), rpath("/build/lib")]
    slices = [(CPU_X86_64, 3, image(commands, 256)), (CPU_ARM64, 0, image(commands, 256, cputype=CPU_ARM64,
                                                                          subtype=0))]
    fat = build_fat(slices)
    out = change_load_dylibs(fat, {GFORTRAN: REGISTRY_GFORTRAN}, drop_rpaths=lambda p: p == "/build/lib")
    assert len(out) == len(fat)
    for arch in read_macho(out).arches:
        assert (arch.needed, arch.rpaths) == ((REGISTRY_GFORTRAN,), ())
    thin32 = build_macho(commands, bits=32, cputype=7, tail=bytes(256))  # no sections: room to EOF
    out = change_load_dylibs(thin32, {GFORTRAN: REGISTRY_GFORTRAN})
    assert read_macho(out).arches[0].needed == (REGISTRY_GFORTRAN,)
    assert struct.unpack_from("<I", out, 20)[0] % 4 == 0


def test_macho_unchanged_input_is_equal_bytes() -> None:
    data = build_macho(DYLIB_COMMANDS)
    assert change_load_dylibs(data, {}) == data
    assert change_load_dylibs(data, {"libnone.dylib": "x"}, drop_rpaths=lambda p: False) == data


@pytest.mark.parametrize("data", [b"", b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe" + bytes(8), b"MZ" * 40])
def test_macho_rejects_non_macho(data: bytes) -> None:
    with pytest.raises(MachOError):
        change_load_dylibs(data, {GFORTRAN: REGISTRY_GFORTRAN})


@pytest.mark.parametrize("seed", range(3))
def test_macho_random_damage_is_machoerror_or_a_result(seed: int) -> None:
    data = image([dylib(LC_LOAD_DYLIB, GFORTRAN), rpath("/r"), *DYLIB_COMMANDS], 64)
    rng = random.Random(seed)
    for i in range(400):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            damaged[rng.randrange(commands_end(data) + 8)] = rng.randrange(256)
        for candidate in (bytes(damaged), bytes(damaged[: rng.randrange(len(damaged))])):
            with contextlib.suppress(MachOError):
                change_load_dylibs(candidate, {GFORTRAN: REGISTRY_GFORTRAN if i % 2 else "@rpath/x.dylib"},
                                   drop_rpaths=lambda p: True)


@pytest.mark.realwheels
def test_real_scipy_arm64_extensions(tmp_path: Path) -> None:
    """delocate's @loader_path/../.dylibs names in scipy's arm64 extensions, renamed to a longer
    registry path: the commands grow into the real header padding and nothing else moves."""
    cached(SCIPY_MAC, "scipy==1.17.1", "macosx_14_0_arm64")
    grown = 0
    with zipfile.ZipFile(DOWNLOADS / SCIPY_MAC) as zf:
        for member in (n for n in zf.namelist() if n.endswith((".so", ".dylib"))):
            data = zf.read(member)
            before = read_macho(data).arches[0]
            renames = {n: "@loader_path/../../../dllreg.libs/gcc/lib/" + n.rsplit("/", 1)[1]
                       for n in before.needed if n.startswith("@loader_path/")}
            if not renames:
                continue
            out = change_load_dylibs(data, renames)
            after = read_macho(out).arches[0]
            assert after.needed == tuple(renames.get(n, n) for n in before.needed)
            assert (after.rpaths, after.min_os, len(out)) == (before.rpaths, before.min_os, len(data))
            end = commands_end(out)
            assert out[end:] == data[end:] and end > commands_end(data)
            grown += 1
    assert grown >= 4  # three extensions and the vendored libgfortran (which loads libquadmath)
