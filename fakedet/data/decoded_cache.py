"""The decoded cache: a dataset's images decoded once into uint8 RGB pixels in one memory-mapped
file, which every epoch and every run then reads instead of decoding (`fakedet cache DATA`).

Pixels stay on their grid: an image is stored at its native resolution, or, with `max_side`, as
its centre crop of at most `max_side` per side, never resampled. Random crops then still move
(for `max_side` above the crop) and an image smaller than the crop is up-scaled at training
time exactly as when decoded from its file. An entry is used only while its file has the size
and modification time it had when decoded, the rule of the dataset index
(fakedet/sources/index_cache.py); any other file, or a changed one, is decoded as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

from fakedet.data.decode import decode_rgb
from fakedet.errors import DataError, WriteError
from fakedet.io import atomic_write_bytes, ensure_folder
from fakedet.sources.index_file import user_cache_dir

FORMAT_VERSION = 1
ENTRIES_FILE = "entries.npz"
DecodeFunction = Callable[[str], Image.Image]


def cache_folders(data_root: Path) -> list[Path]:
    """Where the decoded cache of `data_root` may be, in order of preference: beside the data,
    then the user's cache folder keyed by the absolute root (as the index's cache)."""
    root = str(Path(data_root).resolve())
    key = hashlib.blake2b(root.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()
    name = f"decoded-v{FORMAT_VERSION}"
    return [Path(root) / ".fakedet" / name, user_cache_dir() / key / name]


def centre_crop_to(image: Image.Image, max_side: int | None) -> Image.Image:
    """The centre crop of at most `max_side` per side (the image itself when it fits)."""
    width, height = image.size
    if max_side is None or (width <= max_side and height <= max_side):
        return image
    new_width, new_height = min(width, max_side), min(height, max_side)
    left, top = (width - new_width) // 2, (height - new_height) // 2
    return image.crop((left, top, left + new_width, top + new_height))


@dataclass(frozen=True)
class CacheSummary:
    """What `build_decoded_cache` did."""

    folder: str
    images: int
    unreadable: int
    megabytes: float
    seconds: float
    rebuilt: bool
    max_side: int | None


class DecodedCache:
    """The cache's entries, read once; `reader()` gives the function a dataset decodes with.

    Picklable (loader workers receive it): the pixel file is mapped lazily in each process.
    """

    def __init__(
        self,
        pixels_file: Path,
        entries: dict[str, tuple[int, int, int, int, int]],
        max_side: int | None,
    ) -> None:
        self.pixels_file = pixels_file
        self.entries = entries  # path -> (size, mtime_ns, offset, height, width)
        self.max_side = max_side
        self._pixels: np.memmap | None = None

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_pixels": None}

    def fresh(self, paths: Sequence[str]) -> dict[str, tuple[int, int, int]]:
        """path -> (offset, height, width) of the `paths` whose file is unchanged since decoded."""
        found = {}
        for path in paths:
            entry = self.entries.get(path)
            if entry is None:
                continue
            try:
                stat = _stat(path)
            except OSError:
                continue
            if (stat.st_size, stat.st_mtime_ns) == entry[:2]:
                found[path] = entry[2:]
        return found

    def pixels(self, offset: int, height: int, width: int) -> np.ndarray:
        """(H, W, 3) uint8 view into the mapped file."""
        if self._pixels is None:
            self._pixels = np.memmap(self.pixels_file, dtype=np.uint8, mode="r")
        return self._pixels[offset : offset + height * width * 3].reshape(height, width, 3)

    def reader(self, paths: Sequence[str], fallback: DecodeFunction = decode_rgb) -> CachedReader:
        """The decode function for a dataset of `paths`: cached pixels where fresh, else
        `fallback`."""
        return CachedReader(self, self.fresh(paths), fallback)


@dataclass
class CachedReader:
    """Decodes a path from the cache when its entry is fresh, else with `fallback`."""

    cache: DecodedCache
    fresh: dict[str, tuple[int, int, int]]
    fallback: DecodeFunction

    def __call__(self, path: str) -> Image.Image:
        place = self.fresh.get(path)
        if place is None:
            return self.fallback(path)
        return Image.fromarray(self.cache.pixels(*place))  # copies out of the mapping


def open_decoded_cache(data_root: Path) -> DecodedCache | None:
    """The decoded cache of `data_root`, or None when there is none (or it is unreadable)."""
    for folder in cache_folders(data_root):
        entries_file = folder / ENTRIES_FILE
        if not entries_file.is_file():
            continue
        try:
            with np.load(entries_file, allow_pickle=False) as columns:
                header = json.loads(bytes(columns["header"]).decode("utf-8"))
                paths = bytes(columns["paths"]).decode("utf-8", "surrogateescape").split("\0")
                numbers = columns["numbers"]
        except (OSError, ValueError, KeyError):
            continue
        pixels_file = folder / str(header.get("pixels"))
        if header.get("version") != FORMAT_VERSION or not pixels_file.is_file():
            continue
        if len(paths) != len(numbers):
            continue
        entries = {
            path: tuple(int(v) for v in row) for path, row in zip(paths, numbers, strict=True)
        }
        return DecodedCache(pixels_file, entries, header.get("max_side"))  # type: ignore[arg-type]
    return None


def _stat(path: str) -> os.stat_result:
    """The file's stat, or for a shard sample (`SHARD#MEMBER`) its shard's: a changed shard
    makes each of its samples stale."""
    if "#" in path:
        from fakedet.sources.shards.keys import is_shard_key, split_shard_key

        if is_shard_key(path):
            return os.stat(split_shard_key(path)[0])
    return os.stat(path)


def _writable_folder(data_root: Path) -> Path:
    for folder in cache_folders(data_root):
        try:
            ensure_folder(folder)
        except (OSError, WriteError):
            continue
        if os.access(folder, os.W_OK):
            return folder
    raise DataError(
        f"No writable place for the decoded cache of {data_root} (tried "
        f"{', '.join(str(f) for f in cache_folders(data_root))}); make one of them writable."
    )


def build_decoded_cache(
    data_root: Path,
    paths: Sequence[str],
    max_side: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    decode: DecodeFunction = decode_rgb,
) -> CacheSummary:
    """Decode `paths` (the images of the dataset at `data_root`) into its decoded cache, unless
    the cache already holds every one of them, unchanged, at the same `max_side`.

    Files that fail to decode are left out (training then decodes and reports them as before).

    Raises:
        DataError: no folder for the cache can be written.
    """
    started = time.perf_counter()
    existing = open_decoded_cache(data_root)
    unique = list(dict.fromkeys(paths))
    if (
        existing is not None
        and existing.max_side == max_side
        and len(existing.fresh(unique)) == len(unique)
    ):
        size = existing.pixels_file.stat().st_size
        return CacheSummary(
            str(existing.pixels_file.parent), len(unique), 0, size / 2**20,
            time.perf_counter() - started, False, max_side,
        )  # fmt: skip
    folder = _writable_folder(data_root)
    # A new pixel file per build, named in the entries: the entries are replaced atomically
    # after it is complete, so a reader never pairs them with another build's pixels.
    pixels_name = f"pixels-{time.time_ns()}.u8"
    temporary = folder / f"{pixels_name}.tmp"
    kept, numbers, offset, unreadable = [], [], 0, 0
    try:
        with open(temporary, "wb") as handle:
            for done, path in enumerate(unique, start=1):
                try:
                    stat = _stat(path)
                    image = centre_crop_to(decode(path), max_side)
                except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
                    unreadable += 1
                    continue
                pixels = np.asarray(image, dtype=np.uint8)  # (H, W, 3)
                handle.write(pixels.tobytes())
                kept.append(path)
                numbers.append((stat.st_size, stat.st_mtime_ns, offset, *pixels.shape[:2]))
                offset += pixels.size
                if on_progress is not None:
                    on_progress(done, len(unique))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, folder / pixels_name)
    finally:
        temporary.unlink(missing_ok=True)
    header = json.dumps({"version": FORMAT_VERSION, "max_side": max_side, "pixels": pixels_name})
    buffer = BytesIO()
    np.savez(
        buffer,
        header=np.frombuffer(header.encode("utf-8"), np.uint8),
        paths=np.frombuffer("\0".join(kept).encode("utf-8", "surrogateescape"), np.uint8),
        numbers=np.asarray(numbers, dtype=np.int64).reshape(-1, 5),
    )
    atomic_write_bytes(folder / ENTRIES_FILE, buffer.getvalue())
    for old in folder.glob("pixels-*.u8"):
        if old.name != pixels_name:
            old.unlink(missing_ok=True)
    return CacheSummary(
        str(folder), len(kept), unreadable, offset / 2**20, time.perf_counter() - started, True,
        max_side,
    )  # fmt: skip
