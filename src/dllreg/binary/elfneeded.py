"""Rename the libraries an ELF image needs: DT_NEEDED and the matching verneed ``vn_file`` names.

Pure Python, stdlib only, ELF32/ELF64 in either byte order. glibc matches a version requirement
to a loaded object by ``vn_file`` and asserts that it finds one, so both names must change
together. A new name is written over the old one in the dynamic string table when it is not
longer and no other string shares those bytes (linkers store "bar" as the tail of "libfoobar"
and point both users at the same bytes). Otherwise the reference is pointed at an identical
string the table already holds, or, failing that, a copy of the table with the new names
appended is placed in a new read-only PT_LOAD segment at the end of the file, next to a copy
of the program header table that describes it (glibc reads program headers from the file, so
they need not stay in the first page). Malformed input raises ELFError.
"""

from __future__ import annotations

import bisect
import dataclasses
import struct
from collections.abc import Mapping

from .elf import _DT_SYMTAB, _FORMATS, _SINGLE_TAGS, ELFError, _dynsym_count, _Reader, is_elf, program_headers

__all__ = ["rename_needed", "renamed_buffer"]

_PT_LOAD, _PT_DYNAMIC, _PT_PHDR, _PF_R, _SHT_STRTAB = 1, 2, 6, 4, 3
_DT_NULL, _DT_NEEDED, _DT_STRTAB, _DT_STRSZ, _DT_SONAME = 0, 1, 5, 10, 14
_DT_VERDEF, _DT_VERDEFNUM, _DT_VERNEED, _DT_VERNEEDNUM = 0x6FFFFFFC, 0x6FFFFFFD, 0x6FFFFFFE, 0x6FFFFFFF
_VERSION_TAGS = frozenset({_DT_VERDEF, _DT_VERDEFNUM, _DT_VERNEED, _DT_VERNEEDNUM})
# Tags whose value is a string-table offset: NEEDED, SONAME, RPATH, RUNPATH, CONFIG, DEPAUDIT,
# AUDIT, AUXILIARY, FILTER.
_STRING_TAGS = frozenset({1, 14, 15, 29, 0x6FFFFEFA, 0x6FFFFEFB, 0x6FFFFEFC, 0x7FFFFFFD, 0x7FFFFFFF})
_MAX_VERSION_ENTRIES = 1 << 16  # the version index is 16 bits wide
_MAX_VERSION_READS = 1 << 20  # hostile counts and overlapping chains cannot loop for long


@dataclasses.dataclass(frozen=True)
class _Ref:
    """One use of a string-table offset; ``field``/``size`` locate the value in the file when
    it may be rewritten (DT_NEEDED values and vn_file), else ``field`` is -1."""

    offset: int
    field: int = -1
    size: int = 0


@dataclasses.dataclass
class _Image:
    r: _Reader
    header: tuple[int, ...]
    phdrs: list[tuple[int, ...]]
    dyn_offset: int
    tags: dict[int, int]  # the first value of each single-valued tag
    dyn_tag_at: dict[int, int]  # tag -> file offset of its d_val (first occurrence)
    strtab: int  # file offsets of the dynamic string table
    strsz: int
    refs: list[_Ref]
    exact: bool  # every reference is known (the symbol count could be determined)


def _parse(data: bytes) -> _Image:
    img = _parse_dynamic(data)
    if img is None:
        raise ELFError("no PT_DYNAMIC segment: the file needs no libraries")
    return img


def _parse_dynamic(data: bytes) -> _Image | None:
    """The image's dynamic-linking model; None for a file without PT_DYNAMIC."""
    if not is_elf(data) or len(data) < 16:
        raise ELFError("not an ELF file (bad magic or truncated identification)")
    if data[4] not in _FORMATS or data[5] not in (1, 2):
        raise ELFError(f"unsupported ELF class {data[4]} or data encoding {data[5]}")
    r = _Reader(data, data[4], data[5])
    header = r.unpack(r.ehdr, 16, "ELF header")
    phdrs, dynamic = program_headers(r, header, exact=True)
    if dynamic is None:
        return None  # static executable or object file: it needs no libraries
    dyn_offset, dyn_size = dynamic
    r.check(dyn_offset, dyn_size, "PT_DYNAMIC segment")
    tags: dict[int, int] = {}
    tag_at: dict[int, int] = {}
    refs: list[_Ref] = []
    word = r.dyn.size // 2
    for at in range(dyn_offset, dyn_offset + dyn_size - r.dyn.size + 1, r.dyn.size):
        tag, value = r.dyn.unpack_from(data, at)
        if tag == _DT_NULL:
            break
        if tag in _STRING_TAGS:
            # DT_NEEDED and DT_SONAME are rewritable (devendor renames a packaged copy's SONAME)
            refs.append(_Ref(value, at + word, word) if tag in (_DT_NEEDED, _DT_SONAME) else _Ref(value))
        elif tag in _SINGLE_TAGS or tag in _VERSION_TAGS:
            tags.setdefault(tag, value)
            tag_at.setdefault(tag, at + word)
    else:
        raise ELFError("the dynamic array has no DT_NULL terminator")
    if _DT_STRTAB not in tags or _DT_STRSZ not in tags:
        raise ELFError("the dynamic section has no DT_STRTAB or DT_STRSZ")
    strtab, strsz = r.file_offset(tags[_DT_STRTAB], "DT_STRTAB"), tags[_DT_STRSZ]
    r.check(strtab, strsz, "dynamic string table")
    exact = True
    if _DT_SYMTAB in tags:
        count = _dynsym_count(r, header, tags)
        exact = count > 0
        start = r.file_offset(tags[_DT_SYMTAB], "DT_SYMTAB")
        r.check(start, count * r.sym.size, f"dynamic symbol table of {count} entries")
        name_at = r.sym_fields[0]
        symbols = r.sym.iter_unpack(data[start:start + count * r.sym.size])
        refs += [_Ref(fields[name_at]) for fields in symbols]
    refs += _version_refs(r, tags)
    return _Image(r, header, phdrs, dyn_offset, tags, tag_at, strtab, strsz, refs, exact)


