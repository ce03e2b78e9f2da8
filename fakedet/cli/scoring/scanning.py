"""`fakedet predict` with Parquet output: the streamed, resumable scan (local) or Ray Data
(`--engine ray`), with a progress bar and images/s."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fakedet.cli.base import console, error_console, print_json
from fakedet.errors import UsageError

ENGINES = ("local", "ray")


def is_scan_output(output: Path | None) -> bool:
    """Whether predict's --output asks for Parquet: NAME.parquet, or an existing folder."""
    return output is not None and (output.suffix.lower() == ".parquet" or output.is_dir())


def scan_output(engine: str, output: Path | None) -> Path:
    """predict's --output for a scan by `engine`: NAME.parquet, or an existing folder.

    Raises:
        UsageError: an unknown engine, or an output that is not Parquet.
    """
    if engine not in ENGINES:
        raise UsageError(f"--engine {engine} is not one of {', '.join(ENGINES)}.")
    if output is None or not is_scan_output(output):
        raise UsageError(
            f"--engine {engine} writes Parquet: give --output NAME.parquet or an existing folder."
        )
    return output


@dataclass(frozen=True)
class ScanJob:
    """What a scan was asked for, whichever engine runs it."""

    checkpoint: Path
    output: Path
    threshold: float | None
    batch_size: int
    device: str
    num_workers: int | None
    crops: int
    as_json: bool


def run_scan(job: ScanJob, paths: list[Path], engine: str, address: str | None) -> None:
    """Run the scan (its engine and output checked by `scan_output`), render the result."""
    from fakedet.inference.results import collect_images
    from fakedet.sources.shards.reading import expand_sources

    keys = expand_sources(paths, collect_images)
    if engine == "ray":
        from fakedet.scale.ray_scan import ray_scan

        result = ray_scan(
            job.checkpoint, keys, job.output, address, job.batch_size, job.threshold, job.crops
        )
        if job.as_json:
            print_json(result)
        else:
            console.print(
                f"{result['rows']} images scored on Ray; wrote {len(result['files'])} part "
                f"file(s) in {job.output}",
                highlight=False,
            )
        return
    _scan_locally(job, keys)


def _scan_locally(job: ScanJob, keys: list[str]) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from fakedet.inference.predictor import calibration_of, load_detector, prepared_for_scoring
    from fakedet.inference.scan import scan_to_parquet
    from fakedet.runtime import resolve_device

    model, loaded = load_detector(job.checkpoint, job.device)
    model = prepared_for_scoring(model)
    if loaded.calibration is None:
        error_console.print(
            f"note: {job.checkpoint} stores no calibration: raw scores, threshold 0.5.",
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
        disable=job.as_json,
    ) as progress:
        task = progress.add_task("scan", total=len(keys), rate="")

        def advance(done: int, total: int) -> None:
            speed = progress.tasks[0].speed
            progress.update(task, completed=done, rate=f"{speed:.1f} img/s" if speed else "")

        result = scan_to_parquet(
            model, keys, loaded.img_size, job.output, calibration_of(loaded), job.threshold,
            job.batch_size, job.num_workers, job.crops, resolve_device(job.device),
            on_progress=advance,
        )  # fmt: skip
    if job.as_json:
        print_json({**result.__dict__, "images_per_second": result.images_per_second})
        return
    resumed = f" ({result.resumed} done by an earlier run)" if result.resumed else ""
    console.print(
        f"{result.total} images{resumed}: scored {result.scored} at "
        f"{result.images_per_second:.1f} img/s: {result.real} real, {result.fake} fake, "
        f"{result.unreadable} unreadable; wrote {job.output}",
        highlight=False,
    )
