"""Shard samples in use: the samples of indexed shards, reading one sample's bytes by its key in
any process, and the shard inputs of predict.

Tar members are read with one positioned read at the offset the index found; Parquet rows come
from their row group, which each process keeps in a small LRU (training orders Parquet samples by
row group, see `read_groups`).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fakedet.errors import DataError
from fakedet.sources.index_file import ImageRecords, empty_records
from fakedet.sources.samples import Sample
from fakedet.sources.shards.formats import ShardIndex, image_bytes, image_column_of
from fakedet.sources.shards.index import index_shard, index_shards
from fakedet.sources.shards.keys import ParquetColumns, is_shard_file, is_shard_key, split_shard_key

if TYPE_CHECKING:
    pass


# Row groups one process keeps decoded: two shuffle windows (`SHUFFLE_WINDOW_GROUPS`), so a batch
# that straddles two windows reads no group twice.
ROW_GROUP_CACHE = 16


SHUFFLE_WINDOW_GROUPS = 8


@dataclass
class ShardSamples:
    """The samples of some shards: labelled (and readable) ones, and the others with reasons."""

    samples: list[Sample]
    skipped: list[tuple[str, str]]
    records: ImageRecords  # header facts of `samples`, row by row (the audit reads them)
    formats: set[str]  # "WebDataset" and/or "Parquet"
    group_of: dict[str, str]  # every sample's group, skipped ones too


def shard_samples(
    indexes: Sequence[ShardIndex], require_labels: bool, default_group: str = ""
) -> ShardSamples:
    """Samples of the shards' usable images, grouped by generator (`default_group` without one).

    Args:
        require_labels: samples without a label are skipped and listed (training, evaluation);
            else kept with label NaN (prediction).

    Raises:
        DataError: a Parquet shard without the label column while labels are required, or
            labels that mix 0/1 and real/fake.
    """
    samples: list[Sample] = []
    skipped: list[tuple[str, str]] = []
    kept: list[tuple[ShardIndex, int]] = []
    conventions: dict[str, str] = {}
    formats = set()
    group_of: dict[str, str] = {}
    for index in indexes:
        formats.add("Parquet" if index.shard.lower().endswith(".parquet") else "WebDataset")
        if require_labels and not index.has_label_column:
            raise DataError(
                f"Parquet shard {index.shard} has no label column; name it with --label-column "
                "(0 = real, 1 = fake, or real/fake)."
            )
        for row in range(len(index)):
            key = index.key(row)
            group = group_of[key] = index.generator[row] or default_group
            if index.reason[row]:
                skipped.append((key, index.reason[row]))
                continue
            if index.convention[row]:
                conventions.setdefault(index.convention[row], key)
            elif require_labels:
                skipped.append((key, "no label (KEY.cls, 'label' in KEY.json, or a label value)"))
                continue
            samples.append(Sample(key, float(index.realness[row]), group))
            kept.append((index, row))
    if len(conventions) > 1:
        raise DataError(
            f"The shards mix label conventions: {conventions['number']} is labelled 0/1 and "
            f"{conventions['word']} real/fake; label every sample one way."
        )
    return ShardSamples(samples, skipped, _records(kept), formats, group_of)


def _records(kept: Sequence[tuple[ShardIndex, int]]) -> ImageRecords:
    records = empty_records(len(kept))
    records.paths = [index.key(row) for index, row in kept]
    for position, (index, row) in enumerate(kept):
        records.size[position] = index.size[row]
        records.format_code[position] = _code(records.formats, index.format[row])
        records.width[position], records.height[position] = index.width[row], index.height[row]
        records.mode_code[position] = _code(records.modes, index.mode[row])
        records.jpeg_quality[position] = index.jpeg_quality[row]
        records.digest[position] = np.frombuffer(index.digest[row], np.uint8)
        records.has_digest[position] = True
    return records


def _code(vocabulary: list[str], value: str) -> int:
    if value not in vocabulary:
        vocabulary.append(value)
    return vocabulary.index(value)


class _OpenShards:
    """Per-process handles: tar files with their member offsets, Parquet files with an LRU of
    decoded row groups. Rebuilt after a fork, so workers never share a handle's state."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.tars: dict[str, tuple[int, dict[str, tuple[int, int]]]] = {}
        self.parquets: dict[str, tuple[Any, np.ndarray]] = {}
        self.row_groups: OrderedDict[tuple[str, int], list[bytes | None]] = OrderedDict()

    def tar_bytes(self, shard: str, member: str) -> bytes:
        if shard not in self.tars:
            index = index_shard(Path(shard))
            members = dict(
                zip(
                    index.members,
                    zip(index.offset.tolist(), index.size.tolist(), strict=True),
                    strict=True,
                )
            )
            self.tars[shard] = (os.open(shard, os.O_RDONLY), members)
        descriptor, members = self.tars[shard]
        if member not in members:
            raise OSError(f"no member {member} in shard {shard}")
        offset, size = members[member]
        data = os.pread(descriptor, size, offset)
        if len(data) < size:
            raise OSError(f"truncated member {member} ({len(data)} of {size} bytes)")
        return data

    def parquet_bytes(self, shard: str, row: int) -> bytes:
        import pyarrow.parquet as pq

        if shard not in self.parquets:
            parquet = pq.ParquetFile(shard)
            sizes = [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
            self.parquets[shard] = (parquet, np.cumsum([0, *sizes]))
        parquet, starts = self.parquets[shard]
        group = int(np.searchsorted(starts, row, side="right")) - 1
        if not 0 <= group < parquet.num_row_groups:
            raise OSError(f"no row {row} in shard {shard}")
        cached = self.row_groups.get((shard, group))
        if cached is None:
            column = image_column_of.get(shard, ParquetColumns.image)
            table = parquet.read_row_group(group, columns=[column])
            cached = image_bytes(table.column(column))
            self.row_groups[(shard, group)] = cached
            while len(self.row_groups) > ROW_GROUP_CACHE:
                self.row_groups.popitem(last=False)
        else:
            self.row_groups.move_to_end((shard, group))
        data = cached[row - int(starts[group])]
        if data is None:
            raise OSError(f"row {row} of shard {shard} holds no image bytes")
        return data


_open_shards: _OpenShards | None = None


def _handles() -> _OpenShards:
    global _open_shards
    if _open_shards is None or _open_shards.pid != os.getpid():
        _open_shards = _OpenShards()
    return _open_shards


def read_shard_bytes(key: str) -> bytes:
    """The image bytes of a shard sample.

    Raises:
        OSError: the shard or member is missing or cut short (a loader reports the sample).
    """
    shard, member = split_shard_key(key)
    handles = _handles()
    if shard.lower().endswith(".tar"):
        return handles.tar_bytes(shard, member)
    if not member.isdigit():
        raise OSError(f"{member} is not a row number of Parquet shard {shard}")
    return handles.parquet_bytes(shard, int(member))


def read_groups(samples: Sequence[Sample]) -> list[list[int]] | None:
    """Sample indices grouped by the Parquet row group that holds them, for a seeded order that
    shuffles row groups and then samples within a window of groups (`EpochSampler`); None when
    any sample is not a Parquet row (tar members and files read one by one at any position)."""
    if not samples or not is_shard_key(samples[0].path):
        return None  # folders: the common case, decided without a pass over a million paths
    if not all(sample.path.lower().split("#", 1)[0].endswith(".parquet") for sample in samples):
        return None
    import pyarrow.parquet as pq

    groups: dict[tuple[str, int], list[int]] = {}
    starts_of: dict[str, np.ndarray] = {}
    for position, sample in enumerate(samples):
        shard, row = split_shard_key(sample.path)
        if shard not in starts_of:
            metadata = pq.ParquetFile(shard).metadata
            sizes = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
            starts_of[shard] = np.cumsum([0, *sizes])
        group = int(np.searchsorted(starts_of[shard], int(row), side="right")) - 1
        groups.setdefault((shard, group), []).append(position)
    return list(groups.values())


def expand_sources(
    inputs: Sequence[Path],
    collect_images: Callable[[Sequence[Path]], list[Path]],
    columns: ParquetColumns = ParquetColumns(),
) -> list[str]:
    """Every image of `inputs` as a path or shard key, in a stable order: image files as
    `collect_images` finds them, and the usable samples of every .tar / .parquet given or found
    in a given folder (shard by shard); unreadable shard samples are left to the caller's scoring,
    which reports them.

    Raises:
        UsageError: a path that does not exist, or no images at all.
    """
    shards: list[Path] = []
    others: list[Path] = []
    for item in inputs:
        if is_shard_file(item):
            shards.append(item)
        elif item.is_dir():
            found = sorted(path for path in item.rglob("*") if is_shard_file(path))
            shards += [path for path in found if ".fakedet" not in path.parts]
            if not found:
                others.append(item)
        else:
            others.append(item)
    keys: list[str] = []
    if others:
        keys += [str(path) for path in collect_images(others)]
    for index in index_shards(shards, columns):
        keys += [index.key(row) for row in range(len(index))]
    return list(dict.fromkeys(keys))
