"""The stub, ``check``, ``list`` and ``show`` agree on what is installed, whatever sits on
sys.path (zip files, plain files, missing folders, relative entries) and whatever the current
directory holds. Real stubs and the real CLI, in fresh interpreters.

The layout: the consumer ``cpkg`` (with a dist-info naming its requirement) in ``app``, the
registry qsum 3.1.4 in ``libs``, and between them entries that hold no usable copy. The
current directory holds a complete planted ``dllreg.libs/qsum`` 9.9 (``-1`` for every sum),
and so does the zip: neither may count.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import has_gcc
from dllreg.env.registry import site_dirs
from test_stub_runtime import add_consumer, add_library, python

pytestmark = pytest.mark.skipif(not has_gcc(), reason="needs gcc")

PLANT = "long qsum(long n){return -1;}"


class Layout:
    def __init__(self, tmp: Path) -> None:
        self.app, self.libs, self.cwd = tmp / "app", tmp / "libs", tmp / "cwd"
        for d in (self.app, self.libs, self.cwd):
            d.mkdir()
        add_consumer(tmp, self.app, "cpkg")
        info = self.app / "cpkg-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cpkg\nVersion: 0.1\n")
        (info / "dllreg.json").write_text(json.dumps({"requires": ["qsum>=3.1"]}))
        self.lib = add_library(tmp, self.libs)
        add_library(tmp, self.cwd, "9.9", PLANT)  # the planted copy in the current directory
        self.zip = tmp / "x.zip"  # a zip (as PYTHONPATH=x.zip or base_library.zip) holding one
        with zipfile.ZipFile(self.zip, "w") as zf:
            for f in (self.cwd / "dllreg.libs").rglob("*"):
                zf.write(f, str(f.relative_to(self.cwd)))
        self.file = tmp / "plain-file"
        self.file.write_text("not a directory\n")
        self.missing = tmp / "missing"
        # In sys.path order; '' and '.' are the current directory, 'dllreg.libs/..' too.
        self.entries = [str(self.zip), str(self.file), str(self.missing), "", ".",
                        "dllreg.libs/..", str(self.libs)]

    def pythonpath(self) -> str:
        # PYTHONPATH cannot carry relative entries (Python makes '' absolute there): those
        # are put on sys.path by the probe's own code (the ``python`` helper and PROBE).
        return os.pathsep.join([str(self.app), *(e for e in self.entries if os.path.isabs(e))])

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dllreg", *args], capture_output=True,
                              text=True, cwd=self.cwd,
                              env={**os.environ, "PYTHONPATH": self.pythonpath()})


@pytest.fixture
def lay(tmp_path: Path) -> Layout:
    return Layout(tmp_path)


# Run in the child: the entries go between app and libs, then cpkg is imported.
PROBE = """
import sys
sys.path[:0] = {entries!r}
import cpkg
print(cpkg.total(100), cpkg._dlls.path("qsum"), "_require" in vars(cpkg._dlls))
"""


def test_zip_file_and_missing_entries_before_the_site_are_absent(lay: Layout) -> None:
    # The issue's case: a zip before the library's site dir made the stub raise "manifest ...
    # is unreadable ([Errno 20] Not a directory)". The fast path must pass over them too
    # (no cold section compiled), and the full algorithm (DLLREG_DEBUG) decide the same.
    code = PROBE.format(entries=lay.entries[:-1])
    want = f"5050 {lay.lib / 'lib' / 'libqsum.so.3'}"
    fast = python(code, lay.app, lay.libs, cwd=lay.cwd)
    assert fast.stdout.strip() == want + " False", fast.stderr
    cold = python(code, lay.app, lay.libs, cwd=lay.cwd, DLLREG_DEBUG="1")
    assert cold.stdout.strip() == want + " True", cold.stderr
    assert f"no qsum in {lay.zip}" in cold.stderr and str(lay.cwd) not in cold.stderr


def test_the_cli_sees_what_the_stub_sees_whatever_the_cwd(lay: Layout) -> None:
    listed = json.loads(lay.cli("list", "--json").stdout)["libraries"]
    assert [(r["name"], r["version"], r["path"]) for r in listed] == [
        ("qsum", "3.1.4", str(lay.lib))]
    shown = json.loads(lay.cli("show", "qsum", "--json").stdout)
    assert shown["library"]["path"] == str(lay.lib) and shown["shadowed_copies"] == []
    check = lay.cli("check")
    assert check.returncode == 0 and "1 libraries, 1 consumers: OK" in check.stdout, check


def test_check_fails_when_the_import_fails_even_beside_a_planted_registry(lay: Layout) -> None:
    # `python -m dllreg` puts the current directory first on its own sys.path; the stub in a
    # consumer's import never searches it, so check must not either.
    shutil.rmtree(lay.lib)
    r = python(PROBE.format(entries=lay.entries[:-1]), lay.app, lay.libs, cwd=lay.cwd)
    assert r.returncode != 0
    assert "cpkg requires native library qsum>=3.1, but it is not installed" in r.stderr
    check = lay.cli("check")
    assert check.returncode == 1, check
    assert "cpkg 0.1: requires native library qsum>=3.1, which is not installed" in check.stdout
    assert json.loads(lay.cli("list", "--json").stdout)["libraries"] == []
    show = lay.cli("show", "qsum")
    assert show.returncode == 2 and "library qsum is not installed" in show.stderr


def test_check_with_python_dash_p_and_the_console_script(lay: Layout) -> None:
    # The other ways to run the CLI: the console script (its bin folder first) and, from
    # 3.11, -P (no program entry added at all): the same answer, from the same folder.
    shutil.rmtree(lay.lib)
    env = {**os.environ, "PYTHONPATH": lay.pythonpath()}
    script = Path(sys.executable).with_name("dllreg")
    assert script.is_file(), script
    cmds = [[str(script), "check"]]
    if sys.version_info >= (3, 11):
        cmds.append([sys.executable, "-P", "-m", "dllreg", "check"])
    for cmd in cmds:
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=lay.cwd, env=env)
        assert r.returncode == 1 and "qsum>=3.1, which is not installed" in r.stdout, (cmd, r)


# In the child: the stub's own search (in the full algorithm, traced by DLLREG_DEBUG when the
# library is absent everywhere) against site_dirs over the same sys.path.
COMPARE = """
import json, sys
sys.path[:0] = {entries!r}
from dllreg.env.registry import site_dirs
dirs = [str(p) for p in site_dirs()]
try:
    import cpkg
