"""Readers for native binary formats, and one view over all three.

``elf``, ``pe`` and ``macho`` each read their format exactly; ``read_binary`` dispatches on
the magic bytes and returns the facts dllreg decides with, whatever the format.
The readers and patchers work on bytes and return dataclasses; they import only the ground
floor (errors). What a binary needs and who provides it is decided above, in env/inspect.py.
"""

from __future__ import annotations

import dataclasses

from ..errors import DllregError
from .elf import ELFError, is_elf, read_elf
from .macho import MachOError, is_macho, read_macho


class BinaryError(DllregError):
    """A file is not a shared library dllreg can read, or is malformed."""


@dataclasses.dataclass(frozen=True)
class BinaryInfo:
    format: str  # "elf" | "pe" | "macho"
    arch: str  # "x86_64", "aarch64"/"arm64", "i386", ... as the format's reader names it
    bits: int
    name: str | None  # ELF SONAME; PE: None (the loader matches file names); Mach-O install name
    needed: tuple[str, ...]  # DT_NEEDED / import table / LC_LOAD_DYLIB & co.
    delay_needed: tuple[str, ...] = ()  # PE delay imports
    rpath: tuple[str, ...] = ()  # ELF RPATH then RUNPATH / Mach-O LC_RPATH
    kind: str = "library"  # "library", "executable", "bundle", "object"
    arches: tuple[str, ...] = ()  # every slice of a fat Mach-O file (else just arch)
    min_os: str | None = None  # Mach-O deployment target


def is_pe(data: bytes) -> bool:
    from .pe import is_pe as _is_pe

    return _is_pe(data)


def read_binary(data: bytes, origin: str) -> BinaryInfo:
    """Read an ELF, PE or Mach-O file's dependency facts; BinaryError names ``origin``."""
    try:
        if is_elf(data):
            e = read_elf(data)
            return BinaryInfo("elf", e.machine, e.bits, e.soname, e.needed,
                              rpath=e.rpath + e.runpath)
        if data[:2] == b"MZ":
            from .pe import PEError, read_pe  # pefile is imported only for PE files

            try:
                p = read_pe(data)
            except PEError as exc:
                raise BinaryError(f"{origin}: {exc}") from None
            return BinaryInfo("pe", p.machine, p.bits, None, p.imports,
                              delay_needed=p.delay_imports,
                              kind="library" if p.is_dll else "executable")
        if is_macho(data):
            m = read_macho(data)
            first = m.arches[0]
            kind = {"dylib": "library", "bundle": "bundle", "execute": "executable"}.get(
                first.filetype, first.filetype)
            return BinaryInfo("macho", first.arch, first.bits, first.install_name, first.needed,
                              rpath=first.rpaths, kind=kind,
                              arches=tuple(a.arch for a in m.arches), min_os=first.min_os)
    except (ELFError, MachOError) as exc:
        raise BinaryError(f"{origin}: {exc}") from None
    raise BinaryError(f"{origin}: not an ELF, PE or Mach-O file")
