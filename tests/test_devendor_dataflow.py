"""devendor's data flow: each input binary parsed once per run (read -> analyse -> plan -> write),
the spool the write step reads back, the threads and their memory budget, the one-buffer patch."""

from __future__ import annotations

import hashlib
import threading
import time
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import dllreg.binary.elfversions as elfversions
import dllreg.convert.read as read_mod
import dllreg.env.inspect as inspect_mod
from conftest import gcc_shared
from dllreg.binary.elfpatch import replace_needed, replaced_buffer
from dllreg.convert.plan import plan_devendor
from dllreg.convert.read import DevendorError, read_inputs
from dllreg.convert.spool import Spool
from dllreg.convert.threads import Budget, ordered_map
from dllreg.convert.write import build_outputs, set_soname, write_outputs
from dllreg.recipes.schema import RecipeBook
from test_devendor import book, needs_gcc, recipes, vendored_wheel  # noqa: F401 - fixtures

BAR_C = "int bar(int x){return x+2;}\n"


def _inputs(tmp: Path) -> list[Path]:
    a = vendored_wheel(tmp, "pkga", extra_libs={"libbar-5e6f7a8b.so.2": BAR_C})
    b = vendored_wheel(tmp, "pkgb", mangle="9f8e7d6c")
    return [a, b]


