"""`fakedet evaluate`: test-set groups, per-group metrics and the mean row, perturbations,
several checkpoints sharing the decoding, outputs and bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import write_image
from fakedet.checkpoints.files import load_checkpoint, save_checkpoint
from fakedet.cli import app
from fakedet.data.perturb import NONE, Perturbation, parse_perturbations
from fakedet.errors import UsageError
from fakedet.evaluation import testset as scoring
from fakedet.evaluation.metrics import TEST_METRICS, group_metrics
from fakedet.evaluation.report import RESULT_KEYS, UNPERTURBED, GroupResult
from fakedet.sources.layouts import discover_test_set

V010 = Path(__file__).parent / "fixtures" / "checkpoint_0.1.0.pt"  # fast, 64 px
runner = CliRunner()


def _pair(folder: Path, real_name: str, fake_name: str, count: int, seed: int) -> None:
    for number in range(count):
        write_image(folder / real_name / f"r{number}.png", seed + number)
        write_image(folder / fake_name / f"f{number}.png", seed + 100 + number, smooth=True)


@pytest.fixture
def generators(tmp_path: Path) -> Path:
    """Three generators in three public layouts, and one generator with real images only."""
    root = tmp_path / "testset"
    _pair(root / "progan" / "car", "0_real", "1_fake", 2, 0)  # ForenSynths, object classes
    _pair(root / "progan" / "cat", "0_real", "1_fake", 1, 10)
    _pair(root / "sdv14" / "val", "nature", "ai", 3, 20)  # GenImage
    _pair(root / "cifake", "REAL", "FAKE", 2, 30)
    for number in range(2):
        write_image(root / "onlyreal" / "real" / f"{number}.png", 40 + number)
    return root


def test_groups_come_from_the_first_folder_in_every_layout(generators: Path) -> None:
    test_set = discover_test_set(generators)
    assert test_set.groups == ["cifake", "onlyreal", "progan", "sdv14"]
    counts = {
        group: (
            sum(1 for s in test_set.samples if s.group == group and s.label == 1.0),
            sum(1 for s in test_set.samples if s.group == group and s.label == 0.0),
        )
        for group in test_set.groups
    }
    assert counts == {"cifake": (2, 2), "onlyreal": (2, 0), "progan": (3, 3), "sdv14": (3, 3)}


def test_plain_class_folders_are_one_group_named_after_the_root(tmp_path: Path) -> None:
    _pair(tmp_path / "my_test", "real", "fake", 2, 0)
    test_set = discover_test_set(tmp_path / "my_test")
    assert test_set.groups == ["my_test"] and len(test_set.samples) == 4


def test_csv_groups_come_from_the_generator_column(tmp_path: Path) -> None:
    root = tmp_path / "csvset"
    for number in range(4):
        write_image(root / "img" / f"{number}.png", number)
    rows = ["path,label,generator", "img/0.png,real,a", "img/1.png,fake,a", "img/2.png,1,b"]
    (root / "labels.csv").write_text("\n".join([*rows, "img/3.png,0,b"]) + "\n")
    test_set = discover_test_set(root, use_csv=True)
    assert test_set.groups == ["a", "b"] and test_set.layout == "CSV (labels.csv)"
    (root / "labels.csv").unlink()
    (root / "test.csv").write_text("path,label\nimg/0.png,real\nimg/1.png,fake\n")
    assert discover_test_set(root, use_csv=True).groups == ["csvset"]


def test_metrics_of_a_group_and_of_one_class() -> None:
    scores = np.array([0.9, 0.8, 0.4, 0.3, 0.2, 0.6])
    labels = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    metrics, notes = group_metrics(scores, labels)
    assert notes == []
    assert metrics["auc"] == pytest.approx(8 / 9) and metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["eer"] == pytest.approx(1 / 3)
    assert metrics["tpr_at_fpr_1"] == pytest.approx(2 / 3)
    only_real, notes = group_metrics(scores[:3], labels[:3])
    assert only_real["accuracy"] == pytest.approx(2 / 3) and only_real["real_acc"] == 2 / 3
    assert only_real["auc"] is None and only_real["ap"] is None and only_real["fake_acc"] is None
    assert "one class only (3 real, 0 fake)" in notes[0]


def _row(group: str, **values: object) -> GroupResult:
    empty = dict.fromkeys(RESULT_KEYS[3:-1])
    return GroupResult(**{**empty, "checkpoint": "a.pt", "group": group, "perturbation": "none",
                          **values, "notes": []})  # fmt: skip


def test_the_mean_row_is_unweighted_and_leaves_nulls_out() -> None:
    rows = [
        _row("big", accuracy=0.5, auc=0.5, real_acc=0.8, n_real=10, n_fake=10),
        _row("small", accuracy=1.0, auc=None, real_acc=0.6, n_real=2, n_fake=0),
    ]
    mean = GroupResult.mean_of(rows)
    assert mean.accuracy == 0.75  # not weighted by the 20 vs 2 images
    assert mean.auc == 0.5 and (mean.n_real, mean.n_fake) == (12, 10)
    assert mean.is_mean and (mean.checkpoint, mean.perturbation) == ("a.pt", "none")
    assert mean.fpr == pytest.approx(0.3) and mean.fnr is None  # from the mean accuracies
    assert mean.notes == ["unweighted mean over 2 group(s)"]


def test_a_result_row_holds_the_metrics_in_order_and_the_report_its_names() -> None:
    assert RESULT_KEYS[3 : 3 + len(TEST_METRICS)] == TEST_METRICS
    assert NONE.name == UNPERTURBED


def test_perturbations_parse_and_refuse_bad_levels() -> None:
    parsed = parse_perturbations(["jpeg:95,75", "blur:1", "resize:0.5", "webp:75", "noise:5"])
    names = [p.name for p in parsed]
    assert names == ["none", "jpeg:95", "jpeg:75", "blur:1", "resize:0.5", "webp:75", "noise:5"]
    for bad in ("sharpen:1", "jpeg:0", "jpeg:101", "jpeg:75.5", "blur:0", "resize:5", "noise:x"):
        with pytest.raises(UsageError, match="--perturb"):
            parse_perturbations([bad])


def test_perturbations_are_deterministic_and_change_the_pixels(tmp_path: Path) -> None:
    from fakedet.data.transforms import load_rgb

    write_image(tmp_path / "a.png", 0)
    image = load_rgb(str(tmp_path / "a.png"))
    for perturbation in parse_perturbations(["jpeg:50", "blur:1", "webp:50", "noise:5"])[1:]:
        once = np.asarray(perturbation.apply(image, key="a.png"))
        again = np.asarray(perturbation.apply(image, key="a.png"))
        assert np.array_equal(once, again), perturbation.name
        assert not np.array_equal(once, np.asarray(image)), perturbation.name
    resized = Perturbation("resize", 0.5).apply(image, key="a.png")
    assert resized.size == (32, 32)
    other = np.asarray(Perturbation("noise", 5).apply(image, key="b.png"))
    assert not np.array_equal(other, np.asarray(Perturbation("noise", 5).apply(image, "a.png")))


def _second_size_checkpoint(tmp_path: Path) -> Path:
    """The 0.1.0 fixture's weights as a 96 px checkpoint (the fast model has no size-bound
    weights), so that checkpoints of different image sizes meet in one evaluation."""
    checkpoint = load_checkpoint(V010)
    checkpoint.config = checkpoint.config.model_copy(update={"img_size": 96})
    path = tmp_path / "at96.pt"
    save_checkpoint(path, checkpoint)
    return path


def test_several_checkpoints_share_one_decode_per_image_and_level(
    generators: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[str] = []
    real_load = scoring.load_rgb

    def counting_load(path: str):  # type: ignore[no-untyped-def]
        decoded.append(path)
        return real_load(path)

    monkeypatch.setattr(scoring, "load_rgb", counting_load)
    second = _second_size_checkpoint(tmp_path)
    report = scoring.evaluate_test_set(
        generators, [V010, second], ["jpeg:50"], batch_size=4, num_workers=0, device="cpu"
    )
    images = len(discover_test_set(generators).samples)
    assert len(decoded) == images * 2  # two levels (none, jpeg:50), whatever the checkpoints
    assert report.perturbations == ["none", "jpeg:50"]
    assert len(report.results) == 2 * 2 * (4 + 1)  # checkpoints x levels x (groups + mean)
    by_key = {(r.checkpoint, r.group, r.perturbation): r for r in report.results}
    only_real = by_key[(str(V010), "onlyreal", "none")]
    assert only_real.auc is None and "one class only" in only_real.notes[0]
    assert only_real.accuracy is not None
    assert report.mean_row("jpeg:50", str(second)) is by_key[(str(second), "mean", "jpeg:50")]
    # The same checkpoint scored alone gives the same numbers as in company.
    alone = scoring.evaluate_test_set(generators, [V010], batch_size=3, device="cpu")
    for result in alone.results:
        twin = by_key[(result.checkpoint, result.group, "none")]
        for key in ("auc", "ap", "accuracy", "ece"):
            assert getattr(result, key) == pytest.approx(getattr(twin, key), abs=1e-6), key


def test_a_jpeg_level_changes_the_scores_and_repeats_exactly(generators: Path) -> None:
    samples = discover_test_set(generators).samples
    detectors = scoring.load_detectors([V010], torch.device("cpu"))
    clean, _ = scoring.score_samples(samples, detectors, Perturbation("none"), torch.device("cpu"))
    jpeg, _ = scoring.score_samples(
        samples, detectors, Perturbation("jpeg", 30), torch.device("cpu")
    )
    noisy = [
        scoring.score_samples(samples, detectors, Perturbation("noise", 8), torch.device("cpu"))[0]
        for _ in range(2)
    ]
    assert not np.allclose(clean, jpeg)
    assert np.array_equal(noisy[0], noisy[1])


def test_the_command_writes_json_csv_markdown_and_plots(generators: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["evaluate", str(generators), str(V010), "--perturb", "blur:1", "--device", "cpu"]
    files = ["--csv", str(out / "r.csv"), "--markdown", str(out / "r.md")]
    result = runner.invoke(app, [*args, *files, "--plots", str(out / "plots"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report) >= {"test_root", "checkpoints", "perturbations", "results", "skipped"}
    assert list(report["results"][0]) == list(RESULT_KEYS)
    rows = list(csv.DictReader((out / "r.csv").open()))
    assert len(rows) == len(report["results"]) and rows[0]["perturbation"] == "none"
    markdown = (out / "r.md").read_text()
    assert "**blur:1**" in markdown and "| **mean** |" in markdown
    assert sorted(p.name for p in (out / "plots").iterdir()) == [
        "groups.png",
        "robustness_blur.png",
    ]
    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.output
    assert "perturbation: blur:1" in table.output and "onlyreal" in table.output


# The `evaluate --json` shape users' scripts parse, written out here rather than read from the
# code: a release may add keys, never drop or rename one (nor reorder a result row's).
DOCUMENTED_REPORT_KEYS = [
    "test_root", "layout", "images", "groups", "checkpoints", "calibrated", "perturbations",
    "processing", "crops", "results", "skipped",
]  # fmt: skip
DOCUMENTED_RESULT_KEYS = [
    "checkpoint", "group", "perturbation", "n_real", "n_fake", "accuracy", "real_acc",
    "fake_acc", "ap", "auc", "eer", "tpr_at_fpr_1", "tpr_at_fpr_5", "ece", "ece_raw", "fpr",
    "fnr", "realness_shift", "notes",
]  # fmt: skip


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """One group of 2 real and 2 fake images, and a file that is no image."""
    _pair(tmp_path / "tiny", "real", "fake", 2, 0)
    (tmp_path / "tiny" / "fake" / "broken.png").write_bytes(b"not an image")
    return tmp_path / "tiny"


def test_evaluate_json_and_csv_keep_every_documented_key(tiny: Path, tmp_path: Path) -> None:
    table = tmp_path / "r.csv"
    args = ["evaluate", str(tiny), str(V010), "--device", "cpu", "--json", "--csv", str(table)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [key for key in report if key in DOCUMENTED_REPORT_KEYS] == DOCUMENTED_REPORT_KEYS
    assert [row["group"] for row in report["results"]] == ["tiny", "mean"]
    for row in report["results"]:
        assert [key for key in row if key in DOCUMENTED_RESULT_KEYS] == DOCUMENTED_RESULT_KEYS
    assert report["skipped"][0]["path"].endswith("broken.png") and report["skipped"][0]["reason"]
    assert report["calibrated"] == {str(V010): False} and report["crops"] == 1
    header = next(csv.reader(table.open()))
    assert [key for key in header if key in DOCUMENTED_RESULT_KEYS] == DOCUMENTED_RESULT_KEYS


def test_the_report_round_trips_through_json(tiny: Path) -> None:
    report = scoring.evaluate_test_set(tiny, [V010], ["blur:1"], device="cpu")
    as_dict = report.to_dict()
    assert json.loads(json.dumps(as_dict, allow_nan=False)) == as_dict
    assert as_dict["results"] == [row.to_dict() for row in report.results]
    skipped = [{"path": entry.path, "reason": entry.reason} for entry in report.skipped]
    assert as_dict["skipped"] == skipped and len(skipped) == 1


def test_unreadable_files_are_skipped_and_counted_per_group(generators: Path) -> None:
    (generators / "cifake" / "FAKE" / "broken.png").write_bytes(b"not an image")
    report = scoring.evaluate_test_set(generators, [V010], device="cpu")
    assert [entry.path.endswith("broken.png") for entry in report.skipped] == [True]
    cifake = next(r for r in report.results if r.group == "cifake")
    assert cifake.n_fake == 2 and "1 unreadable file(s) skipped" in cifake.notes


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["EMPTY", "CKPT"], "No labelled images found"),
        (["ROOT", "CKPT", "--perturb", "sharpen:2"], "unknown kind 'sharpen'"),
        (["ROOT", "CKPT", "--perturb", "jpeg:150"], "out of range for jpeg"),
        (["ROOT", "NOTES"], "not a readable checkpoint"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(
    generators: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.pt").write_text("notes\n")
    paths = {
        "EMPTY": str(tmp_path / "empty"),
        "ROOT": str(generators),
        "CKPT": str(V010),
        "NOTES": str(tmp_path / "notes.pt"),
    }
    result = runner.invoke(app, ["evaluate", *[paths.get(arg, arg) for arg in args]])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
