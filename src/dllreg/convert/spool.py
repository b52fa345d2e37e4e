"""The spool of ``devendor``'s read step: each input wheel's binaries, as checked, in one file.

Writing then reads a binary back from here instead of inflating it from the wheel again (the
larger half of the write step's time), and the bytes it writes are the very bytes that were
checked. The directory is the caller's, private, and removed by the caller.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO


def opened(path: str) -> contextlib.AbstractContextManager[BinaryIO | None]:
    """The spool file ``path`` open for reading; None for no spool."""
    return open(path, "rb") if path else contextlib.nullcontext()


class Spool:
    """Binaries' bytes appended to one file in the spool directory (none without one). A write
    that fails (no room) ends the spooling and drops the file: every member is then read from
    its archive again, as without a spool."""

    def __init__(self, directory: Path | None) -> None:
        self.path = ""
        self._file: BinaryIO | None = None
        if directory is not None:
            with contextlib.suppress(OSError):
                fd, self.path = tempfile.mkstemp(suffix=".spool", dir=directory)
                self._file = open(fd, "wb")  # noqa: SIM115 - closed by __exit__

    def add(self, data: bytes) -> int:
        """Where ``data`` starts in the file, or -1 when it could not be spooled."""
        if self._file is None:
            return -1
        at = self._file.tell()
        try:
            self._file.write(data)
            return at
        except OSError:
            self._drop()
            return -1

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:  # not all of it reached the file: read nothing back from it
                self._drop()

    def _drop(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        self._file = None
        with contextlib.suppress(OSError):
            if self.path:
                os.unlink(self.path)
        self.path = ""
