"""Fuzzing the text readers: every input either parses or raises a DllregError.

``Manifest.from_text``, ``parse_config``, ``load_config`` and ``parse_pc`` read files that
users, other tools or a half-finished install wrote. Whatever they get, the CLI must be able
to print a one-line ``error: ...`` (it catches DllregError only), so any other exception type
is a bug. Each property counts the inputs it ran and checks the count, so a silently
shrunken run (filters rejecting everything, a wrong strategy) fails instead of passing.

The four bugs this fuzzing found (a non-table ``tool``, undecodable pyproject.toml bytes,
exponential ``${var}`` expansion, line breaks other than ``\n`` in a manifest) are fixed; their
reproducers stay at the end of this file as regression tests.
"""

from __future__ import annotations

import contextlib
import string
import subprocess
import sys
import tempfile
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dllreg.build.config import ConsumerConfig, load_config, parse_config
from dllreg.errors import DllregError
from dllreg.libwheel.manifest import FORMAT_VERSION, LibraryFile, Manifest
from dllreg.libwheel.pkgconfig import parse_pc

#: Inputs run per property, and in total; printed at the end of the module (pytest -s).
RAN: Counter[str] = Counter()

FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    total = sum(RAN.values())
    print(f"\nfuzz inputs run: {total} total; " + ", ".join(f"{k}={v}" for k, v in sorted(RAN.items())))


def _run(examples: int, name: str, body: Callable[[Any], object], strategy: st.SearchStrategy[Any]) -> None:
    """Run ``body`` as a hypothesis property over ``examples`` inputs and check the count."""
    before = RAN[name]

    @settings(FAST, max_examples=examples)
    @given(strategy)
    def prop(value: Any) -> None:
        RAN[name] += 1
        body(value)

    prop()
    ran = RAN[name] - before
    # Hypothesis may stop early only if it exhausts a small input space; none of these are small.
    assert ran >= examples, f"{name}: only {ran} of {examples} inputs ran"


def _contract(call: Callable[[], object]) -> None:
    """Return normally or raise DllregError: any other exception fails the property."""
    with contextlib.suppress(DllregError):
        call()


# --------------------------------------------------------------------------- Manifest.from_text

_KEYS = ["Manifest-Version", "Name", "Version", "Platform", "Generator", "Source", "Requires",
         "Library", "Header", "Import-Library", "Dll-Directory", "Pkgconfig", "Future-Key"]
_SHA = "0123456789abcdef" * 4
# Small alphabets that reach the interesting branches (separators, paths, specifiers, markers).
_NAMEISH = st.text(alphabet=string.ascii_letters + string.digits + "._-", min_size=1, max_size=12)
_WEIRD = st.text(alphabet=string.ascii_letters + string.digits + "._-/\\:;,<>=!~@*' \t\"()[]{}#\0\r"
                 "\x85\u2028é", max_size=30)
_VALUE = st.one_of(_NAMEISH, _WEIRD, st.text(max_size=20),
                   st.sampled_from(["", ".", "..", "/", "a/../b", "c:/x", "1.0", "1.0.post1",
                                    "openblas>=0.3", "x; python_version > '3'", "x[extra]",
                                    "x @ https://e/x.whl", "x; python_version > 'abc'",
                                    "x; os_name == ", "lib/a\\b", "a//b", _SHA]))


@st.composite
def valid_manifests(draw: st.DrawFn) -> str:
    libs = tuple(
        LibraryFile(f"lib/{draw(_NAMEISH)}.so.{i}", draw(_NAMEISH), _SHA,
                    tuple(draw(st.lists(_NAMEISH, max_size=3))))
        for i in range(draw(st.integers(1, 3)))
    )
    m = Manifest(
        name=draw(st.sampled_from(["openblas", "zlib", "a", "a-b-c-d"])),
        version=draw(st.sampled_from(["1", "0.3.28", "1.2.3.post1", "2!1.0rc1"])),
        platform=draw(st.sampled_from(["linux_x86_64", "win_amd64", "any"])),
        libraries=libs,
        headers=tuple(draw(st.lists(_NAMEISH.map(lambda h: f"include/{h}.h"), max_size=2))),
        pkgconfig=draw(st.sampled_from([None, "lib/pkgconfig/x.pc"])),
        import_libraries=tuple(draw(st.lists(st.just("lib/x.dll.a"), max_size=1))),
        dll_directories=tuple(draw(st.lists(st.just("bin"), max_size=1))),
        # only \n and \r end a manifest line (test_fixed_source_line_break); to_text refuses them
        source=draw(st.text(max_size=10).filter(lambda s: "\n" not in s and "\r" not in s)),
        generator="dllreg fuzz",
    )
    text = m.to_text()
    # the unmutated text must round-trip: otherwise the structured mutations start from junk
    assert Manifest.from_text(text) == m
    return text


