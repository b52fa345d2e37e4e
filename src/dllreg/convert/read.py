"""The read edge of ``devendor``: input wheels checked member by member before anything is decided.

On top of ``wheelfile.safe_members`` (traversal, absolute names, symlinks, duplicates and
case-insensitive collisions, oversized members) this refuses zip bombs (declared sizes over a
budget, ratios deflate cannot produce, entries that overlap in the archive, compression other
than stored/deflate) and members whose bytes do not match RECORD. Every problem of one wheel is
collected and raised once, naming the wheel and each member (docs/devendor.md).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import dataclasses
import hashlib
import io
import os
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from ..build.consumer import extension_name
from ..errors import DllregError
from ..libwheel.manifest import MANIFEST_NAME, Manifest
from ..libwheel.package import LibraryPlan, plan_library
from ..names import REGISTRY_DIR, library_of_dist
from ..recipes.schema import Recipe
from ..recipes.source import check_abi, recipe_source
from ..wheelfile import open_wheel, safe_members
from .facts import BinaryFacts, binary_facts, is_binary
from .spool import Spool, opened
from .threads import UNLIMITED, Budget, ordered_map

#: Uncompressed bytes one input wheel may hold: far above numpy + scipy (~150 MB), far below
#: what would exhaust memory here.
MAX_WHEEL_BYTES = 3 << 30
#: Deflate cannot compress better than ~1032:1; a larger declared ratio is a forged header.
MAX_RATIO = 1100
_HASHES = ("sha256", "sha384", "sha512")
_SIGNATURES = ("RECORD.jws", "RECORD.p7s")
_MAX_LISTED = 8  # problems shown per wheel; the count says how many more


class DevendorError(DllregError):
    """``devendor`` cannot convert an input wheel, or an input is unsafe."""


@dataclasses.dataclass(frozen=True)
class WheelMember:
    """A checked member of an input wheel; its bytes stay in the archive (``InputWheel.read``)."""

    name: str
    size: int = 0
    executable: bool = False
    date_time: tuple[int, int, int, int, int, int] = (1980, 1, 1, 0, 0, 0)
    head: bytes = b""  # its first bytes: what kind of file it is, without reading it again
    crc: int = 0  # CRC-32 of the checked bytes
    extension: bool = False  # named like an extension module, and one (consumer.is_extension_module)
    sha256: str = ""  # hex digest of the checked bytes
    facts: BinaryFacts | None = None  # a binary's facts, read with its bytes (convert/facts.py)
    spooled: int = -1  # where its checked bytes start in the wheel's spool file; -1: not spooled


@dataclasses.dataclass(frozen=True)
class InputWheel:
    """An input wheel after every check. Only the member list is held: the bytes are read again,
    a few members at a time, when they are needed: a binary's from the spool file it was copied
    to as it was checked (when read with a spool), the others' from the archive, which must not
    have changed."""

    path: str  # as the user gave it, for messages
    filename: str
    members: tuple[WheelMember, ...]
    stamp: tuple[int, int, int] = (0, 0, 0)  # (inode, size, mtime_ns) of the checked file
    spool: str = ""  # the file holding its binaries' checked bytes, uncompressed ("": none)

    def read(self, names: Iterable[str] | None = None) -> dict[str, bytes]:
        """The bytes of the named members (every member without ``names``), in archive order."""
        wanted = None if names is None else set(names)
        out: dict[str, bytes] = {}
        with self.reader() as read:
            for m in self.members:
                if wanted is None or m.name in wanted:
                    out[m.name] = read(m)
        return out

    def data(self) -> dict[str, bytes]:
        return self.read()

    @contextlib.contextmanager
    def reader(self) -> Iterator[Callable[[WheelMember], bytes]]:
        """A function reading one member's bytes from the archive opened once."""
        changed = f"{self.path}: the wheel changed since it was checked; nothing was written, run again"
        try:
            if _stamp(os.stat(self.path)) != self.stamp:
                raise DevendorError(changed)
            with zipfile.ZipFile(self.path) as zf, opened(self.spool) as spool:
                def read(m: WheelMember) -> bytes:
                    if m.spooled >= 0 and spool is not None:
                        spool.seek(m.spooled)
                        data = spool.read(m.size)
                        if len(data) != m.size:
                            raise DevendorError(f"{changed} (its spool file {self.spool} was cut short)")
                        return data
                    info = zf.getinfo(m.name)
                    if (info.CRC, info.file_size) != (m.crc, m.size):
                        raise DevendorError(changed)
                    return _member_bytes(zf, info, self.path)

                yield read
        except (OSError, KeyError, zipfile.BadZipFile) as exc:
            raise DevendorError(f"{changed} ({exc})") from None


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _member_bytes(zf: zipfile.ZipFile, info: zipfile.ZipInfo, origin: str) -> bytes:
    try:
        with zf.open(info) as f:
            data = f.read(info.file_size + 1)  # a lying header cannot make us read more
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise DevendorError(f"{origin}: member {info.filename!r} is corrupt ({exc})") from None
    if len(data) != info.file_size:
        raise DevendorError(f"{origin}: member {info.filename!r} does not match its declared size")
    return data


