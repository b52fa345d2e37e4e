"""``devendor``'s outputs: the plan (convert/plan.py) turned into wheel contents, then written.

``build_outputs`` decides the new members (the stubs through build/consumer.py, delvewheel's patch
removed). ``write_outputs`` streams: each member is read again from its input wheel, patched
(elfpatch/pepatch, ``set_soname``) and written, one at a time, so memory holds a member and not
a stack of wheels; every wheel goes to a temporary file, and all are renamed into place only
when every one was written (any refusal removes them all).
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import cast

from ..binary.elf import ELFError
from ..binary.macho import is_macho
from ..build.consumer import OutMember, consumer_changes, write_members
from ..errors import DllregError
from ..libwheel.package import LibraryPlan, Source, SourceFile, plan_library, write_library_wheel
from ..wheelfile import Staging
from .plan import DevendorPlan, NewLibrary, WheelPlan
from .read import DevendorError, InputWheel, LibraryWheel, refusal
from .threads import UNLIMITED, Budget, ordered_map

_PATCH = re.compile(r"[ \t]*# start delvewheel patch.*?# end delvewheel patch[^\n]*\n?", re.S)
_SIGNATURES = ("RECORD.jws", "RECORD.p7s")  # they sign the old RECORD


@dataclasses.dataclass(frozen=True)
class ConsumerOutput:
    """A thin wheel to write: its input's members minus the removed ones, the binaries patched
    as they are written, and ``changes`` (stubs, ``__init__.py``, METADATA, dllreg.json)."""

    plan: WheelPlan
    dist_info: str
    changes: tuple[tuple[str, bytes], ...]


@dataclasses.dataclass(frozen=True)
class Outputs:
    consumers: tuple[ConsumerOutput, ...]
    libraries: tuple[NewLibrary, ...]
    substitutes: tuple[LibraryWheel, ...]
    wheels: tuple[InputWheel, ...] = ()  # every input, to read members from


@dataclasses.dataclass(frozen=True)
class Written:
    """What write_outputs wrote: every path, and by whom."""

    paths: tuple[Path, ...]
    consumers: Mapping[str, Path]  # input wheel file name -> its thin wheel
    libraries: Mapping[str, Path]  # library name -> its wheel
    notes: Mapping[str, tuple[str, ...]]  # input wheel file name -> e.g. "signature removed from X"


def set_soname(data: bytes | bytearray, soname: str) -> bytes | bytearray:
    """*data* with its DT_SONAME overwritten in place by a name that is not longer, or pointed at
    a new string table (elfneeded.rename_needed) for a longer one. A bytearray is changed in
    place and returned (a longer name gives a new one); bytes are copied.

    Refused (ELFError) when other strings share the old name's bytes or no SONAME exists;
    references to the same string (verdef's base name) are renamed with it, as they should.
    """
    from ..binary.elfneeded import _parse, _string_end  # the patcher's own ELF model

    given, data = data, cast(bytes, data)  # the readers only index, slice, find and unpack

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
        from ..binary.elfneeded import renamed_buffer

        old = data[start:nul].decode("utf-8", "surrogateescape")
        renamed = renamed_buffer(data, {old: soname})
        return given if renamed is None else renamed if isinstance(given, bytearray) else bytes(renamed)
    if len(new) > nul - start or not new or b"\0" in new or shared or not img.exact:
        raise ELFError(f"the SONAME cannot become {soname!r} in place (longer, or its bytes are shared)")
    out = given if isinstance(given, bytearray) else bytearray(data)
    out[start:nul] = new.ljust(nul - start, b"\0")
    return out if isinstance(given, bytearray) else bytes(out)


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
                  drop: Callable[[str], bool] | None) -> tuple[bytes | bytearray, str | None]:
    """(patched bytes, note) of one binary; the note says a signature was removed. An ELF
    file is patched in one new buffer (or comes back as ``data``): a large library is held
    twice at most while it is written."""
    if data[:4] == b"\x7fELF":
        from ..binary.elfpatch import replaced_buffer

        out = replaced_buffer(data, renames, drop_rpath=drop)
        return (data if out is None else out), None
    if data[:2] == b"MZ":
        from ..binary.pepatch import rename_imports

        result = rename_imports(data, renames)
        return result.data, (f"{name}: its Authenticode signature was removed (the import table "
                             "changed)" if result.signature_removed else None)
    if is_macho(data):  # a broken code signature is reported per wheel (convert.macos)
        from .macos import patch_consumer

        return patch_consumer(data, renames, drop), None
    raise DevendorError(f"{name}: only ELF, PE and Mach-O binaries can be rewritten")


class _Members(Mapping[str, bytes]):
    """An input wheel's members by name, each read when asked for (consumer_changes reads a few
    small ones: ``__init__.py``, METADATA), with ``overlay`` taking precedence."""

    def __init__(self, wheel: InputWheel, names: Sequence[str], overlay: Mapping[str, bytes]) -> None:
        self._wheel, self._names, self._overlay = wheel, list(names), overlay
        self._known = set(self._names)

    def __getitem__(self, name: str) -> bytes:
        if name in self._overlay:
            return self._overlay[name]
        if name not in self._known:
            raise KeyError(name)
        return self._wheel.read([name])[name]

    def __contains__(self, name: object) -> bool:
        return name in self._overlay or name in self._known

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _consumer(wp: WheelPlan, choices: Mapping[str, str]) -> ConsumerOutput:
    """The thin wheel's new and replaced members; the binaries are patched when written."""
    origin = wp.wheel.filename
    overlay: dict[str, bytes] = {}
    if wp.patch_file:  # delvewheel's add_dll_directory points at the removed .libs directory
        text = wp.wheel.read([wp.patch_file])[wp.patch_file].decode("utf-8")
        overlay[wp.patch_file] = _PATCH.sub("", text, count=1).encode("utf-8")
    # What stays in a libs dir is a vendored library, not an extension module needing a stub.
    removed = set(wp.removed)
    visible = [m.name for m in wp.wheel.members if m.name not in removed
               and not any(_installed(m.name).startswith(x + "/") for x in wp.libs_dirs)]
    extension = {m.name: m.extension for m in wp.wheel.members}
    try:
        dist_info, changes = consumer_changes(origin, _Members(wp.wheel, visible, overlay), wp.requires,
                                              wp.requires, choices=choices,
                                              is_extension=extension.__getitem__)
    except DllregError as exc:
        raise DevendorError(str(exc)) from None
    return ConsumerOutput(wp, dist_info, tuple({**overlay, **changes}.items()))


