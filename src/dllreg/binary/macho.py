"""Read the dynamic-linking facts of a Mach-O file: install name, dylib loads, rpaths, minimum OS.

Pure Python, stdlib only: thin 32/64-bit images in either byte order and fat (universal) files
with FAT_MAGIC or FAT_MAGIC_64 headers. Only the load commands are read, as dyld does. Malformed
input of any kind raises MachOError and nothing else, so callers can feed it arbitrary files.
"""

from __future__ import annotations

import dataclasses
import os
import struct

__all__ = ["MachOArch", "MachOError", "MachOInfo", "is_macho", "read_macho", "read_macho_file"]

_MH_MAGIC, _MH_MAGIC_64 = 0xFEEDFACE, 0xFEEDFACF  # as read little-endian from a LE file
_MH_CIGAM, _MH_CIGAM_64 = 0xCEFAEDFE, 0xCFFAEDFE  # the same magics in a big-endian file
_FAT_MAGIC, _FAT_MAGIC_64 = 0xCAFEBABE, 0xCAFEBABF  # fat headers are always big-endian
_THIN = {
    _MH_MAGIC: ("<", 32),
    _MH_MAGIC_64: ("<", 64),
    _MH_CIGAM: (">", 32),
    _MH_CIGAM_64: (">", 64),
}
# Java class files share 0xCAFEBABE; their next word (minor << 16 | major) is always >= 45.
_MAX_FAT_ARCHES = 30

_LC_REQ_DYLD = 0x80000000
_LC_LOAD_DYLIB, _LC_ID_DYLIB, _LC_LAZY_LOAD_DYLIB = 0xC, 0xD, 0x20
_LC_LOAD_WEAK_DYLIB = 0x18 | _LC_REQ_DYLD
_LC_RPATH = 0x1C | _LC_REQ_DYLD
_LC_REEXPORT_DYLIB = 0x1F | _LC_REQ_DYLD
_LC_LOAD_UPWARD_DYLIB = 0x23 | _LC_REQ_DYLD
_LC_VERSION_MIN_MACOSX, _LC_BUILD_VERSION = 0x24, 0x32
_LOADS = {
    _LC_LOAD_DYLIB: "LC_LOAD_DYLIB",
    _LC_LOAD_WEAK_DYLIB: "LC_LOAD_WEAK_DYLIB",
    _LC_REEXPORT_DYLIB: "LC_REEXPORT_DYLIB",
    _LC_LAZY_LOAD_DYLIB: "LC_LAZY_LOAD_DYLIB",
    _LC_LOAD_UPWARD_DYLIB: "LC_LOAD_UPWARD_DYLIB",
}
_DYLIB_COMMAND_SIZE, _RPATH_COMMAND_SIZE = 24, 12  # fixed parts before the lc_str name
_BUILD_VERSION_SIZE, _VERSION_MIN_SIZE = 24, 16
_PLATFORM_MACOS = 1  # zippered (Mac Catalyst) images carry a second LC_BUILD_VERSION

_CPU_ARCH_ABI64, _CPU_SUBTYPE_MASK, _CPU_SUBTYPE_ARM64E = 0x01000000, 0xFF000000, 2
_CPU_ARM64 = 12 | _CPU_ARCH_ABI64
# fmt: off
_CPUS = {
    7: "i386", 7 | _CPU_ARCH_ABI64: "x86_64", 12: "arm", _CPU_ARM64: "arm64",
    12 | 0x02000000: "arm64_32", 18: "ppc", 18 | _CPU_ARCH_ABI64: "ppc64",
}
_FILETYPES = {
    1: "object", 2: "execute", 3: "fvmlib", 4: "core", 5: "preload", 6: "dylib", 7: "dylinker",
    8: "bundle", 9: "dylib_stub", 10: "dsym", 11: "kext_bundle", 12: "fileset",
}
# fmt: on


class MachOError(ValueError):
    """The data is not a well-formed Mach-O file of a kind this reader supports."""


