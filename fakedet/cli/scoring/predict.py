"""`fakedet predict`: score images, folders or shards with a checkpoint or an export, as a
table, JSON, CSV or a streamed Parquet scan, optionally with the patch map of each image."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from fakedet.cli.base import (
    CheckpointArgument,
    CropsOption,
    DeviceOption,
    JsonOption,
    WorkersOption,
    console,
    error_console,
    errors_to_exit_codes,
    print_json,
    printable,
)
from fakedet.errors import UsageError

if TYPE_CHECKING:
    from fakedet.checkpoints.calibration import Calibration


def note_uncalibrated(checkpoint: Path) -> None:
    """The one line an uncalibrated (0.1.0 or interrupted) checkpoint gets."""
    error_console.print(
        f"note: {checkpoint} stores no calibration (written by fakedet 0.1.0, or before its run "
        "ended): raw scores, threshold 0.5. `fakedet calibrate` adds one.",
        highlight=False,
        soft_wrap=True,
    )


def predict(
    checkpoint: CheckpointArgument,
    paths: Annotated[
        list[Path], typer.Argument(help="Images and/or folders (searched recursively).")
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write path, realness, verdict, error to this CSV ('-': the CSV to stdout alone); "
            "NAME.parquet or an existing folder: stream key, realness, verdict, error to Parquet "
            "as it goes, resuming a stopped scan.",
        ),
    ] = None,
    engine: Annotated[
        str, typer.Option("--engine", help="local, or ray (Ray Data; Parquet output).")
    ] = "local",
    address: Annotated[
        str | None, typer.Option("--address", help="--engine ray: the cluster \\[default: local].")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            min=0.0,
            max=1.0,
            help="Calibrated realness at or above this is 'real' \\[default: the checkpoint's].",
        ),
    ] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Show (and write) the uncalibrated score too.")
    ] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per batch.")] = 32,
    device: DeviceOption = "auto",
    num_workers: WorkersOption = None,
    crops: CropsOption = 1,
    as_json: JsonOption = False,
    explain: Annotated[
        Path | None,
        typer.Option(
            "--explain",
            help="Also write each image's patch-score map to this folder: a heatmap PNG over "
            "the scored crop (red: fake) and the realness grid as JSON.",
        ),
    ] = None,
) -> None:
    """Score images: calibrated realness in [0, 1] (1 = real photo) and a real/fake verdict.

    Each image is scored on its centre crop at the checkpoint's img_size, as in validation
    (--crops 5: also the four corners); the score is calibrated and the verdict taken at the
    threshold the checkpoint stores.

    Examples:

        fakedet predict runs/demo/best_model.pt photo.jpg

        fakedet predict runs/demo ./incoming --output scores.csv
    """
    with errors_to_exit_codes():
        from fakedet.cli.scoring.scanning import ScanJob, is_scan_output, run_scan, scan_output

        if engine != "local" or is_scan_output(output):
            destination = scan_output(engine, output)
            job = ScanJob(
                checkpoint, destination, threshold, batch_size, device, num_workers, crops, as_json
            )
            run_scan(job, paths, engine, address)
            return
        from fakedet.inference.results import (
            collect_images,
            predictions_csv,
            write_predictions_csv,
        )
        from fakedet.sources.shards.reading import expand_sources

        images = [Path(key) for key in expand_sources(paths, collect_images)]
        if checkpoint.suffix.lower() == ".onnx":  # ONNX Runtime, numpy and Pillow: no torch
            from fakedet.inference.onnx_scoring import OnnxDetector, predict_onnx

            detector = OnnxDetector(checkpoint, device)
            predictions = predict_onnx(detector, images, threshold, batch_size, crops)
            cut = detector.metadata.threshold if threshold is None else threshold
            title = f"{detector.metadata.mode} model (ONNX export), threshold {cut:.4g}"
            if detector.metadata.calibration is None:
                note_uncalibrated(checkpoint)
            warn_if_unlike(images, detector.metadata.calibration)
            if explain is not None:  # the maps run the export through torch's loader
                _explain(checkpoint, images, explain, device)
        else:
            predictions, title = _predict_with_torch(
                checkpoint, images, threshold, batch_size, device, num_workers, crops, explain
            )
        rows = [prediction.as_row(raw) for prediction in predictions]
        to_stdout = output is not None and str(output) == "-"
        if output is not None and not to_stdout:
            write_predictions_csv(output, predictions, raw)
        unreadable = sum(1 for p in predictions if p.realness is None)
        if unreadable == len(predictions):
            raise UsageError(
                f"None of the {len(predictions)} files could be scored "
                f"(e.g. {printable(predictions[0].path)}: {predictions[0].error})."
            )
        if to_stdout:  # for pipes: the CSV and nothing else on stdout
            sys.stdout.write(predictions_csv(predictions, raw))
            return
        if as_json:
            print_json(rows)
            return
        shown = rows[:50]
        table = Table(title=title, title_justify="left")
        table.add_column("image", overflow="fold")
        table.add_column("realness", justify="right")
        if raw:
            table.add_column("raw", justify="right")
        table.add_column("verdict")
        for row in shown:
            style = {"real": "green", "fake": "red"}.get(row["verdict"], "yellow")
            scores = [row["realness"], row["raw"]] if raw else [row["realness"]]
            cells = ["-" if score is None else f"{score:.4f}" for score in scores]
            table.add_row(printable(row["path"]), *cells, f"[{style}]{row['verdict']}[/]")
        console.print(table)
        if len(rows) > len(shown):
            console.print(
                f"... and {len(rows) - len(shown)} more"
                + (f" (all in {output})" if output else "; use --output FILE.csv for all")
            )
        real = sum(1 for p in predictions if p.verdict == "real")
        too_small = sum(1 for p in predictions if p.verdict == "too small")
        console.print(
            f"{len(predictions)} images: {real} real, {len(predictions) - real - unreadable} fake"
            + (f", {too_small} too small (no verdict)" if too_small else "")
            + (f", {unreadable - too_small} unreadable" if unreadable > too_small else "")
            + (f"; wrote {output}" if output else "")
            + (f"; patch maps in {explain}" if explain is not None else ""),
            highlight=False,
        )


def warn_if_unlike(images: list[Path], calibration: Calibration | None) -> None:
    """predict's one warning when the images differ from those the calibration was fitted on
    (their sizes, formats, JPEG qualities): its realness and guarantee then do not hold."""
    from fakedet.inference.drift import report_drift

    if calibration is not None:
        report_drift(
            images,
            calibration,
            lambda text: error_console.print(f"warning: {text}", highlight=False, soft_wrap=True),
        )


def _predict_with_torch(
    checkpoint: Path,
    images: list[Path],
    threshold: float | None,
    batch_size: int,
    device: str,
    num_workers: int | None,
    crops: int,
    explain: Path | None = None,
) -> tuple[list, str]:
    """predict's rows from a checkpoint, TorchScript or safetensors file, and the table title;
    with `explain`, the patch-score maps written there too."""
    from fakedet.inference.predictor import (
        calibration_of,
        load_detector,
        predict_images,
        prepared_for_scoring,
    )

    model, loaded = load_detector(checkpoint, device)
    model = prepared_for_scoring(model)
    calibration = calibration_of(loaded)
    if loaded.calibration is None:
        note_uncalibrated(checkpoint)
    warn_if_unlike(images, loaded.calibration)
    predictions = predict_images(
        model, images, loaded.img_size, calibration, threshold, batch_size, num_workers, crops
    )
    if explain is not None:
        _explain(checkpoint, images, explain, device, model, loaded.img_size)
    cut = calibration.threshold if threshold is None else threshold
    title = f"{loaded.model_name} model, epoch {loaded.state.epoch}, threshold {cut:.4g}"
    return predictions, title


def _explain(
    checkpoint: Path,
    images: list[Path],
    out_dir: Path,
    device: str,
    model: object | None = None,
    img_size: int | None = None,
) -> None:
    """predict --explain: each image's patch-score map (inference/explain.py) in `out_dir`."""
    from fakedet.inference.explain import write_explanations
    from fakedet.inference.predictor import load_detector, min_input_side

    if model is None or img_size is None:
        model, loaded = load_detector(checkpoint, device)
        img_size = loaded.img_size
    write_explanations(model, images, out_dir, img_size, min_input_side(model, img_size))
