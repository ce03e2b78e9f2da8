"""Finding the labelled images of a dataset, whatever its layout: folders, CSV files or shards,
into a split training index (cached) or a grouped test set.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fakedet.errors import DataError
from fakedet.sources.csv_labels import discover_csv, read_label_csv
from fakedet.sources.folders import (
    LAYOUT_HELP,
    TEST_LAYOUT_HELP,
    _class_runs,
    _group_of,
    _image_files,
    _labelled_files,
    discover_folders,
)
from fakedet.sources.index_cache import scan_with_cache, scan_with_cache_ranked, split_readable
from fakedet.sources.index_file import ImageRecords
from fakedet.sources.samples import (
    DatasetIndex,
    Sample,
)
from fakedet.sources.shards.keys import ParquetColumns
from fakedet.sources.shards.layout import build_shard_index, discover_shard_test_set, shard_splits

if TYPE_CHECKING:
    from fakedet.config import TrainingConfig


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
