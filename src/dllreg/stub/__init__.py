"""Render a consumer's ``_dlls.py`` from the runtime template (``stub/_runtime.py``).

The generated file is the runtime module's source, its cold section compressed, with a
footer naming the consumer's libraries. The template's ``# dllreg-stub: lazy`` imports (the
full version matcher and the error messages) become copies of those modules' source that
are compiled on first use:
the stub cannot import anything of dllreg's, and a successful import never pays for them.
This is the public API for other backends and build hooks: ``render_stub``.

The package holds the template, ``_runtime`` with ``_vmatch`` and ``_errors`` (builtin modules
only: pasted into every consumer's ``_dlls.py``, they run inside other packages' imports),
and this renderer, which writes the recipes' PyPI wheel layouts (env/wheelprovider.py) into
each stub: it may import env, recipes and the ground floor.
"""

from __future__ import annotations

import dataclasses
import re
import zlib
from collections.abc import Iterable, Mapping
from importlib.resources import files

from .. import __version__
from ..errors import DllregError
from ..names import NativeRequirement

STUB_MODULE = "_dlls"
STUB_FILE = STUB_MODULE + ".py"
#: The line that imports the stub, inserted into the package's ``__init__.py``.
IMPORT_LINE = f"from . import {STUB_MODULE}  # dllreg: preload native libraries first\n"

_COLD_BEGIN = "# dllreg-stub: cold begin\n"
_COLD_END = "# dllreg-stub: cold end\n"
_LAZY = re.compile(r"^from \.(_\w+) import (\w+)  # dllreg-stub: lazy\n", re.MULTILINE)
_LAZY_TEMPLATE = '''_SRC{module} = {source!r}


def {func}(*args, _ns={{}}, **kwargs):
    if not _ns:
        exec(compile(_SRC{module}, __file__, "exec"), _ns)
    return _ns[{func!r}](*args, **kwargs)
'''
# Tracebacks: the generated file ends with the plain source of the cold section and of each
# lazy module, as string statements (the compiler drops them: not in the .pyc), and each
# compiled text starts with as many blank lines as precede its copy, so a traceback (read
# from the file by CPython and by linecache) shows the line that raised.
_SOURCE_NOTE = ("\n\n# The source of the sections above compiled on first need, for tracebacks only "
                "(not in the .pyc):\n")


def _source(module: str) -> str:
    return files(__package__).joinpath(module).read_text(encoding="utf-8")


def _literal(source: str) -> str:
    if "\'\'\'" in source:  # pragma: no cover - guards the template itself
        raise AssertionError("a section of the stub contains \'\'\', which its copy cannot quote")
    return f"r\'\'\'\n{source}\n\'\'\'\n"


def pypi_footer(requires: Iterable[NativeRequirement], choices: Mapping[str, str] | None = None) -> str:
    """``_PYPI = {...}``: where the PyPI wheel providers of these libraries (and of their
    dependencies) keep them on this platform family (docs/recipes.md), whichever
    distribution the consumer chose: any copy installed is found, so one is mapped."""
    from ..recipes.schema import load_recipes
    from ..recipes.wheelprovider import requirement_for, resolve_choices, stub_layouts

    book = load_recipes()
    reqs = [dataclasses.replace(r, marker=None) for r in requires]
    chosen = {**resolve_choices(reqs, {}, book), **(choices or {})}
    lines = []
    for name, (stem, rule, libs, names, dist, deps) in stub_layouts([r.name for r in reqs],
                                                                     book).items():
        req = next((r for r in reqs if r.name == name), None)
        try:
            pip = requirement_for(req, chosen[name], book) if req else dist
        except DllregError:  # e.g. devendor's >=0.3.34.481.3 from a dllreg-lib copy's version
            pip = dist
        n = 0 if rule == "wheel" else int(rule[6:])
        lines.append(f"    {name!r}: ({stem!r}, {n}, {libs!r}, {names!r}, {deps!r}, {pip!r}),\n")
    return "_PYPI = {\n" + "".join(lines) + "}\n" if lines else ""


def render_stub(package: str, requires: Iterable[NativeRequirement],
                choices: Mapping[str, str] | None = None) -> str:
    """Source of ``<package>/_dlls.py`` preloading ``requires`` (markers already evaluated).

    ``package`` is the dotted name of the package that holds the stub; its depth sets
    where the stub looks for the consumer's own site directory. ``choices`` maps a library
    to the distribution the consumer requires for it (``[tool.dllreg] providers``): it only
    changes the pip command error messages suggest.
    """
    requires = list(requires)
    template = _source("_runtime.py")
    lazy = [(m, _source(m.group(1) + ".py")) for m in _LAZY.finditer(template)]
    # The cold section becomes source compiled on first need (_COLD, __getattr__ in the template).
    head, begin, rest = template.partition(_COLD_BEGIN)
    cold, end, tail = rest.partition(_COLD_END)
    if not (begin and end) or tail.strip() or not all(  # pragma: no cover - guards the template
            m.start() > len(head) for m, _ in lazy):
        raise AssertionError("_runtime.py must end with its cold section, lazy imports in it")
    entries = "".join(f"    ({r.name!r}, {r.specifier!r}),\n" for r in requires)
    footer = (
        f"\n\n# Generated by dllreg {__version__} for package {package!r}.\n"
        f"_REQUIRES = (\n{entries})\n{pypi_footer(requires, choices)}"
        f"_load_all({package!r}, __file__, {package.count('.')}, _REQUIRES)\n"
    )

    def cold_with(pads: list[int]) -> str:
        texts = iter(pads)
        return _LAZY.sub(lambda m: _LAZY_TEMPLATE.format(
            module=m.group(1), func=m.group(2),
            source="\n" * next(texts) + _source(m.group(1) + ".py")), cold)

    # The line counts below do not depend on the pads (a repr is one line, and so is _COLD's),
    # so the copies' first lines are known before the pads are filled in.
    first = ((head + "_COLD = b''\n").rstrip("\n").count("\n") + footer.count("\n")
             + _SOURCE_NOTE.count("\n") + 2)  # the cold copy's first line (1-based)
    starts, line = [], first + cold_with([0] * len(lazy)).rstrip("\n").count("\n") + 3
    for _, source in lazy:
        starts.append(line)
        line += source.rstrip("\n").count("\n") + 3
    cold = cold_with([n - 1 for n in starts])
    # Compressed: every import reads the .pyc, and 17 KB less of it is ~30 us (benchmarks);
    # the blank lines in front cost a few bytes.
    packed = zlib.compress(("\n" * (first - 1) + cold).encode(), 9)
    body = head + f"_COLD = {packed!r}\n"
    copies = _literal(cold.rstrip("\n")) + "".join(_literal(src.rstrip("\n")) for _, src in lazy)
    out = body.rstrip("\n") + footer + _SOURCE_NOTE + copies
    if "dllreg-stub: lazy" in out.partition(_SOURCE_NOTE)[0]:  # pragma: no cover - guard
        raise AssertionError("_runtime.py has a lazy import the renderer cannot paste")
    return out
