"""`fakedet doctor`: load a run, ask fakedet/doctor.py for its findings, print them (rich or JSON).

`render_findings` is shared with the end of training and `inspect-checkpoint`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from fakedet.cli.base import JsonOption, console, errors_to_exit_codes, print_json

if TYPE_CHECKING:
    from fakedet.advisor import HardwareInfo
    from fakedet.checkpoints.schema import Checkpoint
    from fakedet.doctor import Finding

HEALTHY = "No findings: the run looks healthy."
SEVERITY_STYLE = {"warning": "bold yellow", "info": "cyan"}


def _evidence_text(evidence: Mapping[str, Any]) -> str:
    def show(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "-" if value is None else str(value)

    return ", ".join(f"{name} {show(value)}" for name, value in evidence.items())


def render_findings(console: Console, findings: Sequence[Finding | Mapping[str, Any]]) -> None:
    """Each finding as three lines: severity, rule and advice; the evidence; the command to try.

    Takes findings or their `as_dict()` form (a run's JSON-safe result). Commands are printed
    unwrapped (soft wrap) so that they can be copied whole.
    """
    from fakedet.doctor import Finding

    shown = [Finding(**item) if isinstance(item, Mapping) else item for item in findings]
    if not shown:
        console.print(f"Doctor: {HEALTHY}", highlight=False)
        return
    console.print(f"[bold]Doctor[/]: {len(shown)} finding(s)", highlight=False)
    for finding in shown:
        style = SEVERITY_STYLE.get(finding.severity, "")
        console.print(
            f"[{style}]{finding.severity}[/] [bold]{finding.rule}[/]: {escape(finding.advice)}",
            highlight=False,
            soft_wrap=True,
        )
        console.print(
            f"  evidence: {escape(_evidence_text(finding.evidence))}",
            highlight=False,
            soft_wrap=True,
        )
        console.print(f"  try: {escape(finding.flags)}", highlight=False, soft_wrap=True)


def calibration_as_dict(calibration: object) -> dict[str, Any] | None:
    """The checkpoint's calibration as a dict, whether it is stored as one or not."""
    if calibration is None:
        return None
    if is_dataclass(calibration) and not isinstance(calibration, type):
        return asdict(calibration)
    if isinstance(calibration, Mapping):
        return dict(calibration)
    return {key: getattr(calibration, key, None) for key in ("method", "ece_before", "ece_after")}


def run_hardware(device: str) -> HardwareInfo | None:
    """The machine the run trained on, as far as this one can tell.

    The doctor usually runs where the run did (at its end, or just after); a run configured
    for a device this machine lacks (a CUDA run judged on a laptop) gets None, and the hardware
    rule is left out rather than judged on the wrong machine.
    """
    from fakedet.advisor import detect_hardware

    info = detect_hardware()
    kind = device.split(":")[0]
    if kind in ("auto", info.device):
        return info
    if kind == "cpu":
        return replace(info, device="cpu", vram_gb=None, compute_capability=None)
    return None


def checkpoint_findings(checkpoint: Checkpoint, run_dir: Path) -> list[Finding]:
    """The findings for a loaded checkpoint, on the hardware of this machine."""
    config = checkpoint.config
    machine = run_hardware(config.device)
    from fakedet.doctor import diagnose

    return diagnose(
        checkpoint.state.history,
        config,
        nonfinite_steps=checkpoint.state.nonfinite_steps,
        calibration=calibration_as_dict(getattr(checkpoint, "calibration", None)),
        hardware=machine,
        run_dir=run_dir,
        batch_size=checkpoint.batch_size,
    )


def path_findings(path: Path) -> list[Finding]:
    """The findings for a run folder (its latest_model.pt) or a checkpoint file.

    Raises:
        CheckpointError: no readable fakedet checkpoint at `path`.
    """
    from fakedet.checkpoints.files import checkpoint_path, load_checkpoint

    return checkpoint_findings(load_checkpoint(path), checkpoint_path(path).parent)


def doctor(
    path: Annotated[
        Path,
        typer.Argument(help="Run folder (its latest_model.pt) or a checkpoint file."),
    ],
    as_json: JsonOption = False,
) -> None:
    """Advice from a run's own history: the findings that apply, their numbers, what to try.

    Rules: not learning (LR below the seed's range), unstable, poor separation, inaccurate
    scores, overfitting, under-used hardware.

    Examples:

        fakedet doctor runs/demo

        fakedet doctor runs/demo/best_model.pt --json
    """
    with errors_to_exit_codes():
        findings = path_findings(path)
        if as_json:
            print_json([finding.as_dict() for finding in findings])
            return
        render_findings(console, findings)
