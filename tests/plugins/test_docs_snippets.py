"""Code in the plugin docs stays valid: every Python block parses, and the runnable ones run."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ["hooks.md", "writing-a-backend.md", "backends/index.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks(page: str) -> list[str]:
    return BLOCK.findall((DOCS / page).read_text())


@pytest.mark.parametrize("page", PAGES)
def test_python_blocks_parse(page: str) -> None:
    blocks = _blocks(page)
    assert blocks, f"{page} has no python examples"
    for block in blocks:
        ast.parse(block, filename=page)


def test_list_backends_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    (example,) = [b for b in _blocks("backends/index.md") if "list_backends()" in b]
    exec(compile(example, "docs/backends/index.md", "exec"), {})  # noqa: S102 - our own documentation
    lines = capsys.readouterr().out.splitlines()
    assert "memory: memory:// [trackpoint " in "\n".join(lines) and lines[1].endswith("] available"), lines
    # Plain local paths are named, never printed as an empty scheme.
    assert lines[0].startswith("bundle: (local paths), file:// "), lines
    assert not any(" ://" in line or ", ," in line or ": ," in line for line in lines), lines


def test_writing_a_backend_shows_the_real_plugin_module() -> None:
    """The guide quotes trackpoint_example_sqlite/__init__.py; the quote must match the code."""
    module = (DOCS.parent / "plugins" / "example-sqlite" / "trackpoint_example_sqlite" / "__init__.py").read_text()
    (quoted,) = [
        b for b in _blocks("writing-a-backend.md") if "def trackpoint_register_backends" in b and "sqlite" in b
    ]

    def code_lines(text: str) -> list[str]:
        # Compare code only: docstrings, comments on their own line, __all__ and blank lines may differ.
        tree = ast.parse(text)
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (
                isinstance(body, list)
                and body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
            ):
                body.pop(0)
        tree.body = [n for n in tree.body if not (isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "__all__")]
        return ast.unparse(tree).splitlines()

    assert code_lines(quoted) == code_lines(module)
