"""Resume: exact continuation, LR semantics, the seed's recipes and clear refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import fakedet_command, make_folder_dataset, signal_when_written, tiny_train_args
from fakedet.checkpoints.files import load_checkpoint
from fakedet.cli import app
from fakedet.errors import ConfigError
from fakedet.training.schedule import build_schedule, resumed_schedule

runner = CliRunner()
TIMING_KEYS = {"images_per_sec", "epoch_time_s"}


def _without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in history]


def _assert_same_weights(a: Path, b: Path) -> None:
    first, second = load_checkpoint(a).model_state, load_checkpoint(b).model_state
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def _assert_same_run(reference: Path, resumed: Path) -> None:
    """The two output folders end with the same weights and, timing aside, the same history."""
    _assert_same_weights(reference / "latest_model.pt", resumed / "latest_model.pt")
    reference_history = json.loads((reference / "training_history.json").read_text())
    resumed_history = json.loads((resumed / "training_history.json").read_text())
    assert _without_timing(reference_history) == _without_timing(resumed_history)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_resume_from_epoch_2_is_bit_exact(
    folder_dataset: Path, tmp_path: Path, workers: str
) -> None:
    full_run, resumed_run = tmp_path / "full", tmp_path / "resumed"
    extra = (
        "--epochs",
        "4",
        "--save-every",
        "1",
        "--num-workers",
        workers,
        "--blur-prob",
        "0.5",
        "--jpeg-prob",
        "0.5",
    )
    result = runner.invoke(app, tiny_train_args(folder_dataset, full_run, *extra))
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["resume", str(full_run / "checkpoint_epoch_2.pt"), "--output-dir", str(resumed_run)]
    )
    assert result.exit_code == 0, result.output
    assert "LR" in result.output and "schedule unchanged" in result.output
    assert "spectrum read fitted" not in result.output  # the checkpoint's read, not a new fit
    _assert_same_run(full_run, resumed_run)


def test_resume_lr_sequences() -> None:
    saved, _ = build_schedule(
        1e-3, 1e-5, warmup_epochs=1, epochs=4, steps_per_epoch=5, shape="cosine"
    )
    same, notes = resumed_schedule(saved, 4, 4, 2, 5, 10, None, False, 1, 1e-5)
    assert [same.lr_at(s) for s in range(20)] == [saved.lr_at(s) for s in range(20)]
    assert notes == []

    longer, _ = resumed_schedule(saved, 4, 8, 4, 5, 20, None, False, 1, 1e-5)
    assert [longer.lr_at(s) for s in range(5)] == [saved.lr_at(s) for s in range(5)]  # same warmup
    assert longer.lr_at(39) > longer.lr_at(40) == pytest.approx(1e-5)  # ends at the new last step
    assert longer.lr_at(20) > saved.lr_at(20)  # no wrap-around, no early floor

    new_lr, notes = resumed_schedule(saved, 4, 4, 2, 5, 10, 5e-4, False, 1, 1e-5)
    for step in range(20):  # same shape: the same fraction of the way from min_lr to the peak
        saved_fraction = (saved.lr_at(step) - 1e-5) / (1e-3 - 1e-5)
        assert (new_lr.lr_at(step) - 1e-5) / (5e-4 - 1e-5) == pytest.approx(
            saved_fraction, abs=0.02
        )
    assert new_lr.lr_at(4) == pytest.approx(5e-4)  # peak is the new LR, same step
    assert new_lr.lr_at(20) == pytest.approx(1e-5)
    assert any("base LR" in note for note in notes)

    fresh, notes = resumed_schedule(saved, 4, 6, 2, 5, 10, 3e-4, True, 1, 1e-5)
    assert fresh.lr_at(10) == pytest.approx(3e-4 / 5)  # warmup starts again at the resume step
    assert fresh.lr_at(14) == pytest.approx(3e-4)
    assert fresh.lr_at(30) == pytest.approx(1e-5)
    assert any("fresh warmup" in note for note in notes)


def test_seed_resume_recipes_run(folder_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, tiny_train_args(folder_dataset, out, "--epochs", "1"))
    assert result.exit_code == 0, result.output
    latest, best = str(out / "latest_model.pt"), str(out / "best_model.pt")
    recipes = [
        ["--resume", latest, "--epochs", "1"],
        ["--resume", latest, "--epochs", "1", "--lr", "0.0001", "--reset_lr"],
        ["--resume", best, "--epochs", "1", "--lr", "0.0003", "--reset_lr", "--reset_scheduler"],
    ]
    for recipe in recipes:
        # One epoch more than the checkpoint resumed (best_model.pt: whichever epoch was best).
        expected = load_checkpoint(Path(recipe[1])).state.epoch + 1
        result = runner.invoke(app, ["train", "--data_root", str(folder_dataset), *recipe])
        assert result.exit_code == 0, result.output
        assert load_checkpoint(out / "latest_model.pt").state.epoch == expected


def test_finished_run_without_epochs_is_refused(folder_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert runner.invoke(app, tiny_train_args(folder_dataset, out, "--epochs", "1")).exit_code == 0
    result = runner.invoke(app, ["resume", str(out)])
    assert result.exit_code == 2
    assert "already finished all 1 epochs" in result.output


def test_mode_change_and_missing_data_root_are_refused(tmp_path: Path) -> None:
    data = make_folder_dataset(tmp_path / "data", per_class=4)
    out = tmp_path / "run"
    assert runner.invoke(app, tiny_train_args(data, out, "--epochs", "1")).exit_code == 0
    result = runner.invoke(app, ["train", "--resume", str(out), "--full", "--epochs", "1"])
    assert result.exit_code == 2 and "mode cannot change" in result.output
    result = runner.invoke(
        app, ["train", "--resume", str(out), "--img-size", "96", "--epochs", "1"]
    )
    assert result.exit_code == 2 and "img_size cannot change" in result.output
    shutil.rmtree(data)
    result = runner.invoke(app, ["resume", str(out), "--epochs", "1"])
    assert result.exit_code == 2 and "no longer exists" in result.output
    result = runner.invoke(app, ["resume", str(tmp_path / "nothing.pt")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_sigterm_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    data = make_folder_dataset(tmp_path / "data", per_class=16, with_val=False)
    common = ["--batch-size", "2", "--epochs", "3"]
    reference = tmp_path / "reference"
    assert runner.invoke(app, tiny_train_args(data, reference, *common)).exit_code == 0

    interrupted = tmp_path / "interrupted"
    code, output = signal_when_written(
        fakedet_command(*tiny_train_args(data, interrupted, *common)),
        interrupted / "latest_model.pt",
        after=0.05,  # early in epoch 2: on a fast machine the rest of the run takes < 0.3 s
    )
    assert code == 143, output
    state = load_checkpoint(interrupted / "latest_model.pt")
    result = runner.invoke(app, ["resume", str(interrupted)])
    assert result.exit_code == 0, result.output
    _assert_same_run(reference, interrupted)
    assert state.state.global_step > 0


def test_new_batch_size_keeps_the_schedule_in_epochs() -> None:
    """Halving the batch doubles the steps per epoch; the LR at each epoch boundary is kept."""
    saved, _ = build_schedule(
        1e-3, 1e-5, warmup_epochs=1, epochs=4, steps_per_epoch=5, shape="cosine"
    )
    rescaled, notes = resumed_schedule(
        saved, 4, 4, 2, 10, 10, None, False, 1, 1e-5, saved_steps_per_epoch=5
    )
    for epochs_on in range(3):  # epoch boundaries 2, 3, 4: steps 10/20/30 now, 10/15/20 before
        assert rescaled.lr_at(10 + 10 * epochs_on) == pytest.approx(saved.lr_at(10 + 5 * epochs_on))
    assert rescaled.lr_at(29) > rescaled.lr_at(30) == pytest.approx(1e-5)
    assert any("steps per epoch" in note for note in notes)

    # With more epochs too: the curve --epochs alone would give, at every epoch boundary.
    longer, _ = resumed_schedule(saved, 4, 6, 2, 10, 10, None, False, 1, 1e-5, 5)
    same_batch, _ = resumed_schedule(saved, 4, 6, 2, 5, 10, None, False, 1, 1e-5)
    for epochs_on in range(5):
        assert longer.lr_at(10 + 10 * epochs_on) == pytest.approx(
            same_batch.lr_at(10 + 5 * epochs_on)
        )
    assert longer.lr_at(49) > longer.lr_at(50) == pytest.approx(1e-5)  # 4 more epochs of 10


def test_resume_with_a_smaller_batch_after_running_out_of_memory(
    folder_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    assert runner.invoke(app, tiny_train_args(folder_dataset, out, "--epochs", "1")).exit_code == 0
    assert load_checkpoint(out / "latest_model.pt").steps_per_epoch == 2  # 16 images / 8
    result = runner.invoke(
        app,
        ["resume", str(out), "--epochs", "1", "--batch-size", "2",
         "--gradient-accumulation-steps", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "4 steps per epoch instead of 2" in result.output  # 8 batches of 2, 2 per step
    state = load_checkpoint(out / "latest_model.pt")
    assert (state.state.epoch, state.batch_size, state.state.global_step) == (2, 2, 2 + 4)
    assert state.config.gradient_accumulation_steps == 2


def test_batch_size_cannot_change_mid_epoch() -> None:
    from fakedet.training.resume import resume_config

    checkpoint = load_checkpoint(Path(__file__).parent / "fixtures" / "checkpoint_0.1.0.pt")
    checkpoint.state.batches_done = 1  # as if interrupted in the middle of an epoch
    with pytest.raises(ConfigError, match="middle of an epoch"):
        resume_config(checkpoint, {"batch_size": 8, "data_root": Path(".")}, None, None)
    # The batch it was trained with may be given again.
    config = resume_config(checkpoint, {"batch_size": "4", "data_root": Path(".")}, 1, None)
    assert config.batch_size == 4


def test_resume_writes_beside_the_checkpoint_not_where_it_was_recorded(tmp_path: Path) -> None:
    data = make_folder_dataset(tmp_path / "data", per_class=4)
    original = tmp_path / "original"
    assert runner.invoke(app, tiny_train_args(data, original, "--epochs", "1")).exit_code == 0

    # A run folder moved (or copied to another machine): the old path must not come back.
    moved = tmp_path / "moved"
    shutil.move(original, moved)
    result = runner.invoke(app, ["resume", str(moved), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert not original.exists()
    assert load_checkpoint(moved).state.epoch == 2
    assert [row["epoch"] for row in json.loads((moved / "training_history.json").read_text())] == [
        1,
        2,
    ]

    # A checkpoint received alone, whose recorded folder is elsewhere: resumed beside it.
    received = tmp_path / "inbox" / "model.pt"
    received.parent.mkdir()
    shutil.copy(moved / "latest_model.pt", received)
    result = runner.invoke(app, ["resume", str(received), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(received.parent / "latest_model.pt").state.epoch == 3
    assert load_checkpoint(moved).state.epoch == 2  # the recorded folder was not written

    # --output-dir still wins.
    chosen = tmp_path / "chosen"
    result = runner.invoke(
        app, ["resume", str(received), "--epochs", "1", "--output-dir", str(chosen)]
    )
    assert result.exit_code == 0, result.output
    assert load_checkpoint(chosen).state.epoch == 3


def test_a_stop_after_an_epoch_s_last_step_resumes_to_the_same_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM noted during epoch 2's last step: the run saves with every batch of the epoch
    done and no row for it yet. The resumed row (its LR too) matches an uninterrupted run's."""
    import signal

    from fakedet.training import run as run_module
    from fakedet.training.callbacks import Callback, default_callbacks

    class StopAtEpochTwosLastStep(Callback):
        def on_optimizer_step(self, trainer, loss) -> None:  # type: ignore[no-untyped-def]
            batches = trainer.parts.batches_per_epoch
            if trainer.state.global_step == 2 * batches == 2 * trainer.state.batches_done:
                trainer.stop.received = signal.SIGTERM

    data = make_folder_dataset(tmp_path / "data", per_class=8, with_val=False)
    common = ["--batch-size", "4", "--epochs", "3"]
    reference = tmp_path / "reference"
    assert runner.invoke(app, tiny_train_args(data, reference, *common)).exit_code == 0
    monkeypatch.setattr(
        run_module,
        "default_callbacks",
        lambda *args: [*default_callbacks(*args), StopAtEpochTwosLastStep()],
    )
    interrupted = tmp_path / "interrupted"
    result = runner.invoke(app, tiny_train_args(data, interrupted, *common))
    assert result.exit_code == 143, result.output
    saved = load_checkpoint(interrupted / "latest_model.pt").state
    assert saved.batches_done > 0 and len(saved.history) == 1  # epoch 2 trained, not recorded
    monkeypatch.undo()
    result = runner.invoke(app, ["resume", str(interrupted)])
    assert result.exit_code == 0, result.output
    _assert_same_run(reference, interrupted)
