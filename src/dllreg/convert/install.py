"""``install``: download wheels with pip, devendor them, install the result with pip (docs/install.md).

Steps, each a function: ``download`` (pip download into a fresh directory), ``devendor``
(read and plan every platform wheel, build every output in memory: nothing is written when any
wheel is refused), ``write_wheelhouse``, ``install`` (pip install --no-index from the
wheelhouse, so pip records every file; the installed .py files are compiled on every core by
the target interpreter while pip runs, convert/bytecode.py, instead of one by one by pip). pip runs
through an injected runner and progress goes to an injected callback; the decisions in
between are pure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from ..errors import DllregError
from ..libwheel.package import LibraryPlan
from ..names import library_of_dist
from ..recipes.schema import RecipeBook
from ..recipes.source import has_source, platform_family
from .plan import DevendorPlan, WheelPlan, plan_devendor
from .read import LibraryWheel, planned_library, read_inputs, read_library_wheel
from .write import Outputs, build_outputs, write_outputs

#: Runs a pip command line, with ``isolated_env`` when the flag is set; returns its exit status
#: (its output goes to the user as it comes).
PipRunner = Callable[[Sequence[str], bool], int]
#: Run with the target interpreter around pip install (never imported here).
_BYTECODE = Path(__file__).with_name("bytecode.py")
Progress = Callable[[str], None]


class InstallError(DllregError):
    """``install`` cannot go on: a bad requirement, a failed pip step, a refused wheel."""


@dataclasses.dataclass(frozen=True)
class Target:
    """How to run pip for the environment to install into."""

    pip: tuple[str, ...]  # argv prefix, e.g. (python, "-m", "pip", "--python", TARGET)
    index: tuple[str, ...] = ()  # index options for pip download (--no-index, --find-links ...)
    quiet: bool = False
    python: str = sys.executable  # the target interpreter (bytecode is compiled with it)

    def download(self, dest: Path, requirements: Sequence[str], *, deps: bool = True) -> list[str]:
        return [*self.pip, "download", "--disable-pip-version-check", "--only-binary=:all:",
                *([] if deps else ["--no-deps"]), *(["-q"] if self.quiet else []), *self.index,
                "-d", str(dest), *requirements]

    def install(self, wheelhouse: Path, constraints: Path, requirements: Sequence[str],
                extra: Sequence[str] = ()) -> list[str]:
        # The same requirement strings, resolved only among the wheelhouse and pinned to what was
        # downloaded, so a stale wheel in a reused wheelhouse is never chosen.
        return [*self.pip, "install", "--disable-pip-version-check", "--no-index", "--only-binary=:all:",
                "--find-links", str(wheelhouse), "-c", str(constraints),
                *(["-q"] if self.quiet else []), *extra, *requirements]


def pip_prefix(python: str | None, running: str = sys.executable) -> tuple[str, ...]:
    """The running interpreter's pip, pointed at another interpreter with ``--python`` (pip then
    runs under that interpreter, so it resolves for that interpreter's tags)."""
    if python is None or os.path.abspath(python) == os.path.abspath(running):
        return (running, "-m", "pip")
    return (running, "-m", "pip", "--python", python)


def isolated_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for the install step: no PIP_* variables and no pip configuration files,
    whose find-links could hold the original (vendored) wheel under the very same file name."""
    env = {k: v for k, v in environ.items() if not k.upper().startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # pip then loads no configuration file at all
    return env


def check_requirements(requirements: Sequence[str]) -> tuple[str, ...]:
    """The requirement strings, refused when one is a path or URL: pip would install that file
    again instead of its devendored copy in the wheelhouse."""
    bad = []
    for r in requirements:
        try:
            if Requirement(r).url is None:
                continue
        except InvalidRequirement:
            pass
        bad.append(r)
    if bad:
        raise InstallError(f"install takes requirements (NAME[extras][version]), not files or URLs: "
                           f"{', '.join(bad)}; for a wheel file use 'python -m dllreg devendor' and "
                           "'pip install --find-links'")
    return tuple(requirements)


def constraints(wheels: Sequence[str]) -> str:
    """A pip constraints file pinning each wheel's project to its exact version."""
    pins = {}
    for filename in wheels:
        name, version, _, _ = parse_wheel_filename(filename)
        pins[str(name)] = f"{name}=={version}\n"
    return "".join(pins[n] for n in sorted(pins))


