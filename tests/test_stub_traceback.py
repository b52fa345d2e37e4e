"""Tracebacks through the stub's compiled-on-first-need code show the lines that raised.

The cold section and the lazily compiled matcher and messages are carried as compressed or
quoted source; a traceback through them must still point at real lines of ``_dlls.py``
(CPython's own excepthook reads the file, the traceback module goes through linecache).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import has_gcc
from test_stub_runtime import add_consumer, add_library, python

pytestmark = pytest.mark.skipif(not has_gcc(), reason="needs gcc")

# A footer specifier the fast path cannot decide and the full matcher refuses: the error is
# raised three functions deep in the lazily compiled matcher, called from the cold section.
EXPECTED = {
    "_require": "if not _satisfies(spec, version):",
    "_satisfies": "return spec_contains(spec, version) if decided is None else decided",
    "_vm_compile": 'raise ValueError(f"Invalid specifier: {item!r}")',
}


def frames(text: str, stub: Path) -> dict[str, str]:
    """function -> the source line shown for it, for the frames in ``stub``."""
    lines = text.splitlines()
    out = {}
    for i, line in enumerate(lines):
        m = re.match(r'  File "(.*)", line \d+, in (\w+)$', line)
        if m and m.group(1) == str(stub):
            out[m.group(2)] = lines[i + 1].strip() if i + 1 < len(lines) else ""
    return out


def broken_consumer(tmp_path: Path) -> tuple[Path, Path]:
    site = tmp_path / "site"
    add_library(tmp_path, site)
    add_consumer(tmp_path, site, "cpkg", "qsum>=3.1")
    stub = site / "cpkg" / "_dlls.py"
    stub.write_text(stub.read_text().replace("('qsum', '>=3.1')", "('qsum', '>=3.1,=<4')"))
    return site, stub


@pytest.mark.parametrize("printer", ["excepthook", "traceback-module"])
def test_a_traceback_shows_the_line_that_raised(tmp_path: Path, printer: str) -> None:
    site, stub = broken_consumer(tmp_path)
    code = "import cpkg" if printer == "excepthook" else (
        "import traceback\ntry:\n    import cpkg\nexcept ValueError:\n"
        "    print(traceback.format_exc())")
    r = python(code, site)
    text = r.stderr if printer == "excepthook" else r.stdout
    assert "ValueError: Invalid specifier: '=<4'" in text, r
    shown = frames(text, stub)
    assert {f: shown.get(f) for f in EXPECTED} == EXPECTED, text


def test_the_copies_cost_nothing_in_the_pyc(tmp_path: Path) -> None:
    # The plain copies at the end of _dlls.py are string statements the compiler drops.
    _, stub = broken_consumer(tmp_path)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(stub)], check=True)
    pyc = next((stub.parent / "__pycache__").glob("_dlls.*.pyc")).read_bytes()
    assert b"def _require(" in stub.read_bytes() and b"def _require(" not in pyc
    assert len(pyc) < len(stub.read_bytes()) / 2
