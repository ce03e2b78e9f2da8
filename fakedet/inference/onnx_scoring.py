"""Scoring image files with an ONNX export under ONNX Runtime, without torch: Pillow decodes, numpy
crops and batches, the file's own metadata gives the size, calibration and threshold.

The views and the averaging are those of the PyTorch path (`predictor.py`), so a file gets the
same verdict from the export as from its checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fakedet.data.images import TOO_SMALL, TooSmallError, check_crops, eval_views, load_rgb
from fakedet.errors import CheckpointError, UsageError
from fakedet.inference.metadata import METADATA_KEY, ONNX_EXTRA_HINT, ExportMetadata
from fakedet.inference.results import Prediction, scored_row

# Scores are clamped this far from 0 and 1 before their logits are averaged (as in PyTorch).
VIEW_SCORE_EPS = 1e-6


class OnnxDetector:
    """An .onnx export in an ONNX Runtime session (CPU, or CUDA when asked and available)."""

    def __init__(self, path: Path, device: str = "auto") -> None:
        if not path.is_file():
            raise CheckpointError(f"{path} does not exist; pass a file written by fakedet export.")
        try:  # ONNX Runtime alone: importing the onnx package costs most of a second
            import onnxruntime
        except ImportError:
            raise UsageError(
                f"ONNX inference needs the optional onnx extra: {ONNX_EXTRA_HINT}"
            ) from None
        available = onnxruntime.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if device != "cpu" and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=providers)
            text = self.session.get_modelmeta().custom_metadata_map[METADATA_KEY]
        except Exception as exc:
            raise CheckpointError(
                f"{path} is not a readable fakedet export ({exc.__class__.__name__}: "
                f"{str(exc)[:160]})."
            ) from None
        self.metadata: ExportMetadata = ExportMetadata.from_json(text, str(path))

    def raw_scores(self, images: np.ndarray) -> np.ndarray:
        """Raw realness (N,) of float32 images (N, 3, S, S) in [0, 1]."""
        _, _, raw = self.session.run(None, {"images": images})
        return np.asarray(raw, dtype=np.float64).reshape(-1)


def _views(path: str, size: int, crops: int) -> np.ndarray:
    """(V, 3, S, S) float32 in [0, 1]: the views validation takes of the file. The export was
    traced at one size, so a file with a side below it has none (TooSmallError)."""
    views = eval_views(load_rgb(path), size, crops, min_side=size)
    stacked = np.stack([np.asarray(view, dtype=np.uint8) for view in views])  # (V, S, S, 3)
    return stacked.transpose(0, 3, 1, 2).astype(np.float32) / 255.0


def _average_views(raw: np.ndarray) -> float:
    clipped = np.clip(raw, VIEW_SCORE_EPS, 1 - VIEW_SCORE_EPS)
    mean_logit = float(np.mean(np.log(clipped / (1 - clipped))))
    return 1.0 / (1.0 + np.exp(-mean_logit))


def predict_onnx(
    detector: OnnxDetector,
    paths: Sequence[Path],
    threshold: float | None = None,
    batch_size: int = 32,
    crops: int = 1,
) -> list[Prediction]:
    """Calibrated realness and verdict of each file, in input order; unreadable files get a
    row with their error, as in the PyTorch path."""
    check_crops(crops)
    metadata = detector.metadata
    calibration = metadata.calibration
    cut = metadata.threshold if threshold is None else threshold
    predictions: list[Prediction | None] = [None] * len(paths)
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        raw = detector.raw_scores(np.concatenate([views for _, views in pending]))
        start = 0
        for index, views in pending:
            score = (
                float(raw[start])
                if len(views) == 1
                else _average_views(raw[start : start + len(views)])
            )
            start += len(views)
            predictions[index] = scored_row(str(paths[index]), score, calibration, cut)
        pending.clear()

    for index, path in enumerate(paths):
        try:
            views = _views(str(path), metadata.img_size, crops)
        except TooSmallError as exc:
            predictions[index] = Prediction(str(path), None, TOO_SMALL, str(exc))
            continue
        except (OSError, ValueError) as exc:
            reason = f"{exc.__class__.__name__}: {exc}"
            predictions[index] = Prediction(str(path), None, "unreadable", reason)
            continue
        pending.append((index, views))
        if len(pending) >= batch_size:
            flush()
    flush()
    return [prediction for prediction in predictions if prediction is not None]
