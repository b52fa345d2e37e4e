"""Tests for dllreg.binary.elf: gcc-built fixtures cross-checked with binutils, hand-built
big-endian/32-bit images, and hostile input that may only ever raise ELFError."""

from __future__ import annotations

import os
import platform
import random
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dllreg.binary.elf import ELFError, ELFInfo, is_elf, read_elf, read_elf_file

TOOLS = ("gcc", "readelf", "nm", "strip")
MISSING_TOOLS = [tool for tool in TOOLS if shutil.which(tool) is None]
needs_toolchain = pytest.mark.skipif(
    bool(MISSING_TOOLS), reason=f"needs {', '.join(MISSING_TOOLS)} on PATH"
)
C_ENV = {**os.environ, "LC_ALL": "C"}

BAR_C = "int bar_mul(int a, int b) { return a * b; }\n"
FOO_C = """\
#include <stdio.h>
#include <stdlib.h>
int bar_mul(int, int);
int foo_counter = 1;
int foo_add(int a, int b) { char *p = malloc(4); puts("x"); free(p); return bar_mul(a, 1) + b; }
static int foo_hidden(void) { return 2; }
int foo_use_hidden(void) { return foo_hidden(); }
"""
TINY_C = "int bar_mul(int, int); int counter = 3; int tiny(int a) { return bar_mul(a, counter); }\n"


def run(*cmd: str | Path) -> str:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=C_ENV)
    if proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def gcc_shared(out: Path, src: Path, *flags: str) -> Path:
    run("gcc", "-shared", "-fPIC", "-o", out, src, *flags)
    return out


@pytest.fixture(scope="module")
def libs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if MISSING_TOOLS:
        pytest.skip(f"needs {', '.join(MISSING_TOOLS)} on PATH")
    d = tmp_path_factory.mktemp("elf")
    for name, text in (("bar.c", BAR_C), ("foo.c", FOO_C), ("tiny.c", TINY_C)):
        (d / name).write_text(text)
    link_bar = (f"-L{d}", "-lbar")
    out = {"bar": gcc_shared(d / "libbar.so", d / "bar.c", "-Wl,-soname,libbar.so.2")}
    out["foo"] = gcc_shared(d / "libfoo.so", d / "foo.c", "-Wl,-soname,libfoo.so.1", *link_bar)
    rpath = "-Wl,-rpath,/x/y:/z"
    out["runpath"] = gcc_shared(d / "librun.so", d / "bar.c", rpath, "-Wl,--enable-new-dtags")
    out["rpath"] = gcc_shared(d / "librpath.so", d / "bar.c", rpath, "-Wl,--disable-new-dtags")
    # DT_HASH only, so the sysv hash fallback has a real subject.
    out["sysv"] = gcc_shared(d / "libsysv.so", d / "foo.c", "-Wl,--hash-style=sysv", *link_bar)
    out["stripped"] = d / "libfoo-stripped.so"
    run("strip", "--strip-all", "-o", out["stripped"], out["foo"])
    # ~2 KB and without libc: small enough for exhaustive truncation and byte-flip fuzzing.
    tiny = ("-nostdlib", "-Wl,-z,noseparate-code", "-Wl,--build-id=none", "-Wl,-z,norelro")
    out["tiny"] = gcc_shared(d / "libtiny.so", d / "tiny.c", *tiny, *link_bar)
    run("strip", "--strip-all", out["tiny"])
    (d / "start.c").write_text("void _start(void) { for (;;) {} }\n")
    out["static"] = d / "static-exe"
    run("gcc", "-static", "-nostdlib", "-o", out["static"], d / "start.c")
    out["object"] = d / "foo.o"
    run("gcc", "-c", "-fPIC", "-o", out["object"], d / "foo.c")
    return out


