"""A linear probe's features: every image through the frozen backbone once, cached on disk, so
each epoch after the first trains the probe from memory.

The cache is keyed by the backbone, its weights' sha256, the input side, the preprocessing, the
spectral branch and the views (the centre crop, or K seeded augmented views); inside it, each
image by its path with its size and mtime, so an added or changed file is computed again and
the rest is read back, as the dataset index does (fakedet/sources/index_cache.py). It lives beside
the data (`.fakedet/features/`), else in the user's cache folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset

from fakedet.config import TrainingConfig
from fakedet.data.dataset import ImageDataset, Transform, collate
from fakedet.data.loader import EpochSampler, init_worker
from fakedet.data.transforms import EvalTransform, TrainTransform, pixels_to_float
from fakedet.distributed.torchrun import DistContext, barrier
from fakedet.errors import OutputPathError, WriteError
from fakedet.io import atomic_write_bytes
from fakedet.models.backbones import BackboneDetector, FeatureProbe, build_backbone_detector
from fakedet.models.backbones.spec import backbone_choice
from fakedet.runtime import Precision
from fakedet.sources.index_file import cache_paths
from fakedet.sources.samples import DatasetIndex, Sample

# Raised when what a cached row means changes (the feature layout, the views' seeding).
FEATURE_CACHE_VERSION = 1

NoteCallback = Callable[[str], None]


@dataclass(frozen=True)
class FeatureKey:
    """Everything a cached feature depends on besides the image file itself."""

    backbone: str
    weights_sha256: str | None  # None: the library's own download of that name
    img_size: int
    preprocessing: str  # the backbone's mean, std, interpolation (JSON)
    with_spectral: bool
    views: str  # "centre", or the augmentation's settings, view count and seed

    def digest(self) -> str:
        text = json.dumps({**asdict(self), "version": FEATURE_CACHE_VERSION}, sort_keys=True)
        return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


@dataclass
class FeatureTable:
    """Features of some samples: (N, views, F) float32, and the rows that could not be read."""

    features: torch.Tensor
    skipped: dict[int, str]  # row -> why the image could not be read
    computed: int  # rows the backbone ran for (the rest came from the cache)
    seconds: float  # spent computing them


def feature_cache_files(data_root: Path, key: FeatureKey) -> list[Path]:
    """Where the cache of `key` may be: beside the data, then in the user's cache folder."""
    return [
        path.parent / "features" / f"{key.digest()}.safetensors" for path in cache_paths(data_root)
    ]


def _identity(path: str) -> tuple[int, int]:
    try:
        stat = os.stat(path)
    except OSError:
        return -1, 0
    return stat.st_size, stat.st_mtime_ns


