"""Code in the plugin docs stays valid: every Python block parses, and the runnable ones run."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

# Imported before pytester snapshots sys.modules (see test_conformance_kit.py): ml_dtypes, under the kit,
# cannot register its dtypes with numpy a second time.
import trackpoint.plugins.testing  # noqa: F401
from trackpoint import plugins

pytest_plugins = ["pytester"]

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


def _code_lines(path: Path) -> int:
    """Lines of ``path`` that are neither blank, nor comments, nor docstrings."""
    text = path.read_text()
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                docstrings.update(range(body[0].lineno, (body[0].end_lineno or body[0].lineno) + 1))
    return sum(
        1
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.strip().startswith("#") and number not in docstrings
    )


def test_writing_a_backend_states_the_size_of_the_example_plugin() -> None:
    """The guide once called the 538-line plugin "about 400 lines": the numbers it gives are measured."""
    modules = sorted((DOCS.parent / "plugins" / "example-sqlite" / "trackpoint_example_sqlite").glob("*.py"))
    lines = sum(len(m.read_text().splitlines()) for m in modules)
    code = sum(_code_lines(m) for m in modules)
    found = re.search(
        r"about (\d+) lines of Python \(about (\d+) without docstrings, comments and blank lines\)",
        (DOCS / "writing-a-backend.md").read_text().replace("\n", " "),
    )
    assert found is not None, "writing-a-backend.md no longer states the size of the sqlite plugin"
    stated_lines, stated_code = int(found.group(1)), int(found.group(2))
    assert abs(stated_lines - lines) <= 0.05 * lines, (
        f"the plugin has {lines} lines of Python, the guide says {stated_lines}"
    )
    assert abs(stated_code - code) <= 0.05 * code, f"the plugin has {code} lines of code, the guide says {stated_code}"


def test_the_guides_test_class_passes_the_kit(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """The guide's own copy of a conformance test class is complete: users have nothing else to copy from.

    Run against the sqlite plugin for the tests that use every backdoor and the harness hook.
    """
    pytest.importorskip("trackpoint_example_sqlite")
    (block,) = [b for b in _blocks("writing-a-backend.md") if "class TestSqliteBackend(BackendConformance)" in b]
    pytester.makepyfile(test_guide=block)
    monkeypatch.delenv("TRACKPOINT_DISABLE_PLUGIN_AUTOLOAD")  # the plugin is found by its entry point
    plugins.reset()
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-k", "crash or delete or damaged or missing_objects or abort or lists_more"
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 10 and set(outcomes) == {"passed", "deselected"}, outcomes
