"""Exported detectors (ONNX, TorchScript, safetensors): their shared metadata, and loading one
back for inference wherever a checkpoint is accepted. Writing them is export.py's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fakedet.checkpoints.calibration import IDENTITY, Calibration
from fakedet.checkpoints.schema import Checkpoint, TrainState
from fakedet.config import TrainingConfig
from fakedet.errors import CheckpointError, FakedetError
from fakedet.inference.metadata import (
    EXPORTED_SUFFIXES,
    METADATA_KEY,
    ExportMetadata,
    read_onnx_metadata,
    require_onnxruntime,
)
from fakedet.models.loading import build_model


class ExportedModel:
    """An exported detector ready to score: called like a fakedet model on (N, 3, S, S) floats in
    [0, 1], it returns {"score": raw realness, "logits": (N, 2), "realness": calibrated}."""

    def __init__(
        self,
        runner: Any,
        fmt: str,
        device: torch.device,
        calibration: Calibration = IDENTITY,
    ) -> None:
        self.runner = runner  # an onnxruntime session, a TorchScript module or a fakedet model
        self.fmt = fmt
        self.device = device
        self.calibration = calibration  # applied here only for safetensors (no graph to hold it)

    def eval(self) -> ExportedModel:
        return self

    def parameters(self) -> Iterator[torch.Tensor]:
        # Scoring code finds the input device as next(model.parameters()).device; an empty
        # tensor on that device lets it take an export where it takes a model.
        yield torch.empty(0, device=self.device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.fmt == "onnx":
            feed = {"images": images.detach().float().cpu().numpy()}
            outputs = [torch.from_numpy(array) for array in self.runner.run(None, feed)]
        elif self.fmt == "torchscript":
            outputs = list(self.runner(images.to(self.device).float()))
        else:
            scored = self.runner(images.to(self.device))
            calibrated = self.calibration.apply(scored["score"].float().cpu().numpy())
            outputs = [torch.from_numpy(calibrated.astype(np.float32)), scored["logits"]]
            outputs.append(scored["score"])
        realness, logits, raw = outputs
        return {"score": raw, "logits": logits, "realness": realness}


def read_metadata(path: Path) -> ExportMetadata:
    """The fakedet metadata of an exported file.

    Raises:
        CheckpointError: missing, not an exported fakedet file, or unreadable.
        UsageError: an .onnx file without the onnx extra installed.
    """
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; pass a file written by fakedet export.")
    suffix = path.suffix.lower()
    try:
        if suffix == ".onnx":
            return read_onnx_metadata(path)
        if suffix == ".ts":
            extra = {f"{METADATA_KEY}.json": ""}
            torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
            text = extra[f"{METADATA_KEY}.json"]
        elif suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                text = (handle.metadata() or {})[METADATA_KEY]
        else:
            raise CheckpointError(
                f"{path} is not an exported model (expected {', '.join(EXPORTED_SUFFIXES)})."
            )
    except FakedetError:
        raise
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a readable fakedet export ({exc.__class__.__name__}: {str(exc)[:160]})."
        ) from None
    return ExportMetadata.from_json(text, str(path))


def exported_checkpoint(path: Path) -> Checkpoint:
    """An exported file as a Checkpoint (config, calibration; weights for safetensors, none for
    ONNX / TorchScript; no training state), so predict / validate / evaluate take it wherever
    they take a checkpoint.

    Raises:
        CheckpointError: not a fakedet export, or a config this version rejects.
        UsageError: an .onnx file without the onnx extra.
    """
    from pydantic import ValidationError

    metadata = read_metadata(path)
    try:
        config = TrainingConfig.model_validate(metadata.config)
    except ValidationError as exc:
        raise CheckpointError(
            f"{path} holds a config this fakedet cannot read ({str(exc).splitlines()[0]})."
        ) from None
    weights: dict[str, torch.Tensor] = {}
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        weights = load_file(str(path), device="cpu")
    return Checkpoint(
        config=config,
        state=TrainState(),
        model_state=weights,
        optimizer_state={},
        scheduler_state={},
        scaler_state={},
        batch_size=config.batch_size if isinstance(config.batch_size, int) else 16,
        steps_per_epoch=None,
        fakedet_version=metadata.fakedet_version,
        calibration=metadata.calibration,
    )


def load_exported(
    path: Path, device: str | torch.device = "cpu"
) -> tuple[ExportedModel, ExportMetadata]:
    """Load an .onnx, .ts or .safetensors export for scoring.

    Returns:
        The model (see ExportedModel) and the file's metadata (mode, img_size, calibration,
        threshold).

    Raises:
        CheckpointError: not a readable fakedet export.
        UsageError: an .onnx file without the onnx extra (the sentence names the command).
    """
    metadata = read_metadata(path)
    target = torch.device(device)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        onnxruntime = require_onnxruntime()
        providers = ["CPUExecutionProvider"]
        if (
            target.type == "cuda"
            and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        ):
            providers.insert(0, "CUDAExecutionProvider")
        session = onnxruntime.InferenceSession(str(path), providers=providers)
        model = ExportedModel(session, "onnx", torch.device("cpu"))
    elif suffix == ".ts":
        model = ExportedModel(
            torch.jit.load(str(path), map_location=target).eval(), "torchscript", target
        )
    else:
        checkpoint = exported_checkpoint(path)
        network = build_model(
            metadata.mode, metadata.img_size, target, checkpoint.model_state, checkpoint.backbone
        )
        calibration = checkpoint.calibration or IDENTITY
        model = ExportedModel(network.eval(), "safetensors", target, calibration)
    return model, metadata
