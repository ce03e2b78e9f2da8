"""What scoring returns, without torch: one `Prediction` per image, the files to score, and
the CSV that predict writes. The ONNX path and the PyTorch path share these."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fakedet.checkpoints.calibration import Calibration
from fakedet.errors import UsageError
from fakedet.io import atomic_write_text
from fakedet.sources.samples import IMAGE_SUFFIXES


def collect_images(inputs: Sequence[Path]) -> list[Path]:
    """Files as given, folders searched recursively for images; sorted, without repeats.

    Raises:
        UsageError: a path that does not exist, or no images at all.
    """
    found: dict[Path, None] = {}
    for item in inputs:
        if item.is_dir():
            images = sorted(
                path
                for path in item.rglob("*")
                if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
            )
            found.update(dict.fromkeys(images))
        elif item.is_file():
            found[item] = None
        else:
            raise UsageError(f"{item} does not exist; give image files or folders of images.")
    if not found:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise UsageError(
            f"No images found in {', '.join(map(str, inputs))} (looked for {suffixes})."
        )
    return list(found)


@dataclass
class Prediction:
    """One image's verdict; `realness` is None when the file could not be read (see `error`)."""

    path: str
    realness: float | None  # calibrated
    # "real", "fake", "too small" (a side below the minimum: no verdict, see data/images.py),
    # "unreadable", or "error" (a non-finite score)
    verdict: str
    error: str | None = None
    raw: float | None = None  # the model's own score, before calibration

    def as_row(self, with_raw: bool = False) -> dict[str, Any]:
        """What predict prints as JSON and writes as CSV (scores to 6 decimals)."""
        row = {**asdict(self), "realness": _rounded(self.realness), "raw": _rounded(self.raw)}
        if not with_raw:
            del row["raw"]
        return row


NON_FINITE = "the model gave a non-finite score (its weights diverged)"


def scored_row(
    path: str, raw: float, calibration: Calibration | None, threshold: float
) -> Prediction:
    """The row of an image the model scored: its raw realness calibrated (when a calibration is
    given), the verdict at `threshold`; an "error" row when the score is not finite."""
    if not math.isfinite(raw):
        return Prediction(path, None, "error", NON_FINITE)
    realness = raw if calibration is None else float(calibration.apply(np.array(raw)))
    return Prediction(path, realness, "real" if realness >= threshold else "fake", raw=raw)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def predictions_csv(predictions: Sequence[Prediction], with_raw: bool = False) -> str:
    """The CSV text: path, realness, verdict, error (and raw) per image."""
    buffer = io.StringIO()
    columns = ["path", "realness", "verdict", "error"] + (["raw"] if with_raw else [])
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(prediction.as_row(with_raw) for prediction in predictions)
    return buffer.getvalue()


def write_predictions_csv(
    path: Path, predictions: Sequence[Prediction], with_raw: bool = False
) -> None:
    """predictions_csv, written atomically to `path`.

    Raises:
        WriteError: the file cannot be written.
    """
    atomic_write_text(path, predictions_csv(predictions, with_raw))
