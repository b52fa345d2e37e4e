"""Tests for dllreg.binary.macho: hand-built thin/fat/big-endian images, real dylibs and extension
modules from PyPI's macOS numpy/scipy wheels, and hostile input that may only raise MachOError."""

from __future__ import annotations

import dataclasses
import os
import posixpath
import random
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dllreg.binary.macho import (
    MachOArch,
    MachOError,
    MachOInfo,
    is_macho,
    read_macho,
    read_macho_file,
)

# --- an independent Mach-O writer (constants from <mach-o/loader.h> and <mach-o/fat.h>) --------

CPU_I386, CPU_X86_64, CPU_ARM, CPU_ARM64 = 7, 0x01000007, 12, 0x0100000C
CPU_PPC, CPU_PPC64, CPU_ARM64_32 = 18, 0x01000012, 0x0200000C
MH_OBJECT, MH_EXECUTE, MH_DYLIB, MH_BUNDLE, MH_DSYM = 1, 2, 6, 8, 10
LC_SEGMENT_64, LC_UUID, LC_LOAD_DYLIB, LC_ID_DYLIB = 0x19, 0x1B, 0xC, 0xD
LC_LOAD_WEAK_DYLIB, LC_RPATH, LC_REEXPORT_DYLIB = 0x80000018, 0x8000001C, 0x8000001F
LC_LAZY_LOAD_DYLIB, LC_LOAD_UPWARD_DYLIB = 0x20, 0x80000023
LC_VERSION_MIN_MACOSX, LC_BUILD_VERSION = 0x24, 0x32

# A load command as data: (cmd, struct format of the fixed fields after cmd/cmdsize, their
# values, trailing bytes). The writer fills in cmdsize, padded to the ABI's alignment.
Command = tuple[int, str, tuple[int, ...], bytes]


def dylib(cmd: int, name: str | bytes) -> Command:
    raw = name.encode() if isinstance(name, str) else name
    # name offset 24, timestamp, current_version 1.2.3, compatibility_version 1.0.0
    return (cmd, "4I", (24, 2, 0x10203, 0x10000), raw + b"\0")


def rpath(path: str) -> Command:
    return (LC_RPATH, "I", (12,), path.encode() + b"\0")


def build_version(minos: int, platform: int = 1) -> Command:
    # platform (1 macOS, 2 iOS, 6 Mac Catalyst), minos, sdk 14.0, one tool (ld 1000.0)
    return (LC_BUILD_VERSION, "6I", (platform, minos, 0x0E0000, 1, 3, 0x3E80000), b"")


def version_min(version: int) -> Command:
    return (LC_VERSION_MIN_MACOSX, "2I", (version, 0x0E0000), b"")


UUID: Command = (LC_UUID, "", (), bytes(range(16)))
SEGMENT: Command = (LC_SEGMENT_64, "", (), b"__TEXT".ljust(64, b"\0"))  # segment_command_64


def build_macho(
    commands: list[Command],
    *,
    bits: int = 64,
    big: bool = False,
    cputype: int = CPU_X86_64,
    subtype: int = 3,
    filetype: int = MH_DYLIB,
    align: int | None = None,
    ncmds: int | None = None,
    sizeofcmds: int | None = None,
    tail: bytes = b"",
) -> bytes:
    o = ">" if big else "<"
    step = align if align is not None else bits // 8
    blobs = []
    for cmd, fmt, values, trailing in commands:
        body = struct.pack(o + fmt, *values) + trailing
        size = 8 + len(body)
        size += -size % step
        blobs.append(struct.pack(o + "II", cmd, size) + body.ljust(size - 8, b"\0"))
    cmds = b"".join(blobs)
    magic = 0xFEEDFACF if bits == 64 else 0xFEEDFACE
    n = len(blobs) if ncmds is None else ncmds
    size = len(cmds) if sizeofcmds is None else sizeofcmds
    header = struct.pack(o + "7I", magic, cputype, subtype, filetype, n, size, 0x00200085)
    return header + (b"\0\0\0\0" if bits == 64 else b"") + cmds + tail


def build_fat(
    slices: list[tuple[int, int, bytes]], *, fat64: bool = False, align: int = 12
) -> bytes:
    """A universal file: big-endian fat header, then each (cputype, subtype, image) aligned."""
    entry = 32 if fat64 else 20
    out = bytearray(struct.pack(">II", 0xCAFEBABF if fat64 else 0xCAFEBABE, len(slices)))
    out.extend(bytes(entry * len(slices)))
    for i, (cputype, subtype, image) in enumerate(slices):
        out.extend(bytes(-len(out) % (1 << align)))
        fields = (cputype, subtype, len(out), len(image), align)
        fmt = ">IIQQII" if fat64 else ">5I"
        struct.pack_into(fmt, out, 8 + i * entry, *fields, *((0,) if fat64 else ()))
        out.extend(image)
    return bytes(out)


