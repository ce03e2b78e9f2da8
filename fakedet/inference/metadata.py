"""What an exported file says about itself (its one JSON metadata entry) and the names every
export format shares. No torch: an ONNX file is read and scored without it."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fakedet import __version__
from fakedet.checkpoints.calibration import EPSILON, IDENTITY, Calibration
from fakedet.config_files import config_to_dict
from fakedet.errors import CheckpointError, FakedetError, UsageError

if TYPE_CHECKING:
    from fakedet.checkpoints.schema import Checkpoint

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


def is_exported_file(path: Path) -> bool:
    """Whether predict / validate should read `path` as an export rather than a checkpoint."""
    return path.suffix.lower() in EXPORTED_SUFFIXES


def read_onnx_metadata(path: Path) -> ExportMetadata:
    """The fakedet metadata of an .onnx file, read through onnx (no torch).

    Raises:
        CheckpointError: missing, not a fakedet export, or unreadable.
        UsageError: the onnx extra is not installed.
    """
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; pass a file written by fakedet export.")
    require_onnxruntime()
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
        text = {prop.key: prop.value for prop in model.metadata_props}[METADATA_KEY]
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a readable fakedet export ({exc.__class__.__name__}: {str(exc)[:160]})."
        ) from None
    return ExportMetadata.from_json(text, str(path))
