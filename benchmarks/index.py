"""How long a start spends indexing a dataset, and how much memory the index keeps, at 10 thousand
to 1 million files: today's header scan, the cached index cold (first start) and warm, a whole
warm start's indexing as `fakedet train` runs it (labels, val split, header facts, then the
audit; printed as index + audit), and cold with content hashes (what the first `fakedet audit`
does).

The files are hard links to 8 small images (4 JPEG reals, 4 PNG fakes, 256 px, ~20-200 kB), so
a million of them fit anywhere; their bytes sit in the page cache, so the figures are for a
warm OS cache (a dataset on a cold disk or network share is slower in every column alike). Each
measurement runs in its own process (clean memory figures); phases are interleaved
(today, cold, warm, start, hash, today, cold, ...) because shared machines are noisy, and medians
are shown.

    python benchmarks/index.py                          # 10k, 100k, 1M files in a temp folder
    python benchmarks/index.py --sizes 10000 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

PER_FOLDER = 1000
LINKS_PER_COPY = 200_000  # a new copy of the 8 images every 200k files: 25k links each
PHASES = ("today", "cold", "warm", "start", "hash")


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field))
    return int(line.split()[1])


def build_tree(root: Path, count: int) -> None:
    """root/train/{real,fake}/dNNNN/NNNNNNN.{jpg,png}: `count` hard links to 8 images (to copies
    of them: ext4 allows 65,000 links per file)."""
    sources = root / "_sources"
    sources.mkdir(parents=True)
    rng = np.random.default_rng(0)
    originals = {"real": [], "fake": []}
    for number in range(4):
        pixels = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
        pixels[:, : 64 * number] //= 4  # distinct contents and sizes
        real = sources / f"real{number}.jpg"
        Image.fromarray(pixels).save(real, quality=75 + 5 * number)
        fake = sources / f"fake{number}.png"
        Image.fromarray(pixels).save(fake)
        originals["real"].append(real)
        originals["fake"].append(fake)
    for number in range(count):
        name = "real" if number % 2 == 0 else "fake"
        source = originals[name][number // 2 % 4]
        copy = number // LINKS_PER_COPY
        if copy:
            copied = source.with_name(f"{source.stem}-{copy}{source.suffix}")
            if not copied.exists():
                shutil.copy2(source, copied)
            source = copied
        folder = root / "train" / name / f"d{number // 2 // PER_FOLDER:04d}"
        if number // 2 % PER_FOLDER == 0:
            folder.mkdir(parents=True, exist_ok=True)
        os.link(source, folder / f"{number:07d}{source.suffix}")


def records_bytes(records) -> int:
    """What an ImageRecords keeps: its arrays, its path list and strings, its reasons."""
    arrays = sum(
        getattr(records, name).nbytes
        for name in (
            "size",
            "mtime_ns",
            "format_code",
            "width",
            "height",
            "mode_code",
            "jpeg_quality",
            "digest",
            "has_digest",
        )
    )
    strings = sys.getsizeof(records.paths) + sum(sys.getsizeof(path) for path in records.paths)
    return arrays + strings + sys.getsizeof(records.reasons)


def measure(phase: str, root: Path) -> dict[str, float]:
    """One phase in this process: seconds to list, seconds to scan, memory."""
    from fakedet.data.audit import audit_index
    from fakedet.sources.folders import check_image_header
    from fakedet.sources.index_cache import scan_with_cache
    from fakedet.sources.layouts import build_index
    from fakedet.sources.listing import scan_image_files
    from fakedet.sources.samples import IMAGE_SUFFIXES

    baseline = _rss_kib("VmRSS")
    started = time.perf_counter()
    if phase == "start":  # what `fakedet train` does before its first batch: index + audit
        index = build_index(root, False, 0.1, 0)
        listed = time.perf_counter()
        audit_index(index, root, with_hash=False)
        scanned = time.perf_counter()
        files = len(index.train) + len(index.val)
        return {
            "list_s": listed - started,
            "scan_s": scanned - listed,
            "total_s": scanned - started,
            "peak_rss_bytes": (_rss_kib("VmHWM") - baseline) * 1024,
            "records_bytes": 0,
            "files": files,
        }
    listing = None
    if phase == "today":  # fakedet 0.1's listing: rglob, then a suffix and is_file test each
        files = sorted(
            str(path)
            for path in root.rglob("*")
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
        )
    else:
        listing = scan_image_files(root)
        files = listing.paths
    listed = time.perf_counter()
    retained = 0
    if phase == "today":  # and its scan: every header opened again, 8 threads
        with ThreadPoolExecutor(max_workers=8) as pool:
            reasons = list(pool.map(check_image_header, files))
        assert not any(reasons)
    else:
        if phase in ("cold", "hash"):
            shutil.rmtree(root / ".fakedet", ignore_errors=True)
        records = scan_with_cache(
            root,
            files,
            on_note=print,
            with_hash=phase == "hash",
            stats=(listing.size, listing.mtime_ns) if listing is not None else None,
        )
        assert not records.reasons and len(records) == len(files)
        retained = records_bytes(records)
    scanned = time.perf_counter()
    return {
        "list_s": listed - started,
        "scan_s": scanned - listed,
        "total_s": scanned - started,
        "peak_rss_bytes": (_rss_kib("VmHWM") - baseline) * 1024,
        "records_bytes": retained,
        "files": len(files),
    }


def _run_phase(phase: str, root: Path) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, __file__, "--measure", phase, "--root", str(root)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3, help="Up to 100k files; 1 above.")
    parser.add_argument("--dir", type=Path, default=None, help="Where to build (default: temp).")
    parser.add_argument("--measure", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.root)))
        return

    base = Path(tempfile.mkdtemp(prefix="fakedet-index-", dir=args.dir))
    print(f"cpus {os.cpu_count()}, python {sys.version.split()[0]}, in {base}", flush=True)
    header = (
        f"{'files':>9} | {'today list+scan s':>17} | {'cold list+scan s':>16} | "
        f"{'warm list+scan s':>16} | {'warm start s':>12} | {'cold/today':>10} | "
        f"{'cold+hash s':>11} | "
        f"{'records B/file':>14} | {'warm peak RSS B/file':>20}"
    )
    rows = []
    try:
        for count in args.sizes:
            root = base / f"n{count}"
            started = time.perf_counter()
            build_tree(root, count)
            shutil.rmtree(root / "_sources")  # the links keep the data
            print(f"built {count} links in {time.perf_counter() - started:.1f} s", flush=True)
            results: dict[str, list[dict[str, float]]] = {phase: [] for phase in PHASES}
            for _ in range(args.repeats if count <= 100_000 else 1):
                for phase in PHASES:
                    results[phase].append(_run_phase(phase, root))

            def median(phase: str, key: str) -> float:
                return statistics.median(result[key] for result in results[phase])  # noqa: B023

            def timing(phase: str) -> str:
                return f"{median(phase, 'list_s'):.2f}+{median(phase, 'scan_s'):.2f}"

            ratio = median("cold", "total_s") / median("today", "total_s")
            rows.append(
                f"{count:>9} | {timing('today'):>17} | {timing('cold'):>16} | "
                f"{timing('warm'):>16} | {timing('start'):>12} | {ratio:>10.2f} | "
                f"{median('hash', 'total_s'):>11.2f} | "
                f"{median('warm', 'records_bytes') / count:>14.0f} | "
                f"{median('warm', 'peak_rss_bytes') / count:>20.0f}"
            )
            print(rows[-1], flush=True)
            shutil.rmtree(root)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print()
    print(header)
    print("-" * len(header))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
