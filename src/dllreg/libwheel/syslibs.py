"""Libraries the target system provides, per binary format (pure lookups).

Used by ``inspect`` (a need is "system") and ``package-lib`` (a need the library wheel does
not carry is fine). Linux: what auditwheel's manylinux policies allow plus the dynamic
loader; Windows: system DLLs, API sets and the MSVC runtime; macOS: /usr/lib and /System.
"""

from __future__ import annotations

import posixpath
import re

_ELF_SYSTEM_NAMES = (  # auditwheel's manylinux policies all allow these
    "libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2 librt.so.1 libutil.so.1 libresolv.so.2 libnsl.so.1"
    " libanl.so.1 libgcc_s.so.1 libstdc++.so.6 libatomic.so.1 libz.so.1 libexpat.so.1 libX11.so.6"
    " libXext.so.6 libXrender.so.1 libICE.so.6 libSM.so.6 libGL.so.1 libgobject-2.0.so.0"
    " libgthread-2.0.so.0 libglib-2.0.so.0")
_ELF_SYSTEM = frozenset(_ELF_SYSTEM_NAMES.split())
_ELF_LOADER = re.compile(r"(ld-linux[\w.-]*|ld64|ld-musl-[\w-]+|libc\.musl-[\w-]+|linux-vdso)\.so\.\d$")
_WIN_SYSTEM_NAMES = (
    "kernel32 kernelbase ntdll user32 gdi32 gdiplus advapi32 shell32 shlwapi ole32 oleaut32 ws2_32 wsock32"
    " mswsock msvcrt ucrtbase bcrypt ncrypt crypt32 cryptbase secur32 sspicli comdlg32 comctl32 version"
    " winmm iphlpapi dbghelp psapi setupapi cfgmgr32 userenv rpcrt4 imm32 opengl32 glu32 d2d1 d3d9 d3d11"
    " d3d12 dxgi dwrite dwmapi uxtheme usp10 msimg32 mpr netapi32 powrprof wtsapi32 normaliz wininet"
    " winhttp wldap32 dnsapi shcore propsys windowscodecs authz credui hid avrt mfplat mscoree oleacc"
    " dbgeng winspool.drv")
_WIN_SYSTEM = frozenset(_WIN_SYSTEM_NAMES.split())
_MSVC_RUNTIME = re.compile(r"(vcruntime140(_1|_threads)?|msvcp140(_\w+)?|concrt140|vcomp140)\.dll$")
_PYTHON = re.compile(r"(lib)?python3(\.?\d+)?[dmu_]*\.(dll|dylib|so(\.[\d.]+)?)$|python$")


def is_python(name: str) -> bool:
    """libpython / python3X.dll / the Python framework: provided by the interpreter."""
    return bool(_PYTHON.match(posixpath.basename(name).lower())) or "Python.framework/" in name


def is_system(fmt: str, name: str) -> bool:
    base = posixpath.basename(name).lower()
    if fmt == "elf":
        return name in _ELF_SYSTEM or bool(_ELF_LOADER.match(name))
    if fmt == "pe":
        return (base.startswith(("api-ms-win-", "ext-ms-")) or bool(_MSVC_RUNTIME.match(base))
                or (base[:-4] if base.endswith(".dll") else base) in _WIN_SYSTEM)
    return name.startswith(("/usr/lib/", "/System/Library/"))
