"""The consumer's ``[tool.dllreg]`` table in pyproject.toml: parsing and validation.

Reference: docs/pyproject.md. Every error names pyproject.toml, the key and the fix.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from packaging.utils import canonicalize_name

from ..errors import ConfigError, DllregError
from ..names import NativeRequirement, library_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_KEYS = {"backend", "backend-path", "requires", "providers", "dlopen"}
_EXAMPLE = """[tool.dllreg]
backend = "setuptools.build_meta"
requires = ["openblas>=0.3"]"""


@dataclasses.dataclass(frozen=True)
class ConsumerConfig:
    backend: str
    backend_path: tuple[str, ...]
    requires: tuple[NativeRequirement, ...]
    #: library -> the distribution that must provide it (docs/pyproject.md); checked against
    #: the recipes by the backend
    providers: tuple[tuple[str, str], ...] = ()
    #: required libraries the package opens itself through ``_dlls.path()`` (ctypes, cffi), so
    #: no binary of the wheel links them (docs/pyproject.md)
    dlopen: tuple[str, ...] = ()

    def active_requires(self) -> tuple[NativeRequirement, ...]:
        """Requirements whose marker holds for this build's interpreter and platform."""
        return tuple(r for r in self.requires if r.applies())


def _fail(key: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"pyproject.toml: [tool.dllreg] {key}: {problem}; {fix}")


def parse_config(pyproject: dict[str, Any]) -> ConsumerConfig:
    """Validate the ``[tool.dllreg]`` table of an already-parsed pyproject.toml."""
    tool = pyproject.get("tool", {})
    table = tool.get("dllreg") if isinstance(tool, dict) else None
    if not isinstance(table, dict):
        raise ConfigError(
            "pyproject.toml: no [tool.dllreg] table; the dllreg.build backend needs one, e.g.\n"
            + _EXAMPLE
        )
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise _fail(", ".join(unknown), "unknown key", f"allowed keys are {', '.join(sorted(_KEYS))}")
    backend = table.get("backend")
    if backend is None:
        raise _fail("backend", "missing", 'name the real build backend, e.g. backend = '
                    '"setuptools.build_meta"')
    if not isinstance(backend, str) or not backend.strip() or backend.startswith("dllreg.build"):
        raise _fail("backend", f"{backend!r} is not a usable backend name",
                    'write a module path such as "setuptools.build_meta" or "mesonpy"')
    backend_path = table.get("backend-path", [])
    if not isinstance(backend_path, list) or not all(isinstance(p, str) for p in backend_path):
        raise _fail("backend-path", "must be a list of strings", 'e.g. backend-path = ["_build"]')
    raw = table.get("requires", [])
    if not isinstance(raw, list):
        raise _fail("requires", f"must be a list of strings, not {type(raw).__name__}",
                    'e.g. requires = ["openblas>=0.3"]')
    requires: list[NativeRequirement] = []
    for i, item in enumerate(raw):
        try:
            req = NativeRequirement.parse(item)
        except DllregError as exc:
            raise _fail(f"requires[{i}]", str(exc), 'e.g. "openblas>=0.3"') from None
        if any(r.name == req.name for r in requires):
            raise _fail(f"requires[{i}]", f"library {req.name} is listed twice",
                        "merge the two specifiers into one entry")
        requires.append(req)
    raw_providers = table.get("providers", {})
    if not isinstance(raw_providers, dict) or not all(
            isinstance(v, str) and v.strip() for v in raw_providers.values()):
        raise _fail("providers", "must be a table of library = distribution name",
                    'e.g. providers = {openblas = "dllreg-lib-openblas"}')
    providers = []
    for key, value in raw_providers.items():
        try:
            providers.append((library_name(key), canonicalize_name(value.strip())))
        except DllregError as exc:
            raise _fail(f"providers.{key}", str(exc), 'e.g. openblas = "scipy-openblas32"') from None
    raw_dlopen = table.get("dlopen", [])
    if not isinstance(raw_dlopen, list) or not all(isinstance(v, str) for v in raw_dlopen):
        raise _fail("dlopen", "must be a list of library names", 'e.g. dlopen = ["openblas"]')
    dlopen = []
    for i, value in enumerate(raw_dlopen):
        try:
            name = library_name(value)
        except DllregError as exc:
            raise _fail(f"dlopen[{i}]", str(exc), 'e.g. "openblas"') from None
        if name not in {r.name for r in requires}:
            raise _fail(f"dlopen[{i}]", f"{name} is not in requires",
                        "list only required libraries the package opens itself through _dlls.path()")
        dlopen.append(name)
    return ConsumerConfig(backend.strip(), tuple(backend_path), tuple(requires), tuple(providers),
                          tuple(dlopen))


def load_config(source_dir: Path) -> ConsumerConfig:
    path = source_dir / "pyproject.toml"
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; dllreg.build reads [tool.dllreg] from it") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    config = parse_config(data)
    if "external" not in data:
        return config
    # PEP 725: [external] DepURLs map to registry libraries and must agree with [tool.dllreg].
    from ..recipes.pep725 import reconcile, requirements_from_external
    from ..recipes.schema import load_recipes

    try:
        external = requirements_from_external(data, load_recipes(), tool_requires=config.requires)
        requires = reconcile(config.requires, external)
    except DllregError as exc:
        raise ConfigError(str(exc)) from None
    return dataclasses.replace(config, requires=tuple(requires))


def import_backend(config: ConsumerConfig, source_dir: Path) -> ModuleType:
    """Import the inner backend named by ``backend`` (``module`` or ``module:object``)."""
    module_name, _, attr = config.backend.partition(":")
    added = [str((source_dir / p).resolve()) for p in config.backend_path]
    for p in reversed(added):
        if p not in sys.path:
            sys.path.insert(0, p)
    try:
        obj: Any = importlib.import_module(module_name)
        for part in filter(None, attr.split(".")):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise _fail(
            "backend", f"cannot import {config.backend!r} ({exc})",
            "add the package that provides it to [build-system] requires",
        ) from None
    return obj  # type: ignore[no-any-return]
