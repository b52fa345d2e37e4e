"""``dllreg.build``: a PEP 517 / PEP 660 backend that wraps the consumer's real backend.

Every hook delegates to the inner backend named by ``[tool.dllreg] backend``. On top:
the library wheels join the build requirements, the inner build sees the libraries'
pkg-config directories, and the produced wheel is patched by build/consumer.py.
Reference: docs/pyproject.md.

The package is the build side: ``consumer`` patches the inner backend's wheel, ``sdist`` its
sdist's metadata, ``editable`` writes the stubs of editable installs, ``hatch`` is the hatchling
build hook and ``config`` reads ``[tool.dllreg]``. May import env, stub, recipes, libwheel,
binary and the ground floor.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from .config import ConsumerConfig, import_backend, load_config
from .consumer import consumer_record, patch_metadata, patch_wheel
from .editable import editable_stubs
from ..errors import BuildError, DllregError
from ..names import PYPI, NativeRequirement
from ..env.registry import CONSUMER_RECORD, find_library, site_dirs

#: Set while the inner backend lists requirements or builds an sdist: setuptools runs
#: setup.py then, before (or without) the libraries being installed, and nothing is
#: compiled, so ``dllreg pkg-config`` answers with no flags instead of failing.
PHASE_VAR = "DLLREG_BUILD_PHASE"
NO_LIBRARY_PHASES = ("get_requires", "sdist")


def _setup() -> tuple[ConsumerConfig, ModuleType]:
    source = Path.cwd()
    config = load_config(source)
    return config, import_backend(config, source)


@contextmanager
def _env(**values: str) -> Iterator[None]:
    # The backend runs in its own process (PEP 517), so this only affects the inner build.
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _choices(config: ConsumerConfig) -> dict[str, str]:
    """Library -> the distribution that provides it (docs/pyproject.md, ``providers``)."""
    from ..recipes.schema import load_recipes
    from ..recipes.wheelprovider import resolve_choices

    try:
        return resolve_choices(config.requires, dict(config.providers), load_recipes())
    except DllregError as exc:
        raise BuildError(f"pyproject.toml: {exc}") from None


def _pkgconfig_env(requires: Sequence[NativeRequirement], choices: dict[str, str],
                   pc_out: Path) -> dict[str, str]:
    """PKG_CONFIG_PATH with each required library's pkg-config directory in front, and
    CMAKE_PREFIX_PATH with each library directory (its lib/cmake/NAME config) in front. A
    library a PyPI wheel provides as it is gets a ``NAME.pc`` written into ``pc_out``
    (pointing into the wheel), next to the wheel's own pkg-config directory."""
    from ..recipes.wheelprovider import consumer_requirements
    from ..env.registry import provider_pc

    dirs = site_dirs()
    pc_dirs = []
    prefixes = []
    for req in requires:
        lib = find_library(req.name, dirs)
        (pip,) = consumer_requirements([req], choices)
        if lib is None:
            raise BuildError(
                f"native library {req} is not installed in the build environment "
                f"(searched {', '.join(map(str, dirs))}); an isolated build installs it from "
                f"the build requirements, otherwise run: pip install \"{pip}\""
                + _recipe_hint(req.name))
        if not req.accepts(lib.manifest.version):
            raise BuildError(
                f"native library {req.name} {lib.manifest.version} in the build environment "
                f"({lib.directory}) does not satisfy {req}; run: pip install \"{pip}\""
            )
        prefixes.append(str(lib.directory))
        if lib.provider.startswith(PYPI + ":"):
            pc_out.mkdir(parents=True, exist_ok=True)
            (pc_out / f"{req.name}.pc").write_text(provider_pc(lib), encoding="utf-8")
            if str(pc_out) not in pc_dirs:
                pc_dirs.append(str(pc_out))
        if lib.manifest.pkgconfig:
            pc_dirs.append(str(lib.file_path(lib.manifest.pkgconfig).parent))
    existing = os.environ.get("PKG_CONFIG_PATH")
    cmake = os.environ.get("CMAKE_PREFIX_PATH")
    return {"PKG_CONFIG_PATH": os.pathsep.join(pc_dirs + ([existing] if existing else [])),
            # find_package(NAME CONFIG) finds <libdir>/lib/cmake/NAME/NAME-config.cmake
            "CMAKE_PREFIX_PATH": os.pathsep.join(prefixes + ([cmake] if cmake else []))}


