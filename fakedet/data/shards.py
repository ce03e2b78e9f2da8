"""Tar (WebDataset) and Parquet shards as a data source: finding them, indexing each shard once
(its samples, labels and header facts, cached beside the data like the folder index) and
reading one sample's bytes by its key.

A shard sample is a `Sample` whose path is a key `SHARD#MEMBER`: the tar member name of the image
(`data/train/shard-000.tar#000123.jpg`) or the Parquet row (`data/train/part-0.parquet#0042`,
zero-padded so keys sort in row order). The seeded sampler, the DDP split and the mid-epoch
resume then work on shards exactly as on folders; only the bytes come from another place. Tar
members are read with one positioned read at the offset the index found; Parquet rows come from
their row group, which each process keeps in a small LRU (training orders Parquet samples by
row group, see `read_groups`).

Labels follow the field: class index 0 = real, 1 = fake (a tar sample's `KEY.cls`, or `label` in
its `KEY.json`; a Parquet label column), or the words real / fake. Inside fakedet they become
realness (real = 1.0). `webdataset` and `pyarrow` are an optional extra (`fakedet[shards]`).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import tarfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from fakedet.data.index_file import DIGEST_BYTES, ImageRecords, empty_records, user_cache_dir
from fakedet.data.samples import IMAGE_SUFFIXES, Sample
from fakedet.errors import DataError, OutputPathError, UsageError, WriteError
from fakedet.io import atomic_write_bytes

if TYPE_CHECKING:
    import pyarrow as pa

SHARD_SUFFIXES = (".tar", ".parquet")
EXTRA_HINT = 'pip install "fakedet[shards]"'
INDEX_VERSION = 1
# Row groups one process keeps decoded: two shuffle windows (`SHUFFLE_WINDOW_GROUPS`), so a batch
# that straddles two windows reads no group twice.
ROW_GROUP_CACHE = 16
SHUFFLE_WINDOW_GROUPS = 8

# The first `.tar#` or `.parquet#` splits a key: a tar member name may itself hold a '#'.
_KEY = re.compile(r"^(.+?\.(?:tar|parquet))#(.+)$", re.IGNORECASE)
_IMAGE_EXTENSIONS = {suffix[1:] for suffix in IMAGE_SUFFIXES}
_WORDS = {"real": 1.0, "fake": 0.0}
_CLASSES = {0: 1.0, 1: 0.0}
# Parquet shard -> its image column, as last indexed in this process; loader workers, forked
# after the index was built, inherit it.
_image_column: dict[str, str] = {}


@dataclass(frozen=True)
class ParquetColumns:
    """The columns of a Parquet shard: image bytes (binary, or Hugging Face's struct with a
    `bytes` field), the label, and an optional generator name."""

    image: str = "image"
    label: str = "label"
    generator: str = "generator"


def require_shard_libraries() -> None:
    """Raises: UsageError: webdataset or pyarrow is not installed (names the extra)."""
    try:
        import pyarrow  # noqa: F401
        import webdataset  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            f"Reading or writing shards needs the optional extra 'shards' ({exc.name} is not "
            f"installed): {EXTRA_HINT}."
        ) from None


def is_shard_key(path: str) -> bool:
    """Whether `path` names a sample inside a shard (`SHARD.tar#MEMBER`, `SHARD.parquet#ROW`)."""
    return "#" in path and _KEY.match(path) is not None


def split_shard_key(key: str) -> tuple[str, str]:
    """(shard path, member name or row) of a shard key."""
    match = _KEY.match(key)
    if match is None:
        raise UsageError(
            f"{key} is not a shard sample key (SHARD.tar#MEMBER or SHARD.parquet#ROW)."
        )
    return match.group(1), match.group(2)


def is_shard_file(path: Path) -> bool:
    return path.suffix.lower() in SHARD_SUFFIXES and path.is_file()


def find_shards(folder: Path) -> list[Path]:
    """The .tar and .parquet files directly in `folder`, sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if is_shard_file(path))


def label_of(value: object) -> tuple[float, str]:
    """(realness, convention) of a label value: class index 0 = real / 1 = fake ("number"), or
    the words real / fake ("word").

    Raises:
        ValueError: any other value (the caller names the shard).
    """
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _WORDS:
            return _WORDS[text], "word"
        if text.lstrip("-").isdigit():
            value = int(text)
    if isinstance(value, (bool, np.bool_)):
        value = int(value)
    if isinstance(value, (int, float, np.integer, np.floating)) and float(value) in (0.0, 1.0):
        return _CLASSES[int(value)], "number"
    raise ValueError(f"label {value!r} is neither 0/1 (0 = real, 1 = fake) nor real/fake")


# ---------------------------------------------------------------------------------------------
# One shard's index: its samples, labels and header facts, cached as a small Parquet file.


