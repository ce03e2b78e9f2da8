"""`fakedet train` and `fakedet resume`: flags -> config -> one engine call."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fakedet.cli.base import (
    DevicesOption,
    FinetuneOption,
    config_option,
    console,
    errors_to_exit_codes,
)
from fakedet.config import TrainingConfig
from fakedet.config_files import build_config, load_config_file
from fakedet.defaults import FULL_RESIZE_PROB
from fakedet.errors import UsageError

FROM_CHECKPOINT = "from the checkpoint"


def _given(values: dict[str, Any]) -> dict[str, Any]:
    """The config fields given on the command line (None means not given)."""
    return {
        name: value
        for name, value in values.items()
        if name in TrainingConfig.model_fields and value is not None
    }


def _launch(devices: int | None) -> bool:
    """True when this process should start torchrun rather than train itself."""
    from fakedet.distributed.torchrun import launched_by_torchrun

    return devices is not None and devices > 1 and not launched_by_torchrun()


def _run_launcher(devices: int) -> None:
    from fakedet.distributed.launch import launch_torchrun

    code = launch_torchrun(
        devices, lambda text: console.print(text, highlight=False, soft_wrap=True)
    )
    raise typer.Exit(code)


def _console_reporter() -> Any:
    from fakedet.cli.reporting import ConsoleReporter

    return ConsoleReporter(console)


def train(
    data_root_arg: Annotated[
        Path | None,
        typer.Argument(
            metavar="DATA_ROOT", help="Dataset folder (or give --data-root).", show_default=False
        ),
    ] = None,
    *,
    data_root: Annotated[Path | None, config_option("data_root")] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="YAML or TOML file of settings; flags win.")
    ] = None,
    fast: Annotated[
        bool | None,
        typer.Option(
            "--fast/--full",
            "--fast_mode/--full_mode",
            help="Model: fast (perceptual + aux, ~0.3M) or full (+ spectral, statistical, "
            "attention, ~2.9M). \\[default: fast]",
            show_default=False,
        ),
    ] = None,
    mode: Annotated[str | None, config_option("mode")] = None,
    epochs: Annotated[int | None, config_option("epochs")] = None,
    batch_size: Annotated[str | None, config_option("batch_size")] = None,
    lr: Annotated[float | None, config_option("lr")] = None,
    weight_decay: Annotated[float | None, config_option("weight_decay")] = None,
    output_dir: Annotated[Path | None, config_option("output_dir")] = None,
    img_size: Annotated[int | None, config_option("img_size")] = None,
    use_amp: Annotated[bool | None, config_option("use_amp")] = None,
    amp_dtype: Annotated[str | None, config_option("amp_dtype")] = None,
    use_csv: Annotated[bool | None, config_option("use_csv")] = None,
    skip_missing: Annotated[bool | None, config_option("skip_missing")] = None,
    val_split: Annotated[float | None, config_option("val_split")] = None,
    regression_weight: Annotated[float | None, config_option("regression_weight")] = None,
    classification_weight: Annotated[float | None, config_option("classification_weight")] = None,
    ranking_weight: Annotated[float | None, config_option("ranking_weight")] = None,
    ranking_margin: Annotated[float | None, config_option("ranking_margin")] = None,
    scheduler_type: Annotated[str | None, config_option("scheduler_type")] = None,
    warmup_epochs: Annotated[float | None, config_option("warmup_epochs")] = None,
    min_lr: Annotated[float | None, config_option("min_lr")] = None,
    gradient_accumulation_steps: Annotated[
        int | None, config_option("gradient_accumulation_steps")
    ] = None,
    grad_clip: Annotated[float | None, config_option("grad_clip")] = None,
    num_workers: Annotated[int | None, config_option("num_workers")] = None,
    pin_memory: Annotated[bool | None, config_option("pin_memory")] = None,
    persistent_workers: Annotated[bool | None, config_option("persistent_workers")] = None,
    prefetch_factor: Annotated[int | None, config_option("prefetch_factor")] = None,
    drop_last: Annotated[bool | None, config_option("drop_last")] = None,
    hflip: Annotated[bool | None, config_option("hflip")] = None,
    blur_prob: Annotated[float | None, config_option("blur_prob")] = None,
    jpeg_prob: Annotated[float | None, config_option("jpeg_prob")] = None,
    blur_sigma_max: Annotated[float | None, config_option("blur_sigma_max")] = None,
    resize_prob: Annotated[
        float | None, config_option("resize_prob", f"{FULL_RESIZE_PROB} for full, 0 for fast")
    ] = None,
    resize_min_scale: Annotated[float | None, config_option("resize_min_scale")] = None,
    early_stopping_patience: Annotated[int | None, config_option("early_stopping_patience")] = None,
    validate_interval: Annotated[int | None, config_option("validate_interval")] = None,
    save_every: Annotated[int | None, config_option("save_every")] = None,
    max_nonfinite_steps: Annotated[int | None, config_option("max_nonfinite_steps")] = None,
    use_tensorboard: Annotated[bool | None, config_option("use_tensorboard")] = None,
    plots: Annotated[bool | None, config_option("plots")] = None,
    calibration_method: Annotated[str | None, config_option("calibration_method")] = None,
    threshold_rule: Annotated[str | None, config_option("threshold_rule")] = None,
    patch_topk: Annotated[float | None, config_option("patch_topk")] = None,
    spectrum_read: Annotated[
        bool | None, config_option("spectrum_read", "off for full, on for fast")
    ] = None,
    image_column: Annotated[str | None, config_option("image_column")] = None,
    label_column: Annotated[str | None, config_option("label_column")] = None,
    generator_column: Annotated[str | None, config_option("generator_column")] = None,
    device: Annotated[str | None, config_option("device")] = None,
    seed: Annotated[int | None, config_option("seed")] = None,
    backbone: Annotated[str | None, config_option("backbone")] = None,
    weights: Annotated[Path | None, config_option("weights")] = None,
    weights_sha256: Annotated[str | None, config_option("weights_sha256")] = None,
    finetune: FinetuneOption = None,
    lora_rank: Annotated[int | None, config_option("lora_rank")] = None,
    backbone_lr_scale: Annotated[float | None, config_option("backbone_lr_scale")] = None,
    probe_augment: Annotated[int | None, config_option("probe_augment")] = None,
    with_spectral: Annotated[bool | None, config_option("with_spectral")] = None,
    init_from: Annotated[Path | None, config_option("init_from")] = None,
    processing_probs: Annotated[str | None, config_option("processing_probs")] = None,
    processing_on: Annotated[str | None, config_option("processing_on")] = None,
    compile: Annotated[bool | None, config_option("compile")] = None,
    gpu_augment: Annotated[bool | None, config_option("gpu_augment")] = None,
    gpu_decode: Annotated[bool | None, config_option("gpu_decode")] = None,
    channels_last: Annotated[bool | None, config_option("channels_last")] = None,
    devices: DevicesOption = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue from this checkpoint (or output folder); --epochs then means N more.",
        ),
    ] = None,
    reset_lr: Annotated[
        bool,
        typer.Option(
            "--reset-lr",
            "--reset_lr",
            help="With --resume: replace the saved base LR by --lr, keeping the schedule's shape.",
        ),
    ] = False,
    reset_scheduler: Annotated[
        bool,
        typer.Option(
            "--reset-scheduler",
            "--reset_scheduler",
            help="With --resume: a fresh warmup + cosine over the remaining epochs.",
        ),
    ] = False,
) -> None:
    """Train a detector on DATA_ROOT and write checkpoints, history and logs to --output-dir.

    DATA_ROOT holds train/{real,fake}/ (and optionally val/{real,fake}/; otherwise 10% of train is
    held out), or a public layout (ForenSynths 0_real/1_fake, GenImage nature/ai, CIFAKE).

    Examples:

        fakedet train ./dataset --full

        fakedet train demo --epochs 5 --lr 1e-3 --output-dir runs/demo

        fakedet train --data_root ./dataset --batch_size 32 --use_amp --fast_mode

        fakedet train ./dataset --devices 2                  # DDP over 2 processes (torchrun)

        fakedet train ./dataset --backbone open_clip:ViT-L-14-quickgelu --weights clip.bin

        fakedet train ./dataset --backbone timm:convnext_tiny.fb_in22k --weights w.safetensors --finetune --lora-rank 8

        fakedet train NEW_DATA --init-from runs/demo/best_model.pt
    """
    given = _given(locals())
    with errors_to_exit_codes():
        if data_root_arg is not None:
            given["data_root"] = data_root_arg
        if fast is not None:
            given["mode"] = "fast" if fast else "full"
        if resume is not None:
            from fakedet.training import run

            if config_file is not None:
                raise UsageError(
                    "--config does not apply with --resume: a resume takes its settings from the "
                    "checkpoint; give the few that may change as flags (see fakedet resume --help)."
                )

            extra_epochs, new_lr = given.pop("epochs", None), given.pop("lr", None)
            if _launch(devices):
                run.preflight_resume(resume, given, extra_epochs, new_lr)
                _run_launcher(devices or 1)
            run.resume(
                resume, given, extra_epochs, new_lr, reset_lr, reset_scheduler, _console_reporter()
            )
            return
        if reset_lr or reset_scheduler:
            raise UsageError("--reset-lr and --reset-scheduler only apply with --resume PATH.")
        settings = load_config_file(config_file) if config_file else {}
        settings.update(given)
        if settings.get("init_from") is not None:
            from fakedet.training.weights import init_settings

            # The model comes from the checkpoint unless a flag says otherwise.
            settings = {**init_settings(Path(settings["init_from"])), **settings}
        if "data_root" not in settings:
            raise UsageError(
                "Give the dataset folder: fakedet train DATA_ROOT (or --data-root PATH)."
            )
        config = build_config(settings)
        from fakedet.training import run

        if _launch(devices):
            run.preflight(config)  # bad input once, not once per rank
            _run_launcher(devices or 1)

        run.train(config, _console_reporter())


def resume(
    checkpoint: Annotated[
        Path, typer.Argument(help="Checkpoint file, or an output folder (its latest_model.pt).")
    ] = Path("checkpoints/latest_model.pt"),
    *,
    epochs: Annotated[
        int | None,
        typer.Option("--epochs", help="Train this many MORE epochs (default: finish the run)."),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option("--lr", help="New base LR (keeps the schedule's shape, like --reset-lr)."),
    ] = None,
    reset_lr: Annotated[
        bool,
        typer.Option(
            "--reset-lr",
            "--reset_lr",
            help="Replace the saved base LR by --lr, keeping the schedule's shape.",
        ),
    ] = False,
    reset_scheduler: Annotated[
        bool,
        typer.Option(
            "--reset-scheduler",
            "--reset_scheduler",
            help="A fresh warmup + cosine over the remaining epochs.",
        ),
    ] = False,
    output_dir: Annotated[Path | None, config_option("output_dir", "beside the checkpoint")] = None,
    data_root: Annotated[Path | None, config_option("data_root", FROM_CHECKPOINT)] = None,
    device: Annotated[str | None, config_option("device", FROM_CHECKPOINT)] = None,
    num_workers: Annotated[int | None, config_option("num_workers", FROM_CHECKPOINT)] = None,
    batch_size: Annotated[str | None, config_option("batch_size", FROM_CHECKPOINT)] = None,
    gradient_accumulation_steps: Annotated[
        int | None, config_option("gradient_accumulation_steps", FROM_CHECKPOINT)
    ] = None,
    devices: DevicesOption = None,
) -> None:
    """Continue a run from its checkpoint: exact state, optimizer, schedule, RNG and patience.

    Outputs go beside the checkpoint unless --output-dir is given.

    Examples:

        fakedet resume                                   # checkpoints/latest_model.pt, finish the run

        fakedet resume runs/demo --epochs 20             # 20 more epochs, cosine laid over the new total

        fakedet resume runs/demo --epochs 20 --lr 1e-4 --reset-lr

        fakedet resume runs/demo/best_model.pt --epochs 30 --lr 3e-4 --reset-lr --reset-scheduler

        fakedet resume runs/demo --batch-size 8 --gradient-accumulation-steps 2   # after running out of memory

        fakedet resume runs/demo --devices 2             # continue under DDP
    """
    given = _given(locals())
    given.pop("epochs", None)
    given.pop("lr", None)
    with errors_to_exit_codes():
        from fakedet.training import run

        if _launch(devices):
            run.preflight_resume(checkpoint, given, epochs, lr)
            _run_launcher(devices or 1)

        run.resume(checkpoint, given, epochs, lr, reset_lr, reset_scheduler, _console_reporter())
