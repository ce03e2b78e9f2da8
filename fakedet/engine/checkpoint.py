"""Checkpoint files: atomic writes (a kill never leaves half a file) and code-free loads."""

from __future__ import annotations

import errno
import io
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from fakedet.errors import CheckpointError, TrainingError

# What every fakedet checkpoint holds (the seed's keys plus ours).
REQUIRED_KEYS = (
    "epoch",
    "global_step",
    "model_state_dict",
    "optimizer_state_dict",
    "scheduler_state_dict",
    "scaler_state_dict",
    "best_val_loss",
    "train_history",
    "val_history",
    "config",
    "mode",
    "fakedet_version",
)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a temp file beside `path`, fsync it, then rename it over `path`.

    Either the old file or the whole new one exists at every moment, also across a crash.

    Raises:
        TrainingError: the disk is full or the file cannot be written; `path` is left untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except OSError as exc:
        Path(temp_name).unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise TrainingError(
                f"Could not write {path}: the disk is full or the file size limit was hit "
                f"({exc.strerror}); the previous {path.name} is intact. Free space and resume."
            ) from None
        raise TrainingError(f"Could not write {path}: {exc.strerror or exc}.") from None
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Serialise `state` (tensors and plain values only) and write it atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a fakedet checkpoint on the CPU without ever running code from it.

    Raises:
        CheckpointError: missing, truncated, not a checkpoint, carrying pickled code, or lacking
            the keys a fakedet checkpoint has.
    """
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint {path} does not exist; pass a .pt file written by fakedet train."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        detail = text.split("WeightsUnpickler error:", 1)[-1].split("Check the documentation")[0]
        detail = " ".join(detail.split()).split(" was not an allowed")[0]
        if "global" not in detail.lower():
            # Not a refused object but bytes that are no pickle at all: a file of another kind.
            raise CheckpointError(
                f"{path} is not a readable checkpoint (not a PyTorch file: {detail[:120]})."
            ) from None
        raise CheckpointError(
            f"Refused to load {path}: it holds objects other than tensors and plain values "
            f"(possibly code), and fakedet loads checkpoints with weights_only=True"
            f"{f' ({detail[:160]})' if detail else ''}; nothing in it was run."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        reason = (
            str(exc).strip().splitlines()[0][:160] if str(exc).strip() else exc.__class__.__name__
        )
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or another format: {reason})."
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path} is not a fakedet checkpoint (it holds a {type(state).__name__}, not a dict)."
        )
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(
            f"{path} is not a fakedet checkpoint: it lacks {', '.join(missing)} "
            "(a bare state_dict or another tool's file?)."
        )
    return state
