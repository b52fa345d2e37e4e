"""Library recipes (``registry/*.toml``): validation, PEP 725 DepURLs, the ``[external]`` mapping.

Reference: docs/registry.md. Everything here decides over plain data, except ``load_registry``
(reads files) and ``fetch_source`` (runs pip). Every error names the file and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import subprocess
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from packaging.markers import InvalidMarker, Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import mac_platforms
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from .errors import DllregError
from .libwheel import LibraryPlan, Source, read_source
from .names import NativeRequirement, library_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FAMILIES = ("linux", "windows", "macos")
#: The [external] keys whose DepURLs become native requirements (docs/registry.md).
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
    """Validate one recipe file's parsed TOML (the schema is in docs/registry.md)."""
    top = _Table(path, "", data, {"name", "depurl", "summary", "license", "conda-forge", "debian", "abi"},
                 {"aliases", "provides", "requires", "notes", "source"})
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
    requires = []
    for i, raw in enumerate(top.texts("requires")):
        try:
            requires.append(NativeRequirement.parse(raw))
        except DllregError as exc:
            raise top.error(f"requires[{i}]", str(exc)) from None
    return Recipe(name, top.depurls("depurl")[0], top.text("summary"), top.text("license"), tuple(abis),
                  path, top.depurls("aliases"), top.depurls("provides"), tuple(requires), tuple(sources),
                  top.texts("conda-forge"), top.texts("debian"), top.text("notes"))


@dataclasses.dataclass(frozen=True)
class Registry:
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


def load_registry(directory: Path | None = None) -> Registry:
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
    registry = Registry(tuple(recipes))
    for r in recipes:
        for i, req in enumerate(r.requires):
            if registry.get(req.name) is None:
                raise RecipeError(f"{r.path}: requires[{i}]: no recipe named {req.name!r}"
                                  + registry.hint(req.name))
    return registry


def _marker(text: str, where: str) -> str | None:
    if not text.strip():
        return None
    try:
        return str(Marker(text))
    except InvalidMarker as exc:
        raise RecipeError(f"{where}: invalid environment marker {text.strip()!r} ({exc})") from None


def _tool_requires(pyproject: dict[str, Any]) -> list[NativeRequirement]:
    tool = pyproject.get("tool", {})
    table = tool.get("dllreg", {}) if isinstance(tool, dict) else {}
    raw = table.get("requires", []) if isinstance(table, dict) else []
    return [NativeRequirement.parse(r) for r in raw] if isinstance(raw, list) else []


def requirements_from_external(pyproject: dict[str, Any], registry: Registry, *,
                               tool_requires: Sequence[NativeRequirement] | None = None,
                               ignore_unknown: bool = False) -> list[NativeRequirement]:
    """Map ``[external] host-requires`` and ``dependencies`` DepURLs to registry libraries.

    A virtual DepURL resolves to the one ``[tool.dllreg] requires`` entry (``tool_requires``, by
    default read from ``pyproject``) whose recipe provides it, else to its only provider; several
    candidates are an error. Unknown DepURLs are an error (with a did-you-mean) unless
    ``ignore_unknown``. A library named twice gets the intersection of the version ranges.
    """
    table = pyproject.get("external")
    if table is None:
        return []
    if not isinstance(table, dict):
        raise RecipeError("pyproject.toml: [external] must be a table (PEP 725)")
    tools = list(_tool_requires(pyproject) if tool_requires is None else tool_requires)
    merged: dict[str, NativeRequirement] = {}
    for key in MAPPED_KEYS:
        entries = table.get(key, [])
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise RecipeError(f"pyproject.toml: [external] {key}: must be a list of DepURL strings (PEP 725)")
        for i, entry in enumerate(entries):
            where = f"pyproject.toml: [external] {key}[{i}]"
            text, _, marker_text = entry.partition(";")
            try:
                dep = parse_depurl(text.strip())
            except RecipeError as exc:
                raise RecipeError(f"{where}: {exc}") from None
            req = _resolve(dep, _marker(marker_text, where), registry, tools, where, ignore_unknown)
            if req is None:
                continue
            prev = merged.get(req.name)
            if prev is not None:
                if prev.marker != req.marker:
                    raise RecipeError(f"{where}: {req.name} is listed again with another marker "
                                      f"({prev.marker!r} vs {req.marker!r}); use one entry per library")
                spec = SpecifierSet(prev.specifier) & SpecifierSet(req.specifier)
                req = NativeRequirement(req.name, str(spec), req.marker)
            merged[req.name] = req
    return list(merged.values())


