"""Shards as a data source: convert round trip, train and resume mid-epoch bit-exact, evaluate,
predict, and bad shards (truncated, unlabelled, missing columns, mixed conventions)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import fakedet_command, make_folder_dataset, signal_when_written, tiny_train_args

pytest.importorskip("webdataset")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from fakedet.checkpoints.files import load_checkpoint  # noqa: E402
from fakedet.cli import app  # noqa: E402
from fakedet.data.loader import EpochSampler  # noqa: E402
from fakedet.errors import DataError, UsageError  # noqa: E402
from fakedet.sources.layouts import build_index, discover_test_set  # noqa: E402
from fakedet.sources.shards.convert import parse_size  # noqa: E402
from fakedet.sources.shards.reading import read_groups  # noqa: E402

runner = CliRunner()
FORMATS = ["webdataset", "parquet"]
CHECKPOINT = Path(__file__).parent / "fixtures" / "checkpoint_0.2.0.pt"


def _convert(source: Path, out: Path, fmt: str, *extra: str) -> dict:
    result = runner.invoke(
        app, ["convert", str(source), str(out), "--format", fmt, "--shard-size", "20KB", *extra]
    )
    assert result.exit_code == 0, result.output
    return json.loads((out / "manifest.json").read_text())


def _labels(samples) -> list[float]:
    return sorted(sample.label for sample in samples)


@pytest.mark.parametrize("fmt", FORMATS)
def test_convert_round_trip_keeps_counts_and_labels(tmp_path: Path, fmt: str) -> None:
    data = make_folder_dataset(tmp_path / "data", per_class=4)
    manifest = _convert(data, tmp_path / "shards", fmt)
    folder, shards = (
        build_index(data, False, 0.1, 0),
        build_index(tmp_path / "shards", False, 0.1, 0),
    )
    assert shards.layout == ("WebDataset shards" if fmt == "webdataset" else "Parquet shards")
    assert folder.summary()["splits"] == shards.summary()["splits"]
    assert _labels(folder.train) == _labels(shards.train)
    assert _labels(folder.val) == _labels(shards.val)
    assert manifest["splits"]["train"] == {**manifest["splits"]["train"], "samples": 8, "real": 4}
    assert len(manifest["splits"]["train"]["shards"]) > 1  # 20KB shards of ~12 kB images
    for entry in manifest["splits"]["val"]["shards"]:
        written = (tmp_path / "shards" / "val" / entry["file"]).read_bytes()
        assert hashlib.sha256(written).hexdigest() == entry["sha256"]
    # The bytes are the original file's, never re-encoded.
    first = sorted(shards.train, key=lambda sample: sample.path)[0]
    from fakedet.sources.shards.reading import read_shard_bytes

    originals = {path.read_bytes() for path in (data / "train").rglob("*.png")}
    assert read_shard_bytes(first.path) in originals
    # The audit reads the shard index's header facts, hashes included.
    records, _, splits = shards.audit_input
    assert len(records) == 16 and records.has_digest.all() and splits.count("val") == 8


def test_convert_writes_a_test_split_with_generators(tmp_path: Path) -> None:
    data = make_folder_dataset(tmp_path / "data", per_class=2)
    (data / "test").mkdir()
    for generator in ("sdxl", "midjourney"):
        make_folder_dataset(tmp_path / "gens" / generator, per_class=2, with_val=False)
        (tmp_path / "gens" / generator / "train").rename(data / "test" / generator)
    manifest = _convert(data, tmp_path / "shards", "webdataset")
    assert manifest["splits"]["test"]["generators"] == {"midjourney": 4, "sdxl": 4}
    test_set = discover_test_set(tmp_path / "shards" / "test")
    assert test_set.groups == ["midjourney", "sdxl"] and len(test_set.samples) == 8


def test_convert_refuses_a_bad_size_and_a_used_output(tmp_path: Path) -> None:
    assert parse_size("1GB") == 10**9 and parse_size("64KiB") == 65536
    with pytest.raises(UsageError, match="is not a size"):
        parse_size("lots")
    data = make_folder_dataset(tmp_path / "data", per_class=2)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x")
    result = runner.invoke(app, ["convert", str(data), str(tmp_path / "out")])
    assert result.exit_code == 2 and "is not empty" in result.output


def test_parquet_order_shuffles_row_groups_then_windows(tmp_path: Path) -> None:
    rows = [{"image": {"bytes": b"x", "path": None}, "label": i % 2} for i in range(30)]
    (tmp_path / "train").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train" / "a.parquet", row_group_size=5)
    from fakedet.sources.samples import Sample

    samples = [Sample(f"{tmp_path}/train/a.parquet#{row:02d}", 1.0) for row in range(30)]
    groups = read_groups(samples)
    assert groups == [list(range(start, start + 5)) for start in range(0, 30, 5)]
    sampler = EpochSampler(30, True, seed=3, groups=groups)
    order = [index for index, _ in sampler]
    assert sorted(order) == list(range(30)) and order != list(range(30))
    assert order == [index for index, _ in EpochSampler(30, True, seed=3, groups=groups)]
    sampler.set_epoch(0, skip=7)
    assert [index for index, _ in sampler] == order[7:]  # a resume skips what was done


@pytest.mark.parametrize("fmt", FORMATS)
def test_sigterm_mid_epoch_on_shards_then_resume_is_bit_exact(tmp_path: Path, fmt: str) -> None:
    # As many images and epochs as the folder version: on a quiet machine an epoch of 10 images
    # ended before the signal (0.15 s), so the run finished instead of being stopped.
    folder = make_folder_dataset(tmp_path / "data", per_class=16, with_val=False)
    data = tmp_path / "shards"
    _convert(folder, data, fmt)
    common = ["--batch-size", "2", "--epochs", "3", "--blur-prob", "0.5"]
    reference = tmp_path / "reference"
    result = runner.invoke(app, tiny_train_args(data, reference, *common))
    assert result.exit_code == 0, result.output
    assert "shards" in result.output  # the layout line

    interrupted = tmp_path / "interrupted"
    code, output = signal_when_written(
        fakedet_command(*tiny_train_args(data, interrupted, *common)),
        interrupted / "latest_model.pt",
        after=0.05,  # early in epoch 2: on a fast machine the rest of the run takes < 0.3 s
    )
    assert code == 143, output
    assert load_checkpoint(interrupted / "latest_model.pt").state.global_step > 0
    result = runner.invoke(app, ["resume", str(interrupted)])
    assert result.exit_code == 0, result.output
    first = load_checkpoint(reference / "latest_model.pt").model_state
    second = load_checkpoint(interrupted / "latest_model.pt").model_state
    for key in first:
        assert torch.equal(first[key], second[key]), key


@pytest.mark.parametrize("fmt", FORMATS)
def test_evaluate_and_predict_read_shards(tmp_path: Path, fmt: str) -> None:
    data = make_folder_dataset(tmp_path / "data", per_class=3, with_val=False)
    _convert(data, tmp_path / "shards", fmt)
    shards = tmp_path / "shards" / "train"
    result = runner.invoke(
        app, ["evaluate", str(shards), str(CHECKPOINT), "--device", "cpu", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["images"] == 6 and report["layout"].endswith("shards")
    result = runner.invoke(
        app, ["predict", str(CHECKPOINT), str(shards), "--device", "cpu", "--json"]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 6 and all(row["verdict"] in ("real", "fake") for row in rows)
    assert all("#" in row["path"] for row in rows)


def _tar(path: Path, members: dict[str, bytes], cut_inside: str = "") -> None:
    """A tar of `members`; with `cut_inside`, cut off 10 bytes into that member's data."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    raw = buffer.getvalue()
    if cut_inside:
        buffer.seek(0)
        with tarfile.open(fileobj=buffer) as archive:
            raw = raw[: archive.getmember(cut_inside).offset_data + 10]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)