DYLIB_COMMANDS = [
    SEGMENT,
    dylib(LC_ID_DYLIB, "@rpath/libx.1.dylib"),
    dylib(LC_LOAD_DYLIB, "/usr/lib/libSystem.B.dylib"),
    dylib(LC_LOAD_WEAK_DYLIB, "@rpath/libweak.dylib"),
    dylib(LC_REEXPORT_DYLIB, "@loader_path/../lib/libre.2.dylib"),
    UUID,
    dylib(LC_LAZY_LOAD_DYLIB, "liblazy.dylib"),
    dylib(LC_LOAD_UPWARD_DYLIB, "@executable_path/libup.dylib"),
    rpath("@loader_path/../lib"),
    build_version(0x0B0000),
    rpath("/opt/x/lib"),
    dylib(LC_LOAD_DYLIB, "/usr/lib/libc++.1.dylib"),
]
DYLIB_FACTS = MachOArch(
    arch="x86_64",
    bits=64,
    filetype="dylib",
    install_name="@rpath/libx.1.dylib",
    needed=(
        "/usr/lib/libSystem.B.dylib",
        "@rpath/libweak.dylib",
        "@loader_path/../lib/libre.2.dylib",
        "liblazy.dylib",
        "@executable_path/libup.dylib",
        "/usr/lib/libc++.1.dylib",
    ),
    weak=frozenset({"@rpath/libweak.dylib"}),
    rpaths=("@loader_path/../lib", "/opt/x/lib"),
    min_os="11.0",
)
BUNDLE_COMMANDS = [
    dylib(LC_LOAD_DYLIB, "@loader_path/../.dylibs/libgfortran.5.dylib"),
    dylib(LC_LOAD_DYLIB, "/usr/lib/libSystem.B.dylib"),
    version_min(0x000A0608),
]


def bundle_facts(arch: str, bits: int) -> MachOArch:
    return MachOArch(
        arch=arch,
        bits=bits,
        filetype="bundle",
        install_name=None,
        needed=("@loader_path/../.dylibs/libgfortran.5.dylib", "/usr/lib/libSystem.B.dylib"),
        weak=frozenset(),
        rpaths=(),
        min_os="10.6.8",
    )


def x86_64_dylib() -> bytes:
    return build_macho(DYLIB_COMMANDS)


def arm64_dylib() -> bytes:
    return build_macho(DYLIB_COMMANDS, cputype=CPU_ARM64, subtype=0)


# --- hand-built images --------------------------------------------------------------------------


def test_thin_64bit_dylib() -> None:
    data = x86_64_dylib()
    assert is_macho(data)
    assert read_macho(data) == MachOInfo((DYLIB_FACTS,))


def test_thin_32bit_bundle() -> None:
    data = build_macho(BUNDLE_COMMANDS, bits=32, cputype=CPU_I386, filetype=MH_BUNDLE)
    assert read_macho(data) == MachOInfo((bundle_facts("i386", 32),))


@pytest.mark.parametrize(
    ("bits", "cputype", "arch"), [(32, CPU_PPC, "ppc"), (64, CPU_PPC64, "ppc64")]
)
def test_big_endian_powerpc(bits: int, cputype: int, arch: str) -> None:
    data = build_macho(BUNDLE_COMMANDS, bits=bits, big=True, cputype=cputype, filetype=MH_BUNDLE)
    assert data[:4] == (b"\xfe\xed\xfa\xcf" if bits == 64 else b"\xfe\xed\xfa\xce")
    assert is_macho(data)
    assert read_macho(data) == MachOInfo((bundle_facts(arch, bits),))


@pytest.mark.parametrize("fat64", [False, True], ids=["FAT_MAGIC", "FAT_MAGIC_64"])
def test_fat_x86_64_and_arm64(fat64: bool) -> None:
    data = build_fat([(CPU_X86_64, 3, x86_64_dylib()), (CPU_ARM64, 0, arm64_dylib())], fat64=fat64)
    assert is_macho(data)
    info = read_macho(data)
    assert [a.arch for a in info.arches] == ["x86_64", "arm64"]
    assert info.arches == (DYLIB_FACTS, dataclasses.replace(DYLIB_FACTS, arch="arm64"))


