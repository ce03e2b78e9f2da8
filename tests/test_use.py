"""Using a trained model: validate, inspect-checkpoint and predict on a tiny run."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import make_folder_dataset, tiny_train_args, write_image
from fakedet.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset, output folder) of a 2-epoch run on 16 + 16 images."""
    root = tmp_path_factory.mktemp("use")
    data = make_folder_dataset(root / "data")
    out = root / "run"
    result = runner.invoke(app, tiny_train_args(data, out))
    assert result.exit_code == 0, result.output
    return data, out


def _json(args: list[str]) -> object:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_validate_reproduces_the_runs_own_validation(trained: tuple[Path, Path]) -> None:
    data, out = trained
    result = _json(["validate", str(out / "latest_model.pt"), str(data), "--json"])
    last = json.loads((out / "training_history.json").read_text())[-1]
    assert (result["images"], result["real"], result["fake"]) == (16, 8, 8)
    reproduced = {name: value for name, value in result["metrics"].items() if name[:3] != "ece"}
    assert len(reproduced) == 9  # loss terms, accuracies, AUC, AP (ECE is validate's addition)
    for name, value in reproduced.items():
        assert value == pytest.approx(last[f"val_{name}"], rel=1e-6, abs=1e-9), name


def test_validate_other_splits_and_bad_split(trained: tuple[Path, Path]) -> None:
    data, out = trained
    everything = _json(["validate", str(out), str(data), "--split", "all", "--json"])
    assert everything["images"] == 32
    assert (everything["real"], everything["fake"]) == (16, 16)
    metrics = everything["metrics"]
    for name in ("accuracy", "real_acc", "fake_acc", "auc", "ap"):
        assert 0.0 <= metrics[name] <= 1.0, (name, metrics[name])
    # Balanced classes: overall accuracy is the mean of the per-class accuracies over 32 images.
    assert metrics["accuracy"] == pytest.approx((metrics["real_acc"] + metrics["fake_acc"]) / 2)
    assert metrics["accuracy"] * 32 == pytest.approx(round(metrics["accuracy"] * 32), abs=1e-6)
    result = runner.invoke(app, ["validate", str(out), str(data), "--split", "test"])
    assert result.exit_code == 2 and "not one of auto, val, train, all" in result.output
    table = runner.invoke(app, ["validate", str(out), str(data)])
    assert table.exit_code == 0 and "auc" in table.output and "16 images" in table.output
    assert "16images(8real,8fake)" in "".join(table.output.split())