def _read_cache(location: Path, key: FeatureKey) -> dict[str, tuple[int, int, torch.Tensor]] | None:
    """path -> (size, mtime_ns, features (views, F)), or None when the file is not this key's."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(location), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("key") != json.dumps(asdict(key), sort_keys=True):
                return None
            paths = json.loads(metadata["paths"])
            features = handle.get_tensor("features")
            sizes = handle.get_tensor("sizes").tolist()
            mtimes = handle.get_tensor("mtimes").tolist()
    except (OSError, SafetensorError, KeyError, ValueError):
        return None
    if not (len(paths) == len(features) == len(sizes) == len(mtimes)):
        return None
    return {
        path: (size, mtime, row)
        for path, size, mtime, row in zip(paths, sizes, mtimes, features, strict=True)
    }


def _write_cache(
    locations: list[Path],
    key: FeatureKey,
    rows: dict[str, tuple[int, int, torch.Tensor]],
    on_note: NoteCallback,
) -> Path | None:
    from safetensors.torch import save

    paths = sorted(rows)
    data = save(
        {
            "features": torch.stack([rows[path][2] for path in paths]).contiguous(),
            "sizes": torch.tensor([rows[path][0] for path in paths], dtype=torch.int64),
            "mtimes": torch.tensor([rows[path][1] for path in paths], dtype=torch.int64),
        },
        metadata={"key": json.dumps(asdict(key), sort_keys=True), "paths": json.dumps(paths)},
    )
    failures = []
    for location in locations:
        try:
            atomic_write_bytes(location, data)
            return location
        except (WriteError, OutputPathError, OSError) as exc:  # read-only data: the user cache
            failures.append(f"{location}: {exc}")
    on_note(f"Feature cache not saved ({'; '.join(failures)}); the next start computes again.")
    return None


def view_seed(path: str, view: int, seed: int) -> int:
    """The augmentation seed of one view of one file: the same wherever the file sits in a split."""
    text = f"{seed}:{view}:{path}".encode("utf-8", "surrogateescape")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 2


@torch.no_grad()
def extract_features(
    model: BackboneDetector,
    samples: Sequence[Sample],
    transform: Transform,
    views: int,
    seed: int,
    batch_size: int,
    device: torch.device,
    precision: Precision,
    loader_options: dict[str, Any],
) -> tuple[torch.Tensor, dict[int, str]]:
    """(N, views, F) features of `samples` (view v of sample i drawn with `view_seed`), and the
    rows whose image could not be read (their features are zeros)."""
    model.eval()
    dataset = ImageDataset(samples, transform)
    features = torch.zeros(len(samples), views, model.input_dim)
    skipped: dict[int, str] = {}
    options = {
        key: value for key, value in loader_options.items() if key in ("num_workers", "pin_memory")
    }
    if options.get("num_workers"):
        options["prefetch_factor"] = loader_options.get("prefetch_factor", 2)
    for view in range(views):
        keys = [(index, view_seed(sample.path, view, seed)) for index, sample in enumerate(samples)]
        loader = DataLoader(
            dataset,
            batch_sampler=BatchSampler(keys, batch_size, False),
            collate_fn=collate,
            # Its own generator: a cache miss must not shift the run's RNG, or a run that
            # computed its features would train differently from one that read them.
            generator=torch.Generator().manual_seed(seed),
            worker_init_fn=init_worker,
            **options,
        )
        for batch in loader:
            for path, reason in batch["skipped"]:
                skipped[next(i for i, s in enumerate(samples) if s.path == path)] = reason
            if batch["images"] is None:
                continue
            images = pixels_to_float(batch["images"], device)  # (B, 3, S, S) in [0, 1]
            with torch.autocast(device.type, precision.dtype, enabled=precision.enabled):
                rows = model.features(images)  # (B, F)
            features[batch["indices"], view] = rows.float().cpu()
    return features, skipped


def cached_features(
    samples: Sequence[Sample],
    data_root: Path,
    key: FeatureKey,
    compute: Callable[[list[Sample]], tuple[torch.Tensor, dict[int, str]]],
    on_note: NoteCallback,
) -> FeatureTable:
    """The features of `samples`: read from the cache where the file is unchanged, computed
    (and the cache rewritten) where it is new or changed. Unreadable images are not cached."""
    locations = feature_cache_files(data_root, key)
    rows: dict[str, tuple[int, int, torch.Tensor]] = {}
    for location in locations:
        if location.is_file():
            found = _read_cache(location, key)
            if found is not None:
                rows = found
                break
            on_note(f"Feature cache {location} ignored and rebuilt: it is not this run's.")
    identities = [_identity(sample.path) for sample in samples]
    todo = [
        index
        for index, (sample, identity) in enumerate(zip(samples, identities, strict=True))
        if sample.path not in rows or rows[sample.path][:2] != identity
    ]
    started = time.perf_counter()
    skipped: dict[int, str] = {}
    if todo:
        computed, unreadable = compute([samples[index] for index in todo])
        for row, index in enumerate(todo):
            if row in unreadable:
                skipped[index] = unreadable[row]
                continue
            rows[samples[index].path] = (*identities[index], computed[row])
        _write_cache(locations, key, rows, on_note)
    seconds = time.perf_counter() - started
    width = next(iter(rows.values()))[2].shape if rows else (1, 0)
    table = torch.zeros(len(samples), *width)
    for index, sample in enumerate(samples):
        if index not in skipped:
            table[index] = rows[sample.path][2]
    return FeatureTable(table, skipped, len(todo), seconds)


class FeatureDataset(Dataset):
    """Cached features in place of images, a batch at a time: the keys of `make_loader`'s
    sampler in, `collate`'s batch out, so the trainer and validation serve a probe unchanged.
    A train row's view is picked by its per-epoch sample seed: seeded, so a resumed epoch sees
    the same views."""

    def __init__(self, samples: Sequence[Sample], table: FeatureTable) -> None:
        self.samples = list(samples)
        self.table = table
        self.labels = torch.tensor([sample.label for sample in self.samples], dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        return self.__getitems__([key])

    def __getitems__(self, keys: Sequence[int | tuple[int, int]]) -> dict[str, Any]:
        # One gather per batch rather than a dict per sample: a cached epoch is little else.
        pairs = [key if isinstance(key, tuple) else (key, key) for key in keys]
        skipped = self.table.skipped
        errors = [
            (self.samples[index].path, skipped[index]) for index, _ in pairs if index in skipped
        ]
        good = [(index, seed) for index, seed in pairs if index not in skipped]
        if not good:
            return {"images": None, "labels": None, "indices": None, "skipped": errors}
        views = self.table.features.shape[1]
        indices = torch.tensor([index for index, _ in good])
        picked = torch.tensor([int(seed) % views for _, seed in good])
        return {
            "images": self.table.features[indices, picked],  # (B, F)
            "labels": self.labels[indices],  # (B,)
            "indices": indices,
            "skipped": errors,
        }


def feature_loader(
    dataset: FeatureDataset,
    batch_size: int,
    train: bool,
    seed: int,
    drop_last: bool,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A loader over cached features with `make_loader`'s sampler: no workers (rows are in memory)."""
    sampler = EpochSampler(len(dataset), shuffle=train, seed=seed, rank=rank, world_size=world_size)
    drop = drop_last and train and len(sampler) >= batch_size
    return DataLoader(
        dataset,
        batch_sampler=BatchSampler(sampler, batch_size, drop_last=drop),
        collate_fn=lambda batch: batch,  # __getitems__ returns whole batches
        num_workers=0,
        generator=torch.Generator().manual_seed(seed),
    )


