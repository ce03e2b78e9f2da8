"""`fakedet convert`: a dataset in any layout fakedet reads -> WebDataset or Parquet shards."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fakedet.cli.base import console, errors_to_exit_codes, print_json


def convert(
    data_root: Annotated[Path, typer.Argument(help="The dataset (folders, public layouts, CSV).")],
    output: Annotated[Path, typer.Argument(help="A new folder for OUT/{train,val,test}/ shards.")],
    fmt: Annotated[
        str, typer.Option("--format", help="webdataset (tar) or parquet.")
    ] = "webdataset",
    shard_size: Annotated[
        str, typer.Option("--shard-size", help="Image bytes per shard, e.g. 1GB, 500MB.")
    ] = "1GB",
    use_csv: Annotated[
        bool, typer.Option("--use-csv", help="Read labels from CSV files, as train does.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Write a dataset as shards that train, evaluate and predict read directly.

    Image bytes are copied unchanged; labels use 0 = real, 1 = fake (KEY.cls and KEY.json with
    the generator, or Parquet columns image / label / generator). OUT/manifest.json lists the
    counts per split, class and generator and each shard's sha256.

    Examples:

        fakedet convert ./my_dataset ./my_dataset_wds --format webdataset --shard-size 1GB

        fakedet convert ./genimage_test ./genimage_parquet --format parquet
    """
    with errors_to_exit_codes():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        from fakedet.sources.shards.convert import convert_dataset, parse_size

        size = parse_size(shard_size)
        with Progress(
            "{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=as_json,
        ) as progress:
            task = progress.add_task("writing shards", total=None)
            manifest = convert_dataset(
                data_root,
                output,
                fmt,
                size,
                use_csv,
                on_start=lambda total: progress.update(task, total=total),
                on_sample=lambda: progress.advance(task),
            )
        if as_json:
            print_json(manifest)
            return
        for split, facts in manifest["splits"].items():
            console.print(
                f"{split}: {facts['samples']} images ({facts['real']} real, {facts['fake']} "
                f"fake) in {len(facts['shards'])} shard(s)",
                highlight=False,
            )
        if manifest["skipped"]:
            first = manifest["skipped"][0]
            console.print(
                f"{len(manifest['skipped'])} unreadable file(s) left out, e.g. {first['path']}: "
                f"{first['reason']}",
                highlight=False,
            )
        console.print(f"Wrote {output} (manifest.json)", highlight=False)