def _version_refs(r: _Reader, tags: dict[int, int]) -> list[_Ref]:
    """vn_file (rewritable) and vna_name of each Verneed, vda_name of each Verdaux."""
    refs: list[_Ref] = []
    budget = _MAX_VERSION_READS
    for table, num, what in ((_DT_VERNEED, _DT_VERNEEDNUM, "verneed"), (_DT_VERDEF, _DT_VERDEFNUM, "verdef")):
        if table not in tags:
            continue
        at = r.file_offset(tags[table], f"DT_{what.upper()}")
        for _ in range(min(tags.get(num, _MAX_VERSION_ENTRIES), _MAX_VERSION_ENTRIES)):
            if what == "verneed":  # vn_version, vn_cnt, vn_file, vn_aux, vn_next
                _, count, file, aux, nxt = r.words("H", at, 2, what) + r.words("I", at + 4, 3, what)
                refs.append(_Ref(file, at + 4, 4))
                aux_next, name_at = 12, 8  # Vernaux: hash, flags, other, name, next
            else:  # vd_version, vd_flags, vd_ndx, vd_cnt, vd_hash, vd_aux, vd_next
                count = r.words("H", at + 6, 1, what)[0]
                aux, nxt = r.words("I", at + 12, 2, what)
                aux_next, name_at = 4, 0  # Verdaux: name, next
            entry = at + aux
            budget -= count + 1
            if budget < 0:
                raise ELFError(f"the {what} entries do not end")
            for _ in range(count):
                refs.append(_Ref(r.words("I", entry + name_at, 1, f"{what} aux name")[0]))
                step = r.words("I", entry + aux_next, 1, f"{what} aux next")[0]
                if not step:
                    break
                entry += step
            if not nxt:
                break
            at += nxt
    return refs


def _string_end(data: bytes, img: _Image, offset: int) -> int:
    """File offset of the NUL that ends the string at table ``offset``."""
    end = img.strtab + img.strsz
    nul = data.find(b"\0", img.strtab + offset, end) if 0 <= offset < img.strsz else -1
    if nul < 0:
        raise ELFError(f"string at offset {offset:#x} is outside the string table or not NUL-terminated")
    return nul


def _encode(name: str) -> bytes:
    raw = name.encode("utf-8", "surrogateescape")
    if not raw or b"\0" in raw or b"/" in raw:
        raise ELFError(f"{name!r} is not a library file name")
    return raw


def rename_needed(data: bytes, renames: Mapping[str, str]) -> bytes:
    """*data* with each needed library named in *renames* renamed; equal bytes if none is."""
    out = renamed_buffer(data, renames)
    return data if out is None else bytes(out)


def renamed_buffer(data: bytes, renames: Mapping[str, str]) -> bytearray | None:
    """rename_needed's result as a new buffer the caller owns, or None when nothing is renamed
    (a caller patching a large file further then holds two copies of it, not three)."""
    img = _parse_dynamic(data)
    if img is None:
        return None
    out = bytearray(data)
    # Group the rewritable references by the string they point at.
    targets: dict[int, list[_Ref]] = {}
    for ref in img.refs:
        if ref.field >= 0:
            nul = _string_end(data, img, ref.offset)
            old = data[img.strtab + ref.offset:nul].decode("utf-8", "surrogateescape")
            if old in renames and renames[old] != old:
                targets.setdefault(ref.offset, []).append(ref)
    if not targets:
        return None
    pending: dict[bytes, list[_Ref]] = {}
    landing = sorted(img.strtab + ref.offset for ref in img.refs)  # where every reference lands
    for offset, group in sorted(targets.items()):
        start, nul = img.strtab + offset, _string_end(data, img, offset)
        old = data[start:nul].decode("utf-8", "surrogateescape")
        new = _encode(renames[old])
        # The bytes of the old string are shared when any other reference lands in the string
        # that contains them: from the NUL before it to its own NUL.
        first = max(data.rfind(b"\0", img.strtab, start) + 1, img.strtab)
        mine = sum(first <= img.strtab + ref.offset < nul for ref in group)
        shared = bisect.bisect_left(landing, nul) - bisect.bisect_left(landing, first) > mine
        if len(new) <= nul - start and img.exact and not shared:
            out[start:nul] = new.ljust(nul - start, b"\0")
        else:
            pending.setdefault(new, []).extend(group)
    table = out[img.strtab:img.strtab + img.strsz]
    appended = bytearray()
    for new, group in pending.items():
        # An identical string (or a tail of one) already in the table can be shared.
        hit = bytes(table).find(new + b"\0")
        if hit < 0:
            hit = img.strsz + len(appended)
            appended += new + b"\0"
        for ref in group:
            struct.pack_into(img.r.order + ("I" if ref.size == 4 else "Q"), out, ref.field, hit)
    if appended:
        _with_new_table(out, img, bytes(table) + bytes(appended))
    return out


