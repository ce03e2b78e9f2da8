"""Atomic file writes (temp file beside the target, fsync, rename): every file fakedet writes."""

from __future__ import annotations

import errno
import math
import os
import tempfile
from pathlib import Path

from fakedet.errors import OutputPathError, WriteError

# Errors that say the path itself is wrong (the user's to fix), not that writing failed midway.
_PATH_ERRORS = (FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)


def ensure_folder(path: Path) -> Path:
    """Create `path` (and parents) as a folder to write into.

    Raises:
        OutputPathError: a file stands where the folder is due, or no permission to create it.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except _PATH_ERRORS as exc:
        what = "a file, not a folder" if path.exists() and not path.is_dir() else exc.strerror
        raise OutputPathError(
            f"Cannot write into {path}: {what}; choose another output folder."
        ) from None
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a temp file beside `path`, fsync it, then rename it over `path`.

    Either the old file or the whole new one exists at every moment, also across a crash.

    Raises:
        WriteError: the disk is full or the file cannot be written; `path` is left untouched.
    """
    if path.is_dir():
        raise OutputPathError(f"Cannot write {path}: it is a folder; give a file name.")
    ensure_folder(path.parent)
    try:
        descriptor, temp_name = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
        )
    except _PATH_ERRORS as exc:
        raise OutputPathError(
            f"Cannot write {path}: {exc.strerror} in {path.parent}; choose another place."
        ) from None
    # mkstemp makes the file 0600; give it the mode any new file gets here (the umask's).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temp_name, 0o666 & ~umask)
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
    # surrogateescape: a file name that is not valid UTF-8 is written back as its own bytes.
    atomic_write_bytes(path, text.encode("utf-8", "surrogateescape"))


def finite_or_none(value: object) -> object:
    """NaN and inf become None (JSON has neither); anything else is returned as it is."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def json_safe(values: dict[str, object]) -> dict[str, object]:
    """NaN and inf become None, so the history stays valid JSON."""
    return {key: finite_or_none(value) for key, value in values.items()}
