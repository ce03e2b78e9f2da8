"""`fakedet train` end to end on tiny data, through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import make_folder_dataset, tiny_train_args
from fakedet.checkpoints.files import load_checkpoint
from fakedet.checkpoints.schema import REQUIRED_KEYS
from fakedet.cli import app
from fakedet.plots import PLOT_FILES

runner = CliRunner()


def test_train_writes_the_output_folder(folder_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = tiny_train_args(
        folder_dataset, out, "--save-every", "1", "--use-tensorboard", plots=True
    )
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in (
        "checkpoint_epoch_1.pt",
        "checkpoint_epoch_2.pt",
        "best_model.pt",
        "latest_model.pt",
        "training_history.json",
        "config.yaml",
        "dataset_summary.json",
        *PLOT_FILES,
    ):
        assert (out / name).is_file(), name
    for name in PLOT_FILES:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width >= 300
    assert "hardest.png" in result.output
    history = json.loads((out / "training_history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    for key in (
        "val_loss",
        "val_regression",
        "val_classification",
        "val_ranking",
        "val_accuracy",
        "val_auc",
        "val_ap",
        "val_real_acc",
        "val_fake_acc",
    ):
        assert key in history[-1]
    summary = json.loads((out / "dataset_summary.json").read_text())
    assert summary["splits"]["train"] == {"real": 8, "fake": 8, "total": 16}
    raw = torch.load(out / "latest_model.pt", map_location="cpu", weights_only=True)
    assert set(REQUIRED_KEYS) <= set(raw)
    assert "history" not in raw  # the seed's train_history / val_history, stored once
    assert [row["epoch"] for row in raw["val_history"]] == [1, 2]
    state = load_checkpoint(out / "latest_model.pt")
    assert state.state.history == history
    assert state.state.epoch == 2 and state.model_name == "fast"
    assert state.config.img_size == 64
    assert "val_auc" in result.output or "val AUC" in result.output
    # The spectrum read was fitted before the first step, on the 16 train images, and saved.
    assert "spectrum read fitted on 16 train images" in result.output
    assert bool(state.model_state["coherence_branch.spectrum_read_fitted"])


def test_no_spectrum_read_leaves_that_logit_at_zero(folder_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = tiny_train_args(folder_dataset, out, "--epochs", "1", "--no-spectrum-read")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "spectrum read fitted" not in result.output
    state = load_checkpoint(out / "latest_model.pt")
    assert state.config.spectrum_read is False
    weights = state.model_state
    assert not bool(weights["coherence_branch.spectrum_read_fitted"])
    assert not weights["coherence_branch.spectrum_linear.weight"].any()
    assert not weights["coherence_branch.spectrum_linear.bias"].any()


def test_tensorboard_has_the_spec_tags(folder_dataset: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    result = runner.invoke(
        app, tiny_train_args(folder_dataset, out, "--use-tensorboard", "--epochs", "1")
    )
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(out / "logs"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {
        "train/batch_loss",
        "train/total",
        "train/regression",
        "train/classification",
        "train/ranking",
        "train/learning_rate",
        "val/total",
        "val/regression",
        "val/classification",
        "val/accuracy",
        "val/auc",
    }
    assert expected <= tags


def test_config_file_with_flags_winning(folder_dataset: Path, tmp_path: Path) -> None:
    config_file = tmp_path / "run.yaml"
    config_file.write_text("epochs: 5\nwarmup_epochs: 0\nranking_margin: 0.4\n")
    out = tmp_path / "run"
    result = runner.invoke(
        app, [*tiny_train_args(folder_dataset, out, "--epochs", "1"), "--config", str(config_file)]
    )
    assert result.exit_code == 0, result.output
    import yaml

    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["epochs"] == 1  # the flag wins
    assert resolved["ranking_margin"] == 0.4  # the file fills the rest
    assert resolved["warmup_epochs"] == 0


def test_seed_spellings_are_accepted(folder_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "seed"
    result = runner.invoke(
        app,
        [
            "train",
            "--data_root",
            str(folder_dataset),
            "--epochs",
            "1",
            "--batch_size",
            "8",
            "--lr",
            "0.0001",
            "--img_size",
            "64",
            "--fast_mode",
            "--regression_weight",
            "1.0",
            "--classification_weight",
            "0.3",
            "--ranking_weight",
            "0.2",
            "--output_dir",
            str(out),
            "--num_workers",
            "0",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "latest_model.pt").is_file()


def test_full_mode_trains(folder_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "full"
    result = runner.invoke(app, tiny_train_args(folder_dataset, out, "--full", "--epochs", "1"))
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out / "latest_model.pt").model_name == "full"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], "epochs = 0 is invalid"),
        (["--img-size", "100"], "multiple of 32"),
        (["--batch-size", "lots"], "positive integer or 'auto'"),
    ],
)
def test_bad_values_exit_2_with_one_sentence(
    folder_dataset: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    result = runner.invoke(app, [*tiny_train_args(folder_dataset, tmp_path / "x"), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_dataset_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, tiny_train_args(tmp_path / "nowhere", tmp_path / "x"))
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_no_data_root_at_all_exits_2() -> None:
    result = runner.invoke(app, ["train", "--epochs", "1"])
    assert result.exit_code == 2
    assert "DATA_ROOT" in result.output


def test_one_class_missing_exits_2_before_training(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "d", per_class=3)
    for path in (root / "train" / "fake").iterdir():
        path.unlink()
    result = runner.invoke(app, tiny_train_args(root, tmp_path / "x"))
    assert result.exit_code == 2
    assert "no fake images" in result.output
    assert not (tmp_path / "x" / "latest_model.pt").exists()


def test_plain_lines_when_not_a_terminal(folder_dataset: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        tiny_train_args(
            folder_dataset, tmp_path / "run", "--epochs", "1", "--batch-size", "4",
            "--gradient-accumulation-steps", "2",
        ),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "batch 4 x 2 accumulation = effective batch 8; 2 steps/epoch" in result.output
    assert "epoch 1: train loss" in result.output
    assert "\x1b[" not in result.output  # no terminal control codes in a log


def test_fast_model_learns_the_demo_data(demo_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "learn"
    args = tiny_train_args(demo_dataset, out, "--epochs", "6", "--warmup-epochs", "1")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    history = json.loads((out / "training_history.json").read_text())
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    best = torch.load(out / "best_model.pt", weights_only=True)
    assert best["best_val_loss"] == min(row["val_loss"] for row in history)


def test_help_shows_the_defaults() -> None:
    """Typer renders help as rich markup, where an unescaped "[default: 50]" would vanish."""
    train_help = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert "Number of epochs to train. [default: 50]" in train_help
    resume_help = runner.invoke(app, ["resume", "--help"], env={"COLUMNS": "200"}).output
    assert "--gradient-accumulation-steps" in resume_help
    assert "[default: from the checkpoint]" in resume_help
    flat_help = " ".join(train_help.replace("│", " ").split())
    assert "attention, ~2.9M). [default: fast]" in flat_help
    assert "PydanticUndefined" not in train_help
    validate_help = runner.invoke(app, ["validate", "--help"], env={"COLUMNS": "200"}).output
    assert "Loader workers [default: min(4, cores); min(12, cores) on CUDA]." in validate_help
    assert "Images per batch [default: the checkpoint's]." in validate_help


def test_a_failing_plot_is_a_warning_not_a_failed_run(
    folder_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fakedet import plots

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("no fonts")

    monkeypatch.setattr(plots, "plot_curves", broken)
    out = tmp_path / "run"
    result = runner.invoke(app, tiny_train_args(folder_dataset, out, "--epochs", "1", plots=True))
    assert result.exit_code == 0, result.output
    assert "could not draw the plots (RuntimeError: no fonts)" in " ".join(result.output.split())
    assert (out / "best_model.pt").is_file()


def test_roc_needs_both_classes(tmp_path: Path) -> None:
    import numpy as np

    from fakedet import plots

    assert plots.plot_roc_pr(np.array([0.2, 0.9]), np.array([1.0, 1.0]), tmp_path / "r.png") is None
    assert plots.plot_roc_pr(np.array([0.2, 0.9]), np.array([0.0, 1.0]), tmp_path / "r.png")


def test_batch_size_auto_asks_the_advisor(folder_dataset: Path, tmp_path: Path) -> None:
    args = tiny_train_args(
        folder_dataset, tmp_path / "run", "--epochs", "1", "--batch-size", "auto"
    )
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "batch_size auto -> 16 (no GPU (cpu))" in " ".join(result.output.split())


def test_no_plots_draws_nothing(folder_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, tiny_train_args(folder_dataset, out, "--epochs", "1"))
    assert result.exit_code == 0, result.output
    assert (out / "latest_model.pt").is_file()
    assert not [name for name in PLOT_FILES if (out / name).exists()]


def test_every_config_field_is_a_train_option_of_its_type() -> None:
    """train's parameters are declared one by one; none may go missing or drift in type."""
    import typing

    from fakedet.cli.train import train
    from fakedet.config import TrainingConfig

    hints = typing.get_type_hints(train, include_extras=True)
    for name, field in TrainingConfig.model_fields.items():
        assert name in hints, f"fakedet train has no option for {name}"
        declared = typing.get_args(typing.get_args(hints[name])[0])[0]
        annotation = field.annotation
        if type(None) in typing.get_args(annotation):  # unset means "decided at start"
            (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        expected = annotation if annotation in (bool, int, float, Path) else str
        assert declared is expected, (name, declared, expected)


def test_resume_takes_exactly_the_settings_a_resume_may_change() -> None:
    import inspect

    from fakedet.cli.train import resume
    from fakedet.config import TrainingConfig
    from fakedet.training.resume import RESUME_OVERRIDES

    parameters = set(inspect.signature(resume).parameters)
    assert parameters & set(TrainingConfig.model_fields) == {*RESUME_OVERRIDES, "epochs", "lr"}


def test_a_file_given_as_the_dataset_is_called_a_file(folder_dataset: Path, tmp_path: Path) -> None:
    image = folder_dataset / "train" / "real" / "0.png"
    for extra in ([], ["--devices", "2"]):
        result = runner.invoke(app, tiny_train_args(image, tmp_path / "run", *extra))
        assert result.exit_code == 2, result.output
        assert "is a file, not a dataset folder" in " ".join(result.output.split())


def test_every_train_option_takes_its_help_from_the_config_field() -> None:
    """One source of truth: a field's description is its option's help, word for word, and
    `--dashed-name` its flag; a field cannot get a second, different help text."""
    import typing

    from rich.markup import escape

    from fakedet.cli.train import train
    from fakedet.config import TrainingConfig

    hints = typing.get_type_hints(train, include_extras=True)
    for name, field in TrainingConfig.model_fields.items():
        option = typing.get_args(hints[name])[1]
        flag = f"--{name.replace('_', '-')}"
        # Typer keeps the first flag in `default` (its older calling convention).
        declared = [option.default, *option.param_decls]
        assert any(isinstance(d, str) and flag in d.split("/") for d in declared), name
        assert field.description, f"TrainingConfig.{name} has no description"
        assert option.help.startswith(escape(field.description)), name
