"""Finding the operating system's copy of a library, as the dynamic loader would (Linux).

``register --system NAME`` looks for the recipe's runtime names (SONAMEs) in the loader's
cache (``ldconfig -p``), the directories of ``/etc/ld.so.conf`` and the default trusted
directories, plus one level below the multiarch directories, where Debian keeps the
alternatives of BLAS/LAPACK builds (``openblas-pthread/libopenblas.so.0``). With ``root``
(a distribution tree unpacked elsewhere, e.g. with ``dpkg-deb -x``) every directory is taken
under it and the host's cache is not used.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sysconfig

# ldconfig -p: "\tlibfoo.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libfoo.so.1"
_CACHE_LINE = re.compile(r"^\s*(\S+)\s+\(([^)]*)\)(?:\s+OS ABI:[^=]*)?\s+=>\s+(\S.*)$")
# The loader's hwcap tag for this machine's word size / ABI, as ldconfig prints it.
_CACHE_ABI = {"x86_64": "x86-64", "aarch64": "AArch64", "ppc64le": "64bit", "s390x": "64bit"}


def parse_ld_cache(text: str, machine: str) -> dict[str, list[str]]:
    """runtime name -> paths, for this machine's ABI, from ``ldconfig -p`` output."""
    want = _CACHE_ABI.get(machine)
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = _CACHE_LINE.match(line)
        if m and (want is None or want in m.group(2).split(",")):
            out.setdefault(m.group(1), []).append(m.group(3).strip())
    return out


def parse_ld_conf(text: str) -> tuple[list[str], list[str]]:
    """(directories, include patterns) of one ld.so.conf file."""
    dirs, includes = [], []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("include "):
            includes += line.split()[1:]
        elif not line.startswith("hwcap "):
            dirs.append(line)
    return dirs, includes


def _conf_dirs(root: str, conf: str, depth: int = 0) -> list[str]:
    try:
        with open(root + conf, encoding="utf-8", errors="replace") as f:
            dirs, includes = parse_ld_conf(f.read())
    except OSError:
        return []
    for pattern in includes:
        if depth > 8:  # include loops
            break
        if not pattern.startswith("/"):
            pattern = os.path.join(os.path.dirname(conf), pattern)
        for path in sorted(glob.glob(root + pattern)):
            dirs += _conf_dirs(root, path[len(root):], depth + 1)
    return dirs


def search_dirs(root: str = "") -> list[str]:
    """Directories in the loader's order, then the multiarch directories' subdirectories."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    defaults = [d for m in ((multiarch,) if multiarch else ()) for d in (f"/lib/{m}", f"/usr/lib/{m}")]
    defaults += ["/lib64", "/usr/lib64", "/lib", "/usr/lib"]
    dirs = list(dict.fromkeys(_conf_dirs(root, "/etc/ld.so.conf") + defaults))
    out = [root + d for d in dirs]
    for d in defaults[:2]:
        try:
            subs = sorted(e.path for e in os.scandir(root + d) if e.is_dir(follow_symlinks=False))
        except OSError:
            continue
        out += subs
    return list(dict.fromkeys(out))


def find_system_library(runtime_names: list[str], root: str = "") -> list[str]:
    """Existing files carrying one of ``runtime_names``, best first."""
    found: list[str] = []
    if not root:
        try:
            text = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True,
                                  check=False, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            text = ""
        cache = parse_ld_cache(text, os.uname().machine)
        found += [p for n in runtime_names for p in cache.get(n, [])]
    for d in search_dirs(root.rstrip("/")):
        found += [os.path.join(d, n) for n in runtime_names if os.path.isfile(os.path.join(d, n))]
    return list(dict.fromkeys(os.path.normpath(p) for p in found))


def package_version(path: str) -> str | None:
    """The PEP 440 part of the version of the distribution package owning ``path`` (dpkg or
    rpm), e.g. 0.3.21 for Debian's 0.3.21+ds-4; None when no package manager knows it."""
    for owner, query in ((["dpkg-query", "-S", path], ["dpkg-query", "-W", "-f=${Version}"]),
                         (None, ["rpm", "-q", "--qf", "%{VERSION}", "-f", path])):
        try:
            if owner is not None:
                r = subprocess.run(owner, capture_output=True, text=True, check=False, timeout=30)
                if r.returncode != 0 or ":" not in r.stdout:
                    continue
                package = r.stdout.split(":", 1)[0].split(",")[0].strip()
                r = subprocess.run([*query, package], capture_output=True, text=True,
                                   check=False, timeout=30)
            else:
                r = subprocess.run(query, capture_output=True, text=True, check=False, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        version = upstream_version(r.stdout.strip()) if r.returncode == 0 else None
        if version:
            return version
    return None


def upstream_version(distro: str) -> str | None:
    """'1:0.3.21+ds-4' -> '0.3.21': the leading release numbers of the upstream version."""
    m = re.match(r"(?:\d+:)?(\d+(?:\.\d+)*)", distro)
    return m.group(1) if m else None
