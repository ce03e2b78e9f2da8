"""The cached dataset index: reuse, invalidation (added, removed, changed files), bad cache files,
the read-only fallback, JPEG quality estimates and the DDP helper."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_folder_dataset, write_image
from fakedet.sources.folders import check_image_header
from fakedet.sources.index_cache import (
    estimate_jpeg_quality,
    scan_with_cache,
    scan_with_cache_ranked,
    split_readable,
)
from fakedet.sources.index_file import CACHE_FILE, cache_paths, encode_cache
from fakedet.sources.listing import list_image_files
from fakedet.sources.samples import IMAGE_SUFFIXES, Sample


def _images(root: Path) -> list[str]:
    return sorted(str(path) for path in root.rglob("*.png"))


class Scan:
    """scan_with_cache of one root, remembering how many files each call read and its notes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.notes: list[str] = []
        self.read = 0

    def __call__(self, files: list[str] | None = None, with_hash: bool = False):
        self.read = 0

        def progress(done: int, total: int) -> None:
            self.read = total

        files = _images(self.root) if files is None else files
        return scan_with_cache(self.root, files, self.notes.append, progress, with_hash)


@pytest.fixture
def scan(tmp_path: Path) -> Scan:
    return Scan(make_folder_dataset(tmp_path / "data", per_class=4))


def test_first_scan_reads_every_file_and_writes_the_cache(scan: Scan) -> None:
    records = scan()
    assert scan.read == 16 and len(records) == 16
    assert (scan.root / ".fakedet" / CACHE_FILE).is_file()
    assert records.paths[0] == "train/fake/0.png"
    assert records.format_of(0) == "PNG" and records.mode_of(0) == "RGB"
    assert records.width.tolist() == [64] * 16 and (records.jpeg_quality == -1).all()
    assert scan.notes == []


def test_warm_scan_reads_nothing_and_gives_the_same_records(scan: Scan) -> None:
    first = scan()
    stamp = (scan.root / ".fakedet" / CACHE_FILE).stat().st_mtime_ns
    second = scan()
    assert scan.read == 0
    assert second.paths == first.paths
    for column in ("size", "mtime_ns", "format_code", "width", "height", "mode_code"):
        assert np.array_equal(getattr(second, column), getattr(first, column))
    assert (scan.root / ".fakedet" / CACHE_FILE).stat().st_mtime_ns == stamp  # not rewritten


def test_an_added_file_alone_is_read(scan: Scan) -> None:
    scan()
    write_image(scan.root / "train" / "real" / "new.png", seed=99, size=32)
    records = scan()
    assert scan.read == 1
    row = records.paths.index("train/real/new.png")
    assert records.width[row] == 32
    scan()
    assert scan.read == 0


def test_a_removed_file_leaves_the_index(scan: Scan) -> None:
    scan()
    (scan.root / "val" / "fake" / "0.png").unlink()
    records = scan()
    assert scan.read == 0 and len(records) == 15
    assert "val/fake/0.png" not in records.paths
    (scan.root / "val" / "fake" / "0.png").write_bytes(b"")  # back, now empty: read again
    records = scan()
    assert scan.read == 1
    assert records.reason(records.paths.index("val/fake/0.png")) == "empty file (0 bytes)"
    scan()
    assert scan.read == 1  # an unreadable file is read on every start, never trusted


