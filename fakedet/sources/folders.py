"""Folder layouts: which folder names mark a class (ours and the public datasets'), where the
splits are, and the labelled image files under a root, header-checked.

fakedet's label is realness: 1.0 = real photo, 0.0 = generated. Public datasets label 1 = fake;
the mapping below is by folder name, never by the order folders sort in.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from fakedet.errors import DataError
from fakedet.sources.listing import ImageListing, scan_image_files
from fakedet.sources.samples import (
    TRAIN_FOLDERS,
    VAL_FOLDERS,
    DatasetIndex,
    Sample,
    stratified_split,
)

if TYPE_CHECKING:
    pass


# Folder names (lower-cased) that mark a class, and the layout family each one belongs to.
CLASS_FOLDERS: dict[str, tuple[float, str]] = {
    "real": (1.0, "real/fake"),
    "fake": (0.0, "real/fake"),
    "0_real": (1.0, "ForenSynths (0_real/1_fake)"),
    "1_fake": (0.0, "ForenSynths (0_real/1_fake)"),
    "nature": (1.0, "GenImage (nature/ai)"),
    "ai": (0.0, "GenImage (nature/ai)"),
}


LAYOUT_HELP = (
    "expected DATA_ROOT/train/{real,fake}/ (optionally DATA_ROOT/val/{real,fake}/), "
    "ForenSynths 0_real/1_fake, GenImage nature/ai or CIFAKE REAL/FAKE folders, "
    "or --use-csv with train.csv/val.csv or labels.csv"
)


TEST_LAYOUT_HELP = (
    "expected TEST_ROOT/<generator>/.../{0_real,1_fake}, TEST_ROOT/<generator>/[val/]{nature,ai}, "
    "TEST_ROOT/<generator>/{real,fake} or TEST_ROOT/{real,fake}, or --use-csv with labels.csv or "
    "test.csv (path, label[, generator])"
)


def _image_files(root: Path) -> ImageListing:
    """The image files under `root`; a folder that cannot be read is an error, not a silent gap
    (an unreadable val/ would otherwise turn into a split of train without a word)."""
    unreadable: list[tuple[str, str]] = []
    listing = scan_image_files(root, unreadable)
    if unreadable:
        folder, reason = unreadable[0]
        more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
        raise DataError(
            f"Cannot read the folder {folder}{more}: {reason}; fix its permissions or move it "
            "out of the dataset."
        )
    return listing


def check_image_header(path: str) -> str | None:
    """Why `path` cannot be used as an image, or None when its header reads fine.

    Only the header is read (cheap); truncated pixel data is caught later, when a batch loads it.
    """
    try:
        if Path(path).stat().st_size == 0:
            return "empty file (0 bytes)"
        with Image.open(path) as image:
            width, height = image.size
        if width == 0 or height == 0:
            return "image has zero width or height"
    except Image.DecompressionBombError as exc:
        return f"refused as a decompression bomb ({exc})"
    except OSError as exc:
        return f"not a readable image ({exc.__class__.__name__}: {exc})"
    return None


def _split_of(parts: tuple[str, ...]) -> str | None:
    lowered = [part.lower() for part in parts]
    for name in lowered:
        if name in TRAIN_FOLDERS:
            return "train"
        if name in VAL_FOLDERS:
            return name
    return None


def _class_of(parts: tuple[str, ...]) -> tuple[float, str] | None:
    # The deepest class folder wins, so `fake/real/x.png` would count as real.
    for part in reversed(parts):
        found = CLASS_FOLDERS.get(part.lower())
        if found:
            return found
    return None


def _class_runs(
    listing: ImageListing, root: Path
) -> Iterator[tuple[int, int, tuple[str, ...], float, str]]:
    """(first row, end row, folders under `root`, realness label, layout family) of each run of
    listed images that sits under a class folder; images outside any class folder are left out.

    Each folder's parts and class are worked out once: a million files share a few thousand
    folders, and a `Path` per file cost ~15 s at that size."""
    top = str(root)
    prefix = "" if top == "." else os.path.join(top, "")
    for folder, start, end in listing.folders:
        relative = folder[len(prefix) :] if folder.startswith(prefix) else folder
        parts = tuple(relative.split(os.sep)) if relative else ()
        found = _class_of(parts)
        if found is not None:
            yield start, end, parts, *found


def _labelled_files(
    listing: ImageListing, root: Path
) -> Iterator[tuple[str, tuple[str, ...], float, str]]:
    """(path, its folders under `root`, realness label, layout family) of each labelled image."""
    for start, end, parts, label, family in _class_runs(listing, root):
        for path in listing.paths[start:end]:
            yield path, parts, label, family


def discover_folders(
    data_root: Path, val_split: float, seed: int, listing: ImageListing
) -> DatasetIndex:
    """Index a folder-layout dataset (ours, ForenSynths/NPR, GenImage, CIFAKE), any depth.

    Args:
        listing: the image files under `data_root` (`_image_files`).

    Raises:
        DataError: no labelled image, or a class missing in train or val.
    """
    by_split: dict[str, list[Sample]] = {}
    families: Counter[str] = Counter()
    class_names: set[str] = set()
    split_of: dict[tuple[str, ...], str] = {}
    for path, parts, label, family in _labelled_files(listing, data_root):
        families[family] += 1
        split = split_of.get(parts)
        if split is None:
            class_names.update(part for part in parts if part.lower() in CLASS_FOLDERS)
            split = split_of[parts] = _split_of(parts) or "unsplit"
        by_split.setdefault(split, []).append(Sample(path, label))
    if not by_split:
        raise DataError(f"No labelled images found under {data_root}: {LAYOUT_HELP}.")
    layout = families.most_common(1)[0][0]
    if {"REAL", "FAKE"} & class_names:
        layout = "CIFAKE (REAL/FAKE)"

    val_name = next((name for name in VAL_FOLDERS if name in by_split), None)
    train = by_split.get("train", []) + by_split.get("unsplit", [])
    has_train = "train" in by_split
    if val_name is not None:
        val_source = f"folder '{val_name}'"
        return DatasetIndex(train, by_split[val_name], layout, val_source, [], has_train)
    train, val = stratified_split(train, val_split, seed)
    val_source = f"{val_split:.0%} of train (seeded, stratified)"
    return DatasetIndex(train, val, layout, val_source, [], has_train)


def _group_of(parts: tuple[str, ...], root_name: str) -> str:
    """The first folder under the root above the class folders; the root's name if none."""
    if not parts or parts[0].lower() in CLASS_FOLDERS:
        return root_name
    return parts[0]