def _write_consumer(out: ConsumerOutput, outdir: Path, stage: Staging, compression: int,
                    budget: Budget = UNLIMITED) -> tuple[Path, list[str]]:
    """Write one thin wheel (staged), reading and patching one member at a time; its notes."""
    wp = out.plan
    origin = wp.wheel.filename
    renames = dict(wp.renames)
    changes = dict(out.changes)
    skip = set(wp.removed) | {f"{out.dist_info}/{s}" for s in _SIGNATURES}
    patch = set(wp.binaries)
    notes: list[str] = []
    broken = []
    from .macos import resign_note, signature_broken

    def stream() -> Iterator[OutMember]:
        with wp.wheel.reader() as read:
            for m in wp.wheel.members:
                if m.name in skip:
                    continue
                if m.name in changes:
                    yield m.name, changes.pop(m.name), m.executable, m.date_time
                    continue
                with budget.hold(m.size):  # until it is written: the generator resumes after
                    raw = read(m)
                    data: bytes | bytearray = raw
                    if m.name in patch:
                        try:
                            new, note = _patch_binary(m.name, raw, renames, _drop_into(m.name, wp.emptied))
                        except (ELFError, ValueError) as exc:  # the patchers raise ValueErrors
                            raise DevendorError(f"{origin}: {m.name}: cannot rewrite it: {exc}") from None
                        notes.extend([note] if note else [])
                        broken.extend([m.name] if signature_broken(raw, new) else [])
                        data = new
                    del raw  # only what is written stays while it is written
                    yield m.name, data, m.executable, m.date_time
                    del data
        yield from ((n, d, False, None) for n, d in changes.items())

    path = write_members(outdir / origin, out.dist_info, stream(), stage=stage, compression=compression)
    resign = resign_note(broken)
    return path, notes + ([resign] if resign else [])


