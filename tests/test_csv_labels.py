"""CSV labels (--use-csv): train.csv + val.csv or labels.csv; errors name the rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import tiny_train_args, write_image
from fakedet.cli import app
from fakedet.errors import DataError
from fakedet.sources.layouts import build_index


def _images(root: Path, count: int = 8) -> list[str]:
    paths = []
    for number in range(count):
        relative = f"images/{number}.png"
        write_image(root / relative, number)
        paths.append(relative)
    return paths


def _train_and_val_csvs(root: Path) -> list[str]:
    """train.csv: 6 images labelled fake/real alternately in words; val.csv: 2 as floats."""
    paths = _images(root)
    (root / "train.csv").write_text(
        "path,label\n"
        + "".join(f"{p},{'real' if i % 2 else 'fake'}\n" for i, p in enumerate(paths[:6]))
    )
    (root / "val.csv").write_text(f"path,label\n{paths[6]},0.9\n{paths[7]},0.0\n")
    return paths


def test_train_and_val_csv_with_text_and_float_labels(tmp_path: Path) -> None:
    _train_and_val_csvs(tmp_path)
    index = build_index(tmp_path, use_csv=True, val_split=0.1, seed=0)
    assert index.layout == "CSV (train.csv + val.csv)"
    assert sorted(s.label for s in index.train) == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    assert sorted(s.label for s in index.val) == [0.0, 0.9]
    # Each image keeps the label of its own row, and its path resolves to the file on disk.
    assert {Path(s.path).name: s.label for s in index.train} == {
        f"{i}.png": float(i % 2) for i in range(6)
    }
    assert {Path(s.path).name: s.label for s in index.val} == {"6.png": 0.9, "7.png": 0.0}
    for sample in index.train + index.val:
        assert Path(sample.path) == tmp_path / "images" / Path(sample.path).name
        assert Path(sample.path).is_file()


def test_labels_csv_with_split_column(tmp_path: Path) -> None:
    paths = _images(tmp_path)
    rows = [f"{p},{i % 2},{'val' if i >= 6 else 'train'}" for i, p in enumerate(paths)]
    (tmp_path / "labels.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    index = build_index(tmp_path, use_csv=True, val_split=0.1, seed=0)
    assert len(index.train) == 6 and len(index.val) == 2
    assert index.layout == "CSV (labels.csv)"
    # The split column, not val_split, decides the split; each row keeps its own label.
    assert {Path(s.path).name: s.label for s in index.train} == {
        f"{i}.png": float(i % 2) for i in range(6)
    }
    assert {Path(s.path).name: s.label for s in index.val} == {"6.png": 0.0, "7.png": 1.0}


def test_bad_label_names_the_row(tmp_path: Path) -> None:
    paths = _images(tmp_path, 3)
    (tmp_path / "train.csv").write_text(
        f"path,label\n{paths[0]},1\n{paths[1]},maybe\n{paths[2]},1.5\n"
    )
    with pytest.raises(DataError, match=r"rows 3, 4 have a label"):
        build_index(tmp_path, use_csv=True, val_split=0.1, seed=0)


def test_missing_column_is_named(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("file,label\na.png,1\n")
    with pytest.raises(DataError, match="lacks the column"):
        build_index(tmp_path, use_csv=True, val_split=0.1, seed=0)


def test_missing_files_fail_unless_skip_missing(tmp_path: Path) -> None:
    paths = _images(tmp_path, 8)
    rows = [f"{p},{i % 2}" for i, p in enumerate(paths)] + ["images/ghost.png,1"]
    (tmp_path / "train.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match="row 10 name files that do not exist"):
        build_index(tmp_path, use_csv=True, val_split=0.25, seed=0)
    index = build_index(tmp_path, use_csv=True, val_split=0.25, seed=0, skip_missing=True)
    assert len(index.train) + len(index.val) == 8
    assert "ghost.png" in index.skipped[0][0]
    assert len(index.skipped) == 1
    assert not any("ghost" in s.path for s in index.train + index.val)
    assert {Path(s.path).name for s in index.train + index.val} == {f"{i}.png" for i in range(8)}


def test_cli_csv_errors_exit_2(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("path,label\nnope.png,1\n")
    result = CliRunner().invoke(app, [*tiny_train_args(tmp_path, tmp_path / "out"), "--use_csv"])
    assert result.exit_code == 2
    assert "--skip-missing" in result.output
    squashed = "".join(result.output.split())  # immune to the console's line wrapping
    assert "train.csv:row2" in squashed and "donotexist" in squashed  # names the CSV row
    assert not list((tmp_path / "out").glob("*.pt"))  # nothing was trained


def test_cli_trains_on_the_csvs_samples(tmp_path: Path) -> None:
    """A run with --use-csv reads the CSVs' rows: their counts, their labels, their split."""
    _train_and_val_csvs(tmp_path)
    out = tmp_path / "out"
    args = tiny_train_args(tmp_path, out, "--use-csv", "--epochs", "1")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "CSV(train.csv+val.csv)" in "".join(result.output.split())
    summary = json.loads((out / "dataset_summary.json").read_text())
    assert summary["layout"] == "CSV (train.csv + val.csv)"
    assert summary["splits"] == {
        "train": {"real": 3, "fake": 3, "total": 6},
        "val": {"real": 1, "fake": 1, "total": 2},  # 0.9 counts as real
    }
    assert summary["skipped"] == 0
    (epoch,) = json.loads((out / "training_history.json").read_text())
    assert epoch["epoch"] == 1 and 0.0 <= epoch["val_accuracy"] <= 1.0
    assert (out / "latest_model.pt").is_file()
