"""Shard files and sample keys: which files are shards, how a key `SHARD#MEMBER` splits, and
what a label value means.

A shard sample is a `Sample` whose path is a key `SHARD#MEMBER`: the tar member name of the image
(`data/train/shard-000.tar#000123.jpg`) or the Parquet row (`data/train/part-0.parquet#0042`,
zero-padded so keys sort in row order). The seeded sampler, the DDP split and the mid-epoch
resume then work on shards exactly as on folders; only the bytes come from another place.

Labels follow the field: class index 0 = real, 1 = fake (a tar sample's `KEY.cls`, or `label` in
its `KEY.json`; a Parquet label column), or the words real / fake. Inside fakedet they become
realness (real = 1.0). `webdataset` and `pyarrow` are an optional extra (`fakedet[shards]`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fakedet.errors import UsageError
from fakedet.sources.samples import IMAGE_SUFFIXES

if TYPE_CHECKING:
    pass


SHARD_SUFFIXES = (".tar", ".parquet")


EXTRA_HINT = 'pip install "fakedet[shards]"'


# The first `.tar#` or `.parquet#` splits a key: a tar member name may itself hold a '#'.
_KEY = re.compile(r"^(.+?\.(?:tar|parquet))#(.+)$", re.IGNORECASE)


IMAGE_EXTENSIONS = {suffix[1:] for suffix in IMAGE_SUFFIXES}


_WORDS = {"real": 1.0, "fake": 0.0}


_CLASSES = {0: 1.0, 1: 0.0}


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


def describe_formats(formats: set[str]) -> str:
    """The layout name of shards of these formats."""
    return " + ".join(sorted(formats)) + " shards"
