"""The cached index of a dataset's image files: header facts read once, re-read only when a file
is added or changed (size or mtime), stored in columns so that millions of files stay small.

The cache holds what a file *is* (format, size, mode, JPEG quality, readable or why not, content
hash); labels, splits and groups come from the layout or CSV on every start, because they depend
on flags (--use-csv, --val-split, --seed) that a cache would silently freeze.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from fakedet.errors import OutputPathError, WriteError
from fakedet.io import atomic_write_bytes
from fakedet.sources.index_file import (
    DIGEST_BYTES,
    ImageRecords,
    InvalidCache,
    cache_paths,
    decode_cache,
    empty_records,
    encode_cache,
)
from fakedet.sources.samples import Sample

# Files per task of the header-reading pool: large enough that futures cost nothing next to the
# headers, small enough that the progress bar moves.
CHUNK = 256

NoteCallback = Callable[[str], None]
ProgressCallback = Callable[[int, int], None]


# IJG (libjpeg) standard luminance table, ITU-T T.81 Annex K.1, in natural (row-major) order,
# which is the order Pillow's `image.quantization` uses.
_IJG_LUMINANCE = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
     14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
     18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
    np.int64,
)  # fmt: skip


def _ijg_tables() -> np.ndarray:
    """(100, 64): the luminance table libjpeg writes at each quality 1..100 (jpeg_set_quality:
    scale = 5000/q below 50, else 200 - 2q; entry = (base * scale + 50) // 100 clamped to
    1..255)."""
    quality = np.arange(1, 101)
    scale = np.where(quality < 50, 5000 // quality, 200 - 2 * quality)
    tables = (_IJG_LUMINANCE[None, :] * scale[:, None] + 50) // 100
    return np.clip(tables, 1, 255)


_TABLES = _ijg_tables()
_quality_memo: dict[tuple[int, ...], int] = {}


def estimate_jpeg_quality(luminance_table: Sequence[int]) -> int:
    """The IJG quality 1..100 whose luminance table is nearest (L1) to `luminance_table`.

    Exact for files written by libjpeg-based encoders (Pillow, OpenCV, most generators' pipelines);
    for custom tables (cameras, Photoshop) the nearest standard quality. Few distinct tables exist
    in a dataset, so the answer is memoised per table.
    """
    key = tuple(int(value) for value in luminance_table)
    if key not in _quality_memo:
        distance = np.abs(_TABLES - np.asarray(key, np.int64)[None, :]).sum(axis=1)
        _quality_memo[key] = int(distance.argmin()) + 1
    return _quality_memo[key]


# One file's facts: size, mtime_ns, format, width, height, mode, jpeg quality, reason.
_Facts = tuple[int, int, str | None, int, int, str | None, int, str | None]


def read_header(path: str) -> _Facts:
    """Stat `path` and read its image header only; never raises.

    The reasons are check_image_header's sentences, so `skipped` reads the same with or without
    the cache.
    """
    try:
        stat = os.stat(path)
    except OSError as exc:
        return (
            -1,
            0,
            None,
            0,
            0,
            None,
            -1,
            f"not a readable image ({exc.__class__.__name__}: {exc})",
        )
    if stat.st_size == 0:
        return 0, stat.st_mtime_ns, None, 0, 0, None, -1, "empty file (0 bytes)"
    try:
        with Image.open(path) as image:
            width, height = image.size
            image_format, mode = image.format, image.mode
            quality = -1
            tables = getattr(image, "quantization", None)
            if image_format in ("JPEG", "MPO") and tables and 0 in tables:
                quality = estimate_jpeg_quality(tables[0])
    except Image.DecompressionBombError as exc:
        reason = f"refused as a decompression bomb ({exc})"
        return stat.st_size, stat.st_mtime_ns, None, 0, 0, None, -1, reason
    # Pillow's plugins raise SyntaxError/ValueError/EOFError on some malformed headers, where
    # check_image_header would stop the run; here they make the file unreadable, like OSError.
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = f"not a readable image ({exc.__class__.__name__}: {exc})"
        return stat.st_size, stat.st_mtime_ns, None, 0, 0, None, -1, reason
    if width == 0 or height == 0:
        reason = "image has zero width or height"
        return stat.st_size, stat.st_mtime_ns, None, 0, 0, None, -1, reason
    return stat.st_size, stat.st_mtime_ns, image_format, width, height, mode, quality, None


def file_digest(path: str) -> bytes | None:
    """blake2b (16 bytes) of the file's bytes, or None when it cannot be read."""
    digest = hashlib.blake2b(digest_size=DIGEST_BYTES)
    try:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    except OSError:
        return None
    return digest.digest()


def _read_chunk(paths: list[str], with_hash: bool) -> list[tuple[_Facts, bytes | None]]:
    results = []
    for path in paths:
        facts = read_header(path)
        digest = file_digest(path) if with_hash and facts[7] is None else None
        results.append((facts, digest))
    return results


def _hash_chunk(paths: list[str]) -> list[bytes | None]:
    return [file_digest(path) for path in paths]


def _in_chunks(
    paths: list[str],
    work: Callable[[list[str]], list],
    workers: int,
    on_progress: ProgressCallback | None,
) -> Iterator:
    """`work` over `paths` in chunks on a thread pool (Pillow and file reads release the GIL),
    yielding each path's result in order (not collected: a million results would double the
    peak memory), progress after each chunk."""
    chunks = [paths[start : start + CHUNK] for start in range(0, len(paths), CHUNK)]
    done = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for chunk_results in pool.map(work, chunks):
            yield from chunk_results
            done += len(chunk_results)
            if on_progress is not None:
                on_progress(done, len(paths))


# ---------------------------------------------------------------------------------------------
# Where the cache lives, and its file format.


def _keys(data_root: Path, paths: list[str]) -> list[str]:
    """Cache keys: paths relative to the root (as given, or once made absolute), else absolute."""
    prefix = os.path.join(str(data_root), "")
    absolute_prefix = os.path.join(os.path.abspath(data_root), "")
    keys = []
    for path in paths:
        if path.startswith(prefix):
            keys.append(path[len(prefix) :])
            continue
        absolute = os.path.abspath(path)
        keys.append(
            absolute[len(absolute_prefix) :] if absolute.startswith(absolute_prefix) else absolute
        )
    return keys


def _load_cache(
    locations: list[Path], root: str, on_note: NoteCallback | None
) -> ImageRecords | None:
    for location in locations:
        if not location.is_file():
            continue
        try:
            return decode_cache(location, root)
        except InvalidCache as exc:
            if on_note is not None:
                on_note(f"Index cache {location} ignored and rebuilt: {exc}.")
    return None


def _save_cache(
    records: ImageRecords, locations: list[Path], root: str, on_note: NoteCallback | None
) -> None:
    data = encode_cache(records, root)
    failures = []
    for location in locations:
        try:
            atomic_write_bytes(location, data)
            return
        except (WriteError, OutputPathError, OSError) as exc:  # read-only data: the user cache
            failures.append(f"{location}: {exc}")
    if on_note is not None:
        on_note(f"Index cache not saved ({'; '.join(failures)}); the next start reads again.")


def _stat_all(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    sizes = np.full(len(paths), -1, np.int64)
    mtimes = np.zeros(len(paths), np.int64)
    for row, path in enumerate(paths):
        try:
            stat = os.stat(path)
        except OSError:
            continue  # size -1 never matches a cached entry, so the file is read (and reported)
        sizes[row] = stat.st_size
        mtimes[row] = stat.st_mtime_ns
    return sizes, mtimes


def _code(vocabulary: list[str], value: str | None) -> int:
    if value is None:
        return -1
    if value not in vocabulary:
        vocabulary.append(value)
    return vocabulary.index(value)


def _reuse_cached(
    records: ImageRecords, cached: ImageRecords, sizes: np.ndarray, mtimes: np.ndarray
) -> np.ndarray:
    """Copy into `records` the cached rows of readable files whose size and mtime are unchanged;
    the mask of the rows copied."""
    records.formats, records.modes = list(cached.formats), list(cached.modes)
    if cached.paths == records.paths:  # the usual warm start: same files, same order, no lookup
        old_rows = np.arange(len(records))
        records.paths = cached.paths  # keep one copy of the strings
    else:
        lookup = dict(zip(cached.paths, range(len(cached)), strict=True))
        old_rows = np.fromiter((lookup.get(key, -1) for key in records.paths), np.int64)
    reuse = old_rows >= 0
    found = old_rows[reuse]
    reuse[reuse] = (
        (cached.size[found] == sizes[reuse])
        & (cached.mtime_ns[found] == mtimes[reuse])
        & (cached.format_code[found] >= 0)
    )
    new_rows, old = np.flatnonzero(reuse), old_rows[reuse]
    for name in ("size", "mtime_ns", "format_code", "width", "height", "mode_code"):
        getattr(records, name)[new_rows] = getattr(cached, name)[old]
    for name in ("jpeg_quality", "digest", "has_digest"):
        getattr(records, name)[new_rows] = getattr(cached, name)[old]
    return reuse


def _store(records: ImageRecords, row: int, facts: _Facts, digest: bytes | None) -> None:
    size, mtime_ns, image_format, width, height, mode, quality, reason = facts
    records.size[row], records.mtime_ns[row] = size, mtime_ns
    records.format_code[row] = _code(records.formats, image_format)
    records.width[row], records.height[row] = width, height
    records.mode_code[row] = _code(records.modes, mode)
    records.jpeg_quality[row] = quality
    if reason is not None:
        records.reasons[row] = reason
    _store_digest(records, row, digest)


def _store_digest(records: ImageRecords, row: int, digest: bytes | None) -> bool:
    if digest is None:
        return False
    records.digest[row] = np.frombuffer(digest, np.uint8)
    records.has_digest[row] = True
    return True


def scan_with_cache(
    data_root: Path,
    files: Sequence[str | Path | Sample],
    on_note: NoteCallback | None = None,
    on_progress: ProgressCallback | None = None,
    with_hash: bool = False,
    workers: int = 8,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> ImageRecords:
    """Header facts of `files`, reusing the cache of `data_root` for every file whose size and
    mtime are unchanged, reading the others on a thread pool, and saving the cache when anything
    changed.

    Args:
        data_root: the dataset folder; the cache sits in `data_root/.fakedet/` when writable, else
            in the user's cache folder.
        files: the image files (paths or Samples), usually under `data_root`.
        on_note: receives one sentence when a cache file is ignored (unreadable, another version,
            another root) or cannot be saved.
        on_progress: called with (done, total) while files are read; not called on a warm start.
        with_hash: also give every readable file a content hash (cached like the rest).
        workers: threads reading headers.
        stats: each file's size and mtime_ns, row by row, when a listing already took them
            (scan_image_files): they spare a second stat of every file.

    Returns:
        One row per entry of `files`, in that order.
    """
    paths = [item.path if isinstance(item, Sample) else str(item) for item in files]
    keys = _keys(Path(data_root), paths)
    root = str(Path(data_root).resolve())
    locations = cache_paths(Path(data_root))
    cached = _load_cache(locations, root, on_note)
    sizes, mtimes = stats if stats is not None else _stat_all(paths)

    records = empty_records(len(paths))
    records.paths = keys
    reuse = np.zeros(len(paths), bool)
    if cached is not None:
        reuse = _reuse_cached(records, cached, sizes, mtimes)
    to_read = np.flatnonzero(~reuse).tolist()
    read = _in_chunks(
        [paths[row] for row in to_read],
        lambda chunk: _read_chunk(chunk, with_hash),
        workers,
        on_progress,
    )
    for row, (facts, digest) in zip(to_read, read, strict=True):
        _store(records, row, facts, digest)
    hashed = 0
    if with_hash:
        to_hash = np.flatnonzero((records.format_code >= 0) & ~records.has_digest).tolist()
        digests = _in_chunks([paths[row] for row in to_hash], _hash_chunk, workers, on_progress)
        for row, digest in zip(to_hash, digests, strict=True):
            hashed += _store_digest(records, row, digest)

    if cached is None or to_read or hashed or len(cached) != len(records):
        _save_cache(records, locations, root, on_note)
    return records


def scan_with_cache_ranked(
    data_root: Path,
    files: Sequence[str | Path | Sample],
    is_builder: bool,
    barrier: Callable[[], None],
    on_note: NoteCallback | None = None,
    on_progress: ProgressCallback | None = None,
    with_hash: bool = False,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> ImageRecords:
    """scan_with_cache under DDP: the builder scans and saves the cache, the others wait at
    `barrier` and then scan with it (warm: stat only).

    Every rank calls `barrier` exactly once, also when the builder fails, so no rank hangs; a rank
    that finds no usable cache after the barrier (the builder could not save one where this rank
    looks) reads the files itself, so the result never depends on the builder.
    """
    if not is_builder:
        barrier()
        return scan_with_cache(data_root, files, with_hash=with_hash, stats=stats)
    try:
        return scan_with_cache(data_root, files, on_note, on_progress, with_hash, stats=stats)
    finally:
        barrier()


def split_readable(
    samples: list[Sample], records: ImageRecords, first_row: int = 0
) -> tuple[list[Sample], list[tuple[str, str]]]:
    """Samples whose header reads fine, and (path, reason) for the others; `samples[i]` is row
    `first_row + i` of `records` (scan train + val at once, split each with its offset)."""
    good, bad = [], []
    for row, sample in enumerate(samples, start=first_row):
        reason = records.reasons.get(row)
        if reason is None:
            good.append(sample)
        else:
            bad.append((sample.path, reason))
    return good, bad