def is_platform_wheel(filename: str) -> bool:
    """Only platform wheels can vendor native libraries; pure wheels are installed as they are."""
    tags = parse_wheel_filename(filename)[3]
    return any(t.platform != "any" for t in tags)


def is_library_wheel(filename: str) -> bool:
    return library_of_dist(str(parse_wheel_filename(filename)[0])) is not None


# --- step 1: download ---------------------------------------------------------------------------


def download(target: Target, requirements: Sequence[str], dest: Path, run: PipRunner,
             progress: Progress) -> list[Path]:
    """The wheels pip resolves for the requirements and their dependencies (binary only)."""
    progress(f"downloading {', '.join(requirements)} and dependencies with pip (binary wheels only)")
    dest.mkdir(parents=True, exist_ok=True)
    status = run(target.download(dest, requirements), False)
    if status != 0:
        raise InstallError(f"pip download failed (exit status {status}); nothing was installed")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise InstallError("pip download gave no wheels; nothing was installed")
    return wheels


def index_library_wheels(downloads: Sequence[Path], local_dirs: Sequence[Path]) -> list[Path]:
    """The ``dllreg-lib-*`` wheels pip downloaded that no local directory holds (same file
    name, same bytes): pip took them from an index or a remote find-links. Nobody registers
    those names on PyPI for dllreg, so anyone may publish one there (dependency confusion):
    ``install`` refuses them instead of installing them (docs/install.md)."""
    out = []
    for wheel in downloads:
        if not is_library_wheel(wheel.name):
            continue
        local = [d / wheel.name for d in local_dirs if (d / wheel.name).is_file()]
        if not any(p.read_bytes() == wheel.read_bytes() for p in local):
            out.append(wheel)
    return out


def local_find_links(given: Sequence[str], environ: Mapping[str, str]) -> list[Path]:
    """The local directories pip's download step may take wheels from: ``--find-links`` and
    ``PIP_FIND_LINKS`` entries that are directories (URLs are not local)."""
    entries = [*given, *environ.get("PIP_FIND_LINKS", "").split()]
    return [Path(e) for e in dict.fromkeys(entries) if "://" not in e and Path(e).is_dir()]


# --- step 2: devendor ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Devendored:
    """Everything to write into the wheelhouse, decided and built in memory."""

    plan: DevendorPlan
    outputs: Outputs
    fetched: tuple[LibraryPlan, ...]  # library wheels built from recipe sources, used by the plan
    as_is: tuple[Path, ...]  # downloaded wheels installed unchanged
    refused: tuple[str, ...] = ()  # every input refused so far (write_wheelhouse raises for them)
    inputs: int = 0  # platform wheels read


def library_wheels(dirs: Sequence[Path], book: RecipeBook) -> list[Path]:
    """dllreg-lib wheels of registry libraries found in ``dirs`` (downloads, local find-links)."""
    wanted = set(book.names())
    found: dict[str, Path] = {}
    for d in dirs:
        for wheel in sorted(d.glob("dllreg_lib_*.whl")) if d.is_dir() else []:
            try:
                name = library_of_dist(str(parse_wheel_filename(wheel.name)[0]))
            except ValueError:
                continue
            if name in wanted:
                found.setdefault(wheel.name, wheel)
    return list(found.values())


