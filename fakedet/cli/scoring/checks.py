"""Commands that check or describe a trained model: validate, calibrate and inspect-checkpoint."""

from __future__ import annotations

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
    errors_to_exit_codes,
    fields_table,
    print_json,
)
from fakedet.cli.scoring.predict import note_uncalibrated

if TYPE_CHECKING:
    pass


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
    processing: Annotated[
        str,
        typer.Option(
            "--processing",
            help="Comma-separated everyday-processing kinds (jpeg75, downscale0.5, screenshot, "
            "... or all): fit also on a copy of every image after each kind, so the threshold "
            "holds for re-saved and re-sized images (an fpr/fnr rule reads each image's worst "
            "version).",
        ),
    ] = "",
    processing_on: Annotated[
        str,
        typer.Option(
            "--processing-on",
            help="both (the copies of every image) or real (of the real images only, with an "
            "fpr rule: the map stays the originals' fit, the threshold holds for every "
            "processed version of a real photo).",
        ),
    ] = "both",
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

        fakedet calibrate runs/demo demo --processing jpeg75 --processing-on real
        --threshold-rule fpr:0.05 -o runs/demo/proc.pt
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
            processing.split(","),
            processing_on,
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
