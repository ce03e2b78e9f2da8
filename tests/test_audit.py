"""The dataset audit: a warning for each shortcut feature on a crafted dataset, none on the demo,
duplicates across splits and labels, and the `audit` command with --json and --strict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from fakedet.cli.audit import audit
from fakedet.data.audit import audit_index, audit_lines
from fakedet.sources.layouts import build_index

# How each class is written, per crafted shortcut: (format, width, height, mode, JPEG quality).
NEUTRAL = ("PNG", 48, 48, "RGB", None)
CRAFTED = {
    "format": (("JPEG", 48, 48, "RGB", 90), NEUTRAL),
    "jpeg_quality": (("JPEG", 48, 48, "RGB", 95), ("JPEG", 48, 48, "RGB", 60)),
    "width": (("PNG", 64, 48, "RGB", None), NEUTRAL),
    "height": (NEUTRAL, ("PNG", 48, 64, "RGB", None)),  # real smaller: an AUC <= 0.1
    "bytes_per_pixel": (NEUTRAL, ("PNG", 48, 48, "RGB", "flat")),
    "mode": (NEUTRAL, ("PNG", 48, 48, "L", None)),
}


def _write(path: Path, seed: int, kind: tuple) -> None:
    image_format, width, height, mode, quality = kind
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if quality == "flat":  # one colour: a PNG of a few bytes per image
        pixels[:] = pixels[0, 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels).convert(mode)
    options = {"quality": quality} if image_format == "JPEG" else {}
    image.save(path.with_suffix(".jpg" if image_format == "JPEG" else ".png"), **options)


def _dataset(root: Path, real: tuple, fake: tuple, per_class: int = 8) -> Path:
    seed = 0
    for split, count in (("train", per_class), ("val", per_class // 2)):
        for name, kind in (("real", real), ("fake", fake)):
            for number in range(count):
                seed += 1
                _write(root / split / name / f"{number}", seed, kind)
    return root


def _audit(root: Path, with_hash: bool = True) -> dict:
    return audit_index(build_index(root, False, 0.2, 0), root, with_hash)


def _warned(result: dict) -> set[str]:
    return {entry["feature"] for entry in result["shortcuts"] if entry["warning"]}


@pytest.mark.parametrize("feature", sorted(CRAFTED))
def test_each_shortcut_feature_gets_a_warning_naming_it_and_the_fix(
    tmp_path: Path, feature: str
) -> None:
    real, fake = CRAFTED[feature]
    result = _audit(_dataset(tmp_path / "data", real, fake))
    assert feature in _warned(result)
    entry = next(entry for entry in result["shortcuts"] if entry["feature"] == feature)
    assert entry["auc"] >= 0.9 or entry["auc"] <= 0.1
    assert entry["warning"].startswith(f"{feature} alone separates real from fake")
    assert "fix:" in entry["warning"] and entry["warning"] in result["warnings"]


def test_reals_jpeg_fakes_png_warns_on_format_not_on_quality(tmp_path: Path) -> None:
    real, fake = CRAFTED["format"]
    result = _audit(_dataset(tmp_path / "data", real, fake))
    shortcuts = {entry["feature"]: entry for entry in result["shortcuts"]}
    assert shortcuts["format"]["auc"] == 1.0
    assert "real: JPEG 100%, fake: PNG 100%" in shortcuts["format"]["warning"]
    assert shortcuts["jpeg_quality"]["auc"] is None  # judged among JPEGs: only reals are
    assert result["splits"]["train"]["real"]["jpeg_quality"] == [90.0, 90.0, 90.0]
    assert result["splits"]["train"]["fake"]["jpeg_quality"] is None


def test_a_clean_crafted_dataset_gets_no_warning(tmp_path: Path) -> None:
    result = _audit(_dataset(tmp_path / "data", NEUTRAL, NEUTRAL))
    assert result["warnings"] == [] and _warned(result) == set()


def test_the_demo_dataset_gets_no_warning(demo_dataset: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(demo_dataset, tmp_path / "demo"))  # the cache goes in the copy
    result = _audit(root)
    assert result["warnings"] == []
    assert result["duplicates"] == {"train_val": 0, "cross_class": 0, "examples": []}
    assert set(result["splits"]) == {"train", "val"}
    facts = result["splits"]["train"]["real"]
    assert set(facts) == {"count", "formats", "jpeg_quality", "width", "height", "modes"}
    assert facts["formats"] == {"PNG": facts["count"]} and facts["width"] == [64.0] * 3


def test_identical_files_across_splits_and_labels_are_counted_and_listed(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "data", NEUTRAL, NEUTRAL)
    shutil.copy(root / "train/real/0.png", root / "val/real/leak.png")
    shutil.copy(root / "train/real/1.png", root / "val/real/leak2.png")
    shutil.copy(root / "train/real/2.png", root / "train/fake/mislabelled.png")
    result = _audit(root)
    duplicated = result["duplicates"]
    assert duplicated["train_val"] == 2 and duplicated["cross_class"] == 1
    assert ["train/real/0.png", "val/real/leak.png"] in duplicated["examples"]
    assert ["train/real/2.png", "train/fake/mislabelled.png"] in duplicated["examples"]
    assert any("2 image(s) are byte-identical in train and in val" in w for w in result["warnings"])
    assert any("1 image(s) are byte-identical under both labels" in w for w in result["warnings"])


def test_without_hashes_duplicates_are_not_checked(tmp_path: Path) -> None:
    result = _audit(_dataset(tmp_path / "data", NEUTRAL, NEUTRAL), with_hash=False)
    assert result["duplicates"] == {"train_val": None, "cross_class": None, "examples": []}
    assert "duplicates: not checked" in audit_lines(result)[-1]


def test_compact_lines_name_splits_and_the_strongest_shortcut(tmp_path: Path) -> None:
    real, fake = CRAFTED["format"]
    lines = audit_lines(_audit(_dataset(tmp_path / "data", real, fake)))
    assert lines[0].startswith("audit train: real 8 (JPEG 8, JPEG q90, 48x48 px); fake 8 (PNG 8")
    assert lines[1].startswith("audit val: real 4")
    assert (
        lines[2]
        == "audit shortcuts: strongest format AUC 1.00; duplicates: 0 train/val, 0 cross-class"
    )


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("audit")(audit)
    app.command("other")(lambda: None)  # two commands, so `audit` is a subcommand as in fakedet
    return app


def test_audit_command_prints_json_of_the_spec_shape(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "data", NEUTRAL, NEUTRAL)
    result = CliRunner().invoke(_app(), ["audit", str(root), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"splits", "shortcuts", "duplicates", "warnings"}
    assert data["splits"]["val"]["fake"]["count"] == 4


def test_strict_turns_a_warning_into_exit_2(tmp_path: Path) -> None:
    real, fake = CRAFTED["format"]
    root = _dataset(tmp_path / "data", real, fake)
    runner = CliRunner()
    loose = runner.invoke(_app(), ["audit", str(root)])
    assert loose.exit_code == 0 and "format alone separates" in loose.output
    strict = runner.invoke(_app(), ["audit", str(root), "--strict"])
    assert strict.exit_code == 2
    assert "--strict" in strict.output and "format alone separates" in strict.output


def test_strict_passes_a_clean_dataset(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "data", NEUTRAL, NEUTRAL)
    result = CliRunner().invoke(_app(), ["audit", str(root), "--strict"])
    assert result.exit_code == 0, result.output
    assert "No shortcut or duplicate found" in result.output


def test_audit_reads_csv_labels(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "data", NEUTRAL, NEUTRAL)
    rows = ["path,label,split"] + [
        f"{path.relative_to(root)},{'real' if 'real' in path.parts else 'fake'},"
        f"{path.relative_to(root).parts[0]}"
        for path in sorted(root.rglob("*.png"))
    ]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    result = CliRunner().invoke(_app(), ["audit", str(root), "--use-csv", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["splits"]["train"]["real"]["count"] == 8