def test_validate_writes_plots(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, out = trained
    plots = tmp_path / "plots"
    result = _json(["validate", str(out), str(data), "--plots", str(plots), "--json"])
    names = ["roc_pr.png", "confusion.png", "score_hist.png", "hardest.png"]
    assert [Path(path).name for path in result["plots"]] == names
    assert all((plots / name).stat().st_size > 1000 for name in names)
    assert [Path(path).parent for path in result["plots"]] == [plots] * len(names)
    for name in names:
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_inspect_checkpoint(trained: tuple[Path, Path]) -> None:
    _, out = trained
    info = _json(["inspect-checkpoint", str(out / "latest_model.pt"), "--json"])
    assert (info["mode"], info["epoch"], info["img_size"]) == ("fast", 2, 64)
    assert info["parameters"] == pytest.approx(0.3e6, rel=0.1)
    assert [row["epoch"] for row in info["history"]] == [1, 2]
    assert info["global_step"] == 4  # 16 images, batch 8, 2 epochs
    assert info["config"]["batch_size"] == 8
    table = runner.invoke(app, ["inspect-checkpoint", str(out)])
    assert table.exit_code == 0 and "2 of 2" in table.output and "val_auc" in table.output


def test_inspect_refuses_what_is_not_a_checkpoint(tmp_path: Path) -> None:
    bogus = tmp_path / "model.pt"
    bogus.write_bytes(b"not a checkpoint")
    result = runner.invoke(app, ["inspect-checkpoint", str(bogus)])
    assert result.exit_code == 2 and "not a readable checkpoint" in result.output


def test_predict_output_dash_writes_the_csv_alone_to_stdout(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    data, out = trained
    images = [str(data / "val" / "real" / "0.png"), str(data / "val" / "fake" / "0.png")]
    result = runner.invoke(app, ["predict", str(out / "best_model.pt"), *images, "--output", "-"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(io.StringIO(result.stdout))
    assert list(table["path"]) == images and set(table["verdict"]) <= {"real", "fake"}
    assert not (Path.cwd() / "-").exists() and not (tmp_path / "-").exists()


def test_predict_files_folders_and_unreadable(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, out = trained
    folder = tmp_path / "incoming"
    for number in range(3):
        write_image(folder / "nested" / f"{number}.png", 100 + number)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    single = data / "val" / "real" / "0.png"
    csv_path = tmp_path / "scores.csv"
    rows = _json(
        ["predict", str(out / "best_model.pt"), str(single), str(folder), "--json",
         "--output", str(csv_path)]
    )  # fmt: skip
    assert [Path(row["path"]).name for row in rows] == [
        "0.png",
        "broken.jpg",
        "0.png",
        "1.png",
        "2.png",
    ]
    for row in rows:
        if row["verdict"] == "unreadable":
            assert row["realness"] is None and row["error"]
        else:
            assert 0.0 <= row["realness"] <= 1.0
            assert row["verdict"] == ("real" if row["realness"] >= 0.5 else "fake")
    assert sum(row["verdict"] == "unreadable" for row in rows) == 1
    table = pd.read_csv(csv_path)
    assert list(table.columns) == ["path", "realness", "verdict", "error"]
    assert len(table) == 5
    # The CSV holds the same rows, in the same order, with the same scores as the JSON.
    assert list(table["path"]) == [row["path"] for row in rows]
    assert list(table["verdict"]) == [row["verdict"] for row in rows]
    for (_, saved), row in zip(table.iterrows(), rows, strict=True):
        if row["verdict"] == "unreadable":
            assert pd.isna(saved["realness"]) and "broken.jpg" in saved["path"]
            assert isinstance(saved["error"], str) and saved["error"]
        else:
            assert saved["realness"] == pytest.approx(row["realness"], abs=1e-6)
            assert 0.0 <= saved["realness"] <= 1.0 and pd.isna(saved["error"])
    # Without --json: a table and a summary line whose counts agree with the JSON verdicts.
    plain = runner.invoke(app, ["predict", str(out / "best_model.pt"), str(single), str(folder)])
    assert plain.exit_code == 0, plain.output
    real = sum(row["verdict"] == "real" for row in rows)
    summary = f"5 images: {real} real, {4 - real} fake, 1 unreadable"
    assert "".join(summary.split()) in "".join(plain.output.split()), plain.output


def test_predict_threshold_moves_the_verdict(trained: tuple[Path, Path]) -> None:
    data, out = trained
    image = str(data / "val" / "fake" / "0.png")
    strict = _json(["predict", str(out), image, "--threshold", "1.0", "--json"])
    lenient = _json(["predict", str(out), image, "--threshold", "0.0", "--json"])
    assert strict[0]["realness"] == lenient[0]["realness"]
    assert (strict[0]["verdict"], lenient[0]["verdict"]) == ("fake", "real")


def test_score_views_averages_the_views_as_logits() -> None:
    import torch

    from fakedet.inference.predictor import score_views

    def mean_pixel(images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"score": images.mean(dim=(1, 2, 3))}

    images = torch.rand(4, 5, 3, 8, 8)
    images[0] = 1.0  # a view the model is sure of: logit clamped, not infinite
    one = score_views(mean_pixel, images[:, 0])
    torch.testing.assert_close(one, images[:, 0].mean(dim=(1, 2, 3)))
    five = score_views(mean_pixel, images)
    each = torch.logit(images.mean(dim=(2, 3, 4)).clamp(1e-6, 1 - 1e-6))
    torch.testing.assert_close(five, torch.sigmoid(each.mean(dim=1)))
    assert torch.isfinite(five).all() and five[0] > 0.999


def test_predict_and_evaluate_score_five_crops(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from PIL import Image

    data, out = trained
    folder = tmp_path / "images"
    big = folder / "big.png"
    write_image(big, seed=3, size=96)  # larger than the run's 64 px
    exact = folder / "exact.png"
    Image.open(big).crop((16, 16, 80, 80)).save(exact)  # every view is the same 64 px
    args = ["predict", str(out), str(folder), "--json", "--raw"]
    centre = {Path(r["path"]).name: r for r in _json(args)}
    five = {Path(r["path"]).name: r for r in _json([*args, "--crops", "5"])}
    assert five["exact.png"]["raw"] == pytest.approx(centre["exact.png"]["raw"], abs=1e-5)
    views = tmp_path / "views"
    views.mkdir()
    for left, top in [(16, 16), (0, 0), (32, 0), (0, 32), (32, 32)]:  # centre and corners
        Image.open(big).crop((left, top, left + 64, top + 64)).save(views / f"{left}_{top}.png")
    singles = [r["raw"] for r in _json(["predict", str(out), str(views), "--json", "--raw"])]
    expected = 1 / (1 + np.exp(-np.mean([np.log(r / (1 - r)) for r in singles])))
    assert five["big.png"]["raw"] == pytest.approx(expected, abs=1e-4)
    table = tmp_path / "table.md"
    args = ["evaluate", str(data / "val"), str(out), "--crops", "5", "--markdown", str(table)]
    evaluated = runner.invoke(app, args)
    assert evaluated.exit_code == 0, evaluated.output
    assert "5 views per image" in " ".join(evaluated.output.split())
    assert "5 views per image" in table.read_text()
    assert json.loads(runner.invoke(app, [*args, "--json"]).stdout)["crops"] == 5
    bad = runner.invoke(app, ["evaluate", str(tmp_path), str(out), "--crops", "3"])
    assert bad.exit_code == 2 and "--crops 3 is not 1 or 5" in " ".join(bad.output.split())


def test_predict_bad_input_exits_2(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, out = trained
    missing = runner.invoke(app, ["predict", str(out), str(tmp_path / "nope.png")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(app, ["predict", str(out), str(tmp_path / "empty")])
    assert empty.exit_code == 2 and "No images found" in empty.output
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"junk")
    unreadable = runner.invoke(app, ["predict", str(out), str(junk)])
    assert unreadable.exit_code == 2 and "None of the 1 files" in unreadable.output


@pytest.mark.parametrize("layout", ["val_only", "test_only", "plain"])
def test_validate_scores_every_image_of_a_set_without_a_train_split(
    trained: tuple[Path, Path], tmp_path: Path, layout: str
) -> None:
    _, checkpoint = trained
    root = tmp_path / layout
    folder = {"val_only": root / "val", "test_only": root / "test", "plain": root}[layout]
    for number in range(5):
        write_image(folder / "real" / f"r{number}.png", number)
        write_image(folder / "fake" / f"f{number}.png", 50 + number, smooth=True)
    result = runner.invoke(app, ["validate", str(checkpoint), str(root), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["images"], report["real"], report["fake"]) == (10, 5, 5)
    assert report["split"] == "all" and "no train split" in report["scored"]
    table = runner.invoke(app, ["validate", str(checkpoint), str(root)])
    assert "every image (no train split: a test set): 10 images" in " ".join(table.output.split())
