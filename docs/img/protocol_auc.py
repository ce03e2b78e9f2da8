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
# `python benchmarks/generalization.py --out xgen`, fakedet 0.7.0, 2026-12-05).
RESULTS = {
    "fast": [
        (1.000, 0.000),
        (0.936, 0.015),
        (0.781, 0.095),
        (1.000, 0.000),
        (0.961, 0.048),
        (0.999, 0.002),
        (0.998, 0.003),
        (0.954, 0.018),
    ],
    "full": [
        (1.000, 0.000),
        (0.879, 0.080),
        (0.845, 0.151),
        (1.000, 0.000),
        (0.867, 0.105),
        (0.999, 0.002),
        (1.000, 0.000),
        (0.941, 0.039),
    ],
    "spectral baseline": [
        (0.913, 0.100),
        (0.670, 0.144),
        (0.823, 0.070),
        (0.862, 0.115),
        (0.702, 0.146),
        (0.435, 0.066),
        (0.720, 0.217),
        (0.732, 0.096),
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
