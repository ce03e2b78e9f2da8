"""The run's figures: training curves, ROC/PR, confusion matrix, score histogram, hardest images.

matplotlib is imported only here, inside the functions, with the Agg backend (no screen needed).
Each figure is rendered to memory and written atomically, like every other output file.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fakedet.io import atomic_write_bytes

PLOT_FILES = ("curves.png", "roc_pr.png", "confusion.png", "score_hist.png", "hardest.png")
_DPI = 100  # figures are laid out and saved at the same resolution


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _save(figure: Any, path: Path) -> Path:
    buffer = io.BytesIO()
    if figure.get_layout_engine() is None:  # a figure with its own engine (constrained) keeps it
        figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=_DPI)
    _pyplot().close(figure)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(row["epoch"], row[key]) for row in history if row.get(key) is not None]
    return [epoch for epoch, _ in points], [value for _, value in points]


def plot_curves(history: Sequence[dict[str, Any]], path: Path) -> Path:
    """Loss (train and val), val AUC / AP / accuracy, and the LR per epoch."""
    plt = _pyplot()
    figure, (losses, quality, rate) = plt.subplots(1, 3, figsize=(14, 4))
    for key, label in (("train_loss", "train"), ("val_loss", "val")):
        epochs, values = _series(history, key)
        losses.plot(epochs, values, marker="o", label=label)
    losses.set(title="loss", xlabel="epoch")
    losses.legend()
    for key in ("val_auc", "val_ap", "val_accuracy"):
        epochs, values = _series(history, key)
        quality.plot(epochs, values, marker="o", label=key.removeprefix("val_"))
    quality.set(title="validation", xlabel="epoch", ylim=(0, 1.02))
    quality.legend()
    epochs, values = _series(history, "lr")
    rate.plot(epochs, values, marker="o")
    rate.set(title="learning rate (end of epoch)", xlabel="epoch", yscale="log")
    return _save(figure, path)


def plot_roc_pr(scores: np.ndarray, labels: np.ndarray, path: Path) -> Path | None:
    """ROC and precision-recall curves, fake as the positive class (as AUC/AP are reported)."""
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    fake = (labels < 0.5).astype(int)
    if fake.min() == fake.max():
        return None  # one class only: neither curve exists
    fakeness = 1.0 - scores
    plt = _pyplot()
    figure, (roc_axis, pr_axis) = plt.subplots(1, 2, figsize=(10, 4.5))
    false_pos, true_pos, _ = roc_curve(fake, fakeness)
    roc_axis.plot(false_pos, true_pos, label=f"AUC {auc(false_pos, true_pos):.4f}")
    roc_axis.plot([0, 1], [0, 1], linestyle="--", color="grey")
    roc_axis.set(title="ROC (fake = positive)", xlabel="false positive rate", ylabel="recall")
    roc_axis.legend(loc="lower right")
    precision, recall, _ = precision_recall_curve(fake, fakeness)
    ap = average_precision_score(fake, fakeness)
    pr_axis.plot(recall, precision, label=f"AP {ap:.4f}")
    pr_axis.axhline(fake.mean(), linestyle="--", color="grey")
    pr_axis.set(title="precision-recall (fake = positive)", xlabel="recall", ylabel="precision")
    pr_axis.legend(loc="lower left")
    return _save(figure, path)


def plot_confusion(
    scores: np.ndarray, labels: np.ndarray, path: Path, threshold: float = 0.5
) -> Path:
    """Counts of true real/fake against predicted real/fake at `threshold`."""
    from sklearn.metrics import confusion_matrix

    truth = np.where(labels >= 0.5, "real", "fake")
    predicted = np.where(scores >= threshold, "real", "fake")
    matrix = confusion_matrix(truth, predicted, labels=["real", "fake"])
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(4.5, 4))
    axis.imshow(matrix, cmap="Blues")
    for (row, column), count in np.ndenumerate(matrix):
        share = count / max(matrix[row].sum(), 1)
        colour = "white" if count > matrix.max() / 2 else "black"
        axis.text(column, row, f"{count}\n{share:.1%}", ha="center", va="center", color=colour)
    axis.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["real", "fake"],
        yticklabels=["real", "fake"],
        xlabel="predicted",
        ylabel="true",
        title=f"confusion (realness >= {threshold:g} = real)",
    )
    return _save(figure, path)


def plot_score_hist(scores: np.ndarray, labels: np.ndarray, path: Path) -> Path:
    """Realness scores of real and of fake images."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 26)
    for name, mask, colour in (
        ("real", labels >= 0.5, "tab:green"),
        ("fake", labels < 0.5, "tab:red"),
    ):
        axis.hist(
            scores[mask], bins=bins, alpha=0.6, label=f"{name} ({int(mask.sum())})", color=colour
        )
    axis.axvline(0.5, linestyle="--", color="grey")
    axis.set(title="realness score by class", xlabel="realness (1 = real)", ylabel="images")
    axis.legend()
    return _save(figure, path)


