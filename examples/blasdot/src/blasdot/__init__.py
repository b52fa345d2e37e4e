"""dllreg example consumer: ``dot(a, b)`` through OpenBLAS's cblas_ddot."""

from . import _dlls  # dllreg: preload native libraries first
from ._blasdot import config, dot

__all__ = ["config", "dot"]
