"""Calibrated realness and the stored operating threshold (SPEC 12)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import make_folder_dataset, tiny_train_args
from fakedet.checkpoints.calibration import Calibration
from fakedet.checkpoints.files import load_checkpoint
from fakedet.cli import app
from fakedet.errors import UsageError
from fakedet.evaluation.calibration import choose_threshold, fit_calibration

V010 = Path(__file__).parent / "fixtures" / "checkpoint_0.1.0.pt"
runner = CliRunner()


def _miscalibrated(temperature: float, slope: float = 1.0, offset: float = 0.0, n: int = 20_000):
    """Scores whose true probability of "real" is sigmoid(z), reported as sigmoid(T * z)."""
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 2.0, n)
    is_real = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(float)
    reported = 1.0 / (1.0 + np.exp(-(temperature * (z - offset) / slope)))
    return reported, is_real


def test_a_known_temperature_is_recovered_and_ece_falls() -> None:
    scores, labels = _miscalibrated(temperature=2.5)
    calibration = fit_calibration(scores, labels, "temperature")
    assert calibration.params["temperature"] == pytest.approx(2.5, rel=0.05)
    assert calibration.ece_after < calibration.ece_before / 5
    assert calibration.n_images == 20_000 and calibration.rule == "fixed:0.5"


def test_platt_recovers_slope_and_offset() -> None:
    # Reported logit = (z - 1) / 2, so the true logit z = 2 * reported + 1.
    scores, labels = _miscalibrated(temperature=1.0, slope=2.0, offset=1.0)
    calibration = fit_calibration(scores, labels, "platt")
    assert calibration.params["slope"] == pytest.approx(2.0, rel=0.05)
    assert calibration.params["offset"] == pytest.approx(1.0, abs=0.05)
    assert calibration.ece_after < calibration.ece_before


def test_isotonic_lowers_ece_and_keeps_order() -> None:
    scores, labels = _miscalibrated(temperature=3.0)
    calibration = fit_calibration(scores, labels, "isotonic")
    assert calibration.ece_after < calibration.ece_before
    mapped = calibration.apply(np.sort(scores))
    assert np.all(np.diff(mapped) >= 0)
    again = Calibration.from_dict(json.loads(json.dumps(calibration.to_dict())))
    assert np.array_equal(again.apply(scores[:100]), calibration.apply(scores[:100]))


def test_a_guarantee_with_fields_this_version_does_not_know_still_loads() -> None:
    scores, labels = _miscalibrated(temperature=3.0)
    stored = fit_calibration(scores, labels, "platt", "fpr:0.05").to_dict()
    stored["guarantee"]["from_a_later_version"] = 1
    again = Calibration.from_dict(json.loads(json.dumps(stored)))
    assert again.guarantee is not None
    assert again.guarantee.rank == stored["guarantee"]["rank"]
    assert again.threshold == stored["threshold"]


def _known_set() -> tuple[np.ndarray, np.ndarray]:
    """100 reals at 0.01, 0.02, ..., 1.00 and 50 fakes spread over [0, 0.29]."""
    realness = np.concatenate([np.linspace(0.01, 1.0, 100), np.linspace(0.0, 0.29, 50)])
    is_real = np.concatenate([np.ones(100), np.zeros(50)]).astype(int)
    return realness, is_real


def test_threshold_rules_on_a_set_where_the_answer_is_known() -> None:
    realness, is_real = _known_set()
    assert choose_threshold("fixed:0.3", realness, is_real) == (0.3, None)
    # fpr:0.1 with 100 reals: P(Binomial(100, 0.1) <= k - 1) <= 5% holds up to k = 5, so the
    # fifth-lowest real, 0.05, calls 4 of these reals fake (fewer than 10: the margin the
    # guarantee on new images costs).
    threshold, guarantee = choose_threshold("fpr:0.1", realness, is_real)
    assert threshold == pytest.approx(0.05)
    assert guarantee is not None and (guarantee.rank, guarantee.reference_images) == (5, 100)
    # Separable classes: the EER threshold calls every real real and every fake fake.
    separable = np.concatenate([np.linspace(0.6, 1.0, 20), np.linspace(0.0, 0.4, 20)])
    labels = np.concatenate([np.ones(20), np.zeros(20)]).astype(int)
    threshold, _ = choose_threshold("eer", separable, labels)
    assert separable[labels == 1].min() >= threshold > separable[labels == 0].max()
    # Overlapping classes: the two error rates meet at the threshold (within one image each).
    threshold, _ = choose_threshold("eer", realness, is_real)
    reals_called_fake = np.mean(realness[is_real == 1] < threshold)
    fakes_called_real = np.mean(realness[is_real == 0] >= threshold)
    assert abs(reals_called_fake - fakes_called_real) <= 1 / 50 + 1e-9


@pytest.mark.parametrize("rule", ["fixed:2", "fpr", "fpr:-0.1", "median", "eer:1"])
def test_bad_rules_are_refused(rule: str) -> None:
    realness, is_real = _known_set()
    with pytest.raises(UsageError, match="threshold-rule"):
        fit_calibration(realness, is_real, "temperature", rule)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset, output folder) of a 2-epoch run that fits temperature + an EER threshold."""
    root = tmp_path_factory.mktemp("calibrated")
    data = make_folder_dataset(root / "data")
    out = root / "run"
    args = tiny_train_args(
        data, out, "--threshold-rule", "eer", "--calibration-method", "temperature"
    )
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Calibration: temperature" in " ".join(result.output.split())
    return data, out


