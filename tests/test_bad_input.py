"""Bad input found by going through what a user controls: paths, option values, files.
Each gets one sentence and exit 2 (never "Unexpected error"), or a correct result."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import make_folder_dataset, tiny_train_args, write_image
from fakedet.checkpoints.files import load_checkpoint, save_checkpoint
from fakedet.cli import app

V010 = Path(__file__).parent / "fixtures" / "checkpoint_0.1.0.pt"
runner = CliRunner()


def _sentence(result) -> str:  # type: ignore[no-untyped-def]
    assert "Unexpected error" not in result.output and "Traceback" not in result.output
    return " ".join(result.output.split())


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_folder_dataset(tmp_path / "data", per_class=2)


def test_an_output_folder_that_is_a_file(data: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "afile.txt"
    a_file.write_text("x")
    for args in (
        tiny_train_args(data, a_file),
        ["demo-data", str(a_file), "--num-images", "8", "--img-size", "64"],
        ["validate", str(V010), str(data), "--plots", str(a_file)],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "Cannot write into" in _sentence(result) and "afile.txt" in result.output


def test_predict_output_onto_a_folder_or_into_a_read_only_one(data: Path, tmp_path: Path) -> None:
    image = str(data / "val" / "real" / "0.png")
    folder = tmp_path / "folder"
    folder.mkdir()
    # An existing folder receives the scan's Parquet part files (a CSV never lands on it).
    pytest.importorskip("pyarrow")
    result = runner.invoke(app, ["predict", str(V010), image, "--output", str(folder)])
    assert result.exit_code == 0, result.output
    assert list(folder.glob("*.parquet")) and not list(folder.glob("*.csv"))
    if os.geteuid() == 0:
        return  # root writes into read-only folders anyway
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(stat.S_IRUSR | stat.S_IXUSR)
    result = runner.invoke(app, ["predict", str(V010), image, "--output", str(read_only / "x.csv")])
    assert result.exit_code == 2 and "Cannot write" in _sentence(result)


def test_written_files_get_the_umask_mode_not_0600(data: Path, tmp_path: Path) -> None:
    output = tmp_path / "scores.csv"
    result = runner.invoke(
        app, ["predict", str(V010), str(data / "val"), "--output", str(output), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(output.stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("command", ["predict", "validate", "evaluate"])
@pytest.mark.parametrize("device", ["nonsense", "CPU", "cuda:-1"])
def test_a_device_spelling_is_checked_by_every_command(
    data: Path, command: str, device: str
) -> None:
    args = {
        "predict": ["predict", str(V010), str(data / "val")],
        "validate": ["validate", str(V010), str(data)],
        "evaluate": ["evaluate", str(data / "val"), str(V010)],
    }[command]
    result = runner.invoke(app, [*args, "--device", device])
    assert result.exit_code == 2, result.output
    assert "must be auto, cpu, cuda, cuda:N or mps" in _sentence(result)


def test_a_file_name_that_is_not_utf8_is_written_to_the_csv(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    name = os.fsdecode(b"bad\xff\xfename.png")
    write_image(folder / name, 0)
    output = tmp_path / "scores.csv"
    result = runner.invoke(app, ["predict", str(V010), str(folder), "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert b"bad\xff\xfename.png" in output.read_bytes()


def test_config_files_that_are_not_text_or_not_files(data: Path, tmp_path: Path) -> None:
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    result = runner.invoke(app, ["train", str(data), "--config", str(binary)])
    assert result.exit_code == 2 and "not UTF-8 text" in _sentence(result)
    result = runner.invoke(app, ["train", str(data), "--config", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder" in _sentence(result)


@pytest.mark.parametrize(
    "flags", [["--lr", "inf"], ["--weight-decay", "inf"], ["--regression-weight", "inf"]]
)
def test_infinite_settings_are_refused_before_training(
    data: Path, tmp_path: Path, flags: list[str]
) -> None:
    result = runner.invoke(app, tiny_train_args(data, tmp_path / "run", *flags))
    assert result.exit_code == 2 and "finite number" in _sentence(result)
    assert not (tmp_path / "run" / "latest_model.pt").exists()


def test_a_diverged_model_is_reported_not_a_crash(data: Path, tmp_path: Path) -> None:
    checkpoint = load_checkpoint(V010)
    checkpoint.model_state = {
        name: torch.full_like(tensor, float("nan")) if tensor.is_floating_point() else tensor
        for name, tensor in checkpoint.model_state.items()
    }
    diverged = tmp_path / "nan.pt"
    save_checkpoint(diverged, checkpoint)
    validated = runner.invoke(app, ["validate", str(diverged), str(data), "--json"])
    assert validated.exit_code == 0, validated.output
    assert json.loads(validated.stdout)["metrics"]["auc"] is None
    predicted = runner.invoke(app, ["predict", str(diverged), str(data / "val")])
    assert predicted.exit_code == 2 and "non-finite score" in _sentence(predicted)
    evaluated = runner.invoke(app, ["evaluate", str(data / "val"), str(diverged), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    mean = next(r for r in json.loads(evaluated.stdout)["results"] if r["group"] == "mean")
    assert mean["auc"] is None
    calibrated = runner.invoke(
        app, ["calibrate", str(diverged), str(data), "-o", str(tmp_path / "c.pt")]
    )
    assert calibrated.exit_code == 2 and "diverged" in _sentence(calibrated)


def test_recommend_refuses_infinite_vram() -> None:
    for value in ("inf", "nan"):
        result = runner.invoke(app, ["recommend", "--vram", value])
        assert result.exit_code == 2 and "positive number of GB" in _sentence(result)


def test_resume_with_a_config_file_is_refused(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    trained = runner.invoke(app, tiny_train_args(data, run, "--epochs", "1"))
    assert trained.exit_code == 0, trained.output
    config = tmp_path / "c.yaml"
    config.write_text("regression_weight: 2\n")
    result = runner.invoke(app, ["train", "--resume", str(run), "--config", str(config)])
    assert result.exit_code == 2 and "--config does not apply with --resume" in _sentence(result)


def test_labels_csv_split_values_must_be_known(tmp_path: Path) -> None:
    root = tmp_path / "csvdata"
    for number in range(6):
        write_image(root / "img" / f"{number}.png", number)
    rows = [f"img/{n}.png,{n % 2},{'train' if n < 4 else 'bogus'}" for n in range(6)]
    (root / "labels.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    result = runner.invoke(app, tiny_train_args(root, tmp_path / "run", "--use-csv"))
    assert result.exit_code == 2 and "'bogus'" in _sentence(result)


def test_an_unreadable_folder_in_a_dataset_is_an_error_not_a_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fakedet.sources import index_cache

    data = make_folder_dataset(tmp_path / "data", per_class=2)
    real_scandir = os.scandir

    def scandir(folder: str):  # type: ignore[no-untyped-def]
        # chmod 000 as a test running as root would not feel it
        if Path(folder).name == "val":
            raise PermissionError(13, "Permission denied")
        return real_scandir(folder)

    monkeypatch.setattr(index_cache.os, "scandir", scandir)
    result = runner.invoke(app, tiny_train_args(data, tmp_path / "run"))
    assert result.exit_code == 2 and "Cannot read the folder" in _sentence(result)
    assert "Permission denied" in result.output


def test_symlinked_class_folders_are_followed(tmp_path: Path) -> None:
    store = make_folder_dataset(tmp_path / "store", per_class=2)
    linked = tmp_path / "linked"
    for split in ("train", "val"):
        (linked / split).mkdir(parents=True)
        for label in ("real", "fake"):
            (linked / split / label).symlink_to(store / split / label, target_is_directory=True)
    (linked / "train" / "loop").symlink_to(linked, target_is_directory=True)  # a loop ends
    from fakedet.sources.layouts import build_index

    index = build_index(linked, use_csv=False, val_split=0.1, seed=0)
    assert (len(index.train), len(index.val)) == (4, 4)


def test_demo_data_replaces_an_earlier_demo_and_refuses_other_folders(tmp_path: Path) -> None:
    args = ["--num-images", "8", "--img-size", "64"]
    out = tmp_path / "demo"
    assert runner.invoke(app, ["demo-data", str(out), *args, "--num-images", "16"]).exit_code == 0
    assert runner.invoke(app, ["demo-data", str(out), *args]).exit_code == 0
    assert len(list(out.rglob("*.png"))) == 8  # the 16 earlier images are gone, not mixed in
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"x")
    result = runner.invoke(app, ["demo-data", str(other), *args])
    assert result.exit_code == 2 and "not a demo dataset" in _sentence(result)
    assert (other / "holiday.jpg").exists()


def test_a_boolean_is_not_a_number_of_epochs(data: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("epochs: true\n")
    result = runner.invoke(app, ["train", str(data), "--config", str(config)])
    assert result.exit_code == 2 and "not true/false" in _sentence(result)


def test_bad_input_with_devices_is_refused_once_before_torchrun(data: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    notes = tmp_path / "notes.pt"
    notes.write_text("notes\n")
    cases = [
        (["train", str(empty), "--devices", "2"], "No labelled images found"),
        (["train", str(data), "--device", "cuda", "--devices", "2"], "CUDA is not available"),
        (["resume", str(notes), "--devices", "2"], "not a readable checkpoint"),
    ]
    if torch.cuda.is_available():
        cases.pop(1)
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert message in _sentence(result) and "Starting 2 processes" not in result.output


def test_recommend_says_when_even_batch_1_does_not_fit() -> None:
    result = runner.invoke(
        app,
        ["recommend", "--mode", "full", "--vram", "0.5", "--compute-capability", "8.0", "--json"],
    )
    assert result.exit_code == 0, result.output
    advice = json.loads(result.output)["recommendations"][0]
    assert "even batch 1 needs about" in advice["reason"]
    assert advice["estimated_peak_gb"] > 0.5
