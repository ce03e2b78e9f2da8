"""The doctor: each rule fires on a crafted history and stays quiet on one that does not; the
real quickstart and default-LR histories; `fakedet doctor` on a real tiny checkpoint."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from conftest import make_folder_dataset, tiny_train_args, write_image
from fakedet import doctor
from fakedet.advisor import HardwareInfo, recommend
from fakedet.cli import app
from fakedet.cli.doctor import HEALTHY, calibration_as_dict, render_findings
from fakedet.cli.doctor import doctor as doctor_command
from fakedet.config import TrainingConfig

runner = CliRunner()
HISTORIES = Path(__file__).parent / "fixtures" / "histories"

CPU = HardwareInfo(
    device="cpu",
    device_name="test CPU",
    vram_gb=None,
    compute_capability=None,
    os="Linux",
    cpu_cores=8,
    cpu_bf16=False,
    torch_version="x",
    cuda_version=None,
)
GPU = replace(CPU, device="cuda", vram_gb=24.0, compute_capability=(8, 6), cuda_version="12")


def row(epoch: int, train_loss: float, val_loss: float | None = None, **extra: Any) -> dict:
    """A history row; val_ keys only when `val_loss` is given, as after a validation."""
    values: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss, "images_per_sec": 50.0}
    if val_loss is not None:
        values["val_loss"] = val_loss
    return {**values, **extra}


def healthy_history(epochs: int = 8) -> list[dict]:
    """Train and val loss falling together, AUC rising to 0.98, accuracy climbing steadily."""
    rows = []
    for epoch in range(1, epochs + 1):
        rows.append(
            row(
                epoch,
                0.5 * 0.8**epoch,
                0.55 * 0.82**epoch,
                val_regression=0.2 * 0.7**epoch,
                val_accuracy=min(0.95, 0.6 + 0.05 * epoch),
                val_auc=min(0.98, 0.7 + 0.04 * epoch),
                val_ap=min(0.98, 0.7 + 0.04 * epoch),
            )
        )
    return rows


def load_fixture(name: str) -> dict:
    return json.loads((HISTORIES / f"{name}.json").read_text(encoding="utf-8"))


def fixture_config(fixture: dict) -> TrainingConfig:
    return TrainingConfig.model_validate(fixture["config"])


# --- the finding and the LR rule -------------------------------------------------------------


def test_finding_as_dict_has_the_spec_keys() -> None:
    finding = doctor.Finding("overfitting", "warning", {"rise": 0.2}, "advice", "fakedet ...")
    assert list(finding.as_dict()) == ["rule", "severity", "evidence", "advice", "flags"]


@pytest.mark.parametrize("info", [CPU, replace(CPU, cpu_bf16=True), GPU, replace(GPU, vram_gb=6.0)])
def test_advised_lr_is_the_advisors(info: HardwareInfo) -> None:
    advice = recommend(info, "fast")
    effective = advice.batch_size * advice.gradient_accumulation_steps
    assert doctor.advised_lr(advice.use_amp, effective) == pytest.approx(advice.lr)
    low, high = doctor.seed_lr_range(advice.use_amp, effective)
    assert low <= advice.lr <= high


def test_amp_runs_only_where_autocast_does() -> None:
    assert not doctor.amp_runs(True, "auto", CPU)  # no native bf16: fp32
    assert doctor.amp_runs(True, "auto", replace(CPU, cpu_bf16=True))
    assert not doctor.amp_runs(True, "fp16", replace(CPU, cpu_bf16=True))
    assert doctor.amp_runs(True, "auto", GPU)
    assert not doctor.amp_runs(True, "auto", replace(GPU, compute_capability=(6, 1)))
    assert not doctor.amp_runs(False, "auto", GPU)
    assert doctor.amp_runs(True, "auto", None)  # unknown machine: the config's word


# --- not learning ----------------------------------------------------------------------------

START = doctor.constant_score_loss(1.0, 0.3, 0.2, 0.3)  # 0.518: the defaults


def flat_history(epochs: int = 3) -> list[dict]:
    return [row(e, START * (1 - 0.03 * e), START) for e in range(1, epochs + 1)]


def test_not_learning_fires_at_a_low_lr_with_a_flat_loss() -> None:
    finding = doctor.not_learning(flat_history(), 1.25e-5, False, 16, START, 3, 15, "runs/demo")
    assert finding is not None and finding.severity == "warning"
    assert finding.evidence["seed_lr_low"] == pytest.approx(5e-5)  # 1e-4 x 16 / 32
    # The run used its 3 epochs: 3 more, at the advisor's LR, with a fresh warmup.
    assert finding.flags == (
        "fakedet resume runs/demo --epochs 3 --lr 0.0001 --reset-lr --reset-scheduler"
    )


def test_not_learning_mid_run_finishes_the_run_at_the_new_lr() -> None:
    finding = doctor.not_learning(flat_history(), 1.25e-5, False, 16, START, 50)
    assert finding is not None
    assert finding.flags == "fakedet resume RUN_DIR --lr 0.0001 --reset-lr"


def test_not_learning_after_early_stopping_trains_as_many_epochs_again() -> None:
    history = [row(e, START * 0.97, START if e > 1 else START * 0.9) for e in range(1, 6)]
    finding = doctor.not_learning(history, 1.25e-5, False, 16, START, 50, 4)
    assert finding is not None
    assert finding.flags == (
        "fakedet resume RUN_DIR --epochs 5 --lr 0.0001 --reset-lr --reset-scheduler"
    )


def test_not_learning_quiet_when_the_loss_falls() -> None:
    falling = [row(e, START * 0.6**e, START) for e in range(1, 4)]
    assert doctor.not_learning(falling, 1.25e-5, False, 16, START, 3) is None


def test_not_learning_quiet_at_an_lr_in_the_seeds_range() -> None:
    assert doctor.not_learning(flat_history(), 1e-4, False, 16, START, 3) is None


def test_not_learning_takes_the_amp_range_only_where_amp_ran() -> None:
    # 2e-5 at batch 32 is inside the AMP range (1.25e-5..1e-4) but below fp32's (1e-4..3e-4).
    assert doctor.not_learning(flat_history(), 2e-5, True, 32, START, 3) is None
    finding = doctor.not_learning(flat_history(), 2e-5, False, 32, START, 3)
    assert finding is not None and "--lr 0.0002" in finding.flags


def test_not_learning_waits_for_the_first_epochs() -> None:
    assert doctor.not_learning(flat_history(1), 1.25e-5, False, 16, START, 50) is None


# --- unstable --------------------------------------------------------------------------------


def test_unstable_fires_on_a_val_loss_spike_after_the_warmup() -> None:
    history = [row(e, 0.4 - 0.02 * e, v) for e, v in enumerate([0.5, 0.4, 0.35, 0.8, 0.3], 1)]
    finding = doctor.unstable(history, 1e-4, False, 16, 0.3, 1.0, 0, "runs/x")
    assert finding is not None
    assert finding.evidence["spike_epoch"] == 4
    assert finding.evidence["largest_val_loss_jump"] == pytest.approx(0.8 / 0.35 - 1, rel=1e-3)
    assert finding.flags.startswith("fakedet train --config runs/x/config.yaml")
    assert "--classification-weight 0.15" in finding.flags and "--lr" not in finding.flags


def test_unstable_quiet_on_a_spike_inside_the_warmup() -> None:
    # The quickstart's shape: val loss 0.51 -> 1.33 at epoch 2 of a 2.5-epoch warmup.
    history = [row(e, 0.4 - 0.05 * e, v) for e, v in enumerate([0.51, 1.33, 0.54, 0.16], 1)]
    assert doctor.unstable(history, 1e-3, False, 16, 0.3, 2.5) is None


def test_unstable_fires_on_swinging_accuracy() -> None:
    accuracies = [0.6, 0.85, 0.6, 0.88, 0.62]
    history = [
        row(e, 0.3, 0.3, val_accuracy=a) for e, a in enumerate(accuracies, 1)
    ]  # loss flat: only the accuracy swings
    finding = doctor.unstable(history, 1e-4, False, 16, 0.3, 0.0)
    assert finding is not None and finding.evidence["accuracy_reversals"] == 3


def test_unstable_fires_on_nonfinite_steps_and_suggests_fp32_under_amp() -> None:
    history = healthy_history()
    finding = doctor.unstable(history, 1e-3, True, 32, 0.3, 5.0, nonfinite_steps=4)
    assert finding is not None and finding.evidence["nonfinite_steps"] == 4
    # 1e-3 is above the AMP range (up to 1e-4): the LR is halved too, and AMP turned off.
    assert "--lr 0.0005" in finding.flags and "--no-use-amp" in finding.flags


def test_unstable_quiet_on_a_healthy_history() -> None:
    assert doctor.unstable(healthy_history(), 1e-4, False, 16, 0.3, 5.0) is None


# --- poor separation -------------------------------------------------------------------------


def separation_history(auc: float, regression: float) -> list[dict]:
    return [
        row(1, 0.45, 0.5, val_auc=0.6, val_regression=0.24),
        row(2, 0.35, 0.4, val_auc=auc, val_regression=regression, val_ranking=0.2),
    ]


def test_poor_separation_fires_when_auc_is_low_but_the_model_learns() -> None:
    finding = doctor.poor_separation(separation_history(0.7, 0.15), 0.2, "runs/x")
    assert finding is not None and finding.evidence["val_auc"] == 0.7
    assert "--ranking-weight 0.4" in finding.flags


def test_poor_separation_quiet_when_the_classes_separate() -> None:
    assert doctor.poor_separation(separation_history(0.95, 0.05), 0.2) is None


def test_poor_separation_quiet_when_the_model_does_not_learn() -> None:
    # A regression term at the constant score's 0.25: that is not learning, not ranking.
    assert doctor.poor_separation(separation_history(0.6, 0.25), 0.2) is None


# --- inaccurate scores -----------------------------------------------------------------------


def test_inaccurate_scores_fires_on_a_high_regression_term() -> None:
    history = [row(1, 0.3, 0.3, val_auc=0.95, val_regression=0.15)]
    finding = doctor.inaccurate_scores(history, 1.0)
    assert finding is not None and finding.severity == "warning"
    assert "--regression-weight 2" in finding.flags


def test_inaccurate_scores_quiet_on_accurate_scores() -> None:
    history = [row(1, 0.1, 0.1, val_auc=0.99, val_regression=0.04)]
    assert doctor.inaccurate_scores(history, 1.0) is None
    calibrated = {"method": "temperature", "ece_before": 0.04, "ece_after": 0.02}
    assert doctor.inaccurate_scores(history, 1.0, calibrated) is None


def test_inaccurate_scores_fires_on_calibration_error_left_after_calibration() -> None:
    history = [row(1, 0.1, 0.1, val_auc=0.99, val_regression=0.04)]
    calibration = {"method": "platt", "ece_before": 0.2, "ece_after": 0.15}
    finding = doctor.inaccurate_scores(history, 1.0, calibration)
    assert finding is not None and finding.severity == "warning"
    assert finding.evidence["ece_after"] == 0.15


def test_inaccurate_scores_is_mild_when_calibration_fixes_the_error() -> None:
    history = [row(1, 0.1, 0.1, val_auc=0.99, val_regression=0.04)]
    calibration = {"method": "temperature", "ece_before": 0.18, "ece_after": 0.03}
    finding = doctor.inaccurate_scores(history, 1.0, calibration)
    assert finding is not None and finding.severity == "info"
    assert "Calibration corrects" in finding.advice


# --- overfitting -----------------------------------------------------------------------------


def test_overfitting_fires_when_val_rises_while_train_falls() -> None:
    val = [0.5, 0.3, 0.25, 0.27, 0.29, 0.32]
    history = [row(e, 0.4 * 0.7**e, v) for e, v in enumerate(val, 1)]
    finding = doctor.overfitting(history, 15, True, 0.1, 0.1, "runs/x")
    assert finding is not None and finding.evidence["best_epoch"] == 3
    assert "runs/x/best_model.pt" in finding.advice
    for flag in ("--epochs 3", "--blur-prob 0.2", "--jpeg-prob 0.2", "--early-stopping-patience 3"):
        assert flag in finding.flags


def test_overfitting_quiet_when_val_keeps_falling() -> None:
    assert doctor.overfitting(healthy_history(), 15, True, 0.1, 0.1) is None


def test_overfitting_quiet_when_train_loss_rose_too() -> None:
    val = [0.5, 0.3, 0.25, 0.27, 0.29, 0.32]
    train = [0.4, 0.3, 0.2, 0.22, 0.24, 0.26]
    history = [row(e, t, v) for e, (t, v) in enumerate(zip(train, val, strict=True), 1)]
    assert doctor.overfitting(history, 15, True, 0.1, 0.1) is None


# --- under-used hardware ---------------------------------------------------------------------


def hardware_finding(
    info: HardwareInfo, workers: int, use_amp: bool, mode: str = "full"
) -> doctor.Finding | None:
    return doctor.underused_hardware(
        [40.0, 50.0, 52.0],
        workers,
        use_amp,
        info.device,
        info.os,
        info.cpu_cores,
        info.cpu_bf16,
        info.compute_capability,
        mode=mode,
    )


def test_underused_hardware_fires_on_amp_off_where_bf16_is_native() -> None:
    finding = hardware_finding(replace(CPU, cpu_bf16=True), 4, False)
    assert finding is not None and finding.severity == "info"
    assert "--use-amp" in finding.flags and "--num-workers" not in finding.flags
    assert "trains full faster" in finding.advice
    assert finding.evidence["images_per_sec"] == 50.0
    # The fast model trains more slowly under CPU bf16 (hardware.CPU_AMP_SLOWER): no tip.
    assert hardware_finding(replace(CPU, cpu_bf16=True), 4, False, mode="fast") is None


def test_underused_hardware_fires_on_too_few_workers_for_a_gpu() -> None:
    # 8 cores: a GPU run is advised all 8 as workers (a CPU run 4).
    finding = hardware_finding(GPU, 4, False)
    assert finding is not None and "--num-workers 8" in finding.flags
    assert "--use-amp" not in finding.flags  # Ampere: fp32 runs as TF32, AMP was slower


def test_underused_hardware_suggests_amp_only_where_it_is_faster() -> None:
    turing = hardware_finding(replace(GPU, compute_capability=(7, 5)), 8, False)
    assert turing is not None and "--use-amp" in turing.flags
    assert "fp16 tensor cores" in turing.advice
    assert hardware_finding(replace(GPU, compute_capability=(9, 0)), 8, False) is None


def test_underused_hardware_quiet_when_the_settings_match_the_advisor() -> None:
    assert hardware_finding(GPU, 8, True) is None
    assert hardware_finding(CPU, 4, False) is None  # no native bf16: AMP rightly off
    assert hardware_finding(replace(CPU, os="Windows"), 0, False) is None
    # Unset workers took the device's default at start: nothing to advise.
    assert doctor.underused_hardware([50.0], None, False, "cuda", "Linux", 8, False, (8, 6)) is None


# --- diagnose --------------------------------------------------------------------------------


def config(**values: Any) -> TrainingConfig:
    """A config with the advisor's workers for the 8-core CPU above (the default is this host's)."""
    return TrainingConfig(**{"data_root": Path("data"), "num_workers": 4, **values})


def test_diagnose_finds_nothing_in_a_healthy_history() -> None:
    found = doctor.diagnose(healthy_history(), config(lr=1e-4, epochs=8), hardware=CPU)
    assert found == []


def test_diagnose_finds_nothing_before_the_first_epoch_ends() -> None:
    assert doctor.diagnose([], config(), nonfinite_steps=0, hardware=CPU) == []


def test_diagnose_puts_warnings_first() -> None:
    full_run = config(epochs=3, mode="full")
    found = doctor.diagnose(flat_history(), full_run, hardware=replace(CPU, cpu_bf16=True))
    assert [f.rule for f in found] == ["not_learning", "underused_hardware"]
    assert [f.severity for f in found] == ["warning", "info"]


def test_diagnose_judges_the_lr_by_the_precision_that_ran() -> None:
    # --use-amp on a CPU without native bf16 ran in fp32: fp32's range applies.
    amp_config = config(epochs=3, lr=2e-5, use_amp=True, batch_size=32)
    assert doctor.diagnose(flat_history(), amp_config, hardware=CPU)[0].rule == "not_learning"
    bf16 = replace(CPU, cpu_bf16=True)
    assert doctor.diagnose(flat_history(), amp_config, hardware=bf16, run_dir="r") == []


@pytest.mark.parametrize("name", ["quickstart", "quickstart_0.5.0"])
def test_quickstart_history_has_no_warning(name: str) -> None:
    fixture = load_fixture(name)
    found = doctor.diagnose(fixture["history"], fixture_config(fixture), fixture["nonfinite_steps"])
    assert found == []
    # On a CPU with native bf16 (this project's) at most the mild hardware tip; it asks for AMP
    # for a full run, not for the fast quickstart (bf16 trains fast more slowly there).
    bf16 = replace(CPU, cpu_bf16=True)
    assert fixture_config(fixture).mode == "fast"
    as_fast = doctor.diagnose(fixture["history"], fixture_config(fixture), hardware=bf16)
    assert all(f.severity == "info" and "--use-amp" not in f.flags for f in as_fast)
    as_full = fixture_config(fixture).model_copy(update={"mode": "full"})
    on_bf16 = doctor.diagnose(fixture["history"], as_full, hardware=bf16)
    assert [(f.rule, f.severity) for f in on_bf16] == [("underused_hardware", "info")]
    assert "--use-amp" in on_bf16[0].flags


def test_default_lr_history_is_not_learning_with_the_advisors_lr() -> None:
    fixture = load_fixture("default_lr")
    found = doctor.diagnose(
        fixture["history"],
        fixture_config(fixture),
        fixture["nonfinite_steps"],
        run_dir="runs/demo",
        batch_size=fixture["batch_size"],
    )
    assert [f.rule for f in found] == ["not_learning"]
    advice = recommend(CPU, "fast")  # fp32 at the run's effective batch of 16
    assert doctor.advised_lr(False, 16) == pytest.approx(advice.lr / 2)
    assert found[0].flags == (
        "fakedet resume runs/demo --epochs 3 --lr 0.0001 --reset-lr --reset-scheduler"
    )
    assert found[0].evidence["loss_drop"] < doctor.NOT_LEARNING_MIN_DROP


# --- rendering and the command ---------------------------------------------------------------


def test_render_findings_says_healthy_when_empty() -> None:
    console = Console(record=True, width=80)
    render_findings(console, [])
    assert HEALTHY in console.export_text()


def test_render_findings_takes_the_json_form_too() -> None:
    finding = doctor.Finding("unstable", "warning", {"nonfinite_steps": 3}, "Unstable.", "cmd")
    console = Console(record=True, width=80)
    render_findings(console, [finding.as_dict()])
    assert "warning unstable: Unstable." in console.export_text()


def test_render_findings_keeps_commands_on_one_line() -> None:
    console = Console(record=True, width=40)
    finding = doctor.Finding(
        "overfitting", "warning", {"rise": 0.25}, "Overfitting [x].", "a " * 40
    )
    render_findings(console, [finding])
    text = console.export_text()
    assert "warning overfitting: Overfitting [x]." in text
    assert "rise 0.25" in text
    assert f"try: {'a ' * 40}".strip() in text


def test_checkpoint_calibration_is_read_as_a_dict() -> None:
    @dataclass
    class Stored:  # the shape of fakedet/checkpoints/calibration.py's Calibration
        method: str = "temperature"
        ece_before: float | None = 0.2
        ece_after: float | None = 0.15

    as_dict = calibration_as_dict(Stored())
    assert as_dict == {"method": "temperature", "ece_before": 0.2, "ece_after": 0.15}
    assert calibration_as_dict({"method": "platt", "ece_after": 0.1})["method"] == "platt"
    assert calibration_as_dict(None) is None


@pytest.fixture(scope="module")
def stalled_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 3-epoch run at an LR far below the seed's range (2e-6 at effective batch 8)."""
    root = tmp_path_factory.mktemp("doctor")
    data = make_folder_dataset(root / "data")
    # Fakes drawn like the reals: the spectrum read, fitted before the first step, would
    # separate noise from up-sampled noise perfectly, and the loss fall without any learning.
    for number, path in enumerate(sorted(data.glob("*/fake/*.png"))):
        write_image(path, 1000 + number)
    args = tiny_train_args(data, root / "run")
    args[args.index("--lr") + 1] = "2e-6"
    args[args.index("--epochs") + 1] = "3"
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return root / "run"


