"""One shard's index, read once and cached as a small Parquet file beside the data (or in the
user cache when the data's folder is read-only), and re-read only when the shard changes.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fakedet.errors import OutputPathError, WriteError
from fakedet.io import atomic_write_bytes
from fakedet.sources.index_file import user_cache_dir
from fakedet.sources.shards.formats import ShardIndex, image_column_of, index_parquet, index_tar
from fakedet.sources.shards.keys import (
    ParquetColumns,
    require_shard_libraries,
)

if TYPE_CHECKING:
    pass


INDEX_VERSION = 1


def _cache_locations(shard: Path) -> list[Path]:
    """Beside the shard (every node of a cluster sees it), then the user's cache folder."""
    absolute = str(shard.resolve())
    name = f"{shard.name}.index-v{INDEX_VERSION}.parquet"
    key = hashlib.blake2b(absolute.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()
    return [shard.parent / ".fakedet" / "shards" / name, user_cache_dir() / "shards" / key / name]


_STRING_COLUMNS = ("members", "convention", "generator", "format", "mode", "reason")


_NUMBER_COLUMNS = ("offset", "size", "realness", "width", "height", "jpeg_quality")


def _encode_index(index: ShardIndex, stamp: dict[str, object]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data: dict[str, object] = {name: getattr(index, name) for name in _STRING_COLUMNS}
    data.update({name: getattr(index, name) for name in _NUMBER_COLUMNS})
    data["digest"] = pa.array(index.digest, pa.binary())
    stamp = {**stamp, "has_label_column": index.has_label_column}
    table = pa.table(data).replace_schema_metadata({"fakedet": json.dumps(stamp)})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _decode_index(location: Path, shard: str, stamp: dict[str, object]) -> ShardIndex | None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(location)
        saved = json.loads((table.schema.metadata or {})[b"fakedet"])
    except (OSError, KeyError, ValueError, pa.ArrowException):
        return None
    if {key: saved.get(key) for key in stamp} != stamp:
        return None
    column = {name: table.column(name) for name in table.column_names}
    strings = {name: column[name].to_pylist() for name in _STRING_COLUMNS}
    numbers = {name: column[name].to_numpy() for name in _NUMBER_COLUMNS}
    return ShardIndex(
        shard=shard,
        **strings,
        offset=numbers["offset"].astype(np.int64),
        size=numbers["size"].astype(np.int64),
        realness=numbers["realness"].astype(np.float64),
        width=numbers["width"].astype(np.int32),
        height=numbers["height"].astype(np.int32),
        jpeg_quality=numbers["jpeg_quality"].astype(np.int8),
        digest=column["digest"].to_pylist(),
        has_label_column=bool(saved["has_label_column"]),
    )


def index_shard(path: Path, columns: ParquetColumns = ParquetColumns()) -> ShardIndex:
    """One shard's index, from its cache when the shard's size and mtime are unchanged (and, for
    Parquet, the same column names), else read and cached.

    Raises:
        DataError: not a readable tar / Parquet file, a Parquet file without the image column,
            or a label that is neither 0/1 nor real/fake.
    """
    require_shard_libraries()
    stat = path.stat()
    stamp: dict[str, object] = {
        "version": INDEX_VERSION,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }
    if path.suffix.lower() == ".parquet":
        stamp["columns"] = [columns.image, columns.label, columns.generator]
    image_column_of[str(path)] = columns.image
    locations = _cache_locations(path)
    for location in locations:
        if location.is_file():
            cached = _decode_index(location, str(path), stamp)
            if cached is not None:
                return cached
    if path.suffix.lower() == ".tar":
        index = index_tar(path)
    else:
        index = index_parquet(path, columns)
    data = _encode_index(index, stamp)
    for location in locations:
        try:
            atomic_write_bytes(location, data)
            break
        except (WriteError, OutputPathError, OSError):
            continue  # read-only data: the user cache; neither: the next start reads again
    return index


def index_shards(
    shards: Sequence[Path],
    columns: ParquetColumns = ParquetColumns(),
    workers: int = 4,
) -> list[ShardIndex]:
    """`index_shard` of each shard on a thread pool (reading and header checks release the GIL),
    in the order given."""
    if not shards:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(shards)))) as pool:
        return list(pool.map(lambda shard: index_shard(shard, columns), shards))