except ImportError as e:
    print(json.dumps(dirs))
"""


def test_site_dirs_and_the_stub_search_the_same_folders(lay: Layout) -> None:
    shutil.rmtree(lay.lib)
    (lay.libs / "sub").mkdir()
    entries = [str(lay.app), *lay.entries[:-1], str(lay.libs / "sub") + "/", str(lay.libs)]
    r = python(COMPARE.format(entries=entries), cwd=lay.cwd, DLLREG_DEBUG="1")
    assert r.returncode == 0, r.stderr
    dirs = json.loads(r.stdout)
    searched = [line.split(" in ", 1)[1] for line in r.stderr.splitlines()
                if line.startswith("dllreg: cpkg: no qsum in ")]
    # (the package's own vendored folder, cpkg/dllreg.libs, is the last place the stub looks)
    assert searched.pop() == str(lay.app / "cpkg")
    # The stub visits every absolute entry (finding nothing in the zip, the file, the missing
    # folder); site_dirs keeps the ones that are directories, in the same order, once each.
    assert dirs == list(dict.fromkeys(
        str(Path(d)) for d in searched if os.path.isdir(d))), (dirs, searched)
    assert dirs[0] == str(lay.app) and str(lay.libs / "sub") in dirs
    assert not {str(lay.cwd), ""} & set(dirs) and str(lay.zip) in searched
    # The same answer in this process for the same entries.
    assert [str(p) for p in site_dirs(path=["", ".", "rel", str(lay.zip), str(lay.file),
                                            str(lay.missing), str(lay.libs)])] == [str(lay.libs)]


def test_check_from_inside_a_searched_site_still_sees_it(lay: Layout) -> None:
    # Only the entry `python -m` put first is dropped, not every entry equal to the cwd.
    r = subprocess.run([sys.executable, "-m", "dllreg", "check"], capture_output=True,
                       text=True, cwd=lay.libs, env={**os.environ, "PYTHONPATH": lay.pythonpath()})
    assert r.returncode == 0 and "1 libraries, 1 consumers: OK" in r.stdout, r


def test_a_manifest_that_cannot_be_read_is_an_error_for_both(lay: Layout) -> None:
    # The folder is there but its MANIFEST is not a file: not "absent" (that is only for
    # entries and folders that are not there), but unreadable, for the stub and for check.
    manifest = lay.lib / "MANIFEST"
    manifest.unlink()
    manifest.mkdir()
    r = python(PROBE.format(entries=lay.entries[:-1]), lay.app, lay.libs, cwd=lay.cwd)
    assert "is unreadable" in r.stderr and str(manifest) in r.stderr, r.stderr
    check = lay.cli("check")
    assert check.returncode == 1 and f"{manifest}: cannot read manifest" in check.stdout, check
