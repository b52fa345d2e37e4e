"""``vendor``: copy the registry libraries a consumer wheel needs into it (docs/vendor.md)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO


def add_parsers(sub: Any) -> None:
    v = sub.add_parser("vendor", help="make a dllreg consumer wheel self-contained: copy the "
                       "registry libraries it needs into it")
    v.add_argument("wheel", type=Path)
    v.add_argument("-o", "--output", required=True, type=Path, help="directory for the wheel")
    v.add_argument("--find-libs", action="append", default=[], type=Path, metavar="DIR",
                   help="a directory of dllreg-lib-NAME wheels to take libraries from (repeatable)")
    v.add_argument("--with-lib", action="append", default=[], type=Path, metavar="WHEEL",
                   help="a dllreg-lib-NAME wheel to take a library from (repeatable)")
    v.add_argument("--no-installed", action="store_true",
                   help="do not take libraries installed in this environment")


def library_copy(path: Path) -> Any:
    from ..convert.read import library_wheel_contents
    from ..convert.vendor import LibraryCopy

    manifest, files = library_wheel_contents(path)
    return LibraryCopy(manifest, tuple(files.items()), str(path))


def installed_copies() -> list[Any]:
    from ..convert.vendor import LibraryCopy
    from ..env.registry import installed_libraries, site_dirs

    out = []
    for lib in installed_libraries(site_dirs())[0]:
        if lib.manifest.external:
            continue  # a provider's files are not ours to copy; give its wheel with --with-lib
        try:
            files = tuple((f.path, lib.file_path(f.path).read_bytes()) for f in lib.manifest.libraries)
        except OSError:
            continue  # `dllreg check` reports it
        out.append(LibraryCopy(lib.manifest, files, str(lib.directory)))
    return out


def _vendor(a: argparse.Namespace, out: TextIO) -> int:
    from ..build.consumer import write_members
    from ..convert.read import read_input_wheel
    from ..convert.vendor import VendorError, plan_vendor

    source = read_input_wheel(a.wheel)
    wheels = [*a.with_lib, *(p for d in a.find_libs for p in sorted(d.glob("dllreg_lib_*.whl")))]
    available = [library_copy(p) for p in wheels] + ([] if a.no_installed else installed_copies())
    plan = plan_vendor(source.filename, list(source.data().items()), available,
                       str(a.wheel))
    target = a.output / plan.filename
    if target.resolve() == a.wheel.resolve():
        raise VendorError(f"{target}: would overwrite the input wheel; choose another -o")
    executable = {m.name for m in source.members if m.executable} | {
        name for name, _ in plan.members if "/dllreg.libs/" in name and name.split("/")[-1] != "MANIFEST"}
    write_members(target, plan.dist_info,
                  [(name, data, name in executable, None) for name, data in plan.members])
    for lib in plan.vendored:
        m = lib.manifest
        print(f"vendored {m.name} {m.version} from {lib.origin}: "
              + ", ".join(f.path for f in m.libraries), file=out)
    print(f"wrote {target} (+{plan.added_bytes:,} bytes); the stub prefers a compatible registry "
          "copy when one is installed (DLLREG_PREFER=vendored to use these first)", file=out)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO], int]] = {"vendor": _vendor}
