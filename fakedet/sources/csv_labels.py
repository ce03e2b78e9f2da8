"""CSV labels: train.csv + val.csv, or one labels.csv with a split column (paths relative to root)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fakedet.errors import DataError
from fakedet.sources.samples import (
    TRAIN_FOLDERS,
    VAL_FOLDERS,
    DatasetIndex,
    Sample,
    stratified_split,
)

_TEXT_LABELS = {"real": 1.0, "fake": 0.0}


def _rows(row_numbers: list[int]) -> str:
    shown = ", ".join(str(number) for number in row_numbers[:10])
    more = f" and {len(row_numbers) - 10} more" if len(row_numbers) > 10 else ""
    return f"row{'s' if len(row_numbers) > 1 else ''} {shown}{more}"


def _parse_label(value: object) -> float | None:
    text = str(value).strip().lower()
    if text in _TEXT_LABELS:
        return _TEXT_LABELS[text]
    try:
        number = float(text)
    except ValueError:
        return None
    return number if 0.0 <= number <= 1.0 else None


def read_label_csv(
    csv_path: Path, data_root: Path, skip_missing: bool, need_split: bool = False
) -> tuple[list[tuple[Sample, str]], list[tuple[str, str]]]:
    """Rows of one CSV as (sample, split) pairs, plus (path, reason) for skipped missing files.

    Row numbers in errors are the file's line numbers (the header is line 1).

    Raises:
        DataError: unreadable CSV, missing column, bad label, or missing file without skip_missing.
    """
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{csv_path} is not a readable CSV file ({exc}).") from None
    required = ["path", "label"] + (["split"] if need_split else [])
    missing_columns = [column for column in required if column not in frame.columns]
    if missing_columns:
        raise DataError(
            f"{csv_path} lacks the column(s) {', '.join(missing_columns)}; "
            f"it has {', '.join(frame.columns) or 'none'} (needed: {', '.join(required)})."
        )
    labels = [_parse_label(value) for value in frame["label"]]
    bad_labels = [number + 2 for number, label in enumerate(labels) if label is None]
    if bad_labels:
        raise DataError(
            f"{csv_path}: {_rows(bad_labels)} {'have' if len(bad_labels) > 1 else 'has'} a label "
            "that is neither a number in [0, 1] "
            "nor 'real'/'fake'."
        )
    rows: list[tuple[Sample, str]] = []
    missing_rows: list[int] = []
    skipped: list[tuple[str, str]] = []
    splits = frame["split"] if need_split else ["train"] * len(frame)
    for number, (relative, label, split) in enumerate(
        zip(frame["path"], labels, splits, strict=True)
    ):
        path = data_root / relative
        if not path.is_file():
            missing_rows.append(number + 2)
            skipped.append((str(path), f"listed in {csv_path.name} line {number + 2} but missing"))
            continue
        group = str(frame["generator"].iloc[number]).strip() if "generator" in frame else ""
        rows.append((Sample(str(path), float(label), group), str(split).strip().lower()))
    if missing_rows and not skip_missing:
        raise DataError(
            f"{csv_path}: {_rows(missing_rows)} name files that do not exist under {data_root}; "
            "fix the paths or pass --skip-missing to go on without them."
        )
    return rows, skipped


def discover_csv(data_root: Path, val_split: float, seed: int, skip_missing: bool) -> DatasetIndex:
    """Index a CSV-labelled dataset: train.csv (+ val.csv), or labels.csv with a split column."""
    train_csv, val_csv, labels_csv = (
        data_root / name for name in ("train.csv", "val.csv", "labels.csv")
    )
    if train_csv.is_file():
        train_rows, skipped = read_label_csv(train_csv, data_root, skip_missing)
        train = [sample for sample, _ in train_rows]
        if val_csv.is_file():
            val_rows, val_skipped = read_label_csv(val_csv, data_root, skip_missing)
            return DatasetIndex(
                train,
                [s for s, _ in val_rows],
                "CSV (train.csv + val.csv)",
                "val.csv",
                skipped + val_skipped,
            )
        train, val = stratified_split(train, val_split, seed)
        return DatasetIndex(train, val, "CSV (train.csv)", f"{val_split:.0%} of train.csv", skipped)
    if labels_csv.is_file():
        rows, skipped = read_label_csv(labels_csv, data_root, skip_missing, need_split=True)
        known = (*TRAIN_FOLDERS, *VAL_FOLDERS)
        unknown = sorted({split for _, split in rows if split not in known})
        if unknown:
            raise DataError(
                f"{labels_csv}: split value(s) {', '.join(repr(v) for v in unknown)} are neither "
                f"train ({', '.join(TRAIN_FOLDERS)}) nor val ({', '.join(VAL_FOLDERS)}); fix those "
                "rows or leave the split column out of labels.csv."
            )
        train = [sample for sample, split in rows if split in TRAIN_FOLDERS]
        val = [sample for sample, split in rows if split in VAL_FOLDERS]
        if not val:
            train, val = stratified_split(train, val_split, seed)
            return DatasetIndex(
                train, val, "CSV (labels.csv)", f"{val_split:.0%} of train rows", skipped
            )
        return DatasetIndex(train, val, "CSV (labels.csv)", "labels.csv split column", skipped)
    raise DataError(
        f"--use-csv was given but {data_root} has neither train.csv nor labels.csv "
        "(columns: path, label[, split])."
    )
