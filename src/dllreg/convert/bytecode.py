"""``install``'s pip step with the bytecode compiled on every core while pip installs.

Never imported by dllreg: ``convert/install.py`` runs this file's source with the *target*
interpreter (``python -c``), so it uses the standard library only and runs on Python 3.9+.
Arguments: the pip install command line (JSON) and the names of the distributions it installs.
pip runs with ``--no-compile``; meanwhile each distribution whose RECORD has appeared (pip writes
it last) has its ``.py`` files compiled by a process per core, as pip compiles them
(``compileall.compile_file``: the interpreter's optimization level and invalidation mode). When
pip is done, one more pass compiles what is still missing or stale (a file that pip rewrote
after it was compiled is stale: ``compile_file`` checks), so the result does not depend on the
timing. Exit status: pip's when it failed; else 0 (a file that does not compile does not fail
the install, as with pip: it is counted, and the import compiles it or shows the error).
"""

from __future__ import annotations

import sys

if sys.path and sys.path[0] in ("", "."):  # python -c puts the current directory first
    del sys.path[0]

import compileall
import concurrent.futures
import contextlib
import csv
import functools
import json
import os
import re
import site
import subprocess
import sysconfig
import time
from collections.abc import Iterator

_POLL_S = 0.2


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def site_dirs() -> list[str]:
    """Where pip may install for this interpreter: its scheme's lib dirs, the user site."""
    found = [sysconfig.get_paths()[k] for k in ("purelib", "platlib")]
    with contextlib.suppress(AttributeError):  # an old virtualenv's site module has neither
        found += [*site.getsitepackages(), site.getusersitepackages()]
    return list(dict.fromkeys(os.path.realpath(d) for d in found if os.path.isdir(d)))


def installed(names: set[str]) -> dict[str, list[str]]:
    """Each complete (RECORD written) dist-info of the named distributions -> its .py files."""
    out: dict[str, list[str]] = {}
    for home in site_dirs():
        for entry in os.scandir(home):
            if not entry.name.endswith(".dist-info"):
                continue
            if canon(entry.name[:-len(".dist-info")].split("-")[0]) not in names:
                continue
            try:
                with open(os.path.join(entry.path, "RECORD"), newline="", encoding="utf-8") as f:
                    rows = list(csv.reader(f))
            except OSError:  # pip has not finished it yet
                continue
            files = []
            for row in rows:
                rel = row[0] if row else ""
                if rel.endswith(".py") and ".." not in rel.replace("\\", "/").split("/"):
                    path = os.path.join(home, rel)
                    if os.path.isfile(path):
                        files.append(path)
            out[entry.path] = files
    return out


def main(argv: list[str]) -> int:
    pip = json.loads(argv[0])
    names = {canon(n) for n in argv[1:]}
    compile_one = functools.partial(compileall.compile_file, quiet=1)
    workers = max(1, min(os.cpu_count() or 1, 32))
    done: set[str] = set()
    batches: list[tuple[list[str], Iterator[bool]]] = []  # later batches have the last word
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        proc = subprocess.Popen(pip)
        while True:
            finished = proc.poll() is not None
            for where, files in installed(names).items():
                if where not in done or finished:
                    done.add(where)
                    # once pip is done, every file again: compile_file skips the fresh ones
                    batches.append((files, pool.map(compile_one, files, chunksize=16)))
            if finished:
                break
            time.sleep(_POLL_S)
        ok: dict[str, bool] = {}
        for files, results in batches:
            ok.update(zip(files, results))
    if proc.returncode != 0:
        return proc.returncode
    failed = sum(not v for v in ok.values())
    note = f"; {failed} did not compile" if failed else ""
    sys.stderr.write(f"dllreg: compiled the bytecode of {len(ok)} file(s) on {workers} core(s) "
                     f"while pip installed{note}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
