"""The dataset audit: what each split and class is made of, the cheap file features that alone
tell real from fake (shortcuts a detector learns instead of the image), and identical files
across splits or classes (leaks). Pure functions over an index's samples and their records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from fakedet.sources.index_cache import (
    ImageRecords,
    NoteCallback,
    ProgressCallback,
    scan_with_cache,
)
from fakedet.sources.samples import DatasetIndex, Sample

# An AUC this far from 0.5 (>= 0.9 or <= 0.1) means the feature alone nearly tells the classes.
SHORTCUT_AUC = 0.9
# Fewer images of a class than this (in train, with the feature defined) and the AUC is noise.
MIN_PER_CLASS = 5
MAX_EXAMPLES = 10

SHORTCUT_FIXES = {
    "format": "store both classes in one format (re-encode them all to PNG, or all to JPEG over "
    "the same quality range)",
    "jpeg_quality": "re-encode both classes over the same JPEG quality range, or raise "
    "--jpeg-prob so that training re-compresses images at random",
    "width": "crop or resize both classes from the same range of sizes",
    "height": "crop or resize both classes from the same range of sizes",
    "bytes_per_pixel": "re-encode both classes with the same settings (their compression differs)",
    "mode": "convert both classes to the same colour mode (e.g. RGB) on disk",
}
CATEGORICAL = ("format", "mode")


def _quartiles(values: np.ndarray) -> list[float] | None:
    if values.size == 0:
        return None
    return [round(float(value), 1) for value in np.percentile(values, [25, 50, 75])]


def _class_summary(records: ImageRecords, rows: np.ndarray) -> dict[str, Any]:
    formats = Counter(records.formats[code] for code in records.format_code[rows].tolist())
    modes = Counter(records.modes[code] for code in records.mode_code[rows].tolist())
    quality = records.jpeg_quality[rows]
    return {
        "count": int(rows.size),
        "formats": dict(formats.most_common()),
        "jpeg_quality": _quartiles(quality[quality > 0]),
        "width": _quartiles(records.width[rows]),
        "height": _quartiles(records.height[rows]),
        "modes": dict(modes.most_common()),
    }


def _feature_values(records: ImageRecords, name: str, rows: np.ndarray) -> np.ndarray:
    if name == "format":
        return records.format_code[rows]
    if name == "mode":
        return records.mode_code[rows]
    if name == "jpeg_quality":
        return records.jpeg_quality[rows].astype(np.float64)
    if name == "bytes_per_pixel":
        pixels = records.width[rows].astype(np.float64) * records.height[rows]
        return records.size[rows] / pixels
    return getattr(records, name)[rows].astype(np.float64)


def _realness_score(codes: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Each image scored by the share of real images among those with its value (a categorical
    feature has no order, so this order is the best any rule on the feature alone can do: its
    AUC is the feature's in-sample separating power, always >= 0.5)."""
    _, inverse = np.unique(codes, return_inverse=True)
    share = np.bincount(inverse, weights=real) / np.bincount(inverse)
    return share[inverse]


def _describe(records: ImageRecords, name: str, values: np.ndarray, real: np.ndarray) -> str:
    def common(side: np.ndarray) -> str:
        vocabulary = records.formats if name == "format" else records.modes
        code, count = Counter(values[side].tolist()).most_common(1)[0]
        return f"{vocabulary[code]} {count / side.sum():.0%}"

    if name in CATEGORICAL:
        return f"real: {common(real)}, fake: {common(~real)}"
    return f"median real {np.median(values[real]):.3g}, fake {np.median(values[~real]):.3g}"


def shortcuts(records: ImageRecords, rows: np.ndarray, real: np.ndarray) -> list[dict[str, Any]]:
    """For each cheap feature, the AUC with which it alone separates real (positive) from fake
    over `rows` (train), and a warning naming the feature and the fix when it is a shortcut.

    jpeg_quality is judged among the JPEG images only (a format difference is `format`'s warning);
    a feature with fewer than MIN_PER_CLASS images of a class gets auc None.
    """
    found = []
    for name in ("format", "jpeg_quality", "width", "height", "bytes_per_pixel", "mode"):
        values, labels = _feature_values(records, name, rows), real
        if name == "jpeg_quality":
            values, labels = values[values > 0], labels[values > 0]
        auc, warning = None, None
        if min(labels.sum(), (~labels).sum()) >= MIN_PER_CLASS:
            score = _realness_score(values, labels) if name in CATEGORICAL else values
            auc = round(float(roc_auc_score(labels, score)), 3)
            if auc >= SHORTCUT_AUC or auc <= 1 - SHORTCUT_AUC:
                warning = (
                    f"{name} alone separates real from fake in train (AUC {auc:.2f}; "
                    f"{_describe(records, name, values, labels)}): a detector can learn it instead "
                    f"of the image; fix: {SHORTCUT_FIXES[name]}."
                )
        found.append({"feature": name, "auc": auc, "warning": warning})
    return found


