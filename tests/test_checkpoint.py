"""Checkpoint files: atomic writes and loads that never run code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from fakedet.engine.checkpoint import (
    REQUIRED_KEYS,
    atomic_write_bytes,
    load_checkpoint,
    save_checkpoint,
)
from fakedet.errors import CheckpointError, TrainingError


def _minimal_state() -> dict:
    state = {key: 0 for key in REQUIRED_KEYS}
    state["model_state_dict"] = {"weight": torch.ones(3)}
    return state


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(path, _minimal_state())
    assert torch.equal(load_checkpoint(path)["model_state_dict"]["weight"], torch.ones(3))
    assert not list(tmp_path.glob(".*.tmp"))


def test_failed_write_leaves_previous_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "latest_model.pt"
    save_checkpoint(path, _minimal_state())
    before = path.read_bytes()

    def disk_full(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(TrainingError, match="disk is full"):
        atomic_write_bytes(path, b"new contents")
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


class _Payload:
    """Unpickling this would create a marker file: what a malicious checkpoint does."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def test_pickled_callable_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    state = _minimal_state()
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
    good = tmp_path / "good.pt"
    save_checkpoint(good, _minimal_state())
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(truncated)
    bare = tmp_path / "bare.pt"
    torch.save({"weight": torch.ones(1)}, bare)
    with pytest.raises(CheckpointError, match="lacks epoch"):
        load_checkpoint(bare)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
