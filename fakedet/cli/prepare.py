"""Commands before training: the demo dataset, and the hardware advisor's settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fakedet.cli.base import (
    FinetuneOption,
    config_option,
    console,
    errors_to_exit_codes,
    fields_table,
    print_json,
    progress_bar,
)
from fakedet.errors import UsageError


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
    holdout: Annotated[
        str | None,
        typer.Option(
            "--holdout",
            help="Families written to OUT_DIR/test/<family> from unseen photos: any of "
            "--families (then kept out of train and val), the test-only laundered, "
            "spectrum_matched (fakes with the up-sampling traces hidden) and processed_half, "
            "processed_jpeg, processed_resaved (real photos only). E.g. "
            "bicubic,subpixel,inpainted,processed_half.",
        ),
    ] = None,
    families: Annotated[
        str | None,
        typer.Option(
            "--families",
            help="Fake families of train and val [default: all]: up-samplers nearest, bilinear, "
            "bicubic, transposed_conv, pixel_shuffle; partial fakes spliced, inpainted (masks "
            "in OUT_DIR/masks); denoiser re-synthesis denoised, resynthesised; the sub-pixel "
            "decoder subpixel.",
        ),
    ] = None,
) -> None:
    """Build the built-in demo dataset (real photo crops vs. simulated generator up-sampling).

    Offline and in seconds, from photos that scikit-image and scikit-learn ship. Examples:

        fakedet demo-data demo && fakedet train demo --epochs 5 --lr 1e-3

        fakedet demo-data demo --holdout bicubic,pixel_shuffle   # a cross-generator test set
    """
    with errors_to_exit_codes():
        from fakedet.demo.dataset import DEFAULT_FAMILIES, build_demo_dataset

        with progress_bar("demo-data") as progress:
            task = progress.add_task("images", total=num_images)
            held_out = _names(holdout)
            summary = build_demo_dataset(
                out_dir,
                num_images=num_images,
                img_size=img_size,
                seed=seed,
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
                holdout=held_out,
                families=_names(families) or DEFAULT_FAMILIES,
            )
        counts = summary["images"]
        console.print(
            f"Wrote {num_images} images ({img_size} px) to {out_dir}: "
            f"train {counts['train']['real']} real / {counts['train']['fake']} fake, "
            f"val {counts['val']['real']} real / {counts['val']['fake']} fake "
            f"(val photos: {', '.join(summary['photos']['val'])}).",
            highlight=False,
        )
        if held_out:
            tests = ", ".join(
                f"{family} {counts[f'test/{family}'].get('fake', 0)}" for family in held_out
            )
            console.print(
                f"Held out (fakes per family, each with as many reals, from the unseen photos "
                f"{', '.join(summary['photos']['test'])}): {tests} in {out_dir / 'test'}.",
                highlight=False,
            )
        console.print(f"Next: fakedet train {out_dir} --epochs 5 --lr 1e-3", highlight=False)
        if held_out:
            console.print(
                f"Then: fakedet evaluate {out_dir / 'test'} {Path('checkpoints')}",
                highlight=False,
            )


def _names(text: str | None) -> list[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def recommend(
    mode: Annotated[
        str | None,
        typer.Option("--mode", help="fast or full \\[default: both]."),
    ] = None,
    img_size: Annotated[
        int | None,
        typer.Option("--img-size", help="Training image size \\[default: 256; a backbone's own]."),
    ] = None,
    vram: Annotated[
        float | None,
        typer.Option("--vram", help="Plan for a GPU with this many GB instead of this machine's."),
    ] = None,
    os_name: Annotated[
        str | None,
        typer.Option("--os", help="Plan for Linux, Windows or Darwin."),
    ] = None,
    compute_capability: Annotated[
        str | None,
        typer.Option("--compute-capability", help="Plan for this GPU generation, e.g. 7.5 or 8.6."),
    ] = None,
    cpu_cores: Annotated[
        int | None,
        typer.Option("--cpu-cores", min=1, help="Plan for this many CPU cores."),
    ] = None,
    backbone: Annotated[str | None, config_option("backbone")] = None,
    weights: Annotated[Path | None, config_option("weights")] = None,
    finetune: FinetuneOption = None,
    lora_rank: Annotated[int | None, config_option("lora_rank")] = None,
    with_spectral: Annotated[bool | None, config_option("with_spectral")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Detected hardware and the settings to train with: batch, accumulation, AMP, workers, LR.

    On a GPU the batch is the largest power of two whose estimated memory fits (the seed's VRAM
    table is the floor); each mode comes with a ready `fakedet train` line. With --backbone, the
    plan of that backbone detector: its memory is measured on the architecture alone (nothing
    is downloaded), a probe's on its frozen forward without grad.

    Examples:

        fakedet recommend

        fakedet recommend --mode full --vram 12 --compute-capability 8.6

        fakedet recommend --vram 8 --os Windows --json

        fakedet recommend --backbone timm:convnext_tiny.fb_in22k --finetune --lora-rank 8 --vram 12
    """
    with errors_to_exit_codes():
        from fakedet.advisor import advise

        settings = {
            "backbone": backbone,
            "weights": weights,
            "finetune": finetune,
            "lora_rank": lora_rank,
            "with_spectral": with_spectral,
        }
        plan_of = None
        if any(value is not None for value in settings.values()):
            from fakedet.config_files import build_config

            if mode is not None:
                raise UsageError(f"--mode {mode} and --backbone exclude each other; drop one.")
            given = {name: value for name, value in settings.items() if value is not None}
            if img_size is not None:
                given["img_size"] = img_size
            # The train command's own validation and defaults (size, LR); the data comes later.
            plan_of = build_config({"data_root": "DATA_ROOT", **given})
            if weights is not None and not weights.is_file():
                raise UsageError(f"--weights {weights} is not a file; pass the weights file path.")
        modes = (mode,) if mode else ("fast", "full")
        plan = advise(modes, img_size or 256, vram, os_name, compute_capability, cpu_cores, plan_of)
        if as_json:
            print_json(plan)
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
        console.print(fields_table("hardware", rows))
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
