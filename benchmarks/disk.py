"""Disk: K consumers of one library, installed with dllreg vs vendored into each (real bytes).

Builds everything in a temp dir (gcc, dllreg's own code paths, no network):
  library     the real OpenBLAS: ``dllreg package-lib openblas --from`` the scipy-openblas32
              wheel cached in .cache/downloads (``make demo`` fetches it); without that wheel,
              a gcc-built stand-in with 8 MiB of data (the output says which)
  cons01..10  consumers: an extension module linked against the library, made thin consumer
              wheels by ``dllreg.build.consumer.patch_wheel``, and vendored as auditwheel does it
              (the library in ``consNN.libs/``, RUNPATH ``$ORIGIN/../consNN.libs``)
For K = 1, 2, 10: one site dir gets the library wheel + K thin consumers, another the K
vendored wheels, both installed with ``installer`` (bytecode compiled, as pip does); every
installed file is counted (apparent bytes and allocated blocks).
Run: .venv/bin/python benchmarks/disk.py [--json]. See benchmarks/README.md.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path
from typing import Any

from _bench import install_wheels, library, parser, run, sh

from dllreg.build.consumer import patch_wheel
from dllreg.names import NativeRequirement
from dllreg.wheelfile import WheelWriter

KS = (1, 2, 10)
EXT_C = """#include <Python.h>
double %(sym)s();
static PyObject *linked(PyObject *m, PyObject *a) { return PyLong_FromVoidPtr((void *)&%(sym)s); }
static PyMethodDef methods[] = {{"linked", linked, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_ext", NULL, -1, methods};
PyMODINIT_FUNC PyInit__ext(void) { return PyModule_Create(&mod); }
"""


def consumers(root: Path, lib: dict[str, Any]) -> tuple[list[Path], list[Path]]:
    """The thin (dllreg) and vendored wheels of cons01..cons10."""
    thin, vend = root / "thin", root / "vendored"
    include = sysconfig.get_paths()["include"]
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    tag = f"{tag}-{tag}-" + sysconfig.get_platform().replace("-", "_").replace(".", "_")
    (root / "ext.c").write_text(EXT_C % {"sym": lib["symbol"]})
    req = [NativeRequirement.parse(f"{lib['name']}>={lib['version']}")]
    thins, vends = [], []
    for i in range(1, max(KS) + 1):
        pkg = f"cons{i:02d}"
        exts = {}
        for kind, rpath in (("thin", []), ("vendored", [f"-Wl,-rpath,$ORIGIN/../{pkg}.libs"])):
            exts[kind] = root / f"{pkg}-{kind}{suffix}"
            sh("gcc", "-O2", "-shared", "-fPIC", f"-I{include}", root / "ext.c", "-o", exts[kind],
               f"-L{lib['file'].parent}", f"-l:{lib['file'].name}", *rpath)
        # dllreg: the plain wheel, made a consumer (stub, Requires-Dist) by dllreg's own code.
        plain = write_consumer(root / "plain", pkg, tag, {f"{pkg}/_ext{suffix}": exts["thin"]})
        thins.append(patch_wheel(plain, thin, req, req))
        # Vendored as auditwheel does it: the library in <pkg>.libs/, RUNPATH $ORIGIN/../<pkg>.libs.
        vends.append(write_consumer(vend, pkg, tag, {f"{pkg}/_ext{suffix}": exts["vendored"],
                                                     f"{pkg}.libs/{lib['file'].name}": lib["file"]}))
    return thins, vends


def write_consumer(out: Path, pkg: str, tag: str, files: dict[str, Path]) -> Path:
    dist_info = f"{pkg}-1.0.dist-info"
    with WheelWriter(out / f"{pkg}-1.0-{tag}.whl", dist_info) as w:
        w.add(f"{pkg}/__init__.py", f'"""Disk benchmark consumer {pkg}."""\nfrom . import _ext\n'
              .encode())
        for name, path in files.items():
            w.add(name, path.read_bytes())
        w.add(f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {pkg}\nVersion: 1.0\n"
              .encode())
        w.add(f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nGenerator: dllreg-benchmark\n"
              f"Root-Is-Purelib: false\nTag: {tag}\n".encode())
    return w.path


def usage(prefix: Path, lib_name: str) -> dict[str, int]:
    files = [p for p in prefix.rglob("*") if p.is_file()]
    st = [os.lstat(p) for p in files]
    return {"bytes": sum(s.st_size for s in st), "allocated": sum(s.st_blocks * 512 for s in st),
            "files": len(files), "library_copies": sum(p.name == lib_name for p in files)}


def measure(root: Path) -> dict[str, Any]:
    lib = library(root)
    thins, vends = consumers(root, lib)
    per_k: dict[str, dict[str, Any]] = {}
    for k in KS:
        shared, vendored = root / f"site-dllreg-{k}", root / f"site-vendored-{k}"
        install_wheels([lib["wheel"], *thins[:k]], shared)
        install_wheels(vends[:k], vendored)
        d, v = usage(shared, lib["file"].name), usage(vendored, lib["file"].name)
        per_k[str(k)] = {"dllreg": d, "vendored": v, "ratio": round(d["bytes"] / v["bytes"], 4),
                         "saved_bytes": v["bytes"] - d["bytes"]}
    return {
        "python": sys.version.split()[0],
        "library": {"label": lib["label"], "file": lib["file"].name,
                    "bytes": lib["file"].stat().st_size},
        "wheel_bytes": {"library": lib["wheel"].stat().st_size,
                        "thin_consumer": thins[0].stat().st_size,
                        "vendored_consumer": vends[0].stat().st_size},
        "k": per_k,
        "goals": {"one_copy_for_any_k": all(r["dllreg"]["library_copies"] == 1
                                            and r["vendored"]["library_copies"] == int(k)
                                            for k, r in per_k.items())},
    }


def report(r: dict[str, Any], elapsed: float) -> None:
    ok = {True: "OK", False: "MISSED"}
    lib = r["library"]
    print(f"dllreg disk  (Python {r['python']}; library: {lib['label']}, {lib['file']} "
          f"{lib['bytes']:,} bytes)\n")
    print("installed bytes (apparent size of every file, .pyc included; allocated in brackets)")
    print(f"  {'K':>3}  {'dllreg: lib + K thin':>30}  {'vendored into each':>30}  {'ratio':>6}"
          f"  {'copies':>7}  {'saved':>14}")
    for k, row in r["k"].items():
        d, v = row["dllreg"], row["vendored"]
        print(f"  {k:>3}  {d['bytes']:>14,} ({d['allocated']:>13,})  "
              f"{v['bytes']:>14,} ({v['allocated']:>13,})  {row['ratio']:6.3f}  "
              f"{d['library_copies']:>3} /{v['library_copies']:>2}  {row['saved_bytes']:>14,}")
    w = r["wheel_bytes"]
    print(f"  wheels: library {w['library']:,}, thin consumer {w['thin_consumer']:,}, "
          f"vendored consumer {w['vendored_consumer']:,} bytes")
    print(f"  goal: K consumers cost one copy -> {ok[r['goals']['one_copy_for_any_k']]}\n")
    print(f"total runtime {elapsed:.1f} s")


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__)
    args = ap.parse_args(argv)
    return run("dllreg-disk-", args.keep, args.json, lambda root, env: measure(root), report)


if __name__ == "__main__":
    raise SystemExit(main())
