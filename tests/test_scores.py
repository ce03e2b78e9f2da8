"""Scores users can trust: the cross-validated choice of calibration map, the quality numbers
stored beside it, fpr/fnr thresholds with a guarantee on new images, the everyday-processing
suite (evaluation and augmentation) and predict's warning about unlike images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import beta
from typer.testing import CliRunner

from conftest import make_folder_dataset, write_image
from fakedet.checkpoints.calibration import Calibration
from fakedet.checkpoints.files import load_checkpoint
from fakedet.cli import app
from fakedet.config import PROCESSING_KINDS
from fakedet.config_files import build_config
from fakedet.data.processing import SUITE, ProcessingAugment
from fakedet.data.transforms import TrainTransform
from fakedet.errors import ConfigError, UsageError
from fakedet.evaluation.calibration import (
    ECE_SLACK,
    choose_threshold,
    equal_mass_ece,
    fit_calibration,
    minimum_images,
)
from fakedet.evaluation.metrics import expected_calibration_error
from fakedet.inference.drift import input_drift, profile_images

FIXTURES = Path(__file__).parent / "fixtures"
V010, V020 = FIXTURES / "checkpoint_0.1.0.pt", FIXTURES / "checkpoint_0.2.0.pt"
runner = CliRunner()


def _labelled(true_logit: np.ndarray, seed: int) -> np.ndarray:
    """Labels (1 = real) drawn with P(real) = sigmoid(true_logit)."""
    rng = np.random.default_rng(seed)
    return (rng.random(len(true_logit)) < 1.0 / (1.0 + np.exp(-true_logit))).astype(float)


@pytest.mark.parametrize("centre", [8.0, 1.0])
def test_auto_keeps_identity_on_separable_scores(centre: float) -> None:
    rng = np.random.default_rng(0)
    # Every real above every fake: sure scores (logits around +-8) or timid ones (around +-1,
    # which any map would sharpen without bound).
    logits = np.concatenate([centre + rng.uniform(0, 1, 150), -centre - rng.uniform(0, 1, 150)])
    labels = np.concatenate([np.ones(150), np.zeros(150)])
    calibration = fit_calibration(1 / (1 + np.exp(-logits)), labels)
    assert calibration.method == "identity" and calibration.params == {}
    assert "every real scores above every fake" in calibration.chosen_by
    assert calibration.ece_after == calibration.ece_before
    forced = fit_calibration(1 / (1 + np.exp(-logits)), labels, "temperature")
    assert forced.params["temperature"] == pytest.approx(0.05, rel=0.01)  # what auto avoids


def test_auto_keeps_identity_on_scores_already_calibrated() -> None:
    z = np.random.default_rng(1).normal(0, 2, 3000)
    calibration = fit_calibration(1 / (1 + np.exp(-z)), _labelled(z, 1))
    assert calibration.method == "identity"


def test_auto_picks_temperature_for_an_overconfident_detector() -> None:
    z = np.random.default_rng(2).normal(0, 2, 3000)
    calibration = fit_calibration(1 / (1 + np.exp(-2.5 * z)), _labelled(z, 2))
    # Temperature is the simplest map within one standard error of the best (Platt fits the
    # same curve with one more parameter).
    assert calibration.method == "temperature"
    assert calibration.params["temperature"] == pytest.approx(2.5, rel=0.15)
    assert calibration.selection["temperature"] < calibration.selection["identity"]


def test_auto_chooses_isotonic_when_it_helps() -> None:
    z = np.random.default_rng(3).normal(0, 2, 3000)
    # Reported realness squeezes the fakes' side into [0.35, 0.65] and stretches the reals':
    # monotone, but no affine map of the logit undoes it.
    truth = 1 / (1 + np.exp(-z))
    reported = np.where(z < 0, 0.35 + 0.6 * truth, 0.5 + 0.5 * np.maximum(2 * truth - 1, 0) ** 0.3)
    calibration = fit_calibration(reported, _labelled(z, 3))
    assert calibration.method == "isotonic"
    assert calibration.selection["isotonic"] < calibration.selection["platt"]
    assert calibration.ece_after < calibration.ece_before / 3


def test_a_small_set_keeps_identity_and_a_forced_method_still_fits() -> None:
    realness = np.linspace(0.2, 0.8, 16)
    labels = (np.arange(16) % 2).astype(float)
    auto = fit_calibration(realness, labels)
    assert auto.method == "identity" and "fewer than 10 images of a class" in auto.chosen_by
    forced = fit_calibration(realness, labels, "platt")
    assert forced.method == "platt" and forced.chosen_by == "forced"


@pytest.mark.parametrize("seed", range(4))
def test_auto_never_leaves_scores_worse_calibrated_in_sample(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = int(rng.integers(60, 600))
    z = rng.normal(rng.normal(0, 1), rng.uniform(0.5, 4), size)
    reported = 1 / (1 + np.exp(-(rng.uniform(0.3, 3) * z + rng.normal(0, 1))))
    calibration = fit_calibration(reported, _labelled(z, seed))
    assert calibration.ece_after <= calibration.ece_before + ECE_SLACK


def test_quality_numbers_and_their_intervals() -> None:
    z = np.random.default_rng(4).normal(0, 2, 1000)
    raw, labels = 1 / (1 + np.exp(-2 * z)), _labelled(z, 4)
    calibration = fit_calibration(raw, labels, "temperature")
    calibrated = calibration.apply(raw)
    quality = calibration.quality
    # The plain numbers are exactly what `validate` reports for these scores.
    assert calibration.ece_before == expected_calibration_error(raw, labels)
    assert quality["ece_after"] == calibration.ece_after
    assert quality["brier_after"] == pytest.approx(np.mean((calibrated - labels) ** 2))
    order = np.argsort(calibrated, kind="stable")
    direct = sum(
        len(b) * abs(labels[b].mean() - calibrated[b].mean()) for b in np.array_split(order, 15)
    )
    assert quality["ece_mass_after"] == pytest.approx(direct / len(raw))
    assert equal_mass_ece(calibrated, labels) == quality["ece_mass_after"]
    for key in quality:
        low, high = calibration.intervals[key]
        assert 0.0 <= low <= high and high - low < 0.1, key
    assert quality["brier_after"] < quality["brier_before"]
    again = Calibration.from_dict(json.loads(json.dumps(calibration.to_dict())))
    assert again == calibration
    assert any(line.startswith("ECE (15 equal-mass bins)") for line in again.details())


@pytest.mark.parametrize(("kind", "count"), [("fpr", 100), ("fpr", 400), ("fnr", 150)])
def test_the_guarantee_holds_on_fresh_draws(kind: str, count: int) -> None:
    """Reals' realness ~ Beta(5, 2), fakes' ~ Beta(2, 5): the rate at a threshold on fresh
    draws is the distribution's exact tail there, so each trial is judged without noise."""
    rng = np.random.default_rng(5)
    target, trials, exceeded = 0.05, 1000, 0
    rates = []
    for _ in range(trials):
        scores = rng.beta(5, 2, count) if kind == "fpr" else rng.beta(2, 5, count)
        labels = np.full(count, 1 if kind == "fpr" else 0)
        threshold, guarantee = choose_threshold(f"{kind}:{target}", scores, labels)
        assert guarantee is not None and guarantee.confidence == 0.95
        # fpr: reals below the threshold are called fake; fnr: fakes at or above it real.
        rate = beta.cdf(threshold, 5, 2) if kind == "fpr" else beta.sf(threshold, 2, 5)
        rates.append(rate)
        exceeded += rate > target
    # 5% allowed; three Monte-Carlo standard errors of slack (sqrt(.05 * .95 / 1000) = 0.7%).
    assert exceeded / trials <= 0.05 + 3 * 0.0069
    # ... and not bought by a useless threshold: the rate is of the target's order (rank k of
    # n gives about k / (n + 1); with 100 images the rank is 2, so about 0.02).
    assert target / 3 < float(np.mean(rates)) < target