def fetch_library(target: Target, book: RecipeBook, name: str, platform: str, dest: Path,
                  run: PipRunner, progress: Progress) -> tuple[LibraryPlan, LibraryWheel] | None:
    """The recipe's library wheel built from its source, downloaded for the target like the
    packages (devendor --fetch does the same for one platform tag); None without a source."""
    recipe = book.require(name)
    if not has_source(recipe, platform):
        return None  # nothing else provides it: packaged as-is
    req = Requirement(recipe.source_for(platform_family(platform)).requirement)
    progress(f"fetching {req} for the {name} library with pip")
    folder = dest / name
    if run(target.download(folder, [str(req)], deps=False), False) != 0:
        raise InstallError(f"pip could not download {req}, the source of the {name} library; "
                           "nothing was installed (--no-fetch packages vendored copies as they are)")
    return planned_library(recipe, _newest(folder, req, name), dest)


def fetch_libraries(target: Target, book: RecipeBook, missing: Sequence[tuple[str, str]], dest: Path,
                    run: PipRunner, progress: Progress) -> list[tuple[LibraryPlan, LibraryWheel]]:
    """fetch_library for each (library, platform) of ``missing`` that has a source, with one pip
    download for all of them (pip starts once); when that fails, or two need one project, one
    download each, so that an error names the library."""
    wanted = [(book.require(n), p) for n, p in missing if has_source(book.require(n), p)]
    reqs = [Requirement(r.source_for(platform_family(p)).requirement) for r, p in wanted]
    names = [canonicalize_name(q.name) for q in reqs]
    if len(wanted) > 1 and len(set(names)) == len(names):
        progress(f"fetching {', '.join(map(str, reqs))} for the {', '.join(r.name for r, _ in wanted)} "
                 "libraries with pip")
        folder = dest / "sources"
        if run(target.download(folder, [str(q) for q in reqs], deps=False), False) == 0:
            return [planned_library(r, _newest(folder, q, r.name), dest) for (r, _), q in zip(wanted, reqs)]
    return [f for r, p in wanted if (f := fetch_library(target, book, r.name, p, dest, run, progress))]


def _newest(folder: Path, req: Requirement, name: str) -> Path:
    got = [w for w in folder.glob("*.whl")
           if canonicalize_name(str(parse_wheel_filename(w.name)[0])) == canonicalize_name(req.name)]
    if not got:
        raise InstallError(f"pip downloaded no wheel of {req.name} for the {name} library")
    return max(got, key=lambda w: Version(str(parse_wheel_filename(w.name)[1])))


def devendor(downloads: Sequence[Path], book: RecipeBook, library_dirs: Sequence[Path],
             fetch: Callable[[Sequence[tuple[str, str]]], list[tuple[LibraryPlan, LibraryWheel]]] | None,
             progress: Progress, spool: Path | None = None) -> Devendored:
    """Read and plan every downloaded platform wheel; build the outputs in memory. ``spool``:
    a private directory that holds the checked binaries until the wheelhouse is written."""
    inputs = [w for w in downloads if is_platform_wheel(w.name) and not is_library_wheel(w.name)]
    progress(f"devendoring {len(inputs)} platform wheel(s) of {len(downloads)} downloaded")
    refused: list[str] = []
    wheels = read_inputs(inputs, refused, spool)  # every input is checked before any decision
    available = [read_library_wheel(p) for p in library_wheels(library_dirs, book)]
    planning: list[str] = []
    plan = plan_devendor(wheels, book, available, refused=planning)
    fetched: list[tuple[LibraryPlan, LibraryWheel]] = []
    if fetch is not None and plan.missing:
        fetched = fetch(plan.missing)
        if fetched:
            planning = []
            plan = plan_devendor(wheels, book, available + [lw for _, lw in fetched], refused=planning)
    used = {s.path for s in plan.substitutes}
    refused += planning
    outputs = build_outputs(plan, refused)
    planned = {lw.path for _, lw in fetched}  # written from their plans, not copied
    outputs = dataclasses.replace(outputs, substitutes=tuple(s for s in outputs.substitutes
                                                             if s.path not in planned))
    changed = {wp.wheel.filename for wp in plan.wheels if wp.changed}
    return Devendored(plan, outputs, tuple(lp for lp, lw in fetched if lw.path in used),
                      tuple(w for w in downloads if w.name not in changed), tuple(refused), len(inputs))


