"""`fakedet evaluate`: per-generator, per-perturbation metrics of one or more checkpoints."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from fakedet.cli.base import (
    CropsOption,
    DeviceOption,
    JsonOption,
    WorkersOption,
    console,
    errors_to_exit_codes,
    progress_bar,
)

if TYPE_CHECKING:
    from fakedet.evaluation.report import EvaluationReport, GroupResult

# What the terminal and Markdown tables show per checkpoint (all metrics are in JSON and CSV).
SHOWN = (("auc", "AUC"), ("ap", "AP"), ("accuracy", "acc"), ("fpr", "FPR"), ("fnr", "FNR"))
# The everyday-processing summary per checkpoint: real photos called fake, the shift of their
# realness, fakes still caught, and the ranking.
PROCESSING_SHOWN = (
    ("fpr", "FPR"), ("realness_shift", "real shift"), ("fake_acc", "fakes caught"), ("auc", "AUC"),
)  # fmt: skip


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def processing_rows(report: EvaluationReport) -> list[list[str]]:
    """The processing summary's cells: per kind (unprocessed first), each checkpoint's mean-group
    PROCESSING_SHOWN values."""
    rows = []
    for kind in report.processing_columns():
        cells = [kind.removeprefix("processing:")]
        for checkpoint in report.checkpoints:
            mean = report.mean_row(kind, checkpoint)
            cells += [_cell(getattr(mean, key)) for key, _ in PROCESSING_SHOWN]
        rows.append(cells)
    return rows


def _processing_header(report: EvaluationReport) -> list[str]:
    names = _short_names(report.checkpoints)
    header = ["processing"]
    for checkpoint in report.checkpoints:
        header += [f"{names[checkpoint]} {label}" for _, label in PROCESSING_SHOWN]
    return header


def _short_names(checkpoints: list[str]) -> dict[str, str]:
    """Column titles: the shortest path tails that tell the checkpoints apart (a run folder's
    latest_model.pt goes by the folder's name, and ".pt" is dropped)."""

    def parts_of(name: str) -> tuple[str, ...]:
        path = Path(name)
        path = path.parent if path.name == "latest_model.pt" else path.with_suffix("")
        return path.parts or (name,)

    parts = {name: parts_of(name) for name in checkpoints}
    for depth in range(1, max(len(p) for p in parts.values()) + 1):
        tails = {name: "/".join(p[-depth:]) for name, p in parts.items()}
        if len(set(tails.values())) == len(tails):
            return tails
    return {name: name for name in checkpoints}


def _shown_cells(row: GroupResult) -> list[str]:
    return [_cell(getattr(row, key)) for key, _ in SHOWN]


def render_tables(report: EvaluationReport) -> list[Table]:
    """One rich table per perturbation: groups as rows, checkpoints as column blocks."""
    names = _short_names(report.checkpoints)
    tables = []
    for perturbation in report.perturbations:
        table = Table(title=f"perturbation: {perturbation}", title_justify="left")
        table.add_column("group")
        table.add_column("real/fake", justify="right")
        for checkpoint in report.checkpoints:
            for _, label in SHOWN:
                table.add_column(f"{names[checkpoint]}\n{label}", justify="right")
        for group, by_checkpoint in report.rows_by_group(perturbation).items():
            first = next(iter(by_checkpoint.values()))
            cells = [f"{first.n_real}/{first.n_fake}"]
            for checkpoint in report.checkpoints:
                cells += _shown_cells(by_checkpoint[checkpoint])
            table.add_row(group, *cells, end_section=first.is_mean or None)
        tables.append(table)
    if report.processing:
        table = Table(
            title="everyday processing, mean over groups, at each checkpoint's threshold",
            title_justify="left",
        )
        for title in _processing_header(report):
            table.add_column(title, justify="right")
        for cells in processing_rows(report):
            table.add_row(*cells)
        tables.append(table)
    return tables


def _views(report: EvaluationReport) -> str:
    """', 5 views per image' when the images were scored on several crops, else ''."""
    return f", {report.crops} views per image" if report.crops != 1 else ""


def markdown(report: EvaluationReport) -> str:
    """Paper-ready tables: one per perturbation, AUC / AP / accuracy per checkpoint."""
    names = _short_names(report.checkpoints)
    lines = [f"Test set: `{report.test_root}` ({report.layout}){_views(report)}", ""]
    for perturbation in report.perturbations:
        header = ["group", "real/fake"]
        for checkpoint in report.checkpoints:
            header += [f"{names[checkpoint]} {label}" for _, label in SHOWN]
        lines += [f"**{perturbation}**", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "---|" * len(header))
        for group, by_checkpoint in report.rows_by_group(perturbation).items():
            first = next(iter(by_checkpoint.values()))
            cells = [f"**{group}**" if first.is_mean else group]
            cells.append(f"{first.n_real}/{first.n_fake}")
            for checkpoint in report.checkpoints:
                cells += _shown_cells(by_checkpoint[checkpoint])
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if report.processing:
        header = _processing_header(report)
        lines += [
            "**everyday processing** (mean over groups)",
            "",
            "| " + " | ".join(header) + " |",
        ]
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(cells) + " |" for cells in processing_rows(report)]
        lines.append("")
    return "\n".join(lines)


