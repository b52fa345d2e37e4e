"""devendor never gives a packaged library a runtime name the system may load too (the naming
rule, docs/devendor.md): real gcc-built libraries, a real pip install into a fresh venv, and
which file each symbol resolves from (dladdr through ctypes), with a "system" library of the
same plain name loaded before the stub runs and one loaded after it."""

from __future__ import annotations

import json
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import Venv, gcc_shared, has_gcc, run
from dllreg.cli.main import main
from test_devendor import PY, platform_tag, write_wheel

pytestmark = pytest.mark.skipif(not has_gcc() or sys.platform != "linux", reason="needs gcc on Linux")

EXT_SUFFIX = str(sysconfig.get_config_var("EXT_SUFFIX"))
COL_C = 'const char* col_which(void){{return "{who}";}}\n'
EXT_C = """\
#include <Python.h>
const char* col_which(void);
static PyObject* which(PyObject* s, PyObject* a){ return PyUnicode_FromString(col_which()); }
static PyMethodDef M[] = {{"which", which, METH_NOARGS, 0}, {0}};
static struct PyModuleDef D = {PyModuleDef_HEAD_INIT, "_ext", 0, -1, M};
PyMODINIT_FUNC PyInit__ext(void){ return PyModule_Create(&D); }
"""
# What the process sees: the function each side's col_which resolves to, by file.
PROBE = """
import ctypes, ctypes.util, json, os, sys
class Info(ctypes.Structure):
    _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p),
                ("sname", ctypes.c_char_p), ("saddr", ctypes.c_void_p)]
libdl = ctypes.CDLL(None)
def where(lib):
    fn = ctypes.cast(lib.col_which, ctypes.c_void_p)
    info = Info()
    assert libdl.dladdr(fn, ctypes.byref(info))
    return os.path.realpath(info.fname.decode())
def system_side():
    user = ctypes.CDLL(os.path.join(SYS, "libsysuser.so"))
    user.sysuser_which.restype = ctypes.c_char_p
    col = ctypes.CDLL("libcol.so.1")  # by name: whatever the loader gives the system
    return user.sysuser_which().decode(), where(col)
out = {}
if ORDER == "system-first":
    out["system"] = system_side()
import pkgc
out["package"] = pkgc.which()
if ORDER == "package-first":
    out["system"] = system_side()
out["maps"] = sorted({l.split()[-1] for l in open("/proc/self/maps") if "libcol" in l})
print(json.dumps(out))
"""


def collision_wheel(tmp: Path) -> tuple[Path, Path]:
    """(an auditwheel-style wheel vendoring libcol as libcol-1a2b3c4d.so.1, a "system" directory
    with another build of libcol.so.1 and a system library that needs it)."""
    sysdir = tmp / "system"
    gcc_shared(sysdir / "libcol.so.1", COL_C.format(who="system"), "libcol.so.1")
    gcc_shared(sysdir / "libsysuser.so", "const char* col_which(void);\n"
               "const char* sysuser_which(void){return col_which();}\n", "libsysuser.so",
               f"-L{sysdir}", "-l:libcol.so.1", f"-Wl,-rpath,{sysdir}")
    build = tmp / "build"
    mangled = "libcol-1a2b3c4d.so.1"
    gcc_shared(build / mangled, COL_C.format(who="packaged"), mangled)
    (build / "ext.c").write_text(EXT_C)
    ext = build / f"_ext{EXT_SUFFIX}"
    run(["gcc", "-shared", "-fPIC", f"-I{sysconfig.get_paths()['include']}", "-o", str(ext),
         str(build / "ext.c"), f"-L{build}", f"-l:{mangled}",
         "-Wl,--disable-new-dtags,-rpath,$ORIGIN/../pkgc.libs"])
    members = {"pkgc/__init__.py": b"from ._ext import which\n", f"pkgc/_ext{EXT_SUFFIX}": ext.read_bytes(),
               f"pkgc.libs/{mangled}": (build / mangled).read_bytes()}
    return write_wheel(tmp / "in" / f"pkgc-1.0-{PY}-{PY}-{platform_tag()}.whl", members), sysdir