@dataclasses.dataclass(frozen=True)
class LibraryWheel:
    """A ``dllreg-lib-NAME`` wheel that can stand in for vendored copies."""

    path: str
    name: str
    version: str
    platform: str
    manifest: Manifest
    arch: str
    exports: frozenset[str]  # of every library file together
    lib_bytes: int = 0  # size of its library files
    dist: str = ""  # a PyPI wheel provider's distribution (scipy-openblas64); "" for dllreg-lib


def _raise(origin: str, problems: Sequence[str]) -> None:
    if problems:
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        listed = "\n  ".join(problems[:_MAX_LISTED])
        raise DevendorError(f"{origin}: refused, nothing was written:\n  {listed}{more}")


def archive_problems(infos: Sequence[zipfile.ZipInfo], max_bytes: int = MAX_WHEEL_BYTES) -> list[str]:
    """Zip-bomb checks over the central directory alone (nothing is decompressed)."""
    problems = []
    total = sum(i.file_size for i in infos)
    if total > max_bytes:
        problems.append(f"members declare {total} bytes uncompressed, over the {max_bytes}-byte limit "
                        "(a zip bomb?)")
    for i in infos:
        if i.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            problems.append(f"member {i.filename!r}: compression method {i.compress_type}; wheels are "
                            "stored or deflated")
        elif i.file_size > MAX_RATIO * max(i.compress_size, 1) and i.file_size > 1 << 20:
            problems.append(f"member {i.filename!r}: {i.file_size} bytes from {i.compress_size} "
                            "compressed, a ratio deflate cannot produce (a zip bomb?)")
    ordered = sorted(infos, key=lambda i: i.header_offset)
    for a, b in zip(ordered, ordered[1:]):
        if a.header_offset + a.compress_size > b.header_offset:  # shared data: an overlap bomb
            problems.append(f"members {a.filename!r} and {b.filename!r} overlap in the archive")
    return problems


