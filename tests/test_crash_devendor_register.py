"""kill -9 during ``python -m dllreg devendor``, ``register`` and ``unregister``.

The pattern of test_crash_consistency.py (which covers ``package-lib``): start the real command,
SIGKILL it after a random delay, then look at what it left.

* devendor writes the library wheels first and the consumer wheel last, each through a
  dot-named temporary file renamed into place. Acceptable leftovers: nothing, dot-named
  temporaries, complete wheels (RECORD verifies) - and a consumer wheel only together with
  the library wheel it requires. An un-killed re-run into the same directory succeeds.
* register/unregister change the registry under a lock, the MANIFEST last, a removal in one
  rename. After a kill the registration is the one from before or the one from after (never
  a half-written MANIFEST), ``check --verify`` passes, and a following ``register`` succeeds
  and leaves exactly one registration and its dist-info (the dist-info may lag behind the
  registration after a kill: docs/providers.md says the next writer heals it).
"""

from __future__ import annotations

import io
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from installer.sources import WheelFile

from conftest import QSUM_C, gcc_shared, has_gcc, run
from dllreg.cli.main import main
from dllreg.libwheel.manifest import Manifest
from test_devendor import FOO_C, RECIPE, vendored_wheel

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not has_gcc(), reason="needs gcc")]

TRIALS = 100
RERUNS = 10  # un-killed devendor re-runs into trial directories, leftovers first
BLOB_MB = 2  # incompressible data in the vendored library: hashing and deflating take time
# The vendored library carries BLOB_MB of random bytes, so the write window is wide enough
# for random kill times to land in it.
BLOB_ASM = ('__asm__(".section .rodata\\n.globl big_blob\\nbig_blob:\\n.incbin \\"BLOB\\"\\n'
            '.text\\n");\n')


def kill_after(cmd: list[str], delay: float, err: Path, trigger: Path | None = None) -> int:
    """Run ``cmd``, SIGKILL it ``delay`` seconds after its start (or after ``trigger`` appears);
    its return code (-9 when killed). Its stderr goes to ``err``, for the message of a run that
    failed on its own."""
    with open(err, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=f)
        while trigger is not None and not trigger.exists() and proc.poll() is None:
            time.sleep(0.0002)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        return proc.wait()


def timed(cmd: list[str], trigger: Path | None = None) -> tuple[float, float]:
    """(seconds the un-killed ``cmd`` ran, seconds from ``trigger`` appearing to its exit)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = None
    while proc.poll() is None:
        if seen is None and trigger is not None and trigger.exists():
            seen = time.monotonic()
        time.sleep(0.0002)
    end = time.monotonic()
    assert proc.returncode == 0, proc.communicate()[1]
    return end - start, end - (seen or start)


def delays(seed: int, t_total: float) -> list[float]:
    # Half over the whole run (start-up included), half over its last 40%, where the writes are.
    rng = random.Random(seed)
    return [rng.uniform(0, t_total * 1.05) if i % 2 else rng.uniform(0.6 * t_total, t_total)
            for i in range(TRIALS)]


def seed_of() -> int:
    return int(os.environ.get("DLLREG_CRASH_SEED", "0")) or random.randrange(1 << 30)


# -- devendor ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def repaired(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(an auditwheel-style wheel vendoring a ~BLOB_MB libfoo, a recipes dir naming foo)."""
    tmp = tmp_path_factory.mktemp("repaired")
    blob = tmp / "blob.bin"
    blob.write_bytes(random.Random(2).randbytes(BLOB_MB << 20))
    wheel = vendored_wheel(tmp, lib_code=FOO_C + BLOB_ASM.replace("BLOB", str(blob)))
    recipes = tmp / "recipes"
    recipes.mkdir()
    (recipes / "foo.toml").write_text(RECIPE)
    return wheel, recipes


def devendor_cmd(wheel: Path, recipes: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "dllreg", "devendor", str(wheel), "-o", str(out),
            "--recipes", str(recipes)]


def complete(path: Path) -> None:
    with WheelFile.open(path) as wf:
        wf.validate_record(validate_contents=True)