@pytest.fixture
def installed(tmp_path: Path, make_venv: object) -> tuple[Venv, Path, dict[str, object]]:
    wheel, sysdir = collision_wheel(tmp_path)
    out = tmp_path / "out"
    assert main(["devendor", str(wheel), "-o", str(out)]) == 0
    venv = make_venv("venv")  # type: ignore[operator]
    venv.pip("install", "-q", "--no-index", "--find-links", str(out), "pkgc")
    (lib,) = [w for w in out.glob("dllreg_lib_*.whl")]
    return venv, sysdir, {"wheel": lib.name}


def probe(venv: Venv, sysdir: Path, order: str) -> dict[str, object]:
    code = f"SYS = {str(sysdir)!r}\nORDER = {order!r}\n" + PROBE
    return json.loads(venv.py(code).stdout)  # type: ignore[no-any-return]


Installed = tuple[Venv, Path, dict[str, object]]


def test_packaged_runtime_name_is_not_the_system_name(installed: Installed) -> None:
    venv, _, facts = installed
    name = str(facts["wheel"])
    assert name.startswith("dllreg_lib_col_1_") and "1a2b3c4d" not in name  # col-1-<build tag>
    (libdir,) = (venv.site / "dllreg.libs").iterdir()
    (so,) = (libdir / "lib").glob("libcol*")
    assert so.name != "libcol.so.1" and so.name.startswith("libcol-") and so.name.endswith(".so.1")
    assert run(["readelf", "-d", str(so)]).stdout.count(f"[{so.name}]") == 1  # its SONAME


@pytest.mark.parametrize("order", ["system-first", "package-first"])
def test_no_capture_either_way(installed: tuple[Venv, Path, dict[str, object]], order: str) -> None:
    venv, sysdir, _ = installed
    got = probe(venv, sysdir, order)
    # the package binds to its packaged copy, the system library to the system's, whichever
    # was loaded first; both files are mapped
    assert got["package"] == "packaged"
    sys_which, sys_file = got["system"]  # type: ignore[misc]
    assert sys_which == "system" and sys_file == str((sysdir / "libcol.so.1").resolve())
    maps = got["maps"]
    assert isinstance(maps, list) and len(maps) == 2
    assert any("/dllreg.libs/" in m for m in maps) and str((sysdir / "libcol.so.1").resolve()) in maps


# --- the real case: psycopg2-binary's OpenSSL 3.5.8 next to CPython's own ssl ---------------------

PSYCOPG2 = "psycopg2-binary==2.9.13"
SSL_PROBE = """
import json, sys
if sys.argv[1] == "ssl-first":
    import ssl, hashlib
import psycopg2.extensions
if sys.argv[1] == "pg-first":
    import ssl, hashlib
import _ssl, _hashlib, socket, threading
# certificate verification against our own CA on loopback, with the interpreter's own OpenSSL
ca, cert, key = sys.argv[2:5]
server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
server.load_cert_chain(cert, key)
listener = socket.create_server(("127.0.0.1", 0))
def serve():
    for _ in range(2):
        conn, _ = listener.accept()
        try:
            with server.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"hello")
        except (ssl.SSLError, OSError):
            pass
threading.Thread(target=serve, daemon=True).start()
try:  # without our CA the certificate must be refused: verification really runs
    with ssl.create_default_context().wrap_socket(socket.create_connection(listener.getsockname()),
                                                  server_hostname="localhost") as tls:
        tls.recv(5)
    refused = False
except ssl.SSLCertVerificationError:
    refused = True
client = ssl.create_default_context(cafile=ca)
with client.wrap_socket(socket.create_connection(listener.getsockname()), server_hostname="localhost") as tls:
    verified = tls.recv(5).decode() + " " + tls.version() + (" refused-without-ca" if refused else "")
maps = sorted({l.split()[-1] for l in open("/proc/self/maps") if "libssl" in l or "libcrypto" in l})
print(json.dumps({"ssl": ssl.OPENSSL_VERSION, "libpq": psycopg2.extensions.libpq_version(), "maps": maps,
                  "tls": verified}))
"""


