"""The predict scan on Ray Data: the driver lists the source's keys (files and shard samples,
from the cached shard index), Ray spreads them over its workers, each worker scores batches with
the detector (a checkpoint or an ONNX / TorchScript export) and Ray writes the rows as Parquet
part files.

Every node reads the images by key, so the source must sit on storage every node mounts (a
shared or network filesystem), as for DDP training. The rows are those of the local scan: `key`,
calibrated `realness`, `verdict`, `error`. Ray retries failed tasks itself; a killed driver
starts the scan again (the local engine is the one that resumes).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fakedet.errors import OutputPathError, UsageError

EXTRA_HINT = 'pip install "fakedet[scale]"'


def require_ray() -> Any:
    """The ray module. Raises: UsageError: ray is not installed (names the extra)."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise UsageError(f"--engine ray needs the optional extra 'scale': {EXTRA_HINT}.") from None
    return ray


class ScoreBatch:
    """A Ray actor's scorer: loads the detector once, then scores batches of keys."""

    def __init__(self, checkpoint: str, threshold: float | None, crops: int, device: str) -> None:
        from fakedet.inference.predictor import calibration_of, load_detector

        self.model, loaded = load_detector(Path(checkpoint), device)
        self.img_size = loaded.img_size
        self.calibration = calibration_of(loaded)
        self.cut = self.calibration.threshold if threshold is None else threshold
        self.crops = crops

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        import torch

        from fakedet.data.transforms import EvalTransform, load_rgb, pixels_to_float
        from fakedet.inference.predictor import score_views
        from fakedet.inference.scan import NON_FINITE

        transform = EvalTransform(self.img_size, self.crops)
        keys = [str(key) for key in batch["key"]]
        images, good, errors = [], [], {}
        for key in keys:
            try:
                images.append(transform(load_rgb(key)))
                good.append(key)
            except (OSError, ValueError, SyntaxError) as exc:
                errors[key] = str(exc)
        scores: dict[str, float] = {}
        if images:
            with torch.no_grad():
                raw = score_views(
                    self.model, pixels_to_float(torch.stack(images), torch.device("cpu"))
                )
            scores = dict(zip(good, raw.tolist(), strict=True))
        rows: dict[str, list] = {"key": keys, "realness": [], "verdict": [], "error": []}
        for key in keys:
            score = scores.get(key)
            if score is None:
                rows["realness"].append(None)
                rows["verdict"].append("unreadable")
                rows["error"].append(errors.get(key, "could not be read"))
            elif not np.isfinite(score):
                rows["realness"].append(None)
                rows["verdict"].append("error")
                rows["error"].append(NON_FINITE)
            else:
                realness = float(self.calibration.apply(np.array(score)))
                rows["realness"].append(realness)
                rows["verdict"].append("real" if realness >= self.cut else "fake")
                rows["error"].append(None)
        return rows


def ray_scan(
    checkpoint: Path,
    keys: Sequence[str],
    output: Path,
    address: str | None = None,
    batch_size: int = 32,
    threshold: float | None = None,
    crops: int = 1,
    workers: int = 2,
    num_cpus: int | None = None,
) -> dict[str, Any]:
    """Score `keys` on Ray Data and write Parquet part files into the folder `output`.

    Args:
        checkpoint: a checkpoint file or an ONNX / TorchScript / safetensors export.
        keys: image paths and shard keys (`expand_sources`), on storage every node mounts.
        address: the Ray cluster to join (`ray://...` or `auto`); None starts a local Ray.
        workers: scoring actors (one detector each).
        num_cpus: a local Ray's CPUs (None: all).

    Returns:
        {"output", "rows", "files"}.

    Raises:
        UsageError: ray is not installed, or `output` already holds files.
    """
    ray = require_ray()
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise OutputPathError(f"{output} already exists; give --engine ray a new output folder.")
    started_here = not ray.is_initialized()
    if started_here:
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address is None:
            options["num_cpus"] = num_cpus
        ray.init(address=address, **options)
    try:
        dataset = ray.data.from_items([{"key": key} for key in keys])
        scored = dataset.map_batches(
            ScoreBatch,
            fn_constructor_args=(str(checkpoint.resolve()), threshold, crops, "cpu"),
            batch_size=batch_size,
            concurrency=workers,
            batch_format="numpy",
        )
        scored.write_parquet(str(output.resolve()))
    finally:
        if started_here:
            ray.shutdown()
    files = sorted(path.name for path in output.glob("*.parquet"))
    import pyarrow.parquet as pq

    rows = sum(pq.ParquetFile(output / name).metadata.num_rows for name in files)
    return {"output": str(output), "rows": rows, "files": files}
