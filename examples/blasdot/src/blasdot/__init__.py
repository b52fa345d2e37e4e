"""dllreg example consumer: ``dot(a, b)`` through OpenBLAS's cblas_ddot."""

from ._blasdot import config, dot

__all__ = ["config", "dot"]
