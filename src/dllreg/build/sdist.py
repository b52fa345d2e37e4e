"""A consumer's sdist with honest core metadata (PEP 643).

The wheel's METADATA gains ``Requires-Dist: dllreg-lib-NAME...`` (build/consumer.py); a 2.2+ sdist that
does not list them, nor marks ``Dynamic: Requires-Dist``, promises metadata the wheel breaks.
When every platform family's wheel gets the same lines (``[tool.dllreg] requires`` with markers,
each served by the same distribution), the sdist's PKG-INFO gets those identical lines; when the
provider differs by platform (a recipe's PyPI wheel exists for Linux only), it says
``Dynamic: Requires-Dist``. ``sdist_changes`` decides over member names and bytes;
``patch_sdist`` is the tar edge.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from .consumer import patch_metadata
from ..errors import BuildError
from ..names import NativeRequirement
from ..wheelfile import publish


def _is_pkg_info(name: str) -> bool:
    """``<top>/PKG-INFO`` and the copies setuptools keeps in ``<top>/[src/]NAME.egg-info/``."""
    parts = name.split("/")
    return parts[-1] == "PKG-INFO" and (len(parts) == 2 or parts[-2].endswith(".egg-info"))


def _dynamic(text: str) -> str:
    head, sep, body = text.partition("\n\n")
    lines = head.splitlines()
    if "Dynamic: Requires-Dist" not in (x.strip() for x in lines):
        lines.append("Dynamic: Requires-Dist")
    return "\n".join(lines) + "\n" + (sep[1:] + body if sep else "")


def sdist_changes(data: Mapping[str, bytes], requires: Sequence[NativeRequirement],
                  choices: Mapping[str, str] | None) -> dict[str, bytes]:
    """The PKG-INFO members of an sdist with the wheels' ``Requires-Dist`` added (served by
    ``choices``), or with ``Dynamic: Requires-Dist`` when ``choices`` is None (it differs by platform)."""
    out = {}
    for name, content in data.items():
        if _is_pkg_info(name):
            text = content.decode("utf-8")
            patched = patch_metadata(text, requires, choices) if choices is not None else _dynamic(text)
            if patched != text:
                out[name] = patched.encode("utf-8")
    return out


def patch_sdist(path: Path, requires: Sequence[NativeRequirement], choices: Mapping[str, str] | None
                ) -> None:
    """Rewrite the ``.tar.gz`` sdist at ``path`` in place (temp file, then rename)."""
    if not requires:
        return
    try:
        with tarfile.open(path, "r:gz") as tf:
            members = tf.getmembers()
            data = {m.name: f.read() for m in members if m.isfile() and _is_pkg_info(m.name)
                    for f in [tf.extractfile(m)] if f}
            changes = sdist_changes(data, requires, choices)
            if not changes:
                return
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
            os.close(fd)
            try:
                # mtime=0 in gzip's header: the same sdist twice gives the same bytes
                with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
                        tarfile.open(fileobj=gz, mode="w", format=tf.format) as out:
                    for m in members:
                        if m.name in changes:
                            m.size = len(changes[m.name])
                            out.addfile(m, io.BytesIO(changes[m.name]))
                        else:
                            out.addfile(m, tf.extractfile(m) if m.isfile() else None)
                publish(Path(tmp), path)
            finally:
                Path(tmp).unlink(missing_ok=True)
    except (OSError, tarfile.TarError, UnicodeDecodeError) as exc:
        raise BuildError(f"{path}: cannot add Requires-Dist to the sdist's PKG-INFO ({exc})") from None