def duplicates(
    records: ImageRecords, rows: np.ndarray, splits: np.ndarray, real: np.ndarray
) -> tuple[dict[str, Any], list[str]]:
    """Byte-identical files in both train and val, and under both labels (any split), with the
    warnings they call for.

    Counts are distinct contents; examples are up to MAX_EXAMPLES // 2 pairs of each kind. The
    counts are None when some file of `rows` has no content hash (a scan without with_hash).
    """
    if not records.has_digest[rows].all():
        return {"train_val": None, "cross_class": None, "examples": []}, []
    if rows.size == 0:
        return {"train_val": 0, "cross_class": 0, "examples": []}, []
    words = np.ascontiguousarray(records.digest[rows]).view(np.uint64)  # (N, 2)
    _, content = np.unique(words, axis=0, return_inverse=True)
    content = content.ravel()

    def present(mask: np.ndarray) -> np.ndarray:
        return np.bincount(content, weights=mask, minlength=content.max() + 1) > 0

    in_train = splits == "train"
    kinds = (
        ("train_val", present(in_train) & present(~in_train), in_train),
        ("cross_class", present(real) & present(~real), real),
    )
    found: dict[str, Any] = {"train_val": 0, "cross_class": 0, "examples": []}
    warnings = []
    for kind, shared, side in kinds:
        found[kind] = int(shared.sum())
        pairs = []
        for group in np.flatnonzero(shared)[: MAX_EXAMPLES // 2].tolist():
            members = content == group
            first = rows[np.flatnonzero(members & side)[0]]
            second = rows[np.flatnonzero(members & ~side)[0]]
            pairs.append([records.paths[first], records.paths[second]])
        found["examples"] += pairs
        if pairs:
            where, fix = (
                (
                    "in train and in val",
                    "validation scores are inflated; remove them from one split",
                )
                if kind == "train_val"
                else ("under both labels", "remove them or correct their labels")
            )
            warnings.append(
                f"{found[kind]} image(s) are byte-identical {where} (e.g. {pairs[0][0]} = "
                f"{pairs[0][1]}): {fix}."
            )
    return found, warnings


def audit_records(
    records: ImageRecords, labels: Sequence[float], splits: Sequence[str]
) -> dict[str, Any]:
    """The audit of files with their records, realness labels and split names (row-aligned;
    unreadable files are left out).

    Returns:
        The audit JSON: splits -> class -> summary, shortcuts, duplicates, warnings.
    """
    split_of = np.asarray(splits, dtype=object)
    real = np.asarray(labels, np.float64) >= 0.5
    readable = records.format_code >= 0
    summary: dict[str, dict[str, Any]] = {}
    for split in dict.fromkeys(split_of.tolist()):
        in_split = readable & (split_of == split)
        summary[split] = {
            name: _class_summary(records, np.flatnonzero(in_split & is_class))
            for name, is_class in (("real", real), ("fake", ~real))
        }
    train = np.flatnonzero(readable & (split_of == "train"))
    found = shortcuts(records, train, real[train])
    usable = np.flatnonzero(readable)
    duplicated, duplicate_warnings = duplicates(records, usable, split_of[usable], real[usable])
    warnings = [entry["warning"] for entry in found if entry["warning"]] + duplicate_warnings
    return {"splits": summary, "shortcuts": found, "duplicates": duplicated, "warnings": warnings}


def audit_index(
    index: DatasetIndex,
    data_root: Path,
    with_hash: bool = True,
    on_note: NoteCallback | None = None,
    on_progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Audit the train and val samples of `index` (their records come from the cache; with_hash
    reads every file's bytes once, then the hashes are cached too).

    Returns:
        The audit JSON (see audit_records).
    """
    if index.audit_input is not None:  # what build_index read, hashes included or not needed
        records, labels, splits = index.audit_input
        if not with_hash or records.has_digest.all():
            return audit_records(records, labels, splits)
    samples: list[Sample] = [*index.train, *index.val]
    records = scan_with_cache(data_root, samples, on_note, on_progress, with_hash)
    splits = ["train"] * len(index.train) + ["val"] * len(index.val)
    return audit_records(records, [sample.label for sample in samples], splits)


def audit_lines(audit: dict[str, Any]) -> list[str]:
    """The compact audit printed before training: one line per split, one for shortcuts and
    duplicates (the warnings, in `audit["warnings"]`, go to the reporter's warning)."""
    lines = []
    for split, classes in audit["splits"].items():
        parts = []
        for name, facts in classes.items():
            formats = ", ".join(f"{fmt} {count}" for fmt, count in facts["formats"].items())
            quality = facts["jpeg_quality"]
            jpeg = f", JPEG q{quality[1]:.0f}" if quality else ""
            width, height = facts["width"], facts["height"]
            size = f", {width[1]:.0f}x{height[1]:.0f} px" if width and height else ""
            parts.append(f"{name} {facts['count']} ({formats or 'none'}{jpeg}{size})")
        lines.append(f"audit {split}: " + "; ".join(parts))
    measured = [entry for entry in audit["shortcuts"] if entry["auc"] is not None]
    strongest = max(measured, key=lambda entry: abs(entry["auc"] - 0.5), default=None)
    shortcut_text = (
        f"strongest {strongest['feature']} AUC {strongest['auc']:.2f}" if strongest else "n/a"
    )
    duplicated = audit["duplicates"]
    duplicate_text = (
        "not checked"
        if duplicated["train_val"] is None
        else f"{duplicated['train_val']} train/val, {duplicated['cross_class']} cross-class"
    )
    lines.append(f"audit shortcuts: {shortcut_text}; duplicates: {duplicate_text}")
    return lines
