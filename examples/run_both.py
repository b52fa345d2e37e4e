"""Use both example consumers in one process and show that they share one OpenBLAS.

Run with the interpreter of the environment holding blasdot, blasgemm and
dllreg-lib-openblas (``make demo`` uses demo-out/venv). Exits non-zero on any mismatch.
"""

from __future__ import annotations

import os
import sys

import blasdot
import blasgemm
from blasdot import _dlls as dot_dlls
from blasgemm import _dlls as gemm_dlls


def main() -> int:
    failures = []

    def check(ok: bool, what: str) -> None:
        print(f"  [{'ok' if ok else 'FAIL'}] {what}")
        if not ok:
            failures.append(what)

    d = blasdot.dot([1, 2, 3], [4, 5, 6])
    check(d == 32.0, f"blasdot.dot([1, 2, 3], [4, 5, 6]) = {d!r} (expected 32.0)")
    m = blasgemm.matmul([[1, 2], [3, 4]], [[5, 6], [7, 8]])
    check(m == [[19.0, 22.0], [43.0, 50.0]],
          f"blasgemm.matmul([[1, 2], [3, 4]], [[5, 6], [7, 8]]) = {m!r} "
          "(expected [[19.0, 22.0], [43.0, 50.0]])")

    paths = {"blasdot": dot_dlls.path("openblas"), "blasgemm": gemm_dlls.path("openblas")}
    for pkg, path in paths.items():
        print(f"  {pkg} loaded OpenBLAS from {path}")
    check(paths["blasdot"] == paths["blasgemm"], "both packages got the same library path")
    users = sorted(dot_dlls.loaded()["openblas"][2])
    check(users == ["blasdot", "blasgemm"], f"the process-wide record lists users {users}")

    with open("/proc/self/maps", encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if "openblas" in line]
    print("  /proc/self/maps lines that mention openblas:")
    for line in lines:
        print("    " + line)
    mapped = sorted({line.split(None, 5)[5] for line in lines if len(line.split(None, 5)) == 6})
    check(len(mapped) == 1, f"distinct OpenBLAS files mapped: {len(mapped)} (expected 1)")
    check(mapped == [os.path.realpath(paths["blasdot"])],
          "the mapped file is the library the stubs loaded")

    print("OK: one OpenBLAS serves both packages" if not failures
          else f"FAILED: {len(failures)} check(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
