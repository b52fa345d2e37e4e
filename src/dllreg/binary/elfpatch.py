"""Remove RPATH/RUNPATH entries from an ELF image, in place, without moving anything; rename
needed libraries (``replace_needed``, with the renaming itself in elfneeded.py).

Pure Python, stdlib only, ELF32/ELF64 in either byte order, like elf.py. The edits are first
recorded as data (``plan_runpath_edits``), then applied (``apply_edits``): a shortened string
is rewritten where it was in the dynamic string table, NUL-padded; a tag left with no entry is
removed by shifting the following dynamic entries up one slot, with DT_NULL written in the
freed last slot, so the dynamic array keeps its size. Malformed input raises ELFError.
"""

from __future__ import annotations

import dataclasses
import os.path
import posixpath
import struct
from collections.abc import Callable, Collection, Mapping
from typing import cast

from .elf import ELFError, is_elf
from .elfneeded import renamed_buffer

__all__ = ["Edit", "apply_edits", "build_time_entry", "drop_runpath", "plan_runpath_edits",
           "replace_needed", "replaced_buffer"]

_PT_LOAD, _PT_DYNAMIC, _SHT_DYNSYM = 1, 2, 11
_DT_NULL, _DT_STRTAB, _DT_STRSZ, _DT_RPATH, _DT_RUNPATH = 0, 5, 10, 15, 29
_PATH_TAGS = frozenset({_DT_RPATH, _DT_RUNPATH})
# Tags whose value is an offset into the dynamic string table: NEEDED, SONAME, RPATH, RUNPATH,
# CONFIG, DEPAUDIT, AUDIT, AUXILIARY, FILTER.
_STRING_TAGS = frozenset({1, 14, 15, 29, 0x6FFFFEFA, 0x6FFFFEFB, 0x6FFFFEFC, 0x7FFFFFFD, 0x7FFFFFFF})
# Per class: Ehdr after e_ident, Phdr, Shdr, Dyn, Sym size, positions of (p_type, p_offset,
# p_vaddr, p_filesz) in Phdr.
_FORMATS = {
    1: ("HHIIIIIHHHHHH", "IIIIIIII", "IIIIIIIIII", "iI", 16, (0, 1, 2, 4)),
    2: ("HHIQQQIHHHHHH", "IIQQQQQQ", "IIQQQQIIQQ", "qQ", 24, (0, 2, 3, 5)),
}


@dataclasses.dataclass(frozen=True)
class Edit:
    """Overwrite ``len(data)`` bytes at file ``offset``; ``what`` says why."""

    offset: int
    data: bytes = dataclasses.field(repr=False)
    what: str = ""


def _unpack(data: bytes, fmt: struct.Struct, offset: int, what: str) -> tuple[int, ...]:
    if offset < 0 or offset + fmt.size > len(data):
        raise ELFError(f"{what} at {offset:#x} is outside the {len(data)}-byte file")
    return fmt.unpack_from(data, offset)


def plan_runpath_edits(data: bytes, drop: Callable[[str], bool]) -> list[Edit]:
    """The edits that remove every RPATH/RUNPATH entry for which ``drop(entry)`` is true."""
    if not is_elf(data) or len(data) < 16:
        raise ELFError("not an ELF file (bad magic or truncated identification)")
    if data[4] not in _FORMATS or data[5] not in (1, 2):
        raise ELFError(f"unsupported ELF class {data[4]} or data encoding {data[5]}")
    order = "<" if data[5] == 1 else ">"
    ehdr_f, phdr_f, shdr_f, dyn_f, sym_size, ph_at = _FORMATS[data[4]]
    ehdr, phdr, shdr, dyn = (struct.Struct(order + f) for f in (ehdr_f, phdr_f, shdr_f, dyn_f))
    header = _unpack(data, ehdr, 16, "ELF header")
    phoff, shoff, phentsize, phnum, shentsize, shnum = (header[i] for i in (4, 5, 8, 9, 10, 11))
    if phnum and phentsize < phdr.size:
        raise ELFError(f"e_phentsize {phentsize} is smaller than a program header")
    loads: list[tuple[int, int, int]] = []
    dynamic = None
    for i in range(phnum):
        p_type, p_offset, p_vaddr, p_filesz = (
            _unpack(data, phdr, phoff + i * phentsize, f"program header {i}")[k] for k in ph_at)
        if p_type == _PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == _PT_DYNAMIC and dynamic is None:
            dynamic = (p_offset, p_filesz)
    if dynamic is None:
        return []  # static executable or object file: no search path at all
    dyn_offset, dyn_size = dynamic
    slots = [_unpack(data, dyn, o, "dynamic entry")
             for o in range(dyn_offset, dyn_offset + dyn_size - dyn.size + 1, dyn.size)]
    end = next((i for i, (tag, _) in enumerate(slots) if tag == _DT_NULL), None)
    if end is None:
        raise ELFError("the dynamic array has no DT_NULL terminator")
    live = slots[:end]
    paths = [(i, value) for i, (tag, value) in enumerate(live) if tag in _PATH_TAGS]
    tags = {tag: value for tag, value in reversed(live)}  # the first of each tag wins
    if not paths:
        return []
    if _DT_STRTAB not in tags:
        raise ELFError("DT_RPATH/DT_RUNPATH without DT_STRTAB")
    strtab = next((off + tags[_DT_STRTAB] - va for va, off, size in loads
                   if va <= tags[_DT_STRTAB] < va + size), None)
    if strtab is None:
        raise ELFError(f"DT_STRTAB address {tags[_DT_STRTAB]:#x} is not inside any PT_LOAD segment")
    strsz = tags.get(_DT_STRSZ, len(data) - strtab)
    if strtab + strsz > len(data):
        raise ELFError(f"the dynamic string table ({strsz} bytes at {strtab:#x}) is outside the file")

    def references(value: int) -> list[int]:
        """Other string-table offsets in use: a linker may share one string's tail."""
        refs = [v for tag, v in live if tag in _STRING_TAGS and not (tag in _PATH_TAGS and v == value)]
        for i in range(shnum if shoff and shentsize >= shdr.size else 0):
            fields = _unpack(data, shdr, shoff + i * shentsize, f"section header {i}")
            if fields[1] == _SHT_DYNSYM:
                if fields[4] + fields[5] > len(data):
                    raise ELFError(".dynsym is outside the file")
                refs += [int.from_bytes(data[o:o + 4], "little" if order == "<" else "big")
                         for o in range(fields[4], fields[4] + fields[5] - sym_size + 1, sym_size)]
        return refs

    edits: list[Edit] = []
    removed: list[int] = []
    for i, value in paths:
        nul = data.find(b"\0", strtab + value, strtab + strsz) if value < strsz else -1
        if nul < 0:
            raise ELFError(f"RPATH/RUNPATH string at offset {value:#x} is outside the string table "
                           "or not NUL-terminated")
        entries = data[strtab + value:nul].decode("utf-8", "surrogateescape").split(":")
        kept = [e for e in entries if not drop(e)]
        if len(kept) == len(entries):
            continue
        if not kept:
            removed.append(i)
            continue
        if any(value <= r < nul - strtab for r in references(value)):
            raise ELFError(f"the RPATH/RUNPATH string at offset {value:#x} shares its bytes with "
                           "another string; it cannot be shortened in place")
        new = ":".join(kept).encode("utf-8", "surrogateescape")
        edits.append(Edit(strtab + value, new.ljust(nul - strtab - value, b"\0"),
                          f"{':'.join(entries)!r} -> {':'.join(kept)!r}"))
    if removed:
        rest = [s for i, s in enumerate(slots) if i not in removed] + [(_DT_NULL, 0)] * len(removed)
        edits.append(Edit(dyn_offset, b"".join(dyn.pack(*s) for s in rest),
                          f"remove dynamic entries {removed}"))
    return edits


