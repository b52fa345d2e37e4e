from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dllreg.build.config import import_backend, load_config, parse_config
from dllreg.errors import ConfigError


def cfg(**table: Any) -> dict[str, Any]:
    return {"tool": {"dllreg": table}}


def test_valid_table() -> None:
    c = parse_config(cfg(backend="setuptools.build_meta",
                         requires=["openblas>=0.3", "zlib; sys_platform == 'nonexistent'"]))
    assert c.backend == "setuptools.build_meta"
    assert [r.name for r in c.requires] == ["openblas", "zlib"]
    assert [r.name for r in c.active_requires()] == ["openblas"]


@pytest.mark.parametrize("pyproject,match", [
    ({}, "no \\[tool.dllreg\\] table"),
    (cfg(requires=[]), "backend: missing"),
    (cfg(backend=["setuptools.build_meta"]), "backend: .* not a usable backend"),
    (cfg(backend="dllreg.build"), "not a usable backend"),
    (cfg(backend="x", requires="openblas"), "requires: must be a list"),
    (cfg(backend="x", requires=["openblas>>1"]), r"requires\[0\]: invalid requirement"),
    (cfg(backend="x", requires=[3]), r"requires\[0\]: requirement must be a string"),
    (cfg(backend="x", requires=["-bad"]), r"requires\[0\]: invalid"),
    (cfg(backend="x", requires=["a>1", "A<3"]), "listed twice"),
    (cfg(backend="x", require=["a"]), "require: unknown key"),
], ids=["no-table", "no-backend", "backend-list", "self", "requires-str", "bad-spec",
        "not-str", "bad-name", "dup", "typo"])
def test_bad_tables_name_file_and_key(pyproject: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        parse_config(pyproject)
    assert str(info.value).startswith("pyproject.toml")


def test_invalid_toml_names_file(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.dllreg\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(tmp_path)


def test_backend_that_cannot_be_imported(tmp_path: Path) -> None:
    c = parse_config(cfg(backend="no_such_backend_xyz.api"))
    with pytest.raises(ConfigError, match="backend: cannot import 'no_such_backend_xyz.api'.*"
                       r"\[build-system\] requires"):
        import_backend(c, tmp_path)


def test_in_tree_backend_path(tmp_path: Path) -> None:
    (tmp_path / "_be").mkdir()
    (tmp_path / "_be" / "my_inner_backend.py").write_text("MARK = 1\n")
    c = parse_config(cfg(backend="my_inner_backend", **{"backend-path": ["_be"]}))
    assert import_backend(c, tmp_path).MARK == 1


@pytest.mark.parametrize("inner_has_hook", [True, False])
def test_optional_prepare_hook_follows_the_inner_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         inner_has_hook: bool) -> None:
    import dllreg.build

    name = f"inner_{inner_has_hook}"
    (tmp_path / "_be").mkdir()
    hook = "def prepare_metadata_for_build_wheel(d, c=None): return 'x'\n" if inner_has_hook else ""
    (tmp_path / "_be" / f"{name}.py").write_text("def build_wheel(d, c=None, m=None): return ''\n" + hook)
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.dllreg]\nbackend = "{name}"\nbackend-path = ["_be"]\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    # Frontends (pyproject_hooks) probe with getattr and fall back to one wheel build.
    assert hasattr(dllreg.build, "prepare_metadata_for_build_wheel") is inner_has_hook
    assert not hasattr(dllreg.build, "prepare_metadata_for_build_editable")


def _project(tmp_path: Path, text: str) -> Path:
    (tmp_path / "pyproject.toml").write_text(text)
    return tmp_path


def test_pep725_external_alone_gives_the_same_requirements(tmp_path: Path) -> None:
    external = load_config(_project(tmp_path, """
[external]
host-requires = ["dep:generic/openblas@>=0.3"]
[tool.dllreg]
backend = "setuptools.build_meta"
"""))
    tool = parse_config(cfg(backend="setuptools.build_meta", requires=["openblas>=0.3"]))
    assert external.requires == tool.requires


