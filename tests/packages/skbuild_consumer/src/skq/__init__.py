"""A scikit-build-core consumer of the qsum library."""
from ._q import qsum

__all__ = ["qsum"]