def _with_new_table(out: bytearray, img: _Image, table: bytes) -> None:
    """Append ``table`` and a program header table with one more PT_LOAD that maps both."""
    r = img.r
    loads = [p for p in img.phdrs if p[r.ph_fields[0]] == _PT_LOAD]
    if not loads:
        raise ELFError("no PT_LOAD segment")
    # Phdr field positions: (type, flags, offset, vaddr, paddr, filesz, memsz, align) for ELF64,
    # (type, offset, vaddr, paddr, filesz, memsz, flags, align) for ELF32.
    names = ("type", "flags", "offset", "vaddr", "paddr", "filesz", "memsz", "align")
    order = (0, 6, 1, 2, 3, 4, 5, 7) if r.bits == 32 else tuple(range(8))
    pos = {name: order[i] for i, name in enumerate(names)}
    align = max([p[pos["align"]] for p in loads] + [0x1000])
    if align & (align - 1):
        raise ELFError(f"PT_LOAD alignment {align:#x} is not a power of two")
    top = max(p[pos["vaddr"]] + p[pos["memsz"]] for p in loads)
    offset = -(-len(out) // align) * align
    vaddr = -(-top // align) * align
    phnum = len(img.phdrs) + 1
    phsize = phnum * r.phdr.size
    table_at = -(-phsize // 8) * 8
    size = table_at + len(table)

    def phdr(**values: int) -> tuple[int, ...]:
        fields = [0] * 8
        for name, value in values.items():
            fields[pos[name]] = value
        return tuple(fields)

    new_load = phdr(type=_PT_LOAD, flags=_PF_R, offset=offset, vaddr=vaddr, paddr=vaddr,
                    filesz=size, memsz=size, align=align)
    phdrs: list[tuple[int, ...]] = []
    last_load = max(i for i, p in enumerate(img.phdrs) if p[pos["type"]] == _PT_LOAD)
    for i, p in enumerate(img.phdrs):
        if p[pos["type"]] == _PT_PHDR:  # must describe the table the loader will use
            p = phdr(type=_PT_PHDR, flags=p[pos["flags"]], offset=offset, vaddr=vaddr, paddr=vaddr,
                     filesz=phsize, memsz=phsize, align=8)
        phdrs.append(p)
        if i == last_load:  # PT_LOAD entries stay sorted by address
            phdrs.append(new_load)
    blob = b"".join(r.phdr.pack(*p) for p in phdrs).ljust(table_at, b"\0") + table
    out.extend(bytes(offset - len(out)))
    out.extend(blob)
    # e_phoff and e_phnum; the Ehdr formats put them at fixed positions after e_ident.
    ehdr = list(img.header)
    ehdr[4], ehdr[9] = offset, phnum
    out[16:16 + r.ehdr.size] = r.ehdr.pack(*ehdr)
    word = "Q" if r.bits == 64 else "I"
    old_vaddr = img.tags[_DT_STRTAB]
    struct.pack_into(r.order + word, out, img.dyn_tag_at[_DT_STRTAB], vaddr + table_at)
    struct.pack_into(r.order + word, out, img.dyn_tag_at[_DT_STRSZ], len(table))
    _move_section(out, img, old_vaddr, offset + table_at, vaddr + table_at, len(table))


def _move_section(out: bytearray, img: _Image, old_vaddr: int, offset: int, vaddr: int, size: int) -> None:
    """Point the .dynstr section header (if any) at the new table, for readelf and strip."""
    r, header = img.r, img.header
    shoff, shentsize, shnum = header[5], header[10], header[11]
    if not shoff or shentsize < r.shdr.size:
        return
    for i in range(shnum):
        at = shoff + i * shentsize
        fields = list(r.unpack(r.shdr, at, f"section header {i}"))
        # Shdr: name, type, flags, addr, offset, size, link, info, addralign, entsize
        if fields[1] == _SHT_STRTAB and fields[3] == old_vaddr and fields[3]:
            fields[3], fields[4], fields[5] = vaddr, offset, size
            out[at:at + r.shdr.size] = r.shdr.pack(*fields)
            return
