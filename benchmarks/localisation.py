"""Localisation of partial fakes: how well a detector's patch-score map finds the generated
region, against the masks `fakedet demo-data` writes (`OUT/masks/test/<family>/<name>.png`).

For each checkpoint and each partial family held out under `DATA/test/` (spliced, inpainted),
every fake image is scored at its native size, two ways: the model's own patch read
(fakedet.inference.explain.own_patch_maps, when it has one) and native-pixel patches scored one
by one (`explain_maps`, patch 64, stride 32). Each map, on the image's pixels, is compared with
the mask: pixel AUC (suspicion = 1 - realness ranking mask pixels above the rest, over all
pixels of the family's fakes) and IoU of the pixels called fake (realness < 0.5) with the mask
(mean over images).

    python benchmarks/localisation.py D R/fast/best_model.pt R/full/best_model.pt --json loc.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from fakedet.data.transforms import load_rgb
from fakedet.demo.families import PARTIAL_FAMILIES
from fakedet.inference.explain import cells_to_pixels, explain_maps, own_patch_maps, pixel_map
from fakedet.inference.predictor import load_detector

PATCH, STRIDE = 64, 32


def scores(maps: list[np.ndarray], masks: list[np.ndarray]) -> dict[str, float]:
    suspicion = np.concatenate([1.0 - m.ravel() for m in maps])
    inside = np.concatenate([m.ravel() for m in masks])
    ious = []
    for realness, mask in zip(maps, masks, strict=True):
        called, truth = realness < 0.5, mask
        union = (called | truth).sum()
        ious.append((called & truth).sum() / union if union else 1.0)
    return {"pixel_auc": float(roc_auc_score(inside, suspicion)), "iou": float(np.mean(ious))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data_root", type=Path, help="a demo-data folder with masks/test/")
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    rows = []
    for checkpoint in args.checkpoints:
        model, _ = load_detector(checkpoint, args.device)
        device = next(model.parameters()).device
        for family in PARTIAL_FAMILIES:
            fakes = sorted((args.data_root / "test" / family / "fake").glob("*.png"))
            if not fakes:
                continue
            found: dict[str, list[np.ndarray]] = {"own": [], "patches": []}
            masks = []
            for path in fakes:
                mask_path = args.data_root / "masks" / "test" / family / path.name
                with Image.open(mask_path) as mask:
                    masks.append(np.asarray(mask) > 127)
                pixels = np.asarray(load_rgb(str(path)), dtype=np.float32) / 255.0
                image = torch.from_numpy(pixels).permute(2, 0, 1)[None].to(device)
                height, width = pixels.shape[:2]
                own = own_patch_maps(model, image)
                if own is not None:
                    found["own"].append(cells_to_pixels(own[0], height, width))
                patches = explain_maps(model, image, PATCH, STRIDE)[0]
                found["patches"].append(pixel_map(patches, height, width, PATCH, STRIDE))
            for kind, maps in found.items():
                if maps:
                    row = {"checkpoint": str(checkpoint), "family": family, "map": kind}
                    rows.append({**row, **scores(maps, masks), "images": len(maps)})
                    print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
