"""Checkpoint files: atomic saves (a kill never leaves half a file) and code-free loads."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import torch

from fakedet.checkpoints.schema import Checkpoint
from fakedet.errors import CheckpointError
from fakedet.io import atomic_write_bytes


def checkpoint_path(path: Path) -> Path:
    """A checkpoint file, or an output folder meaning its latest_model.pt."""
    return path / "latest_model.pt" if path.is_dir() else path


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Serialise `checkpoint` (tensors and plain values only) and write it atomically.

    Raises:
        WriteError: the disk is full; the previous file at `path` is left whole.
    """
    buffer = io.BytesIO()
    torch.save(checkpoint.to_dict(), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> Checkpoint:
    """Load a fakedet checkpoint (file, or output folder) on the CPU without running code from it.

    Raises:
        CheckpointError: missing, truncated, not a checkpoint, carrying pickled code, or lacking
            the keys a fakedet checkpoint has.
    """
    path = checkpoint_path(path)
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
    except Exception as exc:  # foreign bytes reach torch.load's parsers as many exception types
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        message = message.split(" (Could this error message be improved?")[0]
        reason = f"{exc.__class__.__name__}: {message}" if message else exc.__class__.__name__
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or another format: {reason[:160]})."
        ) from None
    return Checkpoint.from_dict(state, str(path))
