"""The house stays as built: `import fakedet` and `fakedet --help` light (no torch), imports one
way between the parts, and rooms small enough to read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


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


def _part_imports() -> dict[str, set[str]]:
    """Which top-level parts of fakedet import which, counting imports inside functions too."""
    import ast
    from pathlib import Path

    package = Path(__file__).parent.parent / "fakedet"
    edges: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        relative = path.relative_to(package).with_suffix("").parts
        part = relative[0] if relative[0] not in ("__init__", "__main__") else "fakedet"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                pieces = name.split(".")
                if pieces[0] == "fakedet" and len(pieces) > 1 and pieces[1] != part:
                    target = pieces[1]
                    if (package / target).is_dir() or (package / f"{target}.py").is_file():
                        edges.setdefault(part, set()).add(target)
    return edges


def test_no_import_cycle_between_the_parts() -> None:
    edges = _part_imports()
    visiting: list[str] = []
    done: set[str] = set()

    def visit(part: str) -> None:
        assert part not in visiting, f"import cycle: {' -> '.join([*visiting, part])}"
        if part in done:
            return
        visiting.append(part)
        for target in sorted(edges.get(part, ())):
            visit(target)
        visiting.pop()
        done.add(part)

    for part in sorted(edges):
        visit(part)
    # The direction the README describes: nothing below the CLI imports it.
    assert all("cli" not in targets for part, targets in edges.items() if part != "fakedet")
    assert not edges.get("models", set()) - {"errors"}


def test_tomli_is_declared_where_tomllib_is_missing() -> None:
    """config_files.py reads TOML with tomli before Python 3.11; the package must depend on it there."""
    from pathlib import Path

    from fakedet.config_files import tomllib

    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert any(
        dependency.startswith("tomli") and "python_version < '3.11'" in dependency
        for dependency in project["project"]["dependencies"]
    )


# The size of a room a newcomer reads in one sitting: a module on a few screens, a package of a
# dozen modules. Past these, split by purpose (docs/code-map.md lists the rooms).
MAX_MODULE_LINES = 400
MAX_PACKAGE_MODULES = 12
MAX_PACKAGE_LINES = 2000


def _sizes(package: Path) -> tuple[dict[str, int], dict[str, tuple[int, int]]]:
    modules: dict[str, int] = {}
    packages: dict[str, tuple[int, int]] = {}
    for path in sorted(package.rglob("*.py")):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        modules[str(path.relative_to(package.parent))] = lines
        folder = str(path.parent.relative_to(package.parent))
        count, total = packages.get(folder, (0, 0))
        packages[folder] = (count + 1, total + lines)
    return modules, packages


def test_modules_and_packages_stay_small() -> None:
    modules, packages = _sizes(Path(__file__).parent.parent / "fakedet")
    long = {name: lines for name, lines in modules.items() if lines > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"
    big = {
        name: size
        for name, size in packages.items()
        if size[0] > MAX_PACKAGE_MODULES or size[1] > MAX_PACKAGE_LINES
    }
    assert not big, (
        f"packages over {MAX_PACKAGE_MODULES} modules or {MAX_PACKAGE_LINES} lines: {big}"
    )


def test_size_check_sees_a_long_module(tmp_path: Path) -> None:
    package = tmp_path / "fakedet"
    (package / "part").mkdir(parents=True)
    (package / "part" / "long.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    modules, packages = _sizes(package)
    assert modules["fakedet/part/long.py"] == MAX_MODULE_LINES + 1
    assert packages["fakedet/part"] == (1, MAX_MODULE_LINES + 1)