def _library(nl: NewLibrary, data: dict[str, bytes]) -> tuple[LibraryPlan, str | None]:
    """The library wheel's plan, and the note that its DLL lost a signature (``data``, the
    input members, is emptied on the way: each goes once it is patched)."""
    where = f"{nl.wheel}: {nl.member}"
    try:
        files, notes = [], []
        for member, runtime in ((nl.member, nl.runtime), *((m, r) for m, r, _ in nl.group)):
            where = f"{nl.wheel}: {member}"
            patched, note = _patched_library(nl, member, runtime, data)
            files.append(SourceFile(f"lib/{posixpath.basename(runtime)}", patched))
            notes += [note] if note else []
        src = Source(f"devendored from {nl.wheel}: {nl.member} sha256={nl.sha256}", tuple(files), nl.platform)
        return plan_library(src, nl.name, nl.version, requires=[str(r) for r in nl.requires],
                            license=nl.license, cycles=bool(nl.group)), "; ".join(notes) or None
    except (ELFError, ValueError, DllregError) as exc:
        raise DevendorError(f"{where}: cannot package it as {nl.name} {nl.version}: {exc}") from None


def _patched_library(nl: NewLibrary, member: str, runtime: str, files: dict[str, bytes]
                     ) -> tuple[bytes, str | None]:
    """The member's bytes (taken out of ``files``) patched to be the library wheel's file."""
    source = files.pop(member)
    if source[:4] == b"\x7fELF":
        from ..binary.elfpatch import replaced_buffer

        # Every rpath goes (the stub preloads the library's Requires), except, in a group of
        # files that need each other, $ORIGIN: each finds the others in the group's own lib/.
        drop = (lambda entry: entry not in ("$ORIGIN", "${ORIGIN}")) if nl.group else (lambda entry: True)
        buf = replaced_buffer(source, dict(nl.renames), drop_rpath=drop) or bytearray(source)
        del source  # a large library is held twice at most: the input goes before the output is made
        return bytes(set_soname(buf, runtime)), None
    if is_macho(source):
        from .macos import library_note, patch_library, signature_broken

        patched = patch_library(source, runtime, dict(nl.renames))
        broken = signature_broken(source, patched)
        return patched, library_note(nl.name, nl.version, posixpath.basename(member)) if broken else None
    out, note = _patch_binary(member, source, dict(nl.renames), None)
    return bytes(out), note


def build_outputs(plan: DevendorPlan, refused: list[str] | None = None) -> Outputs:
    """What to write: the thin wheels' new members (stubs, metadata) and the library wheels to
    package. The bytes are read, patched and written by write_outputs, one member at a time.
    With ``refused``, a wheel that cannot be converted is recorded there and left out."""
    # A substitute that is a PyPI wheel as published (scipy-openblas64) is required by its name.
    choices = {s.name: s.dist for s in plan.substitutes if s.dist}
    consumers = []
    for wp in plan.wheels:
        if not wp.changed:
            continue
        try:
            consumers.append(_consumer(wp, choices))
        except DevendorError as exc:
            if refused is None:
                raise
            refused.append(str(exc))
    return Outputs(tuple(consumers), plan.libraries, plan.substitutes, tuple(wp.wheel for wp in plan.wheels))


