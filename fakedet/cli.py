"""The `fakedet` command line: parse, build the config, call one core function, render the result.

torch is imported inside the commands that need it, so `fakedet --help` stays fast.
"""

from __future__ import annotations

import inspect
import json
import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional, get_args

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fakedet import __version__
from fakedet.config import TrainingConfig, build_config, load_config_file
from fakedet.errors import FakedetError, UsageError
from fakedet.reporting import metrics_table

console = Console()
error_console = Console(stderr=True)

app = typer.Typer(
    name="fakedet",
    help=(
        "Train, check and use detectors of AI-generated images.\n\n"
        "Quick start: fakedet demo-data demo && fakedet train demo --epochs 5 --lr 1e-3"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        console.print(f"fakedet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    _state["debug"] = debug


@contextmanager
def _errors_to_exit_codes() -> Iterator[None]:
    """The one place where fakedet's exceptions become a sentence and an exit code."""
    try:
        yield
    except FakedetError as exc:
        if _state["debug"]:
            traceback.print_exc()
        rank = os.environ.get("RANK", "0") if "WORLD_SIZE" in os.environ else "0"
        where = f"[rank {rank}] " if rank != "0" else ""
        error_console.print(
            f"{where}[bold red]Error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        error_console.print("Interrupted.")
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:
        if _state["debug"]:
            traceback.print_exc()
        error_console.print(
            f"[bold red]Unexpected error:[/] {exc.__class__.__name__}: {exc} (run `fakedet --debug ...` "
            "for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None


# ----------------------------------------------------------------------------- demo-data
def demo_data(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the dataset to.")],
    num_images: Annotated[
        int, typer.Option("--num-images", help="Total images (half real, half fake).")
    ] = 800,
    img_size: Annotated[
        int, typer.Option("--img-size", help="Side of every image in pixels.")
    ] = 256,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed: the same seed writes the same files.")
    ] = 0,
) -> None:
    """Build the built-in demo dataset (real photo crops vs. simulated generator up-sampling).

    Offline and in seconds, from photos that scikit-image and scikit-learn ship. Example:

        fakedet demo-data demo && fakedet train demo --epochs 5 --lr 1e-3
    """
    with _errors_to_exit_codes():
        from fakedet.data.demo import build_demo_dataset

        with Progress(
            TextColumn("[bold]demo-data"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=not console.is_terminal,
        ) as progress:
            task = progress.add_task("images", total=num_images)
            summary = build_demo_dataset(
                out_dir,
                num_images=num_images,
                img_size=img_size,
                seed=seed,
                on_progress=lambda done, total: progress.update(task, completed=done),
            )
        counts = summary["images"]
        console.print(
            f"Wrote {num_images} images ({img_size} px) to {out_dir}: "
            f"train {counts['train']['real']} real / {counts['train']['fake']} fake, "
            f"val {counts['val']['real']} real / {counts['val']['fake']} fake "
            f"(val photos: {', '.join(summary['photos']['val'])}).",
            highlight=False,
        )
        console.print(f"Next: fakedet train {out_dir} --epochs 5 --lr 1e-3", highlight=False)


# ----------------------------------------------------------------------------- train
# Seed spellings (scripts/train_script.py) accepted beside the dashed names.
SEED_ALIASES = {
    "data_root": "--data_root",
    "batch_size": "--batch_size",
    "use_amp": "--use_amp",
    "use_csv": "--use_csv",
    "img_size": "--img_size",
    "num_workers": "--num_workers",
    "output_dir": "--output_dir",
    "regression_weight": "--regression_weight",
    "classification_weight": "--classification_weight",
    "ranking_weight": "--ranking_weight",
}
# Fields that get a hand-made option (positional data root, --fast/--full).
_SPECIAL_FIELDS = {"data_root", "mode"}


def _option(
    name: str, flags: list[str], help_text: str, annotation: Any, default: Any = None
) -> inspect.Parameter:
    """A keyword-only Typer option; default None means "not given" for the config's fields."""
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(default, *flags, help=help_text, show_default=default is not None),
        annotation=annotation,
    )


def _field_option(name: str, default_text: str | None = None) -> inspect.Parameter:
    """A `--dashed-name` option for a TrainingConfig field, default None (= not given).

    `default_text` replaces the field's default in the help (resume: "from the checkpoint").
    """
    field = TrainingConfig.model_fields[name]
    dashed = "--" + name.replace("_", "-")
    annotation = field.annotation
    default = default_text or field.get_default(call_default_factory=True)
    help_text = f"{field.description} [default: {default}]"
    names = [dashed]
    if annotation is bool:
        names = [f"{dashed}/--no-{name.replace('_', '-')}"]
        option_type: Any = Optional[bool]  # noqa: UP045 - typer needs Optional at runtime
    elif annotation is int:
        option_type = Optional[int]  # noqa: UP045
    elif annotation is float:
        option_type = Optional[float]  # noqa: UP045
    elif annotation is Path:
        option_type = Optional[Path]  # noqa: UP045
    else:
        option_type = Optional[str]  # noqa: UP045
        choices = [arg for arg in get_args(annotation) if isinstance(arg, str)]
        for arg in get_args(annotation):
            choices += [choice for choice in get_args(arg) if isinstance(choice, str)]
        if choices and int not in get_args(annotation):  # batch_size: a number or 'auto'
            help_text = f"{field.description} One of: {', '.join(dict.fromkeys(choices))}. [default: {default}]"
    if name in SEED_ALIASES:
        names.append(SEED_ALIASES[name])
    # Escaped: Typer renders help as rich markup, where "[default: 16]" would vanish as a tag.
    return _option(name, names, escape(help_text), option_type)


def _resume_flag_options(context: str) -> list[inspect.Parameter]:
    """--reset-lr and --reset-scheduler; `context` ("With --resume: ") says when they apply."""

    def sentence(text: str) -> str:
        text = context + text
        return text[:1].upper() + text[1:]

    return [
        _option(
            "reset_lr",
            ["--reset-lr", "--reset_lr"],
            sentence("replace the saved base LR by --lr, keeping the schedule's shape."),
            bool,
            False,
        ),
        _option(
            "reset_scheduler",
            ["--reset-scheduler", "--reset_scheduler"],
            sentence("a fresh warmup + cosine over the remaining epochs."),
            bool,
            False,
        ),
    ]


def _train_parameters() -> list[inspect.Parameter]:
    parameters = [
        inspect.Parameter(
            "data_root_arg",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=typer.Argument(
                None,
                metavar="DATA_ROOT",
                help="Dataset folder (or give --data-root).",
                show_default=False,
            ),
            annotation=Optional[Path],  # noqa: UP045
        ),
        _option("data_root", ["--data-root", "--data_root"], "Dataset folder.", Optional[Path]),  # noqa: UP045
        _option(
            "config_file",
            ["--config"],
            "YAML or TOML file of settings; flags win.",
            Optional[Path],  # noqa: UP045
        ),
        _option(
            "fast",
            ["--fast/--full", "--fast_mode/--full_mode"],
            "Model: fast (perceptual + aux, ~2.5M) or full (+ spectral, statistical, "
            "attention, ~5M). \\[default: fast]",
            Optional[bool],  # noqa: UP045
        ),
    ]
    parameters += [
        _field_option(name) for name in TrainingConfig.model_fields if name not in _SPECIAL_FIELDS
    ]
    parameters.append(
        _option(
            "devices",
            ["--devices"],
            "Train with N processes (DDP, launched through torchrun; gloo on CPU, NCCL on CUDA).",
            Optional[int],  # noqa: UP045
        )
    )
    parameters.append(
        _option(
            "resume",
            ["--resume"],
            "Continue from this checkpoint (or output folder); --epochs then means N more.",
            Optional[Path],  # noqa: UP045
        )
    )
    return parameters + _resume_flag_options("With --resume: ")


def _collect_overrides(values: dict[str, Any]) -> dict[str, Any]:
    """Settings given on the command line (None means not given)."""
    overrides: dict[str, Any] = {}
    data_root = values.pop("data_root_arg", None) or values.pop("data_root", None)
    values.pop("data_root", None)
    if data_root is not None:
        overrides["data_root"] = data_root
    fast = values.pop("fast", None)
    if fast is not None:
        overrides["mode"] = "fast" if fast else "full"
    for name, value in values.items():
        if value is None:
            continue
        if name == "batch_size" and isinstance(value, str) and value.isdigit():
            value = int(value)
        overrides[name] = value
    return overrides


def train(**values: Any) -> None:
    """Train a detector on DATA_ROOT and write checkpoints, history and logs to --output-dir.

    DATA_ROOT holds train/{real,fake}/ (and optionally val/{real,fake}/; otherwise 10% of train is
    held out), or a public layout (ForenSynths 0_real/1_fake, GenImage nature/ai, CIFAKE).

    Examples:

        fakedet train ./dataset --full

        fakedet train demo --epochs 5 --lr 1e-3 --output-dir runs/demo

        fakedet train --data_root ./dataset --batch_size 32 --use_amp --fast_mode

        fakedet train ./dataset --devices 2                  # DDP over 2 processes (torchrun)
    """
    with _errors_to_exit_codes():
        from fakedet.engine.distributed import launched_by_torchrun

        devices: int | None = values.pop("devices", None)
        launch = devices is not None and devices > 1 and not launched_by_torchrun()
        resume_from: Path | None = values.pop("resume", None)
        reset_lr: bool = values.pop("reset_lr")
        reset_scheduler: bool = values.pop("reset_scheduler")
        config_file: Path | None = values.pop("config_file", None)
        if resume_from is not None:
            if launch:
                raise typer.Exit(launch_torchrun(devices or 1))
            overrides = _collect_overrides(values)
            extra_epochs = overrides.pop("epochs", None)
            new_lr = overrides.pop("lr", None)
            run_resume(resume_from, overrides, extra_epochs, new_lr, reset_lr, reset_scheduler)
            return
        if reset_lr or reset_scheduler:
            raise UsageError("--reset-lr and --reset-scheduler only apply with --resume PATH.")
        settings = load_config_file(config_file) if config_file else {}
        settings.update(_collect_overrides(values))
        if "data_root" not in settings:
            raise UsageError(
                "Give the dataset folder: fakedet train DATA_ROOT (or --data-root PATH)."
            )
        config = build_config(settings)
        if launch:
            # Bad input is refused here, once, rather than by every rank under torchrun.
            if not Path(config.data_root).is_dir():
                raise UsageError(f"Dataset folder {config.data_root} does not exist.")
            raise typer.Exit(launch_torchrun(devices or 1))
        run_training(config)


def launch_torchrun(devices: int) -> int:
    """Run this same `fakedet train` command in `devices` processes under torchrun; its exit code."""
    import signal
    import subprocess
    import sys

    arguments: list[str] = []
    skip = False
    for argument in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if argument == "--devices":
            skip = True
            continue
        if argument.startswith("--devices="):
            continue
        arguments.append(argument)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={devices}", "-m", "fakedet", *arguments,
    ]  # fmt: skip
    console.print(
        f"Starting {devices} processes: torchrun --nproc-per-node={devices} -m fakedet "
        + " ".join(arguments),
        highlight=False,
        soft_wrap=True,
    )
    process = subprocess.Popen(command)
    forwarded: list[int] = []

    def forward(signal_number: int, _frame: object) -> None:
        # torchrun passes it on to every rank, which finish the step, save and exit.
        forwarded.append(signal_number)
        process.send_signal(signal_number)

    previous = {
        number: signal.signal(number, forward) for number in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        code = process.wait()
        # torchrun itself exits 1 after a signal; report it the way a single process does.
        return 128 + forwarded[0] if forwarded and code != 0 else code
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run_training(config: TrainingConfig, **trainer_options: Any) -> dict[str, Any]:
    """Build the trainer with the console reporter and run it to the end."""
    from fakedet.engine.trainer import Trainer
    from fakedet.reporting import ConsoleReporter

    trainer = Trainer(config, ConsoleReporter(console), **trainer_options)
    try:
        return trainer.fit()
    finally:
        trainer.close()


def run_resume(
    path: Path,
    overrides: dict[str, Any],
    extra_epochs: int | None,
    new_lr: float | None,
    reset_lr: bool,
    reset_scheduler: bool,
) -> dict[str, Any]:
    """Load a checkpoint, derive the continued run's config, and train it."""
    from fakedet.engine.checkpoint import load_checkpoint
    from fakedet.engine.resume import checkpoint_path, resume_config

    if reset_lr and new_lr is None:
        raise UsageError("--reset-lr needs the new LR: add --lr X.")
    if extra_epochs is not None and extra_epochs < 1:
        raise UsageError(f"--epochs {extra_epochs} must be at least 1 (it counts epochs to add).")
    state = load_checkpoint(checkpoint_path(path))
    config = resume_config(state, overrides, extra_epochs, new_lr)
    return run_training(config, resume_state=state, new_lr=new_lr, reset_scheduler=reset_scheduler)


def _resume_parameters() -> list[inspect.Parameter]:
    from fakedet.engine.resume import RESUME_OVERRIDES

    checkpoint = inspect.Parameter(
        "checkpoint",
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        default=typer.Argument(
            Path("checkpoints/latest_model.pt"),
            help="Checkpoint file, or an output folder (its latest_model.pt).",
        ),
        annotation=Path,
    )
    return [
        checkpoint,
        _option(
            "epochs",
            ["--epochs"],
            "Train this many MORE epochs (default: finish the run as configured).",
            Optional[int],  # noqa: UP045
        ),
        _option(
            "lr",
            ["--lr"],
            "New base LR (keeps the schedule's shape, like --reset-lr).",
            Optional[float],  # noqa: UP045
        ),
        *_resume_flag_options(""),
        *(_field_option(name, "from the checkpoint") for name in RESUME_OVERRIDES),
    ]


def resume(**values: Any) -> None:
    """Continue a run from its checkpoint: exact state, optimizer, schedule, RNG and patience.

    Examples:

        fakedet resume                                   # checkpoints/latest_model.pt, finish the run

        fakedet resume runs/demo --epochs 20             # 20 more epochs, cosine laid over the new total

        fakedet resume runs/demo --epochs 20 --lr 1e-4 --reset-lr

        fakedet resume runs/demo/best_model.pt --epochs 30 --lr 3e-4 --reset-lr --reset-scheduler

        fakedet resume runs/demo --batch-size 8 --gradient-accumulation-steps 2   # after running out of memory
    """
    with _errors_to_exit_codes():
        checkpoint: Path = values.pop("checkpoint")
        epochs: int | None = values.pop("epochs")
        lr: float | None = values.pop("lr")
        reset_lr: bool = values.pop("reset_lr")
        reset_scheduler: bool = values.pop("reset_scheduler")
        overrides = _collect_overrides(values)
        run_resume(checkpoint, overrides, epochs, lr, reset_lr, reset_scheduler)


# ----------------------------------------------------------------------------- using a model
# Options that validate, predict and inspect-checkpoint share.
CheckpointArgument = Annotated[Path, typer.Argument(help="Checkpoint file or output folder.")]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N, mps.")]
WorkersOption = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option("--num-workers", min=0, help="Loader workers \\[default: min(4, cores)]."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _print_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _fields_table(title: str, fields: dict[str, Any]) -> Table:
    """A two-column name / value table without a header."""
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("field")
    table.add_column("value")
    for name, value in fields.items():
        table.add_row(name, str(value))
    return table


def predict(
    checkpoint: CheckpointArgument,
    paths: Annotated[
        list[Path], typer.Argument(help="Images and/or folders (searched recursively).")
    ],
    output: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--output", "-o", help="Write path, realness, verdict, error to this CSV."),
    ] = None,
    threshold: Annotated[
        float,
        typer.Option("--threshold", min=0.0, max=1.0, help="Realness at or above this is 'real'."),
    ] = 0.5,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per batch.")] = 32,
    device: DeviceOption = "auto",
    num_workers: WorkersOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score images: realness in [0, 1] (1 = real photo) and a real/fake verdict per image.

    Each image is scored on its centre crop at the checkpoint's img_size, as in validation.

    Examples:

        fakedet predict runs/demo/best_model.pt photo.jpg

        fakedet predict runs/demo ./incoming --output scores.csv
    """
    with _errors_to_exit_codes():
        import csv
        import io

        from fakedet.engine.checkpoint import atomic_write_text
        from fakedet.engine.inference import (
            checkpoint_img_size,
            collect_images,
            load_detector,
            predict_images,
        )

        images = collect_images(paths)
        model, state = load_detector(checkpoint, device)
        predictions = predict_images(
            model, images, checkpoint_img_size(state), threshold, batch_size, num_workers
        )
        rows = [
            {
                "path": p.path,
                "realness": None if p.realness is None else round(p.realness, 6),
                "verdict": p.verdict,
                "error": p.error,
            }
            for p in predictions
        ]
        if output is not None:
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=["path", "realness", "verdict", "error"])
            writer.writeheader()
            writer.writerows(rows)
            output.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(output, buffer.getvalue())
        unreadable = sum(1 for p in predictions if p.realness is None)
        if unreadable == len(predictions):
            raise UsageError(
                f"None of the {len(predictions)} files could be read as an image "
                f"(e.g. {predictions[0].path}: {predictions[0].error})."
            )
        if as_json:
            _print_json(rows)
            return
        shown = rows[:50]
        table = Table(
            title=f"{state['mode']} model, epoch {state['epoch']}, threshold {threshold:g}",
            title_justify="left",
        )
        table.add_column("image", overflow="fold")
        table.add_column("realness", justify="right")
        table.add_column("verdict")
        for row in shown:
            style = {"real": "green", "fake": "red"}.get(row["verdict"], "yellow")
            score = "-" if row["realness"] is None else f"{row['realness']:.4f}"
            table.add_row(row["path"], score, f"[{style}]{row['verdict']}[/]")
        console.print(table)
        if len(rows) > len(shown):
            console.print(
                f"... and {len(rows) - len(shown)} more"
                + (f" (all in {output})" if output else "; use --output FILE.csv for all")
            )
        real = sum(1 for p in predictions if p.verdict == "real")
        console.print(
            f"{len(predictions)} images: {real} real, {len(predictions) - real - unreadable} fake"
            + (f", {unreadable} unreadable" if unreadable else "")
            + (f"; wrote {output}" if output else ""),
            highlight=False,
        )


def validate(
    checkpoint: CheckpointArgument,
    data_root: Annotated[
        Path, typer.Argument(help="Labelled dataset (any layout fakedet train reads).")
    ],
    split: Annotated[str, typer.Option("--split", help="val, train or all.")] = "val",
    batch_size: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--batch-size", min=1, help="Images per batch \\[default: the checkpoint's]."),
    ] = None,
    device: DeviceOption = "auto",
    num_workers: WorkersOption = None,
    use_csv: Annotated[
        Optional[bool],  # noqa: UP045
        typer.Option(
            "--use-csv/--no-use-csv", help="Labels from CSV \\[default: the checkpoint's]."
        ),
    ] = None,
    plots: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--plots", help="Write roc_pr.png, confusion.png, score_hist.png, hardest.png here."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Score a labelled dataset with a checkpoint: loss terms, accuracy, AUC and AP.

    The val split, loss weights and batch size come from the checkpoint, so on the training data
    it gives the run's own validation numbers.

    Examples:

        fakedet validate runs/demo/best_model.pt demo

        fakedet validate runs/demo/best_model.pt ./other_dataset --split all --json

        fakedet validate runs/demo/best_model.pt ./other_dataset --plots runs/demo/other_plots
    """
    with _errors_to_exit_codes():
        from fakedet.engine.inference import validate_checkpoint

        result = validate_checkpoint(
            checkpoint, data_root, split, device, batch_size, num_workers, use_csv, plots
        )
        if as_json:
            _print_json(result)
            return
        console.print(
            f"{result['checkpoint']} on {result['data_root']} ({result['layout']}), split "
            f"{split}: {result['images']} images ({result['real']} real, {result['fake']} fake)",
            highlight=False,
        )
        console.print(metrics_table("metrics", result["metrics"]))
        if result["plots"]:
            console.print(f"Plots: {', '.join(result['plots'])}", highlight=False, soft_wrap=True)
        if result["skipped"]:
            console.print(
                f"{len(result['skipped'])} unreadable file(s) skipped, e.g. {result['skipped'][0][0]}: {result['skipped'][0][1]}",
                highlight=False,
            )


def inspect_checkpoint(
    checkpoint: CheckpointArgument,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print everything (history too) as JSON.")
    ] = False,
) -> None:
    """What a checkpoint holds: versions, model, epoch and step, metrics, config, history.

    Examples:

        fakedet inspect-checkpoint checkpoints/best_model.pt

        fakedet inspect-checkpoint runs/demo --json
    """
    with _errors_to_exit_codes():
        from fakedet.engine.inference import describe_checkpoint

        info = describe_checkpoint(checkpoint)
        if as_json:
            _print_json(info)
            return
        progress = f"{info['epoch']} of {info['epochs_configured']}"
        if info["interrupted_at_batch"]:
            progress += f" (interrupted at batch {info['interrupted_at_batch']})"
        fields = {
            "model": f"{info['mode']}, {info['parameters'] / 1e6:.2f}M params, {info['img_size']} px",
            "epoch": progress,
            "global step": info["global_step"],
            "best": f"epoch {info['best_epoch']}, val_loss {info['best_val_loss']:.4f}"
            if info["best_val_loss"] is not None
            else "no validation yet",
            "epochs without improvement": info["epochs_without_improvement"],
            "non-finite steps skipped": info["nonfinite_steps"],
            "fakedet / torch": f"{info['fakedet_version']} / {info['torch_version']}",
            "size": f"{info['size_mb']} MB",
            "data root": info["config"].get("data_root"),
        }
        console.print(_fields_table(info["path"], fields))
        last = {k: v for k, v in info["last_metrics"].items() if k.startswith("val_")}
        if last:
            console.print(metrics_table(f"epoch {info['last_metrics']['epoch']} validation", last))
        settings = ", ".join(f"{k}={v}" for k, v in info["config"].items())
        console.print(f"config: {settings}", highlight=False, soft_wrap=True)


def recommend(
    mode: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--mode", help="fast or full \\[default: both]."),
    ] = None,
    img_size: Annotated[int, typer.Option("--img-size", help="Training image size.")] = 256,
    vram: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option("--vram", help="Plan for a GPU with this many GB instead of this machine's."),
    ] = None,
    os_name: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--os", help="Plan for Linux, Windows or Darwin."),
    ] = None,
    compute_capability: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--compute-capability", help="Plan for this GPU generation, e.g. 7.5 or 8.6."),
    ] = None,
    cpu_cores: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--cpu-cores", min=1, help="Plan for this many CPU cores."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Detected hardware and the settings to train with: batch, accumulation, AMP, workers, LR.

    On a GPU the batch is the largest power of two whose estimated memory fits (the seed's VRAM
    table is the floor); each mode comes with a ready `fakedet train` line.

    Examples:

        fakedet recommend

        fakedet recommend --mode full --vram 12 --compute-capability 8.6

        fakedet recommend --vram 8 --os Windows --json
    """
    with _errors_to_exit_codes():
        from fakedet.advisor import advise

        modes = (mode,) if mode else ("fast", "full")
        plan = advise(modes, img_size, vram, os_name, compute_capability, cpu_cores)
        if as_json:
            _print_json(plan)
            return
        hardware = plan["hardware"]
        capability = hardware["compute_capability"]
        rows = {
            "device": f"{hardware['device']} ({hardware['device_name']})",
            "VRAM": f"{hardware['vram_gb']} GB" if hardware["vram_gb"] else "-",
            "compute capability": ".".join(map(str, capability)) if capability else "-",
            "OS / CPU cores": f"{hardware['os']} / {hardware['cpu_cores']}",
            "CPU native bf16": "yes" if hardware["cpu_bf16"] else "no",
            "torch / CUDA": f"{hardware['torch_version']} / {hardware['cuda_version'] or '-'}",
        }
        console.print(_fields_table("hardware", rows))
        table = Table(title=f"settings at {plan['img_size']} px", title_justify="left")
        for column in ("mode", "batch", "accum.", "AMP", "workers", "LR", "est. peak", "why"):
            table.add_column(column)
        for item in plan["recommendations"]:
            peak = item["estimated_peak_gb"]
            table.add_row(
                item["mode"],
                str(item["batch_size"]),
                str(item["gradient_accumulation_steps"]),
                item["amp_dtype"] if item["use_amp"] else "off",
                str(item["num_workers"]),
                f"{item['lr']:.3g}",
                f"{peak} GB" if peak is not None else "-",
                item["reason"],
            )
        console.print(table)
        for item in plan["recommendations"]:
            console.print(item["command"], highlight=False, soft_wrap=True)
        for note in plan["notes"]:
            console.print(f"note: {note}", highlight=False, soft_wrap=True)


train.__signature__ = inspect.Signature(_train_parameters())  # type: ignore[attr-defined]
app.command("train", context_settings={"max_content_width": 120})(train)
resume.__signature__ = inspect.Signature(_resume_parameters())  # type: ignore[attr-defined]
app.command("resume", context_settings={"max_content_width": 120})(resume)
# Registered here so `fakedet --help` lists the commands in the order of a user's work.
app.command("validate")(validate)
app.command("inspect-checkpoint")(inspect_checkpoint)
app.command("recommend")(recommend)
app.command("predict")(predict)
app.command("demo-data")(demo_data)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="fakedet")
