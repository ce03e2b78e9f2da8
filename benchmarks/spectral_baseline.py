"""The spectral baseline: the azimuthally averaged log amplitude spectrum of each image, fed to a
logistic regression (scikit-learn), trained on a dataset's train split and scored per group of
a test set under the same perturbations `fakedet evaluate` applies.

It is the classic frequency-domain detector (Durall et al. 2020, "Watch your up-convolution"):
up-sampling leaves its mark in the radial spectrum's high frequencies. Every README table of
the cross-generator protocol has it as a row.

    python benchmarks/spectral_baseline.py demo demo/test --img-size 128 --perturb jpeg:75 blur:1
    python benchmarks/spectral_baseline.py demo demo/test --json baseline.json
    python benchmarks/spectral_baseline.py demo demo/test --crops 5   # centre + corners, as evaluate
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fakedet.data.perturb import Perturbation, parse_perturbations
from fakedet.data.transforms import EvalTransform, load_rgb
from fakedet.evaluation.metrics import detection_metrics
from fakedet.sources.layouts import build_index, discover_test_set

# Profile length: rings of a 128 px crop. Smaller images (scored at their native size, never
# up-scaled) have fewer rings, read at the same fractions of the band.
PROFILE_BINS = 64


def radial_log_spectrum(image: Image.Image) -> np.ndarray:
    """Mean log amplitude of the grey image's 2-D spectrum in PROFILE_BINS rings from DC (left
    out) to the band's edge."""
    grey = np.asarray(image.convert("L"), np.float64)
    grey = grey - grey.mean()
    amplitude = np.abs(np.fft.fftshift(np.fft.fft2(grey)))
    height, width = grey.shape
    y, x = np.indices((height, width))
    radius = np.rint(np.hypot(y - height // 2, x - width // 2)).astype(np.int64)
    inside = radius <= min(height, width) // 2
    sums = np.bincount(radius[inside], np.log(amplitude[inside] + 1e-8))
    counts = np.bincount(radius[inside])
    profile = (sums / np.maximum(counts, 1))[1:]
    rings = np.linspace(0.0, 1.0, len(profile))
    return np.interp(np.linspace(0.0, 1.0, PROFILE_BINS), rings, profile)


def features(
    paths: list[str], img_size: int, perturbation: Perturbation, crops: int = 1
) -> np.ndarray:
    """(images, crops, bins): the radial spectrum of each view `fakedet evaluate` scores."""
    crop = EvalTransform(img_size, crops)
    rows = []
    for path in paths:
        image = perturbation.apply(load_rgb(path), key=path)
        pixels = crop(image)  # uint8, as evaluate crops; smaller images at their own size
        views = pixels.view(crops, *pixels.shape[-3:])
        rows.append(
            [radial_log_spectrum(Image.fromarray(v.permute(1, 2, 0).numpy())) for v in views]
        )
    return np.array(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data_root", type=Path, help="dataset whose train split fits the model")
    parser.add_argument("test_root", type=Path, help="test set, scored per group")
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--perturb", nargs="*", default=[], help="e.g. jpeg:75 blur:1")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument(
        "--crops", type=int, default=1, choices=(1, 5), help="views per test image, as evaluate's"
    )
    args = parser.parse_args()

    index = build_index(args.data_root, False, 0.1, 42)
    train_x = features([s.path for s in index.train], args.img_size, Perturbation("none"))[:, 0]
    train_y = np.array([s.label >= 0.5 for s in index.train], int)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    model.fit(train_x, train_y)

    test_set = discover_test_set(args.test_root)
    rows = []
    for perturbation in parse_perturbations(list(args.perturb)):
        x = features([s.path for s in test_set.samples], args.img_size, perturbation, args.crops)
        # The views' decision values (logits) averaged, as `fakedet evaluate --crops` does.
        logits = model.decision_function(x.reshape(-1, x.shape[-1])).reshape(x.shape[:2])
        realness = 1 / (1 + np.exp(-logits.mean(axis=1)))
        labels = np.array([s.label for s in test_set.samples])
        groups = np.array([s.group for s in test_set.samples])
        aucs = []
        for group in test_set.groups:
            mask = groups == group
            auc = detection_metrics(realness[mask], labels[mask])["auc"]
            is_real = labels[mask] >= 0.5
            # At the regression's own threshold, 0.5: the share of real images kept real.
            real_acc = float((realness[mask][is_real] >= 0.5).mean()) if is_real.any() else None
            row = {"group": group, "perturbation": perturbation.name, "real_acc": real_acc}
            rows.append({**row, "auc": None if np.isnan(auc) else auc})
            if not np.isnan(auc):
                aucs.append(auc)
        rows.append(
            {"group": "mean", "perturbation": perturbation.name, "auc": float(np.mean(aucs))}
        )
    for row in rows:
        auc = "-" if row["auc"] is None else f"{row['auc']:.3f}"
        print(f"{row['perturbation']:>10} {row['group']:>18} AUC {auc}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
