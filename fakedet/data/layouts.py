"""Finding the labelled images of a dataset: folder layouts (ours and public ones) and CSV files.

fakedet's label is realness: 1.0 = real photo, 0.0 = generated. Public datasets label 1 = fake;
the mapping below is by folder name, never by the order folders sort in.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from fakedet.data.csv_labels import discover_csv, read_label_csv
from fakedet.data.index_cache import scan_with_cache, scan_with_cache_ranked, split_readable
from fakedet.data.index_file import ImageRecords
from fakedet.data.listing import ImageListing, scan_image_files
from fakedet.data.samples import (
    TRAIN_FOLDERS,
    VAL_FOLDERS,
    DatasetIndex,
    Sample,
    stratified_split,
)
from fakedet.data.shard_layout import build_shard_index, discover_shard_test_set, shard_splits
from fakedet.data.shards import ParquetColumns
from fakedet.errors import DataError

if TYPE_CHECKING:
    from fakedet.config import TrainingConfig

# Folder names (lower-cased) that mark a class, and the layout family each one belongs to.
CLASS_FOLDERS: dict[str, tuple[float, str]] = {
    "real": (1.0, "real/fake"),
    "fake": (0.0, "real/fake"),
    "0_real": (1.0, "ForenSynths (0_real/1_fake)"),
    "1_fake": (0.0, "ForenSynths (0_real/1_fake)"),
    "nature": (1.0, "GenImage (nature/ai)"),
    "ai": (0.0, "GenImage (nature/ai)"),
}
LAYOUT_HELP = (
    "expected DATA_ROOT/train/{real,fake}/ (optionally DATA_ROOT/val/{real,fake}/), "
    "ForenSynths 0_real/1_fake, GenImage nature/ai or CIFAKE REAL/FAKE folders, "
    "or --use-csv with train.csv/val.csv or labels.csv"
)

TEST_LAYOUT_HELP = (
    "expected TEST_ROOT/<generator>/.../{0_real,1_fake}, TEST_ROOT/<generator>/[val/]{nature,ai}, "
    "TEST_ROOT/<generator>/{real,fake} or TEST_ROOT/{real,fake}, or --use-csv with labels.csv or "
    "test.csv (path, label[, generator])"
)


def _image_files(root: Path) -> ImageListing:
    """The image files under `root`; a folder that cannot be read is an error, not a silent gap
    (an unreadable val/ would otherwise turn into a split of train without a word)."""
    unreadable: list[tuple[str, str]] = []
    listing = scan_image_files(root, unreadable)
    if unreadable:
        folder, reason = unreadable[0]
        more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
        raise DataError(
            f"Cannot read the folder {folder}{more}: {reason}; fix its permissions or move it "
            "out of the dataset."
        )
    return listing


def check_image_header(path: str) -> str | None:
    """Why `path` cannot be used as an image, or None when its header reads fine.

    Only the header is read (cheap); truncated pixel data is caught later, when a batch loads it.
    """
    try:
        if Path(path).stat().st_size == 0:
            return "empty file (0 bytes)"
        with Image.open(path) as image:
            width, height = image.size
        if width == 0 or height == 0:
            return "image has zero width or height"
    except Image.DecompressionBombError as exc:
        return f"refused as a decompression bomb ({exc})"
    except OSError as exc:
        return f"not a readable image ({exc.__class__.__name__}: {exc})"
    return None


def _split_of(parts: tuple[str, ...]) -> str | None:
    lowered = [part.lower() for part in parts]
    for name in lowered:
        if name in TRAIN_FOLDERS:
            return "train"
        if name in VAL_FOLDERS:
            return name
    return None


def _class_of(parts: tuple[str, ...]) -> tuple[float, str] | None:
    # The deepest class folder wins, so `fake/real/x.png` would count as real.
    for part in reversed(parts):
        found = CLASS_FOLDERS.get(part.lower())
        if found:
            return found
    return None


def _class_runs(
    listing: ImageListing, root: Path
) -> Iterator[tuple[int, int, tuple[str, ...], float, str]]:
    """(first row, end row, folders under `root`, realness label, layout family) of each run of
    listed images that sits under a class folder; images outside any class folder are left out.

    Each folder's parts and class are worked out once: a million files share a few thousand
    folders, and a `Path` per file cost ~15 s at that size."""
    top = str(root)
    prefix = "" if top == "." else os.path.join(top, "")
    for folder, start, end in listing.folders:
        relative = folder[len(prefix) :] if folder.startswith(prefix) else folder
        parts = tuple(relative.split(os.sep)) if relative else ()
        found = _class_of(parts)
        if found is not None:
            yield start, end, parts, *found


def _labelled_files(
    listing: ImageListing, root: Path
) -> Iterator[tuple[str, tuple[str, ...], float, str]]:
    """(path, its folders under `root`, realness label, layout family) of each labelled image."""
    for start, end, parts, label, family in _class_runs(listing, root):
        for path in listing.paths[start:end]:
            yield path, parts, label, family


def discover_folders(
    data_root: Path, val_split: float, seed: int, listing: ImageListing
) -> DatasetIndex:
    """Index a folder-layout dataset (ours, ForenSynths/NPR, GenImage, CIFAKE), any depth.

    Args:
        listing: the image files under `data_root` (`_image_files`).

    Raises:
        DataError: no labelled image, or a class missing in train or val.
    """
    by_split: dict[str, list[Sample]] = {}
    families: Counter[str] = Counter()
    class_names: set[str] = set()
    split_of: dict[tuple[str, ...], str] = {}
    for path, parts, label, family in _labelled_files(listing, data_root):
        families[family] += 1
        split = split_of.get(parts)
        if split is None:
            class_names.update(part for part in parts if part.lower() in CLASS_FOLDERS)
            split = split_of[parts] = _split_of(parts) or "unsplit"
        by_split.setdefault(split, []).append(Sample(path, label))
    if not by_split:
        raise DataError(f"No labelled images found under {data_root}: {LAYOUT_HELP}.")
    layout = families.most_common(1)[0][0]
    if {"REAL", "FAKE"} & class_names:
        layout = "CIFAKE (REAL/FAKE)"

    val_name = next((name for name in VAL_FOLDERS if name in by_split), None)
    train = by_split.get("train", []) + by_split.get("unsplit", [])
    has_train = "train" in by_split
    if val_name is not None:
        val_source = f"folder '{val_name}'"
        return DatasetIndex(train, by_split[val_name], layout, val_source, [], has_train)
    train, val = stratified_split(train, val_split, seed)
    val_source = f"{val_split:.0%} of train (seeded, stratified)"
    return DatasetIndex(train, val, layout, val_source, [], has_train)


def check_classes(index: DatasetIndex, data_root: Path, test_set: bool = False) -> None:
    """Raise DataError when a split has no images or lacks a class (a test set: all images)."""
    splits = [("train", index.train), ("val", index.val)]
    if test_set:
        splits = [("labelled", index.train + index.val)]
    for split_name, samples in splits:
        real = sum(1 for sample in samples if sample.label >= 0.5)
        fake = len(samples) - real
        if not samples:
            unreadable = ""
            if index.skipped:
                path, reason = index.skipped[0]
                unreadable = (
                    f" ({len(index.skipped)} files could not be read, e.g. {path}: {reason})"
                )
            raise DataError(
                f"The {split_name} split of {data_root} has no readable images{unreadable}: "
                f"{LAYOUT_HELP}."
            )
        if real == 0 or fake == 0:
            missing = "real" if real == 0 else "fake"
            raise DataError(
                f"The {split_name} split of {data_root} has no {missing} images "
                f"({len(samples)} images, all {'fake' if real == 0 else 'real'}): {LAYOUT_HELP}."
            )


def check_data_root(data_root: Path) -> None:
    """Raise DataError unless `data_root` is an existing folder."""
    if data_root.is_file():
        raise DataError(
            f"{data_root} is a file, not a dataset folder: give the folder that holds the images "
            f"({LAYOUT_HELP})."
        )
    if not data_root.is_dir():
        raise DataError(f"Dataset folder {data_root} does not exist: {LAYOUT_HELP}.")


def build_index(
    data_root: Path,
    use_csv: bool,
    val_split: float,
    seed: int,
    skip_missing: bool = False,
    allow_test_set: bool = False,
    on_note: Callable[[str], None] | None = None,
    is_builder: bool = True,
    barrier: Callable[[], None] = lambda: None,
    columns: ParquetColumns = ParquetColumns(),
) -> DatasetIndex:
    """Find, label and header-check every image of a dataset.

    Args:
        data_root: the dataset folder.
        use_csv: read labels from CSV files instead of folder names.
        val_split: fraction of train held out when the dataset has no val split.
        seed: seed of that split.
        skip_missing: CSV only: drop rows whose file is missing instead of failing.
        allow_test_set: accept a set without a train split (validation and evaluation).
        on_note: receives one-line notes (a cache rebuilt, where it lives).
        is_builder, barrier: under DDP, the process that builds the cache and the wait the
            others do before reading it (see `scan_with_cache_ranked`).
        columns: the column names of Parquet shards (a dataset of shards, see shard_layout.py).

    Returns:
        The index, with unreadable files moved to `skipped`.

    Raises:
        DataError: missing or empty root, no images, a class missing, bad CSV rows.
    """
    check_data_root(data_root)
    splits = {} if use_csv else shard_splits(data_root)
    if splits:
        index = build_shard_index(data_root, splits, val_split, seed, columns, is_builder, barrier)
        check_classes(index, data_root, test_set=allow_test_set and not index.has_train_split)
        return index
    # Header facts come from the dataset's cached index: only files added or changed since the
    # last start are opened (data/index_cache.py).
    if use_csv:
        index = discover_csv(data_root, val_split, seed, skip_missing)
        train, val = index.train, index.val
        records = scan_with_cache_ranked(
            data_root, [*train, *val], is_builder, barrier, on_note, None, False
        )
        index.train, bad_train = split_readable(train, records)
        index.val, bad_val = split_readable(val, records, first_row=len(train))
        index.skipped = [*index.skipped, *bad_train, *bad_val]
        labels = [sample.label for sample in (*train, *val)]
        splits = ["train"] * len(train) + ["val"] * len(val)
    else:
        index, records, labels, splits = _index_folders(
            data_root, val_split, seed, on_note, is_builder, barrier
        )
    usable = np.ones(len(records), bool)
    usable[list(records.reasons)] = False
    rows = np.flatnonzero(usable)
    if len(rows) < len(records):  # else every row is usable: no copies of a million entries
        records = records.subset(rows)
        labels = [labels[row] for row in rows]
        splits = [splits[row] for row in rows]
    index.audit_input = (records, labels, splits)
    check_classes(index, data_root, test_set=allow_test_set and not index.has_train_split)
    return index


def _index_folders(
    data_root: Path,
    val_split: float,
    seed: int,
    on_note: Callable[[str], None] | None,
    is_builder: bool,
    barrier: Callable[[], None],
) -> tuple[DatasetIndex, ImageRecords, list[float], list[str]]:
    """A folder layout's index, and its labelled images' records in listing order with each
    row's label and split.

    The cache is read in listing order, the order it was written in, with the listing's sizes
    and mtimes: at a million files that takes 0.4 s where the samples' order (after the val
    split) took 2 s of lookups.
    """
    listing = _image_files(data_root)
    index = discover_folders(data_root, val_split, seed, listing)
    rows: list[range] = []
    labels: list[float] = []
    for start, end, _, label, _ in _class_runs(listing, data_root):
        rows.append(range(start, end))
        labels += [label] * (end - start)
    labelled = listing.subset(np.fromiter(itertools.chain(*rows), np.int64, len(labels)))
    records = scan_with_cache_ranked(
        data_root,
        labelled.paths,
        is_builder,
        barrier,
        on_note,
        stats=(labelled.size, labelled.mtime_ns),
    )
    bad = {labelled.paths[row]: reason for row, reason in sorted(records.reasons.items())}
    if bad:
        index.train = [sample for sample in index.train if sample.path not in bad]
        index.val = [sample for sample in index.val if sample.path not in bad]
        index.skipped = [*index.skipped, *bad.items()]
    in_val = {sample.path for sample in index.val}
    splits = ["val" if path in in_val else "train" for path in labelled.paths]
    return index, records, labels, splits


@dataclass
class TestSet:
    """Every labelled image of a test set, each with its group (generator), and the files left
    out with their reasons. A test set is never split."""

    samples: list[Sample]
    layout: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    group_of: dict[str, str] = field(default_factory=dict)  # every labelled path, read or not

    @property
    def groups(self) -> list[str]:
        return sorted({sample.group for sample in self.samples})


def _group_of(parts: tuple[str, ...], root_name: str) -> str:
    """The first folder under the root above the class folders; the root's name if none."""
    if not parts or parts[0].lower() in CLASS_FOLDERS:
        return root_name
    return parts[0]


