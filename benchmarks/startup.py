"""Wall time of scoring one image from a fresh process, against importing torch alone.

Runs, interleaved and repeated, three commands in new interpreters: `python -c "import torch"`,
`fakedet predict CHECKPOINT IMAGE` and `fakedet predict MODEL.onnx IMAGE`; prints the medians
and the predict times minus the torch import. The checkpoint is tests/fixtures' 0.2.0 one
(fast, 64 px) unless given; its ONNX export is written to a temporary folder.

    python benchmarks/startup.py --repeats 7
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIXTURE = Path(__file__).parent.parent / "tests" / "fixtures" / "checkpoint_0.2.0.pt"


def wall_time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=FIXTURE)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    import numpy as np
    from PIL import Image

    from fakedet.export.writer import export_model

    with tempfile.TemporaryDirectory() as folder:
        image = Path(folder) / "photo.png"
        pixels = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(image)
        onnx_file = export_model(args.checkpoint, "onnx", Path(folder) / "model.onnx").path
        fakedet = [sys.executable, "-m", "fakedet", "predict"]
        commands = {
            "import torch": [sys.executable, "-c", "import torch"],
            "predict checkpoint": [*fakedet, str(args.checkpoint), str(image), "--device", "cpu"],
            "predict onnx": [*fakedet, str(onnx_file), str(image), "--device", "cpu"],
        }
        for command in commands.values():  # warm the file cache
            wall_time(command)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeats):
            for name, command in commands.items():
                times[name].append(wall_time(command))
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"{platform.machine()} {platform.processor() or ''}, {args.repeats} interleaved runs")
    for name, median in medians.items():
        spread = f"{min(times[name]):.2f}-{max(times[name]):.2f}"
        print(f"{name:20s} median {median:.2f} s  (range {spread})")
    torch_time = medians["import torch"]
    for name in ("predict checkpoint", "predict onnx"):
        print(f"{name} - import torch: {medians[name] - torch_time:+.2f} s")


if __name__ == "__main__":
    main()
