"""Checkpoint files: the schema, atomic writes, loads that never run code, and 0.1.0 files."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import make_folder_dataset
from fakedet.checkpoints.files import load_checkpoint, save_checkpoint
from fakedet.checkpoints.schema import Checkpoint, merge_history, split_history
from fakedet.cli import app
from fakedet.errors import CheckpointError, WriteError
from fakedet.io import atomic_write_bytes

FIXTURES = Path(__file__).parent / "fixtures"
V010 = FIXTURES / "checkpoint_0.1.0.pt"  # latest_model.pt written by fakedet 0.1.0
runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint() -> Checkpoint:
    return load_checkpoint(V010)


def test_a_0_1_0_checkpoint_loads_into_the_typed_schema(checkpoint: Checkpoint) -> None:
    raw = torch.load(V010, map_location="cpu", weights_only=True)
    assert checkpoint.fakedet_version == "0.1.0"
    assert checkpoint.model_name == "fast" and checkpoint.img_size == 64
    assert (checkpoint.state.epoch, checkpoint.state.global_step) == (2, 4)
    assert checkpoint.batch_size == 4 and checkpoint.steps_per_epoch == 2
    # 0.1.0 stored history twice; the seed's two lists alone rebuild the merged rows.
    assert checkpoint.state.history == raw["history"]
    # The stored config is read through TrainingConfig: fields added since get their defaults.
    assert checkpoint.config.plots is True
    assert checkpoint.config.lr == raw["config"]["lr"]


def test_save_then_load_round_trips(checkpoint: Checkpoint, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(path, checkpoint)
    again = load_checkpoint(path)
    assert again.state == checkpoint.state
    assert torch.equal(again.state.rng_state["torch"], checkpoint.state.rng_state["torch"])
    assert again.config == checkpoint.config
    for name, tensor in checkpoint.model_state.items():
        assert torch.equal(again.model_state[name], tensor)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert "history" not in raw and raw["fakedet_version"] == "0.1.0"
    assert not list(tmp_path.glob(".*.tmp"))


def test_history_split_and_merge_are_inverse() -> None:
    history = [
        {"epoch": 1, "train_loss": 0.5, "lr": 1e-3},
        {"epoch": 2, "train_loss": 0.4, "lr": 1e-3, "val_loss": 0.3, "val_auc": 0.9},
    ]
    train_rows, val_rows = split_history(history)
    assert val_rows == [{"epoch": 2, "val_loss": 0.3, "val_auc": 0.9}]
    assert merge_history(train_rows, val_rows) == history


def test_a_stored_config_this_version_rejects_is_a_clear_error(
    checkpoint: Checkpoint, tmp_path: Path
) -> None:
    raw = checkpoint.to_dict()
    raw["config"] = {**raw["config"], "img_size": 70}
    path = tmp_path / "odd.pt"
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=r"written by fakedet 0\.1\.0 .*img_size"):
        load_checkpoint(path)


def test_failed_write_leaves_previous_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "latest_model.pt"
    atomic_write_bytes(path, b"old contents")

    def disk_full(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(WriteError, match="disk is full"):
        atomic_write_bytes(path, b"new contents")
    assert path.read_bytes() == b"old contents"
    assert not list(tmp_path.glob(".*.tmp"))


class _Payload:
    """Unpickling this would create a marker file: what a malicious checkpoint does."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def test_pickled_callable_is_refused_and_never_runs(checkpoint: Checkpoint, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    state = checkpoint.to_dict()
    state["extra"] = _Payload(str(marker))
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(path)
    assert not marker.exists()


def test_plain_pickle_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pickle.pt"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_truncated_and_foreign_files_are_clear_errors(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(V010.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(truncated)
    bare = tmp_path / "bare.pt"
    torch.save({"weight": torch.ones(1)}, bare)
    with pytest.raises(CheckpointError, match="lacks epoch"):
        load_checkpoint(bare)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_0_1_0_checkpoint_is_inspected_validated_and_resumed(tmp_path: Path) -> None:
    info = runner.invoke(app, ["inspect-checkpoint", str(V010), "--json"])
    assert info.exit_code == 0, info.output
    described = json.loads(info.output)
    assert described["fakedet_version"] == "0.1.0" and described["epoch"] == 2
    assert described["parameters"] > 2_000_000

    # The dataset that trained it (tests/fixtures/README.md), rebuilt in a new place.
    data = make_folder_dataset(tmp_path / "data", per_class=4)
    validated = runner.invoke(app, ["validate", str(V010), str(data), "--device", "cpu", "--json"])
    assert validated.exit_code == 0, validated.output
    metrics = json.loads(validated.output)["metrics"]
    saved = load_checkpoint(V010).state.history[-1]
    assert metrics["loss"] == pytest.approx(saved["val_loss"], rel=1e-5)

    run = tmp_path / "run"
    run.mkdir()
    (run / "latest_model.pt").write_bytes(V010.read_bytes())
    args = ["resume", str(run), "--epochs", "1", "--data-root", str(data), "--device", "cpu"]
    resumed = runner.invoke(app, [*args, "--num-workers", "0"])
    assert resumed.exit_code == 0, resumed.output
    after = load_checkpoint(run / "latest_model.pt")
    assert after.state.epoch == 3
    assert [row["epoch"] for row in after.state.history] == [1, 2, 3]
    # Outputs go beside the checkpoint, never to the folder recorded inside it.
    history = json.loads((run / "training_history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3]


def _not_checkpoints(folder: Path) -> list[Path]:
    """Files a user may pass by mistake, none of them a checkpoint."""
    import zipfile

    files = {
        "notes.pt": b"some notes, not a model\n",
        "random.pt": bytes(range(256)) * 12,
        "empty.pt": b"",
        "legacy.pt": pickle.dumps({"epoch": 1}, protocol=2),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    with zipfile.ZipFile(folder / "zip.pt", "w") as archive:
        archive.writestr("archive/data.pkl", b"not what torch expects")
    torch.save(torch.ones(2), folder / "tensor.pt")
    return sorted(folder.glob("*.pt"))


@pytest.mark.parametrize("command", ["inspect-checkpoint", "validate", "predict", "resume"])
def test_any_file_that_is_not_a_checkpoint_is_one_sentence_and_exit_2(
    tmp_path: Path, command: str
) -> None:
    data = make_folder_dataset(tmp_path / "data", per_class=1)
    extra = {
        "inspect-checkpoint": [],
        "validate": [str(data)],
        "predict": [str(data / "val" / "real" / "0.png")],
        "resume": [],
    }[command]
    for path in _not_checkpoints(tmp_path):
        result = runner.invoke(app, [command, str(path), *extra])
        assert result.exit_code == 2, (path.name, result.output)
        assert "Unexpected error" not in result.output and "Traceback" not in result.output
        assert "not a readable checkpoint" in result.output or (
            "not a fakedet checkpoint" in result.output
        ), (path.name, result.output)
