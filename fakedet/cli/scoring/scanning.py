"""`fakedet predict` with Parquet output: the streamed, resumable scan (local) or Ray Data
(`--engine ray`), with a progress bar and images/s."""

from __future__ import annotations

from pathlib import Path

from fakedet.cli.base import console, error_console, print_json
from fakedet.errors import UsageError

ENGINES = ("local", "ray")


def is_scan_output(output: Path | None) -> bool:
    """Whether predict's --output asks for Parquet: NAME.parquet, or an existing folder."""
    return output is not None and (output.suffix.lower() == ".parquet" or output.is_dir())


def run_scan(
    checkpoint: Path,
    paths: list[Path],
    output: Path | None,
    engine: str,
    address: str | None,
    threshold: float | None,
    batch_size: int,
    device: str,
    num_workers: int | None,
    crops: int,
    as_json: bool,
) -> None:
    """Parse the scan's flags, run it, render the result."""
    from fakedet.inference.results import collect_images
    from fakedet.sources.shards.reading import expand_sources

    if engine not in ENGINES:
        raise UsageError(f"--engine {engine} is not one of {', '.join(ENGINES)}.")
    if not is_scan_output(output):
        raise UsageError(
            f"--engine {engine} writes Parquet: give --output NAME.parquet or an existing folder."
        )
    assert output is not None  # is_scan_output
    keys = expand_sources(paths, collect_images)
    if engine == "ray":
        from fakedet.scale.ray_scan import ray_scan

        result = ray_scan(checkpoint, keys, output, address, batch_size, threshold, crops)
        if as_json:
            print_json(result)
        else:
            console.print(
                f"{result['rows']} images scored on Ray; wrote {len(result['files'])} part "
                f"file(s) in {output}",
                highlight=False,
            )
        return
    _scan_locally(
        checkpoint, keys, output, threshold, batch_size, device, num_workers, crops, as_json
    )


def _scan_locally(
    checkpoint: Path,
    keys: list[str],
    output: Path,
    threshold: float | None,
    batch_size: int,
    device: str,
    num_workers: int | None,
    crops: int,
    as_json: bool,
) -> None:
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from fakedet.inference.predictor import calibration_of, load_detector
    from fakedet.inference.scan import scan_to_parquet
    from fakedet.models.layers import fuse_for_inference
    from fakedet.runtime import resolve_device

    model, loaded = load_detector(checkpoint, device)
    if isinstance(model, torch.nn.Module):
        model = fuse_for_inference(model)
    if loaded.calibration is None:
        error_console.print(
            f"note: {checkpoint} stores no calibration: raw scores, threshold 0.5.",
            highlight=False,
        )
    with Progress(
        "scanning",
        BarColumn(),
        MofNCompleteColumn(),
        "{task.fields[rate]}",
        TimeRemainingColumn(),
        console=error_console,
        transient=True,
        disable=as_json,
    ) as progress:
        task = progress.add_task("scan", total=len(keys), rate="")

        def advance(done: int, total: int) -> None:
            speed = progress.tasks[0].speed
            progress.update(task, completed=done, rate=f"{speed:.1f} img/s" if speed else "")

        result = scan_to_parquet(
            model, keys, loaded.img_size, output, calibration_of(loaded), threshold, batch_size,
            num_workers, crops, resolve_device(device), on_progress=advance,
        )  # fmt: skip
    if as_json:
        print_json({**result.__dict__, "images_per_second": result.images_per_second})
        return
    resumed = f" ({result.resumed} done by an earlier run)" if result.resumed else ""
    console.print(
        f"{result.total} images{resumed}: scored {result.scored} at "
        f"{result.images_per_second:.1f} img/s: {result.real} real, {result.fake} fake, "
        f"{result.unreadable} unreadable; wrote {output}",
        highlight=False,
    )