def _contents(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _binaries(paths: list[Path]) -> set[str]:
    out = set()
    for p in paths:
        for data in _contents(p).values():
            if data[:4] == b"\x7fELF":
                out.add(hashlib.sha256(data).hexdigest())
    return out


@needs_gcc
def test_each_input_binary_is_parsed_once_and_planning_reads_no_binary(
        tmp_path: Path, book: RecipeBook, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    paths = _inputs(tmp_path)
    parsed: Counter[tuple[str, str]] = Counter()
    for module, name in ((inspect_mod, "read_elf"), (elfversions, "read_versions")):
        real = getattr(module, name)

        def counting(data: bytes, *, _real: Any = real, _name: str = name) -> Any:
            parsed[(_name, hashlib.sha256(data).hexdigest())] += 1
            return _real(data)

        monkeypatch.setattr(module, name, counting)
    member_reads: list[str] = []
    real_bytes = read_mod._member_bytes

    def reading(zf: zipfile.ZipFile, info: zipfile.ZipInfo, origin: str) -> bytes:
        member_reads.append(info.filename)
        return real_bytes(zf, info, origin)

    monkeypatch.setattr(read_mod, "_member_bytes", reading)
    refused: list[str] = []
    wheels = read_inputs(paths, refused)
    assert refused == []
    binaries = _binaries(paths)
    assert len(binaries) == 5  # two extensions, two libfoo builds, libbar
    assert {d for _, d in parsed} == binaries
    assert set(parsed.values()) == {1}, parsed  # read_elf once and read_versions once, each
    assert {n for n, _ in parsed} == {"read_elf", "read_versions"}
    after_read, reads = dict(parsed), len(member_reads)
    for _ in range(2):  # install plans twice when it fetched libraries: still nothing is parsed
        plan = plan_devendor(wheels, book, [])
        build_outputs(plan)
    assert dict(parsed) == after_read
    # only small texts are read again (__init__.py, METADATA): no binary
    assert member_reads[reads:] and not any(".so" in n for n in member_reads[reads:])
    assert "package" in {d.action for wp in plan.wheels for d in wp.decisions}


@needs_gcc
def test_the_spool_gives_the_same_wheels_and_falls_back_to_the_archive(
        tmp_path: Path, book: RecipeBook, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    paths = _inputs(tmp_path)

    def devendor(spool: Path | None, out: Path) -> dict[str, dict[str, bytes]]:
        wheels = read_inputs(paths, [], spool)
        written = write_outputs(build_outputs(plan_devendor(wheels, book, [])), out)
        return {p.name: _contents(p) for p in written.paths}

    plain = devendor(None, tmp_path / "plain")
    spool = tmp_path / "spool"
    spool.mkdir()
    spooled = read_inputs(paths, [], spool)
    assert all(w.spool and Path(w.spool).parent == spool for w in spooled)
    assert all((m.spooled >= 0) == (m.facts is not None) for w in spooled for m in w.members)
    assert devendor(spool, tmp_path / "spooled") == plain  # byte for byte, member by member

    # no room in the spool: spooling stops, the file goes, every member is read from its archive
    writes = []

    class Full:
        def __init__(self, real: Any) -> None:
            self.real = real

        def write(self, data: bytes) -> int:
            writes.append(len(data))
            if len(writes) > 1:
                raise OSError(28, "No space left on device")
            return int(self.real.write(data))

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

    real_init = Spool.__init__

    def full_init(self: Spool, directory: Path | None) -> None:
        real_init(self, directory)
        self._file = Full(self._file)  # type: ignore[assignment]

    monkeypatch.setattr(Spool, "__init__", full_init)
    before = set(spool.iterdir())
    wheels = read_inputs(paths, [], spool)
    assert writes and all(w.spool == "" for w in wheels)
    assert set(spool.iterdir()) == before  # the failed spool files went
    monkeypatch.undo()
    assert devendor(tmp_path / "no-such-dir", tmp_path / "nodir") == plain  # no spool at all

    # a spool cut short after the check is refused, naming the wheel; nothing is written
    Path(spooled[0].spool).write_bytes(b"")
    with pytest.raises(DevendorError, match=r"pkga-1\.0.*cut short"):
        write_outputs(build_outputs(plan_devendor(spooled, book, [])), tmp_path / "cut")
    assert not list((tmp_path / "cut").glob("*.whl"))


@needs_gcc
def test_one_buffer_patch_equals_the_bytes_patch(tmp_path: Path) -> None:
    lib = tmp_path / "libfoo-1a2b3c4d.so.1"
    gcc_shared(tmp_path / "libbar.so.2", BAR_C, "libbar.so.2")
    gcc_shared(lib, "int bar(int); int foo(int x){return bar(x);}\n", "libfoo-1a2b3c4d.so.1",
               f"-L{tmp_path}", "-l:libbar.so.2", "-Wl,--disable-new-dtags,-rpath,$ORIGIN:/opt/x")
    data = lib.read_bytes()
    cases: list[tuple[dict[str, str], Any]] = [
        ({"libbar.so.2": "libbar-0123abcd.so.2"}, None),  # shorter: in place
        ({"libbar.so.2": "libbar-a-much-longer-name-0123abcd.so.2"}, None),  # a new string table
        ({"libbar.so.2": "libbar-0123abcd.so.2"}, lambda e: True),  # and every rpath goes
        ({}, lambda e: e == "/opt/x"),
    ]
    for renames, drop in cases:
        buf = replaced_buffer(data, renames, drop_rpath=drop)
        assert isinstance(buf, bytearray)
        assert bytes(buf) == replace_needed(data, renames, drop_rpath=drop)
        # the SONAME is set in the same buffer, as the bytes way would
        assert set_soname(buf, "libfoo.so.1") is buf
        assert bytes(buf) == set_soname(replace_needed(data, renames, drop_rpath=drop), "libfoo.so.1")
    assert replaced_buffer(data, {"libnothere.so": "x.so"}, drop_rpath=lambda e: False) is None
    assert replace_needed(data, {}) is data


def test_budget_holds_one_large_member_at_a_time() -> None:
    budget = Budget(limit=100 << 20)
    held: list[int] = []
    seen: list[tuple[int, ...]] = []
    lock = threading.Lock()

    def hold(size: int) -> None:
        with budget.hold(size):
            with lock:
                held.append(size)
                seen.append(tuple(held))
            time.sleep(0.02)
            with lock:
                held.remove(size)

    sizes = [80 << 20, 70 << 20, 30 << 20, 20 << 20, 90 << 20, 10 << 20, 200 << 20]
    threads = [threading.Thread(target=hold, args=(s,)) for s in sizes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # never more than the limit at once, except a member over it, which is held alone
    assert len(seen) == len(sizes) and not held
    assert all(sum(s) <= 100 << 20 or len(s) == 1 for s in seen), seen
    assert any(len(s) > 1 for s in seen)  # small enough members do share the budget
    small = Budget(limit=1)
    with small.hold(10), small.hold(100):  # under 1 MB: not counted, never waits
        pass


def test_ordered_map_keeps_order_starts_the_costliest_first_and_raises_the_first_error() -> None:
    started: list[int] = []

    def work(x: int) -> int:
        started.append(x)
        time.sleep(0.001 * x)
        return x * x

    items = [3, 9, 1, 7, 5]
    assert ordered_map(work, items, threads=2, cost=lambda x: x) == [x * x for x in items]
    assert set(started[:2]) == {9, 7}
    assert ordered_map(work, items, threads=1) == [x * x for x in items]

    def boom(x: int) -> int:
        if x in (7, 1):
            raise ValueError(f"item {x}")
        return x

    with pytest.raises(ValueError, match="item 1"):  # the first in the items' order
        ordered_map(boom, items, threads=2, cost=lambda x: x)
