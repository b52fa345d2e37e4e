"""list / show / check in-process, over a site directory built with the real tools."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from dllreg.__main__ import main
from dllreg.registry import CONSUMER_RECORD
from test_stub_runtime import add_library


def cli(*args: str) -> tuple[int, str]:
    buf = io.StringIO()
    return main(list(args), buf), buf.getvalue()


def add_consumer_record(site: Path, name: str, requires: list[str]) -> None:
    d = site / f"{name}-1.0.dist-info"
    d.mkdir()
    (d / CONSUMER_RECORD).write_text(json.dumps({"format": 1, "requires": requires}))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    s = tmp_path / "site"
    s.mkdir()
    add_library(tmp_path, s)
    add_consumer_record(s, "alpha", ["qsum>=3"])
    add_consumer_record(s, "beta", ["qsum<3", "zlib>=1"])
    return s


def test_list_json_schema(site: Path) -> None:
    code, out = cli("list", "--json", "--path", str(site))
    data = json.loads(out)
    (lib,) = [x for x in data["libraries"] if x["name"] == "qsum"]
    assert code == 0 and data["format"] == 1
    assert {"name", "version", "path", "consumers", "files", "shadowed"} <= set(lib)
    assert [(c["name"], c["satisfied"]) for c in lib["consumers"]] == [("alpha", True),
                                                                      ("beta", False)]


def test_check_reports_each_problem_with_its_fix(site: Path) -> None:
    code, out = cli("check", "--path", str(site))
    assert code == 1
    assert "beta 1.0: requires qsum<3, but only qsum 3.1.4 at" in out
    assert 'fix: pip install "dllreg-lib-zlib>=1"' in out
    assert "alpha" not in out


def test_check_missing_file_and_shadowed_copy(tmp_path: Path, site: Path) -> None:
    (site / "dllreg.libs" / "qsum" / "lib" / "libqsum.so.3").unlink()
    other = tmp_path / "other"
    other.mkdir()
    add_library(tmp_path, other, version="3.2")
    code, out = cli("check", "--json", "--path", str(site), "--path", str(other))
    problems = json.loads(out)["problems"]
    assert code == 1
    assert any("listed in its manifest is missing" in p["message"] for p in problems)
    assert any(p["severity"] == "warning" and "shadowed" in p["message"] for p in problems)


def test_show_and_unknown_library(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = cli("show", "qsum", "--path", str(site))
    assert code == 0 and "libqsum.so.3" in out and "beta 1.0 qsum<3  NOT SATISFIED" in out
    code, _ = cli("show", "nope", "--path", str(site))
    assert code == 2 and "library nope is not installed" in capsys.readouterr().err


def test_broken_manifest_is_reported_not_fatal(site: Path) -> None:
    (site / "dllreg.libs" / "qsum" / "MANIFEST").write_text("Manifest-Version: 7\n")
    code, out = cli("check", "--path", str(site))
    assert code == 1 and "upgrade dllreg" in out


def test_usage_errors_return_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("frobnicate")[0] == 2
    assert cli("--version")[0] == 0


def add_consumer_binary(tmp_path: Path, site: Path, name: str, link_soname: str) -> None:
    """A consumer whose RECORD lists an extension linked against ``link_soname``."""
    from conftest import QSUM_C, gcc_shared

    linkdir = tmp_path / f"link-{name}"
    gcc_shared(linkdir / link_soname, QSUM_C, link_soname)
    pkg = site / name
    gcc_shared(pkg / "_ext.so", "long qsum(long); long use(long n){return qsum(n);}", None,
               f"-L{linkdir}", f"-l:{link_soname}")
    add_consumer_record(site, name, ["qsum>=3"])
    (site / f"{name}-1.0.dist-info" / "RECORD").write_text(f"{name}/_ext.so,,\n")


def test_check_finds_binaries_that_name_the_library_differently(tmp_path: Path, site: Path) -> None:
    add_consumer_binary(tmp_path, site, "good", "libqsum.so.3")
    add_consumer_binary(tmp_path, site, "stale", "libqsum.so")  # linked to a devel symlink name
    code, out = cli("check", "--path", str(site))
    assert code == 1
    assert f"stale 1.0: {site / 'stale' / '_ext.so'} needs libqsum.so, but registry library " \
           "qsum 3.1.4 provides libqsum.so.3" in out
    assert "good 1.0" not in out
