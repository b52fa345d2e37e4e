"""Parallel installs writing one registry: 8 processes register and unregister 50 libraries
each into one site directory (every name is shared by two processes, so the lock is
contended), then writers are killed with SIGKILL mid-run. Afterwards the registry must hold
exactly the expected entries, none lost and none half-written, and `check --verify` passes.

Each worker calls ``dllreg.cli.main.main`` in a loop, as parallel conda link scripts would
call ``python -m dllreg register``. Slow (~15-30 s): marked e2e.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

import pytest

from conftest import gcc_shared

pytestmark = pytest.mark.e2e

PROCESSES = 8
PER_PROCESS = 50
NAMES = PROCESSES * PER_PROCESS // 2  # a ring: process p works on names p*25 .. p*25+49
ROUNDS = 1
KILL_TRIALS = 6
CHURN = 4  # phase 2 writers per round; all killed, or all but one
CTX = multiprocessing.get_context("fork")


def ring(prefix: str, p: int, count: int) -> list[str]:
    return [f"{prefix}{(p * (PER_PROCESS // 2) + i) % count:03d}" for i in range(PER_PROCESS)]


def sharers(index: int) -> set[int]:
    return {p for p in range(PROCESSES) if f"s{index:03d}" in ring("s", p, NAMES)}


def make_libraries(prefix: Path, names: Sequence[str]) -> None:
    """One shared library per name, each with its own SONAME (lib<name>.so.1).

    gcc builds the first; the others are copies with the SONAME rewritten in place (same
    length), which is all that tells libraries apart for the registry and costs no compiler
    run per name.
    """
    first = gcc_shared(prefix / "lib" / f"lib{names[0]}.so.1", "int f(void){return 1;}\n",
                       f"lib{names[0]}.so.1")
    data = first.read_bytes()
    assert data.count(f"lib{names[0]}.so.1".encode()) == 1
    for n in names[1:]:
        (prefix / "lib" / f"lib{n}.so.1").write_bytes(
            data.replace(f"lib{names[0]}.so.1".encode(), f"lib{n}.so.1".encode()))


class Writer:
    """dllreg's CLI called in-process; counts operations in a shared slot."""

    def __init__(self, site: Path, prefix: Path, owner: str, counter: Any, slot: int) -> None:
        self.site, self.prefix, self.owner = str(site), str(prefix), owner
        self.counter, self.slot = counter, slot

    def _call(self, *argv: str) -> None:
        from dllreg.cli.main import main

        err = io.StringIO()
        with redirect_stderr(err):
            rc = main([*argv, "--site", self.site], out=io.StringIO())
        if rc != 0:
            raise SystemExit(f"{self.owner}: dllreg {' '.join(argv)}: exit {rc}: {err.getvalue()}")
        self.counter[self.slot] += 1

    def register(self, name: str, version: str) -> None:
        self._call("register", "--name", name, "--version", version, "--provider", "conda",
                   "--prefix", self.prefix, "--owner", self.owner,
                   "--path", f"{self.prefix}/lib/lib{name}.so.1")

    def unregister(self, name: str, *, own: bool) -> None:
        self._call("unregister", "--name", name, "--provider", "conda",
                   *(["--owner", self.owner] if own else []))


def phase1_worker(p: int, site: Path, prefix: Path, counter: Any, barrier: Any) -> None:
    w = Writer(site, prefix, f"p{p}", counter, p)
    names = ring("s", p, NAMES)
    for _ in range(ROUNDS):
        for n in names:
            w.register(n, f"1.{p}")
        for n in names[::2]:
            w.unregister(n, own=True)  # left in place when the other sharer owns it now
    for n in names:
        w.register(n, f"1.{p}")
    barrier.wait(timeout=120)  # every registration is in before anything is finally removed
    for n in names:
        if int(n[1:]) % 4 == 0:
            w.unregister(n, own=False)  # both sharers do it: the second finds nothing, exit 0