@pytest.mark.parametrize(
    ("bits", "cputype", "subtype", "filetype", "arch", "kind"),
    [
        (64, CPU_ARM64, 2, MH_EXECUTE, "arm64e", "execute"),
        (64, CPU_ARM64, 0x80000002, MH_DYLIB, "arm64e", "dylib"),  # with the ptrauth ABI bit
        (64, CPU_ARM64, 0, MH_OBJECT, "arm64", "object"),
        (32, CPU_ARM, 9, MH_DSYM, "arm", "dsym"),
        (32, CPU_ARM64_32, 1, 7, "arm64_32", "dylinker"),
        (64, CPU_X86_64, 8, MH_DYLIB, "x86_64", "dylib"),  # x86_64h is still x86_64
        (64, 0x01000099, 0, 99, "cpu0x1000099", "type99"),
        (32, 0xFFFFFFFF, 0, 0, "cpu0xffffffff", "type0"),
    ],
)
def test_arch_and_filetype_names(
    bits: int, cputype: int, subtype: int, filetype: int, arch: str, kind: str
) -> None:
    data = build_macho([], bits=bits, cputype=cputype, subtype=subtype, filetype=filetype)
    assert read_macho(data) == MachOInfo(
        (MachOArch(arch, bits, kind, None, (), frozenset(), (), None),)
    )


def test_build_version_wins_over_version_min_in_any_order() -> None:
    for commands in ([version_min(0x0A0D00), build_version(0x0C0301)], [build_version(0x0C0301)]):
        assert read_macho(build_macho(commands)).arches[0].min_os == "12.3.1"
        assert read_macho(build_macho(commands[::-1])).arches[0].min_os == "12.3.1"
    assert read_macho(build_macho([version_min(0x0A0D00)])).arches[0].min_os == "10.13"


@pytest.mark.parametrize(
    ("builds", "min_os"),
    [
        pytest.param([(0x0E0000, 6), (0x0B0000, 1)], "11.0", id="zippered-catalyst-first"),
        pytest.param([(0x0B0000, 1), (0x0E0000, 6)], "11.0", id="zippered-macos-first"),
        pytest.param([(0x0C0000, 1), (0x0D0000, 1)], "12.0", id="first-of-a-platform"),
        pytest.param([(0x0F0000, 2)], "15.0", id="ios-only"),
    ],
)
def test_macos_build_version_preferred(builds: list[tuple[int, int]], min_os: str) -> None:
    commands = [build_version(minos, platform) for minos, platform in builds]
    assert read_macho(build_macho(commands)).arches[0].min_os == min_os


def test_unaligned_cmdsize_and_first_id_are_accepted() -> None:
    commands = [dylib(LC_ID_DYLIB, "first"), dylib(LC_ID_DYLIB, "second"), rpath("/r")]
    info = read_macho(build_macho(commands, align=1)).arches[0]
    assert (info.install_name, info.rpaths) == ("first", ("/r",))


def test_weak_and_strong_load_of_one_name() -> None:
    commands = [
        dylib(LC_LOAD_WEAK_DYLIB, "/a"),
        dylib(LC_LOAD_DYLIB, "/a"),
        dylib(LC_LOAD_DYLIB, "/b"),
    ]
    info = read_macho(build_macho(commands)).arches[0]
    assert (info.needed, info.weak) == (("/a", "/a", "/b"), frozenset({"/a"}))


def test_undecodable_names_round_trip() -> None:
    raw = b"@rpath/lib\xff\xfe.dylib"
    info = read_macho(build_macho([dylib(LC_ID_DYLIB, raw), dylib(LC_LOAD_DYLIB, raw)])).arches[0]
    assert info.install_name is not None and os.fsencode(info.install_name) == raw
    assert info.needed == (info.install_name,)


def test_fewer_ncmds_than_commands_reads_only_ncmds() -> None:
    info = read_macho(build_macho(DYLIB_COMMANDS, ncmds=2)).arches[0]
    assert (info.install_name, info.needed) == ("@rpath/libx.1.dylib", ())


def test_read_macho_file(tmp_path: Path) -> None:
    good = tmp_path / "libx.dylib"
    good.write_bytes(x86_64_dylib())
    assert read_macho_file(good) == MachOInfo((DYLIB_FACTS,))
    assert read_macho_file(str(good)) == read_macho_file(good)
    junk = tmp_path / "junk.dylib"
    junk.write_bytes(b"\xcf\xfa\xed\xfe\x07")
    with pytest.raises(MachOError, match=re.escape(f"{junk}: Mach-O header")):
        read_macho_file(junk)
    with pytest.raises(FileNotFoundError):
        read_macho_file(tmp_path / "missing.dylib")


# --- malformed input: MachOError with a useful message, or a result; never anything else -------


def parses_or_macho_error(data: bytes) -> MachOInfo | None:
    macho = is_macho(data)  # must never raise either
    try:
        info = read_macho(data)
    except MachOError:
        return None
    assert macho, "read_macho accepted data that is_macho rejects"
    return info


JAVA_CLASS = bytes.fromhex("cafebabe00000041") + bytes(64)  # minor 0, major 65 (Java 21)
MAGICS = {  # name: (first bytes of the file, size of the header with one fat_arch)
    "MH_MAGIC": (b"\xce\xfa\xed\xfe", 28),
    "MH_CIGAM": (b"\xfe\xed\xfa\xce", 28),
    "MH_MAGIC_64": (b"\xcf\xfa\xed\xfe", 32),
    "MH_CIGAM_64": (b"\xfe\xed\xfa\xcf", 32),
    "FAT_MAGIC": (b"\xca\xfe\xba\xbe\0\0\0\1", 8 + 20),
    "FAT_MAGIC_64": (b"\xca\xfe\xba\xbf\0\0\0\1", 8 + 32),
}