def wheel_lines(wp: WheelPlan) -> list[str]:
    """Progress for one devendored wheel: how many libraries met each fate, why any stayed (the
    one fate a user may want to act on), and which copies another wheel's build replaced."""
    name = Path(wp.wheel.path).name
    if not wp.decisions:
        return [f"  {name}: nothing vendored, installed as it is"]
    verbs = {"substitute": "substituted", "package": "packaged", "drop": "dropped", "keep": "kept"}
    fates = ", ".join(f"{sum(d.action == a for d in wp.decisions)} {v}" for a, v in verbs.items())
    same = "" if wp.changed else " (nothing changed: installed as it is)"
    lines = [f"  {name}: {fates}; {human_size(wp.bytes_before)} vendored -> "
             f"{human_size(wp.bytes_after)}{same}"]
    lines += [f"    kept {Path(d.member).name}: {d.reason}" for d in wp.decisions if d.action == "keep"]
    # another wheel's build stands in for this copy: say whose and why (convert.share)
    return lines + [f"    shared {Path(d.member).name}: {d.reason}" for d in wp.decisions
                    if d.served_by and d.reason.startswith("replaced by")]


def byte_totals(result: Devendored) -> tuple[int, int]:
    """Bytes of native libraries before (vendored) and after (still vendored + library wheels)."""
    plan = result.plan
    before = sum(wp.bytes_before for wp in plan.wheels)
    after = (sum(wp.bytes_after for wp in plan.wheels) + plan.packaged_bytes
             + sum(s.lib_bytes for s in plan.substitutes))
    return before, after


def human_size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB" if n else "0 B"


def write_wheelhouse(result: Devendored, wheelhouse: Path) -> list[Path]:
    """Write the thin wheels, library wheels and unchanged downloads; return every wheel to install.
    Any refused input (found before, or now, patching) writes nothing and names them all. The
    new wheels are stored, not deflated: pip reads them once, and deflating a stack's hundreds
    of megabytes of libraries costs more than the rest of the install."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if result.outputs.consumers or result.fetched or result.refused:
        written += write_outputs(result.outputs, wheelhouse, extra=result.fetched, refused=result.refused,
                                 inputs=result.inputs, compression=zipfile.ZIP_STORED).paths
    for w in result.as_is:
        dst = wheelhouse / w.name
        if dst.resolve() != w.resolve():
            _link_or_copy(w, dst)
        written.append(dst)
    return list(dict.fromkeys(written))  # a downloaded substitute is both copied and kept as is


def _link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` as a hard link to the downloaded ``src`` (pip only reads it), else a copy."""
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system, or no hard links there
        shutil.copyfile(src, dst)


# --- step 3: install ----------------------------------------------------------------------------


def install(target: Target, wheelhouse: Path, wheels: Sequence[Path], requirements: Sequence[str],
            run: PipRunner, progress: Progress, extra: Sequence[str] = (), *,
            compile: bool = False) -> None:
    """pip install from the wheelhouse; with ``compile``, pip installs with ``--no-compile`` and
    the installed files are compiled on every core while it runs (convert/bytecode.py)."""
    pins = wheelhouse / ".dllreg-constraints.txt"
    pins.write_text(constraints([w.name for w in wheels]), encoding="utf-8")
    progress(f"installing {', '.join(requirements)} with pip from {wheelhouse}")
    argv = target.install(wheelhouse, pins, requirements, [*extra, *(["--no-compile"] if compile else [])])
    if compile:  # pip runs under convert/bytecode.py, which compiles what pip has installed so far
        names = sorted({str(parse_wheel_filename(w.name)[0]) for w in wheels})
        argv = [target.python, "-c", _BYTECODE.read_text(encoding="utf-8"), json.dumps(argv), *names]
    status = run(argv, True)
    if status != 0:
        raise InstallError(f"pip install failed (exit status {status}); the wheels are in {wheelhouse}")