@dataclasses.dataclass(frozen=True)
class MachOArch:
    """What dyld sees in one architecture's image."""

    arch: str
    bits: int
    filetype: str
    install_name: str | None
    needed: tuple[str, ...]
    weak: frozenset[str]
    rpaths: tuple[str, ...]
    min_os: str | None


@dataclasses.dataclass(frozen=True)
class MachOInfo:
    """One entry for a thin file, one per slice (in header order) for a fat file."""

    arches: tuple[MachOArch, ...]


def _check(data: bytes, offset: int, size: int, what: str) -> None:
    if offset < 0 or size < 0 or offset + size > len(data):
        raise MachOError(
            f"{what} ({size} bytes at {offset:#x}) is outside the {len(data)}-byte file"
        )


def _fat_slices(data: bytes) -> list[tuple[int, int, int]]:
    """(cputype, offset, size) of each slice of a fat file, validated against the file."""
    _check(data, 0, 8, "fat header")
    magic, nfat = struct.unpack_from(">II", data)
    if not 1 <= nfat <= _MAX_FAT_ARCHES:
        raise MachOError(f"nfat_arch {nfat} is not in 1..{_MAX_FAT_ARCHES} (a Java class file?)")
    fmt = ">IIQQII" if magic == _FAT_MAGIC_64 else ">5I"
    entry = struct.calcsize(fmt)
    table_end = 8 + nfat * entry
    _check(data, 8, nfat * entry, f"fat_arch table of {nfat} entries")
    slices = []
    for i in range(nfat):
        cputype, _subtype, offset, size = struct.unpack_from(fmt, data, 8 + i * entry)[:4]
        if offset < table_end:
            raise MachOError(f"fat slice {i} at {offset:#x} overlaps the fat header")
        _check(data, offset, size, f"fat slice {i}")
        slices.append((cputype, offset, size))
    ordered = sorted(slices, key=lambda s: s[1])
    for (_, a_off, a_size), (_, b_off, _) in zip(ordered, ordered[1:]):
        if a_off + a_size > b_off:
            raise MachOError(f"fat slices at {a_off:#x} and {b_off:#x} overlap")
    return slices


def is_macho(data: bytes) -> bool:
    """Whether *data* starts with a thin Mach-O magic, or is a fat file with a sane slice table."""
    if len(data) < 4:
        return False
    if struct.unpack_from("<I", data)[0] in _THIN:
        return True
    if struct.unpack_from(">I", data)[0] not in (_FAT_MAGIC, _FAT_MAGIC_64):
        return False
    try:
        _fat_slices(data)
    except MachOError:
        return False
    return True


def _version(packed: int) -> str:
    """xxxx.yy.zz nibble-packed version as "11.0" or "10.13.4"."""
    major, minor, patch = packed >> 16, (packed >> 8) & 0xFF, packed & 0xFF
    return f"{major}.{minor}.{patch}" if patch else f"{major}.{minor}"


def _lc_str(data: bytes, cmd_at: int, cmdsize: int, fixed: int, order: str, what: str) -> str:
    if cmdsize < fixed:
        raise MachOError(f"{what} cmdsize {cmdsize} is smaller than its {fixed}-byte command")
    (offset,) = struct.unpack_from(order + "I", data, cmd_at + 8)
    if not fixed <= offset < cmdsize:
        raise MachOError(f"{what} name offset {offset} is outside its {cmdsize}-byte command")
    nul = data.find(b"\0", cmd_at + offset, cmd_at + cmdsize)
    if nul < 0:
        raise MachOError(f"{what} name at {cmd_at + offset:#x} is not NUL-terminated")
    # surrogateescape keeps undecodable bytes round-trippable via os.fsencode.
    return data[cmd_at + offset : nul].decode("utf-8", "surrogateescape")