@pytest.mark.parametrize(
    "keep", [4, 7, 16, 27, -1], ids=lambda k: f"keep{k}" if k > 0 else "all-but-1"
)
@pytest.mark.parametrize(("start", "header"), MAGICS.values(), ids=MAGICS.keys())
def test_truncated_headers(start: bytes, header: int, keep: int) -> None:
    fat = start[:2] == b"\xca\xfe"
    data = (start + bytes(64))[: keep % header]
    assert is_macho(data) != fat  # a thin magic alone is enough, as for is_elf
    message = "fat header|fat_arch table of 1" if fat else "Mach-O header"
    with pytest.raises(MachOError, match=message):
        read_macho(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"", "bad magic", id="empty"),
        pytest.param(b"\xcf\xfa\xed", "bad magic", id="three-bytes"),
        pytest.param(b"\x7fELF" + bytes(60), "bad magic", id="elf"),
        pytest.param(b"MZ\x90\x00" + bytes(60), "bad magic", id="pe"),
        pytest.param(JAVA_CLASS, "nfat_arch 65 .*Java", id="java-class"),
        pytest.param(
            bytes.fromhex("cafebabe00030034") + bytes(64), "nfat_arch 196660", id="java-8"
        ),
        pytest.param(bytes.fromhex("cafebabe00000000") + bytes(64), "nfat_arch 0", id="fat-empty"),
    ],
)
def test_rejects_non_macho(data: bytes, message: str) -> None:
    assert not is_macho(data)
    with pytest.raises(MachOError, match=message):
        read_macho(data)


