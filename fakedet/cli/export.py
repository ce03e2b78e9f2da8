"""`fakedet export`: a checkpoint as ONNX, TorchScript or safetensors, checked against PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fakedet.cli.base import CheckpointArgument, console, errors_to_exit_codes


def export(
    checkpoint: CheckpointArgument,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="onnx (needs the onnx extra), torchscript or safetensors \\[default: from the "
            "--output suffix, else onnx].",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="File to write \\[default: beside the checkpoint, .onnx/.ts]."
        ),
    ] = None,
) -> None:
    """Export a trained detector with its normalisation and calibration inside.

    Input: RGB float in [0, 1], N x 3 x img_size x img_size (any N); outputs: realness
    (calibrated when the checkpoint has a calibration), logits and the raw score. The export is
    run on real images beside PyTorch; a realness difference above 1e-4 fails with exit 1.

    Examples:

        fakedet export runs/demo/best_model.pt

        fakedet export runs/demo/best_model.pt -o model.safetensors   # format from the suffix
    """
    with errors_to_exit_codes():
        from fakedet.export.writer import PARITY_LIMIT, export_model
        from fakedet.inference.metadata import SUFFIXES

        if fmt is None:  # `-o model.ts` says which format is wanted
            by_suffix = {suffix: name for name, suffix in SUFFIXES.items()}
            fmt = by_suffix.get(output.suffix.lower(), "onnx") if output is not None else "onnx"

        with console.status(f"Exporting {checkpoint} to {fmt} ..."):
            result = export_model(checkpoint, fmt, output)
        metadata = result.metadata
        calibration = metadata.calibration
        console.print(
            f"Wrote {result.path} ({fmt}, {metadata.mode} model, {metadata.img_size} px, "
            f"calibration {calibration.method if calibration else 'none'}, "
            f"threshold {metadata.threshold:.4g}).",
            highlight=False,
            soft_wrap=True,
        )
        console.print(
            f"Parity with PyTorch on {result.parity_source}: max abs realness difference "
            f"{result.max_diff:.2e} (limit {PARITY_LIMIT:g}).",
            highlight=False,
            soft_wrap=True,
        )
