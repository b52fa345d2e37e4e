"""A hatchling build hook: dllreg consumers that keep hatchling as their backend.

```toml
[build-system]
requires = ["hatchling", "dllreg"]
build-backend = "hatchling.build"

[tool.hatch.build.hooks.dllreg]
requires = ["openblas>=0.3"]   # as [tool.dllreg] requires
packages = ["mypkg"]           # the packages that get a _dlls.py stub
```

The hook uses dllreg's public API (``render_stub``, the consumer record) and adds the
``Requires-Dist`` lines; the package's ``__init__.py`` must import the stub first itself
(``from . import _dlls``), since a build hook cannot edit sources. Registered through the
``hatch`` entry point in dllreg's pyproject.toml.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface
from hatchling.plugin import hookimpl

from .config import parse_config
from .consumer import consumer_record, insert_stub_import
from ..errors import ConfigError, DllregError
from ..recipes.schema import load_recipes
from ..env.registry import CONSUMER_RECORD
from ..stub import IMPORT_LINE, STUB_FILE, render_stub
from ..recipes.wheelprovider import consumer_requirements, resolve_choices


class DllregBuildHook(BuildHookInterface):  # type: ignore[misc]  # hatchling is untyped here
    PLUGIN_NAME = "dllreg"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        table = {"backend": "hatchling.build", "requires": self.config.get("requires", []),
                 "providers": self.config.get("providers", {})}
        config = parse_config({"tool": {"dllreg": table}})
        try:  # as dllreg.build: a recipe's PyPI wheel by default (docs/pyproject.md, providers)
            choices = resolve_choices(config.requires, dict(config.providers), load_recipes())
        except DllregError as exc:
            raise ConfigError(f"pyproject.toml: [tool.hatch.build.hooks.dllreg] {exc}") from None
        packages = self.config.get("packages")
        if not isinstance(packages, list) or not packages:
            raise ConfigError("pyproject.toml: [tool.hatch.build.hooks.dllreg] packages: list the "
                              'packages that get a _dlls.py stub, e.g. packages = ["mypkg"]')
        self._tmp = tempfile.TemporaryDirectory(prefix="dllreg-hatch-")
        out = Path(self._tmp.name)
        stubs = []
        for package in packages:
            rel = "/".join(str(package).split("."))
            init = Path(self.root, self._source_dir(rel), "__init__.py")
            text = init.read_text(encoding="utf-8") if init.is_file() else None
            if text is None or insert_stub_import(text, str(init)) != text:
                raise ConfigError(
                    f"{init}: make {IMPORT_LINE.strip()!r} its first statement (after the "
                    "docstring and __future__ imports); a build hook cannot edit your sources")
            stub = out / rel / STUB_FILE
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text(render_stub(str(package), config.active_requires(), choices),
                            encoding="utf-8")
            build_data["force_include"][str(stub)] = f"{rel}/{STUB_FILE}"
            stubs.append(f"{rel}/{STUB_FILE}")
        record = out / CONSUMER_RECORD
        record.write_text(consumer_record(config.requires, stubs), encoding="utf-8")
        build_data["extra_metadata"][str(record)] = CONSUMER_RECORD
        build_data["dependencies"].extend(consumer_requirements(config.requires, choices))

    def _source_dir(self, rel: str) -> str:
        # src layout or flat layout, as hatchling itself finds packages
        return f"src/{rel}" if Path(self.root, "src", rel).is_dir() else rel

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        if getattr(self, "_tmp", None) is not None:
            self._tmp.cleanup()


@hookimpl  # type: ignore[untyped-decorator]
def hatch_register_build_hook() -> type[DllregBuildHook]:
    return DllregBuildHook