def _recipe_hint(name: str) -> str:
    """'; did you mean ...' when ``name`` has no dllreg recipe (private libraries are fine)."""
    from ..recipes.schema import load_recipes

    book = load_recipes()
    return "" if book.get(name) else f" ({name} has no dllreg recipe{book.hint(name)})"


def _requires_hook(hook: str, config_settings: dict[str, Any] | None, libs: bool) -> list[str]:
    config, backend = _setup()
    for req in config.requires if libs else ():
        hint = _recipe_hint(req.name)
        if hint:  # pip is about to look for dllreg-lib-NAME; a typo would only say "not found"
            sys.stderr.write(f"dllreg: note: [tool.dllreg] requires {req}{hint}\n")
    inner = getattr(backend, hook, None)
    with _env(**{PHASE_VAR: "get_requires"}):
        base = list(inner(config_settings)) if inner else []
    if not libs:
        return base
    from ..recipes.wheelprovider import consumer_requirements

    return base + consumer_requirements(config.requires, _choices(config))


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _requires_hook("get_requires_for_build_wheel", config_settings, True)


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _requires_hook("get_requires_for_build_editable", config_settings, True)


def get_requires_for_build_sdist(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _requires_hook("get_requires_for_build_sdist", config_settings, False)


def build_sdist(sdist_directory: str, config_settings: dict[str, Any] | None = None) -> str:
    from .sdist import patch_sdist

    config, backend = _setup()
    with _env(**{PHASE_VAR: "sdist"}):
        name = str(backend.build_sdist(sdist_directory, config_settings))
    # PEP 643: the wheels add Requires-Dist, so the sdist's PKG-INFO must declare it too
    patch_sdist(Path(sdist_directory, name), config.requires, _static_choices(config))
    return name


def _static_choices(config: ConsumerConfig) -> dict[str, str] | None:
    """The providers every platform family's wheel gets, or None when they differ by family."""
    from ..recipes.schema import FAMILIES, load_recipes
    from ..recipes.wheelprovider import requirement_for, resolve_choices

    book = load_recipes()
    seen = set()
    for family in FAMILIES:
        try:
            chosen = resolve_choices(config.requires, dict(config.providers), book, family)
        except DllregError as exc:
            raise BuildError(f"pyproject.toml: {exc}") from None
        seen.add(tuple(requirement_for(r, chosen[r.name], book, family) for r in config.requires))
    return _choices(config) if len(seen) == 1 else None


def _patch_metadata_dir(directory: Path, requires: Sequence[NativeRequirement],
                        choices: dict[str, str]) -> None:
    meta = directory / "METADATA"
    meta.write_text(patch_metadata(meta.read_text(encoding="utf-8"), requires, choices),
                    encoding="utf-8")
    (directory / CONSUMER_RECORD).write_text(consumer_record(requires, []), encoding="utf-8")


def _prepare(hook: str, metadata_directory: str, config_settings: dict[str, Any] | None) -> str:
    config, backend = _setup()
    choices = _choices(config)
    with tempfile.TemporaryDirectory(prefix="dllreg-build-") as tmp, \
            _env(**_pkgconfig_env(config.active_requires(), choices, Path(tmp, "pkgconfig"))):
        name = str(getattr(backend, hook)(metadata_directory, config_settings))
    _patch_metadata_dir(Path(metadata_directory, name), config.requires, choices)
    return name


def _prepare_metadata_for_build_wheel(metadata_directory: str,
                                      config_settings: dict[str, Any] | None = None) -> str:
    return _prepare("prepare_metadata_for_build_wheel", metadata_directory, config_settings)


def _prepare_metadata_for_build_editable(metadata_directory: str,
                                         config_settings: dict[str, Any] | None = None) -> str:
    return _prepare("prepare_metadata_for_build_editable", metadata_directory, config_settings)


_OPTIONAL = {"prepare_metadata_for_build_wheel": _prepare_metadata_for_build_wheel,
             "prepare_metadata_for_build_editable": _prepare_metadata_for_build_editable}


def __getattr__(name: str) -> Any:
    """The optional PEP 517 hooks exist exactly when the inner backend has them: without one
    (mesonpy), frontends build the wheel once and take its metadata, instead of dllreg
    building it twice."""
    if name in _OPTIONAL:
        _, backend = _setup()
        if hasattr(backend, name):
            return _OPTIONAL[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _build(hook: str, wheel_directory: str, config_settings: dict[str, Any] | None) -> str:
    config, backend = _setup()
    active = config.active_requires()
    choices = _choices(config)
    with tempfile.TemporaryDirectory(prefix="dllreg-build-") as tmp:
        # metadata_directory is not passed on: the inner backend's own metadata is patched
        # the same way below, so both paths give the same METADATA.
        with _env(**_pkgconfig_env(active, choices, Path(tmp, ".dllreg-pkgconfig"))):
            try:
                name = str(getattr(backend, hook)(tmp, config_settings))
            # meson-python reports its failures with SystemExit, which is no Exception
            except (Exception, SystemExit) as exc:  # the inner error stays; dllreg adds context
                context = (f"dllreg.build: the inner backend {config.backend!r} failed in {hook}; "
                           f"nothing was written to {wheel_directory}")
                if hasattr(exc, "add_note"):
                    exc.add_note(context)
                sys.stderr.write(context + "\n")
                raise
        if hook == "build_wheel":
            _check_used(Path(tmp, name), config, active)
        extra = editable_stubs(Path(tmp, name), Path.cwd(), active) \
            if hook == "build_editable" else {}
        # An editable wheel does not carry the package sources: its stubs live in the source
        # tree or come with a finder of their own (build/editable.py); only its metadata is patched.
        return patch_wheel(Path(tmp, name), Path(wheel_directory), config.requires, active,
                           with_stubs=hook == "build_wheel", extra=extra, choices=choices).name


def _check_used(wheel: Path, config: ConsumerConfig, active: Sequence[NativeRequirement]) -> None:
    """Fail when a declared library is needed by no binary of the wheel: the build did not link
    it (numpy's meson with its defaults finds no BLAS and builds without one), so the stub and
    Requires-Dist would install and preload a library nothing uses."""
    from ..binary import read_binary
    from .consumer import unused_requirements
    from ..wheelfile import open_wheel, read_member, safe_members

    needed: list[str] = []
    with open_wheel(wheel) as zf:
        for info in safe_members(zf, str(wheel)):
            if info.is_dir() or not _BINARY.search(info.filename):
                continue
            try:
                b = read_binary(read_member(zf, info, str(wheel)), info.filename)
            except DllregError:
                continue  # not a binary dllreg reads (a linker script, a data file)
            needed += [*b.needed, *b.delay_needed]
    dirs = site_dirs()
    libraries = {}
    for req in active:
        lib = find_library(req.name, dirs)
        if lib is not None:
            libraries[req.name] = (tuple(f.soname for f in lib.manifest.libraries),
                                   tuple(r.name for r in lib.manifest.requires))
    unused = unused_requirements(needed, libraries, active, config.dlopen)
    if unused:
        names = ", ".join(str(r) for r in unused)
        runtime = "; ".join(f"{r.name}: {', '.join(libraries.get(r.name, ((), ()))[0]) or '?'}"
                            for r in unused)
        raise BuildError(
            f"{wheel.name}: no binary in the wheel needs {names} (runtime names {runtime}), which "
            "[tool.dllreg] requires: the build did not link it (did the backend find it? e.g. numpy "
            "needs -Dblas=scipy-openblas -Dlapack=scipy-openblas, docs/meson.md), so the wheel would "
            "install and preload a library nothing uses. Link against it (python -m dllreg pkg-config "
            f"{unused[0].name} --libs), drop it from requires, or, if the package opens it itself "
            f"through _dlls.path(), add dlopen = [\"{unused[0].name}\"] to [tool.dllreg]")


_BINARY = re.compile(r"\.(so|pyd|dll|dylib)$|\.so\.\d+", re.IGNORECASE)


def build_wheel(wheel_directory: str, config_settings: dict[str, Any] | None = None,
                metadata_directory: str | None = None) -> str:
    return _build("build_wheel", wheel_directory, config_settings)


def build_editable(wheel_directory: str, config_settings: dict[str, Any] | None = None,
                   metadata_directory: str | None = None) -> str:
    return _build("build_editable", wheel_directory, config_settings)


__all__ = [
    "build_editable", "build_sdist", "build_wheel", "get_requires_for_build_editable",
    "get_requires_for_build_sdist", "get_requires_for_build_wheel",
]
