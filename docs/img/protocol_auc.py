"""Draws protocol_auc.png: per-family AUC of the cross-generator protocol against the spectral
baseline, from the table in docs/protocol.md (seeds 0-2, centre crops, no perturbation).

Run from the repository root: `python docs/img/protocol_auc.py`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

FAMILIES = ["bicubic", "laundered", "pixel_shuffle", "spectrum_matched", "mean"]
# (mean AUC, std over seeds 0, 1, 2) per family, copied from docs/protocol.md's first table.
RESULTS = {
    "fast": [(0.997, 0.006), (0.911, 0.026), (0.992, 0.014), (0.983, 0.029), (0.971, 0.017)],
    "full": [(0.998, 0.004), (0.918, 0.024), (0.995, 0.009), (0.991, 0.015), (0.975, 0.013)],
    "spectral baseline": [
        (0.929, 0.123),
        (0.907, 0.122),
        (0.714, 0.046),
        (0.567, 0.059),
        (0.779, 0.065),
    ],
}
COLOURS = {"fast": "#1f77b4", "full": "#2ca02c", "spectral baseline": "#999999"}


def main() -> None:
    figure, axes = plt.subplots(figsize=(8, 3.6), dpi=100)
    width = 0.26
    for offset, (name, rows) in enumerate(RESULTS.items()):
        positions = [index + (offset - 1) * width for index in range(len(FAMILIES))]
        means = [mean for mean, _ in rows]
        stds = [std for _, std in rows]
        axes.bar(positions, means, width, yerr=stds, capsize=3, label=name, color=COLOURS[name])
    axes.set_xticks(range(len(FAMILIES)), FAMILIES)
    axes.set_ylim(0.4, 1.1)
    axes.set_yticks([0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    axes.set_ylabel("AUC (mean ± std, seeds 0-2)")
    axes.axhline(0.5, color="black", linewidth=0.8, linestyle="--")
    axes.text(len(FAMILIES) - 0.5, 0.505, "chance", ha="right", va="bottom", fontsize=8)
    axes.legend(loc="upper center", ncol=3, frameon=False, bbox_to_anchor=(0.5, 1.12))
    axes.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    figure.savefig(Path(__file__).with_suffix(".png"))


if __name__ == "__main__":
    main()
