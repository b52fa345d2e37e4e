"""Wheel platform tags: their legacy spellings, and the binaries they claim to hold (pure decisions)."""

from __future__ import annotations

import re
from collections.abc import Collection

from ..errors import PackageLibError

# Architecture names as the binary readers report them -> the wheel tag's architecture part.
_LINUX_ARCH = {"x86_64": "x86_64", "aarch64": "aarch64", "i386": "i686", "ppc64le": "ppc64le",
               "s390x": "s390x", "arm": "armv7l", "riscv64": "riscv64"}
_WINDOWS_TAG = {"x86_64": "win_amd64", "arm64": "win_arm64", "i386": "win32"}
_MACOS_ARCHES = {"x86_64": {"x86_64"}, "arm64": {"arm64"}, "universal2": {"x86_64", "arm64"},
                 "intel": {"x86_64", "i386"}, "i386": {"i386"}}
_FORMAT_OF_OS = {"linux": "elf", "manylinux": "elf", "musllinux": "elf", "win": "pe",
                 "macosx": "macho"}


# PEP 600: the manylinux tags before it are aliases of glibc versions.
LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_LEGACY = re.compile(r"(manylinux1|manylinux2010|manylinux2014)_(\w+)")


def normalize_platform(tag: str) -> str:
    """One platform tag in its PEP 600 spelling: ``manylinux2014_x86_64`` -> ``manylinux_2_17_x86_64``
    (likewise ``manylinux1`` = 2_5 and ``manylinux2010`` = 2_12); any other tag unchanged."""
    m = _LEGACY.fullmatch(tag)
    if not m:
        return tag
    major, minor = LEGACY_MANYLINUX[m[1]]
    return f"manylinux_{major}_{minor}_{m[2]}"


def platforms_of(tags: str) -> list[str]:
    """The tags of a ``.``-joined compound platform tag, each normalized, without repeats:
    ``manylinux_2_17_x86_64.manylinux2014_x86_64`` -> ``["manylinux_2_17_x86_64"]``."""
    return list(dict.fromkeys(normalize_platform(t) for t in tags.split(".")))


def default_tag(fmt: str, arches: Collection[str], min_os: str | None = None) -> str:
    """The tag for binaries that came from a directory (no source wheel to copy it from)."""
    arch = sorted(arches)[0]
    if fmt == "elf":
        return f"linux_{_LINUX_ARCH.get(arch, arch)}"
    if fmt == "pe":
        if arch not in _WINDOWS_TAG:
            raise PackageLibError(f"no Windows wheel tag for architecture {arch}")
        return _WINDOWS_TAG[arch]
    major, _, minor = (min_os or "11.0").partition(".")
    macos_arch = "universal2" if set(arches) == {"x86_64", "arm64"} else arch
    return f"macosx_{major}_{minor or '0'}_{macos_arch}"


def _tag_os_arch(tag: str) -> tuple[str, set[str]]:
    """('elf'|'pe'|'macho', the reader arch names the tag admits) for one platform tag."""
    tag = normalize_platform(tag)
    if tag in ("win32", "win_amd64", "win_arm64"):
        return "pe", {k for k, v in _WINDOWS_TAG.items() if v == tag}
    os_name = tag.split("_", 1)[0]
    fmt = _FORMAT_OF_OS.get(os_name)
    if fmt is None:
        raise PackageLibError(f"platform tag {tag!r}: unknown operating system {os_name!r}")
    if fmt == "macho":
        arch = tag.split("_", 3)[-1] if tag.count("_") >= 3 else ""
        if arch not in _MACOS_ARCHES:
            raise PackageLibError(f"platform tag {tag!r}: unknown macOS architecture {arch!r}")
        return fmt, _MACOS_ARCHES[arch]
    for reader_arch, tag_arch in _LINUX_ARCH.items():
        if tag.endswith("_" + tag_arch):
            return fmt, {reader_arch}
    raise PackageLibError(f"platform tag {tag!r}: unknown architecture")


def check_tag(tags: str, fmt: str, arches: Collection[str], origin: str) -> None:
    """Refuse a wheel whose platform tag(s) and binaries disagree (format or architecture)."""
    for tag in tags.split("."):  # each named as the wheel spells it
        tag_fmt, admitted = _tag_os_arch(tag)
        if tag_fmt != fmt:
            raise PackageLibError(
                f"{origin}: platform tag {tag} is for {tag_fmt.upper()} binaries, but the "
                f"libraries are {fmt.upper()}; fix --platform or the source")
        wrong = set(arches) - admitted if fmt != "macho" else admitted - set(arches)
        if wrong or (fmt != "macho" and not set(arches) & admitted):
            raise PackageLibError(
                f"{origin}: platform tag {tag} does not match the libraries' architecture "
                f"({', '.join(sorted(arches))}); fix --platform or the source")