def readelf_dynamic(path: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {"NEEDED": [], "SONAME": [], "RPATH": [], "RUNPATH": []}
    for m in re.finditer(
        r"\((NEEDED|SONAME|RPATH|RUNPATH)\)\s+[^\[]*\[(.*)\]", run("readelf", "-dW", path)
    ):
        found[m.group(1)].append(m.group(2))
    return found


def nm_names(path: Path, flag: str) -> frozenset[str]:
    lines = run("nm", "-D", flag, path).splitlines()
    # Newer binutils append @VERSION / @@VERSION; the ELF symbol name is what precedes it.
    return frozenset(line.split()[-1].split("@")[0] for line in lines if line.strip())


def system_libc() -> Path | None:
    if shutil.which("ldd"):
        m = re.search(r"libc\.so\.6 => (\S+)", run("ldd", "/bin/sh"))
        if m:
            return Path(m.group(1))
    fallback = Path("/lib/x86_64-linux-gnu/libc.so.6")
    return fallback if fallback.exists() else None


def without_section_headers(data: bytes) -> bytes:
    """Zero e_shoff/e_shnum so the reader must count .dynsym from the hash table (x86-64)."""
    assert data[4] == 2 and data[5] == 1
    out = bytearray(data)
    struct.pack_into("<Q", out, 0x28, 0)
    struct.pack_into("<H", out, 0x3C, 0)
    return bytes(out)


# --- gcc-built fixtures ---------------------------------------------------------------------


@needs_toolchain
def test_shared_library_facts(libs: dict[str, Path]) -> None:
    info = read_elf_file(libs["foo"])
    assert info.soname == "libfoo.so.1"
    assert info.needed == ("libbar.so.2", "libc.so.6")
    assert info.rpath == info.runpath == ()
    assert {"foo_add", "foo_counter", "foo_use_hidden"} <= info.exported
    assert "foo_hidden" not in info.exported and "bar_mul" not in info.exported
    assert {"puts", "malloc", "free", "bar_mul"} <= info.imported
    assert info.bits == 64
    if platform.machine() in ("x86_64", "aarch64", "s390x", "riscv64"):
        assert info.machine == platform.machine()


@needs_toolchain
def test_runpath_and_rpath(libs: dict[str, Path]) -> None:
    runpath, rpath = read_elf_file(libs["runpath"]), read_elf_file(libs["rpath"])
    assert (runpath.runpath, runpath.rpath) == (("/x/y", "/z"), ())
    assert (rpath.rpath, rpath.runpath) == (("/x/y", "/z"), ())
    assert runpath.soname is None and rpath.soname is None


@needs_toolchain
def test_stripped_library_keeps_dynamic_facts(libs: dict[str, Path]) -> None:
    assert "symtab" not in run("readelf", "-SW", libs["stripped"])  # really stripped
    assert read_elf_file(libs["stripped"]) == read_elf_file(libs["foo"])


@needs_toolchain
@pytest.mark.parametrize("name", ["foo", "sysv", "tiny"])
def test_symbol_count_from_hash_tables(libs: dict[str, Path], name: str) -> None:
    data = libs[name].read_bytes()
    full = read_elf(data)
    assert full.exported and full.imported
    assert read_elf(without_section_headers(data)) == full


@needs_toolchain
@pytest.mark.parametrize("name", ["static", "object"])
def test_no_dynamic_segment(libs: dict[str, Path], name: str) -> None:
    info = read_elf_file(libs[name])
    assert info == ELFInfo(info.machine, 64, None, (), (), (), frozenset(), frozenset())


@needs_toolchain
@pytest.mark.parametrize("name", ["bar", "foo", "runpath", "rpath", "sysv", "stripped", "libc"])
def test_matches_binutils(libs: dict[str, Path], name: str) -> None:
    path = system_libc() if name == "libc" else libs[name]
    if path is None:
        pytest.skip("no system libc.so.6 found via ldd /bin/sh")
    info = read_elf_file(path)
    dyn = readelf_dynamic(path)
    assert list(info.needed) == dyn["NEEDED"]
    assert dyn["SONAME"] == ([info.soname] if info.soname is not None else [])
    assert ":".join(info.rpath) == ":".join(dyn["RPATH"])
    assert ":".join(info.runpath) == ":".join(dyn["RUNPATH"])
    assert info.exported == nm_names(path, "--defined-only")
    assert info.imported == nm_names(path, "--undefined-only")


@pytest.fixture(scope="module")
def libs32(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], bool]:
    if MISSING_TOOLS:
        pytest.skip(f"needs {', '.join(MISSING_TOOLS)} on PATH")
    d = tmp_path_factory.mktemp("elf32")
    (d / "bar.c").write_text(BAR_C)
    (d / "tiny.c").write_text(TINY_C)
    errors = []
    # Full multilib first; without it (no 32-bit crt/libc) -nostdlib still links i386 code.
    for extra in ((), ("-nostdlib",)):
        flags = ("-m32", *extra)
        try:
            gcc_shared(d / "libbar.so", d / "bar.c", *flags, "-Wl,-soname,libbar.so.2")
            tiny = gcc_shared(
                d / "libtiny.so",
                d / "tiny.c",
                *flags,
                "-Wl,-soname,libtiny.so.1",
                f"-L{d}",
                "-lbar",
            )
        except AssertionError as exc:
            errors.append(str(exc).splitlines()[-1])
            continue
        return {"bar": d / "libbar.so", "tiny": tiny}, not extra
    pytest.skip(f"gcc -m32 cannot link a shared library: {errors}")


