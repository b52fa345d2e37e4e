"""The real stack of issue 12, shared by tests/test_realstack.py and benchmarks/real_stack.py.

21 popular native wheels (CPython 3.11, manylinux x86_64) and their dependencies, every wheel
pinned in ``realstack.txt`` and downloaded once with ``pip download --only-binary=:all:`` into
``.cache/downloads/stack``; the module each package is imported as; a real operation of each
(``OPERATIONS``, run in the stack's own venv, returning text that must be the same with the
original and the devendored wheels); and ``PROBE``, the script that imports them in a given
order and reports the operations, the libraries mapped and what CPython's ssl binds to.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINS = Path(__file__).resolve().parent / "realstack.txt"
STACK = ROOT / ".cache" / "downloads" / "stack"
#: requirement name -> the module imported (in this order: the "forward" order)
IMPORTS = {
    "numpy": "numpy", "scipy": "scipy", "pillow": "PIL.Image", "lxml": "lxml.etree",
    "matplotlib": "matplotlib", "shapely": "shapely", "pyproj": "pyproj", "h5py": "h5py",
    "opencv-python-headless": "cv2", "pandas": "pandas", "netcdf4": "netCDF4", "tables": "tables",
    "psycopg2-binary": "psycopg2", "fiona": "fiona", "pyogrio": "pyogrio", "rasterio": "rasterio",
    "av": "av", "scikit-learn": "sklearn", "pymupdf": "pymupdf", "pyzmq": "zmq",
    "cryptography": "cryptography",
}
TOOLS = ("pytest", "hypothesis")  # to run the packages' own tests in the stack's venvs


def pins() -> dict[str, str]:
    """Project name -> ``name==version`` for every wheel of the stack."""
    out = {}
    for line in PINS.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            out[line.split("==")[0]] = line.strip()
    return out


def requirements() -> list[str]:
    """The pinned top-level requirements (the packages, then the test tools)."""
    p = pins()
    return [p[name] for name in (*IMPORTS, *TOOLS)]


def supported() -> str | None:
    """Why the stack cannot run here, or None (its wheels are cp311 manylinux x86_64)."""
    import platform

    if sys.version_info[:2] != (3, 11) or sys.implementation.name != "cpython":
        return "the stack's wheels are for CPython 3.11"
    if not sys.platform.startswith("linux") or platform.machine() != "x86_64":
        return "the stack's wheels are manylinux x86_64"
    return None


def download(dest: Path = STACK) -> Path:
    """Every pinned wheel in ``dest`` (pip downloads the missing ones, once)."""
    from packaging.utils import canonicalize_name, parse_wheel_filename

    have = {canonicalize_name(str(parse_wheel_filename(w.name)[0])) for w in dest.glob("*.whl")}
    if not {canonicalize_name(n) for n in pins()} <= have:
        dest.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                               "--only-binary=:all:", "-d", str(dest), "-r", str(PINS)],
                              capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"pip download of {PINS} failed:\n{proc.stdout}{proc.stderr}")
    return dest


def stack_wheels(dest: Path = STACK) -> list[Path]:
    """The downloaded wheel of each pin (a directory may hold others too)."""
    from packaging.utils import canonicalize_name, parse_wheel_filename

    wanted = {canonicalize_name(n): v.split("==")[1] for n, v in pins().items()}
    out = []
    for w in sorted(dest.glob("*.whl")):
        name, version, _, _ = parse_wheel_filename(w.name)
        if wanted.get(canonicalize_name(str(name))) == str(version):
            out.append(w)
    return out


# Real work of each package, run inside the stack's venv: the text each returns is compared
# between the original wheels and the devendored ones. Deterministic by construction (fixed
# seeds and inputs); floats are rounded, encoded files are hashed.
OPERATIONS = r'''
import hashlib, io, os, tempfile
TMP = tempfile.mkdtemp(prefix="realstack-")

def _h(b):
    return hashlib.sha256(bytes(b)).hexdigest()[:16]

def op_numpy():
    import numpy as np
    a = np.arange(16.0).reshape(4, 4) + 5 * np.eye(4)
    return f"{np.linalg.det(a):.6g} {np.linalg.inv(a).sum():.6g} {np.fft.fft(np.arange(8.0)).real.sum():.6g}"

def op_scipy():
    import numpy as np, scipy.linalg, scipy.special, scipy.sparse.linalg, scipy.optimize
    a = np.arange(9.0).reshape(3, 3) + 4 * np.eye(3)
    x = scipy.linalg.solve(a, np.ones(3))
    s = scipy.sparse.diags([1.0, 2.0, 3.0])
    r = scipy.optimize.minimize_scalar(lambda t: (t - 1.5) ** 2).x
    return f"{x.round(6).tolist()} {scipy.special.gamma(5.5):.6g} {scipy.sparse.linalg.norm(s):.6g} {r:.4f}"

def op_pillow():
    from PIL import Image, ImageDraw, features
    im = Image.new("RGB", (64, 48), "white")
    ImageDraw.Draw(im).ellipse((4, 4, 60, 44), fill=(200, 30, 90))
    out = []
    for fmt in ("PNG", "JPEG", "TIFF", "WEBP"):
        buf = io.BytesIO()
        im.save(buf, fmt, **({"compression": "tiff_lzw"} if fmt == "TIFF" else {}))
        out.append(f"{fmt}:{_h(Image.open(io.BytesIO(buf.getvalue())).convert('RGB').tobytes())}")
    return " ".join(out) + f" freetype2={features.check('freetype2')}"

def op_lxml():
    from lxml import etree
    doc = etree.fromstring(b"<r><i n='1'>a</i><i n='2'>b</i></r>")
    xslt = etree.XSLT(etree.fromstring(b"""<xsl:stylesheet version="1.0"
        xmlns:xsl="http://www.w3.org/1999/XSL/Transform"><xsl:template match="/">
        <o><xsl:value-of select="count(//i)"/></o></xsl:template></xsl:stylesheet>"""))
    return f"{doc.xpath('string(//i[@n=2])')} {etree.tostring(xslt(doc)).decode()} {etree.LIBXML_VERSION}"

def op_matplotlib():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(2, 2), dpi=50)
    ax.plot([0, 1, 2], [2, 0, 1])
    ax.set_title("dllreg")
    fig.canvas.draw()
    return _h(fig.canvas.buffer_rgba())

def op_shapely():
    import shapely
    from shapely.geometry import Point
    g = Point(0, 0).buffer(1.0, 32)
    hull = shapely.to_wkt(shapely.convex_hull(g), rounding_precision=3)
    return f"{g.area:.6f} {shapely.geos_version} {hull[:40]}"

def op_pyproj():
    import pyproj
    t = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    x, y = t.transform(10.0, 50.0)
    return f"{x:.3f} {y:.3f} {pyproj.proj_version_str}"

def op_h5py():
    import h5py, numpy as np
    path = os.path.join(TMP, "a.h5")
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(1000, dtype="i4").reshape(10, 100), compression="gzip")
    with h5py.File(path) as f:
        return f"{int(f['x'][...].sum())} {h5py.version.hdf5_version}"

def op_cv2():
    import cv2, numpy as np
    a = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) % 251).astype(np.uint8)
    ok, png = cv2.imencode(".png", cv2.GaussianBlur(a, (5, 5), 1.5))
    return f"{ok} {_h(cv2.imdecode(png, 0).tobytes())} {cv2.__version__}"

def op_pandas():
    import pandas as pd
    df = pd.DataFrame({"k": list("abcabc"), "v": range(6)})
    return df.groupby("k")["v"].sum().to_json()

def op_netCDF4():
    import netCDF4, numpy as np
    path = os.path.join(TMP, "a.nc")
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("x", 100)
        v = d.createVariable("v", "f8", ("x",), compression="zlib")
        v[:] = np.arange(100.0)
        z = d.createVariable("z", "f8", ("x",), compression="zstd")  # an HDF5 filter plugin
        z[:] = np.arange(100.0) * 2
    with netCDF4.Dataset(path) as d:
        return f"{d['v'][:].sum():.1f} {d['z'][:].sum():.1f} {netCDF4.__netcdf4libversion__}"

def op_tables():
    import tables, numpy as np
    path = os.path.join(TMP, "a.tables.h5")
    with tables.open_file(path, "w") as f:
        f.create_carray("/", "x", obj=np.arange(10000.0),
                        filters=tables.Filters(complevel=5, complib="blosc2:zstd"))
    with tables.open_file(path) as f:
        return f"{f.root.x[:].sum():.1f} {tables.get_hdf5_version()}"

def op_psycopg2():
    import psycopg2, psycopg2.extensions as e
    try:
        psycopg2.connect("host=/nonexistent-dllreg dbname=x connect_timeout=1")
        err = "connected?"
    except psycopg2.OperationalError as exc:
        err = type(exc).__name__
    quoted = e.QuotedString("it's").getquoted()
    return f"{e.libpq_version()} {quoted} {err}"

def op_fiona():
    import fiona
    path = os.path.join(TMP, "a.gpkg")
    schema = {"geometry": "Point", "properties": {"n": "int"}}
    with fiona.open(path, "w", driver="GPKG", schema=schema, crs="EPSG:4326") as c:
        for i in range(5):
            c.write({"geometry": {"type": "Point", "coordinates": (i, i)}, "properties": {"n": i}})
    with fiona.open(path) as c:
        return f"{sum(f['properties']['n'] for f in c)} {len(c)} {fiona.__gdal_version__}"

def op_pyogrio():
    import pyogrio, numpy as np
    from pyogrio.raw import read, write
    path = os.path.join(TMP, "b.gpkg")
    wkb = np.array([bytes.fromhex("0101000000000000000000f03f0000000000000040")] * 3, dtype=object)
    write(path, geometry=wkb, field_data=[np.arange(3)], fields=["n"], driver="GPKG",
          geometry_type="Point", crs="EPSG:4326")
    meta, _, geometry, fields = read(path)
    return f"{len(geometry)} {int(fields[0].sum())} {meta['crs']} {pyogrio.__gdal_version_string__}"

def op_rasterio():
    import rasterio, numpy as np
    from rasterio.transform import from_origin
    path = os.path.join(TMP, "a.tif")
    data = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 1000)
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint16",
                       crs="EPSG:3857", transform=from_origin(0, 64, 1, 1), compress="deflate") as d:
        d.write(data, 1)
    with rasterio.open(path) as d:
        return f"{int(d.read(1).sum())} {d.crs.to_epsg()} {rasterio.__gdal_version__}"

def op_av():
    import av, numpy as np
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        s = out.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 40, np.uint8), format="rgb24")
            out.mux(s.encode(frame))
        out.mux(s.encode(None))
    buf.seek(0)
    with av.open(buf) as inp:
        frames = [f.to_ndarray(format="gray") for f in inp.decode(video=0)]
    return f"{len(frames)} {_h(frames[-1].tobytes())} {av.ffmpeg_version_info[:20]}"

def op_sklearn():
    import numpy as np
    from sklearn.cluster import KMeans
    from sklearn.linear_model import LogisticRegression
    rng = np.random.RandomState(0)
    x = np.vstack([rng.normal(0, 1, (50, 2)), rng.normal(5, 1, (50, 2))])
    y = np.r_[np.zeros(50), np.ones(50)]
    km = KMeans(2, n_init=1, random_state=0).fit(x)
    lr = LogisticRegression().fit(x, y)
    return f"{sorted(np.bincount(km.labels_).tolist())} {lr.coef_.round(3).tolist()}"

def op_pymupdf():
    import pymupdf
    doc = pymupdf.open()
    page = doc.new_page(width=120, height=80)
    page.insert_text((10, 40), "dllreg", fontsize=20)
    pix = page.get_pixmap()
    return f"{page.get_text().strip()} {_h(pix.samples)} {pymupdf.mupdf_version}"

def op_zmq():
    import zmq
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://dllreg")
    b.connect("inproc://dllreg")
    a.send(b"ping")
    got = b.recv()
    a.close(); b.close(); ctx.term()
    return f"{got.decode()} {zmq.zmq_version()}"

def op_cryptography():
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.backends.openssl import backend
    h = hashes.Hash(hashes.SHA256()); h.update(b"dllreg")
    ct = AESGCM(bytes(16)).encrypt(bytes(12), b"dllreg", None)
    return f"{h.finalize().hex()[:16]} {ct.hex()[:16]} {backend.openssl_version_text()}"
'''
#: requirement name -> the function of OPERATIONS that exercises it
OPERATION_OF = {
    "numpy": "op_numpy", "scipy": "op_scipy", "pillow": "op_pillow", "lxml": "op_lxml",
    "matplotlib": "op_matplotlib", "shapely": "op_shapely", "pyproj": "op_pyproj", "h5py": "op_h5py",
    "opencv-python-headless": "op_cv2", "pandas": "op_pandas", "netcdf4": "op_netCDF4",
    "tables": "op_tables", "psycopg2-binary": "op_psycopg2", "fiona": "op_fiona", "pyogrio": "op_pyogrio",
    "rasterio": "op_rasterio", "av": "op_av", "scikit-learn": "op_sklearn", "pymupdf": "op_pymupdf",
    "pyzmq": "op_zmq", "cryptography": "op_cryptography",
}

# argv: modules to import (comma-separated, in order), "ssl-first" or "ssl-last", "ops" or "-".
# Prints one JSON object: the operations' results (or their errors), the library files mapped,
# CPython's ssl facts (version, verify paths) and, with SSL_PROBE_URL set, a verified https GET.
PROBE = r'''
import importlib, json, os, sys
mods, when, ops = sys.argv[1].split(","), sys.argv[2], sys.argv[3] == "ops"
if when == "ssl-first":
    import ssl, hashlib
errors = {}
for m in mods:
    try:
        importlib.import_module(m)
    except Exception as exc:
        errors[m] = f"{type(exc).__name__}: {exc}"
import ssl, hashlib, _ssl, _hashlib
out = {"import_errors": errors, "openssl": ssl.OPENSSL_VERSION,
       "verify_paths": list(ssl.get_default_verify_paths()), "sha256": hashlib.sha256(b"dllreg").hexdigest()}
url = os.environ.get("SSL_PROBE_URL")
if url:
    import urllib.request
    try:
        out["https"] = urllib.request.urlopen(url, timeout=20).read().decode()
    except Exception as exc:
        out["https"] = f"{type(exc).__name__}: {exc}"
if ops:
    ns = {}
    exec(compile(os.environ["REALSTACK_OPS"], "realstack-ops", "exec"), ns)
    res = {}
    for name in json.loads(os.environ["REALSTACK_OP_NAMES"]):
        try:
            res[name] = ns[name]()
        except Exception as exc:
            res[name] = f"FAILED {type(exc).__name__}: {exc}"
    out["ops"] = res
out["maps"] = sorted({l.split()[-1] for l in open("/proc/self/maps") if ".so" in l.split()[-1]})
print(json.dumps(out))
'''

_HASH = re.compile(r"(?:-[0-9a-f]{8})+(?=\.|$)")


def library_key(path: str) -> tuple[str, str] | None:
    """(stem, ABI major) of a mapped or installed library file, hash tags removed: both
    ``libcrypto-5d63cd29.so.3`` and ``libcrypto.so.3`` are ("libcrypto", "3"); None for a file
    that is not a shared library of that shape (extension modules have no ``.so.N``)."""
    base = path.rsplit("/", 1)[-1]
    m = re.match(r"(.+?)\.so(?:\.(\d+))?(?:\.[\d.]+)?$", base)
    if not m or (m[2] is None and (not base.startswith("lib") or "." in m[1])):
        return None  # an extension module (``foo.cpython-311-x86_64-linux-gnu.so``), not a library
    stem = m[1].split(".", 1)[0]
    return _HASH.sub("", stem), m[2] or ""


def redundant(paths: list[str], under: str) -> dict[str, int]:
    """Stem/major -> number of copies beyond the first among the files under ``under``."""
    groups: dict[str, set[str]] = {}
    for p in paths:
        key = library_key(p)
        if key and p.startswith(under):
            groups.setdefault(f"{key[0]}.so.{key[1]}" if key[1] else f"{key[0]}.so", set()).add(p)
    return {k: len(v) - 1 for k, v in sorted(groups.items()) if len(v) > 1}