def test_a_file_made_readable_without_a_new_mtime_is_seen(scan: Scan) -> None:
    path = scan.root / "train" / "real" / "0.png"
    stat = path.stat()
    data = path.read_bytes()
    path.write_bytes(b"\0" * len(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    records = scan()
    assert records.reason(records.paths.index("train/real/0.png")) is not None
    path.write_bytes(data)  # restored with the same size and mtime: only a re-read can tell
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    records = scan()
    assert records.reason(records.paths.index("train/real/0.png")) is None


def test_a_changed_file_is_read_again_never_reused(scan: Scan) -> None:
    scan()
    path = scan.root / "train" / "fake" / "1.png"
    before = path.stat()
    write_image(path, seed=7, size=48)  # new size in bytes and pixels
    records = scan()
    assert scan.read == 1 and records.width[records.paths.index("train/fake/1.png")] == 48
    # Same byte count, other content: the mtime alone must invalidate the entry.
    same_size = scan.root / "train" / "real" / "2.png"
    data = bytearray(same_size.read_bytes())
    stat = same_size.stat()
    same_size.write_bytes(b"\0" * len(data))
    os.utime(same_size, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    records = scan()
    assert scan.read == 1
    assert records.reason(records.paths.index("train/real/2.png")) is not None
    assert before.st_size != path.stat().st_size


def _cache(root: Path) -> Path:
    return root / ".fakedet" / CACHE_FILE


@pytest.mark.parametrize(
    "damage",
    ["truncated", "garbage", "empty", "other version", "foreign npz", "pickle inside"],
)
def test_a_bad_cache_is_rebuilt_with_one_note(scan: Scan, damage: str) -> None:
    good = scan()
    data = _cache(scan.root).read_bytes()
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = os.urandom(2000)
    elif damage == "empty":
        data = b""
    elif damage == "other version":
        data = data.replace(b'"version": 1', b'"version": 9')
    elif damage == "foreign npz":
        buffer = io.BytesIO()
        np.savez(buffer, size=np.arange(3))
        data = buffer.getvalue()
    else:
        buffer = io.BytesIO()
        np.savez(buffer, header=np.array([{"magic": "fakedet-index"}], dtype=object))
        data = buffer.getvalue()
    _cache(scan.root).write_bytes(data)
    records = scan()
    assert scan.read == 16
    assert len(scan.notes) == 1 and "ignored and rebuilt" in scan.notes[0]
    assert records.paths == good.paths and np.array_equal(records.width, good.width)
    scan()
    assert scan.read == 0 and len(scan.notes) == 1  # the rebuilt cache is trusted again


def test_inconsistent_columns_are_not_trusted(scan: Scan) -> None:
    records = scan()
    records.format_code[0] = 40  # a code past the vocabulary
    _cache(scan.root).write_bytes(encode_cache(records, str(scan.root.resolve())))
    scan()
    assert scan.read == 16 and "inconsistent columns" in scan.notes[0]


def test_a_copied_dataset_does_not_trust_the_other_roots_cache(scan: Scan, tmp_path: Path) -> None:
    scan()
    copy = Scan(Path(shutil.copytree(scan.root, tmp_path / "copy")))
    copy()
    assert copy.read == 16 and "built for" in copy.notes[0]


def test_a_read_only_root_caches_in_the_user_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = make_folder_dataset(tmp_path / "data", per_class=2)
    (root / ".fakedet").write_text("a file where the cache folder would go")
    scan = Scan(root)
    scan()
    user_cache = cache_paths(root)[1]
    assert user_cache.is_file() and user_cache.is_relative_to(tmp_path / "xdg" / "fakedet")
    scan()
    assert scan.read == 0 and scan.notes == []


def test_unreadable_files_get_the_reasons_of_check_image_header(scan: Scan) -> None:
    garbage = scan.root / "train" / "real" / "garbage.png"
    garbage.write_bytes(b"not an image")
    empty = scan.root / "train" / "fake" / "empty.png"
    empty.write_bytes(b"")
    files = _images(scan.root)
    records = scan(files)
    for path in (garbage, empty):
        row = files.index(str(path))
        assert records.reason(row) == check_image_header(str(path))
        assert records.format_of(row) is None
    samples = [Sample(path, 1.0) for path in files]
    good, bad = split_readable(samples, records)
    assert len(good) == 16 and sorted(path for path, _ in bad) == sorted([str(garbage), str(empty)])
    half = len(samples) // 2  # train and val scanned at once, split with an offset
    first, first_bad = split_readable(samples[:half], records)
    second, second_bad = split_readable(samples[half:], records, first_row=half)
    assert first + second == good and first_bad + second_bad == bad


@pytest.mark.parametrize("quality", [5, 30, 50, 75, 90, 100])
def test_jpeg_quality_is_estimated_exactly_for_libjpeg_files(tmp_path: Path, quality: int) -> None:
    path = tmp_path / "data" / "image.jpg"
    path.parent.mkdir()
    Image.new("RGB", (40, 30), (120, 30, 200)).save(path, quality=quality)
    records = scan_with_cache(tmp_path / "data", [path])
    assert records.jpeg_quality[0] == quality and records.format_of(0) == "JPEG"
    with Image.open(path) as image:
        assert estimate_jpeg_quality(image.quantization[0]) == quality


def test_hashes_are_computed_once_then_cached(scan: Scan) -> None:
    scan()
    records = scan(with_hash=True)
    assert scan.read == 16 and records.has_digest.all()
    assert len({row.tobytes() for row in records.digest}) == 16
    again = scan(with_hash=True)
    assert scan.read == 0 and np.array_equal(again.digest, records.digest)


def test_ranked_scan_builder_first_then_the_others_read_its_cache(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "data", per_class=2)
    events: list[str] = []
    built = scan_with_cache_ranked(root, _images(root), True, lambda: events.append("builder"))
    stamp = _cache(root).stat().st_mtime_ns
    other = scan_with_cache_ranked(root, _images(root), False, lambda: events.append("other"))
    assert events == ["builder", "other"]
    assert other.paths == built.paths and np.array_equal(other.size, built.size)
    assert _cache(root).stat().st_mtime_ns == stamp  # the other rank found it warm


def test_the_builder_reaches_the_barrier_when_it_fails(tmp_path: Path) -> None:
    events: list[str] = []
    with pytest.raises(TypeError):
        scan_with_cache_ranked(tmp_path, 5, True, lambda: events.append("builder"))  # type: ignore[arg-type]
    assert events == ["builder"]


def _rglob_listing(root: Path) -> list[str]:
    """What layouts listed before list_image_files: the reference it must match."""
    return [
        str(path)
        for path in sorted(root.rglob("*"))
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    ]


def test_listing_matches_the_rglob_listing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    for relative in ("a/x.png", "a-b/x.png", "a.b/y.PNG", "A/z.jpg", "a/notes.txt", ".h/h.png",
                     "a/b/c.png", "a/b.png", "a/ba.png", "a/b0/d.png", "a/.png"):  # fmt: skip
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(b"x")
    (root / "folder-link").symlink_to(root / "a")  # rglob does not follow folder links
    (root / "a" / "file-link.png").symlink_to(root / "a" / "x.png")
    (root / "a" / "dangling.png").symlink_to(root / "missing.png")
    assert list_image_files(root) == _rglob_listing(root)
    assert len(list_image_files(root)) == 10
    monkeypatch.chdir(root)  # a relative root: "a/x.png", not "./a/x.png"
    assert list_image_files(Path(".")) == _rglob_listing(Path(".")) != []
    monkeypatch.chdir(tmp_path)
    assert list_image_files(Path("data/")) == _rglob_listing(Path("data/"))


def test_the_listing_stats_spare_a_second_stat_and_match_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fakedet.sources import index_cache
    from fakedet.sources.listing import scan_image_files

    root = make_folder_dataset(tmp_path / "data", per_class=3)
    listing = scan_image_files(root)
    for path, size, mtime in zip(listing.paths, listing.size, listing.mtime_ns, strict=True):
        assert (size, mtime) == (os.stat(path).st_size, os.stat(path).st_mtime_ns)
    folders = [folder for folder, _, _ in listing.folders]
    assert len(folders) == len(set(folders)) == 4  # train/val x real/fake, one run each
    reference = scan_with_cache(root, listing.paths)

    def no_second_stat(paths: list[str]) -> None:
        raise AssertionError("stat'ed again")

    monkeypatch.setattr(index_cache, "_stat_all", no_second_stat)
    shuffled = listing.paths[::-1]
    records = scan_with_cache(root, shuffled, stats=(listing.size[::-1], listing.mtime_ns[::-1]))
    assert records.paths == [os.path.relpath(path, root) for path in shuffled]
    np.testing.assert_array_equal(records.size, reference.size[::-1])


def test_the_audit_before_training_reads_the_index_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fakedet.data import audit
    from fakedet.sources.layouts import build_index

    root = make_folder_dataset(tmp_path / "data", per_class=3)
    (root / "train" / "fake" / "broken.png").write_bytes(b"not an image")
    index = build_index(root, False, 0.1, 0)
    assert index.audit_input is not None
    records, labels, splits = index.audit_input
    assert len(records) == len(labels) == len(splits) == len(index.train) + len(index.val)
    assert "broken.png" in index.skipped[0][0] and not any("broken" in p for p in records.paths)
    assert splits.count("val") == len(index.val)
    expected = audit.audit_index(build_index(root, False, 0.1, 0), root, with_hash=False)
    monkeypatch.setattr(audit, "scan_with_cache", lambda *a, **k: pytest.fail("scanned again"))
    assert audit.audit_index(index, root, with_hash=False) == expected