@needs_toolchain
def test_32bit_library(libs32: tuple[dict[str, Path], bool]) -> None:
    paths, with_libc = libs32
    info = read_elf_file(paths["tiny"])
    assert (info.bits, info.machine, info.soname) == (32, "i386", "libtiny.so.1")
    assert info.needed == ("libbar.so.2", "libc.so.6") if with_libc else ("libbar.so.2",)
    assert "tiny" in info.exported and "counter" in info.exported
    assert "bar_mul" in info.imported
    assert list(info.needed) == readelf_dynamic(paths["tiny"])["NEEDED"]
    assert info.exported == nm_names(paths["tiny"], "--defined-only")
    assert info.imported == nm_names(paths["tiny"], "--undefined-only")


# --- hand-built images: both byte orders, both classes, every symbol-count source ------------

BASE = 0x10000  # vaddr of file offset 0, so address translation is actually exercised
GNU_HASH = 0x6FFFFEF5


def gnu_hash(name: bytes) -> int:
    h = 5381
    for c in name:
        h = (h * 33 + c) & 0xFFFFFFFF
    return h


def build_elf(
    *,
    bits: int = 64,
    big: bool = False,
    machine: int = 62,
    soname: str | None = None,
    needed: tuple[str, ...] = (),
    rpath: str | None = None,
    runpath: str | None = None,
    exported: tuple[str, ...] = (),
    imported: tuple[str, ...] = (),
    hashing: str = "gnu",
) -> bytes:
    """A minimal loadable ELF shared object; hashing is 'gnu', 'sysv', 'sections' or 'none'."""
    o = ">" if big else "<"
    w = "Q" if bits == 64 else "I"
    ehsize, phsize, symsize, dynsize = (64, 56, 24, 16) if bits == 64 else (52, 32, 16, 8)
    strtab = bytearray(b"\0")
    index: dict[str, int] = {}

    def s(text: str) -> int:
        if text not in index:
            index[text] = len(strtab)
            strtab.extend(text.encode() + b"\0")
        return index[text]

    def sym(name: int, info: int, shndx: int) -> bytes:
        value, size = (0x1000, 8) if shndx else (0, 0)
        if bits == 64:
            return struct.pack(o + "IBBHQQ", name, info, 0, shndx, value, size)
        return struct.pack(o + "IIIBBH", name, value, size, info, 0, shndx)

    # Null, a local (must be ignored), undefined imports, then the hashed defined exports.
    syms = [sym(0, 0, 0), sym(s("a_local"), 0x02, 7)]
    syms += [sym(s(n), 0x12, 0) for n in imported]  # GLOBAL FUNC, SHN_UNDEF
    symoffset = len(syms)
    syms += [sym(s(n), 0x11 if i % 2 else 0x22, 7) for i, n in enumerate(exported)]
    dyn = [(1, s(n)) for n in needed]
    dyn += [(tag, s(v)) for tag, v in ((14, soname), (15, rpath), (29, runpath)) if v is not None]
    image = bytearray(ehsize + 2 * phsize)

    def put(blob: bytes) -> int:
        image.extend(b"\0" * (-len(image) % 8))
        image.extend(blob)
        return len(image) - len(blob)

    strtab_at, symtab_at = put(bytes(strtab)), put(b"".join(syms))
    dyn += [(5, BASE + strtab_at), (10, len(strtab)), (6, BASE + symtab_at), (11, symsize)]
    nsyms = len(syms)
    if hashing == "sysv":
        hw = "Q" if bits == 64 and machine == 22 else "I"  # s390x uses 8-byte hash words
        chain = [0, *range(nsyms - 1)]
        dyn.append(
            (4, BASE + put(struct.pack(f"{o}{2 + 1 + nsyms}{hw}", 1, nsyms, nsyms - 1, *chain)))
        )
    elif hashing == "gnu":
        hashes = [gnu_hash(n.encode()) & ~1 for n in exported]
        if hashes:
            hashes[-1] |= 1
        bucket = symoffset if exported else 0
        table = struct.pack(o + "4I", 1, symoffset, 1, 6) + struct.pack(o + w, 2**bits - 1)
        table += struct.pack(f"{o}{1 + len(hashes)}I", bucket, *hashes)
        dyn.append((GNU_HASH, BASE + put(table)))
    dyn_at = put(
        b"".join(struct.pack(o + ("qQ" if bits == 64 else "iI"), *e) for e in [*dyn, (0, 0)])
    )
    shoff = shnum = 0
    if hashing == "sections":  # a null section header and .dynsym; no .shstrtab needed
        sh = "IIQQQQIIQQ" if bits == 64 else "10I"
        shnum, null = 2, struct.pack(o + sh, *[0] * 10)
        dynsym = struct.pack(
            o + sh, 0, 11, 2, BASE + symtab_at, symtab_at, nsyms * symsize, 0, 1, 8, symsize
        )
        shoff = put(null + dynsym)
    ident = b"\x7fELF" + bytes([bits // 32, 2 if big else 1, 1]) + bytes(9)
    ehdr = "HHIQQQIHHHHHH" if bits == 64 else "HHIIIIIHHHHHH"
    shsize = 64 if bits == 64 else 40
    image[:16] = ident
    struct.pack_into(
        o + ehdr, image, 16, 3, machine, 1, 0, ehsize, shoff, 0, ehsize, phsize, 2, shsize, shnum, 0
    )
    segments = ((1, 0, len(image)), (2, dyn_at, (len(dyn) + 1) * dynsize))  # PT_LOAD, PT_DYNAMIC
    for i, (ptype, off, size) in enumerate(segments):
        at, addr = ehsize + i * phsize, BASE + off
        if bits == 64:
            struct.pack_into(o + "IIQQQQQQ", image, at, ptype, 6, off, addr, addr, size, size, 8)
        else:
            struct.pack_into(o + "8I", image, at, ptype, off, addr, addr, size, size, 6, 4)
    return bytes(image)


def readelf_symbols(path: Path) -> tuple[frozenset[str], frozenset[str]]:
    """(exported, imported) from `readelf -sD`, which counts symbols via the hash tables."""
    exported, imported = set(), set()
    for line in run("readelf", "-sDW", path).splitlines():
        m = re.match(r"\s*\d+: \S+\s+\S+ (\w+)\s+(\w+)\s+\w+\s+(\w+) (\S+)$", line)
        if m and m.group(2) in ("GLOBAL", "WEAK", "UNIQUE"):
            typ, ndx, name = m.group(1), m.group(3), m.group(4).split("@")[0]
            if ndx == "UND":
                imported.add(name)
            elif typ not in ("SECTION", "FILE"):
                exported.add(name)
    return frozenset(exported), frozenset(imported)


SYNTH: dict[str, Any] = {  # build_elf keyword arguments shared by several tests
    "soname": "libx.so.1",
    "needed": ("liba.so", "libb.so.2"),
    "rpath": "/r:/s",
    "runpath": "/q",
    "exported": ("f1", "v2", "f3"),
    "imported": ("imp", "f1"),  # also defined here: a name may be imported and exported
}
ARCHES = [
    pytest.param(32, False, 40, "arm", id="arm"),
    pytest.param(32, False, 3, "i386", id="i386"),
    pytest.param(32, True, 20, "ppc", id="ppc-be"),
    pytest.param(64, False, 21, "ppc64le", id="ppc64le"),
    pytest.param(64, True, 21, "ppc64", id="ppc64-be"),
    pytest.param(64, True, 22, "s390x", id="s390x-be"),  # 8-byte DT_HASH words
    pytest.param(64, False, 243, "riscv64", id="riscv64"),
    pytest.param(64, True, 0x1234, "em4660", id="unknown-machine"),
]


@pytest.mark.parametrize("hashing", ["gnu", "sysv", "sections", "none"])
@pytest.mark.parametrize(("bits", "big", "machine", "name"), ARCHES)
def test_hand_built(bits: int, big: bool, machine: int, name: str, hashing: str) -> None:
    data = build_elf(bits=bits, big=big, machine=machine, hashing=hashing, **SYNTH)
    symbols = hashing != "none"  # without any hash table or sections the count is unknown
    assert read_elf(data) == ELFInfo(
        machine=name,
        bits=bits,
        soname="libx.so.1",
        needed=("liba.so", "libb.so.2"),
        rpath=("/r", "/s"),
        runpath=("/q",),
        exported=frozenset({"f1", "v2", "f3"} if symbols else ()),
        imported=frozenset({"imp", "f1"} if symbols else ()),
    )


@needs_toolchain
@pytest.mark.parametrize("hashing", ["gnu", "sysv"])
@pytest.mark.parametrize(("bits", "big", "machine", "name"), ARCHES)
def test_hand_built_matches_readelf(
    tmp_path: Path, bits: int, big: bool, machine: int, name: str, hashing: str
) -> None:
    path = tmp_path / "lib.so"
    path.write_bytes(build_elf(bits=bits, big=big, machine=machine, hashing=hashing, **SYNTH))
    info, dyn = read_elf_file(path), readelf_dynamic(path)
    assert (list(info.needed), [info.soname]) == (dyn["NEEDED"], dyn["SONAME"])
    assert [":".join(info.rpath), ":".join(info.runpath)] == dyn["RPATH"] + dyn["RUNPATH"]
    assert (info.exported, info.imported) == readelf_symbols(path)
    assert f"ELF{bits}" in run("readelf", "-hW", path)


# --- malformed input: ELFError with a useful message, or a result; never anything else -------


def parses_or_elferror(data: bytes) -> ELFInfo | None:
    try:
        return read_elf(data)
    except ELFError:
        return None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"", "bad magic", id="empty"),
        pytest.param(b"MZ\x90\x00" + bytes(60), "bad magic", id="pe-magic"),
        pytest.param(b"\x7fELF", "truncated ELF identification", id="magic-only"),
        pytest.param(
            b"\x7fELF\x02\x01\x01" + bytes(29), "ELF header .* outside", id="short-header"
        ),
        pytest.param(b"\x7fELF\x03\x01\x01" + bytes(57), "class 3", id="bad-class"),
        pytest.param(b"\x7fELF\x01\x00\x01" + bytes(45), "encoding 0", id="bad-byte-order"),
    ],
)
def test_rejects_non_elf(data: bytes, message: str) -> None:
    assert is_elf(data) == data.startswith(b"\x7fELF")
    with pytest.raises(ELFError, match=message):
        read_elf(data)


