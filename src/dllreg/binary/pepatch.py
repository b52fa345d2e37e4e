"""Rename the DLLs a PE image imports, in the import and the delay-import directory.

The loader reads each descriptor's Name RVA and looks the name up case-insensitively, so a
rename only has to change the string a descriptor points at. A new name that fits in the old
one's bytes is written over it, NUL-padded. A longer one (or one whose bytes another descriptor
shares) is written elsewhere and the descriptor repointed: into the zero slack between a readable
section's virtual size and its raw size, which the loader already maps, growing the virtual size
to cover it; failing that into a new read-only section appended to the file, when the header
has room for one more section header. Any change invalidates an Authenticode signature, so the
certificate table is removed (and reported); a non-zero CheckSum is recomputed, since drivers
and some loaders check it. Parsing is pefile's, checked by pe.read_pe; malformed input raises
PEError.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Mapping
from typing import Any

import pefile

from .pe import PEError, parsed, read_pe

__all__ = ["PatchResult", "rename_imports"]

_IMPORT, _SECURITY, _DELAY_IMPORT, _BOUND_IMPORT = 1, 4, 13, 11
_SCN_INITIALIZED_DATA, _SCN_DISCARDABLE, _SCN_READ = 0x40, 0x02000000, 0x40000000
_SECTION_HEADER = 40
_I386 = 0x14C


@dataclasses.dataclass(frozen=True)
class PatchResult:
    data: bytes
    signature_removed: bool  # the Authenticode certificate table was dropped: re-sign if needed
    checksum_updated: bool  # the optional header CheckSum was non-zero and has been recomputed


@dataclasses.dataclass(frozen=True)
class _Name:
    """A descriptor's name: the file offset of its pointer field, what that field holds."""

    field: int
    rva: int
    size: int  # of the string, with its NUL
    old: str
    va_base: int  # ImageBase for old-style delay descriptors that hold VAs, else 0
    bound: bool  # the IAT holds addresses bound to the old DLL at link time