def test_too_few_images_for_the_guarantee_says_how_many() -> None:
    assert minimum_images(0.05) == 59 and minimum_images(0.01) == 299
    realness = np.linspace(0, 1, 80)
    labels = np.r_[np.ones(40), np.zeros(40)]
    with pytest.raises(UsageError, match=r"at least 59 real images .* has 40: .*fpr:0\.1"):
        choose_threshold("fpr:0.05", realness, labels, "the val split")
    with pytest.raises(UsageError, match="at least 59 fake images"):
        choose_threshold("fnr:0.05", realness, labels)
    with pytest.raises(UsageError, match="positive rate"):
        choose_threshold("fpr:0", realness, labels)


def test_the_calibration_stores_the_guarantee_and_its_rates() -> None:
    z = np.random.default_rng(6).normal(0, 2, 600)
    calibration = fit_calibration(1 / (1 + np.exp(-z)), _labelled(z, 6), rule="fnr:0.1")
    guarantee = calibration.guarantee
    assert guarantee is not None and guarantee.kind == "fnr" and guarantee.rate == 0.1
    assert calibration.fnr is not None and calibration.fnr < 0.1
    assert any(
        line.startswith("guarantee: at most 0.1 of new fake images called real with 95%")
        for line in calibration.details()
    )


def test_old_checkpoints_calibrations_still_load() -> None:
    assert load_checkpoint(V010).calibration is None
    old = load_checkpoint(V020).calibration
    assert old is not None and old.method == "temperature" and old.ece_after is not None
    assert old.quality == {} and old.guarantee is None and old.inputs is None
    assert old.details() == [] and "temperature" in old.describe()