def classify_devendor(out: Path, consumer: str, library: str) -> str:
    if not out.exists():
        return "nothing"
    names = sorted(p.name for p in out.iterdir())
    temps = [n for n in names if n.startswith(".")]
    wheels = [n for n in names if n not in temps]
    assert set(wheels) <= {consumer, library}, f"unexpected files in {out}: {names}"
    for n in wheels:
        complete(out / n)
    # A consumer wheel requires foo==...: it must never be there without its library wheel.
    assert consumer not in wheels or library in wheels, names
    kinds = (["lib"] if library in wheels else []) + (["consumer"] if consumer in wheels else [])
    return "+".join(kinds + (["tmp"] if temps else [])) or "empty"


def test_sigkill_during_devendor(repaired: tuple[Path, Path], tmp_path: Path) -> None:
    wheel, recipes = repaired
    # The output directory appears when writing starts (write_outputs): half the kills are timed
    # from then, so they land in the write window however loaded the machine is.
    runs = [timed(devendor_cmd(wheel, recipes, tmp_path / f"m{i}"), tmp_path / f"m{i}") for i in range(3)]
    t_total, t_write = max(r[0] for r in runs), max(r[1] for r in runs)
    produced = sorted(p.name for p in (tmp_path / "m0").iterdir())
    (library,) = [n for n in produced if n.startswith("dllreg_lib_foo-")]
    consumer = wheel.name
    assert produced == sorted([library, consumer])
    seed = seed_of()
    stderr = tmp_path / "stderr"
    outcomes: Counter[str] = Counter()
    trials: list[tuple[Path, str]] = []
    for i, delay in enumerate(delays(seed, t_total)):
        out = tmp_path / f"t{i}"
        if i % 2:  # over the whole run, start-up included
            rc = kill_after(devendor_cmd(wheel, recipes, out), delay, stderr)
        else:  # inside the write window
            write_delay = random.Random(seed + i).uniform(0, t_write * 1.05)
            rc = kill_after(devendor_cmd(wheel, recipes, out), write_delay, stderr, trigger=out)
        outcome = classify_devendor(out, consumer, library)
        if rc != -signal.SIGKILL:  # it had finished before the kill
            assert rc == 0 and outcome == "lib+consumer", (rc, outcome, stderr.read_text())
            outcome = "finished"
        outcomes[outcome] += 1
        trials.append((out, outcome))
    # A later, un-killed run into the same directory trusts nothing half-made and succeeds.
    rerun = sorted(trials, key=lambda t: (t[1] in ("finished", "nothing"), t[1]))[:RERUNS]
    for out, _ in rerun:
        run(devendor_cmd(wheel, recipes, out))
        assert classify_devendor(out, consumer, library).startswith("lib+consumer")
    print(f"\ncrash devendor seed={seed} (DLLREG_CRASH_SEED): run {t_total:.2f} s, {TRIALS} kills: "
          + ", ".join(f"{k}={v}" for k, v in sorted(outcomes.items()))
          + f"; {len(rerun)} re-runs into killed outputs succeeded")
    # The kills must really have hit the write window, or this proves nothing.
    partial = sum(v for k, v in outcomes.items() if k not in ("nothing", "finished"))
    assert partial >= TRIALS // 10, outcomes


# -- register / unregister ---------------------------------------------------------------------


def dllreg_main(*argv: str) -> tuple[int, str]:
    buf = io.StringIO()
    return main(list(argv), out=buf), buf.getvalue()


def registered_version(site: Path) -> str | None:
    """The registration's version, None when absent; a MANIFEST is complete or not there."""
    manifest = site / "dllreg.libs" / "qsum.system" / "MANIFEST"
    if not manifest.exists():
        return None
    return Manifest.from_text(manifest.read_text(), str(manifest)).version


