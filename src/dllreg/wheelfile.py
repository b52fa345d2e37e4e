"""Safe wheel reading and atomic wheel writing (RECORD, hashes, member checks)."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from .errors import WheelError

#: Members larger than this are refused (a zip bomb guard): far above any real library.
MAX_MEMBER_SIZE = 2 << 30
_EPOCH = (1980, 1, 1, 0, 0, 0)


def record_hash(data: bytes | bytearray) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def check_member_name(name: str, origin: str) -> str:
    """Refuse names that could write outside the install target."""
    parts = name.split("/")
    bad = (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\0" in name
        or ":" in parts[0]
        or any(p in (".", "..") for p in parts)
    )
    if bad:
        raise WheelError(f"{origin}: unsafe member name {name!r} (absolute, '..' or drive path)")
    return name


def safe_members(zf: zipfile.ZipFile, origin: str) -> list[zipfile.ZipInfo]:
    """The members of a wheel after path, symlink, duplicate and size checks."""
    seen: dict[str, str] = {}
    members = []
    for info in zf.infolist():
        name = check_member_name(info.filename, origin)
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise WheelError(f"{origin}: member {name!r} is a symlink; wheels cannot carry links")
        if info.file_size > MAX_MEMBER_SIZE:
            raise WheelError(f"{origin}: member {name!r} is {info.file_size} bytes, over the limit")
        folded = name.rstrip("/").lower()
        if folded in seen:
            raise WheelError(
                f"{origin}: members {seen[folded]!r} and {name!r} collide "
                "(duplicate, or equal on case-insensitive file systems)"
            )
        seen[folded] = name
        members.append(info)
    return members


def open_wheel(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise WheelError(f"{path}: not a readable wheel ({exc})") from None


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, origin: str) -> bytes:
    with zf.open(info) as f:
        data = f.read(MAX_MEMBER_SIZE + 1)
    if len(data) != info.file_size:
        raise WheelError(f"{origin}: member {info.filename!r} does not match its declared size")
    return data


def _remove_stale_parts(directory: Path) -> None:
    """Delete temporary wheels left by writers that were killed: their pid is in the name and
    that process is gone. Parts of live writers (parallel runs) are left alone."""
    for part in directory.glob(".dllreg-*-*.whl.part"):
        pid = part.name.split("-")[1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            part.unlink(missing_ok=True)
        except OSError:  # alive but not ours (PermissionError), or a platform without kill(0)
            continue


class WheelWriter:
    """Writes a wheel to a temporary file next to ``path`` and renames it on success.

    On any exception the temporary file is removed, so no half-written wheel is ever
    visible. RECORD is generated from what was written.
    """

    def __init__(self, path: Path, dist_info: str, *, stage: Staging | None = None,
                 compression: int = zipfile.ZIP_DEFLATED) -> None:
        self.path = path
        self.dist_info = dist_info
        self._stage = stage
        self._compression = compression
        self._records: list[tuple[str, str, str]] = []
        self._names: set[str] = set()
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_parts(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".dllreg-{os.getpid()}-", suffix=".whl.part",
                                   dir=path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self._zip = zipfile.ZipFile(self._tmp, "w", compression=compression)

    def add(self, name: str, data: bytes | bytearray, *, executable: bool = False,
            date_time: tuple[int, int, int, int, int, int] = _EPOCH) -> None:
        check_member_name(name, str(self.path))
        if name.lower() in self._names:
            raise WheelError(f"{self.path.name}: {name!r} would be written twice")
        self._names.add(name.lower())
        info = zipfile.ZipInfo(name, date_time=date_time)
        info.external_attr = (0o100755 if executable else 0o100644) << 16
        info.compress_type = self._compression
        self._zip.writestr(info, data)
        self._records.append((name, record_hash(data), str(len(data))))

    def _write_record(self) -> None:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        record = f"{self.dist_info}/RECORD"
        for row in self._records:
            writer.writerow(row)
        writer.writerow((record, "", ""))
        info = zipfile.ZipInfo(record, date_time=_EPOCH)
        info.external_attr = 0o100644 << 16
        info.compress_type = self._compression
        self._zip.writestr(info, out.getvalue())

    def __enter__(self) -> WheelWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc_type is None:
                self._write_record()
            self._zip.close()
            if exc_type is None and self._stage is not None:
                self._stage.add(self._tmp, self.path)
                return
            if exc_type is None:
                publish(self._tmp, self.path)
        finally:
            if self._stage is None or exc_type is not None:
                self._tmp.unlink(missing_ok=True)


class Staging:
    """Finished files waiting under temporary names in their directories, published together by
    ``commit``; ``discard`` removes whatever was not published (call it in a ``finally``)."""

    def __init__(self) -> None:
        self._parts: list[tuple[Path, Path]] = []

    def add(self, tmp: Path, path: Path) -> None:
        self._parts.append((tmp, path))

    def copy(self, src: Path, dst: Path) -> None:
        """Stage a copy of ``src`` as ``dst``."""
        fd, tmp = tempfile.mkstemp(prefix=f".dllreg-{os.getpid()}-", suffix=".whl.part", dir=dst.parent)
        try:
            with open(fd, "wb") as f, open(src, "rb") as g:
                shutil.copyfileobj(g, f)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.add(Path(tmp), dst)

    def commit(self) -> None:
        while self._parts:
            tmp, path = self._parts.pop(0)
            publish(tmp, path)

    def discard(self) -> None:
        while self._parts:
            self._parts.pop()[0].unlink(missing_ok=True)


def publish(tmp: Path, path: Path) -> None:
    """Rename a finished temporary file into place with the user's usual permissions
    (mkstemp creates 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        publish(Path(tmp), path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def iter_files(root: Path) -> Iterator[Path]:
    """Regular files under ``root`` in a stable order (symlinks to files included)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath, name)
