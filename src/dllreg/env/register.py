"""``register``: an external library (conda, the operating system) -> a registry manifest.

Pure decisions over data: the caller reads the files and writes the result
(env/write.py). The files stay where their provider put them; the manifest records them
by absolute path, with their runtime names and sha256, so the stub loads them like a
library wheel's. docs/providers.md is the reference.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import posixpath
import sysconfig
from collections.abc import Sequence

from ..errors import DllregError
from ..libwheel.manifest import Manifest
from ..libwheel.package import _SHARED, LibraryPlan, Source, SourceFile, plan_library
from ..libwheel.pkgconfig import render_pc
from ..names import EXTERNAL_PROVIDERS, library_name, parse_version


class RegisterError(DllregError):
    """``register``/``unregister`` refused its input; nothing was written."""


@dataclasses.dataclass(frozen=True)
class Registration:
    manifest: Manifest
    pc_text: str  # lib/pkgconfig/NAME.pc inside the registration folder


def interpreter_platform() -> str:
    """This interpreter's platform as a wheel tag: linux_x86_64, win_amd64, macosx_11_0_arm64."""
    return sysconfig.get_platform().replace("-", "_").replace(".", "_")


def normalized_path(path: str) -> str:
    """The form the manifest records: absolute, normalized, '/'-separated (C:/... on Windows)."""
    return os.path.normpath(os.path.abspath(path)).replace("\\", "/")


def _inside(path: str, prefix: str) -> bool:
    path, prefix = os.path.normcase(path), os.path.normcase(prefix)
    return path == prefix or path.startswith(prefix.rstrip("/\\") + os.sep)


def check_in_prefix(paths: Sequence[str], prefix: str) -> None:
    """conda registrations: every file, and what a symlink among them points to, lies in the
    prefix (a conda package cannot own files elsewhere)."""
    root = os.path.realpath(prefix)
    for p in paths:
        if not (_inside(os.path.abspath(p), os.path.abspath(prefix))
                and _inside(os.path.realpath(p), root)):
            raise RegisterError(f"{p}: outside the conda prefix {prefix}; a conda provider can "
                                "only register files its prefix holds")


def plan_registration(name: str, version: str, files: Sequence[tuple[str, bytes]], *,
                      provider: str, owner: str = "", requires: Sequence[str] = (),
                      include: str | None = None, platform: str | None = None) -> Registration:
    """The manifest of ``files`` (absolute path, contents) registered as ``name`` ``version``.

    Refuses what the stub could not load in this interpreter: not a shared library, no
    runtime name, another binary format or architecture, two files with one runtime name,
    and (when the registry has a recipe for ``name``) a library with another ABI.
    """
    name = library_name(name)
    parse_version(version)
    if provider not in EXTERNAL_PROVIDERS:
        raise RegisterError(f"--provider {provider!r}: use one of {', '.join(EXTERNAL_PROVIDERS)}")
    if not files:
        raise RegisterError("no --path given: name the shared library files to register")
    if any(c in owner for c in "\r\n\t"):
        raise RegisterError(f"--owner {owner!r}: must be one line")
    plat = platform or interpreter_platform()
    seen: dict[str, str] = {}
    for path, _ in files:
        base = posixpath.basename(path.replace("\\", "/"))
        if seen.setdefault(base, path) != path:
            raise RegisterError(f"{seen[base]} and {path}: two files named {base}")
    for path, _ in files:
        if not _SHARED.search(posixpath.basename(path.replace("\\", "/"))):
            raise RegisterError(f"{path}: not a shared library (expected a .so, .so.N, .dylib or "
                                ".dll file); name the library files only")
    dirs = {os.path.dirname(normalized_path(p)) for p, _ in files}
    source = Source(dirs.pop() if len(dirs) == 1 else "registered files",
                    tuple(SourceFile(posixpath.basename(p.replace("\\", "/")), data)
                          for p, data in files))
    try:
        plan = plan_library(source, name, version, requires=requires, platform=plat)
    except DllregError as exc:
        raise RegisterError(str(exc)) from None
    planned = {lib.sha256 for lib in plan.manifest.libraries}
    for path, data in files:
        if hashlib.sha256(data).hexdigest() not in planned:
            raise RegisterError(f"{path}: not a shared library (expected a .so, .so.N, .dylib or "
                                ".dll file); name the library files only")
    _check_recipe(name, plan)
    # plan_library stores each file under lib/<runtime name>; record where it really is.
    where = {hashlib.sha256(data).hexdigest(): normalized_path(path) for path, data in files}
    libraries = tuple(dataclasses.replace(lib, path=where[lib.sha256])
                      for lib in plan.manifest.libraries)
    manifest = dataclasses.replace(
        plan.manifest, libraries=libraries, headers=(), import_libraries=(),
        source=f"{provider} files registered by dllreg", provider=provider, registered_by=owner)
    return Registration(manifest, _pc(manifest, include))


def _check_recipe(name: str, plan: LibraryPlan) -> None:
    from ..recipes.schema import load_recipes
    from ..recipes.source import check_abi

    recipe = load_recipes().get(name)
    if recipe is not None:
        try:
            check_abi(recipe, plan)
        except DllregError as exc:
            raise RegisterError(f"{exc}; register it under another name, or pick the files "
                                f"that build {name}") from None


def _pc(manifest: Manifest, include: str | None) -> str:
    """A .pc file with absolute directories: builds link by runtime name, as with a wheel."""
    libdir = posixpath.dirname(manifest.libraries[-1].path)
    return render_pc(manifest, prefix=posixpath.dirname(libdir), libdir=libdir,
                     includedir=normalized_path(include) if include else None)