def _png(seed: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (seed * 40 % 256, 10, 10)).save(buffer, "PNG")
    return buffer.getvalue()


def test_truncated_unlabelled_and_disagreeing_samples_are_skipped_and_listed(
    tmp_path: Path,
) -> None:
    members = {}
    for number in range(6):
        members[f"{number:03d}.png"] = _png(number)
        members[f"{number:03d}.cls"] = str(number % 2).encode()
    del members["004.cls"]  # no label
    members["003.json"] = b'{"label": "fake"}'  # 003.cls says 1 = fake too: agrees
    members["002.json"] = b'{"label": 1}'  # 002.cls says 0: disagrees
    members["001.json"] = b'{"label": 1, "generator": "sdxl"}'
    _tar(tmp_path / "data" / "train" / "a.tar", members)
    broken = {"100.png": _png(7), "100.cls": b"0", "101.png": _png(8), "101.cls": b"1"}
    _tar(tmp_path / "data" / "train" / "b.tar", broken, cut_inside="101.png")
    index = build_index(tmp_path / "data", False, 0.5, 0)
    reasons = dict(index.skipped)
    assert "no label" in reasons[f"{tmp_path}/data/train/a.tar#004.png"]
    assert "disagree" in reasons[f"{tmp_path}/data/train/a.tar#002.png"]
    assert "truncated" in reasons[f"{tmp_path}/data/train/b.tar#101.png"]
    assert len(index.train) + len(index.val) == 5  # a.tar: 000, 001, 003, 005; b.tar: 100