def apply_edits(data: bytes, edits: Collection[Edit]) -> bytes:
    out = bytearray(data)
    _apply_into(out, edits)
    return bytes(out)


def _apply_into(out: bytearray, edits: Collection[Edit]) -> None:
    for edit in edits:
        if edit.offset < 0 or edit.offset + len(edit.data) > len(out):
            raise ELFError(f"edit ({edit.what}) is outside the file")
        out[edit.offset:edit.offset + len(edit.data)] = edit.data


def drop_runpath(data: bytes, drop: Callable[[str], bool]) -> bytes | None:
    """*data* without the RPATH/RUNPATH entries ``drop`` selects; None if nothing is dropped."""
    edits = plan_runpath_edits(data, drop)
    return apply_edits(data, edits) if edits else None


def replace_needed(data: bytes, renames: Mapping[str, str], *,
                   drop_rpath: Callable[[str], bool] | None = None) -> bytes:
    """*data* needing ``renames[old]`` wherever it needed ``old`` (DT_NEEDED and the version
    requirements' file names), without the RPATH/RUNPATH entries ``drop_rpath`` selects.

    Input with nothing to change comes back as equal bytes. The new names are written over the
    old ones when they fit and are not shared; otherwise the file grows by a new string table
    (see elfneeded.py). Malformed input raises ELFError.
    """
    out = replaced_buffer(data, renames, drop_rpath=drop_rpath)
    return data if out is None else bytes(out)


def replaced_buffer(data: bytes, renames: Mapping[str, str], *,
                    drop_rpath: Callable[[str], bool] | None = None) -> bytearray | None:
    """replace_needed's result as a new buffer the caller owns, or None when nothing changes:
    one working copy for both steps, so a large file is held twice at most (input and output)."""
    out = renamed_buffer(data, renames) if renames else None
    if drop_rpath is not None:
        # The readers only index, slice, find and unpack: a bytearray reads like bytes.
        edits = plan_runpath_edits(data if out is None else cast(bytes, out), drop_rpath)
        if edits:
            if out is None:
                out = bytearray(data)
            _apply_into(out, edits)
    return out


def _under(path: str, root: str) -> bool:
    root = posixpath.normpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def build_time_entry(entry: str, *, keep: Collection[str], build_roots: Collection[str],
                     exists: Callable[[str], bool] = os.path.exists) -> bool:
    """Whether a search-path entry points at a build-time location and must go.

    Kept: ``$ORIGIN``-relative entries and the ``keep`` directories (the interpreter's libdir).
    Dropped: any entry with a ``dllreg.libs`` component (the stub finds registry libraries,
    never the loader), empty or relative entries (the loader resolves them against the current
    directory), entries under ``build_roots`` (temporary and isolated build environments), and
    absolute directories that do not ``exist`` (dead paths anyone could plant libraries into).
    """
    if entry.startswith(("$ORIGIN", "${ORIGIN}")):
        return False
    path = posixpath.normpath(entry) if entry else entry
    if "dllreg.libs" in path.split("/") or not path.startswith("/"):
        return True
    if any(path == posixpath.normpath(k) for k in keep):
        return False
    return any(_under(path, root) for root in build_roots) or not exists(path)
