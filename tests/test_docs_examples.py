"""Every script in docs/examples/ runs as the README tells users to run it, and prints nothing on stderr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "docs" / "examples").glob("*.py"))


def test_there_are_examples() -> None:
    assert "quickstart.py" in [e.name for e in EXAMPLES]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("script", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example_runs_cleanly(script: Path, tmp_path: Path) -> None:
    # A directory argument keeps the files, so the test can see that something was written there.
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", f"{script.name} wrote to stderr:\n{done.stderr}"
    assert done.stdout.strip(), f"{script.name} printed nothing"
    assert any((tmp_path / "run").iterdir())
