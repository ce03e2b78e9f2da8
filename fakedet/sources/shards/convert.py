"""Writing a dataset fakedet reads (folders, public layouts, CSV, shards) as WebDataset tar or
Parquet shards in `OUT/{train,val,test}/`, with a manifest of counts and checksums.

Image bytes are copied as they are, never re-encoded: a re-encode would change exactly the
traces a detector learns. Labels use the field's convention (class index 0 = real, 1 = fake).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fakedet.errors import OutputPathError, UsageError
from fakedet.io import atomic_write_text, ensure_folder
from fakedet.sources.layouts import build_index, discover_test_set
from fakedet.sources.samples import Sample
from fakedet.sources.shards.keys import is_shard_key, require_shard_libraries
from fakedet.sources.shards.reading import read_shard_bytes

FORMATS = ("webdataset", "parquet")
# Rows per Parquet row group: what Hugging Face writes for image datasets; one read brings in
# a group, so small groups keep random access cheap.
ROW_GROUP_ROWS = 100
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS.update({"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40})


def parse_size(text: str) -> int:
    """Bytes of a size such as `1GB`, `500MB`, `64KiB` or `1000000`.

    Raises:
        UsageError: not a positive size.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else ""
    if match is None or unit not in _UNITS or float(match.group(1)) <= 0:
        raise UsageError(f"--shard-size {text!r} is not a size; give e.g. 1GB, 500MB or 64KiB.")
    return int(float(match.group(1)) * _UNITS[unit])


@dataclass
class _Written:
    file: Path
    samples: int = 0


def _read_bytes(path: str) -> bytes:
    if is_shard_key(path):
        return read_shard_bytes(path)
    return Path(path).read_bytes()


def _extension(path: str, data: bytes) -> str:
    """The image's own extension (lower case, without the dot); `img` when it has none."""
    name = path.rsplit("#", 1)[-1] if is_shard_key(path) else path
    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix:
        return suffix
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:  # a Parquet row: the format names it
        return (image.format or "img").lower().replace("jpeg", "jpg")


def _class_index(sample: Sample) -> int:
    return 0 if sample.label >= 0.5 else 1


class _TarShards:
    def __init__(self, folder: Path, split: str, shard_size: int) -> None:
        import webdataset

        self.pattern = str(folder / f"{split}-%06d.tar")
        self.writer = webdataset.ShardWriter(
            self.pattern, maxsize=shard_size, maxcount=10**12, verbose=0
        )

    def add(self, key: str, sample: Sample, data: bytes, extension: str, source: str) -> None:
        meta = {"label": _class_index(sample), "source": source}
        if sample.group:
            meta["generator"] = sample.group
        self.writer.write(
            {
                "__key__": key,
                extension: data,
                "cls": str(_class_index(sample)).encode(),
                "json": json.dumps(meta).encode(),
            }
        )

    def close(self) -> None:
        self.writer.close()