def _align(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment if alignment > 1 else value


def _fold(renames: Mapping[str, str]) -> dict[str, str]:
    """Case-folded old name -> new name; Windows cannot tell "A.dll" from "a.dll"."""
    folded: dict[str, str] = {}
    for old, new in renames.items():
        if not new or not new.isascii() or any(c in new for c in "\0/\\"):
            raise PEError(f"{new!r} is not a DLL file name")
        if folded.setdefault(old.lower(), new) != new:
            raise PEError(f"two renames for {old!r}: {folded[old.lower()]!r} and {new!r}")
    return folded


def _names(pe: Any) -> list[_Name]:
    """The name of every import and delay-import descriptor."""
    found: list[_Name] = []
    tables = ((getattr(pe, "DIRECTORY_ENTRY_IMPORT", []), "Name"),
              (getattr(pe, "DIRECTORY_ENTRY_DELAY_IMPORT", []), "szName"))
    for entries, field in tables:
        for entry in entries:
            rva = getattr(entry.struct, field)
            raw = bytes(pe.get_string_at_rva(rva, pefile.MAX_DLL_LENGTH))
            old = raw.decode("utf-8", "replace")
            bound = field == "Name" and bool(entry.struct.TimeDateStamp and _dir(pe, _BOUND_IMPORT)[0])
            # pefile turned old-style (pre-VC6, i386) VA descriptors into RVAs for us; write VAs back.
            old_style = field == "szName" and entry.struct.grAttrs == 0 and pe.FILE_HEADER.Machine == _I386
            found.append(_Name(entry.struct.get_field_absolute_offset(field), rva, len(raw) + 1, old,
                               pe.OPTIONAL_HEADER.ImageBase if old_style else 0, bound))
    return found


def _dir(pe: Any, index: int) -> tuple[int, int]:
    dirs = pe.OPTIONAL_HEADER.DATA_DIRECTORY
    return (dirs[index].VirtualAddress, dirs[index].Size) if index < len(dirs) else (0, 0)


def _drop_signature(pe: Any, out: bytearray) -> bool:
    offset, size = _dir(pe, _SECURITY)  # a file offset, not an RVA
    if not offset or not size:
        return False
    if offset + size > len(out):
        raise PEError(f"the certificate table ({size} bytes at {offset:#x}) is outside the file")
    entry = pe.OPTIONAL_HEADER.DATA_DIRECTORY[_SECURITY].get_file_offset()
    out[entry:entry + 8] = bytes(8)
    if _align(offset + size, 8) >= len(out):  # where it belongs: last, 8-aligned
        del out[offset:]
    else:
        out[offset:offset + size] = bytes(size)
    return True


def _place_in_slack(pe: Any, out: bytearray, blob: bytes, prefer: int) -> int | None:
    """RVA of ``blob`` written into a readable section's mapped zero tail, or None."""
    sections = sorted(pe.sections, key=lambda s: s.VirtualAddress)
    nexts = [s.VirtualAddress for s in sections[1:]] + [pe.OPTIONAL_HEADER.SizeOfImage]
    alignment = pe.OPTIONAL_HEADER.SectionAlignment
    candidates = sorted(zip(sections, nexts), key=lambda p: not p[0].contains_rva(prefer))
    for section, next_va in candidates:
        flags, vsize, raw = section.Characteristics, section.Misc_VirtualSize, section.SizeOfRawData
        if not flags & _SCN_READ or flags & _SCN_DISCARDABLE or not vsize or vsize >= raw:
            continue
        start = _align(vsize, 2)
        end = min(raw, _align(vsize, alignment), next_va - section.VirtualAddress)
        at = section.PointerToRawData + start
        if start + len(blob) > end or at + len(blob) > len(out) or any(out[at:at + len(blob)]):
            continue
        out[at:at + len(blob)] = blob
        field = section.get_file_offset() + 8  # Misc_VirtualSize
        struct.pack_into("<I", out, field, start + len(blob))
        return int(section.VirtualAddress + start)
    return None


def _place_in_new_section(pe: Any, out: bytearray, blob: bytes) -> int:
    """RVA of ``blob`` in a new read-only section at the end of the file."""
    opt, header = pe.OPTIONAL_HEADER, pe.FILE_HEADER
    table_end = pe.sections[-1].get_file_offset() + _SECTION_HEADER if pe.sections else 0
    first_raw = min((s.PointerToRawData for s in pe.sections if s.SizeOfRawData), default=len(out))
    if (not table_end or table_end + _SECTION_HEADER > min(opt.SizeOfHeaders, first_raw)
            or any(out[table_end:table_end + _SECTION_HEADER])):
        raise PEError("a longer DLL name needs a new section, and the headers have no room for one")
    va = _align(max(s.VirtualAddress + max(s.Misc_VirtualSize, s.SizeOfRawData) for s in pe.sections),
                opt.SectionAlignment)
    raw_at, raw_size = _align(len(out), opt.FileAlignment), _align(len(blob), opt.FileAlignment)
    out.extend(bytes(raw_at - len(out)))
    out.extend(blob.ljust(raw_size, b"\0"))
    # Name, VirtualSize, VirtualAddress, SizeOfRawData, PointerToRawData, relocations and line
    # numbers (none), Characteristics.
    out[table_end:table_end + _SECTION_HEADER] = struct.pack(
        "<8sIIIIIIHHI", b".dlname", len(blob), va, raw_size, raw_at, 0, 0, 0, 0,
        _SCN_INITIALIZED_DATA | _SCN_READ)
    struct.pack_into("<H", out, header.get_field_absolute_offset("NumberOfSections"),
                     header.NumberOfSections + 1)
    struct.pack_into("<I", out, opt.get_field_absolute_offset("SizeOfImage"),
                     va + _align(len(blob), opt.SectionAlignment))
    struct.pack_into("<I", out, opt.get_field_absolute_offset("SizeOfInitializedData"),
                     (opt.SizeOfInitializedData + raw_size) & 0xFFFFFFFF)
    return va


def _patch(pe: Any, data: bytes, wanted: dict[str, str]) -> PatchResult:
    everything = _names(pe)
    names = [n for n in everything if wanted.get(n.old.lower(), n.old) != n.old]
    if not names:
        return PatchResult(data, False, False)
    bound = next((n.old for n in names if n.bound), None)
    if bound is not None:
        raise PEError(f"the import of {bound} is bound; renaming bound imports is not supported")
    out = bytearray(data)
    signed = _drop_signature(pe, out)
    pending: dict[bytes, list[_Name]] = {}
    for name in names:
        new = wanted[name.old.lower()].encode("ascii")
        # Another descriptor's name that overlaps these bytes without being this very string.
        shared = any(o.rva != name.rva and o.rva < name.rva + name.size and name.rva < o.rva + o.size
                     for o in everything)
        if len(new) < name.size and not shared:
            at = pe.get_offset_from_rva(name.rva)
            out[at:at + name.size] = new.ljust(name.size, b"\0")
        else:
            pending.setdefault(new, []).append(name)
    if pending:
        blob, at = bytearray(), {}
        for new in pending:
            at[new] = len(blob)
            blob += _align(len(new) + 1, 2) * b"\0"
            blob[at[new]:at[new] + len(new)] = new
        rva = _place_in_slack(pe, out, bytes(blob), _dir(pe, _IMPORT)[0])
        if rva is None:
            rva = _place_in_new_section(pe, out, bytes(blob))
        for new, group in pending.items():
            for name in group:
                struct.pack_into("<I", out, name.field, name.va_base + rva + at[new])
    checksum = pe.OPTIONAL_HEADER.CheckSum != 0
    if checksum:
        fresh = pefile.PE(data=bytes(out), fast_load=True)
        struct.pack_into("<I", out, pe.OPTIONAL_HEADER.get_field_absolute_offset("CheckSum"),
                         fresh.generate_checksum())
        fresh.close()
    return PatchResult(bytes(out), signed, checksum)


def rename_imports(data: bytes, renames: Mapping[str, str]) -> PatchResult:
    """*data* importing ``renames[old]`` wherever it imported ``old`` (matched case-insensitively),
    directly or delay-loaded. Input with nothing to rename comes back as equal bytes."""
    wanted = _fold(renames)
    read_pe(data)  # the whole verdict on malformed input: PEError unless every table reads
    with parsed(data) as pe:
        pe.parse_data_directories(directories=(_IMPORT, _DELAY_IMPORT))
        return _patch(pe, data, wanted)