def results_csv(report: EvaluationReport) -> str:
    """One row per result, the JSON result keys as columns (notes joined by '; ')."""
    from fakedet.evaluation.report import RESULT_KEYS

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(RESULT_KEYS))
    writer.writeheader()
    for result in report.results:
        writer.writerow({**result.to_dict(), "notes": "; ".join(result.notes)})
    return buffer.getvalue()


def evaluate(
    test_root: Annotated[
        Path, typer.Argument(help="Test set: <generator>/{real,fake}, 0_real/1_fake, ...")
    ],
    checkpoints: Annotated[
        list[Path], typer.Argument(help="One or more checkpoint files or output folders.")
    ],
    perturb: Annotated[
        list[str] | None,
        typer.Option(
            "--perturb",
            help="KIND:LEVEL[,LEVEL...], repeatable: jpeg:95,75 blur:1,2 resize:0.5 webp:75 "
            "noise:5. The unperturbed column is always there.",
        ),
    ] = None,
    as_json: JsonOption = False,
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="Write one row per result to this CSV.")
    ] = None,
    markdown_file: Annotated[
        Path | None, typer.Option("--markdown", help="Write paper-ready tables to this file.")
    ] = None,
    plots: Annotated[
        Path | None,
        typer.Option("--plots", help="Write per-group bars and metric-vs-level plots here."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per batch.")] = 32,
    num_workers: WorkersOption = None,
    device: DeviceOption = "auto",
    crops: CropsOption = 1,
    processing: Annotated[
        bool,
        typer.Option(
            "--processing",
            help="Also score every image after everyday processing (JPEG 95/75/60, downscale "
            "0.75/0.5, WebP 80/70, unsharp mask, screenshot, crop to 50%): real photos called "
            "fake, their realness shift, fakes still caught.",
        ),
    ] = False,
    use_csv: Annotated[
        bool,
        typer.Option(
            "--use-csv", help="Labels from labels.csv or test.csv (path,label[,generator])."
        ),
    ] = False,
    explain: Annotated[
        Path | None,
        typer.Option(
            "--explain",
            help="Also write every test image's patch-score map (heatmap PNG and realness grid "
            "JSON) by each checkpoint to DIR/<n>/<group>/, n counting the checkpoints from 0.",
        ),
    ] = None,
) -> None:
    """Score a test set per generator and perturbation: AUC, AP, accuracy, EER, TPR@FPR, ECE.

    Every image is scored (a test set is never split); groups are the folders under TEST_ROOT.
    Several checkpoints share each image's decoding and may have different image sizes.

    Examples:

        fakedet evaluate demo/test runs/fast runs/full

        fakedet evaluate ./testset runs/demo --perturb jpeg:95,75,50 --perturb blur:1,2

        fakedet evaluate ./testset runs/demo --json --csv results.csv --markdown results.md

        fakedet evaluate ./testset runs/demo --processing
    """
    with errors_to_exit_codes():
        from fakedet.evaluation.testset import evaluate_test_set
        from fakedet.io import atomic_write_text

        with progress_bar("evaluate", quiet=as_json) as progress:
            task = progress.add_task("images", total=None)
            report = evaluate_test_set(
                test_root,
                checkpoints,
                perturb or [],
                batch_size,
                num_workers,
                device,
                use_csv,
                on_start=lambda total: progress.update(task, total=total),
                on_images=lambda done: progress.advance(task, done),
                crops=crops,
                processing=processing,
            )
        written = []
        if csv_file is not None:
            atomic_write_text(csv_file, results_csv(report))
            written.append(str(csv_file))
        if markdown_file is not None:
            atomic_write_text(markdown_file, markdown(report))
            written.append(str(markdown_file))
        if plots is not None:
            from fakedet.evaluation.figures import write_evaluate_plots

            written += [str(path) for path in write_evaluate_plots(report, plots)]
        if explain is not None:
            from fakedet.evaluation.testset import explain_test_set

            explain_test_set(test_root, checkpoints, explain, device, use_csv)
            written.append(str(explain))
        if as_json:
            typer.echo(json.dumps(report.to_dict(), indent=2))
            return
        console.print(
            f"{report.test_root} ({report.layout}): {report.images} images in "
            f"{len(report.groups)} group(s), {len(report.checkpoints)} checkpoint(s)"
            f"{_views(report)}",
            highlight=False,
        )
        for table in render_tables(report):
            console.print(table)
        if report.skipped:
            first = report.skipped[0]
            console.print(
                f"{len(report.skipped)} unreadable file(s) skipped, e.g. {first.path}: "
                f"{first.reason}",
                highlight=False,
            )
        if written:
            console.print(f"Wrote {', '.join(written)}", highlight=False, soft_wrap=True)