def _mutate(draw: st.DrawFn, text: str) -> str:
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1)) if lines else 0
        kind = draw(st.sampled_from(["drop", "dup", "key", "value", "tab", "sep", "insert", "field"]))
        if not lines:
            lines.append(f"{draw(st.sampled_from(_KEYS))}: {draw(_VALUE)}")
            continue
        key, _, value = lines[i].partition(": ")
        if kind == "drop":
            del lines[i]
        elif kind == "dup":
            lines.insert(i, lines[i])
        elif kind == "key":
            lines[i] = f"{draw(st.one_of(st.sampled_from(_KEYS), _WEIRD))}: {value}"
        elif kind == "value":
            lines[i] = f"{key}: {draw(_VALUE)}"
        elif kind == "tab":
            pos = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:pos] + draw(st.sampled_from(["\t", "\t\t", ""])) + lines[i][pos + 1:]
        elif kind == "sep":
            lines[i] = key + draw(st.sampled_from([":", ":  ", " : ", "=", ": : "])) + value
        elif kind == "insert":
            lines.insert(i, f"{draw(st.sampled_from(_KEYS))}: {draw(_VALUE)}")
        else:  # replace one tab-separated field of a Library line (or any line)
            fields = value.split("\t")
            j = draw(st.integers(0, len(fields) - 1))
            fields[j] = draw(_VALUE)
            lines[i] = f"{key}: " + "\t".join(fields)
    end = draw(st.sampled_from(["\n", "", "\r\n", "\n\n"]))
    return draw(st.sampled_from(["\n", "\r\n", "\r"])).join(lines) + end


@st.composite
def mutated_manifests(draw: st.DrawFn) -> str:
    return _mutate(draw, draw(valid_manifests()))


def _manifest(text: str) -> None:
    _contract(lambda: Manifest.from_text(text, "fuzz"))


def test_manifest_arbitrary_text() -> None:
    _run(1500, "manifest.text", _manifest, st.text())


def test_manifest_line_soup() -> None:
    """Random lines made of known keys and odd values: reaches past the key checks."""
    header = st.just(f"Manifest-Version: {FORMAT_VERSION}\nName: a\nVersion: 1\nPlatform: p\n")
    line = st.builds(lambda k, v: f"{k}: {v}", st.sampled_from(_KEYS), _VALUE)
    soup = st.builds(lambda h, ls: h + "\n".join(ls), st.one_of(header, st.just("")),
                     st.lists(line, max_size=8))
    _run(600, "manifest.soup", _manifest, soup)


def test_manifest_structured_mutations() -> None:
    _run(600, "manifest.mutated", _manifest, mutated_manifests())


def test_manifest_valid_round_trip() -> None:
    _run(100, "manifest.valid", lambda text: Manifest.from_text(text), valid_manifests())


# --------------------------------------------------------------------------- parse_config

_SCALARS = st.one_of(st.text(max_size=12), st.integers(), st.booleans(), st.floats(allow_nan=True),
                     st.sampled_from(["setuptools.build_meta", "dllreg.build", "  ", "openblas>=0.3",
                                      "zlib; sys_platform == 'x'", "openblas", "a>>1", "x[e]",
                                      "x @ file:///x", "x; python_version > 'abc'"]))
_TOML = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(["backend", "backend-path", "requires", "tool",
                                               "dllreg"]), st.text(max_size=6)),
                    inner, max_size=4)),
    max_leaves=8)


@st.composite
def pyprojects(draw: st.DrawFn) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for key in draw(st.sets(st.sampled_from(["backend", "backend-path", "requires", "other"]))):
        table[key] = draw(st.one_of(
            _TOML,
            st.lists(st.sampled_from(["openblas>=0.3", "zlib", "openblas<1", "a.b-c", "_bad"]),
                     max_size=3),
            st.lists(st.text(max_size=8), max_size=3),
            st.sampled_from(["setuptools.build_meta", "mesonpy", "pkg.mod:obj"]),
        ))
    tool: Any = draw(st.one_of(st.just({"dllreg": table}), st.builds(dict), _TOML,
                               st.dictionaries(st.text(max_size=5), _TOML, max_size=2).map(
                                   lambda d: {**d, "dllreg": table})))
    return draw(st.one_of(st.just({"tool": tool}), st.just({}),
                          st.dictionaries(st.sampled_from(["project", "tool", "external"]), _TOML,
                                          max_size=3)))


def _config(pyproject: dict[str, Any]) -> None:
    def call() -> None:
        result = parse_config(pyproject)
        assert isinstance(result, ConsumerConfig)
    _contract(call)


def test_parse_config_arbitrary_tables() -> None:
    _run(400, "parse_config", _config, pyprojects())


# --------------------------------------------------------------------------- load_config

_TOML_LINES = st.lists(st.sampled_from([
    "[tool.dllreg]", "[tool]", "[external]", "[project]", 'backend = "setuptools.build_meta"',
    'backend = 1', 'requires = ["openblas>=0.3"]', 'requires = ["a", "a"]', "requires = [[1]]",
    'backend-path = ["."]', "tool = 1", "tool.dllreg = 1", 'external = "x"', "dllreg = {}",
    'host-requires = ["dep:generic/openblas"]', 'build-requires = ["dep:virtual/compiler/c"]',
    'host-requires = ["pkg:generic/x", 1]', "dependencies = []", "x = [", '"\\u00e9" = 1',
]), max_size=8).map(lambda ls: "\n".join(ls).encode())