def _resolve(dep: DepURL, marker: str | None, registry: Registry, tools: list[NativeRequirement],
             where: str, ignore_unknown: bool) -> NativeRequirement | None:
    if dep.type != "virtual":
        recipe = registry.by_depurl(dep)
        if recipe is None:
            if ignore_unknown:
                return None
            raise RecipeError(f"{where}: no recipe in the registry has the DepURL {dep.key}"
                              f"{registry.hint(str(dep))}")
        return NativeRequirement(recipe.name, dep.version_spec, marker)
    providers = {r.name for r in registry.providers(dep)}  # an interface version cannot be checked
    if not providers:
        if ignore_unknown:
            return None
        raise RecipeError(f"{where}: no recipe provides {dep.key}")
    chosen = [t for t in tools if t.name in providers]
    if len(chosen) == 1:
        return NativeRequirement(chosen[0].name, chosen[0].specifier, marker)
    if len(providers) == 1 and not chosen:
        return NativeRequirement(providers.pop(), "", marker)
    names = sorted(t.name for t in chosen) if chosen else sorted(providers)
    raise RecipeError(f"{where}: {dep.key} is ambiguous: provided by {', '.join(names)}; name exactly "
                      "one of them in [tool.dllreg] requires, or write its dep:generic/NAME DepURL")


def reconcile(tool_requires: Sequence[NativeRequirement],
              external_requires: Sequence[NativeRequirement]) -> list[NativeRequirement]:
    """One list of requirements; when both are given they must name the same libraries with equal
    version ranges and markers, else a RecipeError lists every disagreement."""
    if not tool_requires or not external_requires:
        return list(tool_requires or external_requires)
    tool = {r.name: r for r in tool_requires}
    ext = {r.name: r for r in external_requires}
    problems = []
    for name in sorted(tool.keys() | ext.keys()):
        a, b = tool.get(name), ext.get(name)
        if a is None:
            problems.append(f"{name}: [external] requires {b}, [tool.dllreg] requires does not list it")
        elif b is None:
            problems.append(f"{name}: [tool.dllreg] requires lists {a}, [external] does not")
        elif SpecifierSet(a.specifier) != SpecifierSet(b.specifier) or a.marker != b.marker:
            problems.append(f"{name}: [tool.dllreg] requires says '{a}', [external] says '{b}'")
    if problems:
        raise RecipeError("pyproject.toml: [tool.dllreg] requires and [external] disagree; they must name "
                          "the same libraries with the same versions:\n  " + "\n  ".join(problems))
    return list(tool_requires)


def platform_family(tag: str) -> str:
    """``linux``, ``windows`` or ``macos`` for a wheel platform tag (the first of a ``.``-joined set)."""
    first = tag.split(".")[0]
    for prefix, family in (("manylinux", "linux"), ("musllinux", "linux"), ("linux", "linux"),
                           ("win", "windows"), ("macosx", "macos")):
        if first.startswith(prefix):
            return family
    raise RecipeError(f"platform tag {tag!r}: not a Linux, Windows or macOS wheel platform tag")


def compatible_platforms(tag: str) -> list[str]:
    """The tags pip must be given to accept every wheel that installs on ``tag`` (pip's --platform
    does not expand manylinux_2_28 to the older manylinux tags itself)."""
    out: list[str] = []
    for t in tag.split("."):
        m = re.fullmatch(r"(manylinux|musllinux)_(\d+)_(\d+)_(\w+)", t)
        mac = re.fullmatch(r"macosx_(\d+)_(\d+)_(\w+)", t)
        if m:
            kind, major, minor, arch = m[1], int(m[2]), int(m[3]), m[4]
            low = {("manylinux", 2): 5, ("musllinux", 1): 1}.get((kind, major), 0)
            out += [f"{kind}_{major}_{n}_{arch}" for n in range(minor, low - 1, -1)]
            if (kind, major) == ("manylinux", 2):
                out += [f"{old}_{arch}" for n, old in ((17, "manylinux2014"), (12, "manylinux2010"),
                                                       (5, "manylinux1")) if n <= minor]
        elif mac:
            out += list(mac_platforms((int(mac[1]), int(mac[2])), mac[3]))
        else:
            out.append(t)
    return list(dict.fromkeys(out))


