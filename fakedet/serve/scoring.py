"""The detector a server holds, loaded and read exactly as `fakedet predict` does: the same
loader, the same eval transform, the same calibration and verdict; only the bytes come from a
request instead of a file."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fakedet import __version__
from fakedet.checkpoints.calibration import Calibration
from fakedet.checkpoints.files import checkpoint_path
from fakedet.checkpoints.schema import Checkpoint
from fakedet.data.transforms import EvalTransform
from fakedet.inference.metadata import is_exported_file
from fakedet.inference.predictor import (
    calibration_of,
    load_detector,
    min_input_side,
    prepared_for_scoring,
)
from fakedet.inference.results import Prediction, scored_row


@dataclass
class ServedModel:
    """A loaded detector, its calibration, and the id rows carry so a client knows which model
    answered."""

    model: Any  # a fakedet model, or an export called like one
    checkpoint: Checkpoint
    calibration: Calibration
    device: torch.device
    transform: EvalTransform
    model_id: str
    source: Path

    @classmethod
    def load(cls, path: Path, device: str = "auto", crops: int = 1) -> ServedModel:
        """Load `path` (a checkpoint, run folder or export) as predict does.

        Raises:
            CheckpointError: not a usable fakedet checkpoint or export.
            ConfigError: `device` is not available here.
        """
        source = path if is_exported_file(path) else checkpoint_path(path)
        model, checkpoint = load_detector(source, device)
        model = prepared_for_scoring(model)  # as predict scores it
        return cls(
            model=model,
            checkpoint=checkpoint,
            calibration=calibration_of(checkpoint),
            device=next(model.parameters()).device,
            transform=EvalTransform(
                checkpoint.img_size, crops, min_input_side(model, checkpoint.img_size)
            ),
            model_id=f"{checkpoint.model_name}-{checkpoint.img_size}px-{_digest(source)}",
            source=source,
        )

    @property
    def img_size(self) -> int:
        return self.checkpoint.img_size

    @property
    def threshold(self) -> float:
        return self.calibration.threshold

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """The uint8 view(s) predict would score for this image: (3, S, S) or (V, 3, S, S)."""
        return self.transform(image)

    def calibrated(self, raw: float) -> float:
        return float(self.calibration.apply(np.array(raw)))

    def prediction(self, name: str, raw: float) -> Prediction:
        """The row predict prints for an image whose raw realness is `raw`."""
        return scored_row(name, raw, self.calibration, self.threshold)

    def info(self) -> dict[str, Any]:
        """What `GET /v1/model` says."""
        checkpoint = self.checkpoint
        calibration = checkpoint.calibration
        return {
            "id": self.model_id,
            "file": self.source.name,
            "mode": checkpoint.model_name,
            "img_size": checkpoint.img_size,
            "crops": self.transform.crops,
            "trained_with": checkpoint.fakedet_version,
            "server_version": __version__,
            "device": str(self.device),
            "calibration": calibration.to_dict() if calibration else None,
            "calibration_text": self.calibration.describe(),
            "threshold": self.threshold,
        }


def _digest(path: Path) -> str:
    """The first 12 hex digits of the file's SHA-256: two servers with one id hold one model."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]
