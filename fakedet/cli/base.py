"""The Typer app, its consoles, the options several commands share, and the one place where
fakedet's errors become a sentence and an exit code."""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, get_args

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from fakedet import __version__
from fakedet.config import TrainingConfig
from fakedet.errors import FakedetError

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
def errors_to_exit_codes() -> Iterator[None]:
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
            f"[bold red]Unexpected error:[/] {escape(f'{exc.__class__.__name__}: {exc}')} "
            "(run `fakedet --debug ...` for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None


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


def config_option(name: str, default_text: str | None = None) -> Any:
    """The `--dashed-name` option of a TrainingConfig field (its seed spelling too), with the
    field's description and default as help. `default_text` replaces the default in the help
    (resume: "from the checkpoint"). The parameter's own default is None: "not given"."""
    field = TrainingConfig.model_fields[name]
    dashed = name.replace("_", "-")
    flags = [f"--{dashed}/--no-{dashed}"] if field.annotation is bool else [f"--{dashed}"]
    if name in SEED_ALIASES:
        flags.append(SEED_ALIASES[name])
    default = default_text
    if default is None and not field.is_required():
        default = field.get_default(call_default_factory=True)
    choices: list[str] = []
    for arg in get_args(field.annotation):
        choices += (
            [arg] if isinstance(arg, str) else [c for c in get_args(arg) if isinstance(c, str)]
        )
    help_text = field.description or ""
    if choices and int not in get_args(field.annotation):  # batch_size: a number or 'auto'
        help_text += f" One of: {', '.join(dict.fromkeys(choices))}."
    # Escaped: Typer renders help as rich markup, where "[default: 16]" would vanish as a tag.
    return typer.Option(
        *flags, help=escape(f"{help_text} [default: {default}]"), show_default=False
    )


# Options that validate, predict and inspect-checkpoint share.
CheckpointArgument = Annotated[
    Path,
    typer.Argument(
        help="Checkpoint file or output folder (or an exported .onnx/.ts/.safetensors)."
    ),
]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N, mps.")]
WorkersOption = Annotated[
    int | None,
    typer.Option(
        "--num-workers",
        min=0,
        help="Loader workers \\[default: min(4, cores); min(12, cores) on CUDA].",
    ),
]
CropsOption = Annotated[
    int,
    typer.Option(
        "--crops",
        help="Views per image: 1 (the centre crop at the checkpoint's img_size) or 5 (the centre "
        "and the four corners, their scores averaged as logits: more of an image larger than "
        "img_size is seen, at 5x the cost). Calibrate with the same views you score with.",
    ),
]
CheckpointBatchOption = Annotated[
    int | None,
    typer.Option("--batch-size", min=1, help="Images per batch \\[default: the checkpoint's]."),
]
CheckpointCsvOption = Annotated[
    bool | None,
    typer.Option("--use-csv/--no-use-csv", help="Labels from CSV \\[default: the checkpoint's]."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
DevicesOption = Annotated[
    int | None,
    typer.Option(
        "--devices",
        min=1,
        help="Run N processes (DDP, launched through torchrun; gloo on CPU, NCCL on CUDA).",
    ),
]

# The `finetune` field as the flag pair `--finetune/--probe` (train and recommend), its help the
# field's description like every config option's.
FinetuneOption = Annotated[
    bool | None,
    typer.Option(
        "--finetune/--probe",
        help=escape(f"{TrainingConfig.model_fields['finetune'].description} [default: probe]"),
        show_default=False,
    ),
]


def progress_bar(label: str, on: Console | None = None, quiet: bool = False) -> Progress:
    """The bar long commands show: label, bar, done/total, time left; off where the output is not
    a terminal (logs, pipes) or `quiet` (JSON output)."""
    target = on or console
    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=target,
        disable=quiet or not target.is_terminal,
        transient=True,
    )


def printable(text: str) -> str:
    """`text` as a terminal can show it: a file name that is not valid UTF-8 (its stray bytes
    are surrogates in Python) gets replacement characters instead of failing the print."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def print_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def fields_table(title: str, fields: dict[str, Any]) -> Table:
    """A two-column name / value table without a header."""
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("field")
    table.add_column("value")
    for name, value in fields.items():
        table.add_row(name, str(value))
    return table
