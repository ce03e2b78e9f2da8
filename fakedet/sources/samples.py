"""What a dataset index is made of: labelled samples, the splits, and the folder names of splits.

fakedet's label is realness: 1.0 = real photo, 0.0 = generated.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from fakedet.sources.index_file import ImageRecords

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}

TRAIN_FOLDERS = ("train", "training")
# In order of preference: a dataset with both val/ and test/ validates on val/.
VAL_FOLDERS = ("val", "valid", "validation", "test")


class Sample(NamedTuple):
    """One labelled image: its path, its realness (1 = real, 0 = fake) and, in a test set, the
    group (generator) it belongs to.

    A named tuple, immutable like the frozen dataclass it was, at 64 bytes instead of 152: a
    million of them are held by the index and copied into every loader worker."""

    path: str
    label: float
    group: str = ""


@dataclass
class DatasetIndex:
    """The samples of each split, how they were found, and the files that were left out."""

    train: list[Sample]
    val: list[Sample]
    layout: str
    val_source: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # False for a set with no train folder (only val/ or test/, or plain class folders): a test
    # set, which validation scores whole.
    has_train_split: bool = True
    # What the index read, for the audit before training: the header facts of every usable
    # image (in listing order for folder layouts) with each row's label and split ("train" or
    # "val"), so the audit need not read the cache again. Dropped once used (~130 B per image).
    audit_input: tuple[ImageRecords, list[float], list[str]] | None = field(
        default=None, repr=False
    )

    def summary(self) -> dict[str, object]:
        """JSON-ready description for dataset_summary.json and the table shown before training."""

        def counts(samples: list[Sample]) -> dict[str, int]:
            real = sum(1 for sample in samples if sample.label >= 0.5)
            return {"real": real, "fake": len(samples) - real, "total": len(samples)}

        return {
            "layout": self.layout,
            "val_source": self.val_source,
            "splits": {"train": counts(self.train), "val": counts(self.val)},
            "skipped": len(self.skipped),
            "skipped_files": [{"path": path, "reason": reason} for path, reason in self.skipped],
        }


def stratified_split(
    samples: list[Sample], fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Seeded split keeping the real/fake proportions; each class gives at least one val sample."""
    rng = random.Random(seed)
    chosen: set[int] = set()
    for is_real in (True, False):
        group = [sample for sample in samples if (sample.label >= 0.5) == is_real]
        rng.shuffle(group)
        take = min(max(1, math.ceil(len(group) * fraction)), max(len(group) - 1, 0))
        chosen.update(id(sample) for sample in group[:take])
    # The same split as sorting the shuffled halves, but sorting lists that are already in
    # listing order (nearly path order), which takes a fraction of the time at a million.
    train = [sample for sample in samples if id(sample) not in chosen]
    val = [sample for sample in samples if id(sample) in chosen]
    by_path = attrgetter("path")
    return sorted(train, key=by_path), sorted(val, key=by_path)
