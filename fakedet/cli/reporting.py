"""The rich console reporter the CLI hands to the engine: progress bars in a terminal, plain lines
when the output is a file or a pipe (CI logs stay readable)."""

from __future__ import annotations

import math
import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from fakedet.cli.base import printable
from fakedet.cli.doctor import render_findings
from fakedet.training.logging import Reporter


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


# Order of the validation metrics in every table (training summary, validate, inspect).
METRIC_ORDER = (
    "loss", "regression", "classification", "ranking", "accuracy", "real_acc", "fake_acc",
    "auc", "ap", "ece", "ece_raw",
)  # fmt: skip


def metrics_table(title: str, metrics: dict[str, Any]) -> Table:
    """Metrics (bare or val_-prefixed names) in METRIC_ORDER, others after; "-" for missing."""

    def rank(name: str) -> int:
        bare = name.removeprefix("val_")
        return METRIC_ORDER.index(bare) if bare in METRIC_ORDER else len(METRIC_ORDER)

    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in sorted(metrics, key=rank):
        table.add_row(name, _fmt(metrics[name]))
    return table


class ConsoleReporter(Reporter):
    """Renders the engine's events on a rich Console."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self._last_plain = 0.0

    def warning(self, text: str) -> None:
        self.console.print(
            f"[yellow]warning:[/] {escape(printable(text))}", highlight=False, soft_wrap=True
        )

    def info(self, text: str) -> None:
        self.console.print(text, highlight=False, soft_wrap=True)

    def dataset(self, summary: dict[str, Any]) -> None:
        table = Table(
            title=f"Dataset: {summary['layout']} (val: {summary['val_source']})",
            title_justify="left",
        )
        for column in ("split", "real", "fake", "total"):
            table.add_column(column, justify="right" if column != "split" else "left")
        for split, counts in summary["splits"].items():
            table.add_row(split, str(counts["real"]), str(counts["fake"]), str(counts["total"]))
        self.console.print(table)
        if summary["skipped"]:
            self.warning(f"{summary['skipped']} unreadable file(s) skipped (see skipped_files.txt)")

    def run_start(self, info: dict[str, Any]) -> None:
        self.console.print(
            f"Training [bold]{info['model']}[/] ({info['parameters'] / 1e6:.2f}M params) on "
            f"{info['device']}, {info['precision']}, {info['img_size']} px; batch {info['batch_size']} x "
            f"{info['accumulation']} accumulation = effective batch {info['effective_batch']}; "
            f"{info['steps_per_epoch']} steps/epoch; epochs {info['start_epoch']}..{info['epochs']}; "
            f"workers {info['num_workers']}"
            + (f"; {info['processes']} processes (DDP)" if info.get("processes", 1) > 1 else "")
            + f"; output {info['output_dir']}",
            highlight=False,
            soft_wrap=True,
        )

    def epoch_start(self, epoch: int, epochs: int, num_batches: int) -> None:
        self._epoch_label = f"epoch {epoch}/{epochs}"
        self._num_batches = num_batches
        if not self.live:
            return
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[speed]} img/s"
            ),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            self._epoch_label, total=num_batches, loss="-", lr="-", speed="-"
        )

    def batch_end(self, done: int, values: dict[str, float]) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(
                self.task,
                completed=done,
                loss=f"{values['loss']:.4f}",
                lr=f"{values['lr']:.2e}",
                speed=f"{values['img_per_s']:.1f}",
            )
            return
        now = time.monotonic()
        if now - self._last_plain >= 30 or done == self._num_batches:
            self._last_plain = now
            self.console.print(
                f"{self._epoch_label} batch {done}/{self._num_batches} loss {values['loss']:.4f} "
                f"lr {values['lr']:.2e} {values['img_per_s']:.1f} img/s",
                highlight=False,
                soft_wrap=True,
            )

    def validation_start(self, num_batches: int) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, description=f"{self._epoch_label} (validating)")

    def epoch_end(self, epoch: int, row: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        columns = [
            ("train_loss", "train loss"),
            ("val_loss", "val loss"),
            ("val_accuracy", "val acc"),
            ("val_auc", "val AUC"),
            ("val_ap", "val AP"),
            ("lr", "lr"),
            ("images_per_sec", "img/s"),
        ]
        if self.live:
            table = Table(title=f"epoch {epoch}", title_justify="left", show_edge=False)
            for _, header in columns:
                table.add_column(header, justify="right")
            table.add_row(*[self._cell(key, row.get(key)) for key, _ in columns])
            self.console.print(table)
        else:
            parts = [f"{header} {self._cell(key, row.get(key))}" for key, header in columns]
            self.console.print(
                f"epoch {epoch}: " + ", ".join(parts), highlight=False, soft_wrap=True
            )

    @staticmethod
    def _cell(key: str, value: Any) -> str:
        if key == "lr" and isinstance(value, float):
            return f"{value:.2e}"
        if key == "images_per_sec" and isinstance(value, float):
            return f"{value:.1f}"
        return _fmt(value)

    def run_end(self, result: dict[str, Any]) -> None:
        best = result["best_metrics"]
        table = metrics_table(
            f"Best epoch {result['best_epoch']} ({result['stop_reason']})",
            {f"val_{name}": best.get(f"val_{name}") for name in METRIC_ORDER if name[:3] != "ece"},
        )
        self.console.print(table)
        if result.get("calibration"):
            self.console.print(f"Calibration: {result['calibration']}", highlight=False)
        if result["nonfinite_steps"]:
            self.warning(
                f"{result['nonfinite_steps']} optimizer step(s) skipped for non-finite values"
            )
        self.console.print(
            f"Outputs in {result['output_dir']}: best_model.pt, latest_model.pt, "
            f"training_history.json{''.join(', ' + name for name in result.get('plots', []))}",
            highlight=False,
            soft_wrap=True,
        )
        render_findings(self.console, result.get("findings", []))
