"""Exporting a trained detector (ONNX, TorchScript, safetensors), checking the export against
PyTorch on real images, and loading an exported file back for inference (SPEC 14).

ONNX and TorchScript files hold the whole model with its input normalisation and its
calibration: input `images` (N, 3, S, S) RGB float in [0, 1], outputs `realness` (calibrated,
N), `logits` (N, 2) and `raw` (the model's own score, N). A safetensors file holds the weights
only, with the run's config and calibration in its metadata, and loads wherever a checkpoint does.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fakedet import __version__
from fakedet.config import TrainingConfig, config_to_dict
from fakedet.data.samples import Sample
from fakedet.data.transforms import EvalTransform, load_rgb
from fakedet.engine.build import build_model, index_dataset
from fakedet.engine.calibration import EPSILON, IDENTITY, Calibration
from fakedet.engine.checkpoint import checkpoint_path, load_checkpoint
from fakedet.engine.state import Checkpoint, TrainState
from fakedet.errors import CheckpointError, FakedetError, UsageError

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


class CalibratedDetector(nn.Module):
    """A detector with its calibration as graph ops: images -> (realness, logits, raw).

    Temperature and Platt are a logit, a scale and a sigmoid. Isotonic (np.interp over its knots,
    clamped at the ends) is written as a sum of clamped ramps, one per segment, which every
    exporter handles and which equals the interpolation for any input.
    """

    def __init__(self, model: nn.Module, calibration: Calibration | None) -> None:
        super().__init__()
        self.model = model
        calibration = calibration or IDENTITY
        self.method = calibration.method
        scale, offset = 1.0, 0.0
        if self.method == "temperature":
            scale = 1.0 / float(calibration.params["temperature"])
        elif self.method == "platt":
            scale = float(calibration.params["slope"])
            offset = float(calibration.params["offset"])
        self.scale, self.offset = scale, offset
        knots_x = [0.0, 1.0]
        knots_y = [0.0, 1.0]
        if self.method == "isotonic":
            knots_x = [float(v) for v in calibration.params["x"]]
            knots_y = [float(v) for v in calibration.params["y"]]
        x = torch.tensor(knots_x, dtype=torch.float64)
        y = torch.tensor(knots_y, dtype=torch.float64)
        width = x[1:] - x[:-1]
        # A zero-width segment (repeated knot) is a step: np.interp takes the right value there.
        self.register_buffer("knot_start", x[:-1].float(), persistent=False)
        self.register_buffer(
            "knot_inverse_width", torch.where(width > 0, 1 / width, 1e12).float(), False
        )
        self.register_buffer("knot_rise", (y[1:] - y[:-1]).float(), persistent=False)
        self.first_y = float(y[0])

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        outputs = self.model(images)
        raw = outputs["score"].float()  # (N,)
        if self.method in ("temperature", "platt"):
            # Clipped in logit space: 1 - EPSILON is not exact in fp32 (its logit is off by 1e-2),
            # while 1 - raw is, for the fp32 scores the model gives.
            logit = (torch.log(raw) - torch.log1p(-raw)).clamp(-LOGIT_BOUND, LOGIT_BOUND)
            realness = torch.sigmoid(logit * self.scale + self.offset)
        elif self.method == "isotonic":
            ramps = ((raw[:, None] - self.knot_start) * self.knot_inverse_width).clamp(0.0, 1.0)
            realness = self.first_y + (ramps * self.knot_rise).sum(dim=1)  # (N,)
        else:
            realness = raw
        return realness, outputs["logits"].float(), raw


@dataclass
class ExportResult:
    """What `export_model` wrote and how closely it reproduces PyTorch."""

    path: Path
    fmt: str
    max_diff: float  # max abs realness difference against the checkpoint's model
    images: int  # how many images the parity check ran
    parity_source: str  # which images, in words
    metadata: ExportMetadata


def default_output(checkpoint: Path, fmt: str) -> Path:
    """Beside the checkpoint: run/latest_model.pt -> run/latest_model.onnx."""
    return checkpoint_path(checkpoint).with_suffix(SUFFIXES[fmt])


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


def _prepared_model(checkpoint: Checkpoint) -> nn.Module:
    model = build_model(
        checkpoint.model_name, checkpoint.img_size, torch.device("cpu"), checkpoint.model_state
    )
    return model.eval()


def write_onnx(wrapper: nn.Module, img_size: int, path: Path, metadata: str) -> None:
    """Export `wrapper` (images -> realness, logits, raw) to ONNX with a dynamic batch."""
    require_onnxruntime()
    import onnx
    from torch.export import Dim

    example = torch.rand(2, 3, img_size, img_size)
    # The dynamo exporter: the TorchScript-based one cannot trace the full model (Python ints
    # taken from shapes) and maps no FFT; dynamo lowers torch.fft.fft2 to ONNX's DFT operator.
    program = torch.onnx.export(
        wrapper,
        (example,),
        dynamo=True,
        input_names=["images"],
        output_names=list(OUTPUT_NAMES),
        dynamic_shapes={"images": {0: Dim("batch", min=1)}},
        opset_version=ONNX_OPSET,
        verbose=False,
    )
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))


def _export_torchscript(wrapper: nn.Module, img_size: int, path: Path, metadata: str) -> None:
    example = torch.rand(2, 3, img_size, img_size)
    # Traced, not scripted: the models use Python-level caches and dict outputs that script
    # rejects; their only shape-dependent branches depend on img_size, which the export fixes.
    check = torch.rand(3, 3, img_size, img_size)
    traced = torch.jit.trace(wrapper, example, check_inputs=[(check,)], check_tolerance=1e-5)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(traced, str(path), _extra_files={f"{METADATA_KEY}.json": metadata})


def _export_safetensors(checkpoint: Checkpoint, path: Path, metadata: str) -> None:
    from safetensors.torch import save_file

    tensors = {name: value.contiguous() for name, value in checkpoint.model_state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={METADATA_KEY: metadata})


def parity_images(checkpoint: Checkpoint, limit: int = PARITY_IMAGES) -> tuple[torch.Tensor, str]:
    """Up to `limit` centre-cropped images as (N, 3, S, S) floats in [0, 1]: the checkpoint's
    val split when its data root is still there, else demo images made in a temporary folder."""
    size = checkpoint.img_size
    try:
        index = index_dataset(checkpoint.config, allow_test_set=True)
        samples = (index.val or index.train)[:limit]
        source = f"{len(samples)} val images of {checkpoint.config.data_root}"
    except (FakedetError, OSError):
        samples = []
    if samples:
        return _load_images(samples, size), source
    from fakedet.data.demo import build_demo_dataset

    with tempfile.TemporaryDirectory(prefix="fakedet-parity-") as folder:
        build_demo_dataset(Path(folder), num_images=limit, img_size=size, seed=0)
        paths = sorted(Path(folder).rglob("*.png"))[:limit]
        images = _load_images([Sample(str(p), 0.0) for p in paths], size)
    return images, f"{len(paths)} demo images (the checkpoint's data root was not found)"


def _load_images(samples: list[Sample], size: int) -> torch.Tensor:
    transform = EvalTransform(size)
    batch = torch.stack([transform(load_rgb(sample.path)) for sample in samples])
    return batch.float() / 255.0  # (N, 3, S, S)


def export_model(
    checkpoint_file: Path,
    fmt: str = "onnx",
    output: Path | None = None,
    parity_batch: torch.Tensor | None = None,
) -> ExportResult:
    """Export a checkpoint's model and check it against PyTorch on real images.

    Args:
        checkpoint_file: a checkpoint file or output folder.
        fmt: onnx, torchscript or safetensors.
        output: the file to write; default beside the checkpoint with the format's suffix.
        parity_batch: (N, 3, S, S) images in [0, 1] for the parity check; default
            `parity_images(checkpoint)`.

    Returns:
        The file written, the largest realness difference and what it was measured on.

    Raises:
        UsageError: an unknown format, an output suffix that is not the format's, or onnx
            without its optional extra.
        CheckpointError: not a usable checkpoint.
        ExportError: the exporter failed, or the file differs from PyTorch by more than
            PARITY_LIMIT (the file is then removed).
    """
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}.")
    if fmt == "onnx":
        require_onnxruntime()
    path = output or default_output(checkpoint_file, fmt)
    if path.suffix.lower() != SUFFIXES[fmt]:
        # predict tells the formats apart by suffix alone.
        raise UsageError(
            f"--output {path} must end in {SUFFIXES[fmt]} for --format {fmt} (e.g. "
            f"{path.with_suffix(SUFFIXES[fmt])})."
        )
    checkpoint = load_checkpoint(checkpoint_file)
    metadata = ExportMetadata.of_checkpoint(checkpoint)
    wrapper = CalibratedDetector(_prepared_model(checkpoint), checkpoint.calibration).eval()
    try:
        with torch.no_grad():
            if fmt == "onnx":
                write_onnx(wrapper, checkpoint.img_size, path, metadata.to_json())
            elif fmt == "torchscript":
                _export_torchscript(wrapper, checkpoint.img_size, path, metadata.to_json())
            else:
                _export_safetensors(checkpoint, path, metadata.to_json())
    except FakedetError:
        raise
    except Exception as exc:  # the exporters raise many types; the message names the cause
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ExportError(
            f"Exporting {checkpoint_file} to {fmt} failed ({exc.__class__.__name__}: {first})."
        ) from None
    if parity_batch is None:
        parity_batch, source = parity_images(checkpoint)
    else:
        source = f"{len(parity_batch)} given images"
    max_diff = parity_difference(wrapper, load_exported(path, "cpu")[0], parity_batch)
    if not max_diff <= PARITY_LIMIT:  # also catches NaN
        path.unlink(missing_ok=True)
        raise ExportError(
            f"The {fmt} export differs from PyTorch by up to {max_diff:.2e} in realness on "
            f"{source} (limit {PARITY_LIMIT:g}); {path} was removed."
        )
    return ExportResult(path, fmt, max_diff, len(parity_batch), source, metadata)


@torch.no_grad()
def parity_difference(
    reference: CalibratedDetector, exported: ExportedModel, images: torch.Tensor
) -> float:
    """Max abs difference of calibrated realness, in batches of 8 (so the dynamic batch
    dimension is exercised with a size other than the export's example)."""
    largest = 0.0
    for start in range(0, len(images), 8):
        batch = images[start : start + 8]
        expected = reference(batch)[0]
        got = exported(batch)["realness"]
        largest = max(largest, float((expected - got.to(expected)).abs().max()))
    return largest


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
