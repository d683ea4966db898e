"""File utilities shared by every module that writes: atomic writes, fsync, content hashes.

A write that a crash or a power cut can interrupt must leave either the old file or the new
one, never half of one: write to a temporary file beside the target, flush it to the disk
(fsync), rename it into place, then fsync the folder so the rename itself is on the disk.
"""

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: Path):
    """Open a temporary file beside `path` for writing (binary): when the block ends it is flushed
    to the disk and renamed into place; on any error, Ctrl-C included, it is removed instead."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write through a temporary file and a rename, so readers never see half a file."""
    with atomic_file(path) as f:
        f.write(data)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