def write_outputs(outputs: Outputs, outdir: Path, *, extra: Sequence[LibraryPlan] = (),
                  refused: Sequence[str] = (), inputs: int = 0,
                  compression: int = zipfile.ZIP_DEFLATED) -> Written:
    """Write the library wheels (``extra`` ones first: fetched from recipes), the substitutes'
    copies, then the consumer wheels, each to a temporary file in ``outdir``; only when every
    one is written are they renamed into place. Any refusal on the way (those in ``refused``,
    from earlier steps, and this step's own) removes them all and raises one error naming every
    refused wheel of the ``inputs``."""
    outdir.mkdir(parents=True, exist_ok=True)
    for out in outputs.consumers:
        target = (outdir / out.plan.wheel.filename).resolve()
        if target == Path(out.plan.wheel.path).resolve():
            raise DevendorError(f"{out.plan.wheel.path}: -o would overwrite the input; choose another "
                                "directory")
    wheels = {w.filename: w for w in outputs.wheels}
    errors = list(refused)
    paths: list[Path] = []
    libraries: dict[str, Path] = {}
    notes: dict[str, list[str]] = {}
    stage = Staging()
    budget = Budget()

    sizes = {(w.filename, m.name): m.size for w in outputs.wheels for m in w.members}

    def size(nl: NewLibrary) -> int:
        return sum(sizes.get((nl.wheel, n), 0) for n in [nl.member, *(m for m, _, _ in nl.group)])

    def cost(task: LibraryPlan | NewLibrary | ConsumerOutput) -> int:
        """Bytes to write: the larger first, so that no thread is left with a large one at the end."""
        if isinstance(task, LibraryPlan):
            return sum(len(d) for _, d in task.files)
        return size(task) if isinstance(task, NewLibrary) else task.plan.wheel.stamp[1]

    def library(nl: NewLibrary) -> tuple[Path, str | None]:
        wheel = wheels[nl.wheel]
        names = [nl.member, *(m for m, _, _ in nl.group)]
        with budget.hold(size(nl)):
            lp, note = _library(nl, wheel.read(names))
            return write_library_wheel(lp, outdir, stage=stage, compression=compression), note

    def job(task: LibraryPlan | NewLibrary | ConsumerOutput) -> tuple[Path, Sequence[str | None]] | str:
        try:
            if isinstance(task, LibraryPlan):
                return write_library_wheel(task, outdir, stage=stage, compression=compression), ()
            if isinstance(task, NewLibrary):
                path, note = library(task)
                return path, (note,)
            return _write_consumer(task, outdir, stage, compression, budget)
        except DevendorError as exc:
            return str(exc)

    try:
        # every wheel is written on its own thread (convert/threads.py); results in this order
        tasks: list[LibraryPlan | NewLibrary | ConsumerOutput] = [*extra, *outputs.libraries,
                                                                 *outputs.consumers]
        results = ordered_map(job, tasks, cost=cost)
        n_extra, n_libs = len(extra), len(outputs.libraries)
        for done in results[:n_extra]:
            if isinstance(done, str):  # pragma: no cover - a fetched plan raises no DevendorError
                errors.append(done)
            else:
                paths.append(done[0])
        for nl, done in zip(outputs.libraries, results[n_extra:n_extra + n_libs]):
            if isinstance(done, str):
                errors.append(done)
                continue
            libraries[nl.name] = done[0]
            paths.append(done[0])
            # a note goes with the wheel the library came from
            notes.setdefault(nl.wheel, []).extend(n for n in done[1] if n)
        for sub in outputs.substitutes:
            src, dst = Path(sub.path), outdir / Path(sub.path).name
            if not (dst.exists() and dst.resolve() == src.resolve()):
                stage.copy(src, dst)
                paths.append(dst)
        consumers = {}
        for out, done in zip(outputs.consumers, results[n_extra + n_libs:]):
            if isinstance(done, str):
                errors.append(done)
                continue
            consumers[out.plan.wheel.filename] = done[0]
            mine = [n for n in done[1] if n]
            notes[out.plan.wheel.filename] = mine + notes.get(out.plan.wheel.filename, [])
            paths.append(done[0])
        if errors:
            raise refusal(errors, inputs or len(outputs.wheels))
        stage.commit()
    finally:
        stage.discard()
    return Written(tuple(dict.fromkeys(paths)), consumers, libraries,
                   {k: tuple(v) for k, v in notes.items()})
