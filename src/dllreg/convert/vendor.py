"""``vendor``: a dllreg consumer wheel -> a self-contained wheel carrying its libraries.

For air-gapped installs and freezers: the registry libraries a consumer needs are copied
into ``<package>/dllreg.libs/NAME/`` next to its stub, in the registry's own layout. The stub
still prefers a compatible registry copy when one is installed and falls back to the
vendored one (``DLLREG_PREFER=vendored`` reverses that). ``plan_vendor`` decides over data;
reading wheels and installed libraries and writing the result are the edges.
docs/vendor.md is the reference.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence

from packaging.version import Version

from ..build.consumer import _import_path  # the sys.path location of a wheel member
from ..env.registry import CONSUMER_RECORD
from ..errors import DllregError
from ..libwheel.manifest import MANIFEST_NAME, Manifest
from ..libwheel.platforms import _tag_os_arch
from ..names import REGISTRY_DIR, NativeRequirement, library_of_dist
from ..stub import STUB_FILE, render_stub
from .read import dist_info_of


class VendorError(DllregError):
    """``vendor`` cannot make the wheel self-contained; nothing was written."""


@dataclasses.dataclass(frozen=True)
class LibraryCopy:
    """A library that can be vendored: its manifest and its files (by manifest path)."""

    manifest: Manifest
    files: tuple[tuple[str, bytes], ...]
    origin: str  # a wheel path or an installed directory, for the report


@dataclasses.dataclass(frozen=True)
class VendorPlan:
    members: tuple[tuple[str, bytes], ...]  # every member of the output, RECORD excluded
    filename: str
    dist_info: str
    vendored: tuple[LibraryCopy, ...]
    added_bytes: int


def _record(data: dict[str, bytes], dist_info: str, origin: str) -> dict[str, object]:
    raw = data.get(f"{dist_info}/{CONSUMER_RECORD}") or data.get(
        f"{dist_info}/extra_metadata/{CONSUMER_RECORD}")
    if raw is None:
        raise VendorError(f"{origin}: no {dist_info}/{CONSUMER_RECORD}, so it is not a dllreg "
                          "consumer; build it with dllreg.build or run python -m dllreg devendor")
    try:
        record = json.loads(raw)
        assert isinstance(record, dict) and isinstance(record["requires"], list)
        return record
    except (ValueError, KeyError, AssertionError) as exc:
        raise VendorError(f"{origin}: {CONSUMER_RECORD} is unreadable ({exc})") from None


def _compatible(lib_platform: str, wheel_platforms: Sequence[str]) -> bool:
    if wheel_platforms == ["any"]:
        return True
    def key(tag: str) -> tuple[str, frozenset[str]]:
        fmt, arches = _tag_os_arch(tag)
        return fmt, frozenset(arches)

    try:
        lib = {key(t) for t in lib_platform.split(".")}
        return any(key(t) in lib for t in wheel_platforms)
    except DllregError:
        return False


def choose(requires: Sequence[NativeRequirement], available: Sequence[LibraryCopy],
           wheel_platforms: Sequence[str], origin: str) -> list[LibraryCopy]:
    """The highest compatible version of each required library and of what those require,
    dependencies first."""
    chosen: dict[str, LibraryCopy] = {}
    order: list[LibraryCopy] = []

    def need(req: NativeRequirement, chain: tuple[str, ...]) -> None:
        if req.name in chosen:
            if not req.accepts(chosen[req.name].manifest.version):
                raise VendorError(f"{origin}: {' -> '.join(chain)} needs {req}, but "
                                  f"{req.name} {chosen[req.name].manifest.version} is chosen")
            return
        fits = [c for c in available if c.manifest.name == req.name
                and req.accepts(c.manifest.version) and _compatible(c.manifest.platform, wheel_platforms)]
        if not fits:
            seen = ", ".join(f"{c.manifest.version} ({c.manifest.platform})" for c in available
                             if c.manifest.name == req.name) or "none"
            raise VendorError(f"{origin}: no {req} for {'.'.join(wheel_platforms)} among the library "
                              f"wheels given and the installed libraries (found: {seen}); pass "
                              f"--find-libs DIR with a dllreg-lib-{req.name} wheel, or "
                              f'pip install "{req.dist_requirement}"')
        best = max(fits, key=lambda c: Version(c.manifest.version))
        chosen[req.name] = best
        for dep in best.manifest.requires:
            if dep.applies():
                need(dep, (*chain, dep.name))
        order.append(best)

    for req in requires:
        if req.applies():
            need(req, (req.name,))
    return order


def runtime_manifest(manifest: Manifest, source: str) -> Manifest:
    """The manifest of a copy that only runs (vendored, frozen): it lists only the shared
    libraries, not headers, import libraries or pkg-config files."""
    return dataclasses.replace(manifest, headers=(), import_libraries=(), pkgconfig=None,
                               source=source)


def _runtime_copy(lib: LibraryCopy) -> tuple[tuple[str, bytes], ...]:
    """What the stub needs: the shared libraries and a manifest that lists only them."""
    m = runtime_manifest(lib.manifest, f"vendored from {lib.manifest.source or lib.origin}")
    files = dict(lib.files)
    return (*((f.path, files[f.path]) for f in m.libraries), (MANIFEST_NAME, m.to_text().encode()))


def _wheel_file(metadata: str, platform: str) -> str:
    lines = [line for line in metadata.splitlines() if not line.startswith(("Tag:", "Root-Is-Purelib:"))]
    tags = [f"Tag: py3-none-{p}" for p in platform.split(".")]
    return "\n".join([*lines, "Root-Is-Purelib: false", *tags]) + "\n"


def _required_library(line: str) -> str | None:
    """The library of a METADATA ``Requires-Dist: dllreg-lib-NAME...`` line, else None."""
    key, _, value = line.partition(":")
    if key != "Requires-Dist":
        return None
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", value)
    return library_of_dist(m.group(1)) if m else None


def plan_vendor(filename: str, members: Sequence[tuple[str, bytes]],
                available: Sequence[LibraryCopy], origin: str) -> VendorPlan:
    from packaging.utils import parse_wheel_filename

    data = dict(members)
    dist_info = dist_info_of(origin, list(data))
    record = _record(data, dist_info, origin)
    requires = [NativeRequirement.parse(r) for r in record["requires"]]  # type: ignore[attr-defined]
    stubs = [s for s in record.get("stubs", []) if s in data]  # type: ignore[attr-defined]
    if not stubs:
        raise VendorError(f"{origin}: {CONSUMER_RECORD} names no stub that the wheel contains")
    _, _, build, tags = parse_wheel_filename(filename)
    platforms = sorted({t.platform for t in tags})
    copies = choose(requires, available, platforms, origin)
    if not copies:
        raise VendorError(f"{origin}: no native requirement applies here; nothing to vendor")
    out = dict(data)
    added = 0
    for stub in stubs:
        pkg_dir = stub[: -len(STUB_FILE)]
        dotted = (_import_path(stub) or stub)[: -len(STUB_FILE)].rstrip("/").replace("/", ".")
        for lib in copies:
            for rel, blob in _runtime_copy(lib):
                member = f"{pkg_dir}{REGISTRY_DIR}/{lib.manifest.name}/{rel}"
                if member in data:
                    raise VendorError(f"{origin}: {member} exists already; vendor the wheel dllreg "
                                      "built, not a vendored one")
                out[member] = blob
                added += len(blob)
        out[stub] = render_stub(dotted, [r for r in requires if r.applies()]).encode()
    names = {lib.manifest.name for lib in copies}
    meta = f"{dist_info}/METADATA"
    out[meta] = "\n".join(line for line in data[meta].decode("utf-8").split("\n")
                          if _required_library(line) not in names).encode()
    record = {**record, "vendored": {lib.manifest.name: lib.manifest.version for lib in copies}}
    for place in (f"{dist_info}/{CONSUMER_RECORD}", f"{dist_info}/extra_metadata/{CONSUMER_RECORD}"):
        if place in data:
            out[place] = (json.dumps(record, indent=2) + "\n").encode()
    if platforms == ["any"]:  # the binaries make it platform-specific
        plat = copies[0].manifest.platform
        out[f"{dist_info}/WHEEL"] = _wheel_file(data[f"{dist_info}/WHEEL"].decode(), plat).encode()
        build_tag = [f"{build[0]}{build[1]}"] if build else []
        pythons = ".".join(sorted({t.interpreter for t in tags}))
        filename = "-".join([*filename.split("-")[:2], *build_tag, pythons, "none", f"{plat}.whl"])
    out.pop(f"{dist_info}/RECORD", None)
    return VendorPlan(tuple(out.items()), filename, dist_info, tuple(copies), added)
