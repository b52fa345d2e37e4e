"""Read the dynamic-linking facts of a PE (Windows) image: import, delay-import and export tables.

The parsing is pefile's, as in delvewheel: headers with fast_load, then only the three directories
of interest. pefile is built for malware triage, so it is lenient: on damaged input it records a
warning and carries on, or drops a descriptor, thunk or export without a word. This module turns
that into a verdict: an exception from pefile, a warning it records while reading the three
tables, section data past the end of the file, or an entry pefile skipped raises PEError, so a
result is never a silently partial view. pefile's own limits therefore raise PEError too: symbol
names outside its alphabets (imports: A-Z a-z 0-9 . _ ? @ $ ( ) < >; exports: printable ASCII)
and more than 8192 imported symbols in one file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import struct
from collections.abc import Iterator
from typing import Any

import pefile

__all__ = ["PEError", "PEInfo", "is_pe", "read_pe", "read_pe_file"]

_MACHINES = {0x8664: "x86_64", 0x14C: "i386", 0xAA64: "arm64", 0x1C0: "arm", 0x1C4: "arm"}
_BITS = {0x10B: 32, 0x20B: 64}  # optional header magic: PE32, PE32+
_IMAGE_FILE_DLL = 0x2000
_EXPORT = 0  # data directory index; for the import tables also descriptor size, pefile's names
_IMPORT = (1, 20, "DIRECTORY_ENTRY_IMPORT", "Name", "OriginalFirstThunk", "FirstThunk")
_DELAY_IMPORT = (13, 32, "DIRECTORY_ENTRY_DELAY_IMPORT", "szName", "pINT", "pIAT")
_DIRECTORIES = (_IMPORT[0], _DELAY_IMPORT[0], _EXPORT)  # a tuple: pefile empties a list it is given
# pefile gives up (with a warning) past 8192 exports or 120 ordinal-only exports at one address;
# large C++ DLLs export more. Ordinals are 16-bit, so this is the format's own limit.
_MAX_EXPORTS = 0x10000
_HARMLESS_WARNINGS = ("Imported symbols contain entries typical of packed executables",)
# pefile documents only PEFormatError, but fuzzing has found others escaping it (struct.error and
# IndexError from short reads, e.g. erocarrera/pefile#311; TypeError or AttributeError from a
# structure it failed to read; OverflowError or MemoryError from absurd sizes).
# fmt: off
_PEFILE_ERRORS = (
    pefile.PEFormatError, struct.error, LookupError, ValueError, ArithmeticError, AttributeError, TypeError,
    MemoryError, RecursionError,
)
# fmt: on


class PEError(ValueError):
    """The data is not a well-formed PE image, or pefile could not read all of its tables."""


@dataclasses.dataclass(frozen=True)
class PEInfo:
    """What the Windows loader sees; `imported` pairs are (lowercased DLL name, symbol or "#ordinal")."""

    machine: str
    bits: int
    is_dll: bool
    dll_name: str | None
    imports: tuple[str, ...]
    delay_imports: tuple[str, ...]
    exports: frozenset[str]
    imported: frozenset[tuple[str, str]]
    code_digest: str = ""  # sha256 of the executable sections: the build, whatever its names


def _signature_problem(data: bytes) -> str | None:
    if data[:2] != b"MZ":
        return "no MZ signature"
    if len(data) < 0x40:
        return f"{len(data)} bytes are too few for a DOS header"
    (e_lfanew,) = struct.unpack_from("<I", data, 0x3C)
    if e_lfanew + 4 > len(data):
        return f"e_lfanew {e_lfanew:#x} points past the end of the {len(data)}-byte file"
    if data[e_lfanew : e_lfanew + 4] != b"PE\0\0":
        return f"no PE signature at e_lfanew {e_lfanew:#x}"
    return None


def is_pe(data: bytes) -> bool:
    """Whether *data* has a DOS header whose e_lfanew points at a PE signature."""
    return _signature_problem(data) is None


def _text(name: Any) -> str:
    return bytes(name).decode("utf-8", "replace")


def _check_sections(pe: Any, size: int) -> None:
    count = pe.FILE_HEADER.NumberOfSections
    if len(pe.sections) != count:  # pefile stops at an all-zero or unreadable header
        raise PEError(f"only {len(pe.sections)} of {count} section headers are readable")
    for section in pe.sections:
        end = section.PointerToRawData + section.SizeOfRawData
        if section.SizeOfRawData and end > size:
            name = _text(section.Name.rstrip(b"\0"))
            raise PEError(f"truncated: section {name!r} needs {end} bytes, the file has {size}")


def _directory_rva(pe: Any, index: int) -> int:
    directories = pe.OPTIONAL_HEADER.DATA_DIRECTORY  # NumberOfRvaAndSizes entries, may be < 16
    return int(directories[index].VirtualAddress) if index < len(directories) else 0


def _check_complete(pe: Any, rva: int, structs: list[Any], size: int, what: str) -> None:
    """pefile skips a descriptor or thunk it cannot read without a warning, so the ones it kept
    must be all of them: contiguous from *rva* and followed by the all-zero terminator."""
    start = pe.get_offset_from_rva(rva)
    if [s.get_file_offset() for s in structs] != [start + i * size for i in range(len(structs))]:
        raise PEError(f"{what} at RVA {rva:#x}: pefile skipped an unreadable entry")
    if pe.get_data(rva + len(structs) * size, size) != bytes(size):
        raise PEError(f"{what} at RVA {rva:#x}: entry {len(structs)} is unreadable")


def _imports(pe: Any, delayed: bool, imported: set[tuple[str, str]]) -> tuple[str, ...]:
    index, size, attribute, *fields = _DELAY_IMPORT if delayed else _IMPORT
    entries: list[Any] = getattr(pe, attribute, [])
    rva = _directory_rva(pe, index)
    if not rva:
        return ()
    what = "delay-import table" if delayed else "import table"
    _check_complete(pe, rva, [entry.struct for entry in entries], size, what)
    step = 8 if pe.PE_TYPE == pefile.OPTIONAL_HEADER_MAGIC_PE_PLUS else 4
    names: list[str] = []
    for entry in entries:
        # pefile has turned the addresses in old VA-style delay descriptors into RVAs already.
        name_rva, lookup, iat = (getattr(entry.struct, field) for field in fields)
        # Re-read: pefile replaces names outside its DOS file name alphabet (a space, non-ASCII)
        # with b"*invalid*".
        name = _text(pe.get_string_at_rva(name_rva, pefile.MAX_DLL_LENGTH))
        thunks = [symbol.struct_table for symbol in entry.imports]  # read from the lookup table or IAT
        _check_complete(pe, lookup or iat, thunks, step, f"thunks of {name}")
        names.append(name)
        for symbol in entry.imports:
            # import_by_ordinal, not `name is None`: pefile fills in names for the ordinals of a few
            # system DLLs (ws2_32, oleaut32) from its own tables.
            key = f"#{symbol.ordinal}" if symbol.import_by_ordinal else _text(symbol.name)
            imported.add((name.lower(), key))
    return tuple(names)


def _read(pe: Any, size: int) -> PEInfo:
    machine = pe.FILE_HEADER.Machine
    bits = _BITS.get(pe.OPTIONAL_HEADER.Magic)
    if bits is None:
        raise PEError(f"optional header magic {pe.OPTIONAL_HEADER.Magic:#x} is neither PE32 nor PE32+")
    _check_sections(pe, size)
    before = len(pe.get_warnings())
    pe.parse_data_directories(directories=_DIRECTORIES)
    for warning in pe.get_warnings()[before:]:
        if not warning.startswith(_HARMLESS_WARNINGS):
            raise PEError(f"pefile cannot read the import or export tables: {warning}")

    imported: set[tuple[str, str]] = set()
    imports = _imports(pe, False, imported)
    delay_imports = _imports(pe, True, imported)

    dll_name: str | None = None
    exports: frozenset[str] = frozenset()
    if _directory_rva(pe, _EXPORT):
        export = getattr(pe, "DIRECTORY_ENTRY_EXPORT", None)
        if export is None:  # pefile gives up on a bad ordinal or name table without a warning
            raise PEError("the export directory is unreadable")
        named = [_text(symbol.name) for symbol in export.symbols if symbol.name is not None]
        if len(named) != export.struct.NumberOfNames:  # pefile skips what it cannot read
            raise PEError(f"only {len(named)} of {export.struct.NumberOfNames} export names are readable")
        if "" in named:
            raise PEError("the export name table has an empty name")
        dll_name = (_text(export.name) if export.struct.Name else "") or None
        exports = frozenset(named)
    return PEInfo(
        machine=_MACHINES.get(machine, f"pe{machine:#x}"),
        bits=bits,
        is_dll=bool(pe.FILE_HEADER.Characteristics & _IMAGE_FILE_DLL),
        dll_name=dll_name,
        imports=imports,
        delay_imports=delay_imports,
        exports=exports,
        imported=frozenset(imported),
        code_digest=_code_digest(pe),
    )


def _code_digest(pe: Any) -> str:
    digest = hashlib.sha256()
    for section in pe.sections:
        if section.Characteristics & 0x20000000:  # IMAGE_SCN_MEM_EXECUTE
            digest.update(section.get_data())
    return digest.hexdigest()


def read_pe(data: bytes) -> PEInfo:
    """Parse the headers and the import, delay-import and export tables of a PE image."""
    problem = _signature_problem(data)
    if problem is not None:
        raise PEError(f"not a PE file: {problem}")
    with parsed(data, max_symbol_exports=_MAX_EXPORTS, max_repeated_symbol=_MAX_EXPORTS) as pe:
        return _read(pe, len(data))


@contextlib.contextmanager
def parsed(data: bytes, **options: Any) -> Iterator[Any]:
    """``pefile.PE(data=data, fast_load=True, **options)``, with every pefile failure inside the
    block turned into PEError."""
    pe: Any = None
    try:
        pe = pefile.PE(data=data, fast_load=True, **options)
        yield pe
    except PEError:
        raise
    except _PEFILE_ERRORS as exc:
        detail = exc.value if isinstance(exc, pefile.PEFormatError) else f"{type(exc).__name__}: {exc}"
        raise PEError(f"malformed PE file ({detail})") from exc
    finally:
        if pe is not None:
            pe.close()  # for data= this only runs gc.collect(); pefile calls it itself if PE() fails


def read_pe_file(path: str | os.PathLike[str]) -> PEInfo:
    """Read the file at *path* and parse it; PEError messages name the file."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return read_pe(data)
    except PEError as exc:
        raise PEError(f"{os.fspath(path)}: {exc}") from None
