"""Exported detectors (ONNX, TorchScript, safetensors): their shared metadata, and loading one
back for inference wherever a checkpoint is accepted. Writing them is export.py's."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fakedet import __version__
from fakedet.checkpoints.calibration import EPSILON, IDENTITY, Calibration
from fakedet.checkpoints.schema import Checkpoint, TrainState
from fakedet.config import TrainingConfig, config_to_dict
from fakedet.errors import CheckpointError, FakedetError, UsageError
from fakedet.models.loading import build_model

FORMATS = ("onnx", "torchscript", "safetensors")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".ts", "safetensors": ".safetensors"}
EXPORTED_SUFFIXES = tuple(SUFFIXES.values())
PARITY_LIMIT = 1e-4  # max abs realness difference (fp32) an export may show against PyTorch
PARITY_IMAGES = 32
# The DFT operator exists from opset 17; 20 is the first that takes the DFT length as an input,
# which is what torch's dynamo exporter emits for torch.fft.fft2.
ONNX_OPSET = 20
LOGIT_BOUND = math.log((1.0 - EPSILON) / EPSILON)  # the logit Calibration.apply clips to
METADATA_KEY = "fakedet"  # the one metadata entry of every format: a JSON object
OUTPUT_NAMES = ("realness", "logits", "raw")
ONNX_EXTRA_HINT = 'pip install -e ".[onnx]"'


class ExportError(FakedetError):
    """An export that does not reproduce PyTorch's scores, or that the exporter refused: exit 1."""

    exit_code = 1


@dataclass
class ExportMetadata:
    """What an exported file says about itself; parsed once at load time."""

    mode: str
    img_size: int
    fakedet_version: str
    calibration: Calibration | None
    config: dict[str, Any] = field(default_factory=dict)  # the training run's config

    @property
    def threshold(self) -> float:
        return (self.calibration or IDENTITY).threshold

    def to_json(self) -> str:
        return json.dumps(
            {
                "mode": self.mode,
                "img_size": self.img_size,
                "fakedet_version": self.fakedet_version,
                "calibration": self.calibration.to_dict() if self.calibration else None,
                "threshold": self.threshold,
                "config": self.config,
                "inputs": "images: float32 (N, 3, S, S) RGB in [0, 1]",
                "outputs": list(OUTPUT_NAMES),
            }
        )

    @classmethod
    def from_json(cls, text: str, source: str) -> ExportMetadata:
        """Raises: CheckpointError: not fakedet metadata."""
        try:
            values = json.loads(text)
            calibration = values["calibration"]
            return cls(
                mode=str(values["mode"]),
                img_size=int(values["img_size"]),
                fakedet_version=str(values["fakedet_version"]),
                calibration=Calibration.from_dict(calibration) if calibration else None,
                config=dict(values.get("config") or {}),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"{source} has no readable fakedet metadata ({exc.__class__.__name__}: {exc}); "
                "export it again with fakedet export."
            ) from None

    @classmethod
    def of_checkpoint(cls, checkpoint: Checkpoint) -> ExportMetadata:
        return cls(
            mode=checkpoint.model_name,
            img_size=checkpoint.img_size,
            fakedet_version=__version__,
            calibration=checkpoint.calibration,
            config=config_to_dict(checkpoint.config),
        )


def require_onnxruntime() -> Any:
    """Raises: UsageError: onnx / onnxruntime missing, naming the command that installs them."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError:
        raise UsageError(
            f"ONNX export and inference need the optional onnx extra: {ONNX_EXTRA_HINT}"
        ) from None
    return onnxruntime


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


def is_exported_file(path: Path) -> bool:
    """Whether predict / validate should read `path` as an export rather than a checkpoint."""
    return path.suffix.lower() in EXPORTED_SUFFIXES


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
            require_onnxruntime()
            import onnx

            props = {
                p.key: p.value
                for p in onnx.load(str(path), load_external_data=False).metadata_props
            }
            text = props[METADATA_KEY]
        elif suffix == ".ts":
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
        network = build_model(metadata.mode, metadata.img_size, target, checkpoint.model_state)
        calibration = checkpoint.calibration or IDENTITY
        model = ExportedModel(network.eval(), "safetensors", target, calibration)
    return model, metadata
