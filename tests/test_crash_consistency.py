"""kill -9 during ``python -m dllreg package-lib``: the output directory is never half-written.

WheelWriter writes ``.dllreg-<pid>-XXXXXXXX.whl.part`` (tempfile.mkstemp next to the target) and
renames it onto ``NAME.whl`` only when complete. A SIGKILL skips every ``finally``, so the
only acceptable states are: nothing, leftover ``.part`` files, and/or a complete wheel whose
RECORD verifies and whose MANIFEST parses. A later, un-killed run into the same directory must
succeed despite the leftovers, and removes the parts whose writer process is gone.

The library is a real gcc-built ELF with a SONAME and ~16 MB of random (incompressible)
initialised data, so hashing and deflating it take most of package-lib's runtime and random
kill times land inside the write window.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from installer.sources import WheelFile

from conftest import has_gcc, run
from dllreg.libwheel.manifest import MANIFEST_NAME, Manifest
from dllreg.names import REGISTRY_DIR

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not has_gcc(), reason="needs gcc")]

TRIALS = 100
RERUNS = 15  # un-killed re-runs into a trial's directory (each costs a full package-lib run)
BLOB_MB = 16
WHEEL = "dllreg_lib_big-1.0-py3-none-linux_x86_64.whl"
PART_PREFIX, PART_SUFFIX = ".dllreg-", ".whl.part"  # WheelWriter's mkstemp(prefix=, suffix=)

BIG_C = r"""
__asm__(".section .rodata\n.globl big_blob\n.type big_blob,@object\nbig_blob:\n"
        ".incbin \"BLOB\"\n.size big_blob, .-big_blob\n.text\n");
extern const unsigned char big_blob[];
unsigned char blob_at(long i) { return big_blob[i]; }
"""


@pytest.fixture(scope="module")
def big_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("big")
    blob = d / "blob.bin"
    blob.write_bytes(random.Random(1).randbytes(BLOB_MB << 20))
    src = d / "big.c"
    src.write_text(BIG_C.replace("BLOB", str(blob)))
    lib = d / "src" / "lib" / "libbig.so.1"
    lib.parent.mkdir(parents=True)
    run(["gcc", "-shared", "-fPIC", "-O1", "-Wl,-soname,libbig.so.1", "-o", str(lib), str(src)])
    blob.unlink()
    return d / "src"


def _cmd(source: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "dllreg", "package-lib", "big", "--version", "1.0",
            "--from", str(source), "-o", str(out)]


def _check_wheel(path: Path) -> None:
    """A complete wheel: installer accepts RECORD (hashes and sizes) and MANIFEST parses."""
    with WheelFile.open(path) as wf:
        wf.validate_record(validate_contents=True)
    with zipfile.ZipFile(path) as zf:
        text = zf.read(f"{REGISTRY_DIR}/big/{MANIFEST_NAME}").decode()
    m = Manifest.from_text(text, str(path))
    assert m.name == "big" and [lib.soname for lib in m.libraries] == ["libbig.so.1"]


def _classify(out: Path) -> tuple[str, int]:
    """(outcome, number of .part files); fails on anything but nothing / .part / full wheel."""
    if not out.exists():
        return "nothing", 0
    names = sorted(p.name for p in out.iterdir())
    parts = [n for n in names if n.startswith(PART_PREFIX) and n.endswith(PART_SUFFIX)]
    others = [n for n in names if n not in parts]
    assert others in ([], [WHEEL]), f"unexpected files in {out}: {names}"
    if others:
        _check_wheel(out / WHEEL)
    outcome = ("wheel" if others else "nothing") + ("+part" if parts else "")
    return outcome, len(parts)


def _measure(source: Path, out: Path) -> tuple[float, float]:
    """(seconds until the .part file appears, total seconds) of one un-killed run."""
    start = time.monotonic()
    proc = subprocess.Popen(_cmd(source, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first_part = None
    while proc.poll() is None:
        if first_part is None and out.exists() and any(out.glob(f"{PART_PREFIX}*")):
            first_part = time.monotonic() - start
        time.sleep(0.002)
    total = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
    proc.stderr.close() if proc.stderr else None
    _check_wheel(out / WHEEL)
    return (first_part if first_part is not None else total / 2), total


def test_sigkill_never_leaves_a_partial_wheel(big_source: Path, tmp_path: Path) -> None:
    runs = [_measure(big_source, tmp_path / f"measure{i}") for i in range(3)]
    t_part = min(r[0] for r in runs)
    t_total = max(r[1] for r in runs)
    seed = int(os.environ.get("DLLREG_CRASH_SEED", "0")) or random.randrange(1 << 30)
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    parts_left: Counter[int] = Counter()
    trials: list[tuple[Path, str]] = []
    for i in range(TRIALS):
        out = tmp_path / f"t{i}"
        # Half spread over the whole run (startup included), half over the write window.
        delay = rng.uniform(0, t_total) if i % 2 else rng.uniform(t_part, t_total * 1.05)
        proc = subprocess.Popen(_cmd(big_source, out), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        outcome, n = _classify(out)
        if proc.returncode != -signal.SIGKILL:  # it had finished before the kill
            assert proc.returncode == 0 and outcome == "wheel", (proc.returncode, outcome)
            outcome = "finished"
        outcomes[outcome] += 1
        parts_left[n] += 1
        trials.append((out, outcome))

    # Re-run un-killed into the same directories, leftovers first.
    order = sorted(trials, key=lambda t: ("part" not in t[1], t[1] == "finished"))
    leftover_after_rerun = 0
    for out, _ in order[:RERUNS]:
        run(_cmd(big_source, out))
        outcome, n = _classify(out)
        assert outcome.startswith("wheel"), outcome
        after = {p.name for p in out.glob(f"{PART_PREFIX}*")}
        assert not after, "the re-run removes the .part files of killed writers"
        leftover_after_rerun += n

    print(f"\ncrash-consistency seed={seed} (DLLREG_CRASH_SEED): package-lib runtime "
          f"{t_total:.2f} s, .part appears after {t_part:.2f} s; {TRIALS} kills: "
          + ", ".join(f"{k}={v}" for k, v in sorted(outcomes.items()))
          + f"; .part files per trial dir: {dict(sorted(parts_left.items()))}; after {RERUNS} "
          f"re-runs {leftover_after_rerun} stale .part files remain (all removed by the re-run)")
    assert sum(outcomes.values()) == TRIALS
    # The kill times must really have hit the write window, or the test proves nothing.
    assert outcomes["nothing+part"] + outcomes["wheel+part"] >= TRIALS // 5, outcomes
