"""Read the dynamic-linking facts of an ELF file: SONAME, DT_NEEDED, rpaths, dynamic symbols.

Pure Python, stdlib only, ELF32/ELF64 in either byte order. Everything is found through the
program headers, as the dynamic loader does, so stripped files work; section headers are only
consulted (when present) to count the .dynsym entries. Malformed input of any kind raises
ELFError and nothing else, so callers can feed it arbitrary files.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import sys

__all__ = ["ELFError", "ELFInfo", "is_elf", "read_elf", "read_elf_file"]

_MAGIC = b"\x7fELF"

_PT_LOAD, _PT_DYNAMIC, _SHT_DYNSYM, _SHN_UNDEF = 1, 2, 11, 0
_DT_NULL, _DT_NEEDED, _DT_HASH, _DT_STRTAB, _DT_SYMTAB = 0, 1, 4, 5, 6
_DT_STRSZ, _DT_SYMENT, _DT_SONAME, _DT_RPATH, _DT_RUNPATH = 10, 11, 14, 15, 29
_DT_GNU_HASH = 0x6FFFFEF5
_SINGLE_TAGS = frozenset({_DT_HASH, _DT_STRTAB, _DT_SYMTAB, _DT_STRSZ, _DT_SYMENT, _DT_GNU_HASH})

# STB_GNU_UNIQUE (10) symbols (C++ inline statics, template members) are exported process-wide.
_BINDS = frozenset({1, 2, 10})  # GLOBAL, WEAK, GNU_UNIQUE
# NOTYPE, OBJECT, FUNC, COMMON, TLS, GNU_IFUNC: everything but SECTION/FILE bookkeeping.
_EXPORT_TYPES = frozenset({0, 1, 2, 5, 6, 10})

# e_machine -> (name for ELF32, name for ELF64), spelled as `uname -m` does.
# fmt: off
_MACHINES: dict[int, tuple[str, str]] = {
    2: ("sparc", "sparc64"), 3: ("i386", "i386"), 8: ("mips", "mips64"), 20: ("ppc", "ppc"),
    21: ("ppc64", "ppc64"), 22: ("s390", "s390x"), 40: ("arm", "arm"), 43: ("sparc64", "sparc64"),
    62: ("x86_64", "x86_64"), 183: ("aarch64", "aarch64"), 243: ("riscv32", "riscv64"),
    258: ("loongarch32", "loongarch64"),
}
# fmt: on
_EM_PPC64, _EM_S390, _EM_ALPHA = 21, 22, 0x9026

# Per ELF class: Ehdr after e_ident, Phdr, Shdr, Dyn, Sym formats, then the positions of
# (p_type, p_offset, p_vaddr, p_filesz) and (st_name, st_info, st_shndx), whose order differs.
_FORMATS: dict[int, tuple[str, str, str, str, str, tuple[int, ...], tuple[int, ...]]] = {
    1: ("HHIIIIIHHHHHH", "IIIIIIII", "IIIIIIIIII", "iI", "IIIBBH", (0, 1, 2, 4), (0, 3, 5)),
    2: ("HHIQQQIHHHHHH", "IIQQQQQQ", "IIQQQQIIQQ", "qQ", "IBBHQQ", (0, 2, 3, 5), (0, 1, 3)),
}


class ELFError(ValueError):
    """The data is not a well-formed ELF file of a kind this reader supports."""


@dataclasses.dataclass(frozen=True)
class ELFInfo:
    """What the dynamic loader sees; a file without PT_DYNAMIC has no names and no symbols."""

    machine: str
    bits: int
    soname: str | None
    needed: tuple[str, ...]
    rpath: tuple[str, ...]
    runpath: tuple[str, ...]
    exported: frozenset[str]
    imported: frozenset[str]


def is_elf(data: bytes) -> bool:
    """Whether *data* starts with the ELF magic (nothing else is checked)."""
    return data[:4] == _MAGIC


class _Reader:
    """Bounds-checked access to one file's bytes with its class's struct layouts."""

    def __init__(self, data: bytes, ei_class: int, ei_data: int) -> None:
        self.data = data
        self.bits = 32 * ei_class
        self.order = "<" if ei_data == 1 else ">"
        ehdr, phdr, shdr, dyn, sym, self.ph_fields, self.sym_fields = _FORMATS[ei_class]
        self.ehdr, self.phdr, self.shdr, self.dyn, self.sym = (
            struct.Struct(self.order + fmt) for fmt in (ehdr, phdr, shdr, dyn, sym)
        )
        self.loads: list[tuple[int, int, int]] = []  # (p_vaddr, p_offset, p_filesz)

    def check(self, offset: int, size: int, what: str) -> None:
        if offset < 0 or size < 0 or offset + size > len(self.data):
            raise ELFError(
                f"{what} ({size} bytes at {offset:#x}) is outside the {len(self.data)}-byte file"
            )

    def unpack(self, fmt: struct.Struct, offset: int, what: str) -> tuple[int, ...]:
        self.check(offset, fmt.size, what)
        return fmt.unpack_from(self.data, offset)

    def words(self, code: str, offset: int, count: int, what: str) -> tuple[int, ...]:
        # Checked before building the Struct so a hostile count cannot allocate much.
        self.check(offset, count * struct.calcsize(code), what)
        return struct.unpack_from(f"{self.order}{count}{code}", self.data, offset)

    def file_offset(self, vaddr: int, what: str) -> int:
        for seg_vaddr, seg_offset, seg_filesz in self.loads:
            if seg_vaddr <= vaddr < seg_vaddr + seg_filesz:
                return seg_offset + (vaddr - seg_vaddr)
        raise ELFError(f"{what} address {vaddr:#x} is not inside any PT_LOAD segment")


def _string(data: bytes, start: int, end: int, what: str) -> str:
    if not 0 <= start < end:
        raise ELFError(f"{what} string offset {start:#x} is outside the string table")
    nul = data.find(b"\0", start, end)
    if nul < 0:
        raise ELFError(f"{what} string at offset {start:#x} is not NUL-terminated")
    # surrogateescape keeps undecodable bytes round-trippable via os.fsencode. Interned: one
    # copy of a symbol name however many binaries (and readers of one binary) hold it.
    return sys.intern(data[start:nul].decode("utf-8", "surrogateescape"))


class _Strings:
    """A string table's strings by offset, decoded in one pass over the table when first asked
    (a symbol loop asks for nearly all of them); an offset into the middle of a string (a
    shared suffix) or outside the table takes ``_string``'s way, with its errors."""

    def __init__(self, data: bytes, start: int, end: int) -> None:
        self._data, self._start, self._end = data, start, end
        self._at: dict[int, str] | None = None

    def get(self, offset: int, what: str) -> str:
        if self._at is None:
            self._at = {}
            at = 0
            if 0 <= self._start < self._end <= len(self._data):
                parts = self._data[self._start:self._end].split(b"\0")
                for part in parts[:-1]:  # the last part has no NUL after it
                    self._at[at] = sys.intern(part.decode("utf-8", "surrogateescape"))
                    at += len(part) + 1
        found = self._at.get(offset)
        return found if found is not None else _string(self._data, self._start + offset, self._end, what)


