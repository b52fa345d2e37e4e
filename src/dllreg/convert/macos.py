"""``devendor`` for delocate-repaired macOS wheels: the Mach-O side of the plan and the patch.

A dylib in ``<pkg>/.dylibs/`` is packaged as a library wheel of its own; it is never substituted
by a registry library, because dllreg does not read the export trie and so cannot check that a
substitute exports what the wheel imports (the safety rule). The packaged copy's install name
becomes ``@rpath/<file name>``, and every load command that named the vendored copy is rewritten
to exactly that string: dyld reuses a loaded image whose install name equals the load command's
string, which is what the stub's preload relies on. LC_RPATH entries into ``.dylibs`` go.

Patching invalidates a code signature; arm64 refuses to map such a binary, so the output says
which binaries must be re-signed (``codesign -s - -f``, on a Mac). Nothing here re-signs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from packaging.version import Version

from ..binary.macho import is_macho
from ..binary.machopatch import change_load_dylibs, code_signed, set_install_name
from ..libwheel.naming import derived_names, unmangle, upstream_versions
from ..names import library_name

__all__ = ["NO_SUBSTITUTE", "RESIGN", "derived", "identity", "library_note",
           "patch_consumer", "patch_library", "resign_note", "runtime_name", "signature_broken",
           "split_dylib"]

NO_SUBSTITUTE = ("never substituted on macOS: dllreg cannot read Mach-O export tries, so no registry "
                 "library can be checked to export what the wheel imports from it")
RESIGN = "re-sign with `codesign -s - -f` on macOS before use (arm64 refuses an invalid signature)"
_DYLIB = re.compile(r"(.+?)((?:\.\d+)*)\.dylib", re.IGNORECASE)


def runtime_name(filename: str) -> str:
    """The install name of a copy a recipe vouches for: what consumers load and the stub
    preloads (other copies get ``derived``'s, with their build tag)."""
    return f"@rpath/{filename}"


def split_dylib(filename: str) -> tuple[str, str, str]:
    """(stem, ABI major, version numbers): ``libgcc_s.1.1.dylib`` -> (``libgcc_s``, ``1``,
    ``1.1``); a name not like a dylib is all stem."""
    m = _DYLIB.fullmatch(filename)
    if m is None:
        return unmangle(filename), "", ""
    numbers = m[2][1:]
    return unmangle(m[1]), numbers.split(".")[0] if numbers else "", numbers


def derived(filename: str, tag: str) -> tuple[str, str, str]:
    """(name, version, install name) by the naming rule (libwheel.naming): ``libgcc_s.1.1.dylib``
    -> (``gcc-s-1-<tag>``, ``1.1``, ``@rpath/libgcc_s-<tag>.1.1.dylib``): never an install name
    another provider's copy may carry (dyld reuses a loaded image whose install name matches)."""
    stem, major, numbers = split_dylib(filename)
    bare = stem[3:] if stem.lower().startswith("lib") and len(stem) > 3 else stem
    bare = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", bare)
    name = library_name("-".join(p for p in (bare, major, tag) if p))
    suffix = f".{numbers}.dylib" if numbers else (".dylib" if filename.lower().endswith(".dylib") else "")
    return name, str(Version(numbers or "0")), f"@rpath/{stem}-{tag}{suffix}"


def identity(filename: str, digest: str) -> tuple[str, str]:
    """(library name, version) of a vendored dylib: ``libgcc_s.1.1.dylib`` -> ``gcc-s``,
    ``1.1+h<8 hex of content_digest>``. The label stands in for the exported-symbol digest of
    the ELF/PE rule: different builds get different versions, so pip never mixes them."""
    m = _DYLIB.fullmatch(filename)
    if m is None:  # not named like a dylib: the general rule, with this label
        plain = unmangle(filename)
        name = derived_names(plain, "")[0]
        return name, f"{upstream_versions(b'', plain)['file']}+h{digest[:8]}"
    stem = unmangle(m[1])  # a hash before the version numbers, should a tool add one
    stem = stem[3:] if stem.lower().startswith("lib") and len(stem) > 3 else stem
    name = library_name(re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", stem))
    return name, f"{Version(m[2][1:] or '0')}+h{digest[:8]}"


def signature_broken(before: bytes, after: bytes | bytearray) -> bool:
    """Whether a patch changed a code-signed Mach-O file (its signature no longer matches)."""
    return is_macho(before) and before != after and code_signed(before)


def patch_consumer(data: bytes, renames: Mapping[str, str], drop: Callable[[str], bool] | None) -> bytes:
    """A consumer binary loading the packaged copies' install names, without rpaths into .dylibs."""
    return change_load_dylibs(data, renames, drop_rpaths=drop)


def patch_library(data: bytes, runtime: str, renames: Mapping[str, str]) -> bytes:
    """A packaged copy: its install name set, its loads of other copies renamed, every LC_RPATH
    removed (the stub preloads its ``Requires`` first, as on Linux)."""
    return set_install_name(change_load_dylibs(data, renames, drop_rpaths=lambda entry: True), runtime)


def resign_note(members: Sequence[str]) -> str | None:
    """One note per wheel naming the patched binaries whose code signature is now invalid."""
    if not members:
        return None
    shown = ", ".join(members[:5]) + (f" and {len(members) - 5} more" if len(members) > 5 else "")
    return f"code signature invalidated in {len(members)} Mach-O binaries ({shown}): {RESIGN}"


def library_note(name: str, version: str, path: str) -> str:
    return f"library {name} {version}: {path}'s code signature is invalidated: {RESIGN}"
