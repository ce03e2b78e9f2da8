"""`import fakedet` and `fakedet --help` must stay light: no torch."""

from __future__ import annotations

import subprocess
import sys


def _modules_after(code: str) -> set[str]:
    script = f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return set(output.stdout.split())


def test_import_fakedet_does_not_import_torch() -> None:
    assert "torch" not in _modules_after("import fakedet")


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom fakedet.cli import app\n"
        "result = CliRunner().invoke(app, ['--help'])\nassert result.exit_code == 0, result.output\n"
        "result = CliRunner().invoke(app, ['train', '--help'])\nassert result.exit_code == 0, result.output"
    )
    assert "torch" not in _modules_after(code)


def test_python_dash_m_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fakedet", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith("fakedet ")
