"""`fakedet evaluate` speed: against `fakedet validate` on the same images and checkpoint, and
K checkpoints in one call against K single calls. Interleaved repetitions, medians, ratios.

    python benchmarks/evaluate.py --images 400 --img-size 128 --checkpoints 3 --repeats 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fakedet.config import TrainingConfig
from fakedet.demo.dataset import build_demo_dataset
from fakedet.evaluation.labelled import validate_checkpoint
from fakedet.evaluation.testset import evaluate_test_set
from fakedet.training import run


def seconds(function: object, *args: object, **kwargs: object) -> float:
    started = time.perf_counter()
    function(*args, **kwargs)  # type: ignore[operator]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--mode", default="fast")
    parser.add_argument("--checkpoints", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {vars(args)}")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "demo"
        build_demo_dataset(root, num_images=args.images, img_size=args.img_size)
        config = TrainingConfig(
            data_root=root,
            output_dir=Path(scratch) / "run",
            mode=args.mode,
            img_size=args.img_size,
            epochs=1,
            batch_size=args.batch_size,
            num_workers=0,
            use_tensorboard=False,
            plots=False,
            device="cpu",
        )
        run.train(config)  # one epoch: the weights do not change the speed, only make a file
        checkpoint = Path(scratch) / "run" / "latest_model.pt"
        copies = [checkpoint]
        for number in range(1, args.checkpoints):
            copy = Path(scratch) / f"copy{number}.pt"
            shutil.copy(checkpoint, copy)
            copies.append(copy)
        common = {"batch_size": args.batch_size, "num_workers": args.workers, "device": "cpu"}
        # Warm-up: imports, allocator, page cache.
        evaluate_test_set(root, [checkpoint], **common)
        validate_checkpoint(checkpoint, root, "all", "cpu", args.batch_size, args.workers)
        ratios, multi = [], []
        for repetition in range(args.repeats):
            validate_s = seconds(
                validate_checkpoint, checkpoint, root, "all", "cpu", args.batch_size, args.workers
            )
            single_s = seconds(evaluate_test_set, root, [checkpoint], **common)
            together_s = seconds(evaluate_test_set, root, copies, **common)
            separate_s = sum(seconds(evaluate_test_set, root, [c], **common) for c in copies)
            ratios.append(validate_s / single_s)
            multi.append(together_s / separate_s)
            print(
                f"  repetition {repetition + 1}: validate {args.images / validate_s:.1f} img/s, "
                f"evaluate {args.images / single_s:.1f} img/s ({validate_s / single_s:.2f}x); "
                f"{args.checkpoints} checkpoints together {together_s:.1f} s vs separately "
                f"{separate_s:.1f} s ({together_s / separate_s:.2f}x)",
                flush=True,
            )
    print(
        f"\nevaluate / validate speed (no perturbation, same images and checkpoint): "
        f"{statistics.median(ratios):.2f}x (target >= 0.9x)"
    )
    print(
        f"{args.checkpoints} checkpoints in one call / {args.checkpoints} single calls: "
        f"{statistics.median(multi):.2f}x of the time"
    )


if __name__ == "__main__":
    main()
