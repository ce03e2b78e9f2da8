"""What `fakedet evaluate` returns: one `GroupResult` per (checkpoint, group, perturbation) and
the `EvaluationReport` around them; `to_dict()` is their JSON, tables and plots their rendering.

Users' scripts parse `evaluate --json`, so the JSON may gain keys but never lose or rename one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from fakedet.evaluation.metrics import TEST_METRICS

# The name of the row that averages a checkpoint's groups under one perturbation.
MEAN_GROUP = "mean"
# The name of the unperturbed column (`fakedet.data.perturb.NONE.name`), always the first.
UNPERTURBED = "none"


def _complement(share: float | None) -> float | None:
    return None if share is None else 1.0 - share


@dataclass(frozen=True)
class GroupResult:
    """One checkpoint's metrics on one group under one perturbation, fake as the positive class.

    The metrics are `fakedet.evaluation.metrics.TEST_METRICS`, None where undefined (`notes`
    says why). `fpr` is the share of real images called fake at the stored threshold, `fnr` of
    fakes called real; `realness_shift` is the mean change of the real images' calibrated
    realness from the unperturbed images.
    """

    checkpoint: str
    group: str
    perturbation: str
    n_real: int
    n_fake: int
    accuracy: float | None
    real_acc: float | None
    fake_acc: float | None
    ap: float | None
    auc: float | None
    eer: float | None
    tpr_at_fpr_1: float | None
    tpr_at_fpr_5: float | None
    ece: float | None
    ece_raw: float | None
    fpr: float | None
    fnr: float | None
    realness_shift: float | None
    notes: list[str]

    @classmethod
    def of_group(
        cls,
        checkpoint: str,
        group: str,
        perturbation: str,
        metrics: dict[str, float | int | None],
        realness_shift: float | None,
        notes: list[str],
    ) -> GroupResult:
        """A row from `group_metrics`' metrics; fpr and fnr follow from the class accuracies."""
        values = {name: metrics[name] for name in TEST_METRICS}
        values["n_real"], values["n_fake"] = int(metrics["n_real"]), int(metrics["n_fake"])
        return cls(
            checkpoint=checkpoint,
            group=group,
            perturbation=perturbation,
            **values,  # type: ignore[arg-type]
            fpr=_complement(metrics["real_acc"]),
            fnr=_complement(metrics["fake_acc"]),
            realness_shift=realness_shift,
            notes=notes,
        )

    @classmethod
    def mean_of(cls, rows: Sequence[GroupResult]) -> GroupResult:
        """The "mean" group as papers report it, over one checkpoint's groups (at least one)
        under one perturbation: the unweighted mean of each metric over the groups that have it
        (None left out); n_real and n_fake are totals, fpr and fnr follow from the means."""

        def mean(name: str) -> float | None:
            values = [getattr(row, name) for row in rows if getattr(row, name) is not None]
            return float(np.mean(values)) if values else None

        counts = ("n_real", "n_fake")
        values: dict[str, Any] = {name: mean(name) for name in TEST_METRICS if name not in counts}
        values["n_real"] = sum(row.n_real for row in rows)
        values["n_fake"] = sum(row.n_fake for row in rows)
        return cls(
            checkpoint=rows[0].checkpoint,
            group=MEAN_GROUP,
            perturbation=rows[0].perturbation,
            **values,
            fpr=_complement(values["real_acc"]),
            fnr=_complement(values["fake_acc"]),
            realness_shift=mean("realness_shift"),
            notes=[f"unweighted mean over {len(rows)} group(s)"],
        )

    @property
    def is_mean(self) -> bool:
        """Whether this is the mean row over the groups."""
        return self.group == MEAN_GROUP

    def to_dict(self) -> dict[str, Any]:
        """The JSON row: every field, in RESULT_KEYS order."""
        return asdict(self)


# The columns of a result row in JSON and CSV, in order.
RESULT_KEYS = tuple(field.name for field in fields(GroupResult))


@dataclass(frozen=True)
class SkippedFile:
    """A test file that was not scored, and why (unreadable, or too small for a detector)."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EvaluationReport:
    """Every checkpoint's rows on every group under every perturbation of one test set.

    `checkpoints` are the checkpoint files, in the order given; `calibrated` says which of them
    carry a calibration map; `perturbations` are the `--perturb` columns, the unperturbed first;
    `processing` the everyday-processing kinds ("processing:jpeg60", ...); `crops` the views
    scored per image. `results` holds, per checkpoint and perturbation, a row per group and then
    the mean row.
    """

    test_root: str
    layout: str
    images: int
    groups: list[str]
    checkpoints: list[str]
    calibrated: dict[str, bool]
    perturbations: list[str]
    processing: list[str]
    crops: int
    results: list[GroupResult]
    skipped: list[SkippedFile]

    def to_dict(self) -> dict[str, Any]:
        """The `evaluate --json` report: plain JSON values, fields in order, the rows and the
        skipped files as their own `to_dict()` gives them (`asdict` recurses alike)."""
        return asdict(self)

    def rows_by_group(self, perturbation: str) -> dict[str, dict[str, GroupResult]]:
        """group -> checkpoint -> row under one perturbation, groups in report order (the mean
        last)."""
        table: dict[str, dict[str, GroupResult]] = {}
        for row in self.results:
            if row.perturbation == perturbation:
                table.setdefault(row.group, {})[row.checkpoint] = row
        return table

    def mean_row(self, perturbation: str, checkpoint: str) -> GroupResult:
        """One checkpoint's mean row under one perturbation (or processing kind).

        Raises:
            KeyError: the report has no such row.
        """
        for row in self.results:
            if row.is_mean and row.perturbation == perturbation and row.checkpoint == checkpoint:
                return row
        raise KeyError(f"no mean row of {checkpoint!r} under {perturbation!r}")

    def processing_columns(self) -> list[str]:
        """The processing summary's rows: the unperturbed, then each processing kind."""
        return [UNPERTURBED, *self.processing]

    def perturbation_kinds(self) -> list[str]:
        """The `--perturb` kinds used ("jpeg", "blur", ...), in order, the unperturbed left out."""
        kinds = (name.split(":")[0] for name in self.perturbations if name != UNPERTURBED)
        return list(dict.fromkeys(kinds))

    def levels_of(self, kind: str) -> list[tuple[float, str]]:
        """(level, perturbation name) of one `--perturb` kind, in the order given."""
        return [
            (float(name.split(":")[1]), name)
            for name in self.perturbations
            if name.startswith(f"{kind}:")
        ]
