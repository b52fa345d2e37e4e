"""Read an ELF file's build identity and symbol versions: what devendor needs to tell builds apart
and to prove that one copy of a library serves another copy's users (docs/devendor.md).

Pure Python, stdlib only, on top of elf.py's bounds-checked reader. ``build_id`` is the GNU
build-ID note when the linker wrote one, else a digest of the executable sections' bytes
(patchelf and auditwheel never touch them). Versions come from DT_VERSYM with DT_VERDEF (what
the file defines) and DT_VERNEED (what it requires, per needed file): glibc refuses to load a
file whose required version node its provider does not define. Malformed input raises ELFError.
"""

from __future__ import annotations

import dataclasses
import hashlib

from .elf import (
    _DT_SYMTAB,
    _FORMATS,
    _SINGLE_TAGS,
    ELFError,
    _dynsym_count,
    _Reader,
    _Strings,
    is_elf,
    program_headers,
)

__all__ = ["ELFVersions", "read_versions"]

_PT_NOTE = 4
_SHT_PROGBITS, _SHF_EXECINSTR = 1, 4
_DT_NULL, _DT_STRTAB, _DT_STRSZ = 0, 5, 10
_DT_VERSYM, _DT_VERDEF, _DT_VERDEFNUM, _DT_VERNEED, _DT_VERNEEDNUM = (
    0x6FFFFFF0, 0x6FFFFFFC, 0x6FFFFFFD, 0x6FFFFFFE, 0x6FFFFFFF)
_TAGS = _SINGLE_TAGS | {_DT_VERSYM, _DT_VERDEF, _DT_VERDEFNUM, _DT_VERNEED, _DT_VERNEEDNUM}
_NT_GNU_BUILD_ID, _VER_FLG_BASE = 3, 1
_MAX_ENTRIES = 1 << 16  # version indexes are 16 bits wide
_BINDS = frozenset({1, 2, 10})  # GLOBAL, WEAK, GNU_UNIQUE (as elf.py)


@dataclasses.dataclass(frozen=True)
class ELFVersions:
    build_id: str  # "gnu:<hex>" (the build-ID note) or "text:<sha256 of executable sections>"
    defined: frozenset[str]  # version nodes it defines (OPENSSL_3.0.0), not its base name
    exports: frozenset[tuple[str, str | None]]  # (symbol, version node or None)
    #: (symbol, version node or None, file that must define the node or None)
    imports: frozenset[tuple[str, str | None, str | None]]
    requires: frozenset[tuple[str, str]]  # (needed file, version node) from DT_VERNEED


def _build_id(r: _Reader, phdrs: list[tuple[int, ...]], header: tuple[int, ...]) -> str:
    for fields in phdrs:
        p_type, p_offset, _, p_filesz = (fields[k] for k in r.ph_fields)
        if p_type != _PT_NOTE:
            continue
        at, end = p_offset, p_offset + p_filesz
        r.check(p_offset, p_filesz, "PT_NOTE segment")
        while at + 12 <= end:
            namesz, descsz, kind = r.words("I", at, 3, "note header")
            name_at = at + 12
            desc_at = name_at + (namesz + 3) // 4 * 4
            r.check(desc_at, descsz, "note")
            if kind == _NT_GNU_BUILD_ID and r.data[name_at:name_at + namesz] == b"GNU\0" and descsz:
                return "gnu:" + r.data[desc_at:desc_at + descsz].hex()
            at = desc_at + (descsz + 3) // 4 * 4
    shoff, shentsize, shnum = header[5], header[10], header[11]
    digest = hashlib.sha256()
    if shoff and shnum and shentsize >= r.shdr.size:
        for i in range(shnum):
            f = r.unpack(r.shdr, shoff + i * shentsize, f"section header {i}")
            if f[1] == _SHT_PROGBITS and f[2] & _SHF_EXECINSTR:
                r.check(f[4], f[5], f"section {i}")
                digest.update(r.data[f[4]:f[4] + f[5]])
    else:  # no section table: the whole file is all there is to go by
        digest.update(r.data)
    return "text:" + digest.hexdigest()


