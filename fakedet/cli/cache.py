"""`fakedet cache DATA`: decode a dataset's images once into the decoded cache training reads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fakedet.cli.base import console, errors_to_exit_codes, progress_bar


def cache(
    data_root: Annotated[Path, typer.Argument(metavar="DATA", help="Dataset folder.")],
    max_side: Annotated[
        int | None,
        typer.Option(
            "--max-side",
            min=32,
            help="Keep at most this many pixels per side (the centre crop; never resampled), "
            "at least the training crop. Default: native resolution.",
        ),
    ] = None,
) -> None:
    """Decode the train and val images of DATA into uint8 pixels in a memory-mapped file.

    Every later `fakedet train DATA` reads the pixels from it instead of decoding; a file added
    or changed since is decoded as before (run the command again to add it). Example:

        fakedet cache demo && fakedet train demo --epochs 5
    """
    with errors_to_exit_codes():
        from fakedet.config import TrainingConfig
        from fakedet.data.decoded_cache import build_decoded_cache
        from fakedet.sources.layouts import index_dataset

        index = index_dataset(TrainingConfig(data_root=data_root))
        paths = [sample.path for sample in (*index.train, *index.val)]
        with progress_bar("cache") as progress:
            task = progress.add_task("images", total=len(paths))
            summary = build_decoded_cache(
                data_root,
                paths,
                max_side,
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        verb = "Decoded" if summary.rebuilt else "Up to date:"
        console.print(
            f"{verb} {summary.images} images ({summary.megabytes:.0f} MB"
            + (f", {summary.unreadable} unreadable left out" if summary.unreadable else "")
            + f") in {summary.folder} ({summary.seconds:.1f} s).",
            highlight=False,
        )
