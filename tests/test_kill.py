"""SIGKILL at random moments of a training run never leaves a half-written checkpoint or history."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import fakedet_command, make_folder_dataset, tiny_train_args

ROUNDS = 8
FRESH_WRITE_TIMEOUT_S = 120.0
# An epoch of this run (4 steps of 4 images, validation, 3 checkpoints and the history) takes
# 0.4-0.75 s on 2 idle cores; a slower epoch stretches the random delay to match.
NOMINAL_EPOCH_S = 0.75
MAX_SLOWDOWN = 6.0

Identity = tuple[int, int, int] | None


def _identity(path: Path) -> Identity:
    """What changes whenever the file is (re)written or atomically replaced; None if absent."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _wait_until_rewritten(
    before: dict[Path, Identity], process: subprocess.Popen, log: Path, what: str
) -> float:
    """Block until every file in `before` exists and differs from its `before` identity, i.e.
    `process` has written it since; returns the time it was seen. Fails on exit or timeout."""
    deadline = time.monotonic() + FRESH_WRITE_TIMEOUT_S
    while any(_identity(path) in (None, old) for path, old in before.items()):
        if process.poll() is not None:
            pytest.fail(f"training exited with {process.returncode} before {what}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {FRESH_WRITE_TIMEOUT_S:.0f} s:\n{_tail(log)}")
        time.sleep(0.01)
    return time.monotonic()


def _load_checkpoint(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any failure to load is the bug under test
        pytest.fail(f"{path.name} does not load after SIGKILL: {error!r}")
    assert isinstance(state, dict), f"{path.name} holds a {type(state).__name__}, not a dict"
    assert "model_state_dict" in state and "epoch" in state, f"{path.name}: {sorted(state)}"
    return state


def test_sigkill_at_random_moments_never_leaves_a_broken_checkpoint(tmp_path: Path) -> None:
    data = make_folder_dataset(tmp_path / "data", per_class=8)
    out = tmp_path / "run"
    command = fakedet_command(
        *tiny_train_args(data, out, "--batch-size", "4", "--epochs", "500", "--save-every", "1")
    )
    # One intra-op thread: with torch's default of one per core, a training process sharing
    # 2 cores with anything else (another test run) slows down tenfold in OpenMP spin-waits.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    latest, history_file = out / "latest_model.pt", out / "training_history.json"
    rng = random.Random(0)
    fresh_seen: list[int] = []
    latest_epochs: list[int] = []
    history_lengths: list[int] = []
    for round_number in range(1, ROUNDS + 1):
        # Whatever earlier rounds left here must be replaced by this round's own process before
        # the kill counts: otherwise the kill could land before training has even started.
        before = {path: _identity(path) for path in (latest, history_file)}
        log = tmp_path / f"round_{round_number}.log"
        with log.open("w") as sink:
            process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
        try:
            # training_history.json is written last in an epoch: once both files are fresh,
            # this round's epoch 1 is saved. The next history write times one whole epoch.
            first = _wait_until_rewritten(
                before, process, log, f"round {round_number}'s first latest_model.pt and history"
            )
            fresh_seen.append(round_number)
            second = _wait_until_rewritten(
                {history_file: _identity(history_file)},
                process,
                log,
                f"round {round_number}'s second history write",
            )
            slowdown = min(MAX_SLOWDOWN, max(1.0, (second - first) / NOMINAL_EPOCH_S))
            # The kill lands anywhere in the next 2-3 epochs: amid training steps or any of the
            # checkpoint_epoch_N.pt, latest_model.pt, best_model.pt and history writes.
            time.sleep(rng.uniform(0.0, 1.5) * slowdown)
            assert process.poll() is None, (
                f"round {round_number}: training ended before the kill:\n{_tail(log)}"
            )
            process.send_signal(signal.SIGKILL)
            assert process.wait(timeout=30) == -signal.SIGKILL
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

        checkpoints = sorted(out.glob("*.pt"))
        assert latest in checkpoints
        for path in checkpoints:
            state = _load_checkpoint(path)
            if path == latest:
                latest_epochs.append(int(state["epoch"]))
        try:
            history = json.loads(history_file.read_text())
        except json.JSONDecodeError as error:
            pytest.fail(f"round {round_number}: training_history.json is broken: {error}")
        assert isinstance(history, list) and len(history) >= 2, history
        assert all(isinstance(row, dict) and "epoch" in row for row in history), history
        history_lengths.append(len(history))

    assert fresh_seen == list(range(1, ROUNDS + 1)), (
        f"rounds that saw their own write: {fresh_seen}"
    )
    assert all(epoch >= 2 for epoch in latest_epochs), latest_epochs
    # Training ran on after the two epochs waited for: several kills caught later epochs' files,
    # and the rounds did not all stop at the same point.
    grown = [
        length > 2 or epoch > 2
        for epoch, length in zip(latest_epochs, history_lengths, strict=True)
    ]
    assert sum(grown) >= 3, (
        f"too few rounds got past epoch 2: latest epochs {latest_epochs}, "
        f"history lengths {history_lengths}"
    )
    assert len(set(latest_epochs)) >= 2, f"every round left the same latest epoch {latest_epochs}"