def test_training_stores_calibration_in_latest_and_best(run: tuple[Path, Path]) -> None:
    _, out = run
    for name in ("latest_model.pt", "best_model.pt"):
        calibration = load_checkpoint(out / name).calibration
        assert calibration is not None and calibration.method == "temperature", name
        assert calibration.rule == "eer" and calibration.n_images == 16
        assert calibration.ece_before is not None and calibration.ece_after is not None
    info = runner.invoke(app, ["inspect-checkpoint", str(out), "--json"])
    assert json.loads(info.output)["calibration"]["rule"] == "eer"
    table = runner.invoke(app, ["inspect-checkpoint", str(out)])
    assert "temperature" in table.output and "(eer)" in " ".join(table.output.split())


def test_predict_reports_calibrated_realness_at_the_stored_threshold(
    run: tuple[Path, Path], tmp_path: Path
) -> None:
    data, out = run
    calibration = load_checkpoint(out).calibration
    assert calibration is not None
    images = str(data / "val")
    rows = json.loads(runner.invoke(app, ["predict", str(out), images, "--raw", "--json"]).output)
    for row in rows:
        # Both are printed to 6 decimals; the raw one's rounding (5e-7) moves the calibrated
        # value by the calibration's slope there, which a low temperature makes steep.
        spread = abs(
            float(calibration.apply(row["raw"] + 5e-7))
            - float(calibration.apply(row["raw"] - 5e-7))
        )
        expected = float(calibration.apply(row["raw"]))
        assert row["realness"] == pytest.approx(expected, abs=1e-6 + spread)
        if abs(row["realness"] - calibration.threshold) > 1e-5:  # printed to 6 decimals
            expected = "real" if row["realness"] >= calibration.threshold else "fake"
            assert row["verdict"] == expected
    everything_real = json.loads(
        runner.invoke(app, ["predict", str(out), images, "--threshold", "0", "--json"]).output
    )
    assert {row["verdict"] for row in everything_real} == {"real"}
    assert "raw" not in everything_real[0]
    result = runner.invoke(
        app, ["predict", str(out), images, "--raw", "-o", str(tmp_path / "s.csv")]
    )
    assert result.exit_code == 0, result.output
    header = next(csv.reader((tmp_path / "s.csv").open()))
    assert header == ["path", "realness", "verdict", "error", "raw"]


def test_validate_reports_ece_of_calibrated_and_raw_scores(run: tuple[Path, Path]) -> None:
    data, out = run
    report = json.loads(runner.invoke(app, ["validate", str(out), str(data), "--json"]).output)
    assert {"ece", "ece_raw"} <= set(report["metrics"])
    calibration = load_checkpoint(out).calibration
    assert report["threshold"] == pytest.approx(calibration.threshold)
    assert report["metrics"]["ece_raw"] == pytest.approx(calibration.ece_before, abs=1e-6)
    assert report["metrics"]["ece"] == pytest.approx(calibration.ece_after, abs=1e-6)


