"""The streamed Parquet scan: rows as it goes, bad images as error rows, and a rerun after a
kill -9 that leaves neither duplicates nor gaps."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import make_folder_dataset

pq = pytest.importorskip("pyarrow.parquet")

from fakedet.cli import app  # noqa: E402

runner = CliRunner()
CHECKPOINT = Path(__file__).parent / "fixtures" / "checkpoint_0.2.0.pt"

# A scan in a child process that writes a part every 2 images and is slowed per batch, so a
# kill lands between parts at a moment the test picks.
SLOW_SCAN = """
import sys, time
from pathlib import Path
import fakedet.inference.scan as scan
from fakedet.sources.shards.reading import expand_sources
from fakedet.inference.predictor import load_detector
from fakedet.inference.results import collect_images
source, output = Path(sys.argv[1]), Path(sys.argv[2])
model, loaded = load_detector(Path(sys.argv[3]), "cpu")
keys = expand_sources([source], collect_images)
def slowly(done, total):
    time.sleep(0.15)
scan.scan_to_parquet(model, keys, loaded.img_size, output, batch_size=2, num_workers=0,
                     flush_rows=2, on_progress=slowly)
"""


def _keys(path: Path) -> list[str]:
    return pq.read_table(path).column("key").to_pylist()


def test_scan_writes_every_image_once_with_bad_ones_as_error_rows(tmp_path: Path) -> None:
    data = make_folder_dataset(tmp_path / "data", per_class=3, with_val=False)
    (data / "train" / "real" / "broken.png").write_bytes(b"not an image")
    output = tmp_path / "scores.parquet"
    args = ["predict", str(CHECKPOINT), str(data), "--output", str(output), "--device", "cpu"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["scored"] == 7
    table = pq.read_table(output).to_pylist()
    assert len(table) == 7 and len({row["key"] for row in table}) == 7
    broken = next(row for row in table if row["key"].endswith("broken.png"))
    assert broken["verdict"] == "unreadable" and broken["realness"] is None and broken["error"]
    good = [row for row in table if row is not broken]
    assert all(row["verdict"] in ("real", "fake") and 0 <= row["realness"] <= 1 for row in good)
    assert not (tmp_path / ".scores.parquet.parts").exists()  # merged into the one file

    result = runner.invoke(app, [*args, "--json"])  # a rerun over a finished output: nothing new
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["resumed"] == 7 and len(_keys(output)) == 7


def test_scan_resumes_after_kill_9_without_duplicates_or_gaps(tmp_path: Path) -> None:
    data = make_folder_dataset(tmp_path / "data", per_class=6, with_val=False)
    output = tmp_path / "parts"  # a folder of part files
    output.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_SCAN, str(data), str(output), str(CHECKPOINT)]
    )
    deadline = time.monotonic() + 120
    while len(list(output.glob("part-*.parquet"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    before = [key for part in sorted(output.glob("part-*.parquet")) for key in _keys(part)]
    assert 4 <= len(before) < 12, "the kill should land mid-scan"

    result = runner.invoke(
        app,
        ["predict", str(CHECKPOINT), str(data), "--output", str(output), "--device", "cpu",
         "--num-workers", "0", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["resumed"] == len(before)
    after = [key for part in sorted(output.glob("part-*.parquet")) for key in _keys(part)]
    expected = sorted(str(path) for path in (data / "train").rglob("*.png"))
    assert sorted(after) == expected  # every image once: no duplicate, no gap


def test_scan_reads_shards_and_keys_name_shard_and_member(tmp_path: Path) -> None:
    pytest.importorskip("webdataset")
    data = make_folder_dataset(tmp_path / "data", per_class=2, with_val=False)
    converted = runner.invoke(
        app, ["convert", str(data), str(tmp_path / "wds"), "--format", "webdataset"]
    )
    assert converted.exit_code == 0, converted.output
    output = tmp_path / "scores.parquet"
    result = runner.invoke(
        app,
        ["predict", str(CHECKPOINT), str(tmp_path / "wds"), "--output", str(output),
         "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "img/s" in result.output
    keys = _keys(output)
    assert len(keys) == 4 and all(".tar#" in key for key in keys)


def test_unknown_engine_is_refused(tmp_path: Path) -> None:
    data = make_folder_dataset(tmp_path / "data", per_class=1, with_val=False)
    result = runner.invoke(
        app, ["predict", str(CHECKPOINT), str(data), "--engine", "spark", "-o", "x.parquet"]
    )
    assert result.exit_code == 2 and "--engine spark is not one of local, ray" in result.output
