"""Rename the dylibs a Mach-O image loads and remove LC_RPATH commands, thin or fat.

Pure Python, stdlib only. dyld reads the names from the load commands, so only those change:
a new name that fits in its command (the name plus the padding up to cmdsize) is written in
place; a longer one grows its command, which shifts the later commands into the zero padding
that linkers leave between the load commands and the first section's data (``ld
-headerpad``), as install_name_tool does. Removed LC_RPATH commands free space the same way.
Nothing after the load commands moves, so every file offset stays valid and a fat file's slices
keep their sizes. When the padding is too small, MachOError says so (relinking with
``-headerpad_max_install_names`` makes room).

Code signatures: the signature covers the load commands, so every change invalidates it. On
arm64 (Apple silicon) the kernel refuses to map a library with an invalid signature, so patched
arm64 binaries must be signed again, ad hoc at least (``codesign --force --sign - FILE``, on a
Mac). This module cannot do that; a caller such as ``dllreg devendor`` must report it. Malformed
input raises MachOError.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Mapping

from .macho import (
    _FAT_MAGIC,
    _FAT_MAGIC_64,
    _LC_ID_DYLIB,
    _LC_LAZY_LOAD_DYLIB,
    _LC_LOAD_DYLIB,
    _LC_LOAD_UPWARD_DYLIB,
    _LC_LOAD_WEAK_DYLIB,
    _LC_REEXPORT_DYLIB,
    _LC_RPATH,
    _THIN,
    MachOError,
    _fat_slices,
    read_macho,
)

__all__ = ["change_load_dylibs", "code_signed", "set_install_name", "variable_ranges"]

_RENAMED = frozenset({_LC_LOAD_DYLIB, _LC_LOAD_WEAK_DYLIB, _LC_REEXPORT_DYLIB, _LC_LAZY_LOAD_DYLIB,
                      _LC_LOAD_UPWARD_DYLIB})
_LC_SEGMENT, _LC_SEGMENT_64 = 0x1, 0x19
# Per bits: segment_command size, offset of its fileoff/filesize/nsects, section size and the
# offset of a section's file offset and flags.
_SEGMENTS = {32: (56, "II", 32, 48, 68, 40, 56), 64: (72, "QQ", 40, 64, 80, 48, 64)}
_ZEROFILL = frozenset({0x1, 0xC, 0x12})  # S_ZEROFILL, S_GB_ZEROFILL, S_THREAD_LOCAL_ZEROFILL
_LC_CODE_SIGNATURE = 0x1D


def _first_data(data: bytes, order: str, bits: int, commands: list[tuple[int, bytes]]) -> int:
    """File offset of the first byte after the header that a segment or section occupies."""
    seg_size, pair, fileoff_at, nsects_at, sect_size, offset_at, flags_at = _SEGMENTS[bits]
    first = len(data)
    for cmd, blob in commands:
        if cmd != (_LC_SEGMENT_64 if bits == 64 else _LC_SEGMENT):
            continue
        if len(blob) < seg_size:
            raise MachOError(f"segment command of {len(blob)} bytes is too small")
        fileoff, filesize = struct.unpack_from(order + pair, blob, fileoff_at)
        if fileoff and filesize:  # __TEXT maps the header itself from offset 0
            first = min(first, fileoff)
        (nsects,) = struct.unpack_from(order + "I", blob, nsects_at)
        if seg_size + nsects * sect_size > len(blob):
            raise MachOError(f"{nsects} sections do not fit in a {len(blob)}-byte segment command")
        for i in range(nsects):
            at = seg_size + i * sect_size
            (offset,) = struct.unpack_from(order + "I", blob, at + offset_at)
            (flags,) = struct.unpack_from(order + "I", blob, at + flags_at)
            if offset and flags & 0xFF not in _ZEROFILL:
                first = min(first, offset)
    return first


def _encode(name: str) -> bytes:
    raw = name.encode("utf-8", "surrogateescape")
    if not raw or b"\0" in raw:
        raise MachOError(f"{name!r} is not a dylib name")
    return raw


def _patch_thin(data: bytes, renames: Mapping[str, str], drop: Callable[[str], bool] | None,
                install_name: str | None = None) -> bytes:
    order, bits = _THIN[struct.unpack_from("<I", data)[0]]
    header_size, align = (32, 8) if bits == 64 else (28, 4)
    ncmds, sizeofcmds = struct.unpack_from(order + "II", data, 16)
    commands: list[tuple[int, bytes]] = []
    at = header_size
    for _ in range(ncmds):  # read_macho has checked every size and name
        cmd, cmdsize = struct.unpack_from(order + "II", data, at)
        commands.append((cmd, data[at:at + cmdsize]))
        at += cmdsize
    rest = data[at:header_size + sizeofcmds]  # bytes sizeofcmds counts past the last command
    changed = False
    out_cmds: list[bytes] = []
    ids = 0
    for cmd, blob in commands:
        if cmd in _RENAMED or cmd in (_LC_RPATH, _LC_ID_DYLIB):
            (name_at,) = struct.unpack_from(order + "I", blob, 8)
            name = blob[name_at:blob.index(b"\0", name_at)].decode("utf-8", "surrogateescape")
            ids += cmd == _LC_ID_DYLIB
            want = (install_name if cmd == _LC_ID_DYLIB else renames.get(name)) or name
            if cmd == _LC_RPATH:
                if drop is not None and drop(name):
                    changed = True
                    continue
            elif want != name:
                body = blob[:name_at] + _encode(want) + b"\0"
                size = max(len(blob), len(body) + -len(body) % align)
                blob = body.ljust(size, b"\0")
                blob = blob[:4] + struct.pack(order + "I", size) + blob[8:]
                changed = True
        out_cmds.append(blob)
    if install_name is not None and ids != 1:
        raise MachOError(f"{ids} LC_ID_DYLIB commands: only a dylib with one install name can get a new one")
    if not changed:
        return data
    new = b"".join(out_cmds) + rest
    old_end, new_end = header_size + sizeofcmds, header_size + len(new)
    limit = _first_data(data, order, bits, commands)
    if new_end > limit:
        raise MachOError(f"the load commands would need {len(new)} bytes, but only {limit - header_size} "
                         "fit before the first section (relink with -headerpad_max_install_names)")
    if any(data[old_end:new_end]):
        raise MachOError(f"the {new_end - old_end} bytes after the load commands are not free padding")
    out = bytearray(data)
    out[header_size:max(old_end, new_end)] = new.ljust(max(old_end, new_end) - header_size, b"\0")
    struct.pack_into(order + "II", out, 16, len(out_cmds), len(new))
    return bytes(out)


def _each_slice(data: bytes, patch: Callable[[bytes], bytes]) -> bytes:
    read_macho(data)  # every command, name and slice checked once, so patching can trust them
    if struct.unpack_from(">I", data)[0] not in (_FAT_MAGIC, _FAT_MAGIC_64):
        return patch(data)
    out = bytearray(data)
    for i, (_, offset, size) in enumerate(_fat_slices(data)):
        try:
            out[offset:offset + size] = patch(data[offset:offset + size])
        except MachOError as exc:
            raise MachOError(f"fat slice {i} at {offset:#x}: {exc}") from None
    return bytes(out)


def change_load_dylibs(data: bytes, renames: Mapping[str, str], *,
                       drop_rpaths: Callable[[str], bool] | None = None) -> bytes:
    """*data* loading ``renames[old]`` wherever an LC_LOAD_DYLIB, LC_LOAD_WEAK_DYLIB,
    LC_REEXPORT_DYLIB (or lazy or upward) command loaded ``old``, without the LC_RPATH commands
    ``drop_rpaths`` selects, in every slice. Input with nothing to change comes back as equal
    bytes; anything changed in an arm64 slice needs re-signing (see the module docstring)."""
    return _each_slice(data, lambda thin: _patch_thin(thin, renames, drop_rpaths))


def set_install_name(data: bytes, new: str) -> bytes:
    """*data* with its install name (LC_ID_DYLIB) set to *new* in every slice: in place when it
    fits, else growing into the header padding like ``change_load_dylibs``. A file without
    exactly one LC_ID_DYLIB per slice is refused; an unchanged name comes back as equal bytes."""
    _encode(new)
    return _each_slice(data, lambda thin: _patch_thin(thin, {}, None, new))


def _thin_facts(data: bytes) -> tuple[int, tuple[int, int] | None]:
    """(the first data offset, i.e. the end of the header padding; the code signature's
    (offset, size) or None) of a thin image that read_macho accepted."""
    order, bits = _THIN[struct.unpack_from("<I", data)[0]]
    at = 32 if bits == 64 else 28
    ncmds = struct.unpack_from(order + "I", data, 16)[0]
    commands: list[tuple[int, bytes]] = []
    signature: tuple[int, int] | None = None
    for _ in range(ncmds):
        cmd, cmdsize = struct.unpack_from(order + "II", data, at)
        commands.append((cmd, data[at:at + cmdsize]))
        if cmd == _LC_CODE_SIGNATURE and cmdsize >= 16:  # linkedit_data_command
            dataoff, datasize = struct.unpack_from(order + "II", data, at + 8)
            signature = (dataoff, datasize)
        at += cmdsize
    return _first_data(data, order, bits, commands), signature


def _slices(data: bytes) -> list[tuple[int, bytes]]:
    read_macho(data)
    if struct.unpack_from(">I", data)[0] not in (_FAT_MAGIC, _FAT_MAGIC_64):
        return [(0, data)]
    return [(offset, data[offset:offset + size]) for _, offset, size in _fat_slices(data)]


def code_signed(data: bytes) -> bool:
    """Whether any slice carries an LC_CODE_SIGNATURE (which any patch here invalidates)."""
    return any(_thin_facts(thin)[1] is not None for _, thin in _slices(data))


def variable_ranges(data: bytes) -> tuple[tuple[int, int], ...]:
    """(start, end) file offsets of what patching and signing change in each slice: the header
    with its load commands and padding up to the first section, and the code signature."""
    out = []
    for offset, thin in _slices(data):
        first, signature = _thin_facts(thin)
        out.append((offset, offset + first))
        if signature is not None:
            start = min(signature[0], len(thin))
            out.append((offset + start, offset + min(start + signature[1], len(thin))))
    return tuple(sorted(out))


def content_digest(data: bytes) -> str:
    """sha256 of a Mach-O file outside what patching and signing change (its load commands with
    their padding, its code signature): equal for one build whatever install names delocate
    wrote into each copy (``/DLC/<pkg>/.dylibs/...``)."""
    h, at = hashlib.sha256(), 0
    for start, end in variable_ranges(data):
        h.update(data[at:max(start, at)])
        at = max(at, end)
    h.update(data[at:])
    return h.hexdigest()
