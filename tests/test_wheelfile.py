"""Unsafe wheels are refused before anything is written."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from dllreg.errors import WheelError
from dllreg.wheelfile import WheelWriter, open_wheel, safe_members


def make_zip(path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, "target")
    return path


@pytest.mark.parametrize("members,symlink,match", [
    ({"../evil.so": b"x"}, None, "unsafe member name"),
    ({"/abs/evil.so": b"x"}, None, "unsafe member name"),
    ({"a/./b": b"x"}, None, "unsafe member name"),
    ({"C:/evil": b"x"}, None, "unsafe member name"),
    ({"a\\..\\b": b"x"}, None, "unsafe member name"),
    ({"lib/Foo.so": b"x", "lib/foo.so": b"y"}, None, "collide"),
    ({}, "lib/link.so", "symlink"),
], ids=["dotdot", "absolute", "dot", "drive", "backslash", "case-collision", "symlink"])
def test_unsafe_members(tmp_path: Path, members: dict[str, bytes], symlink: str | None,
                        match: str) -> None:
    path = make_zip(tmp_path / "x.whl", members, symlink)
    with open_wheel(path) as zf, pytest.raises(WheelError, match=match):
        safe_members(zf, str(path))


def test_not_a_zip(tmp_path: Path) -> None:
    (tmp_path / "x.whl").write_bytes(b"not a zip")
    with pytest.raises(WheelError, match="not a readable wheel"):
        open_wheel(tmp_path / "x.whl")


def test_writer_leaves_nothing_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), WheelWriter(out / "a-1-py3-none-any.whl", "a-1.dist-info") as w:
        w.add("a/x.py", b"1")
        raise RuntimeError("interrupted")
    assert list(out.iterdir()) == []


def test_writer_record_lists_every_member(tmp_path: Path) -> None:
    path = tmp_path / "a-1-py3-none-any.whl"
    with WheelWriter(path, "a-1.dist-info") as w:
        w.add("a/x.py", b"1")
        with pytest.raises(WheelError, match="written twice"):
            w.add("A/X.py", b"2")
    with zipfile.ZipFile(path) as zf:
        record = zf.read("a-1.dist-info/RECORD").decode().splitlines()
    assert record == ["a/x.py,sha256=a4ayc_80_OGda4BO_1o_V0etpOqiLx1JwB5S3beHW0s,1",
                      "a-1.dist-info/RECORD,,"]