def test_calibrate_writes_a_new_checkpoint_and_leaves_its_input_byte_identical(
    run: tuple[Path, Path], tmp_path: Path
) -> None:
    data, out = run
    before = (out / "best_model.pt").read_bytes()
    output = tmp_path / "fpr.pt"
    args = ["calibrate", str(out / "best_model.pt"), str(data), "--method", "platt"]
    result = runner.invoke(app, [*args, "--threshold-rule", "eer", "-o", str(output), "--json"])
    assert result.exit_code == 0, result.output
    assert (out / "best_model.pt").read_bytes() == before
    stored = load_checkpoint(output).calibration
    assert stored is not None and stored.method == "platt" and stored.rule == "eer"
    assert json.loads(result.output)["calibration"]["threshold"] == stored.threshold
    refused = runner.invoke(app, [*args, "-o", str(out / "best_model.pt")])
    assert refused.exit_code == 2 and "never overwrites its input" in " ".join(
        refused.output.split()
    )
    assert (out / "best_model.pt").read_bytes() == before
    bad = runner.invoke(app, [*args, "--threshold-rule", "median", "-o", str(tmp_path / "x.pt")])
    assert bad.exit_code == 2 and "threshold-rule" in bad.output


def _with_an_unreadable_val_image(root: Path) -> Path:
    """A small dataset (4 images a class and split) plus a val file that is not an image."""
    make_folder_dataset(root, per_class=4)
    (root / "val" / "real" / "broken.png").write_bytes(b"not an image")
    return root


def test_calibrate_with_five_views_fits_on_the_scores_predict_gives(
    run: tuple[Path, Path], tmp_path: Path
) -> None:
    data, out = run
    args = ["calibrate", str(out / "best_model.pt"), str(data), "--json", "--method", "temperature"]
    centre = json.loads(runner.invoke(app, [*args, "-o", str(tmp_path / "c.pt")]).output)
    five = runner.invoke(app, [*args, "--crops", "5", "-o", str(tmp_path / "5.pt")])
    assert five.exit_code == 0, five.output
    fitted = json.loads(five.output)["calibration"]
    assert (
        "5 views per image" in fitted["fitted_on"]
        and "views" not in centre["calibration"]["fitted_on"]
    )
    # The run's images are exactly its img_size, so all five views are the same crop: the same
    # scores, the same fit.
    assert fitted["params"] == pytest.approx(centre["calibration"]["params"], rel=1e-4)
    assert fitted["n_images"] == centre["calibration"]["n_images"]
    # An unreadable file is left out, as the centre-crop path's validation leaves it out.
    other = _with_an_unreadable_val_image(tmp_path / "other")
    args = [*args[:2], str(other), "--json", "--crops", "5"]
    broken = runner.invoke(app, [*args, "-o", str(tmp_path / "b.pt")])
    assert broken.exit_code == 0, broken.output
    assert json.loads(broken.output)["calibration"]["n_images"] == 8


