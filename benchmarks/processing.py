"""Does training with the everyday-processing augmentation lower the share of processed real
photos called fake, without losing AUC? The demo holdout over several seeds.

For each seed: `fakedet demo-data --holdout` (held-out up-sampling families and laundered fakes,
from photos the runs never saw), two `fakedet train` runs that differ only in
`processing_probs` (none, or every kind at --probability), and `fakedet evaluate --processing`
of both best models on the test set. The report is mean ± std over seeds of the unprocessed AUC
and FPR, the FPR and AUC averaged over the processing kinds, and the FPR per kind.

    python benchmarks/processing.py --out proc                 # 3 seeds, 64 px, 6 epochs
    python benchmarks/processing.py --out proc --report-only   # re-print a finished run
    python benchmarks/processing.py --out proc -- --use-amp    # after --: to every train
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

HOLDOUT = "bicubic,pixel_shuffle,laundered"
ARMS = ("baseline", "processing")


def run(command: list[str]) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def one_seed(args: argparse.Namespace, seed: int, train_extra: list[str]) -> None:
    from fakedet.data.processing import SUITE

    folder = args.out / f"seed{seed}"
    data = folder / "data"
    fakedet = [sys.executable, "-m", "fakedet"]
    if not (data / "demo_info.json").is_file():
        run([*fakedet, "demo-data", str(data), "--num-images", str(args.num_images),
             "--img-size", str(args.data_size), "--holdout", HOLDOUT, "--seed", str(seed)])  # fmt: skip
    for arm in ARMS:
        output = folder / arm
        if (output / "best_model.pt").is_file():
            continue
        probabilities = (
            {kind.label: args.probability for kind in SUITE} if arm != "baseline" else {}
        )
        settings = folder / f"{arm}.yaml"
        settings.write_text(yaml.safe_dump({"processing_probs": probabilities}), encoding="utf-8")
        run([*fakedet, "train", str(data), "--config", str(settings), "--img-size",
             str(args.img_size), "--epochs", str(args.epochs), "--lr", str(args.lr), "--seed",
             str(seed), "--output-dir", str(output), "--num-workers", str(args.num_workers),
             "--no-plots", "--no-use-tensorboard", *train_extra])  # fmt: skip
    result = folder / "evaluate.json"
    if not result.is_file():
        checkpoints = [str(folder / arm / "best_model.pt") for arm in ARMS]
        command = [*fakedet, "evaluate", str(data / "test"), *checkpoints, "--processing",
                   "--num-workers", str(args.num_workers), "--json"]  # fmt: skip
        print("$", " ".join(command), flush=True)
        report = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        result.write_text(report, encoding="utf-8")


def _spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def report(args: argparse.Namespace) -> str:
    """The markdown tables over every finished seed."""
    per_arm: dict[str, dict[str, list[float]]] = {arm: {} for arm in ARMS}
    seeds = []
    for seed in args.seeds:
        path = args.out / f"seed{seed}" / "evaluate.json"
        if not path.is_file():
            continue
        seeds.append(seed)
        evaluated = json.loads(path.read_text(encoding="utf-8"))
        for arm, checkpoint in zip(ARMS, evaluated["checkpoints"], strict=True):
            means = {
                row["perturbation"]: row
                for row in evaluated["results"]
                if row["group"] == "mean" and row["checkpoint"] == checkpoint
            }
            figures = per_arm[arm]
            processed = [means[kind] for kind in evaluated["processing"]]
            found = {
                "AUC, unprocessed": means["none"]["auc"],
                "FPR, unprocessed": means["none"]["fpr"],
                "AUC, processed (mean of kinds)": statistics.mean(r["auc"] for r in processed),
                "FPR, processed (mean of kinds)": statistics.mean(r["fpr"] for r in processed),
                "FPR, processed (worst kind)": max(r["fpr"] for r in processed),
                "fakes caught, processed (mean)": statistics.mean(r["fake_acc"] for r in processed),
            }
            found.update(
                {f"FPR {kind.removeprefix('processing:')}": means[kind]["fpr"] for kind in means}
            )
            for name, value in found.items():
                figures.setdefault(name, []).append(value)
    if not seeds:
        return "no finished seed"
    lines = [
        f"Demo holdout ({HOLDOUT}), seeds {', '.join(map(str, seeds))}: mean ± std over seeds, "
        f"mean over test groups, at each checkpoint's stored threshold.",
        "",
        "| figure | " + " | ".join(ARMS) + " |",
        "|---|" + "---|" * len(ARMS),
    ]
    for name in per_arm[ARMS[0]]:
        cells = [_spread(per_arm[arm][name]) for arm in ARMS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num-images", type=int, default=800)
    parser.add_argument("--data-size", type=int, default=128, help="demo image side")
    parser.add_argument("--img-size", type=int, default=64, help="training crop")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--probability", type=float, default=0.1, help="of each kind")
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--report-only", action="store_true")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    own, train_extra = argv[:split], argv[split + 1 :]
    args = parser.parse_args(own)
    if not args.report_only:
        for seed in args.seeds:
            one_seed(args, seed, train_extra)
    print(report(args))


if __name__ == "__main__":
    main()
