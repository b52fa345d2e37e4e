"""Library names and native requirements (PEP 503 names, PEP 440 versions)."""

from __future__ import annotations

import dataclasses
import re

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .errors import RequirementError

#: Distribution name prefix of every library wheel.
DIST_PREFIX = "dllreg-lib-"
#: Directory, in a site directory, holding one folder per installed library. The dot makes
#: it unimportable, like auditwheel's `<dist>.libs`.
REGISTRY_DIR = "dllreg.libs"

#: Who put a library in the registry: pip (a library wheel) or ``dllreg register`` on behalf of
#: conda or the operating system. External registrations live in ``NAME.PROVIDER`` folders.
WHEEL = "wheel"
EXTERNAL_PROVIDERS = ("conda", "system")
#: A PyPI wheel installed as it is that a recipe names as a provider (``[pypi.FAMILY]``,
#: docs/recipes.md); shown as ``pypi:<dist>``.
PYPI = "pypi"
#: Default preference among copies in one site directory (docs/providers.md): what the
#: environment manager or the user registered explicitly comes before a wheel's copy, so the
#: process shares the library with the environment's other packages; a PyPI provider's own
#: files come before a dllreg-lib copy, because other packages load those files too.
DEFAULT_PREFERENCE = ("conda", "system", PYPI, WHEEL)


def registry_folder(name: str, provider: str = WHEEL) -> str:
    """Folder name under ``dllreg.libs``: ``NAME`` (wheel) or ``NAME.PROVIDER`` (external).
    Normalized names contain no dot, so the two can never collide."""
    return name if provider == WHEEL else f"{name}.{provider}"


def preference(raw: str | None) -> tuple[str, ...]:
    """Provider order from ``DLLREG_PREFER`` (comma-separated): the listed providers first, in
    the given order, then the others in the default order. Unknown words are ignored here;
    ``dllreg check`` reports them."""
    listed = [w.strip().lower() for w in (raw or "").split(",")]
    if "registry" in listed:  # everything but a package's own vendored copy (issue: vendor)
        i = listed.index("registry")
        listed[i:i + 1] = list(DEFAULT_PREFERENCE)
    first = [w for w in dict.fromkeys(listed) if w in DEFAULT_PREFERENCE]
    return (*first, *(p for p in DEFAULT_PREFERENCE if p not in first))


_NAME_RE = re.compile(r"^([a-z0-9]|[a-z0-9][a-z0-9._-]*[a-z0-9])$", re.IGNORECASE)


def library_name(raw: str) -> str:
    """Validate a library name and return its PEP 503 normalized form."""
    if not isinstance(raw, str) or not _NAME_RE.match(raw):
        raise RequirementError(
            f"invalid library name {raw!r}: use letters, digits, '.', '-' or '_', "
            "starting and ending with a letter or digit (PEP 503)"
        )
    return canonicalize_name(raw)


def dist_name(name: str) -> str:
    """The distribution that ships library ``name``: ``dllreg-lib-NAME``."""
    return DIST_PREFIX + library_name(name)


def library_of_dist(dist: str) -> str | None:
    """The library name a distribution ships, or None if it is not a library wheel."""
    norm = canonicalize_name(dist)
    return norm[len(DIST_PREFIX):] if norm.startswith(DIST_PREFIX) else None


def parse_version(raw: str) -> Version:
    try:
        return Version(raw)
    except InvalidVersion:
        raise RequirementError(
            f"invalid version {raw!r}: use a PEP 440 version such as 0.3.28 or 1.2.3.post1"
        ) from None


@dataclasses.dataclass(frozen=True)
class NativeRequirement:
    """One entry of ``[tool.dllreg] requires``: a library, a version range, a marker."""

    name: str
    specifier: str = ""
    marker: str | None = None

    @classmethod
    def parse(cls, raw: str) -> NativeRequirement:
        if not isinstance(raw, str):
            raise RequirementError(f"requirement must be a string, not {type(raw).__name__}")
        try:
            req = Requirement(raw)
        except InvalidRequirement as exc:
            raise RequirementError(
                f"invalid requirement {raw!r}: {str(exc).splitlines()[0]}; "
                "write NAME SPECIFIER, e.g. 'openblas>=0.3'"
            ) from None
        if req.url:
            raise RequirementError(f"requirement {raw!r}: URLs are not allowed, name a library")
        if req.extras:
            raise RequirementError(f"requirement {raw!r}: libraries have no extras")
        name = library_name(req.name)
        return cls(name, str(req.specifier), str(req.marker) if req.marker else None)

    def __str__(self) -> str:
        text = self.name + self.specifier
        return f"{text}; {self.marker}" if self.marker else text

    @property
    def dist_requirement(self) -> str:
        """The pip requirement that installs this library, e.g. ``dllreg-lib-openblas>=0.3``."""
        text = DIST_PREFIX + self.name + self.specifier
        return f"{text}; {self.marker}" if self.marker else text

    def applies(self, environment: dict[str, str] | None = None) -> bool:
        """Whether the marker (if any) holds in ``environment`` (default: this interpreter)."""
        return self.marker is None or Marker(self.marker).evaluate(environment)

    def accepts(self, version: str) -> bool:
        """Whether an installed ``version`` satisfies the specifier (pre-releases allowed,
        as ``pip check`` does for installed distributions)."""
        try:
            return SpecifierSet(self.specifier).contains(version, prereleases=True)
        except InvalidSpecifier:  # pragma: no cover - parse() already validated it
            return False
