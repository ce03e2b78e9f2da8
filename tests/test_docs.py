"""The docs stay true to the checkout: the site builds strictly, the code map names every module,
the README stays short with working links, and comments cite nothing outside the repository."""

from __future__ import annotations

import ast
import importlib.util
import io
import os
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "fakedet"
CODE_MAP = ROOT / "docs" / "code-map.md"

# A citation of a document the checkout does not hold: "SPEC 12", "issue 16", "#31", "PR 7".
# A "#" right after a name character is part of a key or path (`shard.tar#000123.jpg`), not one.
OUTSIDE_CITATION = re.compile(r"\bSPEC\b|\b(?:issue|PR)\s*#?\d+|(?<![\w.])#\d+", re.IGNORECASE)
MARKDOWN_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)")


def _holds_code(init: Path) -> bool:
    """Whether a package's __init__.py does more than re-export: a docstring, imports, `__all__`
    and `__version__` are not code worth a line in the map."""
    for statement in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            continue
        if isinstance(statement, ast.Assign) and all(
            isinstance(target, ast.Name) and target.id in ("__all__", "__version__")
            for target in statement.targets
        ):
            continue
        return True
    return False


def _modules_to_map() -> list[str]:
    modules = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py" or (path.name == "__init__.py" and not _holds_code(path)):
            continue
        modules.append(path.relative_to(ROOT).as_posix())
    return modules


def test_code_map_names_every_module() -> None:
    named = set(re.findall(r"`(fakedet/[\w/]+\.py)`", CODE_MAP.read_text(encoding="utf-8")))
    missing = [module for module in _modules_to_map() if module not in named]
    assert not missing, f"docs/code-map.md has no line for {missing}: add one each"


def test_code_map_names_no_module_that_is_gone() -> None:
    named = set(re.findall(r"`(fakedet/[\w/]+\.py)`", CODE_MAP.read_text(encoding="utf-8")))
    gone = sorted(module for module in named if not (ROOT / module).is_file())
    assert not gone, f"docs/code-map.md names modules that do not exist: {gone}"


def test_code_map_check_sees_a_package_init_with_code(tmp_path: Path) -> None:
    reexport = tmp_path / "reexport.py"
    reexport.write_text('"""Doc."""\nfrom x import y\n__all__ = ["y"]\n__version__ = "1"\n')
    with_code = tmp_path / "with_code.py"
    with_code.write_text('"""Doc."""\nfrom x import y\n\n\ndef run() -> None:\n    y()\n')
    assert not _holds_code(reexport)
    assert _holds_code(with_code)


def _comments_and_docstrings(path: Path) -> list[tuple[int, str]]:
    source = path.read_text(encoding="utf-8")
    texts = [
        (token.start[0], token.string)
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            docstring = ast.get_docstring(node, clean=False)
            if docstring:
                texts.append((getattr(node, "lineno", 1), docstring))
    return texts


def _citations(path: Path) -> list[tuple[int, str]]:
    """(line, cited text) for each citation in a module's comments and docstrings."""
    found = []
    for line, text in _comments_and_docstrings(path):
        # A comment's own leading "#" is not a citation; "# see #31" is.
        body = text.lstrip("#") if text.startswith("#") else text
        found += [(line, match.group(0)) for match in OUTSIDE_CITATION.finditer(body)]
    return found


def test_comments_cite_no_documents_outside_the_repo() -> None:
    citations = [
        f"{path.relative_to(ROOT)}:{line}: {cited}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, cited in _citations(path)
    ]
    assert not citations, f"comments or docstrings cite documents outside the repo: {citations}"


def test_citation_check_finds_each_kind(tmp_path: Path) -> None:
    module = tmp_path / "cited.py"
    module.write_text(
        '"""Calibration (SPEC 12)."""\n\n# see #31\nx = "#31 in a string is data"  # fine\n\n\n'
        'def f() -> None:\n    """As issue 16 found."""\n'
    )
    assert sorted(_citations(module)) == [(1, "SPEC"), (3, "#31"), (7, "issue 16")]


def test_readme_is_short_and_its_links_exist() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250, "README.md is over 250 lines: move detail into docs/"
    targets = [t for t in MARKDOWN_LINK.findall(readme) if "://" not in t]
    assert targets, "README.md links to no docs page"
    broken = sorted(t for t in targets if not (ROOT / t).exists())
    assert not broken, f"README.md links to files that do not exist: {broken}"


def test_mkdocs_build_is_strict_clean(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs-material is not installed (pip install -e '.[docs]')")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "code-map" / "index.html").is_file()
    assert (tmp_path / "site" / "img" / "protocol_auc.png").is_file()