def test_calibrate_with_processing_fits_on_a_processed_copy_of_every_image(
    run: tuple[Path, Path], tmp_path: Path
) -> None:
    data, out = run
    args = ["calibrate", str(out / "best_model.pt"), str(data), "--json", "--method", "platt"]
    clean = json.loads(runner.invoke(app, [*args, "-o", str(tmp_path / "c.pt")]).output)
    both = runner.invoke(
        app, [*args, "--processing", "jpeg60,webp70", "-o", str(tmp_path / "p.pt")]
    )
    assert both.exit_code == 0, both.output
    fitted = json.loads(both.output)["calibration"]
    count = clean["calibration"]["n_images"]
    assert fitted["n_images"] == 3 * count  # the images, then a copy after each kind
    assert "after jpeg60, webp70" in fitted["fitted_on"]
    assert load_checkpoint(tmp_path / "p.pt").calibration.n_images == 3 * count
    # An unreadable file is left out of every copy, as validation leaves it out.
    other = _with_an_unreadable_val_image(tmp_path / "other")
    args = [*args[:2], str(other), "--json", "--processing", "jpeg75"]
    broken = runner.invoke(app, [*args, "-o", str(tmp_path / "b.pt")])
    assert broken.exit_code == 0, broken.output
    assert json.loads(broken.output)["calibration"]["n_images"] == 16
    unknown = runner.invoke(app, [*args[:-1], "jpeg42", "-o", str(tmp_path / "u.pt")])
    assert unknown.exit_code == 2 and "jpeg42" in unknown.output
    # Real copies move the threshold alone, which only an fpr rule reads from the reals.
    reals = runner.invoke(app, [*args, "--processing-on", "real", "-o", str(tmp_path / "r.pt")])
    assert reals.exit_code == 2 and "fpr" in reals.output
    rule = ["--threshold-rule", "fpr:0.5", "--split", "all"]  # enough reals for the bound
    plain = json.loads(runner.invoke(app, [*args[:-2], *rule, "-o", str(tmp_path / "n.pt")]).output)
    reals = runner.invoke(
        app, [*args, *rule, "--processing-on", "real", "-o", str(tmp_path / "r.pt")]
    )
    assert reals.exit_code == 0, reals.output
    fitted = json.loads(reals.output)["calibration"]
    assert fitted["n_images"] == plain["calibration"]["n_images"]
    assert "a copy of each real one" in fitted["fitted_on"]
    assert fitted["params"] == plain["calibration"]["params"]  # the map: the originals' fit
    # The rule reads each real image's worst version: as many images as without the copies,
    # a threshold no higher (a worst version scores at most its original), and a guarantee
    # that says it holds for every version.
    guarantee = fitted["guarantee"]
    assert guarantee["reference_images"] == plain["calibration"]["guarantee"]["reference_images"]
    assert guarantee["versions"] == "jpeg75"
    assert fitted["threshold"] <= plain["calibration"]["threshold"]
    stored = load_checkpoint(tmp_path / "r.pt").calibration
    assert "worst version (as they are or after jpeg75)" in stored.guarantee.describe()
    assert any("each in its worst version" in line for line in stored.details())
    # Both classes: the map is fitted on the copies too, the rule still counts images.
    both = json.loads(runner.invoke(app, [*args, *rule, "-o", str(tmp_path / "p2.pt")]).output)
    assert both["calibration"]["n_images"] == 2 * plain["calibration"]["n_images"]
    assert both["calibration"]["guarantee"]["reference_images"] == guarantee["reference_images"]
    other_way = runner.invoke(app, [*args, "--processing-on", "fake", "-o", str(tmp_path / "f.pt")])
    assert other_way.exit_code == 2 and "--processing-on" in other_way.output
    every = runner.invoke(app, [*args[:-1], "all", "-o", str(tmp_path / "a.pt")])
    assert every.exit_code == 0, every.output
    assert (
        "after jpeg95, jpeg75, jpeg60, downscale0.75"
        in json.loads(every.output)["calibration"]["fitted_on"]
    )
    assert not (tmp_path / "u.pt").exists()


def test_a_checkpoint_without_calibration_reads_raw_scores_at_0_5_said_once(
    tmp_path: Path,
) -> None:
    data = make_folder_dataset(tmp_path / "data", per_class=2)
    result = runner.invoke(app, ["predict", str(V010), str(data / "val"), "--raw", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert all(row["realness"] == row["raw"] for row in rows)
    assert all(row["verdict"] == ("real" if row["raw"] >= 0.5 else "fake") for row in rows)
    assert result.stderr.count("stores no calibration") == 1


def test_a_bad_threshold_rule_for_training_is_a_config_error(tmp_path: Path) -> None:
    data = make_folder_dataset(tmp_path / "data", per_class=2)
    result = runner.invoke(
        app, tiny_train_args(data, tmp_path / "run", "--threshold-rule", "fpr:2")
    )
    assert result.exit_code == 2 and "threshold_rule" in result.output
