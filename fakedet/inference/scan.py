"""Scanning a large source (folders, tar or Parquet shards) with a detector, streaming the scores
to Parquet as it goes and resuming where a killed run stopped.

Rows (`key`, calibrated `realness`, `verdict`, `error`) are written in part files, each written
whole and atomically (temp file, fsync, rename) every `flush_rows` images or `flush_seconds`:
after a kill -9 every part on disk is complete, and a rerun scores exactly the keys no part
holds, so the output has neither duplicates nor gaps. A single-file output (`scores.parquet`)
keeps its parts in a hidden folder beside it until the scan ends, then merges them into the file.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from fakedet.checkpoints.calibration import IDENTITY, Calibration
from fakedet.data.loader import loader_options, make_loader
from fakedet.data.transforms import TOO_SMALL, EvalTransform, check_crops, pixels_to_float
from fakedet.errors import OutputPathError, WriteError
from fakedet.hardware import workers_or_default
from fakedet.inference.predictor import min_input_side, score_views
from fakedet.inference.results import NON_FINITE
from fakedet.io import atomic_write_bytes, ensure_folder
from fakedet.sources.samples import Sample
from fakedet.sources.shards.keys import require_shard_libraries

if TYPE_CHECKING:
    import pyarrow as pa

FLUSH_ROWS = 1000
FLUSH_SECONDS = 10.0
PART_GLOB = "part-*.parquet"


def _schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("key", pa.string()),
            ("realness", pa.float64()),
            ("verdict", pa.string()),
            ("error", pa.string()),
        ]
    )


class ScanOutput:
    """Where a scan's rows go: a folder of part files, or one Parquet file (parts kept in a hidden
    folder beside it until `finish`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.single = path.suffix.lower() == ".parquet" and not path.is_dir()
        self.parts = path.parent / f".{path.name}.parts" if self.single else path
        if path.exists() and not self.single and not path.is_dir():
            raise OutputPathError(
                f"{path} is a file; give a folder for part files or a name ending in .parquet."
            )

    def _part_files(self) -> list[Path]:
        return sorted(self.parts.glob(PART_GLOB)) if self.parts.is_dir() else []

    def _read_keys(self, path: Path) -> list[str]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path, columns=["key"]).column("key").to_pylist()
        except (OSError, KeyError, pa.ArrowException) as exc:
            raise OutputPathError(
                f"{path} is not a fakedet scan output ({exc}); give a new --output."
            ) from None

    def done_keys(self) -> set[str]:
        """Every key already written (in the finished file and in the parts)."""
        done: set[str] = set()
        sources = [self.path] if self.single and self.path.is_file() else []
        for path in [*sources, *self._part_files()]:
            done.update(self._read_keys(path))
        return done

    def write_part(self, rows: dict[str, list]) -> None:
        """One part file of `rows` (columns of the schema), written atomically."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not rows["key"]:
            return
        ensure_folder(self.parts)
        existing = self._part_files()
        number = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
        buffer = pa.BufferOutputStream()
        pq.write_table(pa.table(rows, schema=_schema()), buffer)
        atomic_write_bytes(
            self.parts / f"part-{number:06d}.parquet", buffer.getvalue().to_pybytes()
        )

    def finish(self) -> None:
        """A single-file output: the file as it was plus every part, merged into a temp file
        that replaces it; the parts folder is then removed."""
        import pyarrow.parquet as pq

        if not self.single:
            return
        parts = self._part_files()
        if not parts and self.path.is_file():
            return
        sources = ([self.path] if self.path.is_file() else []) + parts
        temp = self.path.parent / f".{self.path.name}.merging"
        try:
            with pq.ParquetWriter(temp, _schema()) as writer:
                for source in sources:
                    writer.write_table(pq.read_table(source).cast(_schema()))
            with open(temp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(temp, self.path)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise WriteError(f"Could not write {self.path}: {exc.strerror or exc}.") from None
        shutil.rmtree(self.parts, ignore_errors=True)


@dataclass
class ScanResult:
    """What one scan run did: images in the source, how many earlier runs had done, and this
    run's counts."""

    output: str
    total: int
    resumed: int
    scored: int
    real: int
    fake: int
    unreadable: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else 0.0