def patched(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


ID_ONLY = build_macho([dylib(LC_ID_DYLIB, "@rpath/libid.dylib"), rpath("/r")])
FIRST_CMD, RPATH_AT = 32, 32 + 48  # the 48-byte LC_ID_DYLIB (8-byte aligned), then LC_RPATH
BROKEN = {  # id: (data, message)
    "ncmds-huge": (patched(ID_ONLY, 16, "<I", 0xFFFFFFFF), "ncmds 4294967295 cannot fit"),
    "ncmds-past-commands": (patched(ID_ONLY, 16, "<I", 3), "load command 2 .* past sizeofcmds"),
    "sizeofcmds-past-file": (patched(ID_ONLY, 20, "<I", 0xFFFFFFF0), "load commands .* outside"),
    "cmdsize-0": (
        patched(ID_ONLY, FIRST_CMD + 4, "<I", 0),
        r"load command 0 \(0xd\) has bad cmdsize 0",
    ),
    "cmdsize-4": (patched(ID_ONLY, FIRST_CMD + 4, "<I", 4), "bad cmdsize 4"),
    "cmdsize-past-sizeofcmds": (patched(ID_ONLY, FIRST_CMD + 4, "<I", 4096), "bad cmdsize 4096"),
    "cmdsize-smaller-than-dylib_command": (
        patched(build_macho([dylib(LC_LOAD_DYLIB, "x")], align=1), FIRST_CMD + 4, "<I", 16),
        "LC_LOAD_DYLIB cmdsize 16 is smaller than its 24-byte",
    ),
    "lc_str-at-cmdsize": (patched(ID_ONLY, FIRST_CMD + 8, "<I", 48), "LC_ID_DYLIB name offset 48"),
    "lc_str-huge": (patched(ID_ONLY, FIRST_CMD + 8, "<I", 0xFFFFFFFF), "name offset 4294967295"),
    "lc_str-inside-fixed-fields": (
        patched(ID_ONLY, FIRST_CMD + 8, "<I", 8),
        "name offset 8 is outside",
    ),
    "rpath-offset-past-cmdsize": (
        patched(ID_ONLY, RPATH_AT + 8, "<I", 16),
        "LC_RPATH name offset 16",
    ),
    "name-not-terminated": (
        build_macho([(LC_LOAD_WEAK_DYLIB, "4I", (24, 0, 0, 0), b"12345678")]),
        "LC_LOAD_WEAK_DYLIB name at 0x38 is not NUL-terminated",
    ),
    "short-build-version": (
        build_macho([(LC_BUILD_VERSION, "I", (1,), b"")]),
        "LC_BUILD_VERSION cmdsize 16 is too small",
    ),
    "short-version-min": (
        build_macho([(LC_VERSION_MIN_MACOSX, "", (), b"")]),
        "LC_VERSION_MIN_MACOSX cmdsize 8 is too small",
    ),
}


@pytest.mark.parametrize(("data", "message"), [pytest.param(*v, id=k) for k, v in BROKEN.items()])
def test_rejects_broken_thin(data: bytes, message: str) -> None:
    assert read_macho(ID_ONLY).arches[0].rpaths == ("/r",)  # the unpatched file is fine
    with pytest.raises(MachOError, match=message):
        read_macho(data)


FAT = build_fat([(CPU_X86_64, 3, x86_64_dylib()), (CPU_ARM64, 0, arm64_dylib())])
FAT_ARM64_AT = 0x2000  # second slice, after the first at 0x1000 aligned to 4 KiB
ARCH1 = 8 + 20  # fat_arch 1: cputype, cpusubtype, offset (+8), size (+12), align
BROKEN_FAT = {
    "slice-size-past-end": (patched(FAT, ARCH1 + 12, ">I", len(FAT)), "fat slice 1 .* outside"),
    "slice-offset-past-end": (patched(FAT, ARCH1 + 8, ">I", len(FAT)), "fat slice 1 .* outside"),
    "offset-huge": (patched(FAT, 8 + 8, ">I", 0xFFFFFFFF), "fat slice 0 .* outside"),
    "slices-overlap": (
        patched(FAT, ARCH1 + 8, ">I", 0x1010),
        "fat slices at 0x1000 and 0x1010 overlap",
    ),
    "same-slice-twice": (patched(FAT, ARCH1 + 8, ">I", 0x1000), "overlap"),
    "slice-over-header": (
        patched(FAT, 8 + 8, ">I", 16),
        "fat slice 0 at 0x10 overlaps the fat header",
    ),
    "nfat-too-many": (patched(FAT, 4, ">I", 31), "nfat_arch 31"),
    "table-past-end": (patched(FAT, 4, ">I", 30)[:200], "fat_arch table of 30 entries .* outside"),
    "cputype-mismatch": (
        patched(FAT, 8, ">I", CPU_ARM64),
        "fat slice 0 says cputype 0x100000c but holds",
    ),
    "slice-not-macho": (patched(FAT, FAT_ARM64_AT, "<I", 0), "fat slice 1 at 0x2000: .*bad magic"),
    "nested-fat": (
        patched(FAT, FAT_ARM64_AT, ">II", 0xCAFEBABE, 1),
        "fat slice 1 at 0x2000: not a Mach-O file",
    ),
    "slice-ncmds-huge": (
        patched(FAT, FAT_ARM64_AT + 16, "<I", 0xFFFFFFFF),
        "fat slice 1 at 0x2000: ncmds 4294967295",
    ),
}


@pytest.mark.parametrize(
    ("data", "message"), [pytest.param(*v, id=k) for k, v in BROKEN_FAT.items()]
)
def test_rejects_broken_fat(data: bytes, message: str) -> None:
    assert FAT[FAT_ARM64_AT : FAT_ARM64_AT + 4] == b"\xcf\xfa\xed\xfe"
    assert read_macho(FAT).arches[1].arch == "arm64"  # the unpatched file is fine
    with pytest.raises(MachOError, match=message):
        read_macho(data)


def test_fat_slices_checked_by_is_macho() -> None:
    assert is_macho(FAT)
    for key in ("slice-offset-past-end", "slices-overlap", "slice-over-header", "nfat-too-many"):
        assert not is_macho(BROKEN_FAT[key][0])
    assert is_macho(BROKEN_FAT["slice-not-macho"][0])  # only the fat table is checked


def mutate(data: bytes, rng: random.Random, *hot: range) -> bytes:
    """1-6 byte edits, mostly within the *hot* ranges (headers and load commands)."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        at = rng.choice(rng.choice(hot)) if rng.random() < 0.9 else rng.randrange(len(out))
        # Extremes matter most: 0xff makes huge counts/offsets, 0 removes terminators.
        out[at] = rng.choice((0, 0xFF, rng.randrange(256), out[at] ^ 1 << rng.randrange(8)))
    return bytes(out)


@pytest.mark.parametrize("seed", range(10), ids=lambda i: f"seed{i:02d}")
def test_random_byte_flips_hand_built(seed: int) -> None:
    rng = random.Random(seed)
    thin = x86_64_dylib()
    slices = [range(0, 48), range(0x1000, 0x1000 + len(thin)), range(FAT_ARM64_AT, len(FAT))]
    for _ in range(30):  # 10 seeds x 30 x 2 = 600 mutated copies
        parses_or_macho_error(mutate(thin, rng, range(len(thin))))
        parses_or_macho_error(mutate(FAT, rng, *slices))


@pytest.mark.parametrize("cut", range(0, 41))
def test_truncated_hand_built(cut: int) -> None:
    thin = x86_64_dylib()
    data = thin[: len(thin) * cut // 40]
    assert parses_or_macho_error(data) == (MachOInfo((DYLIB_FACTS,)) if cut == 40 else None)
    fat = build_fat([(CPU_X86_64, 3, thin)], align=4)
    assert parses_or_macho_error(fat[: len(fat) * cut // 40]) == (
        read_macho(fat) if cut == 40 else None
    )


HEADERS_64 = [
    build_macho([], big=big, cputype=cputype)[:28]
    for big in (False, True)
    for cputype in (CPU_X86_64, CPU_ARM64)
]


@settings(max_examples=300, deadline=None, database=None)
@given(
    header=st.sampled_from(HEADERS_64),
    ncmds=st.integers(0, 40) | st.just(0xFFFFFFFF),
    sizeofcmds=st.none() | st.integers(0, 2**32 - 1),
    tail=st.binary(max_size=1024),
)
def test_arbitrary_bytes_after_valid_mach_header_64(
    header: bytes, ncmds: int, sizeofcmds: int | None, tail: bytes
) -> None:
    o = ">" if header[0] == 0xFE else "<"
    counts = struct.pack(o + "II", ncmds, len(tail) if sizeofcmds is None else sizeofcmds)
    parses_or_macho_error(header[:16] + counts + header[24:28] + bytes(4) + tail)


KNOWN_CMDS = [
    LC_LOAD_DYLIB,
    LC_ID_DYLIB,
    LC_LOAD_WEAK_DYLIB,
    LC_RPATH,
    LC_REEXPORT_DYLIB,
    LC_LAZY_LOAD_DYLIB,
    LC_LOAD_UPWARD_DYLIB,
    LC_VERSION_MIN_MACOSX,
    LC_BUILD_VERSION,
    LC_UUID,
]
raw_commands = st.lists(
    st.tuples(st.sampled_from(KNOWN_CMDS), st.integers(0, 64), st.binary(max_size=48)), max_size=8
)


@settings(max_examples=300, deadline=None, database=None)
@given(big=st.booleans(), commands=raw_commands, extra=st.integers(-16, 16))
def test_plausible_but_hostile_load_commands(
    big: bool, commands: list[tuple[int, int, bytes]], extra: int
) -> None:
    """Known command ids with arbitrary cmdsize, lc_str offsets and payloads."""
    o = ">" if big else "<"
    body = b"".join(struct.pack(o + "II", cmd, size) + payload for cmd, size, payload in commands)
    header = struct.pack(o + "8I", 0xFEEDFACF, CPU_ARM64, 0, MH_DYLIB, len(commands), 0, 0, 0)
    header = patched(header, 20, o + "I", max(0, len(body) + extra))
    parses_or_macho_error(header + body)


names = st.text(st.characters(codec="utf-8", exclude_characters="\0"), min_size=1, max_size=12)
LOAD_KINDS = [
    LC_LOAD_DYLIB,
    LC_LOAD_WEAK_DYLIB,
    LC_REEXPORT_DYLIB,
    LC_LAZY_LOAD_DYLIB,
    LC_LOAD_UPWARD_DYLIB,
]


@settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    bits=st.sampled_from([32, 64]),
    big=st.booleans(),
    install_name=st.none() | names,
    loads=st.lists(st.tuples(st.sampled_from(LOAD_KINDS), names), max_size=5),
    rpaths=st.lists(names, max_size=3),
    fat=st.sampled_from([None, False, True]),
    edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=6),
)
def test_generated_images_round_trip_then_survive_edits(
    bits: int,
    big: bool,
    install_name: str | None,
    loads: list[tuple[int, str]],
    rpaths: list[str],
    fat: bool | None,
    edits: list[tuple[int, int]],
) -> None:
    commands = [dylib(LC_ID_DYLIB, install_name)] if install_name is not None else []
    commands += [dylib(kind, name) for kind, name in loads] + [rpath(p) for p in rpaths]
    cputype = CPU_ARM64 if bits == 64 else CPU_ARM
    data = build_macho(commands, bits=bits, big=big, cputype=cputype, filetype=MH_BUNDLE)
    if fat is not None:
        data = build_fat([(cputype, 0, data)], fat64=fat, align=3)
    (info,) = read_macho(data).arches
    assert (info.install_name, info.rpaths) == (install_name, tuple(rpaths))
    assert info.needed == tuple(name for _, name in loads)
    assert info.weak == {name for kind, name in loads if kind == LC_LOAD_WEAK_DYLIB}
    mutated = bytearray(data)
    for at, value in edits:
        mutated[at % len(mutated)] = value
    parses_or_macho_error(bytes(mutated))


# --- real files from PyPI's macOS wheels ---------------------------------------------------------

DOWNLOADS = Path(__file__).resolve().parent.parent / ".cache" / "downloads"
WHEELS = {  # file name: pip download arguments
    "scipy-1.17.1-cp311-cp311-macosx_14_0_arm64.whl": (
        "--platform",
        "macosx_14_0_arm64",
        "scipy==1.17.1",
    ),
    "numpy-2.4.6-cp311-cp311-macosx_10_9_x86_64.whl": (
        "--platform",
        "macosx_10_9_x86_64",
        "numpy==2.4.6",
    ),
}


@pytest.fixture(scope="session")
def mac_wheels() -> dict[str, dict[str, bytes]]:
    """{"scipy"/"numpy": {member path: bytes}} of every .so/.dylib, downloading wheels once."""
    DOWNLOADS.mkdir(parents=True, exist_ok=True)
    out = {}
    for filename, args in WHEELS.items():
        path = DOWNLOADS / filename
        if not path.exists():
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
            ]
            cmd += ["--python-version", "3.11", "-d", str(DOWNLOADS), *args]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            assert proc.returncode == 0 and path.exists(), f"{cmd} failed:\n{proc.stderr}"
        with zipfile.ZipFile(path) as zf:
            out[filename.split("-")[0]] = {
                name: zf.read(name) for name in zf.namelist() if name.endswith((".so", ".dylib"))
            }
    return out


def facts(
    where: tuple[str, str],
    filetype: str,
    install_name: str | None,
    needed: tuple[str, ...],
    rpaths: tuple[str, ...] = (),
) -> MachOArch:
    arch, min_os = where
    return MachOArch(arch, 64, filetype, install_name, needed, frozenset(), rpaths, min_os)


SYSTEM, LIBCXX = "/usr/lib/libSystem.B.dylib", "/usr/lib/libc++.1.dylib"
ACCELERATE = "/System/Library/Frameworks/Accelerate.framework/Versions/A/Accelerate"
GFORTRAN = "@loader_path/../.dylibs/libgfortran.5.dylib"
SCIPY = ("arm64", "14.0")  # min_os from LC_BUILD_VERSION
NUMPY = ("x86_64", "10.9")  # min_os from LC_VERSION_MIN_MACOSX
HOMEBREW_GCC = "/opt/homebrew/Cellar/gcc@13/13.4.0/lib/gcc/13"
OBSERVED = {  # what the pinned wheels hold; delocate names its copies /DLC/<pkg>/.dylibs/<file>
    ("scipy", "scipy/.dylibs/libgfortran.5.dylib"): facts(
        SCIPY,
        "dylib",
        "/DLC/scipy/.dylibs/libgfortran.5.dylib",
        ("@loader_path/libquadmath.0.dylib", "@loader_path/libgcc_s.1.1.dylib", SYSTEM),
    ),
    ("scipy", "scipy/.dylibs/libquadmath.0.dylib"): facts(
        SCIPY, "dylib", "/DLC/scipy/.dylibs/libquadmath.0.dylib", (SYSTEM,), ("@loader_path",)
    ),
    ("scipy", "scipy/.dylibs/libgcc_s.1.1.dylib"): facts(  # a universal file with one slice
        ("arm64", "11.0"), "dylib", "/DLC/scipy/.dylibs/libgcc_s.1.1.dylib", (SYSTEM,)
    ),
    ("scipy", "scipy/odr/__odrpack.cpython-311-darwin.so"): facts(
        SCIPY, "bundle", None, (GFORTRAN, ACCELERATE, SYSTEM)
    ),
    ("scipy", "scipy/interpolate/_fitpack.cpython-311-darwin.so"): facts(
        SCIPY, "bundle", None, (GFORTRAN, SYSTEM)
    ),
    ("scipy", "scipy/linalg/_fblas.cpython-311-darwin.so"): facts(  # build-machine rpaths leaked
        SCIPY,
        "bundle",
        None,
        (ACCELERATE, SYSTEM),
        (
            "@loader_path",
            f"{HOMEBREW_GCC}/gcc/aarch64-apple-darwin23/13",
            f"{HOMEBREW_GCC}/gcc",
            HOMEBREW_GCC,
        ),
    ),
    ("numpy", "numpy/.dylibs/libscipy_openblas64_.dylib"): facts(
        NUMPY,
        "dylib",
        "/DLC/numpy/.dylibs/libscipy_openblas64_.dylib",
        (
            "@loader_path/libgfortran.5.dylib",
            "@loader_path/libquadmath.0.dylib",
            SYSTEM,
            "@loader_path/libgcc_s.1.1.dylib",
        ),
    ),
    ("numpy", "numpy/.dylibs/libgfortran.5.dylib"): facts(
        NUMPY,
        "dylib",
        "/DLC/numpy/.dylibs/libgfortran.5.dylib",
        ("@loader_path/libquadmath.0.dylib", "@loader_path/libgcc_s.1.1.dylib", SYSTEM),
        ("@loader_path/",),
    ),
    ("numpy", "numpy/.dylibs/libgcc_s.1.1.dylib"): facts(  # a universal file with one slice
        ("x86_64", "10.8"),
        "dylib",
        "/DLC/numpy/.dylibs/libgcc_s.1.1.dylib",
        (SYSTEM,),
        ("@loader_path/",),
    ),
    ("numpy", "numpy/_core/_multiarray_umath.cpython-311-darwin.so"): facts(
        NUMPY,
        "bundle",
        None,
        ("@loader_path/../.dylibs/libscipy_openblas64_.dylib", LIBCXX, SYSTEM),
    ),
}


@pytest.mark.realwheels
@pytest.mark.parametrize(
    ("wheel", "member"), list(OBSERVED), ids=[f"{w}:{posixpath.basename(m)}" for w, m in OBSERVED]
)
def test_real_wheel_files(mac_wheels: dict[str, dict[str, bytes]], wheel: str, member: str) -> None:
    data = mac_wheels[wheel][member]
    fat = data[:4] == b"\xca\xfe\xba\xbe"
    assert fat == member.endswith("libgcc_s.1.1.dylib")  # delocate's libgcc_s stays universal
    assert is_macho(data)
    assert read_macho(data) == MachOInfo((OBSERVED[wheel, member],))


@pytest.mark.realwheels
@pytest.mark.parametrize(
    ("wheel", "count", "arch"), [("scipy", 112, "arm64"), ("numpy", 23, "x86_64")]
)
def test_every_real_binary_parses_and_loader_paths_resolve(
    mac_wheels: dict[str, dict[str, bytes]], wheel: str, count: int, arch: str
) -> None:
    members = mac_wheels[wheel]
    assert len(members) == count
    linking_vendored = set()
    for member, data in members.items():
        (info,) = read_macho(data).arches
        assert (info.arch, info.bits, info.weak) == (arch, 64, frozenset())
        assert info.filetype == ("dylib" if "/.dylibs/" in member else "bundle")
        assert (info.install_name is None) == (info.filetype == "bundle")
        for name in info.needed:
            if name.startswith("@loader_path/"):  # each must name a file shipped in the wheel
                target = posixpath.normpath(posixpath.join(posixpath.dirname(member), name[13:]))
                assert target in members, (member, name)
                if "/.dylibs/" not in member:
                    linking_vendored.add(member)
            else:
                assert name.startswith(("/usr/lib/", "/System/Library/Frameworks/")), (member, name)
    if wheel == "scipy":
        assert sorted(linking_vendored) == [
            "scipy/interpolate/_dfitpack.cpython-311-darwin.so",
            "scipy/interpolate/_fitpack.cpython-311-darwin.so",
            "scipy/odr/__odrpack.cpython-311-darwin.so",
        ]
    else:
        assert sorted(linking_vendored) == [
            "numpy/_core/_multiarray_umath.cpython-311-darwin.so",
            "numpy/linalg/_umath_linalg.cpython-311-darwin.so",
            "numpy/linalg/lapack_lite.cpython-311-darwin.so",
        ]


def commands_end(data: bytes) -> int:
    """End of a little-endian 64-bit thin file's load commands (header fields read directly)."""
    assert data[:4] == b"\xcf\xfa\xed\xfe"
    return 32 + int(struct.unpack_from("<I", data, 20)[0])


@pytest.mark.realwheels
@pytest.mark.parametrize("step", range(40), ids=lambda i: f"cut{i:02d}of40")
def test_truncated_real_dylib(mac_wheels: dict[str, dict[str, bytes]], step: int) -> None:
    data = mac_wheels["scipy"]["scipy/.dylibs/libgfortran.5.dylib"]
    expected, end = read_macho(data), commands_end(data)
    # 32 cuts through the header and load commands, 8 through the rest (code, never read).
    cut = end * step // 32 if step < 32 else end + (len(data) - end) * (step - 31) // 9
    assert parses_or_macho_error(data[:cut]) == (expected if cut >= end else None)
    fat = mac_wheels["scipy"]["scipy/.dylibs/libgcc_s.1.1.dylib"]
    assert parses_or_macho_error(fat[: len(fat) * step // 40]) is None  # the slice reaches the end


@pytest.mark.realwheels
@pytest.mark.parametrize("seed", range(12), ids=lambda i: f"seed{i:02d}")
def test_random_byte_flips_real(mac_wheels: dict[str, dict[str, bytes]], seed: int) -> None:
    rng = random.Random(seed)
    thin = mac_wheels["numpy"]["numpy/.dylibs/libgfortran.5.dylib"]
    fat = mac_wheels["numpy"]["numpy/.dylibs/libgcc_s.1.1.dylib"]
    for i in range(25):  # 12 seeds x 25 = 300 mutated copies
        if i % 5:
            parses_or_macho_error(mutate(thin, rng, range(commands_end(thin))))
        else:  # the fat header, and the slice's header and load commands at 0x4000
            slice_at = 0x4000
            hot = range(slice_at, slice_at + commands_end(fat[slice_at:]))
            parses_or_macho_error(mutate(fat, rng, range(48), hot))
