"""The predict scan on Ray Data, on a local Ray with 2 CPUs (skipped without the `scale` extra)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import make_folder_dataset

pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")
pytestmark = pytest.mark.ray

CHECKPOINT = Path(__file__).parent / "fixtures" / "checkpoint_0.2.0.pt"


def test_ray_scan_scores_every_key_once_like_the_local_scan(tmp_path: Path) -> None:
    from fakedet.inference.results import collect_images
    from fakedet.scale.ray_scan import ray_scan
    from fakedet.sources.shards.reading import expand_sources

    data = make_folder_dataset(tmp_path / "data", per_class=3, with_val=False)
    (data / "train" / "fake" / "broken.png").write_bytes(b"not an image")
    keys = expand_sources([data], collect_images)
    result = ray_scan(CHECKPOINT, keys, tmp_path / "out", batch_size=4, workers=2, num_cpus=2)
    table = pq.read_table(tmp_path / "out").to_pylist()
    assert result["rows"] == 7 and sorted(row["key"] for row in table) == sorted(keys)
    broken = next(row for row in table if row["key"].endswith("broken.png"))
    assert broken["verdict"] == "unreadable" and broken["error"]
    assert {row["verdict"] for row in table if row is not broken} <= {"real", "fake"}
