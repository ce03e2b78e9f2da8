"""Commands that use or describe a trained model: predict, validate, calibrate and
inspect-checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from fakedet.cli.base import (
    CheckpointArgument,
    CheckpointBatchOption,
    CheckpointCsvOption,
    CropsOption,
    DeviceOption,
    JsonOption,
    WorkersOption,
    console,
    error_console,
    errors_to_exit_codes,
    fields_table,
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
        from fakedet.cli.scanning import is_scan_output, run_scan

        if engine != "local" or is_scan_output(output):
            run_scan(checkpoint, paths, output, engine, address, threshold, batch_size, device,
                     num_workers, crops, as_json)  # fmt: skip
            return
        from fakedet.data.shards import expand_sources
        from fakedet.inference.results import (
            collect_images,
            predictions_csv,
            write_predictions_csv,
        )

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


def validate(
    checkpoint: CheckpointArgument,
    data_root: Annotated[
        Path, typer.Argument(help="Labelled dataset (any layout fakedet train reads).")
    ],
    split: Annotated[
        str,
        typer.Option(
            "--split",
            help="auto (val, or every image of a set without a train split), val, train or all.",
        ),
    ] = "auto",
    batch_size: CheckpointBatchOption = None,
    device: DeviceOption = "auto",
    num_workers: WorkersOption = None,
    use_csv: CheckpointCsvOption = None,
    plots: Annotated[
        Path | None,
        typer.Option(
            "--plots", help="Write roc_pr.png, confusion.png, score_hist.png, hardest.png here."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Score a labelled dataset with a checkpoint: loss terms, accuracy, AUC and AP.

    The val split, loss weights and batch size come from the checkpoint, so on the training data
    it gives the run's own validation numbers. A set without a train split (only val/ or test/,
    or plain real/ and fake/ folders) is a test set: every image in it is scored.

    Examples:

        fakedet validate runs/demo/best_model.pt demo

        fakedet validate runs/demo/best_model.pt ./test_set      # real/ and fake/: every image

        fakedet validate runs/demo/best_model.pt ./other_dataset --split all --json

        fakedet validate runs/demo/best_model.pt ./other_dataset --plots runs/demo/other_plots
    """
    with errors_to_exit_codes():
        from fakedet.evaluation.labelled import validate_checkpoint

        result = validate_checkpoint(
            checkpoint, data_root, split, device, batch_size, num_workers, use_csv, plots
        )
        if as_json:
            print_json(result.to_dict())
            return
        if result.calibration is None:
            note_uncalibrated(checkpoint)
        console.print(
            f"{result.checkpoint} on {result.data_root} ({result.layout}), "
            f"{result.scored}: {result.images} images ({result.real} real, "
            f"{result.fake} fake)",
            highlight=False,
        )
        console.print(
            _metrics_table(
                f"metrics (accuracy at threshold {result.threshold:.4g})", result.metrics
            )
        )
        if result.plots:
            console.print(f"Plots: {', '.join(result.plots)}", highlight=False, soft_wrap=True)
        if result.skipped:
            console.print(
                f"{len(result.skipped)} unreadable file(s) skipped, e.g. {result.skipped[0][0]}: {result.skipped[0][1]}",
                highlight=False,
            )


