"""The read edge of ``devendor``: input wheels read whole and checked before anything is decided.

On top of ``wheelfile.safe_members`` (traversal, absolute names, symlinks, duplicates and
case-insensitive collisions, oversized members) this refuses zip bombs (declared sizes over a
budget, ratios deflate cannot produce, entries that overlap in the archive, compression other
than stored/deflate) and members whose bytes do not match RECORD. Every problem of one wheel is
collected and raised once, naming the wheel and each member (docs/devendor.md).
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import hashlib
import io
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from .errors import DllregError
from .libwheel import LibraryPlan
from .manifest import MANIFEST_NAME, Manifest
from .names import REGISTRY_DIR, library_of_dist
from .wheelfile import open_wheel, safe_members

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
    name: str
    data: bytes = dataclasses.field(repr=False)
    executable: bool = False
    date_time: tuple[int, int, int, int, int, int] = (1980, 1, 1, 0, 0, 0)


@dataclasses.dataclass(frozen=True)
class InputWheel:
    path: str  # as the user gave it, for messages
    filename: str
    members: tuple[WheelMember, ...]

    def data(self) -> dict[str, bytes]:
        return {m.name: m.data for m in self.members}


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


def record_problems(members: dict[str, bytes], dist_info: str) -> list[str]:
    """Members whose sha256/size disagree with RECORD, or that RECORD omits or invents."""
    record = f"{dist_info}/RECORD"
    if record not in members:
        return [f"{record} is missing"]
    try:
        rows = list(csv.reader(io.StringIO(members[record].decode("utf-8"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        return [f"{record} is unreadable ({exc})"]
    problems, listed = [], {}
    for row in rows:
        if not row:
            continue
        if len(row) != 3:
            problems.append(f"{record}: row {row!r} does not have 3 fields")
            continue
        listed[row[0]] = (row[1], row[2])
    skip = {record, *(f"{dist_info}/{s}" for s in _SIGNATURES)}
    for name, data in members.items():
        if name in skip:
            continue
        if name not in listed:
            problems.append(f"member {name!r} is not listed in RECORD")
            continue
        digest, size = listed[name]
        algo, _, value = digest.partition("=")
        if algo not in _HASHES:
            problems.append(f"member {name!r}: RECORD hash {digest!r} is not sha256/384/512")
            continue
        want = base64.urlsafe_b64encode(hashlib.new(algo, data).digest()).rstrip(b"=").decode()
        if value != want:
            problems.append(f"member {name!r} does not match its RECORD hash (altered after signing?)")
        elif size and size != str(len(data)):
            problems.append(f"member {name!r} is {len(data)} bytes, RECORD says {size}")
    problems += [f"RECORD lists {name!r}, which is not in the wheel" for name in listed
                 if name not in members and name not in skip and not name.endswith("/")]
    return problems


def dist_info_of(filename: str, names: Sequence[str]) -> str:
    dirs = sorted({n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")})
    if len(dirs) != 1:
        raise DevendorError(f"{filename}: expected one .dist-info directory, found {dirs or 'none'}")
    return dirs[0]


def read_input_wheel(path: Path, max_bytes: int = MAX_WHEEL_BYTES) -> InputWheel:
    """Every file member of a wheel, after the archive, name and RECORD checks."""
    origin = str(path)
    if not path.is_file():
        raise DevendorError(f"{origin}: no such wheel")
    try:
        parse_wheel_filename(path.name)
    except InvalidWheelFilename as exc:
        raise DevendorError(f"{origin}: {exc}") from None
    try:
        with open_wheel(path) as zf:
            infos = [i for i in safe_members(zf, origin) if not i.is_dir()]
            _raise(origin, archive_problems(infos, max_bytes))
            members = []
            for i in infos:
                try:
                    with zf.open(i) as f:
                        data = f.read(i.file_size + 1)  # a lying header cannot make us read more
                except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                    raise DevendorError(f"{origin}: member {i.filename!r} is corrupt ({exc})") from None
                if len(data) != i.file_size:
                    raise DevendorError(f"{origin}: member {i.filename!r} does not match its "
                                        "declared size")
                members.append(WheelMember(i.filename, data, bool((i.external_attr >> 16) & 0o111),
                                           i.date_time))
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
        raise DevendorError(f"{origin}: corrupt wheel ({exc})") from None
    except DllregError as exc:
        raise DevendorError(str(exc)) from None
    by_name = {m.name: m.data for m in members}
    _raise(origin, record_problems(by_name, dist_info_of(origin, list(by_name))))
    return InputWheel(origin, path.name, tuple(members))


def _library_wheel(path: str, manifest: Manifest, files: dict[str, bytes]) -> LibraryWheel:
    """The facts of a library wheel from its manifest and its library files (by manifest path)."""
    from .binary.elf import read_elf
    from .binary.macho import is_macho, read_macho
    from .binary.pe import read_pe

    exports: set[str] = set()
    arch, size = "", 0
    for lib in manifest.libraries:
        blob = files.get(lib.path)
        if blob is None:
            raise DevendorError(f"{path}: the manifest lists {lib.path}, which is not in the wheel")
        size += len(blob)
        try:
            if blob[:2] == b"MZ":
                pe = read_pe(blob)
                exports |= pe.exports
                arch = pe.machine
            elif is_macho(blob):  # dllreg does not read the export trie
                arch = read_macho(blob).arches[0].arch
            else:
                elf = read_elf(blob)
                exports |= elf.exported
                arch = elf.machine
        except ValueError as exc:
            raise DevendorError(f"{path}: {lib.path}: {exc}") from None
    return LibraryWheel(path, manifest.name, manifest.version, manifest.platform, manifest, arch,
                        frozenset(exports), size)


def library_wheel_of_plan(plan: LibraryPlan, path: Path) -> LibraryWheel:
    """A library wheel that is planned (fetched with --fetch) but not written yet."""
    return _library_wheel(str(path), plan.manifest, dict(plan.files))


def read_library_wheel(path: Path) -> LibraryWheel:
    """A dllreg-lib wheel's manifest and the symbols its libraries export; or those of a PyPI
    wheel a recipe names as provider (``[pypi.FAMILY]``: scipy-openblas64 as published)."""
    from .wheelprovider import manifest_of_wheel, provider_of_wheel

    found = provider_of_wheel(path.name)
    if found is not None:
        data = read_input_wheel(path).data()
        try:
            manifest = manifest_of_wheel(found, data, str(path))
        except DllregError as exc:
            raise DevendorError(str(exc)) from None
        return dataclasses.replace(_library_wheel(str(path), manifest, data), dist=found[1].dist)
    manifest, files = library_wheel_contents(path)
    return _library_wheel(str(path), manifest, files)


def library_wheel_contents(path: Path) -> tuple[Manifest, dict[str, bytes]]:
    """A dllreg-lib wheel's manifest and its files under ``dllreg.libs/NAME/`` (by manifest
    path), after read_input_wheel's checks."""
    wheel = read_input_wheel(path)
    dist = parse_wheel_filename(path.name)[0]
    name = library_of_dist(str(dist))
    if name is None:
        raise DevendorError(f"{path}: not a dllreg-lib-NAME library wheel")
    data = wheel.data()
    root = f"{REGISTRY_DIR}/{name}"
    text = data.get(f"{root}/{MANIFEST_NAME}")
    if text is None:
        raise DevendorError(f"{path}: no {root}/{MANIFEST_NAME}")
    manifest = Manifest.from_text(text.decode("utf-8", "replace"), f"{path}: {MANIFEST_NAME}")
    files = {n[len(root) + 1:]: d for n, d in data.items() if n.startswith(root + "/")}
    return manifest, files
