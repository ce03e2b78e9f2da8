"""Exporting a trained detector (ONNX, TorchScript, safetensors) and checking the export against
PyTorch on real images.

ONNX and TorchScript files hold the whole model with its input normalisation and its
calibration: input `images` (N, 3, S, S) RGB float in [0, 1], outputs `realness` (calibrated,
N), `logits` (N, 2) and `raw` (the model's own score, N). A safetensors file holds the weights
only, with the run's config and calibration in its metadata, and loads wherever a checkpoint does
(fakedet/inference/exported.py).
"""

from __future__ import annotations

import importlib.util
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fakedet.checkpoints.calibration import IDENTITY, Calibration
from fakedet.checkpoints.files import checkpoint_path, load_checkpoint
from fakedet.checkpoints.schema import Checkpoint
from fakedet.data.transforms import EvalTransform, TooSmallError, load_rgb
from fakedet.errors import FakedetError, UsageError
from fakedet.inference.exported import (
    METADATA_KEY,
    ExportedModel,
    ExportMetadata,
    load_exported,
    require_onnxruntime,
)
from fakedet.inference.metadata import (
    FORMATS,
    LOGIT_BOUND,
    ONNX_EXTRA_HINT,
    ONNX_OPSET,
    OUTPUT_NAMES,
    PARITY_IMAGES,
    PARITY_LIMIT,
    SUFFIXES,
    ExportError,
)
from fakedet.models.loading import build_model
from fakedet.sources.layouts import index_dataset
from fakedet.sources.samples import Sample


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


def _prepared_model(checkpoint: Checkpoint) -> nn.Module:
    model = build_model(
        checkpoint.model_name,
        checkpoint.img_size,
        torch.device("cpu"),
        checkpoint.model_state,
        checkpoint.backbone,
    )
    return model.eval()


def write_onnx(wrapper: nn.Module, img_size: int, path: Path, metadata: str) -> None:
    """Export `wrapper` (images -> realness, logits, raw) to ONNX with a dynamic batch."""
    require_onnxruntime()
    import onnx
    from torch.export import Dim

    if importlib.util.find_spec("onnxscript") is None:  # torch's dynamo exporter builds on it
        raise UsageError(f"ONNX export needs the optional onnx extra: {ONNX_EXTRA_HINT}")

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
    # One call first fills the models' per-size caches (FFT windows, bin matrices): traced from
    # a cache they are tensor constants, which torch.jit.load's map_location moves to the
    # device asked for; built while tracing, they would stay on the CPU.
    with torch.no_grad():
        wrapper(example)
    traced = torch.jit.trace(wrapper, example, check_inputs=[(check,)], check_tolerance=1e-5)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(traced, str(path), _extra_files={f"{METADATA_KEY}.json": metadata})


def _export_safetensors(weights: dict[str, torch.Tensor], path: Path, metadata: str) -> None:
    from safetensors.torch import save_file

    tensors = {name: value.contiguous() for name, value in weights.items()}
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
    from fakedet.demo.dataset import build_demo_dataset

    with tempfile.TemporaryDirectory(prefix="fakedet-parity-") as folder:
        build_demo_dataset(Path(folder), num_images=limit, img_size=size, seed=0)
        paths = sorted(Path(folder).rglob("*.png"))[:limit]
        images = _load_images([Sample(str(p), 0.0) for p in paths], size)
    return images, f"{len(paths)} demo images (the checkpoint's data root was not found)"


def _load_images(samples: list[Sample], size: int) -> torch.Tensor:
    # An export is traced at one size and takes only that (data/transforms.py's rule for
    # exports): images with a smaller side are left out of the check.
    transform = EvalTransform(size, min_side=size)
    crops = []
    for sample in samples:
        try:
            crops.append(transform(load_rgb(sample.path)))
        except TooSmallError:
            continue
    if not crops:
        raise UsageError(
            f"None of the {len(samples)} parity images has both sides of at least {size} px; "
            "give images at least as large as the model's input."
        )
    return torch.stack(crops).float() / 255.0  # (N, 3, S, S)


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
                # A probe's checkpoint holds its head alone: the file bakes the backbone in.
                weights = checkpoint.model_state
                if checkpoint.backbone is not None:
                    weights = wrapper.model.state_dict()
                _export_safetensors(weights, path, metadata.to_json())
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
