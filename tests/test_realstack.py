"""The field proof of issue 12 on a real stack (tests/realstack.py: 21 popular native wheels,
cp311 manylinux x86_64, cached under .cache/downloads/stack): ``dllreg install`` takes all of
them with nothing refused; everything imports in one process in any order; CPython's own ssl
keeps its OpenSSL, its bindings and its certificate verification; the packages' own tests pass
as with the originals.

Two venvs, built once for the module: ``originals`` (pip install of the wheels as released) and
``devendored`` (``python -m dllreg install`` of the same requirements), both from the local cache.
"""

from __future__ import annotations

import http.server
import json
import os
import random
import re
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import realstack
from conftest import run

pytestmark = [pytest.mark.realstack,
              pytest.mark.skipif(realstack.supported() is not None, reason=str(realstack.supported()))]

MODULES = list(realstack.IMPORTS.values())
SHUFFLES = (1, 2, 3)
ORDERS = {"forward": MODULES, "reverse": MODULES[::-1],
          **{f"shuffle-{s}": random.Random(s).sample(MODULES, len(MODULES)) for s in SHUFFLES}}
# The packages' own tests that run in seconds: the same counts as with the original wheels.
SHIPPED_TESTS = ("numpy.linalg.tests.test_regression", "shapely.tests.test_constructive",
                 "shapely.tests.test_predicates", "h5py.tests.test_dataset", "h5py.tests.test_file",
                 "scipy.linalg.tests.test_solvers", "sklearn.cluster.tests.test_k_means")


class StackVenv:
    def __init__(self, path: Path, install_log: str = "") -> None:
        self.path = path
        self.python = path / "bin" / "python"
        self.site = next((path / "lib").glob("python3*/site-packages"))
        self.install_log = install_log

    def probe(self, order: list[str], ssl_when: str = "ssl-last", ops: bool = False,
              env: dict[str, str] | None = None) -> dict[str, object]:
        """Import ``order`` in a fresh process (PROBE); its report, plus its stderr."""
        full = {**os.environ, "REALSTACK_OPS": realstack.OPERATIONS, "OPENBLAS_NUM_THREADS": "1",
                "REALSTACK_OP_NAMES": json.dumps(list(realstack.OPERATION_OF.values())), **(env or {})}
        proc = subprocess.run([str(self.python), "-c", realstack.PROBE, ",".join(order), ssl_when,
                               "ops" if ops else "-"], capture_output=True, text=True, env=full,
                              cwd=self.path)
        assert proc.returncode == 0, f"{order}: exit {proc.returncode}\n{proc.stderr[-4000:]}"
        doc: dict[str, object] = json.loads(proc.stdout)
        doc["stderr"] = proc.stderr
        return doc


def _venv(path: Path) -> Path:
    run([sys.executable, "-m", "venv", "--without-pip", str(path)])
    return path


@pytest.fixture(scope="module")
def stack() -> Path:
    return realstack.download()


@pytest.fixture(scope="module")
def originals(stack: Path, tmp_path_factory: pytest.TempPathFactory) -> StackVenv:
    path = _venv(tmp_path_factory.mktemp("stack") / "originals")
    run([sys.executable, "-m", "pip", "--python", str(path / "bin" / "python"), "install", "-q",
         "--disable-pip-version-check", "--no-index", "--only-binary=:all:", "--find-links", str(stack),
         *realstack.requirements()])
    return StackVenv(path)


