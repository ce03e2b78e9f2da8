"""`fakedet evaluate --plots`: an EvaluationReport drawn as per-group bars and, per perturbation
kind, mean metrics against the level (matplotlib deferred, as in `fakedet.plots`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fakedet.evaluation.report import UNPERTURBED, EvaluationReport
from fakedet.io import ensure_folder
from fakedet.plots import _pyplot, _save


def _short(name: str) -> str:
    path = Path(name)
    return "/".join(path.parts[-2:]) if path.name.endswith(".pt") else path.name


def plot_group_bars(report: EvaluationReport, path: Path) -> Path:
    """Unperturbed AP and accuracy per group (bars), one bar per checkpoint in each group."""
    plt = _pyplot()
    table = report.rows_by_group(UNPERTURBED)
    groups = list(table)
    checkpoints = report.checkpoints
    width = 0.8 / len(checkpoints)
    figure, axes = plt.subplots(2, 1, figsize=(max(6.0, 1.0 + 0.9 * len(groups)), 6.5))
    for ax, metric in zip(axes, ("ap", "accuracy"), strict=True):
        for number, checkpoint in enumerate(checkpoints):
            values = [getattr(table[group][checkpoint], metric) for group in groups]
            positions = np.arange(len(groups)) + (number - (len(checkpoints) - 1) / 2) * width
            heights = [np.nan if value is None else value for value in values]
            ax.bar(positions, heights, width, label=_short(checkpoint))
        ax.set_xticks(np.arange(len(groups)), groups, rotation=30, ha="right")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("AP (fake = positive)" if metric == "ap" else "accuracy")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize="small")
    axes[0].set_title(f"per group, unperturbed: {report.test_root}")
    return _save(figure, path)


def plot_robustness(report: EvaluationReport, kind: str, path: Path) -> Path:
    """Mean AUC, AP and accuracy against the level of one perturbation kind, per checkpoint;
    the unperturbed value is the dashed line."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for ax, metric in zip(axes, ("auc", "ap", "accuracy"), strict=True):
        for number, checkpoint in enumerate(report.checkpoints):
            at_level = [
                (level, getattr(report.mean_row(name, checkpoint), metric))
                for level, name in report.levels_of(kind)
            ]
            points = sorted((level, value) for level, value in at_level if value is not None)
            color = f"C{number}"
            ax.plot([x for x, _ in points], [y for _, y in points], "o-", color=color,
                    label=_short(checkpoint))  # fmt: skip
            clean = getattr(report.mean_row(UNPERTURBED, checkpoint), metric)
            if clean is not None:
                ax.axhline(clean, color=color, linestyle="--", alpha=0.6)
        ax.set_xlabel(f"{kind} level")
        ax.set_ylabel(f"mean {metric}")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
        if kind in ("jpeg", "webp"):
            ax.invert_xaxis()  # lower quality = stronger perturbation, to the right
    axes[0].legend(fontsize="small")
    figure.suptitle(f"{kind}: mean over groups (dashed: unperturbed)")
    return _save(figure, path)


def write_evaluate_plots(report: EvaluationReport, folder: Path) -> list[Path]:
    """groups.png and robustness_<kind>.png per `--perturb` kind used, in `folder`."""
    ensure_folder(folder)
    written = [plot_group_bars(report, folder / "groups.png")]
    for kind in report.perturbation_kinds():
        written.append(plot_robustness(report, kind, folder / f"robustness_{kind}.png"))
    return written
