"""`fakedet audit`: what a dataset is made of, its shortcuts and its leaks, as tables or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from fakedet.cli.base import (
    JsonOption,
    console,
    error_console,
    errors_to_exit_codes,
    print_json,
    progress_bar,
)
from fakedet.errors import DataError


def _range(quartiles: list[float] | None) -> str:
    if quartiles is None:
        return "-"
    low, median, high = (f"{value:g}" for value in quartiles)
    return median if low == high else f"{low}/{median}/{high}"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items()) or "-"


def _render(audit: dict[str, Any], data_root: Path) -> None:
    table = Table(title=f"Audit of {data_root} (quartiles q1/median/q3)", title_justify="left")
    for column in ("split", "class", "count", "formats", "JPEG quality", "width", "height"):
        table.add_column(column, justify="right" if column == "count" else "left")
    table.add_column("modes")
    for split, classes in audit["splits"].items():
        for name, facts in classes.items():
            table.add_row(
                split,
                name,
                str(facts["count"]),
                _counts(facts["formats"]),
                _range(facts["jpeg_quality"]),
                _range(facts["width"]),
                _range(facts["height"]),
                _counts(facts["modes"]),
            )
    console.print(table)
    shortcuts = Table(title="Shortcuts (train AUC)", title_justify="left")
    shortcuts.add_column("feature")
    shortcuts.add_column("AUC", justify="right")
    shortcuts.add_column("shortcut")
    for entry in audit["shortcuts"]:
        auc = "-" if entry["auc"] is None else f"{entry['auc']:.3f}"
        shortcuts.add_row(entry["feature"], auc, "[bold red]yes[/]" if entry["warning"] else "no")
    console.print(shortcuts)
    duplicated = audit["duplicates"]
    console.print(
        f"Identical files: {duplicated['train_val']} in train and val, "
        f"{duplicated['cross_class']} under both labels.",
        highlight=False,
    )
    for warning in audit["warnings"]:
        console.print(f"[bold yellow]Warning:[/] {escape(warning)}", highlight=False)
    if not audit["warnings"]:
        console.print("[green]No shortcut or duplicate found.[/]")


def audit(
    data_root: Annotated[Path, typer.Argument(help="The dataset folder (any layout train reads).")],
    json_output: JsonOption = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 2 on any warning (datasets checked in CI).")
    ] = False,
    use_csv: Annotated[
        bool, typer.Option("--use-csv", help="Read labels from train.csv/val.csv or labels.csv.")
    ] = False,
) -> None:
    """Audit a dataset: formats, JPEG qualities, sizes and modes per split and class; features
    that alone tell real from fake (shortcuts); identical files across splits or labels.

    The index is cached in DATA_ROOT/.fakedet/ (or the user's cache folder), so a second audit
    reads only added or changed files. Examples:

        fakedet audit demo

        fakedet audit data --json --strict   # in CI: exit 2 on any warning
    """
    with errors_to_exit_codes():
        from fakedet.config import TrainingConfig
        from fakedet.data.audit import audit_index
        from fakedet.sources.layouts import build_index

        defaults = TrainingConfig.model_fields
        index = build_index(
            data_root,
            use_csv,
            defaults["val_split"].default,
            defaults["seed"].default,
            allow_test_set=True,
        )
        with progress_bar("audit", error_console) as progress:
            task = progress.add_task("files", total=None)
            result = audit_index(
                index,
                data_root,
                with_hash=True,
                on_note=lambda note: error_console.print(escape(note), highlight=False),
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        if json_output:
            print_json(result)
        else:
            _render(result, data_root)
        if strict and result["warnings"]:
            raise DataError(
                f"--strict: the audit of {data_root} found {len(result['warnings'])} warning(s): "
                + " ".join(result["warnings"])
            )
