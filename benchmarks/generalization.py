"""The cross-generator protocol: train on some of the demo's fake families, test on others the
detectors never saw, over several seeds, with the spectral baseline beside them.

For each seed: `fakedet demo-data --holdout` at 192 px (held-out up-samplers, the sub-pixel
decoder, a partial fake with masks, denoiser re-synthesis, the test-only hard families, and real
photos after everyday processing), `fakedet train` of each model on 128 px crops, `fakedet
evaluate` on the test set (centre crops; JPEG and blur perturbations unless `--perturb` says
otherwise), and benchmarks/spectral_baseline.py on the same crops. The report is AUC mean ± std
over seeds per family and perturbation (the mean over the families with fakes), and for the
processed reals the share called fake at the stored threshold, as markdown tables.

    python benchmarks/generalization.py --out xgen                      # the protocol (~12 min, 2 cores)
    python benchmarks/generalization.py --out xgen-400 --num-images 400 --epochs 5  # before 0.5.2
    python benchmarks/generalization.py --out xgen --perturb            # clean images only
    python benchmarks/generalization.py --out xgen-old --families before   # the old train mix
    python benchmarks/generalization.py --out xgen-aug -- --blur-prob 0.5 --jpeg-prob 0.5
    python benchmarks/generalization.py --out xgen --report-only        # re-print a finished run
    python benchmarks/generalization.py --out xgen --seeds 3 4 5        # more seeds, same folder
    python benchmarks/generalization.py --out xgen --crops 5            # re-score: 5 views per image

Arguments after `--` go to every `fakedet train` (to measure a change on the protocol).
benchmarks/localisation.py scores the partial fakes' patch maps against their masks.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

# Held-out fakes: two up-samplers, the sub-pixel decoder, a partial fake (with masks), denoiser
# re-synthesis, and the two hard families; plus real photos after everyday processing.
HOLDOUT = (
    "bicubic,pixel_shuffle,subpixel,inpainted,resynthesised,laundered,spectrum_matched,"
    "processed_half,processed_jpeg,processed_resaved"
)
# demo-data's mix before the families of fakedet/demo/families.py (`--families before`).
BEFORE_FAMILIES = "nearest,bilinear,bicubic,transposed_conv,pixel_shuffle"
PERTURB = ("jpeg:75", "blur:1")


def run(command: list[str]) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def one_seed(args: argparse.Namespace, seed: int, train_extra: list[str]) -> None:
    folder = args.out / f"seed{seed}"
    data, runs = folder / "data", folder / "runs"
    fakedet = [sys.executable, "-m", "fakedet"]
    if not (data / "demo_info.json").is_file():
        families = BEFORE_FAMILIES if args.families == "before" else args.families
        mix = ["--families", families] if families else []
        run([*fakedet, "demo-data", str(data), "--num-images", str(args.num_images),
             "--img-size", str(args.data_size), "--holdout", HOLDOUT, "--seed", str(seed),
             *mix])  # fmt: skip
    for model in args.models:
        if (runs / model / "best_model.pt").is_file():
            continue
        run([*fakedet, "train", str(data), "--mode", model, "--img-size", str(args.img_size),
             "--epochs", str(args.epochs), "--lr", str(args.lr), "--seed", str(seed),
             "--output-dir", str(runs / model), "--no-plots", *train_extra])  # fmt: skip
    perturb = [word for spec in args.perturb for word in ("--perturb", spec)]
    # best_model.pt: the epoch with the best val loss, what a user deploys (a run folder alone
    # would mean latest_model.pt).
    checkpoints = [str(runs / model / "best_model.pt") for model in args.models]
    crops = ["--crops", str(args.crops)]
    command = [*fakedet, "evaluate", str(data / "test"), *checkpoints, *perturb, *crops, "--json"]
    print("$", " ".join(command), flush=True)
    evaluated = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    (folder / f"evaluate{suffix(args)}.json").write_text(evaluated, encoding="utf-8")
    if not (folder / f"baseline{suffix(args)}.json").is_file():
        run([sys.executable, str(Path(__file__).with_name("spectral_baseline.py")), str(data),
             str(data / "test"), "--img-size", str(args.img_size), "--perturb", *args.perturb,
             *crops, "--json", str(folder / f"baseline{suffix(args)}.json")])  # fmt: skip


def suffix(args: argparse.Namespace) -> str:
    """Result files per scoring mode, so that --crops 5 re-scores a finished run beside it."""
    return "" if args.crops == 1 else f"-crops{args.crops}"


Table = dict[tuple[str, str, str], list[float]]


def collect(args: argparse.Namespace) -> tuple[Table, Table, Table]:
    """(model, group, perturbation) -> AUC per seed over the groups with fakes (and their mean,
    taken here); -> the share of real images called fake at the stored threshold per seed over
    the processed-real groups; and -> the share of fakes caught at that threshold (a threshold
    that calls fewer processed reals fake also catches fewer fakes: both are shown)."""
    found: Table = {}
    flagged: Table = {}
    caught: Table = {}
    for folder in sorted(args.out.glob("seed*")):
        baseline = folder / f"baseline{suffix(args)}.json"
        if not baseline.is_file():
            continue  # a seed still running
        evaluated = json.loads((folder / f"evaluate{suffix(args)}.json").read_text("utf-8"))
        rows = [
            {**row, "model": Path(row["checkpoint"]).parent.name}  # runs/<model>/best_model.pt
            for row in evaluated["results"]
        ]
        rows += [
            {**row, "model": "spectral baseline"}
            for row in json.loads(baseline.read_text(encoding="utf-8"))
        ]
        means: dict[tuple[str, str], list[float]] = {}
        caught_means: dict[tuple[str, str], list[float]] = {}
        for row in rows:
            key = (row["model"], row["group"], row["perturbation"])
            if row["group"] == "mean":
                continue
            if row["group"].startswith("processed_"):
                # A "too small" image has no verdict: it is not counted as called fake.
                flagged.setdefault(key, []).append(1.0 - row["real_acc"])
            elif row["auc"] is not None:
                found.setdefault(key, []).append(row["auc"])
                means.setdefault((row["model"], row["perturbation"]), []).append(row["auc"])
                if row.get("fake_acc") is not None:  # the baseline has no stored threshold
                    caught.setdefault(key, []).append(row["fake_acc"])
                    pair = (row["model"], row["perturbation"])
                    caught_means.setdefault(pair, []).append(row["fake_acc"])
        for target, per_pair in ((found, means), (caught, caught_means)):
            for (model, perturbation), values in per_pair.items():
                target.setdefault((model, "mean", perturbation), []).append(statistics.mean(values))
    return found, flagged, caught


def report(found: dict[tuple[str, str, str], list[float]], caption: str) -> str:
    models = list(dict.fromkeys(model for model, _, _ in found))
    groups = sorted({group for _, group, _ in found if group != "mean"})
    groups += ["mean"] if any(group == "mean" for _, group, _ in found) else []
    perturbations = list(dict.fromkeys(p for _, _, p in found))
    lines = [
        "| model | perturbation | " + " | ".join(groups) + " |",
        "|---|---|" + "---|" * len(groups),
    ]
    for model in models:
        for perturbation in perturbations:
            cells = []
            for group in groups:
                values = found.get((model, group, perturbation), [])
                if not values:
                    cells.append("-")
                    continue
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                cells.append(f"{statistics.mean(values):.3f} ± {spread:.3f}")
            lines.append(f"| {model} | {perturbation} | " + " | ".join(cells) + " |")
    seeds = max(len(values) for values in found.values())
    return "\n".join(lines) + f"\n\n{caption}, mean ± std over {seeds} seed(s)."


def main() -> None:
    argv = sys.argv[1:]
    train_extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for data, runs, results")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["fast", "full"])
    parser.add_argument(
        "--num-images",
        type=int,
        default=1200,
        help="demo images per seed (1200 since 0.5.2: seeds agree ten times more closely than "
        "at 400, the earlier default; --num-images 400 --epochs 5 repeats earlier figures)",
    )
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument(
        "--data-size",
        type=int,
        default=192,
        help="side of the demo's images; larger than --img-size, as in real datasets, so "
        "training crops move and a down-scale augmentation has room",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=10,
        help="training epochs (10 since 0.5.2, 5 before; `fakedet train` defaults to 50 with "
        "early stopping)",
    )
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--crops",
        type=int,
        default=1,
        choices=(1, 5),
        help="views per test image for the detectors and the baseline alike (evaluate --crops)",
    )
    parser.add_argument(
        "--families",
        default="",
        help="demo-data --families for train and val ('before': the up-samplers alone, the "
        "mix before partial, denoiser and sub-pixel fakes; default: demo-data's)",
    )
    parser.add_argument(
        "--perturb",
        nargs="*",
        default=list(PERTURB),
        help="perturbations besides none, for evaluate and the baseline (none given: clean only)",
    )
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    if not args.report_only:
        for seed in args.seeds:
            one_seed(args, seed, train_extra)
    found, flagged, caught = collect(args)
    text = "\n\n".join(
        [
            report(found, "AUC"),
            report(flagged, "Real images called fake at the stored threshold"),
            report(caught, "Fakes caught at the stored threshold"),
        ]
    )
    (args.out / f"report{suffix(args)}.md").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