def record_rows(text: bytes, record: str) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """RECORD's rows (path -> (hash, size)) and the problems of its own syntax."""
    try:
        rows = list(csv.reader(io.StringIO(text.decode("utf-8"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        return {}, [f"{record} is unreadable ({exc})"]
    problems, listed = [], {}
    for row in rows:
        if not row:
            continue
        if len(row) != 3:
            problems.append(f"{record}: row {row!r} does not have 3 fields")
            continue
        listed[row[0]] = (row[1], row[2])
    return listed, problems


def member_problem(name: str, data: bytes, listed: dict[str, tuple[str, str]],
                   sha256: bytes | None = None) -> str | None:
    """Why one member's bytes disagree with its RECORD row, if they do (``sha256``: the bytes'
    digest when the caller has it)."""
    if name not in listed:
        return f"member {name!r} is not listed in RECORD"
    digest, size = listed[name]
    algo, _, value = digest.partition("=")
    if algo not in _HASHES:
        return f"member {name!r}: RECORD hash {digest!r} is not sha256/384/512"
    raw = sha256 if algo == "sha256" and sha256 is not None else hashlib.new(algo, data).digest()
    want = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    if value != want:
        return f"member {name!r} does not match its RECORD hash (altered after signing?)"
    if size and size != str(len(data)):
        return f"member {name!r} is {len(data)} bytes, RECORD says {size}"
    return None


def _invented(listed: dict[str, tuple[str, str]], names: set[str], skip: set[str]) -> list[str]:
    return [f"RECORD lists {name!r}, which is not in the wheel" for name in listed
            if name not in names and name not in skip and not name.endswith("/")]


def dist_info_of(filename: str, names: Sequence[str]) -> str:
    dirs = sorted({n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")})
    if len(dirs) != 1:
        raise DevendorError(f"{filename}: expected one .dist-info directory, found {dirs or 'none'}")
    return dirs[0]


def read_input_wheel(path: Path, max_bytes: int = MAX_WHEEL_BYTES, *,
                     budget: Budget = UNLIMITED, spool: Path | None = None) -> InputWheel:
    """Every file member of a wheel, after the archive, name and RECORD checks. The members are
    read one at a time (each checked against RECORD, parsed if a binary, then let go): memory
    holds one member, whatever the wheel's size (``budget``: shared with other threads).

    With ``spool`` (a private directory the caller removes), each binary's checked bytes are
    also copied to a file there, so that writing reads them back instead of inflating them
    again: the bytes written are the bytes checked. Without room there, it reads as without."""
    origin = str(path)
    if not path.is_file():
        raise DevendorError(f"{origin}: no such wheel")
    try:
        parse_wheel_filename(path.name)
    except InvalidWheelFilename as exc:
        raise DevendorError(f"{origin}: {exc}") from None
    try:
        with open_wheel(path) as zf:
            stamp = _stamp(os.fstat(zf.fp.fileno())) if zf.fp is not None else (0, 0, 0)
            infos = [i for i in safe_members(zf, origin) if not i.is_dir()]
            _raise(origin, archive_problems(infos, max_bytes))
            dist_info = dist_info_of(origin, [i.filename for i in infos])
            record = f"{dist_info}/RECORD"
            by_name = {i.filename: i for i in infos}
            if record not in by_name:
                _raise(origin, [f"{record} is missing"])
            listed, problems = record_rows(_member_bytes(zf, by_name[record], origin), record)
            skip = {record, *(f"{dist_info}/{s}" for s in _SIGNATURES)}
            members = []
            with Spool(spool) as out:
                for i in infos:
                    with budget.hold(i.file_size):
                        members.append(_checked_member(zf, i, origin, listed, skip, problems, out))
                spooled = out.path
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
        raise DevendorError(f"{origin}: corrupt wheel ({exc})") from None
    except DevendorError:
        raise
    except DllregError as exc:
        raise DevendorError(str(exc)) from None
    _raise(origin, problems + _invented(listed, set(by_name), skip))
    return InputWheel(origin, path.name, tuple(members), stamp, spooled)


def _checked_member(zf: zipfile.ZipFile, i: zipfile.ZipInfo, origin: str, listed: dict[str, tuple[str, str]],
                    skip: set[str], problems: list[str], spool: Spool) -> WheelMember:
    """One member read, checked against RECORD (a problem goes to ``problems``) and, if a
    binary, parsed (and spooled) while its bytes are in hand."""
    data = _member_bytes(zf, i, origin)
    digest = hashlib.sha256(data).digest()
    problem = None if i.filename in skip else member_problem(i.filename, data, listed, digest)
    problems += [problem] if problem else []
    # a binary is parsed here, once, while its bytes are in hand (convert/facts.py)
    binary = is_binary(i.filename, data[:8])
    facts = binary_facts(i.filename, data) if binary else None
    ext = bool(extension_name(i.filename)) and (facts is None or facts.module_init)
    return WheelMember(i.filename, i.file_size, bool((i.external_attr >> 16) & 0o111), i.date_time,
                       data[:8], i.CRC, ext, digest.hex(), facts, spool.add(data) if binary else -1)


def read_inputs(paths: Sequence[Path], refused: list[str], spool: Path | None = None) -> list[InputWheel]:
    """The wheels that pass read_input_wheel's checks (``spool``: as there); the others' errors
    go to ``refused``, so that one error can name every refused input (``refusal``). Wheels are
    read on every core (convert/threads.py), largest first; the results keep the order of ``paths``."""
    budget = Budget()

    def one(p: Path) -> InputWheel | str:
        try:
            return read_input_wheel(p, budget=budget, spool=spool)
        except DevendorError as exc:
            return str(exc)

    out = []
    for got in ordered_map(one, paths, cost=_size):
        if isinstance(got, str):
            refused.append(got)
        else:
            out.append(got)
    return out


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


def refusal(refused: Sequence[str], total: int) -> DevendorError:
    """One error naming every refused input wheel and each of its problems."""
    if len(refused) == 1:
        return DevendorError(refused[0])
    return DevendorError(f"{len(refused)} of {total} input wheel(s) refused, nothing was written:\n"
                         + "\n".join(refused))


def _library_wheel(path: str, manifest: Manifest, facts: Callable[[str], BinaryFacts | None]) -> LibraryWheel:
    """The facts of a library wheel from its manifest and the facts of its library files (by
    manifest path; None for a file not in the wheel)."""
    exports: set[str] = set()
    arch, size = "", 0
    for lib in manifest.libraries:
        f = facts(lib.path)
        if f is None:
            raise DevendorError(f"{path}: the manifest lists {lib.path}, which is not in the wheel")
        if f.binary is None:
            raise DevendorError(f"{path}: {f.error}")
        size += f.binary.size
        exports |= f.exported  # Mach-O: dllreg does not read the export trie
        arch = f.binary.arch
    return LibraryWheel(path, manifest.name, manifest.version, manifest.platform, manifest, arch,
                        frozenset(exports), size)


def library_wheel_of_plan(plan: LibraryPlan, path: Path) -> LibraryWheel:
    """A library wheel that is planned (fetched with --fetch) but not written yet."""
    files = dict(plan.files)
    return _library_wheel(str(path), plan.manifest,
                          lambda p: binary_facts(p, files[p]) if p in files else None)


def read_library_wheel(path: Path) -> LibraryWheel:
    """A dllreg-lib wheel's manifest and the symbols its libraries export; or those of a PyPI
    wheel a recipe names as provider (``[pypi.FAMILY]``: scipy-openblas64 as published). Its
    binaries are read once, by read_input_wheel."""
    from ..recipes.wheelprovider import manifest_of_wheel, provider_of_wheel

    wheel = read_input_wheel(path)
    members = {m.name: m for m in wheel.members}
    found = provider_of_wheel(path.name)
    if found is not None:
        try:
            manifest = manifest_of_wheel(found, {n: m.sha256 for n, m in members.items()}, str(path))
        except DllregError as exc:
            raise DevendorError(str(exc)) from None
        lw = _library_wheel(str(path), manifest, lambda p: members[p].facts if p in members else None)
        return dataclasses.replace(lw, dist=found[1].dist)
    root, manifest = _manifest(path, wheel)
    return _library_wheel(str(path), manifest,
                          lambda p: members[f"{root}/{p}"].facts if f"{root}/{p}" in members else None)


def _manifest(path: Path, wheel: InputWheel) -> tuple[str, Manifest]:
    """A dllreg-lib wheel's folder (``dllreg.libs/NAME``) and its manifest."""
    name = library_of_dist(str(parse_wheel_filename(path.name)[0]))
    if name is None:
        raise DevendorError(f"{path}: not a dllreg-lib-NAME library wheel")
    root = f"{REGISTRY_DIR}/{name}"
    text = wheel.read([f"{root}/{MANIFEST_NAME}"]).get(f"{root}/{MANIFEST_NAME}")
    if text is None:
        raise DevendorError(f"{path}: no {root}/{MANIFEST_NAME}")
    return root, Manifest.from_text(text.decode("utf-8", "replace"), f"{path}: {MANIFEST_NAME}")


def library_wheel_contents(path: Path) -> tuple[Manifest, dict[str, bytes]]:
    """A dllreg-lib wheel's manifest and its files under ``dllreg.libs/NAME/`` (by manifest
    path), after read_input_wheel's checks."""
    wheel = read_input_wheel(path)
    root, manifest = _manifest(path, wheel)
    data = wheel.read(m.name for m in wheel.members if m.name.startswith(root + "/"))
    return manifest, {n[len(root) + 1:]: d for n, d in data.items()}


def planned_library(recipe: Recipe, wheel: Path, outdir: Path) -> tuple[LibraryPlan, LibraryWheel]:
    """The recipe's library made from its downloaded source ``wheel`` (ABI checked), and the
    library wheel it will be once written to ``outdir``: devendor plans with it first."""
    source, version = recipe_source(recipe, wheel)
    plan = plan_library(source, recipe.name, version, requires=[str(r) for r in recipe.requires],
                        license=recipe.license, pkgconfig_names=recipe.pkgconfig_names)
    check_abi(recipe, plan)
    return plan, library_wheel_of_plan(plan, outdir / plan.wheel_name)
