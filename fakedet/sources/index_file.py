"""The cache file of a dataset index: its columns (`ImageRecords`), where it lives, and its safe,
versioned on-disk form (numpy .npz read with allow_pickle=False, checked column by column)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CACHE_VERSION = 1
CACHE_MAGIC = "fakedet-index"
CACHE_FILE = f"index-v{CACHE_VERSION}.npz"
DIGEST_BYTES = 16


@dataclass
class ImageRecords:
    """Header facts of image files, one row per file, in the order they were asked for.

    Columns are numpy arrays (a list of dicts would cost ~1 kB per file); `paths` are keys relative
    to the dataset root ('/'-joined as the OS gives them; absolute for files outside the root).
    """

    paths: list[str]
    size: np.ndarray  # int64 bytes; -1 when the file could not be stat'ed
    mtime_ns: np.ndarray  # int64
    format_code: np.ndarray  # int16 index into `formats`; -1 when unreadable
    width: np.ndarray  # int32; 0 when unreadable
    height: np.ndarray  # int32
    mode_code: np.ndarray  # int16 index into `modes`; -1 when unreadable
    jpeg_quality: np.ndarray  # int8 IJG quality 1..100; -1 when not a JPEG
    digest: np.ndarray  # (N, 16) uint8 blake2b of the bytes; meaningful where has_digest
    has_digest: np.ndarray  # bool
    formats: list[str] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)
    # row -> why it is not usable; never cached: unreadable files (few) are read on every start,
    # so a permission fixed with chmod (which leaves the mtime alone) is seen at once.
    reasons: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def reason(self, row: int) -> str | None:
        """Why file `row` cannot be used as an image, or None when its header reads fine."""
        return self.reasons.get(row)

    def subset(self, rows: np.ndarray) -> ImageRecords:
        """The records of `rows` (an int array), in that order; reasons are renumbered."""
        new_row = {int(old): new for new, old in enumerate(rows)} if self.reasons else {}
        return ImageRecords(
            paths=[self.paths[row] for row in rows.tolist()],
            size=self.size[rows],
            mtime_ns=self.mtime_ns[rows],
            format_code=self.format_code[rows],
            width=self.width[rows],
            height=self.height[rows],
            mode_code=self.mode_code[rows],
            jpeg_quality=self.jpeg_quality[rows],
            digest=self.digest[rows],
            has_digest=self.has_digest[rows],
            formats=list(self.formats),
            modes=list(self.modes),
            reasons={new_row[row]: why for row, why in self.reasons.items() if row in new_row},
        )

    def format_of(self, row: int) -> str | None:
        code = int(self.format_code[row])
        return self.formats[code] if code >= 0 else None

    def mode_of(self, row: int) -> str | None:
        code = int(self.mode_code[row])
        return self.modes[code] if code >= 0 else None


def empty_records(count: int) -> ImageRecords:
    return ImageRecords(
        paths=[""] * count,
        size=np.full(count, -1, np.int64),
        mtime_ns=np.zeros(count, np.int64),
        format_code=np.full(count, -1, np.int16),
        width=np.zeros(count, np.int32),
        height=np.zeros(count, np.int32),
        mode_code=np.full(count, -1, np.int16),
        jpeg_quality=np.full(count, -1, np.int8),
        digest=np.zeros((count, DIGEST_BYTES), np.uint8),
        has_digest=np.zeros(count, bool),
    )


def user_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/fakedet`, else `~/.cache/fakedet`."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fakedet"


def cache_paths(data_root: Path) -> list[Path]:
    """Where the cache of `data_root` may be, in order of preference: beside the data (every node
    of a cluster sees it), then the user's cache folder keyed by the absolute root."""
    root = str(Path(data_root).resolve())
    key = hashlib.blake2b(root.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()
    return [Path(root) / ".fakedet" / CACHE_FILE, user_cache_dir() / key / CACHE_FILE]


def _text_array(texts: Sequence[str]) -> np.ndarray:
    # NUL cannot occur in a path, so it separates them; one byte blob keeps the file pickle-free.
    blob = "\0".join(texts).encode("utf-8", "surrogateescape")
    return np.frombuffer(blob, np.uint8)


def _texts(array: np.ndarray, count: int) -> list[str]:
    if count == 0:
        return []
    texts = array.tobytes().decode("utf-8", "surrogateescape").split("\0")
    if count >= 0 and len(texts) != count:
        raise ValueError(f"{len(texts)} names for {count} rows")
    return texts


def encode_cache(records: ImageRecords, root: str) -> bytes:
    """The cache file's bytes: a versioned header and the columns, as an .npz without pickles."""
    header = {"magic": CACHE_MAGIC, "version": CACHE_VERSION, "root": root, "rows": len(records)}
    buffer = io.BytesIO()
    np.savez(
        buffer,
        header=_text_array([json.dumps(header)]),
        paths=_text_array(records.paths),
        size=records.size,
        mtime_ns=records.mtime_ns,
        format_code=records.format_code,
        width=records.width,
        height=records.height,
        mode_code=records.mode_code,
        jpeg_quality=records.jpeg_quality,
        digest=records.digest,
        has_digest=records.has_digest,
        formats=_text_array(records.formats),
        modes=_text_array(records.modes),
    )
    return buffer.getvalue()


class InvalidCache(Exception):
    """A cache file that cannot be trusted; the message says why."""


_COLUMNS = {
    "size": np.int64,
    "mtime_ns": np.int64,
    "format_code": np.int16,
    "width": np.int32,
    "height": np.int32,
    "mode_code": np.int16,
    "jpeg_quality": np.int8,
    "has_digest": np.bool_,
}


def decode_cache(data: bytes | Path, root: str) -> ImageRecords:
    """Parse and check a cache file written for `root`.

    Raises:
        InvalidCache: not a fakedet index, another version, another root, or inconsistent columns.
    """
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with np.load(source, allow_pickle=False) as arrays:
            columns = {name: arrays[name] for name in arrays.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise InvalidCache(f"not a readable index ({exc.__class__.__name__}: {exc})") from None
    try:
        header = json.loads(_texts(columns["header"], 1)[0])
    except (KeyError, ValueError, UnicodeDecodeError):
        raise InvalidCache("no fakedet index header") from None
    if not isinstance(header, dict) or header.get("magic") != CACHE_MAGIC:
        raise InvalidCache("not a fakedet index")
    if header.get("version") != CACHE_VERSION:
        raise InvalidCache(
            f"index version {header.get('version')}, this fakedet reads {CACHE_VERSION}"
        )
    if header.get("root") != root:
        raise InvalidCache(f"built for {header.get('root')}, not {root}")
    rows = header.get("rows")
    if not isinstance(rows, int) or rows < 0:
        raise InvalidCache(f"bad row count {rows!r}")
    try:
        return _records_from_columns(columns, rows)
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise InvalidCache(f"inconsistent columns ({exc})") from None


def _records_from_columns(columns: dict[str, np.ndarray], rows: int) -> ImageRecords:
    for name, dtype in _COLUMNS.items():
        column = columns[name]
        if column.dtype != dtype or column.shape != (rows,):
            raise ValueError(f"{name}: {column.dtype} {column.shape}")
    digest = columns["digest"]
    if digest.dtype != np.uint8 or digest.shape != (rows, DIGEST_BYTES):
        raise ValueError(f"digest: {digest.dtype} {digest.shape}")
    formats = _texts(columns["formats"], -1) if columns["formats"].size else []
    modes = _texts(columns["modes"], -1) if columns["modes"].size else []
    for name, vocabulary in (("format_code", formats), ("mode_code", modes)):
        codes = columns[name]
        if rows and (codes.min() < -1 or codes.max() >= len(vocabulary)):
            raise ValueError(f"{name} out of range")
    return ImageRecords(
        paths=_texts(columns["paths"], rows),
        size=columns["size"],
        mtime_ns=columns["mtime_ns"],
        format_code=columns["format_code"],
        width=columns["width"],
        height=columns["height"],
        mode_code=columns["mode_code"],
        jpeg_quality=columns["jpeg_quality"],
        digest=digest,
        has_digest=columns["has_digest"],
        formats=formats,
        modes=modes,
    )


# ---------------------------------------------------------------------------------------------
# The scan: reuse what the cache knows, read the rest.