def test_load_config_arbitrary_bytes(tmp_path_factory: pytest.TempPathFactory) -> None:
    d = tmp_path_factory.mktemp("pyproject")
    path = d / "pyproject.toml"

    def body(data: bytes) -> None:
        path.write_bytes(data)
        _contract(lambda: load_config(d))

    _run(500, "load_config.bytes", body, st.binary(max_size=200))
    _run(700, "load_config.toml", body, st.one_of(
        _TOML_LINES, st.text(max_size=80).map(lambda s: s.encode("utf-8", "surrogatepass"))))


# --------------------------------------------------------------------------- parse_pc

_PC_LINE = st.builds(
    lambda k, sep, v: f"{k}{sep}{v}",
    st.sampled_from(["prefix", "libdir", "includedir", "pcfiledir", "a", "b", "Name", "Libs",
                     "Cflags", "x.y", "Requires", ""]),
    st.sampled_from(["=", ":", " = ", ": ", "", " "]),
    st.lists(st.sampled_from(["${prefix}", "${libdir}", "${a}", "${b}", "${pcfiledir}", "${",
                              "${}", "$", "}", "-L", "/usr", "#c", " ", "${x.y}", "\\", "'", '"']),
             max_size=5).map("".join),
)


def _pc(text: str) -> None:
    def call() -> None:
        variables, _fields = parse_pc(text, "/site/lib/pkgconfig", "fuzz.pc")
        assert variables["pcfiledir"] == "/site/lib/pkgconfig" or "pcfiledir" in text
    _contract(call)


def test_parse_pc_arbitrary_text() -> None:
    _run(1500, "parse_pc.text", _pc, st.text())


def test_parse_pc_line_soup() -> None:
    _run(700, "parse_pc.soup", _pc, st.lists(_PC_LINE, max_size=10).map("\n".join))


@st.composite
def reference_chains(draw: st.DrawFn) -> str:
    """v0 .. vN where each refers to 1-2 earlier (or later: loops, undefined) variables.

    Fan-out is at most 2 along a path of at most 9 variables, so the expansion stays small
    (see test_fixed_pc_expansion_is_exponential for what an unbounded chain does).
    """
    n = draw(st.integers(1, 9))
    lines = []
    for i in range(n):
        refs = draw(st.lists(st.integers(0, n + 1), min_size=0, max_size=2))
        lines.append(f"v{i}=" + "x".join(f"${{v{r}}}" for r in refs) + "/" + str(i))
    lines.append(f"Libs: -L${{v{draw(st.integers(0, n))}}}")
    return "\n".join(draw(st.permutations(lines)))


def test_parse_pc_reference_chains() -> None:
    _run(600, "parse_pc.chains", _pc, reference_chains())


def test_parse_pc_deep_chain_is_refused_not_recursion_error() -> None:
    """A 1000-long linear chain must end in the loop/depth error, not RecursionError."""
    text = "\n".join(f"v{i}=${{v{i + 1}}}" for i in range(1000)) + "\nv1000=end\nLibs: ${v0}\n"
    RAN["parse_pc.deep"] += 1
    with pytest.raises(DllregError, match="loop"):
        parse_pc(text, "/p", "deep.pc")


# --------------------------------------------------------------------------- found bugs, fixed

def test_fixed_tool_not_a_table(tmp_path: Path) -> None:
    with pytest.raises(DllregError):
        parse_config({"tool": 1})
    (tmp_path / "pyproject.toml").write_text("tool = 1\n")
    with pytest.raises(DllregError):
        load_config(tmp_path)


def test_fixed_load_config_invalid_utf8(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_bytes(b"\xff")
    with pytest.raises(DllregError):
        load_config(tmp_path)


def test_fixed_pc_expansion_is_exponential() -> None:
    code = textwrap.dedent("""
        from dllreg.libwheel.pkgconfig import parse_pc
        from dllreg.errors import DllregError
        text = "v0=x\\n" + "".join(f"v{i + 1}=${{v{i}}}${{v{i}}}\\n" for i in range(30))
        try:
            parse_pc(text, "/p", "bomb.pc")
        except DllregError:
            pass
    """)
    # In a child process, so the runaway expansion is killed with it.
    try:
        subprocess.run([sys.executable, "-c", code], timeout=1, check=True, cwd=tempfile.gettempdir())
    except subprocess.TimeoutExpired:
        pytest.fail("parse_pc of a 31-line file did not finish in 1 s")


def test_fixed_source_line_break() -> None:
    m = Manifest(name="a", version="1", platform="linux_x86_64",
                 libraries=(LibraryFile("lib/liba.so.1", "liba.so.1", _SHA),),
                 source="directory /tmp/odd\u2028name")
    assert Manifest.from_text(m.to_text()) == m
