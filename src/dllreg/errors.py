"""The exception hierarchy: one root, one subclass per kind of failure."""

from __future__ import annotations


class DllregError(Exception):
    """Root of every error dllreg raises on purpose; the CLI prints it as one line."""


class ConfigError(DllregError):
    """A consumer's pyproject.toml ``[tool.dllreg]`` table is wrong."""


class RequirementError(DllregError):
    """A library name, version or requirement is malformed."""


class ManifestError(DllregError):
    """A library manifest cannot be read or is inconsistent."""


class WheelError(DllregError):
    """An input wheel is unsafe or malformed, or an output wheel cannot be written."""


class PackageLibError(DllregError):
    """``package-lib`` cannot build a library wheel from the given source."""


class BuildError(DllregError):
    """The ``dllreg.build`` backend cannot produce a correct wheel."""


class LibraryNotFound(DllregError):
    """A registry library is not installed where it was looked for."""