class _ParquetShards:
    def __init__(self, folder: Path, split: str, shard_size: int) -> None:
        import pyarrow as pa

        self.folder, self.split, self.shard_size = folder, split, shard_size
        self.schema = pa.schema(
            [
                ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                ("label", pa.int64()),
                ("generator", pa.string()),
            ]
        )
        self.rows: list[dict[str, Any]] = []
        self.writer: Any = None
        self.number = 0
        self.written = 0

    def add(self, key: str, sample: Sample, data: bytes, extension: str, source: str) -> None:
        image = {"bytes": data, "path": f"{key}.{extension}"}
        self.rows.append(
            {"image": image, "label": _class_index(sample), "generator": sample.group or None}
        )
        self.written += len(data)
        if len(self.rows) >= ROW_GROUP_ROWS:
            self._flush()
        if self.written >= self.shard_size:
            self._flush()
            self._close_file()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.rows:
            return
        if self.writer is None:
            path = self.folder / f"{self.split}-{self.number:06d}.parquet"
            self.writer = pq.ParquetWriter(path, self.schema)
        self.writer.write_table(pa.Table.from_pylist(self.rows, self.schema))
        self.rows = []

    def _close_file(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self.number += 1
        self.written = 0

    def close(self) -> None:
        self._flush()
        self._close_file()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _write_split(
    samples: Sequence[Sample],
    folder: Path,
    split: str,
    fmt: str,
    shard_size: int,
    root: Path,
    skipped: list[tuple[str, str]],
    on_sample: Callable[[], None] | None,
) -> dict[str, Any]:
    ensure_folder(folder)
    writer = _TarShards(folder, split, shard_size) if fmt == "webdataset" else None
    writer = writer or _ParquetShards(folder, split, shard_size)
    counts: Counter[str] = Counter()
    generators: Counter[str] = Counter()
    number = 0
    try:
        for sample in samples:
            try:
                data = _read_bytes(sample.path)
                extension = _extension(sample.path, data)
            except OSError as exc:
                skipped.append((sample.path, f"could not be read ({exc})"))
                continue
            source = sample.path
            if not is_shard_key(source) and Path(source).is_relative_to(root):
                source = Path(source).relative_to(root).as_posix()
            writer.add(f"{number:09d}", sample, data, extension, source)
            number += 1
            counts["real" if sample.label >= 0.5 else "fake"] += 1
            if sample.group:
                generators[sample.group] += 1
            if on_sample is not None:
                on_sample()
    finally:
        writer.close()
    suffix = ".tar" if fmt == "webdataset" else ".parquet"
    files = sorted(path for path in folder.iterdir() if path.suffix == suffix)
    return {
        "samples": number,
        "real": counts["real"],
        "fake": counts["fake"],
        "generators": dict(sorted(generators.items())),
        "shards": [
            {"file": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path)}
            for path in files
        ],
    }


def convert_dataset(
    data_root: Path,
    output: Path,
    fmt: str,
    shard_size: int = 10**9,
    use_csv: bool = False,
    on_start: Callable[[int], None] | None = None,
    on_sample: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Write every labelled image of `data_root` as `fmt` shards under `output/{split}/` and
    `output/manifest.json`; return the manifest.

    A dataset with a train split gives `train/` and, when it has a val folder, `val/` (a split
    drawn from train stays in train/: training the shards draws it again); a `test/` folder
    beside them, or a dataset without a train split, gives `test/` with generator names.

    Args:
        shard_size: bytes of images per shard before the next one starts.
        use_csv: read labels from CSV files, as `fakedet train --use-csv`.
        on_start: called with the number of images to write.
        on_sample: called after each image written.

    Raises:
        UsageError: an unknown format, the extra missing, an output that already holds shards,
            or a dataset fakedet cannot read.
    """
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt} is not one of {', '.join(FORMATS)}.")
    require_shard_libraries()
    if output.exists() and any(output.iterdir()):
        raise OutputPathError(
            f"{output} is not empty; give a new folder for the shards (nothing was written)."
        )
    # A val split drawn from train is not kept (its samples all go to train/), so its fraction
    # and seed do not matter here.
    index = build_index(data_root, use_csv, 0.1, 0, allow_test_set=True)
    splits: dict[str, list[Sample]] = {}
    if index.has_train_split:
        from_folder = index.val_source.startswith("folder")
        splits["train"] = (
            index.train
            if from_folder
            else sorted([*index.train, *index.val], key=lambda sample: sample.path)
        )
        if from_folder and index.val_source != "folder 'test'":
            splits["val"] = index.val
    skipped = list(index.skipped)
    test_root = data_root / "test"
    if not index.has_train_split:
        test_root = data_root
    if test_root.is_dir() and (not index.has_train_split or "val" in splits):
        test_set = discover_test_set(test_root, use_csv)
        splits["test"] = test_set.samples
        skipped += [item for item in test_set.skipped if item not in skipped]
    elif index.val_source == "folder 'test'":
        splits["test"] = index.val
    if on_start is not None:
        on_start(sum(len(samples) for samples in splits.values()))
    ensure_folder(output)
    manifest: dict[str, Any] = {"format": fmt, "source": str(data_root), "layout": index.layout}
    manifest["splits"] = {
        split: _write_split(
            samples, output / split, split, fmt, shard_size, data_root, skipped, on_sample
        )
        for split, samples in splits.items()
    }
    manifest["skipped"] = [{"path": path, "reason": reason} for path, reason in skipped]
    atomic_write_text(output / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return manifest