def read_versions(data: bytes) -> ELFVersions:
    """The build identity and the versioned dynamic symbols of an ELF image."""
    if not is_elf(data) or len(data) < 16 or data[4] not in _FORMATS or data[5] not in (1, 2):
        raise ELFError("not an ELF file of a supported class and encoding")
    r = _Reader(data, data[4], data[5])
    header = r.unpack(r.ehdr, 16, "ELF header")
    phdrs, dynamic = program_headers(r, header)
    build = _build_id(r, phdrs, header)
    if dynamic is None:
        return ELFVersions(build, frozenset(), frozenset(), frozenset(), frozenset())
    tags: dict[int, int] = {}
    for at in range(dynamic[0], dynamic[0] + dynamic[1] - r.dyn.size + 1, r.dyn.size):
        tag, value = r.unpack(r.dyn, at, "dynamic entry")
        if tag == _DT_NULL:
            break
        if tag in _TAGS:
            tags.setdefault(tag, value)
    if _DT_STRTAB not in tags:
        return ELFVersions(build, frozenset(), frozenset(), frozenset(), frozenset())
    s0 = r.file_offset(tags[_DT_STRTAB], "DT_STRTAB")
    s1 = s0 + tags.get(_DT_STRSZ, len(data) - s0)
    r.check(s0, s1 - s0, "dynamic string table")

    strings = _Strings(data, s0, s1)

    def text(offset: int, what: str) -> str:
        return strings.get(offset, what)

    names: dict[int, tuple[str | None, str | None]] = {}  # version index -> (node, needed file)
    defined: set[str] = set()
    requires: set[tuple[str, str]] = set()
    for table, num, kind in ((_DT_VERDEF, _DT_VERDEFNUM, "verdef"), (_DT_VERNEED, _DT_VERNEEDNUM, "verneed")):
        if table not in tags:
            continue
        at = r.file_offset(tags[table], f"DT_{kind.upper()}")
        for _ in range(min(tags.get(num, _MAX_ENTRIES), _MAX_ENTRIES)):
            if kind == "verdef":  # vd_version, vd_flags, vd_ndx, vd_cnt, vd_hash, vd_aux, vd_next
                _, flags, ndx, cnt = r.words("H", at, 4, kind)
                aux, nxt = r.words("I", at + 12, 2, kind)
                if cnt:
                    node = text(r.words("I", at + aux, 1, "verdaux")[0], "verdef name")
                    names[ndx] = (node, None)
                    if not flags & _VER_FLG_BASE:
                        defined.add(node)
            else:  # vn_version, vn_cnt, vn_file, vn_aux, vn_next; vernaux: hash, flags, other, name, next
                cnt = r.words("H", at + 2, 1, kind)[0]
                file_off, aux, nxt = r.words("I", at + 4, 3, kind)
                needed = text(file_off, "verneed file")
                entry = at + aux
                for _ in range(min(cnt, _MAX_ENTRIES)):
                    other = r.words("H", entry + 6, 1, "vernaux")[0]
                    name_off, step = r.words("I", entry + 8, 2, "vernaux")
                    node = text(name_off, "vernaux name")
                    names[other & 0x7FFF] = (node, needed)
                    requires.add((needed, node))
                    if not step:
                        break
                    entry += step
            if not nxt:
                break
            at += nxt
    exports: set[tuple[str, str | None]] = set()
    imports: set[tuple[str, str | None, str | None]] = set()
    if _DT_SYMTAB in tags:
        count = _dynsym_count(r, header, tags)
        start = r.file_offset(tags[_DT_SYMTAB], "DT_SYMTAB")
        r.check(start, count * r.sym.size, "dynamic symbol table")
        versym: tuple[int, ...] = ()
        if _DT_VERSYM in tags:
            versym = r.words("H", r.file_offset(tags[_DT_VERSYM], "DT_VERSYM"), count, "DT_VERSYM")
        name_at, info_at, shndx_at = r.sym_fields
        for i, fields in enumerate(r.sym.iter_unpack(data[start:start + count * r.sym.size])):
            if fields[name_at] == 0 or fields[info_at] >> 4 not in _BINDS:
                continue
            sym = text(fields[name_at], "symbol name")
            index = versym[i] & 0x7FFF if versym else 0
            found = names.get(index) if index > 1 else None  # 0 local, 1 global: unversioned
            ver, ver_file = found if found else (None, None)
            if fields[shndx_at] == 0:
                imports.add((sym, ver, ver_file))
            else:
                exports.add((sym, ver if ver in defined else None))
    return ELFVersions(build, frozenset(defined), frozenset(exports), frozenset(imports),
                       frozenset(requires))