def test_training_config_defaults_to_auto_and_knows_the_processing_kinds(tmp_path: Path) -> None:
    config = build_config({"data_root": tmp_path, "threshold_rule": "FNR:0.05"})
    assert config.calibration_method == "auto" and config.threshold_rule == "fnr:0.05"
    flag = build_config({"data_root": tmp_path, "processing_probs": "jpeg60:0.2, crop50:0.1"})
    assert flag.processing_probs == {"jpeg60": 0.2, "crop50": 0.1}
    with pytest.raises(ConfigError, match=r"processing_probs.*jpeg61"):
        build_config({"data_root": tmp_path, "processing_probs": {"jpeg61": 0.2}})
    with pytest.raises(ConfigError, match=r"processing_probs.*crop50 1\.5, outside \[0, 1\]"):
        build_config({"data_root": tmp_path, "processing_probs": {"crop50": 1.5}})
    assert tuple(processing.label for processing in SUITE) == PROCESSING_KINDS


def _photo(size: int = 96, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    smooth = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    return Image.fromarray(smooth).resize((size, size), Image.Resampling.BICUBIC)


def test_the_processing_suite_is_deterministic() -> None:
    image = _photo()
    changed_by_key = set()
    for processing in SUITE:
        first = processing.apply(image, key="a/photo.png")
        second = processing.apply(image.copy(), key="a/photo.png")
        assert first.mode == "RGB" and first.tobytes() == second.tobytes(), processing.label
        assert first.tobytes() != image.tobytes(), processing.label
        others = {processing.apply(image, key=f"{n}.png").tobytes() for n in range(8)}
        if len(others) > 1:
            changed_by_key.add(processing.label)
    # Only the kinds with a random choice depend on the key.
    assert changed_by_key == {"screenshot", "crop50"}
    by_label = {processing.label: processing for processing in SUITE}
    assert by_label["downscale0.5"].apply(image, "k").size == (48, 48)
    assert by_label["crop50"].apply(image, "k").size == (48, 48)
    assert by_label["jpeg60"].name == "processing:jpeg60"


def test_the_processing_augmentation_is_seeded_and_off_by_default() -> None:
    image = _photo(seed=1)
    augment = ProcessingAugment({"jpeg60": 1.0, "crop50": 0.5, "webp70": 0.0})
    first = augment(image, torch.Generator().manual_seed(3))
    assert first.tobytes() == augment(image, torch.Generator().manual_seed(3)).tobytes()
    assert [step.label for step, _ in augment.steps] == ["crop50", "jpeg60"]  # re-frame, save
    untouched = torch.Generator().manual_seed(3)
    assert ProcessingAugment({"webp70": 0.0})(image, untouched) is image
    assert torch.equal(untouched.get_state(), torch.Generator().manual_seed(3).get_state())
    with pytest.raises(UsageError, match="jpeg61"):
        ProcessingAugment({"jpeg61": 0.1})
    transform = TrainTransform(32, True, 0.0, 0.0, processing=ProcessingAugment({"crop50": 1.0}))
    assert transform(image, torch.Generator().manual_seed(0)).shape == (3, 32, 32)


def _jpeg(path: Path, quality: int, size: int = 64) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _photo(size).save(path, format="JPEG", quality=quality)


def test_the_profile_and_what_falls_outside_it(tmp_path: Path) -> None:
    for quality in (80, 90):
        _jpeg(tmp_path / "cal" / f"{quality}.jpg", quality)
    write_image(tmp_path / "cal" / "p.png", 0, size=72)
    profile = profile_images(sorted(str(p) for p in (tmp_path / "cal").iterdir()))
    assert profile is not None
    assert (profile.min_side, profile.max_side, profile.formats) == (64, 72, ["JPEG", "PNG"])
    assert profile.jpeg_quality == [80, 90]
    assert input_drift([str(tmp_path / "cal" / "80.jpg")], profile) is None
    _jpeg(tmp_path / "new" / "low.jpg", 60)
    _jpeg(tmp_path / "new" / "big.jpg", 85, size=128)
    (tmp_path / "new" / "x.webp").write_bytes(b"")  # unreadable: left to scoring to report
    message = input_drift(sorted(str(p) for p in (tmp_path / "new").iterdir()), profile)
    assert message is not None and message.startswith("2 of 3 images differ")
    assert "size 128x128" in message  # big.jpg, the first in order


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the 0.2.0 fixture recalibrated by `calibrate` on PNGs, those PNGs' folder)."""
    root = tmp_path_factory.mktemp("scores")
    data = make_folder_dataset(root / "data", per_class=6)
    output = root / "auto.pt"
    result = runner.invoke(app, ["calibrate", str(V020), str(data), "-o", str(output)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "identity (raw scores kept: fewer than 10 images of a class" in text
    assert "ECE (15 equal-mass bins)" in text and "Brier score" in text
    assert "calibration images: 12 images, sides 64-64 px, PNG" in text
    return output, data


def test_calibrate_refuses_an_fpr_rule_it_cannot_guarantee(calibrated: tuple[Path, Path]) -> None:
    _, data = calibrated
    args = ["calibrate", str(V020), str(data), "-o", str(data.parent / "x.pt")]
    result = runner.invoke(app, [*args, "--threshold-rule", "fpr:0.05"])
    assert result.exit_code == 2
    assert "at least 59 real images" in " ".join(result.output.split())


def test_inspect_shows_the_new_numbers(calibrated: tuple[Path, Path]) -> None:
    output, _ = calibrated
    table = " ".join(runner.invoke(app, ["inspect-checkpoint", str(output)]).output.split())
    assert "calibration details" in table and "Brier score" in table
    info = json.loads(runner.invoke(app, ["inspect-checkpoint", str(output), "--json"]).output)
    assert info["calibration"]["method"] == "identity"
    assert info["calibration"]["inputs"]["formats"] == ["PNG"]


def test_predict_warns_once_about_images_unlike_the_calibrations(
    calibrated: tuple[Path, Path], tmp_path: Path
) -> None:
    output, data = calibrated
    alike = runner.invoke(app, ["predict", str(output), str(data / "val"), "--json"])
    assert alike.exit_code == 0 and "differ from the calibration" not in alike.stderr
    for number in range(3):
        _jpeg(tmp_path / f"{number}.jpg", 70)
    unlike = runner.invoke(app, ["predict", str(output), str(tmp_path), "--json"])
    assert unlike.exit_code == 0, unlike.output
    assert unlike.stderr.count("differ from the calibration images") == 1
    assert "3 of 3 images" in unlike.stderr and len(json.loads(unlike.stdout)) == 3


def test_evaluate_reports_processing_rows_and_error_rates(
    calibrated: tuple[Path, Path], tmp_path: Path
) -> None:
    output, _ = calibrated  # identity: raw scores, which processing moves
    # 128 px: halved or cropped to half, an image still has the 64 px a verdict needs.
    data = make_folder_dataset(tmp_path / "data", per_class=3, with_val=False, size=128)
    files = ["--csv", str(tmp_path / "r.csv"), "--markdown", str(tmp_path / "r.md")]
    args = ["evaluate", str(data / "train"), str(output), "--processing", "--num-workers", "0"]
    result = runner.invoke(app, [*args, *files])
    assert result.exit_code == 0, result.output
    assert "everyday processing" in result.output
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert {row["perturbation"] for row in rows} == {"none", *(p.name for p in SUITE)}
    for row in rows:
        assert float(row["fpr"]) == pytest.approx(1 - float(row["real_acc"]))
        assert float(row["fnr"]) == pytest.approx(1 - float(row["fake_acc"]))
        if row["perturbation"] == "none":
            assert float(row["realness_shift"]) == pytest.approx(0.0)
    shifts = [float(row["realness_shift"]) for row in rows if row["perturbation"] != "none"]
    assert any(shift != 0.0 for shift in shifts)
    markdown = (tmp_path / "r.md").read_text()
    assert "**everyday processing**" in markdown and "| jpeg60 |" in markdown
    assert "FPR" in markdown.splitlines()[4]  # the unperturbed table's header