STRTAB = struct.pack("<qQ", 5, BASE + 64 + 2 * 56)  # DT_STRTAB as build_elf writes it (ELF64)
BROKEN = {  # id: (hashing, bytes to find, replacement, message); SYNTH has 7 symbols, 4 unhashed
    "unterminated-string": ("gnu", b"/q\0", b"/qX", "DT_RUNPATH string at .* not NUL-terminated"),
    "small-phentsize": ("gnu", b"\x38\x00\x02\x00", b"\x08\x00\x02\x00", "e_phentsize 8 is small"),
    "small-shentsize": ("sections", b"\x40\x00\x02\x00", b"\x08\x00\x02\x00", "e_shentsize 8"),
    "gnu-symoffset": (
        "gnu",
        struct.pack("<4I", 1, 4, 1, 6),
        struct.pack("<4I", 1, 99, 1, 6),
        "below",
    ),
    "bad-syment": ("gnu", struct.pack("<qQ", 11, 24), struct.pack("<qQ", 11, 16), "DT_SYMENT 16"),
    "unmapped-strtab": ("gnu", STRTAB, struct.pack("<qQ", 5, 8), "not inside any PT_LOAD"),
    "no-strtab": ("gnu", STRTAB, struct.pack("<qQ", 0x70000000, 0), "no DT_STRTAB"),
    "huge-nchain": (
        "sysv",
        struct.pack("<3I", 1, 7, 6),
        struct.pack("<3I", 1, 2**32 - 1, 6),
        "4294967295",
    ),
}


