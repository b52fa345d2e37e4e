"""Relocatable pkg-config files for registry libraries: writing and evaluating them.

``python -m dllreg pkg-config`` evaluates the installed ``.pc`` file itself, so the
file is the single source of the flags whether a build asks pkg-config or dllreg.
"""

from __future__ import annotations

import re
import shlex

from ..errors import DllregError
from .manifest import Manifest

_VAR = re.compile(r"\$\{([A-Za-z0-9_.]+)\}")
_MAX_VALUE = 64 * 1024


def link_flags(manifest: Manifest, platform: str) -> str:
    """How a consumer links the principal (last) library, by its runtime name, with no RPATH."""
    principal = manifest.libraries[-1]
    file = principal.path.rsplit("/", 1)[-1]
    if platform.startswith("macosx"):  # the consumer records the dylib's install name
        return "${libdir}/" + file
    if platform.startswith("win"):
        stem = file[:-4].lower()  # libfoo.dll -> libfoo
        for lib in manifest.import_libraries:
            base = lib.rsplit("/", 1)[-1]
            name = base[: -len(".dll.a")] if base.lower().endswith(".dll.a") else base[:-4]
            if name.lower() in (stem, stem.removeprefix("lib")):
                # GNU ld's -lNAME tries libNAME.dll.a, NAME.dll.a, ..., NAME.lib
                return f"-L${{libdir}} -l{name.removeprefix('lib')}"
        return "${prefix}/" + principal.path  # GNU ld can link against the DLL itself
    # GNU ld's -l:FILE records the file's SONAME as DT_NEEDED, so versioned files without a
    # lib<name>.so development link still work; -rpath-link lets ld find their own needs.
    return f"-L${{libdir}} -l:{file} -Wl,-rpath-link,${{libdir}}"


def render_pc(manifest: Manifest, extra_cflags: str = "", *, prefix: str = "${pcfiledir}/../..",
              libdir: str = "${prefix}/lib", includedir: str | None = None) -> str:
    """The ``.pc`` text, installed at ``<libdir>/pkgconfig/NAME.pc``: relocatable by default;
    registrations of external libraries pass absolute directories (and ``includedir`` to
    compile against headers they do not carry)."""
    requires = ", ".join(
        f"{r.name} {op} {v}".strip()
        for r in manifest.requires
        for op, v in _pc_constraints(r.specifier)
    ) or ", ".join(r.name for r in manifest.requires)
    include = "-I${includedir}" if manifest.headers or includedir else ""
    cflags = " ".join(x for x in (include, extra_cflags) if x)
    lines = [
        f"prefix={prefix}",
        f"libdir={libdir}",
        f"includedir={includedir or '${prefix}/include'}",
        "",
        f"Name: {manifest.name}",
        f"Description: {manifest.name} {manifest.version} from the dllreg registry",
        f"Version: {manifest.version}",
    ]
    if requires:
        lines.append(f"Requires: {requires}")
    lines += [f"Libs: {link_flags(manifest, manifest.platform)}", f"Cflags: {cflags}"]
    return "\n".join(lines) + "\n"


_LOCATIONS = {"prefix": "${pcfiledir}/../..", "exec_prefix": "${prefix}", "libdir": "${prefix}/lib",
              "includedir": "${prefix}/include"}


def relocate_pc(text: str, manifest: Manifest, extra_cflags: str = "") -> str:
    """The source's own ``.pc`` (scipy-openblas.pc) for the library directory: its other
    variables (``openblas_config``, ``version``) and fields stay as they are, so a project's
    existing detection finds what it always found; the locations become relocatable, ``Libs``
    and ``Cflags`` become dllreg's (no ``-rpath`` into a build environment)."""
    own = render_pc(manifest, extra_cflags)
    fields = dict(re.findall(r"^(Libs|Cflags): ?(.*)$", own, re.M))
    out: list[str] = []
    seen: set[str] = set()
    for line in text.splitlines():
        m = re.match(r"\s*([A-Za-z0-9_.]+)\s*([:=])", line)
        key, sep = (m[1], m[2]) if m else ("", "")
        if sep == "=" and key in _LOCATIONS:
            seen.add(key)
            line = f"{key}={_LOCATIONS[key]}"
        elif sep == ":" and key in fields:
            line = f"{key}: {fields[key]}"
        out.append(line)
    head = [f"{k}={v}" for k, v in _LOCATIONS.items() if k not in seen and k != "exec_prefix"]
    return "\n".join(head + out).rstrip("\n") + "\n"


def _pc_constraints(specifier: str) -> list[tuple[str, str]]:
    out = []
    for clause in filter(None, (c.strip() for c in specifier.split(","))):
        m = re.match(r"(>=|<=|==|>|<)\s*([0-9][0-9A-Za-z.]*)$", clause)
        if m:  # pkg-config cannot express ~=, != or wildcards; dllreg checks those itself
            out.append((m.group(1).replace("==", "="), m.group(2)))
    return out


def parse_pc(text: str, pcfiledir: str, origin: str) -> tuple[dict[str, str], dict[str, str]]:
    """Variables and fields of a .pc file, with ``${var}`` expanded."""
    variables = {"pcfiledir": pcfiledir}
    fields: dict[str, str] = {}
    expanded: dict[str, str] = {}  # each variable expanded once: no exponential blow-up

    def expand(value: str, active: tuple[str, ...] = ()) -> str:
        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name in active or len(active) > 64:
                raise DllregError(f"{origin}: variables refer to each other in a loop (or nest "
                                  f"more than 64 deep): {' -> '.join((*active, name))}")
            if name not in variables:
                raise DllregError(f"{origin}: undefined variable ${{{name}}}")
            if name not in expanded:
                expanded[name] = expand(variables[name], (*active, name))
            return expanded[name]

        out = _VAR.sub(sub, value)
        if len(out) > _MAX_VALUE:
            raise DllregError(f"{origin}: a value expands to more than {_MAX_VALUE} characters")
        return out

    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.match(r"([A-Za-z0-9_.]+)\s*([:=])\s*(.*)$", line)
        if not m:
            raise DllregError(f"{origin}: cannot parse line {line!r}")
        key, sep, value = m.groups()
        if sep == "=":
            variables[key] = value
            expanded.clear()  # a (re)definition may change what earlier expansions meant
        else:
            fields[key] = expand(value)
    return {k: expand(v) for k, v in variables.items()}, fields


def flags(fields: dict[str, str], cflags: bool, libs: bool) -> list[str]:
    out: list[str] = []
    if cflags:
        out += shlex.split(fields.get("Cflags", ""))
    if libs:
        out += shlex.split(fields.get("Libs", ""))
    return out