def discover_test_set(
    test_root: Path, use_csv: bool = False, columns: ParquetColumns = ParquetColumns()
) -> TestSet:
    """Every labelled image under `test_root`, grouped by generator, header-checked.

    Folder layouts: `<group>/**/{0_real,1_fake}`, `<group>/[val/]{nature,ai}`,
    `<group>/{real,fake}` (any case), or plain `{real,fake}` (one group named after the root).
    CSV: `labels.csv` or `test.csv` with `path,label` and an optional `generator` column.

    Raises:
        DataError: not a folder, no labelled image, or bad CSV rows.
    """
    check_data_root(test_root)
    splits = {} if use_csv else shard_splits(test_root)
    if splits:
        return TestSet(*discover_shard_test_set(test_root, splits, columns))
    root_name = test_root.resolve().name or "test"
    if use_csv:
        csv_path = next(
            (
                test_root / name
                for name in ("labels.csv", "test.csv")
                if (test_root / name).is_file()
            ),
            None,
        )
        if csv_path is None:
            raise DataError(
                f"--use-csv was given but {test_root} has neither labels.csv nor test.csv "
                "(columns: path, label[, generator])."
            )
        rows, skipped = read_label_csv(csv_path, test_root, skip_missing=True)
        samples = [sample._replace(group=sample.group or root_name) for sample, _ in rows]
        layout = f"CSV ({csv_path.name})"
    else:
        samples, skipped, families = [], [], Counter()
        for path, parts, label, family in _labelled_files(_image_files(test_root), test_root):
            families[family] += 1
            samples.append(Sample(path, label, _group_of(parts, root_name)))
        if not samples:
            raise DataError(f"No labelled images found under {test_root}: {TEST_LAYOUT_HELP}.")
        layout = families.most_common(1)[0][0]
    good, bad = split_readable(samples, scan_with_cache(test_root, samples))
    if not good:
        raise DataError(
            f"None of the {len(samples)} labelled images under {test_root} could be read "
            f"(e.g. {bad[0][0]}: {bad[0][1]})."
        )
    group_of = {sample.path: sample.group for sample in samples}
    return TestSet(good, layout, [*skipped, *bad], group_of)


def index_dataset(
    config: TrainingConfig,
    data_root: Path | None = None,
    use_csv: bool | None = None,
    allow_test_set: bool = False,
    on_note: Callable[[str], None] | None = None,
    is_builder: bool = True,
    barrier: Callable[[], None] | None = None,
) -> DatasetIndex:
    """The dataset's index with the config's split rule; `data_root`/`use_csv` override it, and
    `allow_test_set` accepts a set without a train split (validation). Under DDP each node's local
    rank 0 (`is_builder`) builds the cached index while the others wait at `barrier`, then read
    it."""
    return build_index(
        data_root or Path(config.data_root),
        config.use_csv if use_csv is None else use_csv,
        config.val_split,
        config.seed,
        config.skip_missing,
        allow_test_set,
        on_note,
        is_builder=is_builder,
        barrier=barrier or (lambda: None),
        columns=ParquetColumns(config.image_column, config.label_column, config.generator_column),
    )
