"""Writing registrations of external libraries: locked, atomic, and visible to pip.

Writers take an exclusive lock on ``<site>/dllreg.libs/.lock``; readers (the stub, ``list``)
never lock. Every change becomes visible in one rename: a MANIFEST appears complete or not at
all, a registration folder disappears whole. A writer killed half-way leaves only dot-named
temporary entries, which readers ignore and the next writer removes. docs/providers.md.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import DllregError
from ..libwheel.manifest import MANIFEST_NAME, Manifest
from ..names import EXTERNAL_PROVIDERS, REGISTRY_DIR, dist_name, registry_folder
from ..wheelfile import record_hash, write_atomic
from .register import RegisterError, Registration
from .registry import folder_provider, prefer, read_library

LOCK_FILE = ".lock"
#: INSTALLER of the dist-info a registration writes, so pip sees ``dllreg-lib-NAME`` installed.
INSTALLER = "dllreg"
_TRASH = ".removed-"


@contextlib.contextmanager
def locked(site: Path) -> Iterator[Path]:
    """Hold the registry lock of ``site``; yields ``<site>/dllreg.libs``."""
    root = site / REGISTRY_DIR
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RegisterError(f"{root}: cannot write the registry ({exc.strerror}); run as the "
                            "environment's owner, or choose another site directory with --site"
                            ) from None
    try:
        _lock(fd)
        _remove_leftovers(root)
        _heal_dist_infos(site, root)
        yield root
    finally:
        os.close(fd)  # closing releases the lock


def _lock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        while True:  # LK_LOCK gives up after ~10 s; a parallel install may take longer
            try:
                msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
                return
            except OSError:
                continue
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_EX)


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _retire(path: Path, root: Path) -> None:
    """Make ``path`` disappear in one rename, then delete it."""
    trash = root / f"{_TRASH}{os.getpid()}-{path.name}"
    os.replace(path, trash)
    _rmtree(trash)


def _remove_leftovers(root: Path) -> None:
    """What killed writers left: trash, temporary files, external folders without MANIFEST.
    Only called under the lock, so nothing here belongs to a live writer."""
    for entry in os.listdir(root):
        path = root / entry
        if entry.startswith(_TRASH):
            _rmtree(path)
            continue
        fp = folder_provider(entry)
        if fp is None or fp[1] not in EXTERNAL_PROVIDERS or not path.is_dir():
            continue  # wheel folders belong to pip
        if not (path / MANIFEST_NAME).exists():
            _rmtree(path)
            continue
        for tmp in path.rglob(".*.part"):
            tmp.unlink(missing_ok=True)


def _heal_dist_infos(site: Path, root: Path) -> None:
    """A writer killed between its registry change and the dist-info sync leaves them out of
    step (a dist-info for nothing, none for a registration, an old version): find such names
    with one listing of each directory and sync them. Only called under the lock."""
    ours: dict[str, str] = {}
    for entry in os.listdir(site):
        if entry.startswith("dllreg_lib_") and entry.endswith(".dist-info") and _is_ours(site / entry):
            name, _, version = entry[len("dllreg_lib_"):-len(".dist-info")].partition("-")
            ours[name.replace("_", "-")] = version
    registered = {fp[0] for e in os.listdir(root) if (fp := folder_provider(e)) is not None
                  and fp[1] in EXTERNAL_PROVIDERS and (root / e / MANIFEST_NAME).exists()}
    for name in sorted(set(ours) | registered):
        if name in ours and name in registered:
            best = _preferred_registration(root, name)
            if best is not None and best.version == ours[name]:
                continue
        if name not in ours and _dist_infos(site, name):
            continue  # pip's own dist-info: nothing of ours to write
        sync_dist_info(site, name)


def write_registration(site: Path, reg: Registration) -> Path:
    """Write (or replace) a registration; returns its folder."""
    m = reg.manifest
    with locked(site) as root:
        folder = root / registry_folder(m.name, m.provider)
        pcdir = folder / "lib" / "pkgconfig"
        try:
            pcdir.mkdir(parents=True, exist_ok=True)
            write_atomic(pcdir / f"{m.name}.pc", reg.pc_text)
            write_atomic(folder / MANIFEST_NAME, m.to_text())  # last: this makes it visible
        except OSError as exc:
            raise RegisterError(f"{folder}: cannot write ({exc})") from None
        sync_dist_info(site, m.name)
    return folder


def remove_registration(site: Path, name: str, provider: str, owner: str = "") -> str:
    """Remove a registration (readable or not); returns what was done, for the user."""
    with locked(site) as root:
        folder = root / registry_folder(name, provider)
        if not folder.exists():
            return f"{name} is not registered by {provider} in {site}; nothing to do"
        try:
            registered_by = read_library(folder).manifest.registered_by
        except DllregError:
            registered_by = ""  # a corrupt entry can always be removed
        if owner and registered_by and registered_by != owner:
            return (f"{name} in {site} was registered by {registered_by}, not {owner}; "
                    "left in place")
        _retire(folder, root)
        sync_dist_info(site, name)
    return f"unregistered {name} ({provider}) from {site}"


def _dist_infos(site: Path, name: str) -> list[Path]:
    stem = dist_name(name).replace("-", "_")
    return sorted(p for p in site.glob(f"{stem}-*.dist-info") if p.is_dir())


def _is_ours(dist_info: Path) -> bool:
    try:
        return (dist_info / "INSTALLER").read_text(encoding="utf-8").strip() == INSTALLER
    except OSError:
        return False


def _preferred_registration(root: Path, name: str) -> Manifest | None:
    """The readable external registration of ``name`` the stub would try first."""
    for provider in prefer():
        folder = root / registry_folder(name, provider)
        if provider in EXTERNAL_PROVIDERS and (folder / MANIFEST_NAME).exists():
            try:
                return read_library(folder).manifest
            except DllregError:
                continue
    return None


def sync_dist_info(site: Path, name: str) -> None:
    """Keep one ``dllreg_lib_NAME-V.dist-info`` for the preferred external registration, so
    pip counts the library as installed and does not fetch a second copy; none when pip
    already has its own (a library wheel, a conda package's dist-info) or nothing is
    registered. Its RECORD lists only the dist-info: ``pip uninstall`` never deletes what a
    provider registered (``unregister`` does)."""
    root = site / REGISTRY_DIR
    existing = _dist_infos(site, name)
    ours = [d for d in existing if _is_ours(d)]
    best = _preferred_registration(root, name)
    if best is None or len(ours) < len(existing):
        for d in ours:
            _retire(d, root)
        return
    stem = dist_name(name).replace("-", "_")
    target = site / f"{stem}-{best.version}.dist-info"
    files = {
        "METADATA": (f"Metadata-Version: 2.1\nName: {dist_name(name)}\nVersion: {best.version}\n"
                     f"Summary: {name} {best.version} provided by {best.provider}"
                     + (f" ({best.registered_by})" if best.registered_by else "")
                     + ", registered with dllreg\n"),
        "INSTALLER": INSTALLER + "\n",
    }
    if ours == [target] and all((target / f).is_file() and (target / f).read_text(
            encoding="utf-8") == text for f, text in files.items()):
        return
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TRASH}{os.getpid()}-new-", dir=root))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700
    record = []
    for fname, text in files.items():
        (tmp / fname).write_text(text, encoding="utf-8")
        data = text.encode()
        record.append(f"{target.name}/{fname},{record_hash(data)},{len(data)}")
    record.append(f"{target.name}/RECORD,,")
    (tmp / "RECORD").write_text("\n".join(record) + "\n", encoding="utf-8")
    for d in ours:
        _retire(d, root)
    os.replace(tmp, target)