def hardest_figure(
    paths: Sequence[str],
    scores: np.ndarray,
    labels: np.ndarray,
    per_class: int = 8,
    caption: str = "",
) -> Any:
    """The most confidently wrong images: fakes scored most real, reals scored most fake."""
    from fakedet.data.transforms import load_rgb

    plt = _pyplot()
    real = np.flatnonzero(labels >= 0.5)
    fake = np.flatnonzero(labels < 0.5)
    rows = [
        ("fake scored most real", fake[np.argsort(-scores[fake])][:per_class]),
        ("real scored most fake", real[np.argsort(scores[real])][:per_class]),
    ]
    columns = max(1, max(len(indices) for _, indices in rows))
    # Constrained layout, not tight_layout: it measures every caption (axes title), row label
    # (subfigure supylabel) and the suptitle with the renderer at draw time and opens the gaps
    # they need. tight_layout pads the grid as a whole, so when a row held fewer images than the
    # columns, that row's captions ran into the images above. One subfigure per row.
    figure = plt.figure(dpi=_DPI, layout="constrained")
    heading = "hardest images (realness score)" + (f"\n{caption}" if caption else "")
    title = figure.suptitle(heading)
    # Nothing keeps a suptitle inside the figure's width: size the figure to the measured text.
    extent = title.get_window_extent(figure.canvas.get_renderer())
    figure.set_size_inches(max(2 * columns, extent.width / _DPI + 0.5), 4.4 + extent.height / _DPI)
    for subfigure, (row_title, indices) in zip(figure.subfigures(2, 1), rows, strict=True):
        subfigure.supylabel(row_title, fontsize="medium")
        axes = subfigure.subplots(1, columns, squeeze=False)[0]
        for axis in axes:
            axis.axis("off")
        if len(indices) == 0:
            axes[0].text(0.5, 0.5, "none", ha="center", va="center", color="grey")
        for axis, index in zip(axes, (int(index) for index in indices), strict=False):
            try:
                image = load_rgb(paths[index])
                image.thumbnail((128, 128))
                axis.imshow(image)
            except (OSError, ValueError):
                axis.text(0.5, 0.5, "unreadable", ha="center", va="center")
            axis.set_title(f"{scores[index]:.3f}\n{Path(paths[index]).name[:18]}", fontsize=7)
    return figure


def plot_hardest(
    paths: Sequence[str],
    scores: np.ndarray,
    labels: np.ndarray,
    path: Path,
    per_class: int = 8,
    caption: str = "",
) -> Path:
    """hardest.png: see `hardest_figure`."""
    return _save(hardest_figure(paths, scores, labels, per_class, caption), path)


def write_evaluation_plots(
    output_dir: Path,
    paths: Sequence[str],
    scores: np.ndarray,
    labels: np.ndarray,
    caption: str = "",
) -> list[Path]:
    """roc_pr.png, confusion.png, score_hist.png and hardest.png for one scored set."""
    if len(scores) == 0:
        return []
    written = [
        plot_roc_pr(scores, labels, output_dir / "roc_pr.png"),
        plot_confusion(scores, labels, output_dir / "confusion.png"),
        plot_score_hist(scores, labels, output_dir / "score_hist.png"),
        plot_hardest(paths, scores, labels, output_dir / "hardest.png", caption=caption),
    ]
    return [path for path in written if path is not None]