def test_sigkill_during_register_and_unregister(tmp_path: Path) -> None:
    lib = gcc_shared(tmp_path / "usr" / "lib" / "libqsum.so.3", QSUM_C, "libqsum.so.3")

    def register(site: Path, version: str) -> list[str]:
        return ["register", "--name", "qsum", "--version", version, "--path", str(lib),
                "--site", str(site), "--owner", "crash"]

    def unregister(site: Path) -> list[str]:
        return ["unregister", "--name", "qsum", "--site", str(site)]

    # (command, version before, version after), cycled over the trials
    steps: list[tuple[str, Callable[[Path], list[str]], str | None, str | None]] = [
        ("register", lambda s: register(s, "3.2"), None, "3.2"),
        ("upgrade", lambda s: register(s, "3.3"), "3.2", "3.3"),
        ("unregister", unregister, "3.3", None),
    ]

    def prepared(i: int, version: str | None) -> Path:
        site = tmp_path / f"site{i}"
        site.mkdir()
        if version is not None:
            assert dllreg_main(*register(site, version))[0] == 0
            # The writer recreates the lock file: its appearance marks the start of the writes.
            (site / "dllreg.libs" / ".lock").unlink()
        return site

    def lock(site: Path) -> Path:
        return site / "dllreg.libs" / ".lock"

    runs = [timed([sys.executable, "-m", "dllreg", *argv(site)], lock(site))
            for i in range(2) for j, (_, argv, before, _) in enumerate(steps)
            for site in [prepared(-10 - i * 3 - j, before)]]
    t_total, t_locked = max(r[0] for r in runs), max(r[1] for r in runs)
    seed = seed_of()
    rng = random.Random(seed)
    stderr = tmp_path / "stderr"
    outcomes: Counter[str] = Counter()
    for i in range(TRIALS):
        name, argv, before, after = steps[i % len(steps)]
        site = prepared(i, before)
        # Odd trials: any time in the run; even ones: within the writes, timed from the moment
        # the lock file appears.
        at_lock = i % 2 == 0
        delay = rng.uniform(0, t_locked) if at_lock else rng.uniform(0, t_total * 1.05)
        rc = kill_after([sys.executable, "-m", "dllreg", *argv(site)], delay, stderr,
                        lock(site) if at_lock else None)
        state = registered_version(site)
        assert state in (before, after), (name, before, after, state)
        root = site / "dllreg.libs"
        entries = sorted(p.name for p in root.iterdir()) if root.exists() else []
        visible = [e for e in entries if not e.startswith(".")]
        assert set(visible) <= {"qsum.system"}, entries
        leftovers = [e for e in entries if e.startswith(".") and e != ".lock"]
        dist_infos = sorted(p.name for p in site.glob("*.dist-info"))
        in_step = dist_infos == ([f"dllreg_lib_qsum-{state}.dist-info"] if state else [])
        rc_check, report = dllreg_main("check", "--verify", "--path", str(site))
        assert rc_check == 0, report
        # The next writer trusts what it finds, heals the rest and succeeds.
        assert dllreg_main(*register(site, "3.4"))[0] == 0
        assert sorted(p.name for p in root.iterdir()) == [".lock", "qsum.system"]
        assert registered_version(site) == "3.4"
        assert sorted(p.name for p in site.glob("*.dist-info")) == ["dllreg_lib_qsum-3.4.dist-info"]
        assert dllreg_main("check", "--verify", "--path", str(site))[0] == 0
        if rc != -signal.SIGKILL:
            assert rc == 0 and state == after, (name, rc, state, stderr.read_text())
            outcomes[f"{name}:finished"] += 1
        else:
            outcomes[f"{name}:{'after' if state == after else 'before'}"
                     + ("+leftovers" if leftovers else "")
                     + ("" if in_step else "+dist-info-lagging")] += 1
        shutil.rmtree(site)
    print(f"\ncrash register seed={seed} (DLLREG_CRASH_SEED): run {t_total:.2f} s, lock to exit "
          f"{t_locked * 1000:.0f} ms, {TRIALS} kills: "
          + ", ".join(f"{k}={v}" for k, v in sorted(outcomes.items())))
    changed = sum(v for k, v in outcomes.items() if k.endswith(("after", "+leftovers", "lagging"))
                  or ":after+" in k)
    assert changed >= TRIALS // 20, outcomes  # some kills landed after the writes began
