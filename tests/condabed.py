"""A conda test bed: real conda packages, a local channel, and installs that run link scripts.

conda, mamba and micromamba cannot be installed here; py-rattler (the library behind pixi and
rattler-build) can, and it installs conda packages the way conda does, link scripts included
(see ../shared/FINDINGS.md). Usage from a test module::

    from condabed import CondaBed, hook_scripts

    bed = CondaBed(tmp_path / "conda")
    bed.publish("libfoo", "1.0", {"lib/libfoo.so.1": built_lib,
                                  **hook_scripts("libfoo", "foo", ["lib/libfoo.so.1"])})
    run = bed.install(prefix, ["libfoo==1.0"])   # the prefix then holds exactly what the specs solve to
    assert ("post-link", "libfoo", True) in run.scripts
    bed.install(prefix, [])                      # removes every conda package from the prefix

Packages are ``.tar.bz2`` files written with the standard library (``info/index.json``,
``info/paths.json``, ``info/files`` and the payload); the channel is indexed, solved and
installed by py-rattler in a child process (``python condabed.py REQUEST``), because a process
that ends right after a link-script install can crash at interpreter exit: the child reports
as JSON and leaves with ``os._exit``. rattler only warns when a link script fails (real conda
aborts the transaction), so the child also records each script's outcome through rattler's
reporter; tests should still assert on effects.

Like conda, rattler reads ``$PREFIX/.messages.txt`` after each link script, logs it (through Rust
tracing, which py-rattler does not surface) and deletes it. To see what the scripts said, the bed
makes ``.messages.txt`` a symlink into the bed before a transaction: the script appends through
it, rattler deletes only the link, and ``Run.messages`` is the target's text. That captures the
messages of the first script that writes any (rattler removes the link then).

The prefix may already hold other files: rattler installs into a venv (``bin/python``, ``lib/``)
and leaves everything it did not install alone; it creates ``conda-meta/`` itself. Link scripts
run under bash with the caller's working directory, and get PREFIX, PKG_NAME, PKG_VERSION and
PKG_BUILDNUM.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

ROOT = Path(__file__).resolve().parent.parent
HOOKS = ROOT / "hooks" / "conda"
TIMEOUT = 120.0

Payload = Union[bytes, Path]


def subdir() -> str:
    """This machine's conda subdir (``linux-64``, ``linux-aarch64``, ...)."""
    from rattler import Subdir

    return str(Subdir.current())


def hook_scripts(package: str, library: str, files: Sequence[str]) -> dict[str, bytes]:
    """dllreg's link scripts as a packager ships them: the two marked variables edited.

    Returns package paths (``bin/.<package>-post-link.sh`` ...) mapped to the script bytes.
    """
    out = {}
    for kind in ("post-link", "pre-unlink"):
        text = (HOOKS / f"{kind}.sh").read_text()
        for var, value in (("DLLREG_NAME", library), ("DLLREG_FILES", " ".join(files))):
            text, n = re.subn(rf'^{var}="[^"\n]*"$', f'{var}="{value}"', text, flags=re.M)
            if n != 1:
                raise AssertionError(f"hooks/conda/{kind}.sh: {var} is not set on exactly one line")
        out[f"bin/.{package}-{kind}.sh"] = text.encode()
    return out


def write_package(directory: Path, name: str, version: str, files: Mapping[str, Payload], *,
                  build_number: int = 0, depends: Sequence[str] = ()) -> Path:
    """Write ``NAME-VERSION-BUILD.tar.bz2`` (conda's v1 format) into ``directory``."""
    platform = subdir()
    build = f"h{build_number}"
    now = time.time()
    index = {"name": name, "version": version, "build": build, "build_number": build_number,
             "depends": list(depends), "license": "MIT", "subdir": platform,
             "platform": platform.split("-")[0], "arch": platform.split("-")[1],
             "timestamp": int(now * 1000)}
    payload = {}
    for path, src in files.items():
        data = src.read_bytes() if isinstance(src, Path) else src
        # Scripts and shared libraries are executable in real packages; keep that here.
        executable = path.startswith("bin/") or ".so" in Path(path).name
        payload[path] = (data, 0o755 if executable else 0o644)
    paths = [{"_path": p, "path_type": "hardlink", "sha256": hashlib.sha256(d).hexdigest(),
              "size_in_bytes": len(d)} for p, (d, _) in payload.items()]
    info = {"info/index.json": json.dumps(index, indent=2).encode(),
            "info/paths.json": json.dumps({"paths": paths, "paths_version": 1}, indent=2).encode(),
            "info/files": "".join(f"{p}\n" for p in payload).encode()}
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"{name}-{version}-{build}.tar.bz2"
    with tarfile.open(out, "w:bz2") as tf:
        for path, (data, mode) in [*((p, (d, 0o644)) for p, d in info.items()), *payload.items()]:
            member = tarfile.TarInfo(path)
            member.size, member.mode, member.mtime = len(data), mode, int(now)
            tf.addfile(member, io.BytesIO(data))
    return out


@dataclass(frozen=True)
class Run:
    """What one rattler transaction did, as its reporter saw it."""

    records: list[tuple[str, str]]          # the solution: (name, version)
    events: list[tuple[str, str]]           # ("unlink" | "link", package), in order
    scripts: list[tuple[str, str, bool]]    # ("post-link" | "pre-unlink", package, succeeded)
    seconds: float
    stderr: str                             # rattler's warnings (a failed link script, ...)
    messages: str                           # what the first talking script left in .messages.txt