def test_pep725_and_tool_table_must_agree(tmp_path: Path) -> None:
    agreeing = load_config(_project(tmp_path, """
[external]
host-requires = ["dep:generic/openblas@>=0.3"]
[tool.dllreg]
backend = "setuptools.build_meta"
requires = ["openblas>=0.3"]
"""))
    assert [str(r) for r in agreeing.requires] == ["openblas>=0.3"]
    with pytest.raises(ConfigError, match=r"disagree.*\n  openblas: \[tool.dllreg\] requires says "
                       r"'openblas>=0.3', \[external\] says 'openblas>=0.4'"):
        load_config(_project(tmp_path, """
[external]
host-requires = ["dep:generic/openblas@>=0.4"]
[tool.dllreg]
backend = "setuptools.build_meta"
requires = ["openblas>=0.3"]
"""))


def test_pep725_unknown_depurl_gets_a_did_you_mean(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean openblas"):
        load_config(_project(tmp_path, """
[external]
host-requires = ["dep:generic/openbals"]
[tool.dllreg]
backend = "setuptools.build_meta"
"""))


def test_build_notes_names_outside_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import dllreg.build

    (tmp_path / "_be").mkdir()
    (tmp_path / "_be" / "plain_inner.py").write_text("def get_requires_for_build_wheel(c=None): return []\n")
    _project(tmp_path, '[tool.dllreg]\nbackend = "plain_inner"\nbackend-path = ["_be"]\n'
                       'requires = ["openbals>=0.3", "qsum>=1"]\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    assert dllreg.build.get_requires_for_build_wheel() == ["dllreg-lib-openbals>=0.3",
                                                          "dllreg-lib-qsum>=1"]
    err = capsys.readouterr().err
    assert "openbals>=0.3 (openbals has no dllreg recipe; did you mean openblas" in err


def test_inner_backend_failure_is_shown_unchanged_with_context(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import dllreg.build

    (tmp_path / "_be").mkdir()
    (tmp_path / "_be" / "failing_inner.py").write_text(
        "def build_wheel(d, c=None, m=None):\n"
        "    open(d + '/half.whl', 'w').write('x')\n"
        "    raise RuntimeError('compiler exploded: foo.c:3: error')\n")
    _project(tmp_path, '[tool.dllreg]\nbackend = "failing_inner"\nbackend-path = ["_be"]\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    out = tmp_path / "wheels"
    out.mkdir()
    with pytest.raises(RuntimeError) as info:
        dllreg.build.build_wheel(str(out))
    assert info.value.args == ("compiler exploded: foo.c:3: error",)  # unchanged
    assert "the inner backend 'failing_inner' failed in build_wheel" in capsys.readouterr().err
    assert list(out.iterdir()) == []  # the inner backend wrote into dllreg's temp dir only


def test_inner_systemexit_gets_the_context_note(tmp_path: Path) -> None:
    """meson-python fails with SystemExit: dllreg's note must still say which backend failed."""
    import subprocess
    import sys

    (tmp_path / "pyproject.toml").write_text(
        '[tool.dllreg]\nbackend = "failing"\nbackend-path = ["."]\nrequires = []\n')
    (tmp_path / "failing.py").write_text(
        "def build_wheel(d, c=None, m=None):\n    raise SystemExit('meson setup failed')\n")
    r = subprocess.run([sys.executable, "-c", "import dllreg.build as b; b.build_wheel('out')"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 1 and "meson setup failed" in r.stderr
    assert "dllreg.build: the inner backend 'failing' failed in build_wheel" in r.stderr, r.stderr


def test_dlopen_names_required_libraries_only() -> None:
    from dllreg.build.config import parse_config
    from dllreg.errors import ConfigError

    table = {"backend": "hatchling.build", "requires": ["qsum>=3"], "dlopen": ["QSum"]}
    assert parse_config({"tool": {"dllreg": table}}).dlopen == ("qsum",)
    with pytest.raises(ConfigError, match=r"dlopen\[0\]: zlib is not in requires"):
        parse_config({"tool": {"dllreg": {**table, "dlopen": ["zlib"]}}})
    with pytest.raises(ConfigError, match="dlopen: must be a list"):
        parse_config({"tool": {"dllreg": {**table, "dlopen": "qsum"}}})