def fetch_source(recipe: Recipe, platform_tag: str, dest: Path, *, specifier: str = "") -> Path:
    """Download the recipe's source wheel for ``platform_tag`` with pip into ``dest``; its path."""
    family = platform_family(platform_tag)
    src = recipe.source_for(family)
    req = Requirement(src.requirement)
    if specifier:
        req.specifier &= SpecifierSet(specifier)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-d", str(dest)]
    for tag in compatible_platforms(platform_tag):
        cmd += ["--platform", tag]
    proc = subprocess.run([*cmd, str(req)], capture_output=True, text=True)
    lines = proc.stdout.splitlines()
    saved = [m[1] for m in (re.match(r"\s*(?:Saved|File was already downloaded) (.+\.whl)\s*$", x)
                            for x in lines) if m]
    if proc.returncode != 0 or not saved:
        why = (proc.stderr.strip().splitlines() or lines or ["no output"])[-1]
        raise RecipeError(f"{recipe.path}: source.{family}.requirement: pip could not download {req} "
                          f"for {platform_tag}: {why}")
    return dest / Path(saved[-1]).name


def _glob(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\*\*|\*|\?)", pattern)
    sub = {"**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(sub.get(p, re.escape(p)) for p in parts))


def recipe_source(recipe: Recipe, wheel: Path) -> tuple[Source, str]:
    """Read a source wheel and keep the recipe's ``files`` (and license files); with the library
    version its ``version`` rule gives."""
    source = read_source(wheel)
    family = platform_family(source.platform or "")
    src = recipe.source_for(family)
    globs = [_glob(g) for g in src.files]
    for i, g in enumerate(globs):
        if not any(g.fullmatch(f.path) for f in source.files):
            raise RecipeError(f"{recipe.path}: source.{family}.files[{i}]: {src.files[i]!r} matches no file "
                              f"in {wheel.name}")
    kept = tuple(f for f in source.files
                 if ".dist-info/licenses/" in f.path or any(g.fullmatch(f.path) for g in globs))
    version = parse_wheel_filename(wheel.name)[1]
    if src.version != "wheel":
        version = Version(".".join(str(n) for n in version.release[:int(src.version[6:])]))
    return dataclasses.replace(source, files=kept), str(version)


def _runtime_match(family: str, want: str, have: str) -> bool:
    if family == "windows":
        return want.lower() == have.lower()
    if family == "macos" and "/" not in want:  # a bare file name matches any install-name directory
        return want == have.rsplit("/", 1)[-1]
    return want == have


def _exports(data: bytes) -> frozenset[str]:
    if data[:2] == b"MZ":
        from .binary.pe import read_pe

        return read_pe(data).exports
    from .binary.elf import read_elf

    return read_elf(data).exported


def check_abi(recipe: Recipe, plan: LibraryPlan) -> None:
    """Check that a planned library is the one the recipe describes: its runtime names and, on
    Linux and Windows, the exported ``symbol-prefix + NAME + symbol-suffix`` symbols."""
    family = platform_family(plan.manifest.platform)
    abi = recipe.abi_for(family)
    if abi is None:
        raise RecipeError(f"{recipe.path}: abi.{family}: missing, so {recipe.name} binaries for {family} "
                          f"cannot be checked; add an [abi.{family}] table")
    have = [lib.soname for lib in plan.manifest.libraries]
    problems = []
    missing = [w for w in abi.runtime_names if not any(_runtime_match(family, w, h) for h in have)]
    extra = [h for h in have if not any(_runtime_match(family, w, h) for w in abi.runtime_names)]
    if missing or extra:
        problems.append(f"abi.{family}.runtime-names: the recipe expects {', '.join(abi.runtime_names)}, "
                        f"the source has {', '.join(have)}")
    wanted = abi.expected_symbols()
    if wanted and family != "macos":  # dllreg's Mach-O reader does not read the export trie
        data = dict(plan.files)
        exported = frozenset().union(*(_exports(data[lib.path]) for lib in plan.manifest.libraries))
        absent = [s for s in wanted if s not in exported]
        if absent:
            instead = [min((e for e in exported if s in e and len(e) <= len(s) + 8), key=len, default="")
                       for s in abi.symbols]
            found = ", ".join(e for e in instead if e and e not in wanted)
            problems.append(f"abi.symbols (symbol-prefix {abi.symbol_prefix!r}, symbol-suffix "
                            f"{abi.symbol_suffix!r}): {', '.join(have)} does not export {', '.join(absent)}"
                            + (f" (it exports {found})" if found else ""))
    if problems:
        raise RecipeError(f"{recipe.path}: " + "; ".join(problems)
                          + f": this is not the {recipe.name} library the recipe describes")