@dataclass
class ShardIndex:
    """Every image sample of one shard in shard order; `reason` is set for the unusable ones."""

    shard: str
    members: list[str]  # tar member name of the image, or the zero-padded Parquet row
    offset: np.ndarray  # int64: tar data offset, or Parquet row
    size: np.ndarray  # int64 bytes of the image
    realness: np.ndarray  # float64, NaN: no label
    convention: list[str]  # "number", "word" or "" (no label)
    generator: list[str]
    format: list[str]  # "" when unreadable
    width: np.ndarray  # int32
    height: np.ndarray
    mode: list[str]
    jpeg_quality: np.ndarray  # int8, -1: not a JPEG
    digest: list[bytes]
    reason: list[str]  # "" when usable
    has_label_column: bool = True  # False for a Parquet file without the label column

    def key(self, row: int) -> str:
        return f"{self.shard}#{self.members[row]}"

    def __len__(self) -> int:
        return len(self.members)


@dataclass
class _Builder:
    """Rows of a ShardIndex as they are found."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)

    def add(
        self,
        member: str,
        offset: int,
        data: bytes | None,
        label: tuple[float, str] | None,
        generator: str,
        reason: str = "",
    ) -> None:
        facts = ("", 0, 0, "", -1)
        digest = b""
        if data is not None and not reason:
            facts, reason = _header_facts(data)
            digest = hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest()
        realness, convention = label if label is not None else (math.nan, "")
        size = len(data) if data is not None else 0
        self.rows.append(
            (member, offset, size, realness, convention, generator, *facts, digest, reason)
        )

    def build(self, shard: str, has_label_column: bool = True) -> ShardIndex:
        columns = list(zip(*self.rows, strict=True)) if self.rows else [()] * 13
        return ShardIndex(
            shard=shard,
            members=list(columns[0]),
            offset=np.array(columns[1], np.int64),
            size=np.array(columns[2], np.int64),
            realness=np.array(columns[3], np.float64),
            convention=list(columns[4]),
            generator=list(columns[5]),
            format=list(columns[6]),
            width=np.array(columns[7], np.int32),
            height=np.array(columns[8], np.int32),
            mode=list(columns[9]),
            jpeg_quality=np.array(columns[10], np.int8),
            digest=list(columns[11]),
            reason=list(columns[12]),
            has_label_column=has_label_column,
        )


def _header_facts(data: bytes) -> tuple[tuple[str, int, int, str, int], str]:
    """(format, width, height, mode, JPEG quality) of image bytes, and why they are unusable."""
    from fakedet.data.index_cache import estimate_jpeg_quality

    if not data:
        return ("", 0, 0, "", -1), "empty file (0 bytes)"
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            quality = -1
            tables = getattr(image, "quantization", None)
            if image.format in ("JPEG", "MPO") and tables and 0 in tables:
                quality = estimate_jpeg_quality(tables[0])
            facts = (image.format or "", width, height, image.mode, quality)
    except Image.DecompressionBombError as exc:
        return ("", 0, 0, "", -1), f"refused as a decompression bomb ({exc})"
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        return ("", 0, 0, "", -1), f"not a readable image ({exc.__class__.__name__}: {exc})"
    if width == 0 or height == 0:
        return ("", 0, 0, "", -1), "image has zero width or height"
    return facts, ""


def _json_label(data: bytes) -> tuple[object | None, str]:
    """(label value or None, generator) of a sample's KEY.json."""
    try:
        meta = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, ""
    if not isinstance(meta, dict):
        return None, ""
    generator = meta.get("generator")
    return meta.get("label"), "" if generator is None else str(generator)


def _index_tar(path: Path) -> ShardIndex:
    """Walk the tar's members once (stdlib tarfile: headers and offsets), group them by
    WebDataset's key rule, read each sample's label and its image's header facts."""
    from webdataset.tariterators import base_plus_ext

    shard = str(path)
    file_size = path.stat().st_size
    samples: dict[str, dict[str, tarfile.TarInfo]] = {}
    truncated_from: str | None = None
    with tarfile.open(path, "r:") as archive:
        try:
            for info in archive:
                if not info.isfile():
                    continue
                key, extension = base_plus_ext(info.name)
                if key is None:
                    continue
                samples.setdefault(key, {})[extension.lower()] = info
        except (tarfile.ReadError, EOFError) as exc:
            # A cut-off archive: what was found before the cut is kept, the cut is reported.
            truncated_from = f"{exc}"
        builder = _Builder()
        for key, members in samples.items():
            _index_tar_sample(archive, key, members, file_size, builder)
    index = builder.build(shard)
    if truncated_from is not None and not index.members:
        raise DataError(
            f"Shard {shard} could not be read as a tar archive ({truncated_from}); recreate it "
            "(`fakedet convert`) or move it out of the dataset."
        )
    return index


