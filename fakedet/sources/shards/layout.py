"""Datasets made of shards: `DATA/{train,val,test}/*.{tar,parquet}` (or shards directly in DATA)
indexed into the same `DatasetIndex` and `TestSet` the folder layouts give."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from fakedet.errors import DataError
from fakedet.sources.samples import TRAIN_FOLDERS, VAL_FOLDERS, DatasetIndex, stratified_split
from fakedet.sources.shards.formats import ShardIndex
from fakedet.sources.shards.index import index_shards
from fakedet.sources.shards.keys import (
    ParquetColumns,
    describe_formats,
    find_shards,
    require_shard_libraries,
    split_shard_key,
)
from fakedet.sources.shards.reading import shard_samples

UNSPLIT = "unsplit"


def shard_splits(root: Path) -> dict[str, list[Path]]:
    """The shards of each split folder of `root` (`train`, `val`, `test`...; any case), and those
    directly in `root` under "unsplit"; empty when `root` holds no shard there."""
    splits: dict[str, list[Path]] = {}
    if not root.is_dir():
        return splits
    for child in sorted(root.iterdir()):
        name = child.name.lower()
        split = "train" if name in TRAIN_FOLDERS else name if name in VAL_FOLDERS else None
        if split is not None and child.is_dir():
            shards = find_shards(child)
            if shards:
                splits.setdefault(split, []).extend(shards)
    top = find_shards(root)
    if top:
        splits[UNSPLIT] = top
    return splits


def _index_ranked(
    shards: Sequence[Path],
    columns: ParquetColumns,
    is_builder: bool,
    barrier: Callable[[], None],
) -> list[ShardIndex]:
    """Under DDP the builder indexes (and caches) first; the others then read its caches. Every
    rank calls `barrier` exactly once, also when the builder fails."""
    require_shard_libraries()
    if not is_builder:
        barrier()
        return index_shards(shards, columns)
    try:
        return index_shards(shards, columns)
    finally:
        barrier()


def build_shard_index(
    data_root: Path,
    splits: dict[str, list[Path]],
    val_split: float,
    seed: int,
    columns: ParquetColumns = ParquetColumns(),
    is_builder: bool = True,
    barrier: Callable[[], None] = lambda: None,
) -> DatasetIndex:
    """The index of a shard dataset: `train/` (plus shards in the root) trains, the first of
    `val/`, `valid/`, `validation/`, `test/` validates, else a seeded stratified split of train.

    Samples that cannot be used (truncated, unreadable, no label) are skipped and listed.

    Raises:
        DataError: unreadable shards, a Parquet file without the named columns, unknown or mixed
            label conventions.
    """
    val_name = next((name for name in VAL_FOLDERS if name in splits), None)
    used = ["train", UNSPLIT, *([val_name] if val_name else [])]
    shards = [shard for name in used for shard in splits.get(name, [])]
    split_of = {str(shard): name for name in used for shard in splits.get(name, [])}
    found = shard_samples(_index_ranked(shards, columns, is_builder, barrier), True)
    train = [s for s in found.samples if split_of[split_shard_key(s.path)[0]] != val_name]
    layout = describe_formats(found.formats)
    has_train = "train" in splits
    if val_name is not None:
        val = [s for s in found.samples if split_of[split_shard_key(s.path)[0]] == val_name]
        index = DatasetIndex(train, val, layout, f"folder '{val_name}'", found.skipped, has_train)
    else:
        train, val = stratified_split(train, val_split, seed) if train else ([], [])
        source = f"{val_split:.0%} of train (seeded, stratified)"
        index = DatasetIndex(train, val, layout, source, found.skipped, has_train)
    in_val = {sample.path for sample in index.val}
    labels = [sample.label for sample in found.samples]
    split_names = ["val" if sample.path in in_val else "train" for sample in found.samples]
    index.audit_input = (found.records, labels, split_names)
    return index


def discover_shard_test_set(
    test_root: Path, splits: dict[str, list[Path]], columns: ParquetColumns = ParquetColumns()
) -> tuple[list, str, list[tuple[str, str]], dict[str, str]]:
    """(samples, layout, skipped, group of every key) of every shard under `test_root` (its split
    folders and the root itself); a sample's group is its generator, else the root's name.

    Raises:
        DataError: as `build_shard_index`, or no usable sample at all.
    """
    root_name = test_root.resolve().name or "test"
    shards = [shard for name in sorted(splits) for shard in splits[name]]
    found = shard_samples(
        _index_ranked(shards, columns, True, lambda: None), True, default_group=root_name
    )
    if not found.samples:
        example = f" (e.g. {found.skipped[0][0]}: {found.skipped[0][1]})" if found.skipped else ""
        raise DataError(
            f"None of the samples of the {len(shards)} shard(s) under {test_root} can be used"
            f"{example}."
        )
    return found.samples, describe_formats(found.formats), found.skipped, found.group_of
