"""Library recipes (``recipes/*.toml``): the schema, PEP 725 DepURLs, the book of them.

Reference: docs/recipes.md. Everything here decides over plain data, except ``load_recipes``
(reads files). Every error names the file and the key. The ``[external]`` mapping lives in
recipes/pep725.py, building a library from a recipe's source in recipes/source.py.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from ..errors import DllregError
from ..names import NativeRequirement, library_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FAMILIES = ("linux", "windows", "macos")
#: The [external] keys whose DepURLs become native requirements (docs/recipes.md).
MAPPED_KEYS = ("host-requires", "dependencies")
_TYPE_RE = re.compile(r"[A-Za-z][A-Za-z0-9.+-]*")
_SEGMENT_RE = re.compile(r"[A-Za-z0-9._~+-]+")
_VIRTUAL_NAMESPACES = ("interface", "compiler")


class RecipeError(DllregError):
    """A recipe, a DepURL or an ``[external]`` table is wrong, or a source does not match a recipe."""


@dataclasses.dataclass(frozen=True)
class DepURL:
    """``dep:TYPE/[NAMESPACE/]NAME[@VERSION]`` (PEP 725); ``version_spec`` is a PEP 440 specifier."""

    type: str
    namespace: str | None
    name: str
    version_spec: str = ""

    @property
    def key(self) -> str:
        """The identity without the version, lowercased: what the registry looks up."""
        return str(dataclasses.replace(self, version_spec="")).lower()

    def __str__(self) -> str:
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"dep:{self.type}/{ns}{self.name}" + (f"@{self.version_spec}" if self.version_spec else "")


def parse_depurl(text: str) -> DepURL:
    """Parse a DepURL; qualifiers (``?``), subpaths (``#``) and percent-encoding are refused."""
    if not isinstance(text, str) or not text.startswith("dep:"):
        raise RecipeError(f"{text!r} is not a DepURL: write dep:TYPE/[NAMESPACE/]NAME[@VERSION], "
                          "e.g. dep:generic/openblas@>=0.3 (PEP 725)")
    if "?" in text or "#" in text:
        raise RecipeError(f"{text!r}: PURL qualifiers (?...) and subpaths (#...) are not supported; "
                          "remove them (PEP 725 forbids qualifiers in external dependencies)")
    path, at, version = text[4:].partition("@")
    segments = path.split("/")
    if len(segments) < 2 or not _TYPE_RE.fullmatch(segments[0]) or not all(
            _SEGMENT_RE.fullmatch(s) for s in segments[1:]):
        raise RecipeError(f"{text!r} is not a well-formed DepURL: expected dep:TYPE/[NAMESPACE/]NAME "
                          "with letters, digits and . _ ~ + - in each part, e.g. dep:generic/openblas")
    kind, *namespace, name = segments
    kind = kind.lower()
    if kind == "virtual" and (len(namespace) != 1 or namespace[0] not in _VIRTUAL_NAMESPACES):
        raise RecipeError(f"{text!r}: a virtual DepURL is dep:virtual/interface/NAME or "
                          "dep:virtual/compiler/NAME")
    return DepURL(kind, "/".join(namespace) or None, name, _version_spec(version, text) if at else "")


def _version_spec(version: str, text: str) -> str:
    fix = "write a version (@0.3.21) or a range with == >= > < <= joined by commas (@>=0.3,<0.4)"
    try:
        if version[:1].isalnum():  # a literal version pins exactly (PEP 725)
            return f"=={Version(version)}"
        if not version or any(re.match(r"\s*(~=|!=|===)", part) for part in version.split(",")):
            raise InvalidSpecifier(version)
        return str(SpecifierSet(version))
    except (InvalidVersion, InvalidSpecifier):
        raise RecipeError(f"{text!r}: invalid version {version!r}; {fix}") from None


@dataclasses.dataclass(frozen=True)
class Abi:
    """What one platform family's binaries look like: names the loader matches, exported symbols."""

    family: str
    runtime_names: tuple[str, ...]
    vendored_names: tuple[str, ...] = ()
    symbol_prefix: str = ""
    symbol_suffix: str = ""
    symbols: tuple[str, ...] = ()
    integer: str | None = None  # "lp64" | "ilp64" for BLAS/LAPACK

    def expected_symbols(self) -> tuple[str, ...]:
        return tuple(self.symbol_prefix + s + self.symbol_suffix for s in self.symbols)


@dataclasses.dataclass(frozen=True)
class WheelSource:
    """A PyPI wheel holding the binaries: pip requirement, files to take, version rule."""

    family: str
    requirement: str
    files: tuple[str, ...]
    version: str = "wheel"  # "wheel": the wheel's version; "wheel:N": its first N release parts


@dataclasses.dataclass(frozen=True)
class WheelProvider:
    """A PyPI wheel installed as it is that provides the library (``[pypi.FAMILY]``): its
    files relative to the install root (the site directory), in load order."""

    family: str
    dist: str  # canonical distribution name, e.g. scipy-openblas32
    libraries: tuple[str, ...]  # '/'-separated, relative to the site directory; load order
    runtime_names: tuple[str, ...]  # [abi.FAMILY] runtime-names, one per library
    include: tuple[str, ...] = ()  # header directories
    pkgconfig: str | None = None  # the wheel's own .pc file, if it ships one
    version: str = "wheel"  # as WheelSource.version

    @property
    def stem(self) -> str:
        """The dist-info stem pip writes: ``scipy_openblas32`` (-> scipy_openblas32-V.dist-info)."""
        return self.dist.replace("-", "_")

    @property
    def label(self) -> str:
        """The provider as ``list`` and ``show`` name it: ``pypi:scipy-openblas32``."""
        return "pypi:" + self.dist


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    depurl: DepURL
    summary: str
    license: str
    abi: tuple[Abi, ...]
    path: str  # the recipe file, for error messages
    aliases: tuple[DepURL, ...] = ()
    provides: tuple[DepURL, ...] = ()
    requires: tuple[NativeRequirement, ...] = ()
    sources: tuple[WheelSource, ...] = ()
    conda_forge: tuple[str, ...] = ()
    debian: tuple[str, ...] = ()
    notes: str = ""
    pypi: tuple[WheelProvider, ...] = ()
    #: more names (without .pc) for the source's own pkg-config file, beside its own name
    pkgconfig_names: tuple[str, ...] = ()

    def pypi_for(self, family: str) -> WheelProvider | None:
        """The PyPI wheel that provides this library on ``family``, as installed, if any."""
        return next((p for p in self.pypi if p.family == family), None)

    def abi_for(self, family: str) -> Abi | None:
        return next((a for a in self.abi if a.family == family), None)

    def source_for(self, family: str) -> WheelSource:
        found = next((s for s in self.sources if s.family == family), None)
        if found is None:
            why = f"no [source.{family}] table" if self.sources else "no [source] table"
            raise RecipeError(f"{self.path}: no PyPI source for {self.name} on {family} ({why}); "
                              "build it with --from WHEEL_OR_DIRECTORY")
        return found


class _Table:
    """One TOML table of a recipe file, read with strict types; errors name file and key."""

    def __init__(self, path: str, prefix: str, data: Any, required: set[str], optional: set[str]) -> None:
        self.path, self.prefix, self.data = path, prefix, data
        if not isinstance(data, dict):
            raise self.error("", f"must be a table, not {type(data).__name__}")
        for key in sorted(set(data) - required - optional):
            raise self.error(key, f"unknown key; allowed keys are {', '.join(sorted(required | optional))}")
        for key in sorted(required - set(data)):
            raise self.error(key, "missing (a required key, see docs/registry.md)")

    def error(self, key: str, problem: str) -> RecipeError:
        return RecipeError(f"{self.path}: {(self.prefix + key).rstrip('.') or '(top level)'}: {problem}")

    def text(self, key: str, default: str = "") -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, not {type(value).__name__}")
        return value

    def texts(self, key: str, nonempty: bool = False) -> tuple[str, ...]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(key, "must be a list of non-empty strings")
        if nonempty and not value:
            raise self.error(key, "must not be empty")
        return tuple(value)

    def depurls(self, key: str) -> tuple[DepURL, ...]:
        """``depurl`` (one concrete DepURL), ``aliases`` (concrete) or ``provides`` (virtual)."""
        items = [(key, self.text(key))] if key == "depurl" else [
            (f"{key}[{i}]", t) for i, t in enumerate(self.texts(key))]
        out = []
        for where, text in items:
            try:
                dep = parse_depurl(text)
            except RecipeError as exc:
                raise self.error(where, str(exc)) from None
            if dep.version_spec:
                raise self.error(where, f"{text!r}: a recipe's DepURLs carry no version")
            if (dep.type == "virtual") != (key == "provides"):
                kind = "virtual (dep:virtual/interface/NAME)" if key == "provides" else "not virtual"
                raise self.error(where, f"{text!r}: must be {kind}")
            out.append(dep)
        return tuple(out)

    def sub(self, key: str, required: set[str], optional: set[str]) -> _Table:
        return _Table(self.path, f"{self.prefix}{key}.", self.data.get(key), required, optional)


def parse_recipe(data: dict[str, Any], path: str) -> Recipe:
    """Validate one recipe file's parsed TOML (the schema is in docs/recipes.md)."""
    top = _Table(path, "", data, {"name", "depurl", "summary", "license", "conda-forge", "debian", "abi"},
                 {"aliases", "provides", "requires", "notes", "source", "pypi", "pkgconfig-names"})
    try:
        name = library_name(top.text("name"))
    except DllregError as exc:
        raise top.error("name", str(exc)) from None
    if Path(path).stem != name:
        raise top.error("name", f"{name!r} must equal the file name without .toml ({Path(path).name})")
    abi_t = top.sub("abi", set(), {"integer", "symbol-prefix", "symbol-suffix", "symbols", *FAMILIES})
    integer = abi_t.data.get("integer")
    if integer not in (None, "lp64", "ilp64"):
        raise abi_t.error("integer", f"{integer!r}: must be \"lp64\" or \"ilp64\"")
    families = [f for f in FAMILIES if f in abi_t.data]
    if not families:
        raise abi_t.error("", "describe at least one of [abi.linux], [abi.windows], [abi.macos]")
    abis = []
    for fam in families:
        t = abi_t.sub(fam, {"runtime-names"}, {"vendored-names"})
        abis.append(Abi(fam, t.texts("runtime-names", True), t.texts("vendored-names"),
                        abi_t.text("symbol-prefix"), abi_t.text("symbol-suffix"), abi_t.texts("symbols"),
                        integer))
    sources = []
    if "source" in data:
        src_t = top.sub("source", set(), set(FAMILIES))
        for fam in (f for f in FAMILIES if f in src_t.data):
            t = src_t.sub(fam, {"requirement", "files"}, {"version"})
            if not any(a.family == fam for a in abis):
                raise t.error("", f"has no matching [abi.{fam}] to check its binaries against")
            req, rule = t.text("requirement"), t.text("version", "wheel")
            try:
                parsed = Requirement(req)
            except InvalidRequirement as exc:
                raise t.error("requirement", f"{req!r}: {exc}") from None
            if parsed.url or parsed.marker or parsed.extras:
                raise t.error("requirement", f"{req!r}: write NAME[SPECIFIER] without extras, URL or marker")
            if not re.fullmatch(r"wheel(:[1-9])?", rule):
                raise t.error("version", f"{rule!r}: must be \"wheel\" or \"wheel:N\" (N = 1..9)")
            sources.append(WheelSource(fam, req, t.texts("files", True), rule))
    pypi = _wheel_providers(top, data, abis) if "pypi" in data else ()
    requires = []
    for i, raw in enumerate(top.texts("requires")):
        try:
            requires.append(NativeRequirement.parse(raw))
        except DllregError as exc:
            raise top.error(f"requires[{i}]", str(exc)) from None
    pc_names = top.texts("pkgconfig-names")
    for i, pc in enumerate(pc_names):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", pc) or pc.endswith(".pc") or pc == name:
            raise top.error(f"pkgconfig-names[{i}]", f"{pc!r}: a pkg-config module name without .pc, "
                            f"other than {name!r} (e.g. scipy-openblas64)")
    return Recipe(name, top.depurls("depurl")[0], top.text("summary"), top.text("license"), tuple(abis),
                  path, top.depurls("aliases"), top.depurls("provides"), tuple(requires), tuple(sources),
                  top.texts("conda-forge"), top.texts("debian"), top.text("notes"), pypi, pc_names)


def _relpath(t: _Table, key: str, value: str) -> str:
    parts = value.split("/")
    if value.startswith("/") or "\\" in value or ":" in value or any(p in ("", ".", "..") for p in parts):
        raise t.error(key, f"{value!r}: must be relative to the wheel's install root, '/'-separated, "
                      "without '.' or '..' (e.g. scipy_openblas32/lib/libscipy_openblas.so)")
    return value


def _wheel_providers(top: _Table, data: dict[str, Any], abis: list[Abi]) -> tuple[WheelProvider, ...]:
    out = []
    pypi_t = top.sub("pypi", set(), set(FAMILIES))
    for fam in (f for f in FAMILIES if f in pypi_t.data):
        t = pypi_t.sub(fam, {"dist", "libraries"}, {"include", "pkgconfig", "version"})
        abi = next((a for a in abis if a.family == fam), None)
        if abi is None:
            raise t.error("", f"has no matching [abi.{fam}] naming its runtime names")
        dist, rule = t.text("dist"), t.text("version", "wheel")
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?", dist):
            raise t.error("dist", f"{dist!r}: must be a distribution name (PEP 508), e.g. scipy-openblas32")
        if canonicalize_name(dist).startswith("dllreg-lib-"):
            raise t.error("dist", f"{dist!r}: a dllreg-lib-* wheel is not a PyPI provider; "
                          "describe the wheel that ships the library as it is")
        if not re.fullmatch(r"wheel(:[1-9])?", rule):
            raise t.error("version", f"{rule!r}: must be \"wheel\" or \"wheel:N\" (N = 1..9)")
        libs = tuple(_relpath(t, f"libraries[{i}]", v) for i, v in enumerate(t.texts("libraries", True)))
        if len(libs) != len(abi.runtime_names):
            raise t.error("libraries", f"lists {len(libs)} files, but [abi.{fam}] runtime-names has "
                          f"{len(abi.runtime_names)}: give one file per runtime name, in the same order")
        include = tuple(_relpath(t, f"include[{i}]", v) for i, v in enumerate(t.texts("include")))
        pc = _relpath(t, "pkgconfig", t.text("pkgconfig")) if "pkgconfig" in t.data else None
        out.append(WheelProvider(fam, canonicalize_name(dist), libs, abi.runtime_names, include, pc, rule))
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class RecipeBook:
    recipes: tuple[Recipe, ...]

    def names(self) -> list[str]:
        return sorted(r.name for r in self.recipes)

    def get(self, name: str) -> Recipe | None:
        norm = canonicalize_name(name)
        return next((r for r in self.recipes if r.name == norm), None)

    def require(self, name: str) -> Recipe:
        """The recipe called ``name``, or a RecipeError with a did-you-mean."""
        found = self.get(name)
        if found is None:
            raise RecipeError(f"no recipe for library {name!r} in the registry{self.hint(name)}")
        return found

    def by_depurl(self, depurl: str | DepURL) -> Recipe | None:
        key = (parse_depurl(depurl) if isinstance(depurl, str) else depurl).key
        return next((r for r in self.recipes if key in {d.key for d in (r.depurl, *r.aliases)}), None)

    def providers(self, virtual: str | DepURL) -> tuple[Recipe, ...]:
        key = (parse_depurl(virtual) if isinstance(virtual, str) else virtual).key
        return tuple(r for r in self.recipes if key in {d.key for d in r.provides})

    def suggest(self, name: str) -> list[str]:
        """Recipe names close to ``name`` (a library name or a DepURL), best first."""
        query = name.split("@")[0].rsplit("/", 1)[-1].lower() if name.startswith("dep:") else name.lower()
        keys: dict[str, str] = {}
        for r in self.recipes:
            for k in (r.name, *(d.name.lower() for d in (r.depurl, *r.aliases))):
                keys.setdefault(k, r.name)
        close = difflib.get_close_matches(query, list(keys), n=6, cutoff=0.6)
        return list(dict.fromkeys(keys[k] for k in close))

    def hint(self, name: str) -> str:
        close = self.suggest(name)
        return f"; did you mean {' or '.join(close)}?" if close else f"; known: {', '.join(self.names())}"


def load_recipes(directory: Path | None = None) -> RecipeBook:
    """Read and validate every ``*.toml`` recipe of ``directory`` (default: the packaged recipes)."""
    base: Any = directory if directory is not None else resources.files("dllreg._recipes")
    files = sorted((f for f in base.iterdir() if f.name.endswith(".toml")), key=lambda f: f.name)
    recipes: list[Recipe] = []
    owners: dict[str, tuple[Recipe, str]] = {}
    for f in files:
        path = str(f)
        try:
            data = tomllib.loads(f.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise RecipeError(f"{path}: invalid TOML ({exc})") from None
        recipe = parse_recipe(data, path)
        ids = [("depurl", recipe.depurl)] + [(f"aliases[{i}]", d) for i, d in enumerate(recipe.aliases)]
        for key, dep in ids:
            if dep.key in owners:
                other, other_key = owners[dep.key]
                raise RecipeError(f"{path}: {key}: {dep} is already claimed by {other.path} ({other_key}); "
                                  "a DepURL names exactly one recipe")
            owners[dep.key] = (recipe, key)
        recipes.append(recipe)
    book = RecipeBook(tuple(recipes))
    for r in recipes:
        for i, req in enumerate(r.requires):
            if book.get(req.name) is None:
                raise RecipeError(f"{r.path}: requires[{i}]: no recipe named {req.name!r}"
                                  + book.hint(req.name))
    return book
