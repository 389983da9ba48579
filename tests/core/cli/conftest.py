"""The ``cli`` fixture: trackpoint's command line run in this process, its exit status and output captured."""

from __future__ import annotations

from typing import Any

import pytest

from trackpoint.cli import main


class Called:
    """Exit status and output of one in-process ``main`` call."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    def call(*args: str) -> Called:
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's own exits (usage errors, --version)
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return Called(code, out, err)

    return call