def own_ca(d: Path) -> tuple[str, str, str]:
    """A CA and a localhost certificate it signed (the openssl command line)."""
    d.mkdir(parents=True, exist_ok=True)
    ca, ca_key, cert, key, csr = (str(d / n) for n in ("ca.pem", "ca.key", "cert.pem", "key.pem", "r.csr"))
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
         "-keyout", ca_key, "-out", ca])
    run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", key,
         "-out", csr])
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName=DNS:localhost\n")
    run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "2",
         "-extfile", str(ext), "-out", cert])
    return ca, cert, key


def stack_wheel(pattern: str, requirement: str, platform: str) -> Path:
    """A cp311 manylinux wheel of the real stack: cached under .cache/downloads(/stack), else
    downloaded there once."""
    from conftest import CACHE

    for d in (CACHE / "downloads" / "stack", CACHE / "downloads"):
        found = sorted(d.glob(pattern))
        if found:
            return found[-1]
    dest = CACHE / "downloads"
    run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps", "--platform",
         platform, "--python-version", "3.11", "-d", str(dest), requirement])
    return sorted(dest.glob(pattern))[-1]


def _psycopg2_wheel(tmp: Path) -> Path:
    return stack_wheel("psycopg2_binary-2.9.13-cp311-cp311-manylinux*x86_64*.whl", PSYCOPG2,
                       "manylinux2014_x86_64")


@pytest.mark.realwheels
@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="cp311 wheel")
def test_real_psycopg2_openssl_never_meets_cpythons(tmp_path: Path, make_venv: object) -> None:
    """Before the naming rule, psycopg2's packaged libssl.so.3 bound to the system OpenSSL that
    CPython's _ssl had loaded (OPENSSL_3.x not found), or captured CPython's ssl."""
    wheel = _psycopg2_wheel(tmp_path)
    out = tmp_path / "out"
    assert main(["devendor", str(wheel), "-o", str(out)]) == 0
    venv = make_venv("venv")  # type: ignore[operator]
    baseline = json.loads(venv.py("import json, ssl; print(json.dumps(ssl.OPENSSL_VERSION))").stdout)
    system = json.loads(venv.py("import json, _ssl, _hashlib\nprint(json.dumps(sorted({l.split()[-1] "
                                "for l in open('/proc/self/maps') if 'libssl' in l or 'libcrypto' in l})))"
                                ).stdout)
    venv.pip("install", "-q", "--no-index", "--find-links", str(out), "psycopg2-binary")
    (venv.path / "probe.py").write_text(SSL_PROBE)
    pki = own_ca(tmp_path / "pki")
    for order in ("ssl-first", "pg-first"):
        got = json.loads(run([venv.python, str(venv.path / "probe.py"), order, *pki]).stdout)
        assert got["ssl"] == baseline and got["libpq"] > 0
        # verified against our CA by CPython's ssl, and refused without it
        assert got["tls"].startswith("hello TLSv1.") and got["tls"].endswith(" refused-without-ca")
        packaged = [m for m in got["maps"] if "/dllreg.libs/" in m]
        # CPython's files are mapped as before; psycopg2's OpenSSL under its own names beside them
        assert set(got["maps"]) - set(packaged) == set(system)
        assert sorted(Path(m).name.split("-")[0] for m in packaged) == ["libcrypto", "libssl"]
        assert all(Path(m).name not in ("libssl.so.3", "libcrypto.so.3") for m in packaged)
