"""Build _blasdot against the OpenBLAS of the dllreg registry (flags from its pkg-config file)."""

import shlex
import subprocess
import sys

from setuptools import Extension, setup

# While setuptools lists the build requirements, the library is not installed yet: dllreg
# then prints no flags and exits 0. Any other failure stops the build (message on stderr).
out = subprocess.run(
    [sys.executable, "-m", "dllreg", "pkg-config", "openblas", "--cflags", "--libs"],
    check=True, stdout=subprocess.PIPE, text=True,
).stdout
flags = shlex.split(out)
compile_args = [f for f in flags if f.startswith(("-I", "-D"))]
link_args = [f for f in flags if f not in compile_args]

setup(ext_modules=[Extension("blasdot._blasdot", ["src/blasdot/_blasdot.c"],
                             extra_compile_args=compile_args, extra_link_args=link_args)])
