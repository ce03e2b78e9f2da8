"""Reading what one shard holds, by format: a tar's members (offsets, labels from `.cls` / `.json`)
and a Parquet file's rows (image, label and generator columns), into a `ShardIndex` with each
image's header facts. No caching here: `index` keeps the result.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from fakedet.errors import DataError
from fakedet.sources.index_file import DIGEST_BYTES
from fakedet.sources.shards.keys import (
    IMAGE_EXTENSIONS,
    ParquetColumns,
    label_of,
)

if TYPE_CHECKING:
    import pyarrow as pa


# Parquet shard -> its image column, as last indexed in this process; loader workers, forked
# after the index was built, inherit it.
image_column_of: dict[str, str] = {}


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
    from fakedet.sources.index_cache import estimate_jpeg_quality

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


def index_tar(path: Path) -> ShardIndex:
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
    image_info = next((info for ext, info in members.items() if ext in IMAGE_EXTENSIONS), None)
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


def image_bytes(column: pa.ChunkedArray) -> list[bytes | None]:
    """A Parquet image column as bytes: a binary column, or a struct with a `bytes` field."""
    import pyarrow as pa

    if pa.types.is_struct(column.type):
        column = column.combine_chunks().field("bytes")
    return column.to_pylist()


def index_parquet(path: Path, columns: ParquetColumns) -> ShardIndex:
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
        images = image_bytes(table.column(columns.image))
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