def eval_order(samples: Sequence[Sample], seed: int, rank: int, world_size: int) -> list[Sample]:
    """The val samples in `make_eval_loader`'s order and share, so a probe's validation batches
    are the ones `fakedet validate` scores."""
    ordered = list(samples)
    random.Random(seed).shuffle(ordered)
    return ordered[rank::world_size]


def probe_parts(
    config: TrainingConfig,
    device: torch.device,
    precision: Precision,
    dist: DistContext,
    index: DatasetIndex,
    batch_size: int,
    loader_options: dict[str, Any],
    on_note: NoteCallback,
    state: dict[str, torch.Tensor] | None,
) -> tuple[DataLoader, DataLoader, FeatureProbe]:
    """A probe's train and val loaders over cached features, and the probe (with `state`).

    Local rank 0 computes what the cache lacks; the other ranks then read it.
    """
    choice = backbone_choice(config)
    assert choice is not None  # a probe run has a backbone
    extractor = build_backbone_detector(choice, config.img_size).to(device)
    base = {
        "backbone": choice.spec,
        "weights_sha256": config.weights_sha256,
        "img_size": config.img_size,
        "preprocessing": json.dumps(extractor.preprocessing.as_dict(), sort_keys=True),
        "with_spectral": config.with_spectral,
    }
    centre_key = FeatureKey(**base, views="centre")
    train_key, train_transform, views = centre_key, EvalTransform(config.img_size), 1
    if config.probe_augment:
        names = ("hflip", "blur_prob", "jpeg_prob", "blur_sigma_max", "resize_prob")
        names += ("resize_min_scale",)  # TrainTransform's arguments, in its order
        settings = {name: getattr(config, name) for name in names}
        train_transform = TrainTransform(config.img_size, *settings.values())
        views = config.probe_augment
        settings.update(seed=config.seed, views=views)
        train_key = FeatureKey(**base, views=json.dumps(settings))

    def compute(transform: Transform, count: int) -> Callable[[list[Sample]], Any]:
        return lambda samples: extract_features(
            extractor,
            samples,
            transform,
            count,
            config.seed,
            batch_size,
            device,
            precision,
            loader_options,
        )

    root = Path(config.data_root)
    val_all = eval_order(index.val, config.seed, 0, 1)
    tables: list[FeatureTable] = []
    for builder_turn in (True, False):  # the builder first; the others read its cache after
        if (dist.local_rank == 0) == builder_turn:
            tables = [
                cached_features(
                    index.train, root, train_key, compute(train_transform, views), on_note
                ),
                cached_features(
                    val_all, root, centre_key, compute(EvalTransform(config.img_size), 1), on_note
                ),
            ]
        if builder_turn:
            barrier(dist)
    train_table, val_table = tables
    computed = train_table.computed * views + val_table.computed
    seconds = train_table.seconds + val_table.seconds
    cached = len(index.train) - train_table.computed + len(val_all) - val_table.computed
    if computed:
        on_note(
            f"probe features: {computed} views computed in {seconds:.1f} s "
            f"({computed / max(seconds, 1e-9):.1f} img/s), {cached} images from the cache"
        )
    else:
        on_note(f"probe features: all {cached} images from the cache")
    mine = list(range(dist.rank, len(val_all), dist.world_size))
    skipped = {
        at: val_table.skipped[row] for at, row in enumerate(mine) if row in val_table.skipped
    }
    val_mine = replace(val_table, features=val_table.features[mine], skipped=skipped)
    train_loader = feature_loader(
        FeatureDataset(index.train, train_table),
        batch_size,
        train=True,
        seed=config.seed,
        drop_last=config.drop_last,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    val_loader = feature_loader(
        FeatureDataset([val_all[row] for row in mine], val_mine),
        batch_size,
        train=False,
        seed=config.seed,
        drop_last=False,
    )
    probe = FeatureProbe(extractor.feature_dim, config.with_spectral)
    if state is not None:
        probe.load_state_dict({k: v for k, v in state.items() if not k.startswith("backbone.")})
    return train_loader, val_loader, probe.to(device)
