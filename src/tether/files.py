"""Writing files that hold secrets: atomically, privately, durably."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_private(path: Path, data: bytes | str) -> Path:
    """Replace ``path`` with ``data``: a 0600 temp file in the same directory, fsynced,
    renamed over the target, then the directory fsynced. A reader sees the old file or
    the new one, never half of one, and nobody else can read it even briefly."""
    path = Path(path).absolute()
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass  # some filesystems refuse to fsync a directory; the rename itself stands
    return path
