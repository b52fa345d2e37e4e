"""``devendor``'s outputs: the plan (devendor.py) turned into wheel contents, then written.

``build_outputs`` is pure: it patches binaries in memory (elfpatch/pepatch, ``set_soname``),
removes the ``.libs`` directory and delvewheel's patch, adds the stubs through consumer.py and
plans the library wheels with libwheel.py. ``write_outputs`` is the only function that touches
the output directory, and it runs only once every output exists in memory.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from .binary.elf import ELFError
from .binary.macho import is_macho
from .consumer import OutMember, consumer_changes, write_members
from .devendor import DevendorPlan, NewLibrary, WheelPlan
from .devendor_read import DevendorError, LibraryWheel
from .errors import DllregError
from .libwheel import LibraryPlan, Source, SourceFile, plan_library, write_library_wheel
from .wheelfile import publish

_PATCH = re.compile(r"[ \t]*# start delvewheel patch.*?# end delvewheel patch[^\n]*\n?", re.S)
_SIGNATURES = ("RECORD.jws", "RECORD.p7s")  # they sign the old RECORD


@dataclasses.dataclass(frozen=True)
class ConsumerOutput:
    plan: WheelPlan
    dist_info: str
    members: tuple[OutMember, ...]
    notes: tuple[str, ...] = ()  # e.g. "signature removed from X"


@dataclasses.dataclass(frozen=True)
class Outputs:
    consumers: tuple[ConsumerOutput, ...]
    libraries: tuple[tuple[NewLibrary, LibraryPlan], ...]
    substitutes: tuple[LibraryWheel, ...]


def set_soname(data: bytes, soname: str) -> bytes:
    """*data* with its DT_SONAME overwritten in place by a name that is not longer, or pointed at
    a new string table (elfneeded.rename_needed) for a longer one.

    Refused (ELFError) when other strings share the old name's bytes or no SONAME exists;
    references to the same string (verdef's base name) are renamed with it, as they should.
    """
    from .binary.elfneeded import _parse, _string_end  # the patcher's own ELF model

    img = _parse(data)
    r = img.r
    value = None
    for at in range(img.dyn_offset, len(data) - r.dyn.size + 1, r.dyn.size):
        tag, val = r.dyn.unpack_from(data, at)
        if tag == 0:
            break
        if tag == 14:  # DT_SONAME
            value = val
            break
    if value is None:
        raise ELFError("no DT_SONAME to rewrite")
    start, nul = img.strtab + value, _string_end(data, img, value)
    new = soname.encode("utf-8", "surrogateescape")
    first = max(data.rfind(b"\0", img.strtab, start) + 1, img.strtab)
    shared = any(first <= img.strtab + ref.offset < nul for ref in img.refs if ref.offset != value)
    if len(new) > nul - start and new and b"\0" not in new and img.exact:  # a new string table
        from .binary.elfneeded import rename_needed

        old = data[start:nul].decode("utf-8", "surrogateescape")
        return rename_needed(data, {old: soname})
    if len(new) > nul - start or not new or b"\0" in new or shared or not img.exact:
        raise ELFError(f"the SONAME cannot become {soname!r} in place (longer, or its bytes are shared)")
    out = bytearray(data)
    out[start:nul] = new.ljust(nul - start, b"\0")
    return bytes(out)


def _installed(member: str) -> str:
    parts = member.split("/")
    return "/".join(parts[2:]) if len(parts) > 2 and parts[0].endswith(".data") else member


def _drop_into(member: str, emptied: tuple[str, ...]) -> Callable[[str], bool]:
    """Selects the $ORIGIN-relative rpath entries of ``member`` that point into a removed dir."""
    here = posixpath.dirname(_installed(member))

    def drop(entry: str) -> bool:
        for token in ("${ORIGIN}", "$ORIGIN", "@loader_path"):  # ELF, Mach-O
            if entry.startswith(token):
                path = posixpath.normpath(posixpath.join(here, "./" + entry[len(token):]))
                return path in emptied
        return False

    return drop


def _patch_binary(name: str, data: bytes, renames: dict[str, str],
                  drop: Callable[[str], bool] | None) -> tuple[bytes, str | None]:
    """(patched bytes, note) of one binary; the note says a signature was removed."""
    if data[:4] == b"\x7fELF":
        from .binary.elfpatch import replace_needed

        return replace_needed(data, renames, drop_rpath=drop), None
    if data[:2] == b"MZ":
        from .binary.pepatch import rename_imports

        result = rename_imports(data, renames)
        return result.data, (f"{name}: its Authenticode signature was removed (the import table "
                             "changed)" if result.signature_removed else None)
    if is_macho(data):  # a broken code signature is reported per wheel (devendor_macos)
        from .devendor_macos import patch_consumer

        return patch_consumer(data, renames, drop), None
    raise DevendorError(f"{name}: only ELF, PE and Mach-O binaries can be rewritten")


def _consumer(wp: WheelPlan, choices: dict[str, str]) -> ConsumerOutput:
    origin = wp.wheel.filename
    data = {m.name: m.data for m in wp.wheel.members if m.name not in wp.removed}
    renames = dict(wp.renames)
    notes = []
    try:
        for name in wp.binaries:
            data[name], note = _patch_binary(name, data[name], renames, _drop_into(name, wp.emptied))
            notes += [note] if note else []
    except (ELFError, ValueError) as exc:  # the patchers' errors are ValueError subclasses
        raise DevendorError(f"{origin}: {name}: cannot rewrite it: {exc}") from None
    from .devendor_macos import resign_note, signature_broken

    before = {m.name: m.data for m in wp.wheel.members}
    resign = resign_note([n for n in wp.binaries if signature_broken(before[n], data[n])])
    notes += [resign] if resign else []
    if wp.patch_file:  # delvewheel's add_dll_directory points at the removed .libs directory
        text = data[wp.patch_file].decode("utf-8")
        data[wp.patch_file] = _PATCH.sub("", text, count=1).encode("utf-8")
    # What stays in a libs dir is a vendored library, not an extension module needing a stub.
    visible = {n: d for n, d in data.items()
               if not any(_installed(n).startswith(x + "/") for x in wp.libs_dirs)}
    try:
        dist_info, changes = consumer_changes(origin, visible, wp.requires, wp.requires,
                                              choices=choices)
    except DllregError as exc:
        raise DevendorError(str(exc)) from None
    for sig in _SIGNATURES:
        data.pop(f"{dist_info}/{sig}", None)
    by_name = {m.name: m for m in wp.wheel.members}
    members: list[OutMember] = [(n, changes.pop(n, d), by_name[n].executable, by_name[n].date_time)
                                for n, d in data.items()]
    members += [(n, d, False, None) for n, d in changes.items()]
    return ConsumerOutput(wp, dist_info, tuple(members), tuple(notes))


def _library(nl: NewLibrary, data: Mapping[str, bytes]) -> tuple[LibraryPlan, str | None]:
    """The library wheel's plan, and the note that its DLL lost a signature."""
    where = f"{nl.wheel}: {nl.member}"
    try:
        files, notes = [], []
        for member, runtime in ((nl.member, nl.runtime), *((m, r) for m, r, _ in nl.group)):
            where = f"{nl.wheel}: {member}"
            patched, note = _patched_library(nl, member, runtime, data[member])
            files.append(SourceFile(f"lib/{posixpath.basename(runtime)}", patched))
            notes += [note] if note else []
        src = Source(f"devendored from {nl.wheel}: {nl.member} sha256={nl.sha256}", tuple(files), nl.platform)
        return plan_library(src, nl.name, nl.version, requires=[str(r) for r in nl.requires],
                            license=nl.license, cycles=bool(nl.group)), "; ".join(notes) or None
    except (ELFError, ValueError, DllregError) as exc:
        raise DevendorError(f"{where}: cannot package it as {nl.name} {nl.version}: {exc}") from None


def _patched_library(nl: NewLibrary, member: str, runtime: str, source: bytes) -> tuple[bytes, str | None]:
    if source[:4] == b"\x7fELF":
        # Every rpath goes (the stub preloads the library's Requires), except, in a group of
        # files that need each other, $ORIGIN: each finds the others in the group's own lib/.
        drop = (lambda entry: entry not in ("$ORIGIN", "${ORIGIN}")) if nl.group else (lambda entry: True)
        patched, note = _patch_binary(member, source, dict(nl.renames), drop)
        return set_soname(patched, runtime), note
    if is_macho(source):
        from .devendor_macos import library_note, patch_library, signature_broken

        patched = patch_library(source, runtime, dict(nl.renames))
        broken = signature_broken(source, patched)
        return patched, library_note(nl.name, nl.version, posixpath.basename(member)) if broken else None
    return _patch_binary(member, source, dict(nl.renames), None)


def build_outputs(plan: DevendorPlan) -> Outputs:
    """Every output wheel's contents, in memory."""
    wheels = {wp.wheel.filename: wp.wheel for wp in plan.wheels}
    # A substitute that is a PyPI wheel as published (scipy-openblas64) is required by its name.
    choices = {s.name: s.dist for s in plan.substitutes if s.dist}
    consumers = tuple(_consumer(wp, choices) for wp in plan.wheels if wp.changed)
    libraries: list[tuple[NewLibrary, LibraryPlan]] = []
    notes: dict[str, tuple[str, ...]] = {}
    for nl in plan.libraries:
        lp, note = _library(nl, wheels[nl.wheel].data())
        libraries.append((nl, lp))
        if note:  # reported with the wheel the library came from
            notes[nl.wheel] = (*notes.get(nl.wheel, ()), note)
    consumers = tuple(dataclasses.replace(c, notes=c.notes + notes.get(c.plan.wheel.filename, ()))
                      for c in consumers)
    return Outputs(consumers, tuple(libraries), plan.substitutes)


def write_outputs(outputs: Outputs, outdir: Path) -> list[Path]:
    """Write (atomically, file by file) the library wheels, the substitutes' copies, then the
    consumer wheels; return the paths written."""
    written = []
    outdir.mkdir(parents=True, exist_ok=True)
    for out in outputs.consumers:
        target = (outdir / out.plan.wheel.filename).resolve()
        if target == Path(out.plan.wheel.path).resolve():
            raise DevendorError(f"{out.plan.wheel.path}: -o would overwrite the input; choose another "
                                "directory")
    for _, lp in outputs.libraries:
        written.append(write_library_wheel(lp, outdir))
    for sub in outputs.substitutes:
        src, dst = Path(sub.path), outdir / Path(sub.path).name
        if dst.exists() and dst.resolve() == src.resolve():
            continue
        fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=outdir)
        try:
            with open(fd, "wb") as f, open(src, "rb") as g:
                shutil.copyfileobj(g, f)
            publish(Path(tmp), dst)
        finally:
            Path(tmp).unlink(missing_ok=True)
        written.append(dst)
    for out in outputs.consumers:
        written.append(write_members(outdir / out.plan.wheel.filename, out.dist_info, out.members))
    return written