def inspect_checkpoint(
    checkpoint: CheckpointArgument,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print everything (history too) as JSON.")
    ] = False,
) -> None:
    """What a checkpoint holds: versions, model, epoch and step, metrics, config, history.

    Examples:

        fakedet inspect-checkpoint checkpoints/best_model.pt

        fakedet inspect-checkpoint runs/demo --json
    """
    with errors_to_exit_codes():
        from fakedet.cli.doctor import path_findings, render_findings
        from fakedet.inference.describe import describe_checkpoint

        info = describe_checkpoint(checkpoint)
        findings = path_findings(checkpoint)
        if as_json:
            print_json({**info.to_dict(), "findings": [finding.as_dict() for finding in findings]})
            return
        progress = f"{info.epoch} of {info.epochs_configured}"
        if info.interrupted_at_batch:
            progress += f" (interrupted at batch {info.interrupted_at_batch})"
        fields = {
            "model": f"{info.mode}, {info.parameters / 1e6:.2f}M params, {info.img_size} px",
            "epoch": progress,
            "global step": info.global_step,
            "best": f"epoch {info.best_epoch}, val_loss {info.best_val_loss:.4f}"
            if info.best_val_loss is not None
            else "no validation yet",
            "epochs without improvement": info.epochs_without_improvement,
            "non-finite steps skipped": info.nonfinite_steps,
            "fakedet / torch": f"{info.fakedet_version} / {info.torch_version}",
            "size": f"{info.size_mb} MB",
            "data root": info.config["data_root"],
            "calibration": info.calibration_text,
        }
        if info.calibration is not None:
            from fakedet.checkpoints.calibration import Calibration

            fields["calibration details"] = "\n".join(
                Calibration.from_dict(info.calibration).details()
            )
        console.print(fields_table(info.path, fields))
        last = {k: v for k, v in info.last_metrics.items() if k.startswith("val_")}
        if last:
            console.print(_metrics_table(f"epoch {info.last_metrics['epoch']} validation", last))
        settings = ", ".join(f"{k}={v}" for k, v in info.config.items())
        console.print(f"config: {settings}", highlight=False, soft_wrap=True)
        render_findings(console, findings)


def calibrate(
    checkpoint: CheckpointArgument,
    data_root: Annotated[Path, typer.Argument(help="Labelled held-out images to fit on.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The new checkpoint to write (never the input).")
    ],
    split: Annotated[
        str, typer.Option("--split", help="auto (val, or all of a set without train), val, all.")
    ] = "auto",
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="auto (the map that beats raw scores out of fold, if any), identity, "
            "temperature, platt or isotonic.",
        ),
    ] = "auto",
    threshold_rule: Annotated[
        str,
        typer.Option(
            "--threshold-rule",
            help="fixed:X, eer, fpr:R or fnr:R (R holds on new images from the same source "
            "with 95% confidence; e.g. fpr:0.05).",
        ),
    ] = "fixed:0.5",
    batch_size: CheckpointBatchOption = None,
    device: DeviceOption = "auto",
    num_workers: WorkersOption = None,
    use_csv: CheckpointCsvOption = None,
    crops: CropsOption = 1,
    as_json: JsonOption = False,
) -> None:
    """Refit how a checkpoint's score is read: calibration and operating threshold.

    The model is unchanged; the new checkpoint stores the fitted map (by default the one that
    beats raw scores out of fold among temperature, Platt and isotonic, or none) and the
    threshold its rule picks on these images. predict,
    validate and evaluate then report calibrated realness and decide at that threshold.

    Examples:

        fakedet calibrate runs/demo/best_model.pt ./my_heldout --output runs/demo/calibrated.pt

        fakedet calibrate runs/demo demo --threshold-rule fpr:0.01 -o runs/demo/fpr1.pt
    """
    with errors_to_exit_codes():
        from fakedet.evaluation.labelled import calibrate_checkpoint

        calibration = calibrate_checkpoint(
            checkpoint,
            data_root,
            output,
            split,
            method,
            threshold_rule,
            device,
            batch_size,
            num_workers,
            use_csv,
            crops,
        )
        if as_json:
            print_json({"output": str(output), "calibration": calibration.to_dict()})
            return
        console.print(f"Calibration: {calibration.describe()}", highlight=False, soft_wrap=True)
        for line in calibration.details():
            console.print(f"  {line}", highlight=False, soft_wrap=True)
        console.print(f"Wrote {output}", highlight=False)


def _metrics_table(title: str, metrics: dict) -> Table:
    from fakedet.cli.reporting import metrics_table  # it brings the training reporter

    return metrics_table(title, metrics)
