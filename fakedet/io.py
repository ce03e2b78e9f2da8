"""Atomic file writes (temp file beside the target, fsync, rename): every file fakedet writes."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from fakedet.errors import WriteError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a temp file beside `path`, fsync it, then rename it over `path`.

    Either the old file or the whole new one exists at every moment, also across a crash.

    Raises:
        WriteError: the disk is full or the file cannot be written; `path` is left untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except OSError as exc:
        Path(temp_name).unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise WriteError(
                f"Could not write {path}: the disk is full or the file size limit was hit "
                f"({exc.strerror}); the previous {path.name} is intact. Free space and try again."
            ) from None
        raise WriteError(f"Could not write {path}: {exc.strerror or exc}.") from None
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
