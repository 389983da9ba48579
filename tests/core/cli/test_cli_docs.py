"""docs/cli.md shows real output: its commands are run and their output compared with the page.

The page's ``python`` blocks run in order in one namespace, and each ``bash`` block followed by a ``text``
block is run with ``bash`` (stderr merged into stdout, as a terminal shows it), in one empty directory. What
they print must equal the ``text`` block, times aside (the ``ls`` table shows when checkpoints were saved).

After changing the command line, rewrite the page's outputs with::

    python tests/core/cli/test_cli_docs.py
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: docblocks, when run as a script

import pytest

from docblocks import DOCS, Block, parse

PAGE = DOCS / "cli.md"
_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def outputs(text: str, cwd: Path) -> dict[int, str]:
    """What the code before each ``text`` block prints, by the text block's index in the page."""
    blocks = parse(text, "cli.md")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("TRACKPOINT_BACKEND", None)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    found: dict[int, str] = {}
    here = os.getcwd()
    os.chdir(cwd)
    try:
        for i, block in enumerate(blocks):
            followed = i + 1 < len(blocks) and blocks[i + 1].lang == "text"
            if block.runs:
                printed = io.StringIO()
                with contextlib.redirect_stdout(printed):
                    exec(block.compiled(), namespace)  # noqa: S102 - our own documentation
                if followed:
                    found[i + 1] = printed.getvalue()
            elif block.lang == "bash" and followed:
                done = subprocess.run(
                    ["bash", "-c", block.code], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
                )
                found[i + 1] = done.stdout.decode()
    finally:
        os.chdir(here)
    return found


def _replace(text: str, blocks: list[Block], found: dict[int, str]) -> str:
    lines = text.splitlines(keepends=True)
    # From the end, so earlier line numbers stay valid.
    for index in sorted(found, reverse=True):
        block = blocks[index]
        body = block.code.count("\n")
        lines[block.line : block.line + body] = [found[index] if found[index].endswith("\n") else found[index] + "\n"]
    return "".join(lines)


def _normal(text: str) -> str:
    return "\n".join(line.rstrip() for line in _TIME.sub("<time>", text).strip("\n").splitlines())


@pytest.mark.slow  # about fifteen commands, each a fresh interpreter
def test_every_output_on_the_page_is_what_the_command_prints(tmp_path: Path) -> None:
    text = PAGE.read_text(encoding="utf-8")
    blocks = parse(text, "cli.md")
    found = outputs(text, tmp_path)
    assert len(found) >= 12, "the page shows fewer outputs than commands"
    for index, printed in found.items():
        shown = blocks[index]
        assert _normal(shown.code) == _normal(printed), (
            f"{shown.where}: the page shows\n{shown.code}\nbut it prints\n{printed}"
        )


def test_the_comparison_notices_a_changed_output(tmp_path: Path) -> None:
    page = (
        "```python\nprint('a')\n```\n\n```text\nb\n```\n\n"
        "```bash\necho 2026-01-01 10:00:00 x\n```\n\n```text\n1999-12-31 23:59:59 x\n```\n"
    )
    blocks = parse(page, "t.md")
    found = outputs(page, tmp_path)
    assert found == {1: "a\n", 3: "2026-01-01 10:00:00 x\n"}
    assert _normal(blocks[1].code) != _normal(found[1])
    assert _normal(blocks[3].code) == _normal(found[3])
    assert _replace(page, blocks, found).count("a\n```") == 1


if __name__ == "__main__":
    source = PAGE.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as scratch:
        PAGE.write_text(_replace(source, parse(source, "cli.md"), outputs(source, Path(scratch))), encoding="utf-8")
    print(f"rewrote the outputs of {PAGE}")
