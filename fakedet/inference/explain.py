"""Where in an image the detector sees a fake: patch-score maps and their heatmap overlays.

Two kinds of map. `explain_maps`: the realness of square patches laid over the image on a grid,
each cut out at its native pixels (never resized: a resize would manufacture the up-sampling
trace the detectors look for) and scored by the model on its own. It works with anything that
scores images the way the detectors do, `model(images (N, 3, P, P) in [0, 1]) -> {"score":
(N,)}`: a PyTorch detector, a loaded ONNX or TorchScript export. `own_patch_maps`: the patch
read of the built-in detectors (models/detector.py), one forward pass, a cell per 32 pixels
that sees its wider context. numpy, PIL and torch only: this is on the scoring path.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fakedet.data.transforms import MIN_SIDE, EvalTransform, load_rgb
from fakedet.errors import UsageError
from fakedet.io import atomic_write_bytes, atomic_write_text, ensure_folder

ScoreModel = Callable[[torch.Tensor], dict[str, torch.Tensor]]

# Suspicion (1 - realness) 0 -> 1 through these colours: blue (real), cyan, yellow, red (fake).
_COLOUR_STOPS = np.array([0.0, 0.35, 0.65, 1.0])
_COLOURS = np.array(
    [[40, 90, 220], [60, 200, 220], [250, 220, 60], [220, 30, 30]], dtype=np.float64
)


def patch_starts(size: int, patch: int, stride: int) -> list[int]:
    """Offsets of the patches along one side of `size` pixels: every `stride`, plus one flush
    with the far edge so that every pixel is covered (one patch of the whole side when the side
    is not longer than `patch`)."""
    if size <= patch:
        return [0]
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def _check_grid(patch: int, stride: int) -> None:
    if patch < 1 or stride < 1:
        raise UsageError(
            f"patch {patch} and stride {stride} must both be at least 1 pixel (e.g. 64 and 32)."
        )


@torch.no_grad()
def explain_maps(
    model: ScoreModel,
    images: torch.Tensor,
    patch: int = 64,
    stride: int = 32,
    batch_size: int = 64,
) -> np.ndarray:
    """Realness of each patch of each image.

    Args:
        model: scores (N, 3, p, p) float images in [0, 1] as {"score": (N,) realness}.
        images: (B, 3, H, W) float in [0, 1], on the model's device.
        patch: patch side in pixels; a side shorter than that is taken whole.
        stride: step between patches (the last one is moved flush with the far edge).
        batch_size: patches per forward pass.

    Returns:
        (B, h, w) float32 realness in [0, 1] (1 = real), h and w from `patch_starts`.

    Raises:
        UsageError: images not (B, 3, H, W), or patch / stride below 1.
    """
    _check_grid(patch, stride)
    if images.dim() != 4 or images.shape[1] != 3:
        raise UsageError(f"images of shape {tuple(images.shape)} are not (B, 3, H, W) RGB.")
    batch, _, height, width = images.shape
    rows, columns = patch_starts(height, patch, stride), patch_starts(width, patch, stride)
    patch_h, patch_w = min(patch, height), min(patch, width)
    crops = torch.stack(
        [images[:, :, y : y + patch_h, x : x + patch_w] for y in rows for x in columns], dim=1
    ).flatten(0, 1)  # (B * h * w, 3, p, p), image-major
    scores = [
        model(crops[start : start + batch_size])["score"].float().cpu()
        for start in range(0, crops.shape[0], batch_size)
    ]
    return torch.cat(scores).view(batch, len(rows), len(columns)).numpy()


@torch.no_grad()
def own_patch_maps(model: object, images: torch.Tensor) -> np.ndarray | None:
    """(B, h, w) realness of the model's own patch read (sigmoid of its patch logits), or None
    for a model without one (an export, a checkpoint from before the patch read)."""
    read = getattr(model, "patch_logits", None)
    logits = read(images) if callable(read) else None
    return None if logits is None else torch.sigmoid(logits.float()).cpu().numpy()


def cells_to_pixels(cell_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """A (h, w) map of equal cells tiling the image, on its (height, width) pixels: the map
    `own_patch_maps` gives (each cell covers height / h by width / w pixels)."""
    rows = np.minimum(np.arange(height) * cell_map.shape[0] // height, cell_map.shape[0] - 1)
    columns = np.minimum(np.arange(width) * cell_map.shape[1] // width, cell_map.shape[1] - 1)
    return cell_map[rows[:, None], columns[None, :]].astype(np.float32)


def pixel_map(
    patch_map: np.ndarray, height: int, width: int, patch: int = 64, stride: int = 32
) -> np.ndarray:
    """A (h, w) patch map back on the image's (height, width) pixels: each pixel the mean
    realness of the patches that cover it (the grid `explain_maps` used for those arguments).

    Raises:
        UsageError: the map's shape is not the grid of that image, patch and stride.
    """
    _check_grid(patch, stride)
    rows, columns = patch_starts(height, patch, stride), patch_starts(width, patch, stride)
    if patch_map.shape != (len(rows), len(columns)):
        raise UsageError(
            f"a patch map of shape {patch_map.shape} is not the {len(rows)}x{len(columns)} grid "
            f"of a {height}x{width} image with patch {patch} and stride {stride}."
        )
    total = np.zeros((height, width), dtype=np.float64)
    count = np.zeros((height, width), dtype=np.float64)
    for i, y in enumerate(rows):
        for j, x in enumerate(columns):
            total[y : y + patch, x : x + patch] += patch_map[i, j]
            count[y : y + patch, x : x + patch] += 1.0
    return (total / count).astype(np.float32)


def colourise(suspicion: np.ndarray) -> np.ndarray:
    """(H, W) suspicion in [0, 1] -> (H, W, 3) uint8 colours, blue (real) to red (fake)."""
    values = np.clip(suspicion, 0.0, 1.0)
    channels = [np.interp(values, _COLOUR_STOPS, _COLOURS[:, c]) for c in range(3)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def overlay_png(
    image: np.ndarray,
    patch_map: np.ndarray,
    patch: int | None = None,
    stride: int | None = None,
    alpha: float = 0.45,
) -> bytes:
    """A PNG of the image with the patch map drawn over it as a heatmap (red: fake).

    Args:
        image: (H, W, 3) uint8 RGB.
        patch_map: (h, w) realness in [0, 1], as from `explain_maps`.
        patch, stride: the grid the map was computed on: each pixel then shows the mean of the
            patches covering it. Without them the map is stretched smoothly over the image.
        alpha: opacity of the heatmap at full suspicion; a real-looking region keeps a third of
            it, so the image stays readable where nothing is flagged.

    Returns:
        The PNG file's bytes.

    Raises:
        UsageError: an image that is not (H, W, 3) uint8, an empty map, alpha outside [0, 1].
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise UsageError(f"the image ({image.shape}, {image.dtype}) is not (H, W, 3) uint8 RGB.")
    if patch_map.ndim != 2 or patch_map.size == 0:
        raise UsageError(f"the patch map of shape {patch_map.shape} is not a non-empty (h, w).")
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"alpha {alpha} is outside [0, 1]; use e.g. 0.45.")
    height, width = image.shape[:2]
    realness = np.asarray(patch_map, dtype=np.float32)
    if patch is not None and stride is not None:
        per_pixel = pixel_map(realness, height, width, patch, stride)
    else:
        stretched = Image.fromarray(realness).resize((width, height), Image.Resampling.BILINEAR)
        per_pixel = np.asarray(stretched, dtype=np.float32)
    suspicion = 1.0 - np.clip(per_pixel, 0.0, 1.0)
    weight = (alpha * (1.0 + 2.0 * suspicion) / 3.0)[..., None]  # (H, W, 1)
    blended = image.astype(np.float32) * (1.0 - weight) + colourise(suspicion) * weight
    buffer = io.BytesIO()
    Image.fromarray(blended.round().clip(0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Explanation:
    """One image's patch map as written: the overlay PNG and the map's JSON, or why not."""

    path: str
    overlay: str | None
    grid: str | None
    error: str | None = None


@torch.no_grad()
def write_explanations(
    model: ScoreModel,
    paths: Sequence[Path],
    out_dir: Path,
    img_size: int,
    min_side: int = MIN_SIDE,
    patch: int = 64,
    stride: int = 32,
) -> list[Explanation]:
    """For each image, the patch map of the crop predict scores (the centre `img_size`, or the
    image at its native size when smaller): the model's own patch read where it has one, else
    native-pixel patches (`explain_maps`). Writes `<out_dir>/<n>_<stem>.png` (the heatmap over
    the crop) and `.json` (the realness grid). An unreadable or too small image is skipped,
    with its reason.

    Raises:
        OutputPathError: `out_dir` cannot be created.
    """
    ensure_folder(out_dir)
    crop = EvalTransform(img_size, 1, min_side)
    device = next(iter(model.parameters())).device  # type: ignore[attr-defined]
    written = []
    for number, path in enumerate(paths):
        try:
            pixels = crop(load_rgb(str(path)))  # (3, h, w) uint8
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            written.append(Explanation(str(path), None, None, str(exc)))
            continue
        images = pixels[None].to(device).float() / 255.0
        own = own_patch_maps(model, images)
        grid = (own if own is not None else explain_maps(model, images, patch, stride))[0]
        image = pixels.permute(1, 2, 0).numpy()
        png = (
            overlay_png(image, grid) if own is not None else overlay_png(image, grid, patch, stride)
        )
        stem = out_dir / f"{number:05d}_{Path(path).stem}"
        atomic_write_bytes(stem.with_suffix(".png"), png)
        record = {
            "image": str(path),
            "map": "patch read" if own is not None else f"patches {patch} px, stride {stride}",
            "crop": list(pixels.shape[1:]),
            "realness": np.round(grid, 6).tolist(),
        }
        atomic_write_text(stem.with_suffix(".json"), json.dumps(record) + "\n")
        written.append(Explanation(str(path), str(stem.with_suffix(".png")), str(stem) + ".json"))
    return written
