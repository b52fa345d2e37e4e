"""dllreg example consumer: ``matmul(a, b)`` through OpenBLAS's cblas_dgemm."""

from . import _dlls  # dllreg: preload native libraries first
from ._blasgemm import matmul, threads

__all__ = ["matmul", "threads"]