@pytest.fixture(scope="module")
def devendored(stack: Path, tmp_path_factory: pytest.TempPathFactory) -> StackVenv:
    path = _venv(tmp_path_factory.mktemp("stack") / "devendored")
    proc = subprocess.run([sys.executable, "-m", "dllreg", "install", "-q", "--python",
                           str(path / "bin" / "python"), "--no-index", "-f", str(stack),
                           *realstack.requirements()],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"dllreg install refused or failed:\n{proc.stdout}\n{proc.stderr[-6000:]}"
    return StackVenv(path, proc.stdout + proc.stderr)


# --- dllreg install takes the stack ------------------------------------------------------------


def test_dllreg_install_refuses_nothing_and_devendors_the_stack(devendored: StackVenv) -> None:
    log = devendored.install_log
    assert "error:" not in log
    devendored_lines = re.findall(r"dllreg:   (\S+\.whl): (\d+) substituted, (\d+) packaged", log)
    names = {w.split("-")[0].lower() for w, _, _ in devendored_lines}
    # every wheel the issue found refused or unseen is devendored now
    assert {"fiona", "opencv_python_headless", "psycopg2_binary", "tables", "netcdf4", "pymupdf"} <= names
    assert re.search(r"installed with pip from a wheelhouse of \d+ wheel\(s\): \d+ devendored", log)
    # what stays vendored says why
    for kept in re.findall(r"    kept (.*)", log):
        assert ": " in kept, kept
    assert not list(devendored.site.glob("pymupdf/libmupdf*"))  # the loose library left the package


# --- one process, every order --------------------------------------------------------------------


@pytest.mark.parametrize("order", list(ORDERS))
def test_everything_imports_in_one_process(devendored: StackVenv, order: str) -> None:
    got = devendored.probe(ORDERS[order])
    assert got["import_errors"] == {}, got["import_errors"]


def test_no_warning_the_originals_do_not_give(devendored: StackVenv, originals: StackVenv) -> None:
    # h5py warns when its HDF5 is another release than the one it was built with
    assert _warnings(devendored.probe(ORDERS["forward"])["stderr"]) == \
        _warnings(originals.probe(ORDERS["forward"])["stderr"])


def _warnings(stderr: object) -> list[str]:
    return sorted(line.strip() for line in str(stderr).splitlines() if "Warning" in line)


@pytest.mark.parametrize("order", ["forward", "reverse"])
def test_real_operations_give_the_originals_results(devendored: StackVenv, originals: StackVenv,
                                                    order: str) -> None:
    got = devendored.probe(ORDERS[order], ops=True)["ops"]
    want = originals.probe(ORDERS[order], ops=True)["ops"]
    assert isinstance(got, dict) and isinstance(want, dict)
    assert not [v for v in want.values() if str(v).startswith("FAILED")], want  # the operations work
    differ = {k: (want[k], got[k]) for k in want if got[k] != want[k]}  # (originals, devendored)
    assert differ == {}


# --- CPython's own ssl -----------------------------------------------------------------------------


def _bindings(venv: StackVenv, tmp: Path, order: list[str], when: str) -> dict[str, set[str]]:
    """The library files CPython's _ssl and _hashlib bound symbols to (LD_DEBUG=bindings)."""
    log = tmp / f"ld-{when}-{len(order)}"
    venv.probe(order, when, env={"LD_DEBUG": "bindings", "LD_DEBUG_OUTPUT": str(log)})
    out: dict[str, set[str]] = {"_ssl": set(), "_hashlib": set()}
    for f in tmp.glob(log.name + ".*"):
        for line in f.read_text(errors="replace").splitlines():
            m = re.search(r"binding file (\S+) \[\d+\] to (\S+) \[\d+\]", line)
            if m and "/lib-dynload/" in m[1]:
                for mod in out:
                    if Path(m[1]).name.startswith(mod + "."):
                        out[mod].add(os.path.realpath(m[2]))
        f.unlink()
    return out


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An https server on loopback with a certificate of our own CA: (URL, CA file)."""
    d = tmp_path_factory.mktemp("tls")
    ca, key = d / "ca.pem", d / "ca.key"
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=dllreg test CA", "-keyout", str(key), "-out", str(ca)])
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
         "-keyout", str(d / "srv.key"), "-out", str(d / "srv.csr")])
    run(["openssl", "x509", "-req", "-in", str(d / "srv.csr"), "-CA", str(ca), "-CAkey", str(key),
         "-CAcreateserial", "-days", "2", "-extfile", str(d / "ext.cnf"), "-out", str(d / "srv.pem")])

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"verified"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(d / "srv.pem"), str(d / "srv.key"))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://localhost:{server.server_address[1]}/", ca
    server.shutdown()


@pytest.mark.parametrize("when", ["ssl-first", "ssl-last"])
def test_cpython_ssl_keeps_its_openssl_and_verifies(devendored: StackVenv, originals: StackVenv,
                                                    tls_server: tuple[str, Path], tmp_path: Path,
                                                    when: str) -> None:
    url, ca = tls_server
    env = {"SSL_PROBE_URL": url, "SSL_CERT_FILE": str(ca)}
    alone = devendored.probe([], when, env=env)  # the interpreter with no package imported
    for order in ("forward", "reverse"):
        got = devendored.probe(ORDERS[order], when, env=env)
        assert (got["openssl"], got["verify_paths"], got["sha256"]) == (
            alone["openssl"], alone["verify_paths"], alone["sha256"])
        assert got["https"] == "verified", got["https"]  # certificate verification with our CA
    assert originals.probe(ORDERS["forward"], when, env=env)["https"] == "verified"
    bare = _bindings(devendored, tmp_path, [], when)
    assert bare["_ssl"] and bare["_hashlib"]  # LD_DEBUG saw them bind
    for order in ("forward", "reverse"):
        assert _bindings(devendored, tmp_path, ORDERS[order], when) == bare


# --- the packages' own tests --------------------------------------------------------------------


def _pytest_counts(venv: StackVenv, cwd: Path) -> dict[str, int]:
    proc = subprocess.run([str(venv.python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs",
                           *SHIPPED_TESTS], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-2000:]
    found = re.findall(r"(\d+) (passed|failed|skipped|xfailed|xpassed|errors?)", last)
    counts = {k: int(n) for n, k in found}
    assert counts.get("passed"), f"no test ran: {last}\n{proc.stderr[-2000:]}"
    return counts


def test_shipped_test_subsets_pass_as_with_the_originals(devendored: StackVenv, originals: StackVenv,
                                                         tmp_path: Path) -> None:
    assert _pytest_counts(devendored, tmp_path) == _pytest_counts(originals, tmp_path)
