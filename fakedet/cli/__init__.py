"""The `fakedet` command line: parse, build the config, call one core function, render the result.

torch is imported inside the commands that need it, so `fakedet --help` stays fast. Imports run
one way: base <- train, use <- this module, which registers the commands in a user's order.
"""

from __future__ import annotations

from fakedet.cli.audit import audit
from fakedet.cli.base import app
from fakedet.cli.cache import cache
from fakedet.cli.convert import convert
from fakedet.cli.doctor import doctor
from fakedet.cli.export import export
from fakedet.cli.prepare import demo_data, recommend
from fakedet.cli.scoring.checks import calibrate, inspect_checkpoint, validate
from fakedet.cli.scoring.evaluate import evaluate
from fakedet.cli.scoring.predict import predict
from fakedet.cli.serve import serve
from fakedet.cli.train import resume, train

app.command("train", context_settings={"max_content_width": 120})(train)
app.command("resume", context_settings={"max_content_width": 120})(resume)
app.command("validate")(validate)
app.command("evaluate")(evaluate)
app.command("calibrate")(calibrate)
app.command("doctor")(doctor)
app.command("audit")(audit)
app.command("export")(export)
app.command("inspect-checkpoint")(inspect_checkpoint)
app.command("recommend")(recommend)
app.command("predict")(predict)
app.command("demo-data")(demo_data)
app.command("serve")(serve)
app.command("convert")(convert)
app.command("cache")(cache)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="fakedet")


__all__ = ["app", "main"]
