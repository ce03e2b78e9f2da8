"""Draws protocol_auc.png: per-family AUC of the cross-generator protocol against the spectral
baseline, from the README's table (seeds 0-2, centre crops, no perturbation).

Run from the repository root: `python docs/img/protocol_auc.py`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

FAMILIES = [
    "bicubic",
    "inpainted",
    "laundered",
    "pixel_shuffle",
    "resynthesised",
    "spectrum_matched",
    "subpixel",
    "mean",
]
# (mean AUC, std over seeds 0, 1, 2) per family, copied from the README's table (clean images;
# `python benchmarks/generalization.py --out xgen`, fakedet 0.5.1, 2026-12-04).
RESULTS = {
    "fast": [
        (0.980, 0.034),
        (0.637, 0.204),
        (0.830, 0.065),
        (0.995, 0.008),
        (0.701, 0.150),
        (0.891, 0.107),
        (0.952, 0.080),
        (0.855, 0.087),
    ],
    "full": [
        (0.998, 0.004),
        (0.780, 0.134),
        (0.788, 0.067),
        (1.000, 0.000),
        (0.787, 0.107),
        (0.992, 0.014),
        (0.989, 0.018),
        (0.905, 0.047),
    ],
    "spectral baseline": [
        (0.895, 0.119),
        (0.646, 0.155),
        (0.812, 0.104),
        (0.866, 0.100),
        (0.705, 0.117),
        (0.420, 0.064),
        (0.750, 0.191),
        (0.728, 0.099),
    ],
}
COLOURS = {"fast": "#1f77b4", "full": "#2ca02c", "spectral baseline": "#999999"}


def main() -> None:
    figure, axes = plt.subplots(figsize=(10, 3.6), dpi=100)
    width = 0.26
    for offset, (name, rows) in enumerate(RESULTS.items()):
        positions = [index + (offset - 1) * width for index in range(len(FAMILIES))]
        means = [mean for mean, _ in rows]
        stds = [std for _, std in rows]
        axes.bar(positions, means, width, yerr=stds, capsize=3, label=name, color=COLOURS[name])
    axes.set_xticks(range(len(FAMILIES)), FAMILIES, fontsize=8)
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