def _index_tar_sample(
    archive: tarfile.TarFile,
    key: str,
    members: dict[str, tarfile.TarInfo],
    file_size: int,
    builder: _Builder,
) -> None:
    image_info = next((info for ext, info in members.items() if ext in _IMAGE_EXTENSIONS), None)
    if image_info is None:
        return  # a sample without an image (metadata only) is not an image sample
    truncated = [info.name for info in members.values() if info.offset_data + info.size > file_size]
    if truncated:
        reason = f"truncated member {truncated[0]} (the shard ends inside it)"
        builder.add(image_info.name, image_info.offset_data, None, None, "", reason)
        return

    def read(info: tarfile.TarInfo) -> bytes:
        handle = archive.extractfile(info)
        return handle.read() if handle is not None else b""

    labels: list[object] = []
    generator = ""
    if "cls" in members:
        labels.append(read(members["cls"]).decode("utf-8", "replace").strip())
    if "json" in members:
        value, generator = _json_label(read(members["json"]))
        if value is not None:
            labels.append(value)
    data = read(image_info)
    try:
        found = [label_of(value) for value in labels]
    except ValueError as exc:
        raise DataError(
            f"Sample {key} of shard {archive.name} has a {exc}; label shards with the class "
            "index (0 = real, 1 = fake) or the words real/fake."
        ) from None
    if len({realness for realness, _ in found}) > 1:
        reason = "its .cls and .json labels disagree"
        builder.add(image_info.name, image_info.offset_data, data, None, generator, reason)
        return
    label = found[0] if found else None
    builder.add(image_info.name, image_info.offset_data, data, label, generator)


def _image_bytes(column: pa.ChunkedArray) -> list[bytes | None]:
    """A Parquet image column as bytes: a binary column, or a struct with a `bytes` field."""
    import pyarrow as pa

    if pa.types.is_struct(column.type):
        column = column.combine_chunks().field("bytes")
    return column.to_pylist()


def _index_parquet(path: Path, columns: ParquetColumns) -> ShardIndex:
    import pyarrow as pa
    import pyarrow.parquet as pq

    shard = str(path)
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(
            f"Shard {shard} could not be read as Parquet ({exc}); recreate it or move it out of "
            "the dataset."
        ) from None
    names = parquet.schema_arrow.names
    if columns.image not in names:
        raise DataError(
            f"Parquet shard {shard} has no image column '{columns.image}' (its columns: "
            f"{', '.join(names)}); name it with --image-column."
        )
    image_type = parquet.schema_arrow.field(columns.image).type
    if not (
        pa.types.is_binary(image_type)
        or pa.types.is_large_binary(image_type)
        or (pa.types.is_struct(image_type) and image_type.get_field_index("bytes") >= 0)
    ):
        raise DataError(
            f"Column '{columns.image}' of Parquet shard {shard} holds {image_type}, not image "
            "bytes (binary, or a struct with a 'bytes' field); name the image column with "
            "--image-column."
        )
    wanted = [name for name in (columns.image, columns.label, columns.generator) if name in names]
    width = len(str(max(parquet.metadata.num_rows - 1, 0)))
    builder = _Builder()
    row = 0
    for group in range(parquet.num_row_groups):
        table = parquet.read_row_group(group, columns=wanted)
        images = _image_bytes(table.column(columns.image))
        labels = table.column(columns.label).to_pylist() if columns.label in names else None
        generators = (
            table.column(columns.generator).to_pylist() if columns.generator in names else None
        )
        for position, data in enumerate(images):
            member = f"{row:0{width}d}"
            generator = generators[position] if generators is not None else None
            generator = "" if generator is None else str(generator)
            value = labels[position] if labels is not None else None
            label = None
            if value is not None:
                try:
                    label = label_of(value)
                except ValueError as exc:
                    raise DataError(
                        f"Row {row} of Parquet shard {shard} has a {exc}; use the class index "
                        f"(0 = real, 1 = fake) or the words real/fake in '{columns.label}'."
                    ) from None
            reason = "no image bytes (null)" if data is None else ""
            builder.add(member, row, data, label, generator, reason)
            row += 1
    return builder.build(shard, has_label_column=columns.label in names)


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
    _image_column[str(path)] = columns.image
    locations = _cache_locations(path)
    for location in locations:
        if location.is_file():
            cached = _decode_index(location, str(path), stamp)
            if cached is not None:
                return cached
    if path.suffix.lower() == ".tar":
        index = _index_tar(path)
    else:
        index = _index_parquet(path, columns)
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


# ---------------------------------------------------------------------------------------------
# From shard indexes to samples, the way the folder layouts give them.


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


def describe_formats(formats: set[str]) -> str:
    """The layout name of shards of these formats."""
    return " + ".join(sorted(formats)) + " shards"


# ---------------------------------------------------------------------------------------------
# Reading a sample's bytes by key, in any process (loader workers open shards lazily).


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
            column = _image_column.get(shard, ParquetColumns.image)
            table = parquet.read_row_group(group, columns=[column])
            cached = _image_bytes(table.column(column))
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


# ---------------------------------------------------------------------------------------------
# Inputs of predict: image files, folders, and shards, as keys.


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
