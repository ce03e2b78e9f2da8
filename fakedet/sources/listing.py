"""Listing a dataset's image files, with each file's size and mtime taken in the same pass.

At a million files the listing is most of a warm start, so it works on plain strings (a `Path`
per file cost ~15 s there) and stats each image while its folder is being read: a second pass
of `os.stat` by full path took 2-3 s more than the stat inside the pass (benchmarks/index.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path

import numpy as np

from fakedet.sources.samples import IMAGE_SUFFIXES

# A run of one folder's image files: (folder, names, sizes, mtimes).
_Run = tuple[str, list[str], list[int], list[int]]


@dataclass
class ImageListing:
    """Image files in `Path.rglob` order (as strings), with their size (-1: could not be
    stat'ed) and mtime in ns, row by row; `folders` holds (folder, first row, end row) for each
    run of rows that share a folder."""

    paths: list[str]
    size: np.ndarray
    mtime_ns: np.ndarray
    folders: list[tuple[str, int, int]]

    def subset(self, rows: np.ndarray) -> ImageListing:
        """The listing of `rows` only (an int array, in the order given); no folder runs."""
        if len(rows) == len(self.paths):
            return self  # every row, in order (rows come sorted from the runs)
        paths = [self.paths[row] for row in rows.tolist()]
        return ImageListing(paths, self.size[rows], self.mtime_ns[rows], [])


def scan_image_files(
    data_root: Path, unreadable: list[tuple[str, str]] | None = None
) -> ImageListing:
    """Every image file under `data_root` (by suffix, any case), as `str(data_root / relative)`,
    in `Path.rglob`'s sorted order, with its size and mtime.

    Folders are read depth first with their entries sorted by name, which is the order sorting
    the whole list part by part would give, without sorting a million strings. os.scandir hands
    over the entry types, so only image files cost a stat. Folder symlinks are followed (datasets
    are often assembled from links), each real folder once, so a link loop ends. Folders that
    cannot be read go to `unreadable` as (path, reason).
    """
    paths: list[str] = []
    sizes: list[int] = []
    mtimes: list[int] = []
    folders: list[tuple[str, int, int]] = []
    root = str(Path(data_root))
    root = "" if root == "." else root  # Path(".") / "x" is "x", not "./x"
    visited: set[str] = set()
    # A str is a folder still to read; a tuple (folder, names, sizes, mtimes) a run of its files
    # to emit. Popped from the end, so each folder's items are pushed in reverse name order.
    pending: list[str | _Run] = [root]
    by_name = attrgetter("name")
    suffixes = IMAGE_SUFFIXES
    while pending:
        item = pending.pop()
        if not isinstance(item, str):
            folder, names, run_sizes, run_mtimes = item
            start = len(paths)
            base = os.path.join(folder, "")
            paths.extend([base + name for name in names])
            sizes.extend(run_sizes)
            mtimes.extend(run_mtimes)
            folders.append((folder, start, len(paths)))
            continue
        real = os.path.realpath(item or ".")
        if real in visited:
            continue
        visited.add(real)
        try:
            with os.scandir(item or ".") as scan:
                entries = sorted(scan, key=by_name)
        except OSError as exc:
            if unreadable is not None:
                unreadable.append((item or ".", exc.strerror or str(exc)))
            continue
        found: list[str | _Run] = []
        names: list[str] = []
        run_sizes: list[int] = []
        run_mtimes: list[int] = []
        for entry in entries:
            name = entry.name
            if entry.is_dir():
                if names:
                    found.append((item, names, run_sizes, run_mtimes))
                    names, run_sizes, run_mtimes = [], [], []
                found.append(os.path.join(item, name))
                continue
            # os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES, inline: this loop runs once
            # per file of the dataset.
            dot = name.rfind(".")
            if dot <= 0 or name[dot:].lower() not in suffixes or not name[:dot].lstrip("."):
                continue
            if not entry.is_file():
                continue
            try:
                stat = entry.stat()
                run_sizes.append(stat.st_size)
                run_mtimes.append(stat.st_mtime_ns)
            except OSError:  # gone since the listing: size -1 never matches a cached entry
                run_sizes.append(-1)
                run_mtimes.append(0)
            names.append(name)
        if names:
            found.append((item, names, run_sizes, run_mtimes))
        pending.extend(reversed(found))
    return ImageListing(paths, np.array(sizes, np.int64), np.array(mtimes, np.int64), folders)


def list_image_files(data_root: Path, unreadable: list[tuple[str, str]] | None = None) -> list[str]:
    """The paths of `scan_image_files`."""
    return scan_image_files(data_root, unreadable).paths