def doctor_app() -> typer.Typer:
    commands = typer.Typer()
    commands.command("doctor")(doctor_command)
    return commands


def test_doctor_command_prints_findings_for_a_run_folder(stalled_run: Path) -> None:
    result = runner.invoke(doctor_app(), [str(stalled_run)])
    assert result.exit_code == 0, result.output
    assert "warning not_learning" in result.output
    assert f"try: fakedet resume {stalled_run} --epochs 3 --lr 5e-05 --reset-lr" in result.output


def test_doctor_command_json_parses(stalled_run: Path) -> None:
    # latest: the whole stalled history (the best epoch, whichever it is, may hold only one).
    result = runner.invoke(doctor_app(), [str(stalled_run / "latest_model.pt"), "--json"])
    assert result.exit_code == 0, result.output
    findings = json.loads(result.output)
    assert {"rule", "severity", "evidence", "advice", "flags"} <= set(findings[0])
    assert findings[0]["rule"] == "not_learning"
    assert findings[0]["evidence"]["lr"] == 2e-6


def test_doctor_command_refuses_a_missing_checkpoint(tmp_path: Path) -> None:
    result = runner.invoke(doctor_app(), [str(tmp_path / "nothing.pt")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_a_noisy_ece_on_a_small_val_set_is_not_a_finding() -> None:
    """The quickstart's own calibration (160 val images): 0.095 -> 0.105 is chance, not a flaw."""
    history = [{"epoch": 5, "val_loss": 0.12, "val_auc": 0.99, "val_regression": 0.047}]
    small = {"method": "temperature", "ece_before": 0.095, "ece_after": 0.105, "n_images": 160}
    assert doctor.inaccurate_scores(history, 1.0, small) is None
    large = {**small, "ece_before": 0.2, "ece_after": 0.18, "n_images": 20_000}
    finding = doctor.inaccurate_scores(history, 1.0, large)
    assert finding is not None and finding.severity == "warning"
    assert finding.evidence["ece_threshold"] == pytest.approx(0.1 + 0.0109, abs=1e-3)