def test_bad_labels_and_columns_are_one_clear_sentence(tmp_path: Path) -> None:
    _tar(tmp_path / "words" / "train" / "a.tar", {"0.png": _png(0), "0.cls": b"2"})
    with pytest.raises(DataError, match=r"label 2 is neither 0/1"):
        build_index(tmp_path / "words", False, 0.5, 0)

    mixed = {"0.png": _png(0), "0.cls": b"real", "1.png": _png(1), "1.cls": b"1"}
    _tar(tmp_path / "mixed" / "train" / "a.tar", mixed)
    with pytest.raises(DataError, match="mix label conventions"):
        build_index(tmp_path / "mixed", False, 0.5, 0)

    (tmp_path / "columns" / "train").mkdir(parents=True)
    table = pa.table({"picture": [_png(0)], "label": [0]})
    pq.write_table(table, tmp_path / "columns" / "train" / "a.parquet")
    result = runner.invoke(
        app, ["validate", str(CHECKPOINT), str(tmp_path / "columns"), "--device", "cpu"]
    )
    assert result.exit_code == 2
    assert "has no image column 'image' (its columns: picture, label)" in result.output

    table = pa.table({"image": [_png(0), _png(1)], "class": [0, 1]})
    pq.write_table(table, tmp_path / "columns" / "train" / "a.parquet")
    with pytest.raises(DataError, match="has no label column"):
        build_index(tmp_path / "columns", False, 0.5, 0)


def test_a_shard_source_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def without_webdataset(name: str, *args, **kwargs):
        if name == "webdataset":
            raise ImportError("no webdataset", name="webdataset")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_webdataset)
    from fakedet.sources.shards.keys import require_shard_libraries

    with pytest.raises(UsageError, match=r"fakedet\[shards\]"):
        require_shard_libraries()


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_decoded_cache_reads_shard_samples_jpeg_and_png(tmp_path: Path, fmt: str) -> None:
    """`fakedet cache` on shards decodes every sample (through torchvision for the JPEGs, from
    the shard's bytes), with the pixels the loader would decode itself."""
    from fakedet.data.decode import decode_rgb
    from fakedet.data.decoded_cache import open_decoded_cache

    data = make_folder_dataset(tmp_path / "data", per_class=2)
    for path in list((data / "train" / "real").glob("*.png")):  # some samples as JPEG
        Image.open(path).convert("RGB").save(path.with_suffix(".jpg"), quality=90)
        path.unlink()
    shards = tmp_path / "shards"
    _convert(data, shards, fmt)
    result = runner.invoke(app, ["cache", str(shards)])
    assert result.exit_code == 0, result.output
    assert "Decoded 8 images" in result.output and "unreadable" not in result.output
    keys = [sample.path for sample in build_index(shards, False, 0.1, 0).train]
    reader = open_decoded_cache(shards).reader(keys, fallback=lambda key: pytest.fail(key))
    for key in keys:
        assert np.array_equal(np.asarray(reader(key)), np.asarray(decode_rgb(key, "pillow")))