class CondaBed:
    """A local channel plus a package cache under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.channel = root / "channel"
        self.cache = root / "pkgs"
        self._runs = 0
        for d in (self.channel / subdir(), self.channel / "noarch", self.cache):
            d.mkdir(parents=True, exist_ok=True)

    def publish(self, name: str, version: str, files: Mapping[str, Payload], *,
                build_number: int = 0, depends: Sequence[str] = ()) -> Path:
        """Write a package into the channel (indexed by the next install)."""
        return write_package(self.channel / subdir(), name, version, files,
                             build_number=build_number, depends=depends)

    def install(self, prefix: Path, specs: Sequence[str]) -> Run:
        """Make ``prefix`` hold exactly what ``specs`` solve to, link scripts executed.

        An upgrade is ``install(prefix, ["libfoo==2.0"])`` over 1.0 (rattler unlinks the old
        package, running its pre-unlink script, then links the new one); ``install(prefix, [])``
        removes every conda package.
        """
        self._runs += 1
        kept = self.root / f"messages-{self._runs}.txt"
        link = prefix / ".messages.txt"
        if prefix.is_dir() and not link.exists() and not link.is_symlink():
            link.symlink_to(kept)
        request = json.dumps({"channel": str(self.channel), "cache": str(self.cache),
                              "prefix": str(prefix), "specs": list(specs)})
        proc = subprocess.run([sys.executable, __file__, request], capture_output=True, text=True,
                              cwd=self.root, timeout=TIMEOUT)
        if proc.returncode != 0:
            raise AssertionError(f"rattler transaction {specs} into {prefix} failed "
                                 f"({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        if link.is_symlink():  # no script wrote through it
            link.unlink()
        out = json.loads(proc.stdout.splitlines()[-1])
        return Run(records=[tuple(r) for r in out["records"]],
                   events=[tuple(e) for e in out["events"]],
                   scripts=[tuple(s) for s in out["scripts"]],
                   seconds=out["seconds"], stderr=proc.stderr,
                   messages=kept.read_text() if kept.exists() else "")


def installed(prefix: Path) -> list[tuple[str, str]]:
    """(name, version) of the conda packages recorded in ``prefix/conda-meta``."""
    meta = prefix / "conda-meta"
    found = []
    for record in sorted(meta.glob("*.json")) if meta.is_dir() else []:
        data = json.loads(record.read_text())
        found.append((data["name"], data["version"]))
    return found


# ---- the child process ---------------------------------------------------------------------

def _reporter() -> Any:
    """A rattler reporter that records links, unlinks and link-script outcomes."""
    from rattler.install import InstallerReporter

    class Reporter(InstallerReporter):  # the base's other callbacks are no-ops
        def __init__(self) -> None:
            self.events: list[tuple[str, str]] = []
            self.scripts: list[list[Any]] = []

        def on_unlink_start(self, operation: int, package_name: str) -> int:
            self.events.append(("unlink", package_name))
            return 0

        def on_link_start(self, operation: int, package_name: str) -> int:
            self.events.append(("link", package_name))
            return 0

        def on_post_link_start(self, package_name: str, script_path: str) -> int:
            self.scripts.append(["post-link", package_name, False])
            return len(self.scripts) - 1

        def on_pre_unlink_start(self, package_name: str, script_path: str) -> int:
            self.scripts.append(["pre-unlink", package_name, False])
            return len(self.scripts) - 1

        def on_post_link_complete(self, index: int, success: bool) -> None:
            self.scripts[index][2] = success

        def on_pre_unlink_complete(self, index: int, success: bool) -> None:
            self.scripts[index][2] = success

    return Reporter()  # type: ignore[abstract]  # the base's empty bodies look abstract to mypy


async def _transact(request: dict[str, Any]) -> dict[str, Any]:
    import rattler
    from rattler.index import index_fs

    start = time.perf_counter()
    channel = Path(request["channel"])
    await index_fs(channel)
    records = []
    if request["specs"]:
        records = await rattler.solve([rattler.Channel(str(channel))], request["specs"],
                                      platforms=[rattler.Subdir(subdir()), rattler.Subdir("noarch")],
                                      virtual_packages=[])
    reporter = _reporter()
    await rattler.install(records, request["prefix"], cache_dir=Path(request["cache"]),
                          execute_link_scripts=True, show_progress=False, reporter=reporter)
    return {"records": [(r.name.normalized, str(r.version)) for r in records],
            "events": reporter.events, "scripts": reporter.scripts,
            "seconds": round(time.perf_counter() - start, 3)}


def _child(request: str) -> None:
    import logging
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    try:
        result = _transact_sync(json.loads(request))
    except Exception as exc:  # the parent shows this with the exit status
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        os._exit(1)
    print(json.dumps(result), flush=True)
    sys.stderr.flush()
    # Skip interpreter finalization: after a link-script install it can abort in rattler's
    # threads (FINDINGS). Everything is on disk by now; rattler's install has returned.
    os._exit(0)


def _transact_sync(request: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_transact(request))


if __name__ == "__main__":
    _child(sys.argv[1])