def _new_rows() -> dict[str, list]:
    return {"key": [], "realness": [], "verdict": [], "error": []}


@torch.no_grad()
def scan_to_parquet(
    model: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    keys: Sequence[str],
    img_size: int,
    output: Path,
    calibration: Calibration = IDENTITY,
    threshold: float | None = None,
    batch_size: int = 32,
    num_workers: int | None = None,
    crops: int = 1,
    device: torch.device | None = None,
    flush_rows: int = FLUSH_ROWS,
    flush_seconds: float = FLUSH_SECONDS,
    on_progress: Callable[[int, int], None] | None = None,
) -> ScanResult:
    """Score every key not yet in `output` and stream the rows there; bad images become rows
    with an `error`, never a stop.

    Args:
        model: a detector (or an export) returning {"score": (B,)} for float images.
        keys: image paths and shard keys, in the order to score them.
        output: `NAME.parquet` (one file at the end) or a folder of part files.
        threshold: the verdict's cut on calibrated realness (default: the calibration's).
        device: where the images go (default: the model's parameters' device, else the CPU).
        flush_rows, flush_seconds: a part is written when either is reached.
        on_progress: called with (images done, images in the source) after each batch.

    Raises:
        UsageError: the shards extra is missing, or `output` is not a scan output.
        WriteError: a part or the final file could not be written.
    """
    require_shard_libraries()
    check_crops(crops)
    if device is None:
        parameter = next(iter(getattr(model, "parameters", lambda: iter(()))()), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
    started = time.monotonic()
    target = ScanOutput(output)
    done = target.done_keys()
    todo = [key for key in keys if key not in done]
    resumed = len(keys) - len(todo)
    workers = workers_or_default(num_workers, device.type)
    workers = min(workers, max(0, len(todo) // batch_size))  # no processes for a few images
    loader = make_loader(
        [Sample(key, 0.0) for key in todo],
        EvalTransform(img_size, crops, min_input_side(model, img_size)),
        batch_size,
        train=False,
        seed=0,
        drop_last=False,
        **loader_options(device, workers, persistent_workers=False),
    )
    cut = calibration.threshold if threshold is None else threshold
    counts = {"real": 0, "fake": 0, TOO_SMALL: 0, "unreadable": 0, "error": 0}
    rows, last_flush, position = _new_rows(), time.monotonic(), 0
    for batch in loader:
        # The evaluation order is the input order: batch n holds todo[n*B:(n+1)*B].
        members = todo[position : position + batch_size]
        position += len(members)
        errors = dict(batch["skipped"])
        raw: dict[int, float] = {}
        if batch["images"] is not None:
            scores = score_views(model, pixels_to_float(batch["images"], device)).cpu()
            raw = dict(zip(batch["indices"].tolist(), scores.tolist(), strict=True))
        for offset, key in enumerate(members):
            score = raw.get(position - len(members) + offset)
            realness, error = None, None
            if score is None:
                error = errors.get(key, "could not be read")
                verdict = TOO_SMALL if error.startswith(TOO_SMALL) else "unreadable"
            elif not np.isfinite(score):
                verdict, error = "error", NON_FINITE
            else:
                realness = float(calibration.apply(np.array(score)))
                verdict = "real" if realness >= cut else "fake"
            counts[verdict] += 1
            rows["key"].append(key)
            rows["realness"].append(realness)
            rows["verdict"].append(verdict)
            rows["error"].append(error)
        if len(rows["key"]) >= flush_rows or time.monotonic() - last_flush >= flush_seconds:
            target.write_part(rows)
            rows, last_flush = _new_rows(), time.monotonic()
        if on_progress is not None:
            on_progress(resumed + position, len(keys))
    target.write_part(rows)
    target.finish()
    return ScanResult(
        output=str(output),
        total=len(keys),
        resumed=resumed,
        scored=len(todo),
        real=counts["real"],
        fake=counts["fake"],
        unreadable=counts["unreadable"] + counts["error"],
        seconds=time.monotonic() - started,
    )