@pytest.mark.parametrize(
    ("hashing", "old", "new", "message"), [pytest.param(*v, id=k) for k, v in BROKEN.items()]
)
def test_rejects_broken_structure(hashing: str, old: bytes, new: bytes, message: str) -> None:
    data = build_elf(hashing=hashing, **SYNTH)
    assert data.count(old) == 1
    with pytest.raises(ELFError, match=message):
        read_elf(data.replace(old, new))


def test_rejects_truncated_dynamic_segment() -> None:
    with pytest.raises(ELFError, match=r"PT_DYNAMIC segment .* outside the \d+-byte file"):
        read_elf(build_elf(**SYNTH)[:-8])


def test_read_elf_file_errors_name_the_path(tmp_path: Path) -> None:
    junk = tmp_path / "junk.so"
    junk.write_bytes(b"\x7fELF\x02\x01")
    with pytest.raises(ELFError, match=re.escape(f"{junk}: truncated")):
        read_elf_file(junk)
    with pytest.raises(FileNotFoundError):
        read_elf_file(tmp_path / "missing.so")


@needs_toolchain
@pytest.mark.parametrize("step", range(50), ids=lambda i: f"cut{i:02d}of50")
def test_truncated_library(libs: dict[str, Path], step: int) -> None:
    full = libs["tiny"].read_bytes()
    expected = read_elf(full)
    for data in (full, without_section_headers(full)):
        cut = data[: len(data) * step // 50]
        # Whatever the tail lost (.comment, later section headers) may be survivable, but a cut
        # must never produce a different answer.
        assert parses_or_elferror(cut) in (None, expected)


@needs_toolchain
@pytest.mark.parametrize("seed", range(20), ids=lambda i: f"seed{i:02d}")
def test_random_byte_flips(libs: dict[str, Path], seed: int) -> None:
    data = libs["tiny"].read_bytes()
    rng = random.Random(seed)
    for _ in range(25):  # 20 seeds x 25 = 500 mutated copies
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(len(mutated))
            # Extremes matter most: 0xff makes huge counts/offsets, 0 removes terminators.
            mutated[at] = rng.choice(
                (0, 0xFF, rng.randrange(256), mutated[at] ^ 1 << rng.randrange(8))
            )
        parses_or_elferror(bytes(mutated))


HEADERS = [
    build_elf(bits=b, big=e)[: 64 if b == 64 else 52] for b in (32, 64) for e in (False, True)
]


@settings(max_examples=200, deadline=None, database=None)
@given(header=st.sampled_from(HEADERS), tail=st.binary(max_size=2048))
def test_arbitrary_bytes_after_valid_header(header: bytes, tail: bytes) -> None:
    parses_or_elferror(header + tail)


names = st.text(st.characters(codec="utf-8", exclude_characters="\0:"), min_size=1, max_size=8)


@settings(
    max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    bits=st.sampled_from([32, 64]),
    big=st.booleans(),
    hashing=st.sampled_from(["gnu", "sysv", "sections"]),
    soname=st.none() | names,
    needed=st.lists(names, max_size=3).map(tuple),
    runpath=st.lists(names, max_size=3).map(tuple),
    exported=st.lists(names, max_size=4, unique=True).map(tuple),
    imported=st.lists(names, max_size=4, unique=True).map(tuple),
    edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=6),
)
def test_generated_images_round_trip_then_survive_edits(
    bits: int,
    big: bool,
    hashing: str,
    soname: str | None,
    needed: tuple[str, ...],
    runpath: tuple[str, ...],
    exported: tuple[str, ...],
    imported: tuple[str, ...],
    edits: list[tuple[int, int]],
) -> None:
    data = build_elf(
        bits=bits,
        big=big,
        soname=soname,
        needed=needed,
        runpath=":".join(runpath) or None,
        exported=exported,
        imported=imported,
        hashing=hashing,
    )
    info = read_elf(data)
    assert (info.soname, info.needed, info.runpath) == (soname, needed, runpath)
    assert info.exported == frozenset(exported)
    assert info.imported == frozenset(imported)
    mutated = bytearray(data)
    for at, value in edits:
        mutated[at % len(mutated)] = value
    parses_or_elferror(bytes(mutated))