def churn_worker(p: int, site: Path, prefix: Path, counter: Any, stop: Any) -> None:
    w = Writer(site, prefix, f"k{p}", counter, p)
    names = ring("k", p, NAMES // 2)
    rng = random.Random(p)
    while not stop.is_set():
        n = rng.choice(names)
        if rng.random() < 0.6:
            w.register(n, f"2.{p}")
        else:
            w.unregister(n, own=rng.random() < 0.5)


def read_manifest(path: Path) -> dict[str, str]:
    """The single-valued keys of a MANIFEST (docs/manifest.md: 'Key: value' lines)."""
    fields = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition(": ")
        if sep and not line.startswith("#") and key != "Library":
            fields[key] = value
    return fields


def registry_state(site: Path) -> dict[str, dict[str, str]]:
    """name -> manifest fields of every visible registration (a folder with a MANIFEST)."""
    root = site / "dllreg.libs"
    return {d.name.split(".")[0]: read_manifest(d / "MANIFEST")
            for d in sorted(root.iterdir()) if (d / "MANIFEST").is_file()}


def dist_infos(site: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for d in sorted(site.glob("dllreg_lib_*.dist-info")):
        name, version = d.name[len("dllreg_lib_"):-len(".dist-info")].rsplit("-", 1)
        found.setdefault(name, []).append(version)
    return found


def leftovers(site: Path) -> list[str]:
    """What killed writers left behind: temporary entries and folders without a MANIFEST."""
    root = site / "dllreg.libs"
    found = [e.name for e in root.iterdir() if e.name != ".lock" and not (e / "MANIFEST").is_file()]
    found += [str(f.relative_to(root)) for f in root.rglob(".*.part")]
    found += [d.name for d in site.glob(".*")]
    return sorted(found)


def lock_holder(site: Path) -> set[int]:
    """The pids holding the registry's lock file (flock) now, from /proc/locks."""
    try:
        st = (site / "dllreg.libs" / ".lock").stat()
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return set()
    inode = f":{st.st_ino}"
    # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF"; waiters are marked "->".
    return {int(f[4]) for f in (line.split() for line in lines)
            if len(f) > 5 and f[1] == "FLOCK" and f[5].endswith(inode)}


def check_verify(site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dllreg", "check", "--verify", "--path", str(site)],
                          capture_output=True, text=True)


def test_concurrent_register_unregister_with_kills(tmp_path: Path) -> None:
    site, prefix = tmp_path / "site", tmp_path / "prefix"
    site.mkdir()
    s_names = [f"s{i:03d}" for i in range(NAMES)]
    k_names = [f"k{i:03d}" for i in range(NAMES // 2)]
    make_libraries(prefix, s_names + k_names)

    # Phase 1: 8 writers, contended names, no kills. Deterministic outcome despite the races:
    # every name registered at the barrier, then the names with index % 4 == 0 removed.
    counter = CTX.Array("q", PROCESSES)
    barrier = CTX.Barrier(PROCESSES)
    start = time.perf_counter()
    procs = [CTX.Process(target=phase1_worker, args=(p, site, prefix, counter, barrier))
             for p in range(PROCESSES)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=600)
    phase1_seconds = time.perf_counter() - start
    assert [proc.exitcode for proc in procs] == [0] * PROCESSES
    phase1_ops = sum(counter[:])
    assert phase1_ops == PROCESSES * (ROUNDS * (PER_PROCESS + PER_PROCESS // 2) + PER_PROCESS) + sum(
        1 for p in range(PROCESSES) for n in ring("s", p, NAMES) if int(n[1:]) % 4 == 0)

    expected = {n for n in s_names if int(n[1:]) % 4 != 0}
    state = registry_state(site)
    assert set(state) == expected, (sorted(expected - set(state)), sorted(set(state) - expected))
    for n, fields in state.items():
        owner = int(fields["Registered-By"][1:])
        # The last writer wins as a whole: version and owner come from one register call.
        assert owner in sharers(int(n[1:])) and fields["Version"] == f"1.{owner}", (n, fields)
        assert fields["Provider"] == "conda"
    assert dist_infos(site) == {n: [state[n]["Version"]] for n in sorted(expected)}
    snapshot = {n: (site / "dllreg.libs" / f"{n}.conda" / "MANIFEST").read_bytes() for n in expected}
    r = check_verify(site)
    assert r.returncode == 0 and f"{len(expected)} libraries" in r.stdout, r.stdout + r.stderr

    # Phase 2: writers on other names, killed with SIGKILL at random moments (inside the lock,
    # half-way through a rename, ...). Phase 1's entries must not be touched, and the registry
    # must stay readable and verifiable after every round of kills.
    rng = random.Random(6)
    kills = 0
    churn_ops = 0
    debris = 0  # leftovers seen right after the kills: evidence that some landed mid-write
    in_lock = 0  # kills of a writer seen holding the lock
    unsynced: list[str] = []  # registrations whose dist-info a kill left missing or stale
    start = time.perf_counter()
    for trial in range(KILL_TRIALS):
        counter = CTX.Array("q", CHURN)
        stop = CTX.Event()
        procs = [CTX.Process(target=churn_worker, args=(p, site, prefix, counter, stop))
                 for p in range(CHURN)]
        for proc in procs:
            proc.start()
        # Every other round one writer survives and goes on writing after the kills (it
        # clears what the killed ones left); otherwise the debris stays for readers to face.
        survivors = trial % 2
        victims = {proc.pid for proc in procs[survivors:]}
        while victims:
            time.sleep(rng.uniform(0.02, 0.2))
            # Prefer the writer that holds the registry lock right now (/proc/locks), so the
            # kill lands inside the critical section; otherwise any victim, wherever it is.
            holder = lock_holder(site) & victims
            pid = holder.pop() if holder else rng.choice(sorted(victims))  # type: ignore[arg-type]
            os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]
            victims.discard(pid)
            kills += 1
            in_lock += bool(holder) or pid in lock_holder(site)
        time.sleep(0.2)
        stop.set()
        for proc in procs:
            proc.join(timeout=60)
        assert [proc.exitcode for proc in procs] == [0] * survivors + [-signal.SIGKILL] * (
            CHURN - survivors)
        churn_ops += sum(counter[:])
        debris += len(leftovers(site))
        now, infos = registry_state(site), dist_infos(site)
        for n in sorted(set(now) | set(infos)):
            registered = [now[n]["Version"]] if n in now else []
            if infos.get(n, []) != registered:
                unsynced.append(f"{n}: registered {registered}, dist-info {infos.get(n, [])}")
        r = check_verify(site)
        assert r.returncode == 0, r.stdout + r.stderr
    phase2_seconds = time.perf_counter() - start

    # A clean pass decides the killed writers' names: all registered, odd indexes removed.
    counter = CTX.Array("q", 1)
    final = Writer(site, prefix, "final", counter, 0)
    for n in k_names:
        final.register(n, "3.0")
    for n in k_names[1::2]:
        final.unregister(n, own=False)
    expected_k = set(k_names[::2])

    state = registry_state(site)
    found = set(state)
    lost = (expected | expected_k) - found
    extra = found - (expected | expected_k)
    left = leftovers(site)
    changed = [n for n in expected
               if (site / "dllreg.libs" / f"{n}.conda" / "MANIFEST").read_bytes() != snapshot[n]]
    r = check_verify(site)
    print(f"\nregistry stress: {PROCESSES} processes x {PER_PROCESS} libraries "
          f"({NAMES} names, each shared by 2): {phase1_ops} operations in {phase1_seconds:.1f} s "
          f"({phase1_ops / phase1_seconds:.0f} ops/s)")
    print(f"  kill phase: {KILL_TRIALS} rounds x {CHURN} writers, {kills} killed with SIGKILL "
          f"({in_lock} while holding the registry lock), "
          f"{churn_ops} operations in {phase2_seconds:.1f} s, {debris} leftovers of killed writers "
          f"seen (readers ignore them), {len(unsynced)} dist-infos out of step {unsynced[:3]}; "
          f"final pass {sum(counter[:])} operations")
    print(f"  entries expected {len(expected) + len(expected_k)}, found {len(found)}, "
          f"lost {len(lost)}, unexpected {len(extra)}, phase-1 entries changed {len(changed)}, "
          f"leftovers {len(left)}; check --verify: {r.stdout.strip()}")
    assert not lost and not extra and not changed and not left, (lost, extra, changed, left)
    assert all(state[n]["Version"] == "3.0" for n in expected_k)
    assert dist_infos(site) == {n: [state[n]["Version"]] for n in sorted(found)}
    assert r.returncode == 0 and f"{len(found)} libraries" in r.stdout, r.stdout + r.stderr