def _split_paths(values: list[str]) -> tuple[str, ...]:
    return tuple(part for value in values if value for part in value.split(":"))


def _count_from_sections(r: _Reader, shoff: int, shnum: int, shentsize: int) -> int | None:
    if shoff == 0 or shnum == 0:
        return None
    if shentsize < r.shdr.size:
        raise ELFError(f"e_shentsize {shentsize} is smaller than a section header")
    for i in range(shnum):
        fields = r.unpack(r.shdr, shoff + i * shentsize, f"section header {i}")
        if fields[1] == _SHT_DYNSYM:
            size, entsize = fields[5], fields[9]
            if entsize != r.sym.size:
                raise ELFError(f".dynsym entry size {entsize} is not {r.sym.size}")
            return int(size // entsize)
    return None


def _count_from_gnu_hash(r: _Reader, offset: int) -> int:
    nbuckets, symoffset, bloom_size, _shift = r.words("I", offset, 4, "DT_GNU_HASH header")
    buckets_at = offset + 16 + bloom_size * (r.bits // 8)
    buckets = r.words("I", buckets_at, nbuckets, "DT_GNU_HASH buckets")
    last = max(buckets, default=0)  # 0 marks an empty bucket
    if last == 0:
        return int(symoffset)  # only unhashed (e.g. undefined) symbols
    if last < symoffset:
        raise ELFError("DT_GNU_HASH bucket points below its symoffset")
    # Chains parallel the hashed symbols; the last entry of a chain has bit 0 set. Each read
    # is bounds-checked, so a chain without terminator ends in ELFError at the end of data.
    chain_at = buckets_at + 4 * nbuckets - 4 * symoffset
    index = last
    while not r.words("I", chain_at + 4 * index, 1, "DT_GNU_HASH chain")[0] & 1:
        index += 1
    return int(index + 1)


def _dynsym_count(r: _Reader, header: tuple[int, ...], tags: dict[int, int]) -> int:
    machine, shoff, shentsize, shnum = header[1], header[5], header[10], header[11]
    sections = _count_from_sections(r, shoff, shnum, shentsize)
    if sections is not None:
        return sections
    if _DT_HASH in tags:
        # s390x and Alpha use 8-byte hash table words; everyone else 4 (even on ELF64).
        code = "Q" if r.bits == 64 and machine in (_EM_S390, _EM_ALPHA) else "I"
        offset = r.file_offset(tags[_DT_HASH], "DT_HASH")
        return int(r.words(code, offset, 2, "DT_HASH header")[1])  # nchain == symbol count
    if _DT_GNU_HASH in tags:
        return _count_from_gnu_hash(r, r.file_offset(tags[_DT_GNU_HASH], "DT_GNU_HASH"))
    return 0  # no way to know how many symbols there are; report none


def program_headers(r: _Reader, header: tuple[int, ...], *, exact: bool = False
                    ) -> tuple[list[tuple[int, ...]], tuple[int, int] | None]:
    """The program headers, with the PT_LOAD segments noted in ``r.loads``, and PT_DYNAMIC's
    (offset, size), None without one. ``exact``: entries must be exactly one header long (a
    patcher rewrites the table); otherwise longer entries are read by their first bytes."""
    phoff, phentsize, phnum = header[4], header[8], header[9]
    if phnum and exact and phentsize != r.phdr.size:
        raise ELFError(f"e_phentsize {phentsize} is not {r.phdr.size}")
    if phnum and phentsize < r.phdr.size:
        raise ELFError(f"e_phentsize {phentsize} is smaller than a program header")
    phdrs = [r.unpack(r.phdr, phoff + i * phentsize, f"program header {i}") for i in range(phnum)]
    dynamic = None
    for fields in phdrs:
        p_type, p_offset, p_vaddr, p_filesz = (fields[k] for k in r.ph_fields)
        if p_type == _PT_LOAD:
            r.loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == _PT_DYNAMIC and dynamic is None:
            dynamic = (p_offset, p_filesz)
    return phdrs, dynamic


def read_elf(data: bytes) -> ELFInfo:
    """Parse the dynamic section and dynamic symbol table of an ELF image held in *data*."""
    if not is_elf(data):
        raise ELFError("not an ELF file (bad magic)")
    if len(data) < 16:
        raise ELFError("truncated ELF identification")
    ei_class, ei_data = data[4], data[5]
    if ei_class not in _FORMATS:
        raise ELFError(f"unsupported ELF class {ei_class}")
    if ei_data not in (1, 2):
        raise ELFError(f"unsupported ELF data encoding {ei_data}")
    r = _Reader(data, ei_class, ei_data)
    header = r.unpack(r.ehdr, 16, "ELF header")
    machine = header[1]
    names = _MACHINES.get(machine, (f"em{machine}", f"em{machine}"))
    machine_name = names[r.bits == 64]
    if machine == _EM_PPC64 and r.order == "<":
        machine_name = "ppc64le"

    dynamic = program_headers(r, header)[1]
    if dynamic is None:  # static executable or relocatable object: nothing is linked
        return ELFInfo(machine_name, r.bits, None, (), (), (), frozenset(), frozenset())

    dyn_offset, dyn_size = dynamic
    r.check(dyn_offset, dyn_size, "PT_DYNAMIC segment")
    tags: dict[int, int] = {}
    lists: dict[int, list[int]] = {_DT_NEEDED: [], _DT_SONAME: [], _DT_RPATH: [], _DT_RUNPATH: []}
    for offset in range(dyn_offset, dyn_offset + dyn_size - r.dyn.size + 1, r.dyn.size):
        tag, value = r.dyn.unpack_from(data, offset)
        if tag == _DT_NULL:
            break
        if tag in lists:
            lists[tag].append(value)
        elif tag in _SINGLE_TAGS:
            tags.setdefault(tag, value)
    if _DT_SYMENT in tags and tags[_DT_SYMENT] != r.sym.size:
        raise ELFError(f"DT_SYMENT {tags[_DT_SYMENT]} is not {r.sym.size}")

    str_start = str_end = 0
    if _DT_SYMTAB in tags or any(lists.values()):
        if _DT_STRTAB not in tags:
            raise ELFError("dynamic section refers to strings but has no DT_STRTAB")
        str_start = r.file_offset(tags[_DT_STRTAB], "DT_STRTAB")
        str_end = str_start + tags[_DT_STRSZ] if _DT_STRSZ in tags else len(data)
        r.check(str_start, str_end - str_start, "dynamic string table")

    def strings(tag: int, what: str) -> list[str]:
        return [_string(data, str_start + v, str_end, what) for v in lists[tag]]

    exported: set[str] = set()
    imported: set[str] = set()
    if _DT_SYMTAB in tags:
        count = _dynsym_count(r, header, tags)
        sym_start = r.file_offset(tags[_DT_SYMTAB], "DT_SYMTAB")
        r.check(sym_start, count * r.sym.size, f"dynamic symbol table of {count} entries")
        view = memoryview(data)[sym_start : sym_start + count * r.sym.size]
        name_at, info_at, shndx_at = r.sym_fields
        table = _Strings(data, str_start, str_end)
        for fields in r.sym.iter_unpack(view):
            name_offset, info = fields[name_at], fields[info_at]
            if name_offset == 0 or info >> 4 not in _BINDS:
                continue  # unnamed (e.g. the index-0 null symbol) or local
            name = table.get(name_offset, "symbol name")
            if fields[shndx_at] == _SHN_UNDEF:
                imported.add(name)
            elif info & 0xF in _EXPORT_TYPES:
                exported.add(name)

    sonames = strings(_DT_SONAME, "DT_SONAME")
    return ELFInfo(
        machine=machine_name,
        bits=r.bits,
        soname=sonames[0] if sonames else None,
        needed=tuple(strings(_DT_NEEDED, "DT_NEEDED")),
        rpath=_split_paths(strings(_DT_RPATH, "DT_RPATH")),
        runpath=_split_paths(strings(_DT_RUNPATH, "DT_RUNPATH")),
        exported=frozenset(exported),
        imported=frozenset(imported),
    )


def read_elf_file(path: str | os.PathLike[str]) -> ELFInfo:
    """Read the file at *path* and parse it; ELFError messages name the file."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return read_elf(data)
    except ELFError as exc:
        raise ELFError(f"{os.fspath(path)}: {exc}") from None
