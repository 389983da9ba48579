"""docs/api.md names every public name, so the reference cannot silently fall behind the code."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

API = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
# Names are looked up in code spans only, so prose words cannot stand in for them.
CODE_SPANS = " ".join(re.findall(r"`([^`]+)`", API))

MODULES = [
    "trackpoint",
    "trackpoint.storage",
    "trackpoint.observe",
    "trackpoint.preemption",
    "trackpoint.train",
    "trackpoint.errors",
    "trackpoint.distributed",
    "trackpoint.interchange",
    "trackpoint.cli",
    "trackpoint.plugins",
    "trackpoint.plugins.testing",
    "trackpoint.backends.stores",
    "trackpoint.backends.bundle",
]


def _undocumented(names: list[str]) -> list[str]:
    return [n for n in names if not re.search(rf"(?<![\w]){re.escape(n)}(?![\w])", CODE_SPANS)]


@pytest.mark.parametrize("module", MODULES)
def test_every_public_name_is_in_the_api_page(module: str) -> None:
    mod = importlib.import_module(module)
    missing = _undocumented(list(mod.__all__))
    assert not missing, f"docs/api.md does not mention {missing} from {module}.__all__"


def test_the_check_catches_a_missing_name() -> None:
    assert _undocumented(["Checkpoint", "NotARealName", "Check"]) == ["NotARealName", "Check"]
