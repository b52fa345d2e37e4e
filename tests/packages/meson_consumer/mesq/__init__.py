"""A meson-python extension linked against the qsum registry library."""

from ._q import qsum

__all__ = ["qsum"]