def _read_thin(data: bytes) -> tuple[int, MachOArch]:
    """(cputype, facts) of one thin image."""
    if len(data) < 4 or struct.unpack_from("<I", data)[0] not in _THIN:
        raise MachOError("not a Mach-O file (bad magic)")
    order, bits = _THIN[struct.unpack_from("<I", data)[0]]
    header_size = 32 if bits == 64 else 28
    _check(data, 0, header_size, "Mach-O header")
    cputype, subtype, filetype, ncmds, sizeofcmds = struct.unpack_from(order + "5I", data, 4)
    _check(data, header_size, sizeofcmds, "load commands")
    if ncmds * 8 > sizeofcmds:
        raise MachOError(f"ncmds {ncmds} cannot fit in sizeofcmds {sizeofcmds}")
    arch = _CPUS.get(cputype, f"cpu{cputype:#x}")
    if cputype == _CPU_ARM64 and subtype & ~_CPU_SUBTYPE_MASK == _CPU_SUBTYPE_ARM64E:
        arch = "arm64e"

    install_name: str | None = None
    needed: list[str] = []
    weak: set[str] = set()
    rpaths: list[str] = []
    builds: dict[int, str] = {}  # platform -> minos of its first LC_BUILD_VERSION
    version_min: str | None = None
    at, end = header_size, header_size + sizeofcmds
    for i in range(ncmds):
        if at + 8 > end:
            raise MachOError(f"load command {i} at {at:#x} is past sizeofcmds")
        cmd, cmdsize = struct.unpack_from(order + "II", data, at)
        if cmdsize < 8 or at + cmdsize > end:
            raise MachOError(f"load command {i} ({cmd:#x}) has bad cmdsize {cmdsize}")
        if cmd in _LOADS:
            name = _lc_str(data, at, cmdsize, _DYLIB_COMMAND_SIZE, order, _LOADS[cmd])
            needed.append(name)
            if cmd == _LC_LOAD_WEAK_DYLIB:
                weak.add(name)
        elif cmd == _LC_ID_DYLIB:
            name = _lc_str(data, at, cmdsize, _DYLIB_COMMAND_SIZE, order, "LC_ID_DYLIB")
            install_name = name if install_name is None else install_name
        elif cmd == _LC_RPATH:
            rpaths.append(_lc_str(data, at, cmdsize, _RPATH_COMMAND_SIZE, order, "LC_RPATH"))
        elif cmd == _LC_BUILD_VERSION:
            if cmdsize < _BUILD_VERSION_SIZE:
                raise MachOError(f"LC_BUILD_VERSION cmdsize {cmdsize} is too small")
            platform, minos = struct.unpack_from(order + "II", data, at + 8)
            builds.setdefault(platform, _version(minos))
        elif cmd == _LC_VERSION_MIN_MACOSX and version_min is None:
            if cmdsize < _VERSION_MIN_SIZE:
                raise MachOError(f"LC_VERSION_MIN_MACOSX cmdsize {cmdsize} is too small")
            version_min = _version(struct.unpack_from(order + "I", data, at + 8)[0])
        at += cmdsize
    return cputype, MachOArch(
        arch=arch,
        bits=bits,
        filetype=_FILETYPES.get(filetype, f"type{filetype}"),
        install_name=install_name,
        needed=tuple(needed),
        weak=frozenset(weak),
        rpaths=tuple(rpaths),
        min_os=builds.get(_PLATFORM_MACOS, next(iter(builds.values()), version_min)),
    )


def read_macho(data: bytes) -> MachOInfo:
    """Parse the load commands of a thin or fat Mach-O image held in *data*."""
    if len(data) >= 4 and struct.unpack_from(">I", data)[0] in (_FAT_MAGIC, _FAT_MAGIC_64):
        arches = []
        for i, (cputype, offset, size) in enumerate(_fat_slices(data)):
            try:
                slice_cputype, arch = _read_thin(data[offset : offset + size])
            except MachOError as exc:
                raise MachOError(f"fat slice {i} at {offset:#x}: {exc}") from None
            if slice_cputype != cputype:
                raise MachOError(
                    f"fat slice {i} says cputype {cputype:#x} but holds {slice_cputype:#x}"
                )
            arches.append(arch)
        return MachOInfo(tuple(arches))
    return MachOInfo((_read_thin(data)[1],))


def read_macho_file(path: str | os.PathLike[str]) -> MachOInfo:
    """Read the file at *path* and parse it; MachOError messages name the file."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return read_macho(data)
    except MachOError as exc:
        raise MachOError(f"{os.fspath(path)}: {exc}") from None
